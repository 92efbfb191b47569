//! EventBridge-style input transformer: named paths into the event, and a template
//! that places their values with `<name>` placeholders.
//!
//! ```yaml
//! input_paths:
//!   id: $.data.order.id
//!   items: $.data.items
//!   customer: $.data.customer.name
//! template: {"order": "<id>", "lines": "<items>", "note": "Order <id> for <customer>"}
//! ```
//!
//! Rules (after EventBridge's input transformer, with a JSON-typed template):
//! - A JSON string that is exactly `"<name>"` is replaced by the value itself, of any
//!   type: `"<id>"` above gives the number `42`, `"<items>"` the array.
//! - `<name>` inside a longer string is replaced by the value's text: strings without
//!   quotes, anything else as compact JSON (`"Order 42 for Ada"`).
//! - A text template ([`TemplateBody::Text`]) works like a longer string; the output is
//!   a JSON string.
//! - A path that names nothing in the event gives `null` where it is the whole string
//!   and the empty string where it is inside text. A value that is present and `null`
//!   gives `null` and `"null"` respectively.
//! - `<$>` is the whole input; it needs no entry in `input_paths`.
//! - Object keys are never substituted; a placeholder in a key is a compile error.
//! - Names use ASCII letters, digits, `_`, `-` and `.`. Something in angle brackets
//!   that is not a valid name (`a < b`, `<a href="x">`) is kept as text. A valid name
//!   that is not in `input_paths` is a compile error, as there is no way to escape
//!   `<` and `>` (as in EventBridge).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::path::{compile_path, JsonPath};

/// The template as written in config: a JSON value or a plain string.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateBody {
    /// A JSON value whose strings may contain placeholders.
    Json(Value),
    /// A string template; the output is a JSON string.
    Text(String),
}

/// A compiled template; see the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Template {
    root: Node,
}

/// Where a placeholder's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Whole,
    Path(JsonPath),
}

impl Source {
    fn get<'a>(&self, input: &'a Value) -> Option<&'a Value> {
        match self {
            Source::Whole => Some(input),
            Source::Path(p) => p.get(input),
        }
    }
}

#[derive(Debug, Clone)]
enum Part {
    Lit(String),
    Var(Source),
}

#[derive(Debug, Clone)]
enum Node {
    /// No placeholders below: copied as is.
    Literal(Value),
    /// A string that is exactly one placeholder: the value itself.
    Whole(Source),
    /// A string with text around placeholders.
    Text(Vec<Part>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Template {
    /// `paths`: name -> JSON path into the input (`$.data.order.id`, see
    /// [`super::path`]). `template`: a JSON value whose strings may contain `<name>`
    /// placeholders, or a plain string template. Reports every problem found.
    pub fn compile(
        paths: &BTreeMap<String, String>,
        template: &TemplateBody,
    ) -> Result<Template, String> {
        let mut errors = Vec::new();
        let mut sources = BTreeMap::new();
        for (name, path) in paths {
            if name == "$" {
                errors.push("input_paths cannot define `$`; <$> is always the whole input".into());
            } else if !is_name(name) {
                errors.push(format!(
                    "invalid input_paths name `{name}`: use letters, digits, `_`, `-` and `.`"
                ));
            }
            // A broken path is still a known name: it is reported once, here.
            let source = compile_path(path)
                .map_err(|e| errors.push(format!("input_paths.{name}: {e}")))
                .ok()
                .map(Source::Path);
            sources.insert(name.as_str(), source);
        }
        sources.insert("$", Some(Source::Whole));
        let mut cx = Compiler { sources, errors };
        let root = match template {
            TemplateBody::Json(v) => cx.node(v),
            TemplateBody::Text(s) => Node::Text(cx.parts(s)),
        };
        if cx.errors.is_empty() {
            Ok(Template { root })
        } else {
            cx.errors.dedup();
            Err(cx.errors.join("; "))
        }
    }

    /// Fill the template from `input`. Never fails today; the `Result` leaves room for
    /// checks (such as a size limit) without changing callers.
    pub fn render(&self, input: &Value) -> Result<Value, String> {
        Ok(render(&self.root, input))
    }
}

fn render(node: &Node, input: &Value) -> Value {
    match node {
        Node::Literal(v) => v.clone(),
        Node::Whole(src) => src.get(input).cloned().unwrap_or(Value::Null),
        Node::Text(parts) => Value::String(render_text(parts, input)),
        Node::Array(items) => Value::Array(items.iter().map(|n| render(n, input)).collect()),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, n)| (k.clone(), render(n, input)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn render_text(parts: &[Part], input: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Lit(s) => out.push_str(s),
            Part::Var(src) => match src.get(input) {
                None => {}
                Some(Value::String(s)) => out.push_str(s),
                // Writing to a String cannot fail.
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
            },
        }
    }
    out
}

struct Compiler<'a> {
    /// Name -> source; `None` for a name whose path did not compile.
    sources: BTreeMap<&'a str, Option<Source>>,
    errors: Vec<String>,
}

impl Compiler<'_> {
    fn node(&mut self, v: &Value) -> Node {
        match v {
            Value::String(s) => {
                let mut parts = self.parts(s);
                match parts.as_mut_slice() {
                    [] => Node::Literal(Value::String(String::new())),
                    [Part::Lit(lit)] => Node::Literal(Value::String(std::mem::take(lit))),
                    [Part::Var(src)] => Node::Whole(src.clone()),
                    _ => Node::Text(parts),
                }
            }
            Value::Array(items) => {
                let nodes: Vec<Node> = items.iter().map(|v| self.node(v)).collect();
                if nodes.iter().all(|n| matches!(n, Node::Literal(_))) {
                    Node::Literal(v.clone())
                } else {
                    Node::Array(nodes)
                }
            }
            Value::Object(fields) => {
                let mut nodes = Vec::with_capacity(fields.len());
                for (k, v) in fields {
                    if let Some(name) = scan(k).find_map(|t| t.placeholder()) {
                        self.errors.push(format!(
                            "placeholders cannot be used in object keys: <{name}> in key {k:?}"
                        ));
                    }
                    nodes.push((k.clone(), self.node(v)));
                }
                if nodes.iter().all(|(_, n)| matches!(n, Node::Literal(_))) {
                    Node::Literal(v.clone())
                } else {
                    Node::Object(nodes)
                }
            }
            other => Node::Literal(other.clone()),
        }
    }

    /// Split a string into literal text and placeholders; adjacent text is merged.
    fn parts(&mut self, s: &str) -> Vec<Part> {
        let mut parts: Vec<Part> = Vec::new();
        for token in scan(s) {
            match token {
                Token::Text(t) => match parts.last_mut() {
                    Some(Part::Lit(prev)) => prev.push_str(t),
                    _ => parts.push(Part::Lit(t.to_owned())),
                },
                Token::Placeholder(name) => match self.sources.get(name) {
                    Some(Some(src)) => parts.push(Part::Var(src.clone())),
                    Some(None) => {}
                    None => self.errors.push(format!(
                        "template uses <{name}>, which is not in input_paths"
                    )),
                },
            }
        }
        parts
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_name_char)
}

#[derive(Debug, PartialEq)]
enum Token<'a> {
    Text(&'a str),
    /// The name between `<` and `>`.
    Placeholder(&'a str),
}

impl<'a> Token<'a> {
    fn placeholder(self) -> Option<&'a str> {
        match self {
            Token::Placeholder(name) => Some(name),
            Token::Text(_) => None,
        }
    }
}

/// Tokens of `s`: text, and `<name>` or `<$>` placeholders.
fn scan(s: &str) -> impl Iterator<Item = Token<'_>> {
    let mut rest = s;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // Text up to the next `<` that starts a placeholder.
        let mut search = 0;
        while let Some(lt) = rest.get(search..)?.find('<').map(|i| i + search) {
            let after = rest.get(lt + 1..)?;
            if let Some(gt) = after.find('>') {
                let name = after.get(..gt)?;
                if name == "$" || is_name(name) {
                    if lt > 0 {
                        let text = rest.get(..lt)?;
                        rest = rest.get(lt..)?;
                        return Some(Token::Text(text));
                    }
                    rest = after.get(gt + 1..)?;
                    return Some(Token::Placeholder(name));
                }
            }
            search = lt + 1;
        }
        let text = rest;
        rest = "";
        Some(Token::Text(text))
    })
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
