//! Mergeable per-bucket summaries: counts, exact moments, DDSketch and HyperLogLog.
//!
//! Every summary here is order-independent, so a window's value does not
//! depend on the order rows arrived in or on how they were batched. Sums are
//! kept as fixed-point integers (micro-units) for that reason: float addition
//! is not associative, integer addition is.

use cardinality_estimator::CardinalityEstimator;

/// Fixed-point scale for exact sums: values are rounded to 1e-6.
const FIXED_POINT_SCALE: f64 = 1e6;

/// Count, exact sum and sum of squares, min and max of a column.
#[derive(Debug, Clone)]
pub struct Moments {
    count: u64,
    sum: i128,
    sum_of_squares: i128,
    min: f64,
    max: f64,
}

impl Default for Moments {
    fn default() -> Self {
        Moments {
            count: 0,
            sum: 0,
            sum_of_squares: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Moments {
    /// Adds one value; non-finite values are ignored.
    #[inline]
    pub fn add(&mut self, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.count += 1;
        self.sum += (value * FIXED_POINT_SCALE).round() as i128;
        self.sum_of_squares += (value * value * FIXED_POINT_SCALE).round() as i128;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Folds another summary in.
    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.sum += other.sum;
        self.sum_of_squares += other.sum_of_squares;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Sum (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum as f64 / FIXED_POINT_SCALE
    }

    /// Mean (NaN when empty).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            return f64::NAN;
        }
        self.sum() / self.count as f64
    }

    /// Minimum (NaN when empty).
    pub fn min(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.min
        }
    }

    /// Maximum (NaN when empty).
    pub fn max(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.max
        }
    }

    /// Sample standard deviation (NaN under two values).
    pub fn stddev(&self) -> f64 {
        if self.count < 2 {
            return f64::NAN;
        }
        let n = self.count as f64;
        let sum = self.sum();
        let sum_of_squares = self.sum_of_squares as f64 / FIXED_POINT_SCALE;
        ((sum_of_squares - sum * sum / n) / (n - 1.0))
            .max(0.0)
            .sqrt()
    }
}

pub use inferwatch_core::QuantileSketch;

/// A distinct-count sketch (HyperLogLog++, exact for small sets).
#[derive(Debug, Clone, Default)]
pub struct DistinctSketch(CardinalityEstimator<u64>);

impl DistinctSketch {
    /// Adds a value by its 64-bit hash.
    #[inline]
    pub fn add_hash(&mut self, hash: u64) {
        self.0.insert_hash(hash);
    }

    /// Folds another sketch in.
    pub fn merge(&mut self, other: &DistinctSketch) {
        self.0.merge(&other.0);
    }

    /// Estimated distinct values.
    pub fn estimate(&self) -> f64 {
        self.0.estimate() as f64
    }
}

/// Which summaries a segment keeps, by column index.
#[derive(Debug, Clone, Default)]
pub struct SummaryLayout {
    /// Columns with moments.
    pub moment_columns: Vec<usize>,
    /// Columns with quantile sketches.
    pub sketch_columns: Vec<usize>,
    /// Columns with distinct sketches.
    pub distinct_columns: Vec<usize>,
}

/// Everything one segment of one group keeps for one time bucket.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Rows.
    pub count: u64,
    /// Rows with status error.
    pub errors: u64,
    /// One per `SummaryLayout::moment_columns`.
    pub moments: Vec<Moments>,
    /// One per `SummaryLayout::sketch_columns`.
    pub sketches: Vec<QuantileSketch>,
    /// One per `SummaryLayout::distinct_columns`.
    pub distinct: Vec<DistinctSketch>,
}

impl Summary {
    /// An empty summary shaped by `layout`.
    pub fn empty(layout: &SummaryLayout) -> Self {
        Summary {
            count: 0,
            errors: 0,
            moments: vec![Moments::default(); layout.moment_columns.len()],
            sketches: vec![QuantileSketch::default(); layout.sketch_columns.len()],
            distinct: vec![DistinctSketch::default(); layout.distinct_columns.len()],
        }
    }

    /// Folds in only the row and error counts (cheap).
    pub fn merge_counts(&mut self, other: &Summary) {
        self.count += other.count;
        self.errors += other.errors;
    }

    /// Folds in the moments and sketches (the costly part of a merge).
    pub fn merge_distributions(&mut self, other: &Summary) {
        for (mine, theirs) in self.moments.iter_mut().zip(&other.moments) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.sketches.iter_mut().zip(&other.sketches) {
            mine.merge(theirs);
        }
        for (mine, theirs) in self.distinct.iter_mut().zip(&other.distinct) {
            mine.merge(theirs);
        }
    }

    /// Empties the summary in place (its shape stays that of its layout).
    pub fn clear(&mut self) {
        if self.count == 0 {
            return;
        }
        self.count = 0;
        self.errors = 0;
        self.moments
            .iter_mut()
            .for_each(|m| *m = Moments::default());
        self.sketches
            .iter_mut()
            .for_each(|s| *s = QuantileSketch::default());
        self.distinct
            .iter_mut()
            .for_each(|d| *d = DistinctSketch::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moments_are_exact_and_order_independent() {
        let values = [0.1, 0.2, 0.3, 1e6, 3.75, 42.0];
        let mut forward = Moments::default();
        values.iter().for_each(|v| forward.add(*v));
        let mut backward = Moments::default();
        values.iter().rev().for_each(|v| backward.add(*v));
        assert_eq!(forward.sum().to_bits(), backward.sum().to_bits());
        assert_eq!(forward.stddev().to_bits(), backward.stddev().to_bits());
        assert!((forward.mean() - values.iter().sum::<f64>() / 6.0).abs() < 1e-9);
        assert_eq!(forward.min(), 0.1);
        assert_eq!(forward.max(), 1e6);
        assert!(Moments::default().mean().is_nan());
    }

    #[test]
    fn sketch_quantiles_are_within_one_percent() {
        let mut sketch = QuantileSketch::default();
        let mut values: Vec<f64> = (1..=10_000).map(|i| (i as f64).powf(1.3)).collect();
        values.iter().for_each(|v| sketch.add(*v));
        values.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.95, 0.99, 0.999] {
            let exact = values[((q * values.len() as f64).ceil() as usize).saturating_sub(1)];
            let estimate = sketch.quantile(q);
            assert!(
                (estimate - exact).abs() / exact <= 0.011,
                "q={q} exact={exact} estimate={estimate}"
            );
        }
    }

    #[test]
    fn distinct_sketch_estimates_and_merges() {
        let mut left = DistinctSketch::default();
        let mut right = DistinctSketch::default();
        for i in 0..5_000u64 {
            left.add_hash(xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()));
            right.add_hash(xxhash_rust::xxh3::xxh3_64(&(i + 2_500).to_le_bytes()));
        }
        left.merge(&right);
        let estimate = left.estimate();
        assert!((estimate - 7_500.0).abs() / 7_500.0 < 0.05, "{estimate}");
    }
}
