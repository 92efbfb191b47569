//! De-duplication: a replay (same bus, `source` and `id`) within
//! `server.dedupe_window` is dropped, across a `kill -9`; the keys expire whole.

use std::time::Duration;

use serde_json::json;

use crate::harness::{event, Receiver, Sluice};

/// The value of metric `name` (without labels) in an exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn batch(prefix: &str, n: usize) -> serde_json::Value {
    let events: Vec<_> = (0..n)
        .map(|i| event(format!("{prefix}-{i}"), "t", json!({"n": i})))
        .collect();
    json!(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_dropped_across_kill_9_and_their_keys_expire_with_the_window() {
    let recv = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 8\n\
rules:\n  - name: all\n    targets: [fn]\n  - name: other-bus\n    bus: audit\n    targets: [fn]\n",
        recv.url()
    );
    let mut sluice = Sluice::start_with_server(&config, "  dedupe_window: 6s\n").await;
    for part in 0..4 {
        let r = sluice.post_batch(&batch(&format!("a{part}"), 500)).await;
        assert_eq!(r.status(), 202);
    }
    recv.wait_for(2_000, Duration::from_secs(30)).await;
    let m = sluice.metrics().await;
    assert_eq!(metric(&m, "sluice_dedupe_keys"), Some(2_000.0), "{m}");

    // Every delivery settled, a crash, then every event sent again: each one
    // is dropped as a replay.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sluice.stats("all.fn").await["depth"] != 0 {
        assert!(std::time::Instant::now() < deadline, "not settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sluice.kill9();
    sluice.spawn().await;
    for part in 0..4 {
        let r = sluice.post_batch(&batch(&format!("a{part}"), 500)).await;
        assert_eq!(r.status(), 202);
    }
    // The same source and id on another bus is another event.
    let r = sluice
        .client
        .post(sluice.url("/buses/audit/events"))
        .header("content-type", "application/cloudevents+json")
        .body(event("a0-0", "t", json!({})).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The other bus's event arrives (its data is `{}`); every replay was
    // dropped before it was queued, as the count says (an event in flight at
    // the crash may be delivered again: that is not a replay).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !recv.delivered().iter().any(|r| r.body.as_ref() == b"{}") {
        assert!(
            std::time::Instant::now() < deadline,
            "the audit bus's event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m = sluice.metrics().await;
    assert_eq!(
        metric(
            &m,
            "sluice_events_duplicate_total{bus=\"default\",source=\"http\"}"
        ),
        Some(2_000.0),
        "{m}"
    );

    // Past the window the keys go whole (a new event sweeps them), and the old
    // events count as new again.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let r = sluice.post_structured(&event("late", "t", json!({}))).await;
    assert_eq!(r.status(), 202);
    let m = sluice.metrics().await;
    let keys = metric(&m, "sluice_dedupe_keys").unwrap_or(-1.0);
    assert!(keys <= 2.0, "{keys} keys held after the window: {m}");
    let before = recv.arrived();
    let r = sluice.post_batch(&batch("a0", 10)).await;
    assert_eq!(r.status(), 202);
    recv.wait_for(before + 10, Duration::from_secs(10)).await;
}

#[test]
fn a_zero_max_keys_is_a_validate_error() {
    let (code, _, err) = crate::harness::validate(
        "server:\n  dedupe_max_keys: 0\ntargets:\n  - name: t\n    type: discard\nrules:\n  - name: r\n    targets: [t]\n",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("server.dedupe_max_keys"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}
