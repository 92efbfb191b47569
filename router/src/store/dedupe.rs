//! De-duplication of published events by their key (`source` + `id`), per bus.
//!
//! CloudEvents lets consumers treat two events with the same `source` and `id` as
//! the same event. Sources replay: the Kafka source after a crash re-reads the
//! records whose offsets were not yet committed, an HTTP client retries a POST whose
//! answer it lost. Without this index each replay would be queued again and reach
//! every target a second time; with it, a replay within `window` is dropped before it
//! is queued, which is what lets an S3 target put every event in exactly one object.
//!
//! Tree `dedupe/<bus>`:
//! - `k` + event key (16 bytes)        -> first-seen ms (u64 BE)
//! - `t` + first-seen ms (u64 BE) + key -> empty: the expiry order
//!
//! Keys are remembered only after the event's queue records are written, in the
//! same durable commit: sled recovers a prefix of its writes, so after a crash a
//! remembered key always has its records, and an event whose records were lost is
//! not remembered and is queued again when replayed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::StoreError;

const KEY: u8 = b'k';
const EXPIRY: u8 = b't';
/// Expired keys are removed at most this often.
const PRUNE_EVERY_MS: u64 = 1000;

/// The de-duplication index of one bus. Cheap to clone.
#[derive(Clone)]
pub struct Dedupe {
    tree: sled::Tree,
    window_ms: u64,
    last_prune_ms: Arc<AtomicU64>,
}

impl Dedupe {
    pub(super) fn open(db: &sled::Db, bus: &str, window_ms: u64) -> Result<Self, StoreError> {
        let tree = db
            .open_tree(format!("dedupe/{bus}"))
            .map_err(|e| StoreError::new("open dedupe index", e))?;
        Ok(Self {
            tree,
            window_ms,
            last_prune_ms: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether `key` was published within the window before `now_ms`.
    pub fn seen(&self, key: &[u8; 16], now_ms: u64) -> Result<bool, StoreError> {
        let found = self
            .tree
            .get(entry(KEY, None, key))
            .map_err(|e| StoreError::new("dedupe lookup", e))?;
        Ok(found.is_some_and(|v| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8.min(v.len())]);
            u64::from_be_bytes(b).saturating_add(self.window_ms) > now_ms
        }))
    }

    /// Remember keys published at `now_ms` (after their records were written), and
    /// drop keys older than the window now and then.
    pub fn remember(&self, keys: &[[u8; 16]], now_ms: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in keys {
            batch.insert(entry(KEY, None, key), &now_ms.to_be_bytes());
            batch.insert(entry(EXPIRY, Some(now_ms), key), &[]);
        }
        let last = self.last_prune_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= PRUNE_EVERY_MS
            && self
                .last_prune_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.expire(&mut batch, now_ms.saturating_sub(self.window_ms))?;
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| StoreError::new("dedupe remember", e))
    }

    /// Add the removal of every key first seen before `before_ms` to `batch`.
    fn expire(&self, batch: &mut sled::Batch, before_ms: u64) -> Result<(), StoreError> {
        let end = entry(EXPIRY, Some(before_ms), &[0; 16]);
        for item in self.tree.range(vec![EXPIRY]..end) {
            let (k, _) = item.map_err(|e| StoreError::new("dedupe expiry", e))?;
            let Some(key) = k.get(9..25) else { continue };
            let mut stored = [0u8; 16];
            stored.copy_from_slice(key);
            // A key seen again later has a newer first-seen time; keep it.
            let current = self
                .tree
                .get(entry(KEY, None, &stored))
                .map_err(|e| StoreError::new("dedupe expiry", e))?;
            if current.as_deref() == Some(&k[1..9]) {
                batch.remove(entry(KEY, None, &stored));
            }
            batch.remove(k);
        }
        Ok(())
    }
}

fn entry(kind: u8, ms: Option<u64>, key: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(25);
    k.push(kind);
    if let Some(ms) = ms {
        k.extend_from_slice(&ms.to_be_bytes());
    }
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let d = Dedupe::open(&db, "default", 1000).unwrap();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        assert!(!d.seen(&a, 10_000).unwrap());
        d.remember(&[a], 10_000).unwrap();
        assert!(d.seen(&a, 10_500).unwrap());
        assert!(!d.seen(&b, 10_500).unwrap());
        // Past the window it counts as new, and pruning removes it from disk.
        assert!(!d.seen(&a, 11_000).unwrap());
        d.remember(&[b], 12_000).unwrap();
        assert!(d.tree.get(entry(KEY, None, &a)).unwrap().is_none());
        assert!(d.seen(&b, 12_001).unwrap());
        assert_eq!(d.tree.len(), 2, "only b's two entries are left");
    }
}
