//! Human text shared by the notification payloads.

use inferwatch_core::Alert;

/// A number as people read it: `640`, `0.0123`, `1.5e-7`.
pub(crate) fn number(value: f64) -> String {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e15 {
        return format!("{value:.0}");
    }
    if value != 0.0 && value.abs() < 1e-4 {
        return format!("{value:.3e}");
    }
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `model_id=recsys, model_version=v2`, or empty.
pub(crate) fn group(alert: &Alert) -> String {
    alert
        .group
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `value 640 (threshold 500)`, or what of it is known.
pub(crate) fn value(alert: &Alert) -> Option<String> {
    match (alert.value, alert.threshold) {
        (Some(value), Some(threshold)) => Some(format!(
            "value {} (threshold {})",
            number(value),
            number(threshold)
        )),
        (Some(value), None) => Some(format!("value {}", number(value))),
        (None, Some(threshold)) => Some(format!("threshold {}", number(threshold))),
        (None, None) => None,
    }
}

/// `1200 events, 10% of traffic, 3412 clients`.
pub(crate) fn impact(alert: &Alert) -> String {
    let impact = &alert.impact;
    let mut text = format!(
        "{} events, {}% of traffic",
        impact.events,
        number(impact.share_of_traffic * 100.0)
    );
    if let Some(clients) = impact.distinct_clients {
        text.push_str(&format!(", {clients} clients"));
    }
    text
}

/// `source_id=s3 (lift 6.1); client_id=c9 (lift 2)`, or empty.
pub(crate) fn explanation(alert: &Alert) -> String {
    alert
        .explanation
        .iter()
        .map(|contributor| {
            format!(
                "{}={} (lift {})",
                contributor.dimension,
                contributor.value,
                number(contributor.lift)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One paragraph: condition, value, impact and top contributors.
pub(crate) fn description(alert: &Alert) -> String {
    let mut sentences = vec![format!("{}", alert.condition)];
    if let Some(value) = value(alert) {
        sentences[0].push_str(&format!(": {value}"));
    }
    sentences.push(format!("Impact: {}", impact(alert)));
    let explanation = explanation(alert);
    if !explanation.is_empty() {
        sentences.push(format!("Top contributors: {explanation}"));
    }
    sentences.join(". ")
}

/// `Canary slower (model_id=recsys): value 640 (threshold 500)`.
pub(crate) fn summary(alert: &Alert) -> String {
    let mut text = alert.title.clone();
    let group = group(alert);
    if !group.is_empty() {
        text.push_str(&format!(" ({group})"));
    }
    if let Some(value) = value(alert) {
        text.push_str(&format!(": {value}"));
    }
    text
}

/// Cuts `text` to at most `limit` characters, marking the cut with `…`.
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(limit.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(number(640.0), "640");
        assert_eq!(number(0.125), "0.125");
        assert_eq!(number(2.0 / 3.0), "0.6667");
        assert_eq!(number(0.00001234), "1.234e-5");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
