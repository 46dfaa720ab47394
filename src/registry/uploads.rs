//! Blob uploads across stateless requests: start (POST, including single-shot `?digest=` and cross-repository
//! `?mount=`), chunks (PATCH), status (GET), finish (PUT) and cancel (DELETE).
//!
//! Bytes stream through: each chunk is hashed once into the session's resumable SHA-256 and appended to a buffer that
//! is written out as a multipart part whenever it reaches the session's part size, so memory stays at one part per
//! request whatever the blob's size. What is left at the end of a request (shorter than a part) is written as the
//! session's tail object and read back at the start of the next. The session is saved only after a request's bytes
//! are all written, so a request that fails half-way leaves the session at its last good offset and the client can
//! retry from there (rewritten parts reuse their numbers and replace the failed attempt's).
//!
//! The final PUT verifies the digest from the saved hash state, completes the multipart upload into a staging key and
//! moves it to the blob's content address; nothing reaches a digest's key before it is verified.

use super::blobs::BlobLink;
use super::{header, keys, Query, Registry};
use crate::api::{Body, Reply};
use crate::auth::{Access, Actions};
use crate::error::{Error, ErrorCode, Result};
use crate::spec::range::{upload_range_header, ChunkRange};
use crate::spec::{Algorithm, Digest, RepositoryName};
use crate::upload::session::{new_id, valid_id};
use crate::upload::{PartRecord, UploadSession};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use sha2::{Digest as _, Sha512};

/// An upload session with the bytes of the current request flowing into it.
struct Writer<'r> {
    reg: &'r Registry,
    session: UploadSession,
    /// Bytes not yet written as a part: the previous tail, then this request's bytes.
    buf: BytesMut,
    /// The tail key the saved session points at, to be replaced.
    old_tail: Option<String>,
    /// Whether no byte has arrived since the session was loaded (the saved tail is still the tail).
    unchanged_tail: bool,
}

impl<'r> Writer<'r> {
    async fn open(reg: &'r Registry, session: UploadSession) -> Result<Self> {
        let mut buf = BytesMut::new();
        if let Some(key) = &session.tail_key {
            let read = reg.objects.get(key, None).await?.ok_or_else(|| Error::storage("upload tail missing"))?;
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk?);
            }
            if buf.len() as u64 != session.tail_len {
                return Err(Error::storage("upload tail has the wrong size"));
            }
        }
        let old_tail = session.tail_key.clone();
        Ok(Writer { reg, session, buf, old_tail, unchanged_tail: true })
    }

    /// Stream `body` in. When `expected` is given, exactly that many bytes must arrive.
    async fn write(&mut self, mut body: Body, expected: Option<u64>) -> Result<u64> {
        let mut received = 0u64;
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk.map_err(|e| Error::msg(ErrorCode::BlobUploadInvalid, "request body ended early").with_detail(e.message))?;
            received += chunk.len() as u64;
            if expected.is_some_and(|n| received > n) {
                return Err(Error::msg(ErrorCode::SizeInvalid, "more bytes than Content-Range or Content-Length announced"));
            }
            self.unchanged_tail = false;
            self.session.sha256.update(&chunk);
            self.session.offset += chunk.len() as u64;
            self.buf.extend_from_slice(&chunk);
            let part = self.session.part_size as usize;
            while self.buf.len() >= part {
                let data = self.buf.split_to(part).freeze();
                self.write_part(data).await?;
            }
        }
        if let Some(n) = expected {
            if received != n {
                return Err(Error::msg(ErrorCode::SizeInvalid, "fewer bytes than Content-Range or Content-Length announced")
                    .with_detail(format!("expected {n}, received {received}")));
            }
        }
        Ok(received)
    }

    async fn write_part(&mut self, data: Bytes) -> Result<()> {
        let key = self.session.staging_key();
        let upload_id = match &self.session.multipart_id {
            Some(id) => id.clone(),
            None => {
                let id = self.reg.objects.create_multipart(&key).await?;
                self.session.multipart_id = Some(id.clone());
                id
            }
        };
        let number = self.session.parts.len() as u32 + 1;
        let size = data.len() as u64;
        let etag = self.reg.objects.upload_part(&key, &upload_id, number, data).await?;
        self.session.parts.push(PartRecord { number, etag, size });
        Ok(())
    }

    /// Persist the tail and the session.
    async fn save(mut self, now: u64) -> Result<UploadSession> {
        let tail_len = self.buf.len() as u64;
        let unchanged = tail_len > 0 && tail_len == self.session.tail_len && self.old_tail.is_some() && self.unchanged_tail;
        let new_tail = if unchanged {
            self.old_tail.clone()
        } else {
            let nonce = crate::spec::digest::to_hex(&self.reg.env.random_bytes()[..6]);
            (tail_len > 0).then(|| self.session.tail_key_at(self.session.offset - tail_len, tail_len, &nonce))
        };
        if new_tail.is_some() && new_tail != self.old_tail {
            if let Some(key) = &new_tail {
                self.reg.objects.put(key, self.buf.split().freeze()).await?;
            }
        }
        self.session.tail_key = new_tail;
        self.session.tail_len = tail_len;
        self.session.updated_at = now;
        self.reg.save_session(&self.session).await?;
        if let Some(old) = &self.old_tail {
            if Some(old) != self.session.tail_key.as_ref() {
                let _ = self.reg.objects.delete(old).await;
            }
        }
        Ok(self.session)
    }

    /// Verify the bytes against `digest` and move them to the blob's address. On a digest mismatch the session
    /// is saved (when `keep_on_mismatch`) so the client can retry the PUT with the right digest.
    async fn finish(mut self, name: &RepositoryName, digest: &Digest, keep_on_mismatch: bool, now: u64) -> Result<()> {
        let reg = self.reg;
        let mismatch = |actual: String| {
            Error::new(ErrorCode::DigestInvalid).with_detail(format!("expected {digest}, computed {actual}"))
        };
        if digest.algorithm() == Algorithm::Sha256 {
            let actual = Digest::from_bytes(Algorithm::Sha256, &self.session.sha256.finalize());
            if &actual != digest {
                if keep_on_mismatch {
                    self.save(now).await?;
                } else {
                    reg.discard(&self.session).await;
                }
                return Err(mismatch(actual.to_string()));
            }
        }
        let size = self.session.offset;
        // The global record says whether these bytes are already stored (another repository, an earlier push):
        // then this upload's copy is dropped and the repository links to the stored one.
        let existing = reg.blob_record(digest).await?.filter(|r| r.size == size);
        let already_stored = existing.is_some();
        let link = if self.session.multipart_id.is_none() {
            let data = self.buf.split().freeze();
            if digest.algorithm() == Algorithm::Sha512 {
                let actual = Digest::from_bytes(Algorithm::Sha512, &Sha512::digest(&data));
                if &actual != digest {
                    reg.discard(&self.session).await;
                    return Err(mismatch(actual.to_string()));
                }
            }
            match existing {
                Some(link) => link,
                None => {
                    reg.objects.put(&keys::blob_data(digest), data).await?;
                    BlobLink { size, key: None }
                }
            }
        } else {
            if !self.buf.is_empty() {
                let data = self.buf.split().freeze();
                self.write_part(data).await?;
            }
            let staging = self.session.staging_key();
            let upload_id = self.session.multipart_id.clone().unwrap_or_default();
            reg.objects.complete_multipart(&staging, &upload_id, &self.session.parts).await?;
            self.session.multipart_id = None;
            if digest.algorithm() == Algorithm::Sha512 {
                // The session hashes SHA-256 only (one hash per byte keeps CPU per request low); the rare SHA-512
                // upload is verified by reading the staged bytes back before they get a digest's key.
                let actual = reg.sha512_of(&staging).await?;
                if &actual != digest {
                    let _ = reg.objects.delete(&staging).await;
                    reg.discard(&self.session).await;
                    return Err(mismatch(actual.to_string()));
                }
            }
            match existing {
                Some(link) => {
                    reg.objects.delete(&staging).await?;
                    link
                }
                None if reg.objects.can_rename() => {
                    reg.objects.rename(&staging, &keys::blob_data(digest)).await?;
                    BlobLink { size, key: None }
                }
                None => BlobLink { size, key: Some(staging) },
            }
        };
        if !already_stored {
            reg.put_blob_record(digest, &link).await?;
        }
        reg.link_blob(name, digest, &link).await?;
        reg.discard(&self.session).await;
        Ok(())
    }
}

fn session_reply(status: StatusCode, name: &RepositoryName, session: &UploadSession) -> Reply {
    Reply::empty(status)
        .header("location", format!("/v2/{name}/blobs/uploads/{}", session.id))
        .header("range", upload_range_header(session.offset))
        .header("docker-upload-uuid", session.id.clone())
}

fn blob_created(name: &RepositoryName, digest: &Digest) -> Reply {
    Reply::empty(StatusCode::CREATED)
        .header("location", format!("/v2/{name}/blobs/{digest}"))
        .header("docker-content-digest", digest.to_string())
}

/// The exact length a request announces: from `Content-Range` when present (checked against the session's offset),
/// else from `Content-Length`.
fn announced_length(headers: &HeaderMap, name: &RepositoryName, session: &UploadSession) -> Result<Option<u64>> {
    let content_length = match header(headers, "content-length") {
        Some(v) => Some(v.trim().parse::<u64>().map_err(|_| Error::msg(ErrorCode::SizeInvalid, "invalid Content-Length"))?),
        None => None,
    };
    match header(headers, "content-range") {
        Some(cr) => {
            let range = ChunkRange::parse(cr)?;
            if range.start != session.offset {
                return Err(Error::msg(ErrorCode::RangeInvalid, "chunk does not start at the upload's current offset")
                    .with_detail(format!("expected start {}, got {}", session.offset, range.start))
                    .with_header("location", format!("/v2/{name}/blobs/uploads/{}", session.id))
                    .with_header("range", upload_range_header(session.offset))
                    .with_header("docker-upload-uuid", session.id.clone()));
            }
            if let Some(cl) = content_length {
                if cl != range.len() {
                    return Err(Error::msg(ErrorCode::SizeInvalid, "Content-Length does not match Content-Range"));
                }
            }
            Ok(Some(range.len()))
        }
        None => Ok(content_length),
    }
}

impl Registry {
    async fn save_session(&self, session: &UploadSession) -> Result<()> {
        let v = serde_json::to_vec(session).map_err(|e| Error::storage(e.to_string()))?;
        self.meta.put(&keys::upload(&session.id), Bytes::from(v)).await
    }

    /// The live session `id` of `name`, or `BLOB_UPLOAD_UNKNOWN`. Expired sessions are cleaned up on sight.
    async fn load_session(&self, name: &RepositoryName, id: &str) -> Result<UploadSession> {
        let unknown = || Error::new(ErrorCode::BlobUploadUnknown).with_detail(id.chars().take(64).collect::<String>());
        if !valid_id(id) {
            return Err(unknown());
        }
        let raw = self.meta.get(&keys::upload(id)).await?.ok_or_else(unknown)?;
        let session: UploadSession = serde_json::from_slice(&raw).map_err(|e| Error::storage(format!("corrupt upload session: {e}")))?;
        if session.repository != name.as_str() {
            return Err(unknown());
        }
        if session.is_expired(self.env.now_unix(), self.config.upload_expiry_secs) {
            self.discard(&session).await;
            return Err(unknown());
        }
        Ok(session)
    }

    /// Remove a session and everything it wrote (best effort: leftovers are unreachable and harmless).
    async fn discard(&self, session: &UploadSession) {
        if let Some(id) = &session.multipart_id {
            let _ = self.objects.abort_multipart(&session.staging_key(), id).await;
        }
        if let Some(tail) = &session.tail_key {
            let _ = self.objects.delete(tail).await;
        }
        let _ = self.meta.delete(&keys::upload(&session.id)).await;
    }

    async fn sha512_of(&self, key: &str) -> Result<Digest> {
        let read = self.objects.get(key, None).await?.ok_or_else(|| Error::storage("staged upload missing"))?;
        let mut hasher = Sha512::new();
        let mut body = read.body;
        while let Some(chunk) = body.next().await {
            hasher.update(&chunk?);
        }
        Ok(Digest::from_bytes(Algorithm::Sha512, &hasher.finalize()))
    }

    fn new_session(&self, name: &RepositoryName) -> UploadSession {
        let now = self.env.now_unix();
        UploadSession::new(new_id(self.env.random_bytes()), name.to_string(), now, self.config.part_size)
    }

    pub(super) async fn start_upload(&self, name: &RepositoryName, query: &Query, headers: &HeaderMap, body: Body, access: &Access<'_>) -> Result<Reply> {
        if let Some(mount) = query.get("mount") {
            // A mount that cannot happen (bad digest, unknown source, or a source the caller may not pull) falls back
            // to a normal upload, as the spec asks; the fallback says nothing about whether the blob exists there.
            if let (Ok(digest), Some(Ok(from))) = (Digest::parse(mount), query.get("from").map(RepositoryName::parse)) {
                if access.allows(&from, Actions::PULL) {
                    if let Some(link) = self.blob_link(&from, &digest).await? {
                        self.link_blob(name, &digest, &link).await?;
                        return Ok(blob_created(name, &digest));
                    }
                }
            }
        } else if let Some(d) = query.get("digest") {
            let digest = Digest::parse(d)?;
            let session = self.new_session(name);
            let expected = announced_length(headers, name, &session)?;
            let mut writer = Writer::open(self, session.clone()).await?;
            if let Err(e) = writer.write(body, expected).await {
                self.discard(&writer.session).await;
                return Err(e);
            }
            writer.finish(name, &digest, false, self.env.now_unix()).await?;
            return Ok(blob_created(name, &digest));
        }
        let session = self.new_session(name);
        self.save_session(&session).await?;
        Ok(session_reply(StatusCode::ACCEPTED, name, &session))
    }

    pub(super) async fn upload_status(&self, name: &RepositoryName, id: &str) -> Result<Reply> {
        let session = self.load_session(name, id).await?;
        Ok(session_reply(StatusCode::NO_CONTENT, name, &session))
    }

    pub(super) async fn patch_upload(&self, name: &RepositoryName, id: &str, headers: &HeaderMap, body: Body) -> Result<Reply> {
        let session = self.load_session(name, id).await?;
        let expected = announced_length(headers, name, &session)?;
        let mut writer = Writer::open(self, session).await?;
        writer.write(body, expected).await?;
        let session = writer.save(self.env.now_unix()).await?;
        Ok(session_reply(StatusCode::ACCEPTED, name, &session))
    }

    pub(super) async fn finish_upload(&self, name: &RepositoryName, id: &str, query: &Query, headers: &HeaderMap, body: Body) -> Result<Reply> {
        let session = self.load_session(name, id).await?;
        let digest = Digest::parse(query.get("digest").ok_or_else(|| Error::msg(ErrorCode::DigestInvalid, "digest query parameter missing"))?)?;
        let expected = announced_length(headers, name, &session)?;
        let mut writer = Writer::open(self, session).await?;
        writer.write(body, expected).await?;
        writer.finish(name, &digest, true, self.env.now_unix()).await?;
        Ok(blob_created(name, &digest))
    }

    pub(super) async fn cancel_upload(&self, name: &RepositoryName, id: &str) -> Result<Reply> {
        let session = self.load_session(name, id).await?;
        self.discard(&session).await;
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    }

    /// Remove upload sessions idle longer than the configured expiry. Returns how many were removed.
    pub async fn purge_expired_uploads(&self) -> Result<usize> {
        let now = self.env.now_unix();
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let keys = self.meta.list(keys::UPLOADS_PREFIX, after.as_deref(), 1000).await?;
            let Some(last) = keys.last().cloned() else { break };
            for key in &keys {
                let Some(raw) = self.meta.get(key).await? else { continue };
                match serde_json::from_slice::<UploadSession>(&raw) {
                    Ok(s) if s.is_expired(now, self.config.upload_expiry_secs) => {
                        self.discard(&s).await;
                        removed += 1;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        self.meta.delete(key).await?;
                        removed += 1;
                    }
                }
            }
            after = Some(last);
        }
        Ok(removed)
    }
}
