//! The S3 target: batches of events as JSON-lines objects (gzip by default) in an
//! S3-compatible bucket (AWS S3, MinIO, Ceph, ...), partitioned by event time.
//!
//! - `object`: which events share an object, its key and its bytes (pure).
//! - `sink`: the client, the readiness check and the uploads.

pub mod config;
mod object;
mod sink;

pub use sink::S3Sink;
