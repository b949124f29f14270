//! SLO burn-rate alerts against the Google SRE Workbook's figures for a
//! 99.9 % objective, on synthetic events in event time: a total outage pages
//! after ≈52 s (14.4× over 1h/5m) and ≈2.16 min (6× over 6h/30m), a 15 %
//! error rate fires after ≈5.8 min and clears ≈4.5 min after recovery; plus
//! exact latency thresholds, batch-split invariance and the shipped configs.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{new_null_array, ArrayRef, Float64Array, TimestampNanosecondArray};
use arrow::record_batch::RecordBatch;
use common::dictionary;
use inferwatch_core::{canonical_schema, column, parse_timestamp_text, Alert, AlertState};
use inferwatch_detect::load_slos;
use inferwatch_detect::slo::{slos_from_yaml_str, BudgetReport, SloEvaluator};
use proptest::prelude::*;

const SECOND: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z: a multiple of every bucket width used here.
const START: i64 = 1_767_225_600 * SECOND;
/// The default resolution for the workbook's table: one bucket.
const BUCKET_SECONDS: f64 = 5.0;

#[derive(Clone, Debug)]
struct Event {
    timestamp: i64,
    model_version: &'static str,
    ok: bool,
    latency_ms: Option<f64>,
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
                column::MODEL_ID => dictionary(events.iter().map(|_| "recsys").collect()),
                column::MODEL_VERSION => {
                    dictionary(events.iter().map(|e| e.model_version).collect())
                }
                column::STATUS => dictionary(
                    events
                        .iter()
                        .map(|e| if e.ok { "ok" } else { "error" })
                        .collect(),
                ),
                column::LATENCY_MS => Arc::new(Float64Array::from(
                    events.iter().map(|e| e.latency_ms).collect::<Vec<_>>(),
                )),
                _ => new_null_array(field.data_type(), events.len()),
            }
        })
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn evaluator(yaml: &str) -> SloEvaluator {
    let slos = slos_from_yaml_str(Path::new("slos.yaml"), yaml).unwrap();
    SloEvaluator::new(slos, &canonical_schema()).unwrap()
}

const AVAILABILITY_999: &str = "id: recsys-availability
title: recsys answers
filter: model_id == \"recsys\"
group_by: [model_id, model_version]
sli: availability
objective: 99.9
";

/// Ten events a second from `START` for `seconds`; `failing(second)` says
/// whether the event at that offset fails. Fed in batches of 10,000.
fn run_steady(
    evaluator: &mut SloEvaluator,
    seconds: i64,
    failing: impl Fn(i64, f64) -> bool,
) -> Vec<Alert> {
    let per_second = 10;
    let total = seconds * per_second;
    let mut alerts = Vec::new();
    let mut chunk = Vec::with_capacity(10_000);
    for index in 0..total {
        let offset = index * SECOND / per_second;
        chunk.push(Event {
            timestamp: START + offset,
            model_version: "2.1",
            ok: !failing(index, offset as f64 / SECOND as f64),
            latency_ms: Some(100.0),
        });
        if chunk.len() == 10_000 {
            alerts.extend(evaluator.observe(&batch(&chunk)));
            chunk.clear();
        }
    }
    alerts.extend(evaluator.observe(&batch(&chunk)));
    alerts.extend(evaluator.finish());
    alerts
}

/// Seconds from `origin` (ns) to an RFC 3339 time.
fn seconds_after(origin: i64, time: &str) -> f64 {
    (parse_timestamp_text(time).unwrap() - origin) as f64 / SECOND as f64
}

fn of_pair<'a>(alerts: &'a [Alert], windows: &str) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|alert| alert.labels["windows"] == windows)
        .collect()
}

fn assert_within_a_bucket(actual: f64, expected: f64, what: &str) {
    eprintln!("{what}: {actual} s (workbook: {expected} s)");
    assert!(
        (actual - expected).abs() <= BUCKET_SECONDS,
        "{what}: {actual} s, expected {expected} s within one {BUCKET_SECONDS} s bucket"
    );
}

#[test]
fn slo_total_outage_pages_at_the_workbook_times() {
    // Three days of good traffic fill even the ticket pair's long window,
    // so every window is full when the outage starts, as the workbook assumes.
    let outage_start_second = 3 * 24 * 3_600;
    let outage_start = START + outage_start_second * SECOND;
    let mut evaluator = evaluator(AVAILABILITY_999);
    let alerts = run_steady(&mut evaluator, outage_start_second + 600, |_, second| {
        second >= outage_start_second as f64
    });
    assert!(
        alerts.iter().all(|alert| alert.state == AlertState::Firing),
        "nothing resolves during an ongoing outage: {alerts:#?}"
    );
    let fast = of_pair(&alerts, "1h/5m");
    assert_eq!(fast.len(), 1, "{alerts:#?}");
    // (1 − SLO) × burn rate × long window = 0.001 × 14.4 × 3600 s = 51.84 s.
    assert_within_a_bucket(
        seconds_after(outage_start, &fast[0].starts_at),
        51.84,
        "14.4× over 1h/5m",
    );
    assert_eq!(fast[0].severity, inferwatch_core::Severity::Critical);
    assert_eq!(fast[0].group["model_version"], "2.1");
    assert!(fast[0].value.unwrap() >= 14.4, "{:?}", fast[0].value);
    let summary = &fast[0].labels["summary"];
    assert!(
        summary.contains("over 1h") && summary.contains("on recsys 2.1"),
        "{summary}"
    );

    let slow = of_pair(&alerts, "6h/30m");
    assert_eq!(slow.len(), 1, "{alerts:#?}");
    // 0.001 × 6 × 6 h = 129.6 s ≈ 2.16 min.
    assert_within_a_bucket(
        seconds_after(outage_start, &slow[0].starts_at),
        129.6,
        "6× over 6h/30m",
    );

    let ticket = of_pair(&alerts, "3d/6h");
    assert_eq!(ticket.len(), 1, "{alerts:#?}");
    // 0.001 × 1 × 3 d = 259.2 s.
    assert_within_a_bucket(
        seconds_after(outage_start, &ticket[0].starts_at),
        259.2,
        "1× over 3d/6h",
    );
    assert_eq!(ticket[0].severity, inferwatch_core::Severity::Medium);

    // Fingerprints: one per pair and group, stable.
    let mut fingerprints: Vec<&str> = alerts.iter().map(|a| a.fingerprint.as_str()).collect();
    fingerprints.dedup();
    assert_eq!(fingerprints.len(), 3);
    assert_eq!(evaluator.observable_state()[0].groups, 1);
}

#[test]
fn slo_fifteen_percent_errors_fire_and_clear_at_the_expected_times() {
    // Two hours of good traffic (a full 1h window), then 3 errors in every
    // 20 events (exactly 15 %) for 20 minutes, then good traffic again.
    let errors_from = 2 * 3_600;
    let errors_until = errors_from + 20 * 60;
    let mut evaluator = evaluator(AVAILABILITY_999);
    let alerts = run_steady(&mut evaluator, errors_until + 3_600, |index, second| {
        (errors_from as f64..errors_until as f64).contains(&second) && index % 20 < 3
    });
    let fast = of_pair(&alerts, "1h/5m");
    assert_eq!(fast.len(), 2, "one firing and one resolved: {fast:#?}");
    assert_eq!(fast[0].state, AlertState::Firing);
    assert_eq!(fast[1].state, AlertState::Resolved);
    assert_eq!(fast[0].fingerprint, fast[1].fingerprint);
    assert_eq!(fast[0].starts_at, fast[1].starts_at);
    // The 1h window reaches 14.4 × 0.001 = 1.44 % errors after
    // 0.0144 ÷ 0.15 × 1 h = 345.6 s (the workbook's "about 5 min").
    let start = START + errors_from * SECOND;
    assert_within_a_bucket(
        seconds_after(start, &fast[0].starts_at),
        345.6,
        "15 % errors fire",
    );
    // The 5m window falls under 1.44 % once less than 0.0144 ÷ 0.15 of it
    // still holds errors: (1 − 0.096) × 300 s = 271.2 s after recovery.
    let recovery = START + errors_until * SECOND;
    let ends_at = fast[1].ends_at.as_deref().unwrap();
    assert_within_a_bucket(seconds_after(recovery, ends_at), 271.2, "clears");
    // The long window alone still burns far above 14.4× when it clears:
    // the short window is what resets the alert.
    assert!(
        fast[1].value.unwrap() > 14.4,
        "long-window burn rate at resolution: {:?}",
        fast[1].value
    );
}

#[test]
fn slo_latency_threshold_is_exact() {
    let mut evaluator = evaluator(
        "id: recsys-latency
title: recsys within 500 ms
sli: { latency: { threshold_ms: 500 } }
objective: 99
",
    );
    let latencies = [
        Some(500.0),
        Some(500.001),
        Some(499.999),
        Some(0.0),
        Some(500.0000001),
        None,
        Some(1e6),
    ];
    let events: Vec<Event> = latencies
        .iter()
        .enumerate()
        .map(|(index, latency_ms)| Event {
            timestamp: START + index as i64 * SECOND,
            model_version: "2.1",
            ok: true,
            latency_ms: *latency_ms,
        })
        .collect();
    evaluator.observe(&batch(&events));
    evaluator.finish();
    let report = &evaluator.report()[0];
    // 500, 499.999 and 0 are good; 500.001, 500.0000001 and 1e6 are bad; the
    // event without a latency is not counted.
    assert_eq!(
        (report.events, report.good_events, report.bad_events),
        (6, 3, 3)
    );
    assert_eq!(report.sli, "latency <= 500 ms");
}

#[test]
fn slo_budget_report_counts_the_period() {
    let mut evaluator = evaluator(AVAILABILITY_999);
    // One hour at 10 events/s with one error in 500 (0.2 %): twice the budget.
    run_steady(&mut evaluator, 3_600, |index, _| index % 500 == 0);
    let reports = evaluator.report();
    assert_eq!(reports.len(), 1);
    let report: &BudgetReport = &reports[0];
    assert_eq!(report.events, 36_000);
    assert_eq!(report.bad_events, 72);
    assert!((report.budget_total - 36.0).abs() < 1e-9);
    assert!((report.budget_remaining.unwrap() - -100.0).abs() < 1e-9);
    assert!((report.sli_achieved.unwrap() - 99.8).abs() < 1e-9);
    let one_hour = report
        .burn_rates
        .iter()
        .find(|burn| burn.window == "1h")
        .unwrap();
    assert!((one_hour.burn_rate - 2.0).abs() < 1e-9, "{one_hour:?}");
    assert_eq!(report.from.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(report.to, "2026-01-01T01:00:00Z");
}

#[test]
fn slo_shipped_configs_parse_and_compile() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../slos");
    let (slos, errors) = load_slos(&dir);
    assert!(errors.is_empty(), "{errors:?}");
    assert!(slos.len() >= 4, "{} SLOs", slos.len());
    assert!(slos.iter().any(|slo| slo.id.starts_with("recsys")));
    assert!(slos.iter().any(|slo| slo.id.starts_with("chat-llm")));
    SloEvaluator::new(slos, &canonical_schema()).unwrap();
}

/// Small windows so that a few thousand events make alerts fire and resolve.
const FAST_SLO: &str = "id: fast
title: fast
group_by: [model_version]
sli: availability
objective: 90
resolution: 1s
allowed_lateness: 5s
alerts:
  - { severity: page, long: 60s, short: 5s, burn_rate: 3 }
  - { severity: ticket, long: 5m, short: 30s, burn_rate: 1.5 }
";

fn run_split(events: &[Event], batch_sizes: &[usize]) -> (Vec<Alert>, Vec<BudgetReport>, u64) {
    let mut evaluator = evaluator(FAST_SLO);
    let mut alerts = Vec::new();
    let mut position = 0;
    let mut sizes = batch_sizes.iter().cycle();
    while position < events.len() {
        let size = (*sizes.next().unwrap()).max(1).min(events.len() - position);
        alerts.extend(evaluator.observe(&batch(&events[position..position + size])));
        position += size;
    }
    alerts.extend(evaluator.finish());
    (alerts, evaluator.report(), evaluator.late_events())
}

fn arbitrary_events() -> impl Strategy<Value = Vec<Event>> {
    // (step ms, steps back within or beyond the lateness, failing, version).
    prop::collection::vec((0i64..1_500, 0u8..20, 0u8..10, any::<bool>()), 50..1_500).prop_map(
        |steps| {
            let mut time = START;
            let mut failing_burst = false;
            steps
                .into_iter()
                .map(|(step_ms, back, fail, version)| {
                    time += step_ms * 1_000_000;
                    if fail == 0 {
                        failing_burst = !failing_burst;
                    }
                    // Now and then an event from up to 9.5 s ago: some in the
                    // lateness, some late.
                    let timestamp = if back == 0 {
                        time - i64::from(fail) * 950_000_000
                    } else {
                        time
                    };
                    Event {
                        timestamp,
                        model_version: if version { "2.0" } else { "2.1" },
                        ok: !(failing_burst && fail < 7),
                        latency_ms: Some(100.0),
                    }
                })
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn slo_alerts_do_not_depend_on_batch_sizes(
        events in arbitrary_events(),
        sizes in prop::collection::vec(1usize..200, 1..8),
    ) {
        let whole = run_split(&events, &[events.len()]);
        let one_by_one = run_split(&events, &[1]);
        let split = run_split(&events, &sizes);
        prop_assert_eq!(&whole, &one_by_one);
        prop_assert_eq!(&whole, &split);
    }
}

#[test]
fn slo_batch_invariance_is_not_vacuous() {
    // The same generator's kind of input does raise alerts, resolve them
    // and drop late rows, so the property above compares real output.
    let mut events = Vec::new();
    let mut time = START;
    for index in 0..2_000 {
        time += 300_000_000;
        let failing = (600..900).contains(&index);
        let timestamp = if index % 97 == 0 {
            time - 9 * SECOND
        } else {
            time
        };
        events.push(Event {
            timestamp,
            model_version: "2.1",
            ok: !failing,
            latency_ms: Some(100.0),
        });
    }
    let (alerts, reports, late) = run_split(&events, &[events.len()]);
    assert!(alerts.iter().any(|a| a.state == AlertState::Firing));
    assert!(alerts.iter().any(|a| a.state == AlertState::Resolved));
    assert!(late > 0);
    assert_eq!(reports[0].events + late, 2_000);
    assert_eq!(run_split(&events, &[7, 1, 130]).0, alerts);
}
