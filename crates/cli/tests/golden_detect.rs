//! Data-driven golden cases: `tests/cases/detect/<case>/{input.jsonl, rules.yaml}`
//! run through the real `inferwatch detect`, compared with `expected.jsonl`
//! (alert transitions) and `expected_dead_letters.jsonl`.
//!
//! `UPDATE_EXPECT=1 cargo test -p inferwatch-cli --test golden_detect` rewrites
//! the expected files; review the diff before committing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases/detect")
}

fn run_case(case: &Path) -> Result<(), String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dead_letters = scratch.path().join("dead.jsonl");
    let output = Command::new(env!("CARGO_BIN_EXE_inferwatch"))
        .args(["detect", "--quiet", "--rules"])
        .arg(case.join("rules.yaml"))
        .arg("--dead-letter")
        .arg(&dead_letters)
        .arg(case.join("input.jsonl"))
        .output()
        .map_err(|e| format!("running inferwatch: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "inferwatch failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let alerts = String::from_utf8_lossy(&output.stdout).to_string();
    // The dead-letter `source` is the input path, which differs per checkout: keep the file name.
    let dead = std::fs::read_to_string(&dead_letters).unwrap_or_default();
    let input_path = case.join("input.jsonl").to_string_lossy().to_string();
    let dead = dead.replace(
        &serde_json::to_string(&input_path).unwrap(),
        "\"input.jsonl\"",
    );
    let mut problems = Vec::new();
    for (name, actual) in [
        ("expected.jsonl", alerts),
        ("expected_dead_letters.jsonl", dead),
    ] {
        let path = case.join(name);
        if std::env::var_os("UPDATE_EXPECT").is_some() {
            if actual.is_empty() && name != "expected.jsonl" {
                let _ = std::fs::remove_file(&path);
            } else {
                std::fs::write(&path, &actual).map_err(|e| e.to_string())?;
            }
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            problems.push(format!(
                "{name} differs\n--- expected\n{expected}\n--- actual\n{actual}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

#[test]
fn every_detect_golden_case_matches() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("tests/cases/detect exists")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("rules.yaml").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected at least 10 detect cases, found {}",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run_case(case)
                .err()
                .map(|e| format!("case {}: {e}", case.display()))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
