//! Streaming anomaly scores in [0, 1] for any univariate series.
//!
//! Used to judge detectors on external benchmark series (NAB-style metric
//! series with irregular steps, flat stretches and huge outliers). Each score
//! uses only the current point and earlier ones, so scoring a prefix gives
//! the same scores as the prefix of a full run.
//!
//! Detectors ([`Detector`]):
//!
//! * `ewma` — an EWMA [`Baseline`];
//! * `seasonal` — hour-of-day and hour-of-week [`Baseline`]s run side by
//!   side; each point is judged by the one whose recent absolute prediction
//!   error is lower (hour-of-week must beat hour-of-day by 10 %), unless the
//!   config names one (`seasonal: hour_of_day`);
//! * `forest` — a random cut forest ([`rcf3::Forest`], fixed seed) over
//!   shingles of the last `shingle_size` values. A new value is scored as it
//!   is but learned winsorised at 12 spreads of an EWMA baseline, so one huge
//!   outlier cannot stretch the trees' bounding boxes and hide later
//!   anomalies. The raw score is calibrated
//!   against the running level and spread of past log raw scores (an EWMA
//!   baseline of them), and only scores above the usual count;
//! * `auto` — the mean of the baseline score and the forest score, raised to
//!   the larger of the two when both agree that the point is unusual (see
//!   [`Scorer`]), then to a stuck-sensor score (a value repeated exactly
//!   more often than the series ever repeats itself; such repeats are not
//!   learned) and to a drift score (the recent mean of the baseline's z,
//!   against its own history). The baseline is whichever of ewma, hour-of-day
//!   and hour-of-week predicts the series best so far. Nothing needs
//!   per-series tuning. `bench/run univariate` measures it against River,
//!   ADTK and scikit-learn on a labelled corpus.
//!
//! A baseline's `z` becomes a score with [`z_to_score`]:
//! `e² / (e² + 16)` with `e = max(|z| − 2, 0)` — 0 within two spreads, 0.5 at
//! six, 0.8 at ten, 0.98 at thirty-five; it approaches 1 without saturating,
//! so bigger anomalies still rank above smaller ones. Scores are 0 for the
//! first `warmup` finite points.
//!
//! ## Input ([`score_csv`])
//!
//! CSV with a header row naming a `timestamp` and a `value` column (any
//! case, any order; other columns are allowed and ignored). Output is
//! `timestamp,value,anomaly_score`, one row per input row in the same order,
//! with the timestamp and value echoed as written. Timestamps may be RFC 3339,
//! `YYYY-MM-DD HH:MM:SS[.fff]` (NAB's format, read as UTC) or epoch seconds /
//! milliseconds (the unit is guessed from the magnitude).
//!
//! Bad input never panics. The policy:
//!
//! | input | result |
//! | --- | --- |
//! | empty file | error, line 1: `empty input` |
//! | missing header, or no `timestamp` / `value` column | error, line 1 |
//! | a row with too few fields | error naming the line |
//! | a timestamp that does not parse | error naming the line |
//! | a value that is not a number (`abc`, `1.2.3`) | error naming the line |
//! | an empty, `NaN` or infinite value | scored 0, not learned, counted in [`ScoreSummary::skipped`] |
//! | a timestamp earlier than the previous row's | scored in file order, with an [`OrderWarning`] |
//! | a timestamp equal to the previous row's | scored in file order, with an [`OrderWarning`] |
//! | a header and no rows | a header and no rows out |
//!
//! Errors read `FILE:LINE: message` ([`DetectError::Input`]).
//!
//! ## Rows out of time order
//!
//! Public series (NAB's among them) sometimes step back in time, so
//! disorder is reported, never refused: each row is compared with the row
//! before it in the file, and one whose timestamp is earlier than or equal to
//! that row's is scored like any other, as the next point in file order (no
//! re-sorting, which would need look-ahead and break the one-row-out-per-row-in,
//! same-order output). Its own timestamp still picks its seasonal slot. No
//! detector uses the step between timestamps (the baselines count points, the
//! forest sees values only), so a zero or negative step cannot divide by zero
//! or go negative anywhere. [`score_csv_with_warnings`] reports the first
//! [`MAX_ORDER_WARNINGS`] such rows as they are read; [`ScoreSummary`] counts
//! them all. Rows after a jump back are compared with their own predecessor
//! only, so a block that overlaps earlier times gives one warning, at the jump.
//!
//! ## Config
//!
//! An optional YAML file of [`ScoreConfig`] fields, unknown fields rejected,
//! errors at `FILE:LINE:COLUMN`:
//!
//! ```yaml
//! warmup: 64          # points scored 0 while the detectors learn
//! half_life: 60       # EWMA half-life in points (per slot for seasonal)
//! seasonal: auto      # auto | hour_of_day | hour_of_week
//! shingle_size: 8     # forest: values per shingle
//! trees: 50           # forest: number of trees
//! tree_capacity: 256  # forest: points sampled per tree
//! seed: 42            # forest: random seed
//! ```

use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use marked_yaml::Spanned;
use serde::Deserialize;

use crate::baseline::{Baseline, BaselineConfig, BaselineMethod};
use crate::rule::{yaml_error, RuleSource};
use crate::DetectError;

/// Default number of points scored 0 while the detectors learn.
pub const DEFAULT_SCORE_WARMUP: usize = 64;

/// Detector parameters, read from an optional YAML file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreConfig {
    /// Finite points scored 0 at the start.
    pub warmup: usize,
    /// EWMA half-life in points (per slot for the seasonal profiles).
    pub half_life: usize,
    /// Which seasonal profile `seasonal` uses.
    pub seasonal: SeasonalChoice,
    /// Values per forest shingle.
    pub shingle_size: usize,
    /// Trees in the forest.
    pub trees: usize,
    /// Points sampled per tree.
    pub tree_capacity: usize,
    /// Seed of the forest's random cuts.
    pub seed: u64,
}

impl Default for ScoreConfig {
    fn default() -> ScoreConfig {
        ScoreConfig {
            warmup: DEFAULT_SCORE_WARMUP,
            half_life: 60,
            seasonal: SeasonalChoice::Auto,
            shingle_size: 8,
            trees: 50,
            tree_capacity: 256,
            seed: 42,
        }
    }
}

/// Which seasonal profile the `seasonal` detector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeasonalChoice {
    /// The one that predicts the series better so far.
    Auto,
    /// 24 hour-of-day slots.
    HourOfDay,
    /// 168 hour-of-week slots.
    HourOfWeek,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreConfigDocument {
    #[serde(default)]
    warmup: Option<Spanned<usize>>,
    #[serde(default)]
    half_life: Option<Spanned<usize>>,
    #[serde(default)]
    seasonal: Option<SeasonalChoice>,
    #[serde(default)]
    shingle_size: Option<Spanned<usize>>,
    #[serde(default)]
    trees: Option<Spanned<usize>>,
    #[serde(default)]
    tree_capacity: Option<Spanned<usize>>,
    #[serde(default)]
    seed: Option<u64>,
}

impl ScoreConfig {
    /// Reads a config file.
    pub fn from_path(path: &Path) -> Result<ScoreConfig, DetectError> {
        let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ScoreConfig::from_yaml_str(path, &text)
    }

    /// Reads a config from YAML text; `path` is used in error messages.
    pub fn from_yaml_str(path: &Path, text: &str) -> Result<ScoreConfig, DetectError> {
        let config_error = |line: usize, column: usize, message: String| DetectError::Config {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
        // An empty file is a config with every default.
        if text.trim().is_empty() {
            return Ok(ScoreConfig::default());
        }
        let document: ScoreConfigDocument = marked_yaml::from_yaml(0, text).map_err(|error| {
            let source = RuleSource {
                path: path.to_path_buf(),
                text: Arc::from(text),
            };
            match yaml_error(&source, &error) {
                DetectError::Rule {
                    line,
                    column,
                    message,
                    ..
                } => config_error(line, column, message),
                other => other,
            }
        })?;
        let defaults = ScoreConfig::default();
        let ranged = |field: &Option<Spanned<usize>>,
                      name: &str,
                      default: usize,
                      low: usize,
                      high: usize|
         -> Result<usize, DetectError> {
            let Some(field) = field else {
                return Ok(default);
            };
            let value = **field;
            if (low..=high).contains(&value) {
                return Ok(value);
            }
            let (line, column) = field
                .span()
                .start()
                .map(|mark| (mark.line(), mark.column()))
                .unwrap_or((1, 1));
            Err(config_error(
                line,
                column,
                format!("{name} must be between {low} and {high}, got {value}"),
            ))
        };
        Ok(ScoreConfig {
            warmup: ranged(&document.warmup, "warmup", defaults.warmup, 0, 1_000_000)?,
            half_life: ranged(
                &document.half_life,
                "half_life",
                defaults.half_life,
                1,
                1_000_000,
            )?,
            seasonal: document.seasonal.unwrap_or(defaults.seasonal),
            shingle_size: ranged(
                &document.shingle_size,
                "shingle_size",
                defaults.shingle_size,
                1,
                64,
            )?,
            trees: ranged(&document.trees, "trees", defaults.trees, 1, 1_000)?,
            tree_capacity: ranged(
                &document.tree_capacity,
                "tree_capacity",
                defaults.tree_capacity,
                16,
                4_096,
            )?,
            seed: document.seed.unwrap_or(defaults.seed),
        })
    }
}

/// A detector name, as given to `inferwatch score --detector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// An EWMA baseline.
    Ewma,
    /// An hour-of-day or hour-of-week profile.
    Seasonal,
    /// A random cut forest over shingles.
    Forest,
    /// The ensemble.
    Auto,
}

impl Detector {
    /// Every detector name.
    pub const NAMES: [&'static str; 4] = ["ewma", "seasonal", "forest", "auto"];

    /// Reads a detector name.
    pub fn from_name(name: &str) -> Result<Detector, DetectError> {
        match name {
            "ewma" => Ok(Detector::Ewma),
            "seasonal" => Ok(Detector::Seasonal),
            "forest" => Ok(Detector::Forest),
            "auto" => Ok(Detector::Auto),
            other => Err(DetectError::Invalid(format!(
                "unknown detector '{other}', expected one of: {}",
                Detector::NAMES.join(", ")
            ))),
        }
    }
}

/// Maps a z-like statistic to [0, 1]: `e² / (e² + 16)`, `e = max(|z| − 2, 0)`.
/// NaN maps to 0.
pub fn z_to_score(z: f64) -> f64 {
    let excess = (z.abs() - 2.0).max(0.0);
    if excess.is_nan() {
        return 0.0;
    }
    if excess.is_infinite() {
        return 1.0;
    }
    let squared = excess * excess;
    squared / (squared + 16.0)
}

/// Several baselines of one series, and the one that predicts it best.
struct BaselineChoice {
    candidates: Vec<Candidate>,
}

struct Candidate {
    baseline: Baseline,
    /// EWMA of the absolute prediction error.
    error: f64,
    /// Another candidate is chosen over this one only when its error is below
    /// this fraction of this one's: simpler models win ties.
    margin: f64,
}

/// Weight of one point in a candidate's running prediction error.
const ERROR_WEIGHT: f64 = 0.01;

impl BaselineChoice {
    fn new(methods: &[BaselineMethod], config: &ScoreConfig) -> BaselineChoice {
        let candidates = methods
            .iter()
            .map(|method| Candidate {
                baseline: Baseline::new(&BaselineConfig {
                    method: *method,
                    // The scorer has its own warm-up; the baselines only need enough
                    // points to have a spread.
                    warmup: config.warmup.clamp(2, 30),
                    window: config.half_life,
                }),
                error: 0.0,
                margin: if *method == BaselineMethod::HourOfWeek {
                    0.9
                } else {
                    1.0
                },
            })
            .collect();
        BaselineChoice { candidates }
    }

    /// The chosen candidate's z for `value`, then learns it everywhere
    /// (unless `learn` is false).
    fn score_and_learn(&mut self, at: i64, value: f64, learn: bool) -> Option<f64> {
        let mut best: Option<(usize, f64)> = None;
        for (index, candidate) in self.candidates.iter().enumerate() {
            let better = match best {
                None => true,
                Some((chosen, _)) => {
                    candidate.error < candidate.margin * self.candidates[chosen].error
                }
            };
            if better {
                best = Some((index, candidate.error));
            }
        }
        let chosen = best.map(|(index, _)| index).unwrap_or(0);
        let z = self.candidates[chosen]
            .baseline
            .assess(at, value)
            .map(|assessment| assessment.z);
        if !learn {
            return z;
        }
        for candidate in &mut self.candidates {
            if let Some(assessment) = candidate.baseline.assess(at, value) {
                // Errors beyond a few spreads are capped so a spike does not decide the choice.
                let error = (value - assessment.expected)
                    .abs()
                    .min(4.0 * assessment.spread);
                candidate.error += ERROR_WEIGHT * (error - candidate.error);
            }
            candidate.baseline.learn(at, value);
        }
        z
    }
}

/// A random cut forest over shingles, with a calibrated score.
struct ForestScorer {
    forest: rcf3::Forest,
    shingle: Vec<f32>,
    shingle_size: usize,
    values_seen: usize,
    /// Values are fed relative to the first one, so f32 keeps their precision.
    origin: Option<f64>,
    /// Learned level and spread of past log raw scores.
    calibration: Baseline,
    /// Level and spread of the values, to winsorise what the forest sees.
    guard: Baseline,
}

/// Values are learned by the forest winsorised at this many spreads from an EWMA
/// baseline: one huge outlier would otherwise stretch every tree's bounding
/// box so far that later, ordinary anomalies look normal.
const FOREST_CLAMP_SPREADS: f64 = 12.0;

impl ForestScorer {
    fn new(config: &ScoreConfig) -> Result<ForestScorer, DetectError> {
        // Shingling is done here: rcf3's internal shingling scores a base
        // observation by overwriting the newest value instead of shifting it in.
        let forest = rcf3::Forest::builder(config.shingle_size)
            .shingle_size(1)
            .internal_shingling(false)
            .num_trees(config.trees)
            .capacity(config.tree_capacity)
            .output_after(config.tree_capacity / 8)
            .seed(config.seed)
            .build()
            .map_err(|error| DetectError::Invalid(format!("invalid forest settings: {error}")))?;
        Ok(ForestScorer {
            forest,
            shingle: Vec::with_capacity(config.shingle_size),
            shingle_size: config.shingle_size,
            values_seen: 0,
            origin: None,
            calibration: Baseline::new(&BaselineConfig {
                method: BaselineMethod::Ewma,
                warmup: 16,
                window: 200,
            }),
            guard: Baseline::new(&BaselineConfig {
                method: BaselineMethod::Ewma,
                warmup: 16,
                window: config.half_life,
            }),
        })
    }

    /// The calibrated score of `value` (0 until the forest is ready), then
    /// learns it (unless `learn` is false: then nothing changes, not even
    /// the shingle).
    fn score_and_learn(&mut self, at: i64, value: f64, learn: bool) -> Result<f64, DetectError> {
        let origin = *self.origin.get_or_insert(value);
        if !learn {
            if self.shingle.len() < self.shingle_size || !self.forest.is_ready() {
                return Ok(0.0);
            }
            let mut query = self.shingle[1..].to_vec();
            query.push((value - origin) as f32);
            let raw = self
                .forest
                .score(&query)
                .map_err(|error| DetectError::Internal(format!("forest: {error}")))?;
            return Ok(self
                .calibration
                .assess(at, raw.max(1e-6).ln())
                .map_or(0.0, |assessment| z_to_score(assessment.z.max(0.0))));
        }
        let fed = match self.guard.assess(at, value) {
            Some(assessment) => {
                let limit = FOREST_CLAMP_SPREADS * assessment.spread;
                let (low, high) = (assessment.expected - limit, assessment.expected + limit);
                // Values near f64::MAX overflow the guard baseline (an
                // infinite spread gives inf - inf = NaN bounds) and
                // f64::clamp panics on NaN bounds: feed such a value as it
                // is (issue 16 fuzzing, issue_16_fuzz_score_csv_huge_values).
                if low <= high {
                    value.clamp(low, high)
                } else {
                    value
                }
            }
            None => value,
        };
        self.guard.learn(at, value);
        if self.shingle.len() == self.shingle_size {
            self.shingle.remove(0);
        }
        self.shingle.push((fed - origin) as f32);
        self.values_seen += 1;
        if self.shingle.len() < self.shingle_size {
            return Ok(0.0);
        }
        let internal = |error: rcf3::RcfError| DetectError::Internal(format!("forest: {error}"));
        let mut score = 0.0;
        if self.forest.is_ready() {
            // Scored as it is, learned winsorised.
            let mut query = self.shingle.clone();
            query[self.shingle_size - 1] = (value - origin) as f32;
            let raw = self.forest.score(&query).map_err(internal)?;
            let log_raw = raw.max(1e-6).ln();
            if let Some(assessment) = self.calibration.assess(at, log_raw) {
                score = z_to_score(assessment.z.max(0.0));
            }
            self.calibration.learn(at, log_raw);
        }
        self.forest.update(&self.shingle).map_err(internal)?;
        Ok(score)
    }
}

/// A stuck sensor: the same value, exactly, several times running.
///
/// Baselines and the forest judge a value by its size, and a value that stops
/// changing stays inside its usual range, so neither sees a flatline (the
/// corpus in `bench/univariate` found them 0.11 F1 on flatlines). This
/// detector learns how often a value repeats the previous one exactly, `p`,
/// and scores a run of `k` repeats by its surprise `k · −ln p`, less `ln n`
/// for the `n` places a run could have started (so long noisy series do not
/// fire by chance). The surprise `s` becomes `z = √(2s)` (a normal tail
/// with that probability) and then a score with [`z_to_score`]. `p` is
/// frozen when a run starts: the run must not teach that it is normal while
/// it is being judged. A run that starts with fewer than
/// [`STUCK_MIN_HISTORY`] pairs seen (a series flat from the start) scores 0.
struct StuckDetector {
    previous: Option<f64>,
    /// Decayed count of consecutive pairs, and of pairs that were equal.
    pairs: f64,
    repeats: f64,
    /// Repeats in the current run, and the surprise of one repeat at its start.
    run: u32,
    run_surprise: f64,
    run_correction: f64,
}

/// Memory of the repeat rate: each pair's weight decays by this factor per pair.
const STUCK_DECAY: f64 = 1.0 - 1.0 / 2000.0;
/// Pairs seen before a run can be judged.
const STUCK_MIN_HISTORY: f64 = 64.0;

impl StuckDetector {
    fn new() -> StuckDetector {
        StuckDetector {
            previous: None,
            pairs: 0.0,
            repeats: 0.0,
            run: 0,
            run_surprise: 0.0,
            run_correction: 0.0,
        }
    }

    /// The score of `value`, then learns it.
    fn score_and_learn(&mut self, value: f64) -> f64 {
        let Some(previous) = self.previous.replace(value) else {
            return 0.0;
        };
        let repeat = value == previous;
        if repeat && self.run == 0 {
            if self.pairs >= STUCK_MIN_HISTORY {
                // Half a repeat and one pair of prior: p is never 0 or 1.
                let p = (self.repeats + 0.5) / (self.pairs + 1.0);
                self.run_surprise = -p.ln();
                self.run_correction = self.pairs.ln();
            } else {
                self.run_surprise = 0.0;
                self.run_correction = 0.0;
            }
        }
        self.run = if repeat { self.run + 1 } else { 0 };
        self.pairs = self.pairs * STUCK_DECAY + 1.0;
        self.repeats = self.repeats * STUCK_DECAY + f64::from(u8::from(repeat));
        if self.run == 0 {
            return 0.0;
        }
        let surprise = f64::from(self.run) * self.run_surprise - self.run_correction;
        if surprise <= 0.0 {
            return 0.0;
        }
        z_to_score((2.0 * surprise).sqrt())
    }
}

/// A slow change of level: a drift or a new trend, which a baseline follows
/// closely enough that no single point is far from it.
///
/// The baseline's z stays at one or two spreads for as long as the series
/// keeps moving (the EWMA lags a ramp by a constant), which no point score
/// notices but a short mean of those z does. The mean of the last points'
/// z (an EWMA with a half-life of [`DRIFT_HALF_LIFE`] points, each z clipped
/// at ±[`DRIFT_Z_CLIP`] so one spike moves it little) is calibrated against
/// its own running level and spread (a slow EWMA baseline), so a series
/// whose residuals are autocorrelated (a seasonal profile that fits
/// loosely) needs a larger mean before it scores. On the development half of
/// `bench/univariate` it lifts drift F1 from 0 to 0.36 and trend changes
/// from 0.16 to 0.34 (the ensemble alone never crosses on a slow ramp).
struct DriftDetector {
    mean: Option<f64>,
    calibration: Baseline,
}

/// Half-life, in points, of the mean of recent z.
const DRIFT_HALF_LIFE: f64 = 8.0;
/// Half-life, in points, of the mean's calibration: long, so a ramp over
/// hundreds of points still stands out (150 lost 0.05 F1 on the development
/// half).
const DRIFT_CALIBRATION_HALF_LIFE: usize = 500;
/// A z beyond this is left out of the mean: no drift is that abrupt (the
/// point scores are there for it), and a baseline whose spread collapsed on
/// a flat stretch gives astronomical z to the first ordinary noise, which
/// would otherwise move the mean for a long time.
const DRIFT_Z_IGNORE: f64 = 8.0;
/// Each z is clipped to this before it enters the mean.
const DRIFT_Z_CLIP: f64 = 3.0;
/// The calibrated mean's excess over two spreads counts this many times
/// before [`z_to_score`]: the mean already averages about a dozen points, so
/// a few of its spreads say as much as a larger z of one point. Chosen on the
/// development half of `bench/univariate` (F1 0.62 at 1, 0.66 from 1.4 to 2).
const DRIFT_GAIN: f64 = 1.5;
/// The calibrated spread of the mean is at least this, in z units: what the
/// mean of independent z has. After a flat stretch every z was 0 and the
/// learned spread is near 0, and the first wiggles would score for hundreds
/// of points (0.1 failed `flat_stretch_then_small_wiggle_...`).
const DRIFT_MIN_SPREAD: f64 = 0.2;

impl DriftDetector {
    fn new() -> DriftDetector {
        DriftDetector {
            mean: None,
            calibration: Baseline::new(&BaselineConfig {
                method: BaselineMethod::Ewma,
                warmup: 30,
                window: DRIFT_CALIBRATION_HALF_LIFE,
            }),
        }
    }

    /// The score of the baseline's `z` for the point at `at`, then learns it.
    fn score_and_learn(&mut self, at: i64, z: Option<f64>) -> f64 {
        let Some(z) = z.filter(|z| z.is_finite()) else {
            return 0.0;
        };
        if z.abs() > DRIFT_Z_IGNORE {
            return 0.0;
        }
        let clipped = z.clamp(-DRIFT_Z_CLIP, DRIFT_Z_CLIP);
        let weight = 1.0 - 0.5f64.powf(1.0 / DRIFT_HALF_LIFE);
        let mean = match self.mean {
            Some(mean) => mean + weight * (clipped - mean),
            None => clipped,
        };
        self.mean = Some(mean);
        let score = self.calibration.assess(at, mean).map_or(0.0, |assessment| {
            let z = (mean - assessment.expected) / assessment.spread.max(DRIFT_MIN_SPREAD);
            z_to_score(2.0 + DRIFT_GAIN * (z.abs() - 2.0).max(0.0))
        });
        self.calibration.learn(at, mean);
        score
    }
}

/// Scores one series, point by point.
///
/// `auto` combines the baseline score `b` and the forest score `f` as
/// `max(b, f)` when both exceed 0.1 and `(b + f) / 2` otherwise: a point both
/// models find unusual keeps its full score, while one model's lone opinion
/// (the forest's echo of a past spike in its shingles, or a baseline's
/// over-reaction to the first wiggle after a flat stretch) is halved. The
/// result is then raised to the [`StuckDetector`]'s score (a flatline) and
/// the [`DriftDetector`]'s (a slow ramp), which see what no single point
/// shows. While a stuck run scores above 0 its values are not learned.
pub struct Scorer {
    detector: Detector,
    warmup: u64,
    finite_points: u64,
    baselines: Option<BaselineChoice>,
    forest: Option<ForestScorer>,
    stuck: Option<StuckDetector>,
    drift: Option<DriftDetector>,
}

impl Scorer {
    /// A scorer with nothing learned.
    pub fn new(detector: Detector, config: &ScoreConfig) -> Result<Scorer, DetectError> {
        let seasonal_methods = match config.seasonal {
            SeasonalChoice::Auto => vec![BaselineMethod::HourOfDay, BaselineMethod::HourOfWeek],
            SeasonalChoice::HourOfDay => vec![BaselineMethod::HourOfDay],
            SeasonalChoice::HourOfWeek => vec![BaselineMethod::HourOfWeek],
        };
        let baselines = match detector {
            Detector::Ewma => Some(vec![BaselineMethod::Ewma]),
            Detector::Seasonal => Some(seasonal_methods),
            Detector::Forest => None,
            Detector::Auto => Some(
                [BaselineMethod::Ewma]
                    .into_iter()
                    .chain(seasonal_methods)
                    .collect(),
            ),
        }
        .map(|methods| BaselineChoice::new(&methods, config));
        let forest = match detector {
            Detector::Forest | Detector::Auto => Some(ForestScorer::new(config)?),
            Detector::Ewma | Detector::Seasonal => None,
        };
        let auto = detector == Detector::Auto;
        Ok(Scorer {
            detector,
            warmup: config.warmup as u64,
            finite_points: 0,
            baselines,
            forest,
            stuck: auto.then(StuckDetector::new),
            drift: auto.then(DriftDetector::new),
        })
    }

    /// The score of `value` at `at` (Unix ns), in [0, 1], then learns it.
    /// Non-finite values score 0 and are not learned.
    pub fn score(&mut self, at: i64, value: f64) -> Result<f64, DetectError> {
        if !value.is_finite() {
            return Ok(0.0);
        }
        let stuck_score = self
            .stuck
            .as_mut()
            .map_or(0.0, |stuck| stuck.score_and_learn(value));
        // A stuck sensor's repeats are not the series: learning them would
        // collapse every spread, and the first ordinary value after the
        // flatline would look like an anomaly (bench/univariate: flatline
        // series gave 1.1 false positives per 1,000 points that way).
        let learn = stuck_score == 0.0;
        let baseline_z = match &mut self.baselines {
            Some(choice) => choice.score_and_learn(at, value, learn),
            None => None,
        };
        let baseline_score = baseline_z.map_or(0.0, z_to_score);
        let drift_score = match &mut self.drift {
            Some(drift) if learn => drift.score_and_learn(at, baseline_z),
            _ => 0.0,
        };
        let forest_score = match &mut self.forest {
            Some(forest) => forest.score_and_learn(at, value, learn)?,
            None => 0.0,
        };
        self.finite_points += 1;
        if self.finite_points <= self.warmup {
            return Ok(0.0);
        }
        let score = match self.detector {
            Detector::Ewma | Detector::Seasonal => baseline_score,
            Detector::Forest => forest_score,
            Detector::Auto => {
                let ensemble = if baseline_score > 0.1 && forest_score > 0.1 {
                    baseline_score.max(forest_score)
                } else {
                    (baseline_score + forest_score) / 2.0
                };
                ensemble.max(stuck_score).max(drift_score)
            }
        };
        Ok(score.clamp(0.0, 1.0))
    }
}

/// What to score and how.
#[derive(Debug, Clone, Default)]
pub struct ScoreOptions {
    /// `ewma`, `seasonal`, `forest` or `auto`.
    pub detector: String,
    /// Detector parameters; `None` for the defaults.
    pub config: Option<ScoreConfig>,
}

/// What [`score_csv`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoreSummary {
    /// Data rows read and written.
    pub rows: u64,
    /// Rows whose value was empty, NaN or infinite: scored 0, not learned.
    pub skipped: u64,
    /// Rows scored 0 because the detectors were still warming up.
    pub warmup_rows: u64,
    /// Rows whose timestamp is earlier than the previous row's (scored in file order).
    pub earlier_rows: u64,
    /// Rows whose timestamp equals the previous row's (scored in file order).
    pub duplicate_rows: u64,
}

impl ScoreSummary {
    /// Rows out of time order or with a duplicate timestamp that got no
    /// [`OrderWarning`] because [`MAX_ORDER_WARNINGS`] were already given.
    pub fn unreported_order_rows(&self) -> u64 {
        (self.earlier_rows + self.duplicate_rows).saturating_sub(MAX_ORDER_WARNINGS)
    }
}

/// [`score_csv_with_warnings`] reports at most this many [`OrderWarning`]s per
/// input; the rest are only counted.
pub const MAX_ORDER_WARNINGS: u64 = 10;

/// A row whose timestamp is not after the previous row's. It was scored
/// anyway, in file order. Displays as `FILE:LINE: timestamp ... ; scored in
/// file order`, timestamps as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderWarning {
    /// The input name, as given.
    pub path: String,
    /// 1-based line of the row.
    pub line: u64,
    /// Its timestamp, as written.
    pub timestamp: String,
    /// 1-based line of the previous row.
    pub previous_line: u64,
    /// The previous row's timestamp, as written.
    pub previous_timestamp: String,
    /// Equal to the previous row's timestamp rather than earlier.
    pub duplicate: bool,
}

impl std::fmt::Display for OrderWarning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let relation = if self.duplicate {
            "equals"
        } else {
            "is before"
        };
        write!(
            formatter,
            "{}:{}: timestamp {} {relation} the previous row's {} (line {}); scored in file order",
            self.path, self.line, self.timestamp, self.previous_timestamp, self.previous_line
        )
    }
}

/// Scores a `timestamp,value` CSV, writing `timestamp,value,anomaly_score`.
/// See the module documentation for the input format and the bad-input policy.
/// Rows out of time order are only counted in the summary; use
/// [`score_csv_with_warnings`] to hear about them.
pub fn score_csv(
    input: impl BufRead,
    input_name: &str,
    output: impl Write,
    options: &ScoreOptions,
) -> Result<ScoreSummary, DetectError> {
    score_csv_with_warnings(input, input_name, output, options, |_| {})
}

/// [`score_csv`], calling `on_warning` as each of the first
/// [`MAX_ORDER_WARNINGS`] rows out of time order or with a duplicate
/// timestamp is read.
pub fn score_csv_with_warnings(
    input: impl BufRead,
    input_name: &str,
    output: impl Write,
    options: &ScoreOptions,
    mut on_warning: impl FnMut(&OrderWarning),
) -> Result<ScoreSummary, DetectError> {
    let detector = Detector::from_name(&options.detector)?;
    let config = options.config.clone().unwrap_or_default();
    let mut scorer = Scorer::new(detector, &config)?;
    let input_error = |line: u64, message: String| DetectError::Input {
        path: input_name.to_string(),
        line,
        message,
    };
    let output_error = |error: csv::Error| DetectError::Io {
        path: "<output>".into(),
        source: std::io::Error::other(error.to_string()),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut writer = csv::WriterBuilder::new().from_writer(output);
    let mut record = csv::StringRecord::new();
    let read = |reader: &mut csv::Reader<_>, record: &mut csv::StringRecord| {
        reader.read_record(record).map_err(|error| {
            let line = error.position().map_or(1, |position| position.line());
            let message = match error.kind() {
                csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
                _ => error.to_string().to_lowercase(),
            };
            input_error(line, message)
        })
    };

    if !read(&mut reader, &mut record)? {
        return Err(input_error(
            1,
            "empty input: expected a header 'timestamp,value'".to_string(),
        ));
    }
    let header_line = record.position().map_or(1, |position| position.line());
    let column = |wanted: &str| {
        record.iter().position(|name| {
            name.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(wanted)
        })
    };
    let (timestamp_column, value_column) = match (column("timestamp"), column("value")) {
        (Some(timestamp), Some(value)) => (timestamp, value),
        _ => {
            let found = record.iter().collect::<Vec<_>>().join(",");
            let hint = if record
                .iter()
                .any(|field| parse_timestamp(field.trim()).is_some())
            {
                " (the first line must be a header)"
            } else {
                ""
            };
            return Err(input_error(
                header_line,
                format!("expected a header naming the columns 'timestamp' and 'value', found '{found}'{hint}"),
            ));
        }
    };
    let needed_fields = timestamp_column.max(value_column) + 1;
    writer
        .write_record(["timestamp", "value", "anomaly_score"])
        .map_err(output_error)?;

    let mut summary = ScoreSummary::default();
    // The previous row's time, line and timestamp text (reused, not reallocated per row).
    let mut previous: Option<(i64, u64)> = None;
    let mut previous_text = String::new();
    while read(&mut reader, &mut record)? {
        let line = record.position().map_or(0, |position| position.line());
        // A blank line is no row (the csv reader already skips truly empty ones).
        if record.len() == 1 && record[0].trim().is_empty() && needed_fields > 1 {
            continue;
        }
        if record.len() < needed_fields {
            return Err(input_error(
                line,
                format!(
                    "expected at least {needed_fields} fields, found {}",
                    record.len()
                ),
            ));
        }
        let timestamp_text = &record[timestamp_column];
        let value_text = &record[value_column];
        let at = parse_timestamp(timestamp_text.trim()).ok_or_else(|| {
            input_error(
                line,
                format!(
                    "invalid timestamp '{timestamp_text}': expected RFC 3339, \
                     'YYYY-MM-DD HH:MM:SS' or epoch seconds or milliseconds"
                ),
            )
        })?;
        if let Some((previous_at, previous_line)) = previous {
            if at <= previous_at {
                let duplicate = at == previous_at;
                if duplicate {
                    summary.duplicate_rows += 1;
                } else {
                    summary.earlier_rows += 1;
                }
                if summary.earlier_rows + summary.duplicate_rows <= MAX_ORDER_WARNINGS {
                    on_warning(&OrderWarning {
                        path: input_name.to_string(),
                        line,
                        timestamp: timestamp_text.trim().to_string(),
                        previous_line,
                        previous_timestamp: previous_text.clone(),
                        duplicate,
                    });
                }
            }
        }
        previous = Some((at, line));
        previous_text.clear();
        previous_text.push_str(timestamp_text.trim());
        let value = match value_text.trim() {
            "" => f64::NAN,
            text => text.parse::<f64>().map_err(|_| {
                input_error(
                    line,
                    format!("invalid value '{value_text}': expected a number"),
                )
            })?,
        };
        if !value.is_finite() {
            summary.skipped += 1;
        } else if scorer.finite_points < scorer.warmup {
            summary.warmup_rows += 1;
        }
        let score = scorer.score(at, value)?;
        summary.rows += 1;
        writer
            .write_record([timestamp_text, value_text, &format_score(score)])
            .map_err(output_error)?;
    }
    writer.flush().map_err(|source| DetectError::Io {
        path: "<output>".into(),
        source,
    })?;
    Ok(summary)
}

/// At most six decimals, without trailing zeros.
fn format_score(score: f64) -> String {
    let text = format!("{score:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` as UTC, or epoch seconds or milliseconds.
fn parse_timestamp(text: &str) -> Option<i64> {
    if text.is_empty() {
        return None;
    }
    if let Ok(nanos) = inferwatch_core::parse_timestamp_text(text) {
        return Some(nanos);
    }
    // NAB's `2014-02-14 14:30:00`: no offset, meant as UTC.
    let bytes = text.as_bytes();
    let looks_like_date_time = bytes.len() >= 19
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && (bytes[10] == b' ' || bytes[10] == b'T')
        && !text.ends_with(['Z', 'z'])
        && text
            .get(19..)
            .is_some_and(|rest| !rest.contains(['+', '-']));
    if !looks_like_date_time {
        return None;
    }
    let (date, time) = (text.get(..10)?, text.get(11..)?);
    inferwatch_core::parse_timestamp_text(&format!("{date}T{time}Z")).ok()
}

#[cfg(test)]
mod tests;
