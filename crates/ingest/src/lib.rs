//! # inferwatch-ingest
//!
//! (Essay to be written by the ingest owner: sources → decode+map → enrich → Arrow batches.)

mod checkpoint;
mod chunk;
mod error;
mod source;

pub use checkpoint::{Checkpoint, FileCheckpoint, SinkMark, CHECKPOINT_VERSION};
pub use chunk::Chunk;
pub use error::IngestError;
pub use source::{
    FileSource, FileSourceOptions, ReaderSource, Source, SourceChunk, SourcePoll, SourcePosition,
    StdinSource, DEFAULT_CHUNK_BYTES, DEFAULT_POLL_INTERVAL,
};
