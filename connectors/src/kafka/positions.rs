//! sluice's own record of how far each partition is durable, and where an
//! assigned partition starts reading.
//!
//! Per group, topic and partition the source stores the highest offset it made
//! durable (a [`Progress`] position), written after the events it covers and made
//! durable with them. The group's committed offset trails it: librdkafka commits
//! once a second, so a crash leaves up to a second of records durable but not
//! committed. On assignment the position is authoritative when it is ahead of the
//! committed offset: the partition resumes just after it, and nothing durable is
//! read (or queued) again. Whether a position still describes the partition is
//! decided from the partition's watermarks only (see [`decide`]), never from a
//! missing commit or one offset that went back; when in doubt the source re-reads,
//! since a duplicate is allowed and a loss is not.
//!
//! Positions are kept by the engine ([`SourceContext::publish_at`]) and count for
//! `server.dedupe_window` after they were written, so offsets a user rewound on
//! purpose while sluice was stopped for longer are read again.

use std::collections::HashMap;

use rdkafka::message::Message;
use sluice_router::engine::StoreError;
use sluice_router::source::SourceContext;

/// The positions of one source's group, cached in memory after their first read.
pub(super) struct Positions {
    cx: SourceContext,
    group: String,
    /// Per position key, the live position (None: nothing, or not trusted).
    known: HashMap<Vec<u8>, Option<i64>>,
    /// The batch being published: per key, its highest offset so far.
    pending: Vec<(Vec<u8>, i64)>,
}

impl Positions {
    pub(super) fn new(cx: SourceContext, group: &str) -> Self {
        Self {
            cx,
            group: group.to_owned(),
            known: HashMap::new(),
            pending: Vec::new(),
        }
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

    /// The live position under `key` (within `server.dedupe_window` of being
    /// written, see [`SourceContext::position`]).
    fn live_at(&mut self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        if let Some(at) = self.known.get(key) {
            return Ok(*at);
        }
        let at = self.cx.position(key)?;
        self.known.insert(key.to_vec(), at);
        Ok(at)
    }

    /// The highest offset of `topic`/`partition` known durable, if any.
    pub(super) fn durable(
        &mut self,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.key(topic, partition);
        self.live_at(&key)
    }

    /// Stop trusting the stored position of a partition (it no longer describes
    /// the partition's offsets); the next publish replaces it.
    pub(super) fn forget(&mut self, topic: &str, partition: i32) {
        let key = self.key(topic, partition);
        self.known.insert(key, None);
    }

    /// Start a batch: nothing pending.
    pub(super) fn begin(&mut self) {
        self.pending.clear();
    }

    /// Whether `m` is durable already (at or below the partition's position) or
    /// earlier in the batch being built (a partition handed back mid-batch is
    /// read again from its committed offset); otherwise it joins the batch.
    pub(super) fn replayed<M: Message>(&mut self, m: &M) -> Result<bool, StoreError> {
        let key = self.key(m.topic(), m.partition());
        if let Some((_, at)) = self.pending.iter_mut().find(|(k, _)| *k == key) {
            if m.offset() <= *at {
                return Ok(true);
            }
            *at = m.offset();
            return Ok(false);
        }
        if self.live_at(&key)?.is_some_and(|p| m.offset() <= p) {
            return Ok(true);
        }
        self.pending.push((key, m.offset()));
        Ok(false)
    }

    /// The positions to store with the batch: per partition, its highest offset.
    pub(super) fn batch_positions(&self) -> Vec<(Vec<u8>, i64)> {
        self.pending.clone()
    }

    /// The batch is durable: remember its positions.
    pub(super) fn stored(&mut self) {
        for (key, offset) in self.pending.drain(..) {
            self.known.insert(key, Some(offset));
        }
    }
}

/// Where an assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Start {
    /// Where the group's committed offset says (or, without one, where `start`
    /// says): sluice holds nothing beyond it.
    Committed,
    /// At this offset: just after sluice's durable position when that is ahead of
    /// the committed offset, or at the first record still in the partition.
    At(i64),
}

/// What to do with a partition on assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decision {
    pub start: Start,
    /// Keep skipping records at or below sluice's stored position.
    pub keep_position: bool,
    /// The first offset the consumer should deliver, if known (for the gap check).
    pub expected: Option<i64>,
    /// Something the user should know, logged once as a warning.
    pub warning: Option<String>,
    /// Records that can no longer be read: (first, last) offsets.
    pub gap: Option<(i64, i64)>,
}

impl Decision {
    fn start(start: Start, expected: Option<i64>) -> Self {
        Self {
            start,
            keep_position: true,
            expected,
            warning: None,
            gap: None,
        }
    }
}

/// Decide where a newly assigned partition starts.
///
/// - `position`: the highest offset sluice holds durable (within the window);
/// - `committed`: the group's committed offset (the next offset to read);
/// - `watermarks`: the partition's first offset and its end (the next offset a
///   producer writes), or `None` if they could not be read.
///
/// A position at or beyond the partition's end means the topic was deleted and
/// created again (or truncated): the position is dropped. A partition whose
/// first records are gone (retention) starts at its first record, never at
/// `latest`. A committed offset ahead of sluice's position (another member read
/// further) wins. Without watermarks nothing is trusted beyond the committed
/// offset: records may be read twice, none are skipped.
pub(super) fn decide(
    position: Option<i64>,
    committed: Option<i64>,
    watermarks: Option<(i64, i64)>,
) -> Decision {
    let Some((low, high)) = watermarks else {
        return Decision {
            keep_position: false,
            warning: position.filter(|p| committed.is_none_or(|c| c <= *p)).map(|_| {
                "Could not read the partition's offsets; reading again from the committed offset \
                 (records may be delivered twice)."
                    .to_owned()
            }),
            ..Decision::start(Start::Committed, committed)
        };
    };
    // The group's offset, where it points at a record still there (or the end).
    let committed_in_range = committed.filter(|c| (low..=high).contains(c));
    match position {
        Some(p) if p >= high => {
            let (start, expected) = match committed_in_range {
                Some(c) => (Start::Committed, Some(c)),
                None => (Start::At(low), Some(low)),
            };
            Decision {
                keep_position: false,
                warning: Some(format!(
                    "sluice's position (offset {p}) is beyond the end of the partition \
                     (offset {high}): the topic was deleted and created again, or truncated; \
                     reading from offset {}.",
                    expected.unwrap_or(low)
                )),
                ..Decision::start(start, expected)
            }
        }
        Some(p) if p + 1 < low => match committed_in_range {
            Some(c) => Decision::start(Start::Committed, Some(c)),
            None => Decision {
                warning: Some(format!(
                    "Offsets {} to {} were deleted (retention) before sluice read them; \
                     reading from offset {low}.",
                    p + 1,
                    low - 1
                )),
                gap: Some((p + 1, low - 1)),
                ..Decision::start(Start::At(low), Some(low))
            },
        },
        Some(p) => match committed_in_range {
            Some(c) if c > p => Decision::start(Start::Committed, Some(c)),
            _ => Decision::start(Start::At(p + 1), Some(p + 1)),
        },
        None => match (committed, committed_in_range) {
            (_, Some(c)) => Decision::start(Start::Committed, Some(c)),
            // Committed before records it points at were deleted: from the
            // first record still there, never from `latest`.
            (Some(c), None) if c < low => Decision {
                warning: Some(format!(
                    "Offsets {c} to {} were deleted (retention) before sluice read them; \
                     reading from offset {low}.",
                    low - 1
                )),
                gap: Some((c, low - 1)),
                ..Decision::start(Start::At(low), Some(low))
            },
            // Beyond the end (a topic created again): where `start` says.
            (Some(c), None) => Decision {
                warning: Some(format!(
                    "The committed offset {c} is beyond the end of the partition (offset \
                     {high}): the topic was deleted and created again, or truncated; reading \
                     from offset {low}."
                )),
                ..Decision::start(Start::At(low), Some(low))
            },
            (None, None) => Decision::start(Start::Committed, None),
        },
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::OwnedMessage;
    use rdkafka::Timestamp;
    use sluice_router::engine::Engine;
    use tokio_util::sync::CancellationToken;

    use super::*;

    /// A source context on an engine in `dir` whose positions count for `window`.
    fn context(dir: &std::path::Path, window: &str) -> SourceContext {
        let text = format!(
            "server: {{ data_dir: {}, dedupe_window: {window} }}\n",
            dir.display()
        );
        let validated = crate::load(&text).unwrap();
        let engine = Engine::open(&validated).unwrap();
        engine
            .source("src", "default", CancellationToken::new())
            .unwrap()
    }

    fn record(partition: i32, offset: i64) -> OwnedMessage {
        let ts = Timestamp::CreateTime(0);
        OwnedMessage::new(None, None, "t".into(), ts, partition, offset, None)
    }

    /// What a publish does: the positions are written with the events.
    async fn publish(p: &mut Positions, batch: &[OwnedMessage]) -> Vec<i64> {
        p.begin();
        let mut fresh = Vec::new();
        for m in batch {
            if !p.replayed(m).unwrap() {
                fresh.push(m.offset());
            }
        }
        let cx = p.cx.clone();
        cx.publish_at(&[], &p.batch_positions()).await.unwrap();
        p.stored();
        fresh
    }

    #[tokio::test]
    async fn positions_cover_what_was_published_per_group_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let cx = context(dir.path(), "1h");
        let mut p = Positions::new(cx.clone(), "g");
        let fresh = publish(&mut p, &[record(0, 5), record(0, 6), record(1, 9)]).await;
        assert_eq!(fresh, [5, 6, 9]);

        // After a restart (a fresh cache), from the store.
        let mut p = Positions::new(cx.clone(), "g");
        assert_eq!(p.durable("t", 0).unwrap(), Some(6));
        assert_eq!(p.durable("t", 1).unwrap(), Some(9));
        assert_eq!(p.durable("t", 2).unwrap(), None, "another partition");
        // Re-read records are skipped; newer ones are not; the position never
        // goes down.
        let fresh = publish(&mut p, &[record(0, 2), record(0, 6), record(0, 7)]).await;
        assert_eq!(fresh, [7]);
        assert_eq!(p.durable("t", 0).unwrap(), Some(7));
        // Another group: nothing is trusted.
        let mut other = Positions::new(cx, "g2");
        assert_eq!(other.durable("t", 0).unwrap(), None);
        // A forgotten position skips nothing until the next publish replaces it.
        p.forget("t", 0);
        assert_eq!(publish(&mut p, &[record(0, 3)]).await, [3]);
        assert_eq!(p.durable("t", 0).unwrap(), Some(3));
    }

    #[tokio::test]
    async fn positions_older_than_the_window_count_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Positions::new(context(dir.path(), "1ms"), "g");
        publish(&mut p, &[record(0, 5)]).await;
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut p = Positions::new(p.cx.clone(), "g");
        assert_eq!(p.durable("t", 0).unwrap(), None);
    }

    #[tokio::test]
    async fn a_partition_read_again_mid_batch_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Positions::new(context(dir.path(), "1h"), "g");
        // 10..12 read, the partition handed back and read again from 10.
        let batch = [10, 11, 12, 10, 11, 12, 13].map(|o| record(0, o));
        assert_eq!(publish(&mut p, &batch).await, [10, 11, 12, 13]);
    }

    #[test]
    fn sluice_s_position_wins_when_it_is_ahead_of_the_committed_offset() {
        // Crashed after making 0..=149 durable, with 100 committed.
        let d = decide(Some(149), Some(100), Some((0, 300)));
        assert_eq!(d.start, Start::At(150));
        assert_eq!(d.expected, Some(150));
        assert!(d.keep_position && d.warning.is_none());
        // A crash before the group's first commit: same.
        assert_eq!(
            decide(Some(149), None, Some((0, 300))).start,
            Start::At(150)
        );
        // Caught up exactly: the end of the partition is a fine place to be.
        assert_eq!(
            decide(Some(299), None, Some((0, 300))).start,
            Start::At(300)
        );
        // Another member went further: its commit wins.
        let d = decide(Some(149), Some(200), Some((0, 300)));
        assert_eq!((d.start, d.expected), (Start::Committed, Some(200)));
        // Equal: nothing to do.
        assert_eq!(
            decide(Some(149), Some(150), Some((0, 300))).start,
            Start::Committed
        );
    }

    #[test]
    fn a_position_beyond_the_end_of_the_partition_is_dropped() {
        // The topic was deleted and created again: 40 records now, sluice had 149.
        let d = decide(Some(149), None, Some((0, 40)));
        assert_eq!((d.start, d.expected), (Start::At(0), Some(0)));
        assert!(!d.keep_position);
        assert!(d.warning.unwrap().contains("deleted and created again"));
        // With a committed offset inside the new partition, from there.
        let d = decide(Some(149), Some(20), Some((0, 40)));
        assert_eq!(
            (d.start, d.expected, d.keep_position),
            (Start::Committed, Some(20), false)
        );
        // One past the last record is not beyond the end.
        assert!(decide(Some(39), None, Some((0, 40))).keep_position);
    }

    #[test]
    fn records_deleted_before_they_were_read_are_a_gap_and_reading_starts_at_the_first_left() {
        let d = decide(Some(99), Some(80), Some((500, 900)));
        assert_eq!((d.start, d.gap), (Start::At(500), Some((100, 499))));
        // The group went past the deleted records: nothing was missed.
        let d = decide(Some(99), Some(600), Some((500, 900)));
        assert_eq!((d.start, d.gap), (Start::Committed, None));
        // Without a position of sluice's, a committed offset below the first record
        // starts at the first record (not at `latest`), and says so.
        let d = decide(None, Some(80), Some((500, 900)));
        assert_eq!((d.start, d.gap), (Start::At(500), Some((80, 499))));
        // A committed offset beyond the end (a topic created again): from the start.
        let d = decide(None, Some(2_000), Some((0, 900)));
        assert_eq!(d.start, Start::At(0));
        assert!(d.gap.is_none() && d.warning.is_some());
        // Nothing known at all: the group's `start`.
        assert_eq!(
            decide(None, None, Some((0, 900))),
            Decision::start(Start::Committed, None)
        );
    }

    #[test]
    fn without_watermarks_nothing_beyond_the_committed_offset_is_trusted() {
        let d = decide(Some(149), Some(100), None);
        assert_eq!((d.start, d.keep_position), (Start::Committed, false));
        assert!(d.warning.is_some(), "re-reading is said once");
        // Nothing to re-read: no warning.
        assert!(decide(Some(149), Some(150), None).warning.is_none());
        assert!(decide(None, Some(150), None).warning.is_none());
    }
}
