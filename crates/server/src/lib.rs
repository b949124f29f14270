//! # inferwatch-server
//!
//! The running node. Everything that keeps inferwatch going between the
//! decoders and the user lives here: the one-pass runtime that `ingest`,
//! `run` and `serve` share, and the HTTP ingest API that log shippers send
//! to.
//!
//! ```text
//!  files, stdin ─► Pipeline (read ∥ decode) ─┐
//!                                            ├─► event-time guard ─► store WAL (the ack) ─► detect ─► alerts ─► notify ─► actions
//!  HTTP (NDJSON, _bulk, HEC, OTLP) ─► queue ─┘          └─► dead letters
//! ```
//!
//! It sits after `ingest`, `store`, `detect` and `query` in the flow and
//! depends on all of them; only `inferwatch-cli` depends on it, and the CLI
//! does nothing but parse arguments, call in here and print.
//!
//! ## The one-pass runtime
//!
//! [`pipeline::Pipeline`] reads files or stdin on one thread and decodes
//! chunks on several, handing batches back in input order through bounded
//! channels. [`one_pass::ingest_pass`] is the single loop behind `ingest`
//! and `run`: each batch goes through the [`inferwatch_ingest::EventTimeGuard`],
//! its refused lines to the dead-letter file, its rows to the store's WAL
//! (with the source position, so a restart resumes exactly), and then,
//! when a [`one_pass::Detection`] is given, to the rule engine, whose
//! transitions are written exactly once per output across restarts
//! ([`alert_ledger`]).
//!
//! `serve` reads its settings from flags, `INFERWATCH_*` variables and a
//! YAML file, in that order of precedence ([`serve_config`]); `run` reads
//! its own YAML file ([`config`]).
//!
//! ## Notifications and actions
//!
//! [`notify::Notifier`] is the one way alert transitions reach people, in
//! `detect`, `run` and `serve` alike: the notification pipeline of
//! `inferwatch-alert` (grouping, silences, inhibition, acknowledgements,
//! flapping, risk, history), then its durable dispatcher to the configured
//! actions. [`one_pass::Detection`] feeds it and moves its event-time clock
//! with detection's; a serving node hands the same `Notifier` to the REST
//! API, so an acknowledgement or silence made over HTTP is honoured by the
//! next notification.
//!
//! ## HTTP ingest
//!
//! [`http`] is an axum router speaking the protocols shippers already
//! speak: NDJSON, Elasticsearch `_bulk` (with the start-up probes Filebeat,
//! Vector and the official clients make), Splunk HEC and OTLP/HTTP logs
//! (JSON and protobuf). Each protocol only frames its body into JSON lines
//! for the same [`inferwatch_ingest::Decoder`] the files go through, so the
//! mapping, the dead letters and the event-time guard are the same. Decoded
//! batches go through one bounded queue to the single store writer
//! ([`writer::IngestWriter`]), which answers each request only once its WAL
//! record is durable under the configured fsync policy; a full queue is a
//! 429 (HEC: 503 code 9) with `Retry-After`, never unbounded memory.
//! [`nats`] feeds the same path from a NATS JetStream consumer, acking each
//! message once durable (a full queue: nak and redelivery).
//! [`auth`] holds the tokens: SHA-256 of random 256-bit secrets, compared
//! in constant time, with ingest (optionally per stream), read and admin
//! scopes.
//!
//! ```no_run
//! use inferwatch_server::one_pass::{load_mapping, StoreSettings};
//! let settings = StoreSettings::default();
//! let writer = inferwatch_store::StoreWriter::open(
//!     std::path::Path::new("data"),
//!     settings.options()?,
//! )?;
//! let _mapping = load_mapping(None)?;
//! println!("resuming after {:?}", writer.recovered_position());
//! # Ok::<(), inferwatch_server::ServerError>(())
//! ```

pub mod alert_ledger;
pub mod api;
pub mod api_rules;
pub mod auth;
pub mod compare;
pub mod config;
pub mod correlator;
pub mod http;
pub mod live;
pub mod metrics;
pub mod nats;
pub mod notify;
pub mod one_pass;
pub mod pipeline;
pub mod protocol;
pub mod ratelimit;
pub mod series;
pub mod serve;
pub mod serve_config;
pub mod tls;
pub mod ui;
pub mod writer;

use std::path::{Path, PathBuf};

/// Errors of the runtime and the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Reading or decoding input failed.
    #[error(transparent)]
    Ingest(#[from] inferwatch_ingest::IngestError),
    /// The store refused an operation.
    #[error(transparent)]
    Store(#[from] inferwatch_store::StoreError),
    /// Rules or correlations could not be loaded or run.
    #[error(transparent)]
    Detect(#[from] inferwatch_detect::DetectError),
    /// A duration or other core value is invalid.
    #[error(transparent)]
    Core(#[from] inferwatch_core::CoreError),
    /// Actions, notification settings or the notification state failed.
    #[error(transparent)]
    Alert(#[from] inferwatch_alert::AlertError),
    /// The SQL engine or the Postgres listener failed.
    #[error(transparent)]
    Query(#[from] inferwatch_query::QueryError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A configuration value or file is invalid (the message names it).
    #[error("{0}")]
    Config(String),
    /// Rules failed to load; every error is listed.
    #[error("{count} rule error(s):\n  {}", messages.join("\n  "))]
    Rules {
        /// How many.
        count: usize,
        /// One line each, with file, line and column.
        messages: Vec<String>,
    },
    /// Writing alerts or dead letters as JSON failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Arrow encoding failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The HTTP listener could not start or stopped.
    #[error("http listener {address}: {source}")]
    Listen {
        /// The address.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl ServerError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> ServerError {
        ServerError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
