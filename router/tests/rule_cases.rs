//! Rule behaviour as data: every YAML file in `tests/rules/` lists rules, input
//! events and what must happen (match or not, the explanation, the delivered output).
//! Each event is checked through the compiled per-bus index and through the rule's
//! own filter, which must agree.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};
use sluice_router::config::RuleConfig;
use sluice_router::event::{Event, EventFields};
use sluice_router::matching::rules::{RuleSet, Scratch};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[allow(dead_code)]
    name: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// A rule as in a config file; `name` and `targets` may be left out.
    rule: Value,
    /// For invalid rules: a piece of the expected compile error.
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    events: Vec<EventCase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventCase {
    /// A structured event; `specversion`, `id`, `source`, `type` get defaults.
    event: Value,
    #[serde(rename = "match")]
    matches: bool,
    /// The explanation lines expected when the event does not match.
    #[serde(default)]
    explain: Option<Vec<String>>,
    /// The data the rule's transform delivers.
    #[serde(default)]
    output: Option<Value>,
    /// A piece of the expected transform error.
    #[serde(default)]
    transform_error: Option<String>,
}

fn build_event(partial: &Value, n: usize) -> Event {
    let mut e =
        json!({"specversion": "1.0", "id": format!("case-{n}"), "source": "/test", "type": "test"});
    for (k, v) in partial.as_object().expect("event is an object") {
        e[k] = v.clone();
    }
    let Value::Object(map) = e else {
        unreachable!()
    };
    EventFields::from_structured(map).unwrap().build().unwrap()
}

fn rule_config(rule: &Value) -> Result<RuleConfig, String> {
    let mut r = json!({"name": "case", "targets": ["t"]});
    for (k, v) in rule.as_object().ok_or("rule is an object")? {
        r[k] = v.clone();
    }
    serde_json::from_value(r).map_err(|e| e.to_string())
}

fn run_file(path: &Path, failures: &mut Vec<String>) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let file: File =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut checked = 0;
    for (c, case) in file.cases.iter().enumerate() {
        let at = format!("{} case {c}", path.file_name().unwrap().to_string_lossy());
        let compiled = rule_config(&case.rule).and_then(|r| {
            let set = RuleSet::compile(std::slice::from_ref(&r)).map_err(|es| {
                es.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            })?;
            Ok((r, set))
        });
        let (config, set) = match (compiled, &case.error) {
            (Err(e), Some(want)) => {
                checked += 1;
                if !e.contains(want.as_str()) {
                    failures.push(format!("{at}: error {e:?} does not contain {want:?}"));
                }
                continue;
            }
            (Err(e), None) => {
                failures.push(format!("{at}: rule does not compile: {e}"));
                continue;
            }
            (Ok(_), Some(want)) => {
                failures.push(format!(
                    "{at}: expected the error {want:?}, but the rule compiled"
                ));
                continue;
            }
            (Ok(x), None) => x,
        };
        let transform = config.transform.as_ref().map(|t| {
            sluice_router::transform::Transform::compile(t)
                .unwrap_or_else(|e| panic!("{at}: transform: {e:?}"))
        });
        for (i, ev) in case.events.iter().enumerate() {
            checked += 1;
            let at = format!("{at} event {i}");
            let event = build_event(&ev.event, i);
            let mut matched = Vec::new();
            set.matching("default", &event, &mut Scratch::default(), &mut matched);
            let by_index = !matched.is_empty();
            let rule = &set.rules[0];
            let by_scan = rule
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&event, &mut Vec::new()));
            if by_index != by_scan {
                failures.push(format!(
                    "{at}: index says {by_index}, filter says {by_scan}"
                ));
            }
            if by_scan != ev.matches {
                let why = rule
                    .filter
                    .as_ref()
                    .map(|f| f.explain(&event))
                    .unwrap_or_default();
                failures.push(format!(
                    "{at}: expected match={}, got {by_scan} ({why:?})",
                    ev.matches
                ));
                continue;
            }
            if let Some(want) = &ev.explain {
                let got = rule
                    .filter
                    .as_ref()
                    .map(|f| f.explain(&event))
                    .unwrap_or_default();
                if &got != want {
                    failures.push(format!("{at}: explanation {got:?}, expected {want:?}"));
                }
            }
            if ev.output.is_some() || ev.transform_error.is_some() {
                let Some(t) = &transform else {
                    failures.push(format!("{at}: output given but the rule has no transform"));
                    continue;
                };
                match (t.apply(&event), &ev.output, &ev.transform_error) {
                    (Ok(out), Some(want), _) => {
                        let got = serde_json::to_value(&out).unwrap();
                        for (k, v) in want
                            .as_object()
                            .expect("output is an object of attributes and data")
                        {
                            if got.get(k) != Some(v) {
                                failures.push(format!(
                                    "{at}: output {k} = {:?}, expected {v}",
                                    got.get(k)
                                ));
                            }
                        }
                    }
                    (Err(e), _, Some(want)) if e.contains(want.as_str()) => {}
                    (result, _, _) => failures.push(format!("{at}: transform gave {result:?}")),
                }
            }
        }
    }
    checked
}

#[test]
fn rule_cases() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    let mut checked = 0;
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml"))
    {
        checked += run_file(f, &mut failures);
    }
    println!("{checked} rule cases checked in {} files", files.len());
    assert!(
        failures.is_empty(),
        "{} failing rule cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 50, "only {checked} cases found");
}
