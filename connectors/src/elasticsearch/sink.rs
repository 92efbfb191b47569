//! The Elasticsearch/OpenSearch target: one `_bulk` request per batch, settled per
//! document.

use std::ops::Range;
use std::time::Duration;

use super::config::{DocumentMode, ElasticsearchAuth, ElasticsearchTargetConfig};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode, Url};
use sluice_router::error::ErrorClass;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};
use sluice_router::transform::NameTemplate;

use super::bulk;
use crate::http::{humantime_secs, parse_retry_after, root_cause};
use std::sync::Arc;

use crate::{BuildSink, ConnectorError};

/// Bytes of a failed answer kept for the dead-letter record.
const EXCERPT_BYTES: usize = 512;

/// Only what sluice reads from each item of a bulk answer, so that a batch of
/// successful writes is answered in a few bytes per document.
const FILTER_PATH: &str = "errors,items.*.status,items.*.error";

/// Indexes batches of events through `_bulk` over a pooled connection set.
pub struct ElasticsearchSink {
    client: reqwest::Client,
    /// `{url}/`, for the readiness check.
    root: Url,
    /// `{url}/_bulk?filter_path=...[&pipeline=...]`.
    bulk: Url,
    /// The cluster URL without credentials, for messages.
    shown: String,
    index: NameTemplate,
    auth: Auth,
    document: DocumentMode,
    timeout: Duration,
}

enum Auth {
    None,
    Basic {
        username: String,
        password: String,
    },
    /// A ready `Authorization` header (API key).
    Header(HeaderValue),
}

impl ElasticsearchSink {
    pub fn new(config: &ElasticsearchTargetConfig) -> Result<Self, String> {
        let mut root = Url::parse(&config.url).map_err(|e| format!("url: {e}"))?;
        if !root.path().ends_with('/') {
            // `https://host/es` is a cluster behind a path prefix: keep the prefix.
            root.set_path(&format!("{}/", root.path()));
        }
        let mut bulk = root.join("_bulk").map_err(|e| format!("url: {e}"))?;
        {
            let mut query = bulk.query_pairs_mut();
            query.append_pair("filter_path", FILTER_PATH);
            if let Some(pipeline) = &config.pipeline {
                query.append_pair("pipeline", pipeline);
            }
        }
        let mut shown = root.clone();
        // Only URLs that cannot hold credentials refuse these; nothing to hide then.
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let auth = match &config.auth {
            None => Auth::None,
            Some(ElasticsearchAuth::Basic { username, password }) => Auth::Basic {
                username: username.clone(),
                password: password.clone(),
            },
            Some(ElasticsearchAuth::ApiKey { api_key }) => {
                let mut value = HeaderValue::from_str(&format!("ApiKey {api_key}"))
                    .map_err(|_| "auth.api_key: holds characters a header cannot carry")?;
                value.set_sensitive(true);
                Auth::Header(value)
            }
        };
        let client = crate::http::client(config.timeout, config.concurrency)?;
        Ok(Self {
            client,
            root,
            bulk,
            shown: shown.to_string(),
            index: NameTemplate::parse(&config.index).map_err(|e| format!("index: {e}"))?,
            auth,
            document: config.document,
            timeout: config.timeout,
        })
    }

    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Auth::None => request,
            Auth::Basic { username, password } => request.basic_auth(username, Some(password)),
            Auth::Header(value) => request.header(AUTHORIZATION, value.clone()),
        }
    }

    /// Why a request got no answer, in a user's words.
    fn failure(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            format!("timed out after {}", humantime_secs(self.timeout))
        } else {
            root_cause(e)
        }
    }

    /// Send one `_bulk` request holding `count` documents; `Err` when the request
    /// as a whole failed, with the far side's status when it gave one.
    async fn post(
        &self,
        body: Bytes,
        count: usize,
    ) -> Result<Vec<Result<(), SinkError>>, SinkError> {
        let request = self
            .authorize(self.client.post(self.bulk.clone()))
            .header(CONTENT_TYPE, "application/x-ndjson")
            .body(body);
        let response = request.send().await.map_err(|e| {
            SinkError::transient(if e.is_connect() {
                format!("cannot reach {}: {}", self.shown, self.failure(&e))
            } else {
                format!("bulk request failed: {}", self.failure(&e))
            })
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let answer = response.bytes().await.map_err(|e| {
            SinkError::transient(format!(
                "reading the bulk answer failed: {}",
                self.failure(&e)
            ))
        })?;
        let failed = |message: String| {
            let mut error = SinkError::transient(message);
            error.status = Some(status.as_u16());
            error.body_excerpt = Some(excerpt(&answer));
            error.retry_after = retry_after;
            error
        };
        if status.is_success() {
            return bulk::parse_response(&answer, count).map_err(|reason| {
                failed(format!(
                    "the answer to _bulk is not a bulk response: {reason}"
                ))
            });
        }
        let reason = bulk::request_error_reason(&answer).unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("no reason given")
                .to_owned()
        });
        Err(failed(match status {
            StatusCode::UNAUTHORIZED => {
                format!("HTTP 401: the cluster did not accept the credentials in `auth` ({reason})")
            }
            StatusCode::FORBIDDEN => {
                format!("HTTP 403: the credentials in `auth` may not write here ({reason})")
            }
            _ => format!("HTTP {}: {reason}", status.as_u16()),
        }))
    }
}

/// The start of a body, as text.
fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(EXCERPT_BYTES)]).into_owned()
}

#[async_trait]
impl Sink for ElasticsearchSink {
    /// One `_bulk` request for the batch. Events whose index name or document
    /// cannot be made are rejected on their own and not sent. A request the whole
    /// of which failed (no answer, 429, 5xx, auth, or an answer that is not a bulk
    /// response) is retried for every event in it: nothing in one event can make
    /// a well-formed bulk request fail as a whole. A request the cluster finds too
    /// large (413) is sent again in halves; a single document that is too large is
    /// rejected.
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let now = chrono::Utc::now();
        let mut results = Vec::with_capacity(events.len());
        let mut body = Vec::new();
        // (position in `events`, end of its lines in `body`) of each event sent.
        let mut sent: Vec<(usize, usize)> = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            match bulk::append(&mut body, event, &self.index, self.document, now) {
                Ok(()) => {
                    sent.push((i, body.len()));
                    results.push(Ok(()));
                }
                Err(reason) => results.push(Err(SinkError::permanent(reason))),
            }
        }
        let body = Bytes::from(body);
        // Ranges of `sent` still to send, the last first.
        let mut parts: Vec<Range<usize>> = Vec::new();
        parts.push(0..sent.len());
        while let Some(part) = parts.pop() {
            if part.is_empty() {
                continue;
            }
            let from = part.start.checked_sub(1).map_or(0, |before| sent[before].1);
            let to = sent[part.end - 1].1;
            let outcome = self.post(body.slice(from..to), part.len()).await;
            let per_event: Vec<Result<(), SinkError>> = match outcome {
                Ok(items) => items,
                Err(error) if error.status == Some(413) && part.len() > 1 => {
                    tracing::debug!(
                        documents = part.len(),
                        bytes = to - from,
                        "Bulk request too large; sending it in halves."
                    );
                    let middle = part.start + part.len() / 2;
                    parts.push(middle..part.end);
                    parts.push(part.start..middle);
                    continue;
                }
                Err(mut error) => {
                    if error.status == Some(413) {
                        error.class = ErrorClass::Permanent;
                        error.message = format!(
                            "HTTP 413: the document is larger than the server takes in one request ({} bytes)",
                            to - from
                        );
                    }
                    vec![Err(error); part.len()]
                }
            };
            for (k, result) in part.zip(per_event) {
                results[sent[k].0] = result;
            }
        }
        results
    }

    /// `GET {url}/`: the cluster answers, and takes the credentials. A 403 there
    /// passes: credentials allowed to write documents but not to read cluster
    /// information are a common, sound setup.
    /// Reachable and set up; otherwise why not (checked again until it is).
    async fn check(&self) -> Result<(), SinkError> {
        self.readiness().await.map_err(SinkError::transient)
    }
}

impl ElasticsearchSink {
    /// Why the far side cannot take events yet, if it cannot.
    async fn readiness(&self) -> Result<(), String> {
        let response = self
            .authorize(self.client.get(self.root.clone()))
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {}", self.shown, self.failure(&e)))?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            return Err(match self.auth {
                Auth::None => format!(
                    "{} answered HTTP 401: it needs credentials; set `auth`",
                    self.shown
                ),
                _ => format!(
                    "{} answered HTTP 401: it did not accept the credentials in `auth`",
                    self.shown
                ),
            });
        }
        if status.is_server_error() {
            let answer = response.bytes().await.unwrap_or_default();
            let reason = bulk::request_error_reason(&answer).unwrap_or_else(|| excerpt(&answer));
            return Err(format!(
                "{} answered HTTP {}: {reason}",
                self.shown,
                status.as_u16()
            ));
        }
        Ok(())
    }
}

impl BuildSink for ElasticsearchTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(
            ElasticsearchSink::new(self).map_err(ConnectorError::config)?,
        ))
    }
}
