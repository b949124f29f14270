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

/// Issue 16: what a child's memory reaches. `VmHWM` (peak resident set) is
/// read from `/proc` while it runs, since it is gone once it exits.
mod issue_16_memory {
    use std::io::Write;
    use std::process::{Child, Command, Stdio};

    /// Most `detect` may reach on a line without end, whatever its length
    /// (it peaks near 40 MiB).
    const DETECT_RSS_LIMIT_KIB: u64 = 128 * 1024;

    /// Most a generic ingest of ever new field names may reach, whatever the
    /// input's size (it reached 0.5 to 5 GB before flushes were bounded in
    /// cells). About 210 MiB are live; the rest is freed pages the allocator
    /// keeps for speed (`keep_freed_pages` in main.rs), which vary with how
    /// the threads interleave: 230 to 335 MiB on 2 busy cores.
    const INGEST_RSS_LIMIT_KIB: u64 = 400 * 1024;

    fn peak_kib(child: &Child) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Feeds `total` bytes made by `fill` (called with a buffer to overwrite
    /// and the bytes written so far) through the child's stdin, sampling its
    /// peak RSS as it goes; returns the peak (KiB) and the child's output.
    fn feed(
        mut child: Child,
        total: u64,
        mut fill: impl FnMut(&mut Vec<u8>, u64),
    ) -> (u64, std::process::Output) {
        let mut stdin = child.stdin.take().unwrap();
        let mut written = 0u64;
        let mut peak = 0;
        let mut buffer = Vec::with_capacity(1 << 20);
        let mut blocks = 0u64;
        while written < total {
            buffer.clear();
            fill(&mut buffer, written);
            if buffer.is_empty() {
                break;
            }
            let take = buffer.len().min((total - written) as usize);
            if let Err(error) = stdin.write_all(&buffer[..take]) {
                // The child stopped reading: show why rather than the pipe.
                drop(stdin);
                let output = child.wait_with_output().unwrap();
                panic!(
                    "writing to the child after {written} bytes: {error}; it exited {}: {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            written += take as u64;
            blocks += 1;
            if blocks.is_multiple_of(16) {
                peak = peak.max(peak_kib(&child));
            }
        }
        peak = peak.max(peak_kib(&child));
        drop(stdin);
        peak = peak.max(peak_kib(&child));
        let output = child.wait_with_output().unwrap();
        (peak, output)
    }

    /// Bytes of `a` without a newline: 512 MiB here (3 GiB in
    /// `bench/issue16_memory.sh`); enough to show that memory does not
    /// follow the line.
    #[test]
    fn issue_16_a_line_without_end_on_stdin_keeps_detect_memory_flat() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join("dead.jsonl");
        let total: u64 = std::env::var("ISSUE_16_BYTES")
            .ok()
            .and_then(|bytes| bytes.parse().ok())
            .unwrap_or(512 << 20);
        let child = Command::new(super::binary())
            .args(["detect", "--quiet", "--rules"])
            .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules"))
            .arg("--dead-letter")
            .arg(&dead)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (peak, output) = feed(child, total, |buffer, _| buffer.resize(1 << 20, b'a'));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("detect, {total} bytes without a newline: peak RSS {peak} KiB");
        assert!(peak > 0, "no sample of the child's memory");
        assert!(peak < DETECT_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
        // One dead letter: the whole input as line 1, its start kept.
        let letters: Vec<serde_json::Value> = std::fs::read_to_string(&dead)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0]["source"], "stdin");
        assert_eq!(letters[0]["line"], 1);
        assert_eq!(letters[0]["offset"], 0);
        assert_eq!(
            letters[0]["reason"],
            format!("line is {total} bytes, over the 1048576-byte limit")
        );
        assert_eq!(letters[0]["raw"].as_str().unwrap().len(), 1024);
    }

    /// A million distinct field names, one new name per event: the stream
    /// gains at most its column cap, the rest is kept in `attributes`.
    /// (It peaked at 0.5 to 5 GB before flushes and compactions were bounded
    /// in cells: a merge widened half a million two-column rows to the
    /// thousand columns of the files beside them.)
    #[test]
    fn issue_16_a_million_field_names_keep_generic_ingest_memory_flat() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let events: u64 = 1_000_000;
        let child = Command::new(super::binary())
            .args(["ingest", "--quiet", "--stream", "gateway", "--data"])
            .arg(&data)
            .arg("-")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut next = 0u64;
        let (peak, output) = feed(child, u64::MAX, |buffer, _| {
            while buffer.len() < (1 << 20) && next < events {
                let _ = writeln!(
                    buffer,
                    "{{\"ts\":\"2026-01-01T00:{:02}:{:02}Z\",\"field_{next}\":{next}}}",
                    (next / 60) % 60,
                    next % 60
                );
                next += 1;
            }
        });
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("ingest --stream gateway, {events} field names: peak RSS {peak} KiB");
        assert!(peak > 0, "no sample of the child's memory");
        assert!(peak < INGEST_RSS_LIMIT_KIB, "peak RSS {peak} KiB");
        // Every event is stored; the schema stays within the cap.
        assert_eq!(
            super::query(&data, "SELECT count(*) AS n FROM gateway"),
            format!("n\n{events}\n")
        );
        let header = super::query(&data, "SELECT * FROM gateway LIMIT 1");
        let columns = header.lines().next().unwrap().split(',').count();
        assert!(
            columns <= inferwatch_ingest::DEFAULT_MAX_STREAM_COLUMNS + 2,
            "{columns} columns"
        );
        let last = super::query(
            &data,
            &format!(
                "SELECT attributes FROM gateway WHERE attributes LIKE '%\"field_{}\"%'",
                events - 1
            ),
        );
        assert_eq!(
            last,
            format!("attributes\n\"{{\"\"field_{0}\"\":{0}}}\"\n", events - 1)
        );
    }
}

/// Issue 16: `inferwatch ingest` into a full disk (a tmpfs the test mounts;
/// root only, and under `CI=true` a missing capability fails the test).
#[test]
fn issue_16_ingest_into_a_full_disk_fails_clearly_then_resumes_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=6m", "tmpfs"])
        .arg(&disk)
        .output();
    match mounted {
        Ok(output) if output.status.success() => {}
        failed => {
            let why = format!("{failed:?}");
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "mounting a tmpfs needs root under CI: {why}"
            );
            eprintln!("skipped: cannot mount a tmpfs here ({why})");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&disk);
    let input = dir.path().join("events.jsonl");
    let events = 120_000;
    append(&input, &(0..events).map(event).collect::<String>());
    let data = disk.join("data");
    let ingest = || {
        Command::new(binary())
            .args(["ingest", "--quiet", "--data"])
            .arg(&data)
            .arg(&input)
            .output()
            .unwrap()
    };
    let full = ingest();
    assert!(!full.status.success(), "a 6 MB disk held everything");
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains(&data.join("wal").display().to_string()),
        "names the file: {stderr}"
    );
    // What was acknowledged is there, once each; not everything fitted.
    let partial = query(
        &data,
        "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM inference",
    );
    let counts: Vec<usize> = partial
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(counts[0], counts[1], "{partial}");
    assert!(counts[0] > 0 && counts[0] < events, "{partial}");

    // Room again: the same command resumes after the last stored batch.
    let grown = Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(grown.success());
    let resumed = ingest();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(
        query(
            &data,
            "SELECT count(*) AS n, count(DISTINCT request_id) AS d FROM inference"
        ),
        format!("n,d\n{events},{events}\n")
    );
}
