//! The `probe` source: checks each endpoint every `interval` (an HTTP GET, or a
//! TCP connect) and publishes `sluice.probe.down` after `failures` consecutive
//! failures, `sluice.probe.up` when it answers again, and with `emit: every`
//! a `sluice.probe.result` for each check.
//!
//! Each endpoint's state is a mark ([`SourceContext::publish_marked`], key
//! `state:<endpoint>`, the transition's time in ms, negative for down) written
//! in the same store commit as its transition's event: after a restart an
//! endpoint that was down and still is raises no second `down`, and one that
//! came back while sluice was away raises its `up`. An event's `id` is the
//! source, the endpoint, the transition and its time, so a copy is a duplicate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sluice_router::cloudevents::{EventBuilder, EventBuilderV10};
use sluice_router::event::Event;
use sluice_router::source::{Source, SourceContext, SourceError, SourceStatus};
use tokio::time::MissedTickBehavior;

use super::config::{Emit, Endpoint, ProbeSourceConfig};
use crate::{BuildSource, BuiltSource, ConnectorError};

/// The outcome of one check.
#[derive(Debug, Clone)]
pub struct Check {
    pub ok: bool,
    /// The HTTP status, `"connected"`, or why the check failed.
    pub status: Value,
    pub latency_ms: u64,
}

/// What the probe knows of one endpoint.
#[derive(Debug, Clone, Default)]
pub struct EndpointState {
    pub down: bool,
    pub consecutive_failures: u32,
    /// When it last went up or down (ms since the epoch), if known.
    pub since_ms: Option<i64>,
    last: Option<(Check, i64)>,
}

/// A change of state a check causes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Down,
    Up,
}

impl EndpointState {
    /// The state a stored mark gives (positive: up since; negative: down since).
    fn from_mark(mark: Option<i64>, failures: u32) -> Self {
        match mark {
            Some(ms) if ms < 0 => Self {
                down: true,
                consecutive_failures: failures,
                since_ms: Some(-ms),
                last: None,
            },
            Some(ms) => Self {
                since_ms: Some(ms),
                ..Self::default()
            },
            None => Self::default(),
        }
    }

    /// Count `check`; the transition it causes, if any (applied by
    /// `apply` once its event is durable).
    pub fn observe(&mut self, check: &Check, at_ms: i64, failures: u32) -> Option<Transition> {
        self.last = Some((check.clone(), at_ms));
        if check.ok {
            self.consecutive_failures = 0;
            self.down.then_some(Transition::Up)
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            (!self.down && self.consecutive_failures >= failures).then_some(Transition::Down)
        }
    }

    fn apply(&mut self, t: Transition, at_ms: i64) {
        self.down = t == Transition::Down;
        self.since_ms = Some(at_ms);
    }

    fn mark(t: Transition, at_ms: i64) -> i64 {
        match t {
            Transition::Down => -at_ms,
            Transition::Up => at_ms,
        }
    }
}

fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn now_ms() -> i64 {
    i64::try_from(sluice_router::now_ms()).unwrap_or(i64::MAX)
}

/// A configured probe.
pub struct ProbeSource {
    config: ProbeSourceConfig,
    endpoints: Vec<(String, Endpoint)>,
    client: reqwest::Client,
    status: Arc<Status>,
}

impl ProbeSource {
    pub fn new(config: &ProbeSourceConfig) -> Result<Self, String> {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| Endpoint::parse(e).map(|p| (e.clone(), p)))
            .collect::<Result<Vec<_>, _>>()?;
        let client = crate::http::client(config.timeout, config.endpoints.len().max(1))?;
        Ok(Self {
            config: config.clone(),
            endpoints,
            client,
            status: Arc::new(Status::default()),
        })
    }

    /// Check `endpoint` once.
    async fn check(&self, endpoint: &Endpoint) -> Check {
        let start = Instant::now();
        let (ok, status) = match endpoint {
            Endpoint::Http(url) => match self.client.get(url).send().await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    let ok = if self.config.expect_status.is_empty() {
                        r.status().is_success()
                    } else {
                        self.config.expect_status.contains(&code)
                    };
                    (ok, json!(code))
                }
                Err(e) => (false, json!(crate::http::root_cause(&e))),
            },
            Endpoint::Tcp(addr) => {
                let connect = tokio::net::TcpStream::connect(addr.as_str());
                match tokio::time::timeout(self.config.timeout, connect).await {
                    Ok(Ok(_)) => (true, json!("connected")),
                    Ok(Err(e)) => (false, json!(e.to_string())),
                    Err(_) => (
                        false,
                        json!(format!("no connection within {:?}", self.config.timeout)),
                    ),
                }
            }
        };
        Check {
            ok,
            status,
            latency_ms: start.elapsed().as_millis() as u64,
        }
    }

    /// The event of `what` (`down`, `up` or `result`) for a check of `endpoint`.
    pub fn event(
        &self,
        endpoint: &str,
        what: &str,
        check: &Check,
        state: &EndpointState,
        at_ms: i64,
    ) -> Result<Event, String> {
        let at = DateTime::<Utc>::from_timestamp_millis(at_ms).unwrap_or_default();
        EventBuilderV10::new()
            .id(format!("{}/{endpoint}/{what}/{at_ms}", self.config.name))
            .source(format!("sluice://probe/{}", self.config.name))
            .ty(format!("sluice.probe.{what}"))
            .subject(endpoint)
            .time(at)
            .data(
                "application/json",
                json!({
                    "endpoint": endpoint,
                    "up": check.ok,
                    "status": check.status,
                    "latency_ms": check.latency_ms,
                    "consecutive_failures": state.consecutive_failures,
                }),
            )
            .build()
            .map_err(|e| e.to_string())
    }

    /// Check one endpoint every interval until shutdown.
    async fn watch(self: Arc<Self>, endpoint: String, parsed: Endpoint, cx: SourceContext) {
        let key = format!("state:{endpoint}").into_bytes();
        let failures = self.config.failures;
        let mark = cx.mark(&key).unwrap_or_else(|e| {
            tracing::warn!(source = %cx.name(), endpoint = %endpoint, error = %e, "Probe could not read its last state.");
            None
        });
        let mut state = EndpointState::from_mark(mark, failures);
        self.status.set(&endpoint, &state);
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let check = tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return,
                check = async { ticker.tick().await; self.check(&parsed).await } => check,
            };
            let at = now_ms();
            let transition = state.observe(&check, at, failures);
            let mut events = Vec::new();
            if self.config.emit == Emit::Every {
                events.push(self.event(&endpoint, "result", &check, &state, at));
            }
            if let Some(t) = transition {
                let what = if t == Transition::Down { "down" } else { "up" };
                events.push(self.event(&endpoint, what, &check, &state, at));
            }
            let events: Vec<Event> = events
                .into_iter()
                .filter_map(|e| {
                    // Only the source's name and the endpoint go into attributes,
                    // both checked by validate.
                    e.map_err(|why| tracing::error!(source = %cx.name(), error = %why, "Probe event is invalid."))
                        .ok()
                })
                .collect();
            let published = match transition {
                Some(t) => {
                    let marks = [(key.clone(), EndpointState::mark(t, at))];
                    cx.publish_marked(&events, &marks).await
                }
                None if events.is_empty() => Ok(0),
                None => cx.publish(&events).await,
            };
            match published {
                Ok(_) => {
                    if let Some(t) = transition {
                        tracing::info!(source = %cx.name(), endpoint = %endpoint, transition = ?t, "Probe endpoint changed state.");
                        state.apply(t, at);
                    }
                    self.status.error(None);
                }
                // The state stays as it was: the next check raises the
                // transition again.
                Err(e) => {
                    tracing::warn!(source = %cx.name(), error = %e, "Probe could not publish; the next check tries again.");
                    self.status.error(Some(e.to_string()));
                }
            }
            self.status.set(&endpoint, &state);
        }
    }
}

#[async_trait]
impl Source for ProbeSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        cx.report(self.status.clone());
        let this: Arc<Self> = Arc::from(self);
        let mut tasks = tokio::task::JoinSet::new();
        for (endpoint, parsed) in this.endpoints.clone() {
            tasks.spawn(this.clone().watch(endpoint, parsed, cx.clone()));
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

impl BuildSource for ProbeSourceConfig {
    fn build(&self, _cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let probe = ProbeSource::new(self).map_err(ConnectorError::config)?;
        Ok(BuiltSource::task(Box::new(probe)))
    }
}

/// What `GET /api/sources/{name}` shows of a probe: each endpoint's state.
#[derive(Default)]
struct Status(Mutex<(BTreeMap<String, Value>, Option<String>)>);

impl Status {
    fn lock(&self) -> std::sync::MutexGuard<'_, (BTreeMap<String, Value>, Option<String>)> {
        // Plain data; a panic while it was held leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, endpoint: &str, s: &EndpointState) {
        let state = match (s.down, &s.last, s.since_ms) {
            (true, _, _) => "down",
            (false, None, None) => "unknown",
            (false, Some((c, _)), _) if !c.ok => "failing",
            _ => "up",
        };
        let last = s.last.as_ref().map(
            |(c, at)| json!({"status": c.status, "latency_ms": c.latency_ms, "at": rfc3339(*at)}),
        );
        self.lock().0.insert(
            endpoint.to_owned(),
            json!({
                "state": state,
                "consecutive_failures": s.consecutive_failures,
                "since": s.since_ms.map(rfc3339),
                "last_check": last,
            }),
        );
    }

    fn error(&self, why: Option<String>) {
        self.lock().1 = why;
    }
}

impl SourceStatus for Status {
    fn status(&self) -> Value {
        let s = self.lock();
        json!({"endpoints": s.0, "error": s.1})
    }
    fn not_ready(&self) -> Option<String> {
        self.lock()
            .1
            .as_ref()
            .map(|e| format!("cannot publish: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ok: bool) -> Check {
        Check {
            ok,
            status: json!(if ok { 200 } else { 503 }),
            latency_ms: 1,
        }
    }

    #[test]
    fn down_after_n_failures_then_up_on_first_success() {
        let mut s = EndpointState::default();
        assert_eq!(s.observe(&check(false), 1, 3), None);
        assert_eq!(s.observe(&check(false), 2, 3), None);
        assert_eq!(s.observe(&check(false), 3, 3), Some(Transition::Down));
        s.apply(Transition::Down, 3);
        // Still down: no second `down`.
        assert_eq!(s.observe(&check(false), 4, 3), None);
        assert_eq!(s.consecutive_failures, 4);
        assert_eq!(s.observe(&check(true), 5, 3), Some(Transition::Up));
        s.apply(Transition::Up, 5);
        assert_eq!(s.observe(&check(true), 6, 3), None);
        // A failure between successes does not count up to three.
        assert_eq!(s.observe(&check(false), 7, 3), None);
        assert_eq!(s.observe(&check(true), 8, 3), None);
        assert_eq!(s.consecutive_failures, 0);
    }

    #[test]
    fn a_transition_not_applied_is_raised_again() {
        // The publish failed, so `apply` never ran.
        let mut s = EndpointState::default();
        assert_eq!(s.observe(&check(false), 1, 1), Some(Transition::Down));
        assert_eq!(s.observe(&check(false), 2, 1), Some(Transition::Down));
    }

    #[test]
    fn state_survives_as_a_mark() {
        let down = EndpointState::from_mark(Some(EndpointState::mark(Transition::Down, 42)), 3);
        assert!(down.down);
        assert_eq!(down.since_ms, Some(42));
        let mut still = down.clone();
        assert_eq!(still.observe(&check(false), 50, 3), None);
        let mut back = down;
        assert_eq!(back.observe(&check(true), 50, 3), Some(Transition::Up));
        let up = EndpointState::from_mark(Some(EndpointState::mark(Transition::Up, 42)), 3);
        assert!(!up.down);
    }
}
