//! `inferwatch query`: SQL over a data directory (and the SQL flags `serve` shares).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use inferwatch_query::{PgOptions, QueryEngine, StatementLimits};

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
    #[command(flatten)]
    pub limits: LimitArgs,
    /// The SQL statement (read-only: queries, EXPLAIN, SHOW).
    pub sql: String,
}

/// What one statement may use, for `query` and `serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Cancel a statement that runs longer than this (e.g. 30s, 5m).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub statement_timeout: String,
    /// Fail a statement whose operators need more memory than this (e.g.
    /// 512MB, 2GB); nothing spills to disk.
    #[arg(long, default_value = "1GB", value_name = "SIZE")]
    pub statement_memory: String,
}

impl LimitArgs {
    /// The limits, parsed.
    pub fn limits(&self) -> anyhow::Result<StatementLimits> {
        let nanos = inferwatch_core::parse_duration(&self.statement_timeout)
            .with_context(|| format!("--statement-timeout {}", self.statement_timeout))?;
        let timeout = std::time::Duration::from_nanos(nanos.max(0) as u64);
        let memory = inferwatch_server::one_pass::parse_size(&self.statement_memory)
            .with_context(|| format!("--statement-memory {}", self.statement_memory))?;
        anyhow::ensure!(!timeout.is_zero(), "--statement-timeout must be positive");
        anyhow::ensure!(memory > 0, "--statement-memory must be positive");
        Ok(StatementLimits {
            timeout,
            memory_bytes: usize::try_from(memory).unwrap_or(usize::MAX),
        })
    }
}

/// Postgres listener settings shared by `serve` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct PgArgs {
    /// User name clients log in with (default `inferwatch`). With tokens
    /// on (`serve --listen` without `--open`) any user name is accepted
    /// unless this is given.
    #[arg(long)]
    pub pg_user: Option<String>,
    /// Password clients log in with (SCRAM-SHA-256); also read from
    /// INFERWATCH_PG_PASSWORD. There is no default: without one, a loopback
    /// --pg gets a random password printed once at start, and any other
    /// address is refused. Not used with tokens on: the password is then a
    /// read (or admin) token.
    #[arg(long, env = "INFERWATCH_PG_PASSWORD", hide_env_values = true)]
    pub pg_password: Option<String>,
    /// PEM certificate chain: offer TLS (with --pg-tls-key).
    #[arg(long, value_name = "PEM", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<PathBuf>,
    /// PEM private key for --pg-tls-cert.
    #[arg(long, value_name = "PEM", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<PathBuf>,
}

/// The user name when none is given and one password is checked.
pub const DEFAULT_PG_USER: &str = "inferwatch";

impl PgArgs {
    /// Listener options for `listen`: one password, or, with `logins`,
    /// the node's tokens.
    pub fn options(
        &self,
        listen: SocketAddr,
        logins: Option<std::sync::Arc<dyn inferwatch_query::scram::PgLogins>>,
    ) -> anyhow::Result<PgOptions> {
        let options = match logins {
            Some(logins) => {
                anyhow::ensure!(
                    self.pg_password.is_none(),
                    "with tokens on (serve --listen without --open) the Postgres wire takes a read token as the password: drop --pg-password (and unset INFERWATCH_PG_PASSWORD)"
                );
                PgOptions::with_logins(listen, self.pg_user.clone(), logins)
            }
            None => PgOptions::new(
                listen,
                self.pg_user.as_deref().unwrap_or(DEFAULT_PG_USER),
                self.pg_password.clone(),
            )?,
        };
        Ok(match (&self.pg_tls_cert, &self.pg_tls_key) {
            (Some(certificate), Some(key)) => options.with_tls(certificate.clone(), key.clone()),
            _ => options,
        })
    }
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
    let engine = QueryEngine::open_with_limits(
        &args.data,
        !args.no_rollups,
        history.as_deref(),
        args.limits.limits()?,
    )?;
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

/// The alert history file in a state dir.
pub fn alert_history(state_dir: Option<&std::path::Path>) -> Option<PathBuf> {
    state_dir.map(|dir| dir.join(inferwatch_alert::HISTORY_FILE))
}
