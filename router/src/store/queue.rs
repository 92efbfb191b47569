//! One subscription's queue inside the shared sled database.
//!
//! Key layout of tree `sub/<name>` (chosen so each part is an ordered range scan):
//! - `r` + seq (u64 BE)               -> a chunk of ready events, oldest first, and
//!   `s` + seq -> which of them are settled (see [`super::chunk`]); an event in
//!   it is addressed as `r` + seq + index + count (u32 BE each)
//! - `d` + due ms (u64 BE) + identity -> [`Record`]: waiting for a due time,
//!   earliest first: a retry (identity is the rest of the key the event had when
//!   ready) or an event published with `deliverat`/`delay` (identity is a fresh
//!   seq + index + count, 16 bytes like a ready entry's, so it is unique and a
//!   retry of it keeps it). Held in the same range because both are "deliver at
//!   or after this time": one scan serves both and they survive restarts alike.
//! - `x` + id (u64 BE)                -> [`DeadLetter`], in the order they died
//! - `c` + counter name               -> u64 BE: delivered, retried, dead-lettered totals
//! - `p` + id (u64 BE)                -> a batch plan: the keys of a batch in flight
//!   (see [`super::plan`])
//! - `f` + flag name                  -> a setting of the queue kept across restarts
//!   (`paused`: 1 while delivery is paused)
//!
//! Sequence numbers and ids come from sled's persistent id generator, so they grow
//! across restarts. Depth is counted once at open and then kept in memory; counters
//! are written in the same batch as the settlement they count, so they survive
//! restart.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::chunk::{self, Entry, Settled, SETTLED};
use super::record::{DeadLetter, Record};
use super::StoreError;

pub(crate) const TREE_PREFIX: &str = "sub/";

pub(super) const READY: u8 = b'r';
const DELAYED: u8 = b'd';
const DEAD: u8 = b'x';
const COUNTER: u8 = b'c';
pub(super) const PLAN: u8 = b'p';
const FLAG: u8 = b'f';

/// Depth and totals of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Events waiting: ready plus scheduled for a later time (in-flight ones
    /// included).
    pub depth: u64,
    /// Of those, events scheduled for a later time: retries, and events published
    /// with `deliverat`/`delay` that are not due yet (one range in the store).
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
    /// Chunks with a settled bitmap (some but not all records settled), so that
    /// leases read bitmaps only where there is one.
    partial: Mutex<HashSet<u64>>,
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
        // Ready events: records of chunks less those settled; and which chunks
        // have a bitmap.
        let count_ready = || -> Result<(u64, HashSet<u64>), StoreError> {
            let err = |e| StoreError::new("open queue", e);
            let mut settled: HashMap<u64, u64> = HashMap::new();
            for item in tree.scan_prefix([SETTLED]) {
                let (k, v) = item.map_err(err)?;
                let n = u64::from(Settled::from_bytes(&v).count());
                settled.insert(seq_of(&k), n);
            }
            let mut ready = 0u64;
            for item in tree.scan_prefix([READY]) {
                let (k, v) = item.map_err(err)?;
                let done = settled.get(&seq_of(&k)).copied().unwrap_or(0);
                ready += u64::from(chunk::count(&v)).saturating_sub(done);
            }
            Ok((ready, settled.into_keys().collect()))
        };
        let (ready, partial) = count_ready()?;
        drop_old_dedupe_keys(&tree)?;
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
            ready: AtomicU64::new(ready),
            delayed: AtomicU64::new(count(DELAYED)),
            dead: AtomicU64::new(count(DEAD)),
            totals: Mutex::new(totals),
            append: Mutex::new(()),
            partial: Mutex::new(partial),
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
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        self.append_chunk(&[ser(record)])
    }

    /// Append events: those due later than `now_ms` (delayed delivery:
    /// `deliverat` / `delay`) to the scheduled range, where retries wait, the
    /// rest as one ready chunk (see the key layout above). Not durable until
    /// [`super::Store::commit`] returns. (Replays were dropped before: see
    /// [`super::replays`].)
    pub fn append_all(
        &self,
        events: &[(&Record, Option<u64>)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        let mut records = Vec::with_capacity(events.len());
        let mut delayed = Vec::new();
        for &(r, due) in events {
            match due.filter(|&d| d > now_ms) {
                Some(due) => delayed.push((due, ser(r))),
                None => records.push(ser(r)),
            }
        }
        if !records.is_empty() {
            self.append_chunk(&records)?;
        }
        self.append_due(delayed)
    }

    /// The ready records enqueued at or after `since_ms`, newest chunks first
    /// (found by reading chunks from the newest back until one holds none).
    pub fn ready_since(&self, since_ms: u64) -> Result<Vec<Record>, StoreError> {
        let err = |e| StoreError::new("read queue", e);
        let mut out = Vec::new();
        for item in self.tree.range(vec![READY]..vec![READY + 1]).rev() {
            let (_, v) = item.map_err(err)?;
            let Ok(records) = chunk::records(&v) else {
                continue;
            };
            let before = out.len();
            out.extend(
                records
                    .iter()
                    .filter_map(|b| serde_json::from_slice::<Record>(b).ok())
                    .filter(|r| r.enqueued_ms >= since_ms),
            );
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// Insert serialised records into the scheduled range, each under its due
    /// time (delayed delivery, from [`Queue::append_all`]); one seq names them
    /// all (identity: seq + index + count). The caller holds `state.append`.
    pub(super) fn append_due(&self, records: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let err = |e| StoreError::new("enqueue", e);
        let seq = self.db.generate_id().map_err(err)?;
        let count = records.len() as u32;
        for (index, (due_ms, bytes)) in records.into_iter().enumerate() {
            let mut k = key(DELAYED, &[due_ms, seq]);
            k.extend_from_slice(&(index as u32).to_be_bytes());
            k.extend_from_slice(&count.to_be_bytes());
            self.tree.insert(k, bytes).map_err(err)?;
            self.state.delayed.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Append serialised records as one chunk; returns its seq. The caller holds
    /// `state.append`, so chunks become visible in seq order.
    pub(super) fn append_chunk(&self, records: &[Vec<u8>]) -> Result<u64, StoreError> {
        let seq = self
            .db
            .generate_id()
            .map_err(|e| StoreError::new("enqueue", e))?;
        self.tree
            .insert(chunk::chunk_key(seq), chunk::encode(records))
            .map_err(|e| StoreError::new("enqueue", e))?;
        self.state
            .ready
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(seq)
    }

    /// Which records of chunk `seq` are settled.
    fn settled(&self, seq: u64) -> Result<Settled, StoreError> {
        let v = self
            .tree
            .get(chunk::settled_key(seq))
            .map_err(|e| StoreError::new("read queue", e))?;
        Ok(v.map(|v| Settled::from_bytes(&v)).unwrap_or_default())
    }

    fn is_partial(&self, seq: u64) -> bool {
        self.state
            .partial
            .lock()
            .map(|p| p.contains(&seq))
            .unwrap_or(true)
    }

    /// The record under a leased key (a chunk entry or a retry), if it is still
    /// there and unsettled.
    pub(super) fn read(&self, k: &[u8]) -> Result<Option<Record>, StoreError> {
        let err = |e| StoreError::new("read queue", e);
        let bytes = match Entry::parse(k) {
            Some(e) => {
                let Some(v) = self.tree.get(chunk::chunk_key(e.seq)).map_err(err)? else {
                    return Ok(None);
                };
                if self.settled(e.seq)?.has(e.index) {
                    return Ok(None);
                }
                let records = chunk::records(&v).map_err(|e| StoreError::new("read queue", e))?;
                match records.get(e.index as usize) {
                    Some(r) => r.to_vec(),
                    None => return Ok(None),
                }
            }
            None => match self.tree.get(k).map_err(err)? {
                Some(v) => v.to_vec(),
                None => return Ok(None),
            },
        };
        Ok(serde_json::from_slice(&bytes).ok())
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
        let err = |e| StoreError::new("lease", e);
        let mut out = Vec::new();
        let due_end = key(DELAYED, &[now_ms.saturating_add(1)]);
        for item in self.tree.range(vec![DELAYED]..due_end) {
            if out.len() >= max {
                return Ok(out);
            }
            let (k, v) = item.map_err(err)?;
            if in_flight.contains(k.as_ref()) {
                continue;
            }
            self.take(&k, &v, &mut out)?;
        }
        // Ready chunks from the one holding the cursor on; in that chunk, only the
        // records after it.
        let after = ready_after.and_then(Entry::parse);
        let start = after.map_or(vec![READY], |e| chunk::chunk_key(e.seq));
        for item in self.tree.range(start..vec![READY + 1]) {
            if out.len() >= max {
                return Ok(out);
            }
            let (k, v) = item.map_err(err)?;
            let seq = seq_of(&k);
            let records = match chunk::records(&v) {
                Ok(r) => r,
                Err(e) => {
                    // A chunk this version cannot read must not block the queue.
                    tracing::error!(error = %e, "Unreadable chunk moved to dead letters.");
                    self.quarantine_chunk(seq, &v, &e)?;
                    continue;
                }
            };
            let settled = if self.is_partial(seq) {
                self.settled(seq)?
            } else {
                Settled::default()
            };
            let first = match after {
                Some(e) if e.seq == seq => e.index.saturating_add(1),
                _ => 0,
            };
            let count = records.len() as u32;
            for (index, bytes) in records.iter().enumerate().skip(first as usize) {
                let index = index as u32;
                if settled.has(index) {
                    continue;
                }
                let entry = Entry { seq, index, count }.key();
                if in_flight.contains(&entry) {
                    continue;
                }
                if out.len() >= max {
                    return Ok(out);
                }
                self.take(&entry, bytes, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Lease the record `bytes` under `k`, or move it to the dead letters if this
    /// version cannot read it (it must not block the queue).
    fn take(&self, k: &[u8], bytes: &[u8], out: &mut Vec<Leased>) -> Result<(), StoreError> {
        match serde_json::from_slice::<Record>(bytes) {
            Ok(record) => out.push(Leased {
                key: k.to_vec(),
                record,
            }),
            Err(e) => {
                tracing::error!(error = %e, "Unreadable record moved to dead letters.");
                self.settle(vec![Settlement::DeadLetter {
                    key: k.to_vec(),
                    letter: unreadable(bytes, &e.to_string()),
                }])?;
            }
        }
        Ok(())
    }

    /// A whole chunk that cannot be split into records becomes one dead letter.
    fn quarantine_chunk(&self, seq: u64, v: &[u8], error: &str) -> Result<(), StoreError> {
        let err = |e| StoreError::new("quarantine", e);
        let id = self.db.generate_id().map_err(err)?;
        let mut letter = unreadable(v, error);
        letter.seq = id;
        let unsettled =
            u64::from(chunk::count(v)).saturating_sub(u64::from(self.settled(seq)?.count()));
        let mut batch = sled::Batch::default();
        batch.remove(chunk::chunk_key(seq));
        batch.remove(chunk::settled_key(seq));
        batch.insert(key(DEAD, &[id]), ser(&letter));
        self.tree.apply_batch(batch).map_err(err)?;
        if let Ok(mut partial) = self.state.partial.lock() {
            partial.remove(&seq);
        }
        add(&self.state.ready, -(unsettled as i64));
        add(&self.state.dead, 1);
        Ok(())
    }

    /// The due time of the earliest scheduled event (a retry or a delayed
    /// delivery) that is not in `in_flight`.
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
        let err = |e| StoreError::new("settle", e);
        let mut totals = self.state.totals.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = *totals;
        let mut batch = sled::Batch::default();
        let (mut ready, mut delayed, mut dead) = (0i64, 0i64, 0i64);
        // Per chunk, the indexes settled now.
        let mut in_chunks: BTreeMap<(u64, u32), Vec<u32>> = BTreeMap::new();
        let mut leave = |k: &[u8], batch: &mut sled::Batch| {
            match Entry::parse(k) {
                Some(e) => in_chunks.entry((e.seq, e.count)).or_default().push(e.index),
                None => batch.remove(k),
            }
            match k.first() {
                Some(&READY) => ready -= 1,
                Some(&DELAYED) => delayed -= 1,
                _ => {}
            }
        };
        for outcome in outcomes {
            match outcome {
                Settlement::Delivered { key } => {
                    leave(&key, &mut batch);
                    next.delivered += 1;
                }
                Settlement::Retry {
                    key: k,
                    record,
                    due_ms,
                } => {
                    leave(&k, &mut batch);
                    let mut retry_key = key(DELAYED, &[due_ms]);
                    retry_key.extend_from_slice(identity(&k));
                    batch.insert(retry_key, ser(&record));
                    next.retried += 1;
                }
                Settlement::DeadLetter { key: k, mut letter } => {
                    leave(&k, &mut batch);
                    letter.seq = self.db.generate_id().map_err(err)?;
                    batch.insert(key(DEAD, &[letter.seq]), ser(&letter));
                    dead += 1;
                    next.dead_lettered += 1;
                }
                Settlement::PlanDone { key } => batch.remove(key),
            }
        }
        delayed += next.retried.saturating_sub(totals.retried) as i64;
        let mut partial = self.state.partial.lock().unwrap_or_else(|p| p.into_inner());
        let mut whole = Vec::new();
        for ((seq, count), indexes) in in_chunks {
            // Each leased entry is settled once, so as many indexes as records
            // means all of them, none settled before: there is no bitmap.
            if indexes.len() as u32 >= count {
                batch.remove(chunk::chunk_key(seq));
                continue;
            }
            let mut settled = self.settled(seq)?;
            for i in indexes {
                settled.set(i);
            }
            if settled.count() >= count {
                batch.remove(chunk::chunk_key(seq));
                batch.remove(chunk::settled_key(seq));
                whole.push(seq);
            } else {
                batch.insert(chunk::settled_key(seq), settled.bytes());
                // Known before the bitmap is written: a lease never misses one.
                partial.insert(seq);
            }
        }
        batch.insert(counter_key("delivered"), &next.delivered.to_be_bytes());
        batch.insert(counter_key("retried"), &next.retried.to_be_bytes());
        batch.insert(
            counter_key("dead_lettered"),
            &next.dead_lettered.to_be_bytes(),
        );
        self.tree.apply_batch(batch).map_err(err)?;
        for seq in whole {
            partial.remove(&seq);
        }
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

    /// The newest dead letter, if any (what a summary of new ones quotes).
    pub fn last_dead_letter(&self) -> Result<Option<DeadLetter>, StoreError> {
        let last = self.tree.range(vec![DEAD]..vec![DEAD + 1]).next_back();
        match last {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(|e| StoreError::new("read dead letters", e))?;
                Ok(serde_json::from_slice(&v).ok())
            }
        }
    }

    /// Move dead letters back to the ready queue with a fresh attempt history;
    /// `only` limits it to those seqs. Returns how many moved.
    pub fn redrive(&self, only: Option<&[u64]>) -> Result<u64, StoreError> {
        let err = |e| StoreError::new("redrive", e);
        let mut batch = sled::Batch::default();
        let mut records = Vec::new();
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        for item in self.tree.scan_prefix([DEAD]) {
            let (k, v) = item.map_err(err)?;
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
            batch.remove(k);
            records.push(ser(&record));
        }
        if records.is_empty() {
            return Ok(0);
        }
        let seq = self.db.generate_id().map_err(err)?;
        batch.insert(chunk::chunk_key(seq), chunk::encode(&records));
        self.tree.apply_batch(batch).map_err(err)?;
        let moved = records.len() as u64;
        add(&self.state.dead, -(moved as i64));
        add(&self.state.ready, moved as i64);
        Ok(moved)
    }

    /// Whether delivery from this queue is paused (see [`Queue::set_paused`]).
    pub fn paused(&self) -> Result<bool, StoreError> {
        let v = self
            .tree
            .get(flag_key("paused"))
            .map_err(|e| StoreError::new("read queue", e))?;
        Ok(v.is_some_and(|v| v.first() == Some(&1)))
    }

    /// Pause or resume delivery from this queue; kept across restarts once
    /// committed. Events still queue while it is paused.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.tree
            .insert(flag_key("paused"), &[u8::from(paused)][..])
            .map_err(|e| StoreError::new("pause", e))?;
        Ok(())
    }

    /// Events waiting (ready or due later): [`QueueStats::depth`] without the totals.
    pub fn depth(&self) -> u64 {
        self.state.ready.load(Ordering::Relaxed) + self.state.delayed.load(Ordering::Relaxed)
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

/// Remove the de-duplication entries earlier versions kept in each queue (`k` +
/// event key, `t` + ms + event key); the keys now live in [`super::replays`].
fn drop_old_dedupe_keys(tree: &sled::Tree) -> Result<(), StoreError> {
    let err = |e| StoreError::new("open queue", e);
    for prefix in [b'k', b't'] {
        let mut batch = sled::Batch::default();
        let mut any = false;
        for k in tree.scan_prefix([prefix]).keys() {
            batch.remove(k.map_err(err)?);
            any = true;
        }
        if any {
            tree.apply_batch(batch).map_err(err)?;
        }
    }
    Ok(())
}

fn flag_key(name: &str) -> Vec<u8> {
    let mut k = vec![FLAG];
    k.extend_from_slice(name.as_bytes());
    k
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

/// What a retry key keeps of the key an event had: all but the `r` of a chunk
/// entry's key, whatever follows the due time of a retry's.
fn identity(k: &[u8]) -> &[u8] {
    match k.first() {
        Some(&DELAYED) => k.get(9..).unwrap_or_default(),
        _ => k.get(1..).unwrap_or_default(),
    }
}

/// A dead letter for stored bytes this version cannot read, kept as text.
fn unreadable(bytes: &[u8], error: &str) -> DeadLetter {
    let text = serde_json::to_string(&String::from_utf8_lossy(bytes)).unwrap_or_default();
    // A JSON string is valid JSON; `null` only if that ever failed.
    let raw = serde_json::value::RawValue::from_string(text)
        .unwrap_or_else(|_| serde_json::value::RawValue::NULL.to_owned());
    DeadLetter {
        seq: 0,
        dead_lettered_ms: crate::now_ms(),
        reason: format!("unreadable record: {error}"),
        last_status: None,
        body_excerpt: None,
        record: Record::new(raw, 0),
    }
}
