//! The S3 source's settings and their validation.
//!
//! Settings that only one mode uses are `Option`s, so that giving one to the
//! other mode is an error naming it instead of a silently ignored key; their
//! defaults live in the accessors below.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{defaults, DurationString, SourceSpec, Validator};

use super::config::{check_bucket, S3TargetConfig};

/// Object events of an S3-compatible bucket (AWS S3, MinIO, Alibaba OSS), each
/// a CloudEvent mapped as the CloudEvents AWS S3 adapter says. `mode: notify`:
/// the store posts its bucket notifications to
/// `POST /sources/<name>/notifications` on sluice's server. `mode: poll`:
/// sluice lists the bucket every `interval` and keeps what it has seen in its
/// store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// How object events come in: `notify` (the store posts notifications) or
    /// `poll` (sluice lists the bucket on an interval).
    pub mode: S3SourceMode,
    /// `poll`: the bucket listed (required). `notify`: only this bucket's
    /// records are taken, a notification naming another bucket is refused
    /// (400); none: any bucket. Required with `content: inline`.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
    /// `source` of the events instead of the adapter's
    /// `{eventSource}.{region}.{bucket}`; `{bucket}` and `{region}` are replaced.
    #[serde(default)]
    pub event_source: Option<String>,
    /// The S3 endpoint, e.g. `http://127.0.0.1:9000`; none: AWS for `region`.
    /// For `mode: poll` and `content: inline`. Credentials come from the
    /// environment, as for the S3 target.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The bucket's region (default `us-east-1`). For `mode: poll` and
    /// `content: inline`.
    #[serde(default)]
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), as MinIO and most
    /// self-hosted servers need (default false). For `mode: poll` and
    /// `content: inline`.
    #[serde(default)]
    pub path_style: Option<bool>,
    /// `poll`: only keys that start with this are listed, e.g. `uploads/`
    /// (default: the whole bucket).
    #[serde(default)]
    pub prefix: Option<String>,
    /// `poll`: time from the start of one pass over the bucket to the start of
    /// the next (default 30s, at least 100ms).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<DurationString>")]
    pub interval: Option<Duration>,
    /// `poll`: also publish `ObjectRemoved:Delete` for objects gone since the
    /// last pass (default false).
    #[serde(default)]
    pub deletes: Option<bool>,
    /// `poll`: whether the objects already in the bucket on the very first
    /// pass are events: `now` (default: no, only later changes) or `all`.
    #[serde(default)]
    pub start: Option<PollStart>,
    /// What `data` holds: `none` (default: the notification record), or
    /// `inline`: the object's bytes (JSON when they parse, else
    /// `data_base64`) for objects up to `server.max_event_bytes`, and for
    /// larger ones the record with a `dataref` extension `s3://bucket/key`.
    #[serde(default)]
    pub content: Content,
}

/// How an `s3` source learns of object events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum S3SourceMode {
    /// The store posts bucket notifications to `POST /sources/<name>/notifications`.
    Notify,
    /// List the bucket every `interval`.
    Poll,
}

/// Whether objects present on a poller's very first pass are events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PollStart {
    /// Record them as seen, publish nothing for them.
    #[default]
    Now,
    /// Publish `ObjectCreated:Put` for each.
    All,
}

/// What an object event's `data` holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// The notification record.
    #[default]
    None,
    /// The object's bytes when they fit `server.max_event_bytes`, else a
    /// `dataref`.
    Inline,
}

/// The shortest `interval` taken.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl S3SourceConfig {
    pub fn region(&self) -> &str {
        self.region.as_deref().unwrap_or("us-east-1")
    }
    pub fn path_style(&self) -> bool {
        self.path_style.unwrap_or(false)
    }
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or("")
    }
    pub fn interval(&self) -> Duration {
        self.interval.unwrap_or(Duration::from_secs(30))
    }
    pub fn deletes(&self) -> bool {
        self.deletes.unwrap_or(false)
    }
    pub fn start(&self) -> PollStart {
        self.start.unwrap_or_default()
    }
    /// Whether the source reads the bucket itself (and so needs a client).
    pub fn reads_bucket(&self) -> bool {
        self.mode == S3SourceMode::Poll || self.content == Content::Inline
    }
}

impl SourceSpec for S3SourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "s3"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        match &self.bucket {
            Some(bucket) => {
                if let Err(e) = check_bucket(bucket) {
                    v.push(format!("{at}.bucket"), e);
                }
            }
            None if self.mode == S3SourceMode::Poll => {
                v.push(format!("{at}.bucket"), "is required with `mode: poll`");
            }
            None if self.content == Content::Inline => v.push(
                format!("{at}.bucket"),
                "is required with `content: inline` (the bucket objects are read from)",
            ),
            None => {}
        }
        if let Some(source) = &self.event_source {
            if source.trim().is_empty() {
                v.push(format!("{at}.event_source"), "must not be empty");
            } else if source.chars().any(char::is_whitespace) {
                v.push(
                    format!("{at}.event_source"),
                    format!("{source:?} is not a URI-reference: no spaces"),
                );
            }
        }
        if let Some(endpoint) = &self.endpoint {
            if let Err(e) = S3TargetConfig::check_endpoint(endpoint) {
                v.push(format!("{at}.endpoint"), e);
            }
        }
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            v.push(format!("{at}.region"), "must not be empty");
        }
        if !self.reads_bucket() {
            for (key, given) in [
                ("endpoint", self.endpoint.is_some()),
                ("region", self.region.is_some()),
                ("path_style", self.path_style.is_some()),
            ] {
                if given {
                    v.push(
                        format!("{at}.{key}"),
                        "is only for `mode: poll` or `content: inline` (with `mode: notify` the store sends the events)",
                    );
                }
            }
        }
        if self.mode == S3SourceMode::Notify {
            for (key, given) in [
                ("prefix", self.prefix.is_some()),
                ("interval", self.interval.is_some()),
                ("deletes", self.deletes.is_some()),
                ("start", self.start.is_some()),
            ] {
                if given {
                    v.push(
                        format!("{at}.{key}"),
                        "is only for `mode: poll`; with `mode: notify` the bucket's notification settings choose the events",
                    );
                }
            }
        }
        if let Some(prefix) = &self.prefix {
            if prefix.starts_with('/') || prefix.contains("//") {
                v.push(
                    format!("{at}.prefix"),
                    format!("{prefix:?} is not a key prefix: no leading or double `/`"),
                );
            }
        }
        if let Some(interval) = self.interval {
            if interval < MIN_INTERVAL {
                v.push(
                    format!("{at}.interval"),
                    format!("{interval:?} is too short: at least 100ms between passes"),
                );
            }
        }
    }
}
