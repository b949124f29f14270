//! The `run` configuration file (YAML, `examples/run.yaml`) and what it
//! starts: the one pass over files with detection, and optionally the
//! Postgres wire over the same data directory while it runs.
//!
//! Errors name the file, line and column; unknown keys are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use inferwatch_core::DEFAULT_STREAM;
use inferwatch_ingest::Decoder;
use inferwatch_query::{serve_postgres, PgOptions, QueryEngine};
use serde::Deserialize;

use crate::correlator::{Correlator, StreamSpec};
use crate::notify::{DeliveryTotals, Notifier, NotifyOptions};
use crate::one_pass::{
    default_threads, ingest_pass, load_engine, load_mapping, resume_position, AlertOutputs,
    Detection, PassObserver, PassOptions, StoreSettings,
};
use crate::pipeline::InputSpec;
use crate::ServerError;

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
    /// SLOs (file or directory): error budgets and burn-rate alerts beside
    /// the rules.
    #[serde(default)]
    pub slos: Option<PathBuf>,
    /// Sigma correlations (file or directory) over the rules' and SLOs'
    /// alerts, the inference events and the side streams of `streams`.
    #[serde(default)]
    pub correlations: Option<PathBuf>,
    /// Side streams for the correlations: stream name (the Sigma rules'
    /// `logsource.service`) to its JSONL file.
    #[serde(default)]
    pub streams: std::collections::BTreeMap<String, PathBuf>,
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
    /// With `follow` and correlations: how far behind the inference
    /// events' clock a side-stream row may arrive and still be correlated
    /// (default `30s`); later rows are dropped as late.
    #[serde(default)]
    pub correlation_lateness: Option<String>,
    /// Actions file (webhook, alertmanager, slack, pagerduty, command,
    /// rollback): notifications go there, through the same notification
    /// pipeline as `detect --actions` and `serve --actions`, with its state
    /// under the data directory's `notify/`.
    #[serde(default)]
    pub actions: Option<PathBuf>,
    /// Grouping, inhibition, flapping and risk settings for notifications.
    #[serde(default)]
    pub notify: Option<PathBuf>,
    /// Let `command` actions run programs (off unless true).
    #[serde(default)]
    pub allow_commands: bool,
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

impl StoreConfig {
    /// The settings, defaults filled in.
    pub fn settings(&self) -> StoreSettings {
        let defaults = StoreSettings::default();
        StoreSettings {
            fsync: self.fsync.clone().unwrap_or(defaults.fsync),
            flush_rows: self.flush_rows.unwrap_or(defaults.flush_rows),
            flush_interval: self
                .flush_interval
                .clone()
                .unwrap_or(defaults.flush_interval),
            retention_age: self.retention_age.clone(),
            retention_size: self.retention_size.clone(),
            node_id: None,
        }
    }
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

/// Reads a config file, with errors at file:line:column. Relative paths
/// are resolved against the file's directory.
pub fn load_config(path: &Path) -> Result<RunConfig, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|error| ServerError::io(path, error))?;
    let mut config: RunConfig = from_yaml_text(path, &text)?;
    // Durations are checked here, so a bad one is named with its file and
    // key before any store is opened.
    for (key, value) in [
        ("max_future", &config.max_future),
        ("correlation_lateness", &config.correlation_lateness),
    ] {
        if let Some(value) = value {
            inferwatch_core::parse_duration(value).map_err(|error| {
                ServerError::Config(format!("{}: {key}: {error}", path.display()))
            })?;
        }
    }
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
    config.slos = config.slos.as_deref().map(resolve);
    config.correlations = config.correlations.as_deref().map(resolve);
    for path in config.streams.values_mut() {
        *path = resolve(path);
    }
    config.mapping = config.mapping.as_deref().map(resolve);
    config.alerts = config.alerts.as_deref().map(resolve);
    config.actions = config.actions.as_deref().map(resolve);
    config.notify = config.notify.as_deref().map(resolve);
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

/// Deserializes a YAML config (unknown keys refused by the type), with
/// errors at file:line:column.
pub fn from_yaml_text<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
) -> Result<T, ServerError> {
    marked_yaml::from_yaml(0, text).map_err(|error| {
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
        ServerError::Config(format!("{}:{line}:{column}: {error}", path.display()))
    })
}

/// Starts the Postgres wire over `data` on `runtime`; returns the options
/// it listens with (the generated password, if any, is in them) and the
/// bound address once it listens.
pub fn spawn_postgres(
    runtime: &tokio::runtime::Runtime,
    data: &Path,
    options: PgOptions,
) -> Result<Option<SocketAddr>, ServerError> {
    let engine = QueryEngine::open(data, true)?;
    let (ready_sender, ready) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        if let Err(error) = serve_postgres(engine.context(), options, Some(ready_sender)).await {
            eprintln!("inferwatch: the Postgres server stopped: {error}");
        }
    });
    Ok(runtime.block_on(ready).ok())
}

/// What a `run` did.
pub struct RunSummary {
    /// Events stored (and checked).
    pub events: u64,
    /// Alert transitions written.
    pub alerts: u64,
    /// Events later than a rule's allowed lateness.
    pub late_events: u64,
    /// Refused lines.
    pub dead_letters: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// What the actions had delivered at the end (with actions only).
    pub deliveries: Option<DeliveryTotals>,
}

/// How long the end of a finite `run` waits for deliveries in flight; the
/// rest stay journaled and go out on the next start.
pub const RUN_DELIVERY_GRACE: Duration = Duration::from_secs(30);

/// Runs a `run` config to the end of its input (or until `stop`): stores
/// every event, checks it with the rules, writes alert transitions to the
/// store, the alerts file, or `printer` when there is no alerts file.
/// `store_opened` runs once the data directory exists (to start readers
/// such as the Postgres wire).
pub fn run_config(
    config: &RunConfig,
    printer: Option<Box<dyn std::io::Write + Send>>,
    stop: Arc<AtomicBool>,
    observer: &mut dyn PassObserver,
    store_opened: &mut dyn FnMut() -> Result<(), ServerError>,
) -> Result<RunSummary, ServerError> {
    let mut writer =
        inferwatch_store::StoreWriter::open(&config.data, config.store.settings().options()?)?;
    store_opened()?;
    let mapping = load_mapping(config.mapping.as_ref())?;
    let decoder = Decoder::new(mapping);
    let max_future = config.max_future.clone().unwrap_or("2m".into());
    let engine = load_engine(&config.rules, &decoder)?
        .with_max_future(inferwatch_core::parse_duration(&max_future)?);
    let resume = resume_position(writer.recovered_position())?;
    let printer = if config.alerts.is_none() {
        printer
    } else {
        None
    };
    let outputs = AlertOutputs::open(&config.data, config.alerts.as_deref(), printer)?;
    let notifier = match (&config.actions, &config.notify) {
        (None, None) => None,
        _ => Some(Arc::new(Notifier::open(&NotifyOptions {
            actions: config.actions.clone(),
            notify: config.notify.clone(),
            silences: None,
            allow_commands: config.allow_commands,
            state_dir: config.data.join(crate::serve::NOTIFY_STATE_DIR),
        })?)),
    };
    let dead_letter_path = config
        .dead_letter
        .clone()
        .unwrap_or_else(|| config.data.join(inferwatch_query::STORE_DEAD_LETTERS_FILE));
    let slos = config
        .slos
        .as_ref()
        .map(|path| crate::one_pass::load_slo_evaluator(path, &decoder))
        .transpose()?;
    let correlation_lateness = inferwatch_core::parse_duration(
        config
            .correlation_lateness
            .as_deref()
            .unwrap_or(inferwatch_detect::DEFAULT_ALLOWED_LATENESS),
    )?;
    let correlations = match &config.correlations {
        Some(path) => {
            let streams: Vec<StreamSpec> = config
                .streams
                .iter()
                .map(|(name, path)| StreamSpec {
                    name: name.clone(),
                    path: path.clone(),
                })
                .collect();
            let correlator =
                Correlator::load_beside(path, &streams, &engine, slos.as_ref(), &dead_letter_path)?;
            // Followed input never ends, so its clock must judge them.
            Some(if config.follow {
                correlator.follow_clock(correlation_lateness)
            } else {
                correlator
            })
        }
        None if !config.streams.is_empty() => {
            return Err(ServerError::Config(
                "streams: are read by correlations only: give correlations: too".into(),
            ))
        }
        None => None,
    };
    let mut detection = Detection::new(engine, outputs);
    if let Some(notifier) = &notifier {
        detection = detection.with_notifier(notifier.clone());
    }
    if let Some(slos) = slos {
        detection = detection.with_slos(slos);
    }
    if let Some(correlations) = correlations {
        detection = detection.with_correlations(correlations);
    }
    detection.replay(&config.data, DEFAULT_STREAM, &decoder.schema())?;
    let options = PassOptions {
        input: InputSpec {
            inputs: config.inputs.clone(),
            follow: config.follow,
            checkpoint: None,
            chunk_bytes: 1 << 20,
            resume: resume.files,
        },
        threads: default_threads(),
        stream: DEFAULT_STREAM.to_string(),
        dead_letter_path,
        max_future,
        stop,
        held: resume.held,
    };
    let summary = ingest_pass(
        options,
        decoder,
        &mut writer,
        Some(&mut detection),
        observer,
    )?;
    writer.close()?;
    if !config.follow {
        detection.drain_notifications()?;
    }
    let deliveries = notifier.and_then(|notifier| notifier.settle(RUN_DELIVERY_GRACE));
    Ok(RunSummary {
        events: summary.events,
        alerts: detection.transitions(),
        late_events: detection.engine.stats().late_events,
        dead_letters: summary.counters.dead_letters(),
        seconds: summary.started.elapsed().as_secs_f64(),
        deliveries,
    })
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
        for key in ["max_future", "correlation_lateness"] {
            std::fs::write(
                &path,
                format!("data: d\ninputs: [a]\nrules: r\n{key}: soon\n"),
            )
            .unwrap();
            let message = load_config(&path).unwrap_err().to_string();
            assert!(message.contains(&format!("run.yaml: {key}: ")), "{message}");
            assert!(message.contains("soon"), "{message}");
        }
    }
}
