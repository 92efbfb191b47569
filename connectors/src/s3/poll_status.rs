//! What a polling S3 source knows about itself, shown by
//! `GET /api/sources/{name}` and `/readyz`: when its last pass ended and how
//! it went, how many objects it saw, how many events it published, and the
//! error that keeps it from listing or reading the bucket, if one does.

use std::sync::Mutex;

use serde_json::{json, Value};
use sluice_router::event::format_time;
use sluice_router::now_ms;
use sluice_router::source::SourceStatus;

#[derive(Default)]
struct State {
    passes: u64,
    last_pass_ms: Option<u64>,
    last_pass_took_ms: u64,
    /// Objects under the prefix in the last complete pass.
    objects: u64,
    /// Events published since the start.
    events: u64,
    /// Why the last pass failed (listing, the store); cleared by a pass that ends.
    error: Option<String>,
    /// An object that cannot be read for `content: inline` right now.
    reading: Option<String>,
    failures: u64,
}

/// The state of one polling source; see the module docs.
pub(super) struct PollStatus {
    bucket: String,
    prefix: String,
    state: Mutex<State>,
}

fn time(ms: u64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map_or(Value::Null, |t| Value::String(format_time(&t)))
}

impl PollStatus {
    pub(super) fn new(bucket: &str, prefix: &str) -> Self {
        Self {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data; a panic while it was held leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pass ended: `objects` listed, in `took_ms`.
    pub(super) fn passed(&self, objects: u64, took_ms: u64) {
        let mut s = self.state();
        s.passes += 1;
        s.last_pass_ms = Some(now_ms());
        s.last_pass_took_ms = took_ms;
        s.objects = objects;
        s.error = None;
        s.failures = 0;
    }

    /// `n` events were made durable.
    pub(super) fn published(&self, n: usize) {
        self.state().events += n as u64;
    }

    /// A pass failed.
    pub(super) fn failed(&self, why: &str) {
        let mut s = self.state();
        s.error = Some(why.to_owned());
        s.failures += 1;
    }

    /// An object could not be read (`Some`), or could again (`None`).
    pub(super) fn reading(&self, why: Option<&str>) {
        self.state().reading = why.map(str::to_owned);
    }

    /// Consecutive failed passes.
    pub(super) fn failures(&self) -> u64 {
        self.state().failures
    }
}

impl SourceStatus for PollStatus {
    fn status(&self) -> Value {
        let s = self.state();
        let state = if s.error.is_some() || s.reading.is_some() {
            "failing"
        } else if s.passes == 0 {
            "starting"
        } else {
            "polling"
        };
        json!({
            "mode": "poll",
            "bucket": self.bucket,
            "prefix": self.prefix,
            "state": state,
            "passes": s.passes,
            "last_pass_at": s.last_pass_ms.map(time),
            "last_pass_ms": s.last_pass_took_ms,
            "objects": s.objects,
            "events": s.events,
            "error": s.error.as_ref().or(s.reading.as_ref()),
            "failures": s.failures,
        })
    }

    fn not_ready(&self) -> Option<String> {
        let s = self.state();
        s.error
            .as_ref()
            .or(s.reading.as_ref())
            .map(|why| format!("polling bucket {}: {why}", self.bucket))
    }
}
