//! The rule language as a user meets it: `sluice test-rule`, and transforms on the
//! way to a real target.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{event, Receiver, Sluice, BIN};

const CONFIG: &str = "\
targets:
  - name: fn
    type: http
    url: http://127.0.0.1:9/
rules:
  - name: big-orders
    filter:
      pattern:
        type: [order.created]
        data: { amount: [{ numeric: [\">\", 100] }] }
    transform:
      jq: '{order: .data.id, amount: .data.amount}'
      set: { type: settle.requested }
    targets: [fn]
";

fn test_rule(config: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(BIN)
        .args(["test-rule", "-c"])
        .arg(&path)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn test_rule_explains_and_shows_the_output() {
    let small = event("o-1", "order.created", json!({"id": 7, "amount": 50}));
    let big = event("o-2", "order.created", json!({"id": 8, "amount": 500}));
    let other = json!({"specversion": "1.0", "id": "o-3", "source": "/x", "type": "order.deleted"});

    // JSON lines on stdin, JSON output: one result per event.
    let lines = format!("{small}\n{big}\n{other}\n");
    let (code, stdout, stderr) = test_rule(
        CONFIG,
        &["--rule", "big-orders", "--event", "-", "--format", "json"],
        Some(&lines),
    );
    assert_eq!(code, 0, "{stderr}");
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["matched"], false);
    assert_eq!(
        results[0]["explain"],
        json!(["data.amount: 50 is not > 100"])
    );
    assert_eq!(results[0]["output"], Value::Null);
    assert_eq!(results[1]["matched"], true);
    assert_eq!(results[1]["explain"], json!([]));
    assert_eq!(
        results[1]["output"]["data"],
        json!({"order": 8, "amount": 500})
    );
    assert_eq!(results[1]["output"]["type"], "settle.requested");
    assert_eq!(results[1]["output"]["id"], "o-2");
    assert_eq!(
        results[2]["explain"],
        json!([
            "data.amount: missing (expected > 100)",
            "type: \"order.deleted\" is not \"order.created\""
        ])
    );

    // A file holding a JSON array, text output.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.json");
    std::fs::write(&file, json!([small, big]).to_string()).unwrap();
    let (code, stdout, _) = test_rule(
        CONFIG,
        &["--rule", "big-orders", "--event", file.to_str().unwrap()],
        None,
    );
    assert_eq!(code, 0);
    assert!(
        stdout.contains(
            "event 1 (id o-1): does not match rule big-orders\n  data.amount: 50 is not > 100"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("event 2 (id o-2): matches rule big-orders"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"type\": \"settle.requested\""),
        "{stdout}"
    );
}

#[test]
fn test_rule_input_and_config_errors_exit_1() {
    let (code, _, stderr) = test_rule(CONFIG, &["--rule", "nope", "--event", "-"], Some("{}"));
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no rule \"nope\"; its rules are: big-orders"),
        "{stderr}"
    );
    let (code, _, stderr) = test_rule(
        CONFIG,
        &["--rule", "big-orders", "--event", "-"],
        Some("{\"id\": 1}"),
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("event 1: id: must be a string"), "{stderr}");
    let (code, _, stderr) = test_rule(
        CONFIG,
        &["--rule", "big-orders", "--event", "-"],
        Some("not json"),
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("not a JSON event, array or JSON lines"),
        "{stderr}"
    );
    let (code, _, stderr) = test_rule(
        CONFIG,
        &["--rule", "big-orders", "--event", "/nonexistent.json"],
        None,
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read /nonexistent.json"), "{stderr}");
    let bad = CONFIG.replace("jq: '{order", "jq: '{order: (");
    let (code, _, stderr) = test_rule(&bad, &["--rule", "big-orders", "--event", "-"], Some("{}"));
    assert_eq!(code, 1);
    assert!(stderr.contains("rules[0].transform.jq:"), "{stderr}");
}

#[tokio::test]
async fn transforms_reshape_deliveries_and_failures_are_dead_lettered() {
    let recv = Receiver::start().await;
    // `.data.amount + 1` fails on an event whose amount is an array.
    let config = CONFIG
        .replace("http://127.0.0.1:9/", &recv.url())
        .replace("amount: .data.amount}", "amount: (.data.amount + 1)}");
    let sluice = Sluice::start(&config).await;
    let ok = event("t-1", "order.created", json!({"id": 1, "amount": 500}));
    assert_eq!(sluice.post_structured(&ok).await.status(), 202);
    let got = recv.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].json(), json!({"order": 1, "amount": 501}));
    assert_eq!(got[0].header("ce-type"), Some("settle.requested"));
    assert_eq!(got[0].header("ce-id"), Some("t-1"));
    assert_eq!(got[0].header("ce-source"), Some("/tests"));

    // An event the program fails on goes to the dead letters, never to the target,
    // and does not hold up the events behind it. ([101, "x"] matches `> 100`
    // through its first element.)
    let poison = event(
        "t-3",
        "order.created",
        json!({"id": 3, "amount": [101, "x"]}),
    );
    assert_eq!(sluice.post_structured(&poison).await.status(), 202);
    let after = event("t-4", "order.created", json!({"id": 4, "amount": 700}));
    assert_eq!(sluice.post_structured(&after).await.status(), 202);
    let got = recv.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].header("ce-id"), Some("t-4"));
    let letter = sluice
        .first_dead_letter("big-orders.fn", Duration::from_secs(10))
        .await;
    assert_eq!(letter["event"]["id"], "t-3");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("transform failed"),
        "{letter}"
    );
    assert_eq!(
        recv.attempts(),
        2,
        "the poison event never reached the target"
    );
}
