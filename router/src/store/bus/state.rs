//! What each subscription of a bus log holds, rebuilt from the log at open and
//! kept up to date by applying each record as it is appended.
//!
//! Memory per subscription is its ack bitmap (a bit per event between its floor
//! and the furthest one settled), one entry per scheduled event and per dead
//! letter (their records stay in the log), and the open batch plans: not a copy
//! of any event.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::journal::{Op, Payload, Slot, Totals};
use crate::store::log::acks::Acks;

/// One subscription's state.
#[derive(Debug, Default)]
pub(crate) struct Sub {
    /// Ready events settled (or never this subscription's), by seq.
    pub acks: Acks,
    /// Ready events not settled.
    pub ready: u64,
    /// Scheduled events: (due ms, origin, id of the record holding them). The
    /// origin (the seq the event first had in this subscription, kept through
    /// its retries) orders events due at the same time as they came.
    pub due: BTreeSet<(u64, u64, u64)>,
    /// id -> (due ms, origin), to find a scheduled event by its id.
    pub due_at: HashMap<u64, (u64, u64)>,
    /// Ids of the dead letters held.
    pub dead: BTreeSet<u64>,
    /// Open batch plans: id -> their slots.
    pub plans: BTreeMap<u64, Vec<Slot>>,
    pub paused: bool,
    /// The id of the record that set `paused`, while it is set.
    pub pause_id: Option<u64>,
    pub totals: Totals,
}

impl Sub {
    /// A subscription that starts at `floor`: nothing below it is its.
    pub fn new(floor: u64) -> Self {
        Self {
            acks: Acks::new(floor),
            ..Self::default()
        }
    }

    /// The lowest seq this subscription still needs kept in the log.
    pub fn needs_from(&self) -> u64 {
        let mut low = self.acks.floor();
        let pinned = [
            self.due_at.keys().min().copied(),
            self.dead.first().copied(),
            self.plans.keys().next().copied(),
            self.pause_id,
        ];
        for id in pinned.into_iter().flatten() {
            low = low.min(id);
        }
        low
    }

    /// End `slot`: a ready event is settled, a scheduled one leaves the
    /// schedule. False when it had already ended.
    fn end(&mut self, slot: Slot) -> bool {
        match slot {
            Slot::Ready(seq) => {
                let was = self.acks.settle(seq);
                if was {
                    self.ready = self.ready.saturating_sub(1);
                }
                was
            }
            Slot::Due(id) => match self.due_at.remove(&id) {
                Some((due, origin)) => self.due.remove(&(due, origin, id)),
                None => false,
            },
        }
    }
}

/// Every subscription of a bus by id; ids of subscriptions no longer
/// configured are absent and their records ignored.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub subs: HashMap<u16, Sub>,
}

impl State {
    /// Apply the record `seq` holding `payload`.
    pub fn apply(&mut self, seq: u64, payload: &Payload<'_>) {
        match payload {
            Payload::Event { subs, .. } => {
                for (id, sub) in &mut self.subs {
                    if subs.contains(id) {
                        if !sub.acks.is_settled(seq) {
                            sub.ready += 1;
                        }
                    } else {
                        sub.acks.settle(seq);
                    }
                }
            }
            Payload::Journal(op) => {
                // A journal record is no subscription's ready event.
                for sub in self.subs.values_mut() {
                    sub.acks.settle(seq);
                }
                if let Some(sub) = self.subs.get_mut(&op.sub()) {
                    apply_op(sub, seq, op);
                }
            }
        }
    }
}

fn apply_op(sub: &mut Sub, id: u64, op: &Op) {
    match op {
        Op::Done {
            slots,
            plans,
            totals,
            ..
        } => {
            for &slot in slots {
                sub.end(slot);
            }
            for plan in plans {
                sub.plans.remove(plan);
            }
            sub.totals = *totals;
        }
        Op::Due {
            from,
            due_ms,
            totals,
            ..
        } => {
            let origin = match from {
                Some(Slot::Ready(seq)) => *seq,
                Some(Slot::Due(prev)) => sub.due_at.get(prev).map_or(id, |&(_, o)| o),
                None => id,
            };
            if let Some(from) = from {
                sub.end(*from);
            }
            sub.due.insert((*due_ms, origin, id));
            sub.due_at.insert(id, (*due_ms, origin));
            sub.totals = *totals;
        }
        Op::Dead {
            from,
            totals,
            replaces,
            ..
        } => {
            if let Some(from) = from {
                sub.end(*from);
            }
            if let Some(old) = replaces {
                sub.dead.remove(old);
            }
            sub.dead.insert(id);
            sub.totals = *totals;
        }
        Op::Redrive { ids, .. } => {
            for dead in ids {
                sub.dead.remove(dead);
            }
        }
        Op::Pause { paused, .. } => {
            sub.paused = *paused;
            sub.pause_id = paused.then_some(id);
        }
        Op::Plan { slots, .. } => {
            sub.plans.insert(id, slots.clone());
        }
    }
}
