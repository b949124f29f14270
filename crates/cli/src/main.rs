//! # inferwatch
//!
//! The `inferwatch` binary: the only crate that uses `anyhow`. Each
//! subcommand lives in its own module with a clap `Args` struct and a `run`
//! function, so `main` only dispatches.

mod demo_cmd;
mod detect_cmd;
mod dora_cmd;
mod ingest_cmd;
mod map_cmd;
mod query_cmd;
mod rules_cmd;
mod run_cmd;
mod score_cmd;
mod serve_cmd;
mod simulate_cmd;
mod slo_cmd;
mod token_cmd;

use clap::{Parser, Subcommand};

// Batches are allocated on one thread and freed on another (reader →
// decoder → flush); the system allocator returned them to the kernel each
// time, so every chunk paid page faults and page zeroing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h (the enum's 16th entry in v2 and
/// v3); libmimalloc-sys names its neighbours but not this one.
const MIMALLOC_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed pages mapped instead of returning them to the kernel, and
/// in small pages rather than transparent huge pages.
///
/// Even mimalloc purges pages that one thread frees for another to
/// allocate, one second later; the flush, the decoders and DataFusion's
/// readers then fault in and zero fresh pages again and again. Measured on
/// `bench/run store` and the top-clients scan of `bench/run query`: kernel
/// time fell from a third of ingest to 4 %, and the scan from 0.53 s to
/// 0.34 s. Memory stays bounded by what inferwatch itself bounds (the
/// memtable, the query's batches): the kept pages are reused by the next
/// flush or query, not added to.
///
/// Huge pages cost more than they save here: each first touch zeroes 2 MiB,
/// and on the virtual machines we measure on that fault path runs at about
/// half the speed of small pages. Without them a 3 M-event ingest used 14 %
/// less CPU and the top-clients scan fell from 0.49 s to 0.35 s. mimalloc
/// has already reserved (and advised huge pages for) its first arena before
/// `main` runs, so its `allow_thp` option would come too late: the process
/// opts out with `prctl` instead. Setting `MIMALLOC_PURGE_DELAY` or
/// `INFERWATCH_HUGE_PAGES=1` keeps the default, for comparison.
#[allow(unsafe_code)]
fn keep_freed_pages() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: `mi_option_set` stores one integer in mimalloc's option
        // table; it takes no pointers and is called before any other thread
        // starts.
        unsafe { libmimalloc_sys::mi_option_set(MIMALLOC_PURGE_DELAY, -1) }
    }
    #[cfg(target_os = "linux")]
    if std::env::var_os("INFERWATCH_HUGE_PAGES").is_none_or(|value| value != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes a flag of this process; a kernel without it returns an
        // error, which changes nothing.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

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
    /// Serve a data directory over the Postgres wire protocol; with
    /// --listen, also take events over HTTP (NDJSON, Elasticsearch _bulk,
    /// Splunk HEC, OTLP logs) and NATS JetStream (--nats-url) and check
    /// them with --rules.
    Serve(Box<serve_cmd::ServeArgs>),
    /// Create, list and revoke the tokens `serve` checks.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
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
    /// The node with a simulated fleet feeding it live: history first, then
    /// traffic stamped with the current time and scheduled incidents; prints
    /// the dashboard's URL and a read token.
    Demo(demo_cmd::Args),
}

fn main() -> std::process::ExitCode {
    keep_freed_pages();
    // The matches are kept: `serve` tells the flags given on the command
    // line from defaults (they win over its config file).
    let matches = <Cli as clap::CommandFactory>::command().get_matches();
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Simulate(args) => simulate_cmd::run(args),
        Command::Detect(args) => detect_cmd::run(args),
        Command::Rules(command) => rules_cmd::run(command),
        Command::Map(args) => map_cmd::run(args),
        Command::Ingest(args) => ingest_cmd::run(args),
        Command::Query(args) => query_cmd::run_query(args),
        Command::Serve(args) => match matches.subcommand_matches("serve") {
            Some(given) => serve_cmd::run(*args, given),
            None => unreachable!("clap parsed the serve subcommand"),
        },
        Command::Token(command) => token_cmd::run(command),
        Command::Run(args) => run_cmd::run(args),
        Command::Score(args) => score_cmd::run(args),
        Command::Slo(command) => slo_cmd::run(command),
        Command::Dora(command) => dora_cmd::run(command),
        Command::Demo(args) => demo_cmd::run(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn freed_pages_are_kept_and_huge_pages_are_off() {
        // SAFETY: reads an integer from mimalloc's option table.
        let read = || unsafe { libmimalloc_sys::mi_option_get(super::MIMALLOC_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // mimalloc v3's default purge delay (1000 ms) identifies the option.
            assert_eq!(read(), 1000);
        }
        super::keep_freed_pages();
        assert_eq!(read(), -1);
        #[cfg(target_os = "linux")]
        if std::env::var_os("INFERWATCH_HUGE_PAGES").is_none() {
            // SAFETY: PR_GET_THP_DISABLE reads a flag of this process.
            let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
            assert_eq!(
                disabled, 1,
                "transparent huge pages are off for the process"
            );
        }
    }
}
