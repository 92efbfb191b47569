//! The Kafka side: fresh topics, the benchmark's records, a plain producer and a
//! plain consumer (the baselines), and the record count of a topic.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::child::unique;

/// Partitions of every topic the benchmark creates.
pub const PARTITIONS: i32 = 4;
/// Delivery reports the producer waits for at most at once.
const IN_FLIGHT: usize = 50_000;
/// A consumer gives up after this long without a new record.
const CONSUME_STALL: Duration = Duration::from_secs(30);

/// The broker, `SLUICE_TEST_KAFKA` (default 127.0.0.1:19092).
pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// The values of record `n`; the same values fill the Kafka record (as JSON) and
/// the rows of the `plain-copy` baseline.
pub struct Fields {
    pub n: u64,
    pub customer: String,
    /// With one decimal, as text.
    pub total: String,
    pub paid: bool,
    pub at: &'static str,
}

const AT: &str = "2026-11-29T12:34:56.789Z";
/// Pads each value to about 100 bytes.
const NOTE: &str = "benchmark-record-pad";

impl Fields {
    pub fn of(n: u64) -> Self {
        Self {
            n,
            customer: format!("c{}", n % 997),
            total: format!("{}.{}", n * 3 / 2, (n % 2) * 5),
            paid: n.is_multiple_of(3),
            at: AT,
        }
    }

    /// The record value: JSON of about 100 bytes.
    pub fn json(&self) -> String {
        format!(
            r#"{{"n":{},"customer":"{}","total":{},"paid":{},"at":"{}","note":"{NOTE}"}}"#,
            self.n, self.customer, self.total, self.paid, self.at
        )
    }
}

/// A fresh topic with [`PARTITIONS`] partitions, named `<prefix>-<unique>`.
pub async fn create_topic(prefix: &str) -> anyhow::Result<String> {
    let name = unique(prefix);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .context("cannot create a Kafka admin client")?;
    let results = admin
        .create_topics(
            &[NewTopic::new(&name, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("cannot create topic {name} on {}", brokers()))?;
    for r in results {
        r.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
    }
    CREATED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(name.clone());
    Ok(name)
}

/// Topics [`create_topic`] made, for [`delete_topics`].
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Deletes every topic this run created (the test broker keeps them in memory);
/// returns what could not be deleted, as a message.
pub async fn delete_topics() -> Result<(), String> {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let results = admin
        .delete_topics(
            &refs,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| format!("cannot delete the benchmark topics: {e}"))?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|(topic, code)| format!("{topic}: {code}")))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("cannot delete topics {}", failed.join(", ")))
    }
}

/// The baseline producer: acks=all, idempotent, linger 5 ms (as sluice's Kafka target).
pub fn producer() -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", (IN_FLIGHT * 2).to_string())
        .create()
        .context("cannot create a Kafka producer")
}

/// Produces records `range` (key `k<n % 1009>`, value [`Fields::json`]) to `topic`
/// as fast as the broker acknowledges them, counting acknowledged records in
/// `acked`. Returns the time from the first send to the last acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<u64>,
    acked: &AtomicU64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut pending = VecDeque::with_capacity(IN_FLIGHT);
    let settle = |result: rdkafka::producer::DeliveryFuture| async move {
        match result.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(anyhow::anyhow!("the broker refused a record: {e}")),
            Err(_) => bail!("the producer went away before a delivery report"),
        }
    };
    for n in range {
        if pending.len() >= IN_FLIGHT {
            if let Some(front) = pending.pop_front() {
                settle(front).await?;
                acked.fetch_add(1, Ordering::Relaxed);
            }
        }
        let key = format!("k{}", n % 1009);
        let value = Fields::of(n).json();
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        let future = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("cannot queue a record for {topic}: {e}"))?;
        pending.push_back(future);
    }
    for future in pending {
        settle(future).await?;
        acked.fetch_add(1, Ordering::Relaxed);
    }
    Ok(started.elapsed())
}

/// What the plain consumer measured.
pub struct Consumed {
    /// From `subscribe` to the first record (group join, first fetch).
    pub first_after: Duration,
    /// From the first record to the `n`-th.
    pub secs: Duration,
}

/// Reads `n` records of `topic` with a plain `BaseConsumer` in a new group (on a
/// blocking thread) and only counts them.
pub async fn consume_count(topic: &str, n: u64) -> anyhow::Result<Consumed> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("bench-plain"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create a Kafka consumer")?;
        consumer.subscribe(&[&topic]).context("cannot subscribe")?;
        let started = Instant::now();
        let mut first = None;
        let mut last_progress = Instant::now();
        let mut count = 0u64;
        while count < n {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(_)) => {
                    count += 1;
                    first.get_or_insert_with(Instant::now);
                    last_progress = Instant::now();
                }
                Some(Err(e)) => bail!("the consumer failed after {count} records: {e}"),
                None if last_progress.elapsed() > CONSUME_STALL => {
                    bail!("the consumer got {count} of {n} records, then nothing for 30 s")
                }
                None => {}
            }
        }
        let first = first.unwrap_or(started);
        Ok(Consumed {
            first_after: first.saturating_duration_since(started),
            secs: first.elapsed(),
        })
    })
    .await
    .context("the consumer thread panicked")?
}

/// Reads `topic` from the start in a new group until `n` distinct `ce_id` headers
/// were seen (or nothing new came for 10 s); returns the records read and the
/// distinct ids. (The test broker's high watermarks can be lower than the records
/// it serves, so the topic is read rather than its offsets summed.)
pub async fn count_event_ids(topic: &str, n: u64) -> anyhow::Result<(u64, u64)> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("bench-check"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()
            .context("cannot create a Kafka consumer")?;
        consumer.subscribe(&[&topic]).context("cannot subscribe")?;
        let mut ids = std::collections::HashSet::new();
        let mut records = 0u64;
        let mut last_progress = Instant::now();
        while (ids.len() as u64) < n && last_progress.elapsed() < Duration::from_secs(10) {
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    records += 1;
                    last_progress = Instant::now();
                    let id = m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "ce_id")
                            .and_then(|h| h.value.map(<[u8]>::to_vec))
                    });
                    if let Some(id) = id {
                        ids.insert(id);
                    }
                }
                Some(Err(e)) => bail!("reading {topic} failed after {records} records: {e}"),
                None => {}
            }
        }
        Ok((records, ids.len() as u64))
    })
    .await
    .context("the consumer thread panicked")?
}

/// A topic filled with records `0..n` (not measured), for scenarios that need
/// their own.
pub async fn filled_topic(prefix: &str, n: u64) -> anyhow::Result<String> {
    let topic = create_topic(prefix).await?;
    produce(&producer()?, &topic, 0..n, &AtomicU64::new(0)).await?;
    Ok(topic)
}

/// The `sources:` section of a sluice config reading `topic` from the start in a
/// new group; `max_backlog` bounds sluice's queue.
pub fn source_yaml(topic: &str, max_backlog: u64) -> String {
    format!(
        "sources:\n  - name: kafka\n    type: kafka\n    brokers: \"{}\"\n    topics: [{topic}]\n    \
         group: {}\n    start: earliest\n    max_backlog: {max_backlog}\n",
        brokers(),
        unique("sluice-bench")
    )
}

/// A rule sending every benchmark record (they all have `data.n`) to `target`.
pub fn rule_yaml(target: &str) -> String {
    format!(
        "rules:\n  - name: all\n    filter:\n      pattern:\n        data:\n          n: [{{exists: true}}]\n    \
         targets: [{target}]\n"
    )
}
