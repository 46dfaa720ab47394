//! Storage traits: an [`ObjectStore`] for blobs (large, streamed, multipart) and a [`MetaStore`] for small keys
//! (upload sessions, tags, manifests, links, indexes). Each backend implements one of them; the registry core sees
//! only these traits. Futures are `?Send` because wasm platforms' futures are not `Send`.
//!
//! Keys are built only by the registry from validated names, tags, digests and upload ids (see `registry::keys`), so
//! backends never see client-controlled path segments.

pub mod azure;
pub mod config;
pub mod http;
pub mod memory;
pub mod object_meta;
pub mod s3;
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
    /// Remove an object; absent objects are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Start a multipart upload to `key`; returns its upload id.
    async fn create_multipart(&self, key: &str) -> Result<String>;
    /// Write part `number` (1-based); writing a number again replaces it. Returns the part's etag.
    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> Result<String>;
    /// Assemble `parts` (in order) into `key`. Durable when it returns.
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
    /// Store `value` under `key`. Durable when it returns.
    async fn put(&self, key: &str, value: Bytes) -> Result<()>;
    /// Remove `key`; absent keys are not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    /// Keys under `prefix` (which ends with `/`), in lexical order, strictly after `start_after` (a full key), at
    /// most `limit` of them.
    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<Vec<String>>;
}
