//! Timers (`type: timer`) with the real binary: a per-second schedule in real
//! time, a kill -9 that neither fires an instant twice nor (with `catch_up: all`)
//! misses one, `sluice schedule`, and the errors `sluice validate` reports.
//! Assertions are on event ids and instants, never on how late a fire was.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::harness::{validate, Receiver, Sluice, BIN};

fn config(receiver: &Receiver, catch_up: &str) -> String {
    format!(
        "sources:
  - name: tick
    type: timer
    schedule: \"*/1 * * * * *\"
    catch_up: {catch_up}
    max_catch_up: 1h
    event_type: com.example.tick
targets:
  - name: fn
    type: http
    url: {}
rules:
  - name: ticks
    filter:
      pattern: {{ type: [com.example.tick] }}
    targets: [fn]
",
        receiver.url()
    )
}

/// The scheduled instants of the delivered events, each checked against its id.
fn instants(receiver: &Receiver) -> Vec<DateTime<Utc>> {
    receiver
        .delivered()
        .iter()
        .map(|r| {
            let time = r.header("ce-time").expect("ce-time");
            let at = DateTime::parse_from_rfc3339(time)
                .unwrap()
                .with_timezone(&Utc);
            let id = r.header("ce-id").expect("ce-id");
            assert_eq!(
                id,
                format!(
                    "tick@{}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                )
            );
            assert_eq!(r.header("ce-type"), Some("com.example.tick"));
            at
        })
        .collect()
}

/// Each instant from the first to the last, one second apart.
fn assert_contiguous(set: &BTreeSet<DateTime<Utc>>) {
    let all: Vec<_> = set.iter().collect();
    for w in all.windows(2) {
        assert_eq!(
            (*w[1] - *w[0]).num_milliseconds(),
            1000,
            "a missed instant between {} and {}",
            w[0],
            w[1]
        );
    }
}

/// Counter `name` of source `tick` (0 when never counted).
async fn counter(s: &Sluice, name: &str) -> u64 {
    let prefix = format!("{name}{{");
    s.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains("source=\"tick\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test]
async fn timer_fires_every_second_in_real_time() {
    let receiver = Receiver::start().await;
    let s = Sluice::start(&config(&receiver, "none")).await;
    receiver.wait_for(4, Duration::from_secs(60)).await;
    let got = instants(&receiver);
    let set: BTreeSet<_> = got.iter().copied().collect();
    assert_eq!(set.len(), got.len(), "an instant delivered twice: {got:?}");
    assert!(
        got.iter().all(|t| t.timestamp_subsec_millis() == 0),
        "{got:?}"
    );
    assert_contiguous(&set);
    let status = s.get_json("/api/sources/tick").await;
    assert!(status["next"].is_string(), "{status}");
    assert!(status["fired"].as_u64().unwrap() >= 4, "{status}");
}

#[tokio::test]
async fn timer_kill9_fires_no_instant_twice_and_catches_up_all() {
    let receiver = Receiver::start().await;
    let mut s = Sluice::start(&config(&receiver, "all")).await;
    receiver.wait_for(3, Duration::from_secs(60)).await;
    s.kill9();
    let killed_at = Utc::now();
    // Down for a few instants.
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.spawn().await;
    // Wait until instants well after the restart arrive.
    let until = Utc::now() + chrono::Duration::seconds(3);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let got = instants(&receiver);
        if got.iter().any(|t| *t > until) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fire after {until}: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = instants(&receiver);
    let set: BTreeSet<_> = got.iter().copied().collect();
    // Every instant over the downtime was fired after the restart (catch_up: all).
    assert!(
        set.iter()
            .any(|t| *t > killed_at && *t < killed_at + chrono::Duration::seconds(3)),
        "{set:?}"
    );
    assert_contiguous(&set);
    // The timer never published an instant the store already held: the engine
    // would have dropped the copy by its id and counted it.
    assert!(counter(&s, "sluice_events_received_total").await > 0);
    let duplicates = counter(&s, "sluice_events_duplicate_total").await;
    assert_eq!(duplicates, 0, "{}", s.log());
}

fn schedule(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(BIN)
        .arg("schedule")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn timer_schedule_cli_prints_instants_as_text_and_json() {
    let (code, out, err) = schedule(&[
        "--cron",
        "0 30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2027-03-27T00:00:00+01:00",
        "--count",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "2027-03-27T02:30:00+01:00\n2027-03-28T03:00:00+02:00\n2027-03-29T02:30:00+02:00\n"
    );
    let (code, out, err) = schedule(&[
        "--cron",
        "30 2 * * *",
        "--tz",
        "Asia/Shanghai",
        "--from",
        "2027-01-01T00:00:00Z",
        "--count",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v,
        serde_json::json!(["2027-01-02T02:30:00+08:00", "2027-01-03T02:30:00+08:00"])
    );
    // Without --from it starts now, ten instants by default.
    let (code, out, _) = schedule(&["--cron", "@every 1h"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 10);
    let (code, _, err) = schedule(&["--cron", "0 0 31 2 *"]);
    assert_eq!(code, 1);
    assert!(err.contains("never matches"), "{err}");
    let (code, _, err) = schedule(&["--cron", "@daily", "--tz", "Europe/Atlantis"]);
    assert_eq!(code, 1);
    assert!(err.contains("not an IANA time zone"), "{err}");
}

#[test]
fn timer_validate_reports_bad_expressions_and_zones_with_lines() {
    let (code, _, err) = validate(
        "sources:
  - name: a
    type: timer
    schedule: \"0 0 25 * * *\"
  - name: b
    type: timer
    schedule: \"@daily\"
    timezone: Europe/Atlantis
  - name: c
    type: timer
    at: 2027-13-01T00:00:00Z
",
    );
    assert_eq!(code, 1);
    for want in [
        "sources[0].schedule: hour field: 25 is not within 0-23 (line 4",
        "sources[1].timezone: \"Europe/Atlantis\" is not an IANA time zone",
        "(line 8",
        "sources[2].at:",
        "(line 11",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
}
