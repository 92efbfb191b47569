//! Cost per event of the transform engines on a typical ~300-byte event.
//!
//! `cargo bench -p sluice-router --bench transform` (add `-- --quick` for a fast run).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use sluice_router::transform::{compile_path, JqProgram, Template, TemplateBody};

fn event() -> Value {
    json!({
        "specversion": "1.0",
        "id": "9f1c2d3e-4b5a-6789-abcd-ef0123456789",
        "source": "shop/orders",
        "type": "order.placed",
        "time": "2024-05-01T12:00:00Z",
        "data": {
            "id": "o-12345",
            "amount": 150,
            "currency": "EUR",
            "customer": {"id": "c-77", "name": "Ada Lovelace", "tier": "gold"},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}]
        }
    })
}

fn bench(c: &mut Criterion) {
    let input = event();
    let size = serde_json::to_vec(&input).map_or(0, |v| v.len());
    println!("event size: {size} bytes");

    let jq = JqProgram::compile("{id: .data.id, amount: .data.amount, vip: (.data.amount > 100)}")
        .expect("benchmark program compiles");
    c.bench_function("jq_reshape", |b| {
        b.iter(|| jq.run(black_box(&input)).expect("runs"))
    });

    let paths: BTreeMap<String, String> = [
        ("id", "$.data.id"),
        ("amount", "$.data.amount"),
        ("name", "$.data.customer.name"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let body = TemplateBody::Json(json!({
        "order": "<id>",
        "amount": "<amount>",
        "text": "Order <id> for <name>"
    }));
    let template = Template::compile(&paths, &body).expect("benchmark template compiles");
    c.bench_function("template_3_paths", |b| {
        b.iter(|| template.render(black_box(&input)).expect("renders"))
    });

    let path = compile_path("$.data.customer.name").expect("benchmark path compiles");
    c.bench_function("path_lookup", |b| {
        b.iter(|| path.get(black_box(&input)).cloned())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
