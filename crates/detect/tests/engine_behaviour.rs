//! Behaviour of the window engine on hand-built batches: lifecycle, segments,
//! lateness, and independence from batching and in-lateness shuffling.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Float64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use common::dictionary;
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
fn advance_clock_judges_the_ticks_a_silent_stream_passes() {
    let yaml = "id: silent\ntitle: Silent\nseverity: medium\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: count() == 0\n";
    let events = traffic(5, "fraud", "baseline", |_| 100.0, 0);
    let last = events.last().unwrap().timestamp;
    let mut engine = Engine::new(vec![rule(yaml)], &canonical_schema()).unwrap();
    let clock: Vec<i64> = events.iter().map(|e| e.timestamp).collect();
    let mut alerts = engine.observe_at(&batch(&events), &clock);
    assert!(alerts.is_empty(), "{alerts:#?}");
    // No rows at all: only the heartbeat's clock moves time on.
    alerts.extend(engine.advance_clock(last + 4 * 60 * SECOND));
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].state, AlertState::Firing);
    assert_eq!(alerts[0].group["model_id"], "fraud");
    assert_eq!(engine.stats().late_events, 0, "a heartbeat is not a row");
    // A clock behind the current one changes nothing.
    assert!(engine.advance_clock(START).is_empty());
    assert_eq!(engine.stats().clock, Some(last + 4 * 60 * SECOND));
    // And the silence ends the same way a row would have ended it.
    let mut resumed = traffic(2, "fraud", "baseline", |_| 100.0, 0);
    for event in &mut resumed {
        event.timestamp += last + 5 * 60 * SECOND - START;
    }
    let clock: Vec<i64> = resumed.iter().map(|e| e.timestamp).collect();
    let mut after = engine.observe_at(&batch(&resumed), &clock);
    after.extend(engine.advance_clock(resumed.last().unwrap().timestamp + 3 * 60 * SECOND));
    assert!(
        after.iter().any(|a| a.state == AlertState::Resolved),
        "{after:#?}"
    );
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

/// A Mann–Whitney judge of the canary against the baseline arm.
const JUDGE: &str = "id: judge\ntitle: Judge\nseverity: high\ngroup_by: [model_id]\nsegments:\n  canary: ab_group == \"canary\"\n  baseline: ab_group == \"baseline\"\nwindow: 5m\nevery: 1m\ndetector:\n  drift:\n    column: latency_ms\n    test: mann_whitney\n    subject: canary\n    reference: { segment: baseline }\n    direction: up\n    band: 0.5\n    min_samples: 100\n    sample_size: 300\n";

/// A learned baseline of each arm's median latency.
const LEARNED: &str = "id: learned\ntitle: Learned\nseverity: medium\ngroup_by: [model_id, ab_group]\nwindow: 2m\nevery: 1m\ndetector:\n  baseline:\n    series: p50(latency_ms)\n    warmup: 5\n    points: 20\n    trigger: 5\n    recover: 2\n    direction: up\n";

/// An isolation forest over the arms.
const FOREST: &str = "id: forest\ntitle: Forest\nseverity: low\ngroup_by: [model_id, ab_group]\nwindow: 2m\nevery: 1m\ndetector:\n  forest:\n    features:\n      latency: avg(latency_ms)\n      volume: count()\n    warmup: 10\n    memory: 64\n    trees: 8\n    threshold: 0.62\n";

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
    // Issue 16: a group that goes idle for longer than every window (and is
    // released) and comes back, so that a batch spans its release.
    let vision = traffic(
        40,
        "vision",
        "baseline",
        |m| if m >= 30 { 800.0 } else { 60.0 },
        0,
    );
    events.extend(
        vision
            .into_iter()
            .filter(|e| !(START + 4 * MINUTE..START + 22 * MINUTE).contains(&e.timestamp)),
    );
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
        let rules = || vec![
            rule(SLOW),
            rule(CANARY),
            rule("id: silent\ntitle: Silent\nseverity: medium\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: count() == 0\n"),
            rule(JUDGE),
            rule(LEARNED),
            rule(FOREST),
        ];
        let events = mixed_incident_events();
        let expected = run(rules(), &events, &[events.len()]);
        prop_assert!(expected.len() >= 5, "the fixture must raise alerts: {}", expected.len());
        prop_assert!(
            expected.iter().any(|alert| alert.rule_id == "slow" && alert.group["model_id"] == "vision"),
            "the group that came back must alert"
        );
        for detector_rule in ["judge", "learned", "forest"] {
            prop_assert!(
                expected.iter().any(|alert| alert.rule_id == detector_rule && alert.evidence.is_some()),
                "the fixture must exercise the {} detector", detector_rule
            );
        }

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
            // Read by the explanation sample.
            "model_version",
            "source_id",
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

fn with_source(events: Vec<Event>, model_id: &'static str) -> Vec<Event> {
    events
        .into_iter()
        .map(|event| Event { model_id, ..event })
        .collect()
}

#[test]
fn a_baseline_fires_on_a_step_holds_through_hysteresis_and_ignores_gaps() {
    // 40 quiet minutes around 100 ms, a 10-minute step to 300 ms, then a
    // 20-minute gap with no traffic at all, then normal again.
    let mut events = traffic(
        60,
        "recsys",
        "baseline",
        |m| {
            if (40..50).contains(&m) {
                300.0
            } else {
                100.0 + (m % 3) as f64 * 4.0
            }
        },
        0,
    );
    events.retain(|e| !((50 * MINUTE..70 * MINUTE).contains(&(e.timestamp - START))));
    events.extend(
        traffic(
            90,
            "recsys",
            "baseline",
            |m| 100.0 + (m % 3) as f64 * 4.0,
            0,
        )
        .into_iter()
        .filter(|e| e.timestamp - START >= 70 * MINUTE),
    );
    let yaml = LEARNED.replace("group_by: [model_id, ab_group]", "group_by: [model_id]");
    let alerts = run(vec![rule(&yaml)], &events, &[777]);
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(firing.len(), 1, "{alerts:#?}");
    let evidence = firing[0]
        .evidence
        .as_ref()
        .expect("a detector alert carries evidence");
    assert_eq!(evidence.detector, "baseline");
    assert!(
        evidence.z.unwrap() > 5.0 && evidence.observed.unwrap() > 250.0,
        "{evidence:?}"
    );
    assert!(evidence.expected.unwrap() < 120.0, "{evidence:?}");
    assert!(
        firing[0].starts_at.as_str() >= "2026-01-01T00:40:00Z"
            && firing[0].starts_at.as_str() <= "2026-01-01T00:43:00Z",
        "{}",
        firing[0].starts_at
    );
    // The step is not learned while it fires, and the gap judges nothing, so
    // it resolves on the first windows of normal traffic after the gap; the
    // gap neither re-fires nor poisons the baseline.
    let resolved: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .collect();
    assert_eq!(resolved.len(), 1, "{alerts:#?}");
    let ended = resolved[0].ends_at.as_deref().unwrap();
    assert!(
        ("2026-01-01T01:10:00Z"..="2026-01-01T01:13:00Z").contains(&ended),
        "{ended}"
    );
}

#[test]
fn a_count_baseline_treats_zero_traffic_as_a_signal() {
    let mut events = traffic(40, "recsys", "baseline", |_| 100.0, 0);
    // Every second event, so counts vary a little, then silence from minute 30.
    events.retain(|e| (e.timestamp - START) < 30 * MINUTE && (e.timestamp / SECOND) % 5 != 0);
    events.extend(traffic(40, "fraud", "baseline", |_| 100.0, 0));
    events.sort_by_key(|e| e.timestamp);
    let yaml = "id: volume\ntitle: Volume\nseverity: medium\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ndetector:\n  baseline:\n    series: count()\n    warmup: 10\n    points: 30\n    trigger: 4\n    direction: down\n";
    let alerts = run(vec![rule(yaml)], &events, &[999]);
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(firing.len(), 1, "{alerts:#?}");
    assert_eq!(firing[0].group["model_id"], "recsys");
    // It fires while the window empties, before the count even reaches zero.
    let evidence = firing[0].evidence.as_ref().unwrap();
    assert!(
        evidence.observed.unwrap() <= 100.0 && evidence.expected.unwrap() > 150.0,
        "{evidence:?}"
    );
    assert!(
        firing[0].starts_at.as_str() <= "2026-01-01T00:32:00Z",
        "{}",
        firing[0].starts_at
    );
}

#[test]
fn new_keys_zero_judges_a_key_that_appears_after_the_warmup_against_zero() {
    // "old" sends from the start, "new" from minute 30 at the same steady
    // rate. With `new_keys: zero` only the newcomer is a change against its
    // own history; with the default (`learn`) it warms up and never fires.
    let mut events = traffic(60, "old", "baseline", |_| 100.0, 0);
    events.extend(
        traffic(60, "new", "baseline", |_| 100.0, 0)
            .into_iter()
            .filter(|e| e.timestamp - START >= 30 * MINUTE),
    );
    events.sort_by_key(|e| e.timestamp);
    let yaml = |new_keys: &str| {
        format!(
            "id: jump\ntitle: Jump\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ndetector:\n  baseline:\n    series: count()\n    warmup: 10\n    trigger: 6\n    direction: up\n    new_keys: {new_keys}\n"
        )
    };
    let alerts = run(vec![rule(&yaml("zero"))], &events, &[777, 5_000]);
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(firing.len(), 1, "{alerts:#?}");
    assert_eq!(firing[0].group["model_id"], "new");
    assert_eq!(firing[0].starts_at, "2026-01-01T00:31:00Z");
    assert_eq!(firing[0].evidence.as_ref().unwrap().expected, Some(0.0));
    let learned = run(vec![rule(&yaml("learn"))], &events, &[777]);
    assert!(
        learned.iter().all(|a| a.state != AlertState::Firing),
        "{learned:#?}"
    );
}

#[test]
fn drift_against_the_rest_names_the_diverging_source_with_its_effect_size() {
    // Six "sources" (in the model_id column here): one's latency doubles
    // from minute 10. Against the rest, the others see it diluted to a sixth.
    let mut events = Vec::new();
    for (source, shifted) in [
        ("src-a", false),
        ("src-b", true),
        ("src-c", false),
        ("src-d", false),
        ("src-e", false),
        ("src-f", false),
    ] {
        events.extend(with_source(
            traffic(
                20,
                "x",
                "baseline",
                |m| if shifted && m >= 10 { 200.0 } else { 100.0 },
                0,
            )
            .into_iter()
            .enumerate()
            .map(|(i, e)| Event {
                latency_ms: e.latency_ms + ((i * 37) % 50) as f64,
                ..e
            })
            .collect(),
            source,
        ));
    }
    events.sort_by_key(|e| e.timestamp);
    let yaml = "id: drift\ntitle: Drift\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ndetector:\n  drift:\n    column: latency_ms\n    test: ks\n    reference: { rest_of: model_id }\n    min_samples: 100\n    min_effect: 0.3\n";
    let alerts = run(vec![rule(yaml)], &events, &[1234]);
    let firing: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(firing.len(), 1, "{alerts:#?}");
    assert_eq!(firing[0].group["model_id"], "src-b");
    let evidence = firing[0].evidence.as_ref().unwrap();
    assert_eq!(
        (evidence.detector.as_str(), evidence.method.as_str()),
        ("drift", "ks")
    );
    assert!(
        evidence.effect_size.unwrap() >= 0.3 && evidence.p_value.unwrap() < 1e-3,
        "{evidence:?}"
    );
    // Each side is the window's sample: this source alone, the other two merged.
    assert!(
        evidence.samples.unwrap() >= 100
            && evidence.reference_samples.unwrap() > evidence.samples.unwrap(),
        "{evidence:?}"
    );
    assert_eq!(evidence.reference.as_deref(), Some("rest of model_id"));
}

#[test]
fn detector_blocks_are_validated_with_positions() {
    let bad = |yaml: &str| match Rule::from_yaml_str(Path::new("d.yaml"), yaml) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("accepted: {yaml}"),
    };
    let head = "id: d\ntitle: D\nseverity: low\ngroup_by: [model_id]\nwindow: 5m\n";
    let message = bad(&format!("{head}detector:\n  drift:\n    column: latency_ms\n    test: t_test\n    reference: {{ rest_of: model_id }}\n"));
    assert!(
        message.starts_with("d.yaml:9:11:") && message.contains("t_test"),
        "{message}"
    );
    let message = bad(&format!("{head}detector:\n  drift:\n    column: latency_ms\n    test: ks\n    reference: {{ rest_of: source_id }}\n"));
    assert!(
        message.contains("group_by") && message.contains("source_id"),
        "{message}"
    );
    let message = bad(&format!(
        "{head}detector:\n  baseline:\n    series: p95(latency_ms) >\n"
    ));
    assert!(message.starts_with("d.yaml:8:"), "{message}");
    let message = bad(head);
    assert!(
        message.contains("condition, a detector, or both"),
        "{message}"
    );
    let engine_error = Engine::new(
        vec![rule(&format!("{head}detector:\n  drift:\n    column: client_id\n    test: ks\n    reference: {{ rest_of: model_id }}\n"))],
        &canonical_schema(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        engine_error.starts_with("test.yaml:8:13:") && engine_error.contains("numeric"),
        "{engine_error}"
    );
}

#[test]
fn a_staged_rule_fires_only_when_its_confirming_rule_held_for_the_same_key() {
    // recsys is slow from minute 10 to 20, fraud from minute 30 to 40; the
    // "ML" stage (here a second threshold rule on the error rate) only ever
    // holds for recsys.
    let mut events = traffic(
        50,
        "recsys",
        "baseline",
        |m| if (10..20).contains(&m) { 900.0 } else { 90.0 },
        0,
    );
    events.extend(traffic(
        50,
        "fraud",
        "baseline",
        |m| if (30..40).contains(&m) { 900.0 } else { 90.0 },
        0,
    ));
    events.extend(
        traffic(50, "recsys", "canary", |_| 90.0, 0)
            .into_iter()
            .map(|e| Event {
                status: if (e.timestamp - START) / MINUTE >= 12
                    && (e.timestamp - START) / MINUTE < 22
                {
                    "error"
                } else {
                    "ok"
                },
                ab_group: "baseline",
                ..e
            }),
    );
    events.sort_by_key(|e| e.timestamp);
    let errors = "id: errors\ntitle: Errors\nseverity: low\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: error_rate() > 0.1\n";
    let staged = format!(
        "{}confirm: {{ rule: errors, within: 5m }}\n",
        SLOW.replace("id: slow", "id: staged")
            .replace("for: 2m\n", "")
    );
    // The staged rule is listed first: the engine orders it after its source.
    let alerts = run(vec![rule(&staged), rule(errors)], &events, &[640]);
    let staged_alerts: Vec<&Alert> = alerts.iter().filter(|a| a.rule_id == "staged").collect();
    assert!(!staged_alerts.is_empty(), "{alerts:#?}");
    for alert in &staged_alerts {
        assert_eq!(
            alert.group["model_id"], "recsys",
            "fraud is slow but never confirmed: {alert:?}"
        );
    }
    // Without the stage, fraud's slowdown fires too.
    let unstaged = run(vec![rule(&SLOW.replace("for: 2m\n", ""))], &events, &[640]);
    assert!(unstaged.iter().any(|a| a.group["model_id"] == "fraud"));

    let missing = Engine::new(vec![rule(&staged)], &canonical_schema())
        .err()
        .unwrap()
        .to_string();
    assert!(
        missing.contains("'errors', which is not loaded"),
        "{missing}"
    );
    let cycle = Engine::new(
        vec![
            rule(&staged),
            rule(&format!(
                "{errors}confirm: {{ rule: staged, within: 5m }}\n"
            )),
        ],
        &canonical_schema(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(cycle.contains("cycle"), "{cycle}");
}

#[test]
fn drift_against_the_groups_own_past_fires_on_a_shift_and_not_on_steady_traffic() {
    // recsys's latency band moves up at minute 90; fraud stays put.
    let noisy = |base: f64| move |m: i64| base + ((m * 7919) % 13) as f64;
    let mut events = traffic(
        150,
        "recsys",
        "baseline",
        |m| {
            if m >= 90 {
                160.0 + ((m * 7919) % 13) as f64
            } else {
                noisy(100.0)(m)
            }
        },
        0,
    );
    events.extend(traffic(150, "fraud", "baseline", noisy(100.0), 0));
    events.sort_by_key(|e| e.timestamp);
    for reference in ["{ trailing: 1h }", "{ previous: 1h }"] {
        let yaml = format!("id: own-past\ntitle: Own past\nseverity: low\ngroup_by: [model_id]\nwindow: 10m\nevery: 5m\ndetector:\n  drift:\n    column: latency_ms\n    test: ks\n    reference: {reference}\n    min_samples: 100\n    min_effect: 0.5\n");
        let alerts = run(vec![rule(&yaml)], &events, &[4321]);
        let firing: Vec<&Alert> = alerts
            .iter()
            .filter(|a| a.state == AlertState::Firing)
            .collect();
        assert_eq!(firing.len(), 1, "{reference}: {alerts:#?}");
        assert_eq!(firing[0].group["model_id"], "recsys");
        let evidence = firing[0].evidence.as_ref().unwrap();
        assert!(
            evidence.reference.as_deref().unwrap().contains("1h"),
            "{evidence:?}"
        );
        assert!(
            evidence.effect_size.unwrap() >= 0.5 && evidence.reference_samples.unwrap() >= 100,
            "{evidence:?}"
        );
        assert!(
            firing[0].starts_at.as_str() >= "2026-01-01T01:30:00Z"
                && firing[0].starts_at.as_str() <= "2026-01-01T01:40:00Z",
            "{}",
            firing[0].starts_at
        );
    }
}

#[test]
fn an_explained_rule_says_when_its_column_shifted_against_the_trailing_past() {
    let mut events = traffic(
        90,
        "recsys",
        "baseline",
        |m| if m >= 70 { 700.0 } else { 90.0 },
        0,
    );
    // input_tokens is not in these hand-made events: explain with latency itself.
    events.sort_by_key(|e| e.timestamp);
    let yaml = format!("{}explain: {{ column: latency_ms, trailing: 30m }}\n", SLOW);
    let alerts = run(vec![rule(&yaml)], &events, &[999]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    assert_eq!(firing.explanation.len(), 1, "{firing:?}");
    let contributor = &firing.explanation[0];
    assert_eq!(contributor.dimension, "latency_ms");
    assert!(contributor.lift > 2.0, "{contributor:?}");
    assert!(
        contributor
            .value
            .contains("shifted up against the trailing 30m"),
        "{contributor:?}"
    );
    // Resolutions carry no explanation; a rule without `explain` never does.
    assert!(alerts
        .iter()
        .filter(|a| a.state == AlertState::Resolved)
        .all(|a| a.explanation.is_empty()));
    assert!(run(vec![rule(SLOW)], &events, &[999])
        .iter()
        .all(|a| a.explanation.is_empty()));
}

#[test]
fn past_max_groups_new_keys_are_counted_and_skipped_while_tracked_keys_go_on() {
    let mut events = traffic(10, "recsys", "baseline", |_| 900.0, 0);
    events.extend(traffic(10, "fraud", "baseline", |_| 900.0, 0));
    events.extend(
        traffic(10, "vision", "baseline", |_| 900.0, 0)
            .into_iter()
            .map(|e| Event {
                timestamp: e.timestamp + 1,
                ..e
            }),
    );
    events.sort_by_key(|e| e.timestamp);
    let capped = SLOW.replace("for: 2m\n", "max_groups: 2\n");
    let mut engine = Engine::new(vec![rule(&capped)], &canonical_schema()).unwrap();
    let mut alerts = engine.observe(&batch(&events));
    alerts.extend(engine.finish());
    let models: HashSet<&str> = alerts
        .iter()
        .map(|a| a.group["model_id"].as_str())
        .collect();
    assert_eq!(models, HashSet::from(["recsys", "fraud"]), "{alerts:#?}");
    let state = &engine.observable_state()[0];
    assert_eq!(state.refused_rows, 10 * 120, "{state:?}");
    assert!(state.peak_groups <= 2);
}

/// Issue 17: the shipped canary rule on a fleet that names its arms its own
/// way, or not at all. One model at 1,000 requests a minute, a 10 % canary
/// from minute 0; from minute 20 the canary fails 4.5 % of requests against
/// the baseline's 1.2 % (still under 5 %). Each vocabulary, and no
/// `ab_group` at all, fires on the model; with equal error rates nothing
/// fires. (Matching the word `baseline` alone left the baseline segment
/// empty for the other vocabularies, and a canary at 1.2 % fired.)
mod canary_roles {
    use super::*;

    fn canary_batch(rows: &[(i64, bool, Option<&'static str>, bool)]) -> RecordBatch {
        let schema = canonical_schema();
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|field| -> ArrayRef {
                match field.name().as_str() {
                    column::TIMESTAMP => Arc::new(
                        TimestampNanosecondArray::from(
                            rows.iter().map(|row| row.0).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    column::STREAM => dictionary(rows.iter().map(|_| "inference").collect()),
                    column::MODEL_ID => dictionary(rows.iter().map(|_| "ranker").collect()),
                    column::MODEL_VERSION => dictionary(
                        rows.iter()
                            .map(|row| if row.1 { "v8" } else { "v7" })
                            .collect(),
                    ),
                    column::AB_GROUP => {
                        let values: Vec<Option<&str>> = rows.iter().map(|row| row.2).collect();
                        let array: arrow::array::DictionaryArray<arrow::datatypes::Int32Type> =
                            values.into_iter().collect();
                        Arc::new(array)
                    }
                    column::STATUS => dictionary(
                        rows.iter()
                            .map(|row| if row.3 { "error" } else { "ok" })
                            .collect(),
                    ),
                    column::LATENCY_MS => Arc::new(Float64Array::from(vec![50.0; rows.len()])),
                    _ => new_null_array(field.data_type(), rows.len()),
                }
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    /// (time, is canary, ab_group, is error) for 40 minutes.
    fn fleet(
        words: Option<(&'static str, &'static str)>,
        regression: bool,
    ) -> Vec<(i64, bool, Option<&'static str>, bool)> {
        let mut rows = Vec::new();
        let (mut baseline_seen, mut canary_seen) = (0u64, 0u64);
        for minute in 0..40 {
            for request in 0..1000 {
                let time = START + minute * MINUTE + request * MINUTE / 1000;
                let canary = request % 10 == 0;
                let (group, error) = if canary {
                    canary_seen += 1;
                    // 1 in 22 (4.5 %) in the regression, else 1 in 83.
                    let every = if regression && minute >= 20 { 22 } else { 83 };
                    (words.map(|w| w.1), canary_seen % every == 0)
                } else {
                    baseline_seen += 1;
                    (words.map(|w| w.0), baseline_seen % 83 == 0)
                };
                rows.push((time, canary, group, error));
            }
        }
        rows
    }

    fn shipped_rule() -> Rule {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules/canary-vs-baseline.yaml");
        Rule::from_yaml_str(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn firing(rows: &[(i64, bool, Option<&'static str>, bool)]) -> Vec<(String, i64)> {
        let mut engine = Engine::new(vec![shipped_rule()], &canonical_schema()).unwrap();
        let mut alerts = Vec::new();
        for chunk in rows.chunks(777) {
            alerts.extend(engine.observe(&canary_batch(chunk)));
        }
        alerts.extend(engine.finish());
        alerts
            .iter()
            .filter(|alert| alert.state == AlertState::Firing)
            .map(|alert| {
                let start = inferwatch_core::parse_timestamp_text(&alert.starts_at).unwrap();
                (alert.group["model_id"].clone(), (start - START) / MINUTE)
            })
            .collect()
    }

    #[test]
    fn every_vocabulary_and_none_catches_the_canary_and_only_it() {
        for words in [
            Some(("baseline", "canary")),
            Some(("stable", "canary")),
            Some(("control", "treatment")),
            Some(("prod", "candidate")),
            None,
        ] {
            let fired = firing(&fleet(words, true));
            assert_eq!(fired.len(), 1, "{words:?}: {fired:?}");
            assert_eq!(fired[0].0, "ranker");
            assert!(
                (20..=28).contains(&fired[0].1),
                "{words:?}: fired at minute {}",
                fired[0].1
            );
            assert_eq!(
                firing(&fleet(words, false)),
                [],
                "{words:?} without a regression"
            );
        }
    }
}

/// Rules with one table and window share each group's window merge within a
/// tick (the first reader merges every member's parts): each must still
/// raise exactly the alerts it raises alone, with the same values.
#[test]
fn rules_sharing_a_window_merge_raise_what_each_raises_alone() {
    let rules = [
        "id: tail\ntitle: Tail\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: p99(latency_ms) > 500\n",
        "id: mean\ntitle: Mean\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: count() >= 10 and avg(latency_ms) > 300\n",
        "id: arms\ntitle: Arms\nseverity: low\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: distinct(ab_group) >= 2 and max(latency_ms) >= 106\n",
        "id: short\ntitle: Short\nseverity: low\ngroup_by: [model_id]\nwindow: 2m\nevery: 1m\ncondition: min(latency_ms) > 600\n",
    ];
    let mut events = traffic(
        12,
        "recsys",
        "baseline",
        |m| if m >= 5 { 700.0 } else { 100.0 },
        0,
    );
    events.extend(traffic(12, "recsys", "canary", |_| 100.0, 0));
    events.extend(traffic(
        12,
        "fraud",
        "baseline",
        |m| if m >= 8 { 900.0 } else { 100.0 },
        0,
    ));
    events.sort_by_key(|e| (e.timestamp, e.model_id, e.ab_group));
    let identity = |alert: &Alert| {
        (
            alert.rule_id.clone(),
            alert.state,
            alert.starts_at.clone(),
            alert.ends_at.clone(),
            alert.group.clone(),
            alert.value.map(f64::to_bits),
        )
    };
    let together: Vec<_> = run(
        rules.iter().map(|yaml| rule(yaml)).collect(),
        &events,
        &[97],
    )
    .iter()
    .map(identity)
    .collect();
    let mut alone: Vec<_> = rules
        .iter()
        .flat_map(|yaml| run(vec![rule(yaml)], &events, &[97]))
        .map(|alert| identity(&alert))
        .collect();
    let mut sorted = together.clone();
    sorted.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    alone.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    assert_eq!(sorted, alone);
    for id in ["tail", "mean", "arms", "short"] {
        assert!(
            together.iter().any(|alert| alert.0 == id),
            "{id} raised nothing: {together:#?}"
        );
    }
}
