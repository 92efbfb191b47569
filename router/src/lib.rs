//! sluice-router: the engine of sluice.
//!
//! Data flows one way: a source builds an [`event::Event`], the [`rules::RuleSet`] of
//! its bus selects the subscriptions it belongs to, the [`store::Store`] keeps it
//! durably in each, and a [`dispatch`] worker per subscription delivers it through a
//! [`sink::Sink`] with retries, backoff and a dead-letter list.
//! Connectors implement [`sink::Sink`]; this crate never depends on them.

pub mod cesql;
pub mod config;
pub mod error;
pub mod event;
pub mod filter;
pub mod pattern;

pub use cloudevents;
pub mod store;
pub mod transform;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
pub mod dispatch;
pub mod engine;
pub mod metrics;
pub mod retry;
pub mod rules;
pub mod sink;
pub mod source;
pub mod template;
pub mod throttle;
