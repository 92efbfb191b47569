//! What the CloudEvents bindings of message brokers (Kafka, AMQP) have in common,
//! in one place so both read and write events the same way:
//!
//! - structured mode: the payload is the event as `application/cloudevents+json`;
//! - binary mode: attributes travel as message headers (`ce_*` on Kafka,
//!   `cloudEvents_*` on AMQP, each connector finds its own), the data is the
//!   payload and `datacontenttype` is the message's content type;
//! - a plain message (no CloudEvents headers, not structured) becomes an event
//!   whose data is JSON when the payload parses as JSON, else bytes.
//!
//! A message that claims to be a CloudEvent and is broken becomes a plain event
//! with a `sluiceerror` extension saying what is wrong ([`problem_of`]); the
//! connector decides (by its `malformed` setting) whether to publish or reject it.
//! Nothing here fails or panics on input.

use serde_json::Value;
use sluice_router::event::{binary_attributes, data_bytes, is_json, Event, EventFields, RawData};

/// The media type of a structured-mode event.
pub const STRUCTURED: &str = "application/cloudevents+json";

/// The extension that says why a message that claimed to be a CloudEvent is not one.
pub const PROBLEM: &str = "sluiceerror";

/// Whether `content_type` is the structured mode's (parameters ignored).
pub fn is_structured(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case(STRUCTURED)
}

/// What is wrong with the message `event` was made from, if it claimed to be a
/// CloudEvent and was broken (its `sluiceerror` extension).
pub fn problem_of(event: &Event) -> Option<String> {
    event.extension(PROBLEM).map(ToString::to_string)
}

/// The event of a structured-mode payload.
pub fn structured_event(payload: Option<&[u8]>) -> Result<Event, String> {
    let bytes = payload.ok_or("structured CloudEvent with a null value")?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => EventFields::from_structured(map)
            .and_then(EventFields::build)
            .map_err(|e| format!("structured CloudEvent: {e}")),
        Ok(_) => Err("structured CloudEvent is not a JSON object".into()),
        Err(e) => Err(format!("structured CloudEvent is not valid JSON: {e}")),
    }
}

/// The event of a binary-mode message: `attrs` from its headers (prefix removed,
/// lower-cased), the content type, the payload.
pub fn binary_event(
    attrs: Vec<(String, Value)>,
    content_type: Option<&str>,
    payload: Option<&[u8]>,
) -> Result<Event, String> {
    let mut fields = EventFields::new();
    for (name, value) in attrs {
        fields.attr(name, value);
    }
    if let Some(ct) = content_type {
        fields.attr("datacontenttype", ct);
    }
    if let Some(bytes) = payload {
        fields.data(data_of(bytes, content_type)?);
    }
    fields
        .build()
        .map_err(|e| format!("binary CloudEvent: {e}"))
}

/// The data of a binary-mode payload by its content type: JSON must parse.
fn data_of(bytes: &[u8], content_type: Option<&str>) -> Result<RawData, String> {
    Ok(match content_type {
        Some(ct) if is_json(ct) => RawData::Json(
            serde_json::from_slice(bytes)
                .map_err(|e| format!("data is not valid JSON for {ct}: {e}"))?,
        ),
        Some(ct) if ct.starts_with("text/") => match std::str::from_utf8(bytes) {
            Ok(s) => RawData::Text(s.to_owned()),
            Err(_) => RawData::Bytes(bytes.to_vec()),
        },
        _ => RawData::Bytes(bytes.to_vec()),
    })
}

/// Set the data of a plain message's event: JSON when the payload parses as JSON,
/// else bytes, with the matching `datacontenttype`.
pub fn plain_data(fields: &mut EventFields, bytes: &[u8]) {
    let data = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => {
            fields.attr("datacontenttype", "application/json");
            RawData::Json(v)
        }
        Err(_) => {
            fields.attr("datacontenttype", "application/octet-stream");
            RawData::Bytes(bytes.to_vec())
        }
    };
    fields.data(data);
}

/// Build a plain message's event; a user's `event_source`/`event_type` that the
/// spec refuses (validation keeps them non-empty, not every such mistake out)
/// gives an event with `fallback_source` and the problem instead.
pub fn build_plain(fields: EventFields, id: &str, fallback_source: &str, ty: &str) -> Event {
    fields.build().unwrap_or_else(|e| {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", id)
            .attr("source", fallback_source)
            .attr("type", ty)
            .attr(PROBLEM, e.to_string());
        // Every attribute above is valid by construction (non-empty id, source
        // and type; a lower-case extension name); `Event::default` is a constant,
        // valid event, only reachable if that were broken.
        f.build().unwrap_or_default()
    })
}

/// How an event goes out in binary mode: its attributes (to be sent as headers
/// with the binding's prefix), its content type and its data as bytes.
pub struct BinaryParts {
    pub attributes: Vec<(String, String)>,
    pub content_type: Option<String>,
    pub payload: Vec<u8>,
}

/// The binary-mode parts of `event`.
pub fn binary_parts(event: &Event) -> BinaryParts {
    use cloudevents::AttributesReader;
    BinaryParts {
        attributes: binary_attributes(event),
        content_type: event.datacontenttype().map(str::to_owned),
        payload: data_bytes(event),
    }
}

/// The structured-mode payload of `event` (content type [`STRUCTURED`]).
pub fn structured_payload(event: &Event) -> Result<Vec<u8>, String> {
    serde_json::to_vec(event).map_err(|e| format!("the event cannot be written as JSON: {e}"))
}
