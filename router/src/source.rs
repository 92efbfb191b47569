//! The source side: what a connector implements to bring events in, and the
//! narrow handle it gets from the engine.
//!
//! A source pushes events through [`SourceContext::publish`], which returns once
//! they are durable in every matching subscription; only then may the source
//! acknowledge upstream (store a Kafka offset, ack an AMQP delivery), in upstream
//! order. It stops when [`SourceContext::shutdown`] is cancelled.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::engine::{BacklogFull, Engine, Metrics, PublishError, Published, Replays};
use crate::error::ErrorClass;
use crate::event::Event;
use crate::store::{Progress, StoreError};
use cloudevents::AttributesReader;

/// A source's door to the engine: publish, reject, its bus's backlog, its
/// replay positions, its status and metrics. Cheap to clone.
#[derive(Clone)]
pub struct SourceContext {
    name: String,
    bus: String,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    /// The source's positions (`None` with `server.dedupe_window: 0s`).
    progress: Option<Progress>,
    /// The same tree whatever the window, for [`SourceContext::publish_marked`].
    marks: Progress,
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
pub(crate) struct SourceStatuses(Arc<Mutex<BTreeMap<String, Arc<dyn SourceStatus>>>>);

impl SourceStatuses {
    /// The status source `name` reported, if it reported one.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn SourceStatus>> {
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

    /// The names of the sources that reported a status.
    pub(crate) fn names(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// (source, reason) of each source that cannot bring events in.
    pub(crate) fn not_ready(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|(name, s)| Some((name.clone(), s.not_ready()?)))
            .collect()
    }
}

impl SourceContext {
    pub(crate) fn new(
        name: &str,
        bus: &str,
        engine: Arc<Engine>,
        shutdown: CancellationToken,
        progress: Option<Progress>,
        marks: Progress,
    ) -> Self {
        Self {
            name: name.to_owned(),
            bus: bus.to_owned(),
            engine,
            shutdown,
            progress,
            marks,
        }
    }

    /// The source's name (metrics label, logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bus its events go to.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// Cancelled when sluice shuts down: stop taking input, finish what is in
    /// hand, return from `run`.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Match, store and commit `events`; `Ok` means they are durable (replays
    /// within `server.dedupe_window` are dropped by their `source` + `id`).
    ///
    /// An event the engine refuses (a malformed `deliverat`/`delay`, or one
    /// further than `server.max_delay`) goes to this source's dead letters with
    /// the reason, as [`SourceContext::reject`] would put it, and the others are
    /// published: a source that pulls has nobody to answer. (So do
    /// [`SourceContext::publish_at`] and [`SourceContext::publish_marked`].)
    pub async fn publish(&self, events: &[Event]) -> Result<usize, PublishError> {
        let screened = self.screen(events).await?;
        let events = screened.as_deref().unwrap_or(events);
        let published = self
            .engine
            .publish(&self.bus, &self.name, events, Replays::ByKey)
            .await?;
        Ok(published.queued)
    }

    /// [`SourceContext::publish`], telling also how many of the events matched a
    /// rule, for sources that answer their caller: an event the engine refuses
    /// refuses the whole call ([`PublishError::Invalid`], nothing written), for
    /// the caller to hear about (HTTP 400).
    pub async fn publish_counted(&self, events: &[Event]) -> Result<Published, PublishError> {
        self.engine
            .publish(&self.bus, &self.name, events, Replays::ByKey)
            .await
    }

    /// Whether this source keeps replay positions (see [`SourceContext::publish_at`]).
    pub fn positions_enabled(&self) -> bool {
        self.progress.is_some()
    }

    /// Publish `events` and store `positions` (an opaque key the source chooses,
    /// and the highest position the events cover) after them, durable with them:
    /// a source that numbers its input (Kafka offsets) recognises what it already
    /// queued by position, without an index entry per event. Without positions
    /// (`server.dedupe_window: 0s`) this is [`SourceContext::publish`].
    pub async fn publish_at(
        &self,
        events: &[Event],
        positions: &[(Vec<u8>, i64)],
    ) -> Result<usize, PublishError> {
        let replays = match &self.progress {
            Some(progress) => Replays::ByPosition {
                progress,
                positions,
            },
            None => Replays::ByKey,
        };
        let screened = self.screen(events).await?;
        let events = screened.as_deref().unwrap_or(events);
        let published = self
            .engine
            .publish(&self.bus, &self.name, events, replays)
            .await?;
        Ok(published.queued)
    }

    /// Move the events the engine refuses to this source's dead letters (durably);
    /// `Some(the rest)` when there were any, `None` when it takes them all.
    async fn screen(&self, events: &[Event]) -> Result<Option<Vec<Event>>, PublishError> {
        let Some((taken, refused)) = self.engine.screen(events) else {
            return Ok(None);
        };
        for (event, reason) in &refused {
            tracing::debug!(source = %self.name, ce_id = %event.id(), reason = %reason, "Event refused to the source's dead letters.");
        }
        self.reject(refused).await?;
        Ok(Some(taken))
    }

    /// The position stored under `key` within `server.dedupe_window` of being
    /// written; older positions (and every position with the window at 0) count
    /// as none, so input rewound on purpose long after is read again.
    pub fn position(&self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        let Some(progress) = &self.progress else {
            return Ok(None);
        };
        let window = self.engine.dedupe_window_ms();
        let now = crate::now_ms();
        Ok(progress
            .get(key)?
            .filter(|at| at.written_ms.saturating_add(window) > now)
            .map(|at| at.position))
    }

    /// Publish `events` like [`SourceContext::publish`] (replays within
    /// `server.dedupe_window` dropped by `source` + `id`) and store `marks`
    /// (key, value) after them, durable with them even when no event was queued.
    ///
    /// Positions ([`SourceContext::publish_at`]) are replay markers: they expire
    /// with the dedupe window, on purpose, and are not kept at all with the window
    /// at 0. A mark is a fact the source must keep across any downtime, read back
    /// by [`SourceContext::mark`] whatever its age: a timer's last fired instant,
    /// so a daily timer down for two days with `catch_up: all` knows what it
    /// missed, and a restart never fires an instant twice.
    pub async fn publish_marked(
        &self,
        events: &[Event],
        marks: &[(Vec<u8>, i64)],
    ) -> Result<usize, PublishError> {
        self.publish_remarked(events, marks, &[]).await
    }

    /// [`SourceContext::publish_marked`], also dropping the marks under
    /// `unmarks` in the same commit: a source that keeps a mark per item it has
    /// seen (the S3 poller, one per object) forgets items that are gone together
    /// with the events that say so.
    pub async fn publish_remarked(
        &self,
        events: &[Event],
        marks: &[(Vec<u8>, i64)],
        unmarks: &[Vec<u8>],
    ) -> Result<usize, PublishError> {
        let replays = Replays::Marked {
            progress: &self.marks,
            positions: marks,
            removed: unmarks,
        };
        let screened = self.screen(events).await?;
        let events = screened.as_deref().unwrap_or(events);
        let published = self
            .engine
            .publish(&self.bus, &self.name, events, replays)
            .await?;
        Ok(published.queued)
    }

    /// Up to `limit` marks whose keys start with `prefix` and sort after `after`
    /// (from the first when `None`), in byte order of the key, with their values:
    /// a source walks its marks a chunk at a time, in step with an ordered input
    /// (an S3 listing), in bounded memory.
    pub fn marks_from(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        Ok(self
            .marks
            .scan(prefix, after, limit)?
            .into_iter()
            .map(|(key, at)| (key, at.position))
            .collect())
    }

    /// The mark stored under `key` by [`SourceContext::publish_marked`], however
    /// long ago.
    pub fn mark(&self, key: &[u8]) -> Result<Option<i64>, StoreError> {
        Ok(self.marks.get(key)?.map(|at| at.position))
    }

    /// Count `n` records read again and skipped because this source holds them
    /// already (received, and duplicate).
    pub fn skipped_replays(&self, n: u64) {
        let metrics = self.engine.metrics();
        metrics.received(&self.bus, &self.name).inc_by(n);
        metrics.duplicates(&self.bus, &self.name).inc_by(n);
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
            .metrics()
            .rejected(&self.bus, &self.name)
            .inc_by(count);
        Ok(())
    }

    /// The deepest queue among the subscriptions of this source's bus.
    pub fn backlog(&self) -> u64 {
        self.engine.backlog(&self.bus)
    }

    /// `Err` while a subscription of this source's bus holds more than
    /// `server.max_backlog` events (a source that is pushed to answers "retry
    /// later"; one that pulls should pause instead).
    pub fn room(&self) -> Result<(), BacklogFull> {
        self.engine.room(&self.bus)
    }

    /// Make `status` what `GET /api/sources/{name}` and `/readyz` show for this source.
    pub fn report(&self, status: Arc<dyn SourceStatus>) {
        self.engine.statuses().set(&self.name, status);
    }

    /// Count a request refused as malformed (`sluice_events_rejected_total`), for
    /// sources that answer their caller instead of keeping the input.
    pub fn refused(&self) {
        self.engine.metrics().rejected(&self.bus, &self.name).inc();
    }

    /// The server's settings (limits and the ingest token, for sources that
    /// serve HTTP routes).
    pub fn server(&self) -> &ServerConfig {
        self.engine.server()
    }

    /// The metrics registry, for the source's own metric families.
    pub fn metrics(&self) -> &Metrics {
        self.engine.metrics()
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
    /// Run until [`SourceContext::shutdown`] is cancelled; commit upstream
    /// progress only for events the context accepted.
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError>;
}
