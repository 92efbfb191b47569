//! HTTP ingest's source entry and the HTTP target's settings, with validation.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    defaults, validate_batch_size, validate_breaker, BatchConfig, BindingMode, BreakerConfig,
    DurationString, SourceSpec, TargetSpec, Validator,
};
use sluice_router::source::SourceContext;

use crate::{BuildSource, BuiltSource, ConnectorError};

/// An HTTP publisher of its own: `POST /sources/<name>/events` publishes to its
/// bus under its name (HTTP ingest on `/events` and `/buses/<bus>/events` needs
/// no entry).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// The bus its events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
}

/// An HTTP endpoint target.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// Time allowed for one request, from connect to the end of the response.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
    /// Requests in flight at most (per subscription).
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// `binary` (default: attributes in `ce-*` headers, data as the body) or
    /// `structured` (the whole event as `application/cloudevents+json`).
    #[serde(default)]
    pub mode: BindingMode,
    /// Extra request headers, e.g. `Authorization: Bearer ${FUNCTION_TOKEN}`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// 4xx statuses that are retried like 5xx instead of dead-lettered at once
    /// (408 and 429 always are).
    #[serde(default)]
    pub retry_statuses: Vec<u16>,
    /// Send up to `max_events` events (and `max_bytes`) per request, waiting up
    /// to `max_wait` for a batch to fill, as a CloudEvents batch
    /// (`application/cloudevents-batch+json`, a JSON array of structured
    /// events). Every request of a batching target is a batch, one event or
    /// many, so the function reads one format; `mode` is not used. All or
    /// nothing: the answer's status applies to every event of the request.
    #[serde(default)]
    pub batch: Option<BatchConfig>,
    /// Events a second at most, shared by every rule that sends to this target
    /// (a token bucket with a burst of a tenth of a second's worth). None: as
    /// fast as `concurrency` allows.
    #[serde(default)]
    pub rate_limit: Option<f64>,
    /// A circuit breaker: `{failures: 5, cooldown: 30s}` stops each
    /// subscription of this target for `cooldown` after `failures` failed
    /// deliveries in a row, then probes with one delivery. Off by default.
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
}

impl SourceSpec for HttpSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "http"
    }
}

impl TargetSpec for HttpTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "http"
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn batch(&self) -> Option<BatchConfig> {
        self.batch.clone()
    }
    fn rate_limit(&self) -> Option<f64> {
        self.rate_limit
    }
    fn breaker(&self) -> Option<BreakerConfig> {
        self.breaker.clone()
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_target(v, at, self);
    }
}

fn validate_target(c: &mut Validator<'_>, at: &str, t: &HttpTargetConfig) {
    let field = |name: &str| format!("{at}.{name}");
    match url::Url::parse(&t.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => c.push(
            field("url"),
            format!(
                "{:?}: scheme must be http or https with a host, found {:?}",
                t.url,
                u.scheme()
            ),
        ),
        Err(e) => c.push(field("url"), format!("{:?} is not a URL ({e})", t.url)),
    }
    if t.timeout.is_zero() {
        c.push(field("timeout"), "must be greater than 0");
    }
    if t.concurrency == 0 || t.concurrency > 4096 {
        c.push(field("concurrency"), "must be between 1 and 4096");
    }
    for (name, value) in &t.headers {
        if http_header_invalid(name, value) {
            c.push(format!("{at}.headers.{name}"), "is not a valid HTTP header");
        }
    }
    if let Some(batch) = &t.batch {
        validate_batch_size(c, at, batch);
    }
    if let Some(breaker) = &t.breaker {
        validate_breaker(c, at, breaker);
    }
    if let Some(rate) = t.rate_limit {
        if !(rate.is_finite() && rate > 0.0) {
            c.push(
                field("rate_limit"),
                format!("{rate} is not a rate: give events per second, above 0"),
            );
        }
    }
    for (j, status) in t.retry_statuses.iter().enumerate() {
        if !(400..500).contains(status) {
            c.push(
                format!("{at}.retry_statuses[{j}]"),
                format!("{status} is not a 4xx status"),
            );
        }
    }
}

fn http_header_invalid(name: &str, value: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// An `http` source is served by sluice's own server: its routes publish to its
/// bus under its name.
impl BuildSource for HttpSourceConfig {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        Ok(BuiltSource {
            task: None,
            routes: Some(super::ingest::source_routes(cx.clone(), cx.server())),
        })
    }
}
