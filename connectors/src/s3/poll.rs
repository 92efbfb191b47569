//! The S3 source, `mode: poll`: list the bucket under `prefix` every
//! `interval` and publish an event for each object that is new or whose ETag
//! changed (`ObjectCreated:Put`) and, with `deletes: true`, for each object
//! gone since the last pass (`ObjectRemoved:Delete`), mapped exactly as a
//! notification of the same change (see [`super::notification::polled_event`]).
//!
//! # The cursor
//!
//! What has been seen is one mark per object ([`SourceContext::publish_remarked`]):
//! key `o/` + the object key, value a 64-bit FNV-1a hash of the ETag (of size and
//! last-modified time when the store lists no ETag; the event then gets the ETag
//! from a HEAD of the changed object). On disk that is the key's
//! length plus about 30 bytes of value and sled overhead per object once sled
//! has compacted its log (about four times that while a first pass writes
//! them), so a 1,000,000-object bucket of 60-byte keys costs ~90 MB of store.
//! In memory a pass holds one page of the listing and one chunk of marks,
//! whatever the bucket's size; sled's own memory does grow with the marks
//! (RSS ~200 MiB at 1,000,000, see docs/s3-events.md). Marks are written in
//! the same commit as the events they caused, a batch of up to [`BATCH`]
//! changed objects at a time, so a crash or `kill -9` mid-pass loses no event
//! and repeats at most one batch, whose events have the same ids (bucket, key,
//! ETag, event name) and are dropped by `server.dedupe_window`.
//!
//! # Finding deletions in bounded memory
//!
//! ListObjectsV2 returns keys in UTF-8 byte order and the store keeps marks in
//! byte order, so one pass is a merge of two sorted streams: the listing, and
//! the marks under `o/` + `prefix` read a chunk at a time
//! ([`SourceContext::marks_from`]). A mark whose key the listing skipped over is
//! an object that is gone. A store that lists out of order fails the pass (the
//! status says so) rather than publishing wrong deletions.
//!
//! A mark `started` records that the first pass ended; until then, with
//! `start: now`, objects are marked as seen without events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use sluice_router::event::Event;
use sluice_router::source::{Source, SourceContext, SourceError};

use super::client::describe;
use super::content::Inline;
use super::notification::{polled_event, Mapping, Polled};
use super::poll_status::PollStatus;
use super::source_config::{PollStart, S3SourceConfig};

/// Key prefix of the per-object marks. Stored on disk: do not change.
const OBJECT_MARKS: &[u8] = b"o/";
/// The mark telling that the first pass ended. Stored on disk: do not change.
const STARTED: &[u8] = b"started";
/// Changed objects published (and marked) by one commit, at most.
pub(super) const BATCH: usize = 500;
/// Bytes of object content (`content: inline`) held by one batch, about, at most.
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// Marks read from the store at a time.
const MARK_CHUNK: usize = 1000;
/// The first wait after a failure (then doubling, up to `interval`).
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// How often a source paused for a full backlog looks again.
const BACKLOG_WAIT: Duration = Duration::from_millis(200);

/// A polling S3 source.
pub(super) struct Poller {
    pub(super) store: Arc<AmazonS3>,
    /// Where the bucket is, for messages.
    pub(super) place: String,
    pub(super) bucket: String,
    pub(super) region: String,
    pub(super) prefix: String,
    pub(super) interval: Duration,
    pub(super) deletes: bool,
    pub(super) start: PollStart,
    pub(super) mapping: Mapping,
    pub(super) inline: Option<Inline>,
    pub(super) status: Arc<PollStatus>,
}

impl Poller {
    pub(super) fn new(
        config: &S3SourceConfig,
        store: Arc<AmazonS3>,
        place: String,
        mapping: Mapping,
        inline: Option<Inline>,
    ) -> Self {
        let bucket = config.bucket.clone().unwrap_or_default();
        Self {
            status: Arc::new(PollStatus::new(&bucket, config.prefix())),
            store,
            place,
            bucket,
            region: config.region().to_owned(),
            prefix: config.prefix().to_owned(),
            interval: config.interval(),
            deletes: config.deletes(),
            start: config.start(),
            mapping,
            inline,
        }
    }
}

/// Why a pass ended early.
enum Stop {
    Shutdown,
    Failed(String),
}

/// The changes of a pass not yet committed.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    marks: Vec<(Vec<u8>, i64)>,
    unmarks: Vec<Vec<u8>>,
    /// Object content held, about (`content: inline`).
    bytes: u64,
}

impl Batch {
    fn len(&self) -> usize {
        self.marks.len() + self.unmarks.len()
    }
}

/// The marks under one prefix, read in key order a chunk at a time.
struct Marks {
    prefix: Vec<u8>,
    chunk: VecDeque<(Vec<u8>, i64)>,
    after: Option<Vec<u8>>,
    done: bool,
}

impl Marks {
    fn new(prefix: Vec<u8>) -> Self {
        Self {
            prefix,
            chunk: VecDeque::new(),
            after: None,
            done: false,
        }
    }

    fn peek(&mut self, cx: &SourceContext) -> Result<Option<&(Vec<u8>, i64)>, Stop> {
        if self.chunk.is_empty() && !self.done {
            let chunk = cx
                .marks_from(&self.prefix, self.after.as_deref(), MARK_CHUNK)
                .map_err(|e| Stop::Failed(format!("reading the cursor: {e}")))?;
            self.after = chunk.last().map(|(k, _)| k.clone());
            self.done = chunk.len() < MARK_CHUNK;
            self.chunk.extend(chunk);
        }
        Ok(self.chunk.front())
    }

    fn pop(&mut self) -> Option<(Vec<u8>, i64)> {
        self.chunk.pop_front()
    }
}

/// The 64-bit FNV-1a hash of `bytes`: the cursor's value for an ETag. Stored
/// on disk: changing it makes every object of every bucket look changed once.
fn fnv1a(bytes: &[u8]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The ETag of a listed object without its quotes; empty when none was listed.
fn etag(meta: &ObjectMeta) -> &str {
    meta.e_tag.as_deref().unwrap_or_default().trim_matches('"')
}

/// What stands for an object's content in the cursor: its ETag, or its size
/// and last-modified time when the store lists no ETag.
fn token(meta: &ObjectMeta) -> i64 {
    match etag(meta) {
        "" => fnv1a(format!("{}@{}", meta.size, meta.last_modified.timestamp_millis()).as_bytes()),
        tag => fnv1a(tag.as_bytes()),
    }
}

impl Poller {
    /// The folder to list (object_store lists whole path segments) and the
    /// string every key must start with.
    fn folder(&self) -> Result<Option<Path>, String> {
        let dir = self.prefix.rsplit_once('/').map_or("", |(dir, _)| dir);
        if dir.is_empty() {
            return Ok(None);
        }
        Path::parse(dir)
            .map(Some)
            .map_err(|e| format!("prefix {:?}: {e}", self.prefix))
    }

    /// One pass over the bucket; the number of objects under the prefix.
    async fn pass(&self, cx: &SourceContext) -> Result<u64, Stop> {
        let first = cx
            .mark(STARTED)
            .map_err(|e| Stop::Failed(format!("reading the cursor: {e}")))?
            .is_none();
        let quiet = first && self.start == PollStart::Now;
        let folder = self.folder().map_err(Stop::Failed)?;
        let mut listing = self.store.list(folder.as_ref());
        let mut marks = Marks::new([OBJECT_MARKS, self.prefix.as_bytes()].concat());
        let mut batch = Batch::default();
        let mut last: Option<String> = None;
        let mut objects = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return Err(Stop::Shutdown),
                next = listing.next() => next,
            };
            let Some(meta) = next else { break };
            let meta = meta.map_err(|e| {
                Stop::Failed(format!(
                    "listing bucket {} at {}: {}",
                    self.bucket,
                    self.place,
                    describe(&e)
                ))
            })?;
            let key = meta.location.as_ref();
            if !key.starts_with(&self.prefix) {
                if key > self.prefix.as_str() {
                    break; // sorted: nothing after this has the prefix
                }
                continue;
            }
            if last.as_deref().is_some_and(|l| l >= key) {
                return Err(Stop::Failed(format!(
                    "bucket {} at {} listed {key:?} after {:?}: the store does not list keys in order, which polling needs",
                    self.bucket,
                    self.place,
                    last.unwrap_or_default()
                )));
            }
            objects += 1;
            let mark_key = [OBJECT_MARKS, key.as_bytes()].concat();
            while let Some((gone, _)) = marks.peek(cx)? {
                if gone.as_slice() >= mark_key.as_slice() {
                    break;
                }
                if let Some((gone, hash)) = marks.pop() {
                    self.gone(gone, hash, quiet, &mut batch)?;
                }
            }
            let token = token(&meta);
            let known = match marks.peek(cx)? {
                Some((k, _)) if *k == mark_key => marks.pop().map(|(_, v)| v),
                _ => None,
            };
            if known != Some(token) {
                if !quiet {
                    batch.events.push(self.created(&meta, cx).await?);
                    if self.inline.is_some() {
                        batch.bytes += meta.size;
                    }
                }
                batch.marks.push((mark_key, token));
            }
            if batch.len() >= BATCH || batch.bytes >= BATCH_BYTES {
                self.commit(std::mem::take(&mut batch), cx).await?;
            }
            last = Some(key.to_owned());
        }
        while marks.peek(cx)?.is_some() {
            let Some((gone, hash)) = marks.pop() else {
                break;
            };
            self.gone(gone, hash, quiet, &mut batch)?;
            if batch.len() >= BATCH {
                self.commit(std::mem::take(&mut batch), cx).await?;
            }
        }
        if first {
            batch
                .marks
                .push((STARTED.to_vec(), sluice_router::now_ms() as i64));
        }
        self.commit(batch, cx).await?;
        Ok(objects)
    }

    /// The event for a new or changed object, its content read when
    /// `content: inline` (retrying until it is read).
    async fn created(&self, meta: &ObjectMeta, cx: &SourceContext) -> Result<Event, Stop> {
        let key = meta.location.as_ref();
        // A store that lists no ETags (s3s-fs) is asked for it, once per
        // changed object, so the event carries it as a notification would.
        let headed = match etag(meta) {
            "" => match self.store.head(&meta.location).await {
                Ok(head) => Some(head),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => {
                    return Err(Stop::Failed(format!(
                        "reading the ETag of s3://{}/{key}: {}",
                        self.bucket,
                        describe(&e)
                    )))
                }
            },
            _ => None,
        };
        let mut event = polled_event(
            &Polled {
                name: "ObjectCreated:Put",
                bucket: &self.bucket,
                region: &self.region,
                key,
                size: meta.size,
                etag: etag(headed.as_ref().unwrap_or(meta)),
                version: meta.version.as_deref(),
                sequencer: "",
                time: meta.last_modified,
            },
            &self.mapping,
        )
        .map_err(|e| Stop::Failed(format!("object {key:?}: {}: {}", e.field, e.message)))?;
        if let Some(inline) = &self.inline {
            let status = self.status.clone();
            let failing = move |why: Option<&str>| status.reading(why);
            let waits = (RETRY_FIRST, self.interval.max(RETRY_FIRST));
            if !inline
                .fill_retrying(&mut event, key, meta.size, waits, &failing, cx.shutdown())
                .await
            {
                return Err(Stop::Shutdown);
            }
        }
        Ok(event)
    }

    /// A marked object is not listed any more: forget it, and with
    /// `deletes: true` publish its deletion.
    fn gone(&self, mark: Vec<u8>, hash: i64, quiet: bool, batch: &mut Batch) -> Result<(), Stop> {
        if self.deletes && !quiet {
            let key = String::from_utf8_lossy(&mark[OBJECT_MARKS.len()..]).into_owned();
            let sequencer = format!("{:016X}", hash as u64);
            let event = polled_event(
                &Polled {
                    name: "ObjectRemoved:Delete",
                    bucket: &self.bucket,
                    region: &self.region,
                    key: &key,
                    size: 0,
                    etag: "",
                    version: None,
                    sequencer: &sequencer,
                    time: chrono::Utc::now(),
                },
                &self.mapping,
            )
            .map_err(|e| Stop::Failed(format!("object {key:?}: {}: {}", e.field, e.message)))?;
            batch.events.push(event);
        }
        batch.unmarks.push(mark);
        Ok(())
    }

    /// Publish `batch`'s events and write its marks in one commit, waiting
    /// while the bus's backlog is full and retrying store errors until it is
    /// durable or sluice shuts down.
    async fn commit(&self, batch: Batch, cx: &SourceContext) -> Result<(), Stop> {
        if batch.len() == 0 {
            return Ok(());
        }
        let mut wait = RETRY_FIRST;
        loop {
            let stop = cx.shutdown();
            if cx.room().is_err() {
                tokio::select! {
                    () = stop.cancelled() => return Err(Stop::Shutdown),
                    () = tokio::time::sleep(BACKLOG_WAIT) => continue,
                }
            }
            match cx
                .publish_remarked(&batch.events, &batch.marks, &batch.unmarks)
                .await
            {
                Ok(_) => {
                    self.status.published(batch.events.len());
                    return Ok(());
                }
                Err(e) => {
                    let why = format!("storing events: {e}");
                    tracing::warn!(source = %cx.name(), error = %why, "S3 poller could not publish; retrying.");
                    self.status.failed(&why);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return Err(Stop::Shutdown),
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(self.interval.max(RETRY_FIRST));
        }
    }
}

#[async_trait]
impl Source for Poller {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        cx.report(self.status.clone());
        loop {
            let began = Instant::now();
            let wait = match self.pass(&cx).await {
                Ok(objects) => {
                    let took = began.elapsed();
                    self.status.passed(objects, took.as_millis() as u64);
                    tracing::debug!(source = %cx.name(), objects, took_ms = took.as_millis() as u64, "S3 poll pass done.");
                    self.interval.saturating_sub(took)
                }
                Err(Stop::Shutdown) => return Ok(()),
                Err(Stop::Failed(why)) => {
                    tracing::warn!(source = %cx.name(), error = %why, "S3 poll pass failed; trying again.");
                    self.status.failed(&why);
                    backoff(self.status.failures(), self.interval)
                }
            };
            tokio::select! {
                () = cx.shutdown().cancelled() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// The wait after the `failures`-th failed pass in a row: 1s doubling, at most
/// `interval`.
fn backoff(failures: u64, interval: Duration) -> Duration {
    let exp = failures.saturating_sub(1).min(20) as u32;
    RETRY_FIRST
        .saturating_mul(2u32.saturating_pow(exp))
        .min(interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_interval() {
        let minute = Duration::from_secs(60);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, minute).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            backoff(1, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn the_cursor_hash_is_stable() {
        // Stored on disk: a change would make every object look changed.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
    }
}
