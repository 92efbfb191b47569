//! HTTP ingest: `POST /events` (bus `default`) and `POST /buses/{bus}/events`.
//! `202 {"accepted": N}` only after the events are durable in every matching
//! subscription; every bad input gets a 4xx naming the problem.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use sluice_router::engine::Engine;

use super::binding::{self, Mode};
use super::error::check_bearer;
use super::ApiError;

/// What the ingest handlers need.
#[derive(Clone)]
pub struct IngestState {
    pub engine: Arc<Engine>,
    /// Buses that accept events: `default`, every bus a rule or source names.
    pub buses: Arc<HashSet<String>>,
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub token: Option<Arc<str>>,
}

/// The ingest routes.
pub fn routes(state: IngestState) -> Router {
    Router::new()
        .route("/events", post(default_bus))
        .route("/buses/{bus}/events", post(named_bus))
        .with_state(state)
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

async fn ingest(
    state: &IngestState,
    bus: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    check_bearer(headers, state.token.as_deref())?;
    if !state.buses.contains(bus) {
        let mut known: Vec<_> = state.buses.iter().map(String::as_str).collect();
        known.sort_unstable();
        return Err(ApiError::not_found(format!(
            "unknown bus {bus:?}; buses with rules or sources: {}",
            known.join(", ")
        )));
    }
    let events = match parse(state, headers, body).await {
        Ok(events) => events,
        Err(e) => {
            state.engine.metrics.rejected(bus, "http").inc();
            return Err(e);
        }
    };
    state
        .engine
        .publish(bus, "http", &events)
        .await
        .map_err(ApiError::unavailable)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": events.len() })),
    ))
}

async fn parse(
    state: &IngestState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<sluice_router::event::Event>, ApiError> {
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
