//! The dispatcher: one task per subscription that leases events from its queue,
//! delivers up to `concurrency` at once through the target's [`Sink`], and settles
//! each outcome in the store (delivered, retry later, or dead letter).
//!
//! Subscriptions share nothing but the store, so a slow or failing target only
//! ever holds up its own queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::ErrorClass;
use crate::event::Event;
use crate::metrics::SubscriptionMetrics;
use crate::now_ms;
use crate::retry::{Next, RetryPolicy};
use crate::sink::{Sink, SinkError};
use crate::store::{DeadLetter, Leased, Queue, Record, Settlement};
use crate::transform::Transform;

/// One (rule, target) pair: its queue, its wake-up signal and its metrics.
pub struct Subscription {
    /// `<rule>.<target>`: the name used by the admin API.
    pub name: String,
    pub bus: String,
    pub rule: String,
    pub target: String,
    pub queue: Queue,
    /// Signalled when new events are committed to the queue.
    pub notify: Notify,
    pub metrics: SubscriptionMetrics,
    /// Where this subscription forwards what it gives up on (the rule's
    /// `dead_letter` target), if anywhere.
    pub dead_letter: Option<Arc<Subscription>>,
    /// Whether this is a rule's dead-letter subscription (it gets original events,
    /// not transformed ones).
    pub is_dead_letter: bool,
}

impl Subscription {
    /// Refresh the depth gauge from the queue.
    pub fn update_depth(&self) {
        self.metrics.depth.set(self.queue.stats().depth as i64);
    }
}

/// Delivers one subscription's queue.
pub struct Dispatcher {
    sub: Arc<Subscription>,
    sink: Arc<dyn Sink>,
    transform: Option<Arc<Transform>>,
    policy: RetryPolicy,
    concurrency: usize,
}

type Done = (Leased, Result<(), SinkError>, u64);

impl Dispatcher {
    pub fn new(
        sub: Arc<Subscription>,
        sink: Arc<dyn Sink>,
        transform: Option<Arc<Transform>>,
        policy: RetryPolicy,
        concurrency: usize,
    ) -> Self {
        Self {
            sub,
            sink,
            transform,
            policy,
            concurrency: concurrency.max(1),
        }
    }

    /// Run until `shutdown`; then wait up to `grace` for deliveries in flight.
    /// Whatever is still in flight after that stays in the store for the next start.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) {
        let mut in_flight: HashSet<Vec<u8>> = HashSet::new();
        let mut tasks: JoinSet<Done> = JoinSet::new();
        // The last ready key leased: ready keys appear in increasing order, and
        // any older one still in the ready range is in flight, so scanning on from
        // here finds exactly the new events.
        let mut cursor: Option<Vec<u8>> = None;
        loop {
            // Every wake-up (a completion, new events, a retry coming due) leases
            // whatever room there is.
            if in_flight.len() < self.concurrency {
                let room = self.concurrency - in_flight.len();
                match self
                    .sub
                    .queue
                    .lease(room, now_ms(), &in_flight, cursor.as_deref())
                {
                    Ok(batch) => {
                        for leased in batch {
                            if leased.is_ready() {
                                cursor = Some(leased.key.clone());
                            }
                            in_flight.insert(leased.key.clone());
                            let sink = self.sink.clone();
                            let transform = self.transform.clone();
                            tasks.spawn(async move {
                                let started = now_ms();
                                let result = deliver(&*sink, transform.as_deref(), &leased).await;
                                (leased, result, started)
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(subscription = %self.sub.name, error = %e, "Lease failed; retrying in 1s.");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                            () = shutdown.cancelled() => break,
                        }
                        continue;
                    }
                }
            }
            // Wake for the next retry that is not already in flight; one already
            // due wakes at once. Without room, a completion wakes the loop instead.
            let timer = if in_flight.len() < self.concurrency {
                self.sub
                    .queue
                    .next_due_ms(&in_flight)
                    .map(|due| Duration::from_millis(due.saturating_sub(now_ms())))
            } else {
                None
            };
            tokio::select! {
                biased;
                Some(done) = tasks.join_next() => {
                    let mut finished = vec![done];
                    while let Some(more) = tasks.try_join_next() {
                        finished.push(more);
                    }
                    self.settle(finished, &mut in_flight);
                }
                () = self.sub.notify.notified() => {}
                () = sleep_opt(timer) => {}
                () = shutdown.cancelled() => break,
            }
        }
        // Shutdown: no new leases; finish what is in flight within the grace period.
        let deadline = tokio::time::Instant::now() + grace;
        while !tasks.is_empty() {
            match tokio::time::timeout_at(deadline, tasks.join_next()).await {
                Ok(Some(done)) => self.settle(vec![done], &mut in_flight),
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(subscription = %self.sub.name, in_flight = tasks.len(), "Deliveries still in flight at shutdown stay queued.");
                    tasks.abort_all();
                    break;
                }
            }
        }
    }

    fn settle(
        &self,
        finished: Vec<Result<Done, tokio::task::JoinError>>,
        in_flight: &mut HashSet<Vec<u8>>,
    ) {
        let now = now_ms();
        let mut outcomes = Vec::with_capacity(finished.len());
        for done in finished {
            let Ok((leased, result, started)) = done else {
                // A delivery task panicked; its key stays in flight until restart
                // rather than being delivered twice concurrently.
                tracing::error!(subscription = %self.sub.name, "A delivery task failed.");
                continue;
            };
            in_flight.remove(&leased.key);
            outcomes.push(self.outcome(leased, result, started, now));
        }
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
            tracing::error!(subscription = %self.sub.name, error = %e, "Settling deliveries failed.");
            return;
        }
        self.sub.update_depth();
        if let (Some(dl), false) = (&self.sub.dead_letter, forwards.is_empty()) {
            for record in &forwards {
                if let Err(e) = dl.queue.enqueue(record) {
                    // The event stays in this subscription's dead-letter list.
                    tracing::error!(subscription = %dl.name, error = %e, "Forwarding a dead letter failed.");
                }
            }
            dl.update_depth();
            dl.notify.notify_one();
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
        record.attempts.push(started);
        record.last_error = Some(error.message.clone());
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

/// Read the stored event, transform it, deliver it. A transform that fails on this
/// event is a permanent error: the event is dead-lettered with the reason.
async fn deliver(
    sink: &dyn Sink,
    transform: Option<&Transform>,
    leased: &Leased,
) -> Result<(), SinkError> {
    let event: Event = serde_json::from_str(leased.record.event.get()).map_err(|e| {
        SinkError::permanent(format!("stored event is not a valid CloudEvent: {e}"))
    })?;
    match transform {
        Some(t) => {
            let out = t
                .apply(&event)
                .map_err(|e| SinkError::permanent(format!("transform failed: {e}")))?;
            sink.deliver(&out).await
        }
        None => sink.deliver(&event).await,
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
