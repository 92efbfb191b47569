//! sluice's one HTTP server, hardened for clients that misbehave: a cap on open
//! connections (answered 503 and closed above it), a deadline for each request's
//! head (which also closes keep-alive connections left idle) and for the whole
//! request, bounded URIs and header blocks answered with JSON errors, and HTTP/1
//! only (HTTP/2 is not served). Bodies are bounded by the handlers that read
//! them (ingest: declared and actual size, and a budget of body bytes in flight).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use sluice_router::config::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::api::ApiError;

mod bare;

/// Request heads larger than this get hyper's own 431 (made JSON by [`bare`]); the
/// middleware below answers from `server.max_header_bytes` up to here.
const HARD_HEADER_LIMIT: usize = 256 * 1024;

/// The answer to a connection over `server.max_connections`, written before it
/// is closed.
fn busy() -> Vec<u8> {
    let body = sluice_router::error::error_body(
        "too_many_connections",
        "too many open connections; retry later",
        None,
    )
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serve `app` on `listener` until `shutdown`, then let requests in flight finish
/// (for up to `server.shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    server: &ServerConfig,
    shutdown: CancellationToken,
) {
    let limits = Limits::from(server);
    let app = app.layer(axum::middleware::from_fn_with_state(limits, guard));
    let connections = Arc::new(Semaphore::new(server.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout)
        .max_buf_size(HARD_HEADER_LIMIT + 64 * 1024)
        .max_header_size(HARD_HEADER_LIMIT)
        .keep_alive(true);
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (mut stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait instead of spinning.
                tracing::warn!(error = %e, "Accepting a connection failed.");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "Too many connections; refused.");
            tokio::spawn(async move {
                let answer = busy();
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), stream.write_all(&answer)).await;
            });
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let conn = builder.serve_connection(TokioIo::new(bare::JsonErrors::new(stream)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "Connection ended with an error.");
            }
            drop(permit);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(server.shutdown_grace) => {
            tracing::warn!("Requests still in flight at shutdown were cut off.");
        }
    }
}

/// What [`guard`] checks.
#[derive(Clone, Copy)]
struct Limits {
    max_uri_bytes: usize,
    max_header_bytes: usize,
    request_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(s: &ServerConfig) -> Self {
        Self {
            max_uri_bytes: s.max_uri_bytes,
            max_header_bytes: s.max_header_bytes.min(HARD_HEADER_LIMIT),
            request_timeout: s.request_timeout,
        }
    }
}

/// URI and header sizes answered with JSON errors, and a deadline for the whole
/// request (a body sent too slowly ends in 408, freeing what it held).
async fn guard(
    axum::extract::State(limits): axum::extract::State<Limits>,
    request: Request,
    next: Next,
) -> Response {
    let uri = request.uri().to_string().len();
    if uri > limits.max_uri_bytes {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request URI is {uri} bytes, more than server.max_uri_bytes ({})",
                limits.max_uri_bytes
            ),
        )
        .into_response();
    }
    let headers: usize = request
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > limits.max_header_bytes {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request's headers are {headers} bytes, more than server.max_header_bytes ({})",
                limits.max_header_bytes
            ),
        )
        .into_response();
    }
    match tokio::time::timeout(limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request took longer than server.request_timeout ({}) and was abandoned; retry it (events already accepted are dropped as replays by their source and id)",
                humantime::format_duration(limits.request_timeout)
            ),
        )
        .into_response(),
    }
}
