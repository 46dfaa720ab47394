//! Manifest push, pull and delete. A manifest is stored as a record in the metadata store: one JSON header line (media
//! type, subject, digest) and then the client's exact bytes. A tag holds a copy of the record it points to, so a pull
//! by tag — the hottest request of a registry — costs one read, and returns byte-for-byte what was pushed. (Records are
//! immutable and a manifest delete removes the tags pointing at it first, so the copy never outlives the original.) A
//! push is refused unless everything it references (config, layers, child manifests) is already in the repository,
//! with the sizes the manifest declares; `subject` is exempt, as the spec allows referrers to arrive before what they
//! refer to.
//!
//! A delete by digest removes the tags pointing at the manifest with a conditional delete on the version it read, so
//! a tag moved to another manifest meanwhile (a concurrent PUT by tag) stays where it was moved: in either order of
//! the two requests the tag ends at the new manifest. It finds those tags through a reverse index (manifest digest →
//! tags ever pointed at it, written by every PUT by tag before the tag itself), so its cost follows the manifest's
//! tags, not the repository's.
//!
//! Store calls per request, whatever the repository's size (`bounds_tests` counts them): GET/HEAD 1 (2 for a tag
//! written before tags held a record copy); PUT three reads per referenced blob (the check; the revival of its link
//! and of its record after the manifest record is written) and two per child manifest (the check and the revival), the record, the catalog read, +1 with a subject, +2 by tag, +2
//! for a new repository; DELETE by tag 2; DELETE by digest 5 +
//! ⌈e/1000⌉ + 3e for the e reverse-index entries of the manifest (a repository from before the index pays one scan of
//! its tags on its first such delete).

use super::{header, keys, Registry};
use crate::api::{Body, Reply};
use crate::error::{Error, ErrorCode, Result};
use crate::events::{self, Action};
use crate::spec::manifest::{self, Descriptor, MAX_MANIFEST_SIZE};
use crate::spec::{Algorithm, Digest, Reference, RepositoryName, Tag};
use crate::storage::Precondition;
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{try_join, try_join_all};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// The header line of a manifest record.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RecordHeader {
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
    /// The record's own digest (needed where the record is read through a tag).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// When it was last pushed (Unix seconds); absent in records from before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<u64>,
    /// Garbage collection's mark: untagged and older than the policy allows (see `gc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gc: Option<super::blobs::Tombstone>,
    /// When a mirrored manifest was last fetched or revalidated from its upstream (see `mirror`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched: Option<u64>,
    /// When a mirrored manifest (this record, or this tag's copy) was last pulled from the cache, to within
    /// `MirrorConfig::pull_resolution_secs`: the mirror's expiry (see `mirror` and `gc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pulled: Option<u64>,
}

/// How stale a catalog entry's `pushed` time may get before a push rewrites it: the entry is rewritten at most once
/// per this many seconds per repository (some stores limit writes per key), so the web UI's "last push" of a
/// repository is exact to this much.
pub(crate) const CATALOG_PUSHED_RESOLUTION_SECS: u64 = 60;

/// The value of a repository's catalog entry (`_catalog/<name>`): when it was last pushed to. Entries written before
/// it was kept are empty and decode to `pushed: None` until the next push.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct CatalogEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed: Option<u64>,
}

impl CatalogEntry {
    /// Decode a stored entry; an empty or unreadable one knows nothing (it is advisory, for display only).
    pub fn decode(raw: &[u8]) -> CatalogEntry {
        serde_json::from_slice(raw).unwrap_or_default()
    }

    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

pub(crate) struct ManifestRecord {
    pub header: RecordHeader,
    pub bytes: Bytes,
}

pub(crate) fn encode_record(header: &RecordHeader, bytes: &[u8]) -> Result<Bytes> {
    let mut out = BytesMut::new();
    out.put_slice(&serde_json::to_vec(header).map_err(|e| Error::storage(e.to_string()))?);
    out.put_u8(b'\n');
    out.put_slice(bytes);
    Ok(out.freeze())
}

/// What a tag's value says: a copy of the record (current format) or just a digest (older data).
pub(crate) enum TagTarget {
    Record(Digest, Box<ManifestRecord>),
    Digest(Digest),
}

pub(crate) fn tag_target(raw: &Bytes) -> Result<TagTarget> {
    if raw.first() == Some(&b'{') {
        let record = decode_record(raw.clone())?;
        let digest = record.header.digest.clone().ok_or_else(|| Error::storage("tag record without digest"))?;
        return Ok(TagTarget::Record(digest, Box::new(record)));
    }
    let s = std::str::from_utf8(raw).map_err(|_| Error::storage("corrupt tag"))?;
    Digest::parse(s.trim()).map(TagTarget::Digest).map_err(|_| Error::storage("corrupt tag"))
}

/// A reference to something that may exist: a malformed tag names nothing that could ever have been stored, so a read
/// or a delete of it answers 404 `MANIFEST_UNKNOWN` (what the OCI conformance suite expects); a push to it stays 400
/// `TAG_INVALID`. A malformed digest stays 400 `DIGEST_INVALID`.
fn parse_existing(reference: &str) -> Result<Reference> {
    Reference::parse(reference).map_err(|e| {
        if e.code == ErrorCode::TagInvalid {
            Error::new(ErrorCode::ManifestUnknown).with_detail(reference.chars().take(200).collect::<String>())
        } else {
            e
        }
    })
}

pub(crate) fn decode_record(raw: Bytes) -> Result<ManifestRecord> {
    let nl = raw.iter().position(|&b| b == b'\n').ok_or_else(|| Error::storage("corrupt manifest record"))?;
    let header: RecordHeader = serde_json::from_slice(&raw[..nl]).map_err(|e| Error::storage(format!("corrupt manifest record: {e}")))?;
    Ok(ManifestRecord { header, bytes: raw.slice(nl + 1..) })
}

impl Registry {
    pub(crate) async fn manifest_record(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<ManifestRecord>> {
        match self.meta.get(&keys::manifest(name, digest)).await? {
            None => Ok(None),
            Some(raw) => decode_record(raw).map(Some),
        }
    }

    /// The digest and record `reference` names in `name`; `MANIFEST_UNKNOWN` when there is none.
    pub(crate) async fn resolve(&self, name: &RepositoryName, reference: &Reference) -> Result<(Digest, ManifestRecord)> {
        let unknown = || Error::new(ErrorCode::ManifestUnknown).with_detail(reference.to_string());
        match reference {
            Reference::Digest(d) => {
                let record = self.manifest_record(name, d).await?.ok_or_else(unknown)?;
                Ok((d.clone(), record))
            }
            Reference::Tag(t) => {
                let raw = self.meta.get(&keys::tag(name, t)).await?.ok_or_else(unknown)?;
                match tag_target(&raw)? {
                    TagTarget::Record(digest, record) => Ok((digest, *record)),
                    TagTarget::Digest(digest) => {
                        let record = self.manifest_record(name, &digest).await?.ok_or_else(unknown)?;
                        Ok((digest, record))
                    }
                }
            }
        }
    }

    pub(super) async fn get_manifest(&self, name: &RepositoryName, reference: &str) -> Result<Reply> {
        let reference = parse_existing(reference)?;
        let (digest, record) = self.resolve(name, &reference).await?;
        let tag = match &reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let digest_str = digest.to_string();
        // Built only when someone listens: a pull is the hot path.
        let target = self
            .notifier
            .is_some()
            .then(|| events::manifest_target(name.as_str(), &digest_str, &record.header.media_type, record.bytes.len() as u64, tag.as_deref()));
        let reply = Reply::bytes(StatusCode::OK, &record.header.media_type, record.bytes)
            .header("etag", format!("\"{digest_str}\""))
            .header("docker-content-digest", digest_str);
        Ok(match target {
            Some(t) => reply.with_event(Action::Pull, t),
            None => reply,
        })
    }

    pub(super) async fn put_manifest(&self, name: &RepositoryName, reference: &str, headers: &HeaderMap, mut body: Body) -> Result<Reply> {
        let reference = Reference::parse(reference)?;
        if let Some(len) = header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
            if len > MAX_MANIFEST_SIZE as u64 {
                body.drain(crate::api::body::DRAIN_LIMIT).await;
                return Err(Error::new(ErrorCode::PayloadTooLarge).with_detail(format!("manifest larger than {MAX_MANIFEST_SIZE} bytes")));
            }
        }
        let bytes = body.collect_limited(MAX_MANIFEST_SIZE).await?;
        let info = manifest::parse(&bytes, header(headers, "content-type"))?;
        let algorithm = match &reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = algorithm.digest(&bytes);
        if let Reference::Digest(d) = &reference {
            if d != &digest {
                return Err(Error::msg(ErrorCode::DigestInvalid, "manifest digest does not match the reference")
                    .with_detail(format!("reference {d}, content {digest}")));
            }
        }

        // Everything referenced must be in the repository, with the size the manifest declares for it: a wrong size
        // would make clients fail (or trust the wrong length) on pull, so it is refused at push.
        let blob_checks = info.blobs.iter().map(|r| async move { Ok::<_, Error>((r, self.blob_link(name, &r.digest).await?.map(|l| l.size))) });
        let manifest_checks = info.manifests.iter().map(|r| async move {
            Ok::<_, Error>((r, self.manifest_record(name, &r.digest).await?.map(|m| m.bytes.len() as u64)))
        });
        let (blobs, manifests) = try_join(try_join_all(blob_checks), try_join_all(manifest_checks)).await?;
        for (referenced, stored) in blobs.iter().chain(manifests.iter()) {
            match stored {
                None => return Err(Error::new(ErrorCode::ManifestBlobUnknown).with_detail(referenced.digest.to_string())),
                Some(size) if *size != referenced.size => {
                    return Err(Error::msg(ErrorCode::ManifestInvalid, "a descriptor's size does not match the stored content")
                        .with_detail(format!(
                            "{} ({}) declares size {}, the stored content has {size} bytes",
                            referenced.field, referenced.digest, referenced.size
                        )));
                }
                Some(_) => {}
            }
        }

        let header_line = RecordHeader {
            media_type: info.media_type.clone(),
            subject: info.subject.as_ref().map(|s| s.digest.clone()),
            digest: Some(digest.clone()),
            pushed: Some(self.env.now_unix()),
            gc: None,
            fetched: None,
            pulled: None,
        };
        let record = encode_record(&header_line, &bytes)?;
        let record_key = keys::manifest(name, &digest);
        // Create-if-absent tells whether this push created the record (and may take it back below); a re-push
        // rewrites it, as the media type may come from a different Content-Type.
        let created = self.meta.put_if(&record_key, record.clone(), &Precondition::Absent).await?.is_some();
        if !created {
            self.meta.put(&record_key, record.clone()).await?;
        }
        // Now that the record exists (and a collection's mark phase would see it), make sure every blob it needs is
        // still linked and stored, reviving links and records the collector marked. One already deleted (or a record
        // being deleted) means the blob is gone: refuse,
        // as if the check above had failed (see `gc`'s module doc for the interleavings).
        for referenced in &info.blobs {
            let link = keys::blob_link(name, &referenced.digest);
            if !(self.revive(&link).await? && self.revive(&keys::blob_record(&referenced.digest)).await?) {
                if created {
                    self.meta.delete(&record_key).await?;
                }
                return Err(Error::new(ErrorCode::ManifestBlobUnknown).with_detail(referenced.digest.to_string()));
            }
        }
        // An index's children likewise: a child the collector marked (untagged and old) is revived, one it deleted
        // makes the push fail.
        for child in &info.manifests {
            if !self.revive_manifest(name, &child.digest).await? {
                if created {
                    self.meta.delete(&record_key).await?;
                }
                return Err(Error::new(ErrorCode::ManifestBlobUnknown).with_detail(child.digest.to_string()));
            }
        }
        if let Some(subject) = &info.subject {
            let descriptor = Descriptor {
                media_type: info.media_type.clone(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                artifact_type: info.artifact_type.clone(),
                annotations: info.annotations.clone(),
                urls: None,
            };
            let v = serde_json::to_vec(&descriptor).map_err(|e| Error::storage(e.to_string()))?;
            self.meta.put(&keys::referrer(name, &subject.digest, &digest), Bytes::from(v)).await?;
        }
        if let Reference::Tag(t) = &reference {
            // The reverse-index entry before the tag: an entry whose tag is elsewhere is harmless (a delete checks the
            // tag itself), a tag without its entry would outlive a delete of its manifest by digest. Entries are not
            // removed when a tag moves on: removing one races a concurrent PUT moving the tag back.
            self.meta.put(&keys::tag_index(name, &digest, t), Bytes::new()).await?;
            self.meta.put(&keys::tag(name, t), record).await?;
        }
        // A read before the write: the catalog key is rewritten on every push otherwise, and some stores limit
        // writes per key.
        // The entry also carries the repository's last push time for the web UI, refreshed only when it is older
        // than CATALOG_PUSHED_RESOLUTION_SECS: a burst of pushes (an index and its platform manifests) writes it once.
        let catalog_key = keys::catalog(name);
        let now = self.env.now_unix();
        let fresh = CatalogEntry { pushed: Some(now) }.encode();
        match self.meta.get(&catalog_key).await? {
            None => {
                // A new repository: each of its tags goes through the reverse index from the start.
                self.meta.put(&keys::tag_index_ready(name), Bytes::new()).await?;
                self.meta.put(&catalog_key, fresh).await?;
            }
            Some(raw) => {
                let stale = CatalogEntry::decode(&raw).pushed.is_none_or(|p| now.saturating_sub(p) >= CATALOG_PUSHED_RESOLUTION_SECS);
                if stale {
                    self.meta.put(&catalog_key, fresh).await?;
                }
            }
        }

        let tag = match &reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let mut target = events::manifest_target(name.as_str(), &digest.to_string(), &info.media_type, bytes.len() as u64, tag.as_deref());
        target.references = Some(
            info.blobs
                .iter()
                .chain(info.manifests.iter())
                .map(|r| events::Reference { media_type: String::new(), size: r.size, digest: r.digest.to_string() })
                .collect(),
        );
        let mut reply = Reply::empty(StatusCode::CREATED)
            .header("location", format!("/v2/{name}/manifests/{digest}"))
            .header("docker-content-digest", digest.to_string())
            .with_event(Action::Push, target);
        if let Some(subject) = &info.subject {
            reply = reply.header("oci-subject", subject.digest.to_string());
        }
        Ok(reply)
    }

    /// Clear the collector's mark from a manifest record by compare-and-swap (see [`Registry::revive`]): `false` when
    /// the record is gone.
    pub(crate) async fn revive_manifest(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        let key = keys::manifest(name, digest);
        for _ in 0..4 {
            let Some(v) = self.meta.get_versioned(&key).await? else { return Ok(false) };
            let mut record = decode_record(v.value)?;
            if record.header.gc.is_none() {
                return Ok(true);
            }
            record.header.gc = None;
            let live = encode_record(&record.header, &record.bytes)?;
            if self.meta.put_if(&key, live, &Precondition::Version(v.version)).await?.is_some() {
                return Ok(true);
            }
        }
        Err(Error::storage(format!("{key} kept changing while it was revived")))
    }

    /// Remove `tag` if it still points at `digest`: conditionally on the version read, so a tag moved to another
    /// manifest since it was read stays where it was moved. Returns where the tag points (`None`: nowhere).
    async fn untag_if_at(&self, tag_key: &str, digest: &Digest) -> Result<Option<Digest>> {
        let Some(v) = self.meta.get_versioned(tag_key).await? else { return Ok(None) };
        let target = match tag_target(&v.value)? {
            TagTarget::Record(target, _) | TagTarget::Digest(target) => target,
        };
        if &target == digest {
            self.meta.delete_if(tag_key, &v.version).await?;
        }
        Ok(Some(target))
    }

    /// Untag `digest` through the reverse index: one list call per 1,000 entries and three calls per tag that was
    /// ever pointed at it, whatever the number of tags in the repository.
    async fn untag_indexed(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        let prefix = keys::tag_index_prefix(name, digest);
        let mut after: Option<String> = None;
        loop {
            let page = self.meta.list(&prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else { break };
            for entry in &page {
                if let Some(tag) = entry.strip_prefix(&prefix).and_then(|t| Tag::parse(t).ok()) {
                    self.untag_if_at(&keys::tag(name, &tag), digest).await?;
                }
                self.meta.delete(entry).await?;
            }
            after = Some(last);
        }
        Ok(())
    }

    /// Untag `digest` in a repository created before the reverse index: read every tag once, indexing each as it
    /// goes, then mark the repository indexed so later deletes take [`Registry::untag_indexed`].
    async fn untag_by_scan(&self, name: &RepositoryName, digest: &Digest) -> Result<()> {
        let prefix = keys::tags_prefix(name);
        let mut after: Option<String> = None;
        loop {
            let page = self.meta.list(&prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else { break };
            for key in &page {
                let Some(tag) = key.strip_prefix(&prefix).and_then(|t| Tag::parse(t).ok()) else { continue };
                match self.untag_if_at(key, digest).await? {
                    Some(target) if &target != digest => {
                        self.meta.put(&keys::tag_index(name, &target, &tag), Bytes::new()).await?;
                    }
                    _ => {}
                }
            }
            after = Some(last);
        }
        self.meta.put(&keys::tag_index_ready(name), Bytes::new()).await
    }

    pub(crate) async fn delete_manifest(&self, name: &RepositoryName, reference: &str) -> Result<Reply> {
        self.require_delete_enabled()?;
        let reference = parse_existing(reference)?;
        let unknown = || Error::new(ErrorCode::ManifestUnknown).with_detail(reference.to_string());
        let mut target = events::Target { repository: name.to_string(), ..events::Target::default() };
        match &reference {
            Reference::Tag(t) => {
                let key = keys::tag(name, t);
                let Some(raw) = self.meta.get(&key).await? else { return Err(unknown()) };
                self.meta.delete(&key).await?;
                target.tag = Some(t.to_string());
                // What the tag pointed at, for the event (a corrupt value does not stop the delete).
                if let Ok(TagTarget::Record(d, _) | TagTarget::Digest(d)) = tag_target(&raw) {
                    target.digest = d.to_string();
                }
            }
            Reference::Digest(d) => {
                let record = self.manifest_record(name, d).await?.ok_or_else(unknown)?;
                // Tags first: a tag must never point at a deleted manifest, while a manifest briefly without its
                // tags is harmless if a later step fails.
                if self.meta.get(&keys::tag_index_ready(name)).await?.is_some() {
                    self.untag_indexed(name, d).await?;
                } else {
                    self.untag_by_scan(name, d).await?;
                }
                if let Some(subject) = &record.header.subject {
                    self.meta.delete(&keys::referrer(name, subject, d)).await?;
                }
                self.meta.delete(&keys::manifest(name, d)).await?;
                target.digest = d.to_string();
                target.media_type = record.header.media_type.clone();
            }
        }
        Ok(Reply::empty(StatusCode::ACCEPTED).with_event(Action::Delete, target))
    }
}
