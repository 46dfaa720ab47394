//! The whole core: sequences of arbitrary requests (method, path, query, a few headers, body, sent whole or in
//! chunks) to one `Registry` over the in-memory stores, with access control on or off. Every answer must be below
//! 500 (the memory stores do not fail, so a 5xx is a bug), and every response body must read to its end.
//!
//! Requests can refer to what earlier answers said (the last `Location`, digests from `Docker-Content-Digest`) and
//! carry manifests built from those digests, so the fuzzer reaches finished uploads, manifest PUTs, tags,
//! referrers and deletes, not only the routing errors.
#![no_main]

use bytes::Bytes;
use futures::executor::block_on;
use libfuzzer_sys::{arbitrary, fuzz_target};
use pier::api::{Body, Request};
use pier::auth::htpasswd::hash_password;
use pier::auth::token::{issue, AccessEntry, Claims, Secret};
use pier::config::Config;
use pier::registry::{Environment, Registry};
use pier::spec::media_types::*;
use pier::spec::Algorithm;
use pier::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::OnceLock;

const SECRET: &str = "fuzz-secret-0123456789abcdef-0123456789";
const SERVICE: &str = "registry.test";
const RULES: &str = "public/* anonymous pull; team/* alice pull,push; a alice pull,push,delete; b/* alice *; \
                     * admin *; registry:catalog alice *";
const REPOS: &[&str] = &["a", "b/c", "team/app", "public/x", "b/c/manifests/d", "x"];
const TAGS: &[&str] = &["latest", "v1", "sha256-0000000000000000000000000000000000000000000000000000000000000000"];
const TYPES: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_EMPTY, "application/json", "text/plain"];

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    auth: bool,
    /// With access control: the service (tokens' audience) is the request's Host rather than configured.
    service_from_host: bool,
    no_rename: bool,
    delete_disabled: bool,
    /// Multipart part size 1..=256 bytes (0: the default), so chunked uploads span several parts.
    part_size: u8,
    requests: Vec<Req>,
}

#[derive(Debug, arbitrary::Arbitrary)]
struct Req {
    method: Method,
    path: Path,
    query: Vec<(Key, Val)>,
    headers: Vec<(Name, Val)>,
    body: BodyKind,
    /// Sent as a stream of this many chunks (0: whole).
    chunks: u8,
    /// Seconds that pass before this request.
    wait: u16,
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Method {
    Get,
    Head,
    Put,
    Post,
    Patch,
    Delete,
    Other(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Path {
    Raw(String),
    /// `/v2/<repo>/<kind>`
    Api(Repo, Kind),
    /// The last `Location` answered, and a suffix.
    Location(String),
    Token,
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Repo {
    Known(u8),
    Raw(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Kind {
    Base,
    Catalog,
    Tags,
    Manifest(Val),
    Blob(Val),
    Uploads,
    Upload(String),
    Referrers(Val),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Key {
    Digest,
    Mount,
    From,
    N,
    Last,
    ArtifactType,
    Service,
    Scope,
    Raw(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Val {
    Raw(String),
    Tag(u8),
    /// A digest some earlier answer named.
    Seen(u8),
    /// The digest of this request's body.
    BodyDigest,
    Repo(u8),
    Type(u8),
    Num(u64),
    Host,
    Auth(Auth),
    /// `a-b` (a chunk's Content-Range).
    Chunk(u32, u32),
    /// The Content-Range of this body appended to the current upload.
    NextChunk,
    /// The digest of everything sent to the current upload, this body included.
    UploadDigest,
    /// `bytes=a-b` or `bytes=a-` (a blob GET's Range).
    Bytes(u32, Option<u32>),
    /// `bytes=-n`
    Suffix(u32),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Name {
    ContentType,
    ContentRange,
    Range,
    ContentLength,
    Authorization,
    Host,
    Raw(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Auth {
    Alice,
    Basic(String, String),
    Bearer { sub: bool, access: Vec<(u8, u8)>, expired: bool },
    Raw(String),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum BodyKind {
    Empty,
    Raw(Vec<u8>),
    Manifest { media_type: u8, config: Val, layers: Vec<Val>, subject: Option<Val>, artifact_type: Option<u8> },
    Index { media_type: u8, manifests: Vec<Val> },
}

struct Env {
    now: Cell<u64>,
    n: Cell<u64>,
    errors: RefCell<Vec<String>>,
}

impl Environment for Env {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        self.n.set(self.n.get() + 1);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.n.get().to_le_bytes());
        b
    }
    fn log_error(&self, m: &str) {
        self.errors.borrow_mut().push(m.to_string());
    }
}

/// `PIER_FUZZ_TRACE=1`: print each request and its status (to see what a corpus reaches:
/// `PIER_FUZZ_TRACE=1 fuzz/target/*/release/registry -runs=0 fuzz/corpus/registry`).
fn trace() -> bool {
    static T: OnceLock<bool> = OnceLock::new();
    *T.get_or_init(|| std::env::var_os("PIER_FUZZ_TRACE").is_some())
}

fn alice_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| hash_password(b"alice-pw", 4, [7; 16]).expect("cost 4"))
}

/// What earlier answers told the client.
#[derive(Default)]
struct Seen {
    location: Option<String>,
    digests: Vec<String>,
    /// What the upload last started has accepted (a POST 202 starts empty; each PATCH 202 adds its body).
    upload: Vec<u8>,
}

impl Seen {
    fn value(&self, v: &Val, body: &[u8], now: u64) -> String {
        match v {
            Val::Raw(s) => s.clone(),
            Val::Tag(i) => TAGS[*i as usize % TAGS.len()].into(),
            Val::Seen(i) if !self.digests.is_empty() => self.digests[*i as usize % self.digests.len()].clone(),
            Val::Seen(_) | Val::BodyDigest => Algorithm::Sha256.digest(body).to_string(),
            Val::Repo(i) => REPOS[*i as usize % REPOS.len()].into(),
            Val::Type(i) => TYPES[*i as usize % TYPES.len()].into(),
            Val::Num(n) => n.to_string(),
            Val::Host => SERVICE.into(),
            Val::Chunk(a, b) => format!("{a}-{b}"),
            Val::NextChunk => format!("{}-{}", self.upload.len(), (self.upload.len() + body.len()).saturating_sub(1)),
            Val::UploadDigest => Algorithm::Sha256.digest(&[&self.upload[..], body].concat()).to_string(),
            Val::Bytes(a, Some(b)) => format!("bytes={a}-{b}"),
            Val::Bytes(a, None) => format!("bytes={a}-"),
            Val::Suffix(n) => format!("bytes=-{n}"),
            Val::Auth(a) => auth(a, now),
        }
    }

    fn descriptor(&self, media_type: &str, v: &Val, size: usize) -> String {
        format!(r#"{{"mediaType":"{media_type}","digest":"{}","size":{size}}}"#, self.value(v, b"", 0))
    }

    fn body(&self, b: &BodyKind) -> Vec<u8> {
        match b {
            BodyKind::Empty => Vec::new(),
            BodyKind::Raw(v) => v.clone(),
            BodyKind::Manifest { media_type, config, layers, subject, artifact_type } => {
                let mt = TYPES[*media_type as usize % TYPES.len()];
                let layers: Vec<String> = layers.iter().map(|l| self.descriptor("application/vnd.oci.image.layer.v1.tar", l, 1)).collect();
                let mut s = format!(
                    r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{},"layers":[{}]"#,
                    self.descriptor("application/vnd.oci.image.config.v1+json", config, 2),
                    layers.join(",")
                );
                if let Some(sub) = subject {
                    s.push_str(&format!(r#","subject":{}"#, self.descriptor(OCI_MANIFEST, sub, 3)));
                }
                if let Some(a) = artifact_type {
                    s.push_str(&format!(r#","artifactType":"{}""#, TYPES[*a as usize % TYPES.len()]));
                }
                s.push('}');
                s.into_bytes()
            }
            BodyKind::Index { media_type, manifests } => {
                let mt = TYPES[*media_type as usize % TYPES.len()];
                let m: Vec<String> = manifests.iter().map(|m| self.descriptor(OCI_MANIFEST, m, 4)).collect();
                format!(r#"{{"schemaVersion":2,"mediaType":"{mt}","manifests":[{}]}}"#, m.join(",")).into_bytes()
            }
        }
    }
}

fn auth(a: &Auth, now: u64) -> String {
    use base64::Engine as _;
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    match a {
        Auth::Alice => format!("Basic {}", b64("alice:alice-pw".into())),
        Auth::Basic(u, p) => format!("Basic {}", b64(format!("{u}:{p}"))),
        Auth::Bearer { sub, access, expired } => {
            let access = access
                .iter()
                .map(|(repo, actions)| AccessEntry {
                    kind: "repository".into(),
                    name: REPOS[*repo as usize % REPOS.len()].into(),
                    actions: ["pull", "push", "delete", "*"].iter().enumerate().filter(|(i, _)| actions & (1 << i) != 0).map(|(_, a)| a.to_string()).collect(),
                })
                .collect();
            let claims = Claims {
                iss: "pier".into(),
                sub: if *sub { "alice".into() } else { String::new() },
                aud: SERVICE.into(),
                exp: if *expired { now } else { now + 300 },
                nbf: Some(now),
                iat: Some(now),
                jti: None,
                access,
            };
            format!("Bearer {}", issue(&claims, &Secret::new(SECRET.as_bytes().to_vec())))
        }
        Auth::Raw(s) => s.clone(),
    }
}

fn key(k: &Key) -> &str {
    match k {
        Key::Digest => "digest",
        Key::Mount => "mount",
        Key::From => "from",
        Key::N => "n",
        Key::Last => "last",
        Key::ArtifactType => "artifactType",
        Key::Service => "service",
        Key::Scope => "scope",
        Key::Raw(s) => s,
    }
}

fn registry(input: &Input, env: Rc<Env>) -> Registry {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if input.auth {
        vars.push(("PIER_AUTH_HTPASSWD", format!("alice:{}\n", alice_hash())));
        vars.push(("PIER_AUTH_RULES", RULES.into()));
        vars.push(("PIER_AUTH_TOKEN_SECRET", SECRET.into()));
        if !input.service_from_host {
            vars.push(("PIER_AUTH_SERVICE", SERVICE.into()));
        }
    }
    let mut config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("fuzz configuration");
    config.delete_enabled = !input.delete_disabled;
    config.upload_expiry_secs = 600;
    if input.part_size > 0 {
        config.part_size = input.part_size.into();
    }
    let objects = if input.no_rename { MemoryObjectStore::without_rename() } else { MemoryObjectStore::new() };
    Registry::new(Rc::new(objects), Rc::new(MemoryMetaStore::new()), config, env)
}

/// An answer read to its end.
struct Answer {
    status: http::StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Send one request (its body whole, or in `chunks` pieces) and read the answer's body to its end.
fn send(reg: &Registry, method: http::Method, uri: &http::Uri, headers: &http::HeaderMap, body: &[u8], chunks: u8) -> Answer {
    let request_body = if chunks == 0 || body.is_empty() {
        Body::Full(Bytes::copy_from_slice(body))
    } else {
        let size = body.len().div_ceil(chunks as usize).max(1);
        let parts: Vec<pier::error::Result<Bytes>> = body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        Body::Stream(Box::pin(futures::stream::iter(parts)))
    };
    let mut r = Request::new(request_body);
    *r.method_mut() = method.clone();
    *r.uri_mut() = uri.clone();
    *r.headers_mut() = headers.clone();
    let resp = block_on(reg.handle(r));
    let (parts, mut b) = resp.into_parts();
    let mut out = Vec::new();
    while let Some(chunk) = block_on(b.next_chunk()) {
        match chunk {
            Ok(c) => out.extend_from_slice(&c),
            Err(e) => panic!("{method} {uri}: the body failed after {} bytes: {e:?}", out.len()),
        }
    }
    Answer { status: parts.status, headers: parts.headers, body: out }
}

fuzz_target!(|input: Input| {
    let env = Rc::new(Env { now: Cell::new(1_700_000_000), n: Cell::new(0), errors: RefCell::new(Vec::new()) });
    let reg = registry(&input, env.clone());
    let mut seen = Seen::default();
    for req in input.requests.iter().take(32) {
        env.now.set(env.now.get() + u64::from(req.wait));
        let now = env.now.get();
        let body = seen.body(&req.body);
        let mut path = match &req.path {
            Path::Raw(s) => s.clone(),
            Path::Token => "/token".into(),
            Path::Location(suffix) => format!("{}{suffix}", seen.location.as_deref().unwrap_or("/v2/")),
            Path::Api(repo, kind) => {
                let repo = match repo {
                    Repo::Known(i) => REPOS[*i as usize % REPOS.len()].to_string(),
                    Repo::Raw(s) => s.clone(),
                };
                match kind {
                    Kind::Base => "/v2/".into(),
                    Kind::Catalog => "/v2/_catalog".into(),
                    Kind::Tags => format!("/v2/{repo}/tags/list"),
                    Kind::Manifest(r) => format!("/v2/{repo}/manifests/{}", seen.value(r, &body, now)),
                    Kind::Blob(d) => format!("/v2/{repo}/blobs/{}", seen.value(d, &body, now)),
                    Kind::Uploads => format!("/v2/{repo}/blobs/uploads/"),
                    Kind::Upload(id) => format!("/v2/{repo}/blobs/uploads/{id}"),
                    Kind::Referrers(d) => format!("/v2/{repo}/referrers/{}", seen.value(d, &body, now)),
                }
            }
        };
        if !req.query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &req.query {
                q.append_pair(key(k), &seen.value(v, &body, now));
            }
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&q.finish());
        }
        let Ok(uri) = path.parse::<http::Uri>() else { continue };
        let method = match &req.method {
            Method::Get => http::Method::GET,
            Method::Head => http::Method::HEAD,
            Method::Put => http::Method::PUT,
            Method::Post => http::Method::POST,
            Method::Patch => http::Method::PATCH,
            Method::Delete => http::Method::DELETE,
            Method::Other(m) => match http::Method::from_bytes(m.as_bytes()) {
                Ok(m) => m,
                Err(_) => continue,
            },
        };
        let mut headers = http::HeaderMap::new();
        for (name, value) in req.headers.iter().take(8) {
            let name = match name {
                Name::ContentType => "content-type",
                Name::ContentRange => "content-range",
                Name::Range => "range",
                Name::ContentLength => "content-length",
                Name::Authorization => "authorization",
                Name::Host => "host",
                Name::Raw(s) => s,
            };
            let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(name.as_bytes()), http::HeaderValue::from_str(&seen.value(value, &body, now))) else {
                continue;
            };
            headers.append(n, v);
        }

        // A GET's HEAD twin first (reads change nothing): the same status and headers.
        if method == http::Method::GET {
            let head = send(&reg, http::Method::HEAD, &uri, &headers, &body, req.chunks);
            let get = send(&reg, http::Method::GET, &uri, &headers, &body, req.chunks);
            assert_eq!(head.status, get.status, "HEAD and GET {path}");
            // (An error body names the method, so its length may differ.)
            let entity: &[&str] = if get.status.is_success() { &["content-length", "content-type"] } else { &[] };
            for &h in entity.iter().chain(&["docker-content-digest", "content-range", "location"]) {
                assert_eq!(head.headers.get(h), get.headers.get(h), "{h} of HEAD and GET {path}");
            }
        }
        let resp = send(&reg, method.clone(), &uri, &headers, &body, req.chunks);
        let status = resp.status;
        if trace() {
            eprintln!("{method} {path} -> {}", status.as_u16());
        }
        assert!(status.as_u16() < 500, "{method} {path}: {status}, logged {:?}", env.errors.borrow());
        if method == http::Method::HEAD {
            assert!(resp.body.is_empty(), "{path}: a HEAD answer with a body");
        }
        let header = |h: &str| resp.headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
        if let Some(l) = header("location") {
            seen.location = Some(l);
        }
        if status == http::StatusCode::ACCEPTED {
            match method {
                http::Method::POST => seen.upload.clear(),
                http::Method::PATCH => seen.upload.extend_from_slice(&body),
                _ => {}
            }
        }
        if let Some(d) = header("docker-content-digest") {
            if !seen.digests.contains(&d) {
                seen.digests.push(d);
            }
        }
        // Read what was just written (without access control, where any read is allowed): a blob's bytes hash to
        // its digest, a manifest's bytes are the ones sent.
        if status == http::StatusCode::CREATED && !input.auth {
            if let (Some(location), Some(digest)) = (header("location"), header("docker-content-digest")) {
                let Ok(at) = location.parse::<http::Uri>() else { panic!("{method} {path}: Location {location:?}") };
                let got = send(&reg, http::Method::GET, &at, &http::HeaderMap::new(), &[], 0);
                assert_eq!(got.status, http::StatusCode::OK, "GET {location} after {method} {path}");
                assert_eq!(got.headers.get("docker-content-digest").and_then(|v| v.to_str().ok()), Some(digest.as_str()));
                if location.contains("/manifests/") {
                    assert_eq!(got.body, body, "GET {location} after {method} {path}");
                } else if let Some(hex) = digest.strip_prefix("sha256:") {
                    assert_eq!(Algorithm::Sha256.digest(&got.body).hex(), hex, "GET {location} after {method} {path}");
                }
            }
        }
    }
    assert!(env.errors.borrow().is_empty(), "{:?}", env.errors.borrow());
});
