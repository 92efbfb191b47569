use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use serde_json::value::RawValue;

use super::BusLog;
use crate::store::record::{DeadLetter, Record};
use crate::store::Settlement;

const SUBS: [&str; 2] = ["a.fn", "b.fn"];

fn record(n: u64, at: u64) -> Record {
    Record::new(RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap(), at)
}

fn n_of(r: &Record) -> u64 {
    let v: serde_json::Value = serde_json::from_str(r.event.get()).unwrap();
    v["n"].as_u64().unwrap()
}

fn open(dir: &std::path::Path, segment: u64) -> BusLog {
    BusLog::open(dir, &SUBS, segment).unwrap()
}

fn letter(r: Record) -> DeadLetter {
    DeadLetter {
        seq: 0,
        dead_lettered_ms: 1,
        reason: "gave up".into(),
        last_status: Some(500),
        body_excerpt: None,
        record: r,
    }
}

/// Everything `sub` holds, leased at the end of time: event numbers.
fn everything(bus: &BusLog, sub: u16) -> Vec<u64> {
    let mut got: Vec<u64> = bus
        .lease(sub, usize::MAX, u64::MAX, &HashSet::new(), None)
        .unwrap()
        .iter()
        .map(|l| n_of(&l.record))
        .collect();
    got.sort_unstable();
    got
}

#[test]
fn events_are_written_once_and_each_subscription_settles_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), 1 << 20);
    let (a, b) = (bus.id("a.fn").unwrap(), bus.id("b.fn").unwrap());
    let rs: Vec<Record> = (0..4).map(|n| record(n, 1)).collect();
    // 0 and 1 for both, 2 for a only, 3 for b only.
    let events = [
        (&rs[0], [0; 16], None, &[a, b][..]),
        (&rs[1], [0; 16], None, &[a, b][..]),
        (&rs[2], [0; 16], None, &[a][..]),
        (&rs[3], [0; 16], None, &[b][..]),
    ];
    bus.publish(&events, 1).unwrap();
    assert!(
        bus.lease(a, 10, 1, &HashSet::new(), None)
            .unwrap()
            .is_empty(),
        "not durable yet"
    );
    bus.sync().unwrap();
    assert_eq!(everything(&bus, a), [0, 1, 2]);
    assert_eq!(everything(&bus, b), [0, 1, 3]);
    let leased = bus.lease(a, 2, 1, &HashSet::new(), None).unwrap();
    let outcomes = leased
        .into_iter()
        .map(|l| Settlement::Delivered { key: l.key })
        .collect();
    bus.settle(a, outcomes).unwrap();
    bus.sync().unwrap();
    assert_eq!(everything(&bus, a), [2]);
    assert_eq!(everything(&bus, b), [0, 1, 3]);
    assert_eq!(bus.stats(a).delivered_total, 2);
    assert_eq!(bus.fresh_len(), 0, "nothing held once written");
    drop(bus);
    let bus = open(dir.path(), 1 << 20);
    assert_eq!(everything(&bus, a), [2]);
    assert_eq!(everything(&bus, b), [0, 1, 3]);
    assert_eq!(bus.stats(a).depth, 1);
    assert_eq!(bus.stats(b).depth, 3);
    assert_eq!(bus.stats(a).delivered_total, 2);
}

#[test]
fn what_was_not_synced_is_gone_after_a_crash_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), 1 << 20);
    let a = bus.id("a.fn").unwrap();
    let (r0, r1) = (record(0, 1), record(1, 1));
    bus.publish(&[(&r0, [0; 16], None, &[a][..])], 1).unwrap();
    bus.sync().unwrap();
    let leased = bus.lease(a, 1, 1, &HashSet::new(), None).unwrap();
    // Both unsynced: an event and a settlement.
    bus.publish(&[(&r1, [0; 16], None, &[a][..])], 1).unwrap();
    bus.settle(
        a,
        vec![Settlement::Delivered {
            key: leased[0].key.clone(),
        }],
    )
    .unwrap();
    drop(bus);
    let bus = open(dir.path(), 1 << 20);
    assert_eq!(
        everything(&bus, a),
        [0],
        "the unsynced event is gone, the settlement too"
    );
}

#[test]
fn retries_dead_letters_redrive_plans_and_pause_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), 1 << 20);
    let a = bus.id("a.fn").unwrap();
    let rs: Vec<Record> = (0..4).map(|n| record(n, 1)).collect();
    let only_a = [a];
    let events: Vec<_> = rs.iter().map(|r| (r, [0; 16], None, &only_a[..])).collect();
    bus.publish(&events, 1).unwrap();
    bus.sync().unwrap();
    let leased = bus.lease(a, 4, 1, &HashSet::new(), None).unwrap();
    let mut retried = leased[0].record.clone();
    retried.attempts.push(1);
    let keys: Vec<&[u8]> = vec![&leased[2].key, &leased[3].key];
    let plan = bus.plan(a, &keys).unwrap();
    bus.settle(
        a,
        vec![
            Settlement::Retry {
                key: leased[0].key.clone(),
                record: retried,
                due_ms: 500,
            },
            Settlement::DeadLetter {
                key: leased[1].key.clone(),
                letter: letter(leased[1].record.clone()),
            },
        ],
    )
    .unwrap();
    bus.set_paused(a, true).unwrap();
    bus.sync().unwrap();
    drop(bus);

    let bus = open(dir.path(), 1 << 20);
    assert!(bus.paused(a));
    let st = bus.stats(a);
    assert_eq!((st.depth, st.retrying, st.dead_letters), (3, 1, 1));
    assert_eq!(bus.next_due_ms(a, &HashSet::new()), Some(500));
    assert!(bus
        .lease(a, 10, 499, &HashSet::new(), None)
        .unwrap()
        .iter()
        .all(|l| l.is_ready()));
    let due = bus.lease(a, 1, 500, &HashSet::new(), None).unwrap();
    assert_eq!((n_of(&due[0].record), due[0].record.attempts.len()), (0, 1));
    let plans = bus.plans(a).unwrap();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].0, plan);
    let planned: Vec<u64> = plans[0].1.iter().map(|l| n_of(&l.record)).collect();
    assert_eq!(planned, [2, 3]);
    let dead = bus.dead_letters(a, None, 10).unwrap();
    assert_eq!((dead.len(), n_of(&dead[0].record)), (1, 1));
    assert_eq!(bus.redrive(a, None).unwrap(), 1);
    let mut outcomes: Vec<Settlement> = plans[0]
        .1
        .iter()
        .map(|l| Settlement::Delivered { key: l.key.clone() })
        .collect();
    outcomes.push(Settlement::PlanDone { key: plan });
    bus.settle(a, outcomes).unwrap();
    bus.set_paused(a, false).unwrap();
    bus.sync().unwrap();
    drop(bus);

    let bus = open(dir.path(), 1 << 20);
    assert!(!bus.paused(a));
    assert!(bus.plans(a).unwrap().is_empty());
    assert_eq!(bus.stats(a).dead_letters, 0);
    assert_eq!(
        everything(&bus, a),
        [0, 1],
        "the retry and the redriven letter"
    );
    let redriven = bus
        .lease(a, 10, 1, &HashSet::new(), None)
        .unwrap()
        .into_iter()
        .find(|l| n_of(&l.record) == 1)
        .unwrap();
    assert!(redriven.record.attempts.is_empty());
}

#[test]
fn a_drained_log_shrinks_to_its_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), 64 << 10);
    let (a, b) = (bus.id("a.fn").unwrap(), bus.id("b.fn").unwrap());
    let rs: Vec<Record> = (0..5_000).map(|n| record(n, 1)).collect();
    let both = [a, b];
    for part in rs.chunks(500) {
        let events: Vec<_> = part.iter().map(|r| (r, [0; 16], None, &both[..])).collect();
        bus.publish(&events, 1).unwrap();
        bus.sync().unwrap();
    }
    let (segments, _) = bus.disk();
    assert!(segments > 3, "{segments} segments");
    for sub in [a, b] {
        let mut after = None;
        loop {
            let leased = bus
                .lease(sub, 700, 1, &HashSet::new(), after.as_deref())
                .unwrap();
            let Some(last) = leased.last() else { break };
            after = Some(last.key.clone());
            let outcomes = leased
                .into_iter()
                .map(|l| Settlement::Delivered { key: l.key })
                .collect();
            bus.settle(sub, outcomes).unwrap();
            bus.sync().unwrap();
        }
        // One subscription drained: the other still needs every segment (and
        // the journal of a's settlements added some).
        if sub == a {
            assert!(bus.disk().0 >= segments);
        }
    }
    bus.sync().unwrap();
    assert_eq!(bus.disk().0, 1, "only the segment being written is left");
    drop(bus);
    let bus = open(dir.path(), 64 << 10);
    assert_eq!(bus.stats(a).depth + bus.stats(b).depth, 0);
    assert_eq!(bus.stats(b).delivered_total, 5_000);
}

#[test]
fn a_subscription_added_later_takes_only_what_comes_after() {
    let dir = tempfile::tempdir().unwrap();
    let r0 = record(0, 1);
    {
        let bus = BusLog::open(dir.path(), &["a.fn"], 1 << 20).unwrap();
        let a = bus.id("a.fn").unwrap();
        bus.publish(&[(&r0, [0; 16], None, &[a][..])], 1).unwrap();
        bus.sync().unwrap();
    }
    let bus = open(dir.path(), 1 << 20);
    let (a, b) = (bus.id("a.fn").unwrap(), bus.id("b.fn").unwrap());
    assert_eq!(everything(&bus, a), [0]);
    assert!(everything(&bus, b).is_empty());
    assert_ne!(a, b);
}

/// Random publishes, leases, outcomes, redrives and reopens against a model of
/// what each subscription holds.
#[test]
fn random_operations_match_a_model_across_reopens() {
    for seed in 0..8u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let mut bus = open(dir.path(), 16 << 10);
        let ids = [bus.id("a.fn").unwrap(), bus.id("b.fn").unwrap()];
        // Per subscription: event number -> Some(due ms) scheduled, None ready.
        let mut model: [BTreeMap<u64, Option<u64>>; 2] = Default::default();
        let mut dead: [BTreeMap<u64, ()>; 2] = Default::default();
        let mut next = 0u64;
        let mut now = 1_000u64;
        for step in 0..200 {
            match rng.gen_range(0..10) {
                0..=3 => {
                    let n = rng.gen_range(1..20);
                    let rs: Vec<Record> = (next..next + n).map(|i| record(i, now)).collect();
                    let mut events = Vec::new();
                    for r in &rs {
                        let which: &[u16] = match rng.gen_range(0..3) {
                            0 => &ids[..1],
                            1 => &ids[1..],
                            _ => &ids[..],
                        };
                        let due = rng.gen_bool(0.1).then(|| now + rng.gen_range(1..5_000));
                        for (i, id) in ids.iter().enumerate() {
                            if which.contains(id) {
                                model[i].insert(n_of(r), due);
                            }
                        }
                        events.push((r, [0u8; 16], due, which));
                    }
                    bus.publish(&events, now).unwrap();
                    next += n;
                }
                4..=7 => {
                    let i = rng.gen_range(0..2);
                    let leased = bus
                        .lease(ids[i], rng.gen_range(1..30), now, &HashSet::new(), None)
                        .unwrap();
                    let mut outcomes = Vec::new();
                    for l in leased {
                        let n = n_of(&l.record);
                        match rng.gen_range(0..4) {
                            0 | 1 => {
                                model[i].remove(&n);
                                outcomes.push(Settlement::Delivered { key: l.key });
                            }
                            2 => {
                                let due = now + rng.gen_range(0..3_000);
                                model[i].insert(n, Some(due));
                                outcomes.push(Settlement::Retry {
                                    key: l.key,
                                    record: l.record,
                                    due_ms: due,
                                });
                            }
                            _ => {
                                model[i].remove(&n);
                                dead[i].insert(n, ());
                                outcomes.push(Settlement::DeadLetter {
                                    key: l.key,
                                    letter: letter(l.record),
                                });
                            }
                        }
                    }
                    bus.settle(ids[i], outcomes).unwrap();
                }
                8 => {
                    let i = rng.gen_range(0..2);
                    let moved = bus.redrive(ids[i], None).unwrap();
                    assert_eq!(moved as usize, dead[i].len(), "seed {seed} step {step}");
                    for (n, ()) in std::mem::take(&mut dead[i]) {
                        model[i].insert(n, None);
                    }
                }
                _ => {
                    bus.sync().unwrap();
                    drop(bus);
                    bus = open(dir.path(), 16 << 10);
                }
            }
            now += rng.gen_range(0..500);
            bus.sync().unwrap();
            assert_eq!(bus.fresh_len(), 0, "seed {seed} step {step}");
            for i in 0..2 {
                let st = bus.stats(ids[i]);
                let scheduled = model[i].values().filter(|d| d.is_some()).count() as u64;
                assert_eq!(
                    st.depth,
                    model[i].len() as u64,
                    "seed {seed} step {step} sub {i}"
                );
                assert_eq!(st.retrying, scheduled, "seed {seed} step {step} sub {i}");
                assert_eq!(
                    st.dead_letters,
                    dead[i].len() as u64,
                    "seed {seed} step {step}"
                );
            }
        }
        for i in 0..2 {
            let want: Vec<u64> = model[i].keys().copied().collect();
            assert_eq!(everything(&bus, ids[i]), want, "seed {seed} sub {i}");
        }
    }
}

/// A crash while the last round was being written: the segment ends anywhere
/// inside that round. Opened again, the bus is exactly as after the round
/// before it (the settlement is lost whole, never half-applied).
#[test]
fn a_torn_last_round_is_cut_at_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (a, before) = {
        let bus = open(dir.path(), 1 << 20);
        let a = bus.id("a.fn").unwrap();
        let rs: Vec<Record> = (0..3).map(|n| record(n, 1)).collect();
        let only_a = [a];
        let events: Vec<_> = rs.iter().map(|r| (r, [0; 16], None, &only_a[..])).collect();
        bus.publish(&events, 1).unwrap();
        bus.sync().unwrap();
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "seg"))
            .unwrap();
        let before = std::fs::metadata(&seg).unwrap().len();
        let leased = bus.lease(a, 2, 1, &HashSet::new(), None).unwrap();
        bus.settle(
            a,
            vec![
                Settlement::Delivered {
                    key: leased[0].key.clone(),
                },
                Settlement::DeadLetter {
                    key: leased[1].key.clone(),
                    letter: letter(leased[1].record.clone()),
                },
            ],
        )
        .unwrap();
        bus.sync().unwrap();
        (a, (seg, before))
    };
    let (seg, before) = before;
    let whole = std::fs::read(&seg).unwrap();
    for cut in before..whole.len() as u64 {
        let copy = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
        }
        let torn = copy.path().join(seg.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&torn)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let bus = open(copy.path(), 1 << 20);
        let st = bus.stats(a);
        assert_eq!(
            (st.depth, st.dead_letters, st.delivered_total),
            (3, 0, 0),
            "cut at {cut} of {}",
            whole.len()
        );
    }
    let bus = open(dir.path(), 1 << 20);
    let st = bus.stats(a);
    assert_eq!((st.depth, st.dead_letters, st.delivered_total), (1, 1, 1));
}

/// A dead letter, a retry due far ahead and a pause do not keep the segments
/// behind them: they are copied forward, and the drained log shrinks anyway.
#[test]
fn long_lived_records_are_copied_forward_and_release_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    let bus = open(dir.path(), 32 << 10);
    let a = bus.id("a.fn").unwrap();
    let only_a = [a];
    let far = crate::now_ms() + 3_600_000;
    let rs: Vec<Record> = (0..3_000).map(|n| record(n, 1)).collect();
    for (i, part) in rs.chunks(300).enumerate() {
        let events: Vec<_> = part
            .iter()
            .map(|r| (r, [0; 16], None, &only_a[..]))
            .collect();
        bus.publish(&events, 1).unwrap();
        bus.sync().unwrap();
        let leased = bus.lease(a, 300, 1, &HashSet::new(), None).unwrap();
        let mut outcomes = Vec::new();
        for (j, l) in leased.into_iter().enumerate() {
            outcomes.push(match (i, j) {
                (0, 0) => Settlement::DeadLetter {
                    letter: letter(l.record.clone()),
                    key: l.key,
                },
                (0, 1) => Settlement::Retry {
                    record: l.record.clone(),
                    key: l.key,
                    due_ms: far,
                },
                _ => Settlement::Delivered { key: l.key },
            });
        }
        bus.settle(a, outcomes).unwrap();
        if i == 0 {
            bus.set_paused(a, true).unwrap();
        }
        bus.sync().unwrap();
    }
    for _ in 0..3 {
        bus.sync().unwrap();
    }
    assert!(bus.disk().0 <= 2, "{} segments", bus.disk().0);
    let before = bus.stats(a);
    drop(bus);
    let bus = open(dir.path(), 32 << 10);
    assert_eq!(bus.stats(a), before);
    assert_eq!(
        (before.dead_letters, before.retrying, before.depth),
        (1, 1, 1)
    );
    assert_eq!(before.delivered_total, 2_998);
    assert!(bus.paused(a));
    assert_eq!(bus.next_due_ms(a, &HashSet::new()), Some(far));
    let dead = bus.dead_letters(a, None, 10).unwrap();
    assert_eq!(n_of(&dead[0].record), 0);
    let due = bus.lease(a, 10, far, &HashSet::new(), None).unwrap();
    assert_eq!(due.iter().map(|l| n_of(&l.record)).collect::<Vec<_>>(), [1]);
}
