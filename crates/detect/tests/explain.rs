//! Impact and explanation on alerts: which dimension values the alerting
//! slice over-represents, distinct clients, the summary line, the sample's
//! bound, and independence from batching.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Float64Array, Int64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use common::dictionary;
use inferwatch_core::{canonical_schema, column, Alert, AlertState};
use inferwatch_detect::{Engine, Rule};
use proptest::prelude::*;

const SECOND: i64 = 1_000_000_000;
const START: i64 = 1_767_225_600 * SECOND;

#[derive(Clone, Debug)]
struct Event {
    timestamp: i64,
    model_id: &'static str,
    model_version: &'static str,
    ab_group: &'static str,
    client_id: String,
    source_id: String,
    status: &'static str,
    latency_ms: f64,
    input_tokens: i64,
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
                column::MODEL_VERSION => {
                    dictionary(events.iter().map(|e| e.model_version).collect())
                }
                column::AB_GROUP => dictionary(events.iter().map(|e| e.ab_group).collect()),
                column::CLIENT_ID => {
                    dictionary(events.iter().map(|e| e.client_id.as_str()).collect())
                }
                column::SOURCE_ID => {
                    dictionary(events.iter().map(|e| e.source_id.as_str()).collect())
                }
                column::STATUS => dictionary(events.iter().map(|e| e.status).collect()),
                column::LATENCY_MS => Arc::new(Float64Array::from(
                    events.iter().map(|e| e.latency_ms).collect::<Vec<_>>(),
                )),
                column::INPUT_TOKENS => Arc::new(Int64Array::from(
                    events.iter().map(|e| e.input_tokens).collect::<Vec<_>>(),
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

fn run_on(mut engine: Engine, events: &[Event], batch_sizes: &[usize]) -> (Vec<Alert>, Engine) {
    let mut alerts = Vec::new();
    let mut position = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while position < events.len() {
        let size = (*sizes.next().unwrap()).max(1).min(events.len() - position);
        alerts.extend(engine.observe(&batch(&events[position..position + size])));
        position += size;
    }
    alerts.extend(engine.finish());
    (alerts, engine)
}

fn run(rules: Vec<Rule>, events: &[Event], batch_sizes: &[usize]) -> Vec<Alert> {
    run_on(
        Engine::new(rules, &canonical_schema()).unwrap(),
        events,
        batch_sizes,
    )
    .0
}

/// splitmix64: a fixed pseudo-random sequence for the fixtures.
fn noise(i: i64) -> u64 {
    let mut x = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn event(i: i64, model_version: &'static str) -> Event {
    Event {
        timestamp: START + i * SECOND,
        model_id: "recsys",
        model_version,
        ab_group: "baseline",
        client_id: format!("c{:02}", i % 37),
        source_id: format!("s{:02}", i % 3),
        status: "ok",
        latency_ms: 100.0,
        input_tokens: 500,
    }
}

/// One request per second on recsys 2.0 and 2.1 for 15 minutes. One 2.1
/// request in ten carries 3,000 input tokens; in minutes 5–7, those and
/// another one in ten (short) take 900 ms.
fn long_input_incident() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..900 {
        events.push(event(i, "2.0"));
        let mut e = event(i, "2.1");
        if i % 10 == 0 {
            e.input_tokens = 3_000;
        }
        if (300..420).contains(&i) && (i % 10 == 0 || i % 10 == 5) {
            e.latency_ms = 900.0;
        }
        events.push(e);
    }
    events
}

const SLOW: &str = "id: slow\ntitle: Slow\nseverity: high\ngroup_by: [model_id, model_version]\nwindow: 5m\nevery: 1m\ncondition: p99(latency_ms) > 500 and count() >= 100\n";

#[test]
fn a_latency_incident_on_long_inputs_names_the_length_bucket_with_its_lift() {
    let alerts = run(vec![rule(SLOW)], &long_input_incident(), &[1_000]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    assert_eq!(firing.group["model_version"], "2.1");
    assert_eq!(firing.starts_at, "2026-01-01T00:06:00Z");
    // Window [00:01, 00:06): 300 rows of 2.1 out of 600, 37 clients (i % 37).
    assert_eq!(firing.impact.events, 300);
    assert!((firing.impact.share_of_traffic - 0.5).abs() < 1e-12);
    assert_eq!(firing.impact.distinct_clients, Some(37));
    // Slice: the 12 rows above 500 ms (00:05–00:06, i % 10 in {0, 5}), 6 of
    // them long. Baseline: the group's other 288 rows, 24 of them long (one
    // in ten over 00:01–00:05). Two buckets seen, add-one smoothing:
    // lift = (6/12) / ((24 + 1) / (288 + 2)) = 5.8.
    assert_eq!(firing.explanation.len(), 1, "{firing:#?}");
    let contributor = &firing.explanation[0];
    assert_eq!(contributor.dimension, "input_tokens");
    assert_eq!(contributor.value, "2k-8k");
    assert_eq!(contributor.share, Some(0.5));
    assert!((contributor.lift - 0.5 / (25.0 / 290.0)).abs() < 1e-9);
    assert!(
        firing.summary.starts_with("p99 latency ")
            && firing.summary.ends_with(
                " ms on recsys 2.1 (50 % of traffic, 37 clients); 50 % of slow requests have input_tokens 2k-8k (lift 5.8)"
            ),
        "{}",
        firing.summary
    );
    // Resolutions carry impact but no explanation.
    let resolved = alerts
        .iter()
        .find(|a| a.state == AlertState::Resolved)
        .expect("resolves at the end");
    assert!(resolved.explanation.is_empty());
    assert!(resolved.impact.distinct_clients.is_some());
    assert!(resolved.summary.starts_with("resolved: "));
}

/// Two requests a second on fraud from 20 sources; one in 50 fails. From
/// minute 5 every request of `s07` fails, or (`spread`) one request in ten
/// fails anywhere.
fn error_burst(spread: bool) -> Vec<Event> {
    (0..1_200)
        .map(|i| {
            let source = i % 20;
            let failing = if spread {
                i >= 600 && noise(i).is_multiple_of(10)
            } else {
                (i >= 600 && source == 7) || i % 50 == 0
            };
            Event {
                timestamp: START + i * SECOND / 2,
                model_id: "fraud",
                model_version: "1.0",
                ab_group: "baseline",
                client_id: format!("c{:02}", noise(i + 7) % 50),
                source_id: format!("s{source:02}"),
                status: if failing { "error" } else { "ok" },
                latency_ms: 40.0,
                input_tokens: [100, 400, 1_500, 4_000, 9_000][(noise(i + 3) % 5) as usize],
            }
        })
        .collect()
}

const ERRORS: &str = "id: errors\ntitle: Errors\nseverity: high\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: error_rate() > 0.05 and count() >= 100\n";

#[test]
fn an_error_burst_from_one_source_names_the_source() {
    let alerts = run(vec![rule(ERRORS)], &error_burst(false), &[777]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    let top = &firing.explanation[0];
    assert_eq!(
        (top.dimension.as_str(), top.value.as_str()),
        ("source_id", "s07"),
        "{firing:#?}"
    );
    assert!(top.lift > 5.0, "{top:?}");
    assert!(top.share.unwrap() > 0.5);
    assert!(
        firing
            .summary
            .contains("of failed requests have source_id s07"),
        "{}",
        firing.summary
    );
    assert_eq!(firing.impact.distinct_clients, Some(50));
}

#[test]
fn no_contributor_when_the_slice_looks_like_the_baseline() {
    let alerts = run(vec![rule(ERRORS)], &error_burst(true), &[777]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    assert!(firing.explanation.is_empty(), "{firing:#?}");
    assert!(!firing.summary.contains(" of failed requests"));
}

/// A canary (10 % of ranker, version 2.1) turns slow from minute 5; the rule
/// groups by model only.
fn canary_incident() -> Vec<Event> {
    (0..2_400)
        .map(|i| {
            let canary = noise(i).is_multiple_of(10);
            Event {
                timestamp: START + i * SECOND / 4,
                model_id: "ranker",
                model_version: if canary { "2.1" } else { "2.0" },
                ab_group: if canary { "canary" } else { "baseline" },
                client_id: format!("c{}", noise(i + 1) % 200),
                source_id: format!("s{:02}", noise(i + 2) % 20),
                status: "ok",
                latency_ms: if canary && i >= 1_200 {
                    700.0
                } else {
                    80.0 + (i % 13) as f64
                },
                input_tokens: 300,
            }
        })
        .collect()
}

#[test]
fn a_canary_regression_grouped_by_model_points_at_the_canary() {
    let canary = "id: canary\ntitle: Canary slow\nseverity: high\ngroup_by: [model_id]\nsegments:\n  canary: ab_group == \"canary\"\nwindow: 5m\nevery: 1m\ncondition: canary.p99(latency_ms) > 500 and canary.count() >= 20\n";
    let alerts = run(vec![rule(canary)], &canary_incident(), &[500]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    let named: Vec<(&str, &str)> = firing
        .explanation
        .iter()
        .map(|c| (c.dimension.as_str(), c.value.as_str()))
        .collect();
    assert!(named.contains(&("ab_group", "canary")), "{named:?}");
    assert!(named.contains(&("model_version", "2.1")), "{named:?}");
    assert!(
        firing.summary.starts_with("canary p99 latency "),
        "{}",
        firing.summary
    );
    assert!(firing.summary.contains("slow canary requests"));
}

/// Issue 17: an alert on the canary version is not explained by what its key
/// already says (every row of ranker 2.1 is `ab_group canary`).
#[test]
fn contributors_implied_by_the_group_key_are_left_out() {
    let alerts = run(vec![rule(SLOW)], &canary_incident(), &[500]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing)
        .expect("fires");
    assert_eq!(firing.group["model_version"], "2.1");
    let named: Vec<(&str, &str)> = firing
        .explanation
        .iter()
        .map(|c| (c.dimension.as_str(), c.value.as_str()))
        .collect();
    assert!(!named.contains(&("ab_group", "canary")), "{named:?}");
}

/// The incidents above together, each event moved by up to 29 s (inside the
/// 30 s lateness) so that rows arrive out of order.
fn mixed(seed: u64) -> Vec<Event> {
    let mut events = long_input_incident();
    events.extend(error_burst(false));
    events.extend(canary_incident());
    let mut keyed: Vec<(i64, Event)> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let jitter = (noise(i as i64 ^ seed as i64) % (29 * SECOND as u64)) as i64;
            (e.timestamp + jitter, e)
        })
        .collect();
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, e)| e).collect()
}

fn mixed_rules() -> Vec<Rule> {
    vec![
        rule(SLOW),
        rule(ERRORS),
        rule("id: canary\ntitle: Canary slow\nseverity: high\ngroup_by: [model_id]\nsegments:\n  canary: ab_group == \"canary\"\nwindow: 5m\nevery: 1m\ncondition: canary.p99(latency_ms) > 500 and canary.count() >= 20\n"),
        rule("id: busy\ntitle: Busy client\nseverity: low\ngroup_by: [client_id]\nwindow: 2m\nevery: 30s\ncondition: count() >= 40\n"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Impact, explanation and summary do not depend on batch sizes, with
    /// the full sample and with one small enough to sample.
    #[test]
    fn impact_and_explanation_do_not_depend_on_batching(
        sizes in proptest::collection::vec(1usize..2500, 1..6),
        seed in any::<u64>(),
        small in any::<bool>(),
    ) {
        let events = mixed(seed);
        let engine = || {
            let engine = Engine::new(mixed_rules(), &canonical_schema()).unwrap();
            if small { engine.with_explain_rows(2_000) } else { engine }
        };
        let (expected, _) = run_on(engine(), &events, &[events.len()]);
        prop_assert!(expected.iter().any(|a| !a.explanation.is_empty()));
        prop_assert!(expected.iter().any(|a| a.impact.distinct_clients.is_some_and(|c| c > 1)));
        let (actual, _) = run_on(engine(), &events, &sizes);
        prop_assert_eq!(expected, actual);
    }
}

#[test]
fn the_sample_keeps_its_row_budget() {
    let events = mixed(1);
    // 5m window + 1m every + 30 s lateness over 30 s slots: 13 + 2 slots,
    // so 300 rows give 20 per slot.
    let budget = 300;
    let mut engine = Engine::new(mixed_rules(), &canonical_schema())
        .unwrap()
        .with_explain_rows(budget);
    let mut alerts = Vec::new();
    for chunk in events.chunks(100) {
        alerts.extend(engine.observe(&batch(chunk)));
        assert!(engine.explain_rows() <= budget, "{}", engine.explain_rows());
    }
    assert!(engine.explain_rows() > 0);
    alerts.extend(engine.finish());
    // Sampled windows still explain; distinct clients then come from the
    // rule's own sketch (exact at these counts).
    let slow = alerts
        .iter()
        .find(|a| {
            a.rule_id == "slow" && a.state == AlertState::Firing && a.group["model_id"] == "recsys"
        })
        .unwrap();
    assert_eq!(slow.impact.distinct_clients, Some(37));
    // A budget of 0 turns the sample off: no contributors, and clients
    // still counted by the sketch.
    let (off, engine) = run_on(
        Engine::new(mixed_rules(), &canonical_schema())
            .unwrap()
            .with_explain_rows(0),
        &events,
        &[1_000],
    );
    assert_eq!(engine.explain_rows(), 0);
    let slow = off
        .iter()
        .find(|a| {
            a.rule_id == "slow" && a.state == AlertState::Firing && a.group["model_id"] == "recsys"
        })
        .unwrap();
    assert!(slow.explanation.is_empty());
    assert_eq!(slow.impact.distinct_clients, Some(37));
}

/// A whole-group condition on the only version of a model: the other rows
/// belong to other models, which differ by nature (other versions, other
/// input lengths), so nothing is named; grouped by client, the other
/// clients are a fair baseline and the client's model is named.
#[test]
fn a_model_without_peers_is_not_explained_by_other_models_traffic() {
    let mut events = Vec::new();
    for i in 0..900 {
        events.push(event(i, "2.0"));
        let mut other = event(i, "1.0");
        other.model_id = "fraud";
        other.input_tokens = 40;
        // fraud doubles its volume from minute 5.
        events.push(other.clone());
        if i >= 300 {
            other.timestamp += SECOND / 2;
            events.push(other);
        }
    }
    let busy = "id: busy\ntitle: Busy\nseverity: medium\ngroup_by: [model_id]\nwindow: 5m\nevery: 1m\ncondition: count() > 400\n";
    let alerts = run(vec![rule(busy)], &events, &[500]);
    let firing = alerts
        .iter()
        .find(|a| a.state == AlertState::Firing && a.group["model_id"] == "fraud")
        .expect("fraud fires");
    assert!(firing.explanation.is_empty(), "{firing:#?}");
    assert!(firing.impact.distinct_clients.is_some());
}
