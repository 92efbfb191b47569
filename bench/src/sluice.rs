//! The sluice child process: a generated config and a fresh data dir in a scratch
//! directory, the spawn, the wait for `/readyz`, and its memory and CPU from /proc.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Request, StatusCode};
use tokio::process::Child;

use crate::load::connect;

/// sluice must answer `/readyz` with 200 within this long after the spawn.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between two `/readyz` probes.
const READY_POLL: Duration = Duration::from_millis(1);
/// Idle RSS is read this long after the first 200 from `/readyz`.
const IDLE_SETTLE: Duration = Duration::from_millis(100);

/// A directory under the system temp dir, removed (with its contents) on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> anyhow::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("sluice-bench-{}-{tag}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running sluice. Dropping it kills the process (SIGKILL) and removes its
/// scratch dir; [`Sluice::stop`] does the same but waits for the exit.
pub struct Sluice {
    // Declared first so that it is dropped (killed) before the scratch dir goes.
    child: Child,
    pid: u32,
    scratch: Scratch,
    /// Where sluice listens (ingest, `/readyz`).
    pub addr: SocketAddr,
    /// From just before the spawn to the first `200` from `GET /readyz`.
    pub ready_after: Duration,
    /// VmRSS of the sluice process [`IDLE_SETTLE`] after it became ready, in KiB.
    pub idle_rss_kib: u64,
}

/// Resource use of a sluice process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// VmHWM: the most resident memory the process ever had, in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time of all its threads since the spawn.
    pub cpu: Duration,
}

impl Sluice {
    /// Spawns sluice with one HTTP target (`sink`; sending CloudEvents batches
    /// when `batching`) and one rule sending every `bench.event` to it, and waits
    /// until `/readyz` answers 200.
    pub async fn start(
        bin: &Path,
        sink: SocketAddr,
        tag: &str,
        batching: bool,
    ) -> anyhow::Result<Self> {
        let scratch = Scratch::new(tag)?;
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let config = scratch.0.join("sluice.yaml");
        std::fs::write(
            &config,
            config_yaml(addr, &scratch.0.join("data"), sink, batching),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let log =
            File::create(scratch.0.join("sluice.log")).context("cannot create the sluice log")?;
        let spawned = Instant::now();
        let (child, pid) = crate::procfs::spawn_serve(bin, &config, log)?;
        let mut sluice = Self {
            child,
            pid,
            scratch,
            addr,
            ready_after: Duration::ZERO,
            idle_rss_kib: 0,
        };
        sluice.ready_after = sluice.wait_ready(spawned).await?;
        tokio::time::sleep(IDLE_SETTLE).await;
        sluice.idle_rss_kib = crate::procfs::status_kib(pid, "VmRSS")?;
        Ok(sluice)
    }

    async fn wait_ready(&mut self, spawned: Instant) -> anyhow::Result<Duration> {
        while spawned.elapsed() < READY_TIMEOUT {
            if let Some(status) = self
                .child
                .try_wait()
                .context("cannot check the sluice process")?
            {
                bail!(
                    "sluice exited before it was ready ({status}); its log ends with:\n{}",
                    self.log_tail()
                );
            }
            if probe_ready(self.addr).await {
                return Ok(spawned.elapsed());
            }
            tokio::time::sleep(READY_POLL).await;
        }
        bail!(
            "sluice did not answer /readyz with 200 within {}s; its log ends with:\n{}",
            READY_TIMEOUT.as_secs(),
            self.log_tail()
        )
    }

    /// Peak memory and CPU so far. Fails if the process is gone.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Ok(Usage {
            peak_rss_kib: crate::procfs::status_kib(self.pid, "VmHWM")?,
            cpu: crate::procfs::cpu(self.pid)?,
        })
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines sluice wrote to stdout/stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.scratch.0.join("sluice.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return "(nothing)".to_owned();
        }
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Kills sluice (SIGKILL) and waits for it to exit; the scratch dir goes with `self`.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("cannot kill sluice")
    }
}

/// `GET /readyz` over a fresh connection: true on 200.
async fn probe_ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut sender = connect(addr).await?;
        let request = Request::get("/readyz")
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        anyhow::Ok(response.status() == StatusCode::OK)
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), probe).await,
        Ok(Ok(true))
    )
}

/// A 127.0.0.1 port that was free a moment ago (the OS picks it; sluice binds it
/// right after, so another process taking it in between is very unlikely).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot find a free port")?;
    Ok(listener
        .local_addr()
        .context("cannot read the free port")?
        .port())
}

fn config_yaml(listen: SocketAddr, data_dir: &Path, sink: SocketAddr, batching: bool) -> String {
    let batch = if batching {
        "\n    batch: { max_events: 500, max_wait: 20ms }"
    } else {
        ""
    };
    format!(
        r#"server:
  listen: {listen}
  data_dir: "{data_dir}"
  max_batch_bytes: 4194304
targets:
  - name: sink
    type: http
    url: http://{sink}/
    timeout: 10s
    concurrency: 64{batch}
rules:
  - name: all
    filter:
      pattern:
        type: [bench.event]
    targets: [sink]
"#,
        data_dir = data_dir.display()
    )
}
