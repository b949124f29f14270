//! Correlation across streams for `inferwatch detect` (`--correlations`,
//! `--stream NAME=FILE`).
//!
//! Three kinds of input reach the correlation engine, all in event time:
//! the firing alerts of the rules and SLOs, the inference events themselves
//! (as JSON objects, and only when a Sigma rule reads the `inference`
//! stream), and side streams such as auth or feature-store logs given as
//! JSONL files. Side streams are read whole at start and sorted by event
//! time, then released as the inference stream's event time passes theirs,
//! so a replay interleaves them the way they happened.
//!
//! Rule alerts lag the newest event by up to a rule's allowed lateness plus
//! its evaluation interval ([`Engine::alert_delay`]); the correlation
//! engine's own lateness is widened by that much, so an alert is never
//! dropped as late because a side event was released before it.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use arrow::array::{Array, RecordBatch, TimestampNanosecondArray};
use inferwatch_core::{column, format_timestamp, Alert};
use inferwatch_detect::correlation::{CorrelationConfig, CorrelationEngine, CorrelationRules};
use inferwatch_detect::Engine;
use inferwatch_ingest::DeadLetter;
use serde_json::Value;

/// The stream name Sigma rules use for inferwatch's own inference events.
pub const INFERENCE_STREAM: &str = "inference";

/// A side stream named on the command line: `NAME=FILE`.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// The stream name Sigma rules select with `logsource.service`.
    pub name: String,
    /// The JSONL file holding its events.
    pub path: PathBuf,
}

impl std::str::FromStr for StreamSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<StreamSpec, String> {
        match text.split_once('=') {
            Some((name, path)) if !name.is_empty() && !path.is_empty() => Ok(StreamSpec {
                name: name.to_string(),
                path: PathBuf::from(path),
            }),
            _ => Err(format!(
                "expected NAME=FILE (e.g. auth=auth.jsonl), got {text:?}"
            )),
        }
    }
}

/// One side-stream event waiting for the inference stream to reach its time.
struct SideEvent {
    time: i64,
    stream: usize,
    event: Value,
}

/// The correlation engine and the side-stream events not yet released.
pub struct Correlator {
    engine: CorrelationEngine,
    stream_names: Vec<String>,
    pending: VecDeque<SideEvent>,
    reads_inference: bool,
    /// Events (side or inference) the engine refused, e.g. a matching event
    /// without a readable time.
    refused_events: u64,
}

impl Correlator {
    /// Loads the correlation rules (a file or a directory) and the side
    /// streams. Every name a correlation uses must be a Sigma rule or
    /// correlation of the loaded files, or one of `known_rule_ids`.
    /// Unreadable side-stream lines become dead letters.
    pub fn load(
        rules_path: &Path,
        streams: &[StreamSpec],
        known_rule_ids: &BTreeSet<String>,
        alert_delay: i64,
        dead_letters: &mut Vec<DeadLetter>,
    ) -> anyhow::Result<Correlator> {
        let rules = if rules_path.is_dir() {
            let (rules, errors) = CorrelationRules::load_dir(rules_path);
            if !errors.is_empty() {
                let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
                bail!(
                    "{} correlation rule error(s):\n  {}",
                    messages.len(),
                    messages.join("\n  ")
                );
            }
            rules
        } else {
            CorrelationRules::from_path(rules_path)?
        };
        if rules.correlations.is_empty() && rules.detection_rules.is_empty() {
            bail!("no correlation rules found in {}", rules_path.display());
        }
        let default = CorrelationConfig::default();
        let config = CorrelationConfig {
            allowed_lateness: default.allowed_lateness + alert_delay,
            ..default
        };
        let engine = CorrelationEngine::new(rules, config)?;
        let unknown: Vec<String> = engine
            .external_rules()
            .into_iter()
            .filter(|(name, _)| !known_rule_ids.contains(name))
            .map(|(name, at)| {
                format!(
                    "{}:{}:{}: '{name}' is not a Sigma rule or correlation in {}, nor a loaded rule or SLO id",
                    at.path.display(),
                    at.line,
                    at.column,
                    rules_path.display()
                )
            })
            .collect();
        if !unknown.is_empty() {
            bail!(
                "{} unknown rule reference(s):\n  {}",
                unknown.len(),
                unknown.join("\n  ")
            );
        }
        let mut pending = Vec::new();
        for (index, stream) in streams.iter().enumerate() {
            if !engine.reads_stream(&stream.name) {
                eprintln!(
                    "inferwatch detect: no Sigma rule reads stream '{}' ({}); its events only move time on",
                    stream.name,
                    stream.path.display()
                );
            }
            read_side_stream(&engine, index, stream, &mut pending, dead_letters)?;
        }
        // Stable: events with equal times keep their file order.
        pending.sort_by_key(|event| event.time);
        Ok(Correlator {
            reads_inference: engine.reads_stream(INFERENCE_STREAM),
            engine,
            stream_names: streams.iter().map(|s| s.name.clone()).collect(),
            pending: pending.into(),
            refused_events: 0,
        })
    }

    /// Whether inference events must be decoded with every column, because
    /// a Sigma rule reads them.
    pub fn reads_inference(&self) -> bool {
        self.reads_inference
    }

    /// Takes in one batch's worth: the rule and SLO alerts it released, the
    /// batch itself (used only when a Sigma rule reads inference events), and
    /// the newest event time so far; side events up to that time are
    /// released. Returns the correlation alerts that are due.
    pub fn observe(
        &mut self,
        alerts: &[Alert],
        batch: Option<&RecordBatch>,
        now: Option<i64>,
    ) -> anyhow::Result<Vec<Alert>> {
        for alert in alerts {
            self.engine.observe_alert(alert);
        }
        if let (true, Some(batch)) = (self.reads_inference, batch) {
            for event in batch_events(batch)? {
                if self.engine.observe_event(INFERENCE_STREAM, &event).is_err() {
                    self.refused_events += 1;
                }
            }
        }
        if let Some(now) = now {
            self.release_side_events(now);
        }
        Ok(self.engine.poll())
    }

    /// End of input: releases every side event left and evaluates all.
    pub fn finish(&mut self, alerts: &[Alert]) -> Vec<Alert> {
        for alert in alerts {
            self.engine.observe_alert(alert);
        }
        self.release_side_events(i64::MAX);
        self.engine.flush()
    }

    /// Findings dropped as later than the lateness, and events refused.
    pub fn dropped(&self) -> (u64, u64) {
        (self.engine.late_dropped(), self.refused_events)
    }

    fn release_side_events(&mut self, until: i64) {
        while self
            .pending
            .front()
            .is_some_and(|event| event.time <= until)
        {
            let Some(side) = self.pending.pop_front() else {
                break;
            };
            let stream = &self.stream_names[side.stream];
            if self.engine.observe_event(stream, &side.event).is_err() {
                self.refused_events += 1;
            }
        }
    }
}

/// Reads a side stream's JSONL file; lines that are not JSON objects with a
/// readable event time become dead letters.
fn read_side_stream(
    engine: &CorrelationEngine,
    index: usize,
    stream: &StreamSpec,
    pending: &mut Vec<SideEvent>,
    dead_letters: &mut Vec<DeadLetter>,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(&stream.path).with_context(|| {
        format!(
            "reading stream '{}' from {}",
            stream.name,
            stream.path.display()
        )
    })?;
    let source = stream.path.display().to_string();
    let mut offset = 0u64;
    for (number, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_offset = offset;
        offset += line.len() as u64 + 1;
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            continue;
        }
        let line_number = number as u64 + 1;
        let refuse =
            |reason: String| DeadLetter::new(&source, line_number, line_offset, reason, line);
        match serde_json::from_slice::<Value>(trimmed) {
            Ok(event) if event.is_object() => match engine.event_time(&event) {
                Some(time) => pending.push(SideEvent {
                    time,
                    stream: index,
                    event,
                }),
                None => dead_letters.push(refuse(format!(
                    "stream '{}': no readable event time (timestamp, @timestamp or time, RFC 3339 or epoch)",
                    stream.name
                ))),
            },
            Ok(_) => dead_letters.push(refuse(format!(
                "stream '{}': an event must be a JSON object",
                stream.name
            ))),
            Err(error) => dead_letters.push(refuse(format!(
                "stream '{}': invalid JSON at column {}: {error}",
                stream.name,
                error.column()
            ))),
        }
    }
    Ok(())
}

/// The batch's rows as JSON objects named by the canonical columns, with
/// the event time in RFC 3339 (nulls left out).
fn batch_events(batch: &RecordBatch) -> anyhow::Result<Vec<Value>> {
    let mut writer = arrow::json::ArrayWriter::new(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    let mut events: Vec<Value> = serde_json::from_slice(&writer.into_inner())?;
    if let Some(times) = batch
        .column_by_name(column::TIMESTAMP)
        .and_then(|array| array.as_any().downcast_ref::<TimestampNanosecondArray>())
    {
        for (row, event) in events.iter_mut().enumerate() {
            if let (Some(object), false) = (event.as_object_mut(), times.is_null(row)) {
                object.insert(
                    column::TIMESTAMP.to_string(),
                    Value::String(format_timestamp(times.value(row))),
                );
            }
        }
    }
    Ok(events)
}

/// Rule and SLO ids a correlation may name.
pub fn known_rule_ids(engine: &Engine, slo_ids: impl Iterator<Item = String>) -> BTreeSet<String> {
    engine
        .rule_ids()
        .map(str::to_string)
        .chain(slo_ids)
        .collect()
}
