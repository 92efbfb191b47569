//! RabbitMQ source and target against a real RabbitMQ (`SLUICE_TEST_RABBITMQ`,
//! default `amqp://guest:guest@127.0.0.1:5672/%2f`; the test script starts one).
//! Each test uses its own queues and exchanges, and the broker-restart test its
//! own vhost, so tests do not disturb each other.

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};

use crate::harness::{validate, Receiver, Sluice};

mod target;

pub fn url() -> String {
    std::env::var("SLUICE_TEST_RABBITMQ")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `url()` on vhost `vhost` instead.
fn url_on(vhost: &str) -> String {
    let base = url();
    let at = base.rfind('/').unwrap();
    format!("{}/{vhost}", &base[..at])
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

pub async fn channel(url: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

/// A durable queue `name`, bound to `exchange` with `key` when given.
pub async fn queue(ch: &Channel, name: &str, bind: Option<(&str, &str)>) {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    if let Some((exchange, key)) = bind {
        ch.queue_bind(
            name.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
}

/// Publish every message to the default exchange's `queue`, with confirms
/// (pipelined: waited for every 2,000).
pub async fn publish_all(ch: &Channel, queue: &str, messages: Vec<(Vec<u8>, BasicProperties)>) {
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (i, (body, props)) in messages.into_iter().enumerate() {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            props.with_delivery_mode(2),
        )
        .await
        .unwrap();
        if i % 2000 == 1999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
}

/// Messages ready on `queue` (a passive declare: the queue must exist).
async fn ready_count(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

/// Delete what a test declared on the machine's broker (a failed test leaves its
/// names behind, for a look).
async fn remove(queues: &[&str], exchanges: &[&str]) {
    let (_conn, ch) = channel(&url()).await;
    for q in queues {
        let _ = ch
            .queue_delete((*q).into(), QueueDeleteOptions::default())
            .await;
    }
    for x in exchanges {
        let _ = ch
            .exchange_delete((*x).into(), ExchangeDeleteOptions::default())
            .await;
    }
}

fn headers(h: &[(&str, &str)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in h {
        t.insert(
            ShortString::from(*k),
            AMQPValue::LongString(LongString::from(*v)),
        );
    }
    t
}

fn ce_props(id: &str, ty: &str) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers(&[
            ("cloudEvents_specversion", "1.0"),
            ("cloudEvents_id", id),
            ("cloudEvents_source", "/shop"),
            ("cloudEvents_type", ty),
            ("cloudEvents_tenant", "acme"),
        ]))
}

fn numbered(n: u64) -> (Vec<u8>, BasicProperties) {
    (
        json!({"n": n}).to_string().into_bytes(),
        BasicProperties::default(),
    )
}

/// Distinct `data.n` values the receiver got, and how many deliveries in all.
fn distinct(recv: &Receiver) -> (HashSet<u64>, usize) {
    let got = recv.delivered();
    let set = got.iter().filter_map(|r| r.json()["n"].as_u64()).collect();
    (set, got.len())
}

async fn wait_distinct(recv: &Receiver, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let (set, total) = distinct(recv);
        if set.len() >= n {
            return total;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} distinct messages arrived",
            set.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A sum of a metric's samples whose line starts with `prefix`.
fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn source_to_http(queue: &str, target: &str, extra: &str) -> String {
    format!(
        "sources:\n  - name: src\n    type: rabbitmq\n    url: \"{}\"\n    queue: {queue}\n{extra}\
targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 64\n\
rules:\n  - name: all\n    targets: [fn]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 500ms }} }}\n",
        url(),
        target
    )
}

/// Bad settings are `sluice validate` errors with their path and line.
#[test]
fn bad_rabbitmq_settings_are_validate_errors_with_path_and_line() {
    let text = "\
sources:
  - name: a
    type: rabbitmq
    url: http://127.0.0.1:5672/
    queue: \"\"
    prefetch: 0
    declare:
      arguments: { x-queue-type: quorum, x-max-length: \"ten\", x-custom: [1, 2] }
    bindings: [{ exchange: \"\", routing_key: \"order.*\" }]
  - name: b
    type: rabbitmq
    url: amqp://127.0.0.1:5672/%2f
    queue: q
    bindings: [{ routing_key: \"order.*\" }]
targets:
  - name: t
    type: rabbitmq
    url: amqps://
    exchange: shop
    routing_key: \"{type\"
";
    let (code, _, stderr) = validate(text);
    assert_eq!(code, 1, "{stderr}");
    for want in [
        "sources[0].url: \"http://127.0.0.1:5672/\" is not a URL starting with amqp:// or amqps:// (line 4",
        "sources[0].queue: must not be empty (line 5",
        "sources[0].prefetch: must be between 1 and 65535 (line 6",
        "sources[0].declare.arguments.x-max-length: RabbitMQ expects x-max-length as integer, found string (line 8",
        "sources[0].declare.arguments.x-custom: unknown argument type: a list or map",
        "sources[0].bindings[0].exchange: name the exchange to bind to",
        "sources[1].bindings[0]: missing field `exchange` (line 14",
        "targets[0].url: \"amqps://\" is not a URL starting with amqp:// or amqps://",
        "targets[0].routing_key: `{` at byte 0 is never closed (line 20",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("x-queue-type"), "{stderr}");
}

/// 10,000 messages of every kind: binary CloudEvents (both header spellings),
/// structured, plain JSON, plain bytes and broken CloudEvents headers. The rule
/// keeps `order.created` events and plain JSON messages flagged `keep`; exactly
/// those arrive, with the mapped attributes; with `malformed: reject` the broken
/// ones are in the source's dead-letter list and rejected on the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_of_every_kind_become_events_and_only_matches_arrive() {
    let q = unique("mixed");
    let dlq = format!("{q}-dead");
    let (_conn, ch) = channel(&url()).await;
    // The queue's dead-letter exchange (the default one, to `dlq`) takes rejects.
    queue(&ch, &dlq, None).await;
    let recv = Receiver::start().await;
    let config = format!(
        "sources:\n  - name: shop\n    type: rabbitmq\n    url: \"{}\"\n    queue: {q}\n    malformed: reject\n    event_type: com.example.plain\n    declare: {{ durable: true, arguments: {{ x-dead-letter-exchange: \"\", x-dead-letter-routing-key: {dlq} }} }}\n\
targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 64\n\
rules:\n  - name: keep\n    filter:\n      filters:\n        - any:\n          - exact: {{ type: order.created }}\n          - exact: {{ data.keep: \"true\" }}\n    targets: [fn]\n",
        url(),
        recv.url()
    );
    let sluice = Sluice::start(&config).await;
    let mut expected = BTreeSet::new();
    let mut messages = Vec::new();
    for i in 0..10_000u64 {
        let body = json!({"n": i}).to_string().into_bytes();
        let m = match i % 6 {
            0 => {
                expected.insert(format!("b-{i}"));
                (body, ce_props(&format!("b-{i}"), "order.created"))
            }
            1 => (body, ce_props(&format!("b-{i}"), "order.deleted")),
            2 => {
                let e = json!({"specversion": "1.0", "id": format!("s-{i}"), "source": "/s", "type": "order.created", "data": {"n": i}});
                expected.insert(format!("s-{i}"));
                (
                    e.to_string().into_bytes(),
                    BasicProperties::default()
                        .with_content_type("application/cloudevents+json".into()),
                )
            }
            3 => {
                if i % 2 == 0 {
                    expected.insert(format!("plain-{i}"));
                }
                (
                    json!({"keep": i % 2 == 0, "n": i}).to_string().into_bytes(),
                    BasicProperties::default().with_timestamp(1_700_000_000),
                )
            }
            4 => (vec![0xff, 0xfe, i as u8], BasicProperties::default()),
            _ => (
                // Claims to be a CloudEvent, lacks source and type.
                json!({"keep": true, "n": i}).to_string().into_bytes(),
                BasicProperties::default().with_headers(headers(&[
                    ("cloudEvents:specversion", "1.0"),
                    ("cloudEvents:id", "broken"),
                ])),
            ),
        };
        messages.push(m);
    }
    publish_all(&ch, &q, messages).await;
    let got = recv
        .wait_for(expected.len(), Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        recv.delivered().len(),
        expected.len(),
        "only the matching messages arrive"
    );
    let mut ids = BTreeSet::new();
    for r in &got {
        let id = r.header("ce-id").unwrap().to_owned();
        if r.header("ce-type") == Some("com.example.plain") {
            assert_eq!(r.header("ce-source"), Some(format!("amqp://{q}").as_str()));
            assert_eq!(r.header("ce-amqproutingkey"), Some(q.as_str()));
            assert_eq!(r.header("ce-time"), Some("2023-11-14T22:13:20Z"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(id.len(), 36, "a deterministic UUID: {id}");
            ids.insert(format!("plain-{}", r.json()["n"]));
        } else {
            assert_eq!(r.header("ce-type"), Some("order.created"));
            if id.starts_with("b-") {
                assert_eq!(r.header("ce-tenant"), Some("acme"));
                assert_eq!(r.header("ce-source"), Some("/shop"));
            }
            ids.insert(id);
        }
    }
    assert_eq!(ids, expected);
    // The broken ones: in the source's dead-letter list, and on the queue's DLX.
    let broken = 10_000 / 6;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rejected = ready_count(&ch, &dlq).await as usize;
        if rejected >= broken {
            assert_eq!(rejected, broken);
            break;
        }
        assert!(Instant::now() < deadline, "{rejected} rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listing = sluice
        .get_json("/api/sources/shop/dead-letters?limit=1")
        .await;
    let first = &listing["dead_letters"][0];
    assert!(
        first["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("required attribute is missing"),
        "{listing}"
    );
    let status = sluice.get_json("/api/sources/shop").await;
    assert_eq!(status["state"], "consuming", "{status}");
    assert_eq!(status["rejected"], broken, "{status}");
    remove(&[&q, &dlq], &[]).await;
}

/// `kill -9` in the middle of 50,000 messages: after a restart every message is
/// delivered; the duplicates (what was durable but not yet acknowledged) are
/// counted by the dedupe window, which keeps them from the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_message() {
    let q = unique("crash");
    let (_conn, ch) = channel(&url()).await;
    queue(&ch, &q, None).await;
    publish_all(&ch, &q, (0..50_000).map(numbered).collect()).await;
    let recv = Receiver::start().await;
    let mut sluice = Sluice::start(&source_to_http(&q, &recv.url(), "")).await;
    wait_distinct(&recv, 15_000, Duration::from_secs(120)).await;
    sluice.kill9();
    let before = distinct(&recv).0.len();
    sluice.spawn().await;
    let total = wait_distinct(&recv, 50_000, Duration::from_secs(240)).await;
    let dropped = metric(&sluice.metrics().await, "sluice_events_duplicate_total{");
    let duplicates = total - 50_000;
    eprintln!(
        "kill -9 after {before} messages: {dropped} redelivered messages dropped as duplicates, \
         {duplicates} duplicate deliveries of 50000"
    );
    // Redeliveries of what was durable were recognised by their ids.
    assert!(duplicates < 1_000, "{duplicates} duplicates");
    remove(&[&q], &[]).await;
}

/// A plain message that comes again (as a redelivery does: same body and
/// properties, the broker's `x-delivery-count` header aside) has the same id, and
/// the dedupe window drops it; a message that differs is another event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_again_keeps_its_id_and_is_dropped() {
    let q = unique("again");
    let (_conn, ch) = channel(&url()).await;
    queue(&ch, &q, None).await;
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&source_to_http(&q, &recv.url(), "")).await;
    let again = BasicProperties::default().with_headers({
        let mut h = FieldTable::default();
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(1));
        h
    });
    publish_all(
        &ch,
        &q,
        vec![numbered(1), numbered(2), (numbered(1).0, again)],
    )
    .await;
    let got = recv.wait_for(2, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&sluice.metrics().await, "sluice_events_duplicate_total{") < 1 {
        assert!(Instant::now() < deadline, "no duplicate counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.delivered().len(), 2);
    assert_ne!(got[0].header("ce-id"), got[1].header("ce-id"));
    remove(&[&q], &[]).await;
}

/// A stalled target bounds the backlog: the source stops taking deliveries past
/// `max_backlog` (the rest stays on the broker); a shutdown gives back what was
/// not acknowledged; after a restart, once the target is up, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_target_pauses_consumption() {
    let q = unique("backlog");
    let (_conn, ch) = channel(&url()).await;
    queue(&ch, &q, None).await;
    let port = crate::harness::free_port();
    let config = source_to_http(
        &q,
        &format!("http://127.0.0.1:{port}/invoke"),
        "    prefetch: 100\n    max_backlog: 200\n",
    );
    let mut sluice = Sluice::start(&config).await;
    publish_all(&ch, &q, (0..3_000).map(numbered).collect()).await;
    // The target is down: sluice takes in about max_backlog (plus a batch) and stops.
    let depth = sluice.backlog_holds("all.fn", 200..=300).await;
    let status = sluice.get_json("/api/sources/src").await;
    assert_eq!(status["state"], "paused", "{status}");
    let ready = ready_count(&ch, &q).await;
    assert!(ready >= 2_500, "{ready} messages wait on the broker");
    // SIGTERM: what sluice holds unacknowledged goes back to the queue; exactly
    // what is durable was acknowledged.
    let acked = status["acked"].as_u64().unwrap();
    assert_eq!(acked, depth, "{status}");
    assert_eq!(sluice.terminate(), Some(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = ready_count(&ch, &q).await;
        if u64::from(ready) == 3_000 - acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} ready after shutdown, {acked} acked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sluice.spawn().await;
    // The target comes up: everything arrives.
    let recv = Receiver::start_on(port, None).await;
    wait_distinct(&recv, 3_000, Duration::from_secs(120)).await;
    remove(&[&q], &[]).await;
}
