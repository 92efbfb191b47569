//! Watching a sluice child through `/metrics`, and the scenarios whose far side is
//! Kafka or nothing: `consume-match-discard`, `burst-lag` and `produce-target`.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::child::{Progress, Sluice};
use crate::kafka;
use crate::report::Row;

/// Pause between two samples of `/metrics` while timing.
pub const SAMPLE: Duration = Duration::from_millis(50);
/// A scenario fails when sluice neither received nor delivered anything new for this long.
const STALL: Duration = Duration::from_secs(60);

/// One reading of sluice's progress.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since [`Watch::started`].
    pub at: Duration,
    pub p: Progress,
}

/// The samples of one sluice run, timed from `started`.
pub struct Watch {
    pub started: Instant,
    pub samples: Vec<Sample>,
}

impl Watch {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            samples: Vec::new(),
        }
    }

    /// Samples `sluice` every `every` until `done` holds for a sample, which it
    /// returns; fails if sluice exits or makes no progress for [`STALL`].
    pub async fn until(
        &mut self,
        sluice: &mut Sluice,
        every: Duration,
        what: &str,
        mut done: impl FnMut(&Progress) -> bool,
    ) -> anyhow::Result<Sample> {
        let mut moved = Instant::now();
        let mut last = None;
        loop {
            let p = sluice
                .progress()
                .await
                .with_context(|| format!("while waiting for {what}"))?;
            let sample = Sample {
                at: self.started.elapsed(),
                p,
            };
            self.samples.push(sample);
            if done(&p) {
                return Ok(sample);
            }
            if last != Some((p.received, p.delivered)) {
                last = Some((p.received, p.delivered));
                moved = Instant::now();
            } else if moved.elapsed() > STALL {
                bail!(
                    "no progress for {} s while waiting for {what} (received {}, delivered {}, \
                     queued {}); sluice's log ends with:\n{}",
                    STALL.as_secs(),
                    p.received,
                    p.delivered,
                    p.depth,
                    sluice.log_tail()
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    /// The time of the first sample for which `pred` holds.
    pub fn first(&self, pred: impl Fn(&Progress) -> bool) -> Option<Duration> {
        self.samples.iter().find(|s| pred(&s.p)).map(|s| s.at)
    }

    /// The largest VmRSS sampled, in KiB.
    pub fn max_rss_kib(&self) -> u64 {
        self.samples.iter().map(|s| s.p.rss_kib).max().unwrap_or(0)
    }
}

/// A finished run of sluice reading a pre-produced topic into one target.
pub struct Pipeline {
    pub sluice: Sluice,
    /// From sluice answering `/healthz` to the first record received.
    pub first: Duration,
    /// From the first record received to the `n`-th delivered.
    pub secs: f64,
    /// From the first record received to the `n`-th received.
    pub received_secs: f64,
}

impl Pipeline {
    /// The result row, with the timing and memory every pipeline reports.
    pub fn row(&self, name: &str, n: u64) -> anyhow::Result<Row> {
        let mut row = Row::new(name, n, self.secs).note(format!(
            "first record {:.2} s after start, all received {:.2} s after the first",
            self.first.as_secs_f64(),
            self.received_secs
        ));
        row.first_record_secs = Some(self.first.as_secs_f64());
        row.drain_secs = Some(self.received_secs);
        row.sluice_usage(&self.sluice)?;
        Ok(row)
    }
}

/// Starts sluice with a Kafka source on `topic` (earliest, a new group), one
/// target (`target_yaml`, a list entry named `t`) and a rule sending every record
/// there, and waits until the target confirmed `n` events.
pub async fn pipeline(
    bin: &Path,
    tag: &str,
    topic: &str,
    n: u64,
    target_yaml: &str,
) -> anyhow::Result<Pipeline> {
    let body = format!(
        "{}targets:\n{target_yaml}{}",
        kafka::source_yaml(topic, n.saturating_mul(2).max(1_000_000)),
        kafka::rule_yaml("t")
    );
    pipeline_from(bin, tag, &body, n).await
}

/// Starts sluice with `body` (sources, targets, rules) and waits until its
/// targets confirmed `n` events.
pub async fn pipeline_from(bin: &Path, tag: &str, body: &str, n: u64) -> anyhow::Result<Pipeline> {
    let mut sluice = Sluice::start(bin, tag, body).await?;
    let mut watch = Watch::new();
    let done = watch
        .until(&mut sluice, SAMPLE, &format!("{n} deliveries"), |p| {
            p.delivered >= n
        })
        .await?;
    let first = watch.first(|p| p.received > 0).unwrap_or(done.at);
    let received = watch.first(|p| p.received >= n).unwrap_or(done.at);
    Ok(Pipeline {
        sluice,
        first,
        secs: done.at.saturating_sub(first).as_secs_f64(),
        received_secs: received.saturating_sub(first).as_secs_f64(),
    })
}

/// `consume-match-discard`: the pre-produced topic through a matching rule into a
/// `discard` target.
pub async fn consume_match_discard(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let run = pipeline(bin, "discard", topic, n, "  - name: t\n    type: discard\n").await?;
    let row = run.row("consume-match-discard", n)?;
    run.sluice.stop().await;
    Ok(row)
}

/// `produce-target`: the pre-produced topic into a `kafka` target (binary mode)
/// writing a fresh topic; the output topic's record count is checked at the end.
pub async fn produce_target(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let out = kafka::create_topic("bench-out").await?;
    let target = format!(
        "  - name: t\n    type: kafka\n    brokers: \"{}\"\n    topic: {out}\n    key: \"{{partitionkey}}\"\n",
        kafka::brokers()
    );
    let run = pipeline(bin, "produce", topic, n, &target).await?;
    let row = run.row("produce-target", n)?;
    run.sluice.stop().await;
    let (records, distinct) = kafka::count_event_ids(&out, n).await?;
    if distinct < n {
        bail!("sluice confirmed {n} records but the output topic {out} holds {distinct} distinct events");
    }
    Ok(row.note(format!(
        "output topic read back: {records} records, {distinct} distinct ce_id"
    )))
}

/// `burst-lag`: sluice runs idle on a fresh topic; then `n` records are produced
/// as fast as the broker takes them while sluice's received count is sampled.
pub async fn burst_lag(bin: &Path, n: u64) -> anyhow::Result<Row> {
    let topic = kafka::create_topic("bench-burst").await?;
    let body = format!(
        "{}targets:\n  - name: t\n    type: discard\n{}",
        kafka::source_yaml(&topic, n.saturating_mul(2).max(1_000_000)),
        kafka::rule_yaml("t")
    );
    let mut sluice = Sluice::start(bin, "burst", &body).await?;
    let producer = kafka::producer()?;
    // One record first, so that sluice has joined its group before the burst.
    kafka::produce(&producer, &topic, 0..1, &AtomicU64::new(0)).await?;
    Watch::new()
        .until(&mut sluice, SAMPLE, "the first record", |p| p.received >= 1)
        .await?;

    let acked = Arc::new(AtomicU64::new(0));
    let burst = tokio::spawn({
        let (acked, topic) = (acked.clone(), topic.clone());
        async move {
            let took = kafka::produce(&producer, &topic, 1..n + 1, &acked).await;
            (took, Instant::now())
        }
    });
    let mut watch = Watch::new();
    let mut max_lag = 0u64;
    let all = watch
        .until(&mut sluice, SAMPLE, "the burst", |p| {
            let received = p.received.saturating_sub(1);
            max_lag = max_lag.max(acked.load(Ordering::Relaxed).saturating_sub(received));
            received >= n
        })
        .await?;
    let (took, produced_at) = burst.await.context("the producer task panicked")?;
    let produce_secs = took?.as_secs_f64();
    let produced = produced_at.saturating_duration_since(watch.started);
    let mut row = Row::new("burst-lag", n, all.at.as_secs_f64()).note(format!(
        "produced in {produce_secs:.2} s; all received {:.2} s after the last ack",
        all.at.saturating_sub(produced).as_secs_f64()
    ));
    row.max_lag = Some(max_lag);
    row.drain_secs = Some(all.at.saturating_sub(produced).as_secs_f64());
    row.sluice_usage(&sluice)?;
    sluice.stop().await;
    Ok(row.note(format!("max lag {max_lag}")))
}

/// `plain-consumer`: the baseline of reading the pre-produced topic.
pub async fn plain_consumer(topic: &str, n: u64) -> anyhow::Result<Row> {
    let c = kafka::consume_count(topic, n).await?;
    let mut row = Row::new("plain-consumer", n, c.secs.as_secs_f64())
        .note("rdkafka BaseConsumer, new group, counts only");
    row.first_record_secs = Some(c.first_after.as_secs_f64());
    Ok(row)
}
