//! The Kafka source's and target's settings and their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    defaults, validate_batch, BatchConfig, BindingMode, DurationString, Malformed, SourceSpec,
    StreamBatchConfig, TargetSpec, Validator,
};
use sluice_router::transform::NameTemplate;

/// Consume Kafka topics as a consumer group; each record becomes a CloudEvent
/// (CloudEvents Kafka binding, binary or structured, or a plain record mapped to
/// one). A record's offset is committed only after its event is durable.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic names; an entry starting with `^` is a regular expression.
    pub topics: Vec<String>,
    /// Consumer group id.
    pub group: String,
    /// Where a group without committed offsets starts.
    #[serde(default)]
    pub start: KafkaStart,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
    /// `source` of events made from plain records; `{topic}` is replaced.
    #[serde(default = "kafka_event_source")]
    pub event_source: String,
    /// `type` of events made from plain records.
    #[serde(default = "kafka_event_type")]
    pub event_type: String,
    /// What a record that claims to be a CloudEvent but is broken (bad JSON, a
    /// missing attribute, a null or non-UTF-8 `ce_` header) becomes: `event`
    /// (default), a plain-record event whose `sluiceerror` extension says what is
    /// wrong; or `reject`, kept out of the bus in the source's dead-letter list
    /// (`GET /api/sources/<name>/dead-letters`). Either way its offset advances.
    #[serde(default)]
    pub malformed: Malformed,
    /// Records published together at most (one durable commit each batch).
    #[serde(default = "kafka_batch")]
    pub batch: usize,
    /// Consumption pauses while any subscription of the bus holds more events than
    /// this, and resumes below half of it, so a stalled target bounds the backlog.
    #[serde(default = "kafka_max_backlog")]
    pub max_backlog: u64,
    /// Extra librdkafka consumer settings (TLS, SASL, tuning). Keys sluice owns are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// Where a consumer group without committed offsets starts reading: `earliest`,
/// `latest`, or an RFC 3339 time (the first record at or after it, per partition).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub enum KafkaStart {
    Earliest,
    #[default]
    Latest,
    Time(chrono::DateTime<chrono::Utc>),
}

impl TryFrom<String> for KafkaStart {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "earliest" => Ok(Self::Earliest),
            "latest" => Ok(Self::Latest),
            t => chrono::DateTime::parse_from_rfc3339(t)
                .map(|time| Self::Time(time.to_utc()))
                .map_err(|e| format!("{t:?} is not earliest, latest or an RFC 3339 time ({e})")),
        }
    }
}

impl From<KafkaStart> for String {
    fn from(start: KafkaStart) -> String {
        match start {
            KafkaStart::Earliest => "earliest".into(),
            KafkaStart::Latest => "latest".into(),
            KafkaStart::Time(t) => t.to_rfc3339(),
        }
    }
}

impl JsonSchema for KafkaStart {
    fn schema_name() -> String {
        "KafkaStart".into()
    }
    fn json_schema(gen: &mut schemars::gen::SchemaGenerator) -> schemars::schema::Schema {
        let mut schema = String::json_schema(gen).into_object();
        schema.metadata().description =
            Some("`earliest`, `latest` or an RFC 3339 time such as `2026-11-01T00:00:00Z`.".into());
        schema.into()
    }
}

/// Produce each event as a Kafka record (CloudEvents Kafka binding).
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// Bootstrap brokers, `host:port[,host:port]`.
    pub brokers: String,
    /// Topic; `{attribute}` (e.g. `{type}`, `{partitionkey}`, `{data.region}`) is
    /// replaced from the event.
    pub topic: String,
    /// Record key template, e.g. `{partitionkey}` or `{data.customer}`; none: no key.
    #[serde(default)]
    pub key: Option<String>,
    /// `binary` (default: `ce_` headers, data as the value) or `structured`
    /// (the event as `application/cloudevents+json`).
    #[serde(default)]
    pub mode: BindingMode,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "kafka_compression")]
    pub compression: String,
    /// How long the producer waits to fill a batch.
    #[serde(default = "kafka_linger", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub linger: Duration,
    /// Time allowed for one record's delivery report.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
    /// Batches in flight at most (per subscription); a batch's records are all
    /// handed to the producer at once and settled by their own delivery reports.
    #[serde(default = "defaults::stream_concurrency")]
    pub concurrency: usize,
    /// How many events go to the producer together.
    #[serde(default)]
    pub batch: StreamBatchConfig,
    /// Extra librdkafka producer settings. Keys sluice owns are refused.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl SourceSpec for KafkaSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "kafka"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_source(v, at, self);
    }
}

impl TargetSpec for KafkaTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "kafka"
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some((&self.batch).into())
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_target(v, at, self);
    }
}

fn kafka_event_source() -> String {
    "kafka://{topic}".into()
}
fn kafka_event_type() -> String {
    "sluice.kafka.record".into()
}
fn kafka_batch() -> usize {
    500
}
fn kafka_max_backlog() -> u64 {
    1_000_000
}
fn kafka_compression() -> String {
    "none".into()
}
fn kafka_linger() -> Duration {
    Duration::from_millis(5)
}

/// librdkafka settings sluice sets itself, and why a user may not.
fn owned(key: &str) -> Option<&'static str> {
    Some(match key {
        "bootstrap.servers" | "metadata.broker.list" => "set it with `brokers`",
        "group.id" => "set it with `group`",
        "enable.auto.commit" | "enable.auto.offset.store" => {
            "sluice stores each offset only after its event is durable (at least once)"
        }
        "auto.offset.reset" => "set it with `start`",
        "enable.idempotence" | "acks" | "request.required.acks" => {
            "sluice's producer is idempotent and waits for all in-sync replicas"
        }
        "compression.type" | "compression.codec" => "set it with `compression`",
        "linger.ms" | "queue.buffering.max.ms" => "set it with `linger`",
        "message.timeout.ms" | "delivery.timeout.ms" => "set it with `timeout`",
        _ => return None,
    })
}

fn validate_options(c: &mut Validator<'_>, at: &str, options: &BTreeMap<String, String>) {
    for key in options.keys() {
        if let Some(why) = owned(key) {
            c.push(
                format!("{at}.options.{key}"),
                format!("sluice owns this setting: {why}"),
            );
        } else if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        {
            c.push(
                format!("{at}.options.{key}"),
                "is not a librdkafka setting name".to_owned(),
            );
        }
    }
}

fn validate_brokers(c: &mut Validator<'_>, at: &str, brokers: &str) {
    let bad = brokers.is_empty()
        || brokers.split(',').any(|b| {
            b.trim()
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        });
    if bad {
        c.push(
            format!("{at}.brokers"),
            format!("{brokers:?} is not a list of host:port"),
        );
    }
}

fn validate_source(c: &mut Validator<'_>, at: &str, k: &KafkaSourceConfig) {
    validate_brokers(c, at, &k.brokers);
    if k.topics.is_empty() {
        c.push(
            format!("{at}.topics"),
            "give at least one topic name or ^regex",
        );
    }
    for (j, topic) in k.topics.iter().enumerate() {
        if topic.starts_with('^') {
            if let Err(e) = regex::Regex::new(topic) {
                c.push(
                    format!("{at}.topics[{j}]"),
                    format!("not a valid regular expression: {e}"),
                );
            }
        } else if topic.is_empty()
            || topic.len() > 249
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            c.push(
                format!("{at}.topics[{j}]"),
                format!("{topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; or ^regex)"),
            );
        }
    }
    if k.group.is_empty() {
        c.push(format!("{at}.group"), "must not be empty");
    }
    if k.batch == 0 || k.batch > 100_000 {
        c.push(format!("{at}.batch"), "must be between 1 and 100000");
    }
    validate_options(c, at, &k.options);
}

fn validate_target(c: &mut Validator<'_>, at: &str, t: &KafkaTargetConfig) {
    validate_brokers(c, at, &t.brokers);
    if t.topic.is_empty() {
        c.push(format!("{at}.topic"), "must not be empty");
    }
    for (field, template) in [("topic", Some(&t.topic)), ("key", t.key.as_ref())] {
        if let Some(template) = template {
            if let Err(e) = NameTemplate::parse(template) {
                c.push(format!("{at}.{field}"), format!("{template:?}: {e}"));
            }
        }
    }
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&t.compression.as_str()) {
        c.push(
            format!("{at}.compression"),
            format!(
                "{:?}: expected none, gzip, snappy, lz4 or zstd",
                t.compression
            ),
        );
    }
    validate_batch(c, at, &(&t.batch).into(), t.concurrency);
    if t.timeout.is_zero() {
        c.push(format!("{at}.timeout"), "must be greater than 0");
    }
    validate_options(c, at, &t.options);
}
