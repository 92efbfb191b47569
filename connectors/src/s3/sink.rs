//! The S3 target: each batch becomes one object per key it renders (see
//! [`super::object`]), written whole with one PUT, or as a multipart upload above
//! `part_bytes` that is aborted when any part fails, so a reader never sees half an
//! object.
//!
//! An object is created only where its key is free (`If-None-Match: *`). A taken
//! key is the same batch written before (the dispatcher re-sends a batch exactly as
//! first formed after a failure or a crash, see [`Sink::stable_batches`]), or a
//! batch of another subscription into this target that began with the same event.
//! Then the existing object is read and whatever events it holds that this batch
//! lacks are kept (written back with `If-Match` on its ETag): a write never drops
//! an event written before. The normal case costs one PUT per object.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::config::{ObjectCompression, S3TargetConfig};
use async_trait::async_trait;
use bytes::Bytes;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, MultipartUpload, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, UpdateVersion,
};
use sluice_router::event::Event;
use sluice_router::sink::{Sink, SinkError};
use sluice_router::transform::NameTemplate;
use tokio::task::JoinSet;

use super::client::{self, describe};
use super::object::{self, Merged, Object};
use crate::{BuildSink, ConnectorError};

/// Parts of one multipart upload sent at once, at most.
const PARTS_IN_FLIGHT: usize = 4;
/// Time allowed for aborting a failed multipart upload.
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes batches of events as JSON-lines objects into one bucket.
///
/// # Which failures are retried
///
/// Every failed upload is transient: the events stay queued and are retried with
/// the rule's backoff, until its `max_attempts` / `max_age` dead-letter them. That
/// includes network errors, timeouts and 5xx, and also answers like `NoSuchBucket`,
/// `AccessDenied` or a bad signature: those are fixed by the operator (create the
/// bucket, grant the policy, rotate the key), after which the queued events go out
/// by themselves; dead-lettering every event of the stream at the first 403 would
/// leave the operator to redrive all of them instead. Only an event that can never
/// be written is permanent: one whose object key does not render (a field of the
/// key template is missing) or is not a valid key.
pub struct S3Sink {
    store: Arc<AmazonS3>,
    bucket: String,
    /// Where the bucket is, for messages: the endpoint, or `AWS <region>`.
    place: String,
    key: NameTemplate,
    compression: ObjectCompression,
    part_bytes: usize,
    timeout: Duration,
    /// Whether the server takes conditional writes (`If-None-Match`, `If-Match`);
    /// cleared when it answers that it does not.
    conditional: AtomicBool,
    /// Listed by [`Sink::check`]: a folder under the key's fixed prefix that holds
    /// nothing, so the check costs one small request.
    probe: Path,
}

impl S3Sink {
    /// Build the client; nothing is sent until [`Sink::check`]. Credentials come
    /// from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, or the instance's role).
    pub fn new(config: &S3TargetConfig) -> Result<Self, String> {
        let template = config.key_template();
        let key = NameTemplate::parse(&template).map_err(|e| format!("key: {e}"))?;
        let (store, place) = client::build(&client::Place {
            endpoint: config.endpoint.as_deref(),
            region: &config.region,
            bucket: &config.bucket,
            path_style: config.path_style,
            timeout: config.timeout,
        })?;
        Ok(Self {
            store: Arc::new(store),
            bucket: config.bucket.clone(),
            place,
            probe: probe_path(&template),
            conditional: AtomicBool::new(true),
            key,
            compression: config.compression,
            part_bytes: config.part_bytes.max(5 * 1024 * 1024),
            timeout: config.timeout,
        })
    }

    fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, "application/x-ndjson".into());
        if self.compression == ObjectCompression::Gzip {
            attributes.insert(Attribute::ContentEncoding, "gzip".into());
        }
        attributes
    }

    /// Write one object whole, within `timeout`; see the type's docs for how
    /// failures are classed.
    ///
    /// The object is created only if its key is free (`If-None-Match: *`). A key
    /// that is taken means the object was written before: by this batch (a retry,
    /// or a restart before the outcome was recorded), or by another subscription
    /// whose batch began with the same event. Then the object is read and its
    /// events are kept: see [`object::merge`].
    async fn write(&self, object: &Object) -> Result<(), SinkError> {
        let what = format!("s3://{}/{}", self.bucket, object.key);
        // Writers of the same key in this process take turns, so that a merge
        // never races another write here even where the server's conditional
        // writes are not atomic.
        let _turn = key_lock(&self.place, &what).lock().await;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let fail = |doing: &str, e: object_store::Error| {
            SinkError::transient(format!("{doing} {what}: {}", describe(&e)))
        };
        if object.body.len() > self.part_bytes {
            // A multipart upload is not conditional here: look first.
            return match self
                .within(deadline, &what, self.store.head(&object.key))
                .await?
            {
                Ok(_) => self.merge(object, &what, deadline).await,
                Err(object_store::Error::NotFound { .. }) => {
                    self.put_parts(&object.key, &object.body, &what, deadline)
                        .await
                }
                Err(e) => Err(fail("looking up", e)),
            };
        }
        let conditional = self.conditional.load(Ordering::Relaxed);
        let mode = if conditional {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let put = self.put(&object.key, object.body.clone(), mode);
        match self.within(deadline, &what, put).await? {
            Ok(()) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.merge(object, &what, deadline).await
            }
            Err(e) if conditional && unsupported(&e) => {
                tracing::warn!(bucket = %self.bucket, error = %describe(&e), "The S3 server does not support conditional writes; objects of the same key are overwritten from now on.");
                self.conditional.store(false, Ordering::Relaxed);
                let put = self.put(&object.key, object.body.clone(), PutMode::Overwrite);
                self.within(deadline, &what, put)
                    .await?
                    .map_err(|e| fail("writing", e))
            }
            Err(e) => Err(fail("writing", e)),
        }
    }

    /// The key of `object` is taken: read that object, and write the union of its
    /// events and ours (conditional on it not changing meanwhile).
    async fn merge(
        &self,
        object: &Object,
        what: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), SinkError> {
        let fail = |doing: &str, e: object_store::Error| {
            SinkError::transient(format!("{doing} {what}: {}", describe(&e)))
        };
        let got = self
            .within(deadline, what, self.store.get(&object.key))
            .await?
            .map_err(|e| fail("reading the existing", e))?;
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let existing = self
            .within(deadline, what, got.bytes())
            .await?
            .map_err(|e| fail("reading the existing", e))?;
        let (lines, keys, compression) =
            (object.lines.clone(), object.keys.clone(), self.compression);
        let merged = tokio::task::spawn_blocking(move || {
            object::merge(&existing, &lines, &keys, compression)
        })
        .await
        .map_err(|e| SinkError::transient(format!("merging into {what}: {e}")))?
        .map_err(|e| SinkError::transient(format!("{what} exists and is not overwritten: {e}")))?;
        let body = match merged {
            Merged::Same => return Ok(()),
            Merged::Replace => object.body.clone(),
            Merged::Union(body) => body,
        };
        if body.len() > self.part_bytes {
            return self.put_parts(&object.key, &body, what, deadline).await;
        }
        let mode = if self.conditional.load(Ordering::Relaxed) {
            PutMode::Update(version)
        } else {
            PutMode::Overwrite
        };
        match self
            .within(deadline, what, self.put(&object.key, body, mode))
            .await?
        {
            Ok(()) => Ok(()),
            Err(object_store::Error::Precondition { .. }) => Err(SinkError::transient(format!(
                "{what} changed while events were merged into it; trying again"
            ))),
            Err(e) => Err(fail("writing", e)),
        }
    }

    async fn put(&self, key: &Path, body: Bytes, mode: PutMode) -> object_store::Result<()> {
        let opts = PutOptions {
            mode,
            attributes: self.attributes(),
            ..PutOptions::default()
        };
        self.store
            .put_opts(key, PutPayload::from_bytes(body), opts)
            .await
            .map(|_| ())
    }

    /// Upload `body` as a multipart upload; on any failure, abort it so that
    /// nothing of it becomes visible.
    async fn put_parts(
        &self,
        key: &Path,
        body: &Bytes,
        what: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(), SinkError> {
        let opts = PutMultipartOptions::from(self.attributes());
        let mut upload = self
            .within(deadline, what, self.store.put_multipart_opts(key, opts))
            .await?
            .map_err(|e| {
                SinkError::transient(format!("starting the upload of {what}: {}", describe(&e)))
            })?;
        let error = match self
            .within(
                deadline,
                what,
                send_parts(&mut *upload, body, self.part_bytes),
            )
            .await
        {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => {
                SinkError::transient(format!("uploading {what} in parts: {}", describe(&e)))
            }
            Err(timed_out) => timed_out,
        };
        // Nothing of an unfinished upload is visible; aborting frees its parts.
        match tokio::time::timeout(ABORT_TIMEOUT, upload.abort()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(object = %what, error = %describe(&e), "Aborting a failed multipart upload failed; its parts stay until the bucket's lifecycle rule removes them.")
            }
            Err(_) => {
                tracing::warn!(object = %what, "Aborting a failed multipart upload timed out; its parts stay until the bucket's lifecycle rule removes them.")
            }
        }
        Err(error)
    }

    /// Run `step` of writing `what` unless the object's time is up.
    async fn within<T>(
        &self,
        deadline: tokio::time::Instant,
        what: &str,
        step: impl std::future::Future<Output = T>,
    ) -> Result<T, SinkError> {
        tokio::time::timeout_at(deadline, step).await.map_err(|_| {
            SinkError::transient(format!("writing {what} timed out after {:?}", self.timeout))
        })
    }
}

/// Locks striped over object keys, shared by every S3 target of the process (each
/// subscription has its own sink, and two may write the same key).
static KEY_LOCKS: [tokio::sync::Mutex<()>; 64] = [const { tokio::sync::Mutex::const_new(()) }; 64];

fn key_lock(place: &str, what: &str) -> &'static tokio::sync::Mutex<()> {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (place, what).hash(&mut h);
    &KEY_LOCKS[(h.finish() % KEY_LOCKS.len() as u64) as usize]
}

/// Whether the server refused a conditional write as a feature it lacks.
fn unsupported(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotImplemented) || {
        let text = e.to_string();
        text.contains("NotImplemented") || text.contains("501 Not Implemented")
    }
}

/// Upload `body` in parts of `part_bytes` (the last one shorter), a few at a time,
/// and complete the upload.
async fn send_parts(
    upload: &mut dyn MultipartUpload,
    body: &Bytes,
    part_bytes: usize,
) -> object_store::Result<()> {
    let mut in_flight = JoinSet::new();
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + part_bytes).min(body.len());
        if in_flight.len() >= PARTS_IN_FLIGHT {
            join_one(&mut in_flight).await?;
        }
        in_flight.spawn(upload.put_part(PutPayload::from_bytes(body.slice(offset..end))));
        offset = end;
    }
    while !in_flight.is_empty() {
        join_one(&mut in_flight).await?;
    }
    upload.complete().await.map(|_| ())
}

async fn join_one(set: &mut JoinSet<object_store::Result<()>>) -> object_store::Result<()> {
    match set.join_next().await {
        Some(Ok(result)) => result,
        Some(Err(e)) => Err(object_store::Error::JoinError { source: e }),
        None => Ok(()),
    }
}

#[async_trait]
impl Sink for S3Sink {
    async fn deliver(&self, events: &[Event]) -> Vec<Result<(), SinkError>> {
        let (key, compression, batch) = (self.key.clone(), self.compression, events.to_vec());
        let now = chrono::Utc::now();
        // Serialising and compressing a batch is CPU work: off the runtime.
        let plan =
            match tokio::task::spawn_blocking(move || object::plan(&key, compression, &batch, now))
                .await
            {
                Ok(plan) => plan,
                Err(e) => {
                    let message = format!("preparing objects failed: {e}");
                    return events
                        .iter()
                        .map(|_| Err(SinkError::transient(&message)))
                        .collect();
                }
            };
        let mut results: Vec<Result<(), SinkError>> = events
            .iter()
            .map(|_| Err(SinkError::transient("the event was in no object")))
            .collect();
        for (i, reason) in plan.rejected {
            results[i] = Err(SinkError::permanent(reason));
        }
        for object in &plan.objects {
            let result = self.write(object).await;
            if result.is_ok() {
                tracing::debug!(bucket = %self.bucket, key = %object.key, lines = object.keys.len(), bytes = object.body.len(), "Object written.");
            }
            for &i in &object.members {
                results[i] = result.clone();
            }
        }
        results
    }

    /// Objects are named after the first event of each group, so a batch must be
    /// written again exactly as it was first formed (after a crash too): then a
    /// retry rewrites the same objects with the same events.
    fn stable_batches(&self) -> bool {
        true
    }

    /// The bucket exists and these credentials may list it (a listing of an empty
    /// folder under the key's prefix: one small request).
    /// Reachable and set up; otherwise why not (checked again until it is).
    async fn check(&self) -> Result<(), SinkError> {
        self.readiness().await.map_err(SinkError::transient)
    }
}

impl S3Sink {
    /// Why the far side cannot take events yet, if it cannot.
    async fn readiness(&self) -> Result<(), String> {
        let listed = tokio::time::timeout(
            self.timeout,
            self.store.list_with_delimiter(Some(&self.probe)),
        )
        .await;
        let reason = match listed {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => describe(&e),
            Err(_) => format!("no answer within {:?}", self.timeout),
        };
        Err(format!(
            "bucket {} at {}: {reason}",
            self.bucket, self.place
        ))
    }
}

/// The folder [`Sink::check`] lists: `.sluice-check` under the directory part of
/// the key template before its first `{field}` or date part, so that a policy that
/// grants listing only under that prefix passes.
fn probe_path(template: &str) -> Path {
    let fixed = &template[..template.find(['{', '%']).unwrap_or(template.len())];
    let dir = fixed.rsplit_once('/').map_or("", |(dir, _)| dir);
    Path::parse(dir).unwrap_or_default().child(".sluice-check")
}

impl BuildSink for S3TargetConfig {
    fn build(&self) -> Result<Arc<dyn Sink>, ConnectorError> {
        Ok(Arc::new(S3Sink::new(self).map_err(ConnectorError::config)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(settings: serde_json::Value) -> S3TargetConfig {
        serde_json::from_value(settings).unwrap()
    }

    #[test]
    fn probe_is_under_the_keys_fixed_prefix() {
        assert_eq!(
            probe_path("events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz").as_ref(),
            "events/.sluice-check"
        );
        assert_eq!(
            probe_path("a/b/{type}/{uuid}").as_ref(),
            "a/b/.sluice-check"
        );
        assert_eq!(probe_path("{uuid}.jsonl").as_ref(), ".sluice-check");
    }

    #[test]
    fn bad_settings_fail_to_build_with_the_reason() {
        let build = |extra: serde_json::Value| {
            let mut settings = serde_json::json!({"name": "t", "bucket": "b-1"});
            settings
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            S3Sink::new(&config(settings))
        };
        let err = build(serde_json::json!({"endpoint": "http://host:99999"}))
            .err()
            .unwrap();
        assert!(
            err.starts_with("endpoint: ") && err.contains("port"),
            "{err}"
        );
        let err = build(serde_json::json!({"endpoint": "ftp://host"}))
            .err()
            .unwrap();
        assert!(err.contains("http or https"), "{err}");
        let err = build(serde_json::json!({"endpoint": "http://a b"}))
            .err()
            .unwrap();
        assert!(err.contains("host name"), "{err}");
        let err = build(serde_json::json!({"endpoint": "http://h:9000/path"}))
            .err()
            .unwrap();
        assert!(err.contains("path"), "{err}");
        let err = build(serde_json::json!({"key": "x/{uuid"})).err().unwrap();
        assert!(
            err.starts_with("key: ") && err.contains("never closed"),
            "{err}"
        );
        for ok in [
            "http://127.0.0.1:9000/",
            "https://s3.example.com",
            "http://[::1]:9000",
        ] {
            assert!(
                build(serde_json::json!({"endpoint": ok, "path_style": true})).is_ok(),
                "{ok}"
            );
        }
    }

    #[test]
    fn the_default_key_follows_the_compression() {
        let gz = config(serde_json::json!({"name": "t", "bucket": "b-1"}));
        assert_eq!(
            gz.key_template(),
            "events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz"
        );
        let plain =
            config(serde_json::json!({"name": "t", "bucket": "b-1", "compression": "none"}));
        assert_eq!(
            plain.key_template(),
            "events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl"
        );
    }
}
