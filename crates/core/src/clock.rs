//! Event time that one line cannot move.
//!
//! Every windowed component (rules, SLOs, correlations) decides when a
//! window is over from event time. If "now" were the newest timestamp seen,
//! one line dated 2100 would end every window at once and make every real
//! event after it late. [`AgreedClock`] is "now" as the events *agree* on
//! it: the [`CLOCK_AGREEMENT`]-th newest timestamp seen, so a time is
//! reached only once that many events have reached it. One stray line (or a
//! retried duplicate of it) moves nothing; for data in time order the clock
//! trails the newest event by two events.
//!
//! The clock is a function of the rows in input order alone, never of the
//! wall clock or of how the rows were cut into batches, so a replay gives
//! the same clock row for row. The ingest guard
//! (`inferwatch_ingest::EventTimeGuard`) builds on it per input and refuses
//! events more than [`DEFAULT_MAX_FUTURE_NANOS`] ahead of it.

use crate::NANOS_PER_SECOND;

/// How many events must reach a time before the clock does.
pub const CLOCK_AGREEMENT: usize = 3;

/// How far ahead of the clock an event may be by default: two minutes.
/// Further ahead is a `future_timestamp` dead letter at ingest, and windowed
/// state keeps room for events up to this far ahead (each minute of room is
/// one more ring slot per group of a 1-minute rule, so the default is kept
/// small: synchronised clocks differ by milliseconds, a wrong time zone by
/// hours).
pub const DEFAULT_MAX_FUTURE_NANOS: i64 = 120 * NANOS_PER_SECOND;

/// The [`CLOCK_AGREEMENT`]-th newest event time seen: a monotone "now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgreedClock {
    /// The newest timestamps, newest first; `i64::MIN` where none yet.
    newest: [i64; CLOCK_AGREEMENT],
    seen: u64,
}

impl Default for AgreedClock {
    fn default() -> Self {
        AgreedClock {
            newest: [i64::MIN; CLOCK_AGREEMENT],
            seen: 0,
        }
    }
}

impl AgreedClock {
    /// A clock that has seen nothing.
    pub fn new() -> AgreedClock {
        AgreedClock::default()
    }

    /// Takes in one event time and returns the clock after it (`i64::MIN`
    /// until [`CLOCK_AGREEMENT`] events have been seen). Never decreases.
    #[inline]
    pub fn observe(&mut self, timestamp: i64) -> i64 {
        self.seen += 1;
        let last = CLOCK_AGREEMENT - 1;
        if timestamp > self.newest[last] {
            // Insertion into a descending array of three: for in-order data
            // the new time is the newest, two moves.
            let mut position = last;
            while position > 0 && self.newest[position - 1] < timestamp {
                self.newest[position] = self.newest[position - 1];
                position -= 1;
            }
            self.newest[position] = timestamp;
        }
        self.newest[last]
    }

    /// Takes in a run of event times and returns the clock after each.
    pub fn observe_all(&mut self, timestamps: &[i64]) -> Vec<i64> {
        timestamps
            .iter()
            .map(|&timestamp| self.observe(timestamp))
            .collect()
    }

    /// The clock: `None` until [`CLOCK_AGREEMENT`] events have been seen.
    pub fn now(&self) -> Option<i64> {
        let now = self.newest[CLOCK_AGREEMENT - 1];
        (now != i64::MIN).then_some(now)
    }

    /// The newest event time seen, agreed or not.
    pub fn newest(&self) -> Option<i64> {
        (self.seen > 0).then_some(self.newest[0])
    }

    /// Where the clock stands once input has ended: [`AgreedClock::now`],
    /// or the oldest of the few events seen when fewer than
    /// [`CLOCK_AGREEMENT`] arrived (a short input still gets its windows
    /// judged, and its newest line still cannot stretch them).
    pub fn settled(&self) -> Option<i64> {
        if self.seen == 0 {
            return None;
        }
        let known = (self.seen as usize).min(CLOCK_AGREEMENT);
        Some(self.newest[known - 1])
    }

    /// Events seen.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_the_third_newest_time() {
        let mut clock = AgreedClock::new();
        assert_eq!(clock.observe(10), i64::MIN);
        assert_eq!(clock.observe(20), i64::MIN);
        assert_eq!(clock.now(), None);
        assert_eq!(clock.settled(), Some(10));
        assert_eq!(clock.observe(30), 10);
        assert_eq!(clock.observe(40), 20);
        assert_eq!(clock.newest(), Some(40));
    }

    #[test]
    fn one_line_far_ahead_moves_nothing_and_two_do_not_either() {
        let mut plain = AgreedClock::new();
        let mut attacked = AgreedClock::new();
        for time in 0..100 {
            plain.observe(time);
            attacked.observe(time);
            if time == 50 || time == 60 {
                attacked.observe(i64::MAX / 2);
            }
        }
        // The two stray lines hold two of the three places; the third is
        // the newest real time, which the plain clock reaches one event later.
        assert_eq!(attacked.now(), Some(99));
        assert_eq!(plain.now(), Some(97));
        assert!(attacked.now().unwrap() < 1_000);
    }

    #[test]
    fn the_clock_never_goes_back() {
        let mut clock = AgreedClock::new();
        let mut previous = i64::MIN;
        for time in [5, 3, 9, 1, 9, 2, 12, 0, 7, 15, 4] {
            let now = clock.observe(time);
            assert!(now >= previous);
            previous = now;
        }
        assert_eq!(clock.now(), Some(9));
    }
}
