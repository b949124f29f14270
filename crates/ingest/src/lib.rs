//! # inferwatch-ingest
//!
//! Getting model-server logs into inferwatch: reading them, making sense of
//! their many shapes, and handing the rest of the system Arrow batches of
//! the canonical inference event.
//!
//! ```text
//!  sources ──► Chunk ──► decode + map ──► enrich ──► derive ──► RecordBatch
//!  file, stdin           JSON lines →     lookup     confidence,     │
//!  (Source)              canonical        tables     entropy,        ├─► store
//!                        columns                     margin          └─► detect
//!                              └──► DeadLetter (bad lines, with position and reason)
//! ```
//!
//! This crate sits at the very start of the flow and depends only on
//! `inferwatch-core`, which owns the canonical schema
//! ([`inferwatch_core::canonical_schema`]).
//!
//! ## Sources
//!
//! A [`Source`] ([`FileSource`] for files, globs, rotation and follow mode;
//! [`ReaderSource`] for stdin or any reader) cuts its input into [`Chunk`]s
//! of whole lines and reports a [`SourcePosition`] to commit once a chunk has
//! been handled, so that a restart resumes exactly after the last handled
//! line (see [`Source`] for the polling and commit protocol). A line longer
//! than [`MAX_LINE_BYTES`] is not held: the source keeps its first kilobyte
//! for the dead letter and skips the rest as it reads
//! ([`Chunk::skipped_bytes`]), so no input can grow a source's memory.
//!
//! ## Decoding and mapping
//!
//! A [`Decoder`] turns a chunk of newline-delimited JSON into one
//! [`DecodedBatch`]: a [`RecordBatch`](arrow::array::RecordBatch) with
//! [`Decoder::schema`], the refused lines as [`DeadLetter`]s, and counters.
//! It is pure, synchronous, never fails and never panics: a bad line (invalid
//! JSON or UTF-8, a value of the wrong type, a missing or unusable timestamp,
//! nesting deeper than [`MAX_NESTING_DEPTH`], a line longer than
//! [`MAX_LINE_BYTES`], anything but an object) becomes a dead letter naming
//! the source, line, byte offset and precise reason, and the lines around it
//! are kept in order. Blank lines are skipped and counted; `\r\n` endings, a
//! byte-order mark and a last line without a newline are fine. Keep one
//! decoder per thread: `clone()` one, they share the [`Mapping`].
//!
//! Which input key fills which column is the [`Mapping`]'s business. The
//! built-in one ([`Mapping::builtin`]) understands the canonical column names,
//! OpenTelemetry GenAI attributes (`gen_ai.request.model`,
//! `gen_ai.usage.input_tokens`, `error.type`…, flat, nested or inside an
//! `attributes` object) and flat FastAPI-style logs (`ts`,
//! `input_payload_hash`, `output_logits`…). A YAML file adds rules on top
//! ([`Mapping::from_yaml_path`]; the full reference is on [`Mapping`], and
//! `examples/mapping.yaml` is a commented example): nested source paths,
//! types and timestamp units, SHA-256 hashing of sensitive fields, dropped
//! fields, defaults. Values are coerced to the column type (numbers given as
//! strings, booleans, epoch timestamps in any unit); every field no rule
//! claims is kept in the `attributes` map as text.
//!
//! The decoder is the hot path. Keys are looked up in a precompiled trie,
//! each mapped value is parsed straight into what its column needs, unmapped
//! values are kept as raw slices, and a reusable per-line scratch record is
//! appended to typed column buffers only once the whole line is known good.
//! Flat lines (scalars and arrays of numbers, no escapes: what model servers
//! write) are read by a word-at-a-time scanner that checks each key against
//! the key at the same position in the previous line; anything else, and
//! every error message, goes through sonic-rs's serde deserializer with
//! hand-written visitors. Nothing is allocated per event on the common path.
//!
//! A consumer that reads only a few columns decodes with
//! [`Mapping::projected`]: the schema stays the same, but only the requested
//! columns (and what they are derived from) are filled; the trie is rewritten
//! so that every other key is skipped without being converted, and unmapped
//! keys are not copied into `attributes` unless it is requested. Invalid
//! JSON still refuses a line, but a projected decoder does not validate
//! fields it does not read.
//!
//! ## Generic streams
//!
//! Logs with no fixed schema (gateway, feature store, application errors)
//! go through a [`GenericDecoder`] instead: it keeps every field, flattening
//! nested objects with dots, infers column types from the JSON values and
//! grows the schema only by adding nullable columns. A value whose type
//! differs from its column's refuses its line as a `type_conflict` dead
//! letter. A stream gains at most [`DEFAULT_MAX_STREAM_COLUMNS`] columns
//! (configurable); fields past the cap are kept as JSON text in its
//! `attributes` column.
//!
//! ## Enrichment and derived columns
//!
//! [`Enrichment`] joins lookup tables ([`LookupTable`]: CSV or JSON, named in
//! the mapping's `enrich:` section or built in code) onto events by a key
//! column: canonical columns are filled only where the event left them null,
//! other looked-up columns are appended to the schema as Utf8 dictionaries.
//! Then `confidence`, `predicted_class`, `margin` and `entropy` are derived
//! from `probabilities`, or from the softmax of `logits`
//! ([`summarise_probabilities`], [`summarise_logits`]), unless the event gave
//! them.
//!
//! ## Dead letters
//!
//! [`DeadLetterWriter`] appends dead letters to a JSON Lines file;
//! [`DecodeCounters`] counts lines, events and dead letters per
//! [`DeadLetterKind`] for metrics. [`batch_to_json_rows`] renders decoded rows
//! as JSON (for `inferwatch map` and the golden tests).
//!
//! ## Example
//!
//! ```
//! use std::path::Path;
//! use std::sync::Arc;
//! use inferwatch_ingest::{batch_to_json_rows, Chunk, Decoder, Mapping};
//!
//! let mapping = Mapping::from_yaml_str(
//!     Path::new("mapping.yaml"),
//!     "fields:\n  - from: response.usage.prompt_tokens\n    to: input_tokens\n",
//! )?;
//! let mut decoder = Decoder::new(Arc::new(mapping));
//! let lines = concat!(
//!     r#"{"ts":"2026-01-01T00:00:00Z","model_id":"fraud","output_logits":[2.0,0.5],"response":{"usage":{"prompt_tokens":"12"}}}"#,
//!     "\n",
//!     r#"{"ts":"2026-01-01T00:00:01Z","latency_ms":"fast"}"#,
//!     "\n",
//! );
//! let decoded = decoder.decode(&Chunk {
//!     source: Arc::from("app.log"),
//!     first_line: 1,
//!     first_offset: 0,
//!     data: lines.as_bytes().to_vec(),
//!     skipped_bytes: 0,
//! });
//! let rows = batch_to_json_rows(&decoded.batch);
//! assert_eq!(rows[0]["model_id"], "fraud");
//! assert_eq!(rows[0]["input_tokens"], 12);
//! assert_eq!(rows[0]["predicted_class"], 0);
//! assert!(rows[0]["confidence"].as_f64().unwrap() > 0.8);
//! assert_eq!(decoded.dead_letters[0].line, 2);
//! assert_eq!(
//!     decoded.dead_letters[0].reason,
//!     r#"field latency_ms: expected a number, got string "fast""#
//! );
//! # Ok::<(), inferwatch_ingest::IngestError>(())
//! ```
//!
//! Errors of configuration and I/O (never of records) are [`IngestError`]s;
//! mapping errors name the file, line and column.

mod checkpoint;
mod chunk;
mod coerce;
mod columns;
mod dead_letter;
mod decode;
mod derive;
mod enrich;
mod error;
mod event_time;
mod flat;
mod generic;
mod limits;
mod mapping;
mod record;
mod render;
mod source;
mod walk;

pub use checkpoint::{Checkpoint, FileCheckpoint, SinkMark, CHECKPOINT_VERSION};
pub use chunk::{Chunk, ChunkBuffers};
pub use coerce::TimestampUnit;
pub use dead_letter::{
    read_dead_letters, DeadLetter, DeadLetterKind, DeadLetterWriter, DecodeCounters,
    DEAD_LETTER_RAW_LIMIT,
};
pub use decode::{
    check_json_depth, DecodedBatch, Decoder, MAX_CHUNK_BYTES, MAX_LINE_BYTES, MAX_NESTING_DEPTH,
};
pub use derive::{summarise_logits, summarise_probabilities, ClassSummary};
pub use enrich::{Enrichment, LookupTable};
pub use error::IngestError;
pub use event_time::{
    EventTimeGuard, GuardRelease, InputTimeReport, InputsKind, HOLD_LIMIT, HOLD_PATIENCE,
};
pub use generic::{
    GenericDecoder, DEFAULT_MAX_STREAM_COLUMNS, MAX_FLATTEN_DEPTH, MAX_NEW_COLUMN_CELLS,
};
pub use limits::ValueLimits;
pub use mapping::Mapping;
pub use render::{batch_to_json_rows, row_to_json};
pub use source::{
    FileSource, FileSourceOptions, ReaderSource, Source, SourceChunk, SourcePoll, SourcePosition,
    StdinSource, DEFAULT_CHUNK_BYTES, DEFAULT_POLL_INTERVAL,
};
