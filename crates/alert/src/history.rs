//! The alert history: an append-only JSONL file in the state dir holding
//! every transition, notification, suppression (silence, inhibition,
//! acknowledgement, flapping), silence, acknowledgement and remediation,
//! with a snapshot of the pipeline state beside it.
//!
//! * `alert-history.jsonl` ([`HISTORY_FILE`]): one [`HistoryRecord`] per
//!   line, numbered by `seq`, stamped with the event time `at`. Each call
//!   into the pipeline appends its records followed by a `commit` record and
//!   fsyncs once. On open, anything after the last `commit` (a torn line, a
//!   batch cut short by a crash) is cut off: a batch is there entirely or
//!   not at all, and a batch that is not there was never returned to the
//!   caller.
//! * `notify-state.json` ([`SNAPSHOT_FILE`]): the pipeline state (groups and
//!   their timers, flapping trackers, silences, acknowledgements, risk, the
//!   notifications not yet confirmed as handed to the dispatcher) as of a
//!   history position. Written atomically (temporary file, fsync, rename)
//!   every `snapshot_every_records` records. On open the snapshot is loaded
//!   and the history after it is replayed, so a restart resumes exactly
//!   where the last committed batch left off.
//!
//! The store crate will take this over; the record shapes are meant to
//! carry across.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use inferwatch_core::{Alert, AlertState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::delivery::Remediation;
use crate::event_time::clock_reading;
use crate::grouping::{Notification, Suppression};
use crate::pipeline::Acknowledgement;
use crate::silence::Silence;
use crate::AlertError;

/// The history file in the state dir.
pub const HISTORY_FILE: &str = "alert-history.jsonl";
/// The pipeline state snapshot in the state dir.
pub const SNAPSHOT_FILE: &str = "notify-state.json";

/// Where a transition came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionOrigin {
    /// The detection engine (input to the pipeline).
    Engine,
    /// Risk scoring inside the pipeline (derived, so not replayed).
    Risk,
}

/// What a history record says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HistoryEntry {
    /// An alert transition entered the pipeline.
    Transition {
        /// Engine input or derived risk alert.
        origin: TransitionOrigin,
        /// The transition.
        alert: Box<Alert>,
    },
    /// A notification was produced for the dispatcher.
    Notification {
        /// The notification.
        notification: Box<Notification>,
    },
    /// The caller confirmed that a notification was handed to the dispatcher.
    Sent {
        /// Which one.
        notification_id: String,
    },
    /// An alert was left out of notifications.
    Suppressed {
        /// The episode.
        alert_id: String,
        /// Rule + group identity.
        fingerprint: String,
        /// The rule.
        rule_id: String,
        /// Its state at the time.
        state: AlertState,
        /// Why.
        suppression: Suppression,
    },
    /// A fingerprint started flapping (`settled: false`) or settled.
    Flapping {
        /// Rule + group identity.
        fingerprint: String,
        /// The episode of the transition concerned.
        alert_id: String,
        /// State changes counted when it started flapping.
        changes: usize,
        /// True when it settled.
        settled: bool,
    },
    /// A silence was added or replaced.
    Silence {
        /// The silence.
        silence: Silence,
    },
    /// A silence was ended early through the API.
    SilenceExpired {
        /// Which one.
        id: String,
    },
    /// A firing alert was acknowledged.
    Acknowledged {
        /// The acknowledgement.
        acknowledgement: Acknowledgement,
    },
    /// An acknowledgement was withdrawn through the API.
    Unacknowledged {
        /// The episode it was on.
        alert_id: String,
    },
    /// A rollback (or other remediation) was attempted.
    Remediation {
        /// What was sent and what came back.
        remediation: Box<Remediation>,
    },
    /// The end of one batch: everything before it is complete.
    Commit,
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Position in the history, from 1.
    pub seq: u64,
    /// Event time of the record (RFC 3339 in JSON; null, read as
    /// `i64::MIN`, for a call made before any event was seen).
    #[serde(with = "clock_reading")]
    pub at: i64,
    /// What happened.
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

/// The history file, open for appending.
pub(crate) struct HistoryLog {
    path: PathBuf,
    file: File,
    /// Byte length of the committed history.
    length: u64,
    /// Seq of the last record written.
    last_seq: u64,
}

/// What was read from the history after a position.
pub(crate) struct HistoryTail {
    pub(crate) records: Vec<HistoryRecord>,
}

impl HistoryLog {
    /// Opens (or creates) the history, reads the committed records after
    /// byte `offset` (whose seq must follow `seq_at_offset`), and cuts off
    /// whatever follows the last commit.
    pub(crate) fn open(
        path: &Path,
        offset: u64,
        seq_at_offset: u64,
    ) -> Result<(HistoryLog, HistoryTail), AlertError> {
        let io_error = |source| AlertError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        let file_length = file.metadata().map_err(io_error)?.len();
        if offset > file_length {
            return Err(AlertError::History {
                path: path.to_path_buf(),
                line: 0,
                message: format!(
                    "the state snapshot covers {offset} bytes but the history has only {file_length}; \
                     remove {SNAPSHOT_FILE} to rebuild the state from the history"
                ),
            });
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_error)?;
        let mut reader = BufReader::new(&mut file);
        let mut records = Vec::new();
        let mut batch = Vec::new();
        let mut position = offset;
        let mut committed_length = offset;
        let mut last_seq = seq_at_offset;
        let mut line = Vec::new();
        let mut line_number = 0u64;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io_error)?;
            if read == 0 {
                break;
            }
            line_number += 1;
            position += read as u64;
            if line.last() != Some(&b'\n') {
                break; // torn last line
            }
            let record: HistoryRecord = match serde_json::from_slice(&line) {
                Ok(record) => record,
                Err(error) => {
                    // Damage is only acceptable in the uncommitted tail,
                    // which is cut off; check that nothing committed follows.
                    if committed_after(&mut reader).map_err(io_error)? {
                        return Err(AlertError::History {
                            path: path.to_path_buf(),
                            line: if offset == 0 { line_number } else { 0 },
                            message: format!(
                                "unreadable history record at byte {}: {error}",
                                position - read as u64
                            ),
                        });
                    }
                    break;
                }
            };
            if record.seq != last_seq + batch.len() as u64 + 1 {
                return Err(AlertError::History {
                    path: path.to_path_buf(),
                    line: if offset == 0 { line_number } else { 0 },
                    message: format!(
                        "history record seq {} where {} was expected",
                        record.seq,
                        last_seq + batch.len() as u64 + 1
                    ),
                });
            }
            let is_commit = record.entry == HistoryEntry::Commit;
            batch.push(record);
            if is_commit {
                last_seq += batch.len() as u64;
                records.append(&mut batch);
                committed_length = position;
            }
        }
        drop(reader);
        if committed_length < file_length {
            file.set_len(committed_length).map_err(io_error)?;
            file.sync_data().map_err(io_error)?;
        }
        Ok((
            HistoryLog {
                path: path.to_path_buf(),
                file,
                length: committed_length,
                last_seq,
            },
            HistoryTail { records },
        ))
    }

    /// Seq of the last committed record.
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Byte length of the committed history.
    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    /// Appends one batch and its commit, and fsyncs. On failure the file is
    /// cut back to the previous batch, so a retry cannot leave half a batch.
    pub(crate) fn append_batch(
        &mut self,
        entries: Vec<(i64, HistoryEntry)>,
    ) -> Result<usize, AlertError> {
        if entries.is_empty() {
            return Ok(0);
        }
        let last_at = entries.last().map(|(at, _)| *at).unwrap_or_default();
        let mut text = Vec::new();
        let mut seq = self.last_seq;
        for (at, entry) in entries.into_iter().chain([(last_at, HistoryEntry::Commit)]) {
            seq += 1;
            let record = HistoryRecord { seq, at, entry };
            serde_json::to_writer(&mut text, &record).map_err(|error| {
                AlertError::Internal(format!("cannot serialise a history record: {error}"))
            })?;
            text.push(b'\n');
        }
        let written = self
            .file
            .write_all(&text)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = written {
            // Best effort: the next open would cut the partial batch anyway.
            let _ = self.file.set_len(self.length);
            return Err(AlertError::Io {
                path: self.path.clone(),
                source,
            });
        }
        let count = (seq - self.last_seq) as usize;
        self.length += text.len() as u64;
        self.last_seq = seq;
        Ok(count)
    }
}

/// True when a `commit` record follows in the reader (used to tell a torn
/// tail from damage in the middle of the file).
fn committed_after(reader: &mut impl BufRead) -> std::io::Result<bool> {
    const COMMIT_MARKER: &[u8] = b"\"kind\":\"commit\"";
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(false);
        }
        if line
            .windows(COMMIT_MARKER.len())
            .any(|window| window == COMMIT_MARKER)
        {
            return Ok(true);
        }
    }
}

/// Which alert transitions to return from the history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Transitions at or after this event time (UTC nanoseconds).
    pub from: Option<i64>,
    /// Transitions before this event time.
    pub to: Option<i64>,
    /// Only this rule.
    pub rule_id: Option<String>,
    /// Only this state.
    pub state: Option<AlertState>,
    /// Only this fingerprint.
    pub fingerprint: Option<String>,
}

impl HistoryQuery {
    fn accepts(&self, at: i64, alert: &Alert) -> bool {
        self.from.is_none_or(|from| at >= from)
            && self.to.is_none_or(|to| at < to)
            && self
                .rule_id
                .as_ref()
                .is_none_or(|rule_id| &alert.rule_id == rule_id)
            && self.state.is_none_or(|state| alert.state == state)
            && self
                .fingerprint
                .as_ref()
                .is_none_or(|fingerprint| &alert.fingerprint == fingerprint)
    }
}

/// One transition as the history holds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoricTransition {
    /// Event time it entered the pipeline (UTC nanoseconds).
    pub at: i64,
    /// Engine input or risk alert.
    pub origin: TransitionOrigin,
    /// The transition.
    pub alert: Alert,
}

/// Every committed record of a state dir's history, oldest first (an
/// unfinished last batch is left out).
pub fn read_history(state_dir: &Path) -> Result<Vec<HistoryRecord>, AlertError> {
    let mut records = Vec::new();
    scan_history(state_dir, |record| records.push(record))?;
    Ok(records)
}

/// The alert transitions in a state dir's history that match the query,
/// oldest first. Reads committed records only.
pub fn query_history(
    state_dir: &Path,
    query: &HistoryQuery,
) -> Result<Vec<HistoricTransition>, AlertError> {
    let mut found = Vec::new();
    scan_history(state_dir, |record| {
        if let HistoryEntry::Transition { origin, alert } = record.entry {
            if query.accepts(record.at, &alert) {
                found.push(HistoricTransition {
                    at: record.at,
                    origin,
                    alert: *alert,
                });
            }
        }
    })?;
    Ok(found)
}

/// Every committed record of one history file, oldest first (an unfinished
/// last batch is left out). Unlike [`read_history`], a missing file is an
/// error: the caller named it.
pub fn read_history_file(path: &Path) -> Result<Vec<HistoryRecord>, AlertError> {
    let file = File::open(path).map_err(|source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut records = Vec::new();
    scan_records(path, file, |record| records.push(record))?;
    Ok(records)
}

/// Calls `visit` with each committed record, commits left out.
fn scan_history(state_dir: &Path, visit: impl FnMut(HistoryRecord)) -> Result<(), AlertError> {
    let path = state_dir.join(HISTORY_FILE);
    match File::open(&path) {
        Ok(file) => scan_records(&path, file, visit),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AlertError::Io { path, source }),
    }
}

/// Reads committed batches. An unreadable line is the torn tail of a batch
/// in progress, unless a commit follows it: then the file is damaged, and
/// reading on would silently drop history.
fn scan_records(
    path: &Path,
    file: File,
    mut visit: impl FnMut(HistoryRecord),
) -> Result<(), AlertError> {
    let io_error = |source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(file);
    let mut batch = Vec::new();
    let mut line = String::new();
    let mut line_number = 0u64;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(io_error)? == 0 {
            break;
        }
        line_number += 1;
        let record = match serde_json::from_str::<HistoryRecord>(&line) {
            Ok(record) => record,
            Err(error) => {
                if committed_after(&mut reader).map_err(io_error)? {
                    return Err(AlertError::History {
                        path: path.to_path_buf(),
                        line: line_number,
                        message: format!("unreadable history record: {error}"),
                    });
                }
                break;
            }
        };
        if record.entry == HistoryEntry::Commit {
            batch.drain(..).for_each(&mut visit);
        } else {
            batch.push(record);
        }
    }
    Ok(())
}

/// Writes a JSON snapshot atomically: temporary file, fsync, rename, and an
/// fsync of the directory so the rename itself survives a crash.
pub(crate) fn write_snapshot(
    state_dir: &Path,
    snapshot: &impl Serialize,
) -> Result<(), AlertError> {
    let path = state_dir.join(SNAPSHOT_FILE);
    let temporary = state_dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let io_error = |path: &Path, source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec(snapshot)
        .map_err(|error| AlertError::Internal(format!("cannot serialise the state: {error}")))?;
    let mut file = File::create(&temporary).map_err(|source| io_error(&temporary, source))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io_error(&temporary, source))?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(|source| io_error(&path, source))?;
    if let Ok(directory) = File::open(state_dir) {
        // Not every platform can fsync a directory; the rename is still atomic.
        let _ = directory.sync_all();
    }
    Ok(())
}

/// Reads the snapshot, if there is one.
pub(crate) fn read_snapshot<T: DeserializeOwned>(
    state_dir: &Path,
) -> Result<Option<T>, AlertError> {
    let path = state_dir.join(SNAPSHOT_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(AlertError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|error| AlertError::History {
            path,
            line: error.line() as u64,
            message: format!("unreadable state snapshot: {error}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_batch_is_cut_off_on_open() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(HISTORY_FILE);
        let (mut log, tail) = HistoryLog::open(&path, 0, 0).unwrap();
        assert!(tail.records.is_empty());
        log.append_batch(vec![(
            5,
            HistoryEntry::SilenceExpired {
                id: "s1".to_string(),
            },
        )])
        .unwrap();
        let committed = std::fs::metadata(&path).unwrap().len();
        drop(log);
        // A crash mid-batch: a complete record without its commit, then a torn line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"at\":\"1970-01-01T00:00:00Z\",\"kind\":\"silence_expired\",\"id\":\"s2\"}\n{\"seq\":4,").unwrap();
        drop(file);
        let (log, tail) = HistoryLog::open(&path, 0, 0).unwrap();
        assert_eq!(tail.records.len(), 2);
        assert_eq!(log.last_seq(), 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), committed);
    }

    #[test]
    fn damage_before_a_commit_is_an_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join(HISTORY_FILE);
        let (mut log, _) = HistoryLog::open(&path, 0, 0).unwrap();
        for id in ["a", "b"] {
            log.append_batch(vec![(
                1,
                HistoryEntry::SilenceExpired { id: id.to_string() },
            )])
            .unwrap();
        }
        drop(log);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("\"seq\":1,", "\"seq\":1,,", 1)).unwrap();
        let error = HistoryLog::open(&path, 0, 0).err().unwrap().to_string();
        assert!(
            error.contains(":1: corrupt alert history: unreadable history record at byte 0"),
            "{error}"
        );
    }
}
