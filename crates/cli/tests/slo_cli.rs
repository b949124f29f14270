//! `inferwatch slo report` and `detect --slos` with the real binary on a
//! simulated error spike: the budget numbers equal counts taken from the
//! JSONL itself, and the SLO alerts name the failing model only.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{nanos, parse_lines, run};
use serde_json::Value;

const AVAILABILITY: &str = "slos:
  - id: fleet-availability
    title: every model answers
    group_by: [model_id, model_version]
    sli: availability
    objective: 99.5
";

/// chat-llm is always slower than 200 ms: its budget goes negative at once.
const LATENCY: &str = "  - id: fleet-latency
    title: every model within 200 ms
    group_by: [model_id]
    sli: { latency: { threshold_ms: 200 } }
    objective: 95
";

/// Simulates two hours with a 20-minute error spike on vision from 00:48;
/// returns (events file, labels).
fn simulate(dir: &Path) -> (String, Vec<Value>) {
    let events = dir.join("events.jsonl");
    let labels = dir.join("labels.jsonl");
    run(&[
        "simulate",
        "--scenario",
        "error-spike",
        "--duration",
        "2h",
        "--rate",
        "20",
        "--seed",
        "5",
        "--output",
        events.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    (
        events.to_str().unwrap().to_string(),
        parse_lines(&std::fs::read_to_string(labels).unwrap()),
    )
}

#[derive(Default, Debug)]
struct Tally {
    events: u64,
    bad: u64,
}

fn close(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0)
}

#[test]
fn slo_report_budgets_match_counts_from_the_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = simulate(dir.path());
    let slos = dir.path().join("slos.yaml");
    std::fs::write(&slos, format!("{AVAILABILITY}{LATENCY}")).unwrap();

    // The oracle: count straight from the JSON lines.
    let mut availability: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut latency: BTreeMap<String, Tally> = BTreeMap::new();
    for line in std::fs::read_to_string(&events).unwrap().lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        let model = event["model_id"].as_str().unwrap().to_string();
        let version = event["model_version"].as_str().unwrap().to_string();
        let tally = availability.entry((model.clone(), version)).or_default();
        tally.events += 1;
        tally.bad += u64::from(event["status"] != "ok");
        if let Some(latency_ms) = event["latency_ms"].as_f64() {
            let tally = latency.entry(model).or_default();
            tally.events += 1;
            tally.bad += u64::from(latency_ms > 200.0);
        }
    }

    let reports: Vec<Value> = serde_json::from_str(&run(&[
        "slo",
        "report",
        "--slos",
        slos.to_str().unwrap(),
        "--json",
        &events,
    ]))
    .unwrap();
    assert_eq!(
        reports.len(),
        availability.len() + latency.len(),
        "{reports:#?}"
    );
    for report in &reports {
        let group = &report["group"];
        let model = group["model_id"].as_str().unwrap().to_string();
        let (tally, objective) = match report["slo_id"].as_str().unwrap() {
            "fleet-availability" => {
                let version = group["model_version"].as_str().unwrap().to_string();
                (&availability[&(model, version)], 99.5)
            }
            "fleet-latency" => (&latency[&model], 95.0),
            other => panic!("unexpected SLO {other}"),
        };
        assert_eq!(report["events"], tally.events, "{report}");
        assert_eq!(report["bad_events"], tally.bad, "{report}");
        assert_eq!(report["good_events"], tally.events - tally.bad, "{report}");
        let allowed = tally.events as f64 * (1.0 - objective / 100.0);
        assert!(
            close(report["budget_total"].as_f64().unwrap(), allowed),
            "{report}"
        );
        let remaining = (1.0 - tally.bad as f64 / allowed) * 100.0;
        assert!(
            close(report["budget_remaining"].as_f64().unwrap(), remaining),
            "{report}: expected {remaining}"
        );
        let achieved = (tally.events - tally.bad) as f64 / tally.events as f64 * 100.0;
        assert!(
            close(report["sli_achieved"].as_f64().unwrap(), achieved),
            "{report}"
        );
    }
    // The error spike spent vision's availability budget, and only vision's.
    for report in reports
        .iter()
        .filter(|r| r["slo_id"] == "fleet-availability")
    {
        let remaining = report["budget_remaining"].as_f64().unwrap();
        if report["group"]["model_id"] == "vision" {
            assert!(remaining < 0.0, "{report}");
        } else {
            assert!(remaining > 0.0, "{report}");
        }
    }

    let table = run(&["slo", "report", "--slos", slos.to_str().unwrap(), &events]);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("SLO") && header.contains("BUDGET LEFT"),
        "{table}"
    );
    assert!(table.contains("fleet-availability  vision"), "{table}");
}

#[test]
fn slo_alerts_join_detect_output_for_the_failing_model_only() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = simulate(dir.path());
    let slos = dir.path().join("slos.yaml");
    std::fs::write(&slos, AVAILABILITY).unwrap();
    let alerts = parse_lines(&run(&[
        "detect",
        "--quiet",
        "--slos",
        slos.to_str().unwrap(),
        &events,
    ]));
    let spike_start = nanos(labels[0]["start"].as_str().unwrap());
    let spike_end = nanos(labels[0]["end"].as_str().unwrap());
    assert!(!alerts.is_empty(), "the spike burns vision's budget");
    for alert in &alerts {
        assert_eq!(alert["rule_id"], "fleet-availability", "{alert}");
        assert_eq!(alert["group"]["model_id"], "vision", "{alert}");
        assert!(
            nanos(alert["starts_at"].as_str().unwrap()) > spike_start,
            "{alert}"
        );
        assert!(alert["labels"]["summary"]
            .as_str()
            .unwrap()
            .contains("on vision"));
    }
    let resolved: Vec<&Value> = alerts.iter().filter(|a| a["state"] == "resolved").collect();
    assert!(!resolved.is_empty(), "{alerts:#?}");
    for alert in resolved {
        assert!(
            nanos(alert["ends_at"].as_str().unwrap()) > spike_end,
            "{alert}"
        );
    }

    // The shipped SLOs load in `detect` too, next to the rule pack.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../slos");
    run(&[
        "detect",
        "--quiet",
        "--rules",
        common::rules_dir().to_str().unwrap(),
        "--slos",
        shipped.to_str().unwrap(),
        &events,
    ]);
}
