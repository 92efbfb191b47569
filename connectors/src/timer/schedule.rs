//! When a timer fires: cron expressions (6 fields with seconds first, or 5 with
//! minutes first), `@every <duration>`, the `@hourly`-style macros and one-time
//! instants, evaluated in an IANA time zone. Pure functions of their inputs (no
//! clock), so the daylight-saving rules are tested on fixed instants.
//!
//! Daylight saving time. A cron schedule with specific hours (`0 30 2 * * *`)
//! is a *fixed local time*: it fires once per matching local time and day. On a
//! spring-forward day a time inside the gap fires at the first valid instant
//! after the gap (02:30 becomes 03:00); on a fall-back day a time that occurs
//! twice fires once, at its first occurrence. A cron schedule whose hour field
//! is `*` (every hour: `*/15 * * * *`, `@hourly`) is *interval-like*: it fires at
//! every real instant whose local time matches, so both occurrences of a
//! repeated hour fire and a skipped hour fires nothing: every real interval
//! across both transitions, no burst and no extra gap. `@every` counts real time
//! from the Unix epoch, whatever the zone.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// How far ahead a cron expression is searched for its next match (a `29 2`
/// (February 29) on a Monday can be 28 years away; nothing sensible is further).
const SEARCH_DAYS: u32 = 366 * 30;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(Cron),
    /// Every this many milliseconds of real time, counted from the Unix epoch.
    Every(i64),
    /// Once.
    At(DateTime<Utc>),
}

/// A cron expression's fields as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days: u64,
    /// Bits 1..=12.
    months: u64,
    /// Bits 0..=6, Sunday is 0.
    weekdays: u64,
    /// Day of month / weekday given as `*` (or `?`): then only the other one counts.
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parse one field: `*`, `?`, `N`, `A-B`, each with an optional `/STEP`, or a
/// comma-separated list of them; names for months and weekdays.
fn field(text: &str, what: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + min);
        }
        let n: u32 = s
            .parse()
            .map_err(|_| format!("{what} field: {s:?} is not a number"))?;
        if n < min || n > max {
            return Err(format!("{what} field: {n} is not within {min}-{max}"));
        }
        Ok(n)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("{what} field: step {s:?} is not a number"))?;
                if step == 0 {
                    return Err(format!("{what} field: a step must be at least 1"));
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("{what} field: range {range} runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            (a, if step.is_some() { max } else { a })
        };
        let mut n = lo;
        while n <= hi {
            bits |= 1 << n;
            n += step.unwrap_or(1);
        }
    }
    Ok(bits)
}

/// Weekday 7 is Sunday too (`5-7` is Friday to Sunday).
fn sunday_is_7_too(bits: u64) -> u64 {
    if bits & 1 << 7 != 0 {
        (bits | 1) & !(1 << 7)
    } else {
        bits
    }
}

fn full(min: u32, max: u32) -> u64 {
    (min..=max).fold(0, |b, n| b | 1 << n)
}

/// The smallest member of `bits` at or above `from`.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let rest = bits >> from;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

impl Cron {
    /// Parse 6 fields (seconds first) or 5 (minutes first, second 0).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let parts: Vec<&str> = match parts.len() {
            5 => std::iter::once("0").chain(parts).collect(),
            6 => parts,
            n => {
                return Err(format!(
                    "has {n} fields; a cron expression has 6 (second minute hour day month weekday) or 5 (minute hour day month weekday)"
                ))
            }
        };
        let star = |s: &str| s.starts_with('*') || s.starts_with('?');
        Ok(Self {
            seconds: field(parts[0], "second", 0, 59, &[])?,
            minutes: field(parts[1], "minute", 0, 59, &[])?,
            hours: field(parts[2], "hour", 0, 23, &[])?,
            days: field(parts[3], "day", 1, 31, &[])?,
            months: field(parts[4], "month", 1, 12, &MONTHS)?,
            weekdays: sunday_is_7_too(field(parts[5], "weekday", 0, 7, &WEEKDAYS)?),
            days_any: star(parts[3]),
            weekdays_any: star(parts[5]),
        })
    }

    /// Every hour matches: the schedule is interval-like (see the module docs).
    fn interval_like(&self) -> bool {
        self.hours == full(0, 23)
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        use chrono::Datelike;
        if self.months & 1 << date.month() == 0 {
            return false;
        }
        let dom = self.days & 1 << date.day() != 0;
        let dow = self.weekdays & 1 << date.weekday().num_days_from_sunday() != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            // Both given: either matches (as in cron).
            (false, false) => dom || dow,
        }
    }

    /// The first matching second of the day at or after `from` (seconds since midnight).
    fn next_time(&self, from: u32) -> Option<u32> {
        let (h0, m0, s0) = (from / 3600, from / 60 % 60, from % 60);
        let mut h = next_bit(self.hours, h0)?;
        loop {
            let m_from = if h == h0 { m0 } else { 0 };
            let mut m = next_bit(self.minutes, m_from);
            while let Some(mm) = m {
                let s_from = if h == h0 && mm == m0 { s0 } else { 0 };
                if let Some(s) = next_bit(self.seconds, s_from) {
                    return Some(h * 3600 + mm * 60 + s);
                }
                m = next_bit(self.minutes, mm + 1);
            }
            h = next_bit(self.hours, h + 1)?;
        }
    }

    /// The first matching local date-time at or after `from` (whole seconds).
    fn next_naive(&self, from: NaiveDateTime) -> Option<NaiveDateTime> {
        use chrono::Timelike;
        let mut date = from.date();
        let mut secs = from.num_seconds_from_midnight() + u32::from(from.nanosecond() > 0);
        for _ in 0..SEARCH_DAYS {
            if self.day_matches(date) {
                if let Some(t) = self.next_time(secs.min(86_400)) {
                    return date.and_hms_opt(t / 3600, t / 60 % 60, t % 60);
                }
            }
            date = date.succ_opt()?;
            secs = 0;
        }
        None
    }
}

fn offset(tz: Tz, t: DateTime<Utc>) -> Duration {
    Duration::seconds(i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    ))
}

fn local(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.naive_utc() + offset(tz, t)
}

/// How much local time may run backwards near `t`: 0 when the offset is the same
/// 3 hours either side, else 3 hours (more than any transition).
fn margin(tz: Tz, t: DateTime<Utc>) -> Duration {
    let h = Duration::hours(3);
    if offset(tz, t - h) == offset(tz, t + h) {
        Duration::zero()
    } else {
        h
    }
}

/// The first instant whose local time is at or after `n`, for an `n` in a gap:
/// the end of the gap.
fn gap_end(tz: Tz, n: NaiveDateTime) -> DateTime<Utc> {
    let guess = n.and_utc().timestamp();
    let (mut lo, mut hi) = (guess - 27 * 3600, guess + 27 * 3600);
    let at = |s: i64| DateTime::from_timestamp(s, 0).unwrap_or_default();
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(tz, at(mid)) >= n {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    at(hi)
}

impl Schedule {
    /// `@every <duration>`, `@yearly`/`@annually`, `@monthly`, `@weekly`,
    /// `@daily`/`@midnight`, `@hourly`, or a cron expression.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(every) = text.strip_prefix("@every") {
            let d = humantime::parse_duration(every.trim())
                .map_err(|e| format!("@every {:?}: {e}", every.trim()))?;
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms < 1000 {
                return Err("@every needs at least 1s".into());
            }
            return Ok(Self::Every(ms));
        }
        let cron = match text {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            t if t.starts_with('@') => {
                return Err(format!(
                "unknown {t}; use @every <duration>, @yearly, @monthly, @weekly, @daily or @hourly"
            ))
            }
            t => t,
        };
        let cron = Cron::parse(cron)?;
        let start = NaiveDate::from_ymd_opt(2001, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
        if start.and_then(|s| cron.next_naive(s)).is_none() {
            return Err("never matches a date (e.g. February 30)".into());
        }
        Ok(Self::Cron(cron))
    }

    /// The first fire instant strictly after `after`, in zone `tz`; `None` when
    /// there is none (a one-time instant in the past).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match self {
            Self::At(t) => (*t > after).then_some(*t),
            Self::Every(ms) => {
                let now = after.timestamp_millis();
                let next = now.div_euclid(*ms).checked_add(1)?.checked_mul(*ms)?;
                DateTime::from_timestamp_millis(next)
            }
            Self::Cron(c) => c.next_after(after, tz),
        }
    }

    /// The fire instants in `(after, until]`, oldest first, at most `limit`.
    pub fn between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t, tz) {
                Some(n) if n <= until => {
                    out.push(n);
                    t = n;
                }
                _ => break,
            }
        }
        out
    }

    /// The last fire instant in `(after, until]`, if any.
    pub fn latest(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        tz: Tz,
    ) -> Option<DateTime<Utc>> {
        // Look back over growing windows, so a schedule that fires every second
        // after a week down is not walked through 600,000 instants.
        for days in [0, 1, 32, 367, 366 * 30] {
            let window = if days == 0 {
                Duration::minutes(2)
            } else {
                Duration::days(days)
            };
            let from = (until - window).max(after);
            let mut last = None;
            let mut t = from;
            while let Some(n) = self.next_after(t, tz).filter(|n| *n <= until) {
                last = Some(n);
                t = n;
            }
            if last.is_some() || from == after {
                return last;
            }
        }
        None
    }
}

impl Cron {
    fn resolve(&self, tz: Tz, n: NaiveDateTime, out: &mut Vec<DateTime<Utc>>) {
        out.clear();
        match tz.from_local_datetime(&n) {
            LocalResult::Single(t) => out.push(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                out.push(a.min(b));
                if self.interval_like() {
                    out.push(a.max(b));
                }
            }
            LocalResult::None => {
                if !self.interval_like() {
                    out.push(gap_end(tz, n));
                }
            }
        }
    }

    fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut from = local(tz, after) - margin(tz, after);
        let mut best: Option<DateTime<Utc>> = None;
        let mut stop: Option<NaiveDateTime> = None;
        let mut found = Vec::with_capacity(2);
        // Bounded: within a 3-hour margin a schedule fires at most 10,800 times.
        for _ in 0..50_000 {
            let Some(n) = self.next_naive(from) else {
                break;
            };
            if stop.is_some_and(|s| n > s) {
                break;
            }
            self.resolve(tz, n, &mut found);
            for &c in &found {
                if c > after && best.is_none_or(|b| c < b) {
                    best = Some(c);
                    stop = Some(local(tz, c) + margin(tz, c));
                }
            }
            from = n + Duration::seconds(1);
        }
        best
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
