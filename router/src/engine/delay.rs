//! Delayed delivery per event: the CloudEvents extensions `deliverat` and `delay`.
//!
//! - `deliverat`: an RFC 3339 timestamp with a `Z` or numeric offset
//!   (`2027-01-01T02:30:00+08:00`, fractions of a second allowed). The event is
//!   delivered no earlier than that instant (rounded up to the millisecond).
//! - `delay`: a duration as `humantime` reads it, counted from when sluice accepts
//!   the event: a number and a unit, several of them summed (`90s`, `5m`,
//!   `1h30m`, `1h 30m`, `500ms`, `2days`). Units: `ms`, `s`, `m`, `h`, `d`, `w`
//!   and their long forms; no sign, no bare number (`90` is refused: seconds or
//!   milliseconds would be a guess).
//!
//! Both are strings (a binary-mode header is one anyway); giving both is refused
//! (which one wins would be a guess). A time in the past, or `0s`, means now. A
//! time further away than `server.max_delay` is refused, so a typo (a year too
//! far) does not sit in the store unseen. The due time is decided once, at
//! publish, and stored with the event (see [`crate::store::Queue::append_all`]),
//! so a restart does not move it; the extensions stay on the delivered event.

use cloudevents::event::ExtensionValue;

use crate::event::{Event, EventError};

/// The extension holding an absolute due time.
pub const DELIVER_AT: &str = "deliverat";
/// The extension holding a due time relative to acceptance.
pub const DELAY: &str = "delay";

/// When `event` is due, in ms since the epoch: `None` for now (no extension, or
/// a time not after `now_ms`). `Err` names the extension at fault.
pub(crate) fn due_ms(
    event: &Event,
    now_ms: u64,
    max_delay_ms: u64,
) -> Result<Option<u64>, EventError> {
    let at = text(event, DELIVER_AT)?;
    let delay = text(event, DELAY)?;
    let (field, due) = match (at, delay) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(EventError::new(
                DELAY,
                format!("give either {DELIVER_AT} or {DELAY}, not both"),
            ))
        }
        (Some(at), None) => (DELIVER_AT, parse_deliver_at(&at)?),
        (None, Some(delay)) => (DELAY, now_ms.saturating_add(parse_delay(&delay)?)),
    };
    if due <= now_ms {
        return Ok(None);
    }
    if due - now_ms > max_delay_ms {
        let max = humantime::format_duration(std::time::Duration::from_millis(max_delay_ms));
        return Err(EventError::new(
            field,
            format!("is further away than server.max_delay ({max})"),
        ));
    }
    Ok(Some(due))
}

/// The extension `name` as a string, if present.
fn text(event: &Event, name: &str) -> Result<Option<String>, EventError> {
    match event.extension(name) {
        None => Ok(None),
        Some(ExtensionValue::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(_) => Err(EventError::new(
            name,
            match name {
                DELIVER_AT => "must be an RFC 3339 timestamp string, e.g. 2027-01-01T02:30:00Z",
                _ => "must be a duration string, e.g. 90s, 5m or 1h30m",
            },
        )),
    }
}

/// An RFC 3339 timestamp as ms since the epoch, rounded up (never early).
fn parse_deliver_at(text: &str) -> Result<u64, EventError> {
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        EventError::new(
            DELIVER_AT,
            format!("{text:?} is not an RFC 3339 timestamp with an offset, e.g. 2027-01-01T02:30:00Z ({e})"),
        )
    })?;
    let ms = at.timestamp_millis();
    let exact = at.timestamp_subsec_nanos() % 1_000_000 == 0;
    let ms = if exact { ms } else { ms.saturating_add(1) };
    // Before the epoch is in the past: due now.
    Ok(u64::try_from(ms).unwrap_or(0))
}

/// A `delay` value in ms.
fn parse_delay(text: &str) -> Result<u64, EventError> {
    let bad = |why: String| {
        EventError::new(
            DELAY,
            format!("{text:?} is not a duration like 90s, 5m or 1h30m ({why})"),
        )
    };
    let d = humantime::parse_duration(text).map_err(|e| bad(e.to_string()))?;
    u64::try_from(d.as_millis()).map_err(|_| bad("too long".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFields;

    const MAX: u64 = 7 * 24 * 3600 * 1000;
    /// 2026-12-01T00:00:00Z
    const NOW: u64 = 1_796_083_200_000;

    fn event(ext: &[(&str, serde_json::Value)]) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "1")
            .attr("source", "/t")
            .attr("type", "t");
        for (k, v) in ext {
            f.attr(*k, v.clone());
        }
        f.build().unwrap()
    }

    fn due(ext: &[(&str, serde_json::Value)]) -> Result<Option<u64>, EventError> {
        due_ms(&event(ext), NOW, MAX)
    }

    #[test]
    fn delays_parse_as_humantime_durations() {
        assert_eq!(due(&[]), Ok(None));
        assert_eq!(due(&[(DELAY, "90s".into())]), Ok(Some(NOW + 90_000)));
        assert_eq!(due(&[(DELAY, "5m".into())]), Ok(Some(NOW + 300_000)));
        assert_eq!(due(&[(DELAY, "1h30m".into())]), Ok(Some(NOW + 5_400_000)));
        assert_eq!(due(&[(DELAY, "1h 30m".into())]), Ok(Some(NOW + 5_400_000)));
        assert_eq!(due(&[(DELAY, "250ms".into())]), Ok(Some(NOW + 250)));
        assert_eq!(due(&[(DELAY, "0s".into())]), Ok(None), "zero is now");
        assert_eq!(
            due(&[(DELAY, "7d".into())]),
            Ok(Some(NOW + MAX)),
            "the bound itself is fine"
        );
    }

    #[test]
    fn deliverat_parses_rfc3339_with_offsets_and_rounds_up() {
        let at = |s: &str| due(&[(DELIVER_AT, s.into())]);
        assert_eq!(at("2026-12-01T00:01:00Z"), Ok(Some(NOW + 60_000)));
        assert_eq!(at("2026-12-01T08:01:00+08:00"), Ok(Some(NOW + 60_000)));
        assert_eq!(
            at("2026-12-01T00:00:01.0001Z"),
            Ok(Some(NOW + 1_001)),
            "never early"
        );
        assert_eq!(at("2026-11-30T23:00:00Z"), Ok(None), "a past time is now");
        assert_eq!(at("1969-01-01T00:00:00Z"), Ok(None));
    }

    #[test]
    fn bad_values_name_the_extension() {
        let field = |r: Result<Option<u64>, EventError>| r.unwrap_err().field;
        for bad in ["soon", "90", "-5s", "5 parsecs", ""] {
            let e = due(&[(DELAY, bad.into())]).unwrap_err();
            assert_eq!(e.field, DELAY, "{bad}");
            assert!(e.message.contains("is not a duration like 90s"), "{e}");
        }
        for bad in ["tomorrow", "2026-12-01 00:01:00", "2026-12-01T00:01:00"] {
            let e = due(&[(DELIVER_AT, bad.into())]).unwrap_err();
            assert_eq!(e.field, DELIVER_AT, "{bad}");
            assert!(e.message.contains("RFC 3339"), "{e}");
        }
        assert_eq!(field(due(&[(DELAY, 90.into())])), DELAY);
        assert_eq!(field(due(&[(DELIVER_AT, true.into())])), DELIVER_AT);
        let both = due(&[
            (DELAY, "1s".into()),
            (DELIVER_AT, "2026-12-01T00:01:00Z".into()),
        ]);
        assert!(both.unwrap_err().message.contains("not both"));
    }

    #[test]
    fn further_than_max_delay_is_refused() {
        let e = due(&[(DELAY, "8d".into())]).unwrap_err();
        assert_eq!(e.field, DELAY);
        assert!(e.message.contains("server.max_delay (7days)"), "{e}");
        let e = due(&[(DELIVER_AT, "2027-12-01T00:00:00Z".into())]).unwrap_err();
        assert_eq!(e.field, DELIVER_AT);
    }
}
