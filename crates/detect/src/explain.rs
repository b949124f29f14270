//! Impact and explanation of alerts from a bounded sample of recent rows.
//!
//! The engine keeps one sample shared by every rule. Per row it holds the
//! explanatory dimensions (`source_id`, `client_id`, `model_id`,
//! `model_version`, `ab_group`, an `input_tokens` length bucket) and every
//! `group_by` column as interned ids, the numeric columns that conditions
//! compare (latency, confidence, …) as f32, whether the row failed, and one
//! bit per rule and segment: did the row pass that rule's filter/segment.
//!
//! **Bound.** Rows live in slots of event time, as wide as the gcd of the
//! rules' bucket widths, so every window is a union of whole slots. A slot
//! keeps at most `per_slot` rows, the ones with the lowest hash of their
//! ordinal in the input (a uniform, deterministic sample), and a slot is
//! dropped once no future window reads it. `per_slot` is the engine's row
//! budget (default [`DEFAULT_EXPLAIN_ROWS`]) divided by the slots the
//! longest window + `every` + lateness spans, so at most that many rows are
//! kept between batches (plus the batch being read). With the default rule
//! pack a row costs 44 bytes plus its share of the interned values, which
//! are compacted when they outgrow twice the rows held.
//!
//! **Determinism.** A row enters iff its time is within the smallest
//! allowed lateness of the running maximum before it, which is a property of
//! the input order alone. Any row arriving after a rule evaluated tick `t`
//! with a time before `t` is then refused, so a window only ever reads rows
//! that arrived before its evaluation, whatever the batch sizes; and the
//! bottom-k of a slot is a function of the set of rows in it.

use std::collections::BTreeMap;

use ahash::{AHashMap, AHashSet};
use arrow::array::{Array, Float64Array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use inferwatch_core::{column, Contributor};

use crate::engine::{column_value_ids, float_column, ValueInterner, NULL_VALUE};

/// Default row budget of the sample (about 22 MB plus interned values).
pub const DEFAULT_EXPLAIN_ROWS: usize = 500_000;

/// The dimensions an explanation may name.
const EXPLAINING: [&str; 6] = [
    column::SOURCE_ID,
    column::CLIENT_ID,
    column::MODEL_ID,
    column::MODEL_VERSION,
    column::AB_GROUP,
    column::INPUT_TOKENS,
];

/// Upper bounds (exclusive) and labels of the input length buckets.
const LENGTH_BUCKETS: [(f64, &str); 5] = [
    (256.0, "< 256"),
    (1024.0, "256-1k"),
    (2048.0, "1k-2k"),
    (8192.0, "2k-8k"),
    (f64::INFINITY, "> 8k"),
];

/// Share of the group's rows above which a value is implied by its key.
const IMPLIED_SHARE: f64 = 0.99;

/// A contributor needs this lift, this share of the slice and this many rows.
const MIN_LIFT: f64 = 1.5;
const MIN_SHARE: f64 = 0.10;
const MIN_SUPPORT: u64 = 5;
/// And its count must be unlikely under the baseline share: a binomial
/// tail at most this (small slices fluctuate; many values are tried).
const MAX_P_VALUE: f64 = 0.001;
/// Fewer baseline rows than this and nothing is compared.
const MIN_BASELINE: u64 = 20;
/// Contributors kept per alert.
const TOP: usize = 3;

/// Flag bit 0 of every row: it failed.
const ERROR_BIT: usize = 0;

struct Dimension {
    name: String,
    column: usize,
    /// `input_tokens`: the value is a length bucket.
    bucketed: bool,
    /// May be named by an explanation.
    explains: bool,
    values: ValueInterner,
}

#[derive(Default)]
struct Slot {
    /// Rows that entered the slot, kept or not.
    seen: u64,
    ranks: Vec<u64>,
    dims: Vec<u32>,
    measures: Vec<f32>,
    flags: Vec<u64>,
}

/// Which rows of an alerting group made its condition hold.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bad {
    /// The measure (by position) above the threshold.
    Above(usize, f64),
    /// The measure below the threshold.
    Below(usize, f64),
    /// Failed rows.
    Errors,
}

/// One alert's question to the sample.
pub(crate) struct Query {
    /// The rule's filter bit.
    pub rule_bit: usize,
    /// Window `[from, to)`.
    pub from: i64,
    pub to: i64,
    /// The group's key as (dimension, value id); None when a key value was
    /// never sampled (no row of the group is held).
    pub key: Option<Vec<(usize, u32)>>,
    /// Narrow the slice to a segment's bit…
    pub segment_bit: Option<usize>,
    /// …and to the rows that made the condition hold.
    pub bad: Option<Bad>,
    /// Compare against the group's own other rows when the slice is narrowed.
    pub narrowed: bool,
    /// The group's model, to prefer the same model's other groups as baseline.
    pub model: Option<(usize, u32)>,
    /// Explain (firing) or only measure impact (resolved).
    pub explain: bool,
}

/// What the sample says about one alert.
#[derive(Debug, Default)]
pub(crate) struct Explained {
    /// Distinct clients among the group's sampled rows.
    pub distinct_clients: Option<u64>,
    /// Every row of the window was kept (nothing sampled away).
    pub complete: bool,
    pub contributors: Vec<Contributor>,
}

/// Counts of each explanatory dimension's values over some rows.
#[derive(Default, Clone)]
struct Counts {
    rows: u64,
    values: Vec<AHashMap<u32, u64>>,
}

impl Counts {
    fn new(dims: usize) -> Self {
        Counts {
            rows: 0,
            values: vec![AHashMap::default(); dims],
        }
    }

    fn add(&mut self, dims: &[u32], explaining: &[usize]) {
        self.rows += 1;
        for &d in explaining {
            *self.values[d].entry(dims[d]).or_default() += 1;
        }
    }

    fn subtract(&mut self, other: &Counts) {
        // `other` is a subset of these rows, so nothing goes below zero.
        self.rows = self.rows.saturating_sub(other.rows);
        for (mine, theirs) in self.values.iter_mut().zip(&other.values) {
            for (value, count) in theirs {
                if let Some(mine) = mine.get_mut(value) {
                    *mine = mine.saturating_sub(*count);
                }
            }
        }
    }
}

/// Per (rule, window): counts over every row of the rule, overall and per model.
pub(crate) struct WindowCounts {
    all: Counts,
    by_model: AHashMap<u32, Counts>,
}

/// The engine's sample of recent rows.
pub(crate) struct RowSample {
    dims: Vec<Dimension>,
    /// Schema columns of the measures.
    measures: Vec<usize>,
    /// Flag words per row.
    words: usize,
    slot_width: i64,
    per_slot: usize,
    min_lateness: i64,
    /// No future window starts before this.
    horizon: i64,
    slots: BTreeMap<i64, Slot>,
    /// Rows of the batch being read: (batch row, slot, position in slot).
    staged: Vec<(u32, i64, u32)>,
    /// Rows observed before this batch.
    ordinal: u64,
    client: Option<usize>,
    model: Option<usize>,
}

impl RowSample {
    /// `bits` flag bits per row (bit 0 is the error flag); `span` the longest
    /// window + every + lateness; `rows` the budget (0 turns it off).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        schema: &SchemaRef,
        group_columns: &[usize],
        measures: Vec<usize>,
        bits: usize,
        slot_width: i64,
        span: i64,
        min_lateness: i64,
        rows: usize,
    ) -> Self {
        let mut dims: Vec<Dimension> = Vec::new();
        for name in EXPLAINING {
            if let Ok(column) = schema.index_of(name) {
                dims.push(Dimension {
                    name: name.to_string(),
                    column,
                    bucketed: name == column::INPUT_TOKENS,
                    explains: true,
                    values: ValueInterner::default(),
                });
            }
        }
        for &column in group_columns {
            if !dims.iter().any(|d| d.column == column && !d.bucketed) {
                dims.push(Dimension {
                    name: schema.field(column).name().clone(),
                    column,
                    bucketed: false,
                    explains: false,
                    values: ValueInterner::default(),
                });
            }
        }
        // The bucket labels take the first ids, in order.
        for dim in dims.iter_mut().filter(|d| d.bucketed) {
            for (_, label) in LENGTH_BUCKETS {
                dim.values.intern(label);
            }
        }
        let slot_width = slot_width.max(1);
        let slots = (span / slot_width).max(1) as usize + 2;
        let find = |name: &str| {
            dims.iter()
                .position(|d| d.name == name && !d.bucketed && d.explains)
        };
        let (client, model) = (find(column::CLIENT_ID), find(column::MODEL_ID));
        RowSample {
            dims,
            measures,
            words: bits.div_ceil(64).max(1),
            slot_width,
            per_slot: if rows == 0 { 0 } else { (rows / slots).max(1) },
            min_lateness,
            horizon: i64::MIN,
            slots: BTreeMap::new(),
            staged: Vec::new(),
            ordinal: 0,
            client,
            model,
        }
    }

    /// Schema columns the sample reads.
    pub(crate) fn referenced_columns(&self, out: &mut Vec<usize>) {
        if self.per_slot > 0 {
            out.extend(self.dims.iter().map(|d| d.column));
            out.extend(&self.measures);
        }
    }

    /// The dimension holding a schema column's values (not its bucket).
    pub(crate) fn dimension_of(&self, column: usize) -> Option<usize> {
        self.dims
            .iter()
            .position(|d| d.column == column && !d.bucketed)
    }

    /// The id of a value of a dimension, if it was ever sampled.
    pub(crate) fn id_of(&self, dim: usize, value: Option<&str>) -> Option<u32> {
        match value {
            None => Some(NULL_VALUE),
            Some(value) => self.dims[dim].values.find(value),
        }
    }

    /// Position of a measure column.
    pub(crate) fn measure_of(&self, column: usize) -> Option<usize> {
        self.measures.iter().position(|&c| c == column)
    }

    /// The model dimension.
    pub(crate) fn model_dimension(&self) -> Option<usize> {
        self.model
    }

    /// Rows held now (for tests and memory accounting).
    pub(crate) fn rows(&self) -> usize {
        self.slots.values().map(|slot| slot.ranks.len()).sum()
    }

    /// Adds the batch's admissible rows; rules then [`RowSample::mark`] them.
    pub(crate) fn stage(
        &mut self,
        batch: &RecordBatch,
        timestamps: &[i64],
        prefix_max: &[i64],
        errors: &BooleanBuffer,
    ) {
        self.staged.clear();
        let first_ordinal = self.ordinal;
        self.ordinal += timestamps.len() as u64;
        if self.per_slot == 0 {
            return;
        }
        let rows = batch.num_rows();
        let everything = BooleanBuffer::new_set(rows);
        let ids: Vec<Vec<u32>> = self
            .dims
            .iter_mut()
            .map(|dim| {
                let array = batch.column(dim.column);
                if dim.bucketed {
                    let lengths = float_column(array);
                    (0..rows)
                        .map(|row| {
                            if lengths.is_valid(row) {
                                let length = lengths.value(row);
                                LENGTH_BUCKETS
                                    .iter()
                                    .position(|(below, _)| length < *below)
                                    .map_or(NULL_VALUE, |bucket| bucket as u32)
                            } else {
                                NULL_VALUE
                            }
                        })
                        .collect()
                } else {
                    let values = &mut dim.values;
                    column_value_ids(array, &everything, &mut |value| values.intern(value))
                }
            })
            .collect();
        let measures: Vec<Float64Array> = self
            .measures
            .iter()
            .map(|&column| float_column(batch.column(column)))
            .collect();
        let words = self.words;
        for (row, &timestamp) in timestamps.iter().enumerate() {
            if timestamp < prefix_max[row].saturating_sub(self.min_lateness)
                || timestamp < self.horizon
            {
                continue;
            }
            let key = timestamp.div_euclid(self.slot_width);
            let slot = self.slots.entry(key).or_default();
            let ordinal = first_ordinal + row as u64;
            slot.seen += 1;
            slot.ranks
                .push(xxhash_rust::xxh3::xxh3_64(&ordinal.to_le_bytes()));
            slot.dims.extend(ids.iter().map(|ids| ids[row]));
            slot.measures.extend(measures.iter().map(|values| {
                if values.is_valid(row) {
                    values.value(row) as f32
                } else {
                    f32::NAN
                }
            }));
            let position = slot.flags.len() / words;
            slot.flags.extend(std::iter::repeat_n(0, words));
            if errors.value(row) {
                slot.flags[position * words + ERROR_BIT / 64] |= 1 << (ERROR_BIT % 64);
            }
            self.staged.push((row as u32, key, position as u32));
        }
    }

    /// Sets `bit` on the staged rows that `mask` selects.
    pub(crate) fn mark(&mut self, bit: usize, mask: &BooleanBuffer) {
        let words = self.words;
        let (word, bit) = (bit / 64, 1u64 << (bit % 64));
        let mut current: Option<(i64, &mut Slot)> = None;
        for &(row, key, position) in &self.staged {
            if !mask.value(row as usize) {
                continue;
            }
            if current.as_ref().is_none_or(|(k, _)| *k != key) {
                current = self.slots.get_mut(&key).map(|slot| (key, slot));
            }
            if let Some((_, slot)) = current.as_mut() {
                slot.flags[position as usize * words + word] |= bit;
            }
        }
    }

    /// After every rule read the batch: drops slots before `horizon`, keeps
    /// the bottom-k of each slot and compacts the interned values.
    pub(crate) fn commit(&mut self, horizon: i64) {
        self.staged.clear();
        if self.per_slot == 0 {
            return;
        }
        self.horizon = self.horizon.max(horizon);
        let first = self.horizon.div_euclid(self.slot_width);
        self.slots = self.slots.split_off(&first);
        let (width, measures, words) = (self.dims.len(), self.measures.len(), self.words);
        for slot in self.slots.values_mut() {
            if slot.ranks.len() <= self.per_slot {
                continue;
            }
            let mut order: Vec<(u64, u32)> = slot
                .ranks
                .iter()
                .enumerate()
                .map(|(position, &rank)| (rank, position as u32))
                .collect();
            order.select_nth_unstable(self.per_slot);
            order.truncate(self.per_slot);
            let mut kept: Vec<usize> = order.iter().map(|&(_, p)| p as usize).collect();
            kept.sort_unstable();
            slot.dims = gather(&slot.dims, width, &kept);
            slot.measures = gather(&slot.measures, measures, &kept);
            slot.flags = gather(&slot.flags, words, &kept);
            slot.ranks = gather(&slot.ranks, 1, &kept);
        }
        let rows = self.rows();
        for (d, dim) in self.dims.iter_mut().enumerate() {
            if dim.bucketed || dim.values.len() <= 2 * rows + 1_024 {
                continue;
            }
            // Re-intern what the held rows use; ids carry no meaning of their own.
            let mut fresh = ValueInterner::default();
            let mut remap: AHashMap<u32, u32> = AHashMap::default();
            for slot in self.slots.values_mut() {
                for id in slot.dims.iter_mut().skip(d).step_by(width) {
                    if *id != NULL_VALUE {
                        *id = *remap
                            .entry(*id)
                            .or_insert_with(|| fresh.intern(dim.values.name(*id)));
                    }
                }
            }
            dim.values = fresh;
        }
    }

    /// Calls `visit` on each held row of `[from, to)`; says whether every
    /// row of the window was kept.
    fn visit(&self, from: i64, to: i64, mut visit: impl FnMut(&[u32], &[f32], &[u64])) -> bool {
        let (width, measures, words) = (self.dims.len(), self.measures.len(), self.words);
        let mut complete = true;
        let range = from.div_euclid(self.slot_width)..to.div_euclid(self.slot_width);
        for slot in self.slots.range(range).map(|(_, slot)| slot) {
            complete &= slot.seen <= self.per_slot as u64;
            // Mid-batch a slot may hold more than k rows: read its bottom-k.
            let cut = if slot.ranks.len() > self.per_slot {
                let mut ranks = slot.ranks.clone();
                *ranks.select_nth_unstable(self.per_slot - 1).1
            } else {
                u64::MAX
            };
            for (position, &rank) in slot.ranks.iter().enumerate() {
                if rank <= cut {
                    visit(
                        &slot.dims[position * width..(position + 1) * width],
                        &slot.measures[position * measures..(position + 1) * measures],
                        &slot.flags[position * words..(position + 1) * words],
                    );
                }
            }
        }
        complete
    }

    fn explaining(&self, key: &[(usize, u32)]) -> Vec<usize> {
        (0..self.dims.len())
            .filter(|&d| self.dims[d].explains && !key.iter().any(|(k, _)| *k == d))
            .collect()
    }

    /// Counts over every row of a rule in a window, for baselines outside a
    /// group (computed once per rule and tick).
    pub(crate) fn window_counts(&self, rule_bit: usize, from: i64, to: i64) -> WindowCounts {
        let explaining = self.explaining(&[]);
        let dims = self.dims.len();
        let mut all = Counts::new(dims);
        let mut by_model: AHashMap<u32, Counts> = AHashMap::default();
        self.visit(from, to, |row, _, flags| {
            if has(flags, rule_bit) {
                all.add(row, &explaining);
                if let Some(model) = self.model {
                    by_model
                        .entry(row[model])
                        .or_insert_with(|| Counts::new(dims))
                        .add(row, &explaining);
                }
            }
        });
        WindowCounts { all, by_model }
    }

    /// Impact and explanation of one alert. `window` caches
    /// [`RowSample::window_counts`] across the alerts of one tick.
    pub(crate) fn explain(
        &self,
        query: &Query,
        window: &mut Option<WindowCounts>,
    ) -> Option<Explained> {
        if self.per_slot == 0 {
            return None;
        }
        let Some(key) = &query.key else {
            // A group none of whose rows are held.
            let complete = self.visit(query.from, query.to, |_, _, _| {});
            return Some(Explained {
                distinct_clients: self.client.map(|_| 0),
                complete,
                ..Explained::default()
            });
        };
        let explaining = self.explaining(key);
        let dims = self.dims.len();
        let (mut group, mut slice, mut rest) =
            (Counts::new(dims), Counts::new(dims), Counts::new(dims));
        let mut clients: AHashSet<u32> = AHashSet::default();
        let complete = self.visit(query.from, query.to, |row, measures, flags| {
            if !has(flags, query.rule_bit) || key.iter().any(|&(d, id)| row[d] != id) {
                return;
            }
            if let Some(client) = self.client {
                if row[client] != NULL_VALUE {
                    clients.insert(row[client]);
                }
            }
            group.add(row, &explaining);
            if !query.explain {
                return;
            }
            let in_segment = query.segment_bit.is_none_or(|bit| has(flags, bit));
            let bad = match query.bad {
                None => true,
                Some(Bad::Errors) => has(flags, ERROR_BIT),
                Some(Bad::Above(m, threshold)) => f64::from(measures[m]) > threshold,
                Some(Bad::Below(m, threshold)) => f64::from(measures[m]) < threshold,
            };
            if in_segment && bad {
                slice.add(row, &explaining);
            } else {
                rest.add(row, &explaining);
            }
        });
        let mut explained = Explained {
            // None when the events carry no client at all.
            distinct_clients: self
                .client
                .filter(|_| !clients.is_empty() || group.rows == 0)
                .map(|_| clients.len() as u64),
            complete,
            contributors: Vec::new(),
        };
        if !query.explain || slice.rows < MIN_SUPPORT {
            return Some(explained);
        }
        let baseline = if query.narrowed && rest.rows >= MIN_BASELINE {
            rest
        } else {
            let counts = window
                .get_or_insert_with(|| self.window_counts(query.rule_bit, query.from, query.to));
            let same_model = query
                .model
                .and_then(|(_, id)| counts.by_model.get(&id))
                .filter(|model| model.rows >= group.rows + MIN_BASELINE);
            // A model's whole traffic against other models' only says how
            // the models differ (fraud has short inputs), not why it alerts.
            if query.model.is_some() && same_model.is_none() {
                return Some(explained);
            }
            let mut outside = same_model.unwrap_or(&counts.all).clone();
            outside.subtract(&group);
            outside
        };
        if baseline.rows < MIN_BASELINE {
            return Some(explained);
        }
        let mut contributors: Vec<(f64, f64, usize, u32)> = Vec::new();
        for &d in &explaining {
            let (in_slice, in_baseline) = (&slice.values[d], &baseline.values[d]);
            let distinct = in_slice
                .keys()
                .chain(in_baseline.keys())
                .collect::<AHashSet<_>>()
                .len() as f64;
            for (&value, &count) in in_slice {
                let share = count as f64 / slice.rows as f64;
                if value == NULL_VALUE || count < MIN_SUPPORT || share < MIN_SHARE {
                    continue;
                }
                // A value (nearly) every row of the group carries is implied
                // by the group key: `ab_group canary` says nothing new about
                // an alert on the canary version.
                let in_group = group.values[d].get(&value).copied().unwrap_or(0);
                if in_group as f64 >= IMPLIED_SHARE * group.rows as f64 {
                    continue;
                }
                // Add-one smoothing: a value the baseline never saw gets a
                // finite lift.
                let base = in_baseline.get(&value).copied().unwrap_or(0) as f64;
                let expected = (base + 1.0) / (baseline.rows as f64 + distinct);
                let lift = share / expected;
                if lift >= MIN_LIFT && binomial_tail(slice.rows, expected, count) <= MAX_P_VALUE {
                    contributors.push((lift, share, d, value));
                }
            }
        }
        contributors.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then_with(|| self.dims[a.2].name.cmp(&self.dims[b.2].name))
                .then_with(|| {
                    self.dims[a.2]
                        .values
                        .name(a.3)
                        .cmp(self.dims[b.2].values.name(b.3))
                })
        });
        explained.contributors = contributors
            .into_iter()
            .take(TOP)
            .map(|(lift, share, d, value)| Contributor {
                dimension: self.dims[d].name.clone(),
                value: self.dims[d].values.name(value).to_string(),
                lift,
                share: Some(share),
            })
            .collect();
        Some(explained)
    }
}

/// The `width`-wide rows of `values` at positions `kept`.
fn gather<T: Copy>(values: &[T], width: usize, kept: &[usize]) -> Vec<T> {
    kept.iter()
        .flat_map(|&p| values[p * width..(p + 1) * width].iter().copied())
        .collect()
}

/// P(X >= k) for X ~ Binomial(n, p).
fn binomial_tail(n: u64, p: f64, k: u64) -> f64 {
    use statrs::distribution::{Binomial, DiscreteCDF};
    match Binomial::new(p.clamp(0.0, 1.0), n) {
        Ok(binomial) if k > 0 => binomial.sf(k - 1),
        _ => 1.0,
    }
}

fn has(flags: &[u64], bit: usize) -> bool {
    flags[bit / 64] & (1 << (bit % 64)) != 0
}
