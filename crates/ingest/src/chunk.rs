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
}

impl Chunk {
    /// The chunk that follows a source's read position (`line` lines and
    /// `offset` bytes already emitted), advancing that position past it.
    pub(crate) fn following(
        source: &Arc<str>,
        line: &mut u64,
        offset: &mut u64,
        data: Vec<u8>,
    ) -> Chunk {
        let chunk = Chunk {
            source: source.clone(),
            first_line: *line + 1,
            first_offset: *offset,
            data,
        };
        *offset += chunk.data.len() as u64;
        *line += crate::source::count_lines(&chunk.data);
        chunk
    }
}
