//! Text-level coercions shared by the decoder, defaults and lookup tables:
//! numbers given as text, epoch and RFC 3339 timestamps, status words.
//!
//! Nothing here allocates on success: these run once per field per event.

use chrono::{DateTime, NaiveDateTime};

/// 2^63 as f64: the first float beyond i64 (i64::MAX itself is not a float).
pub(crate) const TWO_TO_THE_63: f64 = (1u64 << 63) as f64;

/// How a timestamp value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampUnit {
    /// Numbers are epoch values whose unit is guessed from their magnitude
    /// (see [`inferwatch_core::epoch_to_nanos`]); text is RFC 3339 or a number.
    #[default]
    Auto,
    /// Epoch seconds.
    Seconds,
    /// Epoch milliseconds.
    Milliseconds,
    /// Epoch microseconds.
    Microseconds,
    /// Epoch nanoseconds.
    Nanoseconds,
    /// RFC 3339 text only.
    Rfc3339,
}

impl TimestampUnit {
    /// Reads the spelling used in mapping files.
    pub fn parse(text: &str) -> Option<TimestampUnit> {
        Some(match text {
            "auto" => TimestampUnit::Auto,
            "s" => TimestampUnit::Seconds,
            "ms" => TimestampUnit::Milliseconds,
            "us" | "µs" => TimestampUnit::Microseconds,
            "ns" => TimestampUnit::Nanoseconds,
            "rfc3339" => TimestampUnit::Rfc3339,
            _ => return None,
        })
    }

    fn nanos_per_unit(self) -> Option<i64> {
        match self {
            TimestampUnit::Seconds => Some(1_000_000_000),
            TimestampUnit::Milliseconds => Some(1_000_000),
            TimestampUnit::Microseconds => Some(1_000),
            TimestampUnit::Nanoseconds => Some(1),
            TimestampUnit::Auto | TimestampUnit::Rfc3339 => None,
        }
    }
}

/// Reads a finite float from JSON number text or from a string holding one.
///
/// `NaN`, `inf` and numbers beyond f64 are refused: they would poison every
/// sum and quantile downstream.
pub(crate) fn parse_finite_float(text: &str) -> Option<f64> {
    let value: f64 = text.trim().parse().ok()?;
    value.is_finite().then_some(value)
}

/// Reads an integer within `[minimum, maximum]`. Integral floats such as
/// `12.0` or `1e3` are accepted because many loggers write every number as a
/// float; `12.5` is not.
pub(crate) fn parse_integer_in_range(text: &str, minimum: i64, maximum: i64) -> IntegerParse {
    let text = text.trim();
    let value = match text.parse::<i64>() {
        Ok(value) => value,
        Err(_) => {
            let Some(float) = parse_finite_float(text) else {
                return if looks_numeric(text) {
                    IntegerParse::OutOfRange
                } else {
                    IntegerParse::NotANumber
                };
            };
            if float.fract() != 0.0 {
                return IntegerParse::NotIntegral;
            }
            // i64::MAX is not representable as f64; compare against 2^63.
            if !(-TWO_TO_THE_63..TWO_TO_THE_63).contains(&float) {
                return IntegerParse::OutOfRange;
            }
            float as i64
        }
    };
    if value < minimum || value > maximum {
        return IntegerParse::OutOfRange;
    }
    IntegerParse::Value(value)
}

/// Outcome of [`parse_integer_in_range`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntegerParse {
    Value(i64),
    NotANumber,
    NotIntegral,
    OutOfRange,
}

/// True for text that is a number too big for f64 (such as `1e999`); used to
/// tell "out of range" from "not a number" in messages.
fn looks_numeric(text: &str) -> bool {
    let starts_like_number = text
        .bytes()
        .next()
        .is_some_and(|byte| byte.is_ascii_digit() || matches!(byte, b'-' | b'+' | b'.'));
    starts_like_number && matches!(text.parse::<f64>(), Ok(value) if !value.is_nan())
}

/// Why a timestamp could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimestampProblem {
    /// Not a number and not RFC 3339.
    Unparsable,
    /// Negative, or beyond what nanoseconds in an i64 can hold (year 2262).
    OutOfRange,
}

/// Converts epoch number text (from a JSON number or a numeric string) to
/// UTC nanoseconds. Integers are converted exactly, so nanosecond epochs
/// (which exceed f64 precision) survive.
pub(crate) fn timestamp_from_number_text(
    text: &str,
    unit: TimestampUnit,
) -> Result<i64, TimestampProblem> {
    let text = text.trim();
    if let Ok(integer) = text.parse::<i64>() {
        return timestamp_from_integer(Some(integer), unit);
    }
    if text.parse::<u64>().is_ok() {
        return Err(TimestampProblem::OutOfRange);
    }
    match parse_finite_float(text) {
        Some(float) => timestamp_from_float(float, unit),
        None if looks_numeric(text) => Err(TimestampProblem::OutOfRange),
        None => Err(TimestampProblem::Unparsable),
    }
}

/// An integer epoch (`None`: beyond i64) in `unit` to UTC nanoseconds.
pub(crate) fn timestamp_from_integer(
    integer: Option<i64>,
    unit: TimestampUnit,
) -> Result<i64, TimestampProblem> {
    let Some(integer) = integer.filter(|integer| *integer >= 0) else {
        return Err(TimestampProblem::OutOfRange);
    };
    let scale = match unit.nanos_per_unit() {
        Some(scale) => scale,
        None => auto_scale(integer as f64),
    };
    integer
        .checked_mul(scale)
        .ok_or(TimestampProblem::OutOfRange)
}

/// A fractional epoch in `unit` to UTC nanoseconds.
pub(crate) fn timestamp_from_float(
    float: f64,
    unit: TimestampUnit,
) -> Result<i64, TimestampProblem> {
    if !float.is_finite() || float < 0.0 {
        return Err(TimestampProblem::OutOfRange);
    }
    let nanos = match unit.nanos_per_unit() {
        Some(scale) => Some(float * scale as f64),
        None => inferwatch_core::epoch_to_nanos(float).map(|nanos| nanos as f64),
    };
    match nanos {
        Some(nanos) if nanos < TWO_TO_THE_63 => Ok(nanos.round() as i64),
        _ => Err(TimestampProblem::OutOfRange),
    }
}

/// The unit guess of [`inferwatch_core::epoch_to_nanos`], applied to integers
/// so that the two agree on every boundary.
fn auto_scale(value: f64) -> i64 {
    if value < 1e11 {
        1_000_000_000
    } else if value < 1e14 {
        1_000_000
    } else if value < 1e17 {
        1_000
    } else {
        1
    }
}

/// Reads a timestamp given as a JSON string.
///
/// Accepted: RFC 3339 (`2026-01-01T00:00:00.5Z`, any offset); the same
/// without an offset (`2026-01-01T00:00:00.5` or with a space instead of `T`),
/// read as UTC because that is what Python's `datetime.utcnow().isoformat()`
/// writes; and, unless the unit is `rfc3339`, a number in the given unit.
pub(crate) fn timestamp_from_text(
    text: &str,
    unit: TimestampUnit,
) -> Result<i64, TimestampProblem> {
    if matches!(unit, TimestampUnit::Auto | TimestampUnit::Rfc3339) {
        if let Some(nanos) = fast_utc_timestamp(text.as_bytes()) {
            return Ok(nanos);
        }
    }
    let text = text.trim();
    if unit != TimestampUnit::Rfc3339 && (looks_numeric(text) || text.parse::<i64>().is_ok()) {
        return timestamp_from_number_text(text, unit);
    }
    if unit.nanos_per_unit().is_some() {
        return Err(TimestampProblem::Unparsable);
    }
    if let Ok(parsed) = DateTime::parse_from_rfc3339(text) {
        return parsed
            .timestamp_nanos_opt()
            .ok_or(TimestampProblem::OutOfRange);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return naive
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or(TimestampProblem::OutOfRange);
        }
    }
    Err(TimestampProblem::Unparsable)
}

/// The shape nearly every logger writes, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`,
/// read without chrono's general parser (a quarter of the time). Anything
/// else, including offsets other than `Z` and out-of-range fields, returns
/// `None` and goes through chrono.
fn fast_utc_timestamp(text: &[u8]) -> Option<i64> {
    if text.len() < 20 || text[text.len() - 1] != b'Z' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        text.get(range)?.iter().try_fold(0i64, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + i64::from(byte - b'0'))
        })
    };
    let separators_ok = text[4] == b'-'
        && text[7] == b'-'
        && (text[10] == b'T' || text[10] == b't' || text[10] == b' ')
        && text[13] == b':'
        && text[16] == b':';
    if !separators_ok {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let fraction = &text[19..text.len() - 1];
    let mut fraction_nanos = 0i64;
    if !fraction.is_empty() {
        if fraction[0] != b'.' || fraction.len() < 2 || fraction.len() > 10 {
            return None;
        }
        let mut scale = 100_000_000i64;
        for &byte in &fraction[1..] {
            if !byte.is_ascii_digit() {
                return None;
            }
            fraction_nanos += i64::from(byte - b'0') * scale;
            scale /= 10;
        }
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    seconds
        .checked_mul(1_000_000_000)?
        .checked_add(fraction_nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Normalises a status word or code to `ok` or `error`.
///
/// `ok`, `success`, `succeeded`, `successful`, `completed` and HTTP-like codes
/// below 400 are `ok`; `error`, `failed`, `failure`, `fail`, `timeout`,
/// `cancelled` and codes from 400 up are `error`. Case is ignored.
pub(crate) fn normalise_status(text: &str) -> Option<&'static str> {
    let text = text.trim();
    if let Ok(code) = text.parse::<u32>() {
        return match code {
            100..=399 => Some("ok"),
            400..=599 => Some("error"),
            _ => None,
        };
    }
    const OK_WORDS: [&str; 5] = ["ok", "success", "succeeded", "successful", "completed"];
    const ERROR_WORDS: [&str; 7] = [
        "error",
        "failed",
        "failure",
        "fail",
        "timeout",
        "cancelled",
        "canceled",
    ];
    if OK_WORDS.iter().any(|word| word.eq_ignore_ascii_case(text)) {
        return Some("ok");
    }
    if ERROR_WORDS
        .iter()
        .any(|word| word.eq_ignore_ascii_case(text))
    {
        return Some("error");
    }
    None
}

/// Status derived when the event does not say: server errors and rate
/// limiting count as errors, so does any event carrying an error type.
pub(crate) fn derive_status(http_status: Option<i64>, has_error_type: bool) -> &'static str {
    let http_failed = http_status.is_some_and(|code| code >= 500 || code == 429);
    if http_failed || has_error_type {
        "error"
    } else {
        "ok"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_2026_NANOS: i64 = 1_767_225_600 * 1_000_000_000;

    #[test]
    fn floats_refuse_non_finite_text() {
        assert_eq!(parse_finite_float(" 12.5 "), Some(12.5));
        assert_eq!(parse_finite_float("1e3"), Some(1000.0));
        assert_eq!(parse_finite_float("NaN"), None);
        assert_eq!(parse_finite_float("inf"), None);
        assert_eq!(parse_finite_float("1e400"), None);
        assert_eq!(parse_finite_float("abc"), None);
    }

    #[test]
    fn integers_accept_integral_floats_only() {
        use IntegerParse::*;
        assert_eq!(parse_integer_in_range("42", 0, 100), Value(42));
        assert_eq!(parse_integer_in_range("42.0", 0, 100), Value(42));
        assert_eq!(parse_integer_in_range("1e2", 0, 100), Value(100));
        assert_eq!(parse_integer_in_range("42.5", 0, 100), NotIntegral);
        assert_eq!(parse_integer_in_range("101", 0, 100), OutOfRange);
        assert_eq!(
            parse_integer_in_range("123456789012345678901234567890", i64::MIN, i64::MAX),
            OutOfRange
        );
        assert_eq!(
            parse_integer_in_range("1e999", i64::MIN, i64::MAX),
            OutOfRange
        );
        assert_eq!(parse_integer_in_range("abc", 0, 100), NotANumber);
        assert_eq!(parse_integer_in_range("", 0, 100), NotANumber);
    }

    #[test]
    fn epoch_numbers_in_every_unit() {
        for (text, unit) in [
            ("1767225600", TimestampUnit::Auto),
            ("1767225600000", TimestampUnit::Auto),
            ("1767225600000000", TimestampUnit::Auto),
            ("1767225600000000000", TimestampUnit::Auto),
            ("1767225600.0", TimestampUnit::Auto),
            ("1767225600", TimestampUnit::Seconds),
            ("1767225600000", TimestampUnit::Milliseconds),
            ("1767225600000000", TimestampUnit::Microseconds),
            ("1767225600000000000", TimestampUnit::Nanoseconds),
            ("1767225.6", TimestampUnit::Microseconds),
        ] {
            let expected = if text == "1767225.6" {
                1_767_225_600
            } else {
                JAN_2026_NANOS
            };
            assert_eq!(
                timestamp_from_number_text(text, unit),
                Ok(expected),
                "{text}"
            );
        }
        // Nanosecond integers keep every digit (f64 would round them).
        assert_eq!(
            timestamp_from_number_text("1767225600123456789", TimestampUnit::Auto),
            Ok(JAN_2026_NANOS + 123_456_789)
        );
        assert_eq!(
            timestamp_from_number_text("-5", TimestampUnit::Auto),
            Err(TimestampProblem::OutOfRange)
        );
        assert_eq!(
            timestamp_from_number_text("99999999999999999999", TimestampUnit::Seconds),
            Err(TimestampProblem::OutOfRange)
        );
        assert_eq!(
            timestamp_from_number_text("1e300", TimestampUnit::Auto),
            Err(TimestampProblem::OutOfRange)
        );
    }

    #[test]
    fn textual_timestamps() {
        for text in [
            "2026-01-01T00:00:00Z",
            "2026-01-01T01:00:00+01:00",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00",
            "2026-01-01T00:00:00.000",
            "1767225600",
        ] {
            assert_eq!(
                timestamp_from_text(text, TimestampUnit::Auto),
                Ok(JAN_2026_NANOS),
                "{text}"
            );
        }
        assert_eq!(
            timestamp_from_text("1767225600", TimestampUnit::Rfc3339),
            Err(TimestampProblem::Unparsable)
        );
        assert_eq!(
            timestamp_from_text("2026-01-01T00:00:00Z", TimestampUnit::Milliseconds),
            Err(TimestampProblem::Unparsable)
        );
        assert_eq!(
            timestamp_from_text("1767225600000", TimestampUnit::Milliseconds),
            Ok(JAN_2026_NANOS)
        );
        for bad in ["yesterday", "2026-01-01", "NaN", ""] {
            assert_eq!(
                timestamp_from_text(bad, TimestampUnit::Auto),
                Err(TimestampProblem::Unparsable),
                "{bad}"
            );
        }
    }

    #[test]
    fn fast_timestamps_agree_with_chrono() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2024-02-29T23:59:59.999999999Z",
            "2000-03-01T12:34:56.5Z",
            "2100-12-31T00:00:00.123Z",
            "2262-04-11T23:47:16.854775807Z",
        ] {
            let chrono = DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_nanos_opt()
                .unwrap();
            assert_eq!(fast_utc_timestamp(text.as_bytes()), Some(chrono), "{text}");
        }
        for text in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01T00:00:00.Z",
            "2026-01-01T00:00:00.1234567890Z",
            "2262-04-11T23:47:16.854775808Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(fast_utc_timestamp(text.as_bytes()), None, "{text}");
        }
        // Refused by the fast path, still read (or refused) by chrono.
        assert_eq!(
            timestamp_from_text("2026-01-01T01:00:00+01:00", TimestampUnit::Auto),
            Ok(JAN_2026_NANOS)
        );
    }

    #[test]
    fn status_words_and_codes() {
        for ok in ["ok", "OK", "success", "200", "completed"] {
            assert_eq!(normalise_status(ok), Some("ok"), "{ok}");
        }
        for error in ["error", "failed", "Failure", "500", "429", "timeout"] {
            assert_eq!(normalise_status(error), Some("error"), "{error}");
        }
        assert_eq!(normalise_status("maybe"), None);
        assert_eq!(normalise_status("999"), None);
        assert_eq!(derive_status(Some(503), false), "error");
        assert_eq!(derive_status(Some(429), false), "error");
        assert_eq!(derive_status(Some(404), false), "ok");
        assert_eq!(derive_status(None, true), "error");
        assert_eq!(derive_status(None, false), "ok");
    }
}
