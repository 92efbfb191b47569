//! One sluice child process per scenario: its own scratch dir (config, data dir,
//! log), a free port, and its progress read from `/metrics` and `/proc`.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::process::Child;

/// sluice must answer `/healthz` with 200 within this long after the spawn.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A process-wide unique suffix for topic, group, table and bucket names.
pub fn unique(tag: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{tag}-{:x}-{:x}-{n}", std::process::id(), nanos % (1 << 40))
}

/// The counters of `/metrics` the scenarios watch, summed over their labels.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// `sluice_events_received_total`: events made durable from sources.
    pub received: u64,
    /// `sluice_events_delivered_total`: events a target confirmed.
    pub delivered: u64,
    /// `sluice_queue_depth`: events waiting in subscription queues.
    pub depth: u64,
    /// VmRSS of the process, in KiB.
    pub rss_kib: u64,
}

/// A running sluice; dropping it kills the process and removes its scratch dir.
pub struct Sluice {
    // Declared first so that it is dropped (killed) before the scratch dir goes.
    child: Child,
    pid: u32,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`.
    base: String,
    http: reqwest::Client,
}

impl Sluice {
    /// Spawns `bin serve` with `server:` (a free port, a fresh data dir) followed by
    /// `body` (sources, targets, rules) and waits until `/healthz` answers 200.
    pub async fn start(bin: &Path, tag: &str, body: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("sluice-{}", unique(tag)));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .context("cannot find a free port")?
            .port();
        let config = dir.join("sluice.yaml");
        let yaml = format!(
            "server:\n  listen: 127.0.0.1:{port}\n  data_dir: \"{}\"\n{body}",
            dir.join("data").display()
        );
        std::fs::write(&config, yaml)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let log = File::create(dir.join("sluice.log")).context("cannot create the sluice log")?;
        let (child, pid) = crate::procfs::spawn_serve(bin, &config, log)?;
        let mut sluice = Self {
            child,
            pid,
            dir,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let healthz = format!("http://127.0.0.1:{port}/healthz");
        let spawned = Instant::now();
        loop {
            if let Some(status) = sluice.child.try_wait().context("cannot check sluice")? {
                bail!(
                    "sluice exited at start ({status}); its log ends with:\n{}",
                    sluice.log_tail()
                );
            }
            let probe = sluice
                .http
                .get(&healthz)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(sluice);
            }
            if spawned.elapsed() > START_TIMEOUT {
                bail!(
                    "sluice did not answer /healthz within 30 s; its log ends with:\n{}",
                    sluice.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Reads `/metrics` and VmRSS now; fails if sluice exited or does not answer.
    pub async fn progress(&mut self) -> anyhow::Result<Progress> {
        if let Some(status) = self.child.try_wait().context("cannot check sluice")? {
            bail!(
                "sluice exited ({status}); its log ends with:\n{}",
                self.log_tail()
            );
        }
        let text = self
            .http
            .get(self.url("/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .context("GET /metrics failed")?
            .text()
            .await
            .context("cannot read /metrics")?;
        Ok(Progress {
            received: sum_metric(&text, "sluice_events_received_total"),
            delivered: sum_metric(&text, "sluice_events_delivered_total"),
            depth: sum_metric(&text, "sluice_queue_depth"),
            rss_kib: self.status_kib("VmRSS")?,
        })
    }

    /// `path` on sluice's server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// VmHWM: the most resident memory the process ever had, in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM")
    }

    /// User plus system CPU time of all its threads since the spawn, in seconds.
    pub fn cpu_secs(&self) -> anyhow::Result<f64> {
        Ok(crate::procfs::cpu(self.pid)?.as_secs_f64())
    }

    /// Bytes of the files under sluice's data dir: its store on disk.
    #[allow(dead_code)] // read by s3_events only; pipelines includes this file too
    pub fn data_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return 0;
            };
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.dir.join("data"))
    }

    fn status_kib(&self, field: &str) -> anyhow::Result<u64> {
        crate::procfs::status_kib(self.pid, field)
    }

    /// The last 20 lines sluice wrote to stdout/stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("sluice.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return "(nothing)".to_owned();
        }
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Sluice {
    /// Kills sluice (SIGKILL) and waits for the exit; the scratch dir goes on drop.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sum of every sample of `name` (all label sets) in Prometheus text format.
fn sum_metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::sum_metric;

    #[test]
    fn sums_every_label_set_of_one_metric_only() {
        let text = "# HELP sluice_queue_depth x\n\
            sluice_queue_depth{rule=\"a\",target=\"t\"} 5\n\
            sluice_queue_depth{rule=\"b\",target=\"t\"} 7\n\
            sluice_queue_depth_other 100\n\
            sluice_events_received_total{bus=\"default\",source=\"k\"} 1e3\n";
        assert_eq!(sum_metric(text, "sluice_queue_depth"), 12);
        assert_eq!(sum_metric(text, "sluice_events_received_total"), 1000);
        assert_eq!(sum_metric(text, "sluice_events_delivered_total"), 0);
    }
}
