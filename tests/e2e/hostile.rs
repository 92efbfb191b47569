//! Hostile clients, over raw TCP so nothing normalizes what is sent: a corpus of
//! bad requests (tests/e2e/hostile/corpus.json) each answered with its status and
//! a JSON error naming the problem, and the protocol-level abuse a server on a
//! network meets: huge declared bodies, `Expect: 100-continue`, slow or stalled
//! heads and bodies, idle keep-alives, too many connections, pipelining.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Receiver, Sluice};

/// A raw answer: status, headers (lower-case names) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one answer from `stream` (status line, headers, a content-length body).
async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Answer {
        status,
        headers,
        body,
    })
}

/// Send `request` as is on a new connection and read the answer.
async fn send(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), read_answer(&mut stream))
        .await
        .expect("an answer within 20 s")
        .expect("an answer before the connection closed")
}

/// Whether the server closes `stream` within `within` (reads EOF or an error).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// One corpus case as a raw HTTP/1.1 request.
fn request_of(case: &Value) -> Vec<u8> {
    let repeat = |v: &Value| -> String {
        let a = v.as_array().unwrap();
        let unit = a[1]
            .as_str()
            .unwrap()
            .repeat(a[2].as_u64().unwrap() as usize);
        format!("{}{unit}{}", a[0].as_str().unwrap(), a[3].as_str().unwrap())
    };
    let method = case["method"].as_str().unwrap_or("POST");
    let path = match (&case["path"], &case["path_repeat"]) {
        (Value::String(p), _) => p.clone(),
        (_, r @ Value::Array(_)) => repeat(r),
        _ => "/events".to_owned(),
    };
    let body: Vec<u8> = match (&case["body"], &case["body_repeat"], &case["body_hex"]) {
        (Value::String(b), _, _) => b.clone().into_bytes(),
        (_, r @ Value::Array(_), _) => repeat(r).into_bytes(),
        (_, _, Value::String(h)) => (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect(),
        _ => Vec::new(),
    };
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: sluice\r\nconnection: close\r\n");
    if let Some(ct) = case["ct"].as_str() {
        head.push_str(&format!("content-type: {ct}\r\n"));
    }
    for h in case["headers"].as_array().into_iter().flatten() {
        head.push_str(&format!(
            "{}: {}\r\n",
            h[0].as_str().unwrap(),
            h[1].as_str().unwrap()
        ));
    }
    if let Some(r) = case["headers_repeat"].as_array() {
        let value = "v".repeat(r[2].as_u64().unwrap() as usize);
        for i in 0..r[1].as_u64().unwrap() {
            head.push_str(&format!("{}{i}: {value}\r\n", r[0].as_str().unwrap()));
        }
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut request = head.into_bytes();
    request.extend_from_slice(&body);
    request
}

/// Every request of the corpus gets its status, and every error is JSON with its
/// code (and the field at fault, where one is); nothing bad reaches the target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_of_the_corpus_gets_its_status_and_a_json_error() {
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\nrules:\n  - name: all\n    targets: [fn]\n",
        recv.url()
    ))
    .await;
    let corpus: Vec<Value> = serde_json::from_str(include_str!("hostile/corpus.json")).unwrap();
    let mut failures = Vec::new();
    for case in &corpus {
        let name = case["name"].as_str().unwrap();
        let answer = send(sluice.addr, &request_of(case)).await;
        let want = case["status"].as_u64().unwrap() as u16;
        if answer.status != want {
            failures.push(format!(
                "{name}: status {} (want {want}): {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
            continue;
        }
        if want == 202 {
            continue;
        }
        let Ok(body) = serde_json::from_slice::<Value>(&answer.body) else {
            failures.push(format!(
                "{name}: not JSON: {:?}",
                String::from_utf8_lossy(&answer.body)
            ));
            continue;
        };
        if answer.header("content-type") != Some("application/json") {
            failures.push(format!(
                "{name}: content type {:?}",
                answer.header("content-type")
            ));
        }
        if body["error"]["code"] != case["code"] {
            failures.push(format!(
                "{name}: code {} (want {})",
                body["error"]["code"], case["code"]
            ));
        }
        if !case["field"].is_null() && body["error"]["field"] != case["field"] {
            failures.push(format!(
                "{name}: field {} (want {}): {body}",
                body["error"]["field"], case["field"]
            ));
        }
        if body["error"]["message"].as_str().is_none_or(str::is_empty) {
            failures.push(format!("{name}: no message: {body}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    // Only the good one was delivered.
    let got = recv.wait_for(1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(recv.arrived(), 1, "{:?}", got[0].header("ce-id"));
    // A long bus name is shown cut in the message, with its size.
    let long = request_of(
        &json!({"path_repeat": ["/buses/", "b", 3000, "/events"], "ct": "application/cloudevents+json", "body": "{}"}),
    );
    let message = send(sluice.addr, &long).await.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("(3000 bytes)") && message.len() < 400,
        "{message}"
    );
}

/// A body declared larger than the limit is refused before it is sent: 413 at
/// once, and no `100 Continue` for a client that asked whether to send it.
#[tokio::test]
async fn a_body_declared_too_large_is_refused_before_it_is_read() {
    let sluice = Sluice::start("").await;
    let head = "POST /events HTTP/1.1\r\nhost: s\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 1000000000000\r\n\r\n";
    let answer = send(sluice.addr, head.as_bytes()).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["error"]["code"], "too_large");
    let expect = "POST /events HTTP/1.1\r\nhost: s\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 5000000\r\nexpect: 100-continue\r\n\r\n";
    let answer = send(sluice.addr, expect.as_bytes()).await;
    assert_eq!(answer.status, 413, "not 100 Continue");
}

/// Slow and stalled clients are cut off: a head that never ends and an idle
/// keep-alive connection are closed after `header_timeout`, a body that stalls
/// is answered 408 after `request_timeout`, and the server still answers others.
#[tokio::test]
async fn slow_heads_idle_connections_and_stalled_bodies_are_cut_off() {
    let sluice =
        Sluice::start_with_server("", "  header_timeout: 1s\n  request_timeout: 2s\n").await;
    let mut partial = TcpStream::connect(sluice.addr).await.unwrap();
    partial
        .write_all(b"POST /events HTTP/1.1\r\nhost: s\r\n")
        .await
        .unwrap();
    assert!(
        closed_within(&mut partial, Duration::from_secs(5)).await,
        "partial head"
    );

    let mut idle = TcpStream::connect(sluice.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: s\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.unwrap().status, 200);
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "idle keep-alive"
    );

    let mut stalled = TcpStream::connect(sluice.addr).await.unwrap();
    stalled
        .write_all(b"POST /events HTTP/1.1\r\nhost: s\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 1000\r\n\r\n{\"specversion\"")
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stalled))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 408);
    assert_eq!(answer.json()["error"]["code"], "request_timeout");
    assert_eq!(
        send(
            sluice.addr,
            b"GET /healthz HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n"
        )
        .await
        .status,
        200
    );
}

/// Over `max_connections`, a new connection is answered 503 (JSON) and closed;
/// once one closes, a new one is served.
#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_closed() {
    let sluice = Sluice::start_with_server("", "  max_connections: 4\n").await;
    // The harness's own client may hold a pooled connection; wait it out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut held = Vec::new();
    let mut busy = None;
    for _ in 0..8 {
        let mut s = TcpStream::connect(sluice.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: s\r\n\r\n")
            .await
            .unwrap();
        let answer = read_answer(&mut s).await.unwrap();
        if answer.status == 503 {
            busy = Some(answer);
            break;
        }
        held.push(s);
    }
    let busy = busy.expect("a connection over the cap is refused");
    assert!(held.len() <= 4, "{} held", held.len());
    assert_eq!(busy.json()["error"]["code"], "too_many_connections");
    assert_eq!(busy.header("retry-after"), Some("1"));
    held.clear();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        send(
            sluice.addr,
            b"GET /healthz HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n"
        )
        .await
        .status,
        200
    );
}

/// Requests pipelined on one connection, HTTP/1.0 and chunked bodies are served.
#[tokio::test]
async fn pipelined_http_1_0_and_chunked_requests_are_served() {
    let recv = Receiver::start().await;
    let sluice = Sluice::start(&format!(
        "targets:\n  - name: fn\n    type: http\n    url: {}\nrules:\n  - name: all\n    targets: [fn]\n",
        recv.url()
    ))
    .await;
    let event =
        |id: &str| json!({"specversion": "1.0", "id": id, "source": "/s", "type": "t"}).to_string();
    let one = |id: &str| {
        let e = event(id);
        format!("POST /events HTTP/1.1\r\nhost: s\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\n\r\n{e}", e.len())
    };
    let mut s = TcpStream::connect(sluice.addr).await.unwrap();
    s.write_all(format!("{}{}", one("p-1"), one("p-2")).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.unwrap().status, 202);
    assert_eq!(read_answer(&mut s).await.unwrap().status, 202);

    let e = event("h-1");
    let old = format!("POST /events HTTP/1.0\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\n\r\n{e}", e.len());
    assert_eq!(send(sluice.addr, old.as_bytes()).await.status, 202);

    let e = event("c-1");
    let (a, b) = e.split_at(10);
    let chunked = format!(
        "POST /events HTTP/1.1\r\nhost: s\r\nconnection: close\r\ncontent-type: application/cloudevents+json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    assert_eq!(send(sluice.addr, chunked.as_bytes()).await.status, 202);
    recv.wait_for(4, Duration::from_secs(10)).await;
}

/// Stalled uploads hold at most `max_body_bytes_in_flight` between them: one over
/// the budget is answered 503 `busy`, and sluice's memory stays bounded under
/// many of them.
#[tokio::test]
async fn stalled_uploads_are_bounded_by_the_body_budget() {
    let sluice = Sluice::start_with_server(
        "",
        "  max_batch_bytes: 4194304\n  max_body_bytes_in_flight: 8388608\n  request_timeout: 20s\n",
    )
    .await;
    let rss = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    };
    let before = rss(sluice.pid());
    // Each declares 3 MiB and sends 2 MiB of it, then stalls.
    let head = "POST /events HTTP/1.1\r\nhost: s\r\ncontent-type: application/cloudevents-batch+json\r\ncontent-length: 3145728\r\n\r\n";
    let chunk = vec![b' '; 2 * 1024 * 1024];
    let mut stalled = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        let mut s = TcpStream::connect(sluice.addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        // A refused upload is not read: stop writing when the socket is full.
        let _ = tokio::time::timeout(Duration::from_millis(500), s.write_all(&chunk)).await;
        stalled.push(s);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in &mut stalled {
        if let Ok(Some(a)) = tokio::time::timeout(Duration::from_millis(200), read_answer(s)).await
        {
            if a.status == 503 && a.json()["error"]["code"] == "busy" {
                refused += 1;
            }
        }
    }
    let grown = rss(sluice.pid()).saturating_sub(before);
    eprintln!(
        "40 stalled uploads of 2 MiB: {refused} refused, RSS grew by {} MiB",
        grown >> 20
    );
    assert!(
        refused >= 37,
        "only {refused} of 40 refused: two fit the 8 MiB budget"
    );
    // The budget (8 MiB) and buffers, not 40 x 2 MiB.
    assert!(grown < 48 << 20, "RSS grew by {} MiB", grown >> 20);
}
