//! The flat-line fast path.
//!
//! Nearly every model server writes the same shape: one object whose values
//! are strings without escapes, plain decimal numbers, booleans, nulls and
//! arrays of numbers (probabilities, logits), or objects of those under keys
//! the mapping descends into (`{"service":{"name":…}}`). For that shape,
//! driving sonic-rs's serde deserializer through visitors costs far more than
//! the parse itself: per key a `deserialize_str` call, a visitor, a seed, and
//! per value a `deserialize_any` dispatch (measured on 400 K simulated lines:
//! 1.13 µs per line for the whole decode against 0.33 µs for sonic-rs into
//! `IgnoredAny`). This module scans such a line directly, eight bytes at a
//! time, checks each key against the previous line's key order
//! ([`KeyOrder`]), and hands keys and values to the same key table and the
//! same `Record` conversions the serde walk uses, so a line means the same
//! whichever path read it. The whole decode is then 0.82 µs.
//!
//! It is a fast path, not a second parser: it accepts a strict subset of JSON
//! and answers `None` on anything outside it (an escape, an object under a
//! key the mapping does not descend into, a number it cannot convert exactly,
//! a key that needs its raw JSON, a syntax error). The caller then clears the
//! record and walks the line with sonic-rs, which also produces every error
//! message; nothing this module did survives that. Numbers are converted only
//! where the result is exact by construction (Clinger's fast path: at most 19
//! digits, a mantissa below 2^53 and a power of ten up to 10^22), which is
//! what sonic-rs gives for them too; anything else goes to sonic-rs.

use crate::columns::same_bytes;
use crate::mapping::{Conversion, HotRule, KeySlot, Mapping, Rule, TrieNode};
use crate::record::{LineError, Record, Scalar, SlotValue};

/// Walks `text` (valid UTF-8, starting with `{` after optional whitespace)
/// if it is a flat line. `None`: not flat, the record holds partial state
/// and must be cleared before the general walk.
pub(crate) fn walk_flat(
    mapping: &Mapping,
    record: &mut Record,
    key_order: &mut KeyOrder,
    text: &str,
) -> Option<Result<(), LineError>> {
    let mut scanner = Scanner {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    let mut walk = FlatWalk {
        mapping,
        record,
        key_order,
        position: 0,
    };
    if let Err(error) = walk.object(ROOT_NODE, &mut scanner, 1)? {
        return Some(Err(error));
    }
    scanner.skip_whitespace();
    (scanner.at == scanner.bytes.len()).then_some(Ok(()))
}

/// The mapping's root node (the line's own keys).
const ROOT_NODE: u32 = 0;

/// One line's walk: its keys are numbered in document order across nesting
/// levels, which is how [`KeyOrder`] remembers them.
struct FlatWalk<'w> {
    mapping: &'w Mapping,
    record: &'w mut Record,
    key_order: &'w mut KeyOrder,
    position: usize,
}

impl FlatWalk<'_> {
    /// An object whose keys are read against node `node_index`. A value
    /// under a key that only leads deeper into the mapping (the nested
    /// logs of other fleets: `{"service":{"name":…}}`) is walked here too,
    /// so its depth is bounded by the mapping's, not the line's.
    fn object(
        &mut self,
        node_index: u32,
        scanner: &mut Scanner<'_>,
        depth: usize,
    ) -> Option<Result<(), LineError>> {
        if depth > crate::MAX_NESTING_DEPTH {
            // The general walk refuses it, with its reason.
            return None;
        }
        let node = self.mapping.nodes.get(node_index as usize)?;
        scanner.expect(b'{')?;
        if scanner.peek()? == b'}' {
            scanner.at += 1;
            return Some(Ok(()));
        }
        loop {
            let (key, slot) = self
                .key_order
                .next_key(node_index, node, scanner, self.position)?;
            self.position += 1;
            scanner.expect(b':')?;
            let outcome = match nested_node(self.mapping, node, slot, scanner) {
                Some(child) => self.object(child, scanner, depth + 1)?,
                None => field(self.mapping, node, self.record, scanner, key, slot)?,
            };
            if let Err(error) = outcome {
                return Some(Err(error));
            }
            if scanner.item_end(b'}')? {
                return Some(Ok(()));
            }
        }
    }
}

/// The node to walk when `slot`'s key only leads deeper into the mapping
/// and its value is an object; the general walk reads such an object
/// with the same node and the same unmapped-key rule.
fn nested_node(
    mapping: &Mapping,
    node: &TrieNode,
    slot: Option<KeySlot>,
    scanner: &mut Scanner<'_>,
) -> Option<u32> {
    let slot = slot?;
    if mapping.rules.get(slot.fast_rule as usize).is_some() {
        return None;
    }
    let edge = node.edge(&slot)?;
    let child = edge.child?;
    let walks_in_place = edge.rules.is_empty() && !edge.dropped && !edge.expect_object;
    (walks_in_place && scanner.peek()? == b'{').then_some(child)
}

/// One key and its value. The outer `Option` is "still flat", the inner
/// `Result` a refusal of the line by a conversion.
fn field(
    mapping: &Mapping,
    node: &TrieNode,
    record: &mut Record,
    scanner: &mut Scanner<'_>,
    key: &str,
    slot: Option<KeySlot>,
) -> Option<Result<(), LineError>> {
    let Some(slot) = slot else {
        let (raw, value) = scanner.unmapped_value()?;
        if mapping.keep_unmapped {
            let text = match value {
                Value::Null => None,
                Value::Text(text) => Some(text),
                Value::Other => Some(raw),
            };
            record.push_unmapped_text(&node.unmapped_prefix, key, text);
        }
        return Some(Ok(()));
    };
    let Some(rule) = mapping.rules.get(slot.fast_rule as usize) else {
        // Several rules or a nested node: only a dropped key stays here.
        let edge = node.edge(&slot);
        if edge.is_none_or(|edge| edge.dropped) {
            scanner.unmapped_value()?;
            return Some(Ok(()));
        }
        return None;
    };
    let hot = slot.hot;
    if matches!(
        hot.conversion,
        Conversion::RawText | Conversion::Hash | Conversion::AttributesObject
    ) {
        return None;
    }
    if record.outranked_hot(hot) {
        scanner.unmapped_value()?;
        return Some(Ok(()));
    }
    match scanner.peek()? {
        b'"' => {
            let text = scanner.string()?;
            Some(record.settle_scalar(rule, hot, Scalar::Str(text)))
        }
        b'[' if hot.conversion == Conversion::FloatList => list(record, scanner, rule, hot),
        b'n' => {
            scanner.literal(b"null")?;
            Some(Ok(()))
        }
        b't' => {
            scanner.literal(b"true")?;
            Some(record.settle_scalar(rule, hot, Scalar::Bool(true)))
        }
        b'f' => {
            scanner.literal(b"false")?;
            Some(record.settle_scalar(rule, hot, Scalar::Bool(false)))
        }
        b'-' | b'0'..=b'9' => {
            let number = scanner.number()?;
            Some(record.settle_scalar(rule, hot, number))
        }
        _ => None,
    }
}

/// An array of numbers into a float-list column.
fn list(
    record: &mut Record,
    scanner: &mut Scanner<'_>,
    rule: &Rule,
    hot: HotRule,
) -> Option<Result<(), LineError>> {
    let start = record.list_start();
    let mut failure = None;
    scanner.numbers(|position, number| {
        if failure.is_none() {
            failure = record.push_list_element(rule, position, number).err();
        }
    })?;
    let list = record.list_end(start, failure.is_some());
    let outcome: Result<SlotValue, LineError> = match failure {
        Some(error) => Err(error),
        None => Ok(list),
    };
    Some(record.settle_hot(rule, hot, outcome))
}

/// The keys of the last flat line, in order, with their key-table slots.
///
/// One writer repeats its key order line after line, so each key is first
/// compared with the key at the same position in the line before: a short
/// comparison instead of a scan for the closing quote plus a table lookup.
/// A miss scans and looks up as usual and remembers the key for the next
/// line.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyOrder {
    keys: Vec<ExpectedKey>,
}

#[derive(Debug, Clone)]
struct ExpectedKey {
    /// The mapping node the key was read against: the same key at the same
    /// position under another parent is another slot.
    node: u32,
    /// The key with its quotes, as it appears in the line, held inline so
    /// that checking it reads no other memory.
    quoted: [u8; REMEMBERED_KEY_BYTES],
    length: usize,
    slot: Option<KeySlot>,
}

impl ExpectedKey {
    fn quoted(&self) -> &[u8] {
        self.quoted.get(..self.length).unwrap_or_default()
    }
}

/// Longer keys (with their quotes) are scanned and looked up every time.
const REMEMBERED_KEY_BYTES: usize = 48;

/// Positions past this are not remembered: a line with thousands of keys
/// must not make every decoder hold them.
const REMEMBERED_KEYS: usize = 64;

impl KeyOrder {
    #[inline]
    fn next_key<'t>(
        &mut self,
        node_index: u32,
        node: &TrieNode,
        scanner: &mut Scanner<'t>,
        index: usize,
    ) -> Option<(&'t str, Option<KeySlot>)> {
        scanner.skip_whitespace();
        if let Some(expected) = self.keys.get(index).filter(|key| key.node == node_index) {
            let end = scanner.at + expected.length;
            if scanner
                .bytes
                .get(scanner.at..end)
                .is_some_and(|found| same_bytes(found, expected.quoted()))
            {
                let key = scanner.text.get(scanner.at + 1..end - 1)?;
                scanner.at = end;
                return Some((key, expected.slot));
            }
        }
        let start = scanner.at;
        let key = scanner.string()?;
        let slot = node.lookup(key).copied();
        let quoted = scanner.bytes.get(start..scanner.at)?;
        if index < REMEMBERED_KEYS && quoted.len() <= REMEMBERED_KEY_BYTES {
            let mut expected = ExpectedKey {
                node: node_index,
                quoted: [0; REMEMBERED_KEY_BYTES],
                length: quoted.len(),
                slot,
            };
            expected
                .quoted
                .get_mut(..quoted.len())?
                .copy_from_slice(quoted);
            if index < self.keys.len() {
                self.keys.truncate(index);
            }
            if index == self.keys.len() {
                self.keys.push(expected);
            }
        }
        Some((key, slot))
    }
}

/// What an unmapped value holds, for its attribute text.
enum Value<'t> {
    Null,
    Text(&'t str),
    /// A number, boolean or array of numbers: kept as written.
    Other,
}

/// A cursor over one line. Every method returns `None` when the line leaves
/// the flat subset.
struct Scanner<'t> {
    text: &'t str,
    bytes: &'t [u8],
    at: usize,
}

/// Eight copies of a byte, for the word-at-a-time searches below.
const fn repeated(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

const HIGH_BITS: u64 = repeated(0x80);

/// High bit set in each byte of `word` below `limit` (at most 0x80). Bytes
/// above the first flagged one may be flagged wrongly; the lowest flag is
/// always right, which is all a search needs.
#[inline]
fn bytes_below(word: u64, limit: u8) -> u64 {
    word.wrapping_sub(repeated(limit)) & !word & HIGH_BITS
}

/// High bit set in each byte of `word` equal to `byte` (lowest flag exact).
#[inline]
fn bytes_equal(word: u64, byte: u8) -> u64 {
    bytes_below(word ^ repeated(byte), 1)
}

impl<'t> Scanner<'t> {
    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// After an item of an object or array: `true` when `close` ends the
    /// container, `false` after a comma.
    #[inline]
    fn item_end(&mut self, close: u8) -> Option<bool> {
        let byte = self.peek()?;
        let closed = byte == close;
        if !closed && byte != b',' {
            return None;
        }
        self.at += 1;
        Some(closed)
    }

    /// An array of numbers, each handed to `each` with its position.
    #[inline]
    fn numbers(&mut self, mut each: impl FnMut(usize, Scalar<'t>)) -> Option<()> {
        self.expect(b'[')?;
        if self.peek()? == b']' {
            self.at += 1;
            return Some(());
        }
        let mut position = 0;
        loop {
            each(position, self.number()?);
            position += 1;
            if self.item_end(b']')? {
                return Some(());
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| self.at = end)
    }

    /// A string without escapes or control characters; returns its content.
    #[inline]
    fn string(&mut self) -> Option<&'t str> {
        self.expect(b'"')?;
        let start = self.at;
        let mut at = start;
        while let Some(chunk) = self.bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(chunk.try_into().ok()?);
            let stops =
                bytes_equal(word, b'"') | bytes_equal(word, b'\\') | bytes_below(word, 0x20);
            if stops != 0 {
                at += (stops.trailing_zeros() / 8) as usize;
                return self.close_string(start, at);
            }
            at += 8;
        }
        while let Some(&byte) = self.bytes.get(at) {
            if byte == b'"' || byte == b'\\' || byte < 0x20 {
                return self.close_string(start, at);
            }
            at += 1;
        }
        None
    }

    /// Ends a string at `at` if the byte there is its closing quote.
    #[inline]
    fn close_string(&mut self, start: usize, at: usize) -> Option<&'t str> {
        if self.bytes.get(at) != Some(&b'"') {
            return None;
        }
        self.at = at + 1;
        // Both ends are ASCII quotes, so they are character boundaries.
        self.text.get(start..at)
    }

    /// A JSON number, converted only when exact (see the module notes).
    /// Always inlined: returned through memory, the 24-byte result was
    /// written in pieces and read back whole, a store-forwarding stall on
    /// every number.
    #[inline(always)]
    fn number(&mut self) -> Option<Scalar<'t>> {
        self.skip_whitespace();
        let negative = self.bytes.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let mut mantissa = 0u64;
        let mut digits = 0u32;
        let integer_start = self.at;
        while let Some(&byte @ b'0'..=b'9') = self.bytes.get(self.at) {
            mantissa = mantissa
                .wrapping_mul(10)
                .wrapping_add(u64::from(byte - b'0'));
            digits += 1;
            self.at += 1;
        }
        let integer_digits = self.at - integer_start;
        if integer_digits == 0
            || (integer_digits > 1 && self.bytes.get(integer_start) == Some(&b'0'))
        {
            return None;
        }
        let mut fraction_digits = 0i32;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            while let Some(&byte @ b'0'..=b'9') = self.bytes.get(self.at) {
                mantissa = mantissa
                    .wrapping_mul(10)
                    .wrapping_add(u64::from(byte - b'0'));
                digits += 1;
                fraction_digits += 1;
                self.at += 1;
            }
            if fraction_digits == 0 {
                return None;
            }
        }
        let mut exponent = 0i32;
        let has_exponent = matches!(self.bytes.get(self.at), Some(b'e' | b'E'));
        if has_exponent {
            self.at += 1;
            let negative_exponent = self.bytes.get(self.at) == Some(&b'-');
            if matches!(self.bytes.get(self.at), Some(b'-' | b'+')) {
                self.at += 1;
            }
            let exponent_start = self.at;
            while let Some(&byte @ b'0'..=b'9') = self.bytes.get(self.at) {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i32::from(byte - b'0'));
                self.at += 1;
            }
            if self.at == exponent_start {
                return None;
            }
            if negative_exponent {
                exponent = -exponent;
            }
        }
        // Past 19 digits the mantissa may have wrapped; negative zero is
        // left to sonic-rs, whose sign for it is its own.
        if digits > 19 || (negative && mantissa == 0) {
            return None;
        }
        if fraction_digits == 0 && !has_exponent {
            return if !negative {
                Some(Scalar::Unsigned(mantissa))
            } else {
                i64::try_from(mantissa)
                    .ok()
                    .map(|magnitude| Scalar::Signed(-magnitude))
            };
        }
        let float = exact_float(mantissa, exponent - fraction_digits)?;
        Some(Scalar::Float(if negative { -float } else { float }))
    }

    /// Skips a value that is not going into a column (unmapped, dropped or
    /// outranked): a scalar or an array of numbers. Returns its raw text.
    fn unmapped_value(&mut self) -> Option<(&'t str, Value<'t>)> {
        let first = self.peek()?;
        let start = self.at;
        let value = match first {
            b'"' => Value::Text(self.string()?),
            b'n' => {
                self.literal(b"null")?;
                Value::Null
            }
            b't' => {
                self.literal(b"true")?;
                Value::Other
            }
            b'f' => {
                self.literal(b"false")?;
                Value::Other
            }
            b'-' | b'0'..=b'9' => {
                self.number()?;
                Value::Other
            }
            b'[' => {
                self.numbers(|_, _| {})?;
                Value::Other
            }
            _ => return None,
        };
        Some((self.text.get(start..self.at)?, value))
    }
}

/// `mantissa × 10^exponent` when both factors are exact doubles, so that
/// one multiplication or division rounds correctly (Clinger, 1990).
#[inline]
fn exact_float(mantissa: u64, exponent: i32) -> Option<f64> {
    const POWERS_OF_TEN: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    if mantissa > 1 << 53 {
        return None;
    }
    let power = *POWERS_OF_TEN.get(exponent.unsigned_abs() as usize)?;
    let mantissa = mantissa as f64;
    Some(if exponent >= 0 {
        mantissa * power
    } else {
        mantissa / power
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_number(text: &str) -> Option<Scalar<'_>> {
        let mut scanner = Scanner {
            text,
            bytes: text.as_bytes(),
            at: 0,
        };
        let number = scanner.number()?;
        (scanner.at == text.len()).then_some(number)
    }

    #[test]
    fn numbers_are_exact_or_refused() {
        assert_eq!(scan_number("200"), Some(Scalar::Unsigned(200)));
        assert_eq!(scan_number("-17"), Some(Scalar::Signed(-17)));
        assert_eq!(scan_number("0.0298"), Some(Scalar::Float(0.0298)));
        assert_eq!(scan_number("-2.5e3"), Some(Scalar::Float(-2500.0)));
        assert_eq!(scan_number("1E-2"), Some(Scalar::Float(0.01)));
        assert_eq!(
            scan_number("9223372036854775807"),
            Some(Scalar::Unsigned(i64::MAX as u64))
        );
        for text in [
            "01",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "-0",
            "-0.0",
            "1e400",
            "0.1e-30",
            "18446744073709551615",
            "9007199254740993.5",
        ] {
            assert_eq!(scan_number(text), None, "{text}");
        }
        // Agreement with the standard library on what is accepted.
        for text in [
            "3.14159",
            "2099.9",
            "0.7569",
            "1e22",
            "4.35e-7",
            "123456789.123456",
        ] {
            let expected: f64 = text.parse().unwrap();
            assert_eq!(scan_number(text), Some(Scalar::Float(expected)), "{text}");
        }
    }

    #[test]
    fn word_searches_find_the_first_stop() {
        let word = u64::from_le_bytes(*b"ab\"c\\d\x01e");
        assert_eq!(bytes_equal(word, b'"').trailing_zeros() / 8, 2);
        assert_eq!(bytes_equal(word, b'\\').trailing_zeros() / 8, 4);
        assert_eq!(bytes_below(word, 0x20).trailing_zeros() / 8, 6);
        let plain = u64::from_le_bytes(*b"h\xc3\xa9llo w");
        assert_eq!(bytes_equal(plain, b'"') | bytes_below(plain, 0x20), 0);
    }
}
