//! THE pipeline test: Kafka -> filter + jq -> PostgreSQL rows, through two
//! `kill -9`s.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{pg_url, Db};
use crate::harness::Sluice;
use crate::kafka;

/// THE pipeline: 100,000 Kafka records (4 partitions) -> filter + jq reshape ->
/// rows, with sluice killed (-9) twice on the way. The table ends with exactly the
/// expected rows, each once, with the right values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_postgres_survives_kill_9_with_exact_rows() {
    const RECORDS: u64 = 100_000;
    let started = Instant::now();
    let db = Db::new("pipe").await;
    db.exec(
        "CREATE TABLE {s}.orders (n bigint NOT NULL, customer text NOT NULL, total numeric, \
         big boolean, event_key uuid PRIMARY KEY)",
    )
    .await;
    let topic = kafka::topic("pg-pipe", 4).await;
    // A session shorter than sluice's default 10 s, so the group hands the
    // partitions of a killed process to its successor sooner.
    let config = format!(
        "sources:\n  - name: src\n    type: kafka\n    brokers: {brokers}\n    topics: [{topic}]\n    group: g-{topic}\n    start: earliest\n    \
options: {{ session.timeout.ms: \"6000\", heartbeat.interval.ms: \"500\" }}\n\
targets:\n  - name: pg\n    type: postgres\n    url: {url}\n    table: {schema}.orders\n    concurrency: 4\n    batch: {{ max_events: 1000, max_wait: 200ms }}\n    columns:\n      n: {{ path: $.data.n, type: bigint }}\n      customer: {{ path: $.data.who, type: text }}\n      total: {{ path: $.data.total, type: numeric }}\n      big: {{ path: $.data.big, type: boolean }}\n\
rules:\n  - name: etl\n    filter: {{ pattern: {{ data: {{ kind: [order] }} }} }}\n    transform:\n      jq: '{{n: .data.n, who: .data.customer, total: .data.total, big: (.data.total >= 100000)}}'\n    targets: [pg]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 500ms }} }}\n",
        brokers = kafka::brokers(),
        url = pg_url(),
        schema = db.schema,
    );
    // Every tenth record is a test order, filtered out.
    let kept = |n: u64| n % 10 != 3;
    let expected = (0..RECORDS).filter(|n| kept(*n)).count() as i64;
    let expected_sum: i64 = (0..RECORDS).filter(|n| kept(*n)).map(|n| n as i64).sum();
    let expected_big = (0..RECORDS)
        .filter(|n| kept(*n) && *n as f64 * 1.5 >= 100_000.0)
        .count() as i64;

    produce(&topic, RECORDS, kept).await;
    println!("produced {RECORDS} records in {:?}", started.elapsed());
    let loading = Instant::now();
    // Without ingest's duplicate window: Kafka records replayed after a crash reach
    // the table again, and ON CONFLICT must keep them single.
    let mut sluice = Sluice::start_with_server(&config, "  dedupe_window: 0s\n").await;
    let mut logs = String::new();
    for fraction in [0.2, 0.6] {
        let at = (expected as f64 * fraction) as i64;
        wait_progress(&db, at, Duration::from_secs(60)).await;
        sluice.kill9();
        println!(
            "killed at {} rows, {:?} after start",
            db.count("orders").await,
            loading.elapsed()
        );
        logs.push_str(&sluice.log());
        std::fs::write(sluice.dir.path().join("sluice.log"), "").unwrap();
        sluice.spawn().await;
    }
    wait_progress(&db, expected, Duration::from_secs(90)).await;
    let load_time = loading.elapsed();
    // Anything still in flight would show as extra rows: give it a moment.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let row = db
        .client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT event_key), count(DISTINCT n), sum(n)::bigint, \
                 (sum(total) * 2)::bigint, count(*) FILTER (WHERE big), \
                 count(*) FILTER (WHERE customer <> 'c' || (n % 97)::text) \
                 FROM {}.orders",
                db.schema
            ),
            &[],
        )
        .await
        .unwrap();
    logs.push_str(&sluice.log());
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
        "pipeline: {expected} rows in {load_time:?} ({:.0} rows/s, two kill -9 included); \
         {skipped} redelivered rows skipped by ON CONFLICT; whole test {:?}",
        expected as f64 / load_time.as_secs_f64(),
        started.elapsed()
    );
    assert_eq!(row.get::<_, i64>(0), expected, "rows");
    assert_eq!(row.get::<_, i64>(1), expected, "distinct keys");
    assert_eq!(row.get::<_, i64>(2), expected, "distinct n");
    assert_eq!(row.get::<_, i64>(3), expected_sum, "sum(n)");
    // total = n * 1.5, summed exactly in numeric.
    assert_eq!(row.get::<_, i64>(4), expected_sum * 3, "sum(total) * 2");
    assert_eq!(row.get::<_, i64>(5), expected_big, "big");
    assert_eq!(row.get::<_, i64>(6), 0, "customer of every row");
    let dead = sluice.stats("etl.pg").await;
    assert_eq!(dead["dead_letters"], 0, "{dead}");
}

/// Wait until `orders` holds `n` rows, printing progress (or panic after `timeout`).
async fn wait_progress(db: &Db, n: i64, timeout: Duration) {
    let start = Instant::now();
    let mut last = (start, db.count("orders").await);
    loop {
        let got = db.count("orders").await;
        if got >= n {
            return;
        }
        if last.0.elapsed() >= Duration::from_secs(5) {
            let rate = (got - last.1) as f64 / last.0.elapsed().as_secs_f64();
            println!("{got} rows ({rate:.0} rows/s)");
            last = (Instant::now(), got);
        }
        assert!(
            start.elapsed() < timeout,
            "waited {timeout:?} for {n} rows, got {got}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Produce `count` records `{"n", "customer", "total", "kind"}` keyed by customer.
async fn produce(topic: &str, count: u64, kept: impl Fn(u64) -> bool) {
    kafka::produce(topic, 0..count, |n| {
        let customer = format!("c{}", n % 97);
        let value = json!({
            "n": n,
            "customer": customer,
            "total": n as f64 * 1.5,
            "kind": if kept(n) { "order" } else { "test" },
        });
        (customer, value)
    })
    .await;
}
