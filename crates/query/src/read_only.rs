//! Read-only SQL with per-statement limits, for every path into the engine.
//!
//! Two guards, one per layer. [`verify_read_only`] checks a logical plan with
//! DataFusion's own [`SQLOptions`] (no DDL, no DML, no `COPY`, no
//! statements such as `SET` or `PREPARE`); [`QueryEngine::sql`] and the
//! Postgres hook call it before running anything. [`LimitedQueryPlanner`]
//! is the session's query planner, so whatever reaches physical planning —
//! `inferwatch query`, both wire protocols, cursors — is verified again and
//! wrapped in a [`StatementLimitExec`]: its own memory pool of
//! [`StatementLimits::memory_bytes`] (spilling disabled, so a statement over
//! its budget fails instead of writing temporary files) and a deadline of
//! [`StatementLimits::timeout`] from its first poll. Dropping the stream at
//! the deadline cancels the statement's tasks.
//!
//! Statements execute on their own runtime (one worker per core), not on
//! the caller's: a cross join that keeps every SQL worker busy cannot delay
//! the threads that accept connections and answer other clients; the OS
//! shares the cores between the two.
//!
//! [`QueryEngine::sql`]: crate::QueryEngine::sql

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{internal_err, DataFusionError, Result};
use datafusion::execution::context::{QueryPlanner, SQLOptions};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::sql::sqlparser::ast::Statement;
use futures::StreamExt;
use tokio::time::Instant;

use crate::QueryError;

/// What one statement may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// Wall-clock time from the statement's first poll to its last row.
    pub timeout: Duration,
    /// Bytes its operators may reserve (hash tables, sorts, join build sides).
    pub memory_bytes: usize,
}

impl Default for StatementLimits {
    /// Five minutes and 1 GiB: generous for dashboard and hunting queries,
    /// small enough that a runaway cross join ends on its own.
    fn default() -> Self {
        StatementLimits {
            timeout: Duration::from_secs(300),
            memory_bytes: 1 << 30,
        }
    }
}

/// DataFusion's guard: queries only.
pub fn read_only_options() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Refuses a plan that would write, define or change anything.
pub fn verify_read_only(plan: &LogicalPlan) -> std::result::Result<(), QueryError> {
    read_only_options()
        .verify_plan(plan)
        .map_err(|error| QueryError::ReadOnly(read_only_message(&error.strip_backtrace())))
}

/// "DDL not supported: CreateView" reads as a missing feature; name the
/// statement as SQL ("CREATE VIEW is refused") instead.
fn read_only_message(datafusion_message: &str) -> String {
    let what = datafusion_message
        .rsplit(": ")
        .next()
        .unwrap_or(datafusion_message)
        .trim();
    let mut words = String::with_capacity(what.len() + 4);
    let mut previous_lowercase = false;
    for character in what.chars() {
        if previous_lowercase && character.is_ascii_uppercase() {
            words.push(' ');
        }
        previous_lowercase = character.is_ascii_lowercase();
        words.push(character.to_ascii_uppercase());
    }
    format!("{words} is refused")
}

/// The session's query planner: verifies, plans, then wraps the plan in a
/// [`StatementLimitExec`].
#[derive(Debug)]
pub struct LimitedQueryPlanner {
    limits: StatementLimits,
}

impl LimitedQueryPlanner {
    /// A planner applying `limits` to every statement.
    pub fn new(limits: StatementLimits) -> LimitedQueryPlanner {
        LimitedQueryPlanner { limits }
    }
}

#[async_trait]
impl QueryPlanner for LimitedQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn datafusion::catalog::Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Any path that reaches execution (cursors, the extended protocol's
        // own executor) meets the same guard; INSERT and COPY need a
        // physical plan to write, so they stop here even if a caller forgot.
        verify_read_only(logical_plan)
            .map_err(|error| DataFusionError::External(Box::new(error)))?;
        let plan = DefaultPhysicalPlanner::default()
            .create_physical_plan(logical_plan, session)
            .await?;
        let plan = yield_after_amplifiers(plan)?;
        Ok(Arc::new(StatementLimitExec::new(
            plan,
            self.limits,
            session.runtime_env(),
        )?))
    }
}

/// Wraps every operator whose output dwarfs its input (cross and nested-loop
/// joins, unnest) in a [`CooperativeExec`], so that it spends the task's
/// scheduling budget per batch it *produces*. DataFusion's own
/// `EnsureCooperative` instruments only the leaves: a cross join of two
/// million-row series drains its inputs in a few polls and then feeds an
/// aggregate 10^12 rows within one poll, so the statement never yields —
/// it holds a worker of the SQL runtime (starving other clients) and its
/// deadline and cancellation cannot run.
fn yield_after_amplifiers(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.is::<CrossJoinExec>() || node.is::<NestedLoopJoinExec>() || node.is::<UnnestExec>()
        {
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        } else {
            Ok(Transformed::no(node))
        }
    })
    .map(|transformed| transformed.data)
}

/// The root of every statement's physical plan: runs its input with the
/// statement's own memory pool and ends it at the deadline.
pub struct StatementLimitExec {
    input: Arc<dyn ExecutionPlan>,
    limits: StatementLimits,
    runtime: Arc<RuntimeEnv>,
    /// Set by the first `execute` call, shared by all partitions.
    deadline: Arc<OnceLock<Instant>>,
}

impl StatementLimitExec {
    /// Wraps `input`; the pool is per statement, the caches and object stores
    /// are the session's.
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        limits: StatementLimits,
        session_runtime: &RuntimeEnv,
    ) -> Result<StatementLimitExec> {
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(limits.memory_bytes),
            std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(session_runtime)
            .with_memory_pool(Arc::new(pool))
            .with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
            .build_arc()?;
        Ok(StatementLimitExec {
            input,
            limits,
            runtime,
            deadline: Arc::new(OnceLock::new()),
        })
    }

    /// The limits applied.
    pub fn limits(&self) -> StatementLimits {
        self.limits
    }
}

impl fmt::Debug for StatementLimitExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatementLimitExec")
            .field("limits", &self.limits)
            .finish()
    }
}

impl DisplayAs for StatementLimitExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StatementLimitExec: timeout={:?}, memory={} bytes",
            self.limits.timeout, self.limits.memory_bytes
        )
    }
}

impl ExecutionPlan for StatementLimitExec {
    fn name(&self) -> &str {
        "StatementLimitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _visit: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("StatementLimitExec takes one input");
        }
        Ok(Arc::new(StatementLimitExec {
            input: children.swap_remove(0),
            limits: self.limits,
            runtime: self.runtime.clone(),
            deadline: self.deadline.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let limited = TaskContext::new(
            context.task_id(),
            context.session_id(),
            context.session_config().clone(),
            context.scalar_functions().clone(),
            context.higher_order_functions().clone(),
            context.aggregate_functions().clone(),
            context.window_functions().clone(),
            self.runtime.clone(),
        );
        let timeout = self.limits.timeout;
        let deadline = *self.deadline.get_or_init(|| Instant::now() + timeout);
        let schema = self.input.schema();
        // The statement runs on the SQL runtime, so that DataFusion's
        // partition tasks, spawned from inside it, run there too, and never
        // on the threads that accept connections and answer other clients.
        let input = self.input.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
        let task = sql_runtime()?.spawn(async move {
            let mut stream = match input.execute(partition, Arc::new(limited)) {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            while let Some(item) = stream.next().await {
                if sender.send(item).await.is_err() {
                    return;
                }
            }
        });
        let running = AbortOnDrop(task);
        // Each wait races the deadline on the caller's runtime; at the
        // deadline, or when the client goes, dropping `running` aborts the
        // statement at its next yield.
        let bounded = futures::stream::unfold(Some((receiver, running)), move |state| async move {
            let (mut receiver, running) = state?;
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(item)) => Some((item, Some((receiver, running)))),
                Ok(None) => None,
                Err(_elapsed) => Some((
                    Err(DataFusionError::External(Box::new(
                        QueryError::StatementTimeout { limit: timeout },
                    ))),
                    None,
                )),
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, bounded)))
    }
}

/// Aborts a statement's task when its stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The runtime that executes statements: one worker per core, apart from
/// the runtime that serves connections (DataFusion's advice for keeping a
/// server responsive under CPU-bound queries). Started on first use.
fn sql_runtime() -> Result<&'static tokio::runtime::Handle> {
    static SQL_RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    SQL_RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(
                    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
                )
                .thread_name("inferwatch-sql")
                .enable_all()
                .build()
                .map_err(|error| format!("starting the SQL runtime: {error}"))
        })
        .as_ref()
        .map(tokio::runtime::Runtime::handle)
        .map_err(|error| DataFusionError::Execution(error.clone()))
}

/// The leading keywords of a statement ("CREATE EXTERNAL TABLE", "COPY"),
/// to name it in an error without echoing its arguments.
pub(crate) fn statement_keywords(statement: &Statement) -> String {
    let text = statement.to_string();
    let keywords: Vec<&str> = text
        .split_whitespace()
        .take_while(|word| {
            !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .take(3)
        .collect();
    if keywords.is_empty() {
        "this statement".to_string()
    } else {
        keywords.join(" ")
    }
}

/// Statements that only read: queries, `EXPLAIN`, `SHOW TABLES` and kin.
pub(crate) fn is_query(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::ExplainTable { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowFunctions { .. }
    )
}

/// Parses one statement and refuses, by name, any kind that is not a query,
/// before planning: a malformed `INSERT` is still an `INSERT`.
pub(crate) fn parse_read_only(
    state: &datafusion::execution::session_state::SessionState,
    sql: &str,
) -> std::result::Result<datafusion::sql::parser::Statement, QueryError> {
    use datafusion::sql::parser::Statement as DfStatement;
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(sql, &dialect)?;
    match &statement {
        DfStatement::Statement(inner) if !is_query(inner) => Err(QueryError::ReadOnly(format!(
            "{} is refused",
            statement_keywords(inner)
        ))),
        DfStatement::CreateExternalTable(_) => Err(QueryError::ReadOnly(
            "CREATE EXTERNAL TABLE is refused".into(),
        )),
        DfStatement::CopyTo(_) => Err(QueryError::ReadOnly("COPY is refused".into())),
        _ => Ok(statement),
    }
}

/// `SET` variables clients send on connect and that change nothing shared:
/// psql, JDBC (`extra_float_digits`, `application_name`), Grafana and
/// psycopg. Anything else — above all `datafusion.*`, which would change the
/// engine for every client — is refused.
pub const HARMLESS_SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "search_path",
    "standard_conforming_strings",
    "statement_timeout",
    "timezone",
];

/// Whether `SET name = …` is allowed (case-insensitive).
pub fn is_harmless_setting(name: &str) -> bool {
    let name = name.trim().trim_matches('"').to_ascii_lowercase();
    HARMLESS_SETTINGS.contains(&name.as_str())
}
