//! `inferwatch run --config FILE`: ingest into the store and detect in one
//! pass, optionally serving SQL while it runs.
//!
//! Each decoded batch goes to the store's WAL and then to the rule engine,
//! so detection reads exactly what was stored, once, without re-decoding.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::Context;
use inferwatch_core::{Alert, DEFAULT_STREAM};
use inferwatch_ingest::{DeadLetterWriter, DecodeCounters, Decoder};
use inferwatch_query::{serve_postgres, PgOptions, QueryEngine};
use serde::Deserialize;

use crate::alert_ledger::{replay_store, AlertLedger};
use crate::detect_cmd::{load_engine, load_mapping};
use crate::ingest_cmd::{
    append_guarded, default_threads, readmit_held, resume_position, store_guard_release,
    write_dead_letters, LastAppend, StoreArgs, StoreProgress,
};
use crate::pipeline::{InputSpec, Pipeline, PipelineEvent};

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

/// The `run` configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Data directory (relative paths are relative to the config file).
    pub data: PathBuf,
    /// Log files or globs; `-` reads standard input.
    pub inputs: Vec<String>,
    /// Keep following the inputs.
    #[serde(default)]
    pub follow: bool,
    /// Field mapping (YAML) for the inference stream.
    #[serde(default)]
    pub mapping: Option<PathBuf>,
    /// Rules directory.
    pub rules: PathBuf,
    /// Alerts JSONL file (appended); standard output when absent.
    #[serde(default)]
    pub alerts: Option<PathBuf>,
    /// Refused lines (default: the data directory's `dead_letters.jsonl`,
    /// the `dead_letters` SQL table).
    #[serde(default)]
    pub dead_letter: Option<PathBuf>,
    /// Store settings.
    #[serde(default)]
    pub store: StoreConfig,
    /// Serve SQL over the Postgres wire while running.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// How far ahead of the clock the events agree on an event may be
    /// (default `2m`); further ahead is a `future_timestamp` dead letter.
    #[serde(default)]
    pub max_future: Option<String>,
}

/// `store:` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `always` or `interval_ms=N` (default `interval_ms=100`).
    #[serde(default)]
    pub fsync: Option<String>,
    /// Rows per flush.
    #[serde(default)]
    pub flush_rows: Option<usize>,
    /// Longest time between flushes, e.g. `30s`.
    #[serde(default)]
    pub flush_interval: Option<String>,
    /// Maximum age, e.g. `30d`.
    #[serde(default)]
    pub retention_age: Option<String>,
    /// Maximum size, e.g. `50GB`.
    #[serde(default)]
    pub retention_size: Option<String>,
}

/// `postgres:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// Listen address, e.g. `127.0.0.1:5433`.
    pub listen: SocketAddr,
    /// User name (default `inferwatch`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (default: $INFERWATCH_PG_PASSWORD; without either, a
    /// loopback `listen` gets a generated one, printed once, and any other
    /// address is refused).
    #[serde(default)]
    pub password: Option<String>,
}

/// Reads a config file, with errors at file:line:column.
pub fn load_config(path: &Path) -> anyhow::Result<RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: RunConfig = marked_yaml::from_yaml(0, &text).map_err(|error| {
        let (line, column) = match &error {
            marked_yaml::FromYamlError::FromNode(node) => match (node.start_mark(), &**node) {
                (Some(mark), _) => (mark.line(), mark.column()),
                // marked-yaml gives unknown keys no position: find the key in the text.
                (None, marked_yaml::Error::UnknownFieldError(field, _, _)) => text
                    .lines()
                    .enumerate()
                    .find_map(|(index, line)| {
                        let key = line.trim_start();
                        key.strip_prefix(field.as_str())
                            .filter(|rest| rest.trim_start().starts_with(':'))
                            .map(|_| (index + 1, line.len() - key.len() + 1))
                    })
                    .unwrap_or((1, 1)),
                (None, _) => (1, 1),
            },
            marked_yaml::FromYamlError::ParseYaml(_) => (1, 1),
        };
        anyhow::anyhow!("{}:{line}:{column}: {error}", path.display())
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };
    config.data = resolve(&config.data);
    config.rules = resolve(&config.rules);
    config.mapping = config.mapping.as_deref().map(resolve);
    config.alerts = config.alerts.as_deref().map(resolve);
    config.dead_letter = Some(match config.dead_letter.as_deref() {
        Some(dead_letter) => resolve(dead_letter),
        None => config.data.join(inferwatch_query::STORE_DEAD_LETTERS_FILE),
    });
    config.inputs = config
        .inputs
        .iter()
        .map(|input| {
            if input == "-" {
                input.clone()
            } else {
                resolve(Path::new(input)).to_string_lossy().to_string()
            }
        })
        .collect();
    Ok(config)
}

/// Runs `inferwatch run`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let defaults = StoreArgs {
        fsync: config
            .store
            .fsync
            .clone()
            .unwrap_or("interval_ms=100".into()),
        flush_rows: config.store.flush_rows.unwrap_or(1 << 19),
        flush_interval: config.store.flush_interval.clone().unwrap_or("30s".into()),
        retention_age: config.store.retention_age.clone(),
        retention_size: config.store.retention_size.clone(),
    };
    let mut writer = inferwatch_store::StoreWriter::open(&config.data, defaults.options()?)
        .with_context(|| format!("opening the data directory {}", config.data.display()))?;
    let mapping = load_mapping(config.mapping.as_ref())?;
    let decoder = Decoder::new(mapping);
    let max_future = config.max_future.clone().unwrap_or("2m".into());
    let mut guard = crate::ingest_cmd::event_time_guard(config.follow, &max_future)?;
    let mut engine = load_engine(&config.rules, &decoder)?
        .with_max_future(inferwatch_core::parse_duration(&max_future)?);
    // SQL while running: a separate runtime thread over the same directory.
    let runtime = crate::query_cmd::runtime()?;
    if let Some(postgres) = &config.postgres {
        let engine = QueryEngine::open(&config.data, true)?;
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
        let (ready_sender, ready) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            if let Err(error) = serve_postgres(engine.context(), options, Some(ready_sender)).await
            {
                eprintln!("inferwatch run: the Postgres server stopped: {error}");
            }
        });
        if let Ok(address) = runtime.block_on(ready) {
            eprintln!("inferwatch run: Postgres wire on {address}");
        }
    }
    let resume = resume_position(writer.recovered_position())?;
    let spec = InputSpec {
        inputs: config.inputs.clone(),
        follow: config.follow,
        checkpoint: None,
        chunk_bytes: 1 << 20,
        resume: resume.files,
    };
    let mut held_decoder = decoder.clone();
    let mut pipeline = Pipeline::start(spec, decoder, default_threads())?;
    let stop = pipeline.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    // The store keeps its alerts beside its events (the `alerts` SQL table);
    // each file is written exactly once per transition, across restarts.
    let stored_alerts_path = config.data.join(inferwatch_query::STORE_ALERTS_FILE);
    let mut stored_alerts = AlertLedger::open(&stored_alerts_path)?;
    let mut alerts_file = match &config.alerts {
        Some(path) if path != &stored_alerts_path => Some(AlertLedger::open(path)?),
        _ => None,
    };
    let mut stdout = (config.alerts.is_none()).then(|| std::io::BufWriter::new(std::io::stdout()));
    let mut write_alerts = |alerts: Vec<Alert>| -> anyhow::Result<u64> {
        let fresh = stored_alerts.write(&alerts)?;
        let mut written = fresh.len() as u64;
        if let Some(file) = &mut alerts_file {
            written = file.write(&alerts)?.len() as u64;
        }
        if let Some(stdout) = &mut stdout {
            for alert in fresh {
                serde_json::to_writer(&mut *stdout, alert)?;
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
        }
        Ok(written)
    };
    // A restart: the engine relearns what the store holds; transitions the
    // crash kept from being written are written now, the others not again.
    let mut alerts = write_alerts(replay_store(
        &config.data,
        DEFAULT_STREAM,
        &held_decoder.schema(),
        &mut engine,
    )?)?;
    let progress = StoreProgress::new(args.quiet);
    let started = Instant::now();
    let mut counters = DecodeCounters::default();
    let mut dead_letters: Option<DeadLetterWriter> = None;
    let dead_letter_path = config
        .dead_letter
        .as_deref()
        .context("the dead-letter path is set when the config loads")?;
    let mut events = 0u64;
    let mut last_append = LastAppend::default();
    for (decoded, clock) in readmit_held(&resume.held, &mut held_decoder, &mut guard) {
        if decoded.batch.num_rows() > 0 {
            writer
                .append(DEFAULT_STREAM, &decoded.batch, None)
                .context("writing to the store")?;
            events += decoded.batch.num_rows() as u64;
            alerts += write_alerts(engine.observe_at(&decoded.batch, &clock))?;
        }
    }
    while let Some(event) = pipeline.next()? {
        match event {
            PipelineEvent::Batch {
                mut decoded,
                position,
                ..
            } => {
                let clock = guard.admit(&mut decoded);
                counters.merge(&decoded.counters);
                write_dead_letters(&mut dead_letters, dead_letter_path, &decoded)?;
                append_guarded(
                    &mut writer,
                    DEFAULT_STREAM,
                    &decoded.batch,
                    position.files(),
                    &guard,
                    &mut last_append,
                )?;
                events += decoded.batch.num_rows() as u64;
                alerts += write_alerts(engine.observe_at(&decoded.batch, &clock))?;
            }
            PipelineEvent::Idle => writer.tick().context("flushing the store")?,
        }
        progress.update(events, counters.dead_letters(), &writer, started);
    }
    if !config.follow {
        // End of input: what the guard still holds is released or refused.
        // (A stopped follower keeps it held in the WAL position instead.)
        let released = guard.finish();
        events += store_guard_release(&mut writer, DEFAULT_STREAM, &released, &last_append)?;
        if let Some(batch) = &released.batch {
            alerts += write_alerts(engine.observe_at(batch, &released.clock))?;
        }
        crate::ingest_cmd::write_released_dead_letters(
            &mut dead_letters,
            dead_letter_path,
            &released,
            &mut counters,
        )?;
    }
    alerts += write_alerts(engine.finish())?;
    pipeline.finish();
    progress.finish();
    writer.close().context("flushing the store")?;
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "inferwatch run: {events} events stored in {} and checked in {seconds:.2}s ({:.0} events/s), {alerts} alert transitions, {} late events, {} dead letters",
        config.data.display(),
        events as f64 / seconds.max(1e-9),
        engine.stats().late_events,
        counters.dead_letters(),
    );
    if config.postgres.is_some() && config.follow {
        // Following ended by Ctrl-C: the server stops with the process.
        runtime.shutdown_background();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/run.yaml");
        let config = load_config(&path).unwrap();
        assert!(config.data.ends_with("demo-data"));
        assert_eq!(config.store.fsync.as_deref(), Some("interval_ms=100"));
        assert!(config.postgres.is_none() && config.alerts.is_none());
        assert!(config.rules.ends_with("rules"));
    }

    #[test]
    fn config_errors_name_the_file_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.yaml");
        std::fs::write(
            &path,
            "data: d\ninputs: [a]\nrules: r\nstore:\n  fsinc: always\n",
        )
        .unwrap();
        let message = load_config(&path).unwrap_err().to_string();
        assert!(message.contains("run.yaml:5:"), "{message}");
        assert!(message.contains("fsinc"), "{message}");
    }
}
