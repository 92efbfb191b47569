//! Ready events are stored in chunks: one sled entry per publish and queue, not one
//! per event.
//!
//! Each sled write has a fixed cost far above that of copying a few hundred bytes,
//! and a Kafka source publishes hundreds of records at a time; storing them as one
//! entry makes the write cost per publish instead of per event. Settling works the
//! same way: a settlement marks the events of a chunk settled in a small bitmap
//! entry, and the chunk goes when all of its events are settled.
//!
//! In the queue's tree:
//! - `r` + seq (u64 BE) -> a chunk: its records, oldest first
//! - `s` + seq          -> which of them are settled (bit i = record i), present only
//!   while some but not all are
//!
//! An event in a chunk is addressed as `r` + seq + index (u32 BE) + the chunk's
//! record count (u32 BE): that is the key a lease carries, so a settlement knows
//! when a chunk is done without reading it. A chunk's value is the marker byte 0xC1, the count (u32 BE), then
//! per record its length (u32 BE) and the record itself (JSON, see [`Record`]). A
//! value that starts with `{` is a single record as sluice stored them before chunks.
//!
//! [`Record`]: super::Record

use super::queue::{key, READY};

/// First byte of a chunk value (never `{`, the first byte of a JSON record).
const MARKER: u8 = 0xC1;
/// Prefix of settled bitmaps.
pub(super) const SETTLED: u8 = b's';

/// A chunk's value holding `records` (each one serialised record).
pub(super) fn encode(records: &[Vec<u8>]) -> Vec<u8> {
    let len = 5 + records.iter().map(|r| 4 + r.len()).sum::<usize>();
    let mut v = Vec::with_capacity(len);
    v.push(MARKER);
    v.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        v.extend_from_slice(&(r.len() as u32).to_be_bytes());
        v.extend_from_slice(r);
    }
    v
}

/// The records of a chunk value, in order.
pub(super) fn records(value: &[u8]) -> Result<Vec<&[u8]>, String> {
    let Some((&first, rest)) = value.split_first() else {
        return Err("empty chunk".into());
    };
    if first != MARKER {
        // A single record stored before chunks.
        return Ok(vec![value]);
    }
    let (count, mut rest) = take_u32(rest).ok_or("chunk header cut short")?;
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let (len, tail) = take_u32(rest).ok_or_else(|| format!("chunk record {i} cut short"))?;
        let len = len as usize;
        if tail.len() < len {
            return Err(format!("chunk record {i} cut short"));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

/// How many records a chunk value holds, from its header (0 if unreadable).
pub(super) fn count(value: &[u8]) -> u32 {
    match value.split_first() {
        Some((&MARKER, rest)) => take_u32(rest).map_or(0, |(n, _)| n),
        Some(_) => 1,
        None => 0,
    }
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, tail) = b.split_at_checked(4)?;
    Some((u32::from_be_bytes(head.try_into().ok()?), tail))
}

pub(super) fn chunk_key(seq: u64) -> Vec<u8> {
    key(READY, &[seq])
}

pub(super) fn settled_key(seq: u64) -> Vec<u8> {
    key(SETTLED, &[seq])
}

/// Where an event of a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) seq: u64,
    pub(super) index: u32,
    /// Records in the chunk.
    pub(super) count: u32,
}

impl Entry {
    /// Its key: `r` + seq + index + count, ordered by chunk, then index.
    pub(super) fn key(&self) -> Vec<u8> {
        let mut k = key(READY, &[self.seq]);
        k.extend_from_slice(&self.index.to_be_bytes());
        k.extend_from_slice(&self.count.to_be_bytes());
        k
    }

    /// The entry an entry key names (`None` for any other key).
    pub(super) fn parse(k: &[u8]) -> Option<Self> {
        if k.len() != 17 || k[0] != READY {
            return None;
        }
        Some(Self {
            seq: u64::from_be_bytes(k[1..9].try_into().ok()?),
            index: u32::from_be_bytes(k[9..13].try_into().ok()?),
            count: u32::from_be_bytes(k[13..17].try_into().ok()?),
        })
    }
}

/// Which records of a chunk are settled.
#[derive(Default)]
pub(super) struct Settled(Vec<u8>);

impl Settled {
    pub(super) fn from_bytes(b: &[u8]) -> Self {
        Self(b.to_vec())
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub(super) fn has(&self, i: u32) -> bool {
        self.0
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub(super) fn set(&mut self, i: u32) {
        let at = (i / 8) as usize;
        if self.0.len() <= at {
            self.0.resize(at + 1, 0);
        }
        self.0[at] |= 1 << (i % 8);
    }

    pub(super) fn count(&self) -> u32 {
        self.0.iter().map(|b| b.count_ones()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_old_records_read_as_one() {
        let recs = vec![b"{\"a\":1}".to_vec(), Vec::new(), b"{}".to_vec()];
        let v = encode(&recs);
        assert_eq!(count(&v), 3);
        let got = records(&v).unwrap();
        assert_eq!(got, [&b"{\"a\":1}"[..], b"", b"{}"]);
        assert_eq!(records(b"{\"v\":1}").unwrap(), [&b"{\"v\":1}"[..]]);
        assert_eq!(count(b"{\"v\":1}"), 1);
        let cut = &v[..v.len() - 1];
        assert_eq!(records(cut).unwrap_err(), "chunk record 2 cut short");
    }

    #[test]
    fn entry_keys_sort_by_chunk_then_index() {
        let e = |seq, index| Entry {
            seq,
            index,
            count: 400,
        };
        let (a, b) = (e(7, 300).key(), e(8, 0).key());
        assert!(a < b && chunk_key(7) < a && e(7, 2).key() < a);
        assert_eq!(Entry::parse(&a), Some(e(7, 300)));
        assert_eq!(Entry::parse(&chunk_key(7)), None);
        let mut s = Settled::default();
        s.set(0);
        s.set(9);
        assert!(s.has(9) && !s.has(8) && !s.has(100));
        assert_eq!(s.count(), 2);
    }
}
