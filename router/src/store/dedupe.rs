//! De-duplication of queued events by their key (`source` + `id`), per queue.
//!
//! CloudEvents lets consumers treat two events with the same `source` and `id` as
//! the same event. Sources replay: the Kafka source after a crash re-reads the
//! records whose offsets were not yet committed, an HTTP client retries a POST whose
//! answer it lost. Without this index each replay would be queued again and reach
//! the target a second time; with it, a replay within the window is not queued,
//! which is what lets an S3 target put every event in exactly one object.
//!
//! In the queue's own tree:
//! - `k` + event key (16 bytes)          -> first-seen ms (u64 BE)
//! - `t` + first-seen ms (u64 BE) + key  -> empty: the expiry order
//!
//! The key is written in the same atomic batch as the record it stands for, so a
//! crash can keep both or neither: never a record without its key (a replay would
//! be queued twice) nor a key without its record (a replay would be dropped and the
//! event lost).

use std::sync::atomic::Ordering;

use super::queue::{key, ser, DEDUPE_KEY, EXPIRY, READY};
use super::{Queue, Record, StoreError};

/// Expired keys are removed at most this often, per queue.
const PRUNE_EVERY_MS: u64 = 1000;

fn dedupe_key(event_key: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(DEDUPE_KEY);
    k.extend_from_slice(event_key);
    k
}

fn expiry_key(ms: u64, event_key: &[u8; 16]) -> Vec<u8> {
    let mut k = key(EXPIRY, &[ms]);
    k.extend_from_slice(event_key);
    k
}

impl Queue {
    /// Append events in one atomic write, each unless an event with the same key
    /// was appended within `window_ms` before `now_ms` (or earlier in `events`);
    /// `window_ms` 0 appends every one. Returns, per event, whether it was
    /// appended. Not durable until [`super::Store::commit`] returns.
    pub fn enqueue_all(
        &self,
        events: &[(&Record, &[u8; 16])],
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = sled::Batch::default();
        // Expiry first: a later write to the same key in a batch wins, so an
        // expired key seen again now is kept.
        let last = self.state.last_prune_ms.load(Ordering::Relaxed);
        if window_ms > 0 && now_ms.saturating_sub(last) >= PRUNE_EVERY_MS {
            self.state.last_prune_ms.store(now_ms, Ordering::Relaxed);
            self.expire(&mut batch, now_ms.saturating_sub(window_ms))?;
        }
        let mut queued = Vec::with_capacity(events.len());
        let mut seen_here: Vec<&[u8; 16]> = Vec::new();
        for &(record, event_key) in events {
            if window_ms > 0 {
                if seen_here.contains(&event_key) || self.seen(event_key, window_ms, now_ms)? {
                    queued.push(false);
                    continue;
                }
                seen_here.push(event_key);
                batch.insert(dedupe_key(event_key), &now_ms.to_be_bytes());
                batch.insert(expiry_key(now_ms, event_key), &[]);
            }
            let seq = self
                .db
                .generate_id()
                .map_err(|e| StoreError::new("enqueue", e))?;
            batch.insert(key(READY, &[seq]), ser(record));
            queued.push(true);
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| StoreError::new("enqueue", e))?;
        let added = queued.iter().filter(|q| **q).count() as u64;
        self.state.ready.fetch_add(added, Ordering::Relaxed);
        Ok(queued)
    }

    fn seen(&self, event_key: &[u8; 16], window_ms: u64, now_ms: u64) -> Result<bool, StoreError> {
        let found = self
            .tree
            .get(dedupe_key(event_key))
            .map_err(|e| StoreError::new("dedupe lookup", e))?;
        Ok(found.is_some_and(|v| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[..8.min(v.len())]);
            u64::from_be_bytes(b).saturating_add(window_ms) > now_ms
        }))
    }

    /// Add the removal of every key first seen before `before_ms` to `batch`.
    fn expire(&self, batch: &mut sled::Batch, before_ms: u64) -> Result<(), StoreError> {
        let end = key(EXPIRY, &[before_ms]);
        for item in self.tree.range(vec![EXPIRY]..end) {
            let (k, _) = item.map_err(|e| StoreError::new("dedupe expiry", e))?;
            let Some(stored) = k.get(9..25) else { continue };
            let mut event_key = [0u8; 16];
            event_key.copy_from_slice(stored);
            let dk = dedupe_key(&event_key);
            // A key seen again later has a newer first-seen time; keep it.
            let current = self
                .tree
                .get(&dk)
                .map_err(|e| StoreError::new("dedupe expiry", e))?;
            if current.as_deref() == Some(&k[1..9]) {
                batch.remove(dk);
            }
            batch.remove(k);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use crate::store::{Record, Store};

    fn record() -> Record {
        Record::new(RawValue::from_string("{}".into()).unwrap(), 0)
    }

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = store.queue("s").unwrap();
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let r = record();
        let one = |k: &[u8; 16], now| q.enqueue_all(&[(&r, k)], 1000, now).unwrap()[0];
        assert!(one(&a, 10_000));
        assert!(!one(&a, 10_500));
        // The same key twice in one write: the first only.
        let both = q.enqueue_all(&[(&r, &b), (&r, &b)], 1000, 10_500).unwrap();
        assert_eq!(both, [true, false]);
        assert_eq!(q.stats().depth, 2);
        // Past the window it counts as new; pruning removes the old entries.
        assert!(one(&a, 12_000));
        assert_eq!(q.stats().depth, 3);
        let keys = q.tree.scan_prefix([b'k']).count();
        let expiry = q.tree.scan_prefix([b't']).count();
        assert_eq!((keys, expiry), (1, 1), "only a's new entry is left");
    }
}
