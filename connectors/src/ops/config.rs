//! The settings of the ops sources (`probe`, `alertmanager`, `webhook`) and
//! their validation.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_router::config::{defaults, DurationString, SourceSpec, Validator};

use super::signature::{standard_key, Verifier};
use super::template::RequestTemplate;

/// Health probes: an HTTP(S) GET or a TCP connect to each endpoint every
/// `interval`; an event when an endpoint goes down (after `failures`
/// consecutive failures) and when it comes back.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// What to check: `http://` or `https://` URLs (a GET; a 2xx status, or one
    /// of `expect_status`, is up) and `tcp://host:port` (a connect is up).
    pub endpoints: Vec<String>,
    /// How often each endpoint is checked.
    #[serde(default = "interval", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub interval: Duration,
    /// How long one check may take before it counts as a failure.
    #[serde(default = "timeout", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub timeout: Duration,
    /// Consecutive failed checks before an endpoint is down.
    #[serde(default = "failures")]
    pub failures: u32,
    /// `changes`: an event when an endpoint goes down or comes back up;
    /// `every`: also a `sluice.probe.result` event for every check.
    #[serde(default)]
    pub emit: Emit,
    /// HTTP statuses that count as up (default: any 2xx).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
}

/// Which probe results become events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Emit {
    /// Only going down and coming back up.
    #[default]
    Changes,
    /// Every check, and the changes.
    Every,
}

fn interval() -> Duration {
    Duration::from_secs(30)
}
fn timeout() -> Duration {
    Duration::from_secs(5)
}
fn failures() -> u32 {
    3
}

/// One endpoint of a probe, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Http(String),
    Tcp(String),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an http://, https:// or tcp://host:port endpoint");
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        match scheme {
            "http" | "https" => {
                let url = url::Url::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(bad());
                }
                Ok(Self::Http(text.to_owned()))
            }
            "tcp" => {
                let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
                if host.is_empty() || rest.contains('/') || port.parse::<u16>().is_err() {
                    return Err(bad());
                }
                Ok(Self::Tcp(rest.to_owned()))
            }
            _ => Err(bad()),
        }
    }
}

impl SourceSpec for ProbeSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "probe"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        if self.endpoints.is_empty() {
            v.push(format!("{at}.endpoints"), "give at least one endpoint");
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Err(why) = Endpoint::parse(e) {
                v.push(format!("{at}.endpoints[{i}]"), why);
            }
            if self.endpoints[..i].contains(e) {
                v.push(
                    format!("{at}.endpoints[{i}]"),
                    format!("{e:?} is listed twice"),
                );
            }
        }
        for (key, d) in [("interval", self.interval), ("timeout", self.timeout)] {
            if d.is_zero() {
                v.push(format!("{at}.{key}"), "must be more than 0s");
            }
        }
        if self.failures == 0 {
            v.push(format!("{at}.failures"), "must be at least 1");
        }
        for (i, s) in self.expect_status.iter().enumerate() {
            if !(100..=599).contains(s) {
                v.push(
                    format!("{at}.expect_status[{i}]"),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
    }
}

/// Prometheus Alertmanager's webhook (version 4), posted to
/// `POST /sources/<name>/alerts`: each alert an `io.prometheus.alert.firing` or
/// `io.prometheus.alert.resolved` event.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
}

impl SourceSpec for AlertmanagerSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "alertmanager"
    }
    fn validate(&self, _at: &str, _v: &mut Validator<'_>) {}
}

/// Any JSON posted to `POST /sources/<name>`, as one event; its attributes from
/// templates over the request's headers and body, its signature optionally
/// checked.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSourceConfig {
    /// Name of the source, unique among sources.
    pub name: String,
    /// `id` of the events: a template of literal text and `{header.NAME}` /
    /// `{body.PATH}` parts (`{header.x-github-delivery}`). Default: a hash of
    /// the body, so the same body posted again is a duplicate. (The four
    /// attribute keys are `event_*`, as the timer's are: `type` is the source's
    /// own type.)
    #[serde(default)]
    pub event_id: Option<String>,
    /// `type` of the events (template; `com.github.{header.x-github-event}`).
    /// Default `sluice.webhook.received`.
    #[serde(default)]
    pub event_type: Option<String>,
    /// `source` of the events (template). Default `sluice://webhook/<name>`.
    #[serde(default)]
    pub event_source: Option<String>,
    /// `subject` of the events (template; `{body.repository.full_name}`).
    /// Default: none.
    #[serde(default)]
    pub event_subject: Option<String>,
    /// Check each request's signature; a request without a valid one is
    /// refused (401) and nothing is kept. With a signature, the ingest token is
    /// not asked for: the signature is the proof (GitHub cannot send a bearer
    /// token).
    #[serde(default)]
    pub signature: Option<SignatureConfig>,
    /// The bus the events go to.
    #[serde(default = "defaults::bus")]
    pub bus: String,
}

/// How a webhook's requests are signed.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureConfig {
    /// `github`: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
    /// `standard`: Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature: v1,<base64>`), with a secret `whsec_<base64>`.
    pub scheme: SignatureScheme,
    /// The environment variable holding the secret. Secrets are never written
    /// in the file: the name of the variable is, so the config can be shared.
    pub secret_env: String,
    /// `standard` only: how far a request's `webhook-timestamp` may be from now
    /// (a replay older than this is refused).
    #[serde(default = "tolerance", with = "humantime_serde")]
    #[schemars(with = "DurationString")]
    pub tolerance: Duration,
}

/// A webhook signature scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureScheme {
    Github,
    Standard,
}

fn tolerance() -> Duration {
    Duration::from_secs(300)
}

impl SignatureConfig {
    /// The verifier, given the secret read from `secret_env`.
    pub fn verifier(&self, secret: &str) -> Result<Verifier, String> {
        if secret.is_empty() {
            return Err(format!("environment variable {} is empty", self.secret_env));
        }
        Ok(match self.scheme {
            SignatureScheme::Github => Verifier::Github {
                key: secret.as_bytes().to_vec(),
            },
            SignatureScheme::Standard => Verifier::Standard {
                key: standard_key(secret)?,
                tolerance_secs: i64::try_from(self.tolerance.as_secs()).unwrap_or(i64::MAX),
            },
        })
    }

    /// The verifier from the process environment (at start).
    pub fn from_env(&self) -> Result<Verifier, String> {
        let secret = std::env::var(&self.secret_env)
            .map_err(|_| format!("environment variable {} is not set", self.secret_env))?;
        self.verifier(&secret)
    }
}

impl WebhookSourceConfig {
    /// The templates of `id`, `type`, `source`, `subject` (those given).
    pub fn templates(&self) -> [(&'static str, Option<&String>); 4] {
        [
            ("event_id", self.event_id.as_ref()),
            ("event_type", self.event_type.as_ref()),
            ("event_source", self.event_source.as_ref()),
            ("event_subject", self.event_subject.as_ref()),
        ]
    }
}

impl SourceSpec for WebhookSourceConfig {
    fn name(&self) -> &str {
        &self.name
    }
    fn bus(&self) -> &str {
        &self.bus
    }
    fn kind(&self) -> &'static str {
        "webhook"
    }
    fn validate(&self, at: &str, v: &mut Validator<'_>) {
        for (key, text) in self.templates() {
            if let Some(text) = text {
                if let Err(why) = RequestTemplate::parse(text) {
                    v.push(format!("{at}.{key}"), why);
                }
            }
        }
        if let Some(sig) = &self.signature {
            match v.env(&sig.secret_env) {
                None => v.push(
                    format!("{at}.signature.secret_env"),
                    format!(
                        "environment variable {} is not set (it holds the signing secret)",
                        sig.secret_env
                    ),
                ),
                Some(secret) => {
                    if let Err(why) = sig.verifier(&secret) {
                        v.push(format!("{at}.signature.secret_env"), why);
                    }
                }
            }
            if sig.scheme == SignatureScheme::Standard && sig.tolerance.is_zero() {
                v.push(format!("{at}.signature.tolerance"), "must be more than 0s");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;
    use crate::load_with_env;

    fn errors(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
        load_with_env(text, env)
            .map(|_| Vec::new())
            .unwrap_or_else(|e| e.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:5432"),
            Ok(Endpoint::Tcp("127.0.0.1:5432".into()))
        );
        assert!(matches!(
            Endpoint::parse("https://example.com/health"),
            Ok(Endpoint::Http(_))
        ));
        for bad in [
            "ftp://x/",
            "tcp://host",
            "tcp://:80",
            "tcp://h:99999",
            "http://",
            "x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ops_bad_settings_are_errors_with_path_and_line() {
        let text = "sources:
  - name: p
    type: probe
    endpoints: [\"ftp://x/\", \"tcp://h:1\", \"tcp://h:1\"]
    interval: 0s
    failures: 0
    expect_status: [700]
  - name: q
    type: probe
    endpoints: []
  - name: gh
    type: webhook
    event_subject: \"{body.repo\"
    signature: { scheme: github, secret_env: NOT_SET }
  - name: sw
    type: webhook
    subject: x
  - name: sw2
    type: webhook
    event_id: \"{query.x}\"
    signature: { scheme: standard, secret_env: BAD_SECRET, tolerance: 0s }
";
        let env = |n: &str| (n == "BAD_SECRET").then(|| "whsec_!!".to_owned());
        let errs = errors(text, &env);
        let expect = [
            "sources[0].endpoints[0]: \"ftp://x/\" is not an http://, https:// or tcp://host:port endpoint (line 4",
            "sources[0].endpoints[2]: \"tcp://h:1\" is listed twice",
            "sources[0].interval: must be more than 0s (line 5",
            "sources[0].failures: must be at least 1",
            "sources[0].expect_status[0]: 700 is not an HTTP status",
            "sources[1].endpoints: give at least one endpoint",
            "sources[2].event_subject: `{` at byte 0 is never closed",
            "sources[2].signature.secret_env: environment variable NOT_SET is not set",
            "sources[3].subject: unknown field",
            "sources[4].event_id: `{query.x}`: a part is `{header.NAME}` or `{body.PATH}`",
            "sources[4].signature.secret_env: a Standard Webhooks secret is `whsec_` and base64",
            "sources[4].signature.tolerance: must be more than 0s",
        ];
        for e in expect {
            assert!(errs.iter().any(|x| x.starts_with(e)), "{e:?} in {errs:#?}");
        }
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
    }
}
