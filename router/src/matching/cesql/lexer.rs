//! Splits an expression into tokens.
//!
//! Keywords, identifiers and function names all come out as [`Tok::Word`]; the
//! parser tells them apart (keywords are case-insensitive). `data.` followed by
//! field names is one [`Tok::DataPath`] token, so `.` needs no meaning elsewhere.

use super::error::ParseError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok<'s> {
    LParen,
    RParen,
    Comma,
    Star,
    Slash,
    Percent,
    Plus,
    Minus,
    Eq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    /// A string literal, escapes resolved.
    Str(String),
    /// The digits of an integer literal; the parser checks the range, because a
    /// leading `-` changes it.
    Int(&'s str),
    /// A run of letters, digits and `_` that is not all digits.
    Word(&'s str),
    /// `data.a.b`: the field names after `data`, at least one.
    DataPath(Vec<String>),
    End,
}

impl Tok<'_> {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Star => "'*'".into(),
            Tok::Slash => "'/'".into(),
            Tok::Percent => "'%'".into(),
            Tok::Plus => "'+'".into(),
            Tok::Minus => "'-'".into(),
            Tok::Eq => "'='".into(),
            Tok::NotEq => "'!='".into(),
            Tok::Lt => "'<'".into(),
            Tok::Le => "'<='".into(),
            Tok::Gt => "'>'".into(),
            Tok::Ge => "'>='".into(),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Int(digits) => format!("the integer {digits}"),
            Tok::Word(w) => format!("'{w}'"),
            Tok::DataPath(path) => format!("'data.{}'", path.join(".")),
            Tok::End => "the end of the expression".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Token<'s> {
    pub tok: Tok<'s>,
    /// Byte offset of the token's first character.
    pub at: usize,
}

pub(crate) fn tokenize(source: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut lexer = Lexer { source, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next()?;
        let end = token.tok == Tok::End;
        tokens.push(token);
        if end {
            return Ok(tokens);
        }
    }
}

struct Lexer<'s> {
    source: &'s str,
    pos: usize,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

impl<'s> Lexer<'s> {
    fn peek(&self) -> Option<char> {
        self.source[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        self.source[self.pos..].chars().nth(1)
    }

    fn error(&self, at: usize, message: impl Into<String>) -> ParseError {
        ParseError::at(self.source, at, message)
    }

    fn next(&mut self) -> Result<Token<'s>, ParseError> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += self.peek().map_or(1, char::len_utf8);
        }
        let at = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token { tok: Tok::End, at });
        };
        let two = |lexer: &mut Self, tok| {
            lexer.pos += 2;
            Ok(Token { tok, at })
        };
        let tok = match (c, self.peek2()) {
            ('!', Some('=')) => return two(self, Tok::NotEq),
            ('<', Some('>')) => return two(self, Tok::NotEq),
            ('<', Some('=')) => return two(self, Tok::Le),
            ('>', Some('=')) => return two(self, Tok::Ge),
            ('(', _) => Tok::LParen,
            (')', _) => Tok::RParen,
            (',', _) => Tok::Comma,
            ('*', _) => Tok::Star,
            ('/', _) => Tok::Slash,
            ('%', _) => Tok::Percent,
            ('+', _) => Tok::Plus,
            ('-', _) => Tok::Minus,
            ('=', _) => Tok::Eq,
            ('<', _) => Tok::Lt,
            ('>', _) => Tok::Gt,
            ('\'' | '"', _) => {
                let text = self.string()?;
                return Ok(Token {
                    tok: Tok::Str(text),
                    at,
                });
            }
            (c, _) if is_word_char(c) => return self.word(),
            ('.', _) => {
                return Err(self.error(
                    at,
                    "'.' may only follow `data`, to read a field of the event's JSON payload \
                     (as in data.order.id)",
                ))
            }
            (c, _) => return Err(self.error(at, format!("unexpected character {c:?}"))),
        };
        self.pos += c.len_utf8();
        Ok(Token { tok, at })
    }

    /// A string literal delimited by `'` or `"`. Inside it, `\'`, `\"` and `\\`
    /// stand for the character after the backslash, a doubled delimiter for one
    /// delimiter; any other backslash is kept as it is, so the LIKE escapes `\%`
    /// and `\_` pass through to the pattern.
    fn string(&mut self) -> Result<String, ParseError> {
        let at = self.pos;
        let Some(quote) = self.peek() else {
            return Err(self.error(at, "expected a string"));
        };
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.source[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some((_, e @ ('\'' | '"' | '\\'))) => out.push(e),
                    Some((_, e)) => {
                        out.push('\\');
                        out.push(e);
                    }
                    None => break,
                }
            } else if c == quote {
                if self.source[self.pos + i + 1..].starts_with(quote) {
                    chars.next();
                    out.push(quote);
                } else {
                    self.pos += i + 1;
                    return Ok(out);
                }
            } else {
                out.push(c);
            }
        }
        Err(self.error(
            at,
            format!("the string starting here has no closing {quote}"),
        ))
    }

    fn word(&mut self) -> Result<Token<'s>, ParseError> {
        let at = self.pos;
        let len = self.source[at..]
            .find(|c: char| !is_word_char(c))
            .unwrap_or(self.source.len() - at);
        let word = &self.source[at..at + len];
        self.pos += len;
        if word.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Token {
                tok: Tok::Int(word),
                at,
            });
        }
        if word.eq_ignore_ascii_case("data") && self.peek() == Some('.') {
            let mut path = Vec::new();
            while self.peek() == Some('.') {
                self.pos += 1;
                path.push(self.segment()?);
            }
            return Ok(Token {
                tok: Tok::DataPath(path),
                at,
            });
        }
        Ok(Token {
            tok: Tok::Word(word),
            at,
        })
    }

    /// One field name after a `.` in a data path: letters, digits and `_`, or a
    /// quoted string for any other key (`data."content-type"`).
    fn segment(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some('\'' | '"') => self.string(),
            Some(c) if is_word_char(c) => {
                let start = self.pos;
                let len = self.source[start..]
                    .find(|c: char| !is_word_char(c))
                    .unwrap_or(self.source.len() - start);
                self.pos += len;
                Ok(self.source[start..start + len].to_owned())
            }
            _ => Err(self.error(
                self.pos,
                "expected a field name after '.'; quote names with other characters, \
                 as in data.\"content-type\"",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(source: &str) -> Vec<Tok<'_>> {
        tokenize(source)
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn operators_and_words() {
        assert_eq!(
            toks("a<>b != c<=1>=2 tRuE"),
            vec![
                Tok::Word("a"),
                Tok::NotEq,
                Tok::Word("b"),
                Tok::NotEq,
                Tok::Word("c"),
                Tok::Le,
                Tok::Int("1"),
                Tok::Ge,
                Tok::Int("2"),
                Tok::Word("tRuE"),
                Tok::End
            ]
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(toks(r#"'a"b\'c'"#)[0], Tok::Str("a\"b'c".into()));
        assert_eq!(toks(r#""a'b\"c""#)[0], Tok::Str("a'b\"c".into()));
        assert_eq!(toks(r"'a\_b\%\c\\'")[0], Tok::Str(r"a\_b\%\c\".into()));
        assert_eq!(toks("'it''s'")[0], Tok::Str("it's".into()));
        let err = tokenize("x = 'abc").unwrap_err();
        assert_eq!(err.position, 5);
        assert!(tokenize(r"'abc\").is_err());
    }

    #[test]
    fn data_paths() {
        assert_eq!(
            toks(r#"DATA.a.B_1.0."x-y" data"#),
            vec![
                Tok::DataPath(vec!["a".into(), "B_1".into(), "0".into(), "x-y".into()]),
                Tok::Word("data"),
                Tok::End
            ]
        );
        assert!(tokenize("data.").is_err());
        assert!(tokenize("data.a.").is_err());
        let err = tokenize("foo.bar").unwrap_err();
        assert_eq!(err.position, 4);
    }

    #[test]
    fn rejects_unknown_characters_with_their_column() {
        let err = tokenize("1 + é").unwrap_err();
        assert_eq!(err.position, 5);
        assert!(err.message.contains("'é'"), "{}", err.message);
    }
}
