//! The S3 client, shared by the target and the polling source: one way to read
//! endpoint, region, bucket, addressing and credentials, and one way to put a
//! server's error in a line.

use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, RetryConfig};

use super::config::S3TargetConfig;

/// Where a bucket is and how to reach it.
pub(crate) struct Place<'a> {
    /// `http(s)://host[:port]`; none: AWS for `region`.
    pub endpoint: Option<&'a str>,
    pub region: &'a str,
    pub bucket: &'a str,
    pub path_style: bool,
    /// Time allowed for one request (and its retries).
    pub timeout: Duration,
}

/// A client for the bucket of `place`, and where the bucket is, for messages
/// (the endpoint, or `AWS <region>`). Nothing is sent. Credentials come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, or the instance's role); settings from the file win
/// over `AWS_*` variables of the same meaning.
pub(crate) fn build(place: &Place<'_>) -> Result<(AmazonS3, String), String> {
    let mut builder = AmazonS3Builder::from_env()
        .with_region(place.region)
        .with_bucket_name(place.bucket)
        .with_virtual_hosted_style_request(!place.path_style)
        .with_client_options(ClientOptions::new().with_timeout(place.timeout))
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: place.timeout,
            ..RetryConfig::default()
        });
    let at = match place.endpoint {
        Some(endpoint) => {
            S3TargetConfig::check_endpoint(endpoint).map_err(|e| format!("endpoint: {e}"))?;
            let endpoint = endpoint.trim_end_matches('/');
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
            endpoint.to_owned()
        }
        None => format!("AWS {}", place.region),
    };
    let store = builder
        .build()
        .map_err(|e| format!("bucket {} at {at}: {e}", place.bucket))?;
    Ok((store, at))
}

/// An S3 error in a line: the server's error code and message when it gave them
/// (`NoSuchBucket: The specified bucket does not exist`), else object_store's text.
pub(crate) fn describe(e: &object_store::Error) -> String {
    let text = e.to_string();
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))?;
        Some(text[start..start + end].trim().to_owned())
    };
    let status = text
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .map(str::trim);
    match (tag("Code"), tag("Message"), status) {
        (Some(code), Some(message), Some(status)) => format!("{code}: {message} (HTTP {status})"),
        (Some(code), Some(message), None) => format!("{code}: {message}"),
        (Some(code), None, Some(status)) => format!("{code} (HTTP {status})"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_read_as_code_and_message() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Error performing list request: Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>".into(),
        };
        assert_eq!(
            describe(&e),
            "NoSuchBucket: The specified bucket does not exist (HTTP 404 Not Found)"
        );
    }
}
