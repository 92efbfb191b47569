//! The compiled form of an expression: names resolved, LIKE patterns compiled,
//! function calls bound to their built-in, so evaluation does no lookups by name
//! except for extension attributes and payload fields.

use super::access::{Attr, DataPath};
use super::functions::Builtin;
use super::like::Pattern;
use super::value::Type;

#[derive(Debug, Clone)]
pub(crate) enum Node {
    Int(i32),
    Str(String),
    Bool(bool),
    Attr(Attr),
    Data(DataPath),
    Exists(Target),
    Not(Box<Node>),
    Negate(Box<Node>),
    /// `first op1 x1 op2 x2 ...`, all operators of one precedence level, evaluated
    /// left to right as `((first op1 x1) op2 x2) ...`. Keeping a chain flat keeps
    /// long `OR` lists and sums shallow.
    Chain {
        first: Box<Node>,
        rest: Vec<(BinOp, Node)>,
    },
    Like {
        operand: Box<Node>,
        pattern: Pattern,
        negated: bool,
    },
    In {
        operand: Box<Node>,
        set: Vec<Node>,
        negated: bool,
    },
    Call {
        function: Builtin,
        args: Vec<Node>,
    },
    /// A call that matches no built-in: evaluates to false with a missing function
    /// error, as the specification requires (not a parse error).
    MissingFunction {
        name: String,
        arity: usize,
    },
}

/// What `EXISTS` checks.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Attr(Attr),
    Data(DataPath),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
}

impl BinOp {
    pub(crate) fn result_type(self) -> Type {
        match self {
            BinOp::Mul | BinOp::Div | BinOp::Rem | BinOp::Add | BinOp::Sub => Type::Integer,
            _ => Type::Boolean,
        }
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Eq => "=",
            BinOp::NotEq => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::And => "AND",
            BinOp::Or => "OR",
            BinOp::Xor => "XOR",
        }
    }
}
