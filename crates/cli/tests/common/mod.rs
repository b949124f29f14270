//! Helpers shared by the end-to-end tests that drive the real binary.
// Each test binary uses a subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// The `inferwatch` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_inferwatch")
}

/// The shipped rule pack.
pub fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules")
}

/// Runs the binary, asserts success and returns its standard output.
pub fn run(args: &[&str]) -> String {
    let output = Command::new(binary())
        .args(args)
        .output()
        .expect("running inferwatch");
    assert!(
        output.status.success(),
        "inferwatch {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// One JSON object per line.
pub fn parse_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// An RFC 3339 time as Unix nanoseconds.
pub fn nanos(text: &str) -> i64 {
    inferwatch_core::parse_timestamp_text(text).expect("RFC 3339")
}

/// Whether the tests run in CI (`CI=true`), where a missing real component
/// fails its test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `program probe…` runs: `false` (the test skips, with a message)
/// when it does not, except in CI, where it fails (`scripts/test-deps`
/// installs the real clients).
pub fn available(program: &str, probe: &[&str]) -> bool {
    let works = Command::new(program)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works || !in_ci(),
        "{program} {probe:?} is needed in CI (scripts/test-deps installs it)"
    );
    if !works {
        eprintln!("skipping: {program} {probe:?} does not work here");
    }
    works
}

/// The Python with the test clients (`INFERWATCH_PYTHON`, from `scripts/test-deps`).
pub fn python() -> String {
    std::env::var("INFERWATCH_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// A webhook receiver on a loopback port: answers every POST with 200
/// and hands its JSON body over.
pub fn webhook_receiver() -> (String, std::sync::mpsc::Receiver<Value>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = Vec::new();
            let mut buffer = [0u8; 8192];
            // Headers, then as many body bytes as Content-Length says.
            let body = loop {
                let Ok(read) = stream.read(&mut buffer) else {
                    break None;
                };
                if read == 0 {
                    break None;
                }
                request.extend_from_slice(&buffer[..read]);
                let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .unwrap_or(0);
                if request.len() >= end + 4 + length {
                    break Some(request[end + 4..end + 4 + length].to_vec());
                }
            };
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Some(body) = body {
                if let Ok(json) = serde_json::from_slice(&body) {
                    let _ = sender.send(json);
                }
            }
        }
    });
    (format!("http://{address}/hook"), received)
}
