//! Per-correlation runtime: the buffer that holds findings until the
//! watermark passes them, and the per-group state machines that consume them
//! in event-time order.
//!
//! Findings wait in `pending`, ordered by (time, input slot, group, value):
//! an order that does not depend on arrival. They are released only once the
//! watermark is past them, and then every finding that will ever be accepted
//! at that time has arrived, so the sequence each state machine sees is the
//! same whatever the arrival order within the allowed lateness.
//!
//! Deadlines (an absence wait, or a count window that can only be judged
//! when it closes) fire once the watermark is past them, after every finding
//! at the deadline's own time: a timespan includes its end.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::rules::{CorrelationKind, CorrelationRule};

/// Most findings listed in one alert's explanation per window-closing count;
/// the count itself is exact.
const MAX_LISTED_FINDINGS: usize = 32;

/// Most distinct values a window-closing `value_count` remembers per group.
/// A window with more saturates at this number (documented on the module).
pub(crate) const MAX_DISTINCT_VALUES: usize = 10_000;

/// One input of a correlation: a rule it consumes and how to read that rule's findings.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    /// The canonical name findings of this rule carry.
    pub rule: String,
    /// The field of those findings holding each group-by value, in group-by order.
    pub group_fields: Vec<String>,
    /// The field whose distinct values are counted (value_count only).
    pub value_field: Option<String>,
}

/// A finding as a correlation remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// Index of the input slot.
    pub slot: usize,
    /// Event time (ns).
    pub time: i64,
    /// MITRE ATLAS technique ids it carried.
    pub atlas: Vec<String>,
}

/// A finding buffered until the watermark passes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct PendingFinding {
    pub time: i64,
    pub slot: usize,
    pub group: Vec<String>,
    pub value: Option<String>,
    pub atlas: Vec<String>,
}

/// A correlation that matched.
#[derive(Debug, Clone)]
pub(crate) struct Match {
    /// Event time of the completing finding, or of the deadline that decided it.
    pub time: i64,
    /// Group-by values, in group-by order.
    pub group: Vec<String>,
    /// The findings that make up the match (possibly a capped sample, see `events`).
    pub members: Vec<Member>,
    /// How many findings make up the match.
    pub events: u64,
    /// The counted value (event_count, value_count).
    pub value: Option<f64>,
    /// Distinct values counted (value_count), as a sample.
    pub distinct_values: Vec<String>,
}

#[derive(Debug)]
enum GroupState {
    /// event_count: findings in the window (all of them when decided by growth,
    /// a capped sample plus `total` when decided at window close).
    Count {
        members: VecDeque<Member>,
        total: u64,
        window_start: Option<i64>,
    },
    /// value_count: the latest finding per distinct value.
    Distinct {
        latest: BTreeMap<String, Member>,
        total: u64,
        window_start: Option<i64>,
    },
    /// temporal: the latest finding per input slot.
    Temporal { latest: Vec<Option<Member>> },
    /// temporal_ordered: `chains[k]` is the chain matching slots 0..=k that
    /// started latest (the best chance to finish within the timespan).
    Ordered { chains: Vec<Option<Vec<Member>>> },
    /// absence: the first unanswered trigger, and how many joined it.
    Absence {
        wait: Option<(Member, u64)>,
        deadline: i64,
    },
}

impl GroupState {
    fn is_empty(&self) -> bool {
        match self {
            GroupState::Count {
                members,
                window_start,
                ..
            } => members.is_empty() && window_start.is_none(),
            GroupState::Distinct {
                latest,
                window_start,
                ..
            } => latest.is_empty() && window_start.is_none(),
            GroupState::Temporal { latest } => latest.iter().all(Option::is_none),
            GroupState::Ordered { chains } => chains.iter().all(Option::is_none),
            GroupState::Absence { wait, .. } => wait.is_none(),
        }
    }

    /// Forgets what can no longer be part of a match at time `now` (sliding states only).
    fn evict_before(&mut self, oldest_useful: i64) {
        match self {
            GroupState::Count {
                members,
                window_start: None,
                ..
            } => {
                while members.front().is_some_and(|m| m.time < oldest_useful) {
                    members.pop_front();
                }
            }
            GroupState::Distinct {
                latest,
                window_start: None,
                ..
            } => latest.retain(|_, member| member.time >= oldest_useful),
            GroupState::Temporal { latest } => {
                for entry in latest.iter_mut() {
                    if entry.as_ref().is_some_and(|m| m.time < oldest_useful) {
                        *entry = None;
                    }
                }
            }
            GroupState::Ordered { chains } => {
                for chain in chains.iter_mut() {
                    if chain
                        .as_ref()
                        .is_some_and(|c| c.first().is_none_or(|m| m.time < oldest_useful))
                    {
                        *chain = None;
                    }
                }
            }
            // Window-closing counts and absence waits end at their deadline.
            _ => {}
        }
    }
}

/// Counters a correlation exposes for tests and the UI.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationCounters {
    /// Findings buffered, waiting for the watermark.
    pub buffered: usize,
    /// Groups with live state.
    pub groups: usize,
    /// Findings released and evaluated.
    pub evaluated: u64,
    /// Findings skipped because they lacked a group-by (or counted) field.
    pub missing_fields: u64,
    /// Findings skipped because `max_groups` groups were already tracked.
    pub group_overflow: u64,
    /// Matches raised.
    pub matches: u64,
}

/// One correlation's buffer and state.
#[derive(Debug)]
pub(crate) struct CorrelationRuntime {
    pub rule: CorrelationRule,
    pub slots: Vec<Slot>,
    /// Slots `0..trigger_slots` are `rules`; the rest are absence's `expected`.
    trigger_slots: usize,
    /// Conditions decided the moment a finding arrives (gt/gte only) rather than at window close.
    decided_by_growth: bool,
    /// Buffered findings with their multiplicity: identical findings are
    /// interchangeable, but each one counts.
    pending: BTreeMap<PendingFinding, u32>,
    groups: HashMap<Vec<String>, GroupState>,
    deadlines: BTreeSet<(i64, Vec<String>)>,
    max_groups: usize,
    evaluated_since_sweep: usize,
    pub counters: CorrelationCounters,
}

impl CorrelationRuntime {
    pub fn new(rule: CorrelationRule, slots: Vec<Slot>, max_groups: usize) -> Self {
        let decided_by_growth = rule
            .condition
            .iter()
            .all(|(comparison, _)| comparison.decided_by_growth());
        CorrelationRuntime {
            trigger_slots: rule.rules.len(),
            rule,
            slots,
            decided_by_growth,
            pending: BTreeMap::new(),
            groups: HashMap::new(),
            deadlines: BTreeSet::new(),
            max_groups: max_groups.max(1),
            evaluated_since_sweep: 0,
            counters: CorrelationCounters::default(),
        }
    }

    /// Buffers a finding of input `slot`, reading its group and value fields.
    pub fn buffer(
        &mut self,
        slot: usize,
        time: i64,
        fields: &BTreeMap<String, String>,
        atlas: &[String],
    ) {
        let input = &self.slots[slot];
        let mut group = Vec::with_capacity(input.group_fields.len());
        for field in &input.group_fields {
            match fields.get(field) {
                Some(value) => group.push(value.clone()),
                None => {
                    self.counters.missing_fields += 1;
                    return;
                }
            }
        }
        let value = match &input.value_field {
            Some(field) => match fields.get(field) {
                Some(value) => Some(value.clone()),
                None => {
                    self.counters.missing_fields += 1;
                    return;
                }
            },
            None => None,
        };
        let mut atlas = atlas.to_vec();
        atlas.sort();
        atlas.dedup();
        *self
            .pending
            .entry(PendingFinding {
                time,
                slot,
                group,
                value,
                atlas,
            })
            .or_default() += 1;
        self.counters.buffered += 1;
    }

    /// Evaluates, in event-time order, every buffered finding and deadline before `watermark`.
    pub fn advance(&mut self, watermark: i64, matches: &mut Vec<Match>) {
        loop {
            let next_finding = self
                .pending
                .first_key_value()
                .map(|(finding, _)| finding.time)
                .filter(|time| *time < watermark);
            let next_deadline = self
                .deadlines
                .first()
                .map(|(deadline, _)| *deadline)
                .filter(|deadline| *deadline < watermark);
            match (next_finding, next_deadline) {
                (None, None) => break,
                // A deadline closes after every finding at its own time.
                (Some(finding), Some(deadline)) if deadline < finding => {
                    self.expire_first_deadline(matches)
                }
                (Some(_), _) => {
                    if let Some(mut entry) = self.pending.first_entry() {
                        *entry.get_mut() -= 1;
                        let finding = if *entry.get() == 0 {
                            entry.remove_entry().0
                        } else {
                            entry.key().clone()
                        };
                        self.counters.buffered -= 1;
                        self.evaluate(finding, matches);
                    }
                }
                (None, Some(_)) => self.expire_first_deadline(matches),
            }
        }
        self.counters.groups = self.groups.len();
    }

    fn new_state(&self) -> GroupState {
        let slots = self.slots.len();
        match &self.rule.kind {
            CorrelationKind::EventCount => GroupState::Count {
                members: VecDeque::new(),
                total: 0,
                window_start: None,
            },
            CorrelationKind::ValueCount { .. } => GroupState::Distinct {
                latest: BTreeMap::new(),
                total: 0,
                window_start: None,
            },
            CorrelationKind::Temporal => GroupState::Temporal {
                latest: vec![None; slots],
            },
            CorrelationKind::TemporalOrdered => GroupState::Ordered {
                chains: vec![None; slots],
            },
            CorrelationKind::Absence { .. } => GroupState::Absence {
                wait: None,
                deadline: 0,
            },
        }
    }

    fn conditions_hold(&self, value: f64) -> bool {
        self.rule
            .condition
            .iter()
            .all(|(comparison, threshold)| comparison.holds(value, *threshold))
    }

    fn evaluate(&mut self, finding: PendingFinding, matches: &mut Vec<Match>) {
        self.counters.evaluated += 1;
        let timespan = self.rule.timespan;
        let time = finding.time;
        if !self.groups.contains_key(&finding.group) {
            // Absence only needs state for triggers; a lone expected finding has nothing to cancel.
            if matches!(self.rule.kind, CorrelationKind::Absence { .. })
                && finding.slot >= self.trigger_slots
            {
                return;
            }
            if self.groups.len() >= self.max_groups {
                self.counters.group_overflow += 1;
                return;
            }
            let state = self.new_state();
            self.groups.insert(finding.group.clone(), state);
        }
        let member = Member {
            slot: finding.slot,
            time,
            atlas: finding.atlas,
        };
        let decided_by_growth = self.decided_by_growth;
        let trigger_slots = self.trigger_slots;
        let slot_count = self.slots.len();
        let mut completed: Option<Match> = None;
        let mut new_deadline = None;
        let mut cancelled_deadline = None;
        let Some(state) = self.groups.get_mut(&finding.group) else {
            return;
        };
        state.evict_before(time.saturating_sub(timespan));
        match state {
            GroupState::Count {
                members,
                total,
                window_start,
            } => {
                if decided_by_growth {
                    members.push_back(member);
                    let count = members.len() as f64;
                    if self
                        .rule
                        .condition
                        .iter()
                        .all(|(comparison, threshold)| comparison.holds(count, *threshold))
                    {
                        completed = Some(Match {
                            time,
                            group: finding.group.clone(),
                            events: members.len() as u64,
                            members: members.drain(..).collect(),
                            value: Some(count),
                            distinct_values: Vec::new(),
                        });
                    }
                } else {
                    if window_start.is_none() {
                        *window_start = Some(time);
                        new_deadline = Some(time.saturating_add(timespan));
                    }
                    *total += 1;
                    if members.len() < MAX_LISTED_FINDINGS {
                        members.push_back(member);
                    }
                }
            }
            GroupState::Distinct {
                latest,
                total,
                window_start,
            } => {
                let value = finding.value.clone().unwrap_or_default();
                if decided_by_growth {
                    latest.insert(value, member);
                    let count = latest.len() as f64;
                    if self
                        .rule
                        .condition
                        .iter()
                        .all(|(comparison, threshold)| comparison.holds(count, *threshold))
                    {
                        let taken = std::mem::take(latest);
                        completed = Some(Match {
                            time,
                            group: finding.group.clone(),
                            events: taken.len() as u64,
                            distinct_values: taken.keys().cloned().collect(),
                            members: sorted_by_time(taken.into_values()),
                            value: Some(count),
                        });
                    }
                } else {
                    if window_start.is_none() {
                        *window_start = Some(time);
                        new_deadline = Some(time.saturating_add(timespan));
                    }
                    *total += 1;
                    if latest.len() < MAX_DISTINCT_VALUES || latest.contains_key(&value) {
                        latest.insert(value, member);
                    }
                }
            }
            GroupState::Temporal { latest } => {
                let slot = member.slot;
                latest[slot] = Some(member);
                if latest.iter().all(Option::is_some) {
                    let members: Vec<Member> = latest.iter_mut().filter_map(Option::take).collect();
                    completed = Some(Match {
                        time,
                        group: finding.group.clone(),
                        events: members.len() as u64,
                        members: sorted_by_time(members),
                        value: None,
                        distinct_values: Vec::new(),
                    });
                }
            }
            GroupState::Ordered { chains } => {
                let slot = member.slot;
                let extended = if slot == 0 {
                    Some(vec![member])
                } else {
                    chains[slot - 1].as_ref().map(|chain| {
                        let mut chain = chain.clone();
                        chain.push(member);
                        chain
                    })
                };
                if let Some(candidate) = extended {
                    let starts_later = match &chains[slot] {
                        None => true,
                        Some(current) => candidate[0].time >= current[0].time,
                    };
                    if starts_later {
                        chains[slot] = Some(candidate);
                    }
                }
                if slot + 1 == slot_count {
                    if let Some(chain) = chains[slot].take() {
                        chains.iter_mut().for_each(|chain| *chain = None);
                        completed = Some(Match {
                            time,
                            group: finding.group.clone(),
                            events: chain.len() as u64,
                            members: chain,
                            value: None,
                            distinct_values: Vec::new(),
                        });
                    }
                }
            }
            GroupState::Absence { wait, deadline } => {
                if member.slot < trigger_slots {
                    match wait {
                        Some((_, joined)) => *joined += 1,
                        None => {
                            *deadline = time.saturating_add(timespan);
                            *wait = Some((member, 0));
                            new_deadline = Some(*deadline);
                        }
                    }
                } else if wait.take().is_some() {
                    cancelled_deadline = Some(*deadline);
                }
            }
        }
        let now_empty = state.is_empty();
        if let Some(deadline) = new_deadline {
            self.deadlines.insert((deadline, finding.group.clone()));
        }
        if let Some(deadline) = cancelled_deadline {
            self.deadlines.remove(&(deadline, finding.group.clone()));
        }
        if now_empty {
            self.groups.remove(&finding.group);
        }
        if let Some(completed) = completed {
            self.counters.matches += 1;
            matches.push(completed);
        }
        self.sweep_if_due(time);
    }

    fn expire_first_deadline(&mut self, matches: &mut Vec<Match>) {
        let Some((deadline, group)) = self.deadlines.pop_first() else {
            return;
        };
        let Some(state) = self.groups.remove(&group) else {
            return;
        };
        let completed = match state {
            GroupState::Count { members, total, .. } => {
                self.conditions_hold(total as f64).then(|| Match {
                    time: deadline,
                    group,
                    members: members.into_iter().collect(),
                    events: total,
                    value: Some(total as f64),
                    distinct_values: Vec::new(),
                })
            }
            GroupState::Distinct { latest, total, .. } => {
                let count = latest.len() as f64;
                self.conditions_hold(count).then(|| Match {
                    time: deadline,
                    group,
                    events: total,
                    distinct_values: latest.keys().cloned().collect(),
                    members: sorted_by_time(latest.into_values()),
                    value: Some(count),
                })
            }
            GroupState::Absence {
                wait: Some((trigger, joined)),
                ..
            } => Some(Match {
                time: deadline,
                group,
                members: vec![trigger],
                events: joined + 1,
                value: None,
                distinct_values: Vec::new(),
            }),
            other => {
                // Only window-closing counts and absence waits set deadlines.
                debug_assert!(false, "deadline on a {other:?} state");
                None
            }
        };
        if let Some(completed) = completed {
            self.counters.matches += 1;
            matches.push(completed);
        }
    }

    /// Drops stale sliding state of groups not touched lately. A sweep runs
    /// after as many evaluations as half the groups, so its cost per finding
    /// stays constant even when every finding opens a new group.
    fn sweep_if_due(&mut self, now: i64) {
        self.evaluated_since_sweep += 1;
        if self.evaluated_since_sweep < (self.groups.len() / 2).max(1024) {
            return;
        }
        self.evaluated_since_sweep = 0;
        let oldest_useful = now.saturating_sub(self.rule.timespan);
        self.groups.retain(|_, state| {
            state.evict_before(oldest_useful);
            !state.is_empty()
        });
    }

    /// Groups with live state and findings buffered.
    pub fn sizes(&self) -> (usize, usize) {
        (self.groups.len(), self.counters.buffered)
    }
}

fn sorted_by_time(members: impl IntoIterator<Item = Member>) -> Vec<Member> {
    let mut members: Vec<Member> = members.into_iter().collect();
    members.sort_by_key(|member| (member.time, member.slot));
    members
}
