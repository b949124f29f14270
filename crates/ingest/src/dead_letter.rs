//! Dead letters: records that could not be decoded, kept with their source
//! position and a precise reason, so that nothing is lost silently and a
//! user can fix the mapping and replay exactly the refused lines.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::IngestError;

/// At most this many bytes of the refused line are kept in [`DeadLetter::raw`].
pub const DEAD_LETTER_RAW_LIMIT: usize = 1024;

/// One refused record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Name of the source (file path, `stdin`, `http`).
    pub source: String,
    /// 1-based line number in the source.
    pub line: u64,
    /// Byte offset of the start of the line in the source.
    pub offset: u64,
    /// Why the record was refused, e.g.
    /// `field latency_ms: expected a number, got string "abc"`.
    pub reason: String,
    /// The start of the line (at most 1 KiB), invalid UTF-8 replaced by U+FFFD.
    pub raw: String,
    /// The class of the reason, for counters and the `dead_letters` table
    /// (absent in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<DeadLetterKind>,
    /// The event's client, when the line could be read that far: a flood of
    /// bad lines from one client is then visible to rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The event's model, when the line could be read that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The event time, for refusals of events that had a readable one
    /// (`future_timestamp`, `out_of_range`), in nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<i64>,
}

impl DeadLetter {
    /// Builds a dead letter, truncating `raw` to [`DEAD_LETTER_RAW_LIMIT`] bytes.
    pub fn new(
        source: &str,
        line: u64,
        offset: u64,
        reason: impl Into<String>,
        raw: &[u8],
    ) -> DeadLetter {
        DeadLetter {
            source: source.to_string(),
            line,
            offset,
            reason: reason.into(),
            raw: truncated_lossy(raw),
            kind: None,
            client_id: None,
            model_id: None,
            event_time: None,
        }
    }

    /// The same dead letter with its reason's class.
    pub fn with_kind(mut self, kind: DeadLetterKind) -> DeadLetter {
        self.kind = Some(kind);
        self
    }
}

/// The first [`DEAD_LETTER_RAW_LIMIT`] bytes as text; a character cut in
/// half at the limit becomes U+FFFD like any other invalid byte.
fn truncated_lossy(raw: &[u8]) -> String {
    let kept = &raw[..raw.len().min(DEAD_LETTER_RAW_LIMIT)];
    String::from_utf8_lossy(kept).into_owned()
}

/// The classes of dead letters, for counters and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterKind {
    /// Not valid JSON (syntax, `NaN`/`Infinity` tokens, trailing characters).
    InvalidJson,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Valid JSON, but not an object (an array, a string, a number…).
    NotAnObject,
    /// Objects and arrays nested deeper than [`crate::MAX_NESTING_DEPTH`].
    TooDeep,
    /// A line longer than [`crate::MAX_LINE_BYTES`]; it is not parsed.
    LineTooLong,
    /// A mapped field holds a value of the wrong type.
    WrongType,
    /// No field provides the event time.
    MissingTimestamp,
    /// The event time is present but unusable.
    InvalidTimestamp,
    /// The line lies beyond the most a single chunk may hold
    /// ([`crate::MAX_CHUNK_BYTES`]); the source should cut smaller chunks.
    ChunkTooLarge,
    /// A field of a generic stream holds a value whose type differs from
    /// its column's (see [`crate::GenericDecoder`]).
    TypeConflict,
    /// The event time lies too far ahead of the input's clock
    /// (see [`crate::EventTimeGuard`]).
    FutureTimestamp,
    /// A number lies outside its column's domain (see [`crate::ValueLimits`]).
    OutOfRange,
    /// An invariant was broken: this is a bug in inferwatch.
    Internal,
}

impl DeadLetterKind {
    /// Every kind, in counter order.
    pub const ALL: [DeadLetterKind; 13] = [
        DeadLetterKind::InvalidJson,
        DeadLetterKind::InvalidUtf8,
        DeadLetterKind::NotAnObject,
        DeadLetterKind::TooDeep,
        DeadLetterKind::LineTooLong,
        DeadLetterKind::WrongType,
        DeadLetterKind::MissingTimestamp,
        DeadLetterKind::InvalidTimestamp,
        DeadLetterKind::ChunkTooLarge,
        DeadLetterKind::TypeConflict,
        DeadLetterKind::FutureTimestamp,
        DeadLetterKind::OutOfRange,
        DeadLetterKind::Internal,
    ];

    /// The snake_case name used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterKind::InvalidJson => "invalid_json",
            DeadLetterKind::InvalidUtf8 => "invalid_utf8",
            DeadLetterKind::NotAnObject => "not_an_object",
            DeadLetterKind::TooDeep => "too_deep",
            DeadLetterKind::LineTooLong => "line_too_long",
            DeadLetterKind::WrongType => "wrong_type",
            DeadLetterKind::MissingTimestamp => "missing_timestamp",
            DeadLetterKind::InvalidTimestamp => "invalid_timestamp",
            DeadLetterKind::ChunkTooLarge => "chunk_too_large",
            DeadLetterKind::TypeConflict => "type_conflict",
            DeadLetterKind::FutureTimestamp => "future_timestamp",
            DeadLetterKind::OutOfRange => "out_of_range",
            DeadLetterKind::Internal => "internal",
        }
    }

    fn counter_index(self) -> usize {
        DeadLetterKind::ALL
            .iter()
            .position(|kind| *kind == self)
            .unwrap_or(DeadLetterKind::ALL.len() - 1)
    }
}

/// What a decoder has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecodeCounters {
    /// Lines read, including blank and refused ones.
    pub lines: u64,
    /// Blank (empty or whitespace-only) lines, skipped silently.
    pub blank_lines: u64,
    /// Events decoded into rows.
    pub events: u64,
    /// Dead letters per kind, indexed like [`DeadLetterKind::ALL`].
    pub dead_letters_by_reason: [u64; DeadLetterKind::ALL.len()],
}

impl DecodeCounters {
    /// Total dead letters.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters_by_reason.iter().sum()
    }

    /// Dead letters of one kind.
    pub fn dead_letters_of(&self, kind: DeadLetterKind) -> u64 {
        self.dead_letters_by_reason[kind.counter_index()]
    }

    /// `(kind, count)` for every kind with a non-zero count.
    pub fn dead_letter_counts(&self) -> impl Iterator<Item = (DeadLetterKind, u64)> + '_ {
        DeadLetterKind::ALL
            .iter()
            .zip(self.dead_letters_by_reason.iter())
            .filter(|(_, count)| **count > 0)
            .map(|(kind, count)| (*kind, *count))
    }

    /// Adds another decoder's counters (decoders run one per thread).
    pub fn merge(&mut self, other: &DecodeCounters) {
        self.lines += other.lines;
        self.blank_lines += other.blank_lines;
        self.events += other.events;
        for (mine, theirs) in self
            .dead_letters_by_reason
            .iter_mut()
            .zip(other.dead_letters_by_reason.iter())
        {
            *mine += theirs;
        }
    }

    /// Counts one dead letter of `kind`.
    pub fn count_dead_letter(&mut self, kind: DeadLetterKind) {
        self.dead_letters_by_reason[kind.counter_index()] += 1;
    }
}

/// Appends dead letters to a JSON Lines file, one object per line.
#[derive(Debug)]
pub struct DeadLetterWriter {
    path: PathBuf,
    writer: BufWriter<File>,
    written: u64,
    bytes_written: u64,
}

impl DeadLetterWriter {
    /// Opens `path` for appending, creating it (and its directory) if needed.
    pub fn open(path: &Path) -> Result<DeadLetterWriter, IngestError> {
        let io_error = |source| IngestError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(io_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error)?;
        Ok(DeadLetterWriter {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
            written: 0,
            bytes_written: 0,
        })
    }

    /// Appends the entries and flushes, so that a crash right after loses
    /// none of them.
    pub fn write(&mut self, dead_letters: &[DeadLetter]) -> Result<(), IngestError> {
        if dead_letters.is_empty() {
            return Ok(());
        }
        let mut buffer = Vec::with_capacity(256 * dead_letters.len());
        for dead_letter in dead_letters {
            serde_json::to_writer(&mut buffer, dead_letter).map_err(|error| {
                IngestError::Internal(format!("dead letter serialisation: {error}"))
            })?;
            buffer.push(b'\n');
        }
        let io_error = |source| IngestError::Io {
            path: self.path.clone(),
            source,
        };
        self.writer.write_all(&buffer).map_err(io_error)?;
        self.writer.flush().map_err(io_error)?;
        self.written += dead_letters.len() as u64;
        self.bytes_written += buffer.len() as u64;
        Ok(())
    }

    /// Entries written by this writer.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes written by this writer.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads a dead-letter file back (for replay and tests).
pub fn read_dead_letters(path: &Path) -> Result<Vec<DeadLetter>, IngestError> {
    let text = std::fs::read_to_string(path).map_err(|source| IngestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            serde_json::from_str(line).map_err(|error| IngestError::Config {
                path: path.to_path_buf(),
                line: index + 1,
                column: error.column(),
                message: format!("invalid dead letter: {error}"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_is_truncated_and_lossy() {
        let mut raw = vec![b'a'; 2000];
        raw[0] = 0xff;
        let dead_letter = DeadLetter::new("s", 1, 0, "r", &raw);
        assert!(dead_letter.raw.starts_with('\u{fffd}'));
        // One replacement character (3 bytes) stands for one byte.
        assert_eq!(dead_letter.raw.len(), DEAD_LETTER_RAW_LIMIT + 2);
    }

    #[test]
    fn writer_appends_jsonl_and_counts() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("nested/dead.jsonl");
        let letters = vec![
            DeadLetter::new("a.jsonl", 3, 40, "invalid JSON", b"{oops"),
            DeadLetter::new("a.jsonl", 4, 46, "not a JSON object", b"[1]"),
        ];
        let mut writer = DeadLetterWriter::open(&path).unwrap();
        writer.write(&letters).unwrap();
        writer.write(&[]).unwrap();
        assert_eq!(writer.written(), 2);
        drop(writer);
        let mut writer = DeadLetterWriter::open(&path).unwrap();
        writer.write(&letters[..1]).unwrap();
        let read = read_dead_letters(&path).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[0], letters[0]);
        assert_eq!(read[2], letters[0]);
    }

    #[test]
    fn counters_merge_and_list() {
        let mut first = DecodeCounters::default();
        first.count_dead_letter(DeadLetterKind::WrongType);
        let mut second = DecodeCounters::default();
        second.count_dead_letter(DeadLetterKind::WrongType);
        second.count_dead_letter(DeadLetterKind::TooDeep);
        second.lines = 5;
        first.merge(&second);
        assert_eq!(first.lines, 5);
        assert_eq!(first.dead_letters(), 3);
        assert_eq!(first.dead_letters_of(DeadLetterKind::WrongType), 2);
        let listed: Vec<_> = first.dead_letter_counts().collect();
        assert_eq!(
            listed,
            vec![(DeadLetterKind::TooDeep, 1), (DeadLetterKind::WrongType, 2)]
        );
    }
}
