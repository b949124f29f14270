//! The REST API under `/api/v1/`, on the same router as ingest.
//!
//! | route | scope | what |
//! |---|---|---|
//! | `POST /api/v1/query` | read | SQL → JSON rows, or an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream` |
//! | `GET /api/v1/series` | read | a metric over time from the per-minute rollups, downsampled ([`crate::series`]) |
//! | `GET /api/v1/compare` | read | one column's distribution in two segments with KS, PSI, JS, Wasserstein ([`crate::compare`]) |
//! | `GET /api/v1/alerts` | read | current alerts (firing, pending, recently resolved), filterable |
//! | `POST /api/v1/alerts/{fingerprint}/ack` | admin | acknowledge a firing alert |
//! | `GET`/`POST /api/v1/silences`, `DELETE /api/v1/silences/{id}` | read / admin | silences |
//! | `GET /api/v1/rules` | read | loaded rules with their live state |
//! | `POST /api/v1/rules/reload` | admin | load the rules again; swap them in only if all are valid ([`reload_rules`]) |
//! | `GET /api/v1/slos`, `GET /api/v1/rules/coverage`, `GET /api/v1/rules/validation` | read | SLO budgets, the ATLAS matrix, a dry-run rules check ([`crate::api_rules`]) |
//! | `GET /api/v1/notifications` | read | notification history: what was sent, what was left out and why |
//! | `GET /api/v1/ingest/dead-letters` | read | refused lines counted by reason, with samples |
//! | `GET /api/v1/health` | read | ingest rates per protocol, dead letters, queue, WAL lag, live time |
//! | `GET /api/v1/openapi.json` | read | the OpenAPI 3.1 document of every route |
//! | `GET /metrics` | read | Prometheus text ([`crate::metrics`]) |
//!
//! Tokens and answers follow [`crate::auth`]: 401 without a valid token,
//! 403 when its scope does not allow the route, unless the server is open.
//! Acknowledging and silencing change what people are told, so they take
//! `admin`; the scope model has no narrower one, and over HTTP
//! `admin` can do nothing more than that (tokens are managed on the host).
//!
//! SQL goes through the query crate's read-only session (the one the
//! Postgres wire uses): only queries, each with its own deadline and memory
//! pool, and here also a row limit (the result is streamed and dropped at
//! the limit, `truncated: true`). SQL errors are 400 with DataFusion's
//! message; store and internal errors are 500 with a generic message (the
//! detail goes to the server's log).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use inferwatch_alert::{alert_label_set, LabelMatcher, Silence};
use inferwatch_core::AlertState;
use inferwatch_query::QueryError;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::{Need, TokenRecord};
use crate::http::{denied_plain, json_response, AppState};
use crate::live::DetectionShare;
use crate::metrics::PROTOCOLS;
use crate::series::{Downsample, Metric, SeriesRequest};

/// The media type of Arrow IPC stream results.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// The OpenAPI document (hand-maintained; a test checks it against the
/// router's route table).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Settings of the REST API.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Rows a query returns at most, whatever it asks for.
    pub max_rows: usize,
    /// Rows a query returns when it does not say.
    pub default_rows: usize,
    /// How long one query may run.
    pub query_timeout: Duration,
}

impl Default for ApiOptions {
    fn default() -> ApiOptions {
        ApiOptions {
            max_rows: 100_000,
            default_rows: 10_000,
            query_timeout: Duration::from_secs(30),
        }
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error": message.into()}))
}

/// The query string as pairs, percent-decoded.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                percent_encoding::percent_decode_str(&text.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            (decode(key), decode(value))
        })
        .collect()
}

/// A `limit` query parameter within `range`, or why it is refused.
fn bounded_limit(value: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!(
            "limit: '{value}' is not a number from {} to {}",
            range.start(),
            range.end()
        )),
    }
}

pub(crate) fn parse_time(name: &str, text: &str) -> Result<i64, String> {
    inferwatch_core::parse_timestamp_text(text)
        .map_err(|_| format!("{name}: '{text}' is not an RFC 3339 time"))
}

pub(crate) fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn query_failure(error_value: QueryError) -> Response {
    match error_value {
        QueryError::Sql(_)
        | QueryError::ReadOnly(_)
        | QueryError::SettingRefused { .. }
        | QueryError::MemoryLimit(_) => error(StatusCode::BAD_REQUEST, error_value.to_string()),
        QueryError::StatementTimeout { .. } => {
            error(StatusCode::REQUEST_TIMEOUT, error_value.to_string())
        }
        QueryError::Store(inferwatch_store::StoreError::Busy) => {
            error(StatusCode::SERVICE_UNAVAILABLE, error_value.to_string())
        }
        other => {
            eprintln!("inferwatch serve: query failed: {other}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the query failed inside the server; see its log",
            )
        }
    }
}

/// `POST /api/v1/query` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryBody {
    sql: String,
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /api/v1/query`.
pub async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let request: QueryBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(parse) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the body must be JSON {{\"sql\": \"…\", \"limit\": N}}: {parse}"),
            )
        }
    };
    let options = &state.api;
    let limit = request
        .limit
        .unwrap_or(options.default_rows)
        .min(options.max_rows);
    let arrow = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains(ARROW_STREAM));
    let engine = state.query.clone();
    let result = tokio::time::timeout(options.query_timeout, async move {
        engine.sql_limited(&request.sql, limit).await
    })
    .await;
    let (schema, batches, truncated) = match result {
        Ok(Ok(result)) => result,
        Ok(Err(failure)) => return query_failure(failure),
        Err(_) => {
            return query_failure(QueryError::StatementTimeout {
                limit: options.query_timeout,
            })
        }
    };
    if arrow {
        return match arrow_stream(&schema, &batches) {
            Ok(bytes) => {
                let mut response = (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, HeaderValue::from_static(ARROW_STREAM))],
                    bytes,
                )
                    .into_response();
                response.headers_mut().insert(
                    "x-inferwatch-truncated",
                    HeaderValue::from_static(if truncated { "true" } else { "false" }),
                );
                response
            }
            Err(failure) => {
                eprintln!("inferwatch serve: encoding Arrow IPC: {failure}");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding the result failed",
                )
            }
        };
    }
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|field| json!({"name": field.name(), "type": field.data_type().to_string()}))
        .collect();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    for batch in &batches {
        let values: Vec<Vec<Value>> = batch.columns().iter().map(column_values).collect();
        for row in 0..batch.num_rows() {
            rows.push(values.iter().map(|column| column[row].clone()).collect());
        }
    }
    json_response(
        StatusCode::OK,
        &json!({"columns": columns, "rows": rows, "truncated": truncated}),
    )
}

fn arrow_stream(
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    writer.into_inner()
}

/// One column as JSON values: numbers, text, booleans, RFC 3339 times;
/// anything else as Arrow's display text.
fn column_values(array: &ArrayRef) -> Vec<Value> {
    let rows = array.len();
    let nulls_or = |value: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..rows)
            .map(|row| {
                if array.is_null(row) {
                    Value::Null
                } else {
                    value(row)
                }
            })
            .collect()
    };
    match array.data_type() {
        DataType::Null => vec![Value::Null; rows],
        DataType::Boolean => {
            let values = array.as_boolean();
            nulls_or(&|row| Value::from(values.value(row)))
        }
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => match arrow::compute::cast(array, &DataType::Int64) {
            Ok(cast) => {
                let values = cast.as_primitive::<Int64Type>();
                nulls_or(&|row| Value::from(values.value(row)))
            }
            Err(_) => display_values(array),
        },
        DataType::UInt64 => {
            let values = array.as_primitive::<arrow::datatypes::UInt64Type>();
            nulls_or(&|row| Value::from(values.value(row)))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 => {
            match arrow::compute::cast(array, &DataType::Float64) {
                Ok(cast) => {
                    let values = cast.as_primitive::<Float64Type>();
                    // JSON has no NaN or infinities: they become null.
                    nulls_or(&|row| {
                        serde_json::Number::from_f64(values.value(row))
                            .map_or(Value::Null, Value::Number)
                    })
                }
                Err(_) => display_values(array),
            }
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _)
        | DataType::Timestamp(TimeUnit::Microsecond, _)
        | DataType::Timestamp(TimeUnit::Millisecond, _)
        | DataType::Timestamp(TimeUnit::Second, _) => {
            match arrow::compute::cast(array, &DataType::Timestamp(TimeUnit::Nanosecond, None)) {
                Ok(cast) => {
                    let values = cast.as_primitive::<arrow::datatypes::TimestampNanosecondType>();
                    nulls_or(&|row| Value::from(rfc3339(values.value(row))))
                }
                Err(_) => display_values(array),
            }
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Dictionary(_, _) => {
            match arrow::compute::cast(array, &DataType::Utf8) {
                Ok(cast) => {
                    let values = cast.as_string::<i32>();
                    nulls_or(&|row| Value::from(values.value(row)))
                }
                Err(_) => display_values(array),
            }
        }
        _ => display_values(array),
    }
}

fn display_values(array: &ArrayRef) -> Vec<Value> {
    let options = arrow::util::display::FormatOptions::default();
    match arrow::util::display::ArrayFormatter::try_new(array.as_ref(), &options) {
        Ok(formatter) => (0..array.len())
            .map(|row| {
                if array.is_null(row) {
                    Value::Null
                } else {
                    Value::from(formatter.value(row).to_string())
                }
            })
            .collect(),
        Err(_) => vec![Value::Null; array.len()],
    }
}

/// `GET /api/v1/series`.
pub async fn series(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let mut request = SeriesRequest {
        metric: Metric::Count,
        model_id: None,
        model_version: None,
        from: None,
        to: None,
        points: 500,
        downsample: Downsample::Lttb,
    };
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "metric" => match value.parse() {
                Ok(metric) => request.metric = metric,
                Err(message) => return error(StatusCode::BAD_REQUEST, message),
            },
            "model_id" => request.model_id = Some(value),
            "model_version" => request.model_version = Some(value),
            "from" | "to" | "points" | "downsample" => {
                if let Err(message) = shape_param(&mut request, &key, &value) {
                    return error(StatusCode::BAD_REQUEST, message);
                }
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': use metric, model_id, model_version, from, to, points, downsample"),
                )
            }
        }
    }
    let batches = match series_rows(&state, &request, request.sql()).await {
        Ok(batches) => batches,
        Err(refused) => return refused,
    };
    if request.metric == Metric::Latencies {
        return latency_series(&request, &batches);
    }
    let minutes = request.minutes(&batches);
    let points = crate::series::downsample(&request, &minutes);
    let metric = match request.metric {
        Metric::Count => "count".to_string(),
        Metric::ErrorRate => "error_rate".to_string(),
        Metric::Latency(percent) => format!("p{percent}"),
        Metric::Latencies => "latency".to_string(),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "metric": metric,
            "source": "rollups",
            "resolution_seconds": 60,
            "downsample": match request.downsample { Downsample::Lttb => "lttb", Downsample::MinMax => "minmax" },
            "points_requested": request.points,
            "minutes": minutes.len(),
            // Unix seconds, as uPlot takes them.
            "timestamps": points.iter().map(|(at, _)| at.div_euclid(1_000_000_000)).collect::<Vec<_>>(),
            "values": points.iter().map(|(_, value)| *value).collect::<Vec<_>>(),
        }),
    )
}

/// Sets one of the range and shape parameters the series routes share:
/// `from`, `to`, `points`, `downsample`.
fn shape_param(request: &mut SeriesRequest, key: &str, value: &str) -> Result<(), String> {
    match key {
        "from" => request.from = Some(parse_time("from", value)?),
        "to" => request.to = Some(parse_time("to", value)?),
        "points" => match value.parse::<usize>() {
            Ok(points) if (2..=100_000).contains(&points) => request.points = points,
            _ => {
                return Err(format!(
                    "points: '{value}' is not a number from 2 to 100000"
                ))
            }
        },
        _ => request.downsample = value.parse()?,
    }
    Ok(())
}

/// Checks the range and runs a series route's SQL under the query timeout.
async fn series_rows(
    state: &AppState,
    request: &SeriesRequest,
    sql: String,
) -> Result<Vec<RecordBatch>, Response> {
    if let (Some(from), Some(to)) = (request.from, request.to) {
        if from >= to {
            return Err(error(StatusCode::BAD_REQUEST, "from must be before to"));
        }
    }
    let engine = state.query.clone();
    let result = tokio::time::timeout(
        state.api.query_timeout,
        async move { engine.sql(&sql).await },
    )
    .await;
    match result {
        Ok(Ok(batches)) => Ok(batches),
        Ok(Err(failure)) => Err(query_failure(failure)),
        Err(_) => Err(query_failure(QueryError::StatementTimeout {
            limit: state.api.query_timeout,
        })),
    }
}

/// `GET /api/v1/series/overview`: for every model version with rollups in
/// the range, the three overview charts (`count`, `error_rate`, and
/// `latency` with p50/p95/p99), each as `GET /api/v1/series` would answer
/// it for that version, from one scan of the rollups. Parameters: `from`,
/// `to`, `points`, `downsample`.
pub async fn series_overview(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let mut request = SeriesRequest {
        metric: Metric::Count,
        model_id: None,
        model_version: None,
        from: None,
        to: None,
        points: 500,
        downsample: Downsample::Lttb,
    };
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "from" | "to" | "points" | "downsample" => {
                if let Err(message) = shape_param(&mut request, &key, &value) {
                    return error(StatusCode::BAD_REQUEST, message);
                }
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': use from, to, points, downsample"),
                )
            }
        }
    }
    let batches = match series_rows(
        &state,
        &request,
        crate::series::overview_sql(request.from, request.to),
    )
    .await
    {
        Ok(batches) => batches,
        Err(refused) => return refused,
    };
    let groups = match crate::series::overview_groups(&batches) {
        Ok(groups) => groups,
        Err(failure) => {
            eprintln!("inferwatch serve: splitting the overview series: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the overview failed inside the server; see its log",
            );
        }
    };
    let seconds =
        |at: &[i64]| -> Vec<i64> { at.iter().map(|at| at.div_euclid(1_000_000_000)).collect() };
    let answers: Vec<Value> = groups
        .iter()
        .map(|group| {
            let for_group = |metric: Metric| SeriesRequest {
                metric,
                model_id: group.model_id.clone(),
                model_version: group.model_version.clone(),
                ..request.clone()
            };
            let one = |metric: Metric, column: usize| {
                let request = for_group(metric);
                let minutes = request.minutes_of(std::slice::from_ref(&group.rows), column);
                let points = crate::series::downsample(&request, &minutes);
                let at: Vec<i64> = points.iter().map(|(at, _)| *at).collect();
                json!({
                    "minutes": minutes.len(),
                    "timestamps": seconds(&at),
                    "values": points.iter().map(|(_, value)| *value).collect::<Vec<_>>(),
                })
            };
            let count = one(Metric::Count, 1);
            let error_rate = one(Metric::ErrorRate, 2);
            let latencies = for_group(Metric::Latencies);
            let quantile_columns = group.rows.project(&[0, 3, 4, 5]);
            let latency = match quantile_columns {
                Ok(rows) => {
                    let (at, [p50, p95, p99]) = crate::series::downsample_latencies(
                        &latencies,
                        std::slice::from_ref(&rows),
                    );
                    json!({
                        "minutes": latencies.minutes_of(std::slice::from_ref(&rows), 1).len(),
                        "timestamps": seconds(&at),
                        "values": p99,
                        "series": {"p50": p50, "p95": p95, "p99": p99},
                    })
                }
                Err(_) => Value::Null,
            };
            let events: f64 = group
                .rows
                .column(1)
                .as_primitive_opt::<Float64Type>()
                .map_or(0.0, |counts| counts.iter().flatten().sum());
            json!({
                "model_id": group.model_id,
                "model_version": group.model_version,
                "events": events as u64,
                "count": count,
                "error_rate": error_rate,
                "latency": latency,
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "source": "rollups",
            "resolution_seconds": 60,
            "downsample": match request.downsample { Downsample::Lttb => "lttb", Downsample::MinMax => "minmax" },
            "points_requested": request.points,
            "groups": answers,
        }),
    )
}

/// `metric=latency`: p50, p95 and p99 on one x (p99's downsampled
/// minutes); `values` is p99, `series` has all three.
fn latency_series(request: &SeriesRequest, batches: &[RecordBatch]) -> Response {
    let (at, [p50, p95, p99]) = crate::series::downsample_latencies(request, batches);
    json_response(
        StatusCode::OK,
        &json!({
            "metric": "latency",
            "source": "rollups",
            "resolution_seconds": 60,
            "downsample": match request.downsample { Downsample::Lttb => "lttb", Downsample::MinMax => "minmax" },
            "points_requested": request.points,
            "minutes": request.minutes_of(batches, 1).len(),
            "timestamps": at.iter().map(|at| at.div_euclid(1_000_000_000)).collect::<Vec<_>>(),
            "values": p99,
            "series": {"p50": p50, "p95": p95, "p99": p99},
        }),
    )
}

fn detection(state: &AppState) -> Option<&DetectionShare> {
    state.live.detection.as_ref()
}

fn no_detection() -> Response {
    error(
        StatusCode::CONFLICT,
        "no rules are running on this node (start serve with --rules)",
    )
}

/// `GET /api/v1/alerts`.
pub async fn alerts(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let mut wanted_state = None;
    let mut rule_id = None;
    let mut severity = None;
    let mut limit = 1_000usize;
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "state" => match value.as_str() {
                "firing" => wanted_state = Some(AlertState::Firing),
                "pending" => wanted_state = Some(AlertState::Pending),
                "resolved" => wanted_state = Some(AlertState::Resolved),
                other => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("state: '{other}': use firing, pending or resolved"),
                    )
                }
            },
            "rule_id" => rule_id = Some(value),
            "severity" => severity = Some(value),
            "limit" => match value.parse() {
                Ok(n) => limit = n,
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("limit: '{value}' is not a number"),
                    )
                }
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': use state, rule_id, severity, limit"),
                )
            }
        }
    }
    let Some(share) = detection(&state) else {
        return json_response(StatusCode::OK, &json!({"alerts": [], "detection": false}));
    };
    let board = share
        .board
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .alerts();
    let (acknowledged, silences, now) = {
        let pipeline = share.notifier.pipeline();
        let acknowledged: std::collections::HashSet<String> = pipeline
            .acknowledgements()
            .into_iter()
            .map(|acknowledgement| acknowledgement.alert_id)
            .collect();
        (
            acknowledged,
            pipeline.silences(),
            pipeline.now().unwrap_or(i64::MIN),
        )
    };
    let listed: Vec<Value> = board
        .into_iter()
        .filter(|alert| wanted_state.is_none_or(|wanted| alert.state == wanted))
        .filter(|alert| rule_id.as_deref().is_none_or(|id| alert.rule_id == id))
        .filter(|alert| {
            severity
                .as_deref()
                .is_none_or(|s| alert.severity.to_string() == s)
        })
        .take(limit)
        .map(|alert| {
            let labels = alert_label_set(&alert);
            let silenced = silences
                .iter()
                .any(|silence| silence.silences(&labels, now));
            let mut value = serde_json::to_value(&alert).unwrap_or(Value::Null);
            if let Some(object) = value.as_object_mut() {
                object.insert(
                    "acknowledged".into(),
                    Value::from(acknowledged.contains(&alert.alert_id)),
                );
                object.insert("silenced".into(), Value::from(silenced));
            }
            value
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"alerts": listed, "detection": true}),
    )
}

/// `POST /api/v1/alerts/{fingerprint}/ack` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    author: Option<String>,
    #[serde(default)]
    comment: Option<String>,
    /// RFC 3339 (event time).
    #[serde(default)]
    expires_at: Option<String>,
}

fn author_of(token: &Option<TokenRecord>, given: Option<String>) -> String {
    given
        .filter(|author| !author.trim().is_empty())
        .unwrap_or_else(|| match token {
            Some(token) => format!("token:{}", token.id),
            None => "api".to_string(),
        })
}

/// `POST /api/v1/alerts/{fingerprint}/ack`.
pub async fn acknowledge(
    State(state): State<Arc<AppState>>,
    Path(fingerprint): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match state.authorize_token(&headers, Need::Admin) {
        Ok(token) => token,
        Err(denied) => return denied_plain(denied),
    };
    let request: AckBody = if body.iter().all(u8::is_ascii_whitespace) {
        AckBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(parse) => return error(StatusCode::BAD_REQUEST, format!("invalid body: {parse}")),
        }
    };
    let expires_at = match request
        .expires_at
        .as_deref()
        .map(|text| parse_time("expires_at", text))
    {
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, message),
        Some(Ok(at)) => Some(at),
        None => None,
    };
    let Some(share) = detection(&state) else {
        return no_detection();
    };
    let author = author_of(&token, request.author);
    let mut pipeline = share.notifier.pipeline();
    match pipeline.acknowledge(
        &fingerprint,
        &author,
        request.comment.as_deref().unwrap_or(""),
        expires_at,
    ) {
        Ok(acknowledgement) => {
            json_response(StatusCode::OK, &json!({"acknowledgement": acknowledgement}))
        }
        Err(refused) => error(StatusCode::CONFLICT, refused.to_string()),
    }
}

/// `POST /api/v1/silences` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    #[serde(default)]
    id: Option<String>,
    /// `name=value`, `name!=value`, `name=~regex`, `name!~regex`.
    matchers: Vec<LabelMatcher>,
    /// RFC 3339 event time; default: detection's clock now.
    #[serde(default)]
    starts_at: Option<String>,
    #[serde(default)]
    ends_at: Option<String>,
    /// e.g. `2h`, when `ends_at` is not given.
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    created_by: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// `GET /api/v1/silences`.
pub async fn list_silences(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let Some(share) = detection(&state) else {
        return json_response(StatusCode::OK, &json!({"silences": []}));
    };
    let silences = share.notifier.pipeline().silences();
    json_response(StatusCode::OK, &json!({"silences": silences}))
}

/// `POST /api/v1/silences`.
pub async fn create_silence(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = match state.authorize_token(&headers, Need::Admin) {
        Ok(token) => token,
        Err(denied) => return denied_plain(denied),
    };
    let request: SilenceBody = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(parse) => return error(StatusCode::BAD_REQUEST, format!("invalid silence: {parse}")),
    };
    let Some(share) = detection(&state) else {
        return no_detection();
    };
    let mut pipeline = share.notifier.pipeline();
    let now = pipeline
        .now()
        .unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let starts_at = match request
        .starts_at
        .as_deref()
        .map(|text| parse_time("starts_at", text))
    {
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, message),
        Some(Ok(at)) => at,
        None => now,
    };
    let ends_at = match (request.ends_at.as_deref(), request.duration.as_deref()) {
        (Some(text), _) => match parse_time("ends_at", text) {
            Ok(at) => at,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        },
        (None, Some(duration)) => match inferwatch_core::parse_duration(duration) {
            Ok(nanos) => starts_at.saturating_add(nanos),
            Err(parse) => return error(StatusCode::BAD_REQUEST, format!("duration: {parse}")),
        },
        (None, None) => return error(StatusCode::BAD_REQUEST, "give ends_at or duration"),
    };
    let silence = match Silence::new(
        request.id.unwrap_or_default(),
        request.matchers,
        starts_at,
        ends_at,
        author_of(&token, request.created_by),
        request.comment.unwrap_or_default(),
    ) {
        Ok(silence) => silence,
        Err(refused) => return error(StatusCode::BAD_REQUEST, refused.to_string()),
    };
    match pipeline.add_silence(silence.clone()) {
        Ok(()) => json_response(StatusCode::CREATED, &json!({"silence": silence})),
        Err(refused) => error(StatusCode::BAD_REQUEST, refused.to_string()),
    }
}

/// `DELETE /api/v1/silences/{id}`: ends it now.
pub async fn delete_silence(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Admin) {
        return denied_plain(denied);
    }
    let Some(share) = detection(&state) else {
        return no_detection();
    };
    let mut pipeline = share.notifier.pipeline();
    if !pipeline.silences().iter().any(|silence| silence.id == id) {
        return error(
            StatusCode::NOT_FOUND,
            format!("no active silence with id '{id}'"),
        );
    }
    match pipeline.expire_silence(&id) {
        Ok(()) => json_response(StatusCode::OK, &json!({"expired": id})),
        Err(refused) => error(StatusCode::CONFLICT, refused.to_string()),
    }
}

/// `GET /api/v1/rules`.
pub async fn rules(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let Some(share) = detection(&state) else {
        return json_response(StatusCode::OK, &json!({"rules": [], "detection": false}));
    };
    let snapshot = share
        .snapshot
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let by_id: BTreeMap<&str, &inferwatch_detect::RuleState> = snapshot
        .states
        .iter()
        .map(|state| (state.rule_id.as_str(), state))
        .collect();
    let loaded = share
        .rules
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let rules: Vec<Value> = loaded
        .iter()
        .map(|rule| {
            let mut value = serde_json::to_value(rule).unwrap_or(Value::Null);
            let live = by_id.get(rule.id.as_str());
            let next_tick = live
                .and_then(|live| live.next_tick.as_deref())
                .and_then(|text| inferwatch_core::parse_timestamp_text(text).ok());
            let extra = json!({
                "window_seconds": rule.window as f64 / 1e9,
                "every_seconds": rule.every as f64 / 1e9,
                // The tick before the next one was the last evaluated.
                "last_evaluation": next_tick.map(|tick| rfc3339(tick - rule.every)),
                "next_evaluation": next_tick.map(rfc3339),
                "groups": live.map_or(0, |live| live.groups),
                "firing": live.map_or(Vec::new(), |live| live.firing.clone()),
                "pending": live.map_or(0, |live| live.pending),
                "late_events": live.map_or(0, |live| live.late_events),
            });
            if let (Some(object), Value::Object(extra)) = (value.as_object_mut(), extra) {
                object.extend(extra);
            }
            value
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "rules": rules,
            "detection": true,
            "clock": snapshot.clock.map(rfc3339),
            "events": snapshot.events,
        }),
    )
}

/// `POST /api/v1/rules/reload`: loads the rules directory (and the SLOs and
/// correlations, when the node runs them) again and, when every one loads
/// and compiles (a correlation naming a rule that is gone does not),
/// swaps them in; otherwise refuses with every error (file:line:column)
/// and the running ones stay as they were.
///
/// State after a swap: the new rules start empty and are replayed over the
/// store (events and heartbeats), as a restart with them would; ingest
/// waits meanwhile (requests queue, then get 429). Transitions already
/// written are not written again; new ones (a new or changed rule's,
/// including those of the past) are written and notified. Alerts of rules
/// that are gone leave `GET /api/v1/alerts`; acknowledgements, silences
/// and the notification history are kept.
pub async fn reload_rules(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Admin) {
        return denied_plain(denied);
    }
    let Some(share) = detection(&state) else {
        return no_detection();
    };
    let source = share.reload.clone();
    let decoder = state.decoder().clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let (engine, rules) = crate::one_pass::load_engine_and_rules(&source.path, &decoder)?;
        let slos = source
            .slos
            .as_deref()
            .map(|path| crate::one_pass::load_slo_evaluator(path, &decoder))
            .transpose()?;
        let correlations = source
            .correlations
            .as_deref()
            .map(|path| {
                crate::correlator::Correlator::load_beside(
                    path,
                    &[],
                    &engine,
                    slos.as_ref(),
                    &source.dead_letter_path,
                )
                .map(|correlator| correlator.follow_clock(source.correlation_lateness))
            })
            .transpose()?;
        Ok::<_, crate::ServerError>((
            engine.with_max_future(source.max_future),
            rules,
            slos,
            correlations,
        ))
    })
    .await;
    let (engine, rules, slos, correlations) = match loaded {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(crate::ServerError::Rules { count, messages })) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": format!("{count} rule error(s); the running rules are unchanged"),
                    "errors": messages,
                }),
            )
        }
        Ok(Err(refused)) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{refused}; the running rules are unchanged"),
            )
        }
        Err(failure) => {
            eprintln!("inferwatch serve: loading rules: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "loading the rules failed",
            );
        }
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let slo_infos: Option<Vec<crate::live::SloInfo>> = slos
        .as_ref()
        .map(|slos| slos.slos().map(crate::live::SloInfo::of).collect());
    let request = crate::writer::Control::ReplaceRules {
        engine: Box::new(engine),
        slos: slos.map(Box::new),
        correlations: correlations.map(Box::new),
        reply,
    };
    if state.writer().control(request).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping");
    }
    let report = match answer.await {
        Ok(Ok(report)) => report,
        Ok(Err(failure)) => {
            eprintln!("inferwatch serve: swapping rules: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "swapping the rules failed; see the server's log",
            );
        }
        Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "the node is stopping"),
    };
    let infos: Vec<crate::live::RuleInfo> = rules.iter().map(crate::live::RuleInfo::of).collect();
    let ids: Vec<String> = infos.iter().map(|rule| rule.id.clone()).collect();
    *share.rules.lock().unwrap_or_else(|p| p.into_inner()) = infos;
    let slo_ids: Vec<String> = slo_infos
        .iter()
        .flatten()
        .map(|slo| slo.id.clone())
        .collect();
    if let Some(slo_infos) = slo_infos {
        *share.slos.lock().unwrap_or_else(|p| p.into_inner()) = slo_infos;
    }
    json_response(
        StatusCode::OK,
        &json!({
            "reloaded": true,
            "rules": ids,
            "slos": slo_ids,
            "replayed_events": report.events,
            "clock": report.clock.map(rfc3339),
            "alert_transitions": report.transitions,
        }),
    )
}

/// `GET /api/v1/notifications`: what the notification pipeline produced
/// (newest first), whether each was handed to the actions, and the alerts
/// it left out (silenced, inhibited, acknowledged) with why.
pub async fn notifications(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let mut limit = 100usize;
    let mut rule_id: Option<String> = None;
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "limit" => match bounded_limit(&value, 1..=10_000) {
                Ok(n) => limit = n,
                Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
            },
            "rule_id" => rule_id = Some(value),
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': use limit, rule_id"),
                )
            }
        }
    }
    let Some(share) = detection(&state) else {
        return json_response(
            StatusCode::OK,
            &json!({"notifications": [], "suppressed": [], "detection": false}),
        );
    };
    let state_dir = share.notifier.state_dir().to_path_buf();
    // The history is append-only and read up to its last commit, so it is
    // read without holding the pipeline.
    let history =
        tokio::task::spawn_blocking(move || inferwatch_alert::read_history(&state_dir)).await;
    let records = match history {
        Ok(Ok(records)) => records,
        Ok(Err(failure)) => {
            eprintln!("inferwatch serve: reading the notification history: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the notification history failed; see the server's log",
            );
        }
        Err(failure) => {
            eprintln!("inferwatch serve: reading the notification history: {failure}");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "reading the notification history failed",
            );
        }
    };
    use inferwatch_alert::HistoryEntry;
    let sent: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|record| match &record.entry {
            HistoryEntry::Sent { notification_id } => Some(notification_id.as_str()),
            _ => None,
        })
        .collect();
    let wanted_rule = |id: &str| rule_id.as_deref().is_none_or(|wanted| wanted == id);
    let mut produced = Vec::new();
    let mut suppressed = Vec::new();
    for record in records.iter().rev() {
        match &record.entry {
            HistoryEntry::Notification { notification } if produced.len() < limit => {
                if !notification
                    .alerts
                    .iter()
                    .any(|alert| wanted_rule(&alert.rule_id))
                {
                    continue;
                }
                let mut value = serde_json::to_value(notification).unwrap_or(Value::Null);
                if let Some(object) = value.as_object_mut() {
                    object.insert(
                        "sent".into(),
                        Value::from(sent.contains(notification.notification_id.as_str())),
                    );
                }
                produced.push(value);
            }
            HistoryEntry::Suppressed {
                alert_id,
                fingerprint,
                rule_id,
                state: alert_state,
                suppression,
            } if suppressed.len() < limit && wanted_rule(rule_id) => {
                suppressed.push(json!({
                    "at": (record.at != i64::MIN).then(|| rfc3339(record.at)),
                    "alert_id": alert_id,
                    "fingerprint": fingerprint,
                    "rule_id": rule_id,
                    "state": alert_state,
                    "suppression": suppression,
                }));
            }
            _ => {}
        }
    }
    let deliveries = share.notifier.delivery_stats().map(|stats| {
        json!({
            "delivered": stats.delivered,
            "dead_lettered": stats.dead,
            "retries": stats.retries,
            "pending": stats.pending,
        })
    });
    json_response(
        StatusCode::OK,
        &json!({
            "notifications": produced,
            "suppressed": suppressed,
            "detection": true,
            "actions": share.notifier.has_actions(),
            "deliveries": deliveries,
        }),
    )
}

/// `GET /api/v1/ingest/dead-letters`: refused lines counted by reason
/// (`kind`), each with its first `limit` samples, from the data
/// directory's dead-letter file (the `dead_letters` SQL table).
pub async fn dead_letters(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let mut samples = 5usize;
    let mut reason: Option<String> = None;
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "limit" => match bounded_limit(&value, 0..=1_000) {
                Ok(n) => samples = n,
                Err(reason) => return error(StatusCode::BAD_REQUEST, reason),
            },
            "reason" => {
                // Spliced into SQL below: only a reason's own characters.
                if value.is_empty()
                    || !value.bytes().all(|byte| {
                        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'
                    })
                {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("reason: '{value}' is not a dead-letter reason (e.g. invalid_json, future_timestamp)"),
                    );
                }
                reason = Some(value);
            }
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter '{other}': use reason, limit"),
                )
            }
        }
    }
    let filter = reason
        .as_deref()
        .map(|reason| format!(" WHERE coalesce(kind, 'other') = '{reason}'"))
        .unwrap_or_default();
    let counts_sql = format!(
        "SELECT coalesce(kind, 'other') AS reason, count(*) AS n FROM {table}{filter} GROUP BY 1 ORDER BY n DESC, reason",
        table = inferwatch_query::DEAD_LETTERS_TABLE
    );
    let engine = state.query.clone();
    let timeout = state.api.query_timeout;
    let result = tokio::time::timeout(timeout, async move {
        let counts = engine.sql(&counts_sql).await?;
        let mut reasons = Vec::new();
        for batch in &counts {
            let names = column_values(batch.column(0));
            let totals = column_values(batch.column(1));
            for (name, total) in names.into_iter().zip(totals) {
                reasons.push((name.as_str().unwrap_or("other").to_string(), total));
            }
        }
        let mut answer = Vec::new();
        for (name, total) in reasons {
            let rows = if samples == 0 {
                Vec::new()
            } else {
                let sample_sql = format!(
                    "SELECT source, line, reason, client_id, model_id, event_time, raw FROM {table} WHERE coalesce(kind, 'other') = '{name}' LIMIT {samples}",
                    table = inferwatch_query::DEAD_LETTERS_TABLE
                );
                rows_as_objects(&engine.sql(&sample_sql).await?)
            };
            answer.push(json!({"reason": name, "count": total, "samples": rows}));
        }
        Ok::<_, QueryError>(answer)
    })
    .await;
    match result {
        Ok(Ok(reasons)) => {
            let total: u64 = reasons
                .iter()
                .filter_map(|reason| reason["count"].as_u64())
                .sum();
            json_response(StatusCode::OK, &json!({"total": total, "reasons": reasons}))
        }
        Ok(Err(failure)) => query_failure(failure),
        Err(_) => query_failure(QueryError::StatementTimeout { limit: timeout }),
    }
}

/// Result rows as JSON objects keyed by column name.
fn rows_as_objects(batches: &[RecordBatch]) -> Vec<Value> {
    let mut rows = Vec::new();
    for batch in batches {
        let schema = batch.schema();
        let columns: Vec<Vec<Value>> = batch.columns().iter().map(column_values).collect();
        for row in 0..batch.num_rows() {
            let object: Map<String, Value> = schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(field, column)| (field.name().clone(), column[row].clone()))
                .collect();
            rows.push(Value::Object(object));
        }
    }
    rows
}

/// `GET /api/v1/health`.
pub async fn health(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    let metrics = &state.metrics;
    let rates = metrics.rates();
    let mut ingest = Map::new();
    for protocol in PROTOCOLS {
        let rate = rates
            .iter()
            .find(|(p, _)| *p == protocol)
            .map_or(0.0, |(_, r)| *r);
        ingest.insert(
            protocol.to_string(),
            json!({"events_per_second": rate, "events": metrics.events_of(protocol)}),
        );
    }
    let dead_letters: Map<String, Value> = metrics
        .dead_letters_by_reason()
        .into_iter()
        .map(|(reason, count)| (reason, Value::from(count)))
        .collect();
    let live = &state.live;
    use std::sync::atomic::Ordering;
    let counters = &state.writer_counters();
    let detection = detection(&state).map(|share| {
        let snapshot = share
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let counts = share
            .board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts();
        json!({
            "rules": share.rules.lock().unwrap_or_else(|p| p.into_inner()).len(),
            "clock": snapshot.clock.map(rfc3339),
            "events": snapshot.events,
            "heartbeats": live.heartbeats.load(Ordering::Relaxed),
            "alerts": counts,
        })
    });
    json_response(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "uptime_seconds": state.started.elapsed().as_secs_f64(),
            "ingest": ingest,
            "stored": counters.stored.load(Ordering::Relaxed),
            "refused": counters.refused.load(Ordering::Relaxed),
            "busy": counters.busy.load(Ordering::Relaxed),
            "dead_letters": dead_letters,
            "queue": {
                "depth": counters.in_flight.load(Ordering::Relaxed),
                "capacity": state.queue_capacity,
            },
            "wal": {
                "last_sequence": live.last_sequence.load(Ordering::Relaxed),
                "durable_sequence": live.durable_sequence.load(Ordering::Relaxed),
                "unsynced_records": live.wal_lag(),
                "buffered_rows": live.buffered_rows.load(Ordering::Relaxed),
            },
            "detection": detection,
        }),
    )
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return denied_plain(denied);
    }
    use std::sync::atomic::Ordering;
    let metrics = &state.metrics;
    let counters = state.writer_counters();
    let live = &state.live;
    let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    metrics
        .queue_depth
        .set(gauge(counters.in_flight.load(Ordering::Relaxed)));
    metrics
        .queue_capacity
        .set(gauge(state.queue_capacity as u64));
    metrics.wal_unsynced_records.set(gauge(live.wal_lag()));
    metrics
        .store_buffered_rows
        .set(gauge(live.buffered_rows.load(Ordering::Relaxed)));
    if let Some(share) = detection(&state) {
        let counts = share
            .board
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts();
        for (alert_state, count) in counts {
            metrics
                .alerts
                .get_or_create(&crate::metrics::labels(&[("state", alert_state)]))
                .set(gauge(count as u64));
        }
        let snapshot = share.snapshot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(clock) = snapshot.clock {
            metrics
                .detection_clock_seconds
                .set(clock.div_euclid(1_000_000_000));
        }
        metrics
            .correlation_late_findings
            .set(gauge(snapshot.correlation_late));
    }
    // Prometheus asks for OpenMetrics; anyone else gets the classic text.
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::classic_text(&metrics.encode()),
        )
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

/// The 404 of paths no route matches.
pub async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Axum's `{*rest}` is OpenAPI's `{rest}`.
    fn openapi_path(path: &str) -> String {
        path.replace("{*", "{")
    }

    #[test]
    fn the_openapi_document_describes_every_route_and_method_and_nothing_else() {
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(document["openapi"], "3.1.0");
        let paths = document["paths"].as_object().unwrap();
        let table = crate::http::route_table();
        for (path, methods) in &table {
            let documented = paths
                .get(&openapi_path(path))
                .unwrap_or_else(|| panic!("{path} is not in openapi.json"));
            for method in methods {
                assert!(
                    documented.get(*method).is_some(),
                    "{method} {path} is not in openapi.json"
                );
            }
            assert_eq!(
                documented.as_object().unwrap().len(),
                methods.len(),
                "{path} documents other methods than it serves"
            );
        }
        for path in paths.keys() {
            assert!(
                table
                    .iter()
                    .any(|(served, _)| openapi_path(served) == *path),
                "openapi.json documents {path}, which no route serves"
            );
        }
    }

    #[test]
    fn the_openapi_document_names_the_scope_the_route_table_declares() {
        use crate::http::Access;
        let document: Value = serde_json::from_str(OPENAPI).unwrap();
        for route in crate::http::route_access_table() {
            for (method, access) in route.methods {
                let operation = &document["paths"][openapi_path(route.path)][*method];
                let documented = operation["x-inferwatch-scope"].as_str();
                let expected = match access {
                    Access::Open => None,
                    Access::AnyToken => Some("any"),
                    Access::Ingest => Some("ingest"),
                    Access::Read => Some("read"),
                    Access::Admin => Some("admin"),
                };
                assert_eq!(documented, expected, "{method} {}", route.path);
                if *access == Access::Open {
                    assert_eq!(operation["security"], json!([]), "{method} {}", route.path);
                }
            }
        }
    }

    #[test]
    fn query_strings_are_percent_decoded() {
        assert_eq!(
            query_pairs(Some("model_id=a%20b&from=2026-01-01T00%3A00%3A00Z&x")),
            vec![
                ("model_id".to_string(), "a b".to_string()),
                ("from".to_string(), "2026-01-01T00:00:00Z".to_string()),
                ("x".to_string(), String::new()),
            ]
        );
    }

    #[test]
    fn columns_become_json_values() {
        let batch = RecordBatch::try_from_iter(vec![
            (
                "n",
                Arc::new(arrow::array::Int32Array::from(vec![Some(1), None])) as ArrayRef,
            ),
            (
                "x",
                Arc::new(arrow::array::Float64Array::from(vec![f64::NAN, 2.5])) as ArrayRef,
            ),
            (
                "t",
                Arc::new(
                    arrow::array::TimestampNanosecondArray::from(vec![0, 1_000_000])
                        .with_timezone("UTC"),
                ) as ArrayRef,
            ),
            (
                "s",
                Arc::new(
                    arrow::array::DictionaryArray::<arrow::datatypes::Int32Type>::from_iter([
                        "a", "b",
                    ]),
                ) as ArrayRef,
            ),
        ])
        .unwrap();
        let values: Vec<Vec<Value>> = batch.columns().iter().map(column_values).collect();
        assert_eq!(values[0], vec![json!(1), Value::Null]);
        assert_eq!(values[1], vec![Value::Null, json!(2.5)]);
        assert_eq!(values[2][1], json!("1970-01-01T00:00:00.001Z"));
        assert_eq!(values[3], vec![json!("a"), json!("b")]);
    }
}
