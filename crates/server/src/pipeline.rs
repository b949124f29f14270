//! The threaded read → decode pipeline shared by the commands that consume logs.
//!
//! One thread reads chunks from the source, `decoders` threads turn chunks
//! into Arrow batches, and the caller receives them back **in input order**
//! (a small reorder buffer keyed by sequence number). Channels are bounded,
//! so a slow consumer slows the reader down instead of growing memory.
//! Checkpoint commits travel back to the reader thread, which owns the source.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use inferwatch_ingest::{
    Chunk, ChunkBuffers, DecodedBatch, Decoder, FileCheckpoint, FileSource, FileSourceOptions,
    GenericDecoder, IngestError, ReaderSource, SinkMark, Source, SourcePoll, SourcePosition,
};

/// Turns a chunk of lines into a batch; each decoder thread owns a clone.
pub trait ChunkDecoder: Clone + Send + 'static {
    /// Decodes one chunk.
    fn decode_chunk(&mut self, chunk: &Chunk) -> DecodedBatch;
}

impl ChunkDecoder for Decoder {
    fn decode_chunk(&mut self, chunk: &Chunk) -> DecodedBatch {
        self.decode(chunk)
    }
}

/// A generic-stream decoder shared by clones: its schema evolves as it
/// reads, so the pipeline runs it on one thread to keep that order fixed.
#[derive(Clone)]
pub struct SharedGenericDecoder(pub Arc<std::sync::Mutex<GenericDecoder>>);

impl ChunkDecoder for SharedGenericDecoder {
    fn decode_chunk(&mut self, chunk: &Chunk) -> DecodedBatch {
        match self.0.lock() {
            Ok(mut decoder) => decoder.decode(chunk),
            Err(poisoned) => poisoned.into_inner().decode(chunk),
        }
    }
}

/// What the consumer receives.
// One event per decoded chunk (megabytes of input): the size of the enum
// does not matter, and boxing the batch would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum PipelineEvent {
    /// The next batch in input order, with the source position after it and its raw size.
    Batch {
        /// Decoded events and dead letters.
        decoded: DecodedBatch,
        /// Position to commit once handled.
        position: SourcePosition,
        /// Raw bytes of the chunk.
        bytes: u64,
    },
    /// Following, and nothing new arrived within a poll interval.
    Idle,
}

// As for `PipelineEvent`: one message per decoded chunk.
#[allow(clippy::large_enum_variant)]
enum Message {
    Decoded {
        sequence: u64,
        decoded: DecodedBatch,
        position: SourcePosition,
        bytes: u64,
    },
    Idle,
    Failed(IngestError),
}

/// Where to read from.
pub struct InputSpec {
    /// Files or globs; empty or `-` means standard input.
    pub inputs: Vec<String>,
    /// Keep reading as files grow and rotate.
    pub follow: bool,
    /// Checkpoint file for exactly-once resume.
    pub checkpoint: Option<std::path::PathBuf>,
    /// Target chunk size.
    pub chunk_bytes: usize,
    /// Resume files at these positions (overrides the checkpoint file's).
    pub resume: Option<Vec<FileCheckpoint>>,
}

/// A running pipeline.
pub struct Pipeline {
    receiver: Receiver<Message>,
    commits: Sender<(SourcePosition, Vec<SinkMark>)>,
    reorder: BTreeMap<u64, (DecodedBatch, SourcePosition, u64)>,
    next_sequence: u64,
    stop: Arc<AtomicBool>,
    resumed_sinks: Vec<SinkMark>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Opens the source and starts the reader and decoder threads.
    pub fn start<D: ChunkDecoder>(
        spec: InputSpec,
        decoder: D,
        decoders: usize,
    ) -> Result<Pipeline, IngestError> {
        Pipeline::start_with_stop(spec, decoder, decoders, Arc::new(AtomicBool::new(false)))
    }

    /// Like [`Pipeline::start`], ending input early once `stop` is set (a
    /// flag the caller's signal handler already holds).
    pub fn start_with_stop<D: ChunkDecoder>(
        spec: InputSpec,
        decoder: D,
        decoders: usize,
        stop: Arc<AtomicBool>,
    ) -> Result<Pipeline, IngestError> {
        let decoders = decoders.max(1);
        // Enough idle buffers for every chunk that can be in flight.
        let buffers = ChunkBuffers::new(decoders * 2 + 2);
        let use_stdin = spec.inputs.is_empty() || spec.inputs.iter().all(|input| input == "-");
        let mut source: Box<dyn Source> = if use_stdin {
            Box::new(
                ReaderSource::stdin()
                    .with_chunk_bytes(spec.chunk_bytes)
                    .with_stop(stop.clone())
                    .with_buffers(buffers.clone()),
            )
        } else {
            let mut options = FileSourceOptions::new(spec.inputs.clone());
            options.follow = spec.follow;
            options.checkpoint = spec.checkpoint.clone();
            options.resume = spec.resume.clone();
            options.chunk_bytes = spec.chunk_bytes;
            options.stop = stop.clone();
            options.buffers = buffers.clone();
            Box::new(FileSource::open(options)?)
        };
        let resumed_sinks = source.resumed_sinks().to_vec();
        let (work_sender, work_receiver) = bounded::<(u64, Chunk, SourcePosition)>(decoders * 2);
        let (result_sender, result_receiver) = bounded::<Message>(decoders * 2);
        let (commit_sender, commit_receiver) = bounded::<(SourcePosition, Vec<SinkMark>)>(1024);
        let mut threads = Vec::new();
        let reader_results = result_sender.clone();
        threads.push(
            std::thread::Builder::new()
                .name("read".into())
                .spawn(move || {
                    let mut sequence = 0u64;
                    loop {
                        // Commit the newest handled position before reading on.
                        let mut latest = None;
                        while let Ok(commit) = commit_receiver.try_recv() {
                            latest = Some(commit);
                        }
                        if let Some((position, sinks)) = latest {
                            if let Err(error) = source.commit_with_sinks(&position, &sinks) {
                                let _ = reader_results.send(Message::Failed(error));
                                return;
                            }
                        }
                        match source.next_chunk() {
                            Ok(SourcePoll::Ready(ready)) => {
                                if work_sender
                                    .send((sequence, ready.chunk, ready.position))
                                    .is_err()
                                {
                                    return;
                                }
                                sequence += 1;
                            }
                            Ok(SourcePoll::Idle) => {
                                if reader_results.send(Message::Idle).is_err() {
                                    return;
                                }
                            }
                            Ok(SourcePoll::End) => break,
                            Err(error) => {
                                let _ = reader_results.send(Message::Failed(error));
                                return;
                            }
                        }
                    }
                    // Input is over: wait for the consumer's last commits.
                    drop(work_sender);
                    drop(reader_results);
                    for (position, sinks) in commit_receiver.iter() {
                        let _ = source.commit_with_sinks(&position, &sinks);
                    }
                })
                .map_err(|e| IngestError::Internal(format!("spawning the reader: {e}")))?,
        );
        for index in 0..decoders {
            let work = work_receiver.clone();
            let results = result_sender.clone();
            let mut decoder = decoder.clone();
            let buffers = buffers.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("decode-{index}"))
                    .spawn(move || {
                        for (sequence, chunk, position) in work.iter() {
                            let bytes = chunk.data.len() as u64;
                            let decoded = decoder.decode_chunk(&chunk);
                            buffers.give_back(chunk.data);
                            if results
                                .send(Message::Decoded {
                                    sequence,
                                    decoded,
                                    position,
                                    bytes,
                                })
                                .is_err()
                            {
                                return;
                            }
                        }
                    })
                    .map_err(|e| IngestError::Internal(format!("spawning a decoder: {e}")))?,
            );
        }
        drop(result_sender);
        Ok(Pipeline {
            receiver: result_receiver,
            commits: commit_sender,
            reorder: BTreeMap::new(),
            next_sequence: 0,
            stop,
            resumed_sinks,
            threads,
        })
    }

    /// The flag that ends input early (set it from a signal handler).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Output lengths recorded by the checkpoint this run resumed from.
    pub fn resumed_sinks(&self) -> &[SinkMark] {
        &self.resumed_sinks
    }

    /// Asks the reader to persist `position` (and the sinks' lengths).
    pub fn commit(&self, position: SourcePosition, sinks: Vec<SinkMark>) {
        let _ = self.commits.send((position, sinks));
    }

    /// The next event, or `None` at end of input.
    pub fn next_event(&mut self) -> Result<Option<PipelineEvent>, IngestError> {
        loop {
            if let Some((decoded, position, bytes)) = self.reorder.remove(&self.next_sequence) {
                self.next_sequence += 1;
                return Ok(Some(PipelineEvent::Batch {
                    decoded,
                    position,
                    bytes,
                }));
            }
            match self.receiver.recv() {
                Ok(Message::Decoded {
                    sequence,
                    decoded,
                    position,
                    bytes,
                }) => {
                    self.reorder.insert(sequence, (decoded, position, bytes));
                }
                Ok(Message::Idle) => return Ok(Some(PipelineEvent::Idle)),
                Ok(Message::Failed(error)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                Err(_) => {
                    debug_assert!(
                        self.reorder.is_empty(),
                        "every sequence number is delivered"
                    );
                    return Ok(None);
                }
            }
        }
    }

    /// Waits for the threads, after the last commit.
    pub fn finish(self) {
        let Pipeline {
            commits,
            threads,
            receiver,
            ..
        } = self;
        drop(commits);
        drop(receiver);
        for thread in threads {
            let _ = thread.join();
        }
    }
}
