//! What a Kafka source knows about itself, kept up to date by the consumer's
//! callbacks, the source loop and a refresh every few seconds, and shown by
//! `GET /api/sources/{name}`, `/readyz` and the metrics:
//! `sluice_kafka_assigned_partitions{source}`, `sluice_kafka_lag{source,topic,partition}`
//! (records in the partition not yet durable in sluice) and
//! `sluice_kafka_offset_gaps_total{source,topic,partition}`.
//!
//! The gap check lives here too: within an assignment a partition's offsets
//! follow each other, so a record that is not at the expected offset means
//! records were skipped. Kafka makes such gaps legitimately (a compacted topic,
//! transaction markers, aborted transactions under `read_committed`), so a gap is
//! reported, counted and left to the user to judge, never hidden.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounterVec, IntGaugeVec};
use serde_json::{json, Value};
use sluice_router::engine::Metrics;
use sluice_router::now_ms;
use sluice_router::source::SourceStatus;
use sluice_router::throttle::{Level, Throttle, Who};

/// A source holding no partitions for this long says so once (the group's other
/// members hold them all, or a dead member's session has not expired yet).
const IDLE_WARNING: Duration = Duration::from_secs(60);

/// A partition with records waiting that delivers none for this long says so
/// (the broker answers fetches from its offset with nothing).
const STALL_WARNING: Duration = Duration::from_secs(60);

/// Where a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not yet given partitions by its group.
    Starting,
    /// Holding partitions and reading them.
    Consuming,
    /// Holding no partitions after the group's assignment.
    Idle,
    /// Not reading: a subscription of its bus is over `max_backlog`.
    Paused,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Consuming => "consuming",
            Self::Idle => "waiting_for_partitions",
            Self::Paused => "paused",
        }
    }
}

/// One assigned partition.
#[derive(Debug, Default, Clone)]
struct Partition {
    /// The next offset the consumer should deliver (the gap check).
    expected: Option<i64>,
    /// The group's committed offset: the next offset to read.
    committed: Option<i64>,
    /// The highest offset durable in sluice.
    durable: Option<i64>,
    low: Option<i64>,
    high: Option<i64>,
    last_record_ms: Option<u64>,
    gaps: u64,
    /// When a record of this partition last arrived (or it was assigned).
    moved_ms: u64,
    /// Whether the stall warning was given since the partition last moved.
    stall_warned: bool,
}

impl Partition {
    /// The next offset sluice reads: after what is durable, or the committed one.
    fn next(&self) -> Option<i64> {
        match (self.durable, self.committed) {
            (Some(d), Some(c)) => Some((d + 1).max(c)),
            (Some(d), None) => Some(d + 1),
            (None, c) => c,
        }
    }

    /// Records in the partition not yet durable in sluice.
    fn lag(&self) -> Option<i64> {
        let high = self.high?;
        Some((high - self.next().unwrap_or(self.low.unwrap_or(0))).max(0))
    }
}

struct State {
    phase: Phase,
    since_ms: u64,
    partitions: BTreeMap<(String, i32), Partition>,
    /// Why the brokers could not be reached at the last refresh.
    unreachable: Option<String>,
    last_record_ms: Option<u64>,
    /// Whether the "no partitions" warning was given since the last assignment.
    idle_warned: bool,
}

/// The state of one Kafka source; see the module docs.
pub(super) struct Tracker {
    source: String,
    group: String,
    state: Mutex<State>,
    /// Repeated client errors (a broker that is down), logged once with a count.
    pub(super) throttle: Throttle,
    assigned: IntGaugeVec,
    lag: IntGaugeVec,
    gaps: IntCounterVec,
}

fn time(ms: u64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

impl Tracker {
    pub(super) fn new(source: &str, group: &str, metrics: &Metrics) -> Self {
        let assigned = metrics.gauge_family(
            "sluice_kafka_assigned_partitions",
            "Partitions a Kafka source holds.",
            &["source"],
        );
        assigned.with_label_values(&[source]).set(0);
        Self {
            source: source.to_owned(),
            group: group.to_owned(),
            state: Mutex::new(State {
                phase: Phase::Starting,
                since_ms: now_ms(),
                partitions: BTreeMap::new(),
                unreachable: None,
                last_record_ms: None,
                idle_warned: false,
            }),
            throttle: Throttle::new(Who::Source(source.to_owned())),
            assigned,
            lag: metrics.gauge_family(
                "sluice_kafka_lag",
                "Records in a partition not yet durable in sluice (high watermark minus the next offset sluice reads).",
                &["source", "topic", "partition"],
            ),
            gaps: metrics.counter_family(
                "sluice_kafka_offset_gaps_total",
                "Times a partition's next record was not at the expected offset (records skipped).",
                &["source", "topic", "partition"],
            ),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data; a panic while it was held leaves it usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_phase(state: &mut State, phase: Phase) {
        if state.phase != phase {
            state.phase = phase;
            state.since_ms = now_ms();
        }
    }

    fn settle_phase(&self, state: &mut State) {
        self.assigned
            .with_label_values(&[&self.source])
            .set(state.partitions.len() as i64);
        if state.phase == Phase::Paused {
            return;
        }
        let phase = if state.partitions.is_empty() {
            Phase::Idle
        } else {
            Phase::Consuming
        };
        Self::set_phase(state, phase);
    }

    /// A partition was assigned: what the group had committed, what sluice holds
    /// durable, its watermarks, and the offset it starts at (if known).
    pub(super) fn assigned(
        &self,
        topic: &str,
        partition: i32,
        committed: Option<i64>,
        durable: Option<i64>,
        watermarks: Option<(i64, i64)>,
        expected: Option<i64>,
    ) {
        let mut state = self.state();
        state.partitions.insert(
            (topic.to_owned(), partition),
            Partition {
                expected,
                committed,
                durable,
                low: watermarks.map(|w| w.0),
                high: watermarks.map(|w| w.1),
                moved_ms: now_ms(),
                ..Partition::default()
            },
        );
        state.idle_warned = false;
        self.settle_phase(&mut state);
    }

    /// The group assigned this member no partitions (or took all of them away).
    pub(super) fn assignment_done(&self) {
        let mut state = self.state();
        self.settle_phase(&mut state);
    }

    pub(super) fn revoked(&self, topic: &str, partition: i32) {
        let mut state = self.state();
        state.partitions.remove(&(topic.to_owned(), partition));
        let _ = self
            .lag
            .remove_label_values(&[&self.source, topic, &partition.to_string()]);
        self.settle_phase(&mut state);
    }

    /// Records `first..=last` of a partition can no longer be read.
    pub(super) fn gap(&self, topic: &str, partition: i32, first: i64, last: i64) {
        self.gaps
            .with_label_values(&[&self.source, topic, &partition.to_string()])
            .inc();
        if let Some(p) = self
            .state()
            .partitions
            .get_mut(&(topic.to_owned(), partition))
        {
            p.gaps += 1;
        }
        self.throttle.log(
            Level::Warn,
            &format!(
                "Records skipped in {topic} partition {partition}: expected offset {first}, \
                 the next record is at {}. A compacted topic, transaction markers or \
                 aborted transactions make such gaps; otherwise records were deleted \
                 before sluice read them.",
                last + 1
            ),
        );
    }

    /// The consumer delivered the record at `offset` (checked before anything is
    /// skipped or published, in the order the consumer delivers).
    pub(super) fn record(&self, topic: &str, partition: i32, offset: i64) {
        let now = now_ms();
        let mut gap = None;
        {
            let mut state = self.state();
            state.last_record_ms = Some(now);
            state.unreachable = None;
            let key = (topic.to_owned(), partition);
            let Some(p) = state.partitions.get_mut(&key) else {
                // A record of a partition revoked since it was fetched.
                return;
            };
            p.last_record_ms = Some(now);
            p.moved_ms = now;
            p.stall_warned = false;
            match p.expected {
                Some(e) if offset > e => gap = Some((e, offset - 1)),
                Some(e) if offset < e => {
                    // Read again (the partition was handed back and resumed from
                    // its committed offset): what is durable is skipped.
                    tracing::debug!(source = %self.source, topic, partition, expected = e, offset, "Offsets went back.");
                }
                _ => {}
            }
            p.expected = Some(offset + 1);
        }
        if let Some((first, last)) = gap {
            self.gap(topic, partition, first, last);
        }
    }

    /// Offsets up to these (topic, partition, offset) are durable in sluice.
    pub(super) fn durable(&self, durable: impl IntoIterator<Item = (String, i32, i64)>) {
        let mut state = self.state();
        for (topic, partition, offset) in durable {
            if let Some(p) = state.partitions.get_mut(&(topic, partition)) {
                p.durable = Some(p.durable.map_or(offset, |d| d.max(offset)));
            }
        }
    }

    /// The group committed `offset` (the next to read) for a partition.
    pub(super) fn committed(&self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self
            .state()
            .partitions
            .get_mut(&(topic.to_owned(), partition))
        {
            p.committed = Some(offset);
        }
    }

    pub(super) fn paused(&self, paused: bool) {
        let mut state = self.state();
        if paused {
            Self::set_phase(&mut state, Phase::Paused);
        } else {
            state.phase = Phase::Starting;
            self.settle_phase(&mut state);
        }
    }

    pub(super) fn source(&self) -> &str {
        &self.source
    }

    pub(super) fn is_paused(&self) -> bool {
        self.state().phase == Phase::Paused
    }

    /// The assigned partitions (for the refresh).
    pub(super) fn partitions(&self) -> Vec<(String, i32)> {
        self.state().partitions.keys().cloned().collect()
    }

    /// Watermarks read by the refresh; `unreachable` says why the brokers could not
    /// be asked, if they could not.
    pub(super) fn refreshed(
        &self,
        watermarks: Vec<((String, i32), (i64, i64))>,
        unreachable: Option<String>,
    ) {
        let mut state = self.state();
        for (key, (low, high)) in watermarks {
            if let Some(p) = state.partitions.get_mut(&key) {
                p.low = Some(low);
                p.high = Some(high);
            }
        }
        if let Some(why) = &unreachable {
            self.throttle.log(
                Level::Error,
                &format!("The Kafka brokers cannot be reached: {why}"),
            );
        }
        state.unreachable = unreachable;
        for ((topic, partition), p) in &state.partitions {
            if let Some(lag) = p.lag() {
                self.lag
                    .with_label_values(&[&self.source, topic, &partition.to_string()])
                    .set(lag);
            }
        }
        let now = now_ms();
        let reading = state.phase == Phase::Consuming && state.unreachable.is_none();
        for ((topic, partition), p) in state.partitions.iter_mut() {
            let waiting = p.lag().unwrap_or(0);
            let still_for = now.saturating_sub(p.moved_ms);
            if reading
                && waiting > 0
                && !p.stall_warned
                && still_for >= STALL_WARNING.as_millis() as u64
            {
                p.stall_warned = true;
                tracing::warn!(
                    source = %self.source,
                    topic = %topic,
                    partition,
                    waiting,
                    next_offset = ?p.next(),
                    still_secs = still_for / 1000,
                    "Records wait in the partition but none arrived: the broker answers fetches from this offset with nothing."
                );
            }
        }
        let idle_for = now.saturating_sub(state.since_ms);
        if state.phase == Phase::Idle
            && !state.idle_warned
            && idle_for >= IDLE_WARNING.as_millis() as u64
            && state.unreachable.is_none()
        {
            state.idle_warned = true;
            tracing::warn!(
                source = %self.source,
                group = %self.group,
                idle_secs = idle_for / 1000,
                "Holding no partitions: the group's other members hold them all, or a member \
                 that died still holds them until its session times out."
            );
        }
        drop(state);
        self.throttle.flush();
    }
}

impl SourceStatus for Tracker {
    fn status(&self) -> Value {
        let state = self.state();
        let phase = if state.unreachable.is_some() {
            "broker_unreachable"
        } else {
            state.phase.name()
        };
        let partitions: Vec<Value> = state
            .partitions
            .iter()
            .map(|((topic, partition), p)| {
                json!({
                    "topic": topic,
                    "partition": partition,
                    "committed_offset": p.committed,
                    "durable_offset": p.durable.map(|d| d + 1),
                    "low_watermark": p.low,
                    "high_watermark": p.high,
                    "lag": p.lag(),
                    "last_record_at": p.last_record_ms.map_or(Value::Null, time),
                    "gaps": p.gaps,
                })
            })
            .collect();
        json!({
            "state": phase,
            "since": time(state.since_ms),
            "error": state.unreachable,
            "group": self.group,
            "assigned_partitions": partitions.len(),
            "lag": state.partitions.values().filter_map(Partition::lag).sum::<i64>(),
            "last_record_at": state.last_record_ms.map_or(Value::Null, time),
            "partitions": partitions,
        })
    }

    fn not_ready(&self) -> Option<String> {
        self.state()
            .unreachable
            .as_ref()
            .map(|why| format!("the Kafka brokers cannot be reached: {why}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> (Tracker, Metrics) {
        let metrics = Metrics::new();
        (Tracker::new("src", "g", &metrics), metrics)
    }

    #[test]
    fn a_record_past_the_expected_offset_is_a_gap_and_one_read_again_is_not() {
        let (t, metrics) = tracker();
        t.assigned("t", 0, Some(10), None, Some((0, 100)), Some(10));
        for o in [10, 11, 12] {
            t.record("t", 0, o);
        }
        t.record("t", 0, 20);
        t.record("t", 0, 21);
        // Read again after a hand-back: not a gap.
        t.record("t", 0, 10);
        t.record("t", 0, 11);
        let text = metrics.render();
        assert!(
            text.contains(
                r#"sluice_kafka_offset_gaps_total{partition="0",source="src",topic="t"} 1"#
            ),
            "{text}"
        );
        assert_eq!(t.status()["partitions"][0]["gaps"], 1);
        // A record of a partition no longer held is not checked.
        t.revoked("t", 0);
        t.record("t", 0, 500);
        assert_eq!(t.status()["assigned_partitions"], 0);
    }

    #[test]
    fn lag_counts_records_not_yet_durable_in_sluice() {
        let (t, metrics) = tracker();
        assert_eq!(t.status()["state"], "starting");
        t.assigned("t", 0, Some(40), Some(59), Some((0, 100)), Some(60));
        t.assigned("t", 1, None, None, Some((0, 7)), None);
        let s = t.status();
        assert_eq!(s["state"], "consuming");
        assert_eq!(s["partitions"][0]["durable_offset"], 60);
        assert_eq!(s["partitions"][0]["lag"], 40);
        assert_eq!(s["partitions"][1]["lag"], 7, "nothing read yet: all of it");
        assert_eq!(s["lag"], 47);
        t.durable([("t".to_owned(), 0, 99)]);
        t.committed("t", 0, 100);
        t.refreshed(vec![(("t".into(), 0), (0, 120))], None);
        let s = t.status();
        assert_eq!(s["partitions"][0]["lag"], 20);
        assert!(metrics
            .render()
            .contains(r#"sluice_kafka_lag{partition="0",source="src",topic="t"} 20"#));
        assert!(metrics
            .render()
            .contains(r#"sluice_kafka_assigned_partitions{source="src"} 2"#));
    }

    #[test]
    fn unreachable_brokers_make_the_source_not_ready_until_a_refresh_reaches_them() {
        let (t, _) = tracker();
        assert!(t.not_ready().is_none());
        t.refreshed(Vec::new(), Some("Local: Broker transport failure".into()));
        assert_eq!(t.status()["state"], "broker_unreachable");
        assert!(t.not_ready().unwrap().contains("cannot be reached"));
        t.refreshed(Vec::new(), None);
        assert!(t.not_ready().is_none());
        t.assignment_done();
        assert_eq!(t.status()["state"], "waiting_for_partitions");
        t.paused(true);
        assert_eq!(t.status()["state"], "paused");
        t.paused(false);
        assert_eq!(t.status()["state"], "waiting_for_partitions");
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_with_records_waiting_that_delivers_none_is_reported_once() {
        let (t, _) = tracker();
        t.assigned("t", 0, Some(0), None, Some((0, 10)), Some(0));
        t.assignment_done();
        let stalled = |t: &Tracker| t.state().partitions[&("t".to_owned(), 0)].stall_warned;
        t.refreshed(vec![(("t".into(), 0), (0, 10))], None);
        assert!(!stalled(&t), "not yet");
        tokio::time::advance(STALL_WARNING + Duration::from_secs(1)).await;
        t.refreshed(vec![(("t".into(), 0), (0, 10))], None);
        assert!(stalled(&t), "ten records waiting, none for a minute");
        // A record arriving clears it.
        t.record("t", 0, 0);
        assert!(!stalled(&t));
    }
}
