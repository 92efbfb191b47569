//! sluice-bench: end-to-end throughput, latency and footprint of sluice, beside a
//! bare HTTP echo server as the ceiling, in one run on this machine.
//!
//! Each sluice scenario starts a fresh receiver (sluice's HTTP target, in this
//! process), a fresh sluice child with its own temp data dir, and a load generator
//! (in this process) posting to sluice on 127.0.0.1. Scenarios, in order:
//!
//! 1. `single`: binary-mode single-event POSTs, closed loop.
//! 2. `batch`: batch-mode POSTs of `--batch-size` events, closed loop.
//! 3. `batch-to-batching-target`: the `batch` load, delivered by an HTTP target
//!    with `batch` (CloudEvents batches of up to 500 events per request).
//! 4. `latency-at-half-rate`: single-event POSTs, open loop at half the end-to-end
//!    rate `single` measured, for `--half-rate-secs`.
//! 5. `echo-ceiling`: the `single` load against an in-process server answering 202
//!    at once: the most requests/s this machine and this client can do at all.
//!
//! The table goes to stdout, progress to stderr, and the report as JSON to `--out`.

mod load;
mod procfs;
mod receiver;
mod report;
mod sluice;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use crate::load::{Plan, Shape};
use crate::receiver::{Role, Tally};
use crate::report::{Report, Scenario, Settings};
use crate::sluice::Sluice;

/// While draining, give up early if no new event was delivered for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// End-to-end benchmark of sluice: ingest -> durable store -> HTTP delivery,
/// beside a bare HTTP echo server. Needs `target/release/sluice` (build it with
/// `cargo build --release -p sluice`).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Events in the single-event scenarios (`single`, `echo-ceiling`)
    /// [default: 80000; 5000 with --quick]. The default keeps a full run under
    /// about 2 minutes on 2 cores (the batch scenario dominates: its backlog drains
    /// at the delivery rate).
    #[arg(long)]
    events: Option<u64>,
    /// Events in the `batch` scenario [default: 10 x --events].
    #[arg(long)]
    batch_events: Option<u64>,
    /// Events per batch request.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Connections for the single-event scenarios.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Connections for the `batch` scenario.
    #[arg(long, default_value_t = 8)]
    batch_connections: usize,
    /// How long `latency-at-half-rate` sends [default: 5; 2 with --quick].
    #[arg(long)]
    half_rate_secs: Option<f64>,
    /// Stop sending in any scenario after this many seconds, events left or not
    /// [default: 60; 5 with --quick].
    #[arg(long)]
    max_send_secs: Option<f64>,
    /// After sending stops, wait at most this long for the remaining deliveries
    /// before marking the scenario incomplete; also given up after 10 s without a
    /// new delivery [default: 90; 15 with --quick].
    #[arg(long)]
    drain_timeout_secs: Option<f64>,
    /// Small counts for a smoke test (about 15 s).
    #[arg(long)]
    quick: bool,
    /// Where to write the JSON report [default: target/bench/sluice-bench.json].
    #[arg(long)]
    out: Option<PathBuf>,
    /// The sluice binary [default: `sluice` next to this executable].
    #[arg(long)]
    sluice: Option<PathBuf>,
}

impl Cli {
    fn settings(&self) -> anyhow::Result<Settings> {
        // (events, half-rate secs, max send secs, drain timeout secs)
        let defaults = if self.quick {
            (5_000, 2.0, 5.0, 15.0)
        } else {
            (80_000, 5.0, 60.0, 90.0)
        };
        let events = self.events.unwrap_or(defaults.0);
        let settings = Settings {
            quick: self.quick,
            events,
            batch_events: self.batch_events.unwrap_or(events.saturating_mul(10)),
            batch_size: self.batch_size,
            connections: self.connections,
            batch_connections: self.batch_connections,
            half_rate_secs: self.half_rate_secs.unwrap_or(defaults.1),
            max_send_secs: self.max_send_secs.unwrap_or(defaults.2),
            drain_timeout_secs: self.drain_timeout_secs.unwrap_or(defaults.3),
        };
        anyhow::ensure!(
            settings.events > 0 && settings.batch_events > 0,
            "event counts must be at least 1"
        );
        anyhow::ensure!(
            settings.connections > 0 && settings.batch_connections > 0 && settings.batch_size > 0,
            "connections and batch size must be at least 1"
        );
        for (name, secs) in [
            ("--half-rate-secs", settings.half_rate_secs),
            ("--max-send-secs", settings.max_send_secs),
            ("--drain-timeout-secs", settings.drain_timeout_secs),
        ] {
            anyhow::ensure!(
                secs.is_finite() && secs > 0.0 && secs <= 3600.0,
                "{name} must be in (0, 3600]"
            );
        }
        Ok(settings)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tokio::select! {
        result = run(cli) => match result {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!("sluice-bench: some scenarios are incomplete or failed (see the notes)");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("sluice-bench: {e:#}");
                ExitCode::from(2)
            }
        },
        // Dropping `run` kills the sluice child (kill_on_drop).
        _ = tokio::signal::ctrl_c() => {
            eprintln!("sluice-bench: interrupted");
            ExitCode::from(130)
        }
    }
}

/// Runs every scenario; true if all completed.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    let settings = cli.settings()?;
    let bin = procfs::locate(cli.sluice.clone())?;
    let out = cli.out.clone().unwrap_or_else(default_out);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let begun = Instant::now();
    load::mono_ns(); // Anchor the monotonic clock before any stamp.

    let max_send = Duration::from_secs_f64(settings.max_send_secs);
    let job = |name: &'static str, connections, shape, events, rate| Job {
        name,
        connections,
        shape,
        events,
        rate,
        max_send,
        batching_target: false,
    };

    let single = job(
        "single",
        settings.connections,
        Shape::Single,
        settings.events,
        None,
    )
    .with_sluice(&bin, &settings)
    .await;
    let batch_shape = Shape::Batch {
        size: settings.batch_size,
    };
    let batch = job(
        "batch",
        settings.batch_connections,
        batch_shape,
        settings.batch_events,
        None,
    )
    .with_sluice(&bin, &settings)
    .await;
    let mut batching = job(
        "batch-to-batching-target",
        settings.batch_connections,
        batch_shape,
        settings.batch_events,
        None,
    );
    batching.batching_target = true;
    let batching = batching.with_sluice(&bin, &settings).await;

    let half_name = "latency-at-half-rate";
    let half = if single.delivered_events.unwrap_or(0) > 0 && single.end_to_end_events_per_s > 0.0 {
        let rate = single.end_to_end_events_per_s / 2.0;
        let events = (rate * settings.half_rate_secs).ceil().max(1.0) as u64;
        // The schedule spans half_rate_secs; the cap leaves room for falling behind.
        let mut half_job = job(
            half_name,
            settings.connections,
            Shape::Single,
            events,
            Some(rate),
        );
        half_job.max_send = Duration::from_secs_f64(settings.half_rate_secs * 2.0 + 5.0);
        half_job.with_sluice(&bin, &settings).await
    } else {
        Scenario::failed(
            half_name,
            &anyhow::anyhow!("`single` measured no end-to-end rate to halve"),
        )
    };

    let echo = job(
        "echo-ceiling",
        settings.connections,
        Shape::Single,
        settings.events,
        None,
    )
    .against_echo()
    .await
    .unwrap_or_else(|e| Scenario::failed("echo-ceiling", &e));

    let single_vs_echo = (single.end_to_end_events_per_s > 0.0
        && echo.end_to_end_events_per_s > 0.0)
        .then(|| single.end_to_end_events_per_s / echo.end_to_end_events_per_s);
    let report = Report {
        started_at,
        cores,
        settings,
        scenarios: vec![single, batch, batching, half, echo],
        single_vs_echo,
    };
    print!("{}", report::table(&report));
    report::write_json(&report, &out)?;
    println!(
        "JSON report: {} (run took {:.1}s)",
        out.display(),
        begun.elapsed().as_secs_f64()
    );
    Ok(report.scenarios.iter().all(|s| s.complete))
}

/// `target/bench/sluice-bench.json` of the target dir this executable was built in.
fn default_out() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("bench")))
        .unwrap_or_else(|| PathBuf::from("target/bench"))
        .join("sluice-bench.json")
}

/// One scenario's load.
struct Job {
    name: &'static str,
    connections: usize,
    shape: Shape,
    events: u64,
    rate: Option<f64>,
    max_send: Duration,
    /// Whether sluice's HTTP target sends CloudEvents batches.
    batching_target: bool,
}

impl Job {
    fn plan(&self, target: std::net::SocketAddr) -> Plan {
        Plan {
            target,
            connections: self.connections,
            events: self.events,
            shape: self.shape,
            rate: self.rate,
            max_send: self.max_send,
        }
    }

    fn events_per_request(&self) -> usize {
        match self.shape {
            Shape::Single => 1,
            Shape::Batch { size } => size,
        }
    }

    /// Runs the job through a fresh sluice; a scenario that cannot run is reported
    /// as failed rather than ending the whole bench.
    async fn with_sluice(self, bin: &Path, settings: &Settings) -> Scenario {
        let name = self.name;
        match self.try_with_sluice(bin, settings).await {
            Ok(scenario) => scenario,
            Err(e) => {
                eprintln!("[{name}] failed: {e:#}");
                Scenario::failed(name, &e)
            }
        }
    }

    async fn try_with_sluice(self, bin: &Path, settings: &Settings) -> anyhow::Result<Scenario> {
        let name = self.name;
        let tally = Arc::new(Tally::new(self.events));
        let receiver = receiver::start(Role::Sink(tally.clone())).await?;
        eprintln!("[{name}] starting sluice (target {})", receiver.addr);
        let mut sluice = Sluice::start(bin, receiver.addr, name, self.batching_target).await?;
        eprintln!(
            "[{name}] ready in {:.1} ms; sending {} events{}",
            sluice.ready_after.as_secs_f64() * 1e3,
            self.events,
            self.rate
                .map_or_else(String::new, |r| format!(" at {r:.0}/s"))
        );
        let mut load = load::run(self.plan(sluice.addr))
            .await
            .context("load generator")?;
        eprintln!(
            "[{name}] {} of {} events accepted; waiting for deliveries",
            load.accepted_events, self.events
        );
        let drain = Duration::from_secs_f64(settings.drain_timeout_secs);
        let unfinished =
            wait_for_deliveries(&tally, load.accepted_events, drain, &mut sluice).await;
        let usage = sluice.usage().ok();
        let alive = sluice.alive();

        let mut scenario = Scenario::from_load(
            name,
            self.connections,
            self.events_per_request(),
            self.events,
            &mut load,
        );
        scenario.target_rate_per_s = self.rate;
        scenario.max_send_lag_ms = self.rate.map(|_| load.max_lag_ns as f64 / 1e6);
        scenario.add_deliveries(load.start_ns, &mut tally.take(), unfinished);
        scenario.add_process(
            sluice.ready_after.as_secs_f64() * 1e3,
            sluice.idle_rss_kib,
            usage,
        );
        if !alive {
            scenario.complete = false;
            scenario.push_note(vec![format!(
                "sluice exited during the scenario; log tail:\n{}",
                sluice.log_tail()
            )]);
        }
        sluice.stop().await?;
        drop(receiver);
        eprintln!(
            "[{name}] done: {} delivered, {:.0} events/s end to end",
            scenario.delivered_events.unwrap_or(0),
            scenario.end_to_end_events_per_s
        );
        Ok(scenario)
    }

    /// Runs the job against the in-process echo server (no sluice).
    async fn against_echo(self) -> anyhow::Result<Scenario> {
        let server = receiver::start(Role::Echo).await?;
        eprintln!(
            "[{}] sending {} requests to the echo server",
            self.name, self.events
        );
        let mut load = load::run(self.plan(server.addr))
            .await
            .context("load generator")?;
        let scenario = Scenario::from_load(self.name, self.connections, 1, self.events, &mut load);
        eprintln!(
            "[{}] done: {:.0} requests/s",
            self.name, scenario.end_to_end_events_per_s
        );
        Ok(scenario)
    }
}

/// Waits until the receiver has `accepted` distinct events. Gives up when `timeout`
/// passes, when no new event arrived for [`STALL_TIMEOUT`], or when sluice exits,
/// and then says which.
async fn wait_for_deliveries(
    tally: &Tally,
    accepted: u64,
    timeout: Duration,
    sluice: &mut Sluice,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let (mut seen, mut progressed) = (tally.unique(), Instant::now());
    loop {
        let now_seen = tally.unique();
        if now_seen >= accepted {
            return None;
        }
        if now_seen > seen {
            (seen, progressed) = (now_seen, Instant::now());
        }
        if Instant::now() >= deadline {
            return Some(format!(
                "the drain timeout of {}s passed",
                timeout.as_secs_f64()
            ));
        }
        if progressed.elapsed() >= STALL_TIMEOUT {
            return Some(format!("no delivery for {}s", STALL_TIMEOUT.as_secs()));
        }
        if !sluice.alive() {
            return Some("sluice exited".to_owned());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
