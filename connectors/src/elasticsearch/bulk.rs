//! The `_bulk` API without the network: building the NDJSON body from events, and
//! reading the cluster's answer back into one result per event.

use super::config::DocumentMode;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sluice_router::event::event_key;
use sluice_router::event::Event;
use sluice_router::sink::SinkError;
use sluice_router::transform::NameTemplate;

/// Append the action line and the document of `event` to `body`. `Err` holds why
/// this event cannot be indexed at all (its index name or document cannot be
/// made); `body` is then left as it was.
pub(super) fn append(
    body: &mut Vec<u8>,
    event: &Event,
    index: &NameTemplate,
    document: DocumentMode,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let index = index
        .render(event, &[], now)
        .map_err(|e| format!("index: {e}"))?;
    let start = body.len();
    let written = write_entry(body, event, &index, document);
    if written.is_err() {
        body.truncate(start);
    }
    written
}

fn write_entry(
    body: &mut Vec<u8>,
    event: &Event,
    index: &str,
    document: DocumentMode,
) -> Result<(), String> {
    let json_error =
        |e: serde_json::Error| format!("document: cannot write the event as JSON: {e}");
    let action = json!({"index": {"_index": index, "_id": event_key(event).to_string()}});
    serde_json::to_writer(&mut *body, &action).map_err(json_error)?;
    body.push(b'\n');
    match (document, event.data()) {
        (DocumentMode::Event, _) => serde_json::to_writer(&mut *body, event).map_err(json_error)?,
        (DocumentMode::Data, Some(cloudevents::Data::Json(data @ Value::Object(_)))) => {
            serde_json::to_writer(&mut *body, data).map_err(json_error)?;
        }
        (DocumentMode::Data, other) => {
            return Err(format!(
                "document: `data` mode indexes JSON object data, and this event's data is {}",
                describe(other)
            ))
        }
    }
    body.push(b'\n');
    Ok(())
}

fn describe(data: Option<&cloudevents::Data>) -> &'static str {
    match data {
        None => "missing",
        Some(cloudevents::Data::Binary(_)) => "binary",
        Some(cloudevents::Data::String(_)) => "text",
        Some(cloudevents::Data::Json(Value::Array(_))) => "a JSON array",
        Some(cloudevents::Data::Json(Value::String(_))) => "a JSON string",
        Some(cloudevents::Data::Json(Value::Number(_))) => "a JSON number",
        Some(cloudevents::Data::Json(Value::Bool(_))) => "a JSON boolean",
        Some(cloudevents::Data::Json(_)) => "JSON null",
    }
}

/// The result of each of the `expected` documents of a bulk request, from the
/// cluster's 2xx answer; `Err` when the answer is not a bulk response for that
/// many documents.
pub(super) fn parse_response(
    body: &[u8],
    expected: usize,
) -> Result<Vec<Result<(), SinkError>>, String> {
    let answer: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON ({e})"))?;
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .ok_or("the answer has no `items` list")?;
    if items.len() != expected {
        return Err(format!(
            "the answer has {} items for {expected} documents",
            items.len()
        ));
    }
    items
        .iter()
        .map(|item| {
            // `{"index": {...}}`: the one key names the action.
            let result = item
                .as_object()
                .and_then(|o| o.values().next())
                .ok_or("an item of the answer is not an object")?;
            let status = result
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|s| u16::try_from(s).ok())
                .ok_or("an item of the answer has no status")?;
            Ok(classify_item(status, result.get("error")))
        })
        .collect()
}

/// One document's outcome: 2xx is indexed; 409 (a version conflict: the document
/// is already there) counts as indexed; 429 and 5xx are retried; any other status
/// is this document's own problem (a mapping conflict, an invalid index name) and
/// is final.
pub(super) fn classify_item(status: u16, error: Option<&Value>) -> Result<(), SinkError> {
    if (200..300).contains(&status) || status == 409 {
        return Ok(());
    }
    let message = error.map_or_else(|| format!("HTTP {status}, no reason given"), error_reason);
    let mut error = if status == 429 || status >= 500 {
        SinkError::transient(message)
    } else {
        SinkError::permanent(message)
    };
    error.status = Some(status);
    Err(error)
}

/// `<type>: <reason>` of an Elasticsearch error object, with its first cause;
/// a plain string as it is.
pub(super) fn error_reason(error: &Value) -> String {
    let Some(object) = error.as_object() else {
        return error
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
    };
    let part = |o: &serde_json::Map<String, Value>| {
        let ty = o.get("type").and_then(Value::as_str).unwrap_or("error");
        match o.get("reason").and_then(Value::as_str) {
            Some(reason) => format!("{ty}: {reason}"),
            None => ty.to_owned(),
        }
    };
    let mut text = part(object);
    if let Some(cause) = object.get("caused_by").and_then(Value::as_object) {
        text.push_str(&format!(" (caused by {})", part(cause)));
    }
    text
}

/// The reason in a whole-request error answer (`{"error": ..., "status": N}`), if
/// the body is one.
pub(super) fn request_error_reason(body: &[u8]) -> Option<String> {
    let answer: Value = serde_json::from_slice(body).ok()?;
    answer.get("error").map(error_reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_router::error::ErrorClass;
    use sluice_router::event::{EventFields, RawData};

    fn event(id: &str, time: Option<&str>, data: RawData) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", id)
            .attr("source", "/shop")
            .attr("type", "order.created")
            .data(data);
        if let Some(t) = time {
            f.attr("time", t);
        }
        f.build().unwrap()
    }

    fn lines(body: &[u8]) -> Vec<Value> {
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn body_holds_action_and_document_per_event() {
        let index = NameTemplate::parse("logs-{data.region}-%Y.%m.%d").unwrap();
        let e = event(
            "1",
            Some("2026-03-04T05:06:07Z"),
            RawData::Json(json!({"region": "eu", "n": 1})),
        );
        let mut body = Vec::new();
        append(&mut body, &e, &index, DocumentMode::Event, Utc::now()).unwrap();
        append(&mut body, &e, &index, DocumentMode::Data, Utc::now()).unwrap();
        assert!(body.ends_with(b"\n"));
        let l = lines(&body);
        assert_eq!(l.len(), 4);
        let action =
            json!({"index": {"_index": "logs-eu-2026.03.04", "_id": event_key(&e).to_string()}});
        assert_eq!(l[0], action);
        assert_eq!(l[1], serde_json::to_value(&e).unwrap());
        assert_eq!(l[1]["data"]["n"], 1);
        assert_eq!(l[2], action);
        assert_eq!(l[3], json!({"region": "eu", "n": 1}));
    }

    #[test]
    fn events_that_cannot_be_indexed_leave_the_body_alone() {
        let index = NameTemplate::parse("logs-{data.region}").unwrap();
        let mut body = b"before\n".to_vec();
        let no_field = event("1", None, RawData::Json(json!({"n": 1})));
        let err = append(
            &mut body,
            &no_field,
            &index,
            DocumentMode::Event,
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(err, "index: the event has no data.region");
        let fixed = NameTemplate::parse("logs").unwrap();
        for (data, what) in [
            (RawData::Text("hi".into()), "text"),
            (RawData::Bytes(vec![1, 2]), "binary"),
            (RawData::Json(json!([1])), "a JSON array"),
            (RawData::None, "missing"),
        ] {
            let err = append(
                &mut body,
                &event("2", None, data),
                &fixed,
                DocumentMode::Data,
                Utc::now(),
            )
            .unwrap_err();
            assert!(
                err.starts_with("document: `data` mode") && err.ends_with(what),
                "{err}"
            );
        }
        assert_eq!(body, b"before\n");
    }

    #[test]
    fn events_without_time_use_the_delivery_clock() {
        let index = NameTemplate::parse("logs-%Y").unwrap();
        let mut body = Vec::new();
        let e = event("1", None, RawData::Json(json!({})));
        append(
            &mut body,
            &e,
            &index,
            DocumentMode::Event,
            DateTime::UNIX_EPOCH,
        )
        .unwrap();
        assert_eq!(lines(&body)[0]["index"]["_index"], "logs-1970");
    }

    #[test]
    fn items_are_classified_per_document() {
        // As OpenSearch answers with `filter_path=errors,items.*.status,items.*.error`.
        let answer = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 200}},
            {"create": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "document already exists"}}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception",
                "reason": "failed to parse field [x] of type [long]",
                "caused_by": {"type": "illegal_argument_exception", "reason": "For input string: \"y\""}}}},
            {"index": {"status": 400, "error": {"type": "invalid_index_name_exception", "reason": "Invalid index name [A], must be lowercase"}}},
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "rejected execution"}}},
            {"index": {"status": 503, "error": {"type": "unavailable_shards_exception", "reason": "primary shard is not active"}}},
            {"index": {"status": 404, "error": "index_not_found"}},
        ]});
        let results = parse_response(answer.to_string().as_bytes(), 8).unwrap();
        assert!(results[..3].iter().all(Result::is_ok));
        let err = |i: usize| results[i].clone().unwrap_err();
        assert_eq!(err(3).class, ErrorClass::Permanent);
        assert_eq!(
            err(3).message,
            "mapper_parsing_exception: failed to parse field [x] of type [long] \
             (caused by illegal_argument_exception: For input string: \"y\")"
        );
        assert_eq!(err(3).status, Some(400));
        assert_eq!(err(4).class, ErrorClass::Permanent);
        assert!(err(4)
            .message
            .contains("invalid_index_name_exception: Invalid index name [A]"));
        assert_eq!(err(5).class, ErrorClass::Transient);
        assert_eq!(err(6).class, ErrorClass::Transient);
        assert_eq!(err(7).class, ErrorClass::Permanent);
        assert_eq!(err(7).message, "index_not_found");
    }

    #[test]
    fn answers_that_are_not_bulk_responses_are_named() {
        let cases: [(&[u8], usize, &str); 5] = [
            (b"<html>proxy</html>", 1, "not JSON"),
            (br#"{"acknowledged": true}"#, 1, "no `items`"),
            (
                br#"{"items": [{"index": {"status": 201}}]}"#,
                2,
                "1 items for 2 documents",
            ),
            (br#"{"items": [7]}"#, 1, "not an object"),
            (br#"{"items": [{"index": {}}]}"#, 1, "no status"),
        ];
        for (body, expected, want) in cases {
            let err = parse_response(body, expected).unwrap_err();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn whole_request_errors_give_their_reason() {
        let body = br#"{"error":{"type":"parse_exception","reason":"request body is required"},"status":400}"#;
        assert_eq!(
            request_error_reason(body).unwrap(),
            "parse_exception: request body is required"
        );
        assert_eq!(request_error_reason(b"Bad Gateway"), None);
    }
}
