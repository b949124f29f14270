//! The write-ahead log: the acknowledgement point.
//!
//! An append is acknowledged once its record is on disk (fsync'd) under the
//! configured [`FsyncPolicy`]. A record carries one Arrow batch of one stream
//! (as an Arrow IPC stream, so recovery needs no re-decoding) and an opaque
//! `position` the caller wants back after a crash (the source offset after
//! this batch). Keeping the source position *inside* the record makes data and
//! offset durable in one write, so a restart resumes exactly after the last
//! acknowledged batch, with no window where one is durable and the other not.
//!
//! Layout: `wal/<first sequence, 20 digits>.wal`, rolled at
//! [`WAL_FILE_BYTES`]. Record framing, little endian:
//!
//! ```text
//! magic u32 | payload length u32 | crc32(payload) u32 | payload
//! payload = sequence u64 | stream length u16 | stream | position length u32 | position | Arrow IPC stream
//! ```
//!
//! A torn or corrupt record ends the log: everything before it is kept, it
//! and anything after it are dropped (the writer truncates it on open).
//!
//! A failed append (a full disk: `ENOSPC`) is cut off again at once, so the
//! next append, once there is room, does not land behind a torn record
//! that would hide it from readers and from recovery. If even that cut
//! fails, the log refuses further appends until it is reopened (which cuts
//! the torn tail).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use arrow::record_batch::RecordBatch;

use crate::StoreError;

const RECORD_MAGIC: u32 = 0x3157_5749; // "IWW1"
const HEADER_BYTES: usize = 12;
/// A WAL file is rolled once it exceeds this size.
pub const WAL_FILE_BYTES: u64 = 128 * 1024 * 1024;
/// Records larger than this are treated as corruption when reading.
const MAX_RECORD_BYTES: usize = 1 << 31;

/// When appends become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync after every append: an append returns only once it is durable.
    Always,
    /// fsync at most every this many milliseconds (and on [`Wal::sync`]).
    IntervalMs(u64),
}

impl std::str::FromStr for FsyncPolicy {
    type Err = StoreError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == "always" {
            return Ok(FsyncPolicy::Always);
        }
        let millis = text
            .strip_prefix("interval_ms=")
            .or_else(|| text.strip_prefix("interval_ms:"))
            .unwrap_or(text);
        millis
            .parse::<u64>()
            .map(FsyncPolicy::IntervalMs)
            .map_err(|_| StoreError::InvalidOption {
                option: "fsync".into(),
                message: format!("'{text}': expected 'always' or 'interval_ms=N'"),
            })
    }
}

/// One decoded WAL record.
#[derive(Debug, Clone)]
pub struct WalRecord {
    /// Monotonic sequence number, from 1.
    pub sequence: u64,
    /// The stream the batch belongs to.
    pub stream: String,
    /// The caller's opaque resume position after this batch (may be empty).
    pub position: Vec<u8>,
    /// The events.
    pub batch: RecordBatch,
}

/// Appends records and makes them durable.
pub struct Wal {
    directory: PathBuf,
    file: Arc<File>,
    file_bytes: u64,
    next_sequence: u64,
    /// Shared with the syncer, which advances it in the background.
    synced_through: Arc<AtomicU64>,
    written_through: u64,
    /// Under [`FsyncPolicy::IntervalMs`], the thread that fsyncs; under
    /// `Always` there is none and each append fsyncs itself.
    syncer: Option<Syncer>,
    /// First sequence of each WAL file, oldest first (the open one last).
    files: Vec<u64>,
    scratch: Vec<u8>,
    /// Set when a failed append could not be cut off: appending after the
    /// torn bytes would lose the new records.
    torn: Option<PathBuf>,
}

fn wal_file_path(directory: &Path, first_sequence: u64) -> PathBuf {
    directory.join(format!("{first_sequence:020}.wal"))
}

/// The WAL files in `directory` by first sequence, oldest first.
pub fn list_wal_files(directory: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(StoreError::io(directory, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(directory, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".wal")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            files.push((first, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Reads records from one WAL file starting at byte `offset`.
///
/// Returns the records and the offset just after the last whole record; a
/// torn or corrupt tail stops the read without an error.
pub fn read_wal_file(
    path: &Path,
    offset: u64,
    mut keep: impl FnMut(u64, &str) -> bool,
) -> Result<(Vec<WalRecord>, u64), StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((Vec::new(), offset))
        }
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader
        .seek(SeekFrom::Start(offset))
        .map_err(|e| StoreError::io(path, e))?;
    let mut records = Vec::new();
    let mut good_end = offset;
    let mut header = [0u8; HEADER_BYTES];
    let mut payload = Vec::new();
    loop {
        if read_exact_or_eof(&mut reader, &mut header).map_err(|e| StoreError::io(path, e))? {
            break;
        }
        let magic = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let length = u32::from_le_bytes(header[4..8].try_into().unwrap_or_default()) as usize;
        let checksum = u32::from_le_bytes(header[8..12].try_into().unwrap_or_default());
        if magic != RECORD_MAGIC || length > MAX_RECORD_BYTES {
            break;
        }
        payload.resize(length, 0);
        if read_exact_or_eof(&mut reader, &mut payload).map_err(|e| StoreError::io(path, e))? {
            break;
        }
        if crc32fast::hash(&payload) != checksum {
            break;
        }
        match decode_payload(&payload, &mut keep) {
            Some(Some(record)) => records.push(record),
            Some(None) => {}
            None => break,
        }
        good_end += (HEADER_BYTES + length) as u64;
    }
    Ok((records, good_end))
}

/// `Ok(true)` at a clean or torn end of file.
fn read_exact_or_eof(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<bool> {
    match reader.read_exact(buffer) {
        Ok(()) => Ok(false),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
        Err(error) => Err(error),
    }
}

/// `None` when the payload is malformed; `Some(None)` when `keep` skips it.
fn decode_payload(
    payload: &[u8],
    keep: &mut impl FnMut(u64, &str) -> bool,
) -> Option<Option<WalRecord>> {
    let sequence = u64::from_le_bytes(payload.get(0..8)?.try_into().ok()?);
    let stream_length = u16::from_le_bytes(payload.get(8..10)?.try_into().ok()?) as usize;
    let stream = std::str::from_utf8(payload.get(10..10 + stream_length)?).ok()?;
    let mut cursor = 10 + stream_length;
    if !keep(sequence, stream) {
        return Some(None);
    }
    let position_length =
        u32::from_le_bytes(payload.get(cursor..cursor + 4)?.try_into().ok()?) as usize;
    cursor += 4;
    let position = payload.get(cursor..cursor + position_length)?.to_vec();
    cursor += position_length;
    let mut reader = StreamReader::try_new(payload.get(cursor..)?, None).ok()?;
    let batch = reader.next()?.ok()?;
    Some(Some(WalRecord {
        sequence,
        stream: stream.to_string(),
        position,
        batch,
    }))
}

impl Wal {
    /// Opens the log in `directory`, truncating a torn tail, and continues
    /// after sequence `last_sequence` (the highest whole record anywhere).
    pub fn open(
        directory: &Path,
        policy: FsyncPolicy,
        last_sequence: u64,
        tail_end: Option<(PathBuf, u64)>,
    ) -> Result<Wal, StoreError> {
        std::fs::create_dir_all(directory).map_err(|e| StoreError::io(directory, e))?;
        let files: Vec<u64> = list_wal_files(directory)?
            .into_iter()
            .map(|(first, _)| first)
            .collect();
        let (path, file_bytes, files) = match tail_end {
            Some((path, end)) => {
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| StoreError::io(&path, e))?;
                file.set_len(end).map_err(|e| StoreError::io(&path, e))?;
                file.sync_all().map_err(|e| StoreError::io(&path, e))?;
                (path, end, files)
            }
            None => {
                let first = last_sequence + 1;
                let mut files = files;
                files.push(first);
                (wal_file_path(directory, first), 0, files)
            }
        };
        let file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?,
        );
        sync_directory(directory)?;
        let synced_through = Arc::new(AtomicU64::new(last_sequence));
        let syncer = match policy {
            FsyncPolicy::Always => None,
            FsyncPolicy::IntervalMs(millis) => Some(Syncer::start(
                Duration::from_millis(millis),
                file.clone(),
                synced_through.clone(),
            )?),
        };
        Ok(Wal {
            directory: directory.to_path_buf(),
            file,
            file_bytes,
            next_sequence: last_sequence + 1,
            synced_through,
            written_through: last_sequence,
            syncer,
            files,
            scratch: Vec::new(),
            torn: None,
        })
    }

    /// Appends one batch; returns its sequence number. Under
    /// [`FsyncPolicy::Always`] it is durable when this returns.
    pub fn append(
        &mut self,
        stream: &str,
        position: &[u8],
        batch: &RecordBatch,
    ) -> Result<u64, StoreError> {
        if let Some(path) = &self.torn {
            return Err(StoreError::io(
                path,
                std::io::Error::other(
                    "an earlier append failed and its partial record could not be cut off; reopen the store",
                ),
            ));
        }
        if self.file_bytes >= WAL_FILE_BYTES {
            self.roll()?;
        }
        let sequence = self.next_sequence;
        let path = self.current_path();
        let stream_length = u16::try_from(stream.len()).map_err(|_| StoreError::InvalidOption {
            option: "stream".into(),
            message: "stream names are at most 65535 bytes".into(),
        })?;
        let scratch = &mut self.scratch;
        scratch.clear();
        scratch.extend_from_slice(&[0u8; HEADER_BYTES]);
        scratch.extend_from_slice(&sequence.to_le_bytes());
        scratch.extend_from_slice(&stream_length.to_le_bytes());
        scratch.extend_from_slice(stream.as_bytes());
        scratch.extend_from_slice(&(position.len() as u32).to_le_bytes());
        scratch.extend_from_slice(position);
        {
            let mut writer = StreamWriter::try_new(&mut *scratch, batch.schema_ref())
                .map_err(|e| StoreError::Arrow(e.to_string()))?;
            writer
                .write(batch)
                .map_err(|e| StoreError::Arrow(e.to_string()))?;
            writer
                .finish()
                .map_err(|e| StoreError::Arrow(e.to_string()))?;
        }
        let payload_length = scratch.len() - HEADER_BYTES;
        let checksum = crc32fast::hash(&scratch[HEADER_BYTES..]);
        scratch[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        scratch[4..8].copy_from_slice(&(payload_length as u32).to_le_bytes());
        scratch[8..12].copy_from_slice(&checksum.to_le_bytes());
        if let Err(error) = (&*self.file).write_all(scratch) {
            // Part of the record may be on disk: cut it off (shrinking needs
            // no space), or stop appending behind it.
            if self.file.set_len(self.file_bytes).is_err() {
                self.torn = Some(path.clone());
            }
            return Err(StoreError::io(&path, error));
        }
        self.file_bytes += scratch.len() as u64;
        self.next_sequence += 1;
        self.written_through = sequence;
        match &self.syncer {
            Some(syncer) => syncer.written(sequence, &path)?,
            None => self.sync()?,
        }
        Ok(sequence)
    }

    /// Makes sure nothing written waits on an fsync: under
    /// [`FsyncPolicy::IntervalMs`] the syncer does them on its own and this
    /// only reports one it failed; under `Always` every append already
    /// synced, so this only catches up after an error.
    pub fn sync_if_due(&mut self) -> Result<(), StoreError> {
        match &self.syncer {
            Some(syncer) => syncer.check(&self.current_path()),
            None => self.sync(),
        }
    }

    /// fsyncs everything written so far, now.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.written_through > self.durable_sequence() {
            let path = self.current_path();
            self.file
                .sync_data()
                .map_err(|e| StoreError::io(&path, e))?;
            self.synced_through
                .fetch_max(self.written_through, Ordering::AcqRel);
        }
        Ok(())
    }

    /// The highest sequence known to be on disk.
    pub fn durable_sequence(&self) -> u64 {
        self.synced_through.load(Ordering::Acquire)
    }

    /// The highest sequence written (durable or not).
    pub fn last_sequence(&self) -> u64 {
        self.written_through
    }

    /// Deletes WAL files whose records all have sequence ≤ `flushed_through`.
    pub fn remove_flushed(&mut self, flushed_through: u64) -> Result<(), StoreError> {
        // A file is wholly flushed when the next file starts at or before
        // flushed_through + 1. The open file is never removed.
        while self.files.len() >= 2 && self.files[1] <= flushed_through + 1 {
            let path = wal_file_path(&self.directory, self.files[0]);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StoreError::io(&path, error)),
            }
            self.files.remove(0);
        }
        Ok(())
    }

    /// Once everything written is flushed, starts a fresh file so the old
    /// ones (now all flushed) can be deleted instead of being re-read.
    pub fn retire_if_flushed(&mut self, flushed_through: u64) -> Result<(), StoreError> {
        if self.written_through <= flushed_through && self.file_bytes > 0 {
            self.roll()?;
            self.remove_flushed(flushed_through)?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        wal_file_path(&self.directory, *self.files.last().unwrap_or(&0))
    }

    fn roll(&mut self) -> Result<(), StoreError> {
        self.sync()?;
        let first = self.next_sequence;
        let path = wal_file_path(&self.directory, first);
        self.file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| StoreError::io(&path, e))?,
        );
        sync_directory(&self.directory)?;
        if let Some(syncer) = &self.syncer {
            syncer.switch_file(self.file.clone());
        }
        self.files.push(first);
        self.file_bytes = 0;
        Ok(())
    }
}

/// The background fsync of [`FsyncPolicy::IntervalMs`].
///
/// An fsync of a busy log takes tens of milliseconds. Done inline it
/// stalled every append behind it, and with them the decoders feeding the
/// writer: about a twentieth of ingest time went idle or in I/O wait.
/// Here appends only publish how far they wrote; this thread fsyncs at
/// most once per interval and publishes how far is durable, which is all
/// an acknowledgement waits for. Durability is the same as before: what
/// was written is on disk within the interval plus one fsync.
struct Syncer {
    shared: Arc<SyncShared>,
    thread: Option<JoinHandle<()>>,
}

struct SyncShared {
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Also held by the [`Wal`], which reads it for acknowledgements.
    synced_through: Arc<AtomicU64>,
}

impl SyncShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        // A poisoned lock only means a panic mid-update; the state is plain
        // data and still meaningful.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct SyncState {
    /// The open WAL file; a roll fsyncs the previous one itself.
    file: Arc<File>,
    written_through: u64,
    failure: Option<std::io::Error>,
    stop: bool,
}

impl Syncer {
    fn start(
        interval: Duration,
        file: Arc<File>,
        synced_through: Arc<AtomicU64>,
    ) -> Result<Syncer, StoreError> {
        let shared = Arc::new(SyncShared {
            state: Mutex::new(SyncState {
                file,
                written_through: synced_through.load(Ordering::Acquire),
                failure: None,
                stop: false,
            }),
            wake: Condvar::new(),
            synced_through,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || sync_loop(&thread_shared, interval))
            .map_err(|e| StoreError::io(Path::new("wal-sync thread"), e))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Records written through `sequence`; reports an earlier failed fsync.
    fn written(&self, sequence: u64, path: &Path) -> Result<(), StoreError> {
        let mut state = self.shared.lock();
        if let Some(error) = state.failure.take() {
            return Err(StoreError::io(path, error));
        }
        // Only a syncer with nothing pending sleeps without a deadline; one
        // already waiting out the interval needs no wake-up per append.
        let was_idle = state.written_through <= self.shared.synced_through.load(Ordering::Acquire);
        state.written_through = sequence;
        drop(state);
        if was_idle {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    fn check(&self, path: &Path) -> Result<(), StoreError> {
        match self.shared.lock().failure.take() {
            Some(error) => Err(StoreError::io(path, error)),
            None => Ok(()),
        }
    }

    fn switch_file(&self, file: Arc<File>) {
        self.shared.lock().file = file;
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sync_loop(shared: &SyncShared, interval: Duration) {
    let synced_through = &shared.synced_through;
    let mut last_sync = Instant::now();
    loop {
        let mut state = shared.lock();
        // Sleep until something new is written and the interval has passed.
        loop {
            if state.stop {
                return;
            }
            let pending = state.written_through > synced_through.load(Ordering::Acquire);
            let due = last_sync + interval;
            let now = Instant::now();
            if pending && now >= due {
                break;
            }
            state = if pending {
                shared
                    .wake
                    .wait_timeout(state, due - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0
            } else {
                shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            };
        }
        let (file, target) = (state.file.clone(), state.written_through);
        drop(state);
        match file.sync_data() {
            Ok(()) => {
                synced_through.fetch_max(target, Ordering::AcqRel);
            }
            Err(error) => shared.lock().failure = Some(error),
        }
        last_sync = Instant::now();
    }
}

/// fsyncs a directory so that renames and new files in it are durable.
pub fn sync_directory(directory: &Path) -> Result<(), StoreError> {
    File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(directory, e))
}
