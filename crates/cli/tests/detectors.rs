//! The learned and statistical detectors end to end, with the real binary,
//! the simulator and the shipped rules: the poisoned source named within one
//! window with its effect size, twenty honest sources silent for a simulated
//! day, and the extracting client singled out among twelve thousand.

mod common;

use common::{binary, nanos, parse_lines, rules_dir, run};

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const MINUTE: i64 = 60_000_000_000;

fn rule(name: &str) -> PathBuf {
    rules_dir().join(name)
}

/// Simulates into a file; returns (events path, labels).
fn simulate(dir: &Path, args: &[&str]) -> (PathBuf, Vec<Value>) {
    let events = dir.join("events.jsonl");
    let labels = dir.join("labels.jsonl");
    let mut all = vec!["simulate", "--seed", "11", "--output"];
    all.push(events.to_str().unwrap());
    all.extend(["--labels", labels.to_str().unwrap()]);
    all.extend(args);
    run(&all);
    let labels = parse_lines(&std::fs::read_to_string(labels).unwrap_or_default());
    (events, labels)
}

#[test]
fn the_poisoned_source_is_named_within_one_window_with_its_effect_size() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = simulate(
        dir.path(),
        &[
            "--scenario",
            "poisoned-source",
            "--duration",
            "1h",
            "--rate",
            "300",
        ],
    );
    let start = nanos(labels[0]["start"].as_str().unwrap());
    let alerts = parse_lines(&run(&[
        "detect",
        "--quiet",
        "--rules",
        rule("source-confidence-drift.yaml").to_str().unwrap(),
        events.to_str().unwrap(),
    ]));
    let firing: Vec<&Value> = alerts.iter().filter(|a| a["state"] == "firing").collect();
    assert!(!firing.is_empty(), "{alerts:#?}");
    let mut models = HashSet::new();
    for alert in &firing {
        assert_eq!(
            alert["group"]["source_id"], "src-07",
            "only the poisoned source may fire: {alert}"
        );
        models.insert(alert["group"]["model_id"].as_str().unwrap().to_string());
        // Within one 5-minute window of the labelled start (plus the tick that sees it).
        let fired = nanos(alert["starts_at"].as_str().unwrap());
        assert!(
            fired > start && fired <= start + 6 * MINUTE,
            "fired {} min after the start",
            (fired - start) / MINUTE
        );
        let evidence = &alert["evidence"];
        assert_eq!(evidence["detector"], "drift");
        assert_eq!(evidence["method"], "ks");
        assert_eq!(evidence["reference"], "rest of source_id");
        let effect = evidence["effect_size"].as_f64().unwrap();
        assert!((0.2..=1.0).contains(&effect), "{evidence}");
        assert_eq!(alert["value"].as_f64(), Some(effect));
        assert!(evidence["p_value"].as_f64().unwrap() <= 0.001, "{evidence}");
        assert!(evidence["samples"].as_u64().unwrap() >= 200, "{evidence}");
        assert!(
            evidence["reference_samples"].as_u64().unwrap() >= 200,
            "{evidence}"
        );
    }
    // Every model that reports class probabilities sees it; chat-llm has none.
    let expected: HashSet<String> = ["fraud", "recsys", "vision"].map(String::from).into();
    assert_eq!(models, expected);

    // Per-class probability drift: class 0's probability, same comparison.
    let per_class = dir.path().join("class-drift.yaml");
    std::fs::write(
        &per_class,
        "id: class-drift\ntitle: Class drift\nseverity: medium\ngroup_by: [model_id, source_id]\nwindow: 5m\nevery: 1m\ndetector:\n  drift:\n    column: probabilities\n    class: 0\n    test: ks\n    reference: { rest_of: source_id }\n    min_effect: 0.2\n",
    )
    .unwrap();
    let alerts = parse_lines(&run(&[
        "detect",
        "--quiet",
        "--rules",
        per_class.to_str().unwrap(),
        events.to_str().unwrap(),
    ]));
    assert!(!alerts.is_empty());
    for alert in &alerts {
        assert_eq!(alert["group"]["source_id"], "src-07", "{alert}");
        assert_eq!(alert["evidence"]["subject"], "probabilities[0]", "{alert}");
    }
}

#[test]
fn twenty_honest_sources_raise_no_drift_alert_over_a_simulated_day() {
    // The rate is chosen so every (model, source) window is actually judged:
    // checked on the first hour below, not assumed.
    let rate = "80";
    let dir = tempfile::tempdir().unwrap();
    let (hour, _) = simulate(
        dir.path(),
        &["--scenario", "baseline", "--duration", "1h", "--rate", rate],
    );
    let mut counts: BTreeMap<(String, String, i64), u64> = BTreeMap::new();
    for line in BufReader::new(std::fs::File::open(&hour).unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if event.get("probabilities").is_none() {
            continue;
        }
        let window = nanos(event["timestamp"].as_str().unwrap()).div_euclid(5 * MINUTE);
        let key = (
            event["model_id"].as_str().unwrap().to_string(),
            event["source_id"].as_str().unwrap().to_string(),
            window,
        );
        *counts.entry(key).or_default() += 1;
    }
    let mut sizes: Vec<u64> = counts.values().copied().collect();
    sizes.sort_unstable();
    assert!(sizes.len() >= 3 * 20 * 12, "{} windows", sizes.len());
    assert!(
        sizes[sizes.len() / 10] >= 200,
        "90 % of (model, source, 5 min) windows must reach min_samples: 10th percentile {}",
        sizes[sizes.len() / 10]
    );
    std::fs::remove_file(hour).unwrap();

    // A day, streamed from the simulator straight into detect.
    let mut simulator = Command::new(binary())
        .args([
            "simulate",
            "--scenario",
            "baseline",
            "--duration",
            "24h",
            "--rate",
            rate,
            "--seed",
            "12",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let summary = dir.path().join("summary.json");
    let detector = Command::new(binary())
        .args(["detect", "--quiet", "--rules"])
        .arg(rule("source-confidence-drift.yaml"))
        .arg("--summary")
        .arg(&summary)
        .arg("-")
        .stdin(simulator.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(simulator.wait().unwrap().success());
    assert!(
        detector.status.success(),
        "{}",
        String::from_utf8_lossy(&detector.stderr)
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    assert!(
        summary["events"].as_u64().unwrap() >= 6_500_000,
        "{summary}"
    );
    assert_eq!(summary["rules"][0]["peak_groups"], 80, "{summary}");
    assert_eq!(
        String::from_utf8_lossy(&detector.stdout),
        "",
        "no source drifts in a baseline day"
    );
}

#[test]
fn the_forest_singles_out_the_extracting_client_among_twelve_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = simulate(
        dir.path(),
        &[
            "--scenario",
            "extraction",
            "--clients",
            "12000",
            "--duration",
            "1h",
            "--rate",
            "300",
        ],
    );
    let start = nanos(labels[0]["start"].as_str().unwrap());
    let end = nanos(labels[0]["end"].as_str().unwrap());
    let summary = dir.path().join("summary.json");
    let alerts = parse_lines(&run(&[
        "detect",
        "--quiet",
        "--rules",
        rule("client-behaviour-forest.yaml").to_str().unwrap(),
        "--summary",
        summary.to_str().unwrap(),
        events.to_str().unwrap(),
    ]));
    let summary: Value = serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
    let state = &summary["rules"][0];
    assert!(
        state["peak_groups"].as_u64().unwrap() >= 10_000,
        "at least 10,000 clients tracked at once: {state}"
    );
    assert!(state["forest_learned"].as_u64().unwrap() > 1_000, "{state}");
    assert!(!alerts.is_empty());
    for alert in &alerts {
        assert_eq!(alert["group"]["client_id"], "c-31337", "{alert}");
    }
    let firing = &alerts[0];
    assert_eq!(firing["state"], "firing");
    let fired = nanos(firing["starts_at"].as_str().unwrap());
    assert!(
        fired > start && fired <= start + 7 * MINUTE,
        "fired {} min after the start",
        (fired - start) / MINUTE
    );
    let evidence = &firing["evidence"];
    assert_eq!(evidence["detector"], "forest");
    assert!(evidence["score"].as_f64().unwrap() >= 0.6, "{evidence}");
    assert!(
        evidence["subject"]
            .as_str()
            .unwrap()
            .contains("unique_input_ratio="),
        "{evidence}"
    );
    let resolved = alerts.last().unwrap();
    assert_eq!(resolved["state"], "resolved");
    assert!(nanos(resolved["ends_at"].as_str().unwrap()) > end - 5 * MINUTE);
}

/// `rules coverage` on the shipped pack agrees with the rule files: each
/// technique lists exactly the rules carrying its id, and none is more than
/// partial while no fixture declares foreign naming.
#[test]
fn atlas_coverage_of_the_shipped_rules_matches_their_files() {
    let pack = rules_dir();
    let report: Value = serde_json::from_str(&run(&[
        "rules",
        "coverage",
        pack.to_str().unwrap(),
        "--format",
        "json",
    ]))
    .unwrap();
    assert_eq!(report["evidence"], "declared");
    let (rules, errors) = inferwatch_detect::load_rules_dir(&pack);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(report["rule_count"], rules.len());
    let techniques = report["techniques"].as_array().unwrap();
    let ids: Vec<&str> = techniques
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "AML.T0040",
            "AML.T0024.000",
            "AML.T0024.001",
            "AML.T0024.002",
            "AML.T0043",
            "AML.T0015",
            "AML.T0029",
            "AML.T0034",
            "AML.T0031",
            "AML.T0020",
            "AML.T0010.003",
            "AML.T0012",
            "AML.T0051"
        ]
    );
    for technique in techniques {
        let id = technique["id"].as_str().unwrap();
        let carrying: Vec<&str> = rules
            .iter()
            .filter(|rule| rule.atlas.iter().any(|a| a == id))
            .map(|rule| rule.id.as_str())
            .collect();
        assert_eq!(technique["rules"], serde_json::json!(carrying), "{id}");
        // Covered when a carrying rule has a simulated fixture expecting
        // `firing` (simulated fixtures run under both naming modes).
        let fires_in_both = |id: &str| {
            rules.iter().any(|rule| {
                rule.id == id
                    && rule.tests.iter().any(|t| {
                        t.simulate.is_some() && t.expect.iter().any(|e| e.state == "firing")
                    })
            })
        };
        let expected = if carrying.is_empty() {
            "not_covered"
        } else if carrying.iter().any(|rule| fires_in_both(rule)) {
            "covered"
        } else {
            "partial"
        };
        assert_eq!(technique["status"], expected, "{id}");
        assert!(!technique["tactics"].as_array().unwrap().is_empty(), "{id}");
        assert!(!technique["indicator"].as_str().unwrap().is_empty(), "{id}");
    }
    let by_id = |id: &str| techniques.iter().find(|t| t["id"] == id).unwrap();
    assert_eq!(
        by_id("AML.T0024.002")["rules"],
        serde_json::json!([
            "client-behaviour-anomaly",
            "extraction-confirmed",
            "model-extraction-sweep"
        ])
    );
    assert_eq!(by_id("AML.T0012")["status"], "covered");
    assert_eq!(
        by_id("AML.T0012")["rules"],
        serde_json::json!(["key-from-new-networks"])
    );
    // Prompts are not in inference logs: nothing can carry it honestly.
    assert_eq!(by_id("AML.T0051")["status"], "not_covered");
    assert_eq!(by_id("AML.T0015")["tactics"][1]["id"], "AML.TA0011");
    // Each rule's evidence is what its fixtures declare.
    for evidence in report["rules"].as_array().unwrap() {
        let rule = rules.iter().find(|r| r.id == evidence["id"]).unwrap();
        let firing = rule
            .tests
            .iter()
            .filter(|t| t.expect.iter().any(|e| e.state == "firing"))
            .count();
        let default = &evidence["naming"]["default"];
        assert_eq!(default["fixtures"], rule.tests.len(), "{}", rule.id);
        assert_eq!(default["firing_fixtures"], firing, "{}", rule.id);
        assert_eq!(
            default["result"],
            match (rule.tests.len(), firing) {
                (0, _) => "no fixture",
                (_, 0) => "no firing fixture",
                _ => "expects firing",
            },
            "{}",
            rule.id
        );
        let simulated = rule.tests.iter().filter(|t| t.simulate.is_some()).count();
        assert_eq!(
            evidence["naming"]["foreign"]["fixtures"], simulated,
            "{}",
            rule.id
        );
    }
    assert_eq!(by_id("AML.T0010.003")["status"], "covered");
    // With --run the fixtures are run, as `rules test` runs them.
    let ran: Value = serde_json::from_str(&run(&[
        "rules",
        "coverage",
        rule("canary-vs-baseline.yaml").to_str().unwrap(),
        "--format",
        "json",
        "--run",
    ]))
    .unwrap();
    assert_eq!(ran["evidence"], "run");
    for naming in ["default", "foreign"] {
        let mode = &ran["rules"][0]["naming"][naming];
        assert_eq!(
            (&mode["passed"], &mode["result"]),
            (&serde_json::json!(1), &serde_json::json!("fires")),
            "{naming}"
        );
    }
    assert_eq!(ran["techniques"][10]["status"], "covered");
}
