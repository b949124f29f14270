//! `inferwatch score`: streaming anomaly scores for a `timestamp,value` CSV.
//!
//! The format, the detectors and the bad-input policy are documented in
//! [`inferwatch_detect::score`]; this module only opens files.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use inferwatch_detect::score::{score_csv, ScoreConfig, ScoreOptions};

/// Arguments of `inferwatch score`.
#[derive(clap::Args)]
pub struct Args {
    /// Detector: ewma, seasonal, forest or auto (an ensemble needing no tuning).
    #[arg(long, default_value = "auto")]
    detector: String,
    /// YAML file of detector parameters (warmup, half_life, seasonal,
    /// shingle_size, trees, tree_capacity, seed).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output CSV (`timestamp,value,anomaly_score`); `-` writes to standard output.
    #[arg(long, short, default_value = "-")]
    output: PathBuf,
    /// Input CSV with a `timestamp,value` header; `-` reads standard input.
    input: PathBuf,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args
        .config
        .as_deref()
        .map(ScoreConfig::from_path)
        .transpose()?;
    let options = ScoreOptions {
        detector: args.detector,
        config,
    };
    let output: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        let file = File::create(&args.output)
            .with_context(|| format!("cannot create {}", args.output.display()))?;
        Box::new(BufWriter::new(file))
    };
    let summary = if args.input.as_os_str() == "-" {
        score_csv(std::io::stdin().lock(), "<stdin>", output, &options)?
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        let name = args.input.display().to_string();
        score_csv(BufReader::new(file), &name, output, &options)?
    };
    eprintln!(
        "scored {} rows ({} skipped: empty, NaN or infinite; {} in warm-up)",
        summary.rows, summary.skipped, summary.warmup_rows
    );
    Ok(ExitCode::SUCCESS)
}
