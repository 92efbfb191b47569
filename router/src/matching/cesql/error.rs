//! The two kinds of failure: an expression that does not parse, and the errors an
//! evaluation raises alongside its value.

use std::fmt;

/// An expression that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {position}: {message}")]
pub struct ParseError {
    /// What is wrong, in words a user can act on.
    pub message: String,
    /// Where: the 1-based column, counted in characters, at which the problem was
    /// found. For an ASCII expression this is the byte offset plus one.
    pub position: usize,
}

impl ParseError {
    /// An error at byte offset `at` of `source`.
    pub(crate) fn at(source: &str, at: usize, message: impl Into<String>) -> Self {
        let at = at.min(source.len());
        let column = source.char_indices().take_while(|(i, _)| *i < at).count() + 1;
        Self {
            message: message.into(),
            position: column,
        }
    }
}

/// The class of an evaluation error, as the CESQL specification names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The expression does not parse (only from the parser; listed for completeness).
    Parse,
    /// Division or remainder by zero, or an integer overflow.
    Math,
    /// A value could not be converted to the type an operator or function needs.
    Cast,
    /// No built-in function has this name and number of arguments.
    MissingFunction,
    /// A function was called with arguments outside its domain.
    FunctionEvaluation,
    /// The event has no such attribute, or its payload no such field.
    MissingAttribute,
    /// Anything else.
    Generic,
}

impl ErrorKind {
    /// The name the CESQL conformance suite (TCK) uses: `parse`, `math`, `cast`,
    /// `missingFunction`, `functionEvaluation`, `missingAttribute`, `generic`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Math => "math",
            ErrorKind::Cast => "cast",
            ErrorKind::MissingFunction => "missingFunction",
            ErrorKind::FunctionEvaluation => "functionEvaluation",
            ErrorKind::MissingAttribute => "missingAttribute",
            ErrorKind::Generic => "generic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Parse => "parse error",
            ErrorKind::Math => "math error",
            ErrorKind::Cast => "cast error",
            ErrorKind::MissingFunction => "missing function",
            ErrorKind::FunctionEvaluation => "function error",
            ErrorKind::MissingAttribute => "missing attribute",
            ErrorKind::Generic => "error",
        })
    }
}

/// An error raised while evaluating an expression against one event. The
/// evaluation still produced a value (see [`super::Expression::evaluate`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct EvalError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The errors of one evaluation: the first one in full, and how many were raised.
///
/// Evaluation keeps an invariant that the operators rely on: a subexpression that
/// returned `Ok` raised nothing, so comparing [`Errors::count`] before and after an
/// operator's own work tells whether that work raised an error.
#[derive(Debug, Default)]
pub(crate) struct Errors {
    first: Option<EvalError>,
    count: u32,
    /// Filters only need to know that an error happened, not what it says.
    quiet: bool,
}

impl Errors {
    pub(crate) fn quiet() -> Self {
        Self {
            quiet: true,
            ..Self::default()
        }
    }

    /// Record an error; the message is only built for the first one.
    pub(crate) fn raise(&mut self, kind: ErrorKind, message: impl FnOnce() -> String) {
        self.count = self.count.saturating_add(1);
        if self.first.is_none() {
            let message = if self.quiet { String::new() } else { message() };
            self.first = Some(EvalError { kind, message });
        }
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }

    pub(crate) fn into_first(self) -> Option<EvalError> {
        self.first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_counts_characters() {
        let e = ParseError::at("'é' +", 5, "x");
        assert_eq!(e.position, 5);
        assert_eq!(e.to_string(), "at column 5: x");
        assert_eq!(ParseError::at("abc", 99, "x").position, 4);
    }

    #[test]
    fn keeps_the_first_error_and_counts_all() {
        let mut errors = Errors::default();
        errors.raise(ErrorKind::Math, || "first".into());
        errors.raise(ErrorKind::Cast, || "second".into());
        assert_eq!(errors.count(), 2);
        let first = errors.into_first().unwrap();
        assert_eq!(first.kind, ErrorKind::Math);
        assert_eq!(first.to_string(), "math error: first");
    }
}
