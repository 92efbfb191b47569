//! The file target's settings and their validation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{validate_batch, BatchConfig, TargetSpec, Validator};

/// Append each event as a line of JSON (the structured CloudEvent) to a local
/// file, in batches, each on disk before it is acknowledged.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTargetConfig {
    /// Name of the target, unique among targets.
    pub name: String,
    /// The file; created if missing (its folder must exist), appended to.
    pub path: String,
    /// How many events are appended together (one fdatasync per batch).
    #[serde(default)]
    pub batch: BatchConfig,
}

impl TargetSpec for FileTargetConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "file"
    }
    /// One append at a time, so the lines of two batches never interleave.
    fn concurrency(&self) -> usize {
        1
    }
    fn batch(&self) -> Option<BatchConfig> {
        Some(self.batch.clone())
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        if self.path.trim().is_empty() {
            v.push(format!("{at}.path"), "must not be empty");
        } else if self.path.ends_with('/') {
            v.push(
                format!("{at}.path"),
                format!("{:?} names a folder; give a file", self.path),
            );
        }
        validate_batch(v, at, &self.batch, 1);
    }
}
