//! Error classes shared by every part of sluice, and the shape of its HTTP errors.

use serde::Serialize;

/// What a failure means for the event that caused it.
///
/// Every library error carries one, so the dispatcher decides retry or dead letter
/// from the class alone and never from a message string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The configuration is wrong; fix the YAML. From a sink's delivery: the
    /// target is not set up to take events (its table is gone, say): deliveries
    /// wait, and the target is checked again until it is, without using up the
    /// events' attempts.
    Config,
    /// May succeed later: retry with backoff.
    Transient,
    /// Will never succeed for this event: dead-letter it.
    Permanent,
    /// A bug or a broken local resource (the store); retried, and logged loudly.
    Internal,
}

/// The body of every HTTP error answer sluice gives:
/// `{"error": {"code": "...", "message": "...", "field": "..."}}` (`field` only for
/// a bad event's field).
pub fn error_body(code: &str, message: &str, field: Option<&str>) -> serde_json::Value {
    let mut error = serde_json::json!({"code": code, "message": message});
    if let Some(field) = field {
        error["field"] = serde_json::json!(field);
    }
    serde_json::json!({ "error": error })
}

/// Whether an `Authorization` header value carries `Bearer <expected>` (the
/// scheme in any case, RFC 7235); the token compared in constant time.
pub fn bearer_matches(authorization: Option<&str>, expected: &str) -> bool {
    let given = authorization
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start())
        .unwrap_or_default();
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_the_token_exactly() {
        assert!(bearer_matches(Some("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("bearer s3cret"), "s3cret"));
        assert!(bearer_matches(Some("BEARER  s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer S3CRET"), "s3cret"));
        assert!(!bearer_matches(Some("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(Some("Bearer"), "s3cret"));
        assert!(!bearer_matches(None, "s3cret"));
    }
}
