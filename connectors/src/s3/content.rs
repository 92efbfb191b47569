//! `content: inline`: an object event carries the object's bytes.
//!
//! An object whose bytes fit `server.max_event_bytes` (by the size the listing
//! or notification gave, and again by what was read) is read with one GET and
//! put in `data`: JSON when it parses (`datacontenttype: application/json`),
//! else the bytes (`data_base64`, `application/octet-stream`). A larger object
//! keeps the record as `data` and gets the CloudEvents `dataref` extension,
//! `s3://bucket/key`: a body is never cut short. So does an object that is gone
//! by the time it is read (the next poll, or the store's own notification,
//! tells of its deletion).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::ObjectStore;
use sluice_router::cloudevents::{AttributesWriter, Data};
use sluice_router::event::Event;

use super::client::describe;

/// Reads objects of one bucket into events.
#[derive(Clone)]
pub(crate) struct Inline {
    store: Arc<AmazonS3>,
    bucket: String,
    max_bytes: usize,
}

/// What reading an object came to.
pub(crate) enum Read {
    /// The event now carries the object (or a `dataref`).
    Done,
    /// The GET failed; the reason, for the status and the log.
    Failed(String),
}

impl Inline {
    pub(crate) fn new(store: Arc<AmazonS3>, bucket: &str, max_bytes: usize) -> Self {
        Self {
            store,
            bucket: bucket.to_owned(),
            max_bytes,
        }
    }

    /// Put object `key` (of `size` bytes) into `event`, or a `dataref` when it
    /// does not fit; `Failed` when it could not be read (try again).
    pub(crate) async fn fill(&self, event: &mut Event, key: &str, size: u64) -> Read {
        if size > self.max_bytes as u64 {
            self.dataref(event, key);
            return Read::Done;
        }
        // A key as listed or notified; `Path::from` would escape what `parse` refuses.
        let path = Path::parse(key).unwrap_or_else(|_| Path::from(key));
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await,
            Err(e) => Err(e),
        };
        match bytes {
            Ok(bytes) => {
                set_body(event, &bytes, self.max_bytes).unwrap_or_else(|| self.dataref(event, key));
                Read::Done
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.dataref(event, key);
                Read::Done
            }
            Err(e) => Read::Failed(format!(
                "reading s3://{}/{key}: {}",
                self.bucket,
                describe(&e)
            )),
        }
    }

    fn dataref(&self, event: &mut Event, key: &str) {
        event.set_extension("dataref", format!("s3://{}/{key}", self.bucket));
    }

    /// [`Inline::fill`] until it is read, waiting `first`, doubling to `max`
    /// between tries, telling `failing` each failure; `false` when `stop` came
    /// first.
    pub(crate) async fn fill_retrying(
        &self,
        event: &mut Event,
        key: &str,
        size: u64,
        (first, max): (Duration, Duration),
        failing: &(dyn Fn(Option<&str>) + Send + Sync),
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let mut wait = first;
        loop {
            match self.fill(event, key, size).await {
                Read::Done => {
                    failing(None);
                    return true;
                }
                Read::Failed(why) => {
                    tracing::warn!(bucket = %self.bucket, key = %key, error = %why, "Reading an object for its event failed; retrying.");
                    failing(Some(&why));
                }
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(max);
        }
    }
}

/// Put `bytes` in `event`'s data (JSON when they parse, else binary); `None`
/// when that would not fit `max_bytes`.
fn set_body(event: &mut Event, bytes: &[u8], max_bytes: usize) -> Option<()> {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        if bytes.len() > max_bytes {
            return None;
        }
        event.set_datacontenttype(Some("application/json"));
        event.set_data_unchecked(Data::Json(json));
        return Some(());
    }
    // `data_base64`: 4 characters per 3 bytes.
    if bytes.len().div_ceil(3) * 4 > max_bytes {
        return None;
    }
    event.set_datacontenttype(Some("application/octet-stream"));
    event.set_data_unchecked(Data::Binary(bytes.to_vec()));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_router::cloudevents::AttributesReader;
    use sluice_router::event::{EventFields, RawData};

    fn event() -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "1")
            .attr("source", "s")
            .attr("type", "t")
            .data(RawData::Json(serde_json::json!({"record": true})));
        f.build().unwrap()
    }

    #[test]
    fn json_goes_in_as_json_and_other_bytes_as_base64() {
        let mut e = event();
        set_body(&mut e, br#"{"a": 1}"#, 100).unwrap();
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(e.data(), Some(&Data::Json(serde_json::json!({"a": 1}))));
        let mut e = event();
        set_body(&mut e, b"\x00\x01binary", 100).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["data_base64"], "AAFiaW5hcnk=");
        assert_eq!(json["datacontenttype"], "application/octet-stream");
    }

    #[test]
    fn what_does_not_fit_is_left_alone() {
        let mut e = event();
        assert!(set_body(&mut e, &[0u8; 76], 100).is_none());
        assert!(set_body(&mut e, br#""a long JSON string""#, 10).is_none());
        assert_eq!(
            e.data(),
            Some(&Data::Json(serde_json::json!({"record": true})))
        );
    }
}
