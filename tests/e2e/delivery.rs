//! Delivery: retries, dead letters and redrive, crash safety, isolation.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{event, free_port, orders_config, Receiver, Sluice};

fn order(id: impl std::fmt::Display) -> Value {
    event(id, "order.created", json!({"amount": 500}))
}

#[tokio::test]
async fn transient_failures_are_retried_and_delivered_once() {
    let recv = Receiver::start().await;
    recv.script(&[503, 503, 503], 200);
    let sluice = Sluice::start(&orders_config(&recv.url(), "")).await;
    assert_eq!(sluice.post_structured(&order("r-1")).await.status(), 202);
    let got = recv.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].header("ce-id"), Some("r-1"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recv.delivered().len(), 1, "delivered once");
    assert_eq!(recv.attempts(), 4);
    let stats = sluice.stats("big-orders.fn").await;
    assert_eq!(stats["delivered_total"], 1);
    assert_eq!(stats["retried_total"], 3);
    assert_eq!(stats["depth"], 0);
    let metrics = sluice.metrics().await;
    assert!(
        metrics.contains("sluice_delivery_retries_total{rule=\"big-orders\",target=\"fn\"} 3"),
        "{metrics}"
    );
    assert!(metrics
        .contains("sluice_delivery_latency_seconds_count{rule=\"big-orders\",target=\"fn\"} 1"));
}

#[tokio::test]
async fn client_errors_dead_letter_at_once_and_redrive_delivers() {
    let recv = Receiver::start().await;
    recv.script(&[400], 200);
    let sluice = Sluice::start(&orders_config(&recv.url(), "")).await;
    assert_eq!(sluice.post_structured(&order("d-1")).await.status(), 202);

    let letter = &sluice
        .first_dead_letter("big-orders.fn", Duration::from_secs(10))
        .await;
    assert_eq!(letter["last_status"], 400);
    assert_eq!(letter["event"]["id"], "d-1");
    assert_eq!(letter["attempts"].as_array().unwrap().len(), 1);
    assert!(
        letter["reason"].as_str().unwrap().contains("HTTP 400"),
        "{letter}"
    );
    assert_eq!(
        letter["body_excerpt"], "",
        "axum answers 400 with an empty body"
    );
    assert_eq!(recv.attempts(), 1, "a 4xx is not retried");
    let stats = sluice.stats("big-orders.fn").await;
    assert_eq!(
        (stats["dead_letters"].clone(), stats["depth"].clone()),
        (json!(1), json!(0))
    );

    let r: Value = sluice
        .client
        .post(sluice.url("/api/subscriptions/big-orders.fn/dead-letters/redrive"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"redriven": 1}));
    let got = recv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("ce-id"), Some("d-1"));
    assert_eq!(got[0].json(), json!({"amount": 500}));
    let stats = sluice.stats("big-orders.fn").await;
    assert_eq!(stats["dead_letters"], 0);

    let r = sluice
        .client
        .get(sluice.url("/api/subscriptions/nope/dead-letters"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn dead_letter_keeps_the_body_excerpt_and_every_attempt() {
    // A receiver that always answers 500 with a body: attempts run out.
    let port = free_port();
    let app = axum::Router::new().route(
        "/invoke",
        axum::routing::post(|| async {
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "database is down",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sluice = Sluice::start(&orders_config(
        &format!("http://127.0.0.1:{port}/invoke"),
        "",
    ))
    .await;
    assert_eq!(sluice.post_structured(&order("e-1")).await.status(), 202);
    let letter = sluice
        .first_dead_letter("big-orders.fn", Duration::from_secs(15))
        .await;
    assert_eq!(letter["last_status"], 500);
    assert_eq!(letter["body_excerpt"], "database is down");
    assert_eq!(
        letter["attempts"].as_array().unwrap().len(),
        5,
        "max_attempts: 5"
    );
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 5 attempts"),
        "{letter}"
    );
}

#[tokio::test]
async fn kill_9_loses_no_acknowledged_event() {
    // The target is down while 1,000 events are accepted.
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}/invoke");
    // Enough attempts that nothing is dead-lettered while the target is down.
    let config = orders_config(&url, "").replace("max_attempts: 5", "max_attempts: 1000");
    let mut sluice = Sluice::start(&config).await;
    let batch: Vec<Value> = (0..1000).map(order).collect();
    for chunk in batch.chunks(100) {
        let r = sluice.post_batch(&Value::Array(chunk.to_vec())).await;
        assert_eq!(r.status(), 202);
    }
    let before = sluice.stats("big-orders.fn").await;
    assert_eq!(before["depth"], 1000);
    sluice.kill9();

    sluice.spawn().await;
    let after = sluice.stats("big-orders.fn").await;
    assert_eq!(after["depth"], 1000, "depth survives the crash");
    assert_eq!(after["dead_letters"], 0);

    let recv = Receiver::start_on(port, None).await;
    let got = recv.wait_for(1000, Duration::from_secs(60)).await;
    let mut ids: Vec<u64> = got
        .iter()
        .map(|r| r.header("ce-id").unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice.stats("big-orders.fn").await["depth"] != 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Counters survive a restart too. (Settlements are flushed in the background;
    // after a `kill -9` the newest may be redone, which is at-least-once. A clean
    // stop flushes them all.)
    assert_eq!(sluice.terminate(), Some(0));
    sluice.spawn().await;
    let stats = sluice.stats("big-orders.fn").await;
    assert!(
        stats["delivered_total"].as_u64().unwrap() >= 1000,
        "{stats}"
    );
    assert_eq!(stats["depth"], 0);
}

#[tokio::test]
async fn a_stuck_target_does_not_hold_up_another_subscription() {
    let slow = Receiver::start_gated().await;
    let fast = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: slow\n    type: http\n    url: {}\n    timeout: 30s\n    concurrency: 2\n  - name: fast\n    type: http\n    url: {}\n\
rules:\n  - name: all\n    targets: [slow, fast]\n",
        slow.url(),
        fast.url()
    );
    let sluice = Sluice::start(&config).await;
    for i in 0..50 {
        assert_eq!(sluice.post_structured(&order(i)).await.status(), 202);
    }
    let got = fast.wait_for(50, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 50);
    assert_eq!(
        slow.delivered().len(),
        0,
        "the slow target is still holding its first requests"
    );
    slow.release();
    slow.wait_for(50, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn sigterm_finishes_in_flight_deliveries_and_exits_zero() {
    let gated = Receiver::start_gated().await;
    let mut sluice = Sluice::start(&orders_config(&gated.url(), "")).await;
    assert_eq!(sluice.post_structured(&order("t-1")).await.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gated.arrived() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let releaser = {
        let g = gated.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            g.release();
        })
    };
    let code = tokio::task::spawn_blocking(move || {
        let code = sluice.terminate();
        (code, sluice)
    })
    .await
    .unwrap();
    releaser.await.unwrap();
    assert_eq!(code.0, Some(0), "{}", code.1.log());
    assert_eq!(
        gated.delivered().len(),
        1,
        "the in-flight delivery finished before exit"
    );
}

#[tokio::test]
async fn a_rules_dead_letter_target_gets_what_its_subscriptions_give_up_on() {
    let recv = Receiver::start().await;
    recv.script(&[422], 200);
    let dlq = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n  - name: dlq\n    type: http\n    url: {}\n\
rules:\n  - name: orders\n    transform: {{ jq: '{{wrapped: .data}}' }}\n    targets: [fn]\n    dead_letter: dlq\n",
        recv.url(),
        dlq.url()
    );
    let sluice = Sluice::start(&config).await;
    assert_eq!(sluice.post_structured(&order("dl-1")).await.status(), 202);
    let got = dlq.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("ce-id"), Some("dl-1"));
    assert_eq!(
        got[0].header("ce-deadlettersubscription"),
        Some("orders.fn")
    );
    assert!(
        got[0]
            .header("ce-deadletterreason")
            .unwrap()
            .contains("HTTP%20422"),
        "{:?}",
        got[0].headers
    );
    assert_eq!(
        got[0].json(),
        json!({"amount": 500}),
        "the original event, not the transformed one"
    );
    // The store's dead-letter list keeps it too, and the forwarding subscription is listed.
    let stats = sluice.stats("orders.fn").await;
    assert_eq!(stats["dead_letters"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice.stats("orders.dead-letter").await["delivered_total"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the forward was not settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A batching HTTP target gets CloudEvents batches of at most `max_events`; a
/// failed request is retried whole, and every event arrives.
#[tokio::test]
async fn a_batching_http_target_gets_cloudevents_batches_retried_whole() {
    let recv = Receiver::start().await;
    recv.script(&[503], 200);
    let batch = "    batch: { max_events: 50, max_wait: 200ms }\n";
    let config = orders_config(&recv.url(), "").replacen(
        "    timeout: 2s\n",
        &format!("    timeout: 2s\n{batch}"),
        1,
    );
    let sluice = Sluice::start(&config).await;
    let events: Vec<Value> = (0..120).map(order).collect();
    assert_eq!(sluice.post_batch(&json!(events)).await.status(), 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut ids = Vec::new();
    while ids.len() < 120 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of 120 arrived",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        ids.clear();
        for request in recv.delivered() {
            assert_eq!(
                request.header("content-type"),
                Some("application/cloudevents-batch+json")
            );
            let batch = request.json();
            let batch = batch.as_array().expect("a JSON array");
            assert!(
                (1..=50).contains(&batch.len()),
                "{} events in one request",
                batch.len()
            );
            ids.extend(batch.iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        }
    }
    ids.sort_by_key(|id| id.parse::<u32>().unwrap());
    let expected: Vec<String> = (0..120).map(|i| i.to_string()).collect();
    assert_eq!(ids, expected, "each event once");
    // The refused first request came back whole: one more attempt than requests delivered.
    assert_eq!(recv.attempts(), recv.delivered().len() + 1);
    let stats = sluice.stats("big-orders.fn").await;
    assert_eq!(stats["delivered_total"], 120);
}

/// An operator pauses a subscription: events keep queueing and nothing is
/// delivered, across a restart too; resumed, every event arrives. An unknown
/// subscription is a 404 naming it.
#[tokio::test]
async fn a_paused_subscription_queues_and_delivers_nothing_until_resumed() {
    let recv = Receiver::start().await;
    let mut sluice = Sluice::start(&orders_config(&recv.url(), "")).await;
    let pause = |path: &str| sluice.client.post(sluice.url(path)).send();
    let r = pause("/api/subscriptions/big-orders.fn/pause")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["paused"], true);
    let r = pause("/api/subscriptions/nope.fn/pause").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("nope.fn"));
    for i in 0..10 {
        assert_eq!(
            sluice
                .post_structured(&order(format!("p-{i}")))
                .await
                .status(),
            202
        );
    }
    let sub = sluice.get_json("/api/subscriptions/big-orders.fn").await;
    assert_eq!(
        (sub["paused"].as_bool(), sub["stats"]["depth"].as_u64()),
        (Some(true), Some(10)),
        "{sub}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recv.attempts(), 0, "nothing sent while paused");
    // Still paused after a restart.
    sluice.terminate();
    sluice.spawn().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recv.attempts(), 0, "nothing sent after the restart");
    assert_eq!(
        sluice.get_json("/api/subscriptions/big-orders.fn").await["paused"],
        true
    );
    let r = sluice
        .client
        .post(sluice.url("/api/subscriptions/big-orders.fn/resume"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = recv.wait_for(10, Duration::from_secs(15)).await;
    let mut ids: Vec<&str> = got.iter().filter_map(|r| r.header("ce-id")).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 10);
    assert_eq!(
        sluice.get_json("/api/subscriptions/big-orders.fn").await["paused"],
        false
    );
}

/// `rate_limit: 50` on a target two rules send to: about 300 events in 6 s
/// between them, whatever is queued; a rate that is not one is refused.
#[tokio::test]
async fn a_rate_limited_target_takes_its_rate_across_rules() {
    let recv = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n    rate_limit: 50\n\
rules:\n  - name: a\n    filter: {{ pattern: {{ type: [a] }} }}\n    targets: [fn]\n  \
- name: b\n    filter: {{ pattern: {{ type: [b] }} }}\n    targets: [fn]\n",
        recv.url()
    );
    let sluice = Sluice::start(&config).await;
    let events: Vec<Value> = (0..1000)
        .map(|i| event(i, if i % 2 == 0 { "a" } else { "b" }, json!({})))
        .collect();
    assert_eq!(sluice.post_batch(&json!(events)).await.status(), 202);
    let start = std::time::Instant::now();
    recv.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(start.elapsed())).await;
    let got = recv.delivered().len();
    assert!((270..=330).contains(&got), "{got} events in 6 s at 50/s");
    // Both rules' events share the one rate.
    let types: std::collections::HashSet<String> = recv
        .delivered()
        .iter()
        .filter_map(|r| r.header("ce-type").map(str::to_owned))
        .collect();
    assert_eq!(types.len(), 2, "{types:?}");

    let (code, _, stderr) = crate::harness::validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9/\n    rate_limit: 0\nrules:\n  - name: r\n    targets: [fn]\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("targets[0].rate_limit: 0 is not a rate"),
        "{stderr}"
    );
}
