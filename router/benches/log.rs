//! The event log under the queue store, on its own: what one group-commit round
//! costs, how fast events read back, and how long opening a large log takes.
//! The workload is the one the store is designed for: 512-byte events, 1,024 per
//! round (64 publishers x 16 events), one `fdatasync` per round.
//!
//! `cargo bench -p sluice-router --bench log` (add `-- --quick` for a fast run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_router::bench_support::{Acks, Append, Log, Window};

const EVENT_BYTES: usize = 512;
const ROUND: usize = 1024;
const SEGMENT: u64 = 64 * 1024 * 1024;

fn round(log: &Log, data: &[u8]) {
    let appends: Vec<Append<'_>> = (0..ROUND)
        .map(|i| Append {
            key: [i as u8; 16],
            time_ms: 1,
            data,
        })
        .collect();
    log.append(&appends).expect("append");
    log.sync().expect("sync");
}

fn bench(c: &mut Criterion) {
    let data = vec![b'x'; EVENT_BYTES];
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), SEGMENT).expect("open");
    let mut group = c.benchmark_group("log");
    group.throughput(Throughput::Elements(ROUND as u64));
    group.bench_function("append_round_1024x512B", |b| {
        b.iter(|| round(&log, &data));
        // Keep the disk bounded however long criterion runs: drop what was read.
        log.delete_before(log.durable()).expect("delete");
    });
    // Read back 1,024 events at a time from a log of 100 rounds.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), SEGMENT).expect("open");
    for _ in 0..100 {
        round(&log, &data);
    }
    let end = log.durable();
    let mut from = 1;
    group.bench_function("read_1024x512B", |b| {
        b.iter(|| {
            if from >= end {
                from = 1;
            }
            let got = log.read(from, ROUND, usize::MAX).expect("read");
            from = got.last().map_or(1, |e| e.seq + 1);
            black_box(got)
        })
    });
    // De-duplication: one check (look up, keep) with 1,000,000 keys in a 10
    // minute window, at 100,000 new keys a second.
    let mut window = Window::new(600_000, 10_000_000);
    for k in 0..1_000_000u128 {
        window.check(k, k as u64 / 100);
    }
    let mut k = 1_000_000u128;
    group.throughput(Throughput::Elements(1));
    group.bench_function("dedupe_check_1m_keys", |b| {
        b.iter(|| {
            k += 1;
            black_box(window.check(k, 10_000 + (k as u64 - 1_000_000) / 100))
        })
    });
    // Settling: 1,024 events acknowledged in the order 16 concurrent deliveries
    // finish them (each block of 16 reversed).
    let order: Vec<u64> = (0..ROUND as u64)
        .map(|i| (i / 16) * 16 + 15 - i % 16)
        .collect();
    let mut acks = Acks::new(0);
    let mut base = 0u64;
    group.throughput(Throughput::Elements(ROUND as u64));
    group.bench_function("settle_1024_out_of_order", |b| {
        b.iter(|| {
            for &i in &order {
                acks.settle(base + i);
            }
            base += ROUND as u64;
            black_box(acks.floor())
        })
    });
    group.finish();

    // Opening a log of 1,000,000 events (about 550 MB): the cost of a restart
    // with a full backlog.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Log::open(dir.path(), SEGMENT).expect("open");
    let start = Instant::now();
    for _ in 0..(1_000_000 / ROUND) {
        round(&log, &data);
    }
    let wrote = start.elapsed();
    let bytes = log.disk_bytes();
    drop(log);
    println!(
        "wrote 1,000,000 events ({} MB) in {:.2} s: {:.0} events/s",
        bytes / 1_000_000,
        wrote.as_secs_f64(),
        1_000_000.0 / wrote.as_secs_f64()
    );
    let mut group = c.benchmark_group("log_1m");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("open_1m_events", |b| {
        b.iter(|| Log::open(dir.path(), SEGMENT).expect("open"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
