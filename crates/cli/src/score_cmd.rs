//! `inferwatch score`: streaming anomaly scores for a `timestamp,value` CSV.
//!
//! The format, the detectors and the bad-input policy are documented in
//! [`inferwatch_detect::score`]; this module only opens files and prints
//! the warnings about rows out of time order.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use inferwatch_detect::score::{
    score_csv_with_warnings, ScoreConfig, ScoreOptions, MAX_ORDER_WARNINGS,
};

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
    let (input, name): (Box<dyn BufRead>, String) = if args.input.as_os_str() == "-" {
        (Box::new(std::io::stdin().lock()), "<stdin>".to_string())
    } else {
        let file = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        (
            Box::new(BufReader::new(file)),
            args.input.display().to_string(),
        )
    };
    // Rows out of time order are scored; the user hears about them as they are read.
    let summary = score_csv_with_warnings(input, &name, output, &options, |warning| {
        eprintln!("warning: {warning}")
    })?;
    let unreported = summary.unreported_order_rows();
    if unreported > 0 {
        eprintln!(
            "warning: {name}: {unreported} more rows out of time order or with duplicate \
             timestamps not shown ({} before the previous row's, {} equal to it; \
             the first {MAX_ORDER_WARNINGS} are above), all scored in file order",
            summary.earlier_rows, summary.duplicate_rows
        );
    }
    eprintln!(
        "scored {} rows ({} skipped: empty, NaN or infinite; {} in warm-up)",
        summary.rows, summary.skipped, summary.warmup_rows
    );
    Ok(ExitCode::SUCCESS)
}
