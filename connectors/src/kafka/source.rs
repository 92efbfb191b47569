//! The Kafka source: a consumer group whose offsets advance only behind durable
//! events (at least once): records are published in batches, and each record's
//! offset is stored after its batch is durable, in partition order; librdkafka
//! commits stored offsets in the background and on partition revoke.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, RebalanceProtocol,
    StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use sluice_router::config::{KafkaSourceConfig, KafkaStart, Malformed};
use sluice_router::engine::{PublishError, Replays as EngineReplays};
use sluice_router::source::{Source, SourceContext, SourceError};
use sluice_router::store::StoreError;

use super::record::{problem_of, record_to_event, RecordMapping};
use super::replay::Replays;

/// How long a batch waits for more records after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// How long the rebalance callback waits for the broker's committed offsets and
/// offsets-for-times answers.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// The source's side of group rebalances: commits stored offsets before
/// partitions are taken away, so the next owner starts after what this process
/// made durable; and, with `start: <time>`, starts partitions the group has no
/// offset for at the first record at or after that time.
struct Rebalancing {
    source: String,
    start_ms: Option<i64>,
    /// Partitions started by time whose first record at or after the time has not
    /// been seen yet: the source drops their older records itself, for brokers
    /// whose offsets-for-times lookup does not look at timestamps.
    seeking: Arc<Mutex<HashSet<(String, i32)>>>,
    /// Partitions assigned since the source last looked, each with whether the
    /// group had a committed offset for it (see [`Replays::assigned`]).
    assigned: Arc<Mutex<Vec<(String, i32, bool)>>>,
}

impl ClientContext for Rebalancing {}

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
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(error = %e, "Commit on revoke found nothing to commit.");
                }
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(source = %self.source, partitions = tpl.count(), "Partitions assigned.");
            }
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.source, error = %e, "Rebalance failed.");
            }
        }
    }

    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS {
            let committed = consumer.committed_offsets(tpl.clone(), LOOKUP_TIMEOUT);
            if let Ok(mut assigned) = self.assigned.lock() {
                for e in tpl.elements() {
                    // Unknown counts as none: stored positions are then dropped,
                    // which can repeat records but never skips one.
                    let has = committed.as_ref().is_ok_and(|c| {
                        c.find_partition(e.topic(), e.partition()).is_some_and(|c| {
                            !matches!(c.offset(), Offset::Invalid | Offset::Stored)
                        })
                    });
                    assigned.push((e.topic().to_owned(), e.partition(), has));
                }
            }
            match committed {
                Ok(committed) => {
                    if let Some(ms) = self.start_ms {
                        self.start_at_time(consumer, tpl, &committed, ms);
                    }
                }
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "Reading committed offsets failed; `start` time not applied.");
                }
            }
        }
        self.default_rebalance(consumer, err, tpl);
    }
}

impl Rebalancing {
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

    /// Set the start offset of each partition in `tpl` that has no committed
    /// offset to the first record at or after `ms`. A failed lookup leaves the
    /// partition to `auto.offset.reset` (latest) and is logged.
    fn start_at_time(
        &self,
        consumer: &BaseConsumer<Self>,
        tpl: &mut TopicPartitionList,
        committed: &TopicPartitionList,
        ms: i64,
    ) {
        let mut times = TopicPartitionList::new();
        for e in committed.elements() {
            if matches!(e.offset(), Offset::Invalid | Offset::Stored) {
                let _ = times.add_partition_offset(e.topic(), e.partition(), Offset::Offset(ms));
                if let Ok(mut seeking) = self.seeking.lock() {
                    seeking.insert((e.topic().to_owned(), e.partition()));
                }
            }
        }
        if times.count() == 0 {
            return;
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

/// A configured Kafka source.
pub struct KafkaSource {
    consumer: StreamConsumer<Rebalancing>,
    mapping: RecordMapping,
    batch: usize,
    max_backlog: u64,
    start_ms: Option<i64>,
    seeking: Arc<Mutex<HashSet<(String, i32)>>>,
    assigned: Arc<Mutex<Vec<(String, i32, bool)>>>,
    malformed: Malformed,
    group: String,
}

fn context_start_ms(config: &KafkaSourceConfig) -> Option<i64> {
    match config.start {
        KafkaStart::Time(t) => Some(t.timestamp_millis()),
        _ => None,
    }
}

impl KafkaSource {
    pub fn new(config: &KafkaSourceConfig) -> Result<Self, String> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("group.id", &config.group)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match config.start {
                    KafkaStart::Earliest => "earliest",
                    // With a time, partitions without an offset are set on
                    // assignment; this covers a failed lookup.
                    KafkaStart::Latest | KafkaStart::Time(_) => "latest",
                },
            );
        for (k, v) in &config.options {
            client.set(k, v);
        }
        let seeking = Arc::new(Mutex::new(HashSet::new()));
        let assigned = Arc::new(Mutex::new(Vec::new()));
        let context = Rebalancing {
            seeking: seeking.clone(),
            assigned: assigned.clone(),
            source: config.name.clone(),
            start_ms: context_start_ms(config),
        };
        let consumer: StreamConsumer<Rebalancing> = client
            .create_with_context(context)
            .map_err(|e| e.to_string())?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| e.to_string())?;
        Ok(Self {
            consumer,
            mapping: RecordMapping {
                event_source: config.event_source.clone(),
                event_type: config.event_type.clone(),
            },
            batch: config.batch,
            max_backlog: config.max_backlog,
            start_ms: context_start_ms(config),
            seeking,
            assigned,
            malformed: config.malformed,
            group: config.group.clone(),
        })
    }
}

impl KafkaSource {
    /// Whether `m` is older than `start` in a partition that began there and has
    /// not reached that time yet (its offset is still stored: it is skipped, not
    /// pending).
    fn before_start<M: Message>(&self, m: &M) -> bool {
        let Some(start) = self.start_ms else {
            return false;
        };
        let Ok(mut seeking) = self.seeking.lock() else {
            return false;
        };
        if seeking.is_empty() {
            return false;
        }
        let part = (m.topic().to_owned(), m.partition());
        if !seeking.contains(&part) {
            return false;
        }
        let ts = m.timestamp().to_millis().unwrap_or(i64::MAX);
        if ts < start {
            return true;
        }
        seeking.remove(&part);
        false
    }

    /// Stop taking records until the bus's backlog drops below half of
    /// `max_backlog`. librdkafka's own prefetch queue stays bounded meanwhile;
    /// a wait longer than `max.poll.interval.ms` makes this member rejoin its
    /// group afterwards, with nothing lost (offsets are stored only behind
    /// durable events). Returns false on shutdown.
    async fn wait_for_backlog(&self, cx: &SourceContext) -> bool {
        tracing::info!(source = %cx.name, backlog = cx.engine.backlog(&cx.bus), "Delivery is behind; consumption paused.");
        let resume_below = self.max_backlog / 2;
        while cx.engine.backlog(&cx.bus) > resume_below {
            tokio::select! {
                () = cx.shutdown.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        tracing::info!(source = %cx.name, "Consumption resumed.");
        true
    }
}

/// A batch read for publishing: the events, the malformed records refused, and
/// how many records were skipped as replays.
struct Mapped {
    events: Vec<sluice_router::event::Event>,
    rejected: Vec<(sluice_router::event::Event, String)>,
    positions: Vec<(Vec<u8>, i64)>,
    replayed: u64,
}

impl KafkaSource {
    /// Turn a batch into events, leaving out records before `start` and replays.
    fn map_batch<M: Message>(
        &self,
        batch: &[M],
        mut replays: Option<&mut Replays>,
        cx: &SourceContext,
    ) -> Result<Mapped, StoreError> {
        let now = sluice_router::now_ms();
        let mut mapped = Mapped {
            events: Vec::with_capacity(batch.len()),
            rejected: Vec::new(),
            positions: Vec::new(),
            replayed: 0,
        };
        // Drained whether or not replays are tracked, so it never grows.
        let assigned: Vec<(String, i32, bool)> = match self.assigned.lock() {
            Ok(mut a) => a.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        if let Some(r) = replays.as_deref_mut() {
            for (topic, partition, committed) in assigned {
                r.assigned(&topic, partition, committed);
            }
        }
        for m in batch.iter().filter(|m| !self.before_start(*m)) {
            if let Some(r) = replays.as_deref_mut() {
                if r.seen(m, now)? {
                    mapped.replayed += 1;
                    continue;
                }
            }
            let event = record_to_event(m, &self.mapping);
            match (self.malformed, problem_of(&event)) {
                (Malformed::Reject, Some(why)) => mapped.rejected.push((event, why)),
                _ => mapped.events.push(event),
            }
        }
        if let Some(r) = replays {
            mapped.positions = r.after(batch, now)?;
        }
        if mapped.replayed > 0 {
            tracing::debug!(source = %cx.name, replayed = mapped.replayed, "Records queued before were skipped.");
        }
        Ok(mapped)
    }

    /// Make a mapped batch durable: rejects, then events with their positions.
    async fn publish(
        &self,
        mapped: Mapped,
        replays: Option<&mut Replays>,
        cx: &SourceContext,
    ) -> Result<(), PublishError> {
        cx.reject(mapped.rejected).await?;
        match replays {
            Some(r) => {
                let by_position = EngineReplays::ByPosition {
                    progress: r.progress(),
                    positions: &mapped.positions,
                };
                cx.publish_with(&mapped.events, by_position).await?;
                r.stored(&mapped.positions, sluice_router::now_ms());
            }
            None => {
                cx.publish(&mapped.events).await?;
            }
        }
        if mapped.replayed > 0 {
            let metrics = &cx.engine.metrics;
            metrics.received(&cx.bus, &cx.name).inc_by(mapped.replayed);
            metrics
                .duplicates(&cx.bus, &cx.name)
                .inc_by(mapped.replayed);
        }
        Ok(())
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        let window_ms = cx.engine.dedupe_window_ms();
        let mut replays = match cx.engine.store().progress(&cx.name) {
            Ok(progress) if window_ms > 0 => Some(Replays::new(progress, &self.group, window_ms)),
            Ok(_) => None,
            Err(e) => {
                return Err(SourceError {
                    source_name: cx.name.clone(),
                    message: e.to_string(),
                    class: e.class(),
                })
            }
        };
        loop {
            if cx.engine.backlog(&cx.bus) > self.max_backlog && !self.wait_for_backlog(&cx).await {
                break;
            }
            // Wait for the first record of a batch, or shutdown.
            let first = tokio::select! {
                biased;
                () = cx.shutdown.cancelled() => break,
                m = self.consumer.recv() => m,
            };
            let first = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(source = %cx.name, error = %e, "Kafka consumer error.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let mut batch = vec![first];
            while batch.len() < self.batch {
                match tokio::time::timeout(BATCH_WAIT, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m),
                    Ok(Err(e)) => {
                        tracing::warn!(source = %cx.name, error = %e, "Kafka consumer error.");
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Durable first; an unavailable store is retried, never skipped.
            loop {
                let done = match self.map_batch(&batch, replays.as_mut(), &cx) {
                    Ok(mapped) => self.publish(mapped, replays.as_mut(), &cx).await,
                    Err(e) => Err(e.into()),
                };
                match done {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::error!(source = %cx.name, error = %e, "Publishing Kafka records failed; retrying.");
                        tokio::select! {
                            () = cx.shutdown.cancelled() => return Ok(()),
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
            for m in &batch {
                // A partition revoked while its batch was being published can no
                // longer store offsets; its new owner re-reads from the last commit
                // (at least once), so this is not an error.
                if let Err(e) = self.consumer.store_offset_from_message(m) {
                    tracing::debug!(source = %cx.name, partition = m.partition(), error = %e, "Offset not stored (partition revoked).");
                }
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(source = %cx.name, error = %e, "Final commit found nothing to commit.");
        }
        Ok(())
    }
}
