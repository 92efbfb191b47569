//! The Elasticsearch/OpenSearch target's settings and their validation.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    defaults, validate_batch, validate_template, validate_url, BatchConfig, DurationString,
    TargetSpec, Validator,
};

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
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
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

impl TargetSpec for ElasticsearchTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "elasticsearch"
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

fn validate(c: &mut Validator<'_>, at: &str, t: &ElasticsearchTargetConfig) {
    validate_url(c, at, "url", &t.url, &["http", "https"]);
    validate_batch(c, at, &t.batch, t.concurrency);
    validate_template(c, at, "index", &t.index);
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
