//! Registry events, as registry:2 sends them to its notification endpoints: the envelope
//! (`application/vnd.docker.distribution.events.v1+json`, `{"events":[…]}`), the event's fields, which endpoint wants
//! which event (`ignoredmediatypes`, `ignore.actions`), the signature of a delivery and the retry schedule. Pure
//! types and functions, no I/O: `registry::notify` records events into the outbox (or the platform's
//! [`EventSink`]) and delivers them.
//!
//! Signatures: with `PIER_NOTIFICATIONS_SECRET` set, every delivery carries `X-Pier-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact request body keyed by the secret, so a receiver can tell the registry sent it
//! ([`signature`]; receivers compare in constant time).

use crate::error::Result;
use crate::notifications::Endpoint;
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// The media type of an envelope of events.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v1+json";
/// The header carrying a delivery's HMAC.
pub const SIGNATURE_HEADER: &str = "X-Pier-Signature";
/// registry:2's media type for blob events (layers and configs are opaque to it).
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Push,
    Pull,
    Mount,
    Delete,
}

impl Action {
    /// The name registry:2 uses (and `ignore.actions` lists).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Mount => "mount",
            Action::Delete => "delete",
        }
    }
}

/// A manifest's reference, listed in a manifest event with `events.includereferences`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub size: u64,
    pub digest: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The content an event is about. Fields registry:2 leaves out when empty are left out here too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    #[serde(rename = "mediaType", default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub length: u64,
    pub repository: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A mount's source repository.
    #[serde(rename = "fromRepository", default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub references: Option<Vec<Reference>>,
}

/// The request that caused an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFacts {
    /// The request's `X-Request-Id` (the one the response carried).
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub useragent: String,
}

/// Who made the request (empty: anonymous).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// The registry instance that saw the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub addr: String,
    #[serde(rename = "instanceID", default, skip_serializing_if = "String::is_empty")]
    pub instance_id: String,
}

/// One event, as registry:2 writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    /// RFC 3339, UTC, with milliseconds.
    pub timestamp: String,
    pub action: Action,
    pub target: Target,
    pub request: RequestFacts,
    #[serde(default)]
    pub actor: Actor,
    #[serde(default)]
    pub source: Source,
}

/// What a handler reports about the content it served or changed; the registry adds the request's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDraft {
    pub action: Action,
    pub target: Target,
}

/// The body of a delivery.
pub fn envelope(events: &[Event]) -> Vec<u8> {
    // Serialising plain structs of strings and numbers cannot fail; an empty envelope is still valid JSON.
    serde_json::to_vec(&serde_json::json!({ "events": events })).unwrap_or_else(|_| b"{\"events\":[]}".to_vec())
}

/// The `X-Pier-Signature` value of `body`: `sha256=` and the hex HMAC-SHA256 keyed by `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", crate::spec::digest::to_hex(&mac.finalize().into_bytes()))
}

/// Whether `endpoint` gets `event` (registry:2's filters: disabled endpoints, ignored actions and media types).
pub fn wants(endpoint: &Endpoint, action: Action, media_type: &str) -> bool {
    !endpoint.disabled
        && !endpoint.ignored_actions.iter().any(|a| a == action.as_str())
        && !endpoint.ignored_media_types.iter().any(|m| m == media_type)
}

/// The pause before the next attempt after `failures` failures in a row, registry:2's way: no pause until
/// `threshold` failures, then `backoff`, doubling with every further failure, never more than `max`.
pub fn retry_delay(failures: u32, threshold: u32, backoff: Duration, max: Duration) -> Duration {
    if failures < threshold.max(1) {
        return Duration::ZERO;
    }
    let doublings = (failures - threshold.max(1)).min(30);
    backoff.saturating_mul(1u32 << doublings).min(max.max(backoff))
}

/// An endpoint's name as a key segment: itself when it is short and plain, else a hash (names are free text).
pub fn endpoint_key(name: &str) -> String {
    let plain = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['.', '_']);
    if plain {
        name.to_string()
    } else {
        use sha2::Digest as _;
        format!("_{}", &crate::spec::digest::to_hex(&Sha256::digest(name.as_bytes()))[..24])
    }
}

/// Where an event goes when the platform has something better than the outbox (a Cloudflare Queue): the platform
/// implements it and hands it to [`crate::registry::Registry::with_event_sink`]. `send` must be durable when it
/// returns: the client is answered right after it.
#[async_trait(?Send)]
pub trait EventSink {
    /// Hand `event`, owed to `endpoint`, to the platform's delivery.
    async fn send(&self, endpoint: &Endpoint, event: &Event) -> Result<()>;
}

/// How a delivery attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered 2xx.
    Delivered,
    /// Anything else: a status, a network error, a timeout.
    Failed(String),
}

/// The target of a blob event: registry:2 calls every blob `application/octet-stream`.
pub fn blob_target(repository: &str, digest: &str, size: u64) -> Target {
    Target {
        media_type: BLOB_MEDIA_TYPE.into(),
        size,
        digest: digest.to_string(),
        length: size,
        repository: repository.to_string(),
        url: format!("/v2/{repository}/blobs/{digest}"),
        ..Target::default()
    }
}

/// The target of a manifest event.
pub fn manifest_target(repository: &str, digest: &str, media_type: &str, size: u64, tag: Option<&str>) -> Target {
    Target {
        media_type: media_type.to_string(),
        size,
        digest: digest.to_string(),
        length: size,
        repository: repository.to_string(),
        url: format!("/v2/{repository}/manifests/{digest}"),
        tag: tag.map(str::to_string),
        ..Target::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(actions: &[&str], types: &[&str]) -> Endpoint {
        let list = serde_json::json!([{ "name": "e", "url": "http://x/", "ignoredmediatypes": types, "ignore": { "actions": actions } }]);
        let c = crate::notifications::NotificationsConfig::from_lookup(&|k| {
            (k == crate::notifications::ENDPOINTS_SETTING).then(|| list.to_string())
        })
        .unwrap();
        c.endpoints[0].clone()
    }

    #[test]
    fn registry2_field_names() {
        let e = Event {
            id: "i".into(),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            action: Action::Push,
            target: Target {
                media_type: "m".into(),
                size: 3,
                digest: "sha256:x".into(),
                length: 3,
                repository: "a/b".into(),
                url: "http://h/v2/a/b/manifests/sha256:x".into(),
                tag: Some("v1".into()),
                from_repository: None,
                references: Some(vec![Reference { media_type: "l".into(), size: 1, digest: "sha256:y".into() }]),
            },
            request: RequestFacts { id: "r".into(), addr: "127.0.0.1".into(), host: "h".into(), method: "PUT".into(), useragent: "ua".into() },
            actor: Actor { name: "alice".into() },
            source: Source { addr: "h".into(), instance_id: "n".into() },
        };
        let v: serde_json::Value = serde_json::from_slice(&envelope(std::slice::from_ref(&e))).unwrap();
        let got = &v["events"][0];
        assert_eq!(got["action"], "push");
        assert_eq!(got["target"]["mediaType"], "m");
        assert_eq!(got["target"]["references"][0]["digest"], "sha256:y");
        assert_eq!(got["request"]["useragent"], "ua");
        assert_eq!(got["source"]["instanceID"], "n");
        assert_eq!(serde_json::from_value::<Event>(got.clone()).unwrap(), e);
        // A delete names only what it removed.
        let t = serde_json::to_value(Target { repository: "a".into(), digest: "sha256:z".into(), ..Target::default() }).unwrap();
        assert_eq!(t, serde_json::json!({ "repository": "a", "digest": "sha256:z" }));
    }

    #[test]
    fn hmac_matches_rfc4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn filters() {
        let e = endpoint(&["pull"], &["application/octet-stream"]);
        assert!(!wants(&e, Action::Pull, "application/vnd.oci.image.manifest.v1+json"));
        assert!(!wants(&e, Action::Push, BLOB_MEDIA_TYPE));
        assert!(wants(&e, Action::Push, "application/vnd.oci.image.manifest.v1+json"));
        assert!(wants(&e, Action::Delete, ""));
    }

    #[test]
    fn backoff_after_threshold_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(retry_delay(1, 3, s(2), s(60)), Duration::ZERO);
        assert_eq!(retry_delay(3, 3, s(2), s(60)), s(2));
        assert_eq!(retry_delay(4, 3, s(2), s(60)), s(4));
        assert_eq!(retry_delay(40, 3, s(2), s(60)), s(60));
    }

    #[test]
    fn endpoint_keys_are_safe() {
        assert_eq!(endpoint_key("ci-1"), "ci-1");
        for odd in ["a/b", "", "..", "_x", &"x".repeat(60), "sp ace"] {
            let k = endpoint_key(odd);
            assert!(k.starts_with('_') && k.len() == 25, "{odd:?} → {k}");
        }
    }
}
