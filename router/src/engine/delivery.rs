//! Starting delivery: one dispatcher per subscription, with the sink the binary
//! builds for its target, the rule's compiled transform and retry schedule, and
//! the target's concurrency, batching and rate limit.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use async_trait::async_trait;

use super::{Engine, PublishError, Replays};
use crate::delivery::dispatch::{Dispatcher, Subscription};
use crate::delivery::rate::RateLimiter;
use crate::delivery::results::{Publisher, Results};
use crate::event::{event_key, Event};
use crate::sink::Sink;
use crate::store::Record;

/// The running dispatchers; [`Delivery::stopped`] waits for them after shutdown.
pub struct Delivery {
    tasks: JoinSet<()>,
}

impl Delivery {
    /// Wait until every dispatcher has stopped (after `shutdown` was cancelled,
    /// each finishes its deliveries in flight for up to `server.shutdown_grace`).
    pub async fn stopped(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Engine {
    /// Start a dispatcher for every subscription, each with the sink `sink_for`
    /// builds for its target (called once per subscription, so subscriptions do
    /// not share a sink's connections or batches). Stops on `shutdown`.
    pub fn start_delivery<E>(
        self: &Arc<Self>,
        mut sink_for: impl FnMut(&str) -> Result<Arc<dyn Sink>, E>,
        shutdown: &CancellationToken,
    ) -> Result<Delivery, E> {
        let mut tasks = JoinSet::new();
        // One bucket per rate-limited target, shared by its subscriptions.
        let limiters: HashMap<&str, Arc<RateLimiter>> = self
            .targets
            .iter()
            .filter_map(|(name, t)| {
                Some((name.as_str(), Arc::new(RateLimiter::new(t.rate_limit?))))
            })
            .collect();
        // One set of result destinations per rule that has any, shared by its
        // subscriptions (not by the forwarded ones: results make no results).
        let node = format!("sluice://{}", super::system::node_name(&self.server));
        let publisher: Arc<dyn Publisher> = self.clone();
        let results: Vec<Option<Arc<Results>>> = self
            .results
            .iter()
            .map(|r| {
                (r.on_success.is_some() || r.on_failure.is_some()).then(|| {
                    Arc::new(Results {
                        on_success: r.on_success.clone(),
                        on_failure: r.on_failure.clone(),
                        max_hops: self.server.max_hops,
                        max_body: usize::try_from(self.server.max_event_bytes)
                            .unwrap_or(usize::MAX),
                        node: node.clone(),
                        publisher: publisher.clone(),
                    })
                })
            })
            .collect();
        for sub in &self.subscriptions {
            let sink = sink_for(&sub.target)?;
            // Dead-letter subscriptions deliver the original events.
            let transform = if sub.is_dead_letter {
                None
            } else {
                self.rules.transform(sub.rule_index).cloned()
            };
            let (concurrency, batch) = self
                .targets
                .get(&sub.target)
                .map_or((1, None), |t| (t.concurrency, t.batch.clone()));
            let policy = self.retry[sub.rule_index].clone();
            let mut dispatcher = Dispatcher::new(sub.clone(), sink, transform, policy, concurrency);
            if let Some(batch) = &batch {
                dispatcher = dispatcher.with_batches(batch);
            }
            if let Some(limiter) = limiters.get(sub.target.as_str()) {
                dispatcher = dispatcher.with_rate_limit(limiter.clone());
            }
            match &results[sub.rule_index] {
                Some(r) if !sub.is_dead_letter => dispatcher = dispatcher.with_results(r.clone()),
                _ => {}
            }
            tasks.spawn(dispatcher.run(shutdown.clone(), self.server.shutdown_grace));
        }
        Ok(Delivery { tasks })
    }
}

#[async_trait]
impl Publisher for Engine {
    /// Through the same path as any publish (matching, per-subscription
    /// queues, dedupe by `source` + `id`), returning once durable. An event the
    /// engine refuses (a function's answer with a bad `deliverat`, say) is
    /// dropped with a warning rather than retried forever.
    async fn publish_results(&self, bus: &str, from: &str, events: &[Event]) -> Result<(), String> {
        match self.publish(bus, from, events, Replays::ByKey).await {
            Ok(_) => Ok(()),
            Err(PublishError::Store(e)) => Err(e.to_string()),
            Err(e) => {
                tracing::warn!(subscription = from, bus, error = %e, "A result event was refused and dropped.");
                Ok(())
            }
        }
    }

    /// Keys mixed as for the events of the subscription's bus, the way
    /// `Store::restore_replay_keys` reads them back after a crash.
    fn append_results(&self, sub: &Subscription, events: &[Event], now: u64) -> Result<(), String> {
        let seen = self.store.replays();
        let mix = super::bus_key(&sub.bus);
        let keys: Vec<u128> = events
            .iter()
            .map(|e| u128::from_be_bytes(event_key(e).into_bytes()) ^ mix)
            .collect();
        let duplicate = if self.dedupe_window_ms > 0 {
            seen.check(&keys, now)
        } else {
            vec![false; keys.len()]
        };
        let mut new_keys = Vec::new();
        let mut appended = Ok(());
        for ((event, key), duplicate) in events.iter().zip(keys).zip(duplicate) {
            if duplicate {
                continue;
            }
            new_keys.push(key);
            appended = append(sub, event, now);
            if appended.is_err() {
                break;
            }
        }
        let noted = appended.and_then(|()| seen.note(&new_keys, now).map_err(|e| e.to_string()));
        if noted.is_err() {
            seen.forget(&new_keys);
        }
        noted
    }
}

fn append(sub: &Subscription, event: &Event, now: u64) -> Result<(), String> {
    let text = serde_json::to_string(event).map_err(|e| e.to_string())?;
    let raw = serde_json::value::RawValue::from_string(text).map_err(|e| e.to_string())?;
    sub.queue
        .enqueue(&Record::new(raw, now))
        .map(|_| ())
        .map_err(|e| e.to_string())
}
