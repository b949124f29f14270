//! Behaviour of the window engine on hand-built batches: lifecycle, segments,
//! lateness, and independence from batching and in-lateness shuffling.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{
    new_null_array, ArrayRef, Float64Array, StringDictionaryBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::Int32Type;
use arrow::record_batch::RecordBatch;
use inferwatch_core::{canonical_schema, column, Alert, AlertState};
use inferwatch_detect::{Engine, Rule};
use proptest::prelude::*;

const MINUTE: i64 = 60_000_000_000;
const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_767_225_600 * SECOND;

#[derive(Clone, Debug)]
struct Event {
    timestamp: i64,
    model_id: &'static str,
    ab_group: &'static str,
    status: &'static str,
    latency_ms: f64,
}

fn batch(events: &[Event]) -> RecordBatch {
    let schema = canonical_schema();
    let dictionary = |values: Vec<&str>| -> ArrayRef {
        let mut builder = StringDictionaryBuilder::<Int32Type>::new();
        values.into_iter().for_each(|v| builder.append_value(v));
        Arc::new(builder.finish())
    };
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| -> ArrayRef {
            match field.name().as_str() {
                column::TIMESTAMP => Arc::new(
                    TimestampNanosecondArray::from(
                        events.iter().map(|e| e.timestamp).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                column::STREAM => dictionary(events.iter().map(|_| "inference").collect()),
                column::MODEL_ID => dictionary(events.iter().map(|e| e.model_id).collect()),
                column::AB_GROUP => dictionary(events.iter().map(|e| e.ab_group).collect()),
                column::STATUS => dictionary(events.iter().map(|e| e.status).collect()),
                column::LATENCY_MS => Arc::new(Float64Array::from(
                    events.iter().map(|e| e.latency_ms).collect::<Vec<_>>(),
                )),
                _ => new_null_array(field.data_type(), events.len()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn rule(yaml: &str) -> Rule {
    Rule::from_yaml_str(Path::new("test.yaml"), yaml).unwrap()
}

fn run(rules: Vec<Rule>, events: &[Event], batch_sizes: &[usize]) -> Vec<Alert> {
    let mut engine = Engine::new(rules, &canonical_schema()).unwrap();
    let mut alerts = Vec::new();
    let mut position = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while position < events.len() {
        let size = (*sizes.next().unwrap()).max(1).min(events.len() - position);
        alerts.extend(engine.observe(&batch(&events[position..position + size])));
        position += size;
    }
    alerts.extend(engine.finish());
    alerts
}

/// Two events per second for `minutes`, with latency from `latency(minute)`.
fn traffic(
    minutes: i64,
    model: &'static str,
    ab_group: &'static str,
    latency: impl Fn(i64) -> f64,
    error_every: usize,
) -> Vec<Event> {
    (0..minutes * 120)
        .map(|i| Event {
            timestamp: START + i * SECOND / 2,
            model_id: model,
            ab_group,
            status: if error_every > 0 && (i as usize).is_multiple_of(error_every) {
                "error"
            } else {
                "ok"
            },
            latency_ms: latency(i / 120) + (i % 7) as f64,
        })
        .collect()
}

const SLOW: &str = "id: slow\ntitle: Slow\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\nfor: 2m\ncondition: p99(latency_ms) > 500\n";

#[test]
fn fires_after_for_and_resolves_when_the_window_recovers() {
    let events = traffic(
        40,
        "recsys",
        "baseline",
        |minute| {
            if (10..20).contains(&minute) {
                900.0
            } else {
                100.0
            }
        },
        0,
    );
    let alerts = run(vec![rule(SLOW)], &events, &[1000]);
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let firing = &alerts[0];
    assert_eq!(firing.state, AlertState::Firing);
    assert_eq!(
        firing.group.get("model_id").map(String::as_str),
        Some("recsys")
    );
    // Slow from minute 10; the 5m window's p99 crosses at the tick after minute 10 (00:11), pending 2m → 00:13.
    assert_eq!(firing.starts_at, "2026-01-01T00:13:00Z");
    assert!(firing.value.unwrap() > 880.0 && firing.threshold == Some(500.0));
    assert_eq!(firing.impact.events, 600);
    assert!((firing.impact.share_of_traffic - 1.0).abs() < 1e-12);
    let resolved = &alerts[1];
    assert_eq!(resolved.state, AlertState::Resolved);
    assert_eq!(resolved.alert_id, firing.alert_id);
    // Fast again from minute 20; p99 over [t-5m, t) drops once fewer than 1 % of the window is slow: t = 00:25.
    assert_eq!(resolved.ends_at.as_deref(), Some("2026-01-01T00:25:00Z"));
}

#[test]
fn keep_firing_for_delays_resolution() {
    let yaml = SLOW.replace("for: 2m\n", "for: 2m\nkeep_firing_for: 3m\n");
    let events = traffic(
        40,
        "recsys",
        "baseline",
        |minute| {
            if (10..20).contains(&minute) {
                900.0
            } else {
                100.0
            }
        },
        0,
    );
    let alerts = run(vec![rule(&yaml)], &events, &[1000]);
    // First false tick 00:25, as in Prometheus: keep firing until 3m after it.
    assert_eq!(alerts[1].ends_at.as_deref(), Some("2026-01-01T00:28:00Z"));
}

const CANARY: &str = r#"
id: canary
title: Canary worse than baseline
severity: high
group_by: [model_id]
segments:
  canary: ab_group == "canary"
  baseline: ab_group == "baseline"
window: 5m
every: 1m
condition: >
  (canary.p99(latency_ms) > 500) for 5m
  or (canary.error_rate() > 2 * baseline.error_rate()) for 3m
"#;

#[test]
fn canary_rule_compares_two_segments_of_one_rule() {
    // Canary errs 10 % from minute 10 on; baseline 1 %; latency stays fast.
    let mut events = traffic(30, "recsys", "baseline", |_| 100.0, 100);
    let canary_errors: Vec<Event> = traffic(30, "recsys", "canary", |_| 100.0, 0)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            if e.timestamp >= START + 10 * MINUTE && i.is_multiple_of(10) {
                e.status = "error";
            }
            e
        })
        .collect();
    events.extend(canary_errors);
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(vec![rule(CANARY)], &events, &[777]);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    // The error-rate arm: at 00:11 the window holds one bad minute (2 %, not > 2 × 1 %);
    // true from 00:12, held for 3m → 00:15.
    assert_eq!(alerts[0].starts_at, "2026-01-01T00:15:00Z");
    assert!(
        (alerts[0].value.unwrap() - 0.1).abs() < 0.01,
        "{:?}",
        alerts[0].value
    );
}

#[test]
fn canary_latency_arm_needs_five_minutes() {
    let mut events = traffic(30, "recsys", "baseline", |_| 100.0, 0);
    events.extend(traffic(
        30,
        "recsys",
        "canary",
        |minute| if minute >= 10 { 800.0 } else { 100.0 },
        0,
    ));
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(vec![rule(CANARY)], &events, &[4096]);
    assert_eq!(alerts[0].state, AlertState::Firing);
    // p99 > 500 from tick 00:11 (first window with ≥1 % slow), held 5m → 00:16.
    assert_eq!(alerts[0].starts_at, "2026-01-01T00:16:00Z");
}

#[test]
fn events_later_than_the_allowed_lateness_are_counted_and_dropped() {
    let mut events = traffic(10, "recsys", "baseline", |_| 100.0, 0);
    // An event from minute 1 arriving after minute 9 is far beyond 30 s lateness.
    events.push(Event {
        timestamp: START + MINUTE,
        model_id: "recsys",
        ab_group: "baseline",
        status: "ok",
        latency_ms: 1e6,
    });
    let mut engine = Engine::new(vec![rule(SLOW)], &canonical_schema()).unwrap();
    engine.observe(&batch(&events));
    assert_eq!(engine.stats().late_events, 1);
    assert_eq!(engine.observable_state()[0].late_events, 1);
}

#[test]
fn volume_drop_to_zero_fires_for_a_group_that_went_silent() {
    let yaml = "id: silent\ntitle: Silent\nseverity: medium\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: count() == 0\n";
    let mut events = traffic(20, "recsys", "baseline", |_| 100.0, 0);
    events.extend(traffic(10, "fraud", "baseline", |_| 100.0, 0));
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(vec![rule(yaml)], &events, &[500]);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].group["model_id"], "fraud");
    assert_eq!(alerts[0].starts_at, "2026-01-01T00:12:00Z");
}

#[test]
fn distinct_and_moments_aggregates_evaluate() {
    let yaml = "id: stats\ntitle: Stats\nseverity: low\nwindow: 1m\ncondition: distinct(ab_group) >= 2 and avg(latency_ms) > 100 and stddev(latency_ms) > 0 and max(latency_ms) >= 106\n";
    let mut events = traffic(3, "recsys", "baseline", |_| 100.0, 0);
    events.extend(traffic(3, "recsys", "canary", |_| 100.0, 0));
    events.sort_by_key(|e| e.timestamp);
    let alerts = run(vec![rule(yaml)], &events, &[100]);
    assert_eq!(
        alerts.first().map(|a| a.state),
        Some(AlertState::Firing),
        "{alerts:#?}"
    );
}

fn mixed_incident_events() -> Vec<Event> {
    let mut events = traffic(
        45,
        "recsys",
        "baseline",
        |m| if (10..18).contains(&m) { 700.0 } else { 90.0 },
        50,
    );
    events.extend(traffic(
        45,
        "recsys",
        "canary",
        |m| if (25..35).contains(&m) { 900.0 } else { 110.0 },
        0,
    ));
    events.extend(traffic(30, "fraud", "baseline", |_| 40.0, 0));
    events.sort_by_key(|e| e.timestamp);
    events
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Batch boundaries and reordering within the allowed lateness never change the alerts.
    #[test]
    fn alerts_do_not_depend_on_batching_or_in_lateness_shuffling(
        sizes in proptest::collection::vec(1usize..3000, 1..8),
        seed in any::<u64>(),
    ) {
        let rules = || vec![rule(SLOW), rule(CANARY), rule("id: silent\ntitle: Silent\nseverity: medium\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: count() == 0\n")];
        let events = mixed_incident_events();
        let expected = run(rules(), &events, &[events.len()]);
        prop_assert!(expected.len() >= 5, "the fixture must raise alerts: {}", expected.len());

        // Displace each event by less than the 30 s lateness: sort by a jittered key.
        let mut state = seed | 1;
        let mut jittered: Vec<(i64, Event)> = events
            .iter()
            .map(|e| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (e.timestamp + (state % (29 * SECOND as u64)) as i64, e.clone())
            })
            .collect();
        jittered.sort_by_key(|(key, _)| *key);
        let shuffled: Vec<Event> = jittered.into_iter().map(|(_, e)| e).collect();
        let actual = run(rules(), &shuffled, &sizes);
        prop_assert_eq!(expected, actual);
    }
}

#[test]
fn referenced_columns_name_what_the_rules_read() {
    let canary = "id: canary\ntitle: Canary\nseverity: high\ngroup_by: [model_id]\nsegments:\n  canary: ab_group == \"canary\"\nfilter: input_tokens + 1 > 2\nwindow: 5m\nevery: 1m\ncondition: canary.p99(latency_ms) > 500 or distinct(client_id) > 3\n";
    let engine = Engine::new(vec![rule(SLOW), rule(canary)], &canonical_schema()).unwrap();
    assert_eq!(
        engine.referenced_columns(),
        [
            "ab_group",
            "client_id",
            "input_tokens",
            "latency_ms",
            "model_id",
            "status",
            "stream",
            "timestamp"
        ]
    );
    let engine = Engine::new(Vec::new(), &canonical_schema()).unwrap();
    assert_eq!(
        engine.referenced_columns(),
        ["status", "stream", "timestamp"]
    );
}
