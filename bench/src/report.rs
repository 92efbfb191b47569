//! The results: one record per scenario, printed as a table and written as JSON.
//! Every rate and latency here is defined in the doc comment of its field.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::load::Outcome;
use crate::receiver::Deliveries;
use crate::sluice::Usage;

/// The whole run.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// `std::thread::available_parallelism()`: cores the bench, sluice and the
    /// receiver all share.
    pub cores: usize,
    pub settings: Settings,
    pub scenarios: Vec<Scenario>,
    /// `single` end-to-end events/s divided by `echo-ceiling` requests/s: the
    /// share of a bare HTTP server's request rate that sluice reaches end to end.
    pub single_vs_echo: Option<f64>,
}

/// The options the run used.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub quick: bool,
    /// Events in `single` and `echo-ceiling`.
    pub events: u64,
    /// Events in `batch`.
    pub batch_events: u64,
    pub batch_size: usize,
    /// Connections in `single`, `latency-at-half-rate` and `echo-ceiling`.
    pub connections: usize,
    pub batch_connections: usize,
    /// How long `latency-at-half-rate` sends.
    pub half_rate_secs: f64,
    /// Sending in any scenario stops after this long, events left or not.
    pub max_send_secs: f64,
    /// After sending stops, how long the receiver may wait for the remaining deliveries.
    pub drain_timeout_secs: f64,
}

/// p50, p99 and max of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank percentiles of `samples_ns` (sorted in place); `None` if empty.
pub fn percentiles(samples_ns: &mut [u64]) -> Option<Percentiles> {
    if samples_ns.is_empty() {
        return None;
    }
    samples_ns.sort_unstable();
    let n = samples_ns.len();
    let rank =
        |p: f64| samples_ns[((p / 100.0 * n as f64).ceil() as usize).clamp(1, n) - 1] as f64 / 1e6;
    Some(Percentiles {
        count: n,
        p50_ms: rank(50.0),
        p99_ms: rank(99.0),
        max_ms: rank(100.0),
    })
}

/// The sluice process of one scenario.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Process {
    /// From just before the spawn to the first 200 from `GET /readyz` (polled every 1 ms).
    pub ready_ms: f64,
    /// VmRSS 100 ms after ready, before any load, in MiB.
    pub idle_rss_mib: f64,
    /// VmHWM (the most resident memory ever) when the scenario ended, in MiB;
    /// `None` if sluice was gone by then.
    pub peak_rss_mib: Option<f64>,
    /// User plus system CPU time sluice used over its whole life, in seconds;
    /// `None` if sluice was gone by then.
    pub cpu_secs: Option<f64>,
    /// `cpu_secs` per delivered event, in microseconds (ingest, store and delivery).
    pub cpu_us_per_event: Option<f64>,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Scenario {
    pub name: String,
    /// Client connections posting events.
    pub connections: usize,
    /// Events per request (1 for binary mode).
    pub events_per_request: usize,
    /// Open loop only: the events per second the load was scheduled at.
    pub target_rate_per_s: Option<f64>,
    /// Events the scenario meant to send.
    pub planned_events: u64,
    /// Events in requests actually sent (less than planned if sending was capped).
    pub sent_events: u64,
    /// Events acknowledged with 202.
    pub accepted_events: u64,
    /// Requests not answered 202 (other status, broken connection, timeout).
    pub failed_requests: u64,
    /// Distinct events the receiver got (not for echo-ceiling).
    pub delivered_events: Option<u64>,
    /// Deliveries of an already-delivered event.
    pub duplicate_deliveries: Option<u64>,
    /// Sending stopped at `max_send_secs` with events left to send.
    pub send_capped: bool,
    /// Every accepted event was delivered (before the drain timeout, without a 10 s
    /// stall, with sluice alive), and no request failed. (echo-ceiling: every planned event was accepted.)
    pub complete: bool,
    /// First send to last 202, in seconds.
    pub send_secs: f64,
    /// First send to the last first-time delivery, in seconds (echo: = send_secs).
    pub end_to_end_secs: f64,
    /// Delivered events / end_to_end_secs: the rate events get through sluice,
    /// ingest to target. (echo-ceiling: accepted requests / send_secs.)
    pub end_to_end_events_per_s: f64,
    /// Accepted events / send_secs: how fast sluice acknowledges durable events.
    pub ingest_events_per_s: f64,
    /// 202-answered requests / send_secs.
    pub ingest_requests_per_s: f64,
    /// Per request: from sending it to reading its 202 (includes the fsync).
    pub ingest_latency: Option<Percentiles>,
    /// Per distinct event: from its send stamp (closed loop: the send instant; open
    /// loop: its scheduled instant) to the receiver having the whole delivery.
    pub delivery_latency: Option<Percentiles>,
    /// Open loop only: the latest a request started after its scheduled instant, ms.
    pub max_send_lag_ms: Option<f64>,
    pub process: Option<Process>,
    /// The scenario could not run at all (see `note`).
    pub failed: bool,
    /// Why the scenario is incomplete or failed, if it is.
    pub note: Option<String>,
}

fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

impl Scenario {
    /// The load side of a scenario; delivery and process fields stay empty.
    pub fn from_load(
        name: &str,
        connections: usize,
        events_per_request: usize,
        planned: u64,
        load: &mut Outcome,
    ) -> Self {
        let send_secs = load.last_ack_ns.saturating_sub(load.start_ns) as f64 / 1e9;
        let mut notes = Vec::new();
        if load.capped {
            notes.push("sending capped by --max-send-secs".to_owned());
        }
        if let Some(e) = &load.first_error {
            notes.push(format!(
                "{} failed requests, first: {e}",
                load.failed_requests
            ));
        }
        Self {
            name: name.to_owned(),
            connections,
            events_per_request,
            planned_events: planned,
            sent_events: load.sent_events,
            accepted_events: load.accepted_events,
            failed_requests: load.failed_requests,
            send_capped: load.capped,
            complete: load.failed_requests == 0 && load.accepted_events == planned,
            send_secs,
            end_to_end_secs: send_secs,
            end_to_end_events_per_s: per_sec(load.ok_requests, send_secs),
            ingest_events_per_s: per_sec(load.accepted_events, send_secs),
            ingest_requests_per_s: per_sec(load.ok_requests, send_secs),
            ingest_latency: percentiles(&mut load.ingest_latency_ns),
            note: (!notes.is_empty()).then(|| notes.join("; ")),
            ..Self::default()
        }
    }

    /// Adds what the receiver saw; `unfinished` says why waiting for the remaining
    /// accepted events stopped, if they did not all arrive.
    pub fn add_deliveries(
        &mut self,
        start_ns: u64,
        d: &mut Deliveries,
        unfinished: Option<String>,
    ) {
        self.delivered_events = Some(d.unique);
        self.duplicate_deliveries = Some(d.duplicates);
        self.end_to_end_secs = d.last_ns.saturating_sub(start_ns) as f64 / 1e9;
        self.end_to_end_events_per_s = per_sec(d.unique, self.end_to_end_secs);
        self.delivery_latency = percentiles(&mut d.latencies_ns);
        self.complete = unfinished.is_none() && self.failed_requests == 0;
        let mut extra = Vec::new();
        if let Some(why) = unfinished {
            extra.push(format!(
                "INCOMPLETE: {} of {} accepted events delivered when waiting stopped ({why})",
                d.unique, self.accepted_events
            ));
        }
        if d.malformed > 0 {
            extra.push(format!("{} deliveries with an unknown ce-id", d.malformed));
        }
        self.push_note(extra);
    }

    pub fn add_process(&mut self, ready_ms: f64, idle_rss_kib: u64, usage: Option<Usage>) {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let delivered = self.delivered_events.unwrap_or(0);
        self.process = Some(Process {
            ready_ms,
            idle_rss_mib: mib(idle_rss_kib),
            peak_rss_mib: usage.map(|u| mib(u.peak_rss_kib)),
            cpu_secs: usage.map(|u| u.cpu.as_secs_f64()),
            cpu_us_per_event: usage
                .filter(|_| delivered > 0)
                .map(|u| u.cpu.as_secs_f64() * 1e6 / delivered as f64),
        });
    }

    /// A scenario that could not run at all.
    pub fn failed(name: &str, error: &anyhow::Error) -> Self {
        Self {
            name: name.to_owned(),
            failed: true,
            note: Some(format!("FAILED: {error:#}")),
            ..Self::default()
        }
    }

    pub fn push_note(&mut self, extra: Vec<String>) {
        let mut all: Vec<String> = self.note.take().into_iter().collect();
        all.extend(extra);
        self.note = (!all.is_empty()).then(|| all.join("; "));
    }
}

/// `v` with `decimals` decimals, or `-` if unknown.
fn fixed(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

fn ms(p: Option<Percentiles>, pick: fn(&Percentiles) -> f64) -> String {
    p.map_or_else(|| "-".to_owned(), |p| format!("{:.2}", pick(&p)))
}

/// The report as the table the bench prints.
pub fn table(report: &Report) -> String {
    let s = &report.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sluice-bench  cores={}  connections={}  events={}  batch={}x{} over {} conns{}",
        report.cores,
        s.connections,
        s.events,
        s.batch_events / s.batch_size.max(1) as u64,
        s.batch_size,
        s.batch_connections,
        if s.quick { "  (--quick)" } else { "" }
    );
    let _ = writeln!(
        out,
        "{:<28} {:>5} {:>9} {:>9} {:>4} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "scenario",
        "conns",
        "accepted",
        "delivered",
        "ok",
        "e2e ev/s",
        "ingest/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "ack p99"
    );
    for sc in &report.scenarios {
        let name = match sc.target_rate_per_s {
            Some(rate) => format!("{} @{:.0}/s", sc.name, rate),
            None => sc.name.clone(),
        };
        if sc.failed {
            let _ = writeln!(out, "{name:<28} FAILED (see its note below)");
            continue;
        }
        let _ = writeln!(
            out,
            "{:<28} {:>5} {:>9} {:>9} {:>4} {:>10.0} {:>10.0} {:>8} {:>8} {:>8} {:>8}",
            name,
            sc.connections,
            sc.accepted_events,
            sc.delivered_events
                .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            if sc.complete { "yes" } else { "NO" },
            sc.end_to_end_events_per_s,
            sc.ingest_events_per_s,
            ms(sc.delivery_latency, |p| p.p50_ms),
            ms(sc.delivery_latency, |p| p.p99_ms),
            ms(sc.delivery_latency, |p| p.max_ms),
            ms(sc.ingest_latency, |p| p.p99_ms),
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<28} {:>9} {:>13} {:>13} {:>9} {:>11}",
        "sluice process", "ready ms", "idle RSS MiB", "peak RSS MiB", "CPU s", "CPU us/ev"
    );
    for sc in &report.scenarios {
        if let Some(p) = sc.process {
            let _ = writeln!(
                out,
                "{:<28} {:>9.1} {:>13.1} {:>13} {:>9} {:>11}",
                sc.name,
                p.ready_ms,
                p.idle_rss_mib,
                fixed(p.peak_rss_mib, 1),
                fixed(p.cpu_secs, 2),
                fixed(p.cpu_us_per_event, 1),
            );
        }
    }
    let _ = writeln!(out);
    if let Some(ratio) = report.single_vs_echo {
        let _ = writeln!(
            out,
            "sluice single-event end to end = {:.1}% of the bare echo ceiling ({ratio:.3}x)",
            ratio * 100.0
        );
    }
    let _ = writeln!(
        out,
        "e2e ev/s: delivered events / (first send -> last delivery); echo-ceiling: requests/s. \
         ingest/s: events acknowledged with 202 per second of sending."
    );
    let _ = writeln!(
        out,
        "p50/p99/max: per event, send (open loop: scheduled) -> delivery at the receiver. \
         ack p99: per request, send -> 202."
    );
    for sc in &report.scenarios {
        if let Some(note) = &sc.note {
            let _ = writeln!(out, "note [{}]: {note}", sc.name);
        }
    }
    out
}

/// Writes the report as pretty JSON to `path`, creating its directory.
pub fn write_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report).context("cannot serialize the report")?;
    std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().map(|i| i * 1_000_000).collect();
        let p = percentiles(&mut v).expect("some");
        assert_eq!(
            (p.count, p.p50_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert!(percentiles(&mut []).is_none());
        let p = percentiles(&mut [7_000_000]).expect("one");
        assert_eq!((p.p50_ms, p.p99_ms), (7.0, 7.0));
    }
}
