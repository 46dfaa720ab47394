//! Core-level tests of the operations features every platform shares: `/health` (before access control, 503 when
//! the metadata store fails, nothing about the configuration in the answer), read-only mode (every write refused
//! with 405 `UNSUPPORTED`, reads served, no purge), request ids and the request log record.

use super::*;
use crate::api::{Body, ClientAddr};
use crate::auth::htpasswd::hash_password;
use crate::spec::Algorithm;
use crate::storage::faulty::{FaultKind, FaultPlan, StoreOp};
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use base64::Engine as _;
use bytes::Bytes;
use futures::executor::block_on;
use std::cell::{Cell, RefCell};

#[derive(Default)]
struct OpsEnv {
    n: Cell<u64>,
    /// Added to the Unix time (seconds).
    later: Cell<u64>,
    /// Calls of `now_millis` so far: each is 250 ms after the one before.
    ticks: Cell<u64>,
    errors: RefCell<Vec<String>>,
    records: RefCell<Vec<RequestLog>>,
}

impl Environment for OpsEnv {
    fn now_unix(&self) -> u64 {
        1_700_000_000 + self.later.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        super::test_env::counted_bytes(&self.n)
    }
    fn log_error(&self, m: &str) {
        self.errors.borrow_mut().push(m.to_string());
    }
    fn now_millis(&self) -> u64 {
        self.ticks.set(self.ticks.get() + 1);
        self.now_unix() * 1000 + 250 * self.ticks.get()
    }
    fn log_request(&self, record: &RequestLog) {
        self.records.borrow_mut().push(record.clone());
    }
}

const PASSWORD: &str = "alice-secret-pw";
const TOKEN_SECRET: &str = "ops-test-secret-0123456789abcdef0123";

fn config(auth: bool, read_only: bool) -> Config {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if auth {
        vars.push(("PIER_AUTH_HTPASSWD", format!("alice:{}\n", hash_password(PASSWORD.as_bytes(), 4, [3; 16]).unwrap())));
        vars.push(("PIER_AUTH_TOKEN_SECRET", TOKEN_SECRET.into()));
    }
    let mut c = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
    c.read_only = read_only;
    c.anonymous_write = Some(false);
    c
}

fn call(reg: &Registry, method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut r = Request::new(Body::Full(Bytes::copy_from_slice(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    block_on(reg.handle(r))
}

fn body(resp: Response) -> Vec<u8> {
    let mut b = resp.into_body();
    let mut out = Vec::new();
    while let Some(c) = block_on(b.next_chunk()) {
        out.extend_from_slice(&c.unwrap());
    }
    out
}

fn json(resp: Response) -> serde_json::Value {
    serde_json::from_slice(&body(resp)).unwrap()
}

fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}")))
}

#[test]
fn health_needs_no_credentials_and_tells_no_configuration() {
    let env = Rc::new(OpsEnv::default());
    let reg = Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config(true, true), env.clone());
    let r = call(&reg, Method::GET, "/health", &[], b"");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(json(r), serde_json::json!({"status": "ok", "checks": {"storage": "ok"}}));
    let r = call(&reg, Method::HEAD, "/health", &[], b"");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body(r).is_empty());
    assert_eq!(call(&reg, Method::POST, "/health", &[], b"x").status(), StatusCode::METHOD_NOT_ALLOWED);
    // `/v2/` is unchanged: with users it still asks for credentials.
    assert_eq!(call(&reg, Method::GET, "/v2/", &[], b"").status(), StatusCode::UNAUTHORIZED);
    // Anything else under /health is not the health check.
    assert_eq!(call(&reg, Method::GET, "/health/x", &[], b"").status(), StatusCode::NOT_FOUND);
    let kinds: Vec<_> = env.records.borrow().iter().map(|r| r.route).collect();
    assert_eq!(kinds[..3], [RouteKind::Health; 3]);
    assert!(env.errors.borrow().is_empty());
}

#[test]
fn health_is_503_when_storage_fails() {
    let env = Rc::new(OpsEnv::default());
    let plan = FaultPlan::on_op(StoreOp::MetaGet, keys::HEALTH_PROBE, FaultKind::Fail);
    let (objects, meta) = plan.wrap(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()));
    let reg = Registry::new(objects, meta, config(false, false), env.clone());
    let r = call(&reg, Method::GET, "/health", &[("x-request-id", "probe-1")], b"");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["x-request-id"], "probe-1");
    let text = String::from_utf8(body(r)).unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text).unwrap(), serde_json::json!({"status": "unavailable", "checks": {"storage": "unavailable"}}));
    // The failure is in the server's log, under the request's id; the client sees none of it.
    let errors = env.errors.borrow();
    assert_eq!(errors.len(), 1);
    assert!(errors[0].starts_with("request probe-1: health check: storage:"), "{errors:?}");
    assert_eq!(env.records.borrow()[0].status, 503);
    // The fault fired once: the store answers again.
    assert_eq!(call(&reg, Method::GET, "/health", &[], b"").status(), StatusCode::OK);
}

/// Push a blob and a manifest tagged `v1` to `repo`; returns (blob digest, manifest digest).
fn seed(reg: &Registry, repo: &str) -> (String, String) {
    let blob = b"layer bytes".to_vec();
    let blob_digest = Algorithm::Sha256.digest(&blob).to_string();
    let r = call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={blob_digest}"), &[], &blob);
    assert_eq!(r.status(), StatusCode::CREATED);
    let config_digest = Algorithm::Sha256.digest(b"{}").to_string();
    let r = call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={config_digest}"), &[], b"{}");
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob_digest, "size": blob.len()}],
    })
    .to_string();
    let ct = [("content-type", "application/vnd.oci.image.manifest.v1+json")];
    let r = call(reg, Method::PUT, &format!("/v2/{repo}/manifests/v1"), &ct, manifest.as_bytes());
    assert_eq!(r.status(), StatusCode::CREATED);
    (blob_digest, Algorithm::Sha256.digest(manifest.as_bytes()).to_string())
}

#[test]
fn read_only_refuses_every_write_and_serves_reads() {
    let objects = Rc::new(MemoryObjectStore::new());
    let meta = Rc::new(MemoryMetaStore::new());
    let env = Rc::new(OpsEnv::default());
    let mut open = config(false, false);
    open.anonymous_write = Some(true);
    open.upload_expiry_secs = 1;
    let writable = Registry::new(objects.clone(), meta.clone(), open.clone(), env.clone());
    let (blob, manifest) = seed(&writable, "app");
    let r = call(&writable, Method::POST, "/v2/app/blobs/uploads/", &[], b"");
    let session = r.headers()["location"].to_str().unwrap().to_string();

    let frozen = Registry::new(objects, meta, Config { read_only: true, ..open }, env.clone());
    let writes = [
        (Method::POST, "/v2/app/blobs/uploads/".to_string()),
        (Method::POST, format!("/v2/app/blobs/uploads/?digest={blob}")),
        (Method::POST, format!("/v2/other/blobs/uploads/?mount={blob}&from=app")),
        (Method::PATCH, session.clone()),
        (Method::PUT, format!("{session}?digest={blob}")),
        (Method::DELETE, session.clone()),
        (Method::PUT, "/v2/app/manifests/v2".to_string()),
        (Method::DELETE, format!("/v2/app/manifests/{manifest}")),
        (Method::DELETE, "/v2/app/manifests/v1".to_string()),
        (Method::DELETE, format!("/v2/app/blobs/{blob}")),
    ];
    for (method, uri) in writes {
        let r = call(&frozen, method.clone(), &uri, &[], b"some body bytes");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        let v = json(r);
        assert_eq!(v["errors"][0]["code"], "UNSUPPORTED", "{method} {uri}");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("read-only"), "{v}");
    }
    // Reads go on, including the session's status, and nothing was changed by the refused writes.
    for uri in ["/v2/", "/v2/_catalog", "/v2/app/tags/list", "/v2/app/manifests/v1", &format!("/v2/app/blobs/{blob}"), &format!("/v2/app/referrers/{manifest}")] {
        assert_eq!(call(&frozen, Method::GET, uri, &[], b"").status(), StatusCode::OK, "{uri}");
        assert_eq!(call(&frozen, Method::HEAD, uri, &[], b"").status(), StatusCode::OK, "{uri}");
    }
    assert_eq!(call(&frozen, Method::GET, &session, &[], b"").status(), StatusCode::NO_CONTENT);
    assert_eq!(call(&frozen, Method::GET, "/v2/other/blobs/uploads/x", &[], b"").status(), StatusCode::NOT_FOUND);
    // No purge while frozen, even of sessions past their expiry; they go at the first purge after.
    env.later.set(3600);
    assert_eq!(block_on(frozen.purge_expired_uploads()).unwrap(), 0);
    assert_eq!(block_on(writable.purge_expired_uploads()).unwrap(), 1);
    assert!(env.errors.borrow().is_empty(), "{:?}", env.errors.borrow());
}

#[test]
fn read_only_answers_before_access_control() {
    let env = Rc::new(OpsEnv::default());
    let reg = Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config(true, true), env);
    let r = call(&reg, Method::POST, "/v2/app/blobs/uploads/", &[], b"");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // Reads still need credentials.
    assert_eq!(call(&reg, Method::GET, "/v2/app/tags/list", &[], b"").status(), StatusCode::UNAUTHORIZED);
    // The token endpoint still issues tokens (a client reads before it writes).
    assert_eq!(call(&reg, Method::GET, "/token?scope=repository:app:pull", &[("authorization", &basic())], b"").status(), StatusCode::OK);
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let env = Rc::new(OpsEnv::default());
    let reg = Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config(false, false), env.clone());
    let r = call(&reg, Method::GET, "/v2/", &[("x-request-id", "abc.DEF_12-3")], b"");
    assert_eq!(r.headers()["x-request-id"], "abc.DEF_12-3");
    for bad in ["has space", "a/b", &"x".repeat(129)] {
        let r = call(&reg, Method::GET, "/v2/", &[("x-request-id", bad)], b"");
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, bad);
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    // Errors carry one too, and two generated ids differ.
    let a = call(&reg, Method::GET, "/v2/nope/manifests/x", &[], b"");
    assert_eq!(a.status(), StatusCode::NOT_FOUND);
    let b = call(&reg, Method::GET, "/nowhere", &[], b"");
    assert_ne!(a.headers()["x-request-id"], b.headers()["x-request-id"]);
    let records = env.records.borrow();
    assert_eq!(records.len(), 6);
    assert_eq!(records[0].request_id, "abc.DEF_12-3");
    assert_eq!(records[5].route, RouteKind::Other);
}

#[test]
fn records_name_route_user_and_client() {
    let env = Rc::new(OpsEnv::default());
    let reg = Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config(true, false), env.clone());
    let auth = basic();
    let blob = seed_authorized(&reg, &auth);
    env.records.borrow_mut().clear();

    let mut r = Request::new(Body::Empty);
    *r.uri_mut() = format!("/v2/app/blobs/{blob}").parse().unwrap();
    r.headers_mut().insert("authorization", auth.parse().unwrap());
    r.extensions_mut().insert(ClientAddr("198.51.100.4".parse().unwrap()));
    assert_eq!(block_on(reg.handle(r)).status(), StatusCode::OK);
    call(&reg, Method::GET, "/v2/app/tags/list", &[], b"");
    call(&reg, Method::GET, "/token?scope=repository:app:pull", &[("authorization", &auth)], b"");
    let form = format!("grant_type=password&username=alice&password={PASSWORD}&scope=repository:app:pull");
    let length = form.len().to_string();
    let headers = [("content-type", "application/x-www-form-urlencoded"), ("content-length", length.as_str())];
    assert_eq!(call(&reg, Method::POST, "/token", &headers, form.as_bytes()).status(), StatusCode::OK);
    call(&reg, Method::GET, "/token", &[], b"");

    let records = env.records.borrow();
    let blob_get = &records[0];
    assert_eq!((blob_get.route, blob_get.repository.as_deref(), blob_get.digest.as_deref()), (RouteKind::Blob, Some("app"), Some(blob.as_str())));
    assert_eq!((blob_get.user.as_deref(), blob_get.client), (Some("alice"), Some("198.51.100.4".parse().unwrap())));
    assert_eq!((blob_get.status, blob_get.bytes_out, blob_get.duration_ms), (200, Some(11), 250));
    assert_eq!((records[1].status, records[1].user.as_deref()), (401, None));
    assert_eq!((records[2].route, records[2].user.as_deref()), (RouteKind::Token, Some("alice")));
    assert_eq!((records[3].route, records[3].user.as_deref()), (RouteKind::Token, Some("alice")));
    assert_eq!(records[3].bytes_in, Some(form.len() as u64));
    assert_eq!((records[4].route, records[4].user.as_deref()), (RouteKind::Token, None));
    // No record holds the password, the Basic credentials or the issued tokens.
    for record in records.iter() {
        for line in [record.to_json(), record.to_text()] {
            assert!(!line.contains(PASSWORD) && !line.contains("Basic") && !line.contains("eyJ"), "{line}");
        }
    }
}

fn seed_authorized(reg: &Registry, auth: &str) -> String {
    let blob = b"layer bytes";
    let digest = Algorithm::Sha256.digest(blob).to_string();
    let r = call(reg, Method::POST, &format!("/v2/app/blobs/uploads/?digest={digest}"), &[("authorization", auth)], blob);
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}
