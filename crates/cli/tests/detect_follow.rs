//! `inferwatch detect --follow` raises an alert while the log is still being
//! written: a live tail, not a replay.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const RULE: &str = "id: slow\ntitle: Slow\nseverity: high\ngroup_by: [model_id]\nwindow: 1m\nevery: 1m\nallowed_lateness: 0s\ncondition: max(latency_ms) > 500\n";

fn line(second: u64, latency: f64) -> String {
    format!(
        "{{\"timestamp\":\"2026-01-01T00:{:02}:{:02}Z\",\"model_id\":\"fraud\",\"status\":\"ok\",\"latency_ms\":{latency}}}\n",
        second / 60,
        second % 60
    )
}

#[test]
fn follow_mode_prints_an_alert_before_the_input_ends() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("slow.yaml");
    std::fs::write(&rules, RULE).unwrap();
    let log = dir.path().join("live.jsonl");
    let mut writer = std::fs::File::create(&log).unwrap();
    for second in 0..60 {
        writer.write_all(line(second, 20.0).as_bytes()).unwrap();
    }
    writer.flush().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_inferwatch"))
        .args(["detect", "--follow", "--quiet", "--rules"])
        .arg(&rules)
        .arg("--dead-letter")
        .arg(dir.path().join("dead.jsonl"))
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    // Minute 1 is slow; three events of minute 2 close it (the clock is the
    // third-newest event time, so one line cannot) and the tick fires.
    for second in 60..120 {
        writer.write_all(line(second, 900.0).as_bytes()).unwrap();
    }
    for second in 120..123 {
        writer.write_all(line(second, 20.0).as_bytes()).unwrap();
    }
    writer.flush().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut alert = None;
    while Instant::now() < deadline {
        if let Ok(line) = receiver.recv_timeout(Duration::from_millis(200)) {
            alert = Some(line);
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        still_running,
        "the follower must keep running while the file is open"
    );
    let alert: serde_json::Value =
        serde_json::from_str(&alert.expect("an alert while following")).unwrap();
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["group"]["model_id"], "fraud");
    assert_eq!(alert["starts_at"], "2026-01-01T00:02:00Z");
}
