//! The store against an in-memory model: random enqueue / lease / settle / redrive /
//! reopen sequences must leave both with the same events in the same places.

use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Enqueue,
    /// Several events in one chunk.
    EnqueueMany(usize),
    /// One event due this many ms from now (delayed delivery; 0 is ready).
    EnqueueDue(u64),
    Deliver(usize),
    Retry(usize, u64),
    Dead(usize),
    Advance(u64),
    Redrive,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Enqueue),
        2 => (2usize..6).prop_map(Op::EnqueueMany),
        2 => (0u64..50).prop_map(Op::EnqueueDue),
        2 => (1usize..4).prop_map(Op::Deliver),
        2 => (1usize..4, 0u64..50).prop_map(|(n, d)| Op::Retry(n, d)),
        1 => (1usize..3).prop_map(Op::Dead),
        1 => (0u64..60).prop_map(Op::Advance),
        1 => Just(Op::Redrive),
        1 => Just(Op::Reopen),
    ]
}

/// Where each event (named by a counter stored in its id) is, in lease order.
#[derive(Default)]
struct Model {
    next_id: u64,
    next_seq: u64,
    ready: BTreeMap<u64, u64>,
    delayed: BTreeMap<(u64, u64), u64>,
    /// Dead letters in the order they died.
    dead: BTreeMap<u64, u64>,
    next_death: u64,
    delivered: u64,
    retried: u64,
    dead_lettered: u64,
}

impl Model {
    /// Keys in lease order at time `now`: due retries, then ready.
    fn lease(&self, n: usize, now: u64) -> Vec<(Option<u64>, u64, u64)> {
        let due = self
            .delayed
            .iter()
            .filter(|((d, _), _)| *d <= now)
            .map(|((d, s), id)| (Some(*d), *s, *id));
        let ready = self.ready.iter().map(|(s, id)| (None, *s, *id));
        due.chain(ready).take(n).collect()
    }

    fn remove(&mut self, (due, seq, _): (Option<u64>, u64, u64)) {
        match due {
            Some(d) => self.delayed.remove(&(d, seq)),
            None => self.ready.remove(&seq),
        };
    }
}

fn event_json(id: u64) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/t","type":"t"}}"#
    ))
    .unwrap()
}

fn id_of(record: &Record) -> u64 {
    let v: serde_json::Value = serde_json::from_str(record.event.get()).unwrap();
    v["id"].as_str().unwrap().parse().unwrap()
}

use super::reopen;

/// The one queue of these tests: subscription `s` on a bus of its own.
fn queue_of(store: &Store) -> Queue {
    let bus = store.open_bus("b", &["s"]).unwrap();
    store.queue(&bus, "s").unwrap()
}

fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap();
    let mut queue = queue_of(&store);
    let mut model = Model::default();
    let mut now = 1_000u64;
    for op in ops {
        match op {
            Op::Enqueue => {
                queue
                    .enqueue(&Record::new(event_json(model.next_id), now))
                    .unwrap();
                model.ready.insert(model.next_seq, model.next_id);
                model.next_id += 1;
                model.next_seq += 1;
            }
            Op::EnqueueMany(n) => {
                let records: Vec<Record> = (0..n as u64)
                    .map(|i| Record::new(event_json(model.next_id + i), now))
                    .collect();
                let refs: Vec<(&Record, Option<u64>)> = records.iter().map(|r| (r, None)).collect();
                queue.append_all(&refs, now).unwrap();
                for _ in 0..n {
                    model.ready.insert(model.next_seq, model.next_id);
                    model.next_id += 1;
                    model.next_seq += 1;
                }
            }
            Op::EnqueueDue(delay) => {
                let record = Record::new(event_json(model.next_id), now);
                let due = Some(now + delay);
                queue.append_all(&[(&record, due)], now).unwrap();
                if delay == 0 {
                    model.ready.insert(model.next_seq, model.next_id);
                } else {
                    model
                        .delayed
                        .insert((now + delay, model.next_seq), model.next_id);
                }
                model.next_id += 1;
                model.next_seq += 1;
            }
            Op::Deliver(n) | Op::Retry(n, _) | Op::Dead(n) => {
                let leased = queue.lease(n, now, &HashSet::new(), None).unwrap();
                let expected = model.lease(n, now);
                let got: Vec<u64> = leased.iter().map(|l| id_of(&l.record)).collect();
                let want: Vec<u64> = expected.iter().map(|e| e.2).collect();
                assert_eq!(got, want, "lease order");
                let mut outcomes = Vec::new();
                for (l, e) in leased.into_iter().zip(expected) {
                    model.remove(e);
                    outcomes.push(match op {
                        Op::Deliver(_) => {
                            model.delivered += 1;
                            Settlement::Delivered { key: l.key }
                        }
                        Op::Retry(_, delay) => {
                            model.retried += 1;
                            model.delayed.insert((now + delay, e.1), e.2);
                            let mut record = l.record;
                            record.attempts.push(now);
                            Settlement::Retry {
                                key: l.key,
                                record,
                                due_ms: now + delay,
                            }
                        }
                        _ => {
                            model.dead_lettered += 1;
                            model.dead.insert(model.next_death, e.2);
                            model.next_death += 1;
                            let letter = DeadLetter {
                                seq: 0,
                                dead_lettered_ms: now,
                                reason: "test".into(),
                                last_status: Some(400),
                                body_excerpt: None,
                                record: l.record,
                            };
                            Settlement::DeadLetter { key: l.key, letter }
                        }
                    });
                }
                queue.settle(outcomes).unwrap();
            }
            Op::Advance(ms) => now += ms,
            Op::Redrive => {
                let moved = queue.redrive(None).unwrap();
                assert_eq!(moved as usize, model.dead.len());
                for id in std::mem::take(&mut model.dead).into_values() {
                    model.ready.insert(model.next_seq, id);
                    model.next_seq += 1;
                }
            }
            Op::Reopen => {
                drop(queue);
                drop(store);
                store = reopen(dir.path());
                queue = queue_of(&store);
            }
        }
        // What an op appended is leased once durable: the engine commits every
        // publish before a dispatcher is told of it.
        store.flush().unwrap();
        let stats = queue.stats();
        let want = QueueStats {
            depth: (model.ready.len() + model.delayed.len()) as u64,
            retrying: model.delayed.len() as u64,
            dead_letters: model.dead.len() as u64,
            delivered_total: model.delivered,
            retried_total: model.retried,
            dead_lettered_total: model.dead_lettered,
        };
        assert_eq!(stats, want);
        let dead: Vec<u64> = queue
            .dead_letters(None, usize::MAX)
            .unwrap()
            .iter()
            .map(|d| id_of(&d.record))
            .collect();
        assert_eq!(dead, model.dead.values().copied().collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}

#[tokio::test]
async fn group_commit_answers_concurrent_callers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = queue_of(&store);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (store, queue) = (store.clone(), queue.clone());
        tasks.push(tokio::spawn(async move {
            queue.enqueue(&Record::new(event_json(i), 0)).unwrap();
            store.commit().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(queue.stats().depth, 200);
}

/// The dispatcher leases on from its cursor, part of a chunk at a time, and
/// settles out of order; a reopen counts only what is left.
#[test]
fn leases_continue_mid_chunk_and_partly_settled_chunks_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = queue_of(&store);
    let records: Vec<Record> = (0..5).map(|i| Record::new(event_json(i), 0)).collect();
    let refs: Vec<(&Record, Option<u64>)> = records.iter().map(|r| (r, None)).collect();
    queue.append_all(&refs, 0).unwrap();
    store.flush().unwrap();
    let mut in_flight = HashSet::new();
    let first = queue.lease(2, 0, &in_flight, None).unwrap();
    in_flight.extend(first.iter().map(|l| l.key.clone()));
    let cursor = first.last().map(|l| l.key.clone());
    let rest = queue.lease(10, 0, &in_flight, cursor.as_deref()).unwrap();
    let ids: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|l| id_of(&l.record))
        .collect();
    assert_eq!(ids, [0, 1, 2, 3, 4]);
    // Settle 3 and 0 only: the chunk stays with the other three.
    queue
        .settle(vec![
            Settlement::Delivered {
                key: rest[1].key.clone(),
            },
            Settlement::Delivered {
                key: first[0].key.clone(),
            },
        ])
        .unwrap();
    assert_eq!(queue.stats().depth, 3);
    drop(queue);
    drop(store);
    let store = reopen(dir.path());
    let queue = queue_of(&store);
    assert_eq!(queue.stats().depth, 3);
    let left = queue.lease(10, 0, &HashSet::new(), None).unwrap();
    let ids: Vec<u64> = left.iter().map(|l| id_of(&l.record)).collect();
    assert_eq!(ids, [1, 2, 4]);
    let all: Vec<Settlement> = left
        .into_iter()
        .map(|l| Settlement::Delivered { key: l.key })
        .collect();
    queue.settle(all).unwrap();
    assert_eq!(queue.stats().depth, 0);
    drop(queue);
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(queue_of(&store).stats().depth, 0);
}

/// Stored bytes this version cannot read (a record written by a later
/// version, say) go to the dead letters with the reason; the events around them
/// are still delivered.
#[test]
fn unreadable_records_become_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let queue = queue_of(&store);
    queue.enqueue(&Record::new(event_json(1), 0)).unwrap();
    queue
        .bus()
        .append_raw(&[queue.id()], b"{not a record")
        .unwrap();
    queue.enqueue(&Record::new(event_json(2), 0)).unwrap();
    drop(queue);
    drop(store);
    let store = reopen(dir.path());
    let queue = queue_of(&store);
    assert_eq!(queue.stats().depth, 3);
    let leased = queue.lease(10, 0, &HashSet::new(), None).unwrap();
    let ids: Vec<u64> = leased.iter().map(|l| id_of(&l.record)).collect();
    assert_eq!(ids, [1, 2]);
    let reasons: Vec<String> = queue
        .dead_letters(None, 10)
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("unreadable record: key must be a string"),
        "{reasons:?}"
    );
    let all = leased
        .into_iter()
        .map(|l| Settlement::Delivered { key: l.key })
        .collect();
    queue.settle(all).unwrap();
    let stats = queue.stats();
    assert_eq!((stats.depth, stats.dead_letters), (0, 1));
}

/// A data directory whose queues an earlier sluice kept in sled is refused
/// with what to do, not opened with those events unseen; empty old queues are
/// dropped.
#[test]
fn queues_of_the_earlier_format_are_refused_and_empty_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(super::SEGMENT_SIZE)
            .open()
            .unwrap();
        db.open_tree("sub/orders.fn")
            .unwrap()
            .insert([b'r', 0, 0, 0, 0, 0, 0, 0, 1], &b"chunk"[..])
            .unwrap();
        db.open_tree("sub/empty.fn")
            .unwrap()
            .insert(*b"cdelivered", &[0u8; 8][..])
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path()).err().expect("refused");
    assert!(err.message.contains("orders.fn"), "{}", err.message);
    assert!(!err.message.contains("empty.fn"), "{}", err.message);
    assert!(
        err.message.contains("start the previous sluice"),
        "{}",
        err.message
    );
    {
        let db = sled::Config::new()
            .path(dir.path())
            .segment_size(super::SEGMENT_SIZE)
            .open()
            .unwrap();
        db.drop_tree("sub/orders.fn").unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(queue_of(&store).stats().depth, 0);
}
