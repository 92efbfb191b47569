//! De-duplication over a time window, in whole buckets.
//!
//! The store drops a replay: an event whose (source, id) it accepted within
//! `server.dedupe_window`. Each event's 128-bit key is kept in the log record
//! (see [`super::frame`]), so this index is memory only, written nowhere, and
//! rebuilt on open from the records inside the window.
//!
//! Why buckets: expiring keys one by one (a sorted expiry list, or a per-key
//! deadline) costs a write or a heap operation per key and, when a burst of
//! keys expires together, a pause and a pile of freed memory. Here the window is
//! split into [`BUCKETS`] buckets by acceptance time; a key is looked up in each
//! (a handful of hash probes) and inserted into the newest; a bucket whose whole
//! span has left the window is dropped in one deallocation. A key is therefore
//! remembered for at least the window and at most one bucket longer.
//!
//! Memory: a key is 16 bytes in a hash set of u128, about 18 bytes with the
//! table's control byte, up to twice that right after the table grows:
//! 18-36 bytes per key. `max_keys` bounds it: past it, the oldest bucket is
//! dropped early (counted in [`Window::dropped_early`]), so a flood of unique
//! ids shortens the window instead of growing memory without end.

use std::collections::{HashSet, VecDeque};

/// Buckets per window.
pub const BUCKETS: u64 = 16;

/// The keys accepted within the window.
pub struct Window {
    window_ms: u64,
    bucket_ms: u64,
    max_keys: usize,
    /// (bucket number = accepted ms / bucket_ms, its keys), oldest first.
    buckets: VecDeque<(u64, HashSet<u128>)>,
    keys: usize,
    dropped_early: u64,
}

impl Window {
    /// A window of `window_ms` (0: nothing is a replay) holding at most `max_keys`.
    pub fn new(window_ms: u64, max_keys: usize) -> Self {
        Self {
            window_ms,
            bucket_ms: (window_ms / BUCKETS).max(1),
            max_keys: max_keys.max(1),
            buckets: VecDeque::new(),
            keys: 0,
            dropped_early: 0,
        }
    }

    /// Whether `key`, accepted at `now_ms`, is a replay; if not, it is kept.
    /// Times must not go backwards by more than a bucket (the store's clock).
    pub fn check(&mut self, key: u128, now_ms: u64) -> bool {
        if self.window_ms == 0 {
            return false;
        }
        self.expire(now_ms);
        if self.contains(key) {
            return true;
        }
        self.insert(key, now_ms);
        false
    }

    /// Keep `key` as accepted at `at_ms` without asking (rebuilding on open).
    pub fn insert(&mut self, key: u128, at_ms: u64) {
        if self.window_ms == 0 {
            return;
        }
        let bucket = at_ms / self.bucket_ms;
        match self.buckets.back_mut() {
            Some((b, keys)) if *b >= bucket => {
                if keys.insert(key) {
                    self.keys += 1;
                }
            }
            _ => {
                self.buckets.push_back((bucket, HashSet::from([key])));
                self.keys += 1;
            }
        }
        while self.keys > self.max_keys && self.buckets.len() > 1 {
            if let Some((_, keys)) = self.buckets.pop_front() {
                self.keys -= keys.len();
                self.dropped_early += 1;
            }
        }
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: u128) -> bool {
        self.buckets.iter().any(|(_, keys)| keys.contains(&key))
    }

    /// Take `key` back (it was checked, then its event was not written).
    pub fn remove(&mut self, key: u128) {
        for (_, keys) in self.buckets.iter_mut().rev() {
            if keys.remove(&key) {
                self.keys -= 1;
                return;
            }
        }
    }

    /// When the oldest bucket held began (ms): keys accepted before it are
    /// no longer held.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.buckets.front().map(|&(b, _)| b * self.bucket_ms)
    }

    /// Drop the buckets that ended before the window that ends at `now_ms`.
    fn expire(&mut self, now_ms: u64) {
        let oldest = now_ms.saturating_sub(self.window_ms) / self.bucket_ms;
        while self.buckets.front().is_some_and(|&(b, _)| b < oldest) {
            if let Some((_, keys)) = self.buckets.pop_front() {
                self.keys -= keys.len();
            }
        }
    }

    /// The earliest acceptance time a rebuild must read from, for a window
    /// ending at `now_ms`.
    pub fn rebuild_from_ms(&self, now_ms: u64) -> u64 {
        (now_ms.saturating_sub(self.window_ms) / self.bucket_ms) * self.bucket_ms
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Buckets dropped before their time because `max_keys` was reached.
    pub fn dropped_early(&self) -> u64 {
        self.dropped_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_within_the_window_is_caught_and_one_after_it_is_not() {
        let mut w = Window::new(60_000, 1_000_000);
        assert!(!w.check(1, 1_000_000));
        assert!(w.check(1, 1_030_000));
        assert!(w.check(1, 1_060_000 - 1));
        // Remembered at least the window, at most a bucket more.
        assert!(!w.check(1, 1_060_000 + 60_000 / BUCKETS + 1));
        assert!(!w.check(2, 2_000_000));
        assert!(w.check(2, 2_000_001));
    }

    #[test]
    fn a_zero_window_keeps_nothing() {
        let mut w = Window::new(0, 10);
        assert!(!w.check(1, 5));
        assert!(!w.check(1, 5));
        assert!(w.is_empty());
    }

    /// The failure this design replaces: 300,000 keys in a 30 s window, then one
    /// event 40 s later. Expiry here drops whole sets: every key goes, and the
    /// event after is checked against an empty index.
    #[test]
    fn a_burst_expires_whole_and_the_next_event_finds_an_empty_index() {
        let mut w = Window::new(30_000, 10_000_000);
        for k in 0..300_000u128 {
            assert!(!w.check(k, 1_000_000 + (k as u64 % 1000)));
        }
        assert_eq!(w.len(), 300_000);
        assert!(!w.check(7, 1_040_000));
        assert_eq!(w.len(), 1);
        assert!(!w.check(8, 1_040_001));
    }

    #[test]
    fn past_max_keys_the_oldest_bucket_goes_first_and_is_counted() {
        let mut w = Window::new(160_000, 1000);
        for k in 0..600u128 {
            w.check(k, 0);
        }
        for k in 600..1200u128 {
            w.check(k, 50_000);
        }
        // The first bucket went early: its keys are no longer replays.
        assert_eq!(w.dropped_early(), 1);
        assert_eq!(w.len(), 600);
        assert!(!w.check(1, 50_001));
        assert!(w.check(700, 50_002));
    }

    #[test]
    fn rebuilding_from_the_window_start_restores_what_a_check_would_find() {
        let mut live = Window::new(10_000, 1000);
        let accepted: Vec<(u128, u64)> =
            (0..100u128).map(|k| (k, 1_000 + k as u64 * 200)).collect();
        for &(k, t) in &accepted {
            live.check(k, t);
        }
        let now = 25_000;
        let mut rebuilt = Window::new(10_000, 1000);
        let from = rebuilt.rebuild_from_ms(now);
        for &(k, t) in accepted.iter().filter(|&&(_, t)| t >= from) {
            rebuilt.insert(k, t);
        }
        for k in 0..100u128 {
            assert_eq!(rebuilt.check(k, now), live.check(k, now), "key {k}");
        }
    }
}
