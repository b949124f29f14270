//! The per-line scratch record.
//!
//! A line is decoded into a [`Record`] first and only copied into the column
//! sinks once the whole line is known to be good, so that a bad line never
//! leaves half a row behind. The record is reused for every line: text goes
//! into one arena `String`, list items into one `Vec<f64>`, and slots hold
//! ranges into them, so the common path allocates nothing once the buffers
//! have grown to the size of a typical line.

use std::fmt::Write as _;

use ahash::AHashMap;
use sha2::{Digest, Sha256};
use sonic_rs::{JsonValueTrait, LazyValue};

use crate::coerce::{
    normalise_status, parse_finite_float, parse_integer_in_range, timestamp_from_float,
    timestamp_from_integer, timestamp_from_text, IntegerParse, TimestampProblem, TimestampUnit,
    TWO_TO_THE_63,
};
use crate::dead_letter::DeadLetterKind;
use crate::mapping::{Conversion, HotRule, Rule, Target};

/// Attribute lists longer than this get a hash index for duplicate checks,
/// so that a line with thousands of keys stays linear.
const ATTRIBUTE_LINEAR_SCAN_LIMIT: usize = 16;
/// Quoted values in dead-letter reasons are cut to this many bytes.
const QUOTED_VALUE_LIMIT: usize = 64;

/// Why a line was refused. Boxed so that it stays one word: conversion
/// results (`Result<SlotValue, LineError>`) then fit in two registers, which
/// matters on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineError(Box<LineErrorDetail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct LineErrorDetail {
    kind: DeadLetterKind,
    message: String,
    /// The event's client and model, when the line was read that far.
    keys: (Option<String>, Option<String>),
}

impl LineError {
    pub(crate) fn new(kind: DeadLetterKind, message: impl Into<String>) -> LineError {
        LineError(Box::new(LineErrorDetail {
            kind,
            message: message.into(),
            keys: (None, None),
        }))
    }

    /// The same error, naming the event's client and model.
    pub(crate) fn with_keys(
        mut self,
        client_id: Option<&str>,
        model_id: Option<&str>,
    ) -> LineError {
        self.0.keys = (client_id.map(str::to_string), model_id.map(str::to_string));
        self
    }

    /// The event's client and model, if known.
    pub(crate) fn take_keys(&mut self) -> (Option<String>, Option<String>) {
        std::mem::take(&mut self.0.keys)
    }

    pub(crate) fn kind(&self) -> DeadLetterKind {
        self.0.kind
    }

    pub(crate) fn into_message(self) -> String {
        self.0.message
    }
}

/// Text values that need no storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StaticText {
    True,
    False,
    Ok,
    Error,
}

impl StaticText {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StaticText::True => "true",
            StaticText::False => "false",
            StaticText::Ok => "ok",
            StaticText::Error => "error",
        }
    }

    pub(crate) fn boolean(truth: bool) -> StaticText {
        if truth {
            StaticText::True
        } else {
            StaticText::False
        }
    }

    /// `ok` or `error` as returned by the status helpers.
    pub(crate) fn status(text: &str) -> StaticText {
        if text == "ok" {
            StaticText::Ok
        } else {
            StaticText::Error
        }
    }
}

/// A value held by the record; text and lists point into its arenas.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) enum SlotValue {
    #[default]
    Absent,
    Text {
        start: u32,
        end: u32,
    },
    Static(StaticText),
    Integer(i64),
    Float(f64),
    Timestamp(i64),
    FloatList {
        start: u32,
        end: u32,
    },
}

impl SlotValue {
    pub(crate) fn is_present(&self) -> bool {
        !matches!(self, SlotValue::Absent)
    }
}

/// A value that outlives a line: defaults and lookup-table values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnedValue {
    Text(Box<str>),
    Static(StaticText),
    Integer(i64),
    Float(f64),
    Timestamp(i64),
    FloatList(Box<[f64]>),
}

/// One canonical column of the record. `Copy`, so that clearing the record
/// between lines is a plain fill.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    pub(crate) value: SlotValue,
    pub(crate) priority: u32,
    /// The winning source failed to convert; its error is in
    /// `Record::pending_errors`. Only fatal if nothing with a higher priority
    /// fills the column: `{"timestamp": 1, "time": "noon"}` is fine whatever
    /// the key order.
    pub(crate) pending: bool,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct AttributeEntry {
    pub(crate) key: (u32, u32),
    pub(crate) value: Option<(u32, u32)>,
}

/// The scratch record of one line.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) slots: Vec<Slot>,
    /// Enrichment columns that are not canonical.
    pub(crate) extra: Vec<SlotValue>,
    pub(crate) text: String,
    /// List values at full precision: derived columns are computed from
    /// them, and they are narrowed to f32 only when stored.
    pub(crate) floats: Vec<f64>,
    pub(crate) attributes: Vec<AttributeEntry>,
    /// Conversion failures of pending slots, by column (the last one of a
    /// column is the one that counts).
    pub(crate) pending_errors: Vec<(usize, LineError)>,
    /// Length of the arena prefix that survives `clear`: default values,
    /// stored once per decoder instead of once per line.
    persistent_text: usize,
    persistent_floats: usize,
    /// Why the walk over the line stopped, when the reason is ours rather
    /// than a JSON syntax error (serde errors cannot carry it).
    pub(crate) failure: Option<LineError>,
    attribute_index: AHashMap<u64, u32>,
    attribute_hasher: ahash::RandomState,
}

impl Record {
    pub(crate) fn new(column_count: usize, extra_count: usize) -> Record {
        Record {
            slots: vec![Slot::default(); column_count],
            extra: vec![SlotValue::Absent; extra_count],
            text: String::with_capacity(1024),
            floats: Vec::with_capacity(64),
            attributes: Vec::with_capacity(32),
            pending_errors: Vec::new(),
            persistent_text: 0,
            persistent_floats: 0,
            failure: None,
            attribute_index: AHashMap::default(),
            attribute_hasher: ahash::RandomState::with_seeds(1, 2, 3, 4),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots.fill(Slot::default());
        self.pending_errors.clear();
        self.extra.fill(SlotValue::Absent);
        self.text.truncate(self.persistent_text);
        self.floats.truncate(self.persistent_floats);
        self.attributes.clear();
        self.failure = None;
        self.attribute_index.clear();
    }

    pub(crate) fn text_at(&self, start: u32, end: u32) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    pub(crate) fn floats_at(&self, start: u32, end: u32) -> &[f64] {
        self.floats
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// The text of a text-like value (`None` for numbers and lists).
    #[inline]
    pub(crate) fn as_text(&self, value: SlotValue) -> Option<&str> {
        match value {
            SlotValue::Text { start, end } => Some(self.text_at(start, end)),
            SlotValue::Static(text) => Some(text.as_str()),
            _ => None,
        }
    }

    pub(crate) fn push_text(&mut self, text: &str) -> SlotValue {
        let start = self.text.len();
        self.text.push_str(text);
        SlotValue::Text {
            start: arena_index(start),
            end: arena_index(self.text.len()),
        }
    }

    /// True when `rule` cannot change the record: its column already holds
    /// a value (or a failure) from a higher-priority source. The caller then
    /// skips the value without converting it.
    /// The error of the first column whose winning source failed.
    pub(crate) fn take_pending_error(&mut self) -> Option<LineError> {
        let column = self.slots.iter().position(|slot| slot.pending)?;
        let position = self
            .pending_errors
            .iter()
            .rposition(|(failed, _)| *failed == column)?;
        Some(self.pending_errors.swap_remove(position).1)
    }

    pub(crate) fn outranked(&self, rule: &Rule) -> bool {
        self.outranked_hot(rule.hot())
    }

    /// `outranked`, from the copy of the rule kept in the key table.
    #[inline]
    pub(crate) fn outranked_hot(&self, hot: HotRule) -> bool {
        match self.slots.get(hot.column as usize) {
            Some(slot) => (slot.value.is_present() || slot.pending) && slot.priority > hot.priority,
            None => false,
        }
    }

    /// Stores the outcome of converting a value with `rule`.
    ///
    /// A failure on a column is kept as pending: a later, higher-priority
    /// source may still fill the column. A failure on an attribute target
    /// (a typed user rule) refuses the line at once.
    pub(crate) fn settle(
        &mut self,
        rule: &Rule,
        outcome: Result<SlotValue, LineError>,
    ) -> Result<(), LineError> {
        self.settle_hot(rule, rule.hot(), outcome)
    }

    /// Converts a scalar and settles it, in one function so that the
    /// converted value never leaves registers (passed between functions it
    /// went through memory and stalled on store forwarding).
    #[inline(never)]
    pub(crate) fn settle_scalar(
        &mut self,
        rule: &Rule,
        hot: HotRule,
        value: Scalar<'_>,
    ) -> Result<(), LineError> {
        let outcome = self.convert_scalar_as(hot.conversion, rule, value);
        self.settle_hot(rule, hot, outcome)
    }

    /// `settle`, reading only `hot` unless the target is an attribute.
    #[inline(always)]
    pub(crate) fn settle_hot(
        &mut self,
        rule: &Rule,
        hot: HotRule,
        outcome: Result<SlotValue, LineError>,
    ) -> Result<(), LineError> {
        let column = hot.column as usize;
        if let Some(slot) = self.slots.get_mut(column) {
            match outcome {
                Ok(SlotValue::Absent) => {}
                Ok(converted) => {
                    slot.value = converted;
                    slot.priority = hot.priority;
                    slot.pending = false;
                }
                Err(error) => {
                    slot.value = SlotValue::Absent;
                    slot.priority = hot.priority;
                    slot.pending = true;
                    self.pending_errors.push((column, error));
                }
            }
            return Ok(());
        }
        let converted = outcome?;
        if let (true, Target::Attribute(name)) = (converted.is_present(), &rule.target) {
            let key = self.push_text(name);
            let rendered = self.render_in_arena(converted);
            self.push_attribute(key, Some(rendered));
        }
        Ok(())
    }

    /// Fills a column with an owned value (default, lookup) if it is empty.
    pub(crate) fn fill_column_if_absent(&mut self, column: usize, value: &OwnedValue) {
        if self.slots[column].value.is_present() || self.slots[column].pending {
            return;
        }
        let value = self.store_owned(value);
        self.slots[column].value = value;
    }

    /// Stores values that every line uses (defaults) where `clear` keeps
    /// them, and returns them as slot values.
    pub(crate) fn store_persistent(&mut self, values: &[Option<OwnedValue>]) -> Vec<SlotValue> {
        self.clear();
        let stored = values
            .iter()
            .map(|value| {
                value
                    .as_ref()
                    .map_or(SlotValue::Absent, |value| self.store_owned(value))
            })
            .collect();
        self.persistent_text = self.text.len();
        self.persistent_floats = self.floats.len();
        stored
    }

    /// Fills an empty column with a value made by `store_persistent`.
    #[inline]
    pub(crate) fn fill_column_with_stored(&mut self, column: usize, value: SlotValue) {
        if let Some(slot) = self.slots.get_mut(column) {
            if !slot.value.is_present() && !slot.pending {
                slot.value = value;
            }
        }
    }

    pub(crate) fn store_owned(&mut self, value: &OwnedValue) -> SlotValue {
        match value {
            OwnedValue::Text(text) => self.push_text(text),
            OwnedValue::Static(text) => SlotValue::Static(*text),
            OwnedValue::Integer(value) => SlotValue::Integer(*value),
            OwnedValue::Float(value) => SlotValue::Float(*value),
            OwnedValue::Timestamp(value) => SlotValue::Timestamp(*value),
            OwnedValue::FloatList(values) => {
                let start = self.floats.len();
                self.floats.extend_from_slice(values);
                SlotValue::FloatList {
                    start: arena_index(start),
                    end: arena_index(self.floats.len()),
                }
            }
        }
    }

    pub(crate) fn to_owned_value(&self, value: SlotValue) -> Option<OwnedValue> {
        Some(match value {
            SlotValue::Absent => return None,
            SlotValue::Text { start, end } => OwnedValue::Text(self.text_at(start, end).into()),
            SlotValue::Static(text) => OwnedValue::Static(text),
            SlotValue::Integer(value) => OwnedValue::Integer(value),
            SlotValue::Float(value) => OwnedValue::Float(value),
            SlotValue::Timestamp(value) => OwnedValue::Timestamp(value),
            SlotValue::FloatList { start, end } => {
                OwnedValue::FloatList(self.floats_at(start, end).into())
            }
        })
    }

    /// Converts JSON text through `rule` into an owned value; used at load
    /// time for defaults and lookup-table values.
    pub(crate) fn convert_json_text(
        &mut self,
        rule: &Rule,
        json: &str,
    ) -> Result<OwnedValue, String> {
        self.clear();
        if rule.conversion == Conversion::AttributesObject {
            return Err("the attributes column takes no default or lookup value".into());
        }
        let value: LazyValue<'_> =
            sonic_rs::from_str(json).map_err(|error| format!("invalid JSON {json}: {error}"))?;
        let converted =
            crate::walk::convert_lazy(self, rule, &value).map_err(LineError::into_message)?;
        self.to_owned_value(converted)
            .ok_or_else(|| "the value is null".to_string())
    }

    /// Renders an owned value as attribute text.
    pub(crate) fn render_owned(&mut self, value: &OwnedValue) -> String {
        self.clear();
        let stored = self.store_owned(value);
        let rendered = self.render_in_arena(stored);
        self.as_text(rendered).unwrap_or_default().to_string()
    }

    /// Conversions that need the value's raw JSON text: `RawText` (objects
    /// and arrays are kept as written) and `Hash` (non-strings are hashed as
    /// written). `None` for every other conversion.
    pub(crate) fn convert_raw(
        &mut self,
        rule: &Rule,
        value: &LazyValue<'_>,
    ) -> Option<Result<SlotValue, LineError>> {
        let raw = value.as_raw_str();
        let kind = JsonKind::of(raw);
        if kind == JsonKind::Null {
            return Some(Ok(SlotValue::Absent));
        }
        match rule.conversion {
            Conversion::RawText => Some(Ok(match kind {
                JsonKind::String => {
                    let text = value.as_str().unwrap_or_default();
                    self.push_text(text)
                }
                JsonKind::Boolean => SlotValue::Static(StaticText::boolean(raw == "true")),
                _ => self.push_text(raw),
            })),
            Conversion::Hash => {
                let digest = match kind {
                    JsonKind::String => {
                        Sha256::digest(value.as_str().unwrap_or_default().as_bytes())
                    }
                    _ => Sha256::digest(raw.as_bytes()),
                };
                let mut hex_digits = [0u8; 64];
                // 32 bytes always fit 64 hex digits.
                if hex::encode_to_slice(digest, &mut hex_digits).is_err() {
                    return Some(Err(LineError::new(
                        DeadLetterKind::Internal,
                        "sha-256 hex encoding failed",
                    )));
                }
                Some(Ok(self.push_text(
                    std::str::from_utf8(&hex_digits).unwrap_or_default(),
                )))
            }
            _ => None,
        }
    }

    /// Converts a scalar (anything but null, arrays and objects) with
    /// `conversion`; `rule` is only read to name the field in an error.
    #[inline(always)]
    pub(crate) fn convert_scalar_as(
        &mut self,
        conversion: Conversion,
        rule: &Rule,
        value: Scalar<'_>,
    ) -> Result<SlotValue, LineError> {
        let source = &rule.source;
        let wrong_type = |expected: &str| {
            LineError::new(
                DeadLetterKind::WrongType,
                format!(
                    "field {source}: expected {expected}, got {}",
                    value.describe()
                ),
            )
        };
        match conversion {
            Conversion::Text | Conversion::RawText => Ok(match value {
                Scalar::Str(text) => self.push_text(text),
                Scalar::Bool(truth) => SlotValue::Static(StaticText::boolean(truth)),
                Scalar::Unsigned(number) => self.push_display(number),
                Scalar::Signed(number) => self.push_display(number),
                Scalar::Float(number) => self.push_display(FloatText(number)),
            }),
            Conversion::Status => {
                const EXPECTED: &str =
                    "a status (ok, success, error, failed, failure or an HTTP code)";
                let status = match value {
                    Scalar::Str(text) => normalise_status(text),
                    Scalar::Unsigned(code) => u32::try_from(code).ok().and_then(status_of_code),
                    Scalar::Signed(_) | Scalar::Float(_) | Scalar::Bool(_) => None,
                };
                status
                    .map(|status| SlotValue::Static(StaticText::status(status)))
                    .ok_or_else(|| wrong_type(EXPECTED))
            }
            Conversion::Integer(width) => {
                let (minimum, maximum) = width.range();
                let parsed = match value {
                    Scalar::Unsigned(number) => match i64::try_from(number) {
                        Ok(number) => IntegerParse::Value(number),
                        Err(_) => IntegerParse::OutOfRange,
                    },
                    Scalar::Signed(number) => IntegerParse::Value(number),
                    Scalar::Float(number) if number.fract() != 0.0 => IntegerParse::NotIntegral,
                    Scalar::Float(number) if (-TWO_TO_THE_63..TWO_TO_THE_63).contains(&number) => {
                        IntegerParse::Value(number as i64)
                    }
                    Scalar::Float(_) => IntegerParse::OutOfRange,
                    Scalar::Str(text) => parse_integer_in_range(text, i64::MIN, i64::MAX),
                    Scalar::Bool(truth) => IntegerParse::Value(i64::from(truth)),
                };
                match parsed {
                    IntegerParse::Value(integer) if (minimum..=maximum).contains(&integer) => {
                        Ok(SlotValue::Integer(integer))
                    }
                    IntegerParse::Value(_) | IntegerParse::OutOfRange => Err(LineError::new(
                        DeadLetterKind::WrongType,
                        format!(
                            "field {source}: integer out of range {minimum}..={maximum}, got {}",
                            value.describe()
                        ),
                    )),
                    IntegerParse::NotANumber | IntegerParse::NotIntegral => {
                        Err(wrong_type("an integer"))
                    }
                }
            }
            Conversion::Float => match value {
                Scalar::Unsigned(number) => Ok(SlotValue::Float(number as f64)),
                Scalar::Signed(number) => Ok(SlotValue::Float(number as f64)),
                Scalar::Float(number) if number.is_finite() => Ok(SlotValue::Float(number)),
                Scalar::Float(_) => Err(LineError::new(
                    DeadLetterKind::WrongType,
                    format!(
                        "field {source}: number out of range, got {}",
                        value.describe()
                    ),
                )),
                Scalar::Str(text) => parse_finite_float(text)
                    .map(SlotValue::Float)
                    .ok_or_else(|| wrong_type("a number")),
                Scalar::Bool(truth) => Ok(SlotValue::Float(if truth { 1.0 } else { 0.0 })),
            },
            Conversion::Boolean => {
                let truth = match value {
                    Scalar::Bool(truth) => Some(truth),
                    Scalar::Str(text) if text.trim().eq_ignore_ascii_case("true") => Some(true),
                    Scalar::Str(text) if text.trim().eq_ignore_ascii_case("false") => Some(false),
                    Scalar::Unsigned(1) | Scalar::Signed(1) => Some(true),
                    Scalar::Unsigned(0) | Scalar::Signed(0) => Some(false),
                    _ => None,
                };
                truth
                    .map(|truth| SlotValue::Static(StaticText::boolean(truth)))
                    .ok_or_else(|| wrong_type("a boolean"))
            }
            Conversion::Timestamp(unit) => {
                let outcome = match value {
                    Scalar::Unsigned(_) | Scalar::Signed(_) | Scalar::Float(_)
                        if unit == TimestampUnit::Rfc3339 =>
                    {
                        Err(TimestampProblem::Unparsable)
                    }
                    Scalar::Unsigned(number) => {
                        timestamp_from_integer(i64::try_from(number).ok(), unit)
                    }
                    Scalar::Signed(number) => timestamp_from_integer(Some(number), unit),
                    Scalar::Float(number) => timestamp_from_float(number, unit),
                    Scalar::Str(text) => timestamp_from_text(text, unit),
                    Scalar::Bool(_) => Err(TimestampProblem::Unparsable),
                };
                outcome.map(SlotValue::Timestamp).map_err(|problem| {
                    let why = match problem {
                        TimestampProblem::Unparsable => match unit {
                            TimestampUnit::Rfc3339 => "expected RFC 3339 text",
                            TimestampUnit::Auto => "expected RFC 3339 or an epoch number",
                            _ => "expected an epoch number",
                        },
                        TimestampProblem::OutOfRange => "out of range (before 1970 or after 2262)",
                    };
                    LineError::new(
                        DeadLetterKind::InvalidTimestamp,
                        format!(
                            "field {source}: unusable timestamp, {why}, got {}",
                            value.describe()
                        ),
                    )
                })
            }
            Conversion::FloatList => Err(wrong_type("an array of numbers")),
            Conversion::AttributesObject => Err(wrong_type("an object")),
            Conversion::Hash => match value {
                // Reached only through the typed path, which hands hashing of
                // non-strings to `convert_raw`.
                Scalar::Str(text) => {
                    let digest = Sha256::digest(text.as_bytes());
                    let mut hex_digits = [0u8; 64];
                    if hex::encode_to_slice(digest, &mut hex_digits).is_err() {
                        return Err(LineError::new(
                            DeadLetterKind::Internal,
                            "sha-256 hex encoding failed",
                        ));
                    }
                    Ok(self.push_text(std::str::from_utf8(&hex_digits).unwrap_or_default()))
                }
                _ => Err(LineError::new(
                    DeadLetterKind::Internal,
                    "hash of a non-string reached the typed path",
                )),
            },
        }
    }

    /// Appends one list element (already known to be a number or string).
    #[inline]
    pub(crate) fn push_list_element(
        &mut self,
        rule: &Rule,
        position: usize,
        value: Scalar<'_>,
    ) -> Result<(), LineError> {
        let parsed = match value {
            Scalar::Unsigned(number) => Some(number as f64),
            Scalar::Signed(number) => Some(number as f64),
            Scalar::Float(number) => Some(number),
            Scalar::Str(text) => parse_finite_float(text),
            Scalar::Bool(_) => None,
        };
        // The value must survive the narrowing to f32 when stored.
        match parsed.filter(|float| (*float as f32).is_finite()) {
            Some(float) => {
                self.floats.push(float);
                Ok(())
            }
            None => Err(list_element_error(rule, position, &value.describe())),
        }
    }

    /// Starts a list in the float arena; returns its start.
    pub(crate) fn list_start(&self) -> u32 {
        arena_index(self.floats.len())
    }

    /// Ends a list started at `start`.
    pub(crate) fn list_end(&mut self, start: u32, failed: bool) -> SlotValue {
        if failed {
            self.floats.truncate(start as usize);
            return SlotValue::Absent;
        }
        SlotValue::FloatList {
            start,
            end: arena_index(self.floats.len()),
        }
    }

    fn push_display(&mut self, value: impl std::fmt::Display) -> SlotValue {
        let start = self.text.len();
        let _ = write!(self.text, "{value}");
        SlotValue::Text {
            start: arena_index(start),
            end: arena_index(self.text.len()),
        }
    }

    /// Copies text already in the arena, with a prefix, as a new string
    /// (attribute keys of nested unmapped fields).
    pub(crate) fn push_prefixed_copy(&mut self, prefix: &str, start: u32, end: u32) -> (u32, u32) {
        let new_start = self.text.len();
        self.text.push_str(prefix);
        self.text.extend_from_within(start as usize..end as usize);
        (arena_index(new_start), arena_index(self.text.len()))
    }

    /// Stores an unmapped key and its value as an attribute: strings
    /// unquoted, null as a null value, anything else as raw JSON text.
    pub(crate) fn push_unmapped(&mut self, prefix: &str, key: &str, value: &LazyValue<'_>) {
        self.push_unmapped_text(prefix, key, attribute_text(value));
    }

    /// Like `push_unmapped`, for a key whose text is already in the arena.
    pub(crate) fn push_unmapped_at(&mut self, key_range: (u32, u32), value: &LazyValue<'_>) {
        self.push_unmapped_range(key_range, attribute_text(value));
    }

    /// Stores an unmapped key and its value's attribute text (`None` for
    /// null), as `push_unmapped` does once it has that text.
    pub(crate) fn push_unmapped_text(&mut self, prefix: &str, key: &str, value: Option<&str>) {
        let key_start = self.text.len();
        self.text.push_str(prefix);
        self.text.push_str(key);
        let key_range = (arena_index(key_start), arena_index(self.text.len()));
        self.push_unmapped_range(key_range, value);
    }

    fn push_unmapped_range(&mut self, key_range: (u32, u32), value: Option<&str>) {
        let value_range = value.and_then(|text| match self.push_text(text) {
            SlotValue::Text { start, end } => Some((start, end)),
            _ => None,
        });
        self.push_attribute_ranges(key_range, value_range);
    }

    /// Adds an attribute whose key is already in the arena; the value must
    /// be text (see `render_in_arena`).
    pub(crate) fn push_attribute(&mut self, key: SlotValue, value: Option<SlotValue>) {
        let SlotValue::Text { start, end } = key else {
            return;
        };
        let value_range = match value {
            Some(SlotValue::Text { start, end }) => Some((start, end)),
            Some(SlotValue::Static(text)) => match self.push_text(text.as_str()) {
                SlotValue::Text { start, end } => Some((start, end)),
                _ => None,
            },
            _ => None,
        };
        self.push_attribute_ranges((start, end), value_range);
    }

    /// Adds an attribute if no attribute of that name exists yet.
    pub(crate) fn push_attribute_default(&mut self, key: &str, value: &str) {
        if self.find_attribute(key).is_some() {
            return;
        }
        let key = self.push_text(key);
        let value = self.push_text(value);
        self.push_attribute(key, Some(value));
    }

    /// Value of an attribute by name.
    pub(crate) fn attribute_value(&self, key: &str) -> Option<&str> {
        let position = self.find_attribute(key)?;
        let (start, end) = self.attributes[position].value?;
        Some(self.text_at(start, end))
    }

    /// Duplicated keys: the last value wins, in the position of the first.
    fn push_attribute_ranges(&mut self, key: (u32, u32), value: Option<(u32, u32)>) {
        let existing = self.find_attribute(self.text_at(key.0, key.1));
        if let Some(existing) = existing {
            self.attributes[existing].value = value;
            return;
        }
        let position = self.attributes.len();
        self.attributes.push(AttributeEntry { key, value });
        if self.attributes.len() > ATTRIBUTE_LINEAR_SCAN_LIMIT {
            if self.attribute_index.is_empty() {
                for index in 0..self.attributes.len() {
                    let (start, end) = self.attributes[index].key;
                    let hash = self.attribute_hasher.hash_one(self.text_at(start, end));
                    self.attribute_index
                        .entry(hash)
                        .or_insert(arena_index(index));
                }
            } else {
                let hash = self.attribute_hasher.hash_one(self.text_at(key.0, key.1));
                self.attribute_index
                    .entry(hash)
                    .or_insert(arena_index(position));
            }
        }
    }

    fn find_attribute(&self, key: &str) -> Option<usize> {
        let matches = |entry: &AttributeEntry| self.text_at(entry.key.0, entry.key.1) == key;
        if self.attribute_index.is_empty() {
            return self.attributes.iter().position(matches);
        }
        let hash = self.attribute_hasher.hash_one(key);
        match self.attribute_index.get(&hash) {
            Some(&position) if matches(&self.attributes[position as usize]) => {
                Some(position as usize)
            }
            // A hash collision between different keys: fall back to a scan.
            Some(_) => self.attributes.iter().position(matches),
            None => None,
        }
    }

    /// Renders a converted value as attribute text in the arena.
    fn render_in_arena(&mut self, value: SlotValue) -> SlotValue {
        let start = self.text.len();
        match value {
            SlotValue::Absent | SlotValue::Text { .. } | SlotValue::Static(_) => return value,
            SlotValue::Integer(integer) => {
                let _ = write!(self.text, "{integer}");
            }
            SlotValue::Float(float) => {
                let _ = write!(self.text, "{}", FloatText(float));
            }
            SlotValue::Timestamp(nanos) => {
                let rendered = inferwatch_core::format_timestamp(nanos);
                self.text.push_str(&rendered);
            }
            SlotValue::FloatList {
                start: first,
                end: last,
            } => {
                self.text.push('[');
                for index in first..last {
                    if index != first {
                        self.text.push(',');
                    }
                    let float = self.floats.get(index as usize).copied().unwrap_or_default();
                    let _ = write!(self.text, "{}", FloatText(float));
                }
                self.text.push(']');
            }
        }
        SlotValue::Text {
            start: arena_index(start),
            end: arena_index(self.text.len()),
        }
    }
}

/// An unmapped value as attribute text: strings unquoted, null as `None`,
/// anything else as written.
fn attribute_text<'v>(value: &'v LazyValue<'_>) -> Option<&'v str> {
    let raw = value.as_raw_str();
    match JsonKind::of(raw) {
        JsonKind::Null => None,
        JsonKind::String => Some(value.as_str().unwrap_or_default()),
        _ => Some(raw),
    }
}

/// Arena positions are u32: lines are capped at 1 MiB, and even a line made
/// entirely of tiny nested keys expands to a few megabytes at most.
fn arena_index(position: usize) -> u32 {
    u32::try_from(position).unwrap_or(u32::MAX)
}

/// The JSON type of a raw value, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Object,
    Array,
}

impl JsonKind {
    pub(crate) fn of(raw: &str) -> JsonKind {
        match raw.as_bytes().first() {
            Some(b'"') => JsonKind::String,
            Some(b'{') => JsonKind::Object,
            Some(b'[') => JsonKind::Array,
            Some(b't' | b'f') => JsonKind::Boolean,
            Some(b'n') | None => JsonKind::Null,
            Some(_) => JsonKind::Number,
        }
    }
}

/// `string "abc"`, `number 12.5`, `an object`… for dead-letter reasons.
pub(crate) fn describe(raw: &str, kind: JsonKind) -> String {
    match kind {
        JsonKind::Null => "null".to_string(),
        JsonKind::Boolean => format!("boolean {raw}"),
        JsonKind::Number => format!("number {}", truncate(raw)),
        JsonKind::String => format!("string {}", truncate(raw)),
        JsonKind::Object => "an object".to_string(),
        JsonKind::Array => "an array".to_string(),
    }
}

fn truncate(text: &str) -> String {
    if text.len() <= QUOTED_VALUE_LIMIT {
        return text.to_string();
    }
    let mut end = QUOTED_VALUE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A JSON scalar as handed over by the parser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'v> {
    Bool(bool),
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Str(&'v str),
}

impl Scalar<'_> {
    /// `string "abc"`, `number 12.5`, `boolean true`: for dead-letter reasons.
    pub(crate) fn describe(&self) -> String {
        match self {
            Scalar::Bool(truth) => format!("boolean {truth}"),
            Scalar::Unsigned(number) => format!("number {number}"),
            Scalar::Signed(number) => format!("number {number}"),
            Scalar::Float(number) => format!("number {}", FloatText(*number)),
            Scalar::Str(text) => {
                let quoted = serde_json::to_string(text).unwrap_or_default();
                format!("string {}", truncate(&quoted))
            }
        }
    }
}

pub(crate) fn list_element_error(rule: &Rule, position: usize, got: &str) -> LineError {
    LineError::new(
        DeadLetterKind::WrongType,
        format!(
            "field {}: expected an array of finite numbers, element {position} is {got}",
            rule.source
        ),
    )
}

/// Status of an HTTP-like code given as a number.
fn status_of_code(code: u32) -> Option<&'static str> {
    match code {
        100..=399 => Some("ok"),
        400..=599 => Some("error"),
        _ => None,
    }
}

/// A float as a person would write it: `12.5`, `1e39`, `2.5e-7`, never
/// forty digits.
pub(crate) struct FloatText(pub(crate) f64);

impl std::fmt::Display for FloatText {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let magnitude = self.0.abs();
        if magnitude != 0.0 && !(1e-5..1e16).contains(&magnitude) {
            write!(formatter, "{:e}", self.0)
        } else {
            write!(formatter, "{}", self.0)
        }
    }
}
