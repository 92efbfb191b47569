//! `sluice validate` and `sluice schema` as a user runs them.

use std::process::Command;

use crate::harness::{validate, BIN};

#[test]
fn validate_lists_every_error_and_exits_1() {
    let text = "\
server:
  listen: 127.0.0.1:8080
targets:
  - name: fn
    type: http
    url: ftp://example/
    timeout: soon
  - name: fn
    type: carrier-pigeon
rules:
  - name: r1
    targets: [fn, ghost]
    filter:
      pattern:
        type: order.created
        data: { amount: [{ numerc: [\">\", 1] }] }
    retry: { max_attempts: 0 }
  - name: bad name
    targets: []
";
    let (code, _, stderr) = validate(text);
    assert_eq!(code, 1);
    let lines: Vec<&str> = stderr.lines().collect();
    let expect = [
        "targets[0].timeout: invalid value: string \"soon\", expected a duration (line 7, column 5)",
        "targets[1].type: unknown type \"carrier-pigeon\"; expected one of http, kafka, rabbitmq, postgres, elasticsearch, s3, file, discard (line 9, column 5)",
        "rules[0].targets[1]: unknown target \"ghost\" (rule \"r1\") (line 12, column 19)",
        "rules[0].filter.pattern.data.amount[0]: unknown matcher \"numerc\"",
        "rules[0].filter.pattern.type: must be a list of values or matchers",
        "rules[0].retry.max_attempts: must be at least 1 (line 17, column 14)",
        "rules[1].name: \"bad name\" is not a valid name",
        "rules[1].targets: a rule needs at least one target (line 19, column 5)",
    ];
    for e in expect {
        assert!(
            lines.iter().any(|l| l.contains(e)),
            "missing {e:?} in:\n{stderr}"
        );
    }
    assert_eq!(lines.len(), expect.len(), "{stderr}");
    assert!(
        lines.iter().all(|l| l.contains("sluice.yaml: ")),
        "{stderr}"
    );
}

#[test]
fn validate_accepts_a_good_file() {
    let (code, stdout, stderr) = validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9000/\nrules:\n  - name: r\n    targets: [fn]\n",
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("valid (0 sources, 1 targets, 1 rules)"),
        "{stdout}"
    );
}

#[test]
fn serve_refuses_a_bad_config_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.yaml");
    std::fs::write(&path, "rules:\n  - name: r\n    targets: [nowhere]\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("rules[0].targets[0]: unknown target \"nowhere\""),
        "{stderr}"
    );
}

#[test]
fn schema_command_prints_the_checked_in_schema() {
    let out = Command::new(BIN).arg("schema").output().unwrap();
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/sluice.schema.json"
    ))
    .unwrap();
    let stored: serde_json::Value = serde_json::from_str(&file).unwrap();
    assert_eq!(printed, stored, "schemas/sluice.schema.json is stale: run `cargo run -- schema > schemas/sluice.schema.json`");
}

/// Every example config in the repository, and every YAML block of the README and
/// of `docs/`, is a valid configuration; a block whose first line names an example
/// file (`# schemas/examples/NAME.yaml`) is that file, word for word.
#[test]
fn every_example_config_is_valid() {
    let root = env!("CARGO_MANIFEST_DIR");
    let env = |name: &str| {
        Some(match name {
            "KAFKA_BROKERS" => "127.0.0.1:9092".to_owned(),
            "DATABASE_URL" => "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            // A Standard Webhooks secret (`whsec_` and base64).
            "BILLING_WEBHOOK_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            _ => "http://127.0.0.1:9000/".to_owned(),
        })
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{root}/schemas/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            if let Err(e) = sluice_connectors::load_with_env(&text, &env) {
                panic!("{}:\n{e}", path.display());
            }
            checked += 1;
        }
    }
    let mut pages = vec![format!("{root}/README.md")];
    for entry in std::fs::read_dir(format!("{root}/docs")).unwrap() {
        pages.push(entry.unwrap().path().display().to_string());
    }
    let mut copies = 0;
    for page in &pages {
        let markdown = std::fs::read_to_string(page).unwrap();
        for (i, block) in markdown.split("```yaml\n").skip(1).enumerate() {
            let text = block.split("```").next().unwrap();
            if let Err(e) = sluice_connectors::load_with_env(text, &env) {
                panic!("{page} yaml block {i}:\n{text}\n{e}");
            }
            if let Some(file) = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# "))
                .and_then(|l| l.split(':').next())
                .filter(|f| f.starts_with("schemas/examples/"))
            {
                let example = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
                assert_eq!(text, example, "{page} yaml block {i} is not {file}");
                copies += 1;
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "found only {checked} example configs");
    assert!(
        copies >= 2,
        "README shows {copies} example files word for word"
    );
}

#[test]
fn dead_letter_must_name_another_known_target() {
    let (code, _, stderr) = validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9/\nrules:\n  - name: a\n    targets: [fn]\n    dead_letter: nowhere\n  - name: b\n    targets: [fn]\n    dead_letter: fn\n",
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(
            "rules[0].dead_letter: unknown target \"nowhere\" (rule \"a\") (line 8, column 5)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("rules[1].dead_letter: \"fn\" is already one of the rule's targets"),
        "{stderr}"
    );
}

#[test]
fn an_http_target_batch_of_nothing_is_refused_with_its_path() {
    let (code, _, stderr) = validate(
        "targets:\n  - name: fn\n    type: http\n    url: http://127.0.0.1:9/\n    batch: { max_events: 0, max_bytes: 0 }\nrules:\n  - name: r\n    targets: [fn]\n",
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("targets[0].batch.max_events: must be at least 1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("targets[0].batch.max_bytes: must be at least 1"),
        "{stderr}"
    );
}
