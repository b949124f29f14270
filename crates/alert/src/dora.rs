//! DORA metrics for models: deployment frequency, lead time for changes,
//! change failure rate and time to restore, from deployment records, the
//! alert history and rollback remediations (`inferwatch dora report`).
//!
//! ## Deployment records
//!
//! JSONL, one [`DeploymentRecord`] per line:
//!
//! ```text
//! {"timestamp":"2026-01-01T00:00:00Z","event":"deploy","model_id":"recsys","model_version":"2.1","commit_time":"2025-12-30T22:00:00Z","ab_group":"canary"}
//! {"timestamp":"2026-01-01T00:31:07Z","event":"rollback","model_id":"recsys","model_version":"2.1"}
//! ```
//!
//! * `timestamp` (RFC 3339): when the version went live, or was rolled back;
//! * `event`: `deploy` or `rollback`;
//! * `model_id`, `model_version`: what was deployed or rolled back;
//! * `commit_time` (RFC 3339, optional, deploys only): when the change was
//!   committed; a deploy without it has no lead time;
//! * `ab_group` (optional): `baseline`, `canary`, …, for the reader.
//!
//! The simulator's traffic router writes the rollback lines, and
//! `simulate --deployments` the deploy lines. Blank lines are skipped.
//! Unknown fields are refused (a misspelt `commit_time` would silently drop
//! lead times), and so is a commit after its deploy. Any line that cannot
//! be read stops the report with `file:line:column`: a report over part of
//! the records would look complete and be wrong.
//!
//! ## Incidents
//!
//! An incident is one alert episode (fingerprint + `starts_at`) from the
//! engine, of at least the minimum severity (default `high`), read from
//! `alert-history.jsonl` transitions. It starts at `starts_at` and ends at
//! the resolved transition's `ends_at`; without one it is open. Risk alerts
//! are left out: they are derived from findings already counted. An
//! incident belongs to the model in its alert's `group.model_id` (and
//! `group.model_version`, when the group has one); one without a model
//! counts only in the overall row.
//!
//! ## Rollbacks
//!
//! Rollbacks come from the deployment records (event time, as the router
//! stamps them) and from successful rollback remediations (not dry run, no
//! error, HTTP 2xx), which name the alert episode that triggered them and
//! so its model. A remediation in the alert history is stamped with event
//! time; one read only from `remediations.jsonl` carries the dispatcher's
//! wall clock, which equals event time only when detection follows live
//! traffic in real time. A simulation replayed faster than real time
//! should rely on the deployments log.
//!
//! ## Metrics
//!
//! Over the period `[since, until]`, by default the first and last
//! timestamp among deployment records and counted incidents:
//!
//! * **deployment frequency**: deploys in the period, and per day;
//! * **lead time**: deploy `timestamp` − `commit_time`, median and mean over
//!   the deploys that give a commit time (`n` says how many);
//! * **change failure rate**: failed deploys / deploys, where a deploy
//!   failed when, within the failure window (default 24 h) from its
//!   timestamp (both ends included), its model version was rolled back or
//!   an incident on its model (and version, when the alert names one)
//!   started. The window may reach past `until`: a deploy's failure belongs
//!   to the deploy;
//! * **time to restore** (MTTR): from an incident's start to its
//!   resolution, or to the first rollback of its model (or one triggered by
//!   the incident itself) that happened during it, whichever is earlier:
//!   a rollback restores service before the alert's hold time lets it
//!   resolve. Open incidents are counted but have no time to restore.
//!
//! Incidents and rollbacks count in the period by their start time.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

use inferwatch_core::{Alert, AlertState, Severity, NANOS_PER_SECOND};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::delivery::Remediation;
use crate::event_time::{format_event_time, parse_event_time, rfc3339, rfc3339_option};
use crate::history::{read_history_file, HistoryEntry, TransitionOrigin};
use crate::AlertError;

/// Default failure window: a deploy followed by a rollback or an incident
/// within a day failed.
pub const DEFAULT_FAILURE_WINDOW_NS: i64 = 24 * 3_600 * NANOS_PER_SECOND;

const NANOS_PER_DAY: f64 = 86_400.0 * NANOS_PER_SECOND as f64;

/// What a deployment record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentEvent {
    /// A version went live.
    Deploy,
    /// A version's traffic went back to its baseline.
    Rollback,
}

/// One line of a deployments log (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentRecord {
    /// Event time, UTC nanoseconds (RFC 3339 in JSON).
    #[serde(with = "rfc3339")]
    pub timestamp: i64,
    /// Deploy or rollback.
    pub event: DeploymentEvent,
    /// The model.
    pub model_id: String,
    /// The version deployed or rolled back.
    pub model_version: String,
    /// When the change was committed (deploys only).
    #[serde(
        default,
        with = "rfc3339_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub commit_time: Option<i64>,
    /// `baseline`, `canary`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_group: Option<String>,
}

/// A rollback request and the time it counts at.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedRemediation {
    /// Event time from the history, or the remediation's wall-clock `at`.
    pub at: i64,
    /// True when `at` is the history's event time.
    pub event_time: bool,
    /// The request and its answer.
    pub remediation: Remediation,
}

/// Everything a report is computed from; fill it with the `add_*` methods
/// or directly.
#[derive(Debug, Clone, Default)]
pub struct DoraInputs {
    /// Deploys and rollbacks, in the order read.
    pub deployments: Vec<DeploymentRecord>,
    /// Engine alert transitions (firing and resolved), in the order read.
    pub transitions: Vec<Alert>,
    /// Rollback requests, from the history and `remediations.jsonl`.
    pub remediations: Vec<TimedRemediation>,
}

impl DoraInputs {
    /// Reads a deployments log (JSONL).
    pub fn add_deployments_file(&mut self, path: &Path) -> Result<(), AlertError> {
        read_json_lines(path, |record: DeploymentRecord, line| {
            if let Some(commit_time) = record.commit_time {
                if commit_time > record.timestamp {
                    return Err(AlertError::Record {
                        path: path.to_path_buf(),
                        line,
                        column: 1,
                        message: format!(
                            "commit_time {} is after the {} timestamp {}",
                            format_event_time(commit_time),
                            event_name(record.event),
                            format_event_time(record.timestamp)
                        ),
                    });
                }
            }
            self.deployments.push(record);
            Ok(())
        })
    }

    /// Reads the committed engine transitions and remediations of an
    /// `alert-history.jsonl`.
    pub fn add_history_file(&mut self, path: &Path) -> Result<(), AlertError> {
        for record in read_history_file(path)? {
            match record.entry {
                HistoryEntry::Transition {
                    origin: TransitionOrigin::Engine,
                    alert,
                } => self.transitions.push(*alert),
                HistoryEntry::Remediation { remediation } => {
                    self.remediations.push(TimedRemediation {
                        at: record.at,
                        event_time: true,
                        remediation: *remediation,
                    })
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Reads a dispatcher's `remediations.jsonl` (wall-clock times).
    pub fn add_remediations_file(&mut self, path: &Path) -> Result<(), AlertError> {
        read_json_lines(path, |remediation: Remediation, line| {
            let at = parse_event_time(&remediation.at).map_err(|error| AlertError::Record {
                path: path.to_path_buf(),
                line,
                column: 1,
                message: error.to_string(),
            })?;
            self.remediations.push(TimedRemediation {
                at,
                event_time: false,
                remediation,
            });
            Ok(())
        })
    }
}

/// Calls `visit` with each non-blank line of a JSONL file and its 1-based number.
fn read_json_lines<T: DeserializeOwned>(
    path: &Path,
    mut visit: impl FnMut(T, usize) -> Result<(), AlertError>,
) -> Result<(), AlertError> {
    let text = std::fs::read_to_string(path).map_err(|source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = serde_json::from_str(line).map_err(|error| {
            // The position goes in front; serde_json's own suffix would say "line 1".
            let suffix = format!(" at line {} column {}", error.line(), error.column());
            let message = error.to_string();
            AlertError::Record {
                path: path.to_path_buf(),
                line: index + 1,
                column: error.column().max(1),
                message: message
                    .strip_suffix(&suffix)
                    .unwrap_or(&message)
                    .to_string(),
            }
        })?;
        visit(value, index + 1)?;
    }
    Ok(())
}

fn event_name(event: DeploymentEvent) -> &'static str {
    match event {
        DeploymentEvent::Deploy => "deploy",
        DeploymentEvent::Rollback => "rollback",
    }
}

/// What a report covers.
#[derive(Debug, Clone, PartialEq)]
pub struct DoraOptions {
    /// Start of the period (UTC ns); the first record when `None`.
    pub since: Option<i64>,
    /// End of the period (UTC ns); the last record when `None`.
    pub until: Option<i64>,
    /// How long after a deploy a rollback or incident marks it failed.
    pub failure_window_ns: i64,
    /// Incidents below this severity are left out.
    pub min_severity: Severity,
}

impl Default for DoraOptions {
    fn default() -> Self {
        DoraOptions {
            since: None,
            until: None,
            failure_window_ns: DEFAULT_FAILURE_WINDOW_NS,
            min_severity: Severity::High,
        }
    }
}

/// Median, mean and count of a set of durations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DurationStats {
    /// How many durations.
    pub n: u64,
    /// Median, seconds (the mean of the middle two for an even count).
    pub median_seconds: f64,
    /// Mean, seconds.
    pub mean_seconds: f64,
}

impl DurationStats {
    /// `None` for no durations.
    fn of(mut nanos: Vec<i64>) -> Option<DurationStats> {
        if nanos.is_empty() {
            return None;
        }
        nanos.sort_unstable();
        let n = nanos.len();
        let median = if n % 2 == 1 {
            nanos[n / 2] as f64
        } else {
            (nanos[n / 2 - 1] as f64 + nanos[n / 2] as f64) / 2.0
        };
        let mean = nanos.iter().map(|&value| value as f64).sum::<f64>() / n as f64;
        let seconds = NANOS_PER_SECOND as f64;
        Some(DurationStats {
            n: n as u64,
            median_seconds: median / seconds,
            mean_seconds: mean / seconds,
        })
    }
}

/// The four metrics for one model, or for all of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DoraMetrics {
    /// Deploys in the period.
    pub deploys: u64,
    /// Deploys per day of the period (`None` for an empty period).
    pub deploys_per_day: Option<f64>,
    /// Commit to deploy, over the deploys that give a commit time.
    pub lead_time: Option<DurationStats>,
    /// Deploys followed by a rollback or an incident within the window.
    pub failed_deploys: u64,
    /// `failed_deploys / deploys` (`None` without deploys).
    pub change_failure_rate: Option<f64>,
    /// Rollback records in the period.
    pub rollbacks: u64,
    /// Successful rollback remediations in the period.
    pub remediations: u64,
    /// Incidents that started in the period.
    pub incidents: u64,
    /// Of those, not resolved.
    pub open_incidents: u64,
    /// Of the resolved ones, restored by a rollback before they resolved.
    pub restored_by_rollback: u64,
    /// Incident start to restore, over the resolved incidents (MTTR).
    pub time_to_restore: Option<DurationStats>,
}

/// One model's row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelMetrics {
    /// The model.
    pub model_id: String,
    /// Its metrics.
    #[serde(flatten)]
    pub metrics: DoraMetrics,
}

/// Why a deploy counts as failed: the earliest event in its window.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureCause {
    /// Its version (or its model, for a remediation without a version) was rolled back.
    Rollback {
        /// When (RFC 3339).
        at: String,
    },
    /// An incident on its model started.
    Incident {
        /// When (RFC 3339).
        at: String,
        /// The alert episode.
        alert_id: String,
        /// Its rule.
        rule_id: String,
    },
}

/// A failed deploy and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FailedDeploy {
    /// The model.
    pub model_id: String,
    /// The version.
    pub model_version: String,
    /// When it was deployed (RFC 3339).
    pub deployed_at: String,
    /// The first rollback or incident in its window.
    pub cause: FailureCause,
}

/// The DORA report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DoraReport {
    /// Start of the period (RFC 3339); `None` when there is no data.
    pub since: Option<String>,
    /// End of the period (RFC 3339).
    pub until: Option<String>,
    /// Length of the period in days.
    pub period_days: f64,
    /// The failure window, seconds.
    pub failure_window_seconds: f64,
    /// Incidents below this severity were left out.
    pub min_severity: Severity,
    /// Every model together (incidents without a model included).
    pub overall: DoraMetrics,
    /// One row per model, by `model_id`.
    pub models: Vec<ModelMetrics>,
    /// The failed deploys in the period, by time.
    pub failed_deploys: Vec<FailedDeploy>,
    /// Successful rollback remediations whose alert episode is not in the
    /// history, so whose model is unknown; they are left out.
    pub unattributed_remediations: u64,
}

/// One incident, as the metrics see it.
#[derive(Debug, Clone)]
struct Incident {
    alert_id: String,
    rule_id: String,
    severity: Severity,
    model_id: Option<String>,
    model_version: Option<String>,
    start: i64,
    end: Option<i64>,
}

/// A rollback from the deployments log or a remediation.
#[derive(Debug, Clone)]
struct Rollback {
    at: i64,
    model_id: Option<String>,
    model_version: Option<String>,
    /// The episode that triggered it (remediations only).
    alert_id: Option<String>,
    from_log: bool,
}

impl Rollback {
    /// Whether it rolled back `model_id` (at `model_version`, when both name one).
    fn hits(&self, model_id: &str, model_version: Option<&str>) -> bool {
        self.model_id.as_deref() == Some(model_id)
            && match (self.model_version.as_deref(), model_version) {
                (Some(ours), Some(theirs)) => ours == theirs,
                _ => true,
            }
    }
}

/// Episodes keyed by fingerprint + start, in order of first appearance.
fn incidents(transitions: &[Alert]) -> Result<Vec<Incident>, AlertError> {
    let mut episodes: Vec<Incident> = Vec::new();
    let mut index: HashMap<(&str, i64), usize> = HashMap::new();
    for alert in transitions {
        if alert.state == AlertState::Pending {
            continue;
        }
        let invalid = |error: AlertError| {
            AlertError::Invalid(format!(
                "alert {} ({}): {error}",
                alert.alert_id, alert.rule_id
            ))
        };
        let start = parse_event_time(&alert.starts_at).map_err(invalid)?;
        let position = *index
            .entry((alert.fingerprint.as_str(), start))
            .or_insert_with(|| {
                episodes.push(Incident {
                    alert_id: alert.alert_id.clone(),
                    rule_id: alert.rule_id.clone(),
                    severity: alert.severity,
                    model_id: alert.group.get("model_id").cloned(),
                    model_version: alert.group.get("model_version").cloned(),
                    start,
                    end: None,
                });
                episodes.len() - 1
            });
        if alert.state == AlertState::Resolved {
            let ends_at = alert.ends_at.as_deref().ok_or_else(|| {
                AlertError::Invalid(format!(
                    "alert {} ({}): resolved without ends_at",
                    alert.alert_id, alert.rule_id
                ))
            })?;
            episodes[position].end = Some(parse_event_time(ends_at).map_err(invalid)?);
        }
    }
    Ok(episodes)
}

/// Rollbacks from the log and from successful remediations; also how many
/// remediations name an episode the history does not hold.
fn rollbacks(inputs: &DoraInputs, episodes: &[Incident]) -> (Vec<Rollback>, u64) {
    let mut found: Vec<Rollback> = inputs
        .deployments
        .iter()
        .filter(|record| record.event == DeploymentEvent::Rollback)
        .map(|record| Rollback {
            at: record.timestamp,
            model_id: Some(record.model_id.clone()),
            model_version: Some(record.model_version.clone()),
            alert_id: None,
            from_log: true,
        })
        .collect();
    let by_alert: HashMap<&str, &Incident> = episodes
        .iter()
        .map(|incident| (incident.alert_id.as_str(), incident))
        .collect();
    // The same request can be in the history and in remediations.jsonl;
    // the history's copy has event time, so it wins.
    let mut unique: BTreeMap<(&str, &str, &str), &TimedRemediation> = BTreeMap::new();
    for timed in &inputs.remediations {
        let remediation = &timed.remediation;
        let succeeded = !remediation.dry_run
            && remediation.error.is_none()
            && remediation
                .response_status
                .is_some_and(|status| (200..300).contains(&status));
        if !succeeded {
            continue;
        }
        let key = (
            remediation.alert_id.as_str(),
            remediation.action.as_str(),
            remediation.at.as_str(),
        );
        let slot = unique.entry(key).or_insert(timed);
        if timed.event_time && !slot.event_time {
            *slot = timed;
        }
    }
    let mut unattributed = 0;
    for timed in unique.into_values() {
        let alert_id = &timed.remediation.alert_id;
        match by_alert.get(alert_id.as_str()) {
            Some(incident) => found.push(Rollback {
                at: timed.at,
                model_id: incident.model_id.clone(),
                model_version: incident.model_version.clone(),
                alert_id: Some(alert_id.clone()),
                from_log: false,
            }),
            None => unattributed += 1,
        }
    }
    (found, unattributed)
}

/// Accumulates one row.
#[derive(Default)]
struct Row {
    deploys: u64,
    lead_times: Vec<i64>,
    failed: u64,
    rollbacks: u64,
    remediations: u64,
    incidents: u64,
    open: u64,
    by_rollback: u64,
    restore_times: Vec<i64>,
}

impl Row {
    fn finish(self, period_days: f64) -> DoraMetrics {
        DoraMetrics {
            deploys: self.deploys,
            deploys_per_day: (period_days > 0.0).then(|| self.deploys as f64 / period_days),
            lead_time: DurationStats::of(self.lead_times),
            failed_deploys: self.failed,
            change_failure_rate: (self.deploys > 0)
                .then(|| self.failed as f64 / self.deploys as f64),
            rollbacks: self.rollbacks,
            remediations: self.remediations,
            incidents: self.incidents,
            open_incidents: self.open,
            restored_by_rollback: self.by_rollback,
            time_to_restore: DurationStats::of(self.restore_times),
        }
    }
}

/// Computes the report. Deterministic: the same inputs give the same report.
pub fn dora_report(inputs: &DoraInputs, options: &DoraOptions) -> Result<DoraReport, AlertError> {
    if options.failure_window_ns < 0 {
        return Err(AlertError::Invalid(
            "the failure window must not be negative".to_string(),
        ));
    }
    let episodes = incidents(&inputs.transitions)?;
    let (rollbacks, unattributed_remediations) = rollbacks(inputs, &episodes);
    let counted: Vec<&Incident> = episodes
        .iter()
        .filter(|incident| incident.severity >= options.min_severity)
        .collect();

    let first = inputs
        .deployments
        .iter()
        .map(|record| record.timestamp)
        .chain(counted.iter().map(|incident| incident.start))
        .min();
    let last = inputs
        .deployments
        .iter()
        .map(|record| record.timestamp)
        .chain(
            counted
                .iter()
                .map(|incident| incident.end.unwrap_or(incident.start)),
        )
        .max();
    let since = options.since.or(first);
    let until = match (options.until, last) {
        (Some(until), _) => Some(until),
        (None, Some(last)) => Some(since.map_or(last, |since| last.max(since))),
        (None, None) => since,
    };
    if let (Some(since), Some(until)) = (since, until) {
        if since > until {
            return Err(AlertError::Invalid(format!(
                "the period starts ({}) after it ends ({})",
                format_event_time(since),
                format_event_time(until)
            )));
        }
    }
    let in_period =
        |at: i64| since.is_some_and(|since| at >= since) && until.is_some_and(|until| at <= until);
    let period_days = match (since, until) {
        (Some(since), Some(until)) => (until - since) as f64 / NANOS_PER_DAY,
        _ => 0.0,
    };

    let mut overall = Row::default();
    let mut models: BTreeMap<String, Row> = BTreeMap::new();
    let mut failed_deploys = Vec::new();
    let window = options.failure_window_ns;

    for deploy in inputs
        .deployments
        .iter()
        .filter(|record| record.event == DeploymentEvent::Deploy && in_period(record.timestamp))
    {
        let row = models.entry(deploy.model_id.clone()).or_default();
        let lead_time = deploy.commit_time.map(|commit| deploy.timestamp - commit);
        let in_window = |at: i64| at >= deploy.timestamp && at - deploy.timestamp <= window;
        let rolled_back = rollbacks
            .iter()
            .filter(|rollback| {
                in_window(rollback.at)
                    && rollback.hits(&deploy.model_id, Some(&deploy.model_version))
            })
            .map(|rollback| (rollback.at, None))
            .min_by_key(|(at, _)| *at);
        let incident = counted
            .iter()
            .filter(|incident| {
                in_window(incident.start)
                    && incident.model_id.as_deref() == Some(deploy.model_id.as_str())
                    && incident
                        .model_version
                        .as_ref()
                        .is_none_or(|version| *version == deploy.model_version)
            })
            .map(|incident| (incident.start, Some(*incident)))
            .min_by_key(|(at, _)| *at);
        // The earlier of the two explains the failure; a tie goes to the rollback.
        let cause = match (rolled_back, incident) {
            (Some(rollback), Some(incident)) if incident.0 < rollback.0 => Some(incident),
            (Some(rollback), _) => Some(rollback),
            (None, incident) => incident,
        };
        for row in [&mut overall, row] {
            row.deploys += 1;
            row.lead_times.extend(lead_time);
            row.failed += u64::from(cause.is_some());
        }
        if let Some((at, incident)) = cause {
            let at = format_event_time(at);
            failed_deploys.push(FailedDeploy {
                model_id: deploy.model_id.clone(),
                model_version: deploy.model_version.clone(),
                deployed_at: format_event_time(deploy.timestamp),
                cause: match incident {
                    None => FailureCause::Rollback { at },
                    Some(incident) => FailureCause::Incident {
                        at,
                        alert_id: incident.alert_id.clone(),
                        rule_id: incident.rule_id.clone(),
                    },
                },
            });
        }
    }

    for rollback in rollbacks.iter().filter(|rollback| in_period(rollback.at)) {
        let mut rows = vec![&mut overall];
        if let Some(model_id) = &rollback.model_id {
            rows.push(models.entry(model_id.clone()).or_default());
        }
        for row in rows {
            if rollback.from_log {
                row.rollbacks += 1;
            } else {
                row.remediations += 1;
            }
        }
    }

    for incident in counted.iter().filter(|incident| in_period(incident.start)) {
        let restore = incident.end.map(|end| {
            let by_rollback = rollbacks
                .iter()
                .filter(|rollback| rollback.at >= incident.start && rollback.at < end)
                .filter(|rollback| {
                    rollback.alert_id.as_deref() == Some(incident.alert_id.as_str())
                        || incident.model_id.as_deref().is_some_and(|model_id| {
                            rollback.hits(model_id, incident.model_version.as_deref())
                        })
                })
                .map(|rollback| rollback.at)
                .min();
            (
                by_rollback.unwrap_or(end) - incident.start,
                by_rollback.is_some(),
            )
        });
        let mut rows = vec![&mut overall];
        if let Some(model_id) = &incident.model_id {
            rows.push(models.entry(model_id.clone()).or_default());
        }
        for row in rows {
            row.incidents += 1;
            match restore {
                None => row.open += 1,
                Some((took, by_rollback)) => {
                    row.restore_times.push(took);
                    row.by_rollback += u64::from(by_rollback);
                }
            }
        }
    }

    Ok(DoraReport {
        since: since.map(format_event_time),
        until: until.map(format_event_time),
        period_days,
        failure_window_seconds: window as f64 / NANOS_PER_SECOND as f64,
        min_severity: options.min_severity,
        overall: overall.finish(period_days),
        models: models
            .into_iter()
            .map(|(model_id, row)| ModelMetrics {
                model_id,
                metrics: row.finish(period_days),
            })
            .collect(),
        failed_deploys,
        unattributed_remediations,
    })
}

/// A duration for people: `3d 2h`, `5h 12m`, `4m 10s`, `12.5s`.
pub fn format_duration_seconds(seconds: f64) -> String {
    if seconds < 60.0 {
        return format!("{seconds:.1}s");
    }
    let total = seconds.round() as u64;
    let (days, hours, minutes, secs) = (
        total / 86_400,
        total % 86_400 / 3_600,
        total % 3_600 / 60,
        total % 60,
    );
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {minutes}m")
    } else {
        format!("{minutes}m {secs}s")
    }
}

fn stats_cell(stats: &Option<DurationStats>) -> String {
    match stats {
        Some(stats) => format!(
            "{} (mean {}, n={})",
            format_duration_seconds(stats.median_seconds),
            format_duration_seconds(stats.mean_seconds),
            stats.n
        ),
        None => "-".to_string(),
    }
}

fn row_cells(name: &str, metrics: &DoraMetrics) -> Vec<String> {
    vec![
        name.to_string(),
        metrics.deploys.to_string(),
        metrics
            .deploys_per_day
            .map_or("-".to_string(), |rate| format!("{rate:.2}")),
        stats_cell(&metrics.lead_time),
        match metrics.change_failure_rate {
            Some(rate) => format!(
                "{}/{} ({:.1} %)",
                metrics.failed_deploys,
                metrics.deploys,
                rate * 100.0
            ),
            None => "-".to_string(),
        },
        format!("{} + {}", metrics.rollbacks, metrics.remediations),
        format!("{} ({} open)", metrics.incidents, metrics.open_incidents),
        stats_cell(&metrics.time_to_restore),
    ]
}

/// The report as a text table, one row per model and one for all.
pub fn render_text(report: &DoraReport) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "DORA metrics {} .. {} ({:.2} days); failure window {}; incidents of severity {} and above",
        report.since.as_deref().unwrap_or("-"),
        report.until.as_deref().unwrap_or("-"),
        report.period_days,
        format_duration_seconds(report.failure_window_seconds),
        report.min_severity
    );
    let mut rows = vec![[
        "model",
        "deploys",
        "per day",
        "lead time median",
        "change failure",
        "rollbacks + remediations",
        "incidents",
        "time to restore median",
    ]
    .map(str::to_string)
    .to_vec()];
    rows.extend(
        report
            .models
            .iter()
            .map(|model| row_cells(&model.model_id, &model.metrics)),
    );
    rows.push(row_cells("(all)", &report.overall));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            rows.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    if !report.failed_deploys.is_empty() {
        let _ = writeln!(text, "\nfailed deploys:");
        for failed in &report.failed_deploys {
            let cause = match &failed.cause {
                FailureCause::Rollback { at } => format!("rolled back at {at}"),
                FailureCause::Incident {
                    at,
                    alert_id,
                    rule_id,
                } => format!("incident {rule_id} ({alert_id}) at {at}"),
            };
            let _ = writeln!(
                text,
                "  {} {} deployed {}: {cause}",
                failed.model_id, failed.model_version, failed.deployed_at
            );
        }
    }
    if report.unattributed_remediations > 0 {
        let _ = writeln!(
            text,
            "\n{} rollback remediation(s) left out: their alert is not in the history",
            report.unattributed_remediations
        );
    }
    text
}
