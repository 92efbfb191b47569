//! Rule matching throughput on pre-parsed events for 10 to 100,000 rules, compile
//! time, and memory per rule.
//!
//! `cargo bench -p sluice-router --bench matcher` (add `-- --quick` for a fast run).
//! Rule mix: 70 % exact (on `type`, `source` or `data.customer`), 20 % prefix (on
//! `subject`), 10 % numeric range (on `data.amount`); events are drawn so that about
//! 1 % of them match some rule.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use serde_json::json;
use sluice_router::config::{FilterConfig, RuleConfig};
use sluice_router::event::{Event, EventFields, RawData};
use sluice_router::matching::rules::{RuleSet, Scratch};

/// Resident memory of this process in bytes (Linux), to report memory per rule.
fn rss() -> isize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<isize>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn rules(n: usize) -> Vec<RuleConfig> {
    (0..n)
        .map(|i| {
            let pattern = match i % 10 {
                0..=6 => match i % 3 {
                    0 => json!({"type": [format!("com.example.t{i}")]}),
                    1 => json!({"source": [format!("/src/{i}")]}),
                    _ => json!({"data": {"customer": [format!("c{i}")]}}),
                },
                7 | 8 => json!({"subject": [{"prefix": format!("p{i}/")}]}),
                _ => json!({"data": {"amount": [{"numeric": [">=", i * 100, "<", i * 100 + 1]}]}}),
            };
            RuleConfig {
                name: format!("r{i}"),
                bus: "default".into(),
                filter: Some(FilterConfig {
                    pattern: Some(pattern),
                    ..FilterConfig::default()
                }),
                targets: vec!["t".into()],
                transform: None,
                retry: Default::default(),
                dead_letter: None,
                on_success: None,
                on_failure: None,
                allow_cycles: false,
            }
        })
        .collect()
}

/// Events whose values are drawn from a space 100x the rule count, so about 1 % match.
fn events(n: usize) -> Vec<Event> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let space = (n * 100).max(1000);
    (0..1000)
        .map(|k| {
            let mut f = EventFields::new();
            f.attr("specversion", "1.0")
                .attr("id", format!("e{k}"))
                .attr("source", format!("/src/{}", rng.gen_range(0..space)))
                .attr("type", format!("com.example.t{}", rng.gen_range(0..space)))
                .attr("subject", format!("p{}/x/{}", rng.gen_range(0..space), k))
                .data(RawData::Json(json!({
                    "customer": format!("c{}", rng.gen_range(0..space)),
                    "amount": rng.gen_range(0..space * 100),
                    "currency": "EUR",
                    "items": [{"sku": "A-1", "qty": 2}]
                })));
            f.build().expect("valid event")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in [10usize, 1_000, 10_000, 100_000] {
        let configs = rules(n);
        let before = rss();
        let started = Instant::now();
        let set = RuleSet::compile(&configs).expect("rules compile");
        let compile = started.elapsed();
        let bytes = rss() - before;
        let evs = events(n);
        let mut scratch = Scratch::default();
        let mut out = Vec::new();
        let matched = evs
            .iter()
            .filter(|e| {
                out.clear();
                set.matching("default", e, &mut scratch, &mut out);
                !out.is_empty()
            })
            .count();
        println!(
            "rules={n}: compile {:.1} ms, {} bytes/rule (RSS growth), {:.1} % of events match",
            compile.as_secs_f64() * 1e3,
            bytes / n as isize,
            matched as f64 / evs.len() as f64 * 100.0
        );
        group.throughput(Throughput::Elements(evs.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &evs, |b, evs| {
            b.iter(|| {
                for e in evs {
                    out.clear();
                    set.matching("default", black_box(e), &mut scratch, &mut out);
                }
                black_box(out.len())
            })
        });
    }
    group.finish();

    let configs = rules(100_000);
    let mut compile = c.benchmark_group("compile");
    compile.sample_size(10);
    compile.bench_function("100000", |b| {
        b.iter(|| RuleSet::compile(black_box(&configs)).map(|s| s.rules.len()))
    });
    compile.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
