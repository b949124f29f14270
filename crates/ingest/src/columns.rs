//! Column sinks: the typed buffers a batch is appended to, one per column,
//! turned into Arrow arrays without copying when the batch is finished.
//!
//! These replace Arrow's generic builders on the hot path for two reasons:
//! dictionary columns remember the previous row's value (a model id or a
//! status repeats far more often than it changes) so that most rows skip
//! hashing, and every sink is sized like the previous batch, so that a batch
//! never regrows its buffers.

use std::sync::Arc;

use ahash::AHashMap;
use arrow::array::builder::NullBufferBuilder;
use arrow::array::{
    ArrayRef, DictionaryArray, Float32Array, ListArray, MapArray, PrimitiveArray, StringArray,
    StructArray,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Float64Type, Int32Type, Int64Type,
    TimestampNanosecondType,
};
use arrow::error::ArrowError;

use crate::record::{Record, SlotValue};

/// Byte equality without a `memcmp` call for the short values this crate
/// compares on every row (keys, model ids, versions, statuses): a word at a
/// time, the last word overlapping the one before it.
#[inline]
pub(crate) fn same_bytes(left: &[u8], right: &[u8]) -> bool {
    let length = left.len();
    if length != right.len() {
        return false;
    }
    if length < 8 {
        let half = |bytes: &[u8], at: usize| {
            bytes
                .get(at..at + 4)
                .and_then(|chunk| chunk.first_chunk::<4>())
                .map(|chunk| u32::from_le_bytes(*chunk))
        };
        if length < 4 {
            // Zero to three bytes: compare them one by one (`==` on slices
            // calls `memcmp`).
            return left.iter().zip(right).all(|(a, b)| a == b);
        }
        return half(left, 0) == half(right, 0)
            && half(left, length - 4) == half(right, length - 4);
    }
    let word = |bytes: &[u8], at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|chunk| chunk.first_chunk::<8>())
            .map(|chunk| u64::from_le_bytes(*chunk))
    };
    let mut at = 0;
    while at + 8 < length {
        if word(left, at) != word(right, at) {
            return false;
        }
        at += 8;
    }
    word(left, length - 8) == word(right, length - 8)
}

/// Dictionaries with at most this many values are searched linearly; past
/// it, a hash index takes over.
const DICTIONARY_LINEAR_LIMIT: usize = 8;

/// Grows a size seen in the previous batch by an eighth, so that a slightly
/// bigger batch still fits.
fn with_headroom(size: usize) -> usize {
    size + size / 8 + 16
}

fn offset(length: usize) -> i32 {
    // Chunks are capped at 1 GiB (`MAX_CHUNK_BYTES`), so text offsets fit.
    i32::try_from(length).unwrap_or(i32::MAX)
}

/// Variable-length UTF-8 values.
///
/// Like every sink here, a column that has seen no value yet in this batch
/// only counts its nulls: a column that stays empty (no `ttft_ms` in a
/// classifier's logs) then costs an increment per row, not a buffer write.
#[derive(Debug)]
struct StringSink {
    data: Vec<u8>,
    offsets: Vec<i32>,
    validity: NullBufferBuilder,
    /// Nulls appended before the first value (nothing is written for them
    /// until a value arrives).
    leading_nulls: usize,
}

impl StringSink {
    fn with_capacity(rows: usize, bytes: usize) -> StringSink {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StringSink {
            data: Vec::with_capacity(bytes),
            offsets,
            validity: NullBufferBuilder::new(rows),
            leading_nulls: 0,
        }
    }

    #[inline]
    fn push(&mut self, value: Option<&str>) {
        match value {
            Some(text) => {
                if self.leading_nulls > 0 {
                    self.materialize_leading_nulls();
                }
                self.data.extend_from_slice(text.as_bytes());
                self.validity.append_non_null();
            }
            None if self.offsets.len() == 1 => {
                self.leading_nulls += 1;
                return;
            }
            None => self.validity.append_null(),
        }
        self.offsets.push(offset(self.data.len()));
    }

    fn materialize_leading_nulls(&mut self) {
        self.offsets.resize(self.leading_nulls + 1, 0);
        self.validity.append_n_nulls(self.leading_nulls);
        self.leading_nulls = 0;
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1 + self.leading_nulls
    }

    #[inline]
    fn get(&self, index: usize) -> &[u8] {
        let start = self.offsets.get(index).copied().unwrap_or_default() as usize;
        let end = self.offsets.get(index + 1).copied().unwrap_or_default() as usize;
        self.data.get(start..end).unwrap_or_default()
    }

    fn finish(&mut self) -> Result<StringArray, ArrowError> {
        if self.leading_nulls > 0 {
            self.materialize_leading_nulls();
        }
        let rows = self.len();
        let bytes = self.data.len();
        let mut replacement = StringSink::with_capacity(with_headroom(rows), with_headroom(bytes));
        std::mem::swap(self, &mut replacement);
        let StringSink {
            data,
            offsets,
            mut validity,
            ..
        } = replacement;
        StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(data),
            validity.finish(),
        )
    }
}

/// Fixed-width values with a validity bitmap.
#[derive(Debug)]
struct PrimitiveSink<T: ArrowPrimitiveType> {
    values: Vec<T::Native>,
    validity: NullBufferBuilder,
    leading_nulls: usize,
}

impl<T: ArrowPrimitiveType> PrimitiveSink<T> {
    fn with_capacity(rows: usize) -> Self {
        PrimitiveSink {
            values: Vec::with_capacity(rows),
            validity: NullBufferBuilder::new(rows),
            leading_nulls: 0,
        }
    }

    #[inline]
    fn push(&mut self, value: Option<T::Native>) {
        match value {
            Some(value) => {
                if self.leading_nulls > 0 {
                    self.materialize_leading_nulls();
                }
                self.values.push(value);
                self.validity.append_non_null();
            }
            None if self.values.is_empty() => self.leading_nulls += 1,
            None => {
                self.values.push(T::Native::default());
                self.validity.append_null();
            }
        }
    }

    fn materialize_leading_nulls(&mut self) {
        self.values.resize(self.leading_nulls, T::Native::default());
        self.validity.append_n_nulls(self.leading_nulls);
        self.leading_nulls = 0;
    }

    fn finish(&mut self, data_type: &DataType) -> Result<PrimitiveArray<T>, ArrowError> {
        if self.leading_nulls > 0 {
            self.materialize_leading_nulls();
        }
        let mut replacement = Self::with_capacity(with_headroom(self.values.len()));
        std::mem::swap(self, &mut replacement);
        let PrimitiveSink {
            values,
            mut validity,
            ..
        } = replacement;
        PrimitiveArray::<T>::try_new(ScalarBuffer::from(values), validity.finish())
            .map(|array| array.with_data_type(data_type.clone()))
    }
}

/// Dictionary-encoded UTF-8: keys, distinct values, and a way back from a
/// value to its key.
#[derive(Debug)]
struct DictionarySink {
    keys: PrimitiveSink<Int32Type>,
    values: StringSink,
    /// Hash of a value → its key; only filled past `DICTIONARY_LINEAR_LIMIT`.
    index: AHashMap<u64, i32>,
    hasher: ahash::RandomState,
    previous_key: Option<i32>,
}

impl DictionarySink {
    fn with_capacity(rows: usize, distinct: usize, bytes: usize) -> DictionarySink {
        DictionarySink {
            keys: PrimitiveSink::with_capacity(rows),
            values: StringSink::with_capacity(distinct, bytes),
            index: AHashMap::default(),
            hasher: ahash::RandomState::with_seeds(5, 6, 7, 8),
            previous_key: None,
        }
    }

    #[inline]
    fn push(&mut self, value: Option<&str>) {
        let Some(text) = value else {
            self.keys.push(None);
            return;
        };
        let key = self.key_of(text);
        self.previous_key = Some(key);
        self.keys.push(Some(key));
    }

    #[inline]
    fn key_of(&mut self, text: &str) -> i32 {
        let bytes = text.as_bytes();
        if let Some(previous) = self.previous_key {
            if same_bytes(self.values.get(previous as usize), bytes) {
                return previous;
            }
        }
        let count = self.values.len();
        if count <= DICTIONARY_LINEAR_LIMIT {
            if let Some(found) = (0..count).find(|&index| same_bytes(self.values.get(index), bytes))
            {
                return offset(found);
            }
        } else {
            let hash = self.hasher.hash_one(bytes);
            match self.index.get(&hash) {
                Some(&key) if same_bytes(self.values.get(key as usize), bytes) => return key,
                // Two values with one hash: rare enough for a scan.
                Some(_) => {
                    if let Some(found) = (0..count).find(|&index| self.values.get(index) == bytes) {
                        return offset(found);
                    }
                }
                None => {}
            }
        }
        let key = offset(count);
        self.values.push(Some(text));
        let count = self.values.len();
        if count == DICTIONARY_LINEAR_LIMIT + 1 {
            for index in 0..count {
                let hash = self.hasher.hash_one(self.values.get(index));
                self.index.entry(hash).or_insert(offset(index));
            }
        } else if count > DICTIONARY_LINEAR_LIMIT + 1 {
            let hash = self.hasher.hash_one(bytes);
            self.index.entry(hash).or_insert(key);
        }
        key
    }

    fn finish(&mut self) -> Result<DictionaryArray<Int32Type>, ArrowError> {
        let keys = self.keys.finish(&DataType::Int32)?;
        let distinct = self.values.len();
        let bytes = self.values.data.len();
        let values = self.values.finish()?;
        self.values = StringSink::with_capacity(with_headroom(distinct), with_headroom(bytes));
        self.index.clear();
        self.previous_key = None;
        DictionaryArray::try_new(keys, Arc::new(values))
    }
}

/// One column of a batch.
#[derive(Debug)]
enum ColumnSink {
    Timestamp(PrimitiveSink<TimestampNanosecondType>),
    Dictionary(DictionarySink),
    Utf8(StringSink),
    Int32(PrimitiveSink<Int32Type>),
    Int64(PrimitiveSink<Int64Type>),
    Float64(PrimitiveSink<Float64Type>),
    FloatList {
        values: Vec<f32>,
        shape: ListShape,
    },
    Attributes {
        keys: StringSink,
        values: StringSink,
        shape: ListShape,
    },
}

/// Offsets and validity of a list or map column.
#[derive(Debug)]
struct ListShape {
    offsets: Vec<i32>,
    validity: NullBufferBuilder,
    leading_nulls: usize,
}

impl ListShape {
    fn with_capacity(rows: usize) -> ListShape {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        ListShape {
            offsets,
            validity: NullBufferBuilder::new(rows),
            leading_nulls: 0,
        }
    }

    #[inline]
    fn push_null(&mut self) {
        if self.offsets.len() == 1 {
            self.leading_nulls += 1;
            return;
        }
        let end = self.offsets.last().copied().unwrap_or_default();
        self.offsets.push(end);
        self.validity.append_null();
    }

    /// A valid row whose items end at `end` in the child column.
    #[inline]
    fn push_valid(&mut self, end: usize) {
        if self.leading_nulls > 0 {
            self.materialize_leading_nulls();
        }
        self.offsets.push(offset(end));
        self.validity.append_non_null();
    }

    fn materialize_leading_nulls(&mut self) {
        self.offsets.resize(self.leading_nulls + 1, 0);
        self.validity.append_n_nulls(self.leading_nulls);
        self.leading_nulls = 0;
    }

    fn finish(&mut self) -> (OffsetBuffer<i32>, Option<NullBuffer>) {
        if self.leading_nulls > 0 {
            self.materialize_leading_nulls();
        }
        let rows = self.offsets.len() - 1;
        let mut replacement = ListShape::with_capacity(with_headroom(rows));
        std::mem::swap(self, &mut replacement);
        let ListShape {
            offsets,
            mut validity,
            ..
        } = replacement;
        (
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            validity.finish(),
        )
    }
}

impl ColumnSink {
    fn for_type(data_type: &DataType, rows: usize) -> ColumnSink {
        match data_type {
            DataType::Timestamp(_, _) => ColumnSink::Timestamp(PrimitiveSink::with_capacity(rows)),
            DataType::Dictionary(_, _) => {
                ColumnSink::Dictionary(DictionarySink::with_capacity(rows, 16, 256))
            }
            DataType::Int32 => ColumnSink::Int32(PrimitiveSink::with_capacity(rows)),
            DataType::Int64 => ColumnSink::Int64(PrimitiveSink::with_capacity(rows)),
            DataType::Float64 => ColumnSink::Float64(PrimitiveSink::with_capacity(rows)),
            DataType::List(_) => ColumnSink::FloatList {
                values: Vec::new(),
                shape: ListShape::with_capacity(rows),
            },
            DataType::Map(_, _) => ColumnSink::Attributes {
                keys: StringSink::with_capacity(rows, 0),
                values: StringSink::with_capacity(rows, 0),
                shape: ListShape::with_capacity(rows),
            },
            _ => ColumnSink::Utf8(StringSink::with_capacity(rows, 0)),
        }
    }

    #[inline]
    fn push(&mut self, record: &Record, value: SlotValue) {
        match self {
            ColumnSink::Timestamp(sink) => sink.push(match value {
                SlotValue::Timestamp(nanos) => Some(nanos),
                _ => None,
            }),
            ColumnSink::Dictionary(sink) => sink.push(record.as_text(value)),
            ColumnSink::Utf8(sink) => sink.push(record.as_text(value)),
            ColumnSink::Int32(sink) => sink.push(match value {
                SlotValue::Integer(integer) => i32::try_from(integer).ok(),
                _ => None,
            }),
            ColumnSink::Int64(sink) => sink.push(match value {
                SlotValue::Integer(integer) => Some(integer),
                _ => None,
            }),
            ColumnSink::Float64(sink) => sink.push(match value {
                SlotValue::Float(float) => Some(float),
                SlotValue::Integer(integer) => Some(integer as f64),
                _ => None,
            }),
            ColumnSink::FloatList { values, shape } => match value {
                SlotValue::FloatList { start, end } => {
                    values.extend(
                        record
                            .floats_at(start, end)
                            .iter()
                            .map(|&float| float as f32),
                    );
                    shape.push_valid(values.len());
                }
                _ => shape.push_null(),
            },
            ColumnSink::Attributes {
                keys,
                values,
                shape,
            } => {
                if record.attributes.is_empty() {
                    shape.push_null();
                } else {
                    for entry in &record.attributes {
                        keys.push(Some(record.text_at(entry.key.0, entry.key.1)));
                        values.push(entry.value.map(|(start, end)| record.text_at(start, end)));
                    }
                    shape.push_valid(keys.len());
                }
            }
        }
    }

    fn finish(&mut self, data_type: &DataType) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            ColumnSink::Timestamp(sink) => Arc::new(sink.finish(data_type)?),
            ColumnSink::Dictionary(sink) => Arc::new(sink.finish()?),
            ColumnSink::Utf8(sink) => Arc::new(sink.finish()?),
            ColumnSink::Int32(sink) => Arc::new(sink.finish(data_type)?),
            ColumnSink::Int64(sink) => Arc::new(sink.finish(data_type)?),
            ColumnSink::Float64(sink) => Arc::new(sink.finish(data_type)?),
            ColumnSink::FloatList { values, shape } => {
                let item = match data_type {
                    DataType::List(item) => item.clone(),
                    _ => Arc::new(Field::new("item", DataType::Float32, true)),
                };
                let taken_values =
                    std::mem::replace(values, Vec::with_capacity(with_headroom(values.len())));
                let (offsets, nulls) = shape.finish();
                Arc::new(ListArray::try_new(
                    item,
                    offsets,
                    Arc::new(Float32Array::new(ScalarBuffer::from(taken_values), None)),
                    nulls,
                )?)
            }
            ColumnSink::Attributes {
                keys,
                values,
                shape,
            } => {
                let entries_field: FieldRef = match data_type {
                    DataType::Map(entries, _) => entries.clone(),
                    _ => return Err(ArrowError::SchemaError("attributes is not a map".into())),
                };
                let DataType::Struct(entry_fields) = entries_field.data_type() else {
                    return Err(ArrowError::SchemaError(
                        "map entries are not a struct".into(),
                    ));
                };
                let key_array = keys.finish()?;
                let value_array = values.finish()?;
                let entries = StructArray::try_new(
                    entry_fields.clone(),
                    vec![
                        Arc::new(key_array) as ArrayRef,
                        Arc::new(value_array) as ArrayRef,
                    ],
                    None,
                )?;
                let (offsets, nulls) = shape.finish();
                Arc::new(MapArray::try_new(
                    entries_field,
                    offsets,
                    entries,
                    nulls,
                    false,
                )?)
            }
        })
    }
}

/// The columns of the batch being decoded.
#[derive(Debug)]
pub(crate) struct BatchSink {
    columns: Vec<ColumnSink>,
    attributes_column: Option<usize>,
    rows: usize,
}

impl BatchSink {
    pub(crate) fn new(
        schema: &arrow::datatypes::Schema,
        attributes_column: Option<usize>,
    ) -> BatchSink {
        BatchSink {
            columns: schema
                .fields()
                .iter()
                .map(|field| ColumnSink::for_type(field.data_type(), 1024))
                .collect(),
            attributes_column,
            rows: 0,
        }
    }

    /// Appends the record as one row: canonical slots, then extra columns.
    #[inline]
    pub(crate) fn push(&mut self, record: &Record) {
        let canonical_count = record.slots.len();
        for (index, column) in self.columns.iter_mut().enumerate() {
            let value = match record.slots.get(index) {
                Some(slot) => slot.value,
                None => record
                    .extra
                    .get(index - canonical_count)
                    .copied()
                    .unwrap_or_default(),
            };
            debug_assert!(
                Some(index) != self.attributes_column
                    || matches!(column, ColumnSink::Attributes { .. }),
                "the attributes column is a map"
            );
            column.push(record, value);
        }
        self.rows += 1;
    }

    /// Builds the arrays of the rows pushed so far and starts a new batch.
    pub(crate) fn finish(
        &mut self,
        schema: &arrow::datatypes::Schema,
    ) -> Result<Vec<ArrayRef>, ArrowError> {
        self.rows = 0;
        self.columns
            .iter_mut()
            .zip(schema.fields().iter())
            .map(|(column, field)| column.finish(field.data_type()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;

    #[test]
    fn same_bytes_agrees_with_equality() {
        let samples = [
            "",
            "a",
            "ok",
            "baseline",
            "canary-12",
            "fraud-detector",
            "fraud-detectoR",
            "0123456789abcdef",
            "0123456789abcdefg",
            "0123456789abcdefh",
            "abc",
            "abcd",
            "abce",
            "abcdefg",
            "abcdeff",
            "a-long-key-of-twenty-nine-byt",
            "a-long-key-of-twenty-nine-bit",
        ];
        for left in samples {
            for right in samples {
                assert_eq!(
                    same_bytes(left.as_bytes(), right.as_bytes()),
                    left == right,
                    "{left} {right}"
                );
            }
        }
    }

    #[test]
    fn leading_nulls_are_materialised_when_a_value_arrives_or_at_the_end() {
        let mut numbers = PrimitiveSink::<Int64Type>::with_capacity(0);
        numbers.push(None);
        numbers.push(None);
        numbers.push(Some(7));
        numbers.push(None);
        let array = numbers.finish(&DataType::Int64).unwrap();
        assert_eq!(array.len(), 4);
        assert_eq!(array.null_count(), 3);
        assert_eq!(array.value(2), 7);
        numbers.push(None);
        let all_null = numbers.finish(&DataType::Int64).unwrap();
        assert_eq!((all_null.len(), all_null.null_count()), (1, 1));

        let mut strings = StringSink::with_capacity(0, 0);
        strings.push(None);
        strings.push(Some("a"));
        strings.push(None);
        strings.push(Some("bc"));
        let array = strings.finish().unwrap();
        assert_eq!(array.len(), 4);
        assert!(array.is_null(0) && array.is_null(2));
        assert_eq!((array.value(1), array.value(3)), ("a", "bc"));

        let mut shape = ListShape::with_capacity(0);
        shape.push_null();
        shape.push_null();
        shape.push_valid(2);
        shape.push_null();
        let (offsets, nulls) = shape.finish();
        assert_eq!(offsets.as_ref(), &[0, 0, 0, 2, 2]);
        assert_eq!(nulls.map(|nulls| nulls.null_count()), Some(3));
    }

    #[test]
    fn dictionary_reuses_keys_past_the_linear_limit() {
        let mut sink = DictionarySink::with_capacity(0, 0, 0);
        let values: Vec<String> = (0..40)
            .map(|index| format!("value-{}", index % 20))
            .collect();
        for value in &values {
            sink.push(Some(value));
        }
        sink.push(None);
        let array = sink.finish().unwrap();
        assert_eq!(array.values().len(), 20);
        assert_eq!(array.len(), 41);
        assert!(array.is_null(40));
        let strings = array
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for (row, value) in values.iter().enumerate() {
            let key = array.keys().value(row) as usize;
            assert_eq!(strings.value(key), value);
        }
        // The sink starts over cleanly.
        sink.push(Some("fresh"));
        let again = sink.finish().unwrap();
        assert_eq!(again.values().len(), 1);
    }
}
