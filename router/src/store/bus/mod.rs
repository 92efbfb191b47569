//! One bus's queues on one event log: the store that replaces a sled tree per
//! subscription (DESIGN.md, "The store").
//!
//! - An event is appended once, naming the subscriptions that take it (see
//!   [`journal`]); each subscription holds sequence numbers into the log, an ack
//!   floor and a bitmap (see [`state`]).
//! - What a subscription does with its events (delivered, scheduled for a
//!   retry or a later time, dead-lettered, redriven, planned into a batch,
//!   paused) is a journal record in the same log, so it is made durable by the
//!   same group commit as the events and recovered with them: opening replays
//!   the log's records in order through the one function that applies them at
//!   run time, [`state::State::apply`].
//! - A scheduled event and a dead letter live in the journal record that put
//!   them there (with the record as it is then), so the event they came from
//!   can be released; the record's seq is their id.
//! - Segments go once no subscription needs anything in them
//!   ([`state::Sub::needs_from`]).
//!
//! Leased keys, as the dispatcher sees them: `r` + seq (a ready event) or `d` +
//! due ms + id (a scheduled one), big-endian, so they order as the old store's
//! did and a plan can name them across a restart.

pub(crate) mod journal;
pub(crate) mod state;
mod subs;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use journal::{Op, Payload, Slot};
use state::{State, Sub};
use subs::{assign_ids, read_starts, write_subs};

use super::log::{Append, Log};
use super::queue::{QueueStats, Settlement};
use super::record::{DeadLetter, Record};
use super::{Leased, StoreError};

const READY: u8 = b'r';
const DUE: u8 = b'd';
const PLAN: u8 = b'p';

/// A retry due sooner than this is not copied out of an old segment.
const COMPACT_MARGIN_MS: u64 = 5_000;

/// Records read per step when the log is replayed at open.
const REPLAY_STEP: usize = 4096;

/// An event to publish: its record, de-duplication key, due time (`None`: now)
/// and the ids of the subscriptions that take it.
pub type BusEvent<'a> = (&'a Record, [u8; 16], Option<u64>, &'a [u16]);

/// A bus's event log and the state of its subscriptions.
pub struct BusLog {
    log: Log,
    /// Subscription name -> id.
    ids: HashMap<String, u16>,
    state: Mutex<State>,
    /// Journal records appended and not yet durable, by seq: a retry or dead
    /// letter is leased or listed from here until the log can serve it, so a
    /// settlement does not wait for a commit to take effect. (Events are only
    /// ever leased once durable.)
    fresh: Mutex<BTreeMap<u64, Vec<u8>>>,
}

fn slot_key(slot: Slot, due_ms: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    match slot {
        Slot::Ready(seq) => {
            k.push(READY);
            k.extend_from_slice(&seq.to_be_bytes());
        }
        Slot::Due(id) => {
            k.push(DUE);
            k.extend_from_slice(&due_ms.to_be_bytes());
            k.extend_from_slice(&id.to_be_bytes());
        }
    }
    k
}

/// The key of plan `id`: `p` + id, big-endian.
fn plan_key(id: u64) -> Vec<u8> {
    let mut key = vec![PLAN];
    key.extend_from_slice(&id.to_be_bytes());
    key
}

fn u64_at(k: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = k.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

fn slot_of(key: &[u8]) -> Option<Slot> {
    match *key.first()? {
        READY if key.len() == 9 => Some(Slot::Ready(u64_at(key, 1)?)),
        DUE if key.len() == 17 => Some(Slot::Due(u64_at(key, 9)?)),
        _ => None,
    }
}

fn bad(operation: &'static str, why: impl std::fmt::Display) -> StoreError {
    StoreError::new(operation, why)
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Plain structs: serialising them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl BusLog {
    /// Open the log in `dir` for subscriptions `names` (new ones start at the
    /// log's end), replaying it.
    pub fn open(dir: &Path, names: &[&str], segment_bytes: u64) -> Result<Self, StoreError> {
        let log = Log::open(dir, segment_bytes)?;
        let ids = assign_ids(dir, names)?;
        // A subscription added after the log began takes nothing before it:
        // its floor is where it was added, kept in the subscriptions file.
        // Subscriptions no longer configured keep their id there (never reused)
        // and nothing here: their records are ignored and hold no segment.
        let starts = read_starts(dir)?;
        let known: HashMap<u16, Sub> = names
            .iter()
            .map(|name| {
                let start = starts.get(*name).copied().unwrap_or_else(|| log.durable());
                (ids[*name], Sub::new(start.max(log.first())))
            })
            .collect();
        write_subs(dir, &ids, &starts, &known)?;
        let mut state = State { subs: known };
        let mut seq = log.first();
        loop {
            let entries = log.read(seq, REPLAY_STEP, 16 << 20)?;
            let Some(last) = entries.last() else { break };
            seq = last.seq + 1;
            for e in &entries {
                let payload = journal::decode(&e.data)
                    .map_err(|why| bad("open bus log", format!("record {}: {why}", e.seq)))?;
                state.apply(e.seq, &payload);
            }
        }
        Ok(Self {
            log,
            ids,
            state: Mutex::new(state),
            fresh: Mutex::new(BTreeMap::new()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of subscription `name`.
    pub fn id(&self, name: &str) -> Result<u16, StoreError> {
        self.ids
            .get(name)
            .copied()
            .ok_or_else(|| bad("bus log", format!("no subscription {name}")))
    }

    /// Append `payloads` (time `now_ms`, de-duplication key `keys[i]`) and
    /// apply them, under the state lock so state changes in seq order. Not
    /// durable until [`BusLog::sync`].
    fn append(
        &self,
        state: &mut State,
        payloads: &[(Vec<u8>, [u8; 16])],
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        let appends: Vec<Append<'_>> = payloads
            .iter()
            .map(|(data, key)| Append {
                key: *key,
                time_ms: now_ms,
                data,
            })
            .collect();
        // Decoded before anything is appended: a record that would not decode
        // at open must not be written.
        let decoded = payloads
            .iter()
            .map(|(data, _)| journal::decode(data).map_err(|why| bad("append", why)))
            .collect::<Result<Vec<_>, _>>()?;
        let seqs = self.log.append(&appends)?;
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock a sync takes to drop what it made durable: a record a
        // sync already wrote is read from the log, not kept here for ever.
        let durable = self.log.durable();
        for ((seq, p), (data, _)) in seqs.clone().zip(&decoded).zip(payloads) {
            state.apply(seq, p);
            let read_back = matches!(
                p,
                Payload::Journal(Op::Due { .. } | Op::Dead { .. } | Op::Plan { .. })
            );
            if read_back && seq >= durable {
                fresh.insert(seq, data.clone());
            }
        }
        Ok(seqs.start)
    }

    /// Append events, each (record, de-duplication key, due ms, subscription
    /// ids): one record per event for every subscription it is ready for, one
    /// scheduled record per subscription for an event due after `now_ms`.
    pub fn publish(&self, events: &[BusEvent<'_>], now_ms: u64) -> Result<(), StoreError> {
        let mut payloads = Vec::with_capacity(events.len());
        let mut state = self.state();
        for &(record, key, due, subs) in events {
            match due.filter(|&d| d > now_ms) {
                None => payloads.push((journal::event(subs, &to_json(record)), key)),
                Some(due_ms) => {
                    for &sub in subs {
                        let totals = state.subs.get(&sub).map(|s| s.totals).unwrap_or_default();
                        let op = Op::Due {
                            sub,
                            from: None,
                            due_ms,
                            record: record.clone(),
                            totals,
                        };
                        payloads.push((journal::journal(&op), key));
                    }
                }
            }
        }
        self.append(&mut state, &payloads, now_ms).map(|_| ())
    }

    /// Write and fsync what was appended (the committer); then delete the
    /// segments no subscription needs.
    pub fn sync(&self) -> Result<(), StoreError> {
        let durable = self.log.sync()?;
        {
            let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
            *fresh = fresh.split_off(&durable);
        }
        let floor = {
            let state = self.state();
            state
                .subs
                .values()
                .map(Sub::needs_from)
                .min()
                .unwrap_or_else(|| self.log.durable())
        };
        self.log.delete_before(floor)?;
        self.compact()
    }

    /// When the oldest segment is held only by records that pin it (a retry
    /// due later, a dead letter, a pause), copy them to the log's end so one
    /// long-lived record does not keep every segment after it on disk. The
    /// copies are durable with the next round, and only then does the segment
    /// go (the floor above follows the state, which names the copies).
    /// Retries due within [`COMPACT_MARGIN_MS`] are left: they are about to be
    /// delivered, and a leased one must keep its id.
    fn compact(&self) -> Result<(), StoreError> {
        let bases = self.log.segment_bases();
        let (Some(&first), Some(&second)) = (bases.first(), bases.get(1)) else {
            return Ok(());
        };
        let now = crate::now_ms();
        let mut state = self.state();
        let acked = state.subs.values().map(|s| s.acks.floor()).min();
        if acked.is_none_or(|f| f < second) {
            return Ok(());
        }
        let pinned = first..second;
        let mut copies = Vec::new();
        for (&sub, s) in &state.subs {
            for (&id, &(due, _)) in &s.due_at {
                if pinned.contains(&id) && due > now + COMPACT_MARGIN_MS {
                    if let Some(Op::Due { record, .. }) = self.op_at(id)? {
                        let (from, totals) = (Some(Slot::Due(id)), s.totals);
                        copies.push(Op::Due {
                            sub,
                            from,
                            due_ms: due,
                            record,
                            totals,
                        });
                    }
                }
            }
            for &id in s.dead.range(pinned.clone()) {
                if let Some(Op::Dead { letter, .. }) = self.op_at(id)? {
                    let (from, replaces, totals) = (None, Some(id), s.totals);
                    copies.push(Op::Dead {
                        sub,
                        from,
                        letter,
                        totals,
                        replaces,
                    });
                }
            }
            if s.pause_id.is_some_and(|id| pinned.contains(&id)) {
                copies.push(Op::Pause { sub, paused: true });
            }
        }
        if copies.is_empty() {
            return Ok(());
        }
        let payloads: Vec<_> = copies
            .iter()
            .map(|op| (journal::journal(op), [0; 16]))
            .collect();
        self.append(&mut state, &payloads, now).map(|_| ())
    }

    /// Read the record `seq`: durable, or a journal record not yet durable.
    fn payload_at(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(data) = self
            .fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&seq)
        {
            return Ok(Some(data.clone()));
        }
        Ok(self
            .log
            .read(seq, 1, 0)?
            .into_iter()
            .find(|e| e.seq == seq)
            .map(|e| e.data))
    }

    /// The record of scheduled event or dead letter `id`: its journal op.
    fn op_at(&self, id: u64) -> Result<Option<Op>, StoreError> {
        let Some(data) = self.payload_at(id)? else {
            return Ok(None);
        };
        match journal::decode(&data) {
            Ok(Payload::Journal(op)) => Ok(Some(op)),
            Ok(Payload::Event { .. }) => Err(bad("read bus log", format!("{id} is an event"))),
            Err(why) => Err(bad("read bus log", why)),
        }
    }

    /// Up to `max` events of `sub` to deliver: scheduled ones due by `now_ms`
    /// (earliest first), then ready ones (oldest first) after the key
    /// `ready_after`. Keys in `in_flight` are skipped. Only durable records are
    /// leased.
    pub fn lease(
        &self,
        sub: u16,
        max: usize,
        now_ms: u64,
        in_flight: &HashSet<Vec<u8>>,
        ready_after: Option<&[u8]>,
    ) -> Result<Vec<Leased>, StoreError> {
        let (due, floor) = {
            let state = self.state();
            let Some(s) = state.subs.get(&sub) else {
                return Ok(Vec::new());
            };
            let due: Vec<(u64, u64)> = s
                .due
                .iter()
                .take_while(|(d, _, _)| *d <= now_ms)
                .filter(|&&(d, _, id)| !in_flight.contains(&slot_key(Slot::Due(id), d)))
                .take(max)
                .map(|&(d, _, id)| (d, id))
                .collect();
            (due, s.acks.floor())
        };
        let mut out = Vec::new();
        for (due_ms, id) in due {
            if let Some(Op::Due { record, .. }) = self.op_at(id)? {
                out.push(Leased {
                    key: slot_key(Slot::Due(id), due_ms),
                    record,
                });
            }
        }
        let after = ready_after.and_then(slot_of).and_then(|s| match s {
            Slot::Ready(seq) => Some(seq + 1),
            Slot::Due(_) => None,
        });
        let mut seq = after.unwrap_or(floor).max(floor);
        while out.len() < max {
            let entries = self.log.read(seq, max.max(64), 4 << 20)?;
            let Some(last) = entries.last() else { break };
            seq = last.seq + 1;
            for e in entries {
                let Ok(Payload::Event { subs, record }) = journal::decode(&e.data) else {
                    continue;
                };
                if !subs.contains(&sub) {
                    continue;
                }
                let key = slot_key(Slot::Ready(e.seq), 0);
                let settled = self
                    .state()
                    .subs
                    .get(&sub)
                    .is_none_or(|s| s.acks.is_settled(e.seq));
                if in_flight.contains(&key) || settled {
                    continue;
                }
                match serde_json::from_slice(record) {
                    Ok(record) => out.push(Leased { key, record }),
                    Err(why) => {
                        // A record this version cannot read must not block the queue.
                        tracing::error!(seq = e.seq, error = %why, "Unreadable record moved to dead letters.");
                        let letter = unreadable(record, &why.to_string());
                        self.settle(sub, vec![Settlement::DeadLetter { key, letter }])?;
                    }
                }
                if out.len() >= max {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Append an event record of raw bytes for `subs` (tests: what a later
    /// version might have written).
    #[cfg(test)]
    pub(crate) fn append_raw(&self, subs: &[u16], record: &[u8]) -> Result<(), StoreError> {
        let mut state = self.state();
        self.append(&mut state, &[(journal::event(subs, record), [0; 16])], 0)
            .map(|_| ())
    }

    /// The due time of the earliest scheduled event of `sub` not in `in_flight`.
    pub fn next_due_ms(&self, sub: u16, in_flight: &HashSet<Vec<u8>>) -> Option<u64> {
        let state = self.state();
        state
            .subs
            .get(&sub)?
            .due
            .iter()
            .find_map(|&(d, _, id)| (!in_flight.contains(&slot_key(Slot::Due(id), d))).then_some(d))
    }

    /// Apply outcomes of `sub`'s leased events, in one round.
    pub fn settle(&self, sub: u16, outcomes: Vec<Settlement>) -> Result<(), StoreError> {
        let mut state = self.state();
        let Some(s) = state.subs.get(&sub) else {
            return Ok(());
        };
        let mut totals = s.totals;
        let mut done = Vec::new();
        let mut plans = Vec::new();
        let mut ops = Vec::new();
        let slot = |key: &[u8]| slot_of(key).ok_or_else(|| bad("settle", "not a leased key"));
        for outcome in outcomes {
            match outcome {
                Settlement::Delivered { key } => {
                    done.push(slot(&key)?);
                    totals.delivered += 1;
                }
                Settlement::Retry {
                    key,
                    record,
                    due_ms,
                } => {
                    totals.retried += 1;
                    ops.push(Op::Due {
                        sub,
                        from: Some(slot(&key)?),
                        due_ms,
                        record,
                        totals,
                    });
                }
                Settlement::DeadLetter { key, letter } => {
                    totals.dead_lettered += 1;
                    ops.push(Op::Dead {
                        sub,
                        from: Some(slot(&key)?),
                        letter,
                        totals,
                        replaces: None,
                    });
                }
                Settlement::PlanDone { key } => {
                    if let (Some(&PLAN), Some(id)) = (key.first(), u64_at(&key, 1)) {
                        plans.push(id);
                    }
                }
            }
        }
        if !done.is_empty() || !plans.is_empty() {
            ops.push(Op::Done {
                sub,
                slots: done,
                plans,
                totals,
            });
        }
        let payloads: Vec<_> = ops
            .iter()
            .map(|op| (journal::journal(op), [0; 16]))
            .collect();
        self.append(&mut state, &payloads, crate::now_ms())
            .map(|_| ())
    }

    /// Put `record` straight into `sub`'s dead letters with `reason`.
    pub fn reject(
        &self,
        sub: u16,
        record: Record,
        reason: String,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let mut totals = state.subs.get(&sub).map(|s| s.totals).unwrap_or_default();
        totals.dead_lettered += 1;
        let letter = DeadLetter {
            seq: 0,
            dead_lettered_ms: now_ms,
            reason,
            last_status: None,
            body_excerpt: None,
            record,
        };
        let op = Op::Dead {
            sub,
            from: None,
            letter,
            totals,
            replaces: None,
        };
        self.append(&mut state, &[(journal::journal(&op), [0; 16])], now_ms)
            .map(|_| ())
    }

    /// Dead letters of `sub`, oldest first, after id `after`, at most `limit`.
    pub fn dead_letters(
        &self,
        sub: u16,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let ids: Vec<u64> = {
            let state = self.state();
            let Some(s) = state.subs.get(&sub) else {
                return Ok(Vec::new());
            };
            let from = after.map_or(0, |a| a.saturating_add(1));
            s.dead.range(from..).take(limit).copied().collect()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.dead_letter_at(id)?);
        }
        Ok(out)
    }

    /// Dead letter `id`, addressed by its id.
    fn dead_letter_at(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        Ok(match self.op_at(id)? {
            Some(Op::Dead { mut letter, .. }) => {
                letter.seq = id;
                Some(letter)
            }
            _ => None,
        })
    }

    /// The newest dead letter of `sub`, if any.
    pub fn last_dead_letter(&self, sub: u16) -> Result<Option<DeadLetter>, StoreError> {
        let last = {
            let state = self.state();
            state.subs.get(&sub).and_then(|s| s.dead.last().copied())
        };
        let Some(id) = last else { return Ok(None) };
        self.dead_letter_at(id)
    }

    /// (de-duplication key, time) of the durable records appended at or after
    /// `since_ms` in the last two segments (where a crash can have left events
    /// whose keys the key log lost; see [`super::replays`]). Zero keys are left
    /// out.
    pub fn recent_keys(&self, since_ms: u64) -> Result<Vec<(u128, u64)>, StoreError> {
        let bases = self.log.segment_bases();
        let from = bases
            .iter()
            .rev()
            .nth(1)
            .or(bases.last())
            .copied()
            .unwrap_or(0);
        let mut out = Vec::new();
        let mut seq = from;
        loop {
            let entries = self.log.read(seq, REPLAY_STEP, 16 << 20)?;
            let Some(last) = entries.last() else { break };
            seq = last.seq + 1;
            out.extend(
                entries
                    .iter()
                    .filter(|e| e.time_ms >= since_ms && e.key != [0; 16])
                    .map(|e| (u128::from_be_bytes(e.key), e.time_ms)),
            );
        }
        Ok(out)
    }

    /// Move `sub`'s dead letters (those in `only`, or all) back to its ready
    /// events with a fresh attempt history; returns how many moved.
    pub fn redrive(&self, sub: u16, only: Option<&[u64]>) -> Result<u64, StoreError> {
        let ids: Vec<u64> = {
            let state = self.state();
            let Some(s) = state.subs.get(&sub) else {
                return Ok(0);
            };
            s.dead
                .iter()
                .filter(|id| only.is_none_or(|o| o.contains(id)))
                .copied()
                .collect()
        };
        let mut payloads = vec![(
            journal::journal(&Op::Redrive {
                sub,
                ids: ids.clone(),
            }),
            [0; 16],
        )];
        for &id in &ids {
            if let Some(Op::Dead { letter, .. }) = self.op_at(id)? {
                let mut record = letter.record;
                record.attempts.clear();
                record.last_error = None;
                record.enqueued_ms = crate::now_ms();
                payloads.push((journal::event(&[sub], &to_json(&record)), [0; 16]));
            }
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let mut state = self.state();
        // Redriven by another call meanwhile: those are gone from the set.
        if let Some(s) = state.subs.get(&sub) {
            if ids.iter().any(|id| !s.dead.contains(id)) {
                return Err(bad("redrive", "dead letters changed meanwhile; try again"));
            }
        }
        self.append(&mut state, &payloads, crate::now_ms())?;
        Ok(ids.len() as u64)
    }

    /// Pause or resume `sub`.
    pub fn set_paused(&self, sub: u16, paused: bool) -> Result<(), StoreError> {
        let mut state = self.state();
        let op = Op::Pause { sub, paused };
        self.append(
            &mut state,
            &[(journal::journal(&op), [0; 16])],
            crate::now_ms(),
        )
        .map(|_| ())
    }

    pub fn paused(&self, sub: u16) -> bool {
        self.state().subs.get(&sub).is_some_and(|s| s.paused)
    }

    /// Record that `keys` of `sub` (leased) form one batch; returns the plan's
    /// key. Durable with the next commit.
    pub fn plan(&self, sub: u16, keys: &[&[u8]]) -> Result<Vec<u8>, StoreError> {
        let slots = keys
            .iter()
            .map(|k| slot_of(k).ok_or_else(|| bad("plan batch", "not a leased key")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state();
        let op = Op::Plan { sub, slots };
        let id = self.append(
            &mut state,
            &[(journal::journal(&op), [0; 16])],
            crate::now_ms(),
        )?;
        Ok(plan_key(id))
    }

    /// The open plans of `sub`, oldest first, each with the events still held.
    pub fn plans(&self, sub: u16) -> Result<Vec<super::queue::Plan>, StoreError> {
        let plans: Vec<(u64, Vec<(Slot, u64)>)> = {
            let state = self.state();
            let Some(s) = state.subs.get(&sub) else {
                return Ok(Vec::new());
            };
            s.plans
                .iter()
                .map(|(&id, slots)| {
                    let held = slots
                        .iter()
                        .filter_map(|&slot| match slot {
                            Slot::Ready(seq) => (!s.acks.is_settled(seq)).then_some((slot, 0)),
                            Slot::Due(d) => s.due_at.get(&d).map(|&(due, _)| (slot, due)),
                        })
                        .collect();
                    (id, held)
                })
                .collect()
        };
        let mut out = Vec::new();
        for (id, slots) in plans {
            let mut batch = Vec::new();
            for (slot, due) in slots {
                let record = match slot {
                    Slot::Due(d) => match self.op_at(d)? {
                        Some(Op::Due { record, .. }) => record,
                        _ => continue,
                    },
                    Slot::Ready(seq) => match self.payload_at(seq)? {
                        Some(data) => match journal::decode(&data) {
                            Ok(Payload::Event { record, .. }) => serde_json::from_slice(record)
                                .map_err(|why| bad("read plans", why))?,
                            _ => continue,
                        },
                        None => continue,
                    },
                };
                batch.push(Leased {
                    key: slot_key(slot, due),
                    record,
                });
            }
            out.push((plan_key(id), batch));
        }
        Ok(out)
    }

    /// Depth and totals of `sub`.
    pub fn stats(&self, sub: u16) -> QueueStats {
        let state = self.state();
        let Some(s) = state.subs.get(&sub) else {
            return QueueStats::default();
        };
        let retrying = s.due.len() as u64;
        QueueStats {
            depth: s.ready + retrying,
            retrying,
            dead_letters: s.dead.len() as u64,
            delivered_total: s.totals.delivered,
            retried_total: s.totals.retried,
            dead_lettered_total: s.totals.dead_lettered,
        }
    }

    /// Segment files on disk and their bytes.
    pub fn disk(&self) -> (usize, u64) {
        (self.log.segment_count(), self.log.disk_bytes())
    }

    /// Journal records held in memory though the log has them already (none
    /// should be: each is dropped by the sync that writes it).
    #[cfg(test)]
    pub(crate) fn fresh_len(&self) -> usize {
        let durable = self.log.durable();
        let fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        fresh.range(..durable).count()
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
