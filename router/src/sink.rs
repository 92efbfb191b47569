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

/// A delivery target.
///
/// The dispatcher calls `deliver` for one event at a time, up to the target's
/// concurrency at once, and may call it again for the same event after a crash or a
/// retry, so sinks that can be idempotent should key writes on `source` + `id`.
/// (Batching sinks will get a batch method with per-item results beside this one.)
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// `Ok` means the far side confirmed the event.
    async fn deliver(&self, event: &Event) -> Result<(), SinkError>;
}
