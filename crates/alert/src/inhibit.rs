//! Inhibition: a firing source alert mutes target alerts that share some
//! label values, as in Alertmanager.
//!
//! The default rule says "a critical alert on model X inhibits the warnings
//! (low and medium) on model X": when the model is down, its drift and
//! latency warnings are noise. A target stays inhibited exactly while a
//! matching source is firing (in the detection engine's view: a silenced
//! source still inhibits), and an alert never inhibits itself.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::matcher::{all_match, LabelMatcher, MatchOperator};

/// One inhibition rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InhibitRule {
    /// What a muting (source) alert looks like.
    pub source_matchers: Vec<LabelMatcher>,
    /// What a muted (target) alert looks like.
    pub target_matchers: Vec<LabelMatcher>,
    /// Labels whose values must be equal in source and target (a label
    /// missing from both counts as equal).
    pub equal: Vec<String>,
}

impl InhibitRule {
    /// True when `source` (firing) mutes `target` under this rule.
    pub fn inhibits(
        &self,
        source: &BTreeMap<String, String>,
        target: &BTreeMap<String, String>,
    ) -> bool {
        all_match(&self.target_matchers, target)
            && all_match(&self.source_matchers, source)
            && self
                .equal
                .iter()
                .all(|label| source.get(label) == target.get(label))
    }
}

/// The rules used when the config names none: a critical alert on a model
/// inhibits that model's low and medium alerts.
pub fn default_inhibit_rules() -> Vec<InhibitRule> {
    let matcher = |name: &str, operator, value: &str| {
        LabelMatcher::new(name, operator, value).expect("built-in matcher is valid")
    };
    vec![InhibitRule {
        source_matchers: vec![matcher("severity", MatchOperator::Equal, "critical")],
        target_matchers: vec![matcher("severity", MatchOperator::Regex, "low|medium")],
        equal: vec!["model_id".to_string()],
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn the_default_rule_is_scoped_to_the_model() {
        let rule = &default_inhibit_rules()[0];
        let critical_x = labels(&[("severity", "critical"), ("model_id", "x")]);
        let medium_x = labels(&[("severity", "medium"), ("model_id", "x")]);
        let medium_y = labels(&[("severity", "medium"), ("model_id", "y")]);
        let high_x = labels(&[("severity", "high"), ("model_id", "x")]);
        assert!(rule.inhibits(&critical_x, &medium_x));
        assert!(!rule.inhibits(&critical_x, &medium_y));
        assert!(!rule.inhibits(&critical_x, &high_x));
        assert!(!rule.inhibits(&medium_x, &medium_x));
    }
}
