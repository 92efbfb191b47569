//! What goes into S3 objects: which events share an object, the object's key, and
//! its bytes. Pure and synchronous (the sink runs it on a blocking thread), so it is
//! tested here without a server.
//!
//! Every event renders the key template itself, so the time partitions
//! (`dt=%Y-%m-%d/hour=%H`) follow each event's own `time`; events that render the
//! same key share one object. That object's `{uuid}` is the event key of its first
//! event: a batch that is delivered again (a retry, or a restart before the
//! dispatcher recorded the outcome) renders the same keys and so rewrites its
//! objects instead of adding new ones.

use std::collections::HashSet;
use std::io::{Read, Write};

use super::config::ObjectCompression;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use object_store::path::Path;
use sluice_router::event::event_key;
use sluice_router::event::Event;
use sluice_router::transform::NameTemplate;
use uuid::Uuid;

/// Stands for `{uuid}` while events are grouped: a group's key is only known once
/// its first event is. (Control characters make it unlikely in field values, and if
/// one held it, the replacement would still be the same on every delivery.)
const UUID_MARK: &str = "\u{1}uuid\u{1}";

/// One object to write: its key, its body, and the batch positions of the events
/// it carries (which all share its result).
#[derive(Debug)]
pub struct Object {
    pub key: Path,
    /// What is written: `lines`, compressed if so configured.
    pub body: Bytes,
    /// The JSON lines, uncompressed.
    pub lines: Bytes,
    /// The event key of each line, in order (an event repeated in the batch is
    /// one line).
    pub keys: Vec<Uuid>,
    pub members: Vec<usize>,
}

/// A batch cut into objects, plus the events that cannot be written at all.
#[derive(Debug, Default)]
pub struct Plan {
    pub objects: Vec<Object>,
    /// Batch position and reason, for events that fail on their own (a key that
    /// does not render, an event that does not serialise): permanent errors.
    pub rejected: Vec<(usize, String)>,
}

/// Group `events` by rendered key (in order of first appearance) and encode each
/// group as JSON lines, gzip-compressed when asked. `now` dates events that have no
/// `time`.
pub fn plan(
    template: &NameTemplate,
    compression: ObjectCompression,
    events: &[Event],
    now: DateTime<Utc>,
) -> Plan {
    let mut plan = Plan::default();
    // (key with the mark, batch positions), in order of first appearance.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match template.render(event, &[("uuid", UUID_MARK)], now) {
            Ok(key) => match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => groups.push((key, vec![i])),
            },
            Err(e) => plan.rejected.push((i, format!("object key: {e}"))),
        }
    }
    for (marked, members) in groups {
        let first = &events[members[0]];
        let text = marked.replace(UUID_MARK, &event_key(first).to_string());
        let key = match Path::parse(&text) {
            Ok(key) if !text.is_empty() && !text.starts_with('/') => key,
            Ok(_) => {
                reject_all(
                    &mut plan,
                    &members,
                    &format!("object key {text:?} is empty or starts with `/`"),
                );
                continue;
            }
            Err(e) => {
                reject_all(
                    &mut plan,
                    &members,
                    &format!("object key {text:?} is not valid: {e}"),
                );
                continue;
            }
        };
        let (mut keys, mut seen) = (Vec::new(), HashSet::new());
        let mut body = Vec::new();
        let mut written = Vec::with_capacity(members.len());
        for &i in &members {
            // The same event twice in one object (a replayed copy queued again)
            // is written once; both copies get the object's result.
            let event_key = event_key(&events[i]);
            if seen.contains(&event_key) {
                written.push(i);
                continue;
            }
            match line(&events[i]) {
                Ok(l) => {
                    body.extend_from_slice(&l);
                    keys.push(event_key);
                    seen.insert(event_key);
                    written.push(i);
                }
                Err(e) => plan.rejected.push((i, e)),
            }
        }
        if written.is_empty() {
            continue;
        }
        let lines = Bytes::from(body);
        plan.objects.push(Object {
            key,
            body: encode(&lines, compression),
            lines,
            keys,
            members: written,
        });
    }
    plan
}

fn reject_all(plan: &mut Plan, members: &[usize], reason: &str) {
    plan.rejected
        .extend(members.iter().map(|&i| (i, reason.to_owned())));
}

/// One line of a `jsonl` object: the event in CloudEvents structured JSON (with
/// `data` as JSON, or `data_base64` for binary data), then `\n`.
pub fn line(event: &Event) -> Result<Vec<u8>, String> {
    let mut l = serde_json::to_vec(event).map_err(|e| format!("event does not serialise: {e}"))?;
    l.push(b'\n');
    Ok(l)
}

fn encode(lines: &Bytes, compression: ObjectCompression) -> Bytes {
    match compression {
        ObjectCompression::None => lines.clone(),
        ObjectCompression::Gzip => {
            let mut encoder = GzEncoder::new(
                Vec::with_capacity(lines.len() / 4),
                flate2::Compression::default(),
            );
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(lines);
            Bytes::from(encoder.finish().unwrap_or_default())
        }
    }
}

/// What to write over an object whose key was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Merged {
    /// It holds exactly our events: nothing to write.
    Same,
    /// It holds some of our events and no others: write ours over it (a batch
    /// delivered again after more events joined it).
    Replace,
    /// It holds events we do not have: this body keeps them, after ours.
    Union(Bytes),
}

/// Compare the `existing` object (gzip or plain JSON lines) with ours (`lines`,
/// whose event keys are `keys`), so that writing over it loses no event. `Err`
/// when the existing object is not JSON lines of CloudEvents (then it is not
/// overwritten).
pub fn merge(
    existing: &[u8],
    lines: &Bytes,
    keys: &[Uuid],
    compression: ObjectCompression,
) -> Result<Merged, String> {
    let text = if existing.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(existing)
            .read_to_string(&mut text)
            .map_err(|e| format!("its gzip does not decode: {e}"))?;
        text
    } else {
        String::from_utf8(existing.to_vec()).map_err(|_| "it is not UTF-8 text".to_owned())?
    };
    let ours: HashSet<&Uuid> = keys.iter().collect();
    let mut theirs = HashSet::new();
    let mut extra = Vec::new();
    for (n, l) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let event: Event = serde_json::from_str(l)
            .map_err(|e| format!("line {} is not a CloudEvent: {e}", n + 1))?;
        let key = event_key(&event);
        if theirs.insert(key) && !ours.contains(&key) {
            extra.extend_from_slice(l.as_bytes());
            extra.push(b'\n');
        }
    }
    if extra.is_empty() {
        // Everything there is ours.
        return Ok(if theirs.len() == ours.len() {
            Merged::Same
        } else {
            Merged::Replace
        });
    }
    let mut union = Vec::with_capacity(lines.len() + extra.len());
    union.extend_from_slice(lines);
    union.extend_from_slice(&extra);
    Ok(Merged::Union(encode(&Bytes::from(union), compression)))
}

#[cfg(test)]
mod tests {
    use sluice_router::event::{EventFields, RawData};

    use super::*;

    fn event(id: &str, time: Option<&str>) -> Event {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", id)
            .attr("source", "/shop")
            .attr("type", "order.created")
            .data(RawData::Json(serde_json::json!({"id": id, "region": "eu"})));
        if let Some(t) = time {
            f.attr("time", t);
        }
        f.build().unwrap()
    }

    fn template() -> NameTemplate {
        NameTemplate::parse("events/dt=%Y-%m-%d/hour=%H/{uuid}.jsonl.gz").unwrap()
    }

    fn lines(o: &Object, gz: bool) -> Vec<serde_json::Value> {
        let mut text = String::new();
        if gz {
            flate2::read::GzDecoder::new(&o.body[..])
                .read_to_string(&mut text)
                .unwrap();
        } else {
            text = String::from_utf8(o.body.to_vec()).unwrap();
        }
        assert!(text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_group_by_their_own_time_partition_in_order() {
        let events = [
            event("a", Some("2026-11-29T13:05:00Z")),
            event("b", Some("2026-11-29T14:00:00Z")),
            event("c", Some("2026-11-29T13:59:59Z")),
            event("d", None),
        ];
        let now = "2026-01-02T03:04:05Z".parse().unwrap();
        let plan = plan(&template(), ObjectCompression::Gzip, &events, now);
        assert!(plan.rejected.is_empty());
        let keys: Vec<String> = plan.objects.iter().map(|o| o.key.to_string()).collect();
        assert_eq!(
            keys,
            [
                format!(
                    "events/dt=2026-11-29/hour=13/{}.jsonl.gz",
                    event_key(&events[0])
                ),
                format!(
                    "events/dt=2026-11-29/hour=14/{}.jsonl.gz",
                    event_key(&events[1])
                ),
                // No `time`: the clock given.
                format!(
                    "events/dt=2026-01-02/hour=03/{}.jsonl.gz",
                    event_key(&events[3])
                ),
            ]
        );
        let members: Vec<&[usize]> = plan.objects.iter().map(|o| o.members.as_slice()).collect();
        assert_eq!(members, [&[0, 2][..], &[1], &[3]]);
        let ids: Vec<_> = lines(&plan.objects[0], true)
            .iter()
            .map(|l| l["id"].clone())
            .collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn the_same_batch_renders_the_same_objects() {
        let events: Vec<Event> = (0..20)
            .map(|i| event(&format!("e{i}"), Some("2026-11-29T13:05:00Z")))
            .collect();
        let now = Utc::now();
        let a = plan(&template(), ObjectCompression::Gzip, &events, now);
        let b = plan(&template(), ObjectCompression::Gzip, &events, now);
        assert_eq!(a.objects.len(), 1);
        assert_eq!(a.objects[0].key, b.objects[0].key);
        assert_eq!(
            a.objects[0].body, b.objects[0].body,
            "gzip output is reproducible"
        );
        // A longer batch from the same first event (a retry after more events
        // arrived) overwrites the same object.
        let more = plan(&template(), ObjectCompression::Gzip, &events[..10], now);
        assert_eq!(more.objects[0].key, a.objects[0].key);
    }

    #[test]
    fn lines_are_structured_cloudevents() {
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "bin")
            .attr("source", "/s")
            .attr("type", "blob")
            .attr("datacontenttype", "application/octet-stream")
            .data(RawData::Bytes(vec![0, 1, 2, 255]));
        let events = [event("j", Some("2026-11-29T13:05:00Z")), f.build().unwrap()];
        let t = NameTemplate::parse("x/{uuid}.jsonl").unwrap();
        let plan = plan(&t, ObjectCompression::None, &events, Utc::now());
        let got = lines(&plan.objects[0], false);
        assert_eq!(
            got[0],
            serde_json::json!({"specversion": "1.0", "id": "j", "source": "/shop", "type": "order.created",
                "time": "2026-11-29T13:05:00Z", "datacontenttype": "application/json", "data": {"id": "j", "region": "eu"}})
        );
        assert_eq!(got[1]["data_base64"], "AAEC/w==");
        assert_eq!(got[1]["datacontenttype"], "application/octet-stream");
        // Each line parses back into the same event.
        let back: Event = serde_json::from_value(got[1].clone()).unwrap();
        assert_eq!(back, events[1]);
    }

    #[test]
    fn a_key_that_does_not_render_rejects_only_its_event() {
        let t = NameTemplate::parse("by-region/{data.region}/{uuid}.jsonl").unwrap();
        let mut f = EventFields::new();
        f.attr("specversion", "1.0")
            .attr("id", "n")
            .attr("source", "/s")
            .attr("type", "t");
        let no_data = f.build().unwrap();
        let events = [event("a", None), no_data, event("b", None)];
        let plan = plan(&t, ObjectCompression::None, &events, Utc::now());
        assert_eq!(plan.rejected.len(), 1);
        assert_eq!(plan.rejected[0].0, 1);
        assert!(
            plan.rejected[0].1.contains("data.region"),
            "{:?}",
            plan.rejected
        );
        assert_eq!(plan.objects.len(), 1);
        assert_eq!(plan.objects[0].members, [0, 2]);
        assert!(plan.objects[0].key.as_ref().starts_with("by-region/eu/"));
    }

    #[test]
    fn a_field_that_breaks_the_key_rejects_its_group() {
        // `source` holds slashes: "/shop" makes an empty path segment.
        let t = NameTemplate::parse("{source}/{uuid}.jsonl").unwrap();
        let plan = plan(&t, ObjectCompression::None, &[event("a", None)], Utc::now());
        assert!(plan.objects.is_empty());
        assert!(
            plan.rejected[0].1.contains("is empty or starts with `/`"),
            "{:?}",
            plan.rejected
        );
        let t = NameTemplate::parse("x/{type}/../{uuid}").unwrap();
        let plan = super::plan(&t, ObjectCompression::None, &[event("a", None)], Utc::now());
        assert!(
            plan.rejected[0].1.contains("not valid"),
            "{:?}",
            plan.rejected
        );
    }

    #[test]
    fn a_replayed_copy_in_the_same_object_is_one_line() {
        let e = event("a", Some("2026-11-29T13:05:00Z"));
        let events = [e.clone(), event("b", Some("2026-11-29T13:06:00Z")), e];
        let plan = plan(&template(), ObjectCompression::Gzip, &events, Utc::now());
        assert_eq!(plan.objects[0].members, [0, 1, 2]);
        assert_eq!(plan.objects[0].keys.len(), 2);
        assert_eq!(lines(&plan.objects[0], true).len(), 2);
    }

    #[test]
    fn merging_keeps_every_event_of_both_objects() {
        let e = |id: &str| event(id, Some("2026-11-29T13:05:00Z"));
        let ours = plan(
            &template(),
            ObjectCompression::Gzip,
            &[e("a"), e("b"), e("c")],
            Utc::now(),
        );
        let o = &ours.objects[0];
        let theirs = |ids: &[&str], gz: bool| {
            let events: Vec<Event> = ids.iter().map(|id| e(id)).collect();
            let c = if gz {
                ObjectCompression::Gzip
            } else {
                ObjectCompression::None
            };
            plan(&template(), c, &events, Utc::now())
                .objects
                .remove(0)
                .body
        };
        let merge =
            |existing: Bytes| merge(&existing, &o.lines, &o.keys, ObjectCompression::Gzip).unwrap();
        // The same batch again: nothing to write.
        assert_eq!(merge(theirs(&["a", "b", "c"], true)), Merged::Same);
        // An earlier, shorter delivery of the batch: replace it.
        assert_eq!(merge(theirs(&["a", "b"], false)), Merged::Replace);
        // Another batch that began with the same event: keep its other events.
        let Merged::Union(body) = merge(theirs(&["a", "x", "b", "y"], true)) else {
            panic!("expected a union")
        };
        let union = Object {
            key: o.key.clone(),
            body,
            lines: Bytes::new(),
            keys: vec![],
            members: vec![],
        };
        let ids: Vec<_> = lines(&union, true)
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(ids, ["a", "b", "c", "x", "y"]);
        // Not ours: never overwritten.
        let err = super::merge(b"hello\n", &o.lines, &o.keys, ObjectCompression::Gzip).unwrap_err();
        assert!(err.contains("line 1 is not a CloudEvent"), "{err}");
    }
}
