//! Where each group's alert stands between ticks, kept only for groups with
//! something pending, firing or timing, and the confirm edges' hold log.

use ahash::AHashMap;

use crate::condition::HeldTimers;

/// Where one group's alert stands: None while the group is quiet (nothing
/// pending or firing, no `for` timer running). Most tracked entities (one
/// per client, say) never alert, and keep no state at all ([`AlertStates`]).
#[derive(Debug, Clone, Default)]
pub(super) struct GroupAlertState(pub(super) Option<Box<LiveAlert>>);

/// The live alert states of one rule, by group: only groups with something
/// pending, firing or timing are here. A rule tracking a million quiet
/// clients keeps nothing for them (a dense vector cost 8 bytes per group
/// per rule, and six rules share the per-client table).
#[derive(Debug, Default)]
pub(super) struct AlertStates(AHashMap<u32, Box<LiveAlert>>);

impl AlertStates {
    /// Takes a group's state out, to be put back with [`AlertStates::put`].
    pub(super) fn take(&mut self, group: usize) -> GroupAlertState {
        GroupAlertState(self.0.remove(&(group as u32)))
    }

    pub(super) fn put(&mut self, group: usize, state: GroupAlertState) {
        if let Some(live) = state.0 {
            self.0.insert(group as u32, live);
        }
    }

    /// The live states in group order (a map's own order would depend on hashing).
    pub(super) fn in_group_order(&self) -> Vec<(usize, GroupAlertState)> {
        let mut states: Vec<(usize, GroupAlertState)> = self
            .0
            .iter()
            .map(|(&group, live)| (group as usize, GroupAlertState(Some(live.clone()))))
            .collect();
        states.sort_unstable_by_key(|(group, _)| *group);
        states
    }
}

#[derive(Debug, Clone)]
pub(super) struct LiveAlert {
    pub(super) lifecycle: Option<Lifecycle>,
    pub(super) timers: HeldTimers,
}

impl GroupAlertState {
    pub(super) fn lifecycle(&self) -> Option<&Lifecycle> {
        self.0.as_ref()?.lifecycle.as_ref()
    }

    pub(super) fn is_firing(&self) -> bool {
        self.lifecycle()
            .is_some_and(|lifecycle| lifecycle.firing_since.is_some())
    }

    pub(super) fn is_pending(&self) -> bool {
        self.lifecycle().is_some_and(|lifecycle| {
            lifecycle.pending_since.is_some() && lifecycle.firing_since.is_none()
        })
    }

    /// Drops the box once nothing is live.
    pub(super) fn settle(&mut self) {
        if self
            .0
            .as_ref()
            .is_some_and(|live| live.lifecycle.is_none() && !live.timers.any_running())
        {
            self.0 = None;
        }
    }
}

/// Where a group's alert stands once its condition has held.
#[derive(Debug, Clone, Default)]
pub(super) struct Lifecycle {
    pub(super) pending_since: Option<i64>,
    pub(super) firing_since: Option<i64>,
    /// First tick the condition stopped holding while firing (for `keep_firing_for`).
    pub(super) clear_since: Option<i64>,
}

/// When a confirming rule last held, per projected key.
pub(crate) struct HoldLog {
    pub(super) last_held: AHashMap<String, i64>,
    /// The dependent rule's look-back: older entries can go.
    pub(super) within: i64,
    /// Size after the last pruning (prune again when it doubles).
    pub(super) pruned_size: usize,
}

impl HoldLog {
    pub(super) fn record(&mut self, key: String, tick: i64) {
        self.last_held.insert(key, tick);
        if self.last_held.len() > 2 * self.pruned_size.max(1_024) {
            let within = self.within;
            self.last_held.retain(|_, held| tick - *held <= within);
            self.pruned_size = self.last_held.len();
        }
    }
}
