//! Criterion benchmarks of the registry core on the in-memory stores (no network, no disk): what one request costs
//! the core itself. `scripts/bench` runs them; figures are in the README.
//!
//! - manifest GET by tag and blob HEAD: per-request latency of the two hottest pull paths;
//! - upload: throughput of a 64 MiB blob pushed as one PATCH in 64 KiB body chunks (hashing + part assembly), and
//!   of the resumable SHA-256 alone.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::executor::block_on;
use http::{Method, Request, StatusCode};
use pier::api::Body;
use pier::config::Config;
use pier::registry::{Environment, Registry};
use pier::spec::Algorithm;
use pier::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use pier::upload::ResumableSha256;
use std::rc::Rc;

struct BenchEnv;
impl Environment for BenchEnv {
    fn now_unix(&self) -> u64 {
        1_700_000_000
    }
    fn random_bytes(&self) -> [u8; 16] {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(1);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        b
    }
    fn log_error(&self, m: &str) {
        eprintln!("{m}");
    }
}

fn registry() -> Registry {
    Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), Config::default(), Rc::new(BenchEnv))
}

fn req(method: Method, uri: &str, body: Body) -> pier::api::Request {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().expect("bench uri");
    r
}

fn call(reg: &Registry, method: Method, uri: &str, body: Body) -> pier::api::Response {
    block_on(reg.handle(req(method, uri, body)))
}

fn push_blob(reg: &Registry, data: &[u8]) -> String {
    let digest = Algorithm::Sha256.digest(data).to_string();
    let r = call(reg, Method::POST, &format!("/v2/bench/app/blobs/uploads/?digest={digest}"), Body::Full(Bytes::copy_from_slice(data)));
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

fn pull_paths(c: &mut Criterion) {
    let reg = registry();
    let config_bytes = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let config = push_blob(&reg, config_bytes);
    let layer = push_blob(&reg, &vec![7u8; 4096]);
    // Descriptor sizes must be the stored sizes (the registry refuses a manifest whose sizes are wrong).
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":4096}}]}}"#,
        config_bytes.len()
    );
    let mut put = req(Method::PUT, "/v2/bench/app/manifests/latest", Body::Full(Bytes::from(manifest)));
    put.headers_mut().insert("content-type", http::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"));
    assert_eq!(block_on(reg.handle(put)).status(), StatusCode::CREATED);

    c.bench_function("manifest GET by tag", |b| {
        b.iter(|| {
            let r = call(&reg, Method::GET, "/v2/bench/app/manifests/latest", Body::Empty);
            assert_eq!(r.status(), StatusCode::OK);
        })
    });
    let head_uri = format!("/v2/bench/app/blobs/{layer}");
    c.bench_function("blob HEAD", |b| {
        b.iter(|| {
            let r = call(&reg, Method::HEAD, &head_uri, Body::Empty);
            assert_eq!(r.status(), StatusCode::OK);
        })
    });
}

fn upload(c: &mut Criterion) {
    const SIZE: usize = 64 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let data: Vec<u8> = (0..SIZE).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
    let chunks: Vec<Bytes> = data.chunks(CHUNK).map(Bytes::copy_from_slice).collect();
    let digest = Algorithm::Sha256.digest(&data).to_string();

    let mut g = c.benchmark_group("upload");
    g.throughput(Throughput::Bytes(SIZE as u64));
    g.sample_size(10);
    g.bench_function("64 MiB in one PATCH (64 KiB body chunks) + PUT", |b| {
        b.iter(|| {
            let reg = registry();
            let r = call(&reg, Method::POST, "/v2/bench/up/blobs/uploads/", Body::Empty);
            let loc = r.headers()["location"].to_str().expect("location").to_string();
            let body = Body::Stream(Box::pin(futures::stream::iter(chunks.clone().into_iter().map(Ok))));
            assert_eq!(call(&reg, Method::PATCH, &loc, body).status(), StatusCode::ACCEPTED);
            assert_eq!(call(&reg, Method::PUT, &format!("{loc}?digest={digest}"), Body::Empty).status(), StatusCode::CREATED);
        })
    });
    g.bench_function("resumable SHA-256 alone", |b| {
        b.iter(|| {
            let mut h = ResumableSha256::new();
            for c in &chunks {
                h.update(c);
            }
            h.finalize()
        })
    });
    g.finish();
}

criterion_group!(benches, pull_paths, upload);
criterion_main!(benches);
