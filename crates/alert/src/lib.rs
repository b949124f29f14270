//! # inferwatch-alert
//!
//! Gets alerts to the people and systems that act on them: a signed
//! webhook, Prometheus Alertmanager, Slack, PagerDuty, a local program, or
//! an orchestrator that rolls a bad model version back.
//!
//! It sits at the end of the flow `sources → decode → detect → alert →
//! actions`. Detection emits alert transitions (an [`Alert`] that fired or
//! resolved, in event time); this crate delivers each transition to every
//! configured action whose filter accepts it.
//!
//! The key trait is [`Action`]: `execute(&Delivery) -> Result<Outcome,
//! DeliveryFailure>`, where a [`Delivery`] is one transition plus its
//! idempotency key (fingerprint, state and start time) and a failure carries
//! a retry hint. Every kind has a serde config and is registered in
//! [`builtin_actions`].
//!
//! Detection must never wait for a receiver, and a restart must neither lose
//! nor repeat a notification. So actions don't run on the caller's thread:
//! the [`Dispatcher`] journals each delivery to an append-only outbox on
//! disk (fsynced before `submit` returns), delivers from worker threads with
//! exponential backoff and full jitter, honours `Retry-After`, dead-letters
//! after the last attempt, and on start replays the journal: pending
//! deliveries go out again, delivered ones never do. See [`dispatch`] and
//! [`outbox`] for the details, and [`action::alertmanager`] for how event
//! time maps onto Alertmanager's wall clock.
//!
//! ```no_run
//! use std::path::Path;
//! use inferwatch_alert::{ActionsFile, BuildContext, Dispatcher, DispatcherConfig};
//!
//! # fn main() -> Result<(), inferwatch_alert::AlertError> {
//! // actions.yaml:
//! //   actions:
//! //     - name: am
//! //       kind: alertmanager
//! //       url: http://127.0.0.1:9093
//! let file = ActionsFile::load(Path::new("actions.yaml"))?;
//! let actions = file.build(&BuildContext::new())?;
//! let config = DispatcherConfig::new("state/alerts").with_settings(file.delivery.clone());
//! let dispatcher = Dispatcher::start(config, actions)?;
//! # let alerts: Vec<inferwatch_core::Alert> = Vec::new();
//! for alert in &alerts {
//!     dispatcher.submit(alert)?; // journaled; delivered in the background
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Noise control: from transitions to notifications
//! Between detection and the dispatcher sits the [`NotificationPipeline`]
//! ([`pipeline`]): it takes transitions in event-time order and the current
//! event time, and returns [`Notification`]s (a group and its alerts, with a
//! reason). It groups alerts with Alertmanager's `group_by`, `group_wait`,
//! `group_interval` and `repeat_interval` ([`grouping`]), leaves out
//! silenced ([`silence`]), inhibited ([`inhibit`]) and acknowledged alerts,
//! holds flapping ones ([`flapping`]), raises one `risk-threshold` alert
//! per entity whose findings add up ([`risk`]), and records everything in
//! an append-only history in its state dir ([`history`]), from which it
//! resumes after a restart. Its config is `notify.yaml` ([`NotifyConfig`])
//! and `silences.yaml` ([`SilencesFile`]); examples are in `examples/`.
//!
//! ## DORA metrics
//! [`dora`] turns deployment records, this history and rollback
//! remediations into deployment frequency, lead time, change failure rate
//! and time to restore per model (`inferwatch dora report`).
//!
//! ```no_run
//! # fn run(
//! #     dispatcher: &inferwatch_alert::Dispatcher,
//! #     transitions: Vec<inferwatch_core::Alert>,
//! #     now: i64,
//! # ) -> Result<(), inferwatch_alert::AlertError> {
//! use std::path::Path;
//! use inferwatch_alert::{submit_notifications, NotificationPipeline, NotifyConfig, SilencesFile};
//!
//! let config = NotifyConfig::load(Path::new("notify.yaml"))?;
//! let mut pipeline = NotificationPipeline::open(config, "state/alerts")?;
//! pipeline.add_silences(&SilencesFile::load(Path::new("silences.yaml"))?.silences)?;
//! // After a crash: what was produced but never handed over.
//! let unsent = pipeline.unsent_notifications().to_vec();
//! submit_notifications(dispatcher, &mut pipeline, &unsent)?;
//! // Then, for each batch from detection (event time in UTC nanoseconds):
//! let notifications = pipeline.process(&transitions, now)?;
//! submit_notifications(dispatcher, &mut pipeline, &notifications)?;
//! # Ok(())
//! # }
//! # fn main() {}
//! ```

pub mod action;
pub mod config;
pub mod delivery;
pub mod dispatch;
pub mod dora;
pub mod event_time;
pub mod flapping;
pub mod grouping;
pub mod history;
pub mod inhibit;
pub mod matcher;
pub mod notify_config;
pub mod outbox;
pub mod pipeline;
pub mod risk;
pub mod silence;

use std::path::PathBuf;

pub use action::{builtin_actions, Action, ActionConfig, ActionKind};
pub use config::{
    parse_severity, ActionFilter, ActionSpec, ActionsFile, BuildContext, ConfigProblem,
    ConfiguredAction, DeliverySettings,
};
pub use delivery::{
    idempotency_key, Delivery, DeliveryFailure, Outcome, RecordedRequest, Remediation, Retry,
};
pub use dispatch::{
    DeliveryReport, DeliveryStatus, Dispatcher, DispatcherConfig, DispatcherStats, Observer,
    SubmitReport,
};
pub use event_time::{format_event_time, parse_event_time, transition_time};
pub use flapping::FlappingConfig;
pub use grouping::{GroupBy, Notification, NotificationReason, RouteConfig, Suppression};
pub use history::{
    query_history, read_history, read_history_file, HistoricTransition, HistoryEntry, HistoryQuery,
    HistoryRecord, TransitionOrigin, HISTORY_FILE, SNAPSHOT_FILE,
};
pub use inferwatch_core::Alert;
pub use inhibit::{default_inhibit_rules, InhibitRule};
pub use matcher::{alert_label_set, LabelMatcher, MatchOperator};
pub use notify_config::NotifyConfig;
pub use pipeline::{
    dispatch_alerts, submit_notifications, Acknowledgement, NotificationPipeline, PipelineStats,
};
pub use risk::{tactic_of, EntityScore, RiskConfig, SeverityWeights, RISK_RULE_ID};
pub use silence::{Silence, SilencesFile};

/// Errors raised while loading action configs or running the dispatcher.
/// (A failed delivery is not an error here: it is a [`DeliveryFailure`],
/// which the dispatcher retries or dead-letters.)
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// An action config file is invalid; the position names the offending key or value.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A config file or a file in the state dir could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The outbox journal holds a record that cannot be read (not a torn
    /// last line, which is repaired, but damage inside the file).
    #[error("{}:{line}: corrupt outbox record: {message}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// What could not be read.
        message: String,
    },
    /// The alert history or the pipeline's state snapshot holds a record
    /// that cannot be read (damage inside the file, not an unfinished last
    /// batch, which is cut off).
    #[error("{}:{line}: corrupt alert history: {message}", path.display())]
    History {
        /// The history or snapshot file.
        path: PathBuf,
        /// 1-based line, 0 when unknown.
        line: u64,
        /// What could not be read.
        message: String,
    },
    /// A line of a record file (deployment records, `remediations.jsonl`)
    /// cannot be read or makes no sense.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Record {
        /// The record file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column (1 when the whole line is at fault).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A signed webhook delivery failed verification (see
    /// [`action::webhook::verify_signature`]): tampered, from another
    /// secret, malformed, or outside the replay tolerance.
    #[error("{0}")]
    Signature(String),
    /// An argument or setting is invalid, e.g. a missing secret.
    #[error("{0}")]
    Invalid(String),
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// An alert as the unit tests use it: a firing canary regression.
#[cfg(test)]
pub(crate) fn test_alert() -> Alert {
    use inferwatch_core::{AlertState, Contributor, Impact, Severity};
    Alert {
        alert_id: "a1".to_string(),
        fingerprint: "fp-1".to_string(),
        rule_id: "canary-regression".to_string(),
        title: "Canary slower than baseline".to_string(),
        severity: Severity::High,
        state: AlertState::Firing,
        starts_at: "2026-01-01T00:00:00Z".to_string(),
        ends_at: None,
        group: [("model_id".to_string(), "recsys".to_string())].into(),
        value: Some(640.0),
        threshold: Some(500.0),
        condition: "canary.p99(latency_ms) > 500".to_string(),
        atlas: vec!["AML.T0010.003".to_string(), "AML.T0029".to_string()],
        impact: Impact {
            events: 1200,
            share_of_traffic: 0.1,
            distinct_clients: Some(3412),
        },
        summary: String::new(),
        explanation: vec![Contributor {
            dimension: "source_id".to_string(),
            value: "s3".to_string(),
            lift: 6.1,
            share: None,
        }],
        labels: Default::default(),
        evidence: None,
    }
}
