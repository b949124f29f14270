//! The `dead_letters` table: every refused line of a data directory, one row
//! each, so that bad input is data too. A flood of `future_timestamp` or
//! `out_of_range` lines from one client is one `GROUP BY client_id` away,
//! and rules and dashboards can watch it instead of it vanishing silently.
//!
//! It reads the data directory's [`STORE_DEAD_LETTERS_FILE`], which
//! `inferwatch ingest` and `inferwatch run` append to (one JSON object per
//! refused line: source, line, offset, kind, reason, the raw line's first
//! kilobyte, and the event's client, model and time when they could be
//! read). The file is read afresh at every scan, like the `alerts` table;
//! lines that do not parse (a torn last line) are skipped.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, StringBuilder, TimestampNanosecondBuilder, UInt64Builder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde_json::Value;

/// The table's name in SQL.
pub const DEAD_LETTERS_TABLE: &str = "dead_letters";

/// Where `ingest` and `run` keep the refused lines of a data directory.
pub const STORE_DEAD_LETTERS_FILE: &str = "dead_letters.jsonl";

/// The refused lines of one dead-letter file.
#[derive(Debug)]
pub struct DeadLetterTable {
    path: PathBuf,
    schema: SchemaRef,
}

impl DeadLetterTable {
    /// A table over `path` (missing reads as empty).
    pub fn new(path: PathBuf) -> DeadLetterTable {
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        let schema = Schema::new(vec![
            text("source", false),
            Field::new("line", DataType::UInt64, false),
            Field::new("offset", DataType::UInt64, false),
            text("kind", true),
            text("reason", false),
            text("client_id", true),
            text("model_id", true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            text("raw", false),
        ]);
        DeadLetterTable {
            path,
            schema: Arc::new(schema),
        }
    }

    fn read(&self) -> Result<RecordBatch> {
        let text = crate::alerts::read_whole_or_empty(&self.path)?;
        let mut source = StringBuilder::new();
        let mut line = UInt64Builder::new();
        let mut offset = UInt64Builder::new();
        let mut kind = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut client_id = StringBuilder::new();
        let mut model_id = StringBuilder::new();
        let mut event_time = TimestampNanosecondBuilder::new();
        let mut raw = StringBuilder::new();
        for entry in text.lines() {
            let Ok(record) = serde_json::from_str::<Value>(entry) else {
                continue;
            };
            let Some(text_of) = record.as_object().map(|object| {
                move |name: &str| object.get(name).and_then(Value::as_str).map(str::to_string)
            }) else {
                continue;
            };
            source.append_value(text_of("source").unwrap_or_default());
            line.append_value(record["line"].as_u64().unwrap_or(0));
            offset.append_value(record["offset"].as_u64().unwrap_or(0));
            kind.append_option(text_of("kind"));
            reason.append_value(text_of("reason").unwrap_or_default());
            client_id.append_option(text_of("client_id"));
            model_id.append_option(text_of("model_id"));
            event_time.append_option(record["event_time"].as_i64());
            raw.append_value(text_of("raw").unwrap_or_default());
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(source.finish()),
            Arc::new(line.finish()),
            Arc::new(offset.finish()),
            Arc::new(kind.finish()),
            Arc::new(reason.finish()),
            Arc::new(client_id.finish()),
            Arc::new(model_id.finish()),
            Arc::new(event_time.finish().with_timezone("UTC")),
            Arc::new(raw.finish()),
        ];
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|error| DataFusionError::ArrowError(Box::new(error), None))
    }
}

#[async_trait]
impl TableProvider for DeadLetterTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::alerts::scan_one_batch(self.read()?, &self.schema, projection)
    }
}
