//! `inferwatch dora report`: deployment frequency, lead time, change
//! failure rate and time to restore per model, from deployment records, the
//! alert history and rollback remediations (see `inferwatch_alert::dora`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use inferwatch_alert::dispatch::REMEDIATIONS_FILE;
use inferwatch_alert::dora::{dora_report, render_text, DoraInputs, DoraOptions};
use inferwatch_alert::{parse_event_time, parse_severity, HISTORY_FILE};

/// DORA subcommands.
#[derive(clap::Subcommand)]
pub enum DoraCommand {
    /// Print deployment frequency, lead time for changes, change failure
    /// rate and time to restore, per model and overall.
    Report(ReportArgs),
}

/// Arguments of `inferwatch dora report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// Deployment records (JSONL), e.g. from `simulate --deployments`.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub deployments: Vec<PathBuf>,
    /// Alert history files (alert-history.jsonl).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub history: Vec<PathBuf>,
    /// Rollback remediation records (remediations.jsonl).
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub remediations: Vec<PathBuf>,
    /// A `detect --state-dir`: reads its alert-history.jsonl and
    /// deliveries/remediations.jsonl, where they exist.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Start of the period (RFC 3339); default the first record.
    #[arg(long)]
    pub since: Option<String>,
    /// End of the period (RFC 3339); default the last record.
    #[arg(long)]
    pub until: Option<String>,
    /// A deploy followed within this long by a rollback or an incident failed.
    #[arg(long, default_value = "24h")]
    pub window: String,
    /// Incidents below this severity are left out.
    #[arg(long, default_value = "high", value_name = "SEVERITY")]
    pub min_severity: String,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs a DORA subcommand.
pub fn run(command: DoraCommand) -> anyhow::Result<ExitCode> {
    match command {
        DoraCommand::Report(args) => report(args),
    }
}

fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let mut history = args.history.clone();
    let mut remediations = args.remediations.clone();
    if let Some(state_dir) = &args.state_dir {
        let found = state_dir.join(HISTORY_FILE);
        if found.exists() {
            history.push(found);
        }
        let found = state_dir.join("deliveries").join(REMEDIATIONS_FILE);
        if found.exists() {
            remediations.push(found);
        }
    }
    if args.deployments.is_empty() && history.is_empty() {
        bail!("nothing to report on: give --deployments, --history or --state-dir");
    }
    let min_severity = parse_severity(&args.min_severity).with_context(|| {
        format!(
            "unknown severity {:?}; one of info, low, medium, high, critical",
            args.min_severity
        )
    })?;
    let options = DoraOptions {
        since: args.since.as_deref().map(parse_event_time).transpose()?,
        until: args.until.as_deref().map(parse_event_time).transpose()?,
        failure_window_ns: inferwatch_core::parse_duration(&args.window)?,
        min_severity,
    };
    let mut inputs = DoraInputs::default();
    for path in &args.deployments {
        inputs.add_deployments_file(path)?;
    }
    for path in &history {
        inputs.add_history_file(path)?;
    }
    for path in &remediations {
        inputs.add_remediations_file(path)?;
    }
    let report = dora_report(&inputs, &options)?;
    let mut output = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut output, &report)?;
        writeln!(output)?;
    } else {
        output.write_all(render_text(&report).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}
