//! Log shippers against `inferwatch serve` (issue 18).
//!
//! - `syslog_ng`: Debian's syslog-ng (3.38) with its `elasticsearch-http()`
//!   destination, a real `_bulk` client, reads a file of inference JSON
//!   lines and sends them to the node with a token as its Basic password.
//! - `replay`: Filebeat, Vector and Fluent Bit are in no registry here, so
//!   `fixtures/shippers/` holds the requests each sends (start-up probes,
//!   then `_bulk` bodies with their headers), written from their source
//!   code (cited in `fixtures/shippers/README.md`). The test replays them
//!   and checks every answer the way that shipper's code checks it.
//!
//! Both assert that every event arrives with its fields and the counts
//! match.

use super::*;

/// Runs `sql` through `POST /api/v1/query` and returns its rows.
fn rows(node: &Node, read: &str, sql: &str) -> Vec<serde_json::Value> {
    let answer = curl(&[
        "-H",
        &format!("Authorization: Bearer {read}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &serde_json::json!({ "sql": sql }).to_string(),
        &node.url("/api/v1/query"),
    ]);
    assert_eq!(answer.status, 200, "{sql}: {}", answer.body);
    answer.json()["rows"].as_array().unwrap().clone()
}

/// `SELECT count(*) …` as a number (0 when the table does not exist yet).
fn count(node: &Node, read: &str, sql: &str) -> u64 {
    let answer = curl(&[
        "-H",
        &format!("Authorization: Bearer {read}"),
        "-H",
        "Content-Type: application/json",
        "-d",
        &serde_json::json!({ "sql": sql }).to_string(),
        &node.url("/api/v1/query"),
    ]);
    if answer.status != 200 {
        return 0;
    }
    answer.json()["rows"][0][0].as_u64().unwrap_or(0)
}

mod syslog_ng {
    use super::*;
    use std::io::Write as _;

    /// Debian installs it in /usr/sbin, which a non-root PATH may lack.
    fn program() -> &'static str {
        if Path::new("/usr/sbin/syslog-ng").exists() {
            "/usr/sbin/syslog-ng"
        } else {
            "syslog-ng"
        }
    }

    /// A syslog-ng running in the foreground; SIGKILLed when dropped.
    struct SyslogNg {
        child: Child,
        log: std::path::PathBuf,
    }

    impl SyslogNg {
        fn start(dir: &Path, config: &Path) -> SyslogNg {
            let log = dir.join("syslog-ng.log");
            let child = Command::new(program())
                .arg("-F") // foreground
                .arg("-e") // its own messages on stderr
                .arg("--no-caps")
                .arg("-f")
                .arg(config)
                .arg("-R")
                .arg(dir.join("syslog-ng.persist"))
                .arg("-p")
                .arg(dir.join("syslog-ng.pid"))
                .arg("-c")
                .arg(dir.join("syslog-ng.ctl"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("starting syslog-ng");
            SyslogNg { child, log }
        }

        fn messages(&self) -> String {
            std::fs::read_to_string(&self.log).unwrap_or_default()
        }

        /// SIGTERM, then waits: syslog-ng flushes and exits.
        fn stop(mut self) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let status = self.child.wait().unwrap();
            assert!(
                status.success(),
                "syslog-ng exited with {status}: {}",
                self.messages()
            );
        }
    }

    impl Drop for SyslogNg {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Event `i` of the file: two models, five clients, known numbers.
    fn event(i: usize) -> String {
        serde_json::json!({
            "timestamp": now(),
            "model_id": if i.is_multiple_of(2) { "sng-chat" } else { "sng-embed" },
            "model_version": "v7",
            "request_id": format!("sng-{i}"),
            "client_id": format!("client-{}", i % 5),
            "status": "ok",
            "latency_ms": 10 + i,
            "input_tokens": 100 + i,
            "output_tokens": 3,
        })
        .to_string()
    }

    /// The configuration a user writes: a file source that keeps each line
    /// as the message, and `elasticsearch-http()` (syslog-ng's SCL, over its
    /// `http()` module) sending that line as the document.
    fn config_text(events: &Path, bulk_url: &str, token: &str) -> String {
        format!(
            r#"@version: 3.38
@include "scl.conf"
options {{ stats_freq(0); }};
source s_inference {{
  file("{events}" flags(no-parse) follow-freq(1));
}};
destination d_inferwatch {{
  elasticsearch-http(
    url("{bulk_url}")
    index("inference")
    type("")
    user("syslog-ng")
    password("{token}")
    template("${{MESSAGE}}")
    batch_lines(25)
    workers(2)
  );
}};
log {{ source(s_inference); destination(d_inferwatch); }};
"#,
            events = events.display()
        )
    }

    #[test]
    fn elasticsearch_http_destination_delivers_every_line_of_a_followed_file() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Ingest into `inference` only: the bulk actions name it.
        let ingest = token(&data, "ingest", Some("inference"));
        let read = token(&data, "read", None);
        let node = Node::start(&data, &[]);

        const FIRST: usize = 120;
        const TOTAL: usize = 200;
        let events = dir.path().join("inference.jsonl");
        let mut file = std::fs::File::create(&events).unwrap();
        for i in 0..FIRST {
            writeln!(file, "{}", event(i)).unwrap();
        }
        file.flush().unwrap();
        let config = dir.path().join("syslog-ng.conf");
        std::fs::write(&config, config_text(&events, &node.url("/_bulk"), &ingest)).unwrap();
        // Parses the file with the real modules: fails in CI when
        // syslog-ng, its SCL or its http module is missing.
        if !available(
            program(),
            &["--syntax-only", "-f", config.to_str().unwrap()],
        ) {
            return;
        }
        let syslog_ng = SyslogNg::start(dir.path(), &config);
        let all = "SELECT count(*) FROM inference WHERE model_id LIKE 'sng-%'";
        eventually(120, "the first lines through syslog-ng", || {
            (count(&node, &read, all) == FIRST as u64).then_some(())
        });
        // Lines appended while it follows the file go the same way.
        for i in FIRST..TOTAL {
            writeln!(file, "{}", event(i)).unwrap();
        }
        file.flush().unwrap();
        eventually(120, "the appended lines through syslog-ng", || {
            let seen = count(&node, &read, all);
            assert!(
                seen <= TOTAL as u64,
                "more events than lines: {seen}: {}",
                syslog_ng.messages()
            );
            (seen == TOTAL as u64).then_some(())
        });
        let messages = syslog_ng.messages();
        syslog_ng.stop();

        // Every line once, each with its own fields.
        let found = rows(
            &node,
            &read,
            "SELECT count(*), count(DISTINCT request_id), sum(latency_ms), sum(input_tokens), \
             sum(output_tokens), count(DISTINCT client_id), min(model_version), max(model_version), \
             sum(CASE WHEN status = 'ok' THEN 1 ELSE 0 END) \
             FROM inference WHERE model_id LIKE 'sng-%'",
        );
        let latency: usize = (0..TOTAL).map(|i| 10 + i).sum();
        let input: usize = (0..TOTAL).map(|i| 100 + i).sum();
        assert_eq!(
            found[0],
            serde_json::json!([
                TOTAL,
                TOTAL,
                latency as f64,
                input,
                3 * TOTAL,
                5,
                "v7",
                "v7",
                TOTAL
            ]),
            "syslog-ng said: {messages}"
        );
        let by_model = rows(
            &node,
            &read,
            "SELECT model_id, count(*) FROM inference WHERE model_id LIKE 'sng-%' GROUP BY 1 ORDER BY 1",
        );
        assert_eq!(
            serde_json::Value::Array(by_model),
            serde_json::json!([["sng-chat", TOTAL / 2], ["sng-embed", TOTAL / 2]])
        );
        node.stop();
        // And durable: the store has them after the node stopped.
        let stored: u64 = counts_by_model(&data)
            .iter()
            .filter(|(model, _)| model.starts_with("sng-"))
            .map(|(_, n)| n)
            .sum();
        assert_eq!(stored, TOTAL as u64);
    }
}

/// Filebeat, Vector and Fluent Bit replayed from `fixtures/shippers/`: each
/// request as the shipper sends it (gzip where it compresses), each answer
/// checked the way that shipper's code reads it, then the stored events
/// counted per stream and their fields summed against the accepted
/// documents.
mod replay {
    use super::*;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::io::Write as _;

    fn fixtures() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/shippers")
    }

    /// Standard base64 with padding (what Go's `SetBasicAuth`, Vector's and
    /// Fluent Bit's Basic auth and Beats' `api_key` send).
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let word = (u32::from(chunk[0]) << 16)
                | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
                | u32::from(*chunk.get(2).unwrap_or(&0));
            for position in 0..4 {
                if position <= chunk.len() {
                    out.push(ALPHABET[(word >> (18 - 6 * position) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// `{{basic:USER}}` → base64 of `USER:token`; `{{apikey:ID}}` → base64
    /// of `ID:token` (Elasticsearch's API key form).
    fn with_token(value: &str, token: &str) -> String {
        let mut text = value.to_string();
        while let Some(start) = text.find("{{") {
            let end = start + text[start..].find("}}").expect("closed placeholder");
            let (kind, name) = text[start + 2..end].split_once(':').expect("kind:name");
            assert!(matches!(kind, "basic" | "apikey"), "placeholder {kind}");
            let encoded = base64(format!("{name}:{token}").as_bytes());
            text.replace_range(start..end + 2, &encoded);
        }
        text
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// The action and document lines of a bulk body: (action, index, document).
    fn bulk_documents(body: &str) -> Vec<(String, String, Value)> {
        let mut lines = body.lines().filter(|line| !line.trim().is_empty());
        let mut documents = Vec::new();
        while let Some(action) = lines.next() {
            let action: Value = serde_json::from_str(action).unwrap();
            let (name, meta) = action.as_object().unwrap().iter().next().unwrap();
            let document: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
            documents.push((
                name.clone(),
                meta["_index"].as_str().unwrap().to_string(),
                document,
            ));
        }
        documents
    }

    /// A version `a.b.c` as a comparable triple.
    fn version(text: &str) -> (u64, u64, u64) {
        let mut parts = text.split('.').map(|part| {
            part.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .unwrap()
        });
        (
            parts.next().unwrap(),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        )
    }

    /// What each shipper's code does with a `_bulk` answer, checked
    /// against the statuses the fixture expects for its items.
    fn check_bulk(
        shipper: &str,
        answer: &Answer,
        actions: &[(String, String, Value)],
        expected: &[u64],
        what: &str,
    ) {
        assert_eq!(actions.len(), expected.len(), "{what}: fixture item count");
        let failed = expected.iter().any(|status| *status >= 300);
        match shipper {
            // publishEvents(): a status other than 200 fails the batch.
            "filebeat" => assert_eq!(answer.status, 200, "{what}: {}", answer.body),
            // should_retry_response(): 2xx, then the `"errors":true` substring.
            "vector" => {
                assert!(
                    (200..300).contains(&answer.status),
                    "{what}: {}",
                    answer.body
                );
                assert_eq!(
                    answer.body.contains("\"errors\":true"),
                    failed,
                    "{what}: Vector looks for the compact substring: {}",
                    answer.body
                );
            }
            // cb_es_flush(): 200 or 201 and a non-empty body.
            "fluent-bit" => {
                assert!(
                    matches!(answer.status, 200 | 201),
                    "{what}: {}",
                    answer.body
                );
                assert!(!answer.body.is_empty(), "{what}: an empty body is retried");
            }
            other => panic!("unknown shipper {other}"),
        }
        let json = answer.json();
        // Fluent Bit: `errors` must be a boolean.
        assert_eq!(
            json["errors"],
            Value::Bool(failed),
            "{what}: {}",
            answer.body
        );
        let items = json["items"].as_array().expect("an items array");
        assert_eq!(items.len(), actions.len(), "{what}: one item per action");
        for (index, ((action, _, _), item)) in actions.iter().zip(items).enumerate() {
            // Filebeat reads one key per item; Vector's items are `index`
            // or `create`, the action sent.
            let object = item.as_object().unwrap();
            assert_eq!(object.len(), 1, "{what}: item {index}: {item}");
            let inner = object.get(action.as_str()).unwrap_or_else(|| {
                panic!("{what}: item {index} answers another action than {action}: {item}")
            });
            // A numeric status (Filebeat's nextInt, Fluent Bit's integer
            // check, Vector's Option<u16>).
            let status = inner["status"]
                .as_u64()
                .unwrap_or_else(|| panic!("{what}: item {index} status: {item}"));
            assert_eq!(status, expected[index], "{what}: item {index}: {item}");
            if status >= 300 {
                // Vector logs `error.type` and `error.reason`; neither it
                // nor Filebeat retries a 400 (only 429 and 5xx).
                assert!(inner["error"]["type"].is_string(), "{what}: {item}");
                assert!(inner["error"]["reason"].is_string(), "{what}: {item}");
            }
        }
    }

    /// Replays `NAME.json` against a fresh node, then compares what is
    /// stored with the documents the answers accepted.
    fn replay(name: &str) {
        if !available("curl", &["--version"]) {
            return;
        }
        let fixture: Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let shipper = fixture["shipper"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node = Node::start(&data, &[]);
        // Stream → accepted documents.
        let mut accepted: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (number, exchange) in fixture["exchanges"].as_array().unwrap().iter().enumerate() {
            let method = exchange["method"].as_str().unwrap();
            let path = exchange["path"].as_str().unwrap();
            let what = format!("{name} #{number} {method} {path}");
            let mut args: Vec<String> = Vec::new();
            match method {
                "HEAD" => args.push("-I".into()),
                "GET" => {}
                other => args.extend(["-X".into(), other.into()]),
            }
            for (header, value) in exchange["headers"].as_object().unwrap() {
                let value = with_token(value.as_str().unwrap(), &ingest);
                args.extend(["-H".into(), format!("{header}: {value}")]);
            }
            let mut actions = Vec::new();
            if let Some(body) = exchange["body"].as_str() {
                let text = std::fs::read_to_string(fixtures().join(body)).unwrap();
                actions = bulk_documents(&text);
                let bytes = if exchange["gzip"] == true {
                    gzip(text.as_bytes())
                } else {
                    text.clone().into_bytes()
                };
                let sent = dir.path().join(format!("{number}.body"));
                std::fs::write(&sent, bytes).unwrap();
                args.extend(["--data-binary".into(), format!("@{}", sent.display())]);
            }
            args.push(node.url(path));
            let answer = curl(&args.iter().map(String::as_str).collect::<Vec<_>>());

            // Every answer names the product, or the official clients stop.
            assert_eq!(
                answer.header("x-elastic-product").as_deref(),
                Some("Elasticsearch"),
                "{what}"
            );
            let expect = &exchange["expect"];
            if let Some(items) = expect["items"].as_array() {
                let expected: Vec<u64> = items.iter().map(|s| s.as_u64().unwrap()).collect();
                check_bulk(shipper, &answer, &actions, &expected, &what);
                for ((_, index, document), status) in actions.into_iter().zip(expected) {
                    if status < 300 {
                        accepted
                            .entry(inferwatch_server::protocol::stream_name(&index).into_owned())
                            .or_default()
                            .push(document);
                    }
                }
                continue;
            }
            assert_eq!(
                answer.status,
                expect["status"].as_u64().unwrap() as u16,
                "{what}: {}",
                answer.body
            );
            if let Some(minimum) = expect["minimum_version"].as_str() {
                let json = answer.json();
                let number = json["version"]["number"].as_str().expect("version.number");
                assert!(
                    version(number) >= version(minimum),
                    "{what}: {number} is older than {minimum}"
                );
                // Beats 8.10+ treat build_flavor `serverless` differently
                // (no ILM); a stateful node says `default`.
                assert_eq!(json["version"]["build_flavor"], "default", "{what}");
            }
            if expect["license"] == true {
                let json = answer.json();
                assert_eq!(json["license"]["status"], "active", "{what}");
                let kind = json["license"]["type"].as_str().unwrap();
                assert!(
                    [
                        "basic",
                        "trial",
                        "standard",
                        "gold",
                        "platinum",
                        "enterprise"
                    ]
                    .contains(&kind),
                    "{what}: license type {kind}"
                );
            }
        }

        // The stored events: as many per stream as were accepted.
        for (stream, documents) in &accepted {
            let sql = format!("SELECT count(*) FROM \"{stream}\"");
            assert_eq!(
                rows(&node, &read, &sql)[0][0].as_u64(),
                Some(documents.len() as u64),
                "{name}: stream {stream}"
            );
        }
        // And the inference events with their fields.
        if let Some(documents) = accepted.get("inference") {
            let latency: f64 = documents
                .iter()
                .map(|d| d["latency_ms"].as_f64().unwrap())
                .sum();
            let tokens: u64 = documents
                .iter()
                .map(|d| d["input_tokens"].as_u64().unwrap())
                .sum();
            let errors = documents.iter().filter(|d| d["status"] == "error").count();
            let found = rows(
                &node,
                &read,
                "SELECT count(DISTINCT request_id), sum(latency_ms), sum(input_tokens), \
                 sum(CASE WHEN status = 'error' THEN 1 ELSE 0 END), min(model_version) FROM inference",
            );
            assert_eq!(
                found[0],
                serde_json::json!([documents.len(), latency, tokens, errors, "v3"]),
                "{name}"
            );
            let mut by_model: BTreeMap<String, u64> = BTreeMap::new();
            for document in documents {
                *by_model
                    .entry(document["model_id"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            let found: BTreeMap<String, u64> = rows(
                &node,
                &read,
                "SELECT model_id, count(*) FROM inference GROUP BY 1",
            )
            .iter()
            .map(|row| {
                (
                    row[0].as_str().unwrap().to_string(),
                    row[1].as_u64().unwrap(),
                )
            })
            .collect();
            assert_eq!(found, by_model, "{name}");
        }
        node.stop();
    }

    #[test]
    fn filebeat_probes_then_gzipped_create_bulks_into_inference_and_its_data_stream() {
        replay("filebeat");
    }

    #[test]
    fn vector_bulk_and_data_stream_modes_with_a_refused_document() {
        replay("vector");
    }

    #[test]
    fn fluent_bit_index_and_logstash_format_bulks() {
        replay("fluent-bit");
    }
}
