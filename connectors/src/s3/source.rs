//! The S3 source, `mode: notify`: `POST /sources/{name}/notifications` takes the
//! store's bucket notifications (see [`super::notification`]) through HTTP
//! ingest's door (token, body limits, error JSON) and answers `202` once the
//! events are durable.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use sluice_router::source::SourceContext;

use super::notification::{self, Mapping, Notice};
use super::source_config::{S3SourceConfig, S3SourceMode};
use crate::http::{ApiError, Webhook};
use crate::{BuildSource, BuiltSource, ConnectorError};

#[derive(Clone)]
struct Notifications {
    webhook: Webhook,
    mapping: Mapping,
}

impl BuildSource for S3SourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        if self.mode != S3SourceMode::Notify {
            return Err(ConnectorError::config("only `mode: notify` is built"));
        }
        let webhook = Webhook::new(cx.clone());
        let mapping = Mapping {
            bucket: self.bucket.clone(),
            event_source: self.event_source.clone(),
            max_event_bytes: webhook.max_event_bytes(),
        };
        let routes = Router::new()
            .route("/notifications", post(notifications))
            .with_state(Notifications { webhook, mapping });
        Ok(BuiltSource::routes(routes))
    }
}

async fn notifications(
    State(state): State<Notifications>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    state
        .webhook
        .receive(&headers, body, |bytes| {
            match notification::parse(bytes, &state.mapping) {
                Ok(Notice::Test) => Ok(None),
                Ok(Notice::Events(events)) => Ok(Some(events)),
                Err(e) => Err(ApiError::bad_event(e.field, e.message)),
            }
        })
        .await
}
