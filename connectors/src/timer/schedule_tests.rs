//! The schedule math on fixed instants: the 2027 daylight-saving transitions of
//! America/New_York and Europe/Berlin, and Asia/Shanghai (no DST).

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn tz(name: &str) -> Tz {
    name.parse().unwrap()
}

/// The next `n` fire instants after `from`, as RFC 3339 in the zone.
fn next(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).unwrap();
    let zone = tz(zone);
    let mut at = t(from);
    (0..n)
        .map(|_| {
            at = s.next_after(at, zone).unwrap();
            at.with_timezone(&zone).to_rfc3339()
        })
        .collect()
}

/// Each gap between consecutive fires in `(from, until]`, in seconds.
fn gaps(expr: &str, zone: &str, from: &str, until: &str) -> Vec<i64> {
    let fires = Schedule::parse(expr)
        .unwrap()
        .between(t(from), t(until), tz(zone), 100_000);
    fires
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect()
}

#[test]
fn new_york_fixed_time_fires_once_a_day_across_spring_forward() {
    // 2027-03-14 02:00 EST -> 03:00 EDT: 02:30 does not exist that day.
    assert_eq!(
        next(
            "0 30 2 * * *",
            "America/New_York",
            "2027-03-13T00:00:00-05:00",
            3
        ),
        [
            "2027-03-13T02:30:00-05:00",
            "2027-03-14T03:00:00-04:00",
            "2027-03-15T02:30:00-04:00"
        ]
    );
    // Several times inside the gap still fire once, and 03:00 itself is not a second fire.
    assert_eq!(
        next(
            "0 0,30 2,3 * * *",
            "America/New_York",
            "2027-03-14T00:00:00-05:00",
            3
        ),
        [
            "2027-03-14T03:00:00-04:00",
            "2027-03-14T03:30:00-04:00",
            "2027-03-15T02:00:00-04:00"
        ]
    );
}

#[test]
fn new_york_fixed_time_fires_once_across_fall_back() {
    // 2027-11-07 02:00 EDT -> 01:00 EST: 01:30 happens twice; fire the first.
    assert_eq!(
        next(
            "0 30 1 * * *",
            "America/New_York",
            "2027-11-06T00:00:00-04:00",
            3
        ),
        [
            "2027-11-06T01:30:00-04:00",
            "2027-11-07T01:30:00-04:00",
            "2027-11-08T01:30:00-05:00"
        ]
    );
}

#[test]
fn new_york_interval_fires_every_real_interval_across_both_transitions() {
    let spring = gaps(
        "*/15 * * * *",
        "America/New_York",
        "2027-03-13T22:00:00-05:00",
        "2027-03-14T08:00:00-04:00",
    );
    assert!(
        spring.len() > 30 && spring.iter().all(|g| *g == 900),
        "{spring:?}"
    );
    let fall = gaps(
        "*/15 * * * *",
        "America/New_York",
        "2027-11-06T22:00:00-04:00",
        "2027-11-07T08:00:00-05:00",
    );
    assert!(
        fall.len() > 30 && fall.iter().all(|g| *g == 900),
        "{fall:?}"
    );
    // The repeated hour: 01:45 EDT, then 01:00 EST fifteen minutes later.
    assert_eq!(
        next(
            "*/15 * * * *",
            "America/New_York",
            "2027-11-07T01:40:00-04:00",
            2
        ),
        ["2027-11-07T01:45:00-04:00", "2027-11-07T01:00:00-05:00"]
    );
    let every = gaps(
        "@every 10m",
        "America/New_York",
        "2027-11-06T22:00:00-04:00",
        "2027-11-07T08:00:00-05:00",
    );
    assert!(every.iter().all(|g| *g == 600), "{every:?}");
}

#[test]
fn berlin_fixed_time_across_both_transitions() {
    // 2027-03-28 02:00 CET -> 03:00 CEST.
    assert_eq!(
        next(
            "0 30 2 * * *",
            "Europe/Berlin",
            "2027-03-27T00:00:00+01:00",
            3
        ),
        [
            "2027-03-27T02:30:00+01:00",
            "2027-03-28T03:00:00+02:00",
            "2027-03-29T02:30:00+02:00"
        ]
    );
    // 2027-10-31 03:00 CEST -> 02:00 CET: 02:30 happens twice.
    assert_eq!(
        next(
            "30 2 * * *",
            "Europe/Berlin",
            "2027-10-30T00:00:00+02:00",
            3
        ),
        [
            "2027-10-30T02:30:00+02:00",
            "2027-10-31T02:30:00+02:00",
            "2027-11-01T02:30:00+01:00"
        ]
    );
}

#[test]
fn berlin_hourly_and_every_second_are_regular_across_both_transitions() {
    for (from, until) in [
        ("2027-03-27T20:00:00+01:00", "2027-03-28T06:00:00+02:00"),
        ("2027-10-30T20:00:00+02:00", "2027-10-31T06:00:00+01:00"),
    ] {
        let hourly = gaps("@hourly", "Europe/Berlin", from, until);
        assert!(
            hourly.len() >= 8 && hourly.iter().all(|g| *g == 3600),
            "{hourly:?}"
        );
    }
    let seconds = gaps(
        "* * * * * *",
        "Europe/Berlin",
        "2027-10-31T02:59:00+02:00",
        "2027-10-31T02:01:00+01:00",
    );
    assert_eq!(seconds.len(), 119);
    assert!(seconds.iter().all(|g| *g == 1));
}

#[test]
fn shanghai_has_no_transitions() {
    let s = Schedule::parse("0 30 2 * * *").unwrap();
    let fires = s.between(
        t("2026-12-31T00:00:00Z"),
        t("2028-01-01T00:00:00Z"),
        tz("Asia/Shanghai"),
        1000,
    );
    assert_eq!(fires.len(), 366);
    assert_eq!(fires[0], t("2027-01-01T02:30:00+08:00"));
    assert!(fires.windows(2).all(|w| (w[1] - w[0]).num_hours() == 24));
}

#[test]
fn five_six_fields_macros_and_every() {
    assert_eq!(
        next("30 2 * * *", "UTC", "2027-01-01T00:00:00Z", 1),
        next("0 30 2 * * *", "UTC", "2027-01-01T00:00:00Z", 1)
    );
    assert_eq!(
        next("@daily", "UTC", "2027-01-01T00:00:00Z", 2),
        ["2027-01-02T00:00:00+00:00", "2027-01-03T00:00:00+00:00"]
    );
    assert_eq!(
        next("@weekly", "UTC", "2027-01-01T00:00:00Z", 1),
        ["2027-01-03T00:00:00+00:00"]
    );
    assert_eq!(
        next("@every 30s", "UTC", "2027-01-01T00:00:10Z", 2),
        ["2027-01-01T00:00:30+00:00", "2027-01-01T00:01:00+00:00"]
    );
    // Day of month or weekday when both are given; names; Sunday as 7.
    assert_eq!(
        next("0 0 13 * FRI", "UTC", "2027-08-01T00:00:00Z", 3),
        [
            "2027-08-06T00:00:00+00:00",
            "2027-08-13T00:00:00+00:00",
            "2027-08-20T00:00:00+00:00"
        ]
    );
    assert_eq!(
        next("0 9 * JAN-FEB 7", "UTC", "2027-01-01T00:00:00Z", 1),
        ["2027-01-03T09:00:00+00:00"]
    );
    assert_eq!(
        next("0 12 * * 6-7", "UTC", "2027-01-01T00:00:00Z", 3),
        [
            "2027-01-02T12:00:00+00:00",
            "2027-01-03T12:00:00+00:00",
            "2027-01-09T12:00:00+00:00"
        ]
    );
    assert_eq!(
        next("0 0 29 2 *", "UTC", "2027-01-01T00:00:00Z", 1),
        ["2028-02-29T00:00:00+00:00"]
    );
    let once = Schedule::At(t("2027-01-01T00:00:00+08:00"));
    assert_eq!(
        once.next_after(t("2026-01-01T00:00:00Z"), tz("UTC")),
        Some(t("2026-12-31T16:00:00Z"))
    );
    assert_eq!(once.next_after(t("2027-01-01T00:00:00Z"), tz("UTC")), None);
}

#[test]
fn bad_expressions_say_why() {
    for (expr, why) in [
        ("* * *", "has 3 fields"),
        ("61 * * * *", "minute field: 61 is not within 0-59"),
        ("*/0 * * * *", "step must be at least 1"),
        ("0 0 30 2 *", "never matches"),
        ("0 0 5-1 * *", "runs backwards"),
        ("@fortnightly", "unknown @fortnightly"),
        ("@every soon", "@every"),
        ("@every 10ms", "at least 1s"),
        ("0 0 * * MOX", "weekday field"),
    ] {
        let err = Schedule::parse(expr).unwrap_err();
        assert!(err.contains(why), "{expr}: {err}");
    }
}

#[test]
fn latest_finds_the_most_recent_instant_after_a_long_downtime() {
    let s = Schedule::parse("* * * * * *").unwrap();
    let utc = tz("UTC");
    assert_eq!(
        s.latest(t("2027-01-01T00:00:00Z"), t("2027-01-08T00:00:00.5Z"), utc),
        Some(t("2027-01-08T00:00:00Z"))
    );
    let yearly = Schedule::parse("@yearly").unwrap();
    assert_eq!(
        yearly.latest(t("2025-06-01T00:00:00Z"), t("2027-06-01T00:00:00Z"), utc),
        Some(t("2027-01-01T00:00:00Z"))
    );
    assert_eq!(
        yearly.latest(t("2027-02-01T00:00:00Z"), t("2027-06-01T00:00:00Z"), utc),
        None
    );
}
