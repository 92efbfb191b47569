//! `sluice test-rule`: a dry run of one rule against events from a file or stdin.
//! It says whether each event matches, and if not which clause failed and what
//! value was found there; then the event that would be delivered.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};
use sluice_connectors::Validated;
use sluice_router::cloudevents::AttributesReader;
use sluice_router::event::{Event, EventFields};

/// Output format of the dry run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Read events: one JSON object, a JSON array of them, or JSON lines.
fn read_events(source: &str) -> Result<Vec<Value>, String> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("cannot read {source}: {e}"))?
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(v) => Ok(vec![v]),
        Err(whole) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    format!(
                        "{source}: not a JSON event, array or JSON lines ({whole}); line {}: {e}",
                        i + 1
                    )
                })
            })
            .collect(),
    }
}

fn to_event(value: Value, n: usize) -> Result<Event, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "event {n}: must be a JSON object in the CloudEvents JSON format"
        ));
    };
    EventFields::from_structured(map)
        .and_then(EventFields::build)
        .map_err(|e| format!("event {n}: {e}"))
}

/// Run the dry run; `Err` is a config or input error (exit 1).
pub fn run(
    validated: &Validated,
    config_path: &Path,
    rule: &str,
    events: &str,
    format: Format,
) -> Result<(), String> {
    let rules = &validated.config.rules;
    let Some(index) = rules.iter().position(|r| r.name == rule) else {
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        return Err(format!(
            "{}: no rule {rule:?}; its rules are: {}",
            config_path.display(),
            if names.is_empty() {
                "(none)".to_owned()
            } else {
                names.join(", ")
            }
        ));
    };
    let rule = &rules[index];
    let values = read_events(events)?;
    let events = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| to_event(v, i + 1))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, event) in events.iter().enumerate() {
        let trial = validated.rules.trial(index, event);
        let (matched, explain) = (trial.matched, trial.explain);
        let (output, error) = match trial.output {
            Ok(Some(out)) => (serde_json::to_value(&out).unwrap_or(Value::Null), None),
            Ok(None) => (Value::Null, None),
            Err(e) => (Value::Null, Some(e)),
        };
        match format {
            Format::Json => {
                let mut result = json!({"matched": matched, "explain": explain, "output": output});
                if let Some(e) = &error {
                    result["error"] = json!(format!(
                        "transform failed (the event would be dead-lettered): {e}"
                    ));
                }
                println!("{result}");
            }
            Format::Text => {
                let id = event.id();
                if matched {
                    println!("event {} (id {id}): matches rule {}", i + 1, rule.name);
                    match &error {
                        Some(e) => {
                            println!("  transform failed, the event would be dead-lettered: {e}")
                        }
                        None => println!(
                            "  would deliver:\n{}",
                            serde_json::to_string_pretty(&output).unwrap_or_default()
                        ),
                    }
                } else {
                    println!(
                        "event {} (id {id}): does not match rule {}",
                        i + 1,
                        rule.name
                    );
                    for line in &explain {
                        println!("  {line}");
                    }
                }
            }
        }
    }
    Ok(())
}
