//! [`PendingLines`]: bytes read from one input but not yet emitted, and the
//! line cap applied while reading.
//!
//! A line longer than [`MAX_LINE_BYTES`] would otherwise be buffered whole
//! before the decoder could refuse it, so a stream without newlines could
//! grow memory without bound. Here, as soon as the unterminated last line
//! held passes the cap, only its first [`DEAD_LETTER_RAW_LIMIT`] bytes are
//! kept and the rest is counted and dropped as it arrives, up to its
//! newline. That line then ends its chunk, and [`Chunk::skipped_bytes`]
//! tells the decoder how much of it is missing, so the dead letter names
//! the true length while offsets of later lines stay exact.
//!
//! Only a *partial* line is cut: a whole over-long line that arrived in one
//! read is bounded by the read size and is refused by the decoder itself,
//! with the same dead letter.
//!
//! [`Chunk::skipped_bytes`]: crate::Chunk::skipped_bytes

use crate::{ChunkBuffers, DEAD_LETTER_RAW_LIMIT, MAX_LINE_BYTES};

/// Most bytes before a newline held whole: the cap plus a `\r`, which the
/// decoder strips before measuring (so a CRLF line exactly at the cap is fine).
pub(crate) const HELD_LINE_BYTES: usize = MAX_LINE_BYTES + 1;

/// Bytes of an over-long line kept for its dead letter.
pub(crate) const KEPT_BYTES: usize = DEAD_LETTER_RAW_LIMIT;

/// Read but not yet emitted: whole lines, then possibly a partial line or
/// the kept start of an over-long one.
#[derive(Debug, Default)]
pub(crate) struct PendingLines {
    data: Vec<u8>,
    overlong: Option<Overlong>,
}

/// The over-long last line of [`PendingLines::data`].
#[derive(Debug, Clone, Copy)]
struct Overlong {
    /// Where it starts in `data`; its first [`KEPT_BYTES`] follow.
    start: usize,
    /// Bytes dropped so far (after the kept ones, before the newline).
    skipped: u64,
    /// Whether its newline has arrived; it then sits just after the kept bytes.
    ended: bool,
}

impl PendingLines {
    /// Bytes held.
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    /// Bytes consumed from the input and not yet emitted, including the
    /// dropped part of an over-long line.
    pub(crate) fn input_bytes(&self) -> u64 {
        self.data.len() as u64 + self.overlong.map_or(0, |overlong| overlong.skipped)
    }

    /// The buffer to read into. Call [`PendingLines::appended`] afterwards
    /// with its length from before the read.
    pub(crate) fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.data
    }

    /// Appends `bytes` (see [`PendingLines::appended`]).
    pub(crate) fn extend(&mut self, bytes: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        self.appended(start);
    }

    /// Takes in the bytes appended to the buffer from `start` on: drops
    /// them while an over-long line is being skipped, and starts skipping
    /// when the last line passes the cap.
    pub(crate) fn appended(&mut self, start: usize) {
        if let Some(overlong) = self.overlong.as_mut().filter(|overlong| !overlong.ended) {
            debug_assert_eq!(start, overlong.start + KEPT_BYTES);
            match memchr::memchr(b'\n', &self.data[start..]) {
                None => {
                    overlong.skipped += (self.data.len() - start) as u64;
                    self.data.truncate(start);
                }
                Some(newline) => {
                    overlong.skipped += newline as u64;
                    self.data.drain(start..start + newline);
                    overlong.ended = true;
                }
            }
            return;
        }
        self.check_last_line();
    }

    /// Starts skipping the unterminated last line if it is over the cap.
    /// Lines after an ended over-long line wait until it has been emitted.
    fn check_last_line(&mut self) {
        let length = self.data.len();
        if self.overlong.is_some() || length <= HELD_LINE_BYTES {
            return;
        }
        // No newline in the last HELD_LINE_BYTES + 1 bytes: the last line is
        // longer than that. Searching only this window keeps it cheap.
        let window = length - HELD_LINE_BYTES - 1;
        if memchr::memrchr(b'\n', &self.data[window..]).is_some() {
            return;
        }
        let start = memchr::memrchr(b'\n', &self.data[..window]).map_or(0, |newline| newline + 1);
        self.overlong = Some(Overlong {
            start,
            skipped: (length - start - KEPT_BYTES) as u64,
            ended: false,
        });
        self.data.truncate(start + KEPT_BYTES);
    }

    /// Where the next chunk ends if whole lines are at hand: after the last
    /// newline within `chunk_bytes` (see [`chunk_end`]), and always just
    /// after an over-long line whose newline has arrived (it must end its
    /// chunk). With `at_end` (no more input will come), whatever is held.
    pub(crate) fn chunk_end(&self, chunk_bytes: usize, at_end: bool) -> Option<usize> {
        let whole = match self.overlong {
            Some(overlong) if overlong.ended => {
                let end = overlong.start + KEPT_BYTES + 1;
                return Some(chunk_end(&self.data[..end], chunk_bytes).unwrap_or(end));
            }
            Some(overlong) => chunk_end(&self.data[..overlong.start], chunk_bytes),
            None => chunk_end(&self.data, chunk_bytes),
        };
        whole.or_else(|| (at_end && !self.data.is_empty()).then_some(self.data.len()))
    }

    /// Where a chunk of at least `chunk_bytes` (or one closing an
    /// over-long line) ends, if one is ready: reading can stop.
    pub(crate) fn full_chunk_end(&self, chunk_bytes: usize) -> Option<usize> {
        let whole_lines = match self.overlong {
            Some(overlong) if overlong.ended => return self.chunk_end(chunk_bytes, false),
            Some(overlong) => overlong.start,
            None => self.data.len(),
        };
        if whole_lines < chunk_bytes {
            return None;
        }
        self.chunk_end(chunk_bytes, false)
    }

    /// Removes the first `end` bytes (an end from [`PendingLines::chunk_end`])
    /// and returns them with the number of bytes of their last line that
    /// were skipped (0 unless it is an over-long line). With `pool`, the
    /// bytes left get a recycled buffer of the given capacity.
    pub(crate) fn take(
        &mut self,
        end: usize,
        pool: Option<(&ChunkBuffers, usize)>,
    ) -> (Vec<u8>, u64) {
        let skipped = match self.overlong.as_mut() {
            Some(overlong) if end > overlong.start => {
                debug_assert!(end == overlong.start + KEPT_BYTES + usize::from(overlong.ended));
                let skipped = overlong.skipped;
                self.overlong = None;
                skipped
            }
            Some(overlong) => {
                overlong.start -= end;
                0
            }
            None => 0,
        };
        let data = match pool {
            Some((buffers, capacity)) => buffers.cut(&mut self.data, end, capacity),
            None => {
                let rest = self.data.split_off(end);
                std::mem::replace(&mut self.data, rest)
            }
        };
        if skipped > 0 {
            // What followed the over-long line has not been checked yet.
            self.check_last_line();
        }
        (data, skipped)
    }

    /// Forgets everything held (a truncated file starts over).
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.overlong = None;
    }
}

/// Where the next chunk of `pending` ends: after the last newline within the
/// first `chunk_bytes`, or, when the first line is longer than that, after
/// its newline. `None` when `pending` holds no newline at all.
fn chunk_end(pending: &[u8], chunk_bytes: usize) -> Option<usize> {
    let head = &pending[..pending.len().min(chunk_bytes)];
    if let Some(newline) = memchr::memrchr(b'\n', head) {
        return Some(newline + 1);
    }
    memchr::memchr(b'\n', &pending[head.len()..]).map(|newline| head.len() + newline + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in blocks of `block` bytes and cuts chunks as a reader
    /// would; returns `(data, skipped)` per chunk.
    fn cut_all(input: &[u8], block: usize, chunk_bytes: usize) -> Vec<(Vec<u8>, u64)> {
        let mut pending = PendingLines::default();
        let mut chunks = Vec::new();
        for piece in input.chunks(block) {
            pending.extend(piece);
            assert!(
                pending.len() <= chunk_bytes + block + HELD_LINE_BYTES + KEPT_BYTES,
                "held {} bytes",
                pending.len()
            );
            while let Some(end) = pending.full_chunk_end(chunk_bytes) {
                chunks.push(pending.take(end, None));
            }
        }
        while let Some(end) = pending.chunk_end(chunk_bytes, true) {
            chunks.push(pending.take(end, None));
        }
        assert_eq!(pending.input_bytes(), 0);
        chunks
    }

    /// `(line number, offset, kept text, full length)` of every line.
    fn lines_of(chunks: &[(Vec<u8>, u64)]) -> Vec<(u64, u64, Vec<u8>, u64)> {
        let mut lines = Vec::new();
        let (mut number, mut offset) = (1u64, 0u64);
        for (data, skipped) in chunks {
            let pieces: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
            for (index, piece) in pieces.iter().enumerate() {
                let text = piece.strip_suffix(b"\n").unwrap_or(piece);
                let missing = if index + 1 == pieces.len() {
                    *skipped
                } else {
                    0
                };
                lines.push((number, offset, text.to_vec(), text.len() as u64 + missing));
                number += 1;
                offset += piece.len() as u64 + missing;
            }
        }
        lines
    }

    fn input_with(long: usize) -> Vec<u8> {
        let mut input = b"{\"a\":1}\nsecond\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', long));
        input.extend_from_slice(b"\nafter\nlast");
        input
    }

    #[test]
    fn issue_16_an_over_long_line_keeps_its_start_and_later_positions_stay_exact() {
        let long = 3 * MAX_LINE_BYTES + 17;
        let input = input_with(long);
        // Blocks smaller and larger than a chunk, and cut points inside the line.
        for (block, chunk_bytes) in [
            (4096, 64),
            (65_536, 1 << 20),
            (1 << 20, 4 << 20),
            (777, 100),
        ] {
            let chunks = cut_all(&input, block, chunk_bytes);
            let lines = lines_of(&chunks);
            assert_eq!(lines.len(), 5, "block {block}");
            let (number, offset, kept, length) = &lines[2];
            assert_eq!((*number, *offset, *length), (3, 15, long as u64));
            assert_eq!(kept.len(), KEPT_BYTES, "only the start is kept");
            assert_eq!(lines[3].0, 4);
            assert_eq!(lines[3].1, 15 + long as u64 + 1);
            assert_eq!(lines[3].2, b"after");
            assert_eq!(lines[4].2, b"last");
            assert_eq!(lines[4].1, input.len() as u64 - 4);
            // The cut line ends its chunk, so only the last line is partial.
            let cut = chunks.iter().filter(|(_, skipped)| *skipped > 0).count();
            assert_eq!(cut, 1);
        }
    }

    #[test]
    fn issue_16_lines_at_the_cap_are_held_whole() {
        // HELD_LINE_BYTES (the cap plus a \r) is kept whole, one more byte
        // is cut, when the line is all that has arrived (one block of it).
        for (long, cut) in [
            (MAX_LINE_BYTES, false),
            (HELD_LINE_BYTES, false),
            (HELD_LINE_BYTES + 1, true),
        ] {
            for tail in [&b"\nnext\n"[..], b""] {
                let mut input = vec![b'y'; long];
                input.extend_from_slice(tail);
                let chunks = cut_all(&input, long, 64 * 1024);
                let lines = lines_of(&chunks);
                assert_eq!(lines[0].3, long as u64);
                let kept = if cut { KEPT_BYTES } else { long };
                assert_eq!(lines[0].2.len(), kept, "line of {long} bytes");
                if !tail.is_empty() {
                    assert_eq!(lines[1], (2, long as u64 + 1, b"next".to_vec(), 4));
                }
            }
        }
    }

    #[test]
    fn issue_16_an_over_long_line_at_the_end_of_input_needs_no_newline() {
        let input = [b"a\n".as_slice(), &vec![b'z'; 2 * MAX_LINE_BYTES]].concat();
        let lines = lines_of(&cut_all(&input, 100_000, 1 << 20));
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1].1, 2);
        assert_eq!(lines[1].3, 2 * MAX_LINE_BYTES as u64);
    }

    #[test]
    fn issue_16_consecutive_over_long_lines_keep_exact_positions() {
        let mut input = Vec::new();
        let length = |index: usize| 2 * MAX_LINE_BYTES + index;
        for index in 0..3u8 {
            input.extend(std::iter::repeat_n(
                b'0' + index,
                length(usize::from(index)),
            ));
            input.push(b'\n');
        }
        // Small blocks cut each line while it is partial, one chunk each; a
        // block holding whole lines leaves them to the decoder. Positions
        // and lengths are the same either way.
        for (block, cut) in [(65_536, 3), (input.len(), 0)] {
            let chunks = cut_all(&input, block, 1 << 20);
            assert_eq!(
                chunks.iter().filter(|(_, skipped)| *skipped > 0).count(),
                cut
            );
            let lines = lines_of(&chunks);
            assert_eq!(lines.len(), 3);
            let mut offset = 0;
            for (index, line) in lines.iter().enumerate() {
                let length = length(index) as u64;
                assert_eq!((line.0, line.1, line.3), (index as u64 + 1, offset, length));
                assert_eq!(line.2[0], b'0' + index as u8);
                offset += length + 1;
            }
        }
    }
}
