//! Two sluice processes in one Kafka consumer group.
//!
//! A member that leaves hands its partitions over; a member killed with `kill -9`
//! has its partitions taken over once its session times out. (The test broker is
//! tansu 0.6 with a fix to its group coordinator, see scripts/services.sh: as
//! released, it drops a member whose session expired without starting a
//! rebalance, so the dead member's partitions were never reassigned.) When a test
//! fails it prints what is missing, the broker's watermarks and the group's
//! committed offsets.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;

use crate::harness::{Receiver, Sluice};
use crate::kafka::{
    brokers, distinct, produce_numbered, source_config, source_counter, topic, uuid_like,
    with_source,
};

/// Two sluice processes in one consumer group share the partitions; when one
/// leaves, the other takes its partitions over and every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_a_group_and_hand_over() {
    let topic = topic("group", 4).await;
    let group = format!("g-{topic}");
    let recv = Receiver::start().await;
    let config = group_config(&topic, &group, &recv.url());
    let mut a = Sluice::start(&config).await;
    let b = Sluice::start(&config).await;
    // Let both join before records flow.
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce_numbered(&topic, 0..10_000).await;
    wait_all(&recv, 10_000, &topic, &group, &b).await;
    let (ra, rb) = (received(&a).await, received(&b).await);
    assert!(ra > 0 && rb > 0, "both members consumed: {ra} and {rb}");

    // A leaves: B alone gets all four partitions and every new record.
    assert_eq!(a.terminate(), Some(0));
    produce_numbered(&topic, 10_000..20_000).await;
    wait_all(&recv, 20_000, &topic, &group, &b).await;

    drop(a);
}

/// When one member of a group is killed with `kill -9`, the other takes its
/// partitions over after the session timeout, from the dead member's last
/// committed offsets. What the dead member had committed but not yet delivered
/// is durable in its own data dir, not lost: it is delivered when that process
/// starts again on it. Only what the dead member had not committed is delivered
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_are_taken_over() {
    let topic = topic("takeover", 4).await;
    let group = format!("g-{topic}");
    let recv = Receiver::start().await;
    let config = group_config(&topic, &group, &recv.url());
    let mut a = Sluice::start(&config).await;
    // B joins second: A, the first member, leads the group, so killing A also
    // kills the member that computed the assignment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = Sluice::start(&config).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    produce_numbered(&topic, 0..10_000).await;
    wait_all(&recv, 10_000, &topic, &group, &b).await;
    let (ra, rb) = (received(&a).await, received(&b).await);
    assert!(ra > 0 && rb > 0, "both members consumed: {ra} and {rb}");

    // A dies mid-stream, with records of its partitions still coming.
    let more = tokio::spawn(produce_numbered_owned(topic.clone(), 10_000..20_000));
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.kill9();
    more.await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !b
        .log()
        .contains("Partitions assigned. source=src partitions=4")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let B read what is left of A's partitions, then bring A back for what it
    // held: both together deliver every record.
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "before A came back: {} of 20000 records",
        distinct(&recv).0.len()
    );
    a.spawn().await;
    wait_all(&recv, 20_000, &topic, &group, &b).await;
    let (seen, deliveries) = distinct(&recv);
    eprintln!(
        "takeover: {} records, {deliveries} deliveries ({} delivered twice)",
        seen.len(),
        deliveries - seen.len()
    );
    assert!(
        b.log()
            .contains("Partitions assigned. source=src partitions=4")
            && received(&b).await > rb,
        "B took partitions over"
    );
}

async fn produce_numbered_owned(topic: String, range: std::ops::Range<u64>) {
    produce_numbered(&topic, range).await;
}

/// Wait up to 90 s for records `0..n` at the receiver; on failure, show what is
/// missing, the broker's watermarks and the group's committed offsets.
async fn wait_all(recv: &Receiver, n: u64, topic: &str, group: &str, sluice: &Sluice) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while (distinct(recv).0.len() as u64) < n && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let seen = distinct(recv).0;
    let missing: Vec<u64> = (0..n).filter(|i| !seen.contains(i)).collect();
    if missing.is_empty() {
        return;
    }
    let c: rdkafka::consumer::BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    let mut offsets = String::new();
    for p in 0..4 {
        let (lo, hi) = c
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .unwrap();
        let at = committed.find_partition(topic, p).map(|e| e.offset());
        offsets.push_str(&format!("p{p}: records {lo}..{hi}, committed {at:?}\n"));
    }
    let mut by_id: std::collections::HashMap<String, std::collections::HashSet<u64>> =
        Default::default();
    for r in recv.delivered() {
        if let (Some(id), Some(n)) = (r.header("ce-id"), r.json()["n"].as_u64()) {
            by_id.entry(id.to_owned()).or_default().insert(n);
        }
    }
    let shared = by_id.values().filter(|ns| ns.len() > 1).count();
    let mut ids_of_n: std::collections::HashMap<u64, std::collections::HashSet<String>> =
        Default::default();
    for (id, ns) in &by_id {
        for n in ns {
            ids_of_n.entry(*n).or_default().insert(id.clone());
        }
    }
    let multi: Vec<_> = ids_of_n
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .take(3)
        .collect();
    eprintln!(
        "records delivered under more than one id: {} e.g. {multi:?}",
        ids_of_n.values().filter(|ids| ids.len() > 1).count()
    );
    // Read the topic again now: does each offset still hold the record that was
    // delivered under its id?
    let reader: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("check-{}", uuid_like()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&[topic]).unwrap();
    let mut now_at: std::collections::HashMap<String, u64> = Default::default();
    while let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await {
        let v: serde_json::Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).unwrap_or_default();
        now_at.insert(
            format!("{topic}-{}-{}", m.partition(), m.offset()),
            v["n"].as_u64().unwrap_or(u64::MAX),
        );
    }
    let changed = by_id
        .iter()
        .filter(|(id, ns)| now_at.get(*id).is_some_and(|n| !ns.contains(n)))
        .count();
    let missing_now = missing
        .iter()
        .filter(|n| !now_at.values().any(|v| v == *n))
        .count();
    let mut where_missing: Vec<&String> = now_at
        .iter()
        .filter(|(_, n)| missing.contains(n))
        .map(|(id, _)| id)
        .collect();
    where_missing.sort();
    eprintln!(
        "missing at ids {:?} .. {:?}; stats {}",
        where_missing.first(),
        where_missing.last(),
        sluice.stats("all.fn").await
    );
    eprintln!("topic read back: {} records; ids now holding a different record: {changed}; missing records not in the topic now: {missing_now}", now_at.len());
    let metrics = sluice.metrics().await;
    let dups: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("duplicate_total{") || l.contains("received_total{"))
        .collect();
    panic!(
        "{} of {n} records missing, e.g. {:?}\n{offsets}ids shared by different records: {shared}\n{dups:?}\nlog:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        sluice.log()
    );
}

/// A group member's config: a short session, so a dead member is noticed fast.
fn group_config(topic: &str, group: &str, url: &str) -> String {
    with_source(
        &source_config(topic, group, url),
        "    options: { session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\" }\n",
    )
}

/// `sluice_events_received_total` of the Kafka source `src`.
async fn received(s: &Sluice) -> u64 {
    source_counter(&s.metrics().await, "sluice_events_received_total")
}
