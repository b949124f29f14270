//! DORA metrics: hand-built records with known answers.

use std::collections::BTreeMap;
use std::path::Path;

use inferwatch_alert::dora::{
    dora_report, format_duration_seconds, render_text, DeploymentEvent, DeploymentRecord,
    DoraInputs, DoraOptions, FailureCause,
};
use inferwatch_alert::{
    format_event_time, HistoryEntry, HistoryRecord, RecordedRequest, Remediation, TransitionOrigin,
};
use inferwatch_core::{Alert, AlertState, Impact, Severity, NANOS_PER_SECOND};

/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600 * NANOS_PER_SECOND;
const MINUTE: i64 = 60 * NANOS_PER_SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn record(
    at: i64,
    event: DeploymentEvent,
    model_id: &str,
    model_version: &str,
    commit_time: Option<i64>,
) -> DeploymentRecord {
    DeploymentRecord {
        timestamp: at,
        event,
        model_id: model_id.to_string(),
        model_version: model_version.to_string(),
        commit_time,
        ab_group: None,
    }
}

fn deploy(at: i64, model_id: &str, model_version: &str, commit: Option<i64>) -> DeploymentRecord {
    record(at, DeploymentEvent::Deploy, model_id, model_version, commit)
}

fn rollback(at: i64, model_id: &str, model_version: &str) -> DeploymentRecord {
    record(at, DeploymentEvent::Rollback, model_id, model_version, None)
}

/// One transition of the episode `fingerprint` that started at `start`.
fn transition(
    fingerprint: &str,
    group: &[(&str, &str)],
    severity: Severity,
    start: i64,
    end: Option<i64>,
) -> Alert {
    Alert {
        alert_id: format!("{fingerprint}@{start}"),
        fingerprint: fingerprint.to_string(),
        rule_id: format!("rule-{fingerprint}"),
        title: String::new(),
        severity,
        state: if end.is_some() {
            AlertState::Resolved
        } else {
            AlertState::Firing
        },
        starts_at: format_event_time(start),
        ends_at: end.map(format_event_time),
        group: group
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect::<BTreeMap<_, _>>(),
        value: None,
        threshold: None,
        condition: String::new(),
        atlas: Vec::new(),
        impact: Impact::default(),
        explanation: Vec::new(),
        labels: BTreeMap::new(),
        evidence: None,
        summary: String::new(),
    }
}

/// Firing, and resolved when `end` is given.
fn episode(
    fingerprint: &str,
    group: &[(&str, &str)],
    severity: Severity,
    start: i64,
    end: Option<i64>,
) -> Vec<Alert> {
    let mut transitions = vec![transition(fingerprint, group, severity, start, None)];
    if end.is_some() {
        transitions.push(transition(fingerprint, group, severity, start, end));
    }
    transitions
}

fn remediation(alert_id: &str, at: &str, status: Option<u16>, error: Option<&str>) -> Remediation {
    Remediation {
        at: at.to_string(),
        action: "canary-rollback".to_string(),
        alert_id: alert_id.to_string(),
        rule_id: "rule".to_string(),
        fingerprint: "fp".to_string(),
        dry_run: false,
        request: RecordedRequest {
            method: "POST".to_string(),
            url: "http://router/models/recsys/rollback".to_string(),
            headers: BTreeMap::new(),
            body: String::new(),
        },
        response_status: status,
        error: error.map(str::to_string),
    }
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn frequency_and_lead_time_per_model_and_overall() {
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "recsys", "2.0", Some(T0 - 3 * DAY)),
            deploy(T0 + DAY, "recsys", "2.1", Some(T0 + DAY - 26 * HOUR)),
            deploy(T0 + 2 * DAY, "fraud", "1.3", None),
            // Only stretches the period to four days.
            rollback(T0 + 4 * DAY, "vision", "3.2"),
        ],
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.since.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(report.until.as_deref(), Some("2026-01-05T00:00:00Z"));
    assert_eq!(report.period_days, 4.0);
    assert_eq!(report.overall.deploys, 3);
    assert_eq!(report.overall.deploys_per_day, Some(0.75));
    let lead = report.overall.lead_time.clone().unwrap();
    assert_eq!(lead.n, 2);
    assert_eq!(lead.median_seconds, 49.0 * 3_600.0); // (72 h + 26 h) / 2
    assert_eq!(lead.mean_seconds, 49.0 * 3_600.0);

    let names: Vec<&str> = report.models.iter().map(|m| m.model_id.as_str()).collect();
    assert_eq!(names, ["fraud", "recsys", "vision"]);
    let fraud = &report.models[0].metrics;
    assert_eq!(fraud.deploys, 1);
    assert_eq!(fraud.deploys_per_day, Some(0.25));
    assert_eq!(fraud.lead_time, None, "fraud gave no commit time");
    let recsys = &report.models[1].metrics;
    assert_eq!(recsys.deploys, 2);
    assert_eq!(recsys.lead_time.as_ref().unwrap().n, 2);
    let vision = &report.models[2].metrics;
    assert_eq!(vision.deploys, 0);
    assert_eq!(vision.rollbacks, 1);
    assert_eq!(vision.change_failure_rate, None, "no deploys, no rate");
}

#[test]
fn without_commit_times_there_is_no_lead_time() {
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "fraud", "1.3", None),
            deploy(T0 + DAY, "fraud", "1.4", None),
        ],
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.deploys, 2);
    assert_eq!(report.overall.deploys_per_day, Some(2.0));
    assert_eq!(report.overall.lead_time, None);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["overall"]["lead_time"].is_null());
}

#[test]
fn odd_lead_time_counts_take_the_middle_value() {
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "a", "1", Some(T0 - HOUR)),
            deploy(T0, "b", "1", Some(T0 - 2 * HOUR)),
            deploy(T0, "c", "1", Some(T0 - 9 * HOUR)),
        ],
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    let lead = report.overall.lead_time.unwrap();
    assert_eq!(lead.median_seconds, 2.0 * 3_600.0);
    assert_eq!(lead.mean_seconds, 4.0 * 3_600.0);
    // Every deploy at one instant: an empty period has no rate.
    assert_eq!(report.period_days, 0.0);
    assert_eq!(report.overall.deploys_per_day, None);
}

#[test]
fn a_deploy_fails_on_a_rollback_or_incident_inside_its_window_only() {
    let mut transitions = Vec::new();
    // fraud: an incident 25 h after its deploy (outside the default 24 h).
    transitions.extend(episode(
        "f",
        &[("model_id", "fraud")],
        Severity::High,
        T0 + 25 * HOUR,
        Some(T0 + 26 * HOUR),
    ));
    // vision: the incident names another version.
    transitions.extend(episode(
        "v",
        &[("model_id", "vision"), ("model_version", "3.1")],
        Severity::Critical,
        T0 + HOUR,
        Some(T0 + 2 * HOUR),
    ));
    // chat-llm: only a medium incident.
    transitions.extend(episode(
        "c",
        &[("model_id", "chat-llm")],
        Severity::Medium,
        T0 + HOUR,
        Some(T0 + 2 * HOUR),
    ));
    // translate: the incident started before the deploy.
    transitions.extend(episode(
        "t",
        &[("model_id", "translate")],
        Severity::High,
        T0 - HOUR,
        Some(T0 + HOUR),
    ));
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "recsys", "2.0", None),
            deploy(T0, "recsys", "2.1", None),
            deploy(T0, "fraud", "1.3", None),
            deploy(T0, "vision", "3.2", None),
            deploy(T0, "chat-llm", "4.0", None),
            deploy(T0, "translate", "1.0", None),
            // Rolls back 2.1 only, not the 2.0 baseline.
            rollback(T0 + 2 * HOUR, "recsys", "2.1"),
        ],
        transitions,
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.deploys, 6);
    assert_eq!(report.overall.failed_deploys, 1);
    assert_eq!(report.overall.change_failure_rate, Some(1.0 / 6.0));
    assert_eq!(report.failed_deploys.len(), 1);
    assert_eq!(report.failed_deploys[0].model_version, "2.1");
    assert_eq!(
        report.failed_deploys[0].cause,
        FailureCause::Rollback {
            at: "2026-01-01T02:00:00Z".to_string()
        }
    );
    let recsys = report
        .models
        .iter()
        .find(|m| m.model_id == "recsys")
        .unwrap();
    assert_eq!(recsys.metrics.change_failure_rate, Some(0.5));

    // A wider window catches fraud; a lower severity catches chat-llm.
    let options = DoraOptions {
        failure_window_ns: 26 * HOUR,
        min_severity: Severity::Medium,
        ..DoraOptions::default()
    };
    let report = dora_report(&inputs, &options).unwrap();
    let failed: Vec<&str> = report
        .failed_deploys
        .iter()
        .map(|failed| failed.model_id.as_str())
        .collect();
    assert_eq!(failed, ["recsys", "fraud", "chat-llm"]);
    assert!(matches!(
        &report.failed_deploys[1].cause,
        FailureCause::Incident { rule_id, at, .. }
            if rule_id == "rule-f" && at == "2026-01-02T01:00:00Z"
    ));
}

#[test]
fn an_incident_without_a_version_fails_every_version_of_its_model() {
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "recsys", "2.0", None),
            deploy(T0, "recsys", "2.1", None),
        ],
        transitions: episode(
            "r",
            &[("model_id", "recsys")],
            Severity::High,
            T0 + HOUR,
            None,
        ),
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.failed_deploys, 2);
    assert_eq!(report.overall.change_failure_rate, Some(1.0));
}

#[test]
fn time_to_restore_takes_an_earlier_rollback_and_leaves_open_incidents_out() {
    let mut transitions = Vec::new();
    // recsys: 30 min incident, rolled back after 10 min.
    transitions.extend(episode(
        "r",
        &[("model_id", "recsys")],
        Severity::High,
        T0,
        Some(T0 + 30 * MINUTE),
    ));
    // The firing transition again (a repeat): still one incident.
    transitions.push(transition(
        "r",
        &[("model_id", "recsys")],
        Severity::High,
        T0,
        None,
    ));
    // fraud: 20 min; its rollback comes after the resolution.
    transitions.extend(episode(
        "f",
        &[("model_id", "fraud")],
        Severity::Critical,
        T0 + HOUR,
        Some(T0 + HOUR + 20 * MINUTE),
    ));
    // vision: still firing.
    transitions.extend(episode(
        "v",
        &[("model_id", "vision")],
        Severity::High,
        T0 + 2 * HOUR,
        None,
    ));
    // No model: counts overall only. 40 min.
    transitions.extend(episode(
        "x",
        &[("client_id", "c-31337")],
        Severity::High,
        T0 + 3 * HOUR,
        Some(T0 + 3 * HOUR + 40 * MINUTE),
    ));
    // Low severity: left out.
    transitions.extend(episode(
        "l",
        &[("model_id", "fraud")],
        Severity::Low,
        T0,
        Some(T0 + 5 * DAY),
    ));
    let inputs = DoraInputs {
        deployments: vec![
            rollback(T0 + 10 * MINUTE, "recsys", "2.1"),
            rollback(T0 + HOUR + 25 * MINUTE, "fraud", "1.3"),
        ],
        transitions,
        ..DoraInputs::default()
    };
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    let overall = &report.overall;
    assert_eq!(overall.incidents, 4);
    assert_eq!(overall.open_incidents, 1);
    assert_eq!(overall.restored_by_rollback, 1);
    let restore = overall.time_to_restore.clone().unwrap();
    assert_eq!(restore.n, 3);
    assert_eq!(restore.median_seconds, 20.0 * 60.0); // 10, 20, 40 min
    assert_eq!(restore.mean_seconds, 70.0 / 3.0 * 60.0);

    let model = |id: &str| {
        &report
            .models
            .iter()
            .find(|m| m.model_id == id)
            .unwrap()
            .metrics
    };
    assert_eq!(
        model("recsys")
            .time_to_restore
            .as_ref()
            .unwrap()
            .mean_seconds,
        600.0
    );
    assert_eq!(model("recsys").restored_by_rollback, 1);
    assert_eq!(
        model("fraud")
            .time_to_restore
            .as_ref()
            .unwrap()
            .mean_seconds,
        1_200.0
    );
    assert_eq!(model("fraud").incidents, 1, "the low one is left out");
    assert_eq!(model("vision").open_incidents, 1);
    assert_eq!(model("vision").time_to_restore, None);
    assert!(report.models.iter().all(|m| m.model_id != "c-31337"));
}

#[test]
fn the_period_bounds_deploys_and_must_not_be_reversed() {
    let inputs = DoraInputs {
        deployments: vec![
            deploy(T0, "fraud", "1.3", None),
            deploy(T0 + DAY, "fraud", "1.4", None),
            deploy(T0 + 2 * DAY, "fraud", "1.5", None),
        ],
        ..DoraInputs::default()
    };
    let options = DoraOptions {
        since: Some(T0 + 12 * HOUR),
        until: Some(T0 + 36 * HOUR),
        ..DoraOptions::default()
    };
    let report = dora_report(&inputs, &options).unwrap();
    assert_eq!(report.overall.deploys, 1);
    assert_eq!(report.period_days, 1.0);
    assert_eq!(report.overall.deploys_per_day, Some(1.0));

    // Only since: until is the last record.
    let options = DoraOptions {
        since: Some(T0 + 12 * HOUR),
        ..DoraOptions::default()
    };
    let report = dora_report(&inputs, &options).unwrap();
    assert_eq!(report.overall.deploys, 2);
    assert_eq!(report.period_days, 1.5);

    let options = DoraOptions {
        since: Some(T0 + DAY),
        until: Some(T0),
        ..DoraOptions::default()
    };
    let error = dora_report(&inputs, &options).unwrap_err().to_string();
    assert!(
        error.contains("starts (2026-01-02T00:00:00Z) after it ends"),
        "{error}"
    );
}

#[test]
fn remediations_restore_their_incident_once_from_history_and_file() {
    let directory = tempfile::tempdir().unwrap();
    let firing = transition("r", &[("model_id", "recsys")], Severity::High, T0, None);
    let resolved = transition(
        "r",
        &[("model_id", "recsys")],
        Severity::High,
        T0,
        Some(T0 + 30 * MINUTE),
    );
    let alert_id = firing.alert_id.clone();
    // Wall-clock time of the request, far from event time.
    let wall = "2030-06-01T12:00:00Z";
    let applied = remediation(&alert_id, wall, Some(200), None);
    let mut risk = firing.clone();
    risk.fingerprint = "risk".to_string();
    let entries = vec![
        (
            T0,
            HistoryEntry::Transition {
                origin: TransitionOrigin::Engine,
                alert: Box::new(firing),
            },
        ),
        (
            T0,
            HistoryEntry::Transition {
                origin: TransitionOrigin::Risk,
                alert: Box::new(risk),
            },
        ),
        (
            T0 + 5 * MINUTE,
            HistoryEntry::Remediation {
                remediation: Box::new(applied.clone()),
            },
        ),
        (T0 + 5 * MINUTE, HistoryEntry::Commit),
        (
            T0 + 30 * MINUTE,
            HistoryEntry::Transition {
                origin: TransitionOrigin::Engine,
                alert: Box::new(resolved),
            },
        ),
        (T0 + 30 * MINUTE, HistoryEntry::Commit),
    ];
    let lines: Vec<String> = entries
        .into_iter()
        .enumerate()
        .map(|(index, (at, entry))| {
            serde_json::to_string(&HistoryRecord {
                seq: index as u64 + 1,
                at,
                entry,
            })
            .unwrap()
        })
        .collect();
    let history = directory.path().join("alert-history.jsonl");
    write_lines(&history, &lines);
    let remediations = directory.path().join("remediations.jsonl");
    let mut dry_run = remediation(&alert_id, wall, None, None);
    dry_run.dry_run = true;
    write_lines(
        &remediations,
        &[
            // The same request as in the history.
            serde_json::to_string(&applied).unwrap(),
            // Failed and dry-run requests restore nothing.
            serde_json::to_string(&remediation(&alert_id, wall, Some(503), Some("busy"))).unwrap(),
            serde_json::to_string(&dry_run).unwrap(),
            // An episode the history does not hold.
            serde_json::to_string(&remediation("elsewhere", wall, Some(200), None)).unwrap(),
        ],
    );
    let mut inputs = DoraInputs::default();
    inputs.add_history_file(&history).unwrap();
    inputs.add_remediations_file(&remediations).unwrap();
    assert_eq!(
        inputs.transitions.len(),
        2,
        "the risk transition is left out"
    );
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.incidents, 1);
    assert_eq!(report.overall.remediations, 1);
    assert_eq!(report.overall.restored_by_rollback, 1);
    assert_eq!(
        report.overall.time_to_restore.unwrap().mean_seconds,
        300.0,
        "restored at the history's event time of the rollback"
    );
    assert_eq!(report.unattributed_remediations, 1);
}

#[test]
fn a_remediation_only_in_the_file_uses_its_own_time() {
    let directory = tempfile::tempdir().unwrap();
    let transitions = episode(
        "r",
        &[("model_id", "recsys"), ("model_version", "2.1")],
        Severity::High,
        T0,
        Some(T0 + HOUR),
    );
    let at = format_event_time(T0 + 15 * MINUTE);
    let remediations = directory.path().join("remediations.jsonl");
    write_lines(
        &remediations,
        &[
            serde_json::to_string(&remediation(&transitions[0].alert_id, &at, Some(202), None))
                .unwrap(),
        ],
    );
    let mut inputs = DoraInputs {
        deployments: vec![deploy(T0 - HOUR, "recsys", "2.1", None)],
        transitions,
        ..DoraInputs::default()
    };
    inputs.add_remediations_file(&remediations).unwrap();
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.time_to_restore.unwrap().mean_seconds, 900.0);
    // The incident (at T0) comes before the remediation (T0 + 15 min).
    assert!(matches!(
        report.failed_deploys[0].cause,
        FailureCause::Incident { .. }
    ));
}

#[test]
fn a_bad_line_names_file_line_and_column() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deployments.jsonl");
    std::fs::write(
        &path,
        concat!(
            "{\"timestamp\":\"2026-01-01T00:00:00Z\",\"event\":\"deploy\",\"model_id\":\"fraud\",\"model_version\":\"1.3\"}\n",
            "\n",
            "{\"timestamp\":\"2026-01-01T00:00:00Z\",\"event\":\"deploy\",\"model_id\":\"fraud\",\"model_version\":1.3}\n",
        ),
    )
    .unwrap();
    let error = DoraInputs::default()
        .add_deployments_file(&path)
        .unwrap_err()
        .to_string();
    let expected = format!(
        "{}:3:91: invalid type: floating point `1.3`, expected a string",
        path.display()
    );
    // serde_json points at the last character of the offending value.
    assert_eq!(error, expected);

    let cases = [
        (
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"deploy","model_id":"a","model_version":"1","commit_tme":"2025-12-31T00:00:00Z"}"#,
            "unknown field `commit_tme`",
        ),
        (
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"promote","model_id":"a","model_version":"1"}"#,
            "unknown variant `promote`",
        ),
        (
            r#"{"timestamp":"yesterday","event":"deploy","model_id":"a","model_version":"1"}"#,
            "invalid timestamp 'yesterday'",
        ),
        (
            r#"{"timestamp":"2026-01-01T00:00:00Z","event":"deploy","model_id":"a","model_version":"1","commit_time":"2026-01-02T00:00:00Z"}"#,
            ":1:1: commit_time 2026-01-02T00:00:00Z is after the deploy timestamp 2026-01-01T00:00:00Z",
        ),
    ];
    for (line, wanted) in cases {
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let error = DoraInputs::default()
            .add_deployments_file(&path)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("{}:1:", path.display())),
            "{error}"
        );
        assert!(error.contains(wanted), "{error}");
    }
}

#[test]
fn simulator_deploys_and_router_rollbacks_read_as_records() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("deployments.jsonl");
    let mut lines: Vec<String> = inferwatch_sim::deploy_records(T0)
        .iter()
        .map(|record| serde_json::to_string(record).unwrap())
        .collect();
    // The router's line, as it writes it.
    lines.push(
        r#"{"event":"rollback","model_id":"recsys","model_version":"2.1","timestamp":"2026-01-01T00:31:07Z"}"#
            .to_string(),
    );
    write_lines(&path, &lines);
    let mut inputs = DoraInputs::default();
    inputs.add_deployments_file(&path).unwrap();
    assert_eq!(inputs.deployments[1].ab_group.as_deref(), Some("canary"));
    let report = dora_report(&inputs, &DoraOptions::default()).unwrap();
    assert_eq!(report.overall.deploys, 5);
    assert_eq!(report.overall.rollbacks, 1);
    let lead = report.overall.lead_time.clone().unwrap();
    assert_eq!(lead.n, 5);
    assert_eq!(lead.median_seconds, 3.0 * 86_400.0); // 26 h, 2 d, 3 d, 4 d, 5 d
    assert_eq!(report.overall.failed_deploys, 1);
    assert_eq!(report.failed_deploys[0].model_version, "2.1");

    let text = render_text(&report);
    assert!(text.starts_with(
        "DORA metrics 2026-01-01T00:00:00Z .. 2026-01-01T00:31:07Z (0.02 days); failure window 1d 0h; incidents of severity high and above\n"
    ), "{text}");
    let all = text.lines().find(|line| line.starts_with("(all)")).unwrap();
    assert!(all.contains("1/5 (20.0 %)"), "{all}");
    assert!(all.contains("3d 0h (mean 3d 0h, n=5)"), "{all}");
    let recsys = text
        .lines()
        .find(|line| line.starts_with("recsys"))
        .unwrap();
    assert!(recsys.contains("1/2 (50.0 %)"), "{recsys}");
    assert!(text.contains(
        "failed deploys:\n  recsys 2.1 deployed 2026-01-01T00:00:00Z: rolled back at 2026-01-01T00:31:07Z\n"
    ), "{text}");
}

#[test]
fn durations_read_for_people() {
    assert_eq!(format_duration_seconds(12.46), "12.5s");
    assert_eq!(format_duration_seconds(250.0), "4m 10s");
    assert_eq!(format_duration_seconds(26.0 * 3_600.0), "1d 2h");
    assert_eq!(format_duration_seconds(5.0 * 3_600.0 + 720.0), "5h 12m");
}

#[test]
fn damage_inside_a_history_file_is_an_error_but_a_torn_tail_is_not() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("alert-history.jsonl");
    let alert = transition("r", &[("model_id", "recsys")], Severity::High, T0, None);
    let line = |seq: u64, entry: HistoryEntry| {
        serde_json::to_string(&HistoryRecord { seq, at: T0, entry }).unwrap()
    };
    let transition_line = line(
        1,
        HistoryEntry::Transition {
            origin: TransitionOrigin::Engine,
            alert: Box::new(alert),
        },
    );
    let commit = line(2, HistoryEntry::Commit);
    std::fs::write(&path, format!("{transition_line}\n{commit}\n{{\"seq\":3,")).unwrap();
    let mut inputs = DoraInputs::default();
    inputs.add_history_file(&path).unwrap();
    assert_eq!(inputs.transitions.len(), 1);

    std::fs::write(
        &path,
        format!("{{\"seq\":1,\n{transition_line}\n{commit}\n"),
    )
    .unwrap();
    let error = DoraInputs::default()
        .add_history_file(&path)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("{}:1: corrupt alert history", path.display())),
        "{error}"
    );
}
