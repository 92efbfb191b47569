//! A target's circuit breaker, one per subscription (`breaker: {failures,
//! cooldown}` on the target): after `failures` failed deliveries in a row the
//! subscription stops delivering for `cooldown` (open), then lets one probe
//! delivery through (half open); the probe's success closes it, its failure
//! opens it again for another cooldown.
//!
//! The dispatcher asks [`Breaker::gate`] how much it may lease, and reports each
//! finished delivery with [`Breaker::record`]. In memory only: a restart starts
//! closed, and the first failures open it again.

use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::config::BreakerConfig;
use crate::error::ErrorClass;
use crate::sink::SinkError;

/// What the dispatcher may deliver now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// As much as it has room for (closed).
    Open,
    /// One delivery, the probe (half open, nothing in flight).
    Probe,
    /// Nothing: the cooldown ends in this long, or (`None`) a delivery in flight
    /// must finish first.
    Shut(Option<Duration>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { opened_ms: u64, since_ms: u64 },
    HalfOpen { opened_ms: u64, probing: bool },
}

/// A breaker as the admin API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerInfo {
    /// `closed`, `open` or `half_open`.
    pub state: &'static str,
    /// When it opened (RFC 3339), while it is open or half open.
    pub opened_at: Option<String>,
    /// Failed deliveries in a row so far (while closed).
    pub failures: u32,
}

pub(crate) struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

struct Inner {
    state: State,
    /// Times it went from closed to open, and from half open to closed: the
    /// system-event watcher publishes each change it has not seen.
    opened: u64,
    closed: u64,
    /// The error of the delivery that last opened it.
    reason: Option<String>,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: State::Closed { failures: 0 },
                opened: 0,
                closed: 0,
                reason: None,
            }),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What may be delivered at `now_ms`; `idle` when nothing is in flight.
    pub(crate) fn gate(&self, now_ms: u64, idle: bool) -> Gate {
        let mut inner = self.inner();
        match inner.state {
            State::Closed { .. } => Gate::Open,
            State::Open {
                opened_ms,
                since_ms,
            } => {
                let until = since_ms.saturating_add(self.config.cooldown.as_millis() as u64);
                if now_ms < until {
                    return Gate::Shut(Some(Duration::from_millis(until - now_ms)));
                }
                inner.state = State::HalfOpen {
                    opened_ms,
                    probing: false,
                };
                if idle {
                    Gate::Probe
                } else {
                    Gate::Shut(None)
                }
            }
            State::HalfOpen { probing: false, .. } if idle => Gate::Probe,
            State::HalfOpen { .. } => Gate::Shut(None),
        }
    }

    /// The probe was leased and is on its way.
    pub(crate) fn probe_sent(&self) {
        if let State::HalfOpen { probing, .. } = &mut self.inner().state {
            *probing = true;
        }
    }

    /// A delivery finished: `failure` is its error when it failed in a way
    /// that counts (see [`BreakerConfig::failures`]).
    pub(crate) fn record(&self, failure: Option<&str>, now_ms: u64) {
        let mut inner = self.inner();
        let open = State::Open {
            opened_ms: now_ms,
            since_ms: now_ms,
        };
        inner.state = match (inner.state, failure) {
            (State::Closed { .. }, None) => State::Closed { failures: 0 },
            (State::Closed { failures }, Some(reason)) => {
                let failures = failures + 1;
                if failures < self.config.failures {
                    State::Closed { failures }
                } else {
                    inner.opened += 1;
                    inner.reason = Some(reason.to_owned());
                    tracing::warn!(failures, cooldown = ?self.config.cooldown, reason, "Circuit breaker opened; deliveries wait.");
                    open
                }
            }
            (State::HalfOpen { .. }, None) => {
                inner.closed += 1;
                tracing::info!("Circuit breaker closed: the probe was delivered.");
                State::Closed { failures: 0 }
            }
            (State::HalfOpen { opened_ms, .. }, Some(_)) => State::Open {
                opened_ms,
                since_ms: now_ms,
            },
            // Deliveries that were in flight when it opened change nothing.
            (state @ State::Open { .. }, _) => state,
        };
    }

    pub(crate) fn info(&self) -> BreakerInfo {
        let inner = self.inner();
        let (state, opened, failures) = match inner.state {
            State::Closed { failures } => ("closed", None, failures),
            State::Open { opened_ms, .. } => ("open", Some(opened_ms), 0),
            State::HalfOpen { opened_ms, .. } => ("half_open", Some(opened_ms), 0),
        };
        let opened_at = opened
            .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
            .map(|t| crate::event::format_time(&t));
        BreakerInfo {
            state,
            opened_at,
            failures,
        }
    }

    /// (times opened, times closed, the reason it last opened), for the
    /// system-event watcher.
    pub(crate) fn changes(&self) -> (u64, u64, Option<String>) {
        let inner = self.inner();
        (inner.opened, inner.closed, inner.reason.clone())
    }

    pub(crate) fn config(&self) -> &BreakerConfig {
        &self.config
    }
}

/// What one delivery (an event or a batch) tells the breaker: `Some(Some(error))`
/// a failure that counts (retryable: the target failing, not the event),
/// `Some(None)` a success, `None` nothing (the target is not set up: checked
/// apart).
pub(crate) fn verdict<'a, T: 'a>(
    results: impl Iterator<Item = &'a Result<T, SinkError>>,
) -> Option<Option<&'a str>> {
    let mut verdict = None;
    for result in results {
        match result {
            Err(e) if matches!(e.class, ErrorClass::Transient | ErrorClass::Internal) => {
                return Some(Some(e.message.as_str()));
            }
            Err(e) if e.class == ErrorClass::Config => {}
            _ => verdict = Some(None),
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failures: 3,
            cooldown: Duration::from_secs(2),
        })
    }

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let b = breaker();
        b.record(Some("HTTP 503"), 0);
        b.record(Some("HTTP 503"), 0);
        b.record(None, 0);
        assert_eq!(b.info().failures, 0);
        for _ in 0..3 {
            assert_eq!(b.gate(10, true), Gate::Open);
            b.record(Some("HTTP 503"), 10);
        }
        assert_eq!(b.info().state, "open");
        assert_eq!(
            b.gate(1_010, true),
            Gate::Shut(Some(Duration::from_secs(1)))
        );
        assert_eq!(b.changes(), (1, 0, Some("HTTP 503".into())));
    }

    #[test]
    fn after_the_cooldown_one_probe_decides() {
        let b = breaker();
        for _ in 0..3 {
            b.record(Some("timeout"), 0);
        }
        assert_eq!(
            b.gate(2_000, false),
            Gate::Shut(None),
            "wait for what is in flight"
        );
        assert_eq!(b.gate(2_000, true), Gate::Probe);
        b.probe_sent();
        assert_eq!(b.info().state, "half_open");
        assert_eq!(b.gate(2_001, true), Gate::Shut(None), "one probe at a time");
        b.record(Some("timeout"), 2_100);
        assert_eq!(b.info().state, "open");
        assert_eq!(
            b.gate(3_000, true),
            Gate::Shut(Some(Duration::from_millis(1_100)))
        );
        assert_eq!(b.gate(4_100, true), Gate::Probe);
        b.probe_sent();
        b.record(None, 4_200);
        assert_eq!(b.info().state, "closed");
        assert_eq!(b.gate(4_200, true), Gate::Open);
        assert_eq!(b.changes().0, 1, "a failed probe is no second opening");
        assert_eq!(b.changes().1, 1);
    }

    #[test]
    fn only_retryable_failures_count() {
        let ok: Result<(), SinkError> = Ok(());
        let bad = Err(SinkError::permanent("HTTP 400"));
        let down = Err(SinkError::transient("HTTP 503"));
        let unset: Result<(), SinkError> = Err(SinkError::new(ErrorClass::Config, "no table"));
        assert_eq!(verdict([&ok, &bad].into_iter()), Some(None));
        assert_eq!(verdict([&ok, &down].into_iter()), Some(Some("HTTP 503")));
        assert_eq!(verdict([&unset].into_iter()), None);
    }
}
