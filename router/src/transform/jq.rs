//! jq programs, run by [jaq](https://github.com/01mf02/jaq).
//!
//! A [`JqProgram`] is compiled once from config, with jq's standard library (`map`,
//! `select`, `to_entries`, `test`, `@base64`, `todate`, ...), and then run on each event.
//! Each run must produce exactly one value: the new payload.
//!
//! jq programs are trusted config, like the rest of the config file: nothing here
//! limits run time or memory, so a program such as `repeat(.)`, `until(false; .)` or
//! `[range(1e9)]` runs until it is killed or the memory is gone. jaq's `env` also reads
//! the router's environment variables. Review programs as you would code.
//!
//! Differences from jq that show in results: numbers that come out of a program as
//! floats with an integral value are emitted as integers (`1.5 * 2` gives `3`, as jq
//! prints it); NaN becomes `null` and ±infinity the largest finite double, as in jq;
//! output nested deeper than 128 levels is an error (serde_json could not read it back).

use jaq_core::data::JustLut;
use jaq_core::load::{lex, parse, Arena, File, Loader};
use jaq_core::{compile, load, Compiler, Ctx, Filter, Vars};
use jaq_json::{Num, Val};
use serde_json::{Map, Number, Value};
use std::sync::Arc;

/// How many outputs we count before giving up on counting ("more than N").
const MAX_COUNTED_OUTPUTS: usize = 100;
/// Deepest output we convert; matches serde_json's default parse limit.
const MAX_OUTPUT_DEPTH: usize = 128;
/// Longest error message we return: runtime errors quote values, which can be whole events.
const MAX_ERROR_LEN: usize = 300;

type Data = JustLut<Val>;

/// A compiled jq program. It is `Send + Sync`, runs without locking, and clones cheaply.
#[derive(Clone)]
pub struct JqProgram {
    filter: Arc<Filter<Data>>,
}

impl std::fmt::Debug for JqProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JqProgram").finish_non_exhaustive()
    }
}

impl JqProgram {
    /// Compile with the jq standard library definitions available (map, select,
    /// to_entries, etc.). Errors say what is wrong and where, e.g.
    /// "undefined filter `foo/0` at column 1" or "syntax error at column 7: ...".
    /// Modules (`import`, `include`) and `$ENV` are not available.
    pub fn compile(program: &str) -> Result<JqProgram, String> {
        if program.trim().is_empty() {
            return Err("empty jq program; use `.` to pass the input through".into());
        }
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs());
        let funs = jaq_core::funs()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs());
        let arena = Arena::default();
        let file = File {
            code: program,
            path: (),
        };
        let modules = Loader::new(defs)
            .load(&arena, file)
            .map_err(|errs| load_errors(program, errs))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errs| compile_errors(program, errs))?;
        Ok(JqProgram {
            filter: Arc::new(filter),
        })
    }

    /// Run on one input. Exactly one output is expected: none, several, a runtime
    /// error or `halt` are errors.
    pub fn run(&self, input: &Value) -> Result<Value, String> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, to_val(input)));
        let first = match outputs.next() {
            None => return Err("jq program produced no output".into()),
            Some(out) => out.map_err(exn_message)?,
        };
        let mut count = 1;
        for out in outputs.by_ref().take(MAX_COUNTED_OUTPUTS) {
            out.map_err(exn_message)?;
            count += 1;
        }
        match count {
            1 => to_json(&first, 0),
            n if n > MAX_COUNTED_OUTPUTS => Err(format!(
                "jq program produced more than {MAX_COUNTED_OUTPUTS} outputs; \
                 wrap it in [...] to collect them"
            )),
            n => Err(format!(
                "jq program produced {n} outputs; wrap it in [...] to collect them"
            )),
        }
    }
}

/// An exception that escaped the program: an error, or `halt`.
fn exn_message(e: jaq_core::Exn<'_, Val>) -> String {
    match e.get_err() {
        Ok(err) => {
            let msg = match err.into_val() {
                Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(&s).into_owned(),
                v => v.to_string(),
            };
            truncate(format!("jq error: {msg}"))
        }
        Err(e) => match e.get_halt() {
            Ok(code) => format!("jq program called halt (exit code {code})"),
            // jaq documents that only errors and halts escape a main filter.
            Err(_) => "jq program failed: internal control flow escaped".into(),
        },
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(if let Some(i) = n.as_i64() {
            Num::from_integral(i)
        } else if let Some(u) = n.as_u64() {
            Num::from_integral(u)
        } else {
            Num::Float(n.as_f64().unwrap_or(f64::NAN))
        }),
        Value::String(s) => Val::from(s.clone()),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::from(k.clone()), to_val(v)))
                .collect(),
        ),
    }
}

fn to_json(v: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(format!(
            "jq program output is nested deeper than {MAX_OUTPUT_DEPTH} levels"
        ));
    }
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => num_to_json(n),
        Val::TStr(s) | Val::BStr(s) => Value::String(String::from_utf8_lossy(s).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(o) => {
            let mut map = Map::with_capacity(o.len());
            for (k, v) in o.iter() {
                let key = match k {
                    Val::TStr(s) | Val::BStr(s) => String::from_utf8_lossy(s).into_owned(),
                    k => {
                        return Err(truncate(format!(
                            "jq program output has object key {k}, \
                             but JSON object keys must be strings"
                        )))
                    }
                };
                map.insert(key, to_json(v, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

fn num_to_json(n: &Num) -> Value {
    match n {
        Num::Int(i) => Value::from(*i),
        Num::Float(f) => float_to_json(*f),
        // Big integers and decimal literals: read their text back.
        other => {
            let text = other.to_string();
            if let Ok(i) = text.parse::<i64>() {
                Value::from(i)
            } else if let Ok(u) = text.parse::<u64>() {
                Value::from(u)
            } else {
                float_to_json(text.parse::<f64>().unwrap_or(f64::NAN))
            }
        }
    }
}

fn float_to_json(f: f64) -> Value {
    /// Integers up to 2^53 are exact in an f64.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if f.is_nan() {
        Value::Null
    } else if f.is_infinite() {
        float_to_json(f64::MAX.copysign(f))
    } else if f.fract() == 0.0 && f.abs() <= EXACT {
        // In range and integral, so the cast is exact.
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Where `part` (a slice of `code`) starts, as "line L, column C" or "column C"
/// (1-based, in chars).
fn position(code: &str, part: &str) -> Option<String> {
    let start = (part.as_ptr() as usize).checked_sub(code.as_ptr() as usize)?;
    let before = code.get(..start)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..)?.chars().count() + 1;
    Some(if code.contains('\n') {
        format!("line {line}, column {col}")
    } else {
        format!("column {col}")
    })
}

fn at(code: &str, part: &str) -> String {
    position(code, part).map_or_else(String::new, |p| format!(" at {p}"))
}

fn found(rest: &str) -> String {
    match rest.chars().next() {
        None => "the end of the program".into(),
        Some(_) => {
            let token: String = rest.chars().take(20).collect();
            let more = if rest.chars().nth(20).is_some() {
                "…"
            } else {
                ""
            };
            format!("`{token}{more}`")
        }
    }
}

fn load_errors(code: &str, errs: load::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, err) in errs {
        match err {
            load::Error::Io(errs) => {
                for (path, msg) in errs {
                    msgs.push(format!(
                        "cannot load module \"{path}\"{}: {msg}",
                        at(code, path)
                    ));
                }
            }
            load::Error::Lex(errs) => {
                for (expect, rest) in errs {
                    let what = match expect {
                        lex::Expect::Delim(open) => format!(
                            "unclosed `{open}`{}; expected its closing delimiter",
                            at(code, open)
                        ),
                        other => format!("expected {}", other.as_str()),
                    };
                    msgs.push(format!(
                        "syntax error{}: {what}, found {}",
                        at(code, rest),
                        found(rest)
                    ));
                }
            }
            load::Error::Parse(errs) => {
                for (expect, rest) in errs {
                    let what = match expect {
                        parse::Expect::Just(s) => format!("`{s}`"),
                        other => other.as_str().to_owned(),
                    };
                    msgs.push(format!(
                        "syntax error{}: expected {what}, found {}",
                        at(code, rest),
                        found(rest)
                    ));
                }
            }
        }
    }
    join(msgs)
}

fn compile_errors(code: &str, errs: compile::Errors<&str, ()>) -> String {
    let mut msgs = Vec::new();
    for (_file, errs) in errs {
        for (name, undefined) in errs {
            let what = match undefined {
                compile::Undefined::Filter(arity) => format!("filter `{name}/{arity}`"),
                other => format!("{} `{name}`", other.as_str()),
            };
            msgs.push(format!("undefined {what}{}", at(code, name)));
        }
    }
    join(msgs)
}

fn join(msgs: Vec<String>) -> String {
    if msgs.is_empty() {
        "invalid jq program".into()
    } else {
        msgs.join("; ")
    }
}

#[cfg(test)]
#[path = "jq_tests.rs"]
mod tests;
