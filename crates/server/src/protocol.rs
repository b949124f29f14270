//! Framing of the ingest protocols into JSON lines.
//!
//! Every protocol is turned into newline-delimited JSON objects, one line
//! per item, grouped by stream, and then decoded by the same decoders as
//! files: the mapping, the dead letters and the event-time guard are the
//! same whatever the shipper. A [`Framed`] remembers which line each item
//! became, so per-item answers (`_bulk` statuses, HEC's event number,
//! OTLP's rejected count) come from the decoder's own refusals. Items the
//! framing itself cannot read are refused here, with a reason.
//!
//! These functions are pure: bytes in, lines out.

use base64::Engine as _;
use inferwatch_core::{format_timestamp, DEFAULT_STREAM};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde_json::{Map, Value};

/// One stream's lines.
#[derive(Debug, Default)]
pub struct Group {
    /// The stream.
    pub stream: String,
    /// JSON lines, each ending in `\n`.
    pub data: Vec<u8>,
    /// The item of each line (line `n` is `items[n - 1]`).
    pub items: Vec<usize>,
}

/// Where an item went.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// Line `line` (1-based) of group `group`.
    Line {
        /// Index into [`Framed::groups`].
        group: usize,
        /// 1-based line.
        line: u64,
    },
    /// Refused by the framing.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A request's items as lines per stream.
#[derive(Debug, Default)]
pub struct Framed {
    /// One per protocol item, in request order.
    pub items: Vec<Item>,
    /// One per stream named, in order of first use.
    pub groups: Vec<Group>,
}

impl Framed {
    /// Adds an item whose JSON line is `line` (no newline) in `stream`.
    pub fn push_line(&mut self, stream: &str, line: &[u8]) {
        let group = match self.groups.iter().position(|group| group.stream == stream) {
            Some(group) => group,
            None => {
                self.groups.push(Group {
                    stream: stream.to_string(),
                    ..Group::default()
                });
                self.groups.len() - 1
            }
        };
        let item = self.items.len();
        let entry = &mut self.groups[group];
        entry.data.extend_from_slice(line);
        entry.data.push(b'\n');
        entry.items.push(item);
        self.items.push(Item::Line {
            group,
            line: entry.items.len() as u64,
        });
    }

    /// Adds an item the framing refuses.
    pub fn push_refused(&mut self, reason: impl Into<String>) {
        self.items.push(Item::Refused {
            reason: reason.into(),
        });
    }
}

/// A stream name from an Elasticsearch index, a HEC index or a path:
/// the store takes letters, digits, `_` and `-`; anything else becomes `_`.
pub fn stream_name(index: &str) -> String {
    let name: String = index
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        DEFAULT_STREAM.to_string()
    } else {
        name
    }
}

/// What an Elasticsearch bulk item was, for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkAction {
    /// `index`, `create`, `update` or `delete`.
    pub action: String,
    /// The index named (or the path's).
    pub index: String,
    /// The `_id`, if given.
    pub id: Option<String>,
}

/// Frames an Elasticsearch `_bulk` body: action lines, each but `delete`
/// followed by a document line. `index` and `create` documents are stored
/// in the stream their index names (`default_index` when the action names
/// none); `update` and `delete` are refused per item, since inferwatch
/// never changes what it stored. A line that is not a JSON action is an
/// error for the whole request, as in Elasticsearch.
pub fn frame_bulk(
    default_index: Option<&str>,
    body: &[u8],
) -> Result<(Framed, Vec<BulkAction>), String> {
    let mut framed = Framed::default();
    let mut actions = Vec::new();
    let mut lines = body
        .split(|&byte| byte == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty());
    while let Some((number, line)) = lines.next() {
        let action: Value = serde_json::from_slice(line).map_err(|error| {
            format!(
                "line {}: malformed action/metadata line: {error}",
                number + 1
            )
        })?;
        let Some((name, meta)) = action
            .as_object()
            .filter(|object| object.len() == 1)
            .and_then(|object| object.iter().next())
        else {
            return Err(format!(
                "line {}: an action line is an object with one key (index, create, update or delete)",
                number + 1
            ));
        };
        let index = meta
            .get("_index")
            .and_then(Value::as_str)
            .or(default_index)
            .unwrap_or(DEFAULT_STREAM)
            .to_string();
        let id = meta.get("_id").and_then(|id| match id {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        });
        let bulk_action = BulkAction {
            action: name.clone(),
            index: index.clone(),
            id,
        };
        match name.as_str() {
            "index" | "create" => {
                let Some((_, document)) = lines.next() else {
                    return Err(format!(
                        "line {}: the {name} action has no document line",
                        number + 1
                    ));
                };
                framed.push_line(&stream_name(&index), document.trim_ascii());
            }
            "update" => {
                // Its document line belongs to it: skip it.
                lines.next();
                framed.push_refused("update is not supported: stored events are never changed");
            }
            "delete" => {
                framed.push_refused("delete is not supported: stored events are never changed");
            }
            other => {
                return Err(format!(
                    "line {}: unknown action [{other}]: use index, create, update or delete",
                    number + 1
                ))
            }
        }
        actions.push(bulk_action);
    }
    Ok((framed, actions))
}

/// The metadata HEC events carry or inherit from the query string.
#[derive(Debug, Clone, Default)]
pub struct HecDefaults {
    /// `index` (the stream).
    pub index: Option<String>,
    /// `host`.
    pub host: Option<String>,
    /// `source`.
    pub source: Option<String>,
    /// `sourcetype`.
    pub sourcetype: Option<String>,
}

/// How a HEC request went wrong as a whole (its HEC code and event number).
#[derive(Debug, Clone, PartialEq)]
pub struct HecFault {
    /// HEC's code: 5 no data, 6 invalid data format, 12 event field
    /// required, 13 event field blank.
    pub code: u32,
    /// HEC's text.
    pub text: &'static str,
    /// The 0-based event the fault is at.
    pub event: usize,
}

/// Frames a HEC `/services/collector/event` body: JSON objects one after
/// another (no array, whitespace between them optional). Each object's
/// `event` is the record (an object, or a string holding one, or plain
/// text kept as `message`); `time` (epoch seconds) becomes its timestamp
/// unless it has one, and `now` when there is neither, as in Splunk;
/// `host`, `source`, `sourcetype` and `fields` are kept as attributes;
/// `index` names the stream. The first event that cannot be framed is
/// returned as a fault; the events around it are framed all the same.
pub fn frame_hec_events(
    body: &[u8],
    defaults: &HecDefaults,
    now: i64,
) -> (Framed, Option<HecFault>) {
    let mut framed = Framed::default();
    let mut fault = None;
    let note = |fault: &mut Option<HecFault>, code, text, event| {
        if fault.is_none() {
            *fault = Some(HecFault { code, text, event });
        }
    };
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    loop {
        let event_number = framed.items.len();
        match stream.next() {
            None => break,
            Some(Err(error)) => {
                framed.push_refused(format!("invalid JSON: {error}"));
                note(&mut fault, 6, "Invalid data format", event_number);
                // The rest of the body cannot be delimited.
                break;
            }
            Some(Ok(Value::Object(envelope))) => match hec_record(&envelope, defaults, now) {
                Ok((index, line)) => framed.push_line(&stream_name(&index), &line),
                Err((code, text)) => {
                    framed.push_refused(text);
                    note(&mut fault, code, text, event_number);
                }
            },
            Some(Ok(_)) => {
                framed.push_refused("an event must be a JSON object");
                note(&mut fault, 6, "Invalid data format", event_number);
            }
        }
    }
    if framed.items.is_empty() {
        fault = Some(HecFault {
            code: 5,
            text: "No data",
            event: 0,
        });
    }
    (framed, fault)
}

/// Frames a HEC `/services/collector/raw` body: each non-empty line is an
/// event (a JSON object as is, anything else as `message`), stamped `now`
/// unless it carries a time; metadata comes from the query string.
pub fn frame_hec_raw(body: &[u8], defaults: &HecDefaults, now: i64) -> (Framed, Option<HecFault>) {
    let mut framed = Framed::default();
    let stream = stream_name(defaults.index.as_deref().unwrap_or(DEFAULT_STREAM));
    for line in body.split(|&byte| byte == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let mut record = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(object)) => object,
            _ => {
                let mut object = Map::new();
                object.insert(
                    "message".into(),
                    Value::String(String::from_utf8_lossy(line).into_owned()),
                );
                object
            }
        };
        add_hec_metadata(&mut record, &Map::new(), defaults, now);
        match serde_json::to_vec(&record) {
            Ok(line) => framed.push_line(&stream, &line),
            Err(error) => framed.push_refused(error.to_string()),
        }
    }
    let fault = framed.items.is_empty().then_some(HecFault {
        code: 5,
        text: "No data",
        event: 0,
    });
    (framed, fault)
}

fn hec_record(
    envelope: &Map<String, Value>,
    defaults: &HecDefaults,
    now: i64,
) -> Result<(String, Vec<u8>), (u32, &'static str)> {
    let mut record = match envelope.get("event") {
        None => return Err((12, "Event field is required")),
        Some(Value::Null) => return Err((13, "Event field cannot be blank")),
        Some(Value::String(text)) if text.trim().is_empty() => {
            return Err((13, "Event field cannot be blank"))
        }
        Some(Value::Object(object)) => object.clone(),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            _ => {
                let mut object = Map::new();
                object.insert("message".into(), Value::String(text.clone()));
                object
            }
        },
        Some(other) => {
            let mut object = Map::new();
            object.insert("message".into(), other.clone());
            object
        }
    };
    add_hec_metadata(&mut record, envelope, defaults, now);
    let index = envelope
        .get("index")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| defaults.index.clone())
        .unwrap_or_else(|| DEFAULT_STREAM.to_string());
    serde_json::to_vec(&record)
        .map(|line| (index, line))
        .map_err(|_| (6, "Invalid data format"))
}

/// Event time and metadata onto a HEC record, never over its own keys.
fn add_hec_metadata(
    record: &mut Map<String, Value>,
    envelope: &Map<String, Value>,
    defaults: &HecDefaults,
    now: i64,
) {
    let has_time = ["timestamp", "@timestamp", "time", "ts"]
        .iter()
        .any(|key| record.contains_key(*key));
    if !has_time {
        let time = envelope
            .get("time")
            .and_then(|time| match time {
                Value::Number(number) => number.as_f64(),
                Value::String(text) => text.parse::<f64>().ok(),
                _ => None,
            })
            .map(|seconds| (seconds * 1e9) as i64)
            .unwrap_or(now);
        record.insert("timestamp".into(), Value::String(format_timestamp(time)));
    }
    for (key, default) in [
        ("host", &defaults.host),
        ("source", &defaults.source),
        ("sourcetype", &defaults.sourcetype),
    ] {
        let value = envelope
            .get(key)
            .cloned()
            .or_else(|| default.clone().map(Value::String));
        if let Some(value) = value {
            record.entry(key).or_insert(value);
        }
    }
    if let Some(Value::Object(fields)) = envelope.get("fields") {
        for (key, value) in fields {
            record.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
}

/// Frames an OTLP logs request: one line per log record, in the
/// `inference` stream. The record's attributes (over its scope's and
/// resource's) become the keys the mapping reads, so the OTel GenAI names
/// (`gen_ai.request.model`, `gen_ai.usage.input_tokens`…) land in their
/// columns; a structured body is merged in, a text body that holds a JSON
/// object too, other text is kept as `body`. The time is `timeUnixNano`,
/// else `observedTimeUnixNano`, else `now`.
pub fn frame_otlp(request: &ExportLogsServiceRequest, now: i64) -> Framed {
    let mut framed = Framed::default();
    for resource_logs in &request.resource_logs {
        let mut base = Map::new();
        if let Some(resource) = &resource_logs.resource {
            add_attributes(&mut base, &resource.attributes);
        }
        for scope_logs in &resource_logs.scope_logs {
            let mut scoped = base.clone();
            if let Some(scope) = &scope_logs.scope {
                add_attributes(&mut scoped, &scope.attributes);
                if !scope.name.is_empty() {
                    scoped.insert("otel.scope.name".into(), Value::from(scope.name.clone()));
                }
            }
            for record in &scope_logs.log_records {
                let mut line = scoped.clone();
                match record.body.as_ref().map(any_value_json) {
                    Some(Value::Object(body)) => line.extend(body),
                    Some(Value::String(text)) => match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Object(body)) => line.extend(body),
                        _ => {
                            line.insert("body".into(), Value::String(text));
                        }
                    },
                    Some(Value::Null) | None => {}
                    Some(other) => {
                        line.insert("body".into(), other);
                    }
                }
                add_attributes(&mut line, &record.attributes);
                let time = [record.time_unix_nano, record.observed_time_unix_nano]
                    .into_iter()
                    .find(|&time| time != 0)
                    .and_then(|time| i64::try_from(time).ok())
                    .unwrap_or(now);
                if !["timestamp", "@timestamp", "time", "ts"]
                    .iter()
                    .any(|key| line.contains_key(*key))
                {
                    line.insert("timestamp".into(), Value::String(format_timestamp(time)));
                }
                if !record.severity_text.is_empty() {
                    line.entry("severity")
                        .or_insert_with(|| Value::from(record.severity_text.clone()));
                }
                if !record.event_name.is_empty() {
                    line.entry("event.name")
                        .or_insert_with(|| Value::from(record.event_name.clone()));
                }
                if !record.trace_id.is_empty() {
                    line.entry("trace_id")
                        .or_insert_with(|| Value::from(hex::encode(&record.trace_id)));
                }
                if !record.span_id.is_empty() {
                    line.entry("span_id")
                        .or_insert_with(|| Value::from(hex::encode(&record.span_id)));
                }
                match serde_json::to_vec(&Value::Object(line)) {
                    Ok(bytes) => framed.push_line(DEFAULT_STREAM, &bytes),
                    Err(error) => framed.push_refused(error.to_string()),
                }
            }
        }
    }
    framed
}

fn add_attributes(target: &mut Map<String, Value>, attributes: &[KeyValue]) {
    for attribute in attributes {
        let value = attribute
            .value
            .as_ref()
            .map(any_value_json)
            .unwrap_or(Value::Null);
        target.insert(attribute.key.clone(), value);
    }
}

/// An OTLP `AnyValue` as JSON: bytes as base64, key-value lists as objects.
fn any_value_json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(text)) => Value::String(text.clone()),
        Some(any_value::Value::BoolValue(flag)) => Value::Bool(*flag),
        Some(any_value::Value::IntValue(number)) => Value::from(*number),
        Some(any_value::Value::DoubleValue(number)) => Value::from(*number),
        Some(any_value::Value::ArrayValue(array)) => {
            Value::Array(array.values.iter().map(any_value_json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => {
            let mut object = Map::new();
            add_attributes(&mut object, &list.values);
            Value::Object(object)
        }
        Some(any_value::Value::BytesValue(bytes)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        // A dictionary index only means something with the profiles
        // signal's string table, which logs do not carry.
        Some(any_value::Value::StringValueStrindex(index)) => Value::from(*index),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_pairs_actions_with_documents_and_refuses_updates() {
        let body = b"{\"index\":{\"_index\":\"inference\",\"_id\":\"a\"}}\n{\"timestamp\":\"2026-01-01T00:00:00Z\"}\n{\"delete\":{\"_id\":\"b\"}}\n{\"create\":{\"_index\":\"gw.logs\"}}\n{\"x\":1}\n{\"update\":{\"_id\":\"c\"}}\n{\"doc\":{}}\n";
        let (framed, actions) = frame_bulk(None, body).unwrap();
        assert_eq!(actions.len(), 4);
        assert_eq!(actions[0].id.as_deref(), Some("a"));
        assert_eq!(framed.items[0], Item::Line { group: 0, line: 1 });
        assert!(matches!(framed.items[1], Item::Refused { .. }));
        assert_eq!(framed.items[2], Item::Line { group: 1, line: 1 });
        assert!(matches!(framed.items[3], Item::Refused { .. }));
        assert_eq!(framed.groups[1].stream, "gw_logs");
        assert!(frame_bulk(None, b"{oops\n").is_err());
    }

    #[test]
    fn hec_events_are_concatenated_objects_with_codes_for_bad_ones() {
        let body = br#"{"time":1767225600,"event":{"model_id":"m"},"host":"h"}{"event":"plain text"} {"fields":{}}{"event":""}"#;
        let (framed, fault) = frame_hec_events(body, &HecDefaults::default(), 0);
        assert_eq!(framed.items.len(), 4);
        let fault = fault.unwrap();
        assert_eq!((fault.code, fault.event), (12, 2));
        let lines = String::from_utf8(framed.groups[0].data.clone()).unwrap();
        assert!(
            lines.contains("\"timestamp\":\"2026-01-01T00:00:00Z\""),
            "{lines}"
        );
        assert!(lines.contains("\"host\":\"h\""), "{lines}");
        assert!(lines.contains("\"message\":\"plain text\""), "{lines}");
        let (_, fault) = frame_hec_events(b"  ", &HecDefaults::default(), 0);
        assert_eq!(fault.unwrap().code, 5);
    }

    #[test]
    fn otlp_records_become_lines_with_their_attributes() {
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"chat"}}]},
          "scopeLogs":[{"logRecords":[{"timeUnixNano":"1767225600000000000","severityText":"INFO",
          "body":{"stringValue":"done"},"traceId":"5b8efff798038103d269b633813fc60c",
          "attributes":[{"key":"gen_ai.request.model","value":{"stringValue":"gpt"}},
                        {"key":"gen_ai.usage.input_tokens","value":{"intValue":"12"}}]}]}]}]}"#;
        let request: ExportLogsServiceRequest = serde_json::from_str(json).unwrap();
        let framed = frame_otlp(&request, 0);
        let line: Value =
            serde_json::from_slice(framed.groups[0].data.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(line["gen_ai.request.model"], "gpt");
        assert_eq!(line["gen_ai.usage.input_tokens"], 12);
        assert_eq!(line["service.name"], "chat");
        assert_eq!(line["body"], "done");
        assert_eq!(line["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(line["trace_id"], "5b8efff798038103d269b633813fc60c");
    }
}
