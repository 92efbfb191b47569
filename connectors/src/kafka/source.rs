//! The Kafka source: a consumer group whose offsets advance only behind durable
//! events (at least once): records are published in batches, and each record's
//! offset is stored after its batch is durable, in partition order; librdkafka
//! commits stored offsets in the background and on partition revoke.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, ClientContext};
use sluice_router::config::{KafkaSourceConfig, KafkaStart};
use sluice_router::source::{Source, SourceContext, SourceError};

use super::record::{record_to_event, RecordMapping};

/// How long a batch waits for more records after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// Commits stored offsets before partitions are taken away, so the next owner
/// starts after what this process made durable.
struct CommitOnRevoke;

impl ClientContext for CommitOnRevoke {}

impl ConsumerContext for CommitOnRevoke {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                tracing::debug!(error = %e, "Commit on revoke found nothing to commit.");
            }
        }
    }
}

/// A configured Kafka source.
pub struct KafkaSource {
    consumer: StreamConsumer<CommitOnRevoke>,
    mapping: RecordMapping,
    batch: usize,
    max_backlog: u64,
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
                    KafkaStart::Latest => "latest",
                },
            );
        for (k, v) in &config.options {
            client.set(k, v);
        }
        let consumer: StreamConsumer<CommitOnRevoke> = client
            .create_with_context(CommitOnRevoke)
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
        })
    }
}

impl KafkaSource {
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

#[async_trait]
impl Source for KafkaSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
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
            let events: Vec<_> = batch
                .iter()
                .map(|m| record_to_event(m, &self.mapping))
                .collect();
            // Durable first; an unavailable store is retried, never skipped.
            loop {
                match cx.publish(&events).await {
                    Ok(_) => break,
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
