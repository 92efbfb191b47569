//! The timer source's settings and their validation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{defaults, DurationString, SourceSpec, Validator};

use super::schedule::Schedule;

/// Fire events on a schedule: a cron expression, `@every`, a macro such as
/// `@daily`, or once (`at`). Each fire is a CloudEvent whose `time` is the
/// scheduled instant and whose `id` is the source name and that instant, so an
/// instant is never fired twice, across restarts too.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimerSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// When to fire: 6 cron fields, seconds first (`0 30 2 * * *`), or 5, minutes
    /// first (`*/15 * * * *`); `@every 30s`; `@yearly`, `@monthly`, `@weekly`,
    /// `@daily`, `@hourly`. Give this or `at`.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Fire once, at this RFC 3339 instant (`2027-01-01T00:00:00+08:00`). Give
    /// this or `schedule`.
    #[serde(default)]
    pub at: Option<String>,
    /// The IANA time zone the schedule's fields are read in (`Asia/Shanghai`).
    #[serde(default = "utc")]
    pub timezone: String,
    /// After sluice was down: `none` skips the instants it missed, `latest`
    /// fires the most recent one, `all` fires each (oldest first, those within
    /// `max_catch_up` of now).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// How far back `catch_up: all` goes.
    #[serde(default = "max_catch_up", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub max_catch_up: Duration,
    /// Fire up to this much later than the scheduled instant, at random, so many
    /// timers on the same instant spread their load (`time` stays the scheduled
    /// instant).
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub jitter: Duration,
    /// `type` of the events.
    #[serde(default = "event_type")]
    pub event_type: String,
    /// `source` of the events; `{name}` is replaced by the source's name.
    #[serde(default = "event_source")]
    pub event_source: String,
    /// `data` of each event (any YAML value); without it, `data` is
    /// `{"schedule": ..., "scheduled": <the instant>}`.
    #[serde(default)]
    pub data: Option<serde_json::Value>,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
}

/// What a timer does with the instants it missed while sluice was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Skip them.
    None,
    /// Fire the most recent one.
    #[default]
    Latest,
    /// Fire each, oldest first, within `max_catch_up`.
    All,
}

fn utc() -> String {
    "UTC".into()
}
fn max_catch_up() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn event_type() -> String {
    "sluice.timer.fired".into()
}
fn event_source() -> String {
    "sluice://timer/{name}".into()
}

/// A timer's schedule and zone, checked.
#[derive(Debug, Clone)]
pub struct Timetable {
    pub schedule: Schedule,
    pub tz: Tz,
}

/// Parse an IANA zone name.
pub fn zone(name: &str) -> Result<Tz, String> {
    name.parse::<Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)"))
}

impl TimerSourceConfig {
    /// The schedule (or one-time instant) and zone; each error with its key.
    pub fn timetable(&self) -> Result<Timetable, Vec<(&'static str, String)>> {
        let mut errors = Vec::new();
        let tz = zone(&self.timezone).map_err(|e| errors.push(("timezone", e)));
        let schedule = match (&self.schedule, &self.at) {
            (Some(s), None) => Schedule::parse(s).map_err(|e| errors.push(("schedule", e))),
            (None, Some(at)) => DateTime::parse_from_rfc3339(at)
                .map(|t| Schedule::At(t.with_timezone(&Utc)))
                .map_err(|e| {
                    errors.push((
                        "at",
                        format!("{at:?} is not an RFC 3339 instant with an offset: {e}"),
                    ))
                }),
            (Some(_), Some(_)) => {
                errors.push(("at", "give `schedule` or `at`, not both".into()));
                Err(())
            }
            (None, None) => {
                errors.push((
                    "schedule",
                    "give a `schedule` (cron, @every, @daily...) or a one-time `at`".into(),
                ));
                Err(())
            }
        };
        match (schedule, tz) {
            (Ok(schedule), Ok(tz)) => Ok(Timetable { schedule, tz }),
            _ => Err(errors),
        }
    }

    /// `source` of the events.
    pub fn source_attribute(&self) -> String {
        self.event_source.replace("{name}", &self.name)
    }
}

impl SourceSpec for TimerSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "timer"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        if let Err(errors) = self.timetable() {
            for (key, why) in errors {
                v.push(format!("{at}.{key}"), why);
            }
        }
        for (key, text) in [
            ("event_source", &self.event_source),
            ("event_type", &self.event_type),
        ] {
            if text.trim().is_empty() {
                v.push(format!("{at}.{key}"), "must not be empty");
            }
        }
        if self.catch_up == CatchUp::All && self.max_catch_up.is_zero() {
            v.push(
                format!("{at}.max_catch_up"),
                "must be more than 0s with catch_up: all (or use catch_up: none)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{load_with_env, SourceConfig};

    fn errors(text: &str) -> Vec<String> {
        load_with_env(text, &|_| None)
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    #[allow(irrefutable_let_patterns)] // with only the timer feature
    fn timer_config_parses_with_defaults() {
        let text = "sources:\n  - name: nightly\n    type: timer\n    schedule: \"0 30 2 * * *\"\n    timezone: Asia/Shanghai\n    data: { job: settle }\n";
        let config = load_with_env(text, &|_| None).unwrap().config;
        let SourceConfig::Timer(t) = &config.sources[0] else {
            panic!("a timer")
        };
        assert_eq!(t.catch_up, super::CatchUp::Latest);
        assert_eq!(t.source_attribute(), "sluice://timer/nightly");
        assert_eq!(t.data.as_ref().unwrap()["job"], "settle");
        assert!(t.timetable().is_ok());
    }

    #[test]
    fn timer_bad_expression_and_zone_are_errors_with_path_and_line() {
        let errs = errors(
            "sources:\n  - name: a\n    type: timer\n    schedule: \"61 * * * *\"\n    timezone: Mars/Olympus\n  - name: b\n    type: timer\n  - name: c\n    type: timer\n    at: tomorrow\n",
        );
        let expect = [
            "sources[0].schedule: minute field: 61 is not within 0-59 (line 4",
            "sources[0].timezone: \"Mars/Olympus\" is not an IANA time zone",
            "sources[1].schedule: give a `schedule`",
            "sources[2].at: \"tomorrow\" is not an RFC 3339 instant",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x.starts_with(e)), "{e:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }
}
