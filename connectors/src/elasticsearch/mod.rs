//! Elasticsearch / OpenSearch: index events as documents through the `_bulk` API.
//!
//! Every document's `_id` is the event key (a UUID of `source` + `id`), so a batch
//! that is sent again after a crash or a retry overwrites the same documents
//! instead of adding copies. The cluster answers `_bulk` with one status per
//! document; each event of a batch is settled on its own status, so one rejected
//! document (a mapping conflict, an invalid index name) is dead-lettered while the
//! rest of its batch is indexed.
//!
//! `bulk` builds request bodies and reads answers without touching the network;
//! `sink` sends them.

mod bulk;
pub mod config;
mod sink;

pub use sink::ElasticsearchSink;
