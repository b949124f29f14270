//! # inferwatch-sim
//!
//! A deterministic synthetic model fleet: it writes the JSON lines that model
//! servers would log (one object per inference request), with labelled faults
//! and attacks injected at known times, so that rules, detectors and the whole
//! pipeline can be tested, tuned and benchmarked without production data.
//!
//! ## Where it sits
//!
//! The simulator is a *source of input*, outside the data flow
//! `sources → decode+map → enrich → batch → detect → alert`. Its output uses
//! the canonical column names ([`inferwatch_core::column`]), so the default
//! field mapping reads it as is, and its labels file (one [`Incident`] per
//! line) is the ground truth against which alerts are scored. Of the
//! project it depends only on `inferwatch-core`. The `inferwatch simulate`
//! subcommand is a thin wrapper around [`generate`] and [`incidents`];
//! [`deploy_records`] gives the fleet's deploys (simulated commit times) for
//! DORA metrics; [`router`] is the live fleet's control plane (rollbacks
//! over HTTP, axum); [`noise`] is what honest fleets do that looks odd.
//!
//! ## The event
//!
//! One JSON object per line, fields always in this order:
//!
//! ```text
//! {"timestamp":"2026-01-01T00:00:00.123Z","model_id":"recsys","model_version":"2.0",
//!  "ab_group":"baseline","request_id":"r-000000000001a2b3","client_id":"c-00042",
//!  "client_ip":"10.66.153.229","source_id":"src-03","status":"ok","http_status":200,
//!  "latency_ms":123.4,"input_tokens":312,"output_tokens":20,"input_hash":"9f2c0a4b1d7e3c55",
//!  "predicted_class":0,"confidence":0.71,"probabilities":[0.71,0.12,0.09,0.05,0.03]}
//! ```
//!
//! * `timestamp`: RFC 3339 UTC, always millisecond precision; lines are sorted
//!   by it;
//! * failed requests have `"status":"error"`, an `error_type` (`timeout` 504,
//!   `internal` 500, `unavailable` 503, `rate_limited` 429) placed before
//!   `http_status`, `output_tokens` 0, and no class fields;
//! * `chat-llm` logs `ttft_ms` (after `latency_ms`) and no class fields;
//! * the classifiers log `predicted_class` (argmax), `confidence` (its
//!   probability) and `probabilities`, rounded to 4 decimals;
//! * `request_id` is `r-` and 16 hex digits, unique within a run;
//! * `input_hash` is 16 hex digits.
//!
//! Lines are 345 to 460 bytes, 416 on average.
//!
//! ## The fleet (fixed; the seed only drives the traffic)
//!
//! | model | version (`ab_group`) | traffic share | median latency | p99 / median | timeout | input tokens (median, σ) | output tokens | classes (concentration) |
//! |---|---|---|---|---|---|---|---|---|
//! | `recsys` | `2.0` (baseline), `2.1` (canary) | 40.5 %, 4.5 % | 160 ms | 2.01 (p99 321 ms) | 1.5 s | 300, 0.35 | ~20 | 5 (16) |
//! | `fraud` | `1.3` (baseline) | 25 % | 25 ms | 2.01 (p99 50 ms) | 0.5 s | 120, 0.2 | 1 | 2 (9) |
//! | `chat-llm` | `4.0` (baseline) | 10 % | 2 400 ms | 2.01 (p99 4.8 s) | 30 s | 800, 0.5 | ~250 | none; logs `ttft_ms` |
//! | `vision` | `3.2` (baseline) | 20 % | 60 ms | 2.01 (p99 121 ms) | 2 s | 1 024, 0.1 | 1 | 10 (30) |
//!
//! * **Latency** is log-normal with a total log-sigma of 0.30 per model, so
//!   within any window p99 ≈ 2.0 × median. Its log is the sum of the model's
//!   log-median, the daily cycle, `elasticity × ln(tokens / median tokens)`
//!   (input elasticity 0.3, 0.5 for `vision`; output elasticity 0.4 for
//!   `chat-llm`) and independent noise. Longer inputs therefore *cause*
//!   longer latency.
//! * **Daily cycle**: medians are multiplied by
//!   `1 + 0.2 cos(2π (hour_utc − 14) / 24)`: ×1.2 at 14:00 UTC, ×0.8 at
//!   02:00 UTC, ×1.0 at 08:00 and 20:00. The medians above are at ×1.0. A
//!   run from the default start (`2026-01-01T00:00:00Z`) sits at ×0.81–0.83
//!   for its first hour (so `recsys` shows a median near 131 ms and p99 near
//!   265 ms there). Even at the daily peak, p99 stays below 2.45 × the
//!   table's median.
//! * **Errors**: 0.3 % of every version's requests outside incidents (30 %
//!   `timeout`, 50 % `internal`, 20 % `rate_limited`). At the default rate
//!   (300 ev/s) the smallest slice, the `recsys` 2.1 canary, gets 13.5 ev/s,
//!   about 4 000 events per 5 minutes, so its 5-minute error rate stays far
//!   below 2 % and no version is ever silent for a minute.
//! * **Confidence**: the probabilities are a Dirichlet draw with parameter
//!   `c` on the true class (drawn from the model's class prior) and 1 on the
//!   others; mean confidence is about 0.80 (`recsys`), 0.90 (`fraud`) and
//!   0.77 (`vision`), mostly between 0.6 and 0.99.
//! * **Clients**: 2 000 clients `c-00000` .. `c-01999` with Zipf(0.8)
//!   popularity (the busiest sends 5.4 % of the traffic), each with one
//!   stable address in `10.0.0.0/8`. 30 % of a client's inputs are new; the
//!   rest repeat one of its 32 usual inputs, so a busy client's unique-input
//!   ratio is 0.3–0.5. [`SimConfig::clients`] (`--clients`, 1 to 2 000 000)
//!   changes the count: client `i` is still the `i`-th most popular, ids
//!   grow past five digits when needed, and ordinary clients skip the
//!   attackers' numbers (`c-20000` .. `c-20039` and `c-31337`; client
//!   20 000 is `c-20040`), so attackers' ids and addresses never change.
//!   Client fields are formatted per event, so a million clients cost only
//!   the 12-byte-per-client popularity table.
//! * **Sources**: `src-00` .. `src-19`, uniform.
//!
//! ## Scenarios
//!
//! | scenario | what changes during the incident | label key |
//! |---|---|---|
//! | `baseline` | nothing (no incident) | – |
//! | `latency-regression` | `fraud` latency ×3 | `model_id=fraud` |
//! | `error-spike` | `vision` error rate 15 % (500 / 503) | `model_id=vision` |
//! | `canary-regression` | `recsys` 2.1 latency ×2.2 (p99 ≥ 550 ms), errors 6 %; both tunable (below) | `model_id=recsys, model_version=2.1` |
//! | `poisoned-source` | `src-07` inputs: concentration 2.5 instead of 9–30, 60 % forced to the last class | `source_id=src-07` |
//! | `input-length-shift` | `recsys` input tokens ×4, latency ×1.5 through the elasticity | `model_id=recsys` |
//! | `extraction` | new client `c-31337` from `203.0.113.77` queries `vision` at +10 % of the rate (+30 ev/s at the default), every input unique | `client_id=c-31337` |
//! | `dos` | 40 new clients (`c-20000`.., `198.51.100.10`..) add 2× `chat-llm`'s volume with ~8k-token prompts; `chat-llm` overloads: latency ×2.5, 20 % errors (429 / 503) | `model_id=chat-llm` |
//! | `partial-outage` | `fraud` keeps 2 % of its traffic | `model_id=fraud` |
//! | `stolen-key` | `c-00002`'s key also used from 60 addresses in 60 new /16s (`45.60.0.0`..), +2 % of the rate | `client_id=c-00002` |
//! | `cost-harvesting` | `c-00008` adds 2× its rate to `chat-llm` in ~16k-token prompts asking for 4× longer answers | `client_id=c-00008` |
//! | `adversarial-probing` | new client `c-8000001` sends `vision` variations of 40 inputs (+1 %), answered within 0.02 of the decision boundary | `client_id=c-8000001` |
//! | `membership-inference` | new client `c-8000002` asks `fraud` about one record (+0.5 %), answers identical up to float noise | `client_id=c-8000002` |
//! | `inversion` | new client `c-8000003` sends `vision` unique inputs (+1 %) all answered class 3, more confidently over time | `client_id=c-8000003` |
//! | `slow-drift` | `vision`'s true-class weight falls linearly to 15 % (confidence erodes) | `model_id=vision` |
//!
//! `--noise` ([`noise`]) adds benign patterns on top of any scenario; they
//! are not incidents and are not labelled.
//!
//! The canary's regression is set by [`SimConfig::canary_latency_factor`]
//! (`--canary-latency-factor`, default 2.2; 1.0 keeps its latency equal to
//! the baseline arm's, 1.2 makes it 20 % slower) and
//! [`SimConfig::canary_error_rate`] (`--canary-error-rate`, default 0.06; 0
//! keeps the background 0.3 %, for a latency-only regression). The label is
//! the same whatever they are.
//!
//! The timing rule is in [`incidents`]: with one scenario, the incident starts
//! at 40 % of the duration (whole minutes) and lasts `min(20 min, 30 %)`;
//! several scenarios are staggered so that they don't overlap.
//!
//! ## Determinism and speed
//!
//! Simulated time is cut into one-second chunks. Each chunk draws from its
//! own `Xoshiro256PlusPlus`, seeded from `(seed, chunk index)`, and chunks
//! are written in order, so the output is byte-identical for the same
//! configuration whatever the number of threads. Worker threads format
//! chunks into reused buffers (no per-event allocation) while the calling
//! thread writes them.
//!
//! ## Example
//!
//! ```
//! use inferwatch_sim::{generate, incidents, Scenario, SimConfig};
//!
//! let config = SimConfig {
//!     scenarios: Scenario::parse_list("latency-regression").unwrap(),
//!     duration_ns: inferwatch_core::parse_duration("10m").unwrap(),
//!     rate: 20.0,
//!     ..SimConfig::default()
//! };
//! let labels = incidents(&config);
//! assert_eq!(labels[0].key["model_id"], "fraud");
//! let mut output = Vec::new();
//! let summary = generate(&config, &mut output).unwrap();
//! assert_eq!(summary.events, output.iter().filter(|&&byte| byte == b'\n').count() as u64);
//! ```

mod deploys;
mod fleet;
mod foreign;
mod format;
mod generate;
pub mod noise;
pub mod router;
mod scenario;

pub use deploys::{deploy_records, DeployRecord, SIMULATED_LEAD_TIMES_S};
pub use fleet::{
    client_id, client_ip, client_number, daily_cycle, source_id, Deployment, ModelProfile,
    BACKGROUND_ERROR_RATE, CLIENT_COUNT, CLIENT_ZIPF_EXPONENT, DAILY_CYCLE_AMPLITUDE,
    DAILY_CYCLE_PEAK_HOUR, DEPLOYMENTS, FRESH_INPUT_SHARE, INPUT_POOL_SIZE, MAX_CLIENTS, MODELS,
    SOURCE_COUNT,
};
pub use foreign::{foreign_line, foreign_lines, foreign_value, ForeignWriter, FOREIGN_MAPPING};
pub use generate::Routing;
pub use scenario::{incidents, targets, Incident, Scenario};

use std::io::Write;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A scenario name is not one of [`Scenario::ALL`].
    #[error("unknown scenario '{name}'; valid scenarios: {valid}")]
    UnknownScenario {
        /// The name that was given.
        name: String,
        /// The valid names, comma separated.
        valid: String,
    },
    /// A configuration value is out of range.
    #[error("invalid simulation config: {0}")]
    InvalidConfig(String),
    /// Writing the output failed.
    #[error("cannot write simulated events: {0}")]
    Write(#[source] std::io::Error),
    /// The live fleet's traffic router could not start or log.
    #[error("router: {context}: {source}")]
    Router {
        /// What it was doing.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Scenarios to inject (empty or `[Baseline]`: no incident).
    pub scenarios: Vec<Scenario>,
    /// Simulated time span, nanoseconds.
    pub duration_ns: i64,
    /// Seed of every random draw.
    pub seed: u64,
    /// Fleet traffic in events per second (attacks add to it).
    pub rate: f64,
    /// Event time of the first instant, UTC nanoseconds.
    pub start_ns: i64,
    /// Worker threads; 0 picks the number of cores (at most 4). The output
    /// does not depend on it.
    pub threads: usize,
    /// Ordinary clients, `1 ..= MAX_CLIENTS` (default [`CLIENT_COUNT`]):
    /// indices `0 .. clients` with Zipf popularity. The attackers' ids and
    /// addresses do not depend on it.
    pub clients: usize,
    /// Latency factor applied to the `recsys` 2.1 canary during
    /// `canary-regression`, `> 0` (default
    /// [`targets::CANARY_LATENCY_FACTOR`]; 1 leaves its latency alone).
    pub canary_latency_factor: f64,
    /// Error rate of the canary during `canary-regression`, in `[0, 1]`
    /// (default [`targets::CANARY_ERROR_RATE`]). A rate below the background
    /// 0.3 % leaves the background errors, so 0 simulates a latency-only
    /// regression.
    pub canary_error_rate: f64,
    /// Adds the benign noise of [`noise`]: a busy QA client, a backfill,
    /// mobile clients, one-minute blips and new clients over the day.
    pub noise: bool,
}

impl Default for SimConfig {
    /// Baseline, 1 h from `2026-01-01T00:00:00Z`, 300 ev/s, seed 42, 2 000
    /// clients, a canary regression of ×2.2 latency and 6 % errors.
    fn default() -> Self {
        Self {
            scenarios: vec![Scenario::Baseline],
            duration_ns: 3_600 * inferwatch_core::NANOS_PER_SECOND,
            seed: 42,
            rate: 300.0,
            start_ns: 1_767_225_600 * inferwatch_core::NANOS_PER_SECOND,
            threads: 0,
            clients: CLIENT_COUNT,
            canary_latency_factor: targets::CANARY_LATENCY_FACTOR,
            canary_error_rate: targets::CANARY_ERROR_RATE,
            noise: false,
        }
    }
}

impl SimConfig {
    /// Checks the ranges: a rate in `[0, 10 000 000]`, a non-negative
    /// duration, a start at or after 1970 such that the end is
    /// representable, `1 ..= 2 000 000` clients, a finite canary latency
    /// factor in `(0, 1000]` and a canary error rate in `[0, 1]`.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(1..=MAX_CLIENTS).contains(&self.clients) {
            return Err(SimError::InvalidConfig(format!(
                "clients {} is not between 1 and {MAX_CLIENTS}",
                self.clients
            )));
        }
        let factor = self.canary_latency_factor;
        if !factor.is_finite() || factor <= 0.0 || factor > MAX_CANARY_LATENCY_FACTOR {
            return Err(SimError::InvalidConfig(format!(
                "canary latency factor {factor} is not above 0 and at most \
                 {MAX_CANARY_LATENCY_FACTOR}"
            )));
        }
        let error_rate = self.canary_error_rate;
        if !(0.0..=1.0).contains(&error_rate) {
            return Err(SimError::InvalidConfig(format!(
                "canary error rate {error_rate} is not between 0 and 1"
            )));
        }
        if !self.rate.is_finite() || self.rate < 0.0 || self.rate > generate::MAX_RATE {
            return Err(SimError::InvalidConfig(format!(
                "rate {} is not between 0 and {} events per second",
                self.rate,
                generate::MAX_RATE
            )));
        }
        if self.duration_ns < 0 {
            return Err(SimError::InvalidConfig(format!(
                "duration {} ns is negative",
                self.duration_ns
            )));
        }
        if self.start_ns < 0 || self.start_ns.checked_add(self.duration_ns).is_none() {
            return Err(SimError::InvalidConfig(
                "start must be between 1970 and 2262, end included".to_string(),
            ));
        }
        Ok(())
    }

    fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism()
            .map(|count| count.get())
            .unwrap_or(1)
            .min(4)
    }
}

/// Highest accepted [`SimConfig::canary_latency_factor`].
pub const MAX_CANARY_LATENCY_FACTOR: f64 = 1_000.0;

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSummary {
    /// Lines (events) written.
    pub events: u64,
    /// Bytes written.
    pub bytes: u64,
    /// The injected incidents, as [`incidents`] returns them.
    pub incidents: Vec<Incident>,
}

/// Like [`generate`], paced to wall-clock time: simulated second `n` is
/// written `n / speed` seconds after the call, and `routing` (called with
/// each second's event time, ns) says which deployments take its traffic.
/// This is the live fleet behind `inferwatch simulate --live`: a rollback
/// applied to the routing stops the canary's traffic from the next second.
pub fn generate_live(
    config: &SimConfig,
    writer: impl Write,
    speed: f64,
    routing: impl FnMut(i64) -> Routing,
) -> Result<SimSummary, SimError> {
    // Validated before `incidents` places anything by it.
    config.validate()?;
    generate_live_scheduled(config, incidents(config), writer, speed, routing)
}

/// [`generate_live`] with the incidents given instead of the ones
/// [`incidents`] places: each may start or end outside the run (it then
/// affects only the part inside). `inferwatch demo` uses it to have its
/// incidents under way when the live traffic starts.
pub fn generate_live_scheduled(
    config: &SimConfig,
    incidents: Vec<Incident>,
    mut writer: impl Write,
    speed: f64,
    mut routing: impl FnMut(i64) -> Routing,
) -> Result<SimSummary, SimError> {
    config.validate()?;
    if !speed.is_finite() || speed <= 0.0 {
        return Err(SimError::InvalidConfig(format!(
            "speed {speed} is not a positive number"
        )));
    }
    let plan = generate::Plan::new(config, incidents)?;
    generate::run_live(&plan, &mut writer, speed, &mut routing)
}

/// [`generate`] with the incidents given instead of the ones [`incidents`]
/// places (see [`generate_live_scheduled`]).
pub fn generate_scheduled(
    config: &SimConfig,
    incidents: Vec<Incident>,
    mut writer: impl Write,
) -> Result<SimSummary, SimError> {
    config.validate()?;
    let plan = generate::Plan::new(config, incidents)?;
    generate::run(&plan, config.worker_threads(), &mut writer)
}

/// Writes the simulated events of `config` to `writer`, one JSON object per
/// line, sorted by timestamp. Large writes (one simulated second at a time)
/// are issued, so wrapping `writer` in a `BufWriter` is optional.
pub fn generate(config: &SimConfig, mut writer: impl Write) -> Result<SimSummary, SimError> {
    config.validate()?;
    let plan = generate::Plan::new(config, incidents(config))?;
    generate::run(&plan, config.worker_threads(), &mut writer)
}

#[cfg(test)]
mod tests;
