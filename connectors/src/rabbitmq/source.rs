//! The RabbitMQ source: one connection, one channel, one consumer with manual
//! acknowledgements and `prefetch` unacknowledged deliveries at most.
//!
//! Deliveries are published in batches; only once a batch is durable are its
//! malformed messages rejected (with `malformed: reject`) and the rest
//! acknowledged with one `basic.ack multiple` up to its highest delivery tag.
//! Nothing is auto-acked and nothing is acknowledged before it is durable, so a
//! crash, a lost connection or a shutdown leaves the unacknowledged deliveries to
//! the broker, which delivers them again: at least once. A message delivered
//! again has the same event id (its CloudEvents id, its `message_id`, or the
//! deterministic id of [`super::message::plain_id`]) and
//! `server.dedupe_window` drops the copy.
//!
//! A lost connection (a broker restart, a closed connection, a network failure)
//! is reconnected with exponential backoff and jitter, the queue declared and
//! bound again; `/readyz` names the source meanwhile. While a subscription of the
//! bus is over `max_backlog` the source stops taking deliveries: the prefetch
//! window runs dry and the broker sends nothing more until it resumes.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties, Consumer};
use sluice_router::config::Malformed;
use sluice_router::engine::PublishError;
use sluice_router::event::Event;
use sluice_router::source::{Source, SourceContext, SourceError};
use sluice_router::throttle::{Level, Throttle, Who};

use super::config::{arguments, RabbitmqSourceConfig};
use super::message::{message_to_event, Incoming, MessageMapping};
use super::status::{Phase, Status};
use crate::binding::problem_of;
use crate::{BuildSource, BuiltSource, ConnectorError};

/// How long a batch waits for more deliveries after its first.
const BATCH_WAIT: Duration = Duration::from_millis(5);

/// How often a paused source looks at the backlog (and its connection) again.
const PAUSE_CHECK: Duration = Duration::from_millis(100);

/// The first and the longest wait between connection attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Connecting (TCP, TLS, AMQP handshake, declarations) gives up after this long:
/// a broker behind a black hole would otherwise hold the source for the
/// system's TCP timeout, minutes, before the next attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured RabbitMQ source.
pub struct RabbitmqSource {
    config: RabbitmqSourceConfig,
    mapping: MessageMapping,
    /// Deliveries published together at most: half the prefetch window, so the
    /// broker fills the other half while a batch is made durable.
    batch: usize,
    status: std::sync::Arc<Status>,
    throttle: Throttle,
}

/// One connection's consumer.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: Consumer,
}

/// Why consuming on a connection stopped.
enum Ended {
    Shutdown,
    Lost(String),
}

impl RabbitmqSource {
    pub fn new(config: &RabbitmqSourceConfig) -> Self {
        Self {
            mapping: MessageMapping {
                event_source: config.event_source.clone(),
                event_type: config.event_type.clone(),
                queue: config.queue.clone(),
            },
            batch: usize::from(config.prefetch / 2).max(1),
            status: std::sync::Arc::new(Status::new(&config.queue)),
            throttle: Throttle::new(Who::Source(config.name.clone())),
            config: config.clone(),
        }
    }

    /// Connect, declare and bind the queue (when configured), start consuming.
    async fn connect(&self) -> Result<Session, String> {
        let c = &self.config;
        let props = ConnectionProperties::default()
            .with_connection_name(format!("sluice source {}", c.name).into());
        let connection = Connection::connect(&c.url, props)
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        channel
            .basic_qos(c.prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| format!("setting prefetch: {e}"))?;
        if let Some(declare) = &c.declare {
            let options = QueueDeclareOptions {
                durable: declare.durable,
                auto_delete: declare.auto_delete,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(c.queue.as_str().into(), options, arguments(declare))
                .await
                .map_err(|e| format!("declaring queue {}: {e}", c.queue))?;
        }
        for b in &c.bindings {
            channel
                .queue_bind(
                    c.queue.as_str().into(),
                    b.exchange.as_str().into(),
                    b.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    format!(
                        "binding queue {} to exchange {} ({}): {e}",
                        c.queue, b.exchange, b.routing_key
                    )
                })?;
        }
        let consumer = channel
            .basic_consume(
                c.queue.as_str().into(),
                ShortString::from(format!("sluice-{}", c.name)),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| format!("consuming queue {}: {e}", c.queue))?;
        Ok(Session {
            connection,
            channel,
            consumer,
        })
    }

    /// Take deliveries until shutdown or until the connection is lost.
    async fn consume(&self, session: &mut Session, cx: &SourceContext) -> Ended {
        let mut paused = false;
        loop {
            let backlog = cx.backlog();
            if !paused && backlog > self.config.max_backlog {
                tracing::info!(source = %cx.name(), backlog, "Delivery is behind; consumption paused.");
                paused = true;
                self.status.paused(true);
            } else if paused && backlog <= self.config.max_backlog / 2 {
                tracing::info!(source = %cx.name(), backlog, "Consumption resumed.");
                paused = false;
                self.status.paused(false);
            }
            if paused {
                tokio::select! {
                    () = cx.shutdown().cancelled() => return Ended::Shutdown,
                    () = tokio::time::sleep(PAUSE_CHECK) => {}
                }
                if !session.connection.status().connected() {
                    return Ended::Lost("the connection closed".into());
                }
                continue;
            }
            let first = tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return Ended::Shutdown,
                next = session.consumer.next() => next,
            };
            let mut lost = None;
            let mut batch = Vec::new();
            match first {
                Some(Ok(d)) => batch.push(d),
                Some(Err(e)) => return Ended::Lost(e.to_string()),
                None => return Ended::Lost("the broker cancelled the consumer".into()),
            }
            while batch.len() < self.batch {
                match tokio::time::timeout(BATCH_WAIT, session.consumer.next()).await {
                    Ok(Some(Ok(d))) => batch.push(d),
                    Ok(Some(Err(e))) => {
                        lost = Some(e.to_string());
                        break;
                    }
                    Ok(None) => {
                        lost = Some("the broker cancelled the consumer".into());
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.deliver(&batch, &session.channel, cx).await {
                return Ended::Shutdown;
            }
            if let Some(why) = lost {
                return Ended::Lost(why);
            }
        }
    }

    /// Publish a batch until durable (an unavailable store is retried, never
    /// skipped), then reject its malformed messages and acknowledge the rest.
    /// Returns false on shutdown.
    async fn deliver(&self, batch: &[Delivery], channel: &Channel, cx: &SourceContext) -> bool {
        let mut events = Vec::with_capacity(batch.len());
        let mut rejected = Vec::new();
        let mut rejected_tags = Vec::new();
        let mut ack_to = None;
        for d in batch {
            let event = message_to_event(
                &Incoming {
                    exchange: d.exchange.as_str(),
                    routing_key: d.routing_key.as_str(),
                    properties: &d.properties,
                    body: &d.data,
                },
                &self.mapping,
            );
            match (self.config.malformed, problem_of(&event)) {
                (Malformed::Reject, Some(why)) => {
                    rejected.push((event, why));
                    rejected_tags.push(d.delivery_tag);
                }
                _ => {
                    events.push(event);
                    ack_to = Some(d.delivery_tag);
                }
            }
        }
        loop {
            match self.publish(&events, &rejected, cx).await {
                Ok(()) => break,
                Err(e) => {
                    self.throttle.log(
                        Level::Error,
                        &format!("Publishing RabbitMQ messages failed; retrying: {e}"),
                    );
                    tokio::select! {
                        () = cx.shutdown().cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        // Rejects first: the multiple ack after them covers only what is left.
        let settled = async {
            for tag in &rejected_tags {
                channel
                    .basic_reject(*tag, BasicRejectOptions { requeue: false })
                    .await?;
            }
            if let Some(tag) = ack_to {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            Ok::<(), lapin::Error>(())
        };
        match settled.await {
            Ok(()) => self.status.settled(events.len(), rejected_tags.len()),
            // The channel is gone: the broker delivers these again, and the
            // dedupe window drops the copies. The consumer sees the loss next.
            Err(e) => {
                tracing::debug!(source = %cx.name(), error = %e, "Acknowledging failed; the broker will deliver again.");
            }
        }
        true
    }

    async fn publish(
        &self,
        events: &[Event],
        rejected: &[(Event, String)],
        cx: &SourceContext,
    ) -> Result<(), PublishError> {
        cx.reject(rejected.to_vec()).await?;
        if !events.is_empty() {
            cx.publish(events).await?;
        }
        Ok(())
    }
}

/// The wait before connection attempt `attempt` (0-based): exponential from
/// [`BACKOFF_FIRST`] to [`BACKOFF_MAX`], each between half and all of that, so
/// many sluices that lost one broker do not all come back at the same instant.
fn backoff(attempt: u32) -> Duration {
    let full = BACKOFF_FIRST
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
    full / 2 + full / 2 * jitter / 1000
}

#[async_trait]
impl Source for RabbitmqSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        cx.report(self.status.clone());
        let mut attempt = 0u32;
        loop {
            let connected = tokio::select! {
                () = cx.shutdown().cancelled() => break,
                c = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => c
                    .unwrap_or_else(|_| Err(format!("no answer within {CONNECT_TIMEOUT:?}"))),
            };
            match connected {
                Ok(mut session) => {
                    attempt = 0;
                    if self.status.phase() != Phase::Connecting {
                        tracing::info!(source = %cx.name(), "Reconnected to RabbitMQ.");
                    }
                    self.status.connected();
                    let ended = self.consume(&mut session, &cx).await;
                    // Unacknowledged deliveries go back to the queue.
                    let _ = session.connection.close(200, "sluice stops".into()).await;
                    match ended {
                        Ended::Shutdown => break,
                        Ended::Lost(why) => {
                            tracing::warn!(source = %cx.name(), error = %why, "RabbitMQ connection lost; reconnecting.");
                            self.status.down(&why);
                        }
                    }
                }
                Err(why) => {
                    self.throttle
                        .log(Level::Warn, &format!("RabbitMQ is unavailable: {why}"));
                    self.status.down(&why);
                }
            }
            tokio::select! {
                () = cx.shutdown().cancelled() => break,
                () = tokio::time::sleep(backoff(attempt)) => {}
            }
            attempt = attempt.saturating_add(1);
        }
        Ok(())
    }
}

impl BuildSource for RabbitmqSourceConfig {
    fn build(&self, _cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        Ok(BuiltSource::task(Box::new(RabbitmqSource::new(self))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        for attempt in 0..30 {
            let full = BACKOFF_FIRST
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_MAX);
            let d = backoff(attempt);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert!(backoff(40) <= BACKOFF_MAX);
    }
}
