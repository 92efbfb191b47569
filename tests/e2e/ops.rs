//! The ops sources with the real binary: health probes (`type: probe`) against
//! an in-test HTTP server and a TCP port that go down and come back,
//! Alertmanager's webhook (`type: alertmanager`, sample body written from its
//! docs: `ops/alertmanager.json`), signed webhooks (`type: webhook`, GitHub and
//! Standard Webhooks bodies: `ops/github_push.json`, `ops/standard.json`), and
//! the errors `sluice validate` reports for their settings.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{json, Value};
use sluice_connectors::ops::signature::{github_signature, standard_key, standard_signature};

use crate::harness::{free_port, validate, Receiver, Sluice};

const ALERTS: &str = include_str!("ops/alertmanager.json");
const GITHUB_PUSH: &str = include_str!("ops/github_push.json");
const STANDARD: &str = include_str!("ops/standard.json");

/// A target `fn` (structured mode, so the test reads whole events) and a rule
/// sending it every event of bus `ops`.
fn delivered_to(url: &str) -> String {
    format!(
        "targets:
  - name: fn
    type: http
    url: {url}
    mode: structured
    timeout: 2s
rules:
  - name: ops
    bus: ops
    targets: [fn]
    retry: {{ max_attempts: 5, backoff: {{ initial: 50ms, max: 200ms }} }}
"
    )
}

/// An HTTP server answering `GET /health` with the status it is set to.
async fn health_server() -> (String, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(200));
    let answer = status.clone();
    let app = axum::Router::new().route(
        "/health",
        get(move || {
            let answer = answer.clone();
            async move { StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap() }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, status)
}

fn probe(endpoint: &str, url: &str) -> String {
    format!(
        "sources:
  - name: health
    type: probe
    endpoints: [\"{endpoint}\"]
    interval: 100ms
    timeout: 1s
    failures: 3
    bus: ops
{}",
        delivered_to(url)
    )
}

/// The events delivered, as JSON.
fn events(recv: &Receiver) -> Vec<Value> {
    recv.delivered().iter().map(|r| r.json()).collect()
}

/// Wait until `/api/sources/health` shows `endpoint` in `state`, with at least
/// `failures` consecutive failures.
async fn wait_state(sluice: &Sluice, endpoint: &str, state: &str, failures: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = sluice.get_json("/api/sources/health").await;
        let shown = &status["endpoints"][endpoint];
        if shown["state"] == state && shown["consecutive_failures"].as_u64() >= Some(failures) {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{endpoint} never {state}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP endpoint that answers 503: one `down` event, after three failed
/// checks; answering 200 again: one `up` event. The source's status shows it.
#[tokio::test]
async fn probe_http_endpoint_goes_down_and_comes_back() {
    let (health, status) = health_server().await;
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&probe(&health, &recv.url())).await;
    let shown = wait_state(&sluice, &health, "up", 0).await;
    assert_eq!(shown["type"], "probe");
    assert_eq!(shown["endpoints"][&health]["last_check"]["status"], 200);
    assert_eq!(recv.arrived(), 0, "an endpoint that is up raises nothing");

    status.store(503, Ordering::SeqCst);
    let got = recv.wait_for(1, Duration::from_secs(20)).await;
    let down = got[0].json();
    assert_eq!(down["type"], "sluice.probe.down", "{down}");
    assert_eq!(down["subject"], health.as_str());
    assert_eq!(down["source"], "sluice://probe/health");
    assert_eq!(down["data"]["endpoint"], health.as_str());
    assert_eq!(down["data"]["status"], 503);
    assert_eq!(down["data"]["consecutive_failures"], 3);
    assert!(down["data"]["latency_ms"].is_u64(), "{down}");
    assert!(
        down["id"]
            .as_str()
            .unwrap()
            .starts_with(&format!("health/{health}/down/")),
        "{down}"
    );
    wait_state(&sluice, &health, "down", 3).await;

    status.store(200, Ordering::SeqCst);
    let got = recv.wait_for(2, Duration::from_secs(20)).await;
    let up = got[1].json();
    assert_eq!(up["type"], "sluice.probe.up", "{up}");
    assert_eq!(up["data"]["status"], 200);
    assert_eq!(up["data"]["consecutive_failures"], 0);
    wait_state(&sluice, &health, "up", 0).await;
    let types: Vec<Value> = events(&recv).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        types,
        [json!("sluice.probe.down"), json!("sluice.probe.up")]
    );
}

/// A TCP endpoint nobody listens on: `down`. sluice restarts while it is still
/// down: no second `down` (the state is durable). Something listens again: `up`.
#[tokio::test]
async fn probe_tcp_endpoint_down_survives_a_restart_then_up() {
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let recv = Receiver::start().await;
    let mut sluice = Sluice::start(&probe(&endpoint, &recv.url())).await;
    let got = recv.wait_for(1, Duration::from_secs(20)).await;
    let down = got[0].json();
    assert_eq!(down["type"], "sluice.probe.down", "{down}");
    assert_eq!(down["subject"], endpoint.as_str());
    assert!(
        down["data"]["status"].is_string(),
        "the connect error: {down}"
    );

    sluice.terminate();
    sluice.spawn().await;
    // The state read back is down, and checks after the restart keep failing
    // (three more than the three that made it down) without a second `down`.
    wait_state(&sluice, &endpoint, "down", 6).await;
    assert_eq!(recv.arrived(), 1);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    let got = recv.wait_for(2, Duration::from_secs(20)).await;
    let up = got[1].json();
    assert_eq!(up["type"], "sluice.probe.up", "{up}");
    assert_eq!(up["data"]["status"], "connected");
    let types: Vec<Value> = events(&recv).iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        types,
        [json!("sluice.probe.down"), json!("sluice.probe.up")]
    );
}

async fn post(sluice: &Sluice, path: &str, body: &str, headers: &[(&str, String)]) -> (u16, Value) {
    let mut request = sluice
        .client
        .post(sluice.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Alertmanager's sample body: one event per alert, with the alert's type,
/// subject, time, id and data. A body with a bad field: 400 naming it, and
/// none of its alerts kept.
#[tokio::test]
async fn alertmanager_alerts_become_events_and_a_bad_body_is_refused_whole() {
    let recv = Receiver::start().await;
    let config = format!(
        "sources:\n  - name: am\n    type: alertmanager\n    bus: ops\n{}",
        delivered_to(&recv.url())
    );
    let sluice = Sluice::start(&config).await;

    let mut bad: Value = serde_json::from_str(ALERTS).unwrap();
    bad["alerts"][1]
        .as_object_mut()
        .unwrap()
        .remove("fingerprint");
    let (status, answer) = post(&sluice, "/sources/am/alerts", &bad.to_string(), &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["field"], "alerts[1].fingerprint",
        "{answer}"
    );
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("alerts[1].fingerprint: is missing"));

    let (status, answer) = post(&sluice, "/sources/am/alerts", ALERTS, &[]).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 2, "matched": 2}))
    );
    let got = recv.wait_for(2, Duration::from_secs(10)).await;
    let events: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let firing = events
        .iter()
        .find(|e| e["type"] == "io.prometheus.alert.firing")
        .unwrap();
    assert_eq!(firing["subject"], "InstanceDown");
    assert_eq!(firing["source"], "sluice://alertmanager/am");
    assert_eq!(firing["time"], "2026-11-30T09:00:00Z");
    assert_eq!(firing["id"], "4f3c9b1e2a7d8c60-firing-2026-11-30T09:00:00Z");
    assert_eq!(firing["data"]["labels"]["instance"], "api-1:9100");
    assert_eq!(
        firing["data"]["annotations"]["summary"],
        "api-1:9100 is down"
    );
    assert_eq!(firing["data"]["group"]["receiver"], "sluice");
    assert_eq!(
        firing["data"]["group"]["externalURL"],
        "http://alertmanager.example.com:9093"
    );
    let resolved = events
        .iter()
        .find(|e| e["type"] == "io.prometheus.alert.resolved")
        .unwrap();
    assert_eq!(resolved["time"], "2026-11-30T09:20:00Z");
    assert_eq!(resolved["data"]["labels"]["instance"], "api-2:9100");
    // The refused body's first alert (valid on its own) was never kept: the
    // firing alert arrived once, from the good body.
    assert_eq!(events.len(), 2, "{events:?}");

    // Not JSON at all.
    let (status, answer) = post(&sluice, "/sources/am/alerts", "{", &[]).await;
    assert_eq!(
        (status, answer["error"]["field"].clone()),
        (400, json!("body"))
    );
}

const GH_SECRET: &str = "It's a Secret to Everybody";

fn github_config(url: &str) -> String {
    format!(
        "sources:
  - name: github
    type: webhook
    event_id: \"{{header.x-github-delivery}}\"
    event_type: \"com.github.{{header.x-github-event}}\"
    event_subject: \"{{body.repository.full_name}}\"
    signature: {{ scheme: github, secret_env: SLUICE_TEST_GH_SECRET }}
    bus: ops
  - name: billing
    type: webhook
    event_id: \"{{header.webhook-id}}\"
    event_type: \"com.example.{{body.type}}\"
    signature: {{ scheme: standard, secret_env: SLUICE_TEST_SW_SECRET, tolerance: 5m }}
    bus: ops
  - name: plain
    type: webhook
    bus: ops
{}",
        delivered_to(url)
    )
}

/// GitHub-signed and Standard-Webhooks-signed deliveries are accepted and
/// arrive as events with templated attributes; a wrong, missing or stale
/// signature is 401 naming why, and nothing of it arrives. With an ingest
/// token set, signed webhooks do not ask for it (the signature is the proof);
/// an unsigned one does.
#[tokio::test]
async fn signed_webhooks_accepted_and_bad_signatures_refused() {
    let recv = Receiver::start().await;
    let sw_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sluice = Sluice::start_with_env(
        &github_config(&recv.url()),
        "  auth: { ingest_token: letmein }\n",
        &[
            ("SLUICE_TEST_GH_SECRET", GH_SECRET),
            ("SLUICE_TEST_SW_SECRET", sw_secret),
        ],
    )
    .await;

    // GitHub: wrong secret, then no signature, then a good one.
    let gh = |sig: Option<String>| {
        let mut h = vec![
            ("x-github-event", "push".to_owned()),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_owned(),
            ),
        ];
        if let Some(sig) = sig {
            h.push(("x-hub-signature-256", sig));
        }
        h
    };
    let wrong = github_signature(b"not the secret", GITHUB_PUSH.as_bytes());
    let (status, answer) = post(&sluice, "/sources/github", GITHUB_PUSH, &gh(Some(wrong))).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"]["code"], "bad_signature");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("does not match"));
    let (status, answer) = post(&sluice, "/sources/github", GITHUB_PUSH, &gh(None)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("x-hub-signature-256 header is missing"));
    let good = github_signature(GH_SECRET.as_bytes(), GITHUB_PUSH.as_bytes());
    let (status, answer) = post(&sluice, "/sources/github", GITHUB_PUSH, &gh(Some(good))).await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 1, "matched": 1}))
    );

    // Standard Webhooks: stale, then signed with another key, then good.
    let key = standard_key(sw_secret).unwrap();
    let now = chrono::Utc::now().timestamp();
    let sw = |id: &str, ts: i64, key: &[u8]| {
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            (
                "webhook-signature",
                standard_signature(key, id, ts, STANDARD.as_bytes()),
            ),
        ]
    };
    let (status, answer) = post(
        &sluice,
        "/sources/billing",
        STANDARD,
        &sw("msg_stale", now - 600, &key),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("replay"));
    let (status, _) = post(
        &sluice,
        "/sources/billing",
        STANDARD,
        &sw("msg_wrong", now, b"other key"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, answer) = post(
        &sluice,
        "/sources/billing",
        STANDARD,
        &sw("msg_2Lb1", now, &key),
    )
    .await;
    assert_eq!(
        (status, answer),
        (202, json!({"accepted": 1, "matched": 1}))
    );

    // Unsigned: the ingest token, as for ingest.
    let (status, answer) = post(&sluice, "/sources/plain", r#"{"n": 1}"#, &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let bearer = [("authorization", "Bearer letmein".to_owned())];
    let (status, _) = post(&sluice, "/sources/plain", r#"{"n": 1}"#, &bearer).await;
    assert_eq!(status, 202);

    let got = recv.wait_for(3, Duration::from_secs(10)).await;
    let events: Vec<Value> = got.iter().map(|r| r.json()).collect();
    let plain = events
        .iter()
        .find(|e| e["type"] == "sluice.webhook.received")
        .unwrap();
    assert_eq!(plain["source"], "sluice://webhook/plain");
    assert_eq!(plain["data"], json!({"n": 1}));
    let push = events
        .iter()
        .find(|e| e["type"] == "com.github.push")
        .unwrap();
    assert_eq!(push["id"], "72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(push["subject"], "octocat/Hello-World");
    assert_eq!(push["source"], "sluice://webhook/github");
    assert_eq!(push["data"]["commits"][0]["modified"][0], "README.md");
    let paid = events
        .iter()
        .find(|e| e["type"] == "com.example.invoice.paid")
        .unwrap();
    assert_eq!(paid["id"], "msg_2Lb1");
    assert_eq!(paid["data"]["data"]["amount"], 4200);
    // Only the three accepted requests became events.
    let metrics = sluice.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("sluice_events_rejected_total")
                && l.contains("source=\"billing\"")
                && l.ends_with(" 2")),
        "{metrics}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
}

/// `emit: every`: a `sluice.probe.result` event for each check, up or not.
#[tokio::test]
async fn probe_emit_every_reports_each_check() {
    let (health, _status) = health_server().await;
    let recv = Receiver::start().await;
    let config = probe(&health, &recv.url())
        .replace("    failures: 3\n", "    failures: 3\n    emit: every\n");
    let _sluice = Sluice::start(&config).await;
    let got = recv.wait_for(2, Duration::from_secs(20)).await;
    for e in got.iter().map(|r| r.json()) {
        assert_eq!(e["type"], "sluice.probe.result", "{e}");
        assert_eq!(e["data"]["up"], true, "{e}");
        assert_eq!(e["data"]["status"], 200, "{e}");
    }
}

/// `sluice validate` names each bad setting with its path.
#[test]
fn ops_settings_errors_from_validate() {
    let (code, _, err) = validate(
        "sources:
  - name: p
    type: probe
    endpoints: [\"htp://x\", \"tcp://db:5432\"]
    interval: 0s
  - name: w
    type: webhook
    signature: { scheme: github, secret_env: SLUICE_TEST_UNSET_SECRET }
  - name: a
    type: alertmanager
    receiver: x
",
    );
    assert_eq!(code, 1, "{err}");
    for e in [
        "sources[0].endpoints[0]: \"htp://x\" is not an http://, https:// or tcp://host:port endpoint (line 4",
        "sources[0].interval: must be more than 0s (line 5",
        "sources[1].signature.secret_env: environment variable SLUICE_TEST_UNSET_SECRET is not set",
        "sources[2].receiver: unknown field `receiver`",
    ] {
        assert!(err.contains(e), "{e:?} in {err}");
    }
}
