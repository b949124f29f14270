//! # inferwatch-query
//!
//! SQL over the embedded store, in-process and over the Postgres wire.
//!
//! It sits at the end of the storage path (`store → **query** → psql,
//! Grafana, the dashboard`). [`QueryEngine`] is a DataFusion session whose
//! default schema lists the store's streams live: each stream is a table
//! (`inference`, and any generic stream such as `gateway`), and
//! `inference_rollups` exposes the per-minute rollups, and `alerts` every
//! alert transition (the data directory's `alerts.jsonl`, or a notification
//! history via [`QueryEngine::open_with_alerts`]). Every scan takes a
//! fresh store snapshot, so an event is queryable as soon as its WAL record
//! is written, and prunes hour partitions and row groups by time.
//!
//! SQL gains `time_bucket(width, ts)`, `quantile(x, q)` (DDSketch, 1 %
//! relative error), `quantile_merge(sketch, q)`, and `sketch_merge(sketch)`
//! with `sketch_quantile(bytes, q)` (merge sketches once, read several
//! quantiles). An analyzer rule
//! ([`RollupRewrite`]) answers dashboard-shaped aggregates from the rollups;
//! a physical rule ([`DictionaryCountRule`]) counts by one dictionary string
//! column (`GROUP BY client_id`) on the dictionary keys instead of hashing
//! every row. [`serve_postgres`] speaks the Postgres protocol (simple and extended
//! query, SCRAM-SHA-256 password auth, optional TLS) through `datafusion-postgres`;
//! with [`PgOptions::with_logins`] the password is one of the node's tokens,
//! verified against its stored SCRAM verifier ([`scram`]).
//!
//! **SQL here only reads.** The port is meant to be opened to Grafana, to
//! notebooks and to whoever hunts through the logs, and a DataFusion session
//! left at its defaults is a file system API: `COPY (…) TO '/path'` writes
//! on the server's host, `CREATE EXTERNAL TABLE` reads any file it can open,
//! and `SET datafusion.*` retunes the engine for every client. So
//! [`QueryEngine::sql`] (`inferwatch query`) and the wire (see [`ReadOnlyHook`])
//! take the same path: queries, `EXPLAIN` and `SHOW` pass, every plan is
//! checked with DataFusion's own guard ([`read_only_options`]: no DDL, no DML,
//! no statements), and `SET` is allowed only for [`HARMLESS_SETTINGS`], the
//! session settings clients send on connect. The session's query planner
//! ([`LimitedQueryPlanner`]) checks again and gives each statement a deadline
//! and a memory pool of its own ([`StatementLimits`]), so a runaway query
//! ends by itself and cannot take the memory other clients need. The
//! store's tables live in a schema that refuses new tables, so even a path
//! that skipped the checks could not add one there.
//!
//! ```no_run
//! # async fn example() -> Result<(), inferwatch_query::QueryError> {
//! let engine = inferwatch_query::QueryEngine::open(std::path::Path::new("data"), true)?;
//! let batches = engine
//!     .sql("SELECT model_version, quantile(latency_ms, 0.99) FROM inference GROUP BY 1")
//!     .await?;
//! # Ok(()) }
//! ```

mod alerts;
mod dead_letters;
mod dictionary_count;
mod functions;
mod pg;
mod read_only;
mod rewrite;
pub mod scram;
mod table;

pub use alerts::{AlertHistoryTable, ALERTS_TABLE, STORE_ALERTS_FILE};
/// tokio-rustls as pgwire links it (ring), for the node's HTTPS listener.
pub use datafusion_postgres::pgwire::tokio::tokio_rustls;
pub use dead_letters::{DeadLetterTable, DEAD_LETTERS_TABLE, STORE_DEAD_LETTERS_FILE};
pub use dictionary_count::{DictionaryCountExec, DictionaryCountRule};
pub use functions::{aggregate_functions, bucket_width_nanos, scalar_functions};
pub use pg::{rustls_server_config, serve_postgres, PgOptions, PgTls, ReadOnlyHook};
pub use read_only::{
    is_harmless_setting, read_only_options, verify_read_only, LimitedQueryPlanner,
    StatementLimitExec, StatementLimits, HARMLESS_SETTINGS,
};
pub use rewrite::RollupRewrite;
pub use table::{time_bounds, StreamTable, TableKind};

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::AggregateUDF;
use datafusion::optimizer::analyzer::Analyzer;
use datafusion::prelude::{SessionConfig, SessionContext};
use inferwatch_core::DEFAULT_STREAM;
use inferwatch_store::{StoreError, StoreReader};

/// Errors raised by the query layer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL could not be parsed, planned or run; the message says why.
    #[error("{0}")]
    Sql(String),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A network or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The statement would write, define or change something; SQL over
    /// inferwatch only reads.
    #[error("inferwatch SQL is read-only: {0}")]
    ReadOnly(String),
    /// A `SET` of a setting outside [`HARMLESS_SETTINGS`].
    #[error("inferwatch SQL is read-only: SET {name} is refused")]
    SettingRefused {
        /// The setting, as written.
        name: String,
    },
    /// The statement ran past its [`StatementLimits::timeout`].
    #[error("canceling statement due to statement timeout ({limit:?})")]
    StatementTimeout {
        /// The limit it hit.
        limit: std::time::Duration,
    },
    /// The statement needed more memory than its [`StatementLimits::memory_bytes`].
    #[error("statement exceeded its memory limit: {0}")]
    MemoryLimit(String),
    /// The Postgres port has no password and is not on loopback.
    #[error(
        "the Postgres port {listen} is not on loopback and has no password: \
         set --pg-password or INFERWATCH_PG_PASSWORD, or listen on 127.0.0.1"
    )]
    PasswordRequired {
        /// The address asked for.
        listen: std::net::SocketAddr,
    },
    /// The TLS certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        // Store errors wrapped by DataFusion keep their own message; our own
        // (timeouts, refusals from the planner) keep their kind.
        match error.find_root() {
            DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>() {
                Some(QueryError::StatementTimeout { limit }) => {
                    QueryError::StatementTimeout { limit: *limit }
                }
                Some(QueryError::ReadOnly(what)) => QueryError::ReadOnly(what.clone()),
                _ => QueryError::Sql(inner.to_string()),
            },
            DataFusionError::ResourcesExhausted(message) => {
                QueryError::MemoryLimit(message.clone())
            }
            root => QueryError::Sql(root.strip_backtrace()),
        }
    }
}

/// The default schema: the store's streams, listed live.
#[derive(Debug)]
struct StoreSchema {
    reader: Arc<StoreReaderHandle>,
    /// The `alerts` table.
    alerts: Arc<AlertHistoryTable>,
    /// The `dead_letters` table.
    dead_letters: Arc<DeadLetterTable>,
}

/// `StoreReader` behind a `Debug` wrapper, as DataFusion's traits require.
struct StoreReaderHandle(Arc<StoreReader>);

impl std::fmt::Debug for StoreReaderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreReader({})", self.0.layout().root().display())
    }
}

const ROLLUP_TABLE_SUFFIX: &str = "_rollups";

#[async_trait]
impl SchemaProvider for StoreSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.reader.0.streams().unwrap_or_default();
        names.push(format!("{DEFAULT_STREAM}{ROLLUP_TABLE_SUFFIX}"));
        names.push(ALERTS_TABLE.to_string());
        names.push(DEAD_LETTERS_TABLE.to_string());
        names.sort();
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let reader = self.reader.0.clone();
        if name == ALERTS_TABLE {
            return Ok(Some(self.alerts.clone()));
        }
        if name == DEAD_LETTERS_TABLE {
            return Ok(Some(self.dead_letters.clone()));
        }
        if name == format!("{DEFAULT_STREAM}{ROLLUP_TABLE_SUFFIX}") {
            return Ok(Some(Arc::new(StreamTable::rollups(reader, DEFAULT_STREAM))));
        }
        if !self.table_exist(name) {
            return Ok(None);
        }
        Ok(Some(Arc::new(StreamTable::events(reader, name)?)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }
}

/// A SQL session over one data directory.
pub struct QueryEngine {
    context: Arc<SessionContext>,
    reader: Arc<StoreReader>,
}

impl QueryEngine {
    /// Opens `data` for querying; `use_rollups` enables [`RollupRewrite`].
    pub fn open(data: &Path, use_rollups: bool) -> Result<QueryEngine, QueryError> {
        QueryEngine::open_with_alerts(data, use_rollups, None)
    }

    /// Like [`QueryEngine::open`], with the `alerts` table read from
    /// `alert_history` instead of the data directory's own
    /// [`STORE_ALERTS_FILE`] (see [`AlertHistoryTable`]).
    pub fn open_with_alerts(
        data: &Path,
        use_rollups: bool,
        alert_history: Option<&Path>,
    ) -> Result<QueryEngine, QueryError> {
        QueryEngine::open_with_limits(data, use_rollups, alert_history, StatementLimits::default())
    }

    /// Like [`QueryEngine::open_with_alerts`], with each statement held to
    /// `limits` (see [`LimitedQueryPlanner`]).
    pub fn open_with_limits(
        data: &Path,
        use_rollups: bool,
        alert_history: Option<&Path>,
        limits: StatementLimits,
    ) -> Result<QueryEngine, QueryError> {
        let reader = Arc::new(StoreReader::open(data)?);
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("datafusion", "public");
        let mut rules = Analyzer::new().rules;
        let sketch_merge = aggregate_function("sketch_merge")
            .map(Arc::new)
            .ok_or_else(|| QueryError::Internal("sketch_merge is not registered".into()))?;
        let sketch_quantile = scalar_functions()
            .into_iter()
            .find(|f| f.name() == "sketch_quantile")
            .map(Arc::new)
            .ok_or_else(|| QueryError::Internal("sketch_quantile is not registered".into()))?;
        if use_rollups {
            rules.insert(
                0,
                Arc::new(RollupRewrite::new(
                    reader.clone(),
                    sketch_merge,
                    sketch_quantile,
                )),
            );
        }
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_analyzer_rules(rules)
            .with_physical_optimizer_rule(Arc::new(DictionaryCountRule))
            .with_query_planner(Arc::new(LimitedQueryPlanner::new(limits)))
            .build();
        let context = SessionContext::new_with_state(state);
        for function in scalar_functions() {
            context.register_udf(function);
        }
        for function in aggregate_functions() {
            context.register_udaf(function);
        }
        let catalog = context
            .catalog("datafusion")
            .ok_or_else(|| QueryError::Internal("the default catalog is missing".into()))?;
        catalog.register_schema(
            "public",
            Arc::new(StoreSchema {
                reader: Arc::new(StoreReaderHandle(reader.clone())),
                alerts: Arc::new(AlertHistoryTable::new(
                    alert_history.map_or_else(|| data.join(STORE_ALERTS_FILE), Path::to_path_buf),
                )),
                dead_letters: Arc::new(DeadLetterTable::new(data.join(STORE_DEAD_LETTERS_FILE))),
            }),
        )?;
        Ok(QueryEngine {
            context: Arc::new(context),
            reader,
        })
    }

    /// Runs one read-only SQL statement and collects its result. Anything
    /// that would write, define or change something is refused with
    /// [`QueryError::ReadOnly`] before it runs.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let state = self.context.state();
        let statement = read_only::parse_read_only(&state, sql)?;
        let plan = state.statement_to_plan(statement).await?;
        verify_read_only(&plan)?;
        let frame = self.context.execute_logical_plan(plan).await?;
        Ok(frame.collect().await?)
    }

    /// Like [`QueryEngine::sql`], but stops after `limit` rows: the result
    /// is read as a stream and dropped (which ends the query) once the
    /// limit is reached. Returns the result's schema, at most `limit` rows,
    /// and whether there were more (the REST API's row limit).
    pub async fn sql_limited(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<
        (
            datafusion::arrow::datatypes::SchemaRef,
            Vec<RecordBatch>,
            bool,
        ),
        QueryError,
    > {
        use futures::StreamExt;
        let state = self.context.state();
        let statement = read_only::parse_read_only(&state, sql)?;
        let plan = state.statement_to_plan(statement).await?;
        verify_read_only(&plan)?;
        let frame = self.context.execute_logical_plan(plan).await?;
        let mut stream = frame.execute_stream().await?;
        let schema = stream.schema();
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            if rows >= limit {
                truncated = true;
                break;
            }
            let take = batch.num_rows().min(limit - rows);
            rows += take;
            if take < batch.num_rows() {
                batches.push(batch.slice(0, take));
                truncated = true;
                break;
            }
            batches.push(batch);
        }
        Ok((schema, batches, truncated))
    }

    /// The DataFusion session (for the Postgres server).
    pub fn context(&self) -> Arc<SessionContext> {
        self.context.clone()
    }

    /// The store reader behind the tables.
    pub fn reader(&self) -> &Arc<StoreReader> {
        &self.reader
    }
}

/// Looks up one of inferwatch's aggregate functions by name.
pub fn aggregate_function(name: &str) -> Option<AggregateUDF> {
    aggregate_functions().into_iter().find(|f| f.name() == name)
}
