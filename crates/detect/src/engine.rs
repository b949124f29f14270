//! The streaming, event-time window engine.
//!
//! Each rule reads a [`CellTable`]: per group key and segment, the buckets
//! of fixed width that hold rows, each a mergeable [`Summary`] (or, while
//! the bucket has few rows, the rows themselves: [`crate::summary::BucketData`]).
//! Rules that select, group and tick alike share one table (see
//! [`crate::table`]). A batch is processed per table in three steps:
//!
//! 1. filters and segments are evaluated on the whole batch with Arrow
//!    kernels ([`evaluate_predicate`]), giving one bitmap each;
//! 2. selected rows are mapped to a (group, bucket) cell — group keys are
//!    interned once per distinct dictionary value, not per row;
//! 3. each summary kind is updated in one tight typed loop over the
//!    (row, cell) pairs.
//!
//! Then each member rule reads its own aggregates from the cells at every
//! tick: this file holds the rules' side (conditions, detectors, alert
//! transitions, explanations), `table.rs` the rows' side. Beside it,
//! `engine/lifecycle.rs` keeps each group's alert state between ticks,
//! `engine/columns.rs` reads Arrow columns for the tables and samples, and
//! `engine/wording.rs` writes an alert's one-line summary.
//!
//! Time is event time. Each row comes with the clock at its arrival: the
//! ingest guard's (`Engine::observe_at`), or the engine's own
//! [`AgreedClock`] (`Engine::observe`), never simply the newest timestamp,
//! so one line dated 2100 cannot end every window. The watermark is that
//! clock minus the rule's allowed lateness; a tick `t` (a multiple of
//! `every`) is evaluated over the window `[t - window, t)` as soon as the
//! watermark reaches `t`. A batch is cut at every row that moves the
//! watermark past a tick, so the result is exactly what row-at-a-time
//! processing would give: the same input yields the same alerts whatever the
//! batch sizes. Rows older than the last evaluated tick are late: they are
//! counted and dropped. Rows further ahead of the clock than `max_future`
//! are counted as `future_events` and dropped, so that one line far ahead
//! cannot hold cells (or a slot of the totals ring) for long.
//!
//! Alerts are released in (time, rule, group) order once every rule has
//! evaluated past their time, so the output order is deterministic too.

use std::collections::BTreeMap;
use std::sync::Arc;

use ahash::AHashMap;
use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef, TimestampNanosecondType};
use arrow::record_batch::RecordBatch;
use inferwatch_core::{
    column, fingerprint, format_timestamp, AgreedClock, Alert, AlertState, Contributor, Impact,
    RoleVocabulary, AB_ROLE, DEFAULT_MAX_FUTURE_NANOS,
};
use serde::Serialize;

use crate::condition::Subject;
use crate::condition::{
    compile_condition, evaluate, AggregateKind, CompiledCondition, HeldTimers, SummaryPart, Witness,
};
use crate::detector::{
    format_span, judge_drift, median_of_sorted, BaselineGroup, Detector, DriftReference,
    EntityForest, Finding,
};
use crate::explain::{Bad, Query, RowSample, WindowCounts, DEFAULT_EXPLAIN_ROWS};
use crate::expr::CompareOp;
use crate::filter::{compile_predicate, evaluate_predicate, NumericExpr, RowPredicate};
use crate::network::CLIENT_NETWORK;
use crate::reference::ReferenceStore;
use crate::roles::RoleBook;
use crate::rule::Rule;
use crate::summary::{BottomSample, Summary, SummaryLayout, Wanted};
use crate::table::{BaselineBank, Cell, CellTable, GroupTable, SharingKey, TickOutput};
pub(crate) use crate::table::{ValueInterner, NULL_VALUE};

mod columns;
mod lifecycle;
mod wording;

use crate::DetectError;
pub(crate) use columns::{column_value_ids, float_column, sample_rank, BatchColumns};
pub(crate) use lifecycle::HoldLog;
use lifecycle::{AlertStates, Lifecycle, LiveAlert};
use wording::{number, one_line, round_half};

/// Counters the engine exposes for progress reporting and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EngineStats {
    /// Rows observed.
    pub events: u64,
    /// Rows dropped as later than the allowed lateness, summed over rules.
    pub late_events: u64,
    /// Largest event time seen (ns), if any.
    pub max_event_time: Option<i64>,
    /// The clock of the last row (ns): "now" as the events agree on it.
    pub clock: Option<i64>,
    /// Rows dropped as too far ahead of the clock, summed over rules.
    pub future_events: u64,
    /// Alert transitions released.
    pub transitions: u64,
}

/// What a rule holds right now, for tests and the UI.
#[derive(Debug, Clone, Serialize)]
pub struct RuleState {
    /// Rule id.
    pub rule_id: String,
    /// Group keys tracked (by the rule's table, which other rules may share).
    pub groups: usize,
    /// Groups currently firing.
    pub firing: Vec<BTreeMap<String, String>>,
    /// Groups currently pending.
    pub pending: usize,
    /// Next tick to evaluate (RFC 3339).
    pub next_tick: Option<String>,
    /// Rows dropped as late.
    pub late_events: u64,
    /// Cells held by the rule's table (a cell per group, segment and bucket with rows).
    pub cells: usize,
    /// Most groups tracked at once.
    pub peak_groups: usize,
    /// Groups forgotten after going idle (their ids are reused).
    pub evicted_groups: u64,
    /// Rows skipped because their new key found the table at `max_groups`.
    pub refused_rows: u64,
    /// Cells holding rows now.
    pub live_cells: usize,
    /// Approximate bytes of learned detector state (baselines, forest).
    pub detector_bytes: usize,
    /// Vectors a forest detector has learned.
    pub forest_learned: Option<u64>,
    /// The score a forest detector judges the next tick against (its
    /// calibrated threshold, or the fixed one).
    pub forest_threshold: Option<f64>,
}

/// Runs a set of rules over a stream of batches.
pub struct Engine {
    rules: Vec<RuleRuntime>,
    /// The rules' keyed cells, shared where rules read alike ([`CellTable`]),
    /// in the order their first member was loaded.
    tables: Vec<CellTable>,
    /// One per `confirm` edge: when the confirming rule last held, per key.
    hold_logs: Vec<HoldLog>,
    outbox: Vec<(i64, usize, String, Alert)>,
    timestamp_column: usize,
    stats: EngineStats,
    /// The schema the rules were compiled against (names their columns).
    schema: SchemaRef,
    /// Recent rows for alert impact and explanation.
    sample: RowSample,
    error_predicate: RowPredicate,
    /// The clock [`Engine::observe`] keeps when no clock is given.
    own_clock: AgreedClock,
    /// Fills `ab_role`, when the engine adds that column (see [`crate::roles`]).
    roles: Option<RoleColumn>,
    /// Fills `client_network` ([`crate::network`]): `Some(read)` when the
    /// engine adds that column, `read` when a rule reads it (else nulls).
    network: Option<bool>,
}

/// The `ab_role` column the engine appends to each batch.
struct RoleColumn {
    book: RoleBook,
    /// Whether a rule reads it; when none does, nulls are appended instead.
    read: bool,
}

/// `schema` with `ab_role` and `client_network` appended, unless the
/// events carry their own.
fn with_derived_columns(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    for (name, data_type) in [
        (AB_ROLE, crate::roles::role_type()),
        (CLIENT_NETWORK, crate::network::network_type()),
    ] {
        if schema.index_of(name).is_err() {
            fields.push(Arc::new(arrow::datatypes::Field::new(
                name, data_type, true,
            )));
        }
    }
    if fields.len() == schema.fields().len() {
        return schema.clone();
    }
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

impl Engine {
    /// Compiles `rules` against the schema of the batches that will be observed.
    pub fn new(rules: Vec<Rule>, schema: &SchemaRef) -> Result<Engine, DetectError> {
        let adds_roles = schema.index_of(AB_ROLE).is_err();
        let adds_network = schema.index_of(CLIENT_NETWORK).is_err();
        let schema = &with_derived_columns(schema);
        let timestamp_column = schema.index_of(column::TIMESTAMP).map_err(|_| {
            DetectError::Internal("the event schema has no timestamp column".into())
        })?;
        let rules = order_for_confirmation(rules)?;
        let mut runtimes: Vec<RuleRuntime> = Vec::with_capacity(rules.len());
        let mut tables: Vec<CellTable> = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            let own = RuleRuntime::table_for(rule, schema)?;
            // Tables run in order: a rule may join a table only if the rule
            // that confirms it runs in that table or an earlier one.
            let source_table = rule.confirm.as_ref().and_then(|confirm| {
                let source = rules[..index]
                    .iter()
                    .position(|r| r.id == confirm.rule_id)?;
                Some(runtimes[source].table)
            });
            let shared = tables.iter().position(|table| table.key == own.key);
            let table_index = match shared {
                Some(shared) if source_table.is_none_or(|source| source <= shared) => shared,
                _ => {
                    tables.push(own);
                    tables.len() - 1
                }
            };
            let runtime =
                RuleRuntime::new(rule.clone(), schema, table_index, &mut tables[table_index])?;
            tables[table_index].join(index, rule.window);
            runtimes.push(runtime);
        }
        let mut hold_logs = Vec::new();
        for (reader, rule) in rules.iter().enumerate() {
            let Some(confirm) = &rule.confirm else {
                continue;
            };
            let source = rules
                .iter()
                .position(|other| other.id == confirm.rule_id)
                .ok_or_else(|| DetectError::Internal("confirm source vanished".into()))?;
            let positions = |rule: &Rule| -> Result<Vec<usize>, DetectError> {
                confirm
                    .on
                    .iter()
                    .map(|column| {
                        rule.group_by
                            .iter()
                            .position(|(name, _, _)| name == column)
                            .ok_or_else(|| DetectError::Rule {
                                path: rules[reader].source.path.clone(),
                                line: confirm.position.0,
                                column: confirm.position.1,
                                token: Some(column.clone()),
                                message: format!(
                                    "confirm.on column '{column}' is not in the group_by of rule '{}'",
                                    rule.id
                                ),
                            })
                    })
                    .collect()
            };
            let edge = hold_logs.len();
            runtimes[source]
                .writes
                .push((edge, positions(&rules[source])?));
            runtimes[reader].reads = Some((edge, positions(rule)?));
            hold_logs.push(HoldLog {
                last_held: AHashMap::default(),
                within: confirm.within,
                pruned_size: 0,
            });
        }
        let mut bit = 1;
        for runtime in &mut runtimes {
            runtime.sample_bit = bit;
            bit += runtime.segments + 1;
        }
        let sample = build_sample(&runtimes, &tables, schema, bit, DEFAULT_EXPLAIN_ROWS);
        let error_predicate = match schema.index_of(column::STATUS) {
            Ok(index) => RowPredicate::TextIn {
                column: index,
                values: vec!["error".to_string()],
                negated: false,
            },
            Err(_) => RowPredicate::Constant(false),
        };
        let mut engine = Engine {
            rules: runtimes,
            tables,
            hold_logs,
            outbox: Vec::new(),
            timestamp_column,
            stats: EngineStats::default(),
            schema: schema.clone(),
            sample,
            error_predicate,
            own_clock: AgreedClock::new(),
            roles: None,
            network: None,
        };
        let referenced = engine.referenced_columns();
        if adds_network {
            engine.network = Some(referenced.iter().any(|name| name == CLIENT_NETWORK));
        }
        if adds_roles {
            let read = referenced.iter().any(|name| name == AB_ROLE);
            engine.roles = Some(RoleColumn {
                book: RoleBook::new(RoleVocabulary::default()),
                read,
            });
        }
        Ok(engine)
    }

    /// Sets the words that name the baseline and canary arms in `ab_group`
    /// (the defaults plus a mapping's `roles:`). Call it before the first
    /// batch.
    pub fn with_roles(mut self, vocabulary: RoleVocabulary) -> Engine {
        if let Some(roles) = &mut self.roles {
            roles.book = RoleBook::new(vocabulary);
        }
        self
    }

    /// `batch` with the `ab_role` and `client_network` columns appended,
    /// where the engine adds them.
    fn with_derived_of(&mut self, batch: &RecordBatch) -> Option<RecordBatch> {
        if self.roles.is_none() && self.network.is_none() {
            return None;
        }
        let mut columns = batch.columns().to_vec();
        if let Some(roles) = self.roles.as_mut() {
            columns.push(if roles.read {
                roles.book.assign(batch)
            } else {
                arrow::array::new_null_array(&crate::roles::role_type(), batch.num_rows())
            });
        }
        match self.network {
            Some(true) => columns.push(crate::network::network_column(batch)),
            Some(false) => columns.push(arrow::array::new_null_array(
                &crate::network::network_type(),
                batch.num_rows(),
            )),
            None => {}
        }
        RecordBatch::try_new(self.schema.clone(), columns).ok()
    }

    /// Sets how far ahead of the clock a row may be and still be counted
    /// ([`DEFAULT_MAX_FUTURE_NANOS`] by default; match the ingest guard's).
    /// Call it before the first batch.
    pub fn with_max_future(mut self, max_future: i64) -> Engine {
        for table in &mut self.tables {
            table.set_max_future(max_future.max(0));
        }
        self
    }

    /// Sets the row budget of the sample that alert impact and explanation
    /// read ([`DEFAULT_EXPLAIN_ROWS`] by default; 0 turns it off). Call it
    /// before the first batch.
    pub fn with_explain_rows(mut self, rows: usize) -> Engine {
        let bits = self
            .rules
            .last()
            .map_or(1, |rule| rule.sample_bit + rule.segments + 1);
        self.sample = build_sample(&self.rules, &self.tables, &self.schema, bits, rows);
        self
    }

    /// Rows the explanation sample holds now.
    pub fn explain_rows(&self) -> usize {
        self.sample.rows()
    }

    /// The names of the columns the rules read: filter and segment
    /// predicates, `group_by`, aggregate columns, plus `status` (read by
    /// `errors` and `error_rate`), `timestamp` and `stream`, and what the
    /// derived `ab_role` and `client_network` are made of. Sorted, without
    /// duplicates; a decoder needs to fill no other column for these rules.
    pub fn referenced_columns(&self) -> Vec<String> {
        let mut indices = vec![self.timestamp_column];
        for table in &self.tables {
            table.referenced_columns(&mut indices);
        }
        self.sample.referenced_columns(&mut indices);
        let mut names: Vec<String> = indices
            .into_iter()
            .filter(|&index| index < self.schema.fields().len())
            .map(|index| self.schema.field(index).name().clone())
            .chain([column::STATUS, column::STREAM, column::TIMESTAMP].map(String::from))
            .collect();
        // The columns the engine derives read others.
        let mut sources: Vec<String> = Vec::new();
        for name in &names {
            match name.as_str() {
                AB_ROLE => sources.extend(
                    [column::AB_GROUP, column::MODEL_ID, column::MODEL_VERSION].map(String::from),
                ),
                CLIENT_NETWORK => sources.push(column::CLIENT_IP.to_string()),
                _ => {}
            }
        }
        names.extend(sources);
        names.sort();
        names.dedup();
        names
    }

    /// Validates `rules` against a schema without running them.
    pub fn check(rules: &[Rule], schema: &SchemaRef) -> Vec<DetectError> {
        let schema = &with_derived_columns(schema);
        let errors: Vec<DetectError> = rules
            .iter()
            .filter_map(|rule| {
                RuleRuntime::table_for(rule, schema)
                    .and_then(|mut table| {
                        RuleRuntime::new(rule.clone(), schema, 0, &mut table).map(|_| ())
                    })
                    .err()
            })
            .collect();
        if !errors.is_empty() {
            return errors;
        }
        // Then what only the set shows: `confirm` edges.
        Engine::new(rules.to_vec(), schema)
            .err()
            .into_iter()
            .collect()
    }

    /// `rule` and, transitively, the loaded rules that confirm it: what must
    /// run together for `rule` to be judged on its own.
    pub fn with_confirming_rules(rule: &Rule, loaded: &[Rule]) -> Vec<Rule> {
        let mut chosen = vec![rule.clone()];
        let mut index = 0;
        while index < chosen.len() {
            if let Some(confirm) = chosen[index].confirm.clone() {
                let known = chosen.iter().any(|r| r.id == confirm.rule_id);
                if let (false, Some(source)) =
                    (known, loaded.iter().find(|r| r.id == confirm.rule_id))
                {
                    chosen.push(source.clone());
                }
            }
            index += 1;
        }
        chosen
    }

    /// Feeds one batch, keeping the engine's own clock (the third-newest
    /// event time, see [`AgreedClock`]); returns the alert transitions that
    /// became final.
    pub fn observe(&mut self, batch: &RecordBatch) -> Vec<Alert> {
        let Some(timestamps) = batch
            .column(self.timestamp_column)
            .as_primitive_opt::<TimestampNanosecondType>()
        else {
            return Vec::new();
        };
        let clock = self.own_clock.observe_all(timestamps.values());
        self.observe_at(batch, &clock)
    }

    /// Feeds one batch whose rows arrived at `clock` (one non-decreasing
    /// value per row, e.g. from the ingest guard); returns the alert
    /// transitions that became final.
    pub fn observe_at(&mut self, batch: &RecordBatch, clock: &[i64]) -> Vec<Alert> {
        let with_roles = if batch.num_rows() > 0 {
            self.with_derived_of(batch)
        } else {
            None
        };
        let derives = self.roles.is_some() || self.network.is_some();
        if derives && batch.num_rows() > 0 && with_roles.is_none() {
            // Not of the schema the rules were compiled against: reading
            // its columns by position would be wrong, so it is not read.
            return Vec::new();
        }
        let batch = with_roles.as_ref().unwrap_or(batch);
        if batch.num_rows() > 0 && clock.len() == batch.num_rows() {
            let Some(timestamps) = batch
                .column(self.timestamp_column)
                .as_primitive_opt::<TimestampNanosecondType>()
            else {
                return Vec::new();
            };
            let timestamps = timestamps.values();
            self.stats.events += batch.num_rows() as u64;
            // The clock, shared by every rule: each rule finds where its
            // watermark crosses a tick by binary search on it.
            let floor = self.stats.clock.unwrap_or(i64::MIN);
            let mut running = floor;
            let prefix_max: Vec<i64> = clock
                .iter()
                .map(|&now| {
                    running = running.max(now);
                    running
                })
                .collect();
            let newest = timestamps.iter().copied().max().unwrap_or(i64::MIN);
            self.stats.max_event_time = Some(
                self.stats
                    .max_event_time
                    .map_or(newest, |seen| seen.max(newest)),
            );
            let errors = evaluate_predicate(&self.error_predicate, batch);
            self.sample.stage(batch, timestamps, &prefix_max, &errors);
            let mut output = TickOutput {
                outbox: &mut self.outbox,
                hold_logs: &mut self.hold_logs,
            };
            let mut columns = BatchColumns::new(batch, errors);
            for table in &mut self.tables {
                table.observe(
                    &mut columns,
                    (timestamps, &prefix_max),
                    &mut self.rules,
                    &mut output,
                    &mut self.sample,
                );
            }
            self.sample.commit(self.window_horizon());
            let tables = &self.tables;
            self.stats.clock = prefix_max.last().copied().filter(|now| *now != i64::MIN);
            // Per rule, as before tables were shared.
            let per_rule = |count: fn(&CellTable) -> u64| -> u64 {
                self.rules.iter().map(|r| count(&tables[r.table])).sum()
            };
            self.stats.late_events = per_rule(|table| table.late_events);
            self.stats.future_events = per_rule(|table| table.future_events);
        }
        self.release(self.evaluated_horizon())
    }

    /// No future window of any rule starts before this.
    fn window_horizon(&self) -> i64 {
        let tables = &self.tables;
        self.rules
            .iter()
            .map(|rule| {
                tables[rule.table]
                    .next_tick
                    .map_or(i64::MIN, |tick| tick - rule.rule.window)
            })
            .min()
            .unwrap_or(i64::MIN)
    }

    /// Every table has evaluated through this tick.
    fn evaluated_horizon(&self) -> i64 {
        self.tables
            .iter()
            .map(CellTable::last_evaluated_tick)
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Moves the clock to `clock` without rows (a heartbeat while live
    /// inputs are silent) and returns the transitions that became final:
    /// every tick the watermark passes is judged, as if a row had arrived at
    /// that clock. A clock behind the current one changes nothing.
    pub fn advance_clock(&mut self, clock: i64) -> Vec<Alert> {
        let now = self.stats.clock.map_or(clock, |seen| seen.max(clock));
        self.stats.clock = Some(now);
        let mut output = TickOutput {
            outbox: &mut self.outbox,
            hold_logs: &mut self.hold_logs,
        };
        for table in &mut self.tables {
            let watermark = now.saturating_sub(table.key.allowed_lateness);
            table.advance_to(watermark, &mut self.rules, &mut output, &self.sample);
        }
        self.sample.commit(self.window_horizon());
        self.release(self.evaluated_horizon())
    }

    /// Evaluates every tick up to the clock (the lateness wait is over: no
    /// more input is coming) and returns the remaining transitions. The
    /// clock, not the newest event: one line far ahead must not stretch the
    /// last windows over empty time either.
    pub fn finish(&mut self) -> Vec<Alert> {
        let end = match self.own_clock.seen() {
            0 => self.stats.clock,
            _ => self.own_clock.settled(),
        };
        if let Some(end) = end {
            let mut output = TickOutput {
                outbox: &mut self.outbox,
                hold_logs: &mut self.hold_logs,
            };
            for table in &mut self.tables {
                table.advance_to(end, &mut self.rules, &mut output, &self.sample);
            }
        }
        self.release(i64::MAX)
    }

    /// Counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Per-rule state, for tests and the UI.
    pub fn observable_state(&self) -> Vec<RuleState> {
        self.rules
            .iter()
            .map(|rule| rule.state(&self.tables[rule.table]))
            .collect()
    }

    /// The ids of the loaded rules.
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|runtime| runtime.rule.id.as_str())
    }

    /// How far an alert transition's time may lag the newest event time
    /// when it is released: a tick waits for the allowed lateness, and ticks
    /// come every `every`.
    pub fn alert_delay(&self) -> i64 {
        self.rules
            .iter()
            .map(|runtime| runtime.rule.allowed_lateness + runtime.rule.every)
            .max()
            .unwrap_or(0)
    }

    fn release(&mut self, horizon: i64) -> Vec<Alert> {
        if self.outbox.is_empty() {
            return Vec::new();
        }
        self.outbox
            .sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
        let ready = self.outbox.partition_point(|entry| entry.0 <= horizon);
        let released: Vec<Alert> = self.outbox.drain(..ready).map(|entry| entry.3).collect();
        self.stats.transitions += released.len() as u64;
        released
    }
}

/// One rule: its condition, detector and alert state per group. Its rows,
/// keys and cells are in its [`CellTable`] (`table`), which it may share.
pub(crate) struct RuleRuntime {
    rule: Rule,
    /// Its table in the engine.
    table: usize,
    /// Segments besides the whole (their sample bits follow the rule's).
    segments: usize,
    condition: CompiledCondition,
    /// Per condition aggregate: its segment, and the aggregate re-targeted
    /// from a schema column to a position in that segment's summary layout.
    slots: Vec<(usize, AggregateKind)>,
    /// Per segment, the summary parts `slots` read (a window merges only these).
    wanted: Vec<Wanted>,
    alert_states: AlertStates,
    detector: DetectorRuntime,
    /// Confirm edges this rule feeds: (log, positions of the key columns in group_by).
    writes: Vec<(usize, Vec<usize>)>,
    /// The confirm edge this rule reads, if it has a `confirm` block.
    reads: Option<(usize, Vec<usize>)>,
    /// Coarse pasts: the drift reference (when it needs one) and the
    /// explanation's column.
    references: Vec<ReferenceStore>,
    /// Index of the drift detector's store in `references`.
    drift_reference: Option<usize>,
    /// The drift column's position among the table's samples, and the
    /// sample size this rule judges (a shared layout may keep more).
    drift_sample: (usize, usize),
    /// The explanation: its store in `references` and its column's position
    /// among segment 0's samples.
    explain: Option<(usize, usize)>,
    /// This rule's filter bit in the engine's row sample; its segments follow.
    pub(crate) sample_bit: usize,
    /// Position of `client_id` among segment 0's distinct columns, for
    /// distinct clients when the sample holds only part of a window.
    client_distinct: Option<usize>,
    /// `client_id` is a group_by column: a group is one client.
    client_in_key: bool,
    /// The event schema (names columns in summaries).
    schema: SchemaRef,
}

/// Puts every rule after the rule that confirms it, so a confirming finding
/// at a tick is known before the dependent rule evaluates that tick.
fn order_for_confirmation(rules: Vec<Rule>) -> Result<Vec<Rule>, DetectError> {
    let mut pending = rules;
    let mut ordered: Vec<Rule> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let ready = pending.iter().position(|rule| {
            rule.confirm
                .as_ref()
                .is_none_or(|confirm| ordered.iter().any(|done| done.id == confirm.rule_id))
        });
        match ready {
            Some(index) => ordered.push(pending.remove(index)),
            None => {
                let rule = &pending[0];
                let confirm = rule
                    .confirm
                    .as_ref()
                    .map(|c| (c.rule_id.clone(), c.position));
                let (id, (line, column)) = confirm.unwrap_or_default();
                let known = pending.iter().any(|other| other.id == id);
                return Err(DetectError::Rule {
                    path: rule.source.path.clone(),
                    line,
                    column,
                    token: Some(id.clone()),
                    message: if known {
                        "confirm rules form a cycle".into()
                    } else {
                        format!("confirm names rule '{id}', which is not loaded")
                    },
                });
            }
        }
    }
    Ok(ordered)
}

/// Values sampled per side for an input-shift explanation.
const EXPLAIN_SAMPLE: usize = 1_000;

/// The samples a drift rule judges at one tick: ready per group, or, for a
/// `rest_of` reference, the parts each group's rest is cut from on demand
/// (only groups whose condition holds are judged).
enum DriftInputs {
    Ready(Vec<(Vec<f64>, Vec<f64>)>),
    /// Each group's own sample is merged again when it is judged: keeping
    /// every group's for the tick would cost a sample per client.
    RestOf {
        active: Vec<bool>,
        families: Vec<u32>,
        family_ranked: Vec<Vec<(u64, u64)>>,
        capacity: usize,
    },
}

impl DriftInputs {
    /// The group's subject and reference values, sorted (each group once per tick).
    fn for_group(
        &mut self,
        group: usize,
        subject: impl FnOnce() -> BottomSample,
    ) -> (Vec<f64>, Vec<f64>) {
        match self {
            DriftInputs::Ready(samples) => samples
                .get_mut(group)
                .map(std::mem::take)
                .unwrap_or_default(),
            DriftInputs::RestOf {
                active,
                families,
                family_ranked,
                capacity,
            } => {
                if !active.get(group).copied().unwrap_or(false) {
                    return (Vec::new(), Vec::new());
                }
                let mut subject = subject();
                let own = subject.ranked();
                let rest = BottomSample::bottom_excluding(
                    &family_ranked[families[group] as usize],
                    &own,
                    *capacity,
                );
                (subject.values(), rest)
            }
        }
    }
}

/// A group's sample of one column (`(position, capacity)` among its
/// table's samples) over the buckets `in_window` keeps.
fn window_sample(
    table: &CellTable,
    segment: usize,
    group: usize,
    (position, capacity): (usize, usize),
    in_window: &dyn Fn(i64) -> bool,
) -> BottomSample {
    let mut sample = BottomSample::with_capacity(capacity);
    for cell in &table.cells[segment][group] {
        if in_window(cell.bucket) {
            cell.data.merge_sample_into(position, &mut sample);
        }
    }
    sample
}

/// A drift group whose family is not computed yet.
const UNKNOWN_FAMILY: u32 = u32::MAX;

/// Per-rule runtime state of its detector, if any.
enum DetectorRuntime {
    None,
    /// Its learned baselines: a bank of its table (see [`BaselineBank`]).
    Baseline {
        bank: usize,
    },
    Forest(Box<EntityForest>),
    Drift {
        /// Segment whose values are under test.
        subject_segment: usize,
        /// The reference segment, or None when the reference is the rest of a group_by column.
        reference_segment: Option<usize>,
        /// For `rest_of`: each group's family (its key without that column).
        families: Vec<u32>,
        family_ids: AHashMap<String, u32>,
        /// Position of the `rest_of` column in `group_by`.
        rest_of: Option<usize>,
        /// How the reference reads in evidence.
        reference_name: String,
    },
}

pub(crate) fn predicate_columns(predicate: &RowPredicate, out: &mut Vec<usize>) {
    match predicate {
        RowPredicate::Constant(_) => {}
        RowPredicate::TextIn { column, .. } | RowPredicate::IsNull { column, .. } => {
            out.push(*column)
        }
        RowPredicate::Numeric { left, right, .. } => {
            numeric_columns(left, out);
            numeric_columns(right, out);
        }
        RowPredicate::And(left, right) | RowPredicate::Or(left, right) => {
            predicate_columns(left, out);
            predicate_columns(right, out);
        }
        RowPredicate::Not(inner) => predicate_columns(inner, out),
    }
}

fn numeric_columns(expr: &NumericExpr, out: &mut Vec<usize>) {
    match expr {
        NumericExpr::Column(column) => out.push(*column),
        NumericExpr::Constant(_) => {}
        NumericExpr::Arith(_, left, right) => {
            numeric_columns(left, out);
            numeric_columns(right, out);
        }
        NumericExpr::Negate(inner) => numeric_columns(inner, out),
    }
}

/// The schema index of a column a rule names at `position` in its file.
fn column_at(
    schema: &SchemaRef,
    rule: &Rule,
    name: &str,
    position: (usize, usize),
) -> Result<usize, DetectError> {
    schema.index_of(name).map_err(|_| DetectError::Rule {
        path: rule.source.path.clone(),
        line: position.0,
        column: position.1,
        token: Some(name.to_string()),
        message: format!("unknown column '{name}'"),
    })
}

/// The position of the (column, class) sample in `layout`, added if new.
fn sample_position(layout: &mut SummaryLayout, column: usize, class: Option<usize>) -> usize {
    let known = (layout.sample_columns.iter())
        .zip(&layout.sample_classes)
        .position(|(c, k)| *c == column && *k == class);
    known.unwrap_or_else(|| {
        layout.sample_columns.push(column);
        layout.sample_classes.push(class);
        layout.sample_columns.len() - 1
    })
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl DetectorRuntime {
    /// Drops what the detector keeps for a group whose id is being reused.
    fn forget(&mut self, group: usize) {
        match self {
            // The table forgets its baseline banks' groups itself.
            DetectorRuntime::Baseline { .. } => {}
            DetectorRuntime::Drift { families, .. } => {
                if let Some(family) = families.get_mut(group) {
                    *family = UNKNOWN_FAMILY;
                }
            }
            DetectorRuntime::Forest(_) | DetectorRuntime::None => {}
        }
    }
}

impl RuleRuntime {
    /// The table a rule needs: what it selects, segments and groups by.
    fn table_for(rule: &Rule, schema: &SchemaRef) -> Result<CellTable, DetectError> {
        let text_equals = |name: &str, value: &str| -> Option<RowPredicate> {
            let index = schema.index_of(name).ok()?;
            Some(RowPredicate::TextIn {
                column: index,
                values: vec![value.to_string()],
                negated: false,
            })
        };
        let mut filter =
            text_equals(column::STREAM, &rule.stream).unwrap_or(RowPredicate::Constant(true));
        if let Some(located) = &rule.filter {
            let compiled = compile_predicate(&located.expr, schema)
                .map_err(|e| rule.expression_error(located, &e))?;
            filter = RowPredicate::And(Box::new(filter), Box::new(compiled));
        }
        let mut segment_filters = Vec::new();
        for (_, located) in &rule.segments {
            segment_filters.push(
                compile_predicate(&located.expr, schema)
                    .map_err(|e| rule.expression_error(located, &e))?,
            );
        }
        let error_predicate =
            text_equals(column::STATUS, "error").unwrap_or(RowPredicate::Constant(false));
        let mut group_columns = Vec::new();
        for (index, (name, _, _)) in rule.group_by.iter().enumerate() {
            let column = schema
                .index_of(name)
                .map_err(|_| rule.group_by_error(index, format!("unknown column '{name}'")))?;
            if matches!(
                schema.field(column).data_type(),
                DataType::List(_) | DataType::Map(..) | DataType::Struct(_)
            ) {
                return Err(
                    rule.group_by_error(index, format!("column '{name}' can't be grouped by"))
                );
            }
            group_columns.push(column);
        }
        let key = SharingKey {
            stream: rule.stream.clone(),
            filter: rule.filter.as_ref().map(|located| located.text.clone()),
            segments: rule
                .segments
                .iter()
                .map(|(name, located)| (name.clone(), located.text.clone()))
                .collect(),
            group_by: rule
                .group_by
                .iter()
                .map(|(name, _, _)| name.clone())
                .collect(),
            bucket_width: gcd(rule.window, rule.every),
            every: rule.every,
            allowed_lateness: rule.allowed_lateness,
            max_groups: rule.max_groups,
        };
        Ok(CellTable::new(
            key,
            filter,
            segment_filters,
            error_predicate,
            group_columns,
            DEFAULT_MAX_FUTURE_NANOS,
        ))
    }

    /// Compiles `rule` against `table` (index `table_index`), whose layouts
    /// it extends with the summaries it reads.
    fn new(
        rule: Rule,
        schema: &SchemaRef,
        table_index: usize,
        table: &mut CellTable,
    ) -> Result<RuleRuntime, DetectError> {
        let condition = compile_condition(&rule, schema)?;
        let mut slots = Vec::new();
        fn position_of(list: &mut Vec<usize>, column: usize) -> usize {
            match list.iter().position(|c| *c == column) {
                Some(index) => index,
                None => {
                    list.push(column);
                    list.len() - 1
                }
            }
        }
        for aggregate in &condition.aggregates {
            let layout = &mut table.layouts[aggregate.segment];
            let slot = match aggregate.kind.column() {
                None => aggregate.kind,
                Some(column) => {
                    let columns = match aggregate.kind.part() {
                        SummaryPart::Moments => &mut layout.moment_columns,
                        SummaryPart::Sketch => &mut layout.sketch_columns,
                        // Counts read no column, so they never get here.
                        SummaryPart::Distinct | SummaryPart::Counts => &mut layout.distinct_columns,
                    };
                    aggregate.kind.with_column(position_of(columns, column))
                }
            };
            slots.push((aggregate.segment, slot));
        }
        let mut wanted = vec![Wanted::default(); table.layouts.len()];
        for &(segment, slot) in &slots {
            let parts = &mut wanted[segment];
            match slot {
                AggregateKind::Sum(i)
                | AggregateKind::Avg(i)
                | AggregateKind::Min(i)
                | AggregateKind::Max(i)
                | AggregateKind::Stddev(i) => Wanted::mark(&mut parts.moments, i),
                AggregateKind::Quantile(i, _) => Wanted::mark(&mut parts.sketches, i),
                AggregateKind::Distinct(i) => Wanted::mark(&mut parts.distinct, i),
                AggregateKind::Count
                | AggregateKind::Rate
                | AggregateKind::Errors
                | AggregateKind::ErrorRate => {}
            }
        }
        let mut references: Vec<ReferenceStore> = Vec::new();
        let mut drift_reference = None;
        let mut drift_sample = (0, 0);
        let segment_index = |name: &str| -> usize {
            rule.segments
                .iter()
                .position(|(segment, _)| segment == name)
                .map_or(0, |index| index + 1)
        };
        let detector = match &rule.detector {
            None => DetectorRuntime::None,
            Some(Detector::Baseline(spec)) => DetectorRuntime::Baseline {
                bank: table.bank_for(format!(
                    "{} {} {:?} {} {} {:?} {}",
                    rule.window,
                    spec.series.text,
                    spec.config,
                    spec.trigger,
                    spec.recover,
                    spec.direction,
                    spec.new_keys_from_zero
                )),
            },
            Some(Detector::Forest(forest)) => {
                DetectorRuntime::Forest(Box::new(EntityForest::new(forest, rule.every)?))
            }
            Some(Detector::Drift(drift)) => {
                let column = column_at(schema, &rule, &drift.column, drift.column_position)?;
                let list_of_numbers = matches!(
                    schema.field(column).data_type(),
                    DataType::List(item) if item.data_type().is_numeric()
                );
                if list_of_numbers != drift.class.is_some()
                    || !(list_of_numbers || schema.field(column).data_type().is_numeric())
                {
                    return Err(DetectError::Rule {
                        path: rule.source.path.clone(),
                        line: drift.column_position.0,
                        column: drift.column_position.1,
                        token: Some(drift.column.clone()),
                        message: format!(
                            "drift compares a numeric column, or one class of a list column with `class: N`; '{}' is {}",
                            drift.column,
                            schema.field(column).data_type()
                        ),
                    });
                }
                let subject_segment = drift.subject.as_deref().map_or(0, segment_index);
                let (reference_segment, rest_of, reference_name) = match &drift.reference {
                    DriftReference::Segment(name) => {
                        (Some(segment_index(name)), None, format!("segment {name}"))
                    }
                    DriftReference::RestOf(name) => (
                        None,
                        rule.group_by
                            .iter()
                            .position(|(column, _, _)| column == name),
                        format!("rest of {name}"),
                    ),
                    DriftReference::Trailing(span) | DriftReference::Previous(span) => {
                        references.push(ReferenceStore::new(
                            (column, drift.class),
                            subject_segment,
                            *span,
                            span + rule.window,
                            gcd(rule.window, rule.every),
                            drift.sample_size,
                        ));
                        drift_reference = Some(references.len() - 1);
                        let name = match &drift.reference {
                            DriftReference::Trailing(_) => {
                                format!("trailing {}", format_span(*span))
                            }
                            _ => format!("{} earlier", format_span(*span)),
                        };
                        (None, None, name)
                    }
                };
                let mut position = 0;
                for segment in std::iter::once(subject_segment).chain(reference_segment) {
                    let layout = &mut table.layouts[segment];
                    position = sample_position(layout, column, drift.class);
                    layout.sample_capacity = layout.sample_capacity.max(drift.sample_size);
                }
                // The subject and reference share a position: a segment
                // other than the whole has no other samples.
                let explained_too = rule.explain.is_some() && subject_segment == 0;
                let capacity = if explained_too {
                    drift.sample_size.max(EXPLAIN_SAMPLE)
                } else {
                    drift.sample_size
                };
                drift_sample = (position, capacity);
                DetectorRuntime::Drift {
                    subject_segment,
                    reference_segment,
                    families: Vec::new(),
                    family_ids: AHashMap::default(),
                    rest_of,
                    reference_name,
                }
            }
        };
        let explain = match &rule.explain {
            None => None,
            Some(explain) => {
                let column = column_at(schema, &rule, &explain.column, explain.position)?;
                let layout = &mut table.layouts[0];
                let position = sample_position(layout, column, None);
                layout.sample_capacity = layout.sample_capacity.max(EXPLAIN_SAMPLE);
                references.push(ReferenceStore::new(
                    (column, None),
                    0,
                    explain.trailing,
                    explain.trailing + rule.window,
                    gcd(rule.window, rule.every),
                    EXPLAIN_SAMPLE,
                ));
                Some((references.len() - 1, position))
            }
        };
        let client_column = schema.index_of(column::CLIENT_ID).ok();
        let client_in_key = client_column.is_some_and(|c| table.group_columns.contains(&c));
        let client_distinct = match client_column {
            Some(client) if !client_in_key => {
                Some(position_of(&mut table.layouts[0].distinct_columns, client))
            }
            _ => None,
        };
        Ok(RuleRuntime {
            table: table_index,
            segments: rule.segments.len(),
            condition,
            slots,
            wanted,
            alert_states: AlertStates::default(),
            detector,
            writes: Vec::new(),
            reads: None,
            references,
            drift_reference,
            drift_sample,
            explain,
            sample_bit: 0,
            client_distinct,
            client_in_key,
            schema: schema.clone(),
            rule,
        })
    }

    /// Drops what the rule keeps for a group whose id is being reused.
    pub(crate) fn forget(&mut self, group: usize) {
        self.alert_states.take(group);
        self.detector.forget(group);
        self.references
            .iter_mut()
            .for_each(|store| store.forget(group));
    }

    /// Makes room for `slots` group ids.
    pub(crate) fn grow(&mut self, slots: usize) {
        self.references
            .iter_mut()
            .for_each(|store| store.grow(slots));
    }

    /// Feeds the rule's coarse pasts the slice's rows (`pairs`, per segment).
    pub(crate) fn add_references(
        &mut self,
        columns: &mut BatchColumns,
        timestamps: &[i64],
        pairs: &[Vec<(u32, u32, u32)>],
    ) {
        for store in &mut self.references {
            let values = columns.values(store.column, store.class);
            for &(row, group, _) in &pairs[store.segment] {
                let row = row as usize;
                if values.is_valid(row) {
                    let value = values.value(row);
                    let timestamp = timestamps[row];
                    store.add(
                        group as usize,
                        timestamp,
                        sample_rank(timestamp, value),
                        value,
                    );
                }
            }
        }
    }

    /// Judges every group of the table at `tick`, and marks in `retained`
    /// the groups this rule still needs.
    pub(crate) fn evaluate_tick(
        &mut self,
        tick: i64,
        rule_index: usize,
        table: &CellTable,
        (retained, banks): (&mut [bool], &mut [BaselineBank]),
        output: &mut TickOutput,
        sample: &RowSample,
    ) {
        let TickOutput { outbox, hold_logs } = output;
        let mut window_counts: Option<WindowCounts> = None;
        let first_bucket = (tick - self.rule.window).div_euclid(table.bucket_width);
        let last_bucket = tick.div_euclid(table.bucket_width) - 1;
        let in_window = |bucket: i64| bucket >= first_bucket && bucket <= last_bucket;
        let total = table.total_between(first_bucket, last_bucket);
        let window_seconds = self.rule.window as f64 / 1e9;
        let mut merged: Vec<Summary> = table.layouts.iter().map(Summary::empty).collect();
        let mut drift_samples = self.drift_samples(table, last_bucket, &in_window);
        let mut no_timers = HeldTimers::new(0);
        let held_timers = self.condition.held_timers;
        // Timers for a quiet group; boxed into its state only once one runs.
        let mut spare_timers = HeldTimers::new(held_timers);
        let keeps_state = matches!(self.detector, DetectorRuntime::Baseline { .. });
        // Reused for every group: a fresh vector per group and rule cost an
        // allocation each, a million a tick per per-client rule.
        let mut distributions_merged = vec![false; merged.len()];
        for group in 0..table.groups.slots() {
            if table.first_bucket[group] > last_bucket {
                continue;
            }
            let mut holds_data = false;
            for store in &mut self.references {
                holds_data |= store.expire(group, tick);
            }
            fn window_cells<'a>(
                cells: &'a [Cell],
                in_window: &'a impl Fn(i64) -> bool,
            ) -> impl Iterator<Item = &'a Cell> {
                cells.iter().filter(|cell| in_window(cell.bucket))
            }
            // Counts are merged up front (impact needs them); distributions
            // only when the condition asks for them.
            distributions_merged.fill(false);
            for (target, cells) in merged.iter_mut().zip(&table.cells) {
                target.clear();
                for cell in window_cells(&cells[group], &in_window) {
                    cell.data.merge_counts_into(target);
                }
            }
            let window_events = merged[0].count;
            let mut aggregate_value = |index: usize| -> f64 {
                let (segment, slot) = self.slots[index];
                if !distributions_merged[segment] && slot.part() != SummaryPart::Counts {
                    distributions_merged[segment] = true;
                    for cell in window_cells(&table.cells[segment][group], &in_window) {
                        cell.data
                            .merge_wanted_into(&mut merged[segment], &self.wanted[segment]);
                    }
                }
                let summary = &merged[segment];
                let count = summary.count as f64;
                match slot {
                    AggregateKind::Count => count,
                    AggregateKind::Rate => count / window_seconds,
                    AggregateKind::Errors => summary.errors as f64,
                    AggregateKind::ErrorRate => summary.errors as f64 / count,
                    AggregateKind::Sum(i) => summary.moments[i].sum(),
                    AggregateKind::Avg(i) => summary.moments[i].mean(),
                    AggregateKind::Min(i) => summary.moments[i].min(),
                    AggregateKind::Max(i) => summary.moments[i].max(),
                    AggregateKind::Stddev(i) => summary.moments[i].stddev(),
                    AggregateKind::Quantile(i, q) => summary.sketches[i].quantile(q),
                    AggregateKind::Distinct(i) => summary.distinct[i].estimate(),
                }
            };
            let mut state = self.alert_states.take(group);
            let timers = match state.0.as_deref_mut() {
                Some(live) => &mut live.timers,
                None => {
                    spare_timers.reset();
                    &mut spare_timers
                }
            };
            let mut witness = Witness::default();
            let condition_holds = evaluate(
                &self.condition.root,
                &mut aggregate_value,
                tick,
                timers,
                &mut witness,
            ) != 0.0;
            if state.0.is_none() && spare_timers.any_running() {
                state.0 = Some(Box::new(LiveAlert {
                    lifecycle: None,
                    timers: spare_timers.clone(),
                }));
            }
            // A drift judgement's samples, to judge again in full for an alert.
            let mut drift_judged: Option<(Vec<f64>, Vec<f64>)> = None;
            let mut finding = match (&mut self.detector, &self.rule.detector) {
                (DetectorRuntime::Baseline { bank }, Some(Detector::Baseline(spec))) => {
                    let BaselineBank {
                        groups,
                        ticks,
                        last_tick,
                        ..
                    } = &mut banks[*bank];
                    if tick != *last_tick {
                        *last_tick = tick;
                        *ticks += 1;
                    }
                    let rule_ticks = *ticks - 1;
                    let value = match self.condition.series.first() {
                        Some(series) => evaluate(
                            series,
                            &mut aggregate_value,
                            tick,
                            &mut no_timers,
                            &mut Witness::default(),
                        ),
                        None => f64::NAN,
                    };
                    if groups.len() <= group {
                        groups.resize_with(group + 1, || None);
                    }
                    groups[group]
                        .get_or_insert_with(|| BaselineGroup::new(spec, tick, rule_ticks))
                        .observe(spec, tick, value)
                }
                (DetectorRuntime::Forest(forest), Some(Detector::Forest(spec))) => {
                    // The condition picks the population: only entities that
                    // pass it are scored and teach the forest what is normal.
                    if window_events == 0 || !condition_holds {
                        None
                    } else {
                        let features: Vec<f64> = self
                            .condition
                            .series
                            .iter()
                            .map(|series| {
                                evaluate(
                                    series,
                                    &mut aggregate_value,
                                    tick,
                                    &mut no_timers,
                                    &mut Witness::default(),
                                )
                            })
                            .collect();
                        forest.observe(spec, table.groups.hashes[group], tick, &features)
                    }
                }
                (
                    DetectorRuntime::Drift {
                        reference_name,
                        subject_segment,
                        ..
                    },
                    Some(Detector::Drift(spec)),
                ) => {
                    // Both must hold: a group whose condition fails is not
                    // judged (a rest_of reference per client is costly).
                    condition_holds.then(|| {
                        let own = || {
                            let sample = self.drift_sample;
                            window_sample(table, *subject_segment, group, sample, &in_window)
                        };
                        let (subject, reference) = drift_samples.for_group(group, own);
                        let finding =
                            judge_drift(spec, reference_name, (&subject, &reference), false);
                        drift_judged = Some((subject, reference));
                        finding
                    })
                }
                _ => None,
            };
            let mut holds = condition_holds
                && (self.rule.detector.is_none() || finding.as_ref().is_some_and(|f| f.holds));
            if holds {
                for (edge, positions) in &self.writes {
                    let key = table.groups.projection(group, positions);
                    hold_logs[*edge].record(key, tick);
                }
            }
            if let (true, Some((edge, positions)), Some(confirm)) =
                (holds, &self.reads, &self.rule.confirm)
            {
                let key = table.groups.projection(group, positions);
                holds = hold_logs[*edge]
                    .last_held
                    .get(&key)
                    .is_some_and(|held| tick - held <= confirm.within);
            }
            let mut transition = None;
            if holds {
                let live = state.0.get_or_insert_with(|| {
                    Box::new(LiveAlert {
                        lifecycle: None,
                        timers: HeldTimers::new(held_timers),
                    })
                });
                let lifecycle = live.lifecycle.get_or_insert_with(Lifecycle::default);
                lifecycle.clear_since = None;
                if lifecycle.firing_since.is_none() {
                    let since = *lifecycle.pending_since.get_or_insert(tick);
                    if tick - since >= self.rule.pending_for {
                        lifecycle.firing_since = Some(tick);
                        transition = Some((AlertState::Firing, tick, None));
                    }
                }
            } else if let Some(lifecycle) = state
                .0
                .as_deref_mut()
                .and_then(|live| live.lifecycle.as_mut())
            {
                lifecycle.pending_since = None;
                if let Some(started) = lifecycle.firing_since {
                    let clear_since = *lifecycle.clear_since.get_or_insert(tick);
                    if tick - clear_since >= self.rule.keep_firing_for {
                        lifecycle.firing_since = None;
                        lifecycle.clear_since = None;
                        transition = Some((AlertState::Resolved, started, Some(tick)));
                    }
                }
                if lifecycle.pending_since.is_none() && lifecycle.firing_since.is_none() {
                    if let Some(live) = state.0.as_deref_mut() {
                        live.lifecycle = None;
                    }
                }
            }
            state.settle();
            if let Some((alert_state, started, ended)) = transition {
                if let (
                    Some((subject, reference)),
                    DetectorRuntime::Drift { reference_name, .. },
                    Some(Detector::Drift(spec)),
                ) = (&drift_judged, &self.detector, &self.rule.detector)
                {
                    finding = Some(judge_drift(
                        spec,
                        reference_name,
                        (subject, reference),
                        true,
                    ));
                }
                let events = merged[0].count;
                let firing = alert_state == AlertState::Firing;
                // Detectors judge their own series: only a plain condition
                // says which rows made it hold.
                let subject = finding.is_none().then(|| witness.subject(firing)).flatten();
                let threshold = witness.explaining(firing).map(|(_, t)| t);
                let (query, noun) =
                    self.query(table, group, tick, sample, subject, threshold, firing);
                let explained = sample.explain(&query, &mut window_counts);
                let distinct_clients = match &explained {
                    _ if self.client_in_key => Some(u64::from(events > 0)),
                    Some(explained) if explained.complete => explained.distinct_clients,
                    _ => match self.client_distinct {
                        Some(position) => {
                            let mut clients = Summary::empty(&table.layouts[0]);
                            for cell in table.cells[0][group].iter().filter(|cell| {
                                cell.bucket >= first_bucket && cell.bucket <= last_bucket
                            }) {
                                cell.data.merge_distributions_into(&mut clients);
                            }
                            Some(clients.distinct[position].estimate().round() as u64)
                        }
                        None => explained.as_ref().and_then(|e| e.distinct_clients),
                    },
                };
                let impact = Impact {
                    events,
                    share_of_traffic: if total == 0 {
                        0.0
                    } else {
                        events as f64 / total as f64
                    },
                    distinct_clients,
                };
                let mut alert = self.alert(
                    &table.groups,
                    group,
                    (alert_state, started, ended),
                    witness,
                    finding,
                    impact,
                );
                if firing {
                    alert.explanation = explained.map(|e| e.contributors).unwrap_or_default();
                    alert.explanation.extend(self.explain_shift(
                        table,
                        group,
                        tick,
                        first_bucket,
                        last_bucket,
                    ));
                }
                alert.summary = self.summary(&alert, subject, &noun);
                outbox.push((tick, rule_index, table.groups.text(group), alert));
            }
            // An entity this rule holds nothing of can be forgotten, once
            // its table's cells are empty too: evaluating its empty window
            // again would give the same "no" (learned baselines are kept).
            let live = state.0.is_some();
            self.alert_states.put(group, state);
            retained[group] |= holds_data || holds || keeps_state || live;
        }
        if let (DetectorRuntime::Forest(forest), Some(Detector::Forest(spec))) =
            (&mut self.detector, &self.rule.detector)
        {
            forest.end_tick(spec);
        }
    }

    fn alert(
        &self,
        groups: &GroupTable,
        group: usize,
        (state, started, ended): (AlertState, i64, Option<i64>),
        witness: Witness,
        finding: Option<Finding>,
        impact: Impact,
    ) -> Alert {
        let group_text = &groups.text(group);
        let starts_at = format_timestamp(started);
        let rule = &self.rule;
        let explained = match &finding {
            Some(finding) => Some((finding.value, finding.threshold)),
            None => witness.explaining(state == AlertState::Firing),
        };
        Alert {
            alert_id: fingerprint([rule.id.as_str(), group_text.as_str(), starts_at.as_str()]),
            fingerprint: fingerprint([rule.id.as_str(), group_text.as_str()]),
            rule_id: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            state,
            starts_at,
            ends_at: ended.map(format_timestamp),
            group: groups.values(group),
            value: explained.map(|(value, _)| value).filter(|v| v.is_finite()),
            threshold: explained
                .map(|(_, threshold)| threshold)
                .filter(|v| v.is_finite()),
            condition: match (&rule.condition, &rule.detector) {
                (Some(condition), None) => one_line(&condition.text),
                (None, Some(detector)) => detector.describe(),
                (Some(condition), Some(detector)) => {
                    format!("{} and {}", one_line(&condition.text), detector.describe())
                }
                (None, None) => String::new(),
            },
            atlas: rule.atlas.clone(),
            impact,
            summary: String::new(),
            explanation: Vec::new(),
            labels: rule.labels.clone(),
            evidence: finding.map(|finding| finding.evidence),
        }
    }

    /// For a drift rule: what each group's window sample of its subject and
    /// of its reference is made of, gathered before any group is judged
    /// because a `rest_of` reference reads the other groups.
    fn drift_samples(
        &mut self,
        table: &CellTable,
        last_bucket: i64,
        in_window: &dyn Fn(i64) -> bool,
    ) -> DriftInputs {
        let DetectorRuntime::Drift {
            subject_segment,
            reference_segment,
            families,
            family_ids,
            rest_of,
            ..
        } = &mut self.detector
        else {
            return DriftInputs::Ready(Vec::new());
        };
        let groups = table.groups.slots();
        let drift_sample = self.drift_sample;
        let capacity = drift_sample.1;
        let window_sample = |segment: usize, group: usize| {
            window_sample(table, segment, group, drift_sample, in_window)
        };
        let active: Vec<bool> = table
            .first_bucket
            .iter()
            .map(|&first| first <= last_bucket)
            .collect();
        let subject =
            |group: usize| -> Vec<f64> { window_sample(*subject_segment, group).values() };
        if let Some(store) = self.drift_reference.map(|index| &self.references[index]) {
            let window = self.rule.window;
            let Some(Detector::Drift(spec)) = &self.rule.detector else {
                return DriftInputs::Ready(Vec::new());
            };
            let tick = (last_bucket + 1) * table.bucket_width;
            let (from, to) = match spec.reference {
                DriftReference::Previous(span) => (tick - window - span, tick - span),
                DriftReference::Trailing(span) => (tick - window - span, tick - window),
                _ => (tick, tick),
            };
            return DriftInputs::Ready(
                (0..groups)
                    .map(|group| {
                        if !active[group] {
                            return (Vec::new(), Vec::new());
                        }
                        (subject(group), store.sample(group, from, to))
                    })
                    .collect(),
            );
        }
        if let Some(reference_segment) = reference_segment {
            return DriftInputs::Ready(
                (0..groups)
                    .map(|group| {
                        if !active[group] {
                            return (Vec::new(), Vec::new());
                        }
                        let mut reference = window_sample(*reference_segment, group);
                        (subject(group), reference.values())
                    })
                    .collect(),
            );
        }
        // `rest_of`: a family is every group with the same key but that column.
        let rest_of = rest_of.unwrap_or(0);
        families.resize(groups, UNKNOWN_FAMILY);
        for (group, family) in families.iter_mut().enumerate() {
            if *family != UNKNOWN_FAMILY || !active[group] {
                continue;
            }
            let values = table.groups.values(group);
            let family_key: Vec<&str> = values
                .iter()
                .filter(|(name, _)| **name != table.group_names[rest_of])
                .map(|(_, value)| value.as_str())
                .collect();
            let next = family_ids.len() as u32;
            *family = *family_ids.entry(family_key.join("\u{1f}")).or_insert(next);
        }
        // The bottom-2k of a family holds the bottom-k of the family minus any
        // one member (a member contributes at most k of them).
        let mut family_samples: Vec<BottomSample> = (0..family_ids.len())
            .map(|_| BottomSample::with_capacity(capacity * 2))
            .collect();
        for group in 0..groups {
            if active[group] {
                let own = window_sample(*subject_segment, group);
                family_samples[families[group] as usize].merge(&own);
            }
        }
        // Families are never forgotten (their count is bounded by the other
        // group_by columns' values), so their ids stay valid.
        let family_ranked: Vec<Vec<(u64, u64)>> = family_samples
            .iter_mut()
            .map(BottomSample::ranked)
            .collect();
        DriftInputs::RestOf {
            active,
            families: families.clone(),
            family_ranked,
            capacity,
        }
    }

    /// For a rule with `explain`: how the column's window distribution
    /// moved against the group's trailing past, when it moved materially
    /// (KS D >= 0.2 with p <= 0.001 on at least 50 values a side).
    fn explain_shift(
        &self,
        table: &CellTable,
        group: usize,
        tick: i64,
        first_bucket: i64,
        last_bucket: i64,
    ) -> Vec<Contributor> {
        let (Some((store_index, position)), Some(explain)) = (self.explain, &self.rule.explain)
        else {
            return Vec::new();
        };
        let mut window = BottomSample::with_capacity(EXPLAIN_SAMPLE);
        for cell in &table.cells[0][group] {
            if cell.bucket >= first_bucket && cell.bucket <= last_bucket {
                cell.data.merge_sample_into(position, &mut window);
            }
        }
        let now = window.values();
        let before = self.references[store_index].sample(
            group,
            tick - self.rule.window - explain.trailing,
            tick - self.rule.window,
        );
        if now.len() < 50 || before.len() < 50 {
            return Vec::new();
        }
        let Some(test) = crate::stats::ks_two_sample(&before, &now) else {
            return Vec::new();
        };
        let (median_before, median_now) = (median_of_sorted(&before), median_of_sorted(&now));
        if test.statistic < 0.2 || test.p_value > 0.001 || median_before <= 0.0 {
            return Vec::new();
        }
        let lift = median_now / median_before;
        let direction = if lift >= 1.0 { "up" } else { "down" };
        vec![Contributor {
            dimension: explain.column.clone(),
            value: format!(
                "{} shifted {direction} against the trailing {}: median {} -> {} ({:+.0} %), KS D {:.2}",
                explain.column,
                format_span(explain.trailing),
                round_half(median_before),
                round_half(median_now),
                (lift - 1.0) * 100.0,
                test.statistic
            ),
            lift,
            share: None,
        }]
    }

    /// The sample query for an alert of `group` at `tick`, and what its
    /// slice is called ("slow requests").
    #[allow(clippy::too_many_arguments)]
    fn query(
        &self,
        table: &CellTable,
        group: usize,
        tick: i64,
        sample: &RowSample,
        subject: Option<Subject>,
        threshold: Option<f64>,
        explain: bool,
    ) -> (Query, String) {
        let key: Option<Vec<(usize, u32)>> = table
            .group_columns
            .iter()
            .enumerate()
            .map(|(position, &column)| {
                let dim = sample.dimension_of(column)?;
                let id = table.groups.key(group)[position];
                let text = (id != NULL_VALUE).then(|| table.groups.value(position, id));
                Some((dim, sample.id_of(dim, text)?))
            })
            .collect();
        let model = sample
            .model_dimension()
            .and_then(|dim| key.as_ref()?.iter().find(|(d, _)| *d == dim).copied());
        let (mut segment_bit, mut bad, mut noun) = (None, None, String::from("requests"));
        if let (Some((op, index)), Some(threshold)) = (subject, threshold) {
            let aggregate = &self.condition.aggregates[index];
            let above = matches!(op, CompareOp::Greater | CompareOp::GreaterEq);
            let below = matches!(op, CompareOp::Less | CompareOp::LessEq);
            bad = match aggregate.kind {
                AggregateKind::Errors | AggregateKind::ErrorRate if above => Some(Bad::Errors),
                AggregateKind::Quantile(column, _)
                | AggregateKind::Avg(column)
                | AggregateKind::Max(column)
                    if above =>
                {
                    sample.measure_of(column).map(|m| Bad::Above(m, threshold))
                }
                AggregateKind::Quantile(column, _)
                | AggregateKind::Avg(column)
                | AggregateKind::Min(column)
                    if below =>
                {
                    sample.measure_of(column).map(|m| Bad::Below(m, threshold))
                }
                _ => None,
            };
            if aggregate.segment > 0 {
                segment_bit = Some(self.sample_bit + aggregate.segment);
                noun = format!("{} {noun}", self.rule.segments[aggregate.segment - 1].0);
            }
            let column_name =
                |column: usize| -> String { self.referenced_name(column).unwrap_or_default() };
            noun = match (bad, aggregate.kind.column()) {
                (Some(Bad::Errors), _) => format!("failed {noun}"),
                (Some(Bad::Above(..)), Some(column)) if column_name(column).contains("latency") => {
                    format!("slow {noun}")
                }
                (Some(Bad::Above(..)), Some(column)) => {
                    format!(
                        "{noun} with {} > {}",
                        column_name(column),
                        number(threshold)
                    )
                }
                (Some(Bad::Below(..)), Some(column)) => {
                    format!(
                        "{noun} with {} < {}",
                        column_name(column),
                        number(threshold)
                    )
                }
                _ => noun,
            };
        }
        let query = Query {
            rule_bit: self.sample_bit,
            from: tick - self.rule.window,
            to: tick,
            key,
            segment_bit,
            bad,
            narrowed: segment_bit.is_some() || bad.is_some(),
            model,
            explain,
        };
        (query, noun)
    }

    /// A schema column's name.
    fn referenced_name(&self, column: usize) -> Option<String> {
        self.schema
            .fields()
            .get(column)
            .map(|field| field.name().clone())
    }

    fn state(&self, table: &CellTable) -> RuleState {
        let states = self.alert_states.in_group_order();
        let firing = states
            .iter()
            .filter(|(_, state)| state.is_firing())
            .map(|(group, _)| table.groups.values(*group))
            .collect();
        RuleState {
            rule_id: self.rule.id.clone(),
            groups: table.groups.live(),
            firing,
            pending: states
                .iter()
                .filter(|(_, state)| state.is_pending())
                .count(),
            next_tick: table.next_tick.map(format_timestamp),
            late_events: table.late_events,
            cells: table.cells.iter().flatten().map(Vec::len).sum(),
            peak_groups: table.peak_groups,
            evicted_groups: table.evicted,
            refused_rows: table.refused_rows,
            live_cells: table
                .cells
                .iter()
                .flatten()
                .flatten()
                .filter(|cell| !cell.data.is_empty())
                .count(),
            detector_bytes: match &self.detector {
                DetectorRuntime::Baseline { bank } => table.banks[*bank]
                    .groups
                    .iter()
                    .flatten()
                    .map(BaselineGroup::approx_bytes)
                    .sum(),
                _ => 0,
            },
            forest_learned: match &self.detector {
                DetectorRuntime::Forest(forest) => Some(forest.learned()),
                _ => None,
            },
            forest_threshold: match &self.detector {
                DetectorRuntime::Forest(forest) => Some(forest.threshold()),
                _ => None,
            },
        }
    }
}

/// The engine's row sample for these rules.
fn build_sample(
    rules: &[RuleRuntime],
    tables: &[CellTable],
    schema: &SchemaRef,
    bits: usize,
    rows: usize,
) -> RowSample {
    let mut group_columns: Vec<usize> = Vec::new();
    let mut measures: Vec<usize> = Vec::new();
    let (mut slot_width, mut span, mut lateness) = (0i64, 0i64, i64::MAX);
    for runtime in rules {
        let table = &tables[runtime.table];
        group_columns.extend(&table.group_columns);
        for aggregate in &runtime.condition.aggregates {
            if let AggregateKind::Quantile(column, _)
            | AggregateKind::Avg(column)
            | AggregateKind::Min(column)
            | AggregateKind::Max(column) = aggregate.kind
            {
                measures.push(column);
            }
        }
        slot_width = gcd(slot_width, table.bucket_width);
        span = span.max(runtime.rule.window + runtime.rule.every + runtime.rule.allowed_lateness);
        lateness = lateness.min(runtime.rule.allowed_lateness);
    }
    group_columns.sort_unstable();
    group_columns.dedup();
    measures.sort_unstable();
    measures.dedup();
    let rows = if rules.is_empty() { 0 } else { rows };
    RowSample::new(
        schema,
        &group_columns,
        measures,
        bits,
        slot_width,
        span,
        lateness.max(0),
        rows,
    )
}
