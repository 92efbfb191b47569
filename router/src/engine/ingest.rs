//! HTTP ingest's door: publish to any bus the engine accepts, and back-pressure.
//!
//! A bus whose deepest subscription holds more than `server.max_backlog` events
//! refuses new ones ([`BacklogFull`]) until delivery drains it, so a stalled
//! target bounds the store instead of letting it grow without limit. Sources that
//! pull (Kafka) pause instead; sources that are pushed to (HTTP) answer 503.

use std::sync::Arc;

use super::{Engine, PublishError, Published, Replays};
use crate::event::Event;

/// The source name HTTP ingest publishes under (metrics label).
const SOURCE: &str = "http";

/// The handle HTTP ingest publishes through. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    engine: Arc<Engine>,
}

/// A bus over `server.max_backlog`: retry after delivery caught up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("subscription {subscription} of bus {bus:?} holds {depth} events, more than server.max_backlog ({limit}); retry later")]
pub struct BacklogFull {
    pub bus: String,
    pub subscription: String,
    pub depth: u64,
    pub limit: u64,
}

impl Ingest {
    pub(super) fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Whether `bus` takes events: `default`, and every bus a rule or source names.
    pub fn accepts(&self, bus: &str) -> bool {
        self.engine.buses.contains(bus)
    }

    /// The buses that take events, sorted.
    pub fn buses(&self) -> impl Iterator<Item = &str> {
        self.engine.buses.iter().map(String::as_str)
    }

    /// `Err` while a subscription of `bus` holds more than `server.max_backlog`.
    pub fn room(&self, bus: &str) -> Result<(), BacklogFull> {
        self.engine.room(bus)
    }

    /// Publish `events` to `bus`; `Ok` once they are durable in every matching
    /// subscription (replays within `server.dedupe_window` are dropped).
    pub async fn publish(&self, bus: &str, events: &[Event]) -> Result<Published, PublishError> {
        self.engine
            .publish(bus, SOURCE, events, Replays::ByKey)
            .await
    }

    /// Count a request refused as malformed (`sluice_events_rejected_total`).
    pub fn rejected(&self, bus: &str) {
        self.engine.metrics.rejected(bus, SOURCE).inc();
    }
}

impl Engine {
    /// `Err` while a subscription of `bus` holds more than `server.max_backlog`.
    pub(crate) fn room(&self, bus: &str) -> Result<(), BacklogFull> {
        let fullest = self
            .subscriptions
            .iter()
            .filter(|s| s.bus == bus)
            .map(|s| (s, s.queue.depth()))
            .max_by_key(|(_, depth)| *depth);
        match fullest {
            Some((sub, depth)) if depth > self.max_backlog => Err(BacklogFull {
                bus: bus.to_owned(),
                subscription: sub.name.clone(),
                depth,
                limit: self.max_backlog,
            }),
            _ => Ok(()),
        }
    }
}
