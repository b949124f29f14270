//! Golden, data-driven decoder cases under `tests/cases/ingest/<case>/`.
//!
//! Each case holds `input.jsonl`, optionally `mapping.yaml` (and the lookup
//! tables it names), `expected.jsonl` (one decoded row per line, as JSON with
//! sorted keys and without nulls) and `expected_dead_letters.jsonl`.
//!
//! `UPDATE_EXPECT=1 cargo test -p inferwatch-ingest --test golden` rewrites
//! the expected files from the current output; review the diff before
//! committing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use inferwatch_ingest::{batch_to_json_rows, Chunk, Decoder, Mapping};
use serde_json::Value;

fn cases_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/ingest")
}

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Floats rounded to 9 significant digits, so that the last bits of `ln`
/// and `exp` (which differ between libm builds) do not break the cases.
fn stable_floats(value: Value) -> Value {
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or_default();
            let rounded: f64 = format!("{float:.8e}").parse().unwrap_or(float);
            serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(stable_floats).collect()),
        Value::Object(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key, stable_floats(value)))
                .collect(),
        ),
        other => other,
    }
}

fn to_jsonl<T: serde::Serialize>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| serde_json::to_string(item).expect("serialisable") + "\n")
        .collect()
}

fn check(path: &Path, actual: &str, update: bool, failures: &mut Vec<String>) {
    if update {
        std::fs::write(path, actual).expect("write expected file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{}:\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        ));
    }
}

fn run_case(case: &Path, update: bool, failures: &mut Vec<String>) {
    let mapping_path = case.join("mapping.yaml");
    let mapping = if mapping_path.exists() {
        Mapping::from_yaml_path(&mapping_path)
            .unwrap_or_else(|error| panic!("{}: {error}", case.display()))
    } else {
        Mapping::builtin()
    };
    let input = std::fs::read(case.join("input.jsonl")).expect("input.jsonl");
    let mut decoder = Decoder::new(Arc::new(mapping));
    let decoded = decoder.decode(&Chunk {
        source: Arc::from("input.jsonl"),
        first_line: 1,
        first_offset: 0,
        data: input,
        skipped_bytes: 0,
    });
    assert_eq!(
        decoded.batch.schema(),
        decoder.schema(),
        "{}",
        case.display()
    );
    let rows: Vec<Value> = batch_to_json_rows(&decoded.batch)
        .into_iter()
        .map(stable_floats)
        .collect();
    check(
        &case.join("expected.jsonl"),
        &to_jsonl(&rows),
        update,
        failures,
    );
    check(
        &case.join("expected_dead_letters.jsonl"),
        &to_jsonl(&decoded.dead_letters),
        update,
        failures,
    );
    let accounted =
        decoded.counters.events + decoded.counters.blank_lines + decoded.counters.dead_letters();
    assert_eq!(
        accounted,
        decoded.lines,
        "{}: every line is accounted for",
        case.display()
    );
}

#[test]
fn golden_cases() {
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|value| value == "1");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_directory())
        .expect("tests/cases/ingest exists")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.join("input.jsonl").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 7,
        "expected at least 7 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        run_case(case, update, &mut failures);
    }
    assert!(
        failures.is_empty(),
        "{} golden mismatches (run with UPDATE_EXPECT=1 to accept):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_example_mapping_parses_and_decodes() {
    let path = repository_root().join("examples/mapping.yaml");
    let mapping = Mapping::from_yaml_path(&path).unwrap_or_else(|error| panic!("{error}"));
    assert!(
        !mapping.enrichment().is_empty(),
        "the example shows enrichment"
    );
    let line = br#"{"ts":1767225600000,"model":"fraud","version":"v3","response":{"usage":{"prompt_tokens":"12"}},"prompt":"hi","tier":"gold","debug_blob":{"x":1}}"#;
    let mut decoder = Decoder::new(Arc::new(mapping));
    let decoded = decoder.decode(&Chunk {
        source: Arc::from("example"),
        first_line: 1,
        first_offset: 0,
        data: line.to_vec(),
        skipped_bytes: 0,
    });
    assert!(
        decoded.dead_letters.is_empty(),
        "{:?}",
        decoded.dead_letters
    );
    let row = &batch_to_json_rows(&decoded.batch)[0];
    assert_eq!(row["model_id"], "fraud");
    assert_eq!(row["input_tokens"], 12);
    assert_eq!(row["owner"], "risk-team");
    assert!(row["attributes"].get("debug_blob").is_none());
}
