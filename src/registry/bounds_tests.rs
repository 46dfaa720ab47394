//! Store calls per request do not grow with a repository's size. Every route is measured through a counting wrapper
//! (the fault plan, counting only) in a repository with 5,000 tags and a subject with 2,000 referrers, and must stay
//! under 40 calls: the Workers Free plan allows 50 subrequests per invocation, and a request that runs out half-way
//! fails the same way on every retry.

use super::*;
use crate::api::Body;
use crate::spec::media_types::{OCI_MANIFEST, OCI_INDEX};
use crate::spec::{Algorithm, RepositoryName};
use crate::storage::faulty::FaultPlan;
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use bytes::Bytes;
use futures::executor::block_on;
use super::test_env::{body, TestEnv};

/// The most store calls any single request may make.
const BOUND: u64 = 40;
const TAGS: usize = 5_000;
const REFERRERS: usize = 2_000;

struct Fixture {
    reg: Registry,
    plan: Rc<FaultPlan>,
}

fn request(method: Method, uri: &str, content_type: Option<&str>, body: Vec<u8>) -> Request {
    let mut r = Request::new(Body::Full(Bytes::from(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    if let Some(t) = content_type {
        r.headers_mut().insert("content-type", t.parse().unwrap());
    }
    r
}

impl Fixture {
    fn new() -> Self {
        let plan = FaultPlan::counting();
        let (objects, meta) = plan.wrap(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()));
        let config = Config { delete_enabled: true, ..Config::default() };
        Fixture { reg: Registry::new(objects, meta, config, Rc::new(TestEnv::at(1_000_000))), plan }
    }

    fn send(&self, req: Request) -> Response {
        block_on(self.reg.handle(req))
    }

    /// Answer `req`, asserting its status and that it made fewer than [`BOUND`] store calls; returns the response.
    fn measured(&self, what: &str, req: Request, status: StatusCode) -> Response {
        let before = self.plan.calls();
        let resp = self.send(req);
        let calls = self.plan.calls() - before;
        assert_eq!(resp.status(), status, "{what}");
        assert!(calls < BOUND, "{what}: {calls} store calls (bound {BOUND})");
        println!("{what}: {calls} store calls");
        resp
    }

    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = Algorithm::Sha256.digest(data).to_string();
        let r = self.send(request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), None, data.to_vec()));
        assert_eq!(r.status(), StatusCode::CREATED);
        digest
    }

    fn put_manifest(&self, repo: &str, reference: &str, bytes: &[u8]) {
        let r = self.send(request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), Some(OCI_MANIFEST), bytes.to_vec()));
        assert_eq!(r.status(), StatusCode::CREATED, "{}", String::from_utf8_lossy(&body(r)));
    }
}

fn manifest(config: &str, layer: &str, note: &str, subject: Option<(&str, usize)>) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": 5 }],
        "annotations": { "note": note },
    });
    if let Some((digest, size)) = subject {
        m["artifactType"] = serde_json::json!("application/vnd.example.sbom");
        m["subject"] = serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": digest, "size": size });
    }
    serde_json::to_vec(&m).unwrap()
}

#[test]
fn no_route_makes_more_store_calls_with_5000_tags_and_2000_referrers() {
    let f = Fixture::new();
    let repo = "big/app";
    let config = f.push_blob(repo, b"{}");
    let layer = f.push_blob(repo, b"layer");
    let base = manifest(&config, &layer, "base", None);
    let base_digest = Algorithm::Sha256.digest(&base).to_string();
    f.put_manifest(repo, &base_digest, &base);
    for i in 0..TAGS {
        f.put_manifest(repo, &format!("t{i:05}"), &base);
    }
    for i in 0..REFERRERS {
        let r = manifest(&config, &layer, &format!("sbom {i}"), Some((&base_digest, base.len())));
        f.put_manifest(repo, &Algorithm::Sha256.digest(&r).to_string(), &r);
    }
    let other = manifest(&config, &layer, "other", None);
    let other_digest = Algorithm::Sha256.digest(&other).to_string();
    let v2 = |p: &str| format!("/v2/{repo}/{p}");
    let get = |p: &str| request(Method::GET, &v2(p), None, vec![]);

    f.measured("GET /v2/", request(Method::GET, "/v2/", None, vec![]), StatusCode::OK);
    f.measured("GET catalog", request(Method::GET, "/v2/_catalog", None, vec![]), StatusCode::OK);
    let tags: serde_json::Value = serde_json::from_slice(&body(f.measured("GET tags/list", get("tags/list"), StatusCode::OK))).unwrap();
    assert_eq!(tags["tags"].as_array().unwrap().len(), TAGS);
    f.measured("GET tags/list?n=100&last=", get("tags/list?n=100&last=t00100"), StatusCode::OK);
    f.measured("GET manifest by tag", get("manifests/t04999"), StatusCode::OK);
    f.measured("HEAD manifest by digest", request(Method::HEAD, &v2(&format!("manifests/{base_digest}")), None, vec![]), StatusCode::OK);
    f.measured("PUT manifest by tag", request(Method::PUT, &v2("manifests/one"), Some(OCI_MANIFEST), other.clone()), StatusCode::CREATED);
    f.put_manifest(repo, "two", &other);
    f.measured("DELETE tag", request(Method::DELETE, &v2("manifests/two"), None, vec![]), StatusCode::ACCEPTED);
    f.put_manifest(repo, "two", &other);
    f.measured("DELETE manifest by digest", request(Method::DELETE, &v2(&format!("manifests/{other_digest}")), None, vec![]), StatusCode::ACCEPTED);
    for t in ["one", "two"] {
        assert_eq!(f.send(get(&format!("manifests/{t}"))).status(), StatusCode::NOT_FOUND, "tag {t} outlived its manifest");
    }
    assert_eq!(f.send(get("manifests/t00000")).status(), StatusCode::OK);

    // Referrers: one page at a time, every page bounded, and all 2,000 reachable through the Link headers.
    let mut next = Some(v2(&format!("referrers/{base_digest}")));
    let mut seen = 0;
    while let Some(uri) = next.take() {
        let resp = f.measured("GET referrers page", request(Method::GET, &uri, None, vec![]), StatusCode::OK);
        next = resp.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            l[l.find('<').unwrap() + 1..l.find('>').unwrap()].to_string()
        });
        assert_eq!(resp.headers()["content-type"], OCI_INDEX);
        seen += serde_json::from_slice::<serde_json::Value>(&body(resp)).unwrap()["manifests"].as_array().unwrap().len();
    }
    assert_eq!(seen, REFERRERS);
    f.measured(
        "GET referrers filtered",
        get(&format!("referrers/{base_digest}?artifactType=application/vnd.example.sbom")),
        StatusCode::OK,
    );

    // Blobs and uploads.
    f.measured("HEAD blob", request(Method::HEAD, &v2(&format!("blobs/{layer}")), None, vec![]), StatusCode::OK);
    f.measured("GET blob", get(&format!("blobs/{layer}")), StatusCode::OK);
    let digest = Algorithm::Sha256.digest(b"monolithic").to_string();
    f.measured("POST monolithic upload", request(Method::POST, &v2(&format!("blobs/uploads/?digest={digest}")), None, b"monolithic".to_vec()), StatusCode::CREATED);
    f.measured("POST mount", request(Method::POST, &format!("/v2/other/blobs/uploads/?mount={layer}&from={repo}"), None, vec![]), StatusCode::CREATED);
    let started = f.measured("POST upload", request(Method::POST, &v2("blobs/uploads/"), None, vec![]), StatusCode::ACCEPTED);
    let location = started.headers()["location"].to_str().unwrap().to_string();
    f.measured("PATCH upload", request(Method::PATCH, &location, None, b"chunk".to_vec()), StatusCode::ACCEPTED);
    f.measured("GET upload", request(Method::GET, &location, None, vec![]), StatusCode::NO_CONTENT);
    let digest = Algorithm::Sha256.digest(b"chunk").to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    f.measured("PUT upload", request(Method::PUT, &format!("{location}{sep}digest={digest}"), None, vec![]), StatusCode::CREATED);
    let started = f.send(request(Method::POST, &v2("blobs/uploads/"), None, vec![]));
    let location = started.headers()["location"].to_str().unwrap().to_string();
    f.measured("DELETE upload", request(Method::DELETE, &location, None, vec![]), StatusCode::NO_CONTENT);
    f.measured("DELETE blob", request(Method::DELETE, &v2(&format!("blobs/{digest}")), None, vec![]), StatusCode::ACCEPTED);

    // The purge works in slices of bounded cost however many sessions exist.
    for _ in 0..30 {
        f.send(request(Method::POST, &v2("blobs/uploads/"), None, vec![]));
    }
    let before = f.plan.calls();
    let (_, done) = block_on(f.reg.purge_expired_uploads_slice(PURGE_SLICE)).unwrap();
    assert!(!done);
    assert!(f.plan.calls() - before < 50, "purge slice: {} calls", f.plan.calls() - before);
}

#[test]
fn a_repository_from_before_the_tag_index_is_indexed_by_its_first_delete() {
    let f = Fixture::new();
    let repo = "legacy";
    let config = f.push_blob(repo, b"{}");
    let layer = f.push_blob(repo, b"layer");
    let a = manifest(&config, &layer, "a", None);
    let b = manifest(&config, &layer, "b", None);
    let (da, db) = (Algorithm::Sha256.digest(&a).to_string(), Algorithm::Sha256.digest(&b).to_string());
    for t in ["a1", "a2"] {
        f.put_manifest(repo, t, &a);
    }
    for t in ["b1", "b2"] {
        f.put_manifest(repo, t, &b);
    }
    // Remove every trace of the index, as an older version of Pier would have left the repository.
    let name = RepositoryName::parse(repo).unwrap();
    let meta = &f.reg.meta;
    block_on(async {
        let prefix = format!("repositories/{name}/_ti/");
        for k in meta.list(&prefix, None, 100).await.unwrap() {
            meta.delete(&k).await.unwrap();
        }
    });
    let status = |r: &str| f.send(request(Method::GET, &format!("/v2/{repo}/manifests/{r}"), None, vec![])).status();
    let delete = |d: &str| f.send(request(Method::DELETE, &format!("/v2/{repo}/manifests/{d}"), None, vec![])).status();
    assert_eq!(delete(&da), StatusCode::ACCEPTED);
    assert_eq!((status("a1"), status("a2"), status("b1")), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND, StatusCode::OK));
    assert!(block_on(meta.get(&keys::tag_index_ready(&name))).unwrap().is_some());
    // The scan indexed the remaining tags: the next delete finds them through the index.
    assert_eq!(delete(&db), StatusCode::ACCEPTED);
    assert_eq!((status("b1"), status("b2")), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
}

#[test]
fn a_tag_moved_away_and_back_is_still_removed_with_its_manifest() {
    let f = Fixture::new();
    let repo = "moves";
    let config = f.push_blob(repo, b"{}");
    let layer = f.push_blob(repo, b"layer");
    let a = manifest(&config, &layer, "a", None);
    let b = manifest(&config, &layer, "b", None);
    f.put_manifest(repo, "latest", &a);
    f.put_manifest(repo, "latest", &b);
    f.put_manifest(repo, "latest", &a);
    let da = Algorithm::Sha256.digest(&a).to_string();
    let db = Algorithm::Sha256.digest(&b).to_string();
    // b's stale index entry for `latest` is harmless: deleting b leaves the tag at a.
    assert_eq!(f.send(request(Method::DELETE, &format!("/v2/{repo}/manifests/{db}"), None, vec![])).status(), StatusCode::ACCEPTED);
    assert_eq!(f.send(request(Method::GET, &format!("/v2/{repo}/manifests/latest"), None, vec![])).status(), StatusCode::OK);
    assert_eq!(f.send(request(Method::DELETE, &format!("/v2/{repo}/manifests/{da}"), None, vec![])).status(), StatusCode::ACCEPTED);
    assert_eq!(f.send(request(Method::GET, &format!("/v2/{repo}/manifests/latest"), None, vec![])).status(), StatusCode::NOT_FOUND);
}
