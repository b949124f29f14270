//! `{{placeholder}}` templates for rollback requests and Alertmanager
//! generator URLs.
//!
//! Placeholders: `alert_id`, `fingerprint`, `rule_id`, `title`, `severity`,
//! `state`, `starts_at`, `ends_at`, `value`, `threshold`,
//! `idempotency_key`, `group.NAME` and `labels.NAME`. A `group.` or
//! `labels.` name the alert lacks is an error at render time (a rollback
//! of an unknown model must not be sent), any other unknown name an error
//! when the config is loaded.
//!
//! Values come from log lines, so they are escaped for where they land
//! ([`Escape`]), and in a URL a value that would make a path segment `.`
//! or `..` (alone, with a neighbour, or around an encoded `%2F`) is an
//! error at render time rather than a request to another path.

use std::ops::Range;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

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
    /// A field of an `application/x-www-form-urlencoded` body: encoded as
    /// for a URL, so a value can't add `&name=value` pairs of its own.
    Form,
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
    ///
    /// With [`Escape::Url`], a value that makes a URL path segment `.` or
    /// `..` is refused: percent-encoding leaves dots alone, and a server
    /// that normalises the path would act on another resource than the one
    /// the template names (an attacker who controls a `model_version`
    /// string could steer a rollback to `/models/../admin`).
    pub(crate) fn render(&self, delivery: &Delivery, escape: Escape) -> Result<String, String> {
        let alert = &delivery.alert;
        let mut output = String::new();
        // Where each value landed in `output`, for the dot-segment check.
        let mut substituted: Vec<(Range<usize>, &Field, String)> = Vec::new();
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
                Escape::Url => {
                    let start = output.len();
                    percent_encode(&value, &mut output);
                    if let Part::Field(field) = part {
                        substituted.push((start..output.len(), field, value));
                    }
                }
                Escape::Form => percent_encode(&value, &mut output),
            }
        }
        if escape == Escape::Url {
            check_dot_segments(&output, &substituted)?;
        }
        Ok(output)
    }
}

/// Refuses a URL whose path has a `.` or `..` segment made (even in part)
/// by a substituted value. Dot segments the template's own text spells out
/// are the operator's and are left alone.
fn check_dot_segments(
    url: &str,
    substituted: &[(Range<usize>, &Field, String)],
) -> Result<(), String> {
    for range in path_segments(url) {
        let segment = &url[range.clone()];
        // `%2e` is a dot too: servers decode it before resolving the path
        // (the WHATWG URL standard names `.%2e` and `%2e%2e` as `..`).
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        if decoded != "." && decoded != ".." {
            continue;
        }
        // An empty value adds nothing: the dots around it are the template's.
        let culprit = substituted.iter().find(|(value_range, _, _)| {
            !value_range.is_empty()
                && value_range.start < range.end
                && range.start < value_range.end
        });
        if let Some((_, field, value)) = culprit {
            return Err(format!(
                "{} = {value:?} would make the URL path segment {segment:?}, which a server resolves to another path",
                placeholder(field)
            ));
        }
    }
    Ok(())
}

/// The byte ranges of the path segments of `url`. A percent-encoded slash
/// or backslash (`%2F`, `%5C`) also ends a segment here: some proxies decode
/// them before resolving dot segments, so `..%2Fadmin` is `../admin` there.
fn path_segments(url: &str) -> Vec<Range<usize>> {
    let path = path_range(url);
    // Bytes, not chars: the template's own text may hold non-ASCII.
    let lower = url[path.clone()].to_ascii_lowercase().into_bytes();
    let mut segments = Vec::new();
    let mut start = 0;
    let mut index = 0;
    while index <= lower.len() {
        let rest = &lower[index..];
        let separator = if rest.is_empty() || rest.starts_with(b"/") {
            Some(1)
        } else if rest.starts_with(b"%2f") || rest.starts_with(b"%5c") {
            Some(3)
        } else {
            None
        };
        match separator {
            Some(width) => {
                segments.push(path.start + start..path.start + index);
                index += width;
                start = index;
            }
            None => index += 1,
        }
    }
    segments
}

/// The byte range of the path in `url`: after `scheme://authority`, up to
/// the query or fragment.
fn path_range(url: &str) -> Range<usize> {
    let end = url.find(['?', '#']).unwrap_or(url.len());
    let start = match url[..end].find("://") {
        Some(scheme_end) => {
            let authority = scheme_end + 3;
            url[authority..end]
                .find('/')
                .map_or(end, |slash| authority + slash)
        }
        None => 0,
    };
    start..end
}

/// How a field is written in a template, for messages.
fn placeholder(field: &Field) -> String {
    let name = match field {
        Field::AlertId => "alert_id".to_string(),
        Field::Fingerprint => "fingerprint".to_string(),
        Field::RuleId => "rule_id".to_string(),
        Field::Title => "title".to_string(),
        Field::Severity => "severity".to_string(),
        Field::State => "state".to_string(),
        Field::StartsAt => "starts_at".to_string(),
        Field::EndsAt => "ends_at".to_string(),
        Field::Value => "value".to_string(),
        Field::Threshold => "threshold".to_string(),
        Field::IdempotencyKey => "idempotency_key".to_string(),
        Field::Group(name) => format!("group.{name}"),
        Field::Label(name) => format!("labels.{name}"),
    };
    format!("{{{{{name}}}}}")
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

/// What stays as is in a value: RFC 3986's unreserved characters. Everything
/// else, `/`, `?`, `#`, `&`, `=` and `%` included, is encoded, so a value
/// fits in a path segment, a query or a form field without changing its shape.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(value: &str, output: &mut String) {
    output.extend(utf8_percent_encode(value, UNRESERVED));
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
    fn url_values_keep_only_unreserved_characters() {
        // RFC 3986 unreserved characters stay as they are; every other byte,
        // reserved, control or UTF-8, is percent-encoded in upper case.
        let every_ascii: String = (0u8..0x80).map(char::from).collect();
        let mut expected = String::new();
        for byte in every_ascii.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                expected.push(char::from(byte));
            } else {
                expected.push_str(&format!("%{byte:02X}"));
            }
        }
        assert_eq!(
            url_with(&every_ascii, "{{group.model_version}}").unwrap(),
            expected
        );
        // The loop above spelled out for one stretch: `+,-./0-9:`.
        assert!(expected.contains("%2B%2C-.%2F0123456789%3A"), "{expected}");
        assert_eq!(
            url_with("é 2.1/ü~_-", "{{group.model_version}}").unwrap(),
            "%C3%A9%202.1%2F%C3%BC~_-"
        );
    }

    fn url_with(version: &str, template: &str) -> Result<String, String> {
        let mut alert = crate::test_alert();
        alert.group.insert("model_version".into(), version.into());
        Template::parse(template)
            .unwrap()
            .render(&Delivery::new(alert), Escape::Url)
    }

    #[test]
    fn issue_16_dot_segments_from_values_are_refused_wherever_they_form() {
        let refused = [
            ("..", "http://h/m/{{group.model_version}}"),
            (".", "http://h/m/{{group.model_version}}/rollback"),
            ("..", "/relative/{{group.model_version}}/x"),
            // A literal dot or %2e next to the value completes the segment.
            (".", "http://h/m/.{{group.model_version}}/x"),
            (".", "http://h/m/%2E{{group.model_version}}/x"),
            ("..", "http://h/modèle/{{group.model_version}}"),
        ];
        for (version, template) in refused {
            let error = url_with(version, template).unwrap_err();
            assert!(
                error.starts_with(&format!(
                    "{{{{group.model_version}}}} = {version:?} would make the URL path segment"
                )),
                "{template}: {error}"
            );
        }
        // Not a whole path segment, or not in the path: allowed.
        assert_eq!(
            url_with("..", "http://h/m/v{{group.model_version}}").unwrap(),
            "http://h/m/v.."
        );
        assert_eq!(
            url_with("..", "http://h/m?v={{group.model_version}}").unwrap(),
            "http://h/m?v=.."
        );
        assert_eq!(
            url_with("..", "http://h/m#{{group.model_version}}").unwrap(),
            "http://h/m#.."
        );
        assert_eq!(
            url_with("..", "http://h/m?{{group.model_version}}").unwrap(),
            "http://h/m?.."
        );
        // The operator's own dot segments are the operator's business.
        assert_eq!(
            url_with("", "http://h/a/.{{group.model_version}}./b").unwrap(),
            "http://h/a/../b"
        );
        assert_eq!(
            url_with("v2", "http://h/a/../{{group.model_version}}").unwrap(),
            "http://h/a/../v2"
        );
        // An encoded slash ends a segment for proxies that decode it first.
        for version in ["../admin", "a/../../admin", "..\\admin"] {
            let error = url_with(version, "http://h/m/{{group.model_version}}").unwrap_err();
            assert!(
                error.contains("would make the URL path segment"),
                "{version}: {error}"
            );
        }
        assert_eq!(
            url_with("2.1/x", "http://h/m/{{group.model_version}}").unwrap(),
            "http://h/m/2.1%2Fx"
        );
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
