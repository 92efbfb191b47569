//! Delayed delivery per event (`deliverat` / `delay`): held in the subscription,
//! delivered no earlier than asked, in order of due time, across a restart; bad
//! values refused with 400 naming the extension.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use crate::harness::{event, Received, Receiver, Sluice};

/// One target taking one delivery at a time (so arrival order is delivery
/// order), every event of the default bus.
fn config(url: &str) -> String {
    format!(
        "targets:\n  - name: fn\n    type: http\n    url: {url}\n    concurrency: 1\n\
rules:\n  - name: all\n    targets: [fn]\n"
    )
}

fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The `deliverat` a delivery carries (binary mode: a header) and when it came.
fn due_and_arrival(r: &Received) -> (SystemTime, SystemTime) {
    let text = r.header("ce-deliverat").expect("ce-deliverat header");
    let due = DateTime::parse_from_rfc3339(text).unwrap();
    (SystemTime::from(due), r.at)
}

fn assert_none_early(got: &[Received]) {
    for r in got {
        let (due, at) = due_and_arrival(r);
        assert!(
            at >= due,
            "event {:?} arrived {:?} before its deliverat",
            r.header("ce-id"),
            due.duration_since(at).unwrap()
        );
    }
}

#[tokio::test]
async fn a_thousand_delayed_events_arrive_in_due_order_and_none_early() {
    let receiver = Receiver::start().await;
    let sluice = Sluice::start(&config(&receiver.url())).await;
    // Due times spread over 10 s, starting 3 s out (after all are published),
    // published in an order unrelated to them.
    let start = SystemTime::now() + Duration::from_secs(3);
    let events: Vec<serde_json::Value> = (0..1000u64)
        .map(|i| {
            let offset = Duration::from_millis((i * 7919) % 10_000);
            let mut e = event(i, "job.due", json!({ "n": i }));
            e["deliverat"] = rfc3339(start + offset).into();
            e
        })
        .collect();
    for part in events.chunks(100) {
        let r = sluice.post_batch(&json!(part)).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    // Held: nothing due yet, and the admin API counts them as waiting.
    let stats = sluice.stats("all.fn").await;
    assert_eq!(stats["depth"], 1000, "{stats}");
    assert_eq!(stats["retrying"], 1000, "scheduled for later: {stats}");
    assert_eq!(receiver.delivered().len(), 0);

    let got = receiver.wait_for(1000, Duration::from_secs(90)).await;
    assert_none_early(&got);
    // For the record (not asserted): how late after its time each event came.
    let mut late: Vec<u128> = got
        .iter()
        .map(|r| {
            let (due, at) = due_and_arrival(r);
            at.duration_since(due).unwrap_or_default().as_millis()
        })
        .collect();
    late.sort_unstable();
    eprintln!(
        "delay: lateness after deliverat over 1000 events: median {} ms, p99 {} ms, max {} ms",
        late[500], late[990], late[999]
    );
    let dues: Vec<SystemTime> = got.iter().map(|r| due_and_arrival(r).0).collect();
    assert!(
        dues.windows(2).all(|w| w[0] <= w[1]),
        "arrival order is due order"
    );
    let mut ids: Vec<u64> = got
        .iter()
        .map(|r| r.header("ce-id").unwrap().parse().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..1000).collect::<Vec<_>>(), "each once");
}

#[tokio::test]
async fn delayed_events_survive_a_restart_and_still_wait_for_their_time() {
    let receiver = Receiver::start().await;
    let mut sluice = Sluice::start(&config(&receiver.url())).await;
    // `delay` is counted from acceptance: its due time is at least this late.
    let sent = SystemTime::now();
    let events: Vec<serde_json::Value> = (0..20u64)
        .map(|i| {
            let mut e = event(i, "job.due", json!({}));
            e["delay"] = format!("{}ms", 4000 + i * 100).into();
            e
        })
        .collect();
    let r = sluice.post_batch(&json!(events)).await;
    assert_eq!(r.status(), 202);
    assert_eq!(sluice.terminate(), Some(0));
    assert_eq!(receiver.delivered().len(), 0, "none before the restart");
    sluice.spawn().await;
    assert_eq!(sluice.stats("all.fn").await["depth"], 20);
    let got = receiver.wait_for(20, Duration::from_secs(60)).await;
    for r in &got {
        let i: u64 = r.header("ce-id").unwrap().parse().unwrap();
        assert_eq!(
            r.header("ce-delay"),
            Some(format!("{}ms", 4000 + i * 100).as_str())
        );
        let earliest = sent + Duration::from_millis(4000 + i * 100);
        assert!(r.at >= earliest, "event {i} early");
    }
    // Deliveries after the restart are still in due order.
    let order: Vec<u64> = got
        .iter()
        .map(|r| r.header("ce-id").unwrap().parse().unwrap())
        .collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_or_too_distant_delays_are_400_naming_the_field() {
    let receiver = Receiver::start().await;
    let sluice = Sluice::start_with_server(&config(&receiver.url()), "  max_delay: 1h\n").await;
    let with = |ext: &str, value: serde_json::Value| {
        let mut e = event("x", "job.due", json!({}));
        e[ext] = value;
        e
    };
    let cases = [
        (with("delay", "soon".into()), "delay", "is not a duration"),
        (with("delay", "-5s".into()), "delay", "is not a duration"),
        (
            with("delay", 90.into()),
            "delay",
            "must be a duration string",
        ),
        (
            with("deliverat", "tomorrow".into()),
            "deliverat",
            "RFC 3339",
        ),
        (
            with("deliverat", "2030-01-01T00:00:00".into()),
            "deliverat",
            "RFC 3339",
        ),
        (with("delay", "2h".into()), "delay", "server.max_delay (1h)"),
        (
            with(
                "deliverat",
                rfc3339(SystemTime::now() + Duration::from_secs(7200)).into(),
            ),
            "deliverat",
            "server.max_delay (1h)",
        ),
    ];
    for (body, field, message) in cases {
        let r = sluice.post_structured(&body).await;
        assert_eq!(r.status(), 400, "{body}");
        let err: serde_json::Value = r.json().await.unwrap();
        assert_eq!(err["error"]["field"], field, "{err}");
        let text = err["error"]["message"].as_str().unwrap();
        assert!(text.contains(message), "{err}");
    }
    // Both at once is ambiguous.
    let mut both = with("delay", "1s".into());
    both["deliverat"] = rfc3339(SystemTime::now()).into();
    let r = sluice.post_structured(&both).await;
    assert_eq!(r.status(), 400);
    // Binary mode: the header is the extension.
    let r = sluice
        .client
        .post(sluice.url("/events"))
        .header("ce-specversion", "1.0")
        .header("ce-id", "b")
        .header("ce-source", "/tests")
        .header("ce-type", "job.due")
        .header("ce-delay", "3 fortnights and a bit")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "delay", "{err}");
    // In a batch, the element is named and nothing of the batch is kept.
    let good = event("good", "job.due", json!({}));
    let r = sluice
        .post_batch(&json!([good, with("delay", "1 eon".into())]))
        .await;
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.unwrap();
    assert_eq!(err["error"]["field"], "[1].delay", "{err}");
    // A past time and a zero delay are now; the refused ones never arrive.
    let mut past = event("past", "job.due", json!({}));
    past["deliverat"] = "2001-01-01T00:00:00Z".into();
    let mut zero = event("zero", "job.due", json!({}));
    zero["delay"] = "0s".into();
    let r = sluice.post_batch(&json!([past, zero])).await;
    assert_eq!(r.status(), 202);
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered().len(), 2, "{got:?}");
    assert_eq!(sluice.stats("all.fn").await["depth"], 0);
}
