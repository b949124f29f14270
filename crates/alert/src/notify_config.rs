//! The noise-control config file (`notify.yaml`): grouping and timing,
//! inhibition rules, flapping and risk scoring. Every section is optional
//! and unknown keys are errors at file:line:column.
//!
//! ```yaml
//! route:
//!   group_by: [model_id]      # or ['...'] for every label
//!   group_wait: 30s
//!   group_interval: 5m
//!   repeat_interval: 4h
//! inhibit_rules:              # absent: the default rule; [] : none
//!   - source_matchers: ['severity="critical"']
//!     target_matchers: ['severity=~"low|medium"']
//!     equal: [model_id]
//! flapping:
//!   max_changes: 4            # more changes than this within the window is flapping
//!   window: 1h
//!   stable_for: 30m
//! risk:
//!   window: 24h
//!   threshold: 100
//!   severity_weights: {info: 1, low: 5, medium: 10, high: 25, critical: 50}
//!   tactic_bonus: 0.5
//! ```
//!
//! Silences live in their own file ([`SilencesFile`](crate::SilencesFile)):
//! they change far more often than the rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use marked_yaml::{Node, Spanned};
use serde::Deserialize;

use crate::config::{duration_field, load_problem, node_position, ConfigProblem};
use crate::flapping::FlappingConfig;
use crate::grouping::{GroupBy, RouteConfig};
use crate::inhibit::{default_inhibit_rules, InhibitRule};
use crate::risk::{RiskConfig, SeverityWeights};
use crate::silence::{matcher_list, positioned_error};
use crate::AlertError;

/// Every setting of the notification pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    /// Grouping and timing.
    pub route: RouteConfig,
    /// Inhibition rules ([`default_inhibit_rules`] unless configured).
    pub inhibit_rules: Vec<InhibitRule>,
    /// Flapping detection.
    pub flapping: FlappingConfig,
    /// Risk-based alerting.
    pub risk: RiskConfig,
    /// History records between two snapshots of the pipeline state (a
    /// restart replays at most this many).
    pub snapshot_every_records: usize,
}

impl Default for NotifyConfig {
    fn default() -> NotifyConfig {
        NotifyConfig {
            route: RouteConfig::default(),
            inhibit_rules: default_inhibit_rules(),
            flapping: FlappingConfig::default(),
            risk: RiskConfig::default(),
            snapshot_every_records: 1000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotifyDocument {
    #[serde(default)]
    route: Option<RouteDocument>,
    #[serde(default)]
    inhibit_rules: Option<Vec<InhibitDocument>>,
    #[serde(default)]
    flapping: Option<FlappingDocument>,
    #[serde(default)]
    risk: Option<RiskDocument>,
    #[serde(default)]
    snapshot_every_records: Option<Spanned<usize>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDocument {
    #[serde(default)]
    group_by: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    group_wait: Option<Spanned<String>>,
    #[serde(default)]
    group_interval: Option<Spanned<String>>,
    #[serde(default)]
    repeat_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InhibitDocument {
    #[serde(default)]
    source_matchers: Vec<Spanned<String>>,
    #[serde(default)]
    target_matchers: Vec<Spanned<String>>,
    #[serde(default)]
    equal: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlappingDocument {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    max_changes: Option<Spanned<usize>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    stable_for: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RiskDocument {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    threshold: Option<Spanned<f64>>,
    #[serde(default)]
    severity_weights: Option<WeightsDocument>,
    #[serde(default)]
    tactic_bonus: Option<Spanned<f64>>,
    #[serde(default)]
    entities: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    max_findings_per_entity: Option<Spanned<usize>>,
    #[serde(default)]
    tactics: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsDocument {
    #[serde(default)]
    info: Option<Spanned<f64>>,
    #[serde(default)]
    low: Option<Spanned<f64>>,
    #[serde(default)]
    medium: Option<Spanned<f64>>,
    #[serde(default)]
    high: Option<Spanned<f64>>,
    #[serde(default)]
    critical: Option<Spanned<f64>>,
}

impl NotifyConfig {
    /// Reads and checks a notify config file.
    pub fn load(path: &Path) -> Result<NotifyConfig, AlertError> {
        let text = std::fs::read_to_string(path).map_err(|source| AlertError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        NotifyConfig::from_yaml_str(path, &text)
    }

    /// Checks notify config YAML; `path` is used in error messages. An empty
    /// document gives the defaults.
    pub fn from_yaml_str(path: &Path, text: &str) -> Result<NotifyConfig, AlertError> {
        let path_buf: PathBuf = path.to_path_buf();
        let at = |problem: ConfigProblem| positioned_error(&path_buf, problem);
        if text.trim().is_empty() {
            return Ok(NotifyConfig::default());
        }
        let root = marked_yaml::parse_yaml(0, text).map_err(|error| at(load_problem(&error)))?;
        if root.as_mapping().is_none() {
            return Err(at(ConfigProblem {
                message: "expected a mapping with route, inhibit_rules, flapping and risk"
                    .to_string(),
                position: node_position(&root),
            }));
        }
        let document: NotifyDocument = marked_yaml::from_node(&root)
            .map_err(|error| at(ConfigProblem::from_node_error(&error, &root)))?;
        let mut config = NotifyConfig::default();
        if let Some(route) = &document.route {
            config.route = route_config(route).map_err(at)?;
        }
        if let Some(rules) = &document.inhibit_rules {
            config.inhibit_rules = rules
                .iter()
                .map(|rule| {
                    Ok(InhibitRule {
                        source_matchers: matcher_list(&rule.source_matchers, "source_matchers")?,
                        target_matchers: matcher_list(&rule.target_matchers, "target_matchers")?,
                        equal: rule.equal.clone(),
                    })
                })
                .collect::<Result<_, ConfigProblem>>()
                .map_err(at)?;
        }
        if let Some(flapping) = &document.flapping {
            config.flapping = flapping_config(flapping).map_err(at)?;
        }
        if let Some(risk) = &document.risk {
            config.risk = risk_config(risk, &root).map_err(at)?;
        }
        if let Some(every) = &document.snapshot_every_records {
            if **every == 0 {
                return Err(at(ConfigProblem::at(
                    every,
                    "snapshot_every_records: must be at least 1",
                )));
            }
            config.snapshot_every_records = **every;
        }
        Ok(config)
    }
}

fn route_config(document: &RouteDocument) -> Result<RouteConfig, ConfigProblem> {
    let mut route = RouteConfig::default();
    if let Some(labels) = &document.group_by {
        route.group_by = if labels.iter().any(|label| label.as_str() == "...") {
            if labels.len() > 1 {
                return Err(ConfigProblem::at(
                    &labels[0],
                    "group_by: '...' (every label) cannot be combined with label names",
                ));
            }
            GroupBy::All
        } else {
            GroupBy::Labels(
                labels
                    .iter()
                    .map(|label| label.as_str().to_string())
                    .collect(),
            )
        };
    }
    if let Some(value) = &document.group_wait {
        route.group_wait = duration_field(value, "group_wait")?;
    }
    if let Some(value) = &document.group_interval {
        route.group_interval = positive_duration(value, "group_interval")?;
    }
    if let Some(value) = &document.repeat_interval {
        route.repeat_interval = positive_duration(value, "repeat_interval")?;
    }
    Ok(route)
}

fn flapping_config(document: &FlappingDocument) -> Result<FlappingConfig, ConfigProblem> {
    let mut flapping = FlappingConfig::default();
    if let Some(enabled) = document.enabled {
        flapping.enabled = enabled;
    }
    if let Some(max_changes) = &document.max_changes {
        if **max_changes == 0 {
            return Err(ConfigProblem::at(
                max_changes,
                "max_changes: must be at least 1",
            ));
        }
        flapping.max_changes = **max_changes;
    }
    if let Some(value) = &document.window {
        flapping.window = positive_duration(value, "window")?;
    }
    if let Some(value) = &document.stable_for {
        flapping.stable_for = positive_duration(value, "stable_for")?;
    }
    Ok(flapping)
}

fn risk_config(document: &RiskDocument, root: &Node) -> Result<RiskConfig, ConfigProblem> {
    let mut risk = RiskConfig::default();
    if let Some(enabled) = document.enabled {
        risk.enabled = enabled;
    }
    if let Some(value) = &document.window {
        risk.window = positive_duration(value, "window")?;
    }
    if let Some(threshold) = &document.threshold {
        if !threshold.is_finite() || **threshold <= 0.0 {
            return Err(ConfigProblem::at(
                threshold,
                "threshold: must be a positive number",
            ));
        }
        risk.threshold = **threshold;
    }
    if let Some(weights) = &document.severity_weights {
        let mut severity_weights = SeverityWeights::default();
        for (value, slot) in [
            (&weights.info, &mut severity_weights.info),
            (&weights.low, &mut severity_weights.low),
            (&weights.medium, &mut severity_weights.medium),
            (&weights.high, &mut severity_weights.high),
            (&weights.critical, &mut severity_weights.critical),
        ] {
            if let Some(value) = value {
                if !value.is_finite() || **value < 0.0 {
                    return Err(ConfigProblem::at(
                        value,
                        "severity_weights: weights must be numbers >= 0",
                    ));
                }
                *slot = **value;
            }
        }
        risk.severity_weights = severity_weights;
    }
    if let Some(bonus) = &document.tactic_bonus {
        if !bonus.is_finite() || **bonus < 0.0 {
            return Err(ConfigProblem::at(
                bonus,
                "tactic_bonus: must be a number >= 0",
            ));
        }
        risk.tactic_bonus = **bonus;
    }
    if let Some(entities) = &document.entities {
        if entities.is_empty() {
            return Err(ConfigProblem {
                message: "entities: name at least one group key, or set enabled: false".to_string(),
                position: crate::config::find_key(root, "entities"),
            });
        }
        risk.entities = entities
            .iter()
            .map(|entity| entity.as_str().to_string())
            .collect();
    }
    if let Some(max) = &document.max_findings_per_entity {
        if **max == 0 {
            return Err(ConfigProblem::at(
                max,
                "max_findings_per_entity: must be at least 1",
            ));
        }
        risk.max_findings_per_entity = **max;
    }
    if let Some(tactics) = &document.tactics {
        risk.tactics = tactics.clone();
    }
    Ok(risk)
}

fn positive_duration(value: &Spanned<String>, field: &str) -> Result<Duration, ConfigProblem> {
    let duration = duration_field(value, field)?;
    if duration.is_zero() {
        return Err(ConfigProblem::at(
            value,
            format!("{field}: must be more than zero"),
        ));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        NotifyConfig::from_yaml_str(Path::new("notify.yaml"), text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn empty_config_gives_the_alertmanager_defaults() {
        let config = NotifyConfig::from_yaml_str(Path::new("n.yaml"), "").unwrap();
        assert_eq!(config, NotifyConfig::default());
        assert_eq!(config.route.group_wait, Duration::from_secs(30));
        assert_eq!(config.route.group_interval, Duration::from_secs(300));
        assert_eq!(config.route.repeat_interval, Duration::from_secs(14_400));
        assert_eq!(config.inhibit_rules, default_inhibit_rules());
    }

    #[test]
    fn sections_are_read() {
        let text = "route:\n  group_by: [model_id]\n  group_wait: 10s\ninhibit_rules: []\nflapping:\n  max_changes: 2\nrisk:\n  threshold: 50\n  severity_weights: {medium: 40}\n  tactics: {AML.T9999: AML.TA0011}\n";
        let config = NotifyConfig::from_yaml_str(Path::new("n.yaml"), text).unwrap();
        assert_eq!(
            config.route.group_by,
            GroupBy::Labels(vec!["model_id".to_string()])
        );
        assert_eq!(config.route.group_wait, Duration::from_secs(10));
        assert!(config.inhibit_rules.is_empty());
        assert_eq!(config.flapping.max_changes, 2);
        assert_eq!(config.risk.threshold, 50.0);
        assert_eq!(config.risk.severity_weights.medium, 40.0);
        assert_eq!(config.risk.severity_weights.high, 25.0);
        assert_eq!(config.risk.tactics["AML.T9999"], "AML.TA0011");
    }

    #[test]
    fn malformed_configs_name_file_line_and_column() {
        assert_eq!(
            error_of("route:\n  group_by: [model_id]\n  group_wiat: 10s\n"),
            "notify.yaml:3:3: unknown field 'group_wiat', expected one of: group_by, group_wait, group_interval, repeat_interval"
        );
        assert_eq!(
            error_of("route:\n  group_interval: 0s\n"),
            "notify.yaml:2:19: group_interval: must be more than zero"
        );
        assert_eq!(
            error_of("inhibit_rules:\n  - source_matchers: ['severity=~\"(\"']\n"),
            "notify.yaml:2:23: source_matchers: matcher 'severity=~\"(\"': invalid regular expression: unclosed group"
        );
        assert_eq!(
            error_of("risk:\n  severity_weights:\n    urgent: 3\n"),
            "notify.yaml:3:5: unknown field 'urgent', expected one of: info, low, medium, high, critical"
        );
        assert!(error_of("risk:\n  threshold: lots\n").starts_with("notify.yaml:2:14: "));
        assert!(error_of("route: [\n").starts_with("notify.yaml:2:1: "));
    }
}
