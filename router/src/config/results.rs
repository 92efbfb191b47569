//! Checks of the rules' result destinations (`on_success`, `on_failure`): each
//! names exactly one existing bus or target, and no rule's results can route
//! back to it unless it says `allow_cycles: true`.
//!
//! Filters cannot be decided statically, so the rule graph says "can route": a
//! rule whose destination is bus B has an edge to every rule on bus B.

use std::collections::{HashSet, VecDeque};

use super::{check_name, DestinationConfig, RuleConfig, Validator};

/// The two destination keys of a rule, in the order they are checked.
const KEYS: [&str; 2] = ["on_success", "on_failure"];

fn destinations(rule: &RuleConfig) -> [(&'static str, Option<&DestinationConfig>); 2] {
    [
        (KEYS[0], rule.on_success.as_ref()),
        (KEYS[1], rule.on_failure.as_ref()),
    ]
}

/// Check `server.max_hops` and every rule's destinations; `targets` are the
/// known target names.
pub(super) fn validate(
    c: &mut Validator<'_>,
    rules: &[RuleConfig],
    targets: &HashSet<&str>,
    max_hops: u32,
) {
    if max_hops == 0 {
        c.push("server.max_hops", "must be greater than 0");
    }
    let buses: HashSet<&str> = rules.iter().map(|r| r.bus.as_str()).collect();
    for (i, rule) in rules.iter().enumerate() {
        for (key, dest) in destinations(rule) {
            let Some(dest) = dest else { continue };
            let at = format!("rules[{i}].{key}");
            match (&dest.bus, &dest.target) {
                (Some(_), Some(_)) => c.push(
                    at,
                    format!(
                        "give one of `bus` or `target`, not both (rule {:?})",
                        rule.name
                    ),
                ),
                (None, None) => c.push(
                    at,
                    format!(
                        "give one of `bus` (publish the result onto a bus) or `target` \
                         (deliver it to a target) (rule {:?})",
                        rule.name
                    ),
                ),
                (Some(bus), None) => {
                    check_name(c, format!("{at}.bus"), bus);
                    if !buses.contains(bus.as_str()) {
                        c.push(
                            format!("{at}.bus"),
                            format!(
                                "no rule is on bus {bus:?}: results published there would \
                                 match nothing (rule {:?})",
                                rule.name
                            ),
                        );
                    }
                }
                (None, Some(target)) => {
                    if !targets.contains(target.as_str()) {
                        c.push(
                            format!("{at}.target"),
                            format!("unknown target {target:?} (rule {:?})", rule.name),
                        );
                    }
                    // Results go through subscription `<rule>.on-success` (or
                    // `.on-failure`): a rule target of that name would share it.
                    let suffix = key.replace('_', "-");
                    if rule.targets.contains(&suffix) {
                        c.push(
                            format!("{at}.target"),
                            format!(
                                "the rule also delivers to a target named {suffix:?}, whose \
                                 subscription {0}.{suffix} is the one its results use; rename \
                                 that target (rule {0:?})",
                                rule.name
                            ),
                        );
                    }
                }
            }
        }
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.allow_cycles {
            continue;
        }
        if let Some((key, path)) = cycle(rules, i) {
            c.push(
                format!("rules[{i}].{key}"),
                format!(
                    "results of rule {:?} can route back to it: {path}; break the loop, or set \
                     allow_cycles: true on the rule (server.max_hops still ends a chain)",
                    rule.name
                ),
            );
        }
    }
}

/// The rules that results of `rule` published through `key` can reach.
fn successors<'a>(
    rules: &'a [RuleConfig],
    rule: &'a RuleConfig,
) -> impl Iterator<Item = (&'static str, &'a str, usize)> + 'a {
    destinations(rule)
        .into_iter()
        .filter_map(|(key, dest)| Some((key, dest?.bus.as_deref()?)))
        .flat_map(move |(key, bus)| {
            rules
                .iter()
                .enumerate()
                .filter(move |(_, r)| r.bus == bus)
                .map(move |(j, _)| (key, bus, j))
        })
}

/// The shortest way results of rule `start` route back to it: the key of its
/// first step and the path in words, e.g. `a (bus default) -on_success-> bus
/// results: b (bus results) -on_failure-> bus default: a`.
fn cycle(rules: &[RuleConfig], start: usize) -> Option<(&'static str, String)> {
    // For each rule reached: the rule it was reached from and through which key.
    let mut parent: Vec<Option<(usize, &'static str)>> = vec![None; rules.len()];
    let mut queue = VecDeque::from([start]);
    let mut last = None;
    'search: while let Some(at) = queue.pop_front() {
        for (key, _, next) in successors(rules, &rules[at]) {
            if next == start {
                last = Some((at, key));
                break 'search;
            }
            if parent[next].is_none() && next != start {
                parent[next] = Some((at, key));
                queue.push_back(next);
            }
        }
    }
    let (mut at, key) = last?;
    // Walk back from the rule that closes the loop to `start`.
    let mut steps = vec![(at, key)];
    while at != start {
        let (prev, key) = parent[at]?;
        steps.push((prev, key));
        at = prev;
    }
    steps.reverse();
    let first_key = steps[0].1;
    let mut path = String::new();
    for (rule, key) in &steps {
        let r = &rules[*rule];
        let bus = destinations(r)
            .into_iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, d)| d?.bus.clone())
            .unwrap_or_default();
        path.push_str(&format!("{} (bus {}) -{key}-> bus {bus}: ", r.name, r.bus));
    }
    path.push_str(&rules[start].name);
    Some((first_key, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        name: &str,
        bus: &str,
        on_success: Option<&str>,
        on_failure: Option<&str>,
    ) -> RuleConfig {
        let dest = |b: Option<&str>| {
            b.map(|b| DestinationConfig {
                bus: Some(b.into()),
                target: None,
            })
        };
        RuleConfig {
            name: name.into(),
            bus: bus.into(),
            filter: None,
            targets: vec!["t".into()],
            transform: None,
            retry: Default::default(),
            dead_letter: None,
            on_success: dest(on_success),
            on_failure: dest(on_failure),
            allow_cycles: false,
        }
    }

    #[test]
    fn finds_the_shortest_loop_through_other_buses() {
        let rules = vec![
            rule("a", "default", Some("results"), None),
            rule("b", "results", None, Some("alerts")),
            rule("c", "alerts", None, Some("default")),
            rule("d", "results", None, None),
        ];
        let (key, path) = cycle(&rules, 0).unwrap();
        assert_eq!(key, "on_success");
        assert_eq!(
            path,
            "a (bus default) -on_success-> bus results: b (bus results) -on_failure-> \
             bus alerts: c (bus alerts) -on_failure-> bus default: a"
        );
        assert!(cycle(&rules, 3).is_none(), "d makes no results");
    }

    #[test]
    fn a_self_loop_and_a_chain_without_one() {
        let rules = vec![rule("a", "default", None, Some("default"))];
        let (key, path) = cycle(&rules, 0).unwrap();
        assert_eq!(key, "on_failure");
        assert_eq!(path, "a (bus default) -on_failure-> bus default: a");
        let chain = vec![
            rule("a", "default", Some("results"), None),
            rule("b", "results", Some("done"), None),
            rule("c", "done", None, None),
        ];
        assert!((0..3).all(|i| cycle(&chain, i).is_none()));
    }
}
