//! Fuzzing of the detect parsers that take outside input (issue 16): rule
//! YAML ([`Rule::from_yaml_str`]) with the condition and filter expression
//! parser ([`expr::parse`]) and their compilation against the canonical
//! schema ([`Engine::check`]), the Sigma correlation loader
//! ([`CorrelationRules::from_yaml_str`] and [`CorrelationEngine::new`], then
//! a few events through it), SLO files ([`slos_from_yaml_str`]), and the
//! `score` CSV reader ([`score_csv`], which `inferwatch score` calls) with its
//! config ([`ScoreConfig::from_yaml_str`]).
//!
//! The toolchain is stable only, so these are long proptest runs, not
//! cargo-fuzz. Generators are grammar-aware (expressions from the grammar in
//! `expr`, rules, correlations and CSV built from their keys) and
//! mutational (the committed files under `rules/`, `correlations/`, `slos/`
//! and `crates/detect/tests/cases/correlation/` with bytes and tokens
//! flipped, inserted, deleted, duplicated, spliced and truncated), plus
//! random text. The property is that nothing panics (errors are fine).
//!
//! `PROPTEST_CASES` sets the cases per target (default 64, the smoke pass
//! `.ci/run` runs). A long campaign:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test -p inferwatch-detect --test fuzz_parsers -- --nocapture
//! ```
//!
//! Each target prints its inputs and wall time to stderr.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use inferwatch_core::canonical_schema;
use inferwatch_detect::correlation::{CorrelationConfig, CorrelationEngine, CorrelationRules};
use inferwatch_detect::expr;
use inferwatch_detect::score::{score_csv, ScoreConfig, ScoreOptions, SeasonalChoice};
use inferwatch_detect::slo::slos_from_yaml_str;
use inferwatch_detect::{Engine, Rule};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---------------------------------------------------------------------------
// Runner

/// Cases per target: `PROPTEST_CASES`, or a short smoke pass.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(64)
}

/// Runs `test` on `cases()` inputs of `strategy` and reports what ran.
/// Failures are shrunk and printed; they become named regression tests
/// below, not proptest-regressions files.
fn run<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let started = Instant::now();
    let executed = AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        executed.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!(
        "fuzz {name}: {} inputs executed ({} cases), {:.1} s",
        executed.load(Ordering::Relaxed),
        cases(),
        started.elapsed().as_secs_f64()
    );
    if let Err(error) = result {
        panic!("fuzz {name}: {error}");
    }
}

// ---------------------------------------------------------------------------
// Seeds: the committed files

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The text of every `*.yaml` directly under `directory` (repository
/// relative), in name order.
fn yaml_files(directory: &str) -> Vec<String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repository_root().join(directory))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "yaml")
                })
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect()
}

fn rule_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let seeds = yaml_files("rules");
        assert!(!seeds.is_empty(), "no committed rules to mutate");
        seeds
    })
}

fn correlation_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = yaml_files("correlations");
        seeds.extend(yaml_files("crates/detect/tests/cases/correlation"));
        assert!(!seeds.is_empty(), "no committed correlations to mutate");
        seeds
    })
}

fn slo_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let seeds = yaml_files("slos");
        assert!(!seeds.is_empty(), "no committed SLOs to mutate");
        seeds
    })
}

/// Conditions and filters of the committed rules, and a few more.
fn expression_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds: Vec<String> = [
            "count() >= 1000 and distinct(input_hash) / count() > 0.9",
            "(canary.p99(latency_ms) > 500 and canary.count() >= 100) for 5m or (canary.error_rate() > 2 * baseline.error_rate() + 0.01) for 3m",
            "quantile(latency_ms, 0.999) > 1e3",
            "not (error_rate() > 0.05) and count() >= 200",
            "model_id in [\"a\", \"b\"] and latency_ms is not null",
            "status != \"ok\" or http_status >= 500",
            "-avg(confidence) < -0.5",
            "p9999(ttft_ms) - median(ttft_ms) > stddev(ttft_ms) * 3",
        ]
        .iter()
        .map(|text| text.to_string())
        .collect();
        for rule in rule_seeds() {
            for line in rule.lines() {
                for key in ["condition: ", "filter: "] {
                    if let Some(rest) = line.trim_start().strip_prefix(key) {
                        if !rest.starts_with(['>', '|']) {
                            seeds.push(rest.to_string());
                        }
                    }
                }
            }
        }
        seeds
    })
}

// ---------------------------------------------------------------------------
// Mutations

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    InsertToken(Index, Index),
    Delete(Index, u8),
    Duplicate(Index, u8),
    Truncate(Index),
    Splice(Index, Index, Index, u8),
    Repeat(Index, u8, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        1 => (any::<Index>(), any::<u8>()).prop_map(|(at, byte)| Mutation::SetByte(at, byte)),
        4 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Mutation::InsertToken(at, token)),
        2 => (any::<Index>(), 1u8..24).prop_map(|(at, len)| Mutation::Delete(at, len)),
        1 => (any::<Index>(), 1u8..48).prop_map(|(at, len)| Mutation::Duplicate(at, len)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1u8..64)
            .prop_map(|(at, other, from, len)| Mutation::Splice(at, other, from, len)),
        1 => (any::<Index>(), 1u8..8, 2u8..80).prop_map(|(at, len, times)| Mutation::Repeat(at, len, times)),
    ]
}

/// Applies `mutations` to `data`; `tokens` and `others` feed insertions and
/// splices.
fn mutate<T: AsRef<[u8]>>(
    data: &mut Vec<u8>,
    mutations: &[Mutation],
    tokens: &[&str],
    others: &[T],
) {
    for mutation in mutations {
        let len = data.len();
        let at = |index: &Index| index.index(len + 1).min(len);
        match mutation {
            Mutation::FlipBit(index, bit) => {
                if len > 0 {
                    data[index.index(len)] ^= 1 << bit;
                }
            }
            Mutation::SetByte(index, byte) => {
                if len > 0 {
                    data[index.index(len)] = *byte;
                }
            }
            Mutation::InsertToken(index, token) => {
                let position = at(index);
                let token = tokens[token.index(tokens.len())].as_bytes();
                data.splice(position..position, token.iter().copied());
            }
            Mutation::Delete(index, count) => {
                let position = at(index);
                let end = (position + usize::from(*count)).min(len);
                data.drain(position..end);
            }
            Mutation::Duplicate(index, count) => {
                let position = at(index);
                let end = (position + usize::from(*count)).min(len);
                let copy = data[position..end].to_vec();
                data.splice(end..end, copy);
            }
            Mutation::Truncate(index) => data.truncate(at(index)),
            Mutation::Splice(index, other, from, count) => {
                let position = at(index);
                let other = others[other.index(others.len())].as_ref();
                let start = from.index(other.len() + 1).min(other.len());
                let end = (start + usize::from(*count)).min(other.len());
                data.splice(position..position, other[start..end].iter().copied());
            }
            Mutation::Repeat(index, count, times) => {
                let position = at(index);
                let end = (position + usize::from(*count)).min(len);
                let piece = data[position..end].to_vec();
                for _ in 0..*times {
                    data.splice(end..end, piece.iter().copied());
                }
            }
        }
    }
}

/// `seeds` mutated: mostly valid UTF-8 text (the loaders take `&str`), the
/// odd invalid byte replaced.
fn mutated_text(
    seeds: &'static [String],
    tokens: &'static [&'static str],
    mutations: std::ops::Range<usize>,
) -> impl Strategy<Value = String> {
    (any::<Index>(), prop::collection::vec(mutation(), mutations)).prop_map(
        move |(seed, mutations)| {
            let mut data = seeds[seed.index(seeds.len())].as_bytes().to_vec();
            mutate(&mut data, &mutations, tokens, seeds);
            String::from_utf8_lossy(&data).into_owned()
        },
    )
}

// ---------------------------------------------------------------------------
// Expressions

/// Tokens of the expression language and its edges.
const EXPRESSION_TOKENS: &[&str] = &[
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    " ",
    "and ",
    " or ",
    "not ",
    " for ",
    " in ",
    " is ",
    " null",
    "==",
    "!=",
    ">=",
    "<=",
    ">",
    "<",
    "+",
    "-",
    "*",
    "/",
    "\"",
    "\\",
    "'",
    "count()",
    "rate()",
    "errors()",
    "error_rate()",
    "avg(latency_ms)",
    "p99(",
    "p0(",
    "p100(",
    "p",
    "quantile(",
    "quantile(latency_ms, 2)",
    "median(",
    "distinct(",
    "stddev(",
    "sum(",
    "canary.",
    "baseline.",
    "latency_ms",
    "model_id",
    "attributes",
    "timestamp",
    "probabilities",
    "status",
    "5m",
    "0s",
    "1ns",
    "-1m",
    "9223372036854775807d",
    "99999999999999999999h",
    "1e308",
    "1e309",
    "-1e308",
    "0",
    "0.0",
    "NaN",
    "inf",
    "1e",
    ".5",
    "5.",
    "true",
    "false",
    "\"ok\"",
    "\"\\u0000\"",
    "\u{0}",
    "é",
    "\u{1F600}",
    "\u{2028}",
    "\n",
    "\t",
    "#",
    "((((((((((((((((",
];

/// An expression from the grammar in `expr`, with the aggregates and
/// columns the condition and filter compilers know (and some they do not).
fn expression() -> impl Strategy<Value = String> {
    let column = prop_oneof![
        4 => prop::sample::select(vec![
            "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "confidence", "margin",
            "entropy", "http_status", "predicted_class", "model_id", "model_version",
            "client_id", "status", "error_type", "input_hash", "ab_group", "timestamp",
            "probabilities", "logits", "attributes", "stream",
        ])
        .prop_map(str::to_string),
        1 => "[a-z_][a-z0-9_]{0,8}",
    ];
    let number = prop_oneof![
        (0u32..10_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| format!("{n}")),
        any::<f64>().prop_map(|n| format!("{n:e}")),
        "[0-9]{1,30}(\\.[0-9]{0,20})?([eE][+-]?[0-9]{1,4})?",
    ];
    let literal = prop_oneof![
        number.clone(),
        "\"[^\"\\\\]{0,8}\"",
        "\"([^\"]|\\\\[\"\\\\nrtu0])*\"",
        Just("true".to_string()),
        Just("false".to_string()),
    ];
    let aggregate = (
        prop::option::weighted(0.2, prop::sample::select(vec!["canary", "baseline", "x"])),
        prop::sample::select(vec![
            "count",
            "rate",
            "errors",
            "error_rate",
            "sum",
            "avg",
            "mean",
            "min",
            "max",
            "stddev",
            "distinct",
            "count_distinct",
            "median",
            "quantile",
            "p50",
            "p95",
            "p99",
            "p999",
            "p0",
            "p",
            "nope",
        ]),
        prop::collection::vec(prop_oneof![column.clone(), number.clone()], 0..3),
    )
        .prop_map(|(segment, function, arguments)| {
            let prefix = segment
                .map(|segment| format!("{segment}."))
                .unwrap_or_default();
            format!("{prefix}{function}({})", arguments.join(", "))
        });
    let duration = prop_oneof![
        (
            0u64..100,
            prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h", "d", "w", ""])
        )
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        "[0-9]{15,25}[smhd]",
        Just("-1m".to_string()),
    ];
    let leaf = prop_oneof![
        3 => aggregate,
        2 => column.clone(),
        2 => literal.clone(),
    ];
    leaf.prop_recursive(5, 32, 4, move |inner| {
        prop_oneof![
            4 => (
                inner.clone(),
                prop::sample::select(vec![
                    "+", "-", "*", "/", ">", ">=", "<", "<=", "==", "!=", "and", "or",
                ]),
                inner.clone(),
            )
                .prop_map(|(left, op, right)| format!("{left} {op} {right}")),
            1 => inner.clone().prop_map(|inner| format!("not {inner}")),
            1 => inner.clone().prop_map(|inner| format!("-{inner}")),
            2 => inner.clone().prop_map(|inner| format!("({inner})")),
            1 => (inner.clone(), duration.clone()).prop_map(|(inner, duration)| format!("({inner}) for {duration}")),
            1 => (column.clone(), prop::collection::vec(literal.clone(), 0..4))
                .prop_map(|(column, items)| format!("{column} in [{}]", items.join(", "))),
            1 => (column.clone(), any::<bool>()).prop_map(|(column, not)| {
                format!("{column} is {}null", if not { "not " } else { "" })
            }),
        ]
    })
}

fn any_expression() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => expression(),
        4 => mutated_text(expression_seeds(), EXPRESSION_TOKENS, 1..6),
        1 => any::<String>(),
        1 => "[a-z0-9_().,\\[\\]<>=!+*/\" -]{0,40}",
    ]
}

/// A YAML double-quoted scalar holding `text`.
fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Rules

const YAML_TOKENS: &[&str] = &[
    ":",
    ": ",
    "- ",
    "\n",
    "\n  ",
    "\n- ",
    "  ",
    "\t",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!binary ",
    "!!int ",
    "!!str ",
    "!custom ",
    "'",
    "\"",
    "\\",
    "|\n  ",
    ">-\n  ",
    "#",
    "---\n",
    "...\n",
    "{",
    "}",
    "[",
    "]",
    "? ",
    "%YAML 1.2\n---\n",
    "~",
    "null",
    "1e999",
    "-.inf",
    ".nan",
    "0x1F",
    "-1",
    "0",
    "99999999999999999999999",
    "18446744073709551616",
    "true",
    "0s",
    "1ns",
    "-5m",
    "9223372036854775807d",
    "99999999999999999999h",
    "1.5m",
    "5",
    "id: ",
    "window: ",
    "every: ",
    "for: ",
    "keep_firing_for: ",
    "allowed_lateness: ",
    "max_groups: 0",
    "condition: ",
    "filter: ",
    "segments:\n  a: ",
    "group_by: [",
    "group_by: []",
    "detector:\n  ",
    "baseline:\n    ",
    "drift:\n    ",
    "forest:\n    ",
    "threshold: ",
    "confirm:\n  ",
    "explain:\n  ",
    "tests:\n  - ",
    "severity: ",
    "count()",
    "p99(latency_ms)",
    " for 5m",
    "correlation:\n  ",
    "type: ",
    "event_count",
    "value_count",
    "temporal",
    "temporal_ordered",
    "absence",
    "rules: [",
    "expected: [",
    "group-by: [",
    "aliases:\n    ",
    "timespan: ",
    "generate: true",
    "gte: ",
    "field: ",
    "logsource:\n  ",
    "service: ",
    "detection:\n  ",
    "selection:\n    ",
    "|contains",
    "|re",
    "|cidr",
    "|all",
    "|expand",
    "|gt",
    "|startswith",
    "|base64offset",
    "|windash",
    "1 of selection*",
    "all of them",
    " and not ",
    "|",
    "(?:(?:a+)+)+$",
    "[",
    "10.0.0.0/33",
    "slos:\n  - ",
    "sli: ",
    "objective: ",
    "99.999",
    "100",
    "0",
    "latency",
    "availability",
    "\u{0}",
    "\u{FEFF}",
    "é",
];

fn durations() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1u64..120, prop::sample::select(vec!["s", "m", "h", "d"]))
            .prop_map(|(n, unit)| format!("{n}{unit}")),
        1 => prop::sample::select(vec![
            "0s", "1ns", "-1m", "9223372036854775807d", "99999999999999999999h", "1.5m",
            "5", "", "1w", "0.0001s",
        ])
        .prop_map(str::to_string),
    ]
}

/// A rule from its keys, with generated expressions in `condition`,
/// `filter` and `segments`; mostly valid.
fn generated_rule() -> impl Strategy<Value = String> {
    let group_by = prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(vec!["model_id", "model_version", "client_id", "ab_group", "status"])
                .prop_map(str::to_string),
            1 => "[a-z_.]{0,10}",
        ],
        0..3,
    );
    let detector = prop::option::weighted(
        0.25,
        prop::sample::select(vec![
            "detector:\n  baseline:\n    value: p99(latency_ms)\n    method: ewma\n    trigger: 4\n    recover: 2\n",
            "detector:\n  baseline:\n    value: count()\n    method: hour_of_week\n",
            "detector:\n  drift:\n    column: confidence\n    test: ks\n    reference: { trailing: 1d }\n",
            "detector:\n  drift:\n    column: probabilities\n    test: psi\n    reference: { segment: baseline }\n",
            "detector:\n  forest:\n    features:\n      rate: rate()\n      p95: p95(latency_ms)\n    threshold: 0.6\n",
            "detector:\n  threshold: {}\n",
        ]),
    );
    (
        (
            "[a-z][a-z0-9-]{0,12}",
            prop::sample::select(vec!["critical", "high", "medium", "low", "info", "loud"]),
            group_by,
            durations(),
            durations(),
            prop::option::weighted(0.5, durations()),
        ),
        (
            prop::option::weighted(0.8, any_expression()),
            prop::option::weighted(0.4, any_expression()),
            prop::collection::vec(("[a-z]{1,8}", any_expression()), 0..3),
            detector,
            prop::option::weighted(0.1, 0u64..200_000),
            prop::option::weighted(0.2, prop::sample::select(vec!["inference", "gateway", ""])),
        ),
    )
        .prop_map(
            |((id, severity, group_by, window, every, pending), (condition, filter, segments, detector, max_groups, stream))| {
                let mut text = format!(
                    "id: {id}\ntitle: Fuzzed rule\nseverity: {severity}\ngroup_by: [{}]\nwindow: {window}\nevery: {every}\n",
                    group_by.iter().map(|column| yaml_string(column)).collect::<Vec<_>>().join(", ")
                );
                if let Some(pending) = pending {
                    text.push_str(&format!("for: {pending}\n"));
                }
                if let Some(condition) = condition {
                    text.push_str(&format!("condition: {}\n", yaml_string(&condition)));
                }
                if let Some(filter) = filter {
                    text.push_str(&format!("filter: {}\n", yaml_string(&filter)));
                }
                if !segments.is_empty() {
                    text.push_str("segments:\n");
                    for (name, expression) in segments {
                        text.push_str(&format!("  {name}: {}\n", yaml_string(&expression)));
                    }
                }
                if let Some(detector) = detector {
                    text.push_str(detector);
                }
                if let Some(max_groups) = max_groups {
                    text.push_str(&format!("max_groups: {max_groups}\n"));
                }
                if let Some(stream) = stream {
                    text.push_str(&format!("stream: {}\n", yaml_string(stream)));
                }
                text
            },
        )
}

/// A committed rule with its `condition:` or `filter:` line replaced by a
/// fuzzed expression (a plain scalar, so YAML quoting is fuzzed too).
fn rule_with_replaced_expression() -> impl Strategy<Value = String> {
    (
        any::<Index>(),
        any_expression(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(seed, expression, filter, quoted)| {
            let seeds = rule_seeds();
            let text = &seeds[seed.index(seeds.len())];
            let value = if quoted {
                yaml_string(&expression)
            } else {
                expression.replace('\n', " ")
            };
            let key = if filter { "filter:" } else { "condition:" };
            let mut replaced = String::new();
            let mut done = false;
            let mut skipping_block = false;
            for line in text.lines() {
                if skipping_block {
                    if line.starts_with(' ') {
                        continue;
                    }
                    skipping_block = false;
                }
                if !done && line.starts_with(key) {
                    replaced.push_str(&format!("{key} {value}\n"));
                    skipping_block = line.trim_end().ends_with(['>', '|']);
                    done = true;
                } else {
                    replaced.push_str(line);
                    replaced.push('\n');
                }
            }
            if !done {
                replaced.push_str(&format!("{key} {value}\n"));
            }
            replaced
        })
}

static RULES_LOADED: AtomicU64 = AtomicU64::new(0);

/// Loads `text` as a rule and, when it loads, compiles it against the
/// canonical schema. Neither may panic.
fn load_and_compile_rule(text: &str) {
    let Ok(rule) = Rule::from_yaml_str(Path::new("rules/fuzz.yaml"), text) else {
        return;
    };
    RULES_LOADED.fetch_add(1, Ordering::Relaxed);
    let schema = canonical_schema();
    let _ = Engine::check(std::slice::from_ref(&rule), &schema);
    // A rule that passes the check must also build an engine.
    if Engine::check(std::slice::from_ref(&rule), &schema).is_empty() {
        let _ = Engine::new(vec![rule], &schema);
    }
}

/// The expression parser alone, on every kind of text.
#[test]
fn fuzz_expression_parser() {
    run("expression_parser", any_expression(), |text| {
        let _ = expr::parse(&text);
        Ok(())
    });
}

/// Rule files: generated, committed with a fuzzed condition or filter, and
/// committed mutated.
#[test]
fn fuzz_rule_yaml() {
    let before = RULES_LOADED.load(Ordering::Relaxed);
    let text = prop_oneof![
        3 => generated_rule(),
        3 => rule_with_replaced_expression(),
        3 => mutated_text(rule_seeds(), YAML_TOKENS, 1..8),
        1 => mutated_text(rule_seeds(), EXPRESSION_TOKENS, 1..4),
        1 => any::<String>(),
    ];
    run("rule_yaml", text, |text| {
        load_and_compile_rule(&text);
        Ok(())
    });
    eprintln!(
        "fuzz rule_yaml: {} rules loaded and compiled",
        RULES_LOADED.load(Ordering::Relaxed) - before
    );
}

// ---------------------------------------------------------------------------
// Sigma correlations

/// A Sigma detection rule and a correlation over it, from their keys.
fn generated_correlation() -> impl Strategy<Value = String> {
    let modifier = prop::sample::select(vec![
        "",
        "|contains",
        "|startswith",
        "|endswith",
        "|re",
        "|cidr",
        "|all",
        "|gt",
        "|lte",
        "|base64",
        "|base64offset|contains",
        "|windash",
        "|expand",
        "|exists",
        "|nope",
        "|contains|all",
        "|cased",
        "|fieldref",
    ]);
    let value = prop_oneof![
        "[a-z0-9*?/.]{0,10}".prop_map(|text| yaml_string(&text)),
        (0i64..1000).prop_map(|n| n.to_string()),
        Just("null".to_string()),
        Just("[a, b]".to_string()),
        Just("\"10.0.0.0/8\"".to_string()),
        Just("\"(a+)+$\"".to_string()),
        Just("\"[\"".to_string()),
        Just("true".to_string()),
    ];
    let selection = prop::collection::vec(
        (
            prop::sample::select(vec![
                "outcome", "method", "path", "src_ip", "status", "a.b", "",
            ]),
            modifier,
            value,
        ),
        0..4,
    );
    let condition = prop::sample::select(vec![
        "selection",
        "selection and not filter",
        "1 of selection*",
        "all of them",
        "not selection",
        "selection or",
        "",
        "selection | count() > 5",
    ]);
    let correlation_type = prop::sample::select(vec![
        "event_count",
        "value_count",
        "temporal",
        "temporal_ordered",
        "absence",
        "other",
    ]);
    let threshold = prop::sample::select(vec![
        "condition: {gte: 5}",
        "condition: {gt: 0, lt: 10}",
        "condition: {field: client_ip, gte: 2}",
        "condition: {eq: -1}",
        "condition: {gte: 1e400}",
        "condition: {}",
        "",
    ]);
    (
        selection,
        condition,
        correlation_type,
        threshold,
        durations(),
        prop::collection::vec(prop::sample::select(vec!["det", "det", "other", "chained", "det2"]), 0..3),
        prop::option::weighted(0.3, any::<bool>()),
        prop::sample::select(vec!["[src_ip]", "[]", "[client]", "[a, a]"]),
    )
        .prop_map(
            |(selection, condition, kind, threshold, timespan, rules, generate, group_by)| {
                let mut text = String::from(
                    "title: Detection\nname: det\nlogsource:\n  service: auth\ndetection:\n  selection:\n",
                );
                for (field, modifier, value) in selection {
                    text.push_str(&format!("    {}: {value}\n", yaml_string(&format!("{field}{modifier}"))));
                }
                text.push_str(&format!("  condition: {}\n", yaml_string(condition)));
                text.push_str("---\ntitle: Second\nname: det2\nlogsource: {service: inference}\ndetection:\n  selection: {status: ok}\n  condition: selection\n");
                text.push_str(&format!(
                    "---\ntitle: Correlation\nname: chained\ncorrelation:\n  type: {kind}\n  rules: [{}]\n  group-by: {group_by}\n  timespan: {timespan}\n",
                    rules.join(", ")
                ));
                if kind == "absence" {
                    text.push_str("  expected: [det2]\n");
                }
                if group_by == "[client]" {
                    text.push_str("  aliases:\n    client: {det: src_ip, det2: client_ip}\n");
                }
                if !threshold.is_empty() {
                    text.push_str(&format!("  {threshold}\n"));
                }
                if let Some(generate) = generate {
                    text.push_str(&format!("  generate: {generate}\n"));
                }
                text
            },
        )
}

/// A few raw events for a loaded correlation engine.
fn events() -> impl Strategy<Value = Vec<(String, serde_json::Value)>> {
    let event = (
        prop::sample::select(vec!["auth", "inference", "gateway", "deploy", ""]),
        prop::option::weighted(
            0.9,
            prop_oneof![
                (1_767_225_600i64..1_767_229_200).prop_map(serde_json::Value::from),
                (0i64..3600).prop_map(|s| serde_json::Value::from(format!(
                    "2026-01-01T00:{:02}:{:02}Z",
                    s / 60,
                    s % 60
                ))),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::from("soon")),
            ],
        ),
        prop::collection::vec(
            (
                prop::sample::select(vec![
                    "outcome",
                    "method",
                    "path",
                    "src_ip",
                    "client_ip",
                    "status",
                    "action",
                    "model_id",
                    "a",
                ]),
                prop_oneof![
                    prop::sample::select(vec![
                        "failure", "password", "/v1/x", "10.0.0.1", "ok", "rollout", "canary"
                    ])
                    .prop_map(serde_json::Value::from),
                    any::<i64>().prop_map(serde_json::Value::from),
                    Just(serde_json::Value::Null),
                    Just(serde_json::json!({"b": [1, "x"]})),
                    "[^\\u{0}]{0,8}".prop_map(serde_json::Value::from),
                ],
            ),
            0..5,
        ),
    )
        .prop_map(|(stream, time, fields)| {
            let mut object = serde_json::Map::new();
            if let Some(time) = time {
                object.insert("timestamp".into(), time);
            }
            for (key, value) in fields {
                object.insert(key.into(), value);
            }
            (stream.to_string(), serde_json::Value::Object(object))
        });
    prop::collection::vec(event, 0..8)
}

/// Correlation files: generated, mutated committed ones and random text;
/// what loads builds an engine and sees a few events.
#[test]
fn fuzz_sigma_correlation_loader() {
    let engines = AtomicU64::new(0);
    let text = prop_oneof![
        3 => generated_correlation(),
        4 => mutated_text(correlation_seeds(), YAML_TOKENS, 1..8),
        1 => any::<String>(),
    ];
    run(
        "sigma_correlation_loader",
        (text, events()),
        |(text, events)| {
            let Ok(rules) =
                CorrelationRules::from_yaml_str(Path::new("correlations/fuzz.yaml"), &text)
            else {
                return Ok(());
            };
            let Ok(mut engine) = CorrelationEngine::new(rules, CorrelationConfig::default()) else {
                return Ok(());
            };
            engines.fetch_add(1, Ordering::Relaxed);
            let _ = engine.external_rules();
            for (stream, event) in &events {
                let _ = engine.observe_event(stream, event);
                let _ = engine.poll();
            }
            let _ = engine.advance_watermark(i64::MAX);
            let _ = engine.flush();
            Ok(())
        },
    );
    eprintln!(
        "fuzz sigma_correlation_loader: {} engines built",
        engines.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------
// SLO files

#[test]
fn fuzz_slo_yaml() {
    let text = prop_oneof![
        4 => mutated_text(slo_seeds(), YAML_TOKENS, 1..8),
        1 => mutated_text(slo_seeds(), EXPRESSION_TOKENS, 1..4),
        1 => any::<String>(),
    ];
    run("slo_yaml", text, |text| {
        let _ = slos_from_yaml_str(Path::new("slos/fuzz.yaml"), &text);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// `score` CSV and its config

const CSV_TOKENS: &[&str] = &[
    ",",
    "\n",
    "\r\n",
    "\r",
    "\"",
    "\"\"",
    " ",
    "\t",
    "timestamp",
    "value",
    "\u{FEFF}",
    "NaN",
    "inf",
    "-inf",
    "1e308",
    "-1e308",
    "1e309",
    "0",
    "-0",
    "",
    "2014-02-14 14:30:00",
    "2026-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "1767225600",
    "1767225600000",
    "99999999999999999999",
    "-9223372036854775808",
    "\u{0}",
    "\u{FFFD}",
    "é",
    "2014-02-14T14:30:00+99:99",
    "2014-02-14 14:30:00.123456789123",
];

/// `at` seconds after 2026-01-01 in one of the accepted forms.
fn csv_timestamp(form: u8, at: i64) -> String {
    let (day, h, m, s) = (1 + at / 86_400 % 28, at / 3600 % 24, at / 60 % 60, at % 60);
    match form {
        0 => format!("{}", 1_767_225_600 + at),
        1 => format!("{}", (1_767_225_600 + at) * 1000),
        2 => format!("2026-01-{day:02} {h:02}:{m:02}:{s:02}"),
        _ => format!("2026-01-{day:02}T{h:02}:{m:02}:{s:02}.5Z"),
    }
}

fn csv_value() -> impl Strategy<Value = String> {
    prop_oneof![
        600 => (-1e3f64..1e3).prop_map(|value| format!("{value}")),
        30 => any::<f64>().prop_map(|value| format!("{value}")),
        30 => prop::sample::select(vec!["", "NaN", "inf", "-inf", "1e308", "-1e308", " 5 ", "0"])
            .prop_map(str::to_string),
        1 => prop::sample::select(vec!["abc", "1.2.3", "\"7\"", "0x10", "1_000", "1e309"])
            .prop_map(str::to_string),
    ]
}

/// A CSV series: a header, then rows in time order (steps of 0 to an hour,
/// the odd one backwards), each row now and then corrupted by a token.
fn generated_csv() -> impl Strategy<Value = String> {
    let header = prop::sample::select(vec![
        "timestamp,value",
        "timestamp,value",
        "value,timestamp",
        "Timestamp , VALUE",
        "\u{FEFF}timestamp,value,extra",
        "\"timestamp\",\"value\"",
        "time,value",
        "timestamp",
        "",
    ]);
    let row = (
        prop_oneof![300 => 0i64..3600, 1 => -100i64..0],
        csv_value(),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.001, prop::sample::select(CSV_TOKENS)),
    );
    (
        header,
        0u8..4,
        prop::collection::vec(row, 0..200),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(header, form, rows, crlf, trailing)| {
            let ending = if crlf { "\r\n" } else { "\n" };
            let swapped = header.starts_with("value");
            let mut text = format!("{header}{ending}");
            let mut at = 0i64;
            for (step, value, extra, corruption) in rows {
                at += step;
                let timestamp = match corruption {
                    Some(token) => token.to_string(),
                    None => csv_timestamp(form, at),
                };
                if swapped {
                    text.push_str(&format!("{value},{timestamp}"));
                } else {
                    text.push_str(&format!("{timestamp},{value}"));
                }
                if extra {
                    text.push_str(",x");
                }
                text.push_str(ending);
            }
            if !trailing {
                text.truncate(text.len() - ending.len());
            }
            text
        })
}

/// A small config, so the forest stays fast.
fn small_score_config() -> impl Strategy<Value = ScoreConfig> {
    (
        0usize..10,
        1usize..50,
        prop::sample::select(vec![
            SeasonalChoice::Auto,
            SeasonalChoice::HourOfDay,
            SeasonalChoice::HourOfWeek,
        ]),
        1usize..6,
        1usize..4,
        16usize..40,
        any::<u64>(),
    )
        .prop_map(
            |(warmup, half_life, seasonal, shingle_size, trees, tree_capacity, seed)| ScoreConfig {
                warmup,
                half_life,
                seasonal,
                shingle_size,
                trees,
                tree_capacity,
                seed,
            },
        )
}

fn csv_seeds() -> &'static [String] {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut text = String::from("timestamp,value\n");
        for minute in 0..120 {
            let value = if minute == 90 { 500.0 } else { 10.0 + f64::from(minute % 7) };
            text.push_str(&format!("2014-02-14 {:02}:{:02}:00,{value}\n", 10 + minute / 60, minute % 60));
        }
        vec![
            text,
            "timestamp,value\n1767225600,1\n1767225660,2\n1767225720,\n1767225780,NaN\n".to_string(),
            "value,timestamp,note\n1.5,2026-01-01T00:00:00Z,\"a, b\"\n2.5,2026-01-01T00:01:00Z,\"\"\"\"\n".to_string(),
        ]
    })
}

#[test]
fn fuzz_score_csv() {
    let input = prop_oneof![
        4 => generated_csv().prop_map(String::into_bytes),
        3 => (any::<Index>(), prop::collection::vec(mutation(), 1..8)).prop_map(|(seed, mutations)| {
            let seeds = csv_seeds();
            let mut data = seeds[seed.index(seeds.len())].as_bytes().to_vec();
            mutate(&mut data, &mutations, CSV_TOKENS, seeds);
            data
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ];
    let scored = AtomicU64::new(0);
    run(
        "score_csv",
        (
            input,
            prop::sample::select(vec!["ewma", "seasonal", "forest", "auto", "auto", "nope"]),
            prop::option::weighted(0.7, small_score_config()),
        ),
        |(input, detector, config)| {
            let options = ScoreOptions {
                detector: detector.to_string(),
                config,
            };
            let mut output = Vec::new();
            if let Ok(summary) = score_csv(input.as_slice(), "fuzz.csv", &mut output, &options) {
                scored.fetch_add(summary.rows, Ordering::Relaxed);
                // One output row per input row, after the header.
                let written = output.iter().filter(|byte| **byte == b'\n').count() as u64;
                prop_assert!(written > summary.rows, "{written} lines for {summary:?}");
            }
            Ok(())
        },
    );
    eprintln!(
        "fuzz score_csv: {} rows scored",
        scored.load(Ordering::Relaxed)
    );
}

#[test]
fn fuzz_score_config_yaml() {
    const SEEDS: &[&str] = &[
        "warmup: 64\nhalf_life: 60\nseasonal: auto\nshingle_size: 8\ntrees: 50\ntree_capacity: 256\nseed: 42\n",
        "seasonal: hour_of_week\ntrees: 1\n",
        "",
    ];
    static OWNED: OnceLock<Vec<String>> = OnceLock::new();
    let seeds = OWNED.get_or_init(|| SEEDS.iter().map(|seed| seed.to_string()).collect());
    let text = prop_oneof![
        4 => mutated_text(seeds, YAML_TOKENS, 1..6),
        1 => any::<String>(),
    ];
    run("score_config_yaml", text, |text| {
        let _ = ScoreConfig::from_yaml_str(Path::new("score.yaml"), &text);
        Ok(())
    });
}

// ---------------------------------------------------------------------------
// Regression tests for what the campaigns found (issue 16).

/// `score --detector forest` on values near f64::MAX: the forest's guard
/// baseline overflowed, its clamp bounds became NaN and `f64::clamp`
/// panicked. Found by `fuzz_score_csv`; the input is the shrunk one.
#[test]
fn issue_16_fuzz_score_csv_huge_values() {
    let huge = format!("-10713458623543596{}", "0".repeat(233));
    let mut values: Vec<&str> = vec!["0"; 10];
    values.push(&huge);
    values.extend(["0"; 7]);
    values.push("-1e308");
    values.extend(["0"; 60]);
    values.push("1e308");
    values.extend(["0"; 4]);
    values.push("1e308");
    values.extend(["0"; 10]);
    let mut csv = String::from("timestamp,value\n");
    let rows: Vec<String> = values
        .iter()
        .map(|value| format!("1767225600,{value}"))
        .collect();
    csv.push_str(&rows.join("\n"));
    for detector in ["forest", "auto"] {
        let options = ScoreOptions {
            detector: detector.to_string(),
            config: None,
        };
        let mut output = Vec::new();
        let summary = score_csv(csv.as_bytes(), "huge.csv", &mut output, &options)
            .expect("huge finite values are scored");
        assert_eq!(summary.rows, values.len() as u64);
    }
}

/// A window that `every` does not divide into a round step: the engine's
/// ring of gcd(window, every)-wide buckets needed billions of slots and the
/// process aborted on a 32 GB allocation. Found by `fuzz_rule_yaml`; such a
/// rule is now refused when it loads, naming the line of `every`.
#[test]
fn issue_16_fuzz_rule_window_buckets() {
    let rule = |window: &str, every: &str| {
        format!(
            "id: tiny-bucket\ntitle: t\nseverity: low\ngroup_by: []\nwindow: {window}\nevery: {every}\ncondition: count() > 1\n"
        )
    };
    for (window, every) in [("1h", "7ns"), ("5m", "1ns"), ("1ns", "1h")] {
        let text = rule(window, every);
        let error = Rule::from_yaml_str(Path::new("rules/fuzz.yaml"), &text)
            .expect_err("a rule with billions of buckets is refused");
        let message = error.to_string();
        assert!(message.contains("rules/fuzz.yaml:6:"), "{message}");
        assert!(message.contains("buckets"), "{message}");
        // And it never reaches the engine.
        load_and_compile_rule(&text);
    }
    // Round steps still load and compile.
    for (window, every) in [("1h", "7s"), ("7d", "1m"), ("1s", "1ms")] {
        let rule = Rule::from_yaml_str(Path::new("rules/fuzz.yaml"), &rule(window, every))
            .expect("a round step loads");
        assert!(Engine::check(&[rule], &canonical_schema()).is_empty());
    }
}
