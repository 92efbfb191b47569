//! Reading a request body without letting clients hold unbounded memory.
//!
//! A body declared larger than the limit (`content-length`) is refused before a
//! byte of it is read, so a client that sent `Expect: 100-continue` gets its 413
//! instead of a `100 Continue`. Every body being read takes its bytes from one
//! budget shared by all connections (`server.max_body_bytes_in_flight`), held
//! until its request is answered; with `server.max_connections` and
//! `server.request_timeout` that bounds what slow or stalled uploads can hold.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// How long a body waits for room in the budget before it is refused.
const BUDGET_WAIT: Duration = Duration::from_secs(1);

/// The budget of body bytes in flight, for the whole process (one server).
static BUDGET: OnceLock<Arc<Semaphore>> = OnceLock::new();

/// The budget, sized by the first caller.
fn budget(bytes: u64) -> Arc<Semaphore> {
    BUDGET
        .get_or_init(|| {
            let permits = usize::try_from(bytes)
                .unwrap_or(usize::MAX)
                .min(Semaphore::MAX_PERMITS);
            Arc::new(Semaphore::new(permits))
        })
        .clone()
}

/// A body read in full, and its share of the budget (returned when dropped).
pub(super) struct Read {
    pub bytes: Bytes,
    _held: Vec<OwnedSemaphorePermit>,
}

/// `size`: what the request declared, when it did.
fn too_large(what: &str, size: Option<u64>, limit: usize) -> ApiError {
    let size = size.map_or(String::new(), |s| format!(" ({s} bytes)"));
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("{what}{size} is larger than the limit of {limit} bytes"),
    )
}

fn busy() -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        "too many request bodies in flight (server.max_body_bytes_in_flight); retry later",
    );
    e.retry_after = Some(1);
    e
}

async fn take(budget: &Arc<Semaphore>, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
    let n = u32::try_from(bytes).map_err(|_| busy())?;
    match tokio::time::timeout(BUDGET_WAIT, budget.clone().acquire_many_owned(n)).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(busy()),
    }
}

/// Read `body` of at most `limit` bytes (`what` names it in errors), within the
/// process's budget of `in_flight` bytes.
pub(super) async fn read(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    in_flight: u64,
    what: &str,
) -> Result<Read, ApiError> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(size) = declared.filter(|s| *s > limit as u64) {
        return Err(too_large(what, Some(size), limit));
    }
    let budget = budget(in_flight);
    let mut held = Vec::new();
    if let Some(size) = declared {
        held.push(take(&budget, size as usize).await?);
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(0, |s| s as usize));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("could not read the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(too_large(what, None, limit));
        }
        if declared.is_none() {
            held.push(take(&budget, data.len()).await?);
        }
        buf.extend_from_slice(&data);
    }
    Ok(Read {
        bytes: buf.freeze(),
        _held: held,
    })
}
