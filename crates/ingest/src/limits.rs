//! The domain of every canonical number.
//!
//! One event whose `latency_ms` is `1e300` used to move every latency
//! quantile of its model by hundreds of orders of magnitude and fire a
//! latency alert on it. A SIEM has to assume that some log lines are written
//! by someone who wants exactly that, so each canonical numeric column has a
//! domain, and an event with a value outside it is refused whole as an
//! `out_of_range` dead letter (naming the field, the value and the bound):
//! a row with one impossible number is not trusted for its other numbers
//! either. Downstream, sums, sketches and moments then only ever see values
//! of sane magnitude.
//!
//! | column | domain |
//! |---|---|
//! | `latency_ms`, `ttft_ms` | 0 ≤ x ≤ `latency_ms` limit (default one day) |
//! | `input_tokens`, `output_tokens` | 0 ≤ x ≤ `tokens` limit (default 1e8) |
//! | `confidence`, `margin`, each probability | 0 ≤ x ≤ 1 (1e-6 slack for float rounding) |
//! | `entropy` | 0 ≤ x ≤ 1,000 |
//! | each logit | \|x\| ≤ 1e30 (masked classes at -1e9 are fine) |
//! | `http_status` | 0 ≤ x ≤ 999 |
//! | `predicted_class` | x ≥ 0 |
//!
//! The two limits a deployment may need to move are set in the mapping file:
//!
//! ```yaml
//! limits:
//!   latency_ms: 3600000   # refuse latencies above an hour
//!   tokens: 2000000
//! ```

use crate::dead_letter::DeadLetterKind;
use crate::record::{LineError, Record, SlotValue};

/// Slack on the [0, 1] bounds: probabilities written as f32 round past 1.
const UNIT_SLACK: f64 = 1e-6;
/// Entropy in nats of a distribution over e^1000 classes: anything above is garbage.
const ENTROPY_MAX: f64 = 1_000.0;
/// Logits beyond this are not numbers a model produced.
const LOGIT_ABS_MAX: f64 = 1e30;

/// The configurable bounds of [`ValueLimits`]' table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValueLimits {
    /// Largest `latency_ms` and `ttft_ms` accepted (default 86,400,000: a day).
    pub latency_ms: f64,
    /// Largest `input_tokens` and `output_tokens` accepted (default 1e8).
    pub tokens: i64,
}

impl Default for ValueLimits {
    fn default() -> Self {
        ValueLimits {
            latency_ms: 86_400_000.0,
            tokens: 100_000_000,
        }
    }
}

/// Positions of the checked columns in the record (`usize::MAX`: not filled).
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckedColumns {
    pub(crate) latency_ms: usize,
    pub(crate) ttft_ms: usize,
    pub(crate) input_tokens: usize,
    pub(crate) output_tokens: usize,
    pub(crate) confidence: usize,
    pub(crate) margin: usize,
    pub(crate) entropy: usize,
    pub(crate) probabilities: usize,
    pub(crate) logits: usize,
    pub(crate) http_status: usize,
    pub(crate) predicted_class: usize,
}

impl ValueLimits {
    /// Refuses the record if one of its numbers lies outside its domain.
    pub(crate) fn check(&self, record: &Record, columns: &CheckedColumns) -> Result<(), LineError> {
        let float_in = |column: usize, name: &str, low: f64, high: f64| match record
            .slots
            .get(column)
            .map(|slot| slot.value)
        {
            Some(SlotValue::Float(value)) if !(low..=high).contains(&value) => {
                Err(out_of_range(name, value, low, high))
            }
            Some(SlotValue::Integer(value)) if !(low..=high).contains(&(value as f64)) => {
                Err(out_of_range(name, value as f64, low, high))
            }
            _ => Ok(()),
        };
        let list_in = |column: usize, name: &str, low: f64, high: f64| {
            if let Some(SlotValue::FloatList { start, end }) =
                record.slots.get(column).map(|slot| slot.value)
            {
                let values = record.floats_at(start, end);
                if let Some(value) = values.iter().find(|value| !(low..=high).contains(*value)) {
                    return Err(out_of_range(name, *value, low, high));
                }
            }
            Ok(())
        };
        let unit = (-UNIT_SLACK, 1.0 + UNIT_SLACK);
        // Lists first: confidence and margin are derived from them.
        list_in(columns.probabilities, "probabilities", unit.0, unit.1)?;
        list_in(columns.logits, "logits", -LOGIT_ABS_MAX, LOGIT_ABS_MAX)?;
        let tokens = self.tokens as f64;
        float_in(columns.latency_ms, "latency_ms", 0.0, self.latency_ms)?;
        float_in(columns.ttft_ms, "ttft_ms", 0.0, self.latency_ms)?;
        float_in(columns.input_tokens, "input_tokens", 0.0, tokens)?;
        float_in(columns.output_tokens, "output_tokens", 0.0, tokens)?;
        float_in(columns.confidence, "confidence", unit.0, unit.1)?;
        float_in(columns.margin, "margin", unit.0, unit.1)?;
        float_in(columns.entropy, "entropy", 0.0, ENTROPY_MAX)?;
        float_in(columns.http_status, "http_status", 0.0, 999.0)?;
        float_in(
            columns.predicted_class,
            "predicted_class",
            0.0,
            f64::from(i32::MAX),
        )?;
        Ok(())
    }
}

fn out_of_range(name: &str, value: f64, low: f64, high: f64) -> LineError {
    LineError::new(
        DeadLetterKind::OutOfRange,
        format!(
            "field {name}: {} is outside its domain [{low}, {high}]",
            short(value)
        ),
    )
}

/// `1e300` rather than three hundred digits.
fn short(value: f64) -> String {
    if value != 0.0 && !(1e-6..1e15).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        format!("{value}")
    }
}
