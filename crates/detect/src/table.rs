//! Keyed, bucketed state that rules reading the same rows share.
//!
//! A rule groups the rows its filter selects by its `group_by` key and cuts
//! time into buckets of `gcd(window, every)`; each (group, bucket) cell holds
//! a mergeable summary of its rows (or, while it has few, the rows: see
//! [`BucketData`]). Per-client rules track a million keys, and for them this
//! state is nearly all of the engine's memory: an interned key, a list of
//! cells and the row logs, per rule.
//!
//! Rules that filter, segment, group and tick alike (same stream, `where`,
//! segments, `group_by`, bucket width, `every`, lateness and `max_groups`)
//! therefore share one [`CellTable`]: each row is interned, bucketed and
//! logged once, under the union of the members' summary layouts, and each
//! member reads its own aggregates from the same cells. Windows may differ:
//! cells are kept as long as the widest member window needs them. The table
//! drives the members' ticks, so rules that share state also share the
//! moment they are judged, and a group is forgotten only when no member
//! needs it.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef};
use arrow::buffer::BooleanBuffer;
use arrow::record_batch::RecordBatch;
use hashbrown::HashTable;
use inferwatch_core::Alert;

use crate::detector::BaselineGroup;
use crate::engine::{column_value_ids, sample_rank, BatchColumns, HoldLog, RuleRuntime};
use crate::explain::RowSample;
use crate::filter::{evaluate_predicate, RowPredicate};
use crate::summary::{BucketData, SummaryLayout};

/// Ticks evaluated in one jump before a table skips ahead over an empty stretch.
const MAX_TICKS_PER_ADVANCE: i64 = 100_000;

/// Interned group keys of one table.
///
/// A group is stored as its key (one interned value id per `group_by`
/// column) in one flat vector, so a tracked entity costs a few dozen bytes
/// here: the hash indexes hold only u32 ids and compare through the vectors
/// (hashbrown's `HashTable`), and each distinct value's text is stored once.
/// A group's text and value map are built only when an alert needs them. Ids
/// of evicted groups are reused.
#[derive(Default)]
pub(crate) struct GroupTable {
    values: Vec<ValueInterner>,
    column_names: Vec<String>,
    /// Group `g`'s key is `keys[g * width..(g + 1) * width]`.
    keys: Vec<u32>,
    in_use: Vec<bool>,
    key_index: HashTable<u32>,
    /// A stable hash of each group's text (for per-entity pseudo-random choices).
    pub(crate) hashes: Vec<u64>,
    free: Vec<u32>,
}

/// Distinct values of one column, each stored once.
#[derive(Default)]
pub(crate) struct ValueInterner {
    names: Vec<Box<str>>,
    index: HashTable<u32>,
}

impl ValueInterner {
    /// The id of a value already interned.
    pub(crate) fn find(&self, value: &str) -> Option<u32> {
        let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
        let names = &self.names;
        self.index
            .find(hash, |&id| &*names[id as usize] == value)
            .copied()
    }

    pub(crate) fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn intern(&mut self, value: &str) -> u32 {
        let hash = xxhash_rust::xxh3::xxh3_64(value.as_bytes());
        let names = &self.names;
        if let Some(id) = self.index.find(hash, |&id| &*names[id as usize] == value) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.names.push(value.into());
        let names = &self.names;
        self.index.insert_unique(hash, id, |&id| {
            xxhash_rust::xxh3::xxh3_64(names[id as usize].as_bytes())
        });
        id
    }
}

pub(crate) const NULL_VALUE: u32 = u32::MAX;

/// A group's first bucket before it has a row: later than every tick, so
/// the group is not evaluated (a sentinel, not an `Option`, to save 8 bytes
/// per tracked key).
pub(crate) const NO_BUCKET: i64 = i64::MAX;

/// A row whose new key found the rule at `max_groups`.
pub(crate) const REFUSED_GROUP: u32 = u32::MAX;

fn key_hash(key: &[u32]) -> u64 {
    let mut bytes = [0u8; 64];
    if key.len() * 4 <= bytes.len() {
        for (chunk, id) in bytes.chunks_exact_mut(4).zip(key) {
            chunk.copy_from_slice(&id.to_le_bytes());
        }
        return xxhash_rust::xxh3::xxh3_64(&bytes[..key.len() * 4]);
    }
    let bytes: Vec<u8> = key.iter().flat_map(|id| id.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl GroupTable {
    pub(crate) fn new(column_names: Vec<String>) -> Self {
        GroupTable {
            values: (0..column_names.len())
                .map(|_| ValueInterner::default())
                .collect(),
            column_names,
            ..GroupTable::default()
        }
    }

    pub(crate) fn width(&self) -> usize {
        self.column_names.len()
    }

    pub(crate) fn key(&self, group: usize) -> &[u32] {
        let width = self.width();
        &self.keys[group * width..(group + 1) * width]
    }

    pub(crate) fn intern_value(&mut self, column: usize, value: &str) -> u32 {
        self.values[column].intern(value)
    }

    /// The group of `key`, and whether the id was just assigned; None when
    /// the key is new and `limit` groups are already tracked.
    pub(crate) fn group_of(&mut self, key: &[u32], limit: usize) -> Option<(u32, bool)> {
        debug_assert_eq!(key.len(), self.width());
        let hash = key_hash(key);
        let width = self.width();
        let keys = &self.keys;
        let same =
            |&group: &u32| &keys[group as usize * width..(group as usize + 1) * width] == key;
        if let Some(group) = self.key_index.find(hash, same) {
            return Some((*group, false));
        }
        if self.live() >= limit {
            return None;
        }
        let group = match self.free.pop() {
            Some(group) => {
                let start = group as usize * width;
                self.keys[start..start + width].copy_from_slice(key);
                group
            }
            None => {
                self.keys.extend_from_slice(key);
                self.in_use.push(false);
                self.hashes.push(0);
                (self.in_use.len() - 1) as u32
            }
        };
        self.in_use[group as usize] = true;
        let keys = &self.keys;
        self.key_index.insert_unique(hash, group, |&group| {
            key_hash(&keys[group as usize * width..(group as usize + 1) * width])
        });
        self.hashes[group as usize] =
            xxhash_rust::xxh3::xxh3_64(self.text(group as usize).as_bytes());
        Some((group, true))
    }

    pub(crate) fn value(&self, column: usize, id: u32) -> &str {
        if id == NULL_VALUE {
            ""
        } else {
            &self.values[column].names[id as usize]
        }
    }

    /// `name=value,name=value`: the group's identity in alert ids and ordering.
    pub(crate) fn text(&self, group: usize) -> String {
        let positions: Vec<usize> = (0..self.width()).collect();
        self.projection(group, &positions)
    }

    pub(crate) fn values(&self, group: usize) -> BTreeMap<String, String> {
        if !self.in_use[group] {
            return BTreeMap::new();
        }
        self.key(group)
            .iter()
            .enumerate()
            .map(|(column, id)| {
                (
                    self.column_names[column].clone(),
                    self.value(column, *id).to_string(),
                )
            })
            .collect()
    }

    /// `name=value,…` over some of the key's columns (by position).
    pub(crate) fn projection(&self, group: usize, positions: &[usize]) -> String {
        let mut text = String::new();
        if !self.in_use[group] {
            return text;
        }
        let key = self.key(group);
        for (index, position) in positions.iter().enumerate() {
            if index > 0 {
                text.push(',');
            }
            text.push_str(&self.column_names[*position]);
            text.push('=');
            text.push_str(self.value(*position, key[*position]));
        }
        text
    }

    /// Forgets a group; its id will be reused.
    pub(crate) fn release(&mut self, group: usize) {
        if !self.in_use[group] {
            return;
        }
        let hash = key_hash(self.key(group));
        if let Ok(entry) = self
            .key_index
            .find_entry(hash, |&other| other as usize == group)
        {
            entry.remove();
        }
        self.in_use[group] = false;
        self.free.push(group as u32);
    }

    /// Group ids in use or free (the size of per-group vectors).
    pub(crate) fn slots(&self) -> usize {
        self.in_use.len()
    }

    /// Groups tracked now.
    pub(crate) fn live(&self) -> usize {
        self.in_use.len() - self.free.len()
    }
}

/// One bucket of one group and segment that holds rows. A group keeps only
/// such cells (a few, for most entities), in the order their buckets first
/// got a row: a fixed ring per group cost ring × 24 bytes even for the
/// idle, and per-client rules track a million groups. Each cell's data is a
/// row log, then a summary once busy (see [`BucketData`]); it is dropped
/// once its bucket leaves every future window.
#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) bucket: i64,
    pub(crate) data: BucketData,
}

/// The cell of `bucket` among a group's cells, created when missing.
/// Buckets arrive nearly in order, so the search starts from the newest.
pub(crate) fn cell_index(cells: &mut Vec<Cell>, bucket: i64) -> usize {
    match cells.iter().rposition(|cell| cell.bucket == bucket) {
        Some(index) => index,
        None => {
            // Exactly one more: most groups hold a few cells, and a Vec's
            // first growth would reserve four.
            cells.reserve_exact(1);
            cells.push(Cell {
                bucket,
                data: BucketData::default(),
            });
            cells.len() - 1
        }
    }
}

/// What makes two rules' rows, keys and ticks the same (see the module
/// documentation): rules with equal keys share a [`CellTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharingKey {
    pub(crate) stream: String,
    pub(crate) filter: Option<String>,
    pub(crate) segments: Vec<(String, String)>,
    pub(crate) group_by: Vec<String>,
    pub(crate) bucket_width: i64,
    pub(crate) every: i64,
    pub(crate) allowed_lateness: i64,
    pub(crate) max_groups: usize,
}

/// The cells of the rules that share a [`SharingKey`] (its members), and
/// the tick schedule they share.
pub(crate) struct CellTable {
    pub(crate) key: SharingKey,
    /// Indices of the member rules in the engine, in evaluation order.
    pub(crate) members: Vec<usize>,
    pub(crate) filter: RowPredicate,
    pub(crate) segment_filters: Vec<RowPredicate>,
    pub(crate) error_predicate: RowPredicate,
    pub(crate) group_columns: Vec<usize>,
    pub(crate) group_names: Vec<String>,
    /// Per segment: the union of the members' summary layouts.
    pub(crate) layouts: Vec<SummaryLayout>,
    pub(crate) bucket_width: i64,
    /// The widest member window: how long a cell is kept.
    pub(crate) retention: i64,
    pub(crate) groups: GroupTable,
    /// Per segment, per group: the group's cells that hold rows.
    pub(crate) cells: Vec<Vec<Vec<Cell>>>,
    /// Per group: its earliest bucket with a row ([`NO_BUCKET`] before its
    /// first). A group is evaluated only at ticks after it, the same whatever
    /// the arrival order.
    pub(crate) first_bucket: Vec<i64>,
    /// Rows per bucket over every group (share of traffic), in a ring.
    pub(crate) totals: Vec<(i64, u64)>,
    pub(crate) next_tick: Option<i64>,
    pub(crate) late_events: u64,
    /// Rows further ahead of the clock than `max_future`.
    pub(crate) future_events: u64,
    pub(crate) max_future: i64,
    /// Groups forgotten because they went idle.
    pub(crate) evicted: u64,
    /// Most groups tracked at once.
    pub(crate) peak_groups: usize,
    /// Rows skipped because their new key found the table at `max_groups`.
    pub(crate) refused_rows: u64,
    row_groups: Vec<u32>,
    /// Per segment, this slice's rows: (row, group, index among the group's cells).
    pub(crate) pairs: Vec<Vec<(u32, u32, u32)>>,
    /// Per group, at the tick being evaluated: whether a member still needs it.
    retained: Vec<bool>,
    /// The members' learned baselines, one bank per distinct series.
    pub(crate) banks: Vec<BaselineBank>,
}

/// The learned baselines of one series, per group of a table. Members that
/// learn the same series the same way (an extraction sweep and its staged,
/// confirmed twin) share one bank, so a million clients' baselines are kept
/// once: the first member to judge a tick learns the point, the next one
/// reads the same judgement ([`BaselineGroup::observe`] is idempotent per tick).
pub(crate) struct BaselineBank {
    key: String,
    /// One learned baseline per group, created at its first evaluation.
    pub(crate) groups: Vec<Option<BaselineGroup>>,
    /// Ticks evaluated, and the last one (`new_keys: zero` needs to know
    /// whether the series itself is past its warm-up).
    pub(crate) ticks: u64,
    pub(crate) last_tick: i64,
}

/// Where a table's members send what they find at a tick.
pub(crate) struct TickOutput<'a> {
    pub(crate) outbox: &'a mut Vec<(i64, usize, String, Alert)>,
    pub(crate) hold_logs: &'a mut [HoldLog],
}

impl CellTable {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        key: SharingKey,
        filter: RowPredicate,
        segment_filters: Vec<RowPredicate>,
        error_predicate: RowPredicate,
        group_columns: Vec<usize>,
        max_future: i64,
    ) -> CellTable {
        let segments = segment_filters.len() + 1;
        let group_names = key.group_by.clone();
        let mut table = CellTable {
            filter,
            segment_filters,
            error_predicate,
            group_columns,
            groups: GroupTable::new(group_names.clone()),
            group_names,
            layouts: vec![SummaryLayout::default(); segments],
            bucket_width: key.bucket_width,
            retention: 0,
            cells: vec![Vec::new(); segments],
            first_bucket: Vec::new(),
            totals: Vec::new(),
            next_tick: None,
            late_events: 0,
            future_events: 0,
            max_future,
            evicted: 0,
            peak_groups: 0,
            refused_rows: 0,
            row_groups: Vec::new(),
            pairs: vec![Vec::new(); segments],
            retained: Vec::new(),
            banks: Vec::new(),
            members: Vec::new(),
            key,
        };
        table.set_max_future(max_future);
        table
    }

    /// The bank of baselines learned as `key` says, made if new.
    pub(crate) fn bank_for(&mut self, key: String) -> usize {
        if let Some(index) = self.banks.iter().position(|bank| bank.key == key) {
            return index;
        }
        self.banks.push(BaselineBank {
            key,
            groups: Vec::new(),
            ticks: 0,
            last_tick: i64::MIN,
        });
        self.banks.len() - 1
    }

    /// Adds a member whose window is `window`.
    pub(crate) fn join(&mut self, rule_index: usize, window: i64) {
        self.members.push(rule_index);
        self.retention = self.retention.max(window);
        self.set_max_future(self.max_future);
    }

    /// Resizes the (still empty) totals ring for rows up to `max_future` ahead.
    pub(crate) fn set_max_future(&mut self, max_future: i64) {
        self.max_future = max_future;
        let span = self.retention + self.key.every + self.key.allowed_lateness + max_future;
        let ring = (span / self.bucket_width + 2) as usize;
        self.totals = vec![(i64::MIN, 0); ring];
        debug_assert!(self.cells.iter().flatten().all(Vec::is_empty));
    }

    pub(crate) fn last_evaluated_tick(&self) -> i64 {
        match self.next_tick {
            Some(tick) => tick - self.key.every,
            None => i64::MIN,
        }
    }

    /// Rows of the buckets in `first..=last`, over every group.
    pub(crate) fn total_between(&self, first: i64, last: i64) -> u64 {
        self.totals
            .iter()
            .filter(|(bucket, _)| *bucket >= first && *bucket <= last)
            .map(|(_, count)| count)
            .sum()
    }

    /// Feeds one batch: its rows into the cells, and every tick the clock
    /// passes to the members, exactly where it passes it (see the engine).
    pub(crate) fn observe(
        &mut self,
        columns: &mut BatchColumns,
        (timestamps, prefix_max): (&[i64], &[i64]),
        rules: &mut [RuleRuntime],
        output: &mut TickOutput,
        sample: &mut RowSample,
    ) {
        let batch = columns.batch();
        let lateness = self.key.allowed_lateness;
        let every = self.key.every;
        if self.next_tick.is_none() {
            // The first tick is the first multiple of `every` after the earliest
            // time an on-time event could carry once there is a clock, so
            // shuffling within the lateness can't change which non-empty
            // windows get evaluated.
            if let Some(&first_clock) = prefix_max.iter().find(|&&now| now != i64::MIN) {
                let earliest = first_clock.saturating_sub(lateness);
                self.next_tick = Some((earliest.div_euclid(every) + 1) * every);
            }
        }
        let mask = evaluate_predicate(&self.filter, batch);
        let segment_masks: Vec<BooleanBuffer> = self
            .segment_filters
            .iter()
            .map(|predicate| &evaluate_predicate(predicate, batch) & &mask)
            .collect();
        // The engine's error predicate, the same `status == "error"` as the table's.
        let errors = columns.errors().clone();
        for &member in &self.members {
            let bit = rules[member].sample_bit;
            sample.mark(bit, &mask);
            for (segment, segment_mask) in segment_masks.iter().enumerate() {
                sample.mark(bit + 1 + segment, segment_mask);
            }
        }
        let sample = &*sample;
        let value_ids = self.resolve_values(batch, &mask);
        let mut slice_start = 0;
        loop {
            // Rows before the first one whose running maximum puts the watermark
            // at or past the next tick belong before that tick's evaluation.
            let threshold = self.next_tick.unwrap_or(i64::MAX).saturating_add(lateness);
            let row =
                slice_start + prefix_max[slice_start..].partition_point(|&max| max < threshold);
            if row >= timestamps.len() {
                break;
            }
            self.resolve_groups(&value_ids, &mask, slice_start..row, rules);
            self.aggregate_rows(
                columns,
                (timestamps, prefix_max),
                slice_start..row,
                (&mask, &segment_masks, &errors),
                rules,
            );
            slice_start = row;
            self.advance_to(
                prefix_max[row].saturating_sub(lateness),
                rules,
                output,
                sample,
            );
        }
        self.resolve_groups(&value_ids, &mask, slice_start..timestamps.len(), rules);
        self.aggregate_rows(
            columns,
            (timestamps, prefix_max),
            slice_start..timestamps.len(),
            (&mask, &segment_masks, &errors),
            rules,
        );
    }

    /// Interns the group-key values of every selected row of the batch
    /// (one id per value and key column, per row).
    fn resolve_values(&mut self, batch: &RecordBatch, mask: &BooleanBuffer) -> Vec<Vec<u32>> {
        let columns = self.group_columns.len();
        let mut value_ids: Vec<Vec<u32>> = Vec::with_capacity(columns);
        for position in 0..columns {
            let column: &ArrayRef = batch.column(self.group_columns[position]);
            let groups = &mut self.groups;
            value_ids.push(column_value_ids(column, mask, &mut |value| {
                groups.intern_value(position, value)
            }));
        }
        self.row_groups.clear();
        self.row_groups.resize(batch.num_rows(), REFUSED_GROUP);
        value_ids
    }

    /// Maps the selected rows of `rows` to their groups in `row_groups`.
    /// Called per slice between ticks, not once per batch: a tick may
    /// release a group, and the slice's rows must then find (or make) it
    /// afresh rather than land under its old, freed id.
    fn resolve_groups(
        &mut self,
        value_ids: &[Vec<u32>],
        mask: &BooleanBuffer,
        rows: std::ops::Range<usize>,
        rules: &mut [RuleRuntime],
    ) {
        let columns = self.group_columns.len();
        let mut key = vec![0u32; columns];
        let slice = mask.slice(rows.start, rows.len());
        for row in slice.set_indices().map(|index| index + rows.start) {
            for (position, ids) in value_ids.iter().enumerate() {
                key[position] = ids[row];
            }
            let Some((group, new)) = self.groups.group_of(&key, self.key.max_groups) else {
                continue;
            };
            self.row_groups[row] = group;
            if new && (group as usize) < self.first_bucket.len() {
                // A reused id: whatever the evicted group left must go.
                let group = group as usize;
                self.first_bucket[group] = NO_BUCKET;
                for cells in &mut self.cells {
                    cells[group] = Vec::new();
                }
                for &member in &self.members {
                    rules[member].forget(group);
                }
                for bank in &mut self.banks {
                    if let Some(slot) = bank.groups.get_mut(group) {
                        *slot = None;
                    }
                }
            }
        }
        self.peak_groups = self.peak_groups.max(self.groups.live());
        let slots = self.groups.slots();
        if self.first_bucket.len() < slots {
            self.first_bucket.resize(slots, NO_BUCKET);
            self.retained.resize(slots, false);
            for cells in &mut self.cells {
                cells.resize_with(slots, Vec::new);
            }
            for &member in &self.members {
                rules[member].grow(slots);
            }
        }
    }

    fn aggregate_rows(
        &mut self,
        columns: &mut BatchColumns,
        (timestamps, clock): (&[i64], &[i64]),
        rows: std::ops::Range<usize>,
        (mask, segment_masks, errors): (&BooleanBuffer, &[BooleanBuffer], &BooleanBuffer),
        rules: &mut [RuleRuntime],
    ) {
        if rows.is_empty() {
            return;
        }
        let late_before = self.last_evaluated_tick();
        for pairs in &mut self.pairs {
            pairs.clear();
        }
        let ring = self.totals.len() as i64;
        // Rows come nearly sorted: remember the last bucket instead of dividing per row.
        let (mut bucket_start, mut bucket_end, mut bucket, mut slot) =
            (i64::MAX, i64::MIN, 0i64, 0usize);
        for row in rows {
            if !mask.value(row) {
                continue;
            }
            let timestamp = timestamps[row];
            if timestamp < late_before {
                self.late_events += 1;
                continue;
            }
            if clock[row] != i64::MIN && timestamp > clock[row].saturating_add(self.max_future) {
                // Its slot in the totals ring may still hold a bucket in
                // use, and its cells would outlive every window for long.
                self.future_events += 1;
                continue;
            }
            if self.row_groups[row] == REFUSED_GROUP {
                self.refused_rows += 1;
                continue;
            }
            if !(bucket_start <= timestamp && timestamp < bucket_end) {
                bucket = timestamp.div_euclid(self.bucket_width);
                bucket_start = bucket * self.bucket_width;
                bucket_end = bucket_start + self.bucket_width;
                slot = bucket.rem_euclid(ring) as usize;
            }
            let total = &mut self.totals[slot];
            if total.0 != bucket {
                *total = (bucket, 0);
            }
            total.1 += 1;
            let group = self.row_groups[row] as usize;
            debug_assert!(group < self.groups.slots());
            let first_bucket = &mut self.first_bucket[group];
            *first_bucket = (*first_bucket).min(bucket);
            for segment in 0..self.cells.len() {
                if segment > 0 && !segment_masks[segment - 1].value(row) {
                    continue;
                }
                let index = cell_index(&mut self.cells[segment][group], bucket);
                self.pairs[segment].push((row as u32, group as u32, index as u32));
            }
        }
        fn data(cells: &mut [Vec<Cell>], group: u32, index: u32) -> &mut BucketData {
            &mut cells[group as usize][index as usize].data
        }
        for segment in 0..self.cells.len() {
            let pairs = &self.pairs[segment];
            if pairs.is_empty() {
                continue;
            }
            let cells = &mut self.cells[segment];
            let layout = &self.layouts[segment];
            // A row is counted before its values are logged.
            for &(row, group, index) in pairs {
                data(cells, group, index).add_row(layout, errors.value(row as usize));
            }
            for (position, column) in layout.moment_columns.iter().enumerate() {
                let values = columns.values(*column, None);
                for &(row, group, index) in pairs {
                    if values.is_valid(row as usize) {
                        let value = values.value(row as usize);
                        data(cells, group, index).add_moment(layout, position, value);
                    }
                }
            }
            for (position, column) in layout.sketch_columns.iter().enumerate() {
                let values = columns.values(*column, None);
                for &(row, group, index) in pairs {
                    if values.is_valid(row as usize) {
                        let value = values.value(row as usize);
                        data(cells, group, index).add_sketch(layout, position, value);
                    }
                }
            }
            for (position, column) in layout.distinct_columns.iter().enumerate() {
                let hashes = columns.hashes(*column);
                for &(row, group, index) in pairs {
                    if let Some(hash) = hashes[row as usize] {
                        data(cells, group, index).add_distinct(layout, position, hash);
                    }
                }
            }
            for (position, column) in layout.sample_columns.iter().enumerate() {
                let values = columns.values(*column, layout.sample_classes[position]);
                for &(row, group, index) in pairs {
                    let row = row as usize;
                    if values.is_valid(row) {
                        let value = values.value(row);
                        let rank = sample_rank(timestamps[row], value);
                        data(cells, group, index).add_sample(layout, position, rank, value);
                    }
                }
            }
        }
        for &member in &self.members {
            rules[member].add_references(columns, timestamps, &self.pairs);
        }
    }

    /// Evaluates every tick up to `watermark`.
    pub(crate) fn advance_to(
        &mut self,
        watermark: i64,
        rules: &mut [RuleRuntime],
        output: &mut TickOutput,
        sample: &RowSample,
    ) {
        let Some(mut tick) = self.next_tick else {
            return;
        };
        let every = self.key.every;
        if (watermark - tick) / every > MAX_TICKS_PER_ADVANCE {
            // A clock jump: evaluate the (empty) window once, then skip to the present.
            self.evaluate_tick(tick, rules, output, sample);
            tick = (watermark.div_euclid(every)) * every;
        }
        while tick <= watermark {
            self.evaluate_tick(tick, rules, output, sample);
            tick += every;
        }
        self.next_tick = Some(tick);
    }

    /// Frees the cells no member window reads any more, lets every member
    /// judge the tick, then forgets the groups nobody needs: nothing in
    /// their cells and nothing pending (evaluating an empty window again
    /// would give the same "no").
    fn evaluate_tick(
        &mut self,
        tick: i64,
        rules: &mut [RuleRuntime],
        output: &mut TickOutput,
        sample: &RowSample,
    ) {
        let oldest_kept = (tick - self.retention).div_euclid(self.bucket_width);
        let last_bucket = tick.div_euclid(self.bucket_width) - 1;
        let mut retained = std::mem::take(&mut self.retained);
        let mut banks = std::mem::take(&mut self.banks);
        for group in 0..self.groups.slots() {
            retained[group] = false;
            if self.first_bucket[group] > last_bucket {
                continue;
            }
            // Buckets older than every member window are read by no later
            // tick (rows for them would be late).
            for cells in &mut self.cells {
                let cells = &mut cells[group];
                cells.retain(|cell| !cell.data.is_empty() && cell.bucket >= oldest_kept);
                if cells.is_empty() {
                    *cells = Vec::new();
                } else if cells.capacity() > 2 * cells.len() {
                    cells.shrink_to_fit();
                }
                retained[group] |= !cells.is_empty();
            }
        }
        for &member in &self.members {
            let shared = (&mut retained[..], &mut banks[..]);
            rules[member].evaluate_tick(tick, member, self, shared, output, sample);
        }
        for (group, kept) in retained.iter().enumerate().take(self.groups.slots()) {
            let evaluated = self.first_bucket[group] <= last_bucket;
            if evaluated && !kept {
                self.evicted += 1;
                self.first_bucket[group] = NO_BUCKET;
                self.groups.release(group);
            }
        }
        self.retained = retained;
        self.banks = banks;
    }

    /// Appends the indices of the columns the table reads.
    pub(crate) fn referenced_columns(&self, out: &mut Vec<usize>) {
        crate::engine::predicate_columns(&self.filter, out);
        for filter in &self.segment_filters {
            crate::engine::predicate_columns(filter, out);
        }
        crate::engine::predicate_columns(&self.error_predicate, out);
        out.extend(&self.group_columns);
        for layout in &self.layouts {
            out.extend(&layout.moment_columns);
            out.extend(&layout.sketch_columns);
            out.extend(&layout.distinct_columns);
            out.extend(&layout.sample_columns);
        }
    }
}
