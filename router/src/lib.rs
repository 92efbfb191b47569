//! sluice-router: the engine of sluice.
//!
//! Data flows one way: a source builds an [`event::Event`] and publishes it
//! through its [`source::SourceContext`]; the rules of its bus select the
//! subscriptions it belongs to, the store keeps it durably in each, and a
//! dispatcher per subscription delivers it through a [`sink::Sink`] with retries,
//! backoff and a dead-letter list. [`engine::Engine`] is the front door: the
//! store, the subscriptions and the dispatchers behind it are private.
//! Connectors implement [`source::Source`] and [`sink::Sink`]; this crate never
//! depends on them. [`config`] reads and checks configuration files,
//! [`matching`] and [`transform`] are the rule language.

pub use cloudevents;

pub mod config;
mod delivery;
pub mod engine;
pub mod error;
pub mod event;
pub mod matching;
mod metrics;
pub mod sink;
pub mod source;
mod store;
pub mod throttle;
pub mod transform;

/// The store's parts, for its benchmarks (`router/benches/`); not an API.
#[doc(hidden)]
pub mod bench_support {
    pub use crate::store::bus::BusLog;
    pub use crate::store::log::acks::Acks;
    pub use crate::store::log::window::Window;
    pub use crate::store::log::{Append, Entry, Log};
}

/// Milliseconds since the Unix epoch, on the runtime's clock: the wall clock when
/// first asked, advanced by tokio's monotonic clock since. Everything that
/// schedules (leases, retry backoff, batch waits, replay windows) reads time here,
/// so tests run it on paused time (`#[tokio::test(start_paused = true)]`): a retry
/// an hour away happens at once, and still an hour later by this clock. A wall
/// clock that jumps does not move it.
pub fn now_ms() -> u64 {
    use std::sync::OnceLock;
    static START: OnceLock<(u64, std::time::Instant)> = OnceLock::new();
    let (wall, at) = *START.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (wall, std::time::Instant::now())
    });
    let now = tokio::time::Instant::now().into_std();
    wall + now.saturating_duration_since(at).as_millis() as u64
}
