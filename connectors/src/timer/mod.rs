//! Timers: a source that fires a CloudEvent on a cron schedule, an interval or
//! once, in an IANA time zone, daylight-saving correct (see [`schedule`]), with
//! a durable last fired instant and catch-up after downtime (see [`source`]).

pub mod config;
pub mod schedule;
pub mod source;

pub use source::TimerSource;
