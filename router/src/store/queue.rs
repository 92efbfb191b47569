//! One subscription's queue: its view of its bus's log (see [`super::bus`]).
//!
//! The dispatcher, the engine and the admin API see queues only through this
//! handle, as they did when each subscription had a tree of its own.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;

use super::bus::BusLog;
use super::record::{DeadLetter, Record};
use super::{Committer, StoreError};

/// Depth and totals of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Events waiting: ready plus scheduled for a later time (in-flight ones
    /// included).
    pub depth: u64,
    /// Of those, events scheduled for a later time: retries, and events published
    /// with `deliverat`/`delay` that are not due yet.
    pub retrying: u64,
    /// Events in the dead-letter list.
    pub dead_letters: u64,
    pub delivered_total: u64,
    pub retried_total: u64,
    pub dead_lettered_total: u64,
}

/// An event taken from the queue for delivery; it stays in the store until settled.
#[derive(Debug, Clone)]
pub struct Leased {
    /// Where the record lives now (see [`super::bus`] for the key's layout).
    pub key: Vec<u8>,
    pub record: Record,
}

impl Leased {
    /// Whether it came from the ready events (not from the schedule).
    pub fn is_ready(&self) -> bool {
        self.key.first() == Some(&b'r')
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

/// A batch planned before a stop: its key and its events (see
/// [`Queue::plan`]).
pub type Plan = (Vec<u8>, Vec<Leased>);

/// A queue handle. Cheap to clone.
#[derive(Clone)]
pub struct Queue {
    pub(super) bus: Arc<BusLog>,
    pub(super) id: u16,
    pub(super) commits: Committer,
}

impl Queue {
    /// The subscription's id in its bus log.
    pub(crate) fn id(&self) -> u16 {
        self.id
    }

    /// The log of the subscription's bus.
    pub(crate) fn bus(&self) -> &Arc<BusLog> {
        &self.bus
    }

    /// Append an event for this subscription alone. Not durable (nor leased)
    /// until [`super::Store::commit`] returns.
    pub fn enqueue(&self, record: &Record) -> Result<(), StoreError> {
        self.append_all(&[(record, None)], crate::now_ms())
    }

    /// Append events for this subscription alone: those due later than
    /// `now_ms` (`deliverat` / `delay`) to its schedule. Events a bus's rules
    /// match go in through [`BusLog::publish`] instead, once for all
    /// the subscriptions that take them.
    pub fn append_all(
        &self,
        events: &[(&Record, Option<u64>)],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let ids = [self.id];
        let events: Vec<_> = events
            .iter()
            .map(|&(r, due)| (r, [0u8; 16], due, &ids[..]))
            .collect();
        self.bus.publish(&events, now_ms)
    }

    /// Up to `max` events to deliver: scheduled ones that are due (earliest
    /// first), then ready ones (oldest first) after the key `ready_after` (a
    /// reader's cursor: the last ready key it leased). Keys in `in_flight` are
    /// skipped.
    pub fn lease(
        &self,
        max: usize,
        now_ms: u64,
        in_flight: &HashSet<Vec<u8>>,
        ready_after: Option<&[u8]>,
    ) -> Result<Vec<Leased>, StoreError> {
        self.bus.lease(self.id, max, now_ms, in_flight, ready_after)
    }

    /// The due time of the earliest scheduled event not in `in_flight`.
    pub fn next_due_ms(&self, in_flight: &HashSet<Vec<u8>>) -> Option<u64> {
        self.bus.next_due_ms(self.id, in_flight)
    }

    /// Apply outcomes, all in one group commit.
    pub fn settle(&self, outcomes: Vec<Settlement>) -> Result<(), StoreError> {
        self.bus.settle(self.id, outcomes)
    }

    /// Put an event straight into the dead-letter list (a source refusing a
    /// malformed record), with `reason`. Durable after the next commit.
    pub fn reject(&self, record: Record, reason: String, now_ms: u64) -> Result<(), StoreError> {
        self.bus.reject(self.id, record, reason, now_ms)
    }

    /// Wait until every write made before this call is on disk.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.commits.commit().await
    }

    /// Dead letters, oldest first, starting after `after` (an id), at most `limit`.
    pub fn dead_letters(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.bus.dead_letters(self.id, after, limit)
    }

    /// The newest dead letter, if any (what a summary of new ones quotes).
    pub fn last_dead_letter(&self) -> Result<Option<DeadLetter>, StoreError> {
        self.bus.last_dead_letter(self.id)
    }

    /// Move dead letters back to the ready events with a fresh attempt history;
    /// `only` limits it to those ids. Returns how many moved.
    pub fn redrive(&self, only: Option<&[u64]>) -> Result<u64, StoreError> {
        self.bus.redrive(self.id, only)
    }

    /// Whether delivery from this queue is paused (see [`Queue::set_paused`]).
    pub fn paused(&self) -> Result<bool, StoreError> {
        Ok(self.bus.paused(self.id))
    }

    /// Pause or resume delivery from this queue; kept across restarts once
    /// committed. Events still queue while it is paused.
    pub fn set_paused(&self, paused: bool) -> Result<(), StoreError> {
        self.bus.set_paused(self.id, paused)
    }

    /// Durably record that `keys` (leased, in flight) form one batch. Returns
    /// the plan's key, to settle with [`Settlement::PlanDone`].
    ///
    /// Why plans: most targets make a redelivered batch harmless through the
    /// event key (a row or a document is written once whatever the batch). An
    /// S3 object is different: it is named after its batch, so if a batch was
    /// uploaded and sluice crashed before settling it, the batch must be
    /// re-formed *exactly* after the restart, or some events would land in two
    /// objects. Batch sizes depend on timing (`max_wait`), so the dispatcher
    /// writes the plan and commits it before the upload, re-runs every plan
    /// left over at start, and ends a plan in the same settlement as its events.
    pub async fn plan(&self, keys: &[&[u8]]) -> Result<Vec<u8>, StoreError> {
        let plan = self.bus.plan(self.id, keys)?;
        self.commits.commit().await?;
        Ok(plan)
    }

    /// The batches planned and not settled before the last stop, oldest first,
    /// each with its events still held.
    pub fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        self.bus.plans(self.id)
    }

    /// Events waiting (ready or due later): [`QueueStats::depth`] without the totals.
    pub fn depth(&self) -> u64 {
        self.stats().depth
    }

    pub fn stats(&self) -> QueueStats {
        self.bus.stats(self.id)
    }
}
