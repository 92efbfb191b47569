//! The source side: what a connector implements to bring events in.
//!
//! A source pushes events through [`SourceContext::publish`], which returns once
//! they are durable in every matching subscription; only then may the source
//! acknowledge upstream (store a Kafka offset, ack an AMQP delivery), in upstream
//! order. It stops when `shutdown` is cancelled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, PublishError, Replays};
use crate::error::ErrorClass;
use crate::event::Event;

/// What a running source gets.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name (metrics label, logs).
    pub name: String,
    /// The bus its events go to.
    pub bus: String,
    pub engine: Arc<Engine>,
    pub shutdown: CancellationToken,
    /// Where the source reports its state (see [`SourceContext::report`]).
    pub statuses: SourceStatuses,
}

/// What a running source says about itself, for `GET /api/sources/{name}` and
/// `/readyz`. Both are called from request handlers: keep them cheap (read state
/// the source keeps up to date; no I/O).
pub trait SourceStatus: Send + Sync + 'static {
    /// The source's state as a JSON object (`name`, `type` and `bus` are added).
    fn status(&self) -> serde_json::Value;
    /// Why the source cannot bring events in right now, if it cannot.
    fn not_ready(&self) -> Option<String>;
}

/// The statuses of the running sources, by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct SourceStatuses(Arc<Mutex<BTreeMap<String, Arc<dyn SourceStatus>>>>);

impl SourceStatuses {
    /// The status source `name` reported, if it reported one.
    pub fn get(&self, name: &str) -> Option<Arc<dyn SourceStatus>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    fn set(&self, name: &str, status: Arc<dyn SourceStatus>) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), status);
    }
}

impl SourceContext {
    /// Make `status` what `GET /api/sources/{name}` and `/readyz` show for this source.
    pub fn report(&self, status: Arc<dyn SourceStatus>) {
        self.statuses.set(&self.name, status);
    }

    /// Match, store and commit `events`; `Ok` means they are durable.
    pub async fn publish(&self, events: &[Event]) -> Result<usize, PublishError> {
        self.engine.publish(&self.bus, &self.name, events).await
    }

    /// [`SourceContext::publish`], recognising replays as `replays` says.
    pub async fn publish_with(
        &self,
        events: &[Event],
        replays: Replays<'_>,
    ) -> Result<usize, PublishError> {
        self.engine
            .publish_with(&self.bus, &self.name, events, replays)
            .await
    }

    /// Keep malformed input out of the bus: each event (the record as sluice could
    /// read it) goes to this source's dead-letter list with the reason, durably.
    pub async fn reject(&self, rejected: Vec<(Event, String)>) -> Result<(), PublishError> {
        if rejected.is_empty() {
            return Ok(());
        }
        let queue = self.engine.store().source_rejects(&self.name)?;
        let now = crate::now_ms();
        let count = rejected.len() as u64;
        for (event, reason) in rejected {
            let text =
                serde_json::to_string(&event).map_err(|e| PublishError::Encode(e.to_string()))?;
            let raw = serde_json::value::RawValue::from_string(text)
                .map_err(|e| PublishError::Encode(e.to_string()))?;
            queue.reject(crate::store::Record::new(raw, now), reason, now)?;
        }
        queue.commit().await?;
        self.engine
            .metrics
            .rejected(&self.bus, &self.name)
            .inc_by(count);
        Ok(())
    }
}

/// Why a source stopped.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name}: {message}")]
pub struct SourceError {
    pub source_name: String,
    pub message: String,
    pub class: ErrorClass,
}

/// A running source.
#[async_trait]
pub trait Source: Send + 'static {
    /// Run until `cx.shutdown` is cancelled; commit upstream progress only for
    /// events `cx.publish` accepted.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}
