//! What a RabbitMQ source knows about itself, shown by `GET /api/sources/{name}`
//! and `/readyz`: whether it is connected and consuming, paused for the
//! backlog, or down (and why), how often it connected, what it acknowledged.

use std::sync::Mutex;

use serde_json::{json, Value};
use sluice_router::now_ms;
use sluice_router::source::SourceStatus;

/// Where a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not connected yet.
    Connecting,
    Consuming,
    /// Not reading: a subscription of its bus is over `max_backlog`.
    Paused,
    /// The connection failed or was lost; reconnecting with backoff.
    Down,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Consuming => "consuming",
            Self::Paused => "paused",
            Self::Down => "reconnecting",
        }
    }
}

struct State {
    phase: Phase,
    since_ms: u64,
    reason: Option<String>,
    connects: u64,
    acked: u64,
    rejected: u64,
    last_message_ms: Option<u64>,
}

/// The state of one RabbitMQ source; see the module docs.
pub(super) struct Status {
    queue: String,
    state: Mutex<State>,
}

fn time(ms: u64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

impl Status {
    pub(super) fn new(queue: &str) -> Self {
        Self {
            queue: queue.to_owned(),
            state: Mutex::new(State {
                phase: Phase::Connecting,
                since_ms: now_ms(),
                reason: None,
                connects: 0,
                acked: 0,
                rejected: 0,
                last_message_ms: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data; a panic while it was held leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, phase: Phase, reason: Option<String>) {
        let mut s = self.state();
        if s.phase != phase {
            s.phase = phase;
            s.since_ms = now_ms();
        }
        s.reason = reason;
    }

    pub(super) fn phase(&self) -> Phase {
        self.state().phase
    }

    /// Connected, the queue declared and bound, the consumer started.
    pub(super) fn connected(&self) {
        self.state().connects += 1;
        self.set(Phase::Consuming, None);
    }

    /// The connection failed (before the first success: still connecting).
    pub(super) fn down(&self, why: &str) {
        let phase = if self.state().connects == 0 {
            Phase::Connecting
        } else {
            Phase::Down
        };
        self.set(phase, Some(why.to_owned()));
    }

    pub(super) fn paused(&self, paused: bool) {
        self.set(
            if paused {
                Phase::Paused
            } else {
                Phase::Consuming
            },
            None,
        );
    }

    /// A batch was made durable and acknowledged (`acked`) or rejected.
    pub(super) fn settled(&self, acked: usize, rejected: usize) {
        let mut s = self.state();
        s.acked += acked as u64;
        s.rejected += rejected as u64;
        s.last_message_ms = Some(now_ms());
    }
}

impl SourceStatus for Status {
    fn status(&self) -> Value {
        let s = self.state();
        json!({
            "queue": self.queue,
            "state": s.phase.name(),
            "since": time(s.since_ms),
            "error": s.reason,
            "connects": s.connects,
            "acked": s.acked,
            "rejected": s.rejected,
            "last_message_at": s.last_message_ms.map(time),
        })
    }

    fn not_ready(&self) -> Option<String> {
        let s = self.state();
        match s.phase {
            Phase::Consuming | Phase::Paused => None,
            Phase::Connecting => Some(match &s.reason {
                Some(why) => format!("connecting to RabbitMQ: {why}"),
                None => "connecting to RabbitMQ".into(),
            }),
            Phase::Down => Some(format!(
                "RabbitMQ connection lost, reconnecting: {}",
                s.reason.as_deref().unwrap_or("unknown reason")
            )),
        }
    }
}
