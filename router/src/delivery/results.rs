//! Result destinations (`on_success` / `on_failure`, see
//! docs/result-destinations.md): what a delivery's outcome becomes as a
//! CloudEvent, and how it is stored before the delivery is settled.
//!
//! Each result is made durable first (published onto a bus through the
//! engine's publish path, or appended to the queue of the rule's own result
//! subscription), and only then is the delivery settled. A crash in between
//! delivers the original again and publishes the same result again: its id is
//! derived from the subscription, the original event and the outcome, so the
//! dedupe window drops the repeat (at least once, no duplicate result).

use std::sync::Arc;

use async_trait::async_trait;
use cloudevents::event::ExtensionValue;
use cloudevents::AttributesReader;
use serde_json::{json, Value};

use super::dispatch::Subscription;
use crate::event::{is_json, Event, EventFields, RawData};
use crate::sink::Answer;
use crate::store::{Record, Settlement};

/// The extension counting how many results led to an event. Part of the event
/// contract (filters may read it): each result carries its cause's count plus
/// one, and a result past `server.max_hops` is not published.
pub const HOPS: &str = "sluicehops";
/// The extension naming the id of the event whose delivery made a result.
pub const CAUSATION: &str = "causationid";
/// The extension shared by every event of one chain: the first event's own
/// `correlationid`, or else its id.
pub const CORRELATION: &str = "correlationid";

/// The type of the result of a successful delivery whose answer is no CloudEvent.
pub const SUCCEEDED: &str = "sluice.invocation.succeeded";
/// The type of the result of a delivery that ended dead-lettered.
pub const FAILED: &str = "sluice.invocation.failed";

/// Namespace of result ids (fixed: a changed derivation would let a
/// redelivery across an upgrade publish its result twice).
const ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7e5b_1c2d_90aa_4f0e_8d3c_5a1e_57a7_e0c1);

/// Where one kind of result goes.
#[derive(Clone)]
pub(crate) enum Destination {
    /// Published onto this bus through the engine.
    Bus(String),
    /// Appended to this subscription (`<rule>.on-success` / `<rule>.on-failure`),
    /// which delivers it to the destination target.
    Target(Arc<Subscription>),
}

/// Publishes result events onto a bus and returns once they are durable (the
/// engine's publish path; a trait so this module does not own the engine).
#[async_trait]
pub(crate) trait Publisher: Send + Sync {
    /// `from` is the subscription, for metrics. An error means nothing may be
    /// assumed stored: the delivery is retried.
    async fn publish_results(&self, bus: &str, from: &str, events: &[Event]) -> Result<(), String>;

    /// Append `events` to result subscription `sub`'s queue, dropping those
    /// whose `source` + `id` it was given within the dedupe window (a crash
    /// made the result again): in the store before the settlement that
    /// follows, so durable no later than it.
    fn append_results(&self, sub: &Subscription, events: &[Event], now: u64) -> Result<(), String>;
}

/// A rule's result destinations and what building its results needs.
pub(crate) struct Results {
    pub(crate) on_success: Option<Destination>,
    pub(crate) on_failure: Option<Destination>,
    /// `server.max_hops`.
    pub(crate) max_hops: u32,
    /// Bytes of a function's answer kept in a result (`server.max_event_bytes`).
    pub(crate) max_body: usize,
    /// `sluice://<node>`: results' `source` is `<this>/subscriptions/<name>`,
    /// under the same node name as system events.
    pub(crate) node: String,
    pub(crate) publisher: Arc<dyn Publisher>,
}

/// One settled delivery on its way to the store, with the result it makes.
pub(crate) struct Routed {
    pub(crate) settlement: Settlement,
    /// A delivered event's record, kept to retry the delivery if its result
    /// cannot be stored.
    pub(crate) record: Option<Record>,
    /// The result event and whether it is a success (else a failure).
    pub(crate) result: Option<(bool, Event)>,
}

impl Routed {
    pub(crate) fn plain(settlement: Settlement) -> Self {
        Self {
            settlement,
            record: None,
            result: None,
        }
    }
}

/// Why a result was not made.
#[derive(Debug, PartialEq)]
pub(crate) enum NoResult {
    /// The chain has had `server.max_hops` results already.
    HopLimit(u32),
    /// The stored event could not be read back (it would have failed delivery).
    Unreadable,
}

impl std::fmt::Display for NoResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::HopLimit(n) => write!(
                f,
                "result chain stopped after {n} hops (server.max_hops); its result was not published"
            ),
            Self::Unreadable => write!(f, "the stored event is not a valid CloudEvent"),
        }
    }
}

impl Results {
    fn source(&self, subscription: &str) -> String {
        format!("{}/subscriptions/{subscription}", self.node)
    }

    /// The result of delivering `record` successfully, whose answer was `answer`
    /// (`None`: the target gives none, like every non-HTTP target).
    pub(crate) fn succeeded(
        &self,
        subscription: &str,
        record: &Record,
        answer: Option<Answer>,
    ) -> Result<Event, NoResult> {
        let (original, request) = read(record)?;
        let hops = self.next_hop(&original)?;
        if let Some(mut event) = answer.as_ref().and_then(|a| a.event.clone()) {
            // The function answered a CloudEvent: that is the result, linked.
            link(&mut event, &original, hops, true);
            return Ok(event);
        }
        let response = match answer {
            Some(a) => response_json(a),
            None => Value::Null,
        };
        let data = json!({"request": request, "response": response});
        self.build(subscription, &original, "succeeded", SUCCEEDED, data, hops)
    }

    /// The result of a delivery that ended dead-lettered with `reason`, the
    /// last status and body excerpt, if the target gave them.
    pub(crate) fn failed(
        &self,
        subscription: &str,
        record: &Record,
        reason: &str,
        status: Option<u16>,
        excerpt: Option<&str>,
    ) -> Result<Event, NoResult> {
        let (original, request) = read(record)?;
        let hops = self.next_hop(&original)?;
        let response = match status {
            Some(status) => json!({"status": status, "body": excerpt.unwrap_or_default()}),
            None => Value::Null,
        };
        let data = json!({"request": request, "reason": reason, "response": response});
        self.build(subscription, &original, "failed", FAILED, data, hops)
    }

    /// The hop count a result of `original` carries, if within the limit.
    fn next_hop(&self, original: &Event) -> Result<i64, NoResult> {
        let next = hops(original).saturating_add(1);
        if next > i64::from(self.max_hops) {
            return Err(NoResult::HopLimit(self.max_hops));
        }
        Ok(next)
    }

    fn build(
        &self,
        subscription: &str,
        original: &Event,
        outcome: &str,
        ty: &str,
        data: Value,
        hops: i64,
    ) -> Result<Event, NoResult> {
        let id = result_id(subscription, original, outcome);
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", id.to_string())
            .attr("source", self.source(subscription))
            .attr("type", ty)
            .attr("datacontenttype", "application/json")
            .attr("time", crate::event::format_time(&chrono::Utc::now()))
            .data(RawData::Json(data));
        let mut event = f.build().map_err(|e| {
            // Our own attributes are valid; a subscription name that is not
            // would show here.
            tracing::warn!(subscription, error = %e, "A result event could not be built.");
            NoResult::Unreadable
        })?;
        link(&mut event, original, hops, false);
        Ok(event)
    }

    /// Store the results of `routed` where they go, before any is settled; a
    /// delivery whose result could not be stored is settled as a retry instead
    /// (its result is made again, with the same id, next time).
    pub(crate) async fn store(&self, subscription: &str, routed: &mut [Routed], now: u64) {
        for success in [true, false] {
            let dest = if success {
                &self.on_success
            } else {
                &self.on_failure
            };
            let Some(dest) = dest else { continue };
            let (indexes, events): (Vec<usize>, Vec<Event>) = routed
                .iter()
                .enumerate()
                .filter_map(|(i, r)| match &r.result {
                    Some((s, e)) if *s == success => Some((i, e.clone())),
                    _ => None,
                })
                .unzip();
            if events.is_empty() {
                continue;
            }
            let stored = match dest {
                Destination::Bus(bus) => {
                    self.publisher
                        .publish_results(bus, subscription, &events)
                        .await
                }
                Destination::Target(sub) => self.publisher.append_results(sub, &events, now),
            };
            if let Err(error) = stored {
                tracing::warn!(subscription, error = %error, "Results could not be stored; their deliveries will be retried.");
                for i in indexes {
                    retry_instead(&mut routed[i], now);
                }
            }
        }
    }

    /// Which destinations `routed` give results to: (success, failure).
    pub(crate) fn given(routed: &[Routed]) -> (bool, bool) {
        let has = |success: bool| {
            routed
                .iter()
                .any(|r| matches!(&r.result, Some((s, _)) if *s == success))
        };
        (has(true), has(false))
    }

    /// Announce to the result subscriptions that were given results (see
    /// [`Results::given`]), after the settlement.
    pub(crate) fn notify(&self, (success, failure): (bool, bool)) {
        for (given, dest) in [(success, &self.on_success), (failure, &self.on_failure)] {
            if let (true, Some(Destination::Target(sub))) = (given, dest) {
                sub.announce();
            }
        }
    }
}

/// Settle `routed` as a retry in a second, without its result.
fn retry_instead(routed: &mut Routed, now: u64) {
    routed.result = None;
    let (key, record) = match &mut routed.settlement {
        Settlement::Delivered { key } => (std::mem::take(key), routed.record.take()),
        Settlement::DeadLetter { key, letter } => {
            let record = letter.record.clone();
            (std::mem::take(key), Some(record))
        }
        _ => return,
    };
    if let Some(record) = record {
        routed.settlement = Settlement::Retry {
            key,
            record,
            due_ms: now + 1_000,
        };
    }
}

/// The stored event, as an event and as the JSON the result's `request` holds.
fn read(record: &Record) -> Result<(Event, Value), NoResult> {
    let text = record.event.get();
    let event = serde_json::from_str(text).map_err(|_| NoResult::Unreadable)?;
    let value = serde_json::from_str(text).map_err(|_| NoResult::Unreadable)?;
    Ok((event, value))
}

/// How many results led to `event` (`sluicehops`, 0 without it).
fn hops(event: &Event) -> i64 {
    match event.extension(HOPS) {
        Some(ExtensionValue::Integer(n)) => *n,
        Some(ExtensionValue::String(s)) => s.trim().parse().unwrap_or(0),
        _ => 0,
    }
}

/// Link a result to the event it came from: `causationid`, the chain's
/// `correlationid` (a function's own answer keeps its own if it set one) and
/// the hop count.
fn link(result: &mut Event, original: &Event, hops: i64, keep_correlation: bool) {
    let correlation = match original.extension(CORRELATION) {
        Some(ExtensionValue::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => original.id().to_owned(),
    };
    result.set_extension(CAUSATION, original.id().to_owned());
    if !(keep_correlation && result.extension(CORRELATION).is_some()) {
        result.set_extension(CORRELATION, correlation);
    }
    result.set_extension(HOPS, hops);
}

/// A result's id: a UUID v5 of the subscription, the original's `source` and
/// `id`, and the outcome, so the same delivery always makes the same id.
fn result_id(subscription: &str, original: &Event, outcome: &str) -> uuid::Uuid {
    let name = [
        subscription,
        original.source().as_str(),
        original.id(),
        outcome,
    ]
    .join("\0");
    uuid::Uuid::new_v5(&ID_NAMESPACE, name.as_bytes())
}

/// `{"status", "headers": {"content-type"}, "body"}`: the body as JSON when it
/// parses, else as text; one cut at the bound is text with `"truncated": true`.
fn response_json(a: Answer) -> Value {
    let json_body = !a.truncated && a.content_type.as_deref().is_none_or(is_json);
    let body = match json_body.then(|| serde_json::from_slice::<Value>(&a.body)) {
        Some(Ok(v)) => v,
        _ if a.body.is_empty() => Value::Null,
        _ => Value::String(String::from_utf8_lossy(&a.body).into_owned()),
    };
    let mut response = json!({
        "status": a.status,
        "headers": {"content-type": a.content_type},
        "body": body,
    });
    if a.truncated {
        response["truncated"] = Value::Bool(true);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nowhere;

    #[async_trait]
    impl Publisher for Nowhere {
        async fn publish_results(&self, _: &str, _: &str, _: &[Event]) -> Result<(), String> {
            Err("no store".into())
        }

        fn append_results(&self, _: &Subscription, _: &[Event], _: u64) -> Result<(), String> {
            Err("no store".into())
        }
    }

    fn results(max_hops: u32) -> Results {
        Results {
            on_success: Some(Destination::Bus("results".into())),
            on_failure: None,
            max_hops,
            max_body: 1024,
            node: "sluice://node".into(),
            publisher: Arc::new(Nowhere),
        }
    }

    fn record(event: Value) -> Record {
        let raw = serde_json::value::RawValue::from_string(event.to_string()).unwrap();
        Record::new(raw, 0)
    }

    fn original(extra: Value) -> Record {
        let mut e = json!({"specversion": "1.0", "id": "e-1", "source": "/s", "type": "t",
                           "data": {"n": 1}});
        e.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        record(e)
    }

    fn as_json(e: &Event) -> Value {
        serde_json::to_value(e).unwrap()
    }

    #[test]
    fn a_json_answer_becomes_succeeded_with_request_and_response() {
        let answer = Answer {
            status: 200,
            content_type: Some("application/json".into()),
            body: br#"{"width":10}"#.to_vec(),
            ..Answer::default()
        };
        let r = results(16);
        let e = r
            .succeeded("resize.fn", &original(json!({})), Some(answer.clone()))
            .unwrap();
        let v = as_json(&e);
        assert_eq!(v["type"], SUCCEEDED);
        assert_eq!(v["source"], "sluice://node/subscriptions/resize.fn");
        assert_eq!(v["causationid"], "e-1");
        assert_eq!(v["correlationid"], "e-1");
        assert_eq!(v["sluicehops"], 1);
        assert_eq!(v["data"]["request"]["data"], json!({"n": 1}));
        assert_eq!(v["data"]["response"]["status"], 200);
        assert_eq!(v["data"]["response"]["body"], json!({"width": 10}));
        assert_eq!(
            v["data"]["response"]["headers"]["content-type"],
            "application/json"
        );
        let again = r
            .succeeded("resize.fn", &original(json!({})), Some(answer))
            .unwrap();
        assert_eq!(again.id(), e.id(), "the same delivery makes the same id");
        let failed = r
            .failed("resize.fn", &original(json!({})), "x", None, None)
            .unwrap();
        assert_ne!(failed.id(), e.id(), "another outcome, another id");
    }

    #[test]
    fn text_truncated_and_missing_answers() {
        let text = Answer {
            status: 201,
            content_type: Some("text/plain".into()),
            body: b"done".to_vec(),
            ..Answer::default()
        };
        assert_eq!(response_json(text)["body"], "done");
        let cut = Answer {
            status: 200,
            content_type: Some("application/json".into()),
            body: br#"{"a":"#.to_vec(),
            truncated: true,
            ..Answer::default()
        };
        let v = response_json(cut);
        assert_eq!(
            (v["body"].clone(), v["truncated"].clone()),
            (json!(r#"{"a":"#), json!(true))
        );
        let e = results(16)
            .succeeded("r.kafka", &original(json!({})), None)
            .unwrap();
        assert_eq!(as_json(&e)["data"]["response"], Value::Null);
    }

    #[test]
    fn chains_keep_their_correlation_and_stop_at_the_hop_limit() {
        let r = results(3);
        let chained = original(json!({"correlationid": "c-9", "sluicehops": 2}));
        let v = as_json(&r.succeeded("a.fn", &chained, None).unwrap());
        assert_eq!(
            (v["correlationid"].clone(), v["sluicehops"].clone()),
            (json!("c-9"), json!(3))
        );
        let over = original(json!({"sluicehops": "3"}));
        assert_eq!(
            r.succeeded("a.fn", &over, None).unwrap_err(),
            NoResult::HopLimit(3)
        );
        assert!(NoResult::HopLimit(3).to_string().contains("after 3 hops"));
    }

    #[test]
    fn a_cloudevent_answer_is_the_result_with_its_links() {
        let mut fields = EventFields::new();
        fields
            .attr("specversion", "1.0")
            .attr("id", "fn-42")
            .attr("source", "/resize")
            .attr("type", "com.example.resized");
        let answer = Answer {
            status: 200,
            event: Some(fields.build().unwrap()),
            ..Answer::default()
        };
        let e = results(16)
            .succeeded("r.fn", &original(json!({})), Some(answer))
            .unwrap();
        let v = as_json(&e);
        assert_eq!(
            (v["id"].clone(), v["type"].clone()),
            (json!("fn-42"), json!("com.example.resized"))
        );
        assert_eq!(v["causationid"], "e-1");
    }

    #[tokio::test]
    async fn a_result_that_cannot_be_stored_retries_its_delivery() {
        let r = results(16);
        let rec = original(json!({}));
        let event = r.succeeded("a.fn", &rec, None).unwrap();
        let mut routed = vec![Routed {
            settlement: Settlement::Delivered { key: b"k".to_vec() },
            record: Some(rec),
            result: Some((true, event)),
        }];
        r.store("a.fn", &mut routed, 5_000).await;
        assert!(matches!(
            &routed[0].settlement,
            Settlement::Retry { key, due_ms: 6_000, .. } if key == b"k"
        ));
        assert!(routed[0].result.is_none());
    }
}
