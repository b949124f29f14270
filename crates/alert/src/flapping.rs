//! Flapping: an alert that keeps firing and resolving is one problem, not
//! a stream of notifications.
//!
//! Each fingerprint's state changes are counted in a sliding event-time
//! window. When there are more than `max_changes` of them within `window`,
//! the fingerprint is *flapping*: one notification says so (reason
//! `flapping`), and its further transitions are held (recorded in the
//! history, not notified). Once no transition has arrived for `stable_for`,
//! it has *settled*: the last held state is notified (reason `settled`) and
//! counting starts afresh.
//!
//! Flapping is noted in the alert's `explanation` (dimension `flapping`),
//! not in its labels: labels are an alert's identity in Alertmanager, and a
//! label added to a firing alert but not to its resolution would leave a
//! second, never-resolved alert behind.

use std::collections::VecDeque;
use std::time::Duration;

use inferwatch_core::{Alert, Contributor};
use serde::{Deserialize, Serialize};

use crate::event_time::{duration_nanos, format_event_time};

/// When a fingerprint counts as flapping, and when as settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlappingConfig {
    /// Off: every transition goes straight to grouping.
    pub enabled: bool,
    /// More state changes than this within `window` is flapping.
    pub max_changes: usize,
    /// The sliding window the changes are counted in.
    pub window: Duration,
    /// How long without a transition before a flapping alert has settled.
    pub stable_for: Duration,
}

impl Default for FlappingConfig {
    fn default() -> FlappingConfig {
        FlappingConfig {
            enabled: true,
            max_changes: 4,
            window: Duration::from_secs(3600),
            stable_for: Duration::from_secs(1800),
        }
    }
}

/// What to do with one transition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FlapVerdict {
    /// Not flapping: pass it on to grouping.
    Pass,
    /// This transition made it flapping: notify that, with this alert.
    Started {
        /// Changes counted in the window.
        changes: usize,
    },
    /// Already flapping: hold it.
    Held,
}

/// One fingerprint's recent state changes and flapping status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct FlapTracker {
    /// Event times of the state changes inside the window, oldest first.
    changes: VecDeque<i64>,
    /// Changes seen since it started flapping (for the settled note).
    changes_while_flapping: usize,
    /// When it started flapping.
    flapping_since: Option<i64>,
    /// The latest transition while flapping: what it settles to.
    held: Option<Box<Alert>>,
    /// When this tracker next needs a look: to settle, or to be forgotten.
    pub(crate) next_check: Option<i64>,
}

impl FlapTracker {
    /// True while transitions are held.
    pub(crate) fn is_flapping(&self) -> bool {
        self.flapping_since.is_some()
    }

    /// Counts one transition at `at` and says what to do with it.
    pub(crate) fn observe(
        &mut self,
        config: &FlappingConfig,
        at: i64,
        alert: &Alert,
    ) -> FlapVerdict {
        let window = duration_nanos(config.window);
        self.changes.push_back(at);
        while self
            .changes
            .front()
            .is_some_and(|&first| first <= at.saturating_sub(window))
        {
            self.changes.pop_front();
        }
        if self.is_flapping() {
            self.changes_while_flapping += 1;
            self.held = Some(Box::new(alert.clone()));
            self.next_check = Some(at.saturating_add(duration_nanos(config.stable_for)));
            return FlapVerdict::Held;
        }
        if self.changes.len() > config.max_changes {
            let changes = self.changes.len();
            self.flapping_since = Some(at);
            self.changes_while_flapping = 0;
            self.held = Some(Box::new(alert.clone()));
            self.next_check = Some(at.saturating_add(duration_nanos(config.stable_for)));
            return FlapVerdict::Started { changes };
        }
        self.next_check = self
            .changes
            .front()
            .map(|&first| first.saturating_add(window));
        FlapVerdict::Pass
    }

    /// The scheduled look at `at`: returns the settled alert when a flapping
    /// fingerprint has been stable long enough. Afterwards `next_check`
    /// says when to look again; `None` means the tracker can be dropped.
    pub(crate) fn check(&mut self, config: &FlappingConfig, at: i64) -> Option<Alert> {
        let window = duration_nanos(config.window);
        if self.is_flapping() {
            if self.next_check.is_some_and(|due| due > at) {
                return None;
            }
            let since = self.flapping_since.take().unwrap_or(at);
            let held = self.held.take();
            // Counting starts afresh: the changes that made it flap are spent.
            self.changes.clear();
            self.next_check = None;
            let mut settled = *held?;
            settled.explanation.insert(
                0,
                Contributor {
                    dimension: "flapping".to_string(),
                    value: format!(
                        "settled: flapping since {} ({} more changes held), stable for {}",
                        format_event_time(since),
                        self.changes_while_flapping,
                        describe(config.stable_for)
                    ),
                    lift: 1.0,
                    share: None,
                },
            );
            return Some(settled);
        }
        while self
            .changes
            .front()
            .is_some_and(|&first| first <= at.saturating_sub(window))
        {
            self.changes.pop_front();
        }
        self.next_check = self
            .changes
            .front()
            .map(|&first| first.saturating_add(window));
        None
    }
}

/// The alert of a "started flapping" notification.
pub(crate) fn flapping_notice(config: &FlappingConfig, alert: &Alert, changes: usize) -> Alert {
    let mut notice = alert.clone();
    notice.explanation.insert(
        0,
        Contributor {
            dimension: "flapping".to_string(),
            value: format!(
                "{changes} state changes within {}; further changes are held until it is stable for {}",
                describe(config.window),
                describe(config.stable_for)
            ),
            lift: changes as f64,
            share: None,
        },
    );
    notice
}

fn describe(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let (hours, seconds_past_hour) = (seconds / 3600, seconds % 3600);
    let (minutes, seconds_past_minute) = (seconds / 60, seconds % 60);
    if duration.subsec_nanos() != 0 {
        format!("{}ms", duration.as_millis())
    } else if hours > 0 && seconds_past_hour == 0 {
        format!("{hours}h")
    } else if minutes > 0 && seconds_past_minute == 0 {
        format!("{minutes}m")
    } else {
        format!("{seconds}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000_000_000;

    #[test]
    fn the_fifth_change_in_an_hour_starts_flapping_and_quiet_settles_it() {
        let config = FlappingConfig::default();
        let alert = crate::test_alert();
        let mut tracker = FlapTracker::default();
        for minute in 0..4 {
            assert_eq!(
                tracker.observe(&config, minute * 10 * MINUTE, &alert),
                FlapVerdict::Pass
            );
        }
        assert_eq!(
            tracker.observe(&config, 40 * MINUTE, &alert),
            FlapVerdict::Started { changes: 5 }
        );
        assert_eq!(
            tracker.observe(&config, 50 * MINUTE, &alert),
            FlapVerdict::Held
        );
        assert_eq!(tracker.next_check, Some(80 * MINUTE));
        assert!(tracker.check(&config, 79 * MINUTE).is_none());
        let settled = tracker.check(&config, 80 * MINUTE).expect("settled");
        assert_eq!(settled.explanation[0].dimension, "flapping");
        assert!(!tracker.is_flapping());
        assert_eq!(tracker.next_check, None);
    }

    #[test]
    fn changes_spread_wider_than_the_window_never_flap() {
        let config = FlappingConfig::default();
        let alert = crate::test_alert();
        let mut tracker = FlapTracker::default();
        for step in 0..20 {
            assert_eq!(
                tracker.observe(&config, step * 16 * MINUTE, &alert),
                FlapVerdict::Pass
            );
        }
    }
}
