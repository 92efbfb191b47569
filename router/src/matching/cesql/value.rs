//! The three CESQL types and the casts between them.
//!
//! [`Value`] is what an evaluation returns; [`Val`] is the working value during an
//! evaluation, which borrows strings from the event and the expression instead of
//! copying them.

use std::borrow::Cow;
use std::fmt;

use super::error::{ErrorKind, Errors};

/// The result of evaluating an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Integer(i32),
    String(String),
    Boolean(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integer(i) => write!(f, "{i}"),
            Value::String(s) => f.write_str(s),
            Value::Boolean(b) => write!(f, "{b}"),
        }
    }
}

/// A CESQL type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Type {
    Integer,
    String,
    Boolean,
}

impl Type {
    /// The zero value that an operator or function returns along with an error.
    pub(crate) fn zero(self) -> Val<'static> {
        match self {
            Type::Integer => Val::Int(0),
            Type::String => Val::Str(Cow::Borrowed("")),
            Type::Boolean => Val::Bool(false),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Type::Integer => "an integer",
            Type::String => "a string",
            Type::Boolean => "a boolean",
        }
    }
}

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    Int(i32),
    Str(Cow<'a, str>),
    Bool(bool),
}

impl<'a> Val<'a> {
    pub(crate) fn ty(&self) -> Type {
        match self {
            Val::Int(_) => Type::Integer,
            Val::Str(_) => Type::String,
            Val::Bool(_) => Type::Boolean,
        }
    }

    pub(crate) fn into_value(self) -> Value {
        match self {
            Val::Int(i) => Value::Integer(i),
            Val::Str(s) => Value::String(s.into_owned()),
            Val::Bool(b) => Value::Boolean(b),
        }
    }

    /// Cast to String; defined for every value.
    pub(crate) fn into_text(self) -> Cow<'a, str> {
        match self {
            Val::Str(s) => s,
            Val::Int(i) => Cow::Owned(i.to_string()),
            Val::Bool(b) => Cow::Borrowed(if b { "true" } else { "false" }),
        }
    }

    /// Implicit cast to Integer. A failed cast raises a cast error and yields 0.
    pub(crate) fn to_int(&self, errors: &mut Errors) -> i32 {
        match self.cast(Type::Integer, false) {
            Some(Val::Int(i)) => i,
            _ => {
                errors.raise(ErrorKind::Cast, || self.cast_failure(Type::Integer));
                0
            }
        }
    }

    /// Implicit cast to Boolean. A failed cast raises a cast error and yields false.
    pub(crate) fn to_bool(&self, errors: &mut Errors) -> bool {
        match self.cast(Type::Boolean, false) {
            Some(Val::Bool(b)) => b,
            _ => {
                errors.raise(ErrorKind::Cast, || self.cast_failure(Type::Boolean));
                false
            }
        }
    }

    /// Cast to `target`, or `None` when the value has no representation there.
    ///
    /// `explicit` is true for the casting functions (`INT`, `BOOL`, `STRING`). The
    /// one difference: Integer -> Boolean (0 is false, anything else true) is only
    /// done explicitly, by `BOOL(x)`. Implicitly, as in `NOT 10`, it is a cast error,
    /// as the conformance suite requires.
    pub(crate) fn cast(&self, target: Type, explicit: bool) -> Option<Val<'a>> {
        match (self, target) {
            (Val::Int(i), Type::Integer) => Some(Val::Int(*i)),
            (Val::Bool(b), Type::Boolean) => Some(Val::Bool(*b)),
            (Val::Str(s), Type::String) => Some(Val::Str(s.clone())),
            (_, Type::String) => Some(Val::Str(self.clone().into_text())),
            (Val::Bool(b), Type::Integer) => Some(Val::Int(i32::from(*b))),
            (Val::Str(s), Type::Integer) => parse_int(s).map(Val::Int),
            (Val::Str(s), Type::Boolean) => parse_bool(s).map(Val::Bool),
            (Val::Int(i), Type::Boolean) => explicit.then_some(Val::Bool(*i != 0)),
        }
    }

    /// `self = other` with `self` cast to the type of `other` (how `=` and `IN`
    /// compare); `None` when that cast fails.
    pub(crate) fn equals(&self, other: &Val<'_>) -> Option<bool> {
        if self.ty() == other.ty() {
            return Some(self.same(other));
        }
        self.cast(other.ty(), false).map(|cast| cast.same(other))
    }

    /// Equality after both sides have the same type.
    pub(crate) fn same(&self, other: &Val<'_>) -> bool {
        match (self, other) {
            (Val::Int(a), Val::Int(b)) => a == b,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Str(a), Val::Str(b)) => a == b,
            _ => false,
        }
    }

    pub(crate) fn cast_failure(&self, target: Type) -> String {
        match self {
            Val::Str(s) => format!("cannot cast the string {:?} to {}", s, target.name()),
            Val::Int(i) => format!(
                "cannot implicitly cast the integer {i} to {}; use BOOL(x)",
                target.name()
            ),
            Val::Bool(b) => format!("cannot cast the boolean {b} to {}", target.name()),
        }
    }
}

/// String -> Integer: base 10, an optional leading `+` or `-`, within 32 bits.
pub(crate) fn parse_int(s: &str) -> Option<i32> {
    s.parse().ok()
}

/// String -> Boolean: `true` or `false` in any case.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Val<'_> {
        Val::Str(Cow::Borrowed(text))
    }

    #[test]
    fn cast_table() {
        assert!(s("+12")
            .cast(Type::Integer, false)
            .unwrap()
            .same(&Val::Int(12)));
        assert!(s("-2147483648")
            .cast(Type::Integer, false)
            .unwrap()
            .same(&Val::Int(i32::MIN)));
        assert!(s("2147483648").cast(Type::Integer, false).is_none());
        assert!(s(" 1").cast(Type::Integer, false).is_none());
        assert!(s("TrUe")
            .cast(Type::Boolean, false)
            .unwrap()
            .same(&Val::Bool(true)));
        assert!(s("yes").cast(Type::Boolean, true).is_none());
        assert!(Val::Bool(true)
            .cast(Type::Integer, false)
            .unwrap()
            .same(&Val::Int(1)));
        assert!(Val::Int(-7)
            .cast(Type::String, false)
            .unwrap()
            .same(&s("-7")));
        assert!(Val::Bool(false)
            .cast(Type::String, false)
            .unwrap()
            .same(&s("false")));
        assert!(Val::Int(3).cast(Type::Boolean, false).is_none());
        assert!(Val::Int(3)
            .cast(Type::Boolean, true)
            .unwrap()
            .same(&Val::Bool(true)));
        assert!(Val::Int(0)
            .cast(Type::Boolean, true)
            .unwrap()
            .same(&Val::Bool(false)));
    }

    #[test]
    fn failed_implicit_casts_raise_and_yield_zero() {
        let mut errors = Errors::default();
        assert_eq!(s("abc").to_int(&mut errors), 0);
        assert!(!Val::Int(10).to_bool(&mut errors));
        assert_eq!(errors.count(), 2);
        let first = errors.into_first().unwrap();
        assert_eq!(first.kind, ErrorKind::Cast);
        assert!(first.message.contains("\"abc\""), "{}", first.message);
    }

    #[test]
    fn values_display_plainly() {
        assert_eq!(Value::String("a b".into()).to_string(), "a b");
        assert_eq!(Value::Integer(-3).to_string(), "-3");
        assert_eq!(Value::Boolean(true).to_string(), "true");
    }
}
