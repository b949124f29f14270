//! `alertmanager`: the Prometheus Alertmanager v2 API, so existing routing,
//! silences and receivers keep working.
//!
//! Each delivery is `POST {url}/api/v2/alerts` with a one-element list of
//! `{labels, annotations, startsAt, endsAt, generatorURL}`:
//! * labels: `alertname` (the rule id), `severity`, the alert's group key
//!   values and its rule labels. Alertmanager identifies an alert by its
//!   label set, and these are the same for the firing and the resolution of
//!   an episode, so the resolution ends the alert that the firing started.
//!   Label names are made valid (`[a-zA-Z_][a-zA-Z0-9_]*`); empty values
//!   are left out, as Prometheus does.
//! * annotations: `summary` (title), `description` (condition, value,
//!   impact, top contributors), `atlas`, `value`, `threshold`, `condition`,
//!   `impact`, `alert_id`, `fingerprint`, and the event-time `event_starts_at`
//!   / `event_ends_at`.
//! * `generatorURL`: the `generator_url` template, rendered. When it can't
//!   be (a missing group value, or a value that would make a `.`/`..` path
//!   segment) the alert is sent without it, and the reason goes into a
//!   `generator_url_error` annotation.
//!
//! ## Event time against wall-clock time
//! Alerts carry event time; Alertmanager reasons in wall-clock time (an alert
//! is resolved once its `endsAt` has passed, and one whose `endsAt` passes
//! without an update resolves by itself). So, whether live or replaying
//! stored history:
//! * `startsAt` is the event start, but never later than now;
//! * a firing alert gets `endsAt` = now + `firing_ttl` (default 4h, like
//!   `repeat_interval`): it stays active that long unless resolved, and a
//!   crashed inferwatch doesn't leave it active forever. `firing_ttl: 0s`
//!   omits `endsAt`, and Alertmanager's `resolve_timeout` (default 5m) then
//!   applies, which suits only a sender that re-sends firing alerts;
//! * a resolved alert gets `endsAt` = its event end, but never later than
//!   now (so it is in the past and Alertmanager resolves it at once) nor
//!   earlier than `startsAt`. Replayed history therefore shows up as
//!   already-resolved alerts, with the true event times in annotations.
//!
//! ```yaml
//! - name: am
//!   kind: alertmanager
//!   url: http://alertmanager:9093
//!   generator_url: "https://inferwatch.example.com/alerts/{{alert_id}}"
//!   firing_ttl: 4h
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use inferwatch_core::{Alert, AlertState};
use marked_yaml::Spanned;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{check_status, HttpClient, DEFAULT_TIMEOUT};
use super::template::{Escape, Template};
use super::text;
use super::{Action, ActionConfig};
use crate::config::{duration_field, timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// How long a firing alert stays active in Alertmanager unless resolved.
pub const DEFAULT_FIRING_TTL: Duration = Duration::from_secs(4 * 3600);

/// Config of an `alertmanager` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Alertmanager's base URL (`/api/v2/alerts` is appended unless present).
    pub url: String,
    /// Extra headers, e.g. `Authorization` for a proxy in front of it.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A template for `generatorURL`, e.g. a link to the alert in inferwatch.
    #[serde(default)]
    pub generator_url: Option<Spanned<String>>,
    /// How long a firing alert stays active unless resolved (default 4h).
    #[serde(default)]
    pub firing_ttl: Option<Spanned<String>>,
    /// Whole-request timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

impl AlertmanagerConfig {
    fn checked(&self) -> Result<(Option<Template>, Duration, Duration), ConfigProblem> {
        let generator_url =
            match &self.generator_url {
                Some(text) => Some(Template::parse(text.as_str()).map_err(|message| {
                    ConfigProblem::at(text, format!("generator_url: {message}"))
                })?),
                None => None,
            };
        let firing_ttl = match &self.firing_ttl {
            Some(text) => duration_field(text, "firing_ttl")?,
            None => DEFAULT_FIRING_TTL,
        };
        let timeout = timeout_field(&self.timeout, DEFAULT_TIMEOUT)?;
        Ok((generator_url, firing_ttl, timeout))
    }
}

impl ActionConfig for AlertmanagerConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        self.checked().map(|_| ())
    }

    fn build(&self, _name: &str, _context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        let (generator_url, firing_ttl, timeout) =
            self.checked().map_err(ConfigProblem::into_invalid)?;
        let mut action = AlertmanagerAction::new(&self.url, timeout);
        action.generator_url = generator_url;
        action.firing_ttl = (!firing_ttl.is_zero()).then_some(firing_ttl);
        action.headers = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(Box::new(action))
    }
}

/// Posts alerts to Alertmanager's v2 API.
pub struct AlertmanagerAction {
    endpoint: String,
    headers: Vec<(String, String)>,
    generator_url: Option<Template>,
    firing_ttl: Option<Duration>,
    client: HttpClient,
}

impl AlertmanagerAction {
    /// Posts to `{base_url}/api/v2/alerts`, firing alerts active for 4h.
    pub fn new(base_url: &str, timeout: Duration) -> AlertmanagerAction {
        let trimmed = base_url.trim_end_matches('/');
        let endpoint = if trimmed.ends_with("/api/v2/alerts") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/api/v2/alerts")
        };
        AlertmanagerAction {
            endpoint,
            headers: Vec::new(),
            generator_url: None,
            firing_ttl: Some(DEFAULT_FIRING_TTL),
            client: HttpClient::new(timeout),
        }
    }
}

impl AlertmanagerAction {
    /// The alert as posted. A generator URL that can't be rendered (a
    /// missing group value, or a log-line value that would make a `..`
    /// path segment) is left out and the reason put in the
    /// `generator_url_error` annotation: a link is not worth losing the
    /// alert over, and a value an attacker controls must not be able to
    /// stop the alert from reaching Alertmanager.
    fn posted(&self, delivery: &Delivery, now: DateTime<Utc>) -> Value {
        let rendered = self
            .generator_url
            .as_ref()
            .map(|template| template.render(delivery, Escape::Url));
        let generator_url = rendered.as_ref().and_then(|url| url.as_deref().ok());
        let mut posted = postable_alert(&delivery.alert, now, self.firing_ttl, generator_url);
        if let Some(Err(message)) = rendered {
            posted["annotations"]["generator_url_error"] = Value::String(message);
        }
        posted
    }
}

impl Action for AlertmanagerAction {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let posted = self.posted(delivery, Utc::now());
        let body = serde_json::to_vec(&Value::Array(vec![posted])).map_err(|error| {
            DeliveryFailure::permanent(format!("cannot encode alert as JSON: {error}"))
        })?;
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        headers.extend(self.headers.iter().cloned());
        let reply = self.client.send("POST", &self.endpoint, &headers, body)?;
        check_status("alertmanager", &reply).map(Outcome::http)
    }
}

/// One element of the `POST /api/v2/alerts` body, for an alert sent at `now`.
pub fn postable_alert(
    alert: &Alert,
    now: DateTime<Utc>,
    firing_ttl: Option<Duration>,
    generator_url: Option<&str>,
) -> Value {
    let event_start = parse_time(&alert.starts_at);
    let starts_at = event_start.map_or(now, |start| start.min(now));
    let ends_at = match alert.state {
        AlertState::Resolved => {
            let event_end = alert.ends_at.as_deref().and_then(parse_time).unwrap_or(now);
            Some(event_end.min(now).max(starts_at))
        }
        AlertState::Firing | AlertState::Pending => {
            firing_ttl.and_then(|ttl| chrono::Duration::from_std(ttl).ok().map(|ttl| now + ttl))
        }
    };
    let mut posted = Map::new();
    posted.insert("labels".into(), Value::Object(labels(alert)));
    posted.insert("annotations".into(), Value::Object(annotations(alert)));
    posted.insert("startsAt".into(), json!(format_time(starts_at)));
    if let Some(ends_at) = ends_at {
        posted.insert("endsAt".into(), json!(format_time(ends_at)));
    }
    if let Some(url) = generator_url {
        posted.insert("generatorURL".into(), json!(url));
    }
    Value::Object(posted)
}

fn labels(alert: &Alert) -> Map<String, Value> {
    // Later inserts win: rule labels, then group keys, then the two names
    // Alertmanager routes on.
    let mut labels = Map::new();
    let pairs = alert
        .labels
        .iter()
        .chain(alert.group.iter())
        .map(|(name, value)| (label_name(name), value.clone()))
        .chain([
            ("severity".to_string(), alert.severity.to_string()),
            ("alertname".to_string(), alert.rule_id.clone()),
        ]);
    for (name, value) in pairs {
        if !value.is_empty() {
            labels.insert(name, Value::String(value));
        }
    }
    labels
}

fn annotations(alert: &Alert) -> Map<String, Value> {
    let mut annotations = Map::new();
    let mut put = |name: &str, value: String| {
        if !value.is_empty() {
            annotations.insert(name.to_string(), Value::String(value));
        }
    };
    put("summary", alert.title.clone());
    put("description", text::description(alert));
    put("atlas", alert.atlas.join(","));
    put("value", alert.value.map(text::number).unwrap_or_default());
    put(
        "threshold",
        alert.threshold.map(text::number).unwrap_or_default(),
    );
    put("condition", alert.condition.clone());
    put("impact", text::impact(alert));
    put("explanation", text::explanation(alert));
    put("alert_id", alert.alert_id.clone());
    put("fingerprint", alert.fingerprint.clone());
    put("event_starts_at", alert.starts_at.clone());
    put("event_ends_at", alert.ends_at.clone().unwrap_or_default());
    annotations
}

/// Alertmanager 0.25 accepts only Prometheus label names.
fn label_name(name: &str) -> String {
    let mut cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.starts_with(|c: char| c.is_ascii_digit()) {
        cleaned.insert(0, '_');
    }
    cleaned
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|time| time.with_timezone(&Utc))
}

fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        parse_time(text).unwrap()
    }

    #[test]
    fn labels_identify_the_alert_and_annotations_describe_it() {
        let mut alert = crate::test_alert();
        alert.labels.insert("team".into(), "ml".into());
        alert.labels.insert("severity".into(), "ignored".into());
        alert.group.insert("model.version".into(), "v2".into());
        let posted = postable_alert(&alert, at("2026-01-01T00:00:00Z"), None, None);
        assert_eq!(
            posted["labels"],
            json!({"alertname": "canary-regression", "severity": "high", "model_id": "recsys",
                   "model_version": "v2", "team": "ml"})
        );
        assert_eq!(
            posted["annotations"]["summary"],
            "Canary slower than baseline"
        );
        assert_eq!(posted["annotations"]["atlas"], "AML.T0010.003,AML.T0029");
        assert_eq!(posted["annotations"]["value"], "640");
        assert_eq!(posted["annotations"]["threshold"], "500");
        assert_eq!(
            posted["annotations"]["description"],
            "canary.p99(latency_ms) > 500: value 640 (threshold 500). Impact: 1200 events, 10% of traffic, 3412 clients. Top contributors: source_id=s3 (lift 6.1)"
        );
        assert!(
            posted.get("endsAt").is_none(),
            "no ttl: Alertmanager's resolve_timeout applies"
        );
        assert!(posted.get("generatorURL").is_none());
    }

    #[test]
    fn times_are_clamped_to_the_wall_clock() {
        let now = at("2026-01-01T12:00:00Z");
        let mut alert = crate::test_alert();
        alert.starts_at = "2025-06-01T10:00:00Z".into();
        let firing = postable_alert(
            &alert,
            now,
            Some(Duration::from_secs(3600)),
            Some("http://x/a"),
        );
        assert_eq!(firing["startsAt"], "2025-06-01T10:00:00.000Z");
        assert_eq!(firing["endsAt"], "2026-01-01T13:00:00.000Z");
        assert_eq!(firing["generatorURL"], "http://x/a");

        alert.state = AlertState::Resolved;
        alert.ends_at = Some("2025-06-01T10:30:00Z".into());
        let resolved = postable_alert(&alert, now, Some(Duration::from_secs(3600)), None);
        assert_eq!(
            resolved["endsAt"], "2025-06-01T10:30:00.000Z",
            "replayed history: its own end"
        );

        // Simulated data from the future: both times pulled back to now.
        alert.starts_at = "2027-01-01T00:00:00Z".into();
        alert.ends_at = Some("2027-01-01T01:00:00Z".into());
        let future = postable_alert(&alert, now, None, None);
        assert_eq!(future["startsAt"], "2026-01-01T12:00:00.000Z");
        assert_eq!(future["endsAt"], "2026-01-01T12:00:00.000Z");
    }

    #[test]
    fn issue_16_a_generator_url_that_cannot_be_rendered_is_left_out_not_the_alert() {
        let mut action = AlertmanagerAction::new("http://127.0.0.1:9", DEFAULT_TIMEOUT);
        action.generator_url =
            Some(Template::parse("https://iw.example/models/{{group.model_version}}").unwrap());
        let now = at("2026-01-01T12:00:00Z");
        let mut alert = crate::test_alert();
        alert.group.insert("model_version".into(), "v2".into());
        let posted = action.posted(&Delivery::new(alert.clone()), now);
        assert_eq!(posted["generatorURL"], "https://iw.example/models/v2");
        assert!(posted["annotations"].get("generator_url_error").is_none());

        alert.group.insert("model_version".into(), "..".into());
        let posted = action.posted(&Delivery::new(alert), now);
        assert!(posted.get("generatorURL").is_none(), "{posted}");
        assert_eq!(
            posted["annotations"]["generator_url_error"],
            "{{group.model_version}} = \"..\" would make the URL path segment \"..\", which a server resolves to another path"
        );
        assert_eq!(posted["labels"]["model_version"], "..");
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("model.id"), "model_id");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name(""), "_");
    }
}
