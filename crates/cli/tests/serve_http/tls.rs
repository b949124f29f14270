//! `serve --listen --tls-cert --tls-key`: HTTPS through rustls with a
//! self-signed certificate made here by the openssl CLI. curl ingests over
//! https with `--cacert`; plain http to the same port and https without
//! trusting the certificate are refused; the Postgres wire takes the same
//! certificate and a read token (psql `sslmode=verify-full`, and with
//! `channel_binding=require` over SCRAM-SHA-256-PLUS).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::common;

struct Node {
    child: Child,
    http: String,
    pg_port: u16,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, certificate: &Path, key: &Path) -> Node {
    let mut child = Command::new(common::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(certificate)
        .arg("--tls-key")
        .arg(key)
        .arg("--data")
        .arg(data)
        .env_remove("INFERWATCH_PG_PASSWORD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (mut http, mut pg_port) = (None, None);
    while http.is_none() || pg_port.is_none() {
        let line = lines.next().expect("serve printed its addresses").unwrap();
        if let Some(rest) = line.split("Postgres wire on ").nth(1) {
            let address = rest.split_whitespace().next().unwrap();
            pg_port = address.rsplit(':').next().unwrap().parse().ok();
        }
        if let Some(rest) = line.split("HTTP ingest on ").nth(1) {
            assert!(line.contains("TLS only"), "{line}");
            http = Some(rest.split_whitespace().next().unwrap().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Node {
        child,
        http: http.unwrap(),
        pg_port: pg_port.unwrap(),
    }
}

/// curl's status code (000 when no HTTP answer came) and body.
fn curl(args: &[&str]) -> (String, String) {
    let output = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().to_string(), body.to_string())
}

#[test]
fn https_ingests_with_the_certificate_and_plain_http_is_refused() {
    if !common::available("curl", &["--version"])
        || !common::available("openssl", &["version"])
        || !common::available("psql", &["--version"])
    {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let certificate = directory.path().join("server.crt");
    let key = directory.path().join("server.key");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let data = directory.path().join("data");
    let ingest = common::run(&[
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--scope",
        "ingest",
    ]);
    let read = common::run(&[
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--scope",
        "read",
    ]);
    let (ingest, read) = (ingest.trim(), read.trim());
    let node = start(&data, &certificate, &key);
    let cacert = certificate.to_str().unwrap();
    let bearer = format!("Authorization: Bearer {ingest}");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body: String = (0..3)
        .map(|i| {
            format!("{{\"timestamp\":\"{now}\",\"model_id\":\"tls\",\"request_id\":\"t{i}\"}}\n")
        })
        .collect();
    let https = format!("https://{}/api/v1/ingest/inference", node.http);
    let (code, answer) = curl(&[
        "--cacert",
        cacert,
        "-H",
        &bearer,
        "--data-binary",
        &body,
        &https,
    ]);
    assert_eq!(code, "200", "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");
    // Plain http to the TLS port: no HTTP answer at all, nothing stored.
    let plain = format!("http://{}/api/v1/ingest/inference", node.http);
    let (code, _) = curl(&["-H", &bearer, "--data-binary", &body, &plain]);
    assert_eq!(code, "000", "plain http was answered");
    // https without trusting the self-signed certificate: refused by curl.
    let (code, _) = curl(&["-H", &bearer, "--data-binary", &body, &https]);
    assert_eq!(code, "000", "an untrusted certificate was accepted");
    // The unauthenticated health check answers over https too.
    let health = format!("https://{}/healthz", node.http);
    let (code, _) = curl(&["--cacert", cacert, &health]);
    assert_eq!(code, "200");

    // The Postgres wire offers TLS with the same certificate, which psql
    // verifies, and the read token logs in over it, with SCRAM channel
    // binding (SCRAM-SHA-256-PLUS) when psql requires it.
    let psql = |options: &str, sql: &str| {
        Command::new("psql")
            .args(["-X", "-w", "-At"])
            .arg(format!(
                "host=127.0.0.1 port={} user=tls dbname=inferwatch sslmode=verify-full sslrootcert={cacert} {options}",
                node.pg_port
            ))
            .args(["-c", sql])
            .env("PGPASSWORD", read)
            .env("PGSSLCERT", "/nonexistent")
            .env("PGSSLKEY", "/nonexistent")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    };
    let info = psql("", "\\conninfo");
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(String::from_utf8_lossy(&info.stdout).contains("SSL connection"));
    let bound = psql("channel_binding=require", "SELECT 40 + 2");
    assert!(
        bound.status.success(),
        "{}",
        String::from_utf8_lossy(&bound.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&bound.stdout).trim(), "42");
    drop(node);
    let stored = common::run(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM inference WHERE model_id = 'tls'",
    ]);
    assert_eq!(stored.lines().nth(1), Some("3"), "{stored}");
}
