//! In-process HTTP/1.1 servers on 127.0.0.1: the delivery receiver (sluice's
//! target, counting and timing each delivered event) and the bare echo server
//! (the ceiling: answers `202 {"accepted":1}` at once, no sluice involved).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::load::{mono_ns, parse_id};

/// What the receiver saw of one scenario's deliveries.
pub struct Tally {
    /// Ids `0..capacity` are expected; one bit per id marks "already delivered".
    capacity: u64,
    seen: Vec<AtomicU64>,
    /// Distinct events delivered.
    unique: AtomicU64,
    /// Deliveries of an event already delivered (at-least-once redelivery).
    duplicates: AtomicU64,
    /// Deliveries whose `ce-id` was missing, unreadable or out of range.
    malformed: AtomicU64,
    /// When the latest first-time delivery arrived ([`mono_ns`]).
    last_ns: AtomicU64,
    /// Per distinct event: nanoseconds from its send stamp to its delivery.
    latencies_ns: Mutex<Vec<u64>>,
}

/// A copy of a [`Tally`] at one moment.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub unique: u64,
    pub duplicates: u64,
    pub malformed: u64,
    /// When the latest first-time delivery arrived ([`mono_ns`]); 0 if none did.
    pub last_ns: u64,
    /// Per distinct event: ingest->delivery latency in ns, in arrival order.
    pub latencies_ns: Vec<u64>,
}

impl Tally {
    /// A tally expecting event ids `0..capacity`.
    pub fn new(capacity: u64) -> Self {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(0);
        Self {
            capacity,
            seen: (0..words).map(|_| AtomicU64::new(0)).collect(),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            latencies_ns: Mutex::new(Vec::with_capacity(usize::try_from(capacity).unwrap_or(0))),
        }
    }

    /// Distinct events delivered so far.
    pub fn unique(&self) -> u64 {
        self.unique.load(Ordering::Acquire)
    }

    fn record(&self, id: Option<&str>, now_ns: u64) {
        let Some((seq, stamp_ns)) = id
            .and_then(parse_id)
            .filter(|(seq, _)| *seq < self.capacity)
        else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (seq % 64);
        let Some(word) = self.seen.get((seq / 64) as usize) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if word.fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.latencies_ns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(now_ns.saturating_sub(stamp_ns));
        self.last_ns.fetch_max(now_ns, Ordering::AcqRel);
        self.unique.fetch_add(1, Ordering::AcqRel);
    }

    /// Takes what was recorded so far (the latencies move out of the tally).
    pub fn take(&self) -> Deliveries {
        let latencies_ns =
            std::mem::take(&mut *self.latencies_ns.lock().unwrap_or_else(|p| p.into_inner()));
        Deliveries {
            unique: self.unique(),
            duplicates: self.duplicates.load(Ordering::Acquire),
            malformed: self.malformed.load(Ordering::Acquire),
            last_ns: self.last_ns.load(Ordering::Acquire),
            latencies_ns,
        }
    }
}

/// What a server does with each request.
pub enum Role {
    /// sluice's delivery target: records the `ce-id` of each request, answers 200.
    Sink(Arc<Tally>),
    /// The ceiling: answers `202 {"accepted":1}` to anything.
    Echo,
}

/// A running server; dropping it stops the server and all of its connections.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a keep-alive HTTP/1.1 server with `role` on a free 127.0.0.1 port.
pub async fn start(role: Role) -> anyhow::Result<Server> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .context("cannot listen on 127.0.0.1")?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let task = tokio::spawn(accept_loop(listener, Arc::new(role)));
    Ok(Server { addr, task })
}

/// Accepts until aborted; the connection tasks live in a [`JoinSet`] owned by this
/// task, so aborting it aborts them too.
async fn accept_loop(listener: TcpListener, role: Arc<Role>) {
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // E.g. out of file descriptors: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let role = role.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| handle(role.clone(), request));
            // A peer closing its connection is normal; nothing to report.
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    role: Arc<Role>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = request
        .headers()
        .get("ce-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let batch = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/cloudevents-batch+json")
        });
    // Read the whole body: the event counts as delivered once all of it arrived.
    let body = request.into_body().collect().await.map(|b| b.to_bytes());
    let response = match &*role {
        Role::Sink(tally) => {
            if let Ok(body) = body {
                let now = mono_ns();
                if batch {
                    // A batching target: each event of the array is a delivery.
                    let events: Vec<serde_json::Value> =
                        serde_json::from_slice(&body).unwrap_or_default();
                    for event in &events {
                        tally.record(event["id"].as_str(), now);
                    }
                } else {
                    tally.record(id.as_deref(), now);
                }
                respond(StatusCode::OK, Bytes::new())
            } else {
                respond(
                    StatusCode::BAD_REQUEST,
                    Bytes::from_static(b"unreadable body"),
                )
            }
        }
        Role::Echo => respond(
            StatusCode::ACCEPTED,
            Bytes::from_static(br#"{"accepted":1}"#),
        ),
    };
    Ok(response)
}

fn respond(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let json = !body.is_empty() && status == StatusCode::ACCEPTED;
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    if json {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_counts_distinct_duplicate_and_malformed_deliveries() {
        let tally = Tally::new(100);
        tally.record(Some("3.1000"), 1500);
        tally.record(Some("3.1000"), 1600);
        tally.record(Some("99.0"), 10);
        tally.record(Some("100.0"), 10);
        tally.record(Some("garbage"), 10);
        tally.record(None, 10);
        let d = tally.take();
        assert_eq!((d.unique, d.duplicates, d.malformed), (2, 1, 3));
        assert_eq!(d.latencies_ns, vec![500, 10]);
        assert_eq!(d.last_ns, 1500);
    }
}
