//! The S3 source. `mode: notify`: `POST /sources/{name}/notifications` takes the
//! store's bucket notifications (see [`super::notification`]) through HTTP
//! ingest's door (token, body limits, error JSON) and answers `202` once the
//! events are durable; with `content: inline` each object is read before, and a
//! read that keeps failing is a `503` (the store sends the notification again).
//! `mode: poll`: see [`super::poll`].

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use sluice_router::cloudevents::{AttributesReader, Data};
use sluice_router::event::Event;
use sluice_router::source::SourceContext;

use std::sync::Arc;
use std::time::Duration;

use super::client;
use super::content::{Inline, Read};
use super::notification::{self, Mapping, Notice};
use super::poll::Poller;
use super::source_config::{Content, S3SourceConfig, S3SourceMode};
use crate::http::{ApiError, Webhook};
use crate::{BuildSource, BuiltSource, ConnectorError};

/// Time allowed for one request to the store (a page of the listing, a GET).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at reading an object for a notification before answering `503`.
const NOTIFY_READ_TRIES: u32 = 3;

#[derive(Clone)]
struct Notifications {
    webhook: Webhook,
    mapping: Mapping,
    inline: Option<Inline>,
}

impl BuildSource for S3SourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let max_event_bytes = usize::try_from(cx.server().max_event_bytes).unwrap_or(usize::MAX);
        let mapping = Mapping {
            bucket: self.bucket.clone(),
            event_source: self.event_source.clone(),
            max_event_bytes,
        };
        let client = if self.reads_bucket() {
            let bucket = self.bucket.as_deref().unwrap_or_default();
            let (store, place) = client::build(&client::Place {
                endpoint: self.endpoint.as_deref(),
                region: self.region(),
                bucket,
                path_style: self.path_style(),
                timeout: REQUEST_TIMEOUT,
            })
            .map_err(ConnectorError::config)?;
            Some((Arc::new(store), place))
        } else {
            None
        };
        let inline = match (&client, self.content) {
            (Some((store, _)), Content::Inline) => Some(Inline::new(
                store.clone(),
                self.bucket.as_deref().unwrap_or_default(),
                max_event_bytes,
            )),
            _ => None,
        };
        match (self.mode, client) {
            (S3SourceMode::Poll, Some((store, place))) => {
                let poller = Poller::new(self, store, place, mapping, inline);
                Ok(BuiltSource {
                    task: Some(Box::new(poller)),
                    routes: None,
                })
            }
            (S3SourceMode::Poll, None) => Err(ConnectorError::config("polling needs a bucket")),
            (S3SourceMode::Notify, _) => {
                let webhook = Webhook::new(cx.clone());
                let routes = Router::new()
                    .route("/notifications", post(notifications))
                    .with_state(Notifications {
                        webhook,
                        mapping,
                        inline,
                    });
                Ok(BuiltSource::routes(routes))
            }
        }
    }
}

async fn notifications(
    State(state): State<Notifications>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state
        .webhook
        .receive_finished(
            &headers,
            body,
            |bytes| match notification::parse(bytes, &state.mapping) {
                Ok(Notice::Test) => Ok(None),
                Ok(Notice::Events(events)) => Ok(Some(events)),
                Err(e) => Err(ApiError::bad_event(e.field, e.message)),
            },
            |events| read_objects(state.inline.as_ref(), events),
        )
        .await
}

/// With `content: inline`, each created object's bytes into its event (see
/// [`super::content`]); an object that cannot be read after a few tries makes
/// the whole notification a `503`, so the store sends it again.
async fn read_objects(
    inline: Option<&Inline>,
    mut events: Vec<Event>,
) -> Result<Vec<Event>, ApiError> {
    let Some(inline) = inline else {
        return Ok(events);
    };
    for event in &mut events {
        if !event.ty().starts_with("com.amazonaws.s3.ObjectCreated:") {
            continue;
        }
        let key = event.subject().unwrap_or_default().to_owned();
        let size = record_size(event);
        let mut tries = 0;
        loop {
            match inline.fill(event, &key, size).await {
                Read::Done => break,
                Read::Failed(why) => {
                    tries += 1;
                    if tries >= NOTIFY_READ_TRIES {
                        tracing::warn!(key = %key, error = %why, "Reading a notified object failed; answering 503.");
                        return Err(ApiError::unavailable(why));
                    }
                    tokio::time::sleep(Duration::from_millis(100 << tries)).await;
                }
            }
        }
    }
    Ok(events)
}

/// `s3.object.size` of the record an event carries (0 when it has none).
fn record_size(event: &Event) -> u64 {
    match event.data() {
        Some(Data::Json(record)) => record["s3"]["object"]["size"].as_u64().unwrap_or(0),
        _ => 0,
    }
}
