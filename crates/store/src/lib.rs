//! # inferwatch-store
//!
//! The embedded store: every event kept, in columns, on local disk.
//!
//! It sits after decoding in the flow (`sources → decode → **store** → query`)
//! and owns four things:
//!
//! * the **write-ahead log** ([`Wal`]), the acknowledgement point. An append
//!   is acknowledged once fsync'd ([`FsyncPolicy::Always`] inline, or every
//!   `interval_ms` on a background thread). Each record holds one Arrow
//!   batch plus the source position after it, so data and resume offset
//!   become durable together;
//! * **segments**: Parquet files (zstd, page statistics on non-text
//!   columns, sorted by timestamp) under `segments/<stream>/date=…/hour=…/`,
//!   named by the WAL range they hold — the names are the manifest, so any
//!   crash point reads right;
//! * **rollups** beside them: per minute and (model_id, model_version,
//!   ab_group, source_id, status), count, errors, latency sum/min/max, a
//!   DDSketch and token sums ([`RollupBuilder`]);
//! * **housekeeping** on the flush thread: compaction of small files and
//!   retention by age and size.
//!
//! **Disk faults.** A full disk fails the append or flush with an error
//! naming the file and `ENOSPC`; acknowledged data stays, nothing half
//! written is ever served, and writing resumes once there is room, without
//! loss or duplicates (see `writer`). A corrupt segment or rollup file is
//! left out of snapshots with a warning naming it ([`Snapshot::skipped`]),
//! so the other files still answer; the writer moves one it cannot read to
//! `quarantine/`.
//!
//! [`StoreWriter`] is the single writer; [`StoreReader`] gives lock-free,
//! consistent [`Snapshot`]s (segments + WAL tail) to any number of readers,
//! in-process or not. The query crate builds SQL tables on snapshots.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{ArrayRef, Int64Array, TimestampNanosecondArray};
//! use arrow::record_batch::RecordBatch;
//! use inferwatch_store::{StoreOptions, StoreReader, StoreWriter};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut writer = StoreWriter::open(dir.path(), StoreOptions::default()).unwrap();
//! let batch = RecordBatch::try_from_iter(vec![
//!     ("timestamp", Arc::new(TimestampNanosecondArray::from(vec![1, 2]).with_timezone("UTC")) as ArrayRef),
//!     ("bytes", Arc::new(Int64Array::from(vec![10, 20])) as ArrayRef),
//! ]).unwrap();
//! writer.append("gateway", &batch, Some("offset=2")).unwrap();
//! // Visible before any flush, from the WAL tail:
//! let reader = StoreReader::open(dir.path()).unwrap();
//! assert_eq!(reader.snapshot("gateway", None, None).unwrap().tail[0].num_rows(), 2);
//! writer.close().unwrap();
//! let snapshot = reader.snapshot("gateway", None, None).unwrap();
//! assert!(snapshot.tail.is_empty() && snapshot.segments.len() == 1);
//! ```

mod layout;
mod reader;
mod rollup;
mod schema;
mod segment;
mod wal;
mod writer;

pub use layout::{
    check_writer_id, hour_start, DataFile, FileKind, FlushMark, Layout, DEFAULT_WRITER, HOUR_NANOS,
};
pub use reader::{Snapshot, StoreReader};
pub use rollup::{rollup_column, rollup_schema, RollupBuilder, ROLLUP_DIMENSIONS};
pub use schema::merge_schema;
pub use segment::{align_to_schema, check_parquet, read_parquet, ROW_GROUP_ROWS};
pub use wal::{FsyncPolicy, Wal, WalRecord};
pub use writer::{StoreOptions, StoreWriter, WriterStats, MAX_COMPACTION_CELLS, MAX_PADDING_CELLS};

use std::path::{Path, PathBuf};

/// Errors raised by the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The directory is not a data directory.
    #[error(
        "{path}: not an inferwatch data directory (run `inferwatch ingest --data {path}` first)"
    )]
    NotAStore {
        /// The path given.
        path: PathBuf,
    },
    /// Another process writes this directory under the same writer id.
    #[error(
        "{path}: the data directory is in use by writer '{writer}' ({holder}); stop it, or give this node another --node-id"
    )]
    InUse {
        /// The lock file.
        path: PathBuf,
        /// The writer id.
        writer: String,
        /// Who holds it, as its pid file says.
        holder: String,
    },
    /// No such stream.
    #[error("unknown stream '{stream}'")]
    UnknownStream {
        /// The name asked for.
        stream: String,
    },
    /// A batch's column has another type than the stream's.
    #[error("schema conflict in stream '{stream}': {message}")]
    SchemaConflict {
        /// The stream.
        stream: String,
        /// Which field and which types.
        message: String,
    },
    /// An option value is invalid.
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The option.
        option: String,
        /// What is wrong.
        message: String,
    },
    /// A store file could not be read.
    #[error("{path}: corrupt store file: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Arrow encoding or decoding failed.
    #[error("arrow: {0}")]
    Arrow(String),
    /// Parquet encoding or decoding failed.
    #[error("parquet: {0}")]
    Parquet(String),
    /// The writer kept flushing while a snapshot was taken; retry.
    #[error("the store is busy flushing; retry the query")]
    Busy,
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
