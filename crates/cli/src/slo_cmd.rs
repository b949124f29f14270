//! `inferwatch slo report`: replay logs through SLOs and print the error
//! budget each one has left, per group.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use inferwatch_detect::{load_slos, BudgetReport, SloEvaluator};
use inferwatch_ingest::{DeadLetterWriter, Decoder, Mapping};

use crate::detect_cmd::load_mapping;
use inferwatch_server::pipeline::{InputSpec, Pipeline, PipelineEvent};

/// SLO subcommands.
#[derive(clap::Subcommand)]
pub enum SloCommand {
    /// Replay logs through the SLOs and print each one's error budget per
    /// group: SLI achieved, bad events against the allowance, budget left
    /// and the burn rate over each alert window.
    Report(ReportArgs),
}

/// Arguments of `inferwatch slo report`.
#[derive(clap::Args)]
pub struct ReportArgs {
    /// SLO file, or directory of SLO files (YAML).
    #[arg(long)]
    pub slos: PathBuf,
    /// Field mapping (YAML); the built-in mappings apply when omitted.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Print a JSON array of reports instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Where refused lines go, one JSON object each.
    #[arg(long, default_value = "inferwatch.dlq.jsonl")]
    pub dead_letter: PathBuf,
    /// Decoder threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Log files or globs (`.gz` is read transparently); `-` or nothing reads standard input.
    pub inputs: Vec<String>,
}

/// Runs an SLO subcommand.
pub fn run(command: SloCommand) -> anyhow::Result<ExitCode> {
    match command {
        SloCommand::Report(args) => report(args),
    }
}

/// Loads and compiles SLOs against the decoder's schema, reporting every error at once.
pub fn load_slo_evaluator(path: &Path, decoder: &Decoder) -> anyhow::Result<SloEvaluator> {
    let (slos, errors) = load_slos(path);
    let mut messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.extend(
        SloEvaluator::check(&slos, &decoder.schema())
            .iter()
            .map(ToString::to_string),
    );
    if !messages.is_empty() {
        bail!(
            "{} SLO error(s):\n  {}",
            messages.len(),
            messages.join("\n  ")
        );
    }
    if slos.is_empty() {
        bail!("no SLOs found in {}", path.display());
    }
    Ok(SloEvaluator::new(slos, &decoder.schema())?)
}

/// The decoder for `columns` only: other columns stay null and their keys are skipped.
pub fn projected_decoder(mapping: &Arc<Mapping>, columns: &[String]) -> Decoder {
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    Decoder::new(Arc::new(mapping.projected(&columns)))
}

fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let mapping = load_mapping(args.mapping.as_ref())?;
    let mut evaluator = load_slo_evaluator(&args.slos, &Decoder::new(mapping.clone()))?;
    let decoder = projected_decoder(&mapping, &evaluator.referenced_columns());
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let spec = InputSpec {
        inputs: args.inputs.clone(),
        follow: false,
        checkpoint: None,
        chunk_bytes: 2 << 20,
        resume: None,
    };
    let mut pipeline = Pipeline::start(spec, decoder, threads)?;
    let mut dead_letters: Option<DeadLetterWriter> = None;
    let mut refused = 0u64;
    while let Some(event) = pipeline.next_event()? {
        let PipelineEvent::Batch { decoded, .. } = event else {
            continue;
        };
        if !decoded.dead_letters.is_empty() {
            refused += decoded.dead_letters.len() as u64;
            let writer = match &mut dead_letters {
                Some(writer) => writer,
                None => dead_letters.insert(DeadLetterWriter::open(&args.dead_letter)?),
            };
            writer.write(&decoded.dead_letters)?;
        }
        // The report is about budgets; the alert transitions are `detect --slos`'s job.
        evaluator.observe(&decoded.batch);
    }
    evaluator.finish();
    pipeline.finish();
    let reports = evaluator.report();
    let mut output = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        serde_json::to_writer_pretty(&mut output, &reports)?;
        writeln!(output)?;
    } else {
        write_table(&mut output, &reports)?;
    }
    output.flush()?;
    let late = evaluator.late_events();
    if refused > 0 || late > 0 {
        eprintln!(
            "inferwatch slo report: {refused} refused line(s){}, {late} late event(s) not counted",
            if refused > 0 {
                format!(" (see {})", args.dead_letter.display())
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn percent(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$} %"))
}

/// One aligned row per SLO and group.
fn write_table(output: &mut impl Write, reports: &[BudgetReport]) -> std::io::Result<()> {
    if reports.is_empty() {
        return writeln!(output, "no events matched any SLO");
    }
    let header = [
        "SLO",
        "GROUP",
        "SLI",
        "OBJECTIVE",
        "ACHIEVED",
        "EVENTS",
        "BAD",
        "ALLOWED",
        "BUDGET LEFT",
        "BURN RATES",
        "FIRING",
    ];
    let rows: Vec<[String; 11]> = reports
        .iter()
        .map(|report| {
            [
                report.slo_id.clone(),
                if report.group.is_empty() {
                    "-".to_string()
                } else {
                    report.group.values().cloned().collect::<Vec<_>>().join(" ")
                },
                report.sli.clone(),
                format!("{} %", report.objective),
                percent(report.sli_achieved, 3),
                report.events.to_string(),
                report.bad_events.to_string(),
                format!("{:.1}", report.budget_total),
                percent(report.budget_remaining, 1),
                report
                    .burn_rates
                    .iter()
                    .map(|burn| format!("{} {:.2}×", burn.window, burn.burn_rate))
                    .collect::<Vec<_>>()
                    .join("  "),
                if report.firing.is_empty() {
                    "-".to_string()
                } else {
                    report.firing.join(" ")
                },
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell}{}", " ".repeat(width - cell.chars().count())))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    writeln!(output, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(output, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    let periods: Vec<String> = {
        let mut periods: Vec<String> = reports
            .iter()
            .map(|report| format!("{} up to {}", report.period, report.to))
            .collect();
        periods.sort();
        periods.dedup();
        periods
    };
    writeln!(
        output,
        "\nBudgets count the events of each SLO's period ({}). ALLOWED = events × (1 − objective).",
        periods.join("; ")
    )
}
