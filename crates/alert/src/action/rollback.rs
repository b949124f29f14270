//! `rollback`: on firing, call an orchestrator (a deploy system, a traffic
//! router) through an HTTP request template. Resolutions are not sent.
//!
//! Every execution returns a [`Remediation`]: when, for which alert, the
//! rendered request (credential headers redacted) and the response status.
//! With `dry_run: true` the request is rendered and recorded but not sent,
//! so a rollback policy can be watched before it is trusted.
//!
//! Placeholders (see `template`) work in `url`, header values and `body`.
//! Their values come from log lines, so each is escaped for where it lands:
//! * in the URL, percent-encoded (all but `A-Z a-z 0-9 - . _ ~`), and a
//!   value that would make a path segment `.` or `..` fails the delivery
//!   (a `model_version` of `..` must not turn `/models/{id}/versions/{v}`
//!   into a call on `/models/{id}`);
//! * in a header value, as is, but a value with a control character (CR,
//!   LF, …) fails the delivery;
//! * in the body, escaped for a JSON string (the default `Content-Type` of a
//!   body is `application/json`), percent-encoded when `Content-Type` is
//!   `application/x-www-form-urlencoded`, and otherwise as is with control
//!   characters refused: keep untrusted values out of other body formats.
//!
//! A placeholder the alert can't fill (a missing `group.model_version`) or a
//! value refused above fails the delivery at once (it is dead-lettered, not
//! retried) rather than send a half-rendered or redirected rollback.
//!
//! ```yaml
//! - name: canary-rollback
//!   kind: rollback
//!   rules: [canary-regression]
//!   dry_run: false
//!   request:
//!     method: POST
//!     url: "http://router:8080/models/{{group.model_id}}/rollback"
//!     headers: {Authorization: "Bearer ..."}
//!     body: '{"version": "{{group.model_version}}", "reason": "{{rule_id}}", "alert": "{{alert_id}}"}'
//! ```

use std::collections::BTreeMap;

use inferwatch_core::AlertState;
use marked_yaml::Spanned;
use serde::Deserialize;

use super::http::{check_status, HttpClient, DEFAULT_TIMEOUT};
use super::template::{Escape, Template};
use super::{Action, ActionConfig};
use crate::config::{timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{
    now_rfc3339, Delivery, DeliveryFailure, Outcome, RecordedRequest, Remediation,
};
use crate::AlertError;

/// Methods a rollback request may use.
const METHODS: [&str; 5] = ["POST", "PUT", "PATCH", "DELETE", "GET"];

/// Config of a `rollback` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackConfig {
    /// Render and record the request, but don't send it.
    #[serde(default)]
    pub dry_run: bool,
    /// The request template.
    pub request: RequestTemplateConfig,
    /// Whole-request timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

/// An HTTP request with `{{placeholders}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTemplateConfig {
    /// `POST` (default), `PUT`, `PATCH`, `DELETE` or `GET`.
    #[serde(default)]
    pub method: Option<Spanned<String>>,
    /// The URL template.
    pub url: Spanned<String>,
    /// Header templates.
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<String>>,
    /// The body template (none: an empty body).
    #[serde(default)]
    pub body: Option<Spanned<String>>,
}

impl RollbackConfig {
    fn compile(&self, name: &str) -> Result<RollbackAction, ConfigProblem> {
        let request = &self.request;
        let method = match &request.method {
            None => "POST".to_string(),
            Some(method) => {
                let upper = method.as_str().to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    return Err(ConfigProblem::at(
                        method,
                        format!(
                            "request.method: unsupported method '{}', expected one of: {}",
                            method.as_str(),
                            METHODS.join(", ")
                        ),
                    ));
                }
                upper
            }
        };
        let template = |field: &str, text: &Spanned<String>| {
            Template::parse(text.as_str())
                .map_err(|message| ConfigProblem::at(text, format!("request.{field}: {message}")))
        };
        let url = template("url", &request.url)?;
        let mut headers = Vec::new();
        for (header, value) in &request.headers {
            headers.push((
                header.clone(),
                template(&format!("headers.{header}"), value)?,
            ));
        }
        let body = match &request.body {
            Some(body) => Some(template("body", body)?),
            None => None,
        };
        let content_type = request
            .headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str().to_ascii_lowercase());
        if body.is_some() && content_type.is_none() {
            headers.push((
                "Content-Type".to_string(),
                Template::parse("application/json").map_err(|message| ConfigProblem {
                    message,
                    position: None,
                })?,
            ));
        }
        let body_escape = match &content_type {
            Some(content_type) if content_type.contains("x-www-form-urlencoded") => Escape::Form,
            Some(content_type) if !content_type.contains("json") => Escape::Plain,
            _ => Escape::JsonString,
        };
        let timeout = timeout_field(&self.timeout, DEFAULT_TIMEOUT)?;
        Ok(RollbackAction {
            name: name.to_string(),
            dry_run: self.dry_run,
            method,
            url,
            headers,
            body,
            body_escape,
            client: HttpClient::new(timeout),
        })
    }
}

impl ActionConfig for RollbackConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        self.compile("").map(|_| ())
    }

    fn build(&self, name: &str, _context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        Ok(Box::new(
            self.compile(name).map_err(ConfigProblem::into_invalid)?,
        ))
    }
}

/// Calls an orchestrator on firing; records a [`Remediation`] every time.
pub struct RollbackAction {
    name: String,
    dry_run: bool,
    method: String,
    url: Template,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    body_escape: Escape,
    client: HttpClient,
}

impl RollbackAction {
    /// Whether it only records what it would send.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    fn render(
        &self,
        delivery: &Delivery,
    ) -> Result<(Vec<(String, String)>, RecordedRequest), String> {
        let url = self.url.render(delivery, Escape::Url)?;
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        for (name, template) in &self.headers {
            headers.push((name.clone(), template.render(delivery, Escape::Plain)?));
        }
        headers.push((
            "Idempotency-Key".to_string(),
            delivery.idempotency_key.clone(),
        ));
        let body = match &self.body {
            Some(template) => template.render(delivery, self.body_escape)?,
            None => String::new(),
        };
        let recorded = RecordedRequest {
            method: self.method.clone(),
            url,
            headers: headers
                .iter()
                .map(|(name, value)| {
                    let shown = if is_credential(name) {
                        "<redacted>".to_string()
                    } else {
                        value.clone()
                    };
                    (name.clone(), shown)
                })
                .collect(),
            body,
        };
        Ok((headers, recorded))
    }
}

impl Action for RollbackAction {
    fn handles(&self, state: AlertState) -> bool {
        state == AlertState::Firing
    }

    fn repeats(&self) -> bool {
        false
    }

    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let alert = &delivery.alert;
        let (headers, request) = self.render(delivery).map_err(|message| {
            DeliveryFailure::permanent(format!("cannot render rollback request: {message}"))
        })?;
        let mut remediation = Remediation {
            at: now_rfc3339(),
            action: self.name.clone(),
            alert_id: alert.alert_id.clone(),
            rule_id: alert.rule_id.clone(),
            fingerprint: alert.fingerprint.clone(),
            dry_run: self.dry_run,
            request,
            response_status: None,
            error: None,
        };
        if self.dry_run {
            return Ok(Outcome {
                summary: format!(
                    "dry run: would {} {}",
                    remediation.request.method, remediation.request.url
                ),
                status: None,
                remediation: Some(remediation),
            });
        }
        let sent = self
            .client
            .send(
                &remediation.request.method,
                &remediation.request.url,
                &headers,
                remediation.request.body.clone().into_bytes(),
            )
            .and_then(|reply| {
                remediation.response_status = Some(reply.status);
                check_status("orchestrator", &reply)
            });
        match sent {
            Ok(status) => Ok(Outcome {
                summary: format!(
                    "{} {} answered HTTP {status}",
                    remediation.request.method, remediation.request.url
                ),
                status: Some(status),
                remediation: Some(remediation),
            }),
            Err(mut failure) => {
                remediation.error = Some(failure.message.clone());
                failure.remediation = Some(Box::new(remediation));
                Err(failure)
            }
        }
    }
}

fn is_credential(header: &str) -> bool {
    let lower = header.to_ascii_lowercase();
    lower == "authorization"
        || lower == "proxy-authorization"
        || lower == "cookie"
        || lower.contains("token")
        || lower.contains("secret")
        || lower.contains("api-key")
        || lower.contains("apikey")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RollbackConfig {
        let node = marked_yaml::parse_yaml(0, yaml).unwrap();
        marked_yaml::from_node(&node).unwrap()
    }

    #[test]
    fn dry_run_records_the_rendered_request_without_sending() {
        // Port 9 on loopback is closed: a real send would fail.
        let rollback = config(
            "dry_run: true\nrequest:\n  url: http://127.0.0.1:9/models/{{group.model_id}}/rollback\n  headers: {Authorization: Bearer s3cret, X-Reason: '{{rule_id}}'}\n  body: '{\"version\": \"{{group.model_version}}\", \"alert\": \"{{alert_id}}\"}'\n",
        )
        .compile("canary-rollback")
        .unwrap();
        let mut alert = crate::test_alert();
        alert.group.insert("model_version".into(), "v2.1".into());
        let outcome = rollback.execute(&Delivery::new(alert)).unwrap();
        let remediation = outcome.remediation.unwrap();
        assert!(remediation.dry_run);
        assert_eq!(remediation.action, "canary-rollback");
        assert_eq!(remediation.alert_id, "a1");
        assert_eq!(remediation.response_status, None);
        assert_eq!(remediation.request.method, "POST");
        assert_eq!(
            remediation.request.url,
            "http://127.0.0.1:9/models/recsys/rollback"
        );
        assert_eq!(
            remediation.request.body,
            r#"{"version": "v2.1", "alert": "a1"}"#
        );
        assert_eq!(remediation.request.headers["Authorization"], "<redacted>");
        assert_eq!(remediation.request.headers["X-Reason"], "canary-regression");
        assert_eq!(
            remediation.request.headers["Content-Type"],
            "application/json"
        );
        assert_eq!(
            outcome.summary,
            "dry run: would POST http://127.0.0.1:9/models/recsys/rollback"
        );
    }

    #[test]
    fn acts_on_firing_only_and_refuses_half_rendered_requests() {
        let rollback = config("request:\n  url: http://127.0.0.1:9/{{group.model_version}}\n")
            .compile("r")
            .unwrap();
        assert!(rollback.handles(AlertState::Firing));
        assert!(!rollback.handles(AlertState::Resolved));
        let failure = rollback
            .execute(&Delivery::new(crate::test_alert()))
            .unwrap_err();
        assert_eq!(failure.retry, crate::delivery::Retry::Never);
        assert!(failure
            .message
            .ends_with("has no group value 'model_version'"));
    }

    #[test]
    fn issue_16_rollback_refuses_dot_segments() {
        let rollback = config(
            "request:\n  url: http://127.0.0.1:9/models/{{group.model_id}}/versions/{{group.model_version}}/rollback?from={{group.model_version}}\n",
        )
        .compile("r")
        .unwrap();
        for version in [".", ".."] {
            let mut alert = crate::test_alert();
            alert.group.insert("model_version".into(), version.into());
            let failure = rollback.execute(&Delivery::new(alert)).unwrap_err();
            assert_eq!(failure.retry, crate::delivery::Retry::Never);
            assert_eq!(
                failure.message,
                format!(
                    "cannot render rollback request: {{{{group.model_version}}}} = {version:?} would make the URL path segment {version:?}, which a server resolves to another path"
                )
            );
            // Nothing was sent, so nothing is recorded as sent.
            assert!(failure.remediation.is_none());
        }
        // Two placeholders that only make ".." together are refused too.
        let joined = config("request:\n  url: http://127.0.0.1:9/models/{{group.model_id}}{{group.model_version}}\n")
            .compile("r")
            .unwrap();
        let mut alert = crate::test_alert();
        alert.group.insert("model_id".into(), ".".into());
        alert.group.insert("model_version".into(), ".".into());
        let failure = joined.execute(&Delivery::new(alert)).unwrap_err();
        assert_eq!(failure.retry, crate::delivery::Retry::Never);
        assert!(
            failure.message.contains("path segment \"..\""),
            "{}",
            failure.message
        );
    }

    #[test]
    fn issue_16_form_bodies_and_headers_cannot_be_extended_by_a_value() {
        let rollback = config(
            "dry_run: true\nrequest:\n  url: http://127.0.0.1:9/rollback\n  headers: {Content-Type: application/x-www-form-urlencoded, X-Version: '{{group.model_version}}'}\n  body: 'model={{group.model_id}}&version={{group.model_version}}'\n",
        )
        .compile("r")
        .unwrap();
        let mut alert = crate::test_alert();
        alert
            .group
            .insert("model_version".into(), "2.1&force=true".into());
        let request = rollback
            .execute(&Delivery::new(alert.clone()))
            .unwrap()
            .remediation
            .unwrap()
            .request;
        assert_eq!(request.body, "model=recsys&version=2.1%26force%3Dtrue");
        assert_eq!(request.headers["X-Version"], "2.1&force=true");

        // CR/LF in a header value would start a header of the caller's choosing.
        alert
            .group
            .insert("model_version".into(), "2.1\r\nX-Admin: yes".into());
        let failure = rollback.execute(&Delivery::new(alert)).unwrap_err();
        assert_eq!(failure.retry, crate::delivery::Retry::Never);
        assert_eq!(
            failure.message,
            "cannot render rollback request: value \"2.1\\r\\nX-Admin: yes\" has control characters"
        );
    }

    #[test]
    fn dots_inside_a_segment_or_the_query_are_ordinary_values() {
        let rollback = config(
            "dry_run: true\nrequest:\n  url: http://127.0.0.1:9/models/{{group.model_version}}/rollback?to={{labels.target}}\n",
        )
        .compile("r")
        .unwrap();
        let mut alert = crate::test_alert();
        alert.group.insert("model_version".into(), "..2.1".into());
        alert.labels.insert("target".into(), "..".into());
        let outcome = rollback.execute(&Delivery::new(alert)).unwrap();
        assert_eq!(
            outcome.remediation.unwrap().request.url,
            "http://127.0.0.1:9/models/..2.1/rollback?to=.."
        );
    }

    #[test]
    fn bad_templates_and_methods_are_config_errors_at_their_position() {
        let bad_placeholder = config("request:\n  url: http://x/{{model}}\n").compile("r");
        let problem = bad_placeholder.err().unwrap();
        assert_eq!(problem.position, Some((2, 8)));
        assert!(problem
            .message
            .starts_with("request.url: unknown placeholder '{{model}}'"));
        let bad_method = config("request:\n  method: FETCH\n  url: http://x/\n").compile("r");
        assert_eq!(bad_method.err().unwrap().position, Some((2, 11)));
    }
}
