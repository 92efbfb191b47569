//! A rule's transform: one of the engines (or a constant, a path, the data itself)
//! produces the delivered event's `data`, and `set` rewrites attributes. The
//! original `id` (and `source`, unless `set` names it) stays, so idempotent sinks
//! recognise a redelivery.

use cloudevents::event::ExtensionValue;
use cloudevents::{AttributesWriter, Data};
use serde_json::Value;

use super::{compile_path, JqProgram, JsonPath, Template, TemplateBody};
use crate::config::TransformConfig;
use crate::event::Event;

enum Output {
    Jq(JqProgram),
    Template(Template),
    Path(JsonPath),
    Constant(Value),
    Data,
}

/// A compiled transform.
pub struct Transform {
    output: Output,
    set: Vec<(String, String)>,
}

/// A problem in a transform, at a path relative to `transform`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformError {
    pub path: String,
    pub message: String,
}

/// Attributes `set` may not change, and why.
fn fixed(name: &str) -> Option<&'static str> {
    match name {
        "id" => Some("the original id is kept so idempotent sinks recognise redeliveries"),
        "specversion" => Some("sluice delivers CloudEvents 1.0"),
        "data" | "data_base64" => Some("the transform's output is the data"),
        _ => None,
    }
}

impl Transform {
    pub fn compile(config: &TransformConfig) -> Result<Self, Vec<TransformError>> {
        let mut errors = Vec::new();
        let err = |path: &str, message: String| TransformError {
            path: path.to_owned(),
            message,
        };
        let given = [
            config.jq.is_some(),
            config.template.is_some(),
            config.path.is_some(),
            config.constant.is_some(),
            config.data.is_some(),
        ];
        let count = given.iter().filter(|g| **g).count();
        if count != 1 {
            errors.push(err(
                "",
                format!("give exactly one of jq, template, path, constant or data (found {count})"),
            ));
        }
        let mut output = Output::Data;
        if let Some(program) = &config.jq {
            match JqProgram::compile(program) {
                Ok(p) => output = Output::Jq(p),
                Err(e) => errors.push(err("jq", e)),
            }
        }
        if let Some(t) = &config.template {
            let body = match &t.template {
                Value::String(s) => TemplateBody::Text(s.clone()),
                other => TemplateBody::Json(other.clone()),
            };
            match Template::compile(&t.input_paths, &body) {
                Ok(t) => output = Output::Template(t),
                Err(e) => errors.push(err("template", e)),
            }
        }
        if let Some(p) = &config.path {
            match compile_path(p) {
                Ok(p) => output = Output::Path(p),
                Err(e) => errors.push(err("path", e)),
            }
        }
        if let Some(c) = &config.constant {
            output = Output::Constant(c.clone());
        }
        if config.data == Some(false) {
            errors.push(err(
                "data",
                "only `data: true` means something; remove it".into(),
            ));
        }
        for name in config.set.keys() {
            if let Some(why) = fixed(name) {
                errors.push(err(&format!("set.{name}"), format!("cannot be set: {why}")));
            } else if !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                || name.is_empty()
            {
                errors.push(err(
                    &format!("set.{name}"),
                    "attribute names are lower-case letters and digits (CloudEvents 1.0)".into(),
                ));
            } else if name == "time" {
                if let Err(e) = chrono::DateTime::parse_from_rfc3339(&config.set[name]) {
                    errors.push(err("set.time", format!("not an RFC 3339 timestamp: {e}")));
                }
            } else if name == "dataschema" {
                if let Err(e) = url::Url::parse(&config.set[name]) {
                    errors.push(err("set.dataschema", format!("not an absolute URI: {e}")));
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            output,
            set: config
                .set
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
    }

    /// The event to deliver, or why this event cannot be transformed.
    pub fn apply(&self, event: &Event) -> Result<Event, String> {
        let mut out = event.clone();
        let data = match &self.output {
            Output::Data => None,
            Output::Constant(v) => Some(v.clone()),
            Output::Jq(p) => Some(p.run(&input(event)?)?),
            Output::Template(t) => Some(t.render(&input(event)?)?),
            Output::Path(p) => {
                let whole = input(event)?;
                Some(p.get(&whole).cloned().unwrap_or(Value::Null))
            }
        };
        if let Some(data) = data {
            out.set_data("application/json", Data::Json(data));
        }
        for (name, value) in &self.set {
            match name.as_str() {
                "type" => {
                    out.set_type(value.as_str());
                }
                "source" => {
                    out.set_source(value.as_str());
                }
                "subject" => {
                    out.set_subject(Some(value.as_str()));
                }
                "datacontenttype" => {
                    out.set_datacontenttype(Some(value.as_str()));
                }
                "dataschema" => {
                    out.set_dataschema(url::Url::parse(value).ok());
                }
                "time" => {
                    let t =
                        chrono::DateTime::parse_from_rfc3339(value).map_err(|e| e.to_string())?;
                    out.set_time(Some(t.with_timezone(&chrono::Utc)));
                }
                ext => {
                    out.set_extension(ext, ExtensionValue::String(value.clone()));
                }
            }
        }
        Ok(out)
    }
}

/// The event as jq and templates see it: the CloudEvents JSON format, with JSON
/// data as JSON and other data as a string (or `data_base64`).
fn input(event: &Event) -> Result<Value, String> {
    serde_json::to_value(event).map_err(|e| format!("event could not be read as JSON: {e}"))
}
