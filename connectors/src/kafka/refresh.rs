//! Every few seconds, a Kafka source asks the brokers for the watermarks of its
//! partitions: the lag its status and metrics show, and a check that the brokers
//! can be reached at all (a member that holds no partitions asks for its topics'
//! metadata instead). The client's calls block, so they run on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

use super::rebalance::Rebalancing;
use super::status::Tracker;

/// How often the watermarks are read.
pub(super) const INTERVAL: Duration = Duration::from_secs(5);

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(4);

/// Refresh until `shutdown`.
pub(super) async fn run(
    consumer: Arc<StreamConsumer<Rebalancing>>,
    tracker: Arc<Tracker>,
    shutdown: CancellationToken,
) {
    loop {
        let (c, t) = (consumer.clone(), tracker.clone());
        let asked = tokio::task::spawn_blocking(move || once(&c, &t));
        if asked.await.is_err() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

fn once(consumer: &StreamConsumer<Rebalancing>, tracker: &Tracker) {
    let partitions = tracker.partitions();
    let mut watermarks = Vec::with_capacity(partitions.len());
    let mut failure = None;
    for (topic, partition) in partitions {
        match consumer.fetch_watermarks(&topic, partition, TIMEOUT) {
            Ok(w) => watermarks.push(((topic, partition), w)),
            Err(e) => failure = Some(e.to_string()),
        }
    }
    // Reachable if any answer came; without partitions, ask for metadata.
    let unreachable = if !watermarks.is_empty() {
        None
    } else if let Some(why) = failure {
        Some(why)
    } else {
        // One subscribed topic's metadata (all topics' only for a pattern).
        let topic = consumer.subscription().ok().and_then(|s| {
            s.elements()
                .iter()
                .map(|e| e.topic().to_owned())
                .find(|t| !t.starts_with('^'))
        });
        consumer
            .fetch_metadata(topic.as_deref(), TIMEOUT)
            .err()
            .map(|e| e.to_string())
    };
    tracker.refreshed(watermarks, unreachable);
}
