//! The Kafka source: a consumer group whose offsets advance only behind durable
//! events (at least once). Records are published in batches; after a batch is
//! durable its highest offset per partition is sluice's position (written with
//! the events, see [`super::positions`]) and each record's offset is stored, in
//! partition order; librdkafka commits stored offsets once a second and when
//! partitions are revoked. A restarted source resumes after its own positions,
//! so what was durable is neither read nor queued again.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::ClientConfig;
use sluice_router::config::Malformed;
use sluice_router::engine::{PublishError, StoreError};
use sluice_router::event::Event;
use sluice_router::source::{Source, SourceContext, SourceError};
use sluice_router::throttle::Level;

use super::config::{KafkaSourceConfig, KafkaStart};
use super::positions::Positions;
use super::rebalance::Rebalancing;
use super::record::{problem_of, record_to_event, RecordMapping};
use super::status::Tracker;
use crate::{BuildSource, BuiltSource, ConnectorError};

/// How long a batch waits for more records after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// How often a paused source looks at the backlog again.
const PAUSE_CHECK: Duration = Duration::from_millis(100);

/// librdkafka settings sluice chooses unless `options` sets them: a member that
/// dies is noticed within 10 s (librdkafka's default is 45 s), so a restarted
/// sluice gets its partitions back within that plus a rebalance.
const DEFAULTS: [(&str, &str); 2] = [
    ("session.timeout.ms", "10000"),
    ("heartbeat.interval.ms", "1000"),
];

type Consumer_ = StreamConsumer<Rebalancing>;

/// A configured Kafka source.
pub struct KafkaSource {
    consumer: Arc<Consumer_>,
    mapping: RecordMapping,
    batch: usize,
    max_backlog: u64,
    start_ms: Option<i64>,
    seeking: Arc<Mutex<HashSet<(String, i32)>>>,
    /// sluice's durable positions (None with `dedupe_window: 0s`).
    positions: Option<Arc<Mutex<Positions>>>,
    malformed: Malformed,
    tracker: Arc<Tracker>,
}

fn context_start_ms(config: &KafkaSourceConfig) -> Option<i64> {
    match config.start {
        KafkaStart::Time(t) => Some(t.timestamp_millis()),
        _ => None,
    }
}

impl KafkaSource {
    /// Build the consumer and subscribe; nothing is read before `run`.
    pub fn new(config: &KafkaSourceConfig, cx: &SourceContext) -> Result<Self, String> {
        let mut client = ClientConfig::new();
        for (k, v) in DEFAULTS {
            client.set(k, v);
        }
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
        let positions = cx
            .positions_enabled()
            .then(|| Arc::new(Mutex::new(Positions::new(cx.clone(), &config.group))));
        let seeking = Arc::new(Mutex::new(HashSet::new()));
        let tracker = Arc::new(Tracker::new(&config.name, &config.group, cx.metrics()));
        let context = Rebalancing {
            seeking: seeking.clone(),
            source: config.name.clone(),
            start_ms: context_start_ms(config),
            positions: positions.clone(),
            tracker: tracker.clone(),
        };
        let consumer: Consumer_ = client
            .create_with_context(context)
            .map_err(|e| e.to_string())?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| e.to_string())?;
        Ok(Self {
            consumer: Arc::new(consumer),
            mapping: RecordMapping {
                event_source: config.event_source.clone(),
                event_type: config.event_type.clone(),
            },
            batch: config.batch,
            max_backlog: config.max_backlog,
            start_ms: context_start_ms(config),
            seeking,
            positions,
            malformed: config.malformed,
            tracker,
        })
    }

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

    /// Pause or resume every assigned partition (partitions assigned while paused
    /// are paused as they come, see [`Rebalancing`]). While paused the source
    /// keeps polling, so the group's rebalances go on: a member that stopped
    /// polling would hold up its whole group. librdkafka drops what it fetched
    /// ahead for a paused partition and resumes after the last record it gave.
    fn set_paused(&self, paused: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        let done = if paused {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, paused, "Pausing or resuming partitions failed.");
        }
    }

    /// The next batch: the first record (waiting for it, or until shutdown, or
    /// while paused until the next backlog check), then what follows within
    /// [`BATCH_WAIT`].
    async fn next_batch<'c>(
        &'c self,
        cx: &SourceContext,
        paused: bool,
    ) -> Option<Vec<BorrowedMessage<'c>>> {
        let first = tokio::select! {
            biased;
            () = cx.shutdown().cancelled() => return None,
            m = self.consumer.recv() => m,
            () = tokio::time::sleep(PAUSE_CHECK), if paused => return Some(Vec::new()),
        };
        let mut batch = Vec::new();
        // Each record is checked as it arrives: a rebalance inside a later `recv`
        // changes what the next offset of a partition should be.
        let arrived = |m: &BorrowedMessage<'_>| {
            self.tracker.record(m.topic(), m.partition(), m.offset());
        };
        match first {
            Ok(m) => {
                arrived(&m);
                batch.push(m);
            }
            Err(e) => {
                self.client_error(&e);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Some(batch);
            }
        }
        while batch.len() < self.batch {
            match tokio::time::timeout(BATCH_WAIT, self.consumer.recv()).await {
                Ok(Ok(m)) => {
                    arrived(&m);
                    batch.push(m);
                }
                Ok(Err(e)) => {
                    self.client_error(&e);
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// An error the consumer returned instead of a record. Brokers that cannot be
    /// reached are reported by the client's own error callback (and `/readyz`);
    /// their echo here is left to the debug log.
    fn client_error(&self, e: &KafkaError) {
        use rdkafka::error::RDKafkaErrorCode::{AllBrokersDown, BrokerTransportFailure};
        match e {
            KafkaError::MessageConsumption(AllBrokersDown | BrokerTransportFailure) => {
                tracing::debug!(source = %self.tracker.source(), error = %e, "Kafka consumer error.");
            }
            _ => self
                .tracker
                .throttle
                .log(Level::Warn, &format!("Kafka consumer error: {e}")),
        }
    }
}

/// A batch read for publishing: the events, the malformed records refused, the
/// positions to store with them, and how many records were skipped as replays.
struct Mapped {
    events: Vec<Event>,
    rejected: Vec<(Event, String)>,
    positions: Vec<(Vec<u8>, i64)>,
    replayed: u64,
}

impl KafkaSource {
    /// Turn a batch into events, leaving out records before `start` and records
    /// sluice holds durable already.
    fn map_batch<M: Message>(&self, batch: &[M]) -> Result<Mapped, StoreError> {
        let mut mapped = Mapped {
            events: Vec::with_capacity(batch.len()),
            rejected: Vec::new(),
            positions: Vec::new(),
            replayed: 0,
        };
        let mut positions = self
            .positions
            .as_ref()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()));
        if let Some(p) = positions.as_deref_mut() {
            p.begin();
        }
        for m in batch.iter().filter(|m| !self.before_start(*m)) {
            if let Some(p) = positions.as_deref_mut() {
                if p.replayed(m)? {
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
        if let Some(p) = positions.as_deref() {
            mapped.positions = p.batch_positions();
        }
        Ok(mapped)
    }

    /// Make a mapped batch durable: rejects, then events with their positions.
    async fn publish(&self, mapped: &Mapped, cx: &SourceContext) -> Result<(), PublishError> {
        cx.reject(mapped.rejected.clone()).await?;
        cx.publish_at(&mapped.events, &mapped.positions).await?;
        if let Some(p) = &self.positions {
            p.lock().unwrap_or_else(|e| e.into_inner()).stored();
        }
        if mapped.replayed > 0 {
            tracing::debug!(source = %cx.name(), replayed = mapped.replayed, "Records sluice holds already were skipped.");
            cx.skipped_replays(mapped.replayed);
        }
        Ok(())
    }

    /// Publish `batch` until it is durable (an unavailable store is retried,
    /// never skipped), then store its offsets. Returns false on shutdown.
    async fn deliver(&self, batch: &[BorrowedMessage<'_>], cx: &SourceContext) -> bool {
        loop {
            let done = match self.map_batch(batch) {
                Ok(mapped) => self.publish(&mapped, cx).await,
                Err(e) => Err(e.into()),
            };
            match done {
                Ok(()) => break,
                Err(e) => {
                    self.tracker.throttle.log(
                        Level::Error,
                        &format!("Publishing Kafka records failed; retrying: {e}"),
                    );
                    tokio::select! {
                        () = cx.shutdown().cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        let mut durable: Vec<(String, i32, i64)> = Vec::new();
        for m in batch {
            // A partition revoked while its batch was being published can no
            // longer store offsets; its new owner re-reads from the last commit
            // (at least once), so this is not an error.
            if let Err(e) = self.consumer.store_offset_from_message(m) {
                tracing::debug!(source = %cx.name(), partition = m.partition(), error = %e, "Offset not stored (partition revoked).");
            }
            match durable
                .iter_mut()
                .find(|(t, p, _)| t == m.topic() && *p == m.partition())
            {
                Some((_, _, at)) => *at = (*at).max(m.offset()),
                None => durable.push((m.topic().to_owned(), m.partition(), m.offset())),
            }
        }
        self.tracker.durable(durable);
        true
    }
}

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        cx.report(self.tracker.clone());
        let refresh = tokio::spawn(super::refresh::run(
            self.consumer.clone(),
            self.tracker.clone(),
            cx.shutdown().clone(),
        ));
        let mut paused = false;
        loop {
            let backlog = cx.backlog();
            if !paused && backlog > self.max_backlog {
                tracing::info!(source = %cx.name(), backlog, "Delivery is behind; consumption paused.");
                paused = true;
                self.tracker.paused(true);
                self.set_paused(true);
            } else if paused && backlog <= self.max_backlog / 2 {
                tracing::info!(source = %cx.name(), backlog, "Consumption resumed.");
                paused = false;
                self.tracker.paused(false);
                self.set_paused(false);
            }
            let Some(batch) = self.next_batch(&cx, paused).await else {
                break;
            };
            if !batch.is_empty() && !self.deliver(&batch, &cx).await {
                break;
            }
        }
        refresh.abort();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(source = %cx.name(), error = %e, "Final commit found nothing to commit.");
        }
        Ok(())
    }
}

impl BuildSource for KafkaSourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let source = KafkaSource::new(self, cx).map_err(ConnectorError::config)?;
        Ok(BuiltSource::task(Box::new(source)))
    }
}
