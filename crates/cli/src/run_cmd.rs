//! `inferwatch run --config FILE`: ingest into the store and detect in one
//! pass, optionally serving SQL while it runs.
//!
//! The runtime is `inferwatch_server::config::run_config` (the same loop
//! as `ingest`, with detection); this module prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use inferwatch_query::PgOptions;
use inferwatch_server::config::{load_config, run_config, spawn_postgres};
use inferwatch_server::one_pass::PassObserver;
use inferwatch_store::StoreWriter;

use crate::ingest_cmd::StoreProgress;

/// Arguments of `inferwatch run`.
#[derive(clap::Args)]
pub struct Args {
    /// The YAML configuration (see `examples/run.yaml`).
    #[arg(long)]
    pub config: PathBuf,
    /// Hide the progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// The progress line.
struct RunProgress {
    progress: StoreProgress,
    started: Instant,
}

impl PassObserver for RunProgress {
    fn progress(&mut self, events: u64, dead_letters: u64, writer: &StoreWriter) {
        self.progress
            .update(events, dead_letters, writer, self.started);
    }
}

/// Runs `inferwatch run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    // SQL while running: a separate runtime thread over the same directory.
    let runtime = crate::query_cmd::runtime()?;
    let mut start_postgres = || -> Result<(), inferwatch_server::ServerError> {
        let Some(postgres) = &config.postgres else {
            return Ok(());
        };
        // No default password: without one, a loopback listener gets a
        // generated password, printed once; any other address is refused.
        let options = PgOptions::new(
            postgres.listen,
            postgres.user.clone().unwrap_or("inferwatch".into()),
            postgres
                .password
                .clone()
                .or_else(|| std::env::var("INFERWATCH_PG_PASSWORD").ok()),
        )?;
        if options.password_generated {
            eprintln!(
                "inferwatch run: Postgres password for this run (printed once): {}",
                options.password
            );
        }
        if let Some(address) = spawn_postgres(&runtime, &config.data, options)? {
            eprintln!("inferwatch run: Postgres wire on {address}");
        }
        Ok(())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = stop.clone();
    ctrlc::set_handler(move || handler_stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let mut observer = RunProgress {
        progress: StoreProgress::new(args.quiet),
        started: Instant::now(),
    };
    let printer: Box<dyn std::io::Write + Send> =
        Box::new(std::io::BufWriter::new(std::io::stdout()));
    let summary = run_config(
        &config,
        Some(printer),
        stop,
        &mut observer,
        &mut start_postgres,
    )?;
    observer.progress.finish();
    eprintln!(
        "inferwatch run: {} events stored in {} and checked in {:.2}s ({:.0} events/s), {} alert transitions, {} late events, {} dead letters",
        summary.events,
        config.data.display(),
        summary.seconds,
        summary.events as f64 / summary.seconds.max(1e-9),
        summary.alerts,
        summary.late_events,
        summary.dead_letters,
    );
    if let Some(totals) = &summary.deliveries {
        let grace = format!(
            "{}s",
            inferwatch_server::config::RUN_DELIVERY_GRACE.as_secs()
        );
        crate::detect_cmd::print_deliveries("run", &grace, totals);
    }
    if config.postgres.is_some() && config.follow {
        // Following ended by Ctrl-C: the server stops with the process.
        runtime.shutdown_background();
    }
    Ok(ExitCode::SUCCESS)
}
