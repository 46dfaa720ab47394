//! Metadata in Spin's key-value store (`key_value_stores = ["default"]` in spin.toml), for the Spin build of the
//! wasi:http component (`scripts/build-wasi --spin`, cargo feature `spin-kv`). It is a separate build because a
//! component that imports `spin:key-value` does not load under hosts without it (`wasmtime serve`); the plain build
//! keeps metadata in the object store instead. Which one a Spin deployment uses is chosen by `PIER_METADATA`.
//!
//! Spin's `spin:key-value` interface has no compare-and-swap, so this store refuses conditional writes and the keys
//! that need them (upload sessions) are kept in the object store beside it (see `wasi_stores`, `storage::split`).
//! (`wasi:keyvalue/atomics` has a `cas`, but only newer Spin hosts provide it; the object store works on all.)

use crate::error::{Error, ErrorCode, Result};
use crate::storage::{MetaStore, Precondition, Versioned};
use async_trait::async_trait;
use bytes::Bytes;
use spin_sdk::key_value::Store;

fn kv_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::storage(format!("spin key-value {what}: {e:?}"))
}

/// Small keys in a Spin key-value store.
pub struct SpinKvMetaStore {
    store: Store,
}

impl SpinKvMetaStore {
    /// Open the store named `name` (it must be listed in the component's `key_value_stores`).
    pub fn open(name: &str) -> Result<Self> {
        Ok(SpinKvMetaStore { store: Store::open(name).map_err(|e| kv_err("open", e))? })
    }
}

#[async_trait(?Send)]
impl MetaStore for SpinKvMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.store.get(key).map_err(|e| kv_err("get", e))?.map(Bytes::from))
    }

    /// Versions are content hashes: enough for the read-compare-delete of [`MetaStore::delete_if`]'s default, which
    /// is all this store offers (no atomic conditional write).
    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        use sha2::Digest as _;
        Ok(self.get(key).await?.map(|value| Versioned { version: crate::spec::digest::to_hex(&sha2::Sha256::digest(&value)), value }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.store.set(key, &value).map_err(|e| kv_err("set", e))
    }

    async fn put_if(&self, _key: &str, _value: Bytes, _condition: &Precondition) -> Result<Option<String>> {
        Err(Error::msg(ErrorCode::Unsupported, "Spin's key-value store has no compare-and-swap"))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store.delete(key).map_err(|e| kv_err("delete", e))
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        // Spin's interface lists every key at once: fine for a registry's metadata (tags, manifests, sessions) at the
        // scale a Spin deployment has; an object store is the choice for very large registries.
        let mut keys: Vec<String> = self
            .store
            .get_keys()
            .map_err(|e| kv_err("get_keys", e))?
            .into_iter()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
            .collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }
}
