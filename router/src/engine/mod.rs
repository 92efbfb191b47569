//! The engine: the front door of this crate. Everything a connector or the binary
//! does with events goes through it; the store, the subscriptions and the
//! dispatchers behind it are private.
//!
//! - Sources get a [`SourceContext`] ([`Engine::source`]): publish (returns once
//!   durable), publish with replay positions, reject malformed input, the backlog
//!   of their bus, their status, their metrics.
//! - HTTP ingest gets an [`Ingest`] ([`Engine::ingest`]): publish to any bus it
//!   accepts, refused while that bus is over `server.max_backlog`.
//! - The binary starts delivery from a sink per target ([`Engine::start_delivery`])
//!   and runs the admin API on [`Engine::subscriptions`], dead letters and redrive.

mod delay;
mod delivery;
mod ingest;
mod ops;
mod system;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

pub use self::delay::{DELAY, DELIVER_AT};
pub use self::delivery::Delivery;
pub use self::ingest::{BacklogFull, Ingest};
pub use self::ops::{NotReady, SubscriptionInfo};
pub use self::system::{SystemEvents, SYSTEM_BUS};
use crate::config::{
    BatchConfig, CompiledRules, DestinationConfig, RuleConfig, ServerConfig, SourceEntry,
    TargetEntry, Validated,
};
pub use crate::delivery::breaker::BreakerInfo;
use crate::delivery::dispatch::Subscription;
use crate::delivery::results::Destination;
use crate::delivery::retry::RetryPolicy;
use crate::event::{event_key, Event, EventError};
use crate::matching::rules::Scratch;
pub use crate::metrics::Metrics;
use crate::now_ms;
use crate::source::{SourceContext, SourceStatuses};
use crate::store::bus::BusLog;
pub use crate::store::{DeadLetter, QueueStats, StoreError};
use crate::store::{Position, Progress, Record, Store, StoreOptions};

/// How the dispatchers of one target deliver (from its settings).
#[derive(Debug, Clone)]
pub(crate) struct TargetDelivery {
    concurrency: usize,
    batch: Option<BatchConfig>,
    rate_limit: Option<f64>,
    breaker: Option<crate::config::BreakerConfig>,
}

/// Everything between the sources and the targets.
pub struct Engine {
    rules: Arc<CompiledRules>,
    /// Per rule (same order as the rules), its subscriptions.
    rule_subs: Vec<Vec<Arc<Subscription>>>,
    subscriptions: Vec<Arc<Subscription>>,
    /// Per rule, its retry schedule.
    retry: Vec<RetryPolicy>,
    /// Per rule, where its results go.
    results: Vec<RuleResults>,
    /// Per target, deliveries in flight at most and how it batches.
    targets: HashMap<String, TargetDelivery>,
    store: Store,
    metrics: Metrics,
    /// Buses that accept events: `default` and every bus a rule or source names.
    buses: BTreeSet<String>,
    /// How long a queued event's key (or a source's position) is remembered to
    /// drop replays (0: never).
    dedupe_window_ms: u64,
    /// A bus whose deepest subscription holds more than this refuses ingest.
    max_backlog: u64,
    /// How far ahead `deliverat`/`delay` may ask (`server.max_delay`).
    max_delay_ms: u64,
    server: ServerConfig,
    statuses: SourceStatuses,
}

/// What a subscription is for.
enum Role {
    /// Delivers a rule's matches; what it gives up on also goes to `forward`.
    Matches { forward: Option<Arc<Subscription>> },
    /// Delivers what a rule's other subscriptions hand it, as it is (no
    /// transform): what they gave up on (`<rule>.dead-letter`), or their result
    /// events (`<rule>.on-success`, `<rule>.on-failure`).
    Forwarded,
}

/// Per rule, the subscriptions its results are delivered through when a
/// destination is a target (`{target: NAME}`), or the bus they are published to.
#[derive(Clone, Default)]
pub(crate) struct RuleResults {
    on_success: Option<Destination>,
    on_failure: Option<Destination>,
}

/// Open one subscription of rule `index` to `target`.
fn subscription(
    (store, bus, metrics, targets): (
        &Store,
        &Arc<BusLog>,
        &Metrics,
        &HashMap<String, TargetDelivery>,
    ),
    (index, rule): (usize, &RuleConfig),
    target: &str,
    name: String,
    role: Role,
) -> Result<Arc<Subscription>, StoreError> {
    let (dead_letter, is_dead_letter) = match role {
        Role::Matches { forward } => (forward, false),
        Role::Forwarded => (None, true),
    };
    let queue = store.queue(bus, &name)?;
    let paused = queue.paused()?;
    if paused {
        tracing::warn!(subscription = %name, "Delivery is paused (POST /api/subscriptions/{name}/resume resumes it).");
    }
    let sub = Arc::new(Subscription {
        queue,
        name,
        bus: rule.bus.clone(),
        rule: rule.name.clone(),
        rule_index: index,
        target: target.to_owned(),
        notify: tokio::sync::Notify::new(),
        metrics: metrics.subscription(&rule.bus, &rule.name, target),
        dead_letter,
        is_dead_letter,
        health: store.health().clone(),
        not_ready: std::sync::Mutex::new(None),
        checked: std::sync::atomic::AtomicBool::new(false),
        paused: std::sync::atomic::AtomicBool::new(paused),
        breaker: targets
            .get(target)
            .and_then(|t| t.breaker.clone())
            .map(crate::delivery::breaker::Breaker::new),
    });
    sub.update_depth();
    Ok(sub)
}

/// What a bus mixes into its events' keys, so the same `source` and `id` on two
/// buses are two events (the keys of all buses share one index).
fn bus_key(bus: &str) -> u128 {
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, bus.as_bytes()).as_u128()
}

/// How a publish tells a replayed event from a new one.
#[derive(Clone, Copy)]
pub(crate) enum Replays<'a> {
    /// By the event key (`source` + `id`): an event whose key was queued within
    /// `server.dedupe_window` is dropped (see [`crate::store::replays`]).
    ByKey,
    /// By the source's own positions: the source skips what its positions cover
    /// before publishing, and `positions` (key, position) are stored after these
    /// events and made durable with them. No per-event index is kept.
    ByPosition {
        progress: &'a Progress,
        positions: &'a [(Vec<u8>, i64)],
    },
    /// By the event key, as [`Replays::ByKey`], and `positions` stored after these
    /// events and made durable with them, even when no event was written: marks
    /// a source reads back whatever their age (a timer's last fired instant);
    /// the marks under `removed` are dropped in the same commit.
    Marked {
        progress: &'a Progress,
        positions: &'a [(Vec<u8>, i64)],
        removed: &'a [Vec<u8>],
    },
}

/// Why the engine could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create data_dir {dir}: {error}")]
    DataDir { dir: String, error: std::io::Error },
    #[error("cannot open the store in {dir}: {}", .error.message)]
    Store { dir: String, error: StoreError },
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Events that matched at least one rule.
    pub matched: usize,
    /// (event, subscription) pairs written; replays dropped as duplicates are not.
    pub queued: usize,
}

/// Why a publish was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event could not be encoded: {0}")]
    Encode(String),
    /// An event asks for something the engine refuses (a malformed or too distant
    /// `deliverat`/`delay`); nothing of the call was written. `index` is the
    /// event's place in the call.
    #[error("event {index}: {error}")]
    Invalid { index: usize, error: EventError },
}

impl Engine {
    /// Open the store in `server.data_dir` and every subscription of the
    /// validated configuration's rules.
    pub fn open<S: SourceEntry, T: TargetEntry>(
        validated: &Validated<S, T>,
    ) -> Result<Arc<Self>, EngineError> {
        let dir = &validated.config.server.data_dir;
        std::fs::create_dir_all(dir).map_err(|error| EngineError::DataDir {
            dir: dir.clone(),
            error,
        })?;
        let options = StoreOptions {
            dedupe_window_ms: validated.config.server.dedupe_window.as_millis() as u64,
            dedupe_max_keys: validated.config.server.dedupe_max_keys,
            ..StoreOptions::default()
        };
        let store_error = |error| EngineError::Store {
            dir: dir.clone(),
            error,
        };
        let store = Store::open_with(Path::new(dir), options).map_err(store_error)?;
        let sources: Vec<&str> = validated
            .config
            .sources
            .iter()
            .map(|s| s.spec().name())
            .collect();
        store.open_rejects(&sources).map_err(store_error)?;
        let targets = validated
            .config
            .targets
            .iter()
            .map(|t| {
                let spec = t.spec();
                let delivery = TargetDelivery {
                    concurrency: spec.concurrency(),
                    batch: spec.batch(),
                    rate_limit: spec.rate_limit(),
                    breaker: spec.breaker(),
                };
                (spec.name().to_owned(), delivery)
            })
            .collect();
        let mut buses: BTreeSet<String> = validated
            .config
            .sources
            .iter()
            .map(|s| s.spec().bus().to_owned())
            .collect();
        buses.extend(validated.config.rules.iter().map(|r| r.bus.clone()));
        buses.insert("default".into());
        Self::build(validated, store, targets, buses).map_err(|error| EngineError::Store {
            dir: dir.clone(),
            error,
        })
    }

    pub(crate) fn build<S, T>(
        validated: &Validated<S, T>,
        store: Store,
        targets: HashMap<String, TargetDelivery>,
        buses: BTreeSet<String>,
    ) -> Result<Arc<Self>, StoreError> {
        let config = &validated.config;
        let metrics = Metrics::new();
        metrics.register_store(&store);
        // Each bus's log, opened once with the names of the subscriptions on it.
        let mut names: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for rule in &config.rules {
            let on_bus = names.entry(rule.bus.as_str()).or_default();
            if rule.dead_letter.is_some() {
                on_bus.push(format!("{}.dead-letter", rule.name));
            }
            // Result subscriptions of `{target: NAME}` destinations.
            for (dest, suffix) in [
                (&rule.on_success, "on-success"),
                (&rule.on_failure, "on-failure"),
            ] {
                if dest.as_ref().is_some_and(|d| d.target.is_some()) {
                    on_bus.push(format!("{}.{suffix}", rule.name));
                }
            }
            on_bus.extend(rule.targets.iter().map(|t| format!("{}.{t}", rule.name)));
        }
        let mut logs = HashMap::new();
        for (bus, subs) in &names {
            let subs: Vec<&str> = subs.iter().map(String::as_str).collect();
            logs.insert(*bus, store.open_bus(bus, &subs)?);
        }
        let mut rule_subs = Vec::with_capacity(config.rules.len());
        let mut subscriptions = Vec::new();
        let mut results = Vec::with_capacity(config.rules.len());
        for (index, rule) in config.rules.iter().enumerate() {
            let open = (&store, &logs[rule.bus.as_str()], &metrics, &targets);
            let mut subs = Vec::new();
            let dead_letter = match &rule.dead_letter {
                Some(target) => {
                    let name = format!("{}.dead-letter", rule.name);
                    let role = Role::Forwarded;
                    let sub = subscription(open, (index, rule), target, name, role)?;
                    subscriptions.push(sub.clone());
                    Some(sub)
                }
                None => None,
            };
            let mut destination = |dest: Option<&DestinationConfig>, suffix: &str| {
                let dest = match dest {
                    Some(DestinationConfig { bus: Some(bus), .. }) => {
                        Some(Destination::Bus(bus.clone()))
                    }
                    Some(DestinationConfig {
                        target: Some(target),
                        ..
                    }) => {
                        let name = format!("{}.{suffix}", rule.name);
                        let sub = subscription(open, (index, rule), target, name, Role::Forwarded)?;
                        subscriptions.push(sub.clone());
                        Some(Destination::Target(sub))
                    }
                    _ => None,
                };
                Ok::<_, StoreError>(dest)
            };
            results.push(RuleResults {
                on_success: destination(rule.on_success.as_ref(), "on-success")?,
                on_failure: destination(rule.on_failure.as_ref(), "on-failure")?,
            });
            for target in &rule.targets {
                let name = format!("{}.{}", rule.name, target);
                let role = Role::Matches {
                    forward: dead_letter.clone(),
                };
                let sub = subscription(open, (index, rule), target, name, role)?;
                subs.push(sub.clone());
                subscriptions.push(sub);
            }
            rule_subs.push(subs);
        }
        let server = &config.server;
        let restored = store.restore_replay_keys()?;
        if restored > 0 {
            tracing::info!(
                restored,
                "Restored de-duplication keys a crash had not written."
            );
        }
        Ok(Arc::new(Self {
            rules: validated.rules.clone(),
            rule_subs,
            subscriptions,
            retry: config.rules.iter().map(|r| (&r.retry).into()).collect(),
            results,
            targets,
            store,
            metrics,
            buses,
            dedupe_window_ms: server.dedupe_window.as_millis() as u64,
            max_backlog: server.max_backlog,
            max_delay_ms: u64::try_from(server.max_delay.as_millis()).unwrap_or(u64::MAX),
            server: server.clone(),
            statuses: SourceStatuses::default(),
        }))
    }

    /// The handle source `name` brings events in through, onto `bus`; it stops
    /// when `shutdown` is cancelled.
    pub fn source(
        self: &Arc<Self>,
        name: &str,
        bus: &str,
        shutdown: CancellationToken,
    ) -> Result<SourceContext, StoreError> {
        let marks = self.store.progress(name)?;
        let progress = (self.dedupe_window_ms > 0).then(|| marks.clone());
        Ok(SourceContext::new(
            name,
            bus,
            self.clone(),
            shutdown,
            progress,
            marks,
        ))
    }

    /// The handle HTTP ingest publishes through, to any bus it accepts.
    pub fn ingest(self: &Arc<Self>) -> Ingest {
        Ingest::new(self.clone())
    }

    /// Prometheus metrics: the engine's and those connectors register.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The deepest queue among the subscriptions of `bus`: how far delivery lags.
    pub(crate) fn backlog(&self, bus: &str) -> u64 {
        self.subscriptions
            .iter()
            .filter(|s| s.bus == bus)
            .map(|s| s.queue.depth())
            .max()
            .unwrap_or(0)
    }

    #[cfg(test)]
    pub(crate) fn subscription_handles(&self) -> &[Arc<Subscription>] {
        &self.subscriptions
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn server(&self) -> &ServerConfig {
        &self.server
    }

    pub(crate) fn dedupe_window_ms(&self) -> u64 {
        self.dedupe_window_ms
    }

    pub(crate) fn statuses(&self) -> &SourceStatuses {
        &self.statuses
    }

    /// Match `events` against the rules of `bus`, write each into every matching
    /// subscription, and return once all of it is durable.
    pub(crate) async fn publish(
        &self,
        bus: &str,
        source: &str,
        events: &[Event],
        replays: Replays<'_>,
    ) -> Result<Published, PublishError> {
        let published = self.write(bus, source, events, replays).await;
        if let Err(PublishError::Store(e)) = &published {
            self.store.health().note(e);
        }
        published
    }

    /// Append each event of `records` that is not `duplicate` once, naming the
    /// subscriptions of `per_sub` that take it, with its key (`keys[i]`, zero
    /// when replays are recognised otherwise); returns how many (event,
    /// subscription) pairs.
    fn append(
        &self,
        per_sub: &[(&Arc<Subscription>, Vec<usize>)],
        records: &[(Record, [u8; 16], Option<u64>)],
        keys: &[[u8; 16]],
        duplicate: &[bool],
        now: u64,
    ) -> Result<usize, StoreError> {
        let Some((first, _)) = per_sub.first() else {
            return Ok(0);
        };
        let mut takers: Vec<Vec<u16>> = vec![Vec::new(); records.len()];
        let mut written = 0;
        for (sub, list) in per_sub {
            let mut taken = 0;
            for &i in list.iter().filter(|&&i| !duplicate[i]) {
                takers[i].push(sub.queue.id());
                taken += 1;
            }
            written += taken;
            sub.metrics.matched.inc_by(taken as u64);
        }
        let events: Vec<_> = records
            .iter()
            .zip(keys)
            .zip(&takers)
            .filter(|(_, subs)| !subs.is_empty())
            .map(|(((record, _, due), key), subs)| (record, *key, *due, subs.as_slice()))
            .collect();
        // Every subscription of a publish is on its bus: they share one log.
        first.queue.bus().publish(&events, now)?;
        Ok(written)
    }

    /// Each event's due time (`None`: now), from its `deliverat`/`delay`.
    fn due_times(&self, events: &[Event], now: u64) -> Result<Vec<Option<u64>>, PublishError> {
        events
            .iter()
            .enumerate()
            .map(|(index, e)| {
                delay::due_ms(e, now, self.max_delay_ms)
                    .map_err(|error| PublishError::Invalid { index, error })
            })
            .collect()
    }

    /// `None` when the engine takes every one of `events`; else those it takes
    /// and those it refuses with the reason, for sources that keep refused input
    /// in their dead letters.
    #[allow(clippy::type_complexity)]
    pub(crate) fn screen(&self, events: &[Event]) -> Option<(Vec<Event>, Vec<(Event, String)>)> {
        let now = now_ms();
        let verdicts: Vec<_> = events
            .iter()
            .map(|e| delay::due_ms(e, now, self.max_delay_ms).err())
            .collect();
        if verdicts.iter().all(Option::is_none) {
            return None;
        }
        let mut refused = Vec::new();
        let mut taken = Vec::with_capacity(events.len());
        for (e, verdict) in events.iter().zip(verdicts) {
            match verdict {
                None => taken.push(e.clone()),
                Some(error) => refused.push((e.clone(), error.to_string())),
            }
        }
        Some((taken, refused))
    }

    async fn write(
        &self,
        bus: &str,
        source: &str,
        events: &[Event],
        replays: Replays<'_>,
    ) -> Result<Published, PublishError> {
        let now = now_ms();
        let window_ms = match replays {
            Replays::ByKey | Replays::Marked { .. } => self.dedupe_window_ms,
            Replays::ByPosition { .. } => 0,
        };
        // Every event's due time first: a refused one refuses the call, before
        // anything is written.
        let due = self.due_times(events, now)?;
        let mut scratch = Scratch::default();
        let mut matched = Vec::new();
        // Each matching event once, then per subscription the events it gets, so
        // each queue takes them (and checks their keys) under its lock once.
        let mut records: Vec<(Record, [u8; 16], Option<u64>)> = Vec::new();
        let mut per_sub: Vec<(&Arc<Subscription>, Vec<usize>)> = Vec::new();
        for (event, &due) in events.iter().zip(&due) {
            matched.clear();
            self.rules
                .set()
                .matching(bus, event, &mut scratch, &mut matched);
            if matched.is_empty() {
                continue;
            }
            let text =
                serde_json::to_string(event).map_err(|e| PublishError::Encode(e.to_string()))?;
            let raw =
                RawValue::from_string(text).map_err(|e| PublishError::Encode(e.to_string()))?;
            let index = records.len();
            // A delayed event's clock (retries' `max_age`, delivery latency)
            // starts when it comes due, not while it waits on purpose.
            let since = due.unwrap_or(now);
            records.push((Record::new(raw, since), event_key(event).into_bytes(), due));
            for &rule in &matched {
                for sub in &self.rule_subs[rule as usize] {
                    match per_sub.iter_mut().find(|(s, _)| Arc::ptr_eq(s, sub)) {
                        Some((_, list)) => list.push(index),
                        None => per_sub.push((sub, vec![index])),
                    }
                }
            }
        }
        // Replays within the window are dropped; the keys of the rest are kept
        // from now on, and taken back if their events are not made durable.
        let seen = self.store.replays();
        let bus_key = bus_key(bus);
        let keys: Vec<u128> = records
            .iter()
            .map(|r| u128::from_be_bytes(r.1) ^ bus_key)
            .collect();
        // Without a window nothing is a replay and no key is kept or logged.
        let (duplicate, new_keys, logged): (Vec<bool>, Vec<u128>, Vec<[u8; 16]>) = if window_ms > 0
        {
            let duplicate = seen.check(&keys, now);
            let new_keys = keys
                .iter()
                .zip(&duplicate)
                .filter(|(_, d)| !**d)
                .map(|(k, _)| *k)
                .collect();
            let logged = keys.iter().map(|k| k.to_be_bytes()).collect();
            (duplicate, new_keys, logged)
        } else {
            let n = records.len();
            (vec![false; n], Vec::new(), vec![[0; 16]; n])
        };
        let written = self
            .append(&per_sub, &records, &logged, &duplicate, now)
            .and_then(|written| seen.note(&new_keys, now).map(|()| written));
        let written = match written {
            Ok(written) => written,
            Err(e) => {
                seen.forget(&new_keys);
                return Err(e.into());
            }
        };
        let duplicates = duplicate.iter().filter(|d| **d).count() as u64;
        self.metrics
            .received(bus, source)
            .inc_by(events.len() as u64);
        let unmatched = (events.len() - records.len()) as u64;
        if unmatched > 0 {
            self.metrics.unmatched(bus, source).inc_by(unmatched);
        }
        if duplicates > 0 {
            self.metrics.duplicates(bus, source).inc_by(duplicates);
        }
        if let Replays::ByPosition {
            progress,
            positions,
        }
        | Replays::Marked {
            progress,
            positions,
            ..
        } = replays
        {
            // Made durable after the records they cover (see `store`).
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
        if let Replays::Marked {
            progress, removed, ..
        } = replays
        {
            for key in removed {
                progress.remove(key)?;
            }
        }
        let marked = matches!(replays, Replays::Marked { positions, removed, .. } if !positions.is_empty() || !removed.is_empty());
        // A replay is answered only once what it repeats is durable too: its
        // commit is this round or an earlier one.
        if written > 0 || marked || duplicates > 0 {
            if let Err(e) = self.store.commit().await {
                seen.forget(&new_keys);
                return Err(e.into());
            }
        }
        for (sub, _) in per_sub {
            sub.update_depth();
            sub.notify.notify_one();
        }
        Ok(Published {
            matched: records.len(),
            queued: written,
        })
    }
}
