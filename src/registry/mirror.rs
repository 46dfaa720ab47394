//! Pull-through cache: repositories whose names fall under a configured upstream are mirrored from it.
//!
//! - **Which names.** registry:2's `REGISTRY_PROXY_REMOTEURL` (with `_USERNAME`, `_PASSWORD`) mirrors every name from
//!   one upstream, as registry:2 does; `PIER_PROXY_UPSTREAMS` (a JSON list of `{"prefix","url","username",
//!   "password"}`) mirrors only names under each prefix — `docker.io/library/alpine` from Docker Hub as
//!   `library/alpine`, `ghcr.io/org/app` from ghcr.io as `org/app` — and the registry hosts everything else itself.
//!   A one-component name from Docker Hub gets `library/`, as the Docker daemon sends it. Mirrored names are
//!   pull-only: every write answers 405 `UNSUPPORTED`.
//! - **Upstream protocol.** Requests carry the manifest media types real clients accept. A 401 with a Bearer
//!   challenge is followed to its realm (anonymously, or with the configured credentials) for a token scoped to
//!   `repository:<name>:pull`, cached for its lifetime per upstream and repository; a Basic challenge gets the
//!   credentials. Redirects (blob downloads go to a CDN) are followed without the credentials when the host changes.
//!   Upstream 404 stays 404; 429, 5xx and unreachable upstreams are 503 with a message.
//! - **What is cached, and how it cannot be poisoned.** A manifest is stored under its digest only when its bytes hash
//!   to it (the requested digest, or the upstream's `Docker-Content-Digest` for a tag) — byte for byte, with the
//!   upstream's media type. A blob larger than a part streams to the client as it arrives and into storage at once
//!   (`tee`: one part in memory) and is recorded only if it verifies at the end; a smaller one is fetched whole and
//!   verified before the client gets a byte (a lying upstream is refused outright). A mismatching or truncated body
//!   leaves nothing behind. Once cached, a blob is served like any other (presigned redirect where possible).
//!   Manifests by digest are immutable; a tag is revalidated with a HEAD (Docker Hub counts GETs, not HEADs) once
//!   `PIER_PROXY_TAG_TTL` (default 60 s) has passed since it was fetched, and served stale, with a `Warning` header,
//!   when the upstream cannot answer.
//! - **One fetch per blob at a time.** Pulls of a blob that is not cached yet, at the same moment in one process or
//!   isolate, share one upstream fetch (see `flights`): the first leads, the others wait for it and then serve the
//!   cached blob the normal way; if it cached nothing (the upstream failed or lied, its client went away, it stalled
//!   for 30 s) they try themselves, a bounded number of times. Across processes, the blob record's create-if-absent
//!   keeps one copy. Blob HEADs of uncached blobs ask the upstream and wait for nobody.
//! - **Expiry** (registry:2's `proxy.ttl`): `REGISTRY_PROXY_TTL` (default 168h; `0`: keep everything) — cached tags
//!   and manifests nobody pulled (GET or HEAD) or fetched for that long are collected by garbage collection, and their
//!   blobs after them (see `gc`). Pulls note their time in the record or tag copy they read, only when the time it
//!   holds is older than a tenth of the TTL (at most a day): a cached pull stays one read. Unlike registry:2, whose
//!   TTL runs from the fetch, it runs from the last pull, so what is in use stays however old it is; nothing expires
//!   without a collection running (`PIER_GC_INTERVAL`, the Workers cron, `pier gc`, `POST /admin/gc`).
//!
//! Upstream calls time out where the platform's client does: natively 60 s for the answer's headers and 60 s for any
//! pause in its body; Workers' `fetch` and wasi:http hosts apply their own limits.

use super::flights::{Turn, WaitOutcome};
use super::manifests::{decode_record, encode_record, RecordHeader};
use super::{keys, Registry};
use crate::api::{Body, Reply};
use crate::config::ConfigError;
use crate::error::{Error, ErrorCode, Result};
use crate::spec::manifest::{self, MAX_MANIFEST_SIZE};
use crate::spec::{Algorithm, Digest, Reference, RepositoryName};
use crate::storage::http::{read_body, HttpClient, HttpRequest, HttpResponse};
use crate::storage::Precondition;
use futures::StreamExt;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use std::cell::RefCell;
use std::collections::HashMap;

/// Manifest media types asked of upstreams, as real clients ask.
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
/// Default seconds before a cached tag is revalidated.
pub const DEFAULT_TAG_TTL_SECS: u64 = 60;
/// Default seconds cached content nobody pulled is kept (registry:2's `proxy.ttl` default, 168h).
pub const DEFAULT_TTL_SECS: u64 = 7 * 24 * 3600;
/// Waits for another request's fetch of the same blob before a pull fetches for itself.
const MAX_FLIGHT_WAITS: usize = 3;
/// Redirects followed at most.
const MAX_REDIRECTS: usize = 5;

/// One upstream registry.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Upstream {
    /// Names under this prefix (`docker.io` covers `docker.io/…`) are mirrored; empty: every name.
    #[serde(default)]
    pub prefix: String,
    /// Base URL, e.g. `https://registry-1.docker.io`.
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("prefix", &self.prefix).field("url", &self.url).field("username", &self.username).finish_non_exhaustive()
    }
}

impl Upstream {
    fn is_docker_hub(&self) -> bool {
        let host = self.url.split("://").nth(1).unwrap_or(&self.url).split('/').next().unwrap_or("");
        matches!(host, "registry-1.docker.io" | "index.docker.io" | "docker.io")
    }

    /// The upstream's name for local `name`, if this upstream mirrors it.
    fn upstream_name(&self, name: &str) -> Option<String> {
        let rest = if self.prefix.is_empty() { name } else { name.strip_prefix(&self.prefix)?.strip_prefix('/')? };
        if rest.is_empty() {
            return None;
        }
        Some(if self.is_docker_hub() && !rest.contains('/') { format!("library/{rest}") } else { rest.to_string() })
    }
}

/// The mirror's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConfig {
    pub upstreams: Vec<Upstream>,
    pub tag_ttl_secs: u64,
    /// Cached content nobody pulled (or fetched) for this long is collected (`REGISTRY_PROXY_TTL`); 0: never.
    pub ttl_secs: u64,
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), problem: problem.into() }
}

fn check_url(setting: &str, url: &str) -> std::result::Result<String, ConfigError> {
    let url = url.trim().trim_end_matches('/').to_string();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(['?', '#', ' ']) {
        return Err(bad(setting, "must be an http(s) URL of a registry, e.g. https://registry-1.docker.io"));
    }
    Ok(url)
}

impl MirrorConfig {
    /// Read the settings; `Ok(None)` when no upstream is configured.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> std::result::Result<Option<Self>, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let mut upstreams = Vec::new();
        if let Some(list) = get("PIER_PROXY_UPSTREAMS") {
            let parsed: Vec<Upstream> = serde_json::from_str(&list).map_err(|e| {
                bad("PIER_PROXY_UPSTREAMS", format!("expected a JSON list of {{\"prefix\",\"url\",\"username\",\"password\"}}: {e}"))
            })?;
            for mut u in parsed {
                u.url = check_url("PIER_PROXY_UPSTREAMS", &u.url)?;
                u.prefix = u.prefix.trim().trim_matches('/').to_string();
                if u.prefix.is_empty() || RepositoryName::parse(&u.prefix).is_err() {
                    return Err(bad("PIER_PROXY_UPSTREAMS", "each upstream needs a prefix that is a valid repository name part, e.g. docker.io"));
                }
                upstreams.push(u);
            }
        }
        if let Some(url) = get("REGISTRY_PROXY_REMOTEURL") {
            if !upstreams.is_empty() {
                return Err(bad("REGISTRY_PROXY_REMOTEURL", "set it or PIER_PROXY_UPSTREAMS, not both"));
            }
            upstreams.push(Upstream {
                prefix: String::new(),
                url: check_url("REGISTRY_PROXY_REMOTEURL", &url)?,
                username: get("REGISTRY_PROXY_USERNAME"),
                password: get("REGISTRY_PROXY_PASSWORD"),
            });
        }
        if upstreams.is_empty() {
            return Ok(None);
        }
        let tag_ttl_secs = match get("PIER_PROXY_TAG_TTL") {
            Some(v) => crate::config::parse_duration_secs("PIER_PROXY_TAG_TTL", &v)?,
            None => DEFAULT_TAG_TTL_SECS,
        };
        // registry:2's expiry: 168h unless set; 0 keeps everything (as registry:2 does).
        let ttl_secs = match get("REGISTRY_PROXY_TTL") {
            // Go's form, as registry:2 writes it (`168h`, `72h0m0s`); a fraction of a second is a second, not "never".
            Some(v) => {
                let d = crate::config::parse_go_duration("REGISTRY_PROXY_TTL", &v)?;
                if d.is_zero() { 0 } else { d.as_secs().max(1) }
            }
            None => DEFAULT_TTL_SECS,
        };
        Ok(Some(MirrorConfig { upstreams, tag_ttl_secs, ttl_secs }))
    }

    /// How stale a recorded pull time may get before a pull rewrites it: a tenth of the TTL, at most a day (at least
    /// a second). Pulls are the hot path: most of them only read; content still expires within a tenth of the TTL of
    /// its last pull.
    pub fn pull_resolution_secs(&self) -> u64 {
        (self.ttl_secs / 10).clamp(1, 24 * 3600)
    }

    /// The TTL of cached content in repository `name` when it is mirrored and expiry is on.
    pub fn expiry_for(&self, name: &str) -> Option<u64> {
        (self.ttl_secs > 0 && self.route(name).is_some()).then_some(self.ttl_secs)
    }

    /// The upstream mirroring `name` and the upstream's name for it.
    pub fn route(&self, name: &str) -> Option<(&Upstream, String)> {
        self.upstreams.iter().find_map(|u| u.upstream_name(name).map(|n| (u, n)))
    }
}

/// Upstream tokens: (upstream URL, repository) → (token, expiry).
#[derive(Default)]
pub(crate) struct TokenCache(RefCell<HashMap<(String, String), (String, u64)>>);

fn unavailable(message: impl Into<String>) -> Error {
    Error::msg(ErrorCode::Unavailable, message.into())
}

/// The parameters of a `WWW-Authenticate` challenge: scheme and `key="value"` pairs.
fn challenge(value: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = &rest[eq + 1..];
        let (value, tail) = if let Some(stripped) = after.strip_prefix('"') {
            match stripped.find('"') {
                Some(end) => (&stripped[..end], &stripped[end + 1..]),
                None => (stripped, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        rest = tail.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

fn host_of(url: &str) -> &str {
    url.split("://").nth(1).unwrap_or(url).split(['/', '?']).next().unwrap_or("")
}

fn basic(up: &Upstream) -> Option<String> {
    match (&up.username, &up.password) {
        (Some(u), Some(p)) => Some(format!("Basic {}", STANDARD.encode(format!("{u}:{p}")))),
        _ => None,
    }
}

impl Registry {
    fn upstream_client(&self) -> Result<&dyn HttpClient> {
        self.upstream_http.as_deref().ok_or_else(|| unavailable("this platform has no outbound HTTP client for the mirror"))
    }

    /// A token for `repo` at `up` from the realm of `params`.
    async fn fetch_token(&self, up: &Upstream, repo: &str, params: &HashMap<String, String>) -> Result<Option<(String, u64)>> {
        let Some(realm) = params.get("realm") else { return Ok(None) };
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let mut url = format!("{realm}{}scope={}", if realm.contains('?') { '&' } else { '?' }, enc(&format!("repository:{repo}:pull")));
        if let Some(service) = params.get("service") {
            url.push_str(&format!("&service={}", enc(service)));
        }
        let mut headers = vec![("user-agent".to_string(), "pier-mirror".to_string())];
        if let Some(b) = basic(up) {
            headers.push(("authorization".to_string(), b));
        }
        let resp = self.upstream_client()?.send(HttpRequest { method: Method::GET, url, headers, body: Bytes::new() }).await?;
        if resp.status != 200 {
            return Err(Error::msg(ErrorCode::Denied, format!("the upstream's token service refused ({})", resp.status)));
        }
        let body = read_body(resp.body, 64 * 1024).await?;
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| unavailable("the upstream's token service sent no JSON"))?;
        let token = v.get("token").or_else(|| v.get("access_token")).and_then(|t| t.as_str()).map(str::to_string);
        let ttl = v.get("expires_in").and_then(|e| e.as_u64()).unwrap_or(60).clamp(10, 3600);
        Ok(token.map(|t| (t, self.env.now_unix() + ttl.saturating_sub(5))))
    }

    /// Send a request for `path` (under `/v2/`) to `up` on behalf of repository `repo`: with a cached token, through
    /// one challenge round, following redirects.
    async fn upstream(&self, up: &Upstream, repo: &str, method: Method, path: &str) -> Result<HttpResponse> {
        let client = self.upstream_client()?;
        let cache_key = (up.url.clone(), repo.to_string());
        let mut auth = self.upstream_tokens.0.borrow().get(&cache_key).filter(|(_, exp)| *exp > self.env.now_unix()).map(|(t, _)| format!("Bearer {t}"));
        let mut challenged = false;
        let mut url = format!("{}/v2/{path}", up.url);
        let mut redirects = 0;
        loop {
            let mut headers = vec![("accept".to_string(), ACCEPT.to_string()), ("user-agent".to_string(), "pier-mirror".to_string())];
            if let Some(a) = &auth {
                if host_of(&url) == host_of(&up.url) {
                    headers.push(("authorization".to_string(), a.clone()));
                }
            }
            let req = HttpRequest { method: method.clone(), url: url.clone(), headers, body: Bytes::new() };
            let resp = client.send(req).await.map_err(|e| unavailable(format!("the upstream is unreachable: {}", e.message)))?;
            match resp.status {
                401 if !challenged => {
                    challenged = true;
                    let (scheme, params) = challenge(resp.header("www-authenticate").unwrap_or(""));
                    auth = match scheme.as_str() {
                        "bearer" => match self.fetch_token(up, repo, &params).await? {
                            Some((token, exp)) => {
                                self.upstream_tokens.0.borrow_mut().insert(cache_key.clone(), (token.clone(), exp));
                                Some(format!("Bearer {token}"))
                            }
                            None => return Err(Error::msg(ErrorCode::Denied, "the upstream's challenge names no token service")),
                        },
                        "basic" => Some(basic(up).ok_or_else(|| Error::msg(ErrorCode::Denied, "the upstream wants credentials: set them"))?),
                        _ => return Err(Error::msg(ErrorCode::Denied, "the upstream refused the request")),
                    };
                }
                301 | 302 | 303 | 307 | 308 if redirects < MAX_REDIRECTS => {
                    redirects += 1;
                    let location = resp.header("location").ok_or_else(|| unavailable("the upstream redirected without a Location"))?;
                    url = if location.starts_with("http://") || location.starts_with("https://") {
                        location.to_string()
                    } else {
                        let base = &url[..url.find("://").map_or(0, |i| i + 3) + host_of(&url).len()];
                        format!("{base}{location}")
                    };
                }
                401 | 403 => return Err(Error::msg(ErrorCode::Denied, format!("the upstream refused access ({})", resp.status))),
                429 => return Err(unavailable("the upstream is rate-limiting this mirror (429); try again later")),
                s if s >= 500 => return Err(unavailable(format!("the upstream failed ({s})"))),
                _ => return Ok(resp),
            }
        }
    }

    /// A manifest as a reply (with the pull event notifications report).
    fn manifest_reply(name: &RepositoryName, reference: &Reference, digest: &Digest, media_type: &str, bytes: Bytes) -> Reply {
        let tag = match reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let target = crate::events::manifest_target(name.as_str(), &digest.to_string(), media_type, bytes.len() as u64, tag.as_deref());
        Reply::bytes(StatusCode::OK, media_type, bytes)
            .header("docker-content-digest", digest.to_string())
            .header("etag", format!("\"{digest}\""))
            .with_event(crate::events::Action::Pull, target)
    }

    /// Store a verified upstream manifest as a record (and, for a tag, the tag's copy and index entry).
    async fn cache_manifest(&self, name: &RepositoryName, digest: &Digest, media_type: &str, bytes: &Bytes, tag: Option<&crate::spec::Tag>) -> Result<()> {
        let subject = manifest::parse(bytes, Some(media_type)).ok().and_then(|i| i.subject.map(|s| s.digest));
        let now = self.env.now_unix();
        let header = RecordHeader { media_type: media_type.to_string(), subject, digest: Some(digest.clone()), pushed: Some(now), gc: None, fetched: Some(now), pulled: None };
        let record = encode_record(&header, bytes)?;
        self.meta.put(&keys::manifest(name, digest), record.clone()).await?;
        if let Some(t) = tag {
            self.meta.put(&keys::tag_index(name, digest, t), Bytes::new()).await?;
            self.meta.put(&keys::tag(name, t), record).await?;
        }
        let catalog_key = keys::catalog(name);
        if self.meta.get(&catalog_key).await?.is_none() {
            self.meta.put(&keys::tag_index_ready(name), Bytes::new()).await?;
            self.meta.put(&catalog_key, Bytes::new()).await?;
        }
        Ok(())
    }

    /// GET/HEAD of a manifest in a mirrored repository.
    pub(super) async fn mirrored_manifest(&self, name: &RepositoryName, up: &Upstream, repo: &str, reference: &str, head: bool) -> Result<Reply> {
        let reference = Reference::parse(reference).map_err(|_| Error::new(ErrorCode::ManifestUnknown).with_detail(reference.chars().take(200).collect::<String>()))?;
        let unknown = || Error::new(ErrorCode::ManifestUnknown).with_detail(reference.to_string());
        let now = self.env.now_unix();
        let ttl = self.config.mirror.as_ref().map_or(DEFAULT_TAG_TTL_SECS, |m| m.tag_ttl_secs);
        // What is cached: a manifest by digest is immutable; a tag is fresh for the TTL. (Read with its version: a pull
        // may note its time in it, see `note_pull`.)
        let key = match &reference {
            Reference::Digest(d) => keys::manifest(name, d),
            Reference::Tag(t) => keys::tag(name, t),
        };
        let cached = match self.meta.get_versioned(&key).await? {
            Some(v) if v.value.first() == Some(&b'{') => Some((decode_record(v.value)?, v.version)),
            _ => None,
        };
        if let Some((record, version)) = &cached {
            let fresh = matches!(reference, Reference::Digest(_)) || record.header.fetched.is_some_and(|f| now < f.saturating_add(ttl));
            if let (true, Some(d)) = (fresh, &record.header.digest) {
                self.note_pull(&key, record, version).await;
                return Ok(Self::manifest_reply(name, &reference, d, &record.header.media_type, record.bytes.clone()));
            }
        }
        let path = format!("{repo}/manifests/{reference}");
        // A stale tag: revalidate with a HEAD (not counted against Docker Hub's pull limits).
        if let (Some((record, version)), Reference::Tag(_)) = (&cached, &reference) {
            let stale = |why: String| {
                let d = record.header.digest.clone();
                d.map(|d| {
                    Self::manifest_reply(name, &reference, &d, &record.header.media_type, record.bytes.clone())
                        .header("warning", format!("110 pier \"stale: {}\"", why.replace('"', "'")))
                })
            };
            match self.upstream(up, repo, Method::HEAD, &path).await {
                Ok(resp) if resp.status == 200 => {
                    let same = resp.header("docker-content-digest").is_some_and(|d| Some(d) == record.header.digest.as_ref().map(|x| x.to_string()).as_deref());
                    if let (true, Some(d)) = (same, &record.header.digest) {
                        // Revalidated: fetched now (which counts as a pull for the expiry), and live again if the
                        // collector had marked it.
                        let header = RecordHeader { fetched: Some(now), gc: None, ..record.header.clone() };
                        self.meta.put(&key, encode_record(&header, &record.bytes)?).await?;
                        return Ok(Self::manifest_reply(name, &reference, d, &record.header.media_type, record.bytes.clone()));
                    }
                }
                Ok(resp) if resp.status == 404 => return Err(unknown()),
                Ok(_) => {}
                Err(e) if e.code == ErrorCode::Unavailable => {
                    // Served stale while the upstream is away: still a pull, so it does not expire meanwhile.
                    self.note_pull(&key, record, version).await;
                    return stale(e.message.clone()).ok_or(e);
                }
                Err(e) => return Err(e),
            }
        }
        if head {
            // A HEAD the cache cannot answer is answered from the upstream's HEAD, without caching.
            let resp = self.upstream(up, repo, Method::HEAD, &path).await?;
            if resp.status == 404 {
                return Err(unknown());
            }
            if resp.status != 200 {
                return Err(unavailable(format!("the upstream answered {}", resp.status)));
            }
            let digest = resp.header("docker-content-digest").and_then(|d| Digest::parse(d).ok()).ok_or_else(|| unavailable("the upstream sent no digest"))?;
            let mut reply = Reply::empty(StatusCode::OK)
                .header("docker-content-digest", digest.to_string())
                .header("content-type", resp.header("content-type").unwrap_or(crate::spec::media_types::OCI_MANIFEST).to_string());
            if let Some(len) = resp.header("content-length") {
                reply = reply.header("content-length", len.to_string());
            }
            return Ok(reply);
        }
        let resp = self.upstream(up, repo, Method::GET, &path).await?;
        if resp.status == 404 {
            return Err(unknown());
        }
        if resp.status != 200 {
            return Err(unavailable(format!("the upstream answered {}", resp.status)));
        }
        let media_type = resp.header("content-type").map(crate::spec::media_types::essence).unwrap_or_default();
        let announced = resp.header("docker-content-digest").and_then(|d| Digest::parse(d).ok());
        let bytes = read_body(resp.body, MAX_MANIFEST_SIZE).await?;
        let expected = match (&reference, announced) {
            (Reference::Digest(d), _) => d.clone(),
            (Reference::Tag(_), Some(d)) => d,
            (Reference::Tag(_), None) => Algorithm::Sha256.digest(&bytes),
        };
        if expected.algorithm().digest(&bytes) != expected {
            return Err(unavailable(format!("the upstream sent a manifest that does not hash to {expected}; nothing was cached")));
        }
        let tag = match &reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        self.cache_manifest(name, &expected, &media_type, &bytes, tag).await?;
        Ok(Self::manifest_reply(name, &reference, &expected, &media_type, bytes))
    }

    /// Note that the cached manifest under `key` (a record, or a tag's copy of one) was pulled — only when the time it
    /// holds is older than the resolution, or the collector marked it as expired (the write revives it: the
    /// collector's conditional delete then fails). Most pulls write nothing. Conditional on the version read, so a
    /// record the collector deleted meanwhile is not brought back by a pull (the next one fetches it again). A
    /// failure is logged and the pull goes on.
    async fn note_pull(&self, key: &str, record: &super::manifests::ManifestRecord, version: &str) {
        let Some(mirror) = &self.config.mirror else { return };
        if mirror.ttl_secs == 0 {
            return;
        }
        let now = self.env.now_unix();
        let last = record.header.pulled.max(record.header.fetched);
        if record.header.gc.is_none() && last.is_some_and(|t| now < t.saturating_add(mirror.pull_resolution_secs())) {
            return;
        }
        let header = RecordHeader { pulled: Some(now), gc: None, ..record.header.clone() };
        let written = match encode_record(&header, &record.bytes) {
            Ok(value) => self.meta.put_if(key, value, &Precondition::Version(version.to_string())).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            self.env.log_error(&format!("mirror: noting a pull of {key}: {e}"));
        }
    }

    /// Whether `digest` is cached in `name` and may be served from there. A link the collector marked (its manifests
    /// expired, and a pull came back for them) is revived first, link then record, as every writer does (see `gc`):
    /// `false` when it is gone or being deleted, and then the blob is fetched again.
    async fn cached_blob(&self, name: &RepositoryName, digest: &Digest) -> Result<bool> {
        let Some(link) = self.blob_link(name, digest).await? else { return Ok(false) };
        if link.gc.is_none() {
            return Ok(true);
        }
        let link_key = keys::blob_link(name, digest);
        if !self.revive(&link_key).await? {
            return Ok(false);
        }
        if !self.revive(&keys::blob_record(digest)).await? {
            // The bytes are going away: take the link back (as an upload would) and fetch anew.
            self.meta.delete(&link_key).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// GET/HEAD of a blob in a mirrored repository: from the cache, or fetched, verified and cached first. A GET of a
    /// blob another request of this process is already fetching waits for that fetch, then serves the cached blob
    /// (see `flights`).
    pub(super) async fn mirrored_blob(&self, name: &RepositoryName, up: &Upstream, repo: &str, digest: &str, headers: &http::HeaderMap, head: bool) -> Result<Reply> {
        let parsed = Digest::parse(digest)?;
        if self.cached_blob(name, &parsed).await? {
            return self.get_blob(name, digest, headers, head).await;
        }
        let unknown = || Error::new(ErrorCode::BlobUnknown).with_detail(parsed.to_string());
        let path = format!("{repo}/blobs/{parsed}");
        if head {
            let resp = self.upstream(up, repo, Method::HEAD, &path).await?;
            return match resp.status {
                200 => {
                    let mut reply = Reply::empty(StatusCode::OK)
                        .header("docker-content-digest", parsed.to_string())
                        .header("content-type", "application/octet-stream");
                    if let Some(len) = resp.header("content-length") {
                        reply = reply.header("content-length", len.to_string());
                    }
                    Ok(reply)
                }
                404 => Err(unknown()),
                s => Err(unavailable(format!("the upstream answered {s}"))),
            };
        }
        // One fetch of this blob at a time in this process: lead it, or wait for the one in progress and serve what
        // it cached. A leader that cached nothing (it failed, its client went away) lets the waiters try themselves;
        // each waits a bounded number of times, then fetches without the single flight.
        let mut waits = 0;
        let flight = loop {
            match self.blob_flights.join(&up.url, &parsed.to_string()) {
                Turn::Lead(guard) => {
                    // A fetch that ended between the look at the cache above and now recorded its blob before it
                    // let go of the flight: look once more.
                    if self.cached_blob(name, &parsed).await? {
                        drop(guard);
                        return self.get_blob(name, digest, headers, head).await;
                    }
                    break Some(guard);
                }
                Turn::Wait(waiting) if waits < MAX_FLIGHT_WAITS => {
                    waits += 1;
                    let outcome = waiting.wait(|d| self.env.sleep(d)).await;
                    if self.cached_blob(name, &parsed).await? {
                        return self.get_blob(name, digest, headers, head).await;
                    }
                    if outcome == WaitOutcome::Stalled {
                        break None;
                    }
                }
                Turn::Wait(_) => break None,
            }
        };
        let resp = self.upstream(up, repo, Method::GET, &path).await?;
        match resp.status {
            200 => {}
            404 => return Err(unknown()),
            s => return Err(unavailable(format!("the upstream answered {s}"))),
        }
        let length = resp.header("content-length").and_then(|l| l.trim().parse::<u64>().ok());
        if length.is_none_or(|n| n > self.config.part_size) && parsed.algorithm() == crate::spec::Algorithm::Sha256 {
            // A big blob streams to the client as it arrives and into storage at once (see `tee`); it is recorded
            // only if it verifies at the end. The tee holds the flight until then.
            let target = super::tee::TeeTarget {
                objects: self.objects.clone(),
                meta: self.meta.clone(),
                name: name.clone(),
                digest: parsed.clone(),
                key: format!("blobs/mirror/{}", crate::spec::digest::to_hex(&self.env.random_bytes())),
                part_size: self.config.part_size,
                log: {
                    let env = self.env.clone();
                    std::rc::Rc::new(move |m: &str| env.log_error(m))
                },
            };
            let mut headers = vec![(http::header::CONTENT_TYPE, "application/octet-stream".to_string())];
            if let Some(n) = length {
                headers.push((http::header::CONTENT_LENGTH, n.to_string()));
            }
            let body = Body::Stream(super::tee::Tee::new(resp.body, target, length, flight).into_stream());
            let target = crate::events::blob_target(name.as_str(), &parsed.to_string(), length.unwrap_or(0));
            return Ok(Reply { status: StatusCode::OK, headers, body, event: None }
                .header("docker-content-digest", parsed.to_string())
                .with_event(crate::events::Action::Pull, target));
        }
        // A small one (configs, small layers) is fetched whole through the upload machinery and verified before the
        // client gets a byte: a lying upstream is refused outright. Waiters see the bytes move.
        let body: crate::storage::ByteStream = match &flight {
            Some(guard) => {
                let progress = guard.progress_counter();
                Box::pin(resp.body.inspect(move |c| {
                    if let Ok(c) = c {
                        progress.set(progress.get().wrapping_add(c.len() as u64));
                    }
                }))
            }
            None => resp.body,
        };
        let stored = self.store_blob(name, &parsed, Body::Stream(body), length).await;
        drop(flight);
        if let Err(e) = stored {
            return Err(match e.code {
                ErrorCode::DigestInvalid | ErrorCode::BlobUploadInvalid | ErrorCode::SizeInvalid => {
                    unavailable(format!("the upstream sent bytes that are not {parsed}; nothing was cached"))
                }
                _ => e,
            });
        }
        self.get_blob(name, digest, headers, head).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_names_to_upstreams() {
        let vars = [("PIER_PROXY_UPSTREAMS", r#"[{"prefix":"docker.io","url":"https://registry-1.docker.io/"},{"prefix":"ghcr.io","url":"https://ghcr.io"}]"#)];
        let m = MirrorConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap().unwrap();
        assert_eq!(m.route("docker.io/alpine").map(|(_, n)| n), Some("library/alpine".into()));
        assert_eq!(m.route("docker.io/bitnami/redis").map(|(_, n)| n), Some("bitnami/redis".into()));
        assert_eq!(m.route("ghcr.io/org/app").map(|(u, n)| (u.url.clone(), n)), Some(("https://ghcr.io".into(), "org/app".into())));
        assert!(m.route("team/app").is_none());
        assert!(m.route("docker.iox/a").is_none());
        let vars = [("REGISTRY_PROXY_REMOTEURL", "http://127.0.0.1:5000")];
        let m = MirrorConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap().unwrap();
        assert_eq!(m.route("team/app").map(|(_, n)| n), Some("team/app".into()));
        for bad in [r#"[{"prefix":"","url":"https://x"}]"#, r#"[{"prefix":"a","url":"ftp://x"}]"#, "nope"] {
            let vars = [("PIER_PROXY_UPSTREAMS", bad)];
            assert!(MirrorConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).is_err());
        }
    }

    #[test]
    fn parses_challenges() {
        let (s, p) = challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull""#);
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/alpine:pull");
        let (s, p) = challenge("Basic realm=pier");
        assert_eq!((s.as_str(), p["realm"].as_str()), ("basic", "pier"));
    }
}
