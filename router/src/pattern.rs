//! EventBridge-style event patterns, compiled once and matched without allocation
//! beyond a small scratch buffer.
//!
//! A pattern is a JSON object whose keys are event fields (attribute names at the top,
//! `data` for the payload, nested objects for nested keys) and whose leaves are lists
//! of values or matchers. Within a list any entry may match (OR); all keys must match
//! (AND). A field that holds an array matches when any element does.
//!
//! Compiled patterns are a flat list of conditions (`path`, matchers), which is the
//! unit a future shared index over all rules of a bus is built from.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::event::{field_values, json_kind, Event, FieldValue};

/// A pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PatternError {
    /// Where in the pattern, e.g. `data.amount[0]`.
    pub path: String,
    pub message: String,
}

/// A compiled pattern.
#[derive(Debug, Clone, Default)]
pub struct Pattern {
    conditions: Vec<Condition>,
}

#[derive(Debug, Clone)]
struct Condition {
    path: Vec<String>,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
enum Matcher {
    Exact(Literal),
    Prefix(String),
    Suffix(String),
    AnythingBut(Vec<Literal>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Pattern {
    /// Compile a pattern; every error found is returned, each with its path.
    pub fn compile(value: &Value) -> Result<Self, Vec<PatternError>> {
        let mut pattern = Pattern::default();
        let mut errors = Vec::new();
        match value {
            Value::Object(map) => compile_object(map, &mut Vec::new(), &mut pattern, &mut errors),
            other => errors.push(PatternError {
                path: String::new(),
                message: format!("a pattern must be an object, found {}", json_kind(other)),
            }),
        }
        if errors.is_empty() {
            Ok(pattern)
        } else {
            Err(errors)
        }
    }

    /// Whether `event` matches; `scratch` is reused between calls to avoid allocation.
    pub fn matches<'e>(&self, event: &'e Event, scratch: &mut Vec<FieldValue<'e>>) -> bool {
        self.conditions.iter().all(|c| {
            scratch.clear();
            field_values(event, &c.path, scratch);
            c.matches(scratch)
        })
    }
}

impl Condition {
    fn matches(&self, values: &[FieldValue<'_>]) -> bool {
        self.matchers.iter().any(|m| match m {
            Matcher::Exists(want) => values.is_empty() != *want,
            m => values.iter().any(|v| m.matches(v)),
        })
    }
}

impl Matcher {
    fn matches(&self, value: &FieldValue<'_>) -> bool {
        match self {
            Matcher::Exact(lit) => lit.equals(value),
            Matcher::Prefix(p) => as_str(value).is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => as_str(value).is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::AnythingBut(lits) => !lits.iter().any(|l| l.equals(value)),
            Matcher::AnythingButPrefix(p) => {
                as_str(value).is_some_and(|s| !s.starts_with(p.as_str()))
            }
            Matcher::AnythingButSuffix(p) => {
                as_str(value).is_some_and(|s| !s.ends_with(p.as_str()))
            }
            Matcher::Numeric(cmps) => match value {
                FieldValue::Num(n) => cmps.iter().all(|(cmp, x)| match cmp {
                    Cmp::Eq => n == x,
                    Cmp::Lt => n < x,
                    Cmp::Le => n <= x,
                    Cmp::Gt => n > x,
                    Cmp::Ge => n >= x,
                }),
                _ => false,
            },
            Matcher::Exists(_) => false,
        }
    }
}

fn as_str<'a>(value: &'a FieldValue<'_>) -> Option<&'a str> {
    match value {
        FieldValue::Str(s) => Some(s),
        _ => None,
    }
}

impl Literal {
    fn equals(&self, value: &FieldValue<'_>) -> bool {
        match (self, value) {
            (Literal::Str(a), FieldValue::Str(b)) => a == b,
            (Literal::Num(a), FieldValue::Num(b)) => a == b,
            (Literal::Bool(a), FieldValue::Bool(b)) => a == b,
            (Literal::Null, FieldValue::Null) => true,
            _ => false,
        }
    }

    fn from_json(value: &Value) -> Option<Self> {
        Some(match value {
            Value::String(s) => Literal::Str(s.clone()),
            Value::Number(n) => Literal::Num(n.as_f64()?),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Null => Literal::Null,
            _ => return None,
        })
    }
}

fn display(path: &[String]) -> String {
    path.join(".")
}

fn compile_object(
    map: &Map<String, Value>,
    path: &mut Vec<String>,
    pattern: &mut Pattern,
    errors: &mut Vec<PatternError>,
) {
    if map.is_empty() {
        errors.push(PatternError {
            path: display(path),
            message: "an empty object matches nothing; remove it or add a field".into(),
        });
    }
    for (key, value) in map {
        path.push(key.clone());
        match value {
            Value::Object(inner) => compile_object(inner, path, pattern, errors),
            Value::Array(items) => {
                let mut matchers = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match compile_matcher(item) {
                        Ok(m) => matchers.push(m),
                        Err(message) => errors.push(PatternError {
                            path: format!("{}[{i}]", display(path)),
                            message,
                        }),
                    }
                }
                if items.is_empty() {
                    errors.push(PatternError {
                        path: display(path),
                        message: "an empty list matches nothing".into(),
                    });
                }
                pattern.conditions.push(Condition {
                    path: path.clone(),
                    matchers,
                });
            }
            other => errors.push(PatternError {
                path: display(path),
                message: format!(
                    "must be a list of values or matchers (e.g. [{other}]), found {}",
                    json_kind(other)
                ),
            }),
        }
        path.pop();
    }
}

fn compile_matcher(item: &Value) -> Result<Matcher, String> {
    if let Some(lit) = Literal::from_json(item) {
        return Ok(Matcher::Exact(lit));
    }
    let Value::Object(op) = item else {
        return Err("a list entry must be a value or a matcher object, found an array".into());
    };
    if op.len() != 1 {
        return Err(format!(
            "a matcher object has exactly one key (prefix, suffix, anything-but, numeric, exists), found {}",
            op.len()
        ));
    }
    let (name, arg) = op.iter().next().ok_or("empty matcher")?;
    match name.as_str() {
        "prefix" => string_arg(name, arg).map(Matcher::Prefix),
        "suffix" => string_arg(name, arg).map(Matcher::Suffix),
        "exists" => match arg {
            Value::Bool(b) => Ok(Matcher::Exists(*b)),
            other => Err(format!(
                "exists takes true or false, found {}",
                json_kind(other)
            )),
        },
        "numeric" => compile_numeric(arg),
        "anything-but" => compile_anything_but(arg),
        other => Err(format!(
            "unknown matcher {other:?}; expected prefix, suffix, anything-but, numeric or exists"
        )),
    }
}

fn string_arg(name: &str, arg: &Value) -> Result<String, String> {
    match arg {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{name} takes a string, found {}", json_kind(other))),
    }
}

fn compile_numeric(arg: &Value) -> Result<Matcher, String> {
    let Value::Array(parts) = arg else {
        return Err("numeric takes a list such as [\">\", 0, \"<=\", 5]".into());
    };
    if parts.is_empty() || parts.len() % 2 != 0 || parts.len() > 4 {
        return Err(format!(
            "numeric takes one or two (operator, number) pairs, found {} items",
            parts.len()
        ));
    }
    let mut cmps = Vec::new();
    for pair in parts.chunks(2) {
        let cmp = match pair[0].as_str() {
            Some("=") => Cmp::Eq,
            Some("<") => Cmp::Lt,
            Some("<=") => Cmp::Le,
            Some(">") => Cmp::Gt,
            Some(">=") => Cmp::Ge,
            _ => {
                return Err(format!(
                    "numeric operator must be one of =, <, <=, >, >=, found {}",
                    pair[0]
                ))
            }
        };
        let number = pair[1]
            .as_f64()
            .ok_or_else(|| format!("numeric {} needs a number, found {}", pair[0], pair[1]))?;
        cmps.push((cmp, number));
    }
    if let [(a, _), (b, _)] = cmps.as_slice() {
        let lower = |c: &Cmp| matches!(c, Cmp::Gt | Cmp::Ge);
        let upper = |c: &Cmp| matches!(c, Cmp::Lt | Cmp::Le);
        if !(lower(a) && upper(b)) {
            return Err(
                "a numeric range is a lower bound (> or >=) then an upper bound (< or <=)".into(),
            );
        }
    }
    Ok(Matcher::Numeric(cmps))
}

fn compile_anything_but(arg: &Value) -> Result<Matcher, String> {
    if let Some(lit) = Literal::from_json(arg) {
        return Ok(Matcher::AnythingBut(vec![lit]));
    }
    match arg {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                Literal::from_json(v).ok_or_else(|| {
                    format!(
                        "anything-but lists hold plain values, found {}",
                        json_kind(v)
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Matcher::AnythingBut),
        Value::Object(op) if op.len() == 1 => {
            let (name, value) = op.iter().next().ok_or("empty anything-but")?;
            match name.as_str() {
                "prefix" => string_arg(name, value).map(Matcher::AnythingButPrefix),
                "suffix" => string_arg(name, value).map(Matcher::AnythingButSuffix),
                other => Err(format!(
                    "anything-but supports prefix or suffix, found {other:?}"
                )),
            }
        }
        _ => Err("anything-but takes a value, a list of values, or {prefix|suffix: ...}".into()),
    }
}

/// Values shown in explanations and tests.
impl std::fmt::Display for FieldValue<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Str(Cow::Borrowed(s)) => write!(f, "{s:?}"),
            FieldValue::Str(Cow::Owned(s)) => write!(f, "{s:?}"),
            FieldValue::Num(n) => write!(f, "{n}"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Null => write!(f, "null"),
        }
    }
}

#[cfg(test)]
mod tests {
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
}
