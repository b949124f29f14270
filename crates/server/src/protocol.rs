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
use serde::de::IgnoredAny;
use sonic_rs::LazyValue;
use std::borrow::Cow;
use std::sync::Arc;

/// One stream's lines.
#[derive(Debug, Default, Clone)]
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
    /// Bytes reserved for the first stream's lines.
    first_group_capacity: usize,
}

impl Framed {
    /// Framing of a body of `body_bytes`: the first stream's lines are
    /// given room for all of it, so they are not copied as they grow.
    pub fn with_capacity(body_bytes: usize) -> Framed {
        Framed {
            first_group_capacity: body_bytes,
            ..Framed::default()
        }
    }

    /// Adds an item whose JSON line is `line` (no newline) in `stream`.
    pub fn push_line(&mut self, stream: &str, line: &[u8]) {
        let last = self.groups.len().wrapping_sub(1);
        let group = match self.groups.get(last) {
            Some(group) if group.stream == stream => last,
            _ => match self.groups.iter().position(|group| group.stream == stream) {
                Some(group) => group,
                None => {
                    let capacity = if self.groups.is_empty() {
                        self.first_group_capacity
                    } else {
                        0
                    };
                    self.groups.push(Group {
                        stream: stream.to_string(),
                        data: Vec::with_capacity(capacity),
                        items: Vec::new(),
                    });
                    self.groups.len() - 1
                }
            },
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
pub fn stream_name(index: &str) -> Cow<'_, str> {
    if !index.is_empty()
        && index
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    {
        return Cow::Borrowed(index);
    }
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
        Cow::Borrowed(DEFAULT_STREAM)
    } else {
        Cow::Owned(name)
    }
}

/// What an Elasticsearch bulk item was, for its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkAction {
    /// `index`, `create`, `update` or `delete`.
    pub action: BulkVerb,
    /// The index named (or the path's); shared by the items of an action
    /// line repeated verbatim, as shippers send them.
    pub index: Arc<str>,
    /// The `_id`, if given.
    pub id: Option<String>,
}

/// A `_bulk` action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkVerb {
    /// `index`.
    Index,
    /// `create`.
    Create,
    /// `update` (refused: stored events are never changed).
    Update,
    /// `delete` (refused).
    Delete,
}

impl BulkVerb {
    /// The action's name in a `_bulk` body and answer.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkVerb::Index => "index",
            BulkVerb::Create => "create",
            BulkVerb::Update => "update",
            BulkVerb::Delete => "delete",
        }
    }
}

/// A JSON object written member by member into one line. A key already
/// written is skipped, so the first writer of a key wins. Callers write in
/// order of precedence (a record's own keys before the metadata around
/// it), which replaces building a `serde_json::Map` per event and
/// serialising it again: the members of the record are copied as the
/// client wrote them, never parsed into values.
struct ObjectLine<'a> {
    line: Vec<u8>,
    keys: Vec<Cow<'a, str>>,
}

impl<'a> ObjectLine<'a> {
    fn new() -> Self {
        ObjectLine {
            line: b"{".to_vec(),
            keys: Vec::new(),
        }
    }

    /// An empty object written into `line`, with `keys` for its keys (both
    /// cleared): buffers handed from one line to the next.
    fn reusing(mut line: Vec<u8>, mut keys: Vec<Cow<'a, str>>) -> Self {
        line.clear();
        line.push(b'{');
        keys.clear();
        ObjectLine { line, keys }
    }

    /// Starts from an object's text, kept as it is; its keys are read (and
    /// the object checked) so that later members cannot repeat them.
    fn from_object(object: &'a [u8]) -> Result<Self, String> {
        let object = object.trim_ascii();
        let mut keys = Vec::new();
        for member in sonic_rs::to_object_iter(object) {
            let (key, _) = member.map_err(|error| error.to_string())?;
            keys.push(key);
        }
        // The iterator stopped at the closing brace; the text is the object.
        let body = object
            .strip_suffix(b"}")
            .ok_or_else(|| "an object must end with '}'".to_string())?;
        Ok(ObjectLine {
            line: body.to_vec(),
            keys,
        })
    }

    /// As [`ObjectLine::from_object`], for text that may hold more than one
    /// value (a raw line, a string): it must be exactly one object.
    fn from_object_text(text: &'a [u8]) -> Result<Self, String> {
        inferwatch_ingest::check_json_depth(text)?;
        serde_json::from_slice::<IgnoredAny>(text).map_err(|error| error.to_string())?;
        Self::from_object(text)
    }

    fn has(&self, key: &str) -> bool {
        self.keys.iter().any(|known| known == key)
    }

    /// Writes `"key":` unless the key is there already.
    fn open_member(&mut self, key: Cow<'a, str>) -> bool {
        if self.has(&key) {
            return false;
        }
        if !self.keys.is_empty() {
            self.line.push(b',');
        }
        write_json_string(&mut self.line, &key);
        self.line.push(b':');
        self.keys.push(key);
        true
    }

    /// A member whose value is JSON text already checked.
    fn push_raw(&mut self, key: impl Into<Cow<'a, str>>, value: &[u8]) {
        if self.open_member(key.into()) {
            self.line.extend_from_slice(value);
        }
    }

    /// A member whose value is a string.
    fn push_str(&mut self, key: impl Into<Cow<'a, str>>, value: &str) {
        if self.open_member(key.into()) {
            write_json_string(&mut self.line, value);
        }
    }

    /// The members of another object's text, below those written.
    fn push_members(&mut self, object: &'a [u8]) -> Result<(), String> {
        for member in sonic_rs::to_object_iter(object) {
            let (key, value) = member.map_err(|error| error.to_string())?;
            self.push_raw(key, value.as_raw_str().as_bytes());
        }
        Ok(())
    }

    /// A member of the record itself, as the client wrote it: a repeated
    /// key is kept, so the decoder sees what it would in the record's text.
    fn push_member(&mut self, key: Cow<'a, str>, value: &[u8]) {
        if !self.keys.is_empty() {
            self.line.push(b',');
        }
        match &key {
            // Borrowed from checked JSON, so it had no escape: written back
            // as it was, unless it holds a control character.
            Cow::Borrowed(text) if text.bytes().all(|byte| byte >= 0x20) => {
                self.line.push(b'"');
                self.line.extend_from_slice(text.as_bytes());
                self.line.push(b'"');
            }
            _ => write_json_string(&mut self.line, &key),
        }
        self.line.push(b':');
        self.line.extend_from_slice(value);
        self.keys.push(key);
    }

    fn finish(self) -> Vec<u8> {
        self.finish_parts().0
    }

    /// The line, and the key buffer for reuse.
    fn finish_parts(mut self) -> (Vec<u8>, Vec<Cow<'a, str>>) {
        self.line.push(b'}');
        // Everything written is checked JSON, where a line break can only
        // be whitespace between tokens (one in a string is escaped); a
        // pretty-printed record must still be one line.
        if memchr::memchr2(b'\n', b'\r', &self.line).is_some() {
            for byte in &mut self.line {
                if matches!(byte, b'\n' | b'\r') {
                    *byte = b' ';
                }
            }
        }
        (self.line, self.keys)
    }
}

fn write_json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// `part` as the slice of `whole` it is, with `whole`'s lifetime: sonic's
/// lazy values point into their input but lend it only as long as
/// themselves. `None` if `part` lies elsewhere.
fn within<'a>(whole: &'a [u8], part: &[u8]) -> Option<&'a [u8]> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    whole.get(start..start.checked_add(part.len())?)
}

/// Whether JSON text is an object (by its first character).
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// A JSON string's text, unescaped; `None` if `json` is not a string.
fn json_string(json: &[u8]) -> Option<Cow<'_, str>> {
    if json.trim_ascii_start().first() != Some(&b'"') {
        return None;
    }
    serde_json::from_slice::<Cow<'_, str>>(json).ok()
}

/// Non-empty lines of a body, found with memchr (a byte-by-byte split
/// was most of the framing's time), with their 1-based numbers.
fn body_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', body)
        .chain(std::iter::once(body.len()))
        .enumerate()
        .filter_map(move |(index, end)| {
            let line = body.get(start..end).unwrap_or_default();
            start = end + 1;
            let line = line.trim_ascii();
            (!line.is_empty()).then_some((index + 1, line))
        })
}

/// An action line, `{"index": {"_index": …, "_id": …}}`, read without
/// building a `serde_json::Value`.
struct ActionLine<'a> {
    action: Cow<'a, str>,
    meta: ActionMeta<'a>,
    /// Keys in the line (exactly one is an action line).
    keys: usize,
}

#[derive(Default, serde::Deserialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_index", borrow, default)]
    index: Option<Cow<'a, str>>,
    #[serde(rename = "_id", default)]
    id: Option<DocumentId>,
}

/// Elasticsearch takes a string or a number as `_id`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DocumentId {
    Text(String),
    Number(serde_json::Number),
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for ActionLine<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = ActionLine<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("an action object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Self::Value, M::Error> {
                let mut line = ActionLine {
                    action: Cow::Borrowed(""),
                    meta: ActionMeta::default(),
                    keys: 0,
                };
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    line.keys += 1;
                    if line.keys == 1 {
                        line.action = key;
                        line.meta = map.next_value::<Option<ActionMeta>>()?.unwrap_or_default();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(line)
            }
        }
        deserializer.deserialize_map(Members)
    }
}

/// Frames an Elasticsearch `_bulk` body: action lines, each but `delete`
/// followed by a document line. `index` and `create` documents are stored
/// in the stream their index names (`default_index` when the action names
/// none), their text as the client sent it; `update` and `delete` are
/// refused per item, since inferwatch never changes what it stored. A line
/// that is not a JSON action is an error for the whole request, as in
/// Elasticsearch.
pub fn frame_bulk(
    default_index: Option<&str>,
    body: &[u8],
) -> Result<(Framed, Vec<BulkAction>), String> {
    let mut framed = Framed::with_capacity(body.len());
    let mut actions = Vec::new();
    let mut lines = body_lines(body);
    // Shippers repeat one action line (`{"index":{}}`, `{"create":{"_index":…}}`)
    // before every document: the previous line's reading is reused when the
    // bytes are the same.
    let mut previous: Option<(&[u8], BulkAction, Arc<str>)> = None;
    while let Some((number, line)) = lines.next() {
        let (action, stream) = match &previous {
            Some((text, action, stream)) if *text == line => (action.clone(), stream.clone()),
            _ => {
                let (action, stream) = read_action_line(number, line, default_index)?;
                previous = Some((line, action.clone(), stream.clone()));
                (action, stream)
            }
        };
        match action.action {
            BulkVerb::Index | BulkVerb::Create => {
                let Some((_, document)) = lines.next() else {
                    return Err(format!(
                        "line {number}: the {} action has no document line",
                        action.action.as_str()
                    ));
                };
                framed.push_line(&stream, document);
            }
            BulkVerb::Update => {
                // Its document line belongs to it: skip it.
                lines.next();
                framed.push_refused("update is not supported: stored events are never changed");
            }
            BulkVerb::Delete => {
                framed.push_refused("delete is not supported: stored events are never changed");
            }
        }
        actions.push(action);
    }
    Ok((framed, actions))
}

/// Reads one action line into its action and the stream it writes to.
fn read_action_line(
    number: usize,
    line: &[u8],
    default_index: Option<&str>,
) -> Result<(BulkAction, Arc<str>), String> {
    let read: ActionLine = serde_json::from_slice(line)
        .map_err(|error| format!("line {number}: malformed action/metadata line: {error}"))?;
    if read.keys != 1 {
        return Err(format!(
            "line {number}: an action line is an object with one key (index, create, update or delete)"
        ));
    }
    let action = match read.action.as_ref() {
        "index" => BulkVerb::Index,
        "create" => BulkVerb::Create,
        "update" => BulkVerb::Update,
        "delete" => BulkVerb::Delete,
        other => {
            return Err(format!(
                "line {number}: unknown action [{other}]: use index, create, update or delete"
            ))
        }
    };
    let index: Arc<str> = Arc::from(
        read.meta
            .index
            .as_deref()
            .or(default_index)
            .unwrap_or(DEFAULT_STREAM),
    );
    let stream: Arc<str> = match stream_name(&index) {
        Cow::Borrowed(_) => index.clone(),
        Cow::Owned(name) => Arc::from(name),
    };
    let id = read.meta.id.map(|id| match id {
        DocumentId::Text(text) => text,
        DocumentId::Number(number) => number.to_string(),
    });
    Ok((BulkAction { action, index, id }, stream))
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
    let mut framed = Framed::with_capacity(body.len());
    let mut fault = None;
    let mut scratch = LineScratch::default();
    // serde_json's stream finds where each object ends, at any depth and
    // layout (sonic-rs cannot say where it stopped), and stops at the first
    // that is not JSON; each object is then read once by sonic-rs.
    let mut stream = serde_json::Deserializer::from_slice(body).into_iter::<IgnoredAny>();
    let mut start = 0;
    loop {
        let event_number = framed.items.len();
        let record = match stream.next() {
            None => break,
            Some(Err(error)) => {
                framed.push_refused(format!("invalid JSON: {error}"));
                note_fault(&mut fault, 6, "Invalid data format", event_number);
                // The rest of the body cannot be delimited.
                break;
            }
            Some(Ok(_)) => {
                let end = stream.byte_offset();
                let envelope = body[start..end].trim_ascii();
                start = end;
                match read_hec_envelope(envelope, &mut scratch.members) {
                    Ok(Some(read)) => {
                        push_hec_object(&mut framed, &read, &mut scratch, defaults, now);
                        continue;
                    }
                    // Not an object event: read the general way.
                    Ok(None) => hec_record(envelope, defaults, now),
                    Err(reason) => {
                        framed.push_refused(reason);
                        note_fault(&mut fault, 6, "Invalid data format", event_number);
                        continue;
                    }
                }
            }
        };
        match record {
            Ok((index, line)) => framed.push_line(&stream_name(&index), &line),
            Err((code, text)) => {
                framed.push_refused(text);
                note_fault(&mut fault, code, text, event_number);
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

/// Keeps the first fault of a request.
fn note_fault(fault: &mut Option<HecFault>, code: u32, text: &'static str, event: usize) {
    if fault.is_none() {
        *fault = Some(HecFault { code, text, event });
    }
}

/// Buffers reused from one HEC event to the next.
#[derive(Default)]
struct LineScratch<'a> {
    members: Vec<(Cow<'a, str>, LazyValue<'a>)>,
    keys: Vec<Cow<'a, str>>,
    line: Vec<u8>,
}

/// Reads one HEC envelope whose event is an object in a single pass of
/// sonic-rs: the envelope's members and the event's are validated and kept
/// as raw text. `Ok(None)`: one JSON value but not such an envelope (a text
/// event, a missing event, an escaped string in the envelope), for the
/// general reading. `Err`: why it is refused (not one JSON object, not
/// UTF-8, too deep).
fn read_hec_envelope<'a>(
    line: &'a [u8],
    members: &mut Vec<(Cow<'a, str>, LazyValue<'a>)>,
) -> Result<Option<HecEnvelope<'a>>, String> {
    use serde::de::DeserializeSeed;
    if !is_object(line) {
        return Err("an event must be a JSON object".to_string());
    }
    // Lazy values are skipped recursively by sonic-rs: bound the depth first.
    inferwatch_ingest::check_json_depth(line)?;
    // sonic-rs trusts a slice to be UTF-8 when it lends lazy values
    // (invalid bytes panic in it): hand it a checked `str`.
    let line = std::str::from_utf8(line)
        .map_err(|error| format!("invalid UTF-8 at byte {}", error.valid_up_to() + 1))?;
    members.clear();
    let mut deserializer = sonic_rs::Deserializer::from_str(line);
    let envelope = EnvelopeSeed { members }
        .deserialize(&mut deserializer)
        .and_then(|envelope| deserializer.end().map(|()| envelope))
        .map_err(|error| format!("invalid JSON: {error}"))?;
    Ok(envelope)
}

/// Deserializes a HEC envelope, collecting an object event's members.
struct EnvelopeSeed<'v, 'a> {
    members: &'v mut Vec<(Cow<'a, str>, LazyValue<'a>)>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EnvelopeSeed<'_, 'de> {
    type Value = Option<HecEnvelope<'de>>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EnvelopeSeed<'_, 'de> {
    type Value = Option<HecEnvelope<'de>>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a HEC envelope")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut envelope = HecEnvelope::default();
        // Whether every member is one the one-pass reading can keep.
        let mut fits = true;
        while let Some(JsonKey(key)) = map.next_key()? {
            if key == "event" {
                // The last of a repeated key wins: start over.
                self.members.clear();
                let object = map.next_value_seed(EventMembers {
                    members: &mut *self.members,
                })?;
                fits &= object;
                envelope.event = Some(b"{}");
                continue;
            }
            let value = map.next_value::<LazyValue<'de>>()?;
            let raw = match value.as_raw_cow() {
                Cow::Borrowed(raw) => raw.as_bytes(),
                Cow::Owned(_) => {
                    fits = false;
                    continue;
                }
            };
            match key.as_ref() {
                "time" => envelope.time = Some(raw),
                "host" => envelope.host = Some(raw),
                "source" => envelope.source = Some(raw),
                "sourcetype" => envelope.sourcetype = Some(raw),
                "index" => envelope.index = Some(raw),
                "fields" => envelope.fields = Some(raw),
                _ => {}
            }
        }
        Ok((fits && envelope.event.is_some()).then_some(envelope))
    }
}

/// A JSON key, borrowed from the input unless it has escapes (serde's own
/// `Cow<str>` always allocates).
struct JsonKey<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonKey<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = JsonKey<'de>;
            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(JsonKey(Cow::Borrowed(key)))
            }
            fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
                Ok(JsonKey(Cow::Owned(key.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Reads an event: its members if it is an object (`true`); any other
/// value is consumed and answers `false`.
struct EventMembers<'v, 'a> {
    members: &'v mut Vec<(Cow<'a, str>, LazyValue<'a>)>,
}

impl<'de> serde::de::DeserializeSeed<'de> for EventMembers<'_, 'de> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EventMembers<'_, 'de> {
    type Value = bool;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("an event")
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<bool, M::Error> {
        while let Some(JsonKey(key)) = map.next_key()? {
            let value = map.next_value::<LazyValue<'de>>()?;
            self.members.push((key, value));
        }
        Ok(true)
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<bool, S::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_none<E>(self) -> Result<bool, E> {
        Ok(false)
    }
}

/// Frames a HEC envelope whose event is an object read by
/// [`read_hec_envelope`], in `scratch`'s buffers.
fn push_hec_object<'a>(
    framed: &mut Framed,
    envelope: &HecEnvelope<'a>,
    scratch: &mut LineScratch<'a>,
    defaults: &HecDefaults,
    now: i64,
) {
    let mut record = ObjectLine::reusing(
        std::mem::take(&mut scratch.line),
        std::mem::take(&mut scratch.keys),
    );
    for (key, value) in scratch.members.drain(..) {
        record.push_member(key, value.as_raw_str().as_bytes());
    }
    let record = hec_metadata(record, envelope, defaults, now);
    let (line, keys) = record.finish_parts();
    framed.push_line(&stream_name(&hec_index(envelope, defaults)), &line);
    scratch.line = line;
    scratch.keys = keys;
}

/// Frames a HEC `/services/collector/raw` body: each non-empty line is an
/// event (a JSON object as is, anything else as `message`), stamped `now`
/// unless it carries a time; metadata comes from the query string.
pub fn frame_hec_raw(body: &[u8], defaults: &HecDefaults, now: i64) -> (Framed, Option<HecFault>) {
    let mut framed = Framed::with_capacity(body.len());
    let stream = stream_name(defaults.index.as_deref().unwrap_or(DEFAULT_STREAM));
    let no_envelope = HecEnvelope::default();
    for (_, line) in body_lines(body) {
        let record = match is_object(line).then(|| ObjectLine::from_object_text(line)) {
            Some(Ok(record)) => record,
            _ => {
                let mut record = ObjectLine::new();
                record.push_str("message", &String::from_utf8_lossy(line));
                record
            }
        };
        framed.push_line(
            &stream,
            &hec_metadata(record, &no_envelope, defaults, now).finish(),
        );
    }
    let fault = framed.items.is_empty().then_some(HecFault {
        code: 5,
        text: "No data",
        event: 0,
    });
    (framed, fault)
}

/// A HEC envelope's members as JSON text (the last of a repeated key wins).
#[derive(Default)]
struct HecEnvelope<'a> {
    event: Option<&'a [u8]>,
    time: Option<&'a [u8]>,
    host: Option<&'a [u8]>,
    source: Option<&'a [u8]>,
    sourcetype: Option<&'a [u8]>,
    index: Option<&'a [u8]>,
    fields: Option<&'a [u8]>,
}

impl<'a> HecEnvelope<'a> {
    fn read(object: &'a [u8]) -> Result<Self, String> {
        let mut envelope = HecEnvelope::default();
        for member in sonic_rs::to_object_iter(object) {
            let (key, value) = member.map_err(|error| error.to_string())?;
            let value = within(object, value.as_raw_str().as_bytes());
            match key.as_ref() {
                "event" => envelope.event = value,
                "time" => envelope.time = value,
                "host" => envelope.host = value,
                "source" => envelope.source = value,
                "sourcetype" => envelope.sourcetype = value,
                "index" => envelope.index = value,
                "fields" => envelope.fields = value,
                _ => {}
            }
        }
        Ok(envelope)
    }
}

fn hec_record(
    envelope: &[u8],
    defaults: &HecDefaults,
    now: i64,
) -> Result<(String, Vec<u8>), (u32, &'static str)> {
    let envelope = HecEnvelope::read(envelope).map_err(|_| (6, "Invalid data format"))?;
    let event = envelope
        .event
        .ok_or((12, "Event field is required"))?
        .trim_ascii();
    // A string event may hold a JSON object; its text must outlive the record.
    let text = json_string(event);
    let record = if event == b"null" {
        return Err((13, "Event field cannot be blank"));
    } else if is_object(event) {
        ObjectLine::from_object(event).map_err(|_| (6, "Invalid data format"))?
    } else if let Some(text) = &text {
        if text.trim().is_empty() {
            return Err((13, "Event field cannot be blank"));
        }
        match is_object(text.as_bytes()).then(|| ObjectLine::from_object_text(text.as_bytes())) {
            Some(Ok(record)) => record,
            _ => {
                let mut record = ObjectLine::new();
                record.push_str("message", text);
                record
            }
        }
    } else {
        let mut record = ObjectLine::new();
        record.push_raw("message", event);
        record
    };
    let index = hec_index(&envelope, defaults).into_owned();
    Ok((
        index,
        hec_metadata(record, &envelope, defaults, now).finish(),
    ))
}

/// The index an envelope names, else the request's, else the default.
fn hec_index<'a>(envelope: &HecEnvelope<'a>, defaults: &'a HecDefaults) -> Cow<'a, str> {
    envelope
        .index
        .and_then(json_string)
        .or_else(|| defaults.index.as_deref().map(Cow::Borrowed))
        .unwrap_or(Cow::Borrowed(DEFAULT_STREAM))
}

/// Event time and metadata onto a HEC record, never over its own keys.
fn hec_metadata<'a>(
    mut record: ObjectLine<'a>,
    envelope: &HecEnvelope<'a>,
    defaults: &HecDefaults,
    now: i64,
) -> ObjectLine<'a> {
    if !TIME_KEYS.iter().any(|key| record.has(key)) {
        let time = envelope
            .time
            .and_then(|time| match json_string(time) {
                Some(text) => text.parse::<f64>().ok(),
                None => std::str::from_utf8(time).ok()?.parse::<f64>().ok(),
            })
            .map(|seconds| (seconds * 1e9) as i64)
            .unwrap_or(now);
        record.push_str("timestamp", &format_timestamp(time));
    }
    for (key, given, default) in [
        ("host", envelope.host, &defaults.host),
        ("source", envelope.source, &defaults.source),
        ("sourcetype", envelope.sourcetype, &defaults.sourcetype),
    ] {
        match (given, default) {
            (Some(value), _) => record.push_raw(key, value),
            (None, Some(value)) => record.push_str(key, value),
            (None, None) => {}
        }
    }
    if let Some(fields) = envelope.fields.filter(|fields| is_object(fields)) {
        // Checked as JSON with the envelope: this cannot fail.
        let _ = record.push_members(fields);
    }
    record
}

/// The keys a record's own time may have; metadata adds none then.
const TIME_KEYS: [&str; 4] = ["timestamp", "@timestamp", "time", "ts"];

/// Frames an OTLP logs request: one line per log record, in the
/// `inference` stream. The record's attributes (over its body's, its
/// scope's and its resource's) become the keys the mapping reads, so the
/// OTel GenAI names (`gen_ai.request.model`, `gen_ai.usage.input_tokens`…)
/// land in their columns; a structured body is merged in, a text body that
/// holds a JSON object too, other text is kept as `body`. The time is
/// `timeUnixNano`, else `observedTimeUnixNano`, else `now`. Each line is
/// written straight from the protobuf, with no map per record.
pub fn frame_otlp(request: &ExportLogsServiceRequest, now: i64) -> Framed {
    let mut framed = Framed::default();
    for resource_logs in &request.resource_logs {
        let resource_attributes = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |resource| &resource.attributes[..]);
        for scope_logs in &resource_logs.scope_logs {
            let scope = scope_logs.scope.as_ref();
            for record in &scope_logs.log_records {
                let mut line = ObjectLine::new();
                // Highest precedence first: a later key never overwrites.
                push_attributes(&mut line, &record.attributes);
                let body = record.body.as_ref();
                match body.and_then(|body| body.value.as_ref()) {
                    Some(any_value::Value::KvlistValue(list)) => {
                        push_attributes(&mut line, &list.values)
                    }
                    Some(any_value::Value::StringValue(text)) => {
                        // Checked first: its members are merged only if all are.
                        let merged = is_object(text.as_bytes())
                            && inferwatch_ingest::check_json_depth(text.as_bytes()).is_ok()
                            && serde_json::from_str::<IgnoredAny>(text).is_ok()
                            && line.push_members(text.trim().as_bytes()).is_ok();
                        if !merged {
                            line.push_str("body", text);
                        }
                    }
                    Some(_) => {
                        if let Some(body) = body.filter(|_| line.open_member(Cow::Borrowed("body")))
                        {
                            write_any_value(&mut line.line, body);
                        }
                    }
                    None => {}
                }
                if let Some(scope) = scope {
                    if !scope.name.is_empty() {
                        line.push_str("otel.scope.name", &scope.name);
                    }
                    push_attributes(&mut line, &scope.attributes);
                }
                push_attributes(&mut line, resource_attributes);
                if !TIME_KEYS.iter().any(|key| line.has(key)) {
                    let time = [record.time_unix_nano, record.observed_time_unix_nano]
                        .into_iter()
                        .find(|&time| time != 0)
                        .and_then(|time| i64::try_from(time).ok())
                        .unwrap_or(now);
                    line.push_str("timestamp", &format_timestamp(time));
                }
                if !record.severity_text.is_empty() {
                    line.push_str("severity", &record.severity_text);
                }
                if !record.event_name.is_empty() {
                    line.push_str("event.name", &record.event_name);
                }
                if !record.trace_id.is_empty() {
                    line.push_str("trace_id", &hex::encode(&record.trace_id));
                }
                if !record.span_id.is_empty() {
                    line.push_str("span_id", &hex::encode(&record.span_id));
                }
                framed.push_line(DEFAULT_STREAM, &line.finish());
            }
        }
    }
    framed
}

/// Attributes as members; of a repeated key the last one wins, as in a map.
fn push_attributes<'a>(line: &mut ObjectLine<'a>, attributes: &'a [KeyValue]) {
    for attribute in attributes.iter().rev() {
        if line.open_member(Cow::Borrowed(attribute.key.as_str())) {
            match &attribute.value {
                Some(value) => write_any_value(&mut line.line, value),
                None => line.line.extend_from_slice(b"null"),
            }
        }
    }
}

/// An OTLP `AnyValue` as JSON: bytes as base64, key-value lists as objects.
fn write_any_value(out: &mut Vec<u8>, value: &AnyValue) {
    match &value.value {
        None => out.extend_from_slice(b"null"),
        Some(any_value::Value::StringValue(text)) => write_json_string(out, text),
        Some(any_value::Value::BoolValue(flag)) => {
            out.extend_from_slice(if *flag { b"true" } else { b"false" })
        }
        Some(any_value::Value::IntValue(number)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*number).as_bytes())
        }
        // serde_json writes a non-finite double as null.
        Some(any_value::Value::DoubleValue(number)) => {
            let _ = serde_json::to_writer(&mut *out, number);
        }
        Some(any_value::Value::ArrayValue(array)) => {
            out.push(b'[');
            for (position, item) in array.values.iter().enumerate() {
                if position > 0 {
                    out.push(b',');
                }
                write_any_value(out, item);
            }
            out.push(b']');
        }
        Some(any_value::Value::KvlistValue(list)) => {
            let mut object = ObjectLine::new();
            push_attributes(&mut object, &list.values);
            out.extend_from_slice(&object.finish());
        }
        Some(any_value::Value::BytesValue(bytes)) => write_json_string(
            out,
            &base64::engine::general_purpose::STANDARD.encode(bytes),
        ),
        // A dictionary index only means something with the profiles
        // signal's string table, which logs do not carry.
        Some(any_value::Value::StringValueStrindex(index)) => {
            out.extend_from_slice(itoa::Buffer::new().format(*index).as_bytes())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Each framed line of the first group, parsed (every line must be JSON).
    fn lines(framed: &Framed) -> Vec<Value> {
        framed.groups[0]
            .data
            .split(|&byte| byte == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("a framed line is JSON"))
            .collect()
    }

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

    /// Items, and each group's stream and lines as JSON values.
    fn framing_of(framed: &Framed) -> (Vec<Item>, Vec<(String, Vec<Value>)>) {
        let groups = framed
            .groups
            .iter()
            .map(|group| {
                let lines = group
                    .data
                    .split(|&byte| byte == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        serde_json::from_slice(line).unwrap_or_else(|error| {
                            panic!("{error}: {}", String::from_utf8_lossy(line))
                        })
                    })
                    .collect();
                (group.stream.clone(), lines)
            })
            .collect();
        (framed.items.clone(), groups)
    }

    #[test]
    fn hec_events_read_in_one_pass_frame_as_the_general_reading_does() {
        let envelopes = [
            r#"{"time":1767225600.5,"event":{"model_id":"m","latency_ms":12.5,"probs":[0.1,0.9]},"host":"h","fields":{"region":"eu","host":"not this"}}"#,
            r#"{"event":{"ts":"2026-01-01T00:00:00Z","host":"own","a\u0062c":1,"n":{"deep":[1,{"x":null}]}},"time":5,"host":"envelope","sourcetype":"st"}"#,
            r#"{"event":{"a":1,"a":2},"event":{"b":3},"index":"gw.logs","index":"other"}"#,
            r#"{"event":"plain text","source":"s"}"#,
            r#"{"event":"{\"model_id\":\"in a string\"}"}"#,
            r#"{"event":42}"#,
            r#"{"event":[1,2]}"#,
            r#"{"event":null}"#,
            r#"{"event":{}}"#,
            r#"{"fields":{"x":1}}"#,
            r#"{ "event" : { "spaced" : true } , "index" : "inference" }"#,
            r#"{"event":{"a":1},"index":"inf\u0065rence"}"#,
            r#"[1,2]"#,
        ];
        type Layout = fn(&[&str]) -> String;
        let layouts: [Layout; 4] = [
            |events| events.join("\n"),
            |events| events.join("\r\n") + "\n",
            |events| events.concat(),
            |events| {
                events
                    .iter()
                    .map(|event| match serde_json::from_str::<Value>(event) {
                        Ok(value) => serde_json::to_string_pretty(&value).unwrap(),
                        Err(_) => event.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            },
        ];
        // The one-pass reading takes object events and leaves the rest; what
        // it takes, it frames as the general reading does.
        let defaults = HecDefaults::default();
        let mut taken = Vec::new();
        for envelope in envelopes {
            let mut members = Vec::new();
            let Ok(Some(read)) = read_hec_envelope(envelope.as_bytes(), &mut members) else {
                taken.push(false);
                continue;
            };
            taken.push(true);
            let mut scratch = LineScratch {
                members,
                ..LineScratch::default()
            };
            let mut framed = Framed::default();
            push_hec_object(&mut framed, &read, &mut scratch, &defaults, 7);
            let (index, line) = hec_record(envelope.as_bytes(), &defaults, 7).unwrap();
            assert_eq!(framed.groups[0].stream, stream_name(&index));
            let general: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(lines(&framed), [general], "{envelope}");
        }
        // An escaped string in the envelope is left too (sonic-rs lends no raw text for it).
        let expected = [
            true, true, true, false, false, false, false, false, true, false, true, false, false,
        ];
        assert_eq!(taken, expected);
        let mut members = Vec::new();
        assert!(read_hec_envelope(br#"{"event":{"a":1}}{"event":{}}"#, &mut members).is_err());
        let refusal = |body: &'static [u8]| {
            let mut members = Vec::new();
            read_hec_envelope(body, &mut members)
                .err()
                .unwrap_or_default()
        };
        assert!(refusal(b"{\"event\":{\"a\":\"\xff\"}}").contains("invalid UTF-8"));
        assert_eq!(refusal(b" [1]"), "an event must be a JSON object");
        assert!(refusal(b"{\"event\":{\"a\":1}").contains("invalid JSON"));
        let deep = format!("{{\"event\":{}1{}}}", "[".repeat(65), "]".repeat(65));
        let mut members = Vec::new();
        let refused = read_hec_envelope(deep.as_bytes(), &mut members).err();
        assert!(refused.is_some_and(|reason| reason.contains("nesting deeper")));
        // The layout of the body does not matter.
        let one_per_line = frame_hec_events(layouts[0](&envelopes).as_bytes(), &defaults, 7);
        for layout in &layouts[1..] {
            let body = layout(&envelopes);
            let (framed, fault) = frame_hec_events(body.as_bytes(), &defaults, 7);
            assert_eq!(framing_of(&framed), framing_of(&one_per_line.0), "{body}");
            assert_eq!(fault, one_per_line.1);
            assert_eq!(framed.items.len(), envelopes.len());
        }
        // One line per event, then one that is not JSON: the events before
        // it are framed, it and the rest of the body are refused as one.
        let body = format!("{}\n{{\"event\":{{\"a\":\n{}", envelopes[0], envelopes[1]);
        let (framed, fault) = frame_hec_events(body.as_bytes(), &defaults, 7);
        assert_eq!(framed.items.len(), 2);
        assert!(matches!(framed.items[1], Item::Refused { .. }));
        assert_eq!(fault.map(|fault| (fault.code, fault.event)), Some((6, 1)));
        let line = &lines(&framed)[0];
        assert_eq!(line["host"], "h");
        assert_eq!(line["region"], "eu");
        assert_eq!(line["timestamp"], "2026-01-01T00:00:00.500Z");
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

    #[test]
    fn bulk_ids_may_be_numbers_and_an_action_has_exactly_one_key() {
        let body = b"{\"index\":{\"_index\":\"in\\u0066erence\",\"_id\":42}}\n{\"a\":1}\n\n{\"create\":null}\n  {\"b\":2}  \n";
        let (framed, actions) = frame_bulk(Some("fallback"), body).unwrap();
        assert_eq!(actions[0].id.as_deref(), Some("42"));
        assert_eq!(&*actions[0].index, "inference");
        assert_eq!(&*actions[1].index, "fallback");
        assert_eq!(framed.groups[1].data, b"{\"b\":2}\n");
        let error = frame_bulk(None, b"{\"index\":{},\"create\":{}}\n{}\n").unwrap_err();
        assert!(
            error.contains("line 1") && error.contains("one key"),
            "{error}"
        );
        let error = frame_bulk(None, b"{\"index\":{}}\n{}\n{\"index\":{}} trailing\n").unwrap_err();
        assert!(error.starts_with("line 3: malformed"), "{error}");
        let error = frame_bulk(None, b"{\"upsert\":{}}\n").unwrap_err();
        assert!(error.contains("unknown action [upsert]"), "{error}");
    }

    #[test]
    fn repeated_action_lines_read_as_if_each_were_read_anew() {
        // The same actions, once with every action line repeated verbatim
        // (reused readings) and once with each spelled differently.
        let lines = [
            ("{\"index\":{}}", "{ \"index\":{}}", Some("{\"a\":1}")),
            ("{\"index\":{}}", "{\"index\": {}}", Some("{\"a\":2}")),
            (
                "{\"create\":{\"_index\":\"o.x\"}}",
                "{\"create\":{\"_index\":\"o.x\"} }",
                Some("{\"b\":1}"),
            ),
            (
                "{\"create\":{\"_index\":\"o.x\"}}",
                "{\"create\" :{\"_index\":\"o.x\"}}",
                Some("{\"b\":2}"),
            ),
            (
                "{\"index\":{\"_id\":7}}",
                "{\"index\":{\"_id\":7} }",
                Some("{\"c\":1}"),
            ),
            (
                "{\"index\":{\"_id\":7}}",
                "{\"index\": {\"_id\":7}}",
                Some("{\"c\":2}"),
            ),
            ("{\"delete\":{}}", "{\"delete\":{}}", None),
            ("{\"delete\":{}}", "{\"delete\": {}}", None),
            ("{\"index\":{}}", "{\"index\":{} }", Some("{\"a\":3}")),
        ];
        let body = |verbatim: bool| {
            let mut body = String::new();
            for line in &lines {
                body.push_str(if verbatim { line.0 } else { line.1 });
                body.push('\n');
                if let Some(document) = line.2 {
                    body.push_str(document);
                    body.push('\n');
                }
            }
            body
        };
        let repeated = body(true);
        let distinct = body(false);
        let (framed, actions) = frame_bulk(Some("path"), repeated.as_bytes()).unwrap();
        let (expected_framed, expected_actions) =
            frame_bulk(Some("path"), distinct.as_bytes()).unwrap();
        assert_eq!(actions, expected_actions);
        assert_eq!(framed.items, expected_framed.items);
        let groups = |framed: &Framed| {
            framed
                .groups
                .iter()
                .map(|group| {
                    (
                        group.stream.clone(),
                        group.data.clone(),
                        group.items.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(groups(&framed), groups(&expected_framed));
        assert_eq!(framed.groups.len(), 2);
        assert_eq!(framed.groups[1].stream, "o_x");
        assert_eq!(
            framed.groups[0].data,
            b"{\"a\":1}\n{\"a\":2}\n{\"c\":1}\n{\"c\":2}\n{\"a\":3}\n"
        );
        assert_eq!(&*actions[2].index, "o.x");
        assert_eq!(actions[4].id.as_deref(), Some("7"));
        assert_eq!(actions[6].action, BulkVerb::Delete);
    }

    #[test]
    fn hec_metadata_never_overrides_the_events_own_keys() {
        let body = br#"{"event":{"host":"own","ts":5,"k\"ey":"v"},"host":"envelope","source":"s","time":"1767225600.5",
                        "fields":{"source":"field","region":"eu","n":[1,{"x":null}]},"index":"gw.logs"}
                       {"event":"{\"model_id\":\"m\"}","time":1767225600,"host":"h","host":"h2"}
                       {"event":"{not json","sourcetype":"st"}
                       {"event":7,"fields":[1]}"#;
        let defaults = HecDefaults {
            sourcetype: Some("default-type".into()),
            ..HecDefaults::default()
        };
        let (framed, fault) = frame_hec_events(body, &defaults, 0);
        assert!(fault.is_none(), "{fault:?}");
        assert_eq!(framed.groups[0].stream, "gw_logs");
        let first = &lines(&framed)[0];
        assert_eq!(
            first,
            &json!({"host": "own", "ts": 5, "k\"ey": "v", "source": "s", "sourcetype": "default-type",
                    "region": "eu", "n": [1, {"x": null}]})
        );
        let rest = lines(&Framed {
            groups: framed.groups[1..].to_vec(),
            ..Framed::default()
        });
        assert_eq!(
            rest[0],
            json!({"model_id": "m", "timestamp": "2026-01-01T00:00:00Z", "host": "h2", "sourcetype": "default-type"})
        );
        assert_eq!(rest[1]["message"], "{not json");
        assert_eq!(rest[1]["sourcetype"], "st");
        assert_eq!(rest[2]["message"], 7);
        assert_eq!(rest[2]["timestamp"], "1970-01-01T00:00:00Z");
        // Half a timestamp from a string time.
        let (framed, _) = frame_hec_events(
            br#"{"event":{},"time":"1767225600.5"}"#,
            &HecDefaults::default(),
            0,
        );
        assert_eq!(
            lines(&framed)[0],
            json!({"timestamp": "2026-01-01T00:00:00.500Z"})
        );
    }

    #[test]
    fn hec_raw_lines_are_objects_only_when_a_whole_line_is_one() {
        let body = b"{\"a\":1}\n{\"a\":1} {\"b\":2}\nplain \"text\"\n\n{\"timestamp\":\"x\"}";
        let defaults = HecDefaults {
            host: Some("web-1".into()),
            ..HecDefaults::default()
        };
        let (framed, fault) = frame_hec_raw(body, &defaults, 0);
        assert!(fault.is_none());
        let lines = lines(&framed);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            json!({"a": 1, "timestamp": "1970-01-01T00:00:00Z", "host": "web-1"})
        );
        assert_eq!(lines[1]["message"], "{\"a\":1} {\"b\":2}");
        assert_eq!(lines[2]["message"], "plain \"text\"");
        assert_eq!(lines[3], json!({"timestamp": "x", "host": "web-1"}));
    }

    #[test]
    fn otlp_attributes_take_precedence_record_body_scope_resource() {
        let json = r#"{"resourceLogs":[{"resource":{"attributes":[
              {"key":"service.name","value":{"stringValue":"chat"}},
              {"key":"tier","value":{"stringValue":"resource"}}]},
          "scopeLogs":[{"scope":{"name":"gen","attributes":[{"key":"tier","value":{"stringValue":"scope"}},
                                                             {"key":"otel.scope.name","value":{"stringValue":"attr"}}]},
            "logRecords":[
              {"observedTimeUnixNano":"1767225600000000000",
               "body":{"kvlistValue":{"values":[{"key":"tier","value":{"stringValue":"body"}},
                                                {"key":"nested","value":{"kvlistValue":{"values":[
                                                    {"key":"x","value":{"intValue":"1"}},{"key":"x","value":{"intValue":"2"}}]}}},
                                                {"key":"raw","value":{"bytesValue":"AAE="}}]}},
               "attributes":[{"key":"tier","value":{"stringValue":"first"}},{"key":"tier","value":{"stringValue":"record"}},
                             {"key":"ratio","value":{"doubleValue":0.5}},{"key":"empty"},
                             {"key":"list","value":{"arrayValue":{"values":[{"boolValue":true},{"stringValue":"a\"b"}]}}}]},
              {"body":{"stringValue":"{\"tier\":\"json body\",\"timestamp\":\"2026-01-01T00:00:00Z\"}"}},
              {"body":{"stringValue":"{\"half\":"},"severityText":"WARN"},
              {"body":{"intValue":"3"}}]}]}]}"#;
        let request: ExportLogsServiceRequest = serde_json::from_str(json).unwrap();
        let lines = lines(&frame_otlp(&request, 0));
        assert_eq!(
            lines[0],
            json!({"tier": "record", "ratio": 0.5, "empty": null, "list": [true, "a\"b"],
                   "nested": {"x": 2}, "raw": "AAE=", "otel.scope.name": "gen",
                   "service.name": "chat", "timestamp": "2026-01-01T00:00:00Z"})
        );
        assert_eq!(lines[1]["tier"], "json body");
        assert_eq!(lines[1]["timestamp"], "2026-01-01T00:00:00Z");
        assert_eq!(lines[2]["body"], "{\"half\":");
        assert_eq!(lines[2]["severity"], "WARN");
        assert_eq!(lines[2]["tier"], "scope");
        assert_eq!(lines[3]["body"], 3);
        assert_eq!(lines[3]["timestamp"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn hostile_bodies_are_refused_or_kept_as_text_never_a_crash() {
        let deep = |open: &str, close: &str| {
            format!(
                "{{\"event\":{{\"a\":{}1{}}},\"host\":\"h\"}}",
                open.repeat(100_000),
                close.repeat(100_000)
            )
        };
        for body in [deep("[", "]"), deep("{\"k\":", "}")] {
            let (framed, fault) = frame_hec_events(body.as_bytes(), &HecDefaults::default(), 0);
            assert_eq!(fault.map(|fault| fault.code), Some(6));
            assert!(matches!(framed.items[0], Item::Refused { .. }));
            let (framed, _) = frame_hec_raw(body.as_bytes(), &HecDefaults::default(), 0);
            assert_eq!(lines(&framed)[0]["message"].as_str(), Some(body.as_str()));
        }
        // Invalid UTF-8 in one event refuses that event only.
        let body = b"{\"event\":{\"a\":1}}{\"event\":{\"a\":\"\xff\"}}{\"event\":{\"a\":2}}";
        let (framed, fault) = frame_hec_events(body, &HecDefaults::default(), 0);
        assert_eq!(fault.map(|fault| (fault.code, fault.event)), Some((6, 1)));
        assert!(matches!(framed.items[1], Item::Refused { .. }));
        let kept: Vec<Value> = lines(&framed)
            .iter()
            .map(|line| line["a"].clone())
            .collect();
        assert_eq!(kept, [json!(1), json!(2)]);
        // A deep JSON text body stays text.
        let text = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let request = ExportLogsServiceRequest {
            resource_logs: vec![opentelemetry_proto::tonic::logs::v1::ResourceLogs {
                scope_logs: vec![opentelemetry_proto::tonic::logs::v1::ScopeLogs {
                    log_records: vec![opentelemetry_proto::tonic::logs::v1::LogRecord {
                        body: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(text.clone())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        assert_eq!(
            lines(&frame_otlp(&request, 0))[0]["body"].as_str(),
            Some(text.as_str())
        );
    }
}
