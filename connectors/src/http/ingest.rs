//! HTTP ingest: `POST /events` (bus `default`), `POST /buses/{bus}/events`, and
//! an `http` source's `POST /sources/{name}/events`. `202 {"accepted": N,
//! "matched": M}` once durable (M: events that matched a rule; an event that
//! matches none is accepted and counted in `sluice_events_unmatched_total`).
//! Refused with 503 `backlog_full` while the bus is over `server.max_backlog`.
//! `202 {"accepted": N}` only after the events are durable in every matching
//! subscription; every bad input gets a 4xx naming the problem.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use sluice_router::config::ServerConfig;
use sluice_router::engine::{BacklogFull, Ingest, PublishError};
use sluice_router::event::Event;
use sluice_router::source::SourceContext;

use super::binding::{self, Mode};
use super::body;
use super::error::check_bearer;
use super::ApiError;

/// Where requests publish: to any bus the engine accepts (`/events`,
/// `/buses/{bus}/events`), or to one source's bus under its name
/// (`/sources/{name}/events`).
#[derive(Clone)]
enum Door {
    Buses(Ingest),
    Source(SourceContext),
}

/// What the ingest handlers need.
#[derive(Clone)]
struct IngestState {
    door: Door,
    max_event_bytes: usize,
    max_batch_bytes: usize,
    body_budget: u64,
    token: Option<Arc<str>>,
}

impl IngestState {
    fn new(door: Door, server: &ServerConfig) -> Self {
        Self {
            door,
            max_event_bytes: server.max_event_bytes as usize,
            max_batch_bytes: server.max_batch_bytes as usize,
            body_budget: server.max_body_bytes_in_flight,
            token: server.auth.ingest_token.as_deref().map(Arc::from),
        }
    }
}

/// The ingest routes: `POST /events` (bus `default`) and `POST /buses/{bus}/events`.
pub fn routes(ingest: Ingest, server: &ServerConfig) -> Router {
    Router::new()
        .route("/events", post(default_bus))
        .route("/buses/{bus}/events", post(named_bus))
        .with_state(IngestState::new(Door::Buses(ingest), server))
}

/// An `http` source's routes, mounted under `/sources/{name}/`: `POST /events`
/// publishes to the source's bus under the source's name.
pub(super) fn source_routes(cx: SourceContext, server: &ServerConfig) -> Router {
    Router::new()
        .route("/events", post(source_bus))
        .with_state(IngestState::new(Door::Source(cx), server))
}

async fn default_bus(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    ingest(&state, "default", &headers, body).await
}

async fn named_bus(
    State(state): State<IngestState>,
    bus: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let Path(bus) = bus.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_path",
            format!("the bus name in the path cannot be read: {}", e.body_text()),
        )
    })?;
    ingest(&state, &bus, &headers, body).await
}

/// `name` for an error message: whole when short, else its start and its size.
fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    if name.len() <= SHOWN {
        return format!("{name:?}");
    }
    let mut end = SHOWN;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &name[..end], name.len())
}

async fn source_bus(
    State(state): State<IngestState>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let bus = match &state.door {
        Door::Source(cx) => cx.bus().to_owned(),
        Door::Buses(_) => "default".to_owned(),
    };
    ingest(&state, &bus, &headers, body).await
}

/// A bus over `server.max_backlog`: 503 with `Retry-After`.
fn backlog_full(full: &BacklogFull) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backlog_full",
        full.to_string(),
    );
    e.retry_after = Some(1);
    e
}

async fn ingest(
    state: &IngestState,
    bus: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    check_bearer(headers, state.token.as_deref())?;
    let room = match &state.door {
        Door::Buses(ingest) => {
            if !ingest.accepts(bus) {
                let known: Vec<&str> = ingest.buses().collect();
                return Err(ApiError::not_found(format!(
                    "unknown bus {}; buses with rules or sources: {}",
                    shown(bus),
                    known.join(", ")
                )));
            }
            ingest.room(bus)
        }
        Door::Source(cx) => cx.room(),
    };
    room.map_err(|full| backlog_full(&full))?;
    let accepted = accept(state, bus, headers, body).await;
    if let Err(e) = &accepted {
        if e.status.is_client_error() {
            match &state.door {
                Door::Buses(ingest) => ingest.rejected(bus),
                Door::Source(cx) => cx.refused(),
            }
        }
    }
    let (count, matched) = accepted?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": count, "matched": matched })),
    ))
}

/// Publish; returns how many of the events matched a rule (`None` where the door
/// does not say). `batch`: the offset of `events` in the request's batch.
async fn publish(
    door: &Door,
    bus: &str,
    events: &[Event],
    batch: Option<usize>,
) -> Result<Option<usize>, ApiError> {
    let matched = match door {
        Door::Buses(ingest) => ingest.publish(bus, events).await.map(|p| Some(p.matched)),
        Door::Source(cx) => cx.publish_counted(events).await.map(|_| None),
    };
    matched.map_err(|e| publish_error(e, batch))
}

/// A failed publish as an answer: an event the engine refused (a bad
/// `deliverat`/`delay`) is the caller's mistake, 400 naming the field (`[i].field`
/// in a batch whose part starts at `batch`); anything else is sluice's.
pub(crate) fn publish_error(e: PublishError, batch: Option<usize>) -> ApiError {
    match e {
        PublishError::Invalid { index, error } => {
            let error = match batch {
                Some(first) => error.within(&format!("[{}]", first + index)),
                None => error,
            };
            ApiError::bad_event(error.field, error.message)
        }
        e => ApiError::unavailable(e),
    }
}

/// Batches up to this many bytes are parsed whole and published at once; larger
/// ones are checked element by element first (a bad element refuses the batch
/// whole), then parsed and published in parts of about this size, so parsing
/// never holds much more than the body itself.
const BATCH_PART_BYTES: usize = 256 * 1024;

/// Read, parse and publish a request's events: (events accepted, events that
/// matched a rule).
async fn accept(
    state: &IngestState,
    bus: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(usize, Option<usize>), ApiError> {
    let mode = binding::mode(headers)?;
    let (limit, what) = match mode {
        Mode::Batch => (state.max_batch_bytes, "the batch"),
        Mode::Binary | Mode::Structured => (state.max_event_bytes, "the event"),
    };
    let read = body::read(headers, body, limit, state.body_budget, what).await?;
    let bytes = &read.bytes;
    let event = match mode {
        Mode::Binary => binding::from_binary(headers, bytes)?,
        Mode::Structured => binding::from_structured(bytes)?,
        Mode::Batch => {
            let items = binding::batch_items(bytes, state.max_event_bytes)?;
            if bytes.len() <= BATCH_PART_BYTES {
                let events = binding::batch_events(&items, 0)?;
                let matched = publish(&state.door, bus, &events, Some(0)).await?;
                return Ok((events.len(), matched));
            }
            for (i, raw) in items.iter().enumerate() {
                binding::batch_events(std::slice::from_ref(raw), i)?;
            }
            let mut matched = Some(0);
            let mut start = 0;
            while start < items.len() {
                let mut end = start;
                let mut size = 0;
                while end < items.len() && (end == start || size < BATCH_PART_BYTES) {
                    size += items[end].get().len();
                    end += 1;
                }
                let events = binding::batch_events(&items[start..end], start)?;
                let part = publish(&state.door, bus, &events, Some(start)).await?;
                matched = matched.zip(part).map(|(a, b)| a + b);
                start = end;
            }
            return Ok((items.len(), matched));
        }
    };
    let matched = publish(&state.door, bus, std::slice::from_ref(&event), None).await?;
    Ok((1, matched))
}

/// What the routes of webhook sources (`POST /sources/{name}/...` of other
/// connectors: bucket notifications, ...) share with ingest: the ingest token, the
/// body limit (`server.max_batch_bytes`) and budget, the bus's room, refusals
/// counted, the error JSON. The connector only parses. (Compiled with the
/// connectors that serve such routes.)
#[cfg(any(feature = "s3", feature = "ops"))]
#[derive(Clone)]
pub(crate) struct Webhook(IngestState);

#[cfg(any(feature = "s3", feature = "ops"))]
impl Webhook {
    pub(crate) fn new(cx: SourceContext) -> Self {
        let server = cx.server().clone();
        Self(IngestState::new(Door::Source(cx), &server))
    }

    /// Ask no ingest token: for sources whose requests prove themselves by a
    /// signature the connector checks in its parser (senders such as GitHub
    /// cannot send a bearer token).
    #[cfg(feature = "ops")]
    pub(crate) fn signed(mut self) -> Self {
        self.0.token = None;
        self
    }

    /// The largest event, for parsers that check each event they make.
    #[cfg(feature = "ops")]
    pub(crate) fn max_event_bytes(&self) -> usize {
        self.0.max_event_bytes
    }

    /// Check the token and the bus's room, read the body, `parse` it, publish what
    /// it made: `202 {"accepted": N, "matched": M}` once durable, or `200` with
    /// nothing published when `parse` says the body carries no events (`None`:
    /// a test notification). A bad body publishes nothing.
    #[cfg(feature = "ops")]
    pub(crate) async fn receive<F>(
        &self,
        headers: &HeaderMap,
        body: Body,
        parse: F,
    ) -> Result<axum::response::Response, ApiError>
    where
        F: FnOnce(&[u8]) -> Result<Option<Vec<Event>>, ApiError>,
    {
        self.receive_finished(headers, body, parse, |events| async { Ok(events) })
            .await
    }

    /// Check the token and the bus's room, read the body, `parse` it, let
    /// `finish` complete the events (read what they refer to; `Err` refuses the
    /// whole body), publish them: `202 {"accepted": N, "matched": M}` once
    /// durable, or `200` with nothing published when `parse` says the body
    /// carries no events (`None`: a test notification). A bad body publishes
    /// nothing.
    pub(crate) async fn receive_finished<F, G, Fut>(
        &self,
        headers: &HeaderMap,
        body: Body,
        parse: F,
        finish: G,
    ) -> Result<axum::response::Response, ApiError>
    where
        F: FnOnce(&[u8]) -> Result<Option<Vec<Event>>, ApiError>,
        G: FnOnce(Vec<Event>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Event>, ApiError>>,
    {
        let Door::Source(cx) = &self.0.door else {
            return Err(ApiError::unavailable("a webhook without its source"));
        };
        check_bearer(headers, self.0.token.as_deref())?;
        cx.room().map_err(|full| backlog_full(&full))?;
        let read = body::read(
            headers,
            body,
            self.0.max_batch_bytes,
            self.0.body_budget,
            "the body",
        )
        .await;
        let parsed = read.and_then(|read| Ok((parse(&read.bytes)?, read)));
        let (events, _held) = match parsed {
            Ok((Some(events), read)) => (events, read),
            Ok((None, _)) => {
                return Ok(
                    (StatusCode::OK, Json(json!({"accepted": 0, "matched": 0}))).into_response()
                )
            }
            Err(e) => {
                if e.status.is_client_error() {
                    cx.refused();
                }
                return Err(e);
            }
        };
        let events = finish(events).await?;
        let published = cx
            .publish_counted(&events)
            .await
            .map_err(|e| publish_error(e, (events.len() > 1).then_some(0)))?;
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "accepted": events.len(), "matched": published.matched })),
        )
            .into_response())
    }
}
