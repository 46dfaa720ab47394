//! Where everything lives. One function per key family so the layout is written down once:
//!
//! object store: `blobs/<alg>/<hex>` (blob bytes, content-addressed, shared by repositories),
//!               `blobs/uploads/<id>` (a multipart upload's bytes; stays the blob's home on stores without rename),
//!               `_uploads/<id>/tail-…` (the tail of an upload session, shorter than a part),
//!               `blobs/mirror/<id>` (a blob the pull-through cache streamed in; its record names the key).
//! meta store:   `_blobs/<alg>/<hex>` (the blob exists: `{"size":n,"key":…}`, key absent = content address),
//!               `repositories/<name>/_blobs/<alg>/<hex>` (the blob is part of the repository; same value),
//!               `repositories/<name>/_manifests/<alg>/<hex>` (manifest record: JSON header line + exact bytes),
//!               `repositories/<name>/_tags/<tag>` (digest), `repositories/<name>/_referrers/<subject>/<digest>`
//!               (descriptor), `repositories/<name>/_ti/<first 16 hex of digest>/<tag>` (the tag was pointed at
//!               the manifest: the reverse index a delete by digest lists), `repositories/<name>/_ti/ready` (every
//!               tag of the repository is in the reverse index), `_catalog/<name>`, `_uploads/<id>` (session),
//!               `_cursors/uploads-purge` (where the next purge slice starts),
//!               `_health/probe` (never written: read by the health check),
//!               `_events/outbox/<endpoint>/<stamp>-<random>` (an event owed to a notification endpoint, in order),
//!               `_events/state/<endpoint>` (an endpoint's failures in a row and when to try again),
//!               `_events/dead/<endpoint>/<stamp>-<random>` (an event given up on, with why).
//!
//! Name components never start with `_`, so a repository's `_tags/` prefix can never list a nested repository's keys.

use crate::spec::{Digest, RepositoryName, Tag};

fn d(digest: &Digest) -> String {
    format!("{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// Blob bytes.
pub fn blob_data(digest: &Digest) -> String {
    format!("blobs/{}", d(digest))
}

/// A blob's global record (its size and where its bytes are).
pub fn blob_record(digest: &Digest) -> String {
    format!("_blobs/{}", d(digest))
}

/// A blob's membership of a repository.
pub fn blob_link(name: &RepositoryName, digest: &Digest) -> String {
    format!("repositories/{name}/_blobs/{}", d(digest))
}

/// A manifest record.
pub fn manifest(name: &RepositoryName, digest: &Digest) -> String {
    format!("repositories/{name}/_manifests/{}", d(digest))
}

/// The prefix of a repository's tags.
pub fn tags_prefix(name: &RepositoryName) -> String {
    format!("repositories/{name}/_tags/")
}

/// A tag.
pub fn tag(name: &RepositoryName, tag: &Tag) -> String {
    format!("{}{tag}", tags_prefix(name))
}

/// The prefix of the reverse-index entries of the tags pointed at `digest`. Named by the digest's first 16 hex
/// characters, not the whole digest: keys stay short (some S3-compatible servers refuse keys beyond ~160 bytes), and
/// an entry only says "look at this tag" — a delete checks what the tag points at — so a shared prefix costs at most
/// a wasted read.
pub fn tag_index_prefix(name: &RepositoryName, digest: &Digest) -> String {
    let hex = digest.hex();
    format!("repositories/{name}/_ti/{}/", &hex[..hex.len().min(16)])
}

/// A reverse-index entry: `tag` was pointed at `digest` (it may have moved since).
pub fn tag_index(name: &RepositoryName, digest: &Digest, tag: &Tag) -> String {
    format!("{}{tag}", tag_index_prefix(name, digest))
}

/// Present once every tag of the repository is in the reverse index (repositories created before the index existed
/// get it from their first delete by digest, which scans their tags once).
pub fn tag_index_ready(name: &RepositoryName) -> String {
    format!("repositories/{name}/_ti/ready")
}

/// The prefix of the referrers of `subject`.
pub fn referrers_prefix(name: &RepositoryName, subject: &Digest) -> String {
    format!("repositories/{name}/_referrers/{}/", d(subject))
}

/// One referrer of `subject`.
pub fn referrer(name: &RepositoryName, subject: &Digest, digest: &Digest) -> String {
    format!("{}{}", referrers_prefix(name, subject), d(digest))
}

/// The catalog prefix.
pub const CATALOG_PREFIX: &str = "_catalog/";

/// A repository's catalog entry.
pub fn catalog(name: &RepositoryName) -> String {
    format!("{CATALOG_PREFIX}{name}")
}

/// The upload sessions prefix.
pub const UPLOADS_PREFIX: &str = "_uploads/";

/// Where the expired-session purge resumes: the last session key the previous slice looked at.
pub const UPLOADS_PURGE_CURSOR: &str = "_cursors/uploads-purge";

/// An upload session.
pub fn upload(id: &str) -> String {
    format!("{UPLOADS_PREFIX}{id}")
}

/// The key the health check reads: never written, so reading it costs one small lookup on every backend (a 404 from
/// an object store, a missing file) and proves the store answers.
pub const HEALTH_PROBE: &str = "_health/probe";

/// Notification events owed to endpoint `endpoint` (an [`crate::events::endpoint_key`]), in delivery order.
pub fn outbox_prefix(endpoint: &str) -> String {
    format!("_events/outbox/{endpoint}/")
}

/// The delivery state of endpoint `endpoint` (failures in a row, when to try again).
pub fn endpoint_state(endpoint: &str) -> String {
    format!("_events/state/{endpoint}")
}

/// The prefix of the events given up on for endpoint `endpoint`.
pub fn dead_letter_prefix(endpoint: &str) -> String {
    format!("_events/dead/{endpoint}/")
}
