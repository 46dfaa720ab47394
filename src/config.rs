//! One [`Config`] for every platform, read through a look-up function so it can come from environment variables,
//! Workers vars/secrets or Spin variables alike. registry:2's setting names are accepted where one exists
//! (`REGISTRY_STORAGE_DELETE_ENABLED`, `REGISTRY_STORAGE_REDIRECT_DISABLE`, …); Pier's own settings are `PIER_*`.
//! A bad value fails with a message naming the setting, and never echoes a secret.

use crate::auth::AuthConfig;
use crate::notifications::NotificationsConfig;
use std::fmt;
use std::time::Duration;

/// Default part size of multipart uploads: above every object store's 5 MiB minimum.
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
/// Default idle time after which an upload session expires (24 h).
pub const DEFAULT_UPLOAD_EXPIRY_SECS: u64 = 24 * 3600;

/// Registry behaviour that is the same on every platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Whether DELETE of manifests, tags and blobs is allowed (`REGISTRY_STORAGE_DELETE_ENABLED`, default true).
    pub delete_enabled: bool,
    /// Idle seconds before an upload session expires (`PIER_UPLOAD_EXPIRY`, e.g. `86400`, `24h`, `30m`).
    pub upload_expiry_secs: u64,
    /// Multipart part size in bytes (`PIER_UPLOAD_PART_SIZE`).
    pub part_size: u64,
    /// Whether blob GETs may redirect to presigned URLs (`REGISTRY_STORAGE_REDIRECT_DISABLE=true` turns it off).
    pub redirect: bool,
    /// Lifetime of presigned URLs in seconds (`PIER_REDIRECT_EXPIRY`, default 1200 like distribution's 20 min).
    pub redirect_expiry_secs: u64,
    /// Access control (`REGISTRY_AUTH=htpasswd`, `PIER_AUTH_*`); `None`: no users, and then `anonymous_write` decides.
    pub auth: Option<AuthConfig>,
    /// Without access control, whether anyone may write (push, delete): `PIER_ANONYMOUS_WRITE=true|false`. Unset
    /// (`None`) the platform decides: refused on Workers and wasi:http hosts, allowed by `pier serve` on a loopback
    /// address only. The core treats `None` as allowed (its own tests run without a platform).
    pub anonymous_write: Option<bool>,
    /// Maintenance (read-only) mode: every write answers 405 `UNSUPPORTED`, reads go on, and expired upload sessions
    /// are left alone (`REGISTRY_STORAGE_MAINTENANCE_READONLY`, see [`parse_read_only`]).
    pub read_only: bool,
    /// Whether scheduled runs collect garbage (`PIER_GC_ENABLED`, default true: the Workers cron trigger, `pier
    /// serve`'s schedule). `pier gc` and the admin endpoint run whenever asked.
    pub gc_enabled: bool,
    /// How long content stays marked unreferenced before it may be deleted (`PIER_GC_GRACE_PERIOD`, default 6h).
    pub gc_grace_secs: u64,
    /// `pier serve` runs a collection cycle this often (`PIER_GC_INTERVAL`); `None`: only when asked.
    pub gc_interval_secs: Option<u64>,
    /// Manifests no tag reaches are collected once older than this (`PIER_GC_UNTAGGED_AFTER`, e.g. `7d`); `None`
    /// (the default) keeps every manifest.
    pub gc_untagged_after_secs: Option<u64>,
    /// The pull-through cache's upstreams (`REGISTRY_PROXY_REMOTEURL`, `PIER_PROXY_UPSTREAMS`); `None`: no mirror.
    pub mirror: Option<crate::registry::mirror::MirrorConfig>,
    /// Webhook endpoints and event settings (`REGISTRY_NOTIFICATIONS_*`, see [`crate::notifications`]).
    pub notifications: NotificationsConfig,
    /// Whether the web UI answers at `/` and `/ui/` (`PIER_UI`, default true; see [`crate::ui`]).
    pub ui: bool,
    /// How long blob links and manifest records may be served from the read cache where a platform has one
    /// (`PIER_EDGE_CACHE_TTL`, default 60 s, 0 turns it off; Workers; see [`crate::storage::cache`]).
    pub edge_cache_ttl_secs: u64,
    /// How long a tag may be served from the read cache (`PIER_TAG_CACHE_TTL`, default 0: tags are always read).
    pub tag_cache_ttl_secs: u64,
}

/// Default lifetime of read-cache entries: long enough that a location's hot pulls rarely reach the store, short
/// enough that a delete made elsewhere is seen within a minute.
pub const DEFAULT_EDGE_CACHE_TTL_SECS: u64 = 60;

impl Default for Config {
    fn default() -> Self {
        Config {
            delete_enabled: true,
            upload_expiry_secs: DEFAULT_UPLOAD_EXPIRY_SECS,
            part_size: DEFAULT_PART_SIZE,
            redirect: true,
            redirect_expiry_secs: 1200,
            auth: None,
            anonymous_write: None,
            read_only: false,
            gc_enabled: true,
            gc_grace_secs: crate::registry::gc::DEFAULT_GRACE_SECS,
            gc_interval_secs: None,
            gc_untagged_after_secs: None,
            mirror: None,
            notifications: NotificationsConfig::default(),
            ui: true,
            edge_cache_ttl_secs: DEFAULT_EDGE_CACHE_TTL_SECS,
            tag_cache_ttl_secs: 0,
        }
    }
}

/// A setting with a bad value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration setting {}: {}", self.setting, self.problem)
    }
}

impl std::error::Error for ConfigError {}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), problem: problem.into() }
}

/// Parse a boolean the way registry:2's environment overrides are written.
pub fn parse_bool(setting: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(setting, format!("expected true or false, got {v:?}"))),
    }
}

/// Parse a duration: plain seconds, or a number with `s`, `m`, `h` or `d`.
pub fn parse_duration_secs(setting: &str, v: &str) -> Result<u64, ConfigError> {
    let v = v.trim();
    let (num, mult) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        Some((i, 'd')) => (&v[..i], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| bad(setting, format!("expected a duration like 3600, 30m or 24h, got {v:?}")))
}

/// Parse a duration in Go's form, as registry:2's configuration writes them (`500ms`, `1.5s`, `1h30m`, `168h`;
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, and Pier's `d`), or a plain number of seconds like Pier's other
/// durations.
pub fn parse_go_duration(setting: &str, v: &str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let fail = || bad(setting, format!("expected a duration like 500ms, 30s, 1h30m or 168h, got {v:?}"));
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse::<u64>().map(Duration::from_secs).map_err(|_| fail());
    }
    let mut rest = t;
    let mut nanos: u128 = 0;
    if rest.is_empty() {
        return Err(fail());
    }
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(fail()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || fraction.len() > 18 {
            return Err(fail());
        }
        let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| fail())? };
        let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| fail())? };
        let scale = 10u128.pow(fraction.len() as u32);
        nanos = whole
            .checked_mul(per_unit)
            .and_then(|n| n.checked_add(fraction_value * per_unit / scale))
            .and_then(|n| nanos.checked_add(n))
            .filter(|n| *n <= u64::MAX as u128 * 1_000_000_000)
            .ok_or_else(fail)?;
        rest = after;
    }
    // Bounded above, so the seconds fit in a u64.
    Ok(Duration::new((nanos / 1_000_000_000) as u64, (nanos % 1_000_000_000) as u32))
}

/// Parse a size: bytes, or a number with `KiB`/`MiB`/`GiB` (or `K`/`M`/`G`).
pub fn parse_size(setting: &str, v: &str) -> Result<u64, ConfigError> {
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return Err(bad(setting, format!("expected a size like 8388608 or 8MiB, got {v:?}"))),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|n| *n > 0)
        .ok_or_else(|| bad(setting, format!("expected a positive size, got {v:?}")))
}

/// registry:2's read-only setting. registry:2 takes `storage.maintenance.readonly` as a map, `{enabled: true}`, and
/// its environment overrides are YAML, so people write `REGISTRY_STORAGE_MAINTENANCE_READONLY='{"enabled":true}'`
/// (or `{enabled: true}`, `enabled: true`). A plain `true`/`false` is accepted too. Any other key inside the map is a
/// mistake worth stopping for: it would otherwise leave a registry writable that its operator meant to freeze.
pub fn parse_read_only(setting: &str, v: &str) -> Result<bool, ConfigError> {
    let t = v.trim();
    let map = match t.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}').ok_or_else(|| bad(setting, format!("unclosed map in {v:?}")))?,
        // `enabled: true` without braces is a YAML block map; anything else must be a boolean.
        None if t.contains(':') || t.contains('=') => t,
        None => return parse_bool(setting, t),
    };
    let unquote = |s: &str| {
        let s = s.trim();
        s.strip_prefix('"').and_then(|s| s.strip_suffix('"')).or_else(|| s.strip_prefix('\'').and_then(|s| s.strip_suffix('\''))).unwrap_or(s).to_string()
    };
    let mut enabled = false;
    for entry in map.split([',', '\n']).map(str::trim).filter(|e| !e.is_empty()) {
        let (key, value) = entry
            .split_once(':')
            .or_else(|| entry.split_once('='))
            .ok_or_else(|| bad(setting, format!("expected enabled: true or false, got {v:?}")))?;
        match unquote(key).as_str() {
            "enabled" => enabled = parse_bool(setting, &unquote(value))?,
            other => return Err(bad(setting, format!("unknown key {other:?} (registry:2 knows only enabled)"))),
        }
    }
    Ok(enabled)
}

impl Config {
    /// Read settings through `lookup` (e.g. `|k| std::env::var(k).ok()`); unset ones keep their defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = lookup("REGISTRY_STORAGE_DELETE_ENABLED") {
            c.delete_enabled = parse_bool("REGISTRY_STORAGE_DELETE_ENABLED", &v)?;
        }
        if let Some(v) = lookup("REGISTRY_STORAGE_REDIRECT_DISABLE") {
            c.redirect = !parse_bool("REGISTRY_STORAGE_REDIRECT_DISABLE", &v)?;
        }
        // registry:2's upload purging age; Pier's own setting, read next, wins.
        if let Some(v) = lookup("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE").filter(|v| !v.trim().is_empty()) {
            let age = parse_go_duration("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", &v)?;
            if age.as_secs() == 0 {
                return Err(bad("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "must be at least 1 second"));
            }
            c.upload_expiry_secs = age.as_secs();
        }
        if let Some(v) = lookup("PIER_UPLOAD_EXPIRY") {
            c.upload_expiry_secs = parse_duration_secs("PIER_UPLOAD_EXPIRY", &v)?;
        }
        if let Some(v) = lookup("PIER_UPLOAD_PART_SIZE") {
            c.part_size = parse_size("PIER_UPLOAD_PART_SIZE", &v)?;
        }
        if let Some(v) = lookup("PIER_REDIRECT_EXPIRY") {
            c.redirect_expiry_secs = parse_duration_secs("PIER_REDIRECT_EXPIRY", &v)?;
        }
        if let Some(v) = lookup("PIER_ANONYMOUS_WRITE") {
            c.anonymous_write = Some(parse_bool("PIER_ANONYMOUS_WRITE", &v)?);
        }
        if let Some(v) = lookup("REGISTRY_STORAGE_MAINTENANCE_READONLY") {
            c.read_only = parse_read_only("REGISTRY_STORAGE_MAINTENANCE_READONLY", &v)?;
        }
        // registry:2's override of the map's one key; the more specific setting wins, as in registry:2.
        if let Some(v) = lookup("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED") {
            c.read_only = parse_bool("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", &v)?;
        }
        if let Some(v) = lookup("PIER_EDGE_CACHE_TTL") {
            c.edge_cache_ttl_secs = parse_duration_secs("PIER_EDGE_CACHE_TTL", &v)?;
        }
        if let Some(v) = lookup("PIER_TAG_CACHE_TTL") {
            c.tag_cache_ttl_secs = parse_duration_secs("PIER_TAG_CACHE_TTL", &v)?;
        }
        if let Some(v) = lookup("PIER_GC_ENABLED") {
            c.gc_enabled = parse_bool("PIER_GC_ENABLED", &v)?;
        }
        if let Some(v) = lookup("PIER_GC_GRACE_PERIOD") {
            c.gc_grace_secs = parse_duration_secs("PIER_GC_GRACE_PERIOD", &v)?;
        }
        if let Some(v) = lookup("PIER_GC_INTERVAL") {
            let secs = parse_duration_secs("PIER_GC_INTERVAL", &v)?;
            if secs == 0 {
                return Err(bad("PIER_GC_INTERVAL", "must be at least 1 second (leave it unset for no schedule)"));
            }
            c.gc_interval_secs = Some(secs);
        }
        if let Some(v) = lookup("PIER_GC_UNTAGGED_AFTER") {
            c.gc_untagged_after_secs = Some(parse_duration_secs("PIER_GC_UNTAGGED_AFTER", &v)?);
        }
        c.mirror = crate::registry::mirror::MirrorConfig::from_lookup(&lookup)?;
        if let Some(v) = lookup("PIER_UI") {
            c.ui = parse_bool("PIER_UI", &v)?;
        }
        c.auth = AuthConfig::from_lookup(&lookup)?;
        c.notifications = NotificationsConfig::from_lookup(&lookup)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn reads_registry_names() {
        let env: HashMap<&str, &str> =
            [("REGISTRY_STORAGE_DELETE_ENABLED", "false"), ("PIER_UPLOAD_EXPIRY", "30m"), ("PIER_UPLOAD_PART_SIZE", "5MiB")].into();
        let c = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert!(!c.delete_enabled);
        assert_eq!(c.upload_expiry_secs, 1800);
        assert_eq!(c.part_size, 5 * 1024 * 1024);
        assert!(c.redirect);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = Config::from_lookup(|k| (k == "REGISTRY_STORAGE_DELETE_ENABLED").then(|| "maybe".into())).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_DELETE_ENABLED");
        assert!(parse_size("X", "0").is_err());
        assert!(parse_size("X", "12 parsecs").is_err());
        assert_eq!(parse_duration_secs("X", "2d").unwrap(), 172800);
        assert!(parse_duration_secs("X", "soon").is_err());
    }

    #[test]
    fn go_durations() {
        let d = |v: &str| parse_go_duration("D", v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("168h0m0s"), Duration::from_secs(168 * 3600));
        assert_eq!(d("90"), Duration::from_secs(90));
        assert_eq!(d("2d"), Duration::from_secs(172800));
        assert_eq!(d("250us"), Duration::from_micros(250));
        assert_eq!(d(".5m"), Duration::from_secs(30));
        for v in ["", "soon", "-1s", "1..5s", "1x", "s", "1h 30m", "99999999999999999999999h"] {
            assert_eq!(parse_go_duration("D", v).unwrap_err().setting, "D", "{v:?}");
        }
    }

    #[test]
    fn upload_purging_age_sets_the_expiry_unless_pier_says_otherwise() {
        let read = |pairs: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = pairs.iter().copied().collect();
            Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))
        };
        let age = ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "168h");
        assert_eq!(read(&[age]).unwrap().upload_expiry_secs, 168 * 3600);
        assert_eq!(read(&[age, ("PIER_UPLOAD_EXPIRY", "2h")]).unwrap().upload_expiry_secs, 7200);
        let e = read(&[("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "a week")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE");
        assert!(read(&[("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "0s")]).is_err());
    }

    #[test]
    fn read_only_accepts_registry2_forms() {
        let on = |v: &str| parse_read_only("R", v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        for v in ["true", " TRUE ", "1", r#"{"enabled":true}"#, "{enabled: true}", "{ enabled : 'true' }", "enabled: true", "enabled=true", "{\"enabled\": \"yes\"}", "enabled: true\n"] {
            assert!(on(v), "{v:?}");
        }
        for v in ["false", "", "0", r#"{"enabled":false}"#, "{enabled: false}", "{}", "enabled: false"] {
            assert!(!on(v), "{v:?}");
        }
        for v in ["maybe", r#"{"enabled":maybe}"#, "{enabled: true", "{readonly: true}", r#"{"enabled":true,"other":1}"#, "{enabled}"] {
            let e = parse_read_only("REGISTRY_STORAGE_MAINTENANCE_READONLY", v).unwrap_err();
            assert_eq!(e.setting, "REGISTRY_STORAGE_MAINTENANCE_READONLY", "{v:?}");
        }
    }

    #[test]
    fn read_only_settings() {
        let read = |pairs: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = pairs.iter().copied().collect();
            Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))
        };
        assert!(!read(&[]).unwrap().read_only);
        assert!(read(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY", r#"{"enabled":true}"#)]).unwrap().read_only);
        assert!(read(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")]).unwrap().read_only);
        // The specific key overrides the map, either way.
        let both = [("REGISTRY_STORAGE_MAINTENANCE_READONLY", "{enabled: true}"), ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "false")];
        assert!(!read(&both).unwrap().read_only);
        let e = read(&[("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "sure")]).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED");
    }
}
