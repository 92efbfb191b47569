//! The admin API under `/api/`: rules, subscriptions with depth and counters,
//! sources with their state, and dead-letter listing and redrive.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_connectors::SourceConfig;
use sluice_router::config::SourceEntry;
use sluice_router::engine::{DeadLetter, StoreError, SubscriptionInfo};

use crate::api::{check_bearer, ApiError};
use crate::serve::AppState;

pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/rules", get(rules))
        .route("/subscriptions", get(subscriptions))
        .route("/subscriptions/{name}", get(subscription))
        .route("/subscriptions/{name}/dead-letters", get(dead_letters))
        .route("/subscriptions/{name}/dead-letters/redrive", post(redrive))
        .route("/subscriptions/{name}/pause", post(pause))
        .route("/subscriptions/{name}/resume", post(resume))
        .route("/sources", get(sources))
        .route("/sources/{name}", get(source))
        .route("/sources/{name}/dead-letters", get(source_dead_letters))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn auth(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: axum::extract::Request,
    next: Next,
) -> Result<Response, ApiError> {
    check_bearer(
        &headers,
        state.validated.config.server.auth.admin_token.as_deref(),
    )?;
    Ok(next.run(request).await)
}

fn no_subscription(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no subscription {name:?}; subscriptions are named <rule>.<target>"
    ))
}

fn describe(sub: &SubscriptionInfo) -> Value {
    json!({
        "name": sub.name,
        "bus": sub.bus,
        "rule": sub.rule,
        "target": sub.target,
        "stats": sub.stats,
        "not_ready": sub.not_ready,
        "paused": sub.paused,
        "breaker": sub.breaker,
    })
}

async fn rules(State(state): State<AppState>) -> Json<Value> {
    let rules: Vec<Value> = state
        .validated
        .config
        .rules
        .iter()
        .map(|r| json!({"name": r.name, "bus": r.bus, "filter": r.filter, "targets": r.targets}))
        .collect();
    Json(json!({ "rules": rules }))
}

async fn subscriptions(State(state): State<AppState>) -> Json<Value> {
    let subs: Vec<Value> = state.engine.subscriptions().iter().map(describe).collect();
    Json(json!({ "subscriptions": subs }))
}

async fn subscription(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sub = state
        .engine
        .subscription(&name)
        .ok_or_else(|| no_subscription(&name))?;
    Ok(Json(describe(&sub)))
}

/// A source as `/api/sources` shows it: its name, type and bus, and what it
/// reports about itself (HTTP ingest reports nothing: it runs with the server).
fn describe_source(state: &AppState, source: &SourceConfig) -> Value {
    let mut out = state
        .engine
        .source_status(source.spec().name())
        .unwrap_or_else(|| json!({"state": "running"}));
    if let Some(fields) = out.as_object_mut() {
        fields.insert("name".into(), json!(source.spec().name()));
        fields.insert("type".into(), json!(source.spec().kind()));
        fields.insert("bus".into(), json!(source.spec().bus()));
    }
    out
}

async fn sources(State(state): State<AppState>) -> Json<Value> {
    let sources: Vec<Value> = state
        .validated
        .config
        .sources
        .iter()
        .map(|s| describe_source(&state, s))
        .collect();
    Json(json!({ "sources": sources }))
}

async fn source(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let source = state
        .validated
        .config
        .sources
        .iter()
        .find(|s| s.spec().name() == name)
        .ok_or_else(|| ApiError::not_found(format!("no source {name:?}")))?;
    Ok(Json(describe_source(&state, source)))
}

#[derive(Deserialize)]
struct Page {
    after: Option<u64>,
    limit: Option<usize>,
}

impl Page {
    /// Dead letters per page: 100 unless asked, at most 1,000.
    fn limit(&self) -> usize {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

fn time(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn letter_json(letter: &DeadLetter) -> Value {
    let event: Value = serde_json::from_str(letter.record.event.get()).unwrap_or(Value::Null);
    json!({
        "seq": letter.seq,
        "dead_lettered_at": time(letter.dead_lettered_ms),
        "reason": letter.reason,
        "last_status": letter.last_status,
        "body_excerpt": letter.body_excerpt,
        "attempts": letter.record.attempts.iter().map(|a| time(*a)).collect::<Vec<_>>(),
        "enqueued_at": time(letter.record.enqueued_ms),
        "event": event,
    })
}

async fn dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.limit();
    let letters = state
        .engine
        .dead_letters(&name, page.after, limit)
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| no_subscription(&name))?;
    let (letters, next) = page_of(letters, limit);
    Ok(Json(json!({
        "subscription": name,
        "dead_letters": letters,
        "next_after": next,
    })))
}

/// Records a source refused as malformed (`malformed: reject`).
async fn source_dead_letters(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let known = state.validated.config.sources.iter();
    if !known.map(|s| s.spec().name()).any(|n| n == name) {
        return Err(ApiError::not_found(format!("no source {name:?}")));
    }
    let limit = page.limit();
    let letters: Result<Vec<DeadLetter>, StoreError> =
        state.engine.source_dead_letters(&name, page.after, limit);
    let (letters, next) = page_of(letters.map_err(ApiError::unavailable)?, limit);
    Ok(Json(json!({
        "source": name,
        "dead_letters": letters,
        "next_after": next,
    })))
}

/// `POST /api/subscriptions/{name}/pause`: hold its deliveries (durably).
async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, true).await
}

/// `POST /api/subscriptions/{name}/resume`.
async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, false).await
}

async fn set_paused(state: &AppState, name: &str, paused: bool) -> Result<Json<Value>, ApiError> {
    state
        .engine
        .set_paused(name, paused)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| no_subscription(name))?;
    Ok(Json(json!({ "name": name, "paused": paused })))
}

/// One page of a dead-letter list, and the `after` of the next page.
fn page_of(letters: Vec<DeadLetter>, limit: usize) -> (Vec<Value>, Option<u64>) {
    let next = (letters.len() == limit)
        .then(|| letters.last().map(|l| l.seq))
        .flatten();
    (letters.iter().map(letter_json).collect(), next)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    /// Only these dead letters (by `seq`); all when absent.
    seqs: Option<Vec<u64>>,
}

async fn redrive(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RedriveRequest = if body.is_empty() {
        RedriveRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "bad_request",
                format!("body must be {{\"seqs\": [..]}} or empty: {e}"),
            )
        })?
    };
    let moved = state
        .engine
        .redrive(&name, request.seqs.as_deref())
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| no_subscription(&name))?;
    Ok(Json(json!({ "redriven": moved })))
}
