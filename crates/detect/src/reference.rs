//! Long reference windows: a group's own past, kept coarsely.
//!
//! A drift test against "the trailing day" or "the same hour yesterday", and
//! the input-shift explanation of a latency alert, compare the current window
//! with the same group's past. Keeping a day in the engine's fine buckets
//! would cost a sample per minute per group; this store keeps one bottom-k
//! sample per coarse bucket (a 24th of the span) in a ring per group, so a
//! day costs 25 samples. Samples are the same mergeable bottom-k as the fine
//! cells, so the reference does not depend on batching either.

use crate::summary::BottomSample;

/// Coarse buckets a reference span is cut into.
const BUCKETS_PER_SPAN: i64 = 24;

/// One column's coarse past per group.
pub(crate) struct ReferenceStore {
    /// Schema column sampled.
    pub(crate) column: usize,
    /// The list element sampled, for a list column.
    pub(crate) class: Option<usize>,
    /// Segment whose rows are sampled (0: every row the rule keeps).
    pub(crate) segment: usize,
    /// Coarse bucket width (ns), a multiple of the rule's bucket width.
    width: i64,
    /// Coarse buckets per group.
    ring: usize,
    /// How far back from a tick the reference can reach (ns).
    reach: i64,
    capacity: usize,
    cells: Vec<(i64, Option<Box<BottomSample>>)>,
}

impl ReferenceStore {
    /// A store able to answer references reaching `reach` before a tick,
    /// with `span` the length of the longest reference period.
    pub(crate) fn new(
        (column, class): (usize, Option<usize>),
        segment: usize,
        span: i64,
        reach: i64,
        bucket_width: i64,
        capacity: usize,
    ) -> ReferenceStore {
        let width = ((span / BUCKETS_PER_SPAN) / bucket_width).max(1) * bucket_width;
        let ring = (reach / width + 3) as usize;
        ReferenceStore {
            column,
            class,
            segment,
            width,
            ring,
            reach,
            capacity,
            cells: Vec::new(),
        }
    }

    /// Makes room for `groups` group ids.
    pub(crate) fn grow(&mut self, groups: usize) {
        if self.cells.len() < groups * self.ring {
            self.cells
                .resize_with(groups * self.ring, || (i64::MIN, None));
        }
    }

    /// Adds a value of `group` at `timestamp`.
    #[inline]
    pub(crate) fn add(&mut self, group: usize, timestamp: i64, rank: u64, value: f64) {
        let bucket = timestamp.div_euclid(self.width);
        let index = group * self.ring + bucket.rem_euclid(self.ring as i64) as usize;
        let cell = &mut self.cells[index];
        if cell.0 != bucket || cell.1.is_none() {
            *cell = (
                bucket,
                Some(Box::new(BottomSample::with_capacity(self.capacity))),
            );
        }
        if let Some(sample) = &mut cell.1 {
            sample.add(rank, value);
        }
    }

    /// The sample of `group` over `[from, to)`, in whole coarse buckets.
    pub(crate) fn sample(&self, group: usize, from: i64, to: i64) -> Vec<f64> {
        let (first, last) = (from.div_euclid(self.width), to.div_euclid(self.width));
        let mut merged = BottomSample::with_capacity(self.capacity);
        for (bucket, sample) in &self.cells[group * self.ring..(group + 1) * self.ring] {
            if let Some(sample) = sample
                .as_ref()
                .filter(|_| *bucket >= first && *bucket < last)
            {
                merged.merge(sample);
            }
        }
        merged.values()
    }

    /// Frees buckets no reference from `tick` on can reach; says whether the
    /// group still holds any.
    pub(crate) fn expire(&mut self, group: usize, tick: i64) -> bool {
        let oldest = (tick - self.reach).div_euclid(self.width);
        let mut holds = false;
        for cell in &mut self.cells[group * self.ring..(group + 1) * self.ring] {
            if cell.1.is_some() && cell.0 < oldest {
                *cell = (i64::MIN, None);
            }
            holds |= cell.1.is_some();
        }
        holds
    }

    /// Drops a group's past (its id is being reused).
    pub(crate) fn forget(&mut self, group: usize) {
        if let Some(cells) = self
            .cells
            .get_mut(group * self.ring..(group + 1) * self.ring)
        {
            cells.iter_mut().for_each(|cell| *cell = (i64::MIN, None));
        }
    }
}
