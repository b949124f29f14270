//! Measures single-threaded decode throughput on simulated ~500-byte events.
//!
//! ```text
//! cargo run --release -p inferwatch-ingest --example decode_speed [seconds] [mapping.yaml]
//! ```
//!
//! Lines are generated in-process (no I/O), cut into 8,192-line chunks and
//! decoded repeatedly with one `Decoder`; the report is lines per second and
//! megabytes per second of JSON.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use inferwatch_ingest::{Chunk, Decoder, Mapping};

const LINES_PER_CHUNK: usize = 8_192;
const CHUNKS: usize = 8;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let seconds: f64 = arguments
        .next()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3.0);
    let mapping = match arguments.next() {
        Some(path) => match Mapping::from_yaml_path(Path::new(&path)) {
            Ok(mapping) => mapping,
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(2);
            }
        },
        None => Mapping::builtin(),
    };
    let chunks: Vec<Chunk> = (0..CHUNKS)
        .map(|index| simulated_chunk(index * LINES_PER_CHUNK))
        .collect();
    let bytes_per_round: usize = chunks.iter().map(|chunk| chunk.data.len()).sum();
    let average_line = bytes_per_round as f64 / (CHUNKS * LINES_PER_CHUNK) as f64;

    let mut decoder = Decoder::new(Arc::new(mapping));
    // Warm up buffers and dictionaries once.
    for chunk in &chunks {
        let decoded = decoder.decode(chunk);
        let _ = decoded;
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut lines = 0u64;
    let mut bytes = 0u64;
    let mut rows = 0usize;
    while started.elapsed() < budget {
        for chunk in &chunks {
            let decoded = decoder.decode(chunk);
            rows += decoded.batch.num_rows();
            lines += decoded.lines;
            bytes += chunk.data.len() as u64;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "decoded {lines} lines ({rows} rows, average {average_line:.0} bytes/line) in {elapsed:.2}s: \
         {:.0} lines/s, {:.0} MB/s",
        lines as f64 / elapsed,
        bytes as f64 / elapsed / 1e6
    );
}

/// A chunk of events shaped like a busy classifier behind a FastAPI server:
/// canonical names, a SHA-256 input hash, class probabilities and a couple of
/// free-form attributes, with values varying per line.
fn simulated_chunk(first_index: usize) -> Chunk {
    const MODELS: [&str; 4] = [
        "fraud-detector",
        "churn-scorer",
        "image-tagger",
        "spam-filter",
    ];
    const VERSIONS: [&str; 3] = ["v3.2.1", "v3.3.0-rc1", "v2.9.7"];
    const SOURCES: [&str; 3] = ["web-checkout", "mobile-app", "batch-rescore"];
    let mut data = String::with_capacity(LINES_PER_CHUNK * 520);
    let mut state = first_index as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // xorshift: cheap, deterministic variety.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for offset in 0..LINES_PER_CHUNK {
        let index = first_index + offset;
        let random = next();
        let millis = 1_767_225_600_000u64 + index as u64 * 7;
        let seconds = millis / 1000;
        let (hours, minutes, secs) = ((seconds / 3600) % 24, (seconds / 60) % 60, seconds % 60);
        let top = 0.5 + (random % 4_900) as f64 / 10_000.0;
        let second = (1.0 - top) * 0.7;
        let third = 1.0 - top - second;
        let status_ok = random % 50 != 0;
        let _ = writeln!(
            data,
            concat!(
                r#"{{"timestamp":"2026-01-01T{:02}:{:02}:{:02}.{:03}Z","model_id":"{}","model_version":"{}","#,
                r#""ab_group":"{}","request_id":"req-{:08x}-{:04x}","client_id":"tenant-{}","client_ip":"10.0.{}.{}","#,
                r#""source_id":"{}","status":"{}","http_status":{},"latency_ms":{:.2},"input_tokens":{},"output_tokens":{},"#,
                r#""input_hash":"{:016x}{:016x}{:016x}{:016x}","probabilities":[{:.4},{:.4},{:.4}],"#,
                r#""region":"eu-west-{}","feature_count":{}}}"#
            ),
            hours,
            minutes,
            secs,
            millis % 1000,
            MODELS[index % MODELS.len()],
            VERSIONS[(random as usize >> 8) % VERSIONS.len()],
            if random % 10 == 0 {
                "canary"
            } else {
                "baseline"
            },
            index,
            random & 0xffff,
            (random >> 16) % 200,
            (random >> 24) % 256,
            (random >> 32) % 256,
            SOURCES[(random as usize >> 40) % SOURCES.len()],
            if status_ok { "ok" } else { "error" },
            if status_ok { 200 } else { 503 },
            5.0 + (random % 10_000) as f64 / 100.0,
            64 + random % 2_048,
            random % 256,
            random,
            random.rotate_left(16),
            random.rotate_left(32),
            random.rotate_left(48),
            top,
            second,
            third,
            1 + random % 3,
            20 + random % 40,
        );
    }
    Chunk {
        source: Arc::from("simulated"),
        first_line: first_index as u64 + 1,
        first_offset: 0,
        data: data.into_bytes(),
        skipped_bytes: 0,
    }
}
