//! What the web UI's pages show, read from the registry's stores, and the pure parsers that turn stored manifests and
//! image configs into it. Every page reads a bounded number of keys, whatever the registry's size (the Workers Free
//! plan allows 50 subrequests per invocation):
//!
//! - repositories (`/`): the catalog is listed in batches of [`SCAN_BATCH`] names, at most [`SCAN_CALLS`] list calls
//!   per request, filtered by the search text (a substring) and by what the viewer may pull, until
//!   [`REPOS_PER_PAGE`] match; a search that has not filled its page when the budget runs out offers to continue
//!   from where it stopped. Then two calls per repository shown: its catalog entry (last push, kept by pushes at a
//!   minute's resolution, see `manifests::CatalogEntry`) and one list of its tags (the count, shown as "1000+"
//!   beyond [`TAG_COUNT_LIMIT`]). At most 5 + 2 × 20 = 45 store calls; searching 100,000 names takes 20 pages.
//! - a repository: its catalog entry, one list call and one read per tag on the page ([`TAGS_PER_PAGE`]): a tag's
//!   value is a copy of its manifest record, so media type, sizes, platforms and push time need nothing more.
//! - a manifest: its record (through the tag or by digest), the image config blob (one link read and one object
//!   read, at most [`MAX_CONFIG_BYTES`]), one list call and one read per referrer shown ([`REFERRERS_SHOWN`]).

use crate::auth::{Access, Actions};
use crate::error::{Error, Result};
use crate::registry::keys;
use crate::registry::manifests::{tag_target, CatalogEntry, TagTarget};
use crate::registry::Registry;
use crate::spec::manifest::Descriptor;
use crate::spec::media_types::is_index;
use crate::spec::{Digest, Reference, RepositoryName};
use futures::future::try_join_all;
use futures::StreamExt;
use serde_json::Value;

/// Repositories per page of the repository list.
pub const REPOS_PER_PAGE: usize = 20;
/// Catalog names per list call while searching.
pub const SCAN_BATCH: usize = 1000;
/// List calls one repository-list request may make.
pub const SCAN_CALLS: usize = 5;
/// Tags counted per repository on the repository list.
pub const TAG_COUNT_LIMIT: usize = 1000;
/// Tags per page of a repository.
pub const TAGS_PER_PAGE: usize = 30;
/// Referrers shown on a manifest page.
pub const REFERRERS_SHOWN: usize = 32;
/// Largest image config read for a manifest page.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Media types of image configs the manifest page knows how to read.
const IMAGE_CONFIG_TYPES: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// One line of the repository list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSummary {
    pub name: String,
    pub tags: usize,
    /// More tags than [`TAG_COUNT_LIMIT`].
    pub more_tags: bool,
    pub pushed: Option<u64>,
}

/// One page of the repository list.
#[derive(Debug, Clone, Default)]
pub struct CatalogPage {
    pub repos: Vec<RepoSummary>,
    /// Where the next page starts (after this name), if there may be more.
    pub next: Option<String>,
    /// The scan budget ran out before the page filled: `next` continues the search.
    pub partial: bool,
}

/// A descriptor as the pages show it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desc {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    pub artifact_type: Option<String>,
    /// `org.opencontainers.image.title` (oras file names).
    pub title: Option<String>,
    /// `os/architecture[/variant]` of an index entry.
    pub platform: Option<String>,
}

/// A manifest's content, as far as the pages need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestSummary {
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub config: Option<Desc>,
    pub layers: Vec<Desc>,
    /// An index's manifests.
    pub manifests: Vec<Desc>,
    pub subject: Option<String>,
    pub annotations: Vec<(String, String)>,
}

impl ManifestSummary {
    /// Whether it is an index (or Docker manifest list).
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type) || !self.manifests.is_empty()
    }

    /// Config plus layers (an image's download size); `None` for an index.
    pub fn total_size(&self) -> Option<u64> {
        (!self.is_index()).then(|| self.config.as_ref().map_or(0, |c| c.size) + self.layers.iter().map(|l| l.size).sum::<u64>())
    }

    /// The platforms of an index's entries (attestation entries, `unknown/unknown`, left out).
    pub fn platforms(&self) -> Vec<String> {
        self.manifests.iter().filter_map(|m| m.platform.clone()).filter(|p| p != "unknown/unknown").collect()
    }
}

/// One tag of a repository page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagRow {
    pub tag: String,
    pub digest: String,
    pub pushed: Option<u64>,
    pub manifest: ManifestSummary,
}

/// One page of a repository's tags.
#[derive(Debug, Clone, Default)]
pub struct TagsPage {
    pub pushed: Option<u64>,
    pub tags: Vec<TagRow>,
    pub next: Option<String>,
}

/// What an image config says (the fields the manifest page shows).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub platform: Option<String>,
    pub created: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub labels: Vec<(String, String)>,
    /// (created_by, empty_layer)
    pub history: Vec<(String, bool)>,
}

/// Everything a manifest page shows.
#[derive(Debug, Clone, Default)]
pub struct ManifestPage {
    pub digest: String,
    pub pushed: Option<u64>,
    pub bytes: u64,
    pub manifest: ManifestSummary,
    pub config: Option<ImageConfig>,
    pub referrers: Vec<Desc>,
    pub more_referrers: bool,
    /// The manifest itself, pretty-printed.
    pub pretty: String,
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v.and_then(Value::as_array).map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
}

fn platform_of(v: &Value) -> Option<String> {
    let os = v.get("os").and_then(Value::as_str)?;
    let arch = v.get("architecture").and_then(Value::as_str)?;
    Some(match v.get("variant").and_then(Value::as_str) {
        Some(variant) if !variant.is_empty() => format!("{os}/{arch}/{variant}"),
        _ => format!("{os}/{arch}"),
    })
}

fn desc(v: &Value) -> Option<Desc> {
    Some(Desc {
        media_type: text(v, "mediaType").unwrap_or_default(),
        digest: text(v, "digest")?,
        size: v.get("size").and_then(Value::as_u64).unwrap_or(0),
        artifact_type: text(v, "artifactType"),
        title: v.get("annotations").and_then(|a| a.get("org.opencontainers.image.title")).and_then(Value::as_str).map(str::to_string),
        platform: v.get("platform").and_then(platform_of),
    })
}

fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    let Some(map) = v.and_then(Value::as_object) else { return Vec::new() };
    map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
}

/// Summarise stored manifest bytes (already validated at push; anything unreadable just shows less).
pub fn summarize_manifest(bytes: &[u8], media_type: &str) -> ManifestSummary {
    let v: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let list = |key: &str| v.get(key).and_then(Value::as_array).map(|a| a.iter().filter_map(desc).collect()).unwrap_or_default();
    ManifestSummary {
        media_type: media_type.to_string(),
        artifact_type: text(&v, "artifactType"),
        config: v.get("config").and_then(desc),
        layers: list("layers"),
        manifests: list("manifests"),
        subject: v.get("subject").and_then(|s| text(s, "digest")),
        annotations: pairs(v.get("annotations")),
    }
}

/// Read the fields the manifest page shows from an image config (OCI or Docker).
pub fn parse_image_config(bytes: &[u8]) -> Option<ImageConfig> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let c = v.get("config").or_else(|| v.get("container_config")).cloned().unwrap_or(Value::Null);
    let mut exposed_ports: Vec<String> = c.get("ExposedPorts").and_then(Value::as_object).map(|m| m.keys().cloned().collect()).unwrap_or_default();
    exposed_ports.sort();
    let history = v
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .map(|e| {
                    let by = text(e, "created_by").or_else(|| text(e, "comment")).unwrap_or_default();
                    (by, e.get("empty_layer").and_then(Value::as_bool).unwrap_or(false))
                })
                .collect()
        })
        .unwrap_or_default();
    Some(ImageConfig {
        platform: platform_of(&v),
        created: text(&v, "created"),
        entrypoint: strings(c.get("Entrypoint")),
        cmd: strings(c.get("Cmd")),
        working_dir: text(&c, "WorkingDir").filter(|s| !s.is_empty()),
        user: text(&c, "User").filter(|s| !s.is_empty()),
        env: strings(c.get("Env")).unwrap_or_default(),
        exposed_ports,
        labels: pairs(c.get("Labels")),
        history,
    })
}

fn storage(e: serde_json::Error) -> Error {
    Error::storage(format!("corrupt referrer: {e}"))
}

impl Registry {
    /// One page of the repositories `access` may pull whose names contain `query`, starting after `after`.
    pub(crate) async fn ui_catalog(&self, access: &Access<'_>, query: &str, after: Option<&str>) -> Result<CatalogPage> {
        let needle = query.trim().to_ascii_lowercase();
        let mut cursor = after.map(|a| format!("{}{a}", keys::CATALOG_PREFIX));
        let mut page = CatalogPage::default();
        let mut names: Vec<RepositoryName> = Vec::new();
        'scan: for call in 0..SCAN_CALLS {
            let batch = self.meta.list(keys::CATALOG_PREFIX, cursor.as_deref(), SCAN_BATCH).await?;
            for key in &batch {
                let Some(Ok(name)) = key.strip_prefix(keys::CATALOG_PREFIX).map(RepositoryName::parse) else { continue };
                if name.as_str().contains(&needle) && access.allows(&name, Actions::PULL) {
                    if names.len() == REPOS_PER_PAGE {
                        page.next = names.last().map(|n| n.to_string());
                        break 'scan;
                    }
                    names.push(name);
                }
            }
            if batch.len() < SCAN_BATCH {
                break;
            }
            cursor = batch.last().cloned();
            if call + 1 == SCAN_CALLS {
                page.next = cursor.as_deref().and_then(|c| c.strip_prefix(keys::CATALOG_PREFIX)).map(str::to_string);
                page.partial = names.len() < REPOS_PER_PAGE;
            }
        }
        let summaries = names.iter().map(|name| async move {
            let entry = self.meta.get(&keys::catalog(name)).await?;
            let tags = self.meta.list(&keys::tags_prefix(name), None, TAG_COUNT_LIMIT + 1).await?;
            Ok::<_, Error>(RepoSummary {
                name: name.to_string(),
                tags: tags.len().min(TAG_COUNT_LIMIT),
                more_tags: tags.len() > TAG_COUNT_LIMIT,
                pushed: entry.and_then(|e| CatalogEntry::decode(&e).pushed),
            })
        });
        page.repos = try_join_all(summaries).await?;
        Ok(page)
    }

    /// One page of a repository's tags, after `after`; `None` when the repository does not exist.
    pub(crate) async fn ui_tags(&self, name: &RepositoryName, after: Option<&str>) -> Result<Option<TagsPage>> {
        let Some(entry) = self.meta.get(&keys::catalog(name)).await? else { return Ok(None) };
        let prefix = keys::tags_prefix(name);
        let start = after.map(|a| format!("{prefix}{a}"));
        let mut listed = self.meta.list(&prefix, start.as_deref(), TAGS_PER_PAGE + 1).await?;
        let more = listed.len() > TAGS_PER_PAGE;
        listed.truncate(TAGS_PER_PAGE);
        let prefix_ref = prefix.as_str();
        let reads = listed.iter().map(|key| async move {
            let Some(raw) = self.meta.get(key).await? else { return Ok::<_, Error>(None) };
            let tag = key.strip_prefix(prefix_ref).unwrap_or(key).to_string();
            let (digest, record) = match tag_target(&raw)? {
                TagTarget::Record(digest, record) => (digest, Some(*record)),
                // A tag from before tags held a copy of their record: one more read.
                TagTarget::Digest(digest) => {
                    let record = self.manifest_record(name, &digest).await?;
                    (digest, record)
                }
            };
            let Some(record) = record else { return Ok(None) };
            Ok(Some(TagRow {
                tag,
                digest: digest.to_string(),
                pushed: record.header.pushed,
                manifest: summarize_manifest(&record.bytes, &record.header.media_type),
            }))
        });
        let tags: Vec<TagRow> = try_join_all(reads).await?.into_iter().flatten().collect();
        let next = if more { listed.last().and_then(|k| k.strip_prefix(&prefix)).map(str::to_string) } else { None };
        Ok(Some(TagsPage { pushed: CatalogEntry::decode(&entry).pushed, tags, next }))
    }

    /// Everything the page of manifest `reference` in `name` shows; `MANIFEST_UNKNOWN` when there is none.
    pub(crate) async fn ui_manifest(&self, name: &RepositoryName, reference: &Reference) -> Result<ManifestPage> {
        let (digest, record) = self.resolve(name, reference).await?;
        let manifest = summarize_manifest(&record.bytes, &record.header.media_type);
        let config = match &manifest.config {
            Some(c) if IMAGE_CONFIG_TYPES.contains(&c.media_type.as_str()) => match Digest::parse(&c.digest) {
                Ok(d) => self.read_small_blob(name, &d).await?.and_then(|b| parse_image_config(&b)),
                Err(_) => None,
            },
            _ => None,
        };
        let prefix = keys::referrers_prefix(name, &digest);
        let mut listed = self.meta.list(&prefix, None, REFERRERS_SHOWN + 1).await?;
        let more_referrers = listed.len() > REFERRERS_SHOWN;
        listed.truncate(REFERRERS_SHOWN);
        let reads = listed.iter().map(|key| async move { self.meta.get(key).await });
        let mut referrers = Vec::new();
        for raw in try_join_all(reads).await?.into_iter().flatten() {
            let d: Descriptor = serde_json::from_slice(&raw).map_err(storage)?;
            referrers.push(Desc {
                media_type: d.media_type,
                digest: d.digest.to_string(),
                size: d.size,
                artifact_type: d.artifact_type,
                title: None,
                platform: None,
            });
        }
        let pretty = serde_json::from_slice::<Value>(&record.bytes)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| String::from_utf8_lossy(&record.bytes).into_owned());
        Ok(ManifestPage {
            digest: digest.to_string(),
            pushed: record.header.pushed,
            bytes: record.bytes.len() as u64,
            manifest,
            config,
            referrers,
            more_referrers,
            pretty,
        })
    }

    /// A blob of the repository read whole, if it is there and at most [`MAX_CONFIG_BYTES`] long.
    async fn read_small_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<Option<Vec<u8>>> {
        let Some(link) = self.blob_link(name, digest).await? else { return Ok(None) };
        if link.size > MAX_CONFIG_BYTES {
            return Ok(None);
        }
        let Some(mut read) = self.objects.get(&link.data_key(digest), None).await? else { return Ok(None) };
        let mut out = Vec::with_capacity(read.size.min(MAX_CONFIG_BYTES) as usize);
        while let Some(chunk) = read.body.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > MAX_CONFIG_BYTES {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
        "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":100},
        "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l1","size":1000},
                  {"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l2","size":24,
                   "annotations":{"org.opencontainers.image.title":"file.txt"}}],
        "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:s","size":5},
        "annotations":{"a":"b"}}"#;

    #[test]
    fn image_manifest_summary() {
        let s = summarize_manifest(IMAGE.as_bytes(), "application/vnd.oci.image.manifest.v1+json");
        assert!(!s.is_index());
        assert_eq!(s.total_size(), Some(1124));
        assert_eq!(s.layers.len(), 2);
        assert_eq!(s.layers[1].title.as_deref(), Some("file.txt"));
        assert_eq!(s.subject.as_deref(), Some("sha256:s"));
        assert_eq!(s.annotations, vec![("a".to_string(), "b".to_string())]);
    }

    #[test]
    fn index_summary_lists_platforms_without_attestations() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","size":5,"platform":{"os":"linux","architecture":"amd64"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":6,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:c","size":7,"platform":{"os":"unknown","architecture":"unknown"}}]}"#;
        let s = summarize_manifest(index.as_bytes(), "application/vnd.oci.image.index.v1+json");
        assert!(s.is_index());
        assert_eq!(s.total_size(), None);
        assert_eq!(s.platforms(), vec!["linux/amd64", "linux/arm64/v8"]);
        // Unreadable bytes show nothing rather than fail.
        assert_eq!(summarize_manifest(b"not json", "x").layers.len(), 0);
    }

    #[test]
    fn image_config_fields() {
        let config = r#"{"created":"2024-01-01T00:00:00Z","architecture":"arm64","variant":"v8","os":"linux",
            "config":{"Entrypoint":["/entry"],"Cmd":["run","--fast"],"Env":["PATH=/bin","A=b"],"WorkingDir":"/app",
                      "ExposedPorts":{"8080/tcp":{},"53/udp":{}},"Labels":{"org.example":"yes"}},
            "history":[{"created_by":"COPY . /app"},{"created_by":"ENV A=b","empty_layer":true}]}"#;
        let c = parse_image_config(config.as_bytes()).unwrap();
        assert_eq!(c.platform.as_deref(), Some("linux/arm64/v8"));
        assert_eq!(c.created.as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(c.entrypoint, Some(vec!["/entry".to_string()]));
        assert_eq!(c.cmd, Some(vec!["run".to_string(), "--fast".to_string()]));
        assert_eq!(c.env, vec!["PATH=/bin", "A=b"]);
        assert_eq!(c.exposed_ports, vec!["53/udp", "8080/tcp"]);
        assert_eq!(c.labels, vec![("org.example".to_string(), "yes".to_string())]);
        assert_eq!(c.working_dir.as_deref(), Some("/app"));
        assert_eq!(c.history, vec![("COPY . /app".to_string(), false), ("ENV A=b".to_string(), true)]);
        assert!(parse_image_config(b"[]").is_some_and(|c| c.platform.is_none()));
        assert!(parse_image_config(b"{").is_none());
    }
}
