//! The foreign naming mode: the same fleet as another company would log it.
//!
//! Rules and detectors are tested on the simulator, so they risk learning
//! its words: `recsys`, `2.1`, `baseline`, `latency_ms`. In this mode every
//! event is rewritten with other model names, other version strings, another
//! A/B vocabulary (`stable` / `candidate`), other ids, and another shape:
//! nested objects under other field names, the time as epoch milliseconds.
//! [`FOREIGN_MAPPING`] maps it back to the canonical columns, as a user's
//! own mapping file would, and [`foreign_value`] names an expected alert's
//! group in the foreign words. A rule that passes its fixtures in both modes
//! depends on neither the names nor the shape.

use serde_json::{json, Map, Value};

/// The mapping (an `inferwatch_ingest` mapping file) that reads foreign
/// events back into canonical columns. The built-in names are off, so a
/// field that the mapping forgets is missing rather than found by luck.
pub const FOREIGN_MAPPING: &str = "\
builtin: false
fields:
  - { from: ts_ms, to: timestamp, unit: ms }
  - { from: service.name, to: model_id }
  - { from: service.build, to: model_version }
  - { from: rollout.track, to: ab_group }
  - { from: trace, to: request_id }
  - { from: caller.key, to: client_id }
  - { from: caller.addr, to: client_ip }
  - { from: feed, to: source_id }
  - { from: result, to: status }
  - { from: http.code, to: http_status }
  - { from: timing.total_ms, to: latency_ms }
  - { from: usage.prompt, to: input_tokens }
  - { from: usage.completion, to: output_tokens }
  - { from: payload_digest, to: input_hash }
  - { from: prediction.label, to: predicted_class }
  - { from: prediction.score, to: confidence }
  - { from: prediction.scores, to: probabilities }
";

/// `value` of canonical `column` in the foreign words (unchanged when the
/// column keeps its values, such as `status`).
pub fn foreign_value(column: &str, value: &str) -> String {
    match column {
        "model_id" => match value {
            "recsys" => "ranker".into(),
            "fraud" => "risk-scorer".into(),
            "vision" => "image-tagger".into(),
            "chat-llm" => "assistant".into(),
            other => format!("svc-{other}"),
        },
        // "2.1" → "build-2_1-2026": dots and a leading digit both gone.
        "model_version" => format!("build-{}-2026", value.replace('.', "_")),
        "ab_group" => match value {
            "baseline" => "stable".into(),
            "canary" => "candidate".into(),
            other => other.into(),
        },
        "client_id" => value
            .strip_prefix("c-")
            .map_or_else(|| value.to_string(), |rest| format!("key_{rest}")),
        "source_id" => value
            .strip_prefix("src-")
            .map_or_else(|| value.to_string(), |rest| format!("feed/{rest}")),
        _ => value.to_string(),
    }
}

/// Rewrites one canonical event line (without its newline) in the foreign
/// shape; a line that is not a JSON object is returned unchanged.
pub fn foreign_line(line: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(line) else {
        return line.to_vec();
    };
    let text = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or("");
    let renamed = |name: &str| Value::String(foreign_value(name, text(name)));
    let time_ms = inferwatch_core::parse_timestamp_text(text("timestamp"))
        .map(|nanos| nanos / 1_000_000)
        .unwrap_or_default();
    let mut out = Map::new();
    out.insert("ts_ms".into(), json!(time_ms));
    out.insert(
        "service".into(),
        json!({ "name": renamed("model_id"), "build": renamed("model_version") }),
    );
    out.insert("rollout".into(), json!({ "track": renamed("ab_group") }));
    out.insert(
        "trace".into(),
        event.get("request_id").cloned().unwrap_or(Value::Null),
    );
    out.insert(
        "caller".into(),
        json!({ "key": renamed("client_id"), "addr": text("client_ip") }),
    );
    out.insert("feed".into(), renamed("source_id"));
    out.insert("result".into(), json!(text("status")));
    let field = |name: &str| event.get(name).cloned().unwrap_or(Value::Null);
    out.insert("http".into(), json!({ "code": field("http_status") }));
    out.insert("timing".into(), json!({ "total_ms": field("latency_ms") }));
    out.insert(
        "usage".into(),
        json!({ "prompt": field("input_tokens"), "completion": field("output_tokens") }),
    );
    out.insert("payload_digest".into(), field("input_hash"));
    if event.contains_key("predicted_class") || event.contains_key("probabilities") {
        out.insert(
            "prediction".into(),
            json!({
                "label": field("predicted_class"),
                "score": field("confidence"),
                "scores": field("probabilities"),
            }),
        );
    }
    serde_json::to_vec(&Value::Object(out)).unwrap_or_else(|_| line.to_vec())
}

/// Rewrites a whole JSONL buffer of canonical events.
pub fn foreign_lines(canonical: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len());
    for line in canonical.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        out.extend_from_slice(&foreign_line(line));
        out.push(b'\n');
    }
    out
}

/// A writer that rewrites the canonical JSONL written through it in the
/// foreign shape, line by line (a line cut across writes waits for its end).
pub struct ForeignWriter<W: std::io::Write> {
    inner: W,
    pending: Vec<u8>,
}

impl<W: std::io::Write> ForeignWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        ForeignWriter {
            inner,
            pending: Vec::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for ForeignWriter<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        if let Some(end) = self.pending.iter().rposition(|&b| b == b'\n') {
            let rest = self.pending.split_off(end + 1);
            let whole = std::mem::replace(&mut self.pending, rest);
            self.inner.write_all(&foreign_lines(&whole))?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.inner.write_all(&foreign_lines(&rest))?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_event_shares_no_name_with_the_simulator() {
        let line = br#"{"timestamp":"2026-01-01T00:00:01.5Z","model_id":"recsys","model_version":"2.1","ab_group":"canary","request_id":"r-1","client_id":"c-00042","client_ip":"10.0.0.1","source_id":"src-07","status":"error","http_status":503,"latency_ms":12.5,"input_tokens":3,"output_tokens":1,"input_hash":"ab"}"#;
        let foreign = String::from_utf8(foreign_line(line)).unwrap();
        for word in [
            "recsys",
            "\"2.1\"",
            "canary",
            "c-00042",
            "src-07",
            "latency_ms",
            "model_id",
            "timestamp",
        ] {
            assert!(!foreign.contains(word), "{word} in {foreign}");
        }
        let value: Value = serde_json::from_str(&foreign).unwrap();
        assert_eq!(value["ts_ms"], 1_767_225_601_500i64);
        assert_eq!(value["service"]["name"], "ranker");
        assert_eq!(value["service"]["build"], "build-2_1-2026");
        assert_eq!(value["rollout"]["track"], "candidate");
        assert_eq!(value["timing"]["total_ms"], 12.5);
        assert_eq!(value["caller"]["key"], "key_00042");
    }

    #[test]
    fn the_writer_rewrites_lines_cut_across_writes() {
        use std::io::Write;
        let lines = b"{\"timestamp\":\"2026-01-01T00:00:00Z\",\"model_id\":\"fraud\"}\n\
                      {\"timestamp\":\"2026-01-01T00:00:01Z\",\"model_id\":\"vision\"}\n";
        let mut out = ForeignWriter::new(Vec::new());
        for piece in lines.chunks(7) {
            out.write_all(piece).unwrap();
        }
        out.flush().unwrap();
        assert_eq!(out.inner, foreign_lines(lines));
        assert_eq!(String::from_utf8_lossy(&out.inner).lines().count(), 2);
    }
}
