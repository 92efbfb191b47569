//! The CloudEvents SQL conformance suite (TCK): every case of every file in
//! `tests/fixtures/cesql/` (copied from the CloudEvents specification; see
//! SOURCE.md there), checked for its result and error class. A failure lists
//! every failing case, not just the first.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value as Json};
use sluice_router::event::{Event, EventFields};
use sluice_router::matching::cesql::{Expression, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Suite {
    name: String,
    tests: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Case {
    name: String,
    /// As written: `expression: TRUE` and `expression: 0` are YAML scalars too.
    expression: String,
    result: Option<Json>,
    error: Option<String>,
    event: Option<Map<String, Json>>,
    event_overrides: Option<Map<String, Json>>,
}

/// "Any valid event" for cases that give none, with the overrides applied.
fn input_event(case: &Case) -> Result<Event, String> {
    let mut fields = match &case.event {
        Some(event) => event.clone(),
        None => {
            let mut default = Map::new();
            default.insert("specversion".into(), "1.0".into());
            default.insert("id".into(), "tck-id".into());
            default.insert("source".into(), "/tck".into());
            default.insert("type".into(), "io.cloudevents.tck".into());
            default
        }
    };
    for (name, value) in case.event_overrides.iter().flatten() {
        fields.insert(name.clone(), value.clone());
    }
    EventFields::from_structured(fields)
        .and_then(EventFields::build)
        .map_err(|e| format!("invalid input event: {e}"))
}

fn expected_value(result: &Json) -> Result<Value, String> {
    match result {
        Json::Bool(b) => Ok(Value::Boolean(*b)),
        Json::String(s) => Ok(Value::String(s.clone())),
        Json::Number(n) => n
            .as_i64()
            .and_then(|i| i32::try_from(i).ok())
            .map(Value::Integer)
            .ok_or_else(|| format!("result {n} is not a 32-bit integer")),
        other => Err(format!("unsupported result {other}")),
    }
}

/// Equal, or the same instant: the event keeps `time` in UTC, so
/// `2018-04-26T14:48:09+02:00` reads back as `2018-04-26T12:48:09Z`, which is the
/// same RFC 3339 timestamp written with another offset.
fn same_value(expected: &Value, got: &Value) -> bool {
    if expected == got {
        return true;
    }
    match (expected, got) {
        (Value::String(a), Value::String(b)) => {
            let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            matches!((parse(a), parse(b)), (Some(a), Some(b)) if a == b)
        }
        _ => false,
    }
}

/// Run one case; `Err` describes how it failed.
fn run(case: &Case) -> Result<(), String> {
    let event = input_event(case)?;
    let (value, error) = match Expression::parse(&case.expression) {
        Ok(expression) => {
            let (value, error) = expression.evaluate(&event);
            // The filter view must agree with the full evaluation.
            let matched = expression.matches(&event);
            if matched != (value == Value::Boolean(true) && error.is_none()) {
                return Err(format!("matches() = {matched} disagrees with evaluate()"));
            }
            (Some(value), error.map(|e| (e.kind.as_str(), e.to_string())))
        }
        Err(e) => (None, Some(("parse", e.to_string()))),
    };
    let got_kind = error.as_ref().map(|(kind, _)| *kind);
    let got = format!(
        "value {}, error {}",
        value
            .as_ref()
            .map_or("none (parse failed)".into(), |v| format!("{v:?}")),
        error.as_ref().map_or("none".into(), |(_, e)| e.clone())
    );
    if case.error.as_deref() != got_kind {
        return Err(format!("expected error {:?}, got {got}", case.error));
    }
    if let (Some(result), Some(value)) = (&case.result, &value) {
        let expected = expected_value(result)?;
        if !same_value(&expected, value) {
            return Err(format!("expected value {expected:?}, got {got}"));
        }
    }
    Ok(())
}

#[test]
fn cesql_conformance_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cesql");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();

    let mut cases = 0;
    let mut failures = Vec::new();
    for path in &paths {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(path).unwrap();
        let suite: Suite = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            !suite.tests.is_empty(),
            "{file} ({}) has no cases",
            suite.name
        );
        for case in &suite.tests {
            cases += 1;
            if let Err(why) = run(case) {
                failures.push(format!(
                    "{file} / {}\n    expression: {}\n    {why}",
                    case.name, case.expression
                ));
            }
        }
    }
    println!(
        "CESQL TCK: ran {cases} cases from {} files; {} passing",
        paths.len(),
        cases - failures.len()
    );
    assert!(
        paths.len() >= 18,
        "expected the 18 TCK files in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {cases} CESQL TCK cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
