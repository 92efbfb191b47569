//! A data directory whose disk fills up, on a small tmpfs mounted for the test
//! (the suite runs as root; mounting is how a full disk is made for real).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{event, Receiver, Sluice};

/// A tmpfs of `mib` MiB at a new temp folder, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mib: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root to make a small disk"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill the disk with a file, leaving about `leave` bytes.
    fn fill(&self, leave: u64) -> PathBuf {
        let stat = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .unwrap();
        let avail: u64 = String::from_utf8_lossy(&stat.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let filler = self.path().join("filler");
        let size = avail.saturating_sub(leave);
        std::fs::write(&filler, vec![0u8; size as usize]).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Post batches of 10 events (2 KB each) until one is refused; returns the ids
/// of the accepted ones.
async fn post_until_refused(sluice: &Sluice, prefix: &str) -> (Vec<String>, u16) {
    let mut accepted = Vec::new();
    for i in 0..2_000 {
        let ids: Vec<String> = (0..10).map(|j| format!("{prefix}-{i}-{j}")).collect();
        let batch: Vec<_> = ids
            .iter()
            .map(|id| event(id, "t", json!({"pad": "x".repeat(2000)})))
            .collect();
        let status = sluice.post_batch(&json!(batch)).await.status().as_u16();
        if status != 202 {
            return (accepted, status);
        }
        accepted.extend(ids);
    }
    panic!("the disk never filled");
}

/// Ids delivered to `recv` so far.
fn delivered_ids(recv: &Receiver) -> HashSet<String> {
    recv.delivered()
        .iter()
        .filter_map(|r| r.header("ce-id").map(str::to_owned))
        .collect()
}

/// Once the disk is full: ingest answers 503, `/readyz` says why, delivery stops
/// (a delivery whose outcome cannot be recorded is not repeated in a loop) and
/// the log does not flood. Once there is room again, sluice reopens its store by
/// itself and delivers every event it had acknowledged. SIGTERM while the disk is
/// full exits cleanly, losing nothing acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_sluice_which_recovers_by_itself_when_room_returns() {
    let disk = Tmpfs::mount(48);
    let recv = Receiver::start().await;
    // The function fails until the disk is full, so events stay queued.
    recv.script(&[], 503);
    let config = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 4\n\
rules:\n  - name: all\n    targets: [fn]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 200ms }} }}\n",
        recv.url()
    );
    let mut sluice = Sluice::start_with_server(
        &config,
        &format!("  data_dir: {}\n", disk.path().join("data").display()),
    )
    .await;
    let filler = disk.fill(6 << 20);
    let (accepted, refused) = post_until_refused(&sluice, "a").await;
    assert_eq!(refused, 503);
    assert!(
        accepted.len() >= 10,
        "{} accepted before the disk filled",
        accepted.len()
    );
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(10), |status, body| {
            status == 503 && body["store"].is_string()
        })
        .await;
    assert!(
        body["store"].as_str().is_some_and(|s| s.contains("full")),
        "{body}"
    );
    // The function recovers while the disk is full: at most what was in flight
    // (4 deliveries) reaches it; nothing is repeated in a loop.
    let before = recv.attempts();
    recv.script(&[], 200);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = recv.attempts() - before;
    assert!(
        during <= 4,
        "{during} deliveries while the store could not record them"
    );
    let log = sluice.log();
    let errors = log.lines().filter(|l| l.contains("ERROR")).count();
    assert!(errors < 20, "{errors} error lines:\n{log}");

    // Room again: sluice reopens its store by itself, and everything acknowledged
    // arrives.
    std::fs::remove_file(&filler).unwrap();
    sluice
        .wait_readyz(Duration::from_secs(30), |status, _| status == 200)
        .await;
    let want: HashSet<String> = accepted.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&delivered_ids(&recv)) {
        assert!(
            Instant::now() < deadline,
            "{} of {} delivered",
            want.intersection(&delivered_ids(&recv)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sluice
        .log()
        .contains("sluice restarts to open its store anew"));
    let r = sluice
        .post_structured(&event("after", "t", json!({})))
        .await;
    assert_eq!(r.status(), 202);

    // Full again, and SIGTERM: a clean exit; after it, nothing acknowledged is lost.
    recv.script(&[], 503);
    let filler = disk.fill(6 << 20);
    let (accepted, _) = post_until_refused(&sluice, "b").await;
    assert_eq!(sluice.terminate(), Some(0), "{}", sluice.log());
    std::fs::remove_file(&filler).unwrap();
    recv.script(&[], 200);
    sluice.spawn().await;
    let want: HashSet<String> = accepted.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !want.is_subset(&delivered_ids(&recv)) {
        assert!(
            Instant::now() < deadline,
            "after SIGTERM: {} of {} delivered",
            want.intersection(&delivered_ids(&recv)).count(),
            want.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
