//! Batch plans: a durable note of which events make up a batch before the batch is
//! written anywhere.
//!
//! Most targets make a redelivered batch harmless through the event key (a row or a
//! document is written once whatever the batch). An S3 object is different: it is
//! named after its batch, so if a batch was uploaded and sluice crashed before
//! settling it, the batch must be re-formed *exactly* after the restart, or some
//! events would land in two objects. Batch sizes depend on timing (`max_wait`), so
//! re-forming from the queue is not enough: the dispatcher writes the plan (the
//! batch's keys) and commits it before the upload, re-runs every plan left over at
//! start, and removes a plan in the same atomic settlement as its events.

use super::queue::{key, PLAN};
use super::{Leased, Queue, StoreError};

/// A plan left from before a stop: its key and its events.
pub type Plan = (Vec<u8>, Vec<Leased>);

impl Queue {
    /// Durably record that `keys` (leased, in flight) form one batch. Returns the
    /// plan's key, to settle with [`super::Settlement::PlanDone`].
    pub async fn plan(&self, keys: &[&[u8]]) -> Result<Vec<u8>, StoreError> {
        let id = self
            .db
            .generate_id()
            .map_err(|e| StoreError::new("plan batch", e))?;
        let plan_key = key(PLAN, &[id]);
        let mut value = Vec::with_capacity(keys.len() * 18);
        for k in keys {
            value.push(k.len() as u8);
            value.extend_from_slice(k);
        }
        self.tree
            .insert(&plan_key, value)
            .map_err(|e| StoreError::new("plan batch", e))?;
        self.commits.commit().await?;
        Ok(plan_key)
    }

    /// The batches planned and not settled before the last stop, oldest first, each
    /// with its events (keys no longer present are left out).
    pub fn plans(&self) -> Result<Vec<Plan>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([PLAN]) {
            let (plan_key, value) = item.map_err(|e| StoreError::new("read plans", e))?;
            let mut batch = Vec::new();
            let mut rest = &value[..];
            while let Some((&len, tail)) = rest.split_first() {
                let len = usize::from(len).min(tail.len());
                let (key, tail) = tail.split_at(len);
                rest = tail;
                if let Some(record) = self.read(key)? {
                    batch.push(Leased {
                        key: key.to_vec(),
                        record,
                    });
                }
            }
            out.push((plan_key.to_vec(), batch));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use serde_json::value::RawValue;

    use crate::store::{Record, Settlement, Store};

    #[tokio::test]
    async fn a_plan_survives_reopen_and_goes_with_its_settlement() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<Vec<u8>> = {
            let store = Store::open(dir.path()).unwrap();
            let q = store.queue("s").unwrap();
            for i in 0..5 {
                let raw = RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap();
                q.enqueue(&Record::new(raw, 1)).unwrap();
            }
            let leased = q.lease(3, 10, &HashSet::new(), None).unwrap();
            let keys: Vec<Vec<u8>> = leased.iter().map(|l| l.key.clone()).collect();
            let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
            q.plan(&refs).await.unwrap();
            store.flush().unwrap();
            keys
        };
        let store = crate::store::reopen(dir.path());
        let q = store.queue("s").unwrap();
        let plans = q.plans().unwrap();
        assert_eq!(plans.len(), 1);
        let (plan_key, batch) = &plans[0];
        let got: Vec<Vec<u8>> = batch.iter().map(|l| l.key.clone()).collect();
        assert_eq!(got, keys, "the same events, in the same order");
        assert_eq!(batch[2].record.event.get(), "{\"n\":2}");
        let mut outcomes: Vec<Settlement> = keys
            .iter()
            .map(|k| Settlement::Delivered { key: k.clone() })
            .collect();
        outcomes.push(Settlement::PlanDone {
            key: plan_key.clone(),
        });
        q.settle(outcomes).unwrap();
        assert!(q.plans().unwrap().is_empty());
        assert_eq!(q.stats().depth, 2);
    }
}
