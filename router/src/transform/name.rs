//! Name templates that targets fill in from an event: a Kafka topic or key, an
//! Elasticsearch index, an S3 object key.
//!
//! `{field}` is an attribute (`{type}`, `{partitionkey}`) or a path into JSON data
//! (`{data.region}`); `%Y`, `%m`, `%d`, `%H`, ... (strftime) are date parts of the
//! event's `time`. A target may also supply its own variables (the S3 target's
//! `{uuid}`), which win over attributes of the same name.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use cloudevents::AttributesReader;

use crate::event::{field_values, Event, FieldValue};

/// A piece of a template: literal text, or what stood between `{` and `}`
/// (trimmed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Braced<'a> {
    Text(&'a str),
    Part(&'a str),
}

/// Split `text` at its `{...}` parts (the one syntax of sluice's templates; each
/// kind of template judges its parts). An unclosed `{` is an error naming where.
pub fn braced(text: &str) -> Result<Vec<Braced<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!(
                "`{{` at byte {} is never closed",
                text.len() - rest.len() + open
            ));
        };
        if open > 0 {
            pieces.push(Braced::Text(&rest[..open]));
        }
        pieces.push(Braced::Part(rest[open + 1..open + close].trim()));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Braced::Text(rest));
    }
    Ok(pieces)
}

/// A parsed template; see the module docs.
#[derive(Debug, Clone)]
pub struct NameTemplate {
    pieces: Vec<Piece>,
    has_time: bool,
}

#[derive(Debug, Clone)]
enum Piece {
    /// Literal text, possibly with strftime parts (checked at parse).
    Text(String),
    Field(Vec<String>),
}

impl NameTemplate {
    /// Parse `text`; an unclosed `{`, an empty `{}` or an unknown `%` part is an
    /// error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        for part in braced(text)? {
            pieces.push(match part {
                Braced::Text(t) => Piece::Text(t.to_owned()),
                Braced::Part(name) => {
                    if name.is_empty() || name.split('.').any(str::is_empty) {
                        return Err(format!("`{{{name}}}` is not a field name"));
                    }
                    Piece::Field(name.split('.').map(str::to_owned).collect())
                }
            });
        }
        let mut has_time = false;
        for piece in &pieces {
            if let Piece::Text(t) = piece {
                if t.contains('%') {
                    if StrftimeItems::new(t).any(|item| matches!(item, Item::Error)) {
                        return Err(format!(
                            "{t:?} has a `%` that is not a date part (use %% for a literal %)"
                        ));
                    }
                    has_time = true;
                }
            }
        }
        Ok(Self { pieces, has_time })
    }

    /// Whether the template uses date parts.
    pub fn has_time(&self) -> bool {
        self.has_time
    }

    /// The text for `event`. `vars` are the target's own variables; `now` is the
    /// time used for date parts when the event has no `time`. A missing field is an
    /// error naming it.
    pub fn render(
        &self,
        event: &Event,
        vars: &[(&str, &str)],
        now: DateTime<Utc>,
    ) -> Result<String, String> {
        let time = event.time().copied().unwrap_or(now);
        let mut out = String::new();
        let mut values = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) if t.contains('%') => {
                    use std::fmt::Write;
                    let _ = write!(out, "{}", time.format(t));
                }
                Piece::Text(t) => out.push_str(t),
                Piece::Field(path) => {
                    if let [name] = path.as_slice() {
                        if let Some((_, v)) = vars.iter().find(|(k, _)| k == name) {
                            out.push_str(v);
                            continue;
                        }
                    }
                    values.clear();
                    field_values(event, path, &mut values);
                    match values.first() {
                        Some(FieldValue::Str(s)) => out.push_str(s),
                        Some(FieldValue::Num(n)) => out.push_str(&n.to_string()),
                        Some(FieldValue::Bool(b)) => out.push_str(&b.to_string()),
                        _ => return Err(format!("the event has no {}", path.join("."))),
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
    use crate::event::{EventFields, RawData};

    fn event(time: Option<&str>) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "1")
            .attr("source", "/s")
            .attr("type", "order.created")
            .attr("partitionkey", "c-7")
            .data(RawData::Json(serde_json::json!({"region": "eu", "n": 3})));
        if let Some(t) = time {
            f.attr("time", t);
        }
        f.build().unwrap()
    }

    fn render(t: &str, e: &Event) -> Result<String, String> {
        NameTemplate::parse(t)?.render(e, &[("uuid", "U")], DateTime::UNIX_EPOCH)
    }

    #[test]
    fn fields_date_parts_and_vars() {
        let e = event(Some("2026-11-29T13:05:00Z"));
        assert_eq!(render("events-{type}", &e).unwrap(), "events-order.created");
        assert_eq!(
            render("{data.region}/{partitionkey}/{data.n}", &e).unwrap(),
            "eu/c-7/3"
        );
        assert_eq!(render("logs-%Y.%m.%d", &e).unwrap(), "logs-2026.11.29");
        assert_eq!(
            render("e/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz", &e).unwrap(),
            "e/dt=2026-11-29/hour=13/U.jsonl.gz"
        );
        // No event time: the supplied clock.
        assert_eq!(render("%Y", &event(None)).unwrap(), "1970");
        // A field value is never read as a date part.
        assert_eq!(render("fixed%%", &e).unwrap(), "fixed%");
        assert!(render("{data.missing}", &e)
            .unwrap_err()
            .contains("data.missing"));
    }

    #[test]
    fn bad_templates_are_named() {
        assert!(NameTemplate::parse("logs-{type")
            .unwrap_err()
            .contains("never closed"));
        assert!(NameTemplate::parse("a{}b")
            .unwrap_err()
            .contains("not a field name"));
        assert!(NameTemplate::parse("logs-%Q")
            .unwrap_err()
            .contains("date part"));
    }
}
