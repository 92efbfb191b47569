//! The durable store: one event log per bus holding every subscription's queue
//! (see [`bus`]), the de-duplication keys (see [`replays`]), and, in a sled
//! database until they move too, the sources' positions and marks (see
//! [`progress`]).
//!
//! Writes are group-committed: [`Store::commit`] waits for a round that began
//! after it was called, and one round (one fsync per file written) covers every
//! write made before it by any number of concurrent callers. Nothing is
//! acknowledged upstream before it. A round writes the bus logs first, then the
//! positions, then the de-duplication keys: a position or a key is never
//! durable without the events it stands for.

pub mod bus;
mod commit;
pub mod log;
mod progress;
mod queue;
mod record;
pub(crate) mod replays;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, RwLock};

use bus::BusLog;
pub(crate) use commit::Committer;
use commit::{Round, Waiter, COMMIT_WAIT};
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

/// sled's log segment size (it holds only source positions and marks now).
/// Fixed when a store is created.
const SEGMENT_SIZE: usize = 8 * 1024 * 1024;

/// Segment size of the bus logs.
const BUS_SEGMENT_BYTES: u64 = 32 << 20;

/// The folder of the bus logs, in the data directory.
const BUSES_DIR: &str = "buses";

/// The bus log holding sources' dead letters (records they refused), one
/// subscription per source.
const REJECTS_BUS: &str = ".rejects";

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
    /// Source positions and marks.
    db: sled::Db,
    dir: PathBuf,
    /// The bus logs opened so far, by bus (the commit thread writes each).
    buses: Buses,
    /// Keys of the events accepted within `server.dedupe_window`.
    replays: Arc<replays::Replays>,
    health: Health,
    commits: mpsc::Sender<Waiter>,
    /// Group commits (fsyncs) done so far.
    flushes: Arc<AtomicU64>,
    /// When the flush in progress started (ms since the epoch), 0 when idle.
    flushing_since: Arc<AtomicU64>,
    _flusher: Arc<FlusherGuard>,
}

type Buses = Arc<RwLock<HashMap<String, Arc<BusLog>>>>;

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
    /// How long a writer waits for its group commit before it is answered
    /// with an error (see [`Committer::commit`]); `None` waits for ever.
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
        let dir = dir.as_ref().to_path_buf();
        let db = sled::Config::new()
            .path(&dir)
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
                    StoreError::new("open", in_use(&dir))
                }
                e => StoreError::new("open", e),
            })?;
        // Who holds the store, for the next process that finds it locked.
        let _ = std::fs::write(dir.join(PID_FILE), std::process::id().to_string());
        // What follows is opened once sled holds the directory's lock, so no two
        // processes share it.
        refuse_old_queues(&db, &dir)?;
        let replays = Arc::new(replays::Replays::open(
            &dir.join(REPLAYS_DIR),
            options.dedupe_window_ms,
            options.dedupe_max_keys,
        )?);
        let buses: Buses = Arc::default();
        let (tx, rx) = mpsc::channel::<Waiter>();
        let flushes = Arc::new(AtomicU64::new(0));
        let flushing_since = Arc::new(AtomicU64::new(0));
        let health = Health::default();
        let round = Round {
            db: db.clone(),
            buses: buses.clone(),
            replays: replays.clone(),
            flushes: flushes.clone(),
            since: flushing_since.clone(),
            health: health.clone(),
            rx: Arc::new(std::sync::Mutex::new(rx)),
            current: Arc::default(),
        };
        let handle = round.start(options.commit_wait)?;
        Ok(Self {
            db,
            dir,
            buses,
            replays,
            health,
            commits: tx,
            flushes,
            flushing_since,
            _flusher: Arc::new(FlusherGuard(Some(handle))),
        })
    }

    fn committer(&self) -> Committer {
        Committer {
            commits: self.commits.clone(),
        }
    }

    /// Open the log of `bus` for subscriptions `names` (once per bus; a
    /// subscription new to the log starts at its end).
    pub fn open_bus(&self, bus: &str, names: &[&str]) -> Result<Arc<BusLog>, StoreError> {
        let path = self.dir.join(BUSES_DIR).join(dir_name(bus));
        let log = Arc::new(BusLog::open(&path, names, BUS_SEGMENT_BYTES)?);
        let mut buses = self.buses.write().unwrap_or_else(|p| p.into_inner());
        if buses.contains_key(bus) {
            return Err(StoreError::new(
                "open bus",
                format!("bus {bus} is open already"),
            ));
        }
        buses.insert(bus.to_owned(), log.clone());
        Ok(log)
    }

    /// The queue of subscription `name` in `bus` (opened with it).
    pub fn queue(&self, bus: &Arc<BusLog>, name: &str) -> Result<Queue, StoreError> {
        Ok(Queue {
            bus: bus.clone(),
            id: bus.id(name)?,
            commits: self.committer(),
        })
    }

    /// Open the dead-letter lists of sources `names`: the records each refused
    /// as malformed.
    pub fn open_rejects(&self, names: &[&str]) -> Result<(), StoreError> {
        self.open_bus(REJECTS_BUS, names).map(|_| ())
    }

    /// The dead-letter list of source `name` (only its dead-letter part is used).
    pub fn source_rejects(&self, name: &str) -> Result<Queue, StoreError> {
        let bus = self
            .buses
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(REJECTS_BUS)
            .cloned()
            .ok_or_else(|| StoreError::new("source dead letters", "not opened"))?;
        self.queue(&bus, name)
    }

    /// Keep the keys of events a crash left without theirs: a round makes the
    /// events durable before their keys, so the newest events of each bus
    /// (those appended up to a commit's timeout before the newest durable key)
    /// may lack theirs; the bus logs keep each event's key in its record.
    /// Returns how many were restored.
    pub(crate) fn restore_replay_keys(&self) -> Result<usize, StoreError> {
        let Some(since) = self.replays.restore_from_ms() else {
            return Ok(0);
        };
        let mut restored = 0;
        for bus in self.bus_logs() {
            for (key, at_ms) in bus.recent_keys(since)? {
                restored += self.replays.restore(key, at_ms)?;
            }
        }
        Ok(restored)
    }

    /// The positions source `name` already queued (see [`Progress`]).
    pub fn progress(&self, name: &str) -> Result<Progress, StoreError> {
        Progress::open(&self.db, name)
    }

    /// Wait until every write made before this call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.committer().commit().await
    }

    /// Write everything synchronously (shutdown).
    pub fn flush(&self) -> Result<(), StoreError> {
        let keys = self.replays.mark();
        for bus in self.bus_logs() {
            bus.sync()?;
        }
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StoreError::new("flush", e))?;
        self.replays.sync_before(keys)
    }

    fn bus_logs(&self) -> Vec<Arc<BusLog>> {
        let buses = self.buses.read().unwrap_or_else(|p| p.into_inner());
        buses.values().cloned().collect()
    }

    /// The keys of recently accepted events (see [`replays`]).
    pub(crate) fn replays(&self) -> &replays::Replays {
        &self.replays
    }

    /// Whether the store can still write (see [`Health`]).
    pub(crate) fn health(&self) -> &Health {
        &self.health
    }

    /// How many group commits (each one fsync per file written) ran since open.
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
}

/// A bus's folder name: the name itself when it is plain, else its bytes in
/// hex (so no bus name can reach outside the buses folder).
fn dir_name(bus: &str) -> String {
    let plain = !bus.is_empty()
        && bus != "."
        && bus != ".."
        && bus
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if plain {
        bus.to_owned()
    } else {
        let hex: String = bus.bytes().map(|b| format!("{b:02x}")).collect();
        format!("x-{hex}")
    }
}

/// Refuse a data directory whose queues an earlier sluice kept in sled (trees
/// `sub/<name>` and `rejects/<name>`): this version would not see those events.
/// Empty ones are dropped.
fn refuse_old_queues(db: &sled::Db, dir: &Path) -> Result<(), StoreError> {
    let err = |e| StoreError::new("open", e);
    let mut held = Vec::new();
    for name in db.tree_names() {
        let Ok(text) = std::str::from_utf8(&name) else {
            continue;
        };
        let Some(queue) = text
            .strip_prefix("sub/")
            .or_else(|| text.strip_prefix("rejects/"))
        else {
            continue;
        };
        let tree = db.open_tree(&name).map_err(err)?;
        // Only what a queue holds counts (ready `r`, due `d`, dead `x`); old
        // counters, flags and de-duplication keys do not.
        let holds = [b'r', b'd', b'x']
            .iter()
            .any(|p| tree.scan_prefix([*p]).next().is_some());
        if holds {
            held.push(queue.to_owned());
        } else {
            drop(tree);
            db.drop_tree(&name).map_err(err)?;
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(StoreError::new(
        "open",
        format!(
            "{} holds queued events or dead letters of {} in the format of sluice before 0.2, which this version cannot read: start the previous sluice on it, let it deliver (stop its sources; redrive or export dead letters), then start this one; or move the directory away",
            dir.display(),
            held.join(", ")
        ),
    ))
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
