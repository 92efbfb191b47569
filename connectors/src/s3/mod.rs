//! S3-compatible object storage (AWS S3, MinIO, Ceph, Alibaba OSS, ...).
//!
//! The target: batches of events as JSON-lines objects (gzip by default),
//! partitioned by event time.
//! - `object`: which events share an object, its key and its bytes (pure).
//! - `sink`: the client, the readiness check and the uploads.
//!
//! The source, `mode: notify`: bucket notifications posted to
//! `POST /sources/{name}/notifications`, each record a CloudEvent.
//! - `notification`: S3/MinIO/OSS notification bodies to events (pure).
//! - `source`: the route.

pub mod config;
pub mod notification;
mod object;
mod sink;
mod source;
pub mod source_config;

pub use sink::S3Sink;
