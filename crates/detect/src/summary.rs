//! Mergeable per-bucket summaries: counts, exact moments, DDSketch and HyperLogLog.
//!
//! Every summary here is order-independent, so a window's value does not
//! depend on the order rows arrived in or on how they were batched. Sums are
//! kept as fixed-point integers (micro-units) for that reason: float addition
//! is not associative, integer addition is.

use cardinality_estimator::CardinalityEstimator;

/// Fixed-point scale for exact sums: values are rounded to 1e-6.
const FIXED_POINT_SCALE: f64 = 1e6;

/// `scaled.round() as i128`, without its two library calls on the hot path.
///
/// Both were 4 % of `detect`'s time: x86-64's baseline has no rounding
/// instruction (`round` is a libm call) and f64 to i128 is a soft-float
/// routine. Below 2^63 the value goes through i64 instead, and rounds half
/// away from zero by its fraction, which `x - trunc(x)` gives exactly.
#[inline]
fn fixed_point(scaled: f64) -> i128 {
    const I64_BOUND: f64 = 9.2e18;
    if scaled.abs() < I64_BOUND {
        let truncated = scaled as i64;
        let fraction = scaled - truncated as f64;
        let rounded = if fraction >= 0.5 {
            truncated + 1
        } else if fraction <= -0.5 {
            truncated - 1
        } else {
            truncated
        };
        i128::from(rounded)
    } else {
        scaled.round() as i128
    }
}

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
        // `as` saturates, and so do the sums: an extreme value pins them
        // at the bound instead of wrapping (or panicking in debug builds).
        self.sum = self
            .sum
            .saturating_add(fixed_point(value * FIXED_POINT_SCALE));
        self.sum_of_squares = self
            .sum_of_squares
            .saturating_add(fixed_point(value * value * FIXED_POINT_SCALE));
        self.min = self.min.min(value);
        self.max = self.max.max(value);
    }

    /// Folds another summary in.
    pub fn merge(&mut self, other: &Moments) {
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.sum_of_squares = self.sum_of_squares.saturating_add(other.sum_of_squares);
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

/// A uniform sample of at most `capacity` values that merges exactly: each
/// value is ranked by a hash of (event time, value) and the sample keeps the
/// `capacity` lowest ranks ("bottom-k"). The bottom-k of a union is the
/// bottom-k of the parts' bottom-ks, so a window's sample is the same whatever
/// the batching or arrival order, and the sample of "every other source" is
/// just the merge of theirs. Drift tests run on these samples.
#[derive(Debug, Clone, Default)]
pub struct BottomSample {
    capacity: usize,
    /// (rank, value bits) pairs; unordered until `select`.
    entries: Vec<(u64, u64)>,
    /// Largest rank kept once full (u64::MAX while not full).
    admit_below: u64,
}

impl BottomSample {
    /// An empty sample that keeps at most `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        BottomSample {
            capacity,
            entries: Vec::new(),
            admit_below: u64::MAX,
        }
    }

    /// Offers a value with its rank.
    #[inline]
    pub fn add(&mut self, rank: u64, value: f64) {
        if rank > self.admit_below || !value.is_finite() {
            return;
        }
        self.entries.push((rank, value.to_bits()));
        // Amortised: trim to `capacity` once the buffer is twice as large.
        if self.entries.len() >= self.capacity.saturating_mul(2).max(16) {
            self.trim();
        }
    }

    /// Folds another sample in.
    pub fn merge(&mut self, other: &BottomSample) {
        for &(rank, bits) in &other.entries {
            if rank <= self.admit_below {
                self.entries.push((rank, bits));
            }
        }
        // Amortised like `add`: trimming on every merge past capacity made a
        // family of thousands of members (a rest_of per client) quadratic.
        if self.entries.len() >= self.capacity.saturating_mul(2).max(16) {
            self.trim();
        }
    }

    /// Keeps only the `capacity` lowest ranks.
    fn trim(&mut self) {
        if self.entries.len() > self.capacity && self.capacity > 0 {
            self.entries.select_nth_unstable(self.capacity - 1);
            self.entries.truncate(self.capacity);
            self.admit_below = self.entries.iter().map(|e| e.0).max().unwrap_or(u64::MAX);
        } else if self.capacity == 0 {
            self.entries.clear();
            self.admit_below = 0;
        }
    }

    /// The sampled values, sorted ascending.
    pub fn values(&mut self) -> Vec<f64> {
        self.trim();
        let mut values: Vec<f64> = self.entries.iter().map(|e| f64::from_bits(e.1)).collect();
        values.sort_by(f64::total_cmp);
        values
    }

    /// The kept (rank, value bits) pairs, sorted.
    pub fn ranked(&mut self) -> Vec<(u64, u64)> {
        self.trim();
        let mut entries = self.entries.clone();
        entries.sort_unstable();
        entries
    }

    /// The `capacity` lowest-ranked values of `whole` once the multiset
    /// `part` is taken out (both sorted), as sorted values.
    pub fn bottom_excluding(
        whole: &[(u64, u64)],
        part: &[(u64, u64)],
        capacity: usize,
    ) -> Vec<f64> {
        let mut kept = Vec::with_capacity(capacity.min(whole.len()));
        let mut part_index = 0;
        for entry in whole {
            if kept.len() == capacity {
                break;
            }
            while part_index < part.len() && part[part_index] < *entry {
                part_index += 1;
            }
            if part_index < part.len() && part[part_index] == *entry {
                part_index += 1;
                continue;
            }
            kept.push(f64::from_bits(entry.1));
        }
        kept.sort_by(f64::total_cmp);
        kept
    }

    /// Values held (at most twice the capacity before a trim).
    pub fn len(&self) -> usize {
        self.entries.len().min(self.capacity)
    }

    /// True when nothing was sampled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.admit_below = u64::MAX;
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
    /// Columns with bottom-k samples (drift tests).
    pub sample_columns: Vec<usize>,
    /// For each sample column, the list element sampled (per-class drift).
    pub sample_classes: Vec<Option<usize>>,
    /// Capacity of each sample.
    pub sample_capacity: usize,
}

/// The parts of a [`Summary`] one reader needs: a bit per moment, sketch
/// and distinct position (positions from 64 on are always merged).
///
/// Rules that share a table share its layout, the union of what they read.
/// A reader merging a window folds in only its own parts: a full merge made
/// every per-client rule pay for the other rules' sketches and samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    pub moments: u64,
    pub sketches: u64,
    pub distinct: u64,
}

impl Wanted {
    /// Everything (what a full merge folds in, samples aside).
    pub const ALL: Wanted = Wanted {
        moments: u64::MAX,
        sketches: u64::MAX,
        distinct: u64::MAX,
    };

    #[inline]
    fn has(mask: u64, position: usize) -> bool {
        position >= 64 || mask >> position & 1 == 1
    }

    /// Marks `position` in `mask` as wanted.
    pub fn mark(mask: &mut u64, position: usize) {
        if position < 64 {
            *mask |= 1 << position;
        }
    }
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
    /// One per `SummaryLayout::sample_columns`.
    pub samples: Vec<BottomSample>,
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
            samples: vec![
                BottomSample::with_capacity(layout.sample_capacity);
                layout.sample_columns.len()
            ],
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
        for (mine, theirs) in self.samples.iter_mut().zip(&other.samples) {
            mine.merge(theirs);
        }
    }

    /// Folds in the moments, sketches and distinct sketches `wanted` names.
    pub fn merge_wanted(&mut self, other: &Summary, wanted: &Wanted) {
        for (position, (mine, theirs)) in self.moments.iter_mut().zip(&other.moments).enumerate() {
            if Wanted::has(wanted.moments, position) {
                mine.merge(theirs);
            }
        }
        for (position, (mine, theirs)) in self.sketches.iter_mut().zip(&other.sketches).enumerate()
        {
            if Wanted::has(wanted.sketches, position) {
                mine.merge(theirs);
            }
        }
        for (position, (mine, theirs)) in self.distinct.iter_mut().zip(&other.distinct).enumerate()
        {
            if Wanted::has(wanted.distinct, position) {
                mine.merge(theirs);
            }
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
        self.samples.iter_mut().for_each(BottomSample::clear);
    }
}

/// What one ring cell holds for its bucket.
///
/// Most keys of a high-cardinality rule (one per client, say) see a handful
/// of rows per bucket. A full [`Summary`] costs one allocation per summary
/// kind plus the sketches' own, several hundred bytes, so such a bucket keeps
/// its rows instead: a count header and one tagged entry per summarised value,
/// in one exactly sized allocation. An entry is a tag byte, then a hash (8
/// bytes), a value, or a sample's rank (8 bytes) and value; a value that is an
/// integer (tokens, a class, a status) is a zigzag varint of 1 to 3 bytes,
/// any other value its 8 bytes. Once the entries
/// outgrow what a summary would cost, they are replayed into one. Every
/// summary kind is order-independent, and adding a value is the same as
/// merging a summary of it, so both forms give bit-identical answers.
#[derive(Debug, Clone)]
pub enum BucketData {
    /// `[count u16][errors u16]` then entries; empty when the cell is unused.
    Rows(Box<[u8]>),
    /// The merged form, for busy buckets.
    Summary(Box<Summary>),
}

impl Default for BucketData {
    fn default() -> Self {
        BucketData::Rows(Box::default())
    }
}

/// `[count u16][errors u16]`: a bucket past 65,535 rows is a summary anyway
/// (it would be one long before, unless it logs no values), and a million
/// small logs each save 4 bytes over u32 counts.
const ROWS_HEADER: usize = 4;
const MAX_LOGGED_ROWS: u16 = u16::MAX;

/// The row and error counts in a row log's header.
fn header_counts(bytes: &[u8]) -> (u16, u16) {
    let count = u16::from_le_bytes(bytes[0..2].try_into().expect("header"));
    let errors = u16::from_le_bytes(bytes[2..4].try_into().expect("header"));
    (count, errors)
}
const TAG_MOMENT: u8 = 0;
const TAG_SKETCH: u8 = 1 << 6;
const TAG_DISTINCT: u8 = 2 << 6;
const TAG_SAMPLE: u8 = 3 << 6;
const TAG_KIND: u8 = 3 << 6;
/// The entry's value is a varint-coded integer.
const TAG_INTEGER: u8 = 1 << 5;
/// Positions must fit the tag's low five bits.
const MAX_LOGGED_POSITIONS: usize = 1 << 5;
const TAG_POSITION: u8 = (MAX_LOGGED_POSITIONS - 1) as u8;
/// The longest entry: a tag, a rank and an 8-byte value.
const MAX_ENTRY_BYTES: usize = 17;
/// Integers up to 2^53 are exact in an f64.
const EXACT_INTEGER: f64 = 9_007_199_254_740_992.0;

/// One value for a row log.
#[derive(Clone, Copy)]
enum Logged {
    Value(f64),
    Hash(u64),
    Ranked(u64, f64),
}

/// `value` as a zigzag-coded integer, when it is one (not -0.0: its sign
/// would be lost).
fn as_integer(value: f64) -> Option<u64> {
    let integral = value.fract() == 0.0 && value.abs() <= EXACT_INTEGER;
    if !integral || (value == 0.0 && value.is_sign_negative()) {
        return None;
    }
    let integer = value as i64;
    Some(((integer << 1) ^ (integer >> 63)) as u64)
}

/// One row-log entry, built on the stack before the log grows by its length.
struct Entry {
    bytes: [u8; MAX_ENTRY_BYTES],
    len: usize,
}

impl Entry {
    fn new(tag: u8) -> Entry {
        let mut entry = Entry {
            bytes: [0; MAX_ENTRY_BYTES],
            len: 0,
        };
        entry.push(tag);
        entry
    }

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.bytes[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn push_varint(out: &mut Entry, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut value = 0u64;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
        shift += 7;
    }
}

fn read_word(bytes: &[u8], at: &mut usize) -> u64 {
    let word = u64::from_le_bytes(bytes[*at..*at + 8].try_into().expect("entry"));
    *at += 8;
    word
}

/// Appends `value`: a varint when it is an integer (flagged in the entry's tag), else its bits.
fn push_value(out: &mut Entry, value: f64) {
    match as_integer(value) {
        Some(zigzag) => {
            out.bytes[0] |= TAG_INTEGER;
            push_varint(out, zigzag);
        }
        None => out.extend_from_slice(&value.to_bits().to_le_bytes()),
    }
}

fn read_value(bytes: &[u8], at: &mut usize, tag: u8) -> f64 {
    if tag & TAG_INTEGER != 0 {
        let zigzag = read_varint(bytes, at);
        ((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64)) as f64
    } else {
        f64::from_bits(read_word(bytes, at))
    }
}

/// Whether a row log already holds `hash` for the distinct sketch at `position`.
fn logs_hash(bytes: &[u8], position: usize, hash: u64) -> bool {
    let mut at = ROWS_HEADER;
    while at < bytes.len() {
        if let (TAG_DISTINCT, logged, Logged::Hash(other)) = read_entry(bytes, &mut at) {
            if logged == position && other == hash {
                return true;
            }
        }
    }
    false
}

/// The next entry of a row log at `at`: its kind, position and value.
fn read_entry(bytes: &[u8], at: &mut usize) -> (u8, usize, Logged) {
    let tag = bytes[*at];
    *at += 1;
    let kind = tag & TAG_KIND;
    let position = usize::from(tag & TAG_POSITION);
    let logged = match kind {
        TAG_DISTINCT => Logged::Hash(read_word(bytes, at)),
        TAG_SAMPLE => {
            let rank = read_word(bytes, at);
            Logged::Ranked(rank, read_value(bytes, at, tag))
        }
        _ => Logged::Value(read_value(bytes, at, tag)),
    };
    (kind, position, logged)
}

impl SummaryLayout {
    /// Bytes of row entries past which a bucket becomes a [`Summary`]: about
    /// what the summary itself would take. None when rows are never kept.
    fn rows_limit(&self) -> Option<usize> {
        let widest = self
            .moment_columns
            .len()
            .max(self.sketch_columns.len())
            .max(self.distinct_columns.len())
            .max(self.sample_columns.len());
        if widest > MAX_LOGGED_POSITIONS {
            return None;
        }
        let summary_bytes = std::mem::size_of::<Summary>()
            + self.moment_columns.len() * (std::mem::size_of::<Moments>() + 16)
            + self.sketch_columns.len() * (std::mem::size_of::<QuantileSketch>() + 64)
            + self.distinct_columns.len() * (std::mem::size_of::<DistinctSketch>() + 32)
            + self.sample_columns.len() * (std::mem::size_of::<BottomSample>() + 128);
        Some(summary_bytes.max(64))
    }
}

impl BucketData {
    /// True when the cell holds no rows.
    pub fn is_empty(&self) -> bool {
        match self {
            BucketData::Rows(bytes) => bytes.is_empty(),
            BucketData::Summary(summary) => summary.count == 0,
        }
    }

    /// Empties the cell for a new bucket, keeping a summary's allocations.
    pub fn clear(&mut self) {
        match self {
            BucketData::Rows(bytes) => *bytes = Box::default(),
            BucketData::Summary(summary) => summary.clear(),
        }
    }

    /// Counts one row.
    #[inline]
    pub fn add_row(&mut self, layout: &SummaryLayout, is_error: bool) {
        if let BucketData::Rows(bytes) = self {
            if bytes.is_empty() {
                *bytes = vec![0u8; ROWS_HEADER].into_boxed_slice();
            }
            let (count, errors) = header_counts(bytes);
            if count < MAX_LOGGED_ROWS {
                let errors = errors + u16::from(is_error);
                bytes[0..2].copy_from_slice(&(count + 1).to_le_bytes());
                bytes[2..4].copy_from_slice(&errors.to_le_bytes());
                return;
            }
            // The header's count is full (a count-only bucket never outgrows
            // its rows limit): move to a summary's u64 counts.
            let mut summary = Box::new(Summary::empty(layout));
            Self::replay(bytes, &mut summary, true);
            *self = BucketData::Summary(summary);
        }
        if let BucketData::Summary(summary) = self {
            summary.count += 1;
            summary.errors += u64::from(is_error);
        }
    }

    /// Adds a value to the moments at `position`.
    #[inline]
    pub fn add_moment(&mut self, layout: &SummaryLayout, position: usize, value: f64) {
        match self {
            BucketData::Summary(summary) => summary.moments[position].add(value),
            BucketData::Rows(_) => self.log(layout, TAG_MOMENT, position, Logged::Value(value)),
        }
    }

    /// Adds a value to the quantile sketch at `position`.
    #[inline]
    pub fn add_sketch(&mut self, layout: &SummaryLayout, position: usize, value: f64) {
        match self {
            BucketData::Summary(summary) => summary.sketches[position].add(value),
            BucketData::Rows(_) => self.log(layout, TAG_SKETCH, position, Logged::Value(value)),
        }
    }

    /// Adds a hash to the distinct sketch at `position`.
    #[inline]
    pub fn add_distinct(&mut self, layout: &SummaryLayout, position: usize, hash: u64) {
        match self {
            BucketData::Summary(summary) => summary.distinct[position].add_hash(hash),
            BucketData::Rows(bytes) => {
                // A distinct sketch ignores a hash it holds, so a repeat need
                // not be logged: a client's network, say, is one value over
                // most of its rows.
                if !logs_hash(bytes, position, hash) {
                    self.log(layout, TAG_DISTINCT, position, Logged::Hash(hash));
                }
            }
        }
    }

    /// Offers a ranked value to the sample at `position`.
    #[inline]
    pub fn add_sample(&mut self, layout: &SummaryLayout, position: usize, rank: u64, value: f64) {
        match self {
            BucketData::Summary(summary) => summary.samples[position].add(rank, value),
            BucketData::Rows(_) => {
                self.log(layout, TAG_SAMPLE, position, Logged::Ranked(rank, value))
            }
        }
    }

    fn log(&mut self, layout: &SummaryLayout, kind: u8, position: usize, logged: Logged) {
        let BucketData::Rows(bytes) = self else {
            return;
        };
        debug_assert!(
            bytes.len() >= ROWS_HEADER,
            "a row is counted before its values"
        );
        // The entry is built apart and the log grown by exactly its length:
        // a pushed Vec doubles its capacity, and an allocator that shrinks
        // in place would keep that slack in each of a million small logs.
        let mut entry = Entry::new(kind | position as u8);
        match logged {
            Logged::Hash(hash) => entry.extend_from_slice(&hash.to_le_bytes()),
            Logged::Value(value) => push_value(&mut entry, value),
            Logged::Ranked(rank, value) => {
                entry.extend_from_slice(&rank.to_le_bytes());
                push_value(&mut entry, value);
            }
        }
        let mut grown = std::mem::take(bytes).into_vec();
        grown.reserve_exact(entry.len);
        grown.extend_from_slice(entry.as_slice());
        let within_limit = layout
            .rows_limit()
            .is_some_and(|limit| grown.len() <= limit);
        if within_limit {
            // Exactly sized: these buckets are many and small, so no spare capacity.
            *bytes = grown.into_boxed_slice();
            return;
        }
        let mut summary = Box::new(Summary::empty(layout));
        Self::replay(&grown, &mut summary, true);
        *self = BucketData::Summary(summary);
    }

    /// Folds logged rows into `target`: counts when `counts`, values always.
    fn replay(bytes: &[u8], target: &mut Summary, counts: bool) {
        if bytes.is_empty() {
            return;
        }
        if counts {
            let (count, errors) = header_counts(bytes);
            target.count += u64::from(count);
            target.errors += u64::from(errors);
        }
        let mut at = ROWS_HEADER;
        while at < bytes.len() {
            match read_entry(bytes, &mut at) {
                (TAG_MOMENT, position, Logged::Value(value)) => target.moments[position].add(value),
                (TAG_SKETCH, position, Logged::Value(value)) => {
                    target.sketches[position].add(value)
                }
                (_, position, Logged::Hash(hash)) => target.distinct[position].add_hash(hash),
                (_, position, Logged::Ranked(rank, value)) => {
                    target.samples[position].add(rank, value)
                }
                _ => {}
            }
        }
    }

    /// Folds the parts `wanted` names into `target` (not the counts, not the samples).
    pub fn merge_wanted_into(&self, target: &mut Summary, wanted: &Wanted) {
        match self {
            BucketData::Rows(bytes) => {
                let mut at = ROWS_HEADER;
                while at < bytes.len() {
                    match read_entry(bytes, &mut at) {
                        (TAG_MOMENT, position, Logged::Value(value))
                            if Wanted::has(wanted.moments, position) =>
                        {
                            target.moments[position].add(value)
                        }
                        (TAG_SKETCH, position, Logged::Value(value))
                            if Wanted::has(wanted.sketches, position) =>
                        {
                            target.sketches[position].add(value)
                        }
                        (_, position, Logged::Hash(hash))
                            if Wanted::has(wanted.distinct, position) =>
                        {
                            target.distinct[position].add_hash(hash)
                        }
                        _ => {}
                    }
                }
            }
            BucketData::Summary(summary) => target.merge_wanted(summary, wanted),
        }
    }

    /// Folds only the row and error counts into `target` (cheap).
    pub fn merge_counts_into(&self, target: &mut Summary) {
        match self {
            BucketData::Rows(bytes) if bytes.len() >= ROWS_HEADER => {
                let (count, errors) = header_counts(bytes);
                target.count += u64::from(count);
                target.errors += u64::from(errors);
            }
            BucketData::Rows(_) => {}
            BucketData::Summary(summary) => target.merge_counts(summary),
        }
    }

    /// Folds the moments, sketches and samples into `target`.
    pub fn merge_distributions_into(&self, target: &mut Summary) {
        match self {
            BucketData::Rows(bytes) => Self::replay(bytes, target, false),
            BucketData::Summary(summary) => target.merge_distributions(summary),
        }
    }

    /// Folds the sample at `position` into `target`.
    pub fn merge_sample_into(&self, position: usize, target: &mut BottomSample) {
        match self {
            BucketData::Summary(summary) => target.merge(&summary.samples[position]),
            BucketData::Rows(bytes) => {
                let mut at = ROWS_HEADER;
                while at < bytes.len() {
                    if let (_, logged, Logged::Ranked(rank, value)) = read_entry(bytes, &mut at) {
                        if logged == position {
                            target.add(rank, value);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_rounds_exactly_as_round_then_cast() {
        let mut values = vec![
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            -1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            -0.49999999999999994,
            4503599627370495.5,
            -4503599627370495.5,
            4503599627370497.0,
            9.2e18,
            -9.2e18,
            9.3e18,
            1e30,
            -1e30,
            f64::MAX,
            f64::MIN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-300,
            123456.7890125,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let value = f64::from_bits(state);
            if value.is_finite() {
                values.push(value);
                values.push((state % 2_000_000) as f64 / 4.0 - 250_000.0);
            }
        }
        for value in values {
            assert_eq!(fixed_point(value), value.round() as i128, "{value:e}");
        }
    }

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
    fn bottom_sample_is_the_same_whatever_the_split() {
        let rank = |i: u64| xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        let mut whole = BottomSample::with_capacity(100);
        (0..10_000u64).for_each(|i| whole.add(rank(i), i as f64));
        let mut parts: Vec<BottomSample> =
            (0..7).map(|_| BottomSample::with_capacity(100)).collect();
        (0..10_000u64)
            .rev()
            .for_each(|i| parts[(i % 7) as usize].add(rank(i), i as f64));
        let mut merged = BottomSample::with_capacity(100);
        parts.iter().for_each(|part| merged.merge(part));
        let values = whole.values();
        assert_eq!(values.len(), 100);
        assert_eq!(values, merged.values());
        // A uniform sample of 0..10,000 has its mean near 5,000.
        let mean = values.iter().sum::<f64>() / 100.0;
        assert!((mean - 5_000.0).abs() < 1_000.0, "{mean}");
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

    #[test]
    fn integers_are_logged_in_few_bytes_and_read_back_exactly() {
        let layout = SummaryLayout {
            moment_columns: vec![0],
            sample_columns: vec![1],
            sample_classes: vec![None],
            sample_capacity: 64,
            ..SummaryLayout::default()
        };
        let values = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            127.0,
            128.0,
            -1e15,
            EXACT_INTEGER,
            EXACT_INTEGER * 4.0,
            0.5,
            1e300,
            f64::INFINITY,
        ];
        let mut rows = BucketData::default();
        let mut summary = BucketData::Summary(Box::new(Summary::empty(&layout)));
        for (index, value) in values.iter().enumerate() {
            for data in [&mut rows, &mut summary] {
                data.add_row(&layout, false);
                data.add_moment(&layout, 0, *value);
                data.add_sample(&layout, 0, index as u64, *value);
            }
        }
        let read = |data: &BucketData| {
            let mut merged = Summary::empty(&layout);
            data.merge_counts_into(&mut merged);
            data.merge_distributions_into(&mut merged);
            let sample: Vec<u64> = merged.samples[0]
                .values()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let moments = &merged.moments[0];
            (
                moments.sum().to_bits(),
                moments.min().to_bits(),
                moments.max().to_bits(),
                sample,
            )
        };
        assert_eq!(read(&rows), read(&summary));
        // A small integer costs a tag and one byte.
        let mut one = BucketData::default();
        one.add_row(&layout, false);
        one.add_moment(&layout, 0, 42.0);
        let BucketData::Rows(bytes) = &one else {
            panic!("one row stays a log");
        };
        assert_eq!(bytes.len(), ROWS_HEADER + 2);
    }

    #[test]
    fn a_count_only_bucket_keeps_exact_counts_past_its_header() {
        let layout = SummaryLayout::default();
        let mut data = BucketData::default();
        let rows = u64::from(MAX_LOGGED_ROWS) + 10;
        for row in 0..rows {
            data.add_row(&layout, row % 7 == 0);
        }
        assert!(matches!(data, BucketData::Summary(_)));
        let mut total = Summary::empty(&layout);
        data.merge_counts_into(&mut total);
        assert_eq!(total.count, rows);
        assert_eq!(total.errors, rows.div_ceil(7));
    }

    #[test]
    fn logged_rows_and_summaries_answer_alike() {
        let layout = SummaryLayout {
            moment_columns: vec![0, 1],
            sketch_columns: vec![2],
            distinct_columns: vec![3],
            sample_columns: vec![4],
            sample_classes: vec![None],
            sample_capacity: 8,
        };
        let feed = |data: &mut BucketData, rows: std::ops::Range<u64>| {
            for i in rows {
                data.add_row(&layout, i % 3 == 0);
                data.add_moment(&layout, 0, i as f64 * 0.5);
                data.add_moment(&layout, 1, -(i as f64));
                data.add_sketch(&layout, 0, (i * i) as f64);
                data.add_distinct(
                    &layout,
                    0,
                    xxhash_rust::xxh3::xxh3_64(&(i % 5).to_le_bytes()),
                );
                data.add_sample(
                    &layout,
                    0,
                    xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()),
                    i as f64,
                );
            }
        };
        let answers = |data: &BucketData| {
            let mut merged = Summary::empty(&layout);
            data.merge_counts_into(&mut merged);
            data.merge_distributions_into(&mut merged);
            let mut sample = BottomSample::with_capacity(8);
            data.merge_sample_into(0, &mut sample);
            (
                merged.count,
                merged.errors,
                merged.moments[0].mean().to_bits(),
                merged.moments[1].stddev().to_bits(),
                merged.sketches[0].quantile(0.9).to_bits(),
                merged.distinct[0].estimate().to_bits(),
                merged.samples[0].values(),
                sample.values(),
            )
        };
        let mut few = BucketData::default();
        feed(&mut few, 0..2);
        assert!(matches!(few, BucketData::Rows(_)), "two rows stay a log");
        let mut reference = BucketData::Summary(Box::new(Summary::empty(&layout)));
        feed(&mut reference, 0..2);
        assert_eq!(answers(&few), answers(&reference));
        // Past the limit the log becomes a summary with the same answers.
        feed(&mut few, 2..40);
        feed(&mut reference, 2..40);
        assert!(
            matches!(few, BucketData::Summary(_)),
            "forty rows are summarised"
        );
        assert_eq!(answers(&few), answers(&reference));
        assert_eq!(answers(&few).0, 40);
        assert_eq!(answers(&few).1, 14);
        few.clear();
        assert!(few.is_empty());
    }
}
