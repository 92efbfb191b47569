//! A Kafka source's promises under faults, checked as its users would: what
//! `/api/sources` and `/readyz` say, what reaches the target after crashes, that
//! a commit never covers a record sluice does not hold, and that skipped offsets
//! are reported.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::harness::{free_port, Receiver, Sluice};
use crate::kafka::{
    brokers, distinct, produce_numbered, source_config, source_counter, topic, wait_source,
    with_source,
};

/// A plain consumer's view of `group` on `topic`: per partition its watermarks
/// and the group's committed offset.
pub fn plain_view(topic: &str, group: &str, partitions: i32) -> Vec<(i64, i64, Option<i64>)> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5)).unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = c
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap();
            let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            (low, high, at)
        })
        .collect()
}

/// Per partition, what `/api/sources/src` says: (high watermark, committed, lag).
fn sluice_view(status: &Value) -> Vec<(i64, Option<i64>, i64)> {
    status["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["high_watermark"].as_i64().unwrap_or(-1),
                p["committed_offset"].as_i64(),
                p["lag"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The gaps a source counted in all (`sluice_kafka_offset_gaps_total`).
fn gaps(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("sluice_kafka_offset_gaps_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// `/api/sources` shows the partitions a source holds, its committed and durable
/// offsets and its lag, and they agree with what a plain consumer reads from the
/// broker for the group; once delivery catches up, the lag is 0. A normal run
/// reports no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sources_api_shows_assignment_and_lag_as_a_plain_consumer_sees_them() {
    let topic = topic("status", 3).await;
    let group = format!("g-{topic}");
    let port = free_port();
    // The target is down: sluice reads about `max_backlog` records and pauses.
    let config = source_config(&topic, &group, &format!("http://127.0.0.1:{port}/invoke"));
    let sluice = Sluice::start(&with_source(
        &config,
        "    batch: 50\n    max_backlog: 300\n",
    ))
    .await;
    produce_numbered(&topic, 0..3_000).await;
    wait_source(&sluice, "paused", |s| s["state"] == "paused").await;

    // Paused, the view is still: sluice's numbers and a plain consumer's agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (ours, theirs) = loop {
        let status = sluice.get_json("/api/sources/src").await;
        let ours = sluice_view(&status);
        let theirs: Vec<(i64, Option<i64>, i64)> = plain_view(&topic, &group, 3)
            .into_iter()
            .map(|(_, high, committed)| (high, committed, high - committed.unwrap_or(0)))
            .collect();
        if ours == theirs || Instant::now() > deadline {
            break (ours, theirs);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(
        ours, theirs,
        "(high watermark, committed, lag) per partition"
    );
    let status = sluice.get_json("/api/sources/src").await;
    assert_eq!(status["type"], "kafka");
    assert_eq!(status["group"], group.as_str());
    assert_eq!(status["assigned_partitions"], 3);
    let lag: i64 = ours.iter().map(|p| p.2).sum();
    assert!(
        lag >= 2_500,
        "most of 3,000 records wait in Kafka: {status}"
    );
    assert_eq!(status["lag"], lag);
    let partitions = status["partitions"].as_array().unwrap();
    for p in partitions {
        assert_eq!(p["durable_offset"], p["committed_offset"], "{p}");
    }
    assert!(
        partitions.iter().any(|p| p["last_record_at"].is_string()),
        "{status}"
    );
    let metrics = sluice.metrics().await;
    assert!(
        metrics.contains("sluice_kafka_assigned_partitions{source=\"src\"} 3"),
        "{metrics}"
    );
    let metric_lag: i64 = metrics
        .lines()
        .filter(|l| l.starts_with("sluice_kafka_lag{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum();
    assert_eq!(metric_lag, lag);
    let listing = sluice.get_json("/api/sources").await;
    assert_eq!(listing["sources"][0]["name"], "src", "{listing}");

    // The target comes up: everything arrives and the lag goes to 0.
    let recv = Receiver::start_on(port, None).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct(&recv).0.len() < 3_000 {
        assert!(
            Instant::now() < deadline,
            "{} arrived",
            distinct(&recv).0.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = wait_source(&sluice, "lag 0, all committed", |s| {
        s["state"] == "consuming"
            && s["lag"] == 0
            && s["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["committed_offset"] == p["high_watermark"])
    })
    .await;
    assert!(
        plain_view(&topic, &group, 3)
            .iter()
            .all(|(_, high, committed)| Some(*high) == *committed),
        "{status}"
    );
    assert_eq!(gaps(&sluice.metrics().await), 0, "no gap in a normal run");
    assert!(
        !sluice.log().contains("Records skipped"),
        "{}",
        sluice.log()
    );
}

/// `kill -9` a second after the first deliveries, before the group's first
/// commit: the restarted process resumes after what it had made durable instead
/// of reading everything again, and every record arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_crash_requeues_only_what_was_not_yet_durable() {
    let topic = topic("early", 3).await;
    let recv = Receiver::start().await;
    let config = with_source(
        &source_config(&topic, &format!("g-{topic}"), &recv.url()),
        // No commit before the crash, whatever the timing.
        "    options: { auto.commit.interval.ms: \"600000\" }\n",
    );
    produce_numbered(&topic, 0..3_000).await;
    let mut sluice = Sluice::start(&config).await;
    recv.wait_for(1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = source_counter(&sluice.metrics().await, "sluice_events_received_total");
    sluice.kill9();
    assert!(first > 0);

    produce_numbered(&topic, 3_000..6_000).await;
    sluice.spawn().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct(&recv).0.len() < 6_000 {
        assert!(
            Instant::now() < deadline,
            "{} of 6000 arrived",
            distinct(&recv).0.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = sluice.metrics().await;
    let matched: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "sluice_events_matched_total{bus=\"default\",rule=\"all\",target=\"fn\"} ",
            )
        })
        .map_or(0, |v| v.parse().unwrap());
    let (_, deliveries) = distinct(&recv);
    eprintln!(
        "early crash: first run read {first}; the restarted one queued {matched}; \
         {} deliveries for 6000 records",
        deliveries
    );
    // The first run made all but its last batch (500 records) durable.
    assert!(
        matched <= 6_000 - first + 500,
        "the restarted process queued {matched}, the first had read {first}"
    );
    assert_eq!(gaps(&metrics), 0);
}

/// Records deleted (DeleteRecords) ahead of a paused source, before it read
/// them, are reported as a gap: a warning naming the offsets and the
/// `sluice_kafka_offset_gaps_total` counter; the records after them arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_they_are_read_are_reported_as_a_gap() {
    let topic = topic("gap", 1).await;
    // One record per batch, so DeleteRecords removes exactly what it is asked to.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    for n in 0..200u64 {
        let payload = json!({"n": n}).to_string();
        producer
            .send(
                FutureRecord::<str, str>::to(&topic).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let port = free_port();
    let config = source_config(
        &topic,
        &format!("g-{topic}"),
        &format!("http://127.0.0.1:{port}/invoke"),
    );
    let sluice = Sluice::start(&with_source(
        &config,
        "    batch: 10\n    max_backlog: 50\n",
    ))
    .await;
    let status = wait_source(&sluice, "paused", |s| s["state"] == "paused").await;
    let read = status["partitions"][0]["durable_offset"].as_i64().unwrap();
    assert!(read < 150, "{status}");

    // Offsets up to 149 are deleted while sluice is paused at `read`.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&topic, 0, Offset::Offset(150))
        .unwrap();
    admin
        .delete_records(&upto, &AdminOptions::new())
        .await
        .unwrap();

    let recv = Receiver::start_on(port, None).await;
    let want: HashSet<u64> = (0..read as u64).chain(150..200).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&distinct(&recv).0) {
        assert!(Instant::now() < deadline, "{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gaps(&sluice.metrics().await), 1, "{}", sluice.log());
    let line = format!("expected offset {read}, the next record is at 150");
    assert!(sluice.log().contains(&line), "{line}: {}", sluice.log());
    let status = sluice.get_json("/api/sources/src").await;
    assert_eq!(status["partitions"][0]["gaps"], 1, "{status}");
}

/// A commit never covers a record sluice does not hold: sluice is frozen
/// (SIGSTOP) at random moments while it consumes, the group's committed offsets
/// are read from the broker, and sluice is killed where it stood. A sluice
/// without the source then delivers what the store held: every record below the
/// committed offsets must be among what arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_never_covers_a_record_that_is_not_durable() {
    let topic = topic("commit", 3).await;
    let group = format!("g-{topic}");
    let recv = Receiver::start().await;
    let with_kafka = with_source(
        &source_config(&topic, &group, &recv.url()),
        "    batch: 100\n",
    );
    let drain_only = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 64\n\
rules:\n  - name: all\n    targets: [fn]\n",
        recv.url()
    );
    let producing = tokio::spawn(produce_numbered_owned(topic.clone(), 0..40_000));
    let mut sluice = Sluice::start(&with_kafka).await;
    let mut seed = seed();
    let mut checked = 0;
    for round in 0..5 {
        // Frozen while it consumes: once it holds partitions and has committed.
        wait_source(&sluice, "a commit", |s| {
            s["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["committed_offset"].is_i64()))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(next(&mut seed) % 1_500)).await;
        sluice.freeze();
        let committed = plain_view(&topic, &group, 3);
        sluice.kill9();
        sluice.set_body(&drain_only);
        sluice.spawn().await;
        let ids = |r: &Receiver| -> HashSet<String> {
            r.delivered()
                .iter()
                .filter_map(|d| d.header("ce-id").map(str::to_owned))
                .collect()
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let missing = loop {
            let got = ids(&recv);
            let missing = (0..3)
                .flat_map(|p| {
                    let upto = committed[p as usize].2.unwrap_or(0);
                    (0..upto).map(move |o| (p, o))
                })
                .filter(|(p, o)| !got.contains(&format!("{topic}-{p}-{o}")))
                .collect::<Vec<_>>();
            if missing.is_empty() || Instant::now() > deadline {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            missing.is_empty(),
            "round {round}: committed {committed:?} but {} records below it were not in sluice, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        checked += committed.iter().map(|c| c.2.unwrap_or(0)).sum::<i64>();
        assert_eq!(sluice.terminate(), Some(0));
        sluice.set_body(&with_kafka);
        sluice.spawn().await;
    }
    producing.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while distinct(&recv).0.len() < 40_000 {
        assert!(
            Instant::now() < deadline,
            "{} of 40000: {}\n{}",
            distinct(&recv).0.len(),
            sluice.get_json("/api/sources/src").await,
            sluice.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("commit check: 5 freezes, {checked} committed offsets checked against the store");
}

async fn produce_numbered_owned(topic: String, range: std::ops::Range<u64>) {
    produce_numbered(&topic, range).await;
}

/// A seed for a test's random choices: `SLUICE_TEST_SEED` to replay a run, else
/// the clock (printed, so a failure can be replayed).
pub fn seed() -> u64 {
    let seed = std::env::var("SLUICE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("SLUICE_TEST_SEED={seed}");
    seed
}

/// xorshift64: the next pseudo-random number.
pub fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A process restarted right after `kill -9` joins the group while its dead
/// predecessor is still a member; it gets every partition once the dead
/// member's session (10 s by default) has expired and the group rebalanced, and
/// says what it is waiting for meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_restarted_after_kill_9_gets_its_partitions_back() {
    let topic = topic("rejoin", 3).await;
    let recv = Receiver::start().await;
    let mut sluice =
        Sluice::start(&source_config(&topic, &format!("g-{topic}"), &recv.url())).await;
    wait_source(&sluice, "three partitions", |s| {
        s["assigned_partitions"] == 3
    })
    .await;
    produce_numbered(&topic, 0..1_000).await;
    recv.wait_for(1_000, Duration::from_secs(60)).await;
    sluice.kill9();
    let restarted = Instant::now();
    sluice.spawn().await;
    produce_numbered(&topic, 1_000..2_000).await;
    wait_source(&sluice, "three partitions after the restart", |s| {
        s["assigned_partitions"] == 3
    })
    .await;
    let took = restarted.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while distinct(&recv).0.len() < 2_000 {
        assert!(
            Instant::now() < deadline,
            "{} of 2000",
            distinct(&recv).0.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("rejoin: partitions back {took:?} after the restart");
    // The session timeout plus a rebalance, with room for a slow machine.
    assert!(
        took < Duration::from_secs(40),
        "partitions back after {took:?}"
    );
}

/// Brokers that cannot be reached make `/readyz` answer 503 naming the source,
/// `/api/sources` say so, and the log say it once with a count rather than many
/// times a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_show_in_readyz_without_flooding_the_log() {
    let nobody = format!("127.0.0.1:{}", free_port());
    let config = format!(
        "sources:\n  - name: src\n    type: kafka\n    brokers: {nobody}\n    topics: [t]\n    group: g\n\
targets:\n  - name: fn\n    type: discard\n\
rules:\n  - name: all\n    targets: [fn]\n"
    );
    let sluice = Sluice::start_unready(&config).await;
    let (status, body) = sluice
        .wait_readyz(Duration::from_secs(30), |status, body| {
            status == 503 && body["sources"].is_array()
        })
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["sources"][0]["source"], "src", "{body}");
    assert!(
        body["sources"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot be reached"),
        "{body}"
    );
    let source = sluice.get_json("/api/sources/src").await;
    assert_eq!(source["state"], "broker_unreachable", "{source}");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = sluice.log();
    let noisy = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .count();
    assert!(noisy <= 10, "{noisy} error lines in ~15 s:\n{log}");
}
