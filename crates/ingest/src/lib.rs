//! # inferwatch-ingest
//!
//! (Essay to be written by the ingest owner: sources → decode+map → enrich → Arrow batches.)

mod chunk;
mod error;

pub use chunk::Chunk;
pub use error::IngestError;
