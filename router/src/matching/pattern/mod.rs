//! EventBridge-style event patterns, compiled once.
//!
//! A pattern is a JSON object whose keys are event fields (attribute names at the top,
//! `data` for the payload, nested objects for nested keys) and whose leaves are lists
//! of values or matchers. Within a list any entry may match (OR); all keys must match
//! (AND); `$or: [pattern, ...]` at any level is a choice between sub-patterns. A field
//! that holds an array matches when any element does.
//!
//! A compiled pattern is in disjunctive normal form: a list of branches, each a list
//! of conditions (path + matchers) that must all hold. That flat form is what the
//! per-bus rule index ([`crate::matching::rules`]) is built from, and what explanations walk.

mod matcher;

use serde_json::{Map, Value};

pub use matcher::{Cidr, Cmp, Literal, Matcher, Wildcard};

use crate::event::{field_values, json_kind, Event, FieldValue};

/// Branches at most after expanding `$or`; more is a config error, not a slow matcher.
const MAX_BRANCHES: usize = 256;

/// A pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PatternError {
    /// Where in the pattern, e.g. `data.amount[0]`.
    pub path: String,
    pub message: String,
}

/// A compiled pattern: it matches when any branch matches.
#[derive(Debug, Clone, Default)]
pub struct Pattern {
    pub branches: Vec<Branch>,
}

/// Conditions that must all hold.
#[derive(Debug, Clone, Default)]
pub struct Branch {
    pub conditions: Vec<Condition>,
}

/// The values at `path` must satisfy at least one matcher.
#[derive(Debug, Clone)]
pub struct Condition {
    pub path: Vec<String>,
    pub matchers: Vec<Matcher>,
}

impl Condition {
    pub fn matches(&self, values: &[FieldValue<'_>]) -> bool {
        self.matchers.iter().any(|m| match m {
            Matcher::Exists(want) => values.is_empty() != *want,
            m => values.iter().any(|v| m.matches(v)),
        })
    }

    pub fn path_string(&self) -> String {
        self.path.join(".")
    }

    /// Why the values found do not satisfy this condition, e.g.
    /// `data.amount: 50 is not > 100` or `type: missing`.
    pub fn explain(&self, values: &[FieldValue<'_>]) -> String {
        let path = self.path_string();
        let wanted: Vec<String> = self.matchers.iter().map(ToString::to_string).collect();
        if values.is_empty() {
            return format!("{path}: missing (expected {})", wanted.join(" or "));
        }
        let found: Vec<String> = values.iter().map(ToString::to_string).collect();
        let found = if found.len() == 1 {
            found[0].clone()
        } else {
            format!("[{}]", found.join(", "))
        };
        match self.matchers.as_slice() {
            [Matcher::Numeric(_)] => format!("{path}: {found} is not {}", wanted[0]),
            [Matcher::Exists(false)] => format!("{path}: {found} is present (expected absent)"),
            [m @ Matcher::Exact(_)] => format!("{path}: {found} is not {m}"),
            _ => format!("{path}: {found} does not match {}", wanted.join(" or ")),
        }
    }
}

impl Branch {
    pub fn matches<'e>(&self, event: &'e Event, scratch: &mut Vec<FieldValue<'e>>) -> bool {
        self.conditions.iter().all(|c| {
            scratch.clear();
            field_values(event, &c.path, scratch);
            c.matches(scratch)
        })
    }

    /// The explanation of every failing condition (empty when the branch matches).
    pub fn explain(&self, event: &Event) -> Vec<String> {
        let mut values = Vec::new();
        self.conditions
            .iter()
            .filter_map(|c| {
                values.clear();
                field_values(event, &c.path, &mut values);
                (!c.matches(&values)).then(|| c.explain(&values))
            })
            .collect()
    }
}

impl Pattern {
    /// Compile a pattern; every error found is returned, each with its path.
    pub fn compile(value: &Value) -> Result<Self, Vec<PatternError>> {
        let mut errors = Vec::new();
        let branches = match value {
            Value::Object(map) => compile_object(map, &mut Vec::new(), &mut errors),
            other => {
                errors.push(PatternError {
                    path: String::new(),
                    message: format!("a pattern must be an object, found {}", json_kind(other)),
                });
                Vec::new()
            }
        };
        if branches.len() > MAX_BRANCHES && errors.is_empty() {
            errors.push(PatternError {
                path: String::new(),
                message: format!(
                    "$or expands to {} alternatives; at most {MAX_BRANCHES} are allowed",
                    branches.len()
                ),
            });
        }
        if errors.is_empty() {
            Ok(Pattern { branches })
        } else {
            Err(errors)
        }
    }

    /// Whether `event` matches; `scratch` is reused between calls to avoid allocation.
    pub fn matches<'e>(&self, event: &'e Event, scratch: &mut Vec<FieldValue<'e>>) -> bool {
        self.branches.iter().any(|b| b.matches(event, scratch))
    }

    /// Why `event` does not match: per branch, its failing conditions.
    pub fn explain(&self, event: &Event) -> Vec<Vec<String>> {
        self.branches.iter().map(|b| b.explain(event)).collect()
    }
}

fn display(path: &[String]) -> String {
    path.join(".")
}

/// Branches of the conjunction of `a` and `b` (cross product).
fn and(a: Vec<Branch>, b: Vec<Branch>) -> Vec<Branch> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in &b {
            let mut conditions = x.conditions.clone();
            conditions.extend(y.conditions.iter().cloned());
            out.push(Branch { conditions });
            if out.len() > MAX_BRANCHES {
                return out;
            }
        }
    }
    out
}

fn compile_object(
    map: &Map<String, Value>,
    path: &mut Vec<String>,
    errors: &mut Vec<PatternError>,
) -> Vec<Branch> {
    if map.is_empty() {
        errors.push(PatternError {
            path: display(path),
            message: "an empty object matches nothing; remove it or add a field".into(),
        });
    }
    let mut branches = vec![Branch::default()];
    for (key, value) in map {
        if key == "$or" {
            let alternatives = compile_or(value, path, errors);
            branches = and(branches, alternatives);
            continue;
        }
        path.push(key.clone());
        match value {
            Value::Object(inner) => {
                let inner = compile_object(inner, path, errors);
                branches = and(branches, inner);
            }
            Value::Array(items) => {
                let mut matchers = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match Matcher::compile(item) {
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
                let condition = Condition {
                    path: path.clone(),
                    matchers,
                };
                for b in &mut branches {
                    b.conditions.push(condition.clone());
                }
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
    branches
}

fn compile_or(
    value: &Value,
    path: &mut Vec<String>,
    errors: &mut Vec<PatternError>,
) -> Vec<Branch> {
    let at = if path.is_empty() {
        "$or".to_owned()
    } else {
        format!("{}.$or", display(path))
    };
    let Value::Array(items) = value else {
        errors.push(PatternError {
            path: at,
            message: format!(
                "$or takes a list of at least two patterns, found {}",
                json_kind(value)
            ),
        });
        return vec![Branch::default()];
    };
    if items.len() < 2 {
        errors.push(PatternError {
            path: at.clone(),
            message: "$or takes a list of at least two patterns".into(),
        });
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::Object(map) => out.extend(compile_object(map, path, errors)),
            other => errors.push(PatternError {
                path: format!("{at}[{i}]"),
                message: format!(
                    "each $or alternative is a pattern object, found {}",
                    json_kind(other)
                ),
            }),
        }
    }
    if out.is_empty() {
        out.push(Branch::default());
    }
    out
}

#[cfg(test)]
mod tests;
