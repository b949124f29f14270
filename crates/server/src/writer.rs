//! The single store writer behind HTTP ingest.
//!
//! Requests decode on their own tasks and hand their batches to one thread
//! through a bounded queue; that thread owns the [`StoreWriter`], the
//! event-time guards and detection, so every decision is made in one order.
//! A request is answered only once the WAL record holding its batch is
//! durable under the store's fsync policy (at once with `always`, within
//! the interval with `interval_ms=N`). A full queue refuses at once
//! ([`Submit::Busy`]): the HTTP layer turns that into a 429, so memory
//! holds at most `queue` batches however hard clients push.
//!
//! The guard treats all HTTP input as one pooled input per stream. Rows it
//! holds back (a doubtful jump in time) are acknowledged: they are written
//! with every WAL record's position, tagged with their stream, and come back
//! on hold after a restart.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use inferwatch_core::DEFAULT_STREAM;
use inferwatch_ingest::{
    Chunk, DeadLetterWriter, DecodeCounters, DecodedBatch, Decoder, EventTimeGuard, GenericDecoder,
    InputsKind,
};
use inferwatch_store::StoreWriter;

use crate::live::{heartbeat_batch, IdleClock, LiveState, HEARTBEAT_STREAM};
use crate::metrics::Metrics;
use crate::one_pass::{readmit_held, write_dead_letters, Detection, Resume};
use crate::ServerError;

/// What a request hands the writer.
// One per request: the size of the enum does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Payload {
    /// Inference events, decoded by the request's task.
    Decoded(DecodedBatch),
    /// Lines of a generic stream: its decoder evolves the schema, so it
    /// runs on the writer thread, in order.
    Lines(Chunk),
}

/// One request's rows for one stream.
pub struct Part {
    /// The stream (a valid store stream name).
    pub stream: String,
    /// The rows.
    pub payload: Payload,
}

/// One request: its rows for each stream it names, queued as one, so a
/// 429 refuses all of them and a retry stores nothing twice.
pub struct Job {
    /// The parts, one per stream.
    pub parts: Vec<Part>,
    /// Where the outcome goes once durable.
    pub reply: tokio::sync::oneshot::Sender<Result<JobOutcome, String>>,
}

/// A refused line of a request.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The line of the job's chunk (1-based).
    pub line: u64,
    /// Why.
    pub reason: String,
    /// The dead letter's class (`invalid_json`, `future_timestamp`…).
    pub kind: Option<String>,
}

/// What became of one part.
#[derive(Debug, Default)]
pub struct PartOutcome {
    /// Lines refused (decode errors, the event-time guard), in line order.
    pub refused: Vec<Refusal>,
    /// Rows stored now (may include rows of earlier requests the guard
    /// released).
    pub stored: u64,
}

/// What became of a job, sent once its WAL records are durable: one
/// outcome per part, in order.
#[derive(Debug, Default)]
pub struct JobOutcome {
    /// Per part.
    pub parts: Vec<PartOutcome>,
}

/// A request to the writer thread that is not ingest: it runs between
/// jobs, in order with them.
pub enum Control {
    /// Swap detection's rules for `engine`'s and rebuild its state from
    /// the store ([`Detection::replace_engine`]).
    ReplaceRules {
        /// The new rules, compiled and checked.
        engine: Box<inferwatch_detect::Engine>,
        /// The SLOs loaded again with them, when the node runs SLOs.
        slos: Option<Box<inferwatch_detect::SloEvaluator>>,
        /// The correlations loaded again with them, when the node runs
        /// correlations.
        correlations: Option<Box<crate::correlator::Correlator>>,
        /// The outcome, once the swap is done.
        reply: tokio::sync::oneshot::Sender<Result<ReloadReport, String>>,
    },
}

/// What a rules swap did.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Events the new rules were replayed over.
    pub events: u64,
    /// Detection's clock afterwards.
    pub clock: Option<i64>,
    /// Alert transitions written in all, afterwards.
    pub transitions: u64,
}

/// Why a job was not queued.
pub enum Submit {
    /// The queue is full: answer 429 and let the client retry.
    Busy(Job),
    /// The writer has stopped.
    Stopped(Job),
}

/// Counters the HTTP layer and tests read.
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Jobs refused because the queue was full.
    pub busy: AtomicU64,
    /// Rows stored.
    pub stored: AtomicU64,
    /// Lines refused.
    pub refused: AtomicU64,
    /// Jobs waiting in the queue or for durability.
    pub in_flight: AtomicU64,
    /// Alert transitions written.
    pub alerts: AtomicU64,
}

/// Settings of the writer thread.
pub struct WriterOptions {
    /// Jobs the queue holds before requests get 429.
    pub queue: usize,
    /// Where refused lines go.
    pub dead_letter_path: PathBuf,
    /// How far ahead of the agreed clock an event may be (nanoseconds).
    pub max_future: i64,
    /// Lines the guards held when the last run stopped.
    pub resume: Resume,
    /// The inference stream's decoder (for held lines after a restart).
    pub decoder: Decoder,
    /// Slows every append by this much (tests of back-pressure only).
    pub append_delay: Duration,
    /// The node's counters (dead letters by reason, heartbeats).
    pub metrics: Arc<Metrics>,
    /// Where the thread publishes WAL progress and detection's state.
    pub live: Arc<LiveState>,
    /// Heartbeats after this much silence (`None`: never; see [`crate::live`]).
    pub idle_after: Option<Duration>,
}

/// The handle requests submit to.
#[derive(Clone)]
pub struct IngestWriter {
    sender: Sender<Job>,
    control: Sender<Control>,
    /// Counters.
    pub counters: Arc<WriterCounters>,
}

impl IngestWriter {
    /// Starts the writer thread over `writer`, feeding `detection` with the
    /// inference stream. The thread closes the store when every handle is
    /// dropped; join the returned handle to wait for that.
    pub fn start(
        writer: StoreWriter,
        detection: Option<Detection>,
        options: WriterOptions,
    ) -> Result<(IngestWriter, JoinHandle<Result<(), ServerError>>), ServerError> {
        let (sender, receiver) = bounded(options.queue.max(1));
        let (control, control_receiver) = bounded(4);
        let counters = Arc::new(WriterCounters::default());
        let mut state = WriterState::new(writer, detection, options, counters.clone())?;
        let handle = std::thread::Builder::new()
            .name("http-store".into())
            .spawn(move || state.run(receiver, control_receiver))
            .map_err(|error| {
                ServerError::Internal(format!("spawning the store writer thread: {error}"))
            })?;
        Ok((
            IngestWriter {
                sender,
                control,
                counters,
            },
            handle,
        ))
    }

    /// Hands a control request to the writer thread (waits while four are
    /// already waiting); an error when the thread has stopped.
    pub fn control(&self, request: Control) -> Result<(), ServerError> {
        self.control
            .send(request)
            .map_err(|_| ServerError::Internal("the store writer has stopped".into()))
    }

    /// Queues a job, or says why not, at once.
    pub fn submit(&self, job: Job) -> Result<(), Submit> {
        match self.sender.try_send(job) {
            Ok(()) => {
                self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(job)) => {
                self.counters.busy.fetch_add(1, Ordering::Relaxed);
                Err(Submit::Busy(job))
            }
            Err(TrySendError::Disconnected(job)) => Err(Submit::Stopped(job)),
        }
    }
}

/// Per stream: its guard and, for generic streams, its decoder.
struct StreamState {
    guard: EventTimeGuard,
    generic: Option<GenericDecoder>,
}

struct Pending {
    sequence: u64,
    reply: tokio::sync::oneshot::Sender<Result<JobOutcome, String>>,
    outcome: JobOutcome,
}

struct WriterState {
    writer: Option<StoreWriter>,
    detection: Option<Detection>,
    streams: BTreeMap<String, StreamState>,
    dead_letters: Option<DeadLetterWriter>,
    dead_letter_path: PathBuf,
    counters: Arc<WriterCounters>,
    decode_counters: DecodeCounters,
    max_future: i64,
    append_delay: Duration,
    pending: VecDeque<Pending>,
    metrics: Arc<Metrics>,
    live: Arc<LiveState>,
    idle: Option<IdleClock>,
    /// Detection changed since its state was last published.
    dirty: bool,
    last_publish: Instant,
}

impl WriterState {
    fn new(
        writer: StoreWriter,
        detection: Option<Detection>,
        options: WriterOptions,
        counters: Arc<WriterCounters>,
    ) -> Result<WriterState, ServerError> {
        let mut state = WriterState {
            writer: Some(writer),
            detection,
            streams: BTreeMap::new(),
            dead_letters: None,
            dead_letter_path: options.dead_letter_path,
            counters,
            decode_counters: DecodeCounters::default(),
            max_future: options.max_future,
            append_delay: options.append_delay,
            pending: VecDeque::new(),
            metrics: options.metrics,
            live: options.live,
            idle: options.idle_after.map(IdleClock::new),
            dirty: true,
            last_publish: Instant::now(),
        };
        state.readmit(&options.resume, options.decoder)?;
        if let Some(detection) = state.detection.as_ref() {
            // Replay (or readmitted rows) may have set a clock: heartbeats
            // after a restart count the silence from now.
            let clock = detection.engine.stats().clock;
            if let Some(idle) = state.idle.as_mut() {
                idle.arrived(Instant::now(), clock);
            }
        }
        state.publish(true);
        Ok(state)
    }

    fn writer(&mut self) -> &mut StoreWriter {
        self.writer
            .as_mut()
            .expect("the store writer is present until the thread ends")
    }

    fn stream(&mut self, stream: &str) -> &mut StreamState {
        let max_future = self.max_future;
        let known = self
            .writer
            .as_ref()
            .and_then(|writer| writer.stream_schema(stream));
        self.streams
            .entry(stream.to_string())
            .or_insert_with(|| StreamState {
                guard: EventTimeGuard::new(InputsKind::Pooled).with_max_future(max_future),
                generic: (stream != DEFAULT_STREAM).then(|| GenericDecoder::new(stream, known)),
            })
    }

    /// Puts the rows a previous run held back on hold again (or through).
    fn readmit(&mut self, resume: &Resume, decoder: Decoder) -> Result<(), ServerError> {
        let mut by_stream: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        for entry in &resume.held {
            let stream = entry["stream"]
                .as_str()
                .unwrap_or(DEFAULT_STREAM)
                .to_string();
            by_stream.entry(stream).or_default().push(entry.clone());
        }
        for (stream, held) in by_stream {
            let mut through = Vec::new();
            if stream == DEFAULT_STREAM {
                let mut decoder = decoder.clone();
                let state = self.stream(&stream);
                through = readmit_held(&held, &mut decoder, &mut state.guard);
            } else {
                let state = self.stream(&stream);
                if let Some(generic) = state.generic.take() {
                    let shared = Arc::new(std::sync::Mutex::new(generic));
                    let mut decoder = crate::pipeline::SharedGenericDecoder(shared.clone());
                    through = readmit_held(&held, &mut decoder, &mut state.guard);
                    drop(decoder);
                    state.generic = Arc::try_unwrap(shared)
                        .ok()
                        .map(|mutex| mutex.into_inner().unwrap_or_else(|p| p.into_inner()));
                }
            }
            for (decoded, clock) in through {
                let position = self.position()?;
                self.writer()
                    .append(&stream, &decoded.batch, Some(&position))?;
                if stream == DEFAULT_STREAM {
                    if let Some(detection) = self.detection.as_mut() {
                        detection.observe(&decoded.batch, &clock)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The WAL position: every guard's held lines, tagged with their stream
    /// (`[]` when none is holding, so a restart does not bring back lines
    /// released since).
    fn position(&self) -> Result<String, ServerError> {
        let mut held = Vec::new();
        for (stream, state) in &self.streams {
            for mut line in state.guard.held_lines() {
                if let Some(object) = line.as_object_mut() {
                    object.insert("stream".into(), serde_json::Value::from(stream.as_str()));
                }
                held.push(line);
            }
        }
        if held.is_empty() {
            return Ok("[]".into());
        }
        Ok(serde_json::to_string(&serde_json::json!({
            "files": [],
            "held": held,
        }))?)
    }

    fn run(
        &mut self,
        receiver: Receiver<Job>,
        control: Receiver<Control>,
    ) -> Result<(), ServerError> {
        let mut last_tick = Instant::now();
        loop {
            // Acks wait on the background fsync: poll for it while some wait.
            let wait = if self.pending.is_empty() {
                Duration::from_millis(200)
            } else {
                Duration::from_millis(2)
            };
            match receiver.recv_timeout(wait) {
                Ok(job) => self.handle(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(request) = control.try_recv() {
                self.control(request);
            }
            if last_tick.elapsed() >= Duration::from_millis(50) {
                last_tick = Instant::now();
                if let Err(error) = self.writer().tick() {
                    eprintln!("inferwatch serve: store: {error}");
                }
            }
            self.acknowledge();
            if let Err(error) = self.heartbeat() {
                eprintln!("inferwatch serve: heartbeat: {error}");
            }
            self.publish(false);
        }
        // Every handle is gone: make what was written durable and answer.
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| ServerError::Internal("the store writer was closed twice".into()))?;
        writer.sync()?;
        let durable = writer.durable_sequence();
        self.answer_through(durable);
        if let Some(detection) = self.detection.as_mut() {
            detection.finish()?;
            self.counters
                .alerts
                .store(detection.transitions(), Ordering::Relaxed);
        }
        writer.close()?;
        Ok(())
    }

    fn control(&mut self, request: Control) {
        match request {
            Control::ReplaceRules {
                engine,
                slos,
                correlations,
                reply,
            } => {
                let result = self
                    .replace_rules(*engine, slos.map(|slos| *slos), correlations.map(|c| *c))
                    .map_err(|error| error.to_string());
                // The caller may have gone; the swap stands regardless.
                let _ = reply.send(result);
            }
        }
    }

    /// Syncs the store so the replay sees every appended row, then swaps.
    fn replace_rules(
        &mut self,
        engine: inferwatch_detect::Engine,
        slos: Option<inferwatch_detect::SloEvaluator>,
        correlations: Option<crate::correlator::Correlator>,
    ) -> Result<ReloadReport, ServerError> {
        if self.detection.is_none() {
            return Err(ServerError::Config(
                "no rules are running on this node".into(),
            ));
        }
        self.writer().sync()?;
        let detection = self
            .detection
            .as_mut()
            .ok_or_else(|| ServerError::Internal("detection vanished".into()))?;
        detection.replace_engine(engine, slos, correlations)?;
        let stats = detection.engine.stats();
        let report = ReloadReport {
            events: stats.events,
            clock: stats.clock,
            transitions: detection.transitions(),
        };
        self.counters
            .alerts
            .store(report.transitions, Ordering::Relaxed);
        if let Some(idle) = self.idle.as_mut() {
            idle.arrived(Instant::now(), report.clock);
        }
        self.dirty = true;
        self.publish(true);
        Ok(report)
    }

    /// When the live inputs have been silent long enough: records a
    /// heartbeat in the store and moves detection's clock (see
    /// [`crate::live`]).
    fn heartbeat(&mut self) -> Result<(), ServerError> {
        if self.detection.is_none() {
            return Ok(());
        }
        let Some((clock, silent)) = self.idle.as_mut().and_then(|idle| idle.due(Instant::now()))
        else {
            return Ok(());
        };
        let batch = heartbeat_batch(clock, silent)?;
        let position = self.position()?;
        self.writer()
            .append(HEARTBEAT_STREAM, &batch, Some(&position))?;
        if let Some(detection) = self.detection.as_mut() {
            detection.heartbeat(clock)?;
            self.counters
                .alerts
                .store(detection.transitions(), Ordering::Relaxed);
        }
        self.metrics.heartbeats.inc();
        self.live.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.dirty = true;
        Ok(())
    }

    /// Publishes WAL progress always and detection's state at most four
    /// times a second, when it changed (or when `force`d).
    fn publish(&mut self, force: bool) {
        if let Some(writer) = self.writer.as_ref() {
            self.live
                .last_sequence
                .store(writer.last_sequence(), Ordering::Relaxed);
            self.live
                .durable_sequence
                .store(writer.durable_sequence(), Ordering::Relaxed);
            self.live
                .buffered_rows
                .store(writer.buffered_rows() as u64, Ordering::Relaxed);
        }
        if !force && (!self.dirty || self.last_publish.elapsed() < Duration::from_millis(250)) {
            return;
        }
        if let Some(detection) = self.detection.as_ref() {
            detection.publish();
        }
        self.dirty = false;
        self.last_publish = Instant::now();
    }

    fn acknowledge(&mut self) {
        let Some(writer) = self.writer.as_ref() else {
            return;
        };
        let durable = writer.durable_sequence();
        self.answer_through(durable);
    }

    fn answer_through(&mut self, durable: u64) {
        while self
            .pending
            .front()
            .is_some_and(|pending| pending.sequence <= durable)
        {
            if let Some(pending) = self.pending.pop_front() {
                self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                // The client may have gone; the rows are stored regardless.
                let _ = pending.reply.send(Ok(pending.outcome));
            }
        }
    }

    fn handle(&mut self, job: Job) {
        let Job { parts, reply } = job;
        let mut outcome = JobOutcome::default();
        let mut sequence = 0;
        for part in parts {
            match self.store(&part.stream, part.payload) {
                Ok((part_sequence, part_outcome)) => {
                    sequence = sequence.max(part_sequence);
                    self.counters
                        .stored
                        .fetch_add(part_outcome.stored, Ordering::Relaxed);
                    self.counters
                        .refused
                        .fetch_add(part_outcome.refused.len() as u64, Ordering::Relaxed);
                    outcome.parts.push(part_outcome);
                }
                Err(error) => {
                    // Parts stored before stay stored; the client hears of
                    // the failure and may retry (at least once).
                    self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                    let _ = reply.send(Err(error.to_string()));
                    return;
                }
            }
        }
        self.pending.push_back(Pending {
            sequence,
            reply,
            outcome,
        });
    }

    fn store(&mut self, stream: &str, payload: Payload) -> Result<(u64, PartOutcome), ServerError> {
        let state = self.stream(stream);
        let mut decoded = match payload {
            Payload::Decoded(decoded) => decoded,
            Payload::Lines(chunk) => match state.generic.as_mut() {
                Some(generic) => generic.decode(&chunk),
                None => {
                    return Err(ServerError::Internal(format!(
                        "lines for the mapped stream '{stream}' reached the writer undecoded"
                    )))
                }
            },
        };
        let source = decoded.source.clone();
        let decode_refusals = decoded.dead_letters.len();
        let clock = state.guard.admit(&mut decoded);
        // Decode refusals are all this request's; of the guard's, only
        // those of its own rows (an earlier request's held row may be given
        // up now: it was acknowledged and goes to the dead-letter file).
        let mut refused: Vec<Refusal> = decoded
            .dead_letters
            .iter()
            .enumerate()
            .filter(|(index, letter)| *index < decode_refusals || *letter.source == *source)
            .map(|(_, letter)| Refusal {
                line: letter.line,
                reason: letter.reason.clone(),
                kind: letter.kind.map(|kind| kind.as_str().to_string()),
            })
            .collect();
        refused.sort_by_key(|refusal| refusal.line);
        for letter in &decoded.dead_letters {
            self.metrics
                .dead_letter(letter.kind.map_or("other", |kind| kind.as_str()));
        }
        self.decode_counters.merge(&decoded.counters);
        write_dead_letters(&mut self.dead_letters, &self.dead_letter_path, &decoded)?;
        let position = self.position()?;
        if !self.append_delay.is_zero() {
            std::thread::sleep(self.append_delay);
        }
        let sequence = self
            .writer()
            .append(stream, &decoded.batch, Some(&position))?;
        if stream == DEFAULT_STREAM {
            if let Some(detection) = self.detection.as_mut() {
                detection.observe(&decoded.batch, &clock)?;
                self.counters
                    .alerts
                    .store(detection.transitions(), Ordering::Relaxed);
                if decoded.batch.num_rows() > 0 {
                    if let Some(idle) = self.idle.as_mut() {
                        idle.arrived(Instant::now(), detection.engine.stats().clock);
                    }
                    self.dirty = true;
                }
            }
        } else if let Some(detection) = self.detection.as_mut() {
            detection.observe_side_stream(stream, &decoded.batch)?;
            self.counters
                .alerts
                .store(detection.transitions(), Ordering::Relaxed);
        }
        Ok((
            sequence,
            PartOutcome {
                refused,
                stored: decoded.batch.num_rows() as u64,
            },
        ))
    }
}
