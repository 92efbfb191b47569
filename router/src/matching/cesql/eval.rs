//! Evaluation of a compiled expression against one event.
//!
//! Every node yields a value; errors are recorded in [`Errors`] as they are
//! raised. A node returns `Err(value)` when it or any subexpression it evaluated
//! raised an error, `Ok(value)` otherwise. The rules, chosen to follow the
//! specification and its conformance suite:
//!
//! - An operator or function whose operand raised an error does not compute: it
//!   returns the zero value of its result type (`false`, `0`, `""`). So
//!   `missing * 5` is `0`, `1 / missing` is `0` (not a math error), and
//!   `true AND (1 != 1 / 0)` is `false`.
//! - An operand that does not cast to the type an operator needs raises a cast
//!   error and takes that type's zero value, and the operator goes on: `NOT 10`
//!   is `true` with a cast error. `=`, `!=`, `<>` and `IN` cast the left operand to
//!   the right one's type (`IN`: each element to the left operand's type); a
//!   failed cast there makes the comparison false.
//! - `AND` and `OR` short-circuit; an unevaluated operand raises nothing.
//! - Integer overflow (`2147483647 + 1`, `-(-2147483648)`, `ABS(-2147483648)`)
//!   raises a math error and saturates to the nearest 32-bit value.

use std::borrow::Cow;

use super::access::Payload;
use super::ast::{BinOp, Node, Target};
use super::error::{ErrorKind, Errors};
use super::functions;
use super::value::{Type, Val};
use crate::event::Event;

/// A node's value; `Err` when it raised an error (see the module doc).
pub(crate) type Outcome<'a> = Result<Val<'a>, Val<'a>>;

/// What an evaluation reads from.
pub(crate) struct Env<'a> {
    pub event: &'a Event,
    pub payload: &'a Payload<'a>,
}

/// `value`, as `Err` if errors were raised since `before`.
pub(crate) fn finish<'a>(errors: &Errors, before: u32, value: Val<'a>) -> Outcome<'a> {
    if errors.count() > before {
        Err(value)
    } else {
        Ok(value)
    }
}

pub(crate) fn eval<'a>(node: &'a Node, env: &Env<'a>, errors: &mut Errors) -> Outcome<'a> {
    // The value of an operand, or the zero value of `$ty` if it raised an error.
    macro_rules! operand {
        ($node:expr, $ty:expr) => {
            match eval($node, env, errors) {
                Ok(v) => v,
                Err(_) => return Err($ty.zero()),
            }
        };
    }
    match node {
        Node::Int(i) => Ok(Val::Int(*i)),
        Node::Str(s) => Ok(Val::Str(Cow::Borrowed(s))),
        Node::Bool(b) => Ok(Val::Bool(*b)),
        Node::Attr(attr) => attr.read(env.event).ok_or_else(|| {
            errors.raise(ErrorKind::MissingAttribute, || {
                format!("the event has no attribute `{}`", attr.name())
            });
            Val::Bool(false)
        }),
        Node::Data(path) => path.read(env.payload).map_err(|why| {
            errors.raise(ErrorKind::MissingAttribute, || why.describe(path));
            Val::Bool(false)
        }),
        Node::Exists(Target::Attr(attr)) => Ok(Val::Bool(attr.exists(env.event))),
        Node::Exists(Target::Data(path)) => Ok(Val::Bool(path.exists(env.payload))),
        Node::Not(x) => {
            let x = operand!(x, Type::Boolean);
            let before = errors.count();
            let b = x.to_bool(errors);
            finish(errors, before, Val::Bool(!b))
        }
        Node::Negate(x) => {
            let x = operand!(x, Type::Integer);
            let before = errors.count();
            let i = x.to_int(errors);
            let negated = i.checked_neg().unwrap_or_else(|| {
                errors.raise(ErrorKind::Math, || format!("-({i}) overflows 32 bits"));
                i32::MAX
            });
            finish(errors, before, Val::Int(negated))
        }
        Node::Chain { first, rest } => {
            let mut acc = eval(first, env, errors);
            for (op, right) in rest {
                acc = step(*op, acc, right, env, errors);
            }
            acc
        }
        Node::Like {
            operand,
            pattern,
            negated,
        } => {
            let text = operand!(operand, Type::Boolean).into_text();
            Ok(Val::Bool(pattern.matches(&text) != *negated))
        }
        Node::In {
            operand,
            set,
            negated,
        } => {
            let x = operand!(operand, Type::Boolean);
            let target = x.ty();
            let before = errors.count();
            let mut found = false;
            for item in set {
                let item = operand!(item, Type::Boolean);
                match item.equals(&x) {
                    Some(true) => {
                        found = true;
                        break;
                    }
                    Some(false) => {}
                    None => errors.raise(ErrorKind::Cast, || item.cast_failure(target)),
                }
            }
            finish(errors, before, Val::Bool(found != *negated))
        }
        Node::Call { function, args } => functions::call(*function, args, env, errors),
        Node::MissingFunction { name, arity } => {
            errors.raise(ErrorKind::MissingFunction, || {
                let s = if *arity == 1 { "" } else { "s" };
                format!("there is no function {name} taking {arity} argument{s}")
            });
            Err(Val::Bool(false))
        }
    }
}

/// `left op right`, where `left` is already evaluated.
fn step<'a>(
    op: BinOp,
    left: Outcome<'a>,
    right: &'a Node,
    env: &Env<'a>,
    errors: &mut Errors,
) -> Outcome<'a> {
    let zero = op.result_type().zero();
    let Ok(left) = left else {
        return Err(zero);
    };
    let before = errors.count();
    macro_rules! right {
        () => {
            match eval(right, env, errors) {
                Ok(v) => v,
                Err(_) => return Err(zero),
            }
        };
    }
    let value = match op {
        BinOp::And | BinOp::Or => {
            let l = left.to_bool(errors);
            // AND stops at false, OR at true.
            if l == (op == BinOp::Or) {
                Val::Bool(l)
            } else {
                Val::Bool(right!().to_bool(errors))
            }
        }
        BinOp::Xor => {
            let r = right!();
            Val::Bool(left.to_bool(errors) != r.to_bool(errors))
        }
        BinOp::Eq | BinOp::NotEq => {
            let r = right!();
            match left.equals(&r) {
                Some(equal) => Val::Bool(equal == (op == BinOp::Eq)),
                None => {
                    errors.raise(ErrorKind::Cast, || left.cast_failure(r.ty()));
                    return Err(Val::Bool(false));
                }
            }
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let r = right!();
            let (a, b) = (left.to_int(errors), r.to_int(errors));
            Val::Bool(match op {
                BinOp::Lt => a < b,
                BinOp::Le => a <= b,
                BinOp::Gt => a > b,
                _ => a >= b,
            })
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
            let r = right!();
            let (a, b) = (left.to_int(errors), r.to_int(errors));
            Val::Int(arithmetic(op, a, b, errors))
        }
    };
    finish(errors, before, value)
}

/// 32-bit arithmetic: division truncates toward zero and the remainder takes the
/// dividend's sign; `/ 0` and `% 0` give 0 and overflow saturates, both with a
/// math error.
fn arithmetic(op: BinOp, a: i32, b: i32, errors: &mut Errors) -> i32 {
    if matches!(op, BinOp::Div | BinOp::Rem) && b == 0 {
        errors.raise(ErrorKind::Math, || {
            format!("{a} {} 0: division by zero", op.symbol())
        });
        return 0;
    }
    let (wide_a, wide_b) = (i64::from(a), i64::from(b));
    let wide = match op {
        BinOp::Add => wide_a + wide_b,
        BinOp::Sub => wide_a - wide_b,
        BinOp::Mul => wide_a * wide_b,
        BinOp::Div => wide_a / wide_b,
        _ => wide_a % wide_b,
    };
    i32::try_from(wide).unwrap_or_else(|_| {
        errors.raise(ErrorKind::Math, || {
            format!("{a} {} {b} overflows 32 bits", op.symbol())
        });
        if wide < 0 {
            i32::MIN
        } else {
            i32::MAX
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arith(op: BinOp, a: i32, b: i32) -> (i32, u32) {
        let mut errors = Errors::default();
        let value = arithmetic(op, a, b, &mut errors);
        (value, errors.count())
    }

    #[test]
    fn truncated_division_and_overflow() {
        assert_eq!(arith(BinOp::Div, -7, 2), (-3, 0));
        assert_eq!(arith(BinOp::Rem, -7, 2), (-1, 0));
        assert_eq!(arith(BinOp::Rem, 7, -2), (1, 0));
        assert_eq!(arith(BinOp::Rem, i32::MIN, -1), (0, 0));
        assert_eq!(arith(BinOp::Div, i32::MIN, -1), (i32::MAX, 1));
        assert_eq!(arith(BinOp::Add, i32::MAX, 1), (i32::MAX, 1));
        assert_eq!(arith(BinOp::Sub, i32::MIN, 1), (i32::MIN, 1));
        assert_eq!(arith(BinOp::Mul, 65536, -65536), (i32::MIN, 1));
        assert_eq!(arith(BinOp::Rem, 1, 0), (0, 1));
    }
}
