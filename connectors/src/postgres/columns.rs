//! The values of a row: where each column's value comes from in the event, and its
//! conversion, in Rust, to the column's declared type.
//!
//! Converting before the write (rather than letting PostgreSQL cast text) lets a
//! bad value fail its own event with a message naming the column, instead of the
//! whole statement.

use super::config::{ColumnType, PostgresMode, PostgresTargetConfig};
use chrono::{DateTime, Utc};
use cloudevents::{AttributesReader, Data};
use serde_json::Value;
use sluice_router::event::event_key;
use sluice_router::event::Event;
use sluice_router::transform::{compile_path, JqProgram, JsonPath};
use uuid::Uuid;

/// Longest excerpt of a bad value quoted in an error.
const MAX_QUOTED: usize = 80;

/// One column sluice fills, besides the key.
#[derive(Debug)]
pub(super) struct Column {
    pub name: String,
    pub ty: ColumnType,
    origin: Origin,
}

/// Where a column's value comes from.
#[derive(Debug)]
enum Origin {
    Path(JsonPath),
    Jq(JqProgram),
    /// Columns of the standard event table (mode `event`).
    Id,
    Source,
    Type,
    Subject,
    Time,
    Data,
}

/// A value converted for its column; `Text` also carries numerics, in PostgreSQL's
/// numeric syntax.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Cell {
    Null,
    Text(String),
    Bigint(i64),
    Boolean(bool),
    Json(Value),
    Time(DateTime<Utc>),
}

/// The row an event becomes: its key and one cell per column.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub key: Uuid,
    pub cells: Vec<Cell>,
}

/// The columns of the standard event table, in order, after `event_key`.
pub(super) const EVENT_COLUMNS: [(&str, ColumnType); 6] = [
    ("id", ColumnType::Text),
    ("source", ColumnType::Text),
    ("type", ColumnType::Text),
    ("subject", ColumnType::Text),
    ("time", ColumnType::Timestamptz),
    ("data", ColumnType::Jsonb),
];

/// The key column of the standard event table.
pub(super) const EVENT_KEY_COLUMN: &str = "event_key";

/// The columns of `config`, with their paths and jq programs compiled (the config
/// was validated, so errors here only repeat what `sluice validate` says).
pub(super) fn compile(config: &PostgresTargetConfig) -> Result<Vec<Column>, String> {
    if config.mode == PostgresMode::Event {
        let origins = [
            Origin::Id,
            Origin::Source,
            Origin::Type,
            Origin::Subject,
            Origin::Time,
            Origin::Data,
        ];
        return Ok(EVENT_COLUMNS
            .iter()
            .zip(origins)
            .map(|((name, ty), origin)| Column {
                name: (*name).to_owned(),
                ty: *ty,
                origin,
            })
            .collect());
    }
    config
        .columns
        .iter()
        .map(|(name, c)| {
            let origin = match (&c.path, &c.jq) {
                (Some(path), None) => Origin::Path(
                    compile_path(path).map_err(|e| format!("columns.{name}.path: {e}"))?,
                ),
                (None, Some(program)) => Origin::Jq(
                    JqProgram::compile(program).map_err(|e| format!("columns.{name}.jq: {e}"))?,
                ),
                _ => {
                    return Err(format!(
                        "columns.{name}: needs exactly one of `path` or `jq`"
                    ))
                }
            };
            Ok(Column {
                name: name.clone(),
                ty: c.ty,
                origin,
            })
        })
        .collect()
}

/// Whether any column reads the event as JSON (a path or a jq program).
pub(super) fn needs_json(columns: &[Column]) -> bool {
    columns
        .iter()
        .any(|c| matches!(c.origin, Origin::Path(_) | Origin::Jq(_)))
}

/// The row for `event`, or why it cannot be written (`column total: "abc" is not a
/// numeric`): a permanent error for this event alone.
pub(super) fn row(columns: &[Column], json: bool, event: &Event) -> Result<Row, String> {
    let as_json = if json {
        Some(
            serde_json::to_value(event)
                .map_err(|e| format!("cannot read the event as JSON: {e}"))?,
        )
    } else {
        None
    };
    let mut cells = Vec::with_capacity(columns.len());
    for column in columns {
        let cell = cell(column, event, as_json.as_ref())
            .map_err(|e| format!("column {}: {e}", column.name))?;
        cells.push(cell);
    }
    Ok(Row {
        key: event_key(event),
        cells,
    })
}

fn cell(column: &Column, event: &Event, json: Option<&Value>) -> Result<Cell, String> {
    let text = |s: &str| Ok(Cell::Text(s.to_owned()));
    match &column.origin {
        Origin::Path(path) => match json.and_then(|j| path.get(j)) {
            Some(v) => convert(column.ty, v.clone()),
            None => Ok(Cell::Null),
        },
        Origin::Jq(program) => convert(column.ty, program.run(json.unwrap_or(&Value::Null))?),
        Origin::Id => text(event.id()),
        Origin::Source => text(event.source().as_str()),
        Origin::Type => text(event.ty()),
        Origin::Subject => Ok(event
            .subject()
            .map_or(Cell::Null, |s| Cell::Text(s.to_owned()))),
        Origin::Time => Ok(event.time().map_or(Cell::Null, |t| Cell::Time(*t))),
        Origin::Data => Ok(match event.data() {
            None => Cell::Null,
            Some(Data::Json(Value::Null)) => Cell::Null,
            Some(Data::Json(v)) => Cell::Json(v.clone()),
            Some(Data::String(s)) => Cell::Json(Value::String(s.clone())),
            // The base64 text CloudEvents' JSON format gives binary data.
            Some(Data::Binary(_)) => {
                let structured = serde_json::to_value(event).map_err(|e| e.to_string())?;
                match structured.get("data_base64") {
                    Some(Value::String(b64)) => Cell::Json(Value::String(b64.clone())),
                    _ => return Err("cannot encode the binary data as base64".into()),
                }
            }
        }),
    }
}

/// Convert one JSON value to a column of type `ty`. `null` is SQL NULL for every
/// type; other mismatches are errors quoting the value.
pub(super) fn convert(ty: ColumnType, value: Value) -> Result<Cell, String> {
    if value.is_null() {
        return Ok(Cell::Null);
    }
    let cell = match (ty, value) {
        (ColumnType::Text, Value::String(s)) => text(s)?,
        (ColumnType::Text, other) => text(other.to_string())?,
        (ColumnType::Jsonb, v) => {
            if has_nul(&v) {
                return Err("jsonb cannot hold the character U+0000".into());
            }
            Cell::Json(v)
        }
        (ColumnType::Numeric, Value::Number(n)) => Cell::Text(n.to_string()),
        (ColumnType::Numeric, Value::String(s)) if is_numeric(&s) => Cell::Text(s),
        (ColumnType::Bigint, Value::Number(n)) => match bigint(&n) {
            Some(i) => Cell::Bigint(i),
            None => {
                return Err(format!(
                    "{} is not a bigint (an integer from -2^63 to 2^63-1)",
                    n
                ))
            }
        },
        (ColumnType::Bigint, Value::String(s)) => match s.parse::<i64>() {
            Ok(i) => Cell::Bigint(i),
            Err(_) => {
                return Err(format!(
                    "{} is not a bigint (an integer from -2^63 to 2^63-1)",
                    quote(&Value::String(s))
                ))
            }
        },
        (ColumnType::Boolean, Value::Bool(b)) => Cell::Boolean(b),
        (ColumnType::Boolean, Value::String(s)) if s == "true" || s == "false" => {
            Cell::Boolean(s == "true")
        }
        (ColumnType::Timestamptz, Value::String(s)) => match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => Cell::Time(t.with_timezone(&Utc)),
            Err(e) => {
                return Err(format!(
                    "{} is not an RFC 3339 timestamp ({e})",
                    quote(&Value::String(s))
                ))
            }
        },
        (ColumnType::Timestamptz, other) => {
            return Err(format!("{} is not an RFC 3339 timestamp", quote(&other)))
        }
        (ty, other) => return Err(format!("{} is not a {}", quote(&other), ty.sql())),
    };
    Ok(cell)
}

fn text(s: String) -> Result<Cell, String> {
    if s.contains('\0') {
        return Err("text cannot hold the character U+0000".into());
    }
    Ok(Cell::Text(s))
}

fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// An integral JSON number that fits in a bigint (`3.0` and `1e3` count).
fn bigint(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?;
    // 2^63 is exactly representable; anything below it with no fraction fits.
    (f.fract() == 0.0 && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f))
        .then_some(f as i64)
}

/// PostgreSQL numeric syntax: `[+-]digits[.digits][e[+-]digits]`, or `.digits`.
fn is_numeric(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if b.get(i) == Some(&b'.') {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// A value as JSON, shortened for an error message.
fn quote(v: &Value) -> String {
    let text = v.to_string();
    if text.len() <= MAX_QUOTED {
        return text;
    }
    let mut end = MAX_QUOTED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use sluice_router::event::{EventFields, RawData};

    fn ok(ty: ColumnType, v: Value) -> Cell {
        convert(ty, v).unwrap()
    }

    fn err(ty: ColumnType, v: Value) -> String {
        convert(ty, v).unwrap_err()
    }

    #[test]
    fn numeric_takes_numbers_and_numeric_strings() {
        use ColumnType::Numeric;
        assert_eq!(ok(Numeric, json!(1.5)), Cell::Text("1.5".into()));
        assert_eq!(ok(Numeric, json!(-42)), Cell::Text("-42".into()));
        assert_eq!(ok(Numeric, json!(1e300)), Cell::Text("1e+300".into()));
        for s in [
            "12.50",
            "-0.5",
            ".5",
            "5.",
            "+3e-2",
            "123456789012345678901234567890",
        ] {
            assert_eq!(ok(Numeric, json!(s)), Cell::Text(s.into()), "{s}");
        }
        assert_eq!(err(Numeric, json!("abc")), "\"abc\" is not a numeric");
        for s in [
            "", ".", "1e", "1.2.3", " 1", "NaN", "Infinity", "0x10", "1,5",
        ] {
            assert!(convert(Numeric, json!(s)).is_err(), "{s:?}");
        }
        assert_eq!(err(Numeric, json!(true)), "true is not a numeric");
        assert_eq!(err(Numeric, json!({"a": 1})), "{\"a\":1} is not a numeric");
    }

    #[test]
    fn bigint_takes_integers_in_range() {
        use ColumnType::Bigint;
        assert_eq!(ok(Bigint, json!(7)), Cell::Bigint(7));
        assert_eq!(ok(Bigint, json!(i64::MIN)), Cell::Bigint(i64::MIN));
        assert_eq!(ok(Bigint, json!(3.0)), Cell::Bigint(3));
        assert_eq!(ok(Bigint, json!("-12")), Cell::Bigint(-12));
        assert!(err(Bigint, json!(1.5)).starts_with("1.5 is not a bigint"));
        assert!(err(Bigint, json!(u64::MAX)).starts_with("18446744073709551615 is not a bigint"));
        assert!(err(Bigint, json!(1e19)).contains("is not a bigint"));
        assert!(err(Bigint, json!("1.0")).starts_with("\"1.0\" is not a bigint"));
        assert_eq!(err(Bigint, json!(false)), "false is not a bigint");
    }

    #[test]
    fn boolean_timestamptz_jsonb_and_text() {
        assert_eq!(ok(ColumnType::Boolean, json!(true)), Cell::Boolean(true));
        assert_eq!(
            ok(ColumnType::Boolean, json!("false")),
            Cell::Boolean(false)
        );
        assert_eq!(err(ColumnType::Boolean, json!(1)), "1 is not a boolean");
        assert_eq!(
            err(ColumnType::Boolean, json!("yes")),
            "\"yes\" is not a boolean"
        );

        let t = ok(
            ColumnType::Timestamptz,
            json!("2024-05-06T07:08:09.5+02:00"),
        );
        assert_eq!(
            t,
            Cell::Time("2024-05-06T05:08:09.5Z".parse::<DateTime<Utc>>().unwrap())
        );
        assert!(err(ColumnType::Timestamptz, json!("yesterday"))
            .starts_with("\"yesterday\" is not an RFC 3339 timestamp"));
        assert_eq!(
            err(ColumnType::Timestamptz, json!(1700000000)),
            "1700000000 is not an RFC 3339 timestamp"
        );

        let doc = json!({"a": [1, "x"], "b": null});
        assert_eq!(ok(ColumnType::Jsonb, doc.clone()), Cell::Json(doc));
        assert_eq!(ok(ColumnType::Jsonb, json!("s")), Cell::Json(json!("s")));
        assert!(err(ColumnType::Jsonb, json!({"a": "\u{0}"})).contains("U+0000"));

        assert_eq!(
            ok(ColumnType::Text, json!("as is")),
            Cell::Text("as is".into())
        );
        assert_eq!(ok(ColumnType::Text, json!(12.5)), Cell::Text("12.5".into()));
        assert_eq!(
            ok(ColumnType::Text, json!({"k": [true]})),
            Cell::Text("{\"k\":[true]}".into())
        );
        assert!(err(ColumnType::Text, json!("a\u{0}b")).contains("U+0000"));
    }

    #[test]
    fn null_is_sql_null_for_every_type() {
        for ty in [
            ColumnType::Text,
            ColumnType::Numeric,
            ColumnType::Bigint,
            ColumnType::Boolean,
            ColumnType::Jsonb,
            ColumnType::Timestamptz,
        ] {
            assert_eq!(ok(ty, Value::Null), Cell::Null);
        }
    }

    #[test]
    fn long_values_are_shortened_in_errors() {
        let long = "x".repeat(500);
        let e = err(ColumnType::Numeric, json!(long));
        assert!(e.len() < 120 && e.contains("..."), "{e}");
    }

    fn config(json: Value) -> PostgresTargetConfig {
        serde_json::from_value(json).unwrap()
    }

    fn event(data: RawData) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "e-1")
            .attr("source", "/shop")
            .attr("type", "order.created")
            .attr("time", "2024-01-02T03:04:05Z")
            .data(data);
        f.build().unwrap()
    }

    #[test]
    fn rows_from_paths_and_jq_with_missing_values_null() {
        let c = config(json!({
            "name": "t", "url": "postgres://h/db", "table": "t",
            "columns": {
                "total": {"jq": ".data.total * 100", "type": "bigint"},
                "customer": {"path": "$.data.customer", "type": "text"},
                "absent": {"path": "$.data.nope", "type": "numeric"},
                "at": {"path": "$.time", "type": "timestamptz"},
            }
        }));
        let columns = compile(&c).unwrap();
        let e = event(RawData::Json(json!({"total": 1.25, "customer": "c-1"})));
        let row = row(&columns, needs_json(&columns), &e).unwrap();
        assert_eq!(row.key, event_key(&e));
        // BTreeMap order: absent, at, customer, total.
        assert_eq!(
            row.cells,
            vec![
                Cell::Null,
                Cell::Time("2024-01-02T03:04:05Z".parse().unwrap()),
                Cell::Text("c-1".into()),
                Cell::Bigint(125),
            ]
        );
        let bad = event(RawData::Json(json!({"total": "abc"})));
        let e = super::row(&columns, true, &bad).unwrap_err();
        assert!(e.starts_with("column total: "), "{e}");
    }

    #[test]
    fn event_mode_stores_text_and_bytes_as_json_strings() {
        let c =
            config(json!({"name": "t", "url": "postgres://h/db", "table": "t", "mode": "event"}));
        let columns = compile(&c).unwrap();
        assert!(!needs_json(&columns));
        let r = row(&columns, false, &event(RawData::Text("plain".into()))).unwrap();
        assert_eq!(r.cells[0], Cell::Text("e-1".into()));
        assert_eq!(r.cells[3], Cell::Null, "no subject");
        assert_eq!(r.cells[5], Cell::Json(json!("plain")));
        let r = row(&columns, false, &event(RawData::Bytes(b"hello".to_vec()))).unwrap();
        assert_eq!(r.cells[5], Cell::Json(json!("aGVsbG8=")));
        let r = row(&columns, false, &event(RawData::Json(json!({"a": 1})))).unwrap();
        assert_eq!(r.cells[5], Cell::Json(json!({"a": 1})));
    }
}
