//! Settings of the storage targets (PostgreSQL, Elasticsearch/OpenSearch, S3
//! objects) and of the batching they share, with their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{defaults, DurationString};
use super::Collector;
use crate::transform::name::NameTemplate;

/// How a storage target groups events into one write. A batch is written when it
/// holds `max_events` events or `max_bytes` bytes, or when its oldest event has
/// waited `max_wait`; it is acknowledged only once the far side confirmed it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Events in one write at most.
    #[serde(default = "defaults::batch_max_events")]
    pub max_events: usize,
    /// Bytes of events (as stored, JSON) in one write at most; a single larger
    /// event is written alone.
    #[serde(default = "defaults::batch_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more events.
    #[serde(default = "defaults::batch_max_wait", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_wait: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: defaults::batch_max_events(),
            max_bytes: defaults::batch_max_bytes(),
            max_wait: defaults::batch_max_wait(),
        }
    }
}

/// Batching of a target that streams events one by one on the far side (`kafka`,
/// `discard`): like [`BatchConfig`], but a batch goes out as soon as a delivery slot
/// is free (`max_wait` 0s): the Kafka producer's own `linger` does the waiting, and
/// a lone event should not sit in sluice. A separate type so that each key's
/// default is right when only some are given.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamBatchConfig {
    /// Events handed over together at most.
    #[serde(default = "defaults::batch_max_events")]
    pub max_events: usize,
    /// Bytes of events (as stored, JSON) together at most.
    #[serde(default = "defaults::batch_max_bytes")]
    pub max_bytes: usize,
    /// How long a batch that is not full waits for more events.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_wait: Duration,
}

impl Default for StreamBatchConfig {
    fn default() -> Self {
        Self {
            max_events: defaults::batch_max_events(),
            max_bytes: defaults::batch_max_bytes(),
            max_wait: Duration::ZERO,
        }
    }
}

impl From<&StreamBatchConfig> for BatchConfig {
    fn from(b: &StreamBatchConfig) -> Self {
        Self {
            max_events: b.max_events,
            max_bytes: b.max_bytes,
            max_wait: b.max_wait,
        }
    }
}

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
    #[serde(default = "defaults::key_column")]
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
    #[serde(default = "defaults::http_timeout", with = "humantime_serde")]
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

/// Index events as documents through `_bulk`, with `_id` the event key (a UUID of
/// `source` + `id`), so a redelivered event overwrites itself.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// The cluster, `http://host:9200` or `https://...`.
    pub url: String,
    /// Index name template: `%Y`, `%m`, `%d`, `%H` from the event time, `{field}`
    /// from the event, e.g. `logs-%Y.%m.%d`.
    pub index: String,
    /// Basic or API-key authentication.
    #[serde(default)]
    pub auth: Option<ElasticsearchAuth>,
    /// An ingest pipeline to run documents through.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// `event` (default): the whole CloudEvent as the document. `data`: only its
    /// JSON data.
    #[serde(default)]
    pub document: DocumentMode,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Bulk requests in flight at once, at most (per subscription).
    #[serde(default = "defaults::storage_concurrency")]
    pub concurrency: usize,
    /// Time allowed for one bulk request.
    #[serde(default = "defaults::http_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
}

/// Elasticsearch credentials: `{username, password}` or `{api_key}`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields, try_from = "AuthFields")]
pub enum ElasticsearchAuth {
    Basic { username: String, password: String },
    ApiKey { api_key: String },
}

/// The keys `auth` may hold, read before deciding which kind it is, so that a
/// wrong mix is named (rather than "did not match any variant").
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFields {
    username: Option<String>,
    password: Option<String>,
    api_key: Option<String>,
}

impl TryFrom<AuthFields> for ElasticsearchAuth {
    type Error = &'static str;

    fn try_from(fields: AuthFields) -> Result<Self, Self::Error> {
        match fields {
            AuthFields {
                username: Some(username),
                password: Some(password),
                api_key: None,
            } => Ok(Self::Basic { username, password }),
            AuthFields {
                username: None,
                password: None,
                api_key: Some(api_key),
            } => Ok(Self::ApiKey { api_key }),
            _ => Err("needs either `username` and `password`, or `api_key` alone"),
        }
    }
}

/// What an Elasticsearch document holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentMode {
    #[default]
    Event,
    Data,
}

/// Write batches of events as objects (JSON lines, optionally gzip) in an
/// S3-compatible bucket. The events of a batch are grouped by the key each one
/// renders to (its time partition); a group's `{uuid}` is the event key of its first
/// event, so a retried batch rewrites the same object instead of adding one.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3TargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000`; none: AWS for `region`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "defaults::s3_region")]
    pub region: String,
    pub bucket: String,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and most
    /// self-hosted servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Object key template: `%Y`, `%m`, `%d`, `%H` from the event's time,
    /// `{field}` from the event, `{uuid}` (required) the event key of the first
    /// event of the object. Default `events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz`
    /// (`.jsonl` without compression).
    #[serde(default)]
    pub key: Option<String>,
    /// `jsonl`: one CloudEvent (structured JSON) per line.
    #[serde(default)]
    pub format: ObjectFormat,
    /// `gzip` (default) or `none`.
    #[serde(default)]
    pub compression: ObjectCompression,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB).
    #[serde(default = "defaults::s3_part_bytes")]
    pub part_bytes: usize,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Uploads in flight at once, at most (per subscription).
    #[serde(default = "defaults::s3_concurrency")]
    pub concurrency: usize,
    /// Time allowed for one object's upload.
    #[serde(default = "defaults::s3_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
}

impl S3TargetConfig {
    /// The object key template, `key` or the default for the compression.
    pub fn key_template(&self) -> String {
        match (&self.key, self.compression) {
            (Some(key), _) => key.clone(),
            (None, ObjectCompression::Gzip) => defaults::s3_key(),
            (None, ObjectCompression::None) => {
                defaults::s3_key().trim_end_matches(".gz").to_owned()
            }
        }
    }

    /// Whether `endpoint` is `http(s)://host[:port]`, as the S3 client needs it;
    /// `Err` says what is wrong.
    pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
        let bad = |why: &str| Err(format!("{endpoint:?} is not an S3 endpoint: {why}"));
        let Some((scheme, rest)) = endpoint.split_once("://") else {
            return bad("expected http://host[:port] or https://host[:port]");
        };
        if scheme != "http" && scheme != "https" {
            return bad("the scheme must be http or https");
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return bad("it has a path; give only scheme://host[:port]");
        }
        let (host, port) = match authority.find(']') {
            // `[v6 address]` or `[v6 address]:port`
            Some(end) => (&authority[..=end], authority[end + 1..].strip_prefix(':')),
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        if host.len() < authority.len() && port.is_none() {
            return bad("expected host:port");
        }
        let host_ok = if let Some(ip6) = host.strip_prefix('[') {
            ip6.strip_suffix(']')
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        } else {
            !host.is_empty()
                && host.split('.').all(|label| {
                    !label.is_empty()
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if !host_ok {
            return bad("the host name is not valid");
        }
        if port.is_some_and(|p| p.parse::<u16>().map_or(true, |p| p == 0)) {
            return bad("the port must be a number from 1 to 65535");
        }
        Ok(())
    }
}

/// The layout of an S3 object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectFormat {
    #[default]
    Jsonl,
}

/// The compression of an S3 object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObjectCompression {
    #[default]
    Gzip,
    None,
}

/// Drop every event: a target for trying rules, and for benchmarks.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// Batches confirmed at once, at most (per subscription).
    #[serde(default = "defaults::stream_concurrency")]
    pub concurrency: usize,
    /// How many events are confirmed together.
    #[serde(default)]
    pub batch: StreamBatchConfig,
}

pub(super) fn validate_batch(
    c: &mut Collector<'_>,
    at: &str,
    batch: &BatchConfig,
    concurrency: usize,
) {
    if concurrency == 0 || concurrency > 256 {
        c.push(format!("{at}.concurrency"), "must be between 1 and 256");
    }
    if batch.max_events == 0 {
        c.push(format!("{at}.batch.max_events"), "must be at least 1");
    }
    if batch.max_bytes == 0 {
        c.push(format!("{at}.batch.max_bytes"), "must be at least 1");
    }
}

fn validate_url(c: &mut Collector<'_>, at: &str, key: &str, url: &str, schemes: &[&str]) {
    let ok = url
        .split_once("://")
        .is_some_and(|(scheme, rest)| schemes.contains(&scheme) && !rest.is_empty());
    if !ok {
        c.push(
            format!("{at}.{key}"),
            format!(
                "{url:?} is not a URL starting with {}",
                schemes.join(":// or ") + "://"
            ),
        );
    }
}

fn validate_template(c: &mut Collector<'_>, at: &str, key: &str, template: &str) {
    if let Err(e) = NameTemplate::parse(template) {
        c.push(format!("{at}.{key}"), e);
    }
}

/// Names PostgreSQL takes unquoted: letters, digits and `_`, not starting with a digit.
fn is_sql_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn validate_postgres(c: &mut Collector<'_>, i: usize, t: &PostgresTargetConfig) {
    let at = format!("targets[{i}]");
    validate_url(c, &at, "url", &t.url, &["postgres", "postgresql"]);
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
    validate_batch(c, &at, &t.batch, t.concurrency);
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
                if let Err(e) = crate::transform::compile_path(path) {
                    c.push(format!("{here}.path"), e);
                }
            }
            (None, Some(program)) => {
                if let Err(e) = crate::transform::JqProgram::compile(program) {
                    c.push(format!("{here}.jq"), e.to_string());
                }
            }
            _ => c.push(&here, "needs exactly one of `path` or `jq`"),
        }
    }
}

pub(super) fn validate_elasticsearch(
    c: &mut Collector<'_>,
    i: usize,
    t: &ElasticsearchTargetConfig,
) {
    let at = format!("targets[{i}]");
    validate_url(c, &at, "url", &t.url, &["http", "https"]);
    validate_batch(c, &at, &t.batch, t.concurrency);
    validate_template(c, &at, "index", &t.index);
    // Index names are lowercase and may not hold these (Elasticsearch's rules);
    // checked on the fixed text, outside `{field}` and `%` date parts.
    let mut fixed = String::new();
    let mut chars = t.index.chars();
    let mut in_field = false;
    while let Some(ch) = chars.next() {
        match ch {
            '{' => in_field = true,
            '}' => in_field = false,
            '%' if !in_field => {
                chars.next();
            }
            _ if !in_field => fixed.push(ch),
            _ => {}
        }
    }
    if let Some(bad) = fixed
        .chars()
        .find(|ch| ch.is_ascii_uppercase() || " \\/*?\"<>|,#:".contains(*ch))
    {
        c.push(
            format!("{at}.index"),
            format!(
                "{:?} is not an index name: {bad:?} is not allowed{}",
                t.index,
                if bad.is_ascii_uppercase() {
                    " (index names are lowercase)"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some(first @ ('_' | '-' | '+')) = t.index.chars().next() {
        c.push(
            format!("{at}.index"),
            format!(
                "{:?} is not an index name: it may not start with {first:?}",
                t.index
            ),
        );
    }
}

pub(super) fn validate_s3(c: &mut Collector<'_>, i: usize, t: &S3TargetConfig) {
    let at = format!("targets[{i}]");
    if let Some(endpoint) = &t.endpoint {
        if let Err(e) = S3TargetConfig::check_endpoint(endpoint) {
            c.push(format!("{at}.endpoint"), e);
        }
    }
    validate_batch(c, &at, &t.batch, t.concurrency);
    let key = t.key_template();
    validate_template(c, &at, "key", &key);
    if !key.contains("{uuid}") {
        c.push(
            format!("{at}.key"),
            format!("{key:?} has no `{{uuid}}`: without it every batch of a partition would overwrite the last"),
        );
    }
    if key.starts_with('/') || key.ends_with('/') || key.contains("//") {
        c.push(
            format!("{at}.key"),
            format!("{key:?} is not an object key: no leading, trailing or double `/`"),
        );
    }
    let b = &t.bucket;
    if b.len() < 3
        || b.len() > 63
        || !b
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        || b.contains("..")
    {
        c.push(
            format!("{at}.bucket"),
            format!("{b:?} is not a bucket name: 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"),
        );
    }
    if t.part_bytes < 5 * 1024 * 1024 {
        c.push(
            format!("{at}.part_bytes"),
            "must be at least 5 MiB (5242880), S3's smallest part",
        );
    }
}
