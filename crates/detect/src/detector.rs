//! Detector kinds beyond thresholds: learned baselines and distribution drift.
//!
//! A rule may carry one `detector:` block next to (or instead of) its
//! `condition`. The detector turns each group's window into a finding at every
//! tick; the rule holds when its condition (if any) holds AND the detector
//! finds something. Everything downstream — `for`, `keep_firing_for`, the
//! alert lifecycle — is shared with threshold rules.
//!
//! * `baseline`: a numeric series (any condition-language aggregate
//!   expression, e.g. `p95(latency_ms)` or `count()`) is learned per group
//!   key by a [`Baseline`](crate::baseline::Baseline); the group holds while
//!   its z-score is past `trigger`, and keeps holding until it falls below
//!   `recover` (hysteresis). An empty window gives a count of 0 — zero traffic
//!   is a signal — but no quantile or average: such a gap is neither learned
//!   nor judged, and the group keeps the state it had.
//! * `drift`: the distribution of a column in the group's window (or in one
//!   of its segments) is compared with a reference — another segment of the
//!   same group (canary against baseline), or the other groups that differ
//!   only in one `group_by` column (one source against the rest) — using a
//!   test from [`stats`](crate::stats). It holds only when the effect size
//!   passes `min_effect` on at least `min_samples` values per side (and the
//!   p-value passes `max_p_value` where the test has one): on large samples
//!   every difference is "significant", so the p-value alone never decides.
//!
//! [`builtin_detectors`] lists every kind, so a grep finds them all.

use std::collections::BTreeMap;

use inferwatch_core::{Evidence, QuantileSketch};
use marked_yaml::Spanned;
use serde::Deserialize;

use crate::baseline::{Assessment, Baseline, BaselineConfig, BaselineMethod};
use crate::rule::{position, LocatedExpr, RuleSource};
use crate::stats;
use crate::DetectError;

/// The detector kinds a rule can use, `threshold` being a plain `condition`.
pub fn builtin_detectors() -> &'static [&'static str] {
    &["threshold", "baseline", "drift", "forest"]
}

/// Points learned before a baseline judges (one point per tick).
pub const DEFAULT_BASELINE_WARMUP: usize = 60;
/// Points a rolling or MAD baseline remembers; the EWMA half-life in points.
pub const DEFAULT_BASELINE_POINTS: usize = 120;
/// Values sampled per side of a drift test.
pub const DEFAULT_DRIFT_SAMPLE: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum DetectorDocument {
    Baseline(Box<BaselineDocument>),
    Drift(Box<DriftDocument>),
    Forest(Box<ForestDocument>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForestDocument {
    features: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    warmup: Option<usize>,
    #[serde(default)]
    trees: Option<usize>,
    #[serde(default)]
    memory: Option<usize>,
    #[serde(default)]
    learn_per_tick: Option<usize>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    false_findings_per_day: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BaselineDocument {
    series: Spanned<String>,
    #[serde(default)]
    method: Option<Spanned<String>>,
    #[serde(default)]
    warmup: Option<usize>,
    #[serde(default)]
    points: Option<usize>,
    #[serde(default)]
    trigger: Option<f64>,
    #[serde(default)]
    recover: Option<f64>,
    #[serde(default)]
    direction: Option<Spanned<String>>,
    #[serde(default)]
    new_keys: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DriftDocument {
    column: Spanned<String>,
    #[serde(default)]
    class: Option<usize>,
    test: Spanned<String>,
    #[serde(default)]
    subject: Option<Spanned<String>>,
    reference: ReferenceDocument,
    #[serde(default)]
    min_samples: Option<usize>,
    #[serde(default)]
    min_effect: Option<f64>,
    #[serde(default)]
    max_p_value: Option<f64>,
    #[serde(default)]
    band: Option<f64>,
    #[serde(default)]
    confidence: Option<f64>,
    #[serde(default)]
    sample_size: Option<usize>,
    #[serde(default)]
    bins: Option<usize>,
    #[serde(default)]
    direction: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(crate) enum ReferenceDocument {
    Segment(Spanned<String>),
    RestOf(Spanned<String>),
    Trailing(Spanned<String>),
    Previous(Spanned<String>),
}

/// Which way a deviation must go to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only increases.
    Up,
    /// Only decreases.
    Down,
    /// Either way.
    Both,
}

impl Direction {
    /// A signed deviation as seen from this direction: positive means "counts".
    fn oriented(self, signed: f64) -> f64 {
        match self {
            Direction::Up => signed,
            Direction::Down => -signed,
            Direction::Both => signed.abs(),
        }
    }
}

/// A validated `detector:` block.
#[derive(Debug, Clone)]
pub enum Detector {
    /// A learned baseline over an aggregate series.
    Baseline(BaselineDetector),
    /// A two-sample distribution comparison.
    Drift(DriftDetector),
    /// A multivariate anomaly score per entity.
    Forest(ForestDetector),
}

/// `detector: forest`: every group (an entity such as a client) is a point
/// whose coordinates are window aggregates; one online isolation forest per
/// rule learns what entities look like and scores each one at every tick.
#[derive(Debug, Clone)]
pub struct ForestDetector {
    /// Feature names and their aggregate expressions, in name order.
    pub features: Vec<(String, LocatedExpr)>,
    /// Score in [0, 1] at or above which an entity holds; with
    /// `false_findings_per_day`, the floor under the calibrated threshold.
    pub threshold: f64,
    /// Calibrates the threshold so that about this many scores a day cross
    /// it, over the whole population: the matching quantile of the last
    /// day's scores, never below `threshold` (see [`EntityForest`]).
    pub false_findings_per_day: Option<f64>,
    /// Vectors learned before any entity is scored.
    pub warmup: usize,
    /// Trees in the forest.
    pub trees: usize,
    /// Vectors the forest remembers (its sliding window).
    pub memory: usize,
    /// Most vectors learned per tick: all are scored, a deterministic
    /// subset (by a hash of the entity and tick) is learned, which bounds the
    /// cost per tick at high cardinality.
    pub learn_per_tick: usize,
    /// Seed of the forest's random cuts.
    pub seed: u64,
}

/// `detector: baseline`.
#[derive(Debug, Clone)]
pub struct BaselineDetector {
    /// The series, an aggregate expression evaluated per group at each tick.
    pub series: LocatedExpr,
    /// How the baseline learns.
    pub config: BaselineConfig,
    /// |z| at which a group starts to hold.
    pub trigger: f64,
    /// |z| under which a holding group stops.
    pub recover: f64,
    /// Which deviations count.
    pub direction: Direction,
    /// `new_keys: zero`: a key first seen after the rule has watched for
    /// `warmup` ticks had a series of zero before (true of counts and
    /// distinct counts), so it is judged at once against a zero baseline
    /// instead of warming up. A key that appears and sweeps at once is a
    /// change against its own history; a key seen since the start is not.
    pub new_keys_from_zero: bool,
}

/// The two-sample tests a drift detector can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftTest {
    /// Kolmogorov–Smirnov; effect size is D.
    Ks,
    /// Mann–Whitney U with the Hodges–Lehmann shift (a Kayenta-style judge);
    /// effect size is the shift relative to the reference median.
    MannWhitney,
    /// Chi-square on a categorical column; effect size is Cramér's V.
    ChiSquare,
    /// Population stability index over reference-quantile bins.
    Psi,
    /// Jensen–Shannon distance over reference-quantile bins.
    JensenShannon,
    /// Wasserstein-1, in units of the reference's standard deviation.
    Wasserstein,
    /// Hellinger distance over reference-quantile bins.
    Hellinger,
}

impl DriftTest {
    fn parse(name: &str) -> Option<DriftTest> {
        Some(match name {
            "ks" => DriftTest::Ks,
            "mann_whitney" => DriftTest::MannWhitney,
            "chi_square" => DriftTest::ChiSquare,
            "psi" => DriftTest::Psi,
            "jensen_shannon" => DriftTest::JensenShannon,
            "wasserstein" => DriftTest::Wasserstein,
            "hellinger" => DriftTest::Hellinger,
            _ => return None,
        })
    }

    /// The name used in rules and evidence.
    pub fn name(self) -> &'static str {
        match self {
            DriftTest::Ks => "ks",
            DriftTest::MannWhitney => "mann_whitney",
            DriftTest::ChiSquare => "chi_square",
            DriftTest::Psi => "psi",
            DriftTest::JensenShannon => "jensen_shannon",
            DriftTest::Wasserstein => "wasserstein",
            DriftTest::Hellinger => "hellinger",
        }
    }

    /// A sensible effect-size gate when the rule gives none.
    fn default_min_effect(self) -> f64 {
        match self {
            DriftTest::Ks => 0.1,
            DriftTest::MannWhitney => 0.1,
            DriftTest::ChiSquare => 0.1,
            DriftTest::Psi => 0.25,
            DriftTest::JensenShannon => 0.1,
            DriftTest::Wasserstein => 0.25,
            DriftTest::Hellinger => 0.1,
        }
    }
}

/// What a drift detector compares its subject with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriftReference {
    /// Another segment of the same group.
    Segment(String),
    /// The other groups that share every `group_by` value but this column's.
    RestOf(String),
    /// The same group over this span just before the window (e.g. the trailing day).
    Trailing(i64),
    /// The same group's window this long ago (e.g. `1d`: the same hour yesterday).
    Previous(i64),
}

/// `detector: drift`.
#[derive(Debug, Clone)]
pub struct DriftDetector {
    /// The column compared.
    pub column: String,
    /// Where the column name sits in the file.
    pub column_position: (usize, usize),
    /// For a list column (`probabilities`, `logits`): the class whose
    /// per-row value is compared — per-class probability drift.
    pub class: Option<usize>,
    /// The test.
    pub test: DriftTest,
    /// The segment under test (None: every row of the group).
    pub subject: Option<String>,
    /// What it is compared with.
    pub reference: DriftReference,
    /// Fewest sampled values per side before judging.
    pub min_samples: usize,
    /// Effect size needed to hold.
    pub min_effect: f64,
    /// Largest p-value that counts, for tests that have one.
    pub max_p_value: f64,
    /// Mann–Whitney: the shift's interval must lie outside ± band × reference median.
    pub band: f64,
    /// Mann–Whitney: confidence of the shift interval.
    pub confidence: f64,
    /// Values sampled per side.
    pub sample_size: usize,
    /// Bins for PSI, Jensen–Shannon and Hellinger.
    pub bins: usize,
    /// Which shifts count (Mann–Whitney only; other tests are two-sided).
    pub direction: Direction,
}

fn located_error(
    source: &RuleSource,
    at: (usize, usize),
    message: String,
    token: Option<&str>,
) -> DetectError {
    DetectError::Rule {
        path: source.path.clone(),
        line: at.0,
        column: at.1,
        token: token.map(str::to_string),
        message,
    }
}

fn direction_of(
    source: &RuleSource,
    field: &Option<Spanned<String>>,
    default: Direction,
) -> Result<Direction, DetectError> {
    let Some(field) = field else {
        return Ok(default);
    };
    match field.as_str() {
        "up" => Ok(Direction::Up),
        "down" => Ok(Direction::Down),
        "both" => Ok(Direction::Both),
        other => Err(located_error(
            source,
            position(field),
            "direction must be one of up, down, both".into(),
            Some(other),
        )),
    }
}

impl DetectorDocument {
    /// Validates what needs no schema; `locate` parses an expression field.
    pub(crate) fn validate(
        self,
        source: &RuleSource,
        segment_names: &[&str],
        group_by: &[&str],
        locate: &dyn Fn(&Spanned<String>) -> Result<LocatedExpr, DetectError>,
    ) -> Result<Detector, DetectError> {
        match self {
            DetectorDocument::Baseline(document) => {
                let method = match &document.method {
                    None => BaselineMethod::Ewma,
                    Some(field) => match field.as_str() {
                        "ewma" => BaselineMethod::Ewma,
                        "rolling" => BaselineMethod::Rolling,
                        "mad" => BaselineMethod::Mad,
                        "hour_of_day" => BaselineMethod::HourOfDay,
                        "hour_of_week" => BaselineMethod::HourOfWeek,
                        "auto" => BaselineMethod::Auto,
                        other => return Err(located_error(
                            source,
                            position(field),
                            "method must be one of ewma, rolling, mad, hour_of_day, hour_of_week, auto"
                                .into(),
                            Some(other),
                        )),
                    },
                };
                let trigger = document.trigger.unwrap_or(4.0);
                let recover = document.recover.unwrap_or(trigger / 2.0);
                if !(trigger > 0.0 && recover >= 0.0 && recover <= trigger) {
                    return Err(located_error(
                        source,
                        position(&document.series),
                        format!("baseline needs trigger > 0 and 0 <= recover <= trigger (got trigger {trigger}, recover {recover})"),
                        None,
                    ));
                }
                Ok(Detector::Baseline(BaselineDetector {
                    series: locate(&document.series)?,
                    config: BaselineConfig {
                        method,
                        warmup: document.warmup.unwrap_or(DEFAULT_BASELINE_WARMUP),
                        window: document.points.unwrap_or(DEFAULT_BASELINE_POINTS).max(2),
                    },
                    trigger,
                    recover,
                    direction: direction_of(source, &document.direction, Direction::Both)?,
                    new_keys_from_zero: match &document.new_keys {
                        None => false,
                        Some(field) => {
                            match field.as_str() {
                                "zero" => true,
                                "learn" => false,
                                other => return Err(located_error(
                                    source,
                                    position(field),
                                    "new_keys must be zero (a new key's series was 0 before it \
                                     appeared) or learn (it warms up like the first keys)"
                                        .into(),
                                    Some(other),
                                )),
                            }
                        }
                    },
                }))
            }
            DetectorDocument::Forest(document) => {
                let mut features = Vec::new();
                for (name, expression) in &document.features {
                    features.push((name.clone(), locate(expression)?));
                }
                let threshold = document.threshold.unwrap_or(0.7);
                let memory = document.memory.unwrap_or(2_048);
                let trees = document.trees.unwrap_or(32);
                let first = document.features.values().next();
                let at = first.map(position).unwrap_or((1, 1));
                if features.is_empty() || features.len() > 32 {
                    return Err(located_error(
                        source,
                        at,
                        "a forest needs between 1 and 32 features".into(),
                        None,
                    ));
                }
                if !(0.0..=1.0).contains(&threshold)
                    || !(16..=1_000_000).contains(&memory)
                    || !(1..=512).contains(&trees)
                {
                    return Err(located_error(
                        source,
                        at,
                        "a forest needs 0 <= threshold <= 1, 16 <= memory <= 1000000 and 1 <= trees <= 512".into(),
                        None,
                    ));
                }
                if let Some(rate) = document.false_findings_per_day {
                    if !(rate > 0.0 && rate.is_finite()) {
                        return Err(located_error(
                            source,
                            at,
                            format!("false_findings_per_day must be a positive number, not {rate}"),
                            None,
                        ));
                    }
                }
                Ok(Detector::Forest(ForestDetector {
                    features,
                    threshold,
                    false_findings_per_day: document.false_findings_per_day,
                    warmup: document.warmup.unwrap_or(512),
                    trees,
                    memory,
                    learn_per_tick: document.learn_per_tick.unwrap_or(256).max(1),
                    seed: document.seed.unwrap_or(0x001f_0e57),
                }))
            }
            DetectorDocument::Drift(document) => {
                let test = DriftTest::parse(document.test.as_str()).ok_or_else(|| {
                    located_error(
                        source,
                        position(&document.test),
                        "test must be one of ks, mann_whitney, chi_square, psi, jensen_shannon, wasserstein, hellinger".into(),
                        Some(document.test.as_str()),
                    )
                })?;
                let known_segment = |field: &Spanned<String>| -> Result<String, DetectError> {
                    if segment_names.contains(&field.as_str()) {
                        Ok(field.as_str().to_string())
                    } else {
                        Err(located_error(
                            source,
                            position(field),
                            format!(
                                "unknown segment, expected one of: {}",
                                segment_names.join(", ")
                            ),
                            Some(field.as_str()),
                        ))
                    }
                };
                let subject = document.subject.as_ref().map(known_segment).transpose()?;
                let reference = match &document.reference {
                    ReferenceDocument::Segment(name) => {
                        let name = known_segment(name)?;
                        if subject.as_deref() == Some(name.as_str()) {
                            return Err(located_error(
                                source,
                                position(&document.column),
                                "the subject and reference segments are the same".into(),
                                Some(&name),
                            ));
                        }
                        DriftReference::Segment(name)
                    }
                    ReferenceDocument::Trailing(span) | ReferenceDocument::Previous(span) => {
                        let nanos = inferwatch_core::parse_duration(span.as_str())
                            .ok()
                            .filter(|n| {
                                *n > 0 && *n <= 8 * 86_400 * inferwatch_core::NANOS_PER_SECOND
                            })
                            .ok_or_else(|| {
                                located_error(
                                    source,
                                    position(span),
                                    "reference span must be a duration up to 8d, e.g. 1h or 1d"
                                        .into(),
                                    Some(span.as_str()),
                                )
                            })?;
                        if matches!(document.reference, ReferenceDocument::Trailing(_)) {
                            DriftReference::Trailing(nanos)
                        } else {
                            DriftReference::Previous(nanos)
                        }
                    }
                    ReferenceDocument::RestOf(column) => {
                        if !group_by.contains(&column.as_str()) {
                            return Err(located_error(
                                source,
                                position(column),
                                "rest_of must name one of the rule's group_by columns".into(),
                                Some(column.as_str()),
                            ));
                        }
                        DriftReference::RestOf(column.as_str().to_string())
                    }
                };
                let confidence = document.confidence.unwrap_or(0.98);
                let sample_size = document.sample_size.unwrap_or(DEFAULT_DRIFT_SAMPLE);
                if !(0.5..1.0).contains(&confidence) || !(10..=100_000).contains(&sample_size) {
                    return Err(located_error(
                        source,
                        position(&document.test),
                        "drift needs 0.5 <= confidence < 1 and 10 <= sample_size <= 100000".into(),
                        None,
                    ));
                }
                Ok(Detector::Drift(DriftDetector {
                    column: document.column.as_str().to_string(),
                    column_position: position(&document.column),
                    class: document.class,
                    test,
                    subject,
                    reference,
                    min_samples: document.min_samples.unwrap_or(200).max(2),
                    min_effect: document
                        .min_effect
                        .unwrap_or_else(|| test.default_min_effect()),
                    max_p_value: document.max_p_value.unwrap_or(0.001),
                    band: document.band.unwrap_or(0.1),
                    confidence,
                    sample_size,
                    bins: document.bins.unwrap_or(10).clamp(2, 100),
                    direction: direction_of(source, &document.direction, Direction::Both)?,
                }))
            }
        }
    }
}

impl Detector {
    /// The aggregate expressions evaluated per group at each tick (a
    /// baseline's series, a forest's features).
    pub fn series(&self) -> Vec<&LocatedExpr> {
        match self {
            Detector::Baseline(baseline) => vec![&baseline.series],
            Detector::Forest(forest) => forest.features.iter().map(|(_, e)| e).collect(),
            Detector::Drift(_) => Vec::new(),
        }
    }

    /// A one-line description, used as the alert's `condition` when the rule has none.
    pub fn describe(&self) -> String {
        match self {
            Detector::Baseline(baseline) => format!(
                "baseline {:?} of {}: |z| > {} (recovers under {})",
                baseline.config.method,
                baseline
                    .series
                    .text
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                baseline.trigger,
                baseline.recover
            )
            .to_lowercase(),
            Detector::Forest(forest) => format!(
                "isolation score of ({}) >= {}",
                forest
                    .features
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                forest.threshold
            ),
            Detector::Drift(drift) => format!(
                "drift {} of {}{}{} against {}: effect >= {}",
                drift.test.name(),
                drift.column,
                drift.class.map(|c| format!("[{c}]")).unwrap_or_default(),
                drift
                    .subject
                    .as_ref()
                    .map(|s| format!(" in {s}"))
                    .unwrap_or_default(),
                match &drift.reference {
                    DriftReference::Segment(name) => format!("segment {name}"),
                    DriftReference::RestOf(column) => format!("the rest of {column}"),
                    DriftReference::Trailing(span) =>
                        format!("its trailing {}", format_span(*span)),
                    DriftReference::Previous(span) =>
                        format!("itself {} earlier", format_span(*span)),
                },
                drift.min_effect
            ),
        }
    }
}

/// What a detector concluded for one group at one tick.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Whether the group holds.
    pub holds: bool,
    /// The value to report (z-score or effect size).
    pub value: f64,
    /// The threshold it was judged against.
    pub threshold: f64,
    /// The measurements.
    pub evidence: Evidence,
}

/// `BaselineGroup::last` before any judgement.
const NO_JUDGEMENT: (f64, f64, f64) = (f64::NAN, f64::NAN, f64::NAN);

/// One group's learned state for a baseline detector.
pub(crate) struct BaselineGroup {
    model: Baseline,
    breached: bool,
    /// Consecutive points judged while breached, none of them learned.
    breached_points: u32,
    /// The last judged point, (value, expected, z), repeated over a gap. Kept
    /// as numbers, not as a [`Finding`] with its strings: per-client rules
    /// hold a million of these.
    /// NaN in its value while there is none (judged values are finite):
    /// an `Option` would cost 8 more bytes per group.
    last: (f64, f64, f64),
    /// The last tick judged: rules sharing this baseline judge a tick once.
    judged: i64,
}

impl BaselineGroup {
    /// A group's baseline. `rule_ticks` is how many ticks the rule has
    /// evaluated before this key's first: past the warm-up, a `new_keys:
    /// zero` key starts from `warmup` learned zeros.
    pub(crate) fn new(detector: &BaselineDetector, tick: i64, rule_ticks: u64) -> Self {
        let mut model = Baseline::new(&detector.config);
        let warmup = detector.config.warmup.max(1);
        if detector.new_keys_from_zero && rule_ticks >= warmup as u64 {
            for _ in 0..warmup {
                model.learn(tick, 0.0);
            }
        }
        BaselineGroup {
            model,
            breached: false,
            breached_points: 0,
            last: NO_JUDGEMENT,
            judged: i64::MIN,
        }
    }

    /// Judges this tick's value of the series, then learns it.
    pub(crate) fn observe(
        &mut self,
        detector: &BaselineDetector,
        tick: i64,
        value: f64,
    ) -> Option<Finding> {
        let repeat = |group: &Self| {
            group
                .last()
                .map(|(value, expected, z)| group.finding(detector, value, expected, z))
        };
        if tick == self.judged {
            return repeat(self);
        }
        self.judged = tick;
        if !value.is_finite() {
            // A gap: nothing learned, nothing judged, the state stays.
            return repeat(self);
        }
        let assessment = self.model.assess(tick, value);
        // An incident is not the new normal: while breached the baseline
        // stops learning, or a 20-minute outage would become normal and
        // resolve itself after eight. A breach that outlasts the baseline's
        // own window is a level shift, and is learned from then on.
        let window = u32::try_from(detector.config.window).unwrap_or(u32::MAX);
        if self.breached && self.breached_points < window {
            self.breached_points += 1;
        } else {
            self.breached_points = 0;
            self.model.learn(tick, value);
        }
        let Some(Assessment { expected, z, .. }) = assessment else {
            self.breached = false;
            self.last = NO_JUDGEMENT;
            return None;
        };
        let oriented = detector.direction.oriented(z);
        self.breached = if self.breached {
            oriented > detector.recover
        } else {
            oriented > detector.trigger
        };
        self.last = (value, expected, z);
        Some(self.finding(detector, value, expected, z))
    }

    /// The last judged point, if any.
    fn last(&self) -> Option<(f64, f64, f64)> {
        (!self.last.0.is_nan()).then_some(self.last)
    }

    fn finding(&self, detector: &BaselineDetector, value: f64, expected: f64, z: f64) -> Finding {
        Finding {
            holds: self.breached,
            value: z,
            threshold: if self.breached {
                detector.recover
            } else {
                detector.trigger
            },
            evidence: Evidence {
                detector: "baseline".into(),
                method: format!("{:?}", detector.config.method).to_lowercase(),
                subject: detector.series.text.trim().to_string(),
                observed: Some(value),
                expected: Some(expected),
                z: Some(z),
                ..Evidence::default()
            },
        }
    }

    /// Approximate bytes held, for memory reporting.
    pub(crate) fn approx_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.model.approx_bytes()
    }
}

/// Judges a subject sample against a reference sample (both sorted ascending).
///
/// With `full_evidence` false, a judgement that cannot hold stops as soon
/// as that is known: KS at a D below the effect size (the exact p-value is
/// most of its cost), Mann–Whitney at a p-value above the bound (the shift
/// and its interval are most of its cost). Its evidence then lacks those
/// parts and a Mann–Whitney value is NaN; a caller about to put the finding
/// in an alert judges again in full.
pub(crate) fn judge_drift(
    detector: &DriftDetector,
    reference_name: &str,
    (subject, reference): (&[f64], &[f64]),
    full_evidence: bool,
) -> Finding {
    let mut evidence = Evidence {
        detector: "drift".into(),
        method: detector.test.name().into(),
        subject: match detector.class {
            Some(class) => format!("{}[{class}]", detector.column),
            None => detector.column.clone(),
        },
        samples: Some(subject.len() as u64),
        reference_samples: Some(reference.len() as u64),
        reference: Some(reference_name.to_string()),
        ..Evidence::default()
    };
    let not_holding = |evidence: Evidence| Finding {
        holds: false,
        value: f64::NAN,
        threshold: detector.min_effect,
        evidence,
    };
    if subject.len() < detector.min_samples || reference.len() < detector.min_samples {
        return not_holding(evidence);
    }
    let (effect, p_value, statistic) = match detector.test {
        DriftTest::Ks => {
            let Some(distance) = stats::KsDistance::between(reference, subject) else {
                return not_holding(evidence);
            };
            let d = distance.statistic;
            if !full_evidence && d < detector.min_effect {
                evidence.statistic = Some(d);
                evidence.effect_size = Some(d);
                return Finding {
                    holds: false,
                    value: d,
                    threshold: detector.min_effect,
                    evidence,
                };
            }
            (d, Some(distance.p_value()), d)
        }
        DriftTest::MannWhitney if !full_evidence => {
            match stats::mann_whitney_p(reference, subject) {
                None => return not_holding(evidence),
                Some((u, p_value)) if p_value > detector.max_p_value => {
                    evidence.statistic = Some(u);
                    evidence.p_value = Some(p_value);
                    return not_holding(evidence);
                }
                Some(_) => {
                    return judge_drift(detector, reference_name, (subject, reference), true)
                }
            }
        }
        DriftTest::MannWhitney => {
            let Some(outcome) = stats::mann_whitney(reference, subject, detector.confidence) else {
                return not_holding(evidence);
            };
            let median = median_of_sorted(reference);
            let scale = median.abs().max(f64::MIN_POSITIVE);
            evidence.shift = Some(outcome.shift);
            evidence.shift_interval = Some([outcome.shift_low, outcome.shift_high]);
            // Kayenta's rule: the whole interval lies beyond the band.
            let band = detector.band * scale;
            let beyond = match detector.direction {
                Direction::Up => outcome.shift_low > band,
                Direction::Down => outcome.shift_high < -band,
                Direction::Both => outcome.shift_low > band || outcome.shift_high < -band,
            };
            let effect = outcome.shift / scale;
            evidence.statistic = Some(outcome.u);
            evidence.p_value = Some(outcome.p_value);
            evidence.effect_size = Some(effect);
            let holds = beyond
                && outcome.p_value <= detector.max_p_value
                && detector.direction.oriented(effect) >= detector.min_effect;
            return Finding {
                holds,
                value: effect,
                threshold: detector.min_effect,
                evidence,
            };
        }
        DriftTest::ChiSquare => {
            let (reference_counts, subject_counts) = category_counts(reference, subject);
            match stats::chi_square_two_sample(&reference_counts, &subject_counts) {
                Some(outcome) => (outcome.cramers_v, Some(outcome.p_value), outcome.statistic),
                None => return not_holding(evidence),
            }
        }
        DriftTest::Psi | DriftTest::JensenShannon | DriftTest::Hellinger => {
            let edges = stats::quantile_edges(reference, detector.bins);
            let reference_counts = stats::bin_counts(reference, &edges);
            let subject_counts = stats::bin_counts(subject, &edges);
            let value = match detector.test {
                DriftTest::Psi => stats::psi(&reference_counts, &subject_counts),
                DriftTest::JensenShannon => {
                    stats::jensen_shannon(&reference_counts, &subject_counts)
                }
                _ => stats::hellinger(&reference_counts, &subject_counts),
            };
            (value, None, value)
        }
        DriftTest::Wasserstein => {
            let distance = stats::wasserstein_1(reference, subject);
            let spread = standard_deviation(reference).max(f64::MIN_POSITIVE);
            (distance / spread, None, distance)
        }
    };
    evidence.statistic = Some(statistic);
    evidence.p_value = p_value;
    evidence.effect_size = Some(effect);
    let significant = p_value.is_none_or(|p| p <= detector.max_p_value);
    Finding {
        holds: significant && effect >= detector.min_effect,
        value: effect,
        threshold: detector.min_effect,
        evidence,
    }
}

/// `1d`, `6h`, `90m`, `45s`: the largest whole unit.
pub(crate) fn format_span(nanos: i64) -> String {
    let seconds = nanos / inferwatch_core::NANOS_PER_SECOND;
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds % size == 0 && seconds >= size {
            return format!("{}{unit}", seconds / size);
        }
    }
    format!("{seconds}s")
}

pub(crate) fn median_of_sorted(values: &[f64]) -> f64 {
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn standard_deviation(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Counts per distinct value (categories), aligned across both samples.
fn category_counts(reference: &[f64], subject: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut categories: Vec<f64> = reference.iter().chain(subject).copied().collect();
    categories.sort_by(f64::total_cmp);
    categories.dedup();
    let count = |sample: &[f64]| -> Vec<f64> {
        let mut counts = vec![0.0; categories.len()];
        for value in sample {
            if let Ok(index) = categories.binary_search_by(|c| c.total_cmp(value)) {
                counts[index] += 1.0;
            }
        }
        counts
    };
    (count(reference), count(subject))
}

/// One rule's online isolation forest over entity feature vectors.
///
/// The `rcf3` crate's online isolation forest does the learning; this wraps
/// it with the feature transform, warm-up, the learn-per-tick budget and the
/// threshold's calibration.
///
/// A fixed score means different things on different fleets: where clients
/// are alike, normal ones score near 0.45; where they are not, many honest
/// ones pass 0.6. With `false_findings_per_day`, the threshold is set each
/// tick to the quantile of the last 24 hours' scores (a mergeable sketch per
/// hour) that `target / (entities scored per day)` of them pass. The scores
/// of an attacker count too; they move the quantile only once they outnumber
/// the day's budget, and the floor below keeps it from dropping to noise.
/// The rule's `threshold` stays as a floor, and judges alone until the day's
/// scores are enough to expect a few past the calibrated quantile.
pub(crate) struct EntityForest {
    forest: rcf3::OnlineIForest,
    learned: u64,
    /// Vectors of this tick waiting to be learned, with their entity keys.
    pending: Vec<(u64, Vec<f32>)>,
    /// The scores given in each of the last 24 hours (by tick time).
    hourly_scores: std::collections::VecDeque<(i64, QuantileSketch)>,
    /// Entities scored this tick, and per tick on average (an EWMA).
    scored_this_tick: u64,
    scored_per_tick: f64,
    /// Ticks per day, for the calibration.
    ticks_per_day: f64,
    /// The threshold this tick is judged against.
    threshold: f64,
}

/// Hours of scores the calibration reads (a day: the daily cycle included).
const CALIBRATION_HOURS: i64 = 24;
/// Scores expected past the calibrated threshold before it is trusted.
const CALIBRATION_MIN_TAIL: f64 = 4.0;
/// Nanoseconds in an hour.
const HOUR_NS: i64 = 3_600_000_000_000;
/// Weight of each tick in the average of entities scored per tick.
const SCORED_PER_TICK_WEIGHT: f64 = 0.05;

impl EntityForest {
    pub(crate) fn new(detector: &ForestDetector, every: i64) -> Result<Self, DetectError> {
        let forest = rcf3::OnlineIForest::builder(detector.features.len())
            .num_trees(detector.trees)
            .window_size(detector.memory)
            .seed(detector.seed)
            .build()
            .map_err(|error| DetectError::Internal(format!("isolation forest: {error}")))?;
        Ok(EntityForest {
            forest,
            learned: 0,
            pending: Vec::new(),
            hourly_scores: std::collections::VecDeque::new(),
            scored_this_tick: 0,
            scored_per_tick: 0.0,
            ticks_per_day: 86_400e9 / every.max(1) as f64,
            threshold: detector.threshold,
        })
    }

    /// The threshold the current tick is judged against.
    pub(crate) fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Scores one entity's raw feature values against what was learned
    /// before this tick, and queues the vector for learning.
    pub(crate) fn observe(
        &mut self,
        detector: &ForestDetector,
        entity_hash: u64,
        tick: i64,
        raw: &[f64],
    ) -> Option<Finding> {
        // Features span orders of magnitude (rates, tokens, ratios): a signed
        // log keeps a heavy-tailed one from squeezing the others into one cut.
        let point: Vec<f32> = raw
            .iter()
            .map(|value| {
                if value.is_finite() {
                    (value.signum() * value.abs().ln_1p()) as f32
                } else {
                    0.0
                }
            })
            .collect();
        let key = entity_tick_hash(entity_hash, tick);
        let score = (self.learned >= detector.warmup as u64)
            .then(|| self.forest.score(&point).ok())
            .flatten();
        // An entity judged anomalous is not learned: otherwise a sustained
        // attack teaches the forest that it is normal and the alert fades.
        if score.is_none_or(|score| score < self.threshold) {
            self.pending.push((key, point));
        }
        let score = score?;
        self.scored_this_tick += 1;
        let hour = tick.div_euclid(HOUR_NS);
        if self
            .hourly_scores
            .back()
            .is_none_or(|(last, _)| *last != hour)
        {
            self.hourly_scores
                .push_back((hour, QuantileSketch::default()));
        }
        while self
            .hourly_scores
            .front()
            .is_some_and(|(first, _)| hour - first >= CALIBRATION_HOURS)
        {
            self.hourly_scores.pop_front();
        }
        if let Some((_, sketch)) = self.hourly_scores.back_mut() {
            sketch.add(score);
        }
        Some(Finding {
            holds: score >= self.threshold,
            value: score,
            threshold: self.threshold,
            evidence: Evidence {
                detector: "forest".into(),
                method: "online_isolation_forest".into(),
                subject: detector
                    .features
                    .iter()
                    .zip(raw)
                    .map(|((name, _), value)| format!("{name}={}", round_for_display(*value)))
                    .collect::<Vec<_>>()
                    .join(", "),
                score: Some(score),
                ..Evidence::default()
            },
        })
    }

    /// Learns this tick's queued vectors: the `learn_per_tick` with the
    /// lowest (entity, tick) hashes, in hash order, so the forest evolves the
    /// same way whatever order the entities were first seen in.
    pub(crate) fn end_tick(&mut self, detector: &ForestDetector) {
        let mut pending = std::mem::take(&mut self.pending);
        if pending.len() > detector.learn_per_tick {
            pending.select_nth_unstable_by(detector.learn_per_tick - 1, |a, b| a.0.cmp(&b.0));
            pending.truncate(detector.learn_per_tick);
        }
        pending.sort_unstable_by_key(|entry| entry.0);
        for (_, point) in &pending {
            if self.forest.update(point).is_ok() {
                self.learned += 1;
            }
        }
        pending.clear();
        self.pending = pending;
        if self.scored_this_tick > 0 {
            let scored = self.scored_this_tick as f64;
            self.scored_per_tick = if self.scored_per_tick == 0.0 {
                scored
            } else {
                self.scored_per_tick + SCORED_PER_TICK_WEIGHT * (scored - self.scored_per_tick)
            };
        }
        self.scored_this_tick = 0;
        if let Some(rate) = detector.false_findings_per_day {
            self.threshold = self.calibrated_threshold(detector, rate);
        }
    }

    /// See the type's documentation.
    fn calibrated_threshold(&self, detector: &ForestDetector, false_findings_per_day: f64) -> f64 {
        let floor = detector.threshold;
        let judged_per_day = self.scored_per_tick.max(1.0) * self.ticks_per_day;
        let rate = (false_findings_per_day / judged_per_day).clamp(1e-9, 1.0);
        let mut scores = QuantileSketch::default();
        for (_, sketch) in &self.hourly_scores {
            scores.merge(sketch);
        }
        // Until a few scores are expected past it, a quantile that far out
        // is a guess: the floor judges.
        if (scores.count() as f64) * rate < CALIBRATION_MIN_TAIL {
            return floor;
        }
        scores.quantile(1.0 - rate).clamp(floor, 1.0)
    }

    /// Vectors learned so far.
    pub(crate) fn learned(&self) -> u64 {
        self.learned
    }
}

fn entity_tick_hash(entity_hash: u64, tick: i64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&tick.to_le_bytes());
    bytes[8..].copy_from_slice(&entity_hash.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

fn round_for_display(value: f64) -> f64 {
    if !value.is_finite() || value == 0.0 {
        return value;
    }
    let digits = 4 - value.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits.clamp(0, 12));
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Rule;
    use std::path::Path;

    fn forest_rule(calibration: &str) -> ForestDetector {
        let text = format!(
            "id: f\ntitle: f\nseverity: info\ngroup_by: [client_id]\nwindow: 5m\nevery: 1m\n\
             condition: count() >= 1\ndetector:\n  forest:\n    features:\n      \
             a: count()\n      b: avg(latency_ms)\n      c: avg(input_tokens)\n    \
             threshold: 0.6\n    memory: 512\n    warmup: 256\n{calibration}"
        );
        match Rule::from_yaml_str(Path::new("f.yaml"), &text)
            .unwrap()
            .detector
        {
            Some(Detector::Forest(forest)) => forest,
            _ => panic!("a forest rule"),
        }
    }

    /// A deterministic pseudo-random number in [0, 1).
    fn uniform(seed: u64) -> f64 {
        let mixed = xxhash_rust::xxh3::xxh3_64(&seed.to_le_bytes());
        (mixed >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Findings per 1,000 scored entity-ticks, once a day's worth of
    /// scores can calibrate, over a fleet of 60 honest clients with
    /// heavy-tailed features (Pareto, alpha 0.7: every tick some honest
    /// client looks unlike the rest, as on a fleet of mixed workloads), and
    /// the threshold at the end.
    fn judge_heavy_tailed_fleet(detector: &ForestDetector) -> (f64, f64) {
        let mut forest = EntityForest::new(detector, 60_000_000_000).unwrap();
        let (mut scored, mut findings) = (0u64, 0u64);
        for tick in 0..600i64 {
            for entity in 0..60u64 {
                let draw = |feature: u64| uniform((tick as u64) << 32 | entity << 8 | feature);
                let features: Vec<f64> = (0..3)
                    .map(|f| 100.0 * (1.0 - draw(f)).powf(-1.0 / 0.7))
                    .collect();
                let finding = forest.observe(detector, entity, tick * 60_000_000_000, &features);
                // 24 a day over 60 entities a minute needs ~15,000 scores
                // to resolve: the calibration is on from about tick 240.
                if let (true, Some(finding)) = (tick >= 300, finding) {
                    scored += 1;
                    findings += u64::from(finding.holds);
                }
            }
            forest.end_tick(detector);
        }
        (
            1_000.0 * findings as f64 / scored as f64,
            forest.threshold(),
        )
    }

    #[test]
    fn a_calibrated_forest_holds_its_false_finding_rate_where_a_fixed_score_does_not() {
        let (fixed_rate, fixed_threshold) = judge_heavy_tailed_fleet(&forest_rule(""));
        let calibrated = forest_rule("    false_findings_per_day: 24\n");
        let (calibrated_rate, calibrated_threshold) = judge_heavy_tailed_fleet(&calibrated);
        // The target: 24 a day over 60 entities a minute, 0.28 per 1,000.
        let target = 1_000.0 * 24.0 / (60.0 * 1_440.0);
        assert_eq!(fixed_threshold, 0.6);
        assert!(calibrated_threshold > 0.6, "{calibrated_threshold}");
        assert!(fixed_rate > 4.0 * target, "fixed: {fixed_rate} per 1,000");
        assert!(
            calibrated_rate < 2.0 * target,
            "calibrated: {calibrated_rate} per 1,000 (target {target})"
        );
    }
}

#[cfg(test)]
mod drift_judgement_tests {
    use super::*;
    use crate::rule::Rule;
    use std::path::Path;

    /// The shipped source-drift shape: KS, D >= 0.2, p <= 0.001, 200 a side.
    const KS: &str = "test: ks\n    reference: { rest_of: source_id }\n    min_samples: 200\n    \
                      min_effect: 0.2\n    max_p_value: 0.001\n";
    /// The shipped canary judge's shape: Mann–Whitney, up, band 0.1, p <= 0.01.
    const MANN_WHITNEY: &str = "test: mann_whitney\n    subject: canary\n    \
                                reference: { segment: baseline }\n    direction: up\n    \
                                band: 0.1\n    confidence: 0.98\n    min_effect: 0.1\n    \
                                max_p_value: 0.01\n    min_samples: 100\n";

    /// Deterministic uniform numbers in [0, 1) (xorshift64).
    fn uniform_from(mut state: u64) -> impl FnMut() -> f64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn drift_rule(test: &str) -> DriftDetector {
        let text = format!(
            "id: d\ntitle: d\nseverity: high\ngroup_by: [model_id, source_id]\n\
             window: 5m\nevery: 1m\nsegments:\n  canary: ab_group == \"canary\"\n  \
             baseline: ab_group == \"baseline\"\ndetector:\n  drift:\n    \
             column: confidence\n    {test}"
        );
        match Rule::from_yaml_str(Path::new("d.yaml"), &text)
            .unwrap()
            .detector
        {
            Some(Detector::Drift(drift)) => drift,
            _ => panic!("a drift rule"),
        }
    }

    /// The judgement that stops at D below the effect size decides exactly
    /// as the full one, with the same value; only its p-value is left out,
    /// and only when it cannot hold.
    #[test]
    fn a_ks_judgement_below_the_effect_size_decides_as_the_full_one() {
        let detector = drift_rule(KS);
        let (mut short, mut full_only) = (0, 0);
        let mut uniform = uniform_from(0x2545_f491_4f6c_dd1d);
        for case in 0..400 {
            let shift = (case % 40) as f64 / 100.0;
            let (n, m) = (150 + case % 7 * 60, 200 + case % 5 * 150);
            let reference: Vec<f64> = (0..n).map(|_| uniform()).collect();
            let subject: Vec<f64> = (0..m).map(|_| uniform() * (1.0 - shift) + shift).collect();
            let cheap = judge_drift(&detector, "rest", (&subject, &reference), false);
            let full = judge_drift(&detector, "rest", (&subject, &reference), true);
            assert_eq!(cheap.holds, full.holds, "case {case}");
            assert_eq!(cheap.value.to_bits(), full.value.to_bits(), "case {case}");
            assert_eq!(
                cheap.evidence.statistic.map(f64::to_bits),
                full.evidence.statistic.map(f64::to_bits)
            );
            if full.evidence.p_value.is_none() {
                // Too few values: neither judges.
                assert!(cheap.evidence.p_value.is_none() && !full.holds);
            } else if cheap.evidence.p_value.is_none() {
                assert!(
                    !full.holds && full.value < detector.min_effect,
                    "case {case}"
                );
                short += 1;
            } else {
                assert_eq!(cheap.evidence.p_value, full.evidence.p_value);
                full_only += 1;
            }
        }
        assert!(
            short > 50 && full_only > 50,
            "{short} short, {full_only} full"
        );
    }

    /// A Mann–Whitney judgement that stops at a p-value above the bound
    /// decides exactly as the full one, and carries the same U and p.
    #[test]
    fn a_mann_whitney_judgement_above_the_p_bound_decides_as_the_full_one() {
        let detector = drift_rule(MANN_WHITNEY);
        let (mut short, mut full_only) = (0, 0);
        let mut uniform = uniform_from(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let shift = (case % 30) as f64 / 100.0;
            let (n, m) = (80 + case % 7 * 40, 100 + case % 5 * 90);
            let reference: Vec<f64> = (0..n).map(|_| 100.0 + 50.0 * uniform()).collect();
            let subject: Vec<f64> = (0..m)
                .map(|_| (100.0 + 50.0 * uniform()) * (1.0 + shift))
                .collect();
            let cheap = judge_drift(&detector, "baseline", (&subject, &reference), false);
            let full = judge_drift(&detector, "baseline", (&subject, &reference), true);
            assert_eq!(cheap.holds, full.holds, "case {case}");
            assert_eq!(cheap.evidence.p_value, full.evidence.p_value, "case {case}");
            assert_eq!(
                cheap.evidence.statistic, full.evidence.statistic,
                "case {case}"
            );
            if full.evidence.p_value.is_none() {
                continue;
            }
            if cheap.evidence.shift.is_none() {
                assert!(!full.holds && full.evidence.p_value > Some(detector.max_p_value));
                short += 1;
            } else {
                assert_eq!(cheap.value.to_bits(), full.value.to_bits(), "case {case}");
                assert_eq!(cheap.evidence.shift_interval, full.evidence.shift_interval);
                full_only += 1;
            }
        }
        assert!(
            short > 30 && full_only > 30,
            "{short} short, {full_only} full"
        );
    }
}
