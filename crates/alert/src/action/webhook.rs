//! `webhook`: POST the alert JSON to a URL, signed.
//!
//! Headers sent with every request:
//! * `Content-Type: application/json`;
//! * `Idempotency-Key`: the delivery's key, the same on every retry;
//! * `X-Inferwatch-Timestamp`: wall-clock Unix seconds of this attempt;
//! * `X-Inferwatch-Attempt`: 1 for the first try, 2 for the first retry, …;
//! * `X-Inferwatch-Signature: v1=<hex>` (only when a secret is configured):
//!   the lowercase hex HMAC-SHA256, under the secret, of the timestamp
//!   header's value, a `.`, and the exact body bytes, i.e. of
//!   `"{timestamp}.{body}"` (the scheme Stripe and Slack use).
//!
//! ## Verifying a delivery
//! Signing the timestamp with the body lets a receiver refuse a captured
//! request that is sent again later. Before parsing the body, a receiver:
//! 1. reads `X-Inferwatch-Timestamp` (decimal digits only) and the raw body;
//! 2. computes HMAC-SHA256 of `timestamp + "." + body` with the shared
//!    secret and compares its hex with the part of `X-Inferwatch-Signature`
//!    after `v1=`, in constant time (e.g. Python's `hmac.compare_digest`,
//!    Node's `crypto.timingSafeEqual`);
//! 3. rejects the request when the timestamp is more than a tolerance
//!    (5 minutes is usual, [`DEFAULT_TOLERANCE`]) away from its own clock,
//!    in either direction;
//! 4. drops a request whose `Idempotency-Key` it has already answered with
//!    2xx: this catches a replay inside the tolerance, and inferwatch's own
//!    retries. The key is `fingerprint:state:starts_at` of the signed body,
//!    so a receiver that distrusts the (unsigned) header can compute it.
//!
//! Each attempt is signed afresh with its own timestamp, so a retry after a
//! long backoff is not mistaken for a replay. Receivers in Rust can call
//! [`verify_signature`], which does steps 1 to 3.
//!
//! ```python
//! expected = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
//! ok = hmac.compare_digest("v1=" + expected, signature_header) \
//!      and abs(time.time() - int(timestamp)) <= 300
//! ```
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

/// The header carrying `v1=` and the HMAC-SHA256 of `"{timestamp}.{body}"`.
pub const SIGNATURE_HEADER: &str = "X-Inferwatch-Signature";
/// The version prefix of the signature: a later scheme gets a new one, so
/// a receiver never mistakes one scheme for another.
pub const SIGNATURE_VERSION: &str = "v1";
/// How far a delivery's timestamp may be from the receiver's clock.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);
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
            headers.push((
                SIGNATURE_HEADER.to_string(),
                signature(secret, timestamp, &body),
            ));
        }
        headers.extend(self.headers.iter().cloned());
        let reply = self.client.send("POST", &self.url, &headers, body)?;
        check_status("webhook", &reply).map(Outcome::http)
    }
}

/// `v1=` followed by the lowercase hex HMAC-SHA256 under `secret` of
/// `"{timestamp}.{body}"`: the value of [`SIGNATURE_HEADER`] for a request
/// whose [`TIMESTAMP_HEADER`] is `timestamp`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mac = signed_mac(secret, &timestamp.to_string(), body);
    format!(
        "{SIGNATURE_VERSION}={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Checks a delivery as a receiver should: `signature_header` must be the
/// signature of `timestamp_header` and the raw `body` under `secret`
/// (compared in constant time), and the timestamp within `tolerance` of
/// `now`, either way. Replays inside the tolerance are caught by the
/// `Idempotency-Key`, which this does not see.
///
/// Fails with [`AlertError::Signature`], saying why.
pub fn verify_signature(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), AlertError> {
    let refuse = |message: String| Err(AlertError::Signature(message));
    // Digits only: `u64::from_str` would take a leading `+`, and then two
    // timestamp strings would carry one time but differ in what is signed.
    if timestamp_header.is_empty() || !timestamp_header.bytes().all(|b| b.is_ascii_digit()) {
        return refuse(format!(
            "webhook timestamp {timestamp_header:?} is not Unix seconds"
        ));
    }
    let Ok(timestamp) = timestamp_header.parse::<u64>() else {
        return refuse(format!(
            "webhook timestamp {timestamp_header:?} is not Unix seconds"
        ));
    };
    let Some(hex_mac) = signature_header
        .trim()
        .strip_prefix(SIGNATURE_VERSION)
        .and_then(|rest| rest.strip_prefix('='))
    else {
        return refuse(format!(
            "webhook signature header has no {SIGNATURE_VERSION}= signature"
        ));
    };
    let Ok(claimed) = hex::decode(hex_mac) else {
        return refuse("webhook signature is not hex".to_string());
    };
    // Mac::verify_slice compares in constant time.
    if signed_mac(secret, timestamp_header, body)
        .verify_slice(&claimed)
        .is_err()
    {
        return refuse("webhook signature does not match".to_string());
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let skew = now.abs_diff(timestamp);
    if skew > tolerance.as_secs() {
        return refuse(format!(
            "webhook timestamp {timestamp} is {skew} s from now, outside the {} s tolerance (a replay?)",
            tolerance.as_secs()
        ));
    }
    Ok(())
}

fn signed_mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("hmac accepts keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"receiver-secret";
    const SENT_AT: u64 = 1_767_225_600;

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn signature_is_the_hmac_of_timestamp_dot_body() {
        // Python: hmac.new(b"Jefe", b"1767225600.what do ya want for nothing?", sha256).
        assert_eq!(
            signature(b"Jefe", SENT_AT, b"what do ya want for nothing?"),
            "v1=8bf4bab82972f519c62eab705abd744e0bc4e8a7e292de99189f49e03834693a"
        );
    }

    #[test]
    fn issue_16_webhook_signature_covers_the_timestamp_and_rejects_replays() {
        let body = br#"{"alert_id":"a1","state":"firing"}"#;
        let timestamp = SENT_AT.to_string();
        let header = signature(SECRET, SENT_AT, body);
        assert!(header.starts_with("v1="), "{header}");
        let verify = |timestamp: &str, header: &str, body: &[u8], now: u64| {
            verify_signature(SECRET, timestamp, header, body, at(now), DEFAULT_TOLERANCE)
        };

        // Fresh, and within the tolerance either way (clocks drift).
        verify(&timestamp, &header, body, SENT_AT).unwrap();
        verify(&timestamp, &header, body, SENT_AT + 300).unwrap();
        verify(&timestamp, &header, body, SENT_AT - 300).unwrap();

        let tampered = br#"{"alert_id":"a1","state":"resolved"}"#;
        let error = verify(&timestamp, &header, tampered, SENT_AT).unwrap_err();
        assert!(matches!(error, AlertError::Signature(_)), "{error}");
        assert_eq!(error.to_string(), "webhook signature does not match");

        // A replayer who moves the timestamp forward breaks the signature.
        let moved = (SENT_AT + 3600).to_string();
        let error = verify(&moved, &header, body, SENT_AT + 3600).unwrap_err();
        assert_eq!(error.to_string(), "webhook signature does not match");

        // The genuine request, replayed later, is too old.
        let error = verify(&timestamp, &header, body, SENT_AT + 301).unwrap_err();
        assert_eq!(
            error.to_string(),
            "webhook timestamp 1767225600 is 301 s from now, outside the 300 s tolerance (a replay?)"
        );
        // The old body-only signature is not accepted.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
        mac.update(body);
        let body_only = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
        assert!(verify(&timestamp, &body_only, body, SENT_AT).is_err());
        // Another secret.
        assert!(verify_signature(
            b"other",
            &timestamp,
            &header,
            body,
            at(SENT_AT),
            DEFAULT_TOLERANCE
        )
        .is_err());
    }

    #[test]
    fn malformed_signature_headers_are_refused_with_a_reason() {
        let body = b"{}";
        let timestamp = SENT_AT.to_string();
        let good = signature(SECRET, SENT_AT, body);
        let check = |timestamp: &str, header: &str| {
            verify_signature(
                SECRET,
                timestamp,
                header,
                body,
                at(SENT_AT),
                DEFAULT_TOLERANCE,
            )
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            check("+1767225600", &good),
            "webhook timestamp \"+1767225600\" is not Unix seconds"
        );
        assert_eq!(
            check(&timestamp, good.trim_start_matches("v1=")),
            "webhook signature header has no v1= signature"
        );
        assert_eq!(check(&timestamp, "v1=zz"), "webhook signature is not hex");
    }
}
