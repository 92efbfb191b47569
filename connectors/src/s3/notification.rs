//! Bucket notifications to CloudEvents (pure: no I/O).
//!
//! Three bodies are read: the S3 event message structure (`{"Records": [...]}`,
//! `eventVersion` 2.x), MinIO's webhook body (the same records plus top-level
//! `EventName` and `Key`, which are ignored) and Alibaba OSS's
//! (`{"events": [...]}`, the object under `oss`, the region under `region`).
//! S3's test notification (`{"Event": "s3:TestEvent", ...}`) carries no event.
//!
//! Each record becomes one event, as the CloudEvents AWS S3 adapter says:
//!
//! - `type`: `com.amazonaws.s3.` + the event name without a leading `s3:` or
//!   `oss:` (`ObjectCreated:Put`; OSS keeps its own names, `ObjectCreated:PutObject`),
//!   so `type: [{prefix: "com.amazonaws.s3.ObjectCreated:"}]` matches every
//!   store's creations;
//! - `source`: `{eventSource}.{region}.{bucket}` (the region left out when the
//!   record has none), or the source's `event_source`;
//! - `subject`: the object key, URL-decoded (notifications encode keys, `+` for
//!   a space);
//! - `time`: `eventTime`;
//! - `id`: see `record_id` below;
//! - `data`: the record as received; an OSS record also gets an `s3` member, a
//!   copy of its `oss` member, so `data.s3.object.size` means the same for every
//!   store.

use chrono::DateTime;
use serde_json::{Map, Value};
use sluice_router::event::{format_time, Event, EventError, EventFields, RawData};

/// What a notification body holds.
#[derive(Debug)]
pub enum Notice {
    /// S3's test notification, sent when notifications are configured.
    Test,
    Events(Vec<Event>),
}

/// How records become events: the source's settings.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// Refuse records of any other bucket.
    pub bucket: Option<String>,
    /// `source` instead of the adapter's; `{bucket}` and `{region}` are replaced.
    pub event_source: Option<String>,
    /// The largest record, in bytes of JSON.
    pub max_event_bytes: usize,
}

/// The two shapes of record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Format {
    /// S3 and MinIO: `Records[]`, the object under `s3`, the region in `awsRegion`.
    S3,
    /// Alibaba OSS: `events[]`, the object under `oss`, the region in `region`.
    Oss,
}

/// Parse a notification body; every record is checked before any event is
/// returned, so a body is taken whole or refused with the field at fault
/// (`Records[3].s3.object.key`).
pub fn parse(body: &[u8], mapping: &Mapping) -> Result<Notice, EventError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| EventError::new("body", format!("is not JSON ({e})")))?;
    let Value::Object(mut top) = value else {
        return Err(EventError::new(
            "body",
            "must be a JSON object (S3's {\"Records\": [...]} or OSS's {\"events\": [...]})",
        ));
    };
    if top.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notice::Test);
    }
    let (format, list, records) = if let Some(records) = top.remove("Records") {
        (Format::S3, "Records", records)
    } else if let Some(events) = top.remove("events") {
        (Format::Oss, "events", events)
    } else {
        return Err(EventError::new(
            "Records",
            "is missing: expected S3's or MinIO's {\"Records\": [...]} or OSS's {\"events\": [...]}",
        ));
    };
    let Value::Array(records) = records else {
        return Err(EventError::new(list, "must be an array of records"));
    };
    let mut events = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let at = format!("{list}[{i}]");
        events.push(record_event(record, format, mapping, &at)?);
    }
    Ok(Notice::Events(events))
}

/// A string member of `object`; `None` when absent or null.
fn string<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<Option<&'a str>, EventError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(EventError::new(format!("{at}.{name}"), "must be a string")),
    }
}

/// A string member that must be there and not be empty.
fn required<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a str, EventError> {
    match string(object, name, at)? {
        Some(s) if !s.is_empty() => Ok(s),
        Some(_) => Err(EventError::new(format!("{at}.{name}"), "must not be empty")),
        None => Err(EventError::new(format!("{at}.{name}"), "is missing")),
    }
}

/// An object member that must be there.
fn object<'a>(
    parent: &'a Map<String, Value>,
    name: &str,
    at: &str,
) -> Result<&'a Map<String, Value>, EventError> {
    match parent.get(name) {
        Some(Value::Object(o)) => Ok(o),
        Some(_) => Err(EventError::new(format!("{at}.{name}"), "must be an object")),
        None => Err(EventError::new(format!("{at}.{name}"), "is missing")),
    }
}

/// The facts of one record that the event is made of.
struct Facts<'a> {
    event_source: &'a str,
    region: &'a str,
    name: &'a str,
    bucket: &'a str,
    key: String,
    version: &'a str,
    etag: &'a str,
    sequencer: &'a str,
    time: String,
    request_id: &'a str,
    host_id: &'a str,
}

fn facts<'a>(r: &'a Map<String, Value>, format: Format, at: &str) -> Result<Facts<'a>, EventError> {
    let version = string(r, "eventVersion", at)?;
    if format == Format::S3 {
        match version {
            Some(v) if v == "2" || v.starts_with("2.") => {}
            Some(v) => {
                return Err(EventError::new(
                    format!("{at}.eventVersion"),
                    format!("{v:?} is not supported; sluice reads S3 event messages 2.x"),
                ))
            }
            None => return Err(EventError::new(format!("{at}.eventVersion"), "is missing")),
        }
    }
    let event_source = required(r, "eventSource", at)?;
    let name = required(r, "eventName", at)?;
    let time_text = required(r, "eventTime", at)?;
    let time = DateTime::parse_from_rfc3339(time_text).map_err(|e| {
        EventError::new(
            format!("{at}.eventTime"),
            format!("{time_text:?} is not an RFC 3339 timestamp ({e})"),
        )
    })?;
    let (region_field, entity_field) = match format {
        Format::S3 => ("awsRegion", "s3"),
        Format::Oss => ("region", "oss"),
    };
    let region = string(r, region_field, at)?.unwrap_or_default();
    let entity_at = format!("{at}.{entity_field}");
    let entity = object(r, entity_field, at)?;
    let bucket = required(
        object(entity, "bucket", &entity_at)?,
        "name",
        &format!("{entity_at}.bucket"),
    )?;
    let object_at = format!("{entity_at}.object");
    let obj = object(entity, "object", &entity_at)?;
    let raw_key = required(obj, "key", &object_at)?;
    let key =
        decode_key(raw_key).map_err(|why| EventError::new(format!("{object_at}.key"), why))?;
    if let Some(size) = obj.get("size") {
        if size.as_u64().is_none() && !size.is_null() {
            return Err(EventError::new(
                format!("{object_at}.size"),
                "must be a whole number of bytes, 0 or more",
            ));
        }
    }
    let (request_id, host_id) = match r.get("responseElements") {
        None | Some(Value::Null) => ("", ""),
        Some(Value::Object(re)) => {
            let at = format!("{at}.responseElements");
            (
                string(re, "x-amz-request-id", &at)?.unwrap_or_default(),
                string(re, "x-amz-id-2", &at)?.unwrap_or_default(),
            )
        }
        Some(_) => {
            return Err(EventError::new(
                format!("{at}.responseElements"),
                "must be an object",
            ))
        }
    };
    Ok(Facts {
        event_source,
        region,
        name: name
            .strip_prefix("s3:")
            .or_else(|| name.strip_prefix("oss:"))
            .unwrap_or(name),
        bucket,
        key,
        version: string(obj, "versionId", &object_at)?.unwrap_or_default(),
        etag: string(obj, "eTag", &object_at)?.unwrap_or_default(),
        sequencer: string(obj, "sequencer", &object_at)?.unwrap_or_default(),
        time: format_time(&time.with_timezone(&chrono::Utc)),
        request_id,
        host_id,
    })
}

fn record_event(
    record: Value,
    format: Format,
    mapping: &Mapping,
    at: &str,
) -> Result<Event, EventError> {
    let Value::Object(mut r) = record else {
        return Err(EventError::new(
            at,
            "must be a JSON object (one notification record)",
        ));
    };
    let size = serde_json::to_string(&r).map_or(0, |s| s.len());
    if mapping.max_event_bytes > 0 && size > mapping.max_event_bytes {
        return Err(EventError::new(
            at,
            format!(
                "the record ({size} bytes) is larger than server.max_event_bytes ({})",
                mapping.max_event_bytes
            ),
        ));
    }
    let f = facts(&r, format, at)?;
    if let Some(only) = &mapping.bucket {
        if f.bucket != only {
            let field = match format {
                Format::S3 => "s3",
                Format::Oss => "oss",
            };
            return Err(EventError::new(
                format!("{at}.{field}.bucket.name"),
                format!("bucket {:?} is not this source's bucket {only:?}", f.bucket),
            ));
        }
    }
    let source = match &mapping.event_source {
        Some(template) => template
            .replace("{bucket}", f.bucket)
            .replace("{region}", f.region),
        None if f.region.is_empty() => format!("{}.{}", f.event_source, f.bucket),
        None => format!("{}.{}.{}", f.event_source, f.region, f.bucket),
    };
    let id = record_id(&f);
    let mut fields = EventFields::new();
    fields
        .attr("specversion", "1.0")
        .attr("id", id)
        .attr("source", source)
        .attr("type", format!("com.amazonaws.s3.{}", f.name))
        .attr("subject", f.key.as_str())
        .attr("time", f.time.as_str());
    drop(f);
    if format == Format::Oss {
        if let Some(oss) = r.get("oss").cloned() {
            r.insert("s3".to_owned(), oss);
        }
    }
    fields.data(RawData::Json(Value::Object(r)));
    fields
        .build()
        .map_err(|e| EventError::new(at, format!("cannot be a CloudEvent: {e}")))
}

/// What a poll saw of one object, for [`polled_event`].
#[derive(Debug, Clone)]
pub struct Polled<'a> {
    /// `ObjectCreated:Put` or `ObjectRemoved:Delete`.
    pub name: &'a str,
    pub bucket: &'a str,
    pub region: &'a str,
    pub key: &'a str,
    pub size: u64,
    /// The ETag without quotes; empty when unknown (a deletion).
    pub etag: &'a str,
    pub version: Option<&'a str>,
    /// S3's ordering token; a polled deletion carries the hex of the cursor's
    /// hash of the ETag last seen, so its `id` is the same when a pass repeats.
    pub sequencer: &'a str,
    /// The object's last-modified time (creations) or the pass's (deletions).
    pub time: chrono::DateTime<chrono::Utc>,
}

/// The event for an object change a poll found: the S3 notification record the
/// store would have sent (`eventSource` `aws:s3`, version 2.1), mapped by the
/// same code as a notification, so rules and ids are the same either way.
pub fn polled_event(p: &Polled<'_>, mapping: &Mapping) -> Result<Event, EventError> {
    let mut object = serde_json::json!({
        "key": encode_key(p.key),
        "size": p.size,
    });
    if !p.etag.is_empty() {
        object["eTag"] = p.etag.into();
    }
    if let Some(version) = p.version {
        object["versionId"] = version.into();
    }
    if !p.sequencer.is_empty() {
        object["sequencer"] = p.sequencer.into();
    }
    let record = serde_json::json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": p.region,
        "eventTime": format_time(&p.time),
        "eventName": p.name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": p.bucket, "arn": format!("arn:aws:s3:::{}", p.bucket)},
            "object": object,
        },
    });
    record_event(record, Format::S3, mapping, "object")
}

/// `key` URL-encoded as notifications carry keys (the inverse of
/// [`decode_key`]): letters, digits, `-_.~/` kept, a space as `+`, every other
/// byte as `%XX`.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The event's `id`. For an `ObjectCreated` record with both request ids, the
/// adapter's `{x-amz-request-id}.{x-amz-id-2}` (one request creates one object).
/// Otherwise a UUID (v5) of bucket, key, version id, ETag, sequencer and event
/// name (and the event time when the record has none of version, ETag and
/// sequencer): one `DeleteObjects` request notifies a record per object, all
/// with the same request ids, which as ids would make the dedupe window drop
/// all but one. Either way a notification sent again has the same id.
fn record_id(f: &Facts<'_>) -> String {
    const NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x3f1d_8a52_97c4_4e1b_b6d0_5a2e_c9f7_1e83);
    if !f.request_id.is_empty() && !f.host_id.is_empty() && f.name.starts_with("ObjectCreated:") {
        return format!("{}.{}", f.request_id, f.host_id);
    }
    let mut name = Vec::with_capacity(256);
    let mut parts = vec![
        f.bucket,
        f.key.as_str(),
        f.version,
        f.etag,
        f.sequencer,
        f.name,
    ];
    if f.version.is_empty() && f.etag.is_empty() && f.sequencer.is_empty() {
        parts.push(f.time.as_str());
    }
    for part in parts {
        name.extend_from_slice(part.as_bytes());
        name.push(0);
    }
    uuid::Uuid::new_v5(&NAMESPACE, &name).to_string()
}

/// An object key as notifications carry it, URL-encoded (`+` for a space, `%XX`
/// for other bytes), decoded.
pub fn decode_key(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    return Err(format!(
                        "{raw:?} is not URL-encoded: `%` must be followed by two hex digits"
                    ));
                };
                out.push(byte);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("{raw:?} decodes to bytes that are not UTF-8"))
}

#[cfg(test)]
#[path = "notification_tests.rs"]
mod tests;
