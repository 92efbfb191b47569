//! A target's circuit breaker: deliveries stop after `failures` failures in a
//! row, one probe after the cooldown, everything queued once it succeeds.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{event, validate, Receiver, Sluice};

/// Wait until `recv` was asked `n` times (or panic after 15 s).
async fn attempts(recv: &Receiver, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while recv.attempts() < n {
        assert!(
            Instant::now() < deadline,
            "{} attempts, waited for {n}",
            recv.attempts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_open_breaker_holds_deliveries_probes_once_and_closes_on_success() {
    let recv = Receiver::start().await;
    recv.script(&[], 503);
    let ops = Receiver::start().await;
    let body = format!(
        "targets:
  - name: fn
    type: http
    url: {}
    concurrency: 1
    breaker: {{ failures: 3, cooldown: 2s }}
  - name: ops
    type: http
    url: {}
rules:
  - name: work
    targets: [fn]
    retry: {{ max_attempts: 100, backoff: {{ initial: 50ms, max: 100ms }} }}
  - name: watch
    bus: system
    filter: {{ pattern: {{ type: [{{ prefix: sluice.subscription.breaker_ }}] }} }}
    targets: [ops]
",
        recv.url(),
        ops.url()
    );
    let sluice = Sluice::start(&body).await;
    for i in 0..5 {
        let e = event(format!("b-{i}"), "job", json!({}));
        assert_eq!(sluice.post_structured(&e).await.status(), 202);
    }

    attempts(&recv, 3).await;
    let sub = sluice.get_json("/api/subscriptions/work.fn").await;
    assert_eq!(sub["breaker"]["state"], "open", "{sub}");
    assert!(sub["breaker"]["opened_at"].is_string(), "{sub}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(recv.attempts(), 3, "nothing is sent during the cooldown");

    // After the cooldown, one probe; it fails, and the breaker opens again.
    attempts(&recv, 4).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(recv.attempts(), 4, "one probe, then another cooldown");

    recv.script(&[], 200);
    let got = recv.wait_for(5, Duration::from_secs(15)).await;
    let mut ids: Vec<&str> = got.iter().filter_map(|r| r.header("ce-id")).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["b-0", "b-1", "b-2", "b-3", "b-4"]);
    assert_eq!(recv.attempts(), 9, "4 failed, then the 5 events once each");
    let sub = sluice.get_json("/api/subscriptions/work.fn").await;
    assert_eq!(sub["breaker"]["state"], "closed", "{sub}");

    let notes = ops.wait_for(2, Duration::from_secs(10)).await;
    let types: Vec<&str> = notes.iter().filter_map(|r| r.header("ce-type")).collect();
    assert_eq!(
        types,
        [
            "sluice.subscription.breaker_opened",
            "sluice.subscription.breaker_closed"
        ]
    );
    let opened = notes[0].json();
    assert_eq!(opened["subscription"], "work.fn");
    assert_eq!(opened["failures"], 3);
    assert!(
        opened["reason"].as_str().unwrap().contains("503"),
        "{opened}"
    );
}

#[test]
fn a_breaker_needs_failures_and_a_cooldown() {
    let (code, _, stderr) = validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9/\n    breaker: { failures: 0, cooldown: 0s }\n  - name: g\n    type: http\n    url: http://127.0.0.1:9/\n    breaker: { failures: 1 }\nrules:\n  - name: r\n    targets: [fn, g]\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("targets[0].breaker.failures: must be at least 1 (line 5"),
        "{stderr}"
    );
    assert!(
        stderr.contains("targets[0].breaker.cooldown: must be greater than 0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("targets[1].breaker") && stderr.contains("missing field `cooldown`"),
        "{stderr}"
    );
}
