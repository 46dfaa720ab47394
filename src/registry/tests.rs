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
    n: Cell<u8>,
}

impl Environment for TestEnv {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        self.n.set(self.n.get() + 1);
        [self.n.get(); 16]
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
