//! Real Postgres clients against `inferwatch serve`: psql (simple query
//! protocol) and Python psycopg + pandas (extended protocol, parameters).
//!
//! The expected numbers are computed here from the simulated JSONL, not
//! through inferwatch: counts per version and source, error counts, and the
//! exact p99 that the sketch-based `quantile` must match within its bound.
//!
//! The clients are real programs. Outside CI a missing client skips the
//! test with a message; with `CI=true` it fails.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const PASSWORD: &str = "s3cret-test";

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inferwatch")
}

mod common;
use common::{available, python};

#[derive(Default)]
struct Expected {
    by_version: BTreeMap<String, Vec<f64>>,
    by_source: BTreeMap<String, (i64, i64)>,
    total: i64,
}

fn expected_from(path: &Path) -> Expected {
    let mut expected = Expected::default();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        expected.total += 1;
        let version = event["model_version"].as_str().unwrap().to_string();
        let latency = event["latency_ms"].as_f64().unwrap();
        expected
            .by_version
            .entry(version)
            .or_default()
            .push(latency);
        let source = expected
            .by_source
            .entry(event["source_id"].as_str().unwrap().to_string())
            .or_default();
        source.0 += 1;
        if event["status"] == "error" {
            source.1 += 1;
        }
    }
    for values in expected.by_version.values_mut() {
        values.sort_by(f64::total_cmp);
    }
    expected
}

/// The sketch's answer must lie within 1 % of the exact value at a
/// neighbouring rank (ranks differ by convention between estimators).
fn assert_quantile_close(values: &[f64], q: f64, estimate: f64, what: &str) {
    let position = q * (values.len() - 1) as f64;
    let low = values[position.floor() as usize];
    let high = values[position.ceil() as usize];
    assert!(
        estimate >= low * 0.99 - 1e-9 && estimate <= high * 1.01 + 1e-9,
        "{what}: p{} = {estimate}, exact between {low} and {high}",
        q * 100.0
    );
}

struct Server {
    child: Child,
    port: u16,
    /// The password `serve` generated and printed, when none was given.
    generated_password: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(data: &Path) -> Server {
    start_server_with(data, &["--pg-password", PASSWORD])
}

/// `serve` on a loopback port with `extra` arguments (the password comes
/// only from them: the environment's is removed).
fn start_server_with(data: &Path, extra: &[&str]) -> Server {
    let mut child = Command::new(binary())
        .args(["serve", "--pg", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env_remove("INFERWATCH_PG_PASSWORD")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut generated_password = None;
    let port = loop {
        let line = lines.next().expect("serve printed its address").unwrap();
        if let Some(password) = line.split("password for this run: ").nth(1) {
            generated_password = Some(password.trim().to_string());
        }
        if let Some(rest) = line.split("Postgres wire on ").nth(1) {
            let address = rest.split_whitespace().next().unwrap();
            break address.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        port,
        generated_password,
    }
}

fn psql(port: u16, password: &str, sql: &str) -> std::process::Output {
    psql_command(port, password, "", sql).output().unwrap()
}

/// psql with `options` added to the connection string (e.g. `sslmode=require`).
fn psql_command(port: u16, password: &str, options: &str, sql: &str) -> Command {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-At", "-F", ","])
        .arg(format!(
            "host=127.0.0.1 port={port} user=inferwatch dbname=inferwatch {options}"
        ))
        .args(["-c", sql])
        // The server's certificate in the TLS test is self-signed; libpq must
        // not look for a root store or client certificates of this machine.
        .env("PGSSLROOTCERT", "/nonexistent")
        .env("PGSSLCERT", "/nonexistent")
        .env("PGSSLKEY", "/nonexistent")
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10");
    command
}

fn psql_rows(port: u16, sql: &str) -> Vec<Vec<String>> {
    let output = psql(port, PASSWORD, sql);
    assert!(
        output.status.success(),
        "psql failed on {sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

fn simulated_store() -> (tempfile::TempDir, PathBuf, Expected) {
    let directory = tempfile::tempdir().unwrap();
    let input = directory.path().join("fleet.jsonl");
    let data = directory.path().join("data");
    let status = Command::new(binary())
        .args(["simulate", "--duration", "1h", "--rate", "100", "--output"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new(binary())
        .args(["ingest", "--quiet", "--flush-rows", "100000", "--data"])
        .arg(&data)
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let expected = expected_from(&input);
    (directory, data, expected)
}

#[test]
fn psql_gets_the_right_numbers_and_clear_errors() {
    if !available("psql", &["--version"]) {
        return;
    }
    let (_directory, data, expected) = simulated_store();
    let server = start_server(&data);
    let port = server.port;

    let total = psql_rows(port, "SELECT count(*) FROM inference");
    assert_eq!(total, vec![vec![expected.total.to_string()]]);

    // Per version: count and p99 (answered from rollups) ...
    let rows = psql_rows(
        port,
        "SELECT model_version, count(*), quantile(latency_ms, 0.99) FROM inference GROUP BY model_version ORDER BY model_version",
    );
    assert_eq!(rows.len(), expected.by_version.len());
    for row in &rows {
        let values = &expected.by_version[&row[0]];
        assert_eq!(row[1].parse::<usize>().unwrap(), values.len(), "{row:?}");
        assert_quantile_close(values, 0.99, row[2].parse().unwrap(), &row[0]);
    }
    // ... and the same from raw events (a filter on latency rules out rollups).
    let raw = psql_rows(
        port,
        "SELECT model_version, count(*), quantile(latency_ms, 0.99) FROM inference WHERE latency_ms >= 0 GROUP BY model_version ORDER BY model_version",
    );
    for (row, raw_row) in rows.iter().zip(&raw) {
        assert_eq!(row[..2], raw_row[..2]);
        let values = &expected.by_version[&raw_row[0]];
        assert_quantile_close(values, 0.99, raw_row[2].parse().unwrap(), &raw_row[0]);
    }

    // Per source: count and errors.
    let rows = psql_rows(
        port,
        "SELECT source_id, count(*), sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END) FROM inference GROUP BY 1 ORDER BY 1",
    );
    let got: BTreeMap<String, (i64, i64)> = rows
        .iter()
        .map(|r| (r[0].clone(), (r[1].parse().unwrap(), r[2].parse().unwrap())))
        .collect();
    assert_eq!(got, expected.by_source);

    // EXPLAIN shows which table answered.
    let plan = psql_rows(
        port,
        "EXPLAIN SELECT source_id, count(*) FROM inference GROUP BY 1",
    )
    .concat()
    .join(" ");
    assert!(plan.contains("inference_rollups"), "{plan}");

    // Bad SQL: a clear message, and the server keeps serving.
    let bad = psql(port, PASSWORD, "SELEC count(*) FROM inference");
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(message.contains("ERROR"), "{message}");
    assert!(message.to_lowercase().contains("selec"), "{message}");
    let missing = psql(port, PASSWORD, "SELECT nope FROM inference");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
    assert_eq!(
        psql_rows(port, "SELECT count(*) FROM inference"),
        vec![vec![expected.total.to_string()]]
    );

    // A wrong password is refused.
    let refused = psql(port, "wrong", "SELECT 1");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
}

#[test]
fn psycopg_and_pandas_get_the_right_numbers() {
    let python = python();
    if !available(&python, &["-c", "import psycopg, pandas"]) {
        return;
    }
    let (_directory, data, expected) = simulated_store();
    let server = start_server(&data);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/clients/pg_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .args(["--port", &server.port.to_string(), "--password", PASSWORD])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["total"].as_i64().unwrap(), expected.total);
    // Extended protocol with a bound parameter.
    let canary = &expected.by_version["2.1"];
    assert_eq!(
        result["canary_count"].as_u64().unwrap() as usize,
        canary.len()
    );
    assert_quantile_close(canary, 0.99, result["canary_p99"].as_f64().unwrap(), "2.1");
    // pandas.read_sql: errors per source.
    let by_source = result["by_source"].as_object().unwrap();
    assert_eq!(by_source.len(), expected.by_source.len());
    for (source, (count, errors)) in &expected.by_source {
        let got = &by_source[source];
        assert_eq!(got["requests"].as_i64().unwrap(), *count, "{source}");
        assert_eq!(got["errors"].as_i64().unwrap(), *errors, "{source}");
    }
    assert!(result["bad_sql_error"].as_str().unwrap().contains("selec"));
}

/// Every file under `dir`, to show that refused statements wrote nothing.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

#[test]
fn issue_16_psql_cannot_write_and_harmless_sets_still_work() {
    if !available("psql", &["--version"]) {
        return;
    }
    let (directory, data, expected) = simulated_store();
    let outside = directory.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret.csv");
    std::fs::write(&secret, "a\n1\n").unwrap();
    let server = start_server(&data);
    let port = server.port;
    let before = (files_under(&data), files_under(&outside));

    let copy_target = outside.join("copied.csv");
    let writes = [
        (
            format!("COPY (SELECT 42) TO '{}'", copy_target.display()),
            "COPY",
        ),
        (
            format!(
                "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}'",
                secret.display()
            ),
            "CREATE EXTERNAL TABLE",
        ),
        (
            "INSERT INTO inference (model_id) VALUES ('forged')".to_string(),
            "INSERT",
        ),
        ("DROP TABLE inference".to_string(), "DROP TABLE"),
        ("CREATE VIEW v AS SELECT 1".to_string(), "CREATE VIEW"),
        (
            "SET datafusion.execution.target_partitions = 1".to_string(),
            "SET datafusion.execution.target_partitions",
        ),
        (
            "SET datafusion.runtime.memory_limit = '100G'".to_string(),
            "SET datafusion.runtime.memory_limit",
        ),
    ];
    for (sql, what) in &writes {
        let output = psql(port, PASSWORD, sql);
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{sql} succeeded");
        assert!(
            message.contains("read-only") && message.contains(what),
            "{sql}: {message}"
        );
    }
    // A path is not a table.
    let by_path = psql(
        port,
        PASSWORD,
        &format!("SELECT * FROM '{}'", secret.display()),
    );
    assert!(!by_path.status.success());

    assert!(!copy_target.exists());
    assert_eq!((files_under(&data), files_under(&outside)), before);
    // The refused SETs changed nothing in the engine all clients share.
    let partitions = psql_rows(
        port,
        "SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.target_partitions'",
    );
    assert_ne!(partitions, vec![vec!["1".to_string()]]);

    // What psql, JDBC and Grafana send on connect is accepted.
    for set in [
        "SET application_name = 'grafana'",
        "SET extra_float_digits = 3",
        "SET DateStyle = 'ISO, MDY'",
        "SET client_encoding = 'UTF8'",
        "SET TIME ZONE 'UTC'",
        "SET statement_timeout = 0",
    ] {
        let output = psql(
            port,
            PASSWORD,
            &format!("{set}; SELECT count(*) FROM inference"),
        );
        assert!(
            output.status.success(),
            "{set}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            stdout.lines().last(),
            Some(expected.total.to_string().as_str()),
            "{set}"
        );
    }
}

#[test]
fn issue_16_no_default_password_and_scram_login() {
    if !available("psql", &["--version"]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    // No password on loopback: one is generated and printed once.
    let server = start_server_with(data.path(), &[]);
    let password = server
        .generated_password
        .clone()
        .expect("serve printed a generated password");
    assert!(password.len() >= 20, "{password}");
    assert_ne!(password, "inferwatch");
    let rows = psql(server.port, &password, "SELECT 1");
    assert!(
        rows.status.success(),
        "{}",
        String::from_utf8_lossy(&rows.stderr)
    );
    // The old default, a wrong password and an unknown user are all refused alike.
    for (user, attempt) in [
        ("inferwatch", "inferwatch"),
        ("inferwatch", "wrong"),
        ("admin", password.as_str()),
    ] {
        let output = psql_command(server.port, attempt, &format!("user={user}"), "SELECT 1")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{user}/{attempt} logged in");
        let message = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(
            message.contains("password authentication failed"),
            "{message}"
        );
    }
    // Without TLS configured, a client that requires it is turned away.
    let plain = psql_command(server.port, &password, "sslmode=require", "SELECT 1")
        .output()
        .unwrap();
    assert!(!plain.status.success());

    // Any other address without a password: refused at start.
    let refused = Command::new(binary())
        .args(["serve", "--pg", "0.0.0.0:0", "--data"])
        .arg(data.path())
        .env_remove("INFERWATCH_PG_PASSWORD")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("no password"), "{message}");
}

#[test]
fn issue_16_tls_and_scram_channel_binding_with_a_self_signed_certificate() {
    if !available("psql", &["--version"]) || !available("openssl", &["version"]) {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let certificate = directory.path().join("server.crt");
    let key = directory.path().join("server.key");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&certificate)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let server = start_server_with(
        &directory.path().join("data"),
        &[
            "--pg-password",
            PASSWORD,
            "--pg-tls-cert",
            certificate.to_str().unwrap(),
            "--pg-tls-key",
            key.to_str().unwrap(),
        ],
    );
    // sslmode=require fails unless TLS is negotiated; channel_binding=require
    // fails unless the login is SCRAM-SHA-256-PLUS bound to this certificate.
    let output = psql_command(
        server.port,
        PASSWORD,
        "sslmode=require channel_binding=require",
        "\\conninfo",
    )
    .output()
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info = String::from_utf8_lossy(&output.stdout);
    assert!(info.contains("SSL connection"), "{info}");
    let answer = psql_command(server.port, PASSWORD, "sslmode=require", "SELECT 40 + 2")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&answer.stdout).trim(), "42");
    let wrong = psql_command(server.port, "wrong", "sslmode=require", "SELECT 1")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
}

#[test]
fn issue_16_a_second_client_is_answered_while_a_cross_join_runs() {
    if !available("psql", &["--version"]) {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let server = start_server_with(
        data.path(),
        &["--pg-password", PASSWORD, "--statement-timeout", "15s"],
    );
    // 10^12 pairs: hours of both cores, ended by its 15 s statement timeout.
    // (On one shared runtime it kept every worker busy and the second
    // client could not even connect.)
    let mut heavy = psql_command(
        server.port,
        PASSWORD,
        "",
        "SELECT sum(a.value * b.value) FROM generate_series(1, 1000000) a CROSS JOIN generate_series(1, 1000000) b",
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Let it connect and start; the assertions below do not depend on how long.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let light = psql(server.port, PASSWORD, "SELECT 1");
    assert!(
        light.status.success(),
        "{}",
        String::from_utf8_lossy(&light.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&light.stdout).trim(), "1");
    assert!(
        heavy.try_wait().unwrap().is_none(),
        "the cross join ended before the second client was answered"
    );
    let heavy = heavy.wait_with_output().unwrap();
    let message = String::from_utf8_lossy(&heavy.stderr);
    assert!(
        !heavy.status.success() && message.contains("statement timeout"),
        "{message}"
    );
    // And the server is still there for the next client.
    assert_eq!(
        String::from_utf8_lossy(&psql(server.port, PASSWORD, "SELECT 2").stdout).trim(),
        "2"
    );
}

/// `inferwatch token create`: the token text.
fn create_token(data: &Path, scope: &str, extra: &[&str]) -> String {
    let output = Command::new(binary())
        .args(["token", "create", "--scope", scope, "--data"])
        .arg(data)
        .args(extra)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// psql as `user` with `password` (none: PGPASSWORD unset and no prompt).
fn psql_as(port: u16, user: &str, password: Option<&str>, sql: &str) -> (bool, String, String) {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-w", "-At"])
        .arg(format!(
            "host=127.0.0.1 port={port} user={user} dbname=inferwatch sslmode=disable"
        ))
        .args(["-c", sql])
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/nonexistent")
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

/// The node with tokens on: the Postgres wire takes a read (or admin)
/// token as the password, under any user name, and turns every other
/// credential away with a Postgres error that says why. psql (simple
/// protocol) and psycopg (extended protocol) log in through SCRAM-SHA-256
/// against the verifier `token create` stored.
#[test]
fn the_node_takes_a_read_token_as_the_postgres_password_and_refuses_every_other_credential() {
    let python = python();
    if !available("psql", &["--version"]) || !available(&python, &["-c", "import psycopg"]) {
        return;
    }
    let directory = tempfile::tempdir().unwrap();
    let data = directory.path().join("data");
    let events = directory.path().join("events.jsonl");
    let lines: String = (0..25)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-01-01T00:00:{i:02}Z\",\"model_id\":\"m\",\"request_id\":\"r{i}\",\"latency_ms\":{i}}}\n"
            )
        })
        .collect();
    std::fs::write(&events, lines).unwrap();
    let status = Command::new(binary())
        .args(["ingest", "--quiet", "--data"])
        .arg(&data)
        .arg(&events)
        .status()
        .unwrap();
    assert!(status.success());

    let read = create_token(&data, "read", &[]);
    let admin = create_token(&data, "admin", &[]);
    let ingest = create_token(&data, "ingest", &[]);
    let expired = create_token(&data, "read", &["--expires", "1h"]);
    let revoked = create_token(&data, "read", &[]);
    let legacy = create_token(&data, "read", &[]);
    let revoked_id = revoked.split('_').nth(1).unwrap();
    let status = Command::new(binary())
        .args(["token", "revoke", "--id", revoked_id, "--data"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success());
    // Expire one, and make one look like a token from before verifiers.
    let tokens_path = data.join("tokens.json");
    let mut tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tokens_path).unwrap()).unwrap();
    let expired_id = expired.split('_').nth(1).unwrap();
    let legacy_id = legacy.split('_').nth(1).unwrap();
    for record in tokens["tokens"].as_array_mut().unwrap() {
        assert!(record["scram"]
            .as_str()
            .unwrap()
            .starts_with("SCRAM-SHA-256$4096:"));
        if record["id"] == expired_id {
            record["expires_at"] = "2020-01-01T00:00:00Z".into();
        }
        if record["id"] == legacy_id {
            record.as_object_mut().unwrap().remove("scram");
        }
    }
    std::fs::write(&tokens_path, tokens.to_string()).unwrap();
    let listed = common::run(&["token", "list", "--data", data.to_str().unwrap()]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with(legacy_id) && line.contains("no-pg")),
        "{listed}"
    );

    let server = start_server_with(&data, &["--listen", "127.0.0.1:0"]);
    let port = server.port;
    let bad = format!("iw_{}_{}", "0".repeat(16), "ab".repeat(32));
    let invalid = "password must be a valid inferwatch token";
    // (what, password, expected answer: Ok(count) or Err(message part)).
    let cases: Vec<(&str, Option<&str>, Result<&str, &str>)> = vec![
        ("no token", None, Err("no password supplied")),
        ("bad token", Some(bad.as_str()), Err(invalid)),
        ("not a token", Some("hunter2"), Err(invalid)),
        ("revoked token", Some(revoked.as_str()), Err(invalid)),
        (
            "token without a verifier",
            Some(legacy.as_str()),
            Err(invalid),
        ),
        ("expired token", Some(expired.as_str()), Err("expired")),
        ("ingest token", Some(ingest.as_str()), Err("scope ingest")),
        ("read token", Some(read.as_str()), Ok("25")),
        ("admin token", Some(admin.as_str()), Ok("25")),
    ];
    for (what, password, expected) in &cases {
        for user in ["inferwatch", "grafana"] {
            let (ok, stdout, stderr) =
                psql_as(port, user, *password, "SELECT count(*) FROM inference");
            match expected {
                Ok(count) => {
                    assert!(ok, "psql, {what}, user {user}: {stderr}");
                    assert_eq!(stdout, *count, "psql, {what}");
                }
                Err(needle) => {
                    assert!(!ok, "psql, {what}, user {user}: logged in");
                    assert!(stderr.contains(needle), "psql, {what}: {stderr}");
                }
            }
        }
    }

    // psycopg: the extended protocol with a bound parameter, same verdicts.
    let script = r#"
import json, sys, psycopg
port, cases = int(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for what, password in cases:
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="python", dbname="inferwatch",
                             password=password or "", sslmode="disable", connect_timeout=10) as conn:
            row = conn.execute("SELECT count(*) FROM inference WHERE latency_ms >= %s", (10,)).fetchone()
            out[what] = {"ok": True, "count": int(row[0])}
    except psycopg.OperationalError as error:
        out[what] = {"ok": False, "error": str(error)}
print(json.dumps(out))
"#;
    let pairs: Vec<(&str, Option<&str>)> = cases.iter().map(|(w, p, _)| (*w, *p)).collect();
    let output = Command::new(&python)
        .args(["-c", script, &port.to_string()])
        .arg(serde_json::to_string(&pairs).unwrap())
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (what, _, expected) in &cases {
        let answer = &answers[*what];
        match expected {
            Ok(_) => assert_eq!(answer["count"], 15, "psycopg, {what}: {answer}"),
            Err(needle) => {
                assert_eq!(answer["ok"], false, "psycopg, {what}: {answer}");
                assert!(
                    answer["error"].as_str().unwrap().contains(needle),
                    "psycopg, {what}: {answer}"
                );
            }
        }
    }
    drop(server);

    // A configured user name: only that one.
    let server = start_server_with(&data, &["--listen", "127.0.0.1:0", "--pg-user", "analyst"]);
    let (ok, stdout, stderr) = psql_as(server.port, "analyst", Some(&read), "SELECT 1");
    assert!(ok && stdout == "1", "{stderr}");
    let (ok, _, stderr) = psql_as(server.port, "someone", Some(&read), "SELECT 1");
    assert!(
        !ok && stderr.contains("accepts only user \"analyst\""),
        "{stderr}"
    );
    drop(server);

    // With tokens on, a Postgres password would be a second, weaker door.
    let refused = Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--pg", "127.0.0.1:0"])
        .args(["--pg-password", "x", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("drop --pg-password"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}
