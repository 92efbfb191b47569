//! The `s3` source, `mode: poll`, against the S3 test server (`SLUICE_TEST_S3`,
//! a fresh bucket per test): object creations, overwrites and deletions become
//! the same CloudEvents as notifications of them; the cursor survives `kill -9`
//! without losing or doubling an event; `content: inline` carries the object;
//! and a bucket -> jq -> PostgreSQL ETL writes its rows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde_json::{json, Value};

use crate::harness::{validate, Receiver, Sluice};
use crate::postgres::{self, Db};
use crate::s3::{bucket, client, endpoint};

/// A polling source `name` on `bucket` (every 200ms) with extra settings
/// (indented four spaces).
fn source(name: &str, bucket: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: s3\n    mode: poll\n    endpoint: {}\n    bucket: {bucket}\n    path_style: true\n    interval: 200ms\n{extra}",
        endpoint()
    )
}

/// `sources` delivering every event of bus `bus` to `url` (structured mode).
fn config(sources: &str, url: &str, bus: &str) -> String {
    format!(
        "sources:\n{sources}targets:\n  - name: fn\n    type: http\n    url: {url}\n    mode: structured\n    timeout: 5s\n\
rules:\n  - name: all\n    bus: {bus}\n    filter: {{ pattern: {{ type: [{{ prefix: \"com.amazonaws.s3.\" }}] }} }}\n    targets: [fn]\n    retry: {{ max_attempts: 1000, max_age: 1h, backoff: {{ initial: 50ms, max: 200ms }} }}\n"
    )
}

/// Put `objects` (key, body) into the bucket, 32 at a time; their ETags by key.
async fn put_all(s3: &AmazonS3, objects: Vec<(String, Vec<u8>)>) -> BTreeMap<String, String> {
    futures::stream::iter(objects)
        .map(|(key, body)| async move {
            let put = s3
                .put(&Path::from(key.as_str()), PutPayload::from(body))
                .await
                .unwrap();
            (
                key,
                put.e_tag.unwrap_or_default().trim_matches('"').to_owned(),
            )
        })
        .buffer_unordered(32)
        .collect()
        .await
}

/// The delivered events, parsed.
fn events(recv: &Receiver) -> Vec<Value> {
    recv.delivered().iter().map(|r| r.json()).collect()
}

/// Wait until source `name`'s status satisfies `want` (or fail after 30 s).
async fn wait_status(sluice: &Sluice, name: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = sluice.get_json(&format!("/api/sources/{name}")).await;
        if want(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "status never settled: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Post a MinIO notification of `key` put into `bucket` to source `hook`; the
/// answer's status.
async fn notify_put(sluice: &Sluice, bucket: &str, key: &str, size: u64, etag: &str) -> u16 {
    let record = json!({"Records": [{
        "eventVersion": "2.1", "eventSource": "minio:s3", "awsRegion": "",
        "eventTime": "2026-03-01T12:00:00Z", "eventName": "s3:ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag}}
    }]});
    let r = sluice
        .client
        .post(sluice.url("/sources/hook/notifications"))
        .json(&record)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// 1,000 objects under two prefixes: exactly the configured prefix's 500
/// arrive, with subject, size and ETag; overwriting 10 gives 10 events with the
/// new ETags; deleting 5 gives 5 `ObjectRemoved:Delete`; nothing else arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creations_overwrites_and_deletions_under_the_prefix() {
    let name = bucket("poll");
    let s3 = client(&name);
    let objects = |prefix: &str, body: &str| -> Vec<(String, Vec<u8>)> {
        (0..500)
            .map(|i| {
                (
                    format!("{prefix}/{i:04}.txt"),
                    format!("{body} {i}").into_bytes(),
                )
            })
            .collect()
    };
    let mut etags = put_all(&s3, objects("in", "first")).await;
    put_all(&s3, objects("out", "other")).await;
    let recv = Receiver::start().await;
    let sources = source(
        "files",
        &name,
        "    prefix: in/\n    start: all\n    deletes: true\n",
    );
    let sluice = Sluice::start(&config(&sources, &recv.url(), "default")).await;

    recv.wait_for(500, Duration::from_secs(60)).await;
    let got = events(&recv);
    let subjects: BTreeSet<&str> = got.iter().map(|e| e["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), 500);
    for e in &got {
        let key = e["subject"].as_str().unwrap();
        assert!(key.starts_with("in/"), "{e}");
        assert_eq!(e["type"], "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(e["source"], format!("aws:s3.us-east-1.{name}"));
        let object = &e["data"]["s3"]["object"];
        let n: usize = key[3..7].parse().unwrap();
        assert_eq!(object["size"], format!("first {n}").len(), "{e}");
        assert_eq!(object["eTag"], etags[key], "{e}");
    }

    let overwrites: Vec<(String, Vec<u8>)> = (0..10)
        .map(|i| (format!("in/{i:04}.txt"), format!("second {i}").into_bytes()))
        .collect();
    etags.extend(put_all(&s3, overwrites).await);
    recv.wait_for(510, Duration::from_secs(30)).await;
    for i in 0..5 {
        s3.delete(&Path::from(format!("in/{:04}.txt", 100 + i)))
            .await
            .unwrap();
    }
    recv.wait_for(515, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let got = events(&recv);
    assert_eq!(got.len(), 515, "nothing else arrives");
    let changed: Vec<&Value> = got[500..510].iter().collect();
    for e in changed {
        let key = e["subject"].as_str().unwrap();
        assert_eq!(e["type"], "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(e["data"]["s3"]["object"]["eTag"], etags[key], "{e}");
        assert!(key < "in/0010", "{e}");
    }
    let removed: BTreeSet<&str> = got[510..]
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "com.amazonaws.s3.ObjectRemoved:Delete", "{e}");
            e["subject"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        removed,
        BTreeSet::from([
            "in/0100.txt",
            "in/0101.txt",
            "in/0102.txt",
            "in/0103.txt",
            "in/0104.txt"
        ])
    );
    let ids: BTreeSet<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 515, "every event its own id");
    let status = sluice.get_json("/api/sources/files").await;
    assert_eq!(status["state"], "polling", "{status}");
    assert_eq!(status["objects"], 495, "{status}");
    assert_eq!(status["events"], 515, "{status}");
}

/// `start: now` takes what is in the bucket as seen; `start: all` publishes it;
/// both publish what comes after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_now_skips_what_is_there_and_all_publishes_it() {
    let name = bucket("start");
    let s3 = client(&name);
    let before: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("a/{i:02}"), b"x".to_vec()))
        .collect();
    put_all(&s3, before).await;
    let recv = Receiver::start().await;
    let sources = format!(
        "{}{}",
        source("now", &name, "    event_source: now.{bucket}\n"),
        source(
            "all",
            &name,
            "    start: all\n    event_source: all.{bucket}\n"
        ),
    );
    let sluice = Sluice::start(&config(&sources, &recv.url(), "default")).await;
    for s in ["now", "all"] {
        wait_status(&sluice, s, |st| st["passes"].as_u64() >= Some(1)).await;
    }
    put_all(&s3, vec![("a/new".into(), b"y".to_vec())]).await;
    recv.wait_for(22, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = events(&recv);
    let from = |source: &str| -> BTreeSet<String> {
        got.iter()
            .filter(|e| e["source"] == format!("{source}.{name}"))
            .map(|e| e["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(from("now"), BTreeSet::from(["a/new".to_owned()]));
    assert_eq!(from("all").len(), 21);
    assert_eq!(got.len(), 22);
}

/// `kill -9` while a pass over 5,000 new objects is half done (held there by
/// `server.max_backlog`: the function answers 503 until the restart), then a
/// restart on the same data dir: every object's event is delivered, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pass_loses_no_event_and_doubles_none() {
    let name = bucket("kill");
    let s3 = client(&name);
    let objects: Vec<(String, Vec<u8>)> = (0..5000)
        .map(|i| (format!("k/{i:05}"), format!("{i}").into_bytes()))
        .collect();
    put_all(&s3, objects).await;
    let recv = Receiver::start().await;
    recv.script(&[], 503);
    let text = config(
        &source("bulk", &name, "    start: all\n"),
        &recv.url(),
        "default",
    );
    let mut sluice = Sluice::start_with_server(&text, "  max_backlog: 1000\n").await;
    let status = wait_status(&sluice, "bulk", |s| s["events"].as_u64() >= Some(1000)).await;
    assert!(status["events"].as_u64() < Some(5000), "mid-pass: {status}");
    sluice.kill9();
    sluice.spawn().await;
    recv.script(&[], 200);
    recv.wait_for(5000, Duration::from_secs(120)).await;
    wait_status(&sluice, "bulk", |s| s["passes"].as_u64() >= Some(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut subjects = BTreeSet::new();
    for e in events(&recv) {
        *by_id
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
        subjects.insert(e["subject"].as_str().unwrap().to_owned());
    }
    let twice: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(subjects.len(), 5000, "every object's event");
    assert_eq!(by_id.len(), 5000);
}

/// A bucket that cannot be listed shows on `/readyz` and in the source's
/// status with the server's reason; once it exists the source is ready.
#[tokio::test]
async fn a_listing_error_shows_on_readyz_and_in_the_status() {
    let name = format!("missing-{:x}", std::process::id());
    let recv = Receiver::start().await;
    let text = config(&source("gone", &name, ""), &recv.url(), "default");
    let sluice = Sluice::start_unready(&text).await;
    let (status, body) = sluice
        .wait_readyz(Duration::from_secs(20), |s, b| {
            s == 503 && b["sources"].is_array()
        })
        .await;
    assert_eq!(status, 503);
    let reason = body["sources"][0]["reason"].as_str().unwrap();
    assert_eq!(body["sources"][0]["source"], "gone");
    assert!(
        reason.contains("NoSuchBucket") && reason.contains(&name),
        "{reason}"
    );
    let st = sluice.get_json("/api/sources/gone").await;
    assert_eq!(st["state"], "failing", "{st}");
    assert!(
        st["error"].as_str().unwrap().contains("NoSuchBucket"),
        "{st}"
    );

    // An endpoint where nothing listens: the same, with the connection error.
    let down = source("down", "photos", "").replace(&endpoint(), "http://127.0.0.1:9");
    let sluice2 = Sluice::start_unready(&config(&down, &recv.url(), "default")).await;
    let (_, body) = sluice2
        .wait_readyz(Duration::from_secs(60), |s, b| {
            s == 503 && b["sources"].is_array()
        })
        .await;
    assert!(
        body["sources"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("listing bucket photos at http://127.0.0.1:9"),
        "{body}"
    );

    std::fs::create_dir(
        std::path::Path::new(&std::env::var("SLUICE_TEST_S3_ROOT").unwrap()).join(&name),
    )
    .unwrap();
    sluice
        .wait_readyz(Duration::from_secs(20), |s, _| s == 200)
        .await;
    let st = sluice.get_json("/api/sources/gone").await;
    assert_eq!(st["state"], "polling", "{st}");
}

/// `content: inline`: a small JSON object arrives as JSON data, small bytes as
/// `data_base64`, an object over `server.max_event_bytes` as its record with a
/// `dataref`; a notification (`mode: notify`) of the JSON object reads it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_content_and_dataref_over_the_limit() {
    let name = bucket("inline");
    let s3 = client(&name);
    let big = vec![b'z'; 3000];
    let etags = put_all(
        &s3,
        vec![
            (
                "doc.json".into(),
                br#"{"order": 7, "lines": [1, 2]}"#.to_vec(),
            ),
            ("note.bin".into(), b"\x00hi".to_vec()),
            ("big.bin".into(), big),
        ],
    )
    .await;
    let recv = Receiver::start().await;
    let sources = format!(
        "{}  - name: hook\n    type: s3\n    mode: notify\n    bus: hooks\n    bucket: {name}\n    endpoint: {}\n    path_style: true\n    content: inline\n",
        source("docs", &name, "    start: all\n    content: inline\n"),
        endpoint()
    );
    let text = format!(
        "{}  - name: hooks\n    bus: hooks\n    filter: {{ pattern: {{ type: [{{ prefix: \"com.amazonaws.s3.\" }}] }} }}\n    targets: [fn]\n",
        config(&sources, &recv.url(), "default")
    );
    let sluice = Sluice::start_with_server(&text, "  max_event_bytes: 2048\n").await;
    recv.wait_for(3, Duration::from_secs(30)).await;
    let got = events(&recv);
    let by_key = |key: &str| got.iter().find(|e| e["subject"] == key).unwrap().clone();
    let doc = by_key("doc.json");
    assert_eq!(doc["datacontenttype"], "application/json");
    assert_eq!(doc["data"], json!({"order": 7, "lines": [1, 2]}));
    assert!(doc.get("dataref").is_none(), "{doc}");
    let note = by_key("note.bin");
    assert_eq!(note["data_base64"], "AGhp", "{note}");
    let big = by_key("big.bin");
    assert_eq!(big["dataref"], format!("s3://{name}/big.bin"), "{big}");
    assert_eq!(
        big["data"]["s3"]["object"]["size"], 3000,
        "the record, not a cut body"
    );

    let status = notify_put(&sluice, &name, "doc.json", 30, &etags["doc.json"]).await;
    assert_eq!(status, 202);
    recv.wait_for(4, Duration::from_secs(10)).await;
    let notified = events(&recv).pop().unwrap();
    assert_eq!(notified["source"], format!("minio:s3.{name}"));
    assert_eq!(notified["data"], json!({"order": 7, "lines": [1, 2]}));
}

/// An object the server fails to serve (here a key that is a link to a folder,
/// which s3s-fs lists but cannot read) is not skipped: the poller shows the
/// error in its status and on `/readyz`, keeps trying, and publishes the object
/// once it can be read; a notification of it is answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_object_is_retried_not_dropped() {
    let name = bucket("unreadable");
    let root = std::env::var("SLUICE_TEST_S3_ROOT").unwrap();
    let link = std::path::Path::new(&root).join(&name).join("doc.json");
    let folder = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(folder.path(), &link).unwrap();
    let recv = Receiver::start().await;
    let sources = format!(
        "{}  - name: hook\n    type: s3\n    mode: notify\n    bus: hooks\n    bucket: {name}\n    endpoint: {}\n    path_style: true\n    content: inline\n",
        source("docs", &name, "    start: all\n    content: inline\n"),
        endpoint()
    );
    let sluice = Sluice::start_unready(&config(&sources, &recv.url(), "default")).await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(30), |s, b| {
            s == 503 && b["sources"].is_array()
        })
        .await;
    let reason = body["sources"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("s3://{name}/doc.json")),
        "{reason}"
    );
    let st = sluice.get_json("/api/sources/docs").await;
    assert_eq!(st["state"], "failing", "{st}");
    assert_eq!(recv.delivered().len(), 0);
    // A notification of it is refused whole (503), so the store sends it again.
    assert_eq!(notify_put(&sluice, &name, "doc.json", 10, "").await, 503);

    std::fs::remove_file(&link).unwrap();
    put_all(
        &client(&name),
        vec![("doc.json".into(), br#"{"ok": true}"#.to_vec())],
    )
    .await;
    // Between the link's removal and the put, a retry can find no object at
    // all: that event says so with a `dataref` (the object is gone, not
    // unreadable), and the put is an event of its own with the content.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = recv.delivered();
        if got.iter().any(|r| r.json()["data"] == json!({"ok": true})) {
            break;
        }
        let data: Vec<Value> = got.iter().map(|r| r.json()["data"].clone()).collect();
        assert!(
            Instant::now() < deadline,
            "no event with the object's content: {data:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sluice
        .wait_readyz(Duration::from_secs(20), |s, _| s == 200)
        .await;
}

/// The ETL: JSON files landing in a bucket -> a rule on `suffix: .json` -> a jq
/// transform -> rows in a PostgreSQL table; other files are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_files_in_a_bucket_become_rows() {
    let name = bucket("etl");
    let s3 = client(&name);
    let db = Db::new("s3etl").await;
    db.exec(
        "CREATE TABLE {s}.sales (file text, shop text, amount numeric, event_key uuid PRIMARY KEY)",
    )
    .await;
    let columns = "    columns:\n      file: { path: $.data.file, type: text }\n      shop: { path: $.data.shop, type: text }\n      amount: { path: $.data.amount, type: numeric }\n";
    let text = format!(
        "sources:\n{}targets:\n{}rules:\n  - name: sales\n    filter: {{ pattern: {{ subject: [{{ suffix: \".json\" }}] }} }}\n    transform:\n      jq: '{{file: .subject, shop: .data.shop, amount: (.data.items | map(.price) | add)}}'\n    targets: [pg]\n",
        source("landing", &name, "    prefix: sales/\n    content: inline\n"),
        postgres::target(&db, "pg", "sales", columns),
    );
    let sluice = Sluice::start(&text).await;
    wait_status(&sluice, "landing", |s| s["passes"].as_u64() >= Some(1)).await;
    put_all(
        &s3,
        vec![
            (
                "sales/berlin.json".into(),
                br#"{"shop": "berlin", "items": [{"price": 10}, {"price": 2.5}]}"#.to_vec(),
            ),
            (
                "sales/paris.json".into(),
                br#"{"shop": "paris", "items": [{"price": 7}]}"#.to_vec(),
            ),
            ("sales/readme.txt".into(), b"not a sale".to_vec()),
        ],
    )
    .await;
    db.wait_rows("sales", 2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let rows = db
        .client
        .query(
            &format!(
                "SELECT file, shop, amount::text FROM {}.sales ORDER BY file",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let rows: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        rows,
        [
            ("sales/berlin.json".into(), "berlin".into(), "12.5".into()),
            ("sales/paris.json".into(), "paris".into(), "7".into()),
        ]
    );
}

/// Each new setting's mistakes are `sluice validate` errors with their path.
#[test]
fn validate_reports_poll_and_content_settings() {
    let text = "\
sources:
  - name: a
    type: s3
    mode: poll
  - name: b
    type: s3
    mode: poll
    bucket: photos
    endpoint: ftp://host
    region: ''
    prefix: /uploads
    interval: 10ms
  - name: c
    type: s3
    mode: notify
    prefix: x/
    interval: 1m
    deletes: true
    endpoint: http://127.0.0.1:9000
  - name: d
    type: s3
    mode: notify
    content: inline
  - name: e
    type: s3
    mode: poll
    bucket: photos
    deletes: maybe
  - name: f
    type: s3
    mode: notify
    content: everything
  - name: g
    type: s3
    mode: poll
    bucket: photos
    start: yesterday
";
    let (code, _, stderr) = validate(text);
    assert_eq!(code, 1, "{stderr}");
    let expect = [
        "sources[0].bucket: is required with `mode: poll`",
        "sources[1].endpoint: \"ftp://host\" is not an S3 endpoint",
        "sources[1].region: must not be empty",
        "sources[1].prefix: \"/uploads\" is not a key prefix",
        "sources[1].interval: 10ms is too short",
        "sources[2].prefix: is only for `mode: poll`",
        "sources[2].interval: is only for `mode: poll`",
        "sources[2].deletes: is only for `mode: poll`",
        "sources[2].endpoint: is only for `mode: poll` or `content: inline`",
        "sources[3].bucket: is required with `content: inline`",
        "sources[4].deletes: invalid type",
        "sources[5].content: unknown variant `everything`",
        "sources[6].start: unknown variant `yesterday`",
    ];
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    assert!(stderr.contains("(line 2, column"), "{stderr}");
    let (code, _, stderr) = validate(&format!(
        "sources:\n{}",
        source(
            "ok",
            "photos",
            "    prefix: in/\n    deletes: true\n    start: all\n    content: inline\n"
        )
    ));
    assert_eq!(code, 0, "{stderr}");
}
