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
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}
