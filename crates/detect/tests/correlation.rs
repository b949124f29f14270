//! Correlation across streams (issue 5, part 4), driven by event time only:
//! the two examples end to end, `temporal_ordered` with late data,
//! absence, counts, arrival-order independence, and malformed rules.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Float64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use common::dictionary;
use inferwatch_core::{canonical_schema, column, format_timestamp, Alert, AlertState, Severity};
use inferwatch_detect::correlation::{
    CorrelationConfig, CorrelationEngine, CorrelationRules, Finding, Observed,
};
use inferwatch_detect::{DetectError, Engine, Rule};
use proptest::prelude::*;
use serde_json::json;

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * SECOND;
/// 2026-01-01T00:00:00Z
const START: i64 = 1_767_225_600 * SECOND;

fn at(offset: i64) -> String {
    format_timestamp(START + offset)
}

fn rules(yaml: &str) -> CorrelationRules {
    CorrelationRules::from_yaml_str(Path::new("inline.yaml"), yaml)
        .unwrap_or_else(|error| panic!("{error}"))
}

fn engine(yaml: &str) -> CorrelationEngine {
    CorrelationEngine::new(rules(yaml), CorrelationConfig::default())
        .unwrap_or_else(|error| panic!("{error}"))
}

fn case_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases/correlation")
        .join(name)
}

fn case_engine(name: &str) -> CorrelationEngine {
    let rules = CorrelationRules::from_path(&case_path(name)).unwrap_or_else(|e| panic!("{e}"));
    CorrelationEngine::new(rules, CorrelationConfig::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn finding(rule: &str, offset: i64, client: &str) -> Finding {
    Finding::new(rule, START + offset).with_field("client", client)
}

fn of_rule<'a>(alerts: &'a [Alert], rule_id: &str) -> Vec<&'a Alert> {
    alerts.iter().filter(|a| a.rule_id == rule_id).collect()
}

// ---------------------------------------------------------------------------
// The first example, end to end: an inferwatch rule raises the
// low-confidence alert from Arrow batches, a Sigma rule finds the
// feature-store error in raw JSON, and the temporal correlation joins them.

fn inference_batch(rows: &[(i64, &str, f64)]) -> RecordBatch {
    let schema = canonical_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                column::TIMESTAMP => Arc::new(
                    TimestampNanosecondArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())
                        .with_timezone("UTC"),
                ),
                column::STREAM => dictionary(rows.iter().map(|_| "inference").collect()),
                column::MODEL_ID => dictionary(rows.iter().map(|r| r.1).collect()),
                column::STATUS => dictionary(rows.iter().map(|_| "ok").collect()),
                column::CONFIDENCE => Arc::new(Float64Array::from(
                    rows.iter().map(|r| r.2).collect::<Vec<_>>(),
                )),
                _ => new_null_array(field.data_type(), rows.len()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

#[test]
fn low_confidence_spike_and_feature_store_error_on_the_same_model_within_5m() {
    let low_confidence = Rule::from_yaml_str(
        Path::new("low-confidence-spike.yaml"),
        "id: low-confidence-spike\ntitle: Low confidence\nseverity: medium\n\
         group_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: avg(confidence) < 0.5\n",
    )
    .unwrap();
    let mut base = Engine::new(vec![low_confidence], &canonical_schema()).unwrap();
    // Two models, one event every 10 s for 30 minutes; fraud's confidence
    // collapses from minute 20, recsys stays confident throughout.
    let mut rows = Vec::new();
    for step in 0..180 {
        let time = START + step * 10 * SECOND;
        let fraud_confidence = if step >= 120 { 0.2 } else { 0.9 };
        rows.push((time, "fraud", fraud_confidence));
        rows.push((time, "recsys", 0.9));
    }
    let mut base_alerts = base.observe(&inference_batch(&rows));
    base_alerts.extend(base.finish());
    let spike: Vec<&Alert> = base_alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(spike.len(), 1, "{base_alerts:#?}");
    assert_eq!(spike[0].group["model_id"], "fraud");
    let spike_time = inferwatch_core::parse_timestamp_text(&spike[0].starts_at).unwrap();

    let mut correlation = case_engine("model-confidence-and-feature-store.yaml");
    assert_eq!(
        correlation
            .external_rules()
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["low-confidence-spike"]
    );
    let feature_store = |offset: i64, model: &str, message: &str| {
        json!({"timestamp": format_timestamp(spike_time + offset), "level": "error",
               "model": model, "message": message})
    };
    let mut alerts = Vec::new();
    // Too early for fraud (6 min before the spike), the wrong model, and a
    // health-check message the Sigma rule filters out.
    for event in [
        feature_store(-6 * MINUTE, "fraud", "lookup timed out"),
        feature_store(-MINUTE, "recsys", "lookup timed out"),
        feature_store(-30 * SECOND, "fraud", "healthcheck lookup failed"),
    ] {
        correlation.observe_event("feature_store", &event).unwrap();
        alerts.extend(correlation.poll());
    }
    for alert in &base_alerts {
        correlation.observe_alert(alert);
    }
    // The one that counts: fraud, 3 minutes after the spike.
    let matched = correlation
        .observe_event(
            "feature_store",
            &feature_store(3 * MINUTE, "fraud", "lookup of user_age failed"),
        )
        .unwrap();
    assert_eq!(matched, 1);
    // The same event on another stream matches no rule.
    assert_eq!(
        correlation
            .observe_event(
                "gateway",
                &feature_store(3 * MINUTE, "fraud", "lookup failed")
            )
            .unwrap(),
        0
    );
    alerts.extend(correlation.poll());
    alerts.extend(correlation.flush());

    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule_id, "confidence-drop-with-feature-store-errors");
    assert_eq!(alert.state, AlertState::Firing);
    assert_eq!(alert.severity, Severity::High);
    assert_eq!(alert.group.len(), 1);
    assert_eq!(alert.group["model_id"], "fraud");
    assert_eq!(alert.starts_at, format_timestamp(spike_time + 3 * MINUTE));
    assert_eq!(alert.atlas, ["AML.T0015"]);
    let members: Vec<&str> = alert
        .explanation
        .iter()
        .map(|c| c.dimension.as_str())
        .collect();
    assert_eq!(members, ["low-confidence-spike", "feature-store-error"]);
    assert_eq!(alert.impact.events, 2);
    assert_eq!(alert.labels["correlation"], "temporal");
}

// ---------------------------------------------------------------------------
// The second example: auth failures, then successful inference from
// the same IP, across two raw streams that name the address differently.

fn auth(offset: i64, ip: &str, outcome: &str) -> serde_json::Value {
    json!({"timestamp": at(offset), "src_ip": ip, "outcome": outcome, "method": "password"})
}

fn inference(offset: i64, ip: &str, status: &str) -> serde_json::Value {
    json!({"timestamp": at(offset), "client_ip": ip, "status": status, "model_id": "chat"})
}

#[test]
fn auth_failures_then_successful_inference_from_the_same_ip() {
    let mut engine = case_engine("auth-brute-force-then-inference.yaml");
    let mut events: Vec<(&str, serde_json::Value)> = Vec::new();
    // 10.0.0.7: five failures in two minutes, then inference at minute 6 → fires.
    for step in 0..5 {
        events.push(("auth", auth(step * 30 * SECOND, "10.0.0.7", "failure")));
    }
    events.push(("inference", inference(6 * MINUTE, "10.0.0.7", "ok")));
    // 10.0.0.8: only four failures → no brute force, no alert.
    for step in 0..4 {
        events.push(("auth", auth(step * 30 * SECOND, "10.0.0.8", "failure")));
    }
    events.push(("inference", inference(7 * MINUTE, "10.0.0.8", "ok")));
    // 10.0.0.9: inference first, failures after → wrong order, no alert.
    events.push(("inference", inference(MINUTE, "10.0.0.9", "ok")));
    for step in 0..5 {
        events.push((
            "auth",
            auth(2 * MINUTE + step * SECOND, "10.0.0.9", "failure"),
        ));
    }
    // 10.0.0.10: five failures then only failed inference → no alert.
    for step in 0..5 {
        events.push(("auth", auth(step * SECOND, "10.0.0.10", "failure")));
    }
    events.push(("inference", inference(3 * MINUTE, "10.0.0.10", "error")));
    events.sort_by_key(|(_, event)| event["timestamp"].as_str().unwrap().to_string());

    let mut alerts = Vec::new();
    for (stream, event) in &events {
        engine.observe_event(stream, event).unwrap();
        alerts.extend(engine.poll());
    }
    alerts.extend(engine.flush());

    let chained = of_rule(&alerts, "brute-force-then-inference");
    assert_eq!(chained.len(), 1, "{alerts:#?}");
    assert_eq!(chained[0].group["client"], "10.0.0.7");
    assert_eq!(chained[0].starts_at, at(6 * MINUTE));
    assert_eq!(chained[0].atlas, ["AML.T0012", "AML.T0040"]);
    assert_eq!(chained[0].labels["correlation"], "temporal_ordered");
    let explained: Vec<(&str, &str)> = chained[0]
        .explanation
        .iter()
        .map(|c| (c.dimension.as_str(), c.value.as_str()))
        .collect();
    let brute_force_time = at(2 * MINUTE);
    let inference_time = at(6 * MINUTE);
    assert_eq!(
        explained,
        [
            (
                "auth-brute-force",
                format!("at {brute_force_time}").as_str()
            ),
            ("inference-ok", format!("at {inference_time}").as_str()),
        ]
    );
    // The intermediate event_count fired for every address with five failures.
    let brute_force: Vec<&str> = of_rule(&alerts, "auth-brute-force")
        .iter()
        .map(|a| a.group["src_ip"].as_str())
        .collect();
    assert_eq!(brute_force, ["10.0.0.10", "10.0.0.7", "10.0.0.9"]);
    assert_eq!(alerts.len(), 4);
}

// ---------------------------------------------------------------------------
// temporal_ordered and late data.

const ORDERED: &str = "
title: Failure then success from one client
name: failure-then-success
correlation:
  type: temporal_ordered
  rules: [failure, success]
  group-by: [client]
  timespan: 5m
";

#[test]
fn an_earlier_event_arriving_late_completes_the_sequence_once_at_the_right_time() {
    let mut engine = engine(ORDERED);
    // The later event arrives first; the earlier one is 10 s late (lateness is 30 s).
    assert_eq!(
        engine.observe_finding(finding("success", 100 * SECOND, "a")),
        Observed::Buffered
    );
    assert!(engine.poll().is_empty());
    assert_eq!(
        engine.observe_finding(finding("failure", 90 * SECOND, "a")),
        Observed::Buffered
    );
    assert!(engine.poll().is_empty(), "watermark is still at 70 s");
    // Not before the completing finding is settled...
    assert!(engine.advance_watermark(START + 100 * SECOND).is_empty());
    // ...and exactly once after.
    let alerts = engine.advance_watermark(START + 100 * SECOND + 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].starts_at, at(100 * SECOND));
    assert_eq!(alerts[0].group["client"], "a");
    assert!(engine.flush().is_empty());
    assert!(engine.advance_watermark(START + MINUTE * 60).is_empty());
}

#[test]
fn arrival_order_does_not_make_an_out_of_order_sequence_fire() {
    let mut engine = engine(ORDERED);
    // Arrival says failure then success, event time says success first.
    engine.observe_finding(finding("failure", 100 * SECOND, "a"));
    engine.observe_finding(finding("success", 95 * SECOND, "a"));
    assert!(engine.flush().is_empty());
    assert!(engine.advance_watermark(START + MINUTE * 60).is_empty());
}

#[test]
fn a_sequence_wider_than_the_timespan_does_not_fire_and_the_edge_is_inclusive() {
    let mut engine = engine(ORDERED);
    engine.observe_finding(finding("failure", 0, "a"));
    engine.observe_finding(finding("failure", 0, "b"));
    engine.observe_finding(finding("success", 5 * MINUTE, "b"));
    engine.observe_finding(finding("success", 5 * MINUTE + SECOND, "a"));
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["client"], "b");
}

#[test]
fn a_finding_later_than_the_allowed_lateness_is_dropped_and_counted() {
    let mut engine = engine(ORDERED);
    engine.observe_finding(finding("success", 100 * SECOND, "a"));
    // Time moves on to 140 s: the watermark is now 110 s.
    assert_eq!(
        engine.observe_finding(Finding::new("heartbeat", START + 140 * SECOND)),
        Observed::Unused
    );
    assert_eq!(engine.watermark(), START + 110 * SECOND);
    assert_eq!(
        engine.observe_finding(finding("failure", 95 * SECOND, "a")),
        Observed::Late
    );
    assert_eq!(engine.late_dropped(), 1);
    assert!(engine.flush().is_empty());
}

#[test]
fn allowed_lateness_is_configurable() {
    let config = CorrelationConfig {
        allowed_lateness: 2 * MINUTE,
        ..CorrelationConfig::default()
    };
    let mut engine = CorrelationEngine::new(rules(ORDERED), config).unwrap();
    engine.observe_finding(finding("success", 100 * SECOND, "a"));
    engine.observe_finding(Finding::new("heartbeat", START + 140 * SECOND));
    // 45 s behind the newest event: too late at 30 s, fine at 2 min.
    assert_eq!(
        engine.observe_finding(finding("failure", 95 * SECOND, "a")),
        Observed::Buffered
    );
    assert_eq!(engine.flush().len(), 1);
}

#[test]
fn a_completed_sequence_resets_so_one_episode_raises_one_alert() {
    let mut engine = engine(ORDERED);
    engine.observe_finding(finding("failure", 0, "a"));
    engine.observe_finding(finding("success", 10 * SECOND, "a"));
    engine.observe_finding(finding("success", 20 * SECOND, "a"));
    engine.observe_finding(finding("failure", 30 * SECOND, "a"));
    engine.observe_finding(finding("success", 40 * SECOND, "a"));
    let times: Vec<String> = engine.flush().into_iter().map(|a| a.starts_at).collect();
    assert_eq!(times, [at(10 * SECOND), at(40 * SECOND)]);
}

#[test]
fn three_step_sequences_use_the_latest_start() {
    let mut engine = engine(
        "
title: Probe, failures, success
name: probe-chain
correlation:
  type: temporal_ordered
  rules: [probe, failure, success]
  group-by: [client]
  timespan: 5m
",
    );
    // The first probe is too early to finish within 5 min; the second one is not.
    engine.observe_finding(finding("probe", 0, "a"));
    engine.observe_finding(finding("failure", MINUTE, "a"));
    engine.observe_finding(finding("probe", 2 * MINUTE, "a"));
    engine.observe_finding(finding("failure", 3 * MINUTE, "a"));
    engine.observe_finding(finding("success", 6 * MINUTE, "a"));
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let values: Vec<&str> = alerts[0]
        .explanation
        .iter()
        .map(|c| c.value.as_str())
        .collect();
    let expected = [
        format!("at {}", at(2 * MINUTE)),
        format!("at {}", at(3 * MINUTE)),
        format!("at {}", at(6 * MINUTE)),
    ];
    assert_eq!(values, expected);
}

// ---------------------------------------------------------------------------
// Absence.

const ABSENCE: &str = "
title: Rollout without a health check
name: unchecked-rollout
correlation:
  type: absence
  rules: [rollout]
  expected: [health-ok]
  group-by: [model_id]
  timespan: 10m
";

fn model_finding(rule: &str, offset: i64, model: &str) -> Finding {
    Finding::new(rule, START + offset).with_field("model_id", model)
}

#[test]
fn absence_fires_once_the_watermark_passes_the_deadline() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("rollout", 0, "fraud"));
    // Time passes (30 s lateness): at 10 min + 20 s the watermark is short of the deadline.
    engine.observe_finding(Finding::new("heartbeat", START + 10 * MINUTE + 20 * SECOND));
    assert!(engine.poll().is_empty());
    assert!(engine.advance_watermark(START + 10 * MINUTE).is_empty());
    let alerts = engine.advance_watermark(START + 10 * MINUTE + 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule_id, "unchecked-rollout");
    assert_eq!(alert.starts_at, at(10 * MINUTE));
    assert_eq!(alert.group["model_id"], "fraud");
    assert_eq!(alert.labels["correlation"], "absence");
    assert_eq!(alert.explanation.len(), 2);
    assert_eq!(alert.explanation[0].dimension, "rollout");
    assert_eq!(alert.explanation[0].value, format!("at {}", at(0)));
    assert_eq!(alert.explanation[1].dimension, "health-ok");
    assert_eq!(alert.explanation[1].lift, 0.0);
    assert!(engine.advance_watermark(START + 60 * MINUTE).is_empty());
}

#[test]
fn absence_is_silent_when_the_expected_event_follows() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("rollout", 0, "fraud"));
    engine.observe_finding(model_finding("health-ok", 9 * MINUTE, "fraud"));
    // The deadline itself still counts.
    engine.observe_finding(model_finding("rollout", MINUTE, "recsys"));
    engine.observe_finding(model_finding("health-ok", 11 * MINUTE, "recsys"));
    assert!(engine.advance_watermark(START + 60 * MINUTE).is_empty());
}

#[test]
fn absence_is_silent_when_the_expected_event_arrives_late_but_within_lateness() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("rollout", 0, "fraud"));
    // Other traffic has reached 10 min 20 s before the health check from
    // 9 min 55 s shows up: 25 s late, inside the 30 s lateness.
    engine.observe_finding(Finding::new("heartbeat", START + 10 * MINUTE + 20 * SECOND));
    assert!(engine.poll().is_empty());
    assert_eq!(
        engine.observe_finding(model_finding(
            "health-ok",
            9 * MINUTE + 55 * SECOND,
            "fraud"
        )),
        Observed::Buffered
    );
    engine.observe_finding(Finding::new("heartbeat", START + 11 * MINUTE));
    assert!(engine.poll().is_empty());
    assert!(engine.advance_watermark(START + 60 * MINUTE).is_empty());
}

#[test]
fn absence_needs_the_expected_event_after_the_trigger_and_for_the_same_group() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("health-ok", 0, "fraud"));
    engine.observe_finding(model_finding("rollout", MINUTE, "fraud"));
    engine.observe_finding(model_finding("health-ok", 2 * MINUTE, "recsys"));
    let alerts = engine.advance_watermark(START + 60 * MINUTE);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].starts_at, at(11 * MINUTE));
}

#[test]
fn absence_triggers_during_a_wait_join_it() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("rollout", 0, "fraud"));
    engine.observe_finding(model_finding("rollout", 2 * MINUTE, "fraud"));
    let alerts = engine.advance_watermark(START + 60 * MINUTE);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].impact.events, 2);
    assert_eq!(alerts[0].explanation[0].lift, 2.0);
}

#[test]
fn flush_does_not_invent_absences_the_input_never_covered() {
    let mut engine = engine(ABSENCE);
    engine.observe_finding(model_finding("rollout", 0, "fraud"));
    engine.observe_finding(Finding::new("heartbeat", START + 5 * MINUTE));
    assert!(
        engine.flush().is_empty(),
        "only 5 of the 10 minutes were seen"
    );
}

#[test]
fn absence_on_raw_events_from_the_example_file() {
    let mut engine = case_engine("canary-without-health-check.yaml");
    let deploy = |offset: i64, model: &str, action: &str| {
        json!({"time": (START + offset) / 1_000_000, "model_id": model, "action": action,
               "ab_group": "canary", "result": "pass"})
    };
    let mut alerts = Vec::new();
    for event in [
        deploy(0, "fraud", "rollout"),
        deploy(0, "recsys", "rollout"),
        deploy(4 * MINUTE, "recsys", "healthcheck"),
        deploy(15 * MINUTE, "vision", "noop"),
    ] {
        engine.observe_event("deploy", &event).unwrap();
        alerts.extend(engine.poll());
    }
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["model_id"], "fraud");
    assert_eq!(alerts[0].starts_at, at(10 * MINUTE));
}

// ---------------------------------------------------------------------------
// event_count and value_count.

#[test]
fn event_count_fires_at_the_threshold_within_a_sliding_window_per_group() {
    let mut engine = engine(
        "
title: Many failures
name: many-failures
correlation:
  type: event_count
  rules: [failure]
  group-by: [client]
  timespan: 5m
  condition: {gte: 5}
",
    );
    // Client a: four in the first three minutes, then the window slides past
    // the first before the fifth arrives, so it takes a sixth.
    for offset in [0, MINUTE, 2 * MINUTE, 3 * MINUTE] {
        engine.observe_finding(finding("failure", offset, "a"));
    }
    engine.observe_finding(finding("failure", 5 * MINUTE + 30 * SECOND, "a"));
    engine.observe_finding(finding("failure", 5 * MINUTE + 40 * SECOND, "a"));
    // Client b: four only.
    for offset in [0, SECOND, 2 * SECOND, 3 * SECOND] {
        engine.observe_finding(finding("failure", offset, "b"));
    }
    // A finding without the group-by field is skipped.
    engine.observe_finding(Finding::new("failure", START + 6 * MINUTE));
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["client"], "a");
    assert_eq!(alerts[0].starts_at, at(5 * MINUTE + 40 * SECOND));
    assert_eq!(alerts[0].value, Some(5.0));
    assert_eq!(alerts[0].threshold, Some(5.0));
    assert_eq!(alerts[0].impact.events, 5);
    assert_eq!(
        alerts[0].explanation[0].value,
        format!(
            "5 findings from {} to {}",
            at(MINUTE),
            at(5 * MINUTE + 40 * SECOND)
        )
    );
    let state = &engine.observable_state()[0];
    assert_eq!(state.counters.missing_fields, 1);
    assert_eq!(state.counters.matches, 1);
    assert_eq!(state.counters.buffered, 0);
}

#[test]
fn event_count_below_a_threshold_is_judged_when_the_window_closes() {
    let mut engine = engine(
        "
title: Too few heartbeats
name: sparse-heartbeats
correlation:
  type: event_count
  rules: [heartbeat]
  group-by: [client]
  timespan: 5m
  condition: {lt: 3}
",
    );
    for offset in [0, MINUTE] {
        engine.observe_finding(finding("heartbeat", offset, "a"));
    }
    for offset in [0, MINUTE, 2 * MINUTE] {
        engine.observe_finding(finding("heartbeat", offset, "b"));
    }
    assert!(engine.advance_watermark(START + 5 * MINUTE).is_empty());
    let alerts = engine.advance_watermark(START + 5 * MINUTE + 1);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["client"], "a");
    assert_eq!(alerts[0].starts_at, at(5 * MINUTE));
    assert_eq!(alerts[0].value, Some(2.0));
}

#[test]
fn value_count_counts_distinct_values_per_group_on_raw_gateway_events() {
    let mut engine = case_engine("api-key-from-many-ips.yaml");
    let request = |offset: i64, key: &str, ip: &str, path: &str| json!({"timestamp": at(offset), "api_key": key, "client_ip": ip, "path": path});
    let mut events = Vec::new();
    // k1: four addresses (one repeated) within 3 minutes → fires at the fourth distinct.
    for (step, ip) in ["1.1.1.1", "1.1.1.2", "1.1.1.1", "1.1.1.3", "1.1.1.4"]
        .iter()
        .enumerate()
    {
        events.push(request(step as i64 * 45 * SECOND, "k1", ip, "/v1/predict"));
    }
    // k2: ten calls from one address, and three more addresses on a path the rule ignores.
    for step in 0..10 {
        events.push(request(step * 10 * SECOND, "k2", "2.2.2.2", "/v1/predict"));
    }
    for ip in ["2.2.2.3", "2.2.2.4", "2.2.2.5"] {
        events.push(request(MINUTE, "k2", ip, "/health"));
    }
    events.sort_by_key(|event| event["timestamp"].as_str().unwrap().to_string());
    let mut alerts = Vec::new();
    for event in &events {
        engine.observe_event("gateway", event).unwrap();
        alerts.extend(engine.poll());
    }
    alerts.extend(engine.flush());
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert.rule_id, "api-key-many-ips");
    assert_eq!(alert.group["api_key"], "k1");
    assert_eq!(alert.starts_at, at(4 * 45 * SECOND));
    assert_eq!(alert.value, Some(4.0));
    assert_eq!(alert.atlas, ["AML.T0012"]);
    let distinct = alert
        .explanation
        .iter()
        .find(|c| c.dimension == "client_ip")
        .unwrap();
    assert_eq!(distinct.value, "1.1.1.1, 1.1.1.2, 1.1.1.3, 1.1.1.4");
}

#[test]
fn generate_true_also_raises_the_sigma_rule_alerts() {
    let mut engine = engine(
        "
title: Auth failure
name: auth-failure
level: low
logsource: {service: auth}
detection:
  selection:
    outcome|endswith: fail
  condition: selection
---
title: Many failures
name: many-failures
generate: true
correlation:
  type: event_count
  rules: [auth-failure]
  group-by: [user]
  timespan: 5m
  condition: {gte: 2}
",
    );
    for (offset, outcome) in [(0, "hard-fail"), (SECOND, "ok"), (2 * SECOND, "soft-fail")] {
        engine
            .observe_event(
                "auth",
                &json!({"timestamp": at(offset), "user": "ann", "outcome": outcome}),
            )
            .unwrap();
    }
    let alerts = engine.flush();
    let summary: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| (a.rule_id.as_str(), a.starts_at.as_str()))
        .collect();
    let first = at(0);
    let third = at(2 * SECOND);
    assert_eq!(
        summary,
        [
            ("auth-failure", first.as_str()),
            ("many-failures", third.as_str()),
            ("auth-failure", third.as_str()),
        ]
    );
    assert_eq!(alerts[0].severity, Severity::Low);
    assert_eq!(alerts[0].group["user"], "ann");
}

#[test]
fn raw_events_need_an_object_and_a_readable_time_when_a_rule_matches() {
    let mut engine = case_engine("auth-brute-force-then-inference.yaml");
    let error = engine
        .observe_event(
            "auth",
            &json!({"src_ip": "1.2.3.4", "outcome": "failure", "method": "password"}),
        )
        .unwrap_err();
    assert!(matches!(error, DetectError::Event { .. }), "{error}");
    assert!(error.to_string().contains("no event time"), "{error}");
    let error = engine
        .observe_event(
            "auth",
            &json!({"timestamp": "last tuesday", "outcome": "failure", "method": "api_key"}),
        )
        .unwrap_err();
    assert!(
        error.to_string().contains("unreadable timestamp"),
        "{error}"
    );
    assert!(engine.observe_event("auth", &json!([1, 2])).is_err());
    // No rule matches: no time needed.
    assert_eq!(
        engine
            .observe_event("auth", &json!({"outcome": "success"}))
            .unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------
// Results do not depend on arrival order within the lateness, nor on how
// often the watermark is advanced.

const MIXED: &str = "
title: Failure then success from one client
name: failure-then-success
correlation:
  type: temporal_ordered
  rules: [failure, success]
  group-by: [client]
  timespan: 2m
---
title: Success without a follow-up audit
name: unaudited-success
correlation:
  type: absence
  rules: [success]
  expected: [audit]
  group-by: [client]
  timespan: 90s
---
title: Repeated failures
name: repeated-failures
correlation:
  type: event_count
  rules: [failure]
  group-by: [client]
  timespan: 1m
  condition: {gte: 3}
---
title: Repeated failures, then an audit
name: failures-then-audit
correlation:
  type: temporal_ordered
  rules: [repeated-failures, audit]
  group-by: [client]
  timespan: 3m
---
title: Failure and audit in any order
name: failure-and-audit
correlation:
  type: temporal
  rules: [failure, audit]
  group-by: [client]
  timespan: 30s
";

fn run(findings: &[Finding], poll_after: &[bool]) -> Vec<Alert> {
    let mut engine = engine(MIXED);
    let mut alerts = Vec::new();
    for (finding, poll) in findings.iter().zip(poll_after) {
        assert_eq!(engine.observe_finding(finding.clone()), Observed::Buffered);
        if *poll {
            alerts.extend(engine.poll());
        }
    }
    alerts.extend(engine.flush());
    assert_eq!(engine.late_dropped(), 0);
    alerts
}

fn arbitrary_findings() -> impl Strategy<Value = Vec<(i64, usize, usize, i64, bool)>> {
    // (time in seconds, rule, client, arrival delay in seconds ≤ lateness, poll after)
    prop::collection::vec(
        (0i64..900, 0usize..3, 0usize..3, 0i64..=30, any::<bool>()),
        1..80,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn shuffling_within_the_lateness_gives_the_same_alerts(rows in arbitrary_findings()) {
        let rules = ["failure", "success", "audit"];
        let clients = ["a", "b", "c"];
        let findings: Vec<(Finding, i64, bool)> = rows
            .iter()
            .map(|(time, rule, client, delay, poll)| {
                (finding(rules[*rule], time * SECOND, clients[*client]), (time + delay) * SECOND, *poll)
            })
            .collect();
        // In event-time order, polling after every finding.
        let mut in_order: Vec<&(Finding, i64, bool)> = findings.iter().collect();
        in_order.sort_by_key(|(finding, _, _)| finding.time);
        let in_order_findings: Vec<Finding> = in_order.iter().map(|(f, _, _)| f.clone()).collect();
        let expected = run(&in_order_findings, &vec![true; in_order_findings.len()]);
        // Arriving by time + a delay of at most the lateness, polled at random points.
        let mut shuffled: Vec<&(Finding, i64, bool)> = findings.iter().collect();
        shuffled.sort_by_key(|(_, arrival, _)| *arrival);
        let shuffled_findings: Vec<Finding> = shuffled.iter().map(|(f, _, _)| f.clone()).collect();
        let polls: Vec<bool> = shuffled.iter().map(|(_, _, poll)| *poll).collect();
        let actual = run(&shuffled_findings, &polls);
        prop_assert_eq!(actual, expected);
    }
}

// ---------------------------------------------------------------------------
// Malformed rules: errors name the file, line and column.

fn error_of(yaml: &str) -> (usize, usize, String) {
    let result = CorrelationRules::from_yaml_str(Path::new("bad.yaml"), yaml)
        .and_then(|rules| CorrelationEngine::new(rules, CorrelationConfig::default()));
    match result {
        Err(DetectError::Rule {
            line,
            column,
            message,
            path,
            ..
        }) => {
            assert_eq!(path, Path::new("bad.yaml"));
            (line, column, message)
        }
        Err(other) => panic!("expected a positioned rule error, got {other}"),
        Ok(_) => panic!("expected an error for:\n{yaml}"),
    }
}

const SIGMA_RULE: &str = "title: Auth failure
name: auth-failure
logsource: {service: auth}
detection:
  selection:
    outcome: failure
  condition: selection
";

#[test]
fn an_unknown_correlation_type_is_located() {
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: event_sum\n  rules: [a]\n  timespan: 5m\n",
    );
    assert_eq!((line, column), (4, 9), "{message}");
    assert!(message.contains("unknown correlation type"), "{message}");
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: value_sum\n  rules: [a]\n  timespan: 5m\n",
    );
    assert_eq!((line, column), (4, 9));
    assert!(
        message.contains("unsupported correlation type 'value_sum'"),
        "{message}"
    );
}

#[test]
fn a_missing_or_bad_timespan_is_located() {
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  group-by: [client]\n",
    );
    assert_eq!((line, column), (3, 1), "{message}");
    assert!(message.contains("missing 'timespan'"), "{message}");
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  timespan: soon\n",
    );
    assert_eq!((line, column), (6, 13), "{message}");
}

#[test]
fn an_unsupported_sigma_modifier_is_located_at_the_modifier() {
    let yaml = SIGMA_RULE.replace("outcome: failure", "outcome|containz: fail");
    let (line, column, message) = error_of(&yaml);
    assert_eq!((line, column), (6, 13), "{message}");
    assert!(
        message.contains("unsupported Sigma modifier 'containz'"),
        "{message}"
    );
    let yaml = SIGMA_RULE.replace("outcome: failure", "outcome|expand: '%reasons%'");
    let (line, column, message) = error_of(&yaml);
    assert_eq!((line, column), (6, 13), "{message}");
    assert!(message.contains("expand"), "{message}");
}

#[test]
fn other_malformed_rules_are_located() {
    // A broken Sigma condition, at the condition.
    let yaml = SIGMA_RULE.replace("condition: selection", "condition: selection and and");
    let (line, column, message) = error_of(&yaml);
    assert_eq!(line, 7, "{message}");
    assert!(column >= 14, "{column}: {message}");
    // An unknown key in the correlation block.
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  timespan: 5m\n  window: tumbling\n",
    );
    assert_eq!((line, column), (7, 3), "{message}");
    // A condition on a temporal type, which this engine would ignore.
    let (line, _, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  timespan: 5m\n  condition: {gte: 2}\n",
    );
    assert_eq!(line, 7, "{message}");
    // value_count without a field.
    let (line, _, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: value_count\n  rules: [a]\n  timespan: 5m\n  condition:\n    gte: 2\n",
    );
    assert_eq!(line, 7, "{message}");
    assert!(message.contains("'field'"), "{message}");
    // An alias for a rule the correlation does not use.
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [a, b]\n  group-by: [ip]\n  aliases:\n    ip: {c: src_ip}\n  timespan: 5m\n",
    );
    assert_eq!((line, column), (8, 10), "{message}");
    // Absence without `expected`.
    let (line, _, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: absence\n  rules: [a]\n  timespan: 5m\n",
    );
    assert_eq!(line, 3, "{message}");
    assert!(message.contains("expected"), "{message}");
    // Correlations that consume each other.
    let (line, column, message) = error_of(
        "title: X\nname: x\ncorrelation:\n  type: temporal\n  rules: [y, a]\n  timespan: 5m\n---\ntitle: Y\nname: y\ncorrelation:\n  type: temporal\n  rules: [x, b]\n  timespan: 5m\n",
    );
    assert!(
        (line, column) == (5, 11) || (line, column) == (12, 11),
        "{line}:{column} {message}"
    );
    assert!(message.contains("cycle"), "{message}");
    // The display form leads with file:line:column.
    let error = CorrelationRules::from_yaml_str(
        Path::new("rules/bad.yaml"),
        "title: X\nname: x\ncorrelation:\n  type: sometimes\n  rules: [a]\n  timespan: 5m\n",
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("rules/bad.yaml:4:9: unknown correlation type"),
        "{error}"
    );
}

#[test]
fn every_example_rule_file_loads() {
    let (rules, errors) = CorrelationRules::load_dir(&case_path(""));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(rules.correlations.len(), 5);
    assert_eq!(rules.detection_rules.len(), 6);
    CorrelationEngine::new(rules, CorrelationConfig::default()).unwrap();
}

#[test]
fn every_correlation_of_the_shuffle_property_fires_on_a_plain_input() {
    // So that the property above compares real alerts, not empty lists.
    let findings = [
        finding("failure", 0, "a"),
        finding("failure", 10 * SECOND, "a"),
        finding("audit", 20 * SECOND, "a"),
        finding("failure", 25 * SECOND, "a"),
        finding("success", 40 * SECOND, "a"),
        finding("audit", 60 * SECOND, "a"),
        finding("success", 200 * SECOND, "b"),
        finding("audit", 400 * SECOND, "b"),
    ];
    let alerts = run(&findings, &[true; 8]);
    let mut fired: Vec<&str> = alerts.iter().map(|a| a.rule_id.as_str()).collect();
    fired.sort();
    fired.dedup();
    assert_eq!(
        fired,
        [
            "failure-and-audit",
            "failure-then-success",
            "failures-then-audit",
            "repeated-failures",
            "unaudited-success"
        ],
        "{alerts:#?}"
    );
}

const MANY_FAILURES: &str = "
title: Many failures
name: many-failures
correlation:
  type: event_count
  rules: [failure]
  group-by: [client]
  timespan: 1m
  condition: {gte: 2}
";

#[test]
fn identical_findings_each_count() {
    let mut engine = engine(MANY_FAILURES);
    engine.observe_finding(finding("failure", 0, "a"));
    engine.observe_finding(finding("failure", 0, "a"));
    assert_eq!(engine.flush().len(), 1);
}

#[test]
fn idle_groups_are_forgotten_so_state_stays_bounded() {
    let mut engine = engine(MANY_FAILURES);
    for client in 0..3_000 {
        engine.observe_finding(finding("failure", 0, &format!("c{client}")));
    }
    assert!(engine.poll().is_empty());
    assert_eq!(engine.observable_state()[0].counters.buffered, 3_000);
    // Later traffic from other clients: the first ones' findings fall out of the timespan.
    for client in 0..3_000 {
        engine.observe_finding(finding("failure", 10 * MINUTE, &format!("d{client}")));
    }
    engine.flush();
    let counters = &engine.observable_state()[0].counters;
    assert_eq!(counters.buffered, 0);
    assert!(counters.groups <= 3_000, "{counters:?}");
    // Again, and the later ones go too.
    engine.observe_finding(finding("failure", 60 * MINUTE, "e"));
    for step in 0..3_000 {
        engine.observe_finding(finding("failure", 60 * MINUTE + step, "f"));
    }
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1_500, "f fires every second finding");
    let counters = &engine.observable_state()[0].counters;
    assert!(counters.groups <= 2, "{counters:?}");
}

#[test]
fn group_fields_may_be_nested_in_raw_events() {
    let mut engine = engine(
        "
title: Denied call
name: denied
logsource: {service: gateway}
detection:
  selection:
    response.status: 403
  condition: selection
---
title: Many denied calls per caller
name: many-denied
correlation:
  type: event_count
  rules: [denied]
  group-by: [caller.ip]
  timespan: 1m
  condition: {gte: 2}
",
    );
    for offset in [0, SECOND] {
        engine
            .observe_event(
                "gateway",
                &json!({"timestamp": at(offset), "caller": {"ip": "9.9.9.9"}, "response": {"status": 403}}),
            )
            .unwrap();
    }
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["caller.ip"], "9.9.9.9");
}

#[test]
fn only_firing_alerts_are_findings() {
    let mut engine = engine(ORDERED);
    let alert = |state: AlertState, rule: &str, offset: i64| Alert {
        alert_id: String::new(),
        fingerprint: String::new(),
        rule_id: rule.into(),
        title: String::new(),
        severity: Severity::Low,
        state,
        starts_at: at(offset),
        ends_at: None,
        group: [("client".to_string(), "a".to_string())].into(),
        value: None,
        threshold: None,
        condition: String::new(),
        atlas: vec!["AML.T0029".into()],
        impact: Default::default(),
        summary: String::new(),
        explanation: Vec::new(),
        labels: Default::default(),
        evidence: None,
    };
    assert_eq!(
        engine.observe_alert(&alert(AlertState::Resolved, "failure", 0)),
        Observed::Unused
    );
    assert_eq!(
        engine.observe_alert(&alert(AlertState::Pending, "failure", 0)),
        Observed::Unused
    );
    assert!(engine.flush().is_empty());
    engine.observe_alert(&alert(AlertState::Firing, "failure", MINUTE));
    engine.observe_alert(&alert(AlertState::Firing, "success", 2 * MINUTE));
    let alerts = engine.flush();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].atlas, ["AML.T0029"]);
    assert_eq!(alerts[0].fingerprint.len(), 16);
    assert_ne!(alerts[0].alert_id, alerts[0].fingerprint);
}

#[test]
fn sigma_detection_rules_get_rsigma_modifiers_and_conditions() {
    let mut engine = engine(
        "
title: Inference call from the internal network
name: internal-inference
logsource: {service: gateway}
detection:
  selection_chat:
    path|re: '^/v1/(chat|embed)'
  selection_models:
    model|startswith:
      - fraud-
      - risk-
  network:
    client_ip|cidr: 10.0.0.0/8
  probe:
    user_agent|contains|all:
      - health
      - probe
  condition: 1 of selection_* and network and not probe
---
title: Internal calls
name: internal-calls
correlation:
  type: event_count
  rules: [internal-inference]
  group-by: [client_ip]
  timespan: 1h
  condition: {gte: 1}
",
    );
    let call = |offset: i64, path: &str, model: &str, ip: &str, agent: &str| json!({"timestamp": at(offset), "path": path, "model": model, "client_ip": ip, "user_agent": agent});
    let events = [
        call(0, "/v1/chat", "llm", "10.1.2.3", "curl"), // selection_chat
        call(1, "/v2/score", "fraud-v3", "10.1.2.4", "curl"), // selection_models
        call(2, "/v1/chat", "llm", "192.168.0.1", "curl"), // outside 10/8
        call(3, "/v1/embed", "llm", "10.1.2.5", "health-probe"), // probe filtered out
        call(4, "/v1/embed", "llm", "10.1.2.6", "health-check"), // `all`: only one word
        call(5, "/v2/score", "llm", "10.1.2.7", "curl"), // no selection
    ];
    let matched: Vec<usize> = events
        .iter()
        .map(|event| engine.observe_event("gateway", event).unwrap())
        .collect();
    assert_eq!(matched, [1, 1, 0, 0, 1, 0]);
    let mut clients: Vec<String> = engine
        .flush()
        .into_iter()
        .map(|a| a.group["client_ip"].clone())
        .collect();
    clients.sort();
    assert_eq!(clients, ["10.1.2.3", "10.1.2.4", "10.1.2.6"]);
}

#[test]
fn sigma_v1_aggregations_in_a_condition_are_refused() {
    let yaml = SIGMA_RULE.replace(
        "condition: selection",
        "condition: selection | count() by src_ip > 5",
    );
    let (line, _, message) = error_of(&yaml);
    assert_eq!(line, 7, "{message}");
}
