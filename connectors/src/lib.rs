//! sluice-connectors: the systems sluice talks to, one folder per system, each behind
//! a cargo feature. Connectors implement the traits of `sluice-router`; the binary
//! wires them through [`build_sink`].

use std::sync::Arc;

use sluice_router::config::TargetConfig;
use sluice_router::sink::Sink;

#[cfg(feature = "http")]
pub mod http;

/// A target that could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("target {target}: {message}")]
pub struct BuildError {
    pub target: String,
    pub message: String,
}

/// The registry of targets: one arm per connector.
pub fn build_sink(target: &TargetConfig) -> Result<Arc<dyn Sink>, BuildError> {
    match target {
        #[cfg(feature = "http")]
        TargetConfig::Http(config) => Ok(Arc::new(http::HttpSink::new(config).map_err(|e| {
            BuildError {
                target: config.name.clone(),
                message: e,
            }
        })?)),
    }
}
