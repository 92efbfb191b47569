//! Whole-language tests: the payload extension, parse errors a user sees, the
//! nesting bound, and property tests that no input panics. The conformance suite
//! runs from `tests/cesql_tck.rs`.

use proptest::prelude::*;
use serde_json::{json, Value as Json};

use super::*;
use crate::event::EventFields;

fn event(value: Json) -> Event {
    let Json::Object(map) = value else {
        panic!("object")
    };
    EventFields::from_structured(map).unwrap().build().unwrap()
}

fn sample() -> Event {
    event(json!({
        "specversion": "1.0", "id": "e-1", "source": "/shop", "type": "order.created",
        "subject": "orders/17", "time": "2024-05-06T07:08:09Z", "region": "eu", "n": 3,
        "flag": true,
        "data": {"order": {"id": "o-17", "total": 250, "lines": [{"sku": "A", "qty": 2}],
                 "price": 12.5, "note": null, "paid": true, "content-type": "x"}}
    }))
}

fn eval_on(expression: &str, event: &Event) -> (Value, Option<ErrorKind>) {
    let parsed = Expression::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
    let (value, error) = parsed.evaluate(event);
    (value, error.map(|e| e.kind))
}

fn ok(value: Value) -> (Value, Option<ErrorKind>) {
    (value, None)
}

fn missing() -> (Value, Option<ErrorKind>) {
    (Value::Boolean(false), Some(ErrorKind::MissingAttribute))
}

#[test]
fn expressions_can_be_shared_between_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Expression>();
    shareable::<EvalError>();
    shareable::<ParseError>();
}

#[test]
fn data_fields_nested_and_indexed() {
    let e = sample();
    let cases = [
        ("data.order.id", ok(Value::String("o-17".into()))),
        ("data.order.total > 100", ok(Value::Boolean(true))),
        ("data.order.total + 1", ok(Value::Integer(251))),
        ("data.order.lines.0.sku = 'A'", ok(Value::Boolean(true))),
        ("data.order.lines.0.qty * 2", ok(Value::Integer(4))),
        (
            "DATA.order.paid AND type LIKE 'order.%'",
            ok(Value::Boolean(true)),
        ),
        (
            r#"data.order."content-type""#,
            ok(Value::String("x".into())),
        ),
        ("data.order.price = '12.5'", ok(Value::Boolean(true))),
        ("EXISTS data.order", ok(Value::Boolean(true))),
        ("EXISTS data.order.lines.0", ok(Value::Boolean(true))),
        ("EXISTS data.order.note", ok(Value::Boolean(false))),
        ("EXISTS data.order.nope", ok(Value::Boolean(false))),
        ("NOT EXISTS data.order.lines.1", ok(Value::Boolean(true))),
        ("LENGTH(data.order.id)", ok(Value::Integer(4))),
    ];
    for (expression, expected) in cases {
        assert_eq!(eval_on(expression, &e), expected, "{expression}");
    }
}

#[test]
fn missing_data_fields_are_missing_attributes() {
    let e = sample();
    for expression in [
        "data.order.nope",
        "data.order.note",
        "data.order.id.deeper",
        "data.order.lines.5.sku",
        "data.Order.id",
        "data",
    ] {
        assert_eq!(eval_on(expression, &e), missing(), "{expression}");
    }
    assert_eq!(
        eval_on("data.order.nope = 'x'", &e),
        (Value::Boolean(false), Some(ErrorKind::MissingAttribute))
    );
    assert_eq!(
        eval_on("data.order.total * data.nope", &e),
        (Value::Integer(0), Some(ErrorKind::MissingAttribute))
    );
    // A float does not cast to an integer.
    assert_eq!(
        eval_on("data.order.price > 10", &e),
        (Value::Boolean(false), Some(ErrorKind::Cast))
    );
    let (_, error) = Expression::parse("data.order.nope").unwrap().evaluate(&e);
    assert_eq!(
        error.unwrap().to_string(),
        "missing attribute: the payload has no field data.order.nope"
    );
}

#[test]
fn data_fields_of_non_json_payloads_are_missing() {
    let base = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let mut text = base.clone();
    text["datacontenttype"] = json!("text/plain");
    text["data"] = json!("{\"a\": 1}");
    let mut json_text = base.clone();
    json_text["datacontenttype"] = json!("application/json; charset=utf-8");
    json_text["data_base64"] = json!("eyJhIjogMX0="); // {"a": 1}
    let mut scalar = base.clone();
    scalar["data"] = json!(5);

    assert_eq!(eval_on("data.a", &event(text.clone())), missing());
    assert_eq!(
        eval_on("EXISTS data.a", &event(text)),
        ok(Value::Boolean(false))
    );
    assert_eq!(eval_on("data.a", &event(base)), missing());
    assert_eq!(eval_on("data.a", &event(scalar)), missing());
    assert_eq!(eval_on("data.a", &event(json_text)), ok(Value::Integer(1)));
}

#[test]
fn matches_only_true_without_errors() {
    let e = sample();
    let yes = ["region = 'eu'", "n = 3 AND flag", "data.order.total >= 250"];
    let no = [
        "region = 'us'",
        "n",
        "'true'",
        "nope = 1 OR TRUE",
        "TRUE AND NOT 10",
        "INT('x') = 0",
    ];
    for text in yes {
        assert!(Expression::parse(text).unwrap().matches(&e), "{text}");
    }
    for text in no {
        assert!(!Expression::parse(text).unwrap().matches(&e), "{text}");
    }
    // `TRUE OR nope` short-circuits: no error, and it matches.
    assert!(eval_on("TRUE OR nope", &e) == ok(Value::Boolean(true)));
}

#[test]
fn attributes_read_as_their_types() {
    let e = sample();
    assert_eq!(
        eval_on("time", &e),
        ok(Value::String("2024-05-06T07:08:09Z".into()))
    );
    assert_eq!(eval_on("SPECVERSION", &e), ok(Value::String("1.0".into())));
    assert_eq!(eval_on("n + flag", &e), ok(Value::Integer(4)));
    assert_eq!(
        eval_on("EXISTS subject AND NOT EXISTS dataschema", &e),
        ok(Value::Boolean(true))
    );
}

#[test]
fn precedence_and_overflow() {
    let e = sample();
    assert_eq!(
        eval_on("FALSE AND FALSE OR TRUE", &e),
        ok(Value::Boolean(true))
    );
    assert_eq!(
        eval_on("TRUE OR FALSE AND FALSE", &e),
        ok(Value::Boolean(false))
    );
    assert_eq!(eval_on("NOT TRUE = FALSE", &e), ok(Value::Boolean(true)));
    assert_eq!(eval_on("1 - 2 - 3", &e), ok(Value::Integer(-4)));
    assert_eq!(eval_on("2 + 3 * 4 % 5", &e), ok(Value::Integer(4)));
    assert_eq!(eval_on("-2147483648", &e), ok(Value::Integer(i32::MIN)));
    assert_eq!(eval_on("+7 - -7", &e), ok(Value::Integer(14)));
    assert_eq!(
        eval_on("2147483647 + 1", &e),
        (Value::Integer(i32::MAX), Some(ErrorKind::Math))
    );
    assert_eq!(
        eval_on("-(-2147483648)", &e),
        (Value::Integer(i32::MAX), Some(ErrorKind::Math))
    );
    assert_eq!(
        eval_on("'a' IN ('b', 'a', nope)", &e),
        ok(Value::Boolean(true))
    );
    assert_eq!(eval_on("'a' NOT IN ('b')", &e), ok(Value::Boolean(true)));
    assert_eq!(
        eval_on("IS_INT('-5') AND NOT IS_BOOL('x')", &e),
        ok(Value::Boolean(true))
    );
    assert_eq!(
        eval_on("CONCAT_WS('-', 1, TRUE, 'x')", &e),
        ok(Value::String("1-true-x".into()))
    );
    assert_eq!(
        eval_on("NOPE(1, 2)", &e),
        (Value::Boolean(false), Some(ErrorKind::MissingFunction))
    );
}

#[test]
fn parse_errors_say_what_and_where() {
    let cases = [
        ("ABC(", 5, "expected a value"),
        ("(1 + 2", 7, "to close the '(' at column 1"),
        ("x LIKE 123", 8, "LIKE needs a string literal"),
        ("1 +", 4, "found the end of the expression"),
        ("a b", 3, "unexpected 'b'"),
        (
            "a NOT b",
            3,
            "NOT after a value must be followed by LIKE or IN",
        ),
        ("2147483648", 1, "does not fit in 32 bits"),
        ("x IN ()", 7, "expected a value"),
        ("my_ext = 1", 1, "not an attribute name"),
        ("EXISTS 1", 1, "EXISTS needs an attribute name"),
        ("'open", 1, "no closing '"),
        ("a.b = 1", 2, "'.' may only follow `data`"),
        ("1 AND", 6, "found the end"),
    ];
    for (text, column, words) in cases {
        let err = Expression::parse(text).unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains(words), "{text}: {shown}");
        assert_eq!(err.position, column, "{text}: {shown}");
        assert!(
            shown.starts_with(&format!("at column {column}: ")),
            "{shown}"
        );
    }
}

#[test]
fn nesting_is_bounded() {
    let e = sample();
    let deep = |open: &str, inner: &str, close: &str, n: usize| {
        format!("{}{inner}{}", open.repeat(n), close.repeat(n))
    };
    // Within the bound: fine.
    let ok_parens = deep("(", "TRUE", ")", 60);
    assert!(Expression::parse(&ok_parens).unwrap().matches(&e));
    // Beyond it, in every way of nesting: a parse error, never a stack overflow.
    for text in [
        deep("(", "1", ")", 100_000),
        deep("NOT ", "TRUE", "", 100_000),
        deep("-", "(1)", "", 100_000),
        deep("ABS(", "1", ")", 100_000),
        deep("", "1", " IN (1)", 100_000),
        deep("", "'a'", " LIKE 'a'", 100_000),
        deep("1 IN (", "1", ")", 100_000),
    ] {
        let err = Expression::parse(&text).unwrap_err();
        assert!(
            err.message.contains("nests more than 64"),
            "{}",
            err.message
        );
    }
    // Long flat chains are not nesting.
    let sum = vec!["1"; 50_000].join(" + ");
    assert_eq!(eval_on(&sum, &e), ok(Value::Integer(50_000)));
    let ors = vec!["region = 'x'"; 10_000].join(" OR ") + " OR region = 'eu'";
    assert!(Expression::parse(&ors).unwrap().matches(&e));
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "(",
        ")",
        ",",
        "NOT",
        "-",
        "+",
        "*",
        "/",
        "%",
        "=",
        "!=",
        "<>",
        "<",
        "<=",
        ">",
        ">=",
        "AND",
        "OR",
        "XOR",
        "LIKE",
        "IN",
        "EXISTS",
        "TRUE",
        "false",
        "0",
        "1",
        "-1",
        "2147483647",
        "2147483648",
        "'a%'",
        "\"_b\"",
        "'\\'",
        "''",
        "id",
        "subject",
        "region",
        "n",
        "flag",
        "nope",
        "data",
        "data.order.total",
        "data.order.lines.0.sku",
        "data.order",
        "data.x",
        "ABS",
        "LENGTH",
        "CONCAT",
        "CONCAT_WS",
        "LOWER",
        "UPPER",
        "TRIM",
        "LEFT",
        "RIGHT",
        "SUBSTRING",
        "INT",
        "BOOL",
        "STRING",
        "IS_BOOL",
        "IS_INT",
        "NOPE",
        ".",
        "é",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(text in any::<String>()) {
        if let Ok(expression) = Expression::parse(&text) {
            let _ = expression.evaluate(&sample());
        }
    }

    #[test]
    fn random_token_sequences_never_panic(tokens in prop::collection::vec(token(), 0..30)) {
        let text = tokens.join(" ");
        let e = sample();
        if let Ok(expression) = Expression::parse(&text) {
            let (value, error) = expression.evaluate(&e);
            let matched = expression.matches(&e);
            prop_assert_eq!(matched, value == Value::Boolean(true) && error.is_none(), "{}", text);
        }
        // Glued together, the tokens make other tokens.
        if let Ok(expression) = Expression::parse(&tokens.concat()) {
            let _ = expression.evaluate(&e);
        }
    }
}
