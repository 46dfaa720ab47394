//! A read cache in front of the metadata store, for the values a pull reads on every request and that do not change
//! while they exist: a repository's blob links (`HEAD`/`GET` of a blob) and its manifest records (a manifest by
//! digest). Tags change: by default they are *revalidated* — the copy in memory is served only after the store says
//! it still holds that version ([`MetaStore::get_unless`]: a conditional read that moves no bytes when unchanged) —
//! and served without asking only when the operator allows a staleness (`PIER_TAG_CACHE_TTL`).
//!
//! [`CachedMeta`] is a [`MetaStore`] that wraps the real one. What it caches, and how, the registry decides per key
//! (a [`CachePolicy`]); the tiers are per process (or isolate) memory ([`MemoryCache`]), then optionally a platform's
//! shared cache (a [`ReadCache`]: Workers' Cache API, local to each Cloudflare location).
//!
//! Correctness rests on four rules:
//! - **Only values that exist are cached**, never an absence: a push is visible to the next pull at once.
//! - **Every write or delete through this store drops the key from every tier**, after the store call returns. A read
//!   that started before the write cannot put the old value back into memory: each write bumps an invalidation count
//!   and a fill is dropped when the count moved while the store was read.
//! - **Values carrying garbage collection's mark are not cached** (see `registry::gc`), so the collector's deletes,
//!   which only remove marked values older than the grace period, never strand a cached entry as long as the cache's
//!   lifetime is shorter than the grace period (the registry caps it there).
//! - **Reads that decide a write bypass the cache**: [`MetaStore::get_versioned`] always reads the store, and every
//!   compare-and-swap starts from it.
//!
//! What is left is staleness elsewhere, bounded by time: a delete drops the key from this process's memory and this
//! location's shared cache; another isolate's memory keeps it at most [`MEMORY_TTL_SECS`], another location's shared
//! cache at most the configured lifetime. Access control is unaffected: the cache holds store values, not responses,
//! and sits below the authorizer, so every request is still authorized before anything is read.

use super::{MetaStore, Precondition, Revalidated, Versioned};
use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// The longest a value stays in process memory, whatever the configured lifetime: other isolates' deletes cannot
/// reach it, so this bounds how long they go unseen here.
pub const MEMORY_TTL_SECS: u64 = 10;
/// Bytes of values the memory tier holds at most (Workers give an isolate 128 MB).
pub const MEMORY_CAPACITY: usize = 8 * 1024 * 1024;
/// Values larger than this are not cached (a manifest is at most 4 MiB; most are a few KiB).
pub const MAX_VALUE: usize = 256 * 1024;

/// One tier of cached values.
#[async_trait(?Send)]
pub trait ReadCache {
    /// The cached value of `key`, if any and still fresh.
    async fn get(&self, key: &str) -> Option<Bytes>;
    /// Remember `value` for `key` for `ttl_secs`. Failures are silent: the cache is an optimization.
    async fn put(&self, key: &str, value: Bytes, ttl_secs: u64);
    /// Forget `key`.
    async fn delete(&self, key: &str);
}

/// How a key's reads may use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Served from the cache for up to this many seconds after it was read from the store.
    Fresh(u64),
    /// Served from memory only once the store confirmed the version ([`MetaStore::get_unless`]).
    Revalidate,
}

/// How a key may be cached (`None`: never), and whether a value may be cached at all.
pub trait CachePolicy {
    fn rule(&self, key: &str) -> Option<Rule>;
    fn cacheable(&self, key: &str, value: &[u8]) -> bool;
}

/// Counters of a [`CachedMeta`], for the operator and the benchmarks (`GET /admin/cache`).
#[derive(Default, Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    /// Reads of cacheable keys answered from process memory.
    pub memory_hits: u64,
    /// Reads of cacheable keys answered from the shared tier.
    pub shared_hits: u64,
    /// Reads of cacheable keys that went to the store for the value.
    pub misses: u64,
    /// Reads of revalidated keys the store confirmed unchanged (no bytes moved).
    pub revalidated: u64,
    /// Calls made to the metadata store underneath (reads, writes, lists).
    pub store_calls: u64,
}

/// Values kept in memory, bounded in bytes; oldest first out. Time comes from the caller's clock.
pub struct MemoryCache {
    clock: Rc<dyn Fn() -> u64>,
    inner: RefCell<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    entries: HashMap<String, (Bytes, u64, u64)>,
    order: VecDeque<(String, u64)>,
    bytes: usize,
    next: u64,
}

impl MemoryCache {
    /// An empty cache reading the time (Unix seconds) from `clock`.
    pub fn new(clock: Rc<dyn Fn() -> u64>) -> Self {
        MemoryCache { clock, inner: RefCell::new(MemoryInner::default()) }
    }
}

impl MemoryInner {
    fn remove(&mut self, key: &str) {
        if let Some((v, _, _)) = self.entries.remove(key) {
            self.bytes -= v.len() + key.len();
        }
    }
}

#[async_trait(?Send)]
impl ReadCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let now = (self.clock)();
        let mut inner = self.inner.borrow_mut();
        match inner.entries.get(key) {
            Some((v, expires, _)) if *expires > now => Some(v.clone()),
            Some(_) => {
                inner.remove(key);
                None
            }
            None => None,
        }
    }

    async fn put(&self, key: &str, value: Bytes, ttl_secs: u64) {
        let size = value.len() + key.len();
        if ttl_secs == 0 || size > MEMORY_CAPACITY / 4 {
            return;
        }
        let expires = (self.clock)().saturating_add(ttl_secs.min(MEMORY_TTL_SECS));
        let mut inner = self.inner.borrow_mut();
        inner.remove(key);
        while inner.bytes + size > MEMORY_CAPACITY {
            let Some((old, id)) = inner.order.pop_front() else { break };
            // The queue may name an entry replaced since; only the matching one goes.
            if inner.entries.get(&old).is_some_and(|(_, _, i)| *i == id) {
                inner.remove(&old);
            }
        }
        let id = inner.next;
        inner.next += 1;
        inner.order.push_back((key.to_string(), id));
        // Replaced and removed entries leave stale queue items behind; compact before the queue outgrows the map.
        if inner.order.len() > 2 * inner.entries.len() + 64 {
            let MemoryInner { entries, order, .. } = &mut *inner;
            order.retain(|(k, i)| entries.get(k).is_some_and(|(_, _, j)| j == i));
        }
        inner.bytes += size;
        inner.entries.insert(key.to_string(), (value, expires, id));
    }

    async fn delete(&self, key: &str) {
        self.inner.borrow_mut().remove(key);
    }
}

/// A metadata store with read-through caching of the keys `policy` allows (see the module doc).
pub struct CachedMeta {
    inner: Rc<dyn MetaStore>,
    memory: Rc<MemoryCache>,
    shared: Option<Rc<dyn ReadCache>>,
    policy: Rc<dyn CachePolicy>,
    invalidations: Rc<Cell<u64>>,
    stats: Rc<Cell<CacheStats>>,
}

/// Memory keys of revalidated values (`version \n value`) are apart from fresh ones.
fn revalidate_key(key: &str) -> String {
    format!("\u{0}rv/{key}")
}

impl CachedMeta {
    /// `inner` behind `memory` and then `shared`. `invalidations` counts writes: share one per memory tier, so that
    /// every store writing through that memory (a request's, a scheduled run's) stops stale fills of the others.
    pub fn new(
        inner: Rc<dyn MetaStore>,
        memory: Rc<MemoryCache>,
        shared: Option<Rc<dyn ReadCache>>,
        policy: Rc<dyn CachePolicy>,
        invalidations: Rc<Cell<u64>>,
    ) -> Self {
        CachedMeta { inner, memory, shared, policy, invalidations, stats: Rc::default() }
    }

    /// The counters so far.
    pub fn stats(&self) -> Rc<Cell<CacheStats>> {
        self.stats.clone()
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    async fn invalidate(&self, key: &str) {
        let Some(rule) = self.policy.rule(key) else { return };
        self.invalidations.set(self.invalidations.get().wrapping_add(1));
        self.memory.delete(key).await;
        self.memory.delete(&revalidate_key(key)).await;
        if let (Rule::Fresh(_), Some(shared)) = (rule, &self.shared) {
            shared.delete(key).await;
        }
    }

    /// Whether a value read from the store while no write happened (`before`) may be remembered.
    fn may_fill(&self, key: &str, value: &[u8], before: u64) -> bool {
        value.len() <= MAX_VALUE && self.invalidations.get() == before && self.policy.cacheable(key, value)
    }

    async fn get_fresh(&self, key: &str, ttl: u64) -> Result<Option<Bytes>> {
        if let Some(v) = self.memory.get(key).await {
            self.count(|s| s.memory_hits += 1);
            return Ok(Some(v));
        }
        if let Some(shared) = &self.shared {
            if let Some(v) = shared.get(key).await {
                self.count(|s| s.shared_hits += 1);
                self.memory.put(key, v.clone(), ttl).await;
                return Ok(Some(v));
            }
        }
        self.count(|s| {
            s.misses += 1;
            s.store_calls += 1;
        });
        let before = self.invalidations.get();
        let value = self.inner.get(key).await?;
        if let Some(v) = value.as_ref().filter(|v| self.may_fill(key, v, before)) {
            self.memory.put(key, v.clone(), ttl).await;
            if let Some(shared) = &self.shared {
                shared.put(key, v.clone(), ttl).await;
            }
        }
        Ok(value)
    }

    async fn get_revalidated(&self, key: &str) -> Result<Option<Bytes>> {
        let mkey = revalidate_key(key);
        let before = self.invalidations.get();
        self.count(|s| s.store_calls += 1);
        let held = self.memory.get(&mkey).await.and_then(|entry| {
            let nl = entry.iter().position(|&b| b == b'\n')?;
            Some((String::from_utf8(entry[..nl].to_vec()).ok()?, entry.slice(nl + 1..)))
        });
        let fresh = match held {
            Some((version, value)) => match self.inner.get_unless(key, &version).await? {
                Revalidated::Unchanged => {
                    self.count(|s| s.revalidated += 1);
                    return Ok(Some(value));
                }
                Revalidated::Absent => {
                    self.memory.delete(&mkey).await;
                    return Ok(None);
                }
                Revalidated::Changed(v) => Some(v),
            },
            None => self.inner.get_versioned(key).await?,
        };
        self.count(|s| s.misses += 1);
        let Some(v) = fresh else { return Ok(None) };
        if self.may_fill(key, &v.value, before) && !v.version.contains('\n') {
            let mut entry = Vec::with_capacity(v.version.len() + 1 + v.value.len());
            entry.extend_from_slice(v.version.as_bytes());
            entry.push(b'\n');
            entry.extend_from_slice(&v.value);
            // No time limit is needed (every use asks the store first); memory's own cap applies.
            self.memory.put(&mkey, Bytes::from(entry), MEMORY_TTL_SECS).await;
        }
        Ok(Some(v.value))
    }
}

#[async_trait(?Send)]
impl MetaStore for CachedMeta {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        match self.policy.rule(key) {
            Some(Rule::Fresh(ttl)) if ttl > 0 => self.get_fresh(key, ttl).await,
            Some(Rule::Revalidate) => self.get_revalidated(key).await,
            _ => {
                self.count(|s| s.store_calls += 1);
                self.inner.get(key).await
            }
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        self.count(|s| s.store_calls += 1);
        self.inner.get_versioned(key).await
    }

    async fn get_unless(&self, key: &str, version: &str) -> Result<Revalidated> {
        self.count(|s| s.store_calls += 1);
        self.inner.get_unless(key, version).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.count(|s| s.store_calls += 1);
        let r = self.inner.put(key, value).await;
        self.invalidate(key).await;
        r
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        self.count(|s| s.store_calls += 1);
        let r = self.inner.put_if(key, value, condition).await;
        if !matches!(r, Ok(None)) {
            self.invalidate(key).await;
        }
        r
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.count(|s| s.store_calls += 1);
        let r = self.inner.delete(key).await;
        self.invalidate(key).await;
        r
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        self.count(|s| s.store_calls += 1);
        let r = self.inner.delete_if(key, version).await;
        if !matches!(r, Ok(false)) {
            self.invalidate(key).await;
        }
        r
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.count(|s| s.store_calls += 1);
        self.inner.list(prefix, start_after, limit).await
    }

    fn atomic_conditional_writes(&self) -> bool {
        self.inner.atomic_conditional_writes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryMetaStore;
    use futures::executor::block_on;

    struct EveryKey;
    impl CachePolicy for EveryKey {
        fn rule(&self, key: &str) -> Option<Rule> {
            if key.starts_with("nocache/") {
                None
            } else if key.starts_with("tag/") {
                Some(Rule::Revalidate)
            } else {
                Some(Rule::Fresh(60))
            }
        }
        fn cacheable(&self, _key: &str, value: &[u8]) -> bool {
            value != b"marked"
        }
    }

    fn setup() -> (Rc<dyn MetaStore>, Rc<Cell<u64>>, CachedMeta, Rc<MemoryCache>) {
        let now = Rc::new(Cell::new(1_000u64));
        let clock = now.clone();
        let memory = Rc::new(MemoryCache::new(Rc::new(move || clock.get())));
        let store: Rc<dyn MetaStore> = Rc::new(MemoryMetaStore::default());
        let cached = CachedMeta::new(store.clone(), memory.clone(), None, Rc::new(EveryKey), Rc::default());
        (store, now, cached, memory)
    }

    #[test]
    fn reads_come_from_memory_until_a_write_through_the_cache() {
        block_on(async {
            let (store, _, cached, _) = setup();
            cached.put("k", Bytes::from_static(b"1")).await.unwrap();
            assert_eq!(cached.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
            // Changed behind the cache's back: the cached value is served (this is what the lifetime bounds).
            store.put("k", Bytes::from_static(b"2")).await.unwrap();
            assert_eq!(cached.get("k").await.unwrap().as_deref(), Some(&b"1"[..]));
            // Written through the cache: gone from the cache at once.
            cached.delete("k").await.unwrap();
            assert_eq!(cached.get("k").await.unwrap(), None);
            let s = cached.stats().get();
            assert_eq!((s.memory_hits, s.misses), (1, 2));
        });
    }

    #[test]
    fn absences_marked_values_and_uncached_keys_always_go_to_the_store() {
        block_on(async {
            let (store, _, cached, _) = setup();
            assert_eq!(cached.get("k").await.unwrap(), None);
            store.put("k", Bytes::from_static(b"1")).await.unwrap();
            assert_eq!(cached.get("k").await.unwrap().as_deref(), Some(&b"1"[..]), "an absence is never cached");
            store.put("m", Bytes::from_static(b"marked")).await.unwrap();
            cached.get("m").await.unwrap();
            store.put("m", Bytes::from_static(b"live")).await.unwrap();
            assert_eq!(cached.get("m").await.unwrap().as_deref(), Some(&b"live"[..]));
            store.put("nocache/x", Bytes::from_static(b"1")).await.unwrap();
            cached.get("nocache/x").await.unwrap();
            store.put("nocache/x", Bytes::from_static(b"2")).await.unwrap();
            assert_eq!(cached.get("nocache/x").await.unwrap().as_deref(), Some(&b"2"[..]));
        });
    }

    #[test]
    fn entries_expire_and_memory_stays_bounded() {
        block_on(async {
            let (store, now, cached, memory) = setup();
            store.put("k", Bytes::from_static(b"1")).await.unwrap();
            cached.get("k").await.unwrap();
            store.put("k", Bytes::from_static(b"2")).await.unwrap();
            now.set(now.get() + MEMORY_TTL_SECS);
            assert_eq!(cached.get("k").await.unwrap().as_deref(), Some(&b"2"[..]), "memory keeps a value at most MEMORY_TTL_SECS");
            let big = Bytes::from(vec![0u8; MEMORY_CAPACITY / 8]);
            for i in 0..64 {
                memory.put(&format!("big/{i}"), big.clone(), 60).await;
            }
            let inner = memory.inner.borrow();
            assert!(inner.bytes <= MEMORY_CAPACITY);
            assert!(inner.entries.len() <= 8 && inner.order.len() <= 2 * inner.entries.len() + 64);
            assert!(inner.entries.contains_key("big/63"), "the newest entry stays");
        });
    }

    /// A store whose reads take their value, then pause once (waking themselves) before answering, so that a write
    /// can run in between on a single-threaded executor.
    struct PausingReads(Rc<dyn MetaStore>);

    #[async_trait(?Send)]
    impl MetaStore for PausingReads {
        async fn get(&self, key: &str) -> Result<Option<Bytes>> {
            let value = self.0.get(key).await?;
            let mut paused = false;
            futures::future::poll_fn(|cx| {
                if paused {
                    return std::task::Poll::Ready(());
                }
                paused = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            })
            .await;
            Ok(value)
        }
        async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
            self.0.get_versioned(key).await
        }
        async fn put(&self, key: &str, value: Bytes) -> Result<()> {
            self.0.put(key, value).await
        }
        async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
            self.0.put_if(key, value, condition).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
            self.0.list(prefix, start_after, limit).await
        }
    }

    #[test]
    fn a_read_racing_a_write_does_not_put_the_old_value_back() {
        block_on(async {
            let store: Rc<dyn MetaStore> = Rc::new(MemoryMetaStore::default());
            let memory = Rc::new(MemoryCache::new(Rc::new(|| 1_000)));
            let pausing: Rc<dyn MetaStore> = Rc::new(PausingReads(store.clone()));
            let cached = CachedMeta::new(pausing, memory, None, Rc::new(EveryKey), Rc::default());
            store.put("k", Bytes::from_static(b"old")).await.unwrap();
            // The read takes "old" from the store, the write lands while it pauses, then the read answers "old".
            let (read, written) = futures::join!(cached.get("k"), cached.put("k", Bytes::from_static(b"new")));
            assert_eq!(read.unwrap().as_deref(), Some(&b"old"[..]));
            written.unwrap();
            assert_eq!(cached.get("k").await.unwrap().as_deref(), Some(&b"new"[..]), "the old value was not cached");
        });
    }

    #[test]
    fn revalidated_keys_are_always_current_and_move_no_bytes_when_unchanged() {
        block_on(async {
            let (store, _, cached, _) = setup();
            store.put("tag/t", Bytes::from_static(b"one")).await.unwrap();
            assert_eq!(cached.get("tag/t").await.unwrap().as_deref(), Some(&b"one"[..]));
            assert_eq!(cached.get("tag/t").await.unwrap().as_deref(), Some(&b"one"[..]));
            assert_eq!(cached.stats().get().revalidated, 1);
            // Changed behind the cache's back: seen at once (unlike a fresh-for-a-while key).
            store.put("tag/t", Bytes::from_static(b"two")).await.unwrap();
            assert_eq!(cached.get("tag/t").await.unwrap().as_deref(), Some(&b"two"[..]));
            store.delete("tag/t").await.unwrap();
            assert_eq!(cached.get("tag/t").await.unwrap(), None);
            let s = cached.stats().get();
            assert_eq!((s.revalidated, s.memory_hits, s.store_calls), (1, 0, 4), "every read asked the store: {s:?}");
        });
    }
}
