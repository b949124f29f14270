//! Helpers shared by the end-to-end tests that drive the real binary.
// Each test binary uses a subset of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
