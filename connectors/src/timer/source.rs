//! The timer source: sleeps until the next scheduled instant and publishes one
//! event for it.
//!
//! The last fired instant is a mark ([`SourceContext::publish_marked`]) written
//! in the same store commit as the event, so after a crash either both are
//! durable or neither is: an instant is never fired twice and, with
//! `catch_up: all`, never lost. The event's `id` is the source name and the
//! instant, so `server.dedupe_window` drops a copy too. On its very first start
//! a timer marks "now" (firing nothing), so the instants it misses during a
//! later downtime are known. Time is read from [`sluice_router::now_ms`], the
//! runtime's clock, which tests pause and advance.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use sluice_router::cloudevents::{EventBuilder, EventBuilderV10};
use sluice_router::event::Event;
use sluice_router::source::{Source, SourceContext, SourceError, SourceStatus};

use super::config::{CatchUp, TimerSourceConfig, Timetable};
use crate::{BuildSource, BuiltSource, ConnectorError};

/// The mark holding the last fired (or skipped) instant, in ms since the epoch.
const COVERED: &[u8] = b"covered";

/// Instants fired by one publish during catch-up.
const CATCH_UP_BATCH: usize = 500;

/// `catch_up: all` fires at most this many instants.
pub const MAX_CATCH_UP_EVENTS: usize = 100_000;

/// A wait longer than this is taken in steps, so a timer never oversleeps a
/// clock that moved.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The first and the longest wait before publishing again after a store error.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// A configured timer.
pub struct TimerSource {
    config: TimerSourceConfig,
    table: Timetable,
    status: Arc<Status>,
}

fn at_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn now() -> DateTime<Utc> {
    at_ms(i64::try_from(sluice_router::now_ms()).unwrap_or(i64::MAX))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The instants to fire on start, oldest first: those in `(covered, now]` that
/// `mode` keeps.
pub fn catch_up(
    table: &Timetable,
    covered: DateTime<Utc>,
    now: DateTime<Utc>,
    mode: CatchUp,
    max: Duration,
) -> Vec<DateTime<Utc>> {
    match mode {
        CatchUp::None => Vec::new(),
        CatchUp::Latest => table
            .schedule
            .latest(covered, now, table.tz)
            .into_iter()
            .collect(),
        CatchUp::All => {
            let max = chrono::Duration::from_std(max).unwrap_or(chrono::Duration::MAX);
            let from = now.checked_sub_signed(max).unwrap_or(covered).max(covered);
            // An instant exactly `max` ago still counts.
            let from = if from > covered {
                from - chrono::Duration::milliseconds(1)
            } else {
                from
            };
            table
                .schedule
                .between(from, now, table.tz, MAX_CATCH_UP_EVENTS)
        }
    }
}

impl TimerSource {
    pub fn new(config: &TimerSourceConfig, table: Timetable) -> Self {
        Self {
            status: Arc::new(Status::default()),
            config: config.clone(),
            table,
        }
    }

    /// The event for the scheduled instant `t`.
    pub fn event(&self, t: DateTime<Utc>) -> Result<Event, String> {
        let c = &self.config;
        let data = c.data.clone().unwrap_or_else(|| {
            json!({
                "schedule": c.schedule.clone().or_else(|| c.at.clone()),
                "timezone": c.timezone,
                "scheduled": rfc3339(t),
            })
        });
        EventBuilderV10::new()
            .id(format!("{}@{}", c.name, rfc3339(t)))
            .source(c.source_attribute())
            .ty(c.event_type.clone())
            .time(t)
            .data("application/json", data)
            .build()
            .map_err(|e| e.to_string())
    }

    /// Publish the events of `instants` with the last one as the mark, retrying
    /// until it is durable; `false` on shutdown.
    async fn fire(&self, instants: &[DateTime<Utc>], cx: &SourceContext) -> bool {
        let Some(last) = instants.last() else {
            return true;
        };
        let mut events = Vec::with_capacity(instants.len());
        for &t in instants {
            match self.event(t) {
                Ok(e) => events.push(e),
                // Only a configured attribute can be wrong; validate checks them.
                Err(why) => {
                    tracing::error!(source = %cx.name(), error = %why, "Timer event is invalid.")
                }
            }
        }
        let mark = [(COVERED.to_vec(), last.timestamp_millis())];
        let mut wait = RETRY_FIRST;
        loop {
            match cx.publish_marked(&events, &mark).await {
                Ok(_) => {
                    self.status.fired(*last, instants.len());
                    return true;
                }
                Err(e) => {
                    tracing::warn!(source = %cx.name(), error = %e, "Timer could not publish; retrying.");
                    self.status.failed(e.to_string());
                }
            }
            tokio::select! {
                () = cx.shutdown().cancelled() => return false,
                () = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }

    /// Wait until `t` (plus jitter); `false` on shutdown.
    async fn sleep_until(&self, t: DateTime<Utc>, cx: &SourceContext) -> bool {
        let due = t
            .timestamp_millis()
            .saturating_add(jitter_ms(self.config.jitter));
        loop {
            let left = due - now().timestamp_millis();
            if left <= 0 {
                return true;
            }
            let step = Duration::from_millis(left as u64).min(MAX_SLEEP);
            tokio::select! {
                () = cx.shutdown().cancelled() => return false,
                () = tokio::time::sleep(step) => {}
            }
        }
    }
}

/// A delay drawn uniformly from `0..=max` (whole ms): fires of many timers on one
/// schedule spread out instead of calling their targets in the same instant.
fn jitter_ms(max: Duration) -> i64 {
    let max = max.as_millis() as u64;
    if max == 0 {
        return 0;
    }
    (uuid::Uuid::new_v4().as_u128() % u128::from(max + 1)) as i64
}

#[async_trait]
impl Source for TimerSource {
    async fn run(self: Box<Self>, cx: SourceContext) -> Result<(), SourceError> {
        cx.report(self.status.clone());
        let error = |message: String| SourceError {
            source_name: cx.name().to_owned(),
            message,
            class: sluice_router::error::ErrorClass::Transient,
        };
        let covered = cx
            .mark(COVERED)
            .map_err(|e| error(format!("reading the last fired instant: {e}")))?;
        let start = now();
        let mut cursor = match covered {
            Some(ms) => {
                let covered = at_ms(ms);
                let missed = catch_up(
                    &self.table,
                    covered,
                    start,
                    self.config.catch_up,
                    self.config.max_catch_up,
                );
                if !missed.is_empty() {
                    tracing::info!(source = %cx.name(), missed = missed.len(), "Timer catches up.");
                }
                for chunk in missed.chunks(CATCH_UP_BATCH) {
                    if !self.fire(chunk, &cx).await {
                        return Ok(());
                    }
                }
                covered.max(start)
            }
            None => {
                // First start: from now on, a missed instant is known as missed.
                let mark = [(COVERED.to_vec(), start.timestamp_millis())];
                cx.publish_marked(&[], &mark)
                    .await
                    .map_err(|e| error(format!("marking the first start: {e}")))?;
                start
            }
        };
        loop {
            let Some(next) = self.table.schedule.next_after(cursor, self.table.tz) else {
                self.status.next(None);
                cx.shutdown().cancelled().await;
                return Ok(());
            };
            self.status.next(Some(next));
            if !self.sleep_until(next, &cx).await || !self.fire(&[next], &cx).await {
                return Ok(());
            }
            cursor = next;
        }
    }
}

impl BuildSource for TimerSourceConfig {
    fn build(&self, _cx: &SourceContext) -> Result<BuiltSource, ConnectorError> {
        let table = self.timetable().map_err(|errors| {
            ConnectorError::config(
                errors
                    .iter()
                    .map(|(k, e)| format!("{k}: {e}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        Ok(BuiltSource::task(Box::new(TimerSource::new(self, table))))
    }
}

/// What `GET /api/sources/{name}` shows of a timer.
#[derive(Default)]
struct Status(Mutex<State>);

#[derive(Default)]
struct State {
    next: Option<DateTime<Utc>>,
    last_fired: Option<DateTime<Utc>>,
    fired: u64,
    error: Option<String>,
}

impl Status {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Plain data; a panic while it was held leaves it usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn next(&self, t: Option<DateTime<Utc>>) {
        self.state().next = t;
    }
    fn fired(&self, t: DateTime<Utc>, n: usize) {
        let mut s = self.state();
        s.last_fired = Some(t);
        s.fired += n as u64;
        s.error = None;
    }
    fn failed(&self, why: String) {
        self.state().error = Some(why);
    }
}

impl SourceStatus for Status {
    fn status(&self) -> Value {
        let s = self.state();
        json!({
            "next": s.next.map(rfc3339),
            "last_fired": s.last_fired.map(rfc3339),
            "fired": s.fired,
            "error": s.error,
        })
    }
    fn not_ready(&self) -> Option<String> {
        self.state()
            .error
            .as_ref()
            .map(|e| format!("cannot publish: {e}"))
    }
}

#[cfg(test)]
mod jitter_tests {
    use super::*;

    #[test]
    fn jitter_is_never_negative_never_past_its_bound_and_spreads() {
        assert_eq!(jitter_ms(Duration::ZERO), 0);
        let draws: Vec<i64> = (0..2000)
            .map(|_| jitter_ms(Duration::from_millis(1000)))
            .collect();
        assert!(draws.iter().all(|&d| (0..=1000).contains(&d)));
        // Spread over the range, not bunched: each quarter drawn from.
        for q in 0..4 {
            assert!(
                draws.iter().any(|&d| d / 250 == q),
                "quarter {q} never drawn"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timer::schedule::Schedule;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn daily() -> Timetable {
        Timetable {
            schedule: Schedule::parse("0 0 2 * * *").unwrap(),
            tz: "UTC".parse().unwrap(),
        }
    }

    #[test]
    fn catch_up_modes_after_two_days_down() {
        let table = daily();
        // Last fired on the 1st at 02:00; back on the 4th at 03:00.
        let covered = t("2027-01-01T02:00:00Z");
        let now = t("2027-01-04T03:00:00Z");
        let day = Duration::from_secs(86_400);
        assert!(catch_up(&table, covered, now, CatchUp::None, day).is_empty());
        assert_eq!(
            catch_up(&table, covered, now, CatchUp::Latest, day),
            [t("2027-01-04T02:00:00Z")]
        );
        assert_eq!(
            catch_up(&table, covered, now, CatchUp::All, day * 7),
            [
                t("2027-01-02T02:00:00Z"),
                t("2027-01-03T02:00:00Z"),
                t("2027-01-04T02:00:00Z")
            ]
        );
        // Bounded by max_catch_up (an instant exactly that old still counts).
        assert_eq!(
            catch_up(
                &table,
                covered,
                now,
                CatchUp::All,
                day + Duration::from_secs(3600)
            ),
            [t("2027-01-03T02:00:00Z"), t("2027-01-04T02:00:00Z")]
        );
        // Nothing missed: nothing fired, whatever the mode.
        for mode in [CatchUp::None, CatchUp::Latest, CatchUp::All] {
            let now = t("2027-01-02T01:00:00Z");
            assert!(catch_up(&table, covered, now, mode, day).is_empty());
        }
    }

    #[test]
    fn timer_event_has_the_scheduled_time_and_a_deterministic_id() {
        use sluice_router::cloudevents::AttributesReader;
        let config: TimerSourceConfig = serde_yaml::from_str(
            "name: nightly\nschedule: \"0 30 2 * * *\"\ntimezone: Asia/Shanghai\nevent_type: com.example.settlement.due\ndata: { job: settle }\n",
        )
        .unwrap();
        let table = config.timetable().unwrap();
        let timer = TimerSource::new(&config, table);
        let at = t("2027-01-01T02:30:00+08:00");
        let e = timer.event(at).unwrap();
        assert_eq!(e.id(), "nightly@2026-12-31T18:30:00Z");
        assert_eq!(e.ty(), "com.example.settlement.due");
        assert_eq!(e.source().to_string(), "sluice://timer/nightly");
        assert_eq!(e.time(), Some(&at));
        assert_eq!(timer.event(at).unwrap().id(), e.id());
    }

    /// A timer on a real engine, on paused time: it fires each hour, and after
    /// five hours down it catches up per `catch_up`, from a mark that outlived
    /// `server.dedupe_window`.
    #[tokio::test(start_paused = true)]
    async fn timer_catches_up_after_downtime_on_paused_time() {
        use sluice_router::engine::Engine;
        use tokio_util::sync::CancellationToken;

        for (mode, missed) in [("all", 5), ("latest", 1), ("none", 0)] {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                "server: {{ data_dir: {}, dedupe_window: 1s }}\ntargets: [{{ name: t, type: discard }}]\nrules: [{{ name: r, targets: [t] }}]\n",
                dir.path().display()
            );
            let engine = Engine::open(&crate::load(&text).unwrap()).unwrap();
            let config: TimerSourceConfig = serde_yaml::from_str(&format!(
                "name: hourly\nschedule: \"@every 1h\"\ncatch_up: {mode}\n"
            ))
            .unwrap();
            let run = |hours: u64| {
                let engine = engine.clone();
                let config = config.clone();
                async move {
                    let shutdown = CancellationToken::new();
                    let cx = engine
                        .source("hourly", "default", shutdown.clone())
                        .unwrap();
                    let timer = TimerSource::new(&config, config.timetable().unwrap());
                    let status = timer.status.clone();
                    let task = tokio::spawn(Box::new(timer).run(cx.clone()));
                    tokio::time::sleep(Duration::from_secs(hours * 3600 + 1)).await;
                    shutdown.cancel();
                    task.await.unwrap().unwrap();
                    (
                        status.status()["fired"].as_u64().unwrap(),
                        cx.mark(COVERED).unwrap(),
                    )
                }
            };
            // A whole hour so the instants are not at the edge of the run.
            let start = sluice_router::now_ms() as i64;
            tokio::time::sleep(Duration::from_millis(
                (3_600_000 - start.rem_euclid(3_600_000) + 1_800_000) as u64,
            ))
            .await;
            let (fired, mark) = run(3).await;
            assert_eq!(fired, 3, "{mode}");
            let last = mark.unwrap();
            assert_eq!(last % 3_600_000, 0);
            assert!(now().timestamp_millis() - last < 3_600_000);
            // Down for five hours, then up for a second.
            tokio::time::sleep(Duration::from_secs(5 * 3600)).await;
            let (fired, mark) = run(0).await;
            assert_eq!(fired, missed, "{mode}");
            let expect = if missed == 0 {
                last
            } else {
                last + 5 * 3_600_000
            };
            assert_eq!(mark, Some(expect), "{mode}");
        }
    }
}
