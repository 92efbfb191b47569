//! Starting delivery: one dispatcher per subscription, with the sink the binary
//! builds for its target, the rule's compiled transform and retry schedule, and
//! the target's concurrency, batching and rate limit.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::delivery::dispatch::Dispatcher;
use crate::delivery::rate::RateLimiter;
use crate::sink::Sink;

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
        &self,
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
            tasks.spawn(dispatcher.run(shutdown.clone(), self.server.shutdown_grace));
        }
        Ok(Delivery { tasks })
    }
}
