//! The group commit: one thread writes every file of the store once per round
//! and answers everyone who waited for that round; a watchdog answers them
//! when a round never ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::bus::BusLog;
use super::{replays, Buses, Health, StoreError};

/// How long a writer waits for its group commit before giving up on it.
pub(super) const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How often the commit thread writes what was appended without anyone
/// waiting for it (settlements, forwarded dead letters), like a timed flush.
const IDLE_SYNC: Duration = Duration::from_millis(100);

/// How often the watchdog looks at the round in progress.
const WATCH_EVERY: Duration = Duration::from_millis(500);

pub(super) type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// A handle on the group-commit thread.
#[derive(Clone)]
pub(crate) struct Committer {
    pub(super) commits: mpsc::Sender<Waiter>,
}

impl Committer {
    /// Wait until every write made before this call is on disk. A flush that
    /// never returns (a stuck disk, a store bug) must refuse what it cannot
    /// confirm (ingest answers 503, the caller sends again, de-duplication drops
    /// a copy that did land) instead of holding every request forever: the
    /// watchdog answers with an error after the store's commit wait. It runs on
    /// the real clock, on a thread, so a runtime whose clock is paused (tests)
    /// does not run the wait out early.
    pub(super) async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::new("commit", "the store is closed");
        self.commits.send(tx).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// The group-commit loop's parts, on its own thread so an fsync never blocks
/// the runtime.
pub(super) struct Round {
    pub db: sled::Db,
    pub buses: Buses,
    pub replays: Arc<replays::Replays>,
    /// Rounds done.
    pub flushes: Arc<AtomicU64>,
    /// When the round in progress began (ms), 0 between rounds.
    pub since: Arc<AtomicU64>,
    pub health: Health,
    /// Where writers queue; the loop holds the lock only while it receives,
    /// so the watchdog can answer those queued behind a round that hangs.
    pub rx: Arc<Mutex<mpsc::Receiver<Waiter>>>,
    /// The waiters of the round in progress.
    pub current: Arc<Mutex<Vec<Waiter>>>,
}

impl Round {
    /// Start the commit thread, and the watchdog when writers wait at most
    /// `wait`; returns the commit thread.
    pub fn start(self, wait: Option<Duration>) -> Result<std::thread::JoinHandle<()>, StoreError> {
        if let Some(wait) = wait {
            let (rx, current, since) = (
                Arc::downgrade(&self.rx),
                self.current.clone(),
                self.since.clone(),
            );
            std::thread::Builder::new()
                .name("sluice-commit-watch".into())
                .spawn(move || watch(&rx, &current, &since, wait))
                .map_err(|e| StoreError::new("open", e))?;
        }
        std::thread::Builder::new()
            .name("sluice-commit".into())
            .spawn(move || self.run())
            .map_err(|e| StoreError::new("open", e))
    }

    /// Take every waiter queued so far, write once, answer them all; with no
    /// waiter for [`IDLE_SYNC`], write what was appended anyway.
    fn run(self) {
        loop {
            let mut waiters = Vec::new();
            {
                let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
                match rx.recv_timeout(IDLE_SYNC) {
                    Ok(first) => waiters.push(first),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        // The last handle is gone: write what it left, then end.
                        if let Err(e) = self.write(true) {
                            self.health.note(&e);
                        }
                        return;
                    }
                }
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
            }
            let waited = !waiters.is_empty();
            if !waited && self.health.failure().is_some() {
                continue;
            }
            *self.current.lock().unwrap_or_else(|p| p.into_inner()) = waiters;
            self.since.store(crate::now_ms().max(1), Ordering::Relaxed);
            let result = self.write(waited);
            self.since.store(0, Ordering::Relaxed);
            if waited {
                self.flushes.fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = &result {
                self.health.note(e);
                if !e.io {
                    tracing::error!(error = %e, "Store flush failed.");
                }
            }
            let answered =
                std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner()));
            for w in answered {
                let _ = w.send(result.clone());
            }
        }
    }

    /// The bus logs, then (when someone waits: positions are always followed
    /// by a commit) the positions, then the de-duplication keys.
    fn write(&self, positions: bool) -> Result<(), StoreError> {
        // Keys noted from here on may belong to events the bus logs below miss.
        let keys = self.replays.mark();
        let buses: Vec<Arc<BusLog>> = {
            let buses = self.buses.read().unwrap_or_else(|p| p.into_inner());
            buses.values().cloned().collect()
        };
        for bus in buses {
            bus.sync()?;
        }
        if positions {
            self.db.flush().map_err(|e| StoreError::new("flush", e))?;
        }
        self.replays.sync_before(keys)
    }
}

/// While the commit thread lives: whenever its round has run longer than
/// `wait`, answer that round's waiters, and those queued behind it, with an
/// error. They may still land; they were not confirmed.
fn watch(
    rx: &std::sync::Weak<Mutex<mpsc::Receiver<Waiter>>>,
    current: &Mutex<Vec<Waiter>>,
    since: &AtomicU64,
    wait: Duration,
) {
    loop {
        std::thread::sleep(WATCH_EVERY);
        let Some(rx) = rx.upgrade() else { return };
        let began = since.load(Ordering::Relaxed);
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        if began == 0 || crate::now_ms().saturating_sub(began) < wait_ms {
            continue;
        }
        let stuck = || {
            Err(StoreError::new(
                "commit",
                format!(
                    "the store did not confirm the write within {}s (a flush is stuck)",
                    wait.as_secs()
                ),
            ))
        };
        let mut late = std::mem::take(&mut *current.lock().unwrap_or_else(|p| p.into_inner()));
        // Free while the round hangs: the loop holds it only to receive.
        if let Ok(rx) = rx.try_lock() {
            late.extend(rx.try_iter());
        }
        for w in late {
            let _ = w.send(stuck());
        }
    }
}
