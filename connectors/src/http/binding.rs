//! The CloudEvents HTTP protocol binding, both ways: requests to events (binary,
//! structured and batch mode) and events to requests (binary and structured mode).

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use cloudevents::AttributesReader;
use serde_json::value::RawValue;
use serde_json::Value;
use sluice_router::event::{
    binary_attributes, data_bytes, duplicate_key, is_json, Event, EventError, EventFields, RawData,
};

use super::ApiError;

/// The content mode of an incoming request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    Structured,
    Batch,
}

pub const STRUCTURED: &str = "application/cloudevents+json";
pub const BATCH: &str = "application/cloudevents-batch+json";

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_owned())
}

fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Which mode a request uses, or 415 when it is not a CloudEvents request at all.
pub fn mode(headers: &HeaderMap) -> Result<Mode, ApiError> {
    let ct = content_type(headers)
        .map(|c| essence(&c))
        .unwrap_or_default();
    if ct == STRUCTURED {
        return Ok(Mode::Structured);
    }
    if ct == BATCH {
        return Ok(Mode::Batch);
    }
    if ct.starts_with("application/cloudevents") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("content type {ct:?} is not supported; use {STRUCTURED}, {BATCH}, or binary mode (ce-* headers)"),
        ));
    }
    if headers.keys().any(|k| k.as_str().starts_with("ce-")) {
        return Ok(Mode::Binary);
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "not a CloudEvent: send binary mode (ce-specversion, ce-id, ce-source, ce-type headers), \
             or content type {STRUCTURED} or {BATCH}{}",
            if ct.is_empty() { String::new() } else { format!(" (got {ct:?} without ce-* headers)") }
        ),
    ))
}

/// A binary-mode request: attributes from `ce-*` headers, data from the body.
pub fn from_binary(headers: &HeaderMap, body: &[u8]) -> Result<Event, ApiError> {
    let mut fields = EventFields::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value
            .to_str()
            .ok()
            .and_then(percent_decode)
            .ok_or_else(|| {
                ApiError::bad_event(attr, format!("header {name} is not valid UTF-8 text"))
            })?;
        fields.attr(attr, text);
    }
    let ct = content_type(headers);
    if let Some(ct) = &ct {
        fields.attr("datacontenttype", ct.as_str());
    }
    if !body.is_empty() {
        let data = match ct.as_deref() {
            Some(ct) if is_json(ct) => {
                let data = serde_json::from_slice(body).map_err(|e| {
                    ApiError::bad_event(
                        "data",
                        format!("body is not valid JSON for content type {ct}: {e}"),
                    )
                })?;
                refuse_duplicates(body, "data")?;
                RawData::Json(data)
            }
            Some(ct) if essence(ct).starts_with("text/") => match std::str::from_utf8(body) {
                Ok(text) => RawData::Text(text.to_owned()),
                Err(_) => RawData::Bytes(body.to_vec()),
            },
            _ => RawData::Bytes(body.to_vec()),
        };
        fields.data(data);
    }
    fields.build().map_err(event_error)
}

/// The path of a key given twice in `body`'s JSON (as `prefix.path`), as a 400.
fn refuse_duplicates(body: &[u8], prefix: &str) -> Result<(), ApiError> {
    let Ok(text) = std::str::from_utf8(body) else {
        return Ok(());
    };
    match duplicate_key(text) {
        Some(path) => {
            let field = match (prefix, path.starts_with('[')) {
                ("", _) => path,
                (p, true) => format!("{p}{path}"),
                (p, false) => format!("{p}.{path}"),
            };
            Err(ApiError::bad_event(
                field,
                "is given twice; each key may appear once",
            ))
        }
        None => Ok(()),
    }
}

/// A structured-mode request: the whole event as a JSON object.
pub fn from_structured(body: &[u8]) -> Result<Event, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_event("body", format!("not valid JSON: {e}")))?;
    refuse_duplicates(body, "")?;
    from_json(value).map_err(event_error)
}

/// A batch-mode request's elements, unparsed: a JSON array whose elements each
/// fit in `max_event_bytes` and hold no key twice; an error names the element
/// (`[3]`, `[3].data.sku`).
pub fn batch_items(body: &[u8], max_event_bytes: usize) -> Result<Vec<&RawValue>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_event("body", format!("not a JSON array of events: {e}")))?;
    for (i, raw) in items.iter().enumerate() {
        if raw.get().len() > max_event_bytes {
            return Err(too_large(
                &format!("[{i}]"),
                raw.get().len(),
                max_event_bytes,
            ));
        }
    }
    refuse_duplicates(body, "")?;
    Ok(items)
}

/// Events from batch elements; `first` is the index of `items[0]` in the batch,
/// for the errors (`[3].source`).
pub fn batch_events(items: &[&RawValue], first: usize) -> Result<Vec<Event>, ApiError> {
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let i = first + i;
            let value: Value = serde_json::from_str(raw.get())
                .map_err(|e| ApiError::bad_event(format!("[{i}]"), e))?;
            from_json(value).map_err(|e| event_error(e.within(&format!("[{i}]"))))
        })
        .collect()
}

fn from_json(value: Value) -> Result<Event, EventError> {
    match value {
        Value::Object(map) => EventFields::from_structured(map)?.build(),
        other => Err(EventError::new(
            "event",
            format!("must be a JSON object, found {}", kind(&other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

fn event_error(e: EventError) -> ApiError {
    ApiError::bad_event(e.field, e.message)
}

pub fn too_large(what: &str, size: usize, max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("{what} is {size} bytes; the limit is {max} bytes (server.max_event_bytes)"),
    )
}

/// Header values of the binding are percent-encoded for `%`, `"`, space and
/// non-ASCII; decode them, refusing invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b == b'%' || b == b'"' || b <= b' ' || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Headers and body of a binary-mode request carrying `event`.
pub fn to_binary(event: &Event) -> (Vec<(HeaderName, HeaderValue)>, Vec<u8>) {
    let mut headers = Vec::with_capacity(8);
    for (name, value) in binary_attributes(event) {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(format!("ce-{name}").as_bytes()),
            HeaderValue::from_str(&percent_encode(&value)),
        ) {
            headers.push((n, v));
        }
    }
    if let Some(ct) = event.datacontenttype() {
        if let Ok(v) = HeaderValue::from_str(ct) {
            headers.push((axum::http::header::CONTENT_TYPE, v));
        }
    }
    (headers, data_bytes(event))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_round_trips() {
        let s = "caf\u{e9} 100% \"x\"";
        assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        assert_eq!(percent_decode("%ZZ"), None);
        assert_eq!(percent_decode("%C3"), None);
        assert_eq!(percent_decode("abc%"), Some("abc%".into()));
    }
}
