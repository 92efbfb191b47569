//! The `alertmanager` source: Prometheus Alertmanager's webhook (version 4)
//! posted to `POST /sources/{name}/alerts`, each alert an event.
//!
//! - `type`: `io.prometheus.alert.firing` or `io.prometheus.alert.resolved`;
//! - `subject`: the alert's `alertname` label; `time`: `startsAt` (firing) or
//!   `endsAt` (resolved);
//! - `id`: `{fingerprint}-{status}-{startsAt}`. Alertmanager sends a firing
//!   alert again on every `repeat_interval` and after its own restarts: the same
//!   id, so within `server.dedupe_window` sluice keeps it once;
//! - `data`: the alert (`status`, `labels`, `annotations`, `startsAt`, `endsAt`,
//!   `generatorURL`, `fingerprint`) and `group` (`key`, `receiver`, `status`,
//!   `labels`, `commonLabels`, `commonAnnotations`, `externalURL`,
//!   `truncatedAlerts`).
//!
//! Every alert is checked before any is published: a bad body is a 400 naming
//! the field (`alerts[3].fingerprint`) and nothing is kept.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice_router::cloudevents::{EventBuilder, EventBuilderV10};
use sluice_router::event::Event;
use sluice_router::source::SourceContext;

use super::config::AlertmanagerSourceConfig;
use crate::http::{ApiError, Webhook};
use crate::{BuildSource, BuiltSource, ConnectorError};

/// A field of the body at fault, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BodyError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> BodyError {
    BodyError {
        field: field.into(),
        message: message.into(),
    }
}

/// An object of strings (labels, annotations); absent is empty where `optional`.
fn strings(parent: &Value, at: &str, key: &str, optional: bool) -> Result<Value, BodyError> {
    let field = if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    };
    if optional && parent.get(key).is_none_or(Value::is_null) {
        return Ok(json!({}));
    }
    let map = match parent.get(key) {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err(field, "must be an object of strings")),
        None => return Err(err(field, "is missing")),
    };
    if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
        return Err(err(format!("{field}.{k}"), "must be a string"));
    }
    Ok(Value::Object(map.clone()))
}

fn text<'a>(parent: &'a Value, at: &str, key: &str) -> Result<&'a str, BodyError> {
    let field = || {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    match parent.get(key) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(err(field(), "must be a string")),
        None => Err(err(field(), "is missing")),
    }
}

fn instant(parent: &Value, at: &str, key: &str) -> Result<DateTime<Utc>, BodyError> {
    let s = text(parent, at, key)?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            err(
                format!("{at}.{key}"),
                format!("{s:?} is not an RFC 3339 time: {e}"),
            )
        })
}

/// Parse a webhook body into one event per alert, every alert checked first.
pub fn parse(body: &[u8], source: &str, max_event_bytes: usize) -> Result<Vec<Event>, BodyError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| err("body", format!("not JSON: {e}")))?;
    if !v.is_object() {
        return Err(err(
            "body",
            "must be a JSON object (Alertmanager's webhook)",
        ));
    }
    match v.get("version") {
        Some(Value::String(s)) if s == "4" => {}
        Some(other) => {
            return Err(err(
                "version",
                format!("{other} is not supported; sluice reads version \"4\""),
            ))
        }
        None => return Err(err("version", "is missing")),
    }
    let group = json!({
        "key": text(&v, "", "groupKey")?,
        "receiver": text(&v, "", "receiver")?,
        "status": text(&v, "", "status")?,
        "labels": strings(&v, "", "groupLabels", true)?,
        "commonLabels": strings(&v, "", "commonLabels", true)?,
        "commonAnnotations": strings(&v, "", "commonAnnotations", true)?,
        "externalURL": v.get("externalURL").and_then(Value::as_str).unwrap_or_default(),
        "truncatedAlerts": v.get("truncatedAlerts").and_then(Value::as_u64).unwrap_or(0),
    });
    let alerts = match v.get("alerts") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(err("alerts", "must be an array")),
        None => return Err(err("alerts", "is missing")),
    };
    let mut events = Vec::with_capacity(alerts.len());
    for (i, alert) in alerts.iter().enumerate() {
        let at = format!("alerts[{i}]");
        if !alert.is_object() {
            return Err(err(at, "must be an object"));
        }
        let status = text(alert, &at, "status")?;
        if status != "firing" && status != "resolved" {
            return Err(err(
                format!("{at}.status"),
                format!("{status:?} is neither \"firing\" nor \"resolved\""),
            ));
        }
        let labels = strings(alert, &at, "labels", false)?;
        let alertname = labels
            .get("alertname")
            .and_then(Value::as_str)
            .ok_or_else(|| err(format!("{at}.labels.alertname"), "is missing"))?
            .to_owned();
        let annotations = strings(alert, &at, "annotations", true)?;
        let fingerprint = text(alert, &at, "fingerprint")?;
        if fingerprint.is_empty() {
            return Err(err(format!("{at}.fingerprint"), "must not be empty"));
        }
        let starts = instant(alert, &at, "startsAt")?;
        let time = if status == "resolved" {
            instant(alert, &at, "endsAt")?
        } else {
            starts
        };
        let generator = alert.get("generatorURL").and_then(Value::as_str);
        let data = json!({
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": alert.get("startsAt"),
            "endsAt": alert.get("endsAt"),
            "generatorURL": generator,
            "fingerprint": fingerprint,
            "group": group,
        });
        let size = data.to_string().len();
        if max_event_bytes > 0 && size > max_event_bytes {
            return Err(err(
                at,
                format!("the alert's event ({size} bytes) is larger than server.max_event_bytes ({max_event_bytes})"),
            ));
        }
        let id = format!(
            "{fingerprint}-{status}-{}",
            starts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        );
        let event = EventBuilderV10::new()
            .id(id)
            .source(source)
            .ty(format!("io.prometheus.alert.{status}"))
            .subject(alertname)
            .time(time)
            .data("application/json", data)
            .build()
            .map_err(|e| err(at, e.to_string()))?;
        events.push(event);
    }
    Ok(events)
}

#[derive(Clone)]
struct Alerts {
    webhook: Webhook,
    source: String,
}

impl BuildSource for AlertmanagerSourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let webhook = Webhook::new(cx.clone());
        let routes = Router::new()
            .route("/alerts", post(alerts))
            .with_state(Alerts {
                webhook,
                source: format!("sluice://alertmanager/{}", self.name),
            });
        Ok(BuiltSource::routes(routes))
    }
}

async fn alerts(
    State(state): State<Alerts>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let max = state.webhook.max_event_bytes();
    state
        .webhook
        .receive(&headers, body, |bytes| {
            parse(bytes, &state.source, max)
                .map(Some)
                .map_err(|e| ApiError::bad_event(e.field, e.message))
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_router::cloudevents::AttributesReader;

    const SAMPLE: &str = include_str!("../../../tests/e2e/ops/alertmanager.json");

    #[test]
    fn each_alert_becomes_an_event() {
        let events = parse(SAMPLE.as_bytes(), "sluice://alertmanager/am", 0).unwrap();
        assert_eq!(events.len(), 2);
        let firing = &events[0];
        assert_eq!(firing.ty(), "io.prometheus.alert.firing");
        assert_eq!(firing.subject(), Some("InstanceDown"));
        assert_eq!(
            firing.time().unwrap().to_rfc3339(),
            "2026-11-30T09:00:00+00:00"
        );
        assert_eq!(firing.id(), "4f3c9b1e2a7d8c60-firing-2026-11-30T09:00:00Z");
        let resolved = &events[1];
        assert_eq!(resolved.ty(), "io.prometheus.alert.resolved");
        assert_eq!(
            resolved.time().unwrap().to_rfc3339(),
            "2026-11-30T09:20:00+00:00"
        );
        // The same body again: the same ids.
        let again = parse(SAMPLE.as_bytes(), "sluice://alertmanager/am", 0).unwrap();
        assert_eq!(again[0].id(), firing.id());
    }

    fn field_of(body: Value) -> String {
        parse(body.to_string().as_bytes(), "s", 0)
            .unwrap_err()
            .field
    }

    #[test]
    fn a_bad_field_is_named() {
        let good: Value = serde_json::from_str(SAMPLE).unwrap();
        let with = |path: &[&str], value: Value| {
            let mut b = good.clone();
            let mut at = &mut b;
            for (i, key) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    if value.is_null() {
                        at.as_object_mut().unwrap().remove(*key);
                    } else {
                        at[*key] = value.clone();
                    }
                    break;
                }
                at = match key.parse::<usize>() {
                    Ok(n) => &mut at[n],
                    Err(_) => &mut at[*key],
                };
            }
            b
        };
        assert_eq!(field_of(with(&["version"], json!("3"))), "version");
        assert_eq!(field_of(with(&["alerts"], json!({}))), "alerts");
        assert_eq!(
            field_of(with(&["alerts", "1", "fingerprint"], Value::Null)),
            "alerts[1].fingerprint"
        );
        assert_eq!(
            field_of(with(&["alerts", "0", "status"], json!("pending"))),
            "alerts[0].status"
        );
        assert_eq!(
            field_of(with(&["alerts", "1", "endsAt"], json!("yesterday"))),
            "alerts[1].endsAt"
        );
        assert_eq!(
            field_of(with(&["alerts", "0", "labels", "alertname"], Value::Null)),
            "alerts[0].labels.alertname"
        );
        assert_eq!(
            field_of(with(&["alerts", "0", "labels", "severity"], json!(3))),
            "alerts[0].labels.severity"
        );
        assert_eq!(field_of(json!([1])), "body");
        assert_eq!(parse(b"{", "s", 0).unwrap_err().field, "body");
        // Too large for one event.
        assert_eq!(
            parse(SAMPLE.as_bytes(), "s", 100).unwrap_err().field,
            "alerts[0]"
        );
    }
}
