//! `detect --explain-rows`: the explanation sample can be turned off
//! without changing which alerts fire.

mod common;

use std::path::Path;

use common::{parse_lines, run};
use serde_json::Value;

fn detect(explain_rows: &str, dir: &Path) -> Vec<Value> {
    let case =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/detect/canary-seed-rule");
    parse_lines(&run(&[
        "detect",
        "--quiet",
        "--explain-rows",
        explain_rows,
        "--rules",
        case.join("rules.yaml").to_str().unwrap(),
        "--dead-letter",
        dir.join("dead.jsonl").to_str().unwrap(),
        case.join("input.jsonl").to_str().unwrap(),
    ]))
}

#[test]
fn turning_the_explanation_sample_off_keeps_the_alerts_and_drops_their_contributors() {
    let dir = tempfile::tempdir().unwrap();
    let explained = detect("500000", dir.path());
    let bare = detect("0", dir.path());
    let identity = |alerts: &[Value]| -> Vec<(String, String)> {
        alerts
            .iter()
            .map(|a| (a["alert_id"].to_string(), a["state"].to_string()))
            .collect()
    };
    assert!(!explained.is_empty());
    assert_eq!(identity(&explained), identity(&bare));
    let firing = |alerts: &[Value]| {
        alerts
            .iter()
            .find(|a| a["state"] == "firing")
            .cloned()
            .unwrap()
    };
    let (with, without) = (firing(&explained), firing(&bare));
    assert_eq!(
        with["explanation"][0]["dimension"], "model_version",
        "{with}"
    );
    assert!(
        with["summary"].as_str().unwrap().contains("(lift "),
        "{with}"
    );
    assert_eq!(without["explanation"], serde_json::json!([]), "{without}");
    assert!(
        !without["summary"].as_str().unwrap().contains("lift"),
        "{without}"
    );
    assert_eq!(with["impact"]["events"], without["impact"]["events"]);
}
