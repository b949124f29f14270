//! Time series for charts: `GET /api/v1/series`.
//!
//! A chart wants a few hundred points, and a week of per-minute data is
//! ten thousand; sending them all costs the network and the browser. So
//! the server reads the series at the store's finest cheap grain, the
//! per-minute rollups (`inference_rollups`: counts, errors and a latency
//! DDSketch per minute and model version, including the WAL tail), and
//! downsamples it to about the requested number of points:
//!
//! * `lttb` (default): Largest-Triangle-Three-Buckets (Steinarsson 2013),
//!   which keeps the points that shape the line, spikes included;
//! * `minmax`: the lowest and highest point of each bucket, in time
//!   order, so no extreme is ever lost (twice the points per bucket).
//!
//! Every metric here is answered by the rollups: `count` (events per
//! minute, with silent minutes as zeros, so a drop to nothing shows),
//! `error_rate` (errors / events) and `p50`/`p95`/`p99` of `latency_ms`
//! (merged sketches, within the sketch's 1 % relative error).

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;

/// One minute, the rollup grain.
pub const MINUTE_NANOS: i64 = 60_000_000_000;

/// Zero-filled minutes a `count` series may span; a longer range is
/// filled between its first and last data minute only.
const MAX_FILLED_MINUTES: i64 = 1_000_000;

/// What a series measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Events per minute.
    Count,
    /// Errors over events.
    ErrorRate,
    /// Latency quantile (0 < q < 1).
    Latency(u8),
    /// p50, p95 and p99 of latency from one merge of the sketches per
    /// minute (`metric=latency`): a third of the work of three requests.
    Latencies,
}

/// The quantiles (percent) `metric=latency` answers, in column order.
pub const LATENCIES: [u8; 3] = [50, 95, 99];

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(text: &str) -> Result<Metric, String> {
        match text {
            "count" => Ok(Metric::Count),
            "error_rate" => Ok(Metric::ErrorRate),
            "p50" => Ok(Metric::Latency(50)),
            "p95" => Ok(Metric::Latency(95)),
            "p99" => Ok(Metric::Latency(99)),
            "latency" => Ok(Metric::Latencies),
            other => Err(format!(
                "unknown metric '{other}': use count, error_rate, p50, p95, p99 or latency"
            )),
        }
    }
}

/// How the series is thinned to the requested points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downsample {
    /// Largest-Triangle-Three-Buckets.
    Lttb,
    /// Minimum and maximum per bucket.
    MinMax,
}

impl std::str::FromStr for Downsample {
    type Err = String;

    fn from_str(text: &str) -> Result<Downsample, String> {
        match text {
            "lttb" => Ok(Downsample::Lttb),
            "minmax" => Ok(Downsample::MinMax),
            other => Err(format!("unknown downsample '{other}': use lttb or minmax")),
        }
    }
}

/// A series request, checked.
#[derive(Debug, Clone)]
pub struct SeriesRequest {
    /// What to measure.
    pub metric: Metric,
    /// Only this model.
    pub model_id: Option<String>,
    /// Only this version.
    pub model_version: Option<String>,
    /// From (UTC ns, inclusive).
    pub from: Option<i64>,
    /// To (UTC ns, exclusive).
    pub to: Option<i64>,
    /// About how many points to return.
    pub points: usize,
    /// How.
    pub downsample: Downsample,
}

fn literal(text: &str) -> String {
    // A standard SQL string literal: quotes doubled, nothing else special.
    format!("'{}'", text.replace('\'', "''"))
}

fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl SeriesRequest {
    /// The SQL over the rollups: one row per minute, `minute` and `value`.
    pub fn sql(&self) -> String {
        let value = match self.metric {
            Metric::Count => COUNT_SQL.to_string(),
            Metric::ErrorRate => ERROR_RATE_SQL.to_string(),
            Metric::Latency(percent) => {
                format!(
                    "quantile_merge(latency_sketch, {})",
                    f64::from(percent) / 100.0
                )
            }
            Metric::Latencies => String::new(),
        };
        let mut conditions = Vec::new();
        if let Some(model_id) = &self.model_id {
            conditions.push(format!("model_id = {}", literal(model_id)));
        }
        if let Some(model_version) = &self.model_version {
            conditions.push(format!("model_version = {}", literal(model_version)));
        }
        let filter = where_clause(conditions, self.from, self.to);
        if self.metric == Metric::Latencies {
            return format!(
                "SELECT minute, {} FROM (SELECT minute, sketch_merge(latency_sketch) AS merged FROM inference_rollups{filter} GROUP BY minute) ORDER BY minute",
                quantile_columns()
            );
        }
        format!(
            "SELECT minute, {value} AS value FROM inference_rollups{filter} GROUP BY minute ORDER BY minute"
        )
    }

    /// The per-minute points of the query's result: `(minute ns, value)`,
    /// with silent minutes as zeros for `count`.
    pub fn minutes(&self, batches: &[RecordBatch]) -> Vec<(i64, Option<f64>)> {
        self.minutes_of(batches, 1)
    }

    /// Like [`SeriesRequest::minutes`], from the result's `column`th column.
    pub fn minutes_of(&self, batches: &[RecordBatch], column: usize) -> Vec<(i64, Option<f64>)> {
        let mut points: Vec<(i64, Option<f64>)> = Vec::new();
        for batch in batches {
            if batch.num_columns() <= column {
                continue;
            }
            let Some(minutes) = batch
                .column(0)
                .as_primitive_opt::<TimestampNanosecondType>()
            else {
                continue;
            };
            let values = batch.column(column);
            for row in 0..batch.num_rows() {
                let value = if values.is_null(row) {
                    None
                } else if let Some(floats) = values.as_primitive_opt::<Float64Type>() {
                    Some(floats.value(row))
                } else {
                    values
                        .as_primitive_opt::<Int64Type>()
                        .map(|ints| ints.value(row) as f64)
                };
                points.push((minutes.value(row), value.filter(|v| v.is_finite())));
            }
        }
        if self.metric == Metric::Count {
            points = fill_silent_minutes(&points, self.from, self.to);
        }
        points
    }
}

/// `GET /api/v1/series/overview`: every model version's count, error rate
/// and latency quantiles per minute in one scan of the rollups, where the
/// per-metric requests scan them once per chart (15 scans for the
/// overview of five versions).
pub fn overview_sql(from: Option<i64>, to: Option<i64>) -> String {
    let filter = where_clause(Vec::new(), from, to);
    // The same expressions as the per-metric SQL, so the values are equal.
    format!(
        "SELECT CAST(model_id AS VARCHAR) AS model_id, CAST(model_version AS VARCHAR) AS model_version, minute, \
         count, error_rate, {} FROM (SELECT model_id, model_version, minute, \
         {COUNT_SQL} AS count, {ERROR_RATE_SQL} AS error_rate, \
         sketch_merge(latency_sketch) AS merged FROM inference_rollups{filter} \
         GROUP BY model_id, model_version, minute) ORDER BY model_id, model_version, minute",
        quantile_columns()
    )
}

/// Events per minute over the rollup rows of a group.
const COUNT_SQL: &str = "CAST(sum(count) AS DOUBLE)";

/// Errors over events, over the rollup rows of a group.
const ERROR_RATE_SQL: &str = "CAST(sum(error_count) AS DOUBLE) / CAST(sum(count) AS DOUBLE)";

/// ` WHERE …` of `conditions` and the minute range, or nothing.
fn where_clause(mut conditions: Vec<String>, from: Option<i64>, to: Option<i64>) -> String {
    if let Some(from) = from {
        conditions.push(format!("minute >= {}", literal(&rfc3339(from))));
    }
    if let Some(to) = to {
        conditions.push(format!("minute < {}", literal(&rfc3339(to))));
    }
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// `p50, p95, p99` of a merged sketch column named `merged`.
fn quantile_columns() -> String {
    LATENCIES
        .iter()
        .map(|percent| {
            format!(
                "sketch_quantile(merged, {}) AS p{percent}",
                f64::from(*percent) / 100.0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One model version's rows of the overview: `minute, count, error_rate,
/// p50, p95, p99`, in minute order.
pub struct OverviewGroup {
    /// Its model (`None`: the rows had none).
    pub model_id: Option<String>,
    /// Its version.
    pub model_version: Option<String>,
    /// Its rows, without the two key columns.
    pub rows: RecordBatch,
}

/// Splits the overview query's result into its model versions.
pub fn overview_groups(
    batches: &[RecordBatch],
) -> Result<Vec<OverviewGroup>, arrow::error::ArrowError> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let all = arrow::compute::concat_batches(&first.schema(), batches)?;
    let text = |column: usize| -> Result<arrow::array::StringArray, arrow::error::ArrowError> {
        let cast = arrow::compute::cast(all.column(column), &arrow::datatypes::DataType::Utf8)?;
        Ok(cast.as_string::<i32>().clone())
    };
    let (models, versions) = (text(0)?, text(1)?);
    let key = |row: usize| {
        let value = |array: &arrow::array::StringArray| {
            (!array.is_null(row)).then(|| array.value(row).to_string())
        };
        (value(&models), value(&versions))
    };
    let values = all.project(&(2..all.num_columns()).collect::<Vec<_>>())?;
    let mut groups = Vec::new();
    let mut start = 0;
    for row in 1..=all.num_rows() {
        if row == all.num_rows() || key(row) != key(start) {
            let (model_id, model_version) = key(start);
            groups.push(OverviewGroup {
                model_id,
                model_version,
                rows: values.slice(start, row - start),
            });
            start = row;
        }
    }
    Ok(groups)
}

/// Zeros for the minutes without rows, from `from` (or the first point) to
/// `to` (or the last), unless that would be more than [`MAX_FILLED_MINUTES`].
fn fill_silent_minutes(
    points: &[(i64, Option<f64>)],
    from: Option<i64>,
    to: Option<i64>,
) -> Vec<(i64, Option<f64>)> {
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return points.to_vec();
    };
    let align = |nanos: i64| nanos.div_euclid(MINUTE_NANOS) * MINUTE_NANOS;
    let mut start = from.map_or(first.0, |from| align(from.saturating_add(MINUTE_NANOS - 1)));
    let mut end = to.map_or(last.0, |to| align(to.saturating_sub(1)));
    if (end - start) / MINUTE_NANOS > MAX_FILLED_MINUTES {
        start = first.0;
        end = last.0;
    }
    if (end - start) / MINUTE_NANOS > MAX_FILLED_MINUTES {
        return points.to_vec();
    }
    let mut filled = Vec::with_capacity(((end - start) / MINUTE_NANOS + 1) as usize);
    let mut next = points.iter().peekable();
    let mut minute = start.min(first.0);
    while minute <= end.max(last.0) {
        match next.peek() {
            Some((at, value)) if *at == minute => {
                filled.push((*at, *value));
                next.next();
            }
            Some((at, _)) if *at < minute => {
                next.next();
                continue;
            }
            _ => filled.push((minute, Some(0.0))),
        }
        minute += MINUTE_NANOS;
    }
    filled
}

/// For `metric=latency`: p99 downsampled as [`downsample`] does, and p50
/// and p95 at the minutes it kept, so the three lines share their x.
pub fn downsample_latencies(
    request: &SeriesRequest,
    batches: &[RecordBatch],
) -> (Vec<i64>, [Vec<Option<f64>>; 3]) {
    let columns: Vec<Vec<(i64, Option<f64>)>> = (1..=LATENCIES.len())
        .map(|column| request.minutes_of(batches, column))
        .collect();
    let chosen = downsample(request, &columns[LATENCIES.len() - 1]);
    let at: Vec<i64> = chosen.iter().map(|(at, _)| *at).collect();
    let pick = |column: &[(i64, Option<f64>)]| -> Vec<Option<f64>> {
        let by_minute: std::collections::HashMap<i64, Option<f64>> =
            column.iter().copied().collect();
        at.iter()
            .map(|minute| by_minute.get(minute).copied().flatten())
            .collect()
    };
    let values = [pick(&columns[0]), pick(&columns[1]), pick(&columns[2])];
    (at, values)
}

/// Largest-Triangle-Three-Buckets: about `threshold` of `points` (x in
/// order) that keep the line's shape. The first and last point are kept.
pub fn lttb(points: &[(f64, f64)], threshold: usize) -> Vec<(f64, f64)> {
    if threshold >= points.len() || threshold < 3 {
        return if threshold < 3 && points.len() > threshold {
            points.iter().take(threshold).copied().collect()
        } else {
            points.to_vec()
        };
    }
    let mut sampled = Vec::with_capacity(threshold);
    let every = (points.len() - 2) as f64 / (threshold - 2) as f64;
    let mut previous = 0usize;
    sampled.push(points[0]);
    for bucket in 0..threshold - 2 {
        // The next bucket's average is the third corner.
        let next_start = ((bucket + 1) as f64 * every) as usize + 1;
        let next_end = (((bucket + 2) as f64 * every) as usize + 1).min(points.len());
        let next = &points
            [next_start.min(points.len() - 1)..next_end.max(next_start + 1).min(points.len())];
        let (sum_x, sum_y) = next
            .iter()
            .fold((0.0, 0.0), |(x, y), point| (x + point.0, y + point.1));
        let count = next.len().max(1) as f64;
        let (average_x, average_y) = (sum_x / count, sum_y / count);
        let start = (bucket as f64 * every) as usize + 1;
        let end = (((bucket + 1) as f64 * every) as usize + 1).min(points.len() - 1);
        let (anchor_x, anchor_y) = points[previous];
        let mut best = start;
        let mut best_area = -1.0;
        for (index, point) in points
            .iter()
            .enumerate()
            .take(end.max(start + 1))
            .skip(start)
        {
            let area = ((anchor_x - average_x) * (point.1 - anchor_y)
                - (anchor_x - point.0) * (average_y - anchor_y))
                .abs();
            if area > best_area {
                best_area = area;
                best = index;
            }
        }
        sampled.push(points[best]);
        previous = best;
    }
    sampled.push(points[points.len() - 1]);
    sampled
}

/// The lowest and highest point of each of `buckets` equal runs of
/// `points`, in time order (one point when they are the same).
pub fn min_max(points: &[(f64, f64)], buckets: usize) -> Vec<(f64, f64)> {
    if buckets == 0 || points.len() <= buckets * 2 {
        return points.to_vec();
    }
    let mut sampled = Vec::with_capacity(buckets * 2);
    let size = points.len() as f64 / buckets as f64;
    for bucket in 0..buckets {
        let start = (bucket as f64 * size) as usize;
        let end = (((bucket + 1) as f64 * size) as usize).min(points.len());
        let run = &points[start..end.max(start + 1).min(points.len())];
        let mut low = 0;
        let mut high = 0;
        for (index, point) in run.iter().enumerate() {
            if point.1 < run[low].1 {
                low = index;
            }
            if point.1 > run[high].1 {
                high = index;
            }
        }
        let (first, second) = (low.min(high), low.max(high));
        sampled.push(run[first]);
        if second != first {
            sampled.push(run[second]);
        }
    }
    sampled
}

/// The series thinned to about `request.points`: `(minute ns, value)`;
/// minutes without a value (no latency measured) are left out.
pub fn downsample(request: &SeriesRequest, minutes: &[(i64, Option<f64>)]) -> Vec<(i64, f64)> {
    let points: Vec<(f64, f64)> = minutes
        .iter()
        .filter_map(|(at, value)| value.map(|value| (*at as f64, value)))
        .collect();
    let thinned = match request.downsample {
        Downsample::Lttb => lttb(&points, request.points),
        Downsample::MinMax => min_max(&points, request.points.div_ceil(2)),
    };
    thinned
        .into_iter()
        .map(|(at, value)| (at as i64, value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(metric: Metric) -> SeriesRequest {
        SeriesRequest {
            metric,
            model_id: Some("it's".into()),
            model_version: None,
            from: Some(0),
            to: Some(3 * MINUTE_NANOS),
            points: 100,
            downsample: Downsample::Lttb,
        }
    }

    #[test]
    fn the_sql_reads_the_rollups_with_quoted_filters() {
        let sql = request(Metric::Latency(99)).sql();
        assert!(
            sql.contains("quantile_merge(latency_sketch, 0.99)"),
            "{sql}"
        );
        assert!(sql.contains("model_id = 'it''s'"), "{sql}");
        assert!(sql.contains("minute >= '1970-01-01T00:00:00"), "{sql}");
        assert!(sql.contains("FROM inference_rollups"), "{sql}");
    }

    #[test]
    fn silent_minutes_count_zero() {
        let points = vec![(MINUTE_NANOS, Some(5.0))];
        let filled = fill_silent_minutes(&points, Some(0), Some(4 * MINUTE_NANOS));
        assert_eq!(
            filled,
            vec![
                (0, Some(0.0)),
                (MINUTE_NANOS, Some(5.0)),
                (2 * MINUTE_NANOS, Some(0.0)),
                (3 * MINUTE_NANOS, Some(0.0)),
            ]
        );
    }

    #[test]
    fn lttb_keeps_the_ends_and_the_spike() {
        let mut points: Vec<(f64, f64)> = (0..1_000).map(|i| (i as f64, (i % 7) as f64)).collect();
        points[500].1 = 1_000.0;
        let sampled = lttb(&points, 50);
        assert_eq!(sampled.len(), 50);
        assert_eq!(sampled[0], points[0]);
        assert_eq!(sampled[49], points[999]);
        assert!(sampled.contains(&(500.0, 1_000.0)));
        assert!(sampled.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert_eq!(lttb(&points[..10], 50).len(), 10, "short series stay whole");
    }

    #[test]
    fn min_max_keeps_every_extreme_in_time_order() {
        let mut points: Vec<(f64, f64)> = (0..100).map(|i| (i as f64, 1.0)).collect();
        points[13].1 = -5.0;
        points[77].1 = 9.0;
        let sampled = min_max(&points, 10);
        assert!(sampled.len() <= 20);
        assert!(sampled.contains(&(13.0, -5.0)) && sampled.contains(&(77.0, 9.0)));
        assert!(sampled.windows(2).all(|pair| pair[0].0 < pair[1].0));
    }
}
