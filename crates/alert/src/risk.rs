//! Risk-based alerting: many small findings about one client add up to one
//! alert worth reading.
//!
//! Every firing finding adds risk to the entities in its group: the
//! `client_id`, `client_ip`, `source_id` and `model_version` (together with
//! its `model_id`) it names. An entity's risk over a sliding event-time
//! window (default 24 h) is
//!
//! ```text
//! risk = (Σ severity weight of its findings) × (1 + tactic_bonus × (distinct tactics − 1))
//! ```
//!
//! with weights info 1, low 5, medium 10, high 25, critical 50 and a
//! `tactic_bonus` of 0.5 by default: findings that span several MITRE ATLAS
//! tactics (access, then exfiltration, then impact) look like an attack in
//! progress, while many findings of one tactic look like one noisy problem.
//! Each finding's ATLAS technique ids are mapped to a tactic by a small
//! table ([`tactic_of`]); an id not in the table counts as its own tactic,
//! and a finding without ids adds weight but no tactic.
//!
//! When an entity's risk reaches the threshold (default 100) it raises ONE
//! alert, rule `risk-threshold`, severity high, grouped by the entity, whose
//! explanation lists the contributing findings (rule, time, risk points in
//! `lift`). Its fingerprint is stable per entity. It resolves when none of
//! the entity's findings is still firing (the incident is over) or when the
//! risk falls below the threshold as findings age out of the window; while
//! it fires, more findings do not raise it again, but a new finding after it
//! resolved does if the risk is still at the threshold. An entity with no
//! finding left in the window is forgotten, and each keeps at most
//! `max_findings_per_entity` findings (the oldest are dropped first).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use inferwatch_core::{fingerprint, Alert, AlertState, Contributor, Evidence, Impact, Severity};
use serde::{Deserialize, Serialize};

use crate::event_time::{duration_nanos, format_event_time, rfc3339};

/// The rule id of risk alerts.
pub const RISK_RULE_ID: &str = "risk-threshold";

/// Risk points per finding, by severity.
#[derive(Debug, Clone, PartialEq)]
pub struct SeverityWeights {
    /// Points of an info finding.
    pub info: f64,
    /// Points of a low finding.
    pub low: f64,
    /// Points of a medium finding.
    pub medium: f64,
    /// Points of a high finding.
    pub high: f64,
    /// Points of a critical finding.
    pub critical: f64,
}

impl Default for SeverityWeights {
    fn default() -> SeverityWeights {
        SeverityWeights {
            info: 1.0,
            low: 5.0,
            medium: 10.0,
            high: 25.0,
            critical: 50.0,
        }
    }
}

impl SeverityWeights {
    /// The points of a finding of this severity.
    pub fn weight(&self, severity: Severity) -> f64 {
        match severity {
            Severity::Info => self.info,
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }
}

/// Risk scoring settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskConfig {
    /// Off: no risk is scored and no risk alert raised.
    pub enabled: bool,
    /// The sliding window findings count in.
    pub window: Duration,
    /// Risk at or above this raises the alert.
    pub threshold: f64,
    /// Points per finding, by severity.
    pub severity_weights: SeverityWeights,
    /// Extra multiplier per distinct tactic beyond the first.
    pub tactic_bonus: f64,
    /// Group keys that name entities (`model_version` brings its `model_id`).
    pub entities: Vec<String>,
    /// Findings kept per entity; the oldest go first.
    pub max_findings_per_entity: usize,
    /// Technique → tactic mappings added to (or overriding) the built-in table.
    pub tactics: BTreeMap<String, String>,
}

impl Default for RiskConfig {
    fn default() -> RiskConfig {
        RiskConfig {
            enabled: true,
            window: Duration::from_secs(24 * 3600),
            threshold: 100.0,
            severity_weights: SeverityWeights::default(),
            tactic_bonus: 0.5,
            entities: ["client_id", "client_ip", "model_version", "source_id"]
                .map(String::from)
                .to_vec(),
            max_findings_per_entity: 256,
            tactics: BTreeMap::new(),
        }
    }
}

impl RiskConfig {
    /// The multiplier for this many distinct tactics.
    pub fn tactic_multiplier(&self, distinct_tactics: usize) -> f64 {
        1.0 + self.tactic_bonus * distinct_tactics.saturating_sub(1) as f64
    }
}

/// ATLAS techniques seen in inference logs and the tactic each serves there
/// (ATLAS lists several tactics for some, e.g. Evade AI Model; the one that
/// fits an inference-log indicator is used). Sub-techniques take their
/// parent's tactic.
const TECHNIQUE_TACTICS: &[(&str, &str)] = &[
    ("AML.T0040", "AML.TA0000"), // AI Model Inference API Access → AI Model Access
    ("AML.T0024", "AML.TA0010"), // Exfiltration via AI Inference API → Exfiltration
    ("AML.T0043", "AML.TA0001"), // Craft Adversarial Data → AI Attack Staging
    ("AML.T0015", "AML.TA0007"), // Evade AI Model → Defense Evasion
    ("AML.T0029", "AML.TA0011"), // Denial of AI Service → Impact
    ("AML.T0034", "AML.TA0011"), // Cost Harvesting → Impact
    ("AML.T0031", "AML.TA0011"), // Erode AI Model Integrity → Impact
    ("AML.T0020", "AML.TA0003"), // Poison Training Data → Resource Development
    ("AML.T0010", "AML.TA0004"), // AI Supply Chain Compromise → Initial Access
    ("AML.T0012", "AML.TA0004"), // Valid Accounts → Initial Access
    ("AML.T0051", "AML.TA0005"), // LLM Prompt Injection → Execution
];

/// Names of the tactics in [`TECHNIQUE_TACTICS`], for explanations.
const TACTIC_NAMES: &[(&str, &str)] = &[
    ("AML.TA0000", "AI Model Access"),
    ("AML.TA0001", "AI Attack Staging"),
    ("AML.TA0003", "Resource Development"),
    ("AML.TA0004", "Initial Access"),
    ("AML.TA0005", "Execution"),
    ("AML.TA0007", "Defense Evasion"),
    ("AML.TA0010", "Exfiltration"),
    ("AML.TA0011", "Impact"),
];

/// The tactic of an ATLAS technique id: from `overrides`, then the built-in
/// table (sub-techniques by their parent), else the id itself.
pub fn tactic_of(technique: &str, overrides: &BTreeMap<String, String>) -> String {
    if let Some(tactic) = overrides.get(technique) {
        return tactic.clone();
    }
    let parent = technique.split('.').take(2).collect::<Vec<_>>().join(".");
    TECHNIQUE_TACTICS
        .iter()
        .find(|(known, _)| *known == technique || *known == parent)
        .map(|(_, tactic)| tactic.to_string())
        .unwrap_or_else(|| technique.to_string())
}

/// A tactic's name, when it is one of the built-in table's.
pub fn tactic_name(tactic: &str) -> Option<&'static str> {
    TACTIC_NAMES
        .iter()
        .find(|(id, _)| *id == tactic)
        .map(|(_, name)| *name)
}

/// One finding's contribution to an entity's risk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RiskFinding {
    /// When it fired (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub at: i64,
    /// The rule that raised it.
    pub rule_id: String,
    /// Its episode.
    pub alert_id: String,
    /// Its severity.
    pub severity: Severity,
    /// Its ATLAS technique ids.
    pub atlas: Vec<String>,
    /// The tactics of those ids.
    pub tactics: Vec<String>,
    /// Its severity weight.
    pub weight: f64,
    /// Events it touched (for the risk alert's impact).
    pub events: u64,
    /// Its share of traffic.
    pub share_of_traffic: f64,
    /// Its alert has resolved (it still counts towards the risk).
    #[serde(default)]
    pub ended: bool,
}

/// One entity's findings in the window and whether its alert is raised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct EntityRisk {
    kind: String,
    labels: BTreeMap<String, String>,
    findings: VecDeque<RiskFinding>,
    raised: Option<Box<Alert>>,
}

/// An entity's current risk, for the UI and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityScore {
    /// The entity, e.g. `client_id=c1` or `model_id=recsys,model_version=v2`.
    pub entity: String,
    /// Its risk in the window.
    pub risk: f64,
    /// Findings in the window.
    pub findings: usize,
    /// Distinct tactics among them.
    pub tactics: Vec<String>,
    /// Whether its risk alert is firing.
    pub raised: bool,
}

/// Every entity's risk.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RiskState {
    entities: BTreeMap<String, EntityRisk>,
}

impl RiskState {
    /// Adds a firing finding at `at` to its entities. Returns the entities
    /// touched (to schedule their expiry) and the risk alerts that fired.
    pub(crate) fn observe(
        &mut self,
        config: &RiskConfig,
        alert: &Alert,
        at: i64,
    ) -> (Vec<String>, Vec<Alert>) {
        let mut touched = Vec::new();
        let mut raised = Vec::new();
        if !config.enabled || alert.rule_id == RISK_RULE_ID {
            return (touched, raised);
        }
        if alert.state == AlertState::Resolved {
            raised = self.end_finding(config, alert, at);
            return (touched, raised);
        }
        if alert.state != AlertState::Firing {
            return (touched, raised);
        }
        let tactics: Vec<String> = alert
            .atlas
            .iter()
            .map(|technique| tactic_of(technique, &config.tactics))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let finding = RiskFinding {
            at,
            rule_id: alert.rule_id.clone(),
            alert_id: alert.alert_id.clone(),
            severity: alert.severity,
            atlas: alert.atlas.clone(),
            tactics,
            weight: config.severity_weights.weight(alert.severity),
            events: alert.impact.events,
            share_of_traffic: alert.impact.share_of_traffic,
            ended: false,
        };
        for (key, kind, labels) in entities_of(config, &alert.group) {
            let entity = self
                .entities
                .entry(key.clone())
                .or_insert_with(|| EntityRisk {
                    kind,
                    labels,
                    findings: VecDeque::new(),
                    raised: None,
                });
            if entity
                .findings
                .iter()
                .any(|known| known.alert_id == finding.alert_id)
            {
                continue;
            }
            entity.findings.push_back(finding.clone());
            while entity.findings.len() > config.max_findings_per_entity.max(1) {
                entity.findings.pop_front();
            }
            let risk = entity.risk(config);
            if entity.raised.is_none() && risk >= config.threshold {
                let alert = entity.risk_alert(config, &key, risk, at);
                entity.raised = Some(Box::new(alert.clone()));
                raised.push(alert);
            }
            touched.push(key);
        }
        (touched, raised)
    }

    /// Marks a resolved finding as ended in its entities. An entity's risk
    /// alert resolves once none of its findings is still firing: the
    /// incident is over, and a reminder every `repeat_interval` until the
    /// findings age out of the window would be noise. The risk itself stays,
    /// so a new finding while it is at the threshold raises a new alert.
    fn end_finding(&mut self, config: &RiskConfig, alert: &Alert, at: i64) -> Vec<Alert> {
        let mut resolutions = Vec::new();
        for (key, _, _) in entities_of(config, &alert.group) {
            let Some(entity) = self.entities.get_mut(&key) else {
                continue;
            };
            for finding in entity.findings.iter_mut() {
                if finding.alert_id == alert.alert_id {
                    finding.ended = true;
                }
            }
            if entity.findings.iter().all(|finding| finding.ended) {
                if let Some(raised) = entity.raised.take() {
                    let mut resolved = *raised;
                    resolved.state = AlertState::Resolved;
                    resolved.ends_at = Some(format_event_time(at));
                    resolved.summary = format!("resolved: {}", resolved.summary);
                    resolutions.push(resolved);
                }
            }
        }
        resolutions
    }

    /// When the entity's oldest finding leaves the window.
    pub(crate) fn next_expiry(&self, config: &RiskConfig, key: &str) -> Option<i64> {
        let entity = self.entities.get(key)?;
        let oldest = entity.findings.front()?;
        Some(oldest.at.saturating_add(duration_nanos(config.window)))
    }

    /// Drops the entity's findings that left the window by `at`. Returns the
    /// resolution of its risk alert when the risk fell below the threshold.
    /// An entity with nothing left is forgotten.
    pub(crate) fn expire(&mut self, config: &RiskConfig, key: &str, at: i64) -> Option<Alert> {
        let window = duration_nanos(config.window);
        let entity = self.entities.get_mut(key)?;
        while entity
            .findings
            .front()
            .is_some_and(|finding| finding.at.saturating_add(window) <= at)
        {
            entity.findings.pop_front();
        }
        let mut resolution = None;
        if entity.raised.is_some() && entity.risk(config) < config.threshold {
            if let Some(raised) = entity.raised.take() {
                let mut resolved = *raised;
                resolved.state = AlertState::Resolved;
                resolved.ends_at = Some(format_event_time(at));
                resolution = Some(resolved);
            }
        }
        if entity.findings.is_empty() && entity.raised.is_none() {
            self.entities.remove(key);
        }
        resolution
    }

    /// Every entity's current score.
    pub(crate) fn scores(&self, config: &RiskConfig) -> Vec<EntityScore> {
        self.entities
            .iter()
            .map(|(key, entity)| EntityScore {
                entity: key.clone(),
                risk: entity.risk(config),
                findings: entity.findings.len(),
                tactics: entity.tactics().into_iter().collect(),
                raised: entity.raised.is_some(),
            })
            .collect()
    }
}

impl EntityRisk {
    fn tactics(&self) -> BTreeSet<String> {
        self.findings
            .iter()
            .flat_map(|finding| finding.tactics.iter().cloned())
            .collect()
    }

    fn risk(&self, config: &RiskConfig) -> f64 {
        let weights: f64 = self.findings.iter().map(|finding| finding.weight).sum();
        weights * config.tactic_multiplier(self.tactics().len())
    }

    fn risk_alert(&self, config: &RiskConfig, key: &str, risk: f64, at: i64) -> Alert {
        let starts_at = format_event_time(at);
        let tactics = self.tactics();
        let multiplier = config.tactic_multiplier(tactics.len());
        let tactic_names: Vec<String> = tactics
            .iter()
            .map(|tactic| match tactic_name(tactic) {
                Some(name) => format!("{name} ({tactic})"),
                None => tactic.clone(),
            })
            .collect();
        let atlas: BTreeSet<String> = self
            .findings
            .iter()
            .flat_map(|finding| finding.atlas.iter().cloned())
            .collect();
        let explanation = self
            .findings
            .iter()
            .map(|finding| Contributor {
                dimension: "finding".to_string(),
                value: format!(
                    "{} at {} ({}, tactics: {}): {:.1} risk",
                    finding.rule_id,
                    format_event_time(finding.at),
                    finding.severity,
                    if finding.tactics.is_empty() {
                        "none".to_string()
                    } else {
                        finding.tactics.join(", ")
                    },
                    finding.weight * multiplier
                ),
                // For risk alerts `lift` carries the finding's risk points.
                lift: finding.weight * multiplier,
                share: None,
            })
            .collect();
        let mut labels = BTreeMap::new();
        labels.insert("entity".to_string(), key.to_string());
        labels.insert("entity_kind".to_string(), self.kind.clone());
        let title = format!(
            "Risk {risk:.0} on {key}: {} findings across {} ATLAS tactics ({})",
            self.findings.len(),
            tactics.len(),
            if tactic_names.is_empty() {
                "none".to_string()
            } else {
                tactic_names.join(", ")
            }
        );
        Alert {
            alert_id: fingerprint([RISK_RULE_ID, key, starts_at.as_str()]),
            fingerprint: fingerprint([RISK_RULE_ID, key]),
            rule_id: RISK_RULE_ID.to_string(),
            summary: title.clone(),
            title,
            severity: Severity::High,
            state: AlertState::Firing,
            starts_at,
            ends_at: None,
            group: self.labels.clone(),
            value: Some(risk),
            threshold: Some(config.threshold),
            condition: format!(
                "sum(severity weight) x tactic multiplier over {}s >= {}",
                config.window.as_secs(),
                config.threshold
            ),
            atlas: atlas.into_iter().collect(),
            impact: Impact {
                events: self.findings.iter().map(|finding| finding.events).sum(),
                share_of_traffic: self
                    .findings
                    .iter()
                    .map(|finding| finding.share_of_traffic)
                    .fold(0.0, f64::max),
                distinct_clients: None,
            },
            explanation,
            labels,
            evidence: Some(Evidence {
                detector: "risk".to_string(),
                method: "severity_weight_x_tactic_multiplier".to_string(),
                subject: key.to_string(),
                statistic: Some(risk),
                samples: Some(self.findings.len() as u64),
                observed: Some(risk),
                expected: Some(config.threshold),
                ..Evidence::default()
            }),
        }
    }
}

/// The entities a finding's group names: (key, kind, labels).
fn entities_of(
    config: &RiskConfig,
    group: &BTreeMap<String, String>,
) -> Vec<(String, String, BTreeMap<String, String>)> {
    let mut entities = Vec::new();
    for kind in &config.entities {
        let Some(value) = group.get(kind).filter(|value| !value.is_empty()) else {
            continue;
        };
        let mut labels = BTreeMap::new();
        if kind == "model_version" {
            // A version number means nothing without its model.
            if let Some(model) = group.get("model_id").filter(|model| !model.is_empty()) {
                labels.insert("model_id".to_string(), model.clone());
            }
        }
        labels.insert(kind.clone(), value.clone());
        let key = labels
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(",");
        entities.push((key, kind.clone(), labels));
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn techniques_map_to_tactics_and_unknown_ids_stand_alone() {
        let none = BTreeMap::new();
        assert_eq!(tactic_of("AML.T0024.002", &none), "AML.TA0010");
        assert_eq!(tactic_of("AML.T0040", &none), "AML.TA0000");
        assert_eq!(tactic_of("AML.T0029", &none), tactic_of("AML.T0034", &none));
        assert_eq!(tactic_of("AML.T9999", &none), "AML.T9999");
        let overrides = [("AML.T9999".to_string(), "AML.TA0011".to_string())].into();
        assert_eq!(tactic_of("AML.T9999", &overrides), "AML.TA0011");
    }

    #[test]
    fn entities_come_from_the_group() {
        let config = RiskConfig::default();
        let group: BTreeMap<String, String> = [
            ("client_id", "c1"),
            ("model_id", "recsys"),
            ("model_version", "v2"),
            ("status", "error"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .into();
        let keys: Vec<String> = entities_of(&config, &group)
            .into_iter()
            .map(|(key, _, _)| key)
            .collect();
        assert_eq!(keys, ["client_id=c1", "model_id=recsys,model_version=v2"]);
    }

    #[test]
    fn the_multiplier_grows_with_distinct_tactics() {
        let config = RiskConfig::default();
        assert_eq!(config.tactic_multiplier(0), 1.0);
        assert_eq!(config.tactic_multiplier(1), 1.0);
        assert_eq!(config.tactic_multiplier(2), 1.5);
        assert_eq!(config.tactic_multiplier(3), 2.0);
    }
}
