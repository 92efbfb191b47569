//! The engine: rules compiled per bus, one subscription per (rule, target), and the
//! publish path every source uses.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::config::Config;
use crate::delivery::dispatch::Subscription;
use crate::event::event_key;
use crate::event::Event;
use crate::matching::rules::{RuleSet, Scratch};
use crate::metrics::Metrics;
use crate::now_ms;
use crate::store::{Position, Progress, Record, Store, StoreError};

/// Everything between a source and the dispatchers.
pub struct Engine {
    rules: RuleSet,
    /// Per rule (same order as `rules.rules`), its subscriptions.
    rule_subs: Vec<Vec<Arc<Subscription>>>,
    subscriptions: Vec<Arc<Subscription>>,
    store: Store,
    pub metrics: Metrics,
    /// How long a queued event's key is remembered to drop replays (0: never).
    dedupe_window_ms: u64,
}

/// What a subscription is for.
enum Role {
    /// Delivers a rule's matches; what it gives up on also goes to `forward`.
    Matches { forward: Option<Arc<Subscription>> },
    /// Delivers what a rule's other subscriptions gave up on.
    DeadLetter,
}

/// Open one subscription of `rule` to `target`.
fn subscription(
    store: &Store,
    metrics: &Metrics,
    rule: &crate::config::RuleConfig,
    target: &str,
    name: String,
    role: Role,
) -> Result<Arc<Subscription>, StoreError> {
    let (dead_letter, is_dead_letter) = match role {
        Role::Matches { forward } => (forward, false),
        Role::DeadLetter => (None, true),
    };
    Ok(Arc::new(Subscription {
        queue: store.queue(&name)?,
        name,
        bus: rule.bus.clone(),
        rule: rule.name.clone(),
        target: target.to_owned(),
        notify: tokio::sync::Notify::new(),
        metrics: metrics.subscription(&rule.bus, &rule.name, target),
        dead_letter,
        is_dead_letter,
        not_ready: std::sync::Mutex::new(None),
    }))
}

/// How a publish tells a replayed event from a new one.
#[derive(Clone, Copy)]
pub enum Replays<'a> {
    /// By the event key (`source` + `id`): an event whose key was queued within
    /// `server.dedupe_window` is dropped (see [`crate::store::Queue::enqueue_all`]).
    ByKey,
    /// By the source's own positions: the source skips what its stored positions
    /// cover before publishing, and `positions` (key, position) are stored after
    /// these events and made durable with them. No per-event index is kept.
    ByPosition {
        progress: &'a Progress,
        positions: &'a [(Vec<u8>, i64)],
    },
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Rules(Vec<crate::matching::rules::RuleError>),
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event could not be encoded: {0}")]
    Encode(String),
}

impl Engine {
    /// Compile the rules of a validated config and open every subscription queue.
    pub fn build<S, T>(
        config: &Config<S, T>,
        store: Store,
        metrics: Metrics,
    ) -> Result<Self, BuildError> {
        metrics.register_store(&store);
        let rules = RuleSet::compile(&config.rules).map_err(BuildError::Rules)?;
        let mut rule_subs = Vec::with_capacity(config.rules.len());
        let mut subscriptions = Vec::new();
        for rule in &config.rules {
            let mut subs = Vec::new();
            let dead_letter = match &rule.dead_letter {
                Some(target) => {
                    let name = format!("{}.dead-letter", rule.name);
                    let sub = subscription(&store, &metrics, rule, target, name, Role::DeadLetter)?;
                    sub.update_depth();
                    subscriptions.push(sub.clone());
                    Some(sub)
                }
                None => None,
            };
            for target in &rule.targets {
                let name = format!("{}.{}", rule.name, target);
                let role = Role::Matches {
                    forward: dead_letter.clone(),
                };
                let sub = subscription(&store, &metrics, rule, target, name, role)?;
                sub.update_depth();
                subs.push(sub.clone());
                subscriptions.push(sub);
            }
            rule_subs.push(subs);
        }
        if !config.server.dedupe_window.is_zero() {
            for sub in &subscriptions {
                let restored = sub.queue.repair_dedupe()?;
                if restored > 0 {
                    tracing::info!(subscription = %sub.name, restored, "Restored de-duplication keys lost in a crash.");
                }
            }
        }
        Ok(Self {
            rules,
            rule_subs,
            subscriptions,
            store,
            metrics,
            dedupe_window_ms: config.server.dedupe_window.as_millis() as u64,
        })
    }

    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    pub fn subscriptions(&self) -> &[Arc<Subscription>] {
        &self.subscriptions
    }

    pub fn subscription(&self, name: &str) -> Option<&Arc<Subscription>> {
        self.subscriptions.iter().find(|s| s.name == name)
    }

    /// The deepest queue among the subscriptions of `bus`: how far delivery lags.
    pub fn backlog(&self, bus: &str) -> u64 {
        self.subscriptions
            .iter()
            .filter(|s| s.bus == bus)
            .map(|s| s.queue.stats().depth)
            .max()
            .unwrap_or(0)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How long a published event's key (or a source's position) is remembered to
    /// drop replays; 0 when de-duplication is off.
    pub fn dedupe_window_ms(&self) -> u64 {
        self.dedupe_window_ms
    }

    /// Match `events` against the rules of `bus`, write each into every matching
    /// subscription, and return once all of it is durable. Returns the number of
    /// (event, subscription) pairs written. Replays are recognised by event key.
    pub async fn publish(
        &self,
        bus: &str,
        source: &str,
        events: &[Event],
    ) -> Result<usize, PublishError> {
        self.publish_with(bus, source, events, Replays::ByKey).await
    }

    /// [`Engine::publish`], with the way replays are recognised.
    pub async fn publish_with(
        &self,
        bus: &str,
        source: &str,
        events: &[Event],
        replays: Replays<'_>,
    ) -> Result<usize, PublishError> {
        let now = now_ms();
        let window_ms = match replays {
            Replays::ByKey => self.dedupe_window_ms,
            Replays::ByPosition { .. } => 0,
        };
        let mut scratch = Scratch::default();
        let mut matched = Vec::new();
        // Each matching event once, then per subscription the events it gets, so
        // each queue takes them (and checks their keys) under its lock once.
        let mut records: Vec<(Record, [u8; 16])> = Vec::new();
        let mut per_sub: Vec<(&Arc<Subscription>, Vec<usize>)> = Vec::new();
        for event in events {
            matched.clear();
            self.rules.matching(bus, event, &mut scratch, &mut matched);
            if matched.is_empty() {
                continue;
            }
            let text =
                serde_json::to_string(event).map_err(|e| PublishError::Encode(e.to_string()))?;
            let raw =
                RawValue::from_string(text).map_err(|e| PublishError::Encode(e.to_string()))?;
            let index = records.len();
            records.push((Record::new(raw, now), event_key(event).into_bytes()));
            for &rule in &matched {
                for sub in &self.rule_subs[rule as usize] {
                    match per_sub.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sub)) {
                        Some((_, list)) => list.push(index),
                        None => per_sub.push((sub, vec![index])),
                    }
                }
            }
        }
        let mut written = 0;
        let mut duplicate = vec![false; records.len()];
        for (sub, list) in &per_sub {
            let batch: Vec<(&Record, &[u8; 16])> = list
                .iter()
                .map(|&i| (&records[i].0, &records[i].1))
                .collect();
            let queued = sub.queue.enqueue_all(&batch, window_ms, now)?;
            for (&i, queued) in list.iter().zip(queued) {
                if queued {
                    written += 1;
                    sub.metrics.matched.inc();
                } else {
                    duplicate[i] = true;
                }
            }
        }
        let duplicates = duplicate.iter().filter(|d| **d).count() as u64;
        self.metrics
            .received(bus, source)
            .inc_by(events.len() as u64);
        if duplicates > 0 {
            self.metrics.duplicates(bus, source).inc_by(duplicates);
        }
        if let Replays::ByPosition {
            progress,
            positions,
        } = replays
        {
            // After the records they cover: sled recovers writes in order.
            for (key, position) in positions {
                progress.put(
                    key,
                    Position {
                        position: *position,
                        written_ms: now,
                    },
                )?;
            }
        }
        if written > 0 {
            self.store.commit().await?;
        }
        for (sub, _) in per_sub {
            sub.update_depth();
            sub.notify.notify_one();
        }
        Ok(written)
    }
}
