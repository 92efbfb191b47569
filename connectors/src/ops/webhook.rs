//! The `webhook` source: any JSON posted to `POST /sources/{name}` becomes one
//! event, the body its `data`, its attributes from templates over the request
//! (see [`super::template`]). With `signature`, a request is first checked
//! (see [`super::signature`]): a bad or missing signature is a 401 naming why,
//! and nothing is kept.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_router::cloudevents::{EventBuilder, EventBuilderV10};
use sluice_router::event::Event;
use sluice_router::source::SourceContext;

use super::config::WebhookSourceConfig;
use super::signature::Verifier;
use super::template::RequestTemplate;
use crate::http::{ApiError, Webhook};
use crate::{BuildSource, BuiltSource, ConnectorError};

/// The default `type` of webhook events.
pub const DEFAULT_TYPE: &str = "sluice.webhook.received";

/// A webhook's checked settings: how a request becomes an event.
#[derive(Clone, Debug)]
pub struct Mapping {
    id: Option<RequestTemplate>,
    ty: Option<RequestTemplate>,
    source: Option<RequestTemplate>,
    subject: Option<RequestTemplate>,
    default_source: String,
    verifier: Option<Verifier>,
    max_event_bytes: usize,
}

fn unauthorized(why: String) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "bad_signature",
        format!("{why}; nothing was kept"),
    )
}

impl Mapping {
    /// From settings that passed validation, the secret read from the process
    /// environment.
    pub fn new(config: &WebhookSourceConfig, max_event_bytes: usize) -> Result<Self, String> {
        let template = |key: &str, t: Option<&String>| {
            t.map(|t| RequestTemplate::parse(t).map_err(|e| format!("{key}: {e}")))
                .transpose()
        };
        let verifier = config
            .signature
            .as_ref()
            .map(|s| {
                s.from_env()
                    .map_err(|e| format!("signature.secret_env: {e}"))
            })
            .transpose()?;
        Ok(Self {
            id: template("event_id", config.event_id.as_ref())?,
            ty: template("event_type", config.event_type.as_ref())?,
            source: template("event_source", config.event_source.as_ref())?,
            subject: template("event_subject", config.event_subject.as_ref())?,
            default_source: format!("sluice://webhook/{}", config.name),
            verifier,
            max_event_bytes,
        })
    }

    /// With a signing secret, for tests.
    #[cfg(test)]
    fn with_verifier(mut self, verifier: Verifier) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// The event of a request (its signature checked first), or the answer
    /// that refuses it. `now` is Unix seconds.
    pub fn event(&self, headers: &HeaderMap, body: &[u8], now: i64) -> Result<Event, ApiError> {
        if let Some(v) = &self.verifier {
            v.verify(headers, body, now).map_err(unauthorized)?;
        }
        if self.max_event_bytes > 0 && body.len() > self.max_event_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "the body ({} bytes) is larger than server.max_event_bytes ({})",
                    body.len(),
                    self.max_event_bytes
                ),
            ));
        }
        let data: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_event("body", format!("not JSON: {e}")))?;
        let render = |key: &'static str, t: &Option<RequestTemplate>| {
            t.as_ref()
                .map(|t| t.render(headers, &data))
                .transpose()
                .map_err(|e| ApiError::bad_event(key, e))
        };
        let id = match render("id", &self.id)? {
            Some(id) => id,
            None => hex::encode(Sha256::digest(body)),
        };
        let ty = render("type", &self.ty)?.unwrap_or_else(|| DEFAULT_TYPE.to_owned());
        let source = render("source", &self.source)?.unwrap_or_else(|| self.default_source.clone());
        let subject = render("subject", &self.subject)?;
        for (field, value) in [("id", &id), ("type", &ty), ("source", &source)] {
            if value.is_empty() {
                return Err(ApiError::bad_event(field, "is empty"));
            }
        }
        let mut builder = EventBuilderV10::new()
            .id(id)
            .source(source)
            .ty(ty)
            .time(chrono::Utc::now())
            .data("application/json", data);
        if let Some(subject) = subject {
            builder = builder.subject(subject);
        }
        builder
            .build()
            .map_err(|e| ApiError::bad_event("source", e.to_string()))
    }
}

#[derive(Clone)]
struct Hook {
    webhook: Webhook,
    mapping: std::sync::Arc<Mapping>,
}

impl BuildSource for WebhookSourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let mut webhook = Webhook::new(cx.clone());
        if self.signature.is_some() {
            // The signature is the proof; senders such as GitHub cannot send a
            // bearer token.
            webhook = webhook.signed();
        }
        let mapping =
            Mapping::new(self, webhook.max_event_bytes()).map_err(ConnectorError::config)?;
        let routes = Router::new().route("/", post(receive)).with_state(Hook {
            webhook,
            mapping: std::sync::Arc::new(mapping),
        });
        Ok(BuiltSource::routes(routes))
    }
}

async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let now = chrono::Utc::now().timestamp();
    hook.webhook
        .receive(&headers, body, |bytes| {
            hook.mapping
                .event(&headers, bytes, now)
                .map(|e| Some(vec![e]))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::signature::github_signature;
    use sluice_router::cloudevents::AttributesReader;

    fn mapping(yaml: &str) -> Mapping {
        let config: WebhookSourceConfig = serde_yaml::from_str(yaml).unwrap();
        Mapping::new(&config, 1024).unwrap()
    }

    #[test]
    fn defaults_hash_the_body() {
        let m = mapping("name: hook\n");
        let e = m.event(&HeaderMap::new(), br#"{"a": 1}"#, 0).unwrap();
        assert_eq!(e.ty(), DEFAULT_TYPE);
        assert_eq!(e.source().to_string(), "sluice://webhook/hook");
        assert_eq!(e.id().len(), 64);
        assert_eq!(e.subject(), None);
        let again = m.event(&HeaderMap::new(), br#"{"a": 1}"#, 0).unwrap();
        assert_eq!(again.id(), e.id());
        let err = m.event(&HeaderMap::new(), b"not json", 0).unwrap_err();
        assert_eq!(
            (err.status.as_u16(), err.field.as_deref()),
            (400, Some("body"))
        );
        let err = m.event(&HeaderMap::new(), &[b' '; 2000], 0).unwrap_err();
        assert_eq!(err.status.as_u16(), 413);
    }

    #[test]
    fn github_templates_and_signature() {
        let m = mapping(
            "name: gh\nevent_id: \"{header.x-github-delivery}\"\nevent_type: \"com.github.{header.x-github-event}\"\nevent_subject: \"{body.repository.full_name}\"\n",
        )
        .with_verifier(Verifier::Github {
            key: b"s3cret".to_vec(),
        });
        let body = br#"{"repository": {"full_name": "octo/hello"}}"#;
        let mut h = HeaderMap::new();
        h.insert("x-github-delivery", "d-1".parse().unwrap());
        h.insert("x-github-event", "push".parse().unwrap());
        let err = m.event(&h, body, 0).unwrap_err();
        assert_eq!(err.status.as_u16(), 401);
        assert!(err
            .message
            .contains("x-hub-signature-256 header is missing"));
        h.insert(
            "x-hub-signature-256",
            github_signature(b"s3cret", body).parse().unwrap(),
        );
        let e = m.event(&h, body, 0).unwrap();
        assert_eq!(e.id(), "d-1");
        assert_eq!(e.ty(), "com.github.push");
        assert_eq!(e.subject(), Some("octo/hello"));
        // Signed, but lacking a templated field: a 400 naming the attribute.
        let other = br#"{"zen": "hi"}"#;
        h.insert(
            "x-hub-signature-256",
            github_signature(b"s3cret", other).parse().unwrap(),
        );
        let err = m.event(&h, other, 0).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("subject"));
        assert!(
            err.message.contains("repository.full_name"),
            "{}",
            err.message
        );
    }
}
