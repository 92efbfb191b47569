//! The durable store's costs per event: append, lease + settle, and a whole event
//! through (encode, append, lease, decode, settle).
//!
//! `cargo bench -p sluice-router --bench store` (add `-- --quick` for a fast run).

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde_json::value::RawValue;
use sluice_router::event::{Event, EventFields, RawData};
use sluice_router::store::{Record, Settlement, Store};

fn event() -> Event {
    let mut f = EventFields::new();
    f.attr("specversion", "1.0")
        .attr("id", "9f1c2d3e-4b5a-6789-abcd-ef0123456789")
        .attr("source", "/bench")
        .attr("type", "bench.event")
        .data(RawData::Json(
            serde_json::json!({"n": 1, "customer": "c-77", "amount": 150}),
        ));
    f.build().expect("valid event")
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(dir.path()).expect("store opens");
    let queue = store.queue("bench").expect("queue opens");
    let e = event();
    let raw = RawValue::from_string(serde_json::to_string(&e).expect("encodes")).expect("raw");
    let record = Record::new(raw, 0);
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));

    g.bench_function("encode event", |b| {
        b.iter(|| serde_json::to_string(black_box(&e)))
    });
    g.bench_function("decode event", |b| {
        let text = serde_json::to_string(&e).expect("encodes");
        b.iter(|| serde_json::from_str::<Event>(black_box(&text)))
    });
    g.bench_function("enqueue x1000", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                queue.enqueue(black_box(&record)).expect("enqueue");
            }
        })
    });
    g.bench_function("lease+settle x1000", |b| {
        b.iter_batched(
            || {
                for _ in 0..1000 {
                    queue.enqueue(&record).expect("enqueue");
                }
            },
            |()| {
                let none = HashSet::new();
                let mut left = 1000;
                while left > 0 {
                    let leased = queue.lease(64, 0, &none, None).expect("lease");
                    left -= leased.len();
                    let done = leased
                        .into_iter()
                        .map(|l| Settlement::Delivered { key: l.key })
                        .collect();
                    queue.settle(done).expect("settle");
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
