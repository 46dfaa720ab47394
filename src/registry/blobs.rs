//! Blob reads and deletes. A blob is visible in a repository only through that repository's link, so knowing a
//! digest is not enough to read another repository's layers. HEAD answers from the link alone (one small read);
//! GET redirects to a presigned URL when the backend can make one, and otherwise streams, honouring one `Range`. A
//! range the presigned URL cannot honour (a suffix range `bytes=-N` on Azure Blob) is served here instead of
//! redirected, resolved to absolute bytes from the blob's size. Store calls: HEAD 1, GET 2, DELETE 2.

use super::{header, keys, Registry};
use crate::api::{Body, Reply};
use crate::error::{Error, ErrorCode, Result};
use crate::spec::range::ByteRangeSpec;
use crate::spec::{Digest, RepositoryName};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// The value of a blob record and of a blob link: the size, and the object key when it is not the content address.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlobLink {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl BlobLink {
    /// The object key holding the bytes of `digest`.
    pub fn data_key(&self, digest: &Digest) -> String {
        self.key.clone().unwrap_or_else(|| keys::blob_data(digest))
    }
}

fn decode_link(v: &[u8]) -> Result<BlobLink> {
    serde_json::from_slice(v).map_err(|e| Error::storage(format!("corrupt blob link: {e}")))
}

fn encode_link(link: &BlobLink) -> Result<Bytes> {
    serde_json::to_vec(link).map(Bytes::from).map_err(|e| Error::storage(e.to_string()))
}

impl Registry {
    /// The link of `digest` in `name`, if the blob is part of the repository.
    pub(crate) async fn blob_link(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<BlobLink>> {
        self.meta.get(&keys::blob_link(name, digest)).await?.map(|v| decode_link(&v)).transpose()
    }

    /// Whether `digest` is part of `name`.
    pub(crate) async fn has_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        Ok(self.meta.get(&keys::blob_link(name, digest)).await?.is_some())
    }

    /// The global record of `digest`, if its bytes are stored.
    pub(crate) async fn blob_record(&self, digest: &Digest) -> Result<Option<BlobLink>> {
        self.meta.get(&keys::blob_record(digest)).await?.map(|v| decode_link(&v)).transpose()
    }

    /// Record that the verified bytes of `digest` are stored.
    pub(crate) async fn put_blob_record(&self, digest: &Digest, link: &BlobLink) -> Result<()> {
        self.meta.put(&keys::blob_record(digest), encode_link(link)?).await
    }

    /// Make `digest` part of `name`.
    pub(crate) async fn link_blob(&self, name: &RepositoryName, digest: &Digest, link: &BlobLink) -> Result<()> {
        self.meta.put(&keys::blob_link(name, digest), encode_link(link)?).await
    }

    pub(super) async fn get_blob(&self, name: &RepositoryName, digest: &str, headers: &HeaderMap, head: bool) -> Result<Reply> {
        let digest = Digest::parse(digest)?;
        let unknown = || Error::new(ErrorCode::BlobUnknown).with_detail(digest.to_string());
        let link = self.blob_link(name, &digest).await?.ok_or_else(unknown)?;
        let size = link.size;
        let key = link.data_key(&digest);
        let common = |r: Reply| r.header("docker-content-digest", digest.to_string()).header("accept-ranges", "bytes");

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
        Ok(Reply::empty(StatusCode::ACCEPTED).header("docker-content-digest", digest.to_string()))
    }
}
