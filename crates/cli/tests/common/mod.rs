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
