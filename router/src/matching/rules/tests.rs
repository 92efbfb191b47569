//! The index must agree with checking every rule one by one.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::config::FilterConfig;
use crate::event::EventFields;

fn rule(i: usize, pattern: Value) -> RuleConfig {
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
}

fn event(ty: &str, source: &str, data: Value) -> Event {
    let mut f = EventFields::new();
    f.attr("specversion", "1.0")
        .attr("id", "1")
        .attr("source", source)
        .attr("type", ty)
        .data(crate::event::RawData::Json(data));
    f.build().unwrap()
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..6).prop_map(|n| json!(n)),
        (0i64..6).prop_map(|n| json!(n as f64 + 0.5)),
        "[abAB]{0,3}".prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
        Just(Value::Null),
    ]
}

fn matcher() -> impl Strategy<Value = Value> {
    prop_oneof![
        value(),
        "[abAB]{0,2}".prop_map(|s| json!({"prefix": s})),
        "[ab]{0,2}".prop_map(|s| json!({"suffix": s})),
        "[ab]{0,2}".prop_map(|s| json!({"prefix": {"equals-ignore-case": s}})),
        "[abAB]{1,2}".prop_map(|s| json!({"equals-ignore-case": s})),
        "[ab]{0,2}\\*[ab]{0,1}".prop_map(|s| json!({"wildcard": s})),
        (0i64..6).prop_map(|n| json!({"numeric": [">=", n]})),
        (0i64..6).prop_map(|n| json!({"numeric": ["<", n]})),
        (0i64..6).prop_map(|n| json!({"numeric": ["=", n]})),
        (0i64..4, 0i64..4).prop_map(|(a, w)| json!({"numeric": [">", a, "<=", a + w]})),
        value().prop_map(|v| json!({"anything-but": v})),
        any::<bool>().prop_map(|b| json!({"exists": b})),
    ]
}

fn field() -> impl Strategy<Value = Vec<&'static str>> {
    prop_oneof![
        Just(vec!["type"]),
        Just(vec!["source"]),
        Just(vec!["data", "a"]),
        Just(vec!["data", "b"]),
        Just(vec!["data", "items", "x"]),
    ]
}

fn conj() -> impl Strategy<Value = Value> {
    let clause = (field(), proptest::collection::vec(matcher(), 1..3));
    proptest::collection::vec(clause, 1..3).prop_map(|clauses| {
        let mut p = json!({});
        for (path, list) in clauses {
            let mut node = &mut p;
            for seg in &path[..path.len() - 1] {
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(seg.to_string())
                    .or_insert_with(|| json!({}));
            }
            node[path[path.len() - 1]] = Value::Array(list);
        }
        p
    })
}

fn pattern() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => conj(),
        1 => (conj(), conj()).prop_map(|(a, b)| json!({"$or": [a, b]})),
    ]
}

fn data() -> impl Strategy<Value = Value> {
    (value(), proptest::collection::vec(value(), 0..3), proptest::option::of(value())).prop_map(|(a, xs, b)| {
        let mut d = json!({"a": a, "items": xs.into_iter().map(|x| json!({"x": x})).collect::<Vec<_>>()});
        if let Some(b) = b {
            d["b"] = b;
        }
        d
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn index_agrees_with_a_scan(
        patterns in proptest::collection::vec(pattern(), 1..12),
        events in proptest::collection::vec(("[abAB]{1,2}", "[ab]{1,2}", data()), 1..8),
    ) {
        let configs: Vec<RuleConfig> = patterns.into_iter().enumerate().map(|(i, p)| rule(i, p)).collect();
        let Ok(set) = RuleSet::compile(&configs) else { return Ok(()) };
        let mut scratch = Scratch::default();
        for (ty, source, data) in events {
            let e = event(&ty, &source, data);
            let mut got = Vec::new();
            set.matching("default", &e, &mut scratch, &mut got);
            let want: Vec<u32> = set.rules.iter().enumerate()
                .filter(|(_, r)| r.filter.as_ref().unwrap().matches(&e, &mut Vec::new()))
                .map(|(i, _)| i as u32)
                .collect();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn rules_without_patterns_and_other_buses() {
    let mut configs = vec![rule(0, json!({"type": ["a"]}))];
    configs.push(RuleConfig {
        filter: None,
        ..rule(1, json!({}))
    });
    configs.push(RuleConfig {
        bus: "other".into(),
        ..rule(2, json!({"type": ["a"]}))
    });
    let set = RuleSet::compile(&configs).unwrap();
    let mut out = Vec::new();
    set.matching(
        "default",
        &event("a", "/s", json!({})),
        &mut Scratch::default(),
        &mut out,
    );
    assert_eq!(out, [0, 1]);
    out.clear();
    set.matching(
        "other",
        &event("b", "/s", json!({})),
        &mut Scratch::default(),
        &mut out,
    );
    assert!(out.is_empty());
    out.clear();
    set.matching(
        "nobus",
        &event("a", "/s", json!({})),
        &mut Scratch::default(),
        &mut out,
    );
    assert!(out.is_empty());
}
