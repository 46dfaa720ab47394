//! Core-level tests of upload paths that the HTTP suite cannot choose: stores without rename (R2's binding), blob
//! de-duplication across repositories, and expiry purging.

use super::*;
use crate::api::Body;
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use crate::spec::Algorithm;
use bytes::Bytes;
use futures::executor::block_on;
use std::cell::Cell;

struct TestEnv {
    now: Cell<u64>,
    n: Cell<u64>,
}

impl Environment for TestEnv {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        // `[n; 16]` for the first 255 calls; the high bytes of the counter keep later ones distinct (every request
        // draws a request id, so a long test makes many calls).
        let n = self.n.get() + 1;
        self.n.set(n);
        let mut b = [n as u8; 16];
        for (x, h) in b[8..].iter_mut().zip((n >> 8).to_le_bytes()) {
            *x ^= h;
        }
        b
    }
    fn log_error(&self, m: &str) {
        panic!("unexpected server error: {m}");
    }
}

fn setup(objects: Rc<MemoryObjectStore>, part_size: u64) -> (Registry, Rc<TestEnv>) {
    let env = Rc::new(TestEnv { now: Cell::new(1000), n: Cell::new(0) });
    let config = Config { part_size, upload_expiry_secs: 60, ..Config::default() };
    (Registry::new(objects, Rc::new(MemoryMetaStore::new()), config, env.clone()), env)
}

fn call(reg: &Registry, method: Method, uri: &str, body: Vec<u8>) -> Response {
    let mut r = Request::new(Body::Full(Bytes::from(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
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

fn chunked_push(reg: &Registry, repo: &str, data: &[u8], chunk: usize) -> String {
    let r = call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), vec![]);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    for c in data.chunks(chunk) {
        assert_eq!(call(reg, Method::PATCH, &loc, c.to_vec()).status(), StatusCode::ACCEPTED);
    }
    let digest = Algorithm::Sha256.digest(data).to_string();
    assert_eq!(call(reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    digest
}

#[test]
fn store_without_rename_keeps_multipart_blobs_in_place() {
    let objects = Rc::new(MemoryObjectStore::without_rename());
    let (reg, _) = setup(objects.clone(), 100);
    let data: Vec<u8> = (0..1234u32).map(|i| (i * 7) as u8).collect();
    let digest = chunked_push(&reg, "a", &data, 77);
    assert!(objects.keys().iter().all(|k| !k.starts_with("_uploads/")), "tails cleaned: {:?}", objects.keys());
    assert!(objects.keys().iter().any(|k| k.starts_with("blobs/uploads/")));
    let got = call(&reg, Method::GET, &format!("/v2/a/blobs/{digest}"), vec![]);
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(body(got), data);
    // Mounting carries the location along.
    let r = call(&reg, Method::POST, &format!("/v2/b/blobs/uploads/?mount={digest}&from=a"), vec![]);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(body(call(&reg, Method::GET, &format!("/v2/b/blobs/{digest}"), vec![])), data);
}

#[test]
fn second_upload_of_the_same_bytes_is_not_stored_twice() {
    let objects = Rc::new(MemoryObjectStore::without_rename());
    let (reg, _) = setup(objects.clone(), 100);
    let data = vec![9u8; 500];
    chunked_push(&reg, "a", &data, 120);
    let before = objects.keys();
    chunked_push(&reg, "b", &data, 200);
    assert_eq!(objects.keys(), before);
}

#[test]
fn expired_sessions_are_purged() {
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, env) = setup(objects.clone(), 100);
    let r = call(&reg, Method::POST, "/v2/a/blobs/uploads/", vec![]);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(call(&reg, Method::PATCH, &loc, vec![1u8; 250]).status(), StatusCode::ACCEPTED);
    assert!(!objects.is_empty());
    env.now.set(1000 + 61);
    assert_eq!(block_on(reg.purge_expired_uploads()).unwrap(), 1);
    assert!(objects.keys().iter().all(|k| !k.starts_with("_uploads/")));
    assert_eq!(call(&reg, Method::GET, &loc, vec![]).status(), StatusCode::NOT_FOUND);
}

/// Random requests (mutated real ones: methods, paths, queries, Content-Range, Range, bodies) never panic and never
/// answer 5xx: a client's mistake is always a 4xx with an OCI error body.
#[test]
fn random_requests_never_cause_server_errors() {
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 64);
    let digest = chunked_push(&reg, "a/b", b"hello world, this is a blob", 5);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: usize| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x9E37_79B9_7F4A_7C15) % n as u64) as usize
    };
    let methods = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    let paths = [
        "/v2/".to_string(),
        "/v2/_catalog?n=1&last=a".to_string(),
        "/v2/a/b/tags/list?n=x".to_string(),
        format!("/v2/a/b/blobs/{digest}"),
        "/v2/a/b/blobs/uploads/".to_string(),
        format!("/v2/a/b/blobs/uploads/?digest={digest}"),
        format!("/v2/c/blobs/uploads/?mount={digest}&from=a/b"),
        "/v2/a/b/blobs/uploads/01010101-0101-4101-8101-010101010101".to_string(),
        "/v2/a/b/manifests/latest".to_string(),
        format!("/v2/a/b/manifests/{digest}"),
        format!("/v2/a/b/referrers/{digest}?artifactType=x"),
    ];
    let junk = ["", "%2F", "..", "/x", "?digest=sha256:zz", "?n=-1", "A", ":", "?mount=&from=", "/../"];
    let bodies: [&[u8]; 5] = [b"", b"{}", b"not json", br#"{"schemaVersion":2,"manifests":[]}"#, &[0xff; 100]];
    let mut sent = 0;
    for _ in 0..3000 {
        let mut path = paths[next(paths.len())].clone();
        if next(2) == 0 {
            let at = next(path.len() + 1);
            let at = (0..=at).rev().find(|i| path.is_char_boundary(*i)).unwrap_or(0);
            path.insert_str(at, junk[next(junk.len())]);
        }
        let mut r = Request::new(Body::Full(Bytes::copy_from_slice(bodies[next(bodies.len())])));
        *r.method_mut() = methods[next(methods.len())].clone();
        let Ok(uri) = path.parse() else { continue };
        *r.uri_mut() = uri;
        let headers = r.headers_mut();
        match next(5) {
            0 => {
                headers.insert("content-range", http::HeaderValue::from_static("0-3"));
            }
            1 => {
                headers.insert("content-range", http::HeaderValue::from_static("9-2"));
            }
            2 => {
                headers.insert("range", http::HeaderValue::from_static("bytes=3-1"));
            }
            3 => {
                headers.insert("content-type", http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json"));
            }
            _ => {}
        }
        let resp = block_on(reg.handle(r));
        assert!(resp.status().as_u16() < 500, "{path}: {}", resp.status());
        sent += 1;
    }
    assert!(sent > 2000, "only {sent} requests were well-formed enough to send");
}

/// A request body fed by the test: chunks sent on the returned sender arrive as the request streams; an `Err` tears
/// the body (the client's connection dropped).
fn channel_body() -> (futures::channel::mpsc::UnboundedSender<crate::error::Result<Bytes>>, Body) {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    (tx, Body::Stream(Box::pin(rx)))
}

fn request(method: Method, uri: &str, body: Body, headers: &[(&'static str, String)]) -> Request {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    for (k, v) in headers {
        r.headers_mut().insert(*k, v.parse().unwrap());
    }
    r
}

fn start(reg: &Registry, repo: &str) -> String {
    let r = call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), vec![]);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    r.headers()["location"].to_str().unwrap().to_string()
}

fn patch_at(reg: &Registry, loc: &str, offset: usize, data: &[u8]) -> Response {
    let range = format!("{offset}-{}", offset + data.len() - 1);
    let headers = [("content-range", range), ("content-length", data.len().to_string())];
    block_on(reg.handle(request(Method::PATCH, loc, Body::Full(Bytes::copy_from_slice(data)), &headers)))
}

/// One writer per session: a PATCH that arrives while another streams into the session (after that one has written a
/// part) is refused with 416 and none of its bytes reach the upload; the holder's bytes are what the digest serves.
#[test]
fn a_patch_racing_a_streaming_patch_gets_416_and_changes_nothing() {
    use futures::task::LocalSpawnExt;
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 100);
    let reg = Rc::new(reg);
    let loc = start(&reg, "race");
    let a: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
    let b = vec![0xEEu8; 250];

    let mut pool = futures::executor::LocalPool::new();
    let (tx, body_a) = channel_body();
    let result = Rc::new(std::cell::RefCell::new(None));
    {
        let (reg, loc, result) = (reg.clone(), loc.clone(), result.clone());
        let req = request(Method::PATCH, &loc, body_a, &[("content-range", "0-249".into())]);
        pool.spawner().spawn_local(async move { *result.borrow_mut() = Some(reg.handle(req).await.status()) }).unwrap();
    }
    tx.unbounded_send(Ok(Bytes::copy_from_slice(&a[..150]))).unwrap();
    pool.run_until_stalled(); // A has claimed the session and written its first part

    let r = patch_at(&reg, &loc, 0, &b);
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["range"], "0-0");
    // Also the torn variant: B's body breaks after a part's worth of bytes.
    let (tx_b, body_b) = channel_body();
    tx_b.unbounded_send(Ok(Bytes::copy_from_slice(&b[..150]))).unwrap();
    tx_b.unbounded_send(Err(Error::msg(ErrorCode::BlobUploadInvalid, "connection reset"))).unwrap();
    let r = block_on(reg.handle(request(Method::PATCH, &loc, body_b, &[])));
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    tx.unbounded_send(Ok(Bytes::copy_from_slice(&a[150..]))).unwrap();
    drop(tx);
    pool.run_until_stalled();
    assert_eq!(*result.borrow(), Some(StatusCode::ACCEPTED));
    let digest = Algorithm::Sha256.digest(&a);
    assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    assert_eq!(body(call(&reg, Method::GET, &format!("/v2/race/blobs/{digest}"), vec![])), a);
}

/// Two PATCHes at one offset, interleaved so both load the session before either claims it: the compare-and-swap
/// lets exactly one in.
#[test]
fn two_patches_at_one_offset_exactly_one_wins() {
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 100);
    let loc = start(&reg, "race2");
    let a = vec![1u8; 120];
    let b = vec![2u8; 120];
    let req = |data: &[u8]| {
        request(Method::PATCH, &loc, Body::Full(Bytes::copy_from_slice(data)), &[("content-range", "0-119".into())])
    };
    let (ra, rb) = block_on(futures::future::join(reg.handle(req(&a)), reg.handle(req(&b))));
    let mut statuses = [ra.status().as_u16(), rb.status().as_u16()];
    statuses.sort();
    assert_eq!(statuses, [202, 416]);
    let winner = if ra.status() == StatusCode::ACCEPTED { &a } else { &b };
    let digest = Algorithm::Sha256.digest(winner);
    assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    assert_eq!(&body(call(&reg, Method::GET, &format!("/v2/race2/blobs/{digest}"), vec![])), winner);
}

/// A PATCH whose body breaks off commits nothing and gives its claim back: the retry from the same offset works at
/// once, and the bytes the torn request wrote as parts never reach the blob.
#[test]
fn a_torn_patch_leaves_the_session_at_its_last_offset_and_unclaimed() {
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 100);
    let loc = start(&reg, "torn");
    let good: Vec<u8> = (0..300u32).map(|i| (i * 3) as u8).collect();
    assert_eq!(patch_at(&reg, &loc, 0, &good[..50]).status(), StatusCode::ACCEPTED);
    let (tx, body_t) = channel_body();
    tx.unbounded_send(Ok(Bytes::from(vec![0xAB; 180]))).unwrap();
    tx.unbounded_send(Err(Error::msg(ErrorCode::BlobUploadInvalid, "connection reset"))).unwrap();
    let r = block_on(reg.handle(request(Method::PATCH, &loc, body_t, &[("content-range", "50-299".into())])));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let status = call(&reg, Method::GET, &loc, vec![]);
    assert_eq!(status.headers()["range"], "0-49");
    assert_eq!(patch_at(&reg, &loc, 50, &good[50..]).status(), StatusCode::ACCEPTED);
    let digest = Algorithm::Sha256.digest(&good);
    assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    assert_eq!(body(call(&reg, Method::GET, &format!("/v2/torn/blobs/{digest}"), vec![])), good);
}

/// A holder whose lease ran out (it stalled) while another request claimed and committed can neither renew nor
/// commit: it gets 416, and the digest serves the new holder's bytes.
#[test]
fn a_stale_holder_cannot_commit_after_its_lease_expired() {
    use futures::task::LocalSpawnExt;
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, env) = setup(objects, 100);
    let reg = Rc::new(reg);
    let loc = start(&reg, "stale");
    let mut pool = futures::executor::LocalPool::new();
    let (tx, body_a) = channel_body();
    let result = Rc::new(std::cell::RefCell::new(None));
    {
        let (reg, result) = (reg.clone(), result.clone());
        let req = request(Method::PATCH, &loc, body_a, &[]);
        pool.spawner().spawn_local(async move { *result.borrow_mut() = Some(reg.handle(req).await.status()) }).unwrap();
    }
    tx.unbounded_send(Ok(Bytes::from(vec![7u8; 130]))).unwrap();
    pool.run_until_stalled();
    env.now.set(env.now.get() + super::uploads::CLAIM_LEASE_SECS + 1);
    let b: Vec<u8> = (0..230u32).map(|i| (i ^ 0x5a) as u8).collect();
    assert_eq!(patch_at(&reg, &loc, 0, &b).status(), StatusCode::ACCEPTED);
    tx.unbounded_send(Ok(Bytes::from(vec![7u8; 100]))).unwrap();
    drop(tx);
    pool.run_until_stalled();
    assert_eq!(*result.borrow(), Some(StatusCode::RANGE_NOT_SATISFIABLE));
    let digest = Algorithm::Sha256.digest(&b);
    assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    assert_eq!(body(call(&reg, Method::GET, &format!("/v2/stale/blobs/{digest}"), vec![])), b);
}

/// The multipart upload id is saved in the session before its first part is written, so a request that dies after
/// writing a part leaves an upload the expired-session purge aborts.
#[test]
fn the_multipart_upload_is_recorded_before_its_first_part() {
    use futures::task::LocalSpawnExt;
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 100);
    let reg = Rc::new(reg);
    let loc = start(&reg, "orphan");
    let mut pool = futures::executor::LocalPool::new();
    let (tx, body_a) = channel_body();
    {
        let reg = reg.clone();
        let req = request(Method::PATCH, &loc, body_a, &[]);
        pool.spawner().spawn_local(async move { drop(reg.handle(req).await) }).unwrap();
    }
    tx.unbounded_send(Ok(Bytes::from(vec![7u8; 150]))).unwrap();
    pool.run_until_stalled();
    let id = loc.rsplit('/').next().unwrap();
    let raw = block_on(reg.meta.get(&keys::upload(id))).unwrap().unwrap();
    let session: crate::upload::UploadSession = serde_json::from_slice(&raw).unwrap();
    assert!(session.multipart_id.is_some(), "{session:?}");
    assert!(session.claim.is_some());
}

#[test]
fn manifest_descriptor_sizes_must_match_the_stored_blobs() {
    let objects = Rc::new(MemoryObjectStore::new());
    let (reg, _) = setup(objects, 100);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layer = vec![3u8; 77];
    let cfg = chunked_push(&reg, "m", &config, 1000);
    let lay = chunked_push(&reg, "m", &layer, 1000);
    let manifest = |layer_size: usize| {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{lay}","size":{layer_size}}}]}}"#,
            config.len()
        )
    };
    let put = |m: String| {
        let headers = [("content-type", "application/vnd.oci.image.manifest.v1+json".to_string())];
        block_on(reg.handle(request(Method::PUT, "/v2/m/manifests/v1", Body::Full(Bytes::from(m)), &headers)))
    };
    let r = put(manifest(78));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let err: serde_json::Value = serde_json::from_slice(&body(r)).unwrap();
    assert_eq!(err["errors"][0]["code"], "MANIFEST_INVALID");
    assert!(err["errors"][0]["detail"].as_str().unwrap().contains("layers[0]"), "{err}");
    assert_eq!(put(manifest(77)).status(), StatusCode::CREATED);
}

/// A store that copies each part out and drops the caller's bytes at once, as R2's binding does, and remembers where
/// each part's bytes were and how long they were.
struct CopyingObjectStore {
    inner: MemoryObjectStore,
    parts: std::cell::RefCell<Vec<(usize, usize)>>,
}

#[async_trait::async_trait(?Send)]
impl crate::storage::ObjectStore for CopyingObjectStore {
    async fn head(&self, key: &str) -> crate::error::Result<Option<u64>> {
        self.inner.head(key).await
    }
    async fn get(&self, key: &str, range: Option<crate::spec::range::ByteRange>) -> crate::error::Result<Option<crate::storage::ObjectRead>> {
        self.inner.get(key, range).await
    }
    async fn put(&self, key: &str, data: Bytes) -> crate::error::Result<()> {
        self.inner.put(key, Bytes::copy_from_slice(&data)).await
    }
    async fn delete(&self, key: &str) -> crate::error::Result<()> {
        self.inner.delete(key).await
    }
    async fn create_multipart(&self, key: &str) -> crate::error::Result<String> {
        self.inner.create_multipart(key).await
    }
    async fn upload_part(&self, key: &str, upload_id: &str, number: u32, data: Bytes) -> crate::error::Result<String> {
        self.parts.borrow_mut().push((data.as_ptr() as usize, data.len()));
        let copy = Bytes::copy_from_slice(&data);
        drop(data);
        self.inner.upload_part(key, upload_id, number, copy).await
    }
    async fn complete_multipart(&self, key: &str, upload_id: &str, parts: &[crate::upload::PartRecord]) -> crate::error::Result<()> {
        self.inner.complete_multipart(key, upload_id, parts).await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> crate::error::Result<()> {
        self.inner.abort_multipart(key, upload_id).await
    }
    async fn rename(&self, from: &str, to: &str) -> crate::error::Result<()> {
        self.inner.rename(from, to).await
    }
}

/// One part buffer per request: parts are cut at exactly the part size from chunks that straddle part boundaries,
/// and once the store has let go of a part the next one is assembled in the same allocation.
#[test]
fn a_request_assembles_every_part_in_one_buffer() {
    let objects = Rc::new(CopyingObjectStore { inner: MemoryObjectStore::new(), parts: Default::default() });
    let env = Rc::new(TestEnv { now: Cell::new(1000), n: Cell::new(0) });
    let config = Config { part_size: 100, upload_expiry_secs: 60, ..Config::default() };
    let reg = Registry::new(objects.clone(), Rc::new(MemoryMetaStore::new()), config, env);
    let data: Vec<u8> = (0..1234u32).map(|i| (i * 13) as u8).collect();
    let loc = start(&reg, "p");
    let chunks: Vec<crate::error::Result<Bytes>> = data.chunks(37).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let stream = Body::Stream(Box::pin(futures::stream::iter(chunks)));
    assert_eq!(block_on(reg.handle(request(Method::PATCH, &loc, stream, &[]))).status(), StatusCode::ACCEPTED);
    let parts = objects.parts.borrow().clone();
    assert_eq!(parts.len(), 12, "{parts:?}");
    assert!(parts.iter().all(|&(_, len)| len == 100), "{parts:?}");
    assert!(parts.iter().all(|&(at, _)| at == parts[0].0), "every part in the first part's buffer: {parts:?}");
    let digest = Algorithm::Sha256.digest(&data).to_string();
    assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), vec![]).status(), StatusCode::CREATED);
    assert_eq!(objects.parts.borrow().last().map(|p| p.1), Some(34));
    assert_eq!(body(call(&reg, Method::GET, &format!("/v2/p/blobs/{digest}"), vec![])), data);
}
