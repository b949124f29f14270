//! `inferwatch map`: decode and map logs into canonical events, printed as
//! JSON lines (keys sorted, nulls left out). It is the tool a user runs to
//! see how their logs map, and with `--follow --checkpoint --output` a small
//! exactly-once log shipper.
//!
//! # Exactly-once output
//!
//! With `--checkpoint` and `--output`, every chunk goes through:
//!
//! 1. write its rows (and dead letters) to the output files;
//! 2. flush and fsync them;
//! 3. commit the checkpoint: the source position after the chunk *and* the
//!    length of each output file (atomic rename, see
//!    [`inferwatch_ingest::Checkpoint`]).
//!
//! On startup, an output longer than its checkpointed length holds rows
//! written after the last commit, whose lines will be read again: it is
//! truncated back to that length before anything else. So a SIGKILL at any
//! point (mid-write, between fsync and commit, mid-commit) loses nothing and
//! duplicates nothing. An output *shorter* than its checkpointed length was
//! changed by someone else, and is an error rather than a guess.
//!
//! With `--checkpoint` and no checkpoint yet, the outputs start empty: the
//! checkpointed run owns them. Without `--checkpoint`, `--output` is simply
//! replaced and `--dead-letter` appended to. Writing to standard output with
//! a checkpoint is at-least-once: what was printed cannot be taken back.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use inferwatch_ingest::{
    row_to_json, DeadLetter, DeadLetterWriter, Decoder, FileSource, FileSourceOptions, Mapping,
    ReaderSource, SinkMark, Source, SourcePoll,
};

/// Arguments of `inferwatch map`.
#[derive(clap::Args)]
pub struct Args {
    /// Field mapping (YAML); the built-in mapping when absent.
    #[arg(long, value_name = "FILE")]
    mapping: Option<PathBuf>,
    /// Keep reading as files grow, rotate and appear (like `tail -F`).
    #[arg(long)]
    follow: bool,
    /// Resume from, and commit progress to, this checkpoint file.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
    /// Write events to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Write refused lines (position and reason) to this JSON lines file
    /// instead of reporting them on standard error.
    #[arg(long, value_name = "FILE")]
    dead_letter: Option<PathBuf>,
    /// How long to wait between polls when following, e.g. 100ms.
    #[arg(long, default_value = "100ms", value_name = "DURATION")]
    poll_interval: String,
    /// Target size of a chunk: how much is decoded, written and committed at
    /// once.
    #[arg(long, default_value_t = inferwatch_ingest::DEFAULT_CHUNK_BYTES, value_name = "BYTES", hide = true)]
    chunk_bytes: usize,
    /// Files or glob patterns; `-` or nothing reads standard input.
    #[arg(value_name = "FILE")]
    inputs: Vec<String>,
}

/// Runs the subcommand.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mapping = match &args.mapping {
        Some(path) => Mapping::from_yaml_path(path)?,
        None => Mapping::builtin(),
    };
    let mut decoder = Decoder::new(Arc::new(mapping));
    let poll_interval_ns = inferwatch_core::parse_duration(&args.poll_interval)
        .with_context(|| format!("invalid --poll-interval '{}'", args.poll_interval))?;

    let from_stdin = args.inputs.is_empty() || args.inputs.iter().all(|input| input == "-");
    if !from_stdin && args.inputs.iter().any(|input| input == "-") {
        bail!("'-' (standard input) cannot be mixed with files");
    }
    let mut source: Box<dyn Source> = if from_stdin {
        if args.checkpoint.is_some() {
            bail!("--checkpoint needs file inputs: standard input cannot be re-read");
        }
        Box::new(ReaderSource::stdin().with_chunk_bytes(args.chunk_bytes))
    } else {
        let mut options = FileSourceOptions::new(args.inputs.clone());
        options.follow = args.follow;
        options.checkpoint = args.checkpoint.clone();
        options.poll_interval =
            std::time::Duration::from_nanos(poll_interval_ns.max(1_000_000).unsigned_abs());
        options.chunk_bytes = args.chunk_bytes.max(1);
        Box::new(FileSource::open(options)?)
    };
    let checkpointing = args.checkpoint.is_some();
    let resumed = source.resumed_sinks().to_vec();

    let mut output = match &args.output {
        Some(path) => Output::file(path, checkpointing, &resumed)?,
        None => Output::Stdout(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let mut dead_letters = match &args.dead_letter {
        Some(path) => Some(DeadLetterFile::open(path, checkpointing, &resumed)?),
        None => None,
    };

    let mut events = 0u64;
    let mut refused = 0u64;
    let mut rendered = Vec::with_capacity(1 << 20);
    loop {
        let ready = match source.next_chunk()? {
            SourcePoll::Ready(ready) => ready,
            SourcePoll::Idle => continue,
            SourcePoll::End => break,
        };
        let decoded = decoder.decode(&ready.chunk);
        rendered.clear();
        for row in 0..decoded.batch.num_rows() {
            serde_json::to_writer(&mut rendered, &row_to_json(&decoded.batch, row))?;
            rendered.push(b'\n');
        }
        events += decoded.batch.num_rows() as u64;
        refused += decoded.dead_letters.len() as u64;
        output.write(&rendered)?;
        match &mut dead_letters {
            Some(file) => file.write(&decoded.dead_letters)?,
            None => report_dead_letters(&decoded.dead_letters),
        }
        // Steps 2 and 3 of the commit protocol (module docs): durable
        // output first, then the checkpoint that vouches for it.
        if checkpointing {
            let mut sinks = Vec::with_capacity(2);
            sinks.extend(output.sync()?);
            if let Some(file) = &mut dead_letters {
                sinks.push(file.sync()?);
            }
            source.commit_with_sinks(&ready.position, &sinks)?;
        }
    }
    output.flush()?;
    let plural = if refused == 1 { "" } else { "s" };
    eprintln!("mapped {events} events, refused {refused} line{plural}");
    Ok(ExitCode::SUCCESS)
}

fn report_dead_letters(dead_letters: &[DeadLetter]) {
    for dead_letter in dead_letters {
        eprintln!(
            "refused {}:{}: {}",
            dead_letter.source, dead_letter.line, dead_letter.reason
        );
    }
}

/// Opens an output file that a checkpointed run owns, cut back to the
/// length the checkpoint recorded for it (0 when none): anything past it was
/// written after the last commit and will be written again.
fn open_owned(path: &Path, resumed: &[SinkMark]) -> anyhow::Result<(File, PathBuf, u64)> {
    let absolute = std::path::absolute(path)
        .with_context(|| format!("cannot resolve output path {}", path.display()))?;
    let keep = resumed
        .iter()
        .find(|sink| sink.path == absolute)
        .map_or(0, |sink| sink.length);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open output file {}", path.display()))?;
    let length = file.metadata()?.len();
    if length < keep {
        bail!(
            "output file {} is shorter ({length} bytes) than the checkpoint recorded ({keep} bytes): \
             it was changed outside inferwatch; remove the checkpoint and the output to start over",
            path.display()
        );
    }
    if length > keep {
        file.set_len(keep)
            .with_context(|| format!("cannot truncate output file {}", path.display()))?;
        file.sync_all()?;
    }
    Ok((file, absolute, keep))
}

/// Where events go.
enum Output {
    Stdout(BufWriter<std::io::StdoutLock<'static>>),
    File {
        writer: BufWriter<File>,
        path: PathBuf,
        /// Bytes in the file once `writer` is flushed.
        length: u64,
    },
}

impl Output {
    fn file(path: &Path, checkpointing: bool, resumed: &[SinkMark]) -> anyhow::Result<Output> {
        let (file, absolute, length) = if checkpointing {
            open_owned(path, resumed)?
        } else {
            let file = File::create(path)
                .with_context(|| format!("cannot create output file {}", path.display()))?;
            (file, path.to_path_buf(), 0)
        };
        Ok(Output::File {
            writer: BufWriter::with_capacity(1 << 20, file),
            path: absolute,
            length,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        match self {
            Output::Stdout(writer) => writer.write_all(bytes)?,
            Output::File {
                writer,
                path,
                length,
            } => {
                writer
                    .write_all(bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                *length += bytes.len() as u64;
            }
        }
        // Each chunk is shown as soon as it is mapped, even when following.
        self.flush()
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Output::Stdout(writer) => writer.flush()?,
            Output::File { writer, path, .. } => writer
                .flush()
                .with_context(|| format!("cannot write {}", path.display()))?,
        }
        Ok(())
    }

    /// Makes everything written durable; returns the length to checkpoint.
    fn sync(&mut self) -> anyhow::Result<Option<SinkMark>> {
        self.flush()?;
        match self {
            Output::Stdout(_) => Ok(None),
            Output::File {
                writer,
                path,
                length,
            } => {
                writer
                    .get_ref()
                    .sync_data()
                    .with_context(|| format!("cannot sync {}", path.display()))?;
                Ok(Some(SinkMark {
                    path: path.clone(),
                    length: *length,
                }))
            }
        }
    }
}

/// The dead-letter file, with the bookkeeping a checkpoint needs.
struct DeadLetterFile {
    writer: DeadLetterWriter,
    /// A second handle on the same file, to fsync it (fsync applies to the
    /// file, whichever descriptor asks).
    sync_handle: File,
    path: PathBuf,
    /// Length of the file when the writer was opened.
    initial_length: u64,
}

impl DeadLetterFile {
    fn open(path: &Path, checkpointing: bool, resumed: &[SinkMark]) -> anyhow::Result<Self> {
        let (initial_length, absolute) = if checkpointing {
            let (_, absolute, keep) = open_owned(path, resumed)?;
            (keep, absolute)
        } else {
            (0, path.to_path_buf())
        };
        let writer = DeadLetterWriter::open(path)?;
        let sync_handle = File::open(path)
            .with_context(|| format!("cannot open dead-letter file {}", path.display()))?;
        Ok(DeadLetterFile {
            writer,
            sync_handle,
            path: absolute,
            initial_length,
        })
    }

    fn write(&mut self, dead_letters: &[DeadLetter]) -> anyhow::Result<()> {
        Ok(self.writer.write(dead_letters)?)
    }

    fn sync(&mut self) -> anyhow::Result<SinkMark> {
        self.sync_handle
            .sync_data()
            .with_context(|| format!("cannot sync {}", self.path.display()))?;
        Ok(SinkMark {
            path: self.path.clone(),
            length: self.initial_length + self.writer.bytes_written(),
        })
    }
}
