//! sluice-connectors: the systems sluice talks to, one folder per system, each behind
//! a cargo feature. Connectors implement the traits of `sluice-router`; the binary
//! wires them through the [`registry`].

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
mod registry;

pub use registry::{
    build_sink, build_source, BuildSink, BuildSource, BuiltSource, SourceConfig, TargetConfig,
};
use sluice_router::error::ErrorClass;

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
