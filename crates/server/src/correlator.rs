//! Correlation across streams (`inferwatch detect --correlations`,
//! `--stream NAME=FILE`).
//!
//! Three kinds of input reach the correlation engine, all in event time:
//! the firing alerts of the rules and SLOs, the inference events themselves
//! (as JSON objects, and only when a Sigma rule reads the `inference`
//! stream), and side streams such as auth or feature-store logs given as
//! JSONL files. Side streams are read as streams, never whole: each keeps
//! [`READ_AHEAD_EVENTS`] events read ahead, and the earliest of all those
//! is released once the inference stream's event time passes it, so a
//! replay interleaves them the way they happened. A file whose events are
//! out of order by fewer than that many events is released in time order
//! (equal times in file order, then stream order); beyond that, an event
//! comes when it is read, and the correlation engine's allowed lateness
//! decides. Lines longer than [`MAX_LINE_BYTES`] are skipped as they are
//! read (a dead letter keeps their start), so memory does not depend on
//! the side streams' size. Refused side-stream lines are appended to the
//! dead-letter file as they are found.
//!
//! Rule alerts lag the newest event by up to a rule's allowed lateness plus
//! its evaluation interval ([`Engine::alert_delay`]); the correlation
//! engine's own lateness is widened by that much, so an alert is never
//! dropped as late because a side event was released before it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use inferwatch_core::{column, format_timestamp, Alert};
use inferwatch_detect::correlation::{CorrelationConfig, CorrelationEngine, CorrelationRules};
use inferwatch_detect::Engine;
use inferwatch_ingest::{
    Chunk, DeadLetter, DeadLetterWriter, ReaderSource, Source, SourcePoll, MAX_LINE_BYTES,
};
use inferwatch_store::{read_parquet, StoreReader};
use serde_json::Value;

use crate::ServerError;

/// The stream name Sigma rules use for inferwatch's own inference events.
pub const INFERENCE_STREAM: &str = "inference";

/// A side stream named on the command line: `NAME=FILE`.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The stream name Sigma rules select with `logsource.service`.
    pub name: String,
    /// The JSONL file holding its events.
    pub path: PathBuf,
}

impl std::str::FromStr for StreamSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<StreamSpec, String> {
        match text.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(StreamSpec {
                name: name.to_string(),
                path: PathBuf::from(path),
            }),
            _ => Err(format!(
                "expected NAME=FILE (e.g. auth=auth.jsonl), got {text:?}"
            )),
        }
    }
}

/// Events of each side stream read ahead of the inference stream's time.
pub const READ_AHEAD_EVENTS: usize = 4096;

/// One side-stream event waiting for the inference stream to reach its time.
struct SideEvent {
    time: i64,
    stream: usize,
    /// Its place in its stream, so equal times keep file order.
    sequence: u64,
    event: Value,
}

impl SideEvent {
    fn key(&self) -> (i64, usize, u64) {
        (self.time, self.stream, self.sequence)
    }
}

impl PartialEq for SideEvent {
    fn eq(&self, other: &SideEvent) -> bool {
        self.key() == other.key()
    }
}

impl Eq for SideEvent {}

impl PartialOrd for SideEvent {
    fn partial_cmp(&self, other: &SideEvent) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SideEvent {
    fn cmp(&self, other: &SideEvent) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// A side stream being read, with its events read ahead and released.
struct SideStream {
    /// The stream name Sigma rules select.
    name: String,
    input: SideInput,
    /// Events read and not yet released.
    held: usize,
    /// Events read so far.
    read: u64,
}

/// Where a side stream's events come from.
enum SideInput {
    /// A JSONL file (`detect --stream`, `run`'s `streams:`).
    File(SideFile),
    /// The rows a serving node stored for the stream, read again to
    /// rebuild the correlations after a restart or a rules reload.
    Stored(StoredRows),
}

/// A side-stream file being read: its lines, one chunk at a time.
struct SideFile {
    /// Names the stream's dead letters.
    source: String,
    reader: ReaderSource,
    /// The chunk being read and where its next line starts.
    chunk: Option<(Chunk, usize)>,
    /// Number and offset of the next line.
    line: u64,
    offset: u64,
    finished: bool,
}

/// A stored stream's rows as events, one segment file at a time (each is
/// sorted by time, and hour partitions come in order), then its WAL tail.
struct StoredRows {
    files: std::collections::VecDeque<PathBuf>,
    tail: std::collections::VecDeque<RecordBatch>,
    ready: std::collections::VecDeque<Value>,
}

/// One line of a side stream, as a range of its chunk.
struct SideLine {
    number: u64,
    offset: u64,
    range: std::ops::Range<usize>,
    /// Bytes of the line the reader skipped (it was over the line cap).
    skipped: u64,
}

impl SideStream {
    fn open(spec: &StreamSpec) -> Result<SideStream, ServerError> {
        // The path names the file; the stream name is in the caller's flags.
        let file =
            std::fs::File::open(&spec.path).map_err(|error| ServerError::io(&spec.path, error))?;
        let source = spec.path.display().to_string();
        Ok(SideStream {
            name: spec.name.clone(),
            input: SideInput::File(SideFile {
                reader: ReaderSource::new(&source, file),
                source,
                chunk: None,
                line: 1,
                offset: 0,
                finished: false,
            }),
            held: 0,
            read: 0,
        })
    }

    /// The rows stored for `name` in the store at `data`.
    fn stored(data: &Path, name: &str) -> Result<SideStream, ServerError> {
        let reader = StoreReader::open(data)?;
        let snapshot = reader.snapshot(name, None, None)?;
        let mut segments = snapshot.segments;
        segments.sort_by_key(|file| (file.hour_start, file.first_sequence));
        Ok(SideStream {
            name: name.to_string(),
            input: SideInput::Stored(StoredRows {
                files: segments.into_iter().map(|file| file.path).collect(),
                tail: snapshot.tail.into(),
                ready: Default::default(),
            }),
            held: 0,
            read: 0,
        })
    }

    /// The next event with a readable time. Refused file lines become dead
    /// letters; a stored row without a readable time is counted in
    /// `unreadable` (it was stored, so its line is no dead letter).
    fn next_event(
        &mut self,
        engine: &CorrelationEngine,
        dead_letters: &mut Vec<DeadLetter>,
        unreadable: &mut u64,
    ) -> Result<Option<(i64, Value)>, ServerError> {
        match &mut self.input {
            SideInput::File(file) => file.next_event(&self.name, engine, dead_letters),
            SideInput::Stored(rows) => loop {
                if let Some(event) = rows.ready.pop_front() {
                    match engine.event_time(&event) {
                        Some(time) => return Ok(Some((time, event))),
                        None => *unreadable += 1,
                    }
                    continue;
                }
                let batches = match rows.files.pop_front() {
                    Some(path) => read_parquet(&path)?,
                    None => match rows.tail.pop_front() {
                        Some(batch) => vec![batch],
                        None => return Ok(None),
                    },
                };
                for batch in &batches {
                    rows.ready.extend(batch_events(batch)?);
                }
            },
        }
    }
}

impl SideFile {
    /// The next line, or `None` at the end of the file.
    fn next_line(&mut self) -> Result<Option<SideLine>, ServerError> {
        loop {
            if let Some((chunk, start)) = &mut self.chunk {
                if *start < chunk.data.len() {
                    let end = memchr::memchr(b'\n', &chunk.data[*start..])
                        .map_or(chunk.data.len(), |newline| *start + newline);
                    let last = end + 1 >= chunk.data.len();
                    let skipped = if last { chunk.skipped_bytes } else { 0 };
                    let line = SideLine {
                        number: self.line,
                        offset: self.offset,
                        range: *start..end,
                        skipped,
                    };
                    self.line += 1;
                    self.offset += (end + 1 - *start) as u64 + skipped;
                    *start = end + 1;
                    return Ok(Some(line));
                }
            }
            self.chunk = None;
            if self.finished {
                return Ok(None);
            }
            match self.reader.next_chunk()? {
                SourcePoll::Ready(ready) => self.chunk = Some((ready.chunk, 0)),
                SourcePoll::Idle => {}
                SourcePoll::End => self.finished = true,
            }
        }
    }

    /// The next event with a readable time; refused lines on the way
    /// become dead letters.
    fn next_event(
        &mut self,
        name: &str,
        engine: &CorrelationEngine,
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Result<Option<(i64, Value)>, ServerError> {
        while let Some(line) = self.next_line()? {
            let Some((chunk, _)) = &self.chunk else {
                break;
            };
            let bytes = &chunk.data[line.range.clone()];
            let refuse = |reason: String| {
                DeadLetter::new(&self.source, line.number, line.offset, reason, bytes)
            };
            if line.skipped > 0 {
                dead_letters.push(refuse(format!(
                    "stream '{name}': line is {} bytes, over the {MAX_LINE_BYTES}-byte limit",
                    bytes.len() as u64 + line.skipped
                )));
                continue;
            }
            let trimmed = bytes.trim_ascii();
            if trimmed.is_empty() {
                continue;
            }
            match serde_json::from_slice::<Value>(trimmed) {
                Ok(event) if event.is_object() => match engine.event_time(&event) {
                    Some(time) => return Ok(Some((time, event))),
                    None => dead_letters.push(refuse(format!(
                        "stream '{name}': no readable event time (timestamp, @timestamp or time, RFC 3339 or epoch)"
                    ))),
                },
                Ok(_) => dead_letters.push(refuse(format!(
                    "stream '{name}': an event must be a JSON object"
                ))),
                Err(error) => dead_letters.push(refuse(format!(
                    "stream '{name}': invalid JSON at column {}: {error}",
                    error.column()
                ))),
            }
        }
        Ok(None)
    }
}

/// Appends refused side-stream lines to the dead-letter file, opened on
/// the first one.
struct SideDeadLetters {
    path: PathBuf,
    writer: Option<DeadLetterWriter>,
    written: u64,
}

impl SideDeadLetters {
    fn write(&mut self, dead_letters: &mut Vec<DeadLetter>) -> Result<(), ServerError> {
        if dead_letters.is_empty() {
            return Ok(());
        }
        let writer = match &mut self.writer {
            Some(writer) => writer,
            None => self.writer.insert(DeadLetterWriter::open(&self.path)?),
        };
        writer.write(dead_letters)?;
        self.written += dead_letters.len() as u64;
        dead_letters.clear();
        Ok(())
    }
}

/// The correlation engine and the side streams, with the events read
/// ahead and not yet released.
pub struct Correlator {
    engine: CorrelationEngine,
    streams: Vec<SideStream>,
    /// Read-ahead events of every stream, earliest first.
    pending: BinaryHeap<Reverse<SideEvent>>,
    dead_letters: SideDeadLetters,
    /// Scratch for the dead letters of one read.
    refused_lines: Vec<DeadLetter>,
    reads_inference: bool,
    /// Events (side or inference) the engine refused, e.g. a matching event
    /// without a readable time.
    refused_events: u64,
    /// The correlation engine's allowed lateness.
    lateness: i64,
    /// How far the rules' alerts lag the newest event; the lateness
    /// includes it.
    alert_delay: i64,
    /// Whether detection's clock moves the watermark (see
    /// [`Correlator::follow_clock`]).
    follows_clock: bool,
}

impl Correlator {
    /// Loads the correlation rules (a file or a directory) and opens the
    /// side streams. Every name a correlation uses must be a Sigma rule or
    /// correlation of the loaded files, or one of `known_rule_ids`.
    /// Unreadable side-stream lines become dead letters, appended to
    /// `dead_letter_path` as they are read.
    pub fn load(
        rules_path: &Path,
        streams: &[StreamSpec],
        known_rule_ids: &BTreeSet<String>,
        alert_delay: i64,
        dead_letter_path: &Path,
    ) -> Result<Correlator, ServerError> {
        let rules = if rules_path.is_dir() {
            let (rules, errors) = CorrelationRules::load_dir(rules_path);
            if !errors.is_empty() {
                let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(ServerError::Config(format!(
                    "{} correlation rule error(s):\n  {}",
                    messages.len(),
                    messages.join("\n  ")
                )));
            }
            rules
        } else {
            CorrelationRules::from_path(rules_path)?
        };
        if rules.correlations.is_empty() && rules.detection_rules.is_empty() {
            return Err(ServerError::Config(format!(
                "no correlation rules found in {}",
                rules_path.display()
            )));
        }
        let default = CorrelationConfig::default();
        let config = CorrelationConfig {
            allowed_lateness: default.allowed_lateness + alert_delay,
            ..default
        };
        let lateness = config.allowed_lateness;
        let engine = CorrelationEngine::new(rules, config)?;
        let unknown: Vec<String> = engine
            .external_rules()
            .into_iter()
            .filter(|(name, _)| !known_rule_ids.contains(name))
            .map(|(name, at)| {
                format!(
                    "{}:{}:{}: '{name}' is not a Sigma rule or correlation in {}, nor a loaded rule or SLO id",
                    at.path.display(),
                    at.line,
                    at.column,
                    rules_path.display()
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(ServerError::Config(format!(
                "{} unknown rule reference(s):\n  {}",
                unknown.len(),
                unknown.join("\n  ")
            )));
        }
        let mut side_streams = Vec::new();
        for stream in streams {
            if !engine.reads_stream(&stream.name) {
                eprintln!(
                    "inferwatch detect: no Sigma rule reads stream '{}' ({}); its events only move time on",
                    stream.name,
                    stream.path.display()
                );
            }
            side_streams.push(SideStream::open(stream)?);
        }
        let mut correlator = Correlator {
            reads_inference: engine.reads_stream(INFERENCE_STREAM),
            engine,
            streams: side_streams,
            pending: BinaryHeap::new(),
            dead_letters: SideDeadLetters {
                path: dead_letter_path.to_path_buf(),
                writer: None,
                written: 0,
            },
            refused_lines: Vec::new(),
            refused_events: 0,
            lateness,
            alert_delay,
            follows_clock: false,
        };
        for index in 0..correlator.streams.len() {
            correlator.read_ahead(index)?;
        }
        Ok(correlator)
    }

    /// [`Correlator::load`] beside `engine`'s rules and `slos`: their ids
    /// are the names a correlation may use besides its own files', and its
    /// lateness waits for the slower of their alerts.
    pub fn load_beside(
        rules_path: &Path,
        streams: &[StreamSpec],
        engine: &Engine,
        slos: Option<&inferwatch_detect::SloEvaluator>,
        dead_letter_path: &Path,
    ) -> Result<Correlator, ServerError> {
        let slo_ids = slos
            .into_iter()
            .flat_map(|slos| slos.slos().map(|slo| slo.id.clone()));
        let known = known_rule_ids(engine, slo_ids);
        // SLO alerts wait for their own lateness, the default.
        let delay = engine.alert_delay().max(inferwatch_core::parse_duration(
            inferwatch_detect::DEFAULT_ALLOWED_LATENESS,
        )?);
        Correlator::load(rules_path, streams, &known, delay, dead_letter_path)
    }

    /// A serving node's correlations: detection's clock, not only the
    /// newest finding, moves the watermark (to the clock less the
    /// lateness), so a correlation is judged while traffic goes on even
    /// when no later finding comes. A finite replay needs no such thing:
    /// its end evaluates everything ([`Correlator::finish`]). Side rows
    /// sent more than `side_lateness` behind the inference events' clock
    /// (plus the rules' alert delay) are late, and dropped as late.
    pub fn follow_clock(mut self, side_lateness: i64) -> Correlator {
        self.follows_clock = true;
        self.lateness = side_lateness.max(0).saturating_add(self.alert_delay);
        self.engine.set_allowed_lateness(self.lateness);
        self
    }

    /// The `rule_id`s of the correlation alerts.
    pub fn rule_ids(&self) -> impl Iterator<Item = String> {
        self.engine
            .observable_state()
            .into_iter()
            .map(|state| state.rule_id)
    }

    /// Tops stream `index`'s read-ahead up to [`READ_AHEAD_EVENTS`].
    fn read_ahead(&mut self, index: usize) -> Result<(), ServerError> {
        let stream = &mut self.streams[index];
        while stream.held < READ_AHEAD_EVENTS {
            let Some((time, event)) = stream.next_event(
                &self.engine,
                &mut self.refused_lines,
                &mut self.refused_events,
            )?
            else {
                break;
            };
            self.pending.push(Reverse(SideEvent {
                time,
                stream: index,
                sequence: stream.read,
                event,
            }));
            stream.held += 1;
            stream.read += 1;
            // Bounded: a file of bad lines is written out as it is read.
            if self.refused_lines.len() >= 1024 {
                self.dead_letters.write(&mut self.refused_lines)?;
            }
        }
        self.dead_letters.write(&mut self.refused_lines)
    }

    /// Side-stream lines refused so far (written to the dead-letter file).
    pub fn refused_lines(&self) -> u64 {
        self.dead_letters.written
    }

    /// Whether inference events must be decoded with every column, because
    /// a Sigma rule reads them.
    pub fn reads_inference(&self) -> bool {
        self.reads_inference
    }

    /// Takes in one batch's worth: the rule and SLO alerts it released, the
    /// batch itself (used only when a Sigma rule reads inference events), and
    /// the newest event time so far; side events up to that time are
    /// released. Returns the correlation alerts that are due.
    pub fn observe(
        &mut self,
        alerts: &[Alert],
        batch: Option<&RecordBatch>,
        now: Option<i64>,
    ) -> Result<Vec<Alert>, ServerError> {
        for alert in alerts {
            self.engine.observe_alert(alert);
        }
        if let (true, Some(batch)) = (self.reads_inference, batch) {
            for event in batch_events(batch)? {
                if self.engine.observe_event(INFERENCE_STREAM, &event).is_err() {
                    self.refused_events += 1;
                }
            }
        }
        if let Some(now) = now {
            self.release_side_events(now)?;
            if self.follows_clock {
                return Ok(self
                    .engine
                    .advance_watermark(now.saturating_sub(self.lateness)));
            }
        }
        Ok(self.engine.poll())
    }

    /// End of input: releases every side event left and evaluates all.
    pub fn finish(&mut self, alerts: &[Alert]) -> Result<Vec<Alert>, ServerError> {
        for alert in alerts {
            self.engine.observe_alert(alert);
        }
        self.release_side_events(i64::MAX)?;
        Ok(self.engine.flush())
    }

    /// Takes in rows a serving node stored for side stream `stream` (HTTP
    /// ingest of an auth or feature-store log, say). They are observed as
    /// they arrive; the correlation engine's lateness puts them in time
    /// order with the rule alerts. Returns the correlation alerts due.
    pub fn observe_stream(
        &mut self,
        stream: &str,
        batch: &RecordBatch,
    ) -> Result<Vec<Alert>, ServerError> {
        if stream == INFERENCE_STREAM || batch.num_rows() == 0 || !self.engine.reads_stream(stream)
        {
            return Ok(Vec::new());
        }
        for event in batch_events(batch)? {
            if self.engine.observe_event(stream, &event).is_err() {
                self.refused_events += 1;
            }
        }
        Ok(self.engine.poll())
    }

    /// Before a replay of the store: every stored stream a Sigma rule
    /// reads, other than `inference_stream`, becomes a side stream read
    /// back from the store, released as the replayed inference events pass
    /// its times, as `detect --stream` releases a file's.
    pub fn open_stored_streams(
        &mut self,
        data: &Path,
        inference_stream: &str,
    ) -> Result<(), ServerError> {
        let Ok(reader) = StoreReader::open(data) else {
            return Ok(());
        };
        for name in reader.streams()? {
            if name == inference_stream
                || name == crate::live::HEARTBEAT_STREAM
                || !self.engine.reads_stream(&name)
            {
                continue;
            }
            self.streams.push(SideStream::stored(data, &name)?);
            self.read_ahead(self.streams.len() - 1)?;
        }
        Ok(())
    }

    /// After the replay: stored side events later than the last inference
    /// event had been observed too before the restart, so all are released;
    /// then the stored streams are closed (live rows come by
    /// [`Correlator::observe_stream`]). Returns the correlation alerts due.
    pub fn close_stored_streams(&mut self) -> Result<Vec<Alert>, ServerError> {
        let stored: Vec<usize> = (0..self.streams.len())
            .filter(|&index| matches!(self.streams[index].input, SideInput::Stored(_)))
            .collect();
        if stored.is_empty() {
            return Ok(Vec::new());
        }
        // Release every pending event of those streams (and, in time
        // order with them, any file stream's that are earlier).
        while self
            .streams
            .iter()
            .any(|stream| matches!(stream.input, SideInput::Stored(_)) && stream.held > 0)
        {
            let Some(Reverse(side)) = self.pending.pop() else {
                break;
            };
            self.release(side)?;
        }
        // Stored streams come last in `streams`: file streams were opened at
        // load, so their indices in `pending` stay valid.
        self.streams.truncate(stored[0]);
        Ok(self.engine.poll())
    }

    /// Findings dropped as later than the lateness, and events refused.
    pub fn dropped(&self) -> (u64, u64) {
        (self.engine.late_dropped(), self.refused_events)
    }

    fn release_side_events(&mut self, until: i64) -> Result<(), ServerError> {
        while self
            .pending
            .peek()
            .is_some_and(|Reverse(event)| event.time <= until)
        {
            let Some(Reverse(side)) = self.pending.pop() else {
                break;
            };
            self.release(side)?;
        }
        Ok(())
    }

    /// Hands one read-ahead event to the engine and tops its stream up.
    fn release(&mut self, side: SideEvent) -> Result<(), ServerError> {
        let stream = &mut self.streams[side.stream];
        stream.held -= 1;
        if self
            .engine
            .observe_event(&stream.name, &side.event)
            .is_err()
        {
            self.refused_events += 1;
        }
        // Its successor may be due too.
        self.read_ahead(side.stream)
    }
}

/// The batch's rows as JSON objects named by the canonical columns, with
/// the event time in RFC 3339 (nulls left out).
fn batch_events(batch: &RecordBatch) -> Result<Vec<Value>, ServerError> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let mut events: Vec<Value> = serde_json::from_slice(&writer.into_inner())?;
    if let Some(times) = batch
        .column_by_name(column::TIMESTAMP)
        .and_then(|array| array.as_any().downcast_ref::<TimestampNanosecondArray>())
    {
        for (row, event) in events.iter_mut().enumerate() {
            if let (Some(object), false) = (event.as_object_mut(), times.is_null(row)) {
                object.insert(
                    column::TIMESTAMP.to_string(),
                    Value::String(format_timestamp(times.value(row))),
                );
            }
        }
    }
    Ok(events)
}

/// Rule and SLO ids a correlation may name.
pub fn known_rule_ids(engine: &Engine, slo_ids: impl Iterator<Item = String>) -> BTreeSet<String> {
    engine
        .rule_ids()
        .map(str::to_string)
        .chain(slo_ids)
        .collect()
}
