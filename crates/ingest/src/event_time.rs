//! The event-time guard: decides, row by row and in input order, which
//! decoded events may enter the store and detection, and what "now" is.
//!
//! **Why.** Windows close on event time. If one line dated 2100 could move
//! "now", every window would close at once and every real event after it
//! would be late: the whole system blinded by one line. The guard sits
//! between decode and everything downstream and keeps that from happening.
//!
//! **Design: per-input clocks that the data must agree on, and the slowest
//! live input sets the pace.**
//!
//! * Each *input* (a followed file, a connection; files read once are one
//!   sequential input) has an [`AgreedClock`]: the third-newest timestamp of
//!   its credible events. One stray line cannot move it.
//! * A row is *credible* when it is at most `max_future` (default 2 min)
//!   ahead of its input's clock (of the global clock for an input that has
//!   none yet). A row further ahead is *doubtful*: it is held back. When
//!   [`CLOCK_AGREEMENT`] doubtful rows of one input lie within `max_future`
//!   of each other, the data agrees on a jump (a gap in traffic, a restart
//!   after an outage): they become credible and the input's clock jumps.
//!   A doubtful row that stays alone while its input goes on with
//!   [`HOLD_PATIENCE`] credible rows, or that is still alone at the end, is a
//!   `future_timestamp` dead letter. It never moved anything.
//! * The global clock is the minimum of the clocks of the *live* inputs
//!   (Flink's and Beam's per-source watermarks), and never goes back. An
//!   input is live unless it has stayed silent while the newest clock moved
//!   steadily (row by row, not by a jump) by more than `max_future`, so a
//!   dead input does not stop time, and an input whose clock runs ahead
//!   cannot drag the others along. After a gap in all inputs at once, the
//!   first input to resume waits for the others to resume or to fall silent
//!   for `max_future` of its time; its rows until then are refused as
//!   skewed. (Recording idle decisions as data, from the wall clock, is the
//!   server's job and will close that gap.)
//! * A credible row is *emitted* when it is at most `max_future` ahead of
//!   the global clock, and is otherwise a `future_timestamp` dead letter
//!   whose reason gives its input's skew: an input whose clock runs ten
//!   minutes ahead of the fleet is refused, not followed. Each emitted row
//!   carries the global clock at its emission: detection uses that as "now"
//!   instead of the newest timestamp.
//! * At most [`HOLD_LIMIT`] doubtful rows are held per input (the oldest
//!   overflows into a dead letter), and [`EventTimeGuard::held_lines`] gives
//!   them as JSON lines so that a store can keep them with its source
//!   position: after a crash they are read again first, and nothing that
//!   was acknowledged is lost while it waited for agreement.
//!
//! Everything is decided from the rows in input order, so the same input
//! gives the same rows, dead letters and clock whatever the batch sizes.
//! The wall clock is never read; idle live inputs are the server's business
//! (it records its idle decisions as data, so that a replay reproduces them).
//!
//! ```
//! use std::sync::Arc;
//! use inferwatch_ingest::{Chunk, Decoder, EventTimeGuard, InputsKind, Mapping};
//! let mut decoder = Decoder::new(Mapping::builtin().into_shared());
//! let mut lines = String::new();
//! for second in 0..10 {
//!     lines.push_str(&format!("{{\"timestamp\":\"2026-01-01T00:00:{second:02}Z\",\"model_id\":\"m\"}}\n"));
//!     if second == 5 {
//!         lines.push_str("{\"timestamp\":\"2100-01-01T00:00:00Z\",\"model_id\":\"m\"}\n");
//!     }
//! }
//! let chunk = Chunk { source: Arc::from("app.log"), first_line: 1, first_offset: 0, data: lines.into_bytes(), skipped_bytes: 0 };
//! let mut decoded = decoder.decode(&chunk);
//! let mut guard = EventTimeGuard::new(InputsKind::PerSource);
//! let clock = guard.admit(&mut decoded);
//! let mut last = guard.finish();
//! assert_eq!(decoded.batch.num_rows(), 10);
//! assert_eq!(clock.len(), 10);
//! assert_eq!(last.dead_letters.len(), 1);
//! assert!(last.dead_letters[0].reason.contains("ahead of"));
//! ```

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use ahash::AHashMap;
use arrow::array::{new_null_array, Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use inferwatch_core::{
    column, format_timestamp, AgreedClock, CLOCK_AGREEMENT, DEFAULT_MAX_FUTURE_NANOS,
};
use serde::Serialize;

use crate::dead_letter::{DeadLetter, DeadLetterKind, DecodeCounters};
use crate::DecodedBatch;

/// Most doubtful rows one input may hold back before the oldest is
/// dead-lettered: memory (and the held lines a store keeps with its
/// position) stay small whatever the input does. Agreement needs only
/// [`CLOCK_AGREEMENT`] rows.
pub const HOLD_LIMIT: usize = 64;

/// Credible rows of its input after which a lone doubtful row is given up.
pub const HOLD_PATIENCE: u64 = 1000;

/// How rows are told apart into inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputsKind {
    /// Every batch's `source` is its own input (followed files, connections).
    PerSource,
    /// All batches are one input (files read once, one after another).
    Pooled,
}

/// Per input, for the run summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputTimeReport {
    /// The input (file path, `stdin`, a connection).
    pub input: String,
    /// Rows let through.
    pub events: u64,
    /// Rows refused as `future_timestamp`.
    pub future_timestamp: u64,
    /// The input's clock minus the global clock, in seconds: how far its
    /// clock runs ahead (positive) or behind (negative) the fleet's.
    pub skew_seconds: Option<f64>,
    /// Rows held back right now.
    pub held: usize,
}

/// What [`EventTimeGuard::finish`] lets through or refuses at the end.
#[derive(Debug)]
pub struct GuardRelease {
    /// Rows of an input too short to agree on a clock, judged against its
    /// own oldest row, if any.
    pub batch: Option<RecordBatch>,
    /// Their clock.
    pub clock: Vec<i64>,
    /// The rows refused at the end.
    pub dead_letters: Vec<DeadLetter>,
}

/// A row held back, copied out of its batch.
#[derive(Debug)]
struct HeldRow {
    /// Arrival order across the input's rows.
    sequence: u64,
    timestamp: i64,
    row: RecordBatch,
    source: Arc<str>,
    line: u64,
    /// The input's credible-row count when it was held (for patience).
    credited_at: u64,
}

/// Why a row is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Credible for its input, but its input runs ahead of the fleet.
    Skewed,
    /// Alone: no other row of its input agreed on its time.
    Alone,
}

#[derive(Debug)]
struct InputTime {
    name: Arc<str>,
    clock: AgreedClock,
    /// Doubtful rows, in arrival order, and their (timestamp, sequence) sorted.
    doubtful: VecDeque<HeldRow>,
    doubtful_times: BTreeSet<(i64, u64)>,
    /// [`EventTimeGuard::elapsed`] when this input last delivered a row.
    mark: i64,
    credited: u64,
    sequence: u64,
    emitted: u64,
    future: u64,
}

impl InputTime {
    fn new(name: Arc<str>, elapsed: i64) -> InputTime {
        InputTime {
            name,
            clock: AgreedClock::new(),
            doubtful: VecDeque::new(),
            doubtful_times: BTreeSet::new(),
            mark: elapsed,
            credited: 0,
            sequence: 0,
            emitted: 0,
            future: 0,
        }
    }

    fn credit(&mut self, timestamp: i64) {
        self.clock.observe(timestamp);
        self.credited += 1;
    }
}

/// One output row: from the batch being admitted, or released from a hold.
enum Emit {
    Current(usize),
    Released(RecordBatch),
}

/// Decides which rows pass and what time it is (see the module docs).
#[derive(Debug)]
pub struct EventTimeGuard {
    kind: InputsKind,
    max_future: i64,
    inputs: Vec<InputTime>,
    by_name: AHashMap<Arc<str>, usize>,
    /// The global clock; `i64::MIN` until some input has one.
    global: i64,
    /// The newest input clock.
    frontier: i64,
    /// Event time that has passed by steady movement of the newest clock:
    /// jumps (an input agreeing on a new time, an input appearing ahead)
    /// add nothing, so a skewed input cannot make the others look silent.
    elapsed: i64,
}

impl EventTimeGuard {
    /// A guard with the default `max_future` of two minutes.
    pub fn new(kind: InputsKind) -> EventTimeGuard {
        EventTimeGuard {
            kind,
            max_future: DEFAULT_MAX_FUTURE_NANOS,
            inputs: Vec::new(),
            by_name: AHashMap::new(),
            global: i64::MIN,
            frontier: i64::MIN,
            elapsed: 0,
        }
    }

    /// Sets how far ahead of the clock an event may be (nanoseconds, > 0).
    pub fn with_max_future(mut self, max_future: i64) -> EventTimeGuard {
        self.max_future = max_future.max(1);
        self
    }

    /// How far ahead of the clock an event may be (nanoseconds).
    pub fn max_future(&self) -> i64 {
        self.max_future
    }

    /// Whether some rows are held back (see [`EventTimeGuard::held_lines`]).
    pub fn is_holding(&self) -> bool {
        self.inputs.iter().any(|input| !input.doubtful.is_empty())
    }

    /// The global clock, once some input has one.
    pub fn now(&self) -> Option<i64> {
        (self.global != i64::MIN).then_some(self.global)
    }

    /// Per-input counters and skew.
    pub fn inputs(&self) -> Vec<InputTimeReport> {
        self.inputs
            .iter()
            .map(|input| InputTimeReport {
                input: input.name.to_string(),
                events: input.emitted,
                future_timestamp: input.future,
                skew_seconds: match (input.clock.now(), self.now()) {
                    (Some(clock), Some(global)) => Some((clock - global) as f64 / 1e9),
                    _ => None,
                },
                held: input.doubtful.len(),
            })
            .collect()
    }

    /// Lets `decoded`'s rows through or holds them back, in place: the batch
    /// keeps the rows that may go now (after rows released from earlier
    /// holds), refused rows are appended to its dead letters and counted.
    /// Returns the clock of each row of the new batch.
    pub fn admit(&mut self, decoded: &mut DecodedBatch) -> Vec<i64> {
        let batch = &decoded.batch;
        let Some(timestamps) = batch
            .column_by_name(column::TIMESTAMP)
            .and_then(|array| array.as_primitive_opt::<TimestampNanosecondType>())
            .filter(|array| array.null_count() == 0)
        else {
            // No event time to judge (a stream without one): pass through.
            return vec![self.global; batch.num_rows()];
        };
        let timestamps = timestamps.values().clone();
        let input = self.input_index(&decoded.source);
        let source = decoded.source.clone();
        let mut plan: Vec<Emit> = Vec::with_capacity(batch.num_rows());
        let mut clock: Vec<i64> = Vec::with_capacity(batch.num_rows());
        let mut dead_letters = Vec::new();
        for (row, &timestamp) in timestamps.iter().enumerate() {
            let elapsed = self.elapsed;
            let state = &mut self.inputs[input];
            state.mark = elapsed;
            state.sequence += 1;
            let reference = state.clock.now().unwrap_or(self.global);
            let credible =
                reference != i64::MIN && timestamp <= reference.saturating_add(self.max_future);
            if credible {
                let before = state.clock.now();
                state.credit(timestamp);
                self.settle_global(input, before);
                if timestamp <= self.global.saturating_add(self.max_future) {
                    plan.push(Emit::Current(row));
                    clock.push(self.global);
                    self.inputs[input].emitted += 1;
                } else {
                    let held = self.hold(
                        (input, &source),
                        batch,
                        row,
                        timestamp,
                        decoded.row_lines.get(row),
                    );
                    dead_letters.push(self.refuse(input, held, Refusal::Skewed));
                }
                self.give_up_doubtful(input, &mut dead_letters);
            } else {
                let held = self.hold(
                    (input, &source),
                    batch,
                    row,
                    timestamp,
                    decoded.row_lines.get(row),
                );
                let state = &mut self.inputs[input];
                state.doubtful_times.insert((timestamp, held.sequence));
                state.doubtful.push_back(held);
                self.try_agreement(input, &mut plan, &mut clock, &mut dead_letters);
            }
            self.enforce_hold_limit(input, &mut dead_letters);
        }
        self.rebuild(decoded, plan, clock, dead_letters)
    }

    /// No more input: every row still held is a dead letter, except in an
    /// input too short to agree on a clock (fewer than [`CLOCK_AGREEMENT`]
    /// rows, and no other input to go by), whose rows are judged against
    /// its own oldest row.
    pub fn finish(&mut self) -> GuardRelease {
        let mut plan = Vec::new();
        let mut clock = Vec::new();
        let mut dead_letters = Vec::new();
        for input in 0..self.inputs.len() {
            let state = &mut self.inputs[input];
            if state.clock.now().is_none() && self.global == i64::MIN {
                // A tiny input: its oldest row is the best "now" there is.
                if let Some(&(oldest, _)) = state.doubtful_times.iter().next() {
                    let limit = oldest.saturating_add(self.max_future);
                    let rows: Vec<HeldRow> = state.doubtful.drain(..).collect();
                    state.doubtful_times.clear();
                    for held in rows {
                        if held.timestamp <= limit {
                            state.credit(held.timestamp);
                            state.emitted += 1;
                            plan.push(Emit::Released(held.row));
                            clock.push(oldest);
                        } else {
                            state.doubtful_times.insert((held.timestamp, held.sequence));
                            state.doubtful.push_back(held);
                        }
                    }
                }
            }
            let doubtful: Vec<HeldRow> = self.inputs[input].doubtful.drain(..).collect();
            self.inputs[input].doubtful_times.clear();
            for held in doubtful {
                dead_letters.push(self.refuse(input, held, Refusal::Alone));
            }
        }
        let rows: Vec<RecordBatch> = plan
            .into_iter()
            .filter_map(|emit| match emit {
                Emit::Released(row) => Some(row),
                Emit::Current(_) => None,
            })
            .collect();
        let batch = rows
            .last()
            .and_then(|last| concat_aligned(&last.schema(), &rows));
        GuardRelease {
            batch,
            clock,
            dead_letters,
        }
    }

    /// The rows held back right now, as JSON lines (`{"source", "line",
    /// "event"}`), for a store to keep with its source position. Feeding the
    /// events back through a decoder and [`EventTimeGuard::admit`] after a
    /// restart puts them back on hold.
    pub fn held_lines(&self) -> Vec<serde_json::Value> {
        self.inputs
            .iter()
            .flat_map(|input| input.doubtful.iter())
            .map(|held| {
                serde_json::json!({
                    "source": &*held.source,
                    "line": held.line,
                    "event": crate::render::row_to_json(&held.row, 0),
                })
            })
            .collect()
    }

    fn input_index(&mut self, source: &Arc<str>) -> usize {
        let name: Arc<str> = match self.kind {
            InputsKind::PerSource => source.clone(),
            InputsKind::Pooled => Arc::from("files"),
        };
        if let Some(&index) = self.by_name.get(&name) {
            return index;
        }
        self.inputs.push(InputTime::new(name.clone(), self.elapsed));
        self.by_name.insert(name, self.inputs.len() - 1);
        self.inputs.len() - 1
    }

    /// Recomputes the frontier, the elapsed time and the global clock after
    /// `input`'s clock moved from `before` by steady credible rows (`None`:
    /// by a jump, or its first clock).
    fn settle_global(&mut self, input: usize, before: Option<i64>) {
        if let Some(now) = self.inputs[input].clock.now() {
            if let Some(before) = before.filter(|_| self.frontier != i64::MIN) {
                let from = before.max(self.frontier);
                self.elapsed = self.elapsed.saturating_add(now.saturating_sub(from).max(0));
            }
            self.frontier = self.frontier.max(now);
        }
        self.inputs[input].mark = self.elapsed;
        let elapsed = self.elapsed;
        let max_future = self.max_future;
        let slowest_live = self
            .inputs
            .iter()
            .filter(|state| elapsed.saturating_sub(state.mark) <= max_future)
            .filter_map(|state| state.clock.now())
            .min();
        if let Some(slowest) = slowest_live {
            self.global = self.global.max(slowest);
        }
    }

    fn hold(
        &mut self,
        (input, source): (usize, &Arc<str>),
        batch: &RecordBatch,
        row: usize,
        timestamp: i64,
        line: Option<&u64>,
    ) -> HeldRow {
        let state = &mut self.inputs[input];
        let indices = UInt32Array::from(vec![row as u32]);
        // A copy, so that a held row does not keep its whole batch alive.
        let row_batch = take_record_batch(batch, &indices)
            .unwrap_or_else(|_| RecordBatch::new_empty(batch.schema()));
        HeldRow {
            sequence: state.sequence,
            timestamp,
            row: row_batch,
            source: source.clone(),
            line: line.copied().unwrap_or(0),
            credited_at: state.credited,
        }
    }

    /// Makes doubtful rows credible when enough of them agree on a time.
    fn try_agreement(
        &mut self,
        input: usize,
        plan: &mut Vec<Emit>,
        clock: &mut Vec<i64>,
        dead_letters: &mut Vec<DeadLetter>,
    ) {
        let max_future = self.max_future;
        let state = &mut self.inputs[input];
        if state.doubtful_times.len() < CLOCK_AGREEMENT {
            return;
        }
        let times: Vec<i64> = state.doubtful_times.iter().map(|(time, _)| *time).collect();
        // The oldest run of CLOCK_AGREEMENT rows within max_future of each other.
        let Some(start) = times
            .windows(CLOCK_AGREEMENT)
            .position(|run| run[CLOCK_AGREEMENT - 1] - run[0] <= max_future)
        else {
            return;
        };
        let limit = times[start].saturating_add(max_future);
        let rows: Vec<HeldRow> = state.doubtful.drain(..).collect();
        state.doubtful_times.clear();
        let mut agreed = Vec::new();
        for held in rows {
            // Rows behind the agreed time are credible too: the past cannot
            // move a clock, and detection counts them late if they are.
            if held.timestamp <= limit {
                state.credit(held.timestamp);
                agreed.push(held);
            } else {
                state.doubtful_times.insert((held.timestamp, held.sequence));
                state.doubtful.push_back(held);
            }
        }
        self.settle_global(input, None);
        let emit_limit = self.global.saturating_add(max_future);
        // In arrival order, as held.
        for held in agreed {
            if held.timestamp <= emit_limit {
                self.inputs[input].emitted += 1;
                plan.push(Emit::Released(held.row));
                clock.push(self.global);
            } else {
                dead_letters.push(self.refuse(input, held, Refusal::Skewed));
            }
        }
    }

    /// Dead-letters doubtful rows that their input has outlived.
    fn give_up_doubtful(&mut self, input: usize, dead_letters: &mut Vec<DeadLetter>) {
        while self.inputs[input]
            .doubtful
            .front()
            .is_some_and(|held| self.inputs[input].credited - held.credited_at >= HOLD_PATIENCE)
        {
            if let Some(held) = self.inputs[input].doubtful.pop_front() {
                self.inputs[input]
                    .doubtful_times
                    .remove(&(held.timestamp, held.sequence));
                dead_letters.push(self.refuse(input, held, Refusal::Alone));
            }
        }
    }

    fn enforce_hold_limit(&mut self, input: usize, dead_letters: &mut Vec<DeadLetter>) {
        while self.inputs[input].doubtful.len() > HOLD_LIMIT {
            let state = &mut self.inputs[input];
            let Some(held) = state.doubtful.pop_front() else {
                break;
            };
            state
                .doubtful_times
                .remove(&(held.timestamp, held.sequence));
            dead_letters.push(self.refuse(input, held, Refusal::Alone));
        }
    }

    /// The dead letter of a held row.
    fn refuse(&mut self, input: usize, held: HeldRow, refusal: Refusal) -> DeadLetter {
        let state = &mut self.inputs[input];
        state.future += 1;
        let ahead = |clock: Option<i64>| {
            clock.map_or("no clock yet".to_string(), |clock| {
                format!(
                    "{:.0} s ahead of {}",
                    (held.timestamp - clock) as f64 / 1e9,
                    format_timestamp(clock)
                )
            })
        };
        let global = (self.global != i64::MIN).then_some(self.global);
        let reason = if refusal == Refusal::Skewed {
            format!(
                "event time {} is {}, the clock of the slowest live input; this input's clock runs {} (max_future {} s)",
                format_timestamp(held.timestamp),
                ahead(global),
                state
                    .clock
                    .now()
                    .zip(global)
                    .map_or("?".to_string(), |(mine, global)| format!(
                        "{:+.0} s from it",
                        (mine - global) as f64 / 1e9
                    )),
                self.max_future / 1_000_000_000
            )
        } else {
            format!(
                "event time {} is {} (max_future {} s), and no other event of this input agreed on it",
                format_timestamp(held.timestamp),
                ahead(state.clock.now().or(global)),
                self.max_future / 1_000_000_000
            )
        };
        let json = crate::render::row_to_json(&held.row, 0);
        let text = |name: &str| {
            json.get(name)
                .and_then(|value| value.as_str())
                .map(str::to_string)
        };
        let mut dead_letter = DeadLetter::new(
            &held.source,
            held.line,
            0,
            reason,
            json.to_string().as_bytes(),
        )
        .with_kind(DeadLetterKind::FutureTimestamp);
        dead_letter.client_id = text(column::CLIENT_ID);
        dead_letter.model_id = text(column::MODEL_ID);
        dead_letter.event_time = Some(held.timestamp);
        dead_letter
    }

    fn rebuild(
        &mut self,
        decoded: &mut DecodedBatch,
        plan: Vec<Emit>,
        clock: Vec<i64>,
        dead_letters: Vec<DeadLetter>,
    ) -> Vec<i64> {
        let rows = decoded.batch.num_rows();
        let untouched = plan.len() == rows
            && plan
                .iter()
                .enumerate()
                .all(|(position, emit)| matches!(emit, Emit::Current(row) if *row == position));
        for _ in &dead_letters {
            decoded
                .counters
                .count_dead_letter(DeadLetterKind::FutureTimestamp);
        }
        decoded.dead_letters.extend(dead_letters);
        if untouched {
            return clock;
        }
        let schema = decoded.batch.schema();
        let mut sources: Vec<RecordBatch> = vec![decoded.batch.clone()];
        let mut indices: Vec<(usize, usize)> = Vec::with_capacity(plan.len());
        let mut row_lines = Vec::with_capacity(plan.len());
        for emit in plan {
            match emit {
                Emit::Current(row) => {
                    indices.push((0, row));
                    row_lines.push(decoded.row_lines.get(row).copied().unwrap_or(0));
                }
                Emit::Released(held) => {
                    sources.push(align(&schema, &held));
                    indices.push((sources.len() - 1, 0));
                    row_lines.push(0);
                }
            }
        }
        let references: Vec<&RecordBatch> = sources.iter().collect();
        decoded.batch = interleave_record_batch(&references, &indices)
            .unwrap_or_else(|_| RecordBatch::new_empty(schema));
        set_events(&mut decoded.counters, decoded.batch.num_rows());
        decoded.row_lines = row_lines;
        clock
    }
}

fn set_events(counters: &mut DecodeCounters, rows: usize) {
    counters.events = rows as u64;
}

/// `row` with `schema`'s columns: a generic stream's schema only gains
/// nullable columns, so a row held under an older schema gets nulls.
fn align(schema: &SchemaRef, row: &RecordBatch) -> RecordBatch {
    if row.schema() == *schema {
        return row.clone();
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match row.column_by_name(field.name()) {
            Some(array) if array.data_type() == field.data_type() => array.clone(),
            _ => new_null_array(field.data_type(), row.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns)
        .unwrap_or_else(|_| RecordBatch::new_empty(schema.clone()))
}

fn concat_aligned(schema: &SchemaRef, rows: &[RecordBatch]) -> Option<RecordBatch> {
    let aligned: Vec<RecordBatch> = rows.iter().map(|row| align(schema, row)).collect();
    arrow::compute::concat_batches(schema, &aligned).ok()
}
