//! Helpers of the elasticsearch tests: the cluster's API as a user queries it, a
//! sluice that is not expected to become ready, and a gateway in front of the
//! cluster.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_router::event::event_key;
use sluice_router::event::{Event, EventFields};

use crate::harness::Sluice;

pub fn es() -> String {
    std::env::var("SLUICE_TEST_ELASTICSEARCH").unwrap_or_else(|_| "http://127.0.0.1:19200".into())
}

/// A fresh, lowercase index prefix.
pub fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("sluice-{name}-{:x}{nanos:x}", std::process::id())
}

/// A target block: `extra` holds more settings, each line indented four spaces.
pub fn target(name: &str, url: &str, index: &str, extra: &str) -> String {
    format!("  - name: {name}\n    type: elasticsearch\n    url: {url}\n    index: \"{index}\"\n{extra}")
}

pub async fn get(path: &str) -> Value {
    reqwest::get(format!("{}{path}", es()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Documents in the indices matching `pattern`, after a refresh (a real cluster
/// shows new documents to searches only after one).
pub async fn count(pattern: &str) -> u64 {
    let client = reqwest::Client::new();
    let _ = client
        .post(format!("{}/{pattern}/_refresh", es()))
        .send()
        .await;
    get(&format!("/{pattern}/_count")).await["count"]
        .as_u64()
        .unwrap_or(0)
}

pub async fn wait_count(pattern: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let got = count(pattern).await;
        if got >= n {
            assert_eq!(got, n, "more documents than events in {pattern}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {n} documents in {pattern}, got {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every hit of `pattern` (up to 10,000), with `_index`, `_id` and `_source`.
pub async fn search_all(pattern: &str) -> Vec<Value> {
    let answer = get(&format!("/{pattern}/_search?size=10000&version=true")).await;
    answer["hits"]["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The event sluice builds from a structured-mode JSON event.
pub fn parsed(event: &Value) -> Event {
    let Value::Object(map) = event.clone() else {
        panic!("not an object: {event}")
    };
    EventFields::from_structured(map).unwrap().build().unwrap()
}

pub fn key(event: &Value) -> String {
    event_key(&parsed(event)).to_string()
}

/// The dead letters of subscription `name`, once there are `n`.
pub async fn dead_letters(sluice: &Sluice, name: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let listing = sluice
            .get_json(&format!("/api/subscriptions/{name}/dead-letters"))
            .await;
        let letters = listing["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if letters.len() >= n {
            assert_eq!(letters.len(), n, "{listing}");
            return letters;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {n} dead letters in {name}: {listing}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn wait_delivered(sluice: &Sluice, name: &str, n: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = sluice.stats(name).await;
        if stats["delivered_total"].as_u64() == Some(n) && stats["depth"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {n} deliveries in {name}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Forward every connection on `listener` to `to` (a cluster that appears late).
pub async fn forward(listener: tokio::net::TcpListener, to: String) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            return;
        };
        let to = to.clone();
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// A gateway in front of the cluster, as users put nginx or a cloud's security
/// layer: it answers 401 unless the `Authorization` header is one of `allowed`
/// (when any is given), refuses bodies over `limit` bytes with 413 (nginx's
/// `client_max_body_size`), and counts those refusals.
pub async fn gateway(limit: usize, allowed: &'static [&'static str]) -> (String, Arc<AtomicUsize>) {
    use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let refused = Arc::new(AtomicUsize::new(0));
    let counter = refused.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if !allowed.is_empty() && !given.is_some_and(|g| allowed.contains(&g)) {
                    let answer = json!({"error": {"type": "security_exception",
                        "reason": "unable to authenticate user"}, "status": 401});
                    return (StatusCode::UNAUTHORIZED, answer.to_string().into());
                }
                if body.len() > limit {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let page = axum::body::Bytes::from_static(
                        b"<html>413 Request Entity Too Large</html>",
                    );
                    return (StatusCode::PAYLOAD_TOO_LARGE, page);
                }
                let r = reqwest::Client::new()
                    .request(method, format!("{}{uri}", es()))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                (r.status(), r.bytes().await.unwrap())
            }
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), refused)
}

/// The `data.n` values of the documents in `hits`.
pub fn numbers(hits: &[Value]) -> std::collections::HashSet<u64> {
    hits.iter()
        .filter_map(|hit| hit["_source"]["data"]["n"].as_u64())
        .collect()
}

/// Wait until the queue of subscription `name` is empty.
pub async fn wait_drained(sluice: &Sluice, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if sluice.stats(name).await["depth"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
