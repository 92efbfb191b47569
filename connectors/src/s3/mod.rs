//! STUB (being written): the s3 target.

use async_trait::async_trait;
use sluice_router::config::S3TargetConfig;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};

pub struct S3Sink;

impl S3Sink {
    pub fn new(_config: &S3TargetConfig) -> Result<Self, String> {
        Err("not built yet".into())
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn deliver(&self, _event: &Event) -> Result<(), SinkError> {
        Err(SinkError::permanent("not built yet"))
    }
}
