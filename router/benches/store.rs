//! The durable store's costs per event, through the engine's front door as every
//! source and target sees it: encode and decode, publish (match, append, group
//! commit), and a whole event through (publish, lease, deliver, settle).
//!
//! `cargo bench -p sluice-router --bench store` (add `-- --quick` for a fast run).

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use schemars::JsonSchema;
use serde::Serialize;
use sluice_router::config::{
    load, BatchConfig, SourceEntry, SourceSpec, TargetEntry, TargetSpec, Validated, Validator,
};
use sluice_router::engine::Engine;
use sluice_router::event::{Event, EventFields, RawData};
use sluice_router::sink::{Sink, SinkError};
use tokio_util::sync::CancellationToken;

fn event(n: u64) -> Event {
    let mut f = EventFields::new();
    f.attr("specversion", "1.0")
        .attr("id", format!("9f1c2d3e-4b5a-6789-abcd-{n:012}"))
        .attr("source", "/bench")
        .attr("type", "bench.event")
        .data(RawData::Json(
            serde_json::json!({"n": n, "customer": "c-77", "amount": 150}),
        ));
    f.build().expect("valid event")
}

/// The one target type of this benchmark: a counter, in batches of 64.
#[derive(Debug, Clone, Serialize, JsonSchema, serde::Deserialize)]
struct Counter {
    name: String,
}

impl TargetSpec for Counter {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "counter"
    }
    fn concurrency(&self) -> usize {
        4
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some(BatchConfig {
            max_events: 64,
            max_wait: std::time::Duration::ZERO,
            ..BatchConfig::default()
        })
    }
}

impl TargetEntry for Counter {
    const TYPES: &'static [&'static str] = &["counter"];
    fn parse(_: &str, value: serde_yaml::Value, path: &str, v: &mut Validator<'_>) -> Option<Self> {
        v.section(value, path)
    }
    fn spec(&self) -> &dyn TargetSpec {
        self
    }
}

/// No sources: events come in through the engine directly.
#[derive(Debug, Clone, Serialize, JsonSchema)]
enum NoSource {}

impl SourceEntry for NoSource {
    const TYPES: &'static [&'static str] = &[];
    fn parse(_: &str, _: serde_yaml::Value, _: &str, _: &mut Validator<'_>) -> Option<Self> {
        None
    }
    fn spec(&self) -> &dyn SourceSpec {
        match *self {}
    }
}

struct Count(AtomicUsize);

#[async_trait]
impl Sink for Count {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        self.0.fetch_add(events.len(), Ordering::Relaxed);
        events.iter().map(|_| Ok(())).collect()
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "server: {{ data_dir: {}, dedupe_window: 0s }}\ntargets: [{{type: counter, name: count}}]\nrules: [{{name: all, targets: [count]}}]\n",
        dir.path().display()
    );
    let validated: Validated<NoSource, Counter> = load(&text).expect("valid config");
    let engine = Engine::open(&validated).expect("engine opens");
    let ingest = engine.ingest();
    let events: Vec<Event> = (0..1000).map(event).collect();
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Elements(1000));

    let e = event(1);
    g.bench_function("encode event", |b| {
        b.iter(|| serde_json::to_string(black_box(&e)))
    });
    g.bench_function("decode event", |b| {
        let text = serde_json::to_string(&e).expect("encodes");
        b.iter(|| serde_json::from_str::<Event>(black_box(&text)))
    });
    g.bench_function("publish x1000", |b| {
        b.iter(|| rt.block_on(ingest.publish("default", black_box(&events))))
    });
    // Drain what the publishes above queued, then measure whole events through.
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let stop = CancellationToken::new();
    let sink: Arc<dyn Sink> = count.clone();
    let delivery = rt.block_on(async {
        engine
            .start_delivery(|_| Ok::<_, ()>(sink.clone()), &stop)
            .expect("delivery starts")
    });
    let wait_drained = || {
        while engine.subscriptions()[0].stats.depth > 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    wait_drained();
    g.bench_function("publish+deliver x1000", |b| {
        b.iter(|| {
            rt.block_on(ingest.publish("default", black_box(&events)))
                .expect("published");
            wait_drained();
        })
    });
    g.finish();
    stop.cancel();
    rt.block_on(delivery.stopped());
}

criterion_group!(benches, bench);
criterion_main!(benches);
