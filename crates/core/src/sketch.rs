//! The quantile sketch shared by detection, rollups and SQL.
//!
//! One type everywhere means a p99 computed by a rule, read from a rollup or
//! asked for in SQL comes from the same DDSketch configuration, so the three
//! agree to within the same relative error and their sketches merge.

use sketches_ddsketch::{Config, DDSketch};

use crate::CoreError;

/// Relative error bound of every quantile: 1 %.
pub const QUANTILE_RELATIVE_ERROR: f64 = 0.01;

/// A mergeable quantile sketch (DDSketch, α = [`QUANTILE_RELATIVE_ERROR`]).
#[derive(Clone)]
pub struct QuantileSketch(DDSketch);

impl std::fmt::Debug for QuantileSketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantileSketch")
            .field("count", &self.0.count())
            .finish()
    }
}

impl Default for QuantileSketch {
    fn default() -> Self {
        QuantileSketch(DDSketch::new(Config::new(
            QUANTILE_RELATIVE_ERROR,
            2048,
            1e-9,
        )))
    }
}

impl QuantileSketch {
    /// Adds a value; non-finite values are ignored.
    #[inline]
    pub fn add(&mut self, value: f64) {
        if value.is_finite() {
            self.0.add(value);
        }
    }

    /// Folds another sketch in.
    pub fn merge(&mut self, other: &QuantileSketch) {
        // Both sketches share one config, the only way merge can fail.
        let merged = self.0.merge(&other.0);
        debug_assert!(merged.is_ok());
    }

    /// The `q` quantile (NaN when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        self.0.quantile(q).ok().flatten().unwrap_or(f64::NAN)
    }

    /// Number of values added.
    pub fn count(&self) -> u64 {
        self.0.count() as u64
    }

    /// A compact binary form (postcard: bin counts as varints), for rollups.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain structs into a Vec cannot fail.
        postcard::to_allocvec(&self.0).unwrap_or_default()
    }

    /// Reads [`QuantileSketch::to_bytes`] back.
    pub fn from_bytes(bytes: &[u8]) -> Result<QuantileSketch, CoreError> {
        postcard::from_bytes(bytes)
            .map(QuantileSketch)
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
}
