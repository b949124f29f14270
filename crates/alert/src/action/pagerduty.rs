//! `pagerduty`: PagerDuty Events API v2.
//!
//! A firing alert is a `trigger` event and a resolved one a `resolve` event,
//! both with `dedup_key` = the alert's fingerprint, so the resolution closes
//! the incident the firing opened, and a repeated trigger joins it instead of
//! paging again. Severities map as critical → `critical`, high → `error`,
//! medium and low → `warning`, info → `info`.
//!
//! ```yaml
//! - name: page
//!   kind: pagerduty
//!   min_severity: high
//!   routing_key_env: PAGERDUTY_ROUTING_KEY
//!   # url: https://events.pagerduty.com/v2/enqueue   (the default)
//!   # source: inferwatch                              (the default)
//! ```

use std::time::Duration;

use inferwatch_core::{Alert, AlertState, Severity};
use marked_yaml::Spanned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{check_status, HttpClient, DEFAULT_TIMEOUT};
use super::text;
use super::{Action, ActionConfig};
use crate::config::{timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// The public Events API v2 endpoint.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limit on `payload.summary`.
const SUMMARY_LIMIT: usize = 1024;

/// Config of a `pagerduty` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key, inline.
    #[serde(default)]
    pub routing_key: Option<String>,
    /// The name of the environment variable holding the routing key.
    #[serde(default)]
    pub routing_key_env: Option<String>,
    /// The Events API endpoint (default [`DEFAULT_URL`]).
    #[serde(default)]
    pub url: Option<String>,
    /// `payload.source` (default `inferwatch`).
    #[serde(default)]
    pub source: Option<String>,
    /// Whole-request timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

impl ActionConfig for PagerDutyConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        timeout_field(&self.timeout, DEFAULT_TIMEOUT).map(|_| ())
    }

    fn build(&self, _name: &str, context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        let routing_key = context
            .secret("routing_key", &self.routing_key, &self.routing_key_env)?
            .ok_or_else(|| AlertError::Invalid("set routing_key or routing_key_env".to_string()))?;
        let timeout =
            timeout_field(&self.timeout, DEFAULT_TIMEOUT).map_err(ConfigProblem::into_invalid)?;
        let mut action = PagerDutyAction::new(routing_key, timeout);
        if let Some(url) = &self.url {
            action.url = url.clone();
        }
        if let Some(source) = &self.source {
            action.source = source.clone();
        }
        Ok(Box::new(action))
    }
}

/// Sends Events API v2 trigger and resolve events.
pub struct PagerDutyAction {
    routing_key: String,
    url: String,
    source: String,
    client: HttpClient,
}

impl PagerDutyAction {
    /// Sends to the public endpoint with source `inferwatch`.
    pub fn new(routing_key: String, timeout: Duration) -> PagerDutyAction {
        PagerDutyAction {
            routing_key,
            url: DEFAULT_URL.to_string(),
            source: "inferwatch".to_string(),
            client: HttpClient::new(timeout),
        }
    }
}

impl Action for PagerDutyAction {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let event = pagerduty_event(&self.routing_key, &self.source, &delivery.alert);
        let headers = [("Content-Type".to_string(), "application/json".to_string())];
        let reply =
            self.client
                .send("POST", &self.url, &headers, event.to_string().into_bytes())?;
        check_status("pagerduty", &reply).map(Outcome::http)
    }
}

/// PagerDuty's severity for ours.
pub fn pagerduty_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium | Severity::Low => "warning",
        Severity::Info => "info",
    }
}

/// The Events API v2 body for one alert transition. A resolve event carries
/// no payload (PagerDuty ignores it).
pub fn pagerduty_event(routing_key: &str, source: &str, alert: &Alert) -> Value {
    if alert.state == AlertState::Resolved {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": alert.fingerprint,
        });
    }
    let mut payload = json!({
        "summary": text::truncate(&text::summary(alert), SUMMARY_LIMIT),
        "source": source,
        "severity": pagerduty_severity(alert.severity),
        "timestamp": alert.starts_at,
        "class": alert.rule_id,
        "custom_details": alert,
    });
    if let Some(model) = alert.group.get("model_id") {
        payload["component"] = json!(model);
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": alert.fingerprint,
        "client": "inferwatch",
        "payload": payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_event_shape() {
        let alert = crate::test_alert();
        let event = pagerduty_event("key-1", "inferwatch", &alert);
        assert_eq!(event["routing_key"], "key-1");
        assert_eq!(event["event_action"], "trigger");
        assert_eq!(event["dedup_key"], "fp-1");
        let payload = &event["payload"];
        assert_eq!(
            payload["summary"],
            "Canary slower than baseline (model_id=recsys): value 640 (threshold 500)"
        );
        assert_eq!(payload["source"], "inferwatch");
        assert_eq!(payload["severity"], "error");
        assert_eq!(payload["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(payload["component"], "recsys");
        assert_eq!(payload["class"], "canary-regression");
        assert_eq!(payload["custom_details"]["alert_id"], "a1");
        assert_eq!(payload["custom_details"]["atlas"][1], "AML.T0029");
    }

    #[test]
    fn resolve_event_shares_the_dedup_key() {
        let mut alert = crate::test_alert();
        let trigger = pagerduty_event("k", "s", &alert);
        alert.state = AlertState::Resolved;
        alert.alert_id = "another-episode-id".into();
        let resolve = pagerduty_event("k", "s", &alert);
        assert_eq!(
            resolve,
            json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "fp-1"})
        );
        assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);
    }

    #[test]
    fn severities_map_to_the_four_pagerduty_levels() {
        let mapped: Vec<&str> = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Info,
        ]
        .into_iter()
        .map(pagerduty_severity)
        .collect();
        assert_eq!(mapped, ["critical", "error", "warning", "warning", "info"]);
    }
}
