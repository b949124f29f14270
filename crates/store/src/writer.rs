//! The single writer of a data directory: WAL appends, flushes to Parquet,
//! compaction and retention.
//!
//! `append` writes the WAL (the acknowledgement) and adds the batch to the
//! active memtable. When the memtable holds `flush_rows` rows or is older
//! than `flush_interval`, it is handed to a background thread that sorts it
//! (logs in time order, the usual case, skip the sorted copy), writes one
//! Parquet segment (columns encoded on two threads) and one rollup file per
//! stream and hour, advances `flushed.json`, then compacts small files and
//! applies retention.
//! At most one flush runs at a time; a second full memtable waits for it,
//! which bounds memory to two memtables.
//!
//! **Wide streams.** A flush writes each stream with the union of its
//! batches' columns, so a sparse generic stream (every event with its own
//! field names) pads each batch with nulls for the columns it lacks. The
//! memtable therefore also flushes once that padding reaches
//! [`MAX_PADDING_CELLS`], and compaction merges at most
//! [`MAX_COMPACTION_CELLS`]: memory follows cells, not rows. A dense stream
//! pads nothing, so its flushes are unchanged.
//!
//! **A full disk.** An append that cannot be written fails with the WAL
//! file's path and `ENOSPC`, and leaves nothing behind (see `wal`); what was
//! acknowledged before stays. A flush that fails removes the files it had
//! written and puts its memtable back in front of the active one, so the
//! next flush (on the next append or tick, once there is room) writes it
//! again: nothing is lost, and since a segment is named by the WAL range it
//! holds, nothing is stored twice. Its error is returned to the caller.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use inferwatch_core::DEFAULT_STREAM;

use crate::layout::{current_files, DataFile, FileKind, FlushMark, Layout, HOUR_NANOS};
use crate::rollup::RollupBuilder;
use crate::schema::{merge_schema, read_stream_schema, write_stream_schema};
use crate::segment::{
    concat_sorted, parquet_shape, read_parquet, split_by_hour, split_sorted_by_hour, write_parquet,
    write_parquet_batches, ParquetShape,
};
use crate::wal::{list_wal_files, read_wal_file, FsyncPolicy, Wal};
use crate::StoreError;

/// How the store behaves.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// When WAL appends become durable.
    pub fsync: FsyncPolicy,
    /// Flush the memtable once it holds this many rows.
    pub flush_rows: usize,
    /// ... or once its oldest row is this old (wall clock).
    pub flush_interval: Duration,
    /// Merge a partition's files once this many small ones exist.
    pub compact_min_files: usize,
    /// Files at least this large are not merged again.
    pub compact_max_file_bytes: u64,
    /// How long merged-away files stay for readers that listed them.
    pub compaction_grace: Duration,
    /// Delete hour partitions older than this (by wall clock).
    pub retention_max_age: Option<Duration>,
    /// Delete the oldest hour partitions while the store is larger than this.
    pub retention_max_bytes: Option<u64>,
    /// This writer's id: its files' names and its WAL and flush mark, so
    /// nodes with different ids can share one directory (see `layout`).
    pub node_id: String,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            fsync: FsyncPolicy::IntervalMs(100),
            flush_rows: 1 << 19,
            flush_interval: Duration::from_secs(30),
            compact_min_files: 4,
            // A busy flush writes ~20 MB; only the small files of quiet
            // periods are worth rewriting.
            compact_max_file_bytes: 8 << 20,
            compaction_grace: Duration::from_secs(60),
            retention_max_age: None,
            retention_max_bytes: None,
            node_id: crate::layout::DEFAULT_WRITER.to_string(),
        }
    }
}

/// The most null cells one flush adds to widen batches to their stream's
/// union of columns: 2^21 cells are about 16 MiB of 8-byte values.
pub const MAX_PADDING_CELLS: usize = 1 << 21;

/// The most cells (rows × columns, read back from Parquet, nulls included)
/// one compaction merges. A file of more than half of it is not merged
/// again, as a file over `compact_max_file_bytes` is not.
pub const MAX_COMPACTION_CELLS: usize = 1 << 23;

#[derive(Default, Clone)]
struct StreamWidth {
    columns: std::collections::BTreeSet<String>,
    rows: usize,
    cells: usize,
}

impl StreamWidth {
    fn add(&mut self, schema: &arrow::datatypes::Schema, rows: usize) {
        self.add_names(schema.fields().iter().map(|field| field.name()), rows);
    }

    fn add_names<'a>(&mut self, names: impl IntoIterator<Item = &'a String>, rows: usize) {
        let mut count = 0usize;
        for name in names {
            count += 1;
            if !self.columns.contains(name) {
                self.columns.insert(name.clone());
            }
        }
        self.rows += rows;
        self.cells = self.cells.saturating_add(rows.saturating_mul(count));
    }

    /// Null cells that widening every batch to the union would add.
    fn padding(&self) -> usize {
        self.columns
            .len()
            .saturating_mul(self.rows)
            .saturating_sub(self.cells)
    }
}

#[derive(Default, Clone)]
struct Memtable {
    batches: Vec<(String, RecordBatch)>,
    rows: usize,
    /// Per stream: the union of its batches' column names, its rows, and
    /// its cells (Σ rows × columns over its batches).
    widths: BTreeMap<String, StreamWidth>,
    first_sequence: u64,
    last_sequence: u64,
    last_position: Option<String>,
    opened: Option<Instant>,
}

/// What a flush thread reports back.
struct FlushOutcome {
    mark: FlushMark,
}

/// Counters for progress output and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Rows appended since open.
    pub rows_appended: u64,
    /// Flushes completed since open.
    pub flushes: u64,
    /// Files merged away by compaction since open.
    pub files_compacted: u64,
    /// Hour partitions deleted by retention since open.
    pub partitions_expired: u64,
}

/// The writer of one data directory.
pub struct StoreWriter {
    layout: Layout,
    options: StoreOptions,
    wal: Wal,
    active: Memtable,
    flushing: Option<JoinHandle<Result<FlushOutcome, StoreError>>>,
    /// The memtable being flushed (its batches shared, not copied), given
    /// back to `active` if the flush fails.
    flushing_memtable: Option<Memtable>,
    mark: FlushMark,
    recovered_position: Option<String>,
    schemas: BTreeMap<String, SchemaRef>,
    trash: Arc<Mutex<Vec<(PathBuf, Instant)>>>,
    stats: Arc<Mutex<WriterStats>>,
    /// Held while the writer lives; the OS releases it on any exit, even
    /// `kill -9`, so a crash never leaves a stale lock behind.
    lock: Option<std::fs::File>,
}

/// Takes the writer's exclusive lock, or says who holds it: two processes
/// appending to one WAL would interleave records and each recover the
/// other's half-written files as its own.
fn lock_writer(layout: &Layout) -> Result<std::fs::File, StoreError> {
    use std::io::{Read, Seek, Write};
    let path = layout.lock_path();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = match pid.trim() {
                "" => "another process".to_string(),
                pid => format!("pid {pid}"),
            };
            return Err(StoreError::InUse {
                path,
                writer: layout.writer().to_string(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(StoreError::io(&path, error)),
    }
    let note = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()));
    note.map_err(|e| StoreError::io(&path, e))?;
    Ok(file)
}

impl StoreWriter {
    /// Opens (creating) `root`, recovering from a crash: drops files of an
    /// unfinished flush, finishes interrupted compactions, and reloads the
    /// WAL records that had not reached a segment into the memtable.
    pub fn open(root: &Path, options: StoreOptions) -> Result<StoreWriter, StoreError> {
        let layout = Layout::for_writer(root, &options.node_id)?;
        std::fs::create_dir_all(root).map_err(|e| StoreError::io(root, e))?;
        let lock = lock_writer(&layout)?;
        let mark = layout.read_flush_mark()?;
        // Delete what a crash left half-done (of this writer's files only:
        // another writer's are judged by its own mark).
        for stream in layout.stream_names()? {
            for kind in [FileKind::Segment, FileKind::Rollup] {
                for partial in layout.partial_files(kind, &stream)? {
                    if is_writers_partial(&partial, layout.writer()) {
                        remove_file_if_present(&partial)?;
                    }
                }
                let mut files = layout.list_files(kind, &stream, None, None)?;
                files.retain(|file| file.writer == layout.writer());
                let (_, obsolete) = current_files(files, |_| mark.flushed_through);
                for file in obsolete {
                    remove_file_if_present(&file.path)?;
                }
            }
        }
        // Replay the WAL tail.
        let wal_directory = layout.wal_directory();
        let wal_files = list_wal_files(&wal_directory)?;
        let mut active = Memtable::default();
        let mut last_sequence = mark.flushed_through;
        let mut recovered_position = mark.last_position.clone();
        let mut tail_end = None;
        let mut schemas = BTreeMap::new();
        for stream in layout.stream_names()? {
            if let Some(schema) = read_stream_schema(&layout.schema_path(&stream))? {
                schemas.insert(stream, schema);
            }
        }
        for (index, (_, path)) in wal_files.iter().enumerate() {
            let flushed = mark.flushed_through;
            let mut highest = 0;
            let (records, end) = read_wal_file(path, 0, |sequence, _| {
                // Flushed records are skipped but still count for numbering.
                highest = highest.max(sequence);
                sequence > flushed
            })?;
            last_sequence = last_sequence.max(highest);
            for record in records {
                let position = (!record.position.is_empty())
                    .then(|| String::from_utf8_lossy(&record.position).to_string());
                if position.is_some() {
                    recovered_position = position.clone();
                }
                // The position rides along so the next flush mark keeps it.
                active.add(record.sequence, record.stream, record.batch, position);
            }
            if index + 1 == wal_files.len() {
                tail_end = Some((path.clone(), end));
            }
        }
        let wal = Wal::open(&wal_directory, options.fsync, last_sequence, tail_end)?;
        Ok(StoreWriter {
            layout,
            options,
            wal,
            active,
            flushing: None,
            flushing_memtable: None,
            mark,
            recovered_position,
            schemas,
            trash: Arc::new(Mutex::new(Vec::new())),
            stats: Arc::new(Mutex::new(WriterStats::default())),
            lock: Some(lock),
        })
    }

    /// A crash, for tests in one process: nothing is flushed or closed;
    /// only the lock goes, as it does when a process dies.
    #[doc(hidden)]
    pub fn crash(mut self) {
        self.lock.take();
        std::mem::forget(self);
    }

    /// The position passed with the last batch that reached the WAL before
    /// this open (what a source should resume after).
    pub fn recovered_position(&self) -> Option<&str> {
        self.recovered_position.as_deref()
    }

    /// The data directory's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The known schema of `stream`, if any batch was ever stored in it.
    pub fn stream_schema(&self, stream: &str) -> Option<SchemaRef> {
        self.schemas.get(stream).cloned()
    }

    /// Appends a batch to `stream`. `position` is stored with it and given
    /// back by [`StoreWriter::recovered_position`] after a restart.
    ///
    /// Returns the WAL sequence; see [`StoreWriter::durable_sequence`] for
    /// when it is acknowledged.
    pub fn append(
        &mut self,
        stream: &str,
        batch: &RecordBatch,
        position: Option<&str>,
    ) -> Result<u64, StoreError> {
        if stream.is_empty()
            || !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(StoreError::InvalidOption {
                option: "stream".into(),
                message: format!("'{stream}': use letters, digits, '_' and '-'"),
            });
        }
        if batch.num_rows() == 0 && position.is_none() {
            return Ok(self.wal.last_sequence());
        }
        self.evolve_schema(stream, &batch.schema())?;
        if self.active.rows > 0 && self.active.padding_with(stream, batch) > MAX_PADDING_CELLS {
            // Flushed first, so no flush pads more than the budget (a lone
            // batch pads nothing).
            self.start_flush()?;
        }
        let sequence = self
            .wal
            .append(stream, position.unwrap_or("").as_bytes(), batch)?;
        self.active.add(
            sequence,
            stream.to_string(),
            batch.clone(),
            position.map(str::to_string),
        );
        if let Ok(mut stats) = self.stats.lock() {
            stats.rows_appended += batch.num_rows() as u64;
        }
        self.maybe_flush()?;
        Ok(sequence)
    }

    fn evolve_schema(&mut self, stream: &str, incoming: &SchemaRef) -> Result<(), StoreError> {
        let merged = match self.schemas.get(stream) {
            Some(known) => match merge_schema(known, incoming) {
                Ok(Some(merged)) => merged,
                Ok(None) => return Ok(()),
                Err(conflict) => {
                    return Err(StoreError::SchemaConflict {
                        stream: stream.into(),
                        message: conflict,
                    })
                }
            },
            None => incoming.clone(),
        };
        // Another writer sharing the directory may have widened it since.
        let path = self.layout.schema_path(stream);
        let merged = match read_stream_schema(&path)? {
            Some(on_disk) => match merge_schema(&merged, &on_disk) {
                Ok(wider) => wider.unwrap_or(merged),
                Err(conflict) => {
                    return Err(StoreError::SchemaConflict {
                        stream: stream.into(),
                        message: conflict,
                    })
                }
            },
            None => merged,
        };
        write_stream_schema(&path, &merged)?;
        self.schemas.insert(stream.to_string(), merged);
        Ok(())
    }

    /// Call while input is idle: fsyncs on the interval and flushes an old memtable.
    pub fn tick(&mut self) -> Result<(), StoreError> {
        self.wal.sync_if_due()?;
        self.reap_flush(false)?;
        self.maybe_flush()
    }

    /// fsyncs the WAL now.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.wal.sync()
    }

    /// The highest WAL sequence that is durable (acknowledged).
    pub fn durable_sequence(&self) -> u64 {
        self.wal.durable_sequence()
    }

    /// The highest sequence written so far.
    pub fn last_sequence(&self) -> u64 {
        self.wal.last_sequence()
    }

    /// Counters since open.
    pub fn stats(&self) -> WriterStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Rows in memory not yet in segments (active memtable only).
    pub fn buffered_rows(&self) -> usize {
        self.active.rows
    }

    fn maybe_flush(&mut self) -> Result<(), StoreError> {
        let old = self
            .active
            .opened
            .is_some_and(|opened| opened.elapsed() >= self.options.flush_interval);
        if self.active.rows >= self.options.flush_rows
            || self.active.padding_cells() >= MAX_PADDING_CELLS
            || (old && self.active.rows > 0)
        {
            self.start_flush()?;
        }
        Ok(())
    }

    /// Flushes everything buffered and waits for it.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.wal.sync()?;
        if self.active.rows > 0 || self.active.last_position.is_some() {
            self.start_flush()?;
        }
        self.reap_flush(true)
    }

    /// Flushes and stops the background work. Data is durable after this.
    /// Files merged away by compaction are deleted now rather than after
    /// their grace period (the next open would delete them anyway).
    pub fn close(mut self) -> Result<(), StoreError> {
        self.flush()?;
        empty_trash(&self.trash, Duration::ZERO);
        Ok(())
    }

    fn start_flush(&mut self) -> Result<(), StoreError> {
        // One flush at a time: wait for the previous one (back-pressure).
        self.reap_flush(true)?;
        self.wal.sync()?;
        let memtable = std::mem::take(&mut self.active);
        self.flushing_memtable = Some(memtable.clone());
        let layout = self.layout.clone();
        let options = self.options.clone();
        let previous_mark = self.mark.clone();
        let trash = self.trash.clone();
        let stats = self.stats.clone();
        let handle = std::thread::Builder::new()
            .name("store-flush".into())
            .spawn(move || {
                flush_memtable(&layout, &options, memtable, previous_mark, &trash, &stats)
            })
            .map_err(|e| StoreError::Internal(format!("spawning the flush thread: {e}")))?;
        self.flushing = Some(handle);
        Ok(())
    }

    fn reap_flush(&mut self, wait: bool) -> Result<(), StoreError> {
        let finished = self.flushing.as_ref().is_some_and(|h| h.is_finished());
        if !(finished || (wait && self.flushing.is_some())) {
            return Ok(());
        }
        let Some(handle) = self.flushing.take() else {
            return Ok(());
        };
        let failed = self.flushing_memtable.take();
        let outcome = match handle.join() {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(error)) => {
                // Written again by the next flush (the WAL still has it).
                if let Some(failed) = failed {
                    self.active.put_back(failed);
                }
                return Err(error);
            }
            Err(_) => return Err(StoreError::Internal("the flush thread panicked".into())),
        };
        self.mark = outcome.mark;
        self.wal.remove_flushed(self.mark.flushed_through)?;
        self.wal.retire_if_flushed(self.mark.flushed_through)?;
        Ok(())
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        if let Some(handle) = self.flushing.take() {
            let _ = handle.join();
        }
        let _ = self.wal.sync();
    }
}

impl Memtable {
    /// Puts `earlier` (a memtable whose flush failed) in front of this one.
    fn put_back(&mut self, earlier: Memtable) {
        let later = std::mem::replace(self, earlier);
        if later.opened.is_none() {
            return;
        }
        for (stream, batch) in later.batches {
            self.note_width(&stream, &batch);
            self.batches.push((stream, batch));
        }
        self.rows += later.rows;
        self.last_sequence = later.last_sequence;
        if later.last_position.is_some() {
            self.last_position = later.last_position;
        }
    }

    fn add(&mut self, sequence: u64, stream: String, batch: RecordBatch, position: Option<String>) {
        if self.opened.is_none() {
            self.opened = Some(Instant::now());
            self.first_sequence = sequence;
        }
        self.last_sequence = sequence;
        self.rows += batch.num_rows();
        if position.is_some() {
            self.last_position = position;
        }
        if batch.num_rows() > 0 {
            self.note_width(&stream, &batch);
            self.batches.push((stream, batch));
        }
    }

    fn note_width(&mut self, stream: &str, batch: &RecordBatch) {
        self.widths
            .entry(stream.to_string())
            .or_default()
            .add(&batch.schema(), batch.num_rows());
    }

    /// [`Memtable::padding_cells`] once `batch` is added to `stream`.
    fn padding_with(&self, stream: &str, batch: &RecordBatch) -> usize {
        let mut width = self.widths.get(stream).cloned().unwrap_or_default();
        width.add(&batch.schema(), batch.num_rows());
        self.padding_cells()
            .saturating_add(width.padding())
            .saturating_sub(self.widths.get(stream).map_or(0, StreamWidth::padding))
    }

    /// The null cells a flush would add to widen each stream's batches.
    fn padding_cells(&self) -> usize {
        self.widths
            .values()
            .map(StreamWidth::padding)
            .fold(0, usize::saturating_add)
    }
}

/// Whether a half-written `*.tmp` file is `writer`'s (old unnamed ones are
/// the default writer's).
fn is_writers_partial(path: &Path, writer: &str) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    match name
        .strip_suffix(".tmp")
        .and_then(crate::layout::parse_data_file_name)
    {
        Some((owner, _, _)) => owner == writer,
        None => writer == crate::layout::DEFAULT_WRITER,
    }
}

fn remove_file_if_present(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(StoreError::io(path, error)),
    }
}

fn flush_memtable(
    layout: &Layout,
    options: &StoreOptions,
    memtable: Memtable,
    previous: FlushMark,
    trash: &Mutex<Vec<(PathBuf, Instant)>>,
    stats: &Mutex<WriterStats>,
) -> Result<FlushOutcome, StoreError> {
    let (first, last) = (memtable.first_sequence, memtable.last_sequence);
    let mut by_stream: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    for (stream, batch) in memtable.batches {
        by_stream.entry(stream).or_default().push(batch);
    }
    let mark = FlushMark {
        flushed_through: last.max(previous.flushed_through),
        last_position: memtable.last_position.or(previous.last_position),
    };
    let mut written = Vec::new();
    let touched = match write_memtable_files(layout, by_stream, first, last, &mut written)
        .and_then(|touched| layout.write_flush_mark(&mark).map(|()| touched))
    {
        Ok(touched) => touched,
        Err(error) => {
            // Not under the mark, so never read; removed to give the space
            // back. Unless the mark got renamed in before its directory sync
            // failed: then they are the data.
            let marked = layout
                .read_flush_mark()
                .is_ok_and(|on_disk| on_disk.flushed_through == mark.flushed_through);
            if !marked {
                for path in written {
                    let _ = std::fs::remove_file(path);
                }
            }
            return Err(error);
        }
    };
    if let Ok(mut stats) = stats.lock() {
        stats.flushes += 1;
    }
    // Housekeeping after the data is safe; its failures must not lose the flush.
    empty_trash(trash, options.compaction_grace);
    for (stream, hour) in touched {
        if let Err(error) = compact_partition(layout, options, &stream, hour, &mark, trash, stats) {
            eprintln!("inferwatch: compaction of {stream} failed (will retry): {error}");
        }
    }
    if let Err(error) = apply_retention(layout, options, stats) {
        eprintln!("inferwatch: retention failed (will retry): {error}");
    }
    Ok(FlushOutcome { mark })
}

/// Writes one memtable's segments and rollups (recording each file in
/// `written`) and syncs their directories; returns the (stream, hour)
/// partitions touched.
fn write_memtable_files(
    layout: &Layout,
    by_stream: BTreeMap<String, Vec<RecordBatch>>,
    first: u64,
    last: u64,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut touched: Vec<(String, i64)> = Vec::new();
    for (stream, batches) in by_stream {
        let stream = &stream;
        let (schema, hours) = match split_sorted_by_hour(&batches)? {
            Some(in_order) => in_order,
            None => {
                // The memtable's batches go as soon as their sorted copy exists.
                let sorted = concat_sorted(&batches)?;
                drop(batches);
                let hours = split_by_hour(&sorted)?
                    .into_iter()
                    .map(|(hour, slice)| (hour, vec![slice]))
                    .collect();
                (sorted.schema(), hours)
            }
        };
        for (hour, slices) in hours {
            let path = layout.data_file_path(FileKind::Segment, stream, hour, first, last);
            write_parquet_batches(&path, &schema, &slices, true)?;
            written.push(path);
            if stream == DEFAULT_STREAM {
                let mut rollup = RollupBuilder::new();
                for slice in &slices {
                    rollup.add_events(slice)?;
                }
                let path = layout.data_file_path(FileKind::Rollup, stream, hour, first, last);
                write_parquet(&path, &rollup.finish()?, true)?;
                written.push(path);
            }
            touched.push((stream.clone(), hour));
        }
    }
    for (stream, hour) in &touched {
        for kind in [FileKind::Segment, FileKind::Rollup] {
            let directory = layout.partition_directory(kind, stream, *hour);
            if directory.exists() {
                crate::wal::sync_directory(&directory)?;
            }
        }
    }
    Ok(touched)
}

fn empty_trash(trash: &Mutex<Vec<(PathBuf, Instant)>>, grace: Duration) {
    let Ok(mut trash) = trash.lock() else {
        return;
    };
    trash.retain(|(path, since)| {
        if since.elapsed() < grace {
            return true;
        }
        let _ = std::fs::remove_file(path);
        false
    });
}

/// Merges a partition's small files into one, for segments and rollups.
fn compact_partition(
    layout: &Layout,
    options: &StoreOptions,
    stream: &str,
    hour: i64,
    mark: &FlushMark,
    trash: &Mutex<Vec<(PathBuf, Instant)>>,
    stats: &Mutex<WriterStats>,
) -> Result<(), StoreError> {
    for kind in [FileKind::Segment, FileKind::Rollup] {
        let mut files = layout.list_files(kind, stream, Some(hour), Some(hour + HOUR_NANOS))?;
        // Only this writer's files: merging another's would delete them
        // under a name its own mark does not cover.
        files.retain(|file| file.writer == layout.writer());
        let (current, _) = current_files(files, |_| mark.flushed_through);
        // Merge only a run of small files adjacent in WAL order: the merged
        // file's name covers its whole range, so a large file inside that
        // range would wrongly read as merged away.
        let mut runs: Vec<Vec<(&DataFile, Option<ParquetShape>)>> = vec![Vec::new()];
        for file in current.iter().filter(|f| f.hour_start == hour) {
            // An unreadable footer counts as small: reading it quarantines it.
            let shape = parquet_shape(&file.path);
            let cells = shape
                .as_ref()
                .map_or(0, |(rows, names)| rows.saturating_mul(names.len()));
            if file.bytes >= options.compact_max_file_bytes || cells > MAX_COMPACTION_CELLS / 2 {
                runs.push(Vec::new());
            } else if let Some(run) = runs.last_mut() {
                run.push((file, shape));
            } else {
                runs.push(Vec::new());
            }
        }
        let minimum = options.compact_min_files.max(2);
        // Of each run, the prefix (still adjacent) whose merged file, every
        // row widened to the union of columns, stays within the budget.
        let Some(small) = runs
            .into_iter()
            .map(|run| {
                let mut width = StreamWidth::default();
                run.into_iter()
                    .take_while(|(_, shape)| {
                        if let Some((rows, names)) = shape {
                            width.add_names(names, *rows);
                        }
                        width.columns.len().saturating_mul(width.rows) <= MAX_COMPACTION_CELLS
                    })
                    .map(|(file, _)| file)
                    .collect::<Vec<_>>()
            })
            .filter(|run| run.len() >= minimum)
            .max_by_key(|run| run.len())
        else {
            continue;
        };
        let mut batches = Vec::new();
        let mut quarantined = false;
        for file in &small {
            match read_parquet(&file.path) {
                Ok(read) => batches.extend(read),
                Err(error @ StoreError::Corrupt { .. }) => {
                    let moved_to = quarantine(layout, &file.path)?;
                    eprintln!(
                        "inferwatch: {error}; moved to {} (its events are no longer served)",
                        moved_to.display()
                    );
                    quarantined = true;
                }
                Err(error) => return Err(error),
            }
        }
        if quarantined {
            // The run changed; the next flush compacts what is left.
            continue;
        }
        let merged = match kind {
            FileKind::Segment => concat_sorted(&batches)?,
            FileKind::Rollup => {
                let mut builder = RollupBuilder::new();
                for batch in &batches {
                    builder.add_rollups(batch)?;
                }
                builder.finish()?
            }
        };
        let first = small.iter().map(|f| f.first_sequence).min().unwrap_or(0);
        let last = small.iter().map(|f| f.last_sequence).max().unwrap_or(0);
        // Readers prefer the covering file; the inputs go after the grace period.
        let path = layout.data_file_path(kind, stream, hour, first, last);
        write_parquet(&path, &merged, true)?;
        crate::wal::sync_directory(&layout.partition_directory(kind, stream, hour))?;
        if let Ok(mut trash) = trash.lock() {
            let now = Instant::now();
            trash.extend(small.iter().map(|f| (f.path.clone(), now)));
        }
        if let Ok(mut stats) = stats.lock() {
            stats.files_compacted += small.len() as u64;
        }
    }
    Ok(())
}

/// Moves a corrupt data file to `quarantine/` under the data directory,
/// keeping its relative path, so it stops failing compaction and queries
/// but is still there to inspect or restore. Returns where it went.
fn quarantine(layout: &Layout, path: &Path) -> Result<PathBuf, StoreError> {
    let relative = path.strip_prefix(layout.root()).unwrap_or(path);
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let target = layout.root().join("quarantine").join(relative);
    if let Some(directory) = target.parent() {
        std::fs::create_dir_all(directory).map_err(|e| StoreError::io(directory, e))?;
    }
    std::fs::rename(path, &target).map_err(|e| StoreError::io(path, e))?;
    Ok(target)
}

/// Deletes hour partitions beyond the age limit, then the oldest ones while over the size limit.
pub(crate) fn apply_retention(
    layout: &Layout,
    options: &StoreOptions,
    stats: &Mutex<WriterStats>,
) -> Result<(), StoreError> {
    if options.retention_max_age.is_none() && options.retention_max_bytes.is_none() {
        return Ok(());
    }
    // (hour, stream) → bytes, over segments and rollups.
    let mut partitions: BTreeMap<(i64, String), u64> = BTreeMap::new();
    for stream in layout.stream_names()? {
        for kind in [FileKind::Segment, FileKind::Rollup] {
            for file in layout.list_files(kind, &stream, None, None)? {
                *partitions
                    .entry((file.hour_start, stream.clone()))
                    .or_default() += file.bytes;
            }
        }
    }
    let mut total: u64 = partitions.values().sum();
    let now_nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    let mut newest_hour: BTreeMap<String, i64> = BTreeMap::new();
    for (hour, stream) in partitions.keys() {
        newest_hour.insert(stream.clone(), *hour);
    }
    for ((hour, stream), bytes) in partitions {
        let too_old = options
            .retention_max_age
            .is_some_and(|age| hour + HOUR_NANOS <= now_nanos - age.as_nanos() as i64);
        let too_big = options.retention_max_bytes.is_some_and(|max| total > max);
        // Size never expires a stream's newest hour, which is still being written.
        let newest = newest_hour.get(&stream) == Some(&hour);
        if !(too_old || (too_big && !newest)) {
            continue;
        }
        for kind in [FileKind::Segment, FileKind::Rollup] {
            let directory = layout.partition_directory(kind, &stream, hour);
            match std::fs::remove_dir_all(&directory) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(StoreError::io(&directory, error)),
            }
        }
        total = total.saturating_sub(bytes);
        if let Ok(mut stats) = stats.lock() {
            stats.partitions_expired += 1;
        }
    }
    Ok(())
}
