//! Store behaviour: WAL visibility, crash recovery, compaction, retention,
//! schema evolution and rollups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, AsArray, Int64Array, StringArray, TimestampNanosecondArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use inferwatch_core::QuantileSketch;
use inferwatch_ingest::{Chunk, Decoder, Mapping};
use inferwatch_store::{
    hour_start, read_parquet, FileKind, FsyncPolicy, RollupBuilder, StoreError, StoreOptions,
    StoreReader, StoreWriter, HOUR_NANOS,
};

const MINUTE: i64 = 60_000_000_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000_000_000;

fn inference_batch(first: u64, count: u64, start: i64, step: i64) -> RecordBatch {
    let mut text = String::new();
    for i in first..first + count {
        let timestamp = start + (i - first) as i64 * step;
        let status = if i % 10 == 0 { "error" } else { "ok" };
        let version = if i % 3 == 0 { "2.1" } else { "2.0" };
        let latency = 10.0 + (i % 97) as f64;
        text.push_str(&format!(
            r#"{{"timestamp":{},"model_id":"recsys","model_version":"{version}","source_id":"src-{}","request_id":"r-{i}","status":"{status}","latency_ms":{latency},"input_tokens":{}}}"#,
            timestamp / 1_000_000,
            i % 4,
            i % 50
        ));
        text.push('\n');
    }
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    let decoded = decoder.decode(&Chunk {
        source: Arc::from("test"),
        first_line: 1,
        first_offset: 0,
        data: text.into_bytes(),
        skipped_bytes: 0,
    });
    assert!(
        decoded.dead_letters.is_empty(),
        "{:?}",
        decoded.dead_letters
    );
    decoded.batch
}

fn options() -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::Always,
        flush_rows: 1 << 30,
        flush_interval: Duration::from_secs(3600),
        compaction_grace: Duration::ZERO,
        ..StoreOptions::default()
    }
}

/// Every stored request id (segments and WAL tail), with multiplicity.
fn stored_request_ids(root: &std::path::Path) -> BTreeMap<String, usize> {
    let reader = StoreReader::open(root).unwrap();
    let snapshot = reader.snapshot("inference", None, None).unwrap();
    let mut batches = snapshot.tail.clone();
    for file in &snapshot.segments {
        batches.extend(read_parquet(&file.path).unwrap());
    }
    let mut ids = BTreeMap::new();
    for batch in batches {
        let column = batch.column_by_name("request_id").unwrap();
        let strings = column.as_any().downcast_ref::<StringArray>().unwrap();
        for id in strings.iter().flatten() {
            *ids.entry(id.to_string()).or_insert(0) += 1;
        }
    }
    ids
}

#[test]
fn appended_events_are_readable_from_the_wal_before_any_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    writer
        .append(
            "inference",
            &inference_batch(0, 100, START, MINUTE / 10),
            None,
        )
        .unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    let snapshot = reader.snapshot("inference", None, None).unwrap();
    assert!(snapshot.segments.is_empty());
    assert_eq!(
        snapshot.tail.iter().map(|b| b.num_rows()).sum::<usize>(),
        100
    );
    writer.close().unwrap();
    let snapshot = reader.snapshot("inference", None, None).unwrap();
    assert!(snapshot.tail.is_empty(), "flushed events leave the tail");
    assert_eq!(stored_request_ids(dir.path()).len(), 100);
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(wal_bytes, 0, "a fully flushed WAL is retired, not re-read");
}

#[test]
fn interval_fsync_acknowledges_in_the_background_and_sync_forces_it() {
    // A long interval: nothing may become durable on its own within the test.
    let dir = tempfile::tempdir().unwrap();
    let slow = StoreOptions {
        fsync: FsyncPolicy::IntervalMs(3_600_000),
        ..options()
    };
    let mut writer = StoreWriter::open(dir.path(), slow).unwrap();
    let first = writer
        .append("inference", &inference_batch(0, 10, START, MINUTE), None)
        .unwrap();
    assert!(
        writer.durable_sequence() < first,
        "an append under an interval policy does not fsync inline"
    );
    writer.sync().unwrap();
    assert_eq!(writer.durable_sequence(), first);
    writer.close().unwrap();

    // A short interval: the syncer makes appends durable with no further call.
    let dir = tempfile::tempdir().unwrap();
    let fast = StoreOptions {
        fsync: FsyncPolicy::IntervalMs(5),
        ..options()
    };
    let mut writer = StoreWriter::open(dir.path(), fast).unwrap();
    let mut last = 0;
    for batch in 0..3 {
        last = writer
            .append(
                "inference",
                &inference_batch(batch * 10, 10, START + batch as i64 * MINUTE, MINUTE),
                None,
            )
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writer.durable_sequence() < last && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        writer.durable_sequence(),
        last,
        "the background fsync acknowledged every append"
    );
    writer.close().unwrap();
    assert_eq!(stored_request_ids(dir.path()).len(), 30);
}

#[test]
fn a_crash_before_flush_loses_nothing_acknowledged_and_resumes_at_the_stored_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
        writer
            .append(
                "inference",
                &inference_batch(0, 50, START, 1_000_000),
                Some("p1"),
            )
            .unwrap();
        writer
            .append(
                "inference",
                &inference_batch(50, 50, START, 1_000_000),
                Some("p2"),
            )
            .unwrap();
        // A crash: no close, no flush.
        writer.crash();
    }
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    assert_eq!(writer.recovered_position(), Some("p2"));
    assert_eq!(writer.buffered_rows(), 100);
    writer
        .append(
            "inference",
            &inference_batch(100, 10, START, 1_000_000),
            Some("p3"),
        )
        .unwrap();
    writer.close().unwrap();
    let ids = stored_request_ids(dir.path());
    assert_eq!(ids.len(), 110);
    assert!(ids.values().all(|&n| n == 1), "each event exactly once");
    let writer = StoreWriter::open(dir.path(), options()).unwrap();
    assert_eq!(
        writer.recovered_position(),
        Some("p3"),
        "kept in the flush mark"
    );
}

#[test]
fn a_torn_wal_tail_is_cut_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
        writer
            .append(
                "inference",
                &inference_batch(0, 20, START, 1_000_000),
                Some("a"),
            )
            .unwrap();
        writer.crash();
    }
    let wal = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&wal).unwrap();
    let whole = bytes.len();
    bytes.extend_from_within(..whole / 2);
    std::fs::write(&wal, &bytes).unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    assert_eq!(writer.buffered_rows(), 20);
    assert_eq!(std::fs::metadata(&wal).unwrap().len() as usize, whole);
    writer
        .append(
            "inference",
            &inference_batch(20, 5, START, 1_000_000),
            Some("b"),
        )
        .unwrap();
    writer.close().unwrap();
    assert_eq!(stored_request_ids(dir.path()).len(), 25);
}

#[test]
fn files_of_an_unfinished_flush_are_ignored_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    writer
        .append("inference", &inference_batch(0, 30, START, 1_000_000), None)
        .unwrap();
    writer.close().unwrap();
    // A segment named beyond the flush mark, as a crash mid-flush leaves it.
    let layout = inferwatch_store::Layout::new(dir.path());
    let current = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    let orphan = layout.data_file_path(
        FileKind::Segment,
        "inference",
        current[0].hour_start,
        99,
        99,
    );
    std::fs::copy(&current[0].path, &orphan).unwrap();
    let half_written = orphan.with_extension("parquet.tmp");
    std::fs::write(&half_written, b"PAR1 torn").unwrap();
    assert_eq!(stored_request_ids(dir.path()).len(), 30);
    assert!(stored_request_ids(dir.path()).values().all(|&n| n == 1));
    let writer = StoreWriter::open(dir.path(), options()).unwrap();
    assert!(!orphan.exists());
    assert!(!half_written.exists());
    drop(writer);
}

#[test]
fn compaction_merges_small_files_without_changing_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.flush_rows = 100;
    options.compact_min_files = 4;
    let mut writer = StoreWriter::open(dir.path(), options).unwrap();
    for part in 0..9u64 {
        writer
            .append(
                "inference",
                &inference_batch(part * 100, 100, START + part as i64 * MINUTE, 1_000_000),
                None,
            )
            .unwrap();
    }
    writer.close().unwrap();
    assert!(writer_stats_compacted(dir.path()) > 0);
    let layout = inferwatch_store::Layout::new(dir.path());
    let files = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    assert!(files.len() < 9, "{} segment files remain", files.len());
    let ids = stored_request_ids(dir.path());
    assert_eq!(ids.len(), 900);
    assert!(ids.values().all(|&n| n == 1));
    // Rollups were merged too and still count every event once.
    let reader = StoreReader::open(dir.path()).unwrap();
    let snapshot = reader.snapshot("inference", None, None).unwrap();
    let mut total = 0;
    for file in snapshot.rollups {
        for batch in read_parquet(&file.path).unwrap() {
            total += batch
                .column_by_name("count")
                .unwrap()
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .sum::<i64>();
        }
    }
    assert_eq!(total, 900);
}

/// Each hour's segment read back: (timestamps, request ids) in file order.
fn segment_rows(root: &std::path::Path) -> Vec<(i64, Vec<(i64, String)>)> {
    let reader = StoreReader::open(root).unwrap();
    let snapshot = reader.snapshot("inference", None, None).unwrap();
    assert!(snapshot.tail.is_empty());
    snapshot
        .segments
        .iter()
        .map(|file| {
            let mut rows = Vec::new();
            for batch in read_parquet(&file.path).unwrap() {
                let times = batch
                    .column_by_name("timestamp")
                    .unwrap()
                    .as_primitive::<TimestampNanosecondType>();
                let ids = batch.column_by_name("request_id").unwrap();
                let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
                for row in 0..batch.num_rows() {
                    rows.push((times.value(row), ids.value(row).to_string()));
                }
            }
            (file.hour_start, rows)
        })
        .collect()
}

#[test]
fn a_flush_writes_each_hour_in_time_order_across_row_groups_whatever_the_arrival_order() {
    // 300,000 rows over two hours: more than two row groups (ROW_GROUP_ROWS)
    // in the first hour, so the column-parallel encoder cuts several.
    let step = 2 * HOUR_NANOS / 300_000 + 1;
    let batches: Vec<RecordBatch> = (0..30u64)
        .map(|part| {
            inference_batch(
                part * 10_000,
                10_000,
                START + part as i64 * 10_000 * step,
                step,
            )
        })
        .collect();
    let in_order = tempfile::tempdir().unwrap();
    let shuffled = tempfile::tempdir().unwrap();
    for (dir, reversed) in [(&in_order, false), (&shuffled, true)] {
        let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
        let order: Vec<&RecordBatch> = if reversed {
            batches.iter().rev().collect()
        } else {
            batches.iter().collect()
        };
        for batch in order {
            writer.append("inference", batch, None).unwrap();
        }
        writer.close().unwrap();
    }
    let expected = segment_rows(in_order.path());
    assert_eq!(expected.len(), 2, "one segment per hour");
    assert_eq!(
        expected.iter().map(|(_, rows)| rows.len()).sum::<usize>(),
        300_000
    );
    for (hour, rows) in &expected {
        assert!(
            rows.windows(2).all(|w| w[0].0 <= w[1].0),
            "hour {hour} out of order"
        );
        assert!(rows.iter().all(|(t, _)| hour_start(*t) == *hour));
    }
    let first_hour = std::fs::File::open(
        &StoreReader::open(in_order.path())
            .unwrap()
            .snapshot("inference", None, None)
            .unwrap()
            .segments[0]
            .path,
    )
    .unwrap();
    let metadata = parquet::file::reader::FileReader::metadata(
        &parquet::file::serialized_reader::SerializedFileReader::new(first_hour).unwrap(),
    )
    .clone();
    assert!(
        metadata.num_row_groups() >= 2,
        "{} row groups",
        metadata.num_row_groups()
    );
    // Batches that arrive out of order are sorted: the same rows, the same order.
    assert_eq!(segment_rows(shuffled.path()), expected);
}

fn writer_stats_compacted(root: &std::path::Path) -> u64 {
    // Merged files are named by the union of their inputs' WAL ranges.
    let layout = inferwatch_store::Layout::new(root);
    layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap()
        .iter()
        .filter(|f| f.last_sequence > f.first_sequence)
        .count() as u64
}

#[test]
fn retention_by_size_drops_the_oldest_hours_and_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.flush_rows = 200;
    options.retention_max_bytes = Some(1);
    let mut writer = StoreWriter::open(dir.path(), options).unwrap();
    for hour in 0..4u64 {
        writer
            .append(
                "inference",
                &inference_batch(hour * 200, 200, START + hour as i64 * HOUR_NANOS, 1_000_000),
                None,
            )
            .unwrap();
    }
    writer.close().unwrap();
    let layout = inferwatch_store::Layout::new(dir.path());
    let hours: std::collections::BTreeSet<i64> = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap()
        .iter()
        .map(|f| f.hour_start)
        .collect();
    assert_eq!(
        hours.into_iter().collect::<Vec<_>>(),
        vec![START + 3 * HOUR_NANOS]
    );
}

#[test]
fn retention_by_age_drops_hours_older_than_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options();
    options.retention_max_age = Some(Duration::from_secs(7 * 24 * 3600));
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options).unwrap();
    writer
        .append("inference", &inference_batch(0, 10, START, 1_000_000), None)
        .unwrap();
    writer
        .append(
            "inference",
            &inference_batch(10, 10, now - HOUR_NANOS, 1_000_000),
            None,
        )
        .unwrap();
    writer.close().unwrap();
    let ids = stored_request_ids(dir.path());
    assert_eq!(ids.len(), 10);
    assert!(ids.contains_key("r-15") && !ids.contains_key("r-5"));
}

fn gateway_batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

#[test]
fn generic_streams_grow_their_schema_and_refuse_type_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    let time = |v: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
    };
    writer
        .append(
            "gateway",
            &gateway_batch(vec![
                ("timestamp", time(vec![START, START + 1])),
                ("path", Arc::new(StringArray::from(vec!["/a", "/b"]))),
            ]),
            None,
        )
        .unwrap();
    writer.flush().unwrap();
    writer
        .append(
            "gateway",
            &gateway_batch(vec![
                ("timestamp", time(vec![START + 2])),
                ("path", Arc::new(StringArray::from(vec!["/c"]))),
                ("bytes", Arc::new(Int64Array::from(vec![512]))),
            ]),
            None,
        )
        .unwrap();
    let schema = writer.stream_schema("gateway").unwrap();
    assert_eq!(
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        vec!["timestamp", "path", "bytes"]
    );
    assert!(schema.field_with_name("bytes").unwrap().is_nullable());
    let clash = writer.append(
        "gateway",
        &gateway_batch(vec![
            ("timestamp", time(vec![START + 3])),
            ("bytes", Arc::new(StringArray::from(vec!["big"]))),
        ]),
        None,
    );
    match clash {
        Err(StoreError::SchemaConflict { message, .. }) => {
            assert!(message.contains("'bytes' is Int64"), "{message}")
        }
        other => panic!("expected a schema conflict, got {other:?}"),
    }
    writer.close().unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    assert_eq!(reader.schema("gateway").unwrap().fields().len(), 3);
    assert!(reader.streams().unwrap().contains(&"gateway".to_string()));
}

#[test]
fn rollups_match_the_raw_events_per_minute() {
    let events = inference_batch(0, 6000, START, 20_000_000); // 2 minutes
    let mut builder = RollupBuilder::new();
    // Fed in two halves, as two flushes would.
    builder.add_events(&events.slice(0, 2500)).unwrap();
    builder.add_events(&events.slice(2500, 3500)).unwrap();
    let rollup = builder.finish().unwrap();
    let times = events
        .column_by_name("timestamp")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    let latency = events
        .column_by_name("latency_ms")
        .unwrap()
        .as_primitive::<Float64Type>();
    let mut expected_count: BTreeMap<i64, i64> = BTreeMap::new();
    let mut expected_latencies: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for row in 0..events.num_rows() {
        let minute = times.value(row).div_euclid(MINUTE) * MINUTE;
        *expected_count.entry(minute).or_default() += 1;
        expected_latencies
            .entry(minute)
            .or_default()
            .push(latency.value(row));
    }
    let minutes = rollup
        .column_by_name("minute")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    let counts = rollup
        .column_by_name("count")
        .unwrap()
        .as_primitive::<Int64Type>();
    let sketches = rollup
        .column_by_name("latency_sketch")
        .unwrap()
        .as_binary::<i32>();
    let mut got_count: BTreeMap<i64, i64> = BTreeMap::new();
    let mut got_sketch: BTreeMap<i64, QuantileSketch> = BTreeMap::new();
    for row in 0..rollup.num_rows() {
        *got_count.entry(minutes.value(row)).or_default() += counts.value(row);
        got_sketch
            .entry(minutes.value(row))
            .or_default()
            .merge(&QuantileSketch::from_bytes(sketches.value(row)).unwrap());
    }
    assert_eq!(got_count, expected_count);
    for (minute, mut values) in expected_latencies {
        values.sort_by(f64::total_cmp);
        let exact = values[((values.len() - 1) as f64 * 0.99).round() as usize];
        let estimate = got_sketch[&minute].quantile(0.99);
        assert!(
            (estimate - exact).abs() <= 0.011 * exact,
            "p99 {estimate} vs exact {exact}"
        );
    }
    let errors: i64 = rollup
        .column_by_name("error_count")
        .unwrap()
        .as_primitive::<Int64Type>()
        .iter()
        .flatten()
        .sum();
    assert_eq!(errors, 600);
}

/// Issue 16: a sparse stream, each batch with field names of its own and
/// out of time order. A flush widens its batches to their union of columns
/// and a compaction reads files back widened, so both are bounded in cells
/// (rows × columns), not rows: no file, and so no flush or merge, holds more
/// than the compaction budget, and every row is kept.
#[test]
fn a_sparse_stream_flushes_and_merges_within_the_cell_budget() {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    let (batches, rows, fields) = (200usize, 100usize, 20usize);
    for batch_index in 0..batches {
        let mut schema_fields = vec![Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        )];
        // Later batches are earlier in time: the sorting path of a flush.
        let first = START + ((batches - batch_index) * rows) as i64 * MINUTE / 100;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(
            TimestampNanosecondArray::from_iter_values(
                (0..rows).map(|row| first + row as i64 * MINUTE / 100),
            )
            .with_timezone("UTC"),
        )];
        for field in 0..fields {
            schema_fields.push(Field::new(
                format!("field_{batch_index}_{field}"),
                DataType::Int64,
                true,
            ));
            columns.push(Arc::new(Int64Array::from_iter_values(
                (0..rows).map(|row| row as i64),
            )));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap();
        writer.append("gateway", &batch, None).unwrap();
    }
    writer.close().unwrap();
    let reader = StoreReader::open(dir.path()).unwrap();
    let snapshot = reader.snapshot("gateway", None, None).unwrap();
    assert!(snapshot.tail.is_empty());
    assert!(
        snapshot.segments.len() > 1,
        "one flush would widen 20,000 rows to 4,001 columns"
    );
    let mut stored = 0;
    for file in &snapshot.segments {
        let read = read_parquet(&file.path).unwrap();
        let file_rows: usize = read.iter().map(RecordBatch::num_rows).sum();
        let columns = read[0].num_columns();
        assert!(
            file_rows * columns <= inferwatch_store::MAX_COMPACTION_CELLS,
            "{}: {file_rows} rows x {columns} columns",
            file.path.display()
        );
        stored += file_rows;
    }
    assert_eq!(stored, batches * rows);
}

#[test]
fn two_writers_share_one_directory_and_each_compacts_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    let writer_options = |id: &str| StoreOptions {
        flush_rows: 100,
        compact_min_files: 3,
        node_id: id.to_string(),
        ..options()
    };
    let mut a = StoreWriter::open(dir.path(), writer_options("node-a")).unwrap();
    let mut b = StoreWriter::open(dir.path(), writer_options("node-b")).unwrap();
    // Interleaved: both number their WAL records from 1, so without ids
    // their segment names would collide, and each one's compaction would
    // see the other's files as covered.
    for part in 0..8u64 {
        let at = START + part as i64 * MINUTE;
        a.append(
            "inference",
            &inference_batch(part * 100, 100, at, 1_000_000),
            None,
        )
        .unwrap();
        b.append(
            "inference",
            &inference_batch(10_000 + part * 100, 100, at, 1_000_000),
            None,
        )
        .unwrap();
        // Mid-way, a reader sees both writers' segments and WAL tails.
        if part == 4 {
            assert_eq!(stored_request_ids(dir.path()).len(), 1000);
        }
    }
    a.close().unwrap();
    b.close().unwrap();
    let layout = inferwatch_store::Layout::new(dir.path());
    let files = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    for id in ["node-a", "node-b"] {
        let own: Vec<_> = files.iter().filter(|f| f.writer == id).collect();
        assert!(
            !own.is_empty() && own.len() < 8,
            "{id} flushed and compacted its own files: {own:?}"
        );
        assert!(own.iter().all(|f| f
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{id}."))));
    }
    let ids = stored_request_ids(dir.path());
    assert_eq!(ids.len(), 1600, "both writers' events are all visible");
    assert!(ids.values().all(|&n| n == 1), "and none twice");
    // Reopening one writer (its crash recovery) leaves the other's files.
    let before = files.len();
    StoreWriter::open(dir.path(), writer_options("node-b"))
        .unwrap()
        .close()
        .unwrap();
    let after = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    assert_eq!(after.len(), before);
    assert_eq!(stored_request_ids(dir.path()).len(), 1600);
    assert!(
        dir.path().join("wal-node-a").is_dir() && dir.path().join("flushed-node-b.json").is_file()
    );
}

#[test]
fn segments_named_before_writer_ids_still_read_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    writer
        .append("inference", &inference_batch(0, 40, START, 1_000_000), None)
        .unwrap();
    writer.flush().unwrap();
    writer
        .append(
            "inference",
            &inference_batch(40, 40, START + MINUTE, 1_000_000),
            None,
        )
        .unwrap();
    writer.close().unwrap();
    // Rename every file to the old `<first>-<last>.parquet` form.
    let layout = inferwatch_store::Layout::new(dir.path());
    for kind in [FileKind::Segment, FileKind::Rollup] {
        for file in layout.list_files(kind, "inference", None, None).unwrap() {
            let name = file.path.file_name().unwrap().to_string_lossy().to_string();
            let (_, old) = name.split_once('.').unwrap();
            std::fs::rename(&file.path, file.path.with_file_name(old)).unwrap();
        }
    }
    let files = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    assert_eq!(files.len(), 2);
    assert!(files.iter().all(|f| f.writer == "local"));
    assert_eq!(stored_request_ids(dir.path()).len(), 80);
    // The default writer takes them as its own: more flushes compact the
    // old names together with new ones, and nothing is lost or doubled.
    let mut writer = StoreWriter::open(
        dir.path(),
        StoreOptions {
            compact_min_files: 3,
            ..options()
        },
    )
    .unwrap();
    writer
        .append(
            "inference",
            &inference_batch(80, 40, START + 2 * MINUTE, 1_000_000),
            None,
        )
        .unwrap();
    writer.close().unwrap();
    let files = layout
        .list_files(FileKind::Segment, "inference", None, None)
        .unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let ids = stored_request_ids(dir.path());
    assert_eq!(ids.len(), 120);
    assert!(ids.values().all(|&n| n == 1));
}

#[test]
fn a_second_writer_with_the_same_id_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = StoreWriter::open(dir.path(), options()).unwrap();
    let Err(error) = StoreWriter::open(dir.path(), options()) else {
        panic!("a second writer with the same id opened");
    };
    let message = error.to_string();
    assert!(matches!(error, StoreError::InUse { .. }), "{message}");
    assert!(
        message.contains(&format!("pid {}", std::process::id())) && message.contains("--node-id"),
        "{message}"
    );
    // Another writer id shares the directory.
    let other = StoreWriter::open(
        dir.path(),
        StoreOptions {
            node_id: "east".into(),
            ..options()
        },
    )
    .unwrap();
    // The lock goes with its writer.
    first.close().unwrap();
    StoreWriter::open(dir.path(), options()).unwrap();
    drop(other);
}
