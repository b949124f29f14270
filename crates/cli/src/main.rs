//! # inferwatch
//!
//! The `inferwatch` binary: the only crate that uses `anyhow`. Each
//! subcommand lives in its own module with a clap `Args` struct and a `run`
//! function, so `main` only dispatches.

mod correlator;
mod detect_cmd;
mod dora_cmd;
mod ingest_cmd;
mod map_cmd;
mod pipeline;
mod query_cmd;
mod router;
mod rules_cmd;
mod run_cmd;
mod score_cmd;
mod simulate_cmd;
mod slo_cmd;

use clap::{Parser, Subcommand};

// Chunks are megabyte buffers allocated on the reader thread and freed on a
// decoder thread; the system allocator returns them to the kernel each time,
// so every chunk paid page faults and page zeroing. mimalloc keeps them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A SIEM for AI model inference.
#[derive(Parser)]
#[command(name = "inferwatch", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a deterministic synthetic model fleet as JSONL.
    Simulate(simulate_cmd::Args),
    /// Run detection rules over log files or stdin and print alerts as JSONL.
    Detect(detect_cmd::Args),
    /// Check or test a directory of rules.
    #[command(subcommand)]
    Rules(rules_cmd::RulesCommand),
    /// Decode and map logs into canonical events, printed as JSONL.
    Map(map_cmd::Args),
    /// Store logs in a data directory (WAL, Parquet segments, rollups).
    Ingest(ingest_cmd::Args),
    /// Run one SQL statement against a data directory.
    Query(query_cmd::QueryArgs),
    /// Serve a data directory over the Postgres wire protocol.
    Serve(query_cmd::ServeArgs),
    /// Ingest, store and detect in one pass, as a config file describes.
    Run(run_cmd::Args),
    /// Service level objectives: error budget reports.
    #[command(subcommand)]
    Slo(slo_cmd::SloCommand),
    /// DORA metrics for models: deployment frequency, lead time, change
    /// failure rate, time to restore.
    #[command(subcommand)]
    Dora(dora_cmd::DoraCommand),
    /// Score a `timestamp,value` CSV series: anomaly scores in [0, 1] as CSV.
    Score(score_cmd::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Simulate(args) => simulate_cmd::run(args),
        Command::Detect(args) => detect_cmd::run(args),
        Command::Rules(command) => rules_cmd::run(command),
        Command::Map(args) => map_cmd::run(args),
        Command::Ingest(args) => ingest_cmd::run(args),
        Command::Query(args) => query_cmd::run_query(args),
        Command::Serve(args) => query_cmd::run_serve(args),
        Command::Run(args) => run_cmd::run(args),
        Command::Score(args) => score_cmd::run(args),
        Command::Slo(command) => slo_cmd::run(command),
        Command::Dora(command) => dora_cmd::run(command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}
