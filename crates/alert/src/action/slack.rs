//! `slack`: a Slack incoming-webhook message.
//!
//! The payload has a plain `text` (what notifications and old clients show)
//! and Block Kit `blocks`: a header, the condition with its value, a fields
//! section (severity, rule, group, start) and a context line (ATLAS ids and
//! the alert id). Group and contributor values come from log lines, so
//! text that Slack would read as markup (`&`, `<`, `>`) is escaped, the
//! mrkdwn objects are `verbatim` (no automatic links or `@here` / `#channel`
//! mentions), and link previews are off (Slack fetches no URL a value holds).
//!
//! ```yaml
//! - name: ml-channel
//!   kind: slack
//!   url_env: SLACK_WEBHOOK_URL    # the incoming-webhook URL is a secret
//! ```

use std::time::Duration;

use inferwatch_core::{Alert, AlertState};
use marked_yaml::Spanned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{check_status, HttpClient, DEFAULT_TIMEOUT};
use super::text;
use super::{Action, ActionConfig};
use crate::config::{timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// Slack's limit on header text.
const HEADER_LIMIT: usize = 150;
/// Slack's limit on section text.
const SECTION_LIMIT: usize = 3000;

/// Config of a `slack` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL, inline.
    #[serde(default)]
    pub url: Option<String>,
    /// The name of the environment variable holding the URL.
    #[serde(default)]
    pub url_env: Option<String>,
    /// Whole-request timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

impl ActionConfig for SlackConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        timeout_field(&self.timeout, DEFAULT_TIMEOUT).map(|_| ())
    }

    fn build(&self, _name: &str, context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        let url = context
            .secret("url", &self.url, &self.url_env)?
            .ok_or_else(|| AlertError::Invalid("set url or url_env".to_string()))?;
        let timeout =
            timeout_field(&self.timeout, DEFAULT_TIMEOUT).map_err(ConfigProblem::into_invalid)?;
        Ok(Box::new(SlackAction::new(url, timeout)))
    }
}

/// Posts alerts to a Slack incoming webhook.
pub struct SlackAction {
    url: String,
    client: HttpClient,
}

impl SlackAction {
    /// Posts to the incoming-webhook `url`.
    pub fn new(url: String, timeout: Duration) -> SlackAction {
        SlackAction {
            url,
            client: HttpClient::new(timeout),
        }
    }
}

impl Action for SlackAction {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let body = slack_payload(&delivery.alert).to_string().into_bytes();
        let headers = [("Content-Type".to_string(), "application/json".to_string())];
        let reply = self.client.send("POST", &self.url, &headers, body)?;
        check_status("slack", &reply).map(Outcome::http)
    }
}

/// The incoming-webhook JSON for one alert transition.
pub fn slack_payload(alert: &Alert) -> Value {
    let state = match alert.state {
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "RESOLVED",
        AlertState::Pending => "PENDING",
    };
    let headline = format!("[{state}] {}", text::summary(alert));
    let mut detail = format!("`{}`", escape(&alert.condition));
    if let Some(value) = text::value(alert) {
        detail.push_str(&format!(" — {value}"));
    }
    detail.push_str(&format!("\n*Impact:* {}", escape(&text::impact(alert))));
    let explanation = text::explanation(alert);
    if !explanation.is_empty() {
        detail.push_str(&format!("\n*Top contributors:* {}", escape(&explanation)));
    }
    let group = text::group(alert);
    let mut when = format!("*Started*\n{}", alert.starts_at);
    if let Some(ends_at) = &alert.ends_at {
        when.push_str(&format!("\n*Ended*\n{ends_at}"));
    }
    let mut context = vec![format!("alert `{}`", alert.alert_id)];
    if !alert.atlas.is_empty() {
        context.insert(0, format!("MITRE ATLAS {}", alert.atlas.join(", ")));
    }
    json!({
        "text": escape(&headline),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": text::truncate(&format!("{state}: {}", alert.title), HEADER_LIMIT)}
            },
            {
                "type": "section",
                "text": mrkdwn(text::truncate(&detail, SECTION_LIMIT))
            },
            {
                "type": "section",
                "fields": [
                    mrkdwn(format!("*Severity*\n{}", alert.severity)),
                    mrkdwn(format!("*Rule*\n`{}`", escape(&alert.rule_id))),
                    mrkdwn(format!("*Group*\n{}", if group.is_empty() { "—".to_string() } else { escape(&group) })),
                    mrkdwn(when)
                ]
            },
            {
                "type": "context",
                "elements": [mrkdwn(escape(&context.join(" · ")))]
            }
        ],
        // Values from log lines may hold URLs: Slack must not fetch them.
        "unfurl_links": false,
        "unfurl_media": false
    })
}

/// A mrkdwn text object that Slack shows as written: `verbatim` stops it
/// from turning bare URLs, `#channel` names and `@here` in log-line values
/// into links and mentions.
fn mrkdwn(text: String) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// Slack reads `&`, `<` and `>` as markup in text fields.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_text_and_blocks() {
        let alert = crate::test_alert();
        let payload = slack_payload(&alert);
        assert_eq!(
            payload["text"],
            "[FIRING] Canary slower than baseline (model_id=recsys): value 640 (threshold 500)"
        );
        let blocks = payload["blocks"].as_array().unwrap();
        let kinds: Vec<&str> = blocks.iter().map(|b| b["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["header", "section", "section", "context"]);
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(
            blocks[0]["text"]["text"],
            "FIRING: Canary slower than baseline"
        );
        assert_eq!(
            blocks[1]["text"]["text"],
            "`canary.p99(latency_ms) &gt; 500` — value 640 (threshold 500)\n*Impact:* 1200 events, 10% of traffic, 3412 clients\n*Top contributors:* source_id=s3 (lift 6.1)"
        );
        assert_eq!(blocks[2]["fields"][0]["text"], "*Severity*\nhigh");
        assert_eq!(blocks[2]["fields"][2]["text"], "*Group*\nmodel_id=recsys");
        assert_eq!(
            blocks[3]["elements"][0]["text"],
            "MITRE ATLAS AML.T0010.003, AML.T0029 · alert `a1`"
        );
    }

    #[test]
    fn issue_16_log_line_values_cannot_ping_link_or_unfurl() {
        let mut alert = crate::test_alert();
        alert
            .group
            .insert("client_id".into(), "<!channel> @here".into());
        alert.explanation[0].value = "<https://evil.example|login> https://evil.example".into();
        let payload = slack_payload(&alert);
        assert_eq!(payload["unfurl_links"], false);
        assert_eq!(payload["unfurl_media"], false);
        let mut objects = vec![
            &payload["blocks"][1]["text"],
            &payload["blocks"][3]["elements"][0],
        ];
        objects.extend(payload["blocks"][2]["fields"].as_array().unwrap());
        assert_eq!(objects.len(), 6);
        for object in objects {
            assert_eq!(object["type"], "mrkdwn");
            assert_eq!(object["verbatim"], true, "{object}");
        }
        assert_eq!(
            payload["blocks"][2]["fields"][2]["text"],
            "*Group*\nclient_id=&lt;!channel&gt; @here, model_id=recsys"
        );
        assert!(payload["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .ends_with(
                "source_id=&lt;https://evil.example|login&gt; https://evil.example (lift 6.1)"
            ));
        assert!(payload["text"]
            .as_str()
            .unwrap()
            .contains("client_id=&lt;!channel&gt; @here"));
    }

    #[test]
    fn resolved_alerts_say_so_and_long_titles_are_cut() {
        let mut alert = crate::test_alert();
        alert.state = AlertState::Resolved;
        alert.ends_at = Some("2026-01-01T00:10:00Z".into());
        alert.title = "x".repeat(400);
        let payload = slack_payload(&alert);
        assert!(payload["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] xxx"));
        let header = payload["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), HEADER_LIMIT);
        assert!(payload["blocks"][2]["fields"][3]["text"]
            .as_str()
            .unwrap()
            .ends_with("*Ended*\n2026-01-01T00:10:00Z"));
    }
}
