use super::*;
use crate::event::EventFields;
use serde_json::json;

fn event(data: Value) -> Event {
    let mut fields = EventFields::new();
    fields
        .attr("specversion", "1.0")
        .attr("id", "1")
        .attr("source", "/orders")
        .attr("type", "order.created")
        .attr("region", "eu-west-1")
        .data(crate::event::RawData::Json(data));
    fields.build().unwrap()
}

fn check(pattern: Value, data: Value) -> bool {
    let p = Pattern::compile(&pattern).unwrap();
    p.matches(&event(data), &mut Vec::new())
}

#[test]
fn matches_each_operator() {
    let d = json!({"amount": 150, "tags": ["a", "vip"], "ok": true, "none": null,
                       "items": [{"sku": "X-1"}, {"sku": "Y-2"}], "name": "alice"});
    assert!(check(json!({"type": ["order.created"]}), d.clone()));
    assert!(!check(json!({"type": ["order.deleted"]}), d.clone()));
    assert!(check(json!({"data": {"amount": [150.0]}}), d.clone()));
    assert!(!check(json!({"data": {"amount": ["150"]}}), d.clone()));
    assert!(check(
        json!({"data": {"amount": [{"numeric": [">", 100, "<=", 150]}]}}),
        d.clone()
    ));
    assert!(!check(
        json!({"data": {"amount": [{"numeric": [">", 150]}]}}),
        d.clone()
    ));
    assert!(check(json!({"data": {"tags": ["vip"]}}), d.clone()));
    assert!(check(
        json!({"data": {"items": {"sku": [{"prefix": "Y-"}]}}}),
        d.clone()
    ));
    assert!(check(
        json!({"data": {"name": [{"suffix": "ice"}]}}),
        d.clone()
    ));
    assert!(check(
        json!({"data": {"ok": [true]}, "region": [{"prefix": "eu-"}]}),
        d.clone()
    ));
    assert!(check(json!({"data": {"none": [null]}}), d.clone()));
    assert!(check(
        json!({"data": {"none": [{"exists": true}]}}),
        d.clone()
    ));
    assert!(check(
        json!({"data": {"missing": [{"exists": false}]}}),
        d.clone()
    ));
    assert!(!check(
        json!({"data": {"missing": [{"anything-but": "x"}]}}),
        d.clone()
    ));
    assert!(check(
        json!({"data": {"name": [{"anything-but": ["bob", "carol"]}]}}),
        d.clone()
    ));
    assert!(!check(
        json!({"data": {"name": [{"anything-but": {"prefix": "al"}}]}}),
        d.clone()
    ));
    assert!(check(json!({"source": ["/billing", "/orders"]}), d.clone()));
    assert!(!check(
        json!({"type": ["order.created"], "source": ["/billing"]}),
        d
    ));
}

#[test]
fn reports_every_bad_clause_with_its_path() {
    let errors = Pattern::compile(&json!({
        "type": "order.created",
        "data": {"amount": [{"numeric": [">", "x"]}], "n": [{"between": 1}]}
    }))
    .unwrap_err();
    let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["data.amount[0]", "data.n[0]", "type"]);
    assert!(errors[1].message.contains("unknown matcher \"between\""));
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop_oneof![
            Just("prefix"),
            Just("suffix"),
            Just("numeric"),
            Just("exists"),
            Just("cidr"),
            Just("wildcard"),
            Just("anything-but"),
            Just("equals-ignore-case"),
            Just("$or"),
            Just(">"),
            Just("<="),
            Just("="),
            Just("*"),
            Just("a\\\\*"),
            Just("10.0.0.0/8"),
            Just("::/0"),
        ]
        .prop_map(Value::from),
        ".{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("prefix".to_owned()),
                    Just("numeric".to_owned()),
                    Just("$or".to_owned()),
                    Just("anything-but".to_owned()),
                    Just("data".to_owned()),
                    Just("type".to_owned()),
                    "[a-z$]{1,4}"
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    #[test]
    fn compiling_any_json_never_panics(pattern in arb_json(), data in arb_json()) {
        if let Ok(p) = Pattern::compile(&pattern) {
            let e = event(data);
            let _ = p.matches(&e, &mut Vec::new());
            let _ = p.explain(&e);
        }
    }
}
