//! Reading context attributes, extensions and (sluice's extension) payload fields
//! from an event, borrowing rather than copying.

use std::borrow::Cow;
use std::cell::OnceCell;

use cloudevents::event::{ExtensionValue, SpecVersion};
use cloudevents::{AttributesReader, Data};
use serde_json::Value as Json;

use super::value::Val;
use crate::event::{format_time, is_json, Event};

/// An attribute name, resolved when the expression is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attr {
    SpecVersion,
    Id,
    Source,
    Type,
    Subject,
    Time,
    DataContentType,
    DataSchema,
    /// Any other name: an extension attribute (lower-case).
    Extension(String),
}

impl Attr {
    pub(crate) fn from_name(name: String) -> Attr {
        match name.as_str() {
            "specversion" => Attr::SpecVersion,
            "id" => Attr::Id,
            "source" => Attr::Source,
            "type" => Attr::Type,
            "subject" => Attr::Subject,
            "time" => Attr::Time,
            "datacontenttype" => Attr::DataContentType,
            "dataschema" => Attr::DataSchema,
            _ => Attr::Extension(name),
        }
    }

    pub(crate) fn name(&self) -> &str {
        match self {
            Attr::SpecVersion => "specversion",
            Attr::Id => "id",
            Attr::Source => "source",
            Attr::Type => "type",
            Attr::Subject => "subject",
            Attr::Time => "time",
            Attr::DataContentType => "datacontenttype",
            Attr::DataSchema => "dataschema",
            Attr::Extension(name) => name,
        }
    }

    /// The attribute's value; `None` when the event does not have it. URIs and
    /// timestamps are strings; an integer extension outside 32 bits is a string.
    pub(crate) fn read<'a>(&self, event: &'a Event) -> Option<Val<'a>> {
        let text = |s: &'a str| Some(Val::Str(Cow::Borrowed(s)));
        match self {
            Attr::SpecVersion => text(match event.specversion() {
                SpecVersion::V03 => "0.3",
                SpecVersion::V10 => "1.0",
            }),
            Attr::Id => text(event.id()),
            Attr::Source => text(event.source().as_str()),
            Attr::Type => text(event.ty()),
            Attr::Subject => event.subject().and_then(text),
            Attr::Time => event.time().map(|t| Val::Str(Cow::Owned(format_time(t)))),
            Attr::DataContentType => event.datacontenttype().and_then(text),
            Attr::DataSchema => event.dataschema().and_then(|u| text(u.as_str())),
            Attr::Extension(name) => match event.extension(name)? {
                ExtensionValue::String(s) => text(s),
                ExtensionValue::Boolean(b) => Some(Val::Bool(*b)),
                ExtensionValue::Integer(i) => Some(match i32::try_from(*i) {
                    Ok(i) => Val::Int(i),
                    Err(_) => Val::Str(Cow::Owned(i.to_string())),
                }),
            },
        }
    }

    pub(crate) fn exists(&self, event: &Event) -> bool {
        match self {
            Attr::SpecVersion | Attr::Id | Attr::Source | Attr::Type => true,
            Attr::Subject => event.subject().is_some(),
            Attr::Time => event.time().is_some(),
            Attr::DataContentType => event.datacontenttype().is_some(),
            Attr::DataSchema => event.dataschema().is_some(),
            Attr::Extension(name) => event.extension(name).is_some(),
        }
    }
}

/// `data.a.b`: a path into the event's JSON payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DataPath {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    key: String,
    /// The key as an array index, when it is one.
    index: Option<usize>,
}

impl DataPath {
    pub(crate) fn new(keys: Vec<String>) -> DataPath {
        let segments = keys
            .into_iter()
            .map(|key| Segment {
                index: if key.bytes().all(|b| b.is_ascii_digit()) {
                    key.parse().ok()
                } else {
                    None
                },
                key,
            })
            .collect();
        DataPath { segments }
    }

    /// `data.a.b` as written, for messages.
    pub(crate) fn text(&self) -> String {
        let mut out = String::from("data");
        for s in &self.segments {
            out.push('.');
            out.push_str(&s.key);
        }
        out
    }

    /// The field, or why there is none.
    pub(crate) fn read<'a>(&self, payload: &'a Payload<'_>) -> Result<Val<'a>, Absent<'a>> {
        json_value(self.locate(payload)?).ok_or(Absent::Null)
    }

    /// Whether the field is present and not null.
    pub(crate) fn exists(&self, payload: &Payload<'_>) -> bool {
        self.locate(payload).is_ok_and(|v| !v.is_null())
    }

    fn locate<'a>(&self, payload: &'a Payload<'_>) -> Result<&'a Json, Absent<'a>> {
        let mut here = payload.json()?;
        for segment in &self.segments {
            let next = match here {
                Json::Object(map) => map.get(&segment.key),
                Json::Array(items) => segment.index.and_then(|i| items.get(i)),
                _ => None,
            };
            here = next.ok_or(Absent::NoField)?;
        }
        Ok(here)
    }
}

/// Why a payload field could not be read. Cheap to make: the message is only
/// written for the error that is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent<'a> {
    NoPayload,
    NotJson(&'a str),
    InvalidJson(&'a str),
    NoField,
    Null,
}

impl Absent<'_> {
    pub(crate) fn describe(self, path: &DataPath) -> String {
        let path = path.text();
        match self {
            Absent::NoPayload => format!("{path}: the event has no payload"),
            Absent::NotJson(ct) => {
                format!("{path}: the payload is not JSON (datacontenttype {ct})")
            }
            Absent::InvalidJson(e) => format!("{path}: the payload is not valid JSON ({e})"),
            Absent::NoField => format!("the payload has no field {path}"),
            Absent::Null => format!("the payload field {path} is null"),
        }
    }
}

/// JSON -> CESQL: integers in 32 bits are Integer, strings String, booleans
/// Boolean, null is missing; any other value is a String: a number as JSON writes
/// it (`1.5`, `3000000000`; a float with no fraction in 32 bits is an Integer), an
/// object or array as compact JSON.
fn json_value(value: &Json) -> Option<Val<'_>> {
    Some(match value {
        Json::Null => return None,
        Json::Bool(b) => Val::Bool(*b),
        Json::String(s) => Val::Str(Cow::Borrowed(s)),
        Json::Number(n) => {
            if let Some(i) = n.as_i64().and_then(|i| i32::try_from(i).ok()) {
                Val::Int(i)
            } else {
                match n.as_f64() {
                    Some(f)
                        if f.fract() == 0.0
                            && f >= f64::from(i32::MIN)
                            && f <= f64::from(i32::MAX) =>
                    {
                        // In range and integral, so the conversion is exact.
                        Val::Int(f as i32)
                    }
                    _ => Val::Str(Cow::Owned(n.to_string())),
                }
            }
        }
        Json::Array(_) | Json::Object(_) => Val::Str(Cow::Owned(value.to_string())),
    })
}

/// The payload of the event being evaluated, parsed at most once per evaluation
/// and only if the expression reads a `data.` field.
pub(crate) struct Payload<'e> {
    event: &'e Event,
    parsed: OnceCell<Result<Json, String>>,
}

impl<'e> Payload<'e> {
    pub(crate) fn new(event: &'e Event) -> Self {
        Self {
            event,
            parsed: OnceCell::new(),
        }
    }

    /// The payload as JSON: `Data::Json` as it is; text or bytes parsed when the
    /// content type is JSON or absent.
    pub(crate) fn json(&self) -> Result<&Json, Absent<'_>> {
        let bytes: &[u8] = match self.event.data() {
            Some(Data::Json(value)) => return Ok(value),
            None => return Err(Absent::NoPayload),
            Some(Data::String(s)) => s.as_bytes(),
            Some(Data::Binary(b)) => b,
        };
        if let Some(ct) = self.event.datacontenttype() {
            if !is_json(ct) {
                return Err(Absent::NotJson(ct));
            }
        }
        self.parsed
            .get_or_init(|| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| Absent::InvalidJson(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFields;
    use serde_json::json;

    fn event(value: Json) -> Event {
        let Json::Object(map) = value else {
            panic!("object")
        };
        EventFields::from_structured(map).unwrap().build().unwrap()
    }

    fn base() -> Json {
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"})
    }

    fn read(event: &Event, path: &str) -> Result<Option<String>, String> {
        let payload = Payload::new(event);
        let path = DataPath::new(path.split('.').map(str::to_owned).collect());
        let value = path.read(&payload).map_err(|e| e.describe(&path))?;
        Ok(Some(format!("{:?}", value.into_value())))
    }

    #[test]
    fn reads_nested_fields_and_array_items() {
        let mut e = base();
        e["data"] = json!({"a": {"b": {"c": 7}}, "items": [{"n": "x"}, {"n": "y"}],
            "big": 3_000_000_000_i64, "f": 1.5, "whole": 2.0, "t": true, "o": {"k": [1]},
            "nothing": null});
        let e = event(e);
        assert_eq!(read(&e, "a.b.c").unwrap(), Some("Integer(7)".into()));
        assert_eq!(read(&e, "items.1.n").unwrap(), Some("String(\"y\")".into()));
        assert_eq!(
            read(&e, "big").unwrap(),
            Some("String(\"3000000000\")".into())
        );
        assert_eq!(read(&e, "f").unwrap(), Some("String(\"1.5\")".into()));
        assert_eq!(read(&e, "whole").unwrap(), Some("Integer(2)".into()));
        assert_eq!(read(&e, "t").unwrap(), Some("Boolean(true)".into()));
        assert_eq!(
            read(&e, "o").unwrap(),
            Some("String(\"{\\\"k\\\":[1]}\")".into())
        );
        assert!(read(&e, "nothing").unwrap_err().contains("null"));
        assert!(read(&e, "a.x").unwrap_err().contains("data.a.x"));
        assert!(read(&e, "items.2.n").is_err());
        assert!(read(&e, "a.b.c.d").is_err());
    }

    #[test]
    fn parses_json_text_and_bytes_but_not_other_media_types() {
        let mut e = base();
        e["datacontenttype"] = json!("application/cloudevents+json");
        e["data_base64"] = json!("eyJhIjogMX0="); // {"a": 1}
        assert_eq!(read(&event(e), "a").unwrap(), Some("Integer(1)".into()));

        let mut e = base();
        e["datacontenttype"] = json!("text/plain");
        e["data"] = json!("{\"a\": 1}");
        assert!(read(&event(e), "a").unwrap_err().contains("not JSON"));

        let mut e = base();
        e["datacontenttype"] = json!("application/json");
        e["data_base64"] = json!("bm90IGpzb24="); // not json
        assert!(read(&event(e), "a").unwrap_err().contains("not valid JSON"));

        assert!(read(&event(base()), "a")
            .unwrap_err()
            .contains("no payload"));
    }

    #[test]
    fn attributes_and_extensions() {
        let mut e = base();
        e["subject"] = json!("sub");
        e["big"] = json!(1_i64 << 40);
        e["small"] = json!(-5);
        let e = event(e);
        let value = |a: Attr| a.read(&e).map(|v| format!("{:?}", v.into_value()));
        assert_eq!(value(Attr::SpecVersion), Some("String(\"1.0\")".into()));
        assert_eq!(value(Attr::Subject), Some("String(\"sub\")".into()));
        assert_eq!(value(Attr::Time), None);
        assert_eq!(
            value(Attr::from_name("big".into())),
            Some("String(\"1099511627776\")".into())
        );
        assert_eq!(
            value(Attr::from_name("small".into())),
            Some("Integer(-5)".into())
        );
        assert!(Attr::Id.exists(&e));
        assert!(!Attr::from_name("nope".into()).exists(&e));
    }
}
