//! The load generator: HTTP/1.1 keep-alive connections posting CloudEvents to
//! `POST /events`, either closed loop (each connection sends its next request as
//! soon as the previous one is answered) or open loop (requests scheduled at a
//! fixed rate, whatever the answers do).
//!
//! Every event's id is `<seq>.<stamp_ns>`: `seq` numbers the events of a scenario
//! from 0, and `stamp_ns` is the instant the event was sent (closed loop) or due to
//! be sent (open loop) on this process's monotonic clock (see [`mono_ns`]). The
//! receiver reads the id back from the delivered `ce-id` header, so ingest->delivery
//! latency needs no wall clock. The `time` attribute still carries the wall-clock
//! send time with nanoseconds, as a real producer would set it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// One request may take at most this long (send and read the whole answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Opening a connection may take at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection gives up after this many failures in a row (connect or request).
const MAX_CONSECUTIVE_FAILURES: u32 = 20;
/// Padding in each event's data, so a delivery carries a realistic small body.
const PAD: &str = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds on this process's monotonic clock (since its first use). Send stamps
/// and delivery times are both taken from it, so their difference is a latency.
pub fn mono_ns() -> u64 {
    let anchor = *ANCHOR.get_or_init(Instant::now);
    u64::try_from(anchor.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`Instant`] that [`mono_ns`] would report as `ns`.
fn instant_at(ns: u64) -> Instant {
    *ANCHOR.get_or_init(Instant::now) + Duration::from_nanos(ns)
}

/// Reads `(seq, stamp_ns)` back from an event id made by this generator.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (seq, stamp) = id.split_once('.')?;
    Some((seq.parse().ok()?, stamp.parse().ok()?))
}

/// A client connection ready to send requests.
pub type Sender = http1::SendRequest<Full<Bytes>>;

/// Opens an HTTP/1.1 keep-alive connection to `addr` (TCP_NODELAY on). The
/// connection task ends by itself once the returned sender is dropped.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true).context("cannot set TCP_NODELAY")?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .with_context(|| format!("HTTP handshake with {addr} failed"))?;
    tokio::spawn(async move {
        // An error here surfaces on the sender's next request.
        let _ = connection.await;
    });
    Ok(sender)
}

/// What each request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One event per request, in CloudEvents binary mode.
    Single,
    /// `size` structured events per request (`application/cloudevents-batch+json`).
    Batch { size: usize },
}

impl Shape {
    fn events_per_request(self) -> u64 {
        match self {
            Shape::Single => 1,
            Shape::Batch { size } => size.max(1) as u64,
        }
    }
}

/// A load to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where `POST /events` goes.
    pub target: SocketAddr,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Events to send in all (event ids `0..events`).
    pub events: u64,
    pub shape: Shape,
    /// Open loop at this many events per second; `None` for closed loop.
    pub rate: Option<f64>,
    /// No request starts later than this after the first one.
    pub max_send: Duration,
}

/// What a load run did, summed over its connections.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Events in requests that were sent (whatever the answer).
    pub sent_events: u64,
    /// Events the server acknowledged (`202 {"accepted": N}`, N summed).
    pub accepted_events: u64,
    /// Requests answered with 202.
    pub ok_requests: u64,
    /// Requests that failed: another status, a broken connection, a timeout.
    pub failed_requests: u64,
    /// When sending began ([`mono_ns`]).
    pub start_ns: u64,
    /// When the last 202 was read ([`mono_ns`]); `start_ns` if none was.
    pub last_ack_ns: u64,
    /// Per 202-answered request: nanoseconds from sending it to reading its answer.
    pub ingest_latency_ns: Vec<u64>,
    /// Open loop only: the most a request started after its due time, in ns.
    pub max_lag_ns: u64,
    /// Sending stopped at `max_send` with events left to send.
    pub capped: bool,
    /// The first failure seen, to show why requests failed.
    pub first_error: Option<String>,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.sent_events += other.sent_events;
        self.accepted_events += other.accepted_events;
        self.ok_requests += other.ok_requests;
        self.failed_requests += other.failed_requests;
        self.last_ack_ns = self.last_ack_ns.max(other.last_ack_ns);
        self.ingest_latency_ns.extend(other.ingest_latency_ns);
        self.max_lag_ns = self.max_lag_ns.max(other.max_lag_ns);
        self.capped |= other.capped;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    fn fail(&mut self, error: String) {
        self.failed_requests += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error);
        }
    }
}

/// Runs `plan` to the end: every event sent, or `max_send` reached, or every
/// connection given up after repeated failures.
pub async fn run(plan: Plan) -> anyhow::Result<Outcome> {
    anyhow::ensure!(plan.connections > 0, "at least one connection is needed");
    let plan = Arc::new(plan);
    let next = Arc::new(AtomicU64::new(0));
    let start_ns = mono_ns();
    let deadline = instant_at(start_ns) + plan.max_send;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.connections {
        workers.spawn(worker(plan.clone(), next.clone(), start_ns, deadline));
    }
    let mut total = Outcome {
        start_ns,
        last_ack_ns: start_ns,
        ..Outcome::default()
    };
    while let Some(done) = workers.join_next().await {
        total.merge(done.context("a load connection task failed")?);
    }
    Ok(total)
}

/// One connection's loop: claim the next events, (open loop) wait for their due
/// time, send, check the answer. Bounded by the event count and the deadline.
async fn worker(
    plan: Arc<Plan>,
    next: Arc<AtomicU64>,
    start_ns: u64,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let host = plan.target.to_string();
    let per_request = plan.shape.events_per_request();
    let mut sender: Option<Sender> = None;
    let mut failures_in_a_row = 0u32;
    loop {
        if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES {
            break;
        }
        if Instant::now() >= deadline {
            out.capped = next.load(Ordering::Relaxed) < plan.events;
            break;
        }
        let first = next.fetch_add(per_request, Ordering::Relaxed);
        if first >= plan.events {
            break;
        }
        let count = per_request.min(plan.events - first);
        let stamp_ns = match plan.rate {
            Some(rate) => {
                let due_ns = start_ns + (first as f64 / rate * 1e9) as u64;
                let due = instant_at(due_ns);
                if due >= deadline {
                    out.capped = true;
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                out.max_lag_ns = out.max_lag_ns.max(mono_ns().saturating_sub(due_ns));
                due_ns
            }
            None => mono_ns(),
        };
        let live = match sender.as_mut() {
            Some(s) => s,
            None => match tokio::time::timeout(CONNECT_TIMEOUT, connect(plan.target)).await {
                Ok(Ok(s)) => sender.insert(s),
                Ok(Err(e)) => {
                    out.fail(format!("{e:#}"));
                    failures_in_a_row += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => {
                    out.fail(format!("connecting to {} timed out", plan.target));
                    failures_in_a_row += 1;
                    continue;
                }
            },
        };
        let request = match build_request(plan.shape, &host, first, count, stamp_ns) {
            Ok(r) => r,
            Err(e) => {
                out.fail(format!("cannot build a request: {e:#}"));
                break;
            }
        };
        let sent_ns = mono_ns();
        out.sent_events += count;
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange(live, request)).await {
            Ok(Ok(accepted)) => {
                let now = mono_ns();
                out.ok_requests += 1;
                out.accepted_events += accepted;
                out.last_ack_ns = out.last_ack_ns.max(now);
                out.ingest_latency_ns.push(now.saturating_sub(sent_ns));
                failures_in_a_row = 0;
            }
            Ok(Err(e)) => {
                out.fail(format!("{e:#}"));
                failures_in_a_row += 1;
                sender = None;
            }
            Err(_) => {
                out.fail(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()));
                failures_in_a_row += 1;
                sender = None;
            }
        }
    }
    out
}

/// Sends one request and returns how many events the 202 answer accepted.
async fn exchange(sender: &mut Sender, request: Request<Full<Bytes>>) -> anyhow::Result<u64> {
    sender.ready().await.context("connection closed")?;
    let response = sender
        .send_request(request)
        .await
        .context("request failed")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("cannot read the answer")?
        .to_bytes();
    if status != StatusCode::ACCEPTED {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        anyhow::bail!("HTTP {status}: {excerpt}");
    }
    #[derive(serde::Deserialize)]
    struct Accepted {
        accepted: u64,
    }
    let parsed: Accepted =
        serde_json::from_slice(&body).context("202 without {\"accepted\": N}")?;
    Ok(parsed.accepted)
}

/// The `POST /events` request for events `first..first + count`.
fn build_request(
    shape: Shape,
    host: &str,
    first: u64,
    count: u64,
    stamp_ns: u64,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let time = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
    let builder = Request::post("/events").header(header::HOST, host);
    let request = match shape {
        Shape::Single => builder
            .header("ce-specversion", "1.0")
            .header("ce-id", format!("{first}.{stamp_ns}"))
            .header("ce-source", "/bench")
            .header("ce-type", "bench.event")
            .header("ce-time", time)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(format!(
                r#"{{"seq":{first},"pad":"{PAD}"}}"#
            )))),
        Shape::Batch { .. } => {
            let mut body = String::with_capacity(count as usize * 220 + 2);
            body.push('[');
            for seq in first..first + count {
                if seq > first {
                    body.push(',');
                }
                write!(
                    body,
                    r#"{{"specversion":"1.0","id":"{seq}.{stamp_ns}","source":"/bench","type":"bench.event","time":"{time}","datacontenttype":"application/json","data":{{"seq":{seq},"pad":"{PAD}"}}}}"#
                )?;
            }
            body.push(']');
            builder
                .header(header::CONTENT_TYPE, "application/cloudevents-batch+json")
                .body(Full::new(Bytes::from(body)))
        }
    };
    request.context("invalid request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        assert_eq!(parse_id("42.123456789"), Some((42, 123_456_789)));
        assert_eq!(parse_id("nope"), None);
        assert_eq!(parse_id("1.x"), None);
    }

    #[test]
    fn batch_bodies_are_json_arrays_of_events() {
        let request =
            build_request(Shape::Batch { size: 3 }, "127.0.0.1:1", 7, 3, 99).expect("request");
        let body = collect_body(request);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let items = value.as_array().expect("array");
        assert_eq!(items.len(), 3);
        assert_eq!(items[2]["id"], "9.99");
        assert_eq!(items[0]["data"]["seq"], 7);
    }

    fn collect_body(request: Request<Full<Bytes>>) -> Bytes {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime
            .block_on(request.into_body().collect())
            .map(|c| c.to_bytes())
            .unwrap_or_default()
    }
}
