//! Chaos on the README's pipeline: Kafka -> PostgreSQL while sluice is killed
//! (`kill -9`) or stopped (SIGTERM) at random moments and restarted at once,
//! often while its dead predecessor is still a member of the group.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{pg_url, Db};
use crate::harness::Sluice;
use crate::kafka;
use crate::kafka_sources::{next, seed};

/// Records produced (`SLUICE_CHAOS_RECORDS`; the full run uses 200,000).
fn records() -> u64 {
    std::env::var("SLUICE_CHAOS_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30_000)
}

/// The README's `schemas/examples/etl.yaml` (its `server` block is the harness's),
/// on the test broker and database, with a topic, group and table of its own.
fn etl_config(topic: &str, table: &str) -> String {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/examples/etl.yaml");
    let text = std::fs::read_to_string(file).unwrap();
    let mut body = text[text.find("sources:").unwrap()..].to_owned();
    for (from, to) in [
        ("${KAFKA_BROKERS}", kafka::brokers()),
        ("${DATABASE_URL}", pg_url()),
        ("topics: [orders]", format!("topics: [{topic}]")),
        ("group: sluice-etl", format!("group: sluice-etl-{topic}")),
        ("table: orders", format!("table: {table}")),
    ] {
        assert!(body.contains(from), "etl.yaml has no {from:?}");
        body = body.replacen(from, &to, 1);
    }
    body
}

/// Records produced with batching into 3 partitions while sluice is killed or
/// stopped at six random moments of the load and restarted at once: the table
/// ends with exactly one row per record and the produced sum of `amount`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_postgres_through_random_kills_and_restarts() {
    let records = records();
    let started = Instant::now();
    let db = Db::new("chaos").await;
    db.exec(
        "CREATE TABLE {s}.orders (event_key uuid PRIMARY KEY, order_id text NOT NULL, \
         customer text, amount numeric, big boolean, ordered_at timestamptz, raw jsonb)",
    )
    .await;
    let topic = kafka::topic("chaos", 3).await;
    // amount = n % 1000 + 0.5: its sum is exact in numeric, twice it an integer.
    let expected_twice: i64 = (0..records).map(|n| (2 * (n % 1000) + 1) as i64).sum();
    let producing = {
        let topic = topic.clone();
        tokio::spawn(async move {
            kafka::produce(&topic, 0..records, |n| {
                let customer = format!("C-{}", n % 97);
                let value = json!({"order_id": format!("o-{n}"), "customer": customer, "amount": (n % 1000) as f64 + 0.5});
                (customer, value)
            })
            .await;
        })
    };
    let config = etl_config(&topic, &format!("{}.orders", db.schema));
    let mut sluice = Sluice::start(&config).await;
    let mut rng = seed();
    let mut marks: Vec<u64> = (0..6).map(|_| 5 + next(&mut rng) % 85).collect();
    marks.sort_unstable();
    let mut logs = String::new();
    for (cycle, percent) in marks.into_iter().enumerate() {
        let at = (records * percent / 100) as i64;
        db.wait_rows("orders", at, Duration::from_secs(300)).await;
        tokio::time::sleep(Duration::from_millis(next(&mut rng) % 400)).await;
        let how = if next(&mut rng).is_multiple_of(3) {
            assert_eq!(sluice.terminate(), Some(0), "{}", sluice.log());
            "SIGTERM"
        } else {
            sluice.kill9();
            "kill -9"
        };
        println!(
            "cycle {cycle}: {how} at {} rows, {:?} in",
            db.count("orders").await,
            started.elapsed()
        );
        logs.push_str(&sluice.log());
        std::fs::write(sluice.dir.path().join("sluice.log"), "").unwrap();
        sluice.spawn().await;
    }
    producing.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while db.count("orders").await < records as i64 {
        if Instant::now() > deadline {
            logs.push_str(&sluice.log());
            let gaps: Vec<&str> = logs
                .lines()
                .filter(|l| l.contains("Records skipped"))
                .collect();
            panic!(
                "{} of {records} rows after 300 s; gaps sluice reported: {gaps:#?}",
                db.count("orders").await
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Anything still in flight would show as extra rows: give it a moment.
    tokio::time::sleep(Duration::from_secs(1)).await;
    logs.push_str(&sluice.log());
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT order_id), (sum(amount) * 2)::bigint \
                 FROM {}.orders",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    let skipped: u64 = logs
        .lines()
        .filter(|l| l.contains("already in the table"))
        .filter_map(|l| {
            l.split("skipped=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    println!(
        "chaos: {records} records through 6 kills/stops in {:?}; {skipped} rows delivered \
         again and skipped by ON CONFLICT",
        started.elapsed()
    );
    assert_eq!(row.get::<_, i64>(0), records as i64, "rows");
    assert_eq!(row.get::<_, i64>(1), records as i64, "distinct orders");
    assert_eq!(row.get::<_, i64>(2), expected_twice, "sum(amount) * 2");
    assert!(!logs.contains("Records skipped"), "no gap: {logs}");
}
