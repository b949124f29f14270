//! # inferwatch-detect
//!
//! Turns a stream of canonical inference events (Arrow `RecordBatch`es) into
//! alert transitions, in event time, deterministically.
//!
//! It sits after decoding in the flow `sources → decode → detect → alert`.
//! A detection rule is a YAML file ([`Rule`]):
//!
//! ```yaml
//! id: canary-regression
//! title: Canary slower or failing more than its baseline
//! severity: high
//! group_by: [model_id]
//! segments:
//!   canary: ab_role == "canary"
//!   baseline: ab_role == "baseline"
//! window: 5m
//! every: 1m
//! condition: >
//!   (canary.p99(latency_ms) > 500) for 5m
//!   or (canary.error_rate() > 2 * baseline.error_rate()) for 3m
//! ```
//!
//! * `filter` and `segments` are row predicates ([`filter`]), evaluated on
//!   whole batches with Arrow kernels. `ab_role` is a column the engine adds:
//!   `baseline` or `canary` from `ab_group` in any common vocabulary
//!   (`stable`, `control`, `treatment`, …), else from the traffic ([`roles`]);
//! * the `condition` ([`condition`]) is an expression over window aggregates —
//!   `count`, `rate`, `errors`, `error_rate`, `sum`, `avg`, `min`, `max`,
//!   `stddev`, `quantile`/`pNN`/`median` (DDSketch, ≤1 % relative error) and
//!   `distinct` (HyperLogLog) — optionally qualified by a segment, with
//!   arithmetic, comparisons, `and`/`or`/`not` and `(…) for DURATION`;
//! * `for` and `keep_firing_for` drive the pending → firing → resolved
//!   lifecycle per group key;
//! * a [`baseline::Baseline`] learns what one metric series usually is
//!   (EWMA, rolling, median/MAD or an hour-of-day / hour-of-week profile),
//!   online, in bounded memory, robust to spikes, flat stretches and level
//!   shifts; [`score`] turns baselines and a random cut forest into streaming
//!   anomaly scores in [0, 1] for any `timestamp,value` CSV.
//!
//! The [`Engine`] keeps, per group key, the time buckets that hold rows as
//! mergeable summaries ([`summary`]), in tables that rules selecting,
//! grouping and ticking alike share. Its state grows with keys × buckets,
//! never with events. Windows advance by a watermark with an allowed
//! lateness; the result does not depend on how the input was batched.
//!
//! * [`slo`] evaluates service level objectives: an availability or exact
//!   latency SLI per group, multiwindow multi-burn-rate alerts (the SRE
//!   workbook's 14.4× over 1h/5m, 6× over 6h/30m, 1× over 3d/6h by default)
//!   and error budget reports, on the same event-time, batch-invariant terms
//!   as the engine ([`SloEvaluator`]).
//! * [`stats`] holds the two-sample drift tests (Kolmogorov–Smirnov,
//!   Mann–Whitney with Hodges–Lehmann shift, chi-square with Cramér's V) and
//!   distances (PSI, Jensen–Shannon, Wasserstein-1, Hellinger), each proven
//!   equal to its scipy counterpart by `tests/stats_vs_scipy.rs`; drift
//!   gates on effect size and sample size, never on a p-value alone.
//!
//! ```
//! use std::path::Path;
//! use inferwatch_detect::{Engine, Rule};
//! let rule = Rule::from_yaml_str(
//!     Path::new("slow.yaml"),
//!     "id: slow\ntitle: Slow\nseverity: high\nwindow: 5m\ncondition: p99(latency_ms) > 500\n",
//! ).unwrap();
//! let engine = Engine::new(vec![rule], &inferwatch_core::canonical_schema()).unwrap();
//! assert_eq!(engine.observable_state()[0].groups, 0);
//! ```

pub mod atlas;
pub mod baseline;
pub mod condition;
pub mod correlation;
pub mod detector;
mod engine;
mod explain;
pub mod expr;
pub mod filter;
pub mod network;
mod reference;
pub mod roles;
mod rule;
pub mod score;
pub mod slo;
pub mod stats;
pub mod summary;
mod table;

use std::path::PathBuf;

pub use engine::{Engine, EngineStats, RuleState};
pub use explain::DEFAULT_EXPLAIN_ROWS;
pub use rule::{
    load_rules_dir, Confirm, ExpectedAlert, Rule, RuleTest, SimulatedInput,
    DEFAULT_ALLOWED_LATENESS,
};
pub use slo::{load_slos, BudgetReport, Slo, SloEvaluator, SloState};

/// Errors raised while loading, validating or running rules.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A rule file is invalid; the position names the offending token.
    #[error("{}:{line}:{column}: {message}{}", path.display(), token.as_ref().map(|t| format!(" (at '{t}')")).unwrap_or_default())]
    Rule {
        /// The rule file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The offending text, when there is one.
        token: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// An SLO file is invalid; the position names the offending token.
    #[error("{}:{line}:{column}: {message}{}", path.display(), token.as_ref().map(|t| format!(" (at '{t}')")).unwrap_or_default())]
    Slo {
        /// The SLO file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The offending text, when there is one.
        token: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A rule file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A row of a series being scored is invalid ([`score`]).
    #[error("{path}:{line}: {message}")]
    Input {
        /// The input name, as given (`-` for standard input).
        path: String,
        /// 1-based line.
        line: u64,
        /// What is wrong, in lowercase.
        message: String,
    },
    /// A detector config file is invalid; the position names the offending token.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong and what was expected.
        message: String,
    },
    /// A raw event given to the correlation engine cannot be used (not an
    /// object, or no readable event time).
    #[error("event on stream '{stream}': {message}")]
    Event {
        /// The stream it was observed on.
        stream: String,
        /// What is wrong, in lowercase.
        message: String,
    },
    /// An argument is invalid, e.g. an unknown detector name.
    #[error("{0}")]
    Invalid(String),
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}
