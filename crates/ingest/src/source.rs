//! Sources: where log lines come from, cut into [`Chunk`]s of whole lines.
//!
//! A [`Source`] is polled with [`Source::next_chunk`], which answers with a
//! [`SourcePoll`]:
//!
//! * [`SourcePoll::Ready`]: a chunk of whole lines plus the [`SourcePosition`]
//!   just after it;
//! * [`SourcePoll::Idle`]: nothing new arrived within one poll interval
//!   (follow mode only). The source has already slept, so the caller can do
//!   wall-clock work (flush, tick windows) and call again without spinning;
//! * [`SourcePoll::End`]: end of input when reading once, or the stop flag was
//!   raised when following.
//!
//! The caller decides when a position is *durable*: once everything up to a
//! chunk has been handled (written, flushed, fsynced), it calls
//! [`Source::commit`] with that chunk's position. A restart with the same
//! checkpoint file resumes just after the last committed line: no loss, no
//! duplicates. Committing is explicit because only the caller knows when its
//! own output is safe; a source that committed on read would lose data on a
//! crash between reading and writing.
//!
//! ```no_run
//! use inferwatch_ingest::{FileSource, FileSourceOptions, Source, SourcePoll};
//! let mut options = FileSourceOptions::new(vec!["/var/log/model/*.log".to_string()]);
//! options.checkpoint = Some("/var/lib/inferwatch/ckpt.json".into());
//! let mut source = FileSource::open(options)?;
//! while let SourcePoll::Ready(ready) = source.next_chunk()? {
//!     // ... handle ready.chunk durably ...
//!     source.commit(&ready.position)?;
//! }
//! # Ok::<(), inferwatch_ingest::IngestError>(())
//! ```
//!
//! **Memory.** A source holds about one chunk per input plus one line, and
//! a line is held only up to [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES): past
//! that, the rest of it is read and dropped up to its newline (see
//! [`Chunk::skipped_bytes`]), so a stream without newlines cannot grow memory.

mod file;
mod lines;

pub use file::{FileSource, FileSourceOptions};
use lines::PendingLines;

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use crate::checkpoint::{FileCheckpoint, SinkMark};
use crate::{Chunk, ChunkBuffers, IngestError};

/// Default target size of a chunk: 1 MiB.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Default pause between two polls of a followed input.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The answer of [`Source::next_chunk`].
#[derive(Debug)]
pub enum SourcePoll {
    /// A chunk of whole lines, and the position just after it.
    Ready(SourceChunk),
    /// Nothing new within one poll interval (the source already waited).
    /// Only returned when following; call again.
    Idle,
    /// No more input: end of input, or the stop flag was raised.
    End,
}

/// A chunk and the position to commit once it has been handled.
#[derive(Debug)]
pub struct SourceChunk {
    /// Whole lines.
    pub chunk: Chunk,
    /// Where reading stands just after this chunk, across all inputs.
    pub position: SourcePosition,
}

/// An opaque resume token: a snapshot of how far every input has been read.
///
/// Positions are cumulative (each one covers everything emitted before it),
/// so committing the latest one after handling a run of chunks is enough.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub(crate) files: Vec<FileCheckpoint>,
}

impl SourcePosition {
    /// The per-file entries of this position (empty for unseekable sources).
    pub fn files(&self) -> &[FileCheckpoint] {
        &self.files
    }
}

/// Something that produces chunks of log lines and can resume after a restart.
pub trait Source: Send {
    /// Returns the next chunk, [`SourcePoll::Idle`] or [`SourcePoll::End`].
    fn next_chunk(&mut self) -> Result<SourcePoll, IngestError>;

    /// Records that everything up to `position` has been durably handled,
    /// together with the lengths of the caller's output files.
    ///
    /// A no-op for sources that have no checkpoint.
    fn commit_with_sinks(
        &mut self,
        position: &SourcePosition,
        sinks: &[SinkMark],
    ) -> Result<(), IngestError>;

    /// Records that everything up to `position` has been durably handled.
    fn commit(&mut self, position: &SourcePosition) -> Result<(), IngestError> {
        self.commit_with_sinks(position, &[])
    }

    /// The sink lengths recorded by the checkpoint this source resumed from.
    /// A caller that writes to a file truncates it to this length before
    /// writing, which discards output written after the last commit.
    fn resumed_sinks(&self) -> &[SinkMark] {
        &[]
    }
}

/// Counts the lines in `data`, counting a final unterminated line too.
pub(crate) fn count_lines(data: &[u8]) -> u64 {
    let newlines = memchr::memchr_iter(b'\n', data).count() as u64;
    let unterminated = u64::from(!data.is_empty() && data.last() != Some(&b'\n'));
    newlines + unterminated
}

/// Sleeps for `duration`, waking early when `stop` is raised.
pub(crate) fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    // Short slices keep shutdown prompt even with a long poll interval.
    const SLICE: Duration = Duration::from_millis(25);
    let deadline = std::time::Instant::now() + duration;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(SLICE.min(deadline - now));
    }
}

/// Reads any byte stream (standard input, a pipe) to its end, in chunks.
///
/// A background thread does the blocking reads so that
/// [`next_chunk`](Source::next_chunk) can return [`SourcePoll::Idle`] while
/// the stream is quiet. There is no checkpoint: a stream cannot be re-read.
pub struct ReaderSource {
    name: Arc<str>,
    receiver: Receiver<std::io::Result<Vec<u8>>>,
    pending: PendingLines,
    offset: u64,
    line: u64,
    at_end: bool,
    chunk_bytes: usize,
    poll_interval: Duration,
    stop: Arc<AtomicBool>,
    buffers: ChunkBuffers,
}

/// Bytes the background thread of a [`ReaderSource`] reads at a time.
const READ_BLOCK_BYTES: usize = 256 * 1024;

/// Reads standard input until end of file.
pub type StdinSource = ReaderSource;

impl ReaderSource {
    /// Reads standard input.
    pub fn stdin() -> ReaderSource {
        Self::new("stdin", std::io::stdin())
    }

    /// Reads `reader` on a background thread; `name` labels its chunks.
    pub fn new(name: &str, mut reader: impl Read + Send + 'static) -> ReaderSource {
        // A small bound keeps memory flat when the consumer is slower.
        let (sender, receiver) = mpsc::sync_channel(4);
        std::thread::Builder::new()
            .name(format!("read-{name}"))
            .spawn(move || loop {
                let mut block = Vec::with_capacity(READ_BLOCK_BYTES);
                match (&mut reader)
                    .take(READ_BLOCK_BYTES as u64)
                    .read_to_end(&mut block)
                {
                    Ok(0) => return,
                    Ok(_) => {
                        if sender.send(Ok(block)).is_err() {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = sender.send(Err(error));
                        return;
                    }
                }
            })
            .expect("spawning a reader thread");
        ReaderSource {
            name: Arc::from(name),
            receiver,
            pending: PendingLines::default(),
            offset: 0,
            line: 0,
            at_end: false,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            poll_interval: DEFAULT_POLL_INTERVAL,
            stop: Arc::new(AtomicBool::new(false)),
            buffers: ChunkBuffers::default(),
        }
    }

    /// Takes chunk buffers from `buffers` (see [`ChunkBuffers`]).
    pub fn with_buffers(mut self, buffers: ChunkBuffers) -> ReaderSource {
        self.buffers = buffers;
        self
    }

    /// Sets the target chunk size.
    pub fn with_chunk_bytes(mut self, chunk_bytes: usize) -> ReaderSource {
        self.chunk_bytes = chunk_bytes.max(1);
        self
    }

    /// Sets how long to wait for data before answering [`SourcePoll::Idle`].
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> ReaderSource {
        self.poll_interval = poll_interval;
        self
    }

    /// Uses `stop` as the stop flag.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> ReaderSource {
        self.stop = stop;
        self
    }

    fn emit(&mut self, length: usize) -> SourcePoll {
        // More is coming: the tail gets a whole recycled chunk buffer.
        let pool = (self.pending.len() >= self.chunk_bytes)
            .then(|| (&self.buffers, self.chunk_bytes + READ_BLOCK_BYTES));
        let taken = self.pending.take(length, pool);
        let chunk = Chunk::following(&self.name, &mut self.line, &mut self.offset, taken);
        SourcePoll::Ready(SourceChunk {
            chunk,
            position: SourcePosition::default(),
        })
    }
}

impl Source for ReaderSource {
    fn next_chunk(&mut self) -> Result<SourcePoll, IngestError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(SourcePoll::End);
            }
            if let Some(cut) = self.pending.full_chunk_end(self.chunk_bytes) {
                return Ok(self.emit(cut));
            }
            if self.at_end {
                // At the end of the stream, the final line needs no newline.
                return Ok(match self.pending.chunk_end(self.chunk_bytes, true) {
                    None => SourcePoll::End,
                    Some(cut) => self.emit(cut),
                });
            }
            // With whole lines in hand, take only what is already there, so
            // an interactive stream is not held back waiting for a full chunk.
            let received = match self.pending.chunk_end(self.chunk_bytes, false) {
                Some(cut) => match self.receiver.try_recv() {
                    Ok(received) => Some(received),
                    Err(TryRecvError::Empty) => return Ok(self.emit(cut)),
                    Err(TryRecvError::Disconnected) => None,
                },
                None => match self.receiver.recv_timeout(self.poll_interval) {
                    Ok(received) => Some(received),
                    Err(RecvTimeoutError::Timeout) => return Ok(SourcePoll::Idle),
                    Err(RecvTimeoutError::Disconnected) => None,
                },
            };
            match received {
                Some(Ok(block)) => self.pending.extend(&block),
                Some(Err(source)) => {
                    return Err(IngestError::Io {
                        path: self.name.as_ref().into(),
                        source,
                    })
                }
                None => self.at_end = true,
            }
        }
    }

    fn commit_with_sinks(
        &mut self,
        _position: &SourcePosition,
        _sinks: &[SinkMark],
    ) -> Result<(), IngestError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(source: &mut dyn Source) -> Vec<Chunk> {
        let mut chunks = Vec::new();
        loop {
            match source.next_chunk().unwrap() {
                SourcePoll::Ready(ready) => chunks.push(ready.chunk),
                SourcePoll::Idle => continue,
                SourcePoll::End => return chunks,
            }
        }
    }

    #[test]
    fn reader_source_cuts_whole_lines_and_keeps_final_line() {
        let input: Vec<u8> = (0..1000)
            .map(|index| format!("{{\"n\":{index}}}\n"))
            .collect::<String>()
            .into_bytes();
        let mut with_tail = input.clone();
        with_tail.extend_from_slice(b"{\"n\":\"tail\"}");
        let mut source = ReaderSource::new("test", std::io::Cursor::new(with_tail.clone()))
            .with_chunk_bytes(100);
        let chunks = drain(&mut source);
        assert!(chunks.len() > 10);
        let mut joined = Vec::new();
        let mut next_line = 1;
        for chunk in &chunks {
            assert_eq!(chunk.first_offset, joined.len() as u64);
            assert_eq!(chunk.first_line, next_line);
            next_line += count_lines(&chunk.data);
            joined.extend_from_slice(&chunk.data);
        }
        assert_eq!(joined, with_tail);
        assert_eq!(next_line, 1002);
        for chunk in &chunks[..chunks.len() - 1] {
            assert_eq!(chunk.data.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn issue_16_stdin_skips_an_over_long_line_and_the_decoders_refuse_it_in_place() {
        let long = 5 * crate::MAX_LINE_BYTES / 2;
        let mut input = b"{\"timestamp\":1767225600}\n".to_vec();
        let long_start = input.len() as u64;
        input.extend_from_slice(b"{\"pad\":\"");
        input.extend(std::iter::repeat_n(b'p', long - 10));
        input.extend_from_slice(b"\"}\n{\"timestamp\":1767225601}\n");
        let mut source =
            ReaderSource::new("stdin", std::io::Cursor::new(input)).with_chunk_bytes(64 * 1024);
        let chunks = drain(&mut source);
        assert!(chunks.iter().map(|chunk| chunk.data.len()).max().unwrap() < 2 * 64 * 1024);
        let mut decoder = crate::Decoder::new(std::sync::Arc::new(crate::Mapping::builtin()));
        let mut generic = crate::GenericDecoder::new("gateway", None);
        let (mut rows, mut generic_rows, mut dead_letters) = (0, 0, Vec::new());
        for chunk in &chunks {
            let decoded = decoder.decode(chunk);
            rows += decoded.batch.num_rows();
            dead_letters.extend(decoded.dead_letters);
            let decoded = generic.decode(chunk);
            generic_rows += decoded.batch.num_rows();
            assert_eq!(
                decoded.dead_letters,
                dead_letters[dead_letters.len() - decoded.dead_letters.len()..]
            );
        }
        assert_eq!((rows, generic_rows), (2, 2));
        assert_eq!(dead_letters.len(), 1);
        let letter = &dead_letters[0];
        assert_eq!(
            (letter.source.as_str(), letter.line, letter.offset),
            ("stdin", 2, long_start)
        );
        assert_eq!(
            letter.reason,
            format!("line is {long} bytes, over the 1048576-byte limit")
        );
        assert_eq!(letter.raw.len(), crate::DEAD_LETTER_RAW_LIMIT);
        assert!(letter.raw.starts_with("{\"pad\":\"ppp"));
    }

    #[test]
    fn count_lines_counts_unterminated_tail() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"a\n"), 1);
        assert_eq!(count_lines(b"a\nb"), 2);
    }
}
