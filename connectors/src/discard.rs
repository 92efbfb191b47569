//! The `discard` target: confirms every event at once and keeps nothing. For trying
//! rules (their metrics still count deliveries) and for benchmarks of everything
//! before delivery.

use async_trait::async_trait;
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};

pub struct DiscardSink;

#[async_trait]
impl Sink for DiscardSink {
    async fn deliver(&self, _event: &Event) -> Result<(), SinkError> {
        Ok(())
    }
}
