//! A [`MetaStore`] kept in an [`ObjectStore`] under a prefix (`meta/`): for platforms with an object store and no
//! key-value store (S3 or Azure from the native server or a plain wasi:http host). Each key is one small object.
//!
//! Every key is stored with a `!` appended to its last segment. Without it, a key `a` and a key `a/b` (a repository
//! `a` and a nested one `a/b` in the catalog) would be a file and a directory of one name on filesystem-backed
//! S3 servers (s3s-fs, MinIO); with it they never collide. `!` sorts below every character a key holds (names, tags,
//! digests and ids use `[A-Za-z0-9._:/-]`), so appending it keeps the object store's byte order equal to the keys'
//! order, which `list` relies on for paging with `start_after`.
//!
//! Consistency: S3 and Azure Blob are strongly consistent for reads after writes and for listings, so a tag pushed
//! is visible to the next pull. Conditional writes are the object store's own (`If-None-Match: *` / `If-Match` on the
//! object's etag): a version is the etag a read returned.

use super::{MetaStore, ObjectStore, Precondition, Versioned};
use crate::error::{Error, Result};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::rc::Rc;

/// The prefix metadata is kept under when none is given.
pub const DEFAULT_PREFIX: &str = "meta/";
const LEAF_SUFFIX: char = '!';

/// Metadata as small objects in an object store.
pub struct ObjectMetaStore {
    objects: Rc<dyn ObjectStore>,
    prefix: String,
}

impl ObjectMetaStore {
    /// Keys under `prefix` (e.g. [`DEFAULT_PREFIX`]) of `objects`.
    pub fn new(objects: Rc<dyn ObjectStore>, prefix: &str) -> Self {
        ObjectMetaStore { objects, prefix: prefix.to_string() }
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}{LEAF_SUFFIX}", self.prefix)
    }
}

#[async_trait(?Send)]
impl MetaStore for ObjectMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(key).await?.map(|v| v.value))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        let Some(read) = self.objects.get(&self.object_key(key), None).await? else { return Ok(None) };
        let mut body = read.body;
        let mut out = bytes::BytesMut::with_capacity(read.size.min(1 << 20) as usize);
        while let Some(chunk) = body.next().await {
            out.extend_from_slice(&chunk?);
        }
        let version = read.etag.ok_or_else(|| Error::storage("object store returned no etag"))?;
        Ok(Some(Versioned { value: out.freeze(), version }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.objects.put(&self.object_key(key), value).await
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        self.objects.put_if(&self.object_key(key), value, condition).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.delete(&self.object_key(key)).await
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        self.objects.delete_if(&self.object_key(key), version).await
    }

    fn atomic_conditional_writes(&self) -> bool {
        self.objects.atomic_conditional_writes()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let start = start_after.map(|s| self.object_key(s));
        let keys = self.objects.list(&full_prefix, start.as_deref(), limit).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix)?.strip_suffix(LEAF_SUFFIX).map(str::to_string))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryObjectStore;
    use futures::executor::block_on;

    #[test]
    fn nested_keys_coexist_and_list_in_key_order() {
        let objects = Rc::new(MemoryObjectStore::new());
        let m = ObjectMetaStore::new(objects.clone(), DEFAULT_PREFIX);
        block_on(async {
            for k in ["c/a", "c/a/b", "c/a-b", "c/b", "c/a/c", "d/x", "c/a.z"] {
                m.put(k, Bytes::from(k.to_string())).await.unwrap();
            }
            assert_eq!(m.list("c/", None, 10).await.unwrap(), ["c/a", "c/a-b", "c/a.z", "c/a/b", "c/a/c", "c/b"]);
            assert_eq!(m.list("c/", Some("c/a.z"), 2).await.unwrap(), ["c/a/b", "c/a/c"]);
            assert_eq!(m.list("c/a/", None, 10).await.unwrap(), ["c/a/b", "c/a/c"]);
            assert_eq!(m.get("c/a").await.unwrap().unwrap(), "c/a");
            m.delete("c/a").await.unwrap();
            assert!(m.get("c/a").await.unwrap().is_none());
            assert!(objects.keys().iter().all(|k| k.starts_with("meta/") && k.ends_with('!')));
        });
    }
}
