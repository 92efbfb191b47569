//! HTTP ingest: `POST /events` (bus `default`), `POST /buses/{bus}/events`, and
//! an `http` source's `POST /sources/{name}/events`. `202 {"accepted": N,
//! "matched": M}` once durable (M: events that matched a rule; an event that
//! matches none is accepted and counted in `sluice_events_unmatched_total`).
//! Refused with 503 `backlog_full` while the bus is over `server.max_backlog`.
//! `202 {"accepted": N}` only after the events are durable in every matching
//! subscription; every bad input gets a 4xx naming the problem.

use std::sync::Arc;

use axum::body::Body;
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
    token: Option<Arc<str>>,
}

impl IngestState {
    fn new(door: Door, server: &ServerConfig) -> Self {
        Self {
            door,
            max_event_bytes: server.max_event_bytes as usize,
            max_batch_bytes: server.max_batch_bytes as usize,
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
    Path(bus): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    ingest(&state, &bus, &headers, body).await
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
                    "unknown bus {bus:?}; buses with rules or sources: {}",
                    known.join(", ")
                )));
            }
            ingest.room(bus)
        }
        Door::Source(cx) => cx.room(),
    };
    room.map_err(|full| backlog_full(&full))?;
    let events = match parse(state, headers, body).await {
        Ok(events) => events,
        Err(e) => {
            match &state.door {
                Door::Buses(ingest) => ingest.rejected(bus),
                Door::Source(cx) => cx.refused(),
            }
            return Err(e);
        }
    };
    let matched = publish(&state.door, bus, &events)
        .await
        .map_err(ApiError::unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": events.len(), "matched": matched })),
    ))
}

/// Publish; returns how many of the events matched a rule (`None` where the door
/// does not say).
async fn publish(door: &Door, bus: &str, events: &[Event]) -> Result<Option<usize>, PublishError> {
    match door {
        Door::Buses(ingest) => Ok(Some(ingest.publish(bus, events).await?.matched)),
        Door::Source(cx) => cx.publish(events).await.map(|_| None),
    }
}

async fn parse(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<Event>, ApiError> {
    let mode = binding::mode(headers)?;
    let limit = match mode {
        Mode::Batch => state.max_batch_bytes,
        Mode::Binary | Mode::Structured => state.max_event_bytes,
    };
    let body = read_limited(body, limit, mode).await?;
    match mode {
        Mode::Binary => Ok(vec![binding::from_binary(headers, &body)?]),
        Mode::Structured => Ok(vec![binding::from_structured(&body)?]),
        Mode::Batch => binding::from_batch(&body, state.max_event_bytes),
    }
}

async fn read_limited(body: Body, limit: usize, mode: Mode) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let what = if mode == Mode::Batch {
            "the batch"
        } else {
            "the event"
        };
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("{what} is larger than the limit of {limit} bytes"),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("could not read the request body: {e}"),
            )
        }
    })
}
