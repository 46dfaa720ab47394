//! Metadata in Spin's key-value store (`key_value_stores = ["default"]` in spin.toml), for the Spin build of the
//! wasi:http component (`scripts/build-wasi --spin`, cargo feature `spin-kv`). It is a separate build because a
//! component that imports key-value interfaces does not load under hosts without them (`wasmtime serve`); the plain
//! build keeps metadata in the object store instead. Which one a Spin deployment uses is chosen by `PIER_METADATA`.
//!
//! The store is reached through `wasi:keyvalue@0.2.0-draft2` (`store` and `atomics`), which Spin 3.x and 4.x provide
//! over the same stores as `spin:key-value`; unlike `spin:key-value` it has a compare-and-swap. What that
//! compare-and-swap guarantees depends on the store behind it. With Spin's default store (SQLite, what `spin up`
//! uses), checked against Spin 4.0.2's source:
//! - *replace-if-unchanged* is atomic: the swap is `UPDATE … WHERE value = <the value read>`, so of two writers that
//!   read the same value one succeeds and the other gets `cas-failed`. Versions here are content hashes, so "the value
//!   is unchanged" and "the version is unchanged" are the same test;
//! - *create-if-absent* is not: when the key was absent at `current()`, the swap is an upsert, so two writers that
//!   both saw no key both succeed and the later value stays;
//! - a conditional delete is a read, a compare and a delete (a small window).
//!
//! Hence [`MetaStore::atomic_conditional_writes`] is `false`, and the keys settled by create-if-absent races that
//! must have one winner — upload sessions, whose claims decide who writes a part — stay in the object store beside
//! this one (`wasi_stores`, `storage::split`), where S3 and Azure check `If-None-Match`/`If-Match` atomically, and so
//! does the garbage collector's state (`_gc/`), whose first write takes a lease. The create-if-absent writes that land
//! here — a manifest record, a blob's global record — tolerate two winners: both wrote a valid value for the same
//! digest and the later one stays (an upload's bytes under a key of its own may be left unrecorded, for the collector).

use crate::error::{Error, Result};
use crate::storage::{MetaStore, Precondition, Versioned};
use async_trait::async_trait;
use bytes::Bytes;
use spin_sdk::wit::wasi::keyvalue::atomics::{self, Cas, CasError};
use spin_sdk::wit::wasi::keyvalue::store::{self, Bucket};

fn kv_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::storage(format!("spin key-value {what}: {e:?}"))
}

/// A value's version: the hex SHA-256 of its bytes.
fn version_of(value: &[u8]) -> String {
    use sha2::Digest as _;
    crate::spec::digest::to_hex(&sha2::Sha256::digest(value))
}

/// Small keys in a Spin key-value store.
pub struct SpinKvMetaStore {
    name: String,
    /// Opened on first use: hosts instantiate the component per request, and opening a store is a host call that
    /// costs more than a whole `GET /v2/` (which never reads metadata).
    bucket: std::cell::OnceCell<Bucket>,
}

impl SpinKvMetaStore {
    /// The store named `name` (it must be listed in the component's `key_value_stores`); opened on first use.
    pub fn new(name: &str) -> Self {
        SpinKvMetaStore { name: name.to_string(), bucket: std::cell::OnceCell::new() }
    }

    fn bucket(&self) -> Result<&Bucket> {
        if let Some(b) = self.bucket.get() {
            return Ok(b);
        }
        let opened = store::open(&self.name).map_err(|e| {
            Error::storage(format!(
                "configuration setting PIER_SPIN_KV_STORE: cannot open Spin key-value store {:?} (is it in the component's key_value_stores?): {e:?}",
                self.name
            ))
        })?;
        Ok(self.bucket.get_or_init(|| opened))
    }
}

#[async_trait(?Send)]
impl MetaStore for SpinKvMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.bucket()?.get(key).map_err(|e| kv_err("get", e))?.map(Bytes::from))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self.get(key).await?.map(|value| Versioned { version: version_of(&value), value }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.bucket()?.set(key, &value).map_err(|e| kv_err("set", e))
    }

    /// A compare-and-swap through `wasi:keyvalue/atomics` (atomic for a replace, not for a create: see the module doc).
    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let cas = Cas::new(self.bucket()?, key).map_err(|e| kv_err("cas", e))?;
        let current = cas.current().map_err(|e| kv_err("cas current", e))?;
        let holds = match (condition, &current) {
            (Precondition::Absent, None) => true,
            (Precondition::Version(v), Some(cur)) => version_of(cur) == *v,
            _ => false,
        };
        if !holds {
            return Ok(None);
        }
        match atomics::swap(cas, &value) {
            Ok(()) => Ok(Some(version_of(&value))),
            Err(CasError::CasFailed(_)) => Ok(None),
            Err(CasError::StoreError(e)) => Err(kv_err("cas swap", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.bucket()?.delete(key).map_err(|e| kv_err("delete", e))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        // Spin's stores list every key at once (a cursor is accepted but Spin 4.0.2's SQLite store returns all keys
        // and no cursor): fine for a registry's metadata at the scale a Spin deployment has; an object store is the
        // choice for very large registries.
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.bucket()?.list_keys(cursor.as_deref()).map_err(|e| kv_err("list-keys", e))?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s)));
            match page.cursor {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    fn atomic_conditional_writes(&self) -> bool {
        false
    }
}
