//! Tables over store snapshots: one per stream, plus `<stream>_rollups`.
//!
//! A scan takes a fresh [`Snapshot`](inferwatch_store::Snapshot) so every
//! query sees the latest acknowledged events. Time predicates on
//! `timestamp` (or `minute` for rollups) choose the hour partitions to list;
//! the same predicates go to the Parquet reader, which skips row groups by
//! their statistics. The WAL tail is scanned from memory beside the files.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use inferwatch_store::{align_to_schema, rollup_schema, DataFile, StoreReader, HOUR_NANOS};

/// Which rows of a stream a table exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// The events themselves.
    Events,
    /// The per-minute rollups of the inference stream.
    Rollups,
}

/// A SQL table over one stream of the store.
pub struct StreamTable {
    reader: Arc<StoreReader>,
    stream: String,
    kind: TableKind,
    schema: SchemaRef,
}

impl std::fmt::Debug for StreamTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTable")
            .field("stream", &self.stream)
            .field("kind", &self.kind)
            .finish()
    }
}

impl StreamTable {
    /// A table over `stream`'s events.
    pub fn events(reader: Arc<StoreReader>, stream: &str) -> Result<StreamTable> {
        let schema = reader
            .schema(stream)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(StreamTable {
            reader,
            stream: stream.to_string(),
            kind: TableKind::Events,
            schema,
        })
    }

    /// A table over `stream`'s per-minute rollups.
    pub fn rollups(reader: Arc<StoreReader>, stream: &str) -> StreamTable {
        StreamTable {
            reader,
            stream: stream.to_string(),
            kind: TableKind::Rollups,
            schema: rollup_schema(),
        }
    }

    /// Whether this table shows `stream` as `kind`.
    pub fn is_stream(&self, stream: &str, kind: TableKind) -> bool {
        self.stream == stream && self.kind == kind
    }

    fn time_column(&self) -> &'static str {
        match self.kind {
            TableKind::Events => inferwatch_core::column::TIMESTAMP,
            TableKind::Rollups => inferwatch_store::rollup_column::MINUTE,
        }
    }
}

/// Reads `[from, to)` bounds on `column` out of conjunctive filters.
pub fn time_bounds(filters: &[Expr], column: &str) -> (Option<i64>, Option<i64>) {
    let mut from: Option<i64> = None;
    let mut to: Option<i64> = None;
    let mut visit = |expr: &Expr| {
        let mut stack = vec![expr];
        while let Some(expr) = stack.pop() {
            match expr {
                Expr::BinaryExpr(BinaryExpr {
                    left,
                    op: Operator::And,
                    right,
                }) => {
                    stack.push(left);
                    stack.push(right);
                }
                Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                    let (op, value) = match (column_name(left), column_name(right)) {
                        (Some(name), None) if name == column => (*op, timestamp_literal(right)),
                        (None, Some(name)) if name == column => {
                            (op.swap().unwrap_or(*op), timestamp_literal(left))
                        }
                        _ => continue,
                    };
                    let Some(value) = value else { continue };
                    match op {
                        Operator::Gt | Operator::GtEq => {
                            from = Some(from.map_or(value, |f| f.max(value)))
                        }
                        Operator::Lt => to = Some(to.map_or(value, |t| t.min(value))),
                        Operator::LtEq => {
                            let end = value.saturating_add(1);
                            to = Some(to.map_or(end, |t| t.min(end)))
                        }
                        Operator::Eq => {
                            from = Some(from.map_or(value, |f| f.max(value)));
                            let end = value.saturating_add(1);
                            to = Some(to.map_or(end, |t| t.min(end)));
                        }
                        _ => {}
                    }
                }
                Expr::Between(between)
                    if !between.negated
                        && column_name(&between.expr).as_deref() == Some(column) =>
                {
                    if let Some(low) = timestamp_literal(&between.low) {
                        from = Some(from.map_or(low, |f| f.max(low)));
                    }
                    if let Some(high) = timestamp_literal(&between.high) {
                        let end = high.saturating_add(1);
                        to = Some(to.map_or(end, |t| t.min(end)));
                    }
                }
                _ => {}
            }
        }
    };
    for filter in filters {
        visit(filter);
    }
    (from, to)
}

fn column_name(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Column(column) => Some(column.name.clone()),
        Expr::Cast(cast) => column_name(&cast.expr),
        Expr::TryCast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

/// A literal timestamp in UTC nanoseconds (typed, or text in RFC 3339).
pub fn timestamp_literal(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => scalar_timestamp_nanos(value),
        Expr::Cast(cast) => timestamp_literal(&cast.expr),
        Expr::TryCast(cast) => timestamp_literal(&cast.expr),
        _ => None,
    }
}

/// A scalar as UTC nanoseconds, when it is a timestamp or RFC 3339 text.
pub fn scalar_timestamp_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => inferwatch_core::parse_timestamp_text(text).ok(),
        _ => None,
    }
}

fn external(error: inferwatch_store::StoreError) -> DataFusionError {
    DataFusionError::External(Box::new(error))
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Used for pruning only; DataFusion still filters every row.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (from, to) = time_bounds(filters, self.time_column());
        // Partitions are whole hours: widen to hour edges.
        let from_hour = from.map(|f| f.div_euclid(HOUR_NANOS) * HOUR_NANOS);
        let snapshot = self
            .reader
            .snapshot(&self.stream, from_hour, to)
            .map_err(external)?;
        let (files, tail): (&[DataFile], Vec<RecordBatch>) = match self.kind {
            TableKind::Events => (&snapshot.segments, snapshot.tail.clone()),
            TableKind::Rollups => (
                &snapshot.rollups,
                snapshot
                    .tail_rollups()
                    .map_err(external)?
                    .into_iter()
                    .collect(),
            ),
        };
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let urls = files
                .iter()
                .map(|file| ListingTableUrl::parse(file.path.to_string_lossy()))
                .collect::<Result<Vec<_>>>()?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet");
            let config = ListingTableConfig::new_with_multi_paths(urls)
                .with_listing_options(options)
                .with_schema(self.schema.clone());
            let table = ListingTable::try_new(config)?;
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        let tail = tail
            .iter()
            .map(|batch| align_to_schema(batch, &self.schema))
            .collect::<Result<Vec<_>, _>>()
            .map_err(external)?;
        if !tail.is_empty() || inputs.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[tail],
                self.schema.clone(),
                projection.cloned(),
            )?);
        }
        UnionExec::try_new(inputs)
    }
}
