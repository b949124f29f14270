//! The `alerts` table: every alert transition, one row each, so `psql` and
//! `inferwatch query` answer "what fired on recsys this week, for how long,
//! touching how many clients" next to the events themselves.
//!
//! It reads either of the two files alerts are kept in: the store's own
//! `alerts.jsonl` ([`STORE_ALERTS_FILE`], one alert JSON per line, appended
//! by `inferwatch run`) or a notification pipeline's history
//! (`alert-history.jsonl` of `detect --actions`, whose `transition` records
//! carry the alert, the origin and the time it was recorded).
//!
//! The file is read afresh at every scan: a `serve` session sees alerts as
//! they are appended. Lines that do not parse (a torn last line while the
//! pipeline writes) are skipped; the pipeline cuts them off on its next
//! start. The history is small next to the events (one line per
//! transition), so a scan reads it whole.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use serde_json::Value;

/// The table's name in SQL.
pub const ALERTS_TABLE: &str = "alerts";

/// Where `inferwatch run` keeps the alerts of a data directory.
pub const STORE_ALERTS_FILE: &str = "alerts.jsonl";

/// The alert transitions of one history file.
#[derive(Debug)]
pub struct AlertHistoryTable {
    path: PathBuf,
    schema: SchemaRef,
}

impl AlertHistoryTable {
    /// A table over `path` (an `alerts.jsonl` or `alert-history.jsonl`;
    /// missing reads as empty).
    pub fn new(path: PathBuf) -> AlertHistoryTable {
        let time = || DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let text = |name: &str, nullable: bool| Field::new(name, DataType::Utf8, nullable);
        let schema = Schema::new(vec![
            Field::new("seq", DataType::Int64, false),
            Field::new("recorded_at", time(), true),
            text("origin", false),
            text("alert_id", false),
            text("fingerprint", false),
            text("rule_id", false),
            text("title", false),
            text("severity", false),
            text("state", false),
            Field::new("starts_at", time(), true),
            Field::new("ends_at", time(), true),
            text("model_id", true),
            text("model_version", true),
            text("client_id", true),
            text("group_labels", false),
            Field::new("value", DataType::Float64, true),
            Field::new("threshold", DataType::Float64, true),
            Field::new("events", DataType::Int64, true),
            Field::new("share_of_traffic", DataType::Float64, true),
            Field::new("distinct_clients", DataType::Int64, true),
            text("atlas", false),
            text("summary", false),
        ]);
        AlertHistoryTable {
            path,
            schema: Arc::new(schema),
        }
    }

    /// Reads the file into one batch of transitions.
    fn read(&self) -> Result<RecordBatch> {
        let text = read_whole_or_empty(&self.path)?;
        let mut columns = Columns::default();
        for (number, line) in text.lines().enumerate() {
            let Ok(record) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if record["kind"] == "transition" {
                let seq = record["seq"].as_i64().unwrap_or(0);
                let origin = record["origin"].as_str().unwrap_or_default();
                columns.push(&record["alert"], seq, &record["at"], origin);
            } else if record.get("kind").is_none() && record.get("rule_id").is_some() {
                // A plain alert line: numbered by its line, never re-recorded.
                columns.push(&record, number as i64 + 1, &Value::Null, "engine");
            }
        }
        RecordBatch::try_new(self.schema.clone(), columns.finish())
            .map_err(|error| DataFusionError::ArrowError(Box::new(error), None))
    }
}

/// A JSON Lines side file read whole; a missing one reads as empty.
pub(crate) fn read_whole_or_empty(path: &std::path::Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(DataFusionError::External(
            format!("reading {}: {error}", path.display()).into(),
        )),
    }
}

#[async_trait]
impl TableProvider for AlertHistoryTable {
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
        scan_one_batch(self.read()?, &self.schema, projection)
    }
}

/// The plan of a side-file table: its one batch, read afresh, projected.
pub(crate) fn scan_one_batch(
    batch: RecordBatch,
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(MemorySourceConfig::try_new_exec(
        &[vec![batch]],
        schema.clone(),
        projection.cloned(),
    )?)
}

/// Column builders, in schema order.
#[derive(Default)]
struct Columns {
    seq: Int64Builder,
    recorded_at: TimestampNanosecondBuilder,
    origin: StringBuilder,
    alert_id: StringBuilder,
    fingerprint: StringBuilder,
    rule_id: StringBuilder,
    title: StringBuilder,
    severity: StringBuilder,
    state: StringBuilder,
    starts_at: TimestampNanosecondBuilder,
    ends_at: TimestampNanosecondBuilder,
    model_id: StringBuilder,
    model_version: StringBuilder,
    client_id: StringBuilder,
    group_labels: StringBuilder,
    value: Float64Builder,
    threshold: Float64Builder,
    events: Int64Builder,
    share_of_traffic: Float64Builder,
    distinct_clients: Int64Builder,
    atlas: StringBuilder,
    summary: StringBuilder,
}

impl Columns {
    fn push(&mut self, alert: &Value, seq: i64, recorded_at: &Value, origin: &str) {
        let text = |value: &Value| value.as_str().unwrap_or_default().to_string();
        let time = |value: &Value| {
            value
                .as_str()
                .and_then(|text| inferwatch_core::parse_timestamp_text(text).ok())
        };
        self.seq.append_value(seq);
        self.recorded_at.append_option(time(recorded_at));
        self.origin.append_value(origin);
        self.alert_id.append_value(text(&alert["alert_id"]));
        self.fingerprint.append_value(text(&alert["fingerprint"]));
        self.rule_id.append_value(text(&alert["rule_id"]));
        self.title.append_value(text(&alert["title"]));
        self.severity.append_value(text(&alert["severity"]));
        self.state.append_value(text(&alert["state"]));
        self.starts_at.append_option(time(&alert["starts_at"]));
        self.ends_at.append_option(time(&alert["ends_at"]));
        let group = &alert["group"];
        self.model_id.append_option(group["model_id"].as_str());
        self.model_version
            .append_option(group["model_version"].as_str());
        self.client_id.append_option(group["client_id"].as_str());
        self.group_labels.append_value(group.to_string());
        self.value.append_option(alert["value"].as_f64());
        self.threshold.append_option(alert["threshold"].as_f64());
        let impact = &alert["impact"];
        self.events.append_option(impact["events"].as_i64());
        self.share_of_traffic
            .append_option(impact["share_of_traffic"].as_f64());
        self.distinct_clients
            .append_option(impact["distinct_clients"].as_i64());
        let atlas: Vec<&str> = alert["atlas"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        self.atlas.append_value(atlas.join(","));
        self.summary.append_value(text(&alert["summary"]));
    }

    fn finish(mut self) -> Vec<ArrayRef> {
        let utc = || Some(Arc::<str>::from("UTC"));
        vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.recorded_at.finish().with_timezone_opt(utc())),
            Arc::new(self.origin.finish()),
            Arc::new(self.alert_id.finish()),
            Arc::new(self.fingerprint.finish()),
            Arc::new(self.rule_id.finish()),
            Arc::new(self.title.finish()),
            Arc::new(self.severity.finish()),
            Arc::new(self.state.finish()),
            Arc::new(self.starts_at.finish().with_timezone_opt(utc())),
            Arc::new(self.ends_at.finish().with_timezone_opt(utc())),
            Arc::new(self.model_id.finish()),
            Arc::new(self.model_version.finish()),
            Arc::new(self.client_id.finish()),
            Arc::new(self.group_labels.finish()),
            Arc::new(self.value.finish()),
            Arc::new(self.threshold.finish()),
            Arc::new(self.events.finish()),
            Arc::new(self.share_of_traffic.finish()),
            Arc::new(self.distinct_clients.finish()),
            Arc::new(self.atlas.finish()),
            Arc::new(self.summary.finish()),
        ]
    }
}
