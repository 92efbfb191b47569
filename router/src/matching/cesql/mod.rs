//! CloudEvents SQL (CESQL v1): SQL-like predicates over an event's attributes,
//! as rule filters use them.
//!
//! An expression is compiled once with [`Expression::parse`] and then evaluated
//! against each event with [`Expression::evaluate`] or [`Expression::matches`].
//! Compilation resolves attribute names and function calls and compiles LIKE
//! patterns, so evaluation does no parsing, and reads strings from the event by
//! reference.
//!
//! # The language
//!
//! Literals: integers (32-bit), strings in `'...'` or `"..."` (`\'`, `\"` and
//! `\\` escape, a doubled quote stands for one), `TRUE`, `FALSE`. Attribute
//! names (`id`, `source`, `type`, `subject`, `time`, extensions...) read the
//! event; keywords, function names and attribute names are case-insensitive.
//! Operators: `NOT`, unary `-`, `* / %`, `+ -`, `= != <> < <= > >=`,
//! `AND OR XOR`, `[NOT] LIKE`, `[NOT] IN (...)`, `EXISTS`. Functions: `ABS`,
//! `LENGTH`, `CONCAT`, `CONCAT_WS`, `LOWER`, `UPPER`, `TRIM`, `LEFT`, `RIGHT`,
//! `SUBSTRING` (2 or 3 arguments), `INT`, `BOOL`, `STRING`, `IS_BOOL`, `IS_INT`.
//! Precedence is the specification's (see `parser.rs`): `AND`, `OR` and `XOR`
//! share one level and group left to right, so mix them with parentheses.
//!
//! Evaluation is total: it always yields a [`Value`], and reports the first error
//! it raised, classed as the specification classes them ([`ErrorKind`]). The
//! rules for errors, casts and overflow are in `eval.rs`. The conformance suite
//! (TCK) of the specification passes in full (`tests/cesql_tck.rs`), which settles
//! two points where the specification's prose is loose: a call to an unknown
//! function is an evaluation error (`missingFunction`), not a parse error; and
//! Integer -> Boolean is only an explicit cast (`BOOL(10)` is true, `NOT 10` is a
//! cast error).
//!
//! Timestamps read as RFC 3339 strings in UTC (`2018-04-26T12:48:09Z`), since
//! the event keeps `time` in UTC; an integer extension outside 32 bits reads as
//! a string.
//!
//! # Payload fields: sluice's extension
//!
//! The specification leaves the payload out; sluice adds `data.a.b` (any depth)
//! to read a field of a JSON payload: `data.order.total > 100`. The payload is
//! JSON when the event carries JSON, or text or bytes whose `datacontenttype`
//! is JSON (`application/json`, `text/json`, `*+json`) or absent. A key that is
//! all digits also indexes an array (`data.items.0.sku`); other keys with
//! characters beyond letters, digits and `_` are quoted (`data."content-type"`).
//! `data.` is case-insensitive, the keys after it are not.
//!
//! JSON maps to CESQL types as follows:
//! - a string is a String, a boolean a Boolean;
//! - a number is an Integer when it is a whole number within 32 bits (`5`,
//!   `5.0`), and otherwise the String JSON writes for it (`1.5`, `3000000000`),
//!   following the specification's rule that values outside the type system are
//!   strings: `data.price = '1.5'` is true, and `data.price > 1` is a cast error;
//! - an object or array is a String of compact JSON (`EXISTS data.order` works;
//!   `data.tags LIKE '%"urgent"%'` too, if crudely);
//! - `null` counts as missing.
//!
//! A field that is absent or null, a payload that is not JSON, and an event with
//! no payload all behave like a missing attribute: a `missingAttribute` error,
//! and `EXISTS data.x` is false. `data` alone, without a dot, is an ordinary
//! attribute name, which no event has.

mod access;
mod ast;
mod error;
mod eval;
mod functions;
mod lexer;
mod like;
mod parser;
mod value;

#[cfg(test)]
mod tests;

use std::fmt;

pub use error::{ErrorKind, EvalError, ParseError};
pub use value::Value;

use crate::event::Event;
use access::Payload;
use ast::Node;
use error::Errors;
use eval::{eval, Env};
use value::Val;

/// A compiled CESQL expression. Cheap to share: evaluation takes `&self`.
#[derive(Debug, Clone)]
pub struct Expression {
    root: Node,
    source: String,
}

impl Expression {
    /// Parse; on failure the error says what and where (the column) in words a
    /// user can act on.
    pub fn parse(text: &str) -> Result<Expression, ParseError> {
        Ok(Expression {
            root: parser::parse(text)?,
            source: text.to_owned(),
        })
    }

    /// Evaluate: the value and the first error raised, if any (spec semantics:
    /// with an error, the value is the zero value the failing operation returned).
    pub fn evaluate(&self, event: &Event) -> (Value, Option<EvalError>) {
        let payload = Payload::new(event);
        let env = Env {
            event,
            payload: &payload,
        };
        let mut errors = Errors::default();
        let value = match eval(&self.root, &env, &mut errors) {
            Ok(v) | Err(v) => v.into_value(),
        };
        (value, errors.into_first())
    }

    /// Filter semantics: true only when the result is Boolean(true) and no error
    /// was raised.
    pub fn matches(&self, event: &Event) -> bool {
        let payload = Payload::new(event);
        let env = Env {
            event,
            payload: &payload,
        };
        let mut errors = Errors::quiet();
        let outcome = eval(&self.root, &env, &mut errors);
        matches!(outcome, Ok(Val::Bool(true))) && errors.count() == 0
    }

    /// The expression as it was written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}
