//! sluice's own events on bus `system` (see docs/system-events.md).
//!
//! One watcher task looks every second at what the engine already keeps (each
//! subscription's depth and dead-letter total, each target's readiness, each
//! source's reported status), compares it with what it saw last, and publishes
//! the transitions as CloudEvents on bus `system`, where rules route them like
//! any event. Start and stop are published directly. A transition is one event:
//! a backlog crossing its threshold (with hysteresis: it recovers at half),
//! a target or source going down or coming back; dead letters are summarised, at
//! most one event per subscription per `dead_letter_interval`, with the count
//! since the last one. So a storm of failures is a handful of events, never one
//! per dead letter.
//!
//! No loops: subscriptions of bus `system` (those delivering system events) are
//! not watched, so a failing ops target cannot feed itself events about itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{Engine, Replays};
use crate::config::SystemEventsConfig;
use crate::event::{Event, EventFields, RawData};
use crate::now_ms;

/// The bus system events go to.
pub const SYSTEM_BUS: &str = "system";

/// The name system events are published under (metrics label).
const SOURCE: &str = "sluice";

/// How often the watcher looks.
const TICK: Duration = Duration::from_secs(1);

/// Publishes sluice's own events. Cheap to clone.
#[derive(Clone)]
pub struct SystemEvents {
    engine: Arc<Engine>,
    config: SystemEventsConfig,
    /// `sluice://<name>`.
    source: String,
    /// Numbers the events of this process (ids are `<start ms>-<n>`).
    next: Arc<AtomicU64>,
    started_ms: u64,
}

/// One published transition: type suffix after `sluice.`, subject, data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Notice {
    pub(crate) ty: &'static str,
    pub(crate) subject: String,
    pub(crate) data: Value,
}

/// What the watcher sees of one subscription.
pub(crate) struct SubView {
    pub(crate) name: String,
    pub(crate) bus: String,
    pub(crate) target: String,
    pub(crate) depth: u64,
    pub(crate) dead_lettered_total: u64,
    /// Its breaker's changes so far, if its target has one.
    pub(crate) breaker: Option<BreakerView>,
}

/// What the watcher sees of a subscription's circuit breaker.
#[derive(Clone, Default)]
pub(crate) struct BreakerView {
    /// Times it opened (from closed) and closed (after a probe) since start.
    pub(crate) opened: u64,
    pub(crate) closed: u64,
    /// The error that last opened it.
    pub(crate) reason: Option<String>,
    pub(crate) failures: u32,
    pub(crate) cooldown: Duration,
}

/// Everything the watcher compares between two looks.
#[derive(Default)]
pub(crate) struct View {
    pub(crate) subs: Vec<SubView>,
    /// Per target checked at least once: why it cannot take events (`None`: it can).
    pub(crate) targets: BTreeMap<String, Option<String>>,
    /// Per source that reported a status: why it cannot bring events in.
    pub(crate) sources: BTreeMap<String, Option<String>>,
}

#[derive(Default)]
struct SubState {
    high: bool,
    /// Dead letters already summarised (or there at start).
    reported: u64,
    last_summary_ms: Option<u64>,
    /// Breaker openings and closings already published.
    breaker_opened: u64,
    breaker_closed: u64,
}

/// What the watcher saw last.
pub(crate) struct Seen {
    threshold: u64,
    interval_ms: u64,
    subs: BTreeMap<String, SubState>,
    targets: BTreeMap<String, Option<String>>,
    sources: BTreeMap<String, Option<String>>,
}

impl Seen {
    /// Start from `view` as it is: what is there at start is not news, except a
    /// backlog already over the threshold, a target or source already down.
    pub(crate) fn new(threshold: u64, interval: Duration, view: &View) -> Self {
        let subs = view
            .subs
            .iter()
            .map(|s| {
                let breaker = s.breaker.clone().unwrap_or_default();
                let state = SubState {
                    reported: s.dead_lettered_total,
                    breaker_opened: breaker.opened,
                    breaker_closed: breaker.closed,
                    ..SubState::default()
                };
                (s.name.clone(), state)
            })
            .collect();
        Self {
            threshold,
            interval_ms: interval.as_millis() as u64,
            subs,
            targets: BTreeMap::new(),
            sources: BTreeMap::new(),
        }
    }

    /// The transitions from what was seen to `view`; `reason` gives the newest
    /// dead letter's reason of a subscription, asked only when there is news.
    pub(crate) fn step(
        &mut self,
        view: &View,
        now: u64,
        reason: impl Fn(&str) -> Option<String>,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        for sub in view.subs.iter().filter(|s| s.bus != SYSTEM_BUS) {
            let state = self.subs.entry(sub.name.clone()).or_default();
            let about = |depth| {
                json!({"subscription": sub.name, "bus": sub.bus, "target": sub.target,
                       "depth": depth, "threshold": self.threshold})
            };
            if !state.high && sub.depth >= self.threshold {
                state.high = true;
                out.push(notice(
                    "subscription.backlog_high",
                    &sub.name,
                    about(sub.depth),
                ));
            } else if state.high && sub.depth <= self.threshold / 2 {
                state.high = false;
                out.push(notice(
                    "subscription.backlog_recovered",
                    &sub.name,
                    about(sub.depth),
                ));
            }
            let new = sub.dead_lettered_total.saturating_sub(state.reported);
            let due = state
                .last_summary_ms
                .is_none_or(|at| now.saturating_sub(at) >= self.interval_ms);
            if new > 0 && due {
                state.reported = sub.dead_lettered_total;
                state.last_summary_ms = Some(now);
                let data = json!({"subscription": sub.name, "bus": sub.bus, "target": sub.target,
                    "count": new, "total": sub.dead_lettered_total, "last_reason": reason(&sub.name)});
                out.push(notice("subscription.dead_lettered", &sub.name, data));
            }
            if let Some(b) = &sub.breaker {
                breaker_notices(state, sub, b, &mut out);
            }
        }
        let changes = [
            (
                transitions(&mut self.targets, &view.targets),
                "target",
                ["target.ready", "target.unready"],
            ),
            (
                transitions(&mut self.sources, &view.sources),
                "source",
                ["source.reconnected", "source.disconnected"],
            ),
        ];
        for (changed, thing, types) in changes {
            for (name, down, reason) in changed {
                let data = json!({ thing: name, "reason": reason });
                out.push(notice(types[usize::from(down)], &name, data));
            }
        }
        out
    }
}

/// The openings and closings of a breaker since the last look, one event each,
/// in the order they alternate (a failed probe is no new opening).
fn breaker_notices(state: &mut SubState, sub: &SubView, b: &BreakerView, out: &mut Vec<Notice>) {
    let mut open = state.breaker_opened > state.breaker_closed;
    let mut pending = (b.opened - state.breaker_opened.min(b.opened))
        + (b.closed - state.breaker_closed.min(b.closed));
    while pending > 0 {
        let data = if open {
            json!({"subscription": sub.name, "bus": sub.bus, "target": sub.target})
        } else {
            json!({"subscription": sub.name, "bus": sub.bus, "target": sub.target,
                   "failures": b.failures, "cooldown": humantime::format_duration(b.cooldown).to_string(),
                   "reason": b.reason})
        };
        let ty = if open {
            "subscription.breaker_closed"
        } else {
            "subscription.breaker_opened"
        };
        out.push(notice(ty, &sub.name, data));
        open = !open;
        pending -= 1;
    }
    state.breaker_opened = b.opened;
    state.breaker_closed = b.closed;
}

fn notice(ty: &'static str, subject: &str, data: Value) -> Notice {
    Notice {
        ty,
        subject: subject.to_owned(),
        data,
    }
}

/// (name, went down, reason) for each that changed between up and down. The
/// first look at one counts only if it is down (up is the normal start).
fn transitions(
    seen: &mut BTreeMap<String, Option<String>>,
    now: &BTreeMap<String, Option<String>>,
) -> Vec<(String, bool, Option<String>)> {
    let mut out = Vec::new();
    for (name, state) in now {
        let before = seen.insert(name.clone(), state.clone());
        let was_down = before.as_ref().map(Option::is_some);
        match (was_down, state.is_some()) {
            (None, true) | (Some(false), true) => out.push((name.clone(), true, state.clone())),
            (Some(true), false) => out.push((name.clone(), false, None)),
            _ => {}
        }
    }
    out
}

impl Engine {
    /// sluice's own events, if `server.system_events.enabled`.
    pub fn system_events(self: &Arc<Self>) -> Option<SystemEvents> {
        let config = self.server.system_events.clone();
        if !config.enabled {
            return None;
        }
        let name = node_name(&self.server);
        Some(SystemEvents {
            engine: self.clone(),
            config,
            source: format!("sluice://{name}"),
            next: Arc::new(AtomicU64::new(0)),
            started_ms: now_ms(),
        })
    }

    /// What the system-event watcher looks at.
    fn system_view(&self) -> View {
        let mut view = View::default();
        for sub in &self.subscriptions {
            if sub.bus == SYSTEM_BUS {
                continue;
            }
            let stats = sub.queue.stats();
            view.subs.push(SubView {
                name: sub.name.clone(),
                bus: sub.bus.clone(),
                target: sub.target.clone(),
                depth: stats.depth,
                dead_lettered_total: stats.dead_lettered_total,
                breaker: sub.breaker.as_ref().map(|b| {
                    let (opened, closed, reason) = b.changes();
                    BreakerView {
                        opened,
                        closed,
                        reason,
                        failures: b.config().failures,
                        cooldown: b.config().cooldown,
                    }
                }),
            });
            if sub.checked.load(Ordering::Relaxed) {
                // A target shared by subscriptions is down if any of them finds it so.
                let reason = view.targets.entry(sub.target.clone()).or_default();
                if reason.is_none() {
                    *reason = sub.not_ready();
                }
            }
        }
        let reported: Vec<String> = self.statuses.names();
        let down: BTreeMap<String, String> = self.statuses.not_ready().into_iter().collect();
        for name in reported {
            let reason = down.get(&name).cloned();
            view.sources.insert(name, reason);
        }
        view
    }
}

impl SystemEvents {
    /// Publish `sluice.started`.
    pub async fn started(&self) {
        let data = json!({"version": env!("CARGO_PKG_VERSION"), "pid": std::process::id()});
        self.publish(vec![notice("started", &self.source, data)])
            .await;
    }

    /// Publish `sluice.stopping` (delivered before the stop if a dispatcher gets
    /// to it within `server.shutdown_grace`, else at the next start).
    pub async fn stopping(&self) {
        let data = json!({"pid": std::process::id()});
        self.publish(vec![notice("stopping", &self.source, data)])
            .await;
    }

    /// Watch every second until `shutdown`, publishing transitions.
    pub async fn watch(self, shutdown: CancellationToken) {
        let engine = self.engine.clone();
        let config = &self.config;
        let mut seen = Seen::new(
            config.backlog_threshold,
            config.dead_letter_interval,
            &engine.system_view(),
        );
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            let view = engine.system_view();
            let reason = |name: &str| {
                let sub = engine.subscriptions.iter().find(|s| s.name == name)?;
                Some(sub.queue.last_dead_letter().ok()??.reason)
            };
            let notices = seen.step(&view, now_ms(), reason);
            if !notices.is_empty() {
                self.publish(notices).await;
            }
        }
    }

    async fn publish(&self, notices: Vec<Notice>) {
        let events: Vec<Event> = notices.iter().filter_map(|n| self.event(n)).collect();
        for n in &notices {
            tracing::info!(r#type = %format!("sluice.{}", n.ty), subject = %n.subject, "System event.");
        }
        let published = self
            .engine
            .publish(SYSTEM_BUS, SOURCE, &events, Replays::ByKey)
            .await;
        if let Err(e) = published {
            tracing::warn!(error = %e, "System events could not be published.");
        }
    }

    fn event(&self, n: &Notice) -> Option<Event> {
        let id = format!(
            "{}-{}",
            self.started_ms,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", id)
            .attr("source", self.source.clone())
            .attr("type", format!("sluice.{}", n.ty))
            .attr("subject", n.subject.clone())
            .attr("time", crate::event::format_time(&chrono::Utc::now()))
            .data(RawData::Json(n.data.clone()));
        match f.build() {
            Ok(e) => Some(e),
            Err(e) => {
                // Our own attributes are valid; a name from config that is not
                // would show here.
                tracing::warn!(error = %e, "A system event could not be built.");
                None
            }
        }
    }
}

/// The name of this node in the `source` of the events sluice makes (system
/// events `sluice://<name>`, result events under it):
/// `server.system_events.name`, else the host name.
pub(crate) fn node_name(server: &crate::config::ServerConfig) -> String {
    server.system_events.name.clone().unwrap_or_else(host_name)
}

/// This machine's host name, for the events' `source`.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(char::is_whitespace))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(name: &str, bus: &str, depth: u64, dead: u64) -> SubView {
        SubView {
            name: name.into(),
            bus: bus.into(),
            target: "t".into(),
            depth,
            dead_lettered_total: dead,
            breaker: None,
        }
    }

    fn view(subs: Vec<SubView>) -> View {
        View {
            subs,
            ..View::default()
        }
    }

    fn types(notices: &[Notice]) -> Vec<&str> {
        notices.iter().map(|n| n.ty).collect()
    }

    #[test]
    fn backlog_crossings_are_one_event_each_with_hysteresis() {
        let mut seen = Seen::new(10, Duration::from_secs(60), &view(vec![]));
        let none = |_: &str| None;
        let step = |seen: &mut Seen, depth| {
            seen.step(&view(vec![sub("r.t", "default", depth, 0)]), 0, none)
        };
        assert!(step(&mut seen, 9).is_empty());
        assert_eq!(types(&step(&mut seen, 10)), ["subscription.backlog_high"]);
        assert!(step(&mut seen, 50).is_empty(), "still high: no news");
        assert!(step(&mut seen, 6).is_empty(), "above half: still high");
        let back = step(&mut seen, 5);
        assert_eq!(types(&back), ["subscription.backlog_recovered"]);
        assert_eq!(back[0].data["depth"], 5);
        assert!(step(&mut seen, 9).is_empty());
    }

    #[test]
    fn dead_letters_are_summarised_once_per_interval() {
        let mut seen = Seen::new(
            10,
            Duration::from_secs(60),
            &view(vec![sub("r.t", "default", 0, 3)]),
        );
        let reason = |_: &str| Some("HTTP 400".to_owned());
        let at = |seen: &mut Seen, dead, now| {
            seen.step(&view(vec![sub("r.t", "default", 0, dead)]), now, reason)
        };
        assert!(
            at(&mut seen, 3, 1_000).is_empty(),
            "those at start are not news"
        );
        let first = at(&mut seen, 10, 2_000);
        assert_eq!(types(&first), ["subscription.dead_lettered"]);
        assert_eq!(first[0].data["count"], 7);
        assert_eq!(first[0].data["last_reason"], "HTTP 400");
        // A storm within the interval: nothing until it has passed, then the sum.
        for (i, dead) in (11..200).enumerate() {
            assert!(at(&mut seen, dead, 3_000 + i as u64 * 100).is_empty());
        }
        let summary = at(&mut seen, 200, 62_000);
        assert_eq!(summary[0].data["count"], 190);
        assert_eq!(summary[0].data["total"], 200);
    }

    #[test]
    fn system_bus_subscriptions_never_make_events() {
        let mut seen = Seen::new(1, Duration::from_secs(1), &view(vec![]));
        let got = seen.step(
            &view(vec![sub("ops.pager", SYSTEM_BUS, 100, 100)]),
            5_000,
            |_| None,
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn breaker_openings_and_closings_are_one_event_each_in_order() {
        let with = |opened, closed| {
            let mut s = sub("r.fn", "default", 0, 0);
            s.breaker = Some(BreakerView {
                opened,
                closed,
                reason: Some("HTTP 503".into()),
                failures: 3,
                cooldown: Duration::from_secs(2),
            });
            view(vec![s])
        };
        let mut seen = Seen::new(10, Duration::from_secs(60), &with(0, 0));
        assert!(seen.step(&with(0, 0), 0, |_| None).is_empty());
        let opened = seen.step(&with(1, 0), 0, |_| None);
        assert_eq!(types(&opened), ["subscription.breaker_opened"]);
        assert_eq!(opened[0].data["reason"], "HTTP 503");
        assert_eq!(opened[0].data["cooldown"], "2s");
        // Closed, opened again and closed again between two looks.
        assert_eq!(
            types(&seen.step(&with(2, 2), 0, |_| None)),
            [
                "subscription.breaker_closed",
                "subscription.breaker_opened",
                "subscription.breaker_closed"
            ]
        );
        assert!(seen.step(&with(2, 2), 0, |_| None).is_empty());
    }

    #[test]
    fn targets_and_sources_report_going_down_and_coming_back() {
        let mut seen = Seen::new(10, Duration::from_secs(60), &view(vec![]));
        let mut v = View::default();
        v.targets.insert("fn".into(), None);
        v.sources.insert("kafka".into(), None);
        assert!(
            seen.step(&v, 0, |_| None).is_empty(),
            "up at start is not news"
        );
        v.targets
            .insert("fn".into(), Some("connection refused".into()));
        v.sources.insert("kafka".into(), Some("broker down".into()));
        let down = seen.step(&v, 0, |_| None);
        assert_eq!(types(&down), ["target.unready", "source.disconnected"]);
        assert_eq!(down[0].data["reason"], "connection refused");
        assert!(seen.step(&v, 0, |_| None).is_empty());
        v.targets.insert("fn".into(), None);
        v.sources.insert("kafka".into(), None);
        assert_eq!(
            types(&seen.step(&v, 0, |_| None)),
            ["target.ready", "source.reconnected"]
        );
    }
}
