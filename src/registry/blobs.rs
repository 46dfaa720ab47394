//! Blob reads and deletes. A blob is visible in a repository only through that repository's link, so knowing a
//! digest is not enough to read another repository's layers. HEAD answers from the link alone (one small read);
//! GET redirects to a presigned URL when the backend can make one, and otherwise streams, honouring one `Range`.

use super::{header, keys, Registry};
use crate::api::{Body, Reply};
use crate::error::{Error, ErrorCode, Result};
use crate::spec::range::ByteRangeSpec;
use crate::spec::{Digest, RepositoryName};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// The value of a blob link.
#[derive(Serialize, Deserialize)]
pub(crate) struct BlobLink {
    pub size: u64,
}

impl Registry {
    /// The size of `digest` if it is linked into `name`.
    pub(crate) async fn blob_size(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<u64>> {
        match self.meta.get(&keys::blob_link(name, digest)).await? {
            None => Ok(None),
            Some(v) => {
                let link: BlobLink = serde_json::from_slice(&v).map_err(|e| Error::storage(format!("corrupt blob link: {e}")))?;
                Ok(Some(link.size))
            }
        }
    }

    /// Make `digest` (of `size` bytes) part of `name`.
    pub(crate) async fn link_blob(&self, name: &RepositoryName, digest: &Digest, size: u64) -> Result<()> {
        let v = serde_json::to_vec(&BlobLink { size }).map_err(|e| Error::storage(e.to_string()))?;
        self.meta.put(&keys::blob_link(name, digest), Bytes::from(v)).await
    }

    pub(super) async fn get_blob(&self, name: &RepositoryName, digest: &str, headers: &HeaderMap, head: bool) -> Result<Reply> {
        let digest = Digest::parse(digest)?;
        let unknown = || Error::new(ErrorCode::BlobUnknown).with_detail(digest.to_string());
        let size = self.blob_size(name, &digest).await?.ok_or_else(unknown)?;
        let key = keys::blob_data(&digest);
        let common = |r: Reply| r.header("docker-content-digest", digest.to_string()).header("accept-ranges", "bytes");

        if !head && self.config.redirect {
            if let Some(url) = self.objects.presign_get(&key, self.config.redirect_expiry_secs) {
                return Ok(common(Reply::empty(StatusCode::TEMPORARY_REDIRECT)).header("location", url));
            }
        }
        let range = header(headers, "range").and_then(ByteRangeSpec::parse);
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
        if self.blob_size(name, &digest).await?.is_none() {
            return Err(Error::new(ErrorCode::BlobUnknown).with_detail(digest.to_string()));
        }
        // Only the link goes: other repositories may share the bytes. Unlinked bytes are garbage collection's.
        self.meta.delete(&keys::blob_link(name, &digest)).await?;
        Ok(Reply::empty(StatusCode::ACCEPTED).header("docker-content-digest", digest.to_string()))
    }
}
