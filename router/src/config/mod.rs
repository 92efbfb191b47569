//! Configuration: YAML -> serde types -> [`validate`] (pure, collects every error
//! with its path and position) -> building happens in the binary.

mod kafka;
mod storage;
mod types;
mod yaml;

use std::collections::HashSet;
use std::fmt;

use serde::de::DeserializeOwned;

pub use storage::*;
pub use types::*;
pub use yaml::Positions;

use crate::matching::filter::Filter;
use crate::transform::Transform;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where, e.g. `rules[0].targets[1]` (empty for the whole document).
    pub path: String,
    pub message: String,
    /// Line and column in the YAML, both from 1, when known.
    pub position: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<document>"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)?;
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

struct Collector<'a> {
    positions: &'a Positions,
    errors: Vec<ConfigError>,
    /// Names of targets whose entries failed to parse, so rules naming them are
    /// not reported a second time as naming an unknown target.
    unparsed_targets: Vec<String>,
    /// Paths already reported while parsing; validation adds nothing under them.
    reported: Vec<String>,
    /// For `sources`, `targets` and `rules`: the position in the file of each entry
    /// that parsed. Validation counts parsed entries; an entry that failed to parse
    /// must not shift the index (and line) reported for the ones after it.
    original: Vec<(&'static str, Vec<usize>)>,
}

impl<'a> Collector<'a> {
    fn new(positions: &'a Positions) -> Self {
        Self {
            positions,
            errors: Vec::new(),
            unparsed_targets: Vec::new(),
            reported: Vec::new(),
            original: Vec::new(),
        }
    }

    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = self.in_file(path.into());
        if self.reported.contains(&path) {
            return;
        }
        let position = self.positions.find(&path);
        self.errors.push(ConfigError {
            path,
            message: message.into(),
            position,
        });
    }
}

impl Collector<'_> {
    /// `targets[1].url` as the file numbers it, when entries before it failed to parse.
    fn in_file(&self, path: String) -> String {
        for (list, indices) in &self.original {
            let Some(rest) = path.strip_prefix(list).and_then(|r| r.strip_prefix('[')) else {
                continue;
            };
            let Some((index, tail)) = rest.split_once(']') else {
                continue;
            };
            if let Some(&at) = index.parse::<usize>().ok().and_then(|i| indices.get(i)) {
                return format!("{list}[{at}]{tail}");
            }
        }
        path
    }
}

/// Parse and validate a configuration, reading `${NAME}` from the process environment.
pub fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_with_env(text, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let positions = Positions::index(text);
    let mut c = Collector::new(&positions);
    let config = parse(text, env, &mut c);
    if let Some(config) = &config {
        c.reported = c.errors.iter().map(|e| e.path.clone()).collect();
        validate_into(config, &mut c);
    }
    match config {
        Some(config) if c.errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(c.errors)),
    }
}

fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Collector<'_>,
) -> Option<Config> {
    let mut doc: serde_yaml::Value = match serde_yaml::from_str(text) {
        Ok(doc) => doc,
        Err(e) => {
            let position = e.location().map(|l| (l.line(), l.column()));
            c.errors.push(ConfigError {
                path: String::new(),
                message: format!("not valid YAML: {e}"),
                position,
            });
            return None;
        }
    };
    if doc.is_null() {
        return Some(Config::default());
    }
    let mut env_errors = Vec::new();
    yaml::substitute_env(&mut doc, "", env, &mut env_errors);
    for (path, message) in env_errors {
        c.push(path, message);
    }
    let serde_yaml::Value::Mapping(mut top) = doc else {
        c.push(
            "",
            "the configuration must be a mapping with server, sources, targets and rules",
        );
        return None;
    };
    let mut config = Config::default();
    if let Some(server) = top.remove("server") {
        if let Some(server) = section(server, "server", c) {
            config.server = server;
        }
    }
    config.sources = list(top.remove("sources"), "sources", c, tagged::<SourceConfig>);
    config.targets = list(top.remove("targets"), "targets", c, |value, path, c| {
        let name = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        let target = tagged::<TargetConfig>(value, path, c);
        if let (None, Some(name)) = (&target, name) {
            c.unparsed_targets.push(name);
        }
        target
    });
    config.rules = list(top.remove("rules"), "rules", c, section::<RuleConfig>);
    for (key, _) in top {
        let key = key
            .as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned);
        c.push(
            key,
            "unknown key; expected server, sources, targets or rules",
        );
    }
    Some(config)
}

/// Deserialize one section, reporting a failure at the deepest path serde knows.
fn section<T: DeserializeOwned>(
    value: serde_yaml::Value,
    path: &str,
    c: &mut Collector<'_>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut full = path.to_owned();
            let inner = e.path().to_string();
            if inner != "." {
                full = format!("{full}.{inner}").replace(".[", "[");
            }
            let message = e.into_inner().to_string();
            // serde names an unknown key only in its message; point at the key itself.
            if let Some(key) = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
            {
                if !full.ends_with(&format!(".{key}")) {
                    full = format!("{full}.{key}");
                }
            }
            c.push(full, message);
            None
        }
    }
}

/// A closed, `type`-tagged enum of connector configs. serde buffers the content of
/// internally tagged enums and loses the path inside them, so sluice reads the tag
/// itself and deserializes the variant's struct directly.
trait Tagged: Sized {
    /// The accepted values of `type`.
    const TYPES: &'static [&'static str];
    fn variant(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        c: &mut Collector<'_>,
    ) -> Option<Self>;
}

impl Tagged for SourceConfig {
    const TYPES: &'static [&'static str] = &["http", "kafka"];
    fn variant(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        c: &mut Collector<'_>,
    ) -> Option<Self> {
        match tag {
            "http" => section(value, path, c).map(SourceConfig::Http),
            "kafka" => section(value, path, c).map(SourceConfig::Kafka),
            _ => None,
        }
    }
}

impl Tagged for TargetConfig {
    const TYPES: &'static [&'static str] = &[
        "http",
        "kafka",
        "postgres",
        "elasticsearch",
        "s3",
        "discard",
    ];
    fn variant(
        tag: &str,
        value: serde_yaml::Value,
        path: &str,
        c: &mut Collector<'_>,
    ) -> Option<Self> {
        match tag {
            "http" => section(value, path, c).map(TargetConfig::Http),
            "kafka" => section(value, path, c).map(TargetConfig::Kafka),
            "postgres" => section(value, path, c).map(TargetConfig::Postgres),
            "elasticsearch" => section(value, path, c).map(TargetConfig::Elasticsearch),
            "s3" => section(value, path, c).map(TargetConfig::S3),
            "discard" => section(value, path, c).map(TargetConfig::Discard),
            _ => None,
        }
    }
}

fn tagged<T: Tagged>(value: serde_yaml::Value, path: &str, c: &mut Collector<'_>) -> Option<T> {
    let serde_yaml::Value::Mapping(mut map) = value else {
        c.push(path, "must be a mapping with a `type`");
        return None;
    };
    let expected = T::TYPES.join(", ");
    match map.remove("type") {
        Some(serde_yaml::Value::String(tag)) if T::TYPES.contains(&tag.as_str()) => {
            T::variant(&tag, serde_yaml::Value::Mapping(map), path, c)
        }
        Some(serde_yaml::Value::String(tag)) => {
            c.push(
                format!("{path}.type"),
                format!("unknown type {tag:?}; expected one of {expected}"),
            );
            None
        }
        Some(_) => {
            c.push(format!("{path}.type"), format!("must be one of {expected}"));
            None
        }
        None => {
            c.push(
                path,
                format!("`type` is missing; expected one of {expected}"),
            );
            None
        }
    }
}

/// Deserialize each element of a list on its own, so one bad entry does not hide
/// the errors of the others.
fn list<T>(
    value: Option<serde_yaml::Value>,
    path: &'static str,
    c: &mut Collector<'_>,
    mut element: impl FnMut(serde_yaml::Value, &str, &mut Collector<'_>) -> Option<T>,
) -> Vec<T> {
    match value {
        None | Some(serde_yaml::Value::Null) => Vec::new(),
        Some(serde_yaml::Value::Sequence(items)) => {
            let mut parsed = Vec::new();
            let mut original = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                if let Some(v) = element(item, &format!("{path}[{i}]"), c) {
                    parsed.push(v);
                    original.push(i);
                }
            }
            c.original.push((path, original));
            parsed
        }
        Some(_) => {
            c.push(path, "must be a list");
            Vec::new()
        }
    }
}

/// Check a parsed configuration; pure, no I/O. Positions come from `positions`.
pub fn validate(config: &Config, positions: &Positions) -> Result<(), ConfigErrors> {
    let mut c = Collector::new(positions);
    validate_into(config, &mut c);
    if c.errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(c.errors))
    }
}

/// Names of rules, targets, sources and buses: they appear in URLs, metric labels
/// and subscription names (`<rule>.<target>`), so they are kept to a safe alphabet.
fn check_name(c: &mut Collector<'_>, path: String, name: &str) {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        c.push(
            path,
            format!("{name:?} is not a valid name: use 1-64 letters, digits, '-' or '_'"),
        );
    }
}

fn check_unique<'a>(
    c: &mut Collector<'_>,
    kind: &str,
    names: impl Iterator<Item = &'a str>,
) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        check_name(c, format!("{kind}[{i}].name"), name);
        if !seen.insert(name) {
            c.push(
                format!("{kind}[{i}].name"),
                format!("duplicate name {name:?}"),
            );
        }
    }
    seen
}

fn validate_into(config: &Config, c: &mut Collector<'_>) {
    let server = &config.server;
    if server.listen.parse::<std::net::SocketAddr>().is_err() {
        c.push(
            "server.listen",
            format!(
                "{:?} is not an address such as 127.0.0.1:8080",
                server.listen
            ),
        );
    }
    if server.data_dir.is_empty() {
        c.push("server.data_dir", "must not be empty");
    }
    if server.max_event_bytes == 0 {
        c.push("server.max_event_bytes", "must be greater than 0");
    }
    if server.max_batch_bytes < server.max_event_bytes {
        c.push(
            "server.max_batch_bytes",
            "must be at least server.max_event_bytes",
        );
    }

    check_unique(c, "sources", config.sources.iter().map(SourceConfig::name));
    for (i, source) in config.sources.iter().enumerate() {
        check_name(c, format!("sources[{i}].bus"), source.bus());
        if let SourceConfig::Kafka(k) = source {
            kafka::validate_source(c, i, k);
        }
    }

    let mut targets = check_unique(c, "targets", config.targets.iter().map(TargetConfig::name));
    let unparsed = std::mem::take(&mut c.unparsed_targets);
    targets.extend(unparsed.iter().map(String::as_str));
    for (i, target) in config.targets.iter().enumerate() {
        match target {
            TargetConfig::Http(t) => validate_http_target(c, i, t),
            TargetConfig::Kafka(t) => kafka::validate_target(c, i, t),
            TargetConfig::Postgres(t) => storage::validate_postgres(c, i, t),
            TargetConfig::Elasticsearch(t) => storage::validate_elasticsearch(c, i, t),
            TargetConfig::S3(t) => storage::validate_s3(c, i, t),
            TargetConfig::Discard(t) => {
                let at = format!("targets[{i}]");
                storage::validate_batch(c, &at, &(&t.batch).into(), t.concurrency);
            }
        }
    }

    check_unique(c, "rules", config.rules.iter().map(|r| r.name.as_str()));
    for (i, rule) in config.rules.iter().enumerate() {
        let at = |field: &str| format!("rules[{i}].{field}");
        check_name(c, at("bus"), &rule.bus);
        if rule.targets.is_empty() {
            c.push(at("targets"), "a rule needs at least one target");
        }
        let mut seen = HashSet::new();
        for (j, t) in rule.targets.iter().enumerate() {
            if !targets.contains(t.as_str()) {
                c.push(
                    format!("rules[{i}].targets[{j}]"),
                    format!("unknown target {t:?} (rule {:?})", rule.name),
                );
            } else if !seen.insert(t) {
                c.push(
                    format!("rules[{i}].targets[{j}]"),
                    format!("target {t:?} is listed twice"),
                );
            }
        }
        if let Some(filter) = &rule.filter {
            if let Err(errors) = Filter::compile(filter) {
                for e in errors {
                    let path = if e.path.is_empty() {
                        at("filter")
                    } else {
                        format!("rules[{i}].filter.{}", e.path)
                    };
                    c.push(path, format!("{} (rule {:?})", e.message, rule.name));
                }
            }
        }
        if let Some(dl) = &rule.dead_letter {
            if !targets.contains(dl.as_str()) {
                c.push(
                    at("dead_letter"),
                    format!("unknown target {dl:?} (rule {:?})", rule.name),
                );
            } else if rule.targets.contains(dl) {
                c.push(
                    at("dead_letter"),
                    format!(
                        "{dl:?} is already one of the rule's targets; dead letters need another"
                    ),
                );
            }
        }
        if let Some(transform) = &rule.transform {
            if let Err(errors) = Transform::compile(transform) {
                for e in errors {
                    let path = if e.path.is_empty() {
                        at("transform")
                    } else {
                        format!("rules[{i}].transform.{}", e.path)
                    };
                    c.push(path, format!("{} (rule {:?})", e.message, rule.name));
                }
            }
        }
        let retry = &rule.retry;
        if retry.max_attempts == 0 {
            c.push(at("retry.max_attempts"), "must be at least 1");
        }
        if retry.backoff.initial.is_zero() {
            c.push(at("retry.backoff.initial"), "must be greater than 0");
        }
        if retry.backoff.initial > retry.backoff.max {
            c.push(
                at("retry.backoff.max"),
                "must not be less than retry.backoff.initial",
            );
        }
    }
}

fn validate_http_target(c: &mut Collector<'_>, i: usize, t: &HttpTargetConfig) {
    let at = |field: &str| format!("targets[{i}].{field}");
    match url::Url::parse(&t.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(u) => c.push(
            at("url"),
            format!(
                "{:?}: scheme must be http or https with a host, found {:?}",
                t.url,
                u.scheme()
            ),
        ),
        Err(e) => c.push(at("url"), format!("{:?} is not a URL ({e})", t.url)),
    }
    if t.timeout.is_zero() {
        c.push(at("timeout"), "must be greater than 0");
    }
    if t.concurrency == 0 || t.concurrency > 4096 {
        c.push(at("concurrency"), "must be between 1 and 4096");
    }
    for (name, value) in &t.headers {
        if http_header_invalid(name, value) {
            c.push(
                format!("targets[{i}].headers.{name}"),
                "is not a valid HTTP header",
            );
        }
    }
    for (j, status) in t.retry_statuses.iter().enumerate() {
        if !(400..500).contains(status) {
            c.push(
                format!("targets[{i}].retry_statuses[{j}]"),
                format!("{status} is not a 4xx status"),
            );
        }
    }
}

fn http_header_invalid(name: &str, value: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0)
}

/// The JSON Schema of the configuration file.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Config);
    serde_json::to_value(schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        load_with_env(text, &|_| None)
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn an_entry_that_fails_to_parse_does_not_shift_the_next_ones() {
        let errs = errors(
            "targets:\n  - name: a\n    type: http\n    url: http://x/\n    bogus: 1\n  - name: b\n    type: http\n    url: ftp://x/\nrules:\n  - name: r\n    targets: [a, b]\n",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("targets[0].bogus: unknown field")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("targets[1].url:") && e.contains("line 8")),
            "{errs:?}"
        );
    }

    #[test]
    fn empty_document_is_the_default() {
        let config = load_with_env("", &|_| None).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert!(config.rules.is_empty());
    }

    #[test]
    fn collects_every_error_with_path_and_position() {
        let text = "\
server:
  listen: nowhere
targets:
  - name: fn
    type: http
    url: http://127.0.0.1:9000/
    timeout: 10 parsecs
  - name: fn2
    type: http
    urll: http://x/
rules:
  - name: a
    targets: [fn, missing]
    filter:
      pattern:
        data: { amount: [{ numeric: [\">\", \"x\"] }] }
  - name: a
    targets: [fn]
extra: 1
";
        let errs = errors(text);
        let expect = [
            "targets[0].timeout: invalid value: string \"10 parsecs\", expected a duration (line 7, column 5)",
            "targets[1].urll: unknown field `urll`",
            "extra: unknown key",
            "server.listen: \"nowhere\" is not an address",
            "rules[0].targets[1]: unknown target \"missing\" (rule \"a\") (line 13, column 19)",
            "rules[0].filter.pattern.data.amount[0]: numeric \">\" needs a number, found \"x\" (rule \"a\") (line 16, column 28)",
            "rules[1].name: duplicate name \"a\" (line 17, column 5)",
        ];
        for e in expect {
            assert!(
                errs.iter().any(|x| x.starts_with(e)),
                "missing {e:?} in {errs:#?}"
            );
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        assert!(errs[1].ends_with("(line 10, column 5)"), "{}", errs[1]);
    }

    #[test]
    fn substitutes_environment_and_reports_unset_variables() {
        let text = "targets:\n  - name: t\n    type: http\n    url: ${URL}\n    headers: { authorization: \"Bearer ${TOKEN}\" }\n";
        let err = errors(text);
        assert_eq!(err.len(), 2, "{err:?}");
        assert!(err[0].starts_with("targets[0].url: environment variable URL is not set (line 4"));
        let env = |n: &str| {
            Some(if n == "URL" {
                "http://h/".into()
            } else {
                "tok".into()
            })
        };
        let config = load_with_env(text, &env).unwrap();
        let TargetConfig::Http(t) = &config.targets[0] else {
            panic!("an http target")
        };
        assert_eq!(t.url, "http://h/");
        assert_eq!(t.headers["authorization"], "Bearer tok");
    }

    #[test]
    fn reports_yaml_syntax_errors_with_position() {
        let errs = errors("rules:\n  - name: [unclosed\n");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("not valid YAML") && errs[0].contains("line"),
            "{errs:?}"
        );
    }
}
