//! What a bus log's records hold: events, and the journal of what each
//! subscription did with them.
//!
//! Every record of the log (a frame, see [`super::super::log::frame`]) has a
//! one-byte tag before its payload:
//!
//! ```text
//! 0  event    subs u16 LE, then that many subscription ids (u16 LE), then the
//!             stored record (JSON, see [`Record`])
//! 1  journal  one [`Op`] as JSON
//! ```
//!
//! An event is written once however many subscriptions take it; they hold its
//! sequence number. The journal goes in the same group commit as the writes it
//! records, so after a crash the log holds whole rounds of both: state is never
//! ahead of, or behind, the events it is about. Ops are JSON because they are few
//! beside the events (one per settled batch, one per retry or dead letter) and
//! JSON lets a later version add a field without a new format.

use serde::{Deserialize, Serialize};

use crate::store::record::{DeadLetter, Record};

const EVENT: u8 = 0;
const JOURNAL: u8 = 1;

/// Where a settled event was: a ready event (its seq) or a scheduled one (the
/// seq of the journal record that scheduled it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Slot {
    Ready(u64),
    Due(u64),
}

/// Totals of one subscription after an op, so they survive the records they
/// count being deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub delivered: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

/// One journal entry. The seq of the record holding a `Due`, `Dead`, `Plan` or
/// `Pause` op is its id: what a later op names to end it.
///
/// Externally tagged (`{"due": {...}}`): an internally tagged enum buffers its
/// fields, which the raw event JSON inside a [`Record`] cannot go through.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Op {
    /// Events of `sub` delivered (or moved on by a plan): each slot ends.
    Done {
        sub: u16,
        slots: Vec<Slot>,
        /// Batch plans ended with them.
        #[serde(default)]
        plans: Vec<u64>,
        totals: Totals,
    },
    /// An event of `sub` scheduled for `due_ms` (a retry, or a delayed
    /// delivery when `from` is `None`), with its record as it is now.
    Due {
        sub: u16,
        from: Option<Slot>,
        due_ms: u64,
        record: Record,
        totals: Totals,
    },
    /// An event of `sub` dead-lettered (from nowhere: a source's reject), or
    /// the dead letter `replaces` copied forward out of an old segment.
    Dead {
        sub: u16,
        from: Option<Slot>,
        letter: DeadLetter,
        totals: Totals,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<u64>,
    },
    /// Dead letters of `sub` put back: they end, and their records follow as
    /// events of `sub` alone in the same round.
    Redrive { sub: u16, ids: Vec<u64> },
    /// Delivery of `sub` paused or resumed; the newest one counts.
    Pause { sub: u16, paused: bool },
    /// A batch of `sub` about to be written somewhere, by its slots; ended by
    /// the `Done` that settles it.
    Plan { sub: u16, slots: Vec<Slot> },
}

impl Op {
    pub(crate) fn sub(&self) -> u16 {
        match self {
            Op::Done { sub, .. }
            | Op::Due { sub, .. }
            | Op::Dead { sub, .. }
            | Op::Redrive { sub, .. }
            | Op::Pause { sub, .. }
            | Op::Plan { sub, .. } => *sub,
        }
    }
}

/// A record's payload, decoded.
#[derive(Debug)]
pub(crate) enum Payload<'a> {
    Event { subs: Vec<u16>, record: &'a [u8] },
    Journal(Op),
}

/// The payload of an event for `subs` whose stored record is `record`.
pub(crate) fn event(subs: &[u16], record: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + 2 * subs.len() + record.len());
    out.push(EVENT);
    out.extend_from_slice(&(subs.len() as u16).to_le_bytes());
    for s in subs {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(record);
    out
}

/// The payload of a journal op.
pub(crate) fn journal(op: &Op) -> Vec<u8> {
    let mut out = vec![JOURNAL];
    // Plain structs and enums: serialising them cannot fail.
    serde_json::to_writer(&mut out, op).unwrap_or_default();
    out
}

/// Decode a payload; `Err` names what is wrong with it.
pub(crate) fn decode(data: &[u8]) -> Result<Payload<'_>, String> {
    match data.first() {
        Some(&EVENT) => {
            let n = data
                .get(1..3)
                .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
                .ok_or("event record too short")?;
            let ids = data.get(3..3 + 2 * n).ok_or("event record too short")?;
            let subs = ids
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect();
            Ok(Payload::Event {
                subs,
                record: &data[3 + 2 * n..],
            })
        }
        Some(&JOURNAL) => serde_json::from_slice(&data[1..])
            .map(Payload::Journal)
            .map_err(|e| format!("journal record: {e}")),
        Some(t) => Err(format!("unknown record tag {t}")),
        None => Err("empty record".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = event(&[3, 7], br#"{"v":1}"#);
        match decode(&p).unwrap() {
            Payload::Event { subs, record } => {
                assert_eq!(subs, [3, 7]);
                assert_eq!(record, br#"{"v":1}"#);
            }
            Payload::Journal(_) => panic!("an event"),
        }
        let op = Op::Done {
            sub: 2,
            slots: vec![Slot::Ready(5), Slot::Due(9)],
            plans: vec![],
            totals: Totals::default(),
        };
        match decode(&journal(&op)).unwrap() {
            Payload::Journal(Op::Done { sub, slots, .. }) => {
                assert_eq!(sub, 2);
                assert_eq!(slots, [Slot::Ready(5), Slot::Due(9)]);
            }
            other => panic!("{other:?}"),
        }
        assert!(decode(&[9]).is_err());
        assert!(decode(&[0, 5, 0]).is_err());
        assert!(decode(&[1, b'{']).is_err());
    }
}
