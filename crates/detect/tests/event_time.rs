//! Issue 16: no single log line can move event time or blind the rules.
//!
//! The whole path a log line takes before detection runs here: decode with
//! the built-in mapping (value domains), the ingest event-time guard, then
//! the shipped rule pack and SLOs on the guard's clock. A simulated fleet
//! with incidents is the input; one extra line, with any time and any
//! values, is inserted anywhere in it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use inferwatch_core::{Alert, NANOS_PER_SECOND};
use inferwatch_detect::{load_rules_dir, load_slos, Engine, SloEvaluator};
use inferwatch_ingest::{Chunk, Decoder, EventTimeGuard, InputsKind, Mapping};
use inferwatch_sim::{Scenario, SimConfig};
use proptest::prelude::*;

/// Rules whose findings are about the population, which one line may
/// legitimately move: the forest scores every client against all others,
/// and the drift rules compare a source or a day against the rest.
const POPULATION_RULES: &[&str] = &[
    "client-behaviour-forest",
    "source-confidence-drift",
    "confidence-drift-daily",
];

const MINUTE: i64 = 60 * NANOS_PER_SECOND;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// 50 minutes of the simulated fleet with a latency regression and an
/// error spike, at 40 events/s.
fn fleet() -> &'static Vec<Vec<u8>> {
    static FLEET: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    FLEET.get_or_init(|| {
        let config = SimConfig {
            scenarios: vec![Scenario::LatencyRegression, Scenario::ErrorSpike],
            duration_ns: 50 * MINUTE,
            rate: 40.0,
            threads: 1,
            ..SimConfig::default()
        };
        let mut output = Vec::new();
        inferwatch_sim::generate(&config, &mut output).unwrap();
        output
            .split_inclusive(|byte| *byte == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    })
}

/// (rule, group, state, start minute) of every alert, with the group as text.
type AlertKey = (String, String, String, i64);

fn key_of(alert: &Alert) -> AlertKey {
    let start = inferwatch_core::parse_timestamp_text(&alert.starts_at).unwrap_or(0);
    (
        alert.rule_id.clone(),
        serde_json::to_string(&alert.group).unwrap(),
        format!("{:?}", alert.state),
        start.div_euclid(MINUTE),
    )
}

/// The default pack and the example per-model SLO rules: the static
/// thresholds fire within this short fleet, before learned baselines warm up.
fn all_rules() -> Vec<inferwatch_detect::Rule> {
    let mut all = Vec::new();
    for directory in ["rules", "examples/rules"] {
        let (rules, errors) = load_rules_dir(&repository().join(directory));
        assert!(errors.is_empty(), "{errors:?}");
        all.extend(rules);
    }
    all
}

/// Runs decode → guard → rules and SLOs over `lines`, cut into chunks of
/// `chunk_lines` lines.
fn alerts(lines: &[Vec<u8>], chunk_lines: usize) -> Vec<Alert> {
    let decoder_mapping = Arc::new(Mapping::builtin());
    let mut decoder = Decoder::new(decoder_mapping);
    let mut engine = Engine::new(all_rules(), &decoder.schema()).unwrap();
    let (slos, errors) = load_slos(&repository().join("slos"));
    assert!(errors.is_empty(), "{errors:?}");
    let mut slos = SloEvaluator::new(slos, &decoder.schema()).unwrap();
    let mut guard = EventTimeGuard::new(InputsKind::Pooled);
    let mut alerts = Vec::new();
    let mut first_line = 1;
    for chunk_lines_slice in lines.chunks(chunk_lines.max(1)) {
        let chunk = Chunk {
            source: Arc::from("fleet.jsonl"),
            first_line,
            first_offset: 0,
            data: chunk_lines_slice.concat(),
            skipped_bytes: 0,
        };
        first_line += chunk_lines_slice.len() as u64;
        let mut decoded = decoder.decode(&chunk);
        let clock = guard.admit(&mut decoded);
        alerts.extend(engine.observe_at(&decoded.batch, &clock));
        alerts.extend(slos.observe_at(&decoded.batch, &clock));
    }
    let released = guard.finish();
    if let Some(batch) = &released.batch {
        alerts.extend(engine.observe_at(batch, &released.clock));
        alerts.extend(slos.observe_at(batch, &released.clock));
    }
    alerts.extend(engine.finish());
    alerts.extend(slos.finish());
    alerts
}

fn baseline() -> &'static Vec<Alert> {
    static BASELINE: OnceLock<Vec<Alert>> = OnceLock::new();
    BASELINE.get_or_init(|| alerts(fleet(), 2_000))
}

/// Whether `alert`'s group is one the injected line belongs to: every key
/// of the group has the line's value (a group with no keys holds every line).
fn belongs(alert: &Alert, line: &serde_json::Value) -> bool {
    alert.group.iter().all(|(column, value)| {
        line.get(column)
            .is_some_and(|field| field.as_str() == Some(value.as_str()))
    })
}

fn comparable(alerts: &[Alert], line: &serde_json::Value) -> BTreeSet<AlertKey> {
    alerts
        .iter()
        .filter(|alert| !POPULATION_RULES.contains(&alert.rule_id.as_str()))
        .filter(|alert| !belongs(alert, line))
        .map(key_of)
        .collect()
}

fn timestamp_strategy() -> impl Strategy<Value = String> {
    let start = SimConfig::default().start_ns;
    prop_oneof![
        // Anywhere in (or around) the fleet's hour, to the nanosecond.
        (-10 * MINUTE..70 * MINUTE)
            .prop_map(move |offset| { inferwatch_core::format_timestamp(start + offset) }),
        // Far away, in either direction.
        Just("2100-01-01T00:00:00Z".to_string()),
        Just("1970-01-01T00:00:00Z".to_string()),
        Just("2262-04-11T23:47:16Z".to_string()),
        // Epoch numbers of any size.
        any::<i64>().prop_map(|number| number.to_string()),
    ]
}

fn value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1e300".to_string()),
        Just("-1e300".to_string()),
        Just("1e-300".to_string()),
        Just("-5".to_string()),
        Just("0".to_string()),
        (0.0f64..5000.0).prop_map(|value| format!("{value}")),
        Just("\"fast\"".to_string()),
    ]
}

prop_compose! {
    fn injected_line()(
        timestamp in timestamp_strategy(),
        model in prop_oneof![Just("recsys"), Just("fraud"), Just("vision"), Just("chat-llm"), Just("intruder")],
        version in prop_oneof![Just("2.0"), Just("2.1"), Just("1.3"), Just("9.9")],
        client in prop_oneof![Just("c-00042"), Just("c-evil")],
        source in prop_oneof![Just("src-03"), Just("src-evil")],
        latency in value_strategy(),
        tokens in value_strategy(),
        confidence in value_strategy(),
        status in prop_oneof![Just("ok"), Just("error")],
    ) -> String {
        let timestamp = if timestamp.parse::<i64>().is_ok() {
            timestamp
        } else {
            format!("\"{timestamp}\"")
        };
        format!(
            "{{\"timestamp\":{timestamp},\"model_id\":\"{model}\",\"model_version\":\"{version}\",\"ab_group\":\"canary\",\"client_id\":\"{client}\",\"source_id\":\"{source}\",\"status\":\"{status}\",\"latency_ms\":{latency},\"input_tokens\":{tokens},\"confidence\":{confidence},\"input_hash\":\"abc\"}}\n"
        )
    }
}

#[test]
fn the_fleet_raises_the_alerts_the_property_compares() {
    let alerts = baseline();
    let rules: BTreeSet<&str> = alerts.iter().map(|alert| alert.rule_id.as_str()).collect();
    assert!(alerts.len() >= 4, "{rules:?}");
    assert!(
        rules.iter().any(|rule| !POPULATION_RULES.contains(rule)),
        "{rules:?}"
    );
}

#[test]
fn issue_16_one_line_dated_2100_changes_no_alert_and_is_a_dead_letter() {
    let mut lines = fleet().clone();
    lines.insert(
        1_000,
        b"{\"timestamp\":\"2100-01-01T00:00:00Z\",\"model_id\":\"recsys\",\"model_version\":\"2.0\",\"latency_ms\":12}\n".to_vec(),
    );
    let attacked = alerts(&lines, 2_000);
    let expected: Vec<AlertKey> = baseline().iter().map(key_of).collect();
    let actual: Vec<AlertKey> = attacked.iter().map(key_of).collect();
    assert_eq!(expected, actual);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(12)
    ))]

    /// One line, any time, any values, anywhere: the alerts of every group
    /// it does not belong to stay exactly as they were, whatever the chunk size.
    #[test]
    fn issue_16_one_line_cannot_change_the_alerts_of_other_groups(
        line in injected_line(),
        position in 0usize..120_000,
        chunk_lines in prop_oneof![Just(997usize), Just(2_000usize), Just(40_000usize)],
    ) {
        let fleet = fleet();
        let mut lines = fleet.clone();
        let position = position % (lines.len() + 1);
        lines.insert(position, line.clone().into_bytes());
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        let attacked = alerts(&lines, chunk_lines);
        prop_assert_eq!(
            comparable(baseline(), &parsed),
            comparable(&attacked, &parsed),
            "line {} at {}", line, position
        );
    }
}

/// The fleet's lines with every timestamp moved by `shift`.
fn shifted(lines: &[Vec<u8>], shift: i64) -> Vec<Vec<u8>> {
    lines
        .iter()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_slice(line).unwrap();
            let time = inferwatch_core::parse_timestamp_text(value["timestamp"].as_str().unwrap())
                .unwrap();
            value["timestamp"] = inferwatch_core::format_timestamp(time + shift).into();
            let mut text = value.to_string().into_bytes();
            text.push(b'\n');
            text
        })
        .collect()
}

/// Runs two followed inputs whose chunks alternate through one guard;
/// returns the alerts, the dead letters' kinds and the guard.
fn two_inputs(
    steady: &[Vec<u8>],
    skewed: &[Vec<u8>],
    max_future: i64,
) -> (Vec<Alert>, Vec<String>, EventTimeGuard) {
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let mut engine = Engine::new(all_rules(), &decoder.schema())
        .unwrap()
        .with_max_future(max_future);
    let mut guard = EventTimeGuard::new(InputsKind::PerSource).with_max_future(max_future);
    let mut alerts = Vec::new();
    let mut refused = Vec::new();
    let (steady_chunks, skewed_chunks): (Vec<_>, Vec<_>) = (
        steady.chunks(1_000).collect(),
        skewed.chunks(1_000).collect(),
    );
    for index in 0..steady_chunks.len().max(skewed_chunks.len()) {
        let both = [
            ("a.jsonl", steady_chunks.get(index)),
            ("b.jsonl", skewed_chunks.get(index)),
        ];
        for (source, lines) in both {
            let Some(lines) = lines else {
                continue;
            };
            let chunk = Chunk {
                source: Arc::from(source),
                first_line: 1,
                first_offset: 0,
                data: lines.concat(),
                skipped_bytes: 0,
            };
            let mut decoded = decoder.decode(&chunk);
            let clock = guard.admit(&mut decoded);
            refused.extend(
                decoded
                    .dead_letters
                    .iter()
                    .map(|dead| format!("{}:{:?}", dead.source, dead.kind)),
            );
            alerts.extend(engine.observe_at(&decoded.batch, &clock));
        }
    }
    let released = guard.finish();
    if let Some(batch) = &released.batch {
        alerts.extend(engine.observe_at(batch, &released.clock));
    }
    refused.extend(
        released
            .dead_letters
            .iter()
            .map(|dead| format!("{}:{:?}", dead.source, dead.kind)),
    );
    alerts.extend(engine.finish());
    (alerts, refused, guard)
}

#[test]
fn issue_16_an_input_whose_clock_runs_ten_minutes_ahead_is_refused_and_reported() {
    let steady = fleet();
    let skewed = shifted(steady, 10 * MINUTE);
    let (alone, _, _) = two_inputs(steady, &[], inferwatch_core::DEFAULT_MAX_FUTURE_NANOS);
    let (together, refused, guard) =
        two_inputs(steady, &skewed, inferwatch_core::DEFAULT_MAX_FUTURE_NANOS);
    let keys = |alerts: &[Alert]| alerts.iter().map(key_of).collect::<Vec<_>>();
    assert!(!alone.is_empty());
    assert_eq!(keys(&alone), keys(&together));
    // Every skewed event is a future_timestamp dead letter, and only those.
    assert_eq!(refused.len(), skewed.len());
    assert!(refused
        .iter()
        .all(|entry| entry == "b.jsonl:Some(FutureTimestamp)"));
    let reports = guard.inputs();
    let report = |name: &str| reports.iter().find(|r| r.input == name).unwrap().clone();
    assert_eq!(report("b.jsonl").future_timestamp, skewed.len() as u64);
    assert_eq!(report("b.jsonl").events, 0);
    let skew = report("b.jsonl").skew_seconds.unwrap();
    assert!((590.0..=610.0).contains(&skew), "{skew}");
    assert!(report("a.jsonl").skew_seconds.unwrap().abs() < 5.0);
    assert_eq!(report("a.jsonl").future_timestamp, 0);
}

#[test]
fn issue_16_a_cap_wider_than_the_skew_accepts_the_input_and_still_reports_it() {
    let steady = fleet();
    let skewed = shifted(steady, 10 * MINUTE);
    let (_, refused, guard) = two_inputs(steady, &skewed, 15 * MINUTE);
    assert!(refused.is_empty(), "{}", refused.len());
    let reports = guard.inputs();
    let skewed_report = reports.iter().find(|r| r.input == "b.jsonl").unwrap();
    assert_eq!(skewed_report.events, skewed.len() as u64);
    // Reported while it ran; at the end its clock is ten minutes ahead.
    assert!(skewed_report.skew_seconds.unwrap() > 0.0);
}

#[test]
fn issue_16_a_thousandth_of_rows_with_extreme_values_changes_no_alert() {
    let fleet = fleet();
    let extremes = [
        r#""latency_ms":1e300"#,
        r#""latency_ms":-1e300"#,
        r#""latency_ms":1e-300"#,
        r#""input_tokens":9223372036854775807"#,
        r#""output_tokens":1000000000000"#,
        r#""confidence":1e300"#,
    ];
    let mut lines = Vec::with_capacity(fleet.len() + fleet.len() / 1000);
    for (index, line) in fleet.iter().enumerate() {
        lines.push(line.clone());
        if index % 1000 == 999 {
            // The same event as the line before, one extreme field changed:
            // same time, same model, same client.
            let text = String::from_utf8_lossy(line);
            let extreme = extremes[(index / 1000) % extremes.len()];
            let field = extreme.split(':').next().unwrap_or_default();
            let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
            let (name, number) = extreme.split_at(field.len() + 1);
            let name = name.trim_end_matches(':').trim_matches('"');
            value[name] = serde_json::from_str(number).unwrap();
            let mut bytes = value.to_string().into_bytes();
            bytes.push(b'\n');
            lines.push(bytes);
        }
    }
    let clean: Vec<AlertKey> = baseline().iter().map(key_of).collect();
    let poisoned: Vec<AlertKey> = alerts(&lines, 2_000).iter().map(key_of).collect();
    // 1e-300 ms is a legal (if odd) latency and is kept; the others are
    // out_of_range dead letters. Either way no alert moves.
    assert_eq!(clean, poisoned);
}
