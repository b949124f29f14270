//! The one-line English summary of an alert, and the number formats it uses.
//!
//! `p99 latency 640 ms on recsys 2.1 (10 % of traffic, 3,412 clients)`: the
//! measured aggregate, the group, the impact and the explanation's top
//! contributors, so a page says what happened without opening the alert.

use inferwatch_core::{Alert, AlertState};

use super::RuleRuntime;
use crate::condition::{AggregateKind, Subject};

impl RuleRuntime {
    /// `p99 latency 640 ms on recsys 2.1 (10 % of traffic, 3,412 clients);
    /// 78 % of slow requests have input_tokens 2k-8k (lift 6.1)`.
    pub(super) fn summary(&self, alert: &Alert, subject: Option<Subject>, noun: &str) -> String {
        let mut text = match (subject, alert.value) {
            (Some((_, index)), Some(value)) => {
                let aggregate = &self.condition.aggregates[index];
                let segment = match aggregate.segment {
                    0 => String::new(),
                    segment => format!("{} ", self.rule.segments[segment - 1].0),
                };
                let column = aggregate
                    .kind
                    .column()
                    .and_then(|column| self.referenced_name(column))
                    .unwrap_or_default();
                let (column, unit) = match column.strip_suffix("_ms") {
                    Some(stem) => (stem.to_string(), " ms"),
                    None => (column, ""),
                };
                let measured = match aggregate.kind {
                    AggregateKind::Count => "count".to_string(),
                    AggregateKind::Rate => "rate".to_string(),
                    AggregateKind::Errors => "errors".to_string(),
                    AggregateKind::ErrorRate => "error rate".to_string(),
                    AggregateKind::Sum(_) => format!("sum {column}"),
                    AggregateKind::Avg(_) => format!("avg {column}"),
                    AggregateKind::Min(_) => format!("min {column}"),
                    AggregateKind::Max(_) => format!("max {column}"),
                    AggregateKind::Stddev(_) => format!("stddev {column}"),
                    AggregateKind::Quantile(_, q) => format!("p{} {column}", number(q * 100.0)),
                    AggregateKind::Distinct(_) => format!("distinct {column}"),
                };
                let value = match aggregate.kind {
                    AggregateKind::ErrorRate => percent(value),
                    _ => format!("{}{unit}", number(value)),
                };
                format!("{segment}{measured} {value}")
            }
            _ => alert.title.clone(),
        };
        if alert.state == AlertState::Resolved {
            text = format!("resolved: {text}");
        }
        if !alert.group.is_empty() {
            let values: Vec<&str> = alert.group.values().map(String::as_str).collect();
            text.push_str(&format!(" on {}", values.join(" ")));
        }
        let impact = &alert.impact;
        text.push_str(&format!(
            " ({} of traffic",
            percent(impact.share_of_traffic)
        ));
        if let Some(clients) = impact.distinct_clients {
            let plural = if clients == 1 { "client" } else { "clients" };
            text.push_str(&format!(", {} {plural}", thousands(clients)));
        }
        text.push(')');
        for contributor in &alert.explanation {
            match contributor.share {
                Some(share) => text.push_str(&format!(
                    "; {} of {noun} have {} {} (lift {:.1})",
                    percent(share),
                    contributor.dimension,
                    contributor.value,
                    contributor.lift
                )),
                None => text.push_str(&format!("; {}", contributor.value)),
            }
        }
        text
    }
}

/// `640`, `3,412`, `7.5`, `0.042`: numbers for a summary line.
pub(super) fn number(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    if value.abs() >= 100.0 {
        let rounded = value.round();
        let sign = if rounded < 0.0 { "-" } else { "" };
        return format!("{sign}{}", thousands(rounded.abs() as u64));
    }
    let text = if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    };
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// `3,412`.
pub(super) fn thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

/// A share as `10 %`, `7.5 %` or `0.3 %`.
pub(super) fn percent(share: f64) -> String {
    format!("{} %", number(share * 100.0))
}

pub(super) fn round_half(value: f64) -> f64 {
    (value * 2.0).round() / 2.0
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
