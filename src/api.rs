//! The error answers of the admin API and the operations endpoints, in sluice's
//! one shape ([`error_body`]): a 4xx explains the caller's mistake; a 5xx says
//! only what the caller can do, and the detail goes to the log.

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sluice_router::error::{bearer_matches, error_body};

/// An HTTP error answer of the admin API.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A failure on sluice's side: logged in full, answered without internals.
    pub fn unavailable(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "Request failed.");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "internal error; retry later",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(error_body(self.code, &self.message, None)),
        )
            .into_response()
    }
}

/// Check `Authorization: Bearer <token>` against `expected`, when there is one.
pub fn check_bearer(headers: &HeaderMap, expected: Option<&str>) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if bearer_matches(given, expected) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        ))
    }
}
