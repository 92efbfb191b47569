//! What this crate needs of each connector's settings, and of the closed set of
//! connectors a build of sluice has.
//!
//! A connector's settings struct implements [`SourceSpec`] or [`TargetSpec`]:
//! the shared fields through accessors, and the checks serde cannot make. The
//! registry (one enum per side, in the connectors crate) implements
//! [`SourceEntry`] / [`TargetEntry`]: which `type`s exist, how one is read, and
//! which settings an entry holds. That keeps adding a connector to its folder
//! and a line per side in the registry, while this crate, which never depends on
//! the connectors, still checks names, buses and rules across them all.

use std::fmt::Debug;

use schemars::JsonSchema;

use super::{BatchConfig, BreakerConfig, Validator};

/// A source's settings, as sluice sees them whatever the connector.
pub trait SourceSpec {
    /// The source's name, unique among sources.
    fn name(&self) -> &str;
    /// The bus its events go to.
    fn bus(&self) -> &str;
    /// The `type` that names the connector in a config file.
    fn kind(&self) -> &'static str;
    /// Report what serde cannot check (ranges, URLs, templates) under `at`, the
    /// entry's path (`sources[2]`). Pure: no I/O.
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        let _ = (at, v);
    }
}

/// A target's settings, as sluice sees them whatever the connector.
pub trait TargetSpec {
    /// The target's name, unique among targets.
    fn name(&self) -> &str;
    /// The `type` that names the connector in a config file.
    fn kind(&self) -> &'static str;
    /// Deliveries (or batches, for a batching target) in flight at once, at most.
    fn concurrency(&self) -> usize;
    /// How the target batches writes; `None`: one event per delivery.
    fn batch(&self) -> Option<BatchConfig> {
        None
    }
    /// Events a second at most, shared by every subscription of the target;
    /// `None`: as fast as `concurrency` allows.
    fn rate_limit(&self) -> Option<f64> {
        None
    }
    /// The target's circuit breaker, if it has one (off by default).
    fn breaker(&self) -> Option<BreakerConfig> {
        None
    }
    /// Report what serde cannot check under `at` (`targets[1]`). Pure: no I/O.
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        let _ = (at, v);
    }
}

/// The closed set of source types of a build: one variant per connector.
pub trait SourceEntry: Clone + Debug + JsonSchema + Send + Sync + 'static {
    /// Every `type` a config file may name, including connectors this build
    /// leaves out (their entries are then refused with that reason).
    const TYPES: &'static [&'static str];
    /// The entry of type `tag` (one of [`SourceEntry::TYPES`]) from its settings
    /// with `type` removed, read with [`Validator::section`]; `None` once the
    /// problem is reported.
    fn parse(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        v: &mut Validator<'_>,
    ) -> Option<Self>;
    /// The settings this entry holds.
    fn spec(&self) -> &dyn SourceSpec;
}

/// The closed set of target types of a build: one variant per connector.
pub trait TargetEntry: Clone + Debug + JsonSchema + Send + Sync + 'static {
    /// See [`SourceEntry::TYPES`].
    const TYPES: &'static [&'static str];
    /// See [`SourceEntry::parse`].
    fn parse(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        v: &mut Validator<'_>,
    ) -> Option<Self>;
    /// The settings this entry holds.
    fn spec(&self) -> &dyn TargetSpec;
}
