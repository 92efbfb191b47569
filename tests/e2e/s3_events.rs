//! The `s3` source, `mode: notify`: bucket notifications (S3, MinIO, Alibaba OSS
//! bodies, written from each format's documentation: `s3_events/*.json`) posted
//! to `POST /sources/{name}/notifications` become CloudEvents mapped as the
//! CloudEvents AWS S3 adapter says, and reach a function through rules on
//! `subject` and `data.s3.object.size`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{validate, Receiver, Sluice};

const S3: &str = include_str!("s3_events/s3.json");
const MINIO: &str = include_str!("s3_events/minio.json");
const OSS: &str = include_str!("s3_events/oss.json");

/// An `s3` source `photos` and a rule sending JPEGs under `uploads/` that are
/// not empty to a function (structured mode, so the test reads the whole event).
fn config(url: &str) -> String {
    format!(
        "sources:
  - name: photos
    type: s3
    mode: notify
    bucket: photos
    bus: files
targets:
  - name: resize
    type: http
    url: {url}
    mode: structured
    timeout: 2s
rules:
  - name: new-uploads
    bus: files
    filter:
      pattern:
        subject: [{{ prefix: \"uploads/\" }}]
        data: {{ s3: {{ object: {{ size: [{{ numeric: [\">\", 0] }}] }} }} }}
    targets: [resize]
    retry: {{ max_attempts: 5, backoff: {{ initial: 50ms, max: 200ms }} }}
"
    )
}

async fn notify(sluice: &Sluice, body: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = sluice
        .client
        .post(sluice.url("/sources/photos/notifications"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn record(key: &str, size: u64) -> Value {
    json!({
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-03-01T12:00:00Z", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "photos", "arn": "arn:aws:s3:::photos"},
               "object": {"key": key, "size": size, "eTag": format!("etag-{key}"), "sequencer": "0A1B2C3D4E5F"}}
    })
}

/// S3, MinIO and OSS bodies for the same upload arrive as the same event: type
/// (OSS keeps its own event names), subject (the key, decoded), time, data.
#[tokio::test]
async fn each_format_arrives_through_a_subject_rule() {
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&config(&recv.url())).await;
    for body in [S3, MINIO, OSS] {
        let (status, answer) = notify(&sluice, body, None).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer, json!({"accepted": 1, "matched": 1}));
    }
    // Outside `uploads/`, or empty: accepted, matched by no rule.
    let other = json!({"Records": [record("thumbs/a.jpg", 10), record("uploads/empty.jpg", 0)]});
    let (status, answer) = notify(&sluice, &other.to_string(), None).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 2, "matched": 0}))
    );

    let got = recv.wait_for(3, Duration::from_secs(10)).await;
    let events: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let expected_types = [
        "com.amazonaws.s3.ObjectCreated:Put",
        "com.amazonaws.s3.ObjectCreated:Put",
        "com.amazonaws.s3.ObjectCreated:PutObject",
    ];
    let expected_sources = [
        "aws:s3.us-west-2.photos",
        "minio:s3.photos",
        "acs:oss.cn-hangzhou.photos",
    ];
    for e in &events {
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["subject"], "uploads/summer holiday(1).jpg", "{e}");
        assert_eq!(e["time"], "2026-03-01T10:15:30.123Z", "{e}");
        assert_eq!(e["datacontenttype"], "application/json", "{e}");
        assert_eq!(e["data"]["s3"]["object"]["size"], 1024, "{e}");
        assert_eq!(e["data"]["s3"]["bucket"]["name"], "photos", "{e}");
        let ty = e["type"].as_str().unwrap();
        let source = e["source"].as_str().unwrap();
        assert!(
            expected_types.contains(&ty) && expected_sources.contains(&source),
            "{e}"
        );
    }
    let s3 = events
        .iter()
        .find(|e| e["source"] == "aws:s3.us-west-2.photos")
        .unwrap();
    assert_eq!(s3["type"], "com.amazonaws.s3.ObjectCreated:Put");
    assert_eq!(
        s3["id"],
        "C3D13FE58DE4C810.FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
    );
    let oss = events
        .iter()
        .find(|e| e["source"] == "acs:oss.cn-hangzhou.photos")
        .unwrap();
    assert_eq!(oss["type"], "com.amazonaws.s3.ObjectCreated:PutObject");
    assert_eq!(
        oss["data"]["oss"]["ruleId"],
        "9adac8e253828f4f7c0466d941fa3db81161****"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.delivered().len(), 3);
}

/// 100 records in one body: each an event; the empty object is not matched; the
/// same body sent again is accepted and dropped as duplicates (same ids).
#[tokio::test]
async fn a_hundred_records_in_one_body() {
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&config(&recv.url())).await;
    let records: Vec<Value> = (0..100)
        .map(|i| record(&format!("uploads/batch/{i:03}.jpg"), i))
        .collect();
    let body = json!({ "Records": records }).to_string();
    let (status, answer) = notify(&sluice, &body, None).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 100, "matched": 99}))
    );
    let got = recv.wait_for(99, Duration::from_secs(20)).await;
    let mut subjects: Vec<String> = got
        .iter()
        .map(|r| r.json()["subject"].as_str().unwrap().to_owned())
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(subjects.len(), 99);
    assert_eq!(subjects[0], "uploads/batch/001.jpg");

    let (status, _) = notify(&sluice, &body, None).await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        recv.delivered().len(),
        99,
        "a re-sent notification is a duplicate"
    );
}

/// A bad body is a 400 naming the field, and nothing of it is published, not
/// even its good records.
#[tokio::test]
async fn malformed_bodies_are_refused_whole_with_the_field() {
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&config(&recv.url())).await;
    let mut bad = record("uploads/4.jpg", 4);
    bad["s3"]["object"].as_object_mut().unwrap().remove("key");
    let body = json!({"Records": [record("uploads/1.jpg", 1), record("uploads/2.jpg", 2), record("uploads/3.jpg", 3), bad]});
    let mut other_bucket = record("uploads/x.jpg", 1);
    other_bucket["s3"]["bucket"]["name"] = json!("secrets");
    let mut oss: Value = serde_json::from_str(OSS).unwrap();
    oss["events"][0]["eventTime"] = json!("last tuesday");
    let cases = [
        (body.to_string(), "Records[3].s3.object.key"),
        (
            json!({"Records": [other_bucket]}).to_string(),
            "Records[0].s3.bucket.name",
        ),
        (oss.to_string(), "events[0].eventTime"),
        ("{\"Records\": [".to_owned(), "body"),
        ("{\"Message\": \"hi\"}".to_owned(), "Records"),
    ];
    for (body, field) in cases {
        let (status, answer) = notify(&sluice, &body, None).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "invalid_event", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{message}");
    }
    let (status, _) = notify(&sluice, S3, None).await;
    assert_eq!(status, 202);
    recv.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = recv.delivered();
    assert_eq!(got.len(), 1, "only the good body's event");
    assert_eq!(got[0].json()["subject"], "uploads/summer holiday(1).jpg");
    let metrics = sluice.metrics().await;
    assert!(
        metrics.contains("sluice_events_rejected_total{bus=\"files\",source=\"photos\"} 5"),
        "{metrics}"
    );
}

/// With `server.auth.ingest_token`, notifications need it (401 otherwise); S3's
/// test notification is answered 200 and delivers nothing.
#[tokio::test]
async fn the_ingest_token_guards_notifications_and_test_events_are_200() {
    let recv = Receiver::start().await;
    let sluice =
        Sluice::start_with_server(&config(&recv.url()), "  auth: { ingest_token: s3cret }\n").await;
    for token in [None, Some("wrong")] {
        let (status, answer) = notify(&sluice, S3, token).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["error"]["code"], "unauthorized");
    }
    let test_event = json!({
        "Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-03-01T10:00:00.000Z",
        "Bucket": "photos", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR"
    });
    let (status, answer) = notify(&sluice, &test_event.to_string(), Some("s3cret")).await;
    assert_eq!(
        (status, answer),
        (200, json!({"accepted": 0, "matched": 0}))
    );
    let (status, _) = notify(&sluice, MINIO, Some("s3cret")).await;
    assert_eq!(status, 202);
    let got = recv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json()["source"], "minio:s3.photos");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        recv.delivered().len(),
        1,
        "the test notification delivered nothing"
    );
}

/// Bad settings are `sluice validate` errors with path and line.
#[test]
fn validate_reports_s3_source_settings() {
    let text = "\
sources:
  - name: a
    type: s3
    mode: poll
  - name: b
    type: s3
    mode: notify
    bucket: Not_A_Bucket
    event_source: has spaces
  - name: c
    type: s3
    bucket: photos
  - name: d
    type: s3
    mode: notify
    prefix: x/
";
    let (code, _, stderr) = validate(text);
    assert_eq!(code, 1, "{stderr}");
    let expect = [
        "sources[0].bucket: is required with `mode: poll`",
        "sources[1].bucket: \"Not_A_Bucket\" is not a bucket name",
        "sources[1].event_source: \"has spaces\" is not a URI-reference",
        "sources[2]: missing field `mode`",
        "sources[3].prefix: is only for `mode: poll`",
    ];
    let lines: Vec<&str> = stderr.lines().collect();
    for e in expect {
        assert!(
            lines.iter().any(|l| l.contains(e)),
            "missing {e:?} in:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{stderr}");
    assert!(stderr.contains("(line 2, column"), "{stderr}");
    assert!(stderr.contains("(line 8, column"), "{stderr}");
    let (code, _, stderr) = validate(
        "sources:\n  - name: photos\n    type: s3\n    mode: notify\n    bucket: photos\n",
    );
    assert_eq!(code, 0, "{stderr}");
}
