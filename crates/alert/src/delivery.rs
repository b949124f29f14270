//! What an action is handed ([`Delivery`]) and what it hands back
//! ([`Outcome`], [`DeliveryFailure`], [`Remediation`]).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use inferwatch_core::{Alert, AlertState};
use serde::{Deserialize, Serialize};

/// One alert transition (firing or resolved) on its way to one action.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Names this transition: the same alert submitted twice gets the same
    /// key, so receivers (and the outbox) can drop the duplicate.
    pub idempotency_key: String,
    /// The alert, exactly as detection produced it.
    pub alert: Alert,
    /// 1 for the first try, 2 for the first retry, and so on.
    pub attempt: u32,
}

impl Delivery {
    /// Wraps an alert for its first attempt, keyed by [`idempotency_key`].
    pub fn new(alert: Alert) -> Delivery {
        Delivery {
            idempotency_key: idempotency_key(&alert),
            alert,
            attempt: 1,
        }
    }
}

/// The idempotency key of an alert transition: fingerprint, state and start.
///
/// The fingerprint names rule + group, the start names the episode, and the
/// state tells the firing from the resolution of that episode.
pub fn idempotency_key(alert: &Alert) -> String {
    format!(
        "{}:{}:{}",
        alert.fingerprint,
        state_name(alert.state),
        alert.starts_at
    )
}

/// The lowercase name of a state, as it appears in the alert JSON.
pub fn state_name(state: AlertState) -> &'static str {
    match state {
        AlertState::Pending => "pending",
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

/// The current wall-clock time, RFC 3339 in UTC with milliseconds: when a
/// request was sent or a record written (alerts themselves carry event time).
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What a successful execution did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line for logs, e.g. `HTTP 200`.
    pub summary: String,
    /// The receiver's HTTP status, for HTTP actions.
    pub status: Option<u16>,
    /// What a rollback did (or would have done, in dry-run mode).
    pub remediation: Option<Remediation>,
}

impl Outcome {
    /// An outcome that only carries an HTTP status.
    pub fn http(status: u16) -> Outcome {
        Outcome {
            summary: format!("HTTP {status}"),
            status: Some(status),
            remediation: None,
        }
    }
}

/// Whether and when a failed delivery may be tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after the dispatcher's exponential backoff.
    Backoff,
    /// Try again, but not before this long (the receiver's `Retry-After`).
    After(Duration),
    /// Don't: the request itself is wrong (HTTP 4xx, a bad template), so
    /// retrying would fail the same way. The delivery is dead-lettered at once.
    Never,
}

/// Why an execution failed, and the retry hint for the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryFailure {
    /// What went wrong, in lowercase, e.g. `HTTP 503 from receiver: busy`.
    pub message: String,
    /// Whether and when to try again.
    pub retry: Retry,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// A rollback's record of the request it sent, even when it failed
    /// (boxed: it is large and failures are passed around by value).
    pub remediation: Option<Box<Remediation>>,
}

impl DeliveryFailure {
    /// A failure worth retrying after backoff (the receiver is down or busy).
    pub fn transient(message: impl Into<String>) -> DeliveryFailure {
        DeliveryFailure {
            message: message.into(),
            retry: Retry::Backoff,
            status: None,
            remediation: None,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> DeliveryFailure {
        DeliveryFailure {
            message: message.into(),
            retry: Retry::Never,
            status: None,
            remediation: None,
        }
    }
}

impl fmt::Display for DeliveryFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.message)
    }
}

/// The record of one rollback request: what was sent, where, and what came
/// back. The caller stores it in the alert history; the dispatcher also
/// appends it to `remediations.jsonl` in its state dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remediation {
    /// Wall-clock time of the request (RFC 3339, UTC).
    pub at: String,
    /// The configured action's name.
    pub action: String,
    /// The alert episode that triggered it.
    pub alert_id: String,
    /// The rule that raised the alert.
    pub rule_id: String,
    /// Rule + group identity of the alert.
    pub fingerprint: String,
    /// True when the request was only rendered, not sent.
    pub dry_run: bool,
    /// The rendered request (secret header values redacted).
    pub request: RecordedRequest,
    /// The orchestrator's HTTP status, when it answered.
    pub response_status: Option<u16>,
    /// Why the request failed, when it did.
    pub error: Option<String>,
}

/// An HTTP request as it was (or would have been) sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// `POST`, `PUT`, …
    pub method: String,
    /// The rendered URL.
    pub url: String,
    /// Rendered headers; values of credential headers read `<redacted>`.
    pub headers: BTreeMap<String, String>,
    /// The rendered body.
    pub body: String,
}
