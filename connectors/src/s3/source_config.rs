//! The S3 source's settings and their validation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{defaults, SourceSpec, Validator};

use super::config::check_bucket;

/// Object events of an S3-compatible bucket (AWS S3, MinIO, Alibaba OSS), each
/// a CloudEvent mapped as the CloudEvents AWS S3 adapter says. `mode: notify`:
/// the store posts its bucket notifications to
/// `POST /sources/<name>/notifications` on sluice's server.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct S3SourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// How object events come in: `notify` (the store posts notifications).
    /// `poll` (listing the bucket) is not built yet.
    pub mode: S3SourceMode,
    /// Only this bucket's records are taken: a notification naming another
    /// bucket is refused (400). None: any bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
    /// `source` of the events instead of the adapter's
    /// `{eventSource}.{region}.{bucket}`; `{bucket}` and `{region}` are replaced.
    #[serde(default)]
    pub event_source: Option<String>,
}

/// How an `s3` source learns of object events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum S3SourceMode {
    /// The store posts bucket notifications to `POST /sources/<name>/notifications`.
    Notify,
    /// List the bucket on an interval (not built yet: refused by validation).
    Poll,
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
        if self.mode == S3SourceMode::Poll {
            v.push(
                format!("{at}.mode"),
                "`poll` is not built yet in this version of sluice; use `notify` and point the bucket's notifications at POST /sources/<name>/notifications",
            );
        }
        if let Some(bucket) = &self.bucket {
            if let Err(e) = check_bucket(bucket) {
                v.push(format!("{at}.bucket"), e);
            }
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
    }
}
