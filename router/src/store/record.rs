//! What the store keeps per event. The format is JSON with a version field so
//! later versions of sluice can read what earlier ones wrote; the event itself is the
//! CloudEvents JSON format, kept as raw text so it is parsed once per delivery.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// An event waiting in a subscription queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Format version; 1 is the only one so far.
    pub v: u8,
    /// When the event was accepted, in milliseconds since the Unix epoch; for
    /// an event published with `deliverat`/`delay`, when it comes due. Retries'
    /// `max_age` and the delivery latency count from here.
    pub enqueued_ms: u64,
    /// When each delivery attempt started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub attempts: Vec<u64>,
    /// The outcome of the last attempt, e.g. `HTTP 503` or `timeout`.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The CloudEvent in the CloudEvents JSON format.
    pub event: Box<RawValue>,
}

impl Record {
    pub fn new(event_json: Box<RawValue>, enqueued_ms: u64) -> Self {
        Self {
            v: 1,
            enqueued_ms,
            attempts: Vec::new(),
            last_error: None,
            event: event_json,
        }
    }
}

/// An event that will not be delivered, kept with the reason why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its key in the dead-letter list, used to address it.
    #[serde(default)]
    pub seq: u64,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub dead_lettered_ms: u64,
    /// Why: the last error, or that attempts or age ran out.
    pub reason: String,
    /// The status of the last attempt, when the target gave one (an HTTP status).
    pub last_status: Option<u16>,
    /// The start of the target's last response body.
    pub body_excerpt: Option<String>,
    /// The event and its attempt history.
    pub record: Record,
}
