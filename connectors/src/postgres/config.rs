//! The PostgreSQL target's settings and their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    defaults, validate_batch, validate_url, BatchConfig, DurationString, TargetSpec, Validator,
};
use sluice_router::transform::{compile_path, JqProgram};

/// Insert events as rows of a PostgreSQL table, idempotently: every row carries the
/// event's key (a UUID of `source` + `id`) under a unique constraint, so a
/// redelivered event is skipped (or updated, with `upsert`).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// Connection URL, `postgres://user:password@host:port/database`.
    pub url: String,
    /// The table, optionally schema-qualified (`analytics.orders`).
    pub table: String,
    /// `columns` (default): one column per entry of `columns`, plus `key_column`.
    /// `event`: the standard event table (`event_key uuid primary key, id, source,
    /// type, subject, time, data jsonb`).
    #[serde(default)]
    pub mode: PostgresMode,
    /// Column name -> where its value comes from and its type (mode `columns`).
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
    /// The column holding the event key; it must be `uuid` with a unique
    /// constraint or primary key (mode `columns`).
    #[serde(default = "key_column")]
    pub key_column: String,
    /// Update an existing row with the redelivered event's values instead of
    /// skipping it.
    #[serde(default)]
    pub upsert: bool,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Batches in flight at once, at most (per subscription).
    #[serde(default = "defaults::storage_concurrency")]
    pub concurrency: usize,
    /// Time allowed for one batch's transaction.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
}

/// What a PostgreSQL target writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PostgresMode {
    #[default]
    Columns,
    Event,
}

/// One column of a PostgreSQL target: exactly one of `path` or `jq`, and its type.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// A path into the event as JSON, e.g. `$.data.order.id`, `$.id`, `$.time`.
    #[serde(default)]
    pub path: Option<String>,
    /// A jq program over the event, e.g. `.data.total * 100`.
    #[serde(default)]
    pub jq: Option<String>,
    /// The column's type.
    #[serde(rename = "type")]
    pub ty: ColumnType,
}

/// The column types a PostgreSQL target writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    Text,
    Numeric,
    Bigint,
    Boolean,
    Jsonb,
    Timestamptz,
}

impl ColumnType {
    /// The PostgreSQL type name.
    pub fn sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Numeric => "numeric",
            Self::Bigint => "bigint",
            Self::Boolean => "boolean",
            Self::Jsonb => "jsonb",
            Self::Timestamptz => "timestamptz",
        }
    }
}

impl TargetSpec for PostgresTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "postgres"
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some(self.batch.clone())
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate(v, at, self);
    }
}

fn key_column() -> String {
    "event_key".into()
}

/// Names PostgreSQL takes unquoted: letters, digits and `_`, not starting with a digit.
fn is_sql_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate(c: &mut Validator<'_>, at: &str, t: &PostgresTargetConfig) {
    validate_url(c, at, "url", &t.url, &["postgres", "postgresql"]);
    if t.url.contains("sslmode=require") {
        c.push(
            format!("{at}.url"),
            "sslmode=require needs TLS, which the postgres target does not support yet; \
             use sslmode=disable or prefer",
        );
    }
    if t.timeout.is_zero() {
        c.push(format!("{at}.timeout"), "must be more than 0");
    }
    validate_batch(c, at, &t.batch, t.concurrency);
    if t.table.split('.').count() > 2 || !t.table.split('.').all(is_sql_name) {
        c.push(
            format!("{at}.table"),
            format!(
                "{:?} is not a table name (letters, digits, `_`; optionally schema.table)",
                t.table
            ),
        );
    }
    match t.mode {
        PostgresMode::Event if !t.columns.is_empty() => c.push(
            format!("{at}.columns"),
            "mode `event` writes the standard event table; remove `columns` or use mode `columns`",
        ),
        PostgresMode::Columns if t.columns.is_empty() => c.push(
            format!("{at}.columns"),
            "mode `columns` needs at least one column (or use mode `event`)",
        ),
        _ => {}
    }
    if !is_sql_name(&t.key_column) {
        c.push(
            format!("{at}.key_column"),
            format!("{:?} is not a column name", t.key_column),
        );
    }
    for (name, column) in &t.columns {
        let here = format!("{at}.columns.{name}");
        if !is_sql_name(name) {
            c.push(&here, "is not a column name (letters, digits and `_`)");
        }
        if name == &t.key_column {
            c.push(
                &here,
                format!("`{name}` is the key column; sluice fills it with the event key"),
            );
        }
        match (&column.path, &column.jq) {
            (Some(path), None) => {
                if let Err(e) = compile_path(path) {
                    c.push(format!("{here}.path"), e);
                }
            }
            (None, Some(program)) => {
                if let Err(e) = JqProgram::compile(program) {
                    c.push(format!("{here}.jq"), e.to_string());
                }
            }
            _ => c.push(&here, "needs exactly one of `path` or `jq`"),
        }
    }
}
