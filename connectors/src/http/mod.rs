//! HTTP: CloudEvents ingest (`POST /events`, `POST /buses/{bus}/events`) and the HTTP
//! function target, both speaking the CloudEvents HTTP binding.

mod binding;
mod body;
pub mod config;
mod error;
mod ingest;
mod sink;

pub use error::{check_bearer, ApiError};
pub use ingest::routes;
#[cfg(any(feature = "s3", feature = "ops"))]
pub(crate) use ingest::Webhook;
pub use sink::HttpSink;
#[cfg(any(feature = "elasticsearch", feature = "ops"))]
pub(crate) use sink::{client, root_cause};
#[cfg(feature = "elasticsearch")]
pub(crate) use sink::{humantime_secs, parse_retry_after};
