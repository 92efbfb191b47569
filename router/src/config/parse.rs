//! YAML to [`Config`]: each section and each list entry on its own, so one bad
//! entry does not hide the errors of the others, and every error keeps the
//! deepest path serde knows (and so its line and column).

use serde::de::DeserializeOwned;

use super::{yaml, Config, ConfigError, RuleConfig, SourceEntry, TargetEntry, Validator};

pub(super) fn parse<S: SourceEntry, T: TargetEntry>(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
    c: &mut Validator<'_>,
) -> Option<Config<S, T>> {
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
    config.sources = list(top.remove("sources"), "sources", c, tagged_source::<S>);
    config.targets = list(top.remove("targets"), "targets", c, |value, path, c| {
        let name = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned);
        let target = tagged_target::<T>(value, path, c);
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
pub(super) fn section<T: DeserializeOwned>(
    value: serde_yaml::Value,
    path: &str,
    c: &mut Validator<'_>,
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

fn tagged_source<S: SourceEntry>(
    value: serde_yaml::Value,
    path: &str,
    c: &mut Validator<'_>,
) -> Option<S> {
    tagged(value, path, c, S::TYPES, S::parse)
}

fn tagged_target<T: TargetEntry>(
    value: serde_yaml::Value,
    path: &str,
    c: &mut Validator<'_>,
) -> Option<T> {
    tagged(value, path, c, T::TYPES, T::parse)
}

/// An entry of a closed, `type`-tagged enum of connector settings. serde buffers
/// the content of internally tagged enums and loses the path inside them, so
/// sluice reads the tag itself and the registry deserializes the variant's struct
/// directly (through [`Validator::section`]).
fn tagged<E>(
    value: serde_yaml::Value,
    path: &str,
    c: &mut Validator<'_>,
    types: &[&str],
    variant: fn(&str, serde_yaml::Value, &str, &mut Validator<'_>) -> Option<E>,
) -> Option<E> {
    let serde_yaml::Value::Mapping(mut map) = value else {
        c.push(path, "must be a mapping with a `type`");
        return None;
    };
    let expected = types.join(", ");
    match map.remove("type") {
        Some(serde_yaml::Value::String(tag)) if types.contains(&tag.as_str()) => {
            variant(&tag, serde_yaml::Value::Mapping(map), path, c)
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
    c: &mut Validator<'_>,
    mut element: impl FnMut(serde_yaml::Value, &str, &mut Validator<'_>) -> Option<T>,
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
