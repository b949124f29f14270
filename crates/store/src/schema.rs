//! Stream schemas: the canonical one for `inference`, an evolving one for
//! generic streams.
//!
//! A generic stream's schema only grows: a batch bringing a new field adds a
//! nullable column; older segments read that column as null. A field that
//! changes type is a conflict the writer refuses (decoders catch it first
//! and dead-letter the record).

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::layout::write_atomically;
use crate::StoreError;

/// Merges `incoming` into `known`.
///
/// `Ok(None)` when nothing is new, `Ok(Some(merged))` when columns were
/// added (as nullable, after the known ones), `Err(reason)` on a type clash.
pub fn merge_schema(known: &SchemaRef, incoming: &SchemaRef) -> Result<Option<SchemaRef>, String> {
    let mut added = Vec::new();
    for field in incoming.fields() {
        match known.field_with_name(field.name()) {
            Ok(existing) if existing.data_type() == field.data_type() => {}
            Ok(existing) => {
                return Err(format!(
                    "field '{}' is {} in this stream but {} here",
                    field.name(),
                    existing.data_type(),
                    field.data_type()
                ))
            }
            Err(_) => added.push(field.as_ref().clone().with_nullable(true)),
        }
    }
    if added.is_empty() {
        return Ok(None);
    }
    let mut fields: Vec<_> = known.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(added);
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// Reads a stream schema file (an empty Arrow IPC stream).
pub fn read_stream_schema(path: &Path) -> Result<Option<SchemaRef>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StoreError::io(path, error)),
    };
    let reader =
        StreamReader::try_new(bytes.as_slice(), None).map_err(|e| StoreError::Corrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(Some(reader.schema()))
}

/// Writes a stream schema file atomically.
pub fn write_stream_schema(path: &Path, schema: &SchemaRef) -> Result<(), StoreError> {
    let mut bytes = Vec::new();
    {
        let mut writer = StreamWriter::try_new(&mut bytes, schema)
            .map_err(|e| StoreError::Arrow(e.to_string()))?;
        writer
            .finish()
            .map_err(|e| StoreError::Arrow(e.to_string()))?;
    }
    write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field};

    #[test]
    fn new_fields_are_added_nullable_and_type_changes_refused() {
        let known: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, false)]));
        let same: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        assert!(merge_schema(&known, &same).unwrap().is_none());
        let wider: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("b", DataType::Utf8, false),
            Field::new("a", DataType::Int64, false),
        ]));
        let merged = merge_schema(&known, &wider).unwrap().unwrap();
        assert_eq!(merged.fields().len(), 2);
        assert!(merged.field_with_name("b").unwrap().is_nullable());
        let clash: SchemaRef = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        let reason = merge_schema(&known, &clash).unwrap_err();
        assert!(reason.contains("'a' is Int64"), "{reason}");
    }
}
