//! Walking one JSON line against the mapping trie.
//!
//! The walk drives sonic-rs's serde deserializer with hand-written
//! [`DeserializeSeed`]s instead of building a DOM:
//!
//! * object keys arrive as `&str` borrowed from the line (escaped keys are
//!   unescaped into the record's arena), and are looked up in the trie;
//! * a value under a key with one typed rule is parsed straight into what the
//!   rule needs (a number, a string slice, a list of floats): no second pass;
//! * unmapped values are captured as [`LazyValue`]s, i.e. validated and
//!   sliced, never materialised, and stored as attribute text;
//! * nested objects are only entered when a mapped path goes through them.
//!
//! On the typical 500-byte event this is about twice as fast as sonic-rs's
//! `to_object_iter` (which deep lines still use, see [`walk_line`]), because
//! values are parsed once instead of skipped and then parsed again. Conversion failures on columns are recorded in the record
//! as *pending* (a higher-priority key may still fill the column); failures
//! that refuse the line are stashed in `Record::failure`, since a serde error
//! cannot carry them, and the walk is stopped with a placeholder error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::dead_letter::DeadLetterKind;
use crate::mapping::{Conversion, Edge, HotRule, Mapping, Rule, TrieNode};
use crate::record::{describe, list_element_error, JsonKind, LineError, Record, Scalar, SlotValue};

/// Walks a whole line (already checked: UTF-8, nesting, starts with `{`).
///
/// `shallow` lines (at most [`SHALLOW_OPENINGS`] brackets) take the serde
/// path. Deeper ones take a slower path built on sonic-rs's object and array
/// iterators: the serde path instantiates sonic-rs's recursive value skipper
/// in this crate, and in unoptimised (debug) builds each nesting level then
/// costs tens of kilobytes of stack; the iterators are compiled inside
/// sonic-rs and stay small.
pub(crate) fn walk_line(
    mapping: &Mapping,
    record: &mut Record,
    text: &str,
    shallow: bool,
) -> Result<(), LineError> {
    if !shallow {
        let object_start = text.bytes().position(|byte| byte == b'{').unwrap_or(0);
        let last_value_end =
            walk_object_iteratively(mapping, record, 0, text, 0, mapping.keep_unmapped)?;
        return check_object_end(text, last_value_end.unwrap_or(object_start + 1));
    }
    let mut deserializer = sonic_rs::Deserializer::from_str(text);
    let seed = ObjectSeed {
        mapping,
        record: &mut *record,
        node: 0,
        report_unmapped: mapping.keep_unmapped,
    };
    let outcome = seed
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end());
    match outcome {
        Ok(()) => Ok(()),
        Err(error) => Err(record
            .failure
            .take()
            .unwrap_or_else(|| crate::decode::json_error(&error, 0, text))),
    }
}

/// Lines with at most this many `{` and `[` take the serde path.
pub(crate) const SHALLOW_OPENINGS: usize = 16;

/// The iterator-based walk for deep lines. Returns where the last value
/// ends, relative to `text`, or `None` for an empty object.
fn walk_object_iteratively(
    mapping: &Mapping,
    record: &mut Record,
    node_index: usize,
    text: &str,
    base: usize,
    report_unmapped: bool,
) -> Result<Option<usize>, LineError> {
    let Some(node) = mapping.nodes.get(node_index) else {
        return Ok(None);
    };
    let text_start = text.as_ptr() as usize;
    let mut last_value_end = None;
    for entry in sonic_rs::to_object_iter(text) {
        let (key, value) = entry.map_err(|error| crate::decode::json_error(&error, base, text))?;
        let raw = value.as_raw_str();
        // Values borrow from `text` (they are never unescaped copies here:
        // the iterator slices raw JSON).
        let value_offset = (raw.as_ptr() as usize).wrapping_sub(text_start);
        if value_offset <= text.len() {
            last_value_end = Some(value_offset + raw.len());
        }
        let key = match key {
            std::borrow::Cow::Borrowed(text) => Key::Borrowed(text),
            std::borrow::Cow::Owned(text) => match record.push_text(&text) {
                SlotValue::Text { start, end } => Key::Arena(start, end),
                _ => continue,
            },
        };
        let key_text = match key {
            Key::Borrowed(text) => text,
            Key::Arena(start, end) => record.text_at(start, end),
        };
        let Some(edge) = node.lookup(key_text).and_then(|slot| node.edge(slot)) else {
            if report_unmapped {
                push_unmapped(record, &node.unmapped_prefix, key, &value);
            }
            continue;
        };
        if edge.dropped {
            continue;
        }
        let place = Place {
            node,
            report_unmapped,
            iterative_base: Some(base + value_offset),
        };
        walk_general_edge(mapping, record, place, edge, key, &value)?;
    }
    Ok(last_value_end)
}

/// After the last value only `}` and whitespace may follow; sonic-rs's
/// object iterator stops at the `}` without looking further.
fn check_object_end(text: &str, after_last_value: usize) -> Result<(), LineError> {
    let rest = text.as_bytes().get(after_last_value..).unwrap_or_default();
    let Some(close) = rest.iter().position(|byte| !byte.is_ascii_whitespace()) else {
        return Err(LineError::new(
            DeadLetterKind::InvalidJson,
            "invalid JSON: unterminated object",
        ));
    };
    let trailing = &rest[close + 1..];
    match trailing.iter().position(|byte| !byte.is_ascii_whitespace()) {
        None => Ok(()),
        Some(found) => {
            let column = after_last_value + close + 1 + found + 1;
            Err(LineError::new(
                DeadLetterKind::InvalidJson,
                format!(
                    "invalid JSON at byte column {column}: JSON has non-whitespace trailing characters after the value{}",
                    crate::decode::near(text.as_bytes(), column - 1)
                ),
            ))
        }
    }
}

/// Converts one already-sliced value through `rule` (used for values that
/// more than one rule reads, on deep lines, and for defaults and lookup
/// values). Arrays and objects go through sonic-rs's iterators, scalars
/// through the typed seed: neither recurses in this crate.
pub(crate) fn convert_lazy(
    record: &mut Record,
    rule: &Rule,
    value: &LazyValue<'_>,
) -> Result<SlotValue, LineError> {
    if let Some(outcome) = record.convert_raw(rule, value) {
        return outcome;
    }
    let raw = value.as_raw_str();
    match JsonKind::of(raw) {
        JsonKind::Null => Ok(SlotValue::Absent),
        JsonKind::Array if rule.conversion == Conversion::FloatList => {
            let start = record.list_start();
            let mut failure = None;
            for (position, element) in sonic_rs::to_array_iter(raw).enumerate() {
                let outcome = match element {
                    Ok(element) => push_lazy_element(record, rule, position, &element),
                    Err(_) => Err(list_element_error(rule, position, "invalid JSON")),
                };
                if let Err(error) = outcome {
                    failure = Some(error);
                    break;
                }
            }
            let list = record.list_end(start, failure.is_some());
            match failure {
                Some(error) => Err(error),
                None => Ok(list),
            }
        }
        JsonKind::Object if rule.conversion == Conversion::AttributesObject => {
            for entry in sonic_rs::to_object_iter(raw) {
                let Ok((key, inner)) = entry else {
                    return Err(wrong_container(rule, rule.conversion, "invalid JSON"));
                };
                record.push_unmapped("", &key, &inner);
            }
            Ok(SlotValue::Absent)
        }
        JsonKind::Array => Err(wrong_container(rule, rule.conversion, "an array")),
        JsonKind::Object => Err(wrong_container(rule, rule.conversion, "an object")),
        _ => {
            let mut deserializer = sonic_rs::Deserializer::from_str(raw);
            let seed = ValueSeed::<ReturnOutcome>::new(rule, rule.hot(), &mut *record);
            match seed.deserialize(&mut deserializer) {
                Ok(outcome) => outcome,
                // Syntax was checked as the walk passed; a number beyond
                // f64 is found only now, as the serde walk finds it.
                Err(error) => Err(crate::decode::field_json_error(&error, &rule.source, raw)),
            }
        }
    }
}

fn push_lazy_element(
    record: &mut Record,
    rule: &Rule,
    position: usize,
    element: &LazyValue<'_>,
) -> Result<(), LineError> {
    let raw = element.as_raw_str();
    match JsonKind::of(raw) {
        JsonKind::Number => record.push_list_element(
            rule,
            position,
            Scalar::Float(raw.parse().unwrap_or(f64::NAN)),
        ),
        JsonKind::String => record.push_list_element(
            rule,
            position,
            Scalar::Str(element.as_str().unwrap_or_default()),
        ),
        kind => Err(list_element_error(rule, position, &describe(raw, kind))),
    }
}

/// Stops the walk with `error` as the reason.
fn abort<E: de::Error>(record: &mut Record, error: LineError) -> E {
    record.failure = Some(error);
    E::custom("line refused")
}

/// An object key: borrowed from the line, or unescaped into the arena.
#[derive(Clone, Copy)]
enum Key<'de> {
    Borrowed(&'de str),
    Arena(u32, u32),
}

struct KeySeed<'r> {
    record: &'r mut Record,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Key<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(key))
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
        match self.record.push_text(key) {
            SlotValue::Text { start, end } => Ok(Key::Arena(start, end)),
            _ => Err(E::custom("key text")),
        }
    }
}

/// Walks an object against trie node `node`.
struct ObjectSeed<'a> {
    mapping: &'a Mapping,
    record: &'a mut Record,
    node: usize,
    report_unmapped: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ObjectSeed {
            mapping,
            record,
            node,
            report_unmapped,
        } = self;
        let Some(node) = mapping.nodes.get(node) else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key_seed(KeySeed {
            record: &mut *record,
        })? {
            let key_text = match key {
                Key::Borrowed(text) => text,
                Key::Arena(start, end) => record.text_at(start, end),
            };
            let Some(slot) = node.lookup(key_text) else {
                if report_unmapped {
                    let value: LazyValue<'de> = map.next_value()?;
                    push_unmapped(record, &node.unmapped_prefix, key, &value);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
                continue;
            };
            // The common case: one rule, nothing nested below. Everything
            // needed is in the key slot; parse the value straight into what
            // the rule needs.
            if let Some(rule) = mapping.rules.get(slot.fast_rule as usize) {
                let hot = slot.hot;
                if record.outranked_hot(hot) {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
                let settled = if needs_raw_text(hot.conversion) {
                    let value: LazyValue<'de> = map.next_value()?;
                    let outcome = record
                        .convert_raw(rule, &value)
                        .unwrap_or(Ok(SlotValue::Absent));
                    record.settle_hot(rule, hot, outcome)
                } else {
                    map.next_value_seed(ValueSeed::<SettleOutcome>::new(rule, hot, &mut *record))?
                };
                if let Err(error) = settled {
                    return Err(abort(record, error));
                }
                continue;
            }
            let Some(edge) = node.edge(slot) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if edge.dropped {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value: LazyValue<'de> = map.next_value()?;
            let place = Place {
                node,
                report_unmapped,
                iterative_base: None,
            };
            if let Err(error) = walk_general_edge(mapping, record, place, edge, key, &value) {
                return Err(abort(record, error));
            }
        }
        Ok(())
    }
}

/// Conversions that must see the value as written.
fn needs_raw_text(conversion: Conversion) -> bool {
    matches!(conversion, Conversion::RawText | Conversion::Hash)
}

fn push_unmapped(record: &mut Record, prefix: &str, key: Key<'_>, value: &LazyValue<'_>) {
    match key {
        Key::Borrowed(text) => record.push_unmapped(prefix, text, value),
        Key::Arena(start, end) if prefix.is_empty() => record.push_unmapped_at((start, end), value),
        Key::Arena(start, end) => {
            let key_range = record.push_prefixed_copy(prefix, start, end);
            record.push_unmapped_at(key_range, value);
        }
    }
}

/// Where in the walk a key was met.
#[derive(Clone, Copy)]
struct Place<'a> {
    node: &'a TrieNode,
    report_unmapped: bool,
    /// Offset of the value in the line when walking with iterators (deep
    /// lines); `None` on the serde path.
    iterative_base: Option<usize>,
}

/// Several rules, or rules and a nested node, on one key: the value is
/// sliced once and read by each.
fn walk_general_edge(
    mapping: &Mapping,
    record: &mut Record,
    place: Place<'_>,
    edge: &Edge,
    key: Key<'_>,
    value: &LazyValue<'_>,
) -> Result<(), LineError> {
    let Place {
        node,
        report_unmapped,
        iterative_base,
    } = place;
    let raw = value.as_raw_str();
    let kind = JsonKind::of(raw);
    if kind == JsonKind::Null {
        return Ok(());
    }
    for &rule_index in &edge.rules {
        let Some(rule) = mapping.rules.get(rule_index as usize) else {
            continue;
        };
        if record.outranked(rule) {
            continue;
        }
        let outcome = convert_lazy(record, rule, value);
        record.settle(rule, outcome)?;
    }
    let Some(child) = edge.child else {
        return Ok(());
    };
    match kind {
        JsonKind::Object if iterative_base.is_some() => {
            let base = iterative_base.unwrap_or_default();
            let report = report_unmapped && edge.rules.is_empty();
            walk_object_iteratively(mapping, record, child as usize, raw, base, report)?;
            Ok(())
        }
        JsonKind::Object => {
            let mut deserializer = sonic_rs::Deserializer::from_str(raw);
            let seed = ObjectSeed {
                mapping,
                record: &mut *record,
                node: child as usize,
                report_unmapped: report_unmapped && edge.rules.is_empty(),
            };
            if let Err(error) = seed.deserialize(&mut deserializer) {
                if let Some(failure) = record.failure.take() {
                    return Err(failure);
                }
                // Syntax was checked as the walk passed; a number beyond
                // f64 is found only now, as the iterative walk finds it.
                let field = match key {
                    Key::Borrowed(text) => text.to_string(),
                    Key::Arena(start, end) => record.text_at(start, end).to_string(),
                };
                return Err(crate::decode::field_json_error(&error, &field, raw));
            }
            Ok(())
        }
        _ if edge.expect_object => {
            let key_text = match key {
                Key::Borrowed(text) => text.to_string(),
                Key::Arena(start, end) => record.text_at(start, end).to_string(),
            };
            Err(LineError::new(
                DeadLetterKind::WrongType,
                format!(
                    "field {key_text}: expected an object, got {}",
                    describe(raw, kind)
                ),
            ))
        }
        _ if edge.rules.is_empty() && report_unmapped => {
            push_unmapped(record, &node.unmapped_prefix, key, value);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// What a [`ValueSeed`] does with a conversion outcome.
trait Outcome {
    type Value;
    fn finish(
        record: &mut Record,
        rule: &Rule,
        hot: HotRule,
        outcome: Result<SlotValue, LineError>,
    ) -> Self::Value;

    fn scalar(record: &mut Record, rule: &Rule, hot: HotRule, value: Scalar<'_>) -> Self::Value {
        let converted = record.convert_scalar_as(hot.conversion, rule, value);
        Self::finish(record, rule, hot, converted)
    }
}

/// Hands the converted value back (for defaults, lookups, multi-rule keys).
struct ReturnOutcome;

impl Outcome for ReturnOutcome {
    type Value = Result<SlotValue, LineError>;

    #[inline]
    fn finish(
        _: &mut Record,
        _: &Rule,
        _: HotRule,
        outcome: Result<SlotValue, LineError>,
    ) -> Self::Value {
        outcome
    }
}

/// Stores the converted value in the record at once. On the hot path this
/// keeps the 16-byte outcome in registers: handing it back through serde's
/// `Result` nesting made the compiler spill it and reload it with
/// mismatched widths, a store-forwarding stall on every field.
struct SettleOutcome;

impl Outcome for SettleOutcome {
    type Value = Result<(), LineError>;

    #[inline]
    fn finish(
        record: &mut Record,
        rule: &Rule,
        hot: HotRule,
        outcome: Result<SlotValue, LineError>,
    ) -> Self::Value {
        record.settle_hot(rule, hot, outcome)
    }

    #[inline]
    fn scalar(record: &mut Record, rule: &Rule, hot: HotRule, value: Scalar<'_>) -> Self::Value {
        record.settle_scalar(rule, hot, value)
    }
}

/// Parses one value straight into what `rule` needs. A wrong type does not
/// stop the parser (the value is consumed either way): only the caller
/// decides whether the line is refused.
struct ValueSeed<'a, O> {
    /// Only read to name the field in an error, or for an attribute target.
    rule: &'a Rule,
    hot: HotRule,
    record: &'a mut Record,
    outcome: std::marker::PhantomData<O>,
}

impl<'a, O> ValueSeed<'a, O> {
    fn new(rule: &'a Rule, hot: HotRule, record: &'a mut Record) -> Self {
        ValueSeed {
            rule,
            hot,
            record,
            outcome: std::marker::PhantomData,
        }
    }

    #[inline]
    fn scalar(self, value: Scalar<'_>) -> O::Value
    where
        O: Outcome,
    {
        O::scalar(self.record, self.rule, self.hot, value)
    }
}

impl<'de, O: Outcome> DeserializeSeed<'de> for ValueSeed<'_, O> {
    type Value = O::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, O: Outcome> Visitor<'de> for ValueSeed<'_, O> {
    type Value = O::Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(O::finish(
            self.record,
            self.rule,
            self.hot,
            Ok(SlotValue::Absent),
        ))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(self.scalar(Scalar::Bool(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(self.scalar(Scalar::Unsigned(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(self.scalar(Scalar::Signed(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(self.scalar(Scalar::Float(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(self.scalar(Scalar::Str(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
        let ValueSeed {
            rule, hot, record, ..
        } = self;
        if hot.conversion != Conversion::FloatList {
            while sequence.next_element::<IgnoredAny>()?.is_some() {}
            let error = wrong_container(rule, hot.conversion, "an array");
            return Ok(O::finish(record, rule, hot, Err(error)));
        }
        let start = record.list_start();
        let mut failure = None;
        let mut position = 0usize;
        loop {
            let seed = ListElementSeed {
                record: &mut *record,
                rule,
                position,
            };
            match sequence.next_element_seed(seed)? {
                None => break,
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    failure = Some(error);
                    // Consume the rest of the array; the line is refused.
                    while sequence.next_element::<IgnoredAny>()?.is_some() {}
                    break;
                }
            }
            position += 1;
        }
        let list = record.list_end(start, failure.is_some());
        let outcome = match failure {
            Some(error) => Err(error),
            None => Ok(list),
        };
        Ok(O::finish(record, rule, hot, outcome))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ValueSeed {
            rule, hot, record, ..
        } = self;
        if hot.conversion != Conversion::AttributesObject {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            let error = wrong_container(rule, hot.conversion, "an object");
            return Ok(O::finish(record, rule, hot, Err(error)));
        }
        while let Some(key) = map.next_key_seed(KeySeed {
            record: &mut *record,
        })? {
            let value: LazyValue<'de> = map.next_value()?;
            push_unmapped(record, "", key, &value);
        }
        Ok(O::finish(record, rule, hot, Ok(SlotValue::Absent)))
    }
}

fn wrong_container(rule: &Rule, conversion: Conversion, got: &str) -> LineError {
    let expected = match conversion {
        Conversion::Text | Conversion::RawText | Conversion::Hash => "a string",
        Conversion::Status => "a status (ok, success, error, failed, failure or an HTTP code)",
        Conversion::Integer(_) => "an integer",
        Conversion::Float => "a number",
        Conversion::Boolean => "a boolean",
        Conversion::Timestamp(_) => {
            return LineError::new(
                DeadLetterKind::InvalidTimestamp,
                format!(
                    "field {}: unusable timestamp, expected RFC 3339 or an epoch number, got {got}",
                    rule.source
                ),
            )
        }
        Conversion::FloatList => "an array of numbers",
        Conversion::AttributesObject => "an object",
    };
    LineError::new(
        DeadLetterKind::WrongType,
        format!("field {}: expected {expected}, got {got}", rule.source),
    )
}

/// Appends one element of a float list straight to the record. The
/// outcome is a `Result<(), LineError>`, one word: elements are hot (a
/// probability vector per event) and wider values returned through serde
/// are spilled to memory.
struct ListElementSeed<'a> {
    record: &'a mut Record,
    rule: &'a Rule,
    position: usize,
}

impl<'de> DeserializeSeed<'de> for ListElementSeed<'_> {
    type Value = Result<(), LineError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListElementSeed<'_> {
    type Value = Result<(), LineError>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a number")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(list_element_error(self.rule, self.position, "null")))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(self
            .record
            .push_list_element(self.rule, self.position, Scalar::Bool(value)))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        Ok(self
            .record
            .push_list_element(self.rule, self.position, Scalar::Unsigned(value)))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        Ok(self
            .record
            .push_list_element(self.rule, self.position, Scalar::Signed(value)))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        Ok(self
            .record
            .push_list_element(self.rule, self.position, Scalar::Float(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(self
            .record
            .push_list_element(self.rule, self.position, Scalar::Str(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Self::Value, A::Error> {
        while sequence.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(list_element_error(
            self.rule,
            self.position,
            "an array",
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(list_element_error(
            self.rule,
            self.position,
            "an object",
        )))
    }
}
