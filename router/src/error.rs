//! Error classes shared by every part of sluice.

use serde::Serialize;

/// What a failure means for the event that caused it.
///
/// Every library error carries one, so the dispatcher decides retry or dead letter
/// from the class alone and never from a message string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The configuration is wrong; fix the YAML.
    Config,
    /// May succeed later: retry with backoff.
    Transient,
    /// Will never succeed for this event: dead-letter it.
    Permanent,
    /// A bug or a broken local resource (the store); retried, and logged loudly.
    Internal,
}
