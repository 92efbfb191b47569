//! Ingest against a bus whose delivery is behind, and a source's own HTTP route.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{event, free_port, Receiver, Sluice};

/// A rule delivering every event of `bus` to `url`, retried quickly.
fn deliver_all(bus: &str, url: &str) -> String {
    format!(
        "targets:\n  - name: fn\n    type: http\n    url: {url}\n    timeout: 1s\n\
rules:\n  - name: all\n    bus: {bus}\n    targets: [fn]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 200ms }} }}\n"
    )
}

/// While a subscription of a bus holds more than `server.max_backlog` events,
/// ingest to that bus answers 503 `backlog_full` with `Retry-After`; once the
/// target drains it, ingest accepts again, and nothing accepted is lost.
#[tokio::test]
async fn ingest_is_refused_while_the_bus_is_over_max_backlog() {
    let port = free_port();
    let body = deliver_all("default", &format!("http://127.0.0.1:{port}/invoke"));
    let sluice = Sluice::start_with_server(&body, "  max_backlog: 5\n").await;
    // The target is down: six events wait in the queue.
    for i in 0..6 {
        let r = sluice
            .post_structured(&event(i, "t", json!({"n": i})))
            .await;
        assert_eq!(r.status(), 202);
    }
    let r = sluice
        .post_structured(&event(6, "t", json!({"n": 6})))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "backlog_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("all.fn") && message.contains("max_backlog (5)"),
        "{message}"
    );
    // A batch is refused whole too.
    let batch = json!([event(7, "t", json!({}))]);
    assert_eq!(sluice.post_batch(&batch).await.status(), 503);

    // The target comes up: the six arrive, and ingest accepts again.
    let recv = Receiver::start_on(port, None).await;
    recv.wait_for(6, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = sluice
            .post_structured(&event(6, "t", json!({"n": 6})))
            .await;
        if r.status() == 202 {
            break;
        }
        assert!(Instant::now() < deadline, "still {}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    recv.wait_for(7, Duration::from_secs(30)).await;
    let metrics = sluice.metrics().await;
    assert!(
        metrics.contains("sluice_events_received_total{bus=\"default\",source=\"http\"} 7"),
        "{metrics}"
    );
}

/// An `http` source serves `POST /sources/{name}/events`: events go to its bus
/// under its name, behind the ingest token, with ingest's errors.
#[tokio::test]
async fn an_http_source_publishes_on_its_own_route() {
    let recv = Receiver::start().await;
    let body = format!(
        "sources:\n  - name: web\n    type: http\n    bus: shop\n{}",
        deliver_all("shop", &recv.url())
    );
    let sluice = Sluice::start_with_server(&body, "  auth: { ingest_token: secret }\n").await;
    let post = |token: Option<&str>, payload: Value| {
        let mut r = sluice
            .client
            .post(sluice.url("/sources/web/events"))
            .header("content-type", "application/cloudevents+json")
            .body(payload.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let r = post(None, event(1, "t", json!({"n": 1}))).await.unwrap();
    assert_eq!(r.status(), 401);
    let r = post(Some("secret"), json!({"id": "x"})).await.unwrap();
    assert_eq!(r.status(), 400);
    let error: Value = r.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_event", "{error}");
    let r = post(Some("secret"), event(1, "t", json!({"n": 1})))
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let got = recv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("ce-id"), Some("1"));
    let metrics = sluice.metrics().await;
    assert!(
        metrics.contains("sluice_events_received_total{bus=\"shop\",source=\"web\"} 1")
            && metrics.contains("sluice_events_rejected_total{bus=\"shop\",source=\"web\"} 1"),
        "{metrics}"
    );
    let unknown = sluice
        .client
        .post(sluice.url("/sources/nope/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}
