//! SQL functions: `time_bucket`, `quantile` and `quantile_merge`.
//!
//! `quantile(x, q)` uses the same DDSketch as detection and rollups, so a
//! p99 over raw events and one merged from rollup sketches agree within the
//! sketch's 1 % relative error. `quantile_merge(sketch, q)` is its rollup
//! form: it merges stored sketches instead of adding values.
//!
//! `sketch_merge(sketch)` merges sketches into one (as bytes) and
//! `sketch_quantile(sketch, q)` reads a quantile from such bytes. The rollup
//! rewrite uses the pair so that p50, p95 and p99 of one group merge its
//! sketches once, not once per quantile; `sketch_merge` has a grouped
//! accumulator (one sketch per group, no boxed accumulator per group).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Float64Type, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, EmitTo, GroupsAccumulator,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_expr::expressions::Literal;
use inferwatch_core::QuantileSketch;

/// Nanoseconds in a minute, the rollup grain.
pub const MINUTE_NANOS: i64 = 60_000_000_000;

/// Reads a bucket width: an interval, or text such as `'1 minute'`, `'5m'`, `'1 hour'`.
pub fn bucket_width_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::IntervalMonthDayNano(Some(interval)) if interval.months == 0 => {
            Some(interval.days as i64 * 86_400_000_000_000 + interval.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(interval)) => Some(
            interval.days as i64 * 86_400_000_000_000 + interval.milliseconds as i64 * 1_000_000,
        ),
        ScalarValue::Utf8(Some(text))
        | ScalarValue::LargeUtf8(Some(text))
        | ScalarValue::Utf8View(Some(text)) => parse_width_text(text),
        _ => None,
    }
    .filter(|width| *width > 0)
}

fn parse_width_text(text: &str) -> Option<i64> {
    let text = text.trim().to_ascii_lowercase();
    if let Ok(nanos) = inferwatch_core::parse_duration(&text) {
        return Some(nanos);
    }
    let (number, unit) = text.split_once(' ')?;
    let number: i64 = number.trim().parse().ok()?;
    let unit = unit.trim();
    let unit = if unit == "ms" {
        unit
    } else {
        unit.trim_end_matches('s')
    };
    let scale = match unit {
        "millisecond" | "ms" => 1_000_000,
        "second" | "sec" => 1_000_000_000,
        "minute" | "min" => MINUTE_NANOS,
        "hour" => 60 * MINUTE_NANOS,
        "day" => 24 * 60 * MINUTE_NANOS,
        "week" => 7 * 24 * 60 * MINUTE_NANOS,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// `time_bucket(width, ts)`: the start of the `width`-wide bucket (from the
/// Unix epoch) holding `ts`, as a UTC nanosecond timestamp.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TimeBucket {
    signature: Signature,
}

impl TimeBucket {
    fn new() -> TimeBucket {
        TimeBucket {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimeBucket {
    fn name(&self) -> &str {
        "time_bucket"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Nanosecond,
            Some("UTC".into()),
        ))
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let width = arg_types.first().cloned().unwrap_or(DataType::Utf8);
        Ok(vec![
            width,
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        ])
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [width, timestamps] = args.args.as_slice() else {
            return exec_err!("time_bucket(width, timestamp) takes two arguments");
        };
        let ColumnarValue::Scalar(width) = width else {
            return exec_err!("time_bucket: the width must be a constant such as '1 minute'");
        };
        let Some(width) = bucket_width_nanos(width) else {
            return exec_err!(
                "time_bucket: cannot read the width {width}; use e.g. '1 minute', '5m' or INTERVAL '1 hour'"
            );
        };
        let floor = |t: i64| t.div_euclid(width) * width;
        match timestamps {
            ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(value, _)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::TimestampNanosecond(
                    value.map(floor),
                    Some("UTC".into()),
                )))
            }
            ColumnarValue::Array(array) => {
                let Some(values) = array.as_any().downcast_ref::<TimestampNanosecondArray>() else {
                    return exec_err!("time_bucket: expected a timestamp column");
                };
                let bucketed: TimestampNanosecondArray = values.unary(floor);
                Ok(ColumnarValue::Array(Arc::new(
                    bucketed.with_timezone("UTC"),
                )))
            }
            other => exec_err!(
                "time_bucket: expected a timestamp, got {}",
                other.data_type()
            ),
        }
    }
}

/// Reads the constant `q` of `quantile(x, q)`.
fn quantile_argument(args: &AccumulatorArgs) -> Result<f64> {
    let Some(literal) = args
        .exprs
        .get(1)
        .and_then(|expr| expr.downcast_ref::<Literal>())
    else {
        return plan_err!("{}: q must be a constant between 0 and 1", args.name);
    };
    let q = match literal.value().clone() {
        ScalarValue::Float64(Some(q)) => q,
        ScalarValue::Float32(Some(q)) => q as f64,
        ScalarValue::Int64(Some(q)) => q as f64,
        other => return plan_err!("{}: q must be a number, got {other}", args.name),
    };
    if !(0.0..=1.0).contains(&q) {
        return plan_err!("{}: q must be between 0 and 1, got {q}", args.name);
    }
    Ok(q)
}

/// `quantile(x, q)` (raw values) or `quantile_merge(sketch, q)` (rollup sketches).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Quantile {
    signature: Signature,
    merges_sketches: bool,
}

impl Quantile {
    fn new(merges_sketches: bool) -> Quantile {
        Quantile {
            signature: Signature::any(2, Volatility::Immutable),
            merges_sketches,
        }
    }
}

impl AggregateUDFImpl for Quantile {
    fn name(&self) -> &str {
        if self.merges_sketches {
            "quantile_merge"
        } else {
            "quantile"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        if arg_types.len() != 2 {
            return plan_err!("{}(x, q) takes two arguments", self.name());
        }
        let first = if self.merges_sketches {
            DataType::Binary
        } else if arg_types[0].is_numeric() || arg_types[0] == DataType::Null {
            DataType::Float64
        } else {
            return plan_err!("quantile(x, q): x must be numeric, got {}", arg_types[0]);
        };
        Ok(vec![first, DataType::Float64])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(QuantileAccumulator {
            q: quantile_argument(&args)?,
            sketch: QuantileSketch::default(),
            merges_sketches: self.merges_sketches,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            true,
        ))])
    }
}

#[derive(Debug)]
struct QuantileAccumulator {
    q: f64,
    sketch: QuantileSketch,
    merges_sketches: bool,
}

impl QuantileAccumulator {
    fn merge_sketch_array(&mut self, array: &ArrayRef) -> Result<()> {
        for bytes in sketch_bytes("quantile", array)?.iter().flatten() {
            self.sketch.merge(&read_sketch("quantile", bytes)?);
        }
        Ok(())
    }
}

impl Accumulator for QuantileAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        if self.merges_sketches {
            return self.merge_sketch_array(values);
        }
        let values: &Float64Array = values.as_primitive::<Float64Type>();
        for value in values.iter().flatten() {
            self.sketch.add(value);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if self.sketch.count() == 0 {
            return Ok(ScalarValue::Float64(None));
        }
        Ok(ScalarValue::Float64(Some(self.sketch.quantile(self.q))))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 8 * 1024
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.sketch.to_bytes()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        match states.first() {
            Some(array) => self.merge_sketch_array(array),
            None => Ok(()),
        }
    }
}

/// `sketch_merge(sketch)`: the merge of a column of sketch bytes, as bytes.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchMerge {
    signature: Signature,
}

impl SketchMerge {
    fn new() -> SketchMerge {
        SketchMerge {
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for SketchMerge {
    fn name(&self) -> &str {
        "sketch_merge"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchMergeAccumulator::default()))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new(
            format!("{}[sketch]", args.name),
            DataType::Binary,
            true,
        ))])
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SketchMergeGroups::default()))
    }
}

/// `array` as sketch bytes; errors name `function`.
fn sketch_bytes<'a>(function: &str, array: &'a ArrayRef) -> Result<&'a BinaryArray> {
    match array.as_any().downcast_ref::<BinaryArray>() {
        Some(sketches) => Ok(sketches),
        None => exec_err!(
            "{function}: expected sketch bytes, got {}",
            array.data_type()
        ),
    }
}

fn read_sketch(function: &str, bytes: &[u8]) -> Result<QuantileSketch> {
    QuantileSketch::from_bytes(bytes).or_else(|error| exec_err!("{function}: {error}"))
}

/// Merges `other` into a group's sketch, which may not exist yet.
fn merge_into(slot: &mut Option<QuantileSketch>, other: QuantileSketch) {
    match slot {
        Some(sketch) => sketch.merge(&other),
        empty => *empty = Some(other),
    }
}

/// The merged sketch of each group; `None` until a group sees a sketch.
#[derive(Debug, Default)]
struct SketchMergeGroups {
    sketches: Vec<Option<QuantileSketch>>,
}

impl SketchMergeGroups {
    fn fold(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.sketches.resize_with(total_num_groups, || None);
        let Some(values) = values.first() else {
            return Ok(());
        };
        let sketches = sketch_bytes("sketch_merge", values)?;
        for (row, &group) in group_indices.iter().enumerate() {
            if sketches.is_null(row) || filter.is_some_and(|f| !f.value(row) || f.is_null(row)) {
                continue;
            }
            merge_into(
                &mut self.sketches[group],
                read_sketch("sketch_merge", sketches.value(row))?,
            );
        }
        Ok(())
    }
}

impl GroupsAccumulator for SketchMergeGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let emitted = emit_to.take_needed(&mut self.sketches);
        let bytes: BinaryArray = emitted
            .iter()
            .map(|sketch| sketch.as_ref().map(QuantileSketch::to_bytes))
            .collect();
        Ok(Arc::new(bytes))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.fold(values, group_indices, None, total_num_groups)
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        // A row's state is its own sketch; filtered-out rows become NULL.
        let Some(values) = values.first() else {
            return exec_err!("sketch_merge takes one argument");
        };
        let sketches = sketch_bytes("sketch_merge", values)?;
        let kept: BinaryArray = (0..sketches.len())
            .map(|row| {
                let filtered_out = opt_filter.is_some_and(|f| f.is_null(row) || !f.value(row));
                (!filtered_out && sketches.is_valid(row)).then(|| sketches.value(row))
            })
            .collect();
        Ok(vec![Arc::new(kept)])
    }

    fn size(&self) -> usize {
        // A latency sketch holds a few hundred bins.
        self.sketches.len() * (std::mem::size_of::<Option<QuantileSketch>>() + 2048)
    }
}

/// The ungrouped form of [`SketchMergeGroups`].
#[derive(Debug, Default)]
struct SketchMergeAccumulator {
    sketch: Option<QuantileSketch>,
}

impl Accumulator for SketchMergeAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        for bytes in sketch_bytes("sketch_merge", values)?.iter().flatten() {
            merge_into(&mut self.sketch, read_sketch("sketch_merge", bytes)?);
        }
        Ok(())
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(
            self.sketch.as_ref().map(QuantileSketch::to_bytes),
        ))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self) + 2048
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }
}

/// `sketch_quantile(sketch, q)`: the `q` quantile of sketch bytes (NULL for
/// a NULL or empty sketch).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchQuantile {
    signature: Signature,
}

impl SketchQuantile {
    fn new() -> SketchQuantile {
        SketchQuantile {
            signature: Signature::exact(
                vec![DataType::Binary, DataType::Float64],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for SketchQuantile {
    fn name(&self) -> &str {
        "sketch_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [sketches, q] = args.args.as_slice() else {
            return exec_err!("sketch_quantile(sketch, q) takes two arguments");
        };
        let ColumnarValue::Scalar(ScalarValue::Float64(Some(q))) = q else {
            return exec_err!("sketch_quantile: q must be a constant between 0 and 1");
        };
        if !(0.0..=1.0).contains(q) {
            return exec_err!("sketch_quantile: q must be between 0 and 1, got {q}");
        }
        let quantile = |bytes: &[u8]| -> Result<Option<f64>> {
            let sketch = read_sketch("sketch_quantile", bytes)?;
            Ok((sketch.count() > 0).then(|| sketch.quantile(*q)))
        };
        match sketches {
            ColumnarValue::Scalar(ScalarValue::Binary(bytes)) => {
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(match bytes {
                    Some(bytes) => quantile(bytes)?,
                    None => None,
                })))
            }
            ColumnarValue::Array(array) => {
                let values = sketch_bytes("sketch_quantile", array)?
                    .iter()
                    .map(|bytes| bytes.map_or(Ok(None), quantile))
                    .collect::<Result<Float64Array>>()?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            other => exec_err!(
                "sketch_quantile: expected sketch bytes, got {}",
                other.data_type()
            ),
        }
    }
}

/// The scalar functions inferwatch adds to SQL.
pub fn scalar_functions() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::from(TimeBucket::new()),
        ScalarUDF::from(SketchQuantile::new()),
    ]
}

/// The aggregate functions inferwatch adds to SQL.
pub fn aggregate_functions() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(Quantile::new(false)),
        AggregateUDF::from(Quantile::new(true)),
        AggregateUDF::from(SketchMerge::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_read_like_timescale_and_prometheus() {
        let text = |t: &str| bucket_width_nanos(&ScalarValue::Utf8(Some(t.into())));
        assert_eq!(text("1 minute"), Some(MINUTE_NANOS));
        assert_eq!(text("5 minutes"), Some(5 * MINUTE_NANOS));
        assert_eq!(text("5m"), Some(5 * MINUTE_NANOS));
        assert_eq!(text("1 hour"), Some(60 * MINUTE_NANOS));
        assert_eq!(text("fortnight"), None);
        assert_eq!(text("0s"), None);
    }
}
