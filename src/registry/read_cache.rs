//! Which metadata the read cache (`storage::cache`) may hold, and for how long: the registry knows its key layout
//! (`keys`), the cache does not. Blob links and manifest records are immutable while they exist (a digest names
//! the same bytes forever; what changes is only whether the repository has them, and every such change goes through
//! the store's writes, which drop the key); tags move, so they are revalidated on every read (a conditional read that
//! moves no bytes when the tag did not move), or served for `PIER_TAG_CACHE_TTL` when the operator allows that.
//!
//! Lifetimes are capped below the garbage-collection grace period: the collector deletes only what it marked at
//! least that long ago, and marked values are never cached, so no cached entry outlives what it names.

use super::Registry;
use crate::storage::cache::{CacheStats, CachePolicy, CachedMeta, MemoryCache, ReadCache, Rule, MEMORY_TTL_SECS};
use std::cell::Cell;
use std::rc::Rc;

/// The registry's caching rules for its metadata keys.
pub struct KeyPolicy {
    immutable_ttl: u64,
    tag_ttl: u64,
}

impl KeyPolicy {
    pub fn new(immutable_ttl: u64, tag_ttl: u64, gc_grace: u64) -> Self {
        // A shared-tier hit refills memory for up to MEMORY_TTL_SECS more.
        let cap = gc_grace.saturating_sub(MEMORY_TTL_SECS);
        KeyPolicy { immutable_ttl: immutable_ttl.min(cap), tag_ttl: tag_ttl.min(cap) }
    }
}

/// The part of `key` after `repositories/<name>/`, if it is a repository key (names never contain `/_`).
fn repository_tail(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("repositories/")?;
    rest.find("/_").map(|i| &rest[i + 1..])
}

impl CachePolicy for KeyPolicy {
    fn rule(&self, key: &str) -> Option<Rule> {
        let tail = repository_tail(key)?;
        if tail.starts_with("_blobs/") || tail.starts_with("_manifests/") {
            (self.immutable_ttl > 0).then_some(Rule::Fresh(self.immutable_ttl))
        } else if tail.starts_with("_tags/") {
            Some(if self.tag_ttl > 0 { Rule::Fresh(self.tag_ttl) } else { Rule::Revalidate })
        } else {
            None
        }
    }

    fn cacheable(&self, _key: &str, value: &[u8]) -> bool {
        // Links are one JSON object, records and tag copies a JSON header line before the manifest: garbage
        // collection's mark, when present, is a `gc` field of that first line.
        let first = value.iter().position(|&b| b == b'\n').map_or(value, |nl| &value[..nl]);
        !first.windows(5).any(|w| w == b"\"gc\":")
    }
}

impl Registry {
    /// Put a read cache in front of the metadata store: `memory`, then `shared` when given; `invalidations` shared by
    /// every registry writing through the same memory, see [`CachedMeta::new`]. `PIER_EDGE_CACHE_TTL=0` turns it off.
    pub fn with_read_cache(mut self, memory: Rc<MemoryCache>, shared: Option<Rc<dyn ReadCache>>, invalidations: Rc<Cell<u64>>) -> Self {
        let c = &self.config;
        if c.edge_cache_ttl_secs == 0 {
            return self;
        }
        let policy = Rc::new(KeyPolicy::new(c.edge_cache_ttl_secs, c.tag_cache_ttl_secs, c.gc_grace_secs));
        let cached = CachedMeta::new(self.meta.clone(), memory, shared, policy, invalidations);
        self.cache_stats = Some(cached.stats());
        self.meta = Rc::new(cached);
        self
    }

    /// The read cache's counters, when there is one.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.cache_stats.as_ref().map(|s| s.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_records_are_cached_tags_revalidated_and_nothing_else() {
        let p = KeyPolicy::new(60, 0, 3600);
        assert_eq!(p.rule("repositories/a/b/_blobs/sha256/ab"), Some(Rule::Fresh(60)));
        assert_eq!(p.rule("repositories/a/_manifests/sha256/ab"), Some(Rule::Fresh(60)));
        assert_eq!(p.rule("repositories/a/_tags/latest"), Some(Rule::Revalidate));
        for key in ["_blobs/sha256/ab", "_uploads/x", "repositories/a/_ti/0123/latest", "repositories/a/_referrers/sha256/ab/sha256/cd", "_catalog/a", "_gc/state"] {
            assert_eq!(p.rule(key), None, "{key}");
        }
        assert_eq!(KeyPolicy::new(60, 30, 25).rule("repositories/a/_tags/t"), Some(Rule::Fresh(15)), "capped below the grace period");
        assert_eq!(KeyPolicy::new(60, 30, 5).rule("repositories/a/_blobs/sha256/ab"), None, "a grace period this short turns it off");
        assert!(p.cacheable("k", br#"{"size":3}"#));
        assert!(!p.cacheable("k", br#"{"size":3,"gc":{"cycle":1,"at":2}}"#));
        assert!(!p.cacheable("k", b"{\"media_type\":\"x\",\"gc\":{\"cycle\":1,\"at\":2}}\n{\"gc\":1}"));
        assert!(p.cacheable("k", b"{\"media_type\":\"x\"}\n{\"annotations\":{\"gc\":\"1\"}}"), "only the header line counts");
    }
}
