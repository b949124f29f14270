//! Action config files as users write them: the committed example parses
//! and builds, and malformed files are reported at file:line:column.

use std::path::{Path, PathBuf};

use inferwatch_alert::{ActionsFile, AlertError, BuildContext};
use inferwatch_core::Severity;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/actions.yaml")
}

fn secrets(name: &str) -> Option<String> {
    match name {
        "INFERWATCH_WEBHOOK_SECRET" | "SLACK_WEBHOOK_URL" | "PAGERDUTY_ROUTING_KEY" => {
            Some(format!("test-value-of-{name}"))
        }
        _ => None,
    }
}

#[test]
fn the_example_config_parses_and_builds() {
    let file = ActionsFile::load(&example_path()).unwrap();
    let kinds: Vec<(&str, &str)> = file
        .actions
        .iter()
        .map(|action| (action.name.as_str(), action.kind.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("oncall-webhook", "webhook"),
            ("alertmanager", "alertmanager"),
            ("ml-channel", "slack"),
            ("page-oncall", "pagerduty"),
            ("open-ticket", "command"),
            ("canary-rollback", "rollback"),
        ]
    );
    assert_eq!(file.actions[3].filter.min_severity, Severity::Critical);
    assert_eq!(file.delivery.max_attempts, 8);
    let built = file
        .build(
            &BuildContext::new()
                .allow_commands(true)
                .with_environment(secrets),
        )
        .unwrap();
    assert_eq!(built.len(), 6);

    // Without the operator's opt-in, the command action refuses to build.
    let refused = file
        .build(&BuildContext::new().with_environment(secrets))
        .unwrap_err()
        .to_string();
    let expected_prefix = format!(
        "{}:44:5: action 'open-ticket': command actions are disabled",
        example_path().display()
    );
    assert!(refused.starts_with(&expected_prefix), "{refused}");
}

#[test]
fn a_malformed_file_is_reported_at_file_line_and_column() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("actions.yaml");
    let cases = [
        // An unknown key of the kind's own config.
        (
            "actions:\n  - name: am\n    kind: alertmanager\n    url: http://127.0.0.1:9093\n    firing_tll: 4h\n",
            5,
            5,
            "unknown field 'firing_tll', expected one of: url, headers, generator_url, firing_ttl, timeout",
        ),
        // A YAML syntax error.
        (
            "actions:\n  - name: am\n    kind: alertmanager\n    url: \"http://127.0.0.1:9093\n",
            4,
            10,
            "while scanning a quoted scalar",
        ),
        // A bad placeholder inside a nested template.
        (
            "actions:\n  - name: rb\n    kind: rollback\n    request:\n      url: http://router/{{group.model_id}}/{{modle}}\n",
            5,
            12,
            "request.url: unknown placeholder '{{modle}}'",
        ),
        // A wrong type.
        (
            "delivery:\n  max_attempts: many\nactions: []\n",
            2,
            17,
            "",
        ),
    ];
    for (text, line, column, message) in cases {
        std::fs::write(&path, text).unwrap();
        let error = ActionsFile::load(&path).unwrap_err();
        let AlertError::Config {
            path: reported,
            line: reported_line,
            column: reported_column,
            message: reported_message,
        } = &error
        else {
            panic!("expected a config error, got {error}");
        };
        assert_eq!(reported, &path);
        assert_eq!(
            (*reported_line, *reported_column),
            (line, column),
            "{error}"
        );
        assert!(reported_message.starts_with(message), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("{}:{line}:{column}: ", path.display())),
            "{error}"
        );
    }
}
