//! The per-bus rule index, in the spirit of AWS event-ruler and quamina: every
//! pattern branch is filed under one of its conditions (its "key"), in a trie of
//! field paths whose leaves hold hash maps (exact values), prefix/suffix tables and
//! an interval tree (numeric ranges). Matching walks the event's fields along the
//! trie, collects the branches whose key condition holds, and verifies only those.
//! So the cost of matching grows with the fields an event has and the rules that
//! nearly match it, not with the number of rules.

use std::collections::HashMap;

use serde_json::Value;

use super::interval::{IntervalIndex, Range};
use crate::event::{field_values, Event, FieldValue};
use crate::matching::pattern::{Branch, Cmp, Condition, Literal, Matcher};

/// Branch ids found in the index for one event.
pub type Candidates = Vec<u32>;

#[derive(Default)]
struct PathIndex {
    strings: HashMap<Box<str>, Vec<u32>>,
    numbers: HashMap<u64, Vec<u32>>,
    bools: [Vec<u32>; 2],
    nulls: Vec<u32>,
    folded: HashMap<Box<str>, Vec<u32>>,
    prefixes: Affixes,
    suffixes: Affixes,
    folded_prefixes: Affixes,
    folded_suffixes: Affixes,
    numeric: IntervalIndex,
}

/// Prefixes (or suffixes) by text, with the distinct lengths in use, so a lookup
/// probes one hash per length instead of one per rule.
#[derive(Default)]
struct Affixes {
    by_text: HashMap<Box<str>, Vec<u32>>,
    lengths: Vec<usize>,
}

impl Affixes {
    fn insert(&mut self, text: &str, id: u32) {
        self.by_text.entry(text.into()).or_default().push(id);
        if !self.lengths.contains(&text.len()) {
            self.lengths.push(text.len());
        }
    }

    fn lookup(&self, s: &str, suffix: bool, out: &mut Candidates) {
        for &len in &self.lengths {
            if len > s.len() {
                continue;
            }
            let at = if suffix { s.len() - len } else { len };
            if !s.is_char_boundary(at) {
                continue;
            }
            let part = if suffix { &s[at..] } else { &s[..at] };
            if let Some(ids) = self.by_text.get(part) {
                out.extend_from_slice(ids);
            }
        }
    }
}

/// `3` and `3.0` are one key; `-0.0` and `0.0` too.
fn number_key(n: f64) -> u64 {
    if n == 0.0 {
        0
    } else {
        n.to_bits()
    }
}

impl PathIndex {
    fn lookup(&self, value: &FieldValue<'_>, out: &mut Candidates) {
        match value {
            FieldValue::Str(s) => {
                if let Some(ids) = self.strings.get(s.as_ref()) {
                    out.extend_from_slice(ids);
                }
                self.prefixes.lookup(s, false, out);
                self.suffixes.lookup(s, true, out);
                let folds = !self.folded.is_empty()
                    || !self.folded_prefixes.by_text.is_empty()
                    || !self.folded_suffixes.by_text.is_empty();
                if folds {
                    let lower = s.to_lowercase();
                    if let Some(ids) = self.folded.get(lower.as_str()) {
                        out.extend_from_slice(ids);
                    }
                    self.folded_prefixes.lookup(&lower, false, out);
                    self.folded_suffixes.lookup(&lower, true, out);
                }
            }
            FieldValue::Num(n) => {
                if let Some(ids) = self.numbers.get(&number_key(*n)) {
                    out.extend_from_slice(ids);
                }
                self.numeric.stab(*n, out);
            }
            FieldValue::Bool(b) => out.extend_from_slice(&self.bools[usize::from(*b)]),
            FieldValue::Null => out.extend_from_slice(&self.nulls),
        }
    }

    /// File `id` under `m`; false when `m` cannot be indexed.
    fn insert(&mut self, m: &Matcher, id: u32) -> bool {
        match m {
            Matcher::Exact(Literal::Str(s)) => {
                self.strings.entry(s.as_str().into()).or_default().push(id)
            }
            Matcher::Exact(Literal::Num(n)) => {
                self.numbers.entry(number_key(*n)).or_default().push(id)
            }
            Matcher::Exact(Literal::Bool(b)) => self.bools[usize::from(*b)].push(id),
            Matcher::Exact(Literal::Null) => self.nulls.push(id),
            Matcher::EqualsIgnoreCase(s) => self
                .folded
                .entry(s.to_lowercase().into())
                .or_default()
                .push(id),
            Matcher::Prefix(p) => self.prefixes.insert(p, id),
            Matcher::Suffix(p) => self.suffixes.insert(p, id),
            Matcher::PrefixIgnoreCase(p) => self.folded_prefixes.insert(p, id),
            Matcher::SuffixIgnoreCase(p) => self.folded_suffixes.insert(p, id),
            // A wildcard is filed under its literal head; verification does the rest.
            Matcher::Wildcard(w) => self.prefixes.insert(w.literal_prefix(), id),
            Matcher::Numeric(cmps) => self.numeric.insert(range(cmps), id),
            _ => return false,
        }
        true
    }
}

fn range(cmps: &[(Cmp, f64)]) -> Range {
    let mut r = Range {
        lo: f64::NEG_INFINITY,
        lo_incl: false,
        hi: f64::INFINITY,
        hi_incl: false,
    };
    for (cmp, x) in cmps {
        match cmp {
            Cmp::Eq => {
                r = Range {
                    lo: *x,
                    lo_incl: true,
                    hi: *x,
                    hi_incl: true,
                };
            }
            Cmp::Gt | Cmp::Ge => {
                r.lo = *x;
                r.lo_incl = *cmp == Cmp::Ge;
            }
            Cmp::Lt | Cmp::Le => {
                r.hi = *x;
                r.hi_incl = *cmp == Cmp::Le;
            }
        }
    }
    r
}

/// How well a matcher narrows candidates; `None` when it cannot be indexed.
fn score(m: &Matcher) -> Option<u32> {
    Some(match m {
        Matcher::Exact(Literal::Str(_) | Literal::Num(_)) => 100,
        Matcher::Exact(_) => 20,
        Matcher::EqualsIgnoreCase(_) => 90,
        Matcher::Prefix(p)
        | Matcher::Suffix(p)
        | Matcher::PrefixIgnoreCase(p)
        | Matcher::SuffixIgnoreCase(p) => 40 + p.len().min(40) as u32,
        Matcher::Wildcard(w) if !w.literal_prefix().is_empty() => {
            30 + w.literal_prefix().len().min(40) as u32
        }
        Matcher::Numeric(cmps) if cmps.len() == 2 || cmps[0].0 == Cmp::Eq => 50,
        Matcher::Numeric(_) => 10,
        _ => return None,
    })
}

/// A condition can key a branch when every one of its matchers is indexable; its
/// score is its weakest matcher's.
fn key_score(c: &Condition) -> Option<u32> {
    c.matchers
        .iter()
        .map(score)
        .try_fold(u32::MAX, |acc, s| s.map(|s| acc.min(s)))
}

#[derive(Default)]
struct Node {
    children: HashMap<String, Node>,
    index: Option<PathIndex>,
}

/// The compiled index of one bus.
#[derive(Default)]
pub struct BranchIndex {
    root: Node,
    /// Branches with no indexable condition; checked for every event.
    pub unindexed: Vec<u32>,
}

impl BranchIndex {
    /// File branch `id`: under its best key condition, or as unindexed.
    pub fn insert(&mut self, branch: &Branch, id: u32) {
        let key = branch
            .conditions
            .iter()
            .filter_map(|c| key_score(c).map(|s| (s, c)))
            .max_by_key(|(s, _)| *s);
        let Some((_, condition)) = key else {
            self.unindexed.push(id);
            return;
        };
        let mut node = &mut self.root;
        for seg in &condition.path {
            node = node.children.entry(seg.clone()).or_default();
        }
        let index = node.index.get_or_insert_with(PathIndex::default);
        for m in &condition.matchers {
            index.insert(m, id);
        }
    }

    /// Finish building (sorts the interval trees).
    pub fn build(&mut self) {
        fn walk(node: &mut Node) {
            if let Some(index) = &mut node.index {
                index.numeric.build();
            }
            node.children.values_mut().for_each(walk);
        }
        walk(&mut self.root);
    }

    /// Push every branch id whose key condition holds for `event` (may repeat).
    pub fn candidates(&self, event: &Event, out: &mut Candidates) {
        let mut values = Vec::new();
        for (name, node) in &self.root.children {
            if name == "data" {
                match event.data() {
                    Some(cloudevents::Data::Json(v)) => walk_json(v, node, out),
                    Some(cloudevents::Data::String(s)) => {
                        if let Some(index) = &node.index {
                            index.lookup(&FieldValue::Str(s.as_str().into()), out);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            if let Some(index) = &node.index {
                values.clear();
                field_values(event, &[name.as_str()], &mut values);
                for v in &values {
                    index.lookup(v, out);
                }
            }
        }
    }
}

fn walk_json(value: &Value, node: &Node, out: &mut Candidates) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| walk_json(v, node, out)),
        Value::Object(map) => {
            if map.len() < node.children.len() {
                for (k, v) in map {
                    if let Some(child) = node.children.get(k) {
                        walk_json(v, child, out);
                    }
                }
            } else {
                for (k, child) in &node.children {
                    if let Some(v) = map.get(k) {
                        walk_json(v, child, out);
                    }
                }
            }
        }
        scalar => {
            if let Some(index) = &node.index {
                let v = match scalar {
                    Value::String(s) => FieldValue::Str(s.as_str().into()),
                    Value::Number(n) => FieldValue::Num(n.as_f64().unwrap_or(f64::NAN)),
                    Value::Bool(b) => FieldValue::Bool(*b),
                    _ => FieldValue::Null,
                };
                index.lookup(&v, out);
            }
        }
    }
}
