//! A [`MetaStore`] made of two: keys under given prefixes live in one store, every other key in the other. It lets a
//! deployment keep most metadata in a fast key-value store that has no compare-and-swap (Spin's key-value store) while
//! the keys that are settled by conditional writes — upload sessions — live where conditional writes exist (the object
//! store). A prefix never spans both stores, so listing a prefix asks exactly one of them.

use super::{MetaStore, Precondition, Versioned};
use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;
use std::rc::Rc;

/// Keys under `prefixes` in `routed`, the rest in `rest`.
pub struct SplitMetaStore {
    prefixes: Vec<String>,
    routed: Rc<dyn MetaStore>,
    rest: Rc<dyn MetaStore>,
}

impl SplitMetaStore {
    /// Keys starting with any of `prefixes` (each ending with `/`) go to `routed`, all others to `rest`.
    pub fn new(prefixes: &[&str], routed: Rc<dyn MetaStore>, rest: Rc<dyn MetaStore>) -> Self {
        SplitMetaStore { prefixes: prefixes.iter().map(|p| p.to_string()).collect(), routed, rest }
    }

    fn store(&self, key: &str) -> &dyn MetaStore {
        if self.prefixes.iter().any(|p| key.starts_with(p.as_str())) {
            self.routed.as_ref()
        } else {
            self.rest.as_ref()
        }
    }
}

#[async_trait(?Send)]
impl MetaStore for SplitMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.store(key).get(key).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        self.store(key).get_versioned(key).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.store(key).put(key, value).await
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        self.store(key).put_if(key, value, condition).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.store(key).delete(key).await
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        self.store(key).delete_if(key, version).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        self.store(prefix).list(prefix, start_after, limit).await
    }

    fn atomic_conditional_writes(&self) -> bool {
        self.routed.atomic_conditional_writes() && self.rest.atomic_conditional_writes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryMetaStore;
    use futures::executor::block_on;

    #[test]
    fn routes_by_prefix() {
        let (a, b) = (Rc::new(MemoryMetaStore::new()), Rc::new(MemoryMetaStore::new()));
        let s = SplitMetaStore::new(&["_uploads/"], a.clone(), b.clone());
        block_on(async {
            s.put("_uploads/x", Bytes::from_static(b"1")).await.unwrap();
            s.put("repositories/r/_tags/t", Bytes::from_static(b"2")).await.unwrap();
            assert!(a.get("_uploads/x").await.unwrap().is_some());
            assert!(b.get("_uploads/x").await.unwrap().is_none());
            assert!(b.get("repositories/r/_tags/t").await.unwrap().is_some());
            assert_eq!(s.list("_uploads/", None, 10).await.unwrap(), ["_uploads/x"]);
            assert!(s.put_if("_uploads/y", Bytes::new(), &Precondition::Absent).await.unwrap().is_some());
        });
    }
}
