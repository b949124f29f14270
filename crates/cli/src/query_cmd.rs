//! `inferwatch query` and `inferwatch serve`: SQL over a data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use inferwatch_query::{serve_postgres, PgOptions, QueryEngine};

/// Output formats of `inferwatch query`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Arguments of `inferwatch query`.
#[derive(clap::Args)]
pub struct QueryArgs {
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Answer every query from raw events, never from rollups.
    #[arg(long)]
    pub no_rollups: bool,
    /// Print how long the statement took to standard error (like psql's \\timing).
    #[arg(long)]
    pub timings: bool,
    /// A `detect --state-dir`: its alert history (alert-history.jsonl)
    /// becomes the `alerts` table, one row per alert transition.
    #[arg(long, value_name = "STATE_DIR")]
    pub alerts: Option<PathBuf>,
    /// Run the statement this many times (with --timings: for benchmarks).
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// The SQL statement.
    pub sql: String,
}

/// Postgres listener settings shared by `serve` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct PgArgs {
    /// User name clients log in with.
    #[arg(long, default_value = "inferwatch")]
    pub pg_user: String,
    /// Password clients log in with (MD5 auth); also read from INFERWATCH_PG_PASSWORD.
    #[arg(
        long,
        env = "INFERWATCH_PG_PASSWORD",
        default_value = "inferwatch",
        hide_env_values = true
    )]
    pub pg_password: String,
}

/// Arguments of `inferwatch serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Data directory.
    #[arg(long)]
    pub data: PathBuf,
    /// Address of the Postgres wire listener.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub pg: SocketAddr,
    /// A `detect --state-dir`: its alert history (alert-history.jsonl)
    /// becomes the `alerts` table, one row per alert transition.
    #[arg(long, value_name = "STATE_DIR")]
    pub alerts: Option<PathBuf>,
    #[command(flatten)]
    pub auth: PgArgs,
}

/// A multi-threaded runtime for DataFusion.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `inferwatch query`.
pub fn run_query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let history = alert_history(args.alerts.as_deref());
    let engine = QueryEngine::open_with_alerts(&args.data, !args.no_rollups, history.as_deref())?;
    let runtime = runtime()?;
    let mut batches = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let started = std::time::Instant::now();
        batches = match runtime.block_on(engine.sql(&args.sql)) {
            Ok(batches) => batches,
            Err(error) => {
                eprintln!("error: {error}");
                return Ok(ExitCode::from(1));
            }
        };
        if args.timings {
            eprintln!("time: {:.4}s", started.elapsed().as_secs_f64());
        }
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    write_batches(&mut out, &batches, args.format)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes query results in `format`.
pub fn write_batches(
    out: &mut impl Write,
    batches: &[RecordBatch],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{table}")?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
    }
    Ok(())
}

/// Runs `inferwatch serve`.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let history = alert_history(args.alerts.as_deref());
    let engine = QueryEngine::open_with_alerts(&args.data, true, history.as_deref())?;
    let options = PgOptions {
        listen: args.pg,
        user: args.auth.pg_user.clone(),
        password: args.auth.pg_password.clone(),
    };
    runtime()?.block_on(async move {
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(serve_postgres(engine.context(), options, Some(ready_sender)));
        if let Ok(address) = ready.await {
            eprintln!(
                "inferwatch serve: Postgres wire on {address} (user '{}'); try: psql -h {} -p {} -U {} -c 'SELECT count(*) FROM inference'",
                args.auth.pg_user,
                address.ip(),
                address.port(),
                args.auth.pg_user
            );
        }
        tokio::select! {
            result = server => result.context("the server task failed")??,
            _ = tokio::signal::ctrl_c() => eprintln!("inferwatch serve: stopping"),
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The alert history file in a state dir.
fn alert_history(state_dir: Option<&std::path::Path>) -> Option<PathBuf> {
    state_dir.map(|dir| dir.join(inferwatch_alert::HISTORY_FILE))
}
