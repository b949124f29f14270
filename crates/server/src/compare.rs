//! `GET /api/v1/compare`: one numeric column's distribution in two segments
//! of the stored events, side by side, with the drift statistics the
//! detectors use (KS, PSI, Jensen–Shannon, Wasserstein, all from
//! `inferwatch_detect::stats`) and the evidence behind each.
//!
//! A segment is a model's events in a time range, optionally narrowed to
//! one `column=value` (`source_id=src-07`, `ab_group=canary`). What it is
//! compared against (`against`):
//! - `rest`: the same model and range without the segment's value (one
//!   source against the others);
//! - `column=value`: another value (the canary against the baseline);
//! - `shift:DURATION`: the same segment, DURATION earlier (this hour against
//!   the same hour yesterday with `shift:24h`).
//!
//! Both sides are read with SQL through the read-only query engine (up to
//! [`MAX_ROWS`] values each). The histograms, PSI and JS use every value
//! read; KS and Wasserstein use an evenly spaced subsample of at most
//! `samples` per side (sorted first, so it keeps the shape), which bounds
//! the exact KS p-value's cost.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use arrow::record_batch::RecordBatch;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use inferwatch_detect::stats;
use inferwatch_query::QueryError;
use serde_json::{json, Value};

use crate::api::{error, parse_time, query_failure, query_pairs, rfc3339};
use crate::auth::Need;
use crate::http::{json_response, AppState};

/// Values read per side at most.
pub const MAX_ROWS: usize = 200_000;
/// Default and largest subsample per side for KS and Wasserstein.
const DEFAULT_SAMPLES: usize = 5_000;
const MAX_SAMPLES: usize = 20_000;
/// Bars of the side-by-side histogram (equal width over both sides).
const HISTOGRAM_BARS: usize = 30;

/// One side's rows: an optional `column = value` filter and a time range.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    /// `(column, value)`; `None` is every row of the model.
    pub equals: Option<(String, String)>,
    /// `true`: rows whose column is *not* the value (or null): "the rest".
    pub negated: bool,
    pub from: i64,
    pub to: i64,
}

impl Side {
    fn label(&self) -> String {
        match (&self.equals, self.negated) {
            (None, _) => "all".to_string(),
            (Some((column, value)), false) => format!("{column}={value}"),
            (Some((column, value)), true) => format!("{column}≠{value}"),
        }
    }
}

/// What `against` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Against {
    Rest,
    Equals(String, String),
    Shift(i64),
}

/// A SQL identifier from a request: letters, digits and `_` only, so it
/// can be quoted without escaping and never carries SQL.
fn identifier(name: &str, what: &str) -> Result<String, String> {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        Ok(format!("\"{name}\""))
    } else {
        Err(format!(
            "{what}: '{name}' is not a column name (letters, digits, _)"
        ))
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `column=value`.
fn parse_equals(text: &str, what: &str) -> Result<(String, String), String> {
    let (column, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{what}: '{text}' is not column=value"))?;
    identifier(column, what)?;
    Ok((column.to_string(), value.to_string()))
}

/// Parses `against`.
pub fn parse_against(text: &str) -> Result<Against, String> {
    if text == "rest" {
        return Ok(Against::Rest);
    }
    if let Some(duration) = text.strip_prefix("shift:") {
        return match inferwatch_core::parse_duration(duration) {
            Ok(nanos) if nanos > 0 => Ok(Against::Shift(nanos)),
            _ => Err(format!(
                "against: '{duration}' is not a positive duration (e.g. 24h)"
            )),
        };
    }
    let (column, value) = parse_equals(text, "against")?;
    Ok(Against::Equals(column, value))
}

/// The two sides: the segment, and what it is compared against.
pub fn sides(
    segment: Option<(String, String)>,
    against: &Against,
    from: i64,
    to: i64,
) -> Result<(Side, Side), String> {
    let side = Side {
        equals: segment.clone(),
        negated: false,
        from,
        to,
    };
    let other = match against {
        Against::Rest => {
            if segment.is_none() {
                return Err("against=rest needs a segment (column=value)".into());
            }
            Side {
                negated: true,
                ..side.clone()
            }
        }
        Against::Equals(column, value) => Side {
            equals: Some((column.clone(), value.clone())),
            ..side.clone()
        },
        Against::Shift(nanos) => Side {
            from: from - nanos,
            to: to - nanos,
            ..side.clone()
        },
    };
    Ok((side, other))
}

/// The SQL reading one side's values of `column`.
pub fn side_sql(stream: &str, column: &str, model: Option<&str>, side: &Side) -> String {
    let column = format!("\"{column}\"");
    let mut conditions = vec![
        format!("{column} IS NOT NULL"),
        format!("\"timestamp\" >= {}", literal(&rfc3339(side.from))),
        format!("\"timestamp\" < {}", literal(&rfc3339(side.to))),
    ];
    if let Some(model) = model {
        conditions.push(format!("\"model_id\" = {}", literal(model)));
    }
    if let Some((key, value)) = &side.equals {
        if side.negated {
            conditions.push(format!("\"{key}\" IS DISTINCT FROM {}", literal(value)));
        } else {
            conditions.push(format!("\"{key}\" = {}", literal(value)));
        }
    }
    format!(
        "SELECT CAST({column} AS DOUBLE) AS value FROM \"{stream}\" WHERE {}",
        conditions.join(" AND ")
    )
}

fn values_of(batches: &[RecordBatch]) -> Vec<f64> {
    let mut values = Vec::new();
    for batch in batches {
        let column = batch.column(0);
        let Ok(cast) = arrow::compute::cast(column, &DataType::Float64) else {
            continue;
        };
        let floats = cast.as_primitive::<Float64Type>();
        values.extend(
            (0..floats.len())
                .filter(|&row| floats.is_valid(row))
                .map(|row| floats.value(row))
                .filter(|value| value.is_finite()),
        );
    }
    values
}

/// At most `count` evenly spaced values of sorted `values`.
fn subsample(values: &[f64], count: usize) -> Vec<f64> {
    if values.len() <= count {
        return values.to_vec();
    }
    let step = values.len() as f64 / count as f64;
    (0..count)
        .map(|i| values[((i as f64 + 0.5) * step) as usize])
        .collect()
}

/// Linear-interpolated quantile of sorted `values`.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let position = (values.len() - 1) as f64 * q;
    let low = position.floor() as usize;
    let high = (low + 1).min(values.len() - 1);
    Some(values[low] + (values[high] - values[low]) * (position - low as f64))
}

fn summary(values: &[f64]) -> Value {
    let mean = (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
    json!({
        "count": values.len(),
        "mean": mean,
        "min": values.first(),
        "p10": quantile(values, 0.1),
        "p50": quantile(values, 0.5),
        "p90": quantile(values, 0.9),
        "max": values.last(),
    })
}

/// Where the two empirical CDFs are furthest apart: the value and both
/// CDFs there (the evidence behind KS's D).
fn largest_gap(segment: &[f64], against: &[f64]) -> Option<(f64, f64, f64)> {
    let cdf = |sorted: &[f64], at: f64| {
        sorted.partition_point(|&value| value <= at) as f64 / sorted.len() as f64
    };
    segment
        .iter()
        .chain(against)
        .map(|&at| (at, cdf(segment, at), cdf(against, at)))
        .max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()))
}

/// Shares of `values` in `bars` equal-width bars over `[low, high]`.
fn shares(values: &[f64], low: f64, high: f64, bars: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bars];
    let width = (high - low) / bars as f64;
    for &value in values {
        let bar = if width > 0.0 {
            (((value - low) / width) as usize).min(bars - 1)
        } else {
            0
        };
        counts[bar] += 1.0;
    }
    let total = values.len().max(1) as f64;
    counts.iter().map(|count| count / total).collect()
}

/// The comparison of two samples (either order, unsorted): both sides'
/// summaries, a side-by-side histogram, and the statistics with their
/// evidence. `statistics` is null when a side has no value.
pub fn compare_samples(
    mut segment: Vec<f64>,
    mut against: Vec<f64>,
    bins: usize,
    samples: usize,
) -> Value {
    segment.retain(|value| value.is_finite());
    against.retain(|value| value.is_finite());
    segment.sort_by(f64::total_cmp);
    against.sort_by(f64::total_cmp);
    let low = [segment.first(), against.first()]
        .into_iter()
        .flatten()
        .copied()
        .reduce(f64::min);
    let high = [segment.last(), against.last()]
        .into_iter()
        .flatten()
        .copied()
        .reduce(f64::max);
    let histogram = match (low, high) {
        (Some(low), Some(high)) => {
            let width = (high - low) / HISTOGRAM_BARS as f64;
            json!({
                "edges": (0..=HISTOGRAM_BARS).map(|i| low + width * i as f64).collect::<Vec<_>>(),
                "segment": shares(&segment, low, high, HISTOGRAM_BARS),
                "against": shares(&against, low, high, HISTOGRAM_BARS),
            })
        }
        _ => Value::Null,
    };
    let statistics = if segment.is_empty() || against.is_empty() {
        Value::Null
    } else {
        // PSI's bins: quantiles of the reference (what the segment is
        // compared against), as the drift detector bins.
        let edges = stats::quantile_edges(&against, bins);
        let reference_counts = stats::bin_counts(&against, &edges);
        let segment_counts = stats::bin_counts(&segment, &edges);
        let (reference_total, segment_total) = (against.len() as f64, segment.len() as f64);
        let psi_bins: Vec<Value> = reference_counts
            .iter()
            .zip(&segment_counts)
            .enumerate()
            .map(|(i, (reference, current))| {
                let (r, c) = (reference / reference_total, current / segment_total);
                let (re, ce) = (r.max(stats::PSI_EPSILON), c.max(stats::PSI_EPSILON));
                json!({
                    "above": if i == 0 { None } else { Some(edges[i - 1]) },
                    "up_to": edges.get(i),
                    "against_share": r,
                    "segment_share": c,
                    "contribution": (ce - re) * (ce / re).ln(),
                })
            })
            .collect();
        let segment_sample = subsample(&segment, samples);
        let against_sample = subsample(&against, samples);
        let ks = stats::ks_two_sample(&segment_sample, &against_sample);
        let gap = largest_gap(&segment_sample, &against_sample);
        let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
        json!({
            "ks": {
                "statistic": ks.map(|outcome| outcome.statistic),
                "p_value": ks.map(|outcome| outcome.p_value),
                "at": gap.map(|(at, _, _)| at),
                "segment_cdf": gap.map(|(_, segment_cdf, _)| segment_cdf),
                "against_cdf": gap.map(|(_, _, against_cdf)| against_cdf),
                "samples": [segment_sample.len(), against_sample.len()],
            },
            "psi": {
                "value": stats::psi(&reference_counts, &segment_counts),
                "bins": psi_bins,
            },
            "js": {
                "distance": stats::jensen_shannon(&reference_counts, &segment_counts),
                "bins": reference_counts.len(),
            },
            "wasserstein": {
                "distance": stats::wasserstein_1(&segment_sample, &against_sample),
                "mean_shift": mean(&segment) - mean(&against),
                "median_shift": quantile(&segment, 0.5).zip(quantile(&against, 0.5)).map(|(s, a)| s - a),
                "samples": [segment_sample.len(), against_sample.len()],
            },
        })
    };
    json!({
        "segment": summary(&segment),
        "against": summary(&against),
        "histogram": histogram,
        "statistics": statistics,
    })
}

/// `86400s` as `24h`, `90s` as `90s`.
fn plain_duration(nanos: i64) -> String {
    let seconds = nanos / inferwatch_core::NANOS_PER_SECOND;
    match seconds {
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `GET /api/v1/compare`.
pub async fn compare(
    State(state): State<Arc<AppState>>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(denied) = state.authorize_token(&headers, Need::Read) {
        return crate::http::denied_plain(denied);
    }
    let mut stream = "inference".to_string();
    let mut column = None;
    let mut model = None;
    let mut segment = None;
    let mut against = None;
    let mut from = None;
    let mut to = None;
    let mut bins = 10usize;
    let mut samples = DEFAULT_SAMPLES;
    for (key, value) in query_pairs(raw.as_deref()) {
        let parsed: Result<(), String> = match key.as_str() {
            "stream" => identifier(&value, "stream").map(|_| stream = value),
            "column" => identifier(&value, "column").map(|_| column = Some(value)),
            "model" => {
                model = Some(value);
                Ok(())
            }
            "segment" => parse_equals(&value, "segment").map(|pair| segment = Some(pair)),
            "against" => parse_against(&value).map(|parsed| against = Some(parsed)),
            "from" => parse_time("from", &value).map(|at| from = Some(at)),
            "to" => parse_time("to", &value).map(|at| to = Some(at)),
            "bins" => match value.parse::<usize>() {
                Ok(n) if (2..=100).contains(&n) => {
                    bins = n;
                    Ok(())
                }
                _ => Err(format!("bins: '{value}' is not a number from 2 to 100")),
            },
            "samples" => match value.parse::<usize>() {
                Ok(n) if (10..=MAX_SAMPLES).contains(&n) => {
                    samples = n;
                    Ok(())
                }
                _ => Err(format!(
                    "samples: '{value}' is not a number from 10 to {MAX_SAMPLES}"
                )),
            },
            other => Err(format!(
                "unknown parameter '{other}': use stream, column, model, segment, against, from, to, bins, samples"
            )),
        };
        if let Err(message) = parsed {
            return error(StatusCode::BAD_REQUEST, message);
        }
    }
    let Some(column) = column else {
        return error(StatusCode::BAD_REQUEST, "column is required");
    };
    let to = to.unwrap_or_else(|| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    let from = from.unwrap_or(to - 3_600 * inferwatch_core::NANOS_PER_SECOND);
    if from >= to {
        return error(StatusCode::BAD_REQUEST, "from must be before to");
    }
    let against = against.unwrap_or(Against::Rest);
    let (segment_side, against_side) = match sides(segment, &against, from, to) {
        Ok(sides) => sides,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut read = Vec::new();
    for side in [&segment_side, &against_side] {
        let sql = side_sql(&stream, &column, model.as_deref(), side);
        let engine = state.query.clone();
        let result = tokio::time::timeout(state.api.query_timeout, async move {
            engine.sql_limited(&sql, MAX_ROWS).await
        })
        .await;
        match result {
            Ok(Ok((_, batches, truncated))) => read.push((values_of(&batches), truncated)),
            Ok(Err(failure)) => return query_failure(failure),
            Err(_) => {
                return query_failure(QueryError::StatementTimeout {
                    limit: state.api.query_timeout,
                })
            }
        }
    }
    let (against_values, against_truncated) = read.pop().unwrap_or_default();
    let (segment_values, segment_truncated) = read.pop().unwrap_or_default();
    let mut answer = compare_samples(segment_values, against_values, bins, samples);
    let describe = |side: &Side, truncated: bool, label: String| {
        json!({
            "label": label,
            "from": rfc3339(side.from),
            "to": rfc3339(side.to),
            "truncated": truncated,
        })
    };
    let against_label = match &against {
        Against::Rest => format!(
            "rest of {}",
            against_side.equals.as_ref().map_or("", |(c, _)| c)
        ),
        Against::Equals(..) => against_side.label(),
        Against::Shift(nanos) => format!(
            "{} {} earlier",
            against_side.label(),
            plain_duration(*nanos)
        ),
    };
    if let Some(object) = answer.as_object_mut() {
        for (key, side, truncated, label) in [
            (
                "segment",
                &segment_side,
                segment_truncated,
                segment_side.label(),
            ),
            ("against", &against_side, against_truncated, against_label),
        ] {
            if let (Some(Value::Object(target)), Value::Object(extra)) =
                (object.get_mut(key), describe(side, truncated, label))
            {
                target.extend(extra);
            }
        }
        object.insert("stream".into(), Value::from(stream));
        object.insert("column".into(), Value::from(column));
        object.insert("model".into(), model.map_or(Value::Null, Value::from));
    }
    json_response(StatusCode::OK, &answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic, roughly normal values around `centre`.
    fn bell(centre: f64, count: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        let mut uniform = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..count)
            .map(|_| centre + (0..6).map(|_| uniform()).sum::<f64>() / 6.0 - 0.5)
            .collect()
    }

    #[test]
    fn a_shifted_segment_stands_apart_on_every_statistic_and_a_like_one_does_not() {
        let rest = bell(0.8, 4_000, 1);
        let shifted = compare_samples(bell(0.6, 1_000, 2), rest.clone(), 10, 5_000);
        let alike = compare_samples(bell(0.8, 1_000, 3), rest, 10, 5_000);
        let statistic = |answer: &Value, path: &str| {
            answer["statistics"]
                .pointer(path)
                .and_then(Value::as_f64)
                .unwrap()
        };
        assert!(statistic(&shifted, "/ks/statistic") > 0.5, "{shifted}");
        assert!(statistic(&shifted, "/ks/p_value") < 1e-6);
        assert!(statistic(&alike, "/ks/statistic") < 0.1, "{alike}");
        assert!(statistic(&alike, "/ks/p_value") > 1e-3);
        for path in ["/psi/value", "/js/distance", "/wasserstein/distance"] {
            assert!(
                statistic(&shifted, path) > 5.0 * statistic(&alike, path),
                "{path}: {shifted} vs {alike}"
            );
        }
        // The evidence: the shift is downwards and about 0.2, the largest
        // CDF gap has the segment ahead, and PSI's bin contributions add
        // up to PSI.
        let mean_shift = statistic(&shifted, "/wasserstein/mean_shift");
        assert!((mean_shift + 0.2).abs() < 0.02, "{mean_shift}");
        assert!(statistic(&shifted, "/ks/segment_cdf") > statistic(&shifted, "/ks/against_cdf"));
        let contributions: f64 = shifted["statistics"]["psi"]["bins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|bin| bin["contribution"].as_f64().unwrap())
            .sum();
        assert!((contributions - statistic(&shifted, "/psi/value")).abs() < 1e-9);
        assert_eq!(shifted["segment"]["count"], 1_000);
        assert_eq!(
            shifted["histogram"]["segment"].as_array().unwrap().len(),
            HISTOGRAM_BARS
        );
    }

    #[test]
    fn an_empty_side_has_no_statistics() {
        let answer = compare_samples(vec![], vec![1.0, 2.0], 10, 100);
        assert!(answer["statistics"].is_null());
        assert_eq!(answer["against"]["count"], 2);
    }

    #[test]
    fn subsamples_keep_the_spread_of_sorted_values() {
        let values: Vec<f64> = (0..1_000).map(f64::from).collect();
        let picked = subsample(&values, 10);
        assert_eq!(picked.len(), 10);
        assert_eq!(picked[0], 50.0);
        assert_eq!(picked[9], 950.0);
    }

    #[test]
    fn against_and_segments_parse_into_sides_and_sql_with_quoted_values() {
        assert_eq!(parse_against("rest"), Ok(Against::Rest));
        assert_eq!(
            parse_against("ab_group=baseline"),
            Ok(Against::Equals("ab_group".into(), "baseline".into()))
        );
        assert_eq!(
            parse_against("shift:24h"),
            Ok(Against::Shift(86_400_000_000_000))
        );
        assert!(parse_against("shift:-1h").is_err());
        assert!(parse_against("x; DROP=1").is_err());
        assert!(sides(None, &Against::Rest, 0, 10).is_err());

        let segment = Some(("source_id".to_string(), "src'07".to_string()));
        let (side, rest) = sides(segment.clone(), &Against::Rest, 0, 10).unwrap();
        let sql = side_sql("inference", "confidence", Some("fraud"), &rest);
        assert!(
            sql.contains("\"source_id\" IS DISTINCT FROM 'src''07'"),
            "{sql}"
        );
        assert!(
            side_sql("inference", "confidence", None, &side).contains("\"source_id\" = 'src''07'")
        );
        let (_, yesterday) = sides(segment, &Against::Shift(5), 10, 20).unwrap();
        assert_eq!((yesterday.from, yesterday.to), (5, 15));
        assert!(!yesterday.negated);
    }
}
