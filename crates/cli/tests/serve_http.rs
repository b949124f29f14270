//! `inferwatch serve --listen` with real clients: curl (NDJSON, gzip, HEC,
//! OTLP JSON), the Python `elasticsearch` client's bulk helper and the
//! OpenTelemetry Python SDK's OTLP/HTTP log exporter (protobuf). Every
//! test starts the binary on a loopback port in a temporary directory and
//! checks what `inferwatch query` finds in the data directory afterwards.
//!
//! The clients are real programs: outside CI a missing one skips its test
//! with a message; with `CI=true` it fails (`scripts/test-deps` installs
//! the Python ones).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

mod common;

use common::{available, python};

/// A running `inferwatch serve`; killed (SIGKILL) when dropped.
struct Node {
    child: Child,
    address: String,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let data = data.to_str().unwrap();
        let mut args = vec!["--no-pg", "--listen", "127.0.0.1:0", "--data", data];
        args.extend(extra);
        Node::spawn(&args, &[])
    }

    /// `serve` with exactly these flags and environment variables.
    fn spawn(args: &[&str], environment: &[(&str, &str)]) -> Node {
        let mut child = Command::new(common::binary())
            .arg("serve")
            .args(args)
            .envs(environment.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting inferwatch serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let address = loop {
            let line = lines
                .next()
                .expect("serve printed its address")
                .expect("stderr is text");
            if let Some(at) = line.find("HTTP ingest on ") {
                let rest = &line[at + "HTTP ingest on ".len()..];
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Node { child, address }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// SIGTERM, then waits: the server answers what is in flight and
    /// closes the store.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "serve exited with {status}");
    }

    fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A curl answer.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    }
}

fn curl(args: &[&str]) -> Answer {
    let output = Command::new("curl")
        .args(["-sS", "-i", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("running curl");
    let text = String::from_utf8(output.stdout).unwrap();
    let (rest, code) = text.rsplit_once('\n').unwrap();
    let (headers, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    Answer {
        status: code.trim().parse().unwrap_or(0),
        headers: headers.to_string(),
        body: body.to_string(),
    }
}

/// NDJSON `body` posted to the node's inference stream with `token`.
fn post_inference(node: &Node, token: &str, body: &str) -> Answer {
    curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--data-binary",
        body,
        &node.url("/api/v1/ingest/inference"),
    ])
}

fn token(data: &Path, scope: &str, stream: Option<&str>) -> String {
    let mut args = vec![
        "token",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--scope",
        scope,
    ];
    if let Some(stream) = stream {
        args.extend(["--stream", stream]);
    }
    common::run(&args).trim().to_string()
}

/// Events stored per model, from `inferwatch query`.
fn counts_by_model(data: &Path) -> std::collections::BTreeMap<String, u64> {
    let out = common::run(&[
        "query",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT model_id, count(*) AS n FROM inference GROUP BY 1 ORDER BY 1",
    ]);
    out.lines()
        .skip(1)
        .filter_map(|line| {
            let (model, n) = line.rsplit_once(',')?;
            Some((model.to_string(), n.parse().ok()?))
        })
        .collect()
}

/// RFC 3339 times `seconds` after a 10 s boundary `ago` seconds back:
/// event times in the recent past that tests can place windows on.
fn event_clock(ago: i64) -> impl Fn(i64) -> String {
    let base = (chrono::Utc::now().timestamp() - ago).div_euclid(10) * 10;
    move |seconds| {
        chrono::DateTime::from_timestamp(base + seconds, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn events(model: &str, count: usize) -> String {
    (0..count)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"{}\",\"model_id\":\"{model}\",\"latency_ms\":{},\"client_id\":\"c{i}\"}}\n",
                now(),
                10 + i
            )
        })
        .collect()
}

#[path = "serve_http/shippers.rs"]
mod shippers;

#[path = "serve_http/tls.rs"]
mod tls;

#[path = "serve_http/overload_kill9.rs"]
mod overload_kill9;

#[path = "serve_http/rules_slos.rs"]
mod rules_slos;

#[path = "serve_http/nats.rs"]
mod nats;

#[path = "serve_http/rate_limit.rs"]
mod rate_limit;

#[path = "serve_http/silences.rs"]
mod silences;

#[path = "serve_http/correlations.rs"]
mod correlations;

mod clients {
    use super::*;

    #[test]
    fn curl_elasticsearch_otel_and_hec_events_are_all_queryable() {
        if !available("curl", &["--version"])
            || !available(
                &python(),
                &[
                    "-c",
                    "import elasticsearch, opentelemetry.exporter.otlp.proto.http._log_exporter",
                ],
            )
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ingest = token(&data, "ingest", None);
        let node = Node::start(&data, &[]);
        let bearer = format!("Authorization: Bearer {ingest}");

        // NDJSON with one bad line among three good ones.
        let body = format!(
            "{}{{\"timestamp\":\"yesterday-ish\",\"model_id\":\"curl\"}}\n",
            events("curl", 3)
        );
        let answer = curl(&[
            "-H",
            &bearer,
            "--data-binary",
            &body,
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json = answer.json();
        assert_eq!(
            (json["accepted"].as_u64(), json["rejected"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(json["errors"][0]["line"], 4);
        assert!(json["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("timestamp"));

        // The same protocol gzip-compressed.
        let gzipped = dir.path().join("body.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut encoder, events("curl", 2).as_bytes()).unwrap();
        std::fs::write(&gzipped, encoder.finish().unwrap()).unwrap();
        let answer = curl(&[
            "-H",
            &bearer,
            "-H",
            "Content-Encoding: gzip",
            "--data-binary",
            &format!("@{}", gzipped.display()),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.json()["accepted"], 2, "{}", answer.body);
        assert_eq!(
            answer.header("x-elastic-product").as_deref(),
            Some("Elasticsearch")
        );

        // A raw HEC POST: two concatenated events.
        let hec = format!(
            "{{\"event\":{{\"model_id\":\"hec\",\"latency_ms\":5}}}}{{\"time\":{},\"event\":{{\"model_id\":\"hec\"}},\"host\":\"web-1\"}}",
            chrono::Utc::now().timestamp()
        );
        let answer = curl(&[
            "-H",
            &format!("Authorization: Splunk {ingest}"),
            "-d",
            &hec,
            &node.url("/services/collector/event"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.json(),
            serde_json::json!({"text": "Success", "code": 0})
        );

        // OTLP/HTTP JSON through curl.
        let otlp_json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"timeUnixNano":"{}","attributes":[{{"key":"gen_ai.request.model","value":{{"stringValue":"otlp-json"}}}},{{"key":"gen_ai.usage.input_tokens","value":{{"intValue":"42"}}}}]}}]}}]}}]}}"#,
            chrono::Utc::now().timestamp_nanos_opt().unwrap()
        );
        let answer = curl(&[
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-d",
            &otlp_json,
            &node.url("/v1/logs"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            answer.json().get("partialSuccess").is_none(),
            "{}",
            answer.body
        );

        // The Python elasticsearch client's bulk helper (PUT /_bulk, ApiKey).
        let script = r#"
import sys, datetime
from elasticsearch import Elasticsearch, helpers
url, key = sys.argv[1], sys.argv[2]
es = Elasticsearch(url, api_key=key, request_timeout=30)
info = es.info()
assert info["version"]["number"].startswith("8."), info
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
docs = [{"_index": "inference", "_source": {"@timestamp": now, "model_id": "es", "latency_ms": i}} for i in range(5)]
ok, errors = helpers.bulk(es, docs)
print(ok, len(errors))
"#;
        let output = Command::new(python())
            .args(["-c", script, &node.url(""), &ingest])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "elasticsearch client: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "5 0");

        // The OpenTelemetry SDK's OTLP/HTTP log exporter (protobuf).
        let script = r#"
import sys, logging
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
url, token = sys.argv[1], sys.argv[2]
provider = LoggerProvider()
provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=url, headers={"Authorization": "Bearer " + token})))
logger = logging.getLogger("genai")
logger.setLevel(logging.INFO)
logger.addHandler(LoggingHandler(logger_provider=provider))
for i in range(4):
    logger.info("chat completion", extra={"gen_ai.request.model": "otel", "gen_ai.usage.input_tokens": 100 + i, "gen_ai.usage.output_tokens": 7})
provider.shutdown()
"#;
        let output = Command::new(python())
            .args(["-c", script, &node.url("/v1/logs"), &ingest])
            .output()
            .unwrap();
        assert!(
            output.status.success() && output.stderr.is_empty(),
            "otel exporter: {}",
            String::from_utf8_lossy(&output.stderr)
        );

        node.stop();
        let counts = counts_by_model(&data);
        let expected: std::collections::BTreeMap<String, u64> = [
            ("curl", 5),
            ("es", 5),
            ("hec", 2),
            ("otel", 4),
            ("otlp-json", 1),
        ]
        .into_iter()
        .map(|(model, n)| (model.to_string(), n))
        .collect();
        assert_eq!(counts, expected);
        let tokens = common::run(&[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT sum(input_tokens) FROM inference WHERE model_id = 'otel'",
        ]);
        assert_eq!(tokens.lines().nth(1), Some("406"), "{tokens}");
        // The refused line is a dead letter, as from a file.
        let dead = std::fs::read_to_string(data.join("dead_letters.jsonl")).unwrap();
        assert!(dead.contains("yesterday-ish"), "{dead}");
    }
}

mod durability {
    use super::*;

    #[test]
    fn kill_9_right_after_a_2xx_loses_no_acknowledged_event() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // The default policy: fsync in the background every 100 ms; the
        // answer waits for it.
        let node = Node::start(&data, &["--open"]);
        let mut acknowledged = 0u64;
        for _ in 0..15 {
            let answer = curl(&[
                "--data-binary",
                &events("durable", 10),
                &node.url("/api/v1/ingest/inference"),
            ]);
            assert_eq!(answer.status, 200, "{}", answer.body);
            acknowledged += answer.json()["accepted"].as_u64().unwrap();
        }
        node.kill_9();
        assert_eq!(acknowledged, 150);
        assert_eq!(counts_by_model(&data).get("durable"), Some(&150));
        // And the restarted node takes more on top.
        let node = Node::start(&data, &["--open"]);
        let answer = curl(&[
            "--data-binary",
            &events("durable", 3),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.status, 200);
        node.stop();
        assert_eq!(counts_by_model(&data).get("durable"), Some(&153));
    }
}

mod overload {
    use super::*;

    /// Sends `requests` at once; returns the answers.
    fn burst(args: Vec<Vec<String>>) -> Vec<Answer> {
        let handles: Vec<_> = args
            .into_iter()
            .map(|args| {
                std::thread::spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    curl(&args)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn a_full_queue_answers_429_or_hec_503_with_retry_after_and_keeps_every_acknowledged_event() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // One queued request, each append slowed: a burst must overflow.
        let node = Node::start(
            &data,
            &["--open", "--queue", "1", "--test-append-delay-ms", "200"],
        );
        let mut acknowledged = 0u64;
        let (mut saw_429, mut saw_hec_busy) = (false, false);
        // Bounded: a few bursts until both refusals were seen.
        for _ in 0..5 {
            let mut requests = Vec::new();
            for _ in 0..6 {
                requests.push(vec![
                    "--data-binary".to_string(),
                    events("load", 10),
                    node.url("/api/v1/ingest/inference"),
                ]);
            }
            for _ in 0..3 {
                requests.push(vec![
                    "-d".to_string(),
                    "{\"event\":{\"model_id\":\"load\"}}".repeat(10),
                    node.url("/services/collector/event"),
                ]);
            }
            for (index, answer) in burst(requests).into_iter().enumerate() {
                let hec = index >= 6;
                match answer.status {
                    200 if hec => acknowledged += 10,
                    200 => acknowledged += answer.json()["accepted"].as_u64().unwrap(),
                    429 if !hec => {
                        saw_429 = true;
                        assert_eq!(answer.header("retry-after").as_deref(), Some("1"));
                    }
                    503 if hec => {
                        saw_hec_busy = true;
                        assert_eq!(answer.json()["code"], 9);
                        assert!(answer.header("retry-after").is_some());
                    }
                    other => panic!("unexpected {other}: {}", answer.body),
                }
            }
            if saw_429 && saw_hec_busy {
                break;
            }
        }
        assert!(saw_429 && saw_hec_busy, "no 429 and HEC 503 under a burst");
        node.stop();
        assert_eq!(counts_by_model(&data).get("load"), Some(&acknowledged));
    }
}

mod auth {
    use super::*;

    #[test]
    fn missing_bad_and_out_of_scope_tokens_get_401_and_403() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let gateway_only = token(&data, "ingest", Some("gateway"));
        let read = token(&data, "read", None);
        let node = Node::start(&data, &[]);
        let ndjson = node.url("/api/v1/ingest/inference");
        let body = events("auth", 1);
        let none = curl(&["--data-binary", &body, &ndjson]);
        assert_eq!(none.status, 401);
        assert!(none.header("www-authenticate").is_some());
        let forged = format!(
            "Authorization: Bearer iw_0000000000000000_{}",
            "ab".repeat(32)
        );
        assert_eq!(
            curl(&["-H", &forged, "--data-binary", &body, &ndjson]).status,
            401
        );
        // Right id, wrong secret.
        let mut wrong = gateway_only.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        let wrong_header = format!("Authorization: Bearer {wrong}");
        assert_eq!(
            curl(&["-H", &wrong_header, "--data-binary", &body, &ndjson]).status,
            401
        );
        let gateway = format!("Authorization: Bearer {gateway_only}");
        assert_eq!(
            curl(&["-H", &gateway, "--data-binary", &body, &ndjson]).status,
            403
        );
        let reader = format!("Authorization: Bearer {read}");
        assert_eq!(
            curl(&["-H", &reader, "--data-binary", &body, &ndjson]).status,
            403
        );
        // The stream the token is for takes it.
        let answer = curl(&[
            "-H",
            &gateway,
            "--data-binary",
            "{\"timestamp\":\"2026-01-01T00:00:00Z\",\"path\":\"/v1/chat\"}\n",
            &node.url("/api/v1/ingest/gateway"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        // HEC's own codes.
        let hec = node.url("/services/collector/event");
        let event = "{\"event\":{\"model_id\":\"auth\"}}";
        assert_eq!(curl(&["-d", event, &hec]).json()["code"], 2);
        let bad = curl(&["-H", "Authorization: Splunk nope", "-d", event, &hec]);
        assert_eq!((bad.status, bad.json()["code"].as_u64()), (403, Some(4)));
        // Elasticsearch probes need a token too, and say so its way.
        let root = curl(&[&node.url("/")]);
        assert_eq!(root.status, 401);
        assert_eq!(
            root.header("x-elastic-product").as_deref(),
            Some("Elasticsearch")
        );
        assert_eq!(root.json()["error"]["type"], "security_exception");
        // Liveness alone is open.
        assert_eq!(curl(&[&node.url("/healthz")]).status, 200);
        assert_eq!(
            curl(&[&node.url("/services/collector/health")]).json()["code"],
            17
        );
        node.stop();
        assert_eq!(counts_by_model(&data).get("auth"), None);
    }
}

/// The notification history, rules reload and dead-letter endpoints.
mod history_reload_dead_letters {
    use super::*;

    fn get(node: &Node, token: &str, path: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &node.url(path),
        ])
    }

    fn post(node: &Node, token: &str, path: &str, body: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &node.url(path),
        ])
    }

    fn line(model: &str, at: &str) -> String {
        format!("{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"latency_ms\":5}}\n")
    }

    const BURST: &str = "id: burst\ntitle: A burst of requests\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 10s\nallowed_lateness: 1s\ncondition: count() >= 20\n";

    #[test]
    fn the_history_lists_sent_and_silenced_notifications_and_a_reload_swaps_only_valid_rules() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("burst.yaml"), BURST).unwrap();
        let notify = dir.path().join("notify.yaml");
        std::fs::write(&notify, "route:\n  group_wait: 0s\n  group_interval: 1s\n").unwrap();
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let admin = token(&data, "admin", None);
        let node = Node::start(
            &data,
            &[
                "--rules",
                rules.to_str().unwrap(),
                "--notify",
                notify.to_str().unwrap(),
            ],
        );
        let at = event_clock(120);
        let silence = post(
            &node,
            &admin,
            "/api/v1/silences",
            &format!(
                r#"{{"matchers": ["model_id=quiet"], "starts_at": "{}", "duration": "1h"}}"#,
                at(-600)
            ),
        );
        assert_eq!(silence.status, 201, "{}", silence.body);
        let mut body = String::new();
        for _ in 0..25 {
            body.push_str(&line("loud", &at(2)));
            body.push_str(&line("quiet", &at(3)));
        }
        for second in (10..60).step_by(2) {
            body.push_str(&line("tick", &at(second)));
        }
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &body,
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.json()["accepted"], 75, "{}", answer.body);

        // The history: loud's firing was notified (and, without actions,
        // recorded as handed over); quiet's was left out by the silence.
        let history = eventually(30, "the notification history", || {
            let history = get(&node, &read, "/api/v1/notifications").json();
            (!history["notifications"].as_array()?.is_empty()).then_some(history)
        });
        assert_eq!(history["actions"], false, "{history}");
        let notified: Vec<(String, String)> = history["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|notification| {
                assert_eq!(notification["sent"], true, "{notification}");
                notification["alerts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|alert| {
                        (
                            alert["group"]["model_id"].as_str().unwrap().to_string(),
                            alert["state"].as_str().unwrap().to_string(),
                        )
                    })
            })
            .collect();
        assert!(
            notified.contains(&("loud".into(), "firing".into())),
            "{history}"
        );
        assert!(
            notified.iter().all(|(model, _)| model != "quiet"),
            "{history}"
        );
        let suppressed = history["suppressed"].as_array().unwrap();
        assert!(
            suppressed.iter().any(|entry| entry["rule_id"] == "burst"
                && entry["suppression"].to_string().contains("silence")),
            "{history}"
        );
        let other_rule = get(&node, &read, "/api/v1/notifications?rule_id=nope").json();
        assert_eq!(other_rule["notifications"], serde_json::json!([]));
        assert_eq!(
            get(&node, &read, "/api/v1/notifications?limit=zero").status,
            400
        );

        // An invalid rule refuses the reload, with file:line:column, and
        // the running rules stay.
        std::fs::write(
            rules.join("broken.yaml"),
            "id: broken\ntitle: Broken\nseverity: high\nwindow: 10s\ncondition: count( >= 3\n",
        )
        .unwrap();
        let refused = post(&node, &admin, "/api/v1/rules/reload", "");
        assert_eq!(refused.status, 400, "{}", refused.body);
        let errors = refused.json()["errors"].clone();
        let first = errors[0].as_str().unwrap_or_default();
        let position = first
            .split("broken.yaml:")
            .nth(1)
            .and_then(|rest| rest.split(':').next()?.parse::<u32>().ok());
        assert!(position.is_some(), "file:line:column in {errors}");
        let listed = get(&node, &read, "/api/v1/rules").json();
        assert_eq!(listed["rules"].as_array().unwrap().len(), 1, "{listed}");

        // Valid rules are swapped in and replayed over the store: a new
        // rule judges the stored burst; burst's own transitions are not
        // written again.
        std::fs::remove_file(rules.join("broken.yaml")).unwrap();
        std::fs::write(
            rules.join("burst-ten.yaml"),
            BURST
                .replace("id: burst", "id: burst-ten")
                .replace(">= 20", ">= 10"),
        )
        .unwrap();
        let ledger = data.join("alerts.jsonl");
        let burst_lines = |text: &str| {
            common::parse_lines(text)
                .iter()
                .filter(|alert| alert["rule_id"] == "burst")
                .count()
        };
        let before = burst_lines(&std::fs::read_to_string(&ledger).unwrap());
        assert!(before >= 2, "burst fired for loud and quiet");
        let reloaded = post(&node, &admin, "/api/v1/rules/reload", "");
        assert_eq!(reloaded.status, 200, "{}", reloaded.body);
        let report = reloaded.json();
        let mut loaded: Vec<&str> = report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap())
            .collect();
        loaded.sort_unstable();
        assert_eq!(loaded, ["burst", "burst-ten"], "{report}");
        assert_eq!(report["replayed_events"], 75, "{report}");
        let firing_ten = get(&node, &read, "/api/v1/alerts?rule_id=burst-ten").json();
        let models: Vec<&str> = firing_ten["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["group"]["model_id"].as_str().unwrap())
            .collect();
        assert!(
            models.contains(&"loud") && models.contains(&"quiet"),
            "{firing_ten}"
        );
        assert_eq!(
            burst_lines(&std::fs::read_to_string(&ledger).unwrap()),
            before,
            "replaying burst wrote nothing twice"
        );
        assert_eq!(
            get(&node, &read, "/api/v1/rules").json()["rules"]
                .as_array()
                .unwrap()
                .len(),
            2
        );

        // A removed rule's alerts leave the board.
        std::fs::remove_file(rules.join("burst.yaml")).unwrap();
        assert_eq!(post(&node, &admin, "/api/v1/rules/reload", "").status, 200);
        let gone = get(&node, &read, "/api/v1/alerts?rule_id=burst").json();
        assert_eq!(gone["alerts"], serde_json::json!([]), "{gone}");
        // Reloading takes admin.
        assert_eq!(post(&node, &read, "/api/v1/rules/reload", "").status, 403);
        node.stop();
    }

    #[test]
    fn an_acknowledgement_made_over_the_api_stops_that_alerts_repeats_only() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("burst.yaml"), BURST).unwrap();
        // Repeats every 20 s of event time while an alert keeps firing.
        let notify = dir.path().join("notify.yaml");
        std::fs::write(
            &notify,
            "route:\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 20s\n",
        )
        .unwrap();
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let admin = token(&data, "admin", None);
        let node = Node::start(
            &data,
            &[
                "--rules",
                rules.to_str().unwrap(),
                "--notify",
                notify.to_str().unwrap(),
            ],
        );
        let at = event_clock(300);
        // Both models burst in every 10 s window of [from, to), with steady
        // traffic moving the clock.
        let send = |from: i64, to: i64| {
            let mut body = String::new();
            for second in (from..to).step_by(2) {
                if second % 10 == 2 {
                    for _ in 0..25 {
                        body.push_str(&line("loud", &at(second)));
                        body.push_str(&line("other", &at(second)));
                    }
                }
                body.push_str(&line("tick", &at(second)));
            }
            let answer = post_inference(&node, &ingest, &body);
            assert_eq!(answer.status, 200, "{}", answer.body);
        };
        send(0, 30);
        let alerts = eventually(30, "both alerts firing", || {
            let alerts = get(&node, &read, "/api/v1/alerts?rule_id=burst&state=firing").json();
            (alerts["alerts"].as_array()?.len() == 2).then_some(alerts)
        });
        let loud = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|alert| alert["group"]["model_id"] == "loud")
            .unwrap()["fingerprint"]
            .as_str()
            .unwrap()
            .to_string();
        let ack = post(
            &node,
            &admin,
            &format!("/api/v1/alerts/{loud}/ack"),
            r#"{"comment": "on it"}"#,
        );
        assert_eq!(ack.status, 200, "{}", ack.body);
        let acked_at = ack.json()["acknowledgement"]["acknowledged_at"].clone();
        // A minute more of both bursts: repeats are due for both.
        send(30, 90);
        let history = eventually(30, "repeats after the acknowledgement", || {
            let history = get(&node, &read, "/api/v1/notifications?limit=1000").json();
            let repeats = history["notifications"]
                .as_array()?
                .iter()
                .filter(|notification| notification["reason"] == "repeat")
                .count();
            (repeats >= 2).then_some(history)
        });
        for notification in history["notifications"].as_array().unwrap() {
            if notification["reason"] != "repeat" {
                continue;
            }
            let models: Vec<&str> = notification["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|alert| alert["group"]["model_id"].as_str().unwrap())
                .collect();
            assert!(models.contains(&"other"), "{notification}");
            assert!(
                !models.contains(&"loud"),
                "loud was acknowledged at {acked_at}: {notification}"
            );
        }
        let suppressed = history["suppressed"].as_array().unwrap();
        assert!(
            suppressed
                .iter()
                .any(|entry| entry["suppression"].to_string().contains("acknowledged")),
            "{history}"
        );
        node.stop();
    }

    #[test]
    fn dead_letters_are_counted_by_reason_with_samples() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node = Node::start(&data, &[]);
        let empty = get(&node, &read, "/api/v1/ingest/dead-letters");
        assert_eq!(empty.status, 200, "{}", empty.body);
        assert_eq!(empty.json()["total"], 0, "{}", empty.body);
        let mut body = events("fine", 5);
        for n in 0..3 {
            body.push_str(&format!("{{\"model_id\": broken {n}\n"));
        }
        body.push_str("[1, 2]\n");
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &body,
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.json()["rejected"], 4, "{}", answer.body);
        let all = get(&node, &read, "/api/v1/ingest/dead-letters").json();
        assert_eq!(all["total"], 4, "{all}");
        assert_eq!(all["reasons"][0]["reason"], "invalid_json", "{all}");
        assert_eq!(all["reasons"][0]["count"], 3, "{all}");
        assert_eq!(
            all["reasons"][0]["samples"].as_array().unwrap().len(),
            3,
            "{all}"
        );
        assert!(
            all["reasons"][0]["samples"][0]["raw"]
                .as_str()
                .unwrap()
                .contains("broken"),
            "{all}"
        );
        assert_eq!(all["reasons"][1]["reason"], "not_an_object", "{all}");
        let one = get(
            &node,
            &read,
            "/api/v1/ingest/dead-letters?reason=invalid_json&limit=1",
        )
        .json();
        assert_eq!(one["reasons"].as_array().unwrap().len(), 1, "{one}");
        assert_eq!(one["reasons"][0]["count"], 3, "{one}");
        assert_eq!(
            one["reasons"][0]["samples"].as_array().unwrap().len(),
            1,
            "{one}"
        );
        let injected = get(
            &node,
            &read,
            "/api/v1/ingest/dead-letters?reason=x%27%20OR%20%271%27%3D%271",
        );
        assert_eq!(injected.status, 400, "{}", injected.body);
        node.stop();
    }
}

/// Every route × every way in: no token, a bad one, an expired one, and
/// the ingest, read and admin scopes. The routes and who may call them come
/// from the server's own route table, so a new route cannot escape this.
mod auth_matrix {
    use super::*;
    use inferwatch_server::http::{route_access_table, Access};

    fn concrete(path: &str) -> String {
        path.replace("{stream}", "inference")
            .replace("{index}", "inference")
            .replace("{*rest}", "probe")
            .replace("{fingerprint}", "no-such-alert")
            .replace("{id}", "no-such-silence")
            .replace("{*path}", "app.js")
    }

    fn ask(node: &Node, method: &str, path: &str, token: Option<&str>) -> Answer {
        let mut args: Vec<String> = Vec::new();
        if method == "head" {
            args.push("-I".into());
        } else {
            args.extend(["-X".into(), method.to_uppercase()]);
        }
        if let Some(token) = token {
            args.extend(["-H".into(), format!("Authorization: Bearer {token}")]);
        }
        if method != "get" && method != "head" {
            args.extend([
                "-H".into(),
                "Content-Type: application/json".into(),
                "-d".into(),
                "{}".into(),
            ]);
        }
        args.push(node.url(&concrete(path)));
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The reason text of a refusal, whichever shape the protocol uses.
    fn reason(answer: &Answer) -> String {
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap_or_default();
        [&json["error"]["reason"], &json["error"], &json["text"]]
            .iter()
            .find_map(|value| value.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    #[test]
    fn every_route_answers_no_bad_and_expired_tokens_and_each_scope_as_its_declared_access() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = short_volume_drop(dir.path());
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let admin = token(&data, "admin", None);
        let expired = common::run(&[
            "token",
            "create",
            "--data",
            data.to_str().unwrap(),
            "--scope",
            "admin",
            "--expires",
            "30d",
        ])
        .trim()
        .to_string();
        // Move its expiry into the past, as 30 days would.
        let tokens_path = data.join("tokens.json");
        let mut tokens: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&tokens_path).unwrap()).unwrap();
        let expired_id = expired.split('_').nth(1).unwrap();
        for record in tokens["tokens"].as_array_mut().unwrap() {
            if record["id"] == expired_id {
                assert!(record["expires_at"].is_string(), "{record}");
                record["expires_at"] = "2020-01-01T00:00:00Z".into();
            }
        }
        std::fs::write(&tokens_path, tokens.to_string()).unwrap();
        let listed = common::run(&["token", "list", "--data", data.to_str().unwrap()]);
        assert!(
            listed.contains(&format!("{expired_id}\tadmin\t*")) && listed.contains("expired 2020"),
            "{listed}"
        );
        let forged = format!("iw_0000000000000000_{}", "ab".repeat(32));
        let node = Node::start(&data, &["--rules", rules.to_str().unwrap()]);
        let refused = |answer: &Answer| answer.status == 401 || answer.status == 403;
        let mut checked = 0;
        for route in route_access_table() {
            let hec = route.path.starts_with("/services/collector");
            for &(method, access) in route.methods {
                let what = format!("{} {}", method.to_uppercase(), route.path);
                let allowed = |answer: &Answer, who: &str| {
                    assert!(
                        !refused(answer)
                            && answer.status != 0
                            && answer.status < 500
                            && !(answer.status == 404 && answer.body.contains("no route")),
                        "{what} with {who}: {} {}",
                        answer.status,
                        answer.body
                    );
                };
                if access == Access::Open {
                    for (who, token) in [
                        ("no token", None),
                        ("a bad token", Some(forged.as_str())),
                        ("an expired token", Some(expired.as_str())),
                        ("read", Some(read.as_str())),
                    ] {
                        allowed(&ask(&node, method, route.path, token), who);
                    }
                    checked += 1;
                    continue;
                }
                // Refused before any scope is looked at. HEC keeps its own
                // codes: invalid (and expired) tokens are 403 code 4.
                let none = ask(&node, method, route.path, None);
                assert_eq!(none.status, 401, "{what} without a token: {}", none.body);
                let bad = ask(&node, method, route.path, Some(&forged));
                let invalid_status = if hec { 403 } else { 401 };
                assert_eq!(
                    bad.status, invalid_status,
                    "{what} with a bad token: {}",
                    bad.body
                );
                let late = ask(&node, method, route.path, Some(&expired));
                assert_eq!(late.status, invalid_status, "{what} expired: {}", late.body);
                if method != "head" {
                    assert!(
                        reason(&late).contains("expired"),
                        "{what}: the answer says the token expired: {}",
                        late.body
                    );
                    assert!(!reason(&bad).contains("expired"), "{what}: {}", bad.body);
                }
                for (scope, token) in [("ingest", &ingest), ("read", &read), ("admin", &admin)] {
                    let may = match access {
                        Access::Open | Access::AnyToken => true,
                        Access::Ingest => scope != "read",
                        Access::Read => scope != "ingest",
                        Access::Admin => scope == "admin",
                    };
                    let answer = ask(&node, method, route.path, Some(token));
                    if may {
                        allowed(&answer, scope);
                    } else {
                        assert_eq!(answer.status, 403, "{what} with {scope}: {}", answer.body);
                    }
                }
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} route methods");
        node.stop();
    }
}

/// Bad input over HTTP: each request gets a 4xx with a reason (per item
/// for `_bulk` and HEC), the node keeps answering, and the valid items of
/// a request are stored.
mod bad_input {
    use super::*;
    use std::io::Write as _;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// POSTs the file's bytes with these headers.
    fn post_file(node: &Node, token: &str, path: &str, headers: &[&str], body: &Path) -> Answer {
        let mut args = vec!["-H".to_string(), format!("Authorization: Bearer {token}")];
        for header in headers {
            args.extend(["-H".to_string(), header.to_string()]);
        }
        args.extend([
            "--data-binary".to_string(),
            format!("@{}", body.display()),
            node.url(path),
        ]);
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn count_where(node: &Node, read: &str, condition: &str) -> u64 {
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &serde_json::json!({"sql": format!("SELECT count(*) FROM inference WHERE {condition}")})
                .to_string(),
            &node.url("/api/v1/query"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.json()["rows"][0][0].as_u64().unwrap()
    }

    fn still_answers(node: &Node) {
        assert_eq!(curl(&[&node.url("/healthz")]).status, 200);
    }

    /// A 4xx whose JSON body gives a reason containing `needle`.
    fn refused_with(answer: &Answer, status: u16, needle: &str, what: &str) {
        assert_eq!(answer.status, status, "{what}: {}", answer.body);
        let body = answer.body.to_lowercase();
        assert!(
            body.contains(needle),
            "{what}: the reason should mention '{needle}': {}",
            answer.body
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&answer.body).is_ok(),
            "{what}: the reason is JSON: {}",
            answer.body
        );
    }

    #[test]
    fn every_bad_request_gets_a_4xx_with_a_reason_and_the_good_items_are_stored() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node = Node::start(
            &data,
            &[
                "--max-request-size",
                "256KB",
                "--max-decompressed-size",
                "1MB",
            ],
        );
        let file = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let ndjson = "/api/v1/ingest/inference";
        // Traffic first, so the fleet has a clock: a request of two rows on
        // a node that has none yet is held until more rows agree on it.
        let warm = file("warm.jsonl", events("warm", 30).as_bytes());
        assert_eq!(post_file(&node, &ingest, ndjson, &[], &warm).status, 200);
        assert_eq!(count_where(&node, &read, "model_id = 'warm'"), 30);

        // Truncated gzip: 400 naming the compression; nothing stored.
        let whole = gzip(events("truncated", 200).as_bytes());
        let cut = file("cut.gz", &whole[..whole.len() / 2]);
        let answer = post_file(&node, &ingest, ndjson, &["Content-Encoding: gzip"], &cut);
        refused_with(&answer, 400, "gzip", "truncated gzip");
        still_answers(&node);
        assert_eq!(count_where(&node, &read, "model_id = 'truncated'"), 0);

        // A gzip bomb: 20 MB of newlines in ~20 KB; refused at the
        // decompressed-size limit.
        let bomb = file("bomb.gz", &gzip(&vec![b'\n'; 20 << 20]));
        assert!(std::fs::metadata(&bomb).unwrap().len() < 256 << 10);
        let answer = post_file(&node, &ingest, ndjson, &["Content-Encoding: gzip"], &bomb);
        refused_with(&answer, 413, "decompressed", "gzip bomb");
        still_answers(&node);

        // An encoding the node cannot decode: 415.
        let plain = file("plain.jsonl", events("encoded", 3).as_bytes());
        let answer = post_file(&node, &ingest, ndjson, &["Content-Encoding: br"], &plain);
        refused_with(&answer, 415, "encoding", "unknown content encoding");

        // Too large as sent: 413 naming the limit.
        let large = file("large.jsonl", events("large", 5_000).as_bytes());
        assert!(std::fs::metadata(&large).unwrap().len() > 256 << 10);
        let answer = post_file(&node, &ingest, ndjson, &[], &large);
        refused_with(&answer, 413, "request", "oversized body");
        still_answers(&node);
        assert_eq!(count_where(&node, &read, "model_id = 'large'"), 0);

        // OTLP: a content type it does not speak is 415; bytes that are not
        // protobuf are 400.
        let otlp = file("otlp.bin", b"\xff\xff\xff\xff not protobuf");
        let answer = post_file(
            &node,
            &ingest,
            "/v1/logs",
            &["Content-Type: text/plain"],
            &otlp,
        );
        refused_with(&answer, 415, "content type", "OTLP text/plain");
        let answer = post_file(
            &node,
            &ingest,
            "/v1/logs",
            &["Content-Type: application/x-protobuf"],
            &otlp,
        );
        assert_eq!(answer.status, 400, "invalid protobuf: {}", answer.body);
        assert!(!answer.body.trim().is_empty(), "a reason is given");
        still_answers(&node);

        // _bulk: bad items among good ones get their own status and
        // reason; the good ones are stored.
        let stamp = now();
        let bulk = format!(
            "{{\"index\":{{}}}}\n{{\"timestamp\":\"{stamp}\",\"model_id\":\"bulk-good\",\"latency_ms\":1}}\n\
             {{\"index\":{{}}}}\n{{\"timestamp\": not json\n\
             {{\"create\":{{}}}}\n{{\"timestamp\":\"{stamp}\",\"model_id\":\"bulk-good\",\"latency_ms\":2}}\n\
             {{\"index\":{{}}}}\n{{\"timestamp\":\"yesterday-ish\",\"model_id\":\"bulk-bad\"}}\n"
        );
        let bulk_file = file("bulk.ndjson", bulk.as_bytes());
        let answer = post_file(
            &node,
            &ingest,
            "/inference/_bulk",
            &["Content-Type: application/x-ndjson"],
            &bulk_file,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json = answer.json();
        assert_eq!(json["errors"], true, "{json}");
        let items = json["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{json}");
        let statuses: Vec<u64> = items
            .iter()
            .map(|item| {
                let (_, result) = item.as_object().unwrap().iter().next().unwrap();
                result["status"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(statuses[0], 201, "{json}");
        assert_eq!(statuses[2], 201, "{json}");
        for bad in [1, 3] {
            let (_, result) = items[bad].as_object().unwrap().iter().next().unwrap();
            assert_eq!(result["status"], 400, "{json}");
            assert!(
                result["error"]["reason"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
                "item {bad} has a reason: {json}"
            );
        }
        assert_eq!(count_where(&node, &read, "model_id = 'bulk-good'"), 2);
        assert_eq!(count_where(&node, &read, "model_id = 'bulk-bad'"), 0);

        // HEC: a bad event among good ones; the good ones are stored and
        // the answer names the first bad event.
        let hec = concat!(
            r#"{"event":{"model_id":"hec-good","latency_ms":1}}"#,
            r#"{"event":{"model_id":"hec-good","latency_ms":2}}"#,
            r#"{"time":"not a time"}"#,
            r#"{"event":{"model_id":"hec-good","latency_ms":3}}"#,
        );
        let hec_file = file("hec.json", hec.as_bytes());
        let answer = post_file(&node, &ingest, "/services/collector/event", &[], &hec_file);
        assert_eq!(answer.status, 400, "{}", answer.body);
        let json = answer.json();
        assert!(
            json["code"].as_u64().is_some_and(|code| code != 0),
            "{json}"
        );
        assert!(
            json["text"].as_str().is_some_and(|t| !t.is_empty()),
            "{json}"
        );
        assert_eq!(json["invalid-event-number"], 2, "{json}");
        assert_eq!(
            count_where(&node, &read, "model_id = 'hec-good'"),
            3,
            "{json}"
        );
        still_answers(&node);
        node.stop();
    }
}

/// `serve --config FILE`: the file's settings, `INFERWATCH_*` variables
/// over them, flags over both.
mod config_file {
    use super::*;

    fn queue_capacity(node: &Node, read: &str) -> u64 {
        let health = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            &node.url("/api/v1/health"),
        ])
        .json();
        health["queue"]["capacity"].as_u64().unwrap()
    }

    #[test]
    fn the_file_sets_the_node_up_variables_override_it_and_flags_override_both() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        short_volume_drop(dir.path());
        let config = dir.path().join("serve.yaml");
        std::fs::write(
            &config,
            "data: data\nrules: rules\npg: off\nqueue: 8\nstore:\n  fsync: always\n",
        )
        .unwrap();
        // Relative paths are the file's: the data directory is next to it.
        let data = dir.path().join("data");
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let config_path = config.to_str().unwrap();
        let environment = [
            ("INFERWATCH_LISTEN", "127.0.0.1:0"),
            ("INFERWATCH_QUEUE", "16"),
        ];
        let node = Node::spawn(&["--config", config_path], &environment);
        assert_eq!(
            queue_capacity(&node, &read),
            16,
            "the variable beats the file"
        );
        let rules = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            &node.url("/api/v1/rules"),
        ])
        .json();
        assert_eq!(rules["rules"][0]["id"], "volume-drop-short", "{rules}");
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &events("configured", 30),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.json()["accepted"], 30, "{}", answer.body);
        node.stop();
        assert_eq!(counts_by_model(&data).get("configured"), Some(&30));

        let node = Node::spawn(&["--config", config_path, "--queue", "5"], &environment);
        assert_eq!(
            queue_capacity(&node, &read),
            5,
            "the flag beats the variable"
        );
        node.stop();

        // Mistakes name the file, line and column, or the variable.
        std::fs::write(
            &config,
            "data: data\nlisten: 127.0.0.1:0\nqueue: 8\nqeueu: 9\n",
        )
        .unwrap();
        let refused = Command::new(common::binary())
            .args(["serve", "--config", config_path])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(
            message.contains("serve.yaml:4:") && message.contains("qeueu"),
            "{message}"
        );
        std::fs::write(&config, "data: data\nlisten: 127.0.0.1:0\npg: off\n").unwrap();
        let refused = Command::new(common::binary())
            .args(["serve", "--config", config_path])
            .env("INFERWATCH_QUEUE", "lots")
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(message.contains("INFERWATCH_QUEUE='lots'"), "{message}");
    }
}

/// A rules directory with one short `volume-drop`: 10 s windows every 5 s,
/// so live time shows within seconds instead of minutes.
fn short_volume_drop(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("volume-drop.yaml"),
        "id: volume-drop-short\ntitle: Traffic to a model stopped (short windows)\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 5s\nallowed_lateness: 1s\ncondition: count() == 0\natlas: [AML.T0029]\n",
    )
    .unwrap();
    rules
}

/// Polls `check` every half second until it gives a value; panics after
/// `seconds` (generous: this checks that it happens, not how fast).
fn eventually<T>(seconds: u64, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

mod rest_api {
    use super::*;

    fn post_json(node: &Node, token: &str, path: &str, body: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            &node.url(path),
        ])
    }

    fn get(node: &Node, token: &str, path: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &node.url(path),
        ])
    }

    #[test]
    fn sql_series_rules_health_metrics_and_the_openapi_document_answer_real_clients() {
        if !available("curl", &["--version"])
            || !available(&python(), &["-c", "import pyarrow.ipc"])
            || !available("promtool", &["--version"])
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = short_volume_drop(dir.path());
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let admin = token(&data, "admin", None);
        let node = Node::start(&data, &["--rules", rules.to_str().unwrap()]);
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &events("api", 30),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.json()["accepted"], 30, "{}", answer.body);

        // SQL as JSON rows, with a row limit.
        let answer = post_json(
            &node,
            &read,
            "/api/v1/query",
            r#"{"sql": "SELECT model_id, count(*) AS n, min(latency_ms) AS low FROM inference GROUP BY model_id"}"#,
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json = answer.json();
        assert_eq!(json["columns"][1]["name"], "n");
        assert_eq!(json["columns"][1]["type"], "Int64");
        assert_eq!(json["rows"], serde_json::json!([["api", 30, 10.0]]));
        assert_eq!(json["truncated"], false);
        let limited = post_json(
            &node,
            &read,
            "/api/v1/query",
            r#"{"sql": "SELECT latency_ms FROM inference", "limit": 7}"#,
        )
        .json();
        assert_eq!(limited["rows"].as_array().unwrap().len(), 7);
        assert_eq!(limited["truncated"], true);
        // SQL errors are 400 with DataFusion's message; writing is refused.
        let wrong = post_json(
            &node,
            &read,
            "/api/v1/query",
            r#"{"sql": "SELECT nope FROM inference"}"#,
        );
        assert_eq!(wrong.status, 400);
        assert!(
            wrong.json()["error"].as_str().unwrap().contains("nope"),
            "{}",
            wrong.body
        );
        let write = post_json(
            &node,
            &read,
            "/api/v1/query",
            r#"{"sql": "COPY (SELECT 1) TO '/tmp/x.csv'"}"#,
        );
        assert_eq!(write.status, 400, "{}", write.body);

        // The same rows as an Arrow IPC stream, read by pyarrow.
        let script = r#"
import sys, json, urllib.request
import pyarrow.ipc as ipc
url, token = sys.argv[1], sys.argv[2]
body = json.dumps({"sql": "SELECT model_id, latency_ms FROM inference ORDER BY latency_ms", "limit": 25}).encode()
request = urllib.request.Request(url, data=body, headers={"Authorization": "Bearer " + token, "Accept": "application/vnd.apache.arrow.stream", "Content-Type": "application/json"})
with urllib.request.urlopen(request) as response:
    assert response.headers["Content-Type"] == "application/vnd.apache.arrow.stream", response.headers
    truncated = response.headers["X-Inferwatch-Truncated"]
    table = ipc.open_stream(response.read()).read_all()
print(table.num_rows, ",".join(table.column_names), table.column("latency_ms").to_pylist()[0], table.column("model_id").to_pylist()[0], truncated)
"#;
        let output = Command::new(python())
            .args(["-c", script, &node.url("/api/v1/query"), &read])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pyarrow: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "25 model_id,latency_ms 10.0 api true"
        );

        // Series from the rollups: every event counted once, p99 present.
        let series = get(
            &node,
            &read,
            "/api/v1/series?metric=count&model_id=api&points=50",
        )
        .json();
        assert_eq!(series["source"], "rollups");
        let total: f64 = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert_eq!(total, 30.0, "{series}");
        let p99 = get(&node, &read, "/api/v1/series?metric=p99").json();
        assert!(p99["values"][0].as_f64().unwrap() > 30.0, "{p99}");
        assert_eq!(get(&node, &read, "/api/v1/series?metric=p42").status, 400);

        // Rules with their live state, and health.
        let rules = get(&node, &read, "/api/v1/rules").json();
        assert_eq!(rules["rules"][0]["id"], "volume-drop-short");
        assert_eq!(rules["rules"][0]["atlas"], serde_json::json!(["AML.T0029"]));
        assert_eq!(rules["rules"][0]["severity"], "high");
        let health = eventually(30, "the health rates to see the events", || {
            let health = get(&node, &read, "/api/v1/health").json();
            (health["ingest"]["ndjson"]["events"] == 30).then_some(health)
        });
        assert_eq!(health["status"], "ok");
        assert!(health["wal"]["unsynced_records"].is_u64(), "{health}");

        // /metrics: the counters, valid for promtool.
        let metrics = get(&node, &read, "/metrics");
        assert_eq!(metrics.status, 200);
        assert!(metrics.body.contains(
            r#"inferwatch_ingest_events_total{protocol="ndjson",stream="inference"} 30"#
        ));
        assert!(metrics
            .body
            .contains(r#"route="/api/v1/ingest/{stream}",method="POST",status="200""#));
        let mut promtool = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), metrics.body.as_bytes())
            .unwrap();
        let checked = promtool.wait_with_output().unwrap();
        assert!(
            checked.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );

        // Every path and method the OpenAPI document names answers (with
        // its own status, never the router's 404 for an unknown route).
        let document = get(&node, &read, "/api/v1/openapi.json").json();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().unwrap();
        assert!(paths.len() >= 25, "{} paths", paths.len());
        for (path, methods) in paths {
            let concrete = path
                .replace("{stream}", "gateway")
                .replace("{index}", "gateway")
                .replace("{rest}", "probe")
                .replace("{fingerprint}", "no-such-alert")
                .replace("{id}", "no-such-silence")
                .replace("{path}", "app.js");
            for method in methods.as_object().unwrap().keys() {
                let method = method.to_uppercase();
                let url = node.url(&concrete);
                let answer = if method == "HEAD" {
                    curl(&["-I", "-H", &format!("Authorization: Bearer {admin}"), &url])
                } else {
                    curl(&[
                        "-X",
                        &method,
                        "-H",
                        &format!("Authorization: Bearer {admin}"),
                        "-H",
                        "Content-Type: application/json",
                        "-d",
                        "{}",
                        &url,
                    ])
                };
                assert!(
                    answer.status != 0
                        && !(answer.status == 404 && answer.body.contains("no route")),
                    "{method} {concrete}: {} {}",
                    answer.status,
                    answer.body
                );
            }
        }
        node.stop();
    }

    #[test]
    fn every_api_route_refuses_no_token_with_401_and_a_narrower_scope_with_403() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = short_volume_drop(dir.path());
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node = Node::start(&data, &["--rules", rules.to_str().unwrap()]);
        let read_routes = [
            ("POST", "/api/v1/query"),
            ("GET", "/api/v1/series?metric=count"),
            ("GET", "/api/v1/series/overview"),
            ("GET", "/api/v1/alerts"),
            ("GET", "/api/v1/silences"),
            ("GET", "/api/v1/rules"),
            ("GET", "/api/v1/health"),
            ("GET", "/api/v1/openapi.json"),
            ("GET", "/metrics"),
        ];
        let admin_routes = [
            ("POST", "/api/v1/alerts/abc/ack"),
            ("POST", "/api/v1/silences"),
            ("DELETE", "/api/v1/silences/abc"),
        ];
        let ask = |method: &str, path: &str, token: Option<&str>| -> Answer {
            let mut args = vec!["-X".to_string(), method.to_string()];
            if let Some(token) = token {
                args.extend(["-H".to_string(), format!("Authorization: Bearer {token}")]);
            }
            args.extend([
                "-d".to_string(),
                r#"{"sql":"SELECT 1"}"#.to_string(),
                node.url(path),
            ]);
            curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        };
        for (method, path) in read_routes.iter().chain(&admin_routes) {
            let none = ask(method, path, None);
            assert_eq!(
                none.status, 401,
                "{method} {path} without a token: {}",
                none.body
            );
            assert!(none.header("www-authenticate").is_some());
            let forged = format!("iw_0000000000000000_{}", "ab".repeat(32));
            assert_eq!(
                ask(method, path, Some(&forged)).status,
                401,
                "{method} {path} forged"
            );
            assert_eq!(
                ask(method, path, Some(&ingest)).status,
                403,
                "{method} {path} with ingest"
            );
        }
        for (method, path) in &read_routes {
            let answer = ask(method, path, Some(&read));
            assert_eq!(
                answer.status, 200,
                "{method} {path} with read: {}",
                answer.body
            );
        }
        for (method, path) in &admin_routes {
            assert_eq!(
                ask(method, path, Some(&read)).status,
                403,
                "{method} {path} with read"
            );
        }
        node.stop();
    }
}

/// `serve --actions`: the notification pipeline and the dispatcher run in
/// the node, and share their silences with the REST API.
mod actions {
    use super::*;
    /// Events of `model` at `at` (RFC 3339).
    fn burst(model: &str, at: &str, count: usize) -> String {
        (0..count)
            .map(|i| {
                format!("{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"latency_ms\":{i}}}\n")
            })
            .collect()
    }

    #[test]
    fn a_firing_alert_reaches_the_webhook_and_a_silence_made_over_the_api_holds_another_back() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(
            rules.join("burst.yaml"),
            "id: burst\ntitle: A burst of requests\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 10s\nallowed_lateness: 1s\ncondition: count() >= 20\n",
        )
        .unwrap();
        let (hook, received) = common::webhook_receiver();
        let actions = dir.path().join("actions.yaml");
        std::fs::write(
            &actions,
            format!("actions:\n  - name: hook\n    kind: webhook\n    url: {hook}\n"),
        )
        .unwrap();
        // No grouping delay: each change is notified as soon as it happens.
        let notify = dir.path().join("notify.yaml");
        std::fs::write(&notify, "route:\n  group_wait: 0s\n  group_interval: 1s\n").unwrap();
        let ingest = token(&data, "ingest", None);
        let admin = token(&data, "admin", None);
        let node = Node::start(
            &data,
            &[
                "--rules",
                rules.to_str().unwrap(),
                "--actions",
                actions.to_str().unwrap(),
                "--notify",
                notify.to_str().unwrap(),
            ],
        );
        // Event time two minutes ago, on a window boundary.
        let at = event_clock(120);
        let silence = curl(&[
            "-H",
            &format!("Authorization: Bearer {admin}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(
                r#"{{"matchers": ["model_id=quiet"], "starts_at": "{}", "duration": "1h", "comment": "maintenance"}}"#,
                at(-600)
            ),
            &node.url("/api/v1/silences"),
        ]);
        assert_eq!(silence.status, 201, "{}", silence.body);
        // Two incidents in one window, then steady traffic for 50 s, which
        // moves event time past the window's end (one outlier would not:
        // the clock is the time the events agree on).
        let mut body = format!(
            "{}{}",
            burst("loud", &at(2), 25),
            burst("quiet", &at(3), 25)
        );
        for second in (10..60).step_by(2) {
            body.push_str(&burst("tick", &at(second), 1));
        }
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &body,
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
        let firing = received
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the webhook receives the firing alert");
        assert_eq!(firing["rule_id"], "burst", "{firing}");
        assert_eq!(firing["state"], "firing", "{firing}");
        assert_eq!(firing["group"]["model_id"], "loud", "{firing}");
        assert!(firing["value"].as_f64().unwrap() >= 25.0, "{firing}");
        // Both alerts fired; the REST API shows which one the silence holds.
        // SIGTERM waits for deliveries in flight, so everything sent is in.
        node.stop();
        let later: Vec<serde_json::Value> = received.try_iter().collect();
        assert!(
            later
                .iter()
                .all(|alert| alert["group"]["model_id"] != "quiet"),
            "the silenced model was notified: {later:?}"
        );
        let alerts = common::run(&[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT model_id FROM alerts WHERE state = 'firing' ORDER BY 1",
        ]);
        assert!(
            alerts.contains("quiet") && alerts.contains("loud"),
            "{alerts}"
        );
    }
}

mod live_time {
    use super::*;

    fn firing_and_resolved(node: &Node, read: &str) -> (usize, usize) {
        let alerts = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            &node.url("/api/v1/alerts?rule_id=volume-drop-short"),
        ])
        .json();
        let states: Vec<String> = alerts["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["state"].as_str().unwrap().to_string())
            .collect();
        (
            states.iter().filter(|s| *s == "firing").count(),
            states.iter().filter(|s| *s == "resolved").count(),
        )
    }

    fn post_events(node: &Node, ingest: &str) {
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &events("live", 5),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body);
    }

    #[test]
    fn volume_drop_fires_while_every_input_is_silent_resolves_when_traffic_returns_and_replays_the_same(
    ) {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = short_volume_drop(dir.path());
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node_args = ["--rules", rules.to_str().unwrap(), "--idle-after", "1s"];
        let node = Node::start(&data, &node_args);
        for _ in 0..4 {
            post_events(&node, &ingest);
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        // No event arrives from here on: only the heartbeats move time.
        eventually(90, "volume-drop to fire without events", || {
            (firing_and_resolved(&node, &read).0 == 1).then_some(())
        });
        let health = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            &node.url("/api/v1/health"),
        ])
        .json();
        assert!(
            health["detection"]["heartbeats"].as_u64().unwrap() > 0,
            "{health}"
        );
        // Traffic returns: the alert resolves.
        eventually(90, "volume-drop to resolve once traffic returns", || {
            post_events(&node, &ingest);
            (firing_and_resolved(&node, &read).1 == 1).then_some(())
        });
        node.stop();
        let ledger = data.join("alerts.jsonl");
        let written = std::fs::read_to_string(&ledger).unwrap();
        let transitions = common::parse_lines(&written);
        assert!(transitions.len() >= 2, "{written}");
        // A restart replays the store, heartbeats included: the same
        // transitions come out, so the ledger gains none and the board
        // shows the resolved alert again.
        let node = Node::start(&data, &node_args);
        eventually(60, "the replayed alert on the board", || {
            (firing_and_resolved(&node, &read).1 == 1).then_some(())
        });
        node.stop();
        assert_eq!(std::fs::read_to_string(&ledger).unwrap(), written);
        let heartbeats = common::run(&[
            "query",
            "--data",
            data.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT count(*) FROM inferwatch_heartbeats",
        ]);
        let count: u64 = heartbeats.lines().nth(1).unwrap().trim().parse().unwrap();
        assert!(count > 0, "{heartbeats}");
    }
}

/// The dashboard (issue 19): its assets served from the binary without a
/// token, and the overview page driven in headless Chromium by Playwright
/// for Python (`dashboard.py` beside this file; Debian's `chromium`, no
/// browser download; `scripts/test-deps` installs both).
mod dashboard {
    use super::*;

    /// A rules directory with one rule that the posted slow requests fire.
    fn slow_p99(dir: &Path) -> std::path::PathBuf {
        let rules = dir.join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(
            rules.join("slow.yaml"),
            "id: dashboard-slow-p99\ntitle: p99 latency above 100 ms\nseverity: high\ngroup_by: [model_id, model_version]\nwindow: 1m\nevery: 30s\ncondition: p99(latency_ms) > 100 and count() >= 20\n",
        )
        .unwrap();
        rules
    }

    /// `count` events over the five minutes before now, alternating two
    /// model versions; every 17th is slow (300-900 ms), every 50th an error.
    fn five_minutes_of_events(count: usize) -> String {
        let now = chrono::Utc::now();
        (0..count)
            .map(|i| {
                let back = chrono::Duration::milliseconds((300_000 * (count - i) / count) as i64);
                let at = (now - back).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let (model, version) = if i % 2 == 0 {
                    ("fraud", "1.0")
                } else {
                    ("recsys", "2.1")
                };
                let latency = if i % 17 == 0 {
                    300 + (i * 37) % 600
                } else {
                    10 + (i * 13) % 50
                };
                let status = if i % 50 == 1 { "error" } else { "ok" };
                format!(
                    "{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"model_version\":\"{version}\",\"latency_ms\":{latency},\"status\":\"{status}\",\"client_id\":\"c{}\"}}\n",
                    i % 40
                )
            })
            .collect()
    }

    #[test]
    fn assets_are_served_without_a_token_with_etags_gzip_and_304_and_a_browser_is_sent_to_them() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let read = token(&data, "read", None);
        let node = Node::start(&data, &[]);
        // A browser's GET / goes to the dashboard; a shipper's probe does not.
        let browser = curl(&["-H", "Accept: text/html,*/*;q=0.8", &node.url("/")]);
        assert_eq!(browser.status, 303);
        assert_eq!(browser.header("location").as_deref(), Some("/ui/"));
        let probe = curl(&[
            "-H",
            &format!("Authorization: Bearer {read}"),
            &node.url("/"),
        ]);
        assert_eq!(probe.json()["tagline"], "You Know, for Search");

        let page = curl(&[&node.url("/ui/")]);
        assert_eq!(page.status, 200);
        assert!(page
            .header("content-type")
            .unwrap()
            .starts_with("text/html"));
        assert!(page.body.contains("/ui/app.js"), "{}", page.body);
        for path in [
            "/ui/app.js",
            "/ui/style.css",
            "/ui/vendor/uPlot.esm.js",
            "/ui/vendor/uPlot.min.css",
            "/ui/vendor/htm-preact-standalone.mjs",
            "/ui/vendor/LICENSE.uPlot",
        ] {
            let plain = curl(&[&node.url(path)]);
            assert_eq!(plain.status, 200, "{path}");
            let etag = plain.header("etag").expect("an ETag");
            let again = curl(&["-H", &format!("If-None-Match: {etag}"), &node.url(path)]);
            assert_eq!(again.status, 304, "{path}");
            assert!(again.body.is_empty());
            // --compressed asks for gzip and unpacks it: the same bytes.
            let zipped = curl(&["--compressed", &node.url(path)]);
            assert_eq!(zipped.status, 200, "{path}");
            if plain.body.len() > 1_000 {
                assert_eq!(zipped.header("content-encoding").as_deref(), Some("gzip"));
            }
            assert_eq!(zipped.body, plain.body, "{path}");
        }
        assert_eq!(curl(&[&node.url("/ui/nope.js")]).status, 404);
        node.stop();
    }

    #[test]
    fn the_overview_draws_every_chart_and_lists_the_alert_with_its_summary_in_chromium() {
        if !available("curl", &["--version"])
            || !available(&python(), &["-c", "import playwright.sync_api"])
            || !available("/usr/bin/chromium", &["--version"])
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = slow_p99(dir.path());
        let ingest = token(&data, "ingest", None);
        let read = token(&data, "read", None);
        let node = Node::start(&data, &["--rules", rules.to_str().unwrap()]);
        let events = dir.path().join("events.ndjson");
        std::fs::write(&events, five_minutes_of_events(3_000)).unwrap();
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {ingest}"),
            "--data-binary",
            &format!("@{}", events.display()),
            &node.url("/api/v1/ingest/inference"),
        ]);
        assert_eq!(answer.json()["accepted"], 3_000, "{}", answer.body);
        // The alert the page must show, as the API gives it.
        let summary = eventually(60, "the slow-p99 alert", || {
            let alerts = curl(&[
                "-H",
                &format!("Authorization: Bearer {read}"),
                &node.url("/api/v1/alerts?state=firing"),
            ])
            .json();
            alerts["alerts"]
                .as_array()?
                .iter()
                .find(|alert| alert["group"]["model_id"] == "fraud")?["summary"]
                .as_str()
                .map(str::to_string)
        });
        assert!(summary.contains("p99 latency"), "{summary}");

        let screenshot = std::env::var("INFERWATCH_SCREENSHOTS").map_or_else(
            |_| dir.path().join("overview.png"),
            |folder| Path::new(&folder).join("dashboard-overview.png"),
        );
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard.py");
        let output = Command::new(python())
            .arg(&script)
            .args([&node.url(""), &read, &summary])
            .arg(&screenshot)
            .output()
            .expect("running dashboard.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "dashboard.py failed: {}\n{stdout}\n{stderr}",
            output.status
        );
        let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let charts = seen["charts"].as_array().unwrap();
        // Two model versions, three charts each, all with data, ink and
        // the alert's marker.
        assert_eq!(charts.len(), 6, "{seen}");
        for chart in charts {
            assert!(chart["points"].as_u64().unwrap() > 0, "{chart}");
            assert!(chart["inked_pixels"].as_u64().unwrap() > 0, "{chart}");
            // Both model versions have a firing alert: its start is marked.
            assert!(chart["alert_markers"].as_u64().unwrap() >= 1, "{chart}");
        }
        assert!(
            seen["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|shown| shown == &serde_json::Value::from(summary.clone())),
            "{seen}"
        );
        assert!(screenshot.exists());
        node.stop();
    }
}

mod demo {
    use super::*;

    /// A free loopback port (bound, then released).
    pub(super) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn get(base: &str, token: &str, path: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{base}{path}"),
        ])
    }

    #[test]
    fn the_demo_prints_a_url_and_a_token_and_its_charts_fill_and_an_alert_fires() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("demo");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(common::binary())
            .args(["demo", "--listen", &listen, "--history", "30m", "--data"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting inferwatch demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let child = Node {
            child,
            address: listen.clone(),
        };
        let (mut url, mut read) = (None, None);
        while url.is_none() || read.is_none() {
            let line = lines
                .next()
                .expect("demo printed its URL and token")
                .expect("stdout is text");
            if let Some(rest) = line.trim().strip_prefix("Dashboard:") {
                url = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("Read token:") {
                read = Some(rest.trim().to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (url, read) = (url.unwrap(), read.unwrap());
        assert_eq!(url, format!("http://{listen}/ui/"));
        let base = url.trim_end_matches("/ui/").to_string();
        assert_eq!(curl(&[&url]).status, 200, "the dashboard is served");

        eventually(180, "the series to have points", || {
            let series = get(&base, &read, "/api/v1/series?metric=count&points=50");
            (series.status == 200 && !series.json()["values"].as_array()?.is_empty()).then_some(())
        });
        let firing = eventually(180, "an alert to fire", || {
            let alerts = get(&base, &read, "/api/v1/alerts").json();
            alerts["alerts"]
                .as_array()?
                .iter()
                .find(|alert| alert["state"] == "firing")
                .cloned()
        });
        assert!(firing["rule_id"].is_string(), "{firing}");
        // Live traffic is stamped with the current time: the newest event
        // catches up with the wall clock.
        eventually(180, "live traffic stamped with the current time", || {
            let answer = curl(&[
                "-H",
                &format!("Authorization: Bearer {read}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                r#"{"sql": "SELECT CAST(to_unixtime(max(timestamp)) AS BIGINT) FROM inference"}"#,
                &format!("{base}/api/v1/query"),
            ]);
            let newest = answer.json()["rows"][0][0].as_i64()?;
            let now = chrono::Utc::now().timestamp();
            ((now - newest).abs() < 120).then_some(())
        });
        child.stop();
        assert!(data.join("INFERWATCH-DEMO").is_file());
    }

    fn sql(base: &str, token: &str, query: &str) -> serde_json::Value {
        let answer = curl(&[
            "-H",
            &format!("Authorization: Bearer {token}"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &serde_json::json!({ "sql": query }).to_string(),
            &format!("{base}/api/v1/query"),
        ]);
        assert_eq!(answer.status, 200, "{query}: {}", answer.body);
        answer.json()["rows"][0].clone()
    }

    fn seconds(rfc3339: &serde_json::Value) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
            .unwrap()
            .timestamp()
    }

    /// The alert transitions the demo's node appended to its alerts file.
    fn transitions(data: &Path, rule_id: &str, state: &str) -> Vec<serde_json::Value> {
        std::fs::read_to_string(data.join("alerts.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|alert| {
                alert["rule_id"] == rule_id
                    && alert["state"] == state
                    && alert["group"]["model_id"] == "recsys"
            })
            .collect()
    }

    /// The issue-19 story, live: the recsys canary regresses, the canary
    /// rule fires, its rollback action calls the demo's traffic router, the
    /// canary's traffic stops and the alert resolves while the injected
    /// regression is still scheduled to run. Ten simulated seconds per wall
    /// second, so the minutes of event time pass in well under the deadlines.
    #[test]
    fn the_demo_rolls_the_regressed_recsys_canary_back_and_its_alert_resolves() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("demo");
        let listen = format!("127.0.0.1:{}", free_port());
        let mut child = Command::new(common::binary())
            .args(["demo", "--listen", &listen, "--history", "30m"])
            .args(["--speed", "10", "--data"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting inferwatch demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let progress = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for line in stderr.map_while(Result::ok) {
                    progress.lock().unwrap().push(line);
                }
            });
        }
        let node = Node {
            child,
            address: listen.clone(),
        };
        let (mut read, mut router) = (None, None);
        while read.is_none() || router.is_none() {
            let line = lines
                .next()
                .expect("demo printed its token and router")
                .expect("stdout is text");
            if let Some(rest) = line.trim().strip_prefix("Read token:") {
                read = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.trim().strip_prefix("Fleet router:") {
                router = rest.split_whitespace().next().map(str::to_string);
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let (read, routes_url) = (read.unwrap(), router.unwrap());
        assert!(routes_url.ends_with("/routes"), "{routes_url}");
        let base = format!("http://{listen}");
        let actions = std::fs::read_to_string(data.join("actions.yaml")).unwrap();
        assert!(actions.contains("kind: rollback"), "{actions}");

        // The canary rule fires on recsys.
        let firing = eventually(420, "canary-vs-baseline to fire", || {
            transitions(&data, "canary-vs-baseline", "firing")
                .into_iter()
                .next()
        });
        // Its notification went to the actions, and the rollback reached
        // the router, which answered 200.
        eventually(300, "the canary notification to be sent", || {
            let history = get(
                &base,
                &read,
                "/api/v1/notifications?rule_id=canary-vs-baseline",
            )
            .json();
            history["notifications"]
                .as_array()?
                .iter()
                .find(|notification| {
                    notification["sent"] == true
                        && notification["alerts"].as_array().is_some_and(|alerts| {
                            alerts.iter().any(|alert| {
                                alert["state"] == "firing"
                                    && alert["fingerprint"] == firing["fingerprint"]
                            })
                        })
                })
                .cloned()
        });
        let remediations = data.join("notify/deliveries/remediations.jsonl");
        let rollback = eventually(300, "the rollback to be delivered", || {
            std::fs::read_to_string(&remediations)
                .ok()?
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .find(|record| {
                    record["action"] == "canary-rollback" && record["response_status"] == 200
                })
        });
        let url = rollback["request"]["url"].as_str().unwrap();
        assert_eq!(
            url,
            routes_url.replace("/routes", "/models/recsys/rollback"),
            "{rollback}"
        );
        // The router took the canary, and only the canary, out of the traffic.
        let routes = curl(&[&routes_url]).json();
        let live = |model: &str, version: &str| {
            routes["routes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|route| route["model_id"] == model && route["model_version"] == version)
                .unwrap_or_else(|| panic!("no {model} {version}: {routes}"))["live"]
                .clone()
        };
        assert_eq!(live("recsys", "2.1"), false, "{routes}");
        assert_eq!(live("recsys", "2.0"), true, "{routes}");
        assert_eq!(live("fraud", "1.3"), true, "{routes}");

        // The alert resolves.
        let resolved = eventually(420, "canary-vs-baseline to resolve", || {
            transitions(&data, "canary-vs-baseline", "resolved")
                .into_iter()
                .next()
        });
        assert_eq!(resolved["fingerprint"], firing["fingerprint"]);
        // While the injected regression was still scheduled to run: it
        // ends 40 minutes after the history (30 minutes from the first
        // event), so the rollback, not its end, resolved the alert.
        let first_event = sql(
            &base,
            &read,
            "SELECT CAST(to_unixtime(min(timestamp)) AS BIGINT) FROM inference",
        )[0]
        .as_i64()
        .unwrap();
        let regression_end = first_event + 70 * 60;
        assert!(
            seconds(&resolved["ends_at"]) < regression_end - 10 * 60,
            "resolved at {}, the regression ran to {regression_end}",
            resolved["ends_at"]
        );

        // No canary traffic since the rollback: the canary's newest event is
        // older than the resolution, and while two more simulated minutes of
        // traffic arrive, its count does not grow.
        let canary = "SELECT count(*) AS n, CAST(to_unixtime(max(timestamp)) AS BIGINT) AS last_canary, \
                      (SELECT CAST(to_unixtime(max(timestamp)) AS BIGINT) FROM inference) AS newest \
                      FROM inference WHERE model_id = 'recsys' AND ab_group = 'canary'";
        let before = sql(&base, &read, canary);
        let (count, last_canary, newest) = (
            before[0].as_i64().unwrap(),
            before[1].as_i64().unwrap(),
            before[2].as_i64().unwrap(),
        );
        assert!(count > 1_000, "{before}");
        assert!(last_canary < seconds(&resolved["ends_at"]), "{before}");
        let after = eventually(300, "two more simulated minutes of traffic", || {
            let after = sql(&base, &read, canary);
            (after[2].as_i64()? >= newest + 120).then_some(after)
        });
        assert_eq!(after[0].as_i64(), Some(count), "{before} then {after}");
        assert_eq!(
            after[1].as_i64(),
            Some(last_canary),
            "{before} then {after}"
        );

        // The demo said so on its output, as did the router.
        let said = progress.lock().unwrap().join("\n");
        assert!(
            said.contains("inferwatch demo: rollback: the router took recsys 2.1 (canary)"),
            "{said}"
        );
        assert!(
            said.contains("router: rolled back recsys [\"2.1\"]"),
            "{said}"
        );

        // The rolled-back version went quiet on purpose: the demo silenced
        // volume-drop for it (and only for it), so when that rule fires on
        // recsys 2.1 the alert shows silenced and notifies nobody.
        let silences = get(&base, &read, "/api/v1/silences").json();
        let silence = silences["silences"]
            .as_array()
            .unwrap()
            .iter()
            .find(|silence| {
                silence["comment"]
                    .as_str()
                    .unwrap_or("")
                    .contains("rolled back")
            })
            .unwrap_or_else(|| panic!("no rollback silence: {silences}"))
            .to_string();
        for wanted in ["volume-drop", "recsys", "2.1"] {
            assert!(silence.contains(wanted), "{wanted}: {silence}");
        }
        let drop = eventually(300, "volume-drop on the rolled-back version", || {
            get(
                &base,
                &read,
                "/api/v1/alerts?state=firing&rule_id=volume-drop",
            )
            .json()["alerts"]
                .as_array()?
                .iter()
                .find(|alert| {
                    alert["group"]["model_id"] == "recsys"
                        && alert["group"]["model_version"] == "2.1"
                })
                .cloned()
        });
        assert_eq!(drop["silenced"], true, "{drop}");
        let said = progress.lock().unwrap().join("\n");
        assert!(
            said.contains("silenced volume-drop for recsys 2.1"),
            "{said}"
        );
        node.stop();
    }
}

/// The dashboard's alerts, model and SQL views, and the segment comparison
/// behind the model page, against `inferwatch demo`: its simulator runs a
/// poisoned data source (src-07) from five minutes before the live traffic.
mod dashboard_views {
    use super::*;

    /// A running demo: the node, its base URL and its read and admin tokens.
    struct Demo {
        node: Node,
        base: String,
        read: String,
        admin: String,
    }

    fn start_demo(data: &Path) -> Demo {
        let listen = format!("127.0.0.1:{}", demo::free_port());
        let mut child = Command::new(common::binary())
            .args(["demo", "--listen", &listen, "--history", "30m", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting inferwatch demo");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let node = Node {
            child,
            address: listen.clone(),
        };
        let (mut read, mut admin) = (None, None);
        while read.is_none() || admin.is_none() {
            let line = lines
                .next()
                .expect("demo printed its tokens")
                .expect("stdout is text");
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Read", "token:", token, ..] => read = Some(token.to_string()),
                ["Admin", "token:", token, ..] => admin = Some(token.to_string()),
                _ => {}
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Demo {
            node,
            base: format!("http://{listen}"),
            read: read.unwrap(),
            admin: admin.unwrap(),
        }
    }

    fn get(demo: &Demo, path: &str) -> Answer {
        curl(&[
            "-H",
            &format!("Authorization: Bearer {}", demo.read),
            &format!("{}{path}", demo.base),
        ])
    }

    /// The firing source-confidence-drift alert of fraud's poisoned source.
    fn poisoned_source_alert(demo: &Demo) -> serde_json::Value {
        eventually(180, "the poisoned source's alert", || {
            get(
                demo,
                "/api/v1/alerts?state=firing&rule_id=source-confidence-drift",
            )
            .json()["alerts"]
                .as_array()?
                .iter()
                .find(|alert| alert["group"]["model_id"] == "fraud")
                .cloned()
        })
    }

    fn ks_of(demo: &Demo, source: &str, from: &str) -> f64 {
        let answer = get(
            demo,
            &format!(
                "/api/v1/compare?column=confidence&model=fraud&segment=source_id={source}&against=rest&from={from}"
            ),
        );
        assert_eq!(answer.status, 200, "{}", answer.body);
        let comparison = answer.json();
        assert!(
            comparison["segment"]["count"].as_u64().unwrap() >= 200,
            "{comparison}"
        );
        comparison["statistics"]["ks"]["statistic"]
            .as_f64()
            .unwrap_or_else(|| panic!("no KS: {comparison}"))
    }

    #[test]
    fn compare_sets_the_poisoned_source_apart_from_the_others_and_refuses_bad_requests() {
        if !available("curl", &["--version"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let demo = start_demo(&dir.path().join("demo"));
        let alert = poisoned_source_alert(&demo);
        let source = alert["group"]["source_id"].as_str().unwrap().to_string();
        // From one rule window (5m) before the alert started: what it judged.
        let started = chrono::DateTime::parse_from_rfc3339(alert["starts_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc);
        let from = (started - chrono::Duration::minutes(5))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        // The drift rule's own gate is D >= 0.2; a healthy source is far below.
        let poisoned = ks_of(&demo, &source, &from);
        assert!(poisoned >= 0.2, "{source}: D = {poisoned}");
        // At 200+ values a side a healthy source's D is about 0.05 (0.15 has
        // p < 1e-4); the poisoned one is at least twice as far out.
        for healthy in ["src-01", "src-12"] {
            let d = ks_of(&demo, healthy, &from);
            assert!(
                d < 0.15 && d < poisoned / 2.0,
                "{healthy}: D = {d}, {source}: {poisoned}"
            );
        }
        for (query, why) in [
            (
                "column=confidence%3B%20DROP&model=fraud",
                "not a column name",
            ),
            ("column=confidence&against=rest", "needs a segment"),
            ("column=confidence&against=shift:0s", "positive duration"),
            ("model=fraud", "column is required"),
        ] {
            let answer = get(&demo, &format!("/api/v1/compare?{query}"));
            assert_eq!(answer.status, 400, "{query}: {}", answer.body);
            assert!(answer.body.contains(why), "{query}: {}", answer.body);
        }
        demo.node.stop();
    }

    #[test]
    fn alerts_model_and_sql_views_acknowledge_silence_compare_and_chart_in_chromium() {
        if !available("curl", &["--version"])
            || !available(&python(), &["-c", "import playwright.sync_api"])
            || !available("/usr/bin/chromium", &["--version"])
        {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let demo = start_demo(&dir.path().join("demo"));
        let alert = poisoned_source_alert(&demo);
        let summary = alert["summary"].as_str().unwrap().to_string();
        let shots = std::env::var("INFERWATCH_SCREENSHOTS")
            .map_or_else(|_| dir.path().to_path_buf(), std::path::PathBuf::from);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard_views.py");
        let output = Command::new(python())
            .arg(&script)
            .args([
                &demo.base,
                &demo.read,
                &demo.admin,
                "source-confidence-drift",
                &summary,
            ])
            .arg(&shots)
            .output()
            .expect("running dashboard_views.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "dashboard_views.py failed: {}\n{stdout}\n{stderr}",
            output.status
        );
        let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(seen["alert_summary"], summary.as_str(), "{seen}");
        assert_eq!(seen["alert_has_impact"], true, "{seen}");
        assert_eq!(seen["alert_has_evidence"], true, "{seen}");
        assert!(seen["notifications_shown"].as_u64().unwrap() >= 1, "{seen}");
        // Acknowledged and silenced through the page, as the API tells.
        assert_eq!(seen["acknowledged_via_rest"], true, "{seen}");
        assert_eq!(seen["silenced_via_rest"], true, "{seen}");
        let matchers = seen["silence_via_rest"]["matchers"].to_string();
        assert!(
            matchers.contains("alertname=\\\"source-confidence-drift\\\""),
            "{matchers}"
        );
        assert_eq!(seen["unsilenced_via_rest"], true, "{seen}");
        let acknowledged = get(&demo, "/api/v1/alerts").json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|listed| {
                listed["fingerprint"] == alert["fingerprint"] && listed["acknowledged"] == true
            });
        assert!(acknowledged, "the acknowledgement is kept");
        // The alert's link opens its model at its time on its source,
        // which stands apart; another source does not.
        let route = seen["model_route"].as_str().unwrap();
        assert!(route.starts_with("/model/fraud?"), "{route}");
        assert!(route.contains("segment=source_id=src-07"), "{route}");
        assert_eq!(seen["poisoned_verdict"], "true", "{seen}");
        assert!(seen["poisoned_ks"].as_f64().unwrap() >= 0.2, "{seen}");
        assert_eq!(seen["other_verdict"], "false", "{seen}");
        assert!(seen["other_ks"].as_f64().unwrap() < 0.15, "{seen}");
        // Comparing every source with the rest puts the poisoned one first,
        // the only one apart.
        let scan = seen["scan"].as_array().unwrap();
        assert!(scan.len() >= 10, "{seen}");
        assert_eq!(scan[0]["source"], "src-07", "{seen}");
        let apart: Vec<&serde_json::Value> =
            scan.iter().filter(|row| row["apart"] == true).collect();
        assert_eq!(apart.len(), 1, "{seen}");
        // The SQL console charted its result and the URL carries the query.
        assert!(seen["sql_points"].as_u64().unwrap() >= 2, "{seen}");
        assert_eq!(seen["sql_url_shares_query"], true, "{seen}");
        assert_eq!(seen["sql_large_points"], 100_000, "{seen}");
        for (chart, inked) in seen["charts_inked"].as_object().unwrap() {
            assert!(inked.as_u64().unwrap() > 0, "{chart} drew nothing");
        }
        // Dragging over a chart made the range absolute.
        let zoomed = seen["zoomed_route"].as_str().unwrap();
        assert!(
            zoomed.contains("from=") && zoomed.contains("to="),
            "{zoomed}"
        );
        for name in [
            "dashboard-alerts.png",
            "dashboard-model.png",
            "dashboard-sql.png",
        ] {
            assert!(shots.join(name).exists(), "{name}");
        }
        demo.node.stop();
    }
}
