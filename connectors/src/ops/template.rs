//! The webhook source's attribute templates: literal text with `{header.NAME}`
//! (a request header, case-insensitive) and `{body.PATH}` (a dot path into the
//! JSON body; a number indexes an array) parts. Unlike target name templates,
//! they read a request, not an event, and have no date parts.

use http::HeaderMap;
use serde_json::Value;
use sluice_router::transform::name::{braced, Braced};

/// A parsed template.
#[derive(Debug, Clone)]
pub struct RequestTemplate(Vec<Piece>);

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Header(String),
    Body(Vec<String>),
}

impl RequestTemplate {
    /// Parse `text`; an unclosed `{` or a part that is not `{header.NAME}` or
    /// `{body.PATH}` is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        for part in braced(text)? {
            let part = match part {
                Braced::Text(t) => {
                    pieces.push(Piece::Text(t.to_owned()));
                    continue;
                }
                Braced::Part(part) => part,
            };
            let bad = || format!("`{{{part}}}`: a part is `{{header.NAME}}` or `{{body.PATH}}`");
            let (kind, name) = part.split_once('.').ok_or_else(bad)?;
            if name.is_empty() || name.split('.').any(str::is_empty) {
                return Err(bad());
            }
            pieces.push(match kind {
                "header" => Piece::Header(name.to_ascii_lowercase()),
                "body" => Piece::Body(name.split('.').map(str::to_owned).collect()),
                _ => return Err(bad()),
            });
        }
        if pieces.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self(pieces))
    }

    /// The text for a request; a missing header or body field is an error
    /// naming it.
    pub fn render(&self, headers: &HeaderMap, body: &Value) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Header(name) => {
                    let v = headers
                        .get(name.as_str())
                        .ok_or_else(|| format!("the request has no {name} header"))?;
                    let v = v
                        .to_str()
                        .map_err(|_| format!("the {name} header is not text"))?;
                    out.push_str(v);
                }
                Piece::Body(path) => {
                    let mut at = body;
                    for key in path {
                        let next = match at {
                            Value::Object(map) => map.get(key),
                            Value::Array(items) => {
                                key.parse::<usize>().ok().and_then(|i| items.get(i))
                            }
                            _ => None,
                        };
                        at = next.ok_or_else(|| format!("the body has no {}", path.join(".")))?;
                    }
                    match at {
                        Value::String(s) => out.push_str(s),
                        Value::Number(n) => out.push_str(&n.to_string()),
                        Value::Bool(b) => out.push_str(&b.to_string()),
                        _ => {
                            return Err(format!(
                                "the body's {} is not a string, number or boolean",
                                path.join(".")
                            ))
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_and_body_paths_render() {
        let mut h = HeaderMap::new();
        h.insert("x-github-event", "push".parse().unwrap());
        let body = json!({"repository": {"full_name": "octo/hello"}, "commits": [{"id": 7}]});
        let t = RequestTemplate::parse("com.github.{header.X-GitHub-Event}").unwrap();
        assert_eq!(t.render(&h, &body).unwrap(), "com.github.push");
        let t = RequestTemplate::parse("{body.repository.full_name}#{body.commits.0.id}").unwrap();
        assert_eq!(t.render(&h, &body).unwrap(), "octo/hello#7");
        let err = RequestTemplate::parse("{header.x-missing}")
            .unwrap()
            .render(&h, &body)
            .unwrap_err();
        assert_eq!(err, "the request has no x-missing header");
        let err = RequestTemplate::parse("{body.repository}")
            .unwrap()
            .render(&h, &body)
            .unwrap_err();
        assert!(err.contains("not a string"), "{err}");
        assert!(RequestTemplate::parse("{body.commits.9.id}")
            .unwrap()
            .render(&h, &body)
            .unwrap_err()
            .contains("body has no commits.9.id"));
    }

    #[test]
    fn bad_templates_are_named() {
        for (text, why) in [
            ("{header.x", "never closed"),
            ("{query.x}", "a part is"),
            ("{body}", "a part is"),
            ("{body..x}", "a part is"),
            ("", "must not be empty"),
        ] {
            let err = RequestTemplate::parse(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
