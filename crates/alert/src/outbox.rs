//! The durable outbox: an append-only JSONL journal of deliveries.
//!
//! One line per record, each tagged by `op`:
//! * `enqueued`: a delivery (action, idempotency key, alert). Written and
//!   fsynced before [`Dispatcher::submit`](crate::Dispatcher::submit) returns;
//! * `attempt`: a failed attempt (count and reason), so retries resume at
//!   the right count after a restart. Not fsynced: losing one only costs an
//!   extra retry;
//! * `delivered` / `dead`: the delivery is finished. Fsynced, so a restart
//!   doesn't send it again;
//! * `seen`: a finished delivery's key, kept by compaction so that a
//!   re-submitted alert is still recognised as a duplicate.
//!
//! Opening the journal replays it: what was enqueued and not finished is
//! pending again. A torn last line (a crash mid-write) is cut off; any other
//! unreadable line is an error naming the line. When finished records make
//! up at least half of a journal past its size threshold, it is rewritten
//! (to a temporary file, fsynced, renamed over) with the pending deliveries
//! and the most recent finished keys only.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

use inferwatch_core::Alert;
use serde::{Deserialize, Serialize};

use crate::delivery::{now_rfc3339, Delivery};
use crate::AlertError;

/// Journal size past which compaction is considered.
pub const DEFAULT_COMPACT_THRESHOLD_BYTES: u64 = 16 * 1024 * 1024;

/// Finished keys kept through compaction for duplicate detection.
pub const DEFAULT_REMEMBER_FINISHED: usize = 50_000;

#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Enqueued {
        seq: u64,
        action: String,
        key: String,
        at: String,
        alert: Box<Alert>,
    },
    Attempt {
        seq: u64,
        attempts: u32,
        at: String,
        error: String,
    },
    Delivered {
        seq: u64,
        action: String,
        key: String,
        attempts: u32,
        at: String,
        summary: String,
    },
    Dead {
        seq: u64,
        action: String,
        key: String,
        attempts: u32,
        at: String,
        reason: String,
    },
    Seen {
        action: String,
        key: String,
    },
}

/// A delivery that is enqueued and not finished.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) action: String,
    pub(crate) key: String,
    /// Failed attempts so far.
    pub(crate) failed_attempts: u32,
    offset: u64,
    length: u64,
}

/// How a delivery finished.
pub(crate) enum Finish<'a> {
    Delivered { attempts: u32, summary: &'a str },
    Dead { attempts: u32, reason: &'a str },
}

pub(crate) struct Outbox {
    path: PathBuf,
    appender: File,
    reader: File,
    length: u64,
    /// Bytes of records that compaction would drop.
    garbage: u64,
    next_seq: u64,
    pending: BTreeMap<u64, PendingEntry>,
    pending_keys: HashMap<String, u64>,
    finished: HashSet<String>,
    finished_order: VecDeque<String>,
    compact_threshold: u64,
    remember_finished: usize,
    /// Rewrites since opening.
    pub(crate) compactions: u64,
}

fn journal_key(action: &str, key: &str) -> String {
    format!("{action}/{key}")
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AlertError + '_ {
    move |source| AlertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// Opens (creating if needed) and replays the journal at `path`.
    pub(crate) fn open(
        path: &Path,
        compact_threshold: u64,
        remember_finished: usize,
    ) -> Result<Outbox, AlertError> {
        let existed = path.exists();
        let appender = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io_error(path))?;
        if !existed {
            sync_parent(path)?;
        }
        let reader = File::open(path).map_err(io_error(path))?;
        let mut outbox = Outbox {
            path: path.to_path_buf(),
            appender,
            reader,
            length: 0,
            garbage: 0,
            next_seq: 1,
            pending: BTreeMap::new(),
            pending_keys: HashMap::new(),
            finished: HashSet::new(),
            finished_order: VecDeque::new(),
            compact_threshold,
            remember_finished,
            compactions: 0,
        };
        outbox.replay()?;
        outbox.compact_if_worthwhile()?;
        Ok(outbox)
    }

    fn replay(&mut self) -> Result<(), AlertError> {
        let mut reader = BufReader::new(File::open(&self.path).map_err(io_error(&self.path))?);
        let mut offset = 0u64;
        let mut line_number = 0u64;
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader
                .read_until(b'\n', &mut line)
                .map_err(io_error(&self.path))?;
            if read == 0 {
                break;
            }
            line_number += 1;
            if line.last() != Some(&b'\n') {
                // A crash mid-append: the record was never acknowledged.
                self.appender
                    .set_len(offset)
                    .map_err(io_error(&self.path))?;
                self.appender.sync_all().map_err(io_error(&self.path))?;
                break;
            }
            let record: Record =
                serde_json::from_slice(&line).map_err(|error| AlertError::Journal {
                    path: self.path.clone(),
                    line: line_number,
                    message: error.to_string(),
                })?;
            self.apply(record, offset, read as u64);
            offset += read as u64;
        }
        self.length = offset;
        Ok(())
    }

    fn apply(&mut self, record: Record, offset: u64, length: u64) {
        match record {
            Record::Enqueued {
                seq, action, key, ..
            } => {
                self.next_seq = self.next_seq.max(seq + 1);
                self.pending_keys.insert(journal_key(&action, &key), seq);
                self.pending.insert(
                    seq,
                    PendingEntry {
                        action,
                        key,
                        failed_attempts: 0,
                        offset,
                        length,
                    },
                );
            }
            Record::Attempt { seq, attempts, .. } => match self.pending.get_mut(&seq) {
                Some(entry) => entry.failed_attempts = entry.failed_attempts.max(attempts),
                None => self.garbage += length,
            },
            Record::Delivered { seq, .. } | Record::Dead { seq, .. } => {
                self.garbage += length;
                if let Some(entry) = self.pending.remove(&seq) {
                    self.garbage += entry.length;
                    self.remember(journal_key(&entry.action, &entry.key));
                }
            }
            Record::Seen { action, key } => self.remember(journal_key(&action, &key)),
        }
    }

    fn remember(&mut self, journal_key: String) {
        self.pending_keys.remove(&journal_key);
        if self.finished.insert(journal_key.clone()) {
            self.finished_order.push_back(journal_key);
        }
    }

    /// True when this action already has (or had) this delivery.
    pub(crate) fn contains(&self, action: &str, key: &str) -> bool {
        let journal_key = journal_key(action, key);
        self.pending_keys.contains_key(&journal_key) || self.finished.contains(&journal_key)
    }

    /// Appends `enqueued` records in one write and fsyncs; returns their
    /// sequence numbers.
    pub(crate) fn append_enqueued<'a>(
        &mut self,
        deliveries: impl Iterator<Item = (&'a str, &'a Delivery)>,
    ) -> Result<Vec<u64>, AlertError> {
        let mut buffer = Vec::new();
        let mut added = Vec::new();
        let at = now_rfc3339();
        for (action, delivery) in deliveries {
            let seq = self.next_seq + added.len() as u64;
            let start = buffer.len();
            let record = Record::Enqueued {
                seq,
                action: action.to_string(),
                key: delivery.idempotency_key.clone(),
                at: at.clone(),
                alert: Box::new(delivery.alert.clone()),
            };
            serde_json::to_writer(&mut buffer, &record).map_err(|error| {
                AlertError::Internal(format!("cannot encode journal record: {error}"))
            })?;
            buffer.push(b'\n');
            added.push((
                seq,
                action.to_string(),
                delivery.idempotency_key.clone(),
                start,
                buffer.len() - start,
            ));
        }
        self.write_durably(&buffer, true)?;
        let base = self.length - buffer.len() as u64;
        let mut sequence_numbers = Vec::with_capacity(added.len());
        for (seq, action, key, start, length) in added {
            self.pending_keys.insert(journal_key(&action, &key), seq);
            self.pending.insert(
                seq,
                PendingEntry {
                    action,
                    key,
                    failed_attempts: 0,
                    offset: base + start as u64,
                    length: length as u64,
                },
            );
            sequence_numbers.push(seq);
        }
        self.next_seq += sequence_numbers.len() as u64;
        Ok(sequence_numbers)
    }

    /// Notes a failed attempt (not fsynced).
    pub(crate) fn record_attempt(
        &mut self,
        seq: u64,
        attempts: u32,
        error: &str,
    ) -> Result<(), AlertError> {
        let Some(entry) = self.pending.get_mut(&seq) else {
            return Err(AlertError::Internal(format!(
                "attempt on unknown delivery {seq}"
            )));
        };
        entry.failed_attempts = attempts;
        let record = Record::Attempt {
            seq,
            attempts,
            at: now_rfc3339(),
            error: error.to_string(),
        };
        let line = encode_line(&record)?;
        // Dropped at compaction (the count is rewritten), so it is garbage-to-be.
        self.garbage += line.len() as u64;
        self.write_durably(&line, false)
    }

    /// Marks a delivery finished (fsynced), compacting when worthwhile.
    pub(crate) fn finish(&mut self, seq: u64, finish: Finish<'_>) -> Result<(), AlertError> {
        let Some(entry) = self.pending.get(&seq) else {
            return Err(AlertError::Internal(format!(
                "finish of unknown delivery {seq}"
            )));
        };
        let (action, key) = (entry.action.clone(), entry.key.clone());
        let record = match finish {
            Finish::Delivered { attempts, summary } => Record::Delivered {
                seq,
                action: action.clone(),
                key: key.clone(),
                attempts,
                at: now_rfc3339(),
                summary: summary.to_string(),
            },
            Finish::Dead { attempts, reason } => Record::Dead {
                seq,
                action: action.clone(),
                key: key.clone(),
                attempts,
                at: now_rfc3339(),
                reason: reason.to_string(),
            },
        };
        let line = encode_line(&record)?;
        let written = self.write_durably(&line, true);
        // Finished in memory even if the write failed: the dispatcher moves
        // on, and only a restart (which replays the journal) sends it again.
        let length = line.len() as u64;
        self.apply(record, self.length.saturating_sub(length), length);
        written?;
        self.compact_if_worthwhile()
    }

    /// The first pending delivery after `seq` (or the first of all).
    pub(crate) fn pending_after(&self, seq: Option<u64>) -> Option<(u64, &PendingEntry)> {
        let start = match seq {
            Some(seq) => Bound::Excluded(seq),
            None => Bound::Unbounded,
        };
        self.pending
            .range((start, Bound::Unbounded))
            .next()
            .map(|(seq, entry)| (*seq, entry))
    }

    /// Reads a pending delivery's alert back from the journal.
    pub(crate) fn read(&mut self, seq: u64) -> Result<Alert, AlertError> {
        let Some(entry) = self.pending.get(&seq) else {
            return Err(AlertError::Internal(format!(
                "read of unknown delivery {seq}"
            )));
        };
        let line = self.read_line(entry.offset, entry.length)?;
        match serde_json::from_slice::<Record>(&line) {
            Ok(Record::Enqueued { alert, .. }) => Ok(*alert),
            Ok(_) => Err(AlertError::Internal(format!(
                "journal offset of delivery {seq} does not hold its enqueued record"
            ))),
            Err(error) => Err(AlertError::Journal {
                path: self.path.clone(),
                line: 0,
                message: format!("delivery {seq}: {error}"),
            }),
        }
    }

    fn read_line(&mut self, offset: u64, length: u64) -> Result<Vec<u8>, AlertError> {
        let mut line = vec![0; length as usize];
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(io_error(&self.path))?;
        self.reader
            .read_exact(&mut line)
            .map_err(io_error(&self.path))?;
        Ok(line)
    }

    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    pub(crate) fn pending_entry(&self, seq: u64) -> Option<&PendingEntry> {
        self.pending.get(&seq)
    }

    /// Current journal size in bytes.
    #[cfg(test)]
    pub(crate) fn length(&self) -> u64 {
        self.length
    }

    fn write_durably(&mut self, bytes: &[u8], sync: bool) -> Result<(), AlertError> {
        if let Err(error) = self.appender.write_all(bytes) {
            // Cut a partial record off, so the next append starts on a
            // line of its own and replay doesn't meet a corrupt line.
            let _ = self.appender.set_len(self.length);
            return Err(io_error(&self.path)(error));
        }
        // Written (if not yet durable): later offsets count these bytes.
        self.length += bytes.len() as u64;
        if sync {
            self.appender.sync_data().map_err(io_error(&self.path))?;
        }
        Ok(())
    }

    fn compact_if_worthwhile(&mut self) -> Result<(), AlertError> {
        if self.length >= self.compact_threshold && self.garbage * 2 >= self.length {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with pending deliveries and recent finished keys.
    pub(crate) fn compact(&mut self) -> Result<(), AlertError> {
        while self.finished_order.len() > self.remember_finished {
            if let Some(forgotten) = self.finished_order.pop_front() {
                self.finished.remove(&forgotten);
            }
        }
        let temporary = self.path.with_extension("jsonl.compacting");
        let mut output =
            std::io::BufWriter::new(File::create(&temporary).map_err(io_error(&temporary))?);
        let mut written = 0u64;
        for journal_key in &self.finished_order {
            let (action, key) = journal_key.split_once('/').unwrap_or(("", journal_key));
            let line = encode_line(&Record::Seen {
                action: action.to_string(),
                key: key.to_string(),
            })?;
            output.write_all(&line).map_err(io_error(&temporary))?;
            written += line.len() as u64;
        }
        let mut new_offsets = Vec::with_capacity(self.pending.len());
        let pending: Vec<(u64, u64, u64, u32)> = self
            .pending
            .iter()
            .map(|(seq, entry)| (*seq, entry.offset, entry.length, entry.failed_attempts))
            .collect();
        for (seq, offset, length, failed_attempts) in pending {
            let line = self.read_line(offset, length)?;
            output.write_all(&line).map_err(io_error(&temporary))?;
            new_offsets.push((seq, written));
            written += length;
            if failed_attempts > 0 {
                let attempt = encode_line(&Record::Attempt {
                    seq,
                    attempts: failed_attempts,
                    at: now_rfc3339(),
                    error: "attempt count carried over by compaction".to_string(),
                })?;
                output.write_all(&attempt).map_err(io_error(&temporary))?;
                written += attempt.len() as u64;
            }
        }
        let file = output.into_inner().map_err(|error| AlertError::Io {
            path: temporary.clone(),
            source: error.into_error(),
        })?;
        file.sync_all().map_err(io_error(&temporary))?;
        drop(file);
        std::fs::rename(&temporary, &self.path).map_err(io_error(&self.path))?;
        sync_parent(&self.path)?;
        self.appender = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_error(&self.path))?;
        self.reader = File::open(&self.path).map_err(io_error(&self.path))?;
        for (seq, offset) in new_offsets {
            if let Some(entry) = self.pending.get_mut(&seq) {
                entry.offset = offset;
            }
        }
        self.length = written;
        self.garbage = 0;
        self.compactions += 1;
        Ok(())
    }
}

fn encode_line(record: &Record) -> Result<Vec<u8>, AlertError> {
    let mut line = serde_json::to_vec(record)
        .map_err(|error| AlertError::Internal(format!("cannot encode journal record: {error}")))?;
    line.push(b'\n');
    Ok(line)
}

/// Makes a file's creation or rename durable.
fn sync_parent(path: &Path) -> Result<(), AlertError> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    File::open(parent)
        .and_then(|directory| directory.sync_all())
        .map_err(io_error(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(episode: &str) -> Delivery {
        let mut alert = crate::test_alert();
        alert.starts_at = episode.to_string();
        alert.alert_id = format!("a-{episode}");
        Delivery::new(alert)
    }

    #[test]
    fn replay_keeps_pending_and_forgets_nothing_finished() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("outbox.jsonl");
        let (first, second) = (delivery("t1"), delivery("t2"));
        {
            let mut outbox = Outbox::open(&path, u64::MAX, 100).unwrap();
            let seqs = outbox
                .append_enqueued([("hook", &first), ("hook", &second)].into_iter())
                .unwrap();
            outbox.record_attempt(seqs[1], 2, "HTTP 503").unwrap();
            outbox
                .finish(
                    seqs[0],
                    Finish::Delivered {
                        attempts: 1,
                        summary: "HTTP 200",
                    },
                )
                .unwrap();
        }
        let mut outbox = Outbox::open(&path, u64::MAX, 100).unwrap();
        assert_eq!(outbox.pending_count(), 1);
        let (seq, entry) = outbox.pending_after(None).unwrap();
        assert_eq!(entry.key, second.idempotency_key);
        assert_eq!(entry.failed_attempts, 2);
        assert_eq!(outbox.read(seq).unwrap(), second.alert);
        assert!(
            outbox.contains("hook", &first.idempotency_key),
            "delivered stays known"
        );
        assert!(
            outbox.contains("hook", &second.idempotency_key),
            "pending is known"
        );
        assert!(!outbox.contains("other-action", &first.idempotency_key));
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_corrupt_middle_line_is_an_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("outbox.jsonl");
        {
            let mut outbox = Outbox::open(&path, u64::MAX, 100).unwrap();
            outbox
                .append_enqueued([("hook", &delivery("t1"))].into_iter())
                .unwrap();
        }
        let intact = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"op":"enqueued","seq":2,"act"#).unwrap();
        drop(file);
        let mut outbox = Outbox::open(&path, u64::MAX, 100).unwrap();
        assert_eq!(outbox.pending_count(), 1);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            intact,
            "torn tail removed"
        );
        let seqs = outbox
            .append_enqueued([("hook", &delivery("t2"))].into_iter())
            .unwrap();
        assert_eq!(seqs, [2]);
        drop(outbox);
        assert_eq!(
            Outbox::open(&path, u64::MAX, 100).unwrap().pending_count(),
            2
        );

        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("not json\n{text}")).unwrap();
        let error = Outbox::open(&path, u64::MAX, 100)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("outbox.jsonl:1: corrupt outbox record"),
            "{error}"
        );
    }

    #[test]
    fn compaction_keeps_pending_and_recent_finished_keys() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("outbox.jsonl");
        let deliveries: Vec<Delivery> = (0..40).map(|i| delivery(&format!("t{i}"))).collect();
        // A tiny threshold: every finish past the first few compacts.
        let mut outbox = Outbox::open(&path, 1, 10).unwrap();
        let seqs = outbox
            .append_enqueued(deliveries.iter().map(|d| ("hook", d)))
            .unwrap();
        outbox.record_attempt(seqs[39], 3, "HTTP 500").unwrap();
        for seq in &seqs[..30] {
            outbox
                .finish(
                    *seq,
                    Finish::Dead {
                        attempts: 1,
                        reason: "HTTP 400",
                    },
                )
                .unwrap();
        }
        assert!(
            outbox.compactions > 0,
            "the journal was compacted as it grew"
        );
        outbox.compact().unwrap();
        assert_eq!(outbox.finished.len(), 10, "finished keys are bounded");
        assert_eq!(outbox.length(), std::fs::metadata(&path).unwrap().len());
        drop(outbox);
        let mut reopened = Outbox::open(&path, u64::MAX, 10).unwrap();
        assert_eq!(reopened.pending_count(), 10);
        for (index, seq) in seqs[30..].iter().enumerate() {
            assert_eq!(reopened.read(*seq).unwrap(), deliveries[30 + index].alert);
        }
        assert_eq!(reopened.pending_entry(seqs[39]).unwrap().failed_attempts, 3);
        assert!(
            reopened.contains("hook", &deliveries[29].idempotency_key),
            "recent finished key kept"
        );
        assert!(
            !reopened.contains("hook", &deliveries[0].idempotency_key),
            "old finished key forgotten"
        );
        let next = reopened
            .append_enqueued([("hook", &delivery("t-new"))].into_iter())
            .unwrap();
        assert_eq!(next, [41], "sequence numbers continue after compaction");
    }
}
