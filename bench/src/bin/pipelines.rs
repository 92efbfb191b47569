//! sluice pipeline benchmarks: Kafka in, through a rule, out to discard, Kafka,
//! PostgreSQL, S3 and Elasticsearch, each beside a plain client doing the same
//! I/O without sluice (its baseline), in one run on this machine.
//!
//! Every sluice scenario starts a fresh sluice child (the release binary next to
//! this one, a temp data dir, its own config, a free port) reading fresh topics on
//! the test broker (`SLUICE_TEST_KAFKA`), and follows it through `/metrics`
//! (`sluice_events_received_total`, `sluice_events_delivered_total`,
//! `sluice_queue_depth`) sampled every 50 ms, then checks the far side (output
//! topic, rows, objects, documents). Scenarios, in order (baseline in brackets):
//!
//! - `plain-producer`: a FutureProducer (acks=all, idempotent, linger 5 ms) writes
//!   the main topic of `--records` records (about 100-byte JSON values, a key, 4
//!   partitions) that the later scenarios read. It always runs.
//! - `plain-consumer`: a BaseConsumer in a new group reads the main topic, counting.
//! - `consume-match-discard` [plain-consumer]: sluice, Kafka source -> a rule
//!   matching every record -> `discard` target.
//! - `burst-lag` [plain-producer]: sluice idles on a fresh topic, then the records
//!   are produced as fast as the broker takes them; reports the largest lag
//!   (acknowledged by the broker, not yet received by sluice) and how long after
//!   the last acknowledgement sluice had everything.
//! - `produce-target` [plain-producer]: sluice -> `kafka` target, a fresh topic.
//! - `plain-copy`: the same rows written with `COPY ... FROM STDIN` into a table.
//! - `kafka-to-postgres` [plain-copy]: sluice -> `postgres` target, mode columns.
//! - `kafka-to-s3` [consume-match-discard]: sluice -> `s3` target, gzip JSON lines.
//! - `kafka-to-elasticsearch` [consume-match-discard]: sluice -> `elasticsearch`
//!   target; at most 20,000 records (the test server holds everything in memory).
//! - `drain-memory` [plain-copy]: the postgres target's table is missing, so
//!   sluice queues the whole main topic; then the table appears and the backlog
//!   drains while sluice's RSS is sampled every 100 ms.
//! - `rabbitmq-plain-publisher`, `rabbitmq-plain-consumer`,
//!   `rabbitmq-consume-match-discard` [rabbitmq-plain-consumer] and
//!   `rabbitmq-target` [rabbitmq-plain-publisher]: see `pipelines/rabbitmq.rs`
//!   (`SLUICE_TEST_RABBITMQ`). `--only rabbitmq` runs these four and no Kafka.
//!
//! sluice rates are from the first record sluice received to the last one its
//! target confirmed (group join and start-up excluded; reported apart). The table
//! goes to stdout, progress to stderr, the report as JSON to `--out`.

#[path = "pipelines/child.rs"]
mod child;
#[path = "pipelines/flows.rs"]
mod flows;
#[path = "pipelines/kafka.rs"]
mod kafka;
#[path = "../procfs.rs"]
mod procfs;
#[path = "pipelines/rabbitmq.rs"]
mod rabbitmq;
#[path = "pipelines/report.rs"]
mod report;
#[path = "pipelines/storage.rs"]
mod storage;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use crate::report::{Report, Row};

/// Every scenario, in run order, with the scenario its rate is compared with.
const SCENARIOS: &[(&str, Option<&str>)] = &[
    ("plain-producer", None),
    ("plain-consumer", None),
    ("consume-match-discard", Some("plain-consumer")),
    ("burst-lag", Some("plain-producer")),
    ("produce-target", Some("plain-producer")),
    ("plain-copy", None),
    ("kafka-to-postgres", Some("plain-copy")),
    ("kafka-to-s3", Some("consume-match-discard")),
    ("kafka-to-elasticsearch", Some("consume-match-discard")),
    ("drain-memory", Some("plain-copy")),
    ("rabbitmq-plain-publisher", None),
    ("rabbitmq-plain-consumer", None),
    (
        "rabbitmq-consume-match-discard",
        Some("rabbitmq-plain-consumer"),
    ),
    ("rabbitmq-target", Some("rabbitmq-plain-publisher")),
];

/// `--only` this runs every RabbitMQ scenario (and no Kafka one).
const RABBITMQ: &str = "rabbitmq";

/// Records of `kafka-to-elasticsearch` at most.
const ES_MAX: u64 = 20_000;

/// Throughput of sluice pipelines (Kafka to discard, Kafka, PostgreSQL, S3,
/// Elasticsearch) beside plain clients, plus consumer lag and memory while a
/// backlog drains. Needs the test services (SLUICE_TEST_KAFKA, SLUICE_TEST_POSTGRES,
/// SLUICE_TEST_S3 and SLUICE_TEST_S3_ROOT, SLUICE_TEST_ELASTICSEARCH) and the
/// release sluice binary (`cargo build --release -p sluice`).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Records of the main topic, read by every Kafka scenario
    /// [default: 1000000; 50000 with --quick]. `kafka-to-elasticsearch` uses at
    /// most 20000.
    #[arg(long)]
    records: Option<u64>,
    /// Small counts for a smoke test.
    #[arg(long)]
    quick: bool,
    /// Run only this scenario (and the baseline its ratio needs; `plain-producer`
    /// runs for every Kafka scenario, since it fills the topic they read), or
    /// `rabbitmq` for all RabbitMQ scenarios.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(SCENARIOS.iter().map(|s| s.0).chain([RABBITMQ])))]
    only: Option<String>,
    /// Where to write the JSON report [default: target/bench/pipelines.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The sluice binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tokio::select! {
        result = run(cli) => match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("pipelines: some scenarios failed (see the notes)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("pipelines: {e:#}");
                ExitCode::from(2)
            }
        },
        // Dropping `run` kills the sluice child (kill_on_drop).
        _ = tokio::signal::ctrl_c() => {
            eprintln!("pipelines: interrupted");
            ExitCode::from(130)
        }
    }
}

fn baseline_of(name: &str) -> Option<&'static str> {
    SCENARIOS.iter().find(|s| s.0 == name).and_then(|s| s.1)
}

/// Runs one scenario, logs its outcome to stderr and adds its row.
async fn step(
    rows: &mut Vec<Row>,
    name: &str,
    scenario: impl Future<Output = anyhow::Result<Row>>,
) {
    eprintln!("pipelines: {name} ...");
    let began = Instant::now();
    let mut row = scenario.await.unwrap_or_else(|e| Row::failed(name, &e));
    row.baseline = baseline_of(name).map(str::to_owned);
    if row.failed {
        eprintln!("pipelines: {name} {}", row.note);
    } else {
        eprintln!(
            "pipelines: {name}: {} records in {:.2} s = {:.0}/s ({:.0} s in all)",
            row.records,
            row.secs,
            row.per_s,
            began.elapsed().as_secs_f64()
        );
    }
    rows.push(row);
}

/// Runs the chosen scenarios; true if none failed.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("cores (nproc): {cores}");
    let n = cli
        .records
        .unwrap_or(if cli.quick { 50_000 } else { 1_000_000 });
    anyhow::ensure!(n > 0, "--records must be at least 1");
    let bin = procfs::locate(cli.sluice.clone())?;
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench/pipelines.json"));
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let begun = Instant::now();
    let only = cli.only.as_deref();
    let wanted = |name: &str| {
        only.is_none_or(|o| {
            o == name
                || baseline_of(o) == Some(name)
                || (o == RABBITMQ && name.starts_with("rabbitmq-"))
        })
    };
    let mut rows = Vec::new();

    let kafka_wanted = SCENARIOS
        .iter()
        .any(|s| !s.0.starts_with("rabbitmq-") && s.0 != "plain-producer" && wanted(s.0))
        || only == Some("plain-producer");
    if kafka_wanted {
        run_kafka(&bin, n, &wanted, &mut rows).await?;
    }
    run_rabbitmq(&bin, n, &wanted, &mut rows).await;

    report::add_ratios(&mut rows);
    let all_ok = rows.iter().all(|r| !r.failed);
    let report = Report {
        started_at,
        cores,
        records: n,
        quick: cli.quick,
        only: cli.only.clone(),
        total_secs: begun.elapsed().as_secs_f64(),
        scenarios: rows,
    };
    print!("{}", report::table(&report));
    report::write_json(&report, &out).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("pipelines: report written to {}", out.display());
    Ok(all_ok)
}

/// The RabbitMQ scenarios that are wanted.
async fn run_rabbitmq(
    bin: &std::path::Path,
    n: u64,
    wanted: &dyn Fn(&str) -> bool,
    rows: &mut Vec<Row>,
) {
    if wanted("rabbitmq-plain-publisher") || wanted("rabbitmq-plain-consumer") {
        let mut filled = None;
        step(rows, "rabbitmq-plain-publisher", async {
            let (row, queue) = rabbitmq::plain_publisher(n).await?;
            filled = Some(queue);
            Ok(row)
        })
        .await;
        if let (Some(queue), true) = (filled, wanted("rabbitmq-plain-consumer")) {
            step(
                rows,
                "rabbitmq-plain-consumer",
                rabbitmq::plain_consumer(&queue, n),
            )
            .await;
        }
    }
    if wanted("rabbitmq-consume-match-discard") {
        let scenario = rabbitmq::consume_match_discard(bin, n);
        step(rows, "rabbitmq-consume-match-discard", scenario).await;
    }
    if wanted("rabbitmq-target") {
        step(rows, "rabbitmq-target", rabbitmq::target(bin, n)).await;
    }
}

/// The Kafka (and storage) scenarios that are wanted, after filling the main topic.
async fn run_kafka(
    bin: &std::path::Path,
    n: u64,
    wanted: &dyn Fn(&str) -> bool,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let topic = kafka::create_topic("bench-main").await?;
    step(rows, "plain-producer", async {
        let producer = kafka::producer()?;
        // One record to another topic first: the connection and the producer id
        // are set up outside the timing (as for a long-running producer).
        let warm_up = kafka::create_topic("bench-warm-up").await?;
        kafka::produce(&producer, &warm_up, 0..1, &AtomicU64::new(0)).await?;
        let took = kafka::produce(&producer, &topic, 0..n, &AtomicU64::new(0)).await?;
        Ok(Row::new("plain-producer", n, took.as_secs_f64())
            .note("FutureProducer acks=all, idempotent, linger 5 ms; fills the main topic"))
    })
    .await;
    if rows.iter().any(|r| r.failed) {
        anyhow::bail!("cannot fill the main topic: {}", rows[0].note);
    }
    if wanted("plain-consumer") {
        step(rows, "plain-consumer", flows::plain_consumer(&topic, n)).await;
    }
    if wanted("consume-match-discard") {
        let scenario = flows::consume_match_discard(bin, &topic, n);
        step(rows, "consume-match-discard", scenario).await;
    }
    if wanted("burst-lag") {
        step(rows, "burst-lag", flows::burst_lag(bin, n)).await;
    }
    if wanted("produce-target") {
        step(
            rows,
            "produce-target",
            flows::produce_target(bin, &topic, n),
        )
        .await;
    }
    if wanted("plain-copy") {
        step(rows, "plain-copy", storage::plain_copy(n)).await;
    }
    if wanted("kafka-to-postgres") {
        step(
            rows,
            "kafka-to-postgres",
            storage::kafka_to_postgres(bin, &topic, n),
        )
        .await;
    }
    if wanted("kafka-to-s3") {
        step(rows, "kafka-to-s3", storage::kafka_to_s3(bin, &topic, n)).await;
    }
    if wanted("kafka-to-elasticsearch") {
        let es_n = n.min(ES_MAX);
        step(rows, "kafka-to-elasticsearch", async {
            let es_topic = kafka::filled_topic("bench-es", es_n).await?;
            storage::kafka_to_elasticsearch(bin, &es_topic, es_n).await
        })
        .await;
    }
    if wanted("drain-memory") {
        step(rows, "drain-memory", storage::drain_memory(bin, &topic, n)).await;
    }
    if let Err(e) = kafka::delete_topics().await {
        eprintln!("pipelines: {e}");
    }
    Ok(())
}
