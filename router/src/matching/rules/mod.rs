//! The rules of each bus, compiled together into one matcher per bus.
//!
//! Pattern branches are filed in a per-bus index (`index::BranchIndex`); rules whose filter has no
//! pattern (SQL or Subscriptions API filters only, or no filter at all) are checked
//! one by one. A rule matches when one of its pattern branches matches and the rest
//! of its filter (SQL, Subscriptions API filters) does too.

mod index;
mod interval;

use std::collections::HashMap;

use crate::config::RuleConfig;
use crate::event::{Event, FieldValue};
use crate::matching::filter::{Filter, FilterError};

/// A compiled rule.
pub struct CompiledRule {
    pub name: String,
    pub bus: String,
    pub filter: Option<Filter>,
}

struct Bus {
    /// Indexes into [`RuleSet::rules`].
    rules: Vec<u32>,
    /// Branch id -> (rule, branch of its pattern).
    branches: Vec<(u32, u32)>,
    index: index::BranchIndex,
    /// Rules without a pattern, checked for every event.
    scan: Vec<u32>,
}

/// Every rule, compiled per bus.
pub struct RuleSet {
    pub rules: Vec<CompiledRule>,
    buses: HashMap<String, Bus>,
}

/// A rule that failed to compile, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule:?}: filter.{}: {}", .error.path, .error.message)]
pub struct RuleError {
    pub rule: String,
    pub error: FilterError,
}

/// Reusable buffers for matching; keep one per task.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<u32>,
}

impl RuleSet {
    /// Compile every rule's filter and build the matchers; every rule that fails
    /// is reported. (Validation compiles filters itself and calls [`RuleSet::build`].)
    pub fn compile(configs: &[RuleConfig]) -> Result<Self, Vec<RuleError>> {
        let mut rules = Vec::with_capacity(configs.len());
        let mut errors = Vec::new();
        for config in configs {
            let filter = match &config.filter {
                Some(f) => match Filter::compile(f) {
                    Ok(f) => Some(f),
                    Err(es) => {
                        errors.extend(es.into_iter().map(|error| RuleError {
                            rule: config.name.clone(),
                            error,
                        }));
                        None
                    }
                },
                None => None,
            };
            rules.push(CompiledRule {
                name: config.name.clone(),
                bus: config.bus.clone(),
                filter,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self::build(rules))
    }

    /// The matchers of every bus over rules whose filters are compiled.
    pub fn build(rules: Vec<CompiledRule>) -> Self {
        let mut buses: HashMap<String, Bus> = HashMap::new();
        for (id, rule) in rules.iter().enumerate() {
            let id = id as u32;
            let bus = buses.entry(rule.bus.clone()).or_insert_with(|| Bus {
                rules: Vec::new(),
                branches: Vec::new(),
                index: index::BranchIndex::default(),
                scan: Vec::new(),
            });
            bus.rules.push(id);
            match rule.filter.as_ref().and_then(|f| f.pattern.as_ref()) {
                Some(pattern) => {
                    for (b, branch) in pattern.branches.iter().enumerate() {
                        let branch_id = bus.branches.len() as u32;
                        bus.branches.push((id, b as u32));
                        bus.index.insert(branch, branch_id);
                    }
                }
                None => bus.scan.push(id),
            }
        }
        for bus in buses.values_mut() {
            bus.index.build();
        }
        Self { rules, buses }
    }

    /// Push the ids of the rules of `bus` that `event` matches, in rule order.
    pub fn matching(&self, bus: &str, event: &Event, scratch: &mut Scratch, out: &mut Vec<u32>) {
        let Some(b) = self.buses.get(bus) else {
            return;
        };
        let start = out.len();
        let candidates = &mut scratch.candidates;
        candidates.clear();
        b.index.candidates(event, candidates);
        candidates.extend_from_slice(&b.index.unindexed);
        candidates.sort_unstable();
        candidates.dedup();
        let mut values: Vec<FieldValue<'_>> = Vec::new();
        for &branch_id in candidates.iter() {
            let (rule_id, branch) = b.branches[branch_id as usize];
            if out[start..].contains(&rule_id) {
                continue;
            }
            let Some(filter) = &self.rules[rule_id as usize].filter else {
                continue;
            };
            let Some(pattern) = &filter.pattern else {
                continue;
            };
            if pattern.branches[branch as usize].matches(event, &mut values)
                && filter.matches_rest(event)
            {
                out.push(rule_id);
            }
        }
        for &rule_id in &b.scan {
            let rule = &self.rules[rule_id as usize];
            if rule.filter.as_ref().is_none_or(|f| f.matches_rest(event)) {
                out.push(rule_id);
            }
        }
        out[start..].sort_unstable();
    }

    /// Buses that have rules.
    pub fn buses(&self) -> impl Iterator<Item = &str> {
        self.buses.keys().map(String::as_str)
    }

    pub fn rule_count(&self, bus: &str) -> usize {
        self.buses.get(bus).map_or(0, |b| b.rules.len())
    }
}

#[cfg(test)]
mod tests;
