//! The noise-control config files as users write them: the committed
//! examples parse into what they say, and malformed files are reported at
//! file:line:column.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use inferwatch_alert::{
    alert_label_set, default_inhibit_rules, AlertError, GroupBy, NotificationPipeline,
    NotifyConfig, SilencesFile,
};
use inferwatch_core::{Alert, AlertState, Impact, Severity};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

#[test]
fn the_example_notify_config_parses() {
    let config = NotifyConfig::load(&example("notify.yaml")).unwrap();
    assert_eq!(
        config.route.group_by,
        GroupBy::Labels(vec!["model_id".to_string()])
    );
    assert_eq!(config.route.group_wait, Duration::from_secs(30));
    assert_eq!(config.route.group_interval, Duration::from_secs(300));
    assert_eq!(config.route.repeat_interval, Duration::from_secs(4 * 3600));
    assert_eq!(config.inhibit_rules, default_inhibit_rules());
    assert_eq!(config.flapping.max_changes, 4);
    assert_eq!(config.flapping.stable_for, Duration::from_secs(1800));
    assert_eq!(config.risk.threshold, 100.0);
    assert_eq!(config.risk.severity_weights.critical, 50.0);
    assert_eq!(config.risk.tactics["AML.T0057"], "AML.TA0010");
    // Apart from group_by and the added tactic, the example shows the defaults.
    let mut defaults = NotifyConfig::default();
    defaults.route.group_by = config.route.group_by.clone();
    defaults.risk.tactics = config.risk.tactics.clone();
    assert_eq!(config, defaults);
}

#[test]
fn the_example_silences_parse_and_load_into_a_pipeline() {
    let file = SilencesFile::load(&example("silences.yaml")).unwrap();
    assert_eq!(file.silences.len(), 2);
    assert_eq!(file.silences[0].id, "recsys-retraining");
    assert_eq!(file.silences[0].created_by, "alice");
    assert!(file.silences[1].id.starts_with("silence-"));
    let at = inferwatch_alert::parse_event_time("2026-01-02T01:00:00Z").unwrap();
    let load_test = &file.silences[1];
    assert!(load_test.silences(&alert_label_set(&latency_alert_on("search")), at));
    assert!(!load_test.silences(&alert_label_set(&latency_alert_on("recsys")), at));

    // Loading the file again at the next start adds nothing new.
    let state_dir = tempfile::tempdir().unwrap();
    let mut pipeline =
        NotificationPipeline::open(NotifyConfig::default(), state_dir.path()).unwrap();
    assert_eq!(pipeline.add_silences(&file.silences).unwrap(), 2);
    drop(pipeline);
    let mut pipeline =
        NotificationPipeline::open(NotifyConfig::default(), state_dir.path()).unwrap();
    assert_eq!(pipeline.silences().len(), 2);
    assert_eq!(pipeline.add_silences(&file.silences).unwrap(), 0);
}

fn latency_alert_on(model_id: &str) -> Alert {
    Alert {
        alert_id: "a1".to_string(),
        fingerprint: "f1".to_string(),
        rule_id: "p99-latency".to_string(),
        title: "p99 latency".to_string(),
        severity: Severity::High,
        state: AlertState::Firing,
        starts_at: "2026-01-02T01:00:00Z".to_string(),
        ends_at: None,
        group: [("model_id".to_string(), model_id.to_string())].into(),
        value: None,
        threshold: None,
        condition: String::new(),
        atlas: Vec::new(),
        impact: Impact::default(),
        summary: String::new(),
        explanation: Vec::new(),
        labels: BTreeMap::new(),
        evidence: None,
    }
}

fn load_error(name: &str, text: &str, load: fn(&Path) -> Result<(), AlertError>) -> String {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join(name);
    std::fs::write(&path, text).unwrap();
    let message = load(&path).expect_err("should be rejected").to_string();
    message.replace(&directory.path().display().to_string(), "DIR")
}

fn notify_error(text: &str) -> String {
    load_error("notify.yaml", text, |path| {
        NotifyConfig::load(path).map(drop)
    })
}

fn silences_error(text: &str) -> String {
    load_error("silences.yaml", text, |path| {
        SilencesFile::load(path).map(drop)
    })
}

#[test]
fn a_malformed_notify_config_is_reported_at_file_line_and_column() {
    assert_eq!(
        notify_error("route:\n  group_wait: 30s\nflaping:\n  max_changes: 3\n"),
        "DIR/notify.yaml:3:1: unknown field 'flaping', expected one of: route, inhibit_rules, flapping, risk, snapshot_every_records"
    );
    assert_eq!(
        notify_error("route:\n  repeat_interval: often\n"),
        "DIR/notify.yaml:2:20: repeat_interval: invalid duration 'often', expected e.g. 500ms, 10s or 5m"
    );
    assert_eq!(
        notify_error("flapping:\n  max_changes: 0\n"),
        "DIR/notify.yaml:2:16: max_changes: must be at least 1"
    );
    assert_eq!(
        notify_error("inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity']\n"),
        "DIR/notify.yaml:3:23: target_matchers: matcher 'severity': no operator; expected e.g. model_id=\"recsys\" or severity=~\"low|medium\""
    );
    assert_eq!(
        notify_error("risk:\n  threshold: -5\n"),
        "DIR/notify.yaml:2:14: threshold: must be a positive number"
    );
    assert!(notify_error("route:\n  group_by: [model_id\n").starts_with("DIR/notify.yaml:3:1: "));
}

#[test]
fn malformed_silences_are_reported_at_file_line_and_column() {
    let good = "silences:\n  - id: s1\n    matchers: ['model_id=\"recsys\"']\n    starts_at: 2026-01-01T00:00:00Z\n    ends_at: 2026-01-01T01:00:00Z\n    created_by: alice\n";
    assert!(SilencesFile::from_yaml_str(Path::new("s.yaml"), good).is_ok());
    assert_eq!(
        silences_error(&good.replace("created_by: alice\n", "")),
        "DIR/silences.yaml:2:5: missing field `created_by`"
    );
    assert_eq!(
        silences_error(&good.replace("'model_id=\"recsys\"'", "'model_id!~\"[\"'")),
        "DIR/silences.yaml:3:16: matchers: matcher 'model_id!~\"[\"': invalid regular expression: unclosed character class"
    );
    assert_eq!(
        silences_error(&good.replace("matchers: ['model_id=\"recsys\"']", "matchers: []")),
        "DIR/silences.yaml:2:5: matchers: at least one matcher is required"
    );
    assert_eq!(
        silences_error(&format!("{good}{}", &good["silences:\n".len()..])),
        "DIR/silences.yaml:7:5: duplicate silence id 's1'"
    );
}
