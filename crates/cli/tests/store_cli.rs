//! `inferwatch ingest` and `inferwatch query` end to end: events are
//! queryable by another process as soon as they are acknowledged while
//! `ingest --follow` runs; bad lines go to the dead-letter file while the
//! good ones are stored; generic streams refuse type conflicts line by line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inferwatch")
}

fn query(data: &Path, sql: &str) -> String {
    let output = Command::new(binary())
        .args(["query", "--format", "csv", "--data"])
        .arg(data)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn event(index: usize) -> String {
    format!(
        "{{\"timestamp\":\"2026-01-01T00:00:{:02}Z\",\"model_id\":\"m\",\"request_id\":\"r-{index}\",\"latency_ms\":{index}}}\n",
        index % 60
    )
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

#[test]
fn followed_events_are_queryable_once_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("live.jsonl");
    let data = dir.path().join("data");
    append(&input, &(0..100).map(event).collect::<String>());
    let mut child = Command::new(binary())
        .args(["ingest", "--follow", "--acks", "--quiet", "--data"])
        .arg(&data)
        .arg(&input)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut wait_for_acked = |target: u64| loop {
        assert!(
            Instant::now() < deadline,
            "no acknowledgement for {target} events"
        );
        let line = acks.next().expect("ingest is running").unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["acked_events"].as_u64().unwrap() >= target {
            return;
        }
    };
    wait_for_acked(100);
    // Another process sees every acknowledged event, straight from the WAL.
    assert_eq!(
        query(&data, "SELECT count(*) AS n FROM inference"),
        "n\n100\n"
    );
    append(&input, &(100..150).map(event).collect::<String>());
    wait_for_acked(150);
    assert_eq!(
        query(
            &data,
            "SELECT count(*) AS n, sum(latency_ms) AS s FROM inference"
        ),
        format!("n,s\n150,{}.0\n", (0..150).sum::<usize>())
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_lines_are_dead_lettered_and_good_ones_stored() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("mixed.jsonl");
    let data = dir.path().join("data");
    let dead = dir.path().join("dead.jsonl");
    let mut text = String::new();
    for index in 0..10 {
        text.push_str(&event(index));
        if index == 4 {
            text.push_str("{\"timestamp\": \"not a time\", \"model_id\": \"m\"}\n");
            text.push_str("{broken json\n");
        }
    }
    append(&input, &text);
    let output = Command::new(binary())
        .args(["ingest", "--quiet", "--data"])
        .arg(&data)
        .arg("--dead-letter")
        .arg(&dead)
        .arg(&input)
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 dead letters"));
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["line"], 6);
    assert_eq!(letters[1]["line"], 7);
    assert_eq!(
        query(&data, "SELECT count(*) AS n FROM inference"),
        "n\n10\n"
    );
}

#[test]
fn generic_streams_evolve_and_dead_letter_type_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dead = dir.path().join("dead.jsonl");
    let first = dir.path().join("gw1.jsonl");
    let second = dir.path().join("gw2.jsonl");
    append(
        &first,
        "{\"@timestamp\":\"2026-01-01T00:00:00Z\",\"path\":\"/a\",\"http\":{\"status\":200}}\n",
    );
    append(
        &second,
        "{\"@timestamp\":\"2026-01-01T00:00:01Z\",\"path\":\"/b\",\"http\":{\"status\":503},\"client_ip\":\"10.0.0.1\"}\n\
         {\"@timestamp\":\"2026-01-01T00:00:02Z\",\"path\":\"/c\",\"http\":{\"status\":\"oops\"}}\n",
    );
    for input in [&first, &second] {
        let status = Command::new(binary())
            .args(["ingest", "--quiet", "--stream", "gateway", "--data"])
            .arg(&data)
            .arg("--dead-letter")
            .arg(&dead)
            .arg(input)
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert_eq!(
        query(
            &data,
            "SELECT path, \"http.status\" AS status, client_ip FROM gateway ORDER BY path"
        ),
        "path,status,client_ip\n/a,200,\n/b,503,10.0.0.1\n"
    );
    let letters = std::fs::read_to_string(&dead).unwrap();
    assert!(letters.contains("expected Int64, got string"), "{letters}");
    assert!(letters.contains("http.status"), "{letters}");
}
