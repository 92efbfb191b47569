//! The Elasticsearch/OpenSearch target against a real OpenSearch API (the test
//! script starts one; `SLUICE_TEST_ELASTICSEARCH` says where, default
//! http://127.0.0.1:19200). Every test writes to indices under its own prefix.

mod support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{free_port, Sluice};
use crate::kafka::{brokers, topic};
use support::{
    count, dead_letters, es, forward, gateway, get, key, numbers, parsed, prefix, search_all,
    target, wait_count, wait_delivered, wait_drained,
};

fn timed(id: &str, time: &str, region: &str) -> Value {
    json!({
        "specversion": "1.0",
        "id": id,
        "source": "/tests/es",
        "type": "log.line",
        "time": time,
        "data": {"region": region, "line": format!("line {id}")},
    })
}

/// HTTP ingest -> rule -> two targets (whole events, and data only) with daily
/// indices; then the same events again, which overwrite their documents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_land_in_daily_indices_keyed_by_event_and_redelivery_overwrites() {
    let p = prefix("daily");
    let config = format!(
        "targets:\n{}{}rules:\n  - name: logs\n    targets: [events, data]\n",
        target(
            "events",
            &es(),
            &format!("{p}-logs-%Y.%m.%d"),
            "    batch: { max_wait: 100ms }\n"
        ),
        target(
            "data",
            &es(),
            &format!("{p}-data-{{data.region}}-%Y.%m.%d"),
            "    document: data\n    batch: { max_wait: 100ms }\n"
        ),
    );
    // No ingest de-duplication: the second round must reach the cluster.
    let sluice = Sluice::start_with_server(&config, "  dedupe_window: 0s\n").await;
    let events = [
        timed("a", "2026-01-01T10:00:00Z", "eu"),
        timed("b", "2026-01-01T23:59:59.999Z", "eu"),
        timed("c", "2026-01-02T00:00:00Z", "us"),
        // 01:00 at +02:00 is still the 2nd in UTC.
        timed("d", "2026-01-03T01:00:00+02:00", "us"),
        timed("e", "2026-01-03T12:00:00Z", "eu"),
    ];
    let days = [
        "2026.01.01",
        "2026.01.01",
        "2026.01.02",
        "2026.01.02",
        "2026.01.03",
    ];
    for round in 1..=2u64 {
        for e in &events {
            assert_eq!(sluice.post_structured(e).await.status(), 202);
        }
        wait_delivered(&sluice, "logs.events", 5 * round, Duration::from_secs(20)).await;
        wait_delivered(&sluice, "logs.data", 5 * round, Duration::from_secs(20)).await;
        assert_eq!(count(&format!("{p}-logs-*")).await, 5, "round {round}");
        assert_eq!(count(&format!("{p}-data-*")).await, 5, "round {round}");
        for (e, day) in events.iter().zip(days) {
            let id = key(e);
            let doc = get(&format!("/{p}-logs-{day}/_doc/{id}")).await;
            assert_eq!(doc["found"], true, "{e} not in {p}-logs-{day}: {doc}");
            assert_eq!(doc["_source"], serde_json::to_value(parsed(e)).unwrap());
            assert_eq!(doc["_version"], round, "the second round overwrote {id}");
            let region = e["data"]["region"].as_str().unwrap();
            let doc = get(&format!("/{p}-data-{region}-{day}/_doc/{id}")).await;
            assert_eq!(doc["_source"], e["data"], "{doc}");
        }
    }
    let indices: std::collections::BTreeSet<String> = search_all(&format!("{p}-*"))
        .await
        .iter()
        .map(|hit| hit["_index"].as_str().unwrap().to_owned())
        .collect();
    let want: std::collections::BTreeSet<String> = [
        "logs-2026.01.01",
        "logs-2026.01.02",
        "logs-2026.01.03",
        "data-eu-2026.01.01",
        "data-us-2026.01.02",
        "data-eu-2026.01.03",
    ]
    .iter()
    .map(|s| format!("{p}-{s}"))
    .collect();
    assert_eq!(indices, want);
}

/// One batch in which some documents are rejected: by the cluster (an invalid
/// index name, a mapping conflict) or before sending (no field for the index
/// name, no JSON object data). Those are dead-lettered with the reason; the rest
/// are indexed. A missing ingest pipeline rejects every document of its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_documents_are_dead_lettered_and_the_rest_indexed() {
    let p = prefix("reject");
    let config = format!(
        "targets:\n{}{}rules:\n  - name: mixed\n    targets: [es, piped]\n    retry: {{ max_attempts: 3, backoff: {{ initial: 50ms, max: 100ms }} }}\n",
        target(
            "es",
            &es(),
            &format!("{p}-{{idx}}"),
            "    document: data\n    batch: { max_wait: 500ms }\n"
        ),
        target(
            "piped",
            &es(),
            &format!("{p}-piped"),
            &format!("    pipeline: {p}-no-such-pipeline\n    batch: {{ max_wait: 500ms }}\n")
        ),
    );
    let sluice = Sluice::start(&config).await;
    // `idx`: an extension attribute naming the index.
    let event = |id: &str, idx: Option<&str>, data: Value| {
        let mut e = json!({"specversion": "1.0", "id": id, "source": "/tests/es", "type": "t", "data": data});
        if let Some(idx) = idx {
            e["idx"] = json!(idx);
        }
        e
    };
    let batch = json!([
        event("ok-1", Some("ok"), json!({"n": 1})),
        event("upper", Some("Not-Lower"), json!({"n": 2})),
        event("ok-2", Some("ok"), json!({"n": 3})),
        event("conflict", Some("ok"), json!({"n": "three"})),
        event("no-idx", None, json!({"n": 4})),
        event("not-object", Some("ok"), json!("just text")),
        event("ok-3", Some("ok"), json!({"n": 5})),
    ]);
    let r = sluice.post_batch(&batch).await;
    assert_eq!(r.status(), 202);

    let letters = dead_letters(&sluice, "mixed.es", 4, Duration::from_secs(20)).await;
    let reason = |id: &str| {
        let letter = letters
            .iter()
            .find(|l| l["event"]["id"] == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"));
        let reason = letter["reason"].as_str().unwrap();
        let reason = reason
            .strip_prefix("permanent error: ")
            .unwrap_or_else(|| panic!("{letter}"));
        (reason.to_owned(), letter["last_status"].clone())
    };
    let (upper, status) = reason("upper");
    assert!(
        upper.starts_with("invalid_index_name_exception: Invalid index name [")
            && upper.contains("must be lowercase"),
        "{upper}"
    );
    assert_eq!(status, 400);
    let (conflict, status) = reason("conflict");
    assert!(
        conflict.starts_with("mapper_parsing_exception: failed to parse field [n]"),
        "{conflict}"
    );
    assert_eq!(status, 400);
    assert_eq!(reason("no-idx").0, "index: the event has no idx");
    assert_eq!(
        reason("not-object").0,
        "document: `data` mode indexes JSON object data, and this event's data is a JSON string"
    );
    wait_count(&format!("{p}-ok"), 3, Duration::from_secs(10)).await;
    let mut ns: Vec<i64> = search_all(&format!("{p}-ok"))
        .await
        .iter()
        .map(|hit| hit["_source"]["n"].as_i64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, [1, 3, 5]);
    let stats = sluice.stats("mixed.es").await;
    assert_eq!(
        (
            stats["delivered_total"].clone(),
            stats["retried_total"].clone()
        ),
        (json!(3), json!(0))
    );

    // `?pipeline=` reaches the cluster: every document names the missing pipeline.
    let letters = dead_letters(&sluice, "mixed.piped", 7, Duration::from_secs(20)).await;
    for letter in &letters {
        assert_eq!(
            letter["reason"],
            format!("permanent error: illegal_argument_exception: pipeline with id [{p}-no-such-pipeline] does not exist")
        );
    }
    assert_eq!(count(&format!("{p}-piped")).await, 0);
}

/// `sluice validate` names every bad setting of an elasticsearch target.
#[test]
fn bad_settings_are_named_by_validate() {
    let targets = [
        target("a", "http://127.0.0.1:9200", "logs-%Q", ""),
        target("b", "http://127.0.0.1:9200", "logs-{data.region", ""),
        target("c", "http://127.0.0.1:9200", "Logs-%Y.%m.%d", ""),
        target("d", "localhost:9200", "logs", ""),
        target(
            "e",
            "http://127.0.0.1:9200",
            "_logs",
            "    auth: { username: u, api_key: k }\n",
        ),
        target(
            "f",
            "http://127.0.0.1:9200",
            "logs",
            "    document: everything\n",
        ),
    ]
    .concat();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(
        &path,
        format!("targets:\n{targets}rules:\n  - name: r\n    targets: [a, b, c, d, e, f]\n"),
    )
    .unwrap();
    let (code, _, stderr) = crate::harness::validate(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(code, 1);
    for want in [
        "targets[0].index: \"logs-%Q\" has a `%` that is not a date part (use %% for a literal %)",
        "targets[1].index: `{` at byte 5 is never closed",
        "targets[2].index: \"Logs-%Y.%m.%d\" is not an index name: 'L' is not allowed (index names are lowercase)",
        "targets[3].url: \"localhost:9200\" is not a URL starting with http:// or https://",
        "targets[4].auth: needs either `username` and `password`, or `api_key` alone",
        "targets[5].document: unknown variant `everything`, expected `event` or `data`",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
    // Checked after the parse errors of the same target are fixed.
    std::fs::write(
        &path,
        format!(
            "targets:\n{}rules:\n  - name: r\n    targets: [a]\n",
            target("a", "http://x", "_logs", "")
        ),
    )
    .unwrap();
    let (_, _, stderr) = crate::harness::validate(&std::fs::read_to_string(&path).unwrap());
    assert!(
        stderr.contains(
            "targets[0].index: \"_logs\" is not an index name: it may not start with '_'"
        ),
        "{stderr}"
    );
}

/// A cluster that cannot be reached makes `/readyz` 503, naming the target and
/// the reason; events wait, and are indexed once the cluster is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_named_by_readyz_and_events_wait() {
    let p = prefix("unready");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let sluice = Sluice::start_unready(&format!(
        "targets:\n{}rules:\n  - name: r\n    targets: [late]\n",
        target(
            "late",
            &url,
            &format!("{p}-late"),
            "    batch: { max_wait: 50ms }\n"
        )
    ))
    .await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && body["targets"].is_array()
        })
        .await;
    let entry = &body["targets"][0];
    assert_eq!(entry["target"], "late");
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("cannot reach {url}/: ")),
        "{reason}"
    );
    assert!(reason.to_lowercase().contains("refused"), "{reason}");

    for i in 0..3 {
        let e = json!({"specversion": "1.0", "id": format!("w-{i}"), "source": "/tests/es", "type": "t", "data": {"i": i}});
        assert_eq!(sluice.post_structured(&e).await.status(), 202);
    }
    // The cluster appears on that address; within one check interval, all is well.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let upstream = es()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    tokio::spawn(forward(listener, upstream));
    sluice
        .wait_readyz(Duration::from_secs(15), |status, _| status == 200)
        .await;
    wait_count(&format!("{p}-late"), 3, Duration::from_secs(15)).await;
}

/// Basic and API-key credentials reach the cluster; credentials it refuses, or
/// none where it needs some, make `/readyz` name the target and hold its events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_sent_and_refused_ones_named_by_readyz() {
    let p = prefix("auth");
    // `elastic:changeme` in base64.
    let (url, _) = gateway(
        usize::MAX,
        &["ApiKey s3cret", "Basic ZWxhc3RpYzpjaGFuZ2VtZQ=="],
    )
    .await;
    let batch = "    batch: { max_wait: 50ms }\n";
    let targets = [
        target(
            "key",
            &url,
            &format!("{p}-key"),
            &format!("    auth: {{ api_key: s3cret }}\n{batch}"),
        ),
        target(
            "basic",
            &url,
            &format!("{p}-basic"),
            &format!("    auth: {{ username: elastic, password: changeme }}\n{batch}"),
        ),
        target(
            "wrong",
            &url,
            &format!("{p}-wrong"),
            &format!("    auth: {{ api_key: guess }}\n{batch}"),
        ),
        target("none", &url, &format!("{p}-none"), batch),
    ]
    .concat();
    let sluice = Sluice::start_unready(&format!(
        "targets:\n{targets}rules:\n  - name: r\n    targets: [key, basic, wrong, none]\n"
    ))
    .await;
    let (_, body) = sluice
        .wait_readyz(Duration::from_secs(20), |status, body| {
            status == 503 && body["targets"].as_array().is_some_and(|t| t.len() == 2)
        })
        .await;
    let reason = |target: &str| {
        body["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == target)
            .unwrap_or_else(|| panic!("{target} not in {body}"))["reason"]
            .clone()
    };
    assert_eq!(
        reason("wrong"),
        format!("{url}/ answered HTTP 401: it did not accept the credentials in `auth`")
    );
    assert_eq!(
        reason("none"),
        format!("{url}/ answered HTTP 401: it needs credentials; set `auth`")
    );
    for i in 0..3 {
        let e = json!({"specversion": "1.0", "id": format!("a-{i}"), "source": "/tests/es", "type": "t", "data": {"i": i}});
        assert_eq!(sluice.post_structured(&e).await.status(), 202);
    }
    wait_count(&format!("{p}-key"), 3, Duration::from_secs(10)).await;
    wait_count(&format!("{p}-basic"), 3, Duration::from_secs(10)).await;
    assert_eq!(
        count(&format!("{p}-wrong")).await + count(&format!("{p}-none")).await,
        0
    );
}

/// A batch too large for the server in front of the cluster is sent again in
/// halves until the parts fit; a single document that is too large on its own is
/// dead-lettered; nothing waits for a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_as_too_large_is_split_and_an_oversized_document_rejected() {
    let p = prefix("split");
    let (url, refused) = gateway(4096, &[]).await;
    let config = format!(
        "targets:\n{}rules:\n  - name: r\n    targets: [es]\n",
        target(
            "es",
            &url,
            &format!("{p}-docs"),
            "    document: data\n    batch: { max_events: 100, max_wait: 300ms }\n"
        ),
    );
    let sluice = Sluice::start(&config).await;
    let event = |id: String, data: Value| json!({"specversion": "1.0", "id": id, "source": "/tests/es", "type": "t", "data": data});
    // About 190 bytes of request per event: 40 of them need three levels of halves.
    let mut batch: Vec<Value> = (0..40)
        .map(|n| event(format!("small-{n}"), json!({"n": n, "pad": "x".repeat(60)})))
        .collect();
    batch.insert(
        17,
        event("huge".into(), json!({"n": -1, "pad": "y".repeat(5000)})),
    );
    let r = sluice.post_batch(&Value::Array(batch)).await;
    assert_eq!(r.status(), 202);

    let letters = dead_letters(&sluice, "r.es", 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0]["event"]["id"], "huge");
    let reason = letters[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("permanent error: HTTP 413: the document is larger than the server takes in one request ("),
        "{reason}"
    );
    assert_eq!(letters[0]["last_status"], 413);
    wait_count(&format!("{p}-docs"), 40, Duration::from_secs(20)).await;
    let stats = sluice.stats("r.es").await;
    assert_eq!(
        (
            stats["delivered_total"].clone(),
            stats["retried_total"].clone()
        ),
        (json!(40), json!(0))
    );
    assert!(
        refused.load(Ordering::SeqCst) >= 2,
        "the first batch was split"
    );
}

/// Kafka topic -> Kafka source -> jq transform -> elasticsearch, with a `kill -9`
/// in the middle: every record ends up as exactly one document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_to_elasticsearch_survives_kill_9_without_duplicates() {
    const TOTAL: u64 = 5_000;
    let topic = topic("es", 3).await;
    let p = prefix("kafka");
    let pattern = format!("{p}-kafka-*");
    let config = format!(
        "sources:\n  - name: src\n    type: kafka\n    brokers: {}\n    topics: [{topic}]\n    group: g-{topic}\n    start: earliest\n    options: {{ session.timeout.ms: \"6000\" }}\n\
targets:\n{}\
rules:\n  - name: reshape\n    transform:\n      jq: '{{n: .data.n, double: (.data.n * 2), key: .partitionkey}}'\n    targets: [es]\n    retry: {{ max_attempts: 1000, backoff: {{ initial: 50ms, max: 500ms }} }}\n",
        brokers(),
        target(
            "es",
            &es(),
            &format!("{p}-kafka-%Y.%m.%d"),
            "    batch: { max_events: 200, max_wait: 50ms }\n    concurrency: 4\n"
        ),
    );
    crate::kafka::produce_numbered(&topic, 0..TOTAL / 2).await;
    let started = Instant::now();
    let mut sluice = Sluice::start(&config).await;
    // Kill once documents are arriving, before the first half is all in.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before_kill = loop {
        let n = count(&pattern).await;
        if n >= 300 {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "no documents arrived: {}",
            sluice.log()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let first_rate = before_kill as f64 / started.elapsed().as_secs_f64();
    sluice.kill9();
    let killed = Instant::now();
    crate::kafka::produce_numbered(&topic, TOTAL / 2..TOTAL).await;
    // Restart once the killed consumer's session (6 s) has expired: a member that
    // joins while the dead one still counts can be left with no partitions by the
    // test broker, and is not given any when the dead one expires.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(killed.elapsed())).await;
    let at_restart = count(&pattern).await;
    sluice.spawn().await;
    // Documents/s from the first new document after the restart.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut resumed = None;
    loop {
        let n = count(&pattern).await;
        if n > at_restart && resumed.is_none() {
            resumed = Some((Instant::now(), n));
        }
        if n >= TOTAL {
            assert_eq!(n, TOTAL, "more documents than records");
            break;
        }
        if Instant::now() > deadline {
            let missing: Vec<u64> = {
                let present = numbers(&search_all(&pattern).await);
                (0..TOTAL).filter(|i| !present.contains(i)).collect()
            };
            panic!(
                "{n} of {TOTAL} documents; {} records missing: {missing:?}\nsubscription: {}\n{}",
                missing.len(),
                sluice.stats("reshape.es").await,
                sluice.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Some((at, n)) = resumed {
        eprintln!(
            "elasticsearch: {before_kill} documents before kill -9 ({first_rate:.0}/s from start), \
             {at_restart} at restart, then {:.0}/s",
            (TOTAL - n) as f64 / at.elapsed().as_secs_f64()
        );
    }
    wait_drained(&sluice, "reshape.es").await;
    assert_eq!(count(&pattern).await, TOTAL);

    let hits = search_all(&pattern).await;
    assert_eq!(hits.len() as u64, TOTAL);
    let mut seen = vec![false; TOTAL as usize];
    for hit in &hits {
        let doc = &hit["_source"];
        let n = doc["data"]["n"].as_u64().unwrap();
        assert_eq!(doc["data"]["double"], n * 2, "{doc}");
        assert_eq!(doc["data"]["key"], format!("k{}", n % 101), "{doc}");
        assert_eq!(doc["partitionkey"], doc["data"]["key"]);
        assert!(
            doc["id"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{topic}-")),
            "{doc}"
        );
        assert_eq!(hit["_id"], key(doc), "the document's _id is its event key");
        assert!(
            !std::mem::replace(&mut seen[n as usize], true),
            "n = {n} twice"
        );
    }
    assert!(seen.iter().all(|s| *s));
    let rewritten = hits
        .iter()
        .filter(|hit| hit["_version"].as_u64() > Some(1))
        .count();
    eprintln!("elasticsearch: {rewritten} documents were written more than once");
    assert_eq!(sluice.stats("reshape.es").await["dead_letters"], 0);
}
