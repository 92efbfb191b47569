//! A small JSON path language: the subset that EventBridge input paths use.
//!
//! ```text
//! $                      the whole input
//! $.data.order.id        object keys, dotted
//! $.data.items[0].sku    array index (negative counts from the end: [-1] is the last)
//! $['key with dots']     quoted key, also ["..."]; \' \" \\ escape inside quotes
//! ```
//!
//! A dotted key runs until the next `.` or `[`, so `$.detail-type` and `$.a:b` work.
//! Wildcards, slices and filters are not supported: a path names at most one value.
//! Lookup never fails: a missing key, an index out of range or a step into a
//! scalar gives `None`.

use std::fmt;

use serde_json::Value;

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Object member by key.
    Key(String),
    /// Array element; negative counts from the end.
    Index(i64),
}

/// A compiled JSON path; see the module docs for the syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

/// Parse a path such as `$.data.items[0].sku`.
pub fn compile_path(path: &str) -> Result<JsonPath, String> {
    Parser::new(path).parse()
}

impl JsonPath {
    /// The steps after `$`; empty for the whole input.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The value the path names in `v`, or `None` when it is not there.
    pub fn get<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.segments.iter().try_fold(v, |v, seg| match (seg, v) {
            (Segment::Key(k), Value::Object(m)) => m.get(k),
            (Segment::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 {
                    a.len()
                        .checked_sub(usize::try_from(i.unsigned_abs()).ok()?)?
                } else {
                    usize::try_from(*i).ok()?
                };
                a.get(idx)
            }
            _ => None,
        })
    }
}

impl fmt::Display for JsonPath {
    /// Canonical form: dotted keys where that parses back the same, else `['...']`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("$")?;
        for seg in &self.segments {
            match seg {
                Segment::Key(k) if is_plain_key(k) => write!(f, ".{k}")?,
                Segment::Key(k) => {
                    f.write_str("['")?;
                    for c in k.chars() {
                        if matches!(c, '\'' | '\\') {
                            f.write_str("\\")?;
                        }
                        write!(f, "{c}")?;
                    }
                    f.write_str("']")?;
                }
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// True if `k` can be written after a dot and read back unchanged.
fn is_plain_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(is_dotted_key_char)
}

fn is_dotted_key_char(c: char) -> bool {
    !matches!(c, '.' | '[' | ']' | '\'' | '"' | '*') && !c.is_whitespace() && !c.is_control()
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next unread char.
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser { src, pos: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.src.get(self.pos..)?.chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// Error at the current position (1-based char column, as an editor shows it).
    fn err(&self, what: impl fmt::Display) -> String {
        let col = self.src.get(..self.pos).map_or(0, |s| s.chars().count()) + 1;
        format!("invalid JSON path `{}` at column {col}: {what}", self.src)
    }

    fn parse(mut self) -> Result<JsonPath, String> {
        if self.bump() != Some('$') {
            return Err(format!(
                "invalid JSON path `{}`: a path starts with `$` (the whole input), e.g. `$.data.id`",
                self.src
            ));
        }
        let mut segments = Vec::new();
        while let Some(c) = self.bump() {
            let seg = match c {
                '.' => self.dotted_key()?,
                '[' => self.bracket()?,
                c => {
                    self.pos -= c.len_utf8();
                    return Err(self.err(format_args!("expected `.` or `[`, found `{c}`")));
                }
            };
            segments.push(seg);
        }
        Ok(JsonPath { segments })
    }

    fn dotted_key(&mut self) -> Result<Segment, String> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c == '.' || c == '[' {
                break;
            }
            if c == '*' {
                return Err(self.err("wildcards are not supported"));
            }
            if !is_dotted_key_char(c) {
                return Err(self.err(format_args!(
                    "`{}` is not allowed in a dotted key; quote the key: ['...']",
                    c.escape_debug()
                )));
            }
            self.bump();
        }
        let key = self.src.get(start..self.pos).unwrap_or_default();
        if key.is_empty() {
            return Err(self.err("expected a key after `.`"));
        }
        Ok(Segment::Key(key.to_owned()))
    }

    /// After `[`: `'key']`, `"key"]` or `123]`.
    fn bracket(&mut self) -> Result<Segment, String> {
        let seg = match self.peek() {
            Some(q @ ('\'' | '"')) => {
                self.bump();
                Segment::Key(self.quoted(q)?)
            }
            Some('*') => return Err(self.err("wildcards are not supported")),
            Some(c) if c == '-' || c.is_ascii_digit() => Segment::Index(self.index()?),
            Some(c) => {
                return Err(self.err(format_args!(
                    "expected an array index or a quoted key after `[`, found `{}`",
                    c.escape_debug()
                )))
            }
            None => return Err(self.err("unclosed `[`")),
        };
        match self.bump() {
            Some(']') => Ok(seg),
            Some(c) => {
                self.pos -= c.len_utf8();
                Err(self.err(format_args!("expected `]`, found `{}`", c.escape_debug())))
            }
            None => Err(self.err("unclosed `[`")),
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, String> {
        let mut key = String::new();
        loop {
            match self.bump() {
                None => return Err(self.err(format_args!("unclosed quote {quote}"))),
                Some('\\') => match self.bump() {
                    Some(c @ ('\\' | '\'' | '"')) => key.push(c),
                    Some(c) => {
                        return Err(self.err(format_args!(
                            "unknown escape `\\{}` (only \\\\, \\' and \\\" are allowed)",
                            c.escape_debug()
                        )))
                    }
                    None => return Err(self.err(format_args!("unclosed quote {quote}"))),
                },
                Some(c) if c == quote => return Ok(key),
                Some(c) => key.push(c),
            }
        }
    }

    fn index(&mut self) -> Result<i64, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.bump();
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
        }
        let text = self.src.get(start..self.pos).unwrap_or_default();
        text.parse::<i64>()
            .map_err(|_| self.err(format_args!("`{text}` is not a valid array index")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "id": "e-1",
            "detail-type": "Order Placed",
            "data": {
                "order": {"id": 42, "total": 99.5},
                "items": [{"sku": "A-1"}, {"sku": "B-2"}, {"sku": "C-3"}],
                "key.with.dots": "dotted",
                "it's": "quoted",
                "": "empty key",
                "nothing": null
            }
        })
    }

    fn get(path: &str) -> Option<Value> {
        let p = compile_path(path).unwrap();
        p.get(&event()).cloned()
    }

    #[test]
    fn root_is_the_whole_input() {
        assert_eq!(get("$"), Some(event()));
        assert!(compile_path("$").unwrap().segments().is_empty());
    }

    #[test]
    fn dotted_keys_and_indexes() {
        assert_eq!(get("$.id"), Some(json!("e-1")));
        assert_eq!(get("$.detail-type"), Some(json!("Order Placed")));
        assert_eq!(get("$.data.order.id"), Some(json!(42)));
        assert_eq!(get("$.data.order"), Some(json!({"id": 42, "total": 99.5})));
        assert_eq!(get("$.data.items[0].sku"), Some(json!("A-1")));
        assert_eq!(get("$.data.items[2].sku"), Some(json!("C-3")));
        assert_eq!(get("$.data.items[-1].sku"), Some(json!("C-3")));
        assert_eq!(get("$.data.items[-3].sku"), Some(json!("A-1")));
    }

    #[test]
    fn bracketed_keys() {
        assert_eq!(get("$.data['key.with.dots']"), Some(json!("dotted")));
        assert_eq!(get("$['data'][\"key.with.dots\"]"), Some(json!("dotted")));
        assert_eq!(get(r"$.data['it\'s']"), Some(json!("quoted")));
        assert_eq!(get("$.data['']"), Some(json!("empty key")));
        assert_eq!(get("$['data']['order']['id']"), Some(json!(42)));
    }

    #[test]
    fn missing_values_are_none() {
        assert_eq!(get("$.nope"), None);
        assert_eq!(get("$.data.order.id.deeper"), None);
        assert_eq!(get("$.data.items[3]"), None);
        assert_eq!(get("$.data.items[-4]"), None);
        assert_eq!(get("$.data.items.sku"), None, "keys do not apply to arrays");
        assert_eq!(
            get("$.data.order[0]"),
            None,
            "indexes do not apply to objects"
        );
        assert_eq!(get("$.data.nothing"), Some(Value::Null), "null is present");
        let huge = compile_path("$.data.items[-9223372036854775808]").unwrap();
        assert_eq!(huge.get(&event()), None);
    }

    #[test]
    fn syntax_errors_say_what_and_where() {
        let cases = [
            ("", "starts with `$`"),
            ("data.id", "starts with `$`"),
            (".data", "starts with `$`"),
            ("$.", "column 3: expected a key after `.`"),
            ("$..a", "column 3: expected a key after `.`"),
            ("$.a[", "unclosed `[`"),
            ("$.a[0", "unclosed `[`"),
            (
                "$.a[x]",
                "column 5: expected an array index or a quoted key",
            ),
            ("$.a[*]", "wildcards are not supported"),
            ("$.a.*", "wildcards are not supported"),
            ("$.a['b]", "unclosed quote '"),
            ("$.a['b'", "unclosed `[`"),
            ("$.a['b'x]", "column 8: expected `]`, found `x`"),
            ("$.a[1.5]", "expected `]`, found `.`"),
            ("$.a[-]", "`-` is not a valid array index"),
            ("$.a[99999999999999999999]", "not a valid array index"),
            ("$a", "column 2: expected `.` or `[`, found `a`"),
            ("$.a b", "not allowed in a dotted key"),
            (r"$['a\n']", r"unknown escape `\n`"),
        ];
        for (path, want) in cases {
            let err = compile_path(path).unwrap_err();
            assert!(err.contains(want), "{path:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        for path in [
            "$",
            "$.a.b[0][-2]",
            "$['a.b']['it\\'s'].c",
            "$['']",
            "$['a b']",
        ] {
            let p = compile_path(path).unwrap();
            assert_eq!(p.to_string(), path);
            assert_eq!(compile_path(&p.to_string()).unwrap(), p);
        }
        assert_eq!(compile_path("$[\"x\"]").unwrap().to_string(), "$.x");
    }

    proptest! {
        #[test]
        fn compile_never_panics(s in "\\PC{0,40}") {
            let _ = compile_path(&s);
        }

        #[test]
        fn compile_never_panics_on_path_like_input(s in "\\$[.\\[\\]'\"\\\\a-c0-9*-]{0,20}") {
            if let Ok(p) = compile_path(&s) {
                let _ = p.get(&event());
                prop_assert_eq!(compile_path(&p.to_string()), Ok(p));
            }
        }
    }
}
