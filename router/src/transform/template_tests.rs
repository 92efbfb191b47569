//! Tests for [`super::Template`].

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn event() -> Value {
    json!({
        "id": "evt-1",
        "source": "shop/orders",
        "type": "order.placed",
        "data": {
            "order": {"id": 42, "total": 99.5, "paid": true},
            "customer": {"name": "Ada", "nickname": null},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
            "key.with.dots": "dotted"
        }
    })
}

fn paths(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn standard_paths() -> BTreeMap<String, String> {
    paths(&[
        ("id", "$.data.order.id"),
        ("total", "$.data.order.total"),
        ("paid", "$.data.order.paid"),
        ("customer", "$.data.customer"),
        ("name", "$.data.customer.name"),
        ("nick", "$.data.customer.nickname"),
        ("items", "$.data.items"),
        ("first-sku", "$.data.items[0].sku"),
        ("dotted", "$.data['key.with.dots']"),
        ("missing", "$.data.nope.nothing"),
        ("event.type", "$.type"),
    ])
}

fn render_json(template: Value) -> Value {
    let t = Template::compile(&standard_paths(), &TemplateBody::Json(template)).unwrap();
    t.render(&event()).unwrap()
}

fn render_text(template: &str) -> Value {
    let body = TemplateBody::Text(template.to_owned());
    let t = Template::compile(&standard_paths(), &body).unwrap();
    t.render(&event()).unwrap()
}

fn compile_err(paths: BTreeMap<String, String>, template: TemplateBody) -> String {
    Template::compile(&paths, &template)
        .map(|_| ())
        .unwrap_err()
}

#[test]
fn whole_string_placeholder_keeps_the_value_type() {
    let out = render_json(json!({
        "id": "<id>", "total": "<total>", "paid": "<paid>", "customer": "<customer>",
        "items": "<items>", "sku": "<first-sku>", "dotted": "<dotted>", "type": "<event.type>"
    }));
    assert_eq!(
        out,
        json!({
            "id": 42, "total": 99.5, "paid": true,
            "customer": {"name": "Ada", "nickname": null},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
            "sku": "A-1", "dotted": "dotted", "type": "order.placed"
        })
    );
}

#[test]
fn placeholders_inside_text_become_text() {
    let out = render_json(json!({
        "msg": "Order <id> for <name>: <total> EUR, paid=<paid>",
        "who": "customer=<customer>",
        "skus": "<first-sku>/<first-sku>",
        "spaced": " <id>"
    }));
    assert_eq!(
        out,
        json!({
            "msg": "Order 42 for Ada: 99.5 EUR, paid=true",
            "who": "customer={\"name\":\"Ada\",\"nickname\":null}",
            "skus": "A-1/A-1",
            "spaced": " 42"
        })
    );
}

#[test]
fn missing_and_null_values() {
    let out = render_json(json!({
        "missing": "<missing>", "in_text": "[<missing>]",
        "null": "<nick>", "null_in_text": "[<nick>]"
    }));
    assert_eq!(
        out,
        json!({"missing": null, "in_text": "[]", "null": null, "null_in_text": "[null]"})
    );
    assert_eq!(render_text("a<missing>b"), json!("ab"));
}

#[test]
fn nested_objects_and_arrays_and_literals() {
    let out = render_json(json!({
        "meta": {"kind": "order", "ids": ["<id>", "static", 7, "#<id>"]},
        "deep": [[{"x": "<name>"}]],
        "untouched": {"n": 1.0, "b": false, "nil": null, "s": "plain"}
    }));
    assert_eq!(
        out,
        json!({
            "meta": {"kind": "order", "ids": [42, "static", 7, "#42"]},
            "deep": [[{"x": "Ada"}]],
            "untouched": {"n": 1.0, "b": false, "nil": null, "s": "plain"}
        })
    );
    // A top-level placeholder or scalar is a valid template too.
    assert_eq!(render_json(json!("<items>"))[1]["sku"], json!("B-2"));
    assert_eq!(render_json(json!(5)), json!(5));
}

#[test]
fn whole_input_placeholder() {
    assert_eq!(render_json(json!({"event": "<$>"}))["event"], event());
    let out = render_text("<$>");
    let Value::String(s) = out else {
        panic!("text template gives a string")
    };
    assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), event());
}

#[test]
fn text_templates() {
    assert_eq!(
        render_text("Order <id> for <name> is paid: <paid>"),
        json!("Order 42 for Ada is paid: true")
    );
    assert_eq!(
        render_text("<id>"),
        json!("42"),
        "text output is always a string"
    );
    let Value::String(items) = render_text("<items>") else {
        panic!("text template gives a string")
    };
    assert_eq!(
        serde_json::from_str::<Value>(&items).unwrap(),
        event()["data"]["items"]
    );
    assert_eq!(render_text(""), json!(""));
    assert_eq!(render_text("no placeholders"), json!("no placeholders"));
}

#[test]
fn angle_brackets_that_are_not_names_stay_text() {
    assert_eq!(render_text("a < b > c"), json!("a < b > c"));
    assert_eq!(render_text("<a href=\"x\">"), json!("<a href=\"x\">"));
    assert_eq!(render_text("<><<id>>"), json!("<><42>"));
    assert_eq!(render_text("<id"), json!("<id"));
    assert_eq!(render_text("é<id>é"), json!("é42é"));
}

#[test]
fn undefined_placeholders_are_errors() {
    let e = compile_err(
        paths(&[("id", "$.id")]),
        TemplateBody::Text("x <foo> y".into()),
    );
    assert_eq!(e, "template uses <foo>, which is not in input_paths");
    let e = compile_err(
        paths(&[]),
        TemplateBody::Json(json!({"a": ["<one>"], "b": "<two> and <one>"})),
    );
    assert_eq!(
        e,
        "template uses <one>, which is not in input_paths; \
         template uses <two>, which is not in input_paths; \
         template uses <one>, which is not in input_paths"
    );
}

#[test]
fn placeholders_in_keys_are_errors() {
    let e = compile_err(
        paths(&[("id", "$.id")]),
        TemplateBody::Json(json!({"<id>": 1})),
    );
    assert!(
        e.contains("placeholders cannot be used in object keys: <id>"),
        "{e}"
    );
    // A key that merely contains angle brackets is fine.
    let t = Template::compile(&paths(&[]), &TemplateBody::Json(json!({"a<b c>": 1})));
    assert!(t.is_ok());
}

#[test]
fn bad_names_and_paths_are_errors() {
    let e = compile_err(paths(&[("a b", "$.x")]), TemplateBody::Text(String::new()));
    assert!(e.contains("invalid input_paths name `a b`"), "{e}");
    let e = compile_err(paths(&[("", "$.x")]), TemplateBody::Text(String::new()));
    assert!(e.contains("invalid input_paths name ``"), "{e}");
    let e = compile_err(paths(&[("$", "$.x")]), TemplateBody::Text(String::new()));
    assert!(e.contains("cannot define `$`"), "{e}");
    let e = compile_err(paths(&[("x", "data.x")]), TemplateBody::Text("<x>".into()));
    assert!(
        e.starts_with("input_paths.x: invalid JSON path `data.x`"),
        "{e}"
    );
    assert!(
        !e.contains("template uses <x>"),
        "a bad path is reported once: {e}"
    );
    let e = compile_err(paths(&[("x", "$.a[")]), TemplateBody::Text(String::new()));
    assert!(e.contains("unclosed `[`"), "{e}");
}

#[test]
fn unused_paths_are_allowed() {
    let t = Template::compile(&standard_paths(), &TemplateBody::Json(json!({"k": 1}))).unwrap();
    assert_eq!(t.render(&event()).unwrap(), json!({"k": 1}));
}

#[test]
fn render_works_on_any_input() {
    let t = Template::compile(
        &standard_paths(),
        &TemplateBody::Json(json!({"id": "<id>", "t": "x<first-sku>"})),
    )
    .unwrap();
    for input in [
        json!(null),
        json!(1),
        json!("s"),
        json!([1]),
        json!({"data": 3}),
    ] {
        assert_eq!(t.render(&input).unwrap(), json!({"id": null, "t": "x"}));
    }
}

proptest! {
    #[test]
    fn compile_and_render_never_panic(
        names in proptest::collection::vec("[a-c.$_ -]{0,3}", 0..4),
        path in "[$.\\[\\]'a-c0-9-]{0,12}",
        text in "[<>a-c$. x-]{0,24}",
    ) {
        let paths: BTreeMap<String, String> =
            names.iter().map(|n| (n.clone(), path.clone())).collect();
        for body in [TemplateBody::Text(text.clone()), TemplateBody::Json(json!({"k": [text.clone()], text.clone(): 1}))] {
            if let Ok(t) = Template::compile(&paths, &body) {
                let _ = t.render(&event());
                let _ = t.render(&json!(null));
            }
        }
    }

    #[test]
    fn compile_never_panics_on_any_text(text in "\\PC{0,40}", path in "\\PC{0,20}") {
        let paths = BTreeMap::from([("a".to_string(), path)]);
        if let Ok(t) = Template::compile(&paths, &TemplateBody::Text(text)) {
            let _ = t.render(&event());
        }
    }
}
