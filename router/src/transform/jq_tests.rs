//! Tests for [`super::JqProgram`].

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn event() -> Value {
    json!({
        "id": "evt-1",
        "source": "shop/orders",
        "type": "order.placed",
        "data": {
            "id": "o-42",
            "amount": 150,
            "price": 1.5,
            "customer": {"name": "Ada", "tier": null},
            "items": [
                {"sku": "A-1", "qty": 2, "price": 10},
                {"sku": "B-2", "qty": 1, "price": 130}
            ],
            "tags": ["new", "web"]
        }
    })
}

fn run(program: &str) -> Result<Value, String> {
    JqProgram::compile(program)?.run(&event())
}

fn ok(program: &str) -> Value {
    run(program).unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn compile_err(program: &str) -> String {
    JqProgram::compile(program).map(|_| ()).unwrap_err()
}

#[test]
fn program_is_send_sync_and_reusable() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<JqProgram>();

    let p = JqProgram::compile(".data.amount * 2").unwrap();
    let shared = std::sync::Arc::new(p);
    let handles: Vec<_> = (0..4)
        .map(|i| {
            let p = shared.clone();
            std::thread::spawn(move || p.run(&json!({"data": {"amount": i}})).unwrap())
        })
        .collect();
    let outs: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outs, vec![json!(0), json!(2), json!(4), json!(6)]);
}

#[test]
fn identity_round_trips_every_json_type() {
    let input = json!({
        "s": "héllo \u{1F600}", "i": -7, "big": u64::MAX, "f": 0.25,
        "b": true, "n": null, "a": [1, [2, {}]], "o": {"k": "v"}
    });
    let p = JqProgram::compile(".").unwrap();
    let out = p.run(&input).unwrap();
    assert_eq!(out["big"], json!(u64::MAX));
    assert_eq!(out, input);
}

#[test]
fn object_construction() {
    assert_eq!(
        ok("{id: .data.id, amount: .data.amount, vip: (.data.amount > 100)}"),
        json!({"id": "o-42", "amount": 150, "vip": true})
    );
    assert_eq!(
        ok("{type, source, customer: .data.customer.name}"),
        json!({"type": "order.placed", "source": "shop/orders", "customer": "Ada"})
    );
    assert_eq!(ok("{(.type): 1}"), json!({"order.placed": 1}));
}

#[test]
fn select_map_and_stdlib() {
    assert_eq!(
        ok("[.data.items[] | select(.price > 100) | .sku]"),
        json!(["B-2"])
    );
    assert_eq!(ok(".data.items | map(.qty * .price) | add"), json!(150));
    assert_eq!(
        ok(".data.customer | to_entries | map(.key)"),
        json!(["name", "tier"])
    );
    assert_eq!(ok(".data.tags | join(\",\")"), json!("new,web"));
    assert_eq!(ok(".data.tags | length"), json!(2));
    assert_eq!(ok(".type | test(\"^order\\\\.\")"), json!(true));
    assert_eq!(ok(".data.id | ascii_upcase"), json!("O-42"));
    assert_eq!(
        ok("[.data.items[].sku] | sort | reverse"),
        json!(["B-2", "A-1"])
    );
    assert_eq!(ok(".data | has(\"amount\")"), json!(true));
    assert_eq!(ok("{a: 1} | tojson"), json!("{\"a\":1}"));
}

#[test]
fn string_interpolation() {
    assert_eq!(
        ok(r#""Order \(.data.id) for \(.data.customer.name): \(.data.amount) EUR""#),
        json!("Order o-42 for Ada: 150 EUR")
    );
    assert_eq!(
        ok(r#""tags=\(.data.tags)""#),
        json!("tags=[\"new\",\"web\"]")
    );
}

#[test]
fn arithmetic_and_numbers() {
    assert_eq!(ok(".data.amount + 1"), json!(151));
    assert_eq!(ok(".data.amount / 4"), json!(37.5));
    assert_eq!(
        ok(".data.price * 2"),
        json!(3),
        "integral floats come out as integers"
    );
    assert_eq!(ok(".data.amount % 7"), json!(3));
    assert_eq!(ok("1.25"), json!(1.25));
    assert_eq!(ok("100000000000000000000"), json!(1e20));
    assert_eq!(ok("nan"), Value::Null);
    assert_eq!(ok("infinite"), json!(f64::MAX));
    assert_eq!(ok("-infinite"), json!(f64::MIN));
}

#[test]
fn alternative_operator() {
    assert_eq!(ok(".data.customer.tier // \"standard\""), json!("standard"));
    assert_eq!(ok(".data.missing.deeper // 0"), json!(0));
    assert_eq!(ok(".data.customer.name // \"x\""), json!("Ada"));
}

#[test]
fn syntax_errors_say_where() {
    let e = compile_err(".data | {a: }");
    assert!(
        e.starts_with("syntax error at column 13: expected term"),
        "{e}"
    );
    let e = compile_err("(.a");
    assert!(e.contains("unclosed `(` at column 1"), "{e}");
    let e = compile_err("\"abc");
    assert!(e.contains("unclosed `\"` at column 1"), "{e}");
    let e = compile_err(".a |\n  .b ]");
    assert!(e.contains("line 2, column 6"), "{e}");
    let e = compile_err("if . then 1");
    assert!(
        e.contains("expected else or end, found the end of the program"),
        "{e}"
    );
    assert!(compile_err("   ").contains("empty jq program"));
}

#[test]
fn undefined_names_are_compile_errors() {
    assert_eq!(compile_err("foo"), "undefined filter `foo/0` at column 1");
    assert_eq!(
        compile_err(".a | bar(1; 2)"),
        "undefined filter `bar/2` at column 6"
    );
    assert!(compile_err("$x").contains("undefined variable `$x`"));
    assert!(compile_err("$ENV.HOME").contains("undefined variable"));
    assert!(compile_err("input").contains("undefined filter `input/0`"));
    let e = compile_err("import \"foo\" as foo; .");
    assert!(e.contains("cannot load module \"foo\""), "{e}");
}

#[test]
fn runtime_errors() {
    let e = run(".data.amount + \"a\"").unwrap_err();
    assert!(e.contains("cannot calculate 150 + \"a\""), "{e}");
    let e = run(".data.tags | keys | .[0] | .x").unwrap_err();
    assert!(e.contains("cannot index 0 with \"x\""), "{e}");
    assert_eq!(
        run("error(\"no customer\")").unwrap_err(),
        "jq error: no customer"
    );
    assert_eq!(
        run("error({code: 7})").unwrap_err(),
        "jq error: {\"code\":7}"
    );
    let e = run("halt").unwrap_err();
    assert_eq!(e, "jq program called halt (exit code 0)");
    let e = run("{(1): 2}").unwrap_err();
    assert!(e.contains("object key 1"), "{e}");
}

#[test]
fn long_runtime_errors_are_truncated() {
    let e = run("[range(500)] | . + 1").unwrap_err();
    assert!(e.chars().count() <= MAX_ERROR_LEN + 1, "{e}");
    assert!(e.ends_with('…'));
}

#[test]
fn zero_and_many_outputs_are_errors() {
    assert_eq!(run("empty").unwrap_err(), "jq program produced no output");
    assert_eq!(
        run(".data.items[] | select(.price > 1000)").unwrap_err(),
        "jq program produced no output"
    );
    assert_eq!(
        run(".data.items[]").unwrap_err(),
        "jq program produced 2 outputs; wrap it in [...] to collect them"
    );
    assert_eq!(
        run("repeat(1)").unwrap_err(),
        "jq program produced more than 100 outputs; wrap it in [...] to collect them"
    );
    assert!(run("1, error(\"late\")").unwrap_err().contains("late"));
    assert_eq!(ok("[.data.items[].sku]"), json!(["A-1", "B-2"]));
}

#[test]
fn deep_output_is_an_error() {
    let e = run("reduce range(200) as $i (0; [.])").unwrap_err();
    assert!(e.contains("nested deeper than 128"), "{e}");
    assert!(run("reduce range(100) as $i (0; [.])").is_ok());
}

proptest! {
    #[test]
    fn compile_never_panics(s in "\\PC{0,40}") {
        let _ = JqProgram::compile(&s);
    }

    #[test]
    fn jq_like_programs_never_panic(s in "[.\\[\\]{}()|,:;\"\\\\$@a-z0-9 +*/%<>=?-]{0,30}") {
        if let Ok(p) = JqProgram::compile(&s) {
            // Skip programs that might loop: they are trusted config, not fuzz input.
            if !s.contains("repeat") && !s.contains("until") && !s.contains("while")
                && !s.contains("range") && !s.contains("limit") && !s.contains("recurse")
                && !s.contains("..")
            {
                let _ = p.run(&event());
            }
        }
    }
}

#[test]
fn tricky_programs_do_not_panic() {
    let programs = [
        "@foo \"x\"",
        "\"\\(\"",
        ".[",
        "{",
        "}",
        "$__loc__",
        "label $x | break $y",
        "def f: ; f",
        ".a as [$x] | $x",
        "getpath([\"a\", 0, \"b\"])",
        "ltrimstr(1)",
        "@base32d",
        "@base64d",
        "tojson | fromjson",
        "\"\\u12\"",
        "\"(\" | splits(\"(\")",
        "test(\"[\")",
        "\"x\" | strptime(\"%Q\")",
        "[1114112] | implode",
        "[-1] | implode",
        "[limit(-1; 1)]",
        ".[1e300]",
        ".data.tags[nan]",
        ".data.tags[1e300:]",
        "1e1000 | todate",
        "-1e300 | todate",
        "\"x\" | mktime",
        "[] | mktime",
        "nan | floor",
        "infinite | floor",
        "1 / 0",
        "0 % 0",
        "-9223372036854775808 % -1",
        "9223372036854775807 + 1",
        "[range(3)] | .[1:] = 5",
        "path(1)",
        "paths(1)",
        "del(.data.items[0, 1])",
        "to_entries | from_entries",
        "@sh",
        "[.] | @csv",
        "@tsv",
        "@uri",
        "@html",
        "@text",
        "@json",
        "input_filename",
        "$__prog_args",
        "splits(1)",
        "\"a\" | ascii",
        "tostream",
        "fromstream(1)",
        "getpath(1)",
        "setpath([]; 1)",
        "ltrimstr(\"\")",
        "\"abc\" | .[1:2]",
        "\"abc\" | .[nan:]",
        "env | type",
        "now | type",
        "\"2015-03-05T23:51:47Z\" | fromdate",
        "\"x\" | fromdate",
        "@base32d | @base32",
        "pow(2; 1e10)",
        "log",
        "[.[]?]",
        "..|numbers",
        "tojson | .[0:3]",
        "min_by(.x)",
        "group_by(.)",
        "unique_by(1)",
        "splits(\"a\"; \"z\")",
        "sub(\"(?<x>a)\"; \"\\(.x)\")",
        "indices(1)",
        "\"a,b\" | split(\",\"; null)",
        "significand",
        "gamma",
        "frexp",
        "ldexp(1; 1e10)",
        "tojson | @base64d",
        "\"\\ud800\" | explode",
        "[55296] | implode",
        "{} | .[\"a\"] |= empty",
        "[1,2] | .[] |= empty",
        "reduce empty as $x (.; 1)",
        "foreach (1,2) as $x (0; . + $x; [$x, .])",
        "getpath([\"a\"]) = 1",
        "limit(0; 1)",
        "first(empty)",
        "isvalid(1)",
        "splits(\"\")",
        "ltrimstr(\"a\") | rtrimstr(1)",
        "@base64d | fromjson",
        "\"1e1000\" | tonumber",
        "\"-0\" | tonumber",
        "tojson | tonumber",
        "abs",
        "toarray",
        "have_literal_numbers",
        "$ENV",
        "halt_error",
        "halt_error(1)",
        "error(null)",
        "try error catch .",
        "error",
        "debug",
        "debug(\"x\")",
        "stderr",
        "input_line_number",
    ];
    for program in programs {
        if let Ok(p) = JqProgram::compile(program) {
            for input in [
                event(),
                json!(null),
                json!("s"),
                json!([1, "a"]),
                json!(-3.5),
            ] {
                let _ = p.run(&input);
            }
        }
    }
}
