//! The `discard` target: confirms every event at once and keeps nothing. For trying
//! rules (their metrics still count deliveries) and for benchmarks of everything
//! before delivery.

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{
    defaults, validate_batch, BatchConfig, StreamBatchConfig, TargetSpec, Validator,
};
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};
use std::sync::Arc;

use crate::{BuildSink, ConnectorError};

/// Drop every event: a target for trying rules, and for benchmarks.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// Batches confirmed at once, at most (per subscription).
    #[serde(default = "defaults::stream_concurrency")]
    pub concurrency: usize,
    /// How many events are confirmed together.
    #[serde(default)]
    pub batch: StreamBatchConfig,
}

impl TargetSpec for DiscardTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "discard"
    }
    fn concurrency(&self) -> usize {
        self.concurrency
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some((&self.batch).into())
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        validate_batch(v, at, &(&self.batch).into(), self.concurrency);
    }
}

pub struct DiscardSink;

#[async_trait]
impl Sink for DiscardSink {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        events.iter().map(|_| Ok(())).collect()
    }
}

impl BuildSink for DiscardTargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(DiscardSink))
    }
}
