//! Per-minute rollups of the inference stream.
//!
//! One row per (minute, model_id, model_version, ab_group, source_id, status)
//! holding count, error count, latency count/sum/min/max, a latency DDSketch
//! and token sums. Every column merges (sums add, min/max fold, sketches
//! merge), so rollups written by different flushes for the same minute are
//! simply re-aggregated, and dashboard queries over weeks read thousands of
//! rollup rows instead of millions of events.

use std::sync::{Arc, OnceLock};

use ahash::AHashMap;
use arrow::array::{
    Array, ArrayRef, BinaryArray, BinaryBuilder, DictionaryArray, Float64Array, Float64Builder,
    Int64Array, Int64Builder, StringArray, StringBuilder, TimestampNanosecondArray,
    TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use inferwatch_core::{column, QuantileSketch};

use crate::StoreError;

const MINUTE_NANOS: i64 = 60_000_000_000;

/// Rollup column names.
pub mod rollup_column {
    /// Start of the minute (UTC ns).
    pub const MINUTE: &str = "minute";
    /// Events in the row.
    pub const COUNT: &str = "count";
    /// Events with status `error`.
    pub const ERROR_COUNT: &str = "error_count";
    /// Events with a latency.
    pub const LATENCY_COUNT: &str = "latency_count";
    /// Sum of latency_ms.
    pub const LATENCY_SUM: &str = "latency_sum";
    /// Minimum latency_ms.
    pub const LATENCY_MIN: &str = "latency_min";
    /// Maximum latency_ms.
    pub const LATENCY_MAX: &str = "latency_max";
    /// DDSketch of latency_ms ([`inferwatch_core::QuantileSketch::to_bytes`]).
    pub const LATENCY_SKETCH: &str = "latency_sketch";
    /// Sum of input_tokens.
    pub const INPUT_TOKENS_SUM: &str = "input_tokens_sum";
    /// Sum of output_tokens.
    pub const OUTPUT_TOKENS_SUM: &str = "output_tokens_sum";
}

/// The dimension columns of a rollup, in key order (same names as the events').
pub const ROLLUP_DIMENSIONS: [&str; 5] = [
    column::MODEL_ID,
    column::MODEL_VERSION,
    column::AB_GROUP,
    column::SOURCE_ID,
    column::STATUS,
];

/// The Arrow schema of rollup files.
pub fn rollup_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use rollup_column::*;
            let mut fields = vec![Field::new(
                MINUTE,
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            )];
            for dimension in ROLLUP_DIMENSIONS {
                fields.push(Field::new(
                    dimension,
                    DataType::Utf8,
                    dimension != column::STATUS,
                ));
            }
            fields.extend([
                Field::new(COUNT, DataType::Int64, false),
                Field::new(ERROR_COUNT, DataType::Int64, false),
                Field::new(LATENCY_COUNT, DataType::Int64, false),
                Field::new(LATENCY_SUM, DataType::Float64, false),
                Field::new(LATENCY_MIN, DataType::Float64, true),
                Field::new(LATENCY_MAX, DataType::Float64, true),
                Field::new(LATENCY_SKETCH, DataType::Binary, false),
                Field::new(INPUT_TOKENS_SUM, DataType::Int64, false),
                Field::new(OUTPUT_TOKENS_SUM, DataType::Int64, false),
            ]);
            Arc::new(Schema::new(fields))
        })
        .clone()
}

/// A dimension column of one batch, read as ids of the builder's interned
/// values: a dictionary column translates each of its few values once, so
/// rows cost an array index instead of hashing and comparing strings.
enum DimensionIds<'a> {
    /// Global id per dictionary key.
    Dictionary(&'a DictionaryArray<Int32Type>, Vec<u32>),
    Plain(&'a StringArray),
    Missing,
}

impl<'a> DimensionIds<'a> {
    fn new(array: Option<&'a ArrayRef>, names: &mut DimensionNames) -> DimensionIds<'a> {
        let Some(array) = array else {
            return DimensionIds::Missing;
        };
        if let Some(dictionary) = array.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            if let Some(values) = dictionary.values().as_any().downcast_ref::<StringArray>() {
                let ids = (0..values.len())
                    .map(|index| names.id((!values.is_null(index)).then(|| values.value(index))))
                    .collect();
                return DimensionIds::Dictionary(dictionary, ids);
            }
        }
        match array.as_any().downcast_ref::<StringArray>() {
            Some(strings) => DimensionIds::Plain(strings),
            None => DimensionIds::Missing,
        }
    }

    #[inline]
    fn id(&self, row: usize, names: &mut DimensionNames) -> u32 {
        match self {
            DimensionIds::Dictionary(dictionary, ids) => {
                if dictionary.is_null(row) {
                    return NULL_ID;
                }
                let key = dictionary.keys().value(row) as usize;
                ids.get(key).copied().unwrap_or(NULL_ID)
            }
            DimensionIds::Plain(strings) => {
                names.id((!strings.is_null(row)).then(|| strings.value(row)))
            }
            DimensionIds::Missing => NULL_ID,
        }
    }
}

/// The id of a null dimension value.
const NULL_ID: u32 = 0;

/// Dimension values interned for the builder's lifetime; id `n` is
/// `values[n - 1]`.
#[derive(Default)]
struct DimensionNames {
    values: Vec<Box<str>>,
    ids: AHashMap<Box<str>, u32>,
}

impl DimensionNames {
    fn id(&mut self, value: Option<&str>) -> u32 {
        let Some(value) = value else {
            return NULL_ID;
        };
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        self.values.push(value.into());
        let id = u32::try_from(self.values.len()).unwrap_or(u32::MAX);
        self.ids.insert(value.into(), id);
        id
    }

    fn name(&self, id: u32) -> Option<&str> {
        let index = (id as usize).checked_sub(1)?;
        self.values.get(index).map(|value| &**value)
    }
}

/// Latency sums are kept in integer units of 1e-6 ms: addition is then
/// exact, so a sum does not depend on the order rows (or rollup files) are
/// folded in, and it saturates instead of overflowing.
const LATENCY_SUM_UNITS_PER_MS: f64 = 1e6;

fn latency_units(value_ms: f64) -> i128 {
    // `as` saturates (and maps NaN to 0): no value can overflow the sum's units.
    (value_ms * LATENCY_SUM_UNITS_PER_MS).round() as i128
}

#[derive(Clone)]
struct Accumulator {
    count: i64,
    errors: i64,
    latency_count: i64,
    latency_sum: i128,
    latency_min: f64,
    latency_max: f64,
    sketch: QuantileSketch,
    input_tokens: i64,
    output_tokens: i64,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            count: 0,
            errors: 0,
            latency_count: 0,
            latency_sum: 0,
            latency_min: f64::INFINITY,
            latency_max: f64::NEG_INFINITY,
            sketch: QuantileSketch::default(),
            input_tokens: 0,
            output_tokens: 0,
        }
    }
}

/// Minute and the ids of the five dimension values.
type RollupKey = (i64, [u32; 5]);

/// Minute and the five dimension values: the order rollup rows are written in.
type RollupRowKey<'a> = (i64, [Option<&'a str>; 5]);

/// Folds rows into rollup rows.
#[derive(Default)]
pub struct RollupBuilder {
    groups: AHashMap<RollupKey, Accumulator>,
    names: DimensionNames,
}

impl RollupBuilder {
    /// An empty builder.
    pub fn new() -> RollupBuilder {
        RollupBuilder::default()
    }

    /// Folds a batch of inference events in.
    pub fn add_events(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        let timestamps = batch
            .column_by_name(column::TIMESTAMP)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
            .ok_or_else(|| StoreError::Internal("events without a timestamp column".into()))?;
        let names = &mut self.names;
        let dimensions: Vec<DimensionIds> = ROLLUP_DIMENSIONS
            .iter()
            .map(|name| DimensionIds::new(batch.column_by_name(name), names))
            .collect();
        let error_id = names.id(Some("error"));
        let float_column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        };
        let int_column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
        };
        let latency = float_column(column::LATENCY_MS);
        let input_tokens = int_column(column::INPUT_TOKENS);
        let output_tokens = int_column(column::OUTPUT_TOKENS);
        for row in 0..batch.num_rows() {
            let minute = timestamps.value(row).div_euclid(MINUTE_NANOS) * MINUTE_NANOS;
            let ids: [u32; 5] = std::array::from_fn(|i| dimensions[i].id(row, names));
            let accumulator = self.groups.entry((minute, ids)).or_default();
            accumulator.count = accumulator.count.saturating_add(1);
            if ids[4] == error_id {
                accumulator.errors = accumulator.errors.saturating_add(1);
            }
            if let Some(latency) = latency.filter(|l| !l.is_null(row)) {
                let value = latency.value(row);
                accumulator.latency_count = accumulator.latency_count.saturating_add(1);
                accumulator.latency_sum =
                    accumulator.latency_sum.saturating_add(latency_units(value));
                accumulator.latency_min = accumulator.latency_min.min(value);
                accumulator.latency_max = accumulator.latency_max.max(value);
                accumulator.sketch.add(value);
            }
            if let Some(tokens) = input_tokens.filter(|t| !t.is_null(row)) {
                accumulator.input_tokens =
                    accumulator.input_tokens.saturating_add(tokens.value(row));
            }
            if let Some(tokens) = output_tokens.filter(|t| !t.is_null(row)) {
                accumulator.output_tokens =
                    accumulator.output_tokens.saturating_add(tokens.value(row));
            }
        }
        Ok(())
    }

    /// Folds already-rolled-up rows in (merging sketches).
    pub fn add_rollups(&mut self, batch: &RecordBatch) -> Result<(), StoreError> {
        use rollup_column::*;
        let bad = || StoreError::Internal("rollup batch with an unexpected schema".into());
        let get = |name: &str| batch.column_by_name(name).ok_or_else(bad);
        let minutes = get(MINUTE)?
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .ok_or_else(bad)?;
        let dimensions: Vec<DimensionIds> = ROLLUP_DIMENSIONS
            .iter()
            .map(|name| DimensionIds::new(batch.column_by_name(name), &mut self.names))
            .collect();
        let ints = |name: &str| -> Result<&Int64Array, StoreError> {
            get(name)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(bad)
        };
        let floats = |name: &str| -> Result<&Float64Array, StoreError> {
            get(name)?
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(bad)
        };
        let (count, errors, latency_count) =
            (ints(COUNT)?, ints(ERROR_COUNT)?, ints(LATENCY_COUNT)?);
        let (sum, min, max) = (
            floats(LATENCY_SUM)?,
            floats(LATENCY_MIN)?,
            floats(LATENCY_MAX)?,
        );
        let (input_tokens, output_tokens) = (ints(INPUT_TOKENS_SUM)?, ints(OUTPUT_TOKENS_SUM)?);
        let sketches = get(LATENCY_SKETCH)?
            .as_any()
            .downcast_ref::<BinaryArray>()
            .ok_or_else(bad)?;
        for row in 0..batch.num_rows() {
            let ids = std::array::from_fn(|i| dimensions[i].id(row, &mut self.names));
            let sketch = QuantileSketch::from_bytes(sketches.value(row))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            let accumulator = Accumulator {
                count: count.value(row),
                errors: errors.value(row),
                latency_count: latency_count.value(row),
                latency_sum: latency_units(sum.value(row)),
                latency_min: if min.is_null(row) {
                    f64::INFINITY
                } else {
                    min.value(row)
                },
                latency_max: if max.is_null(row) {
                    f64::NEG_INFINITY
                } else {
                    max.value(row)
                },
                sketch,
                input_tokens: input_tokens.value(row),
                output_tokens: output_tokens.value(row),
            };
            self.fold((minutes.value(row), ids), &accumulator);
        }
        Ok(())
    }

    fn fold(&mut self, key: RollupKey, other: &Accumulator) {
        let mine = self.groups.entry(key).or_default();
        mine.count = mine.count.saturating_add(other.count);
        mine.errors = mine.errors.saturating_add(other.errors);
        mine.latency_count = mine.latency_count.saturating_add(other.latency_count);
        mine.latency_sum = mine.latency_sum.saturating_add(other.latency_sum);
        mine.latency_min = mine.latency_min.min(other.latency_min);
        mine.latency_max = mine.latency_max.max(other.latency_max);
        mine.sketch.merge(&other.sketch);
        mine.input_tokens = mine.input_tokens.saturating_add(other.input_tokens);
        mine.output_tokens = mine.output_tokens.saturating_add(other.output_tokens);
    }

    /// Number of rollup rows so far.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The rollup rows, sorted by (minute, dimensions) so output is deterministic.
    pub fn finish(self) -> Result<RecordBatch, StoreError> {
        let names = &self.names;
        let mut rows: Vec<(RollupRowKey, Accumulator)> = self
            .groups
            .into_iter()
            .map(|((minute, ids), accumulator)| {
                ((minute, ids.map(|id| names.name(id))), accumulator)
            })
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut minute = TimestampNanosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
        let mut dimensions: Vec<StringBuilder> =
            (0..5).map(|_| StringBuilder::new()).collect::<Vec<_>>();
        let mut count = Int64Builder::new();
        let mut errors = Int64Builder::new();
        let mut latency_count = Int64Builder::new();
        let mut sum = Float64Builder::new();
        let mut min = Float64Builder::new();
        let mut max = Float64Builder::new();
        let mut sketch = BinaryBuilder::new();
        let mut input_tokens = Int64Builder::new();
        let mut output_tokens = Int64Builder::new();
        for ((row_minute, values), accumulator) in &rows {
            minute.append_value(*row_minute);
            for (builder, value) in dimensions.iter_mut().zip(values) {
                builder.append_option(*value);
            }
            count.append_value(accumulator.count);
            errors.append_value(accumulator.errors);
            latency_count.append_value(accumulator.latency_count);
            sum.append_value(accumulator.latency_sum as f64 / LATENCY_SUM_UNITS_PER_MS);
            let has_latency = accumulator.latency_count > 0;
            min.append_option(has_latency.then_some(accumulator.latency_min));
            max.append_option(has_latency.then_some(accumulator.latency_max));
            sketch.append_value(accumulator.sketch.to_bytes());
            input_tokens.append_value(accumulator.input_tokens);
            output_tokens.append_value(accumulator.output_tokens);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(minute.finish())];
        for mut builder in dimensions {
            columns.push(Arc::new(builder.finish()));
        }
        columns.extend([
            Arc::new(count.finish()) as ArrayRef,
            Arc::new(errors.finish()),
            Arc::new(latency_count.finish()),
            Arc::new(sum.finish()),
            Arc::new(min.finish()),
            Arc::new(max.finish()),
            Arc::new(sketch.finish()),
            Arc::new(input_tokens.finish()),
            Arc::new(output_tokens.finish()),
        ]);
        RecordBatch::try_new(rollup_schema(), columns).map_err(|e| StoreError::Arrow(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    /// Events with the five dimensions as plain strings or as dictionaries.
    fn events(dictionary: bool) -> RecordBatch {
        let minute = 1_767_225_600_000_000_000i64;
        let rows: [(i64, [Option<&str>; 5], f64); 5] = [
            (
                minute,
                [Some("m"), Some("1"), None, Some("a"), Some("ok")],
                10.0,
            ),
            (
                minute + 1,
                [Some("m"), Some("1"), None, Some("a"), Some("error")],
                20.0,
            ),
            (
                minute + 2,
                [Some("m"), Some("1"), None, Some("a"), Some("ok")],
                30.0,
            ),
            (
                minute + 3,
                [Some("n"), Some("2"), Some("x"), Some("b"), Some("error")],
                40.0,
            ),
            (
                minute + MINUTE_NANOS,
                [Some("m"), Some("1"), None, Some("a"), Some("ok")],
                50.0,
            ),
        ];
        let mut fields = vec![Field::new(
            column::TIMESTAMP,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from(rows.iter().map(|row| row.0).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )];
        for (index, name) in ROLLUP_DIMENSIONS.iter().enumerate() {
            let values: Vec<Option<&str>> = rows.iter().map(|row| row.1[index]).collect();
            if dictionary {
                let array: DictionaryArray<Int32Type> = values.into_iter().collect();
                fields.push(Field::new(*name, array.data_type().clone(), true));
                columns.push(Arc::new(array));
            } else {
                fields.push(Field::new(*name, DataType::Utf8, true));
                columns.push(Arc::new(StringArray::from(values)));
            }
        }
        fields.push(Field::new(column::LATENCY_MS, DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(
            rows.iter().map(|row| row.2).collect::<Vec<_>>(),
        )));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    fn rollup_of(batches: &[RecordBatch]) -> RecordBatch {
        let mut builder = RollupBuilder::new();
        for batch in batches {
            builder.add_events(batch).unwrap();
        }
        builder.finish().unwrap()
    }

    #[test]
    fn dictionary_and_plain_dimensions_fold_into_the_same_rows() {
        let plain = rollup_of(&[events(false)]);
        assert_eq!(plain, rollup_of(&[events(true)]));
        // Two minutes, three groups in the first: (m, ok), (m, error), (n, error).
        assert_eq!(plain.num_rows(), 4);
        let column = |name: &str| {
            plain
                .column_by_name(name)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        };
        // Rows sorted by minute, then by the values (`error` before `ok`).
        assert_eq!(column(rollup_column::COUNT), vec![1, 2, 1, 1]);
        assert_eq!(column(rollup_column::ERROR_COUNT), vec![1, 0, 1, 0]);
        // Batches of both kinds, with their own dictionaries, merge by value.
        let mixed = rollup_of(&[events(true), events(false)]);
        assert_eq!(mixed.num_rows(), 4);
        let counts = mixed
            .column_by_name(rollup_column::COUNT)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(counts.values().to_vec(), vec![2, 4, 2, 2]);
    }
}

#[cfg(test)]
mod sum_tests {
    use super::*;
    use arrow::array::Float64Array;

    /// One minute of one group, latencies in the given order.
    fn latencies(values: &[f64]) -> RecordBatch {
        let minute = 1_767_225_600_000_000_000i64;
        let mut fields = vec![Field::new(
            column::TIMESTAMP,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )];
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from(vec![minute; values.len()]).with_timezone("UTC"),
        )];
        for name in ROLLUP_DIMENSIONS {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(vec![Some("m"); values.len()])));
        }
        fields.push(Field::new(column::LATENCY_MS, DataType::Float64, true));
        columns.push(Arc::new(Float64Array::from(values.to_vec())));
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    fn latency_sum(batches: &[RecordBatch]) -> f64 {
        let mut builder = RollupBuilder::new();
        for batch in batches {
            builder.add_events(batch).unwrap();
        }
        let rollup = builder.finish().unwrap();
        rollup
            .column_by_name(rollup_column::LATENCY_SUM)
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0)
    }

    #[test]
    fn issue_16_latency_sums_do_not_depend_on_row_or_batch_order() {
        // In f64, 1e9 + 0.1 + ... depends on the order; in fixed point it cannot.
        let values = [1e9, 0.1, 0.2, 0.3, 123.456789, 1e-3, 7e8];
        let mut reversed = values;
        reversed.reverse();
        let forward = latency_sum(&[latencies(&values)]);
        assert_eq!(forward, latency_sum(&[latencies(&reversed)]));
        assert_eq!(
            forward,
            latency_sum(&[latencies(&values[3..]), latencies(&values[..3])])
        );
        assert!((forward - 1_700_000_124.057_789).abs() < 1e-6, "{forward}");
        // Extreme values saturate instead of overflowing or going infinite.
        let extreme = latency_sum(&[latencies(&[f64::MAX, f64::MAX, 1.0])]);
        assert!(extreme.is_finite() && extreme > 1e30, "{extreme}");
    }
}
