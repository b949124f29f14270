//! `webhook`: POST the alert JSON to a URL, signed.
//!
//! Headers sent with every request:
//! * `Content-Type: application/json`;
//! * `Idempotency-Key`: the delivery's key, the same on every retry;
//! * `X-Inferwatch-Timestamp`: wall-clock Unix seconds of this attempt;
//! * `X-Inferwatch-Attempt`: 1 for the first try, 2 for the first retry, …;
//! * `X-Inferwatch-Signature: sha256=<hex>`: HMAC-SHA256 of the exact body
//!   bytes with the configured secret (only when a secret is configured).
//!
//! A receiver verifies the signature with [`signature`] over the raw body
//! before parsing it, and drops a request whose `Idempotency-Key` it has
//! already answered with 2xx.
//!
//! ```yaml
//! - name: oncall
//!   kind: webhook
//!   url: https://hooks.example.com/inferwatch
//!   secret_env: INFERWATCH_WEBHOOK_SECRET   # or secret: "..."
//!   headers: {X-Team: ml-platform}
//!   timeout: 10s
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use marked_yaml::Spanned;
use serde::Deserialize;
use sha2::Sha256;

use super::http::{check_status, HttpClient, DEFAULT_TIMEOUT};
use super::{Action, ActionConfig};
use crate::config::{timeout_field, BuildContext, ConfigProblem};
use crate::delivery::{Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// The header carrying the body's HMAC-SHA256.
pub const SIGNATURE_HEADER: &str = "X-Inferwatch-Signature";
/// The header carrying the attempt's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Inferwatch-Timestamp";
/// The header carrying the delivery's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// Config of a `webhook` action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// The HMAC key, inline.
    #[serde(default)]
    pub secret: Option<String>,
    /// The name of the environment variable holding the HMAC key.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Extra headers, e.g. an authorization token.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Whole-request timeout (default 10s).
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
}

impl ActionConfig for WebhookConfig {
    fn validate(&self) -> Result<(), ConfigProblem> {
        timeout_field(&self.timeout, DEFAULT_TIMEOUT).map(|_| ())
    }

    fn build(&self, _name: &str, context: &BuildContext) -> Result<Box<dyn Action>, AlertError> {
        let secret = context.secret("secret", &self.secret, &self.secret_env)?;
        let timeout =
            timeout_field(&self.timeout, DEFAULT_TIMEOUT).map_err(ConfigProblem::into_invalid)?;
        let headers = self
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        Ok(Box::new(WebhookAction::new(
            self.url.clone(),
            secret.map(String::into_bytes),
            headers,
            timeout,
        )))
    }
}

/// POSTs the alert JSON, signed with HMAC-SHA256.
pub struct WebhookAction {
    url: String,
    secret: Option<Vec<u8>>,
    headers: Vec<(String, String)>,
    client: HttpClient,
}

impl WebhookAction {
    /// A webhook to `url`; `secret` enables the signature header.
    pub fn new(
        url: String,
        secret: Option<Vec<u8>>,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> WebhookAction {
        WebhookAction {
            url,
            secret,
            headers,
            client: HttpClient::new(timeout),
        }
    }
}

impl Action for WebhookAction {
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure> {
        let body = serde_json::to_vec(&delivery.alert).map_err(|error| {
            DeliveryFailure::permanent(format!("cannot encode alert as JSON: {error}"))
        })?;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut headers = vec![
            ("Content-Type".to_string(), "application/json".to_string()),
            (
                IDEMPOTENCY_HEADER.to_string(),
                delivery.idempotency_key.clone(),
            ),
            (TIMESTAMP_HEADER.to_string(), timestamp.to_string()),
            (
                "X-Inferwatch-Attempt".to_string(),
                delivery.attempt.to_string(),
            ),
        ];
        if let Some(secret) = &self.secret {
            headers.push((SIGNATURE_HEADER.to_string(), signature(secret, &body)));
        }
        headers.extend(self.headers.iter().cloned());
        let reply = self.client.send("POST", &self.url, &headers, body)?;
        check_status("webhook", &reply).map(Outcome::http)
    }
}

/// `sha256=` followed by the lowercase hex HMAC-SHA256 of `body` under
/// `secret`: the value of [`SIGNATURE_HEADER`].
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("hmac accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_rfc_4231_test_case_2() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
