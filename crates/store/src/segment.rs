//! Parquet segment files: sorted by timestamp, zstd, with statistics.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
use arrow::compute::{concat_batches, interleave_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use inferwatch_core::column;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::layout::{hour_start, HOUR_NANOS};
use crate::StoreError;

/// Rows per Parquet row group: small enough to prune by time, large enough to compress.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

fn writer_properties(schema: &Schema, sorted_by_timestamp: bool) -> WriterProperties {
    // zstd level 1: most of level 3's ratio here at a fraction of the CPU.
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page);
    // Encodings chosen per shape: sorted times as deltas, ids that share
    // prefixes as prefix deltas.
    for field in schema.fields() {
        let path = ColumnPath::from(field.name().as_str());
        // Floats logged with few decimals (latency, probabilities) stay
        // dictionary-encoded; only full-precision derived ones are split.
        let encoding = match field.name().as_str() {
            column::TIMESTAMP => Some(Encoding::DELTA_BINARY_PACKED),
            column::REQUEST_ID => Some(Encoding::DELTA_BYTE_ARRAY),
            column::ENTROPY | column::MARGIN => Some(Encoding::BYTE_STREAM_SPLIT),
            _ => None,
        };
        if let Some(encoding) = encoding {
            builder = builder
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, encoding);
        }
    }
    if sorted_by_timestamp {
        builder = builder.set_sorting_columns(Some(vec![parquet::file::metadata::SortingColumn {
            column_idx: 0,
            descending: false,
            nulls_first: false,
        }]));
    }
    builder.build()
}

/// Writes `batch` to `path` atomically (tmp file, fsync, rename).
pub fn write_parquet(path: &Path, batch: &RecordBatch, sorted: bool) -> Result<u64, StoreError> {
    let directory = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(|e| StoreError::io(directory, e))?;
    let temporary = path.with_extension("parquet.tmp");
    let file = File::create(&temporary).map_err(|e| StoreError::io(&temporary, e))?;
    let mut writer = ArrowWriter::try_new(
        file,
        batch.schema(),
        Some(writer_properties(batch.schema_ref(), sorted)),
    )
    .map_err(|e| StoreError::Parquet(e.to_string()))?;
    writer
        .write(batch)
        .map_err(|e| StoreError::Parquet(e.to_string()))?;
    let file = writer
        .into_inner()
        .map_err(|e| StoreError::Parquet(e.to_string()))?;
    file.sync_all().map_err(|e| StoreError::io(&temporary, e))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(&temporary, path).map_err(|e| StoreError::io(path, e))?;
    Ok(bytes)
}

/// Reads a whole Parquet file.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| StoreError::Parquet(format!("{}: {e}", path.display())))?;
    reader
        .map(|batch| batch.map_err(|e| StoreError::Arrow(e.to_string())))
        .collect()
}

/// Widens `batch` to `schema`: columns it lacks become nulls, others keep their data.
pub fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StoreError> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
            Some(column) => arrow::compute::cast(column, field.data_type())
                .map_err(|e| StoreError::Arrow(format!("column {}: {e}", field.name()))),
            None => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| StoreError::Arrow(e.to_string()))
}

/// The union of the batches' schemas (fields in first-seen order, all
/// fields present in only some batches nullable).
pub fn union_schema(batches: &[RecordBatch]) -> SchemaRef {
    let mut fields: Vec<Field> = Vec::new();
    for batch in batches {
        for field in batch.schema().fields() {
            if !fields.iter().any(|f| f.name() == field.name()) {
                fields.push(field.as_ref().clone());
            }
        }
    }
    let fields = fields
        .into_iter()
        .map(|field| {
            let nullable = batches.iter().any(|b| {
                b.schema()
                    .field_with_name(field.name())
                    .map_or(true, |f| f.is_nullable())
            });
            field.with_nullable(nullable)
        })
        .collect::<Vec<_>>();
    Arc::new(Schema::new(fields))
}

/// Merges batches (widening schemas) into one, sorted by timestamp.
///
/// Rows are gathered straight into sorted order with one `interleave`
/// (no concatenated intermediate), so a flush holds its input and its output
/// only. Ties keep input order, so the result is deterministic.
pub fn concat_sorted(batches: &[RecordBatch]) -> Result<RecordBatch, StoreError> {
    let schema = union_schema(batches);
    let aligned = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| align_to_schema(b, &schema))
        .collect::<Result<Vec<_>, _>>()?;
    if aligned.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let mut order: Vec<(i64, u32, u32)> = Vec::new();
    for (batch_index, batch) in aligned.iter().enumerate() {
        let Some(timestamps) = batch
            .column_by_name(column::TIMESTAMP)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return concat_batches(&schema, &aligned).map_err(|e| StoreError::Arrow(e.to_string()));
        };
        order.extend(
            timestamps
                .values()
                .iter()
                .enumerate()
                .map(|(row, &t)| (t, batch_index as u32, row as u32)),
        );
    }
    order.sort_unstable();
    let indices: Vec<(usize, usize)> = order
        .into_iter()
        .map(|(_, batch, row)| (batch as usize, row as usize))
        .collect();
    let references: Vec<&RecordBatch> = aligned.iter().collect();
    interleave_record_batch(&references, &indices).map_err(|e| StoreError::Arrow(e.to_string()))
}

/// Splits a timestamp-sorted batch into (hour start, slice) partitions.
pub fn split_by_hour(sorted: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>, StoreError> {
    let Some(timestamps) = sorted
        .column_by_name(column::TIMESTAMP)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return Err(StoreError::Internal(
            "a stream batch without a timestamp column".into(),
        ));
    };
    let values = timestamps.values();
    let mut parts = Vec::new();
    let mut start = 0usize;
    while start < values.len() {
        let hour = hour_start(values[start]);
        let end_of_hour = hour + HOUR_NANOS;
        let end = start + values[start..].partition_point(|&t| t < end_of_hour);
        parts.push((hour, sorted.slice(start, end - start)));
        start = end;
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};

    #[test]
    fn union_and_align_widen_with_nulls() {
        let a = RecordBatch::try_from_iter(vec![(
            "x",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )])
        .unwrap();
        let b = RecordBatch::try_from_iter(vec![(
            "y",
            Arc::new(StringArray::from(vec!["q"])) as ArrayRef,
        )])
        .unwrap();
        let merged = concat_sorted(&[a, b]).unwrap();
        assert_eq!(merged.num_rows(), 3);
        assert_eq!(merged.schema().fields().len(), 2);
        assert_eq!(merged.column(0).null_count(), 1);
        assert_eq!(merged.column(1).null_count(), 2);
    }
}
