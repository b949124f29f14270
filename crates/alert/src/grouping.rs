//! Grouping with Alertmanager's timing: what a [`Notification`] is, and how
//! an aggregation group decides when to send one.
//!
//! Alerts with equal values of the `group_by` labels share a group. A new
//! group waits `group_wait` before its first notification, so that alerts
//! of one incident arriving together are sent together. After that the
//! group is looked at every `group_interval`: it notifies when an alert
//! joined (a firing alert not notified yet) or resolved, and otherwise
//! re-notifies its firing alerts once `repeat_interval` has passed since
//! its last notification. A group with no alerts left is dropped; the next
//! alert with its labels starts a new one (and waits `group_wait` again).
//!
//! What an alert looks like to the group at a look is decided by the
//! pipeline: silenced or inhibited alerts are left out (and recorded once),
//! acknowledged ones are not repeated, flapping ones are frozen.
//! Members are kept per episode (`alert_id`), so a resolution waiting for
//! the next look is not lost when the same fingerprint fires again.

use std::collections::BTreeMap;
use std::time::Duration;

use inferwatch_core::{fingerprint, Alert, AlertState};
use serde::{Deserialize, Serialize};

use crate::event_time::{duration_nanos, rfc3339};

/// Alertmanager's default `group_wait`: 30 s.
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
/// Alertmanager's default `group_interval`: 5 min.
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(300);
/// Alertmanager's default `repeat_interval`: 4 h.
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

/// Which labels make up a group's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    /// These labels (missing ones read as "").
    Labels(Vec<String>),
    /// Every label (`group_by: ['...']`): each alert is its own group.
    All,
}

/// Grouping and timing, as in an Alertmanager route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    /// The labels alerts are grouped by.
    pub group_by: GroupBy,
    /// How long a new group waits before its first notification.
    pub group_wait: Duration,
    /// How often a group is looked at for changes after that.
    pub group_interval: Duration,
    /// How long before unchanged firing alerts are notified again.
    pub repeat_interval: Duration,
}

impl Default for RouteConfig {
    fn default() -> RouteConfig {
        RouteConfig {
            group_by: GroupBy::Labels(vec!["alertname".to_string()]),
            group_wait: DEFAULT_GROUP_WAIT,
            group_interval: DEFAULT_GROUP_INTERVAL,
            repeat_interval: DEFAULT_REPEAT_INTERVAL,
        }
    }
}

impl RouteConfig {
    /// The group key and group labels of an alert with these labels. The key
    /// reads like Alertmanager's, e.g. `{alertname="p99",model_id="recsys"}`.
    pub fn group_of(
        &self,
        labels: &BTreeMap<String, String>,
    ) -> (String, BTreeMap<String, String>) {
        let group_labels: BTreeMap<String, String> = match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => names
                .iter()
                .map(|name| (name.clone(), labels.get(name).cloned().unwrap_or_default()))
                .collect(),
        };
        let pairs: Vec<String> = group_labels
            .iter()
            .map(|(name, value)| format!("{name}={value:?}"))
            .collect();
        (format!("{{{}}}", pairs.join(",")), group_labels)
    }

    /// The group interval in nanoseconds, at least 1 (a zero interval would
    /// look at a group endlessly at one instant).
    pub(crate) fn group_interval_nanos(&self) -> i64 {
        duration_nanos(self.group_interval).max(1)
    }
}

/// Why a notification was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationReason {
    /// A new group's first notification, after `group_wait`.
    NewGroup,
    /// Alerts joined or resolved since the last notification (at a
    /// `group_interval` look).
    GroupChanged,
    /// Nothing changed, but `repeat_interval` has passed.
    Repeat,
    /// An alert started flapping; its transitions are held from now on.
    Flapping,
    /// A flapping alert has been stable long enough; this is its state.
    Settled,
}

/// One notification for the Dispatcher: a group and the alerts it reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Unique and deterministic: replaying the same input gives the same ids.
    pub notification_id: String,
    /// Event time it was sent at (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub at: i64,
    /// The group's key, e.g. `{model_id="recsys"}`.
    pub group_key: String,
    /// The `group_by` labels and their values.
    pub group_labels: BTreeMap<String, String>,
    /// The firing alerts it reports (all of the group's, minus silenced,
    /// inhibited and acknowledged ones), then the resolved ones.
    pub alerts: Vec<Alert>,
    /// Why it was sent.
    pub reason: NotificationReason,
}

impl Notification {
    pub(crate) fn new(
        sequence: u64,
        at: i64,
        group_key: String,
        group_labels: BTreeMap<String, String>,
        alerts: Vec<Alert>,
        reason: NotificationReason,
    ) -> Notification {
        let sequence_text = sequence.to_string();
        let at_text = at.to_string();
        Notification {
            notification_id: fingerprint([
                group_key.as_str(),
                at_text.as_str(),
                sequence_text.as_str(),
            ]),
            at,
            group_key,
            group_labels,
            alerts,
            reason,
        }
    }
}

/// Why an alert was left out of a notification (recorded in the history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Suppression {
    /// Active silences match it.
    Silenced {
        /// The matching silences.
        silence_ids: Vec<String>,
    },
    /// A firing alert inhibits it.
    Inhibited {
        /// The source alert's fingerprint.
        source_fingerprint: String,
        /// The source alert's episode.
        source_alert_id: String,
        /// Index of the inhibition rule in the config.
        rule: usize,
    },
    /// It is acknowledged: no repeats until it resolves or the ack expires.
    Acknowledged {
        /// Who acknowledged it.
        author: String,
    },
    /// It is flapping: transitions are held until it settles.
    Flapping,
}

impl Suppression {
    /// A short key telling suppressions apart, so each is recorded once.
    pub(crate) fn signature(&self) -> String {
        match self {
            Suppression::Silenced { silence_ids } => format!("silenced:{}", silence_ids.join(",")),
            Suppression::Inhibited {
                source_alert_id, ..
            } => format!("inhibited:{source_alert_id}"),
            Suppression::Acknowledged { author } => format!("acknowledged:{author}"),
            Suppression::Flapping => "flapping".to_string(),
        }
    }
}

/// How the pipeline sees a group member at a look.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MemberView {
    /// Its fingerprint is flapping: leave it alone.
    pub(crate) flapping: bool,
    /// Silenced or inhibited.
    pub(crate) muted: Option<Suppression>,
    /// Acknowledged (by whom).
    pub(crate) acknowledged_by: Option<String>,
}

/// One alert episode in a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GroupMember {
    /// The latest transition of this episode.
    pub(crate) alert: Alert,
    /// When it started (for ordering).
    pub(crate) started: i64,
    /// Its firing has been notified.
    pub(crate) notified_firing: bool,
    /// The last suppression recorded for it, so each is recorded once.
    pub(crate) recorded_suppression: Option<String>,
}

/// An aggregation group: the alerts sharing one group key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AggregationGroup {
    pub(crate) labels: BTreeMap<String, String>,
    /// Members by alert id.
    pub(crate) members: BTreeMap<String, GroupMember>,
    /// When the group is looked at next.
    pub(crate) next_flush: i64,
    /// When it last notified.
    pub(crate) last_notified: Option<i64>,
}

/// What a look at a group produced.
#[derive(Debug, Default)]
pub(crate) struct FlushOutcome {
    /// The notification to send: reason and alerts.
    pub(crate) notification: Option<(NotificationReason, Vec<Alert>)>,
    /// Newly suppressed alerts, to record.
    pub(crate) suppressed: Vec<(Alert, Suppression)>,
    /// Alert ids that left the group.
    pub(crate) removed: Vec<String>,
}

impl AggregationGroup {
    pub(crate) fn new(labels: BTreeMap<String, String>, next_flush: i64) -> AggregationGroup {
        AggregationGroup {
            labels,
            members: BTreeMap::new(),
            next_flush,
            last_notified: None,
        }
    }

    /// Applies a firing or resolved transition.
    pub(crate) fn update(&mut self, alert: &Alert, started: i64) {
        match self.members.get_mut(&alert.alert_id) {
            Some(member) => member.alert = alert.clone(),
            None if alert.state == AlertState::Firing => {
                self.members.insert(
                    alert.alert_id.clone(),
                    GroupMember {
                        alert: alert.clone(),
                        started,
                        notified_firing: false,
                        recorded_suppression: None,
                    },
                );
            }
            // A resolution whose firing the group never held has nothing to end.
            None => {}
        }
    }

    /// Replaces every episode of the alert's fingerprint by the settled
    /// state of a flapping alert; `notified` says whether it was just sent.
    pub(crate) fn settle(&mut self, alert: &Alert, started: i64, notified: bool) -> Vec<String> {
        let stale: Vec<String> = self
            .members
            .iter()
            .filter(|(_, member)| member.alert.fingerprint == alert.fingerprint)
            .map(|(alert_id, _)| alert_id.clone())
            .collect();
        for alert_id in &stale {
            self.members.remove(alert_id);
        }
        let keep = match alert.state {
            AlertState::Firing => true,
            // A resolution that was not notified still has to go out.
            AlertState::Resolved => !notified,
            AlertState::Pending => false,
        };
        if keep {
            self.members.insert(
                alert.alert_id.clone(),
                GroupMember {
                    alert: alert.clone(),
                    started,
                    // An unsent resolution is sent at the next look only
                    // if the firing counts as notified.
                    notified_firing: notified || alert.state == AlertState::Resolved,
                    recorded_suppression: None,
                },
            );
        }
        stale
            .into_iter()
            .filter(|alert_id| !self.members.contains_key(alert_id))
            .collect()
    }

    /// Looks at the group at `at`: decides whether to notify and what.
    pub(crate) fn flush(
        &mut self,
        route: &RouteConfig,
        at: i64,
        mut view: impl FnMut(&GroupMember) -> MemberView,
    ) -> FlushOutcome {
        let mut outcome = FlushOutcome::default();
        let mut firing = Vec::new();
        let mut resolved = Vec::new();
        let mut dropped = Vec::new();
        let mut changed = false;
        for (alert_id, member) in &mut self.members {
            let member_view = view(member);
            if member_view.flapping {
                continue;
            }
            match member.alert.state {
                AlertState::Firing => {
                    let suppression = member_view.muted.or(member_view
                        .acknowledged_by
                        .map(|author| Suppression::Acknowledged { author }));
                    match suppression {
                        Some(suppression) => {
                            let signature = suppression.signature();
                            if member.recorded_suppression.as_deref() != Some(signature.as_str()) {
                                member.recorded_suppression = Some(signature);
                                outcome.suppressed.push((member.alert.clone(), suppression));
                            }
                        }
                        None => {
                            member.recorded_suppression = None;
                            changed |= !member.notified_firing;
                            firing.push(alert_id.clone());
                        }
                    }
                }
                AlertState::Resolved => {
                    if member.notified_firing || member_view.acknowledged_by.is_some() {
                        changed = true;
                        resolved.push(alert_id.clone());
                    } else {
                        // Never notified as firing (silenced or inhibited
                        // throughout): its resolution is news to no one.
                        dropped.push(alert_id.clone());
                    }
                }
                AlertState::Pending => dropped.push(alert_id.clone()),
            }
        }
        let repeat_due = self
            .last_notified
            .is_some_and(|last| at.saturating_sub(last) >= duration_nanos(route.repeat_interval));
        let reason = if changed {
            Some(match self.last_notified {
                None => NotificationReason::NewGroup,
                Some(_) => NotificationReason::GroupChanged,
            })
        } else if repeat_due && !firing.is_empty() {
            Some(NotificationReason::Repeat)
        } else {
            None
        };
        if let Some(reason) = reason {
            let mut alerts: Vec<(i64, Alert)> = Vec::with_capacity(firing.len() + resolved.len());
            for alert_id in &firing {
                if let Some(member) = self.members.get_mut(alert_id) {
                    member.notified_firing = true;
                    alerts.push((member.started, member.alert.clone()));
                }
            }
            alerts.sort_by(|left, right| {
                (left.0, &left.1.rule_id, &left.1.fingerprint).cmp(&(
                    right.0,
                    &right.1.rule_id,
                    &right.1.fingerprint,
                ))
            });
            for alert_id in &resolved {
                if let Some(member) = self.members.remove(alert_id) {
                    alerts.push((member.started, member.alert));
                    outcome.removed.push(alert_id.clone());
                }
            }
            self.last_notified = Some(at);
            outcome.notification = Some((reason, alerts.into_iter().map(|(_, a)| a).collect()));
        }
        for alert_id in dropped {
            self.members.remove(&alert_id);
            outcome.removed.push(alert_id);
        }
        self.next_flush = at.saturating_add(route.group_interval_nanos());
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_read_like_alertmanager() {
        let route = RouteConfig {
            group_by: GroupBy::Labels(vec!["model_id".to_string(), "alertname".to_string()]),
            ..RouteConfig::default()
        };
        let labels: BTreeMap<String, String> = [
            ("alertname".to_string(), "p99".to_string()),
            ("model_id".to_string(), "recsys".to_string()),
            ("client_id".to_string(), "c1".to_string()),
        ]
        .into();
        let (key, group_labels) = route.group_of(&labels);
        assert_eq!(key, r#"{alertname="p99",model_id="recsys"}"#);
        assert_eq!(group_labels.len(), 2);
        let all = RouteConfig {
            group_by: GroupBy::All,
            ..RouteConfig::default()
        };
        assert_eq!(all.group_of(&labels).1, labels);
    }
}
