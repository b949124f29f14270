//! The one-pass loop behind `inferwatch ingest` and `inferwatch run`:
//! files or stdin → decode → event-time guard → store WAL → detection.
//!
//! The store's WAL keeps the source position with every batch, so a restart
//! (even after `kill -9`) resumes reading right after the last acknowledged
//! batch: nothing acknowledged is lost and nothing is stored twice. The
//! rows the guard holds back ride along in that position, so they come back
//! too. Detection reads exactly what was stored, once, without re-decoding.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use inferwatch_core::Alert;
use inferwatch_detect::{load_rules_dir, Engine, SloEvaluator};
use inferwatch_ingest::{
    DeadLetterKind, DeadLetterWriter, DecodeCounters, DecodedBatch, Decoder, EventTimeGuard,
    FileCheckpoint, GuardRelease, InputsKind, Mapping,
};
use inferwatch_store::{FsyncPolicy, StoreOptions, StoreWriter};

use crate::alert_ledger::AlertLedger;
use crate::correlator::Correlator;
use crate::notify::Notifier;
use crate::pipeline::{ChunkDecoder, InputSpec, Pipeline, PipelineEvent};
use crate::ServerError;

/// Store settings shared by `ingest`, `run` and `serve`, as text the user
/// wrote (flags or config).
#[derive(Clone, Debug)]
pub struct StoreSettings {
    /// When appends are acknowledged: `always` (fsync every batch) or `interval_ms=N`.
    pub fsync: String,
    /// Rows buffered in memory before a flush to Parquet.
    pub flush_rows: usize,
    /// Flush at least this often (e.g. `30s`).
    pub flush_interval: String,
    /// Delete hour partitions older than this (e.g. `30d`).
    pub retention_age: Option<String>,
    /// Delete the oldest hour partitions while the store is larger (e.g. `50GB`).
    pub retention_size: Option<String>,
    /// The writer's id in file names (default `local`); nodes sharing one
    /// data directory each need their own.
    pub node_id: Option<String>,
}

impl Default for StoreSettings {
    fn default() -> StoreSettings {
        StoreSettings {
            fsync: "interval_ms=100".into(),
            flush_rows: 1 << 19,
            flush_interval: "30s".into(),
            retention_age: None,
            retention_size: None,
            node_id: None,
        }
    }
}

impl StoreSettings {
    /// The store options these settings describe.
    pub fn options(&self) -> Result<StoreOptions, ServerError> {
        let duration = |text: &str| -> Result<Duration, ServerError> {
            let nanos = inferwatch_core::parse_duration(text)?;
            Ok(Duration::from_nanos(nanos.max(0) as u64))
        };
        Ok(StoreOptions {
            fsync: self.fsync.parse::<FsyncPolicy>()?,
            flush_rows: self.flush_rows.max(1),
            flush_interval: duration(&self.flush_interval)?,
            retention_max_age: self.retention_age.as_deref().map(duration).transpose()?,
            retention_max_bytes: self.retention_size.as_deref().map(parse_size).transpose()?,
            node_id: self
                .node_id
                .clone()
                .unwrap_or_else(|| inferwatch_store::DEFAULT_WRITER.to_string()),
            ..StoreOptions::default()
        })
    }
}

/// Reads `500MB`, `10GB`, `1TB` or a plain byte count.
pub fn parse_size(text: &str) -> Result<u64, ServerError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        ServerError::Config(format!(
            "invalid size '{text}': expected e.g. 500MB or 10GB"
        ))
    })?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "KB" | "K" | "KIB" => 1 << 10,
        "MB" | "M" | "MIB" => 1 << 20,
        "GB" | "G" | "GIB" => 1 << 30,
        "TB" | "T" | "TIB" => 1 << 40,
        other => {
            return Err(ServerError::Config(format!(
                "invalid size unit '{other}' in '{text}': use B, KB, MB, GB or TB"
            )))
        }
    };
    Ok((number * scale as f64) as u64)
}

/// Loads the mapping file, or the built-in mapping.
pub fn load_mapping(path: Option<&PathBuf>) -> Result<Arc<Mapping>, ServerError> {
    Ok(Arc::new(match path {
        Some(path) => Mapping::from_yaml_path(path)?,
        None => Mapping::builtin(),
    }))
}

/// Loads and compiles rules against `decoder`'s schema, reporting every
/// error at once.
pub fn load_engine(rules_dir: &Path, decoder: &Decoder) -> Result<Engine, ServerError> {
    Ok(load_engine_and_rules(rules_dir, decoder)?.0)
}

/// Like [`load_engine`], also returning the rules as loaded (the API lists
/// their titles, severities and ATLAS ids).
pub fn load_engine_and_rules(
    rules_dir: &Path,
    decoder: &Decoder,
) -> Result<(Engine, Vec<inferwatch_detect::Rule>), ServerError> {
    let (rules, errors) = load_rules_dir(rules_dir);
    let mut messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.extend(
        Engine::check(&rules, &decoder.schema())
            .iter()
            .map(ToString::to_string),
    );
    if !messages.is_empty() {
        return Err(ServerError::Rules {
            count: messages.len(),
            messages,
        });
    }
    if rules.is_empty() {
        return Err(ServerError::Config(format!(
            "no rules found in {}",
            rules_dir.display()
        )));
    }
    let engine = Engine::new(rules.clone(), &decoder.schema())?
        .with_roles(decoder.mapping().roles().clone());
    Ok((engine, rules))
}

/// Loads and compiles the SLOs in `path` (a file or directory) against
/// `decoder`'s schema, reporting every error at once.
pub fn load_slo_evaluator(path: &Path, decoder: &Decoder) -> Result<SloEvaluator, ServerError> {
    let (slos, errors) = inferwatch_detect::load_slos(path);
    let mut messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.extend(
        SloEvaluator::check(&slos, &decoder.schema())
            .iter()
            .map(ToString::to_string),
    );
    if !messages.is_empty() {
        return Err(ServerError::Config(format!(
            "{} SLO error(s):\n  {}",
            messages.len(),
            messages.join("\n  ")
        )));
    }
    if slos.is_empty() {
        return Err(ServerError::Config(format!(
            "no SLOs found in {}",
            path.display()
        )));
    }
    Ok(SloEvaluator::new(slos, &decoder.schema())?)
}

/// The event-time guard of a command: one input per followed file, one
/// for files read once after another.
pub fn event_time_guard(follow: bool, max_future: &str) -> Result<EventTimeGuard, ServerError> {
    let max_future = inferwatch_core::parse_duration(max_future)
        .map_err(|error| ServerError::Config(format!("max_future: {error}")))?;
    let kind = if follow {
        InputsKind::PerSource
    } else {
        InputsKind::Pooled
    };
    Ok(EventTimeGuard::new(kind).with_max_future(max_future))
}

/// The default number of decoder threads.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Appends a batch's refused lines to the dead-letter file, opened on first use.
pub fn write_dead_letters(
    writer: &mut Option<DeadLetterWriter>,
    path: &Path,
    decoded: &DecodedBatch,
) -> Result<(), ServerError> {
    if decoded.dead_letters.is_empty() {
        return Ok(());
    }
    let dead = match writer {
        Some(dead) => dead,
        None => writer.insert(DeadLetterWriter::open(path)?),
    };
    dead.write(&decoded.dead_letters)?;
    Ok(())
}

/// Writes and counts the rows the guard refused at the end of input.
pub fn write_released_dead_letters(
    writer: &mut Option<DeadLetterWriter>,
    path: &Path,
    released: &GuardRelease,
    counters: &mut DecodeCounters,
) -> Result<(), ServerError> {
    if released.dead_letters.is_empty() {
        return Ok(());
    }
    for _ in &released.dead_letters {
        counters.count_dead_letter(DeadLetterKind::FutureTimestamp);
    }
    let dead = match writer {
        Some(dead) => dead,
        None => writer.insert(DeadLetterWriter::open(path)?),
    };
    dead.write(&released.dead_letters)?;
    Ok(())
}

/// Where a restart resumes: the file positions stored with the last WAL
/// record, and the lines the event-time guard was holding back then.
#[derive(Debug, Default)]
pub struct Resume {
    /// File positions (`None`: start from the beginning).
    pub files: Option<Vec<FileCheckpoint>>,
    /// Held lines (`{"source", "line", "event"}`), to be admitted first.
    pub held: Vec<serde_json::Value>,
}

/// The position stored in the WAL: the file positions, plain, or with the
/// lines the guard held when there were any.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum StoredPosition {
    Files(Vec<FileCheckpoint>),
    WithHeld {
        files: Vec<FileCheckpoint>,
        held: Vec<serde_json::Value>,
    },
}

/// Parses the position stored in the WAL back into a [`Resume`].
pub fn resume_position(stored: Option<&str>) -> Result<Resume, ServerError> {
    match stored {
        None | Some("") => Ok(Resume::default()),
        Some(text) => match serde_json::from_str(text).map_err(|error| {
            ServerError::Config(format!(
                "reading the source position stored in the WAL: {error}"
            ))
        })? {
            StoredPosition::Files(files) => Ok(Resume {
                files: Some(files),
                held: Vec::new(),
            }),
            StoredPosition::WithHeld { files, held } => Ok(Resume {
                files: Some(files),
                held,
            }),
        },
    }
}

/// Encodes a source position for the WAL (`None` for unseekable input),
/// with the rows the guard holds back: they were read, so they must come
/// back after a crash.
pub fn encode_position(
    files: &[FileCheckpoint],
    guard: &EventTimeGuard,
) -> Result<Option<String>, ServerError> {
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(encode_held_position(files, guard)?))
}

/// Like [`encode_position`], also for an input with no file positions
/// (HTTP): the held lines are all there is to keep, and "none held" must
/// be recorded too, or a restart would bring back lines released since.
pub fn encode_held_position(
    files: &[FileCheckpoint],
    guard: &EventTimeGuard,
) -> Result<String, ServerError> {
    let stored = if guard.is_holding() {
        StoredPosition::WithHeld {
            files: files.to_vec(),
            held: guard.held_lines(),
        }
    } else {
        StoredPosition::Files(files.to_vec())
    };
    Ok(serde_json::to_string(&stored)?)
}

/// What the store last recorded with a batch.
#[derive(Default)]
pub struct LastAppend {
    files: Vec<FileCheckpoint>,
    schema: Option<arrow::datatypes::SchemaRef>,
    held: bool,
}

/// Appends a guarded batch with its source position and the guard's held
/// lines; returns the WAL sequence.
pub fn append_guarded(
    writer: &mut StoreWriter,
    stream: &str,
    batch: &RecordBatch,
    files: &[FileCheckpoint],
    guard: &EventTimeGuard,
    last: &mut LastAppend,
) -> Result<u64, ServerError> {
    let position = encode_position(files, guard)?;
    let sequence = writer.append(stream, batch, position.as_deref())?;
    *last = LastAppend {
        files: files.to_vec(),
        schema: Some(batch.schema()),
        held: guard.is_holding(),
    };
    Ok(sequence)
}

/// End of a finite input: stores what the guard released, with the last
/// position now without held lines (they were released or refused), so
/// that a later run does not read them again. Returns the rows stored.
pub fn store_guard_release(
    writer: &mut StoreWriter,
    stream: &str,
    released: &GuardRelease,
    last: &LastAppend,
) -> Result<u64, ServerError> {
    let position = match last.files.is_empty() {
        true => None,
        false => Some(serde_json::to_string(&StoredPosition::Files(
            last.files.clone(),
        ))?),
    };
    let batch = match (&released.batch, &last.schema) {
        (Some(batch), _) => batch.clone(),
        (None, Some(schema)) if last.held => RecordBatch::new_empty(schema.clone()),
        _ => return Ok(0),
    };
    writer.append(stream, &batch, position.as_deref())?;
    Ok(batch.num_rows() as u64)
}

/// Feeds the lines a crashed run held back through `decoder` and `guard`
/// again, one chunk per source: they go back on hold (or through, if they
/// now agree). Returns what came through, with its clock.
pub fn readmit_held<D: ChunkDecoder>(
    held: &[serde_json::Value],
    decoder: &mut D,
    guard: &mut EventTimeGuard,
) -> Vec<(DecodedBatch, Vec<i64>)> {
    let mut by_source: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in held {
        let source = entry["source"].as_str().unwrap_or("held").to_string();
        let mut line = entry["event"].to_string().into_bytes();
        line.push(b'\n');
        match by_source.iter_mut().find(|(name, _)| *name == source) {
            Some((_, data)) => data.extend_from_slice(&line),
            None => by_source.push((source, line)),
        }
    }
    by_source
        .into_iter()
        .map(|(source, data)| {
            let chunk = inferwatch_ingest::Chunk {
                source: Arc::from(source.as_str()),
                first_line: 1,
                first_offset: 0,
                data,
                skipped_bytes: 0,
            };
            let mut decoded = decoder.decode_chunk(&chunk);
            let clock = guard.admit(&mut decoded);
            (decoded, clock)
        })
        .collect()
}

/// Where alert transitions go: the store's `alerts` ledger always, an
/// alerts file when configured, and a printer (standard output) otherwise.
/// Each ledger writes a transition once, across restarts.
pub struct AlertOutputs {
    stored: AlertLedger,
    file: Option<AlertLedger>,
    printer: Option<Box<dyn Write + Send>>,
}

impl AlertOutputs {
    /// Opens the store's alerts file in `data`, `alerts_file` when given
    /// (and not the same file), and prints fresh transitions to `printer`.
    pub fn open(
        data: &Path,
        alerts_file: Option<&Path>,
        printer: Option<Box<dyn Write + Send>>,
    ) -> Result<AlertOutputs, ServerError> {
        let stored_path = data.join(inferwatch_query::STORE_ALERTS_FILE);
        let stored = AlertLedger::open(&stored_path)?;
        let file = match alerts_file {
            Some(path) if path != stored_path => Some(AlertLedger::open(path)?),
            _ => None,
        };
        Ok(AlertOutputs {
            stored,
            file,
            printer,
        })
    }

    /// Writes the transitions not yet written; returns how many were new
    /// (in the alerts file when there is one, else in the store's).
    pub fn write(&mut self, alerts: Vec<Alert>) -> Result<u64, ServerError> {
        if alerts.is_empty() {
            return Ok(0);
        }
        let fresh = self.stored.write(&alerts)?;
        let mut written = fresh.len() as u64;
        if let Some(file) = &mut self.file {
            written = file.write(&alerts)?.len() as u64;
        }
        if let Some(printer) = &mut self.printer {
            let print = |printer: &mut Box<dyn Write + Send>| -> std::io::Result<()> {
                for alert in &fresh {
                    serde_json::to_writer(&mut *printer, alert)?;
                    printer.write_all(b"\n")?;
                }
                printer.flush()
            };
            print(printer).map_err(|error| ServerError::io(Path::new("<alerts output>"), error))?;
        }
        Ok(written)
    }
}

/// The rules over the stored inference events and where their alerts go.
pub struct Detection {
    /// The rule engine.
    pub engine: Engine,
    /// The SLOs, when given: fed the same rows, their alerts go the same way.
    slos: Option<SloEvaluator>,
    outputs: AlertOutputs,
    transitions: u64,
    /// The schema the rules were compiled against, the data directory and
    /// the stream detection reads (set by [`Detection::replay`]).
    replayed_from: Option<(arrow::datatypes::SchemaRef, PathBuf, String)>,
    /// Where a serving node publishes alerts and rule state for its API.
    live: Option<Arc<crate::live::LiveState>>,
    /// The notification pipeline and actions, when configured.
    notifier: Option<Arc<Notifier>>,
    /// The clock the notifier was last moved to.
    notified_clock: Option<i64>,
    /// Sigma correlations over the alerts, the side streams and (when a
    /// Sigma rule reads it) the inference stream.
    correlations: Option<Correlator>,
}

impl Detection {
    /// Detection with `engine`, writing to `outputs`.
    pub fn new(engine: Engine, outputs: AlertOutputs) -> Detection {
        Detection {
            engine,
            slos: None,
            outputs,
            transitions: 0,
            replayed_from: None,
            live: None,
            notifier: None,
            notified_clock: None,
            correlations: None,
        }
    }

    /// Also runs Sigma correlations: the rules' and SLOs' alerts go in, and
    /// the correlations' alerts come out the same way as theirs.
    pub fn with_correlations(mut self, correlations: Correlator) -> Detection {
        self.correlations = Some(correlations);
        self
    }

    /// Also keeps `live`'s alert board and rule snapshot up to date
    /// (`serve`).
    pub fn with_live(mut self, live: Arc<crate::live::LiveState>) -> Detection {
        self.live = Some(live);
        self
    }

    /// Also evaluates `slos` (error budgets and burn-rate alerts).
    pub fn with_slos(mut self, slos: SloEvaluator) -> Detection {
        self.slos = Some(slos);
        self
    }

    /// Hands transitions to `notifier` (notification pipeline, then
    /// actions), moving its clock with detection's.
    pub fn with_notifier(mut self, notifier: Arc<Notifier>) -> Detection {
        self.notifier = Some(notifier);
        self
    }

    /// After a restart the engine relearns what the store holds (see
    /// [`crate::alert_ledger`]), heartbeats included; transitions a crash
    /// kept from being written are written now, the others not again.
    /// (The notification pipeline drops transitions it has already seen,
    /// and the dispatcher deliveries it has already made.)
    pub fn replay(
        &mut self,
        data: &Path,
        stream: &str,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<(), ServerError> {
        self.replayed_from = Some((schema.clone(), data.to_path_buf(), stream.to_string()));
        let alerts = crate::alert_ledger::replay_store(
            data,
            stream,
            schema,
            &mut self.engine,
            self.slos.as_mut(),
            self.correlations.as_mut(),
        )?;
        self.emit(alerts)
    }

    /// Swaps in `engine` (new rules) and rebuilds its state by replaying
    /// what the store holds, as a restart with those rules would: windows,
    /// baselines and learned state come from the stored events and
    /// heartbeats; transitions already written are not written again, the
    /// others (a new rule's, including those of the past) are written and
    /// notified. Alerts of rules that are gone leave the board; no resolved
    /// transition is made up for them. The store must be synced first, so
    /// that the replay sees every appended row.
    pub fn replace_engine(
        &mut self,
        engine: Engine,
        slos: Option<SloEvaluator>,
        correlations: Option<Correlator>,
    ) -> Result<(), ServerError> {
        let Some((schema, data, stream)) = self.replayed_from.clone() else {
            return Err(ServerError::Internal(
                "rules can only be swapped after the store was replayed".into(),
            ));
        };
        self.engine = engine;
        // The correlations saw the old rules' alerts: they start again and
        // see the new ones in the replay.
        if correlations.is_some() {
            self.correlations = correlations;
        }
        let replay_slos = slos.is_some();
        if let Some(slos) = slos {
            self.slos = Some(slos);
        }
        let rule_ids: std::collections::HashSet<String> = self
            .engine
            .observable_state()
            .into_iter()
            .map(|state| state.rule_id)
            .chain(
                self.slos
                    .iter()
                    .flat_map(|slos| slos.slos().map(|slo| slo.id.clone())),
            )
            .chain(self.correlations.iter().flat_map(Correlator::rule_ids))
            .collect();
        if let Some(share) = self.live.as_ref().and_then(|live| live.detection.as_ref()) {
            share
                .board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain_rules(&rule_ids);
        }
        // Kept SLOs have seen the store already; loaded ones see it now.
        let slos = self.slos.as_mut().filter(|_| replay_slos);
        let alerts = crate::alert_ledger::replay_store(
            &data,
            &stream,
            &schema,
            &mut self.engine,
            slos,
            self.correlations.as_mut(),
        )?;
        self.emit(alerts)?;
        self.publish();
        Ok(())
    }

    /// Observes stored rows with their clock.
    pub fn observe(&mut self, batch: &RecordBatch, clock: &[i64]) -> Result<(), ServerError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut alerts = self.engine.observe_at(batch, clock);
        if let Some(slos) = &mut self.slos {
            alerts.extend(slos.observe_at(batch, clock));
        }
        if let Some(correlations) = &mut self.correlations {
            let now = self.engine.stats().clock;
            let correlated = correlations.observe(&alerts, Some(batch), now)?;
            alerts.extend(correlated);
        }
        self.emit(alerts)
    }

    /// Observes rows stored for another stream than the inference one: the
    /// correlations' side streams (see [`Correlator::observe_stream`]).
    pub fn observe_side_stream(
        &mut self,
        stream: &str,
        batch: &RecordBatch,
    ) -> Result<(), ServerError> {
        let Some(correlations) = &mut self.correlations else {
            return Ok(());
        };
        let alerts = correlations.observe_stream(stream, batch)?;
        self.emit(alerts)
    }

    /// Moves the clock to `clock` without events (a heartbeat of silent
    /// live inputs, see [`crate::live`]); windows that ended are judged.
    pub fn heartbeat(&mut self, clock: i64) -> Result<(), ServerError> {
        let mut alerts = self.engine.advance_clock(clock);
        if let Some(correlations) = &mut self.correlations {
            let correlated = correlations.observe(&alerts, None, Some(clock))?;
            alerts.extend(correlated);
        }
        self.emit(alerts)
    }

    /// End of input: the last windows are judged.
    pub fn finish(&mut self) -> Result<(), ServerError> {
        let mut alerts = self.engine.finish();
        if let Some(slos) = &mut self.slos {
            alerts.extend(slos.finish());
        }
        if let Some(correlations) = &mut self.correlations {
            let correlated = correlations.finish(&alerts)?;
            alerts.extend(correlated);
        }
        self.emit(alerts)
    }

    /// End of a finite input: the notifier's groups get their timers run
    /// out, since the events that would move them never come.
    pub fn drain_notifications(&mut self) -> Result<(), ServerError> {
        match (&self.notifier, self.engine.stats().clock) {
            (Some(notifier), Some(clock)) => notifier.drain(clock),
            _ => Ok(()),
        }
    }

    /// Writes transitions to the outputs, the live board when serving, and
    /// the notifier, whose clock follows detection's even without
    /// transitions (group timers run on event time).
    fn emit(&mut self, alerts: Vec<Alert>) -> Result<(), ServerError> {
        let clock = self.engine.stats().clock;
        if let Some(notifier) = &self.notifier {
            if !alerts.is_empty() || clock > self.notified_clock {
                // Acknowledgements, silences and deliveries must never stop
                // ingest or detection: a failure is logged, and the
                // dispatcher's journal keeps what it had accepted.
                if let Err(error) = notifier.observe(&alerts, clock) {
                    eprintln!("inferwatch: notification pipeline: {error}");
                }
                self.notified_clock = clock.max(self.notified_clock);
            }
        }
        if alerts.is_empty() {
            return Ok(());
        }
        if let Some(share) = self.live.as_ref().and_then(|live| live.detection.as_ref()) {
            share
                .board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .update(&alerts);
        }
        self.transitions += self.outputs.write(alerts)?;
        Ok(())
    }

    /// Publishes the rules' observable state for the API.
    pub fn publish(&self) {
        if let Some(share) = self.live.as_ref().and_then(|live| live.detection.as_ref()) {
            let snapshot = crate::live::RulesSnapshot {
                states: self.engine.observable_state(),
                clock: self.engine.stats().clock,
                events: self.engine.stats().events,
                slos: self.slos.as_ref().map_or(Vec::new(), SloEvaluator::report),
                correlation_late: self
                    .correlations
                    .as_ref()
                    .map_or(0, |correlations| correlations.dropped().0),
            };
            *share.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        }
    }

    /// Alert transitions written so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }
}

/// What the caller of [`ingest_pass`] hears while it runs (progress lines,
/// acknowledgements); everything has a default that does nothing.
pub trait PassObserver {
    /// Batches are durable through WAL `sequence`: `acked_events` in all.
    fn acknowledged(&mut self, _acked_events: u64, _sequence: u64) {}
    /// After every batch or idle poll.
    fn progress(&mut self, _events: u64, _dead_letters: u64, _writer: &StoreWriter) {}
}

/// An observer that hears nothing.
pub struct Silent;

impl PassObserver for Silent {}

/// What one pass reads and where it writes.
pub struct PassOptions {
    /// Files, globs or stdin, and how to read them.
    pub input: InputSpec,
    /// Decoder threads.
    pub threads: usize,
    /// The stream to store into.
    pub stream: String,
    /// Where refused lines go.
    pub dead_letter_path: PathBuf,
    /// How far ahead of the agreed clock an event may be (e.g. `2m`).
    pub max_future: String,
    /// Set to end the input early (a signal handler).
    pub stop: Arc<AtomicBool>,
    /// Lines the event-time guard held when the last run stopped.
    pub held: Vec<serde_json::Value>,
}

/// What one pass did.
pub struct PassSummary {
    /// Events stored.
    pub events: u64,
    /// Decode counters, dead letters by reason included.
    pub counters: DecodeCounters,
    /// When the pass started.
    pub started: Instant,
}

/// The one loop: reads `options.input`, decodes with `decoder`, admits
/// through the event-time guard, writes dead letters, appends to the store
/// and feeds `detection`. Acknowledges (to `observer`) the batches the WAL
/// made durable. At the end of a finite input, what the guard still holds
/// is released or refused; a stopped follower keeps it in the WAL position.
pub fn ingest_pass<D: ChunkDecoder>(
    options: PassOptions,
    decoder: D,
    writer: &mut StoreWriter,
    mut detection: Option<&mut Detection>,
    observer: &mut dyn PassObserver,
) -> Result<PassSummary, ServerError> {
    let follow = options.input.follow;
    let mut held_decoder = decoder.clone();
    let mut pipeline = Pipeline::start_with_stop(
        options.input,
        decoder,
        options.threads,
        options.stop.clone(),
    )?;
    let started = Instant::now();
    let mut counters = DecodeCounters::default();
    let mut dead_letters: Option<DeadLetterWriter> = None;
    let mut events = 0u64;
    let mut acked_events = 0u64;
    let mut guard = event_time_guard(follow, &options.max_future)?;
    let dead_letter_path = &options.dead_letter_path;
    let mut last_append = LastAppend::default();
    for (decoded, clock) in readmit_held(&options.held, &mut held_decoder, &mut guard) {
        if decoded.batch.num_rows() > 0 {
            writer.append(&options.stream, &decoded.batch, None)?;
            events += decoded.batch.num_rows() as u64;
            if let Some(detection) = detection.as_deref_mut() {
                detection.observe(&decoded.batch, &clock)?;
            }
        }
    }
    // Appended batches not yet durable: (WAL sequence, events). The WAL
    // fsyncs in the background, so durability trails the appends.
    let mut unacked: VecDeque<(u64, u64)> = VecDeque::new();
    while let Some(event) = pipeline.next_event()? {
        match event {
            PipelineEvent::Batch {
                mut decoded,
                position,
                ..
            } => {
                let clock = guard.admit(&mut decoded);
                counters.merge(&decoded.counters);
                write_dead_letters(&mut dead_letters, dead_letter_path, &decoded)?;
                let rows = decoded.batch.num_rows() as u64;
                let sequence = append_guarded(
                    writer,
                    &options.stream,
                    &decoded.batch,
                    position.files(),
                    &guard,
                    &mut last_append,
                )?;
                events += rows;
                unacked.push_back((sequence, rows));
                if let Some(detection) = detection.as_deref_mut() {
                    detection.observe(&decoded.batch, &clock)?;
                }
            }
            PipelineEvent::Idle => writer.tick()?,
        }
        let durable = writer.durable_sequence();
        let mut acked_through = None;
        while let Some(&(sequence, rows)) = unacked.front().filter(|(seq, _)| *seq <= durable) {
            acked_events += rows;
            acked_through = Some(sequence);
            unacked.pop_front();
        }
        if let Some(sequence) = acked_through {
            observer.acknowledged(acked_events, sequence);
        }
        observer.progress(events, counters.dead_letters(), writer);
    }
    if !follow {
        // End of input: what the guard still holds is released or refused.
        // (A stopped follower keeps it held in the WAL position instead.)
        let released = guard.finish();
        events += store_guard_release(writer, &options.stream, &released, &last_append)?;
        if let (Some(batch), Some(detection)) = (&released.batch, detection.as_deref_mut()) {
            detection.observe(batch, &released.clock)?;
        }
        write_released_dead_letters(
            &mut dead_letters,
            dead_letter_path,
            &released,
            &mut counters,
        )?;
    }
    if let Some(detection) = detection {
        detection.finish()?;
    }
    pipeline.finish();
    Ok(PassSummary {
        events,
        counters,
        started,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size("500MB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("10 parsecs").is_err());
    }
}
