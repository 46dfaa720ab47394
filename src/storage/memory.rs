//! In-memory backends for both traits: for tests, benchmarks and `pier serve --memory`. Nothing survives a restart.

use super::{ByteStream, MetaStore, ObjectRead, ObjectStore, Precondition, Versioned};
use crate::error::{Error, Result};
use crate::spec::range::ByteRange;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Objects in a map, each with a version that changes on every write (its etag).
#[derive(Default)]
pub struct MemoryObjectStore {
    objects: Mutex<HashMap<String, (Bytes, String)>>,
    uploads: Mutex<HashMap<String, BTreeMap<u32, (String, Bytes)>>>,
    next_upload: AtomicU64,
    no_rename: bool,
}

impl MemoryObjectStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that behaves like R2's binding: no rename (tests the registry's path for such stores).
    pub fn without_rename() -> Self {
        MemoryObjectStore { no_rename: true, ..Self::default() }
    }

    /// The stored keys, sorted (tests).
    pub fn keys(&self) -> Vec<String> {
        let mut k: Vec<String> = self.objects.lock().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        k.sort();
        k
    }

    /// Number of stored objects (tests).
    pub fn len(&self) -> usize {
        self.objects.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Whether no objects are stored (tests).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::storage("memory store lock poisoned")
}

fn once(data: Bytes) -> ByteStream {
    Box::pin(futures::stream::iter([Ok(data)]))
}

/// Whether `condition` holds for a key whose current version is `current`.
fn holds(condition: &Precondition, current: Option<&str>) -> bool {
    match (condition, current) {
        (Precondition::Absent, None) => true,
        (Precondition::Version(want), Some(have)) => want == have,
        _ => false,
    }
}

/// A process-wide version counter: versions are never reused, even across a delete and a re-create.
fn next_version() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("v{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[async_trait(?Send)]
impl ObjectStore for MemoryObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        Ok(self.objects.lock().map_err(poisoned)?.get(key).map(|(b, _)| b.len() as u64))
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let (data, etag) = match self.objects.lock().map_err(poisoned)?.get(key) {
            Some(d) => d.clone(),
            None => return Ok(None),
        };
        let size = data.len() as u64;
        let body = match range {
            Some(r) if r.start < size => data.slice(r.start as usize..(r.end.min(size - 1) + 1) as usize),
            Some(_) => Bytes::new(),
            None => data,
        };
        Ok(Some(ObjectRead { size, body: once(body), etag: Some(etag) }))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.objects.lock().map_err(poisoned)?.insert(key.to_string(), (data, next_version()));
        Ok(())
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let mut objects = self.objects.lock().map_err(poisoned)?;
        if !holds(condition, objects.get(key).map(|(_, v)| v.as_str())) {
            return Ok(None);
        }
        let version = next_version();
        objects.insert(key.to_string(), (data, version.clone()));
        Ok(Some(version))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.objects.lock().map_err(poisoned)?.remove(key);
        Ok(())
    }

    async fn create_multipart(&self, _key: &str) -> Result<String> {
        let id = format!("mp{}", self.next_upload.fetch_add(1, Ordering::Relaxed));
        self.uploads.lock().map_err(poisoned)?.insert(id.clone(), BTreeMap::new());
        Ok(id)
    }

    async fn upload_part(&self, _key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        let mut uploads = self.uploads.lock().map_err(poisoned)?;
        let parts = uploads.get_mut(upload_id).ok_or_else(|| Error::parts_mismatch("no such multipart upload"))?;
        // Unique per write, like an object store's content etag: completing with a stale etag fails.
        let etag = format!("{number}-{}", self.next_upload.fetch_add(1, Ordering::Relaxed));
        parts.insert(number, (etag.clone(), data));
        Ok(etag)
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        let stored =
            self.uploads.lock().map_err(poisoned)?.remove(upload_id).ok_or_else(|| Error::parts_mismatch("no such multipart upload"))?;
        let mut out = BytesMut::new();
        for p in parts {
            let (etag, data) = stored.get(&p.number).ok_or_else(|| Error::parts_mismatch("missing part"))?;
            if etag != &p.etag {
                return Err(Error::parts_mismatch("part was overwritten (etag mismatch)"));
            }
            if data.len() as u64 != p.size {
                return Err(Error::parts_mismatch("part size mismatch"));
            }
            out.extend_from_slice(data);
        }
        self.objects.lock().map_err(poisoned)?.insert(key.to_string(), (out.freeze(), next_version()));
        Ok(())
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        self.uploads.lock().map_err(poisoned)?.remove(upload_id);
        Ok(())
    }

    fn can_rename(&self) -> bool {
        !self.no_rename
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let objects = self.objects.lock().map_err(poisoned)?;
        let mut keys: Vec<String> = objects
            .keys()
            .filter(|k| k.starts_with(prefix) && start_after.is_none_or(|s| k.as_str() > s))
            .cloned()
            .collect();
        keys.sort();
        keys.truncate(limit);
        Ok(keys)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut objects = self.objects.lock().map_err(poisoned)?;
        let (data, _) = objects.remove(from).ok_or_else(|| Error::storage("rename of a missing object"))?;
        objects.insert(to.to_string(), (data, next_version()));
        Ok(())
    }
}

/// Small keys in an ordered map, each with a version that changes on every write.
#[derive(Default)]
pub struct MemoryMetaStore {
    map: Mutex<BTreeMap<String, (Bytes, String)>>,
}

impl MemoryMetaStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait(?Send)]
impl MetaStore for MemoryMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        Ok(self.map.lock().map_err(poisoned)?.get(key).map(|(v, _)| v.clone()))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self.map.lock().map_err(poisoned)?.get(key).map(|(value, version)| Versioned { value: value.clone(), version: version.clone() }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        self.map.lock().map_err(poisoned)?.insert(key.to_string(), (value, next_version()));
        Ok(())
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let mut map = self.map.lock().map_err(poisoned)?;
        if !holds(condition, map.get(key).map(|(_, v)| v.as_str())) {
            return Ok(None);
        }
        let version = next_version();
        map.insert(key.to_string(), (value, version.clone()));
        Ok(Some(version))
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.map.lock().map_err(poisoned)?.remove(key);
        Ok(())
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        let mut map = self.map.lock().map_err(poisoned)?;
        match map.get(key) {
            Some((_, v)) if v != version => Ok(false),
            _ => {
                map.remove(key);
                Ok(true)
            }
        }
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let map = self.map.lock().map_err(poisoned)?;
        let lower = match start_after {
            Some(s) if s >= prefix => Bound::Excluded(s.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        Ok(map
            .range::<String, _>((lower, Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn meta_list_is_ordered_and_paged() {
        block_on(async {
            let m = MemoryMetaStore::new();
            for k in ["p/b", "p/a", "p/c", "q/a", "o/z"] {
                m.put(k, Bytes::new()).await.unwrap();
            }
            assert_eq!(m.list("p/", None, 10).await.unwrap(), ["p/a", "p/b", "p/c"]);
            assert_eq!(m.list("p/", Some("p/a"), 1).await.unwrap(), ["p/b"]);
            assert!(m.list("p/", Some("p/c"), 10).await.unwrap().is_empty());
        });
    }

    #[test]
    fn multipart_assembles_in_order() {
        block_on(async {
            let s = MemoryObjectStore::new();
            let id = s.create_multipart("k").await.unwrap();
            let e2 = s.upload_part("k", &id, 2, Bytes::from_static(b"world")).await.unwrap();
            let e1 = s.upload_part("k", &id, 1, Bytes::from_static(b"hello ")).await.unwrap();
            let parts = [PartRecord { number: 1, etag: e1, size: 6 }, PartRecord { number: 2, etag: e2, size: 5 }];
            s.complete_multipart("k", &id, &parts).await.unwrap();
            assert_eq!(s.head("k").await.unwrap(), Some(11));
        });
    }

    #[test]
    fn conditional_writes() {
        block_on(async {
            let m = MemoryMetaStore::new();
            let v1 = m.put_if("k", Bytes::from_static(b"1"), &Precondition::Absent).await.unwrap().unwrap();
            assert!(m.put_if("k", Bytes::from_static(b"x"), &Precondition::Absent).await.unwrap().is_none());
            let v2 = m.put_if("k", Bytes::from_static(b"2"), &Precondition::Version(v1.clone())).await.unwrap().unwrap();
            assert!(m.put_if("k", Bytes::from_static(b"x"), &Precondition::Version(v1)).await.unwrap().is_none());
            let got = m.get_versioned("k").await.unwrap().unwrap();
            assert_eq!((got.value.as_ref(), got.version.as_str()), (&b"2"[..], v2.as_str()));
            m.delete("k").await.unwrap();
            assert!(m.put_if("k", Bytes::new(), &Precondition::Version(got.version)).await.unwrap().is_none());
        });
    }
}
