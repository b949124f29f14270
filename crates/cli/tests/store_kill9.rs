//! `kill -9`, again and again, in both fsync modes.
//!
//! `inferwatch ingest --acks`: SIGKILLs at moments chosen by watching the
//! acknowledgements grow, a restart after each. After every kill the store
//! holds at least everything acknowledged and no event twice; at the end it
//! holds every event exactly once, checked by count, distinct count and a
//! checksum computed from the input's text, independently of the store and
//! the SQL engine.
//!
//! `inferwatch run`: SIGKILLs at seeded pseudo-random moments while it
//! ingests and detects; at the end its alert files hold exactly the
//! transitions of an uninterrupted run, each once, and the store every event
//! once.
//!
//! CI runs 5 cycles over 1 M events per mode; `bench/kill9.sh` runs 20 over
//! 5 M (`INFERWATCH_KILL_CYCLES`, `INFERWATCH_KILL_EVENTS`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(1800);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn cycles() -> usize {
    setting("INFERWATCH_KILL_CYCLES", 5) as usize
}

fn events() -> u64 {
    setting("INFERWATCH_KILL_EVENTS", 1_000_000)
}

/// The next kill point of a fixed pseudo-random sequence (xorshift).
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

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

fn ingest(data: &Path, input: &Path, fsync: &str) -> Command {
    let mut command = Command::new(binary());
    command
        .args([
            "ingest",
            "--quiet",
            "--acks",
            "--fsync",
            fsync,
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

/// `events` simulated events at `rate` events/s, with the given scenarios.
fn simulate(input: &Path, events: u64, rate: u64, scenarios: &str) {
    let status = Command::new(binary())
        .args(["simulate", "--scenario", scenarios, "--rate"])
        .arg(rate.to_string())
        .arg("--duration")
        .arg(format!("{}s", events / rate))
        .arg("--output")
        .arg(input)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn acknowledged_events_survive_kill_9_exactly_once_with_fsync_always() {
    acknowledged_events_survive_kill_9("always");
}

#[test]
fn acknowledged_events_survive_kill_9_exactly_once_with_fsync_interval() {
    acknowledged_events_survive_kill_9("interval_ms=100");
}

fn acknowledged_events_survive_kill_9(fsync: &str) {
    let directory = tempfile::tempdir().unwrap();
    let input: PathBuf = directory.path().join("fleet.jsonl");
    let data = directory.path().join("data");
    let events = events();
    simulate(&input, events, 5000, "baseline");
    let (lines, expected_checksum) = latency_checksum(&input);
    assert!(
        lines.abs_diff(events) < events / 50,
        "the simulator wrote {lines} events"
    );
    let started = Instant::now();
    let mut stored_before = 0i64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for cycle in 0..cycles() {
        // Events acknowledged in this run before the kill.
        // At most half the input over all cycles, so every run is killed.
        let kill_after = 20_000 + next(&mut seed) % (events / (2 * cycles() as u64));
        let mut child = ingest(&data, &input, fsync)
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
    let status = ingest(&data, &input, fsync)
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

#[test]
fn run_alerts_are_exactly_once_across_kill_9_with_fsync_always() {
    run_alerts_are_exactly_once_across_kill_9("always");
}

#[test]
fn run_alerts_are_exactly_once_across_kill_9_with_fsync_interval() {
    run_alerts_are_exactly_once_across_kill_9("interval_ms=100");
}

/// The transitions in an alerts file: (alert id, state, end), with counts.
fn transitions(path: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        let alert: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("{}: {error}: {line}", path.display()));
        let key = format!(
            "{} {} {}",
            alert["alert_id"], alert["state"], alert["ends_at"]
        );
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}

fn run_config(directory: &Path, name: &str, input: &Path, fsync: &str) -> PathBuf {
    let config = directory.join(format!("{name}.yaml"));
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    std::fs::write(
        &config,
        format!(
            "data: {name}-data\ninputs: [{}]\nrules: {}\nalerts: {name}-alerts.jsonl\n\
             store:\n  fsync: {fsync}\n  flush_rows: 100000\n",
            input.display(),
            rules.display()
        ),
    )
    .unwrap();
    config
}

fn run(config: &Path) -> Command {
    let mut command = Command::new(binary());
    command.args(["run", "--quiet", "--config"]).arg(config);
    command
}

fn run_alerts_are_exactly_once_across_kill_9(fsync: &str) {
    let directory = tempfile::tempdir().unwrap();
    let input: PathBuf = directory.path().join("fleet.jsonl");
    let events = events();
    // Half an hour of fleet time at 1 M events: long enough for the incidents.
    simulate(&input, events, 500, "canary-regression,error-spike");
    let lines = latency_checksum(&input).0;
    // The reference: one uninterrupted run.
    let reference = run_config(directory.path(), "reference", &input, fsync);
    let output = run(&reference).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = transitions(&directory.path().join("reference-alerts.jsonl"));
    assert!(expected.len() >= 4, "the scenario raised {expected:?}");
    let config = run_config(directory.path(), "killed", &input, fsync);
    let data = directory.path().join("killed-data");
    let started = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut killed_while_running = 0;
    for cycle in 0..cycles() {
        // Restarts replay the store first, so later runs need longer to
        // reach new input: up to about one second per cycle so far.
        let delay = Duration::from_millis(300 + next(&mut seed) % (1200 + 300 * cycle as u64));
        let mut child = run(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        assert!(started.elapsed() < DEADLINE, "cycle {cycle} hangs");
        if child.try_wait().unwrap().is_none() {
            killed_while_running += 1;
        }
        child.kill().unwrap(); // SIGKILL, or nothing if it had finished
        child.wait().unwrap();
        if data.join("streams").exists() {
            let (stored, distinct) = counts(&data);
            assert_eq!(stored, distinct, "cycle {cycle}: an event is stored twice");
        }
        // Every transition written so far is one of the reference's, once.
        let written = transitions(&directory.path().join("killed-alerts.jsonl"));
        for (key, count) in &written {
            assert_eq!(count, &1, "cycle {cycle}: {key} written {count} times");
            assert!(
                expected.contains_key(key),
                "cycle {cycle}: {key} is not a reference transition"
            );
        }
    }
    assert!(
        killed_while_running * 2 >= cycles(),
        "only {killed_while_running} of {} kills hit a running process",
        cycles()
    );
    let output = run(&config).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (stored, distinct) = counts(&data);
    assert_eq!((stored as u64, distinct as u64), (lines, lines));
    assert_eq!(
        transitions(&directory.path().join("killed-alerts.jsonl")),
        expected
    );
    assert_eq!(transitions(&data.join("alerts.jsonl")), expected);
}
