//! The alert JSON that every output (CLI, REST, webhook) uses.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// How urgent an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational, never pages.
    Info,
    /// Worth a look during working hours.
    Low,
    /// Needs attention today.
    Medium,
    /// Needs attention now.
    High,
    /// Wake someone up.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        };
        f.write_str(name)
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds but its `for` duration has not elapsed.
    Pending,
    /// The condition held for long enough.
    Firing,
    /// The condition stopped holding (after `keep_firing_for`).
    Resolved,
}

/// How much traffic an alert touches, measured in its evaluation window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Impact {
    /// Events of the alerting group in the window.
    pub events: u64,
    /// Those events as a share of every event the rule saw in the window.
    pub share_of_traffic: f64,
    /// Distinct clients in the alerting group's window, when the events
    /// carry a client.
    pub distinct_clients: Option<u64>,
}

/// One dimension value that is over-represented in the alerting slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contributor {
    /// Column name, e.g. `source_id`.
    pub dimension: String,
    /// The over-represented value.
    pub value: String,
    /// Share in the alerting slice divided by share in the baseline.
    pub lift: f64,
    /// Share of the alerting slice that has this value, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

/// One alert transition: it fired, or it resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique per episode: fingerprint plus start time.
    pub alert_id: String,
    /// Stable identity of rule + group, shared by every episode.
    pub fingerprint: String,
    /// The rule that raised it.
    pub rule_id: String,
    /// Human title of the rule.
    pub title: String,
    /// Severity from the rule.
    pub severity: Severity,
    /// Lifecycle state of this transition.
    pub state: AlertState,
    /// Event time the alert started firing (RFC 3339).
    pub starts_at: String,
    /// Event time the alert resolved (RFC 3339), when it has.
    pub ends_at: Option<String>,
    /// Group-by key values.
    pub group: BTreeMap<String, String>,
    /// The value of the first comparison that held (or last evaluated).
    pub value: Option<f64>,
    /// The threshold that value was compared against.
    pub threshold: Option<f64>,
    /// The rule condition, as written.
    pub condition: String,
    /// MITRE ATLAS technique ids.
    pub atlas: Vec<String>,
    /// Traffic touched by the alert.
    pub impact: Impact,
    /// Top contributing dimensions with lift.
    pub explanation: Vec<Contributor>,
    /// One human line: what, where, how much traffic, and why, e.g.
    /// `p99 latency 640 ms on recsys 2.1 (10 % of traffic, 3,412 clients);
    /// 78 % of slow requests have input_tokens 2k-8k (lift 6.1)`.
    /// Empty when the producer wrote none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// Rule labels.
    pub labels: BTreeMap<String, String>,
    /// What a learned or statistical detector measured, when the rule has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The measurements behind a detector's finding: a drift test's statistic,
/// p-value, effect size and sample sizes, or a baseline's expected value and
/// z-score, or a forest's anomaly score. Absent fields don't apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The detector kind: `baseline`, `drift` or `forest`.
    pub detector: String,
    /// The test or learning method, e.g. `ks`, `mann_whitney`, `ewma`.
    pub method: String,
    /// The column or series examined.
    pub subject: String,
    /// The test statistic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// The p-value, where the test defines one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The effect size the alert is gated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// Sample size of the slice under test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u64>,
    /// Sample size of what it was compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_samples: Option<u64>,
    /// What it was compared against, e.g. `rest of source_id` or `segment baseline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The observed value (baseline detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// The learned expectation (baseline detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<f64>,
    /// Signed deviation in learned spreads (baseline detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// Estimated shift of the slice against the reference (Hodges–Lehmann).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift: Option<f64>,
    /// Confidence interval of that shift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_interval: Option<[f64; 2]>,
    /// Anomaly score in [0, 1] (forest detectors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}
