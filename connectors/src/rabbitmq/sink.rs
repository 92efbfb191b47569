//! The RabbitMQ target: each event published to an exchange on a channel in
//! confirm mode; the broker's publisher confirm is the success signal.
//!
//! A batch is published in one go and its confirms awaited together
//! (pipelined: one round trip per batch, not per message). Per event:
//! - an ack: delivered;
//! - an ack with the message returned (`mandatory` and no queue took it): a
//!   permanent failure, dead-lettered with reason `unroutable`;
//! - a nack, a timeout or a lost connection: transient, retried. The channel is
//!   dropped and the next delivery connects again.
//!
//! One connection and channel per target, shared by its concurrent batches
//! (lapin matches each confirm to its publish); made on first use.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use sluice_router::config::BindingMode;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};
use sluice_router::transform::NameTemplate;
use tokio::sync::Mutex;

use super::config::RabbitmqTargetConfig;
use super::message::event_to_message;
use crate::{BuildSink, ConnectorError};

/// Publishes events to a RabbitMQ exchange.
pub struct RabbitmqSink {
    name: String,
    url: String,
    exchange: String,
    routing_key: NameTemplate,
    mode: BindingMode,
    persistent: bool,
    mandatory: bool,
    timeout: Duration,
    /// The connection and its confirm-mode channel, once made; `None` after a failure.
    link: Mutex<Option<(Connection, Channel)>>,
}

impl RabbitmqSink {
    pub fn new(config: &RabbitmqTargetConfig) -> Result<Self, String> {
        Ok(Self {
            name: config.name.clone(),
            url: config.url.clone(),
            exchange: config.exchange.clone(),
            routing_key: NameTemplate::parse(&config.routing_key)
                .map_err(|e| format!("routing_key: {e}"))?,
            mode: config.mode,
            persistent: config.persistent,
            mandatory: config.mandatory,
            timeout: config.timeout,
            link: Mutex::new(None),
        })
    }

    async fn connect(&self) -> Result<(Connection, Channel), String> {
        let props = ConnectionProperties::default()
            .with_connection_name(format!("sluice target {}", self.name).into());
        let connection = Connection::connect(&self.url, props)
            .await
            .map_err(|e| format!("connecting to RabbitMQ: {e}"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| format!("opening a channel: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("enabling publisher confirms: {e}"))?;
        Ok((connection, channel))
    }

    /// The shared channel, connecting if there is none (or it broke).
    async fn channel(&self) -> Result<Channel, String> {
        let mut link = self.link.lock().await;
        if let Some((conn, ch)) = link.as_ref() {
            if conn.status().connected() && ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        *link = None;
        let (conn, ch) = tokio::time::timeout(self.timeout, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "connecting to RabbitMQ: no answer within {:?}",
                    self.timeout
                ))
            })?;
        *link = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// Forget `channel` after it failed, unless another batch replaced it already.
    async fn drop_channel(&self, channel: &Channel) {
        let mut link = self.link.lock().await;
        if link.as_ref().is_some_and(|(_, ch)| ch.id() == channel.id()) {
            if let Some((conn, _)) = link.take() {
                let _ = conn.close(200, "sluice reconnects".into()).await;
            }
        }
    }

    /// Publish the batch and wait for its confirms.
    async fn publish(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let channel = match self.channel().await {
            Ok(ch) => ch,
            Err(why) => return vec![Err(SinkError::transient(why)); events.len()],
        };
        let options = BasicPublishOptions {
            mandatory: self.mandatory,
            immediate: false,
        };
        let now = chrono::Utc::now();
        let mut pending = Vec::with_capacity(events.len());
        let mut broken = false;
        for event in events {
            if broken {
                pending.push(Err(SinkError::transient("the channel failed")));
                continue;
            }
            let key = match self.routing_key.render(event, &[], now) {
                Ok(k) => k,
                Err(e) => {
                    pending.push(Err(SinkError::permanent(format!("routing_key: {e}"))));
                    continue;
                }
            };
            if key.len() > 255 {
                pending.push(Err(SinkError::permanent(format!(
                    "routing_key: {} bytes, AMQP allows 255",
                    key.len()
                ))));
                continue;
            }
            let (body, props) = match event_to_message(event, self.mode, self.persistent) {
                Ok(m) => m,
                Err(e) => {
                    pending.push(Err(SinkError::permanent(e)));
                    continue;
                }
            };
            match channel
                .basic_publish(
                    self.exchange.as_str().into(),
                    key.into(),
                    options,
                    &body,
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push(Ok(confirm)),
                Err(e) => {
                    broken = true;
                    pending.push(Err(SinkError::transient(format!("publishing: {e}"))));
                }
            }
        }
        let confirms = pending.into_iter().map(|p| async move {
            match p {
                Ok(confirm) => match tokio::time::timeout(self.timeout, confirm).await {
                    Err(_) => Err(SinkError::transient(format!(
                        "no publisher confirm within {:?}",
                        self.timeout
                    ))),
                    Ok(Err(e)) => Err(SinkError::transient(format!("publisher confirm: {e}"))),
                    Ok(Ok(c)) => settle(c),
                },
                Err(e) => Err(e),
            }
        });
        let results = futures::future::join_all(confirms).await;
        if broken
            || results.iter().any(|r| {
                r.as_ref()
                    .is_err_and(|e| e.class == sluice_router::error::ErrorClass::Transient)
            })
        {
            self.drop_channel(&channel).await;
        }
        results
    }
}

/// The outcome of one confirm.
fn settle(c: Confirmation) -> Result<(), SinkError> {
    match c {
        Confirmation::Nack(_) => Err(SinkError::transient(
            "the broker refused the message (publisher nack)",
        )),
        Confirmation::Ack(Some(returned)) => {
            let mut e = SinkError::permanent(format!(
                "unroutable: no queue is bound for exchange {:?} routing key {:?} ({} {})",
                returned.delivery.exchange.as_str(),
                returned.delivery.routing_key.as_str(),
                returned.reply_code,
                returned.reply_text.as_str()
            ));
            e.status = Some(returned.reply_code);
            Err(e)
        }
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
    }
}

#[async_trait]
impl Sink for RabbitmqSink {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        self.publish(events).await
    }

    /// The broker answers and the exchange exists.
    async fn check(&self) -> Result<(), SinkError> {
        self.channel().await.map_err(SinkError::transient)?;
        if self.exchange.is_empty() {
            return Ok(());
        }
        // A passive declare that fails closes its channel: use one of its own.
        let probe = {
            let link = self.link.lock().await;
            match link.as_ref() {
                Some((conn, _)) => conn.create_channel().await,
                None => return Ok(()),
            }
        }
        .map_err(|e| SinkError::transient(format!("opening a channel: {e}")))?;
        let declared = probe
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let _ = probe.close(200, "checked".into()).await;
        declared.map_err(|e| {
            SinkError::transient(format!("exchange {:?} is not there: {e}", self.exchange))
        })
    }
}

impl BuildSink for RabbitmqTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(
            RabbitmqSink::new(self).map_err(ConnectorError::config)?,
        ))
    }
}
