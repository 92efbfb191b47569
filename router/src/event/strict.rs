//! What makes an event acceptable beyond the CloudEvents spec: attributes small
//! enough for every delivery to carry, and JSON without a key given twice.

use serde_json::Value;

use super::{EventError, SPEC_ATTRIBUTES};

/// Longest attribute value, in bytes: every attribute must fit an HTTP header
/// (binary mode) and an AMQP or Kafka header of a delivery.
pub const MAX_ATTRIBUTE_BYTES: usize = 4096;

/// Most extension attributes an event may carry.
pub const MAX_EXTENSIONS: usize = 64;

/// Most bytes of attributes (names and values) an event may carry, so that a
/// binary-mode delivery's headers stay within what servers accept.
pub const MAX_ATTRIBUTES_BYTES: usize = 16 * 1024;

/// Refuse attributes no delivery could carry: accepted, such an event would only
/// ever be dead-lettered.
pub(super) fn check_sizes(attrs: &[(String, Value)]) -> Result<(), EventError> {
    let mut total = 0;
    let mut extensions = 0;
    for (name, value) in attrs {
        let len = match value {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if len > MAX_ATTRIBUTE_BYTES {
            return Err(EventError::new(
                name,
                format!("is {len} bytes; attributes are {MAX_ATTRIBUTE_BYTES} bytes at most (put large values in data)"),
            ));
        }
        total += name.len() + len;
        if !SPEC_ATTRIBUTES.contains(&name.as_str()) {
            extensions += 1;
        }
    }
    if extensions > MAX_EXTENSIONS {
        return Err(EventError::new(
            "event",
            format!("has {extensions} extension attributes; {MAX_EXTENSIONS} at most"),
        ));
    }
    if total > MAX_ATTRIBUTES_BYTES {
        return Err(EventError::new(
            "event",
            format!("has {total} bytes of attributes; {MAX_ATTRIBUTES_BYTES} at most (put large values in data)"),
        ));
    }
    Ok(())
}

/// The path of the first key that appears twice in one JSON object of `json`
/// (`data.items[2].sku`), if any. A strict parser refuses such input; taking the
/// last value, as most do, would deliver something other than what was sent.
pub fn duplicate_key(json: &str) -> Option<String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(json);
    match (dup::Walk {
        path: String::new(),
    })
    .deserialize(&mut de)
    {
        Err(e) => {
            let text = e.to_string();
            text.strip_prefix(dup::MARK).map(|rest| {
                rest.rsplit_once(" at line ")
                    .map_or(rest, |(p, _)| p)
                    .to_owned()
            })
        }
        Ok(()) => None,
    }
}

/// A walk over JSON that fails at the first duplicate key (see [`duplicate_key`]).
mod dup {
    use std::collections::HashSet;
    use std::fmt;

    use serde::de::{DeserializeSeed, Error, MapAccess, SeqAccess, Visitor};

    pub(super) const MARK: &str = "duplicate key: ";

    pub(super) struct Walk {
        pub(super) path: String,
    }

    impl<'de> DeserializeSeed<'de> for Walk {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Walk {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while seq
                .next_element_seed(Walk {
                    path: format!("{}[{i}]", self.path),
                })?
                .is_some()
            {
                i += 1;
            }
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let mut seen = HashSet::new();
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                let path = if self.path.is_empty() {
                    key.to_string()
                } else {
                    format!("{}.{key}", self.path)
                };
                if !seen.insert(key.into_owned()) {
                    return Err(A::Error::custom(format!("{MARK}{path}")));
                }
                map.next_value_seed(Walk { path })?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventFields;

    #[test]
    fn a_key_given_twice_is_found_with_its_path() {
        assert_eq!(duplicate_key(r#"{"a": 1, "b": 2}"#), None);
        assert_eq!(
            duplicate_key(r#"{"id": "1", "id": "2"}"#).as_deref(),
            Some("id")
        );
        assert_eq!(
            duplicate_key(r#"{"data": {"items": [{"sku": 1}, {"sku": 2, "sku": 3}]}}"#).as_deref(),
            Some("data.items[1].sku")
        );
        assert_eq!(
            duplicate_key(r#"[{"x": 1}, {"y": 2, "y": 3}]"#).as_deref(),
            Some("[1].y")
        );
        // Not JSON at all: not this check's business.
        assert_eq!(duplicate_key("{"), None);
    }

    #[test]
    fn attributes_no_delivery_could_carry_are_refused() {
        let build = |f: &mut EventFields| {
            f.attr("specversion", "1.0")
                .attr("source", "/s")
                .attr("type", "t");
        };
        let mut f = EventFields::new();
        build(&mut f);
        f.attr("id", "x".repeat(MAX_ATTRIBUTE_BYTES + 1));
        assert_eq!(f.build().unwrap_err().field, "id");
        let mut f = EventFields::new();
        build(&mut f);
        f.attr("id", "1");
        for i in 0..=MAX_EXTENSIONS {
            f.attr(format!("ext{i}"), "v");
        }
        let e = f.build().unwrap_err();
        assert!(e.message.contains("extension attributes"), "{}", e.message);
        let mut f = EventFields::new();
        build(&mut f);
        f.attr("id", "1");
        for i in 0..8 {
            f.attr(format!("ext{i}"), "v".repeat(3000));
        }
        let e = f.build().unwrap_err();
        assert!(e.message.contains("bytes of attributes"), "{}", e.message);
    }
}
