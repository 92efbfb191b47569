//! How the Kafka source recognises records it already queued: per group and
//! partition, the highest offset made durable (a [`Progress`] position) instead of
//! an index entry per event. After a crash the uncommitted tail is read again and
//! skipped up to that offset; past `server.dedupe_window` after it was written a
//! position no longer counts, so offsets rewound on purpose are read again. A topic
//! deleted and created again starts its offsets over: a partition assigned without
//! a committed offset, or whose offsets go back without a rebalance, drops its
//! position.

use std::collections::HashMap;

use rdkafka::message::Message;
use sluice_router::store::{Position, Progress, StoreError};

/// The positions of one source, cached in memory after their first read.
pub(super) struct Replays {
    progress: Progress,
    group: String,
    window_ms: u64,
    /// Per position key, what the store holds (None: nothing yet).
    known: HashMap<Vec<u8>, Option<Position>>,
    /// Per position key, the highest offset published in this assignment.
    last: HashMap<Vec<u8>, i64>,
    /// The batch being published: its highest offset per partition.
    pending: Vec<(Vec<u8>, i64)>,
}

impl Replays {
    pub(super) fn new(progress: Progress, group: &str, window_ms: u64) -> Self {
        Self {
            progress,
            group: group.to_owned(),
            window_ms,
            known: HashMap::new(),
            last: HashMap::new(),
            pending: Vec::new(),
        }
    }

    pub(super) fn progress(&self) -> &Progress {
        &self.progress
    }

    /// `group` NUL `topic` NUL partition (i32 BE): a new group starts afresh.
    fn key(&self, topic: &str, partition: i32) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.group.len() + topic.len() + 6);
        k.extend_from_slice(self.group.as_bytes());
        k.push(0);
        k.extend_from_slice(topic.as_bytes());
        k.push(0);
        k.extend_from_slice(&partition.to_be_bytes());
        k
    }

    /// The live position of a partition: stored within the window.
    fn live(&mut self, key: &[u8], now_ms: u64) -> Result<Option<i64>, StoreError> {
        let at = match self.known.get(key) {
            Some(at) => *at,
            None => {
                let at = self.progress.get(key)?;
                self.known.insert(key.to_vec(), at);
                at
            }
        };
        Ok(at
            .filter(|at| at.written_ms.saturating_add(self.window_ms) > now_ms)
            .map(|at| at.position))
    }

    /// A partition was assigned to this consumer; `committed`: the group had an
    /// offset for it. Without one (a new group, or a topic deleted and created
    /// again, whose offsets start over) the stored position no longer describes
    /// this partition's offsets and is dropped; at worst, records queued just
    /// before a crash in a group's first seconds are queued again.
    pub(super) fn assigned(&mut self, topic: &str, partition: i32, committed: bool) {
        let key = self.key(topic, partition);
        self.last.remove(&key);
        if !committed {
            self.known.insert(key, None);
        }
    }

    /// Whether `m` was queued before (its offset is covered by a live position).
    ///
    /// Within one assignment offsets only grow. A record at or below the last
    /// offset published means the consumer's position was reset (the log was
    /// truncated, or the topic deleted and created again while it read): those
    /// offsets name new records, so the stored position is dropped.
    pub(super) fn seen<M: Message>(&mut self, m: &M, now_ms: u64) -> Result<bool, StoreError> {
        let key = self.key(m.topic(), m.partition());
        if self.last.get(&key).is_some_and(|&last| m.offset() <= last) {
            tracing::warn!(
                topic = m.topic(),
                partition = m.partition(),
                offset = m.offset(),
                "Offsets started over without a rebalance; reading them as new records."
            );
            self.last.remove(&key);
            self.known.insert(key.clone(), None);
        }
        Ok(self
            .live(&key, now_ms)?
            .is_some_and(|covered| m.offset() <= covered))
    }

    /// The positions to store after publishing `batch`: per partition, its highest
    /// offset there (never below a live position, so skipping a replayed batch does
    /// not lower the mark).
    pub(super) fn after<M: Message>(
        &mut self,
        batch: &[M],
        now_ms: u64,
    ) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        self.pending.clear();
        for m in batch {
            let key = self.key(m.topic(), m.partition());
            match self.pending.iter_mut().find(|(k, _)| *k == key) {
                Some((_, at)) => *at = (*at).max(m.offset()),
                None => self.pending.push((key, m.offset())),
            }
        }
        let highest = self.pending.clone();
        let mut out = Vec::with_capacity(highest.len());
        for (key, offset) in highest {
            let live = self.live(&key, now_ms)?.unwrap_or(i64::MIN);
            out.push((key, offset.max(live)));
        }
        Ok(out)
    }

    /// Remember what was just stored, and the batch's last offsets.
    pub(super) fn stored(&mut self, positions: &[(Vec<u8>, i64)], now_ms: u64) {
        for (key, offset) in self.pending.drain(..) {
            self.last.insert(key, offset);
        }
        for (key, position) in positions {
            self.known.insert(
                key.clone(),
                Some(Position {
                    position: *position,
                    written_ms: now_ms,
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;
    use sluice_router::store::Store;

    use super::*;

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        let ts = Timestamp::CreateTime(0);
        OwnedMessage::new(None, None, "t".into(), ts, partition, offset, None)
    }

    /// What a publish does with the positions, at time 100.
    fn store_positions(r: &mut Replays, positions: &[(Vec<u8>, i64)]) {
        for (key, at) in positions {
            let at = Position {
                position: *at,
                written_ms: 100,
            };
            r.progress().put(key, at).unwrap();
        }
        r.stored(positions, 100);
    }

    #[test]
    fn offsets_up_to_a_stored_position_are_replays_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = Replays::new(store.progress("src").unwrap(), "g", 1_000);
        let batch = [record(0, 5), record(0, 6), record(1, 9)];
        assert!(!r.seen(&batch[0], 100).unwrap(), "nothing stored yet");
        let positions = r.after(&batch, 100).unwrap();
        assert_eq!(positions.iter().map(|p| p.1).collect::<Vec<_>>(), [6, 9]);
        store_positions(&mut r, &positions);

        // After a restart (a fresh cache), from the store.
        let mut r = Replays::new(store.progress("src").unwrap(), "g", 1_000);
        assert!(r.seen(&record(0, 6), 500).unwrap());
        assert!(r.seen(&record(1, 3), 500).unwrap());
        assert!(!r.seen(&record(0, 7), 500).unwrap(), "past the position");
        assert!(!r.seen(&record(2, 0), 500).unwrap(), "another partition");
        // A replayed batch does not lower the position.
        assert_eq!(r.after(&[record(0, 2)], 500).unwrap()[0].1, 6);
        // Another group, or the window gone by: read again.
        let mut other = Replays::new(store.progress("src").unwrap(), "g2", 1_000);
        assert!(!other.seen(&record(0, 6), 500).unwrap());
        assert!(!r.seen(&record(0, 6), 1_100).unwrap());
        assert_eq!(r.after(&[record(0, 2)], 1_100).unwrap()[0].1, 2);
    }

    #[test]
    fn offsets_that_start_over_are_new_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut r = Replays::new(store.progress("src").unwrap(), "g", 60_000);
        let publish = |r: &mut Replays, batch: &[OwnedMessage]| {
            for m in batch {
                r.seen(m, 100).unwrap();
            }
            let positions = r.after(batch, 100).unwrap();
            store_positions(r, &positions);
        };
        publish(&mut r, &[record(0, 40), record(0, 49)]);
        // Re-assigned with a committed offset: a re-read is a replay.
        r.assigned("t", 0, true);
        assert!(r.seen(&record(0, 45), 100).unwrap());
        // Offsets going back without a rebalance: the log started over.
        publish(&mut r, &[record(0, 50)]);
        assert!(!r.seen(&record(0, 3), 100).unwrap());
        publish(&mut r, &[record(0, 3)]);
        r.assigned("t", 0, true);
        assert!(
            r.seen(&record(0, 3), 100).unwrap(),
            "its new position counts"
        );
        assert!(!r.seen(&record(0, 4), 100).unwrap());
        // Assigned without a committed offset: the position is dropped.
        r.assigned("t", 0, false);
        assert!(!r.seen(&record(0, 1), 100).unwrap());
    }
}
