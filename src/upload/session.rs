//! The state of one upload session, kept in the metadata store under `_uploads/<id>` between requests.
//!
//! Bytes flow into object-store multipart parts of exactly `part_size` bytes (object stores want parts of at least
//! 5 MiB, R2 wants all but the last equal), so whatever is left over at the end of a request — the tail, shorter than
//! a part — is written to its own small object and prepended to the next request's bytes.
//!
//! A request that writes into a session first claims it: it saves the session with a [`Claim`] (a random token and
//! a lease) by compare-and-swap, and only the request holding the claim may write parts or commit a new offset. The
//! lease is what keeps a crashed claimant from wedging a session: once it runs out, the next request may claim.

use super::hasher::ResumableSha256;
use serde::{Deserialize, Serialize};

/// A multipart part already written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRecord {
    pub number: u32,
    pub etag: String,
    pub size: u64,
}

/// The request currently writing into a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Random, unique to the claiming request: it recognises its own claim (and a store version changes with it).
    pub token: String,
    /// Unix seconds until which nobody else may claim the session; the holder renews it while it works.
    pub until: u64,
}

/// Everything an upload carries between requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadSession {
    /// The session id (the `<reference>` of `/blobs/uploads/<reference>`).
    pub id: String,
    /// Repository the session belongs to; a session is unknown under any other name.
    pub repository: String,
    /// Unix seconds of creation and of the last accepted chunk; expiry counts from `updated_at`.
    pub created_at: u64,
    pub updated_at: u64,
    /// Bytes accepted so far (= the next chunk's start).
    pub offset: u64,
    /// SHA-256 over bytes `0..offset`.
    pub sha256: ResumableSha256,
    /// Size of every part but the last, fixed for the session's life so parts stay equal.
    pub part_size: u64,
    /// The object store's multipart upload id, once the first part has been written.
    pub multipart_id: Option<String>,
    /// Parts written so far, in order.
    pub parts: Vec<PartRecord>,
    /// Object key holding bytes `offset - tail_len .. offset`, if any.
    pub tail_key: Option<String>,
    pub tail_len: u64,
    /// The request writing into the session right now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

impl UploadSession {
    /// A new, empty session.
    pub fn new(id: String, repository: String, now: u64, part_size: u64) -> Self {
        UploadSession {
            id,
            repository,
            created_at: now,
            updated_at: now,
            offset: 0,
            sha256: ResumableSha256::new(),
            part_size,
            multipart_id: None,
            parts: Vec::new(),
            tail_key: None,
            tail_len: 0,
            claim: None,
        }
    }

    /// Whether the session has been idle longer than `expiry_secs` (a live claim counts as activity).
    pub fn is_expired(&self, now: u64, expiry_secs: u64) -> bool {
        let active = self.claim.as_ref().map_or(self.updated_at, |c| c.until.max(self.updated_at));
        now.saturating_sub(active) > expiry_secs
    }

    /// Whether another request holds the session at `now`.
    pub fn is_claimed(&self, now: u64) -> bool {
        self.claim.as_ref().is_some_and(|c| c.until > now)
    }

    /// The object key a multipart upload of this session is assembled at. Outside `_uploads/` because on stores
    /// that cannot rename, the verified blob stays there.
    pub fn staging_key(&self) -> String {
        format!("blobs/uploads/{}", self.id)
    }

    /// A fresh key for a tail starting at `start`, unique to the request writing it (`nonce`): a crash between
    /// writing the tail and saving the session, or two clients racing on one session, never leaves a saved session
    /// pointing at bytes other than the ones it hashed.
    pub fn tail_key_at(&self, start: u64, len: u64, nonce: &str) -> String {
        format!("_uploads/{}/tail-{start}-{len}-{nonce}", self.id)
    }
}

/// Whether an upload id has the shape Pier issues (so anything else is unknown without a store look-up, and never
/// reaches a storage key).
pub fn valid_id(id: &str) -> bool {
    id.len() == 36
        && id.bytes().enumerate().all(|(i, c)| if matches!(i, 8 | 13 | 18 | 23) { c == b'-' } else { c.is_ascii_hexdigit() && !c.is_ascii_uppercase() })
}

/// Format 16 random bytes as a version-4 UUID.
pub fn new_id(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = crate::spec::digest::to_hex(&bytes);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = new_id([0xab; 16]);
        assert_eq!(id.len(), 36);
        assert!(valid_id(&id));
        assert_eq!(&id[14..15], "4");
        for bad in ["", "../../etc", "ABABABAB-ABAB-4BAB-ABAB-ABABABABABAB", &id.replace('-', "x")] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn round_trips_and_expires() {
        let mut s = UploadSession::new(new_id([1; 16]), "a/b".into(), 100, 1024);
        s.sha256.update(b"hello");
        s.offset = 5;
        let back: UploadSession = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(!s.is_expired(150, 100));
        assert!(s.is_expired(201, 100));
    }
}
