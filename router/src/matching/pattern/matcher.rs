//! One entry of a pattern list: a value or an operator, compiled, and what it matches.

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

use crate::event::{json_kind, FieldValue};

/// A plain value in a pattern.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl Literal {
    pub fn equals(&self, value: &FieldValue<'_>) -> bool {
        match (self, value) {
            (Literal::Str(a), FieldValue::Str(b)) => a == b,
            (Literal::Num(a), FieldValue::Num(b)) => a == b,
            (Literal::Bool(a), FieldValue::Bool(b)) => a == b,
            (Literal::Null, FieldValue::Null) => true,
            _ => false,
        }
    }

    pub fn from_json(value: &Value) -> Option<Self> {
        Some(match value {
            Value::String(s) => Literal::Str(s.clone()),
            Value::Number(n) => Literal::Num(n.as_f64()?),
            Value::Bool(b) => Literal::Bool(*b),
            Value::Null => Literal::Null,
            _ => return None,
        })
    }
}

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => write!(f, "{s:?}"),
            Literal::Num(n) => write!(f, "{n}"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Null => write!(f, "null"),
        }
    }
}

/// A numeric comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    pub fn holds(self, n: f64, x: f64) -> bool {
        match self {
            Cmp::Eq => n == x,
            Cmp::Lt => n < x,
            Cmp::Le => n <= x,
            Cmp::Gt => n > x,
            Cmp::Ge => n >= x,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// A `*` pattern: literal pieces between stars.
#[derive(Debug, Clone, PartialEq)]
pub struct Wildcard {
    pub source: String,
    /// The text split at unescaped stars; n stars give n + 1 pieces.
    pieces: Vec<String>,
}

impl Wildcard {
    pub fn compile(source: &str) -> Result<Self, String> {
        let mut pieces = vec![String::new()];
        let mut chars = source.chars();
        let mut last_star = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => {
                        if let Some(p) = pieces.last_mut() {
                            p.push(e);
                        }
                        last_star = false;
                    }
                    _ => return Err(format!("wildcard {source:?}: `\\` must escape `*` or `\\`")),
                },
                '*' => {
                    if last_star {
                        return Err(format!(
                            "wildcard {source:?}: consecutive `*` are not allowed"
                        ));
                    }
                    pieces.push(String::new());
                    last_star = true;
                }
                c => {
                    if let Some(p) = pieces.last_mut() {
                        p.push(c);
                    }
                    last_star = false;
                }
            }
        }
        Ok(Self {
            source: source.to_owned(),
            pieces,
        })
    }

    /// The literal text before the first star (used by the rule index).
    pub fn literal_prefix(&self) -> &str {
        &self.pieces[0]
    }

    pub fn is_literal(&self) -> bool {
        self.pieces.len() == 1
    }

    pub fn matches(&self, s: &str) -> bool {
        let (first, rest) = match self.pieces.split_first() {
            Some(x) => x,
            None => return s.is_empty(),
        };
        if rest.is_empty() {
            return s == first;
        }
        let Some(mut tail) = s.strip_prefix(first.as_str()) else {
            return false;
        };
        let (last, middle) = rest.split_last().unwrap_or((first, &[]));
        for piece in middle {
            match tail.find(piece.as_str()) {
                Some(i) => tail = &tail[i + piece.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

/// An IP network from a `cidr` matcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Cidr {
    pub source: String,
    network: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn compile(source: &str) -> Result<Self, String> {
        let (addr, bits) = source.split_once('/').ok_or_else(|| {
            format!("cidr {source:?} must be ADDRESS/PREFIX-LENGTH, e.g. 10.0.0.0/24")
        })?;
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("cidr {source:?}: {addr:?} is not an IPv4 or IPv6 address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let bits: u8 = bits
            .parse()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("cidr {source:?}: prefix length must be 0 to {max}"))?;
        Ok(Self {
            source: source.to_owned(),
            network,
            bits,
        })
    }

    pub fn contains(&self, s: &str) -> bool {
        let Ok(ip) = s.parse::<IpAddr>() else {
            return false;
        };
        let (a, b, width) = match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u32::from(n) as u128, u32::from(i) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        if self.bits == 0 {
            return true;
        }
        let shift = width - u32::from(self.bits);
        (a >> shift) == (b >> shift)
    }
}

/// One compiled list entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    Exact(Literal),
    Prefix(String),
    Suffix(String),
    /// Prefix compared without case; the prefix is stored lower-cased.
    PrefixIgnoreCase(String),
    SuffixIgnoreCase(String),
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    AnythingBut(Vec<Literal>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    AnythingButWildcard(Vec<Wildcard>),
    AnythingButIgnoreCase(Vec<String>),
    Numeric(Vec<(Cmp, f64)>),
    Cidr(Cidr),
    Exists(bool),
}

fn as_str<'a>(value: &'a FieldValue<'_>) -> Option<&'a str> {
    match value {
        FieldValue::Str(s) => Some(s),
        _ => None,
    }
}

impl Matcher {
    /// Whether one value found in the event satisfies this matcher (`exists` is
    /// decided on the whole set of values by the caller).
    pub fn matches(&self, value: &FieldValue<'_>) -> bool {
        let s = as_str(value);
        match self {
            Matcher::Exact(lit) => lit.equals(value),
            Matcher::Prefix(p) => s.is_some_and(|s| s.starts_with(p.as_str())),
            Matcher::Suffix(p) => s.is_some_and(|s| s.ends_with(p.as_str())),
            Matcher::PrefixIgnoreCase(p) => {
                s.is_some_and(|s| s.to_lowercase().starts_with(p.as_str()))
            }
            Matcher::SuffixIgnoreCase(p) => {
                s.is_some_and(|s| s.to_lowercase().ends_with(p.as_str()))
            }
            Matcher::EqualsIgnoreCase(p) => s.is_some_and(|s| eq_ignore_case(s, p)),
            Matcher::Wildcard(w) => s.is_some_and(|s| w.matches(s)),
            Matcher::AnythingBut(lits) => !lits.iter().any(|l| l.equals(value)),
            Matcher::AnythingButPrefix(p) => s.is_some_and(|s| !s.starts_with(p.as_str())),
            Matcher::AnythingButSuffix(p) => s.is_some_and(|s| !s.ends_with(p.as_str())),
            Matcher::AnythingButWildcard(ws) => s.is_some_and(|s| !ws.iter().any(|w| w.matches(s))),
            Matcher::AnythingButIgnoreCase(ps) => {
                s.is_some_and(|s| !ps.iter().any(|p| eq_ignore_case(s, p)))
            }
            Matcher::Numeric(cmps) => match value {
                FieldValue::Num(n) => cmps.iter().all(|(cmp, x)| cmp.holds(*n, *x)),
                _ => false,
            },
            Matcher::Cidr(c) => s.is_some_and(|s| c.contains(s)),
            Matcher::Exists(_) => false,
        }
    }

    pub fn compile(item: &Value) -> Result<Matcher, String> {
        if let Some(lit) = Literal::from_json(item) {
            return Ok(Matcher::Exact(lit));
        }
        let Value::Object(op) = item else {
            return Err("a list entry must be a value or a matcher object, found an array".into());
        };
        if op.len() != 1 {
            return Err(format!(
                "a matcher object has exactly one key (prefix, suffix, equals-ignore-case, wildcard, \
                 anything-but, numeric, cidr, exists), found {}",
                op.len()
            ));
        }
        let (name, arg) = op.iter().next().ok_or("empty matcher")?;
        match name.as_str() {
            "prefix" => affix(name, arg, Matcher::Prefix, Matcher::PrefixIgnoreCase),
            "suffix" => affix(name, arg, Matcher::Suffix, Matcher::SuffixIgnoreCase),
            "equals-ignore-case" => string_arg(name, arg).map(Matcher::EqualsIgnoreCase),
            "wildcard" => Wildcard::compile(&string_arg(name, arg)?).map(Matcher::Wildcard),
            "cidr" => Cidr::compile(&string_arg(name, arg)?).map(Matcher::Cidr),
            "exists" => match arg {
                Value::Bool(b) => Ok(Matcher::Exists(*b)),
                other => Err(format!(
                    "exists takes true or false, found {}",
                    json_kind(other)
                )),
            },
            "numeric" => compile_numeric(arg),
            "anything-but" => compile_anything_but(arg),
            other => Err(format!(
                "unknown matcher {other:?}; expected prefix, suffix, equals-ignore-case, wildcard, \
                 anything-but, numeric, cidr or exists"
            )),
        }
    }
}

/// ASCII and Unicode simple case folding, without allocating for ASCII.
fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.to_lowercase() == b.to_lowercase()
}

fn string_arg(name: &str, arg: &Value) -> Result<String, String> {
    match arg {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{name} takes a string, found {}", json_kind(other))),
    }
}

/// `prefix`/`suffix` take a string, or `{equals-ignore-case: string}`.
fn affix(
    name: &str,
    arg: &Value,
    exact: fn(String) -> Matcher,
    folded: fn(String) -> Matcher,
) -> Result<Matcher, String> {
    match arg {
        Value::Object(m) if m.len() == 1 && m.contains_key("equals-ignore-case") => {
            let s = string_arg("equals-ignore-case", &m["equals-ignore-case"])?;
            Ok(folded(s.to_lowercase()))
        }
        other => string_arg(name, other).map(exact),
    }
}

fn string_list(name: &str, arg: &Value) -> Result<Vec<String>, String> {
    match arg {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) => items.iter().map(|v| string_arg(name, v)).collect(),
        other => Err(format!(
            "{name} takes a string or a list of strings, found {}",
            json_kind(other)
        )),
    }
}

fn compile_numeric(arg: &Value) -> Result<Matcher, String> {
    let Value::Array(parts) = arg else {
        return Err("numeric takes a list such as [\">\", 0, \"<=\", 5]".into());
    };
    if parts.is_empty() || parts.len() % 2 != 0 || parts.len() > 4 {
        return Err(format!(
            "numeric takes one or two (operator, number) pairs, found {} items",
            parts.len()
        ));
    }
    let mut cmps = Vec::new();
    for pair in parts.chunks(2) {
        let cmp = match pair[0].as_str() {
            Some("=") => Cmp::Eq,
            Some("<") => Cmp::Lt,
            Some("<=") => Cmp::Le,
            Some(">") => Cmp::Gt,
            Some(">=") => Cmp::Ge,
            _ => {
                return Err(format!(
                    "numeric operator must be one of =, <, <=, >, >=, found {}",
                    pair[0]
                ))
            }
        };
        let number = pair[1]
            .as_f64()
            .ok_or_else(|| format!("numeric {} needs a number, found {}", pair[0], pair[1]))?;
        cmps.push((cmp, number));
    }
    if let [(a, x), (b, y)] = cmps.as_slice() {
        let lower = matches!(a, Cmp::Gt | Cmp::Ge);
        let upper = matches!(b, Cmp::Lt | Cmp::Le);
        if !(lower && upper) {
            return Err(
                "a numeric range is a lower bound (> or >=) then an upper bound (< or <=)".into(),
            );
        }
        if x > y {
            return Err(format!(
                "numeric range is empty: lower bound {x} is above upper bound {y}"
            ));
        }
    }
    Ok(Matcher::Numeric(cmps))
}

fn compile_anything_but(arg: &Value) -> Result<Matcher, String> {
    if let Some(lit) = Literal::from_json(arg) {
        return Ok(Matcher::AnythingBut(vec![lit]));
    }
    match arg {
        Value::Array(items) => items
            .iter()
            .map(|v| {
                Literal::from_json(v).ok_or_else(|| {
                    format!("anything-but lists hold plain values, found {}", json_kind(v))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Matcher::AnythingBut),
        Value::Object(op) if op.len() == 1 => {
            let (name, value) = op.iter().next().ok_or("empty anything-but")?;
            match name.as_str() {
                "prefix" => string_arg(name, value).map(Matcher::AnythingButPrefix),
                "suffix" => string_arg(name, value).map(Matcher::AnythingButSuffix),
                "wildcard" => string_list(name, value)?
                    .iter()
                    .map(|w| Wildcard::compile(w))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Matcher::AnythingButWildcard),
                "equals-ignore-case" => string_list(name, value).map(Matcher::AnythingButIgnoreCase),
                other => Err(format!(
                    "anything-but supports prefix, suffix, wildcard or equals-ignore-case, found {other:?}"
                )),
            }
        }
        _ => Err("anything-but takes a value, a list of values, or {prefix|suffix|wildcard|equals-ignore-case: ...}".into()),
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Matcher::Exact(l) => write!(f, "{l}"),
            Matcher::Prefix(p) => write!(f, "prefix {p:?}"),
            Matcher::Suffix(p) => write!(f, "suffix {p:?}"),
            Matcher::PrefixIgnoreCase(p) => write!(f, "prefix {p:?} ignoring case"),
            Matcher::SuffixIgnoreCase(p) => write!(f, "suffix {p:?} ignoring case"),
            Matcher::EqualsIgnoreCase(p) => write!(f, "equals-ignore-case {p:?}"),
            Matcher::Wildcard(w) => write!(f, "wildcard {:?}", w.source),
            Matcher::AnythingBut(ls) => write!(
                f,
                "anything but {}",
                ls.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Matcher::AnythingButPrefix(p) => write!(f, "anything but prefix {p:?}"),
            Matcher::AnythingButSuffix(p) => write!(f, "anything but suffix {p:?}"),
            Matcher::AnythingButWildcard(ws) => {
                let s: Vec<String> = ws.iter().map(|w| w.source.clone()).collect();
                write!(f, "anything but wildcard {}", list(&s))
            }
            Matcher::AnythingButIgnoreCase(ps) => {
                write!(f, "anything but (ignoring case) {}", list(ps))
            }
            Matcher::Numeric(cmps) => {
                let parts: Vec<String> = cmps
                    .iter()
                    .map(|(c, x)| format!("{} {x}", c.symbol()))
                    .collect();
                write!(f, "{}", parts.join(" and "))
            }
            Matcher::Cidr(c) => write!(f, "in {}", c.source),
            Matcher::Exists(true) => write!(f, "present"),
            Matcher::Exists(false) => write!(f, "absent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        let w = |p: &str, s: &str| Wildcard::compile(p).unwrap().matches(s);
        assert!(w("*.png", "a.png"));
        assert!(w("img/*/x*.png", "img/2024/xy.png"));
        assert!(!w("img/*/x*.png", "img/2024/y.png"));
        assert!(w("a*a", "aa"));
        assert!(!w("a*a", "a"));
        assert!(w("lit\\*eral", "lit*eral"));
        assert!(!w("lit\\*eral", "litXeral"));
        assert!(w("*", ""));
        assert!(Wildcard::compile("a**b").is_err());
        assert!(Wildcard::compile("a\\b").is_err());
    }

    #[test]
    fn cidrs() {
        let c = Cidr::compile("10.0.0.0/24").unwrap();
        assert!(c.contains("10.0.0.255"));
        assert!(!c.contains("10.0.1.0"));
        assert!(!c.contains("::1"));
        let c6 = Cidr::compile("2001:db8::/32").unwrap();
        assert!(c6.contains("2001:db8:ffff::1"));
        assert!(!c6.contains("2001:db9::1"));
        assert!(Cidr::compile("0.0.0.0/0").unwrap().contains("8.8.8.8"));
        assert!(Cidr::compile("10.0.0.0/33").is_err());
        assert!(Cidr::compile("10.0.0.0").is_err());
    }
}
