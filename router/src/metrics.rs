//! Prometheus metrics, named `sluice_<thing>_<unit>`, labelled by bus, rule, target.
//!
//! The `expect`s here run on fixed metric definitions at start-up: names, labels and
//! buckets are literals, and each metric is registered once, so they cannot fail.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric sluice exports, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    received: IntCounterVec,
    rejected: IntCounterVec,
    duplicates: IntCounterVec,
    unmatched: IntCounterVec,
    matched: IntCounterVec,
    delivered: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    depth: IntGaugeVec,
    latency: HistogramVec,
    /// Families connectors define themselves (see [`Metrics::gauge_family`]).
    families: Arc<Mutex<HashMap<&'static str, Family>>>,
}

#[derive(Clone)]
enum Family {
    Gauge(IntGaugeVec),
    Counter(IntCounterVec),
}

/// The metrics of one subscription, looked up once so the hot path does no hashing.
#[derive(Clone)]
pub struct SubscriptionMetrics {
    pub matched: IntCounter,
    pub delivered: IntCounter,
    pub retried: IntCounter,
    pub dead_lettered: IntCounter,
    pub depth: IntGauge,
    pub latency: Histogram,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    registry
        .register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let sub = ["rule", "target"];
        let depth = IntGaugeVec::new(
            Opts::new(
                "sluice_queue_depth",
                "Events waiting in a subscription queue.",
            ),
            &sub,
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(depth.clone()))
            .expect("metric registered once");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "sluice_delivery_latency_seconds",
                "Time from ingest to confirmed delivery.",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 18).expect("valid buckets")),
            &sub,
        )
        .expect("valid metric definition");
        registry
            .register(Box::new(latency.clone()))
            .expect("metric registered once");
        Self {
            received: counter(
                &registry,
                "sluice_events_received_total",
                "Events accepted from sources.",
                &["bus", "source"],
            ),
            rejected: counter(
                &registry,
                "sluice_events_rejected_total",
                "Events refused at ingest as malformed.",
                &["bus", "source"],
            ),
            duplicates: counter(
                &registry,
                "sluice_events_duplicate_total",
                "Events dropped as a replay of one published within the dedupe window.",
                &["bus", "source"],
            ),
            unmatched: counter(
                &registry,
                "sluice_events_unmatched_total",
                "Events accepted that matched no rule of their bus (nothing to deliver).",
                &["bus", "source"],
            ),
            matched: counter(
                &registry,
                "sluice_events_matched_total",
                "Events that matched a rule, per target.",
                &["bus", "rule", "target"],
            ),
            delivered: counter(
                &registry,
                "sluice_events_delivered_total",
                "Events a target confirmed.",
                &sub,
            ),
            retried: counter(
                &registry,
                "sluice_delivery_retries_total",
                "Failed attempts scheduled for retry.",
                &sub,
            ),
            dead_lettered: counter(
                &registry,
                "sluice_events_dead_lettered_total",
                "Events moved to a dead-letter list.",
                &sub,
            ),
            depth,
            latency,
            registry,
            families: Arc::default(),
        }
    }

    /// A gauge family of a connector's own (`sluice_kafka_lag`, say), registered
    /// on first use; later calls with the same name return the same family, so
    /// every source of a kind shares it with its own label values.
    pub fn gauge_family(&self, name: &'static str, help: &str, labels: &[&str]) -> IntGaugeVec {
        match self.family(name, || {
            let g =
                IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            Family::Gauge(g)
        }) {
            Family::Gauge(g) => g,
            Family::Counter(_) => panic!("metric {name} is a counter, not a gauge"),
        }
    }

    /// A counter family of a connector's own; see [`Metrics::gauge_family`].
    pub fn counter_family(&self, name: &'static str, help: &str, labels: &[&str]) -> IntCounterVec {
        match self.family(name, || {
            let c =
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
            Family::Counter(c)
        }) {
            Family::Counter(c) => c,
            Family::Gauge(_) => panic!("metric {name} is a gauge, not a counter"),
        }
    }

    fn family(&self, name: &'static str, make: impl FnOnce() -> Family) -> Family {
        // A poisoned map only means another thread panicked mid-insert; the map
        // itself is still whole.
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        families
            .entry(name)
            .or_insert_with(|| {
                let family = make();
                let registered = match &family {
                    Family::Gauge(g) => self.registry.register(Box::new(g.clone())),
                    Family::Counter(c) => self.registry.register(Box::new(c.clone())),
                };
                registered.expect("metric registered once");
                family
            })
            .clone()
    }

    pub fn subscription(&self, bus: &str, rule: &str, target: &str) -> SubscriptionMetrics {
        let l = [rule, target];
        SubscriptionMetrics {
            matched: self.matched.with_label_values(&[bus, rule, target]),
            delivered: self.delivered.with_label_values(&l),
            retried: self.retried.with_label_values(&l),
            dead_lettered: self.dead_lettered.with_label_values(&l),
            depth: self.depth.with_label_values(&l),
            latency: self.latency.with_label_values(&l),
        }
    }

    pub fn received(&self, bus: &str, source: &str) -> IntCounter {
        self.received.with_label_values(&[bus, source])
    }

    pub fn rejected(&self, bus: &str, source: &str) -> IntCounter {
        self.rejected.with_label_values(&[bus, source])
    }

    pub fn unmatched(&self, bus: &str, source: &str) -> IntCounter {
        self.unmatched.with_label_values(&[bus, source])
    }

    pub fn duplicates(&self, bus: &str, source: &str) -> IntCounter {
        self.duplicates.with_label_values(&[bus, source])
    }

    /// Export the store's counters (`sluice_store_flushes_total`).
    pub fn register_store(&self, store: &crate::store::Store) {
        let counter = prometheus::IntCounter::with_opts(Opts::new(
            "sluice_store_flushes_total",
            "Group commits of the store; each is one fsync covering many events.",
        ))
        .expect("valid metric definition");
        let gauge = |name: &str, help: &str| {
            prometheus::IntGauge::with_opts(Opts::new(name, help)).expect("valid metric definition")
        };
        let dropped = prometheus::IntCounter::with_opts(Opts::new(
            "sluice_dedupe_buckets_dropped_total",
            "Buckets of de-duplication keys dropped before the end of server.dedupe_window because server.dedupe_max_keys was reached.",
        ))
        .expect("valid metric definition");
        let collector = StoreCollector {
            store: store.clone(),
            counter,
            dedupe_keys: gauge(
                "sluice_dedupe_keys",
                "Event keys held to drop replays within server.dedupe_window.",
            ),
            dedupe_bytes: gauge(
                "sluice_dedupe_log_bytes",
                "Bytes on disk of the log the de-duplication keys are rebuilt from.",
            ),
            dropped,
        };
        self.registry
            .register(Box::new(collector))
            .expect("metric registered once");
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads the store's counters when scraped.
struct StoreCollector {
    store: crate::store::Store,
    counter: prometheus::IntCounter,
    dedupe_keys: prometheus::IntGauge,
    dedupe_bytes: prometheus::IntGauge,
    dropped: prometheus::IntCounter,
}

impl prometheus::core::Collector for StoreCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.counter.desc();
        d.extend(self.dedupe_keys.desc());
        d.extend(self.dedupe_bytes.desc());
        d.extend(self.dropped.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let catch_up = |c: &prometheus::IntCounter, total: u64| {
            c.inc_by(total.saturating_sub(c.get()));
        };
        catch_up(&self.counter, self.store.flushes());
        let replays = self.store.replays();
        catch_up(&self.dropped, replays.dropped_early());
        let gauge = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        self.dedupe_keys.set(gauge(replays.len()));
        self.dedupe_bytes
            .set(i64::try_from(replays.disk_bytes()).unwrap_or(i64::MAX));
        let mut out = self.counter.collect();
        out.extend(self.dedupe_keys.collect());
        out.extend(self.dedupe_bytes.collect());
        out.extend(self.dropped.collect());
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
