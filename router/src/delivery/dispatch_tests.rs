//! The dispatcher's batching, per-event settlement and batch plans, against a
//! target that records what it is given.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use std::collections::HashMap;

use crate::config::{BatchConfig, CompiledRules, Config, RuleConfig, Validated};
use crate::delivery::dispatch::Dispatcher;
use crate::delivery::retry::RetryPolicy;
use crate::engine::{Engine, Replays};
use crate::event::{Event, EventFields, RawData};
use crate::sink::{Sink, SinkError};
use crate::store::Store;

/// Which events fail: given `data.n` and the 1-based call number.
type FailWith = Box<dyn Fn(u64, usize) -> Option<SinkError> + Send>;

/// Records each batch's `data.n` values; fails events as `fail` says.
#[derive(Default)]
struct Recorder {
    batches: Mutex<Vec<Vec<u64>>>,
    fail: Mutex<Option<FailWith>>,
    stable: bool,
}

fn n_of(e: &Event) -> u64 {
    match e.data() {
        Some(cloudevents::Data::Json(v)) => v["n"].as_u64().unwrap_or(u64::MAX),
        _ => u64::MAX,
    }
}

#[async_trait]
impl Sink for Recorder {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let ns: Vec<u64> = events.iter().map(n_of).collect();
        let mut batches = self.batches.lock().unwrap();
        batches.push(ns.clone());
        let call = batches.len();
        let fail = self.fail.lock().unwrap();
        ns.iter()
            .map(|&n| match fail.as_ref().and_then(|f| f(n, call)) {
                Some(e) => Err(e),
                None => Ok(()),
            })
            .collect()
    }

    fn stable_batches(&self) -> bool {
        self.stable
    }
}

fn event(n: u64) -> Event {
    let mut f = EventFields::new();
    f.attr("specversion", "1.0")
        .attr("id", n.to_string())
        .attr("source", "/test")
        .attr("type", "t")
        .data(RawData::Json(json!({"n": n})));
    f.build().unwrap()
}

fn engine(dir: &std::path::Path) -> Arc<Engine> {
    engine_with(
        dir,
        "{name: r, targets: [t], retry: {backoff: {initial: 10ms, max: 20ms}}}",
    )
}

/// An engine whose one rule is `rule` (YAML).
fn engine_with(dir: &std::path::Path, rule: &str) -> Arc<Engine> {
    let rule: RuleConfig = serde_yaml::from_str(rule).unwrap();
    let rules = vec![rule];
    let validated = Validated::<(), ()> {
        rules: Arc::new(CompiledRules::new(&rules, vec![(None, None)])),
        config: Config {
            rules,
            ..Config::default()
        },
    };
    let buses = ["default".to_owned()].into_iter().collect();
    let store = Store::open(dir).unwrap();
    store.open_rejects(&["pull"]).unwrap();
    Engine::build(&validated, store, HashMap::new(), buses).unwrap()
}

/// Publish as a source whose replays are recognised by key.
async fn publish(engine: &Engine, events: &[Event]) {
    engine
        .publish("default", "test", events, Replays::ByKey)
        .await
        .unwrap();
}

async fn run(
    engine: &Engine,
    sink: Arc<Recorder>,
    batch: &BatchConfig,
    until: impl Fn(&Recorder) -> bool,
) {
    let sub = engine.subscription_handles()[0].clone();
    let policy = RetryPolicy {
        max_attempts: 3,
        max_age: Duration::from_secs(60),
        initial: Duration::from_millis(10),
        max: Duration::from_millis(20),
    };
    let d = Dispatcher::new(sub, sink.clone(), None, policy, 1).with_batches(batch);
    let stop = CancellationToken::new();
    let task = tokio::spawn(d.run(stop.clone(), Duration::from_secs(1)));
    for _ in 0..500 {
        if until(&sink) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    task.await.unwrap();
}

fn delivered(sink: &Recorder) -> usize {
    sink.batches.lock().unwrap().iter().map(Vec::len).sum()
}

#[tokio::test]
async fn batches_fill_to_max_events_and_flush_after_max_wait() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let events: Vec<Event> = (0..25).map(event).collect();
    publish(&engine, &events).await;
    let sink = Arc::new(Recorder::default());
    let batch = BatchConfig {
        max_events: 10,
        max_bytes: 1 << 20,
        max_wait: Duration::from_millis(100),
    };
    run(&engine, sink.clone(), &batch, |s| delivered(s) == 25).await;
    let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, [10, 10, 5]);
    assert_eq!(engine.subscription_handles()[0].queue.stats().depth, 0);
}

#[tokio::test]
async fn max_bytes_cuts_a_batch() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let events: Vec<Event> = (0..6).map(event).collect();
    publish(&engine, &events).await;
    let size = serde_json::to_string(&events[0]).unwrap().len();
    let sink = Arc::new(Recorder::default());
    let batch = BatchConfig {
        max_events: 100,
        max_bytes: size * 2,
        max_wait: Duration::from_millis(50),
    };
    run(&engine, sink.clone(), &batch, |s| delivered(s) == 6).await;
    let sizes: Vec<usize> = sink.batches.lock().unwrap().iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 2]);
}

#[tokio::test]
async fn items_of_a_batch_settle_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let events: Vec<Event> = (0..10).map(event).collect();
    publish(&engine, &events).await;
    let sink = Arc::new(Recorder::default());
    // 3 is rejected for good; 4 fails once, then goes through.
    *sink.fail.lock().unwrap() = Some(Box::new(|n, call| match n {
        3 => Some(SinkError::permanent("row violates a check constraint")),
        4 if call == 1 => Some(SinkError::transient("connection reset")),
        _ => None,
    }));
    let batch = BatchConfig {
        max_events: 10,
        max_bytes: 1 << 20,
        max_wait: Duration::from_millis(20),
    };
    run(&engine, sink.clone(), &batch, |s| {
        s.batches.lock().unwrap().len() == 2
    })
    .await;
    let batches = sink.batches.lock().unwrap().clone();
    assert_eq!(batches[0], (0..10).collect::<Vec<_>>());
    assert_eq!(batches[1], [4], "only the transient failure is sent again");
    let q = &engine.subscription_handles()[0].queue;
    let letters = q.dead_letters(None, 10).unwrap();
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("check constraint"),
        "{}",
        letters[0].reason
    );
    assert_eq!(q.stats().delivered_total, 9);
}

#[tokio::test]
async fn a_stable_batch_is_retried_whole_and_a_leftover_plan_runs_first() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let q = engine.subscription_handles()[0].queue.clone();
    let events: Vec<Event> = (0..8).map(event).collect();
    publish(&engine, &events).await;
    // A plan left by a crash: events 2, 3 and 5 were one batch.
    let leased = q
        .lease(8, crate::now_ms(), &Default::default(), None)
        .unwrap();
    let keys: Vec<&[u8]> = [2, 3, 5]
        .iter()
        .map(|&i| leased[i].key.as_slice())
        .collect();
    q.plan(&keys).await.unwrap();

    let sink = Arc::new(Recorder {
        stable: true,
        ..Recorder::default()
    });
    // The first new batch fails once for one of its events: all of it is retried.
    *sink.fail.lock().unwrap() = Some(Box::new(|n, call| {
        (n == 0 && call == 2).then(|| SinkError::transient("upload timed out"))
    }));
    let batch = BatchConfig {
        max_events: 100,
        max_bytes: 1 << 20,
        max_wait: Duration::from_millis(20),
    };
    run(&engine, sink.clone(), &batch, |s| {
        s.batches.lock().unwrap().len() == 3
    })
    .await;
    let batches = sink.batches.lock().unwrap().clone();
    assert_eq!(batches[0], [2, 3, 5], "the leftover plan, exactly");
    assert_eq!(batches[1], [0, 1, 4, 6, 7]);
    assert_eq!(batches[2], [0, 1, 4, 6, 7], "retried whole, not regrouped");
    assert!(q.plans().unwrap().is_empty());
    assert_eq!(q.stats().depth, 0);
}

/// Backoff runs on the runtime's clock: on paused time, an event that failed once
/// is tried again once its backoff (ten minutes here) has passed by that clock,
/// and the test does not wait ten minutes for it.
#[tokio::test(start_paused = true)]
async fn a_retry_waits_its_backoff_on_the_runtime_s_clock() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    publish(&engine, &[event(1)]).await;
    let sink = Arc::new(Recorder::default());
    *sink.fail.lock().unwrap() = Some(Box::new(|_, call| {
        (call == 1).then(|| SinkError::transient("connection reset"))
    }));
    let sub = engine.subscription_handles()[0].clone();
    let backoff = Duration::from_secs(600);
    let policy = RetryPolicy {
        max_attempts: 3,
        max_age: Duration::from_secs(86_400),
        initial: backoff,
        max: backoff,
    };
    let d = Dispatcher::new(sub, sink.clone(), None, policy, 1);
    let stop = CancellationToken::new();
    let (started, real) = (tokio::time::Instant::now(), std::time::Instant::now());
    let task = tokio::spawn(d.run(stop.clone(), Duration::from_secs(1)));
    while sink.batches.lock().unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop.cancel();
    task.await.unwrap();
    // Full jitter: the wait is between half the backoff and all of it.
    let waited = started.elapsed();
    assert!(
        waited >= backoff / 2 && waited <= backoff + Duration::from_secs(5),
        "second attempt after {waited:?}"
    );
    assert!(
        real.elapsed() < Duration::from_secs(60),
        "{:?}",
        real.elapsed()
    );
    assert_eq!(
        engine.subscription_handles()[0]
            .queue
            .stats()
            .delivered_total,
        1
    );
}

fn delayed(n: u64, delay: &str) -> Event {
    let mut e = event(n);
    e.set_extension("delay", delay);
    e
}

/// An event with `delay` waits in the queue (counted in depth as scheduled)
/// and is delivered after events published later without one.
#[tokio::test(start_paused = true)]
async fn a_delayed_event_waits_for_its_time_behind_later_ready_ones() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    publish(&engine, &[delayed(1, "3s")]).await;
    publish(&engine, &[event(2)]).await;
    let stats = engine.subscription_handles()[0].queue.stats();
    assert_eq!((stats.depth, stats.retrying), (2, 1));
    // Its age (retries' `max_age`) counts from when it comes due.
    let queue = &engine.subscription_handles()[0].queue;
    let all = queue
        .lease(10, u64::MAX, &Default::default(), None)
        .unwrap();
    let since: Vec<u64> = all.iter().map(|l| l.record.enqueued_ms).collect();
    assert!(since[0] >= since[1] + 3_000, "{since:?}");
    let sink = Arc::new(Recorder::default());
    let batch = BatchConfig {
        max_events: 1,
        max_bytes: 1 << 20,
        max_wait: Duration::ZERO,
    };
    let start = crate::now_ms();
    run(&engine, sink.clone(), &batch, |s| delivered(s) == 2).await;
    assert_eq!(*sink.batches.lock().unwrap(), [vec![2], vec![1]]);
    assert!(crate::now_ms() >= start + 3_000, "not before its delay");
}

/// A pulling source has nobody to answer: an event with a bad or too distant
/// delay goes to its dead letters with the reason, the others are published.
#[tokio::test]
async fn a_source_keeps_events_with_refused_delays_in_its_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let cx = engine
        .source("pull", "default", CancellationToken::new())
        .unwrap();
    let events = [
        event(1),
        delayed(2, "soon"),
        delayed(3, "8d"),
        delayed(4, "1m"),
    ];
    assert_eq!(cx.publish(&events).await.unwrap(), 2);
    let letters = engine.source_dead_letters("pull", None, 10).unwrap();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].starts_with("delay: \"soon\" is not a duration"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("further away than server.max_delay"),
        "{reasons:?}"
    );
    // A source that answers its caller gets the refusal instead, nothing written.
    let refused = cx.publish_counted(&[event(5), delayed(6, "soon")]).await;
    match refused {
        Err(crate::engine::PublishError::Invalid { index, error }) => {
            assert_eq!((index, error.field.as_str()), (1, "delay"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(engine.subscription_handles()[0].queue.stats().depth, 2);
}

/// A redelivery after a crash makes its result again, with the same id: the
/// result subscription takes it once, and a bus drops the repeat as a replay.
#[tokio::test]
async fn a_result_made_twice_is_stored_once() {
    use crate::delivery::results::Publisher;
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(
        dir.path(),
        "{name: r, targets: [t], on_success: {target: out}}",
    );
    let out = engine
        .subscription_handles()
        .iter()
        .find(|s| s.name == "r.on-success")
        .unwrap()
        .clone();
    let result = event(7);
    for _ in 0..2 {
        engine
            .append_results(&out, std::slice::from_ref(&result), crate::now_ms())
            .unwrap();
    }
    assert_eq!(out.queue.stats().depth, 1);
    let main = engine
        .subscription_handles()
        .iter()
        .find(|s| s.name == "r.t")
        .unwrap()
        .clone();
    for _ in 0..2 {
        engine
            .publish_results("default", "r.t", &[event(8)])
            .await
            .unwrap();
    }
    assert_eq!(main.queue.stats().depth, 1, "the replay is dropped");
}
