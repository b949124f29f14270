//! `inferwatch run --config`: one pass stores every event and raises the
//! alerts that `detect` raises on the same input.

use std::process::Command;

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
