//! `inferwatch detect`: run rules over logs and print alert transitions as JSONL.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use inferwatch_core::{format_timestamp, Alert};
use inferwatch_detect::Engine;
use inferwatch_ingest::{DeadLetterWriter, DecodeCounters, Decoder, SinkMark};
use serde::Serialize;

use crate::slo_cmd::{load_slo_evaluator, projected_decoder};
use inferwatch_server::correlator;
use inferwatch_server::notify::{Notifier, NotifyOptions};
pub use inferwatch_server::one_pass::{load_engine, load_mapping};
use inferwatch_server::pipeline::{InputSpec, Pipeline, PipelineEvent};

/// Arguments of `inferwatch detect`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory (or single file) of YAML rules.
    #[arg(long, required_unless_present = "slos")]
    pub rules: Option<PathBuf>,
    /// SLO file or directory: their burn-rate alerts join the rule alerts.
    #[arg(long)]
    pub slos: Option<PathBuf>,
    /// Field mapping (YAML); the built-in mappings apply when omitted.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Keep reading as files grow and rotate, like `tail -F`.
    #[arg(long)]
    pub follow: bool,
    /// Checkpoint file: a restart resumes reading where the last run stopped.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Where refused lines go, one JSON object each.
    #[arg(long, default_value = "inferwatch.dlq.jsonl")]
    pub dead_letter: PathBuf,
    /// Write alerts here instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Decoder threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Target chunk size in bytes (a chunk becomes one batch).
    #[arg(long, default_value_t = 2 << 20)]
    pub chunk_bytes: usize,
    /// Write a JSON run summary (events, dead letters, late events, alerts, timing) here.
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Deliver firing and resolved alerts to the actions in this YAML file
    /// (webhook, alertmanager, slack, pagerduty, command, rollback).
    #[arg(long, value_name = "FILE")]
    pub actions: Option<PathBuf>,
    /// Grouping, inhibition, flapping and risk settings for notifications
    /// (YAML); Alertmanager-like defaults apply when omitted.
    #[arg(long, value_name = "FILE", requires = "actions")]
    pub notify: Option<PathBuf>,
    /// Silences (YAML): matching alerts are recorded but not notified.
    #[arg(long, value_name = "FILE", requires = "actions")]
    pub silences: Option<PathBuf>,
    /// Alert history and notification state (alert-history.jsonl,
    /// notify-state.json); deliveries are journaled under `deliveries/`
    /// (outbox, dead letters, rollback remediation records).
    #[arg(long, default_value = "inferwatch-state", value_name = "DIR")]
    pub state_dir: PathBuf,
    /// Let `command` actions run programs (off unless given).
    #[arg(long)]
    pub allow_commands: bool,
    /// At the end of a finite input, wait this long for deliveries still in
    /// flight; whatever is left is delivered by the next run.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub delivery_grace: String,
    /// Rows kept in the sample that explains alerts (contributors with lift,
    /// distinct clients), shared by all rules; 0 turns the sample off
    /// (alerts then have no explanation and an estimated client count).
    #[arg(long, default_value_t = inferwatch_detect::DEFAULT_EXPLAIN_ROWS, value_name = "ROWS")]
    pub explain_rows: usize,
    /// Sigma correlation rules (file or directory): correlations over the
    /// rule and SLO alerts, the inference events and the `--stream` files.
    #[arg(long, value_name = "PATH")]
    pub correlations: Option<PathBuf>,
    /// A side stream for the correlations, NAME=FILE (JSONL), e.g.
    /// `auth=auth.jsonl`; Sigma rules select it by `logsource.service`.
    /// Repeatable. Read whole at start and interleaved by event time.
    #[arg(long = "stream", value_name = "NAME=FILE", requires = "correlations")]
    pub streams: Vec<correlator::StreamSpec>,
    /// How far ahead of the clock the events agree on an event may be;
    /// further ahead is a `future_timestamp` dead letter.
    #[arg(long, default_value = "2m", value_name = "DURATION")]
    pub max_future: String,
    /// Log files or globs (`.gz` is read transparently); `-` or nothing reads standard input.
    pub inputs: Vec<String>,
}

/// The run summary printed to stderr and optionally written as JSON.
#[derive(Serialize)]
pub struct RunSummary {
    /// Lines read.
    pub lines: u64,
    /// Events decoded.
    pub events: u64,
    /// Refused lines.
    pub dead_letters: u64,
    /// Refused lines by reason.
    pub dead_letters_by_reason: std::collections::BTreeMap<String, u64>,
    /// Events dropped as later than the allowed lateness (summed over rules).
    pub late_events: u64,
    /// Per input: events let through, `future_timestamp` refusals, and how
    /// far its clock runs from the fleet's.
    pub inputs: Vec<inferwatch_ingest::InputTimeReport>,
    /// Alert transitions printed.
    pub alerts: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Events per second.
    pub events_per_second: f64,
    /// What each rule holds at the end: groups (peak, evicted), cells,
    /// learned detector state.
    pub rules: Vec<inferwatch_detect::RuleState>,
    /// What each SLO holds at the end: groups, buckets, bytes, late rows.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slos: Vec<inferwatch_detect::SloState>,
}

/// Runs `inferwatch detect`.
pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.output {
        // Checkpoints record absolute sink paths.
        args.output = Some(
            std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?,
        );
    }
    let mapping = load_mapping(args.mapping.as_ref())?;
    // The rules are compiled against the full decoder's schema; the
    // pipeline decodes with a projection that fills only the columns they
    // read (same schema, other columns null and their keys skipped).
    let full_decoder = Decoder::new(mapping.clone());
    let max_future =
        inferwatch_core::parse_duration(&args.max_future).context("reading --max-future")?;
    let mut engine = match &args.rules {
        Some(rules) => load_engine(rules, &full_decoder)?,
        None => Engine::new(Vec::new(), &full_decoder.schema())?,
    }
    .with_max_future(max_future);
    let mut guard = inferwatch_server::one_pass::event_time_guard(args.follow, &args.max_future)?;
    if args.explain_rows != inferwatch_detect::DEFAULT_EXPLAIN_ROWS {
        engine = engine.with_explain_rows(args.explain_rows);
    }
    // SLO burn-rate alerts are evaluated next to the rules, on the same batches.
    let mut slos = args
        .slos
        .as_ref()
        .map(|path| load_slo_evaluator(path, &full_decoder))
        .transpose()?;
    let mut correlator = args
        .correlations
        .as_ref()
        .map(|path| {
            correlator::Correlator::load_beside(
                path,
                &args.streams,
                &engine,
                slos.as_ref(),
                &args.dead_letter,
            )
        })
        .transpose()?;
    let mut columns = engine.referenced_columns();
    if let Some(slos) = &slos {
        columns.extend(slos.referenced_columns());
    }
    // Sigma rules over inference events may read any field.
    let decoder = if correlator.as_ref().is_some_and(|c| c.reads_inference()) {
        full_decoder
    } else {
        projected_decoder(&mapping, &columns)
    };
    let total_bytes = input_size(&args.inputs);
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let spec = InputSpec {
        inputs: args.inputs.clone(),
        follow: args.follow,
        checkpoint: args.checkpoint.clone(),
        chunk_bytes: args.chunk_bytes,
        resume: None,
    };
    let mut pipeline = Pipeline::start(spec, decoder, threads)?;
    let stop = pipeline.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    let mut output: Box<dyn Write> = match &args.output {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            // Alerts written after the last checkpoint commit are written again on resume.
            if let Some(mark) = pipeline
                .resumed_sinks()
                .iter()
                .find(|mark| &mark.path == path)
            {
                file.set_len(mark.length)
                    .with_context(|| format!("truncating {}", path.display()))?;
            }
            Box::new(std::io::BufWriter::new(file))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut dead_letters: Option<DeadLetterWriter> = None;
    let progress = Progress::new(total_bytes, args.quiet);
    let started = Instant::now();
    let mut counters = DecodeCounters::default();
    let mut lines = 0u64;
    let mut bytes_read = 0u64;
    let mut alerts_written = 0u64;
    let notifier = match &args.actions {
        Some(path) => Some(Notifier::open(&NotifyOptions {
            actions: Some(path.clone()),
            notify: args.notify.clone(),
            silences: args.silences.clone(),
            allow_commands: args.allow_commands,
            state_dir: args.state_dir.clone(),
        })?),
        None => None,
    };
    let write_alerts = |alerts: Vec<Alert>,
                        now: Option<i64>,
                        output: &mut Box<dyn Write>|
     -> anyhow::Result<u64> {
        for alert in &alerts {
            serde_json::to_writer(&mut *output, alert)?;
            output.write_all(b"\n")?;
        }
        if let Some(notifier) = &notifier {
            notifier.observe(&alerts, now)?;
        }
        Ok(alerts.len() as u64)
    };
    while let Some(event) = pipeline.next_event()? {
        match event {
            PipelineEvent::Batch {
                mut decoded,
                position,
                bytes,
            } => {
                let clock = guard.admit(&mut decoded);
                lines += decoded.lines;
                bytes_read += bytes;
                counters.merge(&decoded.counters);
                if !decoded.dead_letters.is_empty() {
                    let writer = match &mut dead_letters {
                        Some(writer) => writer,
                        None => dead_letters.insert(DeadLetterWriter::open(&args.dead_letter)?),
                    };
                    writer.write(&decoded.dead_letters)?;
                }
                let mut alerts = engine.observe_at(&decoded.batch, &clock);
                if let Some(slos) = &mut slos {
                    alerts.extend(slos.observe_at(&decoded.batch, &clock));
                }
                let now = guard.now();
                if let Some(correlator) = &mut correlator {
                    let correlated = correlator.observe(&alerts, Some(&decoded.batch), now)?;
                    alerts.extend(correlated);
                }
                alerts_written += write_alerts(alerts, now, &mut output)?;
                if args.follow {
                    output.flush()?;
                }
                if args.checkpoint.is_some() {
                    output.flush()?;
                    let sinks = match &args.output {
                        Some(path) => vec![SinkMark {
                            path: path.clone(),
                            length: std::fs::metadata(path)?.len(),
                        }],
                        None => Vec::new(),
                    };
                    pipeline.commit(position, sinks);
                }
            }
            PipelineEvent::Idle => output.flush()?,
        }
        progress.update(
            bytes_read,
            engine.stats(),
            alerts_written,
            counters.dead_letters(),
            started,
        );
    }
    // Rows the guard still held: the ones the clock allows go, the rest
    // are dead letters.
    let released = guard.finish();
    let mut last = Vec::new();
    if let Some(batch) = &released.batch {
        last.extend(engine.observe_at(batch, &released.clock));
        if let Some(slos) = &mut slos {
            last.extend(slos.observe_at(batch, &released.clock));
        }
    }
    inferwatch_server::one_pass::write_released_dead_letters(
        &mut dead_letters,
        &args.dead_letter,
        &released,
        &mut counters,
    )?;
    last.extend(engine.finish());
    if let Some(slos) = &mut slos {
        last.extend(slos.finish());
    }
    if let Some(correlator) = &mut correlator {
        let correlated = correlator.finish(&last)?;
        last.extend(correlated);
        if correlator.refused_lines() > 0 {
            eprintln!(
                "inferwatch detect: {} side-stream line(s) refused (see {})",
                correlator.refused_lines(),
                args.dead_letter.display()
            );
        }
        let (late, refused) = correlator.dropped();
        if late + refused > 0 {
            eprintln!(
                "inferwatch detect: correlations dropped {late} late finding(s) and refused {refused} event(s) without a readable time"
            );
        }
    }
    let now = engine.stats().clock;
    alerts_written += write_alerts(last, now, &mut output)?;
    output.flush()?;
    if let (Some(notifier), Some(now), false) = (&notifier, now, args.follow) {
        // The input has ended: let the groups' timers run out so the last
        // changes are notified instead of waiting for events that never come.
        notifier.drain(now)?;
    }
    pipeline.finish();
    progress.finish();
    if let Some(notifier) = notifier {
        let grace = inferwatch_core::parse_duration(&args.delivery_grace)?;
        if let Some(totals) = notifier.settle(Duration::from_nanos(grace.max(0) as u64)) {
            print_deliveries("detect", &args.delivery_grace, &totals);
        }
    }

    let seconds = started.elapsed().as_secs_f64();
    let stats = engine.stats();
    let summary = RunSummary {
        lines,
        events: stats.events,
        dead_letters: counters.dead_letters(),
        dead_letters_by_reason: counters
            .dead_letter_counts()
            .map(|(kind, n)| (kind.as_str().to_string(), n))
            .collect(),
        late_events: stats.late_events + slos.as_ref().map_or(0, |s| s.late_events()),
        inputs: guard.inputs(),
        alerts: alerts_written,
        bytes: bytes_read,
        seconds,
        events_per_second: stats.events as f64 / seconds.max(1e-9),
        rules: engine.observable_state(),
        slos: slos
            .as_ref()
            .map(|slos| slos.observable_state())
            .unwrap_or_default(),
    };
    eprintln!(
        "inferwatch detect: {} events in {:.2}s ({:.0} events/s), {} alert transitions, {} dead letters{}, {} late events",
        summary.events,
        seconds,
        summary.events_per_second,
        summary.alerts,
        summary.dead_letters,
        if summary.dead_letters > 0 { format!(" (see {})", args.dead_letter.display()) } else { String::new() },
        summary.late_events,
    );
    if let Some(path) = &args.summary {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The delivery totals on stderr, with where pending ones wait.
pub fn print_deliveries(
    command: &str,
    grace: &str,
    totals: &inferwatch_server::notify::DeliveryTotals,
) {
    if !totals.idle {
        eprintln!(
            "inferwatch {command}: deliveries still pending after {grace}; they stay in {} for the next run",
            totals.outbox.display()
        );
    }
    let stats = &totals.stats;
    eprintln!(
        "inferwatch {command}: {} deliveries done, {} dead-lettered, {} retries, {} pending",
        stats.delivered, stats.dead, stats.retries, stats.pending
    );
}

fn input_size(inputs: &[String]) -> Option<u64> {
    if inputs.is_empty() || inputs.iter().any(|i| i == "-") {
        return None;
    }
    let mut total = 0;
    for input in inputs {
        let paths: Vec<PathBuf> = match glob::glob(input) {
            Ok(paths) => paths.flatten().collect(),
            Err(_) => vec![PathBuf::from(input)],
        };
        for path in paths {
            if path.extension().is_some_and(|e| e == "gz") {
                return None;
            }
            total += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        }
    }
    Some(total)
}

/// The stderr progress bar: bytes, events/s, event time and lag behind the wall clock.
struct Progress {
    bar: indicatif::ProgressBar,
    last_draw: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total_bytes: Option<u64>, quiet: bool) -> Progress {
        let bar = match (quiet, total_bytes) {
            (true, _) => indicatif::ProgressBar::hidden(),
            (false, Some(total)) => indicatif::ProgressBar::new(total),
            (false, None) => indicatif::ProgressBar::new_spinner(),
        };
        let template = if total_bytes.is_some() {
            "{bar:30} {bytes}/{total_bytes} {msg}"
        } else {
            "{spinner} {bytes} {msg}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        Progress {
            bar,
            last_draw: std::cell::Cell::new(Instant::now()),
        }
    }

    fn update(
        &self,
        bytes: u64,
        stats: &inferwatch_detect::EngineStats,
        alerts: u64,
        dead_letters: u64,
        started: Instant,
    ) {
        if self.last_draw.get().elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_draw.set(Instant::now());
        self.bar.set_position(bytes);
        let rate = stats.events as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let (event_time, lag) = match stats.max_event_time {
            Some(max) => {
                let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
                (
                    format_timestamp(max),
                    format!("{}s", (now - max) / 1_000_000_000),
                )
            }
            None => ("-".into(), "-".into()),
        };
        self.bar.set_message(format!(
            "{:.0} events/s · event time {event_time} · lag {lag} · {alerts} alerts · {dead_letters} dead letters · {} late",
            rate, stats.late_events
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
