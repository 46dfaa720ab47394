//! Storage traits: an [`ObjectStore`] for blobs (large, streamed, multipart) and a [`MetaStore`] for small keys
//! (upload sessions, tags, manifests, links, indexes). Each backend implements one of them; the registry core sees
//! only these traits. Futures are `?Send` because wasm platforms' futures are not `Send`.
//!
//! Keys are built only by the registry from validated names, tags, digests and upload ids (see `registry::keys`), so
//! backends never see client-controlled path segments.
//!
//! Conditional writes are part of the contract. Races between requests (two PATCHes on one upload session, a sweep
//! while a push links a blob) are settled by compare-and-swap on metadata: [`MetaStore::put_if`] writes only if the
//! key is still absent ([`Precondition::Absent`]) or still holds the version a read returned
//! ([`Precondition::Version`]). Every backend uses its store's native primitive — `If-None-Match: *` / `If-Match` on
//! S3 and Azure, R2's `onlyIf`, an exclusive lock around read-compare-rename on a filesystem, a mutex in memory — so the
//! check and the write are one atomic step in the store, never a read followed by a write in Pier.

pub mod azure;
pub mod cache;
pub mod config;
pub mod faulty;
pub mod http;
pub mod memory;
pub mod object_meta;
pub mod s3;
pub mod split;
pub(crate) mod xml;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod r2;
#[cfg(not(target_arch = "wasm32"))]
pub mod fs;

use crate::error::{Error, ErrorCode, Result};
use crate::spec::range::ByteRange;
use crate::upload::PartRecord;
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::pin::Pin;

/// A stream of body bytes. Errors end the stream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>>>>;

/// An object read from the store.
pub struct ObjectRead {
    /// Total size of the object (not of the range).
    pub size: u64,
    /// The bytes requested.
    pub body: ByteStream,
    /// The store's version of the object (its etag), for [`ObjectStore::put_if`]; `None` where the store has none.
    pub etag: Option<String>,
}

/// What must hold for a conditional write to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The key does not exist (create-if-absent).
    Absent,
    /// The key still holds the version a read returned (replace-if-unchanged).
    Version(String),
}

/// A metadata value with the version a conditional write compares against.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub value: Bytes,
    /// Opaque: an etag, a generation, a content hash. Equal versions mean an unchanged value.
    pub version: String,
}

/// What [`MetaStore::get_unless`] found.
#[derive(Debug, Clone)]
pub enum Revalidated {
    /// The key still holds the version the caller has.
    Unchanged,
    /// The key holds another value now.
    Changed(Versioned),
    /// The key is gone.
    Absent,
}

/// Blob storage: an object store with multipart uploads.
#[async_trait(?Send)]
pub trait ObjectStore {
    /// Size of the object, or `None` if absent.
    async fn head(&self, key: &str) -> Result<Option<u64>>;
    /// The object's bytes (a range of them when `range` is given), or `None` if absent.
    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ObjectRead>>;
    /// Write a small object whole. Durable when it returns.
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// Write a small object only if `condition` holds, atomically in the store: `Some(etag)` when written, `None`
    /// when the condition failed (another writer got there first). Durable when it returns. Backends without a
    /// conditional write keep the default, an "unsupported" error, and cannot hold metadata that needs one.
    async fn put_if(&self, _key: &str, _data: Bytes, _condition: &Precondition) -> Result<Option<String>> {
        Err(Error::msg(ErrorCode::Unsupported, "this storage backend has no conditional writes"))
    }
    /// Remove an object; absent objects are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Remove an object only if its etag is still `etag`: `true` when removed (or already absent), `false` when it
    /// changed. The default reads the etag and then deletes, which leaves a window between the two; backends with a
    /// conditional delete (Azure `If-Match`, S3 `If-Match` where the service supports it) close it.
    async fn delete_if(&self, key: &str, etag: &str) -> Result<bool> {
        match self.get(key, None).await? {
            None => Ok(true),
            Some(read) if read.etag.as_deref() == Some(etag) => self.delete(key).await.map(|()| true),
            Some(_) => Ok(false),
        }
    }
    /// Start a multipart upload to `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> Result<String>;
    /// Write part `number` (1-based); writing a number again replaces it. Returns the part's etag.
    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String>;
    /// Assemble `parts` (in order) into `key`. Durable when it returns. When the stored parts are not the recorded
    /// ones (a part replaced or missing, the upload gone), the error has the code `BLOB_UPLOAD_INVALID`.
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[PartRecord]) -> Result<()>;
    /// Discard a multipart upload and its parts.
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()>;
    /// Move an object to a new key (a verified upload to its content address). Only called when
    /// [`ObjectStore::can_rename`] is true.
    async fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Whether [`ObjectStore::rename`] is cheap (a file rename, a server-side copy). R2's binding has no copy: there a
    /// verified multipart upload stays where it was assembled and the blob's records point at that key.
    fn can_rename(&self) -> bool {
        true
    }
    /// A URL a client may GET the object from directly for `expires_secs`, when the backend can presign.
    fn presign_get(&self, _key: &str, _expires_secs: u64) -> Option<String> {
        None
    }
    /// Whether a presigned URL honours a suffix range (`Range: bytes=-N`). Azure Blob does not: such reads are served
    /// by Pier instead of redirected.
    fn presigned_suffix_ranges(&self) -> bool {
        true
    }
    /// Whether [`ObjectStore::put_if`] checks its condition atomically with the write. AWS S3, R2, Azure and MinIO do;
    /// some S3-compatible servers (s3s-fs) check and then write, so two writers can both be told they won.
    fn atomic_conditional_writes(&self) -> bool {
        true
    }
    /// The smallest part size the backend accepts for all parts but the last.
    fn min_part_size(&self) -> u64 {
        1
    }
    /// Keys under `prefix`, in lexical (byte) order, strictly after `start_after` (a full key), at most `limit` of
    /// them. Backends that cannot list keep the default, an "unsupported" storage error.
    async fn list(&self, _prefix: &str, _start_after: Option<&str>, _limit: usize) -> Result<Vec<String>> {
        Err(Error::msg(ErrorCode::Unsupported, "this storage backend cannot list objects"))
    }
}

/// Small-key storage with ordered prefix listing.
#[async_trait(?Send)]
pub trait MetaStore {
    /// The value under `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
    /// The value under `key` with its version, or `None`.
    async fn get_versioned(&self, key: &str) -> Result<Option<Versioned>>;
    /// Store `value` under `key`. Durable when it returns.
    async fn put(&self, key: &str, value: Bytes) -> Result<()>;
    /// Store `value` under `key` only if `condition` holds, atomically: `Some(new version)` when written, `None` when
    /// the condition failed. Durable when it returns.
    async fn put_if(&self, key: &str, value: Bytes, condition: &Precondition) -> Result<Option<String>>;
    /// Remove `key`; absent keys are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Remove `key` only if it still holds `version`: `true` when removed (or already absent), `false` when it
    /// changed (a concurrent writer's value stays). The default reads and then deletes (a small window); backends with
    /// a native conditional delete override it.
    async fn delete_if(&self, key: &str, version: &str) -> Result<bool> {
        match self.get_versioned(key).await? {
            None => Ok(true),
            Some(v) if v.version == version => self.delete(key).await.map(|()| true),
            Some(_) => Ok(false),
        }
    }
    /// Keys under `prefix` (which ends with `/`), in lexical order, strictly after `start_after` (a full key), at
    /// most `limit` of them.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>>;
    /// The value under `key` unless it still holds `version`: [`Revalidated::Unchanged`] then (the caller's copy is
    /// current). Backends with a conditional read (R2's `onlyIf`) answer an unchanged value without its bytes; the
    /// default reads the value.
    async fn get_unless(&self, key: &str, version: &str) -> Result<Revalidated> {
        Ok(match self.get_versioned(key).await? {
            None => Revalidated::Absent,
            Some(v) if v.version == version => Revalidated::Unchanged,
            Some(v) => Revalidated::Changed(v),
        })
    }
    /// Whether [`MetaStore::put_if`] is atomic (see [`ObjectStore::atomic_conditional_writes`]). Where it is not, the
    /// registry reads a claim back before it acts on it.
    fn atomic_conditional_writes(&self) -> bool {
        true
    }
}
