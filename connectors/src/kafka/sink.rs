//! The Kafka target: one record per event, through an idempotent producer; the
//! delivery report is the success signal. The dispatcher hands over batches: every
//! record of a batch is given to the producer at once (librdkafka groups them by
//! partition, `linger` and compression), and each event is settled by its own
//! report.

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use sluice_router::config::BindingMode;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};
use sluice_router::transform::NameTemplate;

use super::config::KafkaTargetConfig;
use std::sync::Arc;

use crate::binding::{binary_parts, structured_payload, BinaryParts, STRUCTURED};
use crate::{BuildSink, ConnectorError};

/// Produces events to a Kafka topic.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: NameTemplate,
    key: Option<NameTemplate>,
    mode: BindingMode,
    timeout: Duration,
}

impl KafkaSink {
    pub fn new(config: &KafkaTargetConfig) -> Result<Self, String> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &config.compression)
            .set("linger.ms", config.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                config.timeout.as_millis().max(1).to_string(),
            );
        for (k, v) in &config.options {
            client.set(k, v);
        }
        let producer: FutureProducer = client.create().map_err(|e| e.to_string())?;
        Ok(Self {
            producer,
            topic: NameTemplate::parse(&config.topic).map_err(|e| format!("topic: {e}"))?,
            key: config
                .key
                .as_deref()
                .map(NameTemplate::parse)
                .transpose()
                .map_err(|e| format!("key: {e}"))?,
            mode: config.mode,
            timeout: config.timeout,
        })
    }
}

/// The record headers of a binary-mode event: `ce_` attributes and `content-type`.
fn headers_of(parts: &BinaryParts) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    for (name, value) in &parts.attributes {
        headers = headers.insert(Header {
            key: &format!("ce_{name}"),
            value: Some(value.as_bytes()),
        });
    }
    if let Some(ct) = &parts.content_type {
        headers = headers.insert(Header {
            key: "content-type",
            value: Some(ct.as_bytes()),
        });
    }
    headers
}

/// Retry what can succeed later; dead-letter what never will.
fn classify(e: &KafkaError) -> SinkError {
    let code = e.rdkafka_error_code();
    let permanent = matches!(
        code,
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
        )
    );
    let message = format!("kafka: {e}");
    if permanent {
        SinkError::permanent(message)
    } else {
        SinkError::transient(message)
    }
}

impl KafkaSink {
    /// Produce one event; `Ok` once its delivery report confirmed it.
    async fn produce(&self, event: &Event) -> Result<(), SinkError> {
        let topic = self
            .topic
            .render(event, &[], chrono::Utc::now())
            .map_err(|e| SinkError::permanent(format!("topic: {e}")))?;
        let key = match &self.key {
            Some(k) => Some(
                k.render(event, &[], chrono::Utc::now())
                    .map_err(|e| SinkError::permanent(format!("key: {e}")))?,
            ),
            None => None,
        };
        let (payload, headers) = match self.mode {
            BindingMode::Binary => {
                let parts = binary_parts(event);
                let headers = headers_of(&parts);
                (parts.payload, headers)
            }
            BindingMode::Structured => (
                structured_payload(event).map_err(SinkError::permanent)?,
                OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(STRUCTURED.as_bytes()),
                }),
            ),
        };
        let mut record = FutureRecord::to(&topic).payload(&payload).headers(headers);
        if let Some(k) = &key {
            record = record.key(k);
        }
        match self.producer.send(record, self.timeout).await {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(classify(&e)),
        }
    }
}

#[async_trait]
impl Sink for KafkaSink {
    /// Every record of the batch goes to the producer at once (so librdkafka can
    /// fill its own batches); each event is settled by its own delivery report.
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        futures::future::join_all(events.iter().map(|e| self.produce(e))).await
    }
}

impl BuildSink for KafkaTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(
            KafkaSink::new(self).map_err(ConnectorError::config)?,
        ))
    }
}
