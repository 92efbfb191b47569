//! Transforms applied before delivery: pure functions from one JSON payload to another,
//! compiled once from config and then run on every event.
//!
//! Two engines, for two kinds of user:
//!
//! - [`jq`]: a full jq program (via jaq), for reshaping, filtering arrays, arithmetic
//!   and string functions. Each run must yield exactly one value. Programs are trusted
//!   config: a runaway `until`/`repeat` is not stopped.
//! - [`template`]: an EventBridge-style input transformer. Named JSON paths pick values
//!   out of the event, and a JSON or text template places them with `<name>`
//!   placeholders. No expressions, no loops: what you see is what is sent.
//!
//! [`path`] is the JSON path language the templates use (`$.data.items[0].sku`);
//! it is public so that a transform can also just pick one value.
//!
//! Errors are human-readable `String`s: compile errors are meant for `sluice validate`,
//! run errors for the dead-letter reason.

pub mod jq;
pub mod name;
pub mod path;
mod rule;
pub mod template;

pub use jq::JqProgram;
pub use name::NameTemplate;
pub use path::{compile_path, JsonPath};
pub use rule::{Transform, TransformError};
pub use template::{Template, TemplateBody};
