//! The engine: rules compiled per bus, one subscription per (rule, target), and the
//! publish path every source uses.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::config::Config;
use crate::dispatch::Subscription;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::pattern::Pattern;
use crate::store::{Record, Store, StoreError};

struct Rule {
    pattern: Option<Pattern>,
    subs: Vec<Arc<Subscription>>,
}

/// Everything between a source and the dispatchers.
pub struct Engine {
    buses: HashMap<String, Vec<Rule>>,
    subscriptions: Vec<Arc<Subscription>>,
    store: Store,
    pub metrics: Metrics,
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
    pub fn build(config: &Config, store: Store, metrics: Metrics) -> Result<Self, StoreError> {
        metrics.register_store(&store);
        let mut buses: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut subscriptions = Vec::new();
        for rule in &config.rules {
            let pattern = match &rule.filter {
                // Validation compiled the same pattern already.
                Some(f) => Some(Pattern::compile(&f.pattern).map_err(|e| {
                    StoreError::new("compile rule", format!("rule {}: {e:?}", rule.name))
                })?),
                None => None,
            };
            let mut subs = Vec::new();
            for target in &rule.targets {
                let name = format!("{}.{}", rule.name, target);
                let sub = Arc::new(Subscription {
                    queue: store.queue(&name)?,
                    name,
                    bus: rule.bus.clone(),
                    rule: rule.name.clone(),
                    target: target.clone(),
                    notify: tokio::sync::Notify::new(),
                    metrics: metrics.subscription(&rule.bus, &rule.name, target),
                });
                sub.update_depth();
                subs.push(sub.clone());
                subscriptions.push(sub);
            }
            buses
                .entry(rule.bus.clone())
                .or_default()
                .push(Rule { pattern, subs });
        }
        Ok(Self {
            buses,
            subscriptions,
            store,
            metrics,
        })
    }

    pub fn subscriptions(&self) -> &[Arc<Subscription>] {
        &self.subscriptions
    }

    pub fn subscription(&self, name: &str) -> Option<&Arc<Subscription>> {
        self.subscriptions.iter().find(|s| s.name == name)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Match `events` against the rules of `bus`, write each into every matching
    /// subscription, and return once all of it is durable. Returns the number of
    /// (event, subscription) pairs written.
    pub async fn publish(
        &self,
        bus: &str,
        source: &str,
        events: &[Event],
    ) -> Result<usize, PublishError> {
        let rules = self.buses.get(bus).map(Vec::as_slice).unwrap_or_default();
        let now = now_ms();
        let mut touched: Vec<&Arc<Subscription>> = Vec::new();
        let mut scratch = Vec::new();
        let mut written = 0;
        for event in events {
            let mut encoded: Option<Box<RawValue>> = None;
            for rule in rules {
                if let Some(p) = &rule.pattern {
                    if !p.matches(event, &mut scratch) {
                        continue;
                    }
                }
                let raw = match &encoded {
                    Some(raw) => raw.clone(),
                    None => {
                        let text = serde_json::to_string(event)
                            .map_err(|e| PublishError::Encode(e.to_string()))?;
                        let raw = RawValue::from_string(text)
                            .map_err(|e| PublishError::Encode(e.to_string()))?;
                        encoded.insert(raw).clone()
                    }
                };
                let record = Record::new(raw, now);
                for sub in &rule.subs {
                    sub.queue.enqueue(&record)?;
                    sub.metrics.matched.inc();
                    written += 1;
                    if !touched.iter().any(|t| Arc::ptr_eq(t, sub)) {
                        touched.push(sub);
                    }
                }
            }
        }
        self.metrics
            .received(bus, source)
            .inc_by(events.len() as u64);
        if written > 0 {
            self.store.commit().await?;
        }
        for sub in touched {
            sub.update_depth();
            sub.notify.notify_one();
        }
        Ok(written)
    }
}
