//! Garbage collection: an online mark-and-sweep over the storage traits, in bounded slices with a persisted cursor,
//! safe against concurrent pushes by construction. Deleting a manifest or a blob only unlinks it; this is what gives
//! the bytes back.
//!
//! ## What is kept
//! Every manifest (untagged ones too: deleting a manifest is the client's decision) and every tag's record copy, and
//! everything they reference: config, layers (foreign ones too, when present), blobs, child manifests and subjects.
//! A repository's blob links that none of its manifests or tags reference are collected, and then a blob's global
//! record and bytes once no repository links it.
//!
//! With an untagged-manifest policy (`PIER_GC_UNTAGGED_AFTER`), a manifest is kept only if a tag points at it, it
//! was pushed less than that long ago (or before push times were recorded), it is a child of a kept index, or its
//! subject is kept (signatures and SBOMs of kept images). The others are marked, and deleted by a later cycle, the
//! same two-step way as links; their blobs follow in the cycles after (a manifest's references count until the
//! manifest is actually gone).
//!
//! In a mirrored repository (see `mirror`) the untagged policy does not apply; the mirror's expiry does
//! (`REGISTRY_PROXY_TTL`, default 168 h, `0` keeps everything): a tag's cached copy is kept while it was pulled or
//! fetched within the TTL, a manifest record while it or a tag's copy of it was (pulls note their time in the record
//! they read, at most once per `MirrorConfig::pull_resolution_secs`). What expired is marked and deleted the same
//! two-step way — records and tag copies alike, conditional on the version read — and its blobs follow in the cycles
//! after. A pull of something marked rewrites it (its time, no mark), which makes the collector's delete fail; a pull
//! of something already deleted fetches it from the upstream again, and a blob link the collector marked meanwhile is
//! revived, link then record, like any writer's.
//!
//! ## A cycle
//! For each repository in the catalog: *mark* (read every manifest record and tag, collect the digests they
//! reference), then *sweep links*: a referenced link is kept (its mark cleared if it had one); an unreferenced live
//! link gets a tombstone (`gc: {cycle, at}`) by compare-and-swap; an unreferenced link whose tombstone is from an
//! earlier cycle and older than the grace period is deleted by a conditional delete on the version read. Every link
//! still present (tombstoned or not) puts its digest in the cycle's *linked* set. Then *sweep records*: a record in
//! the linked set is kept (mark cleared); an unlinked live record gets a tombstone; an unlinked record whose tombstone
//! is from an earlier cycle and older than the grace period is first marked `deleting` (compare-and-swap), then its
//! bytes are deleted, then the record (conditional on the `deleting` version). So nothing is deleted before two
//! cycles in a row found it unreferenced, the second one's mark having started after the first one's tombstone.
//!
//! ## Why concurrent writers are safe
//! Writers never trust an earlier read: after they make something depend on a link or a record they *revive* it
//! ([`Registry::revive`]): read it, and if it carries a tombstone, clear it by compare-and-swap; if it is gone or
//! `deleting`, fail. The interleavings:
//! - *A manifest PUT whose links were checked before a tombstone was set.* The PUT writes its record, then revives
//!   each link. If the revival runs after the tombstone, it clears it, which changes the link's version, so the
//!   collector's conditional delete fails (or it reads the link live and keeps it). If the collector deleted the link
//!   first, the revival finds nothing and the PUT answers `MANIFEST_BLOB_UNKNOWN` (removing the record it created):
//!   never a 201 for a manifest whose blob is gone. If the revival ran before the tombstone, the record was written
//!   before it too, so the next cycle's mark (which starts after the tombstone) sees the record and keeps the link.
//! - *A client that HEADs a blob, skips the upload and PUTs its manifest*: the same case (a tombstoned link still
//!   answers HEAD; the PUT revives it).
//! - *An upload or a mount linking a blob whose record is tombstoned or being deleted.* The writer writes the link,
//!   then revives the record; `deleting` (or gone) makes it take the link back and fail (an upload answers
//!   `BLOB_UPLOAD_INVALID`, retried by clients; a mount falls back to an upload). A revival after the record's
//!   tombstone makes the collector's `deleting` compare-and-swap fail.
//! - *An upload of bytes whose record is `deleting`*: it never writes the content address the collector is emptying;
//!   its bytes stay under their own key and its record write is conditional on the `deleting` version it read, so the
//!   collector's last step (conditional on that version) leaves the new record alone.
//! - *Two collectors*: a lease in the state record (compare-and-swap) lets one run slices at a time; one whose lease
//!   ran out cannot save its progress, and each of its steps was individually safe.
//! - *A tag moved while the mark runs*: the record it moves to exists already (PUT by tag writes it first), and
//!   a manifest's references count as long as it exists, so the links it needs are referenced by that record.
//! - *A mirrored manifest or tag copy the expiry condemned, pulled or fetched meanwhile*: the pull's write (its
//!   time, the mark cleared) is conditional on the version it read and the fetch's is a new record, so either the
//!   collector's conditional delete fails, or the collector deleted first and the pull's write fails (the pull
//!   still answers with what it read: immutable, verified bytes; the next pull fetches them again). The blobs stay
//!   referenced as long as the record or copy exists; a pull that finds their link marked revives it (and the
//!   record) before serving, and one that finds it gone fetches the blob again.
//! - *A manifest the policy condemned, pushed again or tagged meanwhile*: the PUT rewrites its record (fresh push
//!   time, no mark), so the collector's conditional delete fails; *an index naming a condemned child*: the index PUT
//!   revives the child after writing its own record ([`Registry::revive_manifest`]), with the same outcomes as for
//!   links — the collector's delete fails, or the index PUT finds the child gone and is refused.
//!
//! The grace period (`PIER_GC_GRACE_PERIOD`, default 6 h) adds time on top: a blob uploaded for a push that has not
//! sent its manifest yet stays at least that long unreferenced before it can go. `0` is allowed (tests); safety does
//! not depend on it.
//!
//! ## Bounded slices
//! [`Registry::gc_slice`] makes at most `max_calls` store calls and saves where it stopped in `_gc/state`, so on
//! Workers each cron run does one slice within the per-invocation subrequest limit and a cycle spans several runs.
//! The cycle's *referenced* set (one repository's) and *linked* set (the registry's distinct blobs) live in the state
//! record: about 80 bytes per distinct blob.

use super::blobs::{decode_link, encode_link, Tombstone};
use super::{keys, Registry};
use crate::error::{Error, Result};
use crate::spec::{Digest, RepositoryName};
use crate::storage::Precondition;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where a collection in progress stands.
pub const STATE_KEY: &str = "_gc/state";
/// The report of the last finished cycle.
pub const REPORT_KEY: &str = "_gc/last-report";
/// Default grace period (seconds).
pub const DEFAULT_GRACE_SECS: u64 = 6 * 3600;
/// Store calls one Workers cron slice may make (the Free plan allows 50 subrequests per invocation; the upload purge
/// and the state record take the rest).
pub const WORKERS_SLICE_CALLS: u64 = 30;
/// How long a runner holds the collection (a slice renews it).
const LEASE_SECS: u64 = 15 * 60;
/// Store calls one item may need at most (a link: read, compare-and-swap or delete; a record: read, mark, delete the
/// bytes, delete the record); a slice stops before an item that might not fit.
const ITEM_CALLS: u64 = 4;

/// How a collection runs.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Tombstones younger than this are not acted on (seconds).
    pub grace_secs: u64,
    /// Report what would go, change nothing (a whole cycle in memory; native only).
    pub dry_run: bool,
    /// Store calls one slice may make.
    pub max_calls: u64,
    /// Delete manifests that no tag reaches once they are older than this (seconds); `None` keeps them all.
    pub untagged_after_secs: Option<u64>,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions { grace_secs: DEFAULT_GRACE_SECS, dry_run: false, max_calls: u64::MAX, untagged_after_secs: None }
    }
}

/// What a cycle did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    pub cycle: u64,
    pub dry_run: bool,
    /// Unix seconds.
    pub started: u64,
    pub finished: u64,
    pub slices: u64,
    pub store_calls: u64,
    pub repositories: u64,
    pub manifests_marked: u64,
    pub tags_marked: u64,
    #[serde(default)]
    pub manifests_tombstoned: u64,
    #[serde(default)]
    pub manifests_deleted: u64,
    /// Mirrored repositories: tags whose cached copy expired, marked and deleted.
    #[serde(default)]
    pub tags_tombstoned: u64,
    #[serde(default)]
    pub tags_deleted: u64,
    pub links_kept: u64,
    pub links_tombstoned: u64,
    pub links_deleted: u64,
    pub blobs_kept: u64,
    pub blobs_tombstoned: u64,
    pub blobs_deleted: u64,
    pub bytes_reclaimed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Phase {
    NextRepository,
    MarkManifests,
    MarkTags,
    SweepManifests,
    SweepTags,
    SweepLinks,
    SweepRecords,
}

/// The persisted progress of a cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GcState {
    cycle: u64,
    phase: Phase,
    /// The repository being collected.
    repository: Option<String>,
    /// The last key handled in the current phase.
    cursor: Option<String>,
    referenced: BTreeSet<String>,
    linked: BTreeSet<String>,
    /// With an untagged-manifest policy: what the mark learned of each manifest of the repository, the digests its
    /// tags point at, and then the verdicts the manifest sweep carries out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    facts: BTreeMap<String, ManifestFacts>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    tagged: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    doomed: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    revive: BTreeSet<String>,
    /// In a mirrored repository: what the mark learned of each tag's cached copy, then the verdicts the tag sweep
    /// carries out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tag_facts: BTreeMap<String, TagFacts>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    doomed_tags: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    revive_tags: BTreeSet<String>,
    report: GcReport,
    /// The runner holding the collection, and until when.
    #[serde(default)]
    lease: Option<(String, u64)>,
}

/// What the untagged-manifest policy needs to know of one manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ManifestFacts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pushed: Option<u64>,
    /// Mirrored content: when it was last pulled or fetched (its record's and its tags' copies' latest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    marked: bool,
}

/// What the mirror's expiry needs to know of one tag's cached copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TagFacts {
    digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    used: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    marked: bool,
}

/// Which manifests a repository keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    /// Every one (the default for hosted repositories, and mirrored ones with `REGISTRY_PROXY_TTL=0`).
    KeepAll,
    /// Hosted repositories under `PIER_GC_UNTAGGED_AFTER`: see [`kept_manifests`].
    Untagged(u64),
    /// Mirrored repositories: content nobody pulled or fetched for this many seconds goes (see [`expiry_verdicts`]).
    Expire(u64),
}

/// The smallest member of `a` or `b` after `cursor` (the next item a sweep over both handles): a range lookup in each
/// set, not a scan of both per item.
fn next_after(a: &BTreeSet<String>, b: &BTreeSet<String>, cursor: Option<&str>) -> Option<String> {
    use std::ops::Bound::{Excluded, Unbounded};
    let after = |set: &BTreeSet<String>| match cursor {
        Some(c) => set.range::<str, _>((Excluded(c), Unbounded)).next().cloned(),
        None => set.first().cloned(),
    };
    match (after(a), after(b)) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}

/// The mirror's expiry: a tag's cached copy is kept while it was pulled or fetched within `ttl`; a manifest record
/// while it, or a tag's copy of it, was. Nothing reaches beyond that — an index's children are pulled (by digest)
/// for themselves, and a platform nobody pulls expires on its own; whatever expired is fetched again when asked for.
/// Content of unknown age is kept. Fills `doomed`/`revive` and `doomed_tags`/`revive_tags` from the mark's facts.
fn expiry_verdicts(state: &mut GcState, now: u64, ttl: u64) {
    let alive = |used: Option<u64>| used.is_none_or(|u| u.saturating_add(ttl) > now);
    for t in state.tag_facts.values() {
        if let Some(f) = state.facts.get_mut(&t.digest) {
            f.used = f.used.max(t.used);
        }
    }
    state.doomed = state.facts.iter().filter(|(_, f)| !alive(f.used)).map(|(d, _)| d.clone()).collect();
    state.revive = state.facts.iter().filter(|(_, f)| f.marked && alive(f.used)).map(|(d, _)| d.clone()).collect();
    state.doomed_tags = state.tag_facts.iter().filter(|(_, t)| !alive(t.used)).map(|(n, _)| n.clone()).collect();
    state.revive_tags = state.tag_facts.iter().filter(|(_, t)| t.marked && alive(t.used)).map(|(n, _)| n.clone()).collect();
    state.facts.clear();
    state.tag_facts.clear();
}

/// The manifests a repository keeps under the policy: those its tags point at and those younger than `after` (or of
/// unknown age), then everything they reach: an index's children, and referrers (signatures, SBOMs) of what is kept.
fn kept_manifests(facts: &BTreeMap<String, ManifestFacts>, tagged: &BTreeSet<String>, now: u64, after: u64) -> BTreeSet<String> {
    let mut kept: BTreeSet<String> = facts
        .iter()
        .filter(|(d, f)| tagged.contains(*d) || f.pushed.is_none_or(|p| p.saturating_add(after) > now))
        .map(|(d, _)| d.clone())
        .collect();
    loop {
        let mut more = Vec::new();
        for (d, f) in facts {
            if kept.contains(d) {
                more.extend(f.children.iter().filter(|c| !kept.contains(*c)).cloned());
            } else if f.subject.as_ref().is_some_and(|s| kept.contains(s)) {
                more.push(d.clone());
            }
        }
        if more.is_empty() {
            return kept;
        }
        kept.extend(more);
    }
}

/// What one slice did.
#[derive(Debug, Clone)]
pub struct GcProgress {
    /// The cycle finished in this slice (its report is `report`).
    pub cycle_done: bool,
    /// Another runner holds the collection: this slice did nothing.
    pub busy: bool,
    pub report: GcReport,
}

/// Every digest a manifest's JSON refers to (config, layers, blobs, manifests, subject), valid or not-yet-present
/// ones alike: the mark is conservative.
pub(super) fn referenced_digests(bytes: &[u8], out: &mut BTreeSet<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else { return };
    let mut add = |d: &serde_json::Value| {
        if let Some(s) = d.get("digest").and_then(|d| d.as_str()) {
            if let Ok(digest) = Digest::parse(s) {
                out.insert(digest.to_string());
            }
        }
    };
    for single in ["config", "subject"] {
        if let Some(d) = value.get(single) {
            add(d);
        }
    }
    for list in ["layers", "manifests", "blobs"] {
        if let Some(items) = value.get(list).and_then(|l| l.as_array()) {
            items.iter().for_each(&mut add);
        }
    }
}

/// The manifest bytes in a record or a tag value (a record copy: header line, newline, bytes; or a bare digest).
pub(super) fn record_bytes(raw: &[u8]) -> Option<&[u8]> {
    if raw.first() != Some(&b'{') {
        return None;
    }
    raw.iter().position(|&b| b == b'\n').map(|nl| &raw[nl + 1..])
}

/// What the policy needs from a manifest record: its children (an index's `manifests`), subject, push time and
/// whether the collector already marked it.
fn manifest_facts(raw: &[u8]) -> ManifestFacts {
    let Ok(record) = super::manifests::decode_record(Bytes::copy_from_slice(raw)) else { return ManifestFacts::default() };
    let mut children = Vec::new();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&record.bytes) {
        for item in v.get("manifests").and_then(|m| m.as_array()).into_iter().flatten() {
            if let Some(d) = item.get("digest").and_then(|d| d.as_str()).and_then(|d| Digest::parse(d).ok()) {
                children.push(d.to_string());
            }
        }
    }
    ManifestFacts {
        children,
        subject: record.header.subject.map(|s| s.to_string()),
        pushed: record.header.pushed,
        used: record.header.pulled.max(record.header.fetched),
        marked: record.header.gc.is_some(),
    }
}

/// What the mirror's expiry needs from a tag's value: a record copy's digest, last use and mark (`None` for a bare
/// digest from older data, which is never expired).
fn tag_facts(raw: &[u8]) -> Option<TagFacts> {
    if raw.first() != Some(&b'{') {
        return None;
    }
    let record = super::manifests::decode_record(Bytes::copy_from_slice(raw)).ok()?;
    Some(TagFacts {
        digest: record.header.digest?.to_string(),
        used: record.header.pulled.max(record.header.fetched),
        marked: record.header.gc.is_some(),
    })
}

/// The manifest digest a tag's value points at (a record copy's header, or a bare digest from older data).
fn tag_digest(raw: &[u8]) -> Option<String> {
    if raw.first() == Some(&b'{') {
        let record = super::manifests::decode_record(Bytes::copy_from_slice(raw)).ok()?;
        return record.header.digest.map(|d| d.to_string());
    }
    let s = std::str::from_utf8(raw).ok()?;
    Digest::parse(s.trim()).ok().map(|d| d.to_string())
}

/// `<alg>/<hex>` (a key's tail) as a digest string.
fn digest_of_tail(tail: &str) -> Option<String> {
    let (alg, hex) = tail.split_once('/')?;
    Digest::parse(&format!("{alg}:{hex}")).ok().map(|d| d.to_string())
}

struct Slice {
    left: u64,
    used: u64,
}

impl Slice {
    fn spend(&mut self, n: u64) {
        self.left = self.left.saturating_sub(n);
        self.used += n;
    }
    fn room_for(&self, n: u64) -> bool {
        self.left >= n
    }
}

impl Registry {
    /// The report of the last finished collection cycle, if any.
    pub async fn gc_last_report(&self) -> Result<Option<GcReport>> {
        match self.meta.get(REPORT_KEY).await? {
            None => Ok(None),
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(|e| Error::storage(format!("corrupt gc report: {e}"))),
        }
    }

    /// The cycle in progress, if any: `{cycle, phase, repository, started}`.
    pub async fn gc_in_progress(&self) -> Result<serde_json::Value> {
        let Some(raw) = self.meta.get(STATE_KEY).await? else { return Ok(serde_json::Value::Null) };
        let state: GcState = serde_json::from_slice(&raw).map_err(|e| Error::storage(format!("corrupt gc state: {e}")))?;
        Ok(serde_json::json!({
            "cycle": state.cycle,
            "phase": state.phase,
            "repository": state.repository,
            "started": state.report.started,
            "slices": state.report.slices,
        }))
    }

    /// Run one slice of garbage collection (see the module doc). A dry run does a whole cycle in memory.
    pub async fn gc_slice(&self, options: &GcOptions) -> Result<GcProgress> {
        let now = self.env.now_unix();
        let token = crate::spec::digest::to_hex(&self.env.random_bytes());
        // A dry run keeps no state between slices, so it does its whole cycle in one.
        let budget = if options.dry_run { u64::MAX } else { options.max_calls };
        let mut slice = Slice { left: budget.saturating_sub(2), used: 2 };
        let stored = if options.dry_run { None } else { self.meta.get_versioned(STATE_KEY).await? };
        let (mut state, version) = match stored {
            Some(v) => {
                let state: GcState = serde_json::from_slice(&v.value).map_err(|e| Error::storage(format!("corrupt gc state: {e}")))?;
                (state, Some(v.version))
            }
            None => {
                let last = if options.dry_run { 0 } else { self.gc_last_report().await?.map_or(0, |r| r.cycle) };
                let report = GcReport { cycle: last + 1, dry_run: options.dry_run, started: now, ..GcReport::default() };
                let state = GcState {
                    cycle: last + 1,
                    phase: Phase::NextRepository,
                    repository: None,
                    cursor: None,
                    referenced: BTreeSet::new(),
                    linked: BTreeSet::new(),
                    facts: BTreeMap::new(),
                    tagged: BTreeSet::new(),
                    doomed: BTreeSet::new(),
                    revive: BTreeSet::new(),
                    tag_facts: BTreeMap::new(),
                    doomed_tags: BTreeSet::new(),
                    revive_tags: BTreeSet::new(),
                    report,
                    lease: None,
                };
                (state, None)
            }
        };
        if let Some((holder, until)) = &state.lease {
            if *holder != token && *until > now {
                return Ok(GcProgress { cycle_done: false, busy: true, report: state.report });
            }
        }
        // Take the lease: of two runners that read the same state, one wins this write.
        let mut version = version;
        if !options.dry_run {
            state.lease = Some((token.clone(), now + LEASE_SECS));
            let condition = version.map_or(Precondition::Absent, Precondition::Version);
            match self.meta.put_if(STATE_KEY, encode_state(&state)?, &condition).await? {
                Some(v) => version = Some(v),
                None => return Ok(GcProgress { cycle_done: false, busy: true, report: state.report }),
            }
        }
        state.report.slices += 1;

        let done = self.gc_run(&mut state, options, &mut slice).await?;
        state.report.store_calls += slice.used;
        if options.dry_run {
            state.report.finished = self.env.now_unix();
            return Ok(GcProgress { cycle_done: true, busy: false, report: state.report });
        }
        let version = version.unwrap_or_default();
        if done {
            state.report.finished = self.env.now_unix();
            let report = serde_json::to_vec(&state.report).map_err(|e| Error::storage(e.to_string()))?;
            self.meta.put(REPORT_KEY, Bytes::from(report)).await?;
            // The next slice starts the next cycle; a runner whose lease was taken over leaves the state alone.
            self.meta.delete_if(STATE_KEY, &version).await?;
        } else {
            state.lease = None;
            if self.meta.put_if(STATE_KEY, encode_state(&state)?, &Precondition::Version(version)).await?.is_none() {
                self.env.log_error("garbage collection: another runner took over this cycle; this slice's progress is not saved");
            }
        }
        Ok(GcProgress { cycle_done: done, busy: false, report: state.report })
    }

    /// Advance `state` within the slice's budget; `true` when the cycle is finished.
    async fn gc_run(&self, state: &mut GcState, options: &GcOptions, slice: &mut Slice) -> Result<bool> {
        let page_size = |slice: &Slice| (slice.left / ITEM_CALLS).clamp(1, 100) as usize;
        loop {
            if !slice.room_for(ITEM_CALLS + 1) {
                return Ok(false);
            }
            match state.phase {
                Phase::NextRepository => {
                    let after = state.repository.as_ref().map(|r| format!("{}{r}", keys::CATALOG_PREFIX));
                    let page = self.meta.list(keys::CATALOG_PREFIX, after.as_deref(), 1).await?;
                    slice.spend(1);
                    match page.first().and_then(|k| k.strip_prefix(keys::CATALOG_PREFIX)) {
                        Some(name) => {
                            state.repository = Some(name.to_string());
                            state.phase = Phase::MarkManifests;
                            state.cursor = None;
                            state.referenced.clear();
                            state.report.repositories += 1;
                        }
                        None => {
                            state.phase = Phase::SweepRecords;
                            state.cursor = None;
                        }
                    }
                }
                Phase::MarkManifests | Phase::MarkTags => {
                    let name = self.gc_repository(state)?;
                    let policy = self.gc_policy(options, &name);
                    let prefix = match state.phase {
                        Phase::MarkManifests => format!("repositories/{name}/_manifests/"),
                        _ => keys::tags_prefix(&name),
                    };
                    let page = self.meta.list(&prefix, state.cursor.as_deref(), page_size(slice)).await?;
                    slice.spend(1);
                    if page.is_empty() {
                        state.cursor = None;
                        state.phase = match state.phase {
                            Phase::MarkManifests => Phase::MarkTags,
                            _ => match policy {
                                Policy::Untagged(after) => {
                                    let kept = kept_manifests(&state.facts, &state.tagged, self.env.now_unix(), after);
                                    state.doomed = state.facts.keys().filter(|d| !kept.contains(*d)).cloned().collect();
                                    state.revive = state.facts.iter().filter(|(d, f)| f.marked && kept.contains(*d)).map(|(d, _)| d.clone()).collect();
                                    state.facts.clear();
                                    state.tagged.clear();
                                    Phase::SweepManifests
                                }
                                Policy::Expire(ttl) => {
                                    expiry_verdicts(state, self.env.now_unix(), ttl);
                                    Phase::SweepManifests
                                }
                                Policy::KeepAll => Phase::SweepLinks,
                            },
                        };
                        continue;
                    }
                    for key in page {
                        if !slice.room_for(2) {
                            return Ok(false);
                        }
                        // Fresh from the store, never a cached copy: the facts read here (marks, push times) decide deletes.
                        let raw = self.meta.get_versioned(&key).await?.map(|v| v.value);
                        slice.spend(1);
                        if let Some(raw) = raw {
                            // Every record and tag counts, marked or not: a manifest's references count until it is
                            // actually gone.
                            if let Some(bytes) = record_bytes(&raw) {
                                referenced_digests(bytes, &mut state.referenced);
                            }
                            // (A tag from before tags held record copies names its manifest, which is kept anyway.)
                            if state.phase == Phase::MarkManifests {
                                state.report.manifests_marked += 1;
                                if policy != Policy::KeepAll {
                                    if let Some(digest) = key.strip_prefix(&prefix).and_then(digest_of_tail) {
                                        state.facts.insert(digest, manifest_facts(&raw));
                                    }
                                }
                            } else {
                                state.report.tags_marked += 1;
                                match policy {
                                    Policy::Untagged(_) => {
                                        if let Some(digest) = tag_digest(&raw) {
                                            state.tagged.insert(digest);
                                        }
                                    }
                                    Policy::Expire(_) => {
                                        if let (Some(tag), Some(facts)) = (key.strip_prefix(&prefix), tag_facts(&raw)) {
                                            state.tag_facts.insert(tag.to_string(), facts);
                                        }
                                    }
                                    Policy::KeepAll => {}
                                }
                            }
                        }
                        state.cursor = Some(key);
                    }
                }
                Phase::SweepManifests => {
                    let name = self.gc_repository(state)?;
                    let next = next_after(&state.doomed, &state.revive, state.cursor.as_deref());
                    let Some(digest) = next else {
                        state.doomed.clear();
                        state.revive.clear();
                        state.phase = Phase::SweepTags;
                        state.cursor = None;
                        continue;
                    };
                    self.gc_manifest(state, options, slice, &name, &digest).await?;
                    state.cursor = Some(digest);
                }
                Phase::SweepTags => {
                    let name = self.gc_repository(state)?;
                    let next = next_after(&state.doomed_tags, &state.revive_tags, state.cursor.as_deref());
                    let Some(tag) = next else {
                        state.doomed_tags.clear();
                        state.revive_tags.clear();
                        state.phase = Phase::SweepLinks;
                        state.cursor = None;
                        continue;
                    };
                    self.gc_tag(state, options, slice, &name, &tag).await?;
                    state.cursor = Some(tag);
                }
                Phase::SweepLinks => {
                    let name = self.gc_repository(state)?;
                    let prefix = format!("repositories/{name}/_blobs/");
                    let page = self.meta.list(&prefix, state.cursor.as_deref(), page_size(slice)).await?;
                    slice.spend(1);
                    if page.is_empty() {
                        state.phase = Phase::NextRepository;
                        state.cursor = None;
                        continue;
                    }
                    for key in page {
                        if !slice.room_for(ITEM_CALLS) {
                            return Ok(false);
                        }
                        if let Some(digest) = key.strip_prefix(&prefix).and_then(digest_of_tail) {
                            self.gc_link(state, options, slice, &key, digest).await?;
                        }
                        state.cursor = Some(key);
                    }
                }
                Phase::SweepRecords => {
                    let prefix = "_blobs/";
                    let page = self.meta.list(prefix, state.cursor.as_deref(), page_size(slice)).await?;
                    slice.spend(1);
                    if page.is_empty() {
                        return Ok(true);
                    }
                    for key in page {
                        if !slice.room_for(ITEM_CALLS) {
                            return Ok(false);
                        }
                        if let Some(digest) = key.strip_prefix(prefix).and_then(digest_of_tail) {
                            self.gc_record(state, options, slice, &key, &digest).await?;
                        }
                        state.cursor = Some(key);
                    }
                }
            }
        }
    }

    fn gc_repository(&self, state: &GcState) -> Result<RepositoryName> {
        let name = state.repository.as_deref().ok_or_else(|| Error::storage("gc state without a repository"))?;
        RepositoryName::parse(name).map_err(|_| Error::storage(format!("gc state names an invalid repository {name:?}")))
    }

    /// Which manifests repository `name` keeps: a mirrored repository's follow the mirror's expiry (the untagged
    /// policy is for hosted repositories: what a mirror holds is what clients pulled); a hosted one's the untagged
    /// policy, if any.
    fn gc_policy(&self, options: &GcOptions, name: &RepositoryName) -> Policy {
        match self.config.mirror.as_ref().filter(|m| m.route(name.as_str()).is_some()) {
            Some(m) => m.expiry_for(name.as_str()).map_or(Policy::KeepAll, Policy::Expire),
            None => options.untagged_after_secs.map_or(Policy::KeepAll, Policy::Untagged),
        }
    }

    /// Carry out a verdict on the manifest record (or a tag's copy of one) under `key`: clear the mark of one that is
    /// kept again (`revive`), or else mark it, or delete it (a mark from an earlier cycle, older than the grace
    /// period). Every change is conditional on the version read, so a push that rewrote the record (a tag PUT), a
    /// pull that noted its time or a fetch that rewrote it (mirror), or an index PUT that revived it, wins.
    async fn sweep_record(&self, state: &GcState, options: &GcOptions, slice: &mut Slice, key: &str, revive: bool) -> Result<RecordSweep> {
        let now = self.env.now_unix();
        slice.spend(1);
        let Some(v) = self.meta.get_versioned(key).await? else { return Ok(RecordSweep::Unchanged) };
        if v.value.first() != Some(&b'{') {
            // A bare digest (a tag from older data): nothing to mark.
            return Ok(RecordSweep::Unchanged);
        }
        let mut record = super::manifests::decode_record(v.value)?;
        if revive {
            if record.header.gc.is_some() && !options.dry_run {
                record.header.gc = None;
                slice.spend(1);
                let live = super::manifests::encode_record(&record.header, &record.bytes)?;
                self.meta.put_if(key, live, &Precondition::Version(v.version)).await?;
            }
            return Ok(RecordSweep::Unchanged);
        }
        if options.dry_run {
            return Ok(RecordSweep::Deleted(record.header));
        }
        match &record.header.gc {
            Some(t) if t.cycle < state.cycle && t.at.saturating_add(options.grace_secs) <= now => {
                slice.spend(1);
                if self.meta.delete_if(key, &v.version).await? {
                    return Ok(RecordSweep::Deleted(record.header));
                }
            }
            Some(_) => {}
            None => {
                record.header.gc = Some(Tombstone { cycle: state.cycle, at: now, deleting: false });
                slice.spend(1);
                let marked = super::manifests::encode_record(&record.header, &record.bytes)?;
                if self.meta.put_if(key, marked, &Precondition::Version(v.version)).await?.is_some() {
                    return Ok(RecordSweep::Tombstoned);
                }
            }
        }
        Ok(RecordSweep::Unchanged)
    }

    /// Carry out the policy's verdict on one manifest of the repository being collected (see [`Self::sweep_record`]);
    /// a deleted referrer leaves its subject's referrers list too.
    async fn gc_manifest(&self, state: &mut GcState, options: &GcOptions, slice: &mut Slice, name: &RepositoryName, digest: &str) -> Result<()> {
        let Ok(parsed) = Digest::parse(digest) else { return Ok(()) };
        let key = keys::manifest(name, &parsed);
        match self.sweep_record(state, options, slice, &key, state.revive.contains(digest)).await? {
            RecordSweep::Deleted(header) => {
                state.report.manifests_deleted += 1;
                if let (Some(subject), false) = (&header.subject, options.dry_run) {
                    slice.spend(1);
                    self.meta.delete(&keys::referrer(name, subject, &parsed)).await?;
                }
            }
            RecordSweep::Tombstoned => state.report.manifests_tombstoned += 1,
            RecordSweep::Unchanged => {}
        }
        Ok(())
    }

    /// Carry out the mirror's verdict on one tag's cached copy (see [`Self::sweep_record`]). The tag's reverse-index
    /// entry stays: an entry only says "look at this tag", and mirrored repositories take no deletes by digest.
    async fn gc_tag(&self, state: &mut GcState, options: &GcOptions, slice: &mut Slice, name: &RepositoryName, tag: &str) -> Result<()> {
        let Ok(parsed) = crate::spec::Tag::parse(tag) else { return Ok(()) };
        let key = keys::tag(name, &parsed);
        match self.sweep_record(state, options, slice, &key, state.revive_tags.contains(tag)).await? {
            RecordSweep::Deleted(_) => state.report.tags_deleted += 1,
            RecordSweep::Tombstoned => state.report.tags_tombstoned += 1,
            RecordSweep::Unchanged => {}
        }
        Ok(())
    }

    /// Sweep one blob link of the repository being collected.
    async fn gc_link(&self, state: &mut GcState, options: &GcOptions, slice: &mut Slice, key: &str, digest: String) -> Result<()> {
        let now = self.env.now_unix();
        let Some(v) = self.meta.get_versioned(key).await? else {
            slice.spend(1);
            return Ok(());
        };
        slice.spend(1);
        let link = decode_link(&v.value)?;
        if state.referenced.contains(&digest) {
            state.report.links_kept += 1;
            state.linked.insert(digest);
            if link.gc.is_some() && !options.dry_run {
                slice.spend(1);
                self.meta.put_if(key, encode_link(&link.live())?, &Precondition::Version(v.version)).await?;
            }
            return Ok(());
        }
        let ripe = link.gc.as_ref().is_some_and(|t| t.cycle < state.cycle && t.at.saturating_add(options.grace_secs) <= now);
        if options.dry_run {
            // What a collection would remove: every unreferenced link (after its tombstone has aged).
            state.report.links_deleted += 1;
            return Ok(());
        }
        if ripe {
            slice.spend(1);
            if self.meta.delete_if(key, &v.version).await? {
                state.report.links_deleted += 1;
                return Ok(());
            }
            // Changed since it was read (revived, relinked): it stays, and counts as linked.
            state.linked.insert(digest);
            return Ok(());
        }
        state.linked.insert(digest);
        if link.gc.is_none() {
            let marked = super::blobs::BlobLink { gc: Some(Tombstone { cycle: state.cycle, at: now, deleting: false }), ..link };
            slice.spend(1);
            if self.meta.put_if(key, encode_link(&marked)?, &Precondition::Version(v.version)).await?.is_some() {
                state.report.links_tombstoned += 1;
            }
        }
        Ok(())
    }

    /// Sweep one global blob record.
    async fn gc_record(&self, state: &mut GcState, options: &GcOptions, slice: &mut Slice, key: &str, digest: &str) -> Result<()> {
        let now = self.env.now_unix();
        let Some(v) = self.meta.get_versioned(key).await? else {
            slice.spend(1);
            return Ok(());
        };
        slice.spend(1);
        let record = decode_link(&v.value)?;
        if state.linked.contains(digest) {
            state.report.blobs_kept += 1;
            if record.gc.as_ref().is_some_and(|t| !t.deleting) && !options.dry_run {
                slice.spend(1);
                self.meta.put_if(key, encode_link(&record.live())?, &Precondition::Version(v.version)).await?;
            }
            return Ok(());
        }
        if options.dry_run {
            state.report.blobs_deleted += 1;
            state.report.bytes_reclaimed += record.size;
            return Ok(());
        }
        let parsed = Digest::parse(digest).map_err(|_| Error::storage(format!("gc: bad digest {digest}")))?;
        let data_key = record.data_key(&parsed);
        let deleting_version = match &record.gc {
            // A slice that stopped half-way through a deletion: finish it.
            Some(t) if t.deleting => v.version,
            Some(t) if t.cycle < state.cycle && t.at.saturating_add(options.grace_secs) <= now => {
                let mark = Tombstone { deleting: true, ..t.clone() };
                let deleting = super::blobs::BlobLink { gc: Some(mark), ..record.clone() };
                slice.spend(1);
                match self.meta.put_if(key, encode_link(&deleting)?, &Precondition::Version(v.version)).await? {
                    Some(version) => version,
                    // Revived meanwhile: it stays.
                    None => return Ok(()),
                }
            }
            Some(_) => return Ok(()),
            None => {
                let marked = super::blobs::BlobLink { gc: Some(Tombstone { cycle: state.cycle, at: now, deleting: false }), ..record };
                slice.spend(1);
                if self.meta.put_if(key, encode_link(&marked)?, &Precondition::Version(v.version)).await?.is_some() {
                    state.report.blobs_tombstoned += 1;
                }
                return Ok(());
            }
        };
        // Bytes first, the record last: while the record says `deleting`, nobody links to it or writes its key.
        slice.spend(2);
        self.objects.delete(&data_key).await?;
        if self.meta.delete_if(key, &deleting_version).await? {
            state.report.blobs_deleted += 1;
            state.report.bytes_reclaimed += record.size;
        }
        Ok(())
    }
}

/// What [`Registry::sweep_record`] did.
enum RecordSweep {
    /// Deleted (or, in a dry run, would be): the header it had.
    Deleted(super::manifests::RecordHeader),
    Tombstoned,
    /// Kept, revived, already marked, or changed meanwhile.
    Unchanged,
}

fn encode_state(state: &GcState) -> Result<Bytes> {
    serde_json::to_vec(state).map(Bytes::from).map_err(|e| Error::storage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_descriptor_is_referenced() {
        let m = br#"{"schemaVersion":2,"config":{"digest":"sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"},
            "layers":[{"digest":"sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","urls":["https://x"]}],
            "subject":{"digest":"sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"},
            "manifests":[{"digest":"sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"}, {"digest":"bad"}]}"#;
        let mut out = BTreeSet::new();
        referenced_digests(m, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(record_bytes(b"{\"h\":1}\n{}"), Some(&b"{}"[..]));
        assert_eq!(record_bytes(b"sha256:abc"), None);
        assert_eq!(digest_of_tail(&format!("sha256/{}", "a".repeat(64))), Some(format!("sha256:{}", "a".repeat(64))));
    }
}
