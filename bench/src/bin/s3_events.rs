//! sluice's `s3` source benchmarks, in one run on this machine:
//!
//! - `plain-list`: object_store lists the bucket of `--objects` objects (the
//!   baseline: what any poller must at least do; best of three, one kept client);
//! - `poll-first-pass`: a sluice `mode: poll` source (`start: all`, a rule to a
//!   `discard` target) makes its first pass: one event and one cursor mark per
//!   object, durable (with `--start now`: marks only, no events, which shows
//!   what the cursor alone costs in memory and on disk);
//! - `poll-no-change`: later passes over the same bucket, nothing changed (the
//!   fastest of three), with the size of sluice's data dir after them (a
//!   snapshot: sled compacts its log in the background, and just after a large
//!   first pass the files can be several times their compacted size);
//! - `notify-http`: bucket notifications of `--batch` records per body posted by
//!   `--connections` clients to `POST /sources/<name>/notifications`, records/s
//!   accepted (202, durable).
//!
//! The bucket is served by `--server`:
//!
//! - `memory` (the default): the bench's own S3 endpoint on loopback
//!   (`s3_events/memory.rs`), a bucket held in memory whose listing is paged from
//!   an ordered index as S3 and MinIO page theirs, so a page costs the same at
//!   1,000 objects or 1,000,000 and the passes show what the poller costs. It
//!   checks no signature; object_store (here and in sluice) gets a dummy key.
//! - `s3s`: the S3 test server (s3s-fs, `SLUICE_TEST_S3`, buckets are folders
//!   under `SLUICE_TEST_S3_ROOT`); the objects are written as files into its
//!   folder. Its listing walks and stats the whole folder tree for every page, so
//!   it grows faster than the bucket (a plain listing of 100,000 objects did not
//!   finish in 4 minutes), and it lists no ETags, so the first pass also makes
//!   one HEAD per object.
//!
//! Pass times are what the source reports (`GET /api/sources/<name>`,
//! `last_pass_ms`); RSS is sluice's VmHWM/VmRSS. The table goes to stdout, the
//! report as JSON to `--out`.

#[path = "pipelines/child.rs"]
mod child;
#[path = "s3_events/memory.rs"]
mod memory;
#[path = "../procfs.rs"]
mod procfs;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use serde_json::{json, Value};

use crate::child::{unique, Sluice};

/// Benchmarks of the `s3` source: polling a large bucket beside a plain listing
/// of it, and notifications over HTTP. Needs `target/release/sluice`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// What serves the polled bucket.
    #[arg(long, value_enum, default_value_t = ServerKind::Memory)]
    server: ServerKind,
    /// Objects in the polled bucket.
    #[arg(long, default_value_t = 100_000)]
    objects: u64,
    /// The poller's `start`: `all` publishes an event per object in the first
    /// pass, `now` only marks them (the cursor's own cost).
    #[arg(long, value_enum, default_value_t = Start::All)]
    start: Start,
    /// Records posted in `notify-http`.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Records per notification body.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent notification posters.
    #[arg(long, default_value_t = 8)]
    connections: u64,
    /// Where to write the JSON report [default: target/bench/s3-events.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The sluice binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice: Option<PathBuf>,
}

/// What serves the polled bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ServerKind {
    /// The bench's in-memory endpoint, listings paged from an ordered index.
    Memory,
    /// The s3s-fs test server (`SLUICE_TEST_S3`, `SLUICE_TEST_S3_ROOT`).
    S3s,
}

impl ServerKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Memory => {
                "the bench's in-memory S3 endpoint (listings paged from an ordered index)"
            }
            Self::S3s => "s3s-fs",
        }
    }
}

/// The poll source's `start` setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Start {
    All,
    Now,
}

impl Start {
    fn as_str(self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Now => "now",
        }
    }
}

/// One scenario's result.
#[derive(Debug, Serialize)]
struct Row {
    name: &'static str,
    /// Objects listed, or records accepted.
    items: u64,
    secs: f64,
    per_s: f64,
    /// `secs` over `plain-list`'s.
    vs_plain_list: Option<f64>,
    /// sluice's VmHWM at the end, MiB.
    peak_rss_mib: Option<f64>,
    /// sluice's VmRSS at the end, MiB.
    rss_mib: Option<f64>,
    /// sluice's CPU time (user + system) over its life so far, seconds.
    cpu_secs: Option<f64>,
    /// sluice's data dir on disk at the end (store and cursor), MiB.
    store_mib: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    started_at: String,
    cores: usize,
    server: &'static str,
    objects: u64,
    start: Start,
    rows: Vec<Row>,
}

fn row(name: &'static str, items: u64, secs: f64) -> Row {
    Row {
        name,
        items,
        secs,
        per_s: items as f64 / secs.max(1e-9),
        vs_plain_list: None,
        peak_rss_mib: None,
        rss_mib: None,
        cpu_secs: None,
        store_mib: None,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.server == ServerKind::Memory {
        // The in-memory endpoint checks no signature. A dummy key keeps
        // object_store, here and in the sluice children (which inherit the
        // environment), from asking instance metadata for credentials and from
        // sending real ones. Set before the runtime starts any thread.
        std::env::set_var("AWS_ACCESS_KEY_ID", "sluice-bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "sluice-bench");
        std::env::remove_var("AWS_SESSION_TOKEN");
    }
    let result = tokio::runtime::Runtime::new()
        .context("cannot start the tokio runtime")
        .and_then(|rt| rt.block_on(run(cli)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("s3-events: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The polled bucket and what serves it; dropping it stops the endpoint or
/// removes the bucket's folder.
struct Place {
    endpoint: String,
    bucket: String,
    served: Served,
}

enum Served {
    /// Kept for its drop, which stops the endpoint.
    Memory { _server: memory::Server },
    /// The bucket's folder under `SLUICE_TEST_S3_ROOT`.
    S3s(PathBuf),
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Served::S3s(dir) = &self.served {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Key and content of the `i`-th object: 1,000 small JSON objects per folder.
fn nth_object(i: u64) -> (String, String) {
    (
        format!("d{:04}/{i:07}.json", i / 1000),
        format!("{{\"n\": {i}}}"),
    )
}

/// A new bucket of `n` objects on `server`.
async fn fill_bucket(server: ServerKind, n: u64) -> anyhow::Result<Place> {
    let bucket = unique("poll").replace('_', "-");
    match server {
        ServerKind::Memory => {
            let store = Arc::new(memory::Bucket::new(&bucket));
            let at = chrono::Utc::now();
            for i in 0..n {
                let (key, body) = nth_object(i);
                store.insert(key, body.into(), at);
            }
            let server = memory::Server::start(store).await?;
            Ok(Place {
                endpoint: server.endpoint(),
                bucket,
                served: Served::Memory { _server: server },
            })
        }
        ServerKind::S3s => {
            let root = std::env::var("SLUICE_TEST_S3_ROOT").context(
                "SLUICE_TEST_S3_ROOT is not set: it must name the s3s-fs root directory",
            )?;
            let dir = Path::new(&root).join(&bucket);
            // Built first so that a failed fill removes what it wrote.
            let place = Place {
                endpoint: std::env::var("SLUICE_TEST_S3")
                    .unwrap_or_else(|_| "http://127.0.0.1:19000".into()),
                served: Served::S3s(dir.clone()),
                bucket,
            };
            for i in 0..n {
                let (key, body) = nth_object(i);
                let file = dir.join(key);
                if i % 1000 == 0 {
                    if let Some(folder) = file.parent() {
                        std::fs::create_dir_all(folder)?;
                    }
                }
                std::fs::write(file, body)?;
            }
            Ok(place)
        }
    }
}

/// A client for the bucket, as sluice builds one (credentials from the environment).
fn client(place: &Place) -> anyhow::Result<object_store::aws::AmazonS3> {
    Ok(object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(&place.endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(&place.bucket)
        .build()?)
}

/// List the whole bucket with `s3`: objects, seconds.
async fn plain_list(s3: &object_store::aws::AmazonS3) -> anyhow::Result<(u64, f64)> {
    let began = Instant::now();
    let mut listing = s3.list(None);
    let mut n = 0;
    while let Some(meta) = listing.next().await {
        meta.context("listing")?;
        n += 1;
    }
    Ok((n, began.elapsed().as_secs_f64()))
}

async fn status(sluice: &Sluice, name: &str) -> anyhow::Result<Value> {
    Ok(reqwest::get(sluice.url(&format!("/api/sources/{name}")))
        .await?
        .json()
        .await?)
}

/// Wait until the source has made `passes` passes; its status then.
async fn passes(sluice: &Sluice, name: &str, passes: u64) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let st = status(sluice, name).await?;
        if st["passes"].as_u64() >= Some(passes) {
            return Ok(st);
        }
        if Instant::now() > deadline {
            bail!("the poller did not finish {passes} passes: {st}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bin = procfs::locate(cli.sluice.clone())?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    eprintln!(
        "s3-events: writing {} objects to {} ...",
        cli.objects,
        cli.server.describe()
    );
    let place = fill_bucket(cli.server, cli.objects).await?;
    let mut rows = Vec::new();

    // One client, kept (as a poller keeps its own); the first listing warms the
    // connection (and s3s-fs's page cache), the best of the next three counts.
    let s3 = client(&place)?;
    plain_list(&s3).await?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let (n, secs) = plain_list(&s3).await?;
        anyhow::ensure!(
            n == cli.objects,
            "listed {n} objects, expected {}",
            cli.objects
        );
        best = best.min(secs);
    }
    rows.push(row("plain-list", cli.objects, best));

    eprintln!("s3-events: polling ...");
    let body = format!(
        "  max_backlog: 100000000\nsources:\n  - name: poll\n    type: s3\n    mode: poll\n    endpoint: {}\n    path_style: true\n    bucket: {}\n    interval: 1s\n    start: {}\n    deletes: true\ntargets:\n  - name: sink\n    type: discard\nrules:\n  - name: all\n    targets: [sink]\n",
        place.endpoint,
        place.bucket,
        cli.start.as_str()
    );
    // Every pass reports the events of the source so far: one per object
    // from the first pass on, or none with `start: now`.
    let events = if cli.start == Start::All {
        cli.objects
    } else {
        0
    };
    let mut sluice = Sluice::start(&bin, "poll", &body).await?;
    let st = passes(&sluice, "poll", 1).await?;
    anyhow::ensure!(st["events"].as_u64() == Some(events), "first pass: {st}");
    let first = st["last_pass_ms"].as_f64().unwrap_or_default() / 1000.0;
    let mut r = row("poll-first-pass", cli.objects, first);
    r.vs_plain_list = Some(first / best);
    r.peak_rss_mib = Some(mib(sluice.peak_rss_kib()?));
    r.cpu_secs = Some(sluice.cpu_secs()?);
    rows.push(r);
    let mut quiet = f64::MAX;
    for n in 2..=4 {
        let st = passes(&sluice, "poll", n).await?;
        anyhow::ensure!(
            st["events"].as_u64() == Some(events),
            "pass {n} changed: {st}"
        );
        quiet = quiet.min(st["last_pass_ms"].as_f64().unwrap_or_default() / 1000.0);
    }
    let mut r = row("poll-no-change", cli.objects, quiet);
    r.vs_plain_list = Some(quiet / best);
    r.peak_rss_mib = Some(mib(sluice.peak_rss_kib()?));
    r.rss_mib = Some(mib(sluice.progress().await?.rss_kib));
    r.store_mib = Some(sluice.data_bytes() as f64 / (1024.0 * 1024.0));
    rows.push(r);
    sluice.stop().await;
    drop(s3);
    drop(place);

    eprintln!("s3-events: notifications ...");
    rows.push(notify(&bin, &cli).await?);

    println!(
        "cores (nproc): {cores}; bucket of {} objects on {}; poll start: {}",
        cli.objects,
        cli.server.describe(),
        cli.start.as_str()
    );
    println!(
        "{:<16} {:>9} {:>9} {:>11} {:>8} {:>9} {:>8} {:>8} {:>10}",
        "scenario", "items", "secs", "per_s", "x_list", "peak_MiB", "rss_MiB", "cpu_s", "store_MiB"
    );
    let opt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
    for r in &rows {
        println!(
            "{:<16} {:>9} {:>9.3} {:>11.0} {:>8} {:>9} {:>8} {:>8} {:>10}",
            r.name,
            r.items,
            r.secs,
            r.per_s,
            opt(r.vs_plain_list, 2),
            opt(r.peak_rss_mib, 1),
            opt(r.rss_mib, 1),
            opt(r.cpu_secs, 2),
            opt(r.store_mib, 1)
        );
    }
    let out = cli
        .out
        .unwrap_or_else(|| PathBuf::from("target/bench/s3-events.json"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let report = Report {
        started_at,
        cores,
        server: cli.server.describe(),
        objects: cli.objects,
        start: cli.start,
        rows,
    };
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("s3-events: report written to {}", out.display());
    Ok(())
}

/// `--records` S3 records posted as notifications of `--batch` records.
async fn notify(bin: &Path, cli: &Cli) -> anyhow::Result<Row> {
    let body = "  max_backlog: 100000000\nsources:\n  - name: hook\n    type: s3\n    mode: notify\ntargets:\n  - name: sink\n    type: discard\nrules:\n  - name: all\n    targets: [sink]\n";
    let mut sluice = Sluice::start(bin, "notify", body).await?;
    let url = sluice.url("/sources/hook/notifications");
    let bodies = cli.records / cli.batch;
    let http = reqwest::Client::new();
    let began = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(0..bodies)
        .map(|b| {
            let (http, url) = (http.clone(), url.clone());
            let records: Vec<Value> = (0..cli.batch)
                .map(|i| {
                    let key = format!("uploads/{b:06}/{i:04}.jpg");
                    json!({
                        "eventVersion": "2.1", "eventSource": "minio:s3", "awsRegion": "",
                        "eventTime": "2026-03-01T12:00:00.000Z", "eventName": "s3:ObjectCreated:Put",
                        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "uploads"},
                               "object": {"key": key, "size": 1024, "eTag": format!("{b:x}{i:x}"), "sequencer": "17A"}}
                    })
                })
                .collect();
            let body = json!({"Records": records}).to_string();
            async move {
                let r = http.post(&url).header("content-type", "application/json").body(body).send().await?;
                anyhow::ensure!(r.status() == 202, "answer {}", r.status());
                Ok(())
            }
        })
        .buffer_unordered(cli.connections as usize)
        .collect()
        .await;
    let secs = began.elapsed().as_secs_f64();
    for r in results {
        r?;
    }
    // Everything accepted was received, and reaches the discard target. The
    // counters also count sluice's own `sluice.started` (bus `system`, no rule
    // there, so never delivered): at least, not exactly.
    let deadline = Instant::now() + Duration::from_secs(300);
    let expected = bodies * cli.batch;
    loop {
        let p = sluice.progress().await?;
        anyhow::ensure!(
            p.received >= expected,
            "received {} of {expected}",
            p.received
        );
        if p.delivered >= expected && p.depth == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "not drained: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut r = row("notify-http", bodies * cli.batch, secs);
    r.peak_rss_mib = Some(mib(sluice.peak_rss_kib()?));
    r.cpu_secs = Some(sluice.cpu_secs()?);
    sluice.stop().await;
    Ok(r)
}
