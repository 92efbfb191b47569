//! Kafka source and target against a real Kafka-protocol broker (the test script
//! starts one; `SLUICE_TEST_KAFKA` says where, default 127.0.0.1:19092).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::harness::{Receiver, Sluice};

pub fn brokers() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".into())
}

/// A fresh topic with `partitions` partitions.
pub async fn topic(prefix: &str, partitions: i32) -> String {
    let name = format!("{prefix}-{}", uuid_like());
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
    name
}

pub fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// A producer for test records, batching as producers in the field do (records
/// wait up to 20 ms to fill a batch of up to 500), so consumers resume from
/// offsets inside stored batches.
pub fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("batch.num.messages", "500")
        .set("linger.ms", "20")
        .create()
        .unwrap()
}

fn ce_headers(id: &str, ty: &str) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for (k, v) in [
        ("ce_specversion", "1.0"),
        ("ce_id", id),
        ("ce_source", "/shop"),
        ("ce_type", ty),
        ("content-type", "application/json"),
    ] {
        h = h.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    h
}

/// 10,000 records of every kind: binary and structured CloudEvents, plain JSON,
/// plain bytes, tombstones and broken CloudEvents. The rule keeps `order.created`
/// events and plain JSON records flagged `keep`; exactly those must arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_every_kind_become_events_and_only_matches_arrive() {
    let topic = topic("mixed", 3).await;
    let recv = Receiver::start().await;
    let config = format!(
        "sources:\n  - name: shop\n    type: kafka\n    brokers: {}\n    topics: [{topic}]\n    group: g-{topic}\n    start: earliest\n\
targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 64\n\
rules:\n  - name: keep\n    filter:\n      filters:\n        - any:\n          - exact: {{ type: order.created }}\n          - exact: {{ data.keep: \"true\" }}\n    targets: [fn]\n",
        brokers(),
        recv.url()
    );
    let _sluice = Sluice::start(&config).await;
    let producer = producer();
    let mut expected = std::collections::BTreeSet::new();
    let mut sends = Vec::new();
    for i in 0..10_000u32 {
        let key = format!("k{}", i % 17);
        let (payload, headers, want): (Option<Vec<u8>>, OwnedHeaders, Option<String>) = match i % 6
        {
            0 => (
                Some(json!({"n": i}).to_string().into_bytes()),
                ce_headers(&format!("b-{i}"), "order.created"),
                Some(format!("b-{i}")),
            ),
            1 => (
                Some(json!({"n": i}).to_string().into_bytes()),
                ce_headers(&format!("b-{i}"), "order.deleted"),
                None,
            ),
            2 => {
                let e = json!({"specversion": "1.0", "id": format!("s-{i}"), "source": "/s", "type": "order.created", "data": {"n": i}});
                let h = OwnedHeaders::new().insert(Header {
                    key: "content-type",
                    value: Some(b"application/cloudevents+json".as_slice()),
                });
                (Some(e.to_string().into_bytes()), h, Some(format!("s-{i}")))
            }
            3 => (
                Some(json!({"keep": i % 2 == 0, "n": i}).to_string().into_bytes()),
                OwnedHeaders::new(),
                (i % 2 == 0).then(|| "plain".to_owned()),
            ),
            4 => (Some(vec![0xff, 0xfe, i as u8]), OwnedHeaders::new(), None),
            _ => {
                // Tombstones, and CloudEvents headers that are broken (null id).
                let h = OwnedHeaders::new().insert(Header::<&[u8]> {
                    key: "ce_id",
                    value: None,
                });
                (None, h, None)
            }
        };
        if let Some(w) = want {
            expected.insert(if w == "plain" {
                format!("plain-{i}")
            } else {
                w
            });
        }
        let producer = producer.clone();
        let topic = topic.clone();
        sends.push(tokio::spawn(async move {
            let mut record = FutureRecord::to(&topic).key(&key).headers(headers);
            if let Some(p) = &payload {
                record = record.payload(p);
            }
            producer
                .send(record, Duration::from_secs(10))
                .await
                .map(|_| ())
                .map_err(|(e, _)| e)
        }));
    }
    for s in sends {
        s.await.unwrap().unwrap();
    }
    let got = recv
        .wait_for(expected.len(), Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_after = recv.delivered();
    assert_eq!(
        got_after.len(),
        expected.len(),
        "only the matching records arrive"
    );
    let mut ids = std::collections::BTreeSet::new();
    for r in &got {
        let id = r.header("ce-id").unwrap().to_owned();
        if r.header("ce-type") == Some("sluice.kafka.record") {
            // A plain record: id is topic-partition-offset, the data says which.
            assert!(id.starts_with(&format!("{topic}-")), "{id}");
            assert_eq!(
                r.header("ce-source"),
                Some(format!("kafka://{topic}").as_str())
            );
            assert!(r.header("ce-partitionkey").unwrap().starts_with('k'));
            assert!(r.header("ce-time").is_some());
            let n = r.json()["n"].as_u64().unwrap();
            ids.insert(format!("plain-{n}"));
        } else {
            assert_eq!(r.header("ce-type"), Some("order.created"));
            ids.insert(id);
        }
    }
    assert_eq!(ids, expected);
}

/// Kafka -> jq transform -> Kafka target, read back with a plain consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_transform_to_kafka() {
    let input = topic("in", 1).await;
    let output = topic("out", 1).await;
    let config = format!(
        "sources:\n  - name: in\n    type: kafka\n    brokers: {b}\n    topics: [{input}]\n    group: g-{input}\n    start: earliest\n\
targets:\n  - name: out\n    type: kafka\n    brokers: {b}\n    topic: \"{output}\"\n    key: \"{{data.customer}}\"\n\
rules:\n  - name: reshape\n    filter: {{ pattern: {{ type: [order.created] }} }}\n    transform:\n      jq: '{{customer: .data.customer, total: (.data.amount * 2)}}'\n      set: {{ type: order.reshaped }}\n    targets: [out]\n",
        b = brokers()
    );
    let _sluice = Sluice::start(&config).await;
    let producer = producer();
    for i in 0..20 {
        let ty = if i % 2 == 0 {
            "order.created"
        } else {
            "order.other"
        };
        let payload = json!({"customer": format!("c{i}"), "amount": i}).to_string();
        producer
            .send(
                FutureRecord::to(&input)
                    .key("x")
                    .payload(&payload)
                    .headers(ce_headers(&format!("o-{i}"), ty)),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{output}"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&output]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("records arrive")
            .unwrap();
        let headers: Vec<(String, String)> = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let value: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        assert_eq!(header("ce_type").as_deref(), Some("order.reshaped"));
        assert_eq!(header("ce_source").as_deref(), Some("/shop"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(value["customer"], json!(key));
        let id = header("ce_id").unwrap();
        let i: u64 = id.trim_start_matches("o-").parse().unwrap();
        assert_eq!(i % 2, 0);
        assert_eq!(value["total"], json!(i * 2));
        seen.push(i);
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, (0..20).step_by(2).collect::<Vec<_>>());
}

/// Bad Kafka settings are config errors: owned keys, bad regexes, bad brokers; an
/// option librdkafka does not know stops `serve` with its message.
#[test]
fn bad_kafka_settings_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        "sources:\n  - name: k\n    type: kafka\n    brokers: nowhere\n    topics: [\"^(unclosed\", \"bad topic\"]\n    group: g\n    options: { enable.auto.commit: \"true\" }\n  - name: k2\n    type: kafka\n    brokers: b:1\n    topics: [x]\n    group: g\n    start: yesterday\n\
targets:\n  - name: t\n    type: kafka\n    brokers: 127.0.0.1:19092\n    topic: x\n    compression: brotli\n    options: { acks: \"1\" }\n  - name: t2\n    type: kafka\n    brokers: b:1\n    topic: \"events-{type\"\n    concurrency: 0\n    batch: { max_events: 0 }\n  - { name: d, type: discard, batch: { max_bytes: 0 } }\n",
    )
    .unwrap();
    let (code, _, stderr) = crate::harness::validate(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(code, 1);
    for want in [
        "sources[0].brokers: \"nowhere\" is not a list of host:port",
        "sources[0].topics[0]: not a valid regular expression",
        "sources[0].topics[1]: \"bad topic\" is not a Kafka topic name",
        "sources[0].options.enable.auto.commit: sluice owns this setting",
        "targets[0].compression: \"brotli\"",
        "targets[0].options.acks: sluice owns this setting",
        "sources[1].start: \"yesterday\" is not earliest, latest or an RFC 3339 time",
        "targets[1].topic: \"events-{type\": `{` at byte 7 is never closed",
        "targets[1].concurrency: must be between 1 and 256",
        "targets[1].batch.max_events: must be at least 1",
        "targets[2].batch.max_bytes: must be at least 1",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }

    std::fs::write(
        &path,
        format!("sources:\n  - name: k\n    type: kafka\n    brokers: {}\n    topics: [x]\n    group: g\n    options: {{ no.such.setting: \"1\" }}\n", brokers()),
    )
    .unwrap();
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("source k:") && stderr.contains("no.such.setting"),
        "{stderr}"
    );
}

pub fn source_config(topic: &str, group: &str, url: &str) -> String {
    format!(
        "sources:\n  - name: src\n    type: kafka\n    brokers: {}\n    topics: [{topic}]\n    group: {group}\n    start: earliest\n\
targets:\n  - name: fn\n    type: http\n    url: {url}\n    concurrency: 64\n\
rules:\n  - name: all\n    targets: [fn]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 500ms }} }}\n",
        brokers()
    )
}

/// `config` (from [`source_config`]) with `lines` added to its Kafka source.
pub fn with_source(config: &str, lines: &str) -> String {
    config.replace(
        "    start: earliest\n",
        &format!("    start: earliest\n{lines}"),
    )
}

pub async fn produce_numbered(topic: &str, range: std::ops::Range<u64>) {
    produce(topic, range, |n| (format!("k{}", n % 101), json!({"n": n}))).await;
}

/// Produce one record per `n` in `range`, with the key and JSON value `record`
/// gives; returns once the broker acknowledged them all.
pub async fn produce(
    topic: &str,
    range: std::ops::Range<u64>,
    record: impl Fn(u64) -> (String, serde_json::Value),
) {
    let producer = producer();
    let mut pending = Vec::new();
    for n in range {
        let (key, value) = record(n);
        let payload = value.to_string();
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                .unwrap(),
        );
        if pending.len() >= 5000 {
            for p in pending.drain(..) {
                p.await.unwrap().map_err(|(e, _)| e).unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
}

/// Distinct `data.n` values the receiver got, and how many deliveries in all.
pub fn distinct(recv: &Receiver) -> (std::collections::HashSet<u64>, usize) {
    let got = recv.delivered();
    let set = got.iter().filter_map(|r| r.json()["n"].as_u64()).collect();
    (set, got.len())
}

async fn wait_distinct(recv: &Receiver, n: usize, timeout: Duration) -> usize {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let (set, total) = distinct(recv);
        if set.len() >= n {
            return total;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {n} distinct records arrived",
            set.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -9` in the middle of 50,000 records: after a restart every record is
/// delivered, and duplicates stay within the uncommitted window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_record() {
    let topic = topic("crash", 3).await;
    let recv = Receiver::start().await;
    produce_numbered(&topic, 0..50_000).await;
    let mut sluice =
        Sluice::start(&source_config(&topic, &format!("g-{topic}"), &recv.url())).await;
    wait_distinct(&recv, 15_000, Duration::from_secs(120)).await;
    sluice.kill9();
    let before = distinct(&recv).0.len();
    sluice.spawn().await;
    let total = wait_distinct(&recv, 50_000, Duration::from_secs(180)).await;
    let duplicates = total - 50_000;
    eprintln!("kill -9 after {before} records: {duplicates} duplicate deliveries of 50000");
    // At most what was consumed but not yet committed (1 s of auto-commit, plus the
    // deliveries in flight), far from a replay of everything.
    assert!(duplicates < 25_000, "{duplicates} duplicates");
}

/// A stalled target bounds the backlog: consumption pauses past `max_backlog` and
/// resumes once delivery catches up, losing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_target_pauses_consumption() {
    let topic = topic("backlog", 2).await;
    let port = crate::harness::free_port();
    let config = source_config(
        &topic,
        &format!("g-{topic}"),
        &format!("http://127.0.0.1:{port}/invoke"),
    );
    let config = with_source(&config, "    batch: 50\n    max_backlog: 200\n");
    let sluice = Sluice::start(&config).await;
    produce_numbered(&topic, 0..3_000).await;
    // The target is down: sluice takes in about max_backlog (plus a batch) and stops.
    sluice.backlog_holds("all.fn", 200..=300).await;
    // The target comes up: everything arrives.
    let recv = Receiver::start_on(port, None).await;
    wait_distinct(&recv, 3_000, Duration::from_secs(120)).await;
}

/// `start: <time>`: a new group starts each partition at the first record at or
/// after that time (by record timestamp).
#[tokio::test]
async fn start_at_a_time_skips_older_records() {
    let topic = topic("start-time", 2).await;
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let producer = producer();
    for n in 0..10i64 {
        let payload = json!({"n": n}).to_string();
        let key = format!("k{n}");
        producer
            .send(
                FutureRecord::to(&topic)
                    .key(&key)
                    .payload(&payload)
                    .timestamp(base + n * 3_600_000),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let recv = Receiver::start().await;
    let config = source_config(&topic, &format!("g-{topic}"), &recv.url())
        .replace("start: earliest", "start: \"2026-01-01T05:00:00Z\"");
    let sluice = Sluice::start(&config).await;
    recv.wait_for(5, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (got, _) = distinct(&recv);
    let mut got: Vec<u64> = got.into_iter().collect();
    got.sort_unstable();
    assert_eq!(got, [5, 6, 7, 8, 9], "{}", sluice.log());
}

/// `malformed: reject`: a broken CloudEvent record goes to the source's
/// dead-letter list with the reason, not to the bus; the rest flows on.
#[tokio::test]
async fn malformed_records_can_be_rejected_to_the_source_dead_letters() {
    let topic = topic("malformed", 1).await;
    let producer = producer();
    let broken = OwnedHeaders::new().insert(Header {
        key: "content-type",
        value: Some("application/cloudevents+json"),
    });
    let records: [(&str, Option<OwnedHeaders>); 3] = [
        (r#"{"n": 1}"#, None),
        (r#"{"specversion": "1.0", "id": "x""#, Some(broken)),
        (r#"{"n": 2}"#, None),
    ];
    for (value, headers) in records {
        let mut record = FutureRecord::<str, str>::to(&topic).payload(value);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let recv = Receiver::start().await;
    let config = with_source(
        &source_config(&topic, &format!("g-{topic}"), &recv.url()),
        "    malformed: reject\n",
    );
    let sluice = Sluice::start(&config).await;
    recv.wait_for(2, Duration::from_secs(30)).await;
    let letters = sluice.get_json("/api/sources/src/dead-letters").await;
    let list = letters["dead_letters"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{letters}");
    assert!(
        list[0]["reason"].as_str().unwrap().contains("JSON"),
        "{letters}"
    );
    assert_eq!(list[0]["event"]["id"], format!("{topic}-0-1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.arrived(), 2);
    let missing = sluice
        .client
        .get(sluice.url("/api/sources/nope/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// `name{bus="default",source="src"}` from a `/metrics` text.
pub fn source_counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}{{bus=\"default\",source=\"src\"}} ")))
        .map_or(0, |v| v.parse().unwrap())
}

/// Wait up to 60 s for the source counter `name` of `sluice` to reach `n`.
async fn wait_counter(sluice: &Sluice, name: &str, n: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = source_counter(&sluice.metrics().await, name);
        if now >= n || std::time::Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After `kill -9` a Kafka source resumes after what it holds durable, not from
/// the group's older committed offset: what it had queued is neither read nor
/// queued again, so each record reaches the target once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_durable_before_a_crash_are_not_read_again() {
    let topic = topic("replay", 2).await;
    let port = crate::harness::free_port();
    // The target is down, so everything read stays queued; offsets are committed
    // only when partitions are given up (a 10-minute commit interval).
    let config = source_config(
        &topic,
        &format!("g-{topic}"),
        &format!("http://127.0.0.1:{port}/invoke"),
    );
    let config = with_source(
        &config,
        "    options: { auto.commit.interval.ms: \"600000\" }\n",
    );
    const RECEIVED: &str = "sluice_events_received_total";
    // A first run leaves the group with committed offsets (at its graceful stop).
    produce_numbered(&topic, 0..100).await;
    let mut sluice = Sluice::start(&config).await;
    assert_eq!(wait_counter(&sluice, RECEIVED, 100).await, 100);
    assert_eq!(sluice.terminate(), Some(0));

    // The second run reads 2,000 more and dies before committing them.
    produce_numbered(&topic, 100..2_100).await;
    sluice.spawn().await;
    assert_eq!(wait_counter(&sluice, RECEIVED, 2_000).await, 2_000);
    assert_eq!(sluice.stats("all.fn").await["depth"], 2_100);
    sluice.kill9();

    // The third run starts each partition after sluice's position, and the
    // group's offsets catch up with it (committed at its graceful stop).
    sluice.spawn().await;
    wait_source(&sluice, "both partitions assigned", |s| {
        s["assigned_partitions"] == 2
    })
    .await;
    assert_eq!(sluice.terminate(), Some(0));
    let view = crate::kafka_sources::plain_view(&topic, &format!("g-{topic}"), 2);
    assert!(
        view.iter()
            .all(|(_, high, committed)| Some(*high) == *committed),
        "committed up to sluice's positions: {view:?}\n{}",
        sluice.log()
    );
    // Nothing of the 2,000 is read again, and what comes next is.
    sluice.spawn().await;
    wait_source(&sluice, "both partitions assigned", |s| {
        s["assigned_partitions"] == 2
    })
    .await;
    produce_numbered(&topic, 2_100..2_110).await;
    assert_eq!(wait_counter(&sluice, RECEIVED, 10).await, 10);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        source_counter(&sluice.metrics().await, RECEIVED),
        10,
        "nothing read again"
    );
    assert_eq!(
        sluice.stats("all.fn").await["depth"],
        2_110,
        "nothing queued twice"
    );
    assert!(
        sluice
            .log()
            .contains("Resuming after what sluice holds durable."),
        "{}",
        sluice.log()
    );

    let recv = Receiver::start_on(port, None).await;
    wait_distinct(&recv, 2_110, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        distinct(&recv),
        ((0..2_110).collect(), 2_110),
        "each record once"
    );
}

/// `GET /api/sources/src` once `want` holds for it (or fail after 60 s, showing
/// the last answer and the log).
pub async fn wait_source(sluice: &Sluice, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = sluice.get_json("/api/sources/src").await;
        if want(&status) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited for {what}: {status}\n{}",
            sluice.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
