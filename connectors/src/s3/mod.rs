//! S3-compatible object storage (AWS S3, MinIO, Ceph, Alibaba OSS, ...).
//!
//! The target: batches of events as JSON-lines objects (gzip by default),
//! partitioned by event time.
//! - `object`: which events share an object, its key and its bytes (pure).
//! - `sink`: the client, the readiness check and the uploads.
//!
//! The source, each object event a CloudEvent, `mode: notify` (bucket
//! notifications posted to `POST /sources/{name}/notifications`) or `mode: poll`
//! (listing the bucket with a durable cursor).
//! - `notification`: S3/MinIO/OSS notification bodies to events (pure), and
//!   polled changes to the same events.
//! - `source`: building either mode; the notification route.
//! - `poll`, `poll_status`: the poller and what it reports.
//! - `content`: `content: inline`, an object's bytes in its event.
//! - `client`: the S3 client both sides build.

mod client;
pub mod config;
mod content;
pub mod notification;
mod object;
mod poll;
mod poll_status;
mod sink;
mod source;
pub mod source_config;

pub use sink::S3Sink;
