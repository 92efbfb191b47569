//! Configuration: YAML -> serde types -> validation (pure, collects every error
//! with its path and position) -> building happens in the binary.
//!
//! This crate owns the parts every build shares (the server, rules, batching,
//! the names of things) and the machinery (YAML positions, `${ENV}`, error
//! collection). Each connector owns its settings and their checks, in its own
//! folder; the connectors' registry is a closed enum per side that implements
//! [`SourceEntry`] / [`TargetEntry`], and [`Config`] is generic over the two.

mod compiled;
mod entry;
mod parse;
mod results;
mod shared;
mod types;
mod yaml;

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

pub use compiled::{CompiledRules, Trial};
pub use entry::{SourceEntry, SourceSpec, TargetEntry, TargetSpec};
pub use shared::*;
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

/// Collects the problems of a configuration file, each with its path and its
/// line and column. Connectors report theirs through [`Validator::push`].
pub struct Validator<'a> {
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
    /// The environment `${NAME}` is read from (the process's, or a test's).
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl<'a> Validator<'a> {
    fn new(positions: &'a Positions, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            positions,
            env,
            errors: Vec::new(),
            unparsed_targets: Vec::new(),
            reported: Vec::new(),
            original: Vec::new(),
        }
    }

    /// Deserialize `value` (a connector's settings, found at `path`) as `T`,
    /// reporting a failure at the deepest path serde knows.
    pub fn section<T: serde::de::DeserializeOwned>(
        &mut self,
        value: serde_yaml::Value,
        path: &str,
    ) -> Option<T> {
        parse::section(value, path, self)
    }

    /// The environment variable `name`, from the environment this configuration
    /// is loaded with: for settings that name a secret's variable
    /// (`secret_env`) rather than hold it.
    pub fn env(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// Report `message` at `path` (`targets[2].url`), unless a problem was
    /// already reported there while parsing.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
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

impl Validator<'_> {
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
pub fn load<S: SourceEntry, T: TargetEntry>(text: &str) -> Result<Validated<S, T>, ConfigErrors> {
    load_with_env(text, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment, for tests.
pub fn load_with_env<S: SourceEntry, T: TargetEntry>(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Validated<S, T>, ConfigErrors> {
    let positions = Positions::index(text);
    let mut c = Validator::new(&positions, env);
    let Some(config) = parse::parse(text, env, &mut c) else {
        return Err(ConfigErrors(c.errors));
    };
    c.reported = c.errors.iter().map(|e| e.path.clone()).collect();
    let compiled = validate_into(&config, &mut c);
    if !c.errors.is_empty() {
        return Err(ConfigErrors(c.errors));
    }
    let rules = CompiledRules::new(&config.rules, compiled);
    Ok(Validated {
        config,
        rules: Arc::new(rules),
    })
}

/// A configuration that passed every check, with what its rules compiled to.
/// The engine, the server and `sluice test-rule` all take this: nothing in a
/// configuration is compiled twice.
#[derive(Clone)]
pub struct Validated<S, T> {
    pub config: Config<S, T>,
    pub rules: Arc<CompiledRules>,
}

impl<S: fmt::Debug, T: fmt::Debug> fmt::Debug for Validated<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validated")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, T> Validated<S, T> {
    /// A configuration without sources, targets or rules, with these server
    /// settings (what `sluice serve` runs with no file, and what tests start from).
    pub fn empty(server: ServerConfig) -> Self {
        Self {
            config: Config {
                server,
                ..Config::default()
            },
            rules: Arc::new(CompiledRules::new(&[], Vec::new())),
        }
    }
}

/// Names of rules, targets, sources and buses: they appear in URLs, metric labels
/// and subscription names (`<rule>.<target>`), so they are kept to a safe alphabet.
fn check_name(c: &mut Validator<'_>, path: String, name: &str) {
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
    c: &mut Validator<'_>,
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

/// Check everything; returns each rule's compiled filter and transform (a rule
/// whose filter or transform failed has `None` there, and an error reported).
fn validate_into<S: SourceEntry, T: TargetEntry>(
    config: &Config<S, T>,
    c: &mut Validator<'_>,
) -> Vec<(Option<Filter>, Option<Transform>)> {
    let mut compiled = Vec::with_capacity(config.rules.len());
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
    if let Ok(addr) = server.listen.parse::<std::net::SocketAddr>() {
        if !addr.ip().is_loopback() && server.auth.admin_token.is_none() && !server.auth.admin_open
        {
            c.push(
                "server.listen",
                format!(
                    "sluice listens on {addr}, beyond this machine, and the admin API (event \
                     payloads, redrive) would be open to anyone who reaches it: set \
                     auth.admin_token, or auth.admin_open: true to keep it open on purpose"
                ),
            );
        }
    }
    if server.data_dir.is_empty() {
        c.push("server.data_dir", "must not be empty");
    }
    if server.max_event_bytes == 0 {
        c.push("server.max_event_bytes", "must be greater than 0");
    }
    if server.max_connections == 0 {
        c.push("server.max_connections", "must be greater than 0");
    }
    if server.header_timeout.is_zero() {
        c.push("server.header_timeout", "must be greater than 0");
    }
    if server.request_timeout.is_zero() {
        c.push("server.request_timeout", "must be greater than 0");
    }
    if server.max_uri_bytes < 256 {
        c.push("server.max_uri_bytes", "must be at least 256");
    }
    if server.max_header_bytes < 1024 {
        c.push("server.max_header_bytes", "must be at least 1024");
    }
    if server.max_body_bytes_in_flight < server.max_batch_bytes {
        c.push(
            "server.max_body_bytes_in_flight",
            "must be at least server.max_batch_bytes",
        );
    }
    if server.dedupe_max_keys == 0 {
        c.push("server.dedupe_max_keys", "must be greater than 0");
    }
    if server.max_backlog == 0 {
        c.push("server.max_backlog", "must be greater than 0");
    }
    let system = &server.system_events;
    if system.backlog_threshold == 0 {
        c.push(
            "server.system_events.backlog_threshold",
            "must be greater than 0",
        );
    }
    if system.dead_letter_interval.is_zero() {
        c.push(
            "server.system_events.dead_letter_interval",
            "must be greater than 0",
        );
    }
    if let Some(name) = &system.name {
        if name.is_empty() || name.chars().any(|ch| ch.is_whitespace() || ch == '/') {
            c.push(
                "server.system_events.name",
                "must be a host name: not empty, no spaces or slashes",
            );
        }
    }
    if server.max_batch_bytes < server.max_event_bytes {
        c.push(
            "server.max_batch_bytes",
            "must be at least server.max_event_bytes",
        );
    }

    check_unique(c, "sources", config.sources.iter().map(|s| s.spec().name()));
    for (i, source) in config.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        check_name(c, format!("{at}.bus"), source.spec().bus());
        source.spec().validate(&at, c);
    }

    let names = config.targets.iter().map(|t| t.spec().name());
    let mut targets = check_unique(c, "targets", names);
    let unparsed = std::mem::take(&mut c.unparsed_targets);
    targets.extend(unparsed.iter().map(String::as_str));
    for (i, target) in config.targets.iter().enumerate() {
        target.spec().validate(&format!("targets[{i}]"), c);
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
        let filter = match rule.filter.as_ref().map(Filter::compile) {
            Some(Ok(f)) => Some(f),
            None => None,
            Some(Err(errors)) => {
                for e in errors {
                    let path = if e.path.is_empty() {
                        at("filter")
                    } else {
                        format!("rules[{i}].filter.{}", e.path)
                    };
                    c.push(path, format!("{} (rule {:?})", e.message, rule.name));
                }
                None
            }
        };
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
        let transform = match rule.transform.as_ref().map(Transform::compile) {
            Some(Ok(t)) => Some(t),
            None => None,
            Some(Err(errors)) => {
                for e in errors {
                    let path = if e.path.is_empty() {
                        at("transform")
                    } else {
                        format!("rules[{i}].transform.{}", e.path)
                    };
                    c.push(path, format!("{} (rule {:?})", e.message, rule.name));
                }
                None
            }
        };
        compiled.push((filter, transform));
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
    results::validate(c, &config.rules, &targets, server.max_hops);
    compiled
}

/// The JSON Schema of the configuration file.
pub fn json_schema<S: SourceEntry, T: TargetEntry>() -> serde_json::Value {
    let mut schema = schemars::schema_for!(Config<S, T>);
    // The generic struct would be titled after its parameters, and its doc
    // comment speaks to developers.
    let meta = schema.schema.metadata();
    meta.title = Some("Config".into());
    meta.description = Some("A sluice configuration file.".into());
    serde_json::to_value(schema).unwrap_or_default()
}
