//! The dispatcher: one task per subscription that leases events from its queue,
//! delivers up to `concurrency` at once (or, for a batching target, up to
//! `concurrency` batches) through the target's [`Sink`], and settles each event's
//! outcome in the store (delivered, retry later, or dead letter). Events of a
//! batch are settled one by one, so a rejected item does not hold back the rest.
//!
//! Subscriptions share nothing but the store, so a slow or failing target only
//! ever holds up its own queue.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::breaker::{verdict, Breaker, Gate};
use super::rate::RateLimiter;
use super::results::{Results, Routed};
use crate::config::BatchConfig;
use crate::delivery::retry::{Next, RetryPolicy};
use crate::error::ErrorClass;
use crate::event::Event;
use crate::metrics::SubscriptionMetrics;
use crate::now_ms;
use crate::sink::{Answer, Sink, SinkError};
use crate::store::{DeadLetter, Health, Leased, Queue, Record, Settlement};
use crate::transform::Transform;

/// One (rule, target) pair: its queue, its wake-up signal and its metrics.
pub(crate) struct Subscription {
    /// `<rule>.<target>`: the name used by the admin API.
    pub(crate) name: String,
    pub(crate) bus: String,
    pub(crate) rule: String,
    /// The rule's index in the configuration (its transform and retry schedule).
    pub(crate) rule_index: usize,
    pub(crate) target: String,
    pub(crate) queue: Queue,
    /// Signalled when new events are committed to the queue.
    pub(crate) notify: Notify,
    pub(crate) metrics: SubscriptionMetrics,
    /// Where this subscription forwards what it gives up on (the rule's
    /// `dead_letter` target), if anywhere.
    pub(crate) dead_letter: Option<Arc<Subscription>>,
    /// Whether this subscription delivers what the rule's others hand it: its
    /// dead-letter subscription (original events) or a result subscription
    /// (`<rule>.on-success`, `<rule>.on-failure`). Such events are delivered as
    /// they are (no transform) and make no results of their own.
    pub(crate) is_dead_letter: bool,
    /// Whether the store can still write; delivery pauses while it cannot.
    pub(crate) health: Health,
    /// Whether the target was asked once (see [`Sink::check`]) since start.
    pub(crate) checked: std::sync::atomic::AtomicBool,
    /// Why the target cannot take events yet (its [`Sink::check`] failed), if so.
    pub(crate) not_ready: Mutex<Option<String>>,
    /// Whether delivery is paused by the operator (`POST .../pause`): nothing
    /// new is leased; deliveries in flight finish.
    pub(crate) paused: std::sync::atomic::AtomicBool,
    /// The target's circuit breaker, this subscription's own state of it.
    pub(crate) breaker: Option<Breaker>,
}

impl Subscription {
    /// Why the target cannot take events yet, if so.
    pub(crate) fn not_ready(&self) -> Option<String> {
        self.not_ready.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn set_not_ready(&self, reason: Option<String>) {
        self.checked
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut r) = self.not_ready.lock() {
            *r = reason;
        }
    }

    /// Events were appended to this subscription alone (forwarded dead letters,
    /// results): they are leased once durable, so its dispatcher is told after
    /// the commit that makes them so.
    pub(crate) fn announce(self: &Arc<Self>) {
        self.update_depth();
        let sub = self.clone();
        tokio::spawn(async move {
            match sub.queue.commit().await {
                Ok(()) => sub.notify.notify_one(),
                Err(e) => sub.health.note(&e),
            }
        });
    }

    /// Refresh the depth gauge from the queue.
    pub(crate) fn update_depth(&self) {
        self.metrics.depth.set(self.queue.stats().depth as i64);
    }
}

/// How a dispatcher groups events into deliveries. A target without a `batch`
/// setting gets batches of one, sent at once.
#[derive(Debug, Clone)]
struct Batching {
    max_events: usize,
    max_bytes: usize,
    max_wait: Duration,
    /// Whether the target has a `batch` setting (and may have stable batches).
    batched: bool,
}

/// Delivers one subscription's queue.
pub(crate) struct Dispatcher {
    /// Set when a delivery found the target not set up (a `Config`-class error):
    /// the target is checked again before anything more is delivered.
    recheck: std::sync::atomic::AtomicBool,
    sub: Arc<Subscription>,
    sink: Arc<dyn Sink>,
    transform: Option<Arc<Transform>>,
    policy: RetryPolicy,
    concurrency: usize,
    batching: Batching,
    /// The target's `rate_limit` bucket, shared with its other subscriptions.
    limiter: Option<Arc<RateLimiter>>,
    /// The rule's result destinations, if it has any.
    results: Option<Arc<Results>>,
}

/// One delivered event's outcome, with the target's answer when it gave one.
type Delivered = Result<Option<Answer>, SinkError>;

/// A finished delivery task: each leased event with its result, when it started,
/// and the batch plan to remove with the settlement (stable batches only).
type Done = (Vec<(Leased, Delivered)>, u64, Option<Vec<u8>>);

/// How long the dispatcher waits before asking an unready target again.
const CHECK_INTERVAL: Duration = Duration::from_secs(5);

impl Dispatcher {
    /// `concurrency` is deliveries (or batches) in flight at once.
    pub(crate) fn new(
        sub: Arc<Subscription>,
        sink: Arc<dyn Sink>,
        transform: Option<Arc<Transform>>,
        policy: RetryPolicy,
        concurrency: usize,
    ) -> Self {
        Self {
            recheck: std::sync::atomic::AtomicBool::new(false),
            sub,
            sink,
            transform,
            policy,
            concurrency: concurrency.max(1),
            batching: Batching {
                max_events: 1,
                max_bytes: usize::MAX,
                max_wait: Duration::ZERO,
                batched: false,
            },
            limiter: None,
            results: None,
        }
    }

    /// Make each delivery's result event and store it where `results` say,
    /// before the delivery is settled.
    pub(crate) fn with_results(mut self, results: Arc<Results>) -> Self {
        self.results = Some(results);
        self
    }

    /// Bytes of a function's answer to keep: none without an `on_success`.
    fn answer_bytes(&self) -> usize {
        match &self.results {
            Some(r) if r.on_success.is_some() => r.max_body,
            _ => 0,
        }
    }

    /// Deliver no faster than `limiter` lets events through.
    pub(crate) fn with_rate_limit(mut self, limiter: Arc<RateLimiter>) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Deliver in batches through [`Sink::deliver_batch`].
    pub(crate) fn with_batches(mut self, batch: &BatchConfig) -> Self {
        self.batching = Batching {
            max_events: batch.max_events.max(1),
            max_bytes: batch.max_bytes.max(1),
            max_wait: batch.max_wait,
            batched: true,
        };
        self
    }

    /// Run until `shutdown`; then wait up to `grace` for deliveries in flight.
    /// Whatever is still in flight after that stays in the store for the next start.
    pub(crate) async fn run(self, shutdown: CancellationToken, grace: Duration) {
        if !self.wait_until_ready(&shutdown).await {
            return;
        }
        let b = self.batching.clone();
        // Every leased key, waiting in `pending` or being delivered. At most this
        // many events are held in memory.
        let capacity = self.concurrency * b.max_events;
        let mut in_flight: HashSet<Vec<u8>> = HashSet::new();
        let mut pending: VecDeque<Leased> = VecDeque::new();
        let mut pending_since: Option<tokio::time::Instant> = None;
        let mut tasks: JoinSet<Done> = JoinSet::new();
        let stable = b.batched && self.sink.stable_batches();
        if stable {
            // Batches planned before the last stop go first, exactly as they were.
            match self.sub.queue.plans() {
                Ok(plans) => {
                    for (plan, batch) in plans {
                        in_flight.extend(batch.iter().map(|l| l.key.clone()));
                        tasks.spawn(self.stable_batch(batch, Some(plan)));
                    }
                }
                Err(e) => {
                    tracing::error!(subscription = %self.sub.name, error = %e, "Reading batch plans failed.");
                }
            }
        }
        // The last ready key leased: ready keys appear in increasing order, and
        // any older one still in the ready range is in flight, so scanning on from
        // here finds exactly the new events.
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            // A store that cannot write cannot record what a delivery did: deliver
            // nothing more (what is in flight finishes) until it is reopened.
            if self.sub.health.failure().is_some() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        self.settle(vec![done], &mut in_flight).await;
                        continue;
                    }
                }
            }
            // A delivery found the target not set up: hold until it is again.
            if self
                .recheck
                .swap(false, std::sync::atomic::Ordering::Relaxed)
                && !self.wait_until_ready(&shutdown).await
            {
                break;
            }
            // Paused: lease nothing; let what is in flight finish, and wait for a
            // resume (it notifies) or shutdown.
            if self.sub.paused.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.sub.notify.notified() => continue,
                    Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                        self.settle(vec![done], &mut in_flight).await;
                        continue;
                    }
                }
            }
            // An open breaker leases nothing until its cooldown ends, then one probe.
            let gate = match &self.sub.breaker {
                Some(b) => b.gate(now_ms(), in_flight.is_empty()),
                None => Gate::Open,
            };
            // Every wake-up (a completion, new events, a retry coming due) leases
            // whatever room there is.
            let room = match gate {
                Gate::Open => capacity.saturating_sub(in_flight.len()),
                Gate::Probe => 1,
                Gate::Shut(_) => 0,
            };
            if tasks.len() < self.concurrency && room > 0 {
                match self
                    .sub
                    .queue
                    .lease(room, now_ms(), &in_flight, cursor.as_deref())
                {
                    Ok(leased) => {
                        if let (Gate::Probe, Some(b), false) =
                            (gate, &self.sub.breaker, leased.is_empty())
                        {
                            b.probe_sent();
                        }
                        for l in leased {
                            if l.is_ready() {
                                cursor = Some(l.key.clone());
                            }
                            in_flight.insert(l.key.clone());
                            pending.push_back(l);
                            pending_since.get_or_insert_with(tokio::time::Instant::now);
                        }
                    }
                    Err(e) => {
                        self.sub.health.note(&e);
                        tracing::error!(subscription = %self.sub.name, error = %e, "Lease failed; retrying in 1s.");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            // Send every batch that is full, or has waited long enough.
            while tasks.len() < self.concurrency && !pending.is_empty() {
                let (n, full) = batch_len(&pending, &b);
                let waited = pending_since.is_none_or(|t| t.elapsed() >= b.max_wait);
                if !full && !waited {
                    break;
                }
                let batch: Vec<Leased> = pending.drain(..n).collect();
                if pending.is_empty() {
                    pending_since = None;
                }
                if stable {
                    tasks.spawn(self.stable_batch(batch, None));
                    continue;
                }
                let sink = self.sink.clone();
                let transform = self.transform.clone();
                let limiter = self.limiter.clone();
                let keep = self.answer_bytes();
                tasks.spawn(async move {
                    if let Some(limiter) = limiter {
                        limiter.acquire(batch.len()).await;
                    }
                    let started = now_ms();
                    let results = deliver(&*sink, transform.as_deref(), &batch, keep).await;
                    (batch.into_iter().zip(results).collect(), started, None)
                });
            }
            // Wake for the next retry that is not already in flight (one already
            // due wakes at once), or when the pending batch has waited long enough.
            // Without room, a completion wakes the loop instead.
            let flush = pending_since.map(|t| b.max_wait.saturating_sub(t.elapsed()));
            let timer = match gate {
                // Open breaker: retries wait too; wake when its cooldown ends.
                Gate::Shut(cooldown) => cooldown.into_iter().chain(flush).min(),
                _ if tasks.len() < self.concurrency => {
                    let retry = if in_flight.len() < capacity {
                        self.sub
                            .queue
                            .next_due_ms(&in_flight)
                            .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
                    } else {
                        None
                    };
                    retry.into_iter().chain(flush).min()
                }
                _ => None,
            };
            tokio::select! {
                biased;
                Some(done) = tasks.join_next() => {
                    let mut finished = vec![done];
                    while let Some(more) = tasks.try_join_next() {
                        finished.push(more);
                    }
                    self.settle(finished, &mut in_flight).await;
                }
                () = self.sub.notify.notified() => {}
                () = sleep_opt(timer) => {}
                () = shutdown.cancelled() => break,
            }
        }
        // Shutdown: no new leases; finish what is in flight within the grace period.
        // Pending events were never sent and stay in the store.
        let deadline = tokio::time::Instant::now() + grace;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(done)) => self.settle(vec![done], &mut in_flight).await,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(subscription = %self.sub.name, in_flight = tasks.len(), "Deliveries still in flight at shutdown stay queued.");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    /// Hold deliveries until the target says it can take events; `false` when
    /// shut down first. The reason is kept on the subscription for `/readyz`.
    async fn wait_until_ready(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let checked = tokio::select! {
                r = self.sink.check() => r,
                () = shutdown.cancelled() => return false,
            };
            match checked {
                Ok(()) => {
                    if self.sub.not_ready().is_some() {
                        tracing::info!(subscription = %self.sub.name, target = %self.sub.target, "Target ready again; deliveries resume.");
                    }
                    self.sub.set_not_ready(None);
                    return true;
                }
                Err(e) => {
                    let reason = e.message;
                    // Said once per reason, not at every check.
                    if self.sub.not_ready().as_deref() != Some(reason.as_str()) {
                        tracing::warn!(subscription = %self.sub.name, target = %self.sub.target, class = ?e.class, reason = %reason, "Target not ready; deliveries wait.");
                    }
                    self.sub.set_not_ready(Some(reason));
                }
            }
            tokio::select! {
                () = tokio::time::sleep(CHECK_INTERVAL) => {}
                () = shutdown.cancelled() => return false,
            }
        }
    }

    /// A batch that must reach the target exactly as formed (see
    /// [`crate::store::Queue::plan`]): its plan is made durable first (unless it is
    /// a recovered one), and it is retried as a whole, here, until every event is
    /// written or given up, so its events never regroup.
    fn stable_batch(
        &self,
        batch: Vec<Leased>,
        plan: Option<Vec<u8>>,
    ) -> impl std::future::Future<Output = Done> + Send + 'static {
        let sink = self.sink.clone();
        let transform = self.transform.clone();
        let queue = self.sub.queue.clone();
        let policy = self.policy.clone();
        let name = self.sub.name.clone();
        let keep = self.answer_bytes();
        async move {
            let started = now_ms();
            let plan = match plan {
                Some(plan) => Some(plan),
                None => {
                    let keys: Vec<&[u8]> = batch.iter().map(|l| l.key.as_slice()).collect();
                    match queue.plan(&keys).await {
                        Ok(plan) => Some(plan),
                        Err(e) => {
                            // Not sent: the events are retried like any failure.
                            let err = SinkError::transient(e.to_string());
                            let results = batch.into_iter().map(|l| (l, Err(err.clone())));
                            return (results.collect(), started, None);
                        }
                    }
                }
            };
            let oldest = batch
                .iter()
                .map(|l| l.record.enqueued_ms)
                .min()
                .unwrap_or(started);
            let mut attempts = 0u32;
            loop {
                let mut results = deliver(&*sink, transform.as_deref(), &batch, keep).await;
                attempts += 1;
                let retryable = results.iter().find_map(|r| match r {
                    Err(e) if matches!(e.class, ErrorClass::Transient | ErrorClass::Internal) => {
                        Some(e.clone())
                    }
                    _ => None,
                });
                let Some(error) = retryable else {
                    return (batch.into_iter().zip(results).collect(), started, plan);
                };
                match policy.next(attempts, oldest, now_ms(), error.retry_after) {
                    Next::RetryAt(due_ms) => {
                        tracing::debug!(subscription = %name, error = %error, due_ms, "Batch failed; will retry it whole.");
                        let wait = due_ms.saturating_sub(now_ms());
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    Next::GiveUp(why) => {
                        for r in &mut results {
                            if let Err(e) = r {
                                if e.class != ErrorClass::Permanent {
                                    e.class = ErrorClass::Permanent;
                                    e.message = format!("{why}: {}", e.message);
                                }
                            }
                        }
                        return (batch.into_iter().zip(results).collect(), started, plan);
                    }
                }
            }
        }
    }

    async fn settle(
        &self,
        finished: Vec<Result<Done, tokio::task::JoinError>>,
        in_flight: &mut HashSet<Vec<u8>>,
    ) {
        let now = now_ms();
        let mut routed = Vec::with_capacity(finished.len());
        for done in finished {
            let Ok((results, started, plan)) = done else {
                // A delivery task panicked; its keys stay in flight until restart
                // rather than being delivered twice concurrently.
                tracing::error!(subscription = %self.sub.name, "A delivery task failed.");
                continue;
            };
            if let Some(b) = &self.sub.breaker {
                if let Some(failure) = verdict(results.iter().map(|(_, r)| r)) {
                    b.record(failure, now);
                }
            }
            for (leased, result) in results {
                in_flight.remove(&leased.key);
                routed.push(self.route(leased, result, started, now));
            }
            if let Some(key) = plan {
                routed.push(Routed::plain(Settlement::PlanDone { key }));
            }
        }
        if let Some(results) = &self.results {
            self.failure_results(results, &mut routed);
            results.store(&self.sub.name, &mut routed, now).await;
        }
        let given = Results::given(&routed);
        let outcomes: Vec<Settlement> = routed.into_iter().map(|r| r.settlement).collect();
        let forwards: Vec<Record> = match &self.sub.dead_letter {
            Some(_) => outcomes
                .iter()
                .filter_map(|o| match o {
                    Settlement::DeadLetter { letter, .. } => {
                        forward_record(letter, &self.sub.name, now)
                    }
                    _ => None,
                })
                .collect(),
            None => Vec::new(),
        };
        if let Err(e) = self.sub.queue.settle(outcomes) {
            // Not settled means delivered again later: at least once holds.
            self.sub.health.note(&e);
            if !e.io {
                tracing::error!(subscription = %self.sub.name, error = %e, "Settling deliveries failed.");
            }
            return;
        }
        self.sub.update_depth();
        if let Some(results) = &self.results {
            results.notify(given);
        }
        if let (Some(dl), false) = (&self.sub.dead_letter, forwards.is_empty()) {
            for record in &forwards {
                if let Err(e) = dl.queue.enqueue(record) {
                    // The event stays in this subscription's dead-letter list.
                    tracing::error!(subscription = %dl.name, error = %e, "Forwarding a dead letter failed.");
                }
            }
            dl.announce();
        }
    }

    /// The settlement of one delivery and, with an `on_success`, its result. A
    /// success whose result would go past `server.max_hops` is dead-lettered
    /// instead, saying the chain was stopped.
    fn route(&self, leased: Leased, result: Delivered, started: u64, now: u64) -> Routed {
        let mut made = None;
        let result = match (result, &self.results) {
            (Ok(answer), Some(results)) if results.on_success.is_some() => {
                match results.succeeded(&self.sub.name, &leased.record, answer) {
                    Ok(event) => {
                        made = Some(event);
                        Ok(())
                    }
                    Err(why) => Err(SinkError::permanent(why.to_string())),
                }
            }
            (result, _) => result.map(|_| ()),
        };
        let record = made.as_ref().map(|_| leased.record.clone());
        Routed {
            settlement: self.outcome(leased, result, started, now),
            record,
            result: made.map(|e| (true, e)),
        }
    }

    /// With an `on_failure`, the result of each delivery that ends dead-lettered
    /// (none past `server.max_hops`: the chain stops there).
    fn failure_results(&self, results: &Results, routed: &mut [Routed]) {
        if results.on_failure.is_none() {
            return;
        }
        for r in routed {
            let Settlement::DeadLetter { letter, .. } = &r.settlement else {
                continue;
            };
            let made = results.failed(
                &self.sub.name,
                &letter.record,
                &letter.reason,
                letter.last_status,
                letter.body_excerpt.as_deref(),
            );
            match made {
                Ok(event) => r.result = Some((false, event)),
                Err(why) => {
                    tracing::warn!(subscription = %self.sub.name, reason = %why, "No failure result.");
                }
            }
        }
    }

    fn outcome(
        &self,
        leased: Leased,
        result: Result<(), SinkError>,
        started: u64,
        now: u64,
    ) -> Settlement {
        let Leased { key, mut record } = leased;
        let m = &self.sub.metrics;
        let error = match result {
            Ok(()) => {
                m.delivered.inc();
                m.latency
                    .observe(now.saturating_sub(record.enqueued_ms) as f64 / 1000.0);
                return Settlement::Delivered { key };
            }
            Err(e) => e,
        };
        record.last_error = Some(error.message.clone());
        if error.class == ErrorClass::Config {
            // The target is not set up: not this event's fault. Check the target
            // again and retry the event then, without using up an attempt.
            self.recheck
                .store(true, std::sync::atomic::Ordering::Relaxed);
            if self.sub.not_ready().is_none() {
                tracing::warn!(subscription = %self.sub.name, target = %self.sub.target, reason = %error.message, "Target not set up to take events; deliveries wait until it is.");
            }
            self.sub.set_not_ready(Some(error.message.clone()));
            return Settlement::Retry {
                key,
                record,
                due_ms: now + 1_000,
            };
        }
        record.attempts.push(started);
        let next = match error.class {
            ErrorClass::Permanent | ErrorClass::Config => Next::GiveUp("permanent error".into()),
            ErrorClass::Transient | ErrorClass::Internal => self.policy.next(
                record.attempts.len() as u32,
                record.enqueued_ms,
                now,
                error.retry_after,
            ),
        };
        match next {
            Next::RetryAt(due_ms) => {
                m.retried.inc();
                tracing::debug!(subscription = %self.sub.name, error = %error, due_ms, "Delivery failed; will retry.");
                Settlement::Retry {
                    key,
                    record,
                    due_ms,
                }
            }
            Next::GiveUp(why) => {
                m.dead_lettered.inc();
                tracing::warn!(subscription = %self.sub.name, error = %error, reason = %why, "Event dead-lettered.");
                Settlement::DeadLetter {
                    key,
                    letter: DeadLetter {
                        seq: 0,
                        dead_lettered_ms: now,
                        reason: format!("{why}: {}", error.message),
                        last_status: error.status,
                        body_excerpt: error.body_excerpt,
                        record,
                    },
                }
            }
        }
    }
}

/// The record a rule's dead-letter target gets: the original event with the reason
/// and the subscription as extension attributes.
fn forward_record(letter: &DeadLetter, subscription: &str, now: u64) -> Option<Record> {
    let mut event: serde_json::Value = serde_json::from_str(letter.record.event.get()).ok()?;
    let object = event.as_object_mut()?;
    object.insert("deadletterreason".into(), letter.reason.clone().into());
    object.insert("deadlettersubscription".into(), subscription.into());
    let raw = serde_json::value::RawValue::from_string(event.to_string()).ok()?;
    Some(Record::new(raw, now))
}

/// How many pending events the next batch takes, and whether that batch is full
/// (it reached `max_events` or `max_bytes`). The first event always fits.
fn batch_len(pending: &VecDeque<Leased>, b: &Batching) -> (usize, bool) {
    let mut bytes = 0usize;
    for (i, l) in pending.iter().enumerate() {
        if i == b.max_events {
            return (i, true);
        }
        let size = l.record.event.get().len();
        if i > 0 && bytes.saturating_add(size) > b.max_bytes {
            return (i, true);
        }
        bytes = bytes.saturating_add(size);
    }
    (
        pending.len(),
        pending.len() == b.max_events || bytes >= b.max_bytes,
    )
}

/// Read the stored events, transform them, deliver them: one result per event, in
/// order, with the target's answer (its body up to `keep` bytes; none when 0).
/// An event that fails to read or transform is a permanent error (it is
/// dead-lettered with the reason); the others are delivered without it.
async fn deliver(
    sink: &dyn Sink,
    transform: Option<&Transform>,
    batch: &[Leased],
    keep: usize,
) -> Vec<Delivered> {
    let mut results: Vec<Delivered> = Vec::with_capacity(batch.len());
    let mut events = Vec::with_capacity(batch.len());
    for leased in batch {
        match prepare(transform, leased) {
            Ok(event) => {
                events.push(event);
                results.push(Ok(None));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    let mut written = if events.is_empty() {
        Vec::new()
    } else if keep > 0 {
        sink.deliver_answered(&events, keep).await
    } else {
        let written = sink.deliver(&events).await;
        written.into_iter().map(|r| r.map(|()| None)).collect()
    }
    .into_iter();
    let count = events.len();
    for slot in results.iter_mut().filter(|r| r.is_ok()) {
        *slot = written.next().unwrap_or_else(|| {
            Err(SinkError::transient(format!(
                "the target answered for fewer than the {count} events sent"
            )))
        });
    }
    results
}

fn prepare(transform: Option<&Transform>, leased: &Leased) -> Result<Event, SinkError> {
    let event: Event = serde_json::from_str(leased.record.event.get()).map_err(|e| {
        SinkError::permanent(format!("stored event is not a valid CloudEvent: {e}"))
    })?;
    match transform {
        Some(t) => t
            .apply(&event)
            .map_err(|e| SinkError::permanent(format!("transform failed: {e}"))),
        None => Ok(event),
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
#[path = "dispatch_tests.rs"]
mod tests;
