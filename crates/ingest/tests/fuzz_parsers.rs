//! Fuzzing of the ingest parsers that take outside input (issue 16): the
//! NDJSON decoder ([`Decoder::decode`], flat fast path and general sonic-rs
//! walk, with the built-in mapping and with user mappings), the generic
//! stream decoder ([`GenericDecoder::decode`]) and the mapping YAML
//! ([`Mapping::from_yaml_str`]).
//!
//! The toolchain is stable only, so these are long proptest runs, not
//! cargo-fuzz. Generators are grammar-aware (flat lines of the shapes model
//! servers write, nested JSON with escapes, mapping YAML built from its
//! keys) and mutational (committed golden inputs and mappings with bytes and
//! tokens flipped, inserted, deleted, duplicated, spliced and truncated),
//! plus plain random bytes.
//!
//! Properties: nothing panics, and for the decoders every line of a chunk
//! ends as exactly one row, one dead letter or one blank line, at its own
//! line number.
//!
//! `PROPTEST_CASES` sets the cases per target (default 64, the smoke pass
//! `.ci/run` runs). A long campaign:
//!
//! ```text
//! PROPTEST_CASES=200000 cargo test -p inferwatch-ingest --test fuzz_parsers -- --nocapture
//! ```
//!
//! Each target prints its cases, lines and wall time to stderr.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use inferwatch_ingest::{
    batch_to_json_rows, Chunk, DeadLetterKind, DecodedBatch, Decoder, GenericDecoder, Mapping,
};
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
    let lines_before = LINES_DECODED.load(Ordering::Relaxed);
    let executed = AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        executed.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    // Lines are counted binary-wide: exact with `--test-threads=1`.
    eprintln!(
        "fuzz {name}: {} inputs executed ({} cases), {} lines decoded, {:.1} s",
        executed.load(Ordering::Relaxed),
        cases(),
        LINES_DECODED.load(Ordering::Relaxed) - lines_before,
        started.elapsed().as_secs_f64()
    );
    if let Err(error) = result {
        panic!("fuzz {name}: {error}");
    }
}

// ---------------------------------------------------------------------------
// Seeds

const GOLDEN_INPUTS: [&[u8]; 8] = [
    include_bytes!("../../../tests/cases/ingest/bad-input-mixed/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/canonical/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/crlf-and-blank-lines/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/enrichment/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/fastapi-logits/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/otel/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/unmapped-and-duplicate-keys/input.jsonl"),
    include_bytes!("../../../tests/cases/ingest/user-mapping-nested-coercion-hash/input.jsonl"),
];

/// Lines shaped like the simulator's and like the servers in the README.
const SIMULATED_LINES: [&str; 6] = [
    r#"{"timestamp":"2026-01-01T00:00:00.123456Z","stream":"inference","model_id":"fraud","model_version":"3.2","ab_group":"baseline","request_id":"r-000001","client_id":"c-00017","client_ip":"10.1.2.3","status":"ok","http_status":200,"latency_ms":41.25,"ttft_ms":12.5,"input_tokens":312,"output_tokens":0,"input_hash":"5e884898da280471","predicted_class":1,"confidence":0.93,"probabilities":[0.07,0.93]}"#,
    r#"{"timestamp":1767225600123,"model_id":"chat-llm","model_version":"7","client_id":"c-31337","status":"error","error_type":"Timeout","http_status":504,"latency_ms":30000,"input_tokens":4096,"output_tokens":17}"#,
    r#"{"ts":"2026-01-01T00:00:01Z","model_id":"vision","output_logits":[2.0,-1.5,0.25,1e-3],"latency_ms":"8.5","status_code":"200","input_payload_hash":"abc"}"#,
    r#"{"time":"2026-01-01T00:00:02+02:00","gen_ai.request.model":"gpt-4o","gen_ai.usage.input_tokens":52,"gen_ai.usage.output_tokens":117,"error.type":null,"http.response.status_code":200}"#,
    r#"{"timestamp":"2026-01-01T00:00:03Z","model_id":"recsys","logits":[],"probabilities":[0.5,0.5],"attributes":{"region":"eu","shard":7},"tags":["a","b"],"ok":true,"none":null}"#,
    r#"{"@timestamp":"2026-01-01T00:00:04.5Z","model":"m","usage":{"prompt_tokens":"12","completion_tokens":3},"note":"caf\u00e9 \"quoted\"\n"}"#,
];

const EXAMPLE_MAPPING: &str = include_str!("../../../examples/mapping.yaml");
const NESTED_MAPPING: &str =
    include_str!("../../../tests/cases/ingest/user-mapping-nested-coercion-hash/mapping.yaml");
const ENRICHMENT_MAPPING: &str =
    include_str!("../../../tests/cases/ingest/enrichment/mapping.yaml");

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the enrichment mapping lives, so its lookup tables load.
fn enrichment_origin() -> PathBuf {
    repository_root().join("tests/cases/ingest/enrichment/mapping.yaml")
}

fn seed_lines() -> &'static [Vec<u8>] {
    static LINES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    LINES.get_or_init(|| {
        GOLDEN_INPUTS
            .iter()
            .flat_map(|input| input.split(|byte| *byte == b'\n'))
            .chain(SIMULATED_LINES.iter().map(|line| line.as_bytes()))
            .filter(|line| !line.trim_ascii().is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    })
}

/// The decoders' mappings: built-in, the example, the nested one and the
/// one with lookup tables.
fn mappings() -> &'static [Arc<Mapping>] {
    static MAPPINGS: OnceLock<Vec<Arc<Mapping>>> = OnceLock::new();
    MAPPINGS.get_or_init(|| {
        let example = repository_root().join("examples/mapping.yaml");
        vec![
            Arc::new(Mapping::builtin()),
            Arc::new(Mapping::from_yaml_str(&example, EXAMPLE_MAPPING).expect("example mapping")),
            Arc::new(
                Mapping::from_yaml_str(Path::new("nested.yaml"), NESTED_MAPPING)
                    .expect("nested mapping"),
            ),
            Arc::new(
                Mapping::from_yaml_str(&enrichment_origin(), ENRICHMENT_MAPPING)
                    .expect("enrichment mapping"),
            ),
        ]
    })
}

// ---------------------------------------------------------------------------
// Mutations

/// Tokens that matter to a JSON reader, inserted by mutations.
const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b",",
    b":",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\uD83D\\uDE00",
    b"\\x",
    b"1e400",
    b"-1e-400",
    b"123456789012345678901234567890",
    b"-9223372036854775808",
    b"9223372036854775808",
    b"18446744073709551616",
    b"9007199254740993",
    b"-0",
    b"0.0000000000000000000001",
    b"1.7976931348623157e308",
    b"4.9e-324",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"null",
    b"true",
    b"\"timestamp\":",
    b"\"timestamp\":\"9999-12-31T23:59:59.999999999Z\",",
    b"\"timestamp\":-9223372036854775808,",
    b"\"timestamp\":1e19,",
    b"\"ts\":1767225600000,",
    b"\"logits\":[1e308,1e308,-1e308],",
    b"\"probabilities\":[0,0,0],",
    b"\"latency_ms\":-1,",
    b"\"http_status\":99999999999999999999,",
    b"\"attributes\":{\"a\":{\"b\":[1,{}]}},",
    b"{\"a\":",
    b"[[[[[[[[[[[[[[[[",
    b"\n",
    b"\r",
    b"\r\n",
    b"\xEF\xBB\xBF",
    b"\xFF",
    b"\xC3",
    b"\xED\xA0\x80",
    b"\xF4\x90\x80\x80",
    b"\x00",
    b" ",
    b"\t",
    b"\xC2\xA0",
];

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
        3 => (any::<Index>(), any::<Index>()).prop_map(|(at, token)| Mutation::InsertToken(at, token)),
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
    tokens: &[&[u8]],
    others: &[T],
) {
    for mutation in mutations {
        let len = data.len();
        let at = |index: &Index| {
            if len == 0 {
                0
            } else {
                index.index(len + 1).min(len)
            }
        };
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
                let token = tokens[token.index(tokens.len())];
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
            Mutation::Truncate(index) => {
                let position = at(index);
                data.truncate(position);
            }
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

// ---------------------------------------------------------------------------
// JSON line generators

/// Keys the built-in and user mappings know, and a few they do not.
const KEYS: &[&str] = &[
    "timestamp",
    "ts",
    "time",
    "@timestamp",
    "timeUnixNano",
    "stream",
    "model_id",
    "model",
    "model_version",
    "version",
    "ab_group",
    "request_id",
    "client_id",
    "client_ip",
    "source_id",
    "status",
    "status_code",
    "http_status",
    "error_type",
    "error.type",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "input_hash",
    "input_payload_hash",
    "prompt",
    "predicted_class",
    "confidence",
    "probabilities",
    "output_probabilities",
    "logits",
    "output_logits",
    "entropy",
    "margin",
    "attributes",
    "gen_ai.request.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "http.response.status_code",
    "response.usage.prompt_tokens",
    "event.time",
    "event.model",
    "retries",
    "cached",
    "created",
    "tenant",
    "debug_blob",
    "tier",
    "geo.region",
    "region",
    "x",
    "",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_.@]{1,12}",
        1 => "[^\"\\\\\\x00-\\x1f]{0,8}",
    ]
}

/// A number as a server might print it, plus the edges.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|value| value.to_string()),
        any::<u64>().prop_map(|value| value.to_string()),
        (-1e6f64..1e6).prop_map(|value| format!("{value:?}")),
        any::<f64>()
            .prop_filter("finite", |value| value.is_finite())
            .prop_map(|value| format!("{value:e}")),
        "-?[0-9]{1,4}(\\.[0-9]{1,12})?([eE][+-]?[0-9]{1,3})?",
        "-?[1-9][0-9]{18,40}",
        "-?0\\.[0-9]{20,30}",
        (0u64..2_000_000_000_000_000_000).prop_map(|value| value.to_string()),
        Just("-0".to_string()),
        Just("0".to_string()),
    ]
}

/// A timestamp value, as text or epoch number in any unit.
fn timestamp_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\"[0-9]{4}-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,12})?(Z|z|[+-][0-9]{2}:?[0-9]{2})?\"",
        (1_700_000_000i64..1_800_000_000).prop_map(|seconds| seconds.to_string()),
        (1_700_000_000_000i64..1_800_000_000_000).prop_map(|millis| millis.to_string()),
        (1_700_000_000_000_000_000i64..1_800_000_000_000_000_000).prop_map(|nanos| format!("\"{nanos}\"")),
        number(),
        Just("\"2026-01-01T00:00:00Z\"".to_string()),
        Just("\"yesterday\"".to_string()),
    ]
}

/// A flat scalar or an array of numbers, with no escapes: what the fast
/// path reads.
fn flat_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => number(),
        3 => "\"[^\"\\\\\\x00-\\x1f]{0,16}\"",
        1 => timestamp_value(),
        1 => Just("true".to_string()),
        1 => Just("false".to_string()),
        1 => Just("null".to_string()),
        2 => prop::collection::vec(number(), 0..8).prop_map(|items| format!("[{}]", items.join(","))),
        1 => prop::collection::vec(number(), 0..4).prop_map(|items| format!("[ {} ]", items.join(" , "))),
    ]
}

/// Flat objects: most start with a timestamp so they become rows.
fn flat_fields() -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::option::weighted(0.8, ("timestamp|ts|time|@timestamp", timestamp_value())),
        prop::collection::vec((key(), flat_value()), 0..12),
    )
        .prop_map(|(timestamp, mut fields)| {
            if let Some(timestamp) = timestamp {
                fields.insert(0, timestamp);
            }
            fields
        })
}

fn object(fields: &[(String, String)], separator: &str) -> String {
    let inner: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("\"{key}\":{value}"))
        .collect();
    format!("{{{}}}", inner.join(separator))
}

/// Arbitrary JSON with nesting, escapes and any text, written by serde_json.
fn nested_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::String),
        "[a-z\"\\\\\n\t\u{0}\u{7f}\u{e9}\u{2028}\u{1F600}]{0,8}"
            .prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| serde_json::Value::Object(pairs.into_iter().collect())),
        ]
    })
}

fn nested_line() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.8, ("timestamp|ts|time|timeUnixNano", timestamp_value())),
        prop::collection::vec((key(), nested_value()), 0..8),
        any::<bool>(),
    )
        .prop_map(|(timestamp, fields, pretty)| {
            let mut parts: Vec<String> = Vec::new();
            if let Some((key, value)) = timestamp {
                parts.push(format!("\"{key}\":{value}"));
            }
            for (key, value) in fields {
                let key = serde_json::to_string(&key).unwrap_or_default();
                let value = if pretty {
                    serde_json::to_string_pretty(&value)
                        .unwrap_or_default()
                        .replace('\n', " ")
                } else {
                    serde_json::to_string(&value).unwrap_or_default()
                };
                parts.push(format!("{key}:{value}"));
            }
            format!("{{{}}}", parts.join(","))
        })
}

/// Lines deeper than the nesting limit, just at it, and just past it.
fn deep_line() -> impl Strategy<Value = String> {
    (1usize..200, prop::bool::ANY, prop::bool::ANY).prop_map(|(depth, objects, closed)| {
        let (open, close) = if objects {
            ("{\"a\":", "}")
        } else {
            ("[", "]")
        };
        let mut line = String::from("{\"timestamp\":1767225600,\"deep\":");
        line.push_str(&open.repeat(depth));
        line.push('1');
        if closed {
            line.push_str(&close.repeat(depth));
        }
        line.push('}');
        line
    })
}

fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    (any::<Index>(), prop::collection::vec(mutation(), 1..6)).prop_map(|(seed, mutations)| {
        let seeds = seed_lines();
        let mut data = seeds[seed.index(seeds.len())].clone();
        mutate(&mut data, &mutations, JSON_TOKENS, seeds);
        data
    })
}

/// One input line, of any kind.
fn any_line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => flat_fields().prop_map(|fields| object(&fields, ",").into_bytes()),
        1 => flat_fields().prop_map(|fields| format!("  {} ", object(&fields, " , ")).into_bytes()),
        3 => nested_line().prop_map(String::into_bytes),
        4 => mutated_line(),
        1 => deep_line().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::sample::select(vec!["", " ", "\t", "\r", "\u{feff}", "[]", "1", "\"x\"", "null", "{}", "{", "}"])
            .prop_map(|text| text.as_bytes().to_vec()),
    ]
}

#[derive(Debug, Clone)]
struct ChunkInput {
    lines: Vec<Vec<u8>>,
    crlf: bool,
    trailing_newline: bool,
    bom: bool,
    first_line: u64,
    first_offset: u64,
}

impl ChunkInput {
    fn chunk(&self) -> Chunk {
        let ending: &[u8] = if self.crlf { b"\r\n" } else { b"\n" };
        let mut data = Vec::new();
        if self.bom {
            data.extend_from_slice(b"\xEF\xBB\xBF");
        }
        for (index, line) in self.lines.iter().enumerate() {
            data.extend_from_slice(line);
            if index + 1 < self.lines.len() || self.trailing_newline {
                data.extend_from_slice(ending);
            }
        }
        Chunk {
            source: Arc::from("fuzz.jsonl"),
            first_line: self.first_line,
            first_offset: self.first_offset,
            data,
            skipped_bytes: 0,
        }
    }
}

fn chunk_input(line: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = ChunkInput> {
    (
        prop::collection::vec(line, 0..12),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop_oneof![Just(1u64), 1u64..1_000_000],
        prop_oneof![Just(0u64), 0u64..1_000_000_000],
    )
        .prop_map(
            |(lines, crlf, trailing_newline, bom, first_line, first_offset)| ChunkInput {
                lines,
                crlf,
                trailing_newline,
                bom,
                first_line,
                first_offset,
            },
        )
}

// ---------------------------------------------------------------------------
// Properties

static LINES_DECODED: AtomicU64 = AtomicU64::new(0);

/// Every line is exactly one row, one dead letter or one blank line, at its
/// own line number, in order; rows and counters agree.
fn check_accounting(chunk: &Chunk, decoded: &DecodedBatch) -> Result<(), TestCaseError> {
    let data = chunk.data.as_slice();
    let mut expected_lines = 0u64;
    let mut expected_blank = Vec::new();
    if !data.is_empty() {
        let segments: Vec<&[u8]> = data.split(|byte| *byte == b'\n').collect();
        // A final newline ends the last line; it does not start another.
        let count = if data.ends_with(b"\n") {
            segments.len() - 1
        } else {
            segments.len()
        };
        for (index, segment) in segments.iter().take(count).enumerate() {
            let mut line = segment.strip_suffix(b"\r").unwrap_or(segment);
            if index == 0 && chunk.first_offset == 0 {
                line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                expected_blank.push(chunk.first_line + index as u64);
            }
        }
        expected_lines = count as u64;
    }
    LINES_DECODED.fetch_add(expected_lines, Ordering::Relaxed);
    let counters = &decoded.counters;
    prop_assert_eq!(decoded.lines, expected_lines);
    prop_assert_eq!(counters.lines, expected_lines);
    prop_assert_eq!(counters.blank_lines, expected_blank.len() as u64);
    prop_assert_eq!(
        counters.events + decoded.dead_letters.len() as u64 + counters.blank_lines,
        expected_lines,
        "lines = events + dead letters + blank lines"
    );
    prop_assert_eq!(counters.dead_letters(), decoded.dead_letters.len() as u64);
    prop_assert_eq!(decoded.batch.num_rows() as u64, counters.events);
    prop_assert_eq!(decoded.row_lines.len() as u64, counters.events);
    // Each line number used once, in order, and never a blank one.
    let mut seen: Vec<u64> = decoded
        .row_lines
        .iter()
        .copied()
        .chain(decoded.dead_letters.iter().map(|letter| letter.line))
        .chain(expected_blank.iter().copied())
        .collect();
    seen.sort_unstable();
    let all: Vec<u64> = (chunk.first_line..chunk.first_line + expected_lines).collect();
    prop_assert_eq!(seen, all);
    prop_assert!(decoded.row_lines.windows(2).all(|pair| pair[0] < pair[1]));
    prop_assert!(decoded
        .dead_letters
        .windows(2)
        .all(|pair| pair[0].line < pair[1].line));
    for letter in &decoded.dead_letters {
        prop_assert!(letter.offset >= chunk.first_offset);
        prop_assert!(letter.offset <= chunk.first_offset + data.len() as u64);
        prop_assert!(!letter.reason.is_empty());
    }
    Ok(())
}

fn decode_checked(decoder: &mut Decoder, chunk: &Chunk) -> Result<DecodedBatch, TestCaseError> {
    let decoded = decoder.decode(chunk);
    check_accounting(chunk, &decoded)?;
    prop_assert_eq!(decoded.batch.schema(), decoder.schema());
    // Rendering the rows must not panic either (`inferwatch map`).
    let _ = batch_to_json_rows(&decoded.batch);
    Ok(decoded)
}

fn generic_checked(
    decoder: &mut GenericDecoder,
    chunk: &Chunk,
) -> Result<DecodedBatch, TestCaseError> {
    let decoded = decoder.decode(chunk);
    check_accounting(chunk, &decoded)?;
    let _ = batch_to_json_rows(&decoded.batch);
    Ok(decoded)
}

// ---------------------------------------------------------------------------
// Targets

/// Chunks of every kind of line through the decoder, with each mapping; the
/// same decoder decodes two chunks so the flat path's remembered key order
/// carries over.
#[test]
fn fuzz_decoder_any_lines() {
    run(
        "decoder_any_lines",
        (
            chunk_input(any_line()),
            chunk_input(any_line()),
            0..mappings().len(),
        ),
        |(first, second, mapping)| {
            let mut decoder = Decoder::new(mappings()[mapping].clone());
            decode_checked(&mut decoder, &first.chunk())?;
            decode_checked(&mut decoder, &second.chunk())?;
            Ok(())
        },
    );
}

/// Flat lines only, repeated with small changes, so the fast path (key order
/// cache, word-at-a-time scanner, exact number conversion) does the work.
/// Each line is also decoded with a nested field added, which sends it down
/// the general sonic-rs walk: both paths must read it the same way.
#[test]
fn fuzz_decoder_flat_path_matches_general_walk() {
    let strategy = (
        prop::collection::vec(flat_fields(), 1..6),
        1usize..4,
        0..mappings().len(),
    );
    run(
        "decoder_flat_vs_general",
        strategy,
        |(objects, repeats, mapping)| flat_matches_general(&objects, repeats, mapping),
    );
}

/// Keys the mappings descend through, and some they do not.
const PATH_KEYS: &[&str] = &[
    "event",
    "time",
    "model",
    "response",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "elapsed",
    "request",
    "prompt",
    "api_key",
    "tenant",
    "geo",
    "region",
    "error",
    "type",
    "http",
    "status_code",
    "gen_ai",
    "input_tokens",
    "timestamp",
    "ts",
    "model_id",
    "other",
];

/// A value under a path key: flat, or an object of the same, as other
/// fleets nest their logs (`{"response":{"usage":{"prompt_tokens":3}}}`).
fn path_value() -> impl Strategy<Value = String> {
    flat_value().prop_recursive(3, 24, 5, |inner| {
        prop::collection::vec((prop::sample::select(PATH_KEYS), inner), 0..5).prop_map(|fields| {
            let inner: Vec<String> = fields
                .iter()
                .map(|(key, value)| format!("\"{key}\":{value}"))
                .collect();
            format!("{{{}}}", inner.join(","))
        })
    })
}

/// Nested lines through the mappings' paths: the fast path walks objects
/// under keys a mapping descends into, and must read them as the general
/// walk does (same rows, same refusals with the same reasons), with the
/// key-order cache meeting the same key at the same position under another
/// parent. The same lines go to a decoder without the fast path.
#[test]
fn fuzz_decoder_nested_fast_path_matches_general_walk() {
    let fields = (
        prop::option::weighted(0.5, ("timestamp|ts", timestamp_value())),
        prop::collection::vec(
            (
                prop::sample::select(PATH_KEYS).prop_map(str::to_string),
                path_value(),
            ),
            0..8,
        ),
    )
        .prop_map(|(timestamp, mut fields)| {
            if let Some(timestamp) = timestamp {
                fields.insert(0, timestamp);
            }
            fields
        });
    let strategy = (
        prop::collection::vec(fields, 1..6),
        1usize..4,
        0..mappings().len(),
    );
    run(
        "decoder_nested_flat_vs_general",
        strategy,
        |(objects, repeats, mapping)| {
            let mapping = mappings()[mapping].clone();
            let mut lines = Vec::new();
            for _ in 0..repeats {
                lines.extend(objects.iter().map(|fields| object(fields, ",")));
            }
            let chunk = Chunk {
                source: Arc::from("fuzz.jsonl"),
                first_line: 1,
                first_offset: 0,
                data: lines.join("\n").into_bytes(),
                skipped_bytes: 0,
            };
            let fast = decode_checked(&mut Decoder::new(mapping.clone()), &chunk)?;
            let general = decode_checked(&mut Decoder::new(mapping).without_flat_path(), &chunk)?;
            prop_assert_eq!(&fast.row_lines, &general.row_lines);
            let letters = |decoded: &DecodedBatch| -> Vec<(u64, Option<DeadLetterKind>, String)> {
                decoded
                    .dead_letters
                    .iter()
                    .map(|letter| (letter.line, letter.kind, letter.reason.clone()))
                    .collect()
            };
            prop_assert_eq!(letters(&fast), letters(&general));
            prop_assert_eq!(
                batch_to_json_rows(&fast.batch),
                batch_to_json_rows(&general.batch)
            );
            Ok(())
        },
    );
}

/// Decodes each object as written (the fast path reads what it can) and
/// with a nested field no mapping claims added (always the general walk):
/// both must give the same rows and refuse the same lines.
fn flat_matches_general(
    objects: &[Vec<(String, String)>],
    repeats: usize,
    mapping: usize,
) -> Result<(), TestCaseError> {
    let mapping = mappings()[mapping].clone();
    let mut flat_lines = Vec::new();
    let mut general_lines = Vec::new();
    for _ in 0..repeats {
        for fields in objects {
            flat_lines.push(object(fields, ","));
            // A nested object is never flat; its key is one no
            // mapping claims and no generator writes.
            let mut general = fields.clone();
            general.push(("~general~".to_string(), "{\"n\":[{}]}".to_string()));
            general_lines.push(object(&general, ","));
        }
    }
    let chunk = |lines: &[String]| Chunk {
        source: Arc::from("fuzz.jsonl"),
        first_line: 1,
        first_offset: 0,
        data: lines.join("\n").into_bytes(),
        skipped_bytes: 0,
    };
    let flat = decode_checked(&mut Decoder::new(mapping.clone()), &chunk(&flat_lines))?;
    let general = decode_checked(&mut Decoder::new(mapping), &chunk(&general_lines))?;
    prop_assert_eq!(&flat.row_lines, &general.row_lines);
    // Same lines refused for the same reason; an invalid JSON
    // message quotes the text around the error, which the added
    // field changes.
    let letters = |decoded: &DecodedBatch| -> Vec<(u64, Option<DeadLetterKind>, String)> {
        decoded
            .dead_letters
            .iter()
            .map(|letter| {
                let reason = if letter.kind == Some(DeadLetterKind::InvalidJson) {
                    String::new()
                } else {
                    letter.reason.clone()
                };
                (letter.line, letter.kind, reason)
            })
            .collect()
    };
    let (flat_letters, general_letters) = (letters(&flat), letters(&general));
    prop_assert_eq!(flat_letters, general_letters);
    let mut general_rows = batch_to_json_rows(&general.batch);
    for row in &mut general_rows {
        let Some(row) = row.as_object_mut() else {
            continue;
        };
        let emptied = row
            .get_mut("attributes")
            .and_then(serde_json::Value::as_object_mut)
            .is_some_and(|map| {
                map.remove("~general~");
                map.is_empty()
            });
        if emptied {
            row.remove("attributes");
        }
    }
    prop_assert_eq!(batch_to_json_rows(&flat.batch), general_rows);
    Ok(())
}

/// Garbage: random bytes cut into lines, and whole golden files mutated.
#[test]
fn fuzz_decoder_garbage_and_mutated_files() {
    let raw = prop::collection::vec(
        prop_oneof![
            any::<u8>(),
            prop::sample::select(b"{}[]\":,\\ \n\r0123456789eE+-.tfnul".to_vec()),
        ],
        0..512,
    );
    let files =
        (any::<Index>(), prop::collection::vec(mutation(), 1..24)).prop_map(|(file, mutations)| {
            let mut data = GOLDEN_INPUTS[file.index(GOLDEN_INPUTS.len())].to_vec();
            mutate(&mut data, &mutations, JSON_TOKENS, seed_lines());
            data
        });
    run(
        "decoder_garbage_and_mutated_files",
        (prop_oneof![raw, files], 0..mappings().len(), any::<bool>()),
        |(data, mapping, offset)| {
            let chunk = Chunk {
                source: Arc::from("fuzz.jsonl"),
                first_line: 1,
                first_offset: if offset { 4096 } else { 0 },
                data,
                skipped_bytes: 0,
            };
            let mut decoder = Decoder::new(mappings()[mapping].clone());
            decode_checked(&mut decoder, &chunk)?;
            // The generic decoder reads the same bytes.
            let mut generic = GenericDecoder::new("fuzz", None);
            generic_checked(&mut generic, &chunk)?;
            Ok(())
        },
    );
}

/// The generic stream decoder: schemas grow over several chunks, types
/// collide, the column cap spills fields into `attributes`.
#[test]
fn fuzz_generic_decoder() {
    let known = prop_oneof![Just(None), Just(Some(inferwatch_core::canonical_schema())),];
    run(
        "generic_decoder",
        (
            prop::collection::vec(chunk_input(any_line()), 1..4),
            known,
            prop_oneof![Just(None), (0usize..6).prop_map(Some)],
        ),
        |(chunks, known, max_columns)| {
            let mut decoder = GenericDecoder::new("fuzz", known);
            if let Some(max_columns) = max_columns {
                decoder = decoder.with_max_columns(max_columns);
            }
            for input in &chunks {
                let decoded = generic_checked(&mut decoder, &input.chunk())?;
                // A batch's fields are drawn from the decoder's schema.
                let schema = decoder.schema();
                for field in decoded.batch.schema().fields() {
                    prop_assert!(
                        schema.field_with_name(field.name()).is_ok(),
                        "batch field {} not in the schema",
                        field.name()
                    );
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------
// Mapping YAML

const YAML_TOKENS: &[&[u8]] = &[
    b":",
    b": ",
    b"- ",
    b"\n",
    b"\n  ",
    b"\n- ",
    b"  ",
    b"\t",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"!!int ",
    b"!!str ",
    b"!custom ",
    b"'",
    b"\"",
    b"\\",
    b"|\n  ",
    b">-\n  ",
    b"#",
    b"---\n",
    b"...\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"? ",
    b"%YAML 1.2\n---\n",
    b"~",
    b"null",
    b"1e999",
    b"-.inf",
    b".nan",
    b"0x1F",
    b"-1",
    b"0",
    b"99999999999999999999999",
    b"true",
    b"from: ",
    b"to: ",
    b"type: ",
    b"unit: ",
    b"transform: hash",
    b"drop: true",
    b"default: ",
    b"stream: ",
    b"builtin: false",
    b"fields:\n",
    b"enrich:\n",
    b"limits:\n  latency_ms: 1e-300\n  tokens: 1e300\n",
    b"timestamp",
    b"attributes",
    b"attributes.x",
    b"a..b",
    b".",
    b"table: ",
    b"key: ",
    b"columns: [",
    b"table_key: ",
    b"../../../../etc/passwd",
    b"\xFF",
    b"\x00",
    b"\xEF\xBB\xBF",
];

const TARGETS: &[&str] = &[
    "timestamp",
    "model_id",
    "model_version",
    "client_id",
    "latency_ms",
    "input_tokens",
    "http_status",
    "status",
    "probabilities",
    "logits",
    "confidence",
    "predicted_class",
    "attributes",
    "input_hash",
    "stream",
    "region",
    "",
    "attributes.x",
];

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_.]{0,12}",
        "[^\\n]{0,10}".prop_map(|text| yaml_string(&text)),
        number(),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, 2]".to_string()),
        Just("{a: 1}".to_string()),
        Just("true".to_string()),
    ]
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// One `fields:` entry; most are valid, some break one rule.
fn field_rule() -> impl Strategy<Value = String> {
    let from = prop_oneof![
        6 => prop::sample::select(KEYS).prop_map(str::to_string),
        3 => "[a-z_]{1,6}(\\.[a-z_]{1,6}){0,3}",
        1 => "[a-z_.]{0,10}",
    ];
    let to = prop_oneof![
        3 => prop::sample::select(TARGETS).prop_map(str::to_string),
        1 => "[a-z_]{1,10}",
    ];
    let sometimes =
        |options: Vec<&'static str>| prop::option::weighted(0.07, prop::sample::select(options));
    (
        from,
        prop::option::weighted(0.9, to),
        sometimes(vec![
            "auto",
            "string",
            "integer",
            "float",
            "boolean",
            "timestamp",
            "float_list",
            "list",
            "",
        ]),
        sometimes(vec!["auto", "s", "ms", "us", "ns", "rfc3339", "h", ""]),
        sometimes(vec!["hash", "hash", "lower"]),
        prop::option::weighted(0.05, any::<bool>()),
        prop::option::weighted(0.1, yaml_scalar()),
    )
        .prop_map(|(from, to, kind, unit, transform, drop, default)| {
            let mut rule = format!("  - from: {}\n", yaml_string(&from));
            if let Some(to) = to {
                rule.push_str(&format!("    to: {}\n", yaml_string(&to)));
            }
            if let Some(kind) = kind {
                rule.push_str(&format!("    type: {kind}\n"));
            }
            if let Some(unit) = unit {
                rule.push_str(&format!("    unit: {unit}\n"));
            }
            if let Some(transform) = transform {
                rule.push_str(&format!("    transform: {transform}\n"));
            }
            if let Some(drop) = drop {
                rule.push_str(&format!("    drop: {drop}\n"));
            }
            if let Some(default) = default {
                rule.push_str(&format!("    default: {default}\n"));
            }
            rule
        })
}

/// A mapping file built from its own keys, mostly valid.
fn generated_mapping() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z_-]{0,10}"),
        prop::option::of(any::<bool>()),
        prop::collection::vec(field_rule(), 0..5),
        prop::option::weighted(
            0.3,
            prop_oneof![
                3 => (0.001f64..1e9, 1.0f64..1e12).prop_map(|(latency, tokens)| (latency.to_string(), tokens.to_string())),
                1 => (number(), number()),
            ],
        ),
        prop::option::weighted(0.3, prop::sample::select(vec![
            "  - table: versions.csv\n    key: model_version\n    columns: [owner, release_date, ab_group]\n",
            "  - table: clients.json\n    key: client_id\n    columns: [plan, http_status]\n",
            "  - table: owners.json\n    key: owner\n    table_key: team\n    columns: [pager]\n",
            "  - table: missing.csv\n    key: model_version\n    columns: [owner]\n",
            "  - table: versions.csv\n    key: nope\n    columns: []\n",
        ])),
    )
        .prop_map(|(stream, builtin, fields, limits, enrich)| {
            let mut text = String::new();
            if let Some(stream) = stream {
                text.push_str(&format!("stream: {}\n", yaml_string(&stream)));
            }
            if let Some(builtin) = builtin {
                text.push_str(&format!("builtin: {builtin}\n"));
            }
            text.push_str("fields:\n");
            for field in fields {
                text.push_str(&field);
            }
            if let Some((latency, tokens)) = limits {
                text.push_str(&format!("limits:\n  latency_ms: {latency}\n  tokens: {tokens}\n"));
            }
            if let Some(enrich) = enrich {
                text.push_str("enrich:\n");
                text.push_str(enrich);
            }
            text
        })
}

fn mapping_seeds() -> Vec<String> {
    vec![
        EXAMPLE_MAPPING.to_string(),
        NESTED_MAPPING.to_string(),
        ENRICHMENT_MAPPING.to_string(),
    ]
}

/// Mapping YAML: generated, mutated and random. Whatever compiles then
/// decodes the seed lines.
#[test]
fn fuzz_mapping_yaml() {
    let seeds = mapping_seeds();
    let mutated = (
        prop_oneof![
            any::<Index>().prop_map(move |index| seeds[index.index(seeds.len())].clone()),
            generated_mapping(),
        ],
        prop::collection::vec(mutation(), 0..4),
    )
        .prop_map(|(text, mutations)| {
            let mut data = text.into_bytes();
            let seeds = mapping_seeds();
            mutate(&mut data, &mutations, YAML_TOKENS, &seeds);
            String::from_utf8_lossy(&data).into_owned()
        });
    let text = prop_oneof![
        4 => mutated,
        2 => generated_mapping(),
        1 => any::<String>(),
    ];
    let decoded_with = AtomicU64::new(0);
    run(
        "mapping_yaml",
        (text, chunk_input(any_line())),
        |(text, input)| {
            // The enrichment origin makes relative table paths resolve.
            let Ok(mapping) = Mapping::from_yaml_str(&enrichment_origin(), &text) else {
                return Ok(());
            };
            decoded_with.fetch_add(1, Ordering::Relaxed);
            let mapping = Arc::new(mapping);
            let _ = mapping.projected(&["timestamp", "model_id", "latency_ms"]);
            let mut decoder = Decoder::new(mapping);
            decode_checked(&mut decoder, &input.chunk())?;
            Ok(())
        },
    );
    eprintln!(
        "fuzz mapping_yaml: {} mappings compiled and decoded with",
        decoded_with.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------
// Regression tests for what the campaigns found (issue 16).
