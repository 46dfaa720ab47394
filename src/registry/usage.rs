//! The storage report (`pier du`, `GET /admin/du`): per repository the bytes its manifests and tags reference and the
//! bytes only it references, and the registry's totals. Read-only, and a full scan: its cost grows with the registry
//! (one read per manifest, tag and blob link), which suits the native command and occasional admin calls on small
//! registries, not a cron slice.

use super::blobs::decode_link;
use super::gc::{record_bytes, referenced_digests};
use super::{keys, Registry};
use crate::error::Result;
use crate::spec::RepositoryName;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One repository's line of the report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RepositoryUsage {
    pub name: String,
    pub manifests: u64,
    pub tags: u64,
    /// Distinct blobs its manifests and tags reference (and it links).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of the blobs no other repository references: what deleting this repository would give back.
    pub exclusive_bytes: u64,
}

/// The whole report.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StorageUsage {
    pub repositories: Vec<RepositoryUsage>,
    /// Distinct blobs referenced anywhere, and their bytes (shared blobs counted once).
    pub referenced_blobs: u64,
    pub referenced_bytes: u64,
    /// Blobs stored (global records), and their bytes: the difference is what collection can give back.
    pub stored_blobs: u64,
    pub stored_bytes: u64,
}

async fn all_keys(reg: &Registry, prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = reg.meta.list(prefix, after.as_deref(), 1000).await?;
        let Some(last) = page.last().cloned() else { return Ok(out) };
        out.extend(page);
        after = Some(last);
    }
}

impl Registry {
    /// Compute the storage report.
    pub async fn storage_usage(&self) -> Result<StorageUsage> {
        let mut usage = StorageUsage::default();
        // digest → (size, repositories referencing it)
        let mut blobs: BTreeMap<String, (u64, BTreeSet<String>)> = BTreeMap::new();
        let mut per_repo: Vec<(RepositoryUsage, BTreeSet<String>)> = Vec::new();
        for entry in all_keys(self, keys::CATALOG_PREFIX).await? {
            let Some(Ok(name)) = entry.strip_prefix(keys::CATALOG_PREFIX).map(RepositoryName::parse) else { continue };
            let mut line = RepositoryUsage { name: name.to_string(), ..RepositoryUsage::default() };
            let mut referenced = BTreeSet::new();
            for (prefix, is_tag) in [(format!("repositories/{name}/_manifests/"), false), (keys::tags_prefix(&name), true)] {
                for key in all_keys(self, &prefix).await? {
                    let Some(raw) = self.meta.get(&key).await? else { continue };
                    if let Some(bytes) = record_bytes(&raw) {
                        referenced_digests(bytes, &mut referenced);
                    }
                    if is_tag {
                        line.tags += 1;
                    } else {
                        line.manifests += 1;
                    }
                }
            }
            let mut linked = BTreeSet::new();
            for digest in &referenced {
                let Ok(d) = crate::spec::Digest::parse(digest) else { continue };
                if let Some(link) = self.blob_link(&name, &d).await? {
                    let entry = blobs.entry(digest.clone()).or_insert((link.size, BTreeSet::new()));
                    entry.1.insert(line.name.clone());
                    linked.insert(digest.clone());
                }
            }
            per_repo.push((line, linked));
        }
        for (mut line, linked) in per_repo {
            for digest in &linked {
                if let Some((size, users)) = blobs.get(digest) {
                    line.blobs += 1;
                    line.bytes += size;
                    if users.len() == 1 {
                        line.exclusive_bytes += size;
                    }
                }
            }
            usage.repositories.push(line);
        }
        usage.referenced_blobs = blobs.len() as u64;
        usage.referenced_bytes = blobs.values().map(|(s, _)| s).sum();
        for key in all_keys(self, "_blobs/").await? {
            if let Some(raw) = self.meta.get(&key).await? {
                if let Ok(record) = decode_link(&raw) {
                    usage.stored_blobs += 1;
                    usage.stored_bytes += record.size;
                }
            }
        }
        Ok(usage)
    }
}
