//! Access-control settings, read through the same look-up function as the rest of [`crate::config::Config`] (so
//! they come from environment variables, Workers vars/secrets or Spin variables alike). Contents, not paths: the
//! native server reads `REGISTRY_AUTH_HTPASSWD_PATH` and `PIER_AUTH_RULES_PATH` itself and hands their content over
//! as `PIER_AUTH_HTPASSWD` and `PIER_AUTH_RULES`; the core does no file I/O.
//!
//! Access control is on when `REGISTRY_AUTH=htpasswd`, or `PIER_AUTH_HTPASSWD` or `PIER_AUTH_RULES` is set.
//! Errors name the setting and never echo a secret's value.

use super::htpasswd::Htpasswd;
use super::rules::Rules;
use super::token::Secret;
use crate::config::{parse_duration_secs, ConfigError};

/// Shortest token secret accepted (bytes): an HS256 key should have at least the hash's 256 bits.
pub const MIN_SECRET_LEN: usize = 32;
/// Default token lifetime (seconds).
pub const DEFAULT_TOKEN_EXPIRY_SECS: u64 = 300;

/// Everything access control needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Users (`PIER_AUTH_HTPASSWD`, or the file at `REGISTRY_AUTH_HTPASSWD_PATH` on the native server).
    pub users: Htpasswd,
    /// Who may do what (`PIER_AUTH_RULES` / `PIER_AUTH_RULES_PATH`); default: every user everything.
    pub rules: Rules,
    /// HS256 key for tokens (`PIER_AUTH_TOKEN_SECRET`). `None`: the platform supplies a random one at start.
    pub token_secret: Option<Secret>,
    /// `iss` of issued tokens, checked on verification (`PIER_AUTH_ISSUER`, default `pier`).
    pub issuer: String,
    /// `aud` of tokens and `service` of challenges (`PIER_AUTH_SERVICE`); `None`: the request's Host.
    pub service: Option<String>,
    /// Absolute URL of the token endpoint in challenges (`PIER_AUTH_REALM`); `None`: built from the request.
    pub realm: Option<String>,
    /// Realm of the token endpoint's own Basic challenge (`REGISTRY_AUTH_HTPASSWD_REALM`, default `pier`).
    pub basic_realm: String,
    /// Token lifetime in seconds (`PIER_AUTH_TOKEN_EXPIRY`, default 300).
    pub token_expiry_secs: u64,
    /// How long a verified Basic credential is remembered (`PIER_AUTH_CACHE_TTL`, default 300; 0 disables).
    pub cache_ttl_secs: u64,
    /// Failed logins per user name within one window before further attempts get 429 (`PIER_AUTH_MAX_FAILURES`,
    /// default 10; an address may fail 5 times as often; 0 turns throttling off).
    pub max_failures: u32,
    /// The window failed logins are counted in (`PIER_AUTH_FAILURE_WINDOW`, default 60 s).
    pub failure_window_secs: u64,
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), problem: problem.into() }
}

/// Characters allowed in values that end up inside a quoted `WWW-Authenticate` parameter.
fn header_safe(v: &str) -> bool {
    !v.is_empty() && v.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}

impl AuthConfig {
    /// Read the settings; `Ok(None)` when access control is off.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<AuthConfig>, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mode = get("REGISTRY_AUTH");
        match mode.as_deref().map(str::trim) {
            None | Some("htpasswd") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(bad("REGISTRY_AUTH", format!("{other:?} is not supported (use htpasswd, or leave it unset)")));
            }
        }
        let htpasswd = get("PIER_AUTH_HTPASSWD");
        let rules_text = get("PIER_AUTH_RULES");
        if mode.is_none() && htpasswd.is_none() && rules_text.is_none() {
            return Ok(None);
        }
        let users = match &htpasswd {
            Some(content) => Htpasswd::parse(content).map_err(|e| bad("PIER_AUTH_HTPASSWD", e))?,
            None if mode.is_some() => {
                return Err(bad(
                    "REGISTRY_AUTH_HTPASSWD_PATH",
                    "REGISTRY_AUTH=htpasswd needs users: set REGISTRY_AUTH_HTPASSWD_PATH (native) or PIER_AUTH_HTPASSWD",
                ))
            }
            None => Htpasswd::default(),
        };
        let rules = match &rules_text {
            Some(t) => Rules::parse(t).map_err(|e| bad("PIER_AUTH_RULES", e))?,
            None => Rules::default(),
        };
        let token_secret = match lookup("PIER_AUTH_TOKEN_SECRET") {
            Some(s) if s.len() < MIN_SECRET_LEN => {
                return Err(bad(
                    "PIER_AUTH_TOKEN_SECRET",
                    format!("must be at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`); the value given is shorter"),
                ))
            }
            Some(s) => Some(Secret::new(s.into_bytes())),
            None => None,
        };
        let issuer = get("PIER_AUTH_ISSUER").unwrap_or_else(|| "pier".into());
        if !header_safe(&issuer) {
            return Err(bad("PIER_AUTH_ISSUER", "must be printable ASCII without spaces or quotes"));
        }
        let service = get("PIER_AUTH_SERVICE");
        if service.as_deref().is_some_and(|s| !header_safe(s)) {
            return Err(bad("PIER_AUTH_SERVICE", "must be printable ASCII without spaces or quotes"));
        }
        let realm = get("PIER_AUTH_REALM");
        if let Some(r) = &realm {
            if !(r.starts_with("https://") || r.starts_with("http://")) || !header_safe(r) {
                return Err(bad("PIER_AUTH_REALM", "must be an absolute http(s) URL of the token endpoint, e.g. https://registry.example/token"));
            }
        }
        let basic_realm = get("REGISTRY_AUTH_HTPASSWD_REALM").unwrap_or_else(|| "pier".into());
        if basic_realm.contains(['"', '\\']) || basic_realm.chars().any(char::is_control) {
            return Err(bad("REGISTRY_AUTH_HTPASSWD_REALM", "must not contain quotes, backslashes or control characters"));
        }
        let token_expiry_secs = match get("PIER_AUTH_TOKEN_EXPIRY") {
            Some(v) => parse_duration_secs("PIER_AUTH_TOKEN_EXPIRY", &v)?,
            None => DEFAULT_TOKEN_EXPIRY_SECS,
        };
        if token_expiry_secs == 0 {
            return Err(bad("PIER_AUTH_TOKEN_EXPIRY", "must be at least 1 second"));
        }
        let cache_ttl_secs = match get("PIER_AUTH_CACHE_TTL") {
            Some(v) => parse_duration_secs("PIER_AUTH_CACHE_TTL", &v)?,
            None => super::cache::DEFAULT_TTL_SECS,
        };
        let max_failures = match get("PIER_AUTH_MAX_FAILURES") {
            Some(v) => v.trim().parse::<u32>().map_err(|_| bad("PIER_AUTH_MAX_FAILURES", "must be a whole number (0 turns throttling off)"))?,
            None => super::throttle::DEFAULT_MAX_FAILURES,
        };
        let failure_window_secs = match get("PIER_AUTH_FAILURE_WINDOW") {
            Some(v) => parse_duration_secs("PIER_AUTH_FAILURE_WINDOW", &v)?,
            None => super::throttle::DEFAULT_WINDOW_SECS,
        };
        if failure_window_secs == 0 {
            return Err(bad("PIER_AUTH_FAILURE_WINDOW", "must be at least 1 second"));
        }
        Ok(Some(AuthConfig {
            users,
            rules,
            token_secret,
            issuer,
            service,
            realm,
            basic_realm,
            token_expiry_secs,
            cache_ttl_secs,
            max_failures,
            failure_window_secs,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::htpasswd::hash_password;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<AuthConfig>, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AuthConfig::from_lookup(&|k| m.get(k).cloned())
    }

    #[test]
    fn off_unless_asked() {
        assert_eq!(read(&[]).unwrap(), None);
        assert_eq!(read(&[("PIER_AUTH_TOKEN_SECRET", "x")]).unwrap(), None);
        assert_eq!(read(&[("REGISTRY_AUTH", "none")]).unwrap(), None);
    }

    #[test]
    fn registry2_names() {
        let h = hash_password(b"pw", 4, [0; 16]).unwrap();
        let file = format!("alice:{h}\n");
        let c = read(&[("REGISTRY_AUTH", "htpasswd"), ("PIER_AUTH_HTPASSWD", &file), ("REGISTRY_AUTH_HTPASSWD_REALM", "My Realm")])
            .unwrap()
            .unwrap();
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.rules, Rules::default());
        assert_eq!(c.issuer, "pier");
        assert_eq!(c.basic_realm, "My Realm");
        assert_eq!(c.token_expiry_secs, 300);
        assert!(c.token_secret.is_none());
    }

    #[test]
    fn errors_name_the_setting_not_the_value() {
        let e = read(&[("REGISTRY_AUTH", "htpasswd")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_AUTH_HTPASSWD_PATH");
        let e = read(&[("REGISTRY_AUTH", "token")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_AUTH");
        let e = read(&[("PIER_AUTH_RULES", "* anonymous pull"), ("PIER_AUTH_TOKEN_SECRET", "hunter2-short")]).unwrap_err();
        assert_eq!(e.setting, "PIER_AUTH_TOKEN_SECRET");
        assert!(!e.to_string().contains("hunter2"));
        let e = read(&[("PIER_AUTH_HTPASSWD", "alice:$apr1$secretsalt$secrethashsecrethash12")]).unwrap_err();
        assert_eq!(e.setting, "PIER_AUTH_HTPASSWD");
        assert!(!e.to_string().contains("secret"));
        let e = read(&[("PIER_AUTH_RULES", "* anonymous fly")]).unwrap_err();
        assert_eq!(e.setting, "PIER_AUTH_RULES");
        let e = read(&[("PIER_AUTH_RULES", "* anonymous pull"), ("PIER_AUTH_REALM", "/token")]).unwrap_err();
        assert_eq!(e.setting, "PIER_AUTH_REALM");
        let e = read(&[("PIER_AUTH_RULES", "* anonymous pull"), ("PIER_AUTH_SERVICE", "a\"b")]).unwrap_err();
        assert_eq!(e.setting, "PIER_AUTH_SERVICE");
    }

    #[test]
    fn rules_alone_enable_auth() {
        let c = read(&[("PIER_AUTH_RULES", "public/* anonymous pull"), ("PIER_AUTH_TOKEN_SECRET", &"k".repeat(32))])
            .unwrap()
            .unwrap();
        assert!(c.users.is_empty());
        assert!(c.token_secret.is_some());
        assert!(!format!("{c:?}").contains("kkkk"), "Debug never shows the secret");
    }
}
