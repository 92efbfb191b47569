//! The Kafka source's side of its consumer group: where each assigned partition
//! starts (sluice's durable position, the committed offset, or `start`), the
//! commit of stored offsets before partitions are taken away, the committed
//! offsets and client errors the status shows. librdkafka calls these from the
//! source's own `recv`, so they run in order with the records it delivers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sluice_router::throttle::Level;

use super::positions::{decide, Positions, Start};
use super::status::Tracker;

/// How long an assignment waits for the broker's committed offsets, watermarks
/// and offsets-for-times answers.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// The consumer's context: see the module docs.
pub(super) struct Rebalancing {
    pub(super) source: String,
    pub(super) start_ms: Option<i64>,
    /// Partitions started by time whose first record at or after the time has not
    /// been seen yet: the source drops their older records itself, for brokers
    /// whose offsets-for-times lookup does not look at timestamps.
    pub(super) seeking: Arc<Mutex<HashSet<(String, i32)>>>,
    /// sluice's durable positions (None with `dedupe_window: 0s`).
    pub(super) positions: Option<Arc<Mutex<Positions>>>,
    pub(super) tracker: Arc<Tracker>,
}

/// The offset in `list` for a partition, if it is a real offset.
fn offset_of(list: &TopicPartitionList, topic: &str, partition: i32) -> Option<i64> {
    match list.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) if o >= 0 => Some(o),
        _ => None,
    }
}

impl ClientContext for Rebalancing {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let level = match level {
            L::Emerg | L::Alert | L::Critical | L::Error => Level::Error,
            L::Warning => Level::Warn,
            L::Notice | L::Info => Level::Info,
            L::Debug => {
                tracing::debug!(source = %self.source, "librdkafka {fac}: {message}");
                return;
            }
        };
        self.tracker
            .throttle
            .log(level, &format!("Kafka client: {fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.tracker.throttle.log(
            Level::Error,
            &format!("Kafka client error: {error}: {reason}"),
        );
    }
}

impl ConsumerContext for Rebalancing {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                if let Ok(mut seeking) = self.seeking.lock() {
                    for e in tpl.elements() {
                        seeking.remove(&(e.topic().to_owned(), e.partition()));
                    }
                }
                tracing::info!(source = %self.source, partitions = tpl.count(), "Partitions revoked; committing.");
                // Stored offsets cover durable records only; commit them so the
                // next owner starts after them.
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "Commit on revoke found nothing to commit.");
                }
                for e in tpl.elements() {
                    self.tracker.revoked(e.topic(), e.partition());
                }
            }
            Rebalance::Assign(tpl) => {
                let list: Vec<String> = tpl
                    .elements()
                    .iter()
                    .map(|e| format!("{}/{}", e.topic(), e.partition()))
                    .collect();
                tracing::info!(source = %self.source, partitions = tpl.count(), list = %list.join(","), "Partitions assigned.");
            }
            Rebalance::Error(e) => {
                self.tracker
                    .throttle
                    .log(Level::Warn, &format!("Rebalance failed: {e}"));
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let catch_up = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            self.starts(consumer, tpl)
        } else {
            Vec::new()
        };
        self.default_rebalance(consumer, err, tpl);
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            // Resumed after sluice's position: let the group's offset catch up, so
            // the next owner (or a restart without this store) starts there too.
            for (topic, partition, at) in catch_up {
                // librdkafka commits the stored offset + 1.
                if let Err(e) = consumer.store_offset(&topic, partition, at - 1) {
                    tracing::debug!(source = %self.source, topic, partition, error = %e, "Offset not stored.");
                }
            }
            if self.tracker.is_paused() {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::debug!(source = %self.source, error = %e, "Pausing new partitions failed.");
                }
            }
            self.tracker.assignment_done();
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for e in offsets.elements() {
                    if let (Offset::Offset(o), Ok(())) = (e.offset(), e.error()) {
                        self.tracker.committed(e.topic(), e.partition(), o);
                    }
                }
            }
            // Nothing stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(rdkafka::error::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self.tracker.throttle.log(
                Level::Warn,
                &format!("Committing offsets failed (they are committed again later): {e}"),
            ),
        }
    }
}

impl Rebalancing {
    /// Decide where each newly assigned partition in `tpl` starts and set it in
    /// `tpl`; returns the partitions started after sluice's position whose
    /// committed offset is behind it (topic, partition, start offset).
    fn starts(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
    ) -> Vec<(String, i32, i64)> {
        let committed = match consumer.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "Reading the group's committed offsets failed; partitions start from sluice's positions or the group's offsets.");
                None
            }
        };
        let mut by_time = TopicPartitionList::new();
        let mut catch_up = Vec::new();
        let parts: Vec<(String, i32)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect();
        for (topic, partition) in parts {
            let committed_at = committed
                .as_ref()
                .and_then(|c| offset_of(c, &topic, partition));
            let position = self.position(&topic, partition);
            let watermarks = if position.is_some() || committed_at.is_some() {
                match consumer.fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT) {
                    Ok(w) => Some(w),
                    Err(e) => {
                        tracing::warn!(source = %self.source, topic, partition, error = %e, "Reading the partition's watermarks failed.");
                        None
                    }
                }
            } else {
                None
            };
            let d = decide(position, committed_at, watermarks);
            if let Some(warning) = &d.warning {
                tracing::warn!(source = %self.source, topic, partition, "{warning}");
            }
            if !d.keep_position {
                if let Some(p) = &self.positions {
                    p.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .forget(&topic, partition);
                }
            }
            match d.start {
                Start::At(at) => {
                    let _ = tpl.set_partition_offset(&topic, partition, Offset::Offset(at));
                    if at > 0 && committed_at.is_none_or(|c| c < at) {
                        catch_up.push((topic.clone(), partition, at));
                    }
                    if position.is_some_and(|p| p + 1 == at) {
                        tracing::info!(source = %self.source, topic, partition, offset = at, committed = ?committed_at, "Resuming after what sluice holds durable.");
                    }
                }
                Start::Committed if committed_at.is_none() && self.start_ms.is_some() => {
                    let _ = by_time.add_partition_offset(
                        &topic,
                        partition,
                        Offset::Offset(self.start_ms.unwrap_or_default()),
                    );
                }
                Start::Committed => {}
            }
            if let Some((first, last)) = d.gap {
                self.tracker.gap(&topic, partition, first, last);
            }
            let durable = if d.keep_position { position } else { None };
            self.tracker.assigned(
                &topic,
                partition,
                committed_at,
                durable,
                watermarks,
                d.expected,
            );
        }
        self.start_at_time(consumer, tpl, by_time);
        catch_up
    }

    /// sluice's durable position of a partition; a store that cannot be read
    /// trusts nothing (records are read again).
    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.positions.as_ref()?;
        let mut positions = positions.lock().unwrap_or_else(|e| e.into_inner());
        match positions.durable(topic, partition) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(source = %self.source, topic, partition, error = %e, "Reading sluice's position failed; reading from the committed offset.");
                None
            }
        }
    }

    /// What librdkafka's default rebalance does (rdkafka's `rebalance`), kept here
    /// because overriding `rebalance` replaces it.
    fn default_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &TopicPartitionList,
    ) {
        use RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS as ASSIGN,
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS as REVOKE,
        };
        let rebalance = match err {
            ASSIGN => Rebalance::Assign(tpl),
            REVOKE => Rebalance::Revoke(tpl),
            other => Rebalance::Error(KafkaError::Rebalance(other.into())),
        };
        self.pre_rebalance(consumer, &rebalance);
        let cooperative = matches!(
            consumer.rebalance_protocol(),
            RebalanceProtocol::Cooperative
        );
        let result = match (err, cooperative) {
            (ASSIGN, true) => consumer.incremental_assign(tpl),
            (ASSIGN, false) => consumer.assign(tpl),
            (REVOKE, true) => consumer.incremental_unassign(tpl),
            _ => consumer.unassign(),
        };
        if let Err(e) = result {
            tracing::warn!(source = %self.source, error = %e, "Applying a rebalance failed.");
        }
        self.post_rebalance(consumer, &rebalance);
    }

    /// Start each partition in `times` (partitions with neither a committed offset
    /// nor a position of sluice's, with their time as the offset) at its first
    /// record at or after `start`. A failed lookup leaves the partition to
    /// `auto.offset.reset` (latest) and is logged.
    fn start_at_time(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        times: TopicPartitionList,
    ) {
        if times.count() == 0 {
            return;
        }
        if let Ok(mut seeking) = self.seeking.lock() {
            for e in times.elements() {
                seeking.insert((e.topic().to_owned(), e.partition()));
            }
        }
        match consumer.offsets_for_times(times, LOOKUP_TIMEOUT) {
            Ok(found) => {
                tracing::debug!(source = %self.source, offsets = ?found, "Start offsets for the `start` time.");
                for e in found.elements() {
                    // No record at or after the time: start at the end.
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 => Offset::Offset(o),
                        _ => Offset::End,
                    };
                    let _ = tpl.set_partition_offset(e.topic(), e.partition(), offset);
                }
            }
            Err(e) => {
                tracing::warn!(source = %self.source, error = %e, "Looking up offsets for the `start` time failed; starting at latest.");
            }
        }
    }
}
