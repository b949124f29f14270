//! `{{placeholder}}` templates for rollback requests and Alertmanager
//! generator URLs.
//!
//! Placeholders: `alert_id`, `fingerprint`, `rule_id`, `title`, `severity`,
//! `state`, `starts_at`, `ends_at`, `value`, `threshold`,
//! `idempotency_key`, `group.NAME` and `labels.NAME`. A `group.` or
//! `labels.` name the alert lacks is an error at render time (a rollback
//! of an unknown model must not be sent), any other unknown name an error
//! when the config is loaded.

use crate::delivery::{state_name, Delivery};

/// How substituted values are escaped for where they land.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escape {
    /// As is; control characters are refused (header values).
    Plain,
    /// Inside a JSON string: quotes, backslashes and controls escaped.
    JsonString,
    /// A URL component: everything but unreserved characters percent-encoded.
    Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    AlertId,
    Fingerprint,
    RuleId,
    Title,
    Severity,
    State,
    StartsAt,
    EndsAt,
    Value,
    Threshold,
    IdempotencyKey,
    Group(String),
    Label(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Field),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; the error names the offending placeholder.
    pub(crate) fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let after_open = &rest[open + 2..];
            let Some(close) = after_open.find("}}") else {
                return Err(format!("unclosed placeholder '{}'", &rest[open..]));
            };
            let name = after_open[..close].trim();
            parts.push(Part::Field(field(name)?));
            rest = &after_open[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Fills the placeholders from the delivery, escaping values.
    pub(crate) fn render(&self, delivery: &Delivery, escape: Escape) -> Result<String, String> {
        let alert = &delivery.alert;
        let mut output = String::new();
        for part in &self.parts {
            let value = match part {
                Part::Text(text) => {
                    output.push_str(text);
                    continue;
                }
                Part::Field(Field::AlertId) => alert.alert_id.clone(),
                Part::Field(Field::Fingerprint) => alert.fingerprint.clone(),
                Part::Field(Field::RuleId) => alert.rule_id.clone(),
                Part::Field(Field::Title) => alert.title.clone(),
                Part::Field(Field::Severity) => alert.severity.to_string(),
                Part::Field(Field::State) => state_name(alert.state).to_string(),
                Part::Field(Field::StartsAt) => alert.starts_at.clone(),
                Part::Field(Field::EndsAt) => alert.ends_at.clone().unwrap_or_default(),
                Part::Field(Field::Value) => alert.value.map(|v| v.to_string()).unwrap_or_default(),
                Part::Field(Field::Threshold) => {
                    alert.threshold.map(|v| v.to_string()).unwrap_or_default()
                }
                Part::Field(Field::IdempotencyKey) => delivery.idempotency_key.clone(),
                Part::Field(Field::Group(name)) => {
                    alert.group.get(name).cloned().ok_or_else(|| {
                        format!("alert {} has no group value '{name}'", alert.alert_id)
                    })?
                }
                Part::Field(Field::Label(name)) => alert
                    .labels
                    .get(name)
                    .cloned()
                    .ok_or_else(|| format!("alert {} has no label '{name}'", alert.alert_id))?,
            };
            match escape {
                Escape::Plain => {
                    if value.chars().any(char::is_control) {
                        return Err(format!("value {value:?} has control characters"));
                    }
                    output.push_str(&value);
                }
                Escape::JsonString => {
                    let quoted = serde_json::Value::String(value).to_string();
                    output.push_str(&quoted[1..quoted.len() - 1]);
                }
                Escape::Url => percent_encode(&value, &mut output),
            }
        }
        Ok(output)
    }
}

fn field(name: &str) -> Result<Field, String> {
    let field = match name {
        "alert_id" => Field::AlertId,
        "fingerprint" => Field::Fingerprint,
        "rule_id" => Field::RuleId,
        "title" => Field::Title,
        "severity" => Field::Severity,
        "state" => Field::State,
        "starts_at" => Field::StartsAt,
        "ends_at" => Field::EndsAt,
        "value" => Field::Value,
        "threshold" => Field::Threshold,
        "idempotency_key" => Field::IdempotencyKey,
        _ => {
            if let Some(key) = name.strip_prefix("group.").filter(|key| !key.is_empty()) {
                Field::Group(key.to_string())
            } else if let Some(key) = name.strip_prefix("labels.").filter(|key| !key.is_empty()) {
                Field::Label(key.to_string())
            } else {
                return Err(format!(
                    "unknown placeholder '{{{{{name}}}}}', expected one of: alert_id, fingerprint, rule_id, title, severity, state, starts_at, ends_at, value, threshold, idempotency_key, group.NAME, labels.NAME"
                ));
            }
        }
    };
    Ok(field)
}

fn percent_encode(value: &str, output: &mut String) {
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            output.push(byte as char);
        } else {
            output.push_str(&format!("%{byte:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_with_the_right_escaping() {
        let mut alert = crate::test_alert();
        alert
            .group
            .insert("model_id".into(), "rec sys/\"v\"".into());
        let delivery = Delivery::new(alert);
        let template = Template::parse("m={{ group.model_id }}&r={{rule_id}}").unwrap();
        assert_eq!(
            template.render(&delivery, Escape::Url).unwrap(),
            "m=rec%20sys%2F%22v%22&r=canary-regression"
        );
        assert_eq!(
            template.render(&delivery, Escape::JsonString).unwrap(),
            "m=rec sys/\\\"v\\\"&r=canary-regression"
        );
        let missing = Template::parse("{{group.model_version}}").unwrap();
        assert!(missing
            .render(&delivery, Escape::Plain)
            .unwrap_err()
            .ends_with("has no group value 'model_version'"));
    }

    #[test]
    fn rejects_unknown_and_unclosed_placeholders() {
        assert!(Template::parse("{{alertid}}")
            .unwrap_err()
            .starts_with("unknown placeholder '{{alertid}}'"));
        assert_eq!(
            Template::parse("x {{rule_id").unwrap_err(),
            "unclosed placeholder '{{rule_id'"
        );
        assert!(Template::parse("{{group.}}").is_err());
    }
}
