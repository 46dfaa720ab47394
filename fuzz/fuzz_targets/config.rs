//! Configuration: any set of settings gives a configuration or an error naming a known setting, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::config::Config;

const SETTINGS: &[&str] = &[
    "REGISTRY_STORAGE_DELETE_ENABLED",
    "REGISTRY_STORAGE_REDIRECT_DISABLE",
    "PIER_UPLOAD_EXPIRY",
    "PIER_UPLOAD_PART_SIZE",
    "PIER_REDIRECT_EXPIRY",
    "PIER_ANONYMOUS_WRITE",
    "REGISTRY_STORAGE_MAINTENANCE_READONLY",
    "REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED",
    "REGISTRY_AUTH",
    "REGISTRY_AUTH_HTPASSWD_PATH",
    "REGISTRY_AUTH_HTPASSWD_REALM",
    "PIER_AUTH_HTPASSWD",
    "PIER_AUTH_RULES",
    "PIER_AUTH_TOKEN_SECRET",
    "PIER_AUTH_ISSUER",
    "PIER_AUTH_SERVICE",
    "PIER_AUTH_REALM",
    "PIER_AUTH_TOKEN_EXPIRY",
    "PIER_AUTH_CACHE_TTL",
    "REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE",
    "REGISTRY_NOTIFICATIONS_ENDPOINTS",
    "REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES",
    "PIER_NOTIFICATIONS_SECRET",
    "PIER_NOTIFICATIONS_MAX_AGE",
    "PIER_NOTIFICATIONS_MAX_BACKOFF",
];

fuzz_target!(|settings: Vec<(u8, String)>| {
    let lookup = |k: &str| {
        settings.iter().rev().find(|(i, _)| SETTINGS[*i as usize % SETTINGS.len()] == k).map(|(_, v)| v.clone())
    };
    match Config::from_lookup(lookup) {
        Ok(c) => {
            assert!(c.part_size > 0);
            if let Some(a) = &c.auth {
                assert!(a.token_expiry_secs > 0);
            }
            for e in &c.notifications.endpoints {
                assert!(!e.name.trim().is_empty() && (e.url.starts_with("https://") || e.url.starts_with("http://")));
                assert!(!e.timeout.is_zero() && e.threshold > 0);
            }
        }
        Err(e) => assert!(SETTINGS.contains(&e.setting.as_str()), "{e}"),
    }
});
