//! The event envelope: a CloudEvents 1.0 event, validated the same way whatever the
//! source, plus the field lookup that filters use.
//!
//! Every connector builds events through [`EventFields`] so that a broken event is
//! rejected with the name of the field at fault, never with a panic.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesReader, AttributesWriter, Data, EventBuilder, EventBuilderV10};
use serde_json::{Map, Value};

pub use cloudevents::Event;
pub use strict::{duplicate_key, MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTE_BYTES, MAX_EXTENSIONS};

mod strict;

/// Context attributes defined by the CloudEvents 1.0 specification.
pub const SPEC_ATTRIBUTES: [&str; 8] = [
    "id",
    "source",
    "specversion",
    "type",
    "datacontenttype",
    "dataschema",
    "subject",
    "time",
];

/// A problem with one field of an incoming event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct EventError {
    /// The attribute at fault (`id`, `source`, `data`, an extension name, ...).
    pub field: String,
    /// What is wrong with it, in words a user can act on.
    pub message: String,
}

impl EventError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefix the field with a location, e.g. the element of a batch.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// The payload of an event before it is validated.
#[derive(Debug, Clone)]
pub enum RawData {
    None,
    Json(Value),
    Text(String),
    Bytes(Vec<u8>),
}

/// Attributes and data gathered from some binding (HTTP headers, a JSON object, a
/// Kafka record), checked and turned into an [`Event`] by [`EventFields::build`].
#[derive(Debug, Default)]
pub struct EventFields {
    attrs: Vec<(String, Value)>,
    data: Option<RawData>,
}

impl EventFields {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add an attribute; `name` is lower-cased by the caller's binding rules.
    pub fn attr(&mut self, name: impl Into<String>, value: impl Into<Value>) -> &mut Self {
        self.attrs.push((name.into(), value.into()));
        self
    }

    pub fn data(&mut self, data: RawData) -> &mut Self {
        self.data = Some(data);
        self
    }

    /// Collect the attributes and data of a structured-mode JSON event.
    pub fn from_structured(object: Map<String, Value>) -> Result<Self, EventError> {
        let mut fields = Self::new();
        let mut data = None;
        let mut data_base64 = None;
        for (name, value) in object {
            match name.as_str() {
                "data" => data = Some(value),
                "data_base64" => data_base64 = Some(value),
                _ => {
                    fields.attr(name, value);
                }
            }
        }
        fields.data = match (data, data_base64) {
            (Some(_), Some(_)) => {
                return Err(EventError::new(
                    "data",
                    "an event may carry `data` or `data_base64`, not both",
                ))
            }
            (Some(value), None) => Some(RawData::Json(value)),
            (None, Some(Value::String(encoded))) => Some(RawData::Bytes(
                decode_base64(&encoded)
                    .ok_or_else(|| EventError::new("data_base64", "is not valid base64"))?,
            )),
            (None, Some(_)) => {
                return Err(EventError::new("data_base64", "must be a base64 string"));
            }
            (None, None) => None,
        };
        Ok(fields)
    }

    /// Check every attribute against CloudEvents 1.0 and build the event.
    pub fn build(self) -> Result<Event, EventError> {
        strict::check_sizes(&self.attrs)?;
        let mut builder = EventBuilderV10::new();
        let mut seen = [false; SPEC_ATTRIBUTES.len()];
        let mut content_type: Option<String> = None;
        let mut schema: Option<url::Url> = None;
        for (name, value) in self.attrs {
            if let Some(i) = SPEC_ATTRIBUTES.iter().position(|a| *a == name) {
                if seen[i] {
                    return Err(EventError::new(name, "is given more than once"));
                }
                seen[i] = true;
            }
            builder = match name.as_str() {
                "specversion" => match value.as_str() {
                    Some("1.0") => builder,
                    Some(other) => {
                        return Err(EventError::new(
                            name,
                            format!("unsupported spec version {other:?}; sluice accepts \"1.0\""),
                        ))
                    }
                    None => return Err(EventError::new(name, "must be the string \"1.0\"")),
                },
                "id" => builder.id(required_string(&name, value)?),
                "source" => {
                    let source = required_string(&name, value)?;
                    if source.chars().any(char::is_whitespace) {
                        return Err(EventError::new(
                            name,
                            "must be a URI-reference without spaces",
                        ));
                    }
                    builder.source(source)
                }
                "type" => builder.ty(required_string(&name, value)?),
                "subject" => builder.subject(string(&name, value)?),
                "time" => {
                    let text = string(&name, value)?;
                    let time = DateTime::parse_from_rfc3339(&text).map_err(|e| {
                        EventError::new(
                            &name,
                            format!("{text:?} is not an RFC 3339 timestamp ({e})"),
                        )
                    })?;
                    builder.time(time.with_timezone(&Utc))
                }
                "datacontenttype" => {
                    content_type = Some(string(&name, value)?);
                    builder
                }
                "dataschema" => {
                    let text = string(&name, value)?;
                    schema = Some(url::Url::parse(&text).map_err(|e| {
                        EventError::new(&name, format!("{text:?} is not an absolute URI ({e})"))
                    })?);
                    builder
                }
                _ => {
                    check_extension_name(&name)?;
                    let value = extension_value(&name, value)?;
                    builder.extension(&name, value)
                }
            };
        }
        for required in ["specversion", "id", "source", "type"] {
            if !SPEC_ATTRIBUTES
                .iter()
                .zip(seen)
                .any(|(name, seen)| seen && *name == required)
            {
                return Err(EventError::new(required, "required attribute is missing"));
            }
        }
        let data = match self.data {
            None | Some(RawData::None) => None,
            Some(RawData::Json(Value::Null)) if content_type.is_none() => None,
            Some(RawData::Json(Value::String(s)))
                if content_type.as_deref().is_some_and(|ct| !is_json(ct)) =>
            {
                Some(Data::String(s))
            }
            Some(RawData::Json(v)) => Some(Data::Json(v)),
            Some(RawData::Text(s)) => Some(Data::String(s)),
            Some(RawData::Bytes(b)) => Some(Data::Binary(b)),
        };
        let mut event = builder
            .build()
            .map_err(|e| EventError::new("event", e.to_string()))?;
        if matches!(data, Some(Data::Json(_))) && content_type.is_none() {
            content_type = Some("application/json".to_owned());
        }
        if let Some(data) = data {
            event.set_data_unchecked(data);
        }
        event.set_datacontenttype(content_type);
        event.set_dataschema(schema);
        Ok(event)
    }
}

/// Whether a media type carries JSON (`application/json`, `text/json`, `*+json`).
pub fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
}

fn string(name: &str, value: Value) -> Result<String, EventError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(EventError::new(
            name,
            format!("must be a string, found {}", json_kind(&other)),
        )),
    }
}

fn required_string(name: &str, value: Value) -> Result<String, EventError> {
    let s = string(name, value)?;
    if s.is_empty() {
        return Err(EventError::new(name, "must not be empty"));
    }
    Ok(s)
}

fn check_extension_name(name: &str) -> Result<(), EventError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(EventError::new(
            name,
            "extension attribute names must be lower-case letters and digits (CloudEvents 1.0)",
        ))
    }
}

fn extension_value(name: &str, value: Value) -> Result<ExtensionValue, EventError> {
    match value {
        Value::String(s) => Ok(ExtensionValue::String(s)),
        Value::Bool(b) => Ok(ExtensionValue::Boolean(b)),
        Value::Number(n) if n.is_i64() => Ok(ExtensionValue::Integer(n.as_i64().unwrap_or(0))),
        other => Err(EventError::new(
            name,
            format!(
                "extension values must be a string, boolean or integer, found {}",
                json_kind(&other)
            ),
        )),
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut table = [255u8; 256];
    for (i, c) in ALPHABET.iter().enumerate() {
        table[*c as usize] = i as u8;
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let trimmed = bytes
        .iter()
        .rposition(|b| *b != b'=')
        .map_or(&bytes[..0], |end| &bytes[..=end]);
    if bytes.len() - trimmed.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for b in trimmed {
        let v = table[*b as usize];
        if v == 255 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// One value found in an event at a filter's path.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    Null,
}

impl std::fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Str(s) => write!(f, "{:?}", s.as_ref()),
            FieldValue::Num(n) => write!(f, "{n}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Null => write!(f, "null"),
        }
    }
}

/// Push every leaf value found at `path` (attribute name, then keys into `data`).
/// Arrays are flattened, so a path through an array of objects reaches every element.
pub fn field_values<'a, S: AsRef<str>>(
    event: &'a Event,
    path: &[S],
    out: &mut Vec<FieldValue<'a>>,
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let first = first.as_ref();
    if first == "data" {
        match event.data() {
            Some(Data::Json(value)) => json_values(value, rest, out),
            Some(Data::String(s)) if rest.is_empty() => out.push(FieldValue::Str(Cow::Borrowed(s))),
            _ => {}
        }
        return;
    }
    if !rest.is_empty() {
        return;
    }
    let value = match first {
        "id" => FieldValue::Str(Cow::Borrowed(event.id())),
        "source" => FieldValue::Str(Cow::Borrowed(event.source().as_str())),
        "type" => FieldValue::Str(Cow::Borrowed(event.ty())),
        "specversion" => FieldValue::Str(Cow::Borrowed("1.0")),
        "subject" => match event.subject() {
            Some(s) => FieldValue::Str(Cow::Borrowed(s)),
            None => return,
        },
        "datacontenttype" => match event.datacontenttype() {
            Some(s) => FieldValue::Str(Cow::Borrowed(s)),
            None => return,
        },
        "dataschema" => match event.dataschema() {
            Some(s) => FieldValue::Str(Cow::Borrowed(s.as_str())),
            None => return,
        },
        "time" => match event.time() {
            Some(t) => FieldValue::Str(Cow::Owned(format_time(t))),
            None => return,
        },
        name => match event.extension(name) {
            Some(ExtensionValue::String(s)) => FieldValue::Str(Cow::Borrowed(s)),
            Some(ExtensionValue::Boolean(b)) => FieldValue::Bool(*b),
            Some(ExtensionValue::Integer(i)) => FieldValue::Num(*i as f64),
            None => return,
        },
    };
    out.push(value);
}

fn json_values<'a, S: AsRef<str>>(value: &'a Value, path: &[S], out: &mut Vec<FieldValue<'a>>) {
    match value {
        Value::Array(items) => {
            for item in items {
                json_values(item, path, out);
            }
        }
        Value::Object(map) => {
            if let Some((key, rest)) = path.split_first() {
                if let Some(v) = map.get(key.as_ref()) {
                    json_values(v, rest, out);
                }
            }
        }
        _ if !path.is_empty() => {}
        Value::String(s) => out.push(FieldValue::Str(Cow::Borrowed(s))),
        Value::Number(n) => out.push(FieldValue::Num(n.as_f64().unwrap_or(f64::NAN))),
        Value::Bool(b) => out.push(FieldValue::Bool(*b)),
        Value::Null => out.push(FieldValue::Null),
    }
}

/// The attributes a binary-mode binding carries in headers (HTTP `ce-*`, Kafka
/// `ce_*`): every attribute but `datacontenttype` (which travels as the content
/// type), as text, extensions included.
pub fn binary_attributes(event: &Event) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(8);
    out.push(("specversion".to_owned(), "1.0".to_owned()));
    out.push(("id".to_owned(), event.id().to_owned()));
    out.push(("source".to_owned(), event.source().to_string()));
    out.push(("type".to_owned(), event.ty().to_owned()));
    if let Some(s) = event.subject() {
        out.push(("subject".to_owned(), s.to_owned()));
    }
    if let Some(t) = event.time() {
        out.push(("time".to_owned(), format_time(t)));
    }
    if let Some(s) = event.dataschema() {
        out.push(("dataschema".to_owned(), s.to_string()));
    }
    for (name, value) in event.iter_extensions() {
        let text = match value {
            ExtensionValue::String(s) => s.clone(),
            ExtensionValue::Boolean(b) => b.to_string(),
            ExtensionValue::Integer(i) => i.to_string(),
        };
        out.push((name.to_owned(), text));
    }
    out
}

/// The data of an event as the bytes a binary-mode binding sends.
pub fn data_bytes(event: &Event) -> Vec<u8> {
    match event.data() {
        Some(Data::Json(v)) => serde_json::to_vec(v).unwrap_or_default(),
        Some(Data::String(s)) => s.as_bytes().to_vec(),
        Some(Data::Binary(b)) => b.clone(),
        None => Vec::new(),
    }
}

/// RFC 3339 with the precision the event carried, as CloudEvents bindings write it.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The idempotency key of an event: a UUID (v5) of its `source` and `id`, which
/// CloudEvents requires to be unique together. Storage targets write it as the row
/// key, document `_id` or object name, so a redelivered event overwrites or skips
/// itself instead of adding a duplicate.
///
/// Stored in users' tables and indexes: changing the derivation would duplicate
/// every event written before the change, so it is fixed.
pub fn event_key(event: &Event) -> uuid::Uuid {
    let mut name = Vec::with_capacity(event.source().as_str().len() + event.id().len() + 1);
    name.extend_from_slice(event.source().as_str().as_bytes());
    name.push(0);
    name.extend_from_slice(event.id().as_bytes());
    uuid::Uuid::new_v5(&KEY_NAMESPACE, &name)
}

/// The namespace of [`event_key`] UUIDs (fixed; see there).
const KEY_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5c1c_e0e7_4b1d_4e55_9a7d_2f0c_51ce_e7e5);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn structured(value: Value) -> Result<Event, EventError> {
        let Value::Object(map) = value else {
            panic!("object")
        };
        EventFields::from_structured(map)?.build()
    }

    #[test]
    fn builds_a_valid_event_with_json_data_and_extensions() {
        let event = structured(json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "time": "2024-01-02T03:04:05.123Z", "partitionkey": "k", "n": 3,
            "data": {"a": [1, {"b": "x"}]}
        }))
        .unwrap();
        assert_eq!(event.id(), "1");
        assert_eq!(event.datacontenttype(), Some("application/json"));
        assert_eq!(event.extension("n"), Some(&ExtensionValue::Integer(3)));
        let mut out = Vec::new();
        field_values(&event, &["data", "a", "b"], &mut out);
        assert_eq!(out, vec![FieldValue::Str(Cow::Borrowed("x"))]);
        out.clear();
        field_values(&event, &["time"], &mut out);
        assert_eq!(
            out,
            vec![FieldValue::Str("2024-01-02T03:04:05.123Z".into())]
        );
    }

    #[test]
    fn names_the_field_at_fault() {
        let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        let cases = [
            ("id", Value::Null, "id"),
            ("id", json!(""), "id"),
            ("source", json!(5), "source"),
            ("specversion", json!("0.3"), "specversion"),
            ("time", json!("yesterday"), "time"),
            ("dataschema", json!("not a uri"), "dataschema"),
            ("BadName", json!("x"), "BadName"),
            ("ext", json!(1.5), "ext"),
        ];
        for (field, value, expect) in cases {
            let mut event = base.clone();
            if value.is_null() {
                event.as_object_mut().unwrap().remove(field);
            } else {
                event[field] = value;
            }
            let err = structured(event).unwrap_err();
            assert_eq!(err.field, expect, "{err}");
        }
        let err = structured(json!({"specversion": "1.0", "id": "1", "source": "/s"})).unwrap_err();
        assert_eq!(err.to_string(), "type: required attribute is missing");
    }

    #[test]
    fn decodes_data_base64() {
        let event = structured(json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t",
            "data_base64": "aGVsbG8="
        }))
        .unwrap();
        assert_eq!(event.data(), Some(&Data::Binary(b"hello".to_vec())));
        let err = structured(json!({
            "specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data_base64": "!!"
        }))
        .unwrap_err();
        assert_eq!(err.field, "data_base64");
    }

    #[test]
    fn event_key_is_stable_and_separates_source_from_id() {
        let e = key_event(None);
        assert_eq!(event_key(&e), event_key(&e.clone()));
        assert_eq!(
            event_key(&e).to_string(),
            event_key(&key_event(Some("2020-01-01T00:00:00Z"))).to_string()
        );
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "s1")
            .attr("source", "/")
            .attr("type", "t");
        let other = f.build().unwrap();
        assert_ne!(event_key(&e), event_key(&other));
    }

    fn key_event(time: Option<&str>) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "1")
            .attr("source", "/s")
            .attr("type", "t");
        if let Some(t) = time {
            f.attr("time", t);
        }
        f.build().unwrap()
    }
}
