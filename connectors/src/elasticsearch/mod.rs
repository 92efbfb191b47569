//! STUB (being written): the elasticsearch target.

use async_trait::async_trait;
use sluice_router::config::ElasticsearchTargetConfig;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};

pub struct ElasticsearchSink;

impl ElasticsearchSink {
    pub fn new(_config: &ElasticsearchTargetConfig) -> Result<Self, String> {
        Err("not built yet".into())
    }
}

#[async_trait]
impl Sink for ElasticsearchSink {
    async fn deliver(&self, _event: &Event) -> Result<(), SinkError> {
        Err(SinkError::permanent("not built yet"))
    }
}
