//! `serve --correlations`: Sigma correlations over the rules' alerts and a
//! side stream a shipper sends to the node (`_bulk` into index `auth`). The
//! correlation fires for the model whose burst and auth failures meet, not
//! for the model with failures alone; it is written once, and a kill -9 and
//! a restart (which replays the inference and `auth` rows from the store)
//! neither repeats it nor loses it from the alert board. A reload whose
//! correlation names a rule that does not exist is refused at its
//! file:line, and the running correlations stay.

use serde_json::{json, Value};

use super::{available, curl, event_clock, eventually, post_inference, token, Answer, Node};

const BURST: &str = "id: burst\ntitle: A burst of requests\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 10s\nallowed_lateness: 1s\ncondition: count() >= 20\n";

const CORRELATIONS: &str = "title: Authentication failure
name: auth-failure
logsource:
  service: auth
detection:
  selection:
    outcome: failure
  condition: selection
---
title: A burst of requests while the model's callers fail to authenticate
name: burst-with-auth-failures
level: high
correlation:
  type: temporal
  rules:
    - burst
    - auth-failure
  group-by:
    - model_id
  aliases:
    model_id:
      auth-failure: model
  timespan: 5m
";

const CORRELATION: &str = "burst-with-auth-failures";

fn get(node: &Node, token: &str, path: &str) -> Answer {
    curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &node.url(path),
    ])
}

/// The correlation's alerts on the board, by model.
fn board(node: &Node, read: &str) -> Vec<Value> {
    let alerts = get(node, read, "/api/v1/alerts").json();
    alerts["alerts"]
        .as_array()
        .map(|alerts| {
            alerts
                .iter()
                .filter(|alert| alert["rule_id"] == CORRELATION)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// The correlation's transitions in the store's alert ledger.
fn written(data: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("alerts.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|alert| alert["rule_id"] == CORRELATION)
        .collect()
}

/// A node with the burst rule and the correlations; its data directory,
/// the correlations file and ingest, read and admin tokens.
struct Setup {
    _dir: tempfile::TempDir,
    data: std::path::PathBuf,
    rules: std::path::PathBuf,
    correlations: std::path::PathBuf,
    ingest: String,
    read: String,
    admin: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let rules = dir.path().join("rules");
        std::fs::create_dir_all(&rules).unwrap();
        std::fs::write(rules.join("burst.yaml"), BURST).unwrap();
        let correlations = dir.path().join("correlations.yaml");
        std::fs::write(&correlations, CORRELATIONS).unwrap();
        Setup {
            ingest: token(&data, "ingest", None),
            read: token(&data, "read", None),
            admin: token(&data, "admin", None),
            _dir: dir,
            data,
            rules,
            correlations,
        }
    }

    fn start(&self, extra: &[&str]) -> Node {
        let mut flags = vec![
            "--rules",
            self.rules.to_str().unwrap(),
            "--correlations",
            self.correlations.to_str().unwrap(),
        ];
        flags.extend(extra);
        Node::start(&self.data, &flags)
    }
}

/// Auth outcomes (model, outcome, second) bulked into index `auth`, as an
/// Elasticsearch shipper sends them.
fn send_auth(node: &Node, ingest: &str, at: &dyn Fn(i64) -> String, rows: &[(&str, &str, i64)]) {
    let mut bulk = String::new();
    for (model, outcome, second) in rows {
        bulk.push_str("{\"create\":{\"_index\":\"auth\"}}\n");
        bulk.push_str(
            &json!({"@timestamp": at(*second), "model": model, "outcome": outcome,
                    "user": "svc-batch"})
            .to_string(),
        );
        bulk.push('\n');
    }
    let answer = curl(&[
        "-H",
        &format!("Authorization: Bearer {ingest}"),
        "-H",
        "Content-Type: application/x-ndjson",
        "--data-binary",
        &bulk,
        &node.url("/_bulk"),
    ]);
    assert_eq!(answer.json()["errors"], false, "{}", answer.body);
}

/// Inference lines: `burst` requests of model `loud` at second 2, then a
/// `tick` event every 5 s of `seconds`; returns the answer's `accepted`.
fn send_inference(
    node: &Node,
    ingest: &str,
    at: &dyn Fn(i64) -> String,
    burst: usize,
    seconds: std::ops::Range<i64>,
) -> Value {
    let line = |model: &str, at: &str| {
        format!("{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"latency_ms\":5}}\n")
    };
    let mut body = String::new();
    for _ in 0..burst {
        body.push_str(&line("loud", &at(2)));
    }
    for second in seconds.step_by(5) {
        body.push_str(&line("tick", &at(second)));
    }
    let answer = post_inference(node, ingest, &body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()["accepted"].clone()
}

#[test]
fn a_burst_and_auth_failures_sent_by_a_shipper_correlate_once_across_a_kill_9() {
    if !available("curl", &["--version"]) {
        return;
    }
    let setup = Setup::new();
    let (data, rules, correlations) = (&setup.data, &setup.rules, &setup.correlations);
    let (ingest, read, admin) = (&setup.ingest, &setup.read, &setup.admin);
    let node = setup.start(&[]);

    // Auth failures for both models; one success, which no Sigma rule selects.
    let at = event_clock(300);
    send_auth(
        &node,
        ingest,
        &at,
        &[
            ("loud", "failure", 4),
            ("loud", "failure", 6),
            ("calm", "failure", 5),
            ("loud", "success", 7),
        ],
    );

    // A burst on `loud` only; calm traffic on `calm`; ticks move the clock
    // past the burst's window and the correlations' lateness.
    let line = |model: &str, at: &str| {
        format!("{{\"timestamp\":\"{at}\",\"model_id\":\"{model}\",\"latency_ms\":5}}\n")
    };
    let mut body = String::new();
    for second in (0..10).step_by(2) {
        body.push_str(&line("calm", &at(second)));
    }
    let answer = post_inference(&node, ingest, &body);
    assert_eq!(answer.json()["accepted"], 5, "{}", answer.body);
    assert_eq!(send_inference(&node, ingest, &at, 25, 10..240), 71);

    let fired = eventually(60, "the correlation alert on the board", || {
        let alerts = board(&node, read);
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0]["group"], json!({"model_id": "loud"}));
    assert_eq!(fired[0]["severity"], "high");
    let members: Vec<&str> = fired[0]["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|member| member["dimension"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["burst", "auth-failure"], "{fired:#?}");
    assert_eq!(written(data).len(), 1, "{:#?}", written(data));

    // A reload whose correlation names a rule that does not exist.
    std::fs::write(
        correlations,
        CORRELATIONS.replace("    - burst\n", "    - no-such-rule\n"),
    )
    .unwrap();
    let refused = curl(&[
        "-X",
        "POST",
        "-H",
        &format!("Authorization: Bearer {admin}"),
        &node.url("/api/v1/rules/reload"),
    ]);
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("correlations.yaml:")
            && refused.body.contains("'no-such-rule' is not a Sigma rule"),
        "{}",
        refused.body
    );
    assert_eq!(board(&node, read).len(), 1);
    std::fs::write(correlations, CORRELATIONS).unwrap();

    // kill -9 and a restart: the replay finds the same correlation and
    // writes nothing twice; the board has it again.
    node.kill_9();
    // Restarted with the correlations from the environment this time.
    let data_text = data.to_str().unwrap();
    let node = Node::spawn(
        &[
            "--no-pg",
            "--listen",
            "127.0.0.1:0",
            "--data",
            data_text,
            "--rules",
            rules.to_str().unwrap(),
        ],
        &[("INFERWATCH_CORRELATIONS", correlations.to_str().unwrap())],
    );
    let again = eventually(60, "the correlation back on the board", || {
        let alerts = board(&node, read);
        (!alerts.is_empty()).then_some(alerts)
    });
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0]["group"], json!({"model_id": "loud"}));
    assert_eq!(again[0]["starts_at"], fired[0]["starts_at"]);
    assert_eq!(written(data).len(), 1, "{:#?}", written(data));
    node.stop();
}

/// A shipper that delivers the auth log minutes after the inference
/// events: with the default lateness its rows are dropped as late (and
/// counted on `/metrics`); with `--correlation-lateness 10m` they are
/// correlated.
#[test]
fn side_rows_later_than_the_default_lateness_correlate_within_a_longer_one() {
    if !available("curl", &["--version"]) {
        return;
    }
    for lateness in [None, Some("10m")] {
        let setup = Setup::new();
        let (ingest, read) = (&setup.ingest, &setup.read);
        let node = match lateness {
            Some(lateness) => setup.start(&["--correlation-lateness", lateness]),
            None => setup.start(&[]),
        };
        let at = event_clock(1200);
        // The burst, and the clock five minutes past it.
        send_inference(&node, ingest, &at, 25, 10..300);
        let last_tick = chrono::DateTime::parse_from_rfc3339(&at(295))
            .unwrap()
            .timestamp() as f64;
        eventually(60, "detection's clock at the last tick", || {
            let metrics = get(&node, read, "/metrics").body;
            metric(&metrics, "inferwatch_detection_clock_seconds")
                .filter(|&clock| clock >= last_tick)
        });
        // Only now the auth failures that came with the burst (three: a
        // new stream's rows pass once three agree on the time).
        let failures = [4, 5, 6].map(|second| ("loud", "failure", second));
        send_auth(&node, ingest, &at, &failures);
        // Traffic goes on past the longer lateness.
        send_inference(&node, ingest, &at, 0, 300..800);
        match lateness {
            None => {
                let late = eventually(60, "the late auth rows counted", || {
                    let metrics = get(&node, read, "/metrics").body;
                    metric(&metrics, "inferwatch_correlation_late_findings")
                        .filter(|&late| late >= 3.0)
                });
                assert_eq!(late, 3.0);
                assert!(board(&node, read).is_empty());
            }
            Some(_) => {
                let fired = eventually(60, "the correlation of the late auth rows", || {
                    let alerts = board(&node, read);
                    (!alerts.is_empty()).then_some(alerts)
                });
                assert_eq!(fired[0]["group"], json!({"model_id": "loud"}));
                let metrics = get(&node, read, "/metrics").body;
                assert_eq!(
                    metric(&metrics, "inferwatch_correlation_late_findings"),
                    Some(0.0)
                );
            }
        }
        node.stop();
    }
}

/// A metric's value in Prometheus text.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}
