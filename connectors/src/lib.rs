//! sluice-connectors: the systems sluice talks to, one folder per system, each behind
//! a cargo feature. Connectors implement the traits of `sluice-router`; the binary
//! wires them through [`build_sink`].

use std::sync::Arc;

use sluice_router::config::{SourceConfig, TargetConfig};
use sluice_router::sink::Sink;
use sluice_router::source::Source;

#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "s3")]
pub mod s3;

mod discard;

/// A target or source that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {name}: {message}")]
pub struct BuildError {
    /// `target` or `source`.
    pub kind: &'static str,
    pub name: String,
    pub message: String,
}

/// The registry of targets: one arm per connector.
pub fn build_sink(target: &TargetConfig) -> Result<Arc<dyn Sink>, BuildError> {
    match target {
        TargetConfig::Discard(_) => Ok(Arc::new(discard::DiscardSink)),
        #[cfg(feature = "http")]
        TargetConfig::Http(config) => sink(&config.name, http::HttpSink::new(config)),
        #[cfg(feature = "kafka")]
        TargetConfig::Kafka(config) => sink(&config.name, kafka::KafkaSink::new(config)),
        #[cfg(feature = "postgres")]
        TargetConfig::Postgres(config) => sink(&config.name, postgres::PostgresSink::new(config)),
        #[cfg(feature = "elasticsearch")]
        TargetConfig::Elasticsearch(config) => {
            sink(&config.name, elasticsearch::ElasticsearchSink::new(config))
        }
        #[cfg(feature = "s3")]
        TargetConfig::S3(config) => sink(&config.name, s3::S3Sink::new(config)),
        // Connectors left out of this build (cargo features).
        #[allow(unreachable_patterns)]
        other => Err(BuildError {
            kind: "target",
            name: other.name().to_owned(),
            message: "this build of sluice has no connector for this target type".into(),
        }),
    }
}

fn sink<S: Sink>(name: &str, built: Result<S, String>) -> Result<Arc<dyn Sink>, BuildError> {
    match built {
        Ok(s) => Ok(Arc::new(s)),
        Err(message) => Err(BuildError {
            kind: "target",
            name: name.to_owned(),
            message,
        }),
    }
}

/// The registry of sources: one arm per connector; `None` for HTTP ingest, which
/// the server runs itself.
pub fn build_source(
    source: &SourceConfig,
    engine: &sluice_router::engine::Engine,
) -> Result<Option<Box<dyn Source>>, BuildError> {
    match source {
        SourceConfig::Http(_) => Ok(None),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(config) => Ok(Some(Box::new(
            kafka::KafkaSource::new(config, engine).map_err(|e| BuildError {
                kind: "source",
                name: config.name.clone(),
                message: e,
            })?,
        ))),
    }
}
