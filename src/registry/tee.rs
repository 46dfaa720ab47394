//! The mirror's first pull of a blob: the upstream's bytes go to the client as they arrive and, at the same time,
//! into storage, one part at a time (memory: one part, whatever the blob's size). Only when the stream ends with bytes
//! that hash to the digest are they recorded and linked; a short, long or lying upstream body leaves an unrecorded
//! multipart upload that is aborted, so nothing unverified is ever served from the cache. (The client checks the
//! digest of what it received, as every registry client does, so a lying upstream fails its pull either way.)
//!
//! The bytes stay under a key of their own (`blobs/mirror/<id>`), never the content address: a concurrent upload or
//! collection of the same digest can then never write or delete them (see `gc`). If another copy was recorded first,
//! this one is dropped and the repository links to that one, reviving it; one being deleted leaves the blob uncached.
//! Storage failures stop the caching, never the client's download.
//!
//! The tee holds the fetch's [`FlightGuard`] (see `flights`): it reports the bytes that pass, and lets go of it once
//! the blob is recorded or caching was given up (or when the client goes away and the tee is dropped), which is when
//! pulls of the same blob waiting in this process look at the cache again.

use super::blobs::{encode_link, BlobLink};
use super::flights::FlightGuard;
use super::keys;
use crate::error::Result;
use crate::spec::{Digest, RepositoryName};
use crate::storage::{ByteStream, MetaStore, ObjectStore, Precondition};
use crate::upload::{PartRecord, ResumableSha256};
use bytes::{Bytes, BytesMut};
use futures::future::LocalBoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// Where a tee stores what passes through it.
pub(crate) struct TeeTarget {
    pub objects: Rc<dyn ObjectStore>,
    pub meta: Rc<dyn MetaStore>,
    pub name: RepositoryName,
    pub digest: Digest,
    pub key: String,
    pub part_size: u64,
    pub log: Rc<dyn Fn(&str)>,
}

struct Store {
    target: TeeTarget,
    upload_id: Option<String>,
    parts: Vec<PartRecord>,
}

impl Store {
    async fn write_part(mut self, data: Bytes) -> Result<Self> {
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.target.objects.create_multipart(&self.target.key).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let number = self.parts.len() as u32 + 1;
        let size = data.len() as u64;
        let etag = self.target.objects.upload_part(&self.target.key, &id, number, data).await?;
        self.parts.push(PartRecord { number, etag, size });
        Ok(self)
    }

    async fn abort(&self) {
        if let Some(id) = &self.upload_id {
            let _ = self.target.objects.abort_multipart(&self.target.key, id).await;
        }
    }

    /// Complete the upload and record and link it, once the bytes verified.
    async fn commit(mut self, last: Bytes, size: u64) -> Result<()> {
        let t = &self.target;
        if self.upload_id.is_none() {
            t.objects.put(&t.key, last).await?;
        } else {
            if !last.is_empty() {
                self = self.write_part(last).await?;
            }
            let t = &self.target;
            t.objects.complete_multipart(&t.key, self.upload_id.as_deref().unwrap_or_default(), &self.parts).await?;
        }
        let t = &self.target;
        let ours = BlobLink::new(size, Some(t.key.clone()));
        let record_key = keys::blob_record(&t.digest);
        let link = if t.meta.put_if(&record_key, encode_link(&ours)?, &Precondition::Absent).await?.is_some() {
            ours
        } else {
            // Recorded meanwhile (another first pull, an upload): use that copy; ours goes.
            let _ = t.objects.delete(&t.key).await;
            match t.meta.get(&record_key).await? {
                Some(raw) => {
                    let theirs = super::blobs::decode_link(&raw)?;
                    if theirs.is_deleting() || theirs.size != size {
                        return Ok(());
                    }
                    theirs.live()
                }
                None => return Ok(()),
            }
        };
        let link_key = keys::blob_link(&t.name, &t.digest);
        t.meta.put(&link_key, encode_link(&link.live())?).await?;
        // The link depends on the record: if the collector is deleting it, take the link back (the next pull fetches
        // again). Clearing a mark is the collector's and the writers' revival (see `gc`); here a plain re-read suffices
        // because a marked record is kept for at least one more cycle, which sees this link.
        if let Some(raw) = t.meta.get(&record_key).await? {
            if super::blobs::decode_link(&raw)?.is_deleting() {
                t.meta.delete(&link_key).await?;
            }
        } else {
            t.meta.delete(&link_key).await?;
        }
        Ok(())
    }
}

enum State {
    /// Passing bytes through; `store` is `None` once caching was given up.
    Streaming { store: Option<Store>, pending: Option<LocalBoxFuture<'static, Result<Store>>> },
    /// The upstream body ended: committing (or aborting) before the client's stream ends. With a `Content-Length`
    /// the last chunk is held back until then: HTTP servers stop polling a body once they have sent that many bytes.
    Finishing(LocalBoxFuture<'static, ()>, Option<Bytes>),
    Done,
}

/// The upstream's body, passed through and cached.
pub(crate) struct Tee {
    upstream: ByteStream,
    state: State,
    buf: BytesMut,
    hasher: ResumableSha256,
    total: u64,
    expected: Option<u64>,
    part_size: usize,
    log: Rc<dyn Fn(&str)>,
    /// This process's single flight for the blob, released as soon as the outcome is known.
    flight: Option<FlightGuard>,
}

impl Tee {
    pub(crate) fn new(upstream: ByteStream, target: TeeTarget, expected: Option<u64>, flight: Option<FlightGuard>) -> Self {
        let part_size = target.part_size.max(1) as usize;
        let log = target.log.clone();
        let store = Store { target, upload_id: None, parts: Vec::new() };
        Tee {
            upstream,
            state: State::Streaming { store: Some(store), pending: None },
            buf: BytesMut::new(),
            hasher: ResumableSha256::new(),
            total: 0,
            expected,
            part_size,
            log,
            flight,
        }
    }

    pub(crate) fn into_stream(self) -> ByteStream {
        Box::pin(self)
    }
}

impl Stream for Tee {
    type Item = Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Finishing(f, last) => {
                    if f.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let last = last.take();
                    this.state = State::Done;
                    // Recorded (or not): pulls waiting for this fetch look at the cache now.
                    this.flight = None;
                    return Poll::Ready(last.map(Ok));
                }
                State::Streaming { store, pending } => {
                    // A part being written holds back the next chunk: memory stays at one part.
                    if let Some(p) = pending {
                        match p.as_mut().poll(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Ok(s)) => *store = Some(s),
                            Poll::Ready(Err(e)) => {
                                (this.log)(&format!("mirror: caching stopped: {e}"));
                                // Nothing will be recorded: waiting pulls need not wait for the rest of the bytes.
                                this.flight = None;
                            }
                        }
                        *pending = None;
                    }
                    match this.upstream.poll_next_unpin(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Some(Ok(chunk))) => {
                            this.total += chunk.len() as u64;
                            if let Some(f) = &this.flight {
                                f.advance(chunk.len());
                            }
                            if store.is_some() {
                                this.hasher.update(&chunk);
                                this.buf.extend_from_slice(&chunk);
                                if this.expected == Some(this.total) {
                                    // The announced length is complete: finish storing before the last bytes go out.
                                    let store = store.take();
                                    this.state = State::Finishing(this.finish(store), Some(chunk));
                                    continue;
                                }
                                if this.buf.len() >= this.part_size {
                                    let data = this.buf.split_to(this.part_size).freeze();
                                    if let Some(s) = store.take() {
                                        *pending = Some(s.write_part(data).boxed_local());
                                    }
                                }
                            }
                            return Poll::Ready(Some(Ok(chunk)));
                        }
                        Poll::Ready(Some(Err(e))) => {
                            // The upstream broke off: the client sees the error; nothing is recorded.
                            let store = store.take();
                            this.state = State::Finishing(
                                async move {
                                    if let Some(s) = store {
                                        s.abort().await;
                                    }
                                }
                                .boxed_local(),
                                None,
                            );
                            let _ = this.state_finishing_poll(cx);
                            return Poll::Ready(Some(Err(e)));
                        }
                        Poll::Ready(None) => {
                            let store = store.take();
                            this.state = State::Finishing(this.finish(store), None);
                        }
                    }
                }
            }
        }
    }
}

impl Tee {
    /// Verify what passed through and commit it to storage, or abort the upload.
    fn finish(&mut self, store: Option<Store>) -> LocalBoxFuture<'static, ()> {
        let digest_ok = store.as_ref().is_some_and(|s| {
            crate::spec::Algorithm::Sha256 == s.target.digest.algorithm()
                && Digest::from_bytes(crate::spec::Algorithm::Sha256, &self.hasher.finalize()) == s.target.digest
        });
        let length_ok = self.expected.is_none_or(|n| n == self.total);
        let last = self.buf.split().freeze();
        let size = self.total;
        let log = self.log.clone();
        async move {
            let Some(s) = store else { return };
            if !(digest_ok && length_ok) {
                log("mirror: the upstream's bytes do not match the digest: nothing cached");
                s.abort().await;
                return;
            }
            let key = s.target.key.clone();
            let objects = s.target.objects.clone();
            if let Err(e) = s.commit(last, size).await {
                log(&format!("mirror: caching failed: {e}"));
                let _ = objects.delete(&key).await;
            }
        }
        .boxed_local()
    }

    /// Start the abort future right away (the client may stop polling after the error).
    fn state_finishing_poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let State::Finishing(f, _) = &mut self.state {
            if f.as_mut().poll(cx).is_ready() {
                self.state = State::Done;
                self.flight = None;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}
