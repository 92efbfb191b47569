//! The error answers of HTTP ingest and of sources' routes, in sluice's one shape
//! ([`error_body`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::OnceLock;

use sluice_router::error::{bearer_matches, error_body};
use sluice_router::throttle::{Level, Throttle, Who};

/// An HTTP error answer. A 4xx explains the caller's mistake; a 5xx says only
/// what the caller can do, and the detail goes to the log.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The event field at fault, for bad events.
    pub field: Option<String>,
    /// Seconds to wait before retrying (`Retry-After`), for 503s that pass.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    pub fn bad_event(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_event",
            message: format!("{field}: {message}"),
            field: Some(field),
            retry_after: None,
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// A failure on sluice's side: logged in full (the same failure once with a
    /// count, as clients retry), answered without internals.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        static LOG: OnceLock<Throttle> = OnceLock::new();
        LOG.get_or_init(|| Throttle::new(Who::Source("http".into())))
            .log(Level::Error, &format!("Request failed: {detail}"));
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "internal error; the request was not accepted, retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = error_body(self.code, &self.message, self.field.as_deref());
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

/// Check `Authorization: Bearer <token>` against `expected`, in constant time.
pub fn check_bearer(
    headers: &axum::http::HeaderMap,
    expected: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_matches(given, expected) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}
