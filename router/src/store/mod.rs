//! The durable store: one sled database holding one queue per subscription.
//!
//! Writes are group-committed: [`Store::commit`] waits for a flush that began after
//! it was called, and one flush (one fsync) covers every write made before it by
//! any number of concurrent callers. Nothing is acknowledged upstream before it.

pub mod bus;
mod chunk;
pub mod log;
mod plan;
mod progress;
mod queue;
mod record;
pub(crate) mod replays;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use progress::{Position, Progress};
pub use queue::{Leased, Queue, QueueStats, Settlement};
pub use record::{DeadLetter, Record};

use crate::error::ErrorClass;

/// A failure of the local store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store {operation} failed: {message}")]
pub struct StoreError {
    pub operation: &'static str,
    pub message: String,
    /// The disk refused a read or write (full, gone, read-only): the store can
    /// no longer be trusted to persist anything until it is opened again.
    pub io: bool,
}

impl StoreError {
    pub(crate) fn new(operation: &'static str, err: impl std::fmt::Display) -> Self {
        let message = err.to_string();
        Self {
            operation,
            // sled reports its I/O failures this way, and keeps failing after one.
            io: message.starts_with("IO error"),
            message,
        }
    }

    pub fn class(&self) -> ErrorClass {
        ErrorClass::Internal
    }
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// sled's log segment size. Queues insert and delete constantly, which frees the
/// segments at the end of the file; sled 0.34.7 then truncates the file from its
/// I/O thread pool, and under a heavy write load that pool can starve the
/// truncation while a writer waits for it (sled issue 1412). Larger segments make
/// truncations (and that wait) 16x rarer than the 512 KiB default; sled keeps
/// I/O buffers of this size, so it also sets part of the idle memory. Fixed when a
/// store is created.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// sled's page cache; the default 1 GiB would let a drained backlog keep that much.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// The file in the data directory naming the process that holds the store.
const PID_FILE: &str = "sluice.pid";

/// Why a store is locked: another process has it open.
fn in_use(dir: &Path) -> String {
    let pid = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let holder = match pid {
        Some(pid) => format!("another sluice process (pid {pid})"),
        None => "another sluice process".to_owned(),
    };
    format!(
        "{holder} is using {}; stop it or choose another data_dir",
        dir.display()
    )
}

/// Whether the store can still write, shared by every handle on it.
///
/// sled 0.34 fails every operation after its first I/O error (a full disk, say)
/// until it is opened again, so a failure here is for the life of this store:
/// the engine stops delivering (a delivery whose outcome cannot be recorded would
/// only be repeated) and reports it, and the binary reopens the store by
/// restarting once the disk can take writes again.
#[derive(Clone, Default)]
pub(crate) struct Health(Arc<std::sync::Mutex<Option<String>>>);

impl Health {
    /// Note `e`; an I/O failure marks the store failed (logged once).
    pub(crate) fn note(&self, e: &StoreError) {
        if !e.io {
            return;
        }
        let mut failure = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if failure.is_none() {
            let hint = if e.message.contains("No space left") || e.message.contains("StorageFull") {
                "the data directory's disk is full"
            } else {
                "the data directory cannot be written"
            };
            tracing::error!(error = %e, "The store cannot write ({hint}): ingest answers 503 and delivery pauses until sluice reopens it.");
            *failure = Some(format!("{hint}: {}", e.message));
        }
    }

    /// Why the store cannot write, if it cannot.
    pub(crate) fn failure(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The durable store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Keys of the events accepted within `server.dedupe_window`.
    replays: Arc<replays::Replays>,
    commit_wait: Option<std::time::Duration>,
    health: Health,
    commits: mpsc::Sender<Waiter>,
    /// Group commits (fsyncs) done so far.
    flushes: Arc<AtomicU64>,
    /// When the flush in progress started (ms since the epoch), 0 when idle.
    flushing_since: Arc<AtomicU64>,
    _flusher: Arc<FlusherGuard>,
}

struct FlusherGuard(Option<std::thread::JoinHandle<()>>);

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        // The flusher ends when every sender is gone; the last `Store` clone is
        // dropping now, so its channel closes and the thread finishes its flush.
        if let Some(handle) = self.0.take() {
            let _ = handle.join();
        }
    }
}

/// How a store is opened: what it must remember of published events.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// `server.dedupe_window` (0: no replay is dropped).
    pub dedupe_window_ms: u64,
    /// `server.dedupe_max_keys`.
    pub dedupe_max_keys: usize,
    /// How long a writer waits for its group commit before it gives up (see
    /// [`Committer::commit`]). `None` waits for ever: only for tests on a paused
    /// tokio clock, which would run the wait out at once while the commit
    /// thread works on the real clock.
    pub commit_wait: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            dedupe_window_ms: 600_000,
            dedupe_max_keys: 10_000_000,
            commit_wait: Some(COMMIT_WAIT),
        }
    }
}

/// The folder of the de-duplication keys' log, in the data directory.
const REPLAYS_DIR: &str = "dedupe";

impl Store {
    /// Open (or create) the store in `dir` with the default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Open (or create) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir.as_ref())
            .mode(sled::Mode::HighThroughput)
            .segment_size(SEGMENT_SIZE)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                // sled reports the lock another process holds as an I/O error.
                sled::Error::Io(io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.to_string().contains("could not acquire lock") =>
                {
                    StoreError::new("open", in_use(dir.as_ref()))
                }
                e => StoreError::new("open", e),
            })?;
        // Who holds the store, for the next process that finds it locked.
        let _ = std::fs::write(dir.as_ref().join(PID_FILE), std::process::id().to_string());
        // Opened once sled holds the directory's lock, so no two processes share it.
        let replays = Arc::new(replays::Replays::open(
            &dir.as_ref().join(REPLAYS_DIR),
            options.dedupe_window_ms,
            options.dedupe_max_keys,
        )?);
        let flusher_replays = replays.clone();
        let (tx, rx) = mpsc::channel::<Waiter>(65_536);
        let flusher_db = db.clone();
        let flushes = Arc::new(AtomicU64::new(0));
        let flushing_since = Arc::new(AtomicU64::new(0));
        let (counter, since) = (flushes.clone(), flushing_since.clone());
        let health = Health::default();
        let flusher_health = health.clone();
        let handle = std::thread::Builder::new()
            .name("sluice-commit".into())
            .spawn(move || {
                let done = Done {
                    flushes: &counter,
                    since: &since,
                    health: &flusher_health,
                };
                flusher(&flusher_db, &flusher_replays, rx, &done);
            })
            .map_err(|e| StoreError::new("open", e))?;
        Ok(Self {
            db,
            replays,
            commit_wait: options.commit_wait,
            health,
            commits: tx,
            flushes,
            flushing_since,
            _flusher: Arc::new(FlusherGuard(Some(handle))),
        })
    }

    /// The queue of subscription `name`, created on first use.
    pub fn queue(&self, name: &str) -> Result<Queue, StoreError> {
        Queue::open(&self.db, name, self.committer())
    }

    /// The dead-letter list of source `name`: records it refused as malformed
    /// (only its dead-letter part is used).
    pub fn source_rejects(&self, name: &str) -> Result<Queue, StoreError> {
        Queue::open_tree(&self.db, &format!("rejects/{name}"), self.committer())
    }

    /// The positions source `name` already queued (see [`Progress`]).
    pub fn progress(&self, name: &str) -> Result<Progress, StoreError> {
        Progress::open(&self.db, name)
    }

    /// Wait until every write made before this call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.committer().commit().await
    }

    /// Flush synchronously (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StoreError::new("flush", e))?;
        self.replays.sync()
    }

    fn committer(&self) -> Committer {
        Committer {
            commits: self.commits.clone(),
            wait: self.commit_wait,
        }
    }

    /// The keys of recently accepted events (see [`replays`]).
    pub(crate) fn replays(&self) -> &replays::Replays {
        &self.replays
    }

    /// Whether the store can still write (see [`Health`]).
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// How many group commits (each one fsync) ran since open.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// How long the flush in progress has been running, if one is. A flush that
    /// never returns means the store is stuck; `/healthz` reports it so a
    /// supervisor restarts sluice (what was acknowledged is on disk).
    pub fn flush_stalled_for(&self) -> Option<std::time::Duration> {
        match self.flushing_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(std::time::Duration::from_millis(
                crate::now_ms().saturating_sub(since),
            )),
        }
    }

    /// Names of the queues present on disk.
    pub fn queue_names(&self) -> Vec<String> {
        self.db
            .tree_names()
            .into_iter()
            .filter_map(|n| {
                std::str::from_utf8(&n)
                    .ok()
                    .and_then(|n| n.strip_prefix(queue::TREE_PREFIX))
                    .map(str::to_owned)
            })
            .collect()
    }
}

/// How long a writer waits for its group commit before giving up on it.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A handle on the group-commit thread.
#[derive(Clone)]
pub(crate) struct Committer {
    commits: mpsc::Sender<Waiter>,
    wait: Option<std::time::Duration>,
}

impl Committer {
    /// Wait until every write made before this call is on disk, or fail after
    /// the store's commit wait ([`COMMIT_WAIT`] unless a test set another): a
    /// flush that never returns (a stuck disk, a store bug) must refuse what it
    /// cannot confirm (ingest answers 503, the caller sends again,
    /// de-duplication drops a copy that did land) instead of holding every
    /// request forever.
    async fn commit(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let closed = || StoreError::new("commit", "the store is closed");
        let committed = async {
            self.commits.send(tx).await.map_err(|_| closed())?;
            rx.await.map_err(|_| closed())?
        };
        let Some(wait) = self.wait else {
            return committed.await;
        };
        tokio::time::timeout(wait, committed)
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::new(
                    "commit",
                    format!(
                        "the store did not confirm the write within {}s (a flush is stuck)",
                        wait.as_secs()
                    ),
                ))
            })
    }
}

/// What the group-commit loop reports on.
struct Done<'a> {
    /// Rounds done.
    flushes: &'a AtomicU64,
    /// When the round in progress began (ms), 0 between rounds.
    since: &'a AtomicU64,
    health: &'a Health,
}

/// The group-commit loop, on its own thread so an fsync never blocks the runtime.
/// It takes every waiter queued so far, flushes once, and answers them all. The
/// events go to disk first, then the de-duplication keys written for them (see
/// [`replays`] for why that order).
fn flusher(
    db: &sled::Db,
    replays: &replays::Replays,
    mut rx: mpsc::Receiver<Waiter>,
    done: &Done<'_>,
) {
    let Done {
        flushes,
        since,
        health,
    } = done;
    let mut waiters = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        waiters.push(first);
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        since.store(crate::now_ms().max(1), Ordering::Relaxed);
        let result = db
            .flush()
            .map(|_| ())
            .map_err(|e| StoreError::new("flush", e))
            .and_then(|()| replays.sync());
        since.store(0, Ordering::Relaxed);
        flushes.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            health.note(e);
            if !e.io {
                tracing::error!(error = %e, "Store flush failed.");
            }
        }
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod model_tests;

/// Open the store in `path` again in a test, waiting for the previous handle's
/// commit thread to let go of the lock (dropping a store releases it a moment
/// later, on that thread).
#[cfg(test)]
pub(crate) fn reopen(path: &Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match Store::open(path) {
            Ok(store) => return store,
            // The store names the lock's holder ("another sluice process ... is using").
            Err(e) if std::time::Instant::now() < deadline && e.message.contains("is using") => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("{e}"),
        }
    }
}
