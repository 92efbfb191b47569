//! Settings and checks that several connectors share: batching, the CloudEvents
//! binding mode, what a source does with malformed input, and the validation of
//! URLs, name templates and batches. One place, so that every connector gets the
//! same defaults and the same error messages.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{defaults, DurationString};
use super::Validator;
use crate::transform::name::NameTemplate;

/// How a storage target groups events into one write. A batch is written when it
/// holds `max_events` events or `max_bytes` bytes, or when its oldest event has
/// waited `max_wait`; it is acknowledged only once the far side confirmed it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events in one write at most.
    #[serde(default = "defaults::batch_max_events")]
    pub max_events: usize,
    /// Bytes of events (as stored, JSON) in one write at most; a single larger
    /// event is written alone.
    #[serde(default = "defaults::batch_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more events.
    #[serde(default = "defaults::batch_max_wait", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: defaults::batch_max_events(),
            max_bytes: defaults::batch_max_bytes(),
            max_wait: defaults::batch_max_wait(),
        }
    }
}

/// Batching of a target that streams events one by one on the far side (`kafka`,
/// `discard`): like [`BatchConfig`], but a batch goes out as soon as a delivery slot
/// is free (`max_wait` 0s): the Kafka producer's own `linger` does the waiting, and
/// a lone event should not sit in sluice. A separate type so that each key's
/// default is right when only some are given.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBatchConfig {
    /// Events handed over together at most.
    #[serde(default = "defaults::batch_max_events")]
    pub max_events: usize,
    /// Bytes of events (as stored, JSON) together at most.
    #[serde(default = "defaults::batch_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more events.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_wait: Duration,
}

impl Default for StreamBatchConfig {
    fn default() -> Self {
        Self {
            max_events: defaults::batch_max_events(),
            max_bytes: defaults::batch_max_bytes(),
            max_wait: Duration::ZERO,
        }
    }
}

impl From<&StreamBatchConfig> for BatchConfig {
    fn from(b: &StreamBatchConfig) -> Self {
        Self {
            max_events: b.max_events,
            max_bytes: b.max_bytes,
            max_wait: b.max_wait,
        }
    }
}

/// The CloudEvents content mode of a delivery (HTTP and Kafka bindings): attributes
/// beside the data (`binary`) or the whole event as the payload (`structured`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BindingMode {
    #[default]
    Binary,
    Structured,
}

/// What a source does with input that claims to be a CloudEvent but is broken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Malformed {
    /// Publish it as a plain-record event with a `sluiceerror` extension.
    #[default]
    Event,
    /// Keep it in the source's dead-letter list instead of publishing it.
    Reject,
}

/// A circuit breaker on a target (see docs/configuration.md): after `failures`
/// failed deliveries in a row, each subscription of the target stops
/// delivering for `cooldown`, then sends one probe delivery; its success
/// closes the breaker, its failure opens it again. Key names are part of the
/// config contract; the state is in memory only (a restart starts closed).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Failed deliveries in a row that open the breaker: a timeout, a refused
    /// connection, 408, 429 or 5xx (what is retried). An event refused for
    /// itself (another 4xx) is no sign of a failing target and does not count.
    pub failures: u32,
    /// How long an open breaker holds deliveries before its probe.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub cooldown: Duration,
}

/// At least one failure and a cooldown above zero.
pub fn validate_breaker(c: &mut Validator<'_>, at: &str, breaker: &BreakerConfig) {
    if breaker.failures == 0 {
        c.push(format!("{at}.breaker.failures"), "must be at least 1");
    }
    if breaker.cooldown.is_zero() {
        c.push(format!("{at}.breaker.cooldown"), "must be greater than 0");
    }
}

/// `concurrency` between 1 and 256 and a batch of at least one event and byte.
pub fn validate_batch(c: &mut Validator<'_>, at: &str, batch: &BatchConfig, concurrency: usize) {
    if concurrency == 0 || concurrency > 256 {
        c.push(format!("{at}.concurrency"), "must be between 1 and 256");
    }
    validate_batch_size(c, at, batch);
}

/// A batch of at least one event and byte.
pub fn validate_batch_size(c: &mut Validator<'_>, at: &str, batch: &BatchConfig) {
    if batch.max_events == 0 {
        c.push(format!("{at}.batch.max_events"), "must be at least 1");
    }
    if batch.max_bytes == 0 {
        c.push(format!("{at}.batch.max_bytes"), "must be at least 1");
    }
}

/// A URL with one of `schemes` and something after `://`.
pub fn validate_url(c: &mut Validator<'_>, at: &str, key: &str, url: &str, schemes: &[&str]) {
    let ok = url
        .split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty());
    if !ok {
        c.push(
            format!("{at}.{key}"),
            format!(
                "{url:?} is not a URL starting with {}",
                schemes.join(":// or ") + "://"
            ),
        );
    }
}

/// A [`NameTemplate`] that parses.
pub fn validate_template(c: &mut Validator<'_>, at: &str, key: &str, template: &str) {
    if let Err(e) = NameTemplate::parse(template) {
        c.push(format!("{at}.{key}"), e);
    }
}
