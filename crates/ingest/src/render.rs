//! Decoded rows as JSON, for `inferwatch map`, golden tests and debugging.

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int32Type, Int64Type, TimestampNanosecondType,
};
use serde_json::{Map, Number, Value};

/// Renders every row of `batch` as a JSON object. Keys are sorted (stable
/// across runs), null columns are left out, timestamps are RFC 3339, and
/// `f32` list items are printed with their shortest exact decimal form.
pub fn batch_to_json_rows(batch: &RecordBatch) -> Vec<Value> {
    (0..batch.num_rows())
        .map(|row| row_to_json(batch, row))
        .collect()
}

/// Renders one row of `batch` (see [`batch_to_json_rows`]).
pub fn row_to_json(batch: &RecordBatch, row: usize) -> Value {
    let mut object = Map::new();
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        if let Some(value) = cell_to_json(array.as_ref(), row) {
            object.insert(field.name().clone(), value);
        }
    }
    Value::Object(object)
}

fn cell_to_json(array: &dyn Array, row: usize) -> Option<Value> {
    if row >= array.len() || array.is_null(row) {
        return None;
    }
    Some(match array.data_type() {
        DataType::Timestamp(_, _) => {
            let nanos = array
                .as_primitive_opt::<TimestampNanosecondType>()?
                .value(row);
            Value::String(inferwatch_core::format_timestamp(nanos))
        }
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_dictionary_opt::<Int32Type>()?;
            let values = dictionary.values().as_any().downcast_ref::<StringArray>()?;
            let key = usize::try_from(dictionary.keys().value(row)).ok()?;
            Value::String(values.value(key).to_string())
        }
        DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => float_json(array.as_primitive::<Float64Type>().value(row)),
        DataType::List(_) => {
            let list = array.as_list::<i32>().value(row);
            let items = list.as_primitive_opt::<Float32Type>()?;
            Value::Array(
                (0..items.len())
                    .map(|index| {
                        if items.is_null(index) {
                            Value::Null
                        } else {
                            f32_json(items.value(index))
                        }
                    })
                    .collect(),
            )
        }
        DataType::Map(_, _) => {
            let entries = array.as_map().value(row);
            let keys = entries.column(0).as_string::<i32>();
            let values = entries.column(1).as_string::<i32>();
            let mut object = Map::new();
            for index in 0..entries.len() {
                let value = if values.is_null(index) {
                    Value::Null
                } else {
                    Value::String(values.value(index).to_string())
                };
                object.insert(keys.value(index).to_string(), value);
            }
            Value::Object(object)
        }
        other => Value::String(format!("<unsupported type {other}>")),
    })
}

fn float_json(value: f64) -> Value {
    Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// `0.1f32` as `0.1`, not `0.10000000149011612`.
fn f32_json(value: f32) -> Value {
    value
        .to_string()
        .parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .map_or(Value::Null, Value::Number)
}
