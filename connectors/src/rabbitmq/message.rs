//! AMQP 0-9-1 messages to and from CloudEvents (the CloudEvents AMQP binding,
//! written here: the SDK has none).
//!
//! In:
//! - `content_type: application/cloudevents+json`: structured mode, the body is the event.
//! - any header named `cloudEvents_<attr>` (or `cloudEvents:<attr>`, the AMQP 1.0
//!   spelling; the prefix in any case): binary mode, attributes from those
//!   headers, `datacontenttype` from the `content_type` property, data from the body.
//! - otherwise a plain message: `id` = the `message_id` property, else a
//!   deterministic id of the message's content and properties ([`plain_id`]),
//!   `source` and `type` from the source's settings, `time` = the `timestamp`
//!   property else now, the routing key and exchange in the `amqproutingkey` and
//!   `amqpexchange` extensions, `data` = the body as JSON when it parses, else bytes.
//!
//! A message that claims to be a CloudEvent but is broken becomes a plain event
//! with a `sluiceerror` extension (see [`crate::binding`]). Nothing here panics.
//!
//! Out (the target): binary mode writes `cloudEvents_<attr>` headers and the
//! content type; structured mode the event as the body.

use chrono::{TimeZone, Utc};
use cloudevents::AttributesReader;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use serde_json::Value;
use sluice_router::config::BindingMode;
use sluice_router::event::{format_time, Event, EventFields};

use crate::binding::{
    binary_event, binary_parts, build_plain, is_structured, plain_data, structured_event,
    structured_payload, STRUCTURED,
};

/// How plain messages become events.
#[derive(Debug, Clone)]
pub struct MessageMapping {
    /// `source`; `{queue}` is replaced.
    pub event_source: String,
    pub event_type: String,
    /// The queue the messages come from.
    pub queue: String,
}

/// What the mapping reads of a delivery (so tests need no broker).
pub struct Incoming<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
}

/// The header prefixes of binary mode, in lower case.
const PREFIXES: [&str; 2] = ["cloudevents_", "cloudevents:"];

/// Headers the broker adds or changes as a message goes around (redelivery
/// counts, dead-lettering history); left out of a plain message's id so that a
/// redelivered message keeps its id.
fn broker_header(name: &str) -> bool {
    name == "x-delivery-count"
        || name == "x-death"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

/// A header value as an attribute value: text, integers and booleans as
/// themselves, a timestamp as RFC 3339.
fn header_value(value: &AMQPValue) -> Result<Value, &'static str> {
    Ok(match value {
        AMQPValue::LongString(s) => Value::String(
            String::from_utf8(s.as_bytes().to_vec()).map_err(|_| "is not valid UTF-8")?,
        ),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(i) => Value::from(*i),
        AMQPValue::ShortShortUInt(i) => Value::from(*i),
        AMQPValue::ShortInt(i) => Value::from(*i),
        AMQPValue::ShortUInt(i) => Value::from(*i),
        AMQPValue::LongInt(i) => Value::from(*i),
        AMQPValue::LongUInt(i) => Value::from(*i),
        AMQPValue::LongLongInt(i) => Value::from(*i),
        AMQPValue::Timestamp(t) => match i64::try_from(*t)
            .ok()
            .and_then(|t| Utc.timestamp_opt(t, 0).single())
        {
            Some(t) => Value::String(format_time(&t)),
            None => return Err("is a timestamp out of range"),
        },
        AMQPValue::ByteArray(b) => Value::String(
            String::from_utf8(b.as_slice().to_vec()).map_err(|_| "is not valid UTF-8")?,
        ),
        AMQPValue::Float(_) | AMQPValue::Double(_) | AMQPValue::DecimalValue(_) => {
            return Err("is a floating-point number (CloudEvents has none)")
        }
        AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_) => {
            return Err("is a list or table, not a value")
        }
        AMQPValue::Void => return Err("is void"),
    })
}

/// The event for one message; see the module docs for the rules.
pub fn message_to_event(m: &Incoming<'_>, mapping: &MessageMapping) -> Event {
    let content_type = m
        .properties
        .content_type()
        .as_ref()
        .map(ShortString::as_str);
    let mut attrs = Vec::new();
    let mut problem = None;
    if let Some(headers) = m.properties.headers() {
        for (key, value) in headers {
            let lower = key.as_str().to_ascii_lowercase();
            let Some(attr) = PREFIXES.iter().find_map(|p| lower.strip_prefix(p)) else {
                continue;
            };
            match header_value(value) {
                Ok(v) => attrs.push((attr.to_owned(), v)),
                Err(why) => problem = Some(format!("header {key} {why}")),
            }
        }
    }
    let attempt = match (&problem, content_type.is_some_and(is_structured)) {
        (Some(p), _) => Err(p.clone()),
        (None, true) => structured_event(Some(m.body)),
        (None, false) if !attrs.is_empty() => binary_event(attrs, content_type, Some(m.body)),
        (None, false) => return plain_event(m, mapping, None),
    };
    match attempt {
        Ok(event) => event,
        Err(why) => plain_event(m, mapping, Some(why)),
    }
}

/// The id of a plain message without `message_id`: a UUID (v5) of its exchange,
/// routing key, properties (less the headers the broker changes on redelivery)
/// and body, so a message delivered again has the same id and
/// `server.dedupe_window` drops the copy.
///
/// Fixed on purpose: a change would give messages redelivered across an upgrade
/// new ids (duplicates within the dedupe window). Two messages alike in every
/// byte and property get one id too: publishers that send such twins on purpose
/// set `message_id` or `timestamp` to tell them apart.
pub fn plain_id(m: &Incoming<'_>) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5b1c_e0a3_6d4e_4f0b_9a7c_2e11_d3c8_a9f1);
    // No headers and no headers left after the broker's: the same.
    let mut kept = FieldTable::default();
    if let Some(headers) = m.properties.headers() {
        for (k, v) in headers {
            if !broker_header(k.as_str()) {
                kept.insert(k.clone(), v.clone());
            }
        }
    }
    let props = m.properties.clone().with_headers(kept);
    let mut name = Vec::with_capacity(m.body.len() + 256);
    for part in [m.exchange.as_bytes(), m.routing_key.as_bytes()] {
        name.extend_from_slice(part);
        name.push(0);
    }
    // Properties as JSON: every field in a fixed order, header tables sorted.
    name.extend_from_slice(&serde_json::to_vec(&props).unwrap_or_default());
    name.push(0);
    name.extend_from_slice(m.body);
    uuid::Uuid::new_v5(&NAMESPACE, &name).to_string()
}

fn plain_event(m: &Incoming<'_>, mapping: &MessageMapping, problem: Option<String>) -> Event {
    let id = match m.properties.message_id() {
        Some(id) if !id.as_str().is_empty() => id.as_str().to_owned(),
        _ => plain_id(m),
    };
    let mut fields = EventFields::new();
    fields
        .attr("specversion", "1.0")
        .attr("id", id.as_str())
        .attr(
            "source",
            mapping.event_source.replace("{queue}", &mapping.queue),
        )
        .attr("type", mapping.event_type.as_str());
    let time = m
        .properties
        .timestamp()
        .and_then(|t| i64::try_from(t).ok())
        .and_then(|t| Utc.timestamp_opt(t, 0).single())
        .unwrap_or_else(Utc::now);
    fields.attr("time", format_time(&time));
    if !m.routing_key.is_empty() {
        fields.attr("amqproutingkey", m.routing_key);
    }
    if !m.exchange.is_empty() {
        fields.attr("amqpexchange", m.exchange);
    }
    if let Some(p) = &problem {
        fields.attr("sluiceerror", p.as_str());
    }
    plain_data(&mut fields, m.body);
    build_plain(fields, &id, "amqp://invalid", "sluice.amqp.message")
}

/// The body and properties of `event` as the target publishes it.
pub fn event_to_message(
    event: &Event,
    mode: BindingMode,
    persistent: bool,
) -> Result<(Vec<u8>, BasicProperties), String> {
    let mut props = BasicProperties::default().with_message_id(ShortString::from(event.id()));
    if persistent {
        props = props.with_delivery_mode(2);
    }
    Ok(match mode {
        BindingMode::Binary => {
            let parts = binary_parts(event);
            let mut headers = FieldTable::default();
            for (name, value) in parts.attributes {
                headers.insert(
                    ShortString::from(format!("cloudEvents_{name}")),
                    AMQPValue::LongString(LongString::from(value)),
                );
            }
            props = props.with_headers(headers);
            if let Some(ct) = parts.content_type {
                props = props.with_content_type(ShortString::from(ct));
            }
            (parts.payload, props)
        }
        BindingMode::Structured => (
            structured_payload(event)?,
            props.with_content_type(ShortString::from(STRUCTURED)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::Data;

    fn mapping() -> MessageMapping {
        MessageMapping {
            event_source: "amqp://{queue}".into(),
            event_type: "sluice.amqp.message".into(),
            queue: "orders".into(),
        }
    }

    fn headers(h: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in h {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn text(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    fn map(props: &BasicProperties, body: &[u8]) -> Event {
        message_to_event(
            &Incoming {
                exchange: "shop",
                routing_key: "order.created",
                properties: props,
                body,
            },
            &mapping(),
        )
    }

    fn ext(e: &Event, name: &str) -> Option<String> {
        e.extension(name).map(ToString::to_string)
    }

    #[test]
    fn plain_messages_map_to_events_with_stable_ids() {
        let props = BasicProperties::default()
            .with_timestamp(1_700_000_000)
            .with_headers(headers(&[("tenant", text("acme"))]));
        let e = map(&props, br#"{"a":1}"#);
        assert_eq!(e.source().as_str(), "amqp://orders");
        assert_eq!(e.ty(), "sluice.amqp.message");
        assert_eq!(e.time().map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!(ext(&e, "amqproutingkey").as_deref(), Some("order.created"));
        assert_eq!(ext(&e, "amqpexchange").as_deref(), Some("shop"));
        assert_eq!(e.data(), Some(&Data::Json(serde_json::json!({"a": 1}))));
        // Redelivered through a quorum queue: same id.
        let again = props.clone().with_headers(headers(&[
            ("tenant", text("acme")),
            ("x-delivery-count", AMQPValue::LongInt(1)),
        ]));
        assert_eq!(map(&again, br#"{"a":1}"#).id(), e.id());
        let bare = BasicProperties::default();
        let counted = bare
            .clone()
            .with_headers(headers(&[("x-delivery-count", AMQPValue::LongInt(2))]));
        assert_eq!(map(&bare, b"x").id(), map(&counted, b"x").id());
        // Any other difference: another id.
        assert_ne!(map(&props, br#"{"a":2}"#).id(), e.id());
        assert_ne!(
            map(&props.clone().with_priority(3), br#"{"a":1}"#).id(),
            e.id()
        );
        let bytes = map(&BasicProperties::default(), &[0xff, 0]);
        assert_eq!(bytes.data(), Some(&Data::Binary(vec![0xff, 0])));
        let with_id = BasicProperties::default().with_message_id("m-1".into());
        assert_eq!(map(&with_id, b"x").id(), "m-1");
    }

    #[test]
    fn binary_and_structured_cloudevents() {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers(&[
                ("cloudEvents_specversion", text("1.0")),
                ("cloudEvents_id", text("e-1")),
                ("cloudEvents:source", text("/shop")),
                ("cloudEvents_type", text("order.created")),
                ("cloudEvents_time", AMQPValue::Timestamp(1_700_000_000)),
                ("cloudEvents_priority", AMQPValue::LongInt(7)),
                ("other", text("ignored")),
            ]));
        let e = map(&props, br#"{"amount":5}"#);
        assert_eq!((e.id(), e.ty()), ("e-1", "order.created"));
        assert_eq!(e.source().as_str(), "/shop");
        assert_eq!(e.time().map(|t| t.timestamp()), Some(1_700_000_000));
        assert_eq!(ext(&e, "priority").as_deref(), Some("7"));
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert!(ext(&e, "other").is_none());
        let body = br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"x":1}}"#;
        let structured = BasicProperties::default()
            .with_content_type("application/cloudevents+json; charset=utf-8".into());
        assert_eq!(map(&structured, body).id(), "s-1");
    }

    #[test]
    fn broken_cloudevents_become_plain_events_with_the_problem() {
        let cases: Vec<(BasicProperties, &[u8], &str)> = vec![
            (
                BasicProperties::default().with_headers(headers(&[("cloudEvents_id", text("1"))])),
                b"{}",
                "required attribute is missing",
            ),
            (
                BasicProperties::default().with_headers(headers(&[(
                    "cloudEvents_id",
                    AMQPValue::FieldArray(vec![].into()),
                )])),
                b"{}",
                "header cloudEvents_id is a list",
            ),
            (
                BasicProperties::default().with_headers(headers(&[(
                    "cloudEvents_id",
                    AMQPValue::LongString(LongString::from(vec![0xffu8])),
                )])),
                b"{}",
                "not valid UTF-8",
            ),
            (
                BasicProperties::default().with_content_type(STRUCTURED.into()),
                b"nope",
                "not valid JSON",
            ),
        ];
        for (props, body, want) in cases {
            let e = map(&props, body);
            let err = ext(&e, "sluiceerror").unwrap_or_default();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
            assert_eq!(e.source().as_str(), "amqp://orders");
        }
    }

    #[test]
    fn events_round_trip_through_both_modes() {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers(&[
                ("cloudEvents_specversion", text("1.0")),
                ("cloudEvents_id", text("e-9")),
                ("cloudEvents_source", text("/shop")),
                ("cloudEvents_type", text("order.created")),
                ("cloudEvents_tenant", text("acme")),
            ]));
        let e = map(&props, br#"{"amount":5}"#);
        for mode in [BindingMode::Binary, BindingMode::Structured] {
            let (body, props) = event_to_message(&e, mode, true).unwrap();
            assert_eq!(props.delivery_mode(), &Some(2));
            let back = map(&props, &body);
            assert_eq!(back.id(), "e-9");
            assert_eq!(ext(&back, "tenant").as_deref(), Some("acme"));
            assert_eq!(back.data(), e.data());
        }
    }
}
