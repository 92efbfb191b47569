//! The HTTP function target: one CloudEvent per request, binary mode by default,
//! or with `batch`, CloudEvents batches.

use std::time::Duration;

use async_trait::async_trait;
use axum::http::{HeaderName, HeaderValue};
use sluice_router::config::BindingMode;

use super::config::HttpTargetConfig;
use sluice_router::error::ErrorClass;
use sluice_router::event::Event;
use sluice_router::sink::{Answer, Sink, SinkError};

use super::binding;
use std::sync::Arc;

use crate::{BuildSink, ConnectorError};

/// Bytes of a failed response kept for the dead-letter record.
const EXCERPT_BYTES: usize = 512;

/// Delivers to an HTTP endpoint over a pooled, reused connection set.
pub struct HttpSink {
    client: reqwest::Client,
    url: reqwest::Url,
    mode: BindingMode,
    timeout: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
    retry_statuses: Vec<u16>,
    /// Whether requests carry CloudEvents batches.
    batches: bool,
}

impl HttpSink {
    pub fn new(config: &HttpTargetConfig) -> Result<Self, String> {
        let url = reqwest::Url::parse(&config.url).map_err(|e| format!("url: {e}"))?;
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| format!("header {name}: {e}"))?;
            let v = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.push((n, v));
        }
        let client = client(config.timeout, config.concurrency)?;
        Ok(Self {
            client,
            url,
            mode: config.mode,
            timeout: config.timeout,
            headers,
            retry_statuses: config.retry_statuses.clone(),
            batches: config.batch.is_some(),
        })
    }
}

#[async_trait]
impl Sink for HttpSink {
    /// One request per event (the dispatcher sends one at a time, up to the
    /// target's concurrency in parallel), or with `batch` one request for all of
    /// them, whose outcome is each event's.
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let results = self.deliver_answered(events, 0).await;
        results.into_iter().map(|r| r.map(|_| ())).collect()
    }

    /// As `deliver`, with each function's answer (a batch's one response
    /// answers no single event: batches answer `None`).
    async fn deliver_answered(
        &self,
        events: &[Event],
        max_body: usize,
    ) -> Vec<Result<Option<Answer>, SinkError>> {
        if self.batches {
            let result = match serde_json::to_vec(events) {
                Ok(body) => self.send(binding::BATCH, Vec::new(), body, 0).await,
                Err(e) => Err(SinkError::permanent(e.to_string())),
            };
            return vec![result.map(|_| None); events.len()];
        }
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let reply = self.call(event, max_body).await;
            results.push(reply.map(|r| (max_body > 0).then(|| answer(r))));
        }
        results
    }
}

/// A 2xx response, its body read up to the bound asked for.
struct Reply {
    status: u16,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
    truncated: bool,
}

/// What a function answered, as result destinations see it: a response that
/// is a valid CloudEvent (structured, or binary `ce-*` headers) is that event;
/// one that is not (or claims to be but is broken, or was cut at the bound) is
/// only status, content type and body.
fn answer(reply: Reply) -> Answer {
    let content_type = reply
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let event = match binding::mode(&reply.headers) {
        _ if reply.truncated => None,
        Ok(binding::Mode::Structured) => binding::from_structured(&reply.body).ok(),
        Ok(binding::Mode::Binary) => binding::from_binary(&reply.headers, &reply.body).ok(),
        _ => None,
    };
    Answer {
        status: reply.status,
        content_type,
        body: reply.body,
        truncated: reply.truncated,
        event,
    }
}

impl HttpSink {
    /// Call the endpoint with one event, keeping up to `max_body` bytes of a
    /// successful answer.
    async fn call(&self, event: &Event, max_body: usize) -> Result<Reply, SinkError> {
        match self.mode {
            BindingMode::Binary => {
                let (headers, body) = binding::to_binary(event);
                self.send("", headers, body, max_body).await
            }
            BindingMode::Structured => {
                let body =
                    serde_json::to_vec(event).map_err(|e| SinkError::permanent(e.to_string()))?;
                self.send(binding::STRUCTURED, Vec::new(), body, max_body)
                    .await
            }
        }
    }

    /// POST `body` with `content_type` (none: `headers` carry it) and `headers`,
    /// then the target's own headers; a failure says whether to retry. A 2xx
    /// answer's body is kept up to `max_body` bytes, a failure's up to
    /// [`EXCERPT_BYTES`].
    async fn send(
        &self,
        content_type: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
        max_body: usize,
    ) -> Result<Reply, SinkError> {
        let mut request = self.client.post(self.url.clone());
        if !content_type.is_empty() {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        for (n, v) in headers {
            request = request.header(n, v);
        }
        for (n, v) in &self.headers {
            request = request.header(n, v);
        }
        let mut response = request
            .body(body)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let keep = if status.is_success() {
            max_body
        } else {
            EXCERPT_BYTES
        };
        // Read the body (bounded) so the connection goes back to the pool.
        let mut kept = Vec::new();
        let mut truncated = false;
        while let Ok(Some(chunk)) = response.chunk().await {
            let take = keep.saturating_sub(kept.len()).min(chunk.len());
            kept.extend_from_slice(&chunk[..take]);
            truncated |= take < chunk.len();
        }
        if status.is_success() {
            return Ok(Reply {
                status: status.as_u16(),
                headers: response.headers().clone(),
                body: kept,
                truncated,
            });
        }
        let code = status.as_u16();
        let retryable = code == 408
            || code == 429
            || status.is_server_error()
            || self.retry_statuses.contains(&code);
        let mut error = SinkError::new(
            if retryable {
                ErrorClass::Transient
            } else {
                ErrorClass::Permanent
            },
            format!("HTTP {status}"),
        );
        error.status = Some(code);
        error.body_excerpt = Some(String::from_utf8_lossy(&kept).into_owned());
        error.retry_after = retry_after;
        Err(error)
    }
}

impl HttpSink {
    fn request_error(&self, e: reqwest::Error) -> SinkError {
        let message = if e.is_timeout() {
            format!("timed out after {}", humantime_secs(self.timeout))
        } else if e.is_connect() {
            format!("could not connect to {}: {}", self.url, root_cause(&e))
        } else {
            format!("request failed: {}", root_cause(&e))
        };
        SinkError::transient(message)
    }
}

/// The HTTP client of a target: `timeout` per request, up to `concurrency` idle
/// connections kept, no Nagle delay.
pub(crate) fn client(timeout: Duration, concurrency: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| e.to_string())
}

pub(crate) fn humantime_secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

pub(crate) fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// `Retry-After` as delay-seconds or an HTTP date.
pub(crate) fn parse_retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v.trim()).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    delta.to_std().ok()
}

impl BuildSink for HttpTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(
            HttpSink::new(self).map_err(ConnectorError::config)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retry_after_forms() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        assert!(parse_retry_after(&future).is_some_and(|d| d.as_secs() >= 28));
        assert_eq!(parse_retry_after("soon"), None);
    }
}
