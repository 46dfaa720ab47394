//! Notification settings: registry:2's `notifications` section — webhook endpoints with their headers, timeout,
//! threshold, backoff and ignore lists, and `events.includereferences` — read through the same look-up function as
//! the rest of [`crate::config::Config`], so every platform gets them alike. This module owns the settings only:
//! building, recording and delivering events is [`crate::events`]' and `registry::notify`'s job.
//!
//! registry:2 takes the endpoint list from its YAML file; its environment overrides are YAML values, so a list can
//! be given as one variable holding JSON (which is YAML). Pier reads that form on every platform:
//!
//! | setting | meaning |
//! |---|---|
//! | `REGISTRY_NOTIFICATIONS_ENDPOINTS` | a JSON array of endpoints, `[{"name":"ci","url":"https://ci.example/hook"}]` |
//! | `REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES` | `true`: manifest events carry the manifest's references |
//! | `PIER_NOTIFICATIONS_SECRET` | key of the `X-Pier-Signature` HMAC-SHA256 of every delivery (a secret) |
//! | `PIER_NOTIFICATIONS_MAX_AGE` | how long an undelivered event is retried before it becomes a dead letter (24h) |
//! | `PIER_NOTIFICATIONS_MAX_BACKOFF` | the longest pause between retries of a failing endpoint (10m) |
//!
//! `pier serve --config` turns the YAML list into this JSON (see [`crate::config_file`]). Each endpoint takes
//! registry:2's keys: `name` and `url` (required), `disabled`, `headers` (name → value or list of values),
//! `timeout` and `backoff` (durations: `500ms`, `1s`, `2m`; default 1 s each), `threshold` (default 10),
//! `ignoredmediatypes`, and `ignore` with `mediatypes` and `actions` (`pull`, `push`, `mount`, `delete`). Any other
//! key, or a value of the wrong kind, is an error naming the setting: a typo must not silently drop a filter.
//! Header values often carry credentials (`Authorization`), so `Debug` never shows them.

use crate::config::{parse_bool, parse_go_duration, ConfigError};
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// The setting holding the endpoint list (JSON).
pub const ENDPOINTS_SETTING: &str = "REGISTRY_NOTIFICATIONS_ENDPOINTS";
/// The setting asking for references in manifest events.
pub const INCLUDE_REFERENCES_SETTING: &str = "REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES";
/// registry:2's default HTTP timeout of one delivery.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// registry:2's default number of failures before an endpoint backs off.
pub const DEFAULT_THRESHOLD: u32 = 10;
/// The setting holding the signing key of deliveries.
pub const SECRET_SETTING: &str = "PIER_NOTIFICATIONS_SECRET";
/// The setting bounding how long an event is retried.
pub const MAX_AGE_SETTING: &str = "PIER_NOTIFICATIONS_MAX_AGE";
/// The setting capping the pause between retries.
pub const MAX_BACKOFF_SETTING: &str = "PIER_NOTIFICATIONS_MAX_BACKOFF";
/// Default time an undelivered event is retried before it is moved to the dead letters.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default cap of the exponential backoff.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(600);
/// registry:2's default pause after `threshold` failures.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
/// The event actions registry:2 sends (and an `ignore.actions` list may name).
pub const ACTIONS: [&str; 4] = ["pull", "push", "mount", "delete"];
/// The keys an endpoint may have, as registry:2 spells them.
pub const ENDPOINT_KEYS: [&str; 9] =
    ["name", "disabled", "url", "headers", "timeout", "threshold", "backoff", "ignoredmediatypes", "ignore"];
/// The keys of an endpoint's `ignore` map.
pub const IGNORE_KEYS: [&str; 2] = ["mediatypes", "actions"];

/// registry:2's `notifications` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationsConfig {
    /// Webhook endpoints, in the order given (disabled ones included, marked).
    pub endpoints: Vec<Endpoint>,
    /// Whether manifest events list the manifest's references (`events.includereferences`).
    pub include_references: bool,
    /// The key deliveries are signed with (`PIER_NOTIFICATIONS_SECRET`); `None`: deliveries carry no signature.
    pub secret: Option<SigningKey>,
    /// How long an event is retried before it becomes a dead letter (`PIER_NOTIFICATIONS_MAX_AGE`).
    pub max_age: Duration,
    /// The longest pause between two attempts at a failing endpoint (`PIER_NOTIFICATIONS_MAX_BACKOFF`).
    pub max_backoff: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            endpoints: Vec::new(),
            include_references: false,
            secret: None,
            max_age: DEFAULT_MAX_AGE,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }
}

/// The signing key of deliveries. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(pub String);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// One webhook endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Names the endpoint in logs and metrics.
    pub name: String,
    /// A disabled endpoint is kept in the configuration but gets nothing.
    pub disabled: bool,
    /// Where events are POSTed: an absolute `http`/`https` URL.
    pub url: String,
    /// Static headers added to every delivery, one entry per value (a name may repeat).
    pub headers: Vec<(String, String)>,
    /// HTTP timeout of one delivery.
    pub timeout: Duration,
    /// Failures in a row before the endpoint backs off.
    pub threshold: u32,
    /// How long to back off.
    pub backoff: Duration,
    /// Events whose target has one of these media types are not sent (`ignoredmediatypes` and `ignore.mediatypes`
    /// together; registry:2 treats them alike).
    pub ignored_media_types: Vec<String>,
    /// Events with these actions are not sent (`ignore.actions`).
    pub ignored_actions: Vec<String>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self.headers.iter().map(|(n, _)| format!("{n}: <redacted>")).collect();
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("disabled", &self.disabled)
            .field("url", &redact_url(&self.url))
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .field("threshold", &self.threshold)
            .field("backoff", &self.backoff)
            .field("ignored_media_types", &self.ignored_media_types)
            .field("ignored_actions", &self.ignored_actions)
            .finish()
    }
}

/// A URL without user information and query string, which may hold credentials.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    format!("{scheme}://{host}{path}")
}

fn bad(problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: ENDPOINTS_SETTING.to_string(), problem: problem.into() }
}

/// A header name: an HTTP token.
fn valid_header_name(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value: visible characters and spaces, so a value can never start another header.
fn valid_header_value(v: &str) -> bool {
    v.chars().all(|c| c == ' ' || c == '\t' || !c.is_control())
}

impl NotificationsConfig {
    /// Read the settings; unset ones give no endpoints.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = NotificationsConfig::default();
        if let Some(v) = lookup(INCLUDE_REFERENCES_SETTING) {
            config.include_references = parse_bool(INCLUDE_REFERENCES_SETTING, &v)?;
        }
        if let Some(v) = lookup(SECRET_SETTING).filter(|v| !v.is_empty()) {
            config.secret = Some(SigningKey(v));
        }
        let positive = |setting: &str, v: &str| -> Result<Duration, ConfigError> {
            let d = parse_go_duration(setting, v)?;
            if d.is_zero() {
                return Err(ConfigError { setting: setting.to_string(), problem: "must be more than 0".into() });
            }
            Ok(d)
        };
        if let Some(v) = lookup(MAX_AGE_SETTING) {
            config.max_age = positive(MAX_AGE_SETTING, &v)?;
        }
        if let Some(v) = lookup(MAX_BACKOFF_SETTING) {
            config.max_backoff = positive(MAX_BACKOFF_SETTING, &v)?;
        }
        let Some(text) = lookup(ENDPOINTS_SETTING).filter(|t| !t.trim().is_empty()) else { return Ok(config) };
        let list: Value = serde_json::from_str(&text)
            .map_err(|e| bad(format!("expected a JSON array of endpoints, like [{{\"name\":\"ci\",\"url\":\"https://ci.example/hook\"}}] ({e})")))?;
        let Value::Array(items) = list else { return Err(bad("expected a JSON array of endpoints")) };
        for (i, item) in items.iter().enumerate() {
            let endpoint = Endpoint::from_json(i, item).map_err(bad)?;
            if config.endpoints.iter().any(|e| e.name == endpoint.name) {
                return Err(bad(format!("endpoints[{i}] ({:?}): name: used by another endpoint", endpoint.name)));
            }
            config.endpoints.push(endpoint);
        }
        Ok(config)
    }

    /// The endpoints that get events.
    pub fn active(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| !e.disabled)
    }
}

fn string(v: &Value, key: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(format!("{key}: expected a single value")),
    }
}

/// A string or a list of strings (registry:2's lists; a single value is a list of one).
fn strings(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.iter().map(|i| string(i, key)).collect(),
        other => Ok(vec![string(other, key)?]),
    }
}

fn duration(v: &Value, key: &str) -> Result<Duration, String> {
    let text = string(v, key)?;
    parse_go_duration(key, &text).map_err(|e| format!("{key}: {}", e.problem))
}

impl Endpoint {
    /// The `index`th endpoint of the list; errors start with `endpoints[index] ("name"):`.
    fn from_json(index: usize, v: &Value) -> Result<Endpoint, String> {
        let plain = |problem: String| format!("endpoints[{index}]: {problem}");
        let Value::Object(map) = v else { return Err(plain("expected a map of keys (name, url, …)".into())) };
        if let Some(k) = map.keys().find(|k| !ENDPOINT_KEYS.contains(&k.as_str())) {
            return Err(plain(format!("unknown key {k:?} (registry:2's keys: {})", ENDPOINT_KEYS.join(", "))));
        }
        let get = |k: &str| map.get(k).filter(|v| !v.is_null());
        let name = get("name").map(|v| string(v, "name")).transpose().map_err(plain)?.unwrap_or_default();
        if name.trim().is_empty() {
            return Err(plain("name: required".into()));
        }
        let label = |problem: String| format!("endpoints[{index}] ({name:?}): {problem}");
        let url = get("url").map(|v| string(v, "url")).transpose()?.unwrap_or_default();
        let authority = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        if authority.is_none_or(str::is_empty) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(label("url: required, an absolute http:// or https:// URL".into()));
        }
        let disabled = match get("disabled") {
            Some(v) => parse_bool("disabled", &string(v, "disabled").map_err(label)?).map_err(|e| label(format!("disabled: {}", e.problem)))?,
            None => false,
        };
        let mut headers = Vec::new();
        match get("headers") {
            None => {}
            Some(Value::Object(h)) => {
                for (n, values) in h {
                    if !valid_header_name(n) {
                        return Err(label(format!("headers: {n:?} is not a header name")));
                    }
                    for value in strings(values, "headers").map_err(label)? {
                        if !valid_header_value(&value) {
                            return Err(label(format!("headers: the value of {n} has control characters")));
                        }
                        headers.push((n.clone(), value));
                    }
                }
            }
            Some(_) => return Err(label("headers: expected a map of header names to values".into())),
        }
        let timeout = get("timeout").map(|v| duration(v, "timeout")).transpose().map_err(label)?.unwrap_or(DEFAULT_TIMEOUT);
        let backoff = get("backoff").map(|v| duration(v, "backoff")).transpose().map_err(label)?.unwrap_or(DEFAULT_BACKOFF);
        if timeout.is_zero() {
            return Err(label("timeout: must be more than 0".into()));
        }
        let threshold = match get("threshold") {
            Some(v) => string(v, "threshold")
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .ok_or_else(|| label("threshold: expected a whole number".into()))?,
            None => DEFAULT_THRESHOLD,
        };
        // registry:2 treats 0 as "use the default", as it does for timeout and backoff.
        let threshold = if threshold == 0 { DEFAULT_THRESHOLD } else { threshold };
        let mut ignored_media_types = match get("ignoredmediatypes") {
            Some(v) => strings(v, "ignoredmediatypes").map_err(label)?,
            None => Vec::new(),
        };
        let mut ignored_actions = Vec::new();
        match get("ignore") {
            None => {}
            Some(Value::Object(ignore)) => {
                if let Some(k) = ignore.keys().find(|k| !IGNORE_KEYS.contains(&k.as_str())) {
                    return Err(label(format!("ignore: unknown key {k:?} (registry:2's keys: mediatypes, actions)")));
                }
                ignored_media_types.extend(get_list(ignore, "mediatypes").map_err(label)?);
                for action in get_list(ignore, "actions").map_err(label)? {
                    let action = action.trim().to_ascii_lowercase();
                    if !ACTIONS.contains(&action.as_str()) {
                        return Err(label(format!("ignore.actions: {action:?} is not an action (pull, push, mount, delete)")));
                    }
                    ignored_actions.push(action);
                }
            }
            Some(_) => return Err(label("ignore: expected a map with mediatypes and actions".into())),
        }
        Ok(Endpoint { name, disabled, url, headers, timeout, threshold, backoff, ignored_media_types, ignored_actions })
    }
}

fn get_list(map: &Map<String, Value>, key: &str) -> Result<Vec<String>, String> {
    map.get(key).map(|v| strings(v, &format!("ignore.{key}"))).transpose().map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(endpoints: &str) -> Result<NotificationsConfig, ConfigError> {
        NotificationsConfig::from_lookup(&|k| (k == ENDPOINTS_SETTING).then(|| endpoints.to_string()))
    }

    #[test]
    fn unset_means_no_endpoints() {
        assert_eq!(NotificationsConfig::from_lookup(&|_| None).unwrap(), NotificationsConfig::default());
        assert!(read(" ").unwrap().endpoints.is_empty());
        assert!(read("[]").unwrap().endpoints.is_empty());
    }

    #[test]
    fn registry2_endpoint_keys_and_defaults() {
        let c = read(
            r#"[{"name":"ci","url":"https://ci.example/hook?token=abc","headers":{"Authorization":["Bearer s3cr3t"],"X-One":"1"},
                 "timeout":"500ms","threshold":5,"backoff":"1m30s","ignoredmediatypes":["application/octet-stream"],
                 "ignore":{"mediatypes":["application/vnd.oci.image.index.v1+json"],"actions":["pull","Mount"]}},
                {"name":"audit","url":"http://audit:8080/events","disabled":true}]"#,
        )
        .unwrap();
        let [ci, audit] = &c.endpoints[..] else { panic!("{c:?}") };
        assert_eq!(ci.timeout, Duration::from_millis(500));
        assert_eq!(ci.threshold, 5);
        assert_eq!(ci.backoff, Duration::from_secs(90));
        assert_eq!(ci.headers, [("Authorization".to_string(), "Bearer s3cr3t".to_string()), ("X-One".into(), "1".into())]);
        assert_eq!(ci.ignored_media_types, ["application/octet-stream", "application/vnd.oci.image.index.v1+json"]);
        assert_eq!(ci.ignored_actions, ["pull", "mount"]);
        assert!(audit.disabled);
        assert_eq!((audit.timeout, audit.threshold, audit.backoff), (DEFAULT_TIMEOUT, DEFAULT_THRESHOLD, DEFAULT_BACKOFF));
        assert_eq!(c.active().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["ci"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("token=abc"), "{shown}");
    }

    #[test]
    fn mistakes_name_the_setting_and_the_endpoint() {
        for (bad_list, says) in [
            ("{", "JSON array"),
            (r#"{"name":"x"}"#, "JSON array"),
            (r#"[{"url":"https://x"}]"#, "name: required"),
            (r#"[{"name":"x"}]"#, "url: required"),
            (r#"[{"name":"x","url":"ftp://x"}]"#, "url"),
            (r#"[{"name":"x","url":"https://"}]"#, "url"),
            (r#"[{"name":"x","url":"https://x","heders":{}}]"#, "unknown key \"heders\""),
            (r#"[{"name":"x","url":"https://x","timeout":"soon"}]"#, "timeout"),
            (r#"[{"name":"x","url":"https://x","threshold":-1}]"#, "threshold"),
            (r#"[{"name":"x","url":"https://x","ignore":{"actions":["fetch"]}}]"#, "\"fetch\""),
            (r#"[{"name":"x","url":"https://x","ignore":{"verbs":[]}}]"#, "unknown key \"verbs\""),
            (r#"[{"name":"x","url":"https://x","headers":{"Bad Name":"v"}}]"#, "header name"),
            (r#"[{"name":"x","url":"https://x","headers":{"X":"a\r\nInjected: 1"}}]"#, "control characters"),
            (r#"[{"name":"x","url":"https://x"},{"name":"x","url":"https://y"}]"#, "endpoints[1] (\"x\"): name: used by another"),
        ] {
            let e = read(bad_list).unwrap_err();
            assert_eq!(e.setting, ENDPOINTS_SETTING);
            assert!(e.problem.contains(says), "{bad_list}: {e}");
        }
        let e = NotificationsConfig::from_lookup(&|k| (k == INCLUDE_REFERENCES_SETTING).then(|| "perhaps".into())).unwrap_err();
        assert_eq!(e.setting, INCLUDE_REFERENCES_SETTING);
    }
}
