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
pub fn replay_store(
    data: &Path,
    stream: &str,
    schema: &arrow::datatypes::SchemaRef,
    engine: &mut Engine,
) -> Result<Vec<Alert>, ServerError> {
    let reader = StoreReader::open(data)?;
    let Ok(snapshot) = reader.snapshot(stream, None, None) else {
        // No schema yet: nothing was stored.
        return Ok(Vec::new());
    };
    let mut segments = snapshot.segments.clone();
    segments.sort_by_key(|file| (file.first_sequence, file.hour_start));
    let mut alerts = Vec::new();
    let mut observe = |batch: &RecordBatch| -> Result<(), ServerError> {
        if batch.num_rows() > 0 {
            let aligned = align_to_schema(batch, schema)?;
            alerts.extend(engine.observe(&aligned));
        }
        Ok(())
    };
    for file in &segments {
        for batch in read_parquet(&file.path)? {
            observe(&batch)?;
        }
    }
    for batch in &snapshot.tail {
        observe(batch)?;
    }
    Ok(alerts)
}
