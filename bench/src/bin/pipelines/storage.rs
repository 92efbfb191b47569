//! The scenarios whose far side is a store: PostgreSQL (`plain-copy`,
//! `kafka-to-postgres`, `drain-memory`), S3 (`kafka-to-s3`) and
//! Elasticsearch/OpenSearch (`kafka-to-elasticsearch`). Each writes into a fresh
//! schema, bucket or index, checks there what sluice confirmed, and removes it.

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use object_store::ObjectStore;
use tokio_postgres::{Client, NoTls};

use crate::child::{unique, Sluice};
use crate::flows::{pipeline, Watch};
use crate::kafka::{self, Fields};
use crate::report::{mib, Row};

/// Events in one write of a storage target.
const BATCH: usize = 5000;
/// `drain-memory` samples sluice this often while the backlog drains.
const DRAIN_SAMPLE: Duration = Duration::from_millis(100);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// A name PostgreSQL, S3 and Elasticsearch all take: lowercase, digits and `_`.
fn store_name(tag: &str) -> String {
    unique(tag).replace('-', "_")
}

/// A fresh schema of `SLUICE_TEST_POSTGRES`, dropped (with its tables) on `drop_all`.
struct Schema {
    client: Client,
    url: String,
    name: String,
}

/// The benchmark table's columns (the target's `columns` plus its key column).
const COLUMNS: &str = "event_key, n, customer, total, paid, at";

impl Schema {
    async fn create() -> anyhow::Result<Self> {
        let url = env_or(
            "SLUICE_TEST_POSTGRES",
            "postgres://postgres@127.0.0.1:5432/test",
        );
        let (client, conn) = tokio_postgres::connect(&url, NoTls)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        tokio::spawn(conn);
        let name = store_name("bench");
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .with_context(|| format!("cannot create schema {name}"))?;
        Ok(Self { client, url, name })
    }

    /// Creates `<schema>.<table>` with the benchmark's columns; returns its name.
    async fn create_table(&self, table: &str) -> anyhow::Result<String> {
        let qualified = format!("{}.{table}", self.name);
        self.client
            .batch_execute(&format!(
                "CREATE TABLE {qualified} (event_key uuid PRIMARY KEY, n bigint NOT NULL, \
                 customer text NOT NULL, total numeric NOT NULL, paid boolean NOT NULL, \
                 at timestamptz NOT NULL)"
            ))
            .await
            .with_context(|| format!("cannot create table {qualified}"))?;
        Ok(qualified)
    }

    async fn count(&self, qualified: &str) -> anyhow::Result<u64> {
        let row = self
            .client
            .query_one(&format!("SELECT count(*) FROM {qualified}"), &[])
            .await
            .with_context(|| format!("cannot count the rows of {qualified}"))?;
        Ok(row.get::<_, i64>(0).max(0) as u64)
    }

    /// The postgres target `t` writing the benchmark columns of `qualified`.
    fn target_yaml(&self, qualified: &str) -> String {
        let column = |name: &str, ty: &str| {
            format!("      {name}: {{path: \"$.data.{name}\", type: {ty}}}\n")
        };
        format!(
            "  - name: t\n    type: postgres\n    url: \"{}\"\n    table: {qualified}\n    \
             key_column: event_key\n    columns:\n{}{}{}{}{}    batch: {{max_events: {BATCH}, max_wait: 200ms}}\n",
            self.url,
            column("n", "bigint"),
            column("customer", "text"),
            column("total", "numeric"),
            column("paid", "boolean"),
            column("at", "timestamptz"),
        )
    }

    async fn drop_all(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
    }
}

/// Fails unless `qualified` holds exactly `n` rows.
async fn expect_rows(schema: &Schema, qualified: &str, n: u64) -> anyhow::Result<()> {
    let rows = schema.count(qualified).await?;
    if rows != n {
        bail!("{qualified} holds {rows} rows, expected {n}");
    }
    Ok(())
}

/// `plain-copy`: the baseline of writing the same rows from this process with
/// one text-format `COPY ... FROM STDIN`.
pub async fn plain_copy(n: u64) -> anyhow::Result<Row> {
    let schema = Schema::create().await?;
    let table = schema.create_table("copied").await?;
    let started = Instant::now();
    let sink = schema
        .client
        .copy_in::<_, Bytes>(&format!("COPY {table} ({COLUMNS}) FROM STDIN"))
        .await
        .context("cannot start COPY")?;
    let mut sink = std::pin::pin!(sink);
    let mut buf = String::with_capacity(1 << 18);
    for i in 0..n {
        let f = Fields::of(i);
        let key = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("bench-{i}").as_bytes());
        use std::fmt::Write as _;
        let _ = writeln!(
            buf,
            "{key}\t{}\t{}\t{}\t{}\t{}",
            f.n, f.customer, f.total, f.paid, f.at
        );
        if buf.len() >= 1 << 18 {
            let chunk = std::mem::replace(&mut buf, String::with_capacity(1 << 18));
            sink.send(Bytes::from(chunk)).await.context("COPY failed")?;
        }
    }
    sink.send(Bytes::from(buf)).await.context("COPY failed")?;
    let copied = sink.as_mut().finish().await.context("COPY failed")?;
    let secs = started.elapsed().as_secs_f64();
    let checked = expect_rows(&schema, &table, n).await;
    schema.drop_all().await;
    checked?;
    Ok(Row::new("plain-copy", copied, secs)
        .note("tokio-postgres COPY FROM STDIN (text), one statement"))
}

/// `kafka-to-postgres`: the pre-produced topic into a postgres target (mode
/// columns, five typed columns from data) writing a fresh table.
pub async fn kafka_to_postgres(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let schema = Schema::create().await?;
    let result = async {
        let table = schema.create_table("events").await?;
        let run = pipeline(bin, "postgres", topic, n, &schema.target_yaml(&table)).await?;
        let row = run.row("kafka-to-postgres", n)?;
        run.sluice.stop().await;
        expect_rows(&schema, &table, n).await?;
        Ok(row.note(format!("{n} rows; batches of {BATCH}")))
    }
    .await;
    schema.drop_all().await;
    result
}

/// `drain-memory`: the postgres target's table does not exist yet, so sluice
/// queues the whole topic; then the table is created and the backlog drains.
pub async fn drain_memory(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let schema = Schema::create().await?;
    let result = async {
        let qualified = format!("{}.events", schema.name);
        let body = format!(
            "{}targets:\n{}{}",
            kafka::source_yaml(topic, n.saturating_mul(2)),
            schema.target_yaml(&qualified),
            kafka::rule_yaml("t")
        );
        let mut sluice = Sluice::start(bin, "drain", &body).await?;
        let mut watch = Watch::new();
        let full = watch
            .until(
                &mut sluice,
                DRAIN_SAMPLE,
                &format!("{n} queued events"),
                |p| p.depth >= n,
            )
            .await?;
        let first = watch.first(|p| p.received > 0).unwrap_or(full.at);
        let load_per_s = n as f64 / full.at.saturating_sub(first).as_secs_f64().max(1e-3);

        schema.create_table("events").await?;
        let mut drain = Watch::new();
        let done = drain
            .until(&mut sluice, DRAIN_SAMPLE, &format!("{n} deliveries"), |p| {
                p.delivered >= n
            })
            .await?;
        let started = drain.first(|p| p.delivered > 0).unwrap_or(done.at);
        let mut row = Row::new(
            "drain-memory",
            n,
            done.at.saturating_sub(started).as_secs_f64(),
        );
        row.sluice_usage(&sluice)?;
        sluice.stop().await;
        expect_rows(&schema, &qualified, n).await?;
        row.queue_load_per_s = Some(load_per_s);
        row.rss_full_queue_mib = Some(mib(full.p.rss_kib));
        let idle_kib = watch.samples.first().map_or(0, |s| s.p.rss_kib);
        let per_event = full.p.rss_kib.saturating_sub(idle_kib) as f64 * 1024.0 / n as f64;
        Ok(row.note(format!(
            "queued at {load_per_s:.0}/s; RSS {:.0} MiB at start, {:.0} MiB when full \
             ({per_event:.0} B per queued event); drain RSS max {:.0} MiB (sampled every \
             100 ms); first delivery {:.1} s after the table appeared",
            mib(idle_kib),
            mib(full.p.rss_kib),
            mib(drain.max_rss_kib()),
            started.as_secs_f64()
        )))
    }
    .await;
    schema.drop_all().await;
    result
}

/// `kafka-to-s3`: the pre-produced topic into an S3 target (gzip JSON lines) in a
/// fresh bucket under `SLUICE_TEST_S3_ROOT`; the objects' lines are counted.
pub async fn kafka_to_s3(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let root = std::env::var("SLUICE_TEST_S3_ROOT")
        .context("SLUICE_TEST_S3_ROOT is not set: it must name the s3s-fs root directory")?;
    let endpoint = env_or("SLUICE_TEST_S3", "http://127.0.0.1:19000");
    let bucket = store_name("bench").replace('_', "-");
    let dir = Path::new(&root).join(&bucket);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create bucket dir {}", dir.display()))?;
    let result = async {
        let target = format!(
            "  - name: t\n    type: s3\n    endpoint: \"{endpoint}\"\n    bucket: {bucket}\n    \
             path_style: true\n    batch: {{max_events: {BATCH}, max_wait: 500ms}}\n"
        );
        let run = pipeline(bin, "s3", topic, n, &target).await?;
        let row = run.row("kafka-to-s3", n)?;
        run.sluice.stop().await;
        let (objects, lines) = count_s3_lines(&endpoint, &bucket).await?;
        if lines != n {
            bail!("bucket {bucket} holds {lines} lines in {objects} objects, expected {n}");
        }
        Ok(row.note(format!("{objects} gzip JSON-lines objects")))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Objects in `bucket` and the JSON lines in them (all gzip).
async fn count_s3_lines(endpoint: &str, bucket: &str) -> anyhow::Result<(u64, u64)> {
    let store = object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .context("cannot build the S3 client")?;
    let mut list = store.list(None);
    let (mut objects, mut lines) = (0, 0);
    while let Some(meta) = list.next().await {
        let meta = meta.context("cannot list the bucket")?;
        let body = store
            .get(&meta.location)
            .await
            .with_context(|| format!("cannot get {}", meta.location))?
            .bytes()
            .await
            .with_context(|| format!("cannot read {}", meta.location))?;
        let mut text = Vec::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .with_context(|| format!("{} is not gzip", meta.location))?;
        objects += 1;
        lines += text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
    }
    Ok((objects, lines))
}

/// `kafka-to-elasticsearch`: a topic of `n` records into an elasticsearch target
/// writing a fresh index; `_count` is checked after a refresh.
pub async fn kafka_to_elasticsearch(bin: &Path, topic: &str, n: u64) -> anyhow::Result<Row> {
    let url = env_or("SLUICE_TEST_ELASTICSEARCH", "http://127.0.0.1:19200");
    let index = store_name("bench").replace('_', "-");
    let http = reqwest::Client::new();
    let result = async {
        let target = format!(
            "  - name: t\n    type: elasticsearch\n    url: \"{url}\"\n    index: {index}\n    \
             batch: {{max_events: 2000, max_wait: 200ms}}\n"
        );
        let run = pipeline(bin, "es", topic, n, &target).await?;
        let row = run.row("kafka-to-elasticsearch", n)?;
        run.sluice.stop().await;
        let _ = http.post(format!("{url}/{index}/_refresh")).send().await;
        let count: serde_json::Value = http
            .get(format!("{url}/{index}/_count"))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("GET {url}/{index}/_count failed"))?
            .json()
            .await
            .context("the _count answer is not JSON")?;
        let docs = count["count"].as_u64().unwrap_or(0);
        if docs != n {
            bail!("index {index} holds {docs} documents, expected {n}");
        }
        Ok(row.note(format!("{n} documents; bulks of 2000")))
    }
    .await;
    let _ = http.delete(format!("{url}/{index}")).send().await;
    result
}
