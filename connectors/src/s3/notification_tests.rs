use cloudevents::AttributesReader;
use serde_json::{json, Value};

use super::*;

const S3: &str = include_str!("../../../tests/e2e/s3_events/s3.json");
const MINIO: &str = include_str!("../../../tests/e2e/s3_events/minio.json");
const OSS: &str = include_str!("../../../tests/e2e/s3_events/oss.json");

fn events(body: &str, mapping: &Mapping) -> Vec<Event> {
    match parse(body.as_bytes(), mapping).unwrap() {
        Notice::Events(events) => events,
        Notice::Test => panic!("not a test notification"),
    }
}

fn one(body: &str) -> Event {
    let mut all = events(body, &Mapping::default());
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn error(body: &Value, mapping: &Mapping) -> EventError {
    parse(body.to_string().as_bytes(), mapping).unwrap_err()
}

fn data(e: &Event) -> Value {
    match e.data() {
        Some(cloudevents::Data::Json(v)) => v.clone(),
        other => panic!("JSON data expected, got {other:?}"),
    }
}

#[test]
fn each_format_maps_to_the_same_attributes() {
    let s3 = one(S3);
    let minio = one(MINIO);
    let oss = one(OSS);
    for e in [&s3, &minio, &oss] {
        assert_eq!(e.subject(), Some("uploads/summer holiday(1).jpg"));
        assert_eq!(
            e.time()
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "2026-03-01T10:15:30.123Z"
        );
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(data(e)["s3"]["object"]["size"], 1024);
        assert_eq!(data(e)["s3"]["bucket"]["name"], "photos");
    }
    assert_eq!(s3.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(minio.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(oss.ty(), "com.amazonaws.s3.ObjectCreated:PutObject");
    assert_eq!(s3.source().to_string(), "aws:s3.us-west-2.photos");
    assert_eq!(minio.source().to_string(), "minio:s3.photos");
    assert_eq!(oss.source().to_string(), "acs:oss.cn-hangzhou.photos");
    // The record itself, untouched (keys stay encoded in `data`).
    assert_eq!(
        data(&s3)["s3"]["object"]["key"],
        "uploads/summer+holiday%281%29.jpg"
    );
    assert_eq!(data(&oss)["oss"], data(&oss)["s3"]);
}

#[test]
fn ids_follow_the_adapter_when_a_creation_has_request_ids() {
    assert_eq!(
        one(S3).id(),
        "C3D13FE58DE4C810.FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
    );
    // MinIO has no x-amz-id-2, OSS no x-amz ids: derived, and stable.
    let minio = one(MINIO).id().to_owned();
    assert!(uuid::Uuid::parse_str(&minio).is_ok(), "{minio}");
    assert_eq!(one(MINIO).id(), minio);
    assert_ne!(one(OSS).id(), minio);
}

/// The derived id depends on bucket, key, version/etag/sequencer and event name,
/// and on nothing that a re-sent notification changes.
#[test]
fn derived_ids_are_deterministic_and_distinct() {
    let record = |key: &str, etag: &str, name: &str, request: &str| {
        json!({"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "eu-west-1",
            "eventTime": "2026-03-01T10:00:00Z", "eventName": name,
            "responseElements": {"x-amz-request-id": request, "x-amz-id-2": "host"},
            "s3": {"bucket": {"name": "b1"}, "object": {"key": key, "eTag": etag}}
        }]})
        .to_string()
    };
    let id = |body: String| one(&body).id().to_owned();
    // A multi-object delete: one request, one record per object, distinct ids.
    let a = id(record("a", "", "ObjectRemoved:Delete", "R1"));
    let b = id(record("b", "", "ObjectRemoved:Delete", "R1"));
    assert_ne!(a, b);
    // The same delete re-sent (another request id) keeps its id.
    assert_eq!(a, id(record("a", "", "ObjectRemoved:Delete", "R2")));
    // Another etag, another event name: another id.
    let e1 = id(record("a", "e1", "ObjectRemoved:Delete", "R1"));
    assert_ne!(e1, id(record("a", "e2", "ObjectRemoved:Delete", "R1")));
    assert_ne!(
        e1,
        id(record("a", "e1", "ObjectRemoved:DeleteMarkerCreated", "R1"))
    );
    // A creation with both request ids: the adapter's id.
    assert_eq!(id(record("a", "e1", "ObjectCreated:Put", "R1")), "R1.host");
}

#[test]
fn test_notifications_carry_no_event() {
    let body = json!({
        "Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-03-01T10:00:00.000Z",
        "Bucket": "photos", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"
    });
    assert!(matches!(
        parse(body.to_string().as_bytes(), &Mapping::default()),
        Ok(Notice::Test)
    ));
}

#[test]
fn a_batch_maps_every_record_in_order() {
    let records: Vec<Value> = (0..100)
        .map(|i| {
            json!({
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": "2026-03-01T10:00:00Z", "eventName": "ObjectCreated:Put",
                "s3": {"bucket": {"name": "logs"}, "object": {"key": format!("day/{i}.log"), "size": i}}
            })
        })
        .collect();
    let all = events(
        &json!({ "Records": records }).to_string(),
        &Mapping::default(),
    );
    assert_eq!(all.len(), 100);
    assert_eq!(all[42].subject(), Some("day/42.log"));
    let ids: std::collections::HashSet<&str> = all.iter().map(|e| e.id()).collect();
    assert_eq!(ids.len(), 100);
}

#[test]
fn bad_bodies_name_the_field() {
    let good = || -> Value { serde_json::from_str(S3).unwrap() };
    let m = Mapping::default();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|v| {
                v["Records"][0]["s3"]["object"]
                    .as_object_mut()
                    .unwrap()
                    .remove("key")
                    .map(drop)
                    .unwrap()
            }),
            "Records[0].s3.object.key",
        ),
        (
            Box::new(|v| v["Records"][0]["s3"]["object"]["key"] = json!("a%zz")),
            "Records[0].s3.object.key",
        ),
        (
            Box::new(|v| v["Records"][0]["s3"]["object"]["key"] = json!(7)),
            "Records[0].s3.object.key",
        ),
        (
            Box::new(|v| v["Records"][0]["s3"]["object"]["size"] = json!(-1)),
            "Records[0].s3.object.size",
        ),
        (
            Box::new(|v| v["Records"][0]["eventTime"] = json!("yesterday")),
            "Records[0].eventTime",
        ),
        (
            Box::new(|v| v["Records"][0]["eventVersion"] = json!("1.0")),
            "Records[0].eventVersion",
        ),
        (
            Box::new(|v| v["Records"][0]["eventName"] = json!("")),
            "Records[0].eventName",
        ),
        (
            Box::new(|v| {
                v["Records"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("s3")
                    .map(drop)
                    .unwrap()
            }),
            "Records[0].s3",
        ),
        (
            Box::new(|v| v["Records"][0]["s3"]["bucket"] = json!("photos")),
            "Records[0].s3.bucket",
        ),
        (
            Box::new(|v| v["Records"][0]["eventSource"] = json!("aws s3")),
            "Records[0]",
        ),
        (Box::new(|v| v["Records"] = json!({})), "Records"),
        (Box::new(|v| *v = json!({"Other": []})), "Records"),
        (Box::new(|v| *v = json!([1])), "body"),
    ];
    for (change, field) in cases {
        let mut body = good();
        change(&mut body);
        assert_eq!(error(&body, &m).field, field, "{body}");
    }
    assert_eq!(parse(b"{not json", &m).unwrap_err().field, "body");
    // One bad record of four refuses the body: nothing is half-taken.
    let mut body = good();
    let record = body["Records"][0].clone();
    let mut bad = record.clone();
    bad["s3"]["object"]["key"] = json!("");
    body["Records"] = json!([record, record, record, bad]);
    assert_eq!(error(&body, &m).field, "Records[3].s3.object.key");
    // OSS names its own fields.
    let mut oss: Value = serde_json::from_str(OSS).unwrap();
    oss["events"][0]["oss"]["object"]["key"] = json!(null);
    assert_eq!(error(&oss, &m).field, "events[0].oss.object.key");
}

#[test]
fn the_bucket_setting_refuses_other_buckets() {
    let only = |b: &str| Mapping {
        bucket: Some(b.into()),
        ..Mapping::default()
    };
    assert_eq!(events(S3, &only("photos")).len(), 1);
    let s3: Value = serde_json::from_str(S3).unwrap();
    let e = error(&s3, &only("other"));
    assert_eq!(e.field, "Records[0].s3.bucket.name");
    assert!(e.message.contains("\"other\""), "{}", e.message);
    let oss: Value = serde_json::from_str(OSS).unwrap();
    assert_eq!(
        error(&oss, &only("other")).field,
        "events[0].oss.bucket.name"
    );
}

#[test]
fn event_source_overrides_the_source() {
    let m = Mapping {
        event_source: Some("storage://{region}/{bucket}".into()),
        ..Mapping::default()
    };
    assert_eq!(
        events(S3, &m)[0].source().to_string(),
        "storage://us-west-2/photos"
    );
}

#[test]
fn records_over_the_event_limit_are_refused() {
    let m = Mapping {
        max_event_bytes: 100,
        ..Mapping::default()
    };
    let s3: Value = serde_json::from_str(S3).unwrap();
    assert_eq!(error(&s3, &m).field, "Records[0]");
}

#[test]
fn keys_are_url_decoded() {
    assert_eq!(decode_key("a+b%2Fc%C3%A9").unwrap(), "a b/cé");
    assert_eq!(decode_key("plain/key.txt").unwrap(), "plain/key.txt");
    assert!(decode_key("50%").is_err());
    assert!(decode_key("%+1").is_err());
    assert!(decode_key("%ff").is_err());
}

#[test]
fn polled_objects_map_like_notifications_of_the_same_change() {
    let mapping = Mapping::default();
    let time = chrono::DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let seen = Polled {
        name: "ObjectCreated:Put",
        bucket: "photos",
        region: "us-east-1",
        key: "uploads/a b+c.jpg",
        size: 7,
        etag: "abc",
        version: None,
        sequencer: "",
        time,
    };
    let polled = polled_event(&seen, &mapping).unwrap();
    assert_eq!(polled.ty(), "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(polled.source().to_string(), "aws:s3.us-east-1.photos");
    assert_eq!(polled.subject(), Some("uploads/a b+c.jpg"));
    let d = data(&polled);
    assert_eq!(d["s3"]["object"]["size"], 7);
    assert_eq!(d["s3"]["object"]["eTag"], "abc");
    assert_eq!(d["s3"]["object"]["key"], "uploads/a+b%2Bc.jpg");
    // The same object polled again has the same id; a new ETag a new one.
    assert_eq!(polled_event(&seen, &mapping).unwrap().id(), polled.id());
    let changed = Polled {
        etag: "def",
        ..seen.clone()
    };
    assert_ne!(polled_event(&changed, &mapping).unwrap().id(), polled.id());
    // A notification of that upload (no request ids) has the same id.
    let body = json!({"Records": [d]}).to_string();
    assert_eq!(events(&body, &mapping)[0].id(), polled.id());
    assert_eq!(decode_key(&encode_key("ü/%+ x")).unwrap(), "ü/%+ x");
}
