//! What the admin API and the operations endpoints ask of the engine: the
//! subscriptions and their counters, dead letters and redrive, the sources'
//! statuses, readiness, and the store's health.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Engine, StoreError};
use crate::delivery::breaker::BreakerInfo;
use crate::delivery::dispatch::Subscription;
use crate::store::{DeadLetter, QueueStats};

/// A flush running this long makes sluice not ready (the writers waiting on it
/// give up at 10 s and are answered 503).
const FLUSH_STALL: Duration = Duration::from_secs(5);

/// A subscription as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionInfo {
    /// `<rule>.<target>`, or `<rule>.dead-letter`.
    pub name: String,
    pub bus: String,
    pub rule: String,
    pub target: String,
    pub stats: QueueStats,
    /// Why its target cannot take events now (deliveries wait), if it cannot.
    pub not_ready: Option<String>,
    /// Whether an operator paused its delivery.
    pub paused: bool,
    /// Its target's circuit breaker as this subscription sees it, if the
    /// target has one.
    pub breaker: Option<BreakerInfo>,
}

/// What keeps sluice from being ready.
#[derive(Debug, Clone, Default)]
pub struct NotReady {
    /// (target, subscription, reason) of each target that cannot take events.
    pub targets: Vec<(String, String, String)>,
    /// (source, reason) of each source that cannot bring events in.
    pub sources: Vec<(String, String)>,
    /// Why the store cannot write, if it cannot.
    pub store: Option<String>,
    /// Subscriptions whose target has not been checked yet (just started).
    pub checking: Vec<String>,
}

impl NotReady {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
            && self.sources.is_empty()
            && self.store.is_none()
            && self.checking.is_empty()
    }
}

fn info(sub: &Subscription) -> SubscriptionInfo {
    SubscriptionInfo {
        name: sub.name.clone(),
        bus: sub.bus.clone(),
        rule: sub.rule.clone(),
        target: sub.target.clone(),
        stats: sub.queue.stats(),
        not_ready: sub.not_ready(),
        paused: sub.paused.load(std::sync::atomic::Ordering::Relaxed),
        breaker: sub.breaker.as_ref().map(|b| b.info()),
    }
}

impl Engine {
    fn find(&self, name: &str) -> Option<&Arc<Subscription>> {
        self.subscriptions.iter().find(|s| s.name == name)
    }

    /// Every subscription, in rule order.
    pub fn subscriptions(&self) -> Vec<SubscriptionInfo> {
        self.subscriptions.iter().map(|s| info(s)).collect()
    }

    /// Subscription `name`, if there is one.
    pub fn subscription(&self, name: &str) -> Option<SubscriptionInfo> {
        self.find(name).map(|s| info(s))
    }

    /// Up to `limit` dead letters of subscription `name` after sequence `after`,
    /// oldest first; `None` when there is no such subscription.
    pub fn dead_letters(
        &self,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Option<Vec<DeadLetter>>, StoreError> {
        match self.find(name) {
            Some(sub) => sub.queue.dead_letters(after, limit).map(Some),
            None => Ok(None),
        }
    }

    /// Move dead letters of subscription `name` back to its queue (all, or those
    /// in `seqs`), durably, and wake its dispatcher. Returns how many moved;
    /// `None` when there is no such subscription.
    pub async fn redrive(
        &self,
        name: &str,
        seqs: Option<&[u64]>,
    ) -> Result<Option<u64>, StoreError> {
        let Some(sub) = self.find(name) else {
            return Ok(None);
        };
        let moved = sub.queue.redrive(seqs)?;
        self.store.commit().await?;
        sub.update_depth();
        sub.notify.notify_one();
        tracing::info!(subscription = %name, redriven = moved, "Dead letters redriven.");
        Ok(Some(moved))
    }

    /// Pause (or resume) delivery of subscription `name`, durably: events keep
    /// queueing, nothing new is delivered until it is resumed, restarts
    /// included. `None` when there is no such subscription.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Option<()>, StoreError> {
        let Some(sub) = self.find(name) else {
            return Ok(None);
        };
        sub.queue.set_paused(paused)?;
        self.store.commit().await?;
        sub.paused
            .store(paused, std::sync::atomic::Ordering::Relaxed);
        sub.notify.notify_one();
        tracing::info!(subscription = %name, paused, "Delivery {}.", if paused { "paused" } else { "resumed" });
        Ok(Some(()))
    }

    /// Up to `limit` records source `name` refused as malformed, after `after`.
    pub fn source_dead_letters(
        &self,
        name: &str,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.source_rejects(name)?.dead_letters(after, limit)
    }

    /// What source `name` reports about itself, if it reports anything.
    pub fn source_status(&self, name: &str) -> Option<serde_json::Value> {
        self.statuses.get(name).map(|s| s.status())
    }

    /// Every target that cannot take events and every source that cannot bring
    /// them in, with why.
    pub fn not_ready(&self) -> NotReady {
        let targets = self
            .subscriptions
            .iter()
            .filter_map(|sub| {
                let reason = sub.not_ready()?;
                Some((sub.target.clone(), sub.name.clone(), reason))
            })
            .collect();
        let checking = self
            .subscriptions
            .iter()
            .filter(|s| !s.checked.load(std::sync::atomic::Ordering::Relaxed))
            .map(|s| s.name.clone())
            .collect();
        NotReady {
            targets,
            sources: self.statuses.not_ready(),
            store: self.store_failure().or_else(|| {
                let stalled = self.flush_stalled_for().filter(|s| *s >= FLUSH_STALL)?;
                Some(format!(
                    "the store has been stuck in one flush for {}s",
                    stalled.as_secs()
                ))
            }),
            checking,
        }
    }

    /// Why the store cannot write, if it cannot (a full disk, say): then ingest
    /// answers 503, delivery pauses, and the store must be opened again.
    pub fn store_failure(&self) -> Option<String> {
        self.store.health().failure()
    }

    /// How long the store has been stuck in one flush, if it is in one (not
    /// ready from 5 s on).
    pub fn flush_stalled_for(&self) -> Option<Duration> {
        self.store.flush_stalled_for()
    }

    /// Write everything to disk; for shutdown, after sources and delivery
    /// stopped. Bounded: what was acknowledged is on disk already, so a final
    /// flush that hangs is reported rather than waited for forever.
    pub async fn close(&self) -> Result<(), StoreError> {
        let store = self.store.clone();
        let flush = tokio::task::spawn_blocking(move || store.flush());
        match tokio::time::timeout(Duration::from_secs(10), flush).await {
            Ok(Ok(flushed)) => flushed,
            Ok(Err(e)) => Err(StoreError::new("final flush", e)),
            Err(_) => Err(StoreError::new(
                "final flush",
                "it did not finish within 10s",
            )),
        }
    }
}
