//! RabbitMQ end to end, where sluice also writes to RabbitMQ: lost connections
//! (source and target in a vhost of their own), RabbitMQ to RabbitMQ read back
//! by a plain consumer, and a target exchange that does not exist yet.

use super::*;

/// A declared rabbitmq vhost of its own, removed on drop.
struct Vhost(String);

impl Vhost {
    fn new() -> Self {
        let name = unique("sluice-test");
        let ok = |args: &[&str]| {
            let out = Command::new("rabbitmqctl").args(args).output().unwrap();
            assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
        };
        ok(&["add_vhost", &name]);
        ok(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }

    /// Close every client connection to this vhost, as a broker restart does.
    fn close_connections(&self) {
        let out = Command::new("rabbitmqctl")
            .args([
                "close_all_connections",
                "-p",
                &self.0,
                "test: broker restart",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.0])
            .output();
    }
}

/// Read `queue` with a plain consumer until `n` distinct `cloudEvents_id`s came
/// (or `timeout`); returns the distinct ids and the messages read.
async fn read_ids(url: &str, queue: &str, n: usize, timeout: Duration) -> (HashSet<String>, usize) {
    let (_conn, ch) = channel(url).await;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut ids = HashSet::new();
    let mut read = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    while ids.len() < n {
        let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await else {
            break;
        };
        read += 1;
        if let Some(AMQPValue::LongString(id)) = d
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("cloudEvents_id"))
        {
            ids.insert(String::from_utf8_lossy(id.as_bytes()).into_owned());
        }
        d.ack(BasicAckOptions::default()).await.unwrap();
    }
    (ids, read)
}

/// Every connection closed (as in a broker restart) in the middle of 20,000
/// messages going RabbitMQ -> sluice -> RabbitMQ: sluice reconnects by itself,
/// `/readyz` says 503 meanwhile and 200 again after, and every message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connections_reconnect_and_deliver_everything() {
    let vhost = Vhost::new();
    let url = url_on(&vhost.0);
    let (_conn, ch) = channel(&url).await;
    queue(&ch, "in", None).await;
    queue(&ch, "out", None).await;
    let messages = (0..20_000u64)
        .map(|i| {
            (
                json!({"n": i}).to_string().into_bytes(),
                ce_props(&format!("m-{i}"), "order.created"),
            )
        })
        .collect();
    publish_all(&ch, "in", messages).await;
    drop(ch);
    drop(_conn);
    let config = format!(
        "sources:\n  - name: src\n    type: rabbitmq\n    url: \"{url}\"\n    queue: in\n    prefetch: 200\n\
targets:\n  - name: out\n    type: rabbitmq\n    url: \"{url}\"\n    exchange: \"\"\n    routing_key: out\n    batch: {{ max_events: 100 }}\n\
rules:\n  - name: all\n    targets: [out]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 500ms }} }}\n"
    );
    let sluice = Sluice::start(&config).await;
    // Watch /readyz closely from before the connections are closed.
    let saw_503 = Arc::new(AtomicBool::new(false));
    let watch = {
        let saw = saw_503.clone();
        let client = sluice.client.clone();
        let readyz = sluice.url("/readyz");
        tokio::spawn(async move {
            loop {
                if let Ok(r) = client.get(&readyz).send().await {
                    if r.status() == 503 {
                        saw.store(true, Ordering::SeqCst);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    // Some of it through before the "restart".
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = sluice.get_json("/api/sources/src").await;
        if status["acked"].as_u64().unwrap_or(0) >= 3_000 {
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    vhost.close_connections();
    let (status, body) = sluice
        .wait_readyz(Duration::from_secs(30), |s, _| s == 200)
        .await;
    assert_eq!(status, 200, "{body}");
    let (ids, read) = read_ids(&url, "out", 20_000, Duration::from_secs(180)).await;
    watch.abort();
    assert_eq!(
        ids.len(),
        20_000,
        "distinct messages read back ({read} in all)"
    );
    let source = sluice.get_json("/api/sources/src").await;
    assert!(source["connects"].as_u64().unwrap() >= 2, "{source}");
    assert!(
        saw_503.load(Ordering::SeqCst),
        "/readyz never said 503 while reconnecting"
    );
    assert!(sluice
        .log()
        .contains("RabbitMQ connection lost; reconnecting."));
    eprintln!(
        "connections closed: {} messages read back for 20000, source connects {}",
        read, source["connects"]
    );
}

/// RabbitMQ -> transform -> RabbitMQ target on a topic exchange, read back by a
/// plain consumer: CloudEvents headers or a structured body, routing keys from
/// the template, persistence; an event no queue takes is a dead letter with
/// reason `unroutable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_to_transform_to_rabbitmq_with_unroutable_dead_letters() {
    let input = unique("in");
    let exchange = unique("shop");
    let (binary_q, structured_q) = (format!("{exchange}-b"), format!("{exchange}-s"));
    let (_conn, ch) = channel(&url()).await;
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue(&ch, &binary_q, Some((&exchange, "order.reshaped.*"))).await;
    queue(&ch, &structured_q, Some((&exchange, "structured.#"))).await;
    let config = format!(
        "sources:\n  - name: in\n    type: rabbitmq\n    url: \"{u}\"\n    queue: {input}\n    declare: {{ durable: false, auto_delete: true }}\n\
targets:\n  - name: out\n    type: rabbitmq\n    url: \"{u}\"\n    exchange: {exchange}\n    routing_key: \"{{type}}.{{data.region}}\"\n  - name: out-s\n    type: rabbitmq\n    url: \"{u}\"\n    exchange: {exchange}\n    routing_key: \"structured.{{data.region}}\"\n    mode: structured\n    persistent: false\n\
rules:\n  - name: reshape\n    filter: {{ pattern: {{ type: [order.created] }} }}\n    transform:\n      jq: '{{region: .data.region, total: (.data.amount * 2)}}'\n      set: {{ type: order.reshaped }}\n    targets: [out, out-s]\n",
        u = url()
    );
    let sluice = Sluice::start(&config).await;
    let (_conn2, pubch) = channel(&url()).await;
    let mut messages = Vec::new();
    for i in 0..20u64 {
        let region = if i == 7 { "mars" } else { "eu" };
        let body = json!({"region": region, "amount": i})
            .to_string()
            .into_bytes();
        messages.push((body, ce_props(&format!("o-{i}"), "order.created")));
    }
    // Unroutable for `out`: its key order.reshaped.mars.x matches no binding.
    messages[7].0 = json!({"region": "mars.x", "amount": 7})
        .to_string()
        .into_bytes();
    publish_all(&pubch, &input, messages).await;

    let (_rc, rch) = channel(&url()).await;
    let mut consumer = rch
        .basic_consume(
            binary_q.as_str().into(),
            "reader".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 19 {
        let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
            .await
            .expect("messages arrive")
            .unwrap()
            .unwrap();
        let h = d.properties.headers().clone().unwrap();
        let header = |k: &str| match h.inner().get(k) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        };
        assert_eq!(
            header("cloudEvents_type").as_deref(),
            Some("order.reshaped")
        );
        assert_eq!(header("cloudEvents_source").as_deref(), Some("/shop"));
        assert_eq!(header("cloudEvents_tenant").as_deref(), Some("acme"));
        assert_eq!(header("cloudEvents_specversion").as_deref(), Some("1.0"));
        assert_eq!(d.routing_key.as_str(), "order.reshaped.eu");
        assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            d.properties.content_type().as_ref().map(|c| c.as_str()),
            Some("application/json")
        );
        let body: Value = serde_json::from_slice(&d.data).unwrap();
        let id = header("cloudEvents_id").unwrap();
        let i: u64 = id.trim_start_matches("o-").parse().unwrap();
        assert_eq!(body, json!({"region": "eu", "total": i * 2}));
        d.ack(BasicAckOptions::default()).await.unwrap();
        seen.insert(i);
    }
    assert!(!seen.contains(&7));
    let letter = sluice
        .first_dead_letter("reshape.out", Duration::from_secs(30))
        .await;
    assert_eq!(letter["event"]["id"], "o-7");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("unroutable: no queue is bound"),
        "{letter}"
    );
    assert_eq!(letter["attempts"].as_array().unwrap().len(), 1, "{letter}");
    assert_eq!(letter["last_status"], 312, "NO_ROUTE: {letter}");

    // The structured target: the event is the body.
    let mut consumer = rch
        .basic_consume(
            structured_q.as_str().into(),
            "reader-s".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), consumer.next())
        .await
        .expect("messages arrive")
        .unwrap()
        .unwrap();
    assert_eq!(
        d.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/cloudevents+json")
    );
    assert_ne!(d.properties.delivery_mode(), &Some(2), "persistent: false");
    let event: Value = serde_json::from_slice(&d.data).unwrap();
    assert_eq!(event["type"], "order.reshaped");
    assert!(d.routing_key.as_str().starts_with("structured."));
    remove(&[&binary_q, &structured_q], &[&exchange]).await;
}

/// A target exchange that does not exist holds deliveries: `/readyz` says 503 and
/// why; once the exchange is declared, readiness turns 200 and the events waiting
/// arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_holds_events_until_it_exists() {
    let input = unique("hold-in");
    let exchange = unique("hold-x");
    let out = format!("{exchange}-q");
    let config = format!(
        "sources:\n  - name: in\n    type: rabbitmq\n    url: \"{u}\"\n    queue: {input}\n    declare: {{ durable: true }}\n\
targets:\n  - name: mq\n    type: rabbitmq\n    url: \"{u}\"\n    exchange: {exchange}\n    routing_key: all\n\
rules:\n  - name: r\n    targets: [mq]\n",
        u = url()
    );
    let sluice = Sluice::start_unready(&config).await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && body.to_string().contains("is not there")
        })
        .await;
    assert!(body.to_string().contains(&exchange), "{body}");
    let (_conn, ch) = channel(&url()).await;
    publish_all(&ch, &input, (0..50).map(numbered).collect()).await;
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    queue(&ch, &out, Some((&exchange, "all"))).await;
    sluice
        .wait_readyz(Duration::from_secs(20), |status, _| status == 200)
        .await;
    let (_, read) = read_ids(&url(), &out, usize::MAX, Duration::from_secs(5)).await;
    assert_eq!(read, 50, "the held events arrive");
    remove(&[&input, &out], &[&exchange]).await;
}

/// A source that loses its broker is a `sluice.source.disconnected` system event
/// and, once back, `sluice.source.reconnected`: the broker closes the
/// connections and refuses the vhost to the user until it is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_losing_its_broker_is_a_system_event_and_so_is_its_return() {
    let vhost = Vhost::new();
    let url = url_on(&vhost.0);
    let (_conn, ch) = channel(&url).await;
    queue(&ch, "in", None).await;
    drop(ch);
    drop(_conn);
    let ops = Receiver::start().await;
    let config = format!(
        "sources:\n  - name: src\n    type: rabbitmq\n    url: \"{url}\"\n    queue: in\n\
targets:\n  - name: ops\n    type: http\n    url: {}\n\
rules:\n  - name: ops\n    bus: system\n    targets: [ops]\n",
        ops.url()
    );
    let sluice = Sluice::start(&config).await;
    let of_type = |ty: &str| {
        ops.delivered()
            .into_iter()
            .filter(|r| r.header("ce-type") == Some(ty))
            .collect::<Vec<_>>()
    };
    let wait_type = |ty: &'static str| {
        let of_type = &of_type;
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(r) = of_type(ty).into_iter().next() {
                    return r;
                }
                assert!(Instant::now() < deadline, "no {ty} within 30 s");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_type("sluice.started").await;
    let rabbitmqctl = |args: &[&str]| {
        let out = Command::new("rabbitmqctl").args(args).output().unwrap();
        assert!(out.status.success(), "rabbitmqctl {args:?}: {out:?}");
    };
    rabbitmqctl(&["clear_permissions", "-p", &vhost.0, "guest"]);
    vhost.close_connections();
    let down = wait_type("sluice.source.disconnected").await;
    assert_eq!(down.header("ce-subject"), Some("src"));
    assert!(of_type("sluice.source.reconnected").is_empty());
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"]);
    let up = wait_type("sluice.source.reconnected").await;
    assert_eq!(up.header("ce-subject"), Some("src"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        of_type("sluice.source.disconnected").len(),
        1,
        "one event per change"
    );
    assert_eq!(
        of_type("sluice.source.reconnected").len(),
        1,
        "one event per change"
    );
    drop(sluice);
}
