//! STUB (being written): the postgres target.

use async_trait::async_trait;
use sluice_router::config::PostgresTargetConfig;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};

pub struct PostgresSink;

impl PostgresSink {
    pub fn new(_config: &PostgresTargetConfig) -> Result<Self, String> {
        Err("not built yet".into())
    }
}

#[async_trait]
impl Sink for PostgresSink {
    async fn deliver(&self, _event: &Event) -> Result<(), SinkError> {
        Err(SinkError::permanent("not built yet"))
    }
}
