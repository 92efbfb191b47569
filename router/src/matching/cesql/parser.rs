//! A recursive-descent parser with precedence levels, from the specification
//! (section 3.6), tightest first:
//!
//! 1. literals, attributes, `data.` paths, function calls, `EXISTS x`, `( ... )`
//! 2. unary `NOT`, unary `-`
//! 3. postfix `[NOT] LIKE 'pattern'`, `[NOT] IN (a, b, ...)`
//! 4. `*` `/` `%`
//! 5. `+` `-`
//! 6. `=` `!=` `<>` `<` `<=` `>` `>=`
//! 7. `AND` `OR` `XOR`, all one level, left to right
//!
//! So `a OR b AND c` is `(a OR b) AND c`, and `NOT a = b` is `(NOT a) = b`:
//! parenthesize when mixing. Nesting is bounded (see [`MAX_DEPTH`]) so that no
//! input can exhaust the stack while parsing, evaluating or dropping.

use super::access::{Attr, DataPath};
use super::ast::{BinOp, Node, Target};
use super::error::ParseError;
use super::functions::Builtin;
use super::lexer::{tokenize, Tok, Token};
use super::like::Pattern;

/// The deepest nesting accepted, in parentheses, calls, unary operators and
/// operator levels alike.
pub(crate) const MAX_DEPTH: usize = 64;

const KEYWORDS: [&str; 9] = [
    "AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE",
];

/// A node and its height (the longest path to a leaf).
type Parsed = (Node, usize);

pub(crate) fn parse(source: &str) -> Result<Node, ParseError> {
    let mut parser = Parser {
        source,
        tokens: tokenize(source)?,
        pos: 0,
        depth: 0,
        end: Tok::End,
    };
    let (node, _) = parser.expression()?;
    if *parser.peek() != Tok::End {
        let hint = if parser.peek_word("NOT") {
            "; NOT after a value must be followed by LIKE or IN"
        } else {
            ""
        };
        return Err(parser.error(format!(
            "unexpected {}: expected an operator or the end of the expression{hint}",
            parser.peek().describe()
        )));
    }
    Ok(node)
}

#[derive(Clone, Copy)]
enum Level {
    Logic,
    Comparison,
    Additive,
    Multiplicative,
}

struct Parser<'s> {
    source: &'s str,
    tokens: Vec<Token<'s>>,
    pos: usize,
    depth: usize,
    end: Tok<'s>,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Tok<'s> {
        self.tokens.get(self.pos).map_or(&self.end, |t| &t.tok)
    }

    fn peek_at(&self, ahead: usize) -> &Tok<'s> {
        self.tokens
            .get(self.pos + ahead)
            .map_or(&self.end, |t| &t.tok)
    }

    fn peek_word(&self, keyword: &str) -> bool {
        self.word_at(0, keyword)
    }

    /// Whether the token `ahead` of the next one is the keyword.
    fn word_at(&self, ahead: usize, keyword: &str) -> bool {
        matches!(self.peek_at(ahead), Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    /// Byte offset of the next token.
    fn offset(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map_or(self.source.len(), |t| t.at)
    }

    /// Take the next token (the end token repeats forever).
    fn bump(&mut self) -> Tok<'s> {
        match self.tokens.get_mut(self.pos) {
            Some(token) if token.tok != Tok::End => {
                self.pos += 1;
                std::mem::replace(&mut token.tok, Tok::End)
            }
            _ => Tok::End,
        }
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        self.error_at(self.offset(), message)
    }

    fn error_at(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.source, at, message)
    }

    fn too_deep(&self, at: usize) -> ParseError {
        self.error_at(
            at,
            format!("the expression nests more than {MAX_DEPTH} levels deep; simplify it"),
        )
    }

    /// Go one level deeper into the parser's recursion.
    fn enter(&mut self, at: usize) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    /// The height of a new node whose tallest child is `child` high.
    fn grow(&self, child: usize, at: usize) -> Result<usize, ParseError> {
        if child >= MAX_DEPTH {
            return Err(self.too_deep(at));
        }
        Ok(child + 1)
    }

    fn expect(&mut self, tok: Tok<'s>, context: impl FnOnce() -> String) -> Result<(), ParseError> {
        if *self.peek() == tok {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!(
                "expected {} {}, found {}",
                tok.describe(),
                context(),
                self.peek().describe()
            )))
        }
    }

    fn expression(&mut self) -> Result<Parsed, ParseError> {
        self.chain(Level::Logic)
    }

    fn operand(&mut self, level: Level) -> Result<Parsed, ParseError> {
        match level {
            Level::Logic => self.chain(Level::Comparison),
            Level::Comparison => self.chain(Level::Additive),
            Level::Additive => self.chain(Level::Multiplicative),
            Level::Multiplicative => self.postfix(),
        }
    }

    fn operator(&self, level: Level) -> Option<BinOp> {
        let tok = self.peek();
        Some(match (level, tok) {
            (Level::Logic, Tok::Word(w)) if w.eq_ignore_ascii_case("AND") => BinOp::And,
            (Level::Logic, Tok::Word(w)) if w.eq_ignore_ascii_case("OR") => BinOp::Or,
            (Level::Logic, Tok::Word(w)) if w.eq_ignore_ascii_case("XOR") => BinOp::Xor,
            (Level::Comparison, Tok::Eq) => BinOp::Eq,
            (Level::Comparison, Tok::NotEq) => BinOp::NotEq,
            (Level::Comparison, Tok::Lt) => BinOp::Lt,
            (Level::Comparison, Tok::Le) => BinOp::Le,
            (Level::Comparison, Tok::Gt) => BinOp::Gt,
            (Level::Comparison, Tok::Ge) => BinOp::Ge,
            (Level::Additive, Tok::Plus) => BinOp::Add,
            (Level::Additive, Tok::Minus) => BinOp::Sub,
            (Level::Multiplicative, Tok::Star) => BinOp::Mul,
            (Level::Multiplicative, Tok::Slash) => BinOp::Div,
            (Level::Multiplicative, Tok::Percent) => BinOp::Rem,
            _ => return None,
        })
    }

    /// Operands joined by the operators of one level, kept flat.
    fn chain(&mut self, level: Level) -> Result<Parsed, ParseError> {
        let at = self.offset();
        let (first, mut height) = self.operand(level)?;
        let mut rest = Vec::new();
        while let Some(op) = self.operator(level) {
            self.bump();
            let (right, h) = self.operand(level)?;
            height = height.max(h);
            rest.push((op, right));
        }
        if rest.is_empty() {
            return Ok((first, height));
        }
        let height = self.grow(height, at)?;
        let first = Box::new(first);
        Ok((Node::Chain { first, rest }, height))
    }

    /// `x [NOT] LIKE 'p'` and `x [NOT] IN (...)`, any number of times.
    fn postfix(&mut self) -> Result<Parsed, ParseError> {
        let at = self.offset();
        let (mut node, mut height) = self.unary()?;
        loop {
            let negated =
                self.word_at(0, "NOT") && (self.word_at(1, "LIKE") || self.word_at(1, "IN"));
            if negated {
                self.bump();
            }
            let operand = Box::new(node);
            if self.word_at(0, "LIKE") {
                self.bump();
                let pattern_at = self.offset();
                let pattern = match self.bump() {
                    Tok::Str(p) => Pattern::compile(&p),
                    other => {
                        let message = format!(
                            "LIKE needs a string literal pattern, as in x LIKE 'abc%', found {}",
                            other.describe()
                        );
                        return Err(self.error_at(pattern_at, message));
                    }
                };
                node = Node::Like {
                    operand,
                    pattern,
                    negated,
                };
            } else if self.word_at(0, "IN") {
                self.bump();
                let (set, h) = self.set()?;
                height = height.max(h);
                node = Node::In {
                    operand,
                    set,
                    negated,
                };
            } else {
                return Ok((*operand, height));
            }
            height = self.grow(height, at)?;
        }
    }

    /// `(a, b, ...)` after IN: at least one element.
    fn set(&mut self) -> Result<(Vec<Node>, usize), ParseError> {
        let at = self.offset();
        self.expect(Tok::LParen, || "after IN, as in x IN ('a', 'b')".into())?;
        self.enter(at)?;
        let mut items = Vec::new();
        let mut height = 0;
        loop {
            let (item, h) = self.expression()?;
            items.push(item);
            height = height.max(h);
            match self.peek() {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RParen => {
                    self.bump();
                    break;
                }
                other => {
                    return Err(self.error(format!(
                        "expected ',' or ')' in the IN list, found {}",
                        other.describe()
                    )))
                }
            }
        }
        self.leave();
        Ok((items, height))
    }

    fn unary(&mut self) -> Result<Parsed, ParseError> {
        let at = self.offset();
        match self.peek() {
            Tok::Word(w) if w.eq_ignore_ascii_case("NOT") => {
                self.bump();
                self.enter(at)?;
                let (x, h) = self.unary()?;
                self.leave();
                Ok((Node::Not(Box::new(x)), self.grow(h, at)?))
            }
            Tok::Minus => {
                self.bump();
                if let Tok::Int(digits) = *self.peek() {
                    // `-2147483648` is a literal: negating 2147483648 would not fit.
                    self.bump();
                    return Ok((Node::Int(self.integer(digits, true, at)?), 0));
                }
                self.enter(at)?;
                let (x, h) = self.unary()?;
                self.leave();
                Ok((Node::Negate(Box::new(x)), self.grow(h, at)?))
            }
            Tok::Plus => {
                self.bump();
                match *self.peek() {
                    Tok::Int(digits) => {
                        self.bump();
                        Ok((Node::Int(self.integer(digits, false, at)?), 0))
                    }
                    _ => Err(self.error("'+' may only start an integer literal, as in +5")),
                }
            }
            _ => self.primary(),
        }
    }

    fn integer(&self, digits: &str, negative: bool, at: usize) -> Result<i32, ParseError> {
        let value = digits
            .parse::<i64>()
            .ok()
            .map(|v| if negative { -v } else { v })
            .and_then(|v| i32::try_from(v).ok());
        value.ok_or_else(|| {
            self.error_at(
                at,
                format!(
                    "the integer {}{digits} does not fit in 32 bits (-2147483648 to 2147483647)",
                    if negative { "-" } else { "" }
                ),
            )
        })
    }

    fn primary(&mut self) -> Result<Parsed, ParseError> {
        let at = self.offset();
        match self.bump() {
            Tok::Int(digits) => Ok((Node::Int(self.integer(digits, false, at)?), 0)),
            Tok::Str(s) => Ok((Node::Str(s), 0)),
            Tok::DataPath(keys) => Ok((Node::Data(DataPath::new(keys)), 0)),
            Tok::LParen => {
                self.enter(at)?;
                let (x, h) = self.expression()?;
                self.expect(Tok::RParen, || {
                    format!(
                        "to close the '(' at column {}",
                        ParseError::at(self.source, at, "").position
                    )
                })?;
                self.leave();
                Ok((x, h))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("TRUE") => Ok((Node::Bool(true), 0)),
            Tok::Word(w) if w.eq_ignore_ascii_case("FALSE") => Ok((Node::Bool(false), 0)),
            Tok::Word(w) if w.eq_ignore_ascii_case("EXISTS") => {
                let target = match self.bump() {
                    Tok::DataPath(keys) => Target::Data(DataPath::new(keys)),
                    Tok::Word(name) if !is_keyword(name) && *self.peek() != Tok::LParen => {
                        Target::Attr(self.attribute(name, at)?)
                    }
                    other => {
                        return Err(self.error_at(
                            at,
                            format!("EXISTS needs an attribute name, found {}", other.describe()),
                        ))
                    }
                };
                Ok((Node::Exists(target), 0))
            }
            Tok::Word(w) if is_keyword(w) => Err(self.error_at(
                at,
                format!(
                    "expected a value, found the keyword {}",
                    w.to_ascii_uppercase()
                ),
            )),
            Tok::Word(name) if *self.peek() == Tok::LParen => self.call(name, at),
            Tok::Word(name) => Ok((Node::Attr(self.attribute(name, at)?), 0)),
            other => Err(self.error_at(
                at,
                format!(
                    "expected a value (a literal, an attribute, a function call or '('), found {}",
                    other.describe()
                ),
            )),
        }
    }

    /// An attribute name: letters and digits, case-insensitive.
    fn attribute(&self, name: &str, at: usize) -> Result<Attr, ParseError> {
        if !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(self.error_at(
                at,
                format!(
                    "'{name}' is not an attribute name: CloudEvents attribute names are \
                     letters and digits only"
                ),
            ));
        }
        Ok(Attr::from_name(name.to_ascii_lowercase()))
    }

    /// `NAME(args)`; the `(` is next.
    fn call(&mut self, name: &str, at: usize) -> Result<Parsed, ParseError> {
        self.bump();
        self.enter(at)?;
        let mut args = Vec::new();
        let mut height = 0;
        if *self.peek() == Tok::RParen {
            self.bump();
        } else {
            loop {
                let (arg, h) = self.expression()?;
                args.push(arg);
                height = height.max(h);
                match self.peek() {
                    Tok::Comma => {
                        self.bump();
                    }
                    Tok::RParen => {
                        self.bump();
                        break;
                    }
                    other => {
                        return Err(self.error(format!(
                            "expected ',' or ')' in the arguments of {}(...), found {}",
                            name.to_ascii_uppercase(),
                            other.describe()
                        )))
                    }
                }
            }
        }
        self.leave();
        let height = self.grow(height, at)?;
        let node = match Builtin::resolve(name, args.len()) {
            Some(function) => Node::Call { function, args },
            None => Node::MissingFunction {
                name: name.to_ascii_uppercase(),
                arity: args.len(),
            },
        };
        Ok((node, height))
    }
}

fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}
