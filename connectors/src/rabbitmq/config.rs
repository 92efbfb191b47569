//! The RabbitMQ source's and target's settings and their validation.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_router::config::{
    defaults, validate_batch, validate_template, validate_url, BatchConfig, BindingMode,
    DurationString, Malformed, SourceSpec, StreamBatchConfig, TargetSpec, Validator,
};

/// Consume a RabbitMQ queue (AMQP 0-9-1) with manual acknowledgements; each
/// message becomes a CloudEvent (CloudEvents AMQP binding, binary or structured,
/// or a plain message mapped to one). A message is acknowledged only after its
/// event is durable in every matching subscription.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// `amqp://user:password@host:5672/vhost` (the default vhost `/` is `%2f`),
    /// or `amqps://` for TLS.
    pub url: String,
    /// The queue to consume.
    pub queue: String,
    /// Declare the queue (idempotently, at every connect) with these settings;
    /// omit to consume an existing queue.
    #[serde(default)]
    pub declare: Option<QueueDeclare>,
    /// Bindings of the queue to exchanges, declared with the queue at every connect.
    /// The exchanges must exist.
    #[serde(default)]
    pub bindings: Vec<QueueBinding>,
    /// Messages delivered but not yet acknowledged at most (`basic.qos`); sluice
    /// publishes them in batches of up to half of this, so the broker keeps
    /// sending while a batch is made durable.
    #[serde(default = "rabbitmq_prefetch")]
    pub prefetch: u16,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
    /// `source` of events made from plain messages; `{queue}` is replaced.
    #[serde(default = "rabbitmq_event_source")]
    pub event_source: String,
    /// `type` of events made from plain messages.
    #[serde(default = "rabbitmq_event_type")]
    pub event_type: String,
    /// What a message that claims to be a CloudEvent but is broken (bad JSON, a
    /// missing attribute, a header of the wrong type) becomes: `event` (default),
    /// a plain-message event whose `sluiceerror` extension says what is wrong; or
    /// `reject`: kept in the source's dead-letter list
    /// (`GET /api/sources/<name>/dead-letters`) and rejected without requeue (the
    /// queue's dead-letter exchange gets it, if it has one).
    #[serde(default)]
    pub malformed: Malformed,
    /// Consumption pauses while any subscription of the bus holds more events than
    /// this, and resumes below half of it, so a stalled target bounds the backlog.
    #[serde(default = "rabbitmq_max_backlog")]
    pub max_backlog: u64,
}

/// How the source declares its queue.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueDeclare {
    /// Survives a broker restart (quorum and stream queues must be durable).
    #[serde(default = "yes")]
    pub durable: bool,
    /// Deleted by the broker once its last consumer is gone.
    #[serde(default)]
    pub auto_delete: bool,
    /// Queue arguments, e.g. `x-queue-type: quorum`, `x-max-length: 100000`,
    /// `x-dead-letter-exchange: dlx`. Values are strings, integers, booleans or
    /// numbers.
    #[serde(default)]
    pub arguments: BTreeMap<String, Value>,
}

/// A binding of the source's queue to an exchange.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    /// The exchange (not the default exchange, which binds every queue already).
    pub exchange: String,
    /// The binding key, e.g. `order.*` on a topic exchange.
    #[serde(default)]
    pub routing_key: String,
}

/// Publish each event to a RabbitMQ exchange (CloudEvents AMQP binding) with
/// publisher confirms.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// `amqp://user:password@host:5672/vhost`, or `amqps://` for TLS.
    pub url: String,
    /// The exchange; empty (`""`) is the default exchange, which routes by queue name.
    #[serde(default)]
    pub exchange: String,
    /// Routing key template: `{attribute}` (e.g. `{type}`, `{subject}`) or
    /// `{data.region}` is replaced from the event.
    #[serde(default = "rabbitmq_routing_key")]
    pub routing_key: String,
    /// `binary` (default: `cloudEvents_` headers, data as the body) or `structured`
    /// (the event as `application/cloudevents+json`).
    #[serde(default)]
    pub mode: BindingMode,
    /// Delivery mode 2: the broker writes the message to disk (in a durable queue).
    #[serde(default = "yes")]
    pub persistent: bool,
    /// The broker returns a message no queue takes; sluice then dead-letters its
    /// event with reason `unroutable`. With `false` such messages are dropped by
    /// the broker and count as delivered.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Time allowed for a batch's publisher confirms.
    #[serde(default = "defaults::timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
    /// Batches in flight at most (per subscription); a batch's messages are all
    /// published at once and settled by their own confirms.
    #[serde(default = "defaults::stream_concurrency")]
    pub concurrency: usize,
    /// How many events are published together.
    #[serde(default)]
    pub batch: StreamBatchConfig,
}

fn yes() -> bool {
    true
}
fn rabbitmq_prefetch() -> u16 {
    500
}
fn rabbitmq_event_source() -> String {
    "amqp://{queue}".into()
}
fn rabbitmq_event_type() -> String {
    "sluice.amqp.message".into()
}
fn rabbitmq_max_backlog() -> u64 {
    1_000_000
}
fn rabbitmq_routing_key() -> String {
    "{type}".into()
}

impl SourceSpec for RabbitmqSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_amqp_url(v, at, &self.url);
        if self.queue.trim().is_empty() {
            v.push(format!("{at}.queue"), "must not be empty");
        } else if self.queue.len() > 255 {
            v.push(format!("{at}.queue"), "is longer than 255 bytes");
        }
        if self.prefetch == 0 {
            v.push(format!("{at}.prefetch"), "must be between 1 and 65535");
        }
        if let Some(declare) = &self.declare {
            for (key, value) in &declare.arguments {
                if let Err(why) = argument(key, value) {
                    v.push(format!("{at}.declare.arguments.{key}"), why);
                }
            }
        }
        for (i, b) in self.bindings.iter().enumerate() {
            if b.exchange.trim().is_empty() {
                v.push(
                    format!("{at}.bindings[{i}].exchange"),
                    "name the exchange to bind to (the default exchange takes no bindings)",
                );
            }
        }
        for (key, text) in [
            ("event_source", &self.event_source),
            ("event_type", &self.event_type),
        ] {
            if text.trim().is_empty() {
                v.push(format!("{at}.{key}"), "must not be empty");
            }
        }
    }
}

impl TargetSpec for RabbitmqTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "rabbitmq"
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some((&self.batch).into())
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_amqp_url(v, at, &self.url);
        validate_template(v, at, "routing_key", &self.routing_key);
        if self.exchange.is_empty() && self.routing_key.is_empty() {
            v.push(
                format!("{at}.routing_key"),
                "the default exchange routes by queue name: give the queue as routing_key",
            );
        }
        validate_batch(v, at, &(&self.batch).into(), self.concurrency);
        if self.timeout.is_zero() {
            v.push(format!("{at}.timeout"), "must be greater than 0");
        }
    }
}

/// An `amqp://` or `amqps://` URL that lapin can read.
fn validate_amqp_url(v: &mut Validator<'_>, at: &str, url: &str) {
    let scheme_ok = url
        .split_once("://")
        .is_some_and(|(s, rest)| ["amqp", "amqps"].contains(&s) && !rest.is_empty());
    if !scheme_ok {
        validate_url(v, at, "url", url, &["amqp", "amqps"]);
    } else if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
        v.push(format!("{at}.url"), format!("not a valid AMQP URL: {e}"));
    }
}

/// The type RabbitMQ expects of the queue arguments it knows.
fn expected_type(key: &str) -> Option<&'static str> {
    Some(match key {
        "x-queue-type"
        | "x-dead-letter-exchange"
        | "x-dead-letter-routing-key"
        | "x-dead-letter-strategy"
        | "x-overflow"
        | "x-queue-mode"
        | "x-queue-leader-locator"
        | "x-queue-master-locator" => "string",
        "x-message-ttl"
        | "x-expires"
        | "x-max-length"
        | "x-max-length-bytes"
        | "x-max-priority"
        | "x-delivery-limit"
        | "x-quorum-initial-group-size"
        | "x-initial-cluster-size" => "integer",
        "x-single-active-consumer" => "boolean",
        _ => return None,
    })
}

/// A queue argument as AMQP sends it: strings, integers, booleans and numbers;
/// the arguments RabbitMQ knows must have the type it expects.
fn argument(key: &str, value: &Value) -> Result<AMQPValue, String> {
    let (kind, amqp) = match value {
        Value::String(s) => (
            "string",
            AMQPValue::LongString(LongString::from(s.as_str())),
        ),
        Value::Bool(b) => ("boolean", AMQPValue::Boolean(*b)),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => ("integer", AMQPValue::LongLongInt(i)),
            (None, Some(f)) => ("number", AMQPValue::Double(f)),
            (None, None) => return Err(format!("{n} is out of range")),
        },
        Value::Null => {
            return Err(
                "unknown argument type: null (give a string, integer, boolean or number)".into(),
            )
        }
        Value::Array(_) | Value::Object(_) => {
            return Err(
                "unknown argument type: a list or map (give a string, integer, boolean or number)"
                    .into(),
            )
        }
    };
    if let Some(want) = expected_type(key) {
        if want != kind {
            return Err(format!("RabbitMQ expects {key} as {want}, found {kind}"));
        }
    }
    Ok(amqp)
}

/// The queue arguments as a field table (validation refused any that do not fit).
pub(super) fn arguments(declare: &QueueDeclare) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in &declare.arguments {
        if let Ok(v) = argument(key, value) {
            table.insert(ShortString::from(key.as_str()), v);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_have_the_types_rabbitmq_expects() {
        assert!(argument("x-queue-type", &json!("quorum")).is_ok());
        assert!(argument("x-max-length", &json!(10)).is_ok());
        assert!(argument("x-custom", &json!(1.5)).is_ok());
        let e = argument("x-max-length", &json!("10")).unwrap_err();
        assert!(
            e.contains("expects x-max-length as integer, found string"),
            "{e}"
        );
        let e = argument("x-anything", &json!([1])).unwrap_err();
        assert!(e.starts_with("unknown argument type"), "{e}");
        assert!(argument("x-anything", &Value::Null).is_err());
    }
}
