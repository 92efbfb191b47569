//! The store under `kill -9` at random moments while many clients publish and a
//! target takes deliveries: every event answered 202 is delivered at least once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{event, Receiver, Sluice};

/// Kills in one run (20 by hand: `SLUICE_CRASH_KILLS=20`).
fn kills() -> usize {
    std::env::var("SLUICE_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_acknowledged_event() {
    let recv = Receiver::start().await;
    let config = format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\n    concurrency: 8\n\
rules:\n  - name: all\n    targets: [fn]\n    retry: {{ max_attempts: 100, backoff: {{ initial: 50ms, max: 200ms }} }}\n",
        recv.url()
    );
    let mut sluice = Sluice::start(&config).await;
    let url = sluice.url("/events");
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..32 {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{p}-{n}");
                let body = event(&id, "t", json!({"n": n})).to_string();
                let sent = client
                    .post(&url)
                    .header("content-type", "application/cloudevents+json")
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => {
                        acked.lock().unwrap().insert(id);
                        n += 1;
                    }
                    // Down or refusing: the same event again, as a client would.
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for _ in 0..kills() {
        // A moment between 0.3 and 1.5 s from the clock's nanoseconds.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let wait = 300 + u64::from(nanos) % 1_200;
        tokio::time::sleep(Duration::from_millis(wait)).await;
        sluice.kill9();
        sluice.spawn().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.await.unwrap();
    }
    let want: HashSet<String> = acked.lock().unwrap().clone();
    assert!(want.len() > 100, "only {} events acknowledged", want.len());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in recv.delivered() {
            if let Some(id) = r.header("ce-id") {
                *seen.entry(id.to_owned()).or_default() += 1;
            }
        }
        let missing = want.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            let twice: usize = seen.values().map(|c| c - 1).sum();
            eprintln!(
                "crash loop: {} kills, {} events acknowledged, all delivered, {twice} delivered more than once",
                kills(),
                want.len()
            );
            break;
        }
        if Instant::now() >= deadline {
            let lost: Vec<&String> = want.iter().filter(|id| !seen.contains_key(*id)).collect();
            let stats = sluice.stats("all.fn").await;
            let log = sluice.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            panic!(
                "{missing} of {} acknowledged events never delivered: {lost:?}; subscription: {stats}; log tail (newest first):\n{}",
                want.len(),
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
