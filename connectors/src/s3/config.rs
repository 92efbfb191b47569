//! The S3 target's settings and their validation.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    validate_batch, validate_template, BatchConfig, DurationString, TargetSpec, Validator,
};

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
    #[serde(default = "s3_region")]
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
    #[serde(default = "s3_part_bytes")]
    pub part_bytes: usize,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Uploads in flight at once, at most (per subscription).
    #[serde(default = "s3_concurrency")]
    pub concurrency: usize,
    /// Time allowed for one object's upload.
    #[serde(default = "s3_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
}

impl S3TargetConfig {
    /// The object key template, `key` or the default for the compression.
    pub fn key_template(&self) -> String {
        match (&self.key, self.compression) {
            (Some(key), _) => key.clone(),
            (None, ObjectCompression::Gzip) => s3_key(),
            (None, ObjectCompression::None) => s3_key().trim_end_matches(".gz").to_owned(),
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

impl TargetSpec for S3TargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "s3"
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

fn s3_region() -> String {
    "us-east-1".into()
}
fn s3_key() -> String {
    "events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz".into()
}
fn s3_part_bytes() -> usize {
    8 * 1024 * 1024
}
/// One upload at a time keeps batch boundaries the same after a restart, so
/// every event lands in exactly one object.
fn s3_concurrency() -> usize {
    1
}
fn s3_timeout() -> Duration {
    Duration::from_secs(60)
}

fn validate(c: &mut Validator<'_>, at: &str, t: &S3TargetConfig) {
    if let Some(endpoint) = &t.endpoint {
        if let Err(e) = S3TargetConfig::check_endpoint(endpoint) {
            c.push(format!("{at}.endpoint"), e);
        }
    }
    validate_batch(c, at, &t.batch, t.concurrency);
    let key = t.key_template();
    validate_template(c, at, "key", &key);
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
    if let Err(e) = check_bucket(&t.bucket) {
        c.push(format!("{at}.bucket"), e);
    }
    if t.part_bytes < 5 * 1024 * 1024 {
        c.push(
            format!("{at}.part_bytes"),
            "must be at least 5 MiB (5242880), S3's smallest part",
        );
    }
}

/// Whether `b` is an S3 bucket name; `Err` says what is wrong.
pub(crate) fn check_bucket(b: &str) -> Result<(), String> {
    if b.len() < 3
        || b.len() > 63
        || !b
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !b.ends_with(|c: char| c.is_ascii_alphanumeric())
        || b.contains("..")
    {
        return Err(format!("{b:?} is not a bucket name: 3 to 63 lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"));
    }
    Ok(())
}
