//! Helpers shared by the detect integration tests.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringDictionaryBuilder};
use arrow::datatypes::Int32Type;

/// A dictionary-encoded string column, as the decoder builds them.
pub fn dictionary(values: Vec<&str>) -> ArrayRef {
    let mut builder = StringDictionaryBuilder::<Int32Type>::new();
    values.into_iter().for_each(|v| builder.append_value(v));
    Arc::new(builder.finish())
}
