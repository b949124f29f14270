//! SQL over the store: rollup answers equal raw answers, fresh events are
//! visible, schemas evolve, time pruning keeps results right, bad SQL gets
//! a clear message.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, StringArray, TimestampNanosecondArray,
};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use inferwatch_ingest::{Chunk, Decoder, Mapping};
use inferwatch_query::{QueryEngine, QueryError};
use inferwatch_store::{FsyncPolicy, StoreOptions, StoreWriter};

/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000_000_000;
const SECOND: i64 = 1_000_000_000;

fn events(first: u64, count: u64, start: i64, step: i64) -> RecordBatch {
    let mut text = String::new();
    for i in first..first + count {
        let timestamp = start + (i - first) as i64 * step;
        let status = if i % 13 == 0 { "error" } else { "ok" };
        let version = ["2.0", "2.1", "2.2"][(i % 3) as usize];
        let group = if i % 3 == 1 { "canary" } else { "baseline" };
        text.push_str(&format!(
            r#"{{"timestamp":{},"model_id":"m{}","model_version":"{version}","ab_group":"{group}","source_id":"src-{}","client_id":"c-{}","request_id":"r-{i}","status":"{status}","latency_ms":{},"input_tokens":{},"output_tokens":{}}}"#,
            timestamp / 1_000_000,
            i % 2,
            i % 5,
            i % 17,
            5.0 + ((i * 7919) % 1000) as f64 / 3.0,
            i % 100,
            i % 7
        ));
        text.push('\n');
    }
    let mut decoder = Decoder::new(Arc::new(Mapping::builtin()));
    decoder
        .decode(&Chunk {
            source: Arc::from("test"),
            first_line: 1,
            first_offset: 0,
            data: text.into_bytes(),
            skipped_bytes: 0,
        })
        .batch
}

fn options() -> StoreOptions {
    StoreOptions {
        fsync: FsyncPolicy::IntervalMs(100),
        flush_rows: 5_000,
        flush_interval: Duration::from_secs(3600),
        ..StoreOptions::default()
    }
}

/// A store with 20,000 events over ~5.5 hours, half flushed in several
/// segments, the last batch left in the WAL.
fn populated() -> (tempfile::TempDir, StoreWriter) {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    for part in 0..4u64 {
        let batch = events(
            part * 5_000,
            5_000,
            START + part as i64 * 5_000 * SECOND,
            SECOND,
        );
        writer.append("inference", &batch, None).unwrap();
    }
    writer.flush().unwrap();
    writer
        .append(
            "inference",
            &events(20_000, 1_000, START + 20_000 * SECOND, SECOND),
            None,
        )
        .unwrap();
    writer.sync().unwrap();
    (dir, writer)
}

async fn run(engine: &QueryEngine, sql: &str) -> String {
    let batches = engine
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    pretty_format_batches(&batches).unwrap().to_string()
}

async fn plan(engine: &QueryEngine, sql: &str) -> String {
    run(engine, &format!("EXPLAIN {sql}")).await
}

const ROLLUP_SHAPED: &[&str] = &[
    "SELECT count(*) FROM inference",
    "SELECT count(*) FROM inference WHERE model_id = 'm1'",
    "SELECT model_version, count(*), sum(latency_ms), min(latency_ms), max(latency_ms) FROM inference GROUP BY model_version ORDER BY model_version",
    "SELECT time_bucket('1 hour', timestamp) AS hour, source_id, count(*) AS n, avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate FROM inference GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT date_trunc('hour', timestamp) AS h, count(*) FILTER (WHERE status = 'error') AS errors FROM inference GROUP BY 1 ORDER BY 1",
    "SELECT ab_group, sum(input_tokens), sum(output_tokens), count(latency_ms) FROM inference WHERE timestamp >= '2026-01-01T01:00:00Z' AND timestamp < '2026-01-01T03:00:00Z' GROUP BY 1 ORDER BY 1",
    "SELECT count(DISTINCT source_id), count(DISTINCT model_version) FROM inference",
    "SELECT model_version, round(avg(latency_ms), 6) AS mean FROM inference WHERE status <> 'error' GROUP BY 1 ORDER BY 1",
];

#[tokio::test(flavor = "multi_thread")]
async fn rollup_answers_equal_raw_answers() {
    let (dir, _writer) = populated();
    let rollups = QueryEngine::open(dir.path(), true).unwrap();
    let raw = QueryEngine::open(dir.path(), false).unwrap();
    for sql in ROLLUP_SHAPED {
        let explained = plan(&rollups, sql).await;
        assert!(
            explained.contains("inference_rollups"),
            "{sql} should use rollups:\n{explained}"
        );
        let expected = run(&raw, sql).await;
        let got = run(&rollups, sql).await;
        // avg/sum of floats may differ in the last bits: compare as rounded text.
        assert_eq!(normalise(&got), normalise(&expected), "{sql}");
    }
}

/// Rounds every decimal number in a table to 9 significant digits.
fn normalise(table: &str) -> String {
    table
        .split('|')
        .map(|cell| match cell.trim().parse::<f64>() {
            Ok(value) if cell.contains('.') => format!("{value:.9e}"),
            _ => cell.trim().to_string(),
        })
        .collect::<Vec<_>>()
        .join("|")
}

#[tokio::test(flavor = "multi_thread")]
async fn queries_rollups_cannot_answer_run_on_the_events() {
    let (dir, _writer) = populated();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    let sqls = [
        // A filter on a non-dimension column.
        "SELECT count(*) FROM inference WHERE latency_ms > 100",
        // A time bound that is not on a minute boundary.
        "SELECT count(*) FROM inference WHERE timestamp >= '2026-01-01T01:00:30Z'",
        // Grouping by a non-dimension.
        "SELECT client_id, count(*) FROM inference GROUP BY 1",
        // Median is exact: rollups only hold sketches.
        "SELECT median(latency_ms) FROM inference",
    ];
    assert_no_plan_contains(&engine, &sqls, "inference_rollups").await;
    let unaligned = run(
        &engine,
        "SELECT count(*) FROM inference WHERE timestamp >= '2026-01-01T01:00:30Z' AND timestamp < '2026-01-01T01:01:00Z'",
    )
    .await;
    assert!(unaligned.contains("| 30 "), "{unaligned}");
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_by_client_run_on_dictionary_keys_and_match_the_generic_grouping() {
    let (dir, _writer) = populated();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    let sql = "SELECT client_id, count(*) AS n, count(1) AS ones FROM inference GROUP BY client_id ORDER BY client_id";
    let explained = plan(&engine, sql).await;
    assert!(explained.contains("DictionaryCountExec"), "{explained}");

    // Independently: event i (segments and WAL alike) comes from c-(i % 17).
    let mut expected = std::collections::BTreeMap::<String, i64>::new();
    for i in 0..21_000u64 {
        *expected.entry(format!("c-{}", i % 17)).or_default() += 1;
    }
    let mut got = std::collections::BTreeMap::<String, i64>::new();
    for batch in engine.sql(sql).await.unwrap() {
        let clients = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let clients = clients.as_string::<i32>();
        let counts = batch
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        let ones = batch
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            assert_eq!(counts.value(row), ones.value(row));
            got.insert(clients.value(row).to_string(), counts.value(row));
        }
    }
    assert_eq!(got, expected);

    // Grouping by an expression keeps DataFusion's own aggregate: same table.
    let generic = "SELECT arrow_cast(client_id, 'Utf8') AS client_id, count(*) AS n, count(1) AS ones FROM inference GROUP BY 1 ORDER BY 1";
    assert!(!plan(&engine, generic).await.contains("DictionaryCountExec"));
    assert_eq!(run(&engine, sql).await, run(&engine, generic).await);

    // Counting a column (nulls excluded) or a filtered count is not eligible.
    let sqls = [
        "SELECT client_id, count(request_id) FROM inference GROUP BY 1",
        "SELECT client_id, count(*) FILTER (WHERE status = 'error') FROM inference GROUP BY 1",
        "SELECT client_id, count(DISTINCT source_id) FROM inference GROUP BY 1",
        "SELECT client_id, sum(input_tokens) FROM inference GROUP BY 1",
    ];
    assert_no_plan_contains(&engine, &sqls, "DictionaryCountExec").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn quantiles_from_rollups_and_raw_agree_within_the_sketch_bound() {
    let (dir, _writer) = populated();
    let rollups = QueryEngine::open(dir.path(), true).unwrap();
    let raw = QueryEngine::open(dir.path(), false).unwrap();
    let sql = "SELECT model_version, quantile(latency_ms, 0.5) AS p50, quantile(latency_ms, 0.99) AS p99 FROM inference GROUP BY 1 ORDER BY 1";
    let exact_sql = "SELECT model_version, approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms), approx_percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) FROM inference GROUP BY 1 ORDER BY 1";
    // Both quantiles read one merge of each group's sketches.
    let explained = plan(&rollups, sql).await;
    let aggregates: Vec<&str> = explained
        .lines()
        .filter(|line| line.contains("Aggregate"))
        .collect();
    assert!(!aggregates.is_empty(), "{explained}");
    for line in aggregates {
        assert_eq!(line.matches("sketch_merge(").count(), 1, "{explained}");
    }
    let from_rollups = rollups.sql(sql).await.unwrap();
    let from_raw = raw.sql(sql).await.unwrap();
    let reference = raw.sql(exact_sql).await.unwrap();
    for (batches, name) in [(&from_rollups, "rollups"), (&from_raw, "raw")] {
        for column in 1..=2 {
            let got = batches[0]
                .column(column)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            let want = reference[0]
                .column(column)
                .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
            for row in 0..got.len() {
                let (g, w) = (got.value(row), want.value(row));
                assert!(
                    (g - w).abs() <= 0.02 * w,
                    "{name} column {column} row {row}: {g} vs {w}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_are_visible_at_once() {
    let (dir, mut writer) = populated();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    let before = run(&engine, "SELECT count(*) FROM inference").await;
    assert!(before.contains("| 21000 "), "{before}");
    writer
        .append(
            "inference",
            &events(21_000, 7, START + 30_000 * SECOND, SECOND),
            None,
        )
        .unwrap();
    writer.sync().unwrap();
    // No flush: the events are only in the WAL, and the very next query sees them.
    for sql in [
        "SELECT count(*) FROM inference",
        "SELECT count(*) FROM inference WHERE latency_ms >= 0",
    ] {
        let after = run(&engine, sql).await;
        assert!(after.contains("| 21007 "), "{sql}: {after}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn time_predicates_prune_partitions_without_changing_results() {
    let (dir, _writer) = populated();
    let engine = QueryEngine::open(dir.path(), false).unwrap();
    let one_hour = run(
        &engine,
        "SELECT count(*) FROM inference WHERE timestamp >= '2026-01-01T02:00:00Z' AND timestamp < '2026-01-01T03:00:00Z'",
    )
    .await;
    assert!(one_hour.contains("| 3600 "), "{one_hour}");
    let explained = plan(
        &engine,
        "SELECT count(*) FROM inference WHERE timestamp >= '2026-01-01T02:00:00Z' AND timestamp < '2026-01-01T03:00:00Z'",
    )
    .await;
    assert!(explained.contains("hour=02"), "{explained}");
    assert!(!explained.contains("hour=04"), "{explained}");
}

#[tokio::test(flavor = "multi_thread")]
async fn generic_streams_are_tables_and_missing_columns_read_as_null() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = StoreWriter::open(dir.path(), options()).unwrap();
    let time = |v: Vec<i64>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(v).with_timezone("UTC"))
    };
    let first = RecordBatch::try_from_iter(vec![
        ("timestamp", time(vec![START, START + 1])),
        (
            "path",
            Arc::new(StringArray::from(vec!["/a", "/b"])) as ArrayRef,
        ),
    ])
    .unwrap();
    writer.append("gateway", &first, None).unwrap();
    writer.flush().unwrap();
    let second = RecordBatch::try_from_iter(vec![
        ("timestamp", time(vec![START + 2])),
        ("path", Arc::new(StringArray::from(vec!["/c"])) as ArrayRef),
        ("bytes", Arc::new(Int64Array::from(vec![512])) as ArrayRef),
    ])
    .unwrap();
    writer.append("gateway", &second, None).unwrap();
    writer.sync().unwrap();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    let table = run(&engine, "SELECT path, bytes FROM gateway ORDER BY path").await;
    assert_eq!(
        table,
        "+------+-------+\n| path | bytes |\n+------+-------+\n| /a   |       |\n| /b   |       |\n| /c   | 512   |\n+------+-------+"
    );
    writer.close().unwrap();
    let table = run(&engine, "SELECT count(*), sum(bytes) FROM gateway").await;
    assert!(
        table.contains("| 3 ") && table.contains("| 512 "),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sql_gets_a_clear_message() {
    let (dir, _writer) = populated();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    let message = |sql: &'static str| {
        let engine = &engine;
        async move {
            match engine.sql(sql).await {
                Err(QueryError::Sql(message)) => message,
                other => panic!(
                    "{sql}: expected an SQL error, got {:?}",
                    other.map(|b| b.len())
                ),
            }
        }
    };
    assert!(message("SELEC 1").await.contains("SELEC"));
    assert!(message("SELECT nope FROM inference").await.contains("nope"));
    assert!(message("SELECT * FROM nowhere").await.contains("nowhere"));
    assert!(message("SELECT quantile(latency_ms, 2) FROM inference")
        .await
        .contains("between 0 and 1"));
    assert!(
        message("SELECT time_bucket('fortnight', timestamp) FROM inference")
            .await
            .contains("fortnight")
    );
    // The engine is still usable.
    assert!(run(&engine, "SELECT 1 AS one").await.contains("| 1 "));
}

/// Asserts that no EXPLAIN of `sqls` mentions `needle`.
async fn assert_no_plan_contains(engine: &QueryEngine, sqls: &[&str], needle: &str) {
    for sql in sqls {
        let explained = plan(engine, sql).await;
        assert!(!explained.contains(needle), "{sql}:\n{explained}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_16_dead_letters_are_a_table_counted_by_kind_and_client() {
    let (dir, _writer) = populated();
    let engine = QueryEngine::open(dir.path(), true).unwrap();
    // No file yet: an empty table, not an error.
    let empty = run(&engine, "SELECT count(*) AS n FROM dead_letters").await;
    assert!(empty.contains("| 0 "), "{empty}");
    let mut lines = String::new();
    for line in 1..=5 {
        lines.push_str(&format!(
            "{{\"source\":\"fleet.jsonl\",\"line\":{line},\"offset\":0,\"reason\":\"event time 2100-01-01T00:00:00Z is 2324 s ahead\",\"raw\":\"{{}}\",\"kind\":\"future_timestamp\",\"client_id\":\"c-evil\",\"model_id\":\"recsys\",\"event_time\":4102444800000000000}}\n"
        ));
    }
    lines.push_str("{\"source\":\"fleet.jsonl\",\"line\":9,\"offset\":77,\"reason\":\"invalid JSON\",\"raw\":\"{\",\"kind\":\"invalid_json\"}\n");
    // A line written before `kind` existed, and a torn last line.
    lines.push_str("{\"source\":\"old.jsonl\",\"line\":1,\"offset\":0,\"reason\":\"x\",\"raw\":\"\"}\n{\"source\":");
    std::fs::write(
        dir.path().join(inferwatch_query::STORE_DEAD_LETTERS_FILE),
        lines,
    )
    .unwrap();
    let counted = run(
        &engine,
        "SELECT kind, client_id, count(*) AS n, max(event_time) AS newest FROM dead_letters GROUP BY 1, 2 ORDER BY 1",
    )
    .await;
    assert!(
        counted.contains("| future_timestamp | c-evil    | 5 | 2100-01-01T00:00:00Z |"),
        "{counted}"
    );
    assert!(
        counted.contains("| invalid_json     |           | 1 |"),
        "{counted}"
    );
    assert!(
        counted.contains("|                  |           | 1 |"),
        "{counted}"
    );
}
