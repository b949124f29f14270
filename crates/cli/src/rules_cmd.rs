//! `inferwatch rules check|test`: validate rules, and run the fixtures they carry.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use inferwatch_core::{parse_duration, Alert};
use inferwatch_detect::{load_rules_dir, Engine, ExpectedAlert, Rule, RuleTest};
use inferwatch_ingest::{Decoder, ReaderSource, Source, SourcePoll};
use inferwatch_sim::{generate, Scenario, SimConfig};

use crate::detect_cmd::load_mapping;

/// Rules subcommands.
#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate every rule in a directory: syntax, durations, columns and types.
    Check {
        /// Directory (or single file) of YAML rules.
        dir: PathBuf,
        /// Field mapping, so that enrichment columns are known.
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
    /// Run each rule's fixtures (`tests:`) and compare the alerts it raises.
    Test {
        /// Directory (or single file) of YAML rules.
        dir: PathBuf,
        /// Field mapping for fixture input files.
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
}

/// Runs a rules subcommand.
pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { dir, mapping } => check(&dir, mapping.as_ref()),
        RulesCommand::Test { dir, mapping } => test(&dir, mapping.as_ref()),
    }
}

fn check(dir: &Path, mapping: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let decoder = Decoder::new(load_mapping(mapping)?);
    let (rules, mut errors) = load_rules_dir(dir);
    errors.extend(Engine::check(&rules, &decoder.schema()));
    for error in &errors {
        eprintln!("error: {error}");
    }
    if !errors.is_empty() {
        eprintln!("{} error(s) in {}", errors.len(), dir.display());
        return Ok(ExitCode::from(1));
    }
    println!("ok: {} rule(s) in {}", rules.len(), dir.display());
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path, mapping: Option<&PathBuf>) -> anyhow::Result<ExitCode> {
    let decoder = Decoder::new(load_mapping(mapping)?);
    let (rules, errors) = load_rules_dir(dir);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        return Ok(ExitCode::from(1));
    }
    let (mut passed, mut failed) = (0, 0);
    for rule in &rules {
        for fixture in &rule.tests {
            match run_fixture(rule, &rules, fixture, &decoder) {
                Ok(()) => {
                    passed += 1;
                    println!("pass  {} :: {}", rule.id, fixture.name);
                }
                Err(problem) => {
                    failed += 1;
                    println!("FAIL  {} :: {}\n      {problem:#}", rule.id, fixture.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs one fixture of one rule (with the rules that confirm it, whose own
/// alerts are left out); the error explains the mismatch.
pub fn run_fixture(
    rule: &Rule,
    loaded: &[Rule],
    fixture: &RuleTest,
    decoder: &Decoder,
) -> anyhow::Result<()> {
    let data = fixture_input(rule, fixture)?;
    let mut alerts = detect_in_memory(Engine::with_confirming_rules(rule, loaded), data, decoder)?;
    alerts.retain(|alert| alert.rule_id == rule.id);
    compare(&alerts, &fixture.expect)
}

fn fixture_input(rule: &Rule, fixture: &RuleTest) -> anyhow::Result<Vec<u8>> {
    match (&fixture.input, &fixture.simulate) {
        (Some(input), None) => {
            let base = rule.source.path.parent().unwrap_or(Path::new("."));
            let path = base.join(input);
            std::fs::read(&path)
                .with_context(|| format!("reading fixture input {}", path.display()))
        }
        (None, Some(simulated)) => {
            let config = SimConfig {
                scenarios: Scenario::parse_list(&simulated.scenario)?,
                duration_ns: parse_duration(&simulated.duration)?,
                rate: simulated.rate.unwrap_or(SimConfig::default().rate),
                seed: simulated.seed.unwrap_or(SimConfig::default().seed),
                ..SimConfig::default()
            };
            let mut data = Vec::new();
            generate(&config, &mut data)?;
            Ok(data)
        }
        _ => anyhow::bail!("a fixture needs exactly one of 'input' or 'simulate'"),
    }
}

/// Decodes `data` and runs rules over it, returning every transition.
pub fn detect_in_memory(
    rules: Vec<Rule>,
    data: Vec<u8>,
    decoder: &Decoder,
) -> anyhow::Result<Vec<Alert>> {
    let mut decoder = decoder.clone();
    let mut engine = Engine::new(rules, &decoder.schema())?;
    let mut alerts = Vec::new();
    // The same line-cutting source that reads stdin, over the in-memory fixture.
    let mut source =
        ReaderSource::new("fixture", std::io::Cursor::new(data)).with_chunk_bytes(4 << 20);
    loop {
        match source.next_chunk()? {
            SourcePoll::Ready(ready) => {
                alerts.extend(engine.observe(&decoder.decode(&ready.chunk).batch))
            }
            SourcePoll::Idle => continue,
            SourcePoll::End => break,
        }
    }
    alerts.extend(engine.finish());
    Ok(alerts)
}

fn compare(actual: &[Alert], expected: &[ExpectedAlert]) -> anyhow::Result<()> {
    let describe = |alert: &Alert| {
        format!(
            "{} {:?} starts_at={} ends_at={}",
            serde_json::to_string(&alert.state).unwrap_or_default(),
            alert.group,
            alert.starts_at,
            alert.ends_at.as_deref().unwrap_or("-")
        )
    };
    let matches = |alert: &Alert, want: &ExpectedAlert| {
        serde_json::to_value(alert.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .as_deref()
            == Some(want.state.as_str())
            && want
                .group
                .iter()
                .all(|(key, value)| alert.group.get(key) == Some(value))
            && want
                .starts_at
                .as_ref()
                .is_none_or(|s| *s == alert.starts_at)
            && want
                .ends_at
                .as_ref()
                .is_none_or(|e| Some(e) == alert.ends_at.as_ref())
    };
    if actual.len() == expected.len() && actual.iter().zip(expected).all(|(a, e)| matches(a, e)) {
        return Ok(());
    }
    let got: Vec<String> = actual.iter().map(describe).collect();
    anyhow::bail!(
        "expected {} transition(s) {:?}, got {}:\n        {}",
        expected.len(),
        expected
            .iter()
            .map(|e| format!("{} {:?}", e.state, e.group))
            .collect::<Vec<_>>(),
        actual.len(),
        if got.is_empty() {
            "(none)".to_string()
        } else {
            got.join("\n        ")
        }
    )
}
