//! Local-filesystem backends for the native server. Every write lands atomically: bytes go to a temporary file in
//! the same filesystem, are fsynced, then renamed over the final name, so a reader never sees half an object and a
//! crash never leaves one. Writes (each with its fsyncs), listings, multipart assembly and object bodies run on Tokio's
//! blocking pool (see [`blocking`]): the native server runs the core on one thread, which a slow disk must not stall.
//! Reads of one small metadata file and stats stay in place: they come from the page cache on a registry in use,
//! and the pool's hand-off would double the cost of a pull by tag.
//!
//! Layout under the root: `objects/<key>`, `multipart/<upload id>/<part etag>`, `meta/<key>~`, `tmp/`, `lock`. Meta
//! keys get a `~` suffix on the leaf (a character no name, tag, digest or id contains) so that `a` and `a/b` can both
//! be keys.
//!
//! Conditional writes: the read, the comparison and the rename happen while holding an exclusive `flock` on the
//! root's `lock` file, which every write of a key also takes, so they are atomic with respect to every other writer —
//! other threads and other processes sharing the directory alike. A key's version is a hash of its content: "unchanged"
//! means exactly "the same bytes", which is what a compare-and-swap needs (an upload session's bytes change with
//! every write because each write carries a fresh claim token or offset).

use super::{ByteStream, MetaStore, ObjectRead, ObjectStore, Precondition, Versioned};
use crate::error::{Error, Result};
use crate::spec::range::ByteRange;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const READ_CHUNK: usize = 256 * 1024;

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::storage(format!("{what} {}: {e}", path.display()))
}

/// Shared temp-file handling of both stores.
struct Root {
    root: PathBuf,
    counter: AtomicU64,
}

impl Root {
    fn new(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        Ok(Root { root: root.to_path_buf(), counter: AtomicU64::new(0) })
    }

    fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}-{n}", std::process::id()))
    }

    /// Write `parts` to a temp file, fsync, rename to `dest`.
    fn write_atomic(&self, dest: &Path, parts: impl IntoIterator<Item = Result<Vec<u8>>>) -> Result<()> {
        let tmp = self.temp_path();
        let res = (|| {
            let mut f = File::create(&tmp).map_err(|e| io_err("create", &tmp, e))?;
            for p in parts {
                f.write_all(&p?).map_err(|e| io_err("write", &tmp, e))?;
            }
            f.sync_all().map_err(|e| io_err("sync", &tmp, e))?;
            drop(f);
            self.rename_into(&tmp, dest)
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Run `f` holding the root's exclusive write lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let path = self.root.join("lock");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| io_err("open", &path, e))?;
        file.lock().map_err(|e| io_err("lock", &path, e))?;
        let result = f();
        let _ = file.unlock();
        result
    }

    /// Write `data` to `dest` if `condition` holds for its current version (`version_of`), atomically (see the
    /// module docs).
    fn write_if(
        &self,
        dest: &Path,
        data: &[u8],
        condition: &Precondition,
        version_of: fn(&Path) -> Result<Option<String>>,
    ) -> Result<Option<String>> {
        self.locked(|| {
            let current = version_of(dest)?;
            let holds = match condition {
                Precondition::Absent => current.is_none(),
                Precondition::Version(v) => current.as_ref() == Some(v),
            };
            if !holds {
                return Ok(None);
            }
            self.write_atomic(dest, [Ok(data.to_vec())])?;
            version_of(dest)?.map(Some).ok_or_else(|| Error::storage(format!("{} vanished after a write", dest.display())))
        })
    }

    fn rename_into(&self, from: &Path, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| io_err("create", parent, e))?;
        }
        fs::rename(from, dest).map_err(|e| io_err("rename to", dest, e))?;
        if let Some(parent) = dest.parent() {
            // The rename is durable only once the directory entry is.
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// The version of a metadata value: a hash of its bytes.
fn content_version(data: &[u8]) -> String {
    use sha2::Digest as _;
    crate::spec::digest::to_hex(&sha2::Sha256::digest(data)[..16])
}

fn file_content_version(path: &Path) -> Result<Option<String>> {
    match fs::read(path) {
        Ok(v) => Ok(Some(content_version(&v))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path, e)),
    }
}

/// The version of an object file (objects can be large, so not a content hash): every write renames a new file into
/// place, so its inode, modification time and size change together.
fn object_version(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!("{:x}-{:x}.{:x}-{:x}", meta.ino(), meta.mtime(), meta.mtime_nsec(), meta.len())
}

fn file_object_version(path: &Path) -> Result<Option<String>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(object_version(&m))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("stat", path, e)),
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path, e)),
    }
}

/// Etags are `<number>-<hex>`: never a path.
fn valid_etag(etag: &str) -> bool {
    !etag.is_empty() && etag.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// Run blocking filesystem work on Tokio's blocking pool when inside a runtime (the native server), so a slow disk
/// or a large copy never stalls the thread serving every other request; in place otherwise (tests driving the stores
/// with a plain executor).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::storage(format!("filesystem task: {e}")))?
}

/// Blobs as files.
pub struct FsObjectStore {
    root: Arc<Root>,
}

impl FsObjectStore {
    /// A store rooted at `root` (created if needed).
    pub fn new(root: &Path) -> Result<Self> {
        Ok(FsObjectStore { root: Arc::new(Root::new(root)?) })
    }

    fn object_path(&self, key: &str) -> PathBuf {
        self.root.root.join("objects").join(key)
    }

    fn upload_dir(&self, upload_id: &str) -> PathBuf {
        self.root.root.join("multipart").join(upload_id)
    }
}

/// The next chunk of at most [`READ_CHUNK`] bytes of `file` (`remaining` bytes are left to read).
fn read_chunk(file: &mut File, remaining: u64) -> Result<Bytes> {
    let mut buf = vec![0u8; (remaining as usize).min(READ_CHUNK)];
    match file.read(&mut buf) {
        Ok(0) => Err(Error::storage("object shorter than expected")),
        Ok(n) => {
            buf.truncate(n);
            Ok(Bytes::from(buf))
        }
        Err(e) => Err(Error::storage(format!("read: {e}"))),
    }
}

fn read_stream(file: File, remaining: u64) -> ByteStream {
    Box::pin(futures::stream::unfold(Some((file, remaining)), |state| async move {
        let (mut file, remaining) = state?;
        if remaining == 0 {
            return None;
        }
        match blocking(move || read_chunk(&mut file, remaining).map(|b| (b, file))).await {
            Ok((bytes, file)) => {
                let left = remaining - bytes.len() as u64;
                Some((Ok(bytes), Some((file, left))))
            }
            Err(e) => Some((Err(e), None)),
        }
    }))
}

#[async_trait(?Send)]
impl ObjectStore for FsObjectStore {
    async fn head(&self, key: &str) -> Result<Option<u64>> {
        // In place, like metadata reads: one stat.
        let p = self.object_path(key);
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("stat", &p, e)),
        }
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>> {
        let p = self.object_path(key);
        let opened = blocking(move || {
            let mut file = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("open", &p, e)),
            };
            let meta = file.metadata().map_err(|e| io_err("stat", &p, e))?;
            let size = meta.len();
            let (start, len) = match range {
                Some(r) if r.start < size => (r.start, r.end.min(size - 1) - r.start + 1),
                Some(_) => (0, 0),
                None => (0, size),
            };
            file.seek(SeekFrom::Start(start)).map_err(|e| io_err("seek", &p, e))?;
            Ok(Some((file, size, len, object_version(&meta))))
        })
        .await?;
        Ok(opened.map(|(file, size, len, etag)| ObjectRead { size, body: read_stream(file, len), etag: Some(etag) }))
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let (root, dest) = (self.root.clone(), self.object_path(key));
        blocking(move || root.locked(|| root.write_atomic(&dest, [Ok(data.to_vec())]))).await
    }

    async fn put_if(&self, key: &str, data: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let (root, dest, condition) = (self.root.clone(), self.object_path(key), condition.clone());
        blocking(move || root.write_if(&dest, &data, &condition, file_object_version)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.object_path(key);
        blocking(move || remove_file(&p)).await
    }

    async fn create_multipart(&self, _key: &str) -> Result<String> {
        let mut raw = [0u8; 12];
        getrandom::getrandom(&mut raw).map_err(|e| Error::storage(format!("random: {e}")))?;
        let id = crate::spec::digest::to_hex(&raw);
        let dir = self.upload_dir(&id);
        blocking(move || fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))).await?;
        Ok(id)
    }

    async fn upload_part(&self, _key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String> {
        let (root, dir) = (self.root.clone(), self.upload_dir(upload_id));
        // A new file per write, named by its etag: the session's recorded etag selects exactly the bytes it hashed,
        // even if a retried or racing request wrote the same part number again.
        let mut raw = [0u8; 8];
        getrandom::getrandom(&mut raw).map_err(|e| Error::storage(format!("random: {e}")))?;
        let etag = format!("{number}-{}", crate::spec::digest::to_hex(&raw));
        let name = etag.clone();
        blocking(move || {
            if !dir.is_dir() {
                return Err(Error::parts_mismatch("no such multipart upload"));
            }
            root.write_atomic(&dir.join(&name), [Ok(data.to_vec())])
        })
        .await?;
        Ok(etag)
    }

    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()> {
        let (root, dir, dest, parts) = (self.root.clone(), self.upload_dir(upload_id), self.object_path(key), parts.to_vec());
        blocking(move || {
            for p in &parts {
                if !valid_etag(&p.etag) {
                    return Err(Error::storage("invalid part etag"));
                }
                let path = dir.join(&p.etag);
                let len = match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(Error::parts_mismatch(format!("part {} is missing", p.number)))
                    }
                    Err(e) => return Err(io_err("stat", &path, e)),
                };
                if len != p.size {
                    return Err(Error::parts_mismatch(format!("part {} has {len} bytes, expected {}", p.number, p.size)));
                }
            }
            // Parts are copied one at a time, so memory stays at one part whatever the blob's size.
            let pieces = parts.iter().map(|p| {
                let path = dir.join(&p.etag);
                fs::read(&path).map_err(|e| io_err("read", &path, e))
            });
            root.write_atomic(&dest, pieces)?;
            let _ = fs::remove_dir_all(&dir);
            Ok(())
        })
        .await
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<()> {
        let dir = self.upload_dir(upload_id);
        blocking(move || match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir, e)),
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (root, from, to) = (self.root.clone(), self.object_path(from), self.object_path(to));
        blocking(move || root.rename_into(&from, &to)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let dir_part = prefix.rfind('/').map_or("", |i| &prefix[..=i]).to_string();
        let (dir, prefix, start_after) = (self.object_path(&dir_part), prefix.to_string(), start_after.map(str::to_string));
        blocking(move || {
            let mut keys = Vec::new();
            collect_keys(&dir, &dir_part, None, &mut keys)?;
            keys.retain(|k| k.starts_with(&prefix) && start_after.as_deref().is_none_or(|s| k.as_str() > s));
            keys.sort();
            keys.truncate(limit);
            Ok(keys)
        })
        .await
    }
}

/// Small keys as files, one per key.
pub struct FsMetaStore {
    root: Arc<Root>,
}

impl FsMetaStore {
    /// A store rooted at `root` (created if needed).
    pub fn new(root: &Path) -> Result<Self> {
        Ok(FsMetaStore { root: Arc::new(Root::new(root)?) })
    }

    fn key_path(&self, key: &str) -> PathBuf {
        self.root.root.join("meta").join(format!("{key}~"))
    }
}

/// Keys of the files under `dir`: those whose names end with `suffix` (stripped), or every file when `suffix` is None.
fn collect_keys(dir: &Path, key_prefix: &str, suffix: Option<char>, out: &mut Vec<String>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = entry.file_type().map_err(|e| io_err("stat", &entry.path(), e))?;
        if ft.is_dir() {
            collect_keys(&entry.path(), &format!("{key_prefix}{name}/"), suffix, out)?;
        } else if let Some(leaf) = suffix.map_or(Some(name.as_str()), |c| name.strip_suffix(c)) {
            out.push(format!("{key_prefix}{leaf}"));
        }
    }
    Ok(())
}

#[async_trait(?Send)]
impl MetaStore for FsMetaStore {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        // In place: a metadata value is a few hundred bytes, read from the page cache on any registry that is being
        // pulled from, and a trip to the pool would double the cost of the hottest request (a pull by tag).
        let p = self.key_path(key);
        match fs::read(&p) {
            Ok(v) => Ok(Some(Bytes::from(v))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p, e)),
        }
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>> {
        Ok(self.get(key).await?.map(|value| Versioned { version: content_version(&value), value }))
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<()> {
        let (root, dest) = (self.root.clone(), self.key_path(key));
        blocking(move || root.locked(|| root.write_atomic(&dest, [Ok(value.to_vec())]))).await
    }

    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>> {
        let (root, dest, condition) = (self.root.clone(), self.key_path(key), condition.clone());
        blocking(move || root.write_if(&dest, &value, &condition, file_content_version)).await
    }

    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        let (root, path, version) = (self.root.clone(), self.key_path(key), version.to_string());
        blocking(move || {
            root.locked(|| match file_content_version(&path)? {
                Some(v) if v != version => Ok(false),
                _ => remove_file(&path).map(|()| true),
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let p = self.key_path(key);
        blocking(move || remove_file(&p)).await
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let (dir_part, leaf_prefix) = match prefix.rfind('/') {
            Some(i) => (prefix[..=i].to_string(), prefix[i + 1..].to_string()),
            None => (String::new(), prefix.to_string()),
        };
        let dir = self.root.root.join("meta").join(&dir_part);
        let start_after = start_after.map(str::to_string);
        blocking(move || {
            let mut keys = Vec::new();
            collect_keys(&dir, &dir_part, Some('~'), &mut keys)?;
            keys.retain(|k| k[dir_part.len()..].starts_with(&leaf_prefix) && start_after.as_deref().is_none_or(|s| k.as_str() > s));
            keys.sort();
            keys.truncate(limit);
            Ok(keys)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::StreamExt;

    #[test]
    fn nested_meta_keys_coexist_and_list_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let m = FsMetaStore::new(dir.path()).unwrap();
        block_on(async {
            for k in ["c/a", "c/a/b", "c/b", "c/a/c", "d/x"] {
                m.put(k, Bytes::from_static(b"v")).await.unwrap();
            }
            assert_eq!(m.list("c/", None, 10).await.unwrap(), ["c/a", "c/a/b", "c/a/c", "c/b"]);
            assert_eq!(m.list("c/", Some("c/a/b"), 2).await.unwrap(), ["c/a/c", "c/b"]);
            assert_eq!(m.get("c/a").await.unwrap().unwrap(), "v");
            m.delete("c/a").await.unwrap();
            assert!(m.get("c/a").await.unwrap().is_none());
        });
    }

    #[test]
    fn conditional_writes_race_to_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(FsMetaStore::new(&path).unwrap().put("s", Bytes::from_static(b"0"))).unwrap();
        let version = block_on(FsMetaStore::new(&path).unwrap().get_versioned("s")).unwrap().unwrap().version;
        // Separate stores (separate lock handles, as separate processes would have), one version to replace.
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (path, version) = (path.clone(), version.clone());
                std::thread::spawn(move || {
                    let m = FsMetaStore::new(&path).unwrap();
                    block_on(m.put_if("s", Bytes::from(format!("w{i}")), &Precondition::Version(version))).unwrap()
                })
            })
            .collect();
        let won: Vec<_> = handles.into_iter().filter_map(|h| h.join().unwrap()).collect();
        assert_eq!(won.len(), 1);
        let m = FsMetaStore::new(&path).unwrap();
        block_on(async {
            assert_eq!(m.get_versioned("s").await.unwrap().unwrap().version, won[0]);
            assert!(m.put_if("s", Bytes::new(), &Precondition::Absent).await.unwrap().is_none());
            assert!(m.put_if("new", Bytes::new(), &Precondition::Absent).await.unwrap().is_some());
        });
    }

    #[test]
    fn objects_multipart_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let s = FsObjectStore::new(dir.path()).unwrap();
        block_on(async {
            let id = s.create_multipart("u/data").await.unwrap();
            let e1 = s.upload_part("u/data", &id, 1, Bytes::from_static(b"0123")).await.unwrap();
            let e2 = s.upload_part("u/data", &id, 2, Bytes::from_static(b"456")).await.unwrap();
            let parts = [PartRecord { number: 1, etag: e1, size: 4 }, PartRecord { number: 2, etag: e2, size: 3 }];
            s.complete_multipart("u/data", &id, &parts).await.unwrap();
            s.rename("u/data", "blobs/x").await.unwrap();
            assert_eq!(s.head("blobs/x").await.unwrap(), Some(7));
            assert_eq!(s.head("u/data").await.unwrap(), None);
            let r = s.get("blobs/x", Some(ByteRange { start: 2, end: 4 })).await.unwrap().unwrap();
            let bytes: Vec<Bytes> = r.body.map(|b| b.unwrap()).collect().await;
            assert_eq!(bytes.concat(), b"234");
            assert_eq!(r.size, 7);
        });
    }
}
