//! `inferwatch detect --correlations` with the real binary: correlations over
//! the default pack's alerts plus a side stream, over Sigma rules on the
//! inference events themselves, and the errors a user sees for a bad
//! reference or a bad side-stream line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{binary, nanos, parse_lines, rules_dir, run};
use inferwatch_core::format_timestamp;
use serde_json::{json, Value};

fn correlations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../correlations")
}

fn simulate(dir: &Path, scenario: &str, duration: &str, rate: &str) -> (PathBuf, Vec<Value>) {
    let events = dir.join("events.jsonl");
    let labels = dir.join("labels.jsonl");
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
        events.to_str().unwrap(),
        "--labels",
        labels.to_str().unwrap(),
    ]);
    let labels = parse_lines(&std::fs::read_to_string(labels).unwrap());
    (events, labels)
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn error_rate_alert_and_feature_store_errors_on_one_model_correlate_and_others_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let (events, labels) = simulate(dir.path(), "error-spike", "1h", "120");
    let start = nanos(labels[0]["start"].as_str().unwrap());
    let minute = 60_000_000_000;
    // Lookup errors for vision (the failing model) a minute into the spike;
    // fraud gets some too but has no alert; a healthcheck line matches no
    // selection; one line is not JSON at all.
    let mut lines = Vec::new();
    for (model, offset) in [("vision", 1), ("vision", 2), ("fraud", 1)] {
        lines.push(
            json!({"timestamp": format_timestamp(start + offset * minute), "level": "error",
                   "model": model, "message": "feature lookup timed out"})
            .to_string(),
        );
    }
    lines.push(
        json!({"timestamp": format_timestamp(start), "level": "info", "model": "vision",
               "message": "healthcheck ok"})
        .to_string(),
    );
    lines.push("{\"timestamp\": \"oops\"".to_string());
    let stream = dir.path().join("feature-store.jsonl");
    write_lines(&stream, &lines);
    let dead = dir.path().join("dead.jsonl");
    let output = run(&[
        "detect",
        "--quiet",
        "--rules",
        rules_dir().to_str().unwrap(),
        "--correlations",
        correlations_dir()
            .join("model-errors-with-feature-store.yaml")
            .to_str()
            .unwrap(),
        "--stream",
        &format!("feature_store={}", stream.display()),
        "--dead-letter",
        dead.to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let alerts = parse_lines(&output);
    let correlated: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule_id"] == "model-errors-with-feature-store-errors")
        .collect();
    assert_eq!(
        correlated.len(),
        1,
        "one correlation alert: {correlated:#?}"
    );
    let alert = correlated[0];
    assert_eq!(alert["group"], json!({"model_id": "vision"}));
    assert_eq!(alert["severity"], "high");
    assert_eq!(alert["state"], "firing");
    // It completes with whichever came second: the rule alert or the lookup error.
    let error_rate_fired = alerts
        .iter()
        .find(|a| a["rule_id"] == "error-rate" && a["group"]["model_id"] == "vision")
        .map(|a| nanos(a["starts_at"].as_str().unwrap()))
        .expect("the pack's error-rate alert on vision");
    let fired = nanos(alert["starts_at"].as_str().unwrap());
    assert_eq!(fired, error_rate_fired.max(start + minute));
    // The explanation lists both member rules' findings.
    let members: Vec<&str> = alert["explanation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["dimension"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["error-rate", "feature-store-error"]);
    // The broken line is a dead letter naming its file and line.
    let dead = parse_lines(&std::fs::read_to_string(&dead).unwrap());
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["line"], 5);
    assert_eq!(dead[0]["source"], stream.display().to_string());
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("stream 'feature_store': invalid JSON at column"),
        "{}",
        dead[0]["reason"]
    );
}

#[test]
fn auth_brute_force_then_inference_from_the_same_address_fires_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (events, _) = simulate(dir.path(), "baseline", "20m", "20");
    let inference = parse_lines(&std::fs::read_to_string(&events).unwrap());
    let start = nanos(inference[0]["timestamp"].as_str().unwrap());
    let minute = 60_000_000_000;
    // The address with the most successful calls between minutes 6 and 15.
    let mut calls: std::collections::BTreeMap<&str, usize> = Default::default();
    for event in &inference {
        let time = nanos(event["timestamp"].as_str().unwrap());
        if event["status"] == "ok" && time > start + 6 * minute && time < start + 15 * minute {
            *calls
                .entry(event["client_ip"].as_str().unwrap())
                .or_default() += 1;
        }
    }
    let (victim, _) = calls.iter().max_by_key(|(_, n)| **n).unwrap();
    let outsider = "203.0.113.77";
    assert!(!inference.iter().any(|e| e["client_ip"] == outsider));
    // Six failures from the victim's address at minutes 4..5, then its
    // inference calls; the outsider fails as often but never calls the model;
    // a third address fails only three times.
    let mut auth = Vec::new();
    for attempt in 0..6 {
        for (ip, attempts) in [(*victim, 6), (outsider, 6), ("198.51.100.9", 3)] {
            if attempt < attempts {
                auth.push(
                    json!({"timestamp": format_timestamp(start + 4 * minute + attempt * 10_000_000_000),
                           "src_ip": ip, "outcome": "failure", "method": "password"})
                    .to_string(),
                );
            }
        }
    }
    // Written out of time order: the stream is sorted on load.
    auth.reverse();
    let stream = dir.path().join("auth.jsonl");
    write_lines(&stream, &auth);
    let output = run(&[
        "detect",
        "--quiet",
        "--rules",
        rules_dir().to_str().unwrap(),
        "--correlations",
        correlations_dir()
            .join("auth-brute-force-then-inference.yaml")
            .to_str()
            .unwrap(),
        "--stream",
        &format!("auth={}", stream.display()),
        "--dead-letter",
        dir.path().join("dead.jsonl").to_str().unwrap(),
        events.to_str().unwrap(),
    ]);
    let alerts = parse_lines(&output);
    let brute_force: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule_id"] == "auth-brute-force")
        .collect();
    let mut brute_forced: Vec<&str> = brute_force
        .iter()
        .map(|a| a["group"]["src_ip"].as_str().unwrap())
        .collect();
    brute_forced.sort_unstable();
    let mut expected = vec![*victim, outsider];
    expected.sort_unstable();
    assert_eq!(brute_forced, expected, "{brute_force:#?}");
    let chained: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["rule_id"] == "brute-force-then-inference")
        .collect();
    assert_eq!(chained.len(), 1, "{chained:#?}");
    assert_eq!(chained[0]["group"], json!({"client": victim}));
    // The fifth failure completes the brute force; the inference call after it completes the chain.
    let fifth_failure = start + 4 * minute + 4 * 10_000_000_000;
    let fired = nanos(chained[0]["starts_at"].as_str().unwrap());
    let first_call_after = inference
        .iter()
        .filter(|e| e["client_ip"] == *victim && e["status"] == "ok")
        .map(|e| nanos(e["timestamp"].as_str().unwrap()))
        .filter(|t| *t >= fifth_failure)
        .min()
        .unwrap();
    assert_eq!(fired, first_call_after);
    assert_eq!(chained[0]["atlas"], json!(["AML.T0012", "AML.T0040"]));
}

#[test]
fn a_reference_to_an_unknown_rule_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("typo.yaml");
    std::fs::write(
        &rules,
        "title: Errors and drift\nname: errors-and-drift\ncorrelation:\n  type: temporal\n  rules:\n    - error-rate\n    - source-confidence-drfit\n  group-by: [model_id]\n  timespan: 5m\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["detect", "--quiet", "--rules"])
        .arg(rules_dir())
        .arg("--correlations")
        .arg(&rules)
        .arg("/dev/null")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:7:7: 'source-confidence-drfit' is not a Sigma rule or correlation",
            rules.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("'error-rate'"), "{stderr}");
}
