//! Source positions already queued: how a source that numbers its input (a Kafka
//! partition's offsets) recognises a replay without an index entry per event.
//!
//! After a crash the Kafka source re-reads the records whose offsets it had not
//! committed yet. Most of them were queued before the crash. Remembering each
//! event's key (see [`super::replays`]) costs memory and a log write per event;
//! remembering "everything up to offset N of partition P is queued" costs one
//! insert per partition and publish. A position is written with the records it
//! covers, and the group commit makes the bus logs durable before the positions,
//! so a durable position never covers a lost record.
//!
//! Tree `progress/<source>`: an opaque position key (the source chooses it) ->
//! position (i64 BE) + when it was written (ms, u64 BE). Positions, like event
//! keys, count as replays only within `server.dedupe_window` of being written, so
//! a group's offsets rewound on purpose long after are read again.
//!
//! The same tree layout holds a source's marks (see
//! `SourceContext::publish_marked`): facts kept whatever their age. A source that
//! keeps one mark per item it has seen (the S3 poller: one per object) reads them
//! back in key order with [`Progress::scan`] and drops them with
//! [`Progress::remove`]. The contract is deliberately small (ordered scan, put,
//! remove, durable with the next commit) so the store's replacement can keep it.

use super::StoreError;

/// One source's positions. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    tree: sled::Tree,
}

/// What a position says: everything up to `position` was queued at `written_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub position: i64,
    pub written_ms: u64,
}

impl Progress {
    pub(super) fn open(db: &sled::Db, source: &str) -> Result<Self, StoreError> {
        let tree = db
            .open_tree(format!("progress/{source}"))
            .map_err(|e| StoreError::new("open progress", e))?;
        Ok(Self { tree })
    }

    /// The position stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Position>, StoreError> {
        let v = self
            .tree
            .get(key)
            .map_err(|e| StoreError::new("read progress", e))?;
        Ok(v.as_deref().and_then(decode))
    }

    /// Store `at` under `key`. Not durable until the next commit; call it after
    /// the writes it covers.
    pub fn put(&self, key: &[u8], at: Position) -> Result<(), StoreError> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&at.position.to_be_bytes());
        v[8..].copy_from_slice(&at.written_ms.to_be_bytes());
        self.tree
            .insert(key, &v[..])
            .map_err(|e| StoreError::new("write progress", e))?;
        Ok(())
    }

    /// Drop the entry under `key`, if any. Not durable until the next commit;
    /// call it after the writes it goes with.
    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree
            .remove(key)
            .map_err(|e| StoreError::new("remove progress", e))?;
        Ok(())
    }

    /// Up to `limit` entries whose keys start with `prefix` and sort after
    /// `after` (from the first such key when `None`), in byte order of the key.
    /// Reading a bounded chunk at a time keeps memory bounded however many
    /// entries there are.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Position)>, StoreError> {
        use std::ops::Bound;
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in self.tree.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (key, value) = entry.map_err(|e| StoreError::new("read progress", e))?;
            if !key.starts_with(prefix) || out.len() >= limit {
                break;
            }
            if let Some(at) = decode(&value) {
                out.push((key.to_vec(), at));
            }
        }
        Ok(out)
    }
}

fn decode(v: &[u8]) -> Option<Position> {
    if v.len() != 16 {
        return None;
    }
    let mut p = [0u8; 8];
    let mut t = [0u8; 8];
    p.copy_from_slice(&v[..8]);
    t.copy_from_slice(&v[8..]);
    Some(Position {
        position: i64::from_be_bytes(p),
        written_ms: u64::from_be_bytes(t),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(position: i64) -> Position {
        Position {
            position,
            written_ms: 1,
        }
    }

    #[test]
    fn scan_walks_one_prefix_in_key_order_a_chunk_at_a_time() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let p = Progress::open(&db, "s").unwrap();
        for (i, key) in ["o/b", "o/a", "i", "o/c", "p/a"].iter().enumerate() {
            p.put(key.as_bytes(), at(i as i64)).unwrap();
        }
        let keys = |v: Vec<(Vec<u8>, Position)>| {
            v.into_iter()
                .map(|(k, _)| String::from_utf8(k).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(p.scan(b"o/", None, 2).unwrap()), ["o/a", "o/b"]);
        assert_eq!(keys(p.scan(b"o/", Some(b"o/b"), 2).unwrap()), ["o/c"]);
        assert_eq!(
            keys(p.scan(b"o/", Some(b"a"), 9).unwrap()),
            ["o/a", "o/b", "o/c"]
        );
        assert_eq!(p.scan(b"o/", None, 9).unwrap()[0].1, at(1));
        p.remove(b"o/b").unwrap();
        p.remove(b"o/zz").unwrap();
        assert_eq!(keys(p.scan(b"o/", None, 9).unwrap()), ["o/a", "o/c"]);
        assert_eq!(p.get(b"o/b").unwrap(), None);
    }
}
