//! Parquet segment files: sorted by timestamp, zstd, with statistics.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, TimestampNanosecondArray};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use inferwatch_core::column;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{
    compute_leaves, ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn,
};
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
            // Nearly one distinct value per event: a dictionary would be
            // built per row and then abandoned for plain pages.
            column::REQUEST_ID | column::INPUT_HASH => Some(Encoding::DELTA_BYTE_ARRAY),
            column::ENTROPY | column::MARGIN => Some(Encoding::BYTE_STREAM_SPLIT),
            _ => None,
        };
        // Text columns (identities, labels) hold values spread over every
        // page of a time-sorted file, so min/max never prunes them, and
        // computing it costs a string comparison per row: about a fifth of
        // the encoding time.
        if is_text(field.data_type()) {
            builder = builder.set_column_statistics_enabled(path.clone(), EnabledStatistics::None);
        }
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

/// Strings, plain or dictionary-encoded.
fn is_text(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, values) => is_text(values),
        _ => false,
    }
}

/// Writes `batch` to `path` atomically (tmp file, fsync, rename).
pub fn write_parquet(path: &Path, batch: &RecordBatch, sorted: bool) -> Result<u64, StoreError> {
    write_parquet_batches(
        path,
        batch.schema_ref(),
        std::slice::from_ref(batch),
        sorted,
    )
}

/// Writes `batches` (all of `schema`, in order) to `path` as one file,
/// atomically. The writer cuts row groups itself, so the batches need not
/// be concatenated first. On failure (a full disk) the partial file is
/// removed, and the error names it.
pub fn write_parquet_batches(
    path: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    sorted: bool,
) -> Result<u64, StoreError> {
    let directory = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(|e| StoreError::io(directory, e))?;
    let temporary = path.with_extension("parquet.tmp");
    let written = write_parquet_file(path, &temporary, schema, batches, sorted);
    if written.is_err() {
        // Give the space back now; a crash here is cleaned up on open.
        let _ = std::fs::remove_file(&temporary);
    }
    written
}

fn write_parquet_file(
    path: &Path,
    temporary: &Path,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    sorted: bool,
) -> Result<u64, StoreError> {
    let file = File::create(temporary).map_err(|e| StoreError::io(temporary, e))?;
    // Writes go through the Parquet writer, whose errors name no file.
    let parquet_error = |e: parquet::errors::ParquetError| match e {
        parquet::errors::ParquetError::External(inner) => {
            match inner.downcast::<std::io::Error>() {
                Ok(io) => StoreError::io(temporary, *io),
                Err(other) => StoreError::Parquet(format!("{}: {other}", temporary.display())),
            }
        }
        other => StoreError::Parquet(format!("{}: {other}", temporary.display())),
    };
    // The ArrowWriter only sets up the file (schema, properties, Arrow
    // metadata); row groups are encoded column-parallel below.
    let (mut file_writer, factory) = ArrowWriter::try_new(
        file,
        schema.clone(),
        Some(writer_properties(schema, sorted)),
    )
    .and_then(ArrowWriter::into_serialized_writer)
    .map_err(parquet_error)?;
    for (index, row_group) in row_groups(batches).iter().enumerate() {
        let writers = factory
            .create_column_writers(index)
            .map_err(parquet_error)?;
        let mut leaves: Vec<Vec<ArrowLeafColumn>> = writers.iter().map(|_| Vec::new()).collect();
        for batch in row_group {
            let mut leaf = 0;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                for column_leaf in compute_leaves(field, column).map_err(parquet_error)? {
                    leaves[leaf].push(column_leaf);
                    leaf += 1;
                }
            }
        }
        let chunks = encode_columns(writers, leaves).map_err(parquet_error)?;
        let mut row_group_writer = file_writer.next_row_group().map_err(parquet_error)?;
        for chunk in chunks {
            chunk
                .append_to_row_group(&mut row_group_writer)
                .map_err(parquet_error)?;
        }
        row_group_writer.close().map_err(parquet_error)?;
    }
    let file = file_writer.into_inner().map_err(parquet_error)?;
    file.sync_all().map_err(|e| StoreError::io(temporary, e))?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    std::fs::rename(temporary, path).map_err(|e| StoreError::io(path, e))?;
    Ok(bytes)
}

/// Cuts `batches` into row groups of [`ROW_GROUP_ROWS`] rows (slices, no copies).
fn row_groups(batches: &[RecordBatch]) -> Vec<Vec<RecordBatch>> {
    let mut groups: Vec<Vec<RecordBatch>> = Vec::new();
    let mut rows_in_last = ROW_GROUP_ROWS;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            if rows_in_last == ROW_GROUP_ROWS {
                groups.push(Vec::new());
                rows_in_last = 0;
            }
            let take = (ROW_GROUP_ROWS - rows_in_last).min(batch.num_rows() - offset);
            if let Some(group) = groups.last_mut() {
                group.push(batch.slice(offset, take));
            }
            rows_in_last += take;
            offset += take;
        }
    }
    groups
}

/// Encodes one row group's columns on two threads (alternate columns), so a
/// flush keeps pace with the decoders; chunks come back in column order.
fn encode_columns(
    writers: Vec<ArrowColumnWriter>,
    leaves: Vec<Vec<ArrowLeafColumn>>,
) -> parquet::errors::Result<Vec<ArrowColumnChunk>> {
    let encode = |jobs: Vec<(usize, ArrowColumnWriter, Vec<ArrowLeafColumn>)>| {
        jobs.into_iter()
            .map(|(index, mut writer, leaves)| {
                for leaf in &leaves {
                    writer.write(leaf)?;
                }
                Ok((index, writer.close()?))
            })
            .collect::<parquet::errors::Result<Vec<_>>>()
    };
    let (mut here, mut there) = (Vec::new(), Vec::new());
    for (index, (writer, leaves)) in writers.into_iter().zip(leaves).enumerate() {
        if index % 2 == 0 {
            here.push((index, writer, leaves));
        } else {
            there.push((index, writer, leaves));
        }
    }
    let (mine, theirs) = std::thread::scope(|scope| {
        let other = scope.spawn(|| encode(there));
        let mine = encode(here);
        let theirs = other.join().unwrap_or_else(|_| {
            Err(parquet::errors::ParquetError::General(
                "a column encoder thread panicked".into(),
            ))
        });
        (mine, theirs)
    });
    let mut all = mine?;
    all.extend(theirs?);
    all.sort_by_key(|(index, _)| *index);
    Ok(all.into_iter().map(|(_, chunk)| chunk).collect())
}

/// Reads a whole Parquet file. A file that is not valid Parquet (cut
/// short, overwritten) is [`StoreError::Corrupt`], naming it.
pub fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(64 * 1024).build())
        .map_err(|e| corrupt(e.to_string()))?;
    reader
        .map(|batch| batch.map_err(|e| corrupt(e.to_string())))
        .collect()
}

/// A Parquet file's rows and column names, from its footer.
pub type ParquetShape = (usize, Vec<String>);

/// A Parquet file's rows and column names from its footer alone, or `None`
/// when the footer cannot be read.
pub fn parquet_shape(path: &Path) -> Option<ParquetShape> {
    let file = File::open(path).ok()?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
    let rows = usize::try_from(builder.metadata().file_metadata().num_rows()).ok()?;
    let names = builder
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    Some((rows, names))
}

/// Checks that `path` is readable Parquet as far as its footer tells
/// (magic bytes, metadata, the column chunks lying within the file): what
/// a truncated or overwritten file fails. Damage inside a data page is only
/// found when that page is read.
pub fn check_parquet(path: &Path) -> Result<(), StoreError> {
    let file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let length = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
    let corrupt = |message: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        message,
    };
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| corrupt(e.to_string()))?;
    for row_group in builder.metadata().row_groups() {
        for column in row_group.columns() {
            let (start, bytes) = column.byte_range();
            if start.saturating_add(bytes) > length {
                return Err(corrupt(format!(
                    "column chunk at bytes {start}..{} lies past the end of the {length}-byte file",
                    start.saturating_add(bytes)
                )));
            }
        }
    }
    Ok(())
}

/// Widens `batch` to `schema`: columns it lacks become nulls, others keep their data.
pub fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, StoreError> {
    if batch.schema().as_ref() == schema.as_ref() {
        return Ok(batch.clone());
    }
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| aligned_column(batch, field))
        .collect::<Result<_, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| StoreError::Arrow(e.to_string()))
}

/// `batch`'s column for `field`: cast to its type, or nulls if it has none.
fn aligned_column(batch: &RecordBatch, field: &Field) -> Result<ArrayRef, StoreError> {
    match batch.column_by_name(field.name()) {
        Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
        Some(column) => arrow::compute::cast(column, field.data_type())
            .map_err(|e| StoreError::Arrow(format!("column {}: {e}", field.name()))),
        None => Ok(arrow::array::new_null_array(
            field.data_type(),
            batch.num_rows(),
        )),
    }
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
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let mut order: Vec<(i64, u32, u32)> = Vec::new();
    for (batch_index, batch) in batches.iter().enumerate() {
        let Some(timestamps) = batch
            .column_by_name(column::TIMESTAMP)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            let aligned = batches
                .iter()
                .map(|b| align_to_schema(b, &schema))
                .collect::<Result<Vec<_>, _>>()?;
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
    // Column by column, so that a batch missing a column (a sparse stream)
    // costs one column of nulls at a time, not a widened copy of itself.
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let parts = batches
                .iter()
                .map(|batch| aligned_column(batch, field))
                .collect::<Result<Vec<_>, _>>()?;
            let parts: Vec<&dyn Array> = parts.iter().map(|part| part.as_ref()).collect();
            arrow::compute::interleave(&parts, &indices)
                .map_err(|e| StoreError::Arrow(format!("column {}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns).map_err(|e| StoreError::Arrow(e.to_string()))
}

/// (hour start, that hour's slices in time order), hour by hour.
pub type HourSlices = Vec<(i64, Vec<RecordBatch>)>;

/// The batches as (hour start, slices in time order) when they are already
/// in timestamp order, end to end — the usual case, since logs are written
/// in time order — or `None` when they need [`concat_sorted`]. Saves the
/// sorted copy: a flush then holds its input only.
pub fn split_sorted_by_hour(
    batches: &[RecordBatch],
) -> Result<Option<(SchemaRef, HourSlices)>, StoreError> {
    let schema = union_schema(batches);
    let mut previous = i64::MIN;
    for batch in batches {
        let Some(timestamps) = batch
            .column_by_name(column::TIMESTAMP)
            .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        else {
            return Ok(None);
        };
        if timestamps.null_count() > 0 {
            return Ok(None);
        }
        for &t in timestamps.values().iter() {
            if t < previous {
                return Ok(None);
            }
            previous = t;
        }
    }
    let mut hours: Vec<(i64, Vec<RecordBatch>)> = Vec::new();
    for batch in batches.iter().filter(|b| b.num_rows() > 0) {
        for (hour, slice) in split_by_hour(&align_to_schema(batch, &schema)?)? {
            match hours.last_mut() {
                Some((last, slices)) if *last == hour => slices.push(slice),
                _ => hours.push((hour, vec![slice])),
            }
        }
    }
    Ok(Some((schema, hours)))
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

    #[test]
    fn text_columns_carry_no_min_max_while_times_and_numbers_do() {
        use arrow::array::{DictionaryArray, Float64Array};
        use arrow::datatypes::Int32Type;
        let times = TimestampNanosecondArray::from(vec![1_i64, 2, 3]).with_timezone("UTC");
        let models: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let batch = RecordBatch::try_from_iter(vec![
            (column::TIMESTAMP, Arc::new(times) as ArrayRef),
            (column::MODEL_ID, Arc::new(models) as ArrayRef),
            (
                column::CLIENT_ID,
                Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
            ),
            (
                column::LATENCY_MS,
                Arc::new(Float64Array::from(vec![5.0, 1.0, 9.0])) as ArrayRef,
            ),
        ])
        .unwrap();
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("segment.parquet");
        write_parquet(&path, &batch, true).unwrap();
        let file = File::open(&path).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let metadata = parquet::file::reader::FileReader::metadata(&reader);
        let row_group = metadata.row_group(0);
        let has_min_max = |index: usize| {
            row_group
                .column(index)
                .statistics()
                .is_some_and(|statistics| statistics.min_bytes_opt().is_some())
        };
        assert!(has_min_max(0), "timestamps keep min/max for time pruning");
        assert!(!has_min_max(1), "dictionary text has no min/max");
        assert!(!has_min_max(2), "plain text has no min/max");
        assert!(has_min_max(3), "numbers keep min/max");
        assert_eq!(read_parquet(&path).unwrap()[0].num_rows(), 3);
    }
}
