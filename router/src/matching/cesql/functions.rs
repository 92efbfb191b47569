//! The built-in functions. Names are case-insensitive; a call is bound to its
//! built-in by name and number of arguments when the expression is compiled.
//!
//! String functions count characters, not bytes. `INT`, `BOOL` and `STRING` are
//! the explicit casts (the only way to turn an Integer into a Boolean).
//! `IS_INT(x)` and `IS_BOOL(x)` take a String, as the casting functions of the
//! draft specification did: whether `x` as a string casts to Integer / Boolean,
//! so `IS_INT(5)` is true and `IS_BOOL(1)` is false.

use std::borrow::Cow;

use super::ast::Node;
use super::error::{ErrorKind, Errors};
use super::eval::{eval, finish, Env, Outcome};
use super::value::{parse_bool, parse_int, Type, Val};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    Abs,
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    Int,
    Bool,
    String,
    IsBool,
    IsInt,
}

impl Builtin {
    /// The built-in with this name taking `arity` arguments.
    pub(crate) fn resolve(name: &str, arity: usize) -> Option<Builtin> {
        use Builtin::*;
        let upper = name.to_ascii_uppercase();
        let (function, fits) = match upper.as_str() {
            "ABS" => (Abs, arity == 1),
            "LENGTH" => (Length, arity == 1),
            "CONCAT" => (Concat, true),
            "CONCAT_WS" => (ConcatWs, arity >= 1),
            "LOWER" => (Lower, arity == 1),
            "UPPER" => (Upper, arity == 1),
            "TRIM" => (Trim, arity == 1),
            "LEFT" => (Left, arity == 2),
            "RIGHT" => (Right, arity == 2),
            "SUBSTRING" => (Substring, arity == 2 || arity == 3),
            "INT" => (Int, arity == 1),
            "BOOL" => (Bool, arity == 1),
            "STRING" => (String, arity == 1),
            "IS_BOOL" => (IsBool, arity == 1),
            "IS_INT" => (IsInt, arity == 1),
            _ => return None,
        };
        fits.then_some(function)
    }

    pub(crate) fn result_type(self) -> Type {
        use Builtin::*;
        match self {
            Abs | Length | Int => Type::Integer,
            Concat | ConcatWs | Lower | Upper | Trim | Left | Right | Substring | String => {
                Type::String
            }
            Bool | IsBool | IsInt => Type::Boolean,
        }
    }
}

/// Call a built-in. Arguments are evaluated left to right; if one raises an
/// error the call returns its zero value without running.
pub(crate) fn call<'a>(
    function: Builtin,
    args: &'a [Node],
    env: &Env<'a>,
    errors: &mut Errors,
) -> Outcome<'a> {
    use Builtin::*;
    let zero = function.result_type().zero();
    macro_rules! arg {
        ($node:expr) => {
            match eval($node, env, errors) {
                Ok(v) => v,
                Err(_) => return Err(zero),
            }
        };
    }
    if matches!(function, Concat | ConcatWs) {
        let (separator, items) = match (function, args) {
            (ConcatWs, [separator, items @ ..]) => (Some(arg!(separator).into_text()), items),
            _ => (None, args),
        };
        let mut out = std::string::String::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(separator.as_deref().unwrap_or(""));
            }
            out.push_str(&arg!(item).into_text());
        }
        return Ok(Val::Str(Cow::Owned(out)));
    }
    let before = errors.count();
    let value = match (function, args) {
        (Abs, [x]) => {
            let x = arg!(x).to_int(errors);
            Val::Int(x.checked_abs().unwrap_or_else(|| {
                errors.raise(ErrorKind::Math, || format!("ABS({x}) overflows 32 bits"));
                i32::MAX
            }))
        }
        (Length, [x]) => {
            let count = arg!(x).into_text().chars().count();
            Val::Int(i32::try_from(count).unwrap_or(i32::MAX))
        }
        (Lower, [x]) => Val::Str(Cow::Owned(arg!(x).into_text().to_lowercase())),
        (Upper, [x]) => Val::Str(Cow::Owned(arg!(x).into_text().to_uppercase())),
        (Trim, [x]) => Val::Str(trim(arg!(x).into_text())),
        (Left | Right, [x, n]) => {
            let text = arg!(x).into_text();
            let n = arg!(n).to_int(errors);
            Val::Str(left_right(function == Left, text, n, errors))
        }
        (Substring, [x, pos, rest @ ..]) => {
            let text = arg!(x).into_text();
            let pos = arg!(pos).to_int(errors);
            let len = match rest {
                [len] => Some(arg!(len).to_int(errors)),
                _ => None,
            };
            Val::Str(substring(text, pos, len, errors))
        }
        (Int, [x]) => {
            let x = arg!(x);
            match x.cast(Type::Integer, true) {
                Some(v) => v,
                None => {
                    errors.raise(ErrorKind::Cast, || x.cast_failure(Type::Integer));
                    zero
                }
            }
        }
        (Bool, [x]) => {
            let x = arg!(x);
            match x.cast(Type::Boolean, true) {
                Some(v) => v,
                None => {
                    errors.raise(ErrorKind::Cast, || x.cast_failure(Type::Boolean));
                    zero
                }
            }
        }
        (String, [x]) => Val::Str(arg!(x).into_text()),
        (IsBool, [x]) => Val::Bool(parse_bool(&arg!(x).into_text()).is_some()),
        (IsInt, [x]) => Val::Bool(parse_int(&arg!(x).into_text()).is_some()),
        _ => {
            // `resolve` only binds calls with the right number of arguments.
            errors.raise(ErrorKind::MissingFunction, || {
                format!("{function:?} does not take {} arguments", args.len())
            });
            return Err(Val::Bool(false));
        }
    };
    finish(errors, before, value)
}

fn trim(text: Cow<'_, str>) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    }
}

/// `text[start..end]`, borrowing when `text` is borrowed.
fn slice(text: Cow<'_, str>, start: usize, end: usize) -> Cow<'_, str> {
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.get(start..end).unwrap_or("")),
        Cow::Owned(s) => Cow::Owned(s.get(start..end).unwrap_or("").to_owned()),
    }
}

/// Byte offset of the character at `index` (0-based), or the length past the end.
fn char_offset(text: &str, index: usize) -> usize {
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(i, _)| i)
}

/// LEFT(x, n) / RIGHT(x, n): the first / last `n` characters; `x` and an error
/// when `n` is negative.
fn left_right<'a>(left: bool, text: Cow<'a, str>, n: i32, errors: &mut Errors) -> Cow<'a, str> {
    let Ok(n) = usize::try_from(n) else {
        let name = if left { "LEFT" } else { "RIGHT" };
        errors.raise(ErrorKind::FunctionEvaluation, || {
            format!("{name}: the length must not be negative, got {n}")
        });
        return text;
    };
    let len = text.chars().count();
    if n >= len {
        return text;
    }
    let (start, end) = if left {
        (0, char_offset(&text, n))
    } else {
        (char_offset(&text, len - n), text.len())
    };
    slice(text, start, end)
}

/// SUBSTRING(x, pos[, len]): characters from `pos` (1-based; negative counts from
/// the end; 0 gives the empty string), `len` of them or to the end.
fn substring<'a>(
    text: Cow<'a, str>,
    pos: i32,
    len: Option<i32>,
    errors: &mut Errors,
) -> Cow<'a, str> {
    let count = i64::try_from(text.chars().count()).unwrap_or(i64::MAX);
    let pos = i64::from(pos);
    if pos > count || pos < -count {
        errors.raise(ErrorKind::FunctionEvaluation, || {
            format!("SUBSTRING: position {pos} is outside a string of {count} characters")
        });
        return Cow::Borrowed("");
    }
    if let Some(len) = len.filter(|l| *l < 0) {
        errors.raise(ErrorKind::FunctionEvaluation, || {
            format!("SUBSTRING: the length must not be negative, got {len}")
        });
        return Cow::Borrowed("");
    }
    if pos == 0 {
        return Cow::Borrowed("");
    }
    let first = if pos > 0 { pos - 1 } else { count + pos };
    let last = match len {
        Some(len) => (first + i64::from(len)).min(count),
        None => count,
    };
    // 0 <= first <= last <= count, all within usize because they count characters.
    let to_usize = |i: i64| usize::try_from(i).unwrap_or(0);
    let start = char_offset(&text, to_usize(first));
    let end = char_offset(&text, to_usize(last));
    slice(text, start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(text: &str, pos: i32, len: Option<i32>) -> (String, u32) {
        let mut errors = Errors::default();
        let out = substring(Cow::Borrowed(text), pos, len, &mut errors).into_owned();
        (out, errors.count())
    }

    #[test]
    fn substring_counts_characters() {
        assert_eq!(sub("héllo", 2, Some(3)), ("éll".into(), 0));
        assert_eq!(sub("héllo", -2, None), ("lo".into(), 0));
        assert_eq!(sub("héllo", 5, Some(100)), ("o".into(), 0));
        assert_eq!(sub("", 0, None), ("".into(), 0));
        assert_eq!(sub("abc", 1, Some(-1)), ("".into(), 1));
        assert_eq!(sub("abc", i32::MIN, Some(i32::MAX)), ("".into(), 1));
        assert_eq!(sub("abc", 1, Some(i32::MAX)), ("abc".into(), 0));
    }

    #[test]
    fn left_and_right() {
        let mut errors = Errors::default();
        let mut lr = |left, text, n| left_right(left, Cow::Borrowed(text), n, &mut errors);
        assert_eq!(lr(true, "héllo", 2), "hé");
        assert_eq!(lr(false, "héllo", 4), "éllo");
        assert_eq!(lr(false, "abc", 0), "");
        assert_eq!(lr(true, "abc", -1), "abc");
        assert_eq!(errors.count(), 1);
    }

    #[test]
    fn resolves_by_name_and_arity() {
        assert_eq!(Builtin::resolve("substring", 3), Some(Builtin::Substring));
        assert_eq!(Builtin::resolve("Concat", 0), Some(Builtin::Concat));
        assert_eq!(Builtin::resolve("CONCAT_WS", 0), None);
        assert_eq!(Builtin::resolve("LEFT", 1), None);
        assert_eq!(Builtin::resolve("NOPE", 1), None);
    }
}
