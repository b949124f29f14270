//! `inferwatch ingest --fsync always` survives `kill -9`: 5 M simulated
//! events, ten SIGKILLs at moments chosen by watching the acknowledgements
//! grow, a restart after each. After every kill the store holds at least
//! everything acknowledged and no event twice; at the end it holds every
//! event exactly once, checked by count, distinct count and a checksum.
//!
//! The expected values are computed from the input file by scanning its
//! text, independently of the store and the SQL engine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const EVENTS: u64 = 5_000_000;
const CYCLES: usize = 10;
const DEADLINE: Duration = Duration::from_secs(1200);

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inferwatch")
}

/// Sum of round(latency_ms × 10) over the input, read straight from the text.
fn latency_checksum(path: &Path) -> (u64, i64) {
    let bytes = std::fs::read(path).unwrap();
    let key = b"\"latency_ms\":";
    let mut lines = 0u64;
    let mut sum = 0i64;
    for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        lines += 1;
        if let Some(at) = memchr::memmem::find(line, key) {
            let rest = &line[at + key.len()..];
            let end = rest
                .iter()
                .position(|&b| b == b',' || b == b'}')
                .unwrap_or(rest.len());
            let value: f64 = std::str::from_utf8(&rest[..end]).unwrap().parse().unwrap();
            sum += (value * 10.0).round() as i64;
        }
    }
    (lines, sum)
}

fn query(data: &Path, sql: &str) -> Vec<i64> {
    let output = Command::new(binary())
        .args(["query", "--no-rollups", "--format", "csv", "--data"])
        .arg(data)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "query failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let row = text.lines().nth(1).expect("a result row");
    row.split(',').map(|v| v.parse().unwrap_or(0)).collect()
}

fn counts(data: &Path) -> (i64, i64) {
    let row = query(
        data,
        "SELECT count(*), count(DISTINCT request_id) FROM inference",
    );
    (row[0], row[1])
}

fn ingest(data: &Path, input: &Path) -> Command {
    let mut command = Command::new(binary());
    command
        .args([
            "ingest",
            "--quiet",
            "--acks",
            "--fsync",
            "always",
            "--flush-rows",
            "400000",
            "--dead-letter",
        ])
        .arg(data.join("dlq.jsonl"))
        .arg("--data")
        .arg(data)
        .arg(input);
    command
}

#[test]
fn acknowledged_events_survive_kill_9_exactly_once() {
    let directory = tempfile::tempdir().unwrap();
    let input: PathBuf = directory.path().join("fleet.jsonl");
    let data = directory.path().join("data");
    // 5 M events: 1,000 s at 5,000 events/s.
    let status = Command::new(binary())
        .args([
            "simulate",
            "--duration",
            "1000s",
            "--rate",
            "5000",
            "--output",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let (lines, expected_checksum) = latency_checksum(&input);
    assert!(
        lines.abs_diff(EVENTS) < EVENTS / 50,
        "the simulator wrote {lines} events"
    );
    let started = Instant::now();
    let mut stored_before = 0i64;
    // A fixed pseudo-random sequence of kill points (events acknowledged in the run).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..CYCLES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 20_000 + seed % 400_000;
        let mut child = ingest(&data, &input)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acked = Arc::new(AtomicU64::new(0));
        let stdout = child.stdout.take().unwrap();
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
                    acked.store(value["acked_events"].as_u64().unwrap(), Ordering::SeqCst);
                }
            })
        };
        loop {
            assert!(started.elapsed() < DEADLINE, "cycle {cycle} hangs");
            if acked.load(Ordering::SeqCst) >= kill_after {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("ingest exited early in cycle {cycle}: {status}");
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked_in_run = acked.load(Ordering::SeqCst) as i64;
        let (stored, distinct) = counts(&data);
        assert_eq!(stored, distinct, "cycle {cycle}: an event is stored twice");
        assert!(
            stored >= stored_before + acked_in_run,
            "cycle {cycle}: {stored} stored < {stored_before} before + {acked_in_run} acknowledged"
        );
        stored_before = stored;
    }
    let status = ingest(&data, &input)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (stored, distinct) = counts(&data);
    assert_eq!(stored as u64, lines);
    assert_eq!(distinct as u64, lines);
    let checksum = query(
        &data,
        "SELECT sum(CAST(round(latency_ms * 10) AS BIGINT)) FROM inference",
    )[0];
    assert_eq!(checksum, expected_checksum);
}
