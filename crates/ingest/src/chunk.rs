//! The unit of work between a source and a decoder.

use std::sync::Arc;

/// A run of whole lines read from one source.
///
/// Sources cut their input at line boundaries, so a decoder never sees half
/// a record. `first_line` and `first_offset` let the decoder name the exact
/// position of a bad record in its dead-letter entry.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Name of the source (file path, `stdin`, `http`).
    pub source: Arc<str>,
    /// 1-based line number of the first line in `data`.
    pub first_line: u64,
    /// Byte offset of the first line in the source.
    pub first_offset: u64,
    /// Whole lines, each ending in `\n` except possibly the last one at end of input.
    pub data: Vec<u8>,
    /// Bytes of the last line that the source skipped instead of holding
    /// them: the line was longer than [`MAX_LINE_BYTES`](crate::MAX_LINE_BYTES),
    /// so `data` has only its first [`DEAD_LETTER_RAW_LIMIT`](crate::DEAD_LETTER_RAW_LIMIT)
    /// bytes and the decoder refuses it as `line_too_long`. 0 for an
    /// ordinary chunk. The chunk covers `data.len() + skipped_bytes` bytes
    /// of the source.
    pub skipped_bytes: u64,
}

impl Chunk {
    /// The chunk that follows a source's read position (`line` lines and
    /// `offset` bytes already emitted), advancing that position past it
    /// (`skipped_bytes` as in [`Chunk::skipped_bytes`]).
    pub(crate) fn following(
        source: &Arc<str>,
        line: &mut u64,
        offset: &mut u64,
        (data, skipped_bytes): (Vec<u8>, u64),
    ) -> Chunk {
        let chunk = Chunk {
            source: source.clone(),
            first_line: *line + 1,
            first_offset: *offset,
            data,
            skipped_bytes,
        };
        *offset += chunk.data.len() as u64 + skipped_bytes;
        *line += crate::source::count_lines(&chunk.data);
        chunk
    }
}

/// Chunk buffers handed back by decoders for sources to read into again.
///
/// A chunk is allocated on the reader thread and dropped on a decoder
/// thread; allocators return such cross-thread megabyte blocks to the kernel
/// and the reader then faults in and zeroes fresh pages for every chunk,
/// which cost the reader most of its time. Recycling keeps a few warm
/// buffers in flight instead. The pool is bounded, so it never holds more
/// than `limit` idle buffers. Clones share one pool.
#[derive(Debug, Clone)]
pub struct ChunkBuffers {
    idle: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    limit: usize,
}

impl Default for ChunkBuffers {
    /// A pool that keeps up to four idle buffers.
    fn default() -> ChunkBuffers {
        ChunkBuffers::new(4)
    }
}

impl ChunkBuffers {
    /// A pool keeping at most `limit` idle buffers.
    pub fn new(limit: usize) -> ChunkBuffers {
        ChunkBuffers {
            idle: Arc::default(),
            limit,
        }
    }

    /// An empty buffer with room for at least `capacity` bytes: a recycled
    /// one when the pool has one, else a fresh allocation.
    pub fn take(&self, capacity: usize) -> Vec<u8> {
        let recycled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match recycled {
            Some(mut buffer) => {
                buffer.reserve(capacity);
                buffer
            }
            None => Vec::with_capacity(capacity),
        }
    }

    /// Returns `buffer` (typically a decoded chunk's data) to the pool, or
    /// frees it when the pool is full.
    pub fn give_back(&self, mut buffer: Vec<u8>) {
        buffer.clear();
        if buffer.capacity() == 0 {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.limit {
                idle.push(buffer);
            }
        }
    }

    /// Ends a chunk at `cut`: the bytes before it are returned as the
    /// chunk, the bytes after it stay in `pending`, now a buffer from the
    /// pool with room for `capacity` bytes, so the next read neither
    /// reallocates nor touches fresh pages.
    pub fn cut(&self, pending: &mut Vec<u8>, cut: usize, capacity: usize) -> Vec<u8> {
        let rest_bytes = pending.len().saturating_sub(cut);
        let mut rest = self.take(capacity.max(rest_bytes));
        rest.extend_from_slice(&pending[cut.min(pending.len())..]);
        pending.truncate(cut);
        std::mem::replace(pending, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkBuffers;

    #[test]
    fn a_cut_keeps_the_tail_pending_and_reuses_a_returned_buffer() {
        let buffers = ChunkBuffers::new(1);
        let mut pending = b"one\ntwo\nthr".to_vec();
        let chunk = buffers.cut(&mut pending, 8, 64);
        assert_eq!(chunk, b"one\ntwo\n");
        assert_eq!(pending, b"thr");
        assert!(pending.capacity() >= 64);

        let returned_address = chunk.as_ptr();
        buffers.give_back(chunk);
        let reused = buffers.take(4);
        assert!(reused.is_empty());
        assert_eq!(
            reused.as_ptr(),
            returned_address,
            "the returned buffer is handed out again"
        );
    }

    #[test]
    fn a_full_pool_frees_what_it_cannot_keep() {
        let buffers = ChunkBuffers::new(1);
        buffers.give_back(vec![1; 16]);
        buffers.give_back(vec![2; 16]);
        let first = buffers.take(1);
        assert!(first.capacity() >= 16);
        let second = buffers.take(1);
        assert!(second.capacity() < 16, "only one buffer was kept");
    }
}
