//! End-to-end scenario checks with the real binary and the default rule pack:
//! baseline silence over a simulated hour (≥1 M events), and every fault
//! scenario firing its matching rule soon after the labelled start and
//! resolving after the labelled end.

mod common;

use common::{nanos, parse_lines, rules_dir, run};
use serde_json::Value;

/// Simulates `scenario` and runs the default pack; returns (labels, alerts).
fn simulate_and_detect(scenario: &str, duration: &str, rate: &str) -> (Vec<Value>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let labels = dir.path().join("labels.jsonl");
    let events_arg = events.to_str().unwrap();
    run(&[
        "simulate",
        "--scenario",
        scenario,
        "--duration",
        duration,
        "--rate",
        rate,
        "--seed",
        "11",
        "--output",
        events_arg,
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let dead = dir.path().join("dead.jsonl");
    let alerts = run(&[
        "detect",
        "--quiet",
        "--rules",
        rules_dir().to_str().unwrap(),
        "--dead-letter",
        dead.to_str().unwrap(),
        events_arg,
    ]);
    assert!(!dead.exists(), "simulated events must all decode");
    (
        parse_lines(&std::fs::read_to_string(labels).unwrap()),
        parse_lines(&alerts),
    )
}

#[test]
fn baseline_hour_of_a_million_events_raises_no_alert() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("baseline.jsonl");
    let summary = dir.path().join("summary.json");
    run(&[
        "simulate",
        "--scenario",
        "baseline",
        "--duration",
        "1h",
        "--seed",
        "42",
        "--output",
        events.to_str().unwrap(),
    ]);
    let alerts = run(&[
        "detect",
        "--quiet",
        "--rules",
        rules_dir().to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let summary: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    assert!(
        summary["events"].as_u64().unwrap() >= 1_000_000,
        "{summary}"
    );
    assert_eq!(summary["dead_letters"], 0);
    assert_eq!(alerts, "", "the default pack must stay silent on baseline");
}

/// The rule expected to fire for each fault scenario, and the slice it names.
const FAULTS: [(&str, &str, &str, &str); 6] = [
    (
        "latency-regression",
        "latency-baseline",
        "model_id",
        "fraud",
    ),
    ("error-spike", "error-rate", "model_id", "vision"),
    (
        "canary-regression",
        "canary-vs-baseline",
        "model_id",
        "recsys",
    ),
    ("dos", "denial-of-service", "model_id", "chat-llm"),
    (
        "partial-outage",
        "volume-below-baseline",
        "model_id",
        "fraud",
    ),
    (
        "extraction",
        "model-extraction-sweep",
        "client_id",
        "c-31337",
    ),
];

#[test]
fn each_fault_scenario_fires_its_rule_after_the_labelled_start_and_resolves_after_the_end() {
    for (scenario, rule_id, key, value) in FAULTS {
        // Three hours: the learned baselines warm up for one before the incident.
        let (labels, alerts) = simulate_and_detect(scenario, "3h", "120");
        assert_eq!(labels.len(), 1, "{scenario}: one labelled incident");
        let start = nanos(labels[0]["start"].as_str().unwrap());
        let end = nanos(labels[0]["end"].as_str().unwrap());
        let mine: Vec<&Value> = alerts
            .iter()
            .filter(|a| a["rule_id"] == rule_id && a["group"][key] == value)
            .collect();
        assert_eq!(
            mine.len(),
            2,
            "{scenario}: expected firing then resolved from {rule_id}, got {alerts:#?}"
        );
        assert_eq!(mine[0]["state"], "firing");
        assert_eq!(mine[1]["state"], "resolved");
        let fired = nanos(mine[0]["starts_at"].as_str().unwrap());
        let resolved = nanos(mine[1]["ends_at"].as_str().unwrap());
        // "Within one window": the 5 m window plus the rule's hold (`for`, at most 5 m) and one tick.
        let minute = 60_000_000_000;
        assert!(
            fired > start && fired <= start + 11 * minute,
            "{scenario}: fired {} min after the start",
            (fired - start) / minute
        );
        assert!(
            resolved > end && resolved <= end + 11 * minute,
            "{scenario}: resolved {} min after the end",
            (resolved - end) / minute
        );
        // Nothing fires outside the incident (plus the window needed to clear it).
        for alert in &alerts {
            let at = nanos(alert["starts_at"].as_str().unwrap());
            assert!(
                at > start && at <= end + 6 * minute,
                "{scenario}: alert outside the incident: {alert}"
            );
        }
        assert!(!mine[0]["value"].is_null() && !mine[0]["threshold"].is_null());
    }
}
