//! `QueryEngine::sql` (what `inferwatch query` runs) only reads, and each
//! statement is held to its memory and time limits (issue 16).

use std::time::Duration;

use inferwatch_query::{QueryEngine, QueryError, StatementLimits};

fn engine(data: &std::path::Path, limits: StatementLimits) -> QueryEngine {
    QueryEngine::open_with_limits(data, true, None, limits).unwrap()
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn issue_16_every_write_path_is_refused_and_nothing_is_written() {
    let data = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let csv = outside.path().join("secret.csv");
    std::fs::write(&csv, "a\n1\n").unwrap();
    let engine = engine(data.path(), StatementLimits::default());
    let before = (files_under(data.path()), files_under(outside.path()));

    let copy_target = outside.path().join("copied.csv");
    let refused = [
        (
            format!("COPY (SELECT 42) TO '{}'", copy_target.display()),
            "COPY",
        ),
        (
            format!(
                "CREATE EXTERNAL TABLE leak STORED AS CSV LOCATION '{}'",
                csv.display()
            ),
            "CREATE EXTERNAL TABLE",
        ),
        ("CREATE TABLE t AS SELECT 1 AS x".to_string(), "CREATE"),
        ("CREATE VIEW v AS SELECT 1 AS x".to_string(), "CREATE VIEW"),
        ("INSERT INTO inference VALUES (1)".to_string(), "INSERT"),
        ("DROP TABLE inference".to_string(), "DROP TABLE"),
        ("CREATE SCHEMA mine".to_string(), "CREATE"),
        (
            "SET datafusion.execution.target_partitions = 1".to_string(),
            "SET",
        ),
        ("PREPARE p AS SELECT 1".to_string(), "PREPARE"),
    ];
    for (sql, what) in &refused {
        match engine.sql(sql).await {
            Err(QueryError::ReadOnly(message)) => {
                assert!(message.contains(what), "{sql}: {message}")
            }
            Err(other) => panic!("{sql}: refused, but not as read-only: {other}"),
            Ok(_) => panic!("{sql}: was run"),
        }
    }
    // Files are not tables: no URL tables, no path-reading functions.
    let by_path = engine
        .sql(&format!("SELECT * FROM '{}'", csv.display()))
        .await;
    assert!(by_path.is_err(), "a file path was readable as a table");

    assert!(!copy_target.exists());
    assert_eq!(
        (files_under(data.path()), files_under(outside.path())),
        before
    );
    // The engine is unchanged: the refused SET did not apply, queries run.
    let settings = engine
        .sql("SELECT value FROM information_schema.df_settings WHERE name = 'datafusion.execution.target_partitions'")
        .await
        .unwrap();
    let value = datafusion::arrow::util::pretty::pretty_format_batches(&settings)
        .unwrap()
        .to_string();
    assert!(!value.contains("| 1 "), "{value}");
    assert_eq!(engine.sql("SELECT 1").await.unwrap()[0].num_rows(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_over_its_memory_limit_fails_alone() {
    let data = tempfile::tempdir().unwrap();
    let engine = engine(
        data.path(),
        StatementLimits {
            memory_bytes: 1 << 20,
            ..StatementLimits::default()
        },
    );
    // A full sort of 3 M values needs ~24 MB; spilling is off.
    let error = engine
        .sql("SELECT value FROM generate_series(1, 3000000) ORDER BY value DESC")
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::MemoryLimit(_)), "{error}");
    // The pool was the statement's own: the next one starts from zero.
    let small = engine
        .sql("SELECT value FROM generate_series(1, 1000) ORDER BY value DESC")
        .await
        .unwrap();
    assert_eq!(small.iter().map(|b| b.num_rows()).sum::<usize>(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_past_its_timeout_is_canceled() {
    let data = tempfile::tempdir().unwrap();
    let limit = Duration::from_millis(500);
    let engine = engine(
        data.path(),
        StatementLimits {
            timeout: limit,
            ..StatementLimits::default()
        },
    );
    // 10^10 pairs: hours of work; a sum, so statistics cannot answer it.
    let error = engine
        .sql("SELECT sum(a.value * b.value) FROM generate_series(1, 100000) a CROSS JOIN generate_series(1, 100000) b")
        .await
        .unwrap_err();
    assert!(
        matches!(error, QueryError::StatementTimeout { limit: hit } if hit == limit),
        "{error}"
    );
    assert!(error.to_string().contains("statement timeout"), "{error}");
}
