//! Label matchers, as silences and inhibition rules use them, and the label
//! set an alert is matched on.
//!
//! A matcher is written the way Alertmanager users write them:
//! `name="value"`, `name!="value"`, `name=~"regex"` or `name!~"regex"`. The
//! quotes are optional for values without spaces or quotes. Regular
//! expressions are anchored at both ends (`=~"low|medium"` matches `low`,
//! not `lowest`), and a missing label matches like an empty value, so
//! `team!="ml"` matches alerts that have no `team` label.
//!
//! An alert's label set is built like the Alertmanager action builds its
//! labels: the rule labels, then the group key values, then `severity` and
//! `alertname` (the rule id); later entries win.

use std::collections::BTreeMap;
use std::fmt;

use inferwatch_core::Alert;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::AlertError;

/// How a matcher compares a label's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOperator {
    /// `=`: the value equals.
    Equal,
    /// `!=`: the value differs.
    NotEqual,
    /// `=~`: the whole value matches the regular expression.
    Regex,
    /// `!~`: the whole value does not match the regular expression.
    NotRegex,
}

impl MatchOperator {
    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            MatchOperator::Equal => "=",
            MatchOperator::NotEqual => "!=",
            MatchOperator::Regex => "=~",
            MatchOperator::NotRegex => "!~",
        }
    }
}

/// One label condition, e.g. `severity=~"low|medium"`.
///
/// Serialised as its text, so silences in the history read as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LabelMatcher {
    /// The label name.
    pub name: String,
    /// The comparison.
    pub operator: MatchOperator,
    /// The value or, for `=~` / `!~`, the regular expression.
    pub value: String,
    /// The anchored regular expression, for `=~` / `!~`.
    regex: Option<Regex>,
}

impl PartialEq for LabelMatcher {
    fn eq(&self, other: &LabelMatcher) -> bool {
        self.name == other.name && self.operator == other.operator && self.value == other.value
    }
}

impl Eq for LabelMatcher {}

impl LabelMatcher {
    /// A matcher from its parts; fails when a regular expression does not compile.
    pub fn new(
        name: impl Into<String>,
        operator: MatchOperator,
        value: impl Into<String>,
    ) -> Result<LabelMatcher, AlertError> {
        let name = name.into();
        let value = value.into();
        if name.is_empty() {
            return Err(AlertError::Invalid("matcher: empty label name".to_string()));
        }
        let regex = match operator {
            MatchOperator::Equal | MatchOperator::NotEqual => None,
            MatchOperator::Regex | MatchOperator::NotRegex => {
                Some(Regex::new(&format!("^(?:{value})$")).map_err(|error| {
                    AlertError::Invalid(format!(
                        "matcher '{name}{}\"{value}\"': invalid regular expression: {}",
                        operator.symbol(),
                        regex_error_summary(&error.to_string())
                    ))
                })?)
            }
        };
        Ok(LabelMatcher {
            name,
            operator,
            value,
            regex,
        })
    }

    /// Parses `name<op>value`, where `<op>` is `=`, `!=`, `=~` or `!~` and the
    /// value may be double-quoted (with `\"` and `\\` escapes).
    pub fn parse(text: &str) -> Result<LabelMatcher, AlertError> {
        let invalid = |why: &str| {
            AlertError::Invalid(format!(
                "matcher '{text}': {why}; expected e.g. model_id=\"recsys\" or severity=~\"low|medium\""
            ))
        };
        let Some(operator_at) = text.find(['=', '!']) else {
            return Err(invalid("no operator"));
        };
        let name = text[..operator_at].trim();
        let rest = &text[operator_at..];
        let (operator, value_text) = if let Some(value) = rest.strip_prefix("=~") {
            (MatchOperator::Regex, value)
        } else if let Some(value) = rest.strip_prefix("!~") {
            (MatchOperator::NotRegex, value)
        } else if let Some(value) = rest.strip_prefix("!=") {
            (MatchOperator::NotEqual, value)
        } else if let Some(value) = rest.strip_prefix('=') {
            (MatchOperator::Equal, value)
        } else {
            return Err(invalid("unknown operator"));
        };
        if name.is_empty() {
            return Err(invalid("no label name"));
        }
        if !name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | '/'))
        {
            return Err(invalid(
                "label names use letters, digits, '_', '.', '-' and '/'",
            ));
        }
        let value = unquote(value_text.trim()).ok_or_else(|| invalid("unterminated quote"))?;
        LabelMatcher::new(name, operator, value)
    }

    /// True when the label set satisfies this matcher (a missing label reads as "").
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.name).map(String::as_str).unwrap_or("");
        match (self.operator, &self.regex) {
            (MatchOperator::Equal, _) => value == self.value,
            (MatchOperator::NotEqual, _) => value != self.value,
            (MatchOperator::Regex, Some(regex)) => regex.is_match(value),
            (MatchOperator::NotRegex, Some(regex)) => !regex.is_match(value),
            (MatchOperator::Regex | MatchOperator::NotRegex, None) => {
                debug_assert!(false, "regex matcher without a compiled regex");
                false
            }
        }
    }
}

impl fmt::Display for LabelMatcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}{}\"", self.name, self.operator.symbol())?;
        for character in self.value.chars() {
            if matches!(character, '"' | '\\') {
                formatter.write_str("\\")?;
            }
            write!(formatter, "{character}")?;
        }
        formatter.write_str("\"")
    }
}

impl TryFrom<String> for LabelMatcher {
    type Error = AlertError;

    fn try_from(text: String) -> Result<LabelMatcher, AlertError> {
        LabelMatcher::parse(&text)
    }
}

impl From<LabelMatcher> for String {
    fn from(matcher: LabelMatcher) -> String {
        matcher.to_string()
    }
}

/// True when every matcher matches (an empty list matches everything).
pub fn all_match(matchers: &[LabelMatcher], labels: &BTreeMap<String, String>) -> bool {
    matchers.iter().all(|matcher| matcher.matches(labels))
}

/// The labels an alert is matched and grouped on: its rule labels, its group
/// key values, `severity` and `alertname` (= rule id), later ones winning.
pub fn alert_label_set(alert: &Alert) -> BTreeMap<String, String> {
    let mut labels = alert.labels.clone();
    for (name, value) in &alert.group {
        labels.insert(name.clone(), value.clone());
    }
    labels.insert("severity".to_string(), alert.severity.to_string());
    labels.insert("alertname".to_string(), alert.rule_id.clone());
    labels
}

fn unquote(text: &str) -> Option<String> {
    let Some(inner) = text.strip_prefix('"') else {
        return Some(text.to_string());
    };
    let mut value = String::with_capacity(inner.len());
    let mut characters = inner.chars();
    while let Some(character) = characters.next() {
        match character {
            '\\' => value.push(characters.next()?),
            '"' => return characters.as_str().trim().is_empty().then_some(value),
            other => value.push(other),
        }
    }
    None
}

/// The `error: …` line of a regex error (they span several lines).
fn regex_error_summary(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rev()
        .find_map(|line| line.strip_prefix("error:"))
        .map(str::trim)
        .unwrap_or_else(|| text.lines().next().unwrap_or(text))
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
    fn the_four_operators() {
        let set = labels(&[("severity", "medium"), ("model_id", "recsys")]);
        let cases = [
            ("model_id=recsys", true),
            ("model_id=\"recsys\"", true),
            ("model_id != recsys", false),
            ("severity=~\"low|medium\"", true),
            ("severity=~\"med\"", false), // anchored
            ("severity!~\"low|medium\"", false),
            ("severity!~\"critical\"", true),
            ("team!=\"ml\"", true), // missing reads as ""
            ("team=\"\"", true),
        ];
        for (text, expected) in cases {
            let matcher = LabelMatcher::parse(text).unwrap();
            assert_eq!(matcher.matches(&set), expected, "{text}");
        }
    }

    #[test]
    fn text_round_trips_with_escapes() {
        let matcher = LabelMatcher::parse(r#"comment="say \"hi\"""#).unwrap();
        assert_eq!(matcher.value, "say \"hi\"");
        let text = matcher.to_string();
        assert_eq!(text, r#"comment="say \"hi\"""#);
        assert_eq!(LabelMatcher::parse(&text).unwrap(), matcher);
    }

    #[test]
    fn bad_matchers_are_rejected() {
        for text in ["model_id", "=x", "a=\"open", "a=~\"(\"", "a b=c"] {
            assert!(LabelMatcher::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn label_set_adds_alertname_and_severity() {
        let mut alert = crate::test_alert();
        alert
            .labels
            .insert("severity".to_string(), "ignored".to_string());
        alert.labels.insert("team".to_string(), "ml".to_string());
        let set = alert_label_set(&alert);
        assert_eq!(set["alertname"], "canary-regression");
        assert_eq!(set["severity"], "high");
        assert_eq!(set["model_id"], "recsys");
        assert_eq!(set["team"], "ml");
    }
}
