//! Exactly-once alert output across restarts (`run`, `serve`).
//!
//! The store is the durable record of what was observed; the rule engine's
//! state is not saved. After a restart, [`replay_store`] feeds every stored
//! event back through a fresh engine (in WAL order, as it was first seen),
//! which rebuilds the windows and the firing set deterministically. The
//! transitions that replay yields were either written before the crash or
//! lost with it; an [`AlertLedger`] per output file knows which, by the
//! transition's identity (alert id, state, end), and writes only the lost
//! ones. It stays on for the rest of the run: events re-read after the last
//! durable WAL position may repeat a transition that was written, though
//! the events behind it were not yet durable.
//!
//! Replay costs one read of the store per restart (the retention window);
//! a saved detector snapshot would bound it, at the price of a state format.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;
use inferwatch_core::Alert;
use inferwatch_detect::Engine;
use inferwatch_store::{align_to_schema, read_parquet, StoreReader};

use crate::correlator::Correlator;
use crate::ServerError;

/// What makes a transition the same transition when it is raised again.
fn transition_key(alert: &Alert) -> String {
    format!(
        "{}\u{1f}{:?}\u{1f}{}",
        alert.alert_id,
        alert.state,
        alert.ends_at.as_deref().unwrap_or("")
    )
}

/// An append-only alerts JSONL file and the transitions already in it.
pub struct AlertLedger {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    written: HashSet<String>,
}

impl AlertLedger {
    /// Opens `path` for appending. A torn last line (a crash while writing
    /// it) is cut off first, so the file stays valid JSONL and the
    /// transition is written again whole.
    pub fn open(path: &Path) -> Result<AlertLedger, ServerError> {
        let io = |error| ServerError::io(path, error);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io)?;
        let whole = text
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        if whole < text.len() {
            file.set_len(whole as u64).map_err(io)?;
            eprintln!(
                "inferwatch run: {}: removed a torn last line ({} bytes) left by a crash",
                path.display(),
                text.len() - whole
            );
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let written = text[..whole]
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice::<Alert>(line).ok())
            .map(|alert| transition_key(&alert))
            .collect();
        Ok(AlertLedger {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            written,
        })
    }

    /// Appends the transitions not yet in the file; returns them.
    pub fn write<'a>(&mut self, alerts: &'a [Alert]) -> Result<Vec<&'a Alert>, ServerError> {
        let io = |error| ServerError::io(&self.path, error);
        let mut fresh = Vec::new();
        for alert in alerts {
            if !self.written.insert(transition_key(alert)) {
                continue;
            }
            serde_json::to_writer(&mut self.file, alert)?;
            self.file.write_all(b"\n").map_err(io)?;
            fresh.push(alert);
        }
        self.file.flush().map_err(io)?;
        Ok(fresh)
    }
}

/// Feeds every event stored in `stream` through `engine`, oldest WAL record
/// first, and returns the transitions it raises. Nothing when the store is
/// new.
/// Each batch is aligned to `schema`, the decoder's, which the engine's
/// rules were compiled against (the stored schema may have more columns).
///
/// The heartbeats a live run recorded ([`crate::live::HEARTBEAT_STREAM`])
/// move the clock again at the same points of event time: each goes in
/// just before the first row later than it (rows come in time order within
/// a segment), and those later than every row go in at the end, so an
/// alert that fired while the inputs were silent fires again in replay.
///
/// With `correlations`, each step's alerts go to them too, and the other
/// stored streams their Sigma rules read are released in time order with
/// the inference events ([`Correlator::open_stored_streams`]).
pub fn replay_store(
    data: &Path,
    stream: &str,
    schema: &arrow::datatypes::SchemaRef,
    engine: &mut Engine,
    slos: Option<&mut inferwatch_detect::SloEvaluator>,
    mut correlations: Option<&mut Correlator>,
) -> Result<Vec<Alert>, ServerError> {
    let reader = StoreReader::open(data)?;
    let heartbeats = stored_heartbeats(&reader)?;
    if let Some(correlations) = correlations.as_deref_mut() {
        correlations.open_stored_streams(data, stream)?;
    }
    let mut replay = Replay {
        engine,
        slos,
        correlations,
        heartbeats,
        next_heartbeat: 0,
        alerts: Vec::new(),
    };
    // Without a schema the stream has no rows yet; side rows may still.
    if let Ok(snapshot) = reader.snapshot(stream, None, None) {
        let mut segments = snapshot.segments.clone();
        segments.sort_by_key(|file| (file.first_sequence, file.hour_start));
        for file in &segments {
            for batch in read_parquet(&file.path)? {
                replay.observe(&align_to_schema(&batch, schema)?)?;
            }
        }
        for batch in &snapshot.tail {
            replay.observe(&align_to_schema(batch, schema)?)?;
        }
    }
    while replay.next_heartbeat < replay.heartbeats.len() {
        replay.beat(replay.heartbeats[replay.next_heartbeat])?;
        replay.next_heartbeat += 1;
    }
    let Replay {
        correlations,
        mut alerts,
        ..
    } = replay;
    if let Some(correlations) = correlations {
        alerts.extend(correlations.close_stored_streams()?);
    }
    Ok(alerts)
}

/// One replay's detectors and what they raised.
struct Replay<'a> {
    engine: &'a mut Engine,
    slos: Option<&'a mut inferwatch_detect::SloEvaluator>,
    correlations: Option<&'a mut Correlator>,
    heartbeats: Vec<i64>,
    next_heartbeat: usize,
    alerts: Vec<Alert>,
}

impl Replay<'_> {
    fn beat(&mut self, clock: i64) -> Result<(), ServerError> {
        let alerts = self.engine.advance_clock(clock);
        self.step(alerts, None, Some(clock))
    }

    /// The rule alerts of one step go to the correlations with its rows.
    fn step(
        &mut self,
        mut alerts: Vec<Alert>,
        batch: Option<&RecordBatch>,
        now: Option<i64>,
    ) -> Result<(), ServerError> {
        if let Some(correlations) = self.correlations.as_deref_mut() {
            let correlated = correlations.observe(&alerts, batch, now)?;
            alerts.extend(correlated);
        }
        self.alerts.extend(alerts);
        Ok(())
    }

    fn rows(&mut self, batch: &RecordBatch) -> Result<(), ServerError> {
        let alerts = self.engine.observe(batch);
        let now = self.engine.stats().clock;
        self.step(alerts, Some(batch), now)
    }

    fn observe(&mut self, aligned: &RecordBatch) -> Result<(), ServerError> {
        if aligned.num_rows() == 0 {
            return Ok(());
        }
        // SLOs keep their own clock and have no heartbeats: the whole batch.
        if let Some(slos) = self.slos.as_deref_mut() {
            let alerts = slos.observe(aligned);
            self.step(alerts, None, None)?;
        }
        let timestamps = aligned
            .column_by_name(inferwatch_core::column::TIMESTAMP)
            .and_then(|column| {
                column
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampNanosecondArray>()
                    .map(|array| array.values().to_vec())
            })
            .unwrap_or_default();
        let mut start = 0usize;
        for (row, &timestamp) in timestamps.iter().enumerate() {
            if self.next_heartbeat < self.heartbeats.len()
                && self.heartbeats[self.next_heartbeat] < timestamp
            {
                if row > start {
                    self.rows(&aligned.slice(start, row - start))?;
                }
                while self.next_heartbeat < self.heartbeats.len()
                    && self.heartbeats[self.next_heartbeat] < timestamp
                {
                    self.beat(self.heartbeats[self.next_heartbeat])?;
                    self.next_heartbeat += 1;
                }
                start = row;
            }
        }
        if start < aligned.num_rows() {
            self.rows(&aligned.slice(start, aligned.num_rows() - start))?;
        }
        Ok(())
    }
}

/// The clocks the recorded heartbeats set, in order.
fn stored_heartbeats(reader: &StoreReader) -> Result<Vec<i64>, ServerError> {
    let Ok(snapshot) = reader.snapshot(crate::live::HEARTBEAT_STREAM, None, None) else {
        return Ok(Vec::new());
    };
    let mut clocks = Vec::new();
    let mut take = |batch: &RecordBatch| {
        if let Some(times) = batch
            .column_by_name(inferwatch_core::column::TIMESTAMP)
            .and_then(|column| {
                column
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampNanosecondArray>()
            })
        {
            clocks.extend(times.values().iter().copied());
        }
    };
    for file in &snapshot.segments {
        for batch in read_parquet(&file.path)? {
            take(&batch);
        }
    }
    for batch in &snapshot.tail {
        take(batch);
    }
    clocks.sort_unstable();
    Ok(clocks)
}
