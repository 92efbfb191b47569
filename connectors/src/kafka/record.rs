//! Kafka records to CloudEvents (CloudEvents Kafka binding, 1.0).
//!
//! - `content-type: application/cloudevents+json`: structured mode, the value is the event.
//! - any `ce_` header: binary mode, attributes from `ce_*` headers, data from the value.
//! - otherwise a plain record: `id` = `<topic>-<partition>-<offset>`, `source` and
//!   `type` from the source's settings, `time` = the record timestamp, the key in the
//!   `partitionkey` extension, `data` = the value as JSON when it parses, else bytes.
//!
//! A record that claims to be a CloudEvent but is broken (bad JSON, a missing
//! attribute, a non-UTF-8 header) becomes a plain-record event whose `sluiceerror`
//! extension describes the problem; a tombstone (null value) becomes an event
//! without data and `kafkatombstone: true`. Nothing here fails or panics.

use chrono::{TimeZone, Utc};
use rdkafka::message::{Headers, Message};
use serde_json::Value;
use sluice_router::event::{Event, EventFields};

pub use crate::binding::problem_of;
#[cfg(test)]
use crate::binding::STRUCTURED;
use crate::binding::{binary_event, build_plain, is_structured, plain_data, structured_event};

/// How plain records become events.
#[derive(Debug, Clone)]
pub struct RecordMapping {
    /// `source`; `{topic}` is replaced.
    pub event_source: String,
    pub event_type: String,
}

fn header_text(value: Option<&[u8]>) -> Result<String, &'static str> {
    match value {
        None => Err("is null"),
        Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| "is not valid UTF-8"),
    }
}

/// The event for one record; see the module docs for the rules.
pub fn record_to_event<M: Message>(msg: &M, mapping: &RecordMapping) -> Event {
    let mut content_type = None;
    let mut ce_headers = Vec::new();
    let mut problem = None;
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            let key = h.key.to_ascii_lowercase();
            if key == "content-type" {
                match header_text(h.value) {
                    Ok(v) => content_type = Some(v),
                    Err(why) => problem = Some(format!("header content-type {why}")),
                }
            } else if let Some(attr) = key.strip_prefix("ce_") {
                match header_text(h.value) {
                    Ok(v) => ce_headers.push((attr.to_owned(), Value::String(v))),
                    Err(why) => problem = Some(format!("header {} {why}", h.key)),
                }
            }
        }
    }
    let structured = content_type.as_deref().is_some_and(is_structured);
    let attempt = match (&problem, structured, ce_headers.is_empty()) {
        (Some(p), _, _) => Err(p.clone()),
        (None, true, _) => structured_event(msg.payload()),
        (None, false, false) => binary_event(ce_headers, content_type.as_deref(), msg.payload()),
        (None, false, true) => return plain_event(msg, mapping, None),
    };
    match attempt {
        Ok(event) => event,
        Err(why) => plain_event(msg, mapping, Some(why)),
    }
}

fn plain_event<M: Message>(msg: &M, mapping: &RecordMapping, problem: Option<String>) -> Event {
    let topic = msg.topic();
    let id = format!("{topic}-{}-{}", msg.partition(), msg.offset());
    let mut fields = EventFields::new();
    fields
        .attr("specversion", "1.0")
        .attr("id", id.as_str())
        .attr("source", mapping.event_source.replace("{topic}", topic))
        .attr("type", mapping.event_type.as_str());
    if let Some(ms) = msg.timestamp().to_millis() {
        if let chrono::LocalResult::Single(t) = Utc.timestamp_millis_opt(ms) {
            fields.attr(
                "time",
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
    }
    if let Some(key) = msg.key() {
        fields.attr("partitionkey", String::from_utf8_lossy(key).into_owned());
    }
    if let Some(p) = &problem {
        fields.attr("sluiceerror", p.as_str());
    }
    match msg.payload() {
        None => {
            fields.attr("kafkatombstone", true);
        }
        Some(bytes) => plain_data(&mut fields, bytes),
    }
    build_plain(fields, &id, "kafka://invalid", "sluice.kafka.record")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{AttributesReader, Data};
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    fn mapping() -> RecordMapping {
        RecordMapping {
            event_source: "kafka://{topic}".into(),
            event_type: "sluice.kafka.record".into(),
        }
    }

    fn msg(value: Option<&[u8]>, key: Option<&[u8]>, headers: OwnedHeaders) -> OwnedMessage {
        OwnedMessage::new(
            value.map(<[u8]>::to_vec),
            key.map(<[u8]>::to_vec),
            "orders".into(),
            Timestamp::CreateTime(1_700_000_000_123),
            3,
            42,
            Some(headers),
        )
    }

    fn h(headers: &[(&str, Option<&[u8]>)]) -> OwnedHeaders {
        let mut out = OwnedHeaders::new();
        for (k, v) in headers {
            out = out.insert(Header { key: k, value: *v });
        }
        out
    }

    #[test]
    fn plain_records_map_to_events() {
        let e = record_to_event(
            &msg(Some(br#"{"a":1}"#), Some(b"cust-7"), h(&[])),
            &mapping(),
        );
        assert_eq!(e.id(), "orders-3-42");
        assert_eq!(e.source().as_str(), "kafka://orders");
        assert_eq!(e.ty(), "sluice.kafka.record");
        assert_eq!(
            e.time().map(|t| t.timestamp_millis()),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            e.extension("partitionkey")
                .map(ToString::to_string)
                .as_deref(),
            Some("cust-7")
        );
        assert_eq!(e.data(), Some(&Data::Json(serde_json::json!({"a": 1}))));
        let bytes = record_to_event(&msg(Some(&[0xff, 0x00]), None, h(&[])), &mapping());
        assert_eq!(bytes.data(), Some(&Data::Binary(vec![0xff, 0x00])));
        let tomb = record_to_event(&msg(None, Some(b"k"), h(&[])), &mapping());
        assert_eq!(tomb.data(), None);
        assert!(tomb.extension("kafkatombstone").is_some());
    }

    #[test]
    fn binary_and_structured_cloudevents() {
        let headers = h(&[
            ("ce_specversion", Some(b"1.0")),
            ("ce_id", Some(b"e-1")),
            ("ce_source", Some(b"/shop")),
            ("ce_type", Some(b"order.created")),
            ("ce_tenant", Some(b"acme")),
            ("content-type", Some(b"application/json")),
        ]);
        let e = record_to_event(&msg(Some(br#"{"amount":5}"#), None, headers), &mapping());
        assert_eq!((e.id(), e.ty()), ("e-1", "order.created"));
        assert_eq!(
            e.extension("tenant").map(ToString::to_string).as_deref(),
            Some("acme")
        );
        let body = br#"{"specversion":"1.0","id":"s-1","source":"/s","type":"t","data":{"x":1}}"#;
        let e = record_to_event(
            &msg(
                Some(body),
                None,
                h(&[("content-type", Some(STRUCTURED.as_bytes()))]),
            ),
            &mapping(),
        );
        assert_eq!(e.id(), "s-1");
    }

    #[test]
    fn broken_cloudevents_become_plain_events_with_the_problem() {
        let cases: Vec<(OwnedHeaders, Option<&[u8]>, &str)> = vec![
            (h(&[("ce_id", None)]), Some(b"{}"), "header ce_id is null"),
            (
                h(&[("ce_id", Some(&[0xff]))]),
                Some(b"{}"),
                "is not valid UTF-8",
            ),
            (
                h(&[("ce_id", Some(b"1"))]),
                Some(b"{}"),
                "required attribute is missing",
            ),
            (
                h(&[("content-type", Some(STRUCTURED.as_bytes()))]),
                Some(b"nope"),
                "not valid JSON",
            ),
            (
                h(&[("content-type", Some(STRUCTURED.as_bytes()))]),
                None,
                "null value",
            ),
            (
                h(&[("content-type", None)]),
                Some(b"{}"),
                "content-type is null",
            ),
        ];
        for (headers, value, want) in cases {
            let e = record_to_event(&msg(value, None, headers), &mapping());
            assert_eq!(e.id(), "orders-3-42");
            let err = e
                .extension("sluiceerror")
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(err.contains(want), "{err:?} should contain {want:?}");
        }
    }
}
