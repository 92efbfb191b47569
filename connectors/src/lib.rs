//! sluice-connectors: the systems sluice talks to, one folder per system, each behind
//! a cargo feature. Connectors implement the traits of `sluice-router`; the binary
//! wires them through [`build_sink`].

use std::sync::Arc;

use sluice_router::config::{SourceConfig, TargetConfig};
use sluice_router::sink::Sink;
use sluice_router::source::Source;

#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;

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
        #[cfg(feature = "http")]
        TargetConfig::Http(config) => Ok(Arc::new(http::HttpSink::new(config).map_err(|e| {
            BuildError {
                kind: "target",
                name: config.name.clone(),
                message: e,
            }
        })?)),
        #[cfg(feature = "kafka")]
        TargetConfig::Kafka(config) => {
            Ok(Arc::new(kafka::KafkaSink::new(config).map_err(|e| {
                BuildError {
                    kind: "target",
                    name: config.name.clone(),
                    message: e,
                }
            })?))
        }
    }
}

/// The registry of sources: one arm per connector; `None` for HTTP ingest, which
/// the server runs itself.
pub fn build_source(source: &SourceConfig) -> Result<Option<Box<dyn Source>>, BuildError> {
    match source {
        SourceConfig::Http(_) => Ok(None),
        #[cfg(feature = "kafka")]
        SourceConfig::Kafka(config) => Ok(Some(Box::new(
            kafka::KafkaSource::new(config).map_err(|e| BuildError {
                kind: "source",
                name: config.name.clone(),
                message: e,
            })?,
        ))),
    }
}
