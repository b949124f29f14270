//! Live time and the live state the REST API reads.
//!
//! ## Live time: heartbeats
//!
//! Detection's clock is event time: it moves only when events arrive. When
//! every live input goes silent (a whole-fleet outage, or a node that
//! watches one model), the clock stops, so `volume-drop` never fires and
//! the last windows are never judged. [`IdleClock`] is Flink's idle-source
//! pattern on the wall clock: once no inference event has arrived for
//! `idle_after`, and then again every `idle_after`, the clock is moved to
//! the clock at the last arrival **plus the wall time elapsed since it**
//! (not to the absolute wall clock, so logs with old timestamps and the
//! simulator's live mode keep their own time). Events that arrive later
//! and are older than the advanced watermark are late, as any late event:
//! a rule's `allowed_lateness` bounds what a heartbeat can take away.
//!
//! Only live inputs get heartbeats (HTTP ingest, `run` with `follow`); a
//! file read once never does, so replays of files stay deterministic.
//! Each heartbeat is recorded in the store, in the [`HEARTBEAT_STREAM`]
//! stream (one row: the clock it set), so that replaying the store after a
//! restart ([`crate::alert_ledger::replay_store`]) moves the clock at the
//! same points of event time and yields the same alerts as the live run.
//!
//! A heartbeat reaches the engine as `Engine::advance_clock`: no row, only
//! the clock, so no rule counts it anywhere.
//!
//! ## Live state
//!
//! [`LiveState`] is what the store-writer thread (which owns detection)
//! publishes for the HTTP handlers: the rules' observable state, the
//! current alerts ([`AlertBoard`]), the notification pipeline that holds
//! acknowledgements and silences, and the WAL's progress.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float64Array, TimestampNanosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use inferwatch_core::{column, Alert, AlertState, Severity};
use inferwatch_detect::{Rule, RuleState};

use crate::notify::Notifier;
use crate::ServerError;

/// The store stream heartbeats are recorded in. Reserved: HTTP ingest
/// refuses to write to it.
pub const HEARTBEAT_STREAM: &str = "inferwatch_heartbeats";

/// The heartbeat stream's schema: the clock a heartbeat set, and how long
/// the inputs had been silent then.
pub fn heartbeat_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            column::TIMESTAMP,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ),
        Field::new("idle_seconds", DataType::Float64, false),
    ]))
}

/// The store row of one heartbeat.
pub fn heartbeat_batch(clock: i64, idle: Duration) -> Result<RecordBatch, ServerError> {
    Ok(RecordBatch::try_new(
        heartbeat_schema(),
        vec![
            Arc::new(TimestampNanosecondArray::from(vec![clock]).with_timezone("UTC")) as ArrayRef,
            Arc::new(Float64Array::from(vec![idle.as_secs_f64()])),
        ],
    )?)
}

/// Decides when a silent live input gets a heartbeat, and which clock.
#[derive(Debug)]
pub struct IdleClock {
    idle_after: Duration,
    /// Wall time of the last arrival and detection's clock right after it.
    last_arrival: Option<(Instant, i64)>,
    last_beat: Option<Instant>,
}

impl IdleClock {
    /// Heartbeats after `idle_after` of silence, then every `idle_after`.
    pub fn new(idle_after: Duration) -> IdleClock {
        IdleClock {
            idle_after: idle_after.max(Duration::from_millis(1)),
            last_arrival: None,
            last_beat: None,
        }
    }

    /// Events arrived at `now`; detection's clock is `clock` after them.
    pub fn arrived(&mut self, now: Instant, clock: Option<i64>) {
        if let Some(clock) = clock {
            self.last_arrival = Some((now, clock));
            self.last_beat = None;
        }
    }

    /// The clock a heartbeat should set at `now`, and how long the inputs
    /// have been silent, when one is due.
    pub fn due(&mut self, now: Instant) -> Option<(i64, Duration)> {
        let (arrived, clock) = self.last_arrival?;
        let idle = now.saturating_duration_since(arrived);
        if idle < self.idle_after {
            return None;
        }
        if self
            .last_beat
            .is_some_and(|beat| now.saturating_duration_since(beat) < self.idle_after)
        {
            return None;
        }
        self.last_beat = Some(now);
        let advance = i64::try_from(idle.as_nanos()).unwrap_or(i64::MAX);
        Some((clock.saturating_add(advance), idle))
    }
}

/// What the REST API shows of a loaded rule besides its live state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleInfo {
    /// Rule id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Severity.
    pub severity: Severity,
    /// MITRE ATLAS technique ids.
    pub atlas: Vec<String>,
    /// Window (ns).
    #[serde(skip)]
    pub window: i64,
    /// Evaluation interval (ns).
    #[serde(skip)]
    pub every: i64,
    /// The file it was loaded from.
    pub path: String,
    /// What its fixtures declare, for the ATLAS coverage matrix.
    #[serde(skip)]
    pub evidence: inferwatch_detect::atlas::RuleEvidence,
}

impl RuleInfo {
    /// From a loaded rule.
    pub fn of(rule: &Rule) -> RuleInfo {
        RuleInfo {
            id: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            atlas: rule.atlas.clone(),
            window: rule.window,
            every: rule.every,
            path: rule.source.path.display().to_string(),
            evidence: inferwatch_detect::atlas::RuleEvidence::of(rule, None),
        }
    }
}

/// Resolved alerts the board keeps, newest last.
const RESOLVED_KEPT: usize = 1_000;

/// The latest transition of each alert: what `GET /api/v1/alerts` lists.
/// Firing and pending alerts stay until they resolve; the newest
/// [`RESOLVED_KEPT`] resolved ones are kept (the full history is the
/// `alerts` SQL table).
#[derive(Debug, Default)]
pub struct AlertBoard {
    active: BTreeMap<String, Alert>,
    resolved: VecDeque<Alert>,
}

impl AlertBoard {
    /// Takes in transitions, oldest first.
    pub fn update(&mut self, alerts: &[Alert]) {
        for alert in alerts {
            match alert.state {
                AlertState::Pending | AlertState::Firing => {
                    // A pending episode that now fires may carry another id.
                    if alert.state == AlertState::Firing {
                        self.active.retain(|_, other| {
                            other.fingerprint != alert.fingerprint
                                || other.state != AlertState::Pending
                        });
                    }
                    self.active.insert(alert.alert_id.clone(), alert.clone());
                }
                AlertState::Resolved => {
                    self.active.remove(&alert.alert_id);
                    self.active.retain(|_, other| {
                        other.fingerprint != alert.fingerprint || other.state != AlertState::Pending
                    });
                    self.resolved
                        .retain(|other| other.alert_id != alert.alert_id);
                    self.resolved.push_back(alert.clone());
                    while self.resolved.len() > RESOLVED_KEPT {
                        self.resolved.pop_front();
                    }
                }
            }
        }
    }

    /// Drops the alerts of rules not in `rule_ids` (after a rules reload).
    pub fn retain_rules(&mut self, rule_ids: &std::collections::HashSet<String>) {
        self.active
            .retain(|_, alert| rule_ids.contains(&alert.rule_id));
        self.resolved
            .retain(|alert| rule_ids.contains(&alert.rule_id));
    }

    /// Every alert, firing and pending first, then resolved, newest first.
    pub fn alerts(&self) -> Vec<Alert> {
        let mut alerts: Vec<Alert> = self.active.values().cloned().collect();
        alerts.sort_by(|a, b| b.starts_at.cmp(&a.starts_at));
        alerts.extend(self.resolved.iter().rev().cloned());
        alerts
    }

    /// How many alerts are in each state now (resolved: those kept).
    pub fn counts(&self) -> HashMap<&'static str, usize> {
        let mut counts = HashMap::from([("firing", 0), ("pending", 0), ("resolved", 0)]);
        for alert in self.active.values() {
            let state = match alert.state {
                AlertState::Firing => "firing",
                AlertState::Pending => "pending",
                AlertState::Resolved => "resolved",
            };
            *counts.entry(state).or_default() += 1;
        }
        *counts.entry("resolved").or_default() += self.resolved.len();
        counts
    }
}

/// The rules' observable state as last published by the writer thread.
#[derive(Debug, Default, Clone)]
pub struct RulesSnapshot {
    /// Per rule, in the engine's order.
    pub states: Vec<RuleState>,
    /// Detection's clock (ns), if any.
    pub clock: Option<i64>,
    /// Events detection has seen.
    pub events: u64,
    /// Each SLO's error budget per group, at its last evaluated boundary.
    pub slos: Vec<inferwatch_detect::BudgetReport>,
    /// Findings the correlations dropped as late.
    pub correlation_late: u64,
}

/// Where the running rules came from, so `POST /api/v1/rules/reload` can
/// load them again.
#[derive(Debug, Clone)]
pub struct RulesSource {
    /// The rules directory (or file).
    pub path: std::path::PathBuf,
    /// How far ahead of the agreed clock an event may be (nanoseconds).
    pub max_future: i64,
    /// The SLOs file or directory, loaded again with the rules.
    pub slos: Option<std::path::PathBuf>,
    /// The correlations file or directory, loaded again with the rules.
    pub correlations: Option<std::path::PathBuf>,
    /// How late a side-stream row may be (nanoseconds; see
    /// [`crate::correlator::Correlator::follow_clock`]).
    pub correlation_lateness: i64,
    /// Where refused side-stream lines go (the correlations' loader needs it).
    pub dead_letter_path: std::path::PathBuf,
}

/// What detection shares with the API; absent when `serve` runs no rules.
pub struct DetectionShare {
    /// The loaded rules (replaced by a reload).
    pub rules: Mutex<Vec<RuleInfo>>,
    /// What a reload needs: the rules directory and the event-time limit
    /// the engine runs with.
    pub reload: RulesSource,
    /// Their live state.
    pub snapshot: Mutex<RulesSnapshot>,
    /// Current alerts.
    pub board: Mutex<AlertBoard>,
    /// The notification pipeline (acknowledgements, silences, history)
    /// and its actions: the very one detection feeds.
    pub notifier: Arc<Notifier>,
    /// The SLOs detection evaluates (none without `--slos`).
    pub slos: Mutex<Vec<SloInfo>>,
}

/// What the REST API shows of an SLO besides its budgets.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SloInfo {
    /// SLO id (the `rule_id` of its alerts).
    pub id: String,
    /// Title.
    pub title: String,
    /// What a good event is, e.g. `latency <= 500 ms`.
    pub sli: String,
    /// Objective, percent.
    pub objective: f64,
    /// Budget period, seconds.
    pub period_seconds: f64,
    /// Group-by columns.
    pub group_by: Vec<String>,
    /// The burn-rate alerts: windows, threshold and severity.
    pub alerts: Vec<serde_json::Value>,
    /// The file it was loaded from.
    pub path: String,
}

impl SloInfo {
    /// From a loaded SLO.
    pub fn of(slo: &inferwatch_detect::Slo) -> SloInfo {
        SloInfo {
            id: slo.id.clone(),
            title: slo.title.clone(),
            sli: slo.sli.describe(),
            objective: slo.objective,
            period_seconds: slo.period as f64 / 1e9,
            group_by: slo
                .group_by
                .iter()
                .map(|(name, _, _)| name.clone())
                .collect(),
            alerts: slo
                .alerts
                .iter()
                .map(|alert| {
                    serde_json::json!({
                        "windows": alert.windows(),
                        "burn_rate": alert.burn_rate,
                        "severity": alert.severity,
                    })
                })
                .collect(),
            path: slo.source.path.display().to_string(),
        }
    }
}

/// The state the writer thread publishes for the HTTP handlers.
#[derive(Default)]
pub struct LiveState {
    /// Detection, when rules run.
    pub detection: Option<DetectionShare>,
    /// The WAL's last written record.
    pub last_sequence: AtomicU64,
    /// The WAL's last durable record.
    pub durable_sequence: AtomicU64,
    /// Rows appended but not yet in Parquet segments.
    pub buffered_rows: AtomicU64,
    /// Heartbeats recorded since start.
    pub heartbeats: AtomicU64,
}

impl LiveState {
    /// WAL records written but not yet durable.
    pub fn wal_lag(&self) -> u64 {
        self.last_sequence
            .load(Ordering::Relaxed)
            .saturating_sub(self.durable_sequence.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_due_after_the_idle_period_and_adds_the_elapsed_wall_time() {
        let mut idle = IdleClock::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(
            idle.due(start + Duration::from_secs(60)),
            None,
            "no clock yet"
        );
        idle.arrived(start, Some(1_000));
        assert_eq!(idle.due(start + Duration::from_secs(9)), None);
        let (clock, silent) = idle.due(start + Duration::from_secs(10)).unwrap();
        assert_eq!(clock, 1_000 + 10_000_000_000);
        assert_eq!(silent, Duration::from_secs(10));
        assert_eq!(
            idle.due(start + Duration::from_secs(15)),
            None,
            "one per period"
        );
        let (clock, _) = idle.due(start + Duration::from_secs(21)).unwrap();
        assert_eq!(clock, 1_000 + 21_000_000_000);
        idle.arrived(start + Duration::from_secs(22), Some(5_000));
        assert_eq!(idle.due(start + Duration::from_secs(23)), None);
    }

    #[test]
    fn the_board_keeps_the_latest_transition_of_each_alert() {
        let alert = |id: &str, state: AlertState| Alert {
            alert_id: id.into(),
            fingerprint: "f".into(),
            rule_id: "r".into(),
            title: "t".into(),
            severity: Severity::High,
            state,
            starts_at: "2026-01-01T00:00:00Z".into(),
            ends_at: None,
            group: BTreeMap::new(),
            value: None,
            threshold: None,
            condition: String::new(),
            atlas: Vec::new(),
            impact: Default::default(),
            explanation: Vec::new(),
            summary: String::new(),
            labels: BTreeMap::new(),
            evidence: None,
        };
        let mut board = AlertBoard::default();
        board.update(&[alert("p", AlertState::Pending)]);
        board.update(&[alert("a", AlertState::Firing)]);
        assert_eq!(
            board.alerts().len(),
            1,
            "the firing episode replaces the pending one"
        );
        board.update(&[alert("a", AlertState::Resolved)]);
        let alerts = board.alerts();
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].state, AlertState::Resolved);
        assert_eq!(board.counts()["firing"], 0);
    }
}
