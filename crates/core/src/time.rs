//! Event-time helpers: durations, RFC 3339 and epoch timestamps.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::CoreError;

/// Nanoseconds in one second.
pub const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Reads a duration such as `500ms`, `30s`, `5m`, `1h` or `1d` into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, CoreError> {
    let invalid = || CoreError::InvalidDuration {
        text: text.to_string(),
    };
    let trimmed = text.trim();
    let split_at = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(invalid)?;
    let (number, unit) = trimmed.split_at(split_at);
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let unit_nanos = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        "d" => 86400e9,
        _ => return Err(invalid()),
    };
    let nanos = value * unit_nanos;
    if !nanos.is_finite() || nanos < 0.0 || nanos > i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(nanos.round() as i64)
}

/// Formats UTC nanoseconds as RFC 3339 with the shortest exact sub-second part.
pub fn format_timestamp(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Reads a textual timestamp: RFC 3339, or an epoch number whose unit is
/// guessed from its magnitude (seconds, milliseconds, microseconds or
/// nanoseconds; the guess is unambiguous for dates between 1973 and 5138).
pub fn parse_timestamp_text(text: &str) -> Result<i64, CoreError> {
    let invalid = || CoreError::InvalidTimestamp {
        text: text.to_string(),
    };
    if let Ok(number) = text.trim().parse::<f64>() {
        return epoch_to_nanos(number).ok_or_else(invalid);
    }
    let parsed = DateTime::parse_from_rfc3339(text.trim()).map_err(|_| invalid())?;
    parsed.timestamp_nanos_opt().ok_or_else(invalid)
}

/// Converts an epoch number of unknown unit to nanoseconds (see
/// [`parse_timestamp_text`]). Returns `None` for non-finite or negative input.
pub fn epoch_to_nanos(value: f64) -> Option<i64> {
    if !value.is_finite() || value < 0.0 {
        return None;
    }
    let scale = if value < 1e11 {
        1e9
    } else if value < 1e14 {
        1e6
    } else if value < 1e17 {
        1e3
    } else {
        1.0
    };
    let nanos = value * scale;
    (nanos <= i64::MAX as f64).then_some(nanos.round() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_duration("1h").unwrap(), 3_600 * NANOS_PER_SECOND);
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn timestamps_in_every_unit_agree() {
        let expected = 1_767_225_600 * NANOS_PER_SECOND; // 2026-01-01T00:00:00Z
        for text in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00+01:00",
            "1767225600",
            "1767225600000",
            "1767225600000000",
            "1767225600000000000",
        ] {
            assert_eq!(parse_timestamp_text(text).unwrap(), expected, "{text}");
        }
        assert!(parse_timestamp_text("yesterday").is_err());
        assert!(parse_timestamp_text("-5").is_err());
        assert_eq!(
            format_timestamp(expected + 250_000_000),
            "2026-01-01T00:00:00.250Z"
        );
    }
}
