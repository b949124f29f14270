//! Learned baselines for one metric series: what a value "usually" is.
//!
//! A [`Baseline`] sees one value per evaluation tick (an aggregate such as a
//! p95 latency or a request count for one group key) and answers, for each
//! new value, how far it sits from what was learned before it, as an
//! [`Assessment`] with a signed `z`. Its state is bounded: it never grows
//! with the number of points.
//!
//! Methods ([`BaselineMethod`]):
//!
//! * `ewma` — exponentially weighted mean and variance; `window` is the
//!   half-life in points.
//! * `rolling` — mean and standard deviation of the last `window` points
//!   (a ring buffer).
//! * `mad` — median and 1.4826 × median absolute deviation of the last
//!   `window` points; when more than half of them are equal (MAD = 0) the
//!   spread falls back to 1.2533 × mean absolute deviation from the median.
//! * `hour_of_day` / `hour_of_week` — a seasonal profile of 24 / 168 UTC hour
//!   slots, each an EWMA of mean and variance whose half-life is `window`
//!   points *of that slot*. A young slot leans on the rest: with `n < 3`
//!   points its mean is blended with a global EWMA level (weight `n / 3`),
//!   and its variance is always blended with the pooled variance of all
//!   slots' prediction errors (weight `n / (n + 3)`), so one or two points
//!   never make a confident slot.
//!   A slot's first 3 points are learned as they are (no clamp below), since
//!   a young slot cannot tell a daily transition from an outlier.
//! * `auto` — `ewma`, and beside it an `hour_of_day` profile learning the
//!   same points. Once the series has two days of history and the profile's
//!   one-step errors are under half of the EWMA's (mean squared, over up to a
//!   week of points), the profile judges; it hands back if its errors grow
//!   past the EWMA's. A series without a daily cycle is judged exactly as
//!   `ewma` judges it: the default pack's per-model baselines use it, so
//!   seasonality is used where the history shows it. It keeps 24 slots per
//!   group: use it for per-model series, not per client.
//!
//! Robustness, shared by all methods:
//!
//! * **Spread floor.** The spread is at least `max(1e-9, 0.01 × |expected|)`:
//!   a perfectly flat series gives a large but finite `z`, and a change
//!   smaller than 1 % of the level is never more than one spread away.
//! * **Warm-up.** [`Baseline::assess`] returns `None` until `warmup` points
//!   were learned (counted over all slots for the seasonal methods). During
//!   warm-up every point is learned as it is.
//! * **Clamped influence.** After warm-up a point more than
//!   [`CLAMP_SPREADS`] spreads from the expectation is learned as if it were
//!   exactly that far (winsorised), so one huge spike barely moves the
//!   baseline. The `mad` method stores raw values: its median is robust.
//! * **Level shifts.** When [`Baseline::shift_after`] consecutive points all
//!   lie beyond the clamp on the same side, the series has moved: the learned
//!   level (every slot, or every stored value) moves by their mean excess and
//!   the spread is kept, so a new level stops being flagged after a few
//!   points instead of after many half-lives.
//! * **Noise growth.** When clamped points become frequent (more than about
//!   one in ten recently) but do not form a same-side run — a flat stretch
//!   that turned noisy — they are learned unclamped so the spread can catch up.
//!
//! Non-finite values are neither assessed nor learned. Gaps need nothing: the
//! caller simply does not call [`Baseline::learn`] for a missing bucket.

use serde::{Deserialize, Serialize};

/// Default number of points learned before the first assessment.
pub const DEFAULT_WARMUP: usize = 30;
/// Default `window` (points remembered, or half-life in points).
pub const DEFAULT_WINDOW: usize = 60;
/// Points further than this many spreads from the expectation are learned
/// as if they were exactly this far.
pub const CLAMP_SPREADS: f64 = 3.0;
/// Absolute spread floor.
const ABSOLUTE_SPREAD_FLOOR: f64 = 1e-9;
/// Relative spread floor, a fraction of `|expected|`.
const RELATIVE_SPREAD_FLOOR: f64 = 0.01;
/// Weight of one point in the recent rate of clamped points.
const EXCEEDANCE_RATE_WEIGHT: f64 = 0.1;
/// Above this recent rate of clamped points, sign-changing outliers are
/// learned unclamped.
const NOISY_EXCEEDANCE_RATE: f64 = 0.1;
/// Points after which a seasonal slot's own mean is trusted; also the
/// pseudo-count of the pooled variance blended into every slot's.
const SLOT_PRIOR_POINTS: f64 = 3.0;
/// Scale factor turning a MAD into a normal standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;
/// Scale factor turning a mean absolute deviation into a normal standard deviation.
const MEAN_ABSOLUTE_DEVIATION_TO_SIGMA: f64 = 1.2533;

/// How a baseline is learned, as written in a rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// The model.
    pub method: BaselineMethod,
    /// Points learned before any assessment (over all slots for seasonal methods).
    #[serde(default = "default_warmup")]
    pub warmup: usize,
    /// Points remembered by `rolling` and `mad`; the EWMA half-life in points
    /// for `ewma`, and per slot for `hour_of_day` / `hour_of_week`.
    #[serde(default = "default_window")]
    pub window: usize,
}

fn default_warmup() -> usize {
    DEFAULT_WARMUP
}

fn default_window() -> usize {
    DEFAULT_WINDOW
}

impl BaselineConfig {
    /// A config with the default warm-up and window.
    pub fn new(method: BaselineMethod) -> BaselineConfig {
        BaselineConfig {
            method,
            warmup: DEFAULT_WARMUP,
            window: DEFAULT_WINDOW,
        }
    }
}

/// The baseline model.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BaselineMethod {
    /// Exponentially weighted mean and variance.
    Ewma,
    /// Mean and standard deviation over the last `window` points.
    Rolling,
    /// Median and scaled MAD over the last `window` points.
    Mad,
    /// 24 UTC hour-of-day slots.
    HourOfDay,
    /// 168 UTC hour-of-week slots (weeks start on Monday 00:00 UTC).
    HourOfWeek,
    /// `ewma` until two days show a daily cycle, then `hour_of_day`.
    Auto,
}

/// How one value compares with its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assessment {
    /// The value the baseline expected.
    pub expected: f64,
    /// Its typical deviation (a standard deviation), never below the floor.
    pub spread: f64,
    /// (value - expected) / spread, signed
    pub z: f64,
}

/// An online baseline of one series. See the module documentation.
#[derive(Debug, Clone)]
pub struct Baseline {
    warmup: u32,
    points: u32,
    shift_after: u32,
    model: Model,
    /// Same-side run of clamped points: its length, side and summed excess.
    run_length: u32,
    run_side: f64,
    run_excess_sum: f64,
    /// Recent rate of clamped points (an EWMA of 0/1).
    exceedance_rate: f64,
}

#[derive(Debug, Clone)]
enum Model {
    Ewma(Moments),
    /// Boxed like the seasonal models: an EWMA is the common per-key case.
    Window {
        values: Box<Ring>,
        robust: bool,
    },
    /// Boxed: the other methods are small, and per-client rules keep a
    /// baseline per key.
    Seasonal(Box<Seasonal>),
    Auto(Box<Auto>),
}

/// Auto's daily profile judges once its mean squared one-step error is
/// under this share of the EWMA's...
const AUTO_SEASONAL_GAIN: f64 = 0.5;
/// ...and the series has this much history.
const AUTO_MIN_HISTORY: i64 = 2 * 24 * HOUR_NS;
/// One-step errors are averaged over at most this many points (a week at
/// one point a minute).
const AUTO_ERROR_POINTS: f64 = 10_080.0;

/// The `auto` method's two models, and which judges.
#[derive(Debug, Clone)]
struct Auto {
    level: Moments,
    daily: Seasonal,
    /// Mean squared one-step errors of each, since the profile's first day.
    level_error: f64,
    daily_error: f64,
    compared: f64,
    first_at: i64,
    daily_judges: bool,
}

#[derive(Debug, Clone)]
struct Seasonal {
    slots: Vec<Moments>,
    slot_hours: i64,
    global: Moments,
    /// Prediction errors of all slots, for the pooled variance.
    residuals: Moments,
}

impl Seasonal {
    fn new(slot_hours: i64, window: usize) -> Seasonal {
        Seasonal {
            slots: vec![Moments::new(window); slot_hours as usize],
            slot_hours,
            // The global level adapts as fast as the series: one slot's
            // half-life spread over a whole cycle would be far too slow.
            global: Moments::new(window),
            residuals: Moments::new(window),
        }
    }

    /// Expected value and (unfloored) spread at `at`.
    fn expectation(&self, at: i64) -> (f64, f64) {
        let slot = &self.slots[slot_of(at, self.slot_hours)];
        let count = slot.count as f64;
        let mean_weight = (count / SLOT_PRIOR_POINTS).min(1.0);
        let expected = mean_weight * slot.mean + (1.0 - mean_weight) * self.global.mean;
        let pooled = self.residuals.variance + self.residuals.mean * self.residuals.mean;
        let variance_weight = count / (count + SLOT_PRIOR_POINTS);
        let variance = variance_weight * slot.variance + (1.0 - variance_weight) * pooled;
        (expected, variance.sqrt())
    }

    fn learn(&mut self, at: i64, learned: f64) {
        // The first point has nothing to be an error against.
        if self.global.count > 0 {
            let residual = learned - self.expectation(at).0;
            self.residuals.update(residual);
        }
        self.slots[slot_of(at, self.slot_hours)].update(learned);
        self.global.update(learned);
    }

    fn is_young(&self, at: i64) -> bool {
        (self.slots[slot_of(at, self.slot_hours)].count as f64) < SLOT_PRIOR_POINTS
    }

    fn shift(&mut self, shift: f64) {
        for slot in self.slots.iter_mut() {
            slot.mean += shift;
        }
        self.global.mean += shift;
    }
}

impl Auto {
    /// Learns a point: `learned` (maybe clamped) for the model that judges,
    /// the raw `value` for the other, since the clamp and the level shifts
    /// follow the judging model's expectation, not its own. The models'
    /// misses are compared on the raw value, which clamping would hide.
    fn learn(&mut self, at: i64, value: f64, learned: f64) {
        if self.level.count == 0 {
            self.first_at = at;
        }
        // Compare one-step errors once the profile has seen a whole day.
        if at - self.first_at >= 24 * HOUR_NS && !self.daily.is_young(at) {
            self.compared = (self.compared + 1.0).min(AUTO_ERROR_POINTS);
            let weight = 1.0 / self.compared;
            let level_miss = value - self.level.mean;
            let daily_miss = value - self.daily.expectation(at).0;
            self.level_error += weight * (level_miss * level_miss - self.level_error);
            self.daily_error += weight * (daily_miss * daily_miss - self.daily_error);
            let history = at - self.first_at >= AUTO_MIN_HISTORY;
            self.daily_judges = if self.daily_judges {
                self.daily_error <= self.level_error
            } else {
                history && self.daily_error < AUTO_SEASONAL_GAIN * self.level_error
            };
        }
        if self.daily_judges {
            self.level.update(value);
            self.daily.learn(at, learned);
        } else {
            self.level.update(learned);
            self.daily.learn(at, value);
        }
    }
}

/// An exponentially weighted mean and variance. The first points are
/// averaged with equal weights (weight `max(alpha, 1/n)`), so early
/// estimates are not biased toward zero.
#[derive(Debug, Clone, Copy)]
struct Moments {
    count: u64,
    mean: f64,
    variance: f64,
    alpha: f64,
}

impl Moments {
    fn new(half_life: usize) -> Moments {
        let half_life = half_life.max(1) as f64;
        Moments {
            count: 0,
            mean: 0.0,
            variance: 0.0,
            alpha: 1.0 - 0.5f64.powf(1.0 / half_life),
        }
    }

    fn update(&mut self, value: f64) {
        self.count += 1;
        let weight = self.alpha.max(1.0 / self.count as f64);
        let difference = value - self.mean;
        let increment = weight * difference;
        self.mean += increment;
        self.variance = (1.0 - weight) * (self.variance + difference * increment);
    }
}

/// A fixed-capacity ring of the most recent values.
#[derive(Debug, Clone)]
struct Ring {
    values: Vec<f64>,
    capacity: usize,
    next: usize,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(2);
        Ring {
            values: Vec::with_capacity(capacity),
            capacity,
            next: 0,
        }
    }

    fn push(&mut self, value: f64) {
        if self.values.len() < self.capacity {
            self.values.push(value);
        } else {
            self.values[self.next] = value;
        }
        self.next = (self.next + 1) % self.capacity;
    }

    fn mean_and_stddev(&self) -> (f64, f64) {
        let count = self.values.len() as f64;
        if self.values.is_empty() {
            return (0.0, 0.0);
        }
        let mean = self.values.iter().sum::<f64>() / count;
        let squares: f64 = self.values.iter().map(|v| (v - mean) * (v - mean)).sum();
        let stddev = if self.values.len() > 1 {
            (squares / (count - 1.0)).sqrt()
        } else {
            0.0
        };
        (mean, stddev)
    }

    fn median_and_spread(&self) -> (f64, f64) {
        if self.values.is_empty() {
            return (0.0, 0.0);
        }
        let mut sorted = self.values.clone();
        let median = median_in_place(&mut sorted);
        for value in sorted.iter_mut() {
            *value = (*value - median).abs();
        }
        let mad = median_in_place(&mut sorted);
        let spread = if mad > 0.0 {
            MAD_TO_SIGMA * mad
        } else {
            // Mostly equal values: the MAD says nothing, the mean deviation still does.
            MEAN_ABSOLUTE_DEVIATION_TO_SIGMA * sorted.iter().sum::<f64>() / sorted.len() as f64
        };
        (median, spread)
    }
}

fn median_in_place(values: &mut [f64]) -> f64 {
    let middle = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(middle, f64::total_cmp);
    let upper = *upper;
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = values[..middle]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        (lower + upper) / 2.0
    }
}

fn floored_spread(expected: f64, spread: f64) -> f64 {
    let floor = ABSOLUTE_SPREAD_FLOOR.max(RELATIVE_SPREAD_FLOOR * expected.abs());
    if spread.is_finite() {
        spread.max(floor)
    } else {
        floor
    }
}

/// Nanoseconds in an hour.
const HOUR_NS: i64 = 3_600_000_000_000;
/// 1970-01-01 was a Thursday: hours from a Monday 00:00 to the epoch.
const EPOCH_HOUR_OF_WEEK: i64 = 3 * 24;

impl Baseline {
    /// A baseline with nothing learned.
    pub fn new(config: &BaselineConfig) -> Baseline {
        let window = config.window.max(1);
        let model = match config.method {
            BaselineMethod::Ewma => Model::Ewma(Moments::new(window)),
            BaselineMethod::Rolling => Model::Window {
                values: Box::new(Ring::new(window)),
                robust: false,
            },
            BaselineMethod::Mad => Model::Window {
                values: Box::new(Ring::new(window)),
                robust: true,
            },
            BaselineMethod::HourOfDay => Model::Seasonal(Box::new(Seasonal::new(24, window))),
            BaselineMethod::HourOfWeek => Model::Seasonal(Box::new(Seasonal::new(168, window))),
            BaselineMethod::Auto => Model::Auto(Box::new(Auto {
                level: Moments::new(window),
                daily: Seasonal::new(24, window),
                level_error: 0.0,
                daily_error: 0.0,
                compared: 0.0,
                first_at: 0,
                daily_judges: false,
            })),
        };
        Baseline {
            warmup: u32::try_from(config.warmup).unwrap_or(u32::MAX),
            points: 0,
            shift_after: Baseline::shift_after(config),
            model,
            run_length: 0,
            run_side: 0.0,
            run_excess_sum: 0.0,
            exceedance_rate: 0.0,
        }
    }

    /// Consecutive same-side clamped points after which the level moves:
    /// `max(5, window / 4)`.
    pub fn shift_after(config: &BaselineConfig) -> u32 {
        (config.window / 4).clamp(5, u32::MAX as usize) as u32
    }

    /// How `value` at event time `at` (Unix ns) compares with what was
    /// learned before it. `None` while warming up (fewer than `warmup` points
    /// learned, over all slots for the seasonal methods) or when `value` is
    /// not finite.
    pub fn assess(&self, at: i64, value: f64) -> Option<Assessment> {
        if !value.is_finite() || self.points < self.warmup.max(1) {
            return None;
        }
        let (expected, spread) = self.expectation(at);
        let z = (value - expected) / spread;
        Some(Assessment {
            expected,
            spread,
            z,
        })
    }

    /// Learns a point. Call after [`assess`](Self::assess) for the same point
    /// (scores never see their own point). Non-finite values are ignored.
    pub fn learn(&mut self, at: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let mut learned = value;
        if self.points >= self.warmup.max(1) && !self.slot_is_young(at) {
            let (expected, spread) = self.expectation(at);
            let excess = value - expected;
            let limit = CLAMP_SPREADS * spread;
            if excess.abs() <= limit {
                self.run_length = 0;
                self.exceedance_rate *= 1.0 - EXCEEDANCE_RATE_WEIGHT;
            } else {
                let side = excess.signum();
                if side == self.run_side && self.run_length > 0 {
                    self.run_length += 1;
                    self.run_excess_sum += excess;
                } else {
                    self.run_length = 1;
                    self.run_side = side;
                    self.run_excess_sum = excess;
                }
                let noisy = self.exceedance_rate > NOISY_EXCEEDANCE_RATE && self.run_length == 1;
                self.exceedance_rate =
                    self.exceedance_rate * (1.0 - EXCEEDANCE_RATE_WEIGHT) + EXCEEDANCE_RATE_WEIGHT;
                if self.run_length >= self.shift_after {
                    let shift = self.run_excess_sum / f64::from(self.run_length);
                    self.shift_level(shift);
                    self.run_length = 0;
                    self.exceedance_rate = 0.0;
                } else if !noisy {
                    learned = expected + side * limit;
                }
            }
        }
        self.points = self.points.saturating_add(1);
        match &mut self.model {
            Model::Ewma(moments) => moments.update(learned),
            Model::Window { values, robust } => {
                // The median is robust by itself: keep the raw value.
                values.push(if *robust { value } else { learned });
            }
            Model::Seasonal(seasonal) => seasonal.learn(at, learned),
            Model::Auto(auto) => auto.learn(at, value, learned),
        }
    }

    /// Points learned so far.
    pub fn points(&self) -> u64 {
        u64::from(self.points)
    }

    /// Approximate heap + inline bytes, for memory reporting.
    pub fn approx_bytes(&self) -> usize {
        let heap = match &self.model {
            Model::Ewma(_) => 0,
            Model::Window { values, .. } => {
                size_of::<Ring>() + values.values.capacity() * size_of::<f64>()
            }
            Model::Seasonal(seasonal) => {
                size_of::<Seasonal>() + seasonal.slots.capacity() * size_of::<Moments>()
            }
            Model::Auto(auto) => {
                size_of::<Auto>() + auto.daily.slots.capacity() * size_of::<Moments>()
            }
        };
        size_of::<Baseline>() + heap
    }

    /// Expected value and floored spread at time `at`.
    fn expectation(&self, at: i64) -> (f64, f64) {
        let (expected, spread) = match &self.model {
            Model::Ewma(moments) => (moments.mean, moments.variance.sqrt()),
            Model::Window {
                values,
                robust: false,
            } => values.mean_and_stddev(),
            Model::Window {
                values,
                robust: true,
            } => values.median_and_spread(),
            Model::Seasonal(seasonal) => seasonal.expectation(at),
            Model::Auto(auto) if auto.daily_judges => auto.daily.expectation(at),
            Model::Auto(auto) => (auto.level.mean, auto.level.variance.sqrt()),
        };
        (expected, floored_spread(expected, spread))
    }

    /// Whether `at` falls in a seasonal slot that has not seen
    /// [`SLOT_PRIOR_POINTS`] points yet. Such points are learned as they are:
    /// the blended expectation cannot yet tell a daily transition from an
    /// outlier, and clamping it would teach the slot the wrong level.
    fn slot_is_young(&self, at: i64) -> bool {
        match &self.model {
            Model::Seasonal(seasonal) => seasonal.is_young(at),
            Model::Auto(auto) => auto.daily_judges && auto.daily.is_young(at),
            Model::Ewma(_) | Model::Window { .. } => false,
        }
    }

    /// Moves the learned level by `shift`, keeping the spread.
    fn shift_level(&mut self, shift: f64) {
        match &mut self.model {
            Model::Ewma(moments) => moments.mean += shift,
            Model::Window { values, .. } => {
                for value in values.values.iter_mut() {
                    *value += shift;
                }
            }
            Model::Seasonal(seasonal) => seasonal.shift(shift),
            Model::Auto(auto) if auto.daily_judges => auto.daily.shift(shift),
            Model::Auto(auto) => auto.level.mean += shift,
        }
    }
}

fn slot_of(at: i64, slot_hours: i64) -> usize {
    let hours = at.div_euclid(HOUR_NS) + EPOCH_HOUR_OF_WEEK;
    hours.rem_euclid(slot_hours) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000_000;
    const METHODS: [BaselineMethod; 5] = [
        BaselineMethod::Ewma,
        BaselineMethod::Rolling,
        BaselineMethod::Mad,
        BaselineMethod::HourOfDay,
        BaselineMethod::HourOfWeek,
    ];

    /// Deterministic noise in [-1, 1] (an LCG), so the tests need no RNG crate.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        }
    }

    fn config(method: BaselineMethod) -> BaselineConfig {
        BaselineConfig::new(method)
    }

    /// Learns `values` one per minute from time 0 and returns the next time.
    fn learn_all(baseline: &mut Baseline, values: impl IntoIterator<Item = f64>) -> i64 {
        let mut at = 0;
        for value in values {
            baseline.learn(at, value);
            at += MINUTE;
        }
        at
    }

    fn noisy(count: usize, level: f64, amplitude: f64, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        (0..count)
            .map(|_| level + amplitude * noise.next())
            .collect()
    }

    #[test]
    fn config_reads_yaml_with_defaults_and_rejects_unknown_fields() {
        let config: BaselineConfig = marked_yaml::from_yaml(0, "method: hour_of_week\n").unwrap();
        assert_eq!(config, BaselineConfig::new(BaselineMethod::HourOfWeek));
        let config: BaselineConfig =
            marked_yaml::from_yaml(0, "method: mad\nwarmup: 5\nwindow: 9\n").unwrap();
        assert_eq!(
            (config.method, config.warmup, config.window),
            (BaselineMethod::Mad, 5, 9)
        );
        assert!(marked_yaml::from_yaml::<BaselineConfig>(0, "method: ewma\nspan: 3\n").is_err());
        assert!(marked_yaml::from_yaml::<BaselineConfig>(0, "method: median\n").is_err());
    }

    #[test]
    fn warmup_is_respected() {
        for method in METHODS {
            let mut baseline = Baseline::new(&BaselineConfig {
                method,
                warmup: 10,
                window: 20,
            });
            for index in 0..10 {
                assert_eq!(baseline.assess(index * MINUTE, 5.0), None, "{method:?}");
                baseline.learn(index * MINUTE, 5.0 + (index % 2) as f64);
            }
            assert_eq!(baseline.points(), 10);
            assert!(baseline.assess(10 * MINUTE, 5.0).is_some(), "{method:?}");
            assert_eq!(baseline.assess(10 * MINUTE, f64::NAN), None);
            assert_eq!(baseline.assess(10 * MINUTE, f64::INFINITY), None);
            baseline.learn(10 * MINUTE, f64::NAN);
            assert_eq!(baseline.points(), 10, "non-finite values are not learned");
        }
    }

    #[test]
    fn step_change_is_flagged_with_the_right_sign() {
        for method in METHODS {
            let mut baseline = Baseline::new(&config(method));
            let at = learn_all(&mut baseline, noisy(200, 100.0, 2.0, 7));
            let up = baseline.assess(at, 130.0).unwrap();
            let down = baseline.assess(at, 70.0).unwrap();
            let normal = baseline.assess(at, 100.5).unwrap();
            assert!(up.z > 5.0, "{method:?}: {up:?}");
            assert!(down.z < -5.0, "{method:?}: {down:?}");
            assert!(normal.z.abs() < 2.0, "{method:?}: {normal:?}");
            assert!((up.expected - 100.0).abs() < 2.0, "{method:?}: {up:?}");
        }
    }

    #[test]
    fn flat_series_then_tiny_change_is_finite_and_small() {
        for method in METHODS {
            let mut baseline = Baseline::new(&config(method));
            let at = learn_all(&mut baseline, std::iter::repeat_n(50.0, 100));
            let same = baseline.assess(at, 50.0).unwrap();
            assert_eq!(same.z, 0.0, "{method:?}");
            // The 1 % relative floor: a 0.01 % change is far below one spread.
            let tiny = baseline.assess(at, 50.005).unwrap();
            assert!(
                tiny.z.is_finite() && tiny.z.abs() < 0.1,
                "{method:?}: {tiny:?}"
            );
            assert!((tiny.spread - 0.5).abs() < 1e-12, "{method:?}: {tiny:?}");
            // A flat zero series: the absolute floor keeps z finite.
            let mut zeros = Baseline::new(&config(method));
            let at = learn_all(&mut zeros, std::iter::repeat_n(0.0, 100));
            let bump = zeros.assess(at, 1.0).unwrap();
            assert!(bump.z.is_finite() && bump.z > 1e6, "{method:?}: {bump:?}");
        }
    }

    #[test]
    fn flat_series_that_turns_noisy_is_learned_quickly() {
        for method in [
            BaselineMethod::Ewma,
            BaselineMethod::Rolling,
            BaselineMethod::Mad,
        ] {
            let mut baseline = Baseline::new(&config(method));
            let mut at = learn_all(&mut baseline, std::iter::repeat_n(0.0, 100));
            let mut noise = Noise(3);
            let mut flagged_late = 0;
            for index in 0..200 {
                let value = noise.next();
                let z = baseline.assess(at, value).unwrap().z;
                if index >= 60 && z.abs() > 6.0 {
                    flagged_late += 1;
                }
                baseline.learn(at, value);
                at += MINUTE;
            }
            assert!(flagged_late <= 2, "{method:?}: {flagged_late} late flags");
        }
    }

    #[test]
    fn one_spike_does_not_poison_later_assessments() {
        for method in METHODS {
            let mut baseline = Baseline::new(&config(method));
            let mut at = learn_all(&mut baseline, noisy(200, 100.0, 2.0, 11));
            let spike = baseline.assess(at, 1e9).unwrap();
            assert!(spike.z > 1e3, "{method:?}");
            baseline.learn(at, 1e9);
            at += MINUTE;
            for value in noisy(50, 100.0, 2.0, 12) {
                let assessment = baseline.assess(at, value).unwrap();
                assert!(assessment.z.abs() < 2.0, "{method:?}: {assessment:?}");
                baseline.learn(at, value);
                at += MINUTE;
            }
            // And a modest real anomaly is still visible right after.
            assert!(baseline.assess(at, 115.0).unwrap().z > 4.0, "{method:?}");
        }
    }

    #[test]
    fn level_shift_stops_being_flagged_after_a_while() {
        // One point per 20 minutes for 8 days: every hour-of-week slot is
        // past its young phase before the shift.
        let step = 20 * MINUTE;
        for method in METHODS {
            let mut baseline = Baseline::new(&config(method));
            let mut at = 0;
            for value in noisy(8 * 72, 100.0, 2.0, 5) {
                baseline.learn(at, value);
                at += step;
            }
            let mut flags = Vec::new();
            for value in noisy(100, 150.0, 2.0, 6) {
                flags.push(baseline.assess(at, value).unwrap().z > 4.0);
                baseline.learn(at, value);
                at += step;
            }
            assert!(flags[0], "{method:?}: the shift itself is flagged");
            let late = flags[40..].iter().filter(|flag| **flag).count();
            assert_eq!(late, 0, "{method:?}: the new level is learned");
            // The spread was not blown up by the shift.
            let after = baseline.assess(at, 150.0).unwrap();
            assert!(after.spread < 6.0, "{method:?}: {after:?}");
        }
    }

    #[test]
    fn hour_of_day_learns_a_daily_cycle() {
        let hour = 60 * MINUTE;
        // Hourly points, 14 days: 10 at night (0-6 h UTC), 100 by day.
        let level = |at: i64| {
            let hour_of_day = at.div_euclid(hour).rem_euclid(24);
            if hour_of_day < 6 {
                10.0
            } else {
                100.0
            }
        };
        let mut seasonal = Baseline::new(&BaselineConfig {
            method: BaselineMethod::HourOfDay,
            warmup: 24,
            window: 10,
        });
        let mut flat = Baseline::new(&BaselineConfig::new(BaselineMethod::Ewma));
        let mut noise = Noise(9);
        for index in 0..14 * 24 {
            let at = index * hour;
            let value = level(at) + noise.next();
            seasonal.learn(at, value);
            flat.learn(at, value);
        }
        let day_start = 14 * 24 * hour;
        let three_am = day_start + 3 * hour;
        let three_pm = day_start + 15 * hour;
        assert!(seasonal.assess(three_am, 10.0).unwrap().z.abs() < 2.0);
        assert!(seasonal.assess(three_pm, 100.0).unwrap().z.abs() < 2.0);
        assert!(seasonal.assess(three_am, 100.0).unwrap().z > 10.0);
        assert!(seasonal.assess(three_pm, 10.0).unwrap().z < -10.0);
        // A flat baseline cannot tell the two apart.
        assert!(flat.assess(three_am, 100.0).unwrap().z.abs() < 3.0);
        let expected_at_night = seasonal.assess(three_am, 10.0).unwrap().expected;
        assert!(
            (expected_at_night - 10.0).abs() < 1.0,
            "{expected_at_night}"
        );
    }

    /// Minute points: `level(at)` plus uniform noise of ±3.
    fn minutes(days: i64, level: impl Fn(i64) -> f64, seed: u64) -> Vec<(i64, f64)> {
        let mut noise = Noise(seed);
        (0..days * 24 * 60)
            .map(|index| {
                let at = index * MINUTE;
                (at, level(at) + 3.0 * noise.next())
            })
            .collect()
    }

    fn minute_config(method: BaselineMethod) -> BaselineConfig {
        BaselineConfig {
            method,
            warmup: 60,
            window: 30,
        }
    }

    #[test]
    fn auto_judges_exactly_as_ewma_without_a_daily_cycle() {
        let mut auto = Baseline::new(&minute_config(BaselineMethod::Auto));
        let mut ewma = Baseline::new(&minute_config(BaselineMethod::Ewma));
        for (at, value) in minutes(4, |_| 50.0, 3) {
            assert_eq!(auto.assess(at, value), ewma.assess(at, value), "at {at}");
            auto.learn(at, value);
            ewma.learn(at, value);
        }
        let Model::Auto(state) = &auto.model else {
            panic!("auto keeps both models");
        };
        assert!(!state.daily_judges);
    }

    #[test]
    fn auto_takes_the_daily_profile_once_two_days_show_it() {
        let hour = 60 * MINUTE;
        // 10 at night (0-6 h UTC), 100 by day: a step EWMA lags behind.
        let level = |at: i64| {
            if at.div_euclid(hour).rem_euclid(24) < 6 {
                10.0
            } else {
                100.0
            }
        };
        let mut auto = Baseline::new(&minute_config(BaselineMethod::Auto));
        let mut ewma = Baseline::new(&minute_config(BaselineMethod::Ewma));
        let morning = |day: i64| day * 24 * hour + 6 * hour;
        let mut judged_like_ewma_on_day_two = None;
        // Four days and a night, up to the fifth morning.
        for (at, value) in minutes(5, level, 5) {
            if at == morning(4) {
                break;
            }
            if at == morning(1) {
                judged_like_ewma_on_day_two =
                    Some(auto.assess(at, 100.0) == ewma.assess(at, 100.0));
            }
            auto.learn(at, value);
            ewma.learn(at, value);
        }
        assert_eq!(
            judged_like_ewma_on_day_two,
            Some(true),
            "under two days it is ewma"
        );
        // The fifth day's first minute of daytime: the EWMA still expects night.
        let at = morning(4);
        assert!(ewma.assess(at, 100.0).unwrap().z > 8.0);
        assert!(auto.assess(at, 100.0).unwrap().z.abs() < 3.0);
        // And a daytime drop to the night level is still a drop.
        assert!(auto.assess(at + 3 * hour, 10.0).unwrap().z < -8.0);
    }

    #[test]
    fn hour_of_week_tells_weekdays_from_weekends() {
        let hour = 60 * MINUTE;
        // 1970-01-03 and -04 were Saturday and Sunday.
        let level = |at: i64| {
            let day = (at.div_euclid(24 * hour) + 3).rem_euclid(7);
            if day >= 5 {
                5.0
            } else {
                50.0
            }
        };
        let mut seasonal = Baseline::new(&BaselineConfig {
            method: BaselineMethod::HourOfWeek,
            warmup: 24,
            window: 10,
        });
        let mut noise = Noise(4);
        for index in 0..6 * 7 * 24 {
            let at = index * hour;
            seasonal.learn(at, level(at) + 0.5 * noise.next());
        }
        let next_week = 6 * 7 * 24 * hour;
        let saturday_noon = next_week + 2 * 24 * hour + 12 * hour;
        let monday_noon = next_week + 4 * 24 * hour + 12 * hour;
        assert_eq!(level(saturday_noon), 5.0);
        assert_eq!(level(monday_noon), 50.0);
        assert!(seasonal.assess(saturday_noon, 5.0).unwrap().z.abs() < 2.0);
        assert!(seasonal.assess(saturday_noon, 50.0).unwrap().z > 10.0);
        assert!(seasonal.assess(monday_noon, 50.0).unwrap().z.abs() < 2.0);
    }

    #[test]
    fn memory_is_bounded_and_results_are_deterministic() {
        for method in METHODS {
            let mut first = Baseline::new(&config(method));
            learn_all(&mut first, noisy(100, 10.0, 1.0, 1));
            let bytes = first.approx_bytes();
            let mut second = Baseline::new(&config(method));
            learn_all(&mut second, noisy(100, 10.0, 1.0, 1));
            learn_all(&mut first, noisy(5_000, 10.0, 1.0, 2));
            learn_all(&mut second, noisy(5_000, 10.0, 1.0, 2));
            assert_eq!(first.approx_bytes(), bytes, "{method:?}");
            assert!(bytes >= size_of::<Baseline>());
            assert_eq!(
                first.assess(0, 12.0),
                second.assess(0, 12.0),
                "{method:?}: same input, same state"
            );
            assert_eq!(first.points(), 5_100);
        }
    }

    #[test]
    fn slots_follow_utc_hours_and_monday_starts_the_week() {
        let hour = HOUR_NS;
        assert_eq!(slot_of(0, 24), 0);
        assert_eq!(slot_of(15 * hour + 59 * MINUTE, 24), 15);
        assert_eq!(slot_of(-hour, 24), 23);
        // Thursday 1970-01-01 00:00 is hour 72 of its week.
        assert_eq!(slot_of(0, 168), 72);
        // Monday 1970-01-05 00:00 starts a week.
        assert_eq!(slot_of(4 * 24 * hour, 168), 0);
    }
}
