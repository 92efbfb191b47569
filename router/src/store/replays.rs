//! De-duplication of published events: a replay of an event (same bus, `source`
//! and `id`) accepted within `server.dedupe_window` is dropped.
//!
//! CloudEvents lets consumers treat two events with the same `source` and `id` as
//! the same event, and sources replay: an HTTP client retries a POST whose answer
//! it lost. Without this each replay would be queued again and reach the targets a
//! second time; with it a replay within the window is not queued, which is what
//! lets an S3 target put every event in exactly one object. (A source that numbers
//! its input, the Kafka source, recognises its replays by position instead: see
//! [`super::progress`].)
//!
//! The keys live in memory, in a [`Window`] of time buckets whose expiry costs
//! nothing per key, and on disk in a [`Log`] of their own (`dedupe/` in the data
//! directory: 16-byte key and time, no data) that exists only to rebuild the
//! window when sluice starts. Its segments are deleted whole once they fall out
//! of the window. A key costs about 40 bytes of log and 18-36 bytes of memory;
//! `server.dedupe_max_keys` bounds the memory (past it the oldest bucket goes
//! early: the window shortens, counted in `sluice_dedupe_buckets_dropped_total`).
//!
//! Order of durability: the group commit flushes the events first and this log
//! after, in the same round, before anyone is answered. A crash between the two
//! keeps events whose keys are lost (a replay of one would be queued again:
//! delivered twice, never lost); it can never keep a key whose event is lost,
//! which would drop the event's replay and lose it.
//!
//! Why a bus-wide index and not one per subscription: a replay matches the same
//! rules as the event it repeats, so one look per event does the work of one per
//! subscription, and the event log that replaces the per-subscription queues
//! (DESIGN.md, "The store") keeps these keys in its own records.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

use super::log::window::Window;
use super::log::{Append, Log};
use super::StoreError;

/// Segment size of the key log: about 200,000 keys.
const SEGMENT_BYTES: u64 = 8 << 20;

/// How far before the newest durable key a crash can have left events without
/// theirs: longer than a writer waits for its commit.
const RESTORE_SLACK_MS: u64 = 15_000;

/// Keys read per step when the window is rebuilt.
const REBUILD_STEP: usize = 65_536;

/// The keys accepted within the window, in memory and in their log.
pub(crate) struct Replays {
    window_ms: u64,
    /// `None` when the window is 0 (nothing is a replay, nothing is kept).
    log: Option<Log>,
    state: Mutex<State>,
}

struct State {
    window: Window,
    /// (first seq not yet durable, ms) after each sync, oldest first: which
    /// segments hold only keys older than a given time.
    synced: VecDeque<(u64, u64)>,
}

impl Replays {
    /// Open the key log in `dir` and rebuild the window from it.
    pub(crate) fn open(dir: &Path, window_ms: u64, max_keys: usize) -> Result<Self, StoreError> {
        Self::open_sized(dir, window_ms, max_keys, SEGMENT_BYTES)
    }

    fn open_sized(
        dir: &Path,
        window_ms: u64,
        max_keys: usize,
        segment_bytes: u64,
    ) -> Result<Self, StoreError> {
        let mut window = Window::new(window_ms, max_keys);
        let log = if window_ms == 0 {
            // Keys of an earlier run with a window are of no use now.
            let _ = std::fs::remove_dir_all(dir);
            None
        } else {
            let log = Log::open(dir, segment_bytes)?;
            let from_ms = window.rebuild_from_ms(crate::now_ms());
            let mut seq = log.first();
            loop {
                let entries = log.read(seq, REBUILD_STEP, usize::MAX)?;
                let Some(last) = entries.last() else { break };
                seq = last.seq + 1;
                for e in entries.iter().filter(|e| e.time_ms >= from_ms) {
                    window.insert(u128::from_be_bytes(e.key), e.time_ms);
                }
            }
            Some(log)
        };
        let synced = log
            .as_ref()
            .map(|l| VecDeque::from([(l.durable(), crate::now_ms())]))
            .unwrap_or_default();
        Ok(Self {
            window_ms,
            log,
            state: Mutex::new(State { window, synced }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Per key, whether it is a replay (accepted within the window, or earlier in
    /// `keys`). The others are kept from now on: call [`Replays::note`] once
    /// their events are written, or [`Replays::forget`] if they were not.
    pub(crate) fn check(&self, keys: &[u128], now_ms: u64) -> Vec<bool> {
        if self.log.is_none() {
            return vec![false; keys.len()];
        }
        let mut state = self.state();
        keys.iter()
            .map(|&k| state.window.check(k, now_ms))
            .collect()
    }

    /// Write `keys` (checked as new at `now_ms`) to the key log; durable with the
    /// next group commit.
    pub(crate) fn note(&self, keys: &[u128], now_ms: u64) -> Result<(), StoreError> {
        let Some(log) = &self.log else { return Ok(()) };
        if keys.is_empty() {
            return Ok(());
        }
        let bytes: Vec<[u8; 16]> = keys.iter().map(|k| k.to_be_bytes()).collect();
        let appends: Vec<Append<'_>> = bytes
            .iter()
            .map(|key| Append {
                key: *key,
                time_ms: now_ms,
                data: &[],
            })
            .collect();
        log.append(&appends).map(|_| ())
    }

    /// Take back `keys` whose events were not written (a failed publish): their
    /// replays must be accepted.
    pub(crate) fn forget(&self, keys: &[u128]) {
        if self.log.is_none() {
            return;
        }
        let mut state = self.state();
        for k in keys {
            state.window.remove(*k);
        }
    }

    /// Where the keys noted so far end: take it before the events' logs are
    /// written, then [`Replays::sync_before`] it after, so a key noted while
    /// they were being written (its event is in no log yet) waits for the next
    /// round instead of becoming durable before its event.
    pub(crate) fn mark(&self) -> u64 {
        self.log.as_ref().map_or(0, Log::next_seq)
    }

    /// Make the keys noted so far durable.
    #[cfg(test)]
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.sync_before(u64::MAX)
    }

    /// Make the keys noted before `mark` durable (the committer, after the
    /// events), and delete the segments that fell out of the window.
    pub(crate) fn sync_before(&self, mark: u64) -> Result<(), StoreError> {
        let Some(log) = &self.log else { return Ok(()) };
        let durable = log.sync_before(mark)?;
        let now = crate::now_ms();
        let floor = {
            let mut state = self.state();
            if state.synced.back().is_none_or(|&(seq, _)| seq != durable) {
                state.synced.push_back((durable, now));
            }
            // Keys written before `oldest` are out of the window (or were dropped
            // from it early): everything below the seq durable by then can go.
            let oldest = state
                .window
                .oldest_ms()
                .unwrap_or(now)
                .max(now.saturating_sub(self.window_ms));
            while state.synced.len() > 1 && state.synced[1].1 <= oldest {
                state.synced.pop_front();
            }
            state
                .synced
                .front()
                .filter(|&&(_, at)| at <= oldest)
                .map(|&(seq, _)| seq)
        };
        if let Some(floor) = floor {
            log.delete_before(floor)?;
        }
        Ok(())
    }

    /// From when events may have been made durable without their keys (a
    /// crash between the two halves of a group commit): a commit's timeout
    /// before the newest durable key, or the whole window when there is none.
    /// `None` when nothing is kept.
    pub(crate) fn restore_from_ms(&self) -> Option<u64> {
        let log = self.log.as_ref()?;
        let now = crate::now_ms();
        let window_start = now.saturating_sub(self.window_ms);
        let newest = log
            .read(log.durable().saturating_sub(1), 1, 0)
            .ok()
            .and_then(|e| e.first().map(|e| e.time_ms));
        Some(match newest {
            Some(t) => t.saturating_sub(RESTORE_SLACK_MS).max(window_start),
            None => window_start,
        })
    }

    /// Keep `key`, accepted at `at_ms`, unless it is held already (see
    /// [`Replays::restore_from_ms`]); returns 1 if it was restored.
    pub(crate) fn restore(&self, key: u128, at_ms: u64) -> Result<usize, StoreError> {
        if self.log.is_none() {
            return Ok(0);
        }
        {
            let mut state = self.state();
            if state.window.contains(key) {
                return Ok(0);
            }
            state.window.insert(key, at_ms);
        }
        self.note(&[key], at_ms)?;
        Ok(1)
    }

    /// Keys held in memory.
    pub(crate) fn len(&self) -> usize {
        self.state().window.len()
    }

    /// Buckets dropped before their time because `server.dedupe_max_keys` was
    /// reached.
    pub(crate) fn dropped_early(&self) -> u64 {
        self.state().window.dropped_early()
    }

    /// Bytes of the key log on disk.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.log.as_ref().map_or(0, Log::disk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_caught_across_a_reopen_and_forgotten_keys_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::now_ms();
        let r = Replays::open(dir.path(), 60_000, 1_000_000).unwrap();
        assert_eq!(r.check(&[1, 2, 2], now), [false, false, true]);
        r.note(&[1], now).unwrap();
        r.forget(&[2]);
        r.sync().unwrap();
        assert_eq!(r.check(&[1, 2], now + 1), [true, false]);
        drop(r);
        let r = Replays::open(dir.path(), 60_000, 1_000_000).unwrap();
        assert_eq!(r.len(), 1, "only the noted and synced key comes back");
        assert_eq!(r.check(&[1, 3], now + 2), [true, false]);
    }

    #[test]
    fn keys_noted_but_never_synced_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::now_ms();
        let r = Replays::open(dir.path(), 60_000, 1_000_000).unwrap();
        r.check(&[7], now);
        r.note(&[7], now).unwrap();
        // A crash before the group commit: the key was never durable, and its
        // event was never acknowledged either.
        drop(r);
        let r = Replays::open(dir.path(), 60_000, 1_000_000).unwrap();
        assert_eq!(r.check(&[7], now + 1), [false]);
    }

    #[test]
    fn old_segments_go_once_out_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        // A 1 ms window: every sync finds the keys before it out of the window;
        // 256 KiB segments: each round of 50,000 keys (2 MB) fills eight.
        let r = Replays::open_sized(dir.path(), 1, 10_000_000, 256 << 10).unwrap();
        let keys: Vec<u128> = (0..250_000).collect();
        let mut segments = Vec::new();
        for part in keys.chunks(50_000) {
            let now = crate::now_ms();
            r.check(part, now);
            r.note(part, now).unwrap();
            r.sync().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(3));
            segments.push(r.log.as_ref().unwrap().segment_count());
        }
        r.sync().unwrap();
        let log = r.log.as_ref().unwrap();
        // Without deletion: about 40 segments, 10 MB.
        assert!(
            log.segment_count() <= 10 && log.disk_bytes() < 3 << 20,
            "segments after each round: {segments:?}, {} bytes",
            log.disk_bytes()
        );
    }

    #[test]
    fn a_zero_window_keeps_nothing_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dedupe");
        let r = Replays::open(&path, 0, 10).unwrap();
        assert_eq!(r.check(&[1, 1], 5), [false, false]);
        r.note(&[1], 5).unwrap();
        r.sync().unwrap();
        assert!(!path.exists());
        assert_eq!(r.disk_bytes(), 0);
    }
}
