//! The configuration model: serde types whose doc comments are the JSON Schema's
//! descriptions. Defaults live here and nowhere else.
//!
//! Every struct denies unknown keys and every connector is one variant of a closed,
//! `type`-tagged enum, so a typo is an error with a path rather than a silent no-op.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A sluice configuration file, over the closed sets of source and target types
/// a build of sluice knows (`S` and `T`: the connectors' registry, see
/// [`SourceEntry`](super::SourceEntry) and [`TargetEntry`](super::TargetEntry)).
/// Generic because this crate never depends on the connectors: each connector's
/// settings live in its own folder, and the binary names the concrete types.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config<S, T> {
    /// The HTTP server (ingest, operations and admin API) and the data directory.
    #[serde(default)]
    pub server: ServerConfig,
    /// Named sources; each turns its input into CloudEvents on a bus. HTTP ingest
    /// (`POST /events`, `POST /buses/{bus}/events`) is always on and needs no entry.
    #[serde(default)]
    pub sources: Vec<S>,
    /// Named targets that subscriptions deliver to.
    #[serde(default)]
    pub targets: Vec<T>,
    /// Rules: a filter over the events of one bus and the targets that get the matches.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl<S, T> Default for Config<S, T> {
    fn default() -> Self {
        Self {
            server: ServerConfig::default(),
            sources: Vec::new(),
            targets: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// The HTTP server and the local store.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the HTTP server (ingest, `/healthz`, `/readyz`, `/metrics`, `/api/`).
    #[serde(default = "defaults::listen")]
    pub listen: String,
    /// Directory of the durable store (created if missing).
    #[serde(default = "defaults::data_dir")]
    pub data_dir: String,
    /// Largest accepted event, in bytes (for a batch: per event). Default 256 KiB.
    #[serde(default = "defaults::max_event_bytes")]
    pub max_event_bytes: u64,
    /// Largest accepted batch request body, in bytes. Default 4 MiB.
    #[serde(default = "defaults::max_batch_bytes")]
    pub max_batch_bytes: u64,
    /// How long shutdown waits for in-flight deliveries before it flushes and exits.
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub shutdown_grace: Duration,
    /// Optional bearer tokens; `${ENV_NAME}` keeps them out of the file.
    #[serde(default)]
    pub auth: AuthConfig,
    /// An event published again with the same `source` and `id` within this time
    /// (an HTTP client's retry) is dropped as a duplicate instead of being
    /// delivered twice; a Kafka source resumes after the offsets it made durable
    /// (its positions count for the same time). `0s` turns both off.
    #[serde(default = "defaults::dedupe_window", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub dedupe_window: Duration,
    /// Event keys held for `dedupe_window` at most (each 18-36 bytes of memory).
    /// Past it the oldest keys are dropped early, so a flood of unique ids
    /// shortens the window (`sluice_dedupe_buckets_dropped_total` counts it)
    /// instead of growing memory without bound. Default 10,000,000.
    #[serde(default = "defaults::dedupe_max_keys")]
    pub dedupe_max_keys: usize,
    /// Open HTTP connections at most; one more is answered 503 and closed.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Time a client has to send a request's head; also how long a keep-alive
    /// connection may sit idle before it is closed.
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub header_timeout: Duration,
    /// Time a whole request may take, body and answer included (408 after it).
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub request_timeout: Duration,
    /// Longest request URI, in bytes (414 over it).
    #[serde(default = "defaults::max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Largest request header block, in bytes (431 over it).
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Bytes of request bodies being read at once, over all connections; a body
    /// that would go over waits for room briefly, then is answered 503. With
    /// `max_connections` it bounds the memory clients can hold.
    #[serde(default = "defaults::max_body_bytes_in_flight")]
    pub max_body_bytes_in_flight: u64,
    /// While a subscription of a bus holds more events than this, HTTP ingest to
    /// that bus answers 503 `backlog_full` with `Retry-After`, and pulling sources
    /// (Kafka) pause, so a stalled target bounds the store.
    #[serde(default = "defaults::max_backlog")]
    pub max_backlog: u64,
    /// How far ahead an event may ask to be delivered with the CloudEvents
    /// extension `deliverat` (an RFC 3339 time) or `delay` (a duration such as
    /// `90s` or `1h30m`). Further is refused: HTTP ingest answers 400 naming the
    /// extension, a pulling source puts the event in its dead letters with the
    /// reason. `0s` refuses every delay in the future.
    #[serde(default = "defaults::max_delay", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_delay: Duration,
    /// sluice's own events (backlog high/recovered, dead letters, targets and
    /// sources going down and up, start and stop) on bus `system`, for rules on
    /// that bus to route like any event.
    #[serde(default)]
    pub system_events: SystemEventsConfig,
    /// How many result events (`on_success`/`on_failure`) one chain may make:
    /// each result carries the extension `sluicehops`, one more than its cause.
    /// A result that would go past this is not published; the event that caused
    /// it is dead-lettered instead, saying the chain was stopped. Default 16.
    #[serde(default = "defaults::max_hops")]
    pub max_hops: u32,
}

/// sluice's own events on bus `system` (see docs/system-events.md). Key names
/// are part of the config contract: `enabled` switches them all; the rest tune
/// when one is published.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SystemEventsConfig {
    /// Publish them at all. Without a rule on bus `system` they cost a check a
    /// second and are dropped as unmatched.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// A subscription holding at least this many events (ready, retrying or
    /// delayed) publishes `sluice.subscription.backlog_high`; once it is back
    /// at or below half of it, `sluice.subscription.backlog_recovered`.
    #[serde(default = "defaults::backlog_threshold")]
    pub backlog_threshold: u64,
    /// `sluice.subscription.dead_lettered` is published at most once per
    /// subscription per this time, counting every dead letter since the last one.
    #[serde(default = "defaults::dead_letter_interval", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub dead_letter_interval: Duration,
    /// The name in the events' `source` (`sluice://<name>`); default: the host name.
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for SystemEventsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            backlog_threshold: defaults::backlog_threshold(),
            dead_letter_interval: defaults::dead_letter_interval(),
            name: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: defaults::listen(),
            data_dir: defaults::data_dir(),
            max_event_bytes: defaults::max_event_bytes(),
            max_batch_bytes: defaults::max_batch_bytes(),
            shutdown_grace: defaults::shutdown_grace(),
            auth: AuthConfig::default(),
            dedupe_window: defaults::dedupe_window(),
            dedupe_max_keys: defaults::dedupe_max_keys(),
            max_backlog: defaults::max_backlog(),
            max_delay: defaults::max_delay(),
            system_events: SystemEventsConfig::default(),
            max_hops: defaults::max_hops(),
            max_connections: defaults::max_connections(),
            header_timeout: defaults::header_timeout(),
            request_timeout: defaults::request_timeout(),
            max_uri_bytes: defaults::max_uri_bytes(),
            max_header_bytes: defaults::max_header_bytes(),
            max_body_bytes_in_flight: defaults::max_body_bytes_in_flight(),
        }
    }
}

/// Bearer tokens; a missing token leaves that part of the API open.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Required as `Authorization: Bearer <token>` on the ingest endpoints.
    pub ingest_token: Option<String>,
    /// Required as `Authorization: Bearer <token>` on `/api/`.
    pub admin_token: Option<String>,
    /// Serve the admin API without a token on an address other than loopback.
    /// The admin API shows event payloads and can redrive them, so sluice
    /// refuses to start that way unless this says it is on purpose.
    #[serde(default)]
    pub admin_open: bool,
}

/// A rule: events of `bus` that pass `filter` go to each of `targets`, each through
/// its own durable subscription `<rule>.<target>`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name of the rule, unique among rules: letters, digits, `-` and `_`.
    pub name: String,
    /// The bus whose events the rule sees.
    #[serde(default = "defaults::bus")]
    pub bus: String,
    /// Which events match; without a filter every event of the bus matches.
    #[serde(default)]
    pub filter: Option<FilterConfig>,
    /// Names of the targets that receive the matching events.
    pub targets: Vec<String>,
    /// Optional reshaping of each matching event before delivery.
    #[serde(default)]
    pub transform: Option<TransformConfig>,
    /// Retry schedule of this rule's subscriptions.
    #[serde(default)]
    pub retry: RetryConfig,
    /// A target that also receives every event this rule's subscriptions give up
    /// on (the original event, with `deadletterreason` and `deadlettersubscription`
    /// extensions), through its own subscription `<rule>.dead-letter`. Dead letters
    /// are kept in the store's list either way.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Where the result of each successful delivery goes (see
    /// docs/result-destinations.md): the function's answer as a CloudEvent, or
    /// `sluice.invocation.succeeded` wrapping the request and the response.
    #[serde(default)]
    pub on_success: Option<DestinationConfig>,
    /// Where `sluice.invocation.failed` goes when a delivery ends dead-lettered,
    /// with the reason and the last response.
    #[serde(default)]
    pub on_failure: Option<DestinationConfig>,
    /// Let this rule's `on_success`/`on_failure` bus lead back to it (a loop).
    /// `sluice validate` refuses such a cycle otherwise; at run time
    /// `server.max_hops` still ends any chain.
    #[serde(default)]
    pub allow_cycles: bool,
}

/// A result destination: exactly one of `bus` or `target`. A struct of two
/// optional keys rather than a tagged enum, so that giving both or neither is
/// reported in words at the key's line instead of as a serde variant mismatch;
/// the key names are part of the config contract.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// Publish the result event onto this bus, where its rules route it.
    #[serde(default)]
    pub bus: Option<String>,
    /// Deliver the result event to this target, through the rule's own
    /// subscription `<rule>.on-success` or `<rule>.on-failure`.
    #[serde(default)]
    pub target: Option<String>,
}

/// How a rule selects events. Every part given must match (AND).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// An EventBridge-style pattern over the event: attribute names at the top
    /// (`type`, `source`, `subject`, extensions) and `data` for the JSON payload.
    /// Leaves are lists of values or matchers (`prefix`, `suffix`,
    /// `equals-ignore-case`, `wildcard`, `anything-but`, `numeric`, `cidr`, `exists`);
    /// a list means OR, several keys mean AND, `$or` chooses between sub-patterns.
    #[serde(default)]
    pub pattern: Option<serde_json::Value>,
    /// A CloudEvents SQL (CESQL v1) expression, e.g.
    /// `type = 'order.created' AND data.amount > 100` (`data.*` reads JSON payloads).
    #[serde(default)]
    pub sql: Option<String>,
    /// CloudEvents Subscriptions API filters (`exact`, `prefix`, `suffix`, `all`,
    /// `any`, `not`, `sql`); all of them must match.
    #[serde(default)]
    pub filters: Vec<DialectConfig>,
}

/// A CloudEvents Subscriptions API filter expression.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DialectConfig {
    /// Every named attribute equals its value (`data.x.y` reads the payload).
    Exact(BTreeMap<String, String>),
    /// Every named attribute starts with its value.
    Prefix(BTreeMap<String, String>),
    /// Every named attribute ends with its value.
    Suffix(BTreeMap<String, String>),
    /// All of the nested filters match.
    All(Vec<DialectConfig>),
    /// At least one of the nested filters matches.
    Any(Vec<DialectConfig>),
    /// The nested filter does not match.
    Not(Box<DialectConfig>),
    /// A CESQL expression.
    Sql(String),
}

/// Read by hand as `{dialect: argument}`: serde_yaml only reads externally tagged
/// enums from YAML tags when going through its `Value`, and users write mappings.
impl<'de> Deserialize<'de> for DialectConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let value = serde_json::Value::deserialize(d)?;
        let serde_json::Value::Object(map) = value else {
            return Err(D::Error::custom(
                "a filter is a mapping with one key: exact, prefix, suffix, all, any, not or sql",
            ));
        };
        let mut entries = map.into_iter();
        let (Some((name, arg)), None) = (entries.next(), entries.next()) else {
            return Err(D::Error::custom(
                "a filter has exactly one key: exact, prefix, suffix, all, any, not or sql",
            ));
        };
        let parsed = match name.as_str() {
            "exact" => serde_json::from_value(arg).map(DialectConfig::Exact),
            "prefix" => serde_json::from_value(arg).map(DialectConfig::Prefix),
            "suffix" => serde_json::from_value(arg).map(DialectConfig::Suffix),
            "all" => serde_json::from_value(arg).map(DialectConfig::All),
            "any" => serde_json::from_value(arg).map(DialectConfig::Any),
            "not" => serde_json::from_value(arg).map(DialectConfig::Not),
            "sql" => serde_json::from_value(arg).map(DialectConfig::Sql),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown filter {other:?}; expected exact, prefix, suffix, all, any, not or sql"
                )))
            }
        };
        parsed.map_err(|e| D::Error::custom(format!("{name}: {e}")))
    }
}

/// What a rule delivers: the event with new `data` and attributes. The program or
/// template reads the whole event as JSON (`{"id", "source", "type", ..., "data"}`).
/// Give exactly one of `jq`, `template`, `path`, `constant` or `data`; `set` may go
/// with any of them. The original `id` and `source` are always kept, so idempotent
/// sinks still recognise a redelivery. An event the transform fails on is
/// dead-lettered with the error.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    /// A jq program; its single output becomes the delivered data.
    #[serde(default)]
    pub jq: Option<String>,
    /// EventBridge input-transformer style: named input paths and a template.
    #[serde(default)]
    pub template: Option<TemplateConfig>,
    /// One JSON path (e.g. `$.data.order`); the value there becomes the data.
    #[serde(default)]
    pub path: Option<String>,
    /// A fixed value delivered as the data.
    #[serde(default)]
    pub constant: Option<serde_json::Value>,
    /// `true`: deliver the event's own data unchanged (useful with `set` alone).
    #[serde(default)]
    pub data: Option<bool>,
    /// Attributes of the delivered event: `type`, `subject`, `dataschema`,
    /// `datacontenttype` or an extension name, to a string value.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

/// An input-transformer template.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    /// Names for values in the event, e.g. `amount: $.data.amount`.
    #[serde(default)]
    pub input_paths: BTreeMap<String, String>,
    /// A JSON value whose strings may hold `<name>` placeholders (a string that is
    /// exactly `<name>` keeps the value's type), or a text template (a YAML string).
    pub template: serde_json::Value,
}

/// When to give up on an event and dead-letter it.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Delivery attempts at most, the first included.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Time after which an undelivered event is dead-lettered, counted from ingest.
    #[serde(default = "defaults::max_age", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_age: Duration,
    /// Exponential backoff between attempts, with full jitter.
    #[serde(default)]
    pub backoff: BackoffConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            max_age: defaults::max_age(),
            backoff: BackoffConfig::default(),
        }
    }
}

/// Exponential backoff: `initial * 2^(attempt-1)`, capped at `max`, jittered.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay before the second attempt.
    #[serde(default = "defaults::backoff_initial", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub initial: Duration,
    /// Longest delay between two attempts.
    #[serde(default = "defaults::backoff_max", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: defaults::backoff_initial(),
            max: defaults::backoff_max(),
        }
    }
}

/// A human-readable duration such as `200ms`, `10s`, `1h 30m`.
#[derive(JsonSchema)]
#[allow(dead_code)]
pub struct DurationString(String);

/// The defaults of the settings shared by sluice and its connectors; a
/// connector's own defaults live with its settings.
pub mod defaults {
    use std::time::Duration;

    pub fn listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn data_dir() -> String {
        "./sluice-data".into()
    }
    pub fn bus() -> String {
        "default".into()
    }
    pub fn yes() -> bool {
        true
    }
    pub fn backlog_threshold() -> u64 {
        10_000
    }
    pub fn dead_letter_interval() -> Duration {
        Duration::from_secs(60)
    }
    /// 256 KiB, the EventBridge limit.
    pub fn max_event_bytes() -> u64 {
        256 * 1024
    }
    pub fn max_batch_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn max_connections() -> usize {
        4096
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_uri_bytes() -> usize {
        8 * 1024
    }
    pub fn max_header_bytes() -> usize {
        32 * 1024
    }
    /// 256 MiB: 64 batches at the largest size at once.
    pub fn max_body_bytes_in_flight() -> u64 {
        256 * 1024 * 1024
    }
    pub fn max_backlog() -> u64 {
        1_000_000
    }
    /// A week: the longest a `deliverat`/`delay` event waits in the store.
    pub fn max_delay() -> Duration {
        Duration::from_secs(7 * 24 * 3600)
    }
    pub fn max_hops() -> u32 {
        16
    }
    pub fn dedupe_max_keys() -> usize {
        10_000_000
    }

    pub fn dedupe_window() -> Duration {
        Duration::from_secs(600)
    }
    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    /// A target's time for one request, transaction or delivery report.
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn concurrency() -> usize {
        32
    }
    pub fn max_attempts() -> u32 {
        10
    }
    pub fn max_age() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn backoff_initial() -> Duration {
        Duration::from_millis(200)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_secs(60)
    }
    pub fn stream_concurrency() -> usize {
        4
    }
    pub fn batch_max_events() -> usize {
        1000
    }
    pub fn batch_max_bytes() -> usize {
        4 * 1024 * 1024
    }
    pub fn batch_max_wait() -> Duration {
        Duration::from_secs(1)
    }
    pub fn storage_concurrency() -> usize {
        2
    }
}
