//! One subscription's queue inside the shared sled database.
//!
//! Key layout of tree `sub/<name>` (chosen so each part is an ordered range scan):
//! - `r` + seq (u64 BE)               -> [`Record`]: ready, oldest first
//! - `d` + due ms (u64 BE) + seq      -> [`Record`]: waiting for a retry, earliest first
//! - `x` + seq                        -> [`DeadLetter`]
//! - `c` + counter name               -> u64 BE: delivered, retried, dead-lettered totals
//! - `p` + first seq (u64 BE)         -> a batch plan: the keys of a batch in flight
//!   (see [`super::plan`])
//! - `k` + event key, `t` + ms + event key -> recently queued events, for
//!   de-duplication (see [`super::dedupe`])
//!
//! Sequence numbers come from sled's persistent id generator, so they grow across
//! restarts. Depth is counted once at open and then kept in memory; counters are
//! written in the same batch as the settlement they count, so they survive restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::record::{DeadLetter, Record};
use super::StoreError;

pub(crate) const TREE_PREFIX: &str = "sub/";

pub(super) const READY: u8 = b'r';
const DELAYED: u8 = b'd';
const DEAD: u8 = b'x';
const COUNTER: u8 = b'c';
pub(super) const PLAN: u8 = b'p';
pub(super) const DEDUPE_KEY: u8 = b'k';
pub(super) const EXPIRY: u8 = b't';

/// Depth and totals of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Events waiting: ready plus scheduled for retry (in-flight ones included).
    pub depth: u64,
    /// Events waiting for a retry.
    pub retrying: u64,
    /// Events in the dead-letter list.
    pub dead_letters: u64,
    pub delivered_total: u64,
    pub retried_total: u64,
    pub dead_lettered_total: u64,
}

/// A queue handle. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(super) db: sled::Db,
    pub(super) tree: sled::Tree,
    pub(super) state: Arc<State>,
    pub(super) commits: super::Committer,
}

pub(super) struct State {
    pub(super) ready: AtomicU64,
    delayed: AtomicU64,
    dead: AtomicU64,
    /// Totals; the lock also serialises settlements so counters are written in order.
    totals: Mutex<Totals>,
    /// Held while a sequence number is drawn and its record inserted, so ready keys
    /// become visible in increasing order and a reader's cursor never skips one.
    pub(super) append: Mutex<()>,
    /// When expired de-duplication keys were last removed (ms).
    pub(super) last_prune_ms: AtomicU64,
}

#[derive(Default, Clone, Copy)]
struct Totals {
    delivered: u64,
    retried: u64,
    dead_lettered: u64,
}

/// An event taken from the queue for delivery; it stays in the store until settled.
#[derive(Debug, Clone)]
pub struct Leased {
    /// Where the record lives now.
    pub key: Vec<u8>,
    pub record: Record,
}

impl Leased {
    /// Whether it came from the ready range (not from a scheduled retry).
    pub fn is_ready(&self) -> bool {
        self.key.first() == Some(&READY)
    }
}

/// How a leased event ended this time.
#[derive(Debug)]
pub enum Settlement {
    Delivered {
        key: Vec<u8>,
    },
    Retry {
        key: Vec<u8>,
        record: Record,
        due_ms: u64,
    },
    DeadLetter {
        key: Vec<u8>,
        letter: DeadLetter,
    },
    /// A batch plan whose events are all settled by this same call.
    PlanDone {
        key: Vec<u8>,
    },
}

pub(super) fn ser<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs to JSON cannot fail: no maps with non-string
    // keys and no failing Serialize impls are involved.
    serde_json::to_vec(v).unwrap_or_default()
}

pub(super) fn key(kind: u8, parts: &[u64]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + 8 * parts.len());
    k.push(kind);
    for p in parts {
        k.extend_from_slice(&p.to_be_bytes());
    }
    k
}

pub(super) fn seq_of(key: &[u8]) -> u64 {
    let tail = &key[key.len().saturating_sub(8)..];
    let mut b = [0u8; 8];
    b[8 - tail.len()..].copy_from_slice(tail);
    u64::from_be_bytes(b)
}

impl Queue {
    pub(super) fn open(
        db: &sled::Db,
        name: &str,
        commits: super::Committer,
    ) -> Result<Self, StoreError> {
        Self::open_tree(db, &format!("{TREE_PREFIX}{name}"), commits)
    }

    pub(super) fn open_tree(
        db: &sled::Db,
        tree_name: &str,
        commits: super::Committer,
    ) -> Result<Self, StoreError> {
        let tree = db
            .open_tree(tree_name)
            .map_err(|e| StoreError::new("open queue", e))?;
        let count = |kind: u8| tree.scan_prefix([kind]).keys().count() as u64;
        let counter = |name: &str| -> Result<u64, StoreError> {
            let v = tree
                .get(counter_key(name))
                .map_err(|e| StoreError::new("open queue", e))?;
            Ok(v.map_or(0, |v| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&v[..8.min(v.len())]);
                u64::from_be_bytes(b)
            }))
        };
        let totals = Totals {
            delivered: counter("delivered")?,
            retried: counter("retried")?,
            dead_lettered: counter("dead_lettered")?,
        };
        let state = State {
            ready: AtomicU64::new(count(READY)),
            delayed: AtomicU64::new(count(DELAYED)),
            dead: AtomicU64::new(count(DEAD)),
            totals: Mutex::new(totals),
            append: Mutex::new(()),
            last_prune_ms: AtomicU64::new(0),
        };
        Ok(Self {
            db: db.clone(),
            tree,
            state: Arc::new(state),
            commits,
        })
    }

    /// Append an event. Not durable until [`super::Store::commit`] returns.
    pub fn enqueue(&self, record: &Record) -> Result<u64, StoreError> {
        let value = ser(record);
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        let seq = self
            .db
            .generate_id()
            .map_err(|e| StoreError::new("enqueue", e))?;
        self.tree
            .insert(key(READY, &[seq]), value)
            .map_err(|e| StoreError::new("enqueue", e))?;
        self.state.ready.fetch_add(1, Ordering::Relaxed);
        Ok(seq)
    }

    /// Up to `max` events to deliver: retries that are due (earliest first), then
    /// ready events (oldest first) after the key `ready_after` (a reader's cursor:
    /// the last ready key it leased). Keys in `in_flight` are skipped.
    pub fn lease(
        &self,
        max: usize,
        now_ms: u64,
        in_flight: &HashSet<Vec<u8>>,
        ready_after: Option<&[u8]>,
    ) -> Result<Vec<Leased>, StoreError> {
        let mut out = Vec::new();
        let due_end = key(DELAYED, &[now_ms.saturating_add(1)]);
        let ready_start = match ready_after {
            Some(k) => {
                let mut start = k.to_vec();
                start.push(0);
                start
            }
            None => vec![READY],
        };
        let sources = [
            self.tree.range(vec![DELAYED]..due_end),
            self.tree.range(ready_start..vec![READY + 1]),
        ];
        for iter in sources {
            for item in iter {
                if out.len() >= max {
                    return Ok(out);
                }
                let (k, v) = item.map_err(|e| StoreError::new("lease", e))?;
                if in_flight.contains(k.as_ref()) {
                    continue;
                }
                match serde_json::from_slice::<Record>(&v) {
                    Ok(record) => out.push(Leased {
                        key: k.to_vec(),
                        record,
                    }),
                    Err(e) => {
                        // A record this version cannot read must not block the
                        // queue: keep its bytes in the dead-letter list.
                        tracing::error!(error = %e, "Unreadable record moved to dead letters.");
                        self.quarantine(&k, &v, &e.to_string())?;
                    }
                }
            }
        }
        Ok(out)
    }

    fn quarantine(&self, k: &[u8], v: &[u8], error: &str) -> Result<(), StoreError> {
        let raw = serde_json::value::RawValue::from_string(
            serde_json::to_string(&String::from_utf8_lossy(v)).unwrap_or_default(),
        )
        .map_err(|e| StoreError::new("quarantine", e))?;
        let letter = DeadLetter {
            seq: seq_of(k),
            dead_lettered_ms: 0,
            reason: format!("unreadable record: {error}"),
            last_status: None,
            body_excerpt: None,
            record: Record::new(raw, 0),
        };
        self.settle(vec![Settlement::DeadLetter {
            key: k.to_vec(),
            letter,
        }])
    }

    /// The due time of the earliest scheduled retry that is not in `in_flight`.
    pub fn next_due_ms(&self, in_flight: &HashSet<Vec<u8>>) -> Option<u64> {
        self.tree
            .scan_prefix([DELAYED])
            .keys()
            .filter_map(Result::ok)
            .find(|k| !in_flight.contains(k.as_ref()))
            .map(|k| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[1..9]);
                u64::from_be_bytes(b)
            })
    }

    /// Apply outcomes in one atomic batch, counters included.
    pub fn settle(&self, outcomes: Vec<Settlement>) -> Result<(), StoreError> {
        let mut totals = self.state.totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = *totals;
        let mut batch = sled::Batch::default();
        let (mut ready, mut delayed, mut dead) = (0i64, 0i64, 0i64);
        let mut removed = |k: &[u8], delayed: &mut i64| match k.first() {
            Some(&READY) => ready -= 1,
            Some(&DELAYED) => *delayed -= 1,
            _ => {}
        };
        for outcome in outcomes {
            match outcome {
                Settlement::Delivered { key } => {
                    removed(&key, &mut delayed);
                    batch.remove(key);
                    next.delivered += 1;
                }
                Settlement::Retry {
                    key: k,
                    record,
                    due_ms,
                } => {
                    removed(&k, &mut delayed);
                    let seq = seq_of(&k);
                    batch.remove(k);
                    batch.insert(key(DELAYED, &[due_ms, seq]), ser(&record));
                    delayed += 1;
                    next.retried += 1;
                }
                Settlement::DeadLetter { key: k, mut letter } => {
                    removed(&k, &mut delayed);
                    letter.seq = seq_of(&k);
                    batch.remove(k);
                    batch.insert(key(DEAD, &[letter.seq]), ser(&letter));
                    dead += 1;
                    next.dead_lettered += 1;
                }
                Settlement::PlanDone { key } => batch.remove(key),
            }
        }
        batch.insert(counter_key("delivered"), &next.delivered.to_be_bytes());
        batch.insert(counter_key("retried"), &next.retried.to_be_bytes());
        batch.insert(
            counter_key("dead_lettered"),
            &next.dead_lettered.to_be_bytes(),
        );
        self.tree
            .apply_batch(batch)
            .map_err(|e| StoreError::new("settle", e))?;
        *totals = next;
        add(&self.state.ready, ready);
        add(&self.state.delayed, delayed);
        add(&self.state.dead, dead);
        Ok(())
    }

    /// Put an event straight into the dead-letter list (a source refusing a
    /// malformed record), with `reason`. Durable after the next commit.
    pub fn reject(&self, record: Record, reason: String, now_ms: u64) -> Result<(), StoreError> {
        let seq = self
            .db
            .generate_id()
            .map_err(|e| StoreError::new("reject", e))?;
        let letter = DeadLetter {
            seq,
            dead_lettered_ms: now_ms,
            reason,
            last_status: None,
            body_excerpt: None,
            record,
        };
        self.tree
            .insert(key(DEAD, &[seq]), ser(&letter))
            .map_err(|e| StoreError::new("reject", e))?;
        self.state.dead.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Wait until every write made before this call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.commits.commit().await
    }

    /// Dead letters, oldest first, starting after `after` (a seq), at most `limit`.
    pub fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let start = key(DEAD, &[after.map_or(0, |a| a.saturating_add(1))]);
        let mut out = Vec::new();
        for item in self.tree.range(start..vec![DEAD + 1]).take(limit) {
            let (_, v) = item.map_err(|e| StoreError::new("list dead letters", e))?;
            match serde_json::from_slice(&v) {
                Ok(letter) => out.push(letter),
                Err(e) => tracing::error!(error = %e, "Unreadable dead letter skipped."),
            }
        }
        Ok(out)
    }

    /// Move dead letters back to the ready queue with a fresh attempt history;
    /// `only` limits it to those seqs. Returns how many moved.
    pub fn redrive(&self, only: Option<&[u64]>) -> Result<u64, StoreError> {
        let mut moved = 0u64;
        let mut batch = sled::Batch::default();
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        for item in self.tree.scan_prefix([DEAD]) {
            let (k, v) = item.map_err(|e| StoreError::new("redrive", e))?;
            if only.is_some_and(|seqs| !seqs.contains(&seq_of(&k))) {
                continue;
            }
            let Ok(letter) = serde_json::from_slice::<DeadLetter>(&v) else {
                continue;
            };
            let mut record = letter.record;
            record.attempts.clear();
            record.last_error = None;
            record.enqueued_ms = crate::now_ms();
            let seq = self
                .db
                .generate_id()
                .map_err(|e| StoreError::new("redrive", e))?;
            batch.remove(k);
            batch.insert(key(READY, &[seq]), ser(&record));
            moved += 1;
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| StoreError::new("redrive", e))?;
        add(&self.state.dead, -(moved as i64));
        add(&self.state.ready, moved as i64);
        Ok(moved)
    }

    pub fn stats(&self) -> QueueStats {
        let totals = *self.state.totals.lock().unwrap_or_else(|p| p.into_inner());
        let ready = self.state.ready.load(Ordering::Relaxed);
        let delayed = self.state.delayed.load(Ordering::Relaxed);
        QueueStats {
            depth: ready + delayed,
            retrying: delayed,
            dead_letters: self.state.dead.load(Ordering::Relaxed),
            delivered_total: totals.delivered,
            retried_total: totals.retried,
            dead_lettered_total: totals.dead_lettered,
        }
    }
}

fn counter_key(name: &str) -> Vec<u8> {
    let mut k = vec![COUNTER];
    k.extend_from_slice(name.as_bytes());
    k
}

fn add(counter: &AtomicU64, delta: i64) {
    if delta >= 0 {
        counter.fetch_add(delta as u64, Ordering::Relaxed);
    } else {
        counter.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
    }
}
