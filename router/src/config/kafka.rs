//! Validation of the Kafka source and target settings.

use std::collections::BTreeMap;

use super::{Collector, KafkaSourceConfig, KafkaTargetConfig};

/// librdkafka settings sluice sets itself, and why a user may not.
fn owned(key: &str) -> Option<&'static str> {
    Some(match key {
        "bootstrap.servers" | "metadata.broker.list" => "set it with `brokers`",
        "group.id" => "set it with `group`",
        "enable.auto.commit" | "enable.auto.offset.store" => {
            "sluice stores each offset only after its event is durable (at least once)"
        }
        "auto.offset.reset" => "set it with `start`",
        "enable.idempotence" | "acks" | "request.required.acks" => {
            "sluice's producer is idempotent and waits for all in-sync replicas"
        }
        "compression.type" | "compression.codec" => "set it with `compression`",
        "linger.ms" | "queue.buffering.max.ms" => "set it with `linger`",
        "message.timeout.ms" | "delivery.timeout.ms" => "set it with `timeout`",
        _ => return None,
    })
}

fn validate_options(c: &mut Collector<'_>, at: &str, options: &BTreeMap<String, String>) {
    for key in options.keys() {
        if let Some(why) = owned(key) {
            c.push(
                format!("{at}.options.{key}"),
                format!("sluice owns this setting: {why}"),
            );
        } else if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
        {
            c.push(
                format!("{at}.options.{key}"),
                "is not a librdkafka setting name".to_owned(),
            );
        }
    }
}

fn validate_brokers(c: &mut Collector<'_>, at: &str, brokers: &str) {
    let bad = brokers.is_empty()
        || brokers.split(',').any(|b| {
            b.trim()
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        });
    if bad {
        c.push(
            format!("{at}.brokers"),
            format!("{brokers:?} is not a list of host:port"),
        );
    }
}

pub(super) fn validate_source(c: &mut Collector<'_>, i: usize, k: &KafkaSourceConfig) {
    let at = format!("sources[{i}]");
    validate_brokers(c, &at, &k.brokers);
    if k.topics.is_empty() {
        c.push(
            format!("{at}.topics"),
            "give at least one topic name or ^regex",
        );
    }
    for (j, topic) in k.topics.iter().enumerate() {
        if topic.starts_with('^') {
            if let Err(e) = regex::Regex::new(topic) {
                c.push(
                    format!("{at}.topics[{j}]"),
                    format!("not a valid regular expression: {e}"),
                );
            }
        } else if topic.is_empty()
            || topic.len() > 249
            || !topic
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            c.push(
                format!("{at}.topics[{j}]"),
                format!("{topic:?} is not a Kafka topic name (letters, digits, '.', '_', '-'; or ^regex)"),
            );
        }
    }
    if k.group.is_empty() {
        c.push(format!("{at}.group"), "must not be empty");
    }
    if k.batch == 0 || k.batch > 100_000 {
        c.push(format!("{at}.batch"), "must be between 1 and 100000");
    }
    validate_options(c, &at, &k.options);
}

pub(super) fn validate_target(c: &mut Collector<'_>, i: usize, t: &KafkaTargetConfig) {
    let at = format!("targets[{i}]");
    validate_brokers(c, &at, &t.brokers);
    if t.topic.is_empty() {
        c.push(format!("{at}.topic"), "must not be empty");
    }
    for (field, template) in [("topic", Some(&t.topic)), ("key", t.key.as_ref())] {
        if let Some(template) = template {
            if let Err(e) = crate::transform::name::NameTemplate::parse(template) {
                c.push(format!("{at}.{field}"), format!("{template:?}: {e}"));
            }
        }
    }
    if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&t.compression.as_str()) {
        c.push(
            format!("{at}.compression"),
            format!(
                "{:?}: expected none, gzip, snappy, lz4 or zstd",
                t.compression
            ),
        );
    }
    super::storage::validate_batch(c, &at, &(&t.batch).into(), t.concurrency);
    if t.timeout.is_zero() {
        c.push(format!("{at}.timeout"), "must be greater than 0");
    }
    validate_options(c, &at, &t.options);
}
