//! Allocation-free JSON fragments: integers, fixed-precision decimals, hex
//! and RFC 3339 timestamps, appended to a reused byte buffer.

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Appends a decimal integer.
#[inline]
pub(crate) fn push_integer(buffer: &mut Vec<u8>, value: u64) {
    let mut digits = itoa::Buffer::new();
    buffer.extend_from_slice(digits.format(value).as_bytes());
}

/// Appends a decimal integer padded with leading zeros to at least `width`
/// digits (`00042`).
#[inline]
pub(crate) fn push_padded(buffer: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let text = digits.format(value).as_bytes();
    for _ in text.len()..width {
        buffer.push(b'0');
    }
    buffer.extend_from_slice(text);
}

/// Appends a non-negative number with exactly one decimal (`123.4`).
#[inline]
pub(crate) fn push_one_decimal(buffer: &mut Vec<u8>, value: f64) {
    debug_assert!(value.is_finite() && value >= 0.0);
    let tenths = (value * 10.0).round() as u64;
    push_integer(buffer, tenths / 10);
    buffer.push(b'.');
    buffer.push(b'0' + (tenths % 10) as u8);
}

/// Appends a probability in `[0, 1]` rounded to 4 decimals, without trailing
/// zeros (`0.71`, `0.0032`, `1.0`, `0.0`).
#[inline]
pub(crate) fn push_probability(buffer: &mut Vec<u8>, value: f64) {
    let scaled = (value * 10_000.0).round() as u32;
    if scaled >= 10_000 {
        buffer.extend_from_slice(b"1.0");
        return;
    }
    if scaled == 0 {
        buffer.extend_from_slice(b"0.0");
        return;
    }
    let digits = [
        b'0' + (scaled / 1000) as u8,
        b'0' + (scaled / 100 % 10) as u8,
        b'0' + (scaled / 10 % 10) as u8,
        b'0' + (scaled % 10) as u8,
    ];
    let mut length = 4;
    while digits[length - 1] == b'0' {
        length -= 1;
    }
    buffer.extend_from_slice(b"0.");
    buffer.extend_from_slice(&digits[..length]);
}

/// Appends `value` as 16 lowercase hex digits.
#[inline]
pub(crate) fn push_hex16(buffer: &mut Vec<u8>, value: u64) {
    let mut digits = [0_u8; 16];
    for (index, digit) in digits.iter_mut().enumerate() {
        *digit = HEX_DIGITS[((value >> (60 - 4 * index)) & 0xF) as usize];
    }
    buffer.extend_from_slice(&digits);
}

/// Appends a number below 100 as two digits.
#[inline]
pub(crate) fn push_two_digits(buffer: &mut Vec<u8>, value: usize) {
    debug_assert!(value < 100);
    buffer.push(b'0' + (value / 10) as u8);
    buffer.push(b'0' + (value % 10) as u8);
}

/// Formats `YYYY-MM-DDTHH:MM:SS.mmmZ` timestamps, recomputing the calendar
/// part only when the second changes.
#[derive(Debug, Clone)]
pub(crate) struct TimestampFormatter {
    second: i64,
    prefix: [u8; 20],
}

impl TimestampFormatter {
    pub(crate) fn new() -> Self {
        let mut formatter = Self {
            second: 0,
            prefix: [0; 20],
        };
        formatter.set_second(0);
        formatter
    }

    fn set_second(&mut self, second: i64) {
        self.second = second;
        let days = second.div_euclid(86_400);
        let second_of_day = second.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let hour = second_of_day / 3_600;
        let minute = second_of_day / 60 % 60;
        let second_of_minute = second_of_day % 60;
        let year = year.clamp(0, 9_999) as u32;
        let prefix = &mut self.prefix;
        prefix[0] = b'0' + (year / 1000) as u8;
        prefix[1] = b'0' + (year / 100 % 10) as u8;
        prefix[2] = b'0' + (year / 10 % 10) as u8;
        prefix[3] = b'0' + (year % 10) as u8;
        prefix[4] = b'-';
        prefix[5] = b'0' + (month / 10) as u8;
        prefix[6] = b'0' + (month % 10) as u8;
        prefix[7] = b'-';
        prefix[8] = b'0' + (day / 10) as u8;
        prefix[9] = b'0' + (day % 10) as u8;
        prefix[10] = b'T';
        prefix[11] = b'0' + (hour / 10) as u8;
        prefix[12] = b'0' + (hour % 10) as u8;
        prefix[13] = b':';
        prefix[14] = b'0' + (minute / 10) as u8;
        prefix[15] = b'0' + (minute % 10) as u8;
        prefix[16] = b':';
        prefix[17] = b'0' + (second_of_minute / 10) as u8;
        prefix[18] = b'0' + (second_of_minute % 10) as u8;
        prefix[19] = b'.';
    }

    /// Appends the timestamp of `nanos` (UTC) truncated to milliseconds.
    #[inline]
    pub(crate) fn push(&mut self, buffer: &mut Vec<u8>, nanos: i64) {
        let second = nanos.div_euclid(NANOS_PER_SECOND);
        if second != self.second {
            self.set_second(second);
        }
        let millis = (nanos.rem_euclid(NANOS_PER_SECOND) / 1_000_000) as u32;
        buffer.extend_from_slice(&self.prefix);
        buffer.extend_from_slice(&[
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut buffer = Vec::new();
        write(&mut buffer);
        String::from_utf8(buffer).unwrap()
    }

    #[test]
    fn decimals() {
        assert_eq!(text(|b| push_one_decimal(b, 123.44)), "123.4");
        assert_eq!(text(|b| push_one_decimal(b, 0.06)), "0.1");
        assert_eq!(text(|b| push_one_decimal(b, 9.96)), "10.0");
        assert_eq!(text(|b| push_probability(b, 0.71)), "0.71");
        assert_eq!(text(|b| push_probability(b, 0.00321)), "0.0032");
        assert_eq!(text(|b| push_probability(b, 0.99996)), "1.0");
        assert_eq!(text(|b| push_probability(b, 0.00004)), "0.0");
        assert_eq!(text(|b| push_probability(b, 0.5)), "0.5");
        assert_eq!(text(|b| push_hex16(b, 0x1a2b3)), "000000000001a2b3");
        assert_eq!(text(|b| push_two_digits(b, 7)), "07");
        assert_eq!(text(|b| push_integer(b, 312)), "312");
        assert_eq!(text(|b| push_padded(b, 42, 5)), "00042");
        assert_eq!(text(|b| push_padded(b, 0, 5)), "00000");
        assert_eq!(text(|b| push_padded(b, 1_234_567, 5)), "1234567");
    }

    #[test]
    fn timestamps_agree_with_core() {
        let mut formatter = TimestampFormatter::new();
        for nanos in [
            0_i64,
            1_767_225_600_123_456_789, // 2026-01-01T00:00:00.123
            951_782_400_000_000_000,   // 2000-02-29
            4_107_542_399_999_000_000, // 2100-02-28T23:59:59.999
            1_709_251_199_500_000_000, // 2024-02-29T23:59:59.5
        ] {
            let expected = inferwatch_core::format_timestamp(nanos - nanos % 1_000_000);
            let got = text(|b| formatter.push(b, nanos));
            let parsed = inferwatch_core::parse_timestamp_text(&got).unwrap();
            assert_eq!(parsed, nanos - nanos % 1_000_000, "{got} vs {expected}");
            assert_eq!(got.len(), 24);
        }
    }
}
