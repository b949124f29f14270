//! The whole canary story, live: the simulated fleet regresses its recsys
//! 2.1 canary, `inferwatch detect --follow` raises `canary-vs-baseline`, the
//! rollback action calls the simulator's traffic router, the canary's
//! traffic stops, and the alert resolves — before the injected regression
//! would have ended by itself.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{binary, nanos, parse_lines, rules_dir};
use serde_json::Value;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The complete lines of a JSONL file. The simulator is killed (SIGKILL)
/// while it writes, and its buffered writer does not flush on line
/// boundaries, so the file may end in a torn line: left out, as any reader
/// of a growing file leaves it.
fn read_json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |at| at + 1);
    parse_lines(&text[..complete])
}

#[test]
fn canary_regression_is_rolled_back_and_the_alert_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let deployments = dir.path().join("deployments.jsonl");
    let labels = dir.path().join("labels.jsonl");
    // One simulated hour at 200x: the regression is injected at [24, 42) min.
    let mut simulator = Command::new(binary())
        .args([
            "simulate",
            "--scenario",
            "canary-regression",
            "--duration",
            "1h",
            "--rate",
            "100",
            "--live",
            "200",
            "--router",
            "127.0.0.1:0",
        ])
        .arg("--deployments")
        .arg(&deployments)
        .arg("--labels")
        .arg(&labels)
        .arg("--output")
        .arg(&events)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(simulator.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let router = line
        .trim()
        .strip_prefix("router: listening on ")
        .unwrap_or_else(|| panic!("expected the router's address, got {line:?}"))
        .to_string();
    let simulator = KillOnDrop(simulator);
    // Drain the rest of stderr so the simulator never blocks on it.
    let stderr_lines = std::thread::spawn(move || {
        stderr
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });

    let actions = dir.path().join("actions.yaml");
    std::fs::write(
        &actions,
        format!(
            "actions:\n  - name: canary-rollback\n    kind: rollback\n    rules: [canary-vs-baseline]\n    request:\n      method: POST\n      url: \"{router}/models/{{{{group.model_id}}}}/rollback\"\n      body: '{{\"alert_id\": \"{{{{alert_id}}}}\"}}'\n"
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let alerts_path = dir.path().join("alerts.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !events.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let detector = KillOnDrop(
        Command::new(binary())
            .args(["detect", "--follow", "--quiet", "--rules"])
            .arg(rules_dir().join("canary-vs-baseline.yaml"))
            .arg("--actions")
            .arg(&actions)
            .arg("--state-dir")
            .arg(&state)
            .arg("--output")
            .arg(&alerts_path)
            .arg("--dead-letter")
            .arg(dir.path().join("dead.jsonl"))
            .arg(&events)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Wait for the resolution (or give up after a generous wall-clock bound).
    let deadline = Instant::now() + Duration::from_secs(120);
    let resolved = loop {
        let alerts = read_json_lines(&alerts_path);
        if let Some(resolved) = alerts
            .iter()
            .find(|alert| alert["state"] == "resolved" && alert["rule_id"] == "canary-vs-baseline")
        {
            break resolved.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no resolved canary alert; alerts so far: {alerts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(detector);
    drop(simulator);
    let router_log = stderr_lines.join().unwrap();

    let alerts = read_json_lines(&alerts_path);
    let firing = alerts
        .iter()
        .find(|alert| alert["state"] == "firing")
        .expect("a firing alert");
    assert_eq!(firing["group"]["model_id"], "recsys");
    let incident = &read_json_lines(&labels)[0];
    let (incident_start, incident_end) = (
        nanos(incident["start"].as_str().unwrap()),
        nanos(incident["end"].as_str().unwrap()),
    );
    let fired_at = nanos(firing["starts_at"].as_str().unwrap());
    assert!(fired_at > incident_start, "fired before the regression");

    // The log starts with the fleet's five simulated deploys; the router
    // rolled recsys 2.1 back once, after the alert fired.
    let records = read_json_lines(&deployments);
    assert_eq!(
        records
            .iter()
            .filter(|record| record["event"] == "deploy")
            .count(),
        5,
        "records: {records:?}"
    );
    let rollbacks: Vec<&Value> = records
        .iter()
        .filter(|record| record["event"] == "rollback")
        .collect();
    assert_eq!(
        rollbacks.len(),
        1,
        "rollbacks: {rollbacks:?}; router: {router_log:?}"
    );
    assert_eq!(rollbacks[0]["model_id"], "recsys");
    assert_eq!(rollbacks[0]["model_version"], "2.1");
    let rolled_back_at = nanos(rollbacks[0]["timestamp"].as_str().unwrap());
    assert!(rolled_back_at >= fired_at);

    // The remediation is on record with the router's answer.
    let remediations = read_json_lines(&state.join("deliveries").join("remediations.jsonl"));
    assert!(
        remediations
            .iter()
            .any(|record| record.to_string().contains("200")),
        "remediations: {remediations:?}"
    );

    // No canary traffic from the rollback on; plenty before it.
    let stream = read_json_lines(&events);
    let canary_before = stream
        .iter()
        .filter(|event| event["ab_group"] == "canary")
        .filter(|event| nanos(event["timestamp"].as_str().unwrap()) < rolled_back_at)
        .count();
    let canary_after = stream
        .iter()
        .filter(|event| event["ab_group"] == "canary")
        .filter(|event| nanos(event["timestamp"].as_str().unwrap()) >= rolled_back_at)
        .count();
    assert!(
        canary_before > 1_000,
        "{canary_before} canary events before"
    );
    assert_eq!(canary_after, 0, "canary traffic after the rollback");

    // The alert resolved because the canary stopped, not because the
    // injected regression ended.
    let resolved_at = nanos(resolved["ends_at"].as_str().unwrap());
    assert!(resolved_at > rolled_back_at);
    assert!(
        resolved_at < incident_end,
        "resolved at {} but the regression ran until {}",
        resolved["ends_at"],
        incident["end"]
    );

    // DORA: the 2.1 canary's deploy failed (rolled back within the day).
    let report = Command::new(binary())
        .args(["dora", "report", "--json", "--deployments"])
        .arg(&deployments)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    assert!(report.status.success(), "{report:?}");
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report["overall"]["deploys"], 5);
    assert_eq!(report["overall"]["rollbacks"], 1);
    assert!(report["failed_deploys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|failed| failed["model_id"] == "recsys" && failed["model_version"] == "2.1"));
}
