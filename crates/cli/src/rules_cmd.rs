//! `inferwatch rules check|test|coverage`: validate rules, run the fixtures
//! they carry, and show which MITRE ATLAS techniques they cover.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use inferwatch_core::{parse_duration, Alert};
use inferwatch_detect::atlas::{self, Coverage, Evidence, Naming, RunFixture, Status, TACTICS};
use inferwatch_detect::{load_rules_dir, Engine, ExpectedAlert, Rule, RuleTest};
use inferwatch_ingest::{Decoder, Mapping, ReaderSource, Source, SourcePoll};
use inferwatch_sim::{
    foreign_lines, foreign_value, generate, Scenario, SimConfig, FOREIGN_MAPPING,
};
use serde_json::{json, Value};

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
    /// Show the MITRE ATLAS techniques the rules cover, tactic by tactic,
    /// judged from their `atlas:` ids and fixtures.
    Coverage {
        /// Directory (or single file) of YAML rules.
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = CoverageFormat::Text)]
        format: CoverageFormat,
        /// Run the fixtures that expect an alert (as `rules test` does)
        /// instead of taking their declarations at their word.
        #[arg(long)]
        run: bool,
        /// Field mapping for fixture input files (with --run).
        #[arg(long)]
        mapping: Option<PathBuf>,
    },
}

/// Output formats of `inferwatch rules coverage`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoverageFormat {
    /// A tactic-by-technique matrix.
    Text,
    /// One JSON object.
    Json,
}

/// Runs a rules subcommand.
pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { dir, mapping } => check(&dir, mapping.as_ref()),
        RulesCommand::Test { dir, mapping } => test(&dir, mapping.as_ref()),
        RulesCommand::Coverage {
            dir,
            format,
            run,
            mapping,
        } => coverage(&dir, format, run, mapping.as_ref()),
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
            for &naming in Naming::modes_of(fixture) {
                let label = match naming {
                    Naming::Default => fixture.name.clone(),
                    Naming::Foreign => format!("{} [foreign names]", fixture.name),
                };
                match run_fixture(rule, &rules, fixture, &decoder, naming) {
                    Ok(()) => {
                        passed += 1;
                        println!("pass  {} :: {label}", rule.id);
                    }
                    Err(problem) => {
                        failed += 1;
                        println!("FAIL  {} :: {label}\n      {problem:#}", rule.id);
                    }
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

const NAMING_MODES: &str = "default = the simulator's names; foreign = renamed models, \
     versions and A/B groups served through a mapping";

fn coverage(
    dir: &Path,
    format: CoverageFormat,
    run: bool,
    mapping: Option<&PathBuf>,
) -> anyhow::Result<ExitCode> {
    let decoder = Decoder::new(load_mapping(mapping)?);
    let (rules, errors) = load_rules_dir(dir);
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        return Ok(ExitCode::from(1));
    }
    let mut run_one = |rule: &Rule, fixture: &RuleTest, naming: Naming| match run_fixture(
        rule, &rules, fixture, &decoder, naming,
    ) {
        Ok(()) => true,
        Err(problem) => {
            eprintln!(
                "FAIL  {} :: {} [{}]\n      {problem:#}",
                rule.id,
                fixture.name,
                naming.as_str()
            );
            false
        }
    };
    let report = atlas::coverage(
        &rules,
        if run {
            Some(&mut run_one as &mut RunFixture)
        } else {
            None
        },
    );
    match format {
        CoverageFormat::Text => print!("{}", coverage_text(&report, dir)),
        CoverageFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&coverage_json(&report, dir))?
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// The JSON report. Its shape is a contract: fields may be added, never
/// renamed or removed.
fn coverage_json(report: &Coverage, dir: &Path) -> Value {
    let mut value = atlas::coverage_json(report);
    if let Some(object) = value.as_object_mut() {
        object.insert("rules_dir".into(), json!(dir.display().to_string()));
    }
    value
}

/// The text report: each tactic of the ATLAS matrix with its techniques
/// (a technique serving several tactics shows under each), then the fixture
/// evidence per rule.
fn coverage_text(report: &Coverage, dir: &Path) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "MITRE ATLAS coverage of {} ({} rules, {} with a technique below)",
        dir.display(),
        report.rule_count,
        report.rules.len()
    );
    let _ = writeln!(
        out,
        "evidence: {}",
        match report.evidence {
            Evidence::Declared => "fixture declarations, not run (--run runs them)",
            Evidence::Run => "fixtures run",
        }
    );
    let _ = writeln!(out, "naming modes: {NAMING_MODES}");
    for tactic in TACTICS {
        let _ = writeln!(out, "\n{} ({})", tactic.name, tactic.id);
        for line in report
            .techniques
            .iter()
            .filter(|line| line.technique.tactics.contains(tactic))
        {
            let _ = writeln!(out, "  {:<14} {}", line.technique.id, line.technique.name);
            let status = match line.status {
                Status::Covered => "covered",
                Status::Partial => "partial",
                Status::NotCovered => "not covered",
            };
            if line.rules.is_empty() {
                let _ = writeln!(out, "  {:<14} {status}", "");
            } else {
                let _ = writeln!(out, "  {:<14} {status}: {}", "", line.rules.join(", "));
            }
        }
    }
    if !report.rules.is_empty() {
        let width = report
            .rules
            .iter()
            .map(|rule| rule.id.len())
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "\n{:<width$}  {:<18} {:<18} status",
            "rule", "default", "foreign"
        );
        for rule in &report.rules {
            let _ = writeln!(
                out,
                "{:<width$}  {:<18} {:<18} {}",
                rule.id,
                rule.default.describe(),
                rule.foreign.describe(),
                match rule.status() {
                    Status::Covered => "covers",
                    _ => "partial",
                }
            );
        }
    }
    for (id, rules) in &report.outside {
        let _ = writeln!(out, "\nnot in the matrix: {id} ({})", rules.join(", "));
    }
    let _ = writeln!(
        out,
        "\n{} covered, {} partial, {} not covered of {} techniques",
        report.count(Status::Covered),
        report.count(Status::Partial),
        report.count(Status::NotCovered),
        report.techniques.len()
    );
    if report.rules.iter().all(|rule| rule.foreign.fixtures == 0) {
        let _ = writeln!(
            out,
            "no fixture declares foreign naming yet, so no technique can be covered"
        );
    }
    out
}

/// Runs one fixture of one rule (with the rules that confirm it, whose own
/// alerts are left out); the error explains the mismatch.
///
/// Under foreign names the simulated fleet is rewritten by
/// [`foreign_lines`], read through [`FOREIGN_MAPPING`] instead of
/// `decoder`, and the expected groups are named in the foreign words.
pub fn run_fixture(
    rule: &Rule,
    loaded: &[Rule],
    fixture: &RuleTest,
    decoder: &Decoder,
    naming: Naming,
) -> anyhow::Result<()> {
    let data = fixture_input(rule, fixture)?;
    let rules = Engine::with_confirming_rules(rule, loaded);
    let (mut alerts, expected) = match naming {
        Naming::Default => (
            detect_in_memory(rules, data, decoder)?,
            fixture.expect.clone(),
        ),
        Naming::Foreign => {
            let mapping = Mapping::from_yaml_str(Path::new("foreign-fleet.yaml"), FOREIGN_MAPPING)?;
            let foreign = Decoder::new(std::sync::Arc::new(mapping));
            let expected = fixture
                .expect
                .iter()
                .map(|want| {
                    let mut want = want.clone();
                    for (column, value) in want.group.iter_mut() {
                        *value = foreign_value(column, value);
                    }
                    want
                })
                .collect();
            (
                detect_in_memory(rules, foreign_lines(&data), &foreign)?,
                expected,
            )
        }
    };
    alerts.retain(|alert| alert.rule_id == rule.id);
    compare(&alerts, &expected)
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
                noise: simulated.noise,
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
    let mut engine =
        Engine::new(rules, &decoder.schema())?.with_roles(decoder.mapping().roles().clone());
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
    // Transitions match one to one, in any order: transitions at the same
    // tick come out in group-key order, which depends on the names.
    let mut unused: Vec<&Alert> = actual.iter().collect();
    let all_found =
        expected.iter().all(
            |want| match unused.iter().position(|alert| matches(alert, want)) {
                Some(index) => {
                    unused.remove(index);
                    true
                }
                None => false,
            },
        );
    if all_found && unused.is_empty() {
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
