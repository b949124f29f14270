//! `inferwatch run --config`: one pass stores every event and raises the
//! alerts that `detect` raises on the same input.

use std::process::Command;

mod common;

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inferwatch")
}

#[test]
fn run_stores_every_event_and_alerts_like_detect() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fleet.jsonl");
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let status = Command::new(binary())
        .args([
            "simulate",
            "--scenario",
            "error-spike",
            "--duration",
            "1h",
            "--rate",
            "100",
            "--output",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(
        dir.path().join("run.yaml"),
        format!(
            "data: data\ninputs: [fleet.jsonl]\nrules: {}\nalerts: alerts.jsonl\nstore:\n  flush_rows: 50000\n",
            rules.display()
        ),
    )
    .unwrap();
    let status = Command::new(binary())
        .args(["run", "--quiet", "--config"])
        .arg(dir.path().join("run.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let detect = Command::new(binary())
        .args(["detect", "--quiet", "--rules"])
        .arg(&rules)
        .arg(&input)
        .output()
        .unwrap();
    assert!(detect.status.success());
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(alerts, String::from_utf8(detect.stdout).unwrap());
    assert!(alerts.contains("\"state\":\"firing\""), "{alerts}");
    let events = std::fs::read_to_string(&input).unwrap().lines().count();
    let count = Command::new(binary())
        .args(["query", "--format", "csv", "--data"])
        .arg(dir.path().join("data"))
        .arg("SELECT count(*) AS n FROM inference")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(count.stdout).unwrap(),
        format!("n\n{events}\n")
    );
    // The store keeps the alerts too: the `alerts` table has each transition.
    let firing = alerts.matches("\"state\":\"firing\"").count();
    let stored = Command::new(binary())
        .args(["query", "--format", "csv", "--data"])
        .arg(dir.path().join("data"))
        .arg("SELECT count(*) AS n, sum(CASE WHEN state = 'firing' THEN 1 ELSE 0 END) AS firing FROM alerts")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(stored.stdout).unwrap(),
        format!("n,firing\n{},{firing}\n", alerts.lines().count())
    );
}

/// `actions:` in the run config: the same notification pipeline and
/// dispatcher as `detect --actions` and `serve --actions`; a finite input
/// runs the group timers out and waits for the deliveries before exiting.
#[test]
fn run_delivers_the_alerts_of_its_rules_to_the_configured_webhook() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(
        rules.join("burst.yaml"),
        "id: burst\ntitle: A burst of requests\nseverity: high\ngroup_by: [model_id]\nwindow: 10s\nevery: 10s\nallowed_lateness: 1s\ncondition: count() >= 20\n",
    )
    .unwrap();
    let mut events = String::new();
    for i in 0..25 {
        events.push_str(&format!(
            "{{\"timestamp\":\"2026-01-01T00:00:02Z\",\"model_id\":\"loud\",\"latency_ms\":{i}}}\n"
        ));
    }
    // Steady traffic afterwards moves the clock the events agree on.
    for second in (10..60).step_by(2) {
        events.push_str(&format!(
            "{{\"timestamp\":\"2026-01-01T00:00:{second}Z\",\"model_id\":\"tick\",\"latency_ms\":1}}\n"
        ));
    }
    std::fs::write(dir.path().join("events.jsonl"), events).unwrap();
    let (hook, received) = common::webhook_receiver();
    std::fs::write(
        dir.path().join("actions.yaml"),
        format!("actions:\n  - name: hook\n    kind: webhook\n    url: {hook}\n"),
    )
    .unwrap();
    // No grouping delay: the alert resolves 10 s after it fires, and a
    // group whose alerts all resolved before its first look sends nothing.
    std::fs::write(
        dir.path().join("notify.yaml"),
        "route:\n  group_wait: 0s\n  group_interval: 1s\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("run.yaml"),
        "data: data\ninputs: [events.jsonl]\nrules: rules\nalerts: alerts.jsonl\nactions: actions.yaml\nnotify: notify.yaml\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["run", "--quiet", "--config"])
        .arg(dir.path().join("run.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let delivered: Vec<serde_json::Value> = received.try_iter().collect();
    let states: Vec<(&str, &str)> = delivered
        .iter()
        .map(|alert| {
            (
                alert["group"]["model_id"].as_str().unwrap(),
                alert["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("loud", "firing"), ("loud", "resolved")],
        "{stderr}"
    );
    assert!(stderr.contains("0 pending"), "{stderr}");
    assert!(dir.path().join("data/notify/deliveries").is_dir());
}

/// `slos:`, `correlations:` and `streams:` in the run config: `run` raises
/// exactly the SLO and correlation alerts `detect --slos --correlations
/// --stream` raises on the same input, the side stream's lookup errors
/// correlating with the error-rate alert of the failing model only.
#[test]
fn run_evaluates_slos_and_correlations_with_side_streams_like_detect() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let input = dir.path().join("fleet.jsonl");
    let labels = dir.path().join("labels.jsonl");
    let status = Command::new(binary())
        .args(["simulate", "--scenario", "error-spike", "--duration", "1h"])
        .args(["--rate", "100", "--seed", "11", "--output"])
        .arg(&input)
        .arg("--labels")
        .arg(&labels)
        .status()
        .unwrap();
    assert!(status.success());
    let label: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&labels)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(label["start"].as_str().unwrap()).unwrap();
    let side: String = [("vision", 1), ("vision", 2), ("fraud", 1)]
        .iter()
        .map(|(model, minutes)| {
            let at = start + chrono::Duration::minutes(*minutes);
            format!(
                "{{\"timestamp\":\"{}\",\"level\":\"error\",\"model\":\"{model}\",\"message\":\"feature lookup timed out\"}}\n",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        })
        .collect();
    std::fs::write(dir.path().join("feature-store.jsonl"), side).unwrap();
    let correlations = root.join("correlations/model-errors-with-feature-store.yaml");
    std::fs::write(
        dir.path().join("run.yaml"),
        format!(
            "data: data\ninputs: [fleet.jsonl]\nrules: {}\nslos: {}\ncorrelations: {}\nstreams:\n  feature_store: feature-store.jsonl\nalerts: alerts.jsonl\n",
            root.join("rules").display(),
            root.join("slos").display(),
            correlations.display()
        ),
    )
    .unwrap();
    let status = Command::new(binary())
        .args(["run", "--quiet", "--config"])
        .arg(dir.path().join("run.yaml"))
        .status()
        .unwrap();
    assert!(status.success());
    let detect = Command::new(binary())
        .args(["detect", "--quiet", "--rules"])
        .arg(root.join("rules"))
        .arg("--slos")
        .arg(root.join("slos"))
        .arg("--correlations")
        .arg(&correlations)
        .arg("--stream")
        .arg(format!(
            "feature_store={}",
            dir.path().join("feature-store.jsonl").display()
        ))
        .arg(&input)
        .output()
        .unwrap();
    assert!(detect.status.success());
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).unwrap();
    assert_eq!(
        sorted(&alerts),
        sorted(&String::from_utf8(detect.stdout).unwrap())
    );
    let correlated: Vec<serde_json::Value> = alerts
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|alert| alert["rule_id"] == "model-errors-with-feature-store-errors")
        .collect();
    assert_eq!(correlated.len(), 1, "{correlated:#?}");
    assert_eq!(correlated[0]["group"]["model_id"], "vision");
    assert!(
        alerts
            .lines()
            .any(|line| line.contains("\"rule_id\":\"vision-availability\"")
                && line.contains("\"state\":\"firing\"")),
        "the vision availability SLO burns on the error spike: {alerts}"
    );
}
