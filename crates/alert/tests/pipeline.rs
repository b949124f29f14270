//! The notification pipeline driven by event time: grouping with
//! Alertmanager's timers, silences, inhibition, acknowledgement, flapping,
//! risk-based alerts, restarts from the state dir, and determinism under
//! any batching. No test sleeps or reads the wall clock: time is whatever
//! the test feeds in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use inferwatch_alert::{
    format_event_time, read_history, submit_notifications, Action, ActionFilter, ConfiguredAction,
    Delivery, DeliveryFailure, DeliverySettings, Dispatcher, DispatcherConfig, GroupBy,
    HistoryEntry, HistoryQuery, LabelMatcher, Notification, NotificationPipeline,
    NotificationReason, NotifyConfig, Outcome, Silence, Suppression, TransitionOrigin,
    RISK_RULE_ID,
};
use inferwatch_core::{fingerprint, Alert, AlertState, Impact, Severity};

const SECOND: i64 = 1_000_000_000;
const MINUTE: i64 = 60;
const HOUR: i64 = 3600;
/// 2026-01-01T00:00:00Z in UTC nanoseconds.
const BASE: i64 = 1_767_225_600 * SECOND;

/// Event time `seconds` after the base.
fn at(seconds: i64) -> i64 {
    BASE + seconds * SECOND
}

fn firing(rule_id: &str, severity: Severity, group: &[(&str, &str)], seconds: i64) -> Alert {
    let group: BTreeMap<String, String> = group
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    let group_text = group
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(",");
    let starts_at = format_event_time(at(seconds));
    Alert {
        alert_id: fingerprint([rule_id, group_text.as_str(), starts_at.as_str()]),
        fingerprint: fingerprint([rule_id, group_text.as_str()]),
        rule_id: rule_id.to_string(),
        title: format!("{rule_id} fired"),
        severity,
        state: AlertState::Firing,
        starts_at,
        ends_at: None,
        group,
        value: Some(1.0),
        threshold: Some(0.5),
        condition: "value > 0.5".to_string(),
        atlas: Vec::new(),
        impact: Impact {
            events: 10,
            share_of_traffic: 0.1,
            distinct_clients: None,
        },
        summary: String::new(),
        explanation: Vec::new(),
        labels: BTreeMap::new(),
        evidence: None,
    }
}

fn resolved(alert: &Alert, seconds: i64) -> Alert {
    let mut resolution = alert.clone();
    resolution.state = AlertState::Resolved;
    resolution.ends_at = Some(format_event_time(at(seconds)));
    resolution
}

/// Grouped by model, no risk scoring, no inhibition: each test turns on
/// what it looks at.
fn config() -> NotifyConfig {
    let mut config = NotifyConfig::default();
    config.route.group_by = GroupBy::Labels(vec!["model_id".to_string()]);
    config.risk.enabled = false;
    config.inhibit_rules.clear();
    config
}

/// (seconds after base, reason, [(rule, state)]) of a notification.
type Summary = (i64, NotificationReason, Vec<(String, AlertState)>);

fn summarise(notifications: &[Notification]) -> Vec<Summary> {
    notifications
        .iter()
        .map(|notification| {
            (
                (notification.at - BASE) / SECOND,
                notification.reason,
                notification
                    .alerts
                    .iter()
                    .map(|alert| (alert.rule_id.clone(), alert.state))
                    .collect(),
            )
        })
        .collect()
}

fn rules(pairs: &[(&str, AlertState)]) -> Vec<(String, AlertState)> {
    pairs
        .iter()
        .map(|(rule, state)| (rule.to_string(), *state))
        .collect()
}

use AlertState::{Firing, Resolved};

#[test]
fn one_group_waits_then_batches_changes_and_repeats_after_the_repeat_interval() {
    let mut pipeline = NotificationPipeline::in_memory(config());
    let recsys = [("model_id", "recsys")];
    let first_three = [
        firing("p99-latency", Severity::High, &recsys, 0),
        firing("error-rate", Severity::High, &recsys, 10),
        firing("drift", Severity::Medium, &recsys, 20),
    ];
    assert!(pipeline.ingest(&first_three).unwrap().is_empty());
    assert!(pipeline.advance_to(at(29)).unwrap().is_empty());
    let first = pipeline.advance_to(at(30)).unwrap();
    assert_eq!(
        summarise(&first),
        [(
            30,
            NotificationReason::NewGroup,
            rules(&[
                ("p99-latency", Firing),
                ("error-rate", Firing),
                ("drift", Firing)
            ])
        )]
    );
    assert_eq!(first[0].group_key, r#"{model_id="recsys"}"#);
    assert_eq!(first[0].group_labels["model_id"], "recsys");

    // A fourth alert of the group waits for the next group_interval look
    // (30 s + 5 min), not for group_wait.
    let fourth = firing("cost", Severity::Medium, &recsys, 40);
    assert!(pipeline.ingest(&[fourth]).unwrap().is_empty());
    assert!(pipeline.advance_to(at(329)).unwrap().is_empty());
    let second = pipeline.advance_to(at(330)).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].reason, NotificationReason::GroupChanged);
    assert_eq!(second[0].alerts.len(), 4);

    // Unchanged: nothing until repeat_interval (4 h) after the last
    // notification, at a group_interval look.
    assert!(pipeline
        .advance_to(at(330 + 4 * HOUR - 1))
        .unwrap()
        .is_empty());
    let repeat = pipeline.advance_to(at(330 + 4 * HOUR)).unwrap();
    assert_eq!(summarise(&repeat).len(), 1);
    assert_eq!(repeat[0].reason, NotificationReason::Repeat);
    assert_eq!(repeat[0].alerts.len(), 4);
    assert!(pipeline
        .advance_to(at(330 + 8 * HOUR - 1))
        .unwrap()
        .is_empty());
}

#[test]
fn separate_groups_notify_separately_and_resolutions_are_sent() {
    let mut pipeline = NotificationPipeline::in_memory(config());
    let recsys = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    let fraud = firing("p99-latency", Severity::High, &[("model_id", "fraud")], 5);
    let mut notifications = pipeline.process(&[recsys.clone(), fraud], at(40)).unwrap();
    notifications.extend(
        pipeline
            .process(&[resolved(&recsys, 100)], at(400))
            .unwrap(),
    );
    let keys: Vec<(i64, &str, NotificationReason)> = notifications
        .iter()
        .map(|notification| {
            (
                (notification.at - BASE) / SECOND,
                notification.group_key.as_str(),
                notification.reason,
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (30, r#"{model_id="recsys"}"#, NotificationReason::NewGroup),
            (35, r#"{model_id="fraud"}"#, NotificationReason::NewGroup),
            (
                330,
                r#"{model_id="recsys"}"#,
                NotificationReason::GroupChanged
            ),
        ]
    );
    assert_eq!(notifications[2].alerts[0].state, Resolved);
    // The resolved group is empty and dropped; the other remains.
    assert_eq!(
        pipeline.groups(),
        [(r#"{model_id="fraud"}"#.to_string(), 1)]
    );
}

fn silence(id: &str, matchers: &[&str], from: i64, to: i64) -> Silence {
    Silence::new(
        id,
        matchers
            .iter()
            .map(|text| LabelMatcher::parse(text).unwrap())
            .collect(),
        at(from),
        at(to),
        "alice",
        "planned retraining",
    )
    .unwrap()
}

#[test]
fn a_silenced_alert_is_recorded_not_notified_until_the_silence_ends() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    pipeline
        .add_silence(silence(
            "retraining",
            &[r#"model_id="recsys""#, r#"severity=~"low|medium""#],
            0,
            HOUR,
        ))
        .unwrap();
    let recsys = [("model_id", "recsys")];
    let drift = firing("drift", Severity::Medium, &recsys, 0);
    let latency = firing("p99-latency", Severity::High, &recsys, 5);
    let notifications = pipeline.process(&[drift.clone(), latency], at(30)).unwrap();
    assert_eq!(
        summarise(&notifications),
        [(
            30,
            NotificationReason::NewGroup,
            rules(&[("p99-latency", Firing)])
        )]
    );
    let suppressed: Vec<(String, Suppression)> = read_history(state_dir.path())
        .unwrap()
        .into_iter()
        .filter_map(|record| match record.entry {
            HistoryEntry::Suppressed {
                alert_id,
                suppression,
                ..
            } => Some((alert_id, suppression)),
            _ => None,
        })
        .collect();
    assert_eq!(
        suppressed,
        [(
            drift.alert_id.clone(),
            Suppression::Silenced {
                silence_ids: vec!["retraining".to_string()]
            }
        )]
    );
    // Looks inside the hour keep it out (and don't record it again).
    assert!(pipeline.advance_to(at(HOUR - 1)).unwrap().is_empty());
    // The silence ends at 1 h; the look at 30 s + 12 × 5 min = 1 h 30 s reports it.
    let after = pipeline.advance_to(at(HOUR + 30)).unwrap();
    assert_eq!(
        summarise(&after),
        [(
            HOUR + 30,
            NotificationReason::GroupChanged,
            rules(&[("drift", Firing), ("p99-latency", Firing)])
        )]
    );
    let suppressed_records = read_history(state_dir.path())
        .unwrap()
        .iter()
        .filter(|record| matches!(record.entry, HistoryEntry::Suppressed { .. }))
        .count();
    assert_eq!(suppressed_records, 1);
    // The transition itself is in the history, queryable by rule.
    let drift_history = pipeline
        .query(&HistoryQuery {
            rule_id: Some("drift".to_string()),
            ..HistoryQuery::default()
        })
        .unwrap();
    assert_eq!(drift_history.len(), 1);
    assert_eq!(drift_history[0].alert.alert_id, drift.alert_id);
}

#[test]
fn negative_regex_silences_match_everything_else_and_can_be_expired_early() {
    let mut pipeline = NotificationPipeline::in_memory(config());
    pipeline
        .add_silence(silence(
            "not-core-models",
            &[r#"model_id!~"recsys|fraud""#],
            0,
            24 * HOUR,
        ))
        .unwrap();
    let search = firing("drift", Severity::Low, &[("model_id", "search")], 0);
    let recsys = firing("drift", Severity::Low, &[("model_id", "recsys")], 0);
    let notifications = pipeline.process(&[search, recsys], at(30)).unwrap();
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].group_labels["model_id"], "recsys");

    // Ended early through the API at 10 min: the next look at the search
    // group (30 s + 10 min) reports its alert.
    pipeline.advance_to(at(10 * MINUTE)).unwrap();
    pipeline.expire_silence("not-core-models").unwrap();
    assert!(pipeline.silences().is_empty());
    let later = pipeline.advance_to(at(11 * MINUTE)).unwrap();
    assert_eq!(summarise(&later).len(), 1);
    assert_eq!(later[0].group_labels["model_id"], "search");
    assert_eq!(later[0].at, at(10 * MINUTE + 30));
    assert!(pipeline.expire_silence("not-core-models").is_err());
}

#[test]
fn a_critical_alert_inhibits_warnings_on_its_model_only_while_it_fires() {
    let mut config = config();
    config.inhibit_rules = inferwatch_alert::default_inhibit_rules();
    let mut pipeline = NotificationPipeline::in_memory(config);
    let down = firing("model-down", Severity::Critical, &[("model_id", "x")], 0);
    let drift_x = firing("drift", Severity::Medium, &[("model_id", "x")], 0);
    let drift_y = firing("drift", Severity::Medium, &[("model_id", "y")], 0);
    let first = pipeline
        .process(&[down.clone(), drift_x, drift_y], at(30))
        .unwrap();
    let by_model: BTreeMap<&str, Vec<(String, AlertState)>> = first
        .iter()
        .map(|notification| {
            (
                notification.group_labels["model_id"].as_str(),
                notification
                    .alerts
                    .iter()
                    .map(|alert| (alert.rule_id.clone(), alert.state))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(by_model["x"], rules(&[("model-down", Firing)]));
    assert_eq!(by_model["y"], rules(&[("drift", Firing)]));

    // The critical resolves at 10 min: the next look at x (30 s + 10 min)
    // sends its resolution and the drift it no longer inhibits.
    pipeline.ingest(&[resolved(&down, 10 * MINUTE)]).unwrap();
    let after = pipeline.advance_to(at(11 * MINUTE)).unwrap();
    assert_eq!(
        summarise(&after),
        [(
            10 * MINUTE + 30,
            NotificationReason::GroupChanged,
            rules(&[("drift", Firing), ("model-down", Resolved)])
        )]
    );
}

#[test]
fn an_acknowledged_alert_is_not_repeated_but_its_resolution_is_sent() {
    let mut pipeline = NotificationPipeline::in_memory(config());
    let latency = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    assert_eq!(
        pipeline
            .process(std::slice::from_ref(&latency), at(30))
            .unwrap()
            .len(),
        1
    );
    pipeline.advance_to(at(2 * MINUTE)).unwrap();
    let acknowledgement = pipeline
        .acknowledge(&latency.fingerprint, "bob", "rolling back", None)
        .unwrap();
    assert_eq!(acknowledgement.alert_id, latency.alert_id);
    assert!(pipeline
        .acknowledge("no-such-alert", "bob", "", None)
        .is_err());
    // No repeat at 4 h (nor at 8 h).
    assert!(pipeline.advance_to(at(9 * HOUR)).unwrap().is_empty());
    pipeline
        .ingest(&[resolved(&latency, 9 * HOUR + 10)])
        .unwrap();
    let resolution = pipeline.advance_to(at(10 * HOUR)).unwrap();
    assert_eq!(
        summarise(&resolution),
        [(
            9 * HOUR + 30,
            NotificationReason::GroupChanged,
            rules(&[("p99-latency", Resolved)])
        )]
    );
    assert!(pipeline.acknowledgements().is_empty());
}

#[test]
fn repeats_resume_when_the_acknowledgement_expires() {
    let mut pipeline = NotificationPipeline::in_memory(config());
    let latency = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    pipeline
        .process(std::slice::from_ref(&latency), at(MINUTE))
        .unwrap();
    pipeline
        .acknowledge(&latency.alert_id, "bob", "until 5h", Some(at(5 * HOUR)))
        .unwrap();
    // Repeat due at 4 h 30 s is held back by the acknowledgement; once it
    // lapses at 5 h, the next look (5 h 30 s) repeats.
    assert!(pipeline.advance_to(at(5 * HOUR)).unwrap().is_empty());
    let repeat = pipeline.advance_to(at(5 * HOUR + 30)).unwrap();
    assert_eq!(
        summarise(&repeat),
        [(
            5 * HOUR + 30,
            NotificationReason::Repeat,
            rules(&[("p99-latency", Firing)])
        )]
    );
}

/// One alert firing and resolving every 2 minutes: episodes at 0, 4, 8 … min.
fn flapping_transitions(last_change_minute: i64) -> Vec<Alert> {
    let mut transitions = Vec::new();
    let mut current = None;
    for minute in (0..=last_change_minute).step_by(2) {
        if minute % 4 == 0 {
            let alert = firing(
                "error-rate",
                Severity::High,
                &[("model_id", "recsys")],
                minute * MINUTE,
            );
            transitions.push(alert.clone());
            current = Some(alert);
        } else if let Some(alert) = &current {
            transitions.push(resolved(alert, minute * MINUTE));
        }
    }
    transitions
}

#[test]
fn a_flapping_alert_is_notified_once_then_its_settled_state() {
    let state_dir = tempfile::tempdir().unwrap();
    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    let transitions = flapping_transitions(12); // F 0, R 2, F 4, R 6, F 8, R 10, F 12
    let mut notifications = Vec::new();
    for transition in &transitions {
        notifications.extend(pipeline.ingest(std::slice::from_ref(transition)).unwrap());
    }
    notifications.extend(pipeline.advance_to(at(3 * HOUR)).unwrap());
    // 30 s: the first firing; 5 min 30 s: the first resolution and the
    // second firing; 8 min: the fifth change within an hour makes it
    // flapping; the changes at 10 and 12 min are held; 30 min after the last
    // change it has settled as firing (the episode from 12 min).
    assert_eq!(
        summarise(&notifications),
        [
            (
                30,
                NotificationReason::NewGroup,
                rules(&[("error-rate", Firing)])
            ),
            (
                5 * MINUTE + 30,
                NotificationReason::GroupChanged,
                rules(&[("error-rate", Firing), ("error-rate", Resolved)])
            ),
            (
                8 * MINUTE,
                NotificationReason::Flapping,
                rules(&[("error-rate", Firing)])
            ),
            (
                42 * MINUTE,
                NotificationReason::Settled,
                rules(&[("error-rate", Firing)])
            ),
        ]
    );
    let notice = &notifications[2].alerts[0];
    assert_eq!(notice.explanation[0].dimension, "flapping");
    assert!(notice.explanation[0]
        .value
        .starts_with("5 state changes within 1h"));
    let settled = &notifications[3].alerts[0];
    assert_eq!(settled.alert_id, transitions[6].alert_id);
    assert!(settled.explanation[0].value.starts_with("settled: "));
    assert!(pipeline.flapping_fingerprints().is_empty());
    let held = read_history(state_dir.path())
        .unwrap()
        .into_iter()
        .filter(|record| {
            matches!(
                record.entry,
                HistoryEntry::Suppressed {
                    suppression: Suppression::Flapping,
                    ..
                }
            )
        })
        .count();
    assert_eq!(held, 2);
}

/// A scenario touching grouping, inhibition, flapping and risk.
fn scenario() -> (NotifyConfig, Vec<Alert>) {
    let mut config = config();
    config.inhibit_rules = inferwatch_alert::default_inhibit_rules();
    config.risk.enabled = true;
    config.risk.severity_weights.medium = 40.0;
    let mut transitions = flapping_transitions(20);
    let down = firing(
        "model-down",
        Severity::Critical,
        &[("model_id", "x")],
        3 * MINUTE,
    );
    let drift = firing("drift", Severity::Medium, &[("model_id", "x")], 4 * MINUTE);
    let mut access = firing(
        "new-key",
        Severity::Medium,
        &[("model_id", "x"), ("client_id", "c1")],
        5 * MINUTE,
    );
    access.atlas = vec!["AML.T0040".to_string()];
    let mut extraction = firing(
        "extraction",
        Severity::Medium,
        &[("model_id", "y"), ("client_id", "c1")],
        7 * MINUTE,
    );
    extraction.atlas = vec!["AML.T0024.002".to_string()];
    transitions.extend([
        down.clone(),
        drift,
        access,
        extraction.clone(),
        resolved(&down, 50 * MINUTE),
        resolved(&extraction, 2 * HOUR),
        firing(
            "p99-latency",
            Severity::High,
            &[("model_id", "z")],
            3 * HOUR,
        ),
    ]);
    transitions.sort_by_key(|alert| inferwatch_alert::transition_time(alert).unwrap());
    (config, transitions)
}

/// Feeds the scenario's transitions one call each, advancing to each
/// transition's time after it, and returns what was produced.
fn feed(pipeline: &mut NotificationPipeline, transitions: &[Alert]) -> Vec<Notification> {
    let mut notifications = Vec::new();
    for transition in transitions {
        let time = inferwatch_alert::transition_time(transition).unwrap();
        notifications.extend(
            pipeline
                .process(std::slice::from_ref(transition), time)
                .unwrap(),
        );
    }
    notifications
}

#[test]
fn a_restart_loses_no_timer_and_repeats_no_notification() {
    let (config, transitions) = scenario();
    let end = at(30 * HOUR);
    let mut uninterrupted = NotificationPipeline::in_memory(config.clone());
    let mut expected = feed(&mut uninterrupted, &transitions);
    expected.extend(uninterrupted.advance_to(end).unwrap());
    assert!(expected.len() >= 8, "{:?}", summarise(&expected));

    for (variant, snapshot_every, checkpoint) in [
        ("history replay only", 1_000_000, false),
        ("snapshot at the stop", 1_000_000, true),
        ("snapshot every 3 records plus replay", 3, false),
    ] {
        let state_dir = tempfile::tempdir().unwrap();
        let mut restartable = config.clone();
        restartable.snapshot_every_records = snapshot_every;
        let (first_half, second_half) = transitions.split_at(transitions.len() / 2);
        let mut pipeline =
            NotificationPipeline::open(restartable.clone(), state_dir.path()).unwrap();
        let mut produced = feed(&mut pipeline, first_half);
        if checkpoint {
            pipeline.checkpoint().unwrap();
        }
        let stopped_at = pipeline.now().unwrap();
        drop(pipeline);

        let mut pipeline = NotificationPipeline::open(restartable, state_dir.path()).unwrap();
        assert_eq!(pipeline.now(), Some(stopped_at), "{variant}");
        // Nothing produced before the stop is produced again...
        assert!(
            pipeline.advance_to(stopped_at).unwrap().is_empty(),
            "{variant}"
        );
        // ...but what was never confirmed as handed to the dispatcher is kept.
        assert_eq!(
            pipeline.unsent_notifications(),
            produced.as_slice(),
            "{variant}"
        );
        produced.extend(feed(&mut pipeline, second_half));
        produced.extend(pipeline.advance_to(end).unwrap());
        assert_eq!(summarise(&produced), summarise(&expected), "{variant}");
        assert_eq!(produced, expected, "{variant}");
    }
}

#[test]
fn confirmed_notifications_are_not_offered_again_after_a_restart() {
    let state_dir = tempfile::tempdir().unwrap();
    let alert = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    let notifications = pipeline.process(&[alert], at(30)).unwrap();
    assert_eq!(pipeline.unsent_notifications().len(), 1);
    let ids: Vec<String> = notifications
        .iter()
        .map(|notification| notification.notification_id.clone())
        .collect();
    pipeline.confirm_sent(&ids).unwrap();
    drop(pipeline);
    let pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    assert!(pipeline.unsent_notifications().is_empty());
    assert_eq!(pipeline.firing_alerts().len(), 1);
}

#[test]
fn a_batch_cut_short_by_a_crash_is_dropped_whole_and_the_engine_may_resend() {
    let state_dir = tempfile::tempdir().unwrap();
    let first = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    let second = firing("drift", Severity::Medium, &[("model_id", "recsys")], 10);
    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    pipeline.ingest(std::slice::from_ref(&first)).unwrap();
    drop(pipeline);
    // A crash in the middle of the next batch: half a record on disk.
    let history = state_dir.path().join(inferwatch_alert::HISTORY_FILE);
    let mut text = std::fs::read_to_string(&history).unwrap();
    text.push_str("{\"seq\":3,\"at\":\"2026-01-01T00:00:10Z\",\"kind\":\"transi");
    std::fs::write(&history, text).unwrap();

    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    // The engine re-sends from its checkpoint: the first is a duplicate.
    let notifications = pipeline.process(&[first, second], at(30)).unwrap();
    assert_eq!(
        summarise(&notifications),
        [(
            30,
            NotificationReason::NewGroup,
            rules(&[("p99-latency", Firing), ("drift", Firing)])
        )]
    );
    assert_eq!(pipeline.stats().duplicate_transitions, 1);
}

fn risk_config() -> NotifyConfig {
    let mut config = config();
    config.risk.enabled = true;
    // Two medium findings are 2 × 40 = 80 points: under the threshold of
    // 100 with one tactic (× 1), over it with two (× 1.5 = 120).
    config.risk.severity_weights.medium = 40.0;
    config.risk.threshold = 100.0;
    config.risk.tactic_bonus = 0.5;
    config
}

fn finding(rule_id: &str, client: &str, technique: &str, seconds: i64) -> Alert {
    let mut alert = firing(
        rule_id,
        Severity::Medium,
        &[("client_id", client), ("model_id", "recsys")],
        seconds,
    );
    alert.atlas = vec![technique.to_string()];
    alert
}

#[test]
fn findings_across_tactics_raise_one_risk_alert_and_one_tactic_does_not() {
    let mut pipeline = NotificationPipeline::in_memory(risk_config());
    let transitions = [
        // c1: AI Model Access, then Exfiltration: 80 × 1.5 = 120.
        finding("new-api-key", "c1", "AML.T0040", 0),
        finding("model-extraction", "c1", "AML.T0024.002", 10 * MINUTE),
        // c2: Denial of AI Service and Cost Harvesting, both Impact: 80 × 1.
        finding("volume-spike", "c2", "AML.T0029", 0),
        finding("token-cost", "c2", "AML.T0034", 10 * MINUTE),
        // c1 again while raised: no second risk alert.
        finding("volume-spike", "c1", "AML.T0029", 20 * MINUTE),
    ];
    let mut notifications = Vec::new();
    for transition in &transitions {
        notifications.extend(pipeline.ingest(std::slice::from_ref(transition)).unwrap());
    }
    notifications.extend(pipeline.advance_to(at(HOUR)).unwrap());
    let risk_alerts: Vec<&Alert> = notifications
        .iter()
        .flat_map(|notification| &notification.alerts)
        .filter(|alert| alert.rule_id == RISK_RULE_ID)
        .collect();
    assert_eq!(risk_alerts.len(), 1, "{:?}", summarise(&notifications));
    let risk = risk_alerts[0];
    assert_eq!(risk.severity, Severity::High);
    assert_eq!(
        risk.group,
        [("client_id".to_string(), "c1".to_string())].into()
    );
    assert_eq!(risk.value, Some(120.0));
    assert_eq!(risk.starts_at, format_event_time(at(10 * MINUTE)));
    let contributors: Vec<(&str, f64)> = risk
        .explanation
        .iter()
        .map(|contributor| (contributor.value.as_str(), contributor.lift))
        .collect();
    assert_eq!(
        contributors,
        [
            (
                "new-api-key at 2026-01-01T00:00:00Z (medium, tactics: AML.TA0000): 60.0 risk",
                60.0
            ),
            (
                "model-extraction at 2026-01-01T00:10:00Z (medium, tactics: AML.TA0010): 60.0 risk",
                60.0
            ),
        ]
    );
    let scores: BTreeMap<String, (f64, bool)> = pipeline
        .risk_scores()
        .into_iter()
        .map(|score| (score.entity, (score.risk, score.raised)))
        .collect();
    assert_eq!(scores["client_id=c1"], (240.0, true)); // 3 × 40 × (1 + 2 × 0.5)
    assert_eq!(scores["client_id=c2"], (80.0, false));
    // The finding's model version is not in its group here, so no version entity.
    assert_eq!(scores.len(), 2);
}

#[test]
fn risk_falls_as_findings_leave_the_window_and_idle_entities_are_dropped() {
    let mut pipeline = NotificationPipeline::in_memory(risk_config());
    let transitions = [
        finding("new-api-key", "c1", "AML.T0040", 0),
        finding("model-extraction", "c1", "AML.T0024.002", 10 * MINUTE),
        finding("volume-spike", "c1", "AML.T0029", 20 * MINUTE),
    ];
    let mut notifications = pipeline.ingest(&transitions).unwrap();
    let risk_fingerprint = pipeline
        .firing_alerts()
        .into_iter()
        .find(|alert| alert.rule_id == RISK_RULE_ID)
        .expect("risk alert firing")
        .fingerprint;
    // At 24 h the first finding leaves: 80 × 1.5 = 120, still raised.
    notifications.extend(pipeline.advance_to(at(24 * HOUR)).unwrap());
    assert_eq!(pipeline.risk_scores()[0].risk, 120.0);
    assert!(pipeline.risk_scores()[0].raised);
    // At 24 h 10 min the second leaves: 40 < 100, the risk alert resolves.
    notifications.extend(pipeline.advance_to(at(24 * HOUR + 10 * MINUTE)).unwrap());
    assert!(!pipeline.risk_scores()[0].raised);
    // At 24 h 20 min nothing is left in the window: the entity is forgotten.
    notifications.extend(pipeline.advance_to(at(25 * HOUR)).unwrap());
    assert!(pipeline.risk_scores().is_empty());
    // Leaving out the repeats every 4 h while it fires.
    let risk_states: Vec<(AlertState, String)> = notifications
        .iter()
        .filter(|notification| notification.reason != NotificationReason::Repeat)
        .flat_map(|notification| &notification.alerts)
        .filter(|alert| alert.rule_id == RISK_RULE_ID)
        .map(|alert| {
            assert_eq!(alert.fingerprint, risk_fingerprint);
            (alert.state, alert.ends_at.clone().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        risk_states,
        [
            (Firing, String::new()),
            (Resolved, format_event_time(at(24 * HOUR + 10 * MINUTE)))
        ]
    );
}

#[test]
fn a_risk_alert_resolves_when_its_findings_have_and_a_new_finding_raises_it_again() {
    let mut pipeline = NotificationPipeline::in_memory(risk_config());
    let access = finding("new-api-key", "c1", "AML.T0040", 0);
    let extraction = finding("model-extraction", "c1", "AML.T0024.002", 10 * MINUTE);
    pipeline
        .ingest(&[access.clone(), extraction.clone()])
        .unwrap();
    let raised = |pipeline: &NotificationPipeline| {
        pipeline
            .firing_alerts()
            .into_iter()
            .filter(|alert| alert.rule_id == RISK_RULE_ID)
            .count()
    };
    assert_eq!(raised(&pipeline), 1);
    // One finding ends: the other still fires, so does the risk alert.
    pipeline.ingest(&[resolved(&access, 20 * 60)]).unwrap();
    assert_eq!(raised(&pipeline), 1);
    // The last one ends: the incident is over, no reminders until 24 h.
    pipeline.ingest(&[resolved(&extraction, 30 * 60)]).unwrap();
    assert_eq!(raised(&pipeline), 0);
    let scores = pipeline.risk_scores();
    assert_eq!((scores[0].risk, scores[0].raised), (120.0, false));
    let quiet = pipeline.advance_to(at(12 * HOUR)).unwrap();
    assert!(
        quiet.iter().all(|n| n.reason != NotificationReason::Repeat),
        "{:?}",
        summarise(&quiet)
    );
    // A new finding while the risk is still over the threshold: raised again.
    pipeline
        .ingest(&[finding("volume-spike", "c1", "AML.T0029", 13 * HOUR)])
        .unwrap();
    let again: Vec<Alert> = pipeline
        .firing_alerts()
        .into_iter()
        .filter(|alert| alert.rule_id == RISK_RULE_ID)
        .collect();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].starts_at, format_event_time(at(13 * HOUR)));
    assert!(
        again[0].summary.starts_with("Risk 240 on client_id=c1"),
        "{}",
        again[0].summary
    );
}

/// A deterministic pseudo-random stream of transitions over a few models
/// and rules: episodes start, resolve, and some flap.
fn random_transitions(seed: u64, count: usize) -> Vec<Alert> {
    let mut state = seed;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let models = ["recsys", "fraud", "search"];
    let rule_names = ["p99-latency", "error-rate", "drift", "model-down"];
    let severities = [
        Severity::High,
        Severity::Medium,
        Severity::Low,
        Severity::Critical,
    ];
    let techniques = ["AML.T0040", "AML.T0024.002", "AML.T0029", "AML.T0043"];
    let mut open: BTreeMap<(usize, usize), Alert> = BTreeMap::new();
    let mut transitions = Vec::new();
    let mut seconds = 0;
    while transitions.len() < count {
        seconds += next(120) as i64;
        let model = next(models.len() as u64) as usize;
        let rule = next(rule_names.len() as u64) as usize;
        match open.remove(&(model, rule)) {
            Some(alert) => transitions.push(resolved(&alert, seconds)),
            None => {
                let mut alert = firing(
                    rule_names[rule],
                    severities[rule],
                    &[
                        ("model_id", models[model]),
                        ("client_id", ["c1", "c2"][next(2) as usize]),
                    ],
                    seconds,
                );
                alert.atlas = vec![techniques[rule].to_string()];
                open.insert((model, rule), alert.clone());
                transitions.push(alert);
            }
        }
    }
    transitions
}

#[test]
fn the_same_transitions_in_any_batching_give_the_same_notifications() {
    let mut config = config();
    config.inhibit_rules = inferwatch_alert::default_inhibit_rules();
    config.risk.enabled = true;
    config.risk.threshold = 60.0;
    let transitions = random_transitions(7, 400);
    let end = inferwatch_alert::transition_time(transitions.last().unwrap()).unwrap()
        + 30 * HOUR * SECOND;

    let mut all_at_once = NotificationPipeline::in_memory(config.clone());
    let mut expected = all_at_once.ingest(&transitions).unwrap();
    expected.extend(all_at_once.advance_to(end).unwrap());
    let reasons: std::collections::BTreeSet<NotificationReason> = expected
        .iter()
        .map(|notification| notification.reason)
        .collect();
    // Every kind of notification occurs, so every timer kind is exercised.
    assert_eq!(reasons.len(), 5, "a weak scenario: {reasons:?}");
    assert!(expected
        .iter()
        .flat_map(|notification| &notification.alerts)
        .any(|alert| alert.rule_id == RISK_RULE_ID));

    let mut one_by_one = NotificationPipeline::in_memory(config.clone());
    let produced = feed(&mut one_by_one, &transitions);
    let mut produced = produced;
    produced.extend(one_by_one.advance_to(end).unwrap());
    assert_eq!(produced, expected, "one transition per call");

    for seed in [1, 2, 3] {
        let mut chunked = NotificationPipeline::in_memory(config.clone());
        let mut produced = Vec::new();
        let mut cursor = 0;
        let mut state: u64 = seed;
        while cursor < transitions.len() {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let size = 1 + (state >> 16) as usize % 37;
            let chunk = &transitions[cursor..(cursor + size).min(transitions.len())];
            cursor += chunk.len();
            produced.extend(chunked.ingest(chunk).unwrap());
            // Advance somewhere between this chunk's last transition and the next one's.
            if let Some(next) = transitions.get(cursor) {
                let last = inferwatch_alert::transition_time(chunk.last().unwrap()).unwrap();
                let next = inferwatch_alert::transition_time(next).unwrap();
                let now = last + (next - last) * ((state >> 8) % 4) as i64 / 3;
                produced.extend(chunked.advance_to(now).unwrap());
            }
        }
        produced.extend(chunked.advance_to(end).unwrap());
        assert_eq!(produced, expected, "chunking seed {seed}");
    }
}

/// An action that remembers what it was handed.
struct Recorder {
    delivered: Arc<Mutex<Vec<(String, AlertState)>>>,
}

impl Action for Recorder {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        self.delivered
            .lock()
            .unwrap()
            .push((delivery.alert.rule_id.clone(), delivery.alert.state));
        Ok(Outcome::http(200))
    }
}

#[test]
fn notifications_reach_the_dispatcher_and_are_confirmed() {
    let state_dir = tempfile::tempdir().unwrap();
    let delivered = Arc::new(Mutex::new(Vec::new()));
    // One worker, so deliveries happen in submission order.
    let settings = DeliverySettings {
        workers: 1,
        ..DeliverySettings::default()
    };
    let dispatcher = Dispatcher::start(
        DispatcherConfig::new(state_dir.path().join("outbox")).with_settings(settings),
        vec![ConfiguredAction::new(
            "recorder",
            ActionFilter::default(),
            Arc::new(Recorder {
                delivered: Arc::clone(&delivered),
            }),
        )],
    )
    .unwrap();
    let mut pipeline = NotificationPipeline::open(config(), state_dir.path()).unwrap();
    let latency = firing("p99-latency", Severity::High, &[("model_id", "recsys")], 0);
    let drift = firing("drift", Severity::Medium, &[("model_id", "recsys")], 40);
    let mut reports = Vec::new();
    for (transitions, now) in [
        (vec![latency.clone()], at(30)),
        (vec![drift], at(330)),
        (vec![resolved(&latency, 400)], at(630)),
    ] {
        let notifications = pipeline.process(&transitions, now).unwrap();
        reports.push(submit_notifications(&dispatcher, &mut pipeline, &notifications).unwrap());
    }
    assert!(dispatcher.wait_idle(std::time::Duration::from_secs(60)));
    dispatcher.shutdown();
    // The second notification repeats the latency alert; the outbox drops
    // that copy by its idempotency key.
    assert_eq!(reports[1].enqueued, 1);
    assert_eq!(reports[1].duplicates, 1);
    assert_eq!(
        *delivered.lock().unwrap(),
        rules(&[
            ("p99-latency", Firing),
            ("drift", Firing),
            ("p99-latency", Resolved)
        ])
    );
    assert!(pipeline.unsent_notifications().is_empty());
    let origins: Vec<TransitionOrigin> = pipeline
        .query(&HistoryQuery::default())
        .unwrap()
        .into_iter()
        .map(|transition| transition.origin)
        .collect();
    assert_eq!(origins, [TransitionOrigin::Engine; 3]);
}
