//! The S3 target end to end, against an S3-compatible server (the test script
//! starts s3s-fs: `SLUICE_TEST_S3` says where, default http://127.0.0.1:19000, and
//! `SLUICE_TEST_S3_ROOT` is its data folder, where a new folder is a new bucket).
//! Objects are read back through the S3 API, as a user would.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{Attribute, ObjectStore};
use serde_json::{json, Value};

use crate::harness::Sluice;
use crate::kafka;

pub(crate) fn endpoint() -> String {
    std::env::var("SLUICE_TEST_S3").unwrap_or_else(|_| "http://127.0.0.1:19000".into())
}

/// A new, empty bucket.
pub(crate) fn bucket(prefix: &str) -> String {
    let name = unique(prefix);
    let root = std::env::var("SLUICE_TEST_S3_ROOT")
        .expect("SLUICE_TEST_S3_ROOT: the s3s-fs data folder (scripts/services.sh sets it)");
    std::fs::create_dir(std::path::Path::new(&root).join(&name)).unwrap();
    name
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{:x}-{:x}", std::process::id(), nanos)
}

/// A client for `bucket`, with the credentials from the environment.
pub(crate) fn client(bucket: &str) -> AmazonS3 {
    AmazonS3Builder::from_env()
        .with_endpoint(endpoint())
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .build()
        .unwrap()
}

/// An s3 target (named `s3`) writing into `bucket`, with extra settings.
fn target(bucket: &str, extra: &str) -> String {
    format!(
        "  - name: s3\n    type: s3\n    endpoint: {}\n    bucket: {bucket}\n    path_style: true\n{extra}",
        endpoint()
    )
}

/// One object as read back.
struct Object {
    key: String,
    lines: Vec<Value>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    e_tag: Option<String>,
    size: u64,
}

/// Every key in the bucket, walking its folders.
async fn keys(s3: &AmazonS3) -> Vec<Path> {
    let mut out = Vec::new();
    let mut dirs = vec![None::<Path>];
    while let Some(dir) = dirs.pop() {
        let listing = s3.list_with_delimiter(dir.as_ref()).await.unwrap();
        dirs.extend(listing.common_prefixes.into_iter().map(Some));
        out.extend(listing.objects.into_iter().map(|o| o.location));
    }
    out.sort();
    out
}

/// Every object in the bucket, decompressed (by its `.gz` name) and split into lines.
async fn objects(s3: &AmazonS3) -> Vec<Object> {
    let mut out = Vec::new();
    for key in keys(s3).await {
        let got = match s3.get(&key).await {
            Ok(got) => got,
            // Listed, then replaced while we read: the next poll sees it.
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => panic!("reading {key}: {e}"),
        };
        let attr = |a: &Attribute| got.attributes.get(a).map(|v| v.to_string());
        let (content_type, content_encoding) = (
            attr(&Attribute::ContentType),
            attr(&Attribute::ContentEncoding),
        );
        let (e_tag, size) = (got.meta.e_tag.clone(), got.meta.size);
        let body = got.bytes().await.unwrap();
        let mut text = String::new();
        if key.as_ref().ends_with(".gz") {
            flate2::read::GzDecoder::new(&body[..])
                .read_to_string(&mut text)
                .unwrap_or_else(|e| panic!("{key} is not gzip: {e}"));
        } else {
            text = String::from_utf8(body.to_vec()).unwrap();
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{key} ends in a newline"
        );
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{key}: {e}: {l}")))
            .collect();
        out.push(Object {
            key: key.to_string(),
            lines,
            content_type,
            content_encoding,
            e_tag,
            size,
        });
    }
    out
}

/// Wait until the bucket holds at least `n` lines in all; returns its objects.
async fn wait_lines(s3: &AmazonS3, n: usize, timeout: Duration) -> Vec<Object> {
    let deadline = Instant::now() + timeout;
    loop {
        let objects = objects(s3).await;
        let total: usize = objects.iter().map(|o| o.lines.len()).sum();
        if total >= n {
            return objects;
        }
        assert!(
            Instant::now() < deadline,
            "only {total} of {n} lines arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn post(sluice: &Sluice, event: &Value) {
    let r = sluice.post_structured(event).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// HTTP events land as gzip JSON lines under `events/dt=.../hour=.../<uuid>.jsonl.gz`,
/// partitioned by each event's own time; a second target writes them uncompressed
/// under a key of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_as_json_lines_partitioned_by_event_time() {
    let (gz, plain) = (bucket("gz"), bucket("plain"));
    let config = format!(
        "targets:\n{}{}rules:\n  - name: all\n    targets: [s3, raw]\n",
        target(&gz, "    batch: { max_events: 100, max_wait: 300ms }\n"),
        target(
            &plain,
            "    key: \"raw/{type}/%Y%m%d/{uuid}.jsonl\"\n    compression: none\n    batch: { max_events: 100, max_wait: 300ms }\n"
        )
        .replace("name: s3", "name: raw"),
    );
    let sluice = Sluice::start(&config).await;
    let hours = ["2026-11-29T13", "2026-11-29T14", "2026-11-30T00"];
    let mut sent = BTreeMap::new();
    for i in 0..30 {
        let event = json!({
            "specversion": "1.0",
            "id": format!("order-{i}"),
            "source": "/shop",
            "type": if i % 2 == 0 { "order.created" } else { "order.paid" },
            "time": format!("{}:{:02}:00Z", hours[i % 3], i),
            "datacontenttype": "application/json",
            "data": {"order": i, "items": [{"sku": "a", "qty": i}]},
        });
        post(&sluice, &event).await;
        sent.insert(format!("order-{i}"), event);
    }

    let objects = wait_lines(&client(&gz), 30, Duration::from_secs(30)).await;
    let mut seen = BTreeMap::new();
    for o in &objects {
        let parts: Vec<&str> = o.key.split('/').collect();
        assert_eq!(parts.len(), 4, "{}", o.key);
        assert_eq!(parts[0], "events");
        let file = parts[3]
            .strip_suffix(".jsonl.gz")
            .unwrap_or_else(|| panic!("{}", o.key));
        assert!(is_uuid(file), "{}", o.key);
        assert_eq!(o.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(o.content_encoding.as_deref(), Some("gzip"));
        for line in &o.lines {
            // The partition is the event's own hour.
            let time = line["time"].as_str().unwrap();
            assert_eq!(parts[1], format!("dt={}", &time[..10]), "{}: {line}", o.key);
            assert_eq!(
                parts[2],
                format!("hour={}", &time[11..13]),
                "{}: {line}",
                o.key
            );
            let id = line["id"].as_str().unwrap().to_owned();
            assert_eq!(line, &sent[&id], "each line is the CloudEvent as sent");
            assert!(seen.insert(id, o.key.clone()).is_none(), "{line} twice");
        }
    }
    assert_eq!(seen.len(), 30);
    let partitions: std::collections::BTreeSet<_> = objects
        .iter()
        .map(|o| o.key.rsplit_once('/').unwrap().0.to_owned())
        .collect();
    assert_eq!(
        partitions.into_iter().collect::<Vec<_>>(),
        [
            "events/dt=2026-11-29/hour=13",
            "events/dt=2026-11-29/hour=14",
            "events/dt=2026-11-30/hour=00"
        ]
    );

    let objects = wait_lines(&client(&plain), 30, Duration::from_secs(30)).await;
    let mut count = 0;
    for o in &objects {
        assert!(o.key.starts_with("raw/order."), "{}", o.key);
        assert!(o.key.ends_with(".jsonl"), "{}", o.key);
        assert_eq!(o.content_type.as_deref(), Some("application/x-ndjson"));
        assert_eq!(o.content_encoding, None);
        for line in &o.lines {
            assert!(o
                .key
                .contains(&format!("/{}/", line["type"].as_str().unwrap())));
            assert_eq!(line, &sent[line["id"].as_str().unwrap()]);
            count += 1;
        }
    }
    assert_eq!(count, 30);
}

/// A batch larger than `part_bytes` is uploaded in parts and reads back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_uploaded_in_parts() {
    let b = bucket("parts");
    let config = format!(
        "targets:\n{}rules:\n  - name: all\n    targets: [s3]\n",
        target(
            &b,
            "    compression: none\n    part_bytes: 5242880\n    batch: { max_events: 60, max_bytes: 33554432, max_wait: 30s }\n"
        )
    );
    let sluice = Sluice::start(&config).await;
    // 60 events of about 200 KB: one batch of about 12 MB, so three parts.
    for i in 0..60u32 {
        let filler: String = (0..200_000u32)
            .map(|j| char::from(b'a' + ((i * 7 + j * 13) % 26) as u8))
            .collect();
        post(
            &sluice,
            &json!({"specversion": "1.0", "id": format!("big-{i}"), "source": "/bulk", "type": "blob.stored",
                    "time": "2026-11-29T13:00:00Z", "data": {"i": i, "filler": filler}}),
        )
        .await;
    }
    let objects = wait_lines(&client(&b), 60, Duration::from_secs(60)).await;
    assert_eq!(objects.len(), 1, "one batch, one object");
    let o = &objects[0];
    assert!(o.size > 10 * 1024 * 1024, "{} bytes", o.size);
    // A multipart object's ETag ends with its part count.
    assert!(
        o.e_tag
            .as_deref()
            .unwrap_or("")
            .trim_matches('"')
            .ends_with("-3"),
        "{:?}",
        o.e_tag
    );
    let is: Vec<u64> = o
        .lines
        .iter()
        .map(|l| l["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..60).collect::<Vec<_>>());
    for l in &o.lines {
        assert_eq!(l["data"]["filler"].as_str().unwrap().len(), 200_000);
    }
}

/// Two rules into one target: their batches begin with the same event, so they
/// render the same key; the second write merges into the first instead of
/// replacing it, and every event is in the bucket once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rules_into_one_target_share_objects_without_loss() {
    let b = bucket("shared");
    let config = format!(
        "targets:\n{}rules:\n  - name: all\n    targets: [s3]\n  - name: paid\n    filter: {{ pattern: {{ type: [order.paid] }} }}\n    targets: [s3]\n",
        target(&b, "    batch: { max_wait: 500ms }\n")
    );
    let sluice = Sluice::start(&config).await;
    for round in 0..3 {
        let events: Vec<Value> = (0..10)
            .map(|i| {
                json!({"specversion": "1.0", "id": format!("{round}-{i}"), "source": "/shop",
                       "type": if i % 2 == 0 { "order.paid" } else { "order.created" },
                       "time": "2026-11-29T13:00:00Z", "data": {"i": i}})
            })
            .collect();
        let r = sluice.post_batch(&Value::Array(events)).await;
        assert_eq!(r.status(), 202);
        // Both subscriptions delivered: 10 + 5 events.
        let deadline = Instant::now() + Duration::from_secs(30);
        while sluice.stats("all.s3").await["delivered_total"].as_u64() < Some(10 * (round + 1))
            || sluice.stats("paid.s3").await["delivered_total"].as_u64() < Some(5 * (round + 1))
        {
            assert!(Instant::now() < deadline, "not delivered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let objects = objects(&client(&b)).await;
    let mut ids: Vec<String> = objects
        .iter()
        .flat_map(|o| o.lines.iter().map(|l| l["id"].as_str().unwrap().to_owned()))
        .collect();
    ids.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|r| (0..10).map(move |i| format!("{r}-{i}")))
        .collect();
    want.sort();
    assert_eq!(ids, want, "every event once, in {} objects", objects.len());
}

/// `sluice validate` names every bad S3 setting.
#[test]
fn bad_s3_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        "targets:\n\
  - { name: a, type: s3, bucket: Bad_Bucket, key: \"events/{uuid\", part_bytes: 1048576 }\n\
  - { name: b, type: s3, bucket: ok-bucket, endpoint: \"http://minio:9000/path\", key: \"events/%Y/all.jsonl\" }\n\
  - { name: c, type: s3, bucket: -no, endpoint: \"minio:9000\", key: \"/events/{uuid}\", concurrency: 0 }\n",
    )
    .unwrap();
    let (code, _, stderr) = crate::harness::validate(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(code, 1);
    for want in [
        "targets[0].bucket: \"Bad_Bucket\" is not a bucket name",
        "targets[0].key: `{` at byte 7 is never closed",
        "targets[0].part_bytes: must be at least 5 MiB",
        "targets[1].endpoint: \"http://minio:9000/path\" is not an S3 endpoint: it has a path",
        "targets[1].key: \"events/%Y/all.jsonl\" has no `{uuid}`",
        "targets[2].bucket: \"-no\" is not a bucket name",
        "targets[2].endpoint: \"minio:9000\" is not an S3 endpoint",
        "targets[2].key: \"/events/{uuid}\" is not an object key",
        "targets[2].concurrency: must be between 1 and 256",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

/// A missing bucket makes `/readyz` 503 naming the target and the reason; events
/// wait, and arrive once the bucket exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_reported_until_it_exists() {
    let name = unique("later");
    let sluice = Sluice::start_unready(&format!(
        "targets:\n{}rules:\n  - name: all\n    targets: [s3]\n",
        target(&name, "    batch: { max_wait: 100ms }\n")
    ))
    .await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && body["targets"].is_array()
        })
        .await;
    let t = &body["targets"][0];
    assert_eq!(t["target"], "s3", "{body}");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("bucket {name} at {}: ", endpoint()))
            && reason.contains("NoSuchBucket"),
        "{reason}"
    );
    // Events are accepted meanwhile, and wait.
    let e =
        json!({"specversion": "1.0", "id": "w-1", "source": "/t", "type": "t", "data": {"x": 1}});
    assert_eq!(sluice.post_structured(&e).await.status(), 202);

    let root = std::env::var("SLUICE_TEST_S3_ROOT").unwrap();
    std::fs::create_dir(std::path::Path::new(&root).join(&name)).unwrap();
    let objects = wait_lines(&client(&name), 1, Duration::from_secs(30)).await;
    assert_eq!(objects[0].lines[0]["id"], "w-1");
    let r = sluice
        .client
        .get(sluice.url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Lines per record (`data.n`) across every object of the bucket.
fn lines_per_record(objects: &[Object]) -> HashMap<u64, Vec<(String, String)>> {
    let mut per = HashMap::<u64, Vec<(String, String)>>::new();
    for o in objects {
        for l in &o.lines {
            let n = l["data"]["n"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: {l}", o.key));
            per.entry(n)
                .or_default()
                .push((o.key.clone(), l["id"].as_str().unwrap().to_owned()));
        }
    }
    per
}

/// Wait until `n` distinct records are in the bucket (and, if `drained`, the
/// queue is empty); returns how many there are. On time-out, the panic shows the
/// subscription's stats and the end of sluice's log.
async fn wait_records(sluice: &Sluice, s3: &AmazonS3, n: usize, drained: bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let per = lines_per_record(&objects(s3).await);
        let have = per.len();
        if have >= n && (!drained || sluice.stats("all.s3").await["depth"] == 0) {
            return have;
        }
        if Instant::now() > deadline {
            let log = sluice.log();
            let max = per.keys().max().copied().unwrap_or(0);
            let missing: Vec<u64> = (0..=max).filter(|n| !per.contains_key(n)).collect();
            panic!(
                "only {have} of {n} records arrived (missing below {max}: {}); all.s3: {}\n{}",
                describe_runs(&missing),
                sluice.stats("all.s3").await,
                &log[log.len().saturating_sub(20000)..]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kafka (3 partitions) -> Kafka source -> rule -> S3, 20,000 records, with two
/// `kill -9` while records keep coming: at the end every record is in exactly one
/// line of one object.
///
/// Why: after a `kill -9` the Kafka source re-reads the records whose offsets were
/// not committed yet (about the last second); those already queued are dropped as
/// duplicates (`server.dedupe_window`; a record and its dedupe key are written
/// atomically). A batch that was being written, or written but not yet recorded as
/// delivered, is re-sent exactly as first formed (the target asks for stable
/// batches), so it rewrites the same objects. On failure the test prints where
/// the repeats are (partition, offsets) and what the source went through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_s3_survives_kill_9_with_every_record_in_the_bucket() {
    const RECORDS: u64 = 20_000;
    const BACKLOG: u64 = 8_000;
    let topic = kafka::topic("s3", 3).await;
    let b = bucket("kafka");
    // A backlog first (it measures throughput), then records keep coming while
    // sluice is killed, so that each kill cuts through live consumption.
    kafka::produce_numbered(&topic, 0..BACKLOG).await;
    let config = format!(
        "sources:\n  - name: src\n    type: kafka\n    brokers: {}\n    topics: [{topic}]\n    group: g-{topic}\n    start: earliest\n    options: {{ session.timeout.ms: \"6000\" }}\n\
targets:\n{}rules:\n  - name: all\n    targets: [s3]\n",
        kafka::brokers(),
        target(&b, "    batch: { max_events: 500, max_wait: 200ms }\n")
    );
    let s3 = client(&b);
    let started = Instant::now();
    let mut sluice = Sluice::start(&config).await;
    wait_records(&sluice, &s3, 1, false).await;
    let first = Instant::now();
    let have = wait_records(&sluice, &s3, BACKLOG as usize, false).await;
    let (total, since_first) = (
        started.elapsed().as_secs_f64(),
        first.elapsed().as_secs_f64(),
    );
    eprintln!(
        "kafka -> s3: backlog of {have} records in {total:.1}s from start ({:.0} events/s), \
         {since_first:.1}s from the first object ({:.0} events/s)",
        have as f64 / total,
        have as f64 / since_first
    );
    let producing = tokio::spawn({
        let topic = topic.clone();
        async move {
            let mut n = BACKLOG;
            while n < RECORDS {
                kafka::produce_numbered(&topic, n..n + 250).await;
                n += 250;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    let mut kills = Vec::new();
    for at in [11_000, 15_000] {
        let have = wait_records(&sluice, &s3, at, false).await;
        sluice.kill9();
        kills.push(have);
        // Past the session timeout: the test broker may otherwise keep the
        // partitions with the killed member and give the new one none.
        tokio::time::sleep(Duration::from_secs(7)).await;
        sluice.spawn().await;
    }
    producing.await.unwrap();
    // Every record arrives; then the queue drains, so nothing more is written
    // while we count.
    wait_records(&sluice, &s3, RECORDS as usize, true).await;
    let elapsed = started.elapsed().as_secs_f64();
    let objects = objects(&s3).await;
    let per = lines_per_record(&objects);
    let missing: Vec<u64> = (0..RECORDS).filter(|n| !per.contains_key(n)).collect();
    assert!(
        missing.is_empty(),
        "{} records missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );

    // Repeated records: which partition and offset (the event id is
    // `<topic>-<partition>-<offset>`), and how they are spread.
    let mut repeated: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    let mut extra_lines = 0;
    for (n, lines) in &per {
        if lines.len() < 2 {
            continue;
        }
        extra_lines += lines.len() - 1;
        let ids: std::collections::BTreeSet<&str> =
            lines.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(ids.len(), 1, "record {n} has one event id: {ids:?}");
        let (partition, offset) = partition_offset(&topic, lines[0].1.as_str());
        let keys: std::collections::BTreeSet<&str> =
            lines.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys.len(),
            lines.len(),
            "record {n} twice in one object: {lines:?}"
        );
        repeated.entry(partition).or_default().push(offset);
    }
    let dropped: Vec<String> = sluice
        .metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("sluice_events_duplicate_total"))
        .map(str::to_owned)
        .collect();
    eprintln!("kafka -> s3: replays dropped at ingest since the last start: {dropped:?}");
    let lines: usize = objects.iter().map(|o| o.lines.len()).sum();
    eprintln!(
        "kafka -> s3: {RECORDS} records in {:.1}s with kills after {kills:?}; {} objects, {lines} lines, {extra_lines} repeated lines",
        elapsed,
        objects.len()
    );
    for (partition, offsets) in &mut repeated {
        offsets.sort_unstable();
        let runs = 1 + offsets.windows(2).filter(|w| w[1] != w[0] + 1).count();
        eprintln!(
            "  partition {partition}: {} repeated offsets in {runs} runs: {}",
            offsets.len(),
            describe_runs(offsets)
        );
        eprintln!("  ({runs} runs of consecutive offsets)");
    }
    if extra_lines > 0 {
        // Where the repeats are, and what the source went through meanwhile.
        let mut sample: Vec<_> = per.iter().filter(|(_, l)| l.len() > 1).collect();
        sample.sort();
        for (n, lines) in sample.iter().take(3) {
            eprintln!("  record {n}: {lines:?}");
        }
        for l in sluice.log().lines() {
            if l.contains("Partitions")
                || l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("ready")
            {
                eprintln!("  log: {l}");
            }
        }
    }
    assert_eq!(extra_lines, 0, "records in more than one object line");
}

fn partition_offset(topic: &str, id: &str) -> (u32, u64) {
    let rest = id
        .strip_prefix(&format!("{topic}-"))
        .unwrap_or_else(|| panic!("{id}"));
    let (p, o) = rest.split_once('-').unwrap();
    (p.parse().unwrap(), o.parse().unwrap())
}

fn describe_runs(sorted: &[u64]) -> String {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || sorted[i] != sorted[i - 1] + 1 {
            out.push(format!("{}..={}", sorted[start], sorted[i - 1]));
            start = i;
        }
    }
    out.join(", ")
}
