//! The quantile sketch shared by detection, rollups and SQL.
//!
//! One type everywhere means a p99 computed by a rule, read from a rollup or
//! asked for in SQL comes from the same DDSketch configuration, so the three
//! agree to within the same relative error and their sketches merge.

use sketches_ddsketch::{Config, DDSketch};

use crate::CoreError;

/// Relative error bound of every quantile: 1 %.
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.01;

/// Values kept as they are before a sketch is built. A DDSketch's bins span
/// its values' range (a few hundred u64s for latencies), so a summary of a
/// handful of values — most buckets of most entities — stays a short list.
const FEW_VALUES: usize = 24;

/// A mergeable quantile sketch (DDSketch, 1 % relative error), kept as a
/// plain list while it holds few values. Answers are the same either way:
/// a list is turned into a sketch before any quantile or encoding.
#[derive(Clone)]
pub struct QuantileSketch(Representation);

#[derive(Clone)]
enum Representation {
    Few(Vec<f64>),
    Sketch(Box<DDSketch>),
}

/// Bins a sketch may hold: 2,048 bins of 1 % cover 17.8 decades.
const MAX_BINS: u32 = 2048;
/// Magnitudes below this count as zero.
const SMALLEST_TRACKED: f64 = 1e-9;

/// Magnitudes are clamped to this before they reach the sketch: the largest
/// value whose bin lies within [`MAX_BINS`] of [`SMALLEST_TRACKED`]'s (about
/// 6e8; kept a little under). When a sketch's values span more bins than it
/// may hold, DDSketch collapses its *lowest* bins, so a single 1e300 would
/// fold every ordinary latency into one bin and wreck the median. Clamping
/// makes the extreme value collapse instead: it is counted, at 5e8, and
/// every other quantile keeps its 1 % bound. Canonical columns never get
/// there (ingest bounds latency to a day in ms and tokens to 1e8).
pub const LARGEST_TRACKED: f64 = 5e8;

fn empty_sketch() -> DDSketch {
    DDSketch::new(Config::new(
        QUANTILE_RELATIVE_ERROR,
        MAX_BINS,
        SMALLEST_TRACKED,
    ))
}

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileSketch")
            .field("count", &self.count())
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        QuantileSketch(Representation::Few(Vec::new()))
    }
}

impl QuantileSketch {
    /// Adds a value; non-finite values are ignored, magnitudes beyond
    /// [`LARGEST_TRACKED`] are counted at it.
    #[inline]
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let value = value.clamp(-LARGEST_TRACKED, LARGEST_TRACKED);
        match &mut self.0 {
            Representation::Few(values) if values.len() < FEW_VALUES => values.push(value),
            Representation::Few(_) => {
                self.promote().add(value);
            }
            Representation::Sketch(sketch) => sketch.add(value),
        }
    }

    /// Turns a list into a sketch (a no-op for a sketch) and returns it.
    fn promote(&mut self) -> &mut DDSketch {
        if let Representation::Few(values) = &self.0 {
            let mut sketch = empty_sketch();
            values.iter().for_each(|value| sketch.add(*value));
            self.0 = Representation::Sketch(Box::new(sketch));
        }
        match &mut self.0 {
            Representation::Sketch(sketch) => sketch,
            Representation::Few(_) => unreachable!("promoted above"),
        }
    }

    /// The sketch form, built on the fly for a list.
    fn as_sketch(&self) -> std::borrow::Cow<'_, DDSketch> {
        match &self.0 {
            Representation::Sketch(sketch) => std::borrow::Cow::Borrowed(sketch),
            Representation::Few(values) => {
                let mut sketch = empty_sketch();
                values.iter().for_each(|value| sketch.add(*value));
                std::borrow::Cow::Owned(sketch)
            }
        }
    }

    /// Folds another sketch in.
    pub fn merge(&mut self, other: &QuantileSketch) {
        match (&mut self.0, &other.0) {
            (Representation::Few(mine), Representation::Few(theirs))
                if mine.len() + theirs.len() <= FEW_VALUES =>
            {
                mine.extend_from_slice(theirs);
            }
            (_, Representation::Few(theirs)) => {
                let sketch = self.promote();
                theirs.iter().for_each(|value| sketch.add(*value));
            }
            (_, Representation::Sketch(theirs)) => {
                // Both sketches share one config, the only way merge can fail.
                let merged = self.promote().merge(theirs);
                debug_assert!(merged.is_ok());
            }
        }
    }

    /// The `q` quantile (NaN when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        self.as_sketch()
            .quantile(q)
            .ok()
            .flatten()
            .unwrap_or(f64::NAN)
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        match &self.0 {
            Representation::Few(values) => values.len() as u64,
            Representation::Sketch(sketch) => sketch.count() as u64,
        }
    }

    /// A compact binary form (postcard: bin counts as varints), for rollups.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs into a Vec cannot fail.
        postcard::to_allocvec(self.as_sketch().as_ref()).unwrap_or_default()
    }

    /// Reads [`QuantileSketch::to_bytes`] back.
    pub fn from_bytes(bytes: &[u8]) -> Result<QuantileSketch, CoreError> {
        postcard::from_bytes::<DDSketch>(bytes)
            .map(|sketch| QuantileSketch(Representation::Sketch(Box::new(sketch))))
            .map_err(|error| CoreError::InvalidSketch(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_merge_like_the_original() {
        let mut left = QuantileSketch::default();
        let mut right = QuantileSketch::default();
        for value in 1..=1000 {
            left.add(value as f64);
            right.add((value * 3) as f64);
        }
        let mut decoded = QuantileSketch::from_bytes(&left.to_bytes()).unwrap();
        assert_eq!(decoded.count(), 1000);
        assert_eq!(decoded.quantile(0.99), left.quantile(0.99));
        decoded.merge(&right);
        left.merge(&right);
        assert_eq!(decoded.quantile(0.5), left.quantile(0.5));
        assert!(QuantileSketch::from_bytes(b"\xff\xff").is_err());
    }

    #[test]
    fn issue_16_one_extreme_value_does_not_collapse_the_ordinary_ones() {
        let mut clean = QuantileSketch::default();
        let mut poisoned = QuantileSketch::default();
        for value in 1..=10_000 {
            let latency = 50.0 + (value % 200) as f64;
            clean.add(latency);
            poisoned.add(latency);
        }
        for extreme in [1e300, -1e300, 1e-300, f64::MAX, LARGEST_TRACKED * 0.99] {
            poisoned.add(extreme);
        }
        for q in [0.01, 0.25, 0.5, 0.9, 0.99] {
            let (expected, got) = (clean.quantile(q), poisoned.quantile(q));
            assert!(
                (got - expected).abs() <= 2.0 * QUANTILE_RELATIVE_ERROR * expected,
                "q {q}: {got} against {expected}"
            );
        }
        assert_eq!(
            poisoned.quantile(1.0),
            poisoned.quantile(1.0).min(LARGEST_TRACKED * 1.01)
        );
        // The whole tracked range fits without a collapse: the smallest and
        // largest tracked magnitudes stay within 1 %.
        let mut wide = QuantileSketch::default();
        for _ in 0..100 {
            wide.add(2e-9);
            wide.add(LARGEST_TRACKED);
        }
        assert!((wide.quantile(0.0) - 2e-9).abs() <= 2e-9 * QUANTILE_RELATIVE_ERROR);
        assert!(
            (wide.quantile(1.0) - LARGEST_TRACKED).abs()
                <= LARGEST_TRACKED * QUANTILE_RELATIVE_ERROR
        );
    }

    #[test]
    fn a_short_list_answers_exactly_like_the_sketch() {
        let values: Vec<f64> = (1..=60).map(|i| (i as f64).powf(1.7)).collect();
        for count in [1, 5, FEW_VALUES, FEW_VALUES + 1, 60] {
            let mut listed = QuantileSketch::default();
            let mut sketched = QuantileSketch(Representation::Sketch(Box::new(empty_sketch())));
            // Built in two halves merged, to cross the list/sketch boundary both ways.
            let mut second_half = QuantileSketch::default();
            for (index, value) in values[..count].iter().enumerate() {
                sketched.add(*value);
                if index % 2 == 0 {
                    listed.add(*value);
                } else {
                    second_half.add(*value);
                }
            }
            listed.merge(&second_half);
            assert_eq!(listed.count(), count as u64);
            for q in [0.0, 0.5, 0.95, 0.99, 1.0] {
                assert_eq!(
                    listed.quantile(q).to_bits(),
                    sketched.quantile(q).to_bits(),
                    "count {count} q {q}"
                );
            }
            let decoded = QuantileSketch::from_bytes(&listed.to_bytes()).unwrap();
            assert_eq!(
                decoded.quantile(0.9).to_bits(),
                sketched.quantile(0.9).to_bits()
            );
        }
        assert!(QuantileSketch::default().quantile(0.5).is_nan());
    }
}
