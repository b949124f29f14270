//! The one error type of the ingest crate.

use std::path::PathBuf;

/// Errors raised while configuring or running ingestion.
///
/// Bad *records* are not errors: they become dead-letter entries. These are
/// failures of configuration or of the environment.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A configuration file (mapping, lookup table) is invalid.
    #[error("{path}:{line}:{column}: {message}")]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint file exists but cannot be used.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        message: String,
    },
    /// An input path or glob pattern is invalid or matches nothing.
    #[error("input '{pattern}': {message}")]
    InvalidPattern {
        /// The path or pattern as given.
        pattern: String,
        /// What is wrong.
        message: String,
    },
    /// A lookup table for enrichment is invalid (missing key column, a value
    /// that does not fit its canonical column, unreadable format).
    #[error("lookup table {table}: {message}")]
    LookupTable {
        /// The table's file path or name.
        table: String,
        /// What is wrong, naming the row key and column when there is one.
        message: String,
    },
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}
