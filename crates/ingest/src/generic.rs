//! The generic-stream decoder: JSON lines of any shape → Arrow batches whose
//! schema is inferred from the data.
//!
//! Gateway logs, feature-store logs and application errors have no fixed
//! schema, and writing a mapping for each would defeat the point of keeping
//! them. So instead of projecting them onto the canonical inference columns,
//! this decoder keeps what they say: every top-level field becomes a column,
//! nested objects are flattened with dots (`{"http":{"status":200}}` →
//! `http.status`, at most [`MAX_FLATTEN_DEPTH`] names deep), arrays (and
//! objects deeper than that) are kept as their JSON text. Column types come
//! from the values: boolean → Boolean, integer → Int64, other number →
//! Float64, string or JSON text → Utf8. A null says nothing about a type, so
//! a field seen only as null gets no column until a typed value shows up.
//!
//! A batch holds `timestamp` and, in schema order, the columns that have a
//! value in its chunk; [`GenericDecoder::schema`] is the whole schema, which
//! the store widens every batch to (an empty chunk gives an empty batch of
//! the whole schema). A stream with many sparse columns thus costs per row
//! only the fields rows actually carry.
//!
//! The schema only grows, like the store's generic streams (new columns are
//! appended, nullable): a column never changes type, or the stream's older
//! segments could no longer be read with its newer ones. A value of another
//! type therefore refuses its whole line as a `type_conflict` dead letter
//! rather than splitting the history, with one exception: an integer in a
//! Float64 column is widened, since loggers routinely write a whole float
//! as `3`. A refused line adds no column.
//!
//! **Column cap.** A stream gains at most [`DEFAULT_MAX_STREAM_COLUMNS`] columns
//! ([`GenericDecoder::with_max_columns`] changes it), so events that carry
//! ever new field names (ids used as keys, say) cannot grow the schema, and
//! the decoder's memory, without bound. Once a stream has that many, a field
//! with no column yet goes into the line's `attributes` column instead: one
//! Utf8 column, created past the cap when first needed, holding a JSON
//! object of the line's overflowing fields by flattened name (nulls left
//! out, as they make no column either). Nothing is dropped, and every
//! column keeps its type. The same holds, for the rest of a chunk, once
//! the columns the chunk has created would pad it with more than
//! [`MAX_NEW_COLUMN_CELLS`] cells (a new column costs a null per row of its
//! batch): normal streams create all their columns in their first chunk,
//! but events that each bring a new name, many to a chunk, would otherwise
//! make a batch of a thousand mostly-null columns. A line is refused (`type_conflict`) only if it
//! cannot be stored that way: the stream's `attributes` column is not Utf8,
//! or the line sets `attributes` itself as well. A nested `attributes`
//! object still flattens into `attributes.*` columns beside it.
//!
//! Speed matters less than on the inference path, so each line is parsed
//! into a sonic-rs DOM rather than walked with visitors. Field names are
//! still built in one reusable buffer and text values copied into one
//! per-line arena: apart from the DOM, a line allocates only when it adds a
//! column or carries an array.

use std::collections::HashMap;
use std::sync::Arc;

use ahash::AHashMap;
use arrow::array::{
    new_null_array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder,
    RecordBatch, StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use inferwatch_core::column;
use sonic_rs::{JsonContainerTrait, JsonNumberTrait, JsonType, JsonValueTrait, Object, Value};

use crate::coerce::{
    timestamp_from_float, timestamp_from_integer, timestamp_from_text, TimestampProblem,
    TimestampUnit,
};
use crate::dead_letter::{DeadLetterKind, DecodeCounters};
use crate::decode::{
    decode_lines, finish_decoded, json_error, DecodedBatch, MAX_LINE_BYTES, MAX_NESTING_DEPTH,
};
use crate::record::{describe, JsonKind, LineError, Scalar};
use crate::Chunk;

/// Most names in a flattened column name (`a.b.c` has three). An object
/// found at this depth is kept as JSON text instead of being flattened.
pub const MAX_FLATTEN_DEPTH: usize = 8;

/// Most columns a stream gains by default (see the module docs).
pub const DEFAULT_MAX_STREAM_COLUMNS: usize = 1000;

/// Most cells (new columns × lines of the chunk) that the columns created
/// while decoding one chunk may add to its batch; see the module docs.
pub const MAX_NEW_COLUMN_CELLS: usize = 1 << 21;

/// The column that holds, as a JSON object, the fields past the column cap.
const OVERFLOW_COLUMN: &str = "attributes";

/// Top-level fields that give the event time, by priority.
const TIMESTAMP_SOURCES: [&str; 4] = ["timestamp", "@timestamp", "time", "ts"];

/// Most bytes of text one Utf8 column of a batch may hold. Arrow's offsets
/// are 32-bit (its builder panics past them); the margin covers a whole
/// line, whose arrays may grow a little when written back as JSON text.
const TEXT_BYTES_LIMIT: usize = i32::MAX as usize - 16 * MAX_LINE_BYTES;

/// Turns chunks of JSON lines from a schemaless stream into Arrow batches,
/// inferring and growing the schema as it goes (see the module docs).
///
/// Decoding never fails and never panics: a bad line becomes a
/// [`DeadLetter`] and the lines around it are kept. The decoder remembers
/// the columns it has added, so keep one per stream.
pub struct GenericDecoder {
    stream: String,
    /// `timestamp`, then one field per entry of `columns`.
    schema: SchemaRef,
    metadata: HashMap<String, String>,
    columns: Vec<Column>,
    /// Column positions (in `columns`) by name, including those the current
    /// line would add.
    by_name: AHashMap<String, usize>,
    timestamps: Vec<i64>,
    line: LineScratch,
    counters: DecodeCounters,
    /// Most columns besides `timestamp`, not counting [`OVERFLOW_COLUMN`].
    max_columns: usize,
    /// Columns the chunk being decoded may still create, and has created.
    new_columns_allowed: usize,
    new_columns: usize,
}

impl std::fmt::Debug for GenericDecoder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("GenericDecoder")
            .field("stream", &self.stream)
            .field("schema", &self.schema)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// One column after `timestamp`, with the values of the batch in progress.
struct Column {
    field: FieldRef,
    values: ColumnValues,
    /// Whether the batch in progress has a non-null value in it.
    filled: bool,
}

/// Per-column builders. They may lag behind the batch's row count: missing
/// rows are nulls, padded in only when the next value or the batch end
/// comes, so a row costs only the fields it has.
enum ColumnValues {
    Boolean(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Utf8(StringBuilder),
    /// A type of the known schema that JSON values never produce: the column
    /// is kept, with nulls, and any value for it is a conflict.
    Other {
        data_type: DataType,
        rows: usize,
    },
}

impl ColumnValues {
    fn for_type(data_type: &DataType) -> ColumnValues {
        match data_type {
            DataType::Boolean => ColumnValues::Boolean(BooleanBuilder::new()),
            DataType::Int64 => ColumnValues::Int64(Int64Builder::new()),
            DataType::Float64 => ColumnValues::Float64(Float64Builder::new()),
            DataType::Utf8 => ColumnValues::Utf8(StringBuilder::new()),
            other => ColumnValues::Other {
                data_type: other.clone(),
                rows: 0,
            },
        }
    }

    fn len(&self) -> usize {
        match self {
            ColumnValues::Boolean(builder) => builder.len(),
            ColumnValues::Int64(builder) => builder.len(),
            ColumnValues::Float64(builder) => builder.len(),
            ColumnValues::Utf8(builder) => builder.len(),
            ColumnValues::Other { rows, .. } => *rows,
        }
    }

    /// Bytes of text held so far (Utf8 only).
    fn text_bytes(&self) -> usize {
        match self {
            ColumnValues::Utf8(builder) => builder.values_slice().len(),
            _ => 0,
        }
    }

    /// Appends nulls up to `rows` rows.
    fn pad_to(&mut self, rows: usize) {
        let missing = rows.saturating_sub(self.len());
        if missing == 0 {
            return;
        }
        match self {
            ColumnValues::Boolean(builder) => builder.append_nulls(missing),
            ColumnValues::Int64(builder) => builder.append_nulls(missing),
            ColumnValues::Float64(builder) => builder.append_nulls(missing),
            ColumnValues::Utf8(builder) => builder.append_nulls(missing),
            ColumnValues::Other { rows: held, .. } => *held += missing,
        }
    }

    /// Appends one cell, already checked against the column type (a cell of
    /// another type, which cannot happen, is stored as null).
    fn push(&mut self, cell: Cell, text: &str) {
        match (self, cell) {
            (ColumnValues::Boolean(builder), Cell::Bool(truth)) => builder.append_value(truth),
            (ColumnValues::Int64(builder), Cell::Int(integer)) => builder.append_value(integer),
            (ColumnValues::Float64(builder), Cell::Float(float)) => builder.append_value(float),
            (ColumnValues::Utf8(builder), Cell::Text { start, end }) => {
                builder.append_value(text.get(start..end).unwrap_or_default())
            }
            (values, _) => {
                let rows = values.len() + 1;
                values.pad_to(rows);
            }
        }
    }

    /// Drops what the builder holds (explicit nulls only, for a column
    /// left out of its batch).
    fn discard(&mut self) {
        match self {
            ColumnValues::Boolean(builder) => drop(builder.finish()),
            ColumnValues::Int64(builder) => drop(builder.finish()),
            ColumnValues::Float64(builder) => drop(builder.finish()),
            ColumnValues::Utf8(builder) => drop(builder.finish()),
            ColumnValues::Other { rows, .. } => *rows = 0,
        }
    }

    /// The column of the finished batch (`rows` long); resets the builder.
    fn finish(&mut self, rows: usize) -> ArrayRef {
        self.pad_to(rows);
        match self {
            ColumnValues::Boolean(builder) => Arc::new(builder.finish()),
            ColumnValues::Int64(builder) => Arc::new(builder.finish()),
            ColumnValues::Float64(builder) => Arc::new(builder.finish()),
            ColumnValues::Utf8(builder) => Arc::new(builder.finish()),
            ColumnValues::Other { data_type, rows } => {
                let array = new_null_array(data_type, *rows);
                *rows = 0;
                array
            }
        }
    }
}

/// One field value of the line being decoded, checked against its column.
#[derive(Debug, Clone, Copy)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A range of `LineScratch::text`.
    Text {
        start: usize,
        end: usize,
    },
}

/// A JSON value as this decoder sees it, before its column is known.
#[derive(Clone, Copy)]
enum Incoming<'v> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer beyond i64: a Float64 value.
    Unsigned(u64),
    Float(f64),
    Text(&'v str),
    /// An array, or an object too deep to flatten: stored as JSON text.
    Json(&'v Value),
}

impl<'v> Incoming<'v> {
    fn of(value: &'v Value) -> Incoming<'v> {
        match value.get_type() {
            JsonType::Null => Incoming::Null,
            JsonType::Boolean => Incoming::Bool(value.as_bool().unwrap_or_default()),
            JsonType::String => Incoming::Text(value.as_str().unwrap_or_default()),
            JsonType::Number => match value.as_number() {
                Some(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
                    (Some(integer), _, _) => Incoming::Int(integer),
                    (None, Some(unsigned), _) => Incoming::Unsigned(unsigned),
                    (None, None, Some(float)) => Incoming::Float(float),
                    // sonic-rs always has an f64 for a number; be safe anyway.
                    (None, None, None) => Incoming::Null,
                },
                None => Incoming::Null,
            },
            JsonType::Array | JsonType::Object => Incoming::Json(value),
        }
    }

    /// The column type a first value gives; `None` for null.
    fn inferred_type(self) -> Option<DataType> {
        Some(match self {
            Incoming::Null => return None,
            Incoming::Bool(_) => DataType::Boolean,
            Incoming::Int(_) => DataType::Int64,
            Incoming::Unsigned(_) | Incoming::Float(_) => DataType::Float64,
            Incoming::Text(_) | Incoming::Json(_) => DataType::Utf8,
        })
    }

    /// `string "oops"`, `number 1.5`, `an array`…, for dead-letter reasons.
    fn describe(self) -> String {
        match self {
            Incoming::Null => "null".to_string(),
            Incoming::Bool(truth) => Scalar::Bool(truth).describe(),
            Incoming::Int(integer) => Scalar::Signed(integer).describe(),
            Incoming::Unsigned(unsigned) => Scalar::Unsigned(unsigned).describe(),
            Incoming::Float(float) => Scalar::Float(float).describe(),
            Incoming::Text(text) => Scalar::Str(text).describe(),
            Incoming::Json(value) if value.is_array() => "an array".to_string(),
            Incoming::Json(_) => "an object".to_string(),
        }
    }
}

/// Reusable buffers for the line being decoded. Nothing reaches the column
/// builders until the whole line is known good.
#[derive(Default)]
struct LineScratch {
    /// `(column, value)`, at most one per column.
    cells: Vec<(usize, Cell)>,
    /// Text values of `cells`.
    text: String,
    /// Arrays and deep objects written back as JSON, before joining `text`.
    json: Vec<u8>,
    /// The flattened name of the field being read.
    path: String,
    /// Columns this line would add (already in `by_name`), in order.
    added: Vec<(String, DataType)>,
    /// Per column: the line that last set it and the position of its cell,
    /// so that a repeated field overwrites its earlier value (last wins).
    marks: Vec<(u64, usize)>,
    /// Counts lines, to tell this line's marks from older ones.
    generation: u64,
    /// The fields past the column cap, as the inside of a JSON object.
    overflow: Vec<u8>,
}

impl GenericDecoder {
    /// A decoder for `stream`, starting from `known`, the schema the store
    /// already has for it (if any).
    ///
    /// Known columns keep their position and type (a column named
    /// `timestamp` is replaced by this decoder's own, first); they become
    /// nullable, since a line may lack any of them. Columns of types that
    /// JSON values never produce (anything but Boolean, Int64, Float64 and
    /// Utf8) stay in the schema, null, and a value for one is a conflict.
    pub fn new(stream: &str, known: Option<SchemaRef>) -> GenericDecoder {
        let mut decoder = GenericDecoder {
            stream: stream.to_string(),
            schema: Arc::new(Schema::empty()),
            metadata: HashMap::new(),
            columns: Vec::new(),
            by_name: AHashMap::new(),
            timestamps: Vec::new(),
            line: LineScratch::default(),
            counters: DecodeCounters::default(),
            max_columns: DEFAULT_MAX_STREAM_COLUMNS,
            new_columns_allowed: usize::MAX,
            new_columns: 0,
        };
        if let Some(known) = known {
            decoder.metadata = known.metadata().clone();
            for field in known.fields() {
                let name = field.name();
                if name != column::TIMESTAMP && !decoder.by_name.contains_key(name.as_str()) {
                    decoder.push_column(name.clone(), field.data_type().clone());
                }
            }
        }
        decoder.schema = decoder.build_schema();
        decoder
    }

    /// Caps the columns the stream may have (besides `timestamp`) at
    /// `max_columns`; fields past it go to `attributes` (see the module docs).
    pub fn with_max_columns(mut self, max_columns: usize) -> GenericDecoder {
        self.max_columns = max_columns;
        self
    }

    /// The stream this decoder reads.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The current schema: `timestamp` (UTC nanoseconds, not null), then the
    /// known columns, then the ones added since, in order of appearance.
    /// A batch from [`GenericDecoder::decode`] has the fields of the schema
    /// current at its end that hold a value in it (all of them when empty).
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Everything this decoder has seen since it was created.
    pub fn counters(&self) -> &DecodeCounters {
        &self.counters
    }

    /// Decodes every line of `chunk`, one JSON object per line.
    pub fn decode(&mut self, chunk: &Chunk) -> DecodedBatch {
        let lines = memchr::memchr_iter(b'\n', &chunk.data).count() + 1;
        self.new_columns_allowed = (MAX_NEW_COLUMN_CELLS / lines).max(1);
        self.new_columns = 0;
        let lines = decode_lines(chunk, |line| self.decode_line(line));
        let finished = self.finish_batch();
        let decoded = finish_decoded(chunk, finished, lines, self.schema());
        self.counters.merge(&decoded.counters);
        decoded
    }

    /// Decodes one line (without its line ending) into a row, or refuses it
    /// leaving the decoder as it was.
    fn decode_line(&mut self, line: &[u8]) -> Result<(), LineError> {
        self.line.generation += 1;
        self.line.cells.clear();
        self.line.text.clear();
        self.line.added.clear();
        self.line.overflow.clear();
        match self.read_line(line) {
            Ok(timestamp) => {
                self.commit_line(timestamp);
                Ok(())
            }
            Err(error) => {
                for (name, _) in self.line.added.drain(..) {
                    self.by_name.remove(&name);
                }
                Err(error)
            }
        }
    }

    /// Parses and type-checks a line into the scratch; returns its time.
    fn read_line(&mut self, line: &[u8]) -> Result<i64, LineError> {
        let text = std::str::from_utf8(line).map_err(|error| {
            LineError::new(
                DeadLetterKind::InvalidUtf8,
                format!("invalid UTF-8 at byte column {}", error.valid_up_to() + 1),
            )
        })?;
        check_nesting(line)?;
        let value: Value = sonic_rs::from_str(text).map_err(|error| json_error(&error, 0, text))?;
        let Some(object) = value.as_object() else {
            let trimmed = text.trim();
            return Err(LineError::new(
                DeadLetterKind::NotAnObject,
                format!(
                    "expected a JSON object, got {}",
                    describe(trimmed, JsonKind::of(trimmed))
                ),
            ));
        };
        let (timestamp, source) = read_timestamp(object)?;
        for (key, child) in object.iter() {
            // The time is the `timestamp` column; a null `timestamp` field
            // beside another source must not become a second one.
            if key == source || key == column::TIMESTAMP {
                continue;
            }
            self.line.path.clear();
            self.line.path.push_str(key);
            self.read_field(child, 1)?;
        }
        if !self.line.overflow.is_empty() {
            let overflow = std::mem::take(&mut self.line.overflow);
            let stored = self.store_overflow(&overflow);
            // Keep the buffer's capacity for the next line.
            self.line.overflow = overflow;
            stored?;
        }
        Ok(timestamp)
    }

    /// Whether the field named by `self.line.path` has no column and the
    /// stream has no room for another.
    fn past_the_cap(&self) -> bool {
        if self.by_name.contains_key(self.line.path.as_str()) {
            return false;
        }
        let added = self.line.added.len();
        // The overflow column itself is not counted against the cap.
        let overflow = self
            .by_name
            .get(OVERFLOW_COLUMN)
            .is_some_and(|&index| self.column_type(index) == DataType::Utf8);
        self.columns.len() + added >= self.max_columns + usize::from(overflow)
            || self.new_columns + added >= self.new_columns_allowed
    }

    /// Adds the field named by `self.line.path` to the line's overflow object.
    fn add_overflow(&mut self, value: &Value) -> Result<(), LineError> {
        if value.is_null() {
            return Ok(());
        }
        let json = &mut self.line.overflow;
        json.push(if json.is_empty() { b'{' } else { b',' });
        sonic_rs::to_writer(&mut *json, self.line.path.as_str())
            .and_then(|()| {
                json.push(b':');
                sonic_rs::to_writer(&mut *json, value)
            })
            .map_err(|error| {
                LineError::new(
                    DeadLetterKind::Internal,
                    format!("field '{}': writing JSON text: {error}", self.line.path),
                )
            })
    }

    /// Stores the line's overflow object (`{…` without its closing brace)
    /// in [`OVERFLOW_COLUMN`].
    fn store_overflow(&mut self, overflow: &[u8]) -> Result<(), LineError> {
        self.line.path.clear();
        self.line.path.push_str(OVERFLOW_COLUMN);
        let fields = format!(
            "fields past the stream's {}-column cap go to column '{OVERFLOW_COLUMN}'",
            self.max_columns
        );
        if let Some(&index) = self.by_name.get(OVERFLOW_COLUMN) {
            let data_type = self.column_type(index);
            if data_type != DataType::Utf8 {
                return Err(conflict(
                    OVERFLOW_COLUMN,
                    &data_type,
                    &format!("JSON text ({fields})"),
                ));
            }
            let set_by_line = self
                .line
                .marks
                .get(index)
                .is_some_and(|&(generation, _)| generation == self.line.generation);
            if set_by_line {
                return Err(LineError::new(
                    DeadLetterKind::TypeConflict,
                    format!("field '{OVERFLOW_COLUMN}': set by the line, but {fields}"),
                ));
            }
        }
        let start = self.line.text.len();
        // sonic-rs writes UTF-8; the lossy view never copies here.
        self.line.text.push_str(&String::from_utf8_lossy(overflow));
        self.line.text.push('}');
        let index = match self.by_name.get(OVERFLOW_COLUMN) {
            Some(&index) => index,
            None => {
                let index = self.columns.len() + self.line.added.len();
                self.by_name.insert(OVERFLOW_COLUMN.to_string(), index);
                self.line
                    .added
                    .push((OVERFLOW_COLUMN.to_string(), DataType::Utf8));
                index
            }
        };
        let cell = self.text_cell(index, start)?;
        self.line.cells.push((index, cell));
        Ok(())
    }

    /// Reads the field named by `self.line.path`, `depth` names deep.
    fn read_field(&mut self, value: &Value, depth: usize) -> Result<(), LineError> {
        if depth < MAX_FLATTEN_DEPTH {
            if let Some(object) = value.as_object() {
                return self.flatten(object, depth);
            }
        }
        if self.past_the_cap() {
            return self.add_overflow(value);
        }
        self.assign(Incoming::of(value))
    }

    /// Reads the fields of a nested object as `path.key` columns.
    fn flatten(&mut self, object: &Object, depth: usize) -> Result<(), LineError> {
        let path = self.line.path.as_str();
        if let Some(&index) = self.by_name.get(path).filter(|_| path != OVERFLOW_COLUMN) {
            // `{"a":{…}}` where `a` already holds values.
            let expected = self.column_type(index);
            return Err(conflict(&self.line.path, &expected, "an object"));
        }
        let length = self.line.path.len();
        for (key, child) in object.iter() {
            self.line.path.truncate(length);
            self.line.path.push('.');
            self.line.path.push_str(key);
            self.read_field(child, depth + 1)?;
        }
        self.line.path.truncate(length);
        Ok(())
    }

    /// Type-checks one value against its column (creating the column for a
    /// first typed value) and records it in the scratch.
    fn assign(&mut self, incoming: Incoming<'_>) -> Result<(), LineError> {
        let (index, data_type) = match self.by_name.get(self.line.path.as_str()) {
            Some(&index) => (index, self.column_type(index)),
            None => {
                let Some(data_type) = incoming.inferred_type() else {
                    // Null in an unknown field: no column yet.
                    return Ok(());
                };
                let index = self.columns.len() + self.line.added.len();
                let name = self.line.path.clone();
                self.by_name.insert(name.clone(), index);
                self.line.added.push((name, data_type.clone()));
                (index, data_type)
            }
        };
        let cell = match (incoming, &data_type) {
            (Incoming::Null, _) => Cell::Null,
            (Incoming::Bool(truth), DataType::Boolean) => Cell::Bool(truth),
            (Incoming::Int(integer), DataType::Int64) => Cell::Int(integer),
            (Incoming::Int(integer), DataType::Float64) => Cell::Float(integer as f64),
            (Incoming::Unsigned(unsigned), DataType::Float64) => Cell::Float(unsigned as f64),
            (Incoming::Float(float), DataType::Float64) => Cell::Float(float),
            (Incoming::Text(text), DataType::Utf8) => {
                let start = self.line.text.len();
                self.line.text.push_str(text);
                self.text_cell(index, start)?
            }
            (Incoming::Json(value), DataType::Utf8) => {
                self.line.json.clear();
                sonic_rs::to_writer(&mut self.line.json, value).map_err(|error| {
                    LineError::new(
                        DeadLetterKind::Internal,
                        format!("field '{}': writing JSON text: {error}", self.line.path),
                    )
                })?;
                let json = std::str::from_utf8(&self.line.json).map_err(|_| {
                    LineError::new(
                        DeadLetterKind::Internal,
                        format!("field '{}': JSON text is not UTF-8", self.line.path),
                    )
                })?;
                let start = self.line.text.len();
                self.line.text.push_str(json);
                self.text_cell(index, start)?
            }
            (incoming, expected) => {
                return Err(conflict(&self.line.path, expected, &incoming.describe()));
            }
        };
        let scratch = &mut self.line;
        if scratch.marks.len() <= index {
            scratch.marks.resize(index + 1, (0, 0));
        }
        let (generation, position) = scratch.marks[index];
        match scratch.cells.get_mut(position) {
            Some(earlier) if generation == scratch.generation => earlier.1 = cell,
            _ => {
                scratch.marks[index] = (scratch.generation, scratch.cells.len());
                scratch.cells.push((index, cell));
            }
        }
        Ok(())
    }

    /// The text cell from `start` to the end of the arena, if its column
    /// has room for it.
    fn text_cell(&self, index: usize, start: usize) -> Result<Cell, LineError> {
        let end = self.line.text.len();
        let held = self
            .columns
            .get(index)
            .map_or(0, |column| column.values.text_bytes());
        if held + (end - start) > TEXT_BYTES_LIMIT {
            return Err(LineError::new(
                DeadLetterKind::ChunkTooLarge,
                format!(
                    "field '{}': the column already holds {held} bytes of text in this chunk; cut smaller chunks",
                    self.line.path
                ),
            ));
        }
        Ok(Cell::Text { start, end })
    }

    /// The type of a column, including one the current line adds.
    fn column_type(&self, index: usize) -> DataType {
        match self.columns.get(index) {
            Some(column) => column.field.data_type().clone(),
            None => self
                .line
                .added
                .get(index - self.columns.len())
                .map_or(DataType::Null, |(_, data_type)| data_type.clone()),
        }
    }

    /// Moves a good line from the scratch into the builders.
    fn commit_line(&mut self, timestamp: i64) {
        let row = self.timestamps.len();
        if !self.line.added.is_empty() {
            self.new_columns += self.line.added.len();
            let added = std::mem::take(&mut self.line.added);
            for (name, data_type) in &added {
                self.push_column(name.clone(), data_type.clone());
            }
            // Keep the buffer's capacity for the next line.
            self.line.added = added;
            self.line.added.clear();
            self.schema = self.build_schema();
        }
        for &(index, cell) in &self.line.cells {
            if let Some(column) = self.columns.get_mut(index) {
                column.values.pad_to(row);
                column.values.push(cell, &self.line.text);
                column.filled |= !matches!(cell, Cell::Null);
            }
        }
        self.timestamps.push(timestamp);
    }

    /// Appends a (nullable) column; earlier rows of the batch read null.
    fn push_column(&mut self, name: String, data_type: DataType) {
        self.by_name.insert(name.clone(), self.columns.len());
        let values = ColumnValues::for_type(&data_type);
        self.columns.push(Column {
            field: Arc::new(Field::new(name, data_type, true)),
            values,
            filled: false,
        });
    }

    fn build_schema(&self) -> SchemaRef {
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        fields.push(Arc::new(timestamp_field()));
        fields.extend(self.columns.iter().map(|column| column.field.clone()));
        Arc::new(Schema::new_with_metadata(fields, self.metadata.clone()))
    }

    fn finish_batch(&mut self) -> Result<RecordBatch, String> {
        let timestamps = std::mem::take(&mut self.timestamps);
        let rows = timestamps.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 1);
        arrays.push(Arc::new(
            TimestampNanosecondArray::from(timestamps).with_timezone("UTC"),
        ));
        let mut fields = Vec::with_capacity(self.columns.len() + 1);
        fields.push(Arc::new(timestamp_field()));
        // A column without a value in this batch is left out of it: a wide
        // stream would otherwise cost 8 bytes of nulls per row and column.
        for column in &mut self.columns {
            if rows == 0 || column.filled {
                fields.push(column.field.clone());
                arrays.push(column.values.finish(rows));
            } else {
                column.values.discard();
            }
            column.filled = false;
        }
        let schema = if fields.len() == self.schema.fields().len() {
            self.schema.clone()
        } else {
            Arc::new(Schema::new_with_metadata(fields, self.metadata.clone()))
        };
        RecordBatch::try_new(schema, arrays).map_err(|error| error.to_string())
    }
}

/// The `timestamp` column: UTC nanoseconds, never null.
fn timestamp_field() -> Field {
    Field::new(
        column::TIMESTAMP,
        DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        false,
    )
}

/// The event time from the first present (non-null) of
/// [`TIMESTAMP_SOURCES`], with the name of the field it came from.
fn read_timestamp(object: &Object) -> Result<(i64, &'static str), LineError> {
    let mut best: Option<(usize, &Value)> = None;
    for (key, value) in object.iter() {
        let Some(rank) = TIMESTAMP_SOURCES.iter().position(|source| *source == key) else {
            continue;
        };
        // `<=`: of a repeated field, the last one wins, as for other fields.
        if !value.is_null() && best.is_none_or(|(best_rank, _)| rank <= best_rank) {
            best = Some((rank, value));
        }
    }
    let Some((rank, value)) = best else {
        return Err(LineError::new(
            DeadLetterKind::MissingTimestamp,
            format!(
                "missing timestamp (looked for {})",
                TIMESTAMP_SOURCES.join(", ")
            ),
        ));
    };
    let source = TIMESTAMP_SOURCES[rank];
    let incoming = Incoming::of(value);
    let outcome = match incoming {
        Incoming::Text(text) => timestamp_from_text(text, TimestampUnit::Auto),
        Incoming::Int(integer) => timestamp_from_integer(Some(integer), TimestampUnit::Auto),
        Incoming::Unsigned(_) => Err(TimestampProblem::OutOfRange),
        Incoming::Float(float) => timestamp_from_float(float, TimestampUnit::Auto),
        Incoming::Null | Incoming::Bool(_) | Incoming::Json(_) => Err(TimestampProblem::Unparsable),
    };
    let nanos = outcome.map_err(|problem| {
        let why = match problem {
            TimestampProblem::Unparsable => "expected RFC 3339 or an epoch number",
            TimestampProblem::OutOfRange => "out of range (before 1970 or after 2262)",
        };
        LineError::new(
            DeadLetterKind::InvalidTimestamp,
            format!(
                "field '{source}': unusable timestamp, {why}, got {}",
                incoming.describe()
            ),
        )
    })?;
    Ok((nanos, source))
}

/// `field 'status': expected Int64, got string "oops"`.
fn conflict(path: &str, expected: &DataType, got: &str) -> LineError {
    LineError::new(
        DeadLetterKind::TypeConflict,
        format!("field '{path}': expected {expected}, got {got}"),
    )
}

/// Refuses lines nested deeper than [`MAX_NESTING_DEPTH`] before sonic-rs
/// parses (and later drops) them recursively, as the inference decoder
/// does. A line with no more opening brackets than that is settled at once.
fn check_nesting(line: &[u8]) -> Result<(), LineError> {
    if memchr::memchr2_iter(b'{', b'[', line).count() <= MAX_NESTING_DEPTH {
        return Ok(());
    }
    crate::decode::scan_nesting_depth(line)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
    use proptest::prelude::*;

    use super::*;

    const T0: &str = "2026-01-01T00:00:00Z";
    const T0_NANOS: i64 = 1_767_225_600_000_000_000;

    fn chunk_at(first_line: u64, text: &[u8]) -> Chunk {
        Chunk {
            source: Arc::from("gateway.jsonl"),
            first_line,
            first_offset: 0,
            data: text.to_vec(),
            skipped_bytes: 0,
        }
    }

    fn decode(decoder: &mut GenericDecoder, text: &str) -> DecodedBatch {
        decoder.decode(&chunk_at(1, text.as_bytes()))
    }

    fn fresh(text: &str) -> DecodedBatch {
        decode(&mut GenericDecoder::new("gateway", None), text)
    }

    fn data_type(batch: &RecordBatch, name: &str) -> DataType {
        batch
            .schema()
            .field_with_name(name)
            .map(|field| field.data_type().clone())
            .unwrap_or_else(|_| panic!("no column {name} in {:?}", batch.schema()))
    }

    fn names(schema: &SchemaRef) -> Vec<&str> {
        schema
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect()
    }

    fn int64(batch: &RecordBatch, name: &str) -> Vec<Option<i64>> {
        let array = batch.column_by_name(name).unwrap();
        array.as_primitive::<Int64Type>().iter().collect()
    }

    fn float64(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
        let array = batch.column_by_name(name).unwrap();
        array.as_primitive::<Float64Type>().iter().collect()
    }

    fn utf8(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let array = batch.column_by_name(name).unwrap();
        array
            .as_string::<i32>()
            .iter()
            .map(|text| text.map(str::to_string))
            .collect()
    }

    fn reasons(decoded: &DecodedBatch) -> Vec<&str> {
        decoded
            .dead_letters
            .iter()
            .map(|dead_letter| dead_letter.reason.as_str())
            .collect()
    }

    #[test]
    fn infers_each_type() {
        let decoded = fresh(&format!(
            r#"{{"timestamp":"{T0}","ok":true,"status":200,"latency":12.5,"route":"/v1/chat","tags":["a", 1],"gone":null}}"#
        ));
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        let batch = &decoded.batch;
        assert_eq!(
            names(&batch.schema()),
            ["timestamp", "ok", "status", "latency", "route", "tags"]
        );
        assert_eq!(
            data_type(batch, "timestamp"),
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        assert!(!batch.schema().field(0).is_nullable());
        assert_eq!(data_type(batch, "ok"), DataType::Boolean);
        assert_eq!(data_type(batch, "status"), DataType::Int64);
        assert_eq!(data_type(batch, "latency"), DataType::Float64);
        assert_eq!(data_type(batch, "route"), DataType::Utf8);
        assert_eq!(data_type(batch, "tags"), DataType::Utf8);
        assert!(batch.schema().fields()[1..]
            .iter()
            .all(|field| field.is_nullable()));
        let timestamps = batch.column(0).as_primitive::<TimestampNanosecondType>();
        assert_eq!(timestamps.value(0), T0_NANOS);
        assert!(batch.column_by_name("ok").unwrap().as_boolean().value(0));
        assert_eq!(int64(batch, "status"), [Some(200)]);
        assert_eq!(float64(batch, "latency"), [Some(12.5)]);
        assert_eq!(utf8(batch, "route"), [Some("/v1/chat".to_string())]);
        // Arrays are kept as JSON text.
        assert_eq!(utf8(batch, "tags"), [Some(r#"["a",1]"#.to_string())]);
    }

    #[test]
    fn timestamp_sources_and_forms() {
        let decoded = fresh(concat!(
            r#"{"@timestamp":"2026-01-01T00:00:00Z","a":1}"#,
            "\n",
            r#"{"time":1767225600,"a":2}"#,
            "\n",
            r#"{"ts":1767225600.5,"a":3}"#,
            "\n",
            // `timestamp` wins over `ts`, which then is an ordinary column.
            r#"{"ts":"x","timestamp":"2026-01-01T00:00:00Z","a":4}"#,
            "\n",
            // A null source is absent: `time` is used.
            r#"{"timestamp":null,"time":"2026-01-01T00:00:00Z","a":5}"#,
        ));
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        let batch = &decoded.batch;
        assert_eq!(names(&batch.schema()), ["timestamp", "a", "ts"]);
        let timestamps: Vec<_> = batch
            .column(0)
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .to_vec();
        assert_eq!(
            timestamps,
            [
                T0_NANOS,
                T0_NANOS,
                T0_NANOS + 500_000_000,
                T0_NANOS,
                T0_NANOS
            ]
        );
        assert_eq!(
            utf8(batch, "ts"),
            [None, None, None, Some("x".to_string()), None]
        );
    }

    #[test]
    fn flattens_nested_objects_with_dots() {
        let decoded = fresh(&format!(
            r#"{{"ts":"{T0}","http":{{"status":200,"request":{{"method":"GET"}}}},"empty":{{}}}}"#
        ));
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        let batch = &decoded.batch;
        assert_eq!(
            names(&batch.schema()),
            ["timestamp", "http.status", "http.request.method"]
        );
        assert_eq!(int64(batch, "http.status"), [Some(200)]);
        assert_eq!(
            utf8(batch, "http.request.method"),
            [Some("GET".to_string())]
        );
    }

    #[test]
    fn objects_past_the_flatten_depth_are_json_text() {
        // Nine names deep: `a.b.c.d.e.f.g.h` holds `{"i":1}` as text.
        let decoded = fresh(&format!(
            r#"{{"ts":"{T0}","a":{{"b":{{"c":{{"d":{{"e":{{"f":{{"g":{{"h":{{"i":1}}}}}}}}}}}}}}}}}}"#
        ));
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        assert_eq!(
            utf8(&decoded.batch, "a.b.c.d.e.f.g.h"),
            [Some(r#"{"i":1}"#.to_string())]
        );
    }

    #[test]
    fn schema_evolves_across_chunks() {
        let mut decoder = GenericDecoder::new("gateway", None);
        let first = decode(
            &mut decoder,
            &format!("{{\"ts\":\"{T0}\",\"a\":1}}\n{{\"ts\":\"{T0}\",\"a\":2,\"c\":null}}\n"),
        );
        // `c` was only ever null: no column.
        assert_eq!(names(&first.batch.schema()), ["timestamp", "a"]);
        let second = decode(
            &mut decoder,
            &format!(
                "{{\"ts\":\"{T0}\",\"b\":\"new\"}}\n{{\"ts\":\"{T0}\",\"a\":3}}\n{{\"ts\":\"{T0}\",\"c\":true}}\n"
            ),
        );
        assert!(second.dead_letters.is_empty(), "{:?}", second.dead_letters);
        let batch = &second.batch;
        assert_eq!(names(&batch.schema()), ["timestamp", "a", "b", "c"]);
        assert_eq!(decoder.schema(), batch.schema());
        // Columns from the first chunk are present; rows lacking one are null.
        assert_eq!(int64(batch, "a"), [None, Some(3), None]);
        assert_eq!(utf8(batch, "b"), [Some("new".to_string()), None, None]);
        let c = batch.column_by_name("c").unwrap().as_boolean();
        assert_eq!(c.iter().collect::<Vec<_>>(), [None, None, Some(true)]);
        // The decoder can start again from that schema, as the store keeps it.
        let mut restarted = GenericDecoder::new("gateway", Some(decoder.schema()));
        assert_eq!(restarted.schema(), decoder.schema());
        let third = decode(&mut restarted, &format!("{{\"ts\":\"{T0}\",\"a\":\"x\"}}"));
        assert_eq!(
            reasons(&third),
            [r#"field 'a': expected Int64, got string "x""#]
        );
    }

    #[test]
    fn integers_widen_into_float_columns() {
        let decoded = fresh(&format!(
            "{{\"ts\":\"{T0}\",\"latency\":1.5}}\n{{\"ts\":\"{T0}\",\"latency\":2}}\n{{\"ts\":\"{T0}\",\"big\":18446744073709551615}}\n"
        ));
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        assert_eq!(
            float64(&decoded.batch, "latency"),
            [Some(1.5), Some(2.0), None]
        );
        // Beyond i64: Float64.
        assert_eq!(data_type(&decoded.batch, "big"), DataType::Float64);
        // Known Float64 columns widen too.
        let known = Arc::new(Schema::new(vec![Field::new(
            "score",
            DataType::Float64,
            false,
        )]));
        let mut decoder = GenericDecoder::new("features", Some(known));
        let decoded = decode(&mut decoder, &format!("{{\"ts\":\"{T0}\",\"score\":7}}"));
        assert_eq!(float64(&decoded.batch, "score"), [Some(7.0)]);
    }

    #[test]
    fn type_conflicts_refuse_the_whole_line() {
        let decoded = fresh(&format!(
            concat!(
                "{{\"ts\":\"{t}\",\"status\":200,\"route\":\"/a\"}}\n",
                "{{\"ts\":\"{t}\",\"status\":\"oops\",\"route\":\"/b\",\"extra\":1}}\n",
                "{{\"ts\":\"{t}\",\"status\":1.5}}\n",
                "{{\"ts\":\"{t}\",\"route\":{{\"path\":\"/c\"}}}}\n",
                "{{\"ts\":\"{t}\",\"route\":[1]}}\n",
                "{{\"ts\":\"{t}\",\"status\":201,\"route\":\"/d\"}}\n",
            ),
            t = T0
        ));
        assert_eq!(
            reasons(&decoded),
            [
                r#"field 'status': expected Int64, got string "oops""#,
                "field 'status': expected Int64, got number 1.5",
                "field 'route': expected Utf8, got an object",
            ]
        );
        assert_eq!(
            decoded
                .dead_letters
                .iter()
                .map(|dead_letter| dead_letter.line)
                .collect::<Vec<_>>(),
            [2, 3, 4]
        );
        assert_eq!(
            decoded
                .counters
                .dead_letters_of(DeadLetterKind::TypeConflict),
            3
        );
        assert_eq!(DeadLetterKind::TypeConflict.as_str(), "type_conflict");
        let batch = &decoded.batch;
        // The refused line's new field added no column; arrays are Utf8.
        assert_eq!(names(&batch.schema()), ["timestamp", "status", "route"]);
        assert_eq!(int64(batch, "status"), [Some(200), None, Some(201)]);
        assert_eq!(
            utf8(batch, "route"),
            [
                Some("/a".to_string()),
                Some("[1]".to_string()),
                Some("/d".to_string())
            ]
        );
    }

    #[test]
    fn a_conflict_inside_a_new_line_adds_nothing() {
        // Repeated keys: the second value conflicts with the column the
        // first one would have created.
        let mut decoder = GenericDecoder::new("app", None);
        let decoded = decode(
            &mut decoder,
            &format!("{{\"ts\":\"{T0}\",\"fresh\":1,\"fresh\":\"x\"}}\n{{\"ts\":\"{T0}\",\"fresh\":\"y\"}}"),
        );
        assert_eq!(
            reasons(&decoded),
            [r#"field 'fresh': expected Int64, got string "x""#]
        );
        assert_eq!(data_type(&decoded.batch, "fresh"), DataType::Utf8);
        assert_eq!(utf8(&decoded.batch, "fresh"), [Some("y".to_string())]);
    }

    #[test]
    fn missing_and_bad_timestamps_are_dead_letters() {
        let decoded = fresh(&format!(
            concat!(
                "{{\"level\":\"error\"}}\n",
                "{{\"timestamp\":null,\"level\":\"error\"}}\n",
                "{{\"ts\":\"yesterday\"}}\n",
                "{{\"time\":-5}}\n",
                "{{\"ts\":\"{t}\",\"level\":\"ok\"}}\n",
            ),
            t = T0
        ));
        assert_eq!(
            reasons(&decoded),
            [
                "missing timestamp (looked for timestamp, @timestamp, time, ts)",
                "missing timestamp (looked for timestamp, @timestamp, time, ts)",
                r#"field 'ts': unusable timestamp, expected RFC 3339 or an epoch number, got string "yesterday""#,
                "field 'time': unusable timestamp, out of range (before 1970 or after 2262), got number -5",
            ]
        );
        assert_eq!(
            decoded
                .counters
                .dead_letters_of(DeadLetterKind::MissingTimestamp),
            2
        );
        assert_eq!(
            decoded
                .counters
                .dead_letters_of(DeadLetterKind::InvalidTimestamp),
            2
        );
        // The refused lines' fields made no column before the good line.
        assert_eq!(utf8(&decoded.batch, "level"), [Some("ok".to_string())]);
    }

    #[test]
    fn bad_lines_and_positions() {
        let text = format!(
            "{{\"ts\":\"{T0}\",\"a\":1}}\r\n\n   \n[1,2]\n{{oops\n\u{feff}{{}}\n{}\n{{\"ts\":\"{T0}\",\"a\":2}}",
            "[".repeat(100)
        );
        let mut decoder = GenericDecoder::new("app", None);
        let decoded = decoder.decode(&chunk_at(10, text.as_bytes()));
        assert_eq!(decoded.lines, 8);
        assert_eq!(decoded.counters.blank_lines, 2);
        assert_eq!(decoded.counters.events, 2);
        assert_eq!(int64(&decoded.batch, "a"), [Some(1), Some(2)]);
        let kinds: Vec<_> = decoded.counters.dead_letter_counts().collect();
        assert_eq!(
            kinds,
            [
                (DeadLetterKind::InvalidJson, 2),
                (DeadLetterKind::NotAnObject, 1),
                (DeadLetterKind::TooDeep, 1),
            ]
        );
        let lines: Vec<_> = decoded.dead_letters.iter().map(|d| d.line).collect();
        assert_eq!(lines, [13, 14, 15, 16]);
        assert_eq!(
            decoded.dead_letters[0].reason,
            "expected a JSON object, got an array"
        );
        let offset = text.find("[1,2]").unwrap() as u64;
        assert_eq!(decoded.dead_letters[0].offset, offset);
        assert_eq!(decoder.counters().events, 2);
    }

    #[test]
    fn known_schema_is_kept_in_order() {
        let known = Arc::new(Schema::new(vec![
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("user", DataType::Utf8, true),
            Field::new("day", DataType::Date32, true),
        ]));
        let mut decoder = GenericDecoder::new("features", Some(known));
        assert_eq!(names(&decoder.schema()), ["timestamp", "user", "day"]);
        let decoded = decode(
            &mut decoder,
            &format!("{{\"ts\":\"{T0}\",\"n\":1}}\n{{\"ts\":\"{T0}\",\"day\":3}}\n"),
        );
        assert_eq!(names(&decoder.schema()), ["timestamp", "user", "day", "n"]);
        // Known columns without a value in the chunk are left out of its batch.
        assert_eq!(names(&decoded.batch.schema()), ["timestamp", "n"]);
        assert_eq!(
            reasons(&decoded),
            ["field 'day': expected Date32, got number 3"]
        );
        assert_eq!(decoded.batch.num_rows(), 1);
        assert!(decoded.batch.column_by_name("day").is_none());
    }

    #[test]
    fn issue_16_fields_past_the_column_cap_go_to_attributes_as_json() {
        let mut decoder = GenericDecoder::new("gateway", None).with_max_columns(2);
        let text = format!(
            concat!(
                r#"{{"ts":"{t}","a":1,"b":"x","c":true,"d":{{"e":2.5,"f":null}}}}"#,
                "\n",
                r#"{{"ts":"{t}","a":2,"g":[1,2],"h":"q\"uote"}}"#,
                "\n",
                r#"{{"ts":"{t}","b":"y"}}"#,
                "\n",
            ),
            t = T0
        );
        let decoded = decode(&mut decoder, &text);
        assert!(
            decoded.dead_letters.is_empty(),
            "{:?}",
            decoded.dead_letters
        );
        assert_eq!(
            names(&decoded.batch.schema()),
            ["timestamp", "a", "b", "attributes"]
        );
        assert_eq!(int64(&decoded.batch, "a"), [Some(1), Some(2), None]);
        let attributes = utf8(&decoded.batch, "attributes");
        let parsed: Vec<Option<serde_json::Value>> = attributes
            .iter()
            .map(|text| {
                text.as_ref()
                    .map(|text| serde_json::from_str(text).unwrap())
            })
            .collect();
        assert_eq!(
            parsed,
            [
                Some(serde_json::json!({"c": true, "d.e": 2.5})),
                Some(serde_json::json!({"g": [1, 2], "h": "q\"uote"})),
                None,
            ]
        );
        // Later chunks keep the same columns: the schema cannot grow, and a
        // batch holds only the columns with a value.
        let more = decode(&mut decoder, &format!("{{\"ts\":\"{T0}\",\"z\":1}}\n"));
        assert_eq!(
            names(&decoder.schema()),
            ["timestamp", "a", "b", "attributes"]
        );
        assert_eq!(names(&more.batch.schema()), ["timestamp", "attributes"]);
        assert_eq!(
            utf8(&more.batch, "attributes"),
            [Some(r#"{"z":1}"#.to_string())]
        );
    }

    #[test]
    fn issue_16_overflow_that_cannot_be_stored_refuses_the_line() {
        // The line sets `attributes` itself and overflows too.
        let mut decoder = GenericDecoder::new("gateway", None).with_max_columns(1);
        let text = format!(
            "{{\"ts\":\"{T0}\",\"a\":1,\"b\":2}}\n{{\"ts\":\"{T0}\",\"attributes\":\"mine\",\"c\":3}}\n"
        );
        let decoded = decode(&mut decoder, &text);
        assert_eq!(decoded.batch.num_rows(), 1);
        assert_eq!(decoded.dead_letters.len(), 1);
        assert_eq!(decoded.dead_letters[0].line, 2);
        assert!(decoded.dead_letters[0].reason.contains("set by the line"));
        // A known `attributes` column of another type cannot take JSON text.
        let known = Arc::new(Schema::new(vec![Field::new(
            "attributes",
            DataType::Int64,
            true,
        )]));
        let mut decoder = GenericDecoder::new("gateway", Some(known)).with_max_columns(1);
        let decoded = decode(&mut decoder, &format!("{{\"ts\":\"{T0}\",\"new\":1}}\n"));
        assert_eq!(decoded.dead_letters.len(), 1);
        assert_eq!(
            decoded.dead_letters[0].reason,
            "field 'attributes': expected Int64, got JSON text (fields past the stream's 1-column cap go to column 'attributes')"
        );
        assert_eq!(
            decoded
                .counters
                .dead_letters_of(DeadLetterKind::TypeConflict),
            1
        );
    }

    #[test]
    fn issue_16_ever_new_field_names_keep_the_schema_capped() {
        let mut decoder = GenericDecoder::new("gateway", None);
        let mut total_rows = 0;
        for chunk_index in 0..20 {
            let text: String = (0..5_000)
                .map(|row| {
                    format!(
                        "{{\"ts\":\"{T0}\",\"f{}\":{row}}}\n",
                        chunk_index * 5_000 + row
                    )
                })
                .collect();
            let decoded = decode(&mut decoder, &text);
            assert!(decoded.dead_letters.is_empty());
            let rows = decoded.batch.num_rows();
            total_rows += rows;
            // No batch is padded with more than MAX_NEW_COLUMN_CELLS nulls
            // (beside timestamp and attributes).
            let sparse = decoded.batch.num_columns().saturating_sub(2);
            assert!(sparse * rows <= MAX_NEW_COLUMN_CELLS, "{sparse} columns");
        }
        assert_eq!(total_rows, 100_000);
        // timestamp, the capped columns, attributes.
        assert_eq!(
            decoder.schema().fields().len(),
            DEFAULT_MAX_STREAM_COLUMNS + 2
        );
        assert_eq!(decoder.by_name.len(), DEFAULT_MAX_STREAM_COLUMNS + 1);
    }

    #[test]
    fn an_empty_chunk_has_the_current_schema() {
        let mut decoder = GenericDecoder::new("app", None);
        decode(&mut decoder, &format!("{{\"ts\":\"{T0}\",\"a\":1}}"));
        let decoded = decode(&mut decoder, "");
        assert_eq!(decoded.batch.num_rows(), 0);
        assert_eq!(names(&decoded.batch.schema()), ["timestamp", "a"]);
    }

    /// Small JSON objects over a few keys, so that types collide often.
    fn arbitrary_line() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            any::<bool>().prop_map(|truth| truth.to_string()),
            any::<i64>().prop_map(|integer| integer.to_string()),
            (-1e6f64..1e6).prop_map(|float| format!("{float:?}")),
            "[a-z\"\\\\é]{0,6}".prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
            Just("[1,{\"x\":2}]".to_string()),
        ];
        let value = leaf.prop_recursive(3, 12, 3, |inner| {
            prop::collection::vec(("[abt]", inner), 0..3).prop_map(|pairs| {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("\"{key}\":{value}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            })
        });
        let timestamp = prop_oneof![
            Just(String::new()),
            Just(format!("\"ts\":\"{T0}\",")),
            Just("\"time\":1767225600,".to_string()),
            Just("\"timestamp\":\"soon\",".to_string()),
        ];
        (
            timestamp,
            prop::collection::vec(("[a-d]|a\\.b|timestamp", value), 0..5),
        )
            .prop_map(|(timestamp, pairs)| {
                let fields: Vec<String> = pairs
                    .iter()
                    .map(|(key, value)| format!("\"{key}\":{value}"))
                    .collect();
                format!("{{{timestamp}{}}}", fields.join(","))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
            let mut decoder = GenericDecoder::new("fuzz", None);
            let decoded = decoder.decode(&chunk_at(1, &data));
            let accounted = decoded.counters.events
                + decoded.counters.blank_lines
                + decoded.dead_letters.len() as u64;
            prop_assert_eq!(accounted, decoded.lines);
            prop_assert_eq!(decoded.batch.num_rows() as u64, decoded.counters.events);
        }

        #[test]
        fn every_line_is_a_row_or_a_dead_letter(
            chunks in prop::collection::vec(prop::collection::vec(arbitrary_line(), 0..8), 1..4),
        ) {
            let mut decoder = GenericDecoder::new("fuzz", None);
            for lines in chunks {
                let text = lines.join("\n");
                let decoded = decoder.decode(&chunk_at(1, text.as_bytes()));
                prop_assert_eq!(decoded.counters.blank_lines, 0);
                prop_assert_eq!(
                    decoded.batch.num_rows() + decoded.dead_letters.len(),
                    lines.len()
                );
                // The batch has the schema's fields that hold a value, in order.
                let schema = decoder.schema();
                let mut whole = schema.fields().iter();
                for field in decoded.batch.schema().fields() {
                    prop_assert!(whole.any(|known| known == field), "{field:?} out of order");
                }
                for (index, field) in schema.fields().iter().enumerate().skip(1) {
                    let held = decoded.batch.column_by_name(field.name());
                    let has_values = held.is_some_and(|column| column.null_count() < column.len());
                    prop_assert_eq!(held.is_some(), has_values || decoded.batch.num_rows() == 0, "column {}", index);
                }
                // The schema only grows and never repeats a name.
                let schema = decoder.schema();
                let mut seen = std::collections::HashSet::new();
                prop_assert!(schema.fields().iter().all(|field| seen.insert(field.name().clone())));
                // A line is refused only with a reason the spec allows.
                for dead_letter in &decoded.dead_letters {
                    let reason = &dead_letter.reason;
                    prop_assert!(
                        reason.contains("timestamp") || reason.contains(": expected "),
                        "unexpected reason {}", reason
                    );
                }
            }
        }
    }
}
