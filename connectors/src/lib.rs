//! sluice-connectors: the systems sluice talks to, one folder per system, each behind
//! a cargo feature. Connectors implement the traits of `sluice-router`; the binary
//! wires them through the registry below.
//!
//! The registry is the closed set of source and target types of this build: one
//! enum variant per connector (behind its cargo feature), one arm in each enum's
//! `parse` and `connector`. Adding a connector is its folder (settings and their
//! checks in `config.rs`, its source and/or sink, implementing [`BuildSource`] /
//! [`BuildSink`]), its lines here, its feature in `Cargo.toml` (and the binary's).

#[cfg(any(feature = "kafka", feature = "rabbitmq"))]
pub mod binding;
#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "ops")]
pub mod ops;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "timer")]
pub mod timer;

mod discard;

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use sluice_router::config::{SourceEntry, SourceSpec, TargetEntry, TargetSpec, Validator};
use sluice_router::error::ErrorClass;
use sluice_router::sink::Sink;
use sluice_router::source::{Source, SourceContext};

use crate::discard::DiscardTargetConfig;

/// The configuration of this build: the shared parts and its connectors' settings.
pub type Config = sluice_router::config::Config<SourceConfig, TargetConfig>;

/// A configuration of this build that passed every check, its rules compiled.
pub type Validated = sluice_router::config::Validated<SourceConfig, TargetConfig>;

/// Parse and validate a configuration file (see [`sluice_router::config::load`]).
pub fn load(text: &str) -> Result<Validated, sluice_router::config::ConfigErrors> {
    sluice_router::config::load(text)
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Validated, sluice_router::config::ConfigErrors> {
    sluice_router::config::load_with_env(text, env)
}

/// The JSON Schema of this build's configuration file.
pub fn json_schema() -> serde_json::Value {
    sluice_router::config::json_schema::<SourceConfig, TargetConfig>()
}

/// Why a source or target could not be set up: settings only the client library
/// can judge (a TLS file, a raw option), or a client that failed to start. The
/// registry names the entry; `class` says whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{side} {name}: {message}")]
pub struct ConnectorError {
    /// `source` or `target`.
    pub side: &'static str,
    pub name: String,
    pub message: String,
    pub class: ErrorClass,
}

impl ConnectorError {
    /// Settings the connector refused: fix the configuration.
    pub fn config(message: impl std::fmt::Display) -> Self {
        Self::new(ErrorClass::Config, message)
    }

    pub fn new(class: ErrorClass, message: impl std::fmt::Display) -> Self {
        Self {
            side: "",
            name: String::new(),
            message: message.to_string(),
            class,
        }
    }

    /// The error of entry `name` on `side` (`source` or `target`).
    pub fn named(mut self, side: &'static str, name: &str) -> Self {
        self.side = side;
        self.name = name.to_owned();
        self
    }
}

/// A source of events, by `type` (one variant per connector).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// HTTP ingest on `POST /buses/{bus}/events` (`POST /events` is bus `default`),
    /// declared so a bus has a named publisher.
    #[cfg(feature = "http")]
    Http(http::config::HttpSourceConfig),
    /// A Kafka consumer group.
    #[cfg(feature = "kafka")]
    Kafka(kafka::config::KafkaSourceConfig),
    /// A RabbitMQ queue, consumed with manual acknowledgements.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(rabbitmq::config::RabbitmqSourceConfig),
    /// Fires an event on a cron schedule, an interval or once.
    #[cfg(feature = "timer")]
    Timer(timer::config::TimerSourceConfig),
    /// Object events of an S3-compatible bucket: its notifications, posted to
    /// `POST /sources/{name}/notifications` (`mode: notify`), or a listing of
    /// the bucket on an interval with a durable cursor (`mode: poll`).
    #[cfg(feature = "s3")]
    S3(s3::source_config::S3SourceConfig),
    /// Health probes: HTTP(S) GET or TCP connect to endpoints on an interval;
    /// an event when one goes down and when it comes back.
    #[cfg(feature = "ops")]
    Probe(ops::config::ProbeSourceConfig),
    /// Prometheus Alertmanager's webhook, posted to `POST /sources/{name}/alerts`.
    #[cfg(feature = "ops")]
    Alertmanager(ops::config::AlertmanagerSourceConfig),
    /// Any JSON posted to `POST /sources/{name}`, signatures optionally checked.
    #[cfg(feature = "ops")]
    Webhook(ops::config::WebhookSourceConfig),
}

/// A place that subscriptions deliver to, by `type` (one variant per connector).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetConfig {
    /// An HTTP function endpoint, called with a CloudEvent per request.
    #[cfg(feature = "http")]
    Http(http::config::HttpTargetConfig),
    /// A Kafka topic, written by an idempotent producer.
    #[cfg(feature = "kafka")]
    Kafka(kafka::config::KafkaTargetConfig),
    /// A RabbitMQ exchange, published to with publisher confirms.
    #[cfg(feature = "rabbitmq")]
    Rabbitmq(rabbitmq::config::RabbitmqTargetConfig),
    /// A PostgreSQL table, written in batches, idempotently.
    #[cfg(feature = "postgres")]
    Postgres(postgres::config::PostgresTargetConfig),
    /// An Elasticsearch/OpenSearch index, written through `_bulk`, idempotently.
    #[cfg(feature = "elasticsearch")]
    Elasticsearch(elasticsearch::config::ElasticsearchTargetConfig),
    /// Objects of JSON lines in an S3-compatible bucket.
    #[cfg(feature = "s3")]
    S3(s3::config::S3TargetConfig),
    /// JSON lines appended to a local file.
    #[cfg(feature = "file")]
    File(file::config::FileTargetConfig),
    /// Drops every event.
    Discard(DiscardTargetConfig),
}

/// The problem with an entry whose connector this build leaves out.
fn left_out(v: &mut Validator<'_>, path: &str, tag: &str) {
    v.push(
        format!("{path}.type"),
        format!("this build of sluice has no {tag} connector (cargo feature `{tag}`)"),
    );
}

impl SourceEntry for SourceConfig {
    const TYPES: &'static [&'static str] = &[
        "http",
        "kafka",
        "rabbitmq",
        "s3",
        "timer",
        "probe",
        "alertmanager",
        "webhook",
    ];

    fn parse(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        v: &mut Validator<'_>,
    ) -> Option<Self> {
        match tag {
            #[cfg(feature = "http")]
            "http" => v.section(value, path).map(Self::Http),
            #[cfg(feature = "kafka")]
            "kafka" => v.section(value, path).map(Self::Kafka),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => v.section(value, path).map(Self::Rabbitmq),
            #[cfg(feature = "timer")]
            "timer" => v.section(value, path).map(Self::Timer),
            #[cfg(feature = "s3")]
            "s3" => v.section(value, path).map(Self::S3),
            #[cfg(feature = "ops")]
            "probe" => v.section(value, path).map(Self::Probe),
            #[cfg(feature = "ops")]
            "alertmanager" => v.section(value, path).map(Self::Alertmanager),
            #[cfg(feature = "ops")]
            "webhook" => v.section(value, path).map(Self::Webhook),
            other => {
                let _ = value;
                left_out(v, path, other);
                None
            }
        }
    }

    fn spec(&self) -> &dyn SourceSpec {
        self.connector()
    }
}

impl TargetEntry for TargetConfig {
    const TYPES: &'static [&'static str] = &[
        "http",
        "kafka",
        "rabbitmq",
        "postgres",
        "elasticsearch",
        "s3",
        "file",
        "discard",
    ];

    fn parse(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        v: &mut Validator<'_>,
    ) -> Option<Self> {
        match tag {
            #[cfg(feature = "http")]
            "http" => v.section(value, path).map(Self::Http),
            #[cfg(feature = "kafka")]
            "kafka" => v.section(value, path).map(Self::Kafka),
            #[cfg(feature = "rabbitmq")]
            "rabbitmq" => v.section(value, path).map(Self::Rabbitmq),
            #[cfg(feature = "postgres")]
            "postgres" => v.section(value, path).map(Self::Postgres),
            #[cfg(feature = "elasticsearch")]
            "elasticsearch" => v.section(value, path).map(Self::Elasticsearch),
            #[cfg(feature = "s3")]
            "s3" => v.section(value, path).map(Self::S3),
            #[cfg(feature = "file")]
            "file" => v.section(value, path).map(Self::File),
            "discard" => v.section(value, path).map(Self::Discard),
            other => {
                left_out(v, path, other);
                None
            }
        }
    }

    fn spec(&self) -> &dyn TargetSpec {
        self.connector()
    }
}

/// How a target's settings become its sink; implemented in each connector's
/// folder. Nothing connects before the dispatcher first delivers.
pub trait BuildSink: TargetSpec {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError>;
}

/// How a source's settings become a running source: a task that runs on its own
/// (a Kafka consumer), HTTP routes the server mounts under `/sources/{name}/`
/// (webhooks), or both. `cx` is the source's door to the engine.
pub trait BuildSource: SourceSpec {
    fn build(&self, cx: &SourceContext) -> Result<BuiltSource, ConnectorError>;
}

/// What [`BuildSource::build`] gives the binary to run.
pub struct BuiltSource {
    /// Runs until the context's shutdown.
    pub task: Option<Box<dyn Source>>,
    /// Served under `/sources/{name}/`, behind the ingest token, with the same
    /// body limits and error JSON as ingest.
    #[cfg(feature = "http")]
    pub routes: Option<axum::Router>,
}

impl BuiltSource {
    /// A source that only runs a task.
    pub fn task(task: Box<dyn Source>) -> Self {
        Self {
            task: Some(task),
            #[cfg(feature = "http")]
            routes: None,
        }
    }

    /// A source that only serves routes (a webhook).
    #[cfg(feature = "http")]
    pub fn routes(routes: axum::Router) -> Self {
        Self {
            task: None,
            routes: Some(routes),
        }
    }
}

impl SourceConfig {
    fn connector(&self) -> &dyn BuildSource {
        match *self {
            #[cfg(feature = "http")]
            Self::Http(ref c) => c,
            #[cfg(feature = "kafka")]
            Self::Kafka(ref c) => c,
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(ref c) => c,
            #[cfg(feature = "timer")]
            Self::Timer(ref c) => c,
            #[cfg(feature = "s3")]
            Self::S3(ref c) => c,
            #[cfg(feature = "ops")]
            Self::Probe(ref c) => c,
            #[cfg(feature = "ops")]
            Self::Alertmanager(ref c) => c,
            #[cfg(feature = "ops")]
            Self::Webhook(ref c) => c,
        }
    }
}

impl TargetConfig {
    fn connector(&self) -> &dyn BuildSink {
        match *self {
            #[cfg(feature = "http")]
            Self::Http(ref c) => c,
            #[cfg(feature = "kafka")]
            Self::Kafka(ref c) => c,
            #[cfg(feature = "rabbitmq")]
            Self::Rabbitmq(ref c) => c,
            #[cfg(feature = "postgres")]
            Self::Postgres(ref c) => c,
            #[cfg(feature = "elasticsearch")]
            Self::Elasticsearch(ref c) => c,
            #[cfg(feature = "s3")]
            Self::S3(ref c) => c,
            #[cfg(feature = "file")]
            Self::File(ref c) => c,
            Self::Discard(ref c) => c,
        }
    }
}

/// The sink of a target.
pub fn build_sink(target: &TargetConfig) -> Result<Arc<dyn Sink>, ConnectorError> {
    let name = target.spec().name();
    target
        .connector()
        .build()
        .map_err(|e| e.named("target", name))
}

/// What a source runs, given its door to the engine.
pub fn build_source(
    source: &SourceConfig,
    cx: &SourceContext,
) -> Result<BuiltSource, ConnectorError> {
    let name = source.spec().name();
    source
        .connector()
        .build(cx)
        .map_err(|e| e.named("source", name))
}

/// The configuration's errors keep their paths and lines across the registry.
#[cfg(all(test, feature = "http"))]
mod tests {
    use super::*;
    use crate::load_with_env;

    fn errors(text: &str) -> Vec<String> {
        load_with_env(text, &|_| None)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_entry_that_fails_to_parse_does_not_shift_the_next_ones() {
        let errs = errors(
            "targets:\n  - name: a\n    type: http\n    url: http://x/\n    bogus: 1\n  - name: b\n    type: http\n    url: ftp://x/\nrules:\n  - name: r\n    targets: [a, b]\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("targets[0].bogus: unknown field")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("targets[1].url:") && e.contains("line 8")),
            "{errs:?}"
        );
    }

    #[test]
    fn empty_document_is_the_default() {
        let config = load_with_env("", &|_| None).unwrap().config;
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert!(config.rules.is_empty());
    }

    #[test]
    fn collects_every_error_with_path_and_position() {
        let text = "\
server:
  listen: nowhere
targets:
  - name: fn
    type: http
    url: http://127.0.0.1:9000/
    timeout: 10 parsecs
  - name: fn2
    type: http
    urll: http://x/
rules:
  - name: a
    targets: [fn, missing]
    filter:
      pattern:
        data: { amount: [{ numeric: [\">\", \"x\"] }] }
  - name: a
    targets: [fn]
extra: 1
";
        let errs = errors(text);
        let expect = [
            "targets[0].timeout: invalid value: string \"10 parsecs\", expected a duration (line 7, column 5)",
            "targets[1].urll: unknown field `urll`",
            "extra: unknown key",
            "server.listen: \"nowhere\" is not an address",
            "rules[0].targets[1]: unknown target \"missing\" (rule \"a\") (line 13, column 19)",
            "rules[0].filter.pattern.data.amount[0]: numeric \">\" needs a number, found \"x\" (rule \"a\") (line 16, column 28)",
            "rules[1].name: duplicate name \"a\" (line 17, column 5)",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        assert!(errs[1].ends_with("(line 10, column 5)"), "{}", errs[1]);
    }

    #[test]
    fn substitutes_environment_and_reports_unset_variables() {
        let text = "targets:\n  - name: t\n    type: http\n    url: ${URL}\n    headers: { authorization: \"Bearer ${TOKEN}\" }\n";
        let err = errors(text);
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].starts_with("targets[0].url: environment variable URL is not set (line 4"));
        let env = |n: &str| {
            Some(if n == "URL" {
                "http://h/".into()
            } else {
                "tok".into()
            })
        };
        let config = load_with_env(text, &env).unwrap().config;
        let TargetConfig::Http(t) = &config.targets[0] else {
            panic!("an http target")
        };
        assert_eq!(t.url, "http://h/");
        assert_eq!(t.headers["authorization"], "Bearer tok");
    }

    #[test]
    fn reports_yaml_syntax_errors_with_position() {
        let errs = errors("rules:\n  - name: [unclosed\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("not valid YAML") && errs[0].contains("line"),
            "{errs:?}"
        );
    }
}
