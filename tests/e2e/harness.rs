//! Test harness: the real `sluice` binary on loopback, and an HTTP receiver that
//! records what sluice delivers and answers with scripted statuses.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio::sync::{Notify, Semaphore};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// Bound on any one request a test makes to sluice: a sluice that stops
/// answering fails the test with a timeout instead of hanging the suite.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Run `sluice validate -c <file holding text>`: exit code, stdout, stderr.
pub fn validate(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running sluice with its own data directory.
pub struct Sluice {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
    pub client: reqwest::Client,
    /// Environment variables the process starts with (secrets named by
    /// `secret_env`), on top of the test's.
    env: Vec<(String, String)>,
}

impl Sluice {
    /// Start sluice with `body` (targets, rules, ...) after a generated `server` block.
    pub async fn start(body: &str) -> Self {
        Self::start_with_server(body, "").await
    }

    /// As [`Sluice::start`], with extra lines inside `server:` (indented two spaces).
    pub async fn start_with_server(body: &str, server_extra: &str) -> Self {
        let mut s = Self::configure(body, server_extra);
        s.spawn().await;
        s
    }

    /// As [`Sluice::start_with_server`], the process started with `env` added
    /// to its environment.
    pub async fn start_with_env(body: &str, server_extra: &str, env: &[(&str, &str)]) -> Self {
        let mut s = Self::configure(body, server_extra);
        s.env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        s.spawn().await;
        s
    }

    /// Start without waiting for `/readyz` (for configs under which it is 503 at
    /// first); wait for `/healthz` only. See [`Sluice::wait_readyz`].
    pub async fn start_unready(body: &str) -> Self {
        let mut s = Self::configure(body, "");
        s.launch();
        s.wait_for("/healthz").await;
        s
    }

    fn configure(body: &str, server_extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.path().join("sluice.yaml");
        // `server_extra` may name its own data_dir (on a disk of its choosing).
        let data_dir = if server_extra.contains("  data_dir:") {
            String::new()
        } else {
            format!("  data_dir: {}\n", dir.path().join("data").display())
        };
        let text = format!(
            "server:\n  listen: {addr}\n{data_dir}  shutdown_grace: 2s\n{server_extra}{body}"
        );
        std::fs::write(&config, text).unwrap();
        Self {
            dir,
            config,
            addr,
            child: None,
            client: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap(),
            env: Vec::new(),
        }
    }

    /// Start (again) on the same config and data directory; wait for `/readyz`.
    pub async fn spawn(&mut self) {
        self.launch();
        self.wait_for("/readyz").await;
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("sluice.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Wait up to 20 s for `path` to answer 200; fail if sluice exits.
    async fn wait_for(&mut self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = self.client.get(self.url(path)).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("sluice exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sluice: no 200 from {path}: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Status and body of `/readyz` once `want` holds for them (or fail after
    /// `timeout`, showing the last answer).
    pub async fn wait_readyz(
        &self,
        timeout: Duration,
        want: impl Fn(u16, &serde_json::Value) -> bool,
    ) -> (u16, serde_json::Value) {
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                let status = r.status().as_u16();
                let body: serde_json::Value = r.json().await.unwrap_or_default();
                if want(status, &body) {
                    return (status, body);
                }
                last = Some((status, body));
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not settle: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sluice.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `kill -9`: no shutdown code runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The process id of the running sluice.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGSTOP: the process stops where it is, as if the machine froze; its
    /// sockets stay open. [`Sluice::kill9`] ends it from there.
    pub fn freeze(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    }

    /// Replace the config's body (sources, targets, rules) for the next start,
    /// keeping its `server` block.
    pub fn set_body(&self, body: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let end = text
            .find("\nsources:")
            .or_else(|| text.find("\ntargets:"))
            .map_or(text.len(), |i| i + 1);
        std::fs::write(&self.config, format!("{}{body}", &text[..end])).unwrap();
    }

    /// SIGTERM, then wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "sluice did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POST a structured-mode event.
    pub async fn post_structured(&self, event: &serde_json::Value) -> reqwest::Response {
        self.post_events("application/cloudevents+json", event)
            .await
    }

    /// POST a batch (a JSON array of structured events).
    pub async fn post_batch(&self, events: &serde_json::Value) -> reqwest::Response {
        self.post_events("application/cloudevents-batch+json", events)
            .await
    }

    async fn post_events(&self, content_type: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url("/events"))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The first dead letter of subscription `name`, waiting up to `timeout`.
    pub async fn first_dead_letter(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let listing = self
                .get_json(&format!("/api/subscriptions/{name}/dead-letters"))
                .await;
            if let Some(first) = listing["dead_letters"]
                .as_array()
                .and_then(|a| a.first().cloned())
            {
                return first;
            }
            assert!(
                Instant::now() < deadline,
                "no dead letter in {name}: {listing}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A paused source: after 3 s subscription `name` holds a depth within
    /// `near` (its bound plus what was in flight), and a second later the same.
    pub async fn backlog_holds(&self, name: &str, near: std::ops::RangeInclusive<u64>) -> u64 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let depth = self.stats(name).await["depth"].as_u64().unwrap();
        assert!(
            near.contains(&depth),
            "backlog {depth} should stop near max_backlog"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            self.stats(name).await["depth"].as_u64().unwrap(),
            depth,
            "consumption is paused"
        );
        depth
    }

    /// The stats object of subscription `name` from the admin API.
    pub async fn stats(&self, name: &str) -> serde_json::Value {
        self.get_json(&format!("/api/subscriptions/{name}")).await["stats"].clone()
    }

    /// Wait up to 10 s until stat `key` of subscription `name` is `want` (a
    /// delivery is settled a moment after the target has it).
    pub async fn wait_stat(&self, name: &str, key: &str, want: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stats = self.stats(name).await;
            if stats[key] == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {key} is not {want}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Sluice {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When the request arrived (wall clock).
    pub at: std::time::SystemTime,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct Inner {
    /// Statuses to answer with, in order; after they run out, `then`.
    script: VecDeque<u16>,
    then: u16,
    /// Requests answered 2xx.
    delivered: Vec<Received>,
    /// Every request answered, whatever the answer.
    attempts: Vec<Received>,
    /// Requests that arrived, answered or not (gated ones included).
    arrived: usize,
}

/// An HTTP endpoint standing in for a user's function.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    /// When set, requests wait for a permit before being answered.
    gate: Option<Arc<Semaphore>>,
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0, None).await
    }

    /// A receiver that holds every request until [`Receiver::release`] is called.
    pub async fn start_gated() -> Self {
        Self::start_on(0, Some(Arc::new(Semaphore::new(0)))).await
    }

    pub async fn start_on(port: u16, gate: Option<Arc<Semaphore>>) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let r = Self {
            addr: listener.local_addr().unwrap(),
            inner: Arc::new(Mutex::new(Inner {
                then: 200,
                ..Inner::default()
            })),
            changed: Arc::new(Notify::new()),
            gate,
        };
        let app = Router::new()
            .route("/{*path}", post(handle))
            .route("/", post(handle))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    pub fn url(&self) -> String {
        format!("http://{}/invoke", self.addr)
    }

    /// Answer the next requests with `statuses`, then with `then`.
    pub fn script(&self, statuses: &[u16], then: u16) {
        let mut inner = self.inner.lock().unwrap();
        inner.script = statuses.iter().copied().collect();
        inner.then = then;
    }

    pub fn release(&self) {
        if let Some(g) = &self.gate {
            g.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    pub fn delivered(&self) -> Vec<Received> {
        self.inner.lock().unwrap().delivered.clone()
    }

    pub fn arrived(&self) -> usize {
        self.inner.lock().unwrap().arrived
    }

    pub fn attempts(&self) -> usize {
        self.inner.lock().unwrap().attempts.len()
    }

    /// Wait until `n` events were delivered (or panic after `timeout`).
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let got = self.delivered();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited {timeout:?} for {n} deliveries, got {}",
                got.len()
            );
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }
}

async fn handle(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = std::time::SystemTime::now();
    r.inner.lock().unwrap().arrived += 1;
    r.changed.notify_waiters();
    if let Some(g) = &r.gate {
        let _permit = g.acquire().await.unwrap();
    }
    let received = Received { headers, body, at };
    let status = {
        let mut inner = r.inner.lock().unwrap();
        let status = inner.script.pop_front().unwrap_or(inner.then);
        inner.attempts.push(received.clone());
        if (200..300).contains(&status) {
            inner.delivered.push(received);
        }
        status
    };
    r.changed.notify_waiters();
    StatusCode::from_u16(status).unwrap()
}

/// A structured-mode event with JSON data.
pub fn event(id: impl std::fmt::Display, ty: &str, data: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "specversion": "1.0",
        "id": id.to_string(),
        "source": "/tests",
        "type": ty,
        "data": data,
    })
}

/// A target + rule pair delivering events of `ty` with data.amount > 100 to `url`.
pub fn orders_config(url: &str, extra_target: &str) -> String {
    format!(
        "targets:\n  - name: fn\n    type: http\n    url: {url}\n    timeout: 2s\n{extra_target}\
rules:\n  - name: big-orders\n    filter:\n      pattern:\n        type: [order.created]\n        data: {{ amount: [{{ numeric: [\">\", 100] }}] }}\n    targets: [fn]\n    retry: {{ max_attempts: 5, backoff: {{ initial: 50ms, max: 200ms }} }}\n"
    )
}
