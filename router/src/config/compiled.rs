//! What a configuration's rules compile to: one matcher per bus and each rule's
//! transform, made once by validation and shared by everything that runs rules.

use std::sync::Arc;

use super::RuleConfig;
use crate::event::Event;
use crate::matching::filter::Filter;
use crate::matching::rules::{CompiledRule, RuleSet};
use crate::transform::Transform;

/// Every rule of a configuration, compiled; rule `i` is `config.rules[i]`.
pub struct CompiledRules {
    set: RuleSet,
    transforms: Vec<Option<Arc<Transform>>>,
}

/// What one rule does with one event (`sluice test-rule`).
#[derive(Debug)]
pub struct Trial {
    /// Whether the rule's filter matches.
    pub matched: bool,
    /// Why not: one line per clause that failed (empty when it matched).
    pub explain: Vec<String>,
    /// What would be delivered (`None` when it did not match), or why the
    /// transform failed (the event would be dead-lettered).
    pub output: Result<Option<Event>, String>,
}

impl CompiledRules {
    /// From each rule's compiled filter and transform, in rule order.
    pub(crate) fn new(
        rules: &[RuleConfig],
        compiled: Vec<(Option<Filter>, Option<Transform>)>,
    ) -> Self {
        let mut transforms = Vec::with_capacity(rules.len());
        let mut compiled_rules = Vec::with_capacity(rules.len());
        for (rule, (filter, transform)) in rules.iter().zip(compiled) {
            compiled_rules.push(CompiledRule {
                name: rule.name.clone(),
                bus: rule.bus.clone(),
                filter,
            });
            transforms.push(transform.map(Arc::new));
        }
        Self {
            set: RuleSet::build(compiled_rules),
            transforms,
        }
    }

    /// The matcher of every bus.
    pub fn set(&self) -> &RuleSet {
        &self.set
    }

    /// Rule `rule`'s transform, if it has one.
    pub fn transform(&self, rule: usize) -> Option<&Arc<Transform>> {
        self.transforms.get(rule).and_then(Option::as_ref)
    }

    /// Run rule `rule` on `event` as delivery would, without delivering.
    pub fn trial(&self, rule: usize, event: &Event) -> Trial {
        let explain = self.set.rules[rule]
            .filter
            .as_ref()
            .map(|f| f.explain(event))
            .unwrap_or_default();
        let matched = explain.is_empty();
        let output = match (matched, self.transform(rule)) {
            (false, _) => Ok(None),
            (true, None) => Ok(Some(event.clone())),
            (true, Some(t)) => t.apply(event).map(Some),
        };
        Trial {
            matched,
            explain,
            output,
        }
    }
}
