//! The RabbitMQ scenarios, against `SLUICE_TEST_RABBITMQ` (default the machine's
//! broker on 127.0.0.1:5672): each fills a fresh durable queue with the benchmark
//! records as persistent messages, then reads it.
//!
//! - `rabbitmq-plain-publisher`: a lapin publisher with confirms (pipelined,
//!   waited for every [`CONFIRM_EVERY`]) fills a queue; timed.
//! - `rabbitmq-plain-consumer`: a lapin consumer with prefetch [`PREFETCH`] reads
//!   that queue, acknowledging each message.
//! - `rabbitmq-consume-match-discard` [rabbitmq-plain-consumer]: sluice, RabbitMQ
//!   source with the same prefetch -> a rule matching every message -> `discard`.
//! - `rabbitmq-target` [rabbitmq-plain-publisher]: sluice, RabbitMQ source ->
//!   `rabbitmq` target publishing to another queue (binary mode, persistent,
//!   publisher confirms); that queue's count is checked at the end.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::child::unique;
use crate::flows::pipeline_from;
use crate::kafka::{rule_yaml, Fields};
use crate::report::Row;

/// Unacknowledged messages at most, for the plain consumer and sluice alike.
const PREFETCH: u16 = 500;
/// The plain publisher waits for its outstanding confirms after this many messages.
const CONFIRM_EVERY: u64 = 500;

pub fn url() -> String {
    std::env::var("SLUICE_TEST_RABBITMQ")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn channel() -> anyhow::Result<(Connection, Channel)> {
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .with_context(|| format!("cannot connect to RabbitMQ at {}", url()))?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

/// A fresh durable queue named `<prefix>-<unique>`.
async fn new_queue(ch: &Channel, prefix: &str) -> anyhow::Result<String> {
    let name = unique(prefix);
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    Ok(name)
}

async fn delete_queue(name: &str) {
    if let Ok((_conn, ch)) = channel().await {
        let _ = ch
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await;
    }
}

/// Messages ready in `queue`.
async fn count(queue: &str) -> anyhow::Result<u64> {
    let (_conn, ch) = channel().await?;
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(u64::from(q.message_count()))
}

/// A fresh queue holding records `0..n`, and how long publishing them took.
async fn filled_queue(prefix: &str, n: u64) -> anyhow::Result<(String, Duration)> {
    let (_conn, ch) = channel().await?;
    let queue = new_queue(&ch, prefix).await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());
    let began = Instant::now();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            Fields::of(i).json().as_bytes(),
            props.clone(),
        )
        .await?;
        if i % CONFIRM_EVERY == CONFIRM_EVERY - 1 {
            ch.wait_for_confirms().await?;
        }
    }
    ch.wait_for_confirms().await?;
    Ok((queue, began.elapsed()))
}

/// `rabbitmq-plain-publisher`; returns the filled queue for the plain consumer.
pub async fn plain_publisher(n: u64) -> anyhow::Result<(Row, String)> {
    let (queue, took) = filled_queue("bench-mq-plain", n).await?;
    let row = Row::new("rabbitmq-plain-publisher", n, took.as_secs_f64()).note(format!(
        "lapin, persistent messages to a durable queue, confirms awaited every {CONFIRM_EVERY}"
    ));
    Ok((row, queue))
}

/// `rabbitmq-plain-consumer`: reads `queue` (filled with `n`), acking each message.
pub async fn plain_consumer(queue: &str, n: u64) -> anyhow::Result<Row> {
    let (_conn, ch) = channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut first = None;
    let mut read = 0u64;
    while read < n {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .context("no message for 60 s")?
            .context("the consumer was cancelled")??;
        first.get_or_insert_with(Instant::now);
        d.ack(BasicAckOptions::default()).await?;
        read += 1;
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    drop(consumer);
    delete_queue(queue).await;
    Ok(Row::new("rabbitmq-plain-consumer", n, secs).note(format!(
        "lapin consumer, prefetch {PREFETCH}, one ack per message"
    )))
}

fn source_yaml(queue: &str, n: u64) -> String {
    format!(
        "sources:\n  - name: mq\n    type: rabbitmq\n    url: \"{}\"\n    queue: {queue}\n    \
         prefetch: {PREFETCH}\n    max_backlog: {}\n",
        url(),
        n.saturating_mul(2).max(1_000_000)
    )
}

/// `rabbitmq-consume-match-discard`.
pub async fn consume_match_discard(bin: &Path, n: u64) -> anyhow::Result<Row> {
    let (queue, _) = filled_queue("bench-mq-discard", n).await?;
    let body = format!(
        "{}targets:\n  - name: t\n    type: discard\n{}",
        source_yaml(&queue, n),
        rule_yaml("t")
    );
    let run = pipeline_from(bin, "mq-discard", &body, n).await?;
    let row = run.row("rabbitmq-consume-match-discard", n)?;
    run.sluice.stop().await;
    let left = count(&queue).await?;
    delete_queue(&queue).await;
    if left > 0 {
        bail!("{left} messages left in the queue after sluice had {n}");
    }
    Ok(row)
}

/// `rabbitmq-target`.
pub async fn target(bin: &Path, n: u64) -> anyhow::Result<Row> {
    let (input, _) = filled_queue("bench-mq-in", n).await?;
    let output = {
        let (_conn, ch) = channel().await?;
        new_queue(&ch, "bench-mq-out").await?
    };
    let body = format!(
        "{}targets:\n  - name: t\n    type: rabbitmq\n    url: \"{}\"\n    exchange: \"\"\n    \
         routing_key: {output}\n{}",
        source_yaml(&input, n),
        url(),
        rule_yaml("t")
    );
    let run = pipeline_from(bin, "mq-target", &body, n).await?;
    let row = run.row("rabbitmq-target", n)?;
    run.sluice.stop().await;
    let written = count(&output).await?;
    delete_queue(&input).await;
    delete_queue(&output).await;
    if written < n {
        bail!("sluice confirmed {n} messages but queue {output} holds {written}");
    }
    Ok(row.note(format!(
        "RabbitMQ source -> rabbitmq target (binary, persistent, confirms); output queue holds {written}"
    )))
}
