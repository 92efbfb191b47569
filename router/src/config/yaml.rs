//! Reading YAML with positions: serde_yaml gives the values, yaml-rust2's event
//! stream gives the line and column of every path, so errors found after parsing
//! (an unknown target, a bad pattern) still point into the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column (both from 1) of each path in a document, e.g. `rules[0].targets[1]`.
#[derive(Debug, Default, Clone)]
pub struct Positions {
    map: HashMap<String, (usize, usize)>,
}

impl Positions {
    /// Index `text`; a document that does not scan yields an empty index (the
    /// value parser reports the syntax error itself).
    pub fn index(text: &str) -> Self {
        let mut recv = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut recv, false);
        Self { map: recv.map }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut path = path;
        loop {
            if let Some(pos) = self.map.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    map: HashMap<String, (usize, usize)>,
}

impl Recorder {
    /// The path of the node that starts now, or `None` when it is a mapping key.
    fn next_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key }) => {
                let key = key.take().unwrap_or_default();
                Some(join(path, &key))
            }
            Some(Frame::Seq { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                Some(p)
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = (mark.line(), mark.col() + 1);
        match ev {
            Event::Scalar(value, ..) => match self.next_path() {
                Some(path) => {
                    self.map.entry(path).or_insert(pos);
                }
                None => {
                    if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                        // A block mapping's own mark lies after its first key, so
                        // the first key's position stands for the mapping.
                        self.map.entry(path.clone()).or_insert(pos);
                        self.map.insert(join(path, &value), pos);
                        *key = Some(value);
                    }
                }
            },
            Event::Alias(_) => {
                self.next_path();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                let path = self.next_path().unwrap_or_default();
                if !is_map {
                    self.map.entry(path.clone()).or_insert(pos);
                }
                self.stack.push(if is_map {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, next: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Replace `${NAME}` in every string of `value` with the environment variable
/// `NAME` (`$${` is a literal `${`). Unset variables are reported by path.
pub fn substitute_env(
    value: &mut serde_yaml::Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(String, String)>,
) {
    match value {
        serde_yaml::Value::String(s) if s.contains("${") => match expand(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => errors.push((path.to_owned(), message)),
        },
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), lookup, errors);
            }
        }
        serde_yaml::Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key
                    .as_str()
                    .map_or_else(|| format!("{key:?}"), str::to_owned);
                substitute_env(item, &join(path, &key), lookup, errors);
            }
        }
        _ => {}
    }
}

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            let end = t
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in {s:?}"))?;
            let name = &t[..end];
            let valid =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let value =
                lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_positions_of_nested_paths() {
        let text = "server:\n  listen: x\nrules:\n  - name: a\n    targets: [t1, t2]\n";
        let pos = Positions::index(text);
        assert_eq!(pos.find("server.listen"), Some((2, 3)));
        assert_eq!(pos.find("rules[0].name"), Some((4, 5)));
        assert_eq!(pos.find("rules[0].targets[1]"), Some((5, 19)));
        assert_eq!(pos.find("rules[0].filter.pattern"), Some((4, 5)));
        assert_eq!(pos.find("rules"), Some((3, 1)));
    }

    #[test]
    fn expands_environment_variables() {
        let lookup = |n: &str| (n == "TOKEN").then(|| "s3cret".to_owned());
        assert_eq!(expand("Bearer ${TOKEN}", &lookup).unwrap(), "Bearer s3cret");
        assert_eq!(expand("$${TOKEN} $5", &lookup).unwrap(), "${TOKEN} $5");
        assert!(expand("${MISSING}", &lookup)
            .unwrap_err()
            .contains("MISSING is not set"));
        assert!(expand("${TOKEN", &lookup).is_err());
    }
}
