//! Column readers shared by the tables, the explanation sample and the SLOs:
//! a column as f64 (or one class of a list column), value hashes for
//! distinct counts, interned value ids for group keys, and the sample rank.

use ahash::AHashMap;
use arrow::array::{Array, ArrayRef, AsArray, Float64Array};
use arrow::buffer::BooleanBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int32Type};
use arrow::record_batch::RecordBatch;

use crate::table::NULL_VALUE;

/// The rank of a sampled value: a hash of what the row carries, so the
/// sample does not depend on arrival order or batching.
#[inline]
pub(crate) fn sample_rank(timestamp: i64, value: f64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&timestamp.to_le_bytes());
    bytes[8..].copy_from_slice(&value.to_bits().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// A column's values as f64, or for a list column one element of each row's list.
fn sampled_values(array: &ArrayRef, class: Option<usize>) -> Float64Array {
    let Some(class) = class else {
        return float_column(array);
    };
    let Some(lists) = array.as_list_opt::<i32>() else {
        return Float64Array::new_null(array.len());
    };
    let items = float_column(lists.values());
    let offsets = lists.value_offsets();
    (0..lists.len())
        .map(|row| {
            let index = offsets[row] as usize + class;
            (lists.is_valid(row) && index < offsets[row + 1] as usize && items.is_valid(index))
                .then(|| items.value(index))
        })
        .collect()
}

pub(crate) fn float_column(array: &ArrayRef) -> Float64Array {
    if let Some(floats) = array.as_primitive_opt::<Float64Type>() {
        return floats.clone();
    }
    match cast(array, &DataType::Float64) {
        Ok(cast_array) => cast_array.as_primitive::<Float64Type>().clone(),
        Err(_) => Float64Array::new_null(array.len()),
    }
}

/// Portable 64-bit hashes of each row's value (xxh3 of its text form), for distinct counts.
fn value_hashes(array: &ArrayRef) -> Vec<Option<u64>> {
    use xxhash_rust::xxh3::xxh3_64;
    if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>() {
        if let Some(values) = dictionary.values().as_string_opt::<i32>() {
            let hashes: Vec<Option<u64>> = (0..values.len())
                .map(|i| {
                    values
                        .is_valid(i)
                        .then(|| xxh3_64(values.value(i).as_bytes()))
                })
                .collect();
            let keys = dictionary.keys();
            return (0..keys.len())
                .map(|row| {
                    if keys.is_valid(row) {
                        hashes[keys.value(row) as usize]
                    } else {
                        None
                    }
                })
                .collect();
        }
    }
    let text = match array.data_type() {
        DataType::Utf8 => array.clone(),
        _ => match cast(array, &DataType::Utf8) {
            Ok(text) => text,
            Err(_) => return vec![None; array.len()],
        },
    };
    let strings = text.as_string::<i32>();
    (0..strings.len())
        .map(|row| {
            strings
                .is_valid(row)
                .then(|| xxh3_64(strings.value(row).as_bytes()))
        })
        .collect()
}

/// Per row, the interned id of a column's value as text (`NULL_VALUE` for a
/// null or, outside dictionaries, an unselected row). A dictionary column's
/// values are interned once each, not once per row.
pub(crate) fn column_value_ids(
    array: &ArrayRef,
    mask: &BooleanBuffer,
    intern: &mut dyn FnMut(&str) -> u32,
) -> Vec<u32> {
    let rows = array.len();
    if let Some(dictionary) = array.as_dictionary_opt::<Int32Type>() {
        if let Some(values) = dictionary.values().as_string_opt::<i32>() {
            let ids: Vec<u32> = (0..values.len())
                .map(|i| {
                    if values.is_valid(i) {
                        intern(values.value(i))
                    } else {
                        NULL_VALUE
                    }
                })
                .collect();
            let keys = dictionary.keys();
            return (0..rows)
                .map(|row| {
                    if keys.is_valid(row) {
                        ids[keys.value(row) as usize]
                    } else {
                        NULL_VALUE
                    }
                })
                .collect();
        }
    }
    let as_text = match array.data_type() {
        DataType::Utf8 => array.clone(),
        _ => match cast(array, &DataType::Utf8) {
            Ok(text) => text,
            Err(_) => return vec![NULL_VALUE; rows],
        },
    };
    let strings = as_text.as_string::<i32>();
    (0..rows)
        .map(|row| {
            if !mask.value(row) || strings.is_null(row) {
                NULL_VALUE
            } else {
                intern(strings.value(row))
            }
        })
        .collect()
}

/// One batch's columns as the tables read them, each computed once.
///
/// Several tables read the same columns (six per-client rules hash
/// `input_hash`), each table reads them once per segment, and a batch that
/// crosses a tick is aggregated in slices: without this each of those
/// recomputed the whole column, casts and hashing included.
pub(crate) struct BatchColumns<'a> {
    batch: &'a RecordBatch,
    /// Rows whose status is an error (every table's error predicate).
    errors: BooleanBuffer,
    values: AHashMap<(usize, Option<usize>), Float64Array>,
    hashes: AHashMap<usize, Vec<Option<u64>>>,
}

impl<'a> BatchColumns<'a> {
    pub(crate) fn new(batch: &'a RecordBatch, errors: BooleanBuffer) -> BatchColumns<'a> {
        BatchColumns {
            batch,
            errors,
            values: AHashMap::new(),
            hashes: AHashMap::new(),
        }
    }

    pub(crate) fn batch(&self) -> &'a RecordBatch {
        self.batch
    }

    pub(crate) fn errors(&self) -> &BooleanBuffer {
        &self.errors
    }

    /// [`float_column`] of a column, or with a class [`sampled_values`].
    pub(crate) fn values(&mut self, column: usize, class: Option<usize>) -> &Float64Array {
        let batch = self.batch;
        self.values
            .entry((column, class))
            .or_insert_with(|| sampled_values(batch.column(column), class))
    }

    /// [`value_hashes`] of a column.
    pub(crate) fn hashes(&mut self, column: usize) -> &[Option<u64>] {
        let batch = self.batch;
        self.hashes
            .entry(column)
            .or_insert_with(|| value_hashes(batch.column(column)))
    }
}
