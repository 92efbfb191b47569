//! sluice's own events on bus `system`, routed by rules on that bus to targets
//! like any event: started, backlog high and recovered, dead letters summarised
//! (never one per dead letter), and no loop through a failing ops target.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{event, Received, Receiver, Sluice};

fn of_type<'a>(got: &'a [Received], ty: &str) -> Vec<&'a Received> {
    got.iter()
        .filter(|r| r.header("ce-type") == Some(ty))
        .collect()
}

/// Wait until `ops` got an event of type `ty` (or fail after `timeout`).
async fn wait_type(ops: &Receiver, ty: &str, timeout: Duration) -> Received {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(r) = of_type(&ops.delivered(), ty).first() {
            return (*r).clone();
        }
        let seen: Vec<String> = ops
            .delivered()
            .iter()
            .filter_map(|r| r.header("ce-type").map(str::to_owned))
            .collect();
        assert!(
            Instant::now() < deadline,
            "no {ty} within {timeout:?}; got {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_backlog_crossing_its_threshold_and_recovering_reaches_a_target_on_bus_system() {
    let slow = Receiver::start_gated().await;
    let ops = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: slow\n    type: http\n    url: {}\n    timeout: 60s\n    concurrency: 1\n  \
- name: ops\n    type: http\n    url: {}\n\
rules:\n  - name: work\n    targets: [slow]\n  - name: ops\n    bus: system\n    targets: [ops]\n",
        slow.url(),
        ops.url()
    );
    let mut sluice = Sluice::start_with_server(
        &config,
        "  system_events:\n    backlog_threshold: 5\n    name: node-1\n",
    )
    .await;
    let started = wait_type(&ops, "sluice.started", Duration::from_secs(10)).await;
    assert_eq!(started.header("ce-source"), Some("sluice://node-1"));
    assert!(started.json()["pid"].is_u64());

    // The stalled target holds its first delivery; the rest pile up.
    for i in 0..10 {
        let r = sluice.post_structured(&event(i, "job", json!({}))).await;
        assert_eq!(r.status(), 202);
    }
    let high = wait_type(
        &ops,
        "sluice.subscription.backlog_high",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(high.header("ce-subject"), Some("work.slow"));
    let data = high.json();
    assert_eq!(data["threshold"], 5);
    assert!(data["depth"].as_u64().unwrap() >= 5, "{data}");
    assert!(of_type(&ops.delivered(), "sluice.subscription.backlog_recovered").is_empty());

    // Drain: recovered, once.
    slow.release();
    slow.wait_for(10, Duration::from_secs(30)).await;
    let back = wait_type(
        &ops,
        "sluice.subscription.backlog_recovered",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(back.header("ce-subject"), Some("work.slow"));
    assert!(back.json()["depth"].as_u64().unwrap() <= 2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = ops.delivered();
    assert_eq!(of_type(&got, "sluice.subscription.backlog_high").len(), 1);
    assert_eq!(
        of_type(&got, "sluice.subscription.backlog_recovered").len(),
        1
    );

    // A stop says so: delivered before it, or after the next start at the latest.
    assert_eq!(sluice.terminate(), Some(0));
    sluice.spawn().await;
    let stopping = wait_type(&ops, "sluice.stopping", Duration::from_secs(10)).await;
    assert_eq!(stopping.header("ce-source"), Some("sluice://node-1"));
}

#[tokio::test]
async fn a_dead_letter_storm_is_a_few_summaries_and_a_failing_ops_target_makes_no_loop() {
    let bad = Receiver::start().await;
    bad.script(&[], 400);
    let ops = Receiver::start().await;
    // `work.bad` dead-letters every event at once (400). Every system event also
    // goes to `pager.bad` on bus `system`, where it dead-letters too: that must
    // not produce system events about `pager.bad`.
    let config = format!(
        "targets:\n  - name: bad\n    type: http\n    url: {}\n  - name: ops\n    type: http\n    url: {}\n\
rules:\n  - name: work\n    targets: [bad]\n  - name: ops\n    bus: system\n    targets: [ops]\n  \
- name: pager\n    bus: system\n    targets: [bad]\n",
        bad.url(),
        ops.url()
    );
    let sluice =
        Sluice::start_with_server(&config, "  system_events:\n    dead_letter_interval: 3s\n")
            .await;
    wait_type(&ops, "sluice.started", Duration::from_secs(10)).await;

    let posted = Instant::now();
    // 200 dead letters over about 4.5 s: longer than one interval.
    let storm: Vec<serde_json::Value> = (0..200).map(|i| event(i, "job", json!({}))).collect();
    for (i, part) in storm.chunks(50).enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        assert_eq!(sluice.post_batch(&json!(part)).await.status(), 202);
    }
    // Every dead letter counted, in summaries.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (summaries, done) = loop {
        let got = ops.delivered();
        let summaries: Vec<serde_json::Value> = of_type(&got, "sluice.subscription.dead_lettered")
            .iter()
            .map(|r| r.json())
            .collect();
        let total: u64 = summaries.iter().map(|s| s["count"].as_u64().unwrap()).sum();
        if total >= 200 {
            break (summaries, posted.elapsed());
        }
        assert!(Instant::now() < deadline, "summaries so far: {summaries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let total: u64 = summaries.iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 200, "{summaries:?}");
    for s in &summaries {
        assert_eq!(
            s["subscription"], "work.bad",
            "only the storm's subscription: {s}"
        );
        assert!(s["count"].as_u64().unwrap() > 0);
        assert!(s["last_reason"].as_str().unwrap().contains("400"), "{s}");
    }
    eprintln!(
        "system events: 200 dead letters summarised in {} events over {done:?}",
        summaries.len()
    );
    // At most one per interval (3 s) while it lasted, plus the first.
    let bound = done.as_secs() / 3 + 2;
    assert!(
        summaries.len() as u64 <= bound,
        "{} summaries in {done:?}",
        summaries.len()
    );

    // No loop: a few ticks later nothing new was published, and the failing
    // ops subscription holds exactly the system events it was given.
    let before = ops.delivered().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let got = ops.delivered();
    assert_eq!(
        got.len(),
        before,
        "no new system events: {:?}",
        of_type(&got, "x")
    );
    for r in &got {
        assert_ne!(r.header("ce-subject"), Some("pager.bad"));
        assert_ne!(r.header("ce-subject"), Some("ops.ops"));
    }
    let pager = sluice.stats("pager.bad").await;
    assert_eq!(pager["dead_lettered_total"], got.len() as u64, "{pager}");
}

#[test]
fn bad_system_event_and_delay_settings_are_validate_errors_with_their_path() {
    let (code, _, stderr) = crate::harness::validate(
        "server:\n  max_delay: 0s\n  system_events:\n    backlog_threshold: 0\n    dead_letter_interval: 0s\n    name: two words\n",
    );
    assert_eq!(code, 1, "{stderr}");
    for want in [
        "server.system_events.backlog_threshold: must be greater than 0",
        "server.system_events.dead_letter_interval: must be greater than 0",
        "server.system_events.name: must be a host name",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
    let (code, _, stderr) =
        crate::harness::validate("server:\n  system_events:\n    threshold: 5\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("threshold"), "{stderr}");
    let (code, _, stderr) = crate::harness::validate("server:\n  max_delay: a while\n");
    assert_eq!(code, 1);
    assert!(stderr.contains("server.max_delay"), "{stderr}");
}

/// A target that cannot be reached is `sluice.target.unready` with the reason;
/// once something answers on its address, `sluice.target.ready`.
#[tokio::test]
async fn a_target_going_unready_and_ready_again_is_one_event_each() {
    let ops = Receiver::start().await;
    let port = crate::harness::free_port();
    let config = format!(
        "targets:\n  - name: search\n    type: elasticsearch\n    url: http://127.0.0.1:{port}\n    index: logs\n  \
- name: ops\n    type: http\n    url: {}\n\
rules:\n  - name: work\n    targets: [search]\n  - name: ops\n    bus: system\n    targets: [ops]\n",
        ops.url()
    );
    let _sluice = Sluice::start_unready(&config).await;
    let down = wait_type(&ops, "sluice.target.unready", Duration::from_secs(20)).await;
    assert_eq!(down.header("ce-subject"), Some("search"));
    let reason = down.json()["reason"].as_str().unwrap().to_owned();
    assert!(reason.starts_with("cannot reach"), "{reason}");
    assert!(of_type(&ops.delivered(), "sluice.target.ready").is_empty());
    // Something answers there now (any answer but 401 or 5xx will do for the
    // target's check); the next check finds it.
    let _up = Receiver::start_on(port, None).await;
    let up = wait_type(&ops, "sluice.target.ready", Duration::from_secs(20)).await;
    assert_eq!(up.header("ce-subject"), Some("search"));
    assert_eq!(of_type(&ops.delivered(), "sluice.target.unready").len(), 1);
}
