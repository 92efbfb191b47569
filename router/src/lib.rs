//! sluice-router: the engine of sluice.
//!
//! Data flows one way: a source builds an [`event::Event`], the
//! [`matching::rules::RuleSet`] of its bus selects the subscriptions it belongs
//! to, the [`store::Store`] keeps it durably in each, and a
//! [`delivery::dispatch`] worker per subscription delivers it through a
//! [`sink::Sink`] with retries, backoff and a dead-letter list.
//! Connectors implement [`sink::Sink`]; this crate never depends on them.

pub use cloudevents;

pub mod config;
pub mod delivery;
pub mod engine;
pub mod error;
pub mod event;
pub mod matching;
pub mod metrics;
pub mod sink;
pub mod source;
pub mod store;
pub mod throttle;
pub mod transform;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
