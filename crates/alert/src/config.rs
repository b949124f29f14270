//! Action config files: YAML in, [`ActionSpec`]s out, with errors at
//! file:line:column.
//!
//! ```yaml
//! delivery:            # optional; see DeliverySettings for the defaults
//!   max_attempts: 8
//!   initial_backoff: 1s
//!   max_backoff: 5m
//! actions:
//!   - name: oncall
//!     kind: webhook      # one of builtin_actions()
//!     min_severity: high # filter: this severity or above (default info)
//!     rules: [canary-regression]   # filter: only these rules (default all)
//!     url: https://hooks.example.com/inferwatch
//!     secret_env: INFERWATCH_WEBHOOK_SECRET
//! ```
//!
//! The keys `name`, `kind`, `min_severity` and `rules` are common to every
//! action; every other key belongs to the kind and is checked by the kind's
//! own config struct (`deny_unknown_fields`). Secrets can be given inline or,
//! better, named by an `*_env` key and read from the environment when the
//! actions are built.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use inferwatch_core::{parse_duration, Alert, Severity};
use marked_yaml::types::MarkedMappingNode;
use marked_yaml::{Node, Spanned};
use serde::Deserialize;

use crate::action::{builtin_actions, Action, ActionConfig};
use crate::AlertError;

/// Delivery settings shared by every action: retries and the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliverySettings {
    /// Tries per delivery, the first included, before it is dead-lettered.
    pub max_attempts: u32,
    /// Upper bound of the first retry's random delay.
    pub initial_backoff: Duration,
    /// Upper bound of any retry's random delay.
    pub max_backoff: Duration,
    /// Deliveries held in memory; more wait in the outbox journal on disk.
    pub queue_capacity: usize,
    /// Threads delivering in parallel.
    pub workers: usize,
}

impl Default for DeliverySettings {
    fn default() -> DeliverySettings {
        DeliverySettings {
            max_attempts: 8,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            queue_capacity: 1024,
            workers: 2,
        }
    }
}

/// Which alerts an action receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionFilter {
    /// The lowest severity delivered.
    pub min_severity: Severity,
    /// Only alerts of these rules, when set.
    pub rules: Option<BTreeSet<String>>,
}

impl Default for ActionFilter {
    fn default() -> ActionFilter {
        ActionFilter {
            min_severity: Severity::Info,
            rules: None,
        }
    }
}

impl ActionFilter {
    /// True when the alert passes the severity and rule filters.
    pub fn matches(&self, alert: &Alert) -> bool {
        if alert.severity < self.min_severity {
            return false;
        }
        match &self.rules {
            Some(rules) => rules.contains(&alert.rule_id),
            None => true,
        }
    }
}

/// Settings that building an action needs from its environment.
pub struct BuildContext {
    /// Whether `command` actions may be built. Off by default: running
    /// programs is opted into by whoever starts inferwatch (a CLI flag),
    /// never by the config file alone.
    pub allow_commands: bool,
    environment: EnvironmentLookup,
}

/// Reads an environment variable by name.
type EnvironmentLookup = Box<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Default for BuildContext {
    fn default() -> BuildContext {
        BuildContext {
            allow_commands: false,
            environment: Box::new(|name| std::env::var(name).ok()),
        }
    }
}

impl BuildContext {
    /// Commands disabled, secrets read from the process environment.
    pub fn new() -> BuildContext {
        BuildContext::default()
    }

    /// Allows or forbids `command` actions.
    pub fn allow_commands(mut self, allow: bool) -> BuildContext {
        self.allow_commands = allow;
        self
    }

    /// Reads `*_env` secrets through `lookup` instead of the process
    /// environment (tests, or a secrets store).
    pub fn with_environment(
        mut self,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> BuildContext {
        self.environment = Box::new(lookup);
        self
    }

    /// The value of an environment variable, through the configured lookup.
    pub fn env(&self, name: &str) -> Option<String> {
        (self.environment)(name)
    }

    /// A secret given either inline (`field`) or by environment variable
    /// name (`field_env`); `None` when neither is set.
    pub(crate) fn secret(
        &self,
        field: &str,
        inline: &Option<String>,
        from_env: &Option<String>,
    ) -> Result<Option<String>, AlertError> {
        match (inline, from_env) {
            (Some(_), Some(_)) => Err(AlertError::Invalid(format!(
                "set either {field} or {field}_env, not both"
            ))),
            (Some(value), None) => Ok(Some(value.clone())),
            (None, Some(variable)) => match self.env(variable) {
                Some(value) if !value.is_empty() => Ok(Some(value)),
                _ => Err(AlertError::Invalid(format!(
                    "{field}_env: environment variable {variable} is not set"
                ))),
            },
            (None, None) => Ok(None),
        }
    }
}

/// One action as configured: common settings plus the kind's own config.
pub struct ActionSpec {
    /// Unique name; it keys the outbox journal, so renaming an action makes
    /// its pending deliveries undeliverable (they are dead-lettered).
    pub name: String,
    /// The kind, one of [`builtin_actions`].
    pub kind: String,
    /// Which alerts it receives.
    pub filter: ActionFilter,
    config: Box<dyn ActionConfig>,
    line: usize,
    column: usize,
}

impl std::fmt::Debug for ActionSpec {
    // The kind's config is left out: it may hold secrets.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ActionSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// An action ready to run: its name, filter and implementation.
#[derive(Clone)]
pub struct ConfiguredAction {
    /// Unique name, as configured.
    pub name: String,
    /// Which alerts it receives.
    pub filter: ActionFilter,
    /// The implementation.
    pub action: Arc<dyn Action>,
}

impl ConfiguredAction {
    /// Pairs an implementation with a name and filter (for actions built in
    /// code rather than from a file).
    pub fn new(
        name: impl Into<String>,
        filter: ActionFilter,
        action: Arc<dyn Action>,
    ) -> ConfiguredAction {
        ConfiguredAction {
            name: name.into(),
            filter,
            action,
        }
    }

    /// True when this action wants this alert transition.
    pub fn accepts(&self, alert: &Alert) -> bool {
        self.filter.matches(alert) && self.action.handles(alert.state)
    }
}

impl std::fmt::Debug for ConfiguredAction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConfiguredAction")
            .field("name", &self.name)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

/// A parsed action config file.
#[derive(Debug)]
pub struct ActionsFile {
    /// Where it was read from (used in error messages).
    pub path: PathBuf,
    /// Retry and queue settings.
    pub delivery: DeliverySettings,
    /// The actions, in file order.
    pub actions: Vec<ActionSpec>,
}

/// A problem in one action's config, at a (line, column) when one is known.
/// [`ActionsFile`] turns it into [`AlertError::Config`] with the file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// What is wrong and what was expected.
    pub message: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
}

impl ConfigProblem {
    /// A problem with a spanned value, reported at its position.
    pub(crate) fn at<T>(value: &Spanned<T>, message: impl Into<String>) -> ConfigProblem {
        ConfigProblem {
            message: message.into(),
            position: value
                .span()
                .start()
                .map(|mark| (mark.line(), mark.column())),
        }
    }

    /// For `build`, where positions are added by the caller.
    pub(crate) fn into_invalid(self) -> AlertError {
        AlertError::Invalid(self.message)
    }

    /// Converts a deserialisation error, finding the key in `node` when
    /// marked-yaml gives no position (unknown and missing fields).
    pub(crate) fn from_node_error(
        error: &marked_yaml::FromNodeError,
        node: &Node,
    ) -> ConfigProblem {
        let (message, key) = match &**error {
            marked_yaml::Error::UnknownFieldError(field, expected, _) => (
                format!(
                    "unknown field '{field}', expected one of: {}",
                    expected.join(", ")
                ),
                Some(field.clone()),
            ),
            other => (
                lowercase_first(&strip_position_prefix(&other.to_string())),
                None,
            ),
        };
        let position = error
            .start_mark()
            .map(|mark| (mark.line(), mark.column()))
            .or_else(|| key.and_then(|key| find_key(node, &key)))
            .or_else(|| node_position(node));
        ConfigProblem { message, position }
    }
}

/// An optional `timeout:` field, or `default`.
pub(crate) fn timeout_field(
    value: &Option<Spanned<String>>,
    default: Duration,
) -> Result<Duration, ConfigProblem> {
    match value {
        None => Ok(default),
        Some(text) => {
            let timeout = duration_field(text, "timeout")?;
            if timeout.is_zero() {
                return Err(ConfigProblem::at(text, "timeout: must be more than zero"));
            }
            Ok(timeout)
        }
    }
}

/// Parses a duration such as `500ms`, `10s` or `5m`.
pub(crate) fn duration_field(
    value: &Spanned<String>,
    field: &str,
) -> Result<Duration, ConfigProblem> {
    let nanos = parse_duration(value.as_str()).map_err(|_| {
        ConfigProblem::at(
            value,
            format!(
                "{field}: invalid duration '{}', expected e.g. 500ms, 10s or 5m",
                value.as_str()
            ),
        )
    })?;
    if nanos < 0 {
        return Err(ConfigProblem::at(
            value,
            format!("{field}: must not be negative"),
        ));
    }
    Ok(Duration::from_nanos(nanos as u64))
}

const COMMON_KEYS: [&str; 4] = ["name", "kind", "min_severity", "rules"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonDocument {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    min_severity: Option<Spanned<String>>,
    #[serde(default)]
    rules: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryDocument {
    #[serde(default)]
    max_attempts: Option<Spanned<u32>>,
    #[serde(default)]
    initial_backoff: Option<Spanned<String>>,
    #[serde(default)]
    max_backoff: Option<Spanned<String>>,
    #[serde(default)]
    queue_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    workers: Option<Spanned<usize>>,
}

impl ActionsFile {
    /// Reads and checks an action config file.
    pub fn load(path: &Path) -> Result<ActionsFile, AlertError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ActionsFile::from_yaml_str(path, &text)
    }

    /// Checks action config YAML; `path` is used in error messages.
    pub fn from_yaml_str(path: &Path, text: &str) -> Result<ActionsFile, AlertError> {
        let at = |problem: ConfigProblem| {
            let (line, column) = problem.position.unwrap_or((1, 1));
            AlertError::Config {
                path: path.to_path_buf(),
                line,
                column,
                message: problem.message,
            }
        };
        let root = marked_yaml::parse_yaml(0, text).map_err(|error| at(load_problem(&error)))?;
        let Some(mapping) = root.as_mapping() else {
            return Err(at(ConfigProblem {
                message: "expected a mapping with an 'actions' list".to_string(),
                position: node_position(&root),
            }));
        };
        for key in mapping.keys() {
            if key.as_str() != "delivery" && key.as_str() != "actions" {
                return Err(at(ConfigProblem {
                    message: format!(
                        "unknown field '{}', expected one of: delivery, actions",
                        key.as_str()
                    ),
                    position: key.span().start().map(|mark| (mark.line(), mark.column())),
                }));
            }
        }
        let delivery = match mapping.get_node("delivery") {
            Some(node) => delivery_settings(node).map_err(at)?,
            None => DeliverySettings::default(),
        };
        let Some(actions_node) = mapping.get_node("actions") else {
            return Err(at(ConfigProblem {
                message: "missing field 'actions'".to_string(),
                position: node_position(&root),
            }));
        };
        let Some(entries) = actions_node.as_sequence() else {
            return Err(at(ConfigProblem {
                message: "actions: expected a list of actions".to_string(),
                position: node_position(actions_node),
            }));
        };
        let kinds = builtin_actions();
        let mut names = HashSet::new();
        let mut actions = Vec::with_capacity(entries.len());
        for entry in entries.iter() {
            let spec = action_spec(entry, &kinds).map_err(at)?;
            if !names.insert(spec.name.clone()) {
                return Err(at(ConfigProblem {
                    message: format!("duplicate action name '{}'", spec.name),
                    position: Some((spec.line, spec.column)),
                }));
            }
            actions.push(spec);
        }
        Ok(ActionsFile {
            path: path.to_path_buf(),
            delivery,
            actions,
        })
    }

    /// Builds every action: resolves secrets and checks what needs the
    /// environment (e.g. whether commands are allowed). Errors name the
    /// action's position in the file.
    pub fn build(&self, context: &BuildContext) -> Result<Vec<ConfiguredAction>, AlertError> {
        self.actions
            .iter()
            .map(|spec| {
                let action =
                    spec.config
                        .build(&spec.name, context)
                        .map_err(|error| AlertError::Config {
                            path: self.path.clone(),
                            line: spec.line,
                            column: spec.column,
                            message: format!("action '{}': {}", spec.name, error_message(error)),
                        })?;
                Ok(ConfiguredAction {
                    name: spec.name.clone(),
                    filter: spec.filter.clone(),
                    action: Arc::from(action),
                })
            })
            .collect()
    }
}

fn error_message(error: AlertError) -> String {
    match error {
        AlertError::Invalid(message) => message,
        other => other.to_string(),
    }
}

fn delivery_settings(node: &Node) -> Result<DeliverySettings, ConfigProblem> {
    let document: DeliveryDocument = marked_yaml::from_node(node)
        .map_err(|error| ConfigProblem::from_node_error(&error, node))?;
    let mut settings = DeliverySettings::default();
    if let Some(max_attempts) = &document.max_attempts {
        if **max_attempts == 0 {
            return Err(ConfigProblem::at(
                max_attempts,
                "max_attempts: must be at least 1",
            ));
        }
        settings.max_attempts = **max_attempts;
    }
    if let Some(value) = &document.initial_backoff {
        settings.initial_backoff = duration_field(value, "initial_backoff")?;
    }
    if let Some(value) = &document.max_backoff {
        settings.max_backoff = duration_field(value, "max_backoff")?;
    }
    if let Some(capacity) = &document.queue_capacity {
        if **capacity == 0 {
            return Err(ConfigProblem::at(
                capacity,
                "queue_capacity: must be at least 1",
            ));
        }
        settings.queue_capacity = **capacity;
    }
    if let Some(workers) = &document.workers {
        if **workers == 0 {
            return Err(ConfigProblem::at(workers, "workers: must be at least 1"));
        }
        settings.workers = **workers;
    }
    Ok(settings)
}

fn action_spec(
    entry: &Node,
    kinds: &[crate::action::ActionKind],
) -> Result<ActionSpec, ConfigProblem> {
    let Some(mapping) = entry.as_mapping() else {
        return Err(ConfigProblem {
            message: "expected an action (a mapping with name and kind)".to_string(),
            position: node_position(entry),
        });
    };
    let (line, column) = node_position(entry).unwrap_or((1, 1));
    // Split the entry: common keys go to CommonDocument, the rest to the kind.
    let mut common = mapping.clone();
    let mut specific = mapping.clone();
    for key in mapping.keys() {
        if COMMON_KEYS.contains(&key.as_str()) {
            specific.remove(key.as_str());
        } else {
            common.remove(key.as_str());
        }
    }
    let common_node = Node::Mapping(common);
    let document: CommonDocument = marked_yaml::from_node(&common_node)
        .map_err(|error| ConfigProblem::from_node_error(&error, entry))?;
    let name = document.name.as_str();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ConfigProblem::at(
            &document.name,
            "name: use letters, digits, '-', '_' and '.' only",
        ));
    }
    let Some(kind) = kinds
        .iter()
        .find(|kind| kind.name == document.kind.as_str())
    else {
        let known: Vec<&str> = kinds.iter().map(|kind| kind.name).collect();
        return Err(ConfigProblem::at(
            &document.kind,
            format!(
                "unknown action kind '{}', expected one of: {}",
                document.kind.as_str(),
                known.join(", ")
            ),
        ));
    };
    let min_severity = match &document.min_severity {
        None => Severity::Info,
        Some(text) => parse_severity(text.as_str()).ok_or_else(|| {
            ConfigProblem::at(
                text,
                format!(
                    "min_severity: unknown severity '{}', expected one of: info, low, medium, high, critical",
                    text.as_str()
                ),
            )
        })?,
    };
    let specific_node = Node::Mapping(with_span(specific, mapping));
    let config = (kind.parse)(&specific_node)?;
    Ok(ActionSpec {
        name: name.to_string(),
        kind: kind.name.to_string(),
        filter: ActionFilter {
            min_severity,
            rules: document.rules.map(|rules| rules.into_iter().collect()),
        },
        config,
        line,
        column,
    })
}

fn with_span(mut mapping: MarkedMappingNode, original: &MarkedMappingNode) -> MarkedMappingNode {
    *mapping.span_mut() = *original.span();
    mapping
}

/// Parses a severity name as used in rules and alerts.
pub fn parse_severity(text: &str) -> Option<Severity> {
    match text {
        "info" => Some(Severity::Info),
        "low" => Some(Severity::Low),
        "medium" => Some(Severity::Medium),
        "high" => Some(Severity::High),
        "critical" => Some(Severity::Critical),
        _ => None,
    }
}

pub(crate) fn node_position(node: &Node) -> Option<(usize, usize)> {
    // marked-yaml starts a block mapping's span after its first key, so a
    // mapping is placed at its first key instead.
    let first_key = node
        .as_mapping()
        .and_then(|mapping| mapping.keys().next())
        .and_then(|key| key.span().start());
    first_key
        .or_else(|| node.span().start())
        .map(|mark| (mark.line(), mark.column()))
}

/// The position of the first mapping key named `key` anywhere under `node`.
pub(crate) fn find_key(node: &Node, key: &str) -> Option<(usize, usize)> {
    match node {
        Node::Scalar(_) => None,
        Node::Sequence(items) => items.iter().find_map(|item| find_key(item, key)),
        Node::Mapping(mapping) => mapping.iter().find_map(|(name, value)| {
            if name.as_str() == key {
                name.span().start().map(|mark| (mark.line(), mark.column()))
            } else {
                find_key(value, key)
            }
        }),
    }
}

pub(crate) fn load_problem(error: &marked_yaml::LoadError) -> ConfigProblem {
    let marker = match error {
        marked_yaml::LoadError::TopLevelMustBeMapping(mark)
        | marked_yaml::LoadError::TopLevelMustBeSequence(mark)
        | marked_yaml::LoadError::UnexpectedAnchor(mark)
        | marked_yaml::LoadError::MappingKeyMustBeScalar(mark)
        | marked_yaml::LoadError::UnexpectedTag(mark)
        | marked_yaml::LoadError::ScanError(mark, _) => Some(*mark),
        _ => None,
    };
    ConfigProblem {
        message: lowercase_first(&strip_position_prefix(&error.to_string())),
        position: marker.map(|mark| (mark.line(), mark.column())),
    }
}

/// marked-yaml prefixes some messages with `line:column: `; we print our own.
fn strip_position_prefix(message: &str) -> String {
    let mut rest = message;
    for _ in 0..3 {
        match rest.split_once(':') {
            Some((head, tail))
                if !head.trim().is_empty() && head.trim().chars().all(|c| c.is_ascii_digit()) =>
            {
                rest = tail.trim_start();
            }
            _ => break,
        }
    }
    rest.to_string()
}

fn lowercase_first(text: &str) -> String {
    let mut characters = text.chars();
    match characters.next() {
        Some(first) => first.to_lowercase().chain(characters).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        ActionsFile::from_yaml_str(Path::new("actions.yaml"), text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn unknown_kind_field_is_reported_at_its_key() {
        let text = "actions:\n  - name: hook\n    kind: webhook\n    url: http://127.0.0.1:9/\n    retries: 3\n";
        assert_eq!(
            error_of(text),
            "actions.yaml:5:5: unknown field 'retries', expected one of: url, secret, secret_env, headers, timeout"
        );
    }

    #[test]
    fn yaml_syntax_error_names_line_and_column() {
        let text = "actions:\n  - name: hook\n    kind: [webhook\n";
        let message = error_of(text);
        assert!(message.starts_with("actions.yaml:4:1: "), "{message}");
    }

    #[test]
    fn bad_duration_is_reported_at_the_value() {
        let text = "actions:\n  - name: hook\n    kind: webhook\n    url: http://127.0.0.1:9/\n    timeout: soon\n";
        assert_eq!(
            error_of(text),
            "actions.yaml:5:14: timeout: invalid duration 'soon', expected e.g. 500ms, 10s or 5m"
        );
    }

    #[test]
    fn unknown_kind_and_severity_and_duplicates() {
        let unknown_kind = "actions:\n  - name: a\n    kind: carrier-pigeon\n";
        assert!(error_of(unknown_kind).starts_with(
            "actions.yaml:3:11: unknown action kind 'carrier-pigeon', expected one of: webhook,"
        ));
        let bad_severity =
            "actions:\n  - name: a\n    kind: slack\n    url: http://x/\n    min_severity: urgent\n";
        assert!(error_of(bad_severity)
            .starts_with("actions.yaml:5:19: min_severity: unknown severity 'urgent'"));
        let duplicate = "actions:\n  - name: a\n    kind: slack\n    url: http://x/\n  - name: a\n    kind: slack\n    url: http://y/\n";
        assert_eq!(
            error_of(duplicate),
            "actions.yaml:5:5: duplicate action name 'a'"
        );
        let missing_kind = "actions:\n  - name: a\n";
        assert!(
            error_of(missing_kind).starts_with("actions.yaml:2:5: "),
            "{}",
            error_of(missing_kind)
        );
        let top_level = "acitons: []\n";
        assert_eq!(
            error_of(top_level),
            "actions.yaml:1:1: unknown field 'acitons', expected one of: delivery, actions"
        );
    }

    #[test]
    fn filters_select_by_severity_and_rule() {
        let text = "actions:\n  - name: a\n    kind: slack\n    url: http://x/\n    min_severity: high\n    rules: [r1]\n";
        let file = ActionsFile::from_yaml_str(Path::new("a.yaml"), text).unwrap();
        let filter = &file.actions[0].filter;
        let mut alert = crate::test_alert();
        alert.rule_id = "r1".to_string();
        alert.severity = Severity::Critical;
        assert!(filter.matches(&alert));
        alert.severity = Severity::Medium;
        assert!(!filter.matches(&alert));
        alert.severity = Severity::High;
        alert.rule_id = "r2".to_string();
        assert!(!filter.matches(&alert));
    }

    #[test]
    fn secrets_come_from_the_environment_when_built() {
        let text = "actions:\n  - name: page\n    kind: pagerduty\n    routing_key_env: PD_KEY\n";
        let file = ActionsFile::from_yaml_str(Path::new("a.yaml"), text).unwrap();
        let missing = file
            .build(&BuildContext::new().with_environment(|_| None))
            .unwrap_err()
            .to_string();
        assert_eq!(
            missing,
            "a.yaml:2:5: action 'page': routing_key_env: environment variable PD_KEY is not set"
        );
        let built = file
            .build(
                &BuildContext::new()
                    .with_environment(|name| (name == "PD_KEY").then(|| "key-1".to_string())),
            )
            .unwrap();
        assert_eq!(built[0].name, "page");
    }

    #[test]
    fn delivery_settings_are_read_and_checked() {
        let text =
            "delivery:\n  max_attempts: 3\n  initial_backoff: 250ms\n  workers: 1\nactions: []\n";
        let file = ActionsFile::from_yaml_str(Path::new("a.yaml"), text).unwrap();
        assert_eq!(file.delivery.max_attempts, 3);
        assert_eq!(file.delivery.initial_backoff, Duration::from_millis(250));
        assert_eq!(file.delivery.workers, 1);
        assert_eq!(
            file.delivery.max_backoff,
            DeliverySettings::default().max_backoff
        );
        let zero = "delivery:\n  max_attempts: 0\nactions: []\n";
        assert_eq!(
            error_of(zero),
            "actions.yaml:2:17: max_attempts: must be at least 1"
        );
    }
}
