//! Result destinations: `on_success` / `on_failure` to a bus or a target,
//! chains of functions, cycles refused by `validate` and stopped at run time.

use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{event, validate, Receiver, Sluice};

/// A function on loopback answering every request with `status`, `headers`
/// and `body`; its URL.
async fn function(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut answer = axum::http::HeaderMap::new();
    for (name, value) in headers {
        answer.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let body = body.to_owned();
    let app = axum::Router::new().route(
        "/invoke",
        axum::routing::post(move || {
            let (answer, body) = (answer.clone(), body.clone());
            async move {
                let status = axum::http::StatusCode::from_u16(status).unwrap();
                (status, answer, body)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/invoke")
}

/// Function `a` (at `a_url`) behind rule `resize`, whose `on_success` is bus
/// `results`, where rule `notify` delivers to target `b` (at `b_url`).
fn chain(a_url: &str, b_url: &str) -> String {
    format!(
        "targets:
  - name: a
    type: http
    url: {a_url}
  - name: b
    type: http
    url: {b_url}
rules:
  - name: resize
    filter: {{ pattern: {{ type: [com.example.image.uploaded] }} }}
    targets: [a]
    on_success: {{ bus: results }}
  - name: notify
    bus: results
    targets: [b]
"
    )
}

const NODE: &str = "  system_events: { name: node-1 }\n";

#[tokio::test]
async fn a_functions_json_answer_reaches_the_next_function() {
    let a = function(
        200,
        &[("content-type", "application/json")],
        r#"{"width": 10}"#,
    )
    .await;
    let b = Receiver::start().await;
    let sluice = Sluice::start_with_server(&chain(&a, &b.url()), NODE).await;
    let uploaded = event(
        "img-1",
        "com.example.image.uploaded",
        json!({"key": "cat.png"}),
    );
    assert_eq!(sluice.post_structured(&uploaded).await.status(), 202);

    let got = b.wait_for(1, Duration::from_secs(15)).await;
    let result = &got[0];
    assert_eq!(
        result.header("ce-type"),
        Some("sluice.invocation.succeeded")
    );
    assert_eq!(
        result.header("ce-source"),
        Some("sluice://node-1/subscriptions/resize.a")
    );
    assert_eq!(result.header("ce-causationid"), Some("img-1"));
    assert_eq!(result.header("ce-correlationid"), Some("img-1"));
    assert_eq!(result.header("ce-sluicehops"), Some("1"));
    let data = result.json();
    assert_eq!(data["response"]["status"], 200);
    assert_eq!(data["response"]["body"], json!({"width": 10}));
    assert_eq!(
        data["response"]["headers"]["content-type"],
        "application/json"
    );
    assert_eq!(data["request"]["id"], "img-1");
    assert_eq!(data["request"]["type"], "com.example.image.uploaded");
    assert_eq!(data["request"]["data"], json!({"key": "cat.png"}));
    sluice.wait_stat("resize.a", "delivered_total", 1).await;
}

#[tokio::test]
async fn a_cloudevent_answer_is_published_as_it_is_with_its_cause() {
    let headers = [
        ("ce-specversion", "1.0"),
        ("ce-id", "thumb-7"),
        ("ce-source", "/resize"),
        ("ce-type", "com.example.image.resized"),
        ("content-type", "application/json"),
    ];
    let a = function(200, &headers, r#"{"w": 1}"#).await;
    let b = Receiver::start().await;
    let sluice = Sluice::start(&chain(&a, &b.url())).await;
    let mut uploaded = event("img-2", "com.example.image.uploaded", json!({}));
    uploaded["correlationid"] = json!("order-9");
    assert_eq!(sluice.post_structured(&uploaded).await.status(), 202);

    let got = b.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].header("ce-id"), Some("thumb-7"));
    assert_eq!(got[0].header("ce-type"), Some("com.example.image.resized"));
    assert_eq!(got[0].header("ce-source"), Some("/resize"));
    assert_eq!(got[0].header("ce-causationid"), Some("img-2"));
    assert_eq!(got[0].header("ce-correlationid"), Some("order-9"));
    assert_eq!(got[0].json(), json!({"w": 1}));
}

#[tokio::test]
async fn a_failing_function_sends_invocation_failed_to_the_failure_target() {
    let f = Receiver::start().await;
    f.script(&[], 500);
    let alerts = Receiver::start().await;
    let body = settle_config(&f, &alerts, 3);
    let sluice = Sluice::start(&body).await;
    let order = event("o-1", "order.created", json!({"amount": 5}));
    assert_eq!(sluice.post_structured(&order).await.status(), 202);

    let got = alerts.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].header("ce-type"), Some("sluice.invocation.failed"));
    assert_eq!(got[0].header("ce-causationid"), Some("o-1"));
    let data = got[0].json();
    assert_eq!(data["request"]["id"], "o-1");
    assert_eq!(data["response"]["status"], 500);
    let reason = data["reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 500"), "{data}");
    assert_eq!(f.attempts(), 3);
    let letter = sluice
        .first_dead_letter("settle.fn", Duration::from_secs(5))
        .await;
    assert_eq!(letter["event"]["id"], "o-1");
    sluice
        .wait_stat("settle.on-failure", "delivered_total", 1)
        .await;
}

/// Rules `a` (bus default, results to bus `results`) and `b` (bus results,
/// failures back to bus default): a loop; `allow` lines go under each rule.
fn looping(allow_a: &str, allow_b: &str) -> String {
    format!(
        "targets:
  - name: fn
    type: http
    url: http://127.0.0.1:9/
rules:
  - name: a
    targets: [fn]
    on_success: {{ bus: results }}
{allow_a}  - name: b
    bus: results
    targets: [fn]
    on_failure: {{ bus: default }}
{allow_b}"
    )
}

#[test]
fn validate_refuses_a_cycle_naming_its_path_unless_allowed() {
    let (code, _, stderr) = validate(&looping("", ""));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(
            "rules[0].on_success: results of rule \"a\" can route back to it: a (bus default) \
             -on_success-> bus results: b (bus results) -on_failure-> bus default: a"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("(line 8, column 5)"), "{stderr}");
    assert!(
        stderr.contains("rules[1].on_failure: results of rule \"b\" can route back to it"),
        "{stderr}"
    );
    let allow = "    allow_cycles: true\n";
    let (code, _, stderr) = validate(&looping(allow, ""));
    assert_eq!(code, 1, "b still loops: {stderr}");
    assert!(!stderr.contains("rules[0]"), "{stderr}");
    let (code, _, stderr) = validate(&looping(allow, allow));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn validate_refuses_bad_destinations_with_their_paths() {
    let text = "targets:
  - name: fn
    type: http
    url: http://127.0.0.1:9/
rules:
  - name: both
    targets: [fn]
    on_success: { bus: default, target: fn }
  - name: neither
    targets: [fn]
    on_failure: {}
  - name: ghost
    targets: [fn]
    on_failure: { target: nowhere }
  - name: lonely
    targets: [fn]
    on_success: { bus: nobody-listens }
server:
  max_hops: 0
";
    let (code, _, stderr) = validate(text);
    assert_eq!(code, 1);
    let expect = [
        "rules[0].on_success: give one of `bus` or `target`, not both (rule \"both\") (line 8, column 5)",
        "rules[1].on_failure: give one of `bus` (publish the result onto a bus) or `target` (deliver it to a target) (rule \"neither\") (line 11, column 5)",
        "rules[2].on_failure.target: unknown target \"nowhere\" (rule \"ghost\") (line 14",
        "rules[3].on_success.bus: no rule is on bus \"nobody-listens\"",
        "server.max_hops: must be greater than 0",
    ];
    for e in expect {
        assert!(stderr.contains(e), "missing {e:?} in:\n{stderr}");
    }
    let (code, _, stderr) = validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9/\nrules:\n  - name: r\n    targets: [fn]\n    on_success: { queue: fn }\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("rules[0].on_success") && stderr.contains("unknown field `queue`"),
        "{stderr}"
    );
    let (code, _, stderr) = validate(
        "targets:\n  - name: on-success\n    type: discard\nrules:\n  - name: r\n    targets: [on-success]\n    on_success: { target: on-success }\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "rules[0].on_success.target: the rule also delivers to a target named \"on-success\""
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_loop_allowed_by_config_stops_at_max_hops_with_a_dead_letter() {
    let f = Receiver::start().await;
    let body = format!(
        "targets:
  - name: fn
    type: http
    url: {}
rules:
  - name: echo
    targets: [fn]
    on_success: {{ bus: default }}
    allow_cycles: true
",
        f.url()
    );
    let sluice = Sluice::start_with_server(&body, "  max_hops: 3\n").await;
    assert_eq!(
        sluice
            .post_structured(&event("loop-1", "ping", json!({})))
            .await
            .status(),
        202
    );
    let letter = sluice
        .first_dead_letter("echo.fn", Duration::from_secs(15))
        .await;
    let reason = letter["reason"].as_str().unwrap();
    assert!(reason.contains("stopped after 3 hops"), "{letter}");
    assert!(reason.contains("server.max_hops"), "{letter}");
    assert_eq!(letter["event"]["sluicehops"], 3);
    assert_eq!(letter["event"]["correlationid"], "loop-1");
    // The first event and its three results reached the function; no more.
    let got = f.delivered();
    assert_eq!(got.len(), 4, "{got:?}");
    let hops: Vec<Option<&str>> = got.iter().map(|r| r.header("ce-sluicehops")).collect();
    assert_eq!(hops, [None, Some("1"), Some("2"), Some("3")]);
    let first: Value = got[1].json();
    assert_eq!(first["request"]["id"], "loop-1");
}

#[tokio::test]
async fn a_result_waiting_for_its_target_survives_kill_9() {
    let f = Receiver::start().await;
    f.script(&[400], 200);
    let alerts = Receiver::start().await;
    alerts.script(&[], 503);
    let body = settle_config(&f, &alerts, 50);
    let mut sluice = Sluice::start(&body).await;
    let order = event("k-1", "order.created", json!({}));
    assert_eq!(sluice.post_structured(&order).await.status(), 202);
    // The failure result was leased (so it was durable) and refused once.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while alerts.attempts() == 0 {
        assert!(std::time::Instant::now() < deadline, "no result sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sluice.kill9();
    alerts.script(&[], 200);
    sluice.spawn().await;
    let got = alerts.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(got[0].header("ce-type"), Some("sluice.invocation.failed"));
    assert_eq!(got[0].header("ce-causationid"), Some("k-1"));
    assert_eq!(got[0].json()["response"]["status"], 400);
    assert_eq!(f.attempts(), 1, "a 4xx is not retried, and not redelivered");
}

/// Rule `settle` sends to `fn` (`f`), `max_attempts` tries, and its failures to
/// target `alerts`.
fn settle_config(f: &Receiver, alerts: &Receiver, max_attempts: u32) -> String {
    format!(
        "targets:
  - name: fn
    type: http
    url: {}
  - name: alerts
    type: http
    url: {}
rules:
  - name: settle
    targets: [fn]
    retry: {{ max_attempts: {max_attempts}, backoff: {{ initial: 50ms, max: 100ms }} }}
    on_failure: {{ target: alerts }}
",
        f.url(),
        alerts.url()
    )
}
