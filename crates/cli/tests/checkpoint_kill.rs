//! `inferwatch map --follow --checkpoint --output` gives exactly-once output
//! even when SIGKILLed at arbitrary moments: while reading, right after a
//! live rotation, and while a rotation happens behind its back.
//!
//! The input grows while the follower runs; the test kills and restarts it
//! several times, then waits for every line to appear and checks that each
//! request id is in the output exactly once. There are no timing
//! assertions: moments are chosen by watching the output grow, and the only
//! deadline is a generous one that turns a hang into a clear failure.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOTAL: usize = 200_000;
const DEADLINE: Duration = Duration::from_secs(120);

fn line(index: usize) -> String {
    format!(
        "{{\"timestamp\":\"2026-01-01T00:{:02}:{:02}Z\",\"model_id\":\"model-{}\",\"request_id\":\"req-{index:07}\",\
         \"latency_ms\":{}.5,\"input_tokens\":{},\"client_id\":\"client-{}\"}}\n",
        (index / 60) % 60,
        index % 60,
        index % 5,
        index % 300,
        index % 1000,
        index % 17
    )
}

fn lines(range: std::ops::Range<usize>) -> String {
    range.map(line).collect()
}

fn append(path: &Path, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

struct Harness {
    directory: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

impl Harness {
    fn input(&self) -> PathBuf {
        self.directory.path().join("input.jsonl")
    }

    fn output(&self) -> PathBuf {
        self.directory.path().join("events.jsonl")
    }

    fn output_len(&self) -> u64 {
        fs::metadata(self.output()).map_or(0, |metadata| metadata.len())
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let stderr = fs::File::create(
            self.directory
                .path()
                .join(format!("stderr-{}.txt", self.starts)),
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_inferwatch"))
            .current_dir(self.directory.path())
            .args([
                "map",
                "--follow",
                "--poll-interval",
                "20ms",
                "--chunk-bytes",
                "262144",
                "--checkpoint",
                "state/checkpoint.json",
                "--output",
                "events.jsonl",
                "--dead-letter",
                "dead-letters.jsonl",
                "input.jsonl",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawning inferwatch");
        self.child = Some(child);
    }

    /// SIGKILL (`Child::kill` sends SIGKILL on unix), then reap.
    fn kill(&mut self) {
        let mut child = self.child.take().expect("a running child");
        self.assert_alive(&mut child);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn assert_alive(&self, child: &mut Child) {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = fs::read_to_string(
                self.directory
                    .path()
                    .join(format!("stderr-{}.txt", self.starts)),
            )
            .unwrap_or_default();
            panic!("inferwatch map exited early with {status}; stderr:\n{stderr}");
        }
    }

    /// Waits until `condition` holds, failing clearly after the deadline or
    /// if the follower dies.
    fn wait_until(&mut self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        let began = Instant::now();
        loop {
            if condition(self) {
                return;
            }
            let mut child = self.child.take().expect("a running child");
            self.assert_alive(&mut child);
            self.child = Some(child);
            assert!(
                began.elapsed() < DEADLINE,
                "gave up after {DEADLINE:?} waiting for {what} (output has {} bytes)\n{}",
                self.output_len(),
                self.describe()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The state of the working directory, for failure messages.
    fn describe(&self) -> String {
        let mut text = String::new();
        let mut entries: Vec<_> = fs::read_dir(self.directory.path())
            .unwrap()
            .map(|entry| entry.unwrap())
            .collect();
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let metadata = entry.metadata().unwrap();
            text += &format!("  {:?}: {} bytes\n", entry.file_name(), metadata.len());
        }
        let checkpoint = fs::read_to_string(self.directory.path().join("state/checkpoint.json"))
            .unwrap_or_default();
        let stderr = fs::read_to_string(
            self.directory
                .path()
                .join(format!("stderr-{}.txt", self.starts)),
        )
        .unwrap_or_default();
        format!(
            "files:\n{text}checkpoint: {checkpoint}\nstderr of start {}: {stderr}",
            self.starts
        )
    }

    /// Waits until the output has grown by `bytes` since `since`.
    fn wait_for_growth(&mut self, since: u64, bytes: u64) {
        self.wait_until(
            &format!("the output to grow past {}", since + bytes),
            |harness| harness.output_len() >= since + bytes,
        );
    }

    /// Appends `text` to the input and kills the follower once its output
    /// has grown by a quarter of it: a moment in the middle of reading it.
    /// Starts the follower first if it is not running.
    fn append_and_kill_midway(&mut self, text: &str) {
        if self.child.is_none() {
            self.start();
        }
        // Measured before appending, so the growth waited for is certain to
        // come. Counted from the committed length: a follower that just
        // started may not have cut its output back to it yet.
        let now = self.output_len().min(self.committed_len());
        append(&self.input(), text);
        self.wait_for_growth(now, text.len() as u64 / 4);
        self.kill();
    }

    /// The output length recorded by the checkpoint (0 before the first).
    fn committed_len(&self) -> u64 {
        let Ok(text) = fs::read_to_string(self.directory.path().join("state/checkpoint.json"))
        else {
            return 0;
        };
        let checkpoint: serde_json::Value = serde_json::from_str(&text).unwrap();
        checkpoint["sinks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|sink| {
                sink["path"]
                    .as_str()
                    .is_some_and(|path| path.ends_with("events.jsonl"))
            })
            .and_then(|sink| sink["length"].as_u64())
            .unwrap_or(0)
    }

    fn count_output_lines(&self) -> usize {
        fs::read(self.output())
            .map(|bytes| memchr_count(&bytes))
            .unwrap_or(0)
    }
}

fn memchr_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|byte| **byte == b'\n').count()
}

#[test]
fn sigkill_at_any_moment_gives_exactly_once_output() {
    let directory = tempfile::tempdir().unwrap();
    fs::create_dir(directory.path().join("state")).unwrap();
    let mut harness = Harness {
        directory,
        child: None,
        starts: 0,
    };
    let input = harness.input();

    // Part A, present before the first start. Kill mid-file.
    harness.append_and_kill_midway(&lines(0..60_000));

    // Part B, appended in slices while the follower runs. Kill mid-way
    // through one of them.
    harness.start();
    for slice in 0..4 {
        let begin = 60_000 + slice * 7_500;
        let text = lines(begin..begin + 7_500);
        if slice == 1 {
            harness.append_and_kill_midway(&text);
            harness.start();
        } else {
            append(&input, &text);
        }
    }

    // Rotation while the follower is down: killed mid-way through more
    // lines of the old file, which then gets its last lines (the very last
    // one without a newline) and is renamed away and replaced before the
    // restart. The restart must drain the old file's tail first.
    harness.append_and_kill_midway(&lines(90_000..95_000));
    let tail = lines(95_000..100_000);
    append(&input, tail.strip_suffix('\n').unwrap());
    fs::rename(&input, harness.directory.path().join("input.jsonl.1")).unwrap();
    append(&input, &lines(100_000..110_000));
    harness.start();

    // Part C into the new file while running; kill once more mid-way.
    for slice in 0..4 {
        let begin = 110_000 + slice * 10_000;
        let text = lines(begin..begin + 10_000);
        if slice == 2 {
            harness.append_and_kill_midway(&text);
            harness.start();
        } else {
            append(&input, &text);
        }
    }

    // A live rotation (rename, then create), and a kill soon after it.
    let now = harness.output_len().min(harness.committed_len());
    fs::rename(&input, harness.directory.path().join("input.jsonl.2")).unwrap();
    let text = lines(150_000..170_000);
    append(&input, &text);
    harness.wait_for_growth(now, text.len() as u64 / 4);
    harness.kill();

    // The final part, then let it finish.
    harness.start();
    append(&input, &lines(170_000..TOTAL));
    let mut last_len = u64::MAX;
    harness.wait_until("every line to be in the output", |harness| {
        let len = harness.output_len();
        // Counting lines reads the whole file: only when it changed.
        if len == last_len {
            return false;
        }
        last_len = len;
        harness.count_output_lines() >= TOTAL
    });
    // Let it idle a little to show nothing extra arrives, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    harness.kill();

    let output = fs::read_to_string(harness.output()).unwrap();
    let mut seen = HashSet::with_capacity(TOTAL);
    let mut duplicates = Vec::new();
    for (number, text) in output.lines().enumerate() {
        let event: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|error| {
            panic!("output line {} is not JSON ({error}): {text}", number + 1)
        });
        let request_id = event["request_id"]
            .as_str()
            .unwrap_or_else(|| panic!("output line {} has no request_id: {text}", number + 1))
            .to_string();
        if !seen.insert(request_id.clone()) {
            duplicates.push(request_id);
        }
    }
    assert!(
        duplicates.is_empty(),
        "{} duplicated request ids, first: {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    let missing: Vec<String> = (0..TOTAL)
        .map(|index| format!("req-{index:07}"))
        .filter(|id| !seen.contains(id))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "missing request ids, first: {missing:?}"
    );
    assert_eq!(seen.len(), TOTAL);
    let dead_letters =
        fs::read_to_string(harness.directory.path().join("dead-letters.jsonl")).unwrap();
    assert!(
        dead_letters.is_empty(),
        "unexpected dead letters:\n{dead_letters}"
    );
    assert_eq!(harness.starts, 6);
}
