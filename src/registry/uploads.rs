//! Blob uploads across stateless requests: start (POST, including single-shot `?digest=` and cross-repository
//! `?mount=`), chunks (PATCH), status (GET), finish (PUT) and cancel (DELETE). Store calls per request depend on the
//! bytes sent (one part write per part size), never on how many sessions, blobs or tags exist: POST 1 (mount 2,
//! single-shot 5), GET 1, DELETE 2, PATCH 4 + parts, PUT about 10 + parts (`bounds_tests` counts them).
//!
//! Bytes stream through: each chunk is hashed once into the session's resumable SHA-256 and appended to a buffer that
//! is written out as a multipart part whenever it reaches the session's part size, so memory stays at one part per
//! request whatever the blob's size. What is left at the end of a request (shorter than a part) is written as the
//! session's tail object and read back at the start of the next.
//!
//! The part buffer is allocated once per request at exactly one part (less when the request announces fewer bytes),
//! filled to the part size and never past it, handed to the store without a copy and taken back for the next part
//! once the store has let go of it (a store that copies the bytes out, like R2's binding, lets go before it awaits
//! the write). Growing by doubling, or splitting a part off a buffer that is still filling, would leave two or three
//! part-sized allocations behind; on wasm they stay for the instance's lifetime, since linear memory never shrinks.
//!
//! ## One writer per session
//! A PATCH, and a PUT that finishes a session, first *claims* the session: it writes the session back with a claim (a
//! random token, a lease) by compare-and-swap on the version it read ([`crate::storage::MetaStore::put_if`]). Of two requests that
//! read the same version only one write succeeds; the other answers 416 with the session's current `Range`, before it
//! has written a byte anywhere. While the claim is live every other writer gets 416 too. The holder renews the lease
//! (another compare-and-swap) while it streams, and saves the multipart upload id into the session *before* it writes
//! the first part, so the expired-session purge can always abort it. At the end the holder commits — the new offset,
//! hash state, parts and tail, with the claim removed — by compare-and-swap on its own last version; a holder that
//! lost its claim (its lease ran out and someone else claimed) cannot commit. A request that fails releases its claim
//! (only if the stored claim is still its own token), so the client's retry can claim at once; a holder that crashed
//! leaves a claim that simply expires (`CLAIM_LEASE_SECS`).
//!
//! The interleavings, and why each is safe:
//! - *Two PATCHes at one offset*: both read version v; one claim write wins, the loser answers 416 and wrote nothing.
//! - *A PATCH arriving while another streams*: it sees a live claim and answers 416 without writing.
//! - *A torn PATCH* (its connection drops after it wrote parts): nothing is committed, so the session still records
//!   only earlier parts; the parts it wrote are unrecorded. The next writer writes the same part numbers again: S3 and
//!   R2 replace the part and completion checks the recorded etags; Azure block ids carry a nonce, so the torn
//!   request's blocks are never named in the block list; the filesystem and memory keep one object per write, named by
//!   its etag. So the committed parts are exactly the bytes the committed hash covers.
//! - *A stale holder* (its lease expired mid-request while another request claimed): its renewal and its commit are
//!   compare-and-swaps on a version that no longer exists, so both fail and it stops. A part it was uploading at that
//!   moment can land over a part the new holder recorded; the etag check at completion then fails with
//!   `BLOB_UPLOAD_INVALID` (a 400, and the session is dropped) rather than assembling other bytes. (s3s-fs, the S3
//!   emulator used in tests, does not check part etags at completion; S3, R2 and MinIO do.) Renewing whenever less than
//!   three quarters of the lease is left keeps this to a part upload stalled for over 45 s.
//! - *An empty PATCH racing a data PATCH*: with `Content-Length: 0` it writes nothing and reports the current offset;
//!   otherwise it claims like any other writer. Tails have a fresh key per write and the old tail is deleted only
//!   after a commit that replaced it, so no committed session ever points at a deleted tail.
//! - *Two final PUTs*: one claims and finishes; the other gets 416, or 404 once the session is gone.
//! - *A DELETE of the session while a request writes*: the writer's commit finds no session and answers 404.
//! - *A store whose conditional writes are not atomic* (s3s-fs checks the condition, then writes): two claims can both
//!   be told they won. On such stores the holder reads the session back before its first write that matters (a
//!   part, a tail, a completion), by which time one claim has overwritten the other: the writer whose claim token is
//!   gone answers 416 having written nothing. The commit of a PATCH and the last step of a PUT before it links the blob are compare-and-swaps
//!   too. Each writer's bytes stay its own either way (a claim made with no multipart upload starts its own), so what
//!   such a store could still cost is a second 202, never wrong bytes under a digest.
//!
//! ## A digest's record points at verified bytes only
//! The final PUT verifies the digest from the saved hash state (SHA-512 by reading the assembled object back), and
//! only then moves the bytes to the blob's content address (or, on stores that cannot rename, keeps them at the
//! session's staging key, which nothing writes again once the session is gone) and writes the global record
//! `_blobs/<digest>`. The record is written after the bytes it names are verified and durable, and the objects it can
//! name are never rewritten with other bytes: content addresses only ever receive verified bytes of that digest, and a
//! staging key belongs to one session whose single multipart upload completes once. So when a later upload of the same
//! digest finds the record and links to it instead of keeping its own copy, it links to verified bytes.

use super::blobs::BlobLink;
use super::{header, keys, Query, Registry};
use crate::api::{Body, Reply};
use crate::auth::{Access, Actions};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{self, Action};
use crate::spec::range::{upload_range_header, ChunkRange};
use crate::spec::{Algorithm, Digest, RepositoryName};
use crate::storage::Precondition;
use crate::upload::session::{new_id, valid_id};
use crate::upload::{Claim, PartRecord, UploadSession};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use sha2::{Digest as _, Sha512};

/// How long a claim keeps other writers out without being renewed.
pub const CLAIM_LEASE_SECS: u64 = 60;
/// The holder renews its claim when less than this much of the lease is left.
const RENEW_BELOW_SECS: u64 = CLAIM_LEASE_SECS * 3 / 4;

fn encode_session(session: &UploadSession) -> Result<Bytes> {
    serde_json::to_vec(session).map(Bytes::from).map_err(|e| Error::storage(e.to_string()))
}

fn decode_session(raw: &[u8]) -> Result<UploadSession> {
    serde_json::from_slice(raw).map_err(|e| Error::storage(format!("corrupt upload session: {e}")))
}

/// Whether `session` carries claim `token`.
fn held_by(session: &UploadSession, token: &str) -> bool {
    session.claim.as_ref().is_some_and(|c| c.token == token)
}

/// A claim for `token` from `now`, for one lease.
fn new_claim(token: &str, now: u64) -> Option<Claim> {
    Some(Claim { token: token.to_string(), until: now + CLAIM_LEASE_SECS })
}

/// The answer to a request that may not write into the session now: 416 with where the session stands.
fn busy(name: &RepositoryName, session: &UploadSession) -> Error {
    Error::msg(ErrorCode::RangeInvalid, "another request is writing to this upload session")
        .with_detail(format!("the upload is at offset {}; retry from there once the other request is done", session.offset))
        .with_header("location", format!("/v2/{name}/blobs/uploads/{}", session.id))
        .with_header("range", upload_range_header(session.offset))
        .with_header("docker-upload-uuid", session.id.clone())
}

/// An upload session held by the current request, with the bytes of the request flowing into it.
struct Writer<'r> {
    reg: &'r Registry,
    name: RepositoryName,
    /// The session as stored: the last committed state, with this request's claim.
    stored: UploadSession,
    /// The store's version of `stored`; `None` while a single-shot upload has not needed to save its session.
    version: Option<String>,
    /// This request's claim token.
    token: String,
    /// The state with this request's bytes so far (offset, hash, parts).
    session: UploadSession,
    /// Bytes not yet written as a part: the previous tail, then this request's bytes.
    buf: BytesMut,
    /// The tail key the stored session points at, to be replaced.
    old_tail: Option<String>,
    /// Whether no byte has arrived since the session was loaded (the saved tail is still the tail).
    unchanged_tail: bool,
    /// Whether the claim has been read back (stores whose conditional writes are not atomic, see `verify_claim`).
    verified: bool,
}

impl<'r> Writer<'r> {
    /// A writer for `session`, which this request holds (stored at `version`, or not stored yet), for a request that
    /// announces `expected` bytes (if it does): the part buffer is sized for what can arrive, one part at most.
    async fn open(
        reg: &'r Registry,
        name: &RepositoryName,
        session: UploadSession,
        version: Option<String>,
        token: String,
        expected: Option<u64>,
    ) -> Result<Self> {
        let part = session.part_size.max(1);
        let room = session.tail_len.saturating_add(expected.unwrap_or(part)).min(part);
        let mut buf = BytesMut::with_capacity(usize::try_from(room).unwrap_or(0));
        if let Some(key) = &session.tail_key {
            // A session whose tail is gone cannot continue (the bytes it hashed are lost): the client starts over.
            let read = reg.objects.get(key, None).await?.ok_or_else(|| Error::parts_mismatch("the upload's tail is missing"))?;
            let mut body = read.body;
            while let Some(chunk) = body.next().await {
                buf.extend_from_slice(&chunk?);
            }
            if buf.len() as u64 != session.tail_len {
                return Err(Error::parts_mismatch("the upload's tail has the wrong size"));
            }
        }
        let old_tail = session.tail_key.clone();
        let verified = reg.meta.atomic_conditional_writes();
        Ok(Writer { reg, name: name.clone(), stored: session.clone(), version, token, session, buf, old_tail, unchanged_tail: true, verified })
    }

    fn key(&self) -> String {
        keys::upload(&self.session.id)
    }

    /// Save the stored state (with the multipart id, a renewed lease) by compare-and-swap on our last version.
    async fn checkpoint(&mut self) -> Result<()> {
        let now = self.reg.env.now_unix();
        self.stored.multipart_id = self.session.multipart_id.clone();
        self.stored.claim = new_claim(&self.token, now);
        self.stored.updated_at = now;
        let value = encode_session(&self.stored)?;
        self.write_held(value).await
    }

    /// Write `value` over the stored session by compare-and-swap on our version. A failed condition is checked again
    /// by claim token before it counts as lost: if the stored session still carries our claim, nobody else can have
    /// written it, and the version only moved because a write of ours had an unknown outcome (it failed after the
    /// store committed it) or the store reported another etag than the one it checks (s3s-fs under concurrent writes);
    /// then the write is repeated on the version just read.
    async fn write_held(&mut self, value: Bytes) -> Result<()> {
        let key = self.key();
        let mut condition = match &self.version {
            Some(v) => Precondition::Version(v.clone()),
            None => Precondition::Absent,
        };
        for _ in 0..2 {
            if let Some(v) = self.reg.meta.put_if(&key, value.clone(), &condition).await? {
                self.version = Some(v);
                return Ok(());
            }
            let Some(current) = self.reg.meta.get_versioned(&key).await? else { break };
            if !decode_session(&current.value).is_ok_and(|s| held_by(&s, &self.token)) {
                break;
            }
            condition = Precondition::Version(current.version);
        }
        Err(self.reg.lost_claim(&self.name, &self.session.id).await)
    }

    /// On a store whose conditional writes are not atomic, read the session back once before the first write that
    /// matters: a second writer that was also told it won has, by now, overwritten one of the two claims, and the
    /// writer whose claim token is gone stops here having written nothing. The token decides, not the version: such a
    /// store may also report an etag that belongs to the other write.
    async fn verify_claim(&mut self) -> Result<()> {
        if self.verified || self.version.is_none() {
            return Ok(());
        }
        let current = self.reg.meta.get_versioned(&self.key()).await?;
        match current {
            Some(c) if decode_session(&c.value).is_ok_and(|s| held_by(&s, &self.token)) => {
                self.version = Some(c.version);
                self.verified = true;
                Ok(())
            }
            _ => Err(self.reg.lost_claim(&self.name, &self.session.id).await),
        }
    }

    /// Renew the lease when it is running low (only a session that is stored has one).
    async fn renew_if_due(&mut self) -> Result<()> {
        let now = self.reg.env.now_unix();
        let due = self.stored.claim.as_ref().is_some_and(|c| c.until.saturating_sub(now) < RENEW_BELOW_SECS);
        if self.version.is_some() && due {
            self.checkpoint().await?;
        }
        Ok(())
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
            self.renew_if_due().await?;
            self.unchanged_tail = false;
            self.session.sha256.update(&chunk);
            self.session.offset += chunk.len() as u64;
            let part = usize::try_from(self.session.part_size.max(1)).unwrap_or(usize::MAX);
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let take = (part - self.buf.len()).min(rest.len());
                if self.buf.capacity() - self.buf.len() < take {
                    // The buffer went to the store with the last part: take it back (no allocation once the store
                    // has dropped it), at exactly one part.
                    self.buf.reserve(part - self.buf.len());
                }
                self.buf.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if self.buf.len() == part {
                    let data = self.buf.split().freeze();
                    self.write_part(data).await?;
                }
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
        self.verify_claim().await?;
        let key = self.session.staging_key();
        let upload_id = match &self.session.multipart_id {
            Some(id) => id.clone(),
            None => {
                let id = self.reg.objects.create_multipart(&key).await?;
                self.session.multipart_id = Some(id.clone());
                // Recorded before any part exists, so the purge of an abandoned session can abort the upload.
                if let Err(e) = self.checkpoint().await {
                    let _ = self.reg.objects.abort_multipart(&key, &id).await;
                    self.session.multipart_id = None;
                    return Err(e);
                }
                id
            }
        };
        self.renew_if_due().await?;
        let number = self.session.parts.len() as u32 + 1;
        let size = data.len() as u64;
        let etag = self.reg.objects.upload_part(&key, &upload_id, number, data).await?;
        self.session.parts.push(PartRecord { number, etag, size });
        Ok(())
    }

    /// Persist the tail and commit the session (claim released) by compare-and-swap on our last version.
    async fn commit(mut self, now: u64) -> Result<UploadSession> {
        let tail_len = self.buf.len() as u64;
        let unchanged = tail_len > 0 && tail_len == self.session.tail_len && self.old_tail.is_some() && self.unchanged_tail;
        let new_tail = if unchanged {
            self.old_tail.clone()
        } else {
            let nonce = crate::spec::digest::to_hex(&self.reg.env.random_bytes()[..6]);
            (tail_len > 0).then(|| self.session.tail_key_at(self.session.offset - tail_len, tail_len, &nonce))
        };
        self.verify_claim().await?;
        let written_tail = new_tail.clone().filter(|k| Some(k) != self.old_tail.as_ref());
        if let Some(key) = &written_tail {
            self.reg.objects.put(key, self.buf.split().freeze()).await?;
        }
        self.session.tail_key = new_tail;
        self.session.tail_len = tail_len;
        self.session.updated_at = now;
        self.session.claim = None;
        if self.version.is_none() {
            return Err(Error::storage("commit of an upload session that was never saved"));
        }
        let value = encode_session(&self.session)?;
        if let Err(e) = self.write_held(value).await {
            if e.code == ErrorCode::RangeInvalid || e.code == ErrorCode::BlobUploadUnknown {
                // Lost for certain: the tail written for this commit is referenced by nothing.
                if let Some(key) = &written_tail {
                    let _ = self.reg.objects.delete(key).await;
                }
            }
            return Err(e);
        }
        if let Some(old) = &self.old_tail {
            if Some(old) != self.session.tail_key.as_ref() {
                let _ = self.reg.objects.delete(old).await;
            }
        }
        Ok(self.session)
    }

    /// Give the claim up after a failure, so the client's retry can claim at once (see [`Registry::release_claim`]).
    async fn release(&self) {
        if self.version.is_some() {
            self.reg.release_claim(&self.session.id, &self.token).await;
        }
    }

    /// Verify the bytes against `digest` and move them to the blob's address. On a digest mismatch the session
    /// is committed (when `keep_on_mismatch`) so the client can retry the PUT with the right digest.
    async fn finish(mut self, name: &RepositoryName, digest: &Digest, keep_on_mismatch: bool, now: u64) -> Result<()> {
        let reg = self.reg;
        let mismatch = |actual: String| {
            Error::new(ErrorCode::DigestInvalid).with_detail(format!("expected {digest}, computed {actual}"))
        };
        if digest.algorithm() == Algorithm::Sha256 {
            let actual = Digest::from_bytes(Algorithm::Sha256, &self.session.sha256.finalize());
            if &actual != digest {
                if keep_on_mismatch {
                    self.commit(now).await?;
                } else {
                    reg.discard(&self.session).await;
                }
                return Err(mismatch(actual.to_string()));
            }
        }
        self.renew_if_due().await?;
        self.verify_claim().await?;
        let size = self.session.offset;
        // The global record says whether these bytes are already stored (another repository, an earlier push):
        // then this upload's copy is dropped and the repository links to the stored one. A record the collector is
        // deleting counts as absent, and its content address must not be written (the collector is removing the
        // object there): this upload's bytes then stay under their own key.
        let record = reg.blob_record_versioned(digest).await?;
        let (existing, record_version, content_key_free) = match record {
            Some((r, _)) if r.size == size && !r.is_deleting() => (Some(r), None, true),
            Some((r, v)) => (None, Some(v), !r.is_deleting()),
            None => (None, None, true),
        };
        let already_stored = existing.is_some();
        let mut link = if self.session.multipart_id.is_none() {
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
                None if content_key_free => {
                    reg.objects.put(&keys::blob_data(digest), data).await?;
                    BlobLink::new(size, None)
                }
                None => {
                    let key = self.session.staging_key();
                    reg.objects.put(&key, data).await?;
                    BlobLink::new(size, Some(key))
                }
            }
        } else {
            if !self.buf.is_empty() {
                let data = self.buf.split().freeze();
                self.write_part(data).await?;
            }
            let staging = self.session.staging_key();
            let upload_id = self.session.multipart_id.clone().unwrap_or_default();
            if let Err(e) = reg.objects.complete_multipart(&staging, &upload_id, &self.session.parts).await {
                if e.code == ErrorCode::BlobUploadInvalid {
                    // The stored parts are not the ones this session hashed: nothing can be completed from them.
                    reg.discard(&self.session).await;
                }
                return Err(e);
            }
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
                None if content_key_free && reg.objects.can_rename() => {
                    reg.objects.rename(&staging, &keys::blob_data(digest)).await?;
                    BlobLink::new(size, None)
                }
                None => BlobLink::new(size, Some(staging)),
            }
        };
        if self.version.is_some() {
            // A last compare-and-swap before the point of no return: of two requests that both believe they hold
            // the session (possible only on a store whose conditional writes are not atomic), one stops here.
            self.checkpoint().await?;
        }
        let gone = || Error::msg(ErrorCode::BlobUploadInvalid, "the stored copy of this blob was removed meanwhile: upload it again");
        if !already_stored {
            // Conditional on what was read: a record that appeared meanwhile (or a collection that moved on) must
            // not be overwritten blindly, since its bytes may be elsewhere or going away.
            let condition = record_version.map_or(Precondition::Absent, Precondition::Version);
            let value = super::blobs::encode_link(&link)?;
            if reg.meta.put_if(&keys::blob_record(digest), value, &condition).await?.is_none() {
                // Another upload of the same bytes recorded them first (two repositories pushing one layer at once):
                // link to its copy. Ours goes if it is under a key of its own; at the content address it is the
                // same bytes as theirs, or theirs are elsewhere and ours stay unrecorded (rare, and harmless).
                match reg.blob_record_versioned(digest).await? {
                    Some((theirs, _)) if theirs.size == size && !theirs.is_deleting() => {
                        if link.key.is_some() && theirs.key != link.key {
                            let _ = reg.objects.delete(&link.data_key(digest)).await;
                        }
                        link = theirs.live();
                    }
                    _ => {
                        reg.discard(&self.session).await;
                        return Err(gone());
                    }
                }
            }
        }
        reg.link_blob(name, digest, &link).await?;
        // The link depends on the record: revive it if the collector marked it, fail if it is going away.
        if !reg.revive(&keys::blob_record(digest)).await? {
            let _ = reg.meta.delete(&keys::blob_link(name, digest)).await;
            reg.discard(&self.session).await;
            return Err(gone());
        }
        self.session.multipart_id = None;
        reg.discard(&self.session).await;
        Ok(())
    }
}

/// Upload sessions one purge slice looks at (see [`Registry::purge_expired_uploads_slice`]).
pub const PURGE_SLICE: usize = 10;

/// Answer `error` to a request whose body was not read: read it first (bounded), because answering while the client
/// still sends makes some front ends (wrangler's proxy, workerd) reset the connection instead of delivering the
/// answer, and makes servers close a connection the client would reuse. The loser of a race then sees its 416.
async fn refuse(mut body: Body, error: Error) -> Error {
    body.drain(crate::api::body::DRAIN_LIMIT).await;
    error
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
    /// The live session `id` of `name` with its stored version, or `BLOB_UPLOAD_UNKNOWN`. Expired sessions are
    /// cleaned up on sight.
    async fn load_session(&self, name: &RepositoryName, id: &str) -> Result<(UploadSession, String)> {
        let unknown = || Error::new(ErrorCode::BlobUploadUnknown).with_detail(id.chars().take(64).collect::<String>());
        if !valid_id(id) {
            return Err(unknown());
        }
        let stored = self.meta.get_versioned(&keys::upload(id)).await?.ok_or_else(unknown)?;
        let session = decode_session(&stored.value)?;
        if session.repository != name.as_str() {
            return Err(unknown());
        }
        if session.is_expired(self.env.now_unix(), self.config.upload_expiry_secs) {
            self.discard(&session).await;
            return Err(unknown());
        }
        Ok((session, stored.version))
    }

    /// Why a holder's compare-and-swap failed: the session is gone (404), or another request holds it now (416).
    async fn lost_claim(&self, name: &RepositoryName, id: &str) -> Error {
        match self.meta.get(&keys::upload(id)).await {
            Ok(Some(raw)) => match decode_session(&raw) {
                Ok(session) => busy(name, &session),
                Err(e) => e,
            },
            Ok(None) => Error::new(ErrorCode::BlobUploadUnknown).with_detail(id.to_string()),
            Err(e) => e,
        }
    }

    /// Claim session `id` of `name` for this request (see the module docs) and open it for writing. Also returns the
    /// length the request announces, checked against the session's offset.
    async fn claim(&self, name: &RepositoryName, id: &str, headers: &HeaderMap) -> Result<(Writer<'_>, Option<u64>)> {
        let (session, version) = self.load_session(name, id).await?;
        let expected = announced_length(headers, name, &session)?;
        let now = self.env.now_unix();
        if session.is_claimed(now) {
            return Err(busy(name, &session));
        }
        let token = crate::spec::digest::to_hex(&self.env.random_bytes());
        let mut claimed = session;
        claimed.claim = new_claim(&token, now);
        claimed.updated_at = now;
        let key = keys::upload(id);
        let Some(version) = self.meta.put_if(&key, encode_session(&claimed)?, &Precondition::Version(version)).await? else {
            return Err(self.lost_claim(name, id).await);
        };
        let (claimed_token, claimed_session) = (token.clone(), claimed.clone());
        match Writer::open(self, name, claimed, Some(version), token, expected).await {
            Ok(writer) => Ok((writer, expected)),
            Err(e) if e.code == ErrorCode::BlobUploadInvalid => {
                self.discard(&claimed_session).await;
                Err(e)
            }
            Err(e) => {
                self.release_claim(id, &claimed_token).await;
                Err(e)
            }
        }
    }

    /// Remove a session and everything it wrote (best effort: leftovers are unreachable and harmless). The record
    /// goes first: if removing it fails, the session must still find every object it points at, or it would answer
    /// errors until it expires.
    async fn discard(&self, session: &UploadSession) {
        if self.meta.delete(&keys::upload(&session.id)).await.is_err() {
            return;
        }
        if let Some(id) = &session.multipart_id {
            let _ = self.objects.abort_multipart(&session.staging_key(), id).await;
        }
        if let Some(tail) = &session.tail_key {
            let _ = self.objects.delete(tail).await;
        }
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
                        // The new link depends on the blob's record: revive it if the collector marked it; if the
                        // bytes are going away, take the link back and fall back to an upload.
                        if self.revive(&keys::blob_record(&digest)).await? {
                            let mut target = events::blob_target(name.as_str(), &digest.to_string(), link.size);
                            target.from_repository = Some(from.to_string());
                            return Ok(blob_created(name, &digest).with_event(Action::Mount, target));
                        }
                        self.meta.delete(&keys::blob_link(name, &digest)).await?;
                    }
                }
            }
        } else if let Some(d) = query.get("digest") {
            // Single-shot: the session is saved only if the body needs a multipart upload (see Writer::write_part).
            let digest = match Digest::parse(d) {
                Ok(d) => d,
                Err(e) => return Err(refuse(body, e).await),
            };
            let session = self.new_session(name);
            let expected = match announced_length(headers, name, &session) {
                Ok(n) => n,
                Err(e) => return Err(refuse(body, e).await),
            };
            let size = self.store_blob(name, &digest, body, expected).await?;
            let target = events::blob_target(name.as_str(), &digest.to_string(), size);
            return Ok(blob_created(name, &digest).with_event(Action::Push, target));
        }
        let session = self.new_session(name);
        let created = self.meta.put_if(&keys::upload(&session.id), encode_session(&session)?, &Precondition::Absent).await?;
        if created.is_none() {
            return Err(Error::storage("a new upload session id is already in use"));
        }
        Ok(session_reply(StatusCode::ACCEPTED, name, &session))
    }

    /// Store `body` as blob `digest` of `name` in one go (a single-shot upload, a mirrored blob): streamed through
    /// a session that is saved only if the body needs a multipart upload, verified, then linked. Nothing is linked
    /// or recorded unless the bytes hash to `digest` (and are `expected` long, when given).
    pub(super) async fn store_blob(&self, name: &RepositoryName, digest: &Digest, body: Body, expected: Option<u64>) -> Result<u64> {
        let mut session = self.new_session(name);
        let token = crate::spec::digest::to_hex(&self.env.random_bytes());
        session.claim = new_claim(&token, self.env.now_unix());
        let mut writer = Writer::open(self, name, session, None, token, expected).await?;
        if let Err(e) = writer.write(body, expected).await {
            self.discard(&writer.session).await;
            return Err(e);
        }
        let session = writer.session.clone();
        if let Err(e) = writer.finish(name, digest, false, self.env.now_unix()).await {
            self.discard(&session).await;
            return Err(e);
        }
        Ok(session.offset)
    }

    pub(super) async fn upload_status(&self, name: &RepositoryName, id: &str) -> Result<Reply> {
        let (session, _) = self.load_session(name, id).await?;
        Ok(session_reply(StatusCode::NO_CONTENT, name, &session))
    }

    /// Claim session `id` and stream the request's body into it. A refused claim reads the body first (see
    /// [`refuse`]); a failed write gives the claim back.
    async fn claim_and_write(&self, name: &RepositoryName, id: &str, headers: &HeaderMap, body: Body) -> Result<Writer<'_>> {
        let (mut writer, expected) = match self.claim(name, id, headers).await {
            Ok(claimed) => claimed,
            Err(e) => return Err(refuse(body, e).await),
        };
        if let Err(e) = writer.write(body, expected).await {
            writer.release().await;
            return Err(e);
        }
        Ok(writer)
    }

    pub(super) async fn patch_upload(&self, name: &RepositoryName, id: &str, headers: &HeaderMap, body: Body) -> Result<Reply> {
        if header(headers, "content-length").is_some_and(|v| v.trim() == "0") {
            // An empty chunk changes nothing: answer where the session stands without claiming it.
            let (session, _) = self.load_session(name, id).await?;
            announced_length(headers, name, &session)?;
            return Ok(session_reply(StatusCode::ACCEPTED, name, &session));
        }
        let writer = self.claim_and_write(name, id, headers, body).await?;
        let token = writer.token.clone();
        match writer.commit(self.env.now_unix()).await {
            Ok(session) => Ok(session_reply(StatusCode::ACCEPTED, name, &session)),
            Err(e) => {
                self.release_claim(id, &token).await;
                Err(e)
            }
        }
    }

    pub(super) async fn finish_upload(&self, name: &RepositoryName, id: &str, query: &Query, headers: &HeaderMap, body: Body) -> Result<Reply> {
        let digest = match query.get("digest").map(Digest::parse) {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(refuse(body, e).await),
            None => return Err(refuse(body, Error::msg(ErrorCode::DigestInvalid, "digest query parameter missing")).await),
        };
        let writer = self.claim_and_write(name, id, headers, body).await?;
        let token = writer.token.clone();
        let size = writer.session.offset;
        if let Err(e) = writer.finish(name, &digest, true, self.env.now_unix()).await {
            self.release_claim(id, &token).await;
            return Err(e);
        }
        Ok(blob_created(name, &digest).with_event(Action::Push, events::blob_target(name.as_str(), &digest.to_string(), size)))
    }

    /// Remove claim `token` from session `id` if the stored claim is still that one. Reads the session back rather
    /// than trusting the holder's last version: a write whose outcome is unknown (an error after the store committed
    /// it) may have changed it. Everything but the claim stays as stored. Best effort: a claim left behind expires.
    async fn release_claim(&self, id: &str, token: &str) {
        let key = keys::upload(id);
        let Ok(Some(current)) = self.meta.get_versioned(&key).await else { return };
        let Ok(mut stored) = decode_session(&current.value) else { return };
        if !held_by(&stored, token) {
            return;
        }
        stored.claim = None;
        if let Ok(raw) = encode_session(&stored) {
            let _ = self.meta.put_if(&key, raw, &Precondition::Version(current.version)).await;
        }
    }

    pub(super) async fn cancel_upload(&self, name: &RepositoryName, id: &str) -> Result<Reply> {
        let (session, _) = self.load_session(name, id).await?;
        self.discard(&session).await;
        Ok(Reply::empty(StatusCode::NO_CONTENT))
    }

    /// Remove upload sessions idle longer than the configured expiry, slice by slice until every session was looked
    /// at. Returns how many were removed.
    pub async fn purge_expired_uploads(&self) -> Result<usize> {
        let mut removed = 0;
        loop {
            let (n, done) = self.purge_expired_uploads_slice(PURGE_SLICE).await?;
            removed += n;
            if done {
                return Ok(removed);
            }
        }
    }

    /// Look at up to `limit` upload sessions after the persisted cursor and remove the expired ones; `(removed,
    /// done)`, where `done` means the slice reached the last session (the next slice starts over). Store calls: a
    /// cursor read, a list call, a cursor write and at most four per session (read, remove the record, abort its
    /// multipart upload, remove its tail) — 43 with [`PURGE_SLICE`], under the 50 subrequests a Workers Free plan
    /// invocation may make, so each cron run does one slice and a cycle spans several.
    pub async fn purge_expired_uploads_slice(&self, limit: usize) -> Result<(usize, bool)> {
        if self.config.read_only {
            // Maintenance mode freezes the storage (a migration or a collection may be reading it): nothing is
            // removed, and sessions idle past their expiry go at the first purge after it ends.
            return Ok((0, true));
        }
        let now = self.env.now_unix();
        let cursor = self.meta.get(keys::UPLOADS_PURGE_CURSOR).await?.and_then(|c| String::from_utf8(c.to_vec()).ok());
        let start_after = cursor.filter(|c| c.starts_with(keys::UPLOADS_PREFIX));
        let page = self.meta.list(keys::UPLOADS_PREFIX, start_after.as_deref(), limit.max(1)).await?;
        let mut removed = 0;
        for key in &page {
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
        let done = page.len() < limit.max(1);
        match (done, page.last()) {
            (false, Some(last)) => self.meta.put(keys::UPLOADS_PURGE_CURSOR, Bytes::from(last.clone())).await?,
            _ => self.meta.delete(keys::UPLOADS_PURGE_CURSOR).await?,
        }
        Ok((removed, done))
    }
}
