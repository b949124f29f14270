//! Consistent read snapshots: current segments plus the WAL tail.
//!
//! A reader may live in another process than the writer. It never locks:
//! it reads the flush mark, lists the segments current under it, reads the
//! WAL records above it, then reads the mark again. If a flush finished in
//! between, it starts over. So an event is visible to SQL as soon as its WAL
//! record is written, and never twice.
//!
//! **Corrupt files.** Each segment and rollup file is checked once (its
//! Parquet footer, see [`check_parquet`]; the answer is kept while its size
//! stays the same). A file that fails is left out of snapshots, with a
//! warning naming it on stderr the first time and an entry in
//! [`Snapshot::skipped`], so queries over the other files still answer.
//! Readers never move files (they may run in another process than the
//! writer); the writer moves a file it cannot read while compacting to
//! `quarantine/` in the data directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use inferwatch_core::{canonical_schema, DEFAULT_STREAM};

use crate::layout::{current_files, DataFile, FileKind, Layout};
use crate::rollup::RollupBuilder;
use crate::schema::read_stream_schema;
use crate::segment::check_parquet;
use crate::wal::{list_wal_files, read_wal_file, WalRecord};
use crate::StoreError;

/// What one query sees of one stream.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The stream's table schema.
    pub schema: SchemaRef,
    /// Current Parquet segments overlapping the requested time range.
    pub segments: Vec<DataFile>,
    /// Current rollup files overlapping the requested time range.
    pub rollups: Vec<DataFile>,
    /// Events still only in the WAL (not yet in a segment).
    pub tail: Vec<RecordBatch>,
    /// Current files left out because they are corrupt, and why.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Snapshot {
    /// Rollup rows for the WAL tail, computed on the fly.
    pub fn tail_rollups(&self) -> Result<Option<RecordBatch>, StoreError> {
        if self.tail.is_empty() {
            return Ok(None);
        }
        let mut builder = RollupBuilder::new();
        for batch in &self.tail {
            builder.add_events(batch)?;
        }
        builder.finish().map(Some)
    }
}

#[derive(Default)]
struct TailCache {
    /// WAL file → (bytes consumed, records read so far).
    files: BTreeMap<PathBuf, (u64, Vec<WalRecord>)>,
}

/// Reads a data directory.
pub struct StoreReader {
    layout: Layout,
    tail: Mutex<TailCache>,
    /// Data file → (size when checked, why it is corrupt, if it is).
    checked: Mutex<HashMap<PathBuf, (u64, Option<String>)>>,
}

impl StoreReader {
    /// Opens an existing data directory for reading.
    pub fn open(root: &Path) -> Result<StoreReader, StoreError> {
        if !root.is_dir() {
            return Err(StoreError::NotAStore {
                path: root.to_path_buf(),
            });
        }
        Ok(StoreReader {
            layout: Layout::new(root),
            tail: Mutex::new(TailCache::default()),
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// The data directory's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The streams in the store (always including `inference`).
    pub fn streams(&self) -> Result<Vec<String>, StoreError> {
        let mut names = self.layout.stream_names()?;
        if !names.iter().any(|n| n == DEFAULT_STREAM) {
            names.push(DEFAULT_STREAM.to_string());
            names.sort();
        }
        Ok(names)
    }

    /// The table schema of `stream`.
    pub fn schema(&self, stream: &str) -> Result<SchemaRef, StoreError> {
        if let Some(schema) = read_stream_schema(&self.layout.schema_path(stream))? {
            return Ok(schema);
        }
        if stream == DEFAULT_STREAM {
            return Ok(canonical_schema());
        }
        Err(StoreError::UnknownStream {
            stream: stream.to_string(),
        })
    }

    /// A consistent view of `stream` for partitions overlapping `[from, to)`.
    pub fn snapshot(
        &self,
        stream: &str,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Snapshot, StoreError> {
        let schema = self.schema(stream)?;
        for _attempt in 0..8 {
            // Every writer's mark: each writer's files and WAL tail are
            // read against its own.
            let marks: BTreeMap<String, u64> = self
                .layout
                .read_flush_marks()?
                .into_iter()
                .map(|(writer, mark)| (writer, mark.flushed_through))
                .collect();
            let through = |writer: &str| marks.get(writer).copied().unwrap_or(0);
            let list = |kind| -> Result<Vec<DataFile>, StoreError> {
                let files = self.layout.list_files(kind, stream, from, to)?;
                Ok(current_files(files, through).0)
            };
            let mut skipped = Vec::new();
            let segments = self.readable(list(FileKind::Segment)?, &mut skipped);
            let rollups = self.readable(list(FileKind::Rollup)?, &mut skipped);
            let mut tail = Vec::new();
            for (writer, flushed_through) in &marks {
                tail.extend(self.read_tail(writer, stream, *flushed_through)?);
            }
            let again: BTreeMap<String, u64> = self
                .layout
                .read_flush_marks()?
                .into_iter()
                .map(|(writer, mark)| (writer, mark.flushed_through))
                .collect();
            if again == marks {
                return Ok(Snapshot {
                    schema,
                    segments,
                    rollups,
                    tail,
                    skipped,
                });
            }
        }
        Err(StoreError::Busy)
    }

    /// The corrupt files seen so far, and why.
    pub fn corrupt_files(&self) -> Vec<(PathBuf, String)> {
        let checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut corrupt: Vec<(PathBuf, String)> = checked
            .iter()
            .filter_map(|(path, (_, problem))| Some((path.clone(), problem.clone()?)))
            .collect();
        corrupt.sort();
        corrupt
    }

    /// `files` without the corrupt ones, which go to `skipped`.
    fn readable(
        &self,
        files: Vec<DataFile>,
        skipped: &mut Vec<(PathBuf, String)>,
    ) -> Vec<DataFile> {
        let mut checked = self
            .checked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Forget files that are gone (merged away, expired, quarantined).
        if checked.len() > 4 * files.len() + 1024 {
            checked.retain(|path, _| path.exists());
        }
        let mut readable = Vec::with_capacity(files.len());
        for file in files {
            let problem = match checked.get(&file.path) {
                Some((bytes, problem)) if *bytes == file.bytes => problem.clone(),
                _ => {
                    let problem = match check_parquet(&file.path) {
                        Ok(()) => None,
                        // Merged away between listing and checking: not corrupt.
                        Err(StoreError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            None
                        }
                        Err(error) => Some(error.to_string()),
                    };
                    if let Some(problem) = &problem {
                        eprintln!(
                            "inferwatch: skipping a corrupt store file, other files still answer: {problem}"
                        );
                    }
                    checked.insert(file.path.clone(), (file.bytes, problem.clone()));
                    problem
                }
            };
            match problem {
                Some(problem) => skipped.push((file.path.clone(), problem)),
                None => readable.push(file),
            }
        }
        readable
    }

    fn read_tail(
        &self,
        writer: &str,
        stream: &str,
        flushed_through: u64,
    ) -> Result<Vec<RecordBatch>, StoreError> {
        let mut cache = self
            .tail
            .lock()
            .map_err(|_| StoreError::Internal("tail cache poisoned".into()))?;
        let directory = self.layout.wal_directory_of(writer);
        let files = list_wal_files(&directory)?;
        cache.files.retain(|path, _| {
            !path.starts_with(&directory) || files.iter().any(|(_, p)| p == path)
        });
        let mut batches = Vec::new();
        for (_, path) in files {
            let entry = cache.files.entry(path.clone()).or_default();
            let length = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if length < entry.0 {
                // The writer cut a torn tail on restart: read the file again.
                *entry = (0, Vec::new());
            }
            let (records, end) =
                read_wal_file(&path, entry.0, |sequence, _| sequence > flushed_through)?;
            entry.0 = end;
            entry.1.extend(records);
            entry.1.retain(|r| r.sequence > flushed_through);
            batches.extend(
                entry
                    .1
                    .iter()
                    .filter(|r| r.stream == stream && r.batch.num_rows() > 0)
                    .map(|r| r.batch.clone()),
            );
        }
        Ok(batches)
    }
}
