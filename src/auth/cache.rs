//! A short-lived cache of verified Basic credentials, so a client that sends `Authorization: Basic` on every
//! request pays bcrypt once per lifetime rather than on every request. Only successes are cached. The key is
//! SHA-256 of (user, password, the user's htpasswd hash): the cache holds no password, a changed password or hash
//! misses, and nothing else about the credentials is kept. Process memory only (one per isolate on Workers).

use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;

/// Default lifetime of a cached verification.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// Most entries kept; when full, expired entries go first, then everything (a rare full bcrypt round again).
pub const MAX_ENTRIES: usize = 4096;

/// Verified credentials → when the verification expires.
#[derive(Debug, Default)]
pub struct CredentialCache {
    entries: RefCell<HashMap<[u8; 32], u64>>,
    ttl_secs: u64,
}

/// The cache key of a credential.
pub fn key(user: &str, password: &[u8], hash: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefixed fields, so no two different triples hash the same input.
    for field in [user.as_bytes(), password, hash.as_bytes()] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}

impl CredentialCache {
    /// An empty cache whose entries live `ttl_secs`.
    pub fn new(ttl_secs: u64) -> Self {
        CredentialCache { entries: RefCell::new(HashMap::new()), ttl_secs }
    }

    /// Whether `key` was verified and has not expired.
    pub fn contains(&self, key: &[u8; 32], now: u64) -> bool {
        self.entries.borrow().get(key).is_some_and(|exp| now < *exp)
    }

    /// Remember a successful verification.
    pub fn insert(&self, key: [u8; 32], now: u64) {
        if self.ttl_secs == 0 {
            return;
        }
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, exp| now < *exp);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, now.saturating_add(self.ttl_secs));
    }

    /// Number of entries (expired ones included until they are swept).
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_expire_and_keys_differ() {
        let c = CredentialCache::new(60);
        let k = key("alice", b"pw", "$2y$hash");
        assert!(!c.contains(&k, 100));
        c.insert(k, 100);
        assert!(c.contains(&k, 159));
        assert!(!c.contains(&k, 160), "expired");
        assert!(!c.contains(&key("alice", b"pw2", "$2y$hash"), 100), "other password");
        assert!(!c.contains(&key("alice", b"pw", "$2y$other"), 100), "changed hash");
        assert_ne!(key("ab", b"c", "h"), key("a", b"bc", "h"), "fields are delimited");
    }

    #[test]
    fn bounded() {
        let c = CredentialCache::new(10);
        for i in 0..MAX_ENTRIES + 5 {
            c.insert(key(&i.to_string(), b"p", "h"), 0);
        }
        assert!(c.len() <= MAX_ENTRIES);
        let off = CredentialCache::new(0);
        off.insert(key("a", b"b", "c"), 0);
        assert!(off.is_empty());
    }
}
