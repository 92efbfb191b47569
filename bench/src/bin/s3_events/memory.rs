//! An S3 endpoint serving one bucket held in memory, for `s3_events`.
//!
//! # What it is
//!
//! A benchmark stand-in for a store that pages its listings from an ordered
//! index, as S3 and MinIO do: a page of `ListObjectsV2` costs a seek in a
//! `BTreeMap` and the walk of up to 1,000 keys, whatever the bucket's size. The
//! s3s-fs test server instead walks and stats its whole folder tree for every
//! page, so its listing grows faster than the bucket and hides what the poller
//! itself costs at 100,000 objects and more.
//!
//! It speaks HTTP/1.1 on `127.0.0.1` (a free port), path-style addressing only
//! (`/{bucket}` and `/{bucket}/{key}`), and serves what object_store's `list`,
//! `list_with_delimiter`, `head` and `get` and sluice's poller send:
//!
//! - `GET /{bucket}?list-type=2` with `prefix`, `continuation-token`,
//!   `start-after`, `max-keys` (default and cap 1,000) and `delimiter`: a
//!   `ListBucketResult` (`Contents` with Key, LastModified, quoted ETag, Size and
//!   StorageClass; `CommonPrefixes`; `KeyCount`, `MaxKeys`, `IsTruncated`,
//!   `NextContinuationToken`), keys in UTF-8 byte order;
//! - `HEAD` and `GET /{bucket}/{key}`: the whole object with Content-Length,
//!   ETag, Last-Modified and Content-Type;
//! - `HEAD /{bucket}`: 200;
//! - unknown bucket or key: 404 with S3's XML error (`NoSuchBucket`,
//!   `NoSuchKey`).
//!
//! # What it is not
//!
//! Not a test double for correctness: it checks no signature (object_store
//! signs every request; anything is accepted), has no writes over HTTP (the
//! benchmark fills the bucket directly with [`Bucket::insert`]), no ranges,
//! versions, conditional requests, V1 listings or `encoding-type=url`, and its
//! ETag is a 128-bit hash of the content, not an MD5. Its continuation token is
//! the hex of the next key to list, not an opaque server-side cursor.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// Keys per listing page when the client asks for none, and at most.
const MAX_KEYS: usize = 1000;

/// One stored object.
pub struct Object {
    pub bytes: Bytes,
    /// Without quotes: 32 hex digits.
    pub etag: String,
    pub last_modified: DateTime<Utc>,
}

/// The one bucket the endpoint serves, keys in byte order.
pub struct Bucket {
    name: String,
    objects: RwLock<BTreeMap<String, Object>>,
}

impl Bucket {
    /// An empty bucket called `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            objects: RwLock::new(BTreeMap::new()),
        }
    }

    /// Stores `bytes` under `key`, modified at `at`, replacing what was there.
    pub fn insert(&self, key: String, bytes: Bytes, at: DateTime<Utc>) {
        let object = Object {
            etag: etag(&bytes),
            bytes,
            last_modified: at,
        };
        self.objects
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, object);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Object>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (`insert` is one call), so a poisoned lock is still a good map.
        self.objects
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 32 hex digits standing for `bytes` (two SipHash values; not an MD5).
fn etag(bytes: &[u8]) -> String {
    let half = |seed: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        seed.hash(&mut h);
        bytes.hash(&mut h);
        h.finish()
    };
    format!("{:016x}{:016x}", half(0), half(1))
}

/// The endpoint, serving until dropped.
pub struct Server {
    addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Server {
    /// Serves `bucket` on a free port of 127.0.0.1.
    pub async fn start(bucket: Arc<Bucket>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("cannot bind the in-memory S3 endpoint")?;
        let addr = listener.local_addr()?;
        let accept = tokio::spawn(async move {
            // Owned by this task: aborting it (on drop) ends every connection.
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let bucket = bucket.clone();
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = handle(&bucket, &req);
                    async move { Ok::<_, Infallible>(response) }
                });
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, accept })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

type Answer = Response<Full<Bytes>>;

fn handle(bucket: &Bucket, req: &Request<Incoming>) -> Answer {
    let path = req.uri().path().strip_prefix('/').unwrap_or_default();
    let (name, key) = path.split_once('/').unwrap_or((path, ""));
    let (Ok(name), Ok(key)) = (decode(name, false), decode(key, false)) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidURI",
            "The path is not UTF-8.",
        );
    };
    let head = req.method() == Method::HEAD;
    if !head && req.method() != Method::GET {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "NotImplemented",
            "This benchmark endpoint serves reads only.",
        );
    }
    if name != bucket.name {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            "The specified bucket does not exist",
        );
    }
    if !key.is_empty() {
        return object(bucket, &key, head);
    }
    if head {
        return respond(StatusCode::OK, "application/xml", Bytes::new());
    }
    match ListQuery::parse(req.uri().query().unwrap_or_default()) {
        Ok(query) => {
            let xml = list(&bucket.name, &bucket.read(), &query);
            respond(StatusCode::OK, "application/xml", Bytes::from(xml))
        }
        Err((code, message)) => error(StatusCode::BAD_REQUEST, code, &message),
    }
}

/// `HEAD` or `GET` of one object.
fn object(bucket: &Bucket, key: &str, head: bool) -> Answer {
    let objects = bucket.read();
    let Some(object) = objects.get(key) else {
        drop(objects);
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        );
    };
    let content_type = if key.ends_with(".json") {
        "application/json"
    } else {
        "application/octet-stream"
    };
    let body = if head {
        Bytes::new()
    } else {
        object.bytes.clone()
    };
    let mut response = respond(StatusCode::OK, content_type, body);
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = header::HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    };
    // Set by hand so that a HEAD carries the object's length, not the body's.
    set(header::CONTENT_LENGTH, object.bytes.len().to_string());
    set(header::ETAG, format!("\"{}\"", object.etag));
    set(
        header::LAST_MODIFIED,
        object
            .last_modified
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    );
    response
}

/// The parameters of a `ListObjectsV2` request.
#[derive(Debug, Default, PartialEq)]
struct ListQuery {
    prefix: String,
    /// Decoded: the first key the page may list.
    continuation: Option<String>,
    /// As sent, for the answer.
    token: Option<String>,
    start_after: Option<String>,
    delimiter: Option<String>,
    max_keys: usize,
}

impl ListQuery {
    /// Reads a query string; an error is S3's code and message.
    fn parse(query: &str) -> Result<Self, (&'static str, String)> {
        let mut q = Self {
            max_keys: MAX_KEYS,
            ..Self::default()
        };
        let mut v2 = false;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = decode(value, true)
                .map_err(|()| ("InvalidArgument", format!("{name} is not UTF-8")))?;
            match name {
                "list-type" => v2 = value == "2",
                "prefix" => q.prefix = value,
                "start-after" => q.start_after = Some(value),
                "delimiter" => q.delimiter = Some(value).filter(|d| !d.is_empty()),
                "max-keys" => {
                    let n: usize = value.parse().map_err(|_| {
                        (
                            "InvalidArgument",
                            format!("max-keys {value:?} is not a number"),
                        )
                    })?;
                    q.max_keys = n.min(MAX_KEYS);
                }
                "continuation-token" => {
                    let key = unhex(&value).ok_or((
                        "InvalidArgument",
                        "The continuation token provided is incorrect".to_owned(),
                    ))?;
                    q.continuation = Some(key);
                    q.token = Some(value);
                }
                _ => {} // encoding-type, fetch-owner, ...: not supported, ignored
            }
        }
        if !v2 {
            return Err((
                "NotImplemented",
                "This benchmark endpoint lists with list-type=2 only.".to_owned(),
            ));
        }
        Ok(q)
    }
}

/// One entry of a listing page.
enum Item<'a> {
    Object(&'a str, &'a Object),
    Prefix(String),
}

/// One page of the listing as `ListBucketResult` XML: a seek in the index to
/// where the page starts, then up to `max_keys` entries in key order.
fn list(bucket: &str, objects: &BTreeMap<String, Object>, q: &ListQuery) -> String {
    // Where the page starts: the token wins over start-after (as in S3), and
    // nothing before the prefix can match it.
    let mut lower: Bound<String> = match (&q.continuation, &q.start_after) {
        (Some(from), _) => Bound::Included(from.clone()),
        (None, Some(after)) => Bound::Excluded(after.clone()),
        (None, None) => Bound::Unbounded,
    };
    let before_prefix = match &lower {
        Bound::Unbounded => true,
        Bound::Included(k) | Bound::Excluded(k) => k.as_str() < q.prefix.as_str(),
    };
    if before_prefix {
        lower = Bound::Included(q.prefix.clone());
    }
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut truncated = false;
    'seek: loop {
        let from = match &lower {
            Bound::Included(k) => Bound::Included(k.as_str()),
            Bound::Excluded(k) => Bound::Excluded(k.as_str()),
            Bound::Unbounded => Bound::Unbounded,
        };
        for (key, object) in objects.range::<str, _>((from, Bound::Unbounded)) {
            if !key.starts_with(&q.prefix) {
                break 'seek; // keys are ordered: none further has the prefix
            }
            let rolled = q.delimiter.as_deref().and_then(|d| {
                let at = key[q.prefix.len()..].find(d)?;
                Some(key[..q.prefix.len() + at + d.len()].to_owned())
            });
            if items.len() == q.max_keys {
                truncated = true;
                break 'seek;
            }
            match rolled {
                Some(common) => {
                    // Skip every key under this common prefix with one seek.
                    let next = after_all(&common);
                    items.push(Item::Prefix(common));
                    match next {
                        Some(next) => {
                            lower = Bound::Included(next);
                            continue 'seek;
                        }
                        None => break 'seek,
                    }
                }
                None => items.push(Item::Object(key, object)),
            }
        }
        break;
    }
    let next = match items.last() {
        Some(Item::Object(key, _)) if truncated => Some(format!("{key}\0")),
        Some(Item::Prefix(common)) if truncated => after_all(common),
        _ => None,
    };
    let mut xml = String::with_capacity(400 + 300 * items.len());
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    let _ = write!(
        xml,
        "<Name>{}</Name><Prefix>{}</Prefix>",
        escape(bucket),
        escape(&q.prefix)
    );
    if let Some(after) = &q.start_after {
        let _ = write!(xml, "<StartAfter>{}</StartAfter>", escape(after));
    }
    if let Some(token) = &q.token {
        let _ = write!(
            xml,
            "<ContinuationToken>{}</ContinuationToken>",
            escape(token)
        );
    }
    if let Some(d) = &q.delimiter {
        let _ = write!(xml, "<Delimiter>{}</Delimiter>", escape(d));
    }
    let _ = write!(
        xml,
        "<KeyCount>{}</KeyCount><MaxKeys>{}</MaxKeys><IsTruncated>{truncated}</IsTruncated>",
        items.len(),
        q.max_keys
    );
    for item in &items {
        if let Item::Object(key, object) = item {
            let _ = write!(
                xml,
                "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                escape(key),
                object.last_modified.to_rfc3339_opts(SecondsFormat::Millis, true),
                object.etag,
                object.bytes.len()
            );
        }
    }
    for item in &items {
        if let Item::Prefix(common) = item {
            let _ = write!(
                xml,
                "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                escape(common)
            );
        }
    }
    if let Some(next) = next {
        let _ = write!(
            xml,
            "<NextContinuationToken>{}</NextContinuationToken>",
            hex(&next)
        );
    }
    xml.push_str("</ListBucketResult>");
    xml
}

/// The least string above every string that starts with `prefix`: its last
/// character replaced by the next one (UTF-8 byte order is code point order,
/// and no character's encoding is a prefix of another's). None past U+10FFFF.
fn after_all(prefix: &str) -> Option<String> {
    let mut chars = prefix.chars();
    let last = chars.next_back()?;
    let mut next = (u32::from(last) + 1..=0x10_FFFF).filter_map(char::from_u32);
    let next = next.next()?;
    Some(format!("{}{next}", chars.as_str()))
}

fn hex(s: &str) -> String {
    s.bytes()
        .fold(String::with_capacity(s.len() * 2), |mut h, b| {
            let _ = write!(h, "{b:02x}");
            h
        })
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Percent-decodes a path segment or (`plus`: `+` is a space) a query value.
fn decode(s: &str, plus: bool) -> Result<String, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let pair = [bytes.next().ok_or(())?, bytes.next().ok_or(())?];
                let pair = std::str::from_utf8(&pair).map_err(|_| ())?;
                out.push(u8::from_str_radix(pair, 16).map_err(|_| ())?);
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `s` as XML character data.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {
                let _ = write!(out, "&#x{:X};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// S3's XML error.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
        escape(message)
    );
    respond(status, "application/xml", Bytes::from(xml))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::path::Path;
    use object_store::ObjectStore;

    async fn serve(keys: &[String]) -> (Server, object_store::aws::AmazonS3) {
        let bucket = Arc::new(Bucket::new("b"));
        for key in keys {
            bucket.insert(key.clone(), Bytes::from(format!("<{key}>")), Utc::now());
        }
        let server = Server::start(bucket).await.expect("server");
        let s3 = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(server.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name("b")
            .with_access_key_id("k")
            .with_secret_access_key("s")
            .build()
            .expect("client");
        (server, s3)
    }

    #[tokio::test]
    async fn object_store_lists_every_page_in_order_and_reads_objects() {
        let mut keys: Vec<String> = (0..2_500)
            .map(|i| format!("d{}/{i:05}.json", i / 1000))
            .collect();
        keys.push("top & <odd>.txt".to_owned());
        let (_server, s3) = serve(&keys).await;
        keys.sort();
        let listed: Vec<_> = s3.list(None).try_collect().await.expect("list");
        let names: Vec<&str> = listed.iter().map(|m| m.location.as_ref()).collect();
        assert_eq!(names, keys);
        assert_eq!(listed[0].size, "<d0/00000.json>".len() as u64);
        assert_eq!(listed[0].e_tag.as_deref().map(|t| t.len()), Some(34));

        let under: Vec<_> = s3
            .list(Some(&Path::from("d1")))
            .try_collect()
            .await
            .expect("list d1");
        assert_eq!(under.len(), 1000);
        assert_eq!(under[0].location.as_ref(), "d1/01000.json");

        let tree = s3.list_with_delimiter(None).await.expect("delimiter");
        let folders: Vec<&str> = tree.common_prefixes.iter().map(|p| p.as_ref()).collect();
        assert_eq!(folders, ["d0", "d1", "d2"]);
        assert_eq!(tree.objects.len(), 1);
        assert_eq!(tree.objects[0].location.as_ref(), "top & <odd>.txt");

        // As listed: `Path::from` would escape `<` and `>`.
        let odd = &tree.objects[0].location;
        let head = s3.head(odd).await.expect("head");
        assert_eq!(head.size, "<top & <odd>.txt>".len() as u64);
        assert_eq!(head.e_tag, listed.last().and_then(|m| m.e_tag.clone()));
        let got = s3.get(&Path::from("d2/02001.json")).await.expect("get");
        assert_eq!(got.bytes().await.expect("body"), "<d2/02001.json>");
        let missing = s3.head(&Path::from("d9/nothing")).await;
        assert!(
            matches!(missing, Err(object_store::Error::NotFound { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn pages_resume_at_the_token_and_honour_start_after() {
        let objects: BTreeMap<String, Object> = ["a/1", "a/2", "b", "c/1", "c/2"]
            .iter()
            .map(|k| {
                let o = Object {
                    bytes: Bytes::from_static(b"x"),
                    etag: etag(b"x"),
                    last_modified: DateTime::<Utc>::UNIX_EPOCH,
                };
                ((*k).to_owned(), o)
            })
            .collect();
        let page = |query: &str| list("b", &objects, &ListQuery::parse(query).expect("query"));
        let first = page("list-type=2&max-keys=2&delimiter=%2F");
        assert!(first.contains("<CommonPrefixes><Prefix>a/</Prefix></CommonPrefixes>"));
        assert!(
            first.contains("<Key>b</Key>") && first.contains("<IsTruncated>true</IsTruncated>")
        );
        let token = first
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|t| t.split('<').next())
            .expect("token");
        let second = page(&format!(
            "list-type=2&max-keys=2&delimiter=%2F&continuation-token={token}"
        ));
        assert!(
            second.contains("<Prefix>c/</Prefix></CommonPrefixes>"),
            "{second}"
        );
        assert!(second.contains(
            "<KeyCount>1</KeyCount><MaxKeys>2</MaxKeys><IsTruncated>false</IsTruncated>"
        ));
        assert!(!second.contains("NextContinuationToken"));
        let after = page("list-type=2&start-after=a%2F2&prefix=c");
        assert!(
            after.contains("<Key>c/1</Key>") && !after.contains("<Key>b</Key>"),
            "{after}"
        );
        assert!(ListQuery::parse("prefix=a").is_err());
        assert_eq!(after_all("a/").as_deref(), Some("a0"));
    }
}
