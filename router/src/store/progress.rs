//! Source positions already queued: how a source that numbers its input (a Kafka
//! partition's offsets) recognises a replay without an index entry per event.
//!
//! After a crash the Kafka source re-reads the records whose offsets it had not
//! committed yet. Most of them were queued before the crash. Remembering each
//! event's key (see [`super::dedupe`]) costs a lookup and two inserts per event and
//! subscription, plus their expiry; remembering "everything up to offset N of
//! partition P is queued" costs one insert per partition and publish. A position is
//! written after the records it covers and before the same commit, and sled
//! recovers writes in order, so a durable position never covers a lost record.
//!
//! Tree `progress/<source>`: an opaque position key (the source chooses it) ->
//! position (i64 BE) + when it was written (ms, u64 BE). Positions, like event
//! keys, count as replays only within `server.dedupe_window` of being written, so
//! a group's offsets rewound on purpose long after are read again.

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
        Ok(v.filter(|v| v.len() == 16).map(|v| {
            let mut p = [0u8; 8];
            let mut t = [0u8; 8];
            p.copy_from_slice(&v[..8]);
            t.copy_from_slice(&v[8..]);
            Position {
                position: i64::from_be_bytes(p),
                written_ms: u64::from_be_bytes(t),
            }
        }))
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
}
