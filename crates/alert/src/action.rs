//! The [`Action`] seam and the registry of built-in kinds.
//!
//! Every kind has a serde config struct (`deny_unknown_fields`) that
//! implements [`ActionConfig`], whose `build` resolves secrets and returns
//! the runtime [`Action`]. [`builtin_actions`] lists them all.

pub mod alertmanager;
pub mod command;
mod http;
pub mod pagerduty;
pub mod rollback;
pub mod slack;
mod template;
mod text;
pub mod webhook;

use std::fmt::Debug;

use inferwatch_core::AlertState;
use marked_yaml::Node;
use serde::de::DeserializeOwned;

use crate::config::{BuildContext, ConfigProblem};
use crate::delivery::{Delivery, DeliveryFailure, Outcome};
use crate::AlertError;

/// Something done with an alert transition: a notification sent, an
/// orchestrator called, a program run.
///
/// `execute` runs on a dispatcher thread and may block (network, child
/// process) but must return within its own timeout. It must be safe to
/// call again with the same delivery: the dispatcher delivers at least
/// once, and passes [`Delivery::idempotency_key`] so receivers can drop
/// repeats.
pub trait Action: Send + Sync {
    /// Delivers one transition. On failure, [`DeliveryFailure::retry`] tells
    /// the dispatcher whether (and when) to try again.
    fn execute(&self, delivery: &Delivery) -> Result<Outcome, DeliveryFailure>;

    /// Which transitions this action acts on. Firing and resolved by
    /// default; a rollback acts on firing only.
    fn handles(&self, state: AlertState) -> bool {
        matches!(state, AlertState::Firing | AlertState::Resolved)
    }

    /// Whether it is sent a still-firing alert again when its group's
    /// `repeat_interval` passes. Yes by default (a reminder, and it keeps
    /// Alertmanager's `endsAt` fresh); a rollback acts once per episode.
    fn repeats(&self) -> bool {
        true
    }
}

/// The serde config of one action kind. (Not `Debug`: configs hold secrets.)
pub trait ActionConfig: Send + Sync {
    /// Resolves secrets and builds the runtime action. `name` is the
    /// configured action name (rollback puts it in its remediation records).
    fn build(&self, name: &str, context: &BuildContext) -> Result<Box<dyn Action>, AlertError>;

    /// Checks what serde cannot (durations, templates), with positions.
    fn validate(&self) -> Result<(), ConfigProblem> {
        Ok(())
    }
}

/// One registered action kind.
pub struct ActionKind {
    /// The `kind:` value in config files.
    pub name: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
    pub(crate) parse: fn(&Node) -> Result<Box<dyn ActionConfig>, ConfigProblem>,
}

impl Debug for ActionKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ActionKind")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every built-in action kind, in the order they are documented.
pub fn builtin_actions() -> Vec<ActionKind> {
    vec![
        ActionKind {
            name: "webhook",
            summary: "POST the alert JSON, signed with HMAC-SHA256",
            parse: parse_kind::<webhook::WebhookConfig>,
        },
        ActionKind {
            name: "alertmanager",
            summary: "Prometheus Alertmanager v2 API (POST /api/v2/alerts)",
            parse: parse_kind::<alertmanager::AlertmanagerConfig>,
        },
        ActionKind {
            name: "slack",
            summary: "Slack incoming webhook (text and blocks)",
            parse: parse_kind::<slack::SlackConfig>,
        },
        ActionKind {
            name: "pagerduty",
            summary: "PagerDuty Events API v2 (trigger and resolve)",
            parse: parse_kind::<pagerduty::PagerDutyConfig>,
        },
        ActionKind {
            name: "command",
            summary: "run a program with the alert JSON on stdin (opt-in)",
            parse: parse_kind::<command::CommandConfig>,
        },
        ActionKind {
            name: "rollback",
            summary: "call an orchestrator through an HTTP request template on firing",
            parse: parse_kind::<rollback::RollbackConfig>,
        },
    ]
}

fn parse_kind<T>(node: &Node) -> Result<Box<dyn ActionConfig>, ConfigProblem>
where
    T: ActionConfig + DeserializeOwned + 'static,
{
    let config: T = marked_yaml::from_node(node)
        .map_err(|error| ConfigProblem::from_node_error(&error, node))?;
    config.validate()?;
    Ok(Box::new(config))
}
