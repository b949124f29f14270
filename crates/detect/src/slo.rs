//! Service level objectives: SLIs counted from raw events, error budgets,
//! and multiwindow, multi-burn-rate alerts (Google SRE Workbook, "Alerting
//! on SLOs").
//!
//! An SLO file holds one SLO, or a list under `slos:`:
//!
//! ```yaml
//! slos:
//!   - id: recsys-availability
//!     title: recsys answers
//!     filter: model_id == "recsys"
//!     group_by: [model_id, model_version]
//!     sli: availability            # good = status "ok"
//!     objective: 99.9              # percent of good events
//!     period: 30d                  # the budget's period (default 30d)
//!   - id: recsys-latency
//!     title: recsys answers within 500 ms
//!     filter: model_id == "recsys"
//!     sli: { latency: { threshold_ms: 500 } }   # good = latency_ms <= 500
//!     objective: 99
//!     alerts:                      # default: the workbook's table below
//!       - { severity: page, long: 1h, short: 5m, burn_rate: 14.4 }
//! ```
//!
//! The **burn rate** of a window is its error ratio divided by the error
//! budget `1 − objective`: at 1 the budget lasts exactly the period. An alert
//! (a `long`/`short` pair) fires when the burn rate over both windows is at
//! least `burn_rate`, and resolves as soon as either falls below it — the
//! short window is what makes it reset quickly once the burn stops. Without
//! `alerts`, an SLO gets the workbook's table: page at 14.4× over 1h and 5m,
//! page at 6× over 6h and 30m, ticket at 1× over 3d and 6h.
//!
//! The SLI is exact: each event is good or bad by its own `status` or
//! `latency_ms` (a latency equal to the threshold is good), with no histogram
//! buckets in between. For a latency SLI, events without a latency are not
//! counted at all.
//!
//! **State.** Per SLO and group key, the [`SloEvaluator`] keeps a ring of
//! fixed-width buckets of (good, total) counts covering the longest window,
//! plus one running (good, total) sum per distinct window length and a
//! coarse ring of 720 buckets over the budget period for [`BudgetReport`]s.
//! The ring has `longest window / resolution + lateness / resolution + 2`
//! slots of 8 bytes: with the default table at the default 5 s resolution,
//! 51,848 slots ≈ 415 kB per group, whatever the traffic. Groups are capped
//! by `max_groups` (default 1,000); rows of further new keys are counted as
//! refused. Memory is therefore bounded by groups × buckets.
//!
//! **Time.** Event time, as in the rule engine: the watermark is the newest
//! event time minus `allowed_lateness`; each bucket boundary is evaluated
//! once the watermark passes it, and rows older than the last evaluated
//! boundary are late (counted, dropped). Rows are handled one at a time in
//! input order, so the alerts do not depend on how the input was split into
//! batches.
//!
//! **Before a window has history.** The workbook's figures assume full
//! windows. Here a window's error ratio is always over the events it holds;
//! while a group has less history than a window, that window is simply
//! shorter, so alerts come earlier than the workbook's figures, never later.
//! To keep the first few events of a group (or of a replay) from deciding an
//! alert alone, a pair is judged only once the group's history spans its
//! short window.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use inferwatch_core::{
    column, fingerprint, format_timestamp, parse_duration, AgreedClock, Alert, AlertState, Impact,
    Severity, DEFAULT_MAX_FUTURE_NANOS, NANOS_PER_SECOND,
};
use marked_yaml::Spanned;
use serde::{Deserialize, Serialize};

use crate::detector::format_span;
use crate::expr::{parse, CompareOp};
use crate::filter::{compile_predicate, evaluate_predicate, NumericExpr, RowPredicate};
use crate::rule::{
    collect_rule_paths, expression_error, position, yaml_error, LocatedExpr, RuleSource,
    DEFAULT_ALLOWED_LATENESS,
};
use crate::table::GroupTable;
use crate::DetectError;

/// The error budget's period when an SLO does not set `period`.
pub const DEFAULT_PERIOD: &str = "30d";

/// Group keys one SLO tracks unless it sets `max_groups`.
pub const DEFAULT_SLO_MAX_GROUPS: usize = 1_000;

/// Most ring buckets one group may need; past it the config must choose a
/// coarser `resolution`.
const MAX_BUCKETS_PER_GROUP: i64 = 2_000_000;

/// Buckets of the coarse ring that counts the budget period for reports.
const PERIOD_BUCKETS: i64 = 720;

/// Candidate resolutions (seconds), finest first.
const RESOLUTION_CANDIDATES: [i64; 11] = [1, 5, 10, 15, 30, 60, 300, 600, 900, 1_800, 3_600];

/// Burn rates are ratios of counts; this keeps a ratio that equals the
/// threshold in exact arithmetic from missing it by one rounding step.
const BURN_RATE_TOLERANCE: f64 = 1e-9;

/// What counts as a good event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sli {
    /// `status` is `ok`.
    Availability,
    /// `latency_ms` is at most the threshold (events without one are not counted).
    Latency {
        /// The largest good latency, in milliseconds.
        threshold_ms: f64,
    },
}

impl Sli {
    /// A short text for reports and alerts, e.g. `latency <= 500 ms`.
    pub fn describe(&self) -> String {
        match self {
            Sli::Availability => "availability".to_string(),
            Sli::Latency { threshold_ms } => format!("latency <= {threshold_ms} ms"),
        }
    }
}

/// One multiwindow burn-rate alert of an SLO.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnRateAlert {
    /// The severity as written: `page`, `ticket` or a severity name.
    pub kind: String,
    /// The alert severity (`page` → critical, `ticket` → medium).
    pub severity: Severity,
    /// The long window (ns).
    pub long: i64,
    /// The short window (ns).
    pub short: i64,
    /// Both windows must burn at least this fast.
    pub burn_rate: f64,
}

impl BurnRateAlert {
    /// `1h/5m`: the pair's name in alerts and reports.
    pub fn windows(&self) -> String {
        format!("{}/{}", format_span(self.long), format_span(self.short))
    }

    fn workbook_table() -> Vec<BurnRateAlert> {
        let hour = 3_600 * NANOS_PER_SECOND;
        let minute = 60 * NANOS_PER_SECOND;
        let pair = |kind: &str, severity, long, short, burn_rate| BurnRateAlert {
            kind: kind.to_string(),
            severity,
            long,
            short,
            burn_rate,
        };
        vec![
            pair("page", Severity::Critical, hour, 5 * minute, 14.4),
            pair("page", Severity::Critical, 6 * hour, 30 * minute, 6.0),
            pair("ticket", Severity::Medium, 72 * hour, 6 * hour, 1.0),
        ]
    }
}

/// A validated SLO.
#[derive(Debug, Clone)]
pub struct Slo {
    /// Unique id; the `rule_id` of its alerts.
    pub id: String,
    /// Where the id sits in the file (line, column).
    pub id_position: (usize, usize),
    /// Human title.
    pub title: String,
    /// Longer description.
    pub description: Option<String>,
    /// Stream the SLO reads.
    pub stream: String,
    /// Which events count (the rule filter language).
    pub filter: Option<LocatedExpr>,
    /// Group-by columns with their file positions.
    pub group_by: Vec<(String, usize, usize)>,
    /// What a good event is.
    pub sli: Sli,
    /// Target share of good events, in percent (strictly between 0 and 100).
    pub objective: f64,
    /// The error budget's period (ns).
    pub period: i64,
    /// Bucket width of the window rings (ns).
    pub resolution: i64,
    /// Allowed lateness (ns).
    pub allowed_lateness: i64,
    /// The burn-rate alerts.
    pub alerts: Vec<BurnRateAlert>,
    /// Most group keys tracked at once.
    pub max_groups: usize,
    /// Extra alert labels.
    pub labels: BTreeMap<String, String>,
    /// Origin.
    pub source: RuleSource,
}

impl Slo {
    /// The error budget as a ratio of events: `1 − objective`.
    pub fn error_budget(&self) -> f64 {
        1.0 - self.objective / 100.0
    }

    /// Every distinct window length of the alerts, shortest first (ns).
    pub fn windows(&self) -> Vec<i64> {
        let mut windows: Vec<i64> = self
            .alerts
            .iter()
            .flat_map(|alert| [alert.long, alert.short])
            .collect();
        windows.sort_unstable();
        windows.dedup();
        windows
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SloListDocument {
    slos: Vec<SloDocument>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SloDocument {
    id: Spanned<String>,
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    filter: Option<Spanned<String>>,
    #[serde(default)]
    group_by: Vec<Spanned<String>>,
    sli: SliDocument,
    objective: Spanned<f64>,
    #[serde(default)]
    period: Option<Spanned<String>>,
    #[serde(default)]
    resolution: Option<Spanned<String>>,
    #[serde(default)]
    allowed_lateness: Option<Spanned<String>>,
    #[serde(default)]
    alerts: Option<Vec<AlertDocument>>,
    #[serde(default)]
    max_groups: Option<Spanned<usize>>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum SliDocument {
    Availability,
    Latency(LatencyDocument),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LatencyDocument {
    threshold_ms: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertDocument {
    severity: Spanned<String>,
    long: Spanned<String>,
    short: Spanned<String>,
    burn_rate: Spanned<f64>,
}

/// Reads the SLOs of one file.
pub fn slos_from_path(path: &Path) -> Result<Vec<Slo>, DetectError> {
    let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    slos_from_yaml_str(path, &text)
}

/// Reads SLOs from YAML text (one SLO, or a list under `slos:`); `path`
/// names the file in error messages.
pub fn slos_from_yaml_str(path: &Path, text: &str) -> Result<Vec<Slo>, DetectError> {
    let source = RuleSource {
        path: path.to_path_buf(),
        text: Arc::from(text),
    };
    let node = marked_yaml::parse_yaml(0, text)
        .map_err(|error| into_slo_error(yaml_error(&source, &error.into())))?;
    let holds_a_list = node
        .as_mapping()
        .is_some_and(|mapping| mapping.get_node("slos").is_some());
    let documents = if holds_a_list {
        marked_yaml::from_node::<SloListDocument>(&node).map(|list| list.slos)
    } else {
        marked_yaml::from_node::<SloDocument>(&node).map(|document| vec![document])
    }
    .map_err(|error| {
        locate_unplaced_error(text, into_slo_error(yaml_error(&source, &error.into())))
    })?;
    documents
        .into_iter()
        .map(|document| validate(document, &source))
        .collect()
}

/// Loads every SLO of a file, or of every `*.yaml` / `*.yml` under a
/// directory (recursively, in path order). Returns the SLOs that loaded and
/// every error, so that all can be reported at once.
pub fn load_slos(path: &Path) -> (Vec<Slo>, Vec<DetectError>) {
    let mut paths = Vec::new();
    let mut errors = Vec::new();
    collect_rule_paths(path, &mut paths, &mut errors);
    paths.sort();
    let mut slos: Vec<Slo> = Vec::new();
    for path in paths {
        match slos_from_path(&path) {
            Ok(loaded) => {
                for slo in loaded {
                    if let Some(previous) = slos.iter().find(|other| other.id == slo.id) {
                        errors.push(DetectError::Slo {
                            path: path.clone(),
                            line: slo.id_position.0,
                            column: slo.id_position.1,
                            token: Some(slo.id.clone()),
                            message: format!(
                                "duplicate SLO id, also defined in {}",
                                previous.source.path.display()
                            ),
                        });
                        continue;
                    }
                    slos.push(slo);
                }
            }
            Err(error) => errors.push(error),
        }
    }
    (slos, errors)
}

/// marked-yaml gives no position for an unknown enum variant (`sli: uptime`)
/// nor for an unknown key inside a flow mapping (`{ long: 1h, burn: 2 }`):
/// find the name in the text.
fn locate_unplaced_error(text: &str, error: DetectError) -> DetectError {
    let DetectError::Slo {
        path,
        line: 1,
        column: 1,
        token: None,
        message,
    } = error
    else {
        return error;
    };
    let variant = message
        .strip_prefix("unknown variant `")
        .and_then(|rest| rest.split('`').next());
    let field = message
        .strip_prefix("unknown field '")
        .and_then(|rest| rest.split('\'').next());
    let position = text.lines().enumerate().find_map(|(index, line)| {
        let found = match (variant, field) {
            (Some(variant), _) => {
                let trimmed = line.trim_start().trim_start_matches("- ");
                let value_at = line.find(variant)?;
                (trimmed.starts_with("sli:") && value_at > line.find("sli:")?).then_some(value_at)
            }
            (None, Some(field)) => line.match_indices(field).map(|(at, _)| at).find(|&at| {
                let before = line[..at].chars().next_back();
                let after = line[at + field.len()..].trim_start();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with(':')
            }),
            (None, None) => None,
        }?;
        Some((index + 1, line[..found].chars().count() + 1))
    });
    let (line, column) = position.unwrap_or((1, 1));
    DetectError::Slo {
        path,
        line,
        column,
        token: variant.or(field).map(str::to_string),
        message,
    }
}

fn into_slo_error(error: DetectError) -> DetectError {
    match error {
        DetectError::Rule {
            path,
            line,
            column,
            token,
            message,
        } => DetectError::Slo {
            path,
            line,
            column,
            token,
            message,
        },
        other => other,
    }
}

fn validate(document: SloDocument, source: &RuleSource) -> Result<Slo, DetectError> {
    let at =
        |(line, column): (usize, usize), message: String, token: Option<String>| DetectError::Slo {
            path: source.path.clone(),
            line,
            column,
            token,
            message,
        };
    let duration = |field: &Spanned<String>, name: &str| -> Result<i64, DetectError> {
        match parse_duration(field.as_str()) {
            Ok(nanos) if nanos > 0 || name == "allowed_lateness" => Ok(nanos),
            _ => Err(at(
                position(field),
                format!("{name}: invalid duration, expected e.g. 30s, 5m, 1h or 30d"),
                Some(field.as_str().to_string()),
            )),
        }
    };
    if document.id.is_empty()
        || !document
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(at(
            position(&document.id),
            "id must be non-empty and use letters, digits, '-', '_' or '.'".into(),
            Some(document.id.to_string()),
        ));
    }
    let objective = *document.objective;
    if !(objective > 0.0 && objective < 100.0) {
        return Err(at(
            position(&document.objective),
            "objective is a percentage strictly between 0 and 100, e.g. 99.9".into(),
            Some(objective.to_string()),
        ));
    }
    let sli = match &document.sli {
        SliDocument::Availability => Sli::Availability,
        SliDocument::Latency(latency) => {
            let threshold_ms = *latency.threshold_ms;
            if !(threshold_ms.is_finite() && threshold_ms >= 0.0) {
                return Err(at(
                    position(&latency.threshold_ms),
                    "latency threshold_ms must be a non-negative number of milliseconds".into(),
                    Some(threshold_ms.to_string()),
                ));
            }
            Sli::Latency { threshold_ms }
        }
    };
    let period = match &document.period {
        Some(period) => duration(period, "period")?,
        None => parse_duration(DEFAULT_PERIOD)
            .map_err(|error| DetectError::Internal(error.to_string()))?,
    };
    let allowed_lateness = match &document.allowed_lateness {
        Some(lateness) => duration(lateness, "allowed_lateness")?,
        None => parse_duration(DEFAULT_ALLOWED_LATENESS)
            .map_err(|error| DetectError::Internal(error.to_string()))?,
    };
    let error_budget = 1.0 - objective / 100.0;
    let alerts = match &document.alerts {
        None => BurnRateAlert::workbook_table(),
        Some(documents) => {
            let mut alerts = Vec::with_capacity(documents.len());
            for alert in documents {
                let severity = match alert.severity.as_str() {
                    "page" | "critical" => Severity::Critical,
                    "ticket" | "medium" => Severity::Medium,
                    "high" => Severity::High,
                    "low" => Severity::Low,
                    "info" => Severity::Info,
                    other => {
                        return Err(at(
                            position(&alert.severity),
                            "severity must be page, ticket, or one of critical, high, medium, low, info".into(),
                            Some(other.to_string()),
                        ))
                    }
                };
                let long = duration(&alert.long, "long")?;
                let short = duration(&alert.short, "short")?;
                if short >= long {
                    return Err(at(
                        position(&alert.short),
                        "the short window must be shorter than the long one (the workbook uses 1/12)"
                            .into(),
                        Some(alert.short.to_string()),
                    ));
                }
                let burn_rate = *alert.burn_rate;
                // An error ratio can't exceed 1, so a burn rate above
                // 1 / budget could never be reached.
                if !(burn_rate > 0.0 && burn_rate <= 1.0 / error_budget) {
                    return Err(at(
                        position(&alert.burn_rate),
                        format!(
                            "burn_rate must be above 0 and at most 1 / (1 - objective) = {:.4}, the rate of a total outage",
                            1.0 / error_budget
                        ),
                        Some(burn_rate.to_string()),
                    ));
                }
                alerts.push(BurnRateAlert {
                    kind: alert.severity.as_str().to_string(),
                    severity,
                    long,
                    short,
                    burn_rate,
                });
            }
            if alerts.is_empty() {
                return Err(at(
                    position(&document.id),
                    "alerts must list at least one {severity, long, short, burn_rate} pair".into(),
                    None,
                ));
            }
            alerts
        }
    };
    let windows: Vec<i64> = alerts.iter().flat_map(|a| [a.long, a.short]).collect();
    let longest = windows.iter().copied().max().unwrap_or(period);
    let resolution = match &document.resolution {
        Some(field) => {
            let resolution = duration(field, "resolution")?;
            if let Some(window) = windows.iter().find(|window| *window % resolution != 0) {
                return Err(at(
                    position(field),
                    format!(
                        "resolution must divide every window, and {} is not a multiple of it",
                        format_span(*window)
                    ),
                    Some(field.to_string()),
                ));
            }
            resolution
        }
        None => default_resolution(&windows),
    };
    if longest / resolution > MAX_BUCKETS_PER_GROUP {
        let (line, column) = document
            .resolution
            .as_ref()
            .map(position)
            .unwrap_or_else(|| position(&document.id));
        return Err(at(
            (line, column),
            format!(
                "the longest window needs {} buckets of {} per group (at most {MAX_BUCKETS_PER_GROUP}); set a coarser `resolution` that divides every window",
                longest / resolution,
                format_span(resolution)
            ),
            None,
        ));
    }
    let filter = match &document.filter {
        None => None,
        Some(field) => {
            let (line, column) = position(field);
            let expr = parse(field.as_str()).map_err(|error| {
                into_slo_error(expression_error(
                    source,
                    line,
                    column,
                    field.as_str(),
                    &error,
                ))
            })?;
            Some(LocatedExpr {
                expr,
                text: field.as_str().to_string(),
                line,
                column,
            })
        }
    };
    let max_groups = match &document.max_groups {
        Some(field) if **field == 0 => {
            return Err(at(
                position(field),
                "max_groups must be at least 1".into(),
                None,
            ))
        }
        Some(field) => **field,
        None => DEFAULT_SLO_MAX_GROUPS,
    };
    Ok(Slo {
        id: document.id.as_str().to_string(),
        id_position: position(&document.id),
        title: document.title,
        description: document.description,
        stream: document
            .stream
            .unwrap_or_else(|| inferwatch_core::DEFAULT_STREAM.to_string()),
        filter,
        group_by: document
            .group_by
            .iter()
            .map(|column| {
                let (line, col) = position(column);
                (column.as_str().to_string(), line, col)
            })
            .collect(),
        sli,
        objective,
        period,
        resolution,
        allowed_lateness,
        alerts,
        max_groups,
        labels: document.labels,
        source: source.clone(),
    })
}

/// The bucket width when the config does not set `resolution`.
///
/// The coarsest of 1 s, 5 s, 10 s, … 1 h that divides every window and is
/// at most 1/60 of the shortest one. For the workbook's table that is 5 s:
/// a total outage reaches 14.4× over 1h after 51.84 s, and a 5 s grid sees it
/// at 55 s, where a 1-minute grid would say 60 s; the 5 m short window is 60
/// buckets, so its reset ((1 − 14.4 × budget ÷ error ratio) × 5 m after the
/// errors stop) is also known to within 5 s. Windows that fit no candidate
/// fall back to their greatest common divisor.
fn default_resolution(windows: &[i64]) -> i64 {
    let shortest = windows.iter().copied().min().unwrap_or(NANOS_PER_SECOND);
    RESOLUTION_CANDIDATES
        .iter()
        .rev()
        .map(|seconds| seconds * NANOS_PER_SECOND)
        .find(|candidate| {
            *candidate * 60 <= shortest && windows.iter().all(|window| window % candidate == 0)
        })
        .unwrap_or_else(|| windows.iter().copied().fold(0, greatest_common_divisor))
        .max(1)
}

fn greatest_common_divisor(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        greatest_common_divisor(b, a % b)
    }
}

/// (good, total) in one ring bucket. 32 bits hold 4 G events per bucket and
/// group, and keep a 3-day ring of 5 s buckets at 415 kB per group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BucketCounts {
    good: u32,
    total: u32,
}

/// (good, total) over a window or a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    good: u64,
    total: u64,
}

impl Counts {
    fn add(&mut self, bucket: BucketCounts) {
        self.good += u64::from(bucket.good);
        self.total += u64::from(bucket.total);
    }

    fn subtract(&mut self, bucket: BucketCounts) {
        debug_assert!(self.total >= u64::from(bucket.total) && self.good >= u64::from(bucket.good));
        self.good -= u64::from(bucket.good);
        self.total -= u64::from(bucket.total);
    }

    fn bad(&self) -> u64 {
        self.total - self.good
    }

    /// Error ratio ÷ error budget; 0 for an empty window (no events burn nothing).
    fn burn_rate(&self, error_budget: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        (self.bad() as f64 / self.total as f64) / error_budget
    }
}

fn reaches(burn_rate: f64, threshold: f64) -> bool {
    burn_rate >= threshold * (1.0 - BURN_RATE_TOLERANCE)
}

/// The state of one group key of one SLO.
struct GroupState {
    /// Key values in `group_by` order.
    key_values: Vec<String>,
    /// Ring of buckets; bucket `b` lives in slot `b mod ring length`.
    ring: Vec<BucketCounts>,
    /// Per distinct window: the counts of its buckets before the next boundary.
    window_sums: Vec<Counts>,
    /// Coarse (bucket index, counts) ring over the budget period.
    period_ring: Vec<(i64, Counts)>,
    /// Earliest bucket that received a row (i64::MAX before any).
    first_bucket: i64,
    /// Per alert: when it started firing.
    firing_since: Vec<Option<i64>>,
}

/// Per row of the current batch without a group (not selected, or refused).
const NO_GROUP: u32 = u32::MAX;

/// One SLO compiled against a schema, with its per-group state.
struct SloRuntime {
    slo: Slo,
    /// Rows the SLI counts: the stream, the filter and, for latency, a latency value.
    selection: RowPredicate,
    /// Good rows among them.
    good: RowPredicate,
    group_columns: Vec<usize>,
    /// Distinct window lengths in buckets, shortest first.
    window_buckets: Vec<i64>,
    /// Per alert: positions of its long and short window in `window_buckets`.
    alert_windows: Vec<(usize, usize)>,
    ring_length: i64,
    /// Width of the coarse period buckets (ns) and how many are kept.
    period_bucket: i64,
    period_slots: i64,
    /// Interned keys: the same table rules use (an SLO never forgets a group).
    keys: GroupTable,
    groups: Vec<GroupState>,
    /// Buckets before this one are folded into the window sums; rows in them
    /// are late. None before the first row.
    committed: Option<i64>,
    /// Event time at which the watermark passes the next boundary.
    next_evaluation_at: i64,
    /// Newest bucket that received a row.
    newest_bucket: i64,
    late_events: u64,
    future_events: u64,
    /// The newest event within the allowed lateness of the clock.
    newest_on_time: Option<i64>,
    refused_rows: u64,
    /// Per row of the current batch: its group, or NO_GROUP.
    row_groups: Vec<u32>,
}

impl SloRuntime {
    fn new(slo: Slo, schema: &SchemaRef) -> Result<SloRuntime, DetectError> {
        let column_error =
            |(line, column): (usize, usize), name: &str, message: String| DetectError::Slo {
                path: slo.source.path.clone(),
                line,
                column,
                token: Some(name.to_string()),
                message,
            };
        let text_equals = |name: &str, value: &str| -> Option<RowPredicate> {
            Some(RowPredicate::TextIn {
                column: schema.index_of(name).ok()?,
                values: vec![value.to_string()],
                negated: false,
            })
        };
        let mut selection =
            text_equals(column::STREAM, &slo.stream).unwrap_or(RowPredicate::Constant(true));
        if let Some(located) = &slo.filter {
            let compiled = compile_predicate(&located.expr, schema).map_err(|error| {
                into_slo_error(expression_error(
                    &slo.source,
                    located.line,
                    located.column,
                    &located.text,
                    &error,
                ))
            })?;
            selection = RowPredicate::And(Box::new(selection), Box::new(compiled));
        }
        let good = match slo.sli {
            Sli::Availability => text_equals(column::STATUS, "ok").ok_or_else(|| {
                DetectError::Internal("the event schema has no status column".into())
            })?,
            Sli::Latency { threshold_ms } => {
                let latency = schema.index_of(column::LATENCY_MS).map_err(|_| {
                    DetectError::Internal("the event schema has no latency_ms column".into())
                })?;
                selection = RowPredicate::And(
                    Box::new(selection),
                    Box::new(RowPredicate::IsNull {
                        column: latency,
                        negated: true,
                    }),
                );
                RowPredicate::Numeric {
                    op: CompareOp::LessEq,
                    left: NumericExpr::Column(latency),
                    right: NumericExpr::Constant(threshold_ms),
                }
            }
        };
        let mut group_columns = Vec::new();
        for (name, line, column) in &slo.group_by {
            let index = schema.index_of(name).map_err(|_| {
                column_error((*line, *column), name, format!("unknown column '{name}'"))
            })?;
            if matches!(
                schema.field(index).data_type(),
                DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
            ) {
                return Err(column_error(
                    (*line, *column),
                    name,
                    format!("column '{name}' can't be grouped by"),
                ));
            }
            group_columns.push(index);
        }
        let resolution = slo.resolution;
        let windows = slo.windows();
        let window_buckets: Vec<i64> = windows.iter().map(|w| w / resolution).collect();
        let alert_windows = slo
            .alerts
            .iter()
            .map(|alert| {
                let at = |length: i64| windows.iter().position(|w| *w == length).unwrap_or(0);
                (at(alert.long), at(alert.short))
            })
            .collect();
        let longest = window_buckets.last().copied().unwrap_or(1);
        // Alive buckets span the longest window behind the last boundary plus
        // what the lateness lets arrive ahead of it.
        let ring_length = longest
            + (slo.allowed_lateness + DEFAULT_MAX_FUTURE_NANOS + resolution - 1) / resolution
            + 2;
        let period_bucket = resolution * (slo.period / resolution / PERIOD_BUCKETS).max(1);
        let period_slots = (slo.period + period_bucket - 1) / period_bucket + 1;
        let keys = GroupTable::new(
            slo.group_by
                .iter()
                .map(|(name, _, _)| name.clone())
                .collect(),
        );
        Ok(SloRuntime {
            selection,
            good,
            group_columns,
            window_buckets,
            alert_windows,
            ring_length,
            period_bucket,
            period_slots,
            keys,
            groups: Vec::new(),
            committed: None,
            next_evaluation_at: i64::MIN,
            newest_bucket: i64::MIN,
            late_events: 0,
            future_events: 0,
            newest_on_time: None,
            refused_rows: 0,
            row_groups: Vec::new(),
            slo,
        })
    }

    fn referenced_columns(&self, out: &mut Vec<usize>) {
        self.selection.referenced_columns(out);
        self.good.referenced_columns(out);
        out.extend(&self.group_columns);
    }

    /// Evaluates the batch's predicates and interns its group keys, in row
    /// order. Returns (selected, good) bitmaps.
    fn prepare(&mut self, batch: &RecordBatch) -> (BooleanBuffer, BooleanBuffer) {
        let selected = evaluate_predicate(&self.selection, batch);
        let good = evaluate_predicate(&self.good, batch);
        let rows = batch.num_rows();
        let value_ids: Vec<Vec<u32>> = (0..self.group_columns.len())
            .map(|position| {
                let array = batch.column(self.group_columns[position]);
                let keys = &mut self.keys;
                crate::engine::column_value_ids(array, &selected, &mut |value| {
                    keys.intern_value(position, value)
                })
            })
            .collect();
        self.row_groups.clear();
        self.row_groups.resize(rows, NO_GROUP);
        let mut key = vec![0u32; self.group_columns.len()];
        for row in selected.set_indices() {
            for (position, ids) in value_ids.iter().enumerate() {
                key[position] = ids[row];
            }
            self.row_groups[row] = match self.keys.group_of(&key, self.slo.max_groups) {
                Some((group, false)) => group,
                None => {
                    self.refused_rows += 1;
                    NO_GROUP
                }
                Some((group, true)) => {
                    debug_assert_eq!(group as usize, self.groups.len(), "no group is released");
                    let key_values = key
                        .iter()
                        .enumerate()
                        .map(|(position, id)| self.keys.value(position, *id).to_string())
                        .collect();
                    self.groups.push(GroupState {
                        key_values,
                        ring: vec![BucketCounts::default(); self.ring_length as usize],
                        window_sums: vec![Counts::default(); self.window_buckets.len()],
                        period_ring: vec![
                            (i64::MIN, Counts::default());
                            self.period_slots as usize
                        ],
                        first_bucket: i64::MAX,
                        firing_since: vec![None; self.slo.alerts.len()],
                    });
                    group
                }
            };
        }
        (selected, good)
    }

    /// Counts one selected row, or drops it as late.
    fn add(&mut self, row: usize, timestamp: i64, good: bool) {
        let group = self.row_groups[row];
        if group == NO_GROUP {
            return;
        }
        let bucket = timestamp.div_euclid(self.slo.resolution);
        if self.committed.is_some_and(|committed| bucket < committed) {
            self.late_events += 1;
            return;
        }
        let longest = *self.window_buckets.last().unwrap_or(&1);
        if self
            .committed
            .is_some_and(|committed| bucket - committed >= self.ring_length - longest)
        {
            // Past the room the ring keeps ahead of the clock: its slot may
            // still hold a bucket of the longest window.
            self.future_events += 1;
            return;
        }
        let state = &mut self.groups[group as usize];
        let slot = &mut state.ring[bucket.rem_euclid(self.ring_length) as usize];
        slot.total = slot.total.saturating_add(1);
        slot.good = slot.good.saturating_add(u32::from(good));
        state.first_bucket = state.first_bucket.min(bucket);
        self.newest_bucket = self.newest_bucket.max(bucket);
    }

    /// Remembers the newest event that was on time for the clock `now`.
    fn note_on_time(&mut self, timestamp: i64, now: i64) {
        if timestamp <= now.saturating_add(self.slo.allowed_lateness) {
            self.newest_on_time = Some(self.newest_on_time.map_or(timestamp, |t| t.max(timestamp)));
        }
    }

    /// Evaluates every boundary the watermark of `newest_event_time` has passed.
    fn observe_time(&mut self, newest_event_time: i64, alerts: &mut Vec<Alert>) {
        if self.committed.is_none() {
            // The first boundary is the first one after the earliest time an
            // on-time event could carry, as in the rule engine.
            let earliest = newest_event_time.saturating_sub(self.slo.allowed_lateness);
            self.committed = Some(earliest.div_euclid(self.slo.resolution));
            self.next_evaluation_at = self.next_boundary_time() + self.slo.allowed_lateness;
        }
        if newest_event_time < self.next_evaluation_at {
            return;
        }
        self.advance_to(
            newest_event_time.saturating_sub(self.slo.allowed_lateness),
            alerts,
        );
    }

    fn next_boundary_time(&self) -> i64 {
        (self.committed.unwrap_or(0) + 1).saturating_mul(self.slo.resolution)
    }

    /// Evaluates every boundary at or before `watermark`.
    fn advance_to(&mut self, watermark: i64, alerts: &mut Vec<Alert>) {
        let Some(mut committed) = self.committed else {
            return;
        };
        let resolution = self.slo.resolution;
        while (committed + 1).saturating_mul(resolution) <= watermark {
            if self.newest_bucket < committed && self.is_quiet() {
                // Nothing left in any window and nothing firing: every boundary
                // up to the watermark would evaluate empty windows, so skip them.
                committed = committed.max(watermark.div_euclid(resolution));
                break;
            }
            self.commit(committed);
            committed += 1;
            self.evaluate(committed * resolution, alerts);
        }
        self.committed = Some(committed);
        self.next_evaluation_at = self
            .next_boundary_time()
            .saturating_add(self.slo.allowed_lateness);
    }

    fn is_quiet(&self) -> bool {
        let longest = self.window_buckets.len() - 1;
        self.groups.iter().all(|group| {
            group.window_sums[longest].total == 0 && group.firing_since.iter().all(Option::is_none)
        })
    }

    /// Folds bucket `bucket` into every window sum, drops the bucket that
    /// leaves each window, and adds it to the period counts.
    fn commit(&mut self, bucket: i64) {
        let ring_length = self.ring_length;
        let longest = *self.window_buckets.last().unwrap_or(&1);
        let period_index = (bucket * self.slo.resolution).div_euclid(self.period_bucket);
        let period_slot = period_index.rem_euclid(self.period_slots) as usize;
        for group in &mut self.groups {
            let added = group.ring[bucket.rem_euclid(ring_length) as usize];
            for (sum, length) in group.window_sums.iter_mut().zip(&self.window_buckets) {
                sum.add(added);
                sum.subtract(group.ring[(bucket - length).rem_euclid(ring_length) as usize]);
            }
            // That bucket is now outside every window: its slot is free for
            // the bucket one ring length later.
            group.ring[(bucket - longest).rem_euclid(ring_length) as usize] =
                BucketCounts::default();
            if added.total > 0 {
                let slot = &mut group.period_ring[period_slot];
                if slot.0 != period_index {
                    *slot = (period_index, Counts::default());
                }
                slot.1.add(added);
            }
        }
    }

    /// Judges every alert of every group at `boundary` (event time, ns).
    fn evaluate(&mut self, boundary: i64, alerts: &mut Vec<Alert>) {
        let error_budget = self.slo.error_budget();
        for group_index in 0..self.groups.len() {
            for alert_index in 0..self.slo.alerts.len() {
                let spec = &self.slo.alerts[alert_index];
                let (long_index, short_index) = self.alert_windows[alert_index];
                let group = &self.groups[group_index];
                let long = group.window_sums[long_index];
                let short = group.window_sums[short_index];
                let long_burn = long.burn_rate(error_budget);
                let short_burn = short.burn_rate(error_budget);
                let history = boundary
                    - group
                        .first_bucket
                        .saturating_mul(self.slo.resolution)
                        .min(boundary);
                let holds = history >= spec.short
                    && reaches(long_burn, spec.burn_rate)
                    && reaches(short_burn, spec.burn_rate);
                let transition = match (group.firing_since[alert_index], holds) {
                    (None, true) => Some((AlertState::Firing, boundary, None)),
                    (Some(since), false) => Some((AlertState::Resolved, since, Some(boundary))),
                    _ => None,
                };
                let Some((state, started, ended)) = transition else {
                    continue;
                };
                let traffic: u64 = self
                    .groups
                    .iter()
                    .map(|other| other.window_sums[long_index].total)
                    .sum();
                alerts.push(self.alert(
                    group_index,
                    alert_index,
                    state,
                    (started, ended),
                    (long, short),
                    traffic,
                ));
                self.groups[group_index].firing_since[alert_index] =
                    (state == AlertState::Firing).then_some(boundary);
            }
        }
    }

    fn group_values(&self, group: &GroupState) -> BTreeMap<String, String> {
        self.slo
            .group_by
            .iter()
            .zip(&group.key_values)
            .map(|((name, _, _), value)| (name.clone(), value.clone()))
            .collect()
    }

    /// `model_id=recsys,model_version=2.1`: the group's identity in fingerprints.
    fn group_text(&self, group: &GroupState) -> String {
        self.slo
            .group_by
            .iter()
            .zip(&group.key_values)
            .map(|((name, _, _), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn alert(
        &self,
        group_index: usize,
        alert_index: usize,
        state: AlertState,
        (started, ended): (i64, Option<i64>),
        (long, short): (Counts, Counts),
        traffic: u64,
    ) -> Alert {
        let slo = &self.slo;
        let spec = &slo.alerts[alert_index];
        let group = &self.groups[group_index];
        let error_budget = slo.error_budget();
        let long_burn = long.burn_rate(error_budget);
        let short_burn = short.burn_rate(error_budget);
        let windows = spec.windows();
        let long_text = format_span(spec.long);
        let short_text = format_span(spec.short);
        let group_text = self.group_text(group);
        let on = if group.key_values.is_empty() {
            slo.id.clone()
        } else {
            group.key_values.join(" ")
        };
        // Budget spent over the long window, as a share of the period's budget:
        // burn rate × long window ÷ period.
        let budget_spent = long_burn * spec.long as f64 / slo.period as f64 * 100.0;
        let summary = match state {
            AlertState::Resolved => format!(
                // Two decimals: just under the threshold must not print as equal to it.
                "burn rate back under {}×: {long_burn:.2}× over {long_text} and {short_burn:.2}× over {short_text} on {on}",
                spec.burn_rate
            ),
            _ => format!(
                "burn rate {long_burn:.1}× over {long_text} and {short_burn:.1}× over {short_text} on {on}; {budget_spent:.1} % of the {} error budget spent in the last {long_text}",
                format_span(slo.period)
            ),
        };
        let starts_at = format_timestamp(started);
        let mut labels = slo.labels.clone();
        labels.insert("slo".into(), slo.id.clone());
        labels.insert("sli".into(), slo.sli.describe());
        labels.insert("objective".into(), slo.objective.to_string());
        labels.insert("windows".into(), windows.clone());
        labels.insert("slo_severity".into(), spec.kind.clone());
        labels.insert("burn_rate_long".into(), format!("{long_burn:.3}"));
        labels.insert("burn_rate_short".into(), format!("{short_burn:.3}"));
        labels.insert("summary".into(), summary);
        Alert {
            alert_id: fingerprint([
                slo.id.as_str(),
                windows.as_str(),
                group_text.as_str(),
                starts_at.as_str(),
            ]),
            fingerprint: fingerprint([slo.id.as_str(), windows.as_str(), group_text.as_str()]),
            rule_id: slo.id.clone(),
            title: slo.title.clone(),
            severity: spec.severity,
            state,
            starts_at,
            ends_at: ended.map(format_timestamp),
            group: self.group_values(group),
            value: Some(long_burn),
            threshold: Some(spec.burn_rate),
            condition: format!(
                "burn_rate({long_text}) >= {br} and burn_rate({short_text}) >= {br} for {} objective {}",
                slo.sli.describe(),
                slo.objective,
                br = spec.burn_rate
            ),
            atlas: Vec::new(),
            impact: Impact {
                events: long.total,
                share_of_traffic: if traffic == 0 {
                    0.0
                } else {
                    long.total as f64 / traffic as f64
                },
                distinct_clients: None,
            },
            summary: String::new(),
            explanation: Vec::new(),
            labels,
            evidence: None,
        }
    }

    fn report(&self) -> Vec<BudgetReport> {
        let slo = &self.slo;
        let Some(committed) = self.committed else {
            return Vec::new();
        };
        let end = committed * slo.resolution;
        let first_index = (end - slo.period).div_euclid(self.period_bucket);
        let error_budget = slo.error_budget();
        let windows = slo.windows();
        let mut reports: Vec<(String, BudgetReport)> = Vec::new();
        for group in &self.groups {
            let mut period = Counts::default();
            let mut earliest = i64::MAX;
            for (index, counts) in &group.period_ring {
                if *index >= first_index && counts.total > 0 {
                    period.good += counts.good;
                    period.total += counts.total;
                    earliest = earliest.min(*index);
                }
            }
            let from = (earliest != i64::MAX)
                .then(|| (earliest * self.period_bucket).max(group.first_bucket * slo.resolution));
            let budget_total = period.total as f64 * error_budget;
            let report = BudgetReport {
                slo_id: slo.id.clone(),
                title: slo.title.clone(),
                sli: slo.sli.describe(),
                objective: slo.objective,
                period: format_span(slo.period),
                group: self.group_values(group),
                from: from.map(format_timestamp),
                to: format_timestamp(end),
                events: period.total,
                good_events: period.good,
                bad_events: period.bad(),
                sli_achieved: (period.total > 0)
                    .then(|| period.good as f64 / period.total as f64 * 100.0),
                budget_total,
                budget_remaining: (budget_total > 0.0)
                    .then(|| (1.0 - period.bad() as f64 / budget_total) * 100.0),
                burn_rates: windows
                    .iter()
                    .zip(&group.window_sums)
                    .map(|(window, counts)| WindowBurnRate {
                        window: format_span(*window),
                        burn_rate: counts.burn_rate(error_budget),
                        events: counts.total,
                        bad_events: counts.bad(),
                    })
                    .collect(),
                firing: slo
                    .alerts
                    .iter()
                    .zip(&group.firing_since)
                    .filter(|(_, since)| since.is_some())
                    .map(|(alert, _)| alert.windows())
                    .collect(),
            };
            reports.push((self.group_text(group), report));
        }
        reports.sort_by(|a, b| a.0.cmp(&b.0));
        reports.into_iter().map(|(_, report)| report).collect()
    }

    fn state(&self) -> SloState {
        let per_group = self.ring_length as usize * std::mem::size_of::<BucketCounts>()
            + self.window_buckets.len() * std::mem::size_of::<Counts>()
            + self.period_slots as usize * std::mem::size_of::<(i64, Counts)>()
            + self.slo.alerts.len() * std::mem::size_of::<Option<i64>>();
        SloState {
            slo_id: self.slo.id.clone(),
            groups: self.groups.len(),
            resolution: format_span(self.slo.resolution),
            buckets_per_group: self.ring_length as usize,
            state_bytes: per_group * self.groups.len(),
            late_events: self.late_events,
            refused_rows: self.refused_rows,
            firing: self
                .groups
                .iter()
                .flat_map(|group| {
                    self.slo
                        .alerts
                        .iter()
                        .zip(&group.firing_since)
                        .filter(|(_, since)| since.is_some())
                        .map(|(alert, _)| format!("{} {}", alert.windows(), self.group_text(group)))
                })
                .collect(),
        }
    }
}

/// The error budget of one SLO and group over its period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    /// SLO id.
    pub slo_id: String,
    /// SLO title.
    pub title: String,
    /// What a good event is.
    pub sli: String,
    /// Objective, percent.
    pub objective: f64,
    /// The budget period, e.g. `30d`.
    pub period: String,
    /// Group-by key values.
    pub group: BTreeMap<String, String>,
    /// Event time of the group's first counted event in the period (RFC 3339).
    pub from: Option<String>,
    /// The last evaluated boundary (RFC 3339): the report covers events before it.
    pub to: String,
    /// Events the SLI counted in the period.
    pub events: u64,
    /// Good events among them.
    pub good_events: u64,
    /// Bad events among them.
    pub bad_events: u64,
    /// Good events ÷ events, percent.
    pub sli_achieved: Option<f64>,
    /// Bad events the objective allows: events × (1 − objective).
    pub budget_total: f64,
    /// Share of that allowance not yet spent, percent (negative when overspent).
    pub budget_remaining: Option<f64>,
    /// Burn rate over each alert window, ending at `to`.
    pub burn_rates: Vec<WindowBurnRate>,
    /// Alert pairs firing at `to`, e.g. `1h/5m`.
    pub firing: Vec<String>,
}

/// The burn rate over one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowBurnRate {
    /// Window length, e.g. `1h`.
    pub window: String,
    /// Error ratio ÷ error budget (0 when the window is empty).
    pub burn_rate: f64,
    /// Events in the window.
    pub events: u64,
    /// Bad events in the window.
    pub bad_events: u64,
}

/// What one SLO holds, for tests and the run summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloState {
    /// SLO id.
    pub slo_id: String,
    /// Group keys tracked.
    pub groups: usize,
    /// Bucket width.
    pub resolution: String,
    /// Ring slots per group.
    pub buckets_per_group: usize,
    /// Bytes of counts held (groups × per-group state).
    pub state_bytes: usize,
    /// Rows dropped as later than the allowed lateness.
    pub late_events: u64,
    /// Rows skipped because their new key found the SLO at `max_groups`.
    pub refused_rows: u64,
    /// Alert pairs firing now, as `1h/5m model_id=…`.
    pub firing: Vec<String>,
}

/// Evaluates SLOs over a stream of batches: burn-rate alert transitions as
/// the watermark passes each bucket boundary, and error budget reports.
///
/// ```
/// use std::path::Path;
/// use inferwatch_detect::slo::{slos_from_yaml_str, SloEvaluator};
/// let slos = slos_from_yaml_str(
///     Path::new("slos.yaml"),
///     "id: api\ntitle: API answers\nsli: availability\nobjective: 99.9\n",
/// ).unwrap();
/// let evaluator = SloEvaluator::new(slos, &inferwatch_core::canonical_schema()).unwrap();
/// assert!(evaluator.report().is_empty());
/// ```
pub struct SloEvaluator {
    runtimes: Vec<SloRuntime>,
    timestamp_column: usize,
    schema: SchemaRef,
    newest_event_time: Option<i64>,
    /// The clock [`SloEvaluator::observe`] keeps when no clock is given.
    own_clock: AgreedClock,
}

impl SloEvaluator {
    /// Compiles `slos` against the schema of the batches that will be observed.
    pub fn new(slos: Vec<Slo>, schema: &SchemaRef) -> Result<SloEvaluator, DetectError> {
        let timestamp_column = schema.index_of(column::TIMESTAMP).map_err(|_| {
            DetectError::Internal("the event schema has no timestamp column".into())
        })?;
        let runtimes = slos
            .into_iter()
            .map(|slo| SloRuntime::new(slo, schema))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SloEvaluator {
            runtimes,
            timestamp_column,
            schema: schema.clone(),
            newest_event_time: None,
            own_clock: AgreedClock::new(),
        })
    }

    /// Validates `slos` against a schema, reporting every error.
    pub fn check(slos: &[Slo], schema: &SchemaRef) -> Vec<DetectError> {
        slos.iter()
            .filter_map(|slo| SloRuntime::new(slo.clone(), schema).err())
            .collect()
    }

    /// The SLOs, in load order.
    pub fn slos(&self) -> impl Iterator<Item = &Slo> {
        self.runtimes.iter().map(|runtime| &runtime.slo)
    }

    /// The names of the columns the SLOs read (sorted, without duplicates).
    pub fn referenced_columns(&self) -> Vec<String> {
        let mut indices = vec![self.timestamp_column];
        for runtime in &self.runtimes {
            runtime.referenced_columns(&mut indices);
        }
        let mut names: Vec<String> = indices
            .into_iter()
            .map(|index| self.schema.field(index).name().clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Feeds one batch, keeping its own clock (see [`AgreedClock`]);
    /// returns the alert transitions of the boundaries its rows moved the
    /// watermark past, in evaluation order.
    pub fn observe(&mut self, batch: &RecordBatch) -> Vec<Alert> {
        let Some(timestamps) = batch
            .column(self.timestamp_column)
            .as_primitive_opt::<TimestampNanosecondType>()
        else {
            return Vec::new();
        };
        let clock = self.own_clock.observe_all(timestamps.values());
        self.observe_at(batch, &clock)
    }

    /// Feeds one batch whose rows arrived at `clock` (one non-decreasing
    /// value per row, as the ingest guard gives); returns the alert
    /// transitions of the boundaries its rows moved the watermark past.
    pub fn observe_at(&mut self, batch: &RecordBatch, clock: &[i64]) -> Vec<Alert> {
        let mut alerts = Vec::new();
        if batch.num_rows() == 0 || self.runtimes.is_empty() || clock.len() != batch.num_rows() {
            return alerts;
        }
        let Some(timestamps) = batch
            .column(self.timestamp_column)
            .as_primitive_opt::<TimestampNanosecondType>()
        else {
            return alerts;
        };
        let timestamps = timestamps.values();
        let prepared: Vec<(BooleanBuffer, BooleanBuffer)> = self
            .runtimes
            .iter_mut()
            .map(|runtime| runtime.prepare(batch))
            .collect();
        // One row at a time, as if each row were its own batch: a boundary is
        // evaluated before the row that moves the watermark past it is
        // counted, so the batch sizes can't change the result.
        for (row, &timestamp) in timestamps.iter().enumerate() {
            if clock[row] == i64::MIN {
                // No clock yet: count the row, move no time.
                for (runtime, (selected, good)) in self.runtimes.iter_mut().zip(&prepared) {
                    if selected.value(row) {
                        runtime.add(row, timestamp, good.value(row));
                    }
                }
                continue;
            }
            let newest = self
                .newest_event_time
                .map_or(clock[row], |newest| newest.max(clock[row]));
            self.newest_event_time = Some(newest);
            for (runtime, (selected, good)) in self.runtimes.iter_mut().zip(&prepared) {
                runtime.note_on_time(timestamp, newest);
                runtime.observe_time(newest, &mut alerts);
                if selected.value(row) {
                    runtime.add(row, timestamp, good.value(row));
                }
            }
        }
        alerts
    }

    /// No more input: evaluates through the bucket of the newest event, so
    /// every counted event is in the windows and in [`SloEvaluator::report`].
    pub fn finish(&mut self) -> Vec<Alert> {
        let mut alerts = Vec::new();
        let settled = self.own_clock.settled();
        for runtime in &mut self.runtimes {
            // Through the newest event that was on time for its clock: a
            // last line far ahead does not stretch the windows. (An input
            // too short for a clock is judged up to its settled time.)
            let Some(newest) = runtime.newest_on_time.or(settled) else {
                continue;
            };
            let last_boundary = (newest.div_euclid(runtime.slo.resolution) + 1)
                .saturating_mul(runtime.slo.resolution);
            runtime.advance_to(last_boundary, &mut alerts);
        }
        alerts
    }

    /// The error budget of every SLO and group, at the last evaluated boundary.
    pub fn report(&self) -> Vec<BudgetReport> {
        self.runtimes.iter().flat_map(SloRuntime::report).collect()
    }

    /// Per-SLO state, for tests and the run summary.
    pub fn observable_state(&self) -> Vec<SloState> {
        self.runtimes.iter().map(SloRuntime::state).collect()
    }

    /// Rows dropped as too far ahead of the clock, summed over SLOs.
    pub fn future_events(&self) -> u64 {
        self.runtimes
            .iter()
            .map(|runtime| runtime.future_events)
            .sum()
    }

    /// Rows dropped as late, summed over SLOs.
    pub fn late_events(&self) -> u64 {
        self.runtimes
            .iter()
            .map(|runtime| runtime.late_events)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "id: api\ntitle: API answers\nsli: availability\nobjective: 99.9\n";

    /// (line, column, token, message) of the error `yaml` gives.
    fn error_of(yaml: &str) -> (usize, usize, Option<String>, String) {
        let error = match slos_from_yaml_str(Path::new("slos.yaml"), yaml) {
            Ok(slos) => match SloEvaluator::new(slos, &inferwatch_core::canonical_schema()) {
                Ok(_) => panic!("expected an error for:\n{yaml}"),
                Err(error) => error,
            },
            Err(error) => error,
        };
        let text = error.to_string();
        match error {
            DetectError::Slo {
                line,
                column,
                token,
                message,
                ..
            } => {
                assert!(
                    text.starts_with(&format!("slos.yaml:{line}:{column}: ")),
                    "{text}"
                );
                (line, column, token, message)
            }
            other => panic!("expected an SLO error, got {other:?}"),
        }
    }

    #[test]
    fn slo_defaults_are_the_workbook_table_at_five_seconds() {
        let slos = slos_from_yaml_str(Path::new("slos.yaml"), VALID).unwrap();
        let slo = &slos[0];
        assert_eq!(slo.resolution, 5 * NANOS_PER_SECOND);
        assert_eq!(slo.period, 30 * 86_400 * NANOS_PER_SECOND);
        assert!((slo.error_budget() - 0.001).abs() < 1e-12);
        let table: Vec<(String, Severity, f64)> = slo
            .alerts
            .iter()
            .map(|alert| (alert.windows(), alert.severity, alert.burn_rate))
            .collect();
        assert_eq!(
            table,
            vec![
                ("1h/5m".to_string(), Severity::Critical, 14.4),
                ("6h/30m".to_string(), Severity::Critical, 6.0),
                ("3d/6h".to_string(), Severity::Medium, 1.0),
            ]
        );
        let evaluator = SloEvaluator::new(slos, &inferwatch_core::canonical_schema()).unwrap();
        // 3 d of 5 s buckets, plus the 30 s lateness, 2 min of room ahead
        // of the clock and two spare slots.
        assert_eq!(evaluator.runtimes[0].ring_length, 51_840 + 6 + 24 + 2);
        assert_eq!(
            evaluator.runtimes[0].period_bucket,
            3_600 * NANOS_PER_SECOND
        );
    }

    #[test]
    fn slo_resolution_follows_the_shortest_window() {
        let minute = 60 * NANOS_PER_SECOND;
        assert_eq!(
            default_resolution(&[5 * minute, 60 * minute]),
            5 * NANOS_PER_SECOND
        );
        assert_eq!(default_resolution(&[60 * minute, 720 * minute]), minute);
        assert_eq!(
            default_resolution(&[7 * NANOS_PER_SECOND]),
            7 * NANOS_PER_SECOND
        );
        assert_eq!(
            default_resolution(&[1_500_000_000, 3_000_000_000]),
            1_500_000_000
        );
    }

    #[test]
    fn slo_files_hold_one_slo_or_a_list() {
        let list = format!(
            "slos:\n  - {}\n  - id: api-latency\n    title: fast\n    sli: {{ latency: {{ threshold_ms: 250 }} }}\n    objective: 99\n    alerts:\n      - {{ severity: high, long: 2h, short: 10m, burn_rate: 5 }}\n",
            VALID.trim_end().replace('\n', "\n    ")
        );
        let slos = slos_from_yaml_str(Path::new("slos.yaml"), &list).unwrap();
        assert_eq!(slos.len(), 2);
        assert_eq!(
            slos[1].sli,
            Sli::Latency {
                threshold_ms: 250.0
            }
        );
        assert_eq!(slos[1].alerts[0].severity, Severity::High);
        assert_eq!(slos[1].id_position, (6, 9));
        // 2h and 10m: the coarsest candidate at most 10 s that divides both.
        assert_eq!(slos[1].resolution, 10 * NANOS_PER_SECOND);
    }

    #[test]
    fn slo_config_errors_name_line_and_column() {
        let (line, column, _, message) = error_of(&format!("{VALID}colour: red\n"));
        assert_eq!((line, column), (5, 1), "{message}");
        assert!(message.contains("unknown field 'colour'"), "{message}");

        let (line, column, token, message) = error_of(&format!("{VALID}period: thirty days\n"));
        assert_eq!(
            (line, column, token.as_deref()),
            (5, 9, Some("thirty days"))
        );
        assert!(message.contains("period"), "{message}");

        for objective in ["100", "0", "-3", "100.5"] {
            let yaml = VALID.replace("99.9", objective);
            let (line, column, _, message) = error_of(&yaml);
            assert_eq!((line, column), (4, 12), "{objective}: {message}");
            assert!(message.contains("between 0 and 100"), "{message}");
        }
        let (line, column, _, _) = error_of(&VALID.replace("99.9", "high"));
        assert_eq!((line, column), (4, 12));

        let (line, column, token, message) = error_of(&VALID.replace("availability", "uptime"));
        assert_eq!(
            (line, column, token.as_deref()),
            (3, 6, Some("uptime")),
            "{message}"
        );
        assert!(message.contains("uptime"), "{message}");

        let (line, column, _, message) =
            error_of(&VALID.replace("availability", "\n  latency:\n    threshold_ms: fast"));
        assert_eq!((line, column), (5, 19), "{message}");
    }

    #[test]
    fn slo_alert_errors_name_line_and_column() {
        let alerts = |pair: &str| format!("{VALID}alerts:\n  - {pair}\n");
        let (line, column, token, message) = error_of(&alerts(
            "{ severity: page, long: 1h, short: 5x, burn_rate: 14.4 }",
        ));
        assert_eq!(
            (line, column, token.as_deref()),
            (6, 40, Some("5x")),
            "{message}"
        );

        let (line, column, _, message) = error_of(&alerts(
            "{ severity: page, long: 5m, short: 1h, burn_rate: 14.4 }",
        ));
        assert_eq!((line, column), (6, 40), "{message}");
        assert!(message.contains("shorter"), "{message}");

        let (line, column, _, message) = error_of(&alerts(
            "{ severity: page, long: 1h, short: 5m, burn_rate: 2000 }",
        ));
        assert_eq!((line, column), (6, 55), "{message}");
        assert!(message.contains("1000"), "{message}");

        let (line, column, token, _) = error_of(&alerts(
            "{ severity: wake-me, long: 1h, short: 5m, burn_rate: 2 }",
        ));
        assert_eq!((line, column, token.as_deref()), (6, 17, Some("wake-me")));

        let (line, column, _, message) =
            error_of(&alerts("{ severity: page, long: 1h, short: 5m, burn: 2 }"));
        assert_eq!((line, column), (6, 44), "{message}");
        assert!(message.contains("burn"), "{message}");

        let (line, column, _, message) = error_of(&format!("{VALID}resolution: 7s\n"));
        assert_eq!((line, column), (5, 13), "{message}");
    }

    #[test]
    fn slo_schema_errors_name_line_and_column() {
        let (line, column, token, message) =
            error_of(&format!("{VALID}group_by: [model_id, modle_version]\n"));
        assert_eq!(
            (line, column, token.as_deref()),
            (5, 22, Some("modle_version")),
            "{message}"
        );
        let (line, column, token, message) =
            error_of(&format!("{VALID}filter: modle_id == \"recsys\"\n"));
        assert_eq!(
            (line, column, token.as_deref()),
            (5, 9, Some("modle_id")),
            "{message}"
        );
        let (line, column, _, message) = error_of(&format!("{VALID}filter: model_id === 1\n"));
        assert_eq!(line, 5, "{message} at {column}");
        let (line, _, _, message) = error_of("id: api\ntitle: [unclosed\n");
        assert!(line >= 2, "{message}");
    }

    #[test]
    fn slo_duplicate_ids_in_a_directory_are_reported() {
        let dir = std::env::temp_dir().join(format!("inferwatch-slo-dup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), VALID).unwrap();
        std::fs::write(dir.join("b.yaml"), format!("# again\n{VALID}")).unwrap();
        let (slos, errors) = load_slos(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(slos.len(), 1);
        assert_eq!(errors.len(), 1);
        let text = errors[0].to_string();
        assert!(text.contains("b.yaml:2:5: duplicate SLO id"), "{text}");
    }
}
