//! Kafka: a consumer-group source and an idempotent-producer target, both speaking
//! the CloudEvents Kafka protocol binding. Records are converted to events here,
//! in sluice's own code, so null or broken headers never panic.

pub mod config;
mod positions;
mod rebalance;
mod record;
mod refresh;
mod sink;
mod source;
mod status;

pub use record::{record_to_event, RecordMapping};
pub use sink::KafkaSink;
pub use source::KafkaSource;
