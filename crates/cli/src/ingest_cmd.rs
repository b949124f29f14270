//! `inferwatch ingest`: logs into the embedded store.
//!
//! The store's WAL keeps the source position with every batch, so a restart
//! (even after `kill -9`) resumes reading right after the last acknowledged
//! batch: nothing acknowledged is lost and nothing is stored twice.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use inferwatch_core::DEFAULT_STREAM;
use inferwatch_ingest::{
    DeadLetterWriter, DecodeCounters, DecodedBatch, Decoder, FileCheckpoint, GenericDecoder,
};
use inferwatch_store::{FsyncPolicy, StoreOptions, StoreWriter};

use crate::detect_cmd::load_mapping;
use crate::pipeline::{ChunkDecoder, InputSpec, Pipeline, PipelineEvent, SharedGenericDecoder};

/// Store settings shared by `ingest` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// When appends are acknowledged: `always` (fsync every batch) or `interval_ms=N`.
    #[arg(long, default_value = "interval_ms=100")]
    pub fsync: String,
    /// Rows buffered in memory before a flush to Parquet.
    #[arg(long, default_value_t = 1 << 19)]
    pub flush_rows: usize,
    /// Flush at least this often (e.g. `30s`).
    #[arg(long, default_value = "30s")]
    pub flush_interval: String,
    /// Delete hour partitions older than this (e.g. `30d`); kept forever when absent.
    #[arg(long)]
    pub retention_age: Option<String>,
    /// Delete the oldest hour partitions while the store is larger (e.g. `50GB`).
    #[arg(long)]
    pub retention_size: Option<String>,
}

impl StoreArgs {
    /// The store options these flags describe.
    pub fn options(&self) -> anyhow::Result<StoreOptions> {
        let duration = |text: &str| -> anyhow::Result<Duration> {
            let nanos = inferwatch_core::parse_duration(text)?;
            Ok(Duration::from_nanos(nanos.max(0) as u64))
        };
        Ok(StoreOptions {
            fsync: self.fsync.parse::<FsyncPolicy>()?,
            flush_rows: self.flush_rows.max(1),
            flush_interval: duration(&self.flush_interval)?,
            retention_max_age: self.retention_age.as_deref().map(duration).transpose()?,
            retention_max_bytes: self.retention_size.as_deref().map(parse_size).transpose()?,
            ..StoreOptions::default()
        })
    }
}

/// Reads `500MB`, `10GB`, `1TB` or a plain byte count.
pub fn parse_size(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .with_context(|| format!("invalid size '{text}': expected e.g. 500MB or 10GB"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "KB" | "K" | "KIB" => 1 << 10,
        "MB" | "M" | "MIB" => 1 << 20,
        "GB" | "G" | "GIB" => 1 << 30,
        "TB" | "T" | "TIB" => 1 << 40,
        other => anyhow::bail!("invalid size unit '{other}' in '{text}': use B, KB, MB, GB or TB"),
    };
    Ok((number * scale as f64) as u64)
}

/// Arguments of `inferwatch ingest`.
#[derive(clap::Args)]
pub struct Args {
    /// Data directory (created if missing).
    #[arg(long)]
    pub data: PathBuf,
    /// Field mapping (YAML) for the inference stream.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Stream to store into; any name but `inference` infers and evolves its schema.
    #[arg(long, default_value = DEFAULT_STREAM)]
    pub stream: String,
    /// Keep reading as files grow and rotate, like `tail -F`.
    #[arg(long)]
    pub follow: bool,
    /// Where refused lines go, one JSON object each.
    #[arg(long, default_value = "inferwatch.dlq.jsonl")]
    pub dead_letter: PathBuf,
    /// Decoder threads (default: available cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Target chunk size in bytes (a chunk becomes one batch and one WAL
    /// record). 4 MiB: against 1 MiB, 6 % faster on a 10 M-event file for
    /// 60 MB more memory; a quiet followed file still yields small chunks.
    #[arg(long, default_value_t = 4 << 20)]
    pub chunk_bytes: usize,
    /// Print one JSON line per acknowledged (durable) batch to standard output.
    #[arg(long)]
    pub acks: bool,
    /// Hide the progress bar.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Log files or globs (`.gz` is read transparently); `-` or nothing reads standard input.
    pub inputs: Vec<String>,
}

/// Runs `inferwatch ingest`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut writer = StoreWriter::open(&args.data, args.store.options()?)
        .with_context(|| format!("opening the data directory {}", args.data.display()))?;
    let resume = resume_position(writer.recovered_position())?;
    let spec = InputSpec {
        inputs: args.inputs.clone(),
        follow: args.follow,
        checkpoint: None,
        chunk_bytes: args.chunk_bytes.max(1),
        resume,
    };
    let threads = args.threads.unwrap_or_else(default_threads);
    let summary = if args.stream == DEFAULT_STREAM {
        let decoder = Decoder::new(load_mapping(args.mapping.as_ref())?);
        ingest(&args, spec, decoder, threads, &mut writer)?
    } else {
        if args.mapping.is_some() {
            anyhow::bail!("--mapping applies to the inference stream only; generic streams infer their schema");
        }
        let decoder = GenericDecoder::new(&args.stream, writer.stream_schema(&args.stream));
        let shared = SharedGenericDecoder(Arc::new(std::sync::Mutex::new(decoder)));
        ingest(&args, spec, shared, 1, &mut writer)?
    };
    let flush_started = Instant::now();
    writer.close().context("flushing the store")?;
    let seconds = summary.started.elapsed().as_secs_f64();
    eprintln!(
        "inferwatch ingest: {} events into '{}' in {:.2}s ({:.0} events/s, final flush {:.2}s), {} dead letters{}",
        summary.events,
        args.stream,
        seconds,
        summary.events as f64 / seconds.max(1e-9),
        flush_started.elapsed().as_secs_f64(),
        summary.counters.dead_letters(),
        if summary.counters.dead_letters() > 0 {
            format!(" (see {})", args.dead_letter.display())
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Appends a batch's refused lines to the dead-letter file, opened on first use.
pub fn write_dead_letters(
    writer: &mut Option<DeadLetterWriter>,
    path: &std::path::Path,
    decoded: &DecodedBatch,
) -> anyhow::Result<()> {
    if decoded.dead_letters.is_empty() {
        return Ok(());
    }
    let dead = match writer {
        Some(dead) => dead,
        None => writer.insert(DeadLetterWriter::open(path)?),
    };
    dead.write(&decoded.dead_letters)?;
    Ok(())
}

/// The default number of decoder threads.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Parses the position stored in the WAL back into file positions.
pub fn resume_position(stored: Option<&str>) -> anyhow::Result<Option<Vec<FileCheckpoint>>> {
    match stored {
        None | Some("") => Ok(None),
        Some(text) => serde_json::from_str(text)
            .map(Some)
            .context("reading the source position stored in the WAL"),
    }
}

/// Encodes a source position for the WAL (`None` for unseekable input).
pub fn encode_position(files: &[FileCheckpoint]) -> anyhow::Result<Option<String>> {
    if files.is_empty() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_string(files)?))
}

struct IngestSummary {
    events: u64,
    counters: DecodeCounters,
    started: Instant,
}

fn ingest<D: ChunkDecoder>(
    args: &Args,
    spec: InputSpec,
    decoder: D,
    threads: usize,
    writer: &mut StoreWriter,
) -> anyhow::Result<IngestSummary> {
    let mut pipeline = Pipeline::start(spec, decoder, threads)?;
    let stop = pipeline.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let progress = StoreProgress::new(args.quiet);
    let started = Instant::now();
    let mut counters = DecodeCounters::default();
    let mut dead_letters: Option<DeadLetterWriter> = None;
    let mut events = 0u64;
    let mut acked_events = 0u64;
    // Appended batches not yet durable: (WAL sequence, events). The WAL
    // fsyncs in the background, so durability trails the appends.
    let mut unacked: std::collections::VecDeque<(u64, u64)> = Default::default();
    while let Some(event) = pipeline.next()? {
        match event {
            PipelineEvent::Batch {
                decoded, position, ..
            } => {
                counters.merge(&decoded.counters);
                write_dead_letters(&mut dead_letters, &args.dead_letter, &decoded)?;
                let rows = decoded.batch.num_rows() as u64;
                let position = encode_position(position.files())?;
                let sequence = writer
                    .append(&args.stream, &decoded.batch, position.as_deref())
                    .context("writing to the store")?;
                events += rows;
                if args.acks {
                    unacked.push_back((sequence, rows));
                }
            }
            PipelineEvent::Idle => writer.tick().context("flushing the store")?,
        }
        let durable = writer.durable_sequence();
        let mut acked_through = None;
        while let Some(&(sequence, rows)) = unacked.front().filter(|(seq, _)| *seq <= durable) {
            acked_events += rows;
            acked_through = Some(sequence);
            unacked.pop_front();
        }
        if let Some(sequence) = acked_through {
            println!("{{\"acked_events\":{acked_events},\"wal_sequence\":{sequence}}}");
        }
        progress.update(events, counters.dead_letters(), writer, started);
    }
    pipeline.finish();
    progress.finish();
    Ok(IngestSummary {
        events,
        counters,
        started,
    })
}

/// The stderr progress line while ingesting.
pub struct StoreProgress {
    bar: indicatif::ProgressBar,
    last_draw: std::cell::Cell<Instant>,
}

impl StoreProgress {
    /// A spinner (hidden when `quiet`).
    pub fn new(quiet: bool) -> StoreProgress {
        let bar = if quiet {
            indicatif::ProgressBar::hidden()
        } else {
            indicatif::ProgressBar::new_spinner()
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg}") {
            bar.set_style(style);
        }
        StoreProgress {
            bar,
            last_draw: std::cell::Cell::new(Instant::now()),
        }
    }

    /// Redraws at most five times a second.
    pub fn update(&self, events: u64, dead_letters: u64, writer: &StoreWriter, started: Instant) {
        if self.last_draw.get().elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_draw.set(Instant::now());
        let stats = writer.stats();
        let rate = events as f64 / started.elapsed().as_secs_f64().max(1e-9);
        self.bar.set_message(format!(
            "{events} events · {rate:.0} events/s · {} buffered · {} flushes · {} files compacted · {dead_letters} dead letters",
            writer.buffered_rows(),
            stats.flushes,
            stats.files_compacted,
        ));
    }

    /// Clears the line.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_units() {
        assert_eq!(parse_size("500MB").unwrap(), 500 << 20);
        assert_eq!(parse_size("1.5GB").unwrap(), 3 << 29);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("10 parsecs").is_err());
    }
}
