//! Repeated log lines said once, with a count.
//!
//! A broker that is down makes its client report the same failure many times a
//! second (a reconnect, a failed fetch, a failed commit for each partition). A log
//! that scrolls with the same line hides everything else, so connectors pass such
//! lines through a [`Throttle`]: the first occurrence of a message is logged at
//! once; the same message again within the interval is only counted, and the
//! count is logged with its next occurrence after the interval, or by
//! [`Throttle::flush`] when it stops recurring. Messages that differ only in
//! numbers (offsets, milliseconds, counts) count as the same message.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the same message is counted instead of logged.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// The severity a throttled line is logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
}

struct Seen {
    /// When the message was last logged.
    logged: Instant,
    /// Occurrences since then that were only counted.
    suppressed: u64,
    level: Level,
    message: String,
}

/// Whose messages a throttle counts: the field its lines carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Source(String),
    Target(String),
}

/// Counts repeats of log messages; see the module docs.
pub struct Throttle {
    who: Who,
    interval: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

/// The key repeats are counted under: `message` without its parenthesized parts
/// (clients put delays and "N identical errors suppressed" there) and with every
/// run of digits as `#`, so the same failure at other offsets or after other
/// delays is the same message.
fn shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut depth = 0usize;
    let mut in_digits = false;
    for c in message.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ if depth > 0 => {}
            c if c.is_ascii_digit() => {
                if !in_digits {
                    out.push('#');
                }
                in_digits = true;
                continue;
            }
            c => out.push(c),
        }
        in_digits = false;
    }
    out
}

impl Throttle {
    /// A throttle for the lines of `who`, counting repeats for [`DEFAULT_INTERVAL`].
    pub fn new(who: Who) -> Self {
        Self::with_interval(who, DEFAULT_INTERVAL)
    }

    pub fn with_interval(who: Who, interval: Duration) -> Self {
        Self {
            who,
            interval,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Log `message` at `level`, unless the same message was logged within the
    /// interval: then only count it.
    pub fn log(&self, level: Level, message: &str) {
        if let Some(repeated) = self.admit(level, message, Instant::now()) {
            emit(&self.who, level, message, repeated);
        }
    }

    /// Whether to log `message` now, and how many repeats went unlogged before it.
    fn admit(&self, level: Level, message: &str, now: Instant) -> Option<u64> {
        let Ok(mut seen) = self.seen.lock() else {
            // A panic elsewhere poisoned the map; never lose a line over it.
            return Some(0);
        };
        let key = shape(message);
        match seen.get_mut(&key) {
            Some(s) if now.duration_since(s.logged) < self.interval => {
                s.suppressed += 1;
                s.message = message.to_owned();
                None
            }
            Some(s) => {
                let repeated = s.suppressed;
                s.logged = now;
                s.suppressed = 0;
                Some(repeated)
            }
            None => {
                seen.insert(
                    key,
                    Seen {
                        logged: now,
                        suppressed: 0,
                        level,
                        message: message.to_owned(),
                    },
                );
                Some(0)
            }
        }
    }

    /// Log the count of every message that repeated but has not recurred since its
    /// interval ran out, and forget messages that went quiet. Call it now and then
    /// (connectors do it from their status refresh).
    pub fn flush(&self) {
        for (level, message, repeated) in self.due(Instant::now()) {
            emit(&self.who, level, &message, repeated);
        }
    }

    fn due(&self, now: Instant) -> Vec<(Level, String, u64)> {
        let Ok(mut seen) = self.seen.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        seen.retain(|_, s| {
            if now.duration_since(s.logged) < self.interval {
                return true;
            }
            if s.suppressed > 0 {
                out.push((s.level, s.message.clone(), s.suppressed));
                s.logged = now;
                s.suppressed = 0;
                return true;
            }
            false
        });
        out
    }
}

fn emit(who: &Who, level: Level, message: &str, repeated: u64) {
    // `repeated` only when there were repeats; one macro call per level and field.
    macro_rules! line {
        ($mac:ident) => {
            match (who, repeated) {
                (Who::Source(name), 0) => tracing::$mac!(source = %name, "{message}"),
                (Who::Source(name), n) => tracing::$mac!(source = %name, repeated = n, "{message}"),
                (Who::Target(name), 0) => tracing::$mac!(target = %name, "{message}"),
                (Who::Target(name), n) => {
                    tracing::$mac!(target = %name, repeated = n, "{message}")
                }
            }
        };
    }
    match level {
        Level::Error => line!(error),
        Level::Warn => line!(warn),
        Level::Info => line!(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_message_is_logged_once_per_interval_with_its_count() {
        let t = Throttle::with_interval(Who::Source("s".into()), Duration::from_secs(30));
        let start = Instant::now();
        let msg = |ms: u64| {
            let suppressed = if ms.is_multiple_of(2) {
                ", 3 identical error(s) suppressed"
            } else {
                ""
            };
            format!(
                "Connect to 127.0.0.1:{} failed (after {ms}ms{suppressed})",
                9092
            )
        };
        assert_eq!(t.admit(Level::Warn, &msg(1), start), Some(0));
        for i in 0..449 {
            let at = start + Duration::from_millis(60 * i);
            assert_eq!(t.admit(Level::Warn, &msg(i), at), None, "same shape");
        }
        // Another message is not held back by the first.
        assert_eq!(t.admit(Level::Warn, "Commit failed", start), Some(0));
        // Past the interval the next one is logged with the count.
        let later = start + Duration::from_secs(31);
        assert_eq!(t.admit(Level::Warn, &msg(7), later), Some(449));
        assert_eq!(t.admit(Level::Warn, &msg(8), later), None);
    }

    #[test]
    fn flush_reports_repeats_of_a_message_that_stopped_and_forgets_quiet_ones() {
        let t = Throttle::with_interval(Who::Source("s".into()), Duration::from_secs(30));
        let start = Instant::now();
        t.admit(Level::Error, "broker down", start);
        t.admit(Level::Error, "broker down", start + Duration::from_secs(1));
        t.admit(Level::Error, "broker down", start + Duration::from_secs(2));
        t.admit(Level::Warn, "once", start);
        assert!(t.due(start + Duration::from_secs(10)).is_empty());
        let due = t.due(start + Duration::from_secs(31));
        assert_eq!(due, [(Level::Error, "broker down".to_owned(), 2)]);
        // Both went quiet: nothing more, and both are forgotten.
        assert!(t.due(start + Duration::from_secs(70)).is_empty());
        assert_eq!(t.seen.lock().unwrap().len(), 0);
        assert_eq!(
            t.admit(Level::Warn, "once", start + Duration::from_secs(71)),
            Some(0)
        );
    }
}
