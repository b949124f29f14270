//! The [`NotificationPipeline`]: what happens between the detection
//! engine's alert transitions and the [`Dispatcher`].
//!
//! It is fed transitions in event-time order ([`ingest`]) and the current
//! event time ([`advance_to`]), and returns the [`Notification`]s that are
//! due. Every timer is event time (live, event time is about wall time), so
//! a backtest over stored history produces the notifications live operation
//! would have, and the output does not depend on how the input was split
//! into calls: a transition at `t` first runs every timer due at or before
//! `t`, then is applied; timers due at the same instant run in a fixed
//! order (risk expiry, then flapping, then group looks; by key within one
//! kind).
//!
//! Each transition goes through these stages:
//! 1. **history**: recorded (duplicates, i.e. the same fingerprint, state
//!    and start seen within 24 h, are dropped; a transition older than the
//!    clock is taken as happening now);
//! 2. **risk** ([`risk`](crate::risk)): a firing finding adds risk to the
//!    entities it names; crossing the threshold raises a `risk-threshold`
//!    alert, which then takes the stages below like any other;
//! 3. **flapping** ([`flapping`](crate::flapping)): a fingerprint changing
//!    state too often is notified once as flapping and then held until it
//!    settles;
//! 4. **grouping** ([`grouping`](crate::grouping)): Alertmanager's
//!    `group_by`, `group_wait`, `group_interval` and `repeat_interval`. When a
//!    group is looked at, each alert is checked against
//! 5. **silences** ([`silence`](crate::silence)), **inhibition**
//!    ([`inhibit`](crate::inhibit)) and **acknowledgements**: muted alerts are
//!    left out and recorded as `suppressed`; an acknowledged alert gets no
//!    repeats until it resolves or the acknowledgement expires, and its
//!    resolution is still notified.
//!
//! ## Persistence, restarts and the Dispatcher
//! With a state dir ([`NotificationPipeline::open`]) every call appends its
//! records to the [history](crate::history) and fsyncs once before it
//! returns; the state is snapshotted now and then, and on open the snapshot
//! is loaded and the history after it replayed. So a restart keeps every
//! group timer, and notifications already produced are not produced again.
//!
//! A produced notification is held as *unsent* until the caller confirms it
//! was handed to the dispatcher ([`confirm_sent`]; [`submit_notifications`]
//! does both). After a crash between the two, [`unsent_notifications`] has
//! it: submit it again, and the dispatcher's idempotency keys drop whatever
//! had reached its outbox already.
//!
//! [`Dispatcher`]: crate::Dispatcher
//! [`ingest`]: NotificationPipeline::ingest
//! [`advance_to`]: NotificationPipeline::advance_to
//! [`confirm_sent`]: NotificationPipeline::confirm_sent
//! [`unsent_notifications`]: NotificationPipeline::unsent_notifications

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use inferwatch_core::{Alert, AlertState};
use serde::{Deserialize, Serialize};

use crate::delivery::{idempotency_key, Remediation};
use crate::dispatch::{Dispatcher, SubmitReport};
use crate::event_time::{
    duration_nanos, parse_event_time, rfc3339, rfc3339_option, transition_time,
};
use crate::flapping::{flapping_notice, FlapTracker, FlapVerdict};
use crate::grouping::{
    AggregationGroup, GroupMember, MemberView, Notification, NotificationReason, Suppression,
};
use crate::history::{
    query_history, read_snapshot, write_snapshot, HistoricTransition, HistoryEntry, HistoryLog,
    HistoryQuery, HistoryRecord, TransitionOrigin, HISTORY_FILE,
};
use crate::matcher::alert_label_set;
use crate::notify_config::NotifyConfig;
use crate::risk::{EntityScore, RiskState};
use crate::silence::Silence;
use crate::AlertError;

/// How long a transition's identity is remembered to drop a re-sent copy
/// (e.g. the engine replaying from its checkpoint after a restart).
const DUPLICATE_HORIZON_NANOS: i64 = 24 * 3600 * 1_000_000_000;

/// Notifications kept as unsent at most; older ones are forgotten (a caller
/// that never confirms must not grow the state forever).
const MAX_UNSENT: usize = 10_000;

/// Version of the snapshot layout.
const SNAPSHOT_FORMAT: u32 = 1;

/// An acknowledgement of one firing alert episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// The episode acknowledged.
    pub alert_id: String,
    /// Its rule + group identity.
    pub fingerprint: String,
    /// Its rule.
    pub rule_id: String,
    /// Who acknowledged it.
    pub author: String,
    /// Why, or what is being done.
    pub comment: String,
    /// When (event time; RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub acknowledged_at: i64,
    /// When it lapses, if ever (event time; RFC 3339 in JSON).
    #[serde(with = "rfc3339_option")]
    pub expires_at: Option<i64>,
}

impl Acknowledgement {
    /// True when it still holds at `at`.
    pub fn is_active(&self, at: i64) -> bool {
        self.expires_at.is_none_or(|expires_at| at < expires_at)
    }
}

/// Counters over the pipeline's life (kept across restarts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineStats {
    /// Transitions accepted (engine and risk).
    pub transitions: u64,
    /// Engine transitions older than the clock, taken as happening now.
    pub late_transitions: u64,
    /// Engine transitions dropped as already seen.
    pub duplicate_transitions: u64,
    /// Notifications produced.
    pub notifications: u64,
    /// Suppression records written (silenced, inhibited, acknowledged, flapping).
    pub suppressed: u64,
    /// Risk alerts raised.
    pub risk_alerts: u64,
    /// State snapshots that could not be written since the pipeline was
    /// opened (the history stays complete; a restart replays more of it).
    #[serde(skip)]
    pub snapshot_errors: u64,
}

/// A scheduled look, ordered by kind at equal times so that processing is
/// the same however calls are batched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Timer {
    /// An entity's oldest finding leaves the risk window.
    RiskExpiry(String),
    /// A flapping tracker settles or is forgotten.
    Flapping(String),
    /// An aggregation group is looked at.
    GroupFlush(String),
}

/// A firing alert as the engine last reported it, with its labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FiringAlert {
    alert: Alert,
    labels: BTreeMap<String, String>,
}

/// Transition identities seen recently, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RecentTransitions {
    order: VecDeque<(i64, String)>,
    #[serde(skip)]
    keys: HashSet<String>,
}

impl RecentTransitions {
    fn rebuild(&mut self) {
        self.keys = self.order.iter().map(|(_, key)| key.clone()).collect();
    }

    fn contains(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    fn insert(&mut self, at: i64, key: String) {
        if self.keys.insert(key.clone()) {
            self.order.push_back((at, key));
        }
    }

    fn forget_before(&mut self, at: i64) {
        while self.order.front().is_some_and(|(seen, _)| *seen < at) {
            if let Some((_, key)) = self.order.pop_front() {
                self.keys.remove(&key);
            }
        }
    }
}

/// Everything the pipeline remembers; snapshotted as one JSON document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PipelineState {
    /// Event time reached; `i64::MIN` before the first event.
    clock: i64,
    timers: BTreeSet<(i64, Timer)>,
    groups: BTreeMap<String, AggregationGroup>,
    flapping: BTreeMap<String, FlapTracker>,
    /// By fingerprint.
    firing: BTreeMap<String, FiringAlert>,
    silences: BTreeMap<String, Silence>,
    /// By alert id.
    acknowledgements: BTreeMap<String, Acknowledgement>,
    risk: RiskState,
    recent: RecentTransitions,
    notification_sequence: u64,
    stats: PipelineStats,
}

impl Default for PipelineState {
    fn default() -> PipelineState {
        PipelineState {
            clock: i64::MIN,
            timers: BTreeSet::new(),
            groups: BTreeMap::new(),
            flapping: BTreeMap::new(),
            firing: BTreeMap::new(),
            silences: BTreeMap::new(),
            acknowledgements: BTreeMap::new(),
            risk: RiskState::default(),
            recent: RecentTransitions::default(),
            notification_sequence: 0,
            stats: PipelineStats::default(),
        }
    }
}

/// The deterministic part: state, config, and what the current call produced.
struct PipelineCore {
    config: NotifyConfig,
    state: PipelineState,
    records: Vec<(i64, HistoryEntry)>,
    produced: Vec<Notification>,
}

impl PipelineCore {
    fn record(&mut self, at: i64, entry: HistoryEntry) {
        self.records.push((at, entry));
    }

    fn schedule(&mut self, at: i64, timer: Timer) {
        self.state.timers.insert((at, timer));
    }

    /// Runs every timer due at or before `to`, then moves the clock there.
    fn advance(&mut self, to: i64) {
        while let Some((due, _)) = self.state.timers.first() {
            if *due > to {
                break;
            }
            let Some((due, timer)) = self.state.timers.pop_first() else {
                break;
            };
            let at = due.max(self.state.clock);
            self.state.clock = at;
            match timer {
                Timer::RiskExpiry(entity) => self.expire_risk(&entity, due, at),
                Timer::Flapping(fingerprint) => self.check_flapping(&fingerprint, due, at),
                Timer::GroupFlush(group_key) => self.flush_group(&group_key, due, at),
            }
        }
        if to > self.state.clock {
            self.state.clock = to;
        }
        let clock = self.state.clock;
        // Forget what can no longer matter (none of it changes an outcome).
        self.state
            .silences
            .retain(|_, silence| silence.ends_at > clock);
        self.state
            .acknowledgements
            .retain(|_, acknowledgement| acknowledgement.is_active(clock));
        self.state
            .recent
            .forget_before(clock.saturating_sub(DUPLICATE_HORIZON_NANOS));
    }

    /// An engine transition with event time `event_time`.
    fn ingest(&mut self, alert: Alert, event_time: i64) {
        let key = idempotency_key(&alert);
        if self.state.recent.contains(&key) {
            self.state.stats.duplicate_transitions += 1;
            return;
        }
        let at = event_time.max(self.state.clock);
        if at > event_time {
            self.state.stats.late_transitions += 1;
        }
        self.advance(at);
        self.state.recent.insert(at, key);
        self.accept(alert, TransitionOrigin::Engine, at);
    }

    fn accept(&mut self, alert: Alert, origin: TransitionOrigin, at: i64) {
        self.state.stats.transitions += 1;
        self.record(
            at,
            HistoryEntry::Transition {
                origin,
                alert: Box::new(alert.clone()),
            },
        );
        match alert.state {
            AlertState::Firing => {
                let labels = alert_label_set(&alert);
                self.state.firing.insert(
                    alert.fingerprint.clone(),
                    FiringAlert {
                        alert: alert.clone(),
                        labels,
                    },
                );
            }
            AlertState::Resolved => {
                let ends_this_episode = self
                    .state
                    .firing
                    .get(&alert.fingerprint)
                    .is_some_and(|firing| firing.alert.alert_id == alert.alert_id);
                if ends_this_episode {
                    self.state.firing.remove(&alert.fingerprint);
                }
            }
            AlertState::Pending => return,
        }
        let mut risk_alerts = Vec::new();
        if origin == TransitionOrigin::Engine {
            let (touched, raised) = self.state.risk.observe(&self.config.risk, &alert, at);
            for entity in touched {
                if let Some(due) = self.state.risk.next_expiry(&self.config.risk, &entity) {
                    self.schedule(due, Timer::RiskExpiry(entity));
                }
            }
            risk_alerts = raised;
        }
        self.route(alert, at);
        for risk_alert in risk_alerts {
            if risk_alert.state == AlertState::Firing {
                self.state.stats.risk_alerts += 1;
            }
            self.accept(risk_alert, TransitionOrigin::Risk, at);
        }
    }

    /// Flapping, then grouping.
    fn route(&mut self, alert: Alert, at: i64) {
        if self.config.flapping.enabled {
            let tracker = self
                .state
                .flapping
                .entry(alert.fingerprint.clone())
                .or_default();
            let verdict = tracker.observe(&self.config.flapping, at, &alert);
            if let Some(due) = tracker.next_check {
                self.schedule(due, Timer::Flapping(alert.fingerprint.clone()));
            }
            match verdict {
                FlapVerdict::Pass => {}
                FlapVerdict::Started { changes } => {
                    self.record(
                        at,
                        HistoryEntry::Flapping {
                            fingerprint: alert.fingerprint.clone(),
                            alert_id: alert.alert_id.clone(),
                            changes,
                            settled: false,
                        },
                    );
                    let notice = flapping_notice(&self.config.flapping, &alert, changes);
                    let labels = alert_label_set(&notice);
                    match self.muted(&labels, &notice.fingerprint, at) {
                        Some(suppression) => self.record_suppressed(at, &notice, suppression),
                        None => {
                            let (group_key, group_labels) = self.config.route.group_of(&labels);
                            self.emit(
                                at,
                                group_key,
                                group_labels,
                                vec![notice],
                                NotificationReason::Flapping,
                            );
                        }
                    }
                    return;
                }
                FlapVerdict::Held => {
                    self.record_suppressed(at, &alert, Suppression::Flapping);
                    return;
                }
            }
        }
        let labels = alert_label_set(&alert);
        let (group_key, group_labels) = self.config.route.group_of(&labels);
        let started = parse_event_time(&alert.starts_at).unwrap_or(at);
        match self.state.groups.get_mut(&group_key) {
            Some(group) => group.update(&alert, started),
            None if alert.state == AlertState::Firing => {
                let first_look = at.saturating_add(duration_nanos(self.config.route.group_wait));
                let mut group = AggregationGroup::new(group_labels, first_look);
                group.update(&alert, started);
                self.state.groups.insert(group_key.clone(), group);
                self.schedule(first_look, Timer::GroupFlush(group_key));
            }
            None => {}
        }
    }

    fn check_flapping(&mut self, fingerprint: &str, due: i64, at: i64) {
        let Some(tracker) = self.state.flapping.get_mut(fingerprint) else {
            return;
        };
        if tracker.next_check != Some(due) {
            return; // rescheduled since
        }
        let settled = tracker.check(&self.config.flapping, at);
        match tracker.next_check {
            Some(next) => self.schedule(next, Timer::Flapping(fingerprint.to_string())),
            None if !tracker.is_flapping() => {
                self.state.flapping.remove(fingerprint);
            }
            None => {}
        }
        if let Some(settled) = settled {
            self.settle(settled, at);
        }
    }

    fn settle(&mut self, settled: Alert, at: i64) {
        self.record(
            at,
            HistoryEntry::Flapping {
                fingerprint: settled.fingerprint.clone(),
                alert_id: settled.alert_id.clone(),
                changes: 0,
                settled: true,
            },
        );
        let labels = alert_label_set(&settled);
        let (group_key, group_labels) = self.config.route.group_of(&labels);
        let mut suppression = self.muted(&labels, &settled.fingerprint, at);
        if suppression.is_none() && settled.state == AlertState::Firing {
            suppression = self
                .state
                .acknowledgements
                .get(&settled.alert_id)
                .filter(|acknowledgement| acknowledgement.is_active(at))
                .map(|acknowledgement| Suppression::Acknowledged {
                    author: acknowledgement.author.clone(),
                });
        }
        let notified = match suppression {
            Some(suppression) => {
                self.record_suppressed(at, &settled, suppression);
                false
            }
            None => {
                self.emit(
                    at,
                    group_key.clone(),
                    group_labels.clone(),
                    vec![settled.clone()],
                    NotificationReason::Settled,
                );
                true
            }
        };
        let started = parse_event_time(&settled.starts_at).unwrap_or(at);
        if !self.state.groups.contains_key(&group_key) && settled.state == AlertState::Firing {
            let first_look = at.saturating_add(duration_nanos(self.config.route.group_wait));
            self.state.groups.insert(
                group_key.clone(),
                AggregationGroup::new(group_labels, first_look),
            );
            self.schedule(first_look, Timer::GroupFlush(group_key.clone()));
        }
        if let Some(group) = self.state.groups.get_mut(&group_key) {
            for alert_id in group.settle(&settled, started, notified) {
                self.state.acknowledgements.remove(&alert_id);
            }
        }
    }

    fn flush_group(&mut self, group_key: &str, due: i64, at: i64) {
        let Some(mut group) = self.state.groups.remove(group_key) else {
            return;
        };
        if group.next_flush != due {
            self.state.groups.insert(group_key.to_string(), group);
            return; // rescheduled since
        }
        let outcome = group.flush(&self.config.route, at, |member| {
            self.member_view(member, at)
        });
        for (alert, suppression) in outcome.suppressed {
            self.record_suppressed(at, &alert, suppression);
        }
        for alert_id in &outcome.removed {
            self.state.acknowledgements.remove(alert_id);
        }
        if let Some((reason, alerts)) = outcome.notification {
            self.emit(
                at,
                group_key.to_string(),
                group.labels.clone(),
                alerts,
                reason,
            );
        }
        if !group.members.is_empty() {
            self.schedule(group.next_flush, Timer::GroupFlush(group_key.to_string()));
            self.state.groups.insert(group_key.to_string(), group);
        }
    }

    fn member_view(&self, member: &GroupMember, at: i64) -> MemberView {
        let alert = &member.alert;
        let flapping = self
            .state
            .flapping
            .get(&alert.fingerprint)
            .is_some_and(FlapTracker::is_flapping);
        let muted = if flapping || alert.state != AlertState::Firing {
            None
        } else {
            self.muted(&alert_label_set(alert), &alert.fingerprint, at)
        };
        MemberView {
            flapping,
            muted,
            acknowledged_by: self
                .state
                .acknowledgements
                .get(&alert.alert_id)
                .filter(|acknowledgement| acknowledgement.is_active(at))
                .map(|acknowledgement| acknowledgement.author.clone()),
        }
    }

    /// Silenced or inhibited at `at`?
    fn muted(
        &self,
        labels: &BTreeMap<String, String>,
        fingerprint: &str,
        at: i64,
    ) -> Option<Suppression> {
        let silence_ids: Vec<String> = self
            .state
            .silences
            .values()
            .filter(|silence| silence.silences(labels, at))
            .map(|silence| silence.id.clone())
            .collect();
        if !silence_ids.is_empty() {
            return Some(Suppression::Silenced { silence_ids });
        }
        for (rule_index, rule) in self.config.inhibit_rules.iter().enumerate() {
            for source in self.state.firing.values() {
                if source.alert.fingerprint != fingerprint && rule.inhibits(&source.labels, labels)
                {
                    return Some(Suppression::Inhibited {
                        source_fingerprint: source.alert.fingerprint.clone(),
                        source_alert_id: source.alert.alert_id.clone(),
                        rule: rule_index,
                    });
                }
            }
        }
        None
    }

    fn expire_risk(&mut self, entity: &str, due: i64, at: i64) {
        if self.state.risk.next_expiry(&self.config.risk, entity) != Some(due) {
            return; // rescheduled since
        }
        let resolution = self.state.risk.expire(&self.config.risk, entity, at);
        if let Some(next) = self.state.risk.next_expiry(&self.config.risk, entity) {
            self.schedule(next, Timer::RiskExpiry(entity.to_string()));
        }
        if let Some(resolved) = resolution {
            self.accept(resolved, TransitionOrigin::Risk, at);
        }
    }

    fn record_suppressed(&mut self, at: i64, alert: &Alert, suppression: Suppression) {
        self.state.stats.suppressed += 1;
        self.record(
            at,
            HistoryEntry::Suppressed {
                alert_id: alert.alert_id.clone(),
                fingerprint: alert.fingerprint.clone(),
                rule_id: alert.rule_id.clone(),
                state: alert.state,
                suppression,
            },
        );
    }

    fn emit(
        &mut self,
        at: i64,
        group_key: String,
        group_labels: BTreeMap<String, String>,
        alerts: Vec<Alert>,
        reason: NotificationReason,
    ) {
        debug_assert!(!alerts.is_empty(), "a notification without alerts");
        self.state.notification_sequence += 1;
        self.state.stats.notifications += 1;
        let notification = Notification::new(
            self.state.notification_sequence,
            at,
            group_key,
            group_labels,
            alerts,
            reason,
        );
        self.record(
            at,
            HistoryEntry::Notification {
                notification: Box::new(notification.clone()),
            },
        );
        self.produced.push(notification);
    }

    fn put_silence(&mut self, silence: Silence) {
        let at = self.state.clock;
        self.state
            .silences
            .insert(silence.id.clone(), silence.clone());
        self.record(at, HistoryEntry::Silence { silence });
    }

    fn end_silence(&mut self, id: &str) -> bool {
        let at = self.state.clock;
        let Some(silence) = self.state.silences.get_mut(id) else {
            return false;
        };
        silence.ends_at = silence.ends_at.min(at.max(silence.starts_at));
        self.record(at, HistoryEntry::SilenceExpired { id: id.to_string() });
        true
    }

    fn put_acknowledgement(&mut self, acknowledgement: Acknowledgement) {
        let at = self.state.clock;
        self.state
            .acknowledgements
            .insert(acknowledgement.alert_id.clone(), acknowledgement.clone());
        self.record(at, HistoryEntry::Acknowledged { acknowledgement });
    }

    fn remove_acknowledgement(&mut self, alert_id: &str) -> bool {
        let at = self.state.clock;
        if self.state.acknowledgements.remove(alert_id).is_none() {
            return false;
        }
        self.record(
            at,
            HistoryEntry::Unacknowledged {
                alert_id: alert_id.to_string(),
            },
        );
        true
    }

    /// Re-applies one history record after a restart (outputs are discarded
    /// by the caller: they were produced and recorded before).
    fn replay(&mut self, record: HistoryRecord, unsent: &mut Vec<Notification>) {
        let at = record.at;
        match record.entry {
            HistoryEntry::Transition {
                origin: TransitionOrigin::Engine,
                alert,
            } => self.ingest(*alert, at),
            HistoryEntry::Silence { silence } => {
                self.advance(at);
                self.put_silence(silence);
            }
            HistoryEntry::SilenceExpired { id } => {
                self.advance(at);
                self.end_silence(&id);
            }
            HistoryEntry::Acknowledged { acknowledgement } => {
                self.advance(at);
                self.put_acknowledgement(acknowledgement);
            }
            HistoryEntry::Unacknowledged { alert_id } => {
                self.advance(at);
                self.remove_acknowledgement(&alert_id);
            }
            HistoryEntry::Notification { notification } => {
                self.advance(at);
                unsent.push(*notification);
            }
            HistoryEntry::Sent { notification_id } => {
                unsent.retain(|notification| notification.notification_id != notification_id);
            }
            HistoryEntry::Transition {
                origin: TransitionOrigin::Risk,
                ..
            }
            | HistoryEntry::Suppressed { .. }
            | HistoryEntry::Flapping { .. }
            | HistoryEntry::Remediation { .. }
            | HistoryEntry::Commit => self.advance(at),
        }
    }
}

/// Where a persistent pipeline keeps its files.
struct Storage {
    state_dir: PathBuf,
    history: HistoryLog,
    records_since_snapshot: usize,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u32,
    history_seq: u64,
    history_length: u64,
    state: &'a PipelineState,
    unsent: &'a [Notification],
}

#[derive(Deserialize)]
struct SnapshotIn {
    format: u32,
    history_seq: u64,
    history_length: u64,
    state: PipelineState,
    unsent: Vec<Notification>,
}

/// Grouping, silences, inhibition, acknowledgement, flapping, risk and
/// history between the detection engine and the Dispatcher. See the
/// [module docs](self).
pub struct NotificationPipeline {
    core: PipelineCore,
    storage: Option<Storage>,
    unsent: Vec<Notification>,
    /// Set when the history could not be written: memory is then ahead of
    /// the disk, and only reopening (which replays the disk) is safe.
    broken: Option<String>,
    snapshot_errors: u64,
}

impl NotificationPipeline {
    /// A pipeline without persistence (backtests, tests): nothing survives it.
    pub fn in_memory(config: NotifyConfig) -> NotificationPipeline {
        NotificationPipeline {
            core: PipelineCore {
                config,
                state: PipelineState::default(),
                records: Vec::new(),
                produced: Vec::new(),
            },
            storage: None,
            unsent: Vec::new(),
            broken: None,
            snapshot_errors: 0,
        }
    }

    /// Opens the state dir (creating it), loads the snapshot and replays the
    /// history after it. Files: [`HISTORY_FILE`] and
    /// [`SNAPSHOT_FILE`](crate::history::SNAPSHOT_FILE). One pipeline per
    /// state dir at a time.
    pub fn open(
        config: NotifyConfig,
        state_dir: impl Into<PathBuf>,
    ) -> Result<NotificationPipeline, AlertError> {
        let state_dir = state_dir.into();
        std::fs::create_dir_all(&state_dir).map_err(|source| AlertError::Io {
            path: state_dir.clone(),
            source,
        })?;
        let snapshot: Option<SnapshotIn> = read_snapshot(&state_dir)?;
        let (mut state, mut unsent, offset, seq) = match snapshot {
            Some(snapshot) if snapshot.format == SNAPSHOT_FORMAT => (
                snapshot.state,
                snapshot.unsent,
                snapshot.history_length,
                snapshot.history_seq,
            ),
            Some(snapshot) => {
                return Err(AlertError::History {
                    path: state_dir.join(crate::history::SNAPSHOT_FILE),
                    line: 0,
                    message: format!(
                        "snapshot format {} is not supported (expected {SNAPSHOT_FORMAT})",
                        snapshot.format
                    ),
                })
            }
            None => (PipelineState::default(), Vec::new(), 0, 0),
        };
        state.recent.rebuild();
        let (history, tail) = HistoryLog::open(&state_dir.join(HISTORY_FILE), offset, seq)?;
        let mut core = PipelineCore {
            config,
            state,
            records: Vec::new(),
            produced: Vec::new(),
        };
        let replayed = tail.records.len();
        for record in tail.records {
            core.replay(record, &mut unsent);
        }
        core.records.clear();
        core.produced.clear();
        Ok(NotificationPipeline {
            core,
            storage: Some(Storage {
                state_dir,
                history,
                records_since_snapshot: replayed,
            }),
            unsent,
            broken: None,
            snapshot_errors: 0,
        })
    }

    /// Feeds engine transitions (firing, resolved; pending ones are only
    /// recorded), in event-time order. Timers due up to each transition's
    /// time run first. Returns the notifications that became due. An alert
    /// with an unreadable timestamp rejects the whole call, unapplied.
    pub fn ingest(&mut self, transitions: &[Alert]) -> Result<Vec<Notification>, AlertError> {
        self.process_at(transitions, None)
    }

    /// Moves event time to `now` (UTC nanoseconds) and returns the
    /// notifications that became due. Going backwards is a no-op.
    pub fn advance_to(&mut self, now: i64) -> Result<Vec<Notification>, AlertError> {
        self.process_at(&[], Some(now))
    }

    /// [`ingest`](Self::ingest) then [`advance_to`](Self::advance_to), with
    /// one fsync.
    pub fn process(
        &mut self,
        transitions: &[Alert],
        now: i64,
    ) -> Result<Vec<Notification>, AlertError> {
        self.process_at(transitions, Some(now))
    }

    fn process_at(
        &mut self,
        transitions: &[Alert],
        now: Option<i64>,
    ) -> Result<Vec<Notification>, AlertError> {
        self.check_usable()?;
        let times = transitions
            .iter()
            .map(|alert| {
                parse_event_time(&alert.starts_at).map_err(|_| {
                    AlertError::Invalid(format!(
                        "alert {} ({}): invalid starts_at '{}', expected RFC 3339",
                        alert.alert_id, alert.rule_id, alert.starts_at
                    ))
                })?;
                transition_time(alert)
            })
            .collect::<Result<Vec<i64>, AlertError>>()?;
        for (alert, at) in transitions.iter().zip(times) {
            self.core.ingest(alert.clone(), at);
        }
        if let Some(now) = now {
            self.core.advance(now);
        }
        self.finish_call()
    }

    /// Adds (or replaces, by id) a silence.
    pub fn add_silence(&mut self, silence: Silence) -> Result<(), AlertError> {
        self.check_usable()?;
        silence.check()?;
        if silence.id.is_empty() {
            return Err(AlertError::Invalid("silence: empty id".to_string()));
        }
        self.core.put_silence(silence);
        self.finish_call().map(drop)
    }

    /// Adds the silences of a file, skipping those already present
    /// unchanged (so loading the file at every start records nothing new).
    /// Returns how many were added or changed.
    pub fn add_silences(&mut self, silences: &[Silence]) -> Result<usize, AlertError> {
        self.check_usable()?;
        for silence in silences {
            silence.check()?;
        }
        let mut changed = 0;
        let clock = self.core.state.clock;
        for silence in silences {
            // An ended silence would only be recorded to be forgotten again.
            if silence.ends_at > clock && self.core.state.silences.get(&silence.id) != Some(silence)
            {
                self.core.put_silence(silence.clone());
                changed += 1;
            }
        }
        self.finish_call()?;
        Ok(changed)
    }

    /// Ends a silence now (event time).
    pub fn expire_silence(&mut self, id: &str) -> Result<(), AlertError> {
        self.check_usable()?;
        if !self.core.end_silence(id) {
            return Err(AlertError::Invalid(format!("no silence with id '{id}'")));
        }
        self.finish_call().map(drop)
    }

    /// The silences not yet ended, by id.
    pub fn silences(&self) -> Vec<Silence> {
        let clock = self.core.state.clock;
        self.core
            .state
            .silences
            .values()
            .filter(|silence| silence.ends_at > clock)
            .cloned()
            .collect()
    }

    /// Acknowledges the firing alert with this alert id or fingerprint (its
    /// current episode): no repeat notifications until it resolves or
    /// `expires_at` (event time) passes; its resolution is still notified.
    pub fn acknowledge(
        &mut self,
        alert_id_or_fingerprint: &str,
        author: &str,
        comment: &str,
        expires_at: Option<i64>,
    ) -> Result<Acknowledgement, AlertError> {
        self.check_usable()?;
        if author.trim().is_empty() {
            return Err(AlertError::Invalid(
                "acknowledge: the author is required".to_string(),
            ));
        }
        let state = &self.core.state;
        let firing = state.firing.get(alert_id_or_fingerprint).or_else(|| {
            state
                .firing
                .values()
                .find(|firing| firing.alert.alert_id == alert_id_or_fingerprint)
        });
        let Some(firing) = firing else {
            return Err(AlertError::Invalid(format!(
                "acknowledge: no firing alert with id or fingerprint '{alert_id_or_fingerprint}'"
            )));
        };
        let acknowledgement = Acknowledgement {
            alert_id: firing.alert.alert_id.clone(),
            fingerprint: firing.alert.fingerprint.clone(),
            rule_id: firing.alert.rule_id.clone(),
            author: author.to_string(),
            comment: comment.to_string(),
            acknowledged_at: state.clock,
            expires_at,
        };
        self.core.put_acknowledgement(acknowledgement.clone());
        self.finish_call()?;
        Ok(acknowledgement)
    }

    /// Withdraws the acknowledgement of this alert id or fingerprint.
    pub fn unacknowledge(&mut self, alert_id_or_fingerprint: &str) -> Result<(), AlertError> {
        self.check_usable()?;
        let alert_id = self
            .core
            .state
            .acknowledgements
            .values()
            .find(|acknowledgement| {
                acknowledgement.alert_id == alert_id_or_fingerprint
                    || acknowledgement.fingerprint == alert_id_or_fingerprint
            })
            .map(|acknowledgement| acknowledgement.alert_id.clone());
        match alert_id {
            Some(alert_id) => {
                self.core.remove_acknowledgement(&alert_id);
                self.finish_call().map(drop)
            }
            None => Err(AlertError::Invalid(format!(
                "no acknowledgement for '{alert_id_or_fingerprint}'"
            ))),
        }
    }

    /// The acknowledgements in force.
    pub fn acknowledgements(&self) -> Vec<Acknowledgement> {
        let clock = self.core.state.clock;
        self.core
            .state
            .acknowledgements
            .values()
            .filter(|acknowledgement| acknowledgement.is_active(clock))
            .cloned()
            .collect()
    }

    /// Records a remediation (e.g. from the dispatcher's observer) in the history.
    pub fn record_remediation(&mut self, remediation: &Remediation) -> Result<(), AlertError> {
        self.check_usable()?;
        let at = self.core.state.clock;
        self.core.record(
            at,
            HistoryEntry::Remediation {
                remediation: Box::new(remediation.clone()),
            },
        );
        self.finish_call().map(drop)
    }

    /// Confirms that these notifications were handed to the dispatcher: they
    /// leave [`unsent_notifications`](Self::unsent_notifications).
    pub fn confirm_sent(&mut self, notification_ids: &[String]) -> Result<(), AlertError> {
        self.check_usable()?;
        let at = self.core.state.clock;
        let confirmed: HashSet<&String> = notification_ids.iter().collect();
        self.unsent
            .retain(|notification| !confirmed.contains(&notification.notification_id));
        if self.storage.is_some() {
            for notification_id in notification_ids {
                self.core.record(
                    at,
                    HistoryEntry::Sent {
                        notification_id: notification_id.clone(),
                    },
                );
            }
        }
        self.finish_call().map(drop)
    }

    /// Notifications produced but not confirmed as sent, oldest first: after
    /// a restart, submit these again (only persistent pipelines track them).
    pub fn unsent_notifications(&self) -> &[Notification] {
        &self.unsent
    }

    /// Writes a snapshot of the state now (also done every
    /// `snapshot_every_records` records), so a restart replays nothing.
    pub fn checkpoint(&mut self) -> Result<(), AlertError> {
        self.check_usable()?;
        let Some(storage) = &mut self.storage else {
            return Ok(());
        };
        write_snapshot(
            &storage.state_dir,
            &SnapshotOut {
                format: SNAPSHOT_FORMAT,
                history_seq: storage.history.last_seq(),
                history_length: storage.history.length(),
                state: &self.core.state,
                unsent: &self.unsent,
            },
        )?;
        storage.records_since_snapshot = 0;
        Ok(())
    }

    /// Event time reached, `None` before the first event.
    pub fn now(&self) -> Option<i64> {
        (self.core.state.clock != i64::MIN).then_some(self.core.state.clock)
    }

    /// The config in use.
    pub fn config(&self) -> &NotifyConfig {
        &self.core.config
    }

    /// The alerts firing now, as the engine last reported them.
    pub fn firing_alerts(&self) -> Vec<Alert> {
        self.core
            .state
            .firing
            .values()
            .map(|firing| firing.alert.clone())
            .collect()
    }

    /// Fingerprints whose transitions are held because they are flapping.
    pub fn flapping_fingerprints(&self) -> Vec<String> {
        self.core
            .state
            .flapping
            .iter()
            .filter(|(_, tracker)| tracker.is_flapping())
            .map(|(fingerprint, _)| fingerprint.clone())
            .collect()
    }

    /// Group keys with their alert count.
    pub fn groups(&self) -> Vec<(String, usize)> {
        self.core
            .state
            .groups
            .iter()
            .map(|(key, group)| (key.clone(), group.members.len()))
            .collect()
    }

    /// Every tracked entity's risk.
    pub fn risk_scores(&self) -> Vec<EntityScore> {
        self.core.state.risk.scores(&self.core.config.risk)
    }

    /// Counters.
    pub fn stats(&self) -> PipelineStats {
        PipelineStats {
            snapshot_errors: self.snapshot_errors,
            ..self.core.state.stats.clone()
        }
    }

    /// The state dir, for persistent pipelines.
    pub fn state_dir(&self) -> Option<&Path> {
        self.storage
            .as_ref()
            .map(|storage| storage.state_dir.as_path())
    }

    /// Alert transitions from this pipeline's history (empty in memory).
    pub fn query(&self, query: &HistoryQuery) -> Result<Vec<HistoricTransition>, AlertError> {
        match &self.storage {
            Some(storage) => query_history(&storage.state_dir, query),
            None => Ok(Vec::new()),
        }
    }

    fn check_usable(&self) -> Result<(), AlertError> {
        match &self.broken {
            Some(reason) => Err(AlertError::Invalid(format!(
                "the alert history could not be written ({reason}); reopen the pipeline to recover from the state dir"
            ))),
            None => Ok(()),
        }
    }

    /// Writes this call's records (one fsync) and hands its notifications out.
    fn finish_call(&mut self) -> Result<Vec<Notification>, AlertError> {
        let records = std::mem::take(&mut self.core.records);
        let produced = std::mem::take(&mut self.core.produced);
        let Some(storage) = &mut self.storage else {
            return Ok(produced);
        };
        match storage.history.append_batch(records) {
            Ok(written) => storage.records_since_snapshot += written,
            Err(error) => {
                self.broken = Some(error.to_string());
                return Err(error);
            }
        }
        self.unsent.extend(produced.iter().cloned());
        if self.unsent.len() > MAX_UNSENT {
            let excess = self.unsent.len() - MAX_UNSENT;
            self.unsent.drain(..excess);
        }
        if storage.records_since_snapshot >= self.core.config.snapshot_every_records
            && self.checkpoint().is_err()
        {
            // The history is complete without it; the next call tries again.
            self.snapshot_errors += 1;
        }
        Ok(produced)
    }
}

/// The alert transitions to submit to the [`Dispatcher`] for a notification
/// (its alerts, firing then resolved).
///
/// The dispatcher keys deliveries by fingerprint, state and start, so an
/// alert it has delivered before (the firing alerts already reported when a
/// group changes) is dropped there as a duplicate; only new transitions
/// reach the receivers. Repeats go through [`Dispatcher::submit_repeat`].
pub fn dispatch_alerts(notification: &Notification) -> Vec<Alert> {
    notification.alerts.clone()
}

/// Submits notifications' alerts to the dispatcher (journaled, one fsync)
/// and then confirms them as sent in the pipeline.
pub fn submit_notifications(
    dispatcher: &Dispatcher,
    pipeline: &mut NotificationPipeline,
    notifications: &[Notification],
) -> Result<SubmitReport, AlertError> {
    if notifications.is_empty() {
        return Ok(SubmitReport::default());
    }
    let (repeats, first): (Vec<&Notification>, Vec<&Notification>) = notifications
        .iter()
        .partition(|notification| notification.reason == NotificationReason::Repeat);
    let alerts: Vec<Alert> = first.into_iter().flat_map(dispatch_alerts).collect();
    let mut report = dispatcher.submit_all(&alerts)?;
    for repeat in repeats {
        report.add(&dispatcher.submit_repeat(&dispatch_alerts(repeat), repeat.at)?);
    }
    let ids: Vec<String> = notifications
        .iter()
        .map(|notification| notification.notification_id.clone())
        .collect();
    pipeline.confirm_sent(&ids)?;
    Ok(report)
}
