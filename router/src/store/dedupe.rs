//! De-duplication of queued events by their key (`source` + `id`), per queue.
//!
//! CloudEvents lets consumers treat two events with the same `source` and `id` as
//! the same event. Sources replay: an HTTP client retries a POST whose answer it
//! lost. Without this index each replay would be queued again and reach the target
//! a second time; with it, a replay within the window is not queued, which is what
//! lets an S3 target put every event in exactly one object. (A source that numbers
//! its input, the Kafka source, recognises its replays by position instead, at a
//! fraction of the cost: see [`super::progress`].)
//!
//! In the queue's own tree:
//! - `k` + event key (16 bytes)          -> first-seen ms (u64 BE)
//! - `t` + first-seen ms (u64 BE) + key  -> empty: the expiry order
//!
//! The key is written right after the record it stands for. sled recovers writes
//! in order, so a crash never keeps a key without its record (a replay would be
//! dropped and the event lost); a record that lost its key (a replay would be
//! queued twice) gets it back from [`Queue::repair_dedupe`] at start.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::chunk;
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
    /// Append events, each unless an event with the same key was appended within
    /// `window_ms` before `now_ms` (or earlier in `events`); `window_ms` 0 appends
    /// every one. Returns, per event, whether it was appended. Not durable until
    /// [`super::Store::commit`] returns.
    ///
    /// An event with a due time after `now_ms` (delayed delivery: `deliverat` /
    /// `delay`) goes to the scheduled range, where retries wait, instead of the
    /// ready chunk (see the key layout in [`super::queue`]); its key is
    /// remembered the same way.
    ///
    /// Plain inserts, record first and its key after: a sled batch would make the
    /// two atomic, but it stops every other reader and writer of the store while
    /// it applies, which halved single-event throughput. sled recovers its writes
    /// in order, so a crash can leave a record without its key but never a key
    /// without its record; [`Queue::repair_dedupe`] restores the missing keys at
    /// start.
    pub fn enqueue_all(
        &self,
        events: &[(&Record, &[u8; 16], Option<u64>)],
        window_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let _order = self.state.append.lock().unwrap_or_else(|p| p.into_inner());
        let later = |due: Option<u64>| due.filter(|&d| d > now_ms);
        if window_ms == 0 {
            let mut records = Vec::with_capacity(events.len());
            let mut delayed = Vec::new();
            for &(r, _, due) in events {
                match later(due) {
                    Some(due) => delayed.push((due, ser(r))),
                    None => records.push(ser(r)),
                }
            }
            if !records.is_empty() {
                self.append_chunk(&records)?;
            }
            self.append_due(delayed)?;
            return Ok(vec![true; events.len()]);
        }
        let last = self.state.last_prune_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= PRUNE_EVERY_MS {
            self.state.last_prune_ms.store(now_ms, Ordering::Relaxed);
            self.expire(now_ms.saturating_sub(window_ms))?;
        }
        let mut queued = Vec::with_capacity(events.len());
        let mut records = Vec::with_capacity(events.len());
        let mut delayed = Vec::new();
        let mut keys: Vec<&[u8; 16]> = Vec::with_capacity(events.len());
        let mut taken: HashSet<&[u8; 16]> = HashSet::with_capacity(events.len());
        for &(record, event_key, due) in events {
            if taken.contains(event_key) || self.seen(event_key, window_ms, now_ms)? {
                queued.push(false);
                continue;
            }
            match later(due) {
                Some(due) => delayed.push((due, ser(record))),
                None => records.push(ser(record)),
            }
            taken.insert(event_key);
            keys.push(event_key);
            queued.push(true);
        }
        if !records.is_empty() {
            self.append_chunk(&records)?;
        }
        // A crash between these records and their keys below can let a replay of
        // a delayed event in again (`repair_dedupe` looks at the newest ready
        // chunk only): delivered twice, never lost.
        self.append_due(delayed)?;
        for event_key in keys {
            self.remember(event_key, now_ms)?;
        }
        Ok(queued)
    }

    fn remember(&self, event_key: &[u8; 16], ms: u64) -> Result<(), StoreError> {
        let err = |e| StoreError::new("enqueue", e);
        self.tree
            .insert(dedupe_key(event_key), &ms.to_be_bytes())
            .map_err(err)?;
        self.tree
            .insert(expiry_key(ms, event_key), &[])
            .map_err(err)?;
        Ok(())
    }

    /// Give the records of the newest chunk that lack their de-duplication key (a
    /// crash between a chunk and its keys in [`Queue::enqueue_all`]) their key
    /// back. Appends hold the queue's append lock from a chunk through its keys,
    /// and sled recovers writes in order, so only the newest chunk can have lost
    /// keys: older ones were followed by later writes that survived. (Queues fed
    /// only by sources that keep no keys, such as Kafka, cost one chunk's look.)
    /// Returns how many keys it restored.
    pub fn repair_dedupe(&self) -> Result<u64, StoreError> {
        let err = |e| StoreError::new("dedupe repair", e);
        let Some(item) = self.tree.range(vec![READY]..vec![READY + 1]).next_back() else {
            return Ok(0);
        };
        let (_, v) = item.map_err(err)?;
        let Ok(records) = chunk::records(&v) else {
            return Ok(0);
        };
        let mut restored = 0;
        for bytes in records {
            let Ok(record) = serde_json::from_slice::<Record>(bytes) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<crate::event::Event>(record.event.get()) else {
                continue;
            };
            let event_key = crate::event::event_key(&event).into_bytes();
            if self
                .tree
                .get(dedupe_key(&event_key))
                .map_err(err)?
                .is_none()
            {
                self.remember(&event_key, record.enqueued_ms)?;
                restored += 1;
            }
        }
        Ok(restored)
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

    /// Remove every key first seen before `before_ms`.
    fn expire(&self, before_ms: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
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
        self.tree
            .apply_batch(batch)
            .map_err(|e| StoreError::new("dedupe expiry", e))
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
        let one = |k: &[u8; 16], now| q.enqueue_all(&[(&r, k, None)], 1000, now).unwrap()[0];
        assert!(one(&a, 10_000));
        assert!(!one(&a, 10_500));
        // The same key twice in one write: the first only.
        let both = q
            .enqueue_all(&[(&r, &b, None), (&r, &b, None)], 1000, 10_500)
            .unwrap();
        assert_eq!(both, [true, false]);
        assert_eq!(q.stats().depth, 2);
        // Past the window it counts as new; pruning removes the old entries.
        assert!(one(&a, 12_000));
        assert_eq!(q.stats().depth, 3);
        let keys = q.tree.scan_prefix([b'k']).count();
        let expiry = q.tree.scan_prefix([b't']).count();
        assert_eq!((keys, expiry), (1, 1), "only a's new entry is left");
    }

    #[test]
    fn a_record_that_lost_its_key_gets_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let q = store.queue("s").unwrap();
        let event = |id: &str| {
            let text = format!(r#"{{"specversion":"1.0","id":"{id}","source":"/s","type":"t"}}"#);
            Record::new(RawValue::from_string(text).unwrap(), 5_000)
        };
        let key_of = |r: &Record| {
            let e: crate::event::Event = serde_json::from_str(r.event.get()).unwrap();
            crate::event::event_key(&e).into_bytes()
        };
        let (a, b) = (event("a"), event("b"));
        q.enqueue_all(&[(&a, &key_of(&a), None)], 60_000, 5_000)
            .unwrap();
        // As after a crash between the two writes: b's record, not its key.
        q.enqueue(&b).unwrap();
        assert!(
            q.enqueue_all(&[(&b, &key_of(&b), None)], 60_000, 6_000)
                .unwrap()[0]
        );
        q.tree.remove(super::dedupe_key(&key_of(&b))).unwrap();
        assert_eq!(q.repair_dedupe().unwrap(), 1);
        assert!(
            !q.enqueue_all(&[(&b, &key_of(&b), None)], 60_000, 7_000)
                .unwrap()[0]
        );
        assert!(
            !q.enqueue_all(&[(&a, &key_of(&a), None)], 60_000, 7_000)
                .unwrap()[0]
        );
        // Older chunks written without keys (a Kafka source's) are left alone:
        // only the newest chunk can have lost its keys in a crash.
        let c = event("c");
        q.enqueue(&c).unwrap();
        q.enqueue_all(&[(&a, &[9u8; 16], None)], 60_000, 8_000)
            .unwrap();
        assert_eq!(q.repair_dedupe().unwrap(), 0);
    }
}
