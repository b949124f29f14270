//! The decoder: newline-delimited JSON → Arrow [`RecordBatch`].
//!
//! This is the hot path of ingestion. Each line is split off the chunk,
//! validated as UTF-8 and checked for excessive nesting, then walked against
//! the mapping trie (see `walk`): mapped values are parsed straight into what
//! their column needs, unmapped ones are sliced out without building a DOM.
//! Flat lines, the usual shape, are scanned by a fast path first (see
//! `flat`), which hands over to the walk on anything unusual.
//! The result lands in a reusable scratch [`Record`]; once the whole line is
//! known good (enrichment, defaults, status, required timestamp, derived
//! columns) it is appended to the column sinks (see `columns`) in one go, so
//! a bad line never leaves half a row behind.
//!
//! Measured with `examples/decode_speed.rs`: about 1.1 M lines/s on one core
//! for ~500-byte events (0.84 M before the flat path), with no heap
//! allocation per event.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use inferwatch_core::column;

use crate::coerce::derive_status;
use crate::columns::BatchSink;
use crate::dead_letter::{DeadLetter, DeadLetterKind, DecodeCounters};
use crate::derive::{summarise_logits, summarise_probabilities, ClassSummary};
use crate::limits::CheckedColumns;
use crate::mapping::{canonical_column_index, Mapping};
use crate::record::{describe, JsonKind, LineError, Record, SlotValue, StaticText};
use crate::Chunk;

/// Longest line decoded, in bytes (without its line ending). Longer lines
/// become dead letters without being parsed.
pub const MAX_LINE_BYTES: usize = 1 << 20;
/// Deepest nesting of objects and arrays accepted; the top-level object is
/// level 1.
pub const MAX_NESTING_DEPTH: usize = 64;
/// Most bytes of one chunk that are decoded. Arrow's string offsets are
/// 32-bit, so a batch must stay under 2 GiB of text; lines past this limit
/// become dead letters and the source should cut smaller chunks.
pub const MAX_CHUNK_BYTES: usize = 1 << 30;

/// The outcome of decoding one chunk.
#[derive(Debug, Clone)]
pub struct DecodedBatch {
    /// The good events, in input order, with the decoder's schema.
    pub batch: RecordBatch,
    /// The refused lines, in input order.
    pub dead_letters: Vec<DeadLetter>,
    /// Lines consumed, including blank and refused ones.
    pub lines: u64,
    /// Counters for this chunk alone.
    pub counters: DecodeCounters,
    /// The input the chunk came from (file path, `stdin`, `http`).
    pub source: Arc<str>,
    /// The 1-based input line of each row of `batch`.
    pub row_lines: Vec<u64>,
}

/// Turns chunks of JSON lines into Arrow batches with a given [`Mapping`].
///
/// Decoding never fails and never panics: a bad line becomes a
/// [`DeadLetter`] and the lines around it are kept. A decoder holds reusable
/// scratch buffers, so keep one per thread: `clone()` gives a fresh decoder
/// sharing the same mapping (with its own, zeroed, counters).
pub struct Decoder {
    mapping: Arc<Mapping>,
    record: Record,
    sink: BatchSink,
    key_buffer: String,
    counters: DecodeCounters,
    columns: CanonicalColumns,
    /// The mapping's column defaults, stored once in the record's arena.
    stored_defaults: Vec<(usize, SlotValue)>,
    /// Try the flat-line fast path first (off only to test it against the
    /// general walk).
    flat_path: bool,
    key_order: crate::flat::KeyOrder,
}

impl Clone for Decoder {
    fn clone(&self) -> Decoder {
        Decoder::new(self.mapping.clone())
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Decoder")
            .field("schema", &self.mapping.schema)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// Positions of the columns the decoder treats specially.
#[derive(Debug, Clone, Copy)]
struct CanonicalColumns {
    timestamp: usize,
    client_id: usize,
    model_id: usize,
    latency_ms: usize,
    ttft_ms: usize,
    input_tokens: usize,
    output_tokens: usize,
    status: usize,
    http_status: usize,
    error_type: usize,
    probabilities: usize,
    logits: usize,
    predicted_class: usize,
    confidence: usize,
    margin: usize,
    entropy: usize,
    attributes: usize,
}

impl CanonicalColumns {
    fn locate() -> CanonicalColumns {
        // The canonical schema always has these; usize::MAX makes a missing
        // one inert (every access is bounds-checked with `get`).
        let index = |name| canonical_column_index(name).unwrap_or(usize::MAX);
        CanonicalColumns {
            timestamp: index(column::TIMESTAMP),
            client_id: index(column::CLIENT_ID),
            model_id: index(column::MODEL_ID),
            latency_ms: index(column::LATENCY_MS),
            ttft_ms: index(column::TTFT_MS),
            input_tokens: index(column::INPUT_TOKENS),
            output_tokens: index(column::OUTPUT_TOKENS),
            status: index(column::STATUS),
            http_status: index(column::HTTP_STATUS),
            error_type: index(column::ERROR_TYPE),
            probabilities: index(column::PROBABILITIES),
            logits: index(column::LOGITS),
            predicted_class: index(column::PREDICTED_CLASS),
            confidence: index(column::CONFIDENCE),
            margin: index(column::MARGIN),
            entropy: index(column::ENTROPY),
            attributes: index(column::ATTRIBUTES),
        }
    }

    /// Columns a projected mapping does not fill become inert here, so that
    /// status and the class summary are not derived into them.
    fn projected(self, mapping: &Mapping) -> CanonicalColumns {
        let keep = |index: usize| {
            if mapping.fills(index) {
                index
            } else {
                usize::MAX
            }
        };
        let mut columns = CanonicalColumns {
            status: keep(self.status),
            predicted_class: keep(self.predicted_class),
            confidence: keep(self.confidence),
            margin: keep(self.margin),
            entropy: keep(self.entropy),
            ..self
        };
        let derived = [
            columns.predicted_class,
            columns.confidence,
            columns.margin,
            columns.entropy,
        ];
        if derived.iter().all(|&index| index == usize::MAX) {
            // Nothing to derive: skip the summary.
            columns.probabilities = usize::MAX;
            columns.logits = usize::MAX;
        }
        columns
    }

    fn checked(&self) -> CheckedColumns {
        CheckedColumns {
            latency_ms: self.latency_ms,
            ttft_ms: self.ttft_ms,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            confidence: self.confidence,
            margin: self.margin,
            entropy: self.entropy,
            probabilities: self.probabilities,
            logits: self.logits,
            http_status: self.http_status,
            predicted_class: self.predicted_class,
        }
    }
}

impl Decoder {
    /// A decoder for `mapping` (whose lookup tables it applies).
    pub fn new(mapping: Arc<Mapping>) -> Decoder {
        let columns = CanonicalColumns::locate().projected(&mapping);
        let attributes_column = (columns.attributes != usize::MAX).then_some(columns.attributes);
        let sink = BatchSink::new(&mapping.schema, attributes_column);
        let mut record = Record::new(
            mapping.column_kinds.len(),
            mapping.enrichment.extra_columns().len(),
        );
        let stored_defaults = record
            .store_persistent(&mapping.column_defaults)
            .into_iter()
            .enumerate()
            .filter(|(_, value)| value.is_present())
            .collect();
        Decoder {
            mapping,
            record,
            sink,
            key_buffer: String::new(),
            counters: DecodeCounters::default(),
            columns,
            stored_defaults,
            flat_path: true,
            key_order: Default::default(),
        }
    }

    /// The same decoder with every line taking the general walk: for tests
    /// and benchmarks that hold the fast path against it.
    #[doc(hidden)]
    pub fn without_flat_path(mut self) -> Decoder {
        self.flat_path = false;
        self
    }

    /// The schema of every batch this decoder produces: the canonical
    /// columns, then the enrichment columns (Utf8 dictionary).
    pub fn schema(&self) -> SchemaRef {
        self.mapping.schema.clone()
    }

    /// The mapping in use.
    pub fn mapping(&self) -> &Arc<Mapping> {
        &self.mapping
    }

    /// Everything this decoder has seen since it was created.
    pub fn counters(&self) -> &DecodeCounters {
        &self.counters
    }

    /// Decodes every line of `chunk`.
    pub fn decode(&mut self, chunk: &Chunk) -> DecodedBatch {
        let lines = decode_lines(chunk, |line| {
            self.decode_line(line)?;
            self.append_record();
            Ok(())
        });
        let finished = self.finish_batch();
        let decoded = finish_decoded(chunk, finished, lines, self.schema());
        self.counters.merge(&decoded.counters);
        decoded
    }

    /// Decodes one line (without its line ending) into the scratch record.
    fn decode_line(&mut self, line: &[u8]) -> Result<(), LineError> {
        self.record.clear();
        let text = std::str::from_utf8(line).map_err(|error| {
            LineError::new(
                DeadLetterKind::InvalidUtf8,
                format!("invalid UTF-8 at byte column {}", error.valid_up_to() + 1),
            )
        })?;
        let flat = if self.flat_path {
            crate::flat::walk_flat(&self.mapping, &mut self.record, &mut self.key_order, text)
        } else {
            None
        };
        match flat {
            Some(outcome) => outcome?,
            None => {
                // Whatever the fast path stored before it gave up goes.
                self.record.clear();
                let shallow = check_nesting(line)?;
                let first = line
                    .iter()
                    .position(|byte| !byte.is_ascii_whitespace())
                    .unwrap_or(0);
                if line.get(first) != Some(&b'{') {
                    return Err(not_an_object(text));
                }
                crate::walk::walk_line(&self.mapping, &mut self.record, text, shallow)?;
            }
        }
        self.complete_record()
    }

    /// Enrichment, defaults, status, required timestamp and derived columns.
    fn complete_record(&mut self) -> Result<(), LineError> {
        let mapping = &*self.mapping;
        let record = &mut self.record;
        let columns = self.columns;
        // A mapped value that failed to convert and was not overridden by a
        // higher-priority source.
        if let Some(error) = record.take_pending_error() {
            return Err(error);
        }
        if !mapping.enrichment.is_empty() {
            mapping
                .enrichment
                .apply(record, &mapping.column_defaults, &mut self.key_buffer);
        }
        for &(column, default) in &self.stored_defaults {
            record.fill_column_with_stored(column, default);
        }
        for (key, value) in &mapping.attribute_defaults {
            record.push_attribute_default(key, value);
        }
        if let Some(status) = record.slots.get(columns.status) {
            if !status.value.is_present() {
                let http_status = match record.slots.get(columns.http_status).map(|slot| slot.value)
                {
                    Some(SlotValue::Integer(code)) => Some(code),
                    _ => None,
                };
                let has_error_type = record
                    .slots
                    .get(columns.error_type)
                    .is_some_and(|slot| slot.value.is_present());
                let derived = derive_status(http_status, has_error_type);
                record.slots[columns.status].value = SlotValue::Static(StaticText::status(derived));
            }
        }
        let has_timestamp = record
            .slots
            .get(columns.timestamp)
            .is_some_and(|slot| slot.value.is_present());
        if !has_timestamp {
            let message = if mapping.timestamp_sources.is_empty() {
                "missing timestamp: the mapping maps no field to timestamp".to_string()
            } else {
                format!(
                    "missing timestamp (looked for {})",
                    mapping.timestamp_sources
                )
            };
            return Err(LineError::new(DeadLetterKind::MissingTimestamp, message));
        }
        let summary = class_summary(record, columns);
        let fills = [
            (
                columns.predicted_class,
                summary
                    .predicted_class
                    .map(|class| SlotValue::Integer(i64::from(class))),
            ),
            (columns.confidence, summary.confidence.map(SlotValue::Float)),
            (columns.margin, summary.margin.map(SlotValue::Float)),
            (columns.entropy, summary.entropy.map(SlotValue::Float)),
        ];
        for (column, value) in fills {
            if let (Some(slot), Some(value)) = (record.slots.get_mut(column), value) {
                if !slot.value.is_present() {
                    slot.value = value;
                }
            }
        }
        mapping
            .limits
            .check(record, &columns.checked())
            .map_err(|error| {
                let text = |column: usize| {
                    record
                        .slots
                        .get(column)
                        .and_then(|slot| record.as_text(slot.value))
                };
                error.with_keys(text(columns.client_id), text(columns.model_id))
            })
    }

    fn append_record(&mut self) {
        self.sink.push(&self.record);
    }

    fn finish_batch(&mut self) -> Result<RecordBatch, String> {
        let schema = self.mapping.schema.clone();
        let arrays = self
            .sink
            .finish(&schema)
            .map_err(|error| error.to_string())?;
        RecordBatch::try_new(schema, arrays).map_err(|error| error.to_string())
    }
}

fn class_summary(record: &Record, columns: CanonicalColumns) -> ClassSummary {
    let list = |column: usize| match record.slots.get(column).map(|slot| slot.value) {
        Some(SlotValue::FloatList { start, end }) if end > start => {
            Some(record.floats_at(start, end))
        }
        _ => None,
    };
    if let Some(probabilities) = list(columns.probabilities) {
        return summarise_probabilities(probabilities);
    }
    if let Some(logits) = list(columns.logits) {
        return summarise_logits(logits);
    }
    ClassSummary::default()
}

/// Splits a chunk into lines with a SIMD newline search. Yields
/// `(start, end)`, `end` excluding the `\n`.
struct LineScanner<'a> {
    data: &'a [u8],
    newlines: memchr::Memchr<'a>,
    start: usize,
}

impl<'a> LineScanner<'a> {
    fn new(data: &'a [u8]) -> LineScanner<'a> {
        LineScanner {
            data,
            newlines: memchr::memchr_iter(b'\n', data),
            start: 0,
        }
    }
}

impl Iterator for LineScanner<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if self.start >= self.data.len() {
            return None;
        }
        let end = self.newlines.next().unwrap_or(self.data.len());
        let start = self.start;
        self.start = end + 1;
        Some((start, end))
    }
}

/// Refuses lines nested deeper than [`MAX_NESTING_DEPTH`] before sonic-rs
/// sees them: its validation of skipped values recurses, so a line of a
/// million `[` would otherwise overflow the stack. A line with at most
/// `MAX_NESTING_DEPTH` opening brackets cannot be too deep, which settles
/// nearly every line; only the rest are scanned. Returns whether the line
/// is shallow (see `walk::SHALLOW_OPENINGS`). Lines the fast path reads
/// never get here: it follows objects only along the mapping's paths, at
/// most `MAX_NESTING_DEPTH` deep, and arrays one deep.
fn check_nesting(line: &[u8]) -> Result<bool, LineError> {
    let openings = memchr::memchr2_iter(b'{', b'[', line).count();
    if openings <= crate::walk::SHALLOW_OPENINGS {
        return Ok(true);
    }
    if openings <= MAX_NESTING_DEPTH {
        return Ok(false);
    }
    scan_nesting_depth(line)?;
    Ok(false)
}

/// Checks that JSON text nests objects and arrays at most
/// [`MAX_NESTING_DEPTH`] deep, with the reason when it does not. Text from
/// a client must pass it before sonic-rs iterates it (see
/// `check_nesting`): a protocol framing that reads members lazily is
/// otherwise one request away from a stack overflow.
pub fn check_json_depth(json: &[u8]) -> Result<(), String> {
    check_nesting(json)
        .map(|_| ())
        .map_err(LineError::into_message)
}

/// The line loop both decoders share: cuts `chunk` into lines, strips
/// `\r` and a leading byte-order mark, skips blank lines, refuses lines too
/// long or too far into the chunk, and dead-letters the lines `decode_line`
/// refuses.
/// What [`decode_lines`] saw: counters, refused lines, and the line of each row.
pub(crate) struct DecodedLines {
    pub(crate) counters: DecodeCounters,
    pub(crate) dead_letters: Vec<DeadLetter>,
    pub(crate) row_lines: Vec<u64>,
}

pub(crate) fn decode_lines(
    chunk: &Chunk,
    mut decode_line: impl FnMut(&[u8]) -> Result<(), LineError>,
) -> DecodedLines {
    let mut counters = DecodeCounters::default();
    let mut dead_letters = Vec::new();
    let mut row_lines = Vec::new();
    let data = chunk.data.as_slice();
    for (this_line, (line_start, line_end)) in (chunk.first_line..).zip(LineScanner::new(data)) {
        let mut line = &data[line_start..line_end];
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        counters.lines += 1;
        if line_start == 0 && chunk.first_offset == 0 {
            // A byte-order mark some Windows tools put at the start of a file.
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        let outcome = if line_start >= MAX_CHUNK_BYTES {
            Err(LineError::new(
                DeadLetterKind::ChunkTooLarge,
                format!("line lies past the first {MAX_CHUNK_BYTES} bytes of its chunk; cut smaller chunks"),
            ))
        } else if chunk.skipped_bytes > 0 && line_end + 1 >= data.len() {
            // The source kept only the start of this line (Chunk::skipped_bytes).
            Err(LineError::new(
                DeadLetterKind::LineTooLong,
                format!(
                    "line is {} bytes, over the {MAX_LINE_BYTES}-byte limit",
                    (line_end - line_start) as u64 + chunk.skipped_bytes
                ),
            ))
        } else if line.iter().all(u8::is_ascii_whitespace) {
            counters.blank_lines += 1;
            continue;
        } else if line.len() > MAX_LINE_BYTES {
            Err(LineError::new(
                DeadLetterKind::LineTooLong,
                format!(
                    "line is {} bytes, over the {MAX_LINE_BYTES}-byte limit",
                    line.len()
                ),
            ))
        } else {
            decode_line(line)
        };
        match outcome {
            Ok(()) => {
                counters.events += 1;
                row_lines.push(this_line);
            }
            Err(mut error) => {
                let kind = error.kind();
                counters.count_dead_letter(kind);
                let (client_id, model_id) = error.take_keys();
                let mut dead_letter = DeadLetter::new(
                    &chunk.source,
                    this_line,
                    chunk.first_offset + line_start as u64,
                    error.into_message(),
                    line,
                )
                .with_kind(kind);
                dead_letter.client_id = client_id;
                dead_letter.model_id = model_id;
                dead_letters.push(dead_letter);
            }
        }
    }
    DecodedLines {
        counters,
        dead_letters,
        row_lines,
    }
}

/// Wraps a decoder's finished batch; a batch that could not be built (a
/// bug) loses the chunk's rows loudly, as one internal dead letter.
pub(crate) fn finish_decoded(
    chunk: &Chunk,
    finished: Result<RecordBatch, String>,
    lines: DecodedLines,
    schema: SchemaRef,
) -> DecodedBatch {
    let DecodedLines {
        mut counters,
        mut dead_letters,
        mut row_lines,
    } = lines;
    let batch = match finished {
        Ok(batch) => batch,
        Err(message) => {
            counters.count_dead_letter(DeadLetterKind::Internal);
            dead_letters.push(
                DeadLetter::new(
                    &chunk.source,
                    chunk.first_line,
                    chunk.first_offset,
                    format!(
                    "internal error (this is a bug): {message}; {} events of this chunk were lost",
                    counters.events
                ),
                    b"",
                )
                .with_kind(DeadLetterKind::Internal),
            );
            counters.events = 0;
            row_lines.clear();
            RecordBatch::new_empty(schema)
        }
    };
    debug_assert_eq!(row_lines.len(), batch.num_rows());
    DecodedBatch {
        batch,
        dead_letters,
        lines: counters.lines,
        counters,
        source: chunk.source.clone(),
        row_lines,
    }
}

/// Walks the line's brackets (outside strings) and refuses it past
/// [`MAX_NESTING_DEPTH`] levels, naming the byte column.
pub(crate) fn scan_nesting_depth(line: &[u8]) -> Result<(), LineError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (position, &byte) in line.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_NESTING_DEPTH {
                    return Err(LineError::new(
                        DeadLetterKind::TooDeep,
                        format!(
                            "nesting deeper than {MAX_NESTING_DEPTH} levels at byte column {}",
                            position + 1
                        ),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Tells "valid JSON but not an object" from "not JSON at all".
fn not_an_object(text: &str) -> LineError {
    match sonic_rs::from_str::<serde::de::IgnoredAny>(text) {
        Ok(_) => {
            let trimmed = text.trim_start();
            LineError::new(
                DeadLetterKind::NotAnObject,
                format!(
                    "expected a JSON object, got {}",
                    describe(trimmed, JsonKind::of(trimmed))
                ),
            )
        }
        Err(error) => json_error(&error, 0, text),
    }
}

/// A sonic-rs error as a dead-letter reason with the byte column in the
/// line (1-based) and a short excerpt around it.
pub(crate) fn json_error(error: &sonic_rs::Error, base: usize, text: &str) -> LineError {
    let local = error.offset().min(text.len());
    invalid_json(&format!("at byte column {}", base + local + 1), error, text)
}

/// As [`json_error`], for a value read again on its own (the walk checks a
/// value's syntax when it passes, its range only when it converts it): the
/// field names where it is.
pub(crate) fn field_json_error(error: &sonic_rs::Error, field: &str, value: &str) -> LineError {
    invalid_json(&format!("in field {field}"), error, value)
}

fn invalid_json(place: &str, error: &sonic_rs::Error, text: &str) -> LineError {
    let local = error.offset().min(text.len());
    LineError::new(
        DeadLetterKind::InvalidJson,
        format!(
            "invalid JSON {place}: {}{}",
            json_error_text(error, text, local),
            near(text.as_bytes(), local)
        ),
    )
}

/// What went wrong, in words, without the position sonic-rs appends.
fn json_error_text(error: &sonic_rs::Error, text: &str, local: usize) -> String {
    let message = error.to_string();
    let what = message.split(" at line ").next().unwrap_or(&message);
    let what = what.strip_suffix(" while parsing").unwrap_or(what);
    let rest = text
        .as_bytes()
        .get(local.saturating_sub(1)..)
        .unwrap_or_default();
    if what.starts_with("Float number must be finite") {
        // sonic-rs says this for 1e999 too, where it is misleading.
        "number out of range (beyond a 64-bit float)".to_string()
    } else if what.starts_with("EOF") {
        "unexpected end of line".to_string()
    } else if [&b"NaN"[..], b"Infinity", b"-Infinity", b"aN", b"nfinity"]
        .iter()
        .any(|token| {
            rest.starts_with(token) || rest.get(1..).is_some_and(|after| after.starts_with(token))
        })
    {
        "NaN and Infinity are not JSON numbers".to_string()
    } else {
        // "Expected …" reads as "expected …", but "JSON has …" keeps its acronym.
        let mut lowercase = String::with_capacity(what.len());
        let mut characters = what.chars();
        if let Some(first) = characters.next() {
            if what.chars().nth(1).is_some_and(char::is_uppercase) {
                lowercase.push(first);
            } else {
                lowercase.extend(first.to_lowercase());
            }
            lowercase.extend(characters);
        }
        lowercase
    }
}

/// `` near `…` ``: up to 12 bytes either side of `position`, with control
/// characters escaped so that the reason stays on one readable line.
pub(crate) fn near(bytes: &[u8], position: usize) -> String {
    let start = position.saturating_sub(12);
    let end = (position + 12).min(bytes.len());
    if start >= end {
        return String::new();
    }
    let mut excerpt = String::with_capacity(end - start + 8);
    for character in String::from_utf8_lossy(&bytes[start..end]).chars() {
        if character.is_control() {
            excerpt.extend(character.escape_default());
        } else {
            excerpt.push(character);
        }
    }
    format!(" near `{excerpt}`")
}

#[cfg(test)]
mod tests;
