//! A rule's filter: an event pattern, a CESQL expression and Subscriptions API
//! filters, all of which must match; with explanations for the dry run.

use crate::config::{DialectConfig, FilterConfig};
use crate::event::{field_values, Event, FieldValue};
use crate::matching::cesql::Expression;
use crate::matching::pattern::Pattern;

/// A compiled filter.
pub struct Filter {
    pub pattern: Option<Pattern>,
    sql: Option<Expression>,
    dialects: Vec<Dialect>,
}

/// A compiled Subscriptions API filter expression.
enum Dialect {
    Exact(Vec<(Vec<String>, String)>),
    Prefix(Vec<(Vec<String>, String)>),
    Suffix(Vec<(Vec<String>, String)>),
    All(Vec<Dialect>),
    Any(Vec<Dialect>),
    Not(Box<Dialect>),
    Sql(Box<Expression>),
}

/// A problem in a filter, at a path relative to the filter (`pattern.data.x[0]`,
/// `sql`, `filters[1].any[0].sql`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub path: String,
    pub message: String,
}

/// Attribute names split on dots: `data.a.b` reaches into the payload.
fn attribute_path(name: &str) -> Vec<String> {
    name.split('.').map(str::to_owned).collect()
}

fn compile_dialect(config: &DialectConfig, path: String, errors: &mut Vec<FilterError>) -> Dialect {
    let pairs = |m: &std::collections::BTreeMap<String, String>| -> Vec<(Vec<String>, String)> {
        m.iter()
            .map(|(k, v)| (attribute_path(k), v.clone()))
            .collect()
    };
    let check_nonempty = |len: usize, what: &str, errors: &mut Vec<FilterError>| {
        if len == 0 {
            errors.push(FilterError {
                path: path.clone(),
                message: format!("{what} needs at least one entry"),
            });
        }
    };
    match config {
        DialectConfig::Exact(m) => {
            check_nonempty(m.len(), "exact", errors);
            Dialect::Exact(pairs(m))
        }
        DialectConfig::Prefix(m) => {
            check_nonempty(m.len(), "prefix", errors);
            Dialect::Prefix(pairs(m))
        }
        DialectConfig::Suffix(m) => {
            check_nonempty(m.len(), "suffix", errors);
            Dialect::Suffix(pairs(m))
        }
        DialectConfig::All(items) | DialectConfig::Any(items) => {
            let all = matches!(config, DialectConfig::All(_));
            let name = if all { "all" } else { "any" };
            check_nonempty(items.len(), name, errors);
            let inner = items
                .iter()
                .enumerate()
                .map(|(i, d)| compile_dialect(d, format!("{path}.{name}[{i}]"), errors))
                .collect();
            if all {
                Dialect::All(inner)
            } else {
                Dialect::Any(inner)
            }
        }
        DialectConfig::Not(inner) => Dialect::Not(Box::new(compile_dialect(
            inner,
            format!("{path}.not"),
            errors,
        ))),
        DialectConfig::Sql(text) => match Expression::parse(text) {
            Ok(e) => Dialect::Sql(Box::new(e)),
            Err(e) => {
                errors.push(FilterError {
                    path: format!("{path}.sql"),
                    message: format!("CESQL: {e}"),
                });
                Dialect::All(Vec::new())
            }
        },
    }
}

/// The values of an attribute as strings, as the Subscriptions API compares them.
fn texts(event: &Event, path: &[String]) -> Vec<String> {
    let mut values = Vec::new();
    field_values(event, path, &mut values);
    values
        .into_iter()
        .map(|v| match v {
            FieldValue::Str(s) => s.into_owned(),
            other => other.to_string(),
        })
        .collect()
}

impl Dialect {
    fn matches(&self, event: &Event) -> bool {
        let each = |pairs: &[(Vec<String>, String)], test: fn(&str, &str) -> bool| {
            pairs
                .iter()
                .all(|(path, want)| texts(event, path).iter().any(|v| test(v, want)))
        };
        match self {
            Dialect::Exact(p) => each(p, |v, w| v == w),
            Dialect::Prefix(p) => each(p, |v, w| v.starts_with(w)),
            Dialect::Suffix(p) => each(p, |v, w| v.ends_with(w)),
            Dialect::All(items) => items.iter().all(|d| d.matches(event)),
            Dialect::Any(items) => items.iter().any(|d| d.matches(event)),
            Dialect::Not(inner) => !inner.matches(event),
            Dialect::Sql(e) => e.matches(event),
        }
    }

    fn describe(&self) -> String {
        let pairs = |name: &str, p: &[(Vec<String>, String)]| {
            let parts: Vec<String> = p
                .iter()
                .map(|(k, v)| format!("{} {v:?}", k.join(".")))
                .collect();
            format!("{name} {}", parts.join(", "))
        };
        match self {
            Dialect::Exact(p) => pairs("exact", p),
            Dialect::Prefix(p) => pairs("prefix", p),
            Dialect::Suffix(p) => pairs("suffix", p),
            Dialect::All(items) => format!(
                "all({})",
                items
                    .iter()
                    .map(Self::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Dialect::Any(items) => format!(
                "any({})",
                items
                    .iter()
                    .map(Self::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Dialect::Not(inner) => format!("not({})", inner.describe()),
            Dialect::Sql(_) => "sql".into(),
        }
    }

    /// Why this filter does not match `event`.
    fn explain(&self, event: &Event, path: &str, out: &mut Vec<String>) {
        let found = |p: &[String]| {
            let v = texts(event, p);
            match v.as_slice() {
                [] => "missing".to_owned(),
                [one] => format!("{one:?}"),
                many => format!("{many:?}"),
            }
        };
        match self {
            Dialect::Exact(p) | Dialect::Prefix(p) | Dialect::Suffix(p) => {
                let (kind, test): (&str, fn(&str, &str) -> bool) = match self {
                    Dialect::Exact(_) => ("exact", |v, w| v == w),
                    Dialect::Prefix(_) => ("prefix", |v, w| v.starts_with(w)),
                    _ => ("suffix", |v, w| v.ends_with(w)),
                };
                for (k, want) in p {
                    if !texts(event, k).iter().any(|v| test(v, want)) {
                        out.push(format!(
                            "{path}: {}: {} is not {kind} {want:?}",
                            k.join("."),
                            found(k)
                        ));
                    }
                }
            }
            Dialect::All(items) => {
                for (i, d) in items.iter().enumerate() {
                    if !d.matches(event) {
                        d.explain(event, &format!("{path}.all[{i}]"), out);
                    }
                }
            }
            Dialect::Any(items) => out.push(format!(
                "{path}: none of {} alternatives matched ({})",
                items.len(),
                self.describe()
            )),
            Dialect::Not(inner) => out.push(format!(
                "{path}: matched {}, which is negated",
                inner.describe()
            )),
            Dialect::Sql(e) => out.push(explain_sql(e, event, &format!("{path}.sql"))),
        }
    }
}

fn explain_sql(e: &Expression, event: &Event, path: &str) -> String {
    match e.evaluate(event) {
        (_, Some(err)) => format!("{path}: evaluation failed: {err}"),
        (value, None) => format!("{path}: evaluated to {value}, not TRUE"),
    }
}

impl Filter {
    /// Compile a rule's filter; every error found is returned with its path.
    pub fn compile(config: &FilterConfig) -> Result<Self, Vec<FilterError>> {
        let mut errors = Vec::new();
        let pattern = match &config.pattern {
            Some(p) => match Pattern::compile(p) {
                Ok(p) => Some(p),
                Err(es) => {
                    errors.extend(es.into_iter().map(|e| FilterError {
                        path: if e.path.is_empty() {
                            "pattern".into()
                        } else {
                            format!("pattern.{}", e.path)
                        },
                        message: e.message,
                    }));
                    None
                }
            },
            None => None,
        };
        let sql = match &config.sql {
            Some(text) => match Expression::parse(text) {
                Ok(e) => Some(e),
                Err(e) => {
                    errors.push(FilterError {
                        path: "sql".into(),
                        message: format!("CESQL: {e}"),
                    });
                    None
                }
            },
            None => None,
        };
        let dialects = config
            .filters
            .iter()
            .enumerate()
            .map(|(i, d)| compile_dialect(d, format!("filters[{i}]"), &mut errors))
            .collect();
        if config.pattern.is_none() && config.sql.is_none() && config.filters.is_empty() {
            errors.push(FilterError {
                path: String::new(),
                message: "give a pattern, sql or filters (or remove `filter` to match every event)"
                    .into(),
            });
        }
        if errors.is_empty() {
            Ok(Self {
                pattern,
                sql,
                dialects,
            })
        } else {
            Err(errors)
        }
    }

    /// The parts other than the pattern (which the rule index checks).
    pub fn matches_rest(&self, event: &Event) -> bool {
        self.sql.as_ref().is_none_or(|e| e.matches(event))
            && self.dialects.iter().all(|d| d.matches(event))
    }

    pub fn matches<'e>(&self, event: &'e Event, scratch: &mut Vec<FieldValue<'e>>) -> bool {
        self.pattern
            .as_ref()
            .is_none_or(|p| p.matches(event, scratch))
            && self.matches_rest(event)
    }

    /// Why `event` does not match: one line per failing clause (empty on a match).
    pub fn explain(&self, event: &Event) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(p) = &self.pattern {
            let mut scratch = Vec::new();
            if !p.matches(event, &mut scratch) {
                let branches = p.explain(event);
                if branches.len() == 1 {
                    out.extend(branches.into_iter().flatten());
                } else {
                    for (i, reasons) in branches.into_iter().enumerate() {
                        out.push(format!("$or alternative {}: {}", i + 1, reasons.join("; ")));
                    }
                }
            }
        }
        if let Some(e) = &self.sql {
            if !e.matches(event) {
                out.push(explain_sql(e, event, "sql"));
            }
        }
        for (i, d) in self.dialects.iter().enumerate() {
            if !d.matches(event) {
                d.explain(event, &format!("filters[{i}]"), &mut out);
            }
        }
        out
    }
}
