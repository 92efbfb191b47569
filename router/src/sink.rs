//! The target side: what a connector implements to receive events.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::ErrorClass;
use crate::event::Event;

/// Why a delivery failed, with what the dispatcher needs to decide what comes next.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// Transient: retry with backoff. Permanent: dead-letter now.
    pub class: ErrorClass,
    /// A short description, e.g. `HTTP 503 Service Unavailable` or `timed out after 10s`.
    pub message: String,
    /// The far side's status code, when it gave one.
    pub status: Option<u16>,
    /// The start of the far side's response body.
    pub body_excerpt: Option<String>,
    /// How long the far side asked us to wait (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl SinkError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, message)
    }

    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Self {
            class,
            message: message.into(),
            status: None,
            body_excerpt: None,
            retry_after: None,
        }
    }
}

/// What the far side answered to one delivered event, for rules with an
/// `on_success` destination: only targets that answer (HTTP functions) give one.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// The response's status code.
    pub status: u16,
    /// The response's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The response body, its first `max_body` bytes at most.
    pub body: Vec<u8>,
    /// Whether the body was longer than what `body` keeps.
    pub truncated: bool,
    /// The response as a CloudEvent, when it was one (binary mode `ce-*`
    /// headers, or structured mode): the sink knows its protocol's binding, so
    /// it parses the answer; `None` when the response is not a valid CloudEvent.
    pub event: Option<Event>,
}

/// A delivery target.
///
/// The dispatcher hands a sink batches of events, up to the target's concurrency
/// at once: a target with a `batch` setting gets up to `max_events` together, any
/// other target one at a time. One result per event, in order, so the dispatcher
/// retries or dead-letters each on its own. Sinks may be given the same event
/// again after a crash or a retry, so those that can be idempotent should key
/// writes on `source` + `id` ([`crate::event::event_key`]).
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Write `events`; `Ok` in a slot means the far side confirmed that event.
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>>;

    /// As [`Sink::deliver`], keeping what the far side answered to each event
    /// (its body up to `max_body` bytes) for result destinations. A default
    /// method, so that targets with no answer (storage, brokers) stay as they
    /// are and answer `None`: only the HTTP function target overrides it.
    async fn deliver_answered(
        &self,
        events: &[Event],
        max_body: usize,
    ) -> Vec<Result<Option<Answer>, SinkError>> {
        let _ = max_body;
        let results = self.deliver(events).await;
        results.into_iter().map(|r| r.map(|()| None)).collect()
    }

    /// Whether the far side is set up to take events (a table exists and its
    /// columns fit, say). The error's message is the reason: the dispatcher holds
    /// deliveries, reports it on `/readyz` and checks again a little later.
    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Whether a batch must be written again exactly as first formed after a crash
    /// or a failure, because the far side names what it writes after the batch (an
    /// S3 object). The dispatcher then records each batch durably before sending
    /// it and retries it only as a whole. Only asked of batching targets.
    fn stable_batches(&self) -> bool {
        false
    }
}
