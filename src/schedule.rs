//! `sluice schedule`: the next fire instants of a timer's schedule, so a user
//! sees when it fires (daylight-saving transitions included) before deploying it.

use chrono::{DateTime, SecondsFormat, Utc};
use sluice_connectors::timer::config::zone;
use sluice_connectors::timer::schedule::Schedule;

/// Output format of the instants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One RFC 3339 instant a line.
    Text,
    /// A JSON array of RFC 3339 strings.
    Json,
}

/// The next `count` instants of `cron` in zone `tz` after `from` (default now),
/// formatted; an error names the bad argument.
pub fn run(
    cron: &str,
    tz: &str,
    from: Option<&str>,
    count: usize,
    format: Format,
) -> Result<String, String> {
    let schedule = Schedule::parse(cron).map_err(|e| format!("--cron {cron:?}: {e}"))?;
    let zone = zone(tz).map_err(|e| format!("--tz: {e}"))?;
    let mut at = match from {
        Some(f) => DateTime::parse_from_rfc3339(f)
            .map_err(|e| format!("--from {f:?} is not an RFC 3339 instant: {e}"))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut instants = Vec::with_capacity(count);
    while instants.len() < count {
        let Some(next) = schedule.next_after(at, zone) else {
            break;
        };
        instants.push(
            next.with_timezone(&zone)
                .to_rfc3339_opts(SecondsFormat::AutoSi, false),
        );
        at = next;
    }
    Ok(match format {
        Format::Text => instants.iter().map(|i| format!("{i}\n")).collect(),
        Format::Json => format!(
            "{}\n",
            serde_json::to_string(&instants).map_err(|e| e.to_string())?
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_prints_instants_in_the_zone() {
        let text = run(
            "0 30 2 * * *",
            "America/New_York",
            Some("2027-03-13T00:00:00-05:00"),
            2,
            Format::Text,
        )
        .unwrap();
        assert_eq!(
            text,
            "2027-03-13T02:30:00-05:00\n2027-03-14T03:00:00-04:00\n"
        );
        let json = run(
            "@daily",
            "UTC",
            Some("2027-01-01T00:00:00Z"),
            1,
            Format::Json,
        )
        .unwrap();
        assert_eq!(json, "[\"2027-01-02T00:00:00+00:00\"]\n");
        assert!(run("* *", "UTC", None, 1, Format::Text)
            .unwrap_err()
            .starts_with("--cron"));
        assert!(run("@daily", "Nowhere/City", None, 1, Format::Text)
            .unwrap_err()
            .starts_with("--tz"));
    }
}
