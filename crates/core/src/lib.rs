//! # inferwatch-core
//!
//! The vocabulary every other inferwatch crate speaks. Nothing here does I/O.
//!
//! inferwatch turns model-server logs into alerts along one path:
//! `sources → decode+map → enrich → Arrow batches → detect → alert`. This crate
//! owns the two shapes that travel along that path:
//!
//! * the **canonical inference event**, an Arrow [`Schema`] built by
//!   [`canonical_schema`]. Decoders append rows to it, detectors read it
//!   column by column, and the store will persist it as Parquet. Columns whose
//!   values repeat a lot (model, version, source, client, status) are
//!   dictionary-encoded, so that a detector can intern group keys once per
//!   batch instead of once per row;
//! * the **alert** ([`Alert`]), the single JSON shape printed by the CLI and
//!   later sent by REST and webhooks. Times are event time in RFC 3339.
//!
//! It also holds the small helpers that several crates need to agree on:
//! duration parsing ([`parse_duration`]), timestamp formatting
//! ([`format_timestamp`]) and stable fingerprints ([`fingerprint`]).
//!
//! ```
//! use inferwatch_core::{canonical_schema, column, parse_duration};
//! let schema = canonical_schema();
//! assert!(schema.field_with_name(column::LATENCY_MS).is_ok());
//! assert_eq!(parse_duration("5m").unwrap(), 300_000_000_000);
//! ```

mod alert;
mod clock;
mod roles;
mod sketch;
mod time;

pub use alert::{Alert, AlertState, Contributor, Evidence, Impact, Severity};
pub use clock::{AgreedClock, CLOCK_AGREEMENT, DEFAULT_MAX_FUTURE_NANOS};
pub use roles::{Role, RoleVocabulary, AB_ROLE};
pub use sketch::{QuantileSketch, LARGEST_TRACKED, QUANTILE_RELATIVE_ERROR};
pub use time::{
    epoch_to_nanos, format_timestamp, parse_duration, parse_timestamp_text, NANOS_PER_SECOND,
};

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use sha2::{Digest, Sha256};

/// Errors raised by the core primitives.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CoreError {
    /// A duration such as `5m` could not be read.
    #[error("invalid duration '{text}': expected a number followed by ms, s, m, h or d")]
    InvalidDuration {
        /// The text that was given.
        text: String,
    },
    /// A timestamp could not be read.
    #[error("invalid timestamp '{text}': expected RFC 3339 or epoch seconds/ms/µs/ns")]
    InvalidTimestamp {
        /// The text that was given.
        text: String,
    },
    /// Stored sketch bytes could not be read.
    #[error("invalid quantile sketch: {0}")]
    InvalidSketch(String),
    /// An invariant was broken: this is a bug in inferwatch.
    #[error("internal error (this is a bug): {0}")]
    Internal(String),
}

/// Names of the canonical columns, so that no crate spells them by hand.
pub mod column {
    /// Event time, UTC nanoseconds.
    pub const TIMESTAMP: &str = "timestamp";
    /// Logical stream the event belongs to (`inference` by default).
    pub const STREAM: &str = "stream";
    /// Model identifier.
    pub const MODEL_ID: &str = "model_id";
    /// Model version.
    pub const MODEL_VERSION: &str = "model_version";
    /// Canary / baseline / A-B arm.
    pub const AB_GROUP: &str = "ab_group";
    /// Request identifier.
    pub const REQUEST_ID: &str = "request_id";
    /// Calling client (API key, tenant, service).
    pub const CLIENT_ID: &str = "client_id";
    /// Calling IP address.
    pub const CLIENT_IP: &str = "client_ip";
    /// Data source that produced the input.
    pub const SOURCE_ID: &str = "source_id";
    /// `ok` or `error`.
    pub const STATUS: &str = "status";
    /// Error class when `status` is `error`.
    pub const ERROR_TYPE: &str = "error_type";
    /// HTTP status code of the response.
    pub const HTTP_STATUS: &str = "http_status";
    /// End-to-end latency in milliseconds.
    pub const LATENCY_MS: &str = "latency_ms";
    /// Time to first token in milliseconds.
    pub const TTFT_MS: &str = "ttft_ms";
    /// Prompt / input tokens.
    pub const INPUT_TOKENS: &str = "input_tokens";
    /// Completion / output tokens.
    pub const OUTPUT_TOKENS: &str = "output_tokens";
    /// Hash of the input payload (never the raw input).
    pub const INPUT_HASH: &str = "input_hash";
    /// Index of the predicted class.
    pub const PREDICTED_CLASS: &str = "predicted_class";
    /// Probability of the predicted class.
    pub const CONFIDENCE: &str = "confidence";
    /// Class probabilities.
    pub const PROBABILITIES: &str = "probabilities";
    /// Raw logits.
    pub const LOGITS: &str = "logits";
    /// Shannon entropy of the class distribution, in nats.
    pub const ENTROPY: &str = "entropy";
    /// Top-1 minus top-2 probability.
    pub const MARGIN: &str = "margin";
    /// Every input field that no mapping claimed, as raw JSON text.
    pub const ATTRIBUTES: &str = "attributes";
}

/// The stream name events get when nothing else says.
pub const DEFAULT_STREAM: &str = "inference";

/// Dictionary-encoded UTF-8: the type of every low-cardinality string column.
pub fn dictionary_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The list-of-f32 type used by `probabilities` and `logits`.
pub fn float_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}

/// The map type of the `attributes` column.
pub fn attributes_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("keys", DataType::Utf8, false),
            Field::new("values", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The canonical inference event schema (without enrichment columns).
pub fn canonical_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            use column::*;
            let dict = dictionary_utf8;
            Arc::new(Schema::new(vec![
                Field::new(
                    TIMESTAMP,
                    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                    false,
                ),
                Field::new(STREAM, dict(), false),
                Field::new(MODEL_ID, dict(), true),
                Field::new(MODEL_VERSION, dict(), true),
                Field::new(AB_GROUP, dict(), true),
                Field::new(REQUEST_ID, DataType::Utf8, true),
                Field::new(CLIENT_ID, dict(), true),
                Field::new(CLIENT_IP, DataType::Utf8, true),
                Field::new(SOURCE_ID, dict(), true),
                Field::new(STATUS, dict(), false),
                Field::new(ERROR_TYPE, dict(), true),
                Field::new(HTTP_STATUS, DataType::Int32, true),
                Field::new(LATENCY_MS, DataType::Float64, true),
                Field::new(TTFT_MS, DataType::Float64, true),
                Field::new(INPUT_TOKENS, DataType::Int64, true),
                Field::new(OUTPUT_TOKENS, DataType::Int64, true),
                Field::new(INPUT_HASH, DataType::Utf8, true),
                Field::new(PREDICTED_CLASS, DataType::Int32, true),
                Field::new(CONFIDENCE, DataType::Float64, true),
                Field::new(PROBABILITIES, float_list(), true),
                Field::new(LOGITS, float_list(), true),
                Field::new(ENTROPY, DataType::Float64, true),
                Field::new(MARGIN, DataType::Float64, true),
                Field::new(ATTRIBUTES, attributes_type(), true),
            ]))
        })
        .clone()
}

/// A stable 16-hex-digit fingerprint of the given parts.
///
/// Used for alert identity: the same rule and group key always give the same
/// fingerprint, across runs and machines.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_every_documented_column_once() {
        let schema = canonical_schema();
        assert_eq!(schema.fields().len(), 24);
        let mut names: Vec<_> = schema.fields().iter().map(|f| f.name().clone()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 24);
        assert!(!schema
            .field_with_name(column::TIMESTAMP)
            .unwrap()
            .is_nullable());
    }

    #[test]
    fn fingerprint_is_stable_and_separates_parts() {
        assert_eq!(fingerprint(["a", "bc"]), fingerprint(["a", "bc"]));
        assert_ne!(fingerprint(["a", "bc"]), fingerprint(["ab", "c"]));
        assert_eq!(fingerprint(["x"]).len(), 16);
    }
}
