//! Behaviour of the decoder: built-in mappings, coercions, user mappings,
//! enrichment, derived columns and every kind of bad input.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::{batch_to_json_rows, DeadLetter, Enrichment, LookupTable, Mapping};

const JAN_2026: &str = "2026-01-01T00:00:00Z";

fn chunk(text: &[u8]) -> Chunk {
    Chunk {
        source: Arc::from("test.jsonl"),
        first_line: 1,
        first_offset: 0,
        data: text.to_vec(),
        skipped_bytes: 0,
    }
}

fn decode_with(mapping: Mapping, text: &str) -> (Vec<Value>, Vec<DeadLetter>) {
    let mut decoder = Decoder::new(Arc::new(mapping));
    let decoded = decoder.decode(&chunk(text.as_bytes()));
    (batch_to_json_rows(&decoded.batch), decoded.dead_letters)
}

fn decode_builtin(text: &str) -> (Vec<Value>, Vec<DeadLetter>) {
    decode_with(Mapping::builtin(), text)
}

/// Joins a test line written over several source lines.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect()
}

/// Decodes one line that must be good and returns its row.
fn row(text: &str) -> Value {
    let (rows, dead_letters) = decode_builtin(&one_line(text));
    assert!(
        dead_letters.is_empty(),
        "unexpected dead letters: {dead_letters:?}"
    );
    assert_eq!(rows.len(), 1);
    rows.into_iter().next().unwrap()
}

/// Decodes one line that must be refused and returns the reason.
fn reason(text: &str) -> String {
    reason_with(Mapping::builtin(), text)
}

fn reason_with(mapping: Mapping, text: &str) -> String {
    let (rows, dead_letters) = decode_with(mapping, &one_line(text));
    assert!(rows.is_empty(), "unexpected rows: {rows:?}");
    assert_eq!(dead_letters.len(), 1);
    dead_letters[0].reason.clone()
}

fn user_mapping(yaml: &str) -> Mapping {
    Mapping::from_yaml_str(Path::new("mapping.yaml"), yaml).unwrap()
}

fn float(value: &Value, key: &str) -> f64 {
    value[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {value}"))
}

#[test]
fn decoder_is_clone_and_send() {
    fn assert_clone_send<T: Clone + Send>() {}
    assert_clone_send::<Decoder>();
}

#[test]
fn canonical_event_fills_every_column() {
    let line = json!({
        "timestamp": JAN_2026, "stream": "inference", "model_id": "fraud", "model_version": "v3",
        "ab_group": "canary", "request_id": "r1", "client_id": "acme", "client_ip": "10.0.0.1",
        "source_id": "web", "status": "ok", "http_status": 200, "latency_ms": 12.5, "ttft_ms": 3,
        "input_tokens": 10, "output_tokens": 20, "input_hash": "abc", "predicted_class": 1,
        "confidence": 0.9, "probabilities": [0.1, 0.9], "entropy": 0.3, "margin": 0.8,
        "attributes": {"region": "eu"}
    });
    let decoded = row(&line.to_string());
    let mut expected = line.clone();
    expected["timestamp"] = json!("2026-01-01T00:00:00Z");
    expected["ttft_ms"] = json!(3.0);
    assert_eq!(decoded, expected);
}

#[test]
fn schema_matches_the_canonical_schema() {
    let decoder = Decoder::new(Arc::new(Mapping::builtin()));
    assert_eq!(decoder.schema(), inferwatch_core::canonical_schema());
    let decoded = Decoder::new(Arc::new(Mapping::builtin())).decode(&chunk(b""));
    assert_eq!(decoded.batch.num_rows(), 0);
    assert_eq!(decoded.batch.schema(), inferwatch_core::canonical_schema());
}

#[test]
fn coercions_into_each_column_type() {
    let decoded = row(
        r#"{"ts":"1767225600000","latency_ms":"12.5","input_tokens":"7","output_tokens":3.0,
        "http_status":"503","model_id":42,"model_version":true,"ttft_ms":true,"predicted_class":false,
        "probabilities":["0.25",0.75]}"#,
    );
    assert_eq!(decoded["timestamp"], json!(JAN_2026));
    assert_eq!(decoded["latency_ms"], json!(12.5));
    assert_eq!(decoded["input_tokens"], json!(7));
    assert_eq!(decoded["output_tokens"], json!(3));
    assert_eq!(decoded["http_status"], json!(503));
    assert_eq!(decoded["status"], json!("error"));
    assert_eq!(decoded["model_id"], json!("42"));
    assert_eq!(decoded["model_version"], json!("true"));
    assert_eq!(decoded["ttft_ms"], json!(1.0));
    assert_eq!(decoded["predicted_class"], json!(0));
    assert_eq!(decoded["probabilities"], json!([0.25, 0.75]));
}

#[test]
fn timestamps_in_every_spelling() {
    for timestamp in [
        json!(JAN_2026),
        json!("2026-01-01T01:00:00+01:00"),
        json!("2026-01-01T00:00:00"),
        json!(1_767_225_600),
        json!(1_767_225_600_000u64),
        json!(1_767_225_600_000_000u64),
        json!(1_767_225_600_000_000_000u64),
        json!(1_767_225_600.0),
        json!("1767225600"),
    ] {
        let decoded = row(&json!({ "timestamp": timestamp }).to_string());
        assert_eq!(decoded["timestamp"], json!(JAN_2026), "{timestamp}");
    }
    let decoded = row(r#"{"timestamp":1767225600123456789}"#);
    assert_eq!(
        decoded["timestamp"],
        json!("2026-01-01T00:00:00.123456789Z")
    );
}

#[test]
fn otel_flat_keys() {
    let decoded = row(
        r#"{"time":"2026-01-01T00:00:00Z","gen_ai.request.model":"gpt-x","gen_ai.response.id":"resp-1",
        "gen_ai.usage.input_tokens":11,"gen_ai.usage.output_tokens":22,"server.address":"api.local",
        "client.address":"10.1.1.1","gen_ai.system":"openai"}"#,
    );
    assert_eq!(decoded["model_id"], json!("gpt-x"));
    assert_eq!(decoded["request_id"], json!("resp-1"));
    assert_eq!(decoded["input_tokens"], json!(11));
    assert_eq!(decoded["output_tokens"], json!(22));
    assert_eq!(decoded["client_ip"], json!("10.1.1.1"));
    assert_eq!(decoded["status"], json!("ok"));
    assert_eq!(
        decoded["attributes"],
        json!({"server.address": "api.local", "gen_ai.system": "openai"})
    );
}

#[test]
fn otel_nested_keys_and_attributes_object() {
    let nested = row(
        r#"{"timestamp":1767225600,"gen_ai":{"request":{"model":"m1","temperature":0.2},
        "usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}},"error":{"type":"Timeout","message":"slow"}}"#,
    );
    assert_eq!(nested["model_id"], json!("m1"));
    assert_eq!(nested["input_tokens"], json!(5));
    assert_eq!(nested["output_tokens"], json!(6));
    assert_eq!(nested["error_type"], json!("Timeout"));
    assert_eq!(nested["status"], json!("error"));
    assert_eq!(
        nested["attributes"],
        json!({"gen_ai.request.temperature": "0.2", "gen_ai.usage.total_tokens": "11", "error.message": "slow"})
    );

    let inside_attributes = row(
        r#"{"timestamp":1767225600,"attributes":{"gen_ai.response.model":"m2",
        "gen_ai.usage.input_tokens":"3","http.response.status_code":429,"region":"eu"}}"#,
    );
    assert_eq!(inside_attributes["model_id"], json!("m2"));
    assert_eq!(inside_attributes["input_tokens"], json!(3));
    assert_eq!(inside_attributes["http_status"], json!(429));
    assert_eq!(inside_attributes["status"], json!("error"));
    assert_eq!(inside_attributes["attributes"], json!({"region": "eu"}));
}

#[test]
fn response_model_beats_request_model_in_any_order() {
    for line in [
        r#"{"timestamp":1767225600,"gen_ai.request.model":"asked","gen_ai.response.model":"served"}"#,
        r#"{"timestamp":1767225600,"gen_ai.response.model":"served","gen_ai.request.model":"asked"}"#,
    ] {
        assert_eq!(row(line)["model_id"], json!("served"));
    }
    // The canonical name beats every alias.
    let decoded =
        row(r#"{"timestamp":1767225600,"model_id":"canonical","gen_ai.response.model":"alias"}"#);
    assert_eq!(decoded["model_id"], json!("canonical"));
}

#[test]
fn a_bad_low_priority_alias_does_not_sink_a_good_timestamp() {
    let decoded = row(r#"{"time":"noon","timestamp":"2026-01-01T00:00:00Z"}"#);
    assert_eq!(decoded["timestamp"], json!(JAN_2026));
    // But if the winning source is bad, the line is refused.
    let refused = reason(r#"{"timestamp":"noon","time":"2026-01-01T00:00:00Z"}"#);
    assert!(
        refused.starts_with("field timestamp: unusable timestamp"),
        "{refused}"
    );
}

#[test]
fn fastapi_style_with_logits_derives_confidence_margin_entropy() {
    let decoded = row(
        r#"{"ts":"2026-01-01T00:00:00.250Z","model_id":"resnet","model_version":"1.2",
        "input_payload_hash":"9f86d0","output_logits":[2.0,1.0,0.1],"latency_ms":8.25,"status":"success"}"#,
    );
    assert_eq!(decoded["timestamp"], json!("2026-01-01T00:00:00.250Z"));
    assert_eq!(decoded["input_hash"], json!("9f86d0"));
    assert_eq!(decoded["logits"], json!([2.0, 1.0, 0.1]));
    assert_eq!(decoded["status"], json!("ok"));
    assert_eq!(decoded["predicted_class"], json!(0));
    let exps = [2.0f64.exp(), 1.0f64.exp(), 0.1f64.exp()];
    let total: f64 = exps.iter().sum();
    let probabilities: Vec<f64> = exps.iter().map(|e| e / total).collect();
    let entropy: f64 = probabilities.iter().map(|p| -p * p.ln()).sum();
    assert!((float(&decoded, "confidence") - probabilities[0]).abs() < 1e-6);
    assert!((float(&decoded, "margin") - (probabilities[0] - probabilities[1])).abs() < 1e-6);
    assert!((float(&decoded, "entropy") - entropy).abs() < 1e-6);
    assert!(
        decoded.get("probabilities").is_none(),
        "softmax is not stored"
    );
}

#[test]
fn derived_values_never_replace_given_ones() {
    let decoded = row(
        r#"{"timestamp":1767225600,"probabilities":[0.2,0.8],"predicted_class":0,"confidence":0.5}"#,
    );
    assert_eq!(decoded["predicted_class"], json!(0));
    assert_eq!(decoded["confidence"], json!(0.5));
    assert!((float(&decoded, "margin") - 0.6).abs() < 1e-6);
    // Probabilities win over logits when both are present.
    let both = row(r#"{"timestamp":1767225600,"probabilities":[0.9,0.1],"logits":[0.0,5.0]}"#);
    assert_eq!(both["predicted_class"], json!(0));
}

#[test]
fn status_normalisation_and_derivation() {
    let status = |line: &str| row(line)["status"].clone();
    assert_eq!(
        status(r#"{"timestamp":1767225600,"status":"SUCCESS"}"#),
        json!("ok")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"status":200}"#),
        json!("ok")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"status":"failed"}"#),
        json!("error")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"status":"failure"}"#),
        json!("error")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"http_status":502}"#),
        json!("error")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"status_code":429}"#),
        json!("error")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"http_status":404}"#),
        json!("ok")
    );
    assert_eq!(
        status(r#"{"timestamp":1767225600,"error_type":"OOM"}"#),
        json!("error")
    );
    assert_eq!(status(r#"{"timestamp":1767225600}"#), json!("ok"));
    let refused = reason(r#"{"timestamp":1767225600,"status":"maybe"}"#);
    assert!(
        refused.contains("field status: expected a status"),
        "{refused}"
    );
}

#[test]
fn unmapped_fields_become_attributes_as_text() {
    let decoded = row(
        r#"{"timestamp":1767225600,"region":"eu","retries":3,"cached":false,"extra":null,
        "tags":["a","b"],"meta":{"k":1},"quote":"say \"hi\"\n"}"#,
    );
    assert_eq!(
        decoded["attributes"],
        json!({"region": "eu", "retries": "3", "cached": "false", "extra": null,
               "tags": "[\"a\",\"b\"]", "meta": "{\"k\":1}", "quote": "say \"hi\"\n"})
    );
}

#[test]
fn duplicated_keys_last_wins() {
    let decoded = row(
        r#"{"timestamp":1767225600,"model_id":"first","region":"a","model_id":"second","region":"b"}"#,
    );
    assert_eq!(decoded["model_id"], json!("second"));
    assert_eq!(decoded["attributes"], json!({"region": "b"}));
    // Also past the point where attribute lookups switch to a hash index.
    let mut object = serde_json::Map::new();
    object.insert("timestamp".into(), json!(1_767_225_600));
    let mut text = object_text(&object);
    text.pop();
    for index in 0..40 {
        text.push_str(&format!(",\"k{index}\":{index}"));
    }
    for index in 0..40 {
        text.push_str(&format!(",\"k{index}\":\"again{index}\""));
    }
    text.push('}');
    let decoded = row(&text);
    let attributes = decoded["attributes"].as_object().unwrap();
    assert_eq!(attributes.len(), 40);
    assert_eq!(attributes["k39"], json!("again39"));
}

fn object_text(object: &serde_json::Map<String, Value>) -> String {
    Value::Object(object.clone()).to_string()
}

#[test]
fn user_mapping_nested_paths_types_hash_drop_defaults() {
    let mapping = user_mapping(
        r#"
stream: gateway
fields:
  - from: response.usage.prompt_tokens
    to: input_tokens
  - from: event_time
    to: timestamp
    unit: ms
  - from: prompt
    to: input_hash
    transform: hash
  - from: debug_blob
    drop: true
  - from: geo.region
    to: region
  - from: tier
    to: ab_group
    default: baseline
  - from: retries
    to: retries
    type: integer
  - from: flag
    to: flag
    type: boolean
"#,
    );
    let (rows, dead_letters) = decode_with(
        mapping,
        concat!(
            r#"{"event_time":"1767225600000","response":{"usage":{"prompt_tokens":"12","completion_tokens":3},"id":"x"},"#,
            r#""prompt":"hello","debug_blob":{"huge":[1,2,3]},"geo":{"region":"eu"},"retries":"2.0","flag":1}"#,
            "\n",
            r#"{"event_time":1767225600000,"response.usage.prompt_tokens":5,"tier":"canary","geo.region":"us"}"#,
            "\n",
        ),
    );
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_eq!(rows[0]["timestamp"], json!(JAN_2026));
    assert_eq!(rows[0]["stream"], json!("gateway"));
    assert_eq!(rows[0]["input_tokens"], json!(12));
    assert_eq!(
        rows[0]["input_hash"],
        json!("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    );
    assert_eq!(rows[0]["ab_group"], json!("baseline"));
    assert_eq!(
        rows[0]["attributes"],
        json!({"response.usage.completion_tokens": "3", "response.id": "x", "region": "eu",
               "retries": "2", "flag": "true"})
    );
    assert_eq!(
        rows[1]["input_tokens"],
        json!(5),
        "a literal dotted key matches too"
    );
    assert_eq!(rows[1]["ab_group"], json!("canary"));
    assert_eq!(rows[1]["attributes"], json!({"region": "us"}));
}

#[test]
fn user_rules_override_builtin_rules_on_the_same_key() {
    let mapping = user_mapping(
        "fields:\n  - from: time\n    to: server_time\n  - from: at\n    to: timestamp\n    unit: s\n",
    );
    let (rows, dead_letters) = decode_with(mapping, r#"{"time":"noon","at":1767225600}"#);
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_eq!(rows[0]["timestamp"], json!(JAN_2026));
    assert_eq!(rows[0]["attributes"], json!({"server_time": "noon"}));
}

#[test]
fn builtin_false_turns_off_every_builtin_name() {
    let mapping = user_mapping("builtin: false\nfields:\n  - from: when\n    to: timestamp\n");
    let (rows, _) = decode_with(mapping, r#"{"when":1767225600,"model_id":"m"}"#);
    assert!(rows[0].get("model_id").is_none());
    assert_eq!(rows[0]["attributes"], json!({"model_id": "m"}));
    let mapping = user_mapping("builtin: false\n");
    let refused = reason_with(mapping, r#"{"timestamp":1767225600}"#);
    assert_eq!(
        refused,
        "missing timestamp: the mapping maps no field to timestamp"
    );
}

#[test]
fn yaml_errors_name_file_line_and_column() {
    let error = |yaml: &str| {
        Mapping::from_yaml_str(Path::new("conf/mapping.yaml"), yaml)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        error("fields:\n  - from: a\n    too: b\n"),
        "conf/mapping.yaml:3:5: unknown key `too` in a field rule \
         (expected one of: from, to, type, unit, transform, drop, default)"
    );
    assert_eq!(
        error("stream: x\nbuiltins: true\n"),
        "conf/mapping.yaml:2:1: unknown key `builtins` in the top level \
         (expected one of: stream, builtin, fields, enrich, limits, roles)"
    );
    assert_eq!(
        error("fields:\n  - from: a\n    to: latency_ms\n    type: timestamp\n"),
        "conf/mapping.yaml:4:11: type timestamp does not fit column latency_ms, which holds float"
    );
    assert_eq!(
        error("fields:\n  - from: a\n    to: b\n    unit: ms\n"),
        "conf/mapping.yaml:4:11: `unit` only applies to timestamps (target timestamp or type: timestamp)"
    );
    assert_eq!(
        error("fields:\n  - from: a\n    to: timestamp\n    unit: hours\n"),
        "conf/mapping.yaml:4:11: unknown unit \"hours\" (expected auto, s, ms, us, ns or rfc3339)"
    );
    assert_eq!(
        error("fields:\n  - from: a\n    to: input_tokens\n    default: lots\n"),
        "conf/mapping.yaml:4:14: invalid default: field a: expected an integer, got string \"lots\""
    );
    assert_eq!(
        error("fields:\n  - from: a\n    to: latency_ms\n    transform: hash\n"),
        "conf/mapping.yaml:4:16: transform hash produces a string, but column latency_ms holds float"
    );
    assert_eq!(
        error("fields:\n  - from: a..b\n    to: x\n"),
        "conf/mapping.yaml:2:11: invalid `from` path \"a..b\": empty segment (write a.b.c)"
    );
    assert_eq!(
        error("fields:\n  - to: x\n"),
        "conf/mapping.yaml:2:5: a field rule needs `from` (the input path)"
    );
    assert_eq!(
        error("builtin: maybe\n"),
        "conf/mapping.yaml:1:10: `builtin` must be true or false"
    );
    assert_eq!(
        error("fields:\n  - from: a\n    from: b\n"),
        "conf/mapping.yaml:3:5: invalid YAML: duplicate key `from`"
    );
    let syntax = error("fields:\n  - from: [a\n");
    assert!(syntax.starts_with("conf/mapping.yaml:"), "{syntax}");
    assert!(syntax.contains("invalid YAML"), "{syntax}");
    let missing = Mapping::from_yaml_path(Path::new("/nonexistent/mapping.yaml")).unwrap_err();
    assert!(matches!(missing, crate::IngestError::Io { .. }));
}

#[test]
fn empty_mapping_file_means_builtin() {
    let mapping = user_mapping("# nothing here\n");
    assert!(mapping.builtin_enabled());
    assert_eq!(
        row_with(mapping, r#"{"ts":1767225600}"#)["timestamp"],
        json!(JAN_2026)
    );
}

fn row_with(mapping: Mapping, text: &str) -> Value {
    let (rows, dead_letters) = decode_with(mapping, text);
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    rows.into_iter().next().unwrap()
}

#[test]
fn enrichment_from_csv_fills_nulls_and_adds_columns() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("versions.csv"),
        "model_version,owner,release_date,ab_group\nv1,team-a,2025-12-01,baseline\nv2,team-b,,canary\n",
    )
    .unwrap();
    let mapping_path = directory.path().join("mapping.yaml");
    std::fs::write(
        &mapping_path,
        "enrich:\n  - table: versions.csv\n    key: model_version\n    columns: [owner, release_date, ab_group]\n",
    )
    .unwrap();
    let mapping = Mapping::from_yaml_path(&mapping_path).unwrap();
    let schema = mapping.schema();
    assert_eq!(
        schema.fields().len(),
        inferwatch_core::canonical_schema().fields().len() + 2
    );
    assert_eq!(
        schema.field_with_name("owner").unwrap().data_type(),
        &inferwatch_core::dictionary_utf8()
    );
    let (rows, _) = decode_with(
        mapping,
        concat!(
            r#"{"timestamp":1767225600,"model_version":"v1"}"#,
            "\n",
            r#"{"timestamp":1767225600,"model_version":"v2","ab_group":"given"}"#,
            "\n",
            r#"{"timestamp":1767225600,"model_version":"v9"}"#,
            "\n",
        ),
    );
    assert_eq!(rows[0]["owner"], json!("team-a"));
    assert_eq!(rows[0]["release_date"], json!("2025-12-01"));
    assert_eq!(rows[0]["ab_group"], json!("baseline"));
    assert_eq!(rows[1]["owner"], json!("team-b"));
    assert!(
        rows[1].get("release_date").is_none(),
        "empty cells stay null"
    );
    assert_eq!(rows[1]["ab_group"], json!("given"), "event values win");
    assert!(rows[2].get("owner").is_none());
}

#[test]
fn enrichment_from_json_tables_and_attribute_keys() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("clients.json"),
        r#"{"acme":{"tier":"gold","http_status":"418"},"globex":{"tier":"silver"}}"#,
    )
    .unwrap();
    std::fs::write(
        directory.path().join("regions.json"),
        r#"[{"region":"eu","jurisdiction":"gdpr"},{"region":"us","jurisdiction":null}]"#,
    )
    .unwrap();
    let mapping_path = directory.path().join("mapping.yaml");
    std::fs::write(
        &mapping_path,
        "enrich:\n  - table: clients.json\n    key: client_id\n    columns: [tier, http_status]\n  \
         - table: regions.json\n    key: region\n    columns: [jurisdiction]\n",
    )
    .unwrap();
    let mapping = Mapping::from_yaml_path(&mapping_path).unwrap();
    let (rows, _) = decode_with(
        mapping,
        "{\"timestamp\":1767225600,\"client_id\":\"acme\",\"region\":\"eu\"}\n{\"timestamp\":1767225600,\"client_id\":\"globex\",\"region\":\"us\"}\n",
    );
    assert_eq!(rows[0]["tier"], json!("gold"));
    assert_eq!(
        rows[0]["http_status"],
        json!(418),
        "converted to the column type"
    );
    assert_eq!(rows[0]["jurisdiction"], json!("gdpr"));
    assert_eq!(rows[1]["tier"], json!("silver"));
    assert!(rows[1].get("jurisdiction").is_none());
}

#[test]
fn enrichment_errors() {
    let directory = tempfile::tempdir().unwrap();
    std::fs::write(
        directory.path().join("t.csv"),
        "model_version,owner\nv1,a\n",
    )
    .unwrap();
    let mapping_path = directory.path().join("mapping.yaml");
    let write_and_load = |yaml: &str| {
        std::fs::write(&mapping_path, yaml).unwrap();
        Mapping::from_yaml_path(&mapping_path)
            .unwrap_err()
            .to_string()
    };
    let missing_column = write_and_load(
        "enrich:\n  - table: t.csv\n    key: model_version\n    columns: [owners]\n",
    );
    assert!(
        missing_column.contains("mapping.yaml:2:12: lookup table"),
        "{missing_column}"
    );
    assert!(
        missing_column.contains("no column `owners` (columns: model_version, owner)"),
        "{missing_column}"
    );
    let missing_file = write_and_load(
        "enrich:\n  - table: nope.csv\n    key: model_version\n    columns: [owner]\n",
    );
    assert!(
        missing_file.contains("mapping.yaml:2:12: cannot read lookup table"),
        "{missing_file}"
    );
    let unknown = write_and_load("enrich:\n  - table: t.csv\n    on: model_version\n");
    assert!(
        unknown.contains("mapping.yaml:3:5: unknown key `on` in an enrichment"),
        "{unknown}"
    );

    let mut table = LookupTable::new("codes", "model_id", vec!["http_status".into()]);
    table
        .insert("m", vec![Some("not-a-number".into())])
        .unwrap();
    let error = Enrichment::from_tables(vec![table])
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "lookup table codes: row \"m\", column `http_status`: field codes.http_status: \
         expected an integer, got string \"not-a-number\""
    );
}

#[test]
fn enrichment_built_in_code() {
    let mut table = LookupTable::new("owners", "model_id", vec!["owner".into()]);
    table.insert("m1", vec![Some("alice".into())]).unwrap();
    let enrichment = Enrichment::from_tables(vec![table]).unwrap();
    let mapping = Mapping::builtin().with_enrichment(enrichment);
    assert_eq!(mapping.schema().fields().last().unwrap().name(), "owner");
    let decoded = row_with(mapping, r#"{"timestamp":1767225600,"model_id":"m1"}"#);
    assert_eq!(decoded["owner"], json!("alice"));
}

#[test]
fn wrong_type_reasons_are_precise() {
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"latency_ms":"abc"}"#),
        r#"field latency_ms: expected a number, got string "abc""#
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"input_tokens":12.5}"#),
        "field input_tokens: expected an integer, got number 12.5"
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"model_id":{"a":1}}"#),
        "field model_id: expected a string, got an object"
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"logits":[1,"x"]}"#),
        r#"field logits: expected an array of finite numbers, element 1 is string "x""#
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"probabilities":0.5}"#),
        "field probabilities: expected an array of numbers, got number 0.5"
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"attributes":"x"}"#),
        r#"field attributes: expected an object, got string "x""#
    );
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"http_status":99999999999}"#),
        "field http_status: integer out of range -2147483648..=2147483647, got number 99999999999"
    );
}

#[test]
fn huge_numbers() {
    let refused = reason(r#"{"timestamp":1767225600,"latency_ms":1e999}"#);
    assert!(
        refused.starts_with(
            "invalid JSON at byte column 42: number out of range (beyond a 64-bit float)"
        ),
        "{refused}"
    );
    let decoded = row(r#"{"timestamp":1767225600,"unmapped":1e999}"#);
    assert_eq!(decoded["attributes"]["unmapped"], json!("1e999"));
    assert_eq!(
        reason(r#"{"timestamp":1767225600,"logits":[1e39]}"#),
        "field logits: expected an array of finite numbers, element 0 is number 1e39"
    );
    assert_eq!(
        reason(r#"{"timestamp":1e30}"#),
        "field timestamp: unusable timestamp, out of range (before 1970 or after 2262), got number 1e30"
    );
    let decoded = row(r#"{"timestamp":1767225600,"big":123456789012345678901234567890}"#);
    assert_eq!(
        decoded["attributes"]["big"],
        json!("123456789012345678901234567890")
    );
}

#[test]
fn missing_and_unparsable_timestamps() {
    assert_eq!(
        reason(r#"{"model_id":"m"}"#),
        "missing timestamp (looked for timestamp, timeUnixNano, observedTimeUnixNano, ts, time, @timestamp)"
    );
    assert_eq!(
        reason(r#"{"timestamp":null}"#),
        "missing timestamp (looked for timestamp, timeUnixNano, observedTimeUnixNano, ts, time, @timestamp)"
    );
    assert_eq!(
        reason(r#"{"ts":"yesterday"}"#),
        r#"field ts: unusable timestamp, expected RFC 3339 or an epoch number, got string "yesterday""#
    );
    assert_eq!(
        reason(r#"{"ts":true}"#),
        "field ts: unusable timestamp, expected RFC 3339 or an epoch number, got boolean true"
    );
}

#[test]
fn invalid_json_names_the_byte_column() {
    let refused = reason(r#"{"timestamp":1767225600,"a":}"#);
    assert!(
        refused.starts_with("invalid JSON at byte column 29: "),
        "{refused}"
    );
    let refused = reason(r#"{"timestamp":1767225600,"a":NaN}"#);
    assert!(
        refused.starts_with("invalid JSON at byte column 29: "),
        "{refused}"
    );
    let refused = reason(r#"{"timestamp":Infinity}"#);
    assert!(
        refused.starts_with("invalid JSON at byte column 14"),
        "{refused}"
    );
    let refused = reason(r#"{"timestamp":1767225600} trailing"#);
    assert!(
        refused.starts_with(
            "invalid JSON at byte column 26: JSON has non-whitespace trailing characters"
        ),
        "{refused}"
    );
    let refused = reason(r#"{"timestamp":1767225600}}"#);
    assert!(
        refused.starts_with("invalid JSON at byte column 25"),
        "{refused}"
    );
    let refused = reason(r#"{"timestamp":1767225600"#);
    assert!(refused.starts_with("invalid JSON"), "{refused}");
    let refused = reason("{\"timestamp\":1767225600,\"a\":\"x\u{0}y\"}");
    assert!(
        refused.starts_with("invalid JSON at byte column"),
        "{refused}"
    );
}

#[test]
fn not_an_object() {
    assert_eq!(reason("[1,2,3]"), "expected a JSON object, got an array");
    assert_eq!(
        reason(r#""text""#),
        r#"expected a JSON object, got string "text""#
    );
    assert_eq!(reason("42"), "expected a JSON object, got number 42");
    assert_eq!(reason("null"), "expected a JSON object, got null");
    assert!(reason("hello").starts_with("invalid JSON at byte column 1"));
    assert!(reason("[1,2").starts_with("invalid JSON"));
}

#[test]
fn invalid_utf8_and_nul_bytes() {
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let mut data = b"{\"timestamp\":1767225600,\"a\":\"".to_vec();
    data.extend_from_slice(&[0xff, 0xfe]);
    data.extend_from_slice(b"\"}\n\0\0\0\n{\"timestamp\":1767225600}\n");
    let decoded = decoder.decode(&chunk(&data));
    assert_eq!(decoded.batch.num_rows(), 1);
    assert_eq!(decoded.dead_letters.len(), 2);
    assert_eq!(
        decoded.dead_letters[0].reason,
        "invalid UTF-8 at byte column 30"
    );
    assert!(decoded.dead_letters[0].raw.contains('\u{fffd}'));
    assert!(decoded.dead_letters[1]
        .reason
        .starts_with("invalid JSON at byte column 1"));
    assert_eq!(
        decoded
            .counters
            .dead_letters_of(DeadLetterKind::InvalidUtf8),
        1
    );
}

#[test]
fn nesting_limit() {
    let nested = |depth: usize| {
        let mut text = String::from(r#"{"timestamp":1767225600,"a":"#);
        text.push_str(&"[".repeat(depth - 1));
        text.push_str(&"]".repeat(depth - 1));
        text.push('}');
        text
    };
    row(&nested(MAX_NESTING_DEPTH));
    assert_eq!(
        reason(&nested(MAX_NESTING_DEPTH + 1)),
        format!(
            "nesting deeper than 64 levels at byte column {}",
            28 + MAX_NESTING_DEPTH
        )
    );
    // Brackets inside strings do not count.
    row(&format!(
        r#"{{"timestamp":1767225600,"a":"{}"}}"#,
        "[".repeat(500)
    ));
    // A million brackets: refused without recursing.
    let mut huge = String::from("{\"a\":");
    huge.push_str(&"[".repeat(1_000_000));
    assert!(reason(&huge).starts_with("nesting deeper than 64 levels"));
}

#[test]
fn over_long_lines_are_not_parsed() {
    let mut line = String::from(r#"{"timestamp":1767225600,"pad":""#);
    line.push_str(&"x".repeat(MAX_LINE_BYTES));
    line.push_str("\"}");
    let text = format!("{{\"timestamp\":1767225600}}\n{line}\n{{\"timestamp\":1767225601}}\n");
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let decoded = decoder.decode(&chunk(text.as_bytes()));
    assert_eq!(decoded.batch.num_rows(), 2);
    assert_eq!(decoded.dead_letters.len(), 1);
    let dead_letter = &decoded.dead_letters[0];
    assert_eq!(dead_letter.line, 2);
    assert_eq!(dead_letter.offset, 25);
    assert_eq!(
        dead_letter.reason,
        format!("line is {} bytes, over the 1048576-byte limit", line.len())
    );
    assert_eq!(dead_letter.raw.len(), crate::DEAD_LETTER_RAW_LIMIT);
    // Exactly at the limit is fine.
    let mut at_limit = String::from(r#"{"timestamp":1767225600,"pad":""#);
    at_limit.push_str(&"x".repeat(MAX_LINE_BYTES - at_limit.len() - 2));
    at_limit.push_str("\"}");
    assert_eq!(at_limit.len(), MAX_LINE_BYTES);
    row(&at_limit);
}

#[test]
fn crlf_blank_lines_bom_and_missing_final_newline() {
    let text = "\u{feff}{\"timestamp\":1767225600}\r\n\r\n   \n\t\r\n{\"timestamp\":1767225601,\"model_id\":\"m\"}\r\n{\"timestamp\":1767225602}";
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let decoded = decoder.decode(&chunk(text.as_bytes()));
    assert!(
        decoded.dead_letters.is_empty(),
        "{:?}",
        decoded.dead_letters
    );
    assert_eq!(decoded.batch.num_rows(), 3);
    assert_eq!(decoded.lines, 6);
    assert_eq!(decoded.counters.blank_lines, 3);
    assert_eq!(decoded.counters.events, 3);
    let rows = batch_to_json_rows(&decoded.batch);
    assert_eq!(rows[1]["model_id"], json!("m"));
    assert_eq!(rows[2]["timestamp"], json!("2026-01-01T00:00:02Z"));
}

#[test]
fn dead_letters_carry_source_position_and_good_lines_survive() {
    let text = concat!(
        "{\"timestamp\":1767225600,\"request_id\":\"a\"}\n",
        "{oops\n",
        "{\"timestamp\":1767225600,\"request_id\":\"b\"}\n",
        "[]\n",
        "{\"timestamp\":1767225600,\"request_id\":\"c\"}\n",
    );
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let decoded = decoder.decode(&Chunk {
        source: Arc::from("app.log"),
        first_line: 101,
        first_offset: 5000,
        data: text.as_bytes().to_vec(),
        skipped_bytes: 0,
    });
    let rows = batch_to_json_rows(&decoded.batch);
    let ids: Vec<_> = rows.iter().map(|row| row["request_id"].clone()).collect();
    assert_eq!(ids, vec![json!("a"), json!("b"), json!("c")]);
    assert_eq!(decoded.dead_letters.len(), 2);
    assert_eq!(decoded.dead_letters[0].source, "app.log");
    assert_eq!(decoded.dead_letters[0].line, 102);
    assert_eq!(decoded.dead_letters[0].offset, 5000 + 42);
    assert_eq!(decoded.dead_letters[0].raw, "{oops");
    assert_eq!(decoded.dead_letters[1].line, 104);
    assert_eq!(decoder.counters().events, 3);
    assert_eq!(decoder.counters().dead_letters(), 2);
    // A second chunk starts a fresh batch but keeps counting.
    let again = decoder.decode(&chunk(b"{\"timestamp\":1767225600}\n"));
    assert_eq!(again.batch.num_rows(), 1);
    assert_eq!(decoder.counters().events, 4);
    assert_eq!(decoder.clone().counters().events, 0);
}

#[test]
fn a_bad_line_leaves_no_half_row() {
    // The model_id is accepted before latency_ms fails: the row must vanish
    // entirely, including its attributes.
    let text = concat!(
        "{\"timestamp\":1767225600,\"model_id\":\"bad\",\"x\":1,\"latency_ms\":\"slow\"}\n",
        "{\"timestamp\":1767225600,\"model_id\":\"good\"}\n",
    );
    let (rows, dead_letters) = decode_builtin(text);
    assert_eq!(dead_letters.len(), 1);
    assert_eq!(
        rows,
        vec![
            json!({"timestamp": JAN_2026, "stream": "inference", "model_id": "good", "status": "ok"})
        ]
    );
}

fn arbitrary_json(depth: u32) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z_.@\\\\\"\u{0}-\u{7f}é]{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("timestamp"),
            Just("ts"),
            Just("latency_ms"),
            Just("model_id"),
            Just("status"),
            Just("logits"),
            Just("probabilities"),
            Just("attributes"),
            Just("gen_ai"),
            Just("http_status")
        ]
        .prop_map(|key| Value::String(key.to_string())),
    ];
    leaf.prop_recursive(depth, 64, 8, |inner| {
        let key = prop_oneof![
            Just("timestamp".to_string()),
            Just("ts".to_string()),
            Just("latency_ms".to_string()),
            Just("model_id".to_string()),
            Just("status".to_string()),
            Just("logits".to_string()),
            Just("probabilities".to_string()),
            Just("attributes".to_string()),
            Just("gen_ai".to_string()),
            Just("usage".to_string()),
            Just("input_tokens".to_string()),
            Just("http_status".to_string()),
            "[a-z.]{0,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
        let decoded = decoder.decode(&chunk(&data));
        let accounted = decoded.counters.events + decoded.counters.blank_lines + decoded.counters.dead_letters();
        prop_assert_eq!(accounted, decoded.lines);
    }

    #[test]
    fn random_json_never_panics(value in arbitrary_json(4)) {
        let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
        let text = value.to_string();
        let decoded = decoder.decode(&chunk(text.as_bytes()));
        prop_assert_eq!(decoded.batch.num_rows() as u64 + decoded.dead_letters.len() as u64, 1);
        // Truncations of valid JSON are refused, never half-decoded.
        for cut in [text.len() / 3, text.len() / 2, text.len().saturating_sub(1)] {
            if let Some(prefix) = text.get(..cut) {
                let decoded = decoder.decode(&chunk(prefix.as_bytes()));
                prop_assert!(decoded.batch.num_rows() + decoded.dead_letters.len() <= 1);
            }
        }
    }

    #[test]
    fn good_lines_between_garbage_are_all_kept_in_order(
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..40), 1..20)
    ) {
        let mut text = Vec::new();
        let mut expected_ids = Vec::new();
        for (index, junk) in garbage.iter().enumerate() {
            let good = format!("{{\"timestamp\":1767225600,\"request_id\":\"id-{index}\"}}\n");
            text.extend_from_slice(good.as_bytes());
            expected_ids.push(json!(format!("id-{index}")));
            text.extend_from_slice(junk);
            text.push(b'\n');
        }
        let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
        let decoded = decoder.decode(&chunk(&text));
        let rows = batch_to_json_rows(&decoded.batch);
        // Garbage may happen to be a valid event; the good ones are a
        // subsequence, in order.
        let ids: Vec<Value> = rows.iter().filter_map(|row| row.get("request_id").cloned()).collect();
        let mut expected = expected_ids.iter();
        let mut matched = 0;
        for id in &ids {
            if expected.clone().next() == Some(id) {
                expected.next();
                matched += 1;
            }
        }
        prop_assert_eq!(matched, expected_ids.len(), "ids: {:?}", ids);
        for dead_letter in &decoded.dead_letters {
            prop_assert_eq!(dead_letter.line % 2, 0, "only garbage lines are refused");
        }
    }
}

#[test]
fn escaped_keys_and_values() {
    let decoded = row(
        r#"{"time\u0073tamp":1767225600,"model\u005fid":"m\u00e9","re\"gion":"e\tu","gen_ai":{"request":{"mod\u0065l":"x"}}}"#,
    );
    assert_eq!(decoded["model_id"], json!("mé"));
    assert_eq!(decoded["attributes"], json!({"re\"gion": "e\tu"}));
    assert_eq!(decoded["timestamp"], json!(JAN_2026));
}

#[test]
fn nan_and_infinity_tokens_are_named() {
    for line in [
        r#"{"timestamp":1767225600,"x":NaN}"#,
        r#"{"timestamp":1767225600,"x":-Infinity}"#,
    ] {
        let refused = reason(line);
        assert!(
            refused.contains("NaN and Infinity are not JSON numbers"),
            "{refused}"
        );
    }
}

/// An unmapped field holding more than `SHALLOW_OPENINGS` brackets sends a
/// line down the iterator-based walk; both walks must agree.
fn with_deep_padding(line: &str) -> String {
    let padding = format!(r#""zz_padding":{}{}"#, "[".repeat(20), "]".repeat(20));
    match line.strip_suffix('}') {
        Some(body) if body.trim_end().ends_with('{') => format!("{body}{padding}}}"),
        Some(body) => format!("{body},{padding}}}"),
        None => line.to_string(),
    }
}

fn without_padding(mut row: Value) -> Value {
    if let Some(attributes) = row.get_mut("attributes").and_then(Value::as_object_mut) {
        attributes.remove("zz_padding");
        if attributes.is_empty() {
            row.as_object_mut().unwrap().remove("attributes");
        }
    }
    row
}

#[test]
fn deep_lines_take_the_iterator_walk_with_the_same_result() {
    let mapping = || {
        user_mapping(
            "fields:\n  - from: response.usage.prompt_tokens\n    to: input_tokens\n  - from: prompt\n    to: input_hash\n    transform: hash\n  - from: dup\n    to: first_copy\n  - from: dup\n    to: model_version\n",
        )
    };
    for line in [
        r#"{"timestamp":1767225600,"model_id":"m","probabilities":[0.2,"0.8"],"region":"eu"}"#,
        r#"{"ts":"2026-01-01T00:00:00Z","gen_ai":{"request":{"model":"x","temperature":0.1}},"error":{"type":"E"}}"#,
        r#"{"timestamp":1767225600,"attributes":{"gen_ai.response.model":"y","k":"v"},"response":{"usage":{"prompt_tokens":"4"}}}"#,
        r#"{"timestamp":1767225600,"prompt":{"a":[1,2]},"dup":7,"logits":[1,2,3],"model\u005fid":"esc"}"#,
        r#"{"timestamp":1767225600,"gen_ai":"not an object","error":null}"#,
    ] {
        let (shallow_rows, shallow_dead) = decode_with(mapping(), line);
        let (deep_rows, deep_dead) = decode_with(mapping(), &with_deep_padding(line));
        assert!(
            shallow_dead.is_empty() && deep_dead.is_empty(),
            "{shallow_dead:?} {deep_dead:?}"
        );
        assert_eq!(
            without_padding(deep_rows[0].clone()),
            shallow_rows[0],
            "{line}"
        );
    }
    for line in [
        r#"{"timestamp":1767225600,"latency_ms":"slow"}"#,
        r#"{"timestamp":1767225600,"attributes":3}"#,
        r#"{"model_id":"m"}"#,
        r#"{"timestamp":1767225600,"logits":[1,[2]]}"#,
    ] {
        let shallow = reason(line);
        let deep = reason(&with_deep_padding(line));
        assert_eq!(shallow, deep, "{line}");
    }
    let deep_invalid = reason(&with_deep_padding(r#"{"timestamp":1767225600} x"#));
    assert!(deep_invalid.starts_with("invalid JSON"), "{deep_invalid}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn both_walks_agree_on_random_json(value in arbitrary_json(3)) {
        let Value::Object(mut object) = value else { return Ok(()); };
        object.insert("timestamp".into(), json!(1_767_225_600));
        object.remove("zz_padding");
        let line = Value::Object(object).to_string();
        let (shallow_rows, shallow_dead) = decode_builtin(&line);
        let (deep_rows, deep_dead) = decode_builtin(&with_deep_padding(&line));
        prop_assert_eq!(shallow_rows.len(), deep_rows.len());
        prop_assert_eq!(shallow_dead.len(), deep_dead.len());
        if let (Some(shallow), Some(deep)) = (shallow_rows.first(), deep_rows.first()) {
            prop_assert_eq!(shallow, &without_padding(deep.clone()));
        }
        if let (Some(shallow), Some(deep)) = (shallow_dead.first(), deep_dead.first()) {
            prop_assert_eq!(&shallow.reason, &deep.reason);
        }
    }
}

#[test]
fn line_scanner_splits_on_newlines() {
    let lines = |data: &[u8]| LineScanner::new(data).collect::<Vec<_>>();
    assert_eq!(lines(b""), vec![]);
    assert_eq!(lines(b"\n"), vec![(0, 0)]);
    assert_eq!(lines(b"{[}\n{}"), vec![(0, 3), (4, 6)]);
    assert_eq!(lines(b"{}\n\n[[\n"), vec![(0, 2), (3, 3), (4, 6)]);
}

// ---------------------------------------------------------------------------
// Projection (`Mapping::projected`).

const SIMULATOR_LINE: &str = r#"{"timestamp":"2026-01-01T00:00:00.000Z","model_id":"vision","model_version":"3.2","ab_group":"baseline","request_id":"r-0000000000000000","client_id":"c-00095","client_ip":"10.168.93.6","source_id":"src-00","status":"ok","http_status":200,"latency_ms":28.3,"input_tokens":849,"output_tokens":1,"input_hash":"09d040de01073f68","predicted_class":5,"confidence":0.7569,"probabilities":[0.0298,0.0115,0.0378,0.0193,0.038,0.7569,0.0556,0.0071,0.0312,0.0129],"extra":"kept as an attribute"}"#;

const DETECT_COLUMNS: &[&str] = &[
    "timestamp",
    "stream",
    "status",
    "model_id",
    "model_version",
    "ab_group",
    "client_id",
    "input_hash",
    "latency_ms",
];

fn is_null(row: &Value, key: &str) -> bool {
    row.get(key).is_none_or(Value::is_null)
}

fn projected_row(columns: &[&str], text: &str) -> Value {
    let (rows, dead_letters) = decode_with(Mapping::builtin().projected(columns), text);
    assert!(dead_letters.is_empty(), "{dead_letters:?}");
    assert_eq!(rows.len(), 1);
    rows.into_iter().next().unwrap()
}

#[test]
fn projection_keeps_requested_columns_and_nulls_the_rest() {
    let full = row(SIMULATOR_LINE);
    let projected = projected_row(DETECT_COLUMNS, SIMULATOR_LINE);
    for field in inferwatch_core::canonical_schema().fields() {
        let name = field.name().as_str();
        if DETECT_COLUMNS.contains(&name) || name == "http_status" || name == "error_type" {
            assert_eq!(projected.get(name), full.get(name), "{name}");
        } else {
            assert!(
                is_null(&projected, name),
                "{name} should be null: {projected}"
            );
        }
    }
    assert!(!is_null(&full, "attributes"));
    assert!(is_null(&projected, "attributes"));
    assert!(!is_null(&full, "entropy"));
    // Asking for attributes keeps them exactly.
    let with_attributes = projected_row(&["model_id", "attributes"], SIMULATOR_LINE);
    assert_eq!(with_attributes["attributes"], full["attributes"]);
    assert!(is_null(&with_attributes, "latency_ms"));
}

#[test]
fn projection_keeps_the_schema() {
    let mapping = Mapping::builtin();
    let projected = mapping.projected(&["model_id"]);
    assert_eq!(projected.schema(), mapping.schema());
    let mut decoder = Decoder::new(Arc::new(projected));
    let decoded = decoder.decode(&chunk(SIMULATOR_LINE.as_bytes()));
    assert_eq!(decoded.batch.schema(), mapping.schema());
}

#[test]
fn projection_keeps_dependencies() {
    // status derived from http_status when status is requested and absent.
    let line = format!(r#"{{"timestamp":"{JAN_2026}","http_status":503,"latency_ms":1}}"#);
    let projected = projected_row(&["status"], &line);
    assert_eq!(projected["status"], "error");
    assert_eq!(projected["http_status"], 503);
    assert!(is_null(&projected, "latency_ms"));
    // status is non-nullable, so it is kept (and derived) even unasked.
    let projected = projected_row(&["latency_ms"], &line);
    assert_eq!(projected["status"], "error");
    // confidence derived from probabilities when confidence is requested.
    let line = format!(r#"{{"timestamp":"{JAN_2026}","probabilities":[0.2,0.8]}}"#);
    let projected = projected_row(&["confidence"], &line);
    assert!((float(&projected, "confidence") - 0.8).abs() < 1e-9);
    assert!(!is_null(&projected, "probabilities"));
    assert!(is_null(&projected, "entropy"));
    assert!(is_null(&projected, "predicted_class"));
    // The timestamp is always kept: without one the line is still refused.
    let mapping = Mapping::builtin().projected(&["model_id"]);
    assert!(reason_with(mapping, r#"{"model_id":"m"}"#).contains("missing timestamp"));
}

#[test]
fn projection_skips_unread_fields_but_not_invalid_json() {
    let columns = &["model_id"];
    // A wrong type in a skipped field is accepted...
    let line = format!(r#"{{"timestamp":"{JAN_2026}","model_id":"m","latency_ms":"slow"}}"#);
    assert_eq!(projected_row(columns, &line)["model_id"], "m");
    // ... but not in a kept one.
    let line = format!(r#"{{"timestamp":"{JAN_2026}","model_id":"m","latency_ms":"slow"}}"#);
    let full_reason = reason(&line);
    let mapping = Mapping::builtin().projected(&["latency_ms"]);
    assert_eq!(reason_with(mapping, &line), full_reason);
    // Invalid JSON inside a skipped value is still a dead letter, on the
    // serde path and on the deep-line path.
    let deep = "[".repeat(20) + &"]".repeat(20);
    for bad in [
        format!(r#"{{"timestamp":"{JAN_2026}","probabilities":[0.1,,0.2],"model_id":"m"}}"#),
        format!(r#"{{"timestamp":"{JAN_2026}","request_id":"r\q","model_id":"m"}}"#),
        format!(r#"{{"timestamp":"{JAN_2026}","unmapped":{{"a":tru}},"model_id":"m"}}"#),
        format!(r#"{{"timestamp":"{JAN_2026}","deep":{deep},"x":[1,}},"model_id":"m"}}"#),
        format!(r#"{{"timestamp":"{JAN_2026}","model_id":"m","latency_ms":1"#),
    ] {
        let mapping = Mapping::builtin().projected(columns);
        let (rows, dead_letters) = decode_with(mapping, &bad);
        assert!(rows.is_empty(), "{bad}: {rows:?}");
        assert_eq!(dead_letters.len(), 1, "{bad}");
        assert!(
            dead_letters[0].reason.contains("invalid JSON"),
            "{bad}: {}",
            dead_letters[0].reason
        );
    }
}

#[test]
fn projection_on_deep_lines_matches_the_full_decoder() {
    let deep = "[".repeat(20) + &"]".repeat(20);
    let line = format!(
        r#"{{"timestamp":"{JAN_2026}","model_id":"m","deep":{deep},"latency_ms":2.5,"http_status":404}}"#
    );
    let full = row(&line);
    let projected = projected_row(&["model_id", "status"], &line);
    assert_eq!(projected["model_id"], full["model_id"]);
    assert_eq!(projected["status"], full["status"]);
    assert!(is_null(&projected, "latency_ms"));
    assert!(is_null(&projected, "attributes"));
}

// ---------------------------------------------------------------------------
// The flat-line fast path against the general walk.

/// A JSON number as a log writer might print it, including forms the fast
/// path must hand over (exponents, huge mantissas, `-0`).
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i32>().prop_map(|number| number.to_string()),
        any::<u64>().prop_map(|number| number.to_string()),
        (0u32..100_000, 0usize..7)
            .prop_map(|(number, decimals)| format!("{:.decimals$}", f64::from(number) / 997.0)),
        (-99i32..99, -30i32..30, prop::bool::ANY).prop_map(|(mantissa, exponent, capital)| {
            format!("{mantissa}{}{exponent}", if capital { "E" } else { "e" })
        }),
        prop_oneof![
            Just("-0"),
            Just("-0.0"),
            Just("0.1e+2"),
            Just("1e400"),
            Just("123456789012345678901234"),
            Just("9007199254740993.25"),
            Just("0.30000000000000004"),
        ]
        .prop_map(str::to_string),
    ]
}

/// A scalar or small array as raw JSON text, mostly inside the flat subset.
fn flat_value_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => number_text(),
        4 => "[a-z0-9 .:_-]{0,20}".prop_map(|text| format!("\"{text}\"")),
        1 => "[a-z\"\\\\\u{1}é]{0,6}".prop_map(|text| serde_json::to_string(&text).unwrap()),
        1 => prop_oneof![Just("true"), Just("false"), Just("null"), Just("{}"), Just("{\"a\":1}")]
            .prop_map(str::to_string),
        1 => Just("\"2026-01-01T00:00:00Z\"".to_string()),
        1 => Just("\"ok\"".to_string()),
        2 => (prop::collection::vec(number_text(), 0..5), "[ ]{0,1}").prop_map(|(items, space)| {
            format!("[{space}{}{space}]", items.join(&format!(",{space}")))
        }),
        1 => Just("[0.2,\"0.8\"]".to_string()),
        1 => Just("[1,[2]]".to_string()),
    ]
}

fn flat_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop_oneof![
            Just("timestamp"),
            Just("ts"),
            Just("time"),
            Just("model_id"),
            Just("model"),
            Just("model_version"),
            Just("status"),
            Just("http_status"),
            Just("latency_ms"),
            Just("input_tokens"),
            Just("probabilities"),
            Just("logits"),
            Just("confidence"),
            Just("client_id"),
            Just("input_hash"),
            Just("prompt"),
            Just("dup"),
            Just("error_type"),
            Just("gen_ai.request.model"),
            Just("region"),
        ]
        .prop_map(|key| format!("\"{key}\"")),
        "[a-z.]{0,8}".prop_map(|key| format!("\"{key}\"")),
        Just("\"model\\u005fid\"".to_string()),
    ]
}

/// Lines of flat objects in a handful of shapes, so that the key-order
/// memory both hits and misses, printed with varied spacing.
fn flat_lines() -> impl Strategy<Value = Vec<String>> {
    let field = (flat_key(), flat_value_text());
    let shape = prop::collection::vec(field, 0..10);
    let spacing = prop_oneof![
        Just(("", "")),
        Just((" ", " ")),
        Just(("", " ")),
        Just(("\t", ""))
    ];
    (
        prop::collection::vec((shape, spacing, prop::bool::weighted(0.8)), 1..8),
        1usize..4,
    )
        .prop_map(|(shapes, repeats)| {
            let mut lines = Vec::new();
            for _ in 0..repeats {
                for (fields, (around_colon, after_comma), with_time) in &shapes {
                    let mut parts: Vec<String> = fields
                        .iter()
                        .map(|(key, value)| format!("{key}{around_colon}:{around_colon}{value}"))
                        .collect();
                    if *with_time {
                        parts.insert(0, "\"timestamp\":1767225600".to_string());
                    }
                    lines.push(format!("{{{}}}", parts.join(&format!(",{after_comma}"))));
                }
            }
            lines
        })
}

fn decode_both_ways(mapping: Mapping, text: &str) -> [(Vec<Value>, Vec<DeadLetter>); 2] {
    let mapping = Arc::new(mapping);
    let mut fast = Decoder::new(mapping.clone());
    let mut general = Decoder::new(mapping).without_flat_path();
    [&mut fast, &mut general].map(|decoder| {
        let decoded = decoder.decode(&chunk(text.as_bytes()));
        (batch_to_json_rows(&decoded.batch), decoded.dead_letters)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_flat_path_and_the_general_walk_agree(lines in flat_lines(), mapping_choice in 0..3) {
        let text = lines.join("\n");
        let mapping = match mapping_choice {
            0 => Mapping::builtin(),
            1 => user_mapping(
                "fields:\n  - from: prompt\n    to: input_hash\n    transform: hash\n  - from: dup\n    to: first_copy\n    type: integer\n  - from: dup\n    to: model_version\n  - from: region\n    to: region_attribute\n    type: float\n  - from: confidence\n    drop: true\n",
            ),
            _ => Mapping::builtin().projected(DETECT_COLUMNS),
        };
        let [fast, general] = decode_both_ways(mapping, &text);
        prop_assert_eq!(fast, general, "{}", text);
    }
}

#[test]
fn the_flat_path_reads_the_simulator_line_and_hands_over_the_rest() {
    let flat = SIMULATOR_LINE.to_string();
    let spaced = flat.replace("\":", "\": ").replace(",\"", ", \"");
    let escaped = flat.replace("\"vision\"", "\"vi\\u0073ion\"");
    let nested = flat.replace(
        "\"extra\":\"kept as an attribute\"",
        "\"extra\":{\"a\":[1]}",
    );
    let text = [flat.as_str(), &spaced, &escaped, &nested, &flat].join("\n");
    let [fast, general] = decode_both_ways(Mapping::builtin(), &text);
    assert_eq!(fast, general);
    assert_eq!(fast.0.len(), 5);
    assert!(fast.0.iter().all(|row| row["model_id"] == json!("vision")));
    let mut record = Record::new(0, 0);
    let mut order = crate::flat::KeyOrder::default();
    let mapping = Mapping::builtin();
    assert!(crate::flat::walk_flat(&mapping, &mut record, &mut order, &spaced).is_some());
    assert!(crate::flat::walk_flat(&mapping, &mut record, &mut order, &escaped).is_none());
    assert!(crate::flat::walk_flat(&mapping, &mut record, &mut order, &nested).is_none());
}

#[test]
fn issue_16_values_outside_their_domain_are_out_of_range_dead_letters() {
    let cases = [
        (r#""latency_ms":1e300"#, "field latency_ms: 1e300"),
        (r#""latency_ms":-5"#, "field latency_ms: -5"),
        (r#""ttft_ms":86400001"#, "field ttft_ms"),
        (r#""input_tokens":100000001"#, "field input_tokens"),
        (r#""output_tokens":-1"#, "field output_tokens"),
        (r#""confidence":1.5"#, "field confidence: 1.5"),
        (r#""probabilities":[0.5,1.7]"#, "field probabilities: 1.7"),
        (r#""logits":[1,-1e31]"#, "field logits"),
        (r#""http_status":1200"#, "field http_status"),
    ];
    for (field, expected) in cases {
        let line = format!(
            r#"{{"timestamp":"{JAN_2026}","model_id":"recsys","client_id":"c-1",{field}}}"#
        );
        let (rows, dead_letters) = decode_builtin(&line);
        assert!(rows.is_empty(), "{line}");
        assert_eq!(dead_letters.len(), 1, "{line}");
        let dead = &dead_letters[0];
        assert!(dead.reason.starts_with(expected), "{line}: {}", dead.reason);
        assert!(
            dead.reason.contains("outside its domain"),
            "{}",
            dead.reason
        );
        assert_eq!(dead.kind, Some(DeadLetterKind::OutOfRange));
        assert_eq!(dead.client_id.as_deref(), Some("c-1"));
        assert_eq!(dead.model_id.as_deref(), Some("recsys"));
    }
    // Edges stay in: zero, the ceiling, f32 rounding past 1, masked logits.
    let good = row(&format!(
        r#"{{"timestamp":"{JAN_2026}","latency_ms":86400000,"ttft_ms":0,"input_tokens":100000000,
             "confidence":1.0000001,"logits":[-1e9,3.5]}}"#
    ));
    assert_eq!(good["latency_ms"], json!(86400000.0));
}

#[test]
fn issue_16_a_mapping_sets_the_latency_and_token_limits() {
    let mapping = Mapping::from_yaml_str(
        Path::new("limits.yaml"),
        "limits:\n  latency_ms: 1000\n  tokens: 50\n",
    )
    .unwrap();
    let refused = reason_with(
        mapping.clone(),
        &format!(r#"{{"timestamp":"{JAN_2026}","latency_ms":1001}}"#),
    );
    assert!(refused.contains("[0, 1000]"), "{refused}");
    let refused = reason_with(
        mapping.clone(),
        &format!(r#"{{"timestamp":"{JAN_2026}","input_tokens":51}}"#),
    );
    assert!(refused.contains("input_tokens"), "{refused}");
    let (rows, _) = decode_with(
        mapping,
        &format!(r#"{{"timestamp":"{JAN_2026}","latency_ms":999}}"#),
    );
    assert_eq!(rows.len(), 1);
    let error = Mapping::from_yaml_str(Path::new("limits.yaml"), "limits:\n  latency: 5\n")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("limits.yaml:2:3:"), "{error}");
    assert!(error.contains("latency_ms"), "{error}");
    let error = Mapping::from_yaml_str(Path::new("limits.yaml"), "limits:\n  tokens: -5\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("positive number"), "{error}");
}

/// The simulator's foreign fleet, as its `--mapping-out` reads it back.
const FOREIGN_MAPPING: &str = "fields:
  - { from: ts_ms, to: timestamp, unit: ms }
  - { from: service.name, to: model_id }
  - { from: service.build, to: model_version }
  - { from: caller.key, to: client_id }
  - { from: timing.total_ms, to: latency_ms }
  - { from: usage.prompt, to: input_tokens }
  - { from: prediction.scores, to: probabilities }
";

#[test]
fn nested_lines_along_the_mapping_take_the_fast_path() {
    let mut decoder = Decoder::new(Arc::new(user_mapping(FOREIGN_MAPPING)));
    let mut walk = |line: &str| {
        decoder.record.clear();
        crate::flat::walk_flat(
            &decoder.mapping,
            &mut decoder.record,
            &mut decoder.key_order,
            line,
        )
        .map(|outcome| outcome.is_ok())
    };
    let nested = r#"{"caller":{"key":"k","addr":"10.0.0.1"},"service":{"name":"m","build":"b"},"timing":{"total_ms":5.5},"ts_ms":1767225600000,"usage":{"prompt":2},"prediction":{"scores":[0.1,0.9]}}"#;
    assert_eq!(walk(nested), Some(true));
    // The same keys at the same positions under other parents.
    let swapped = r#"{"service":{"key":"k","addr":"10.0.0.1"},"caller":{"name":"m","build":"b"},"timing":{"total_ms":5.5},"ts_ms":1767225600000}"#;
    assert_eq!(walk(swapped), Some(true));
    // An object under a key the mapping does not descend into is the general walk's.
    assert_eq!(walk(r#"{"ts_ms":1,"extra":{"a":1}}"#), None);
    assert_eq!(walk(r#"{"ts_ms":1,"service":{"name":{"a":1}}}"#), None);
    let text = [
        nested,
        swapped,
        nested,
        r#"{"ts_ms":1767225600000,"service":"flat"}"#,
    ]
    .join("\n");
    let [fast, general] = decode_both_ways(user_mapping(FOREIGN_MAPPING), &text);
    assert_eq!(fast, general);
    let rows = &fast.0;
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["model_id"], "m");
    assert_eq!(rows[0]["client_id"], "k");
    assert_eq!(rows[1]["model_id"], Value::Null, "{}", rows[1]);
    assert_eq!(rows[1]["attributes"]["service.key"], "k", "{}", rows[1]);
    assert_eq!(rows[2]["model_id"], "m");
}
