//! Blob reads and deletes. A blob is visible in a repository only through that repository's link, so knowing a
//! digest is not enough to read another repository's layers. HEAD answers from the link alone (one small read);
//! GET redirects to a presigned URL when the backend can make one, and otherwise streams, honouring one `Range`. A
//! range the presigned URL cannot honour (a suffix range `bytes=-N` on Azure Blob) is served here instead of
//! redirected, resolved to absolute bytes from the blob's size. Store calls: HEAD 1, GET 2, DELETE 2.

use super::{header, keys, Registry};
use crate::api::{Body, Reply};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{self, Action};
use crate::spec::range::ByteRangeSpec;
use crate::spec::{Digest, RepositoryName};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use crate::storage::Precondition;

/// The value of a blob record and of a blob link: the size, the object key when it is not the content address, and
/// garbage collection's mark when the collector found nothing referencing it (see `gc`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlobLink {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<Tombstone>,
}

/// Garbage collection's mark on a link or record: unreferenced since `cycle` (at `at`, Unix seconds). `deleting`:
/// the collector is removing the record's bytes; nothing may link to it or store bytes under its key any more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tombstone {
    pub cycle: u64,
    pub at: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

impl BlobLink {
    /// A live (unmarked) link or record to bytes of `size` at `key` (`None`: the content address).
    pub fn new(size: u64, key: Option<String>) -> Self {
        BlobLink { size, key, gc: None }
    }

    /// The object key holding the bytes of `digest`.
    pub fn data_key(&self, digest: &Digest) -> String {
        self.key.clone().unwrap_or_else(|| keys::blob_data(digest))
    }

    /// The same blob without garbage collection's mark (what a new link or a revival writes).
    pub fn live(&self) -> BlobLink {
        BlobLink { gc: None, ..self.clone() }
    }

    /// Whether the collector is removing these bytes.
    pub fn is_deleting(&self) -> bool {
        self.gc.as_ref().is_some_and(|t| t.deleting)
    }
}

pub(crate) fn decode_link(v: &[u8]) -> Result<BlobLink> {
    serde_json::from_slice(v).map_err(|e| Error::storage(format!("corrupt blob link: {e}")))
}

pub(crate) fn encode_link(link: &BlobLink) -> Result<Bytes> {
    serde_json::to_vec(link).map(Bytes::from).map_err(|e| Error::storage(e.to_string()))
}

/// How often a revival retries a compare-and-swap that lost to another writer (each loss means the value changed, so
/// a few rounds always settle it).
const REVIVE_ATTEMPTS: usize = 4;

impl Registry {
    /// The link of `digest` in `name`, if the blob is part of the repository.
    pub(crate) async fn blob_link(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        self.meta.get(&keys::blob_link(name, digest)).await?.map(|v| decode_link(&v)).transpose()
    }

    /// Whether `digest` is part of `name`.
    pub(crate) async fn has_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        Ok(self.meta.get(&keys::blob_link(name, digest)).await?.is_some())
    }

    /// The global record of `digest` with its version, if its bytes are stored.
    pub(crate) async fn blob_record_versioned(&self, digest: &Digest) -> Result<Option<(BlobLink, String)>> {
        match self.meta.get_versioned(&keys::blob_record(digest)).await? {
            None => Ok(None),
            Some(v) => Ok(Some((decode_link(&v.value)?, v.version))),
        }
    }

    /// Make `digest` part of `name` (a live link: it revives one the collector marked).
    pub(crate) async fn link_blob(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        self.meta.put(&keys::blob_link(name, digest), encode_link(&link.live())?).await
    }

    /// Clear the collector's mark from the value under `key` by compare-and-swap: `Ok(true)` when the value is (now)
    /// live, `Ok(false)` when it is gone or being deleted. Called *after* a writer made something depend on the value
    /// (a manifest record on its links, a link on its blob's record): a collector that marked the value before then
    /// sees the revival (its own conditional delete fails), and one that deletes first makes this return `false`, so
    /// the writer fails instead of answering 201 for content that is going away. See `gc`'s module doc.
    pub(crate) async fn revive(&self, key: &str) -> Result<bool> {
        for _ in 0..REVIVE_ATTEMPTS {
            let Some(v) = self.meta.get_versioned(key).await? else { return Ok(false) };
            let link = decode_link(&v.value)?;
            match &link.gc {
                None => return Ok(true),
                Some(t) if t.deleting => return Ok(false),
                Some(_) => {
                    let live = encode_link(&link.live())?;
                    if self.meta.put_if(key, live, &Precondition::Version(v.version)).await?.is_some() {
                        return Ok(true);
                    }
                }
            }
        }
        Err(Error::storage(format!("{key} kept changing while it was revived")))
    }

    pub(super) async fn get_blob(&self, name: &RepositoryName, digest: &str, headers: &HeaderMap, head: bool) -> Result<Reply> {
        let digest = Digest::parse(digest)?;
        let unknown = || Error::new(ErrorCode::BlobUnknown).with_detail(digest.to_string());
        let link = self.blob_link(name, &digest).await?.ok_or_else(unknown)?;
        let size = link.size;
        let key = link.data_key(&digest);
        // Built only when someone listens: a pull is the hot path, and the target is half a dozen strings.
        let target = self.notifier.is_some().then(|| events::blob_target(name.as_str(), &digest.to_string(), size));
        let common = |r: Reply| {
            let r = r.header("docker-content-digest", digest.to_string()).header("accept-ranges", "bytes");
            match &target {
                Some(t) => r.with_event(Action::Pull, t.clone()),
                None => r,
            }
        };

        let range = header(headers, "range").and_then(ByteRangeSpec::parse);
        let redirect_serves_range = match range {
            Some(ByteRangeSpec::Suffix(_)) => self.objects.presigned_suffix_ranges(),
            _ => true,
        };
        if !head && self.config.redirect && redirect_serves_range {
            if let Some(url) = self.objects.presign_get(&key, self.config.redirect_expiry_secs) {
                return Ok(common(Reply::empty(StatusCode::TEMPORARY_REDIRECT)).header("location", url));
            }
        }
        let range = match range {
            None => None,
            Some(spec) => match spec.resolve(size) {
                Some(r) => Some(r),
                None => {
                    return Err(Error::new(ErrorCode::RangeInvalid).with_header("content-range", format!("bytes */{size}")));
                }
            },
        };
        let (status, len) = match range {
            Some(r) => (StatusCode::PARTIAL_CONTENT, r.len()),
            None => (StatusCode::OK, size),
        };
        let mut reply = Reply {
            status,
            headers: vec![
                (http::header::CONTENT_TYPE, "application/octet-stream".into()),
                (http::header::CONTENT_LENGTH, len.to_string()),
            ],
            body: Body::Empty,
            event: None,
        };
        if let Some(r) = range {
            reply = reply.header("content-range", format!("bytes {}-{}/{size}", r.start, r.end));
        }
        if !head {
            let read = self.objects.get(&key, range).await?.ok_or_else(unknown)?;
            reply.body = Body::Stream(read.body);
        }
        Ok(common(reply))
    }

    pub(super) async fn delete_blob(&self, name: &RepositoryName, digest: &str) -> Result<Reply> {
        self.require_delete_enabled()?;
        let digest = Digest::parse(digest)?;
        if !self.has_blob(name, &digest).await? {
            return Err(Error::new(ErrorCode::BlobUnknown).with_detail(digest.to_string()));
        }
        // Only the link goes: other repositories may share the bytes. Unlinked bytes are garbage collection's.
        self.meta.delete(&keys::blob_link(name, &digest)).await?;
        let target = events::Target { repository: name.to_string(), digest: digest.to_string(), ..events::Target::default() };
        Ok(Reply::empty(StatusCode::ACCEPTED).header("docker-content-digest", digest.to_string()).with_event(Action::Delete, target))
    }
}
