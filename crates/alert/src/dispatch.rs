//! The [`Dispatcher`]: takes alert transitions from detection and delivers
//! them to actions on its own threads, durably, without ever waiting for a
//! receiver.
//!
//! * [`Dispatcher::submit`] appends one `enqueued` record per (action,
//!   transition) to the outbox journal, fsyncs it, and returns. It waits for
//!   the disk, never for the network.
//! * Up to `queue_capacity` deliveries are held in memory; past that they
//!   stay in the journal only and are read back, oldest first, as memory
//!   frees up. A slow receiver therefore costs disk, not memory.
//! * Worker threads deliver. A failure is retried after a random delay in
//!   `[0, min(max_backoff, initial_backoff · 2^(attempt-1))]` (exponential
//!   backoff with full jitter), or after the receiver's `Retry-After` when
//!   it is longer (capped at one hour). A permanent failure (HTTP 4xx, a bad
//!   template) or the `max_attempts`-th failure sends the delivery to
//!   `dead-letter.jsonl` with the reason and the attempt count.
//! * Transitions of one alert (same action and fingerprint) are delivered
//!   in submission order: a resolution never overtakes its firing.
//! * Rollback records ([`Remediation`]) go to `remediations.jsonl` and to
//!   the observer, if one is set.
//!
//! Delivery is at least once: a crash after the receiver accepted but
//! before the `delivered` record reached the disk re-sends that one
//! delivery on restart, with the same idempotency key. One dispatcher per
//! state dir at a time.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use inferwatch_core::{Alert, AlertState};
use rand::Rng;
use serde::Serialize;

use crate::config::{ConfiguredAction, DeliverySettings};
use crate::delivery::{now_rfc3339, Delivery, DeliveryFailure, Outcome, Remediation, Retry};
use crate::outbox::{Finish, Outbox, DEFAULT_COMPACT_THRESHOLD_BYTES, DEFAULT_REMEMBER_FINISHED};
use crate::AlertError;

/// The longest `Retry-After` honoured; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// File names inside the state dir.
pub const OUTBOX_FILE: &str = "outbox.jsonl";
/// Deliveries given up on, one JSON object per line.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";
/// Rollback records, one JSON object per line.
pub const REMEDIATIONS_FILE: &str = "remediations.jsonl";

/// Called on a dispatcher thread after every attempt.
pub type Observer = Arc<dyn Fn(&DeliveryReport) + Send + Sync>;

/// Where the dispatcher keeps its files, and how it delivers.
#[derive(Clone)]
pub struct DispatcherConfig {
    /// Directory for the outbox journal, dead letters and remediations.
    pub state_dir: PathBuf,
    /// Retries, queue size and workers.
    pub settings: DeliverySettings,
    /// Journal size past which it is compacted (when half of it is finished records).
    pub compact_threshold_bytes: u64,
    /// Finished delivery keys remembered through compaction, for duplicate detection.
    pub remember_finished: usize,
    /// Told about every attempt, e.g. to store remediations in the alert history.
    pub observer: Option<Observer>,
}

impl DispatcherConfig {
    /// Default settings with state in `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> DispatcherConfig {
        DispatcherConfig {
            state_dir: state_dir.into(),
            settings: DeliverySettings::default(),
            compact_threshold_bytes: DEFAULT_COMPACT_THRESHOLD_BYTES,
            remember_finished: DEFAULT_REMEMBER_FINISHED,
            observer: None,
        }
    }

    /// Replaces the delivery settings (e.g. from an [`ActionsFile`](crate::ActionsFile)).
    pub fn with_settings(mut self, settings: DeliverySettings) -> DispatcherConfig {
        self.settings = settings;
        self
    }

    /// Sets the observer.
    pub fn with_observer(mut self, observer: Observer) -> DispatcherConfig {
        self.observer = Some(observer);
        self
    }
}

/// What [`Dispatcher::submit`] did with the alerts it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubmitReport {
    /// Deliveries journaled (one per alert and accepting action).
    pub enqueued: usize,
    /// Of those, how many went to the journal only (memory queue full).
    pub spilled: usize,
    /// Deliveries skipped because their key was already in the journal.
    pub duplicates: usize,
    /// Alerts no action accepted (filters, pending state).
    pub unmatched: usize,
}

impl SubmitReport {
    /// Adds another call's counts.
    pub fn add(&mut self, other: &SubmitReport) {
        self.enqueued += other.enqueued;
        self.spilled += other.spilled;
        self.duplicates += other.duplicates;
        self.unmatched += other.unmatched;
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// The receiver accepted it.
    Delivered,
    /// It failed and will be retried.
    WillRetry,
    /// It failed for good and went to the dead-letter file.
    Dead,
}

/// One attempt's result, for the observer.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    /// The action's name.
    pub action: String,
    /// The delivery's idempotency key.
    pub idempotency_key: String,
    /// The alert episode.
    pub alert_id: String,
    /// Which attempt this was (1-based).
    pub attempt: u32,
    /// How it ended.
    pub status: DeliveryStatus,
    /// The outcome's summary or the failure's message.
    pub summary: String,
    /// A rollback's record, when the action made one.
    pub remediation: Option<Remediation>,
}

/// Counters since the dispatcher started, and the current backlog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatcherStats {
    /// Deliveries enqueued and not finished.
    pub pending: usize,
    /// Of those, how many are held in memory.
    pub in_memory: usize,
    /// Deliveries accepted by their receiver.
    pub delivered: u64,
    /// Deliveries sent to the dead-letter file.
    pub dead: u64,
    /// Failed attempts that were scheduled for retry.
    pub retries: u64,
    /// Errors writing the journal, dead letters or remediations.
    pub storage_errors: u64,
    /// The last such error.
    pub last_storage_error: Option<String>,
}

#[derive(Serialize)]
struct DeadLetter<'a> {
    at: String,
    action: &'a str,
    idempotency_key: &'a str,
    attempts: u32,
    reason: &'a str,
    alert: &'a Alert,
}

struct Queued {
    /// None when the journal names an action that is no longer configured.
    action_index: Option<usize>,
    action_name: String,
    delivery: Delivery,
    not_before: Instant,
    in_flight: bool,
}

struct State {
    outbox: Outbox,
    /// The oldest pending deliveries, by sequence number (a prefix of the
    /// journal's pending set).
    queue: BTreeMap<u64, Queued>,
    /// Pending deliveries only in the journal.
    spilled: usize,
    /// Attempts finished whose observer call has not returned yet.
    reporting: usize,
    shutdown: bool,
    stats: DispatcherStats,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
    idle: Condvar,
    actions: Vec<ConfiguredAction>,
    settings: DeliverySettings,
    dead_letter_path: PathBuf,
    remediations_path: PathBuf,
    observer: Option<Observer>,
}

/// Delivers alert transitions to actions through a durable outbox.
pub struct Dispatcher {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// Opens the state dir, replays the journal (pending deliveries are
    /// delivered again, finished ones never), and starts the workers.
    pub fn start(
        config: DispatcherConfig,
        actions: Vec<ConfiguredAction>,
    ) -> Result<Dispatcher, AlertError> {
        let names: HashSet<&str> = actions.iter().map(|action| action.name.as_str()).collect();
        if names.len() != actions.len() {
            return Err(AlertError::Invalid(
                "action names must be unique".to_string(),
            ));
        }
        std::fs::create_dir_all(&config.state_dir).map_err(|source| AlertError::Io {
            path: config.state_dir.clone(),
            source,
        })?;
        let outbox = Outbox::open(
            &config.state_dir.join(OUTBOX_FILE),
            config.compact_threshold_bytes,
            config.remember_finished,
        )?;
        let spilled = outbox.pending_count();
        let mut settings = config.settings.clone();
        // Zero of these would mean never delivering; the config loader
        // refuses them, and settings built in code get 1.
        settings.queue_capacity = settings.queue_capacity.max(1);
        settings.max_attempts = settings.max_attempts.max(1);
        settings.workers = settings.workers.max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                outbox,
                queue: BTreeMap::new(),
                spilled,
                reporting: 0,
                shutdown: false,
                stats: DispatcherStats::default(),
            }),
            work: Condvar::new(),
            idle: Condvar::new(),
            actions,
            settings: settings.clone(),
            dead_letter_path: config.state_dir.join(DEAD_LETTER_FILE),
            remediations_path: config.state_dir.join(REMEDIATIONS_FILE),
            observer: config.observer,
        });
        shared.refill(&mut shared.lock());
        let mut workers = Vec::with_capacity(settings.workers);
        for index in 0..settings.workers {
            let worker_shared = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("alert-dispatch-{index}"))
                .spawn(move || worker_shared.run_worker())
                .map_err(|error| {
                    AlertError::Internal(format!("cannot start dispatcher thread: {error}"))
                })?;
            workers.push(handle);
        }
        Ok(Dispatcher { shared, workers })
    }

    /// Journals one alert transition for every action that accepts it.
    /// See [`Dispatcher::submit_all`].
    pub fn submit(&self, alert: &Alert) -> Result<SubmitReport, AlertError> {
        self.submit_all(std::slice::from_ref(alert))
    }

    /// Journals alert transitions for every action that accepts them, with
    /// one fsync, and returns. Pending transitions are not delivered; a
    /// transition already in the journal (same action and idempotency key)
    /// is skipped. An error means nothing of this call was journaled.
    pub fn submit_all(&self, alerts: &[Alert]) -> Result<SubmitReport, AlertError> {
        self.submit_keyed(alerts, None)
    }

    /// Journals a `repeat_interval` reminder of still-firing alerts, sent at
    /// event time `at`: keyed apart from the first delivery (so it is not
    /// taken for a duplicate) and only for actions that take repeats.
    pub fn submit_repeat(&self, alerts: &[Alert], at: i64) -> Result<SubmitReport, AlertError> {
        self.submit_keyed(alerts, Some(at))
    }

    fn submit_keyed(
        &self,
        alerts: &[Alert],
        repeat_at: Option<i64>,
    ) -> Result<SubmitReport, AlertError> {
        let mut report = SubmitReport::default();
        let mut candidates = Vec::new();
        for alert in alerts {
            let mut accepted = false;
            if alert.state != AlertState::Pending {
                for (index, configured) in self.shared.actions.iter().enumerate() {
                    if !configured.accepts(alert)
                        || (repeat_at.is_some() && !configured.action.repeats())
                    {
                        continue;
                    }
                    let mut delivery = Delivery::new(alert.clone());
                    if let Some(at) = repeat_at {
                        delivery.idempotency_key = format!(
                            "{}:repeat:{}",
                            delivery.idempotency_key,
                            inferwatch_core::format_timestamp(at)
                        );
                    }
                    candidates.push((index, delivery));
                    accepted = true;
                }
            }
            if !accepted {
                report.unmatched += 1;
            }
        }
        if candidates.is_empty() {
            return Ok(report);
        }
        let mut state = self.shared.lock();
        let mut seen_in_batch = HashSet::new();
        let mut fresh = Vec::with_capacity(candidates.len());
        for (index, delivery) in candidates {
            let name = self.shared.actions[index].name.as_str();
            let already = state.outbox.contains(name, &delivery.idempotency_key)
                || !seen_in_batch.insert((index, delivery.idempotency_key.clone()));
            if already {
                report.duplicates += 1;
            } else {
                fresh.push((index, delivery));
            }
        }
        if fresh.is_empty() {
            return Ok(report);
        }
        let sequence_numbers = state.outbox.append_enqueued(
            fresh
                .iter()
                .map(|(index, delivery)| (self.shared.actions[*index].name.as_str(), delivery)),
        )?;
        let now = Instant::now();
        for ((index, delivery), seq) in fresh.into_iter().zip(sequence_numbers) {
            report.enqueued += 1;
            // Memory holds the oldest deliveries only: once anything is
            // spilled, newer ones are spilled too, and read back in order.
            if state.spilled == 0 && state.queue.len() < self.shared.settings.queue_capacity {
                state.queue.insert(
                    seq,
                    Queued {
                        action_index: Some(index),
                        action_name: self.shared.actions[index].name.clone(),
                        delivery,
                        not_before: now,
                        in_flight: false,
                    },
                );
            } else {
                state.spilled += 1;
                report.spilled += 1;
            }
        }
        drop(state);
        self.shared.work.notify_all();
        Ok(report)
    }

    /// Counters and the current backlog.
    pub fn stats(&self) -> DispatcherStats {
        let state = self.shared.lock();
        let mut stats = state.stats.clone();
        stats.pending = state.outbox.pending_count();
        stats.in_memory = state.queue.len();
        stats
    }

    /// Waits until nothing is pending (and the observer has been told about
    /// every attempt) or `timeout` passes; true when idle.
    /// For one-shot runs (replaying history, tests) that want their
    /// notifications out before exiting.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if state.outbox.pending_count() == 0 && state.reporting == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .shared
                .idle
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops the workers, waiting for attempts in flight (each bounded by
    /// its action's timeout). What is pending stays in the journal.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        for worker in self.workers.drain(..) {
            // A worker that panicked has nothing left to clean up.
            let _ = worker.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

enum Pick {
    Job(u64),
    WaitUntil(Instant),
    WaitForWork,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run_worker(&self) {
        let mut state = self.lock();
        loop {
            if state.shutdown {
                return;
            }
            let now = Instant::now();
            match next_job(&state.queue, now) {
                Pick::Job(seq) => {
                    let Some(queued) = state.queue.get_mut(&seq) else {
                        continue;
                    };
                    queued.in_flight = true;
                    let delivery = queued.delivery.clone();
                    let action = queued
                        .action_index
                        .map(|index| Arc::clone(&self.actions[index].action));
                    let action_name = queued.action_name.clone();
                    drop(state);
                    let result = match action {
                        Some(action) => {
                            catch_unwind(AssertUnwindSafe(|| action.execute(&delivery)))
                                .unwrap_or_else(|_| {
                                    Err(DeliveryFailure::permanent(format!(
                                        "action '{action_name}' panicked (this is a bug)"
                                    )))
                                })
                        }
                        None => Err(DeliveryFailure::permanent(format!(
                            "action '{action_name}' is no longer configured"
                        ))),
                    };
                    state = self.lock();
                    let report = self.complete(&mut state, seq, &action_name, &delivery, result);
                    self.refill(&mut state);
                    // Not idle until the observer has heard about this attempt.
                    state.reporting += 1;
                    drop(state);
                    self.work.notify_all();
                    if let Some(observer) = &self.observer {
                        observer(&report);
                    }
                    state = self.lock();
                    state.reporting -= 1;
                    self.idle.notify_all();
                }
                Pick::WaitUntil(instant) => {
                    let timeout = instant.saturating_duration_since(now);
                    state = self
                        .work
                        .wait_timeout(state, timeout)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                Pick::WaitForWork => {
                    state = self
                        .work
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
    }

    /// Records an attempt's result in the journal and the queue.
    fn complete(
        &self,
        state: &mut State,
        seq: u64,
        action_name: &str,
        delivery: &Delivery,
        result: Result<Outcome, DeliveryFailure>,
    ) -> DeliveryReport {
        let mut report = DeliveryReport {
            action: action_name.to_string(),
            idempotency_key: delivery.idempotency_key.clone(),
            alert_id: delivery.alert.alert_id.clone(),
            attempt: delivery.attempt,
            status: DeliveryStatus::Delivered,
            summary: String::new(),
            remediation: None,
        };
        match result {
            Ok(outcome) => {
                report.summary = outcome.summary.clone();
                report.remediation = outcome.remediation;
                let finished = state.outbox.finish(
                    seq,
                    Finish::Delivered {
                        attempts: delivery.attempt,
                        summary: &outcome.summary,
                    },
                );
                self.note_storage(state, finished);
                state.queue.remove(&seq);
                state.stats.delivered += 1;
            }
            Err(failure) => {
                report.summary = failure.message.clone();
                report.remediation = failure.remediation.as_deref().cloned();
                let give_up =
                    failure.retry == Retry::Never || delivery.attempt >= self.settings.max_attempts;
                if give_up {
                    report.status = DeliveryStatus::Dead;
                    // The dead letter is written first: if we crash between the
                    // two writes, the delivery is retried, never lost.
                    let written = self.write_dead_letter(action_name, delivery, &failure.message);
                    self.note_storage(state, written);
                    let finished = state.outbox.finish(
                        seq,
                        Finish::Dead {
                            attempts: delivery.attempt,
                            reason: &failure.message,
                        },
                    );
                    self.note_storage(state, finished);
                    state.queue.remove(&seq);
                    state.stats.dead += 1;
                } else {
                    report.status = DeliveryStatus::WillRetry;
                    let delay = retry_delay(&self.settings, delivery.attempt, failure.retry);
                    let recorded =
                        state
                            .outbox
                            .record_attempt(seq, delivery.attempt, &failure.message);
                    self.note_storage(state, recorded);
                    if let Some(queued) = state.queue.get_mut(&seq) {
                        queued.in_flight = false;
                        queued.delivery.attempt += 1;
                        queued.not_before = Instant::now() + delay;
                    }
                    state.stats.retries += 1;
                }
            }
        }
        if let Some(remediation) = &report.remediation {
            let written = append_json_line(&self.remediations_path, remediation);
            self.note_storage(state, written);
        }
        report
    }

    fn note_storage(&self, state: &mut State, result: Result<(), AlertError>) {
        if let Err(error) = result {
            state.stats.storage_errors += 1;
            state.stats.last_storage_error = Some(error.to_string());
        }
    }

    fn write_dead_letter(
        &self,
        action: &str,
        delivery: &Delivery,
        reason: &str,
    ) -> Result<(), AlertError> {
        append_json_line(
            &self.dead_letter_path,
            &DeadLetter {
                at: now_rfc3339(),
                action,
                idempotency_key: &delivery.idempotency_key,
                attempts: delivery.attempt,
                reason,
                alert: &delivery.alert,
            },
        )
    }

    /// Moves spilled deliveries, oldest first, into memory while there is room.
    fn refill(&self, state: &mut State) {
        while state.spilled > 0 && state.queue.len() < self.settings.queue_capacity {
            let last_in_memory = state.queue.keys().next_back().copied();
            let Some((seq, entry)) = state.outbox.pending_after(last_in_memory) else {
                // The count and the journal disagree; trust the journal.
                debug_assert!(
                    false,
                    "spilled count {} with nothing spilled",
                    state.spilled
                );
                state.spilled = 0;
                return;
            };
            let (action_name, failed_attempts) = (entry.action.clone(), entry.failed_attempts);
            let alert = match state.outbox.read(seq) {
                Ok(alert) => alert,
                Err(error) => {
                    self.note_storage(state, Err(error));
                    return;
                }
            };
            let mut delivery = Delivery::new(alert);
            delivery.attempt = failed_attempts + 1;
            let action_index = self
                .actions
                .iter()
                .position(|action| action.name == action_name);
            state.queue.insert(
                seq,
                Queued {
                    action_index,
                    action_name,
                    delivery,
                    not_before: Instant::now(),
                    in_flight: false,
                },
            );
            state.spilled -= 1;
        }
    }
}

/// The oldest ready delivery whose alert has no earlier transition still
/// pending for the same action; else when to look again.
fn next_job(queue: &BTreeMap<u64, Queued>, now: Instant) -> Pick {
    let mut blocked: HashSet<(Option<usize>, &str, &str)> = HashSet::new();
    let mut earliest: Option<Instant> = None;
    for (seq, queued) in queue {
        let ordering_key = (
            queued.action_index,
            queued.action_name.as_str(),
            queued.delivery.alert.fingerprint.as_str(),
        );
        if blocked.contains(&ordering_key) {
            continue;
        }
        if queued.in_flight {
            blocked.insert(ordering_key);
            continue;
        }
        if queued.not_before > now {
            blocked.insert(ordering_key);
            earliest = Some(earliest.map_or(queued.not_before, |e| e.min(queued.not_before)));
            continue;
        }
        return Pick::Job(*seq);
    }
    match earliest {
        Some(instant) => Pick::WaitUntil(instant),
        None => Pick::WaitForWork,
    }
}

/// Full-jitter exponential backoff, or the receiver's `Retry-After` when
/// that is longer. `attempt` is the attempt that just failed (1-based).
pub fn retry_delay(settings: &DeliverySettings, attempt: u32, retry: Retry) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = settings
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(settings.max_backoff);
    let jittered = Duration::from_nanos(rand::rng().random_range(0..=ceiling.as_nanos() as u64));
    match retry {
        Retry::After(requested) => jittered.max(requested.min(MAX_RETRY_AFTER)),
        Retry::Backoff | Retry::Never => jittered,
    }
}

fn append_json_line(path: &Path, value: &impl Serialize) -> Result<(), AlertError> {
    let mut line = serde_json::to_vec(value)
        .map_err(|error| AlertError::Internal(format!("cannot encode record: {error}")))?;
    line.push(b'\n');
    let io = |source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(&line).map_err(io)?;
    file.sync_data().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_its_cap_and_honours_retry_after() {
        let settings = DeliverySettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..DeliverySettings::default()
        };
        for _ in 0..200 {
            assert!(retry_delay(&settings, 1, Retry::Backoff) <= Duration::from_millis(100));
            assert!(retry_delay(&settings, 3, Retry::Backoff) <= Duration::from_millis(400));
            assert!(retry_delay(&settings, 30, Retry::Backoff) <= Duration::from_secs(1));
            assert!(
                retry_delay(&settings, 1, Retry::After(Duration::from_secs(5)))
                    >= Duration::from_secs(5)
            );
        }
        assert_eq!(
            retry_delay(&settings, 1, Retry::After(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
        // Full jitter: delays spread over the whole range, not bunched at the top.
        let low = (0..200)
            .filter(|_| retry_delay(&settings, 4, Retry::Backoff) < Duration::from_millis(400))
            .count();
        assert!(
            (40..=160).contains(&low),
            "{low} of 200 below half the ceiling"
        );
    }

    fn queued(
        action: usize,
        fingerprint: &str,
        ready_in: Duration,
        in_flight: bool,
        now: Instant,
    ) -> Queued {
        let mut alert = crate::test_alert();
        alert.fingerprint = fingerprint.to_string();
        Queued {
            action_index: Some(action),
            action_name: format!("action-{action}"),
            delivery: Delivery::new(alert),
            not_before: now + ready_in,
            in_flight,
        }
    }

    #[test]
    fn a_later_transition_waits_for_an_earlier_one_of_the_same_alert() {
        let now = Instant::now();
        let later = Duration::from_secs(60);
        let mut queue = BTreeMap::new();
        queue.insert(1, queued(0, "fp-a", later, false, now));
        queue.insert(2, queued(0, "fp-a", Duration::ZERO, false, now));
        queue.insert(3, queued(1, "fp-a", Duration::ZERO, false, now));
        // Seq 2 is ready but must not overtake seq 1; another action may go.
        assert!(matches!(next_job(&queue, now), Pick::Job(3)));
        queue.remove(&3);
        assert!(matches!(next_job(&queue, now), Pick::WaitUntil(at) if at == now + later));
        queue.get_mut(&1).unwrap().in_flight = true;
        assert!(matches!(next_job(&queue, now), Pick::WaitForWork));
    }
}
