//! What access control costs per request (criterion, native, in-memory stores): `scripts/bench auth`.
//!
//! - login: one bcrypt verification at costs 5 to 12 (what the token endpoint, or a Basic request missing the
//!   credential cache, pays), and a whole `GET /token` with Basic credentials at cost 10;
//! - a verified request: manifest GET with a Bearer token (HS256 verify + JSON claims + rules) and with cached
//!   Basic credentials, next to the same GET without access control.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use futures::executor::block_on;
use http::{HeaderValue, Method, Request, StatusCode};
use pier::api::Body;
use pier::auth::htpasswd::{hash_password, BcryptHash};
use pier::config::Config;
use pier::registry::{Environment, Registry};
use pier::spec::Algorithm;
use pier::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use std::rc::Rc;
use std::time::Duration;

struct BenchEnv;
impl Environment for BenchEnv {
    fn now_unix(&self) -> u64 {
        1_700_000_000
    }
    fn random_bytes(&self) -> [u8; 16] {
        [9; 16]
    }
    fn log_error(&self, m: &str) {
        eprintln!("{m}");
    }
}

fn registry(auth: bool, cost: u32) -> Registry {
    let vars: Vec<(&str, String)> = if auth {
        vec![
            ("PIER_AUTH_HTPASSWD", format!("alice:{}\n", hash_password(b"alice-pw", cost, [1; 16]).expect("hash"))),
            ("PIER_AUTH_TOKEN_SECRET", "b".repeat(32)),
            ("PIER_AUTH_SERVICE", "bench".into()),
        ]
    } else {
        Vec::new()
    };
    let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).expect("config");
    Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config, Rc::new(BenchEnv))
}

fn call(reg: &Registry, method: Method, uri: &str, auth: Option<&str>, body: Body) -> pier::api::Response {
    let mut r = Request::new(body);
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().expect("bench uri");
    r.headers_mut().insert("host", HeaderValue::from_static("bench"));
    if let Some(a) = auth {
        r.headers_mut().insert("authorization", HeaderValue::from_str(a).expect("header"));
    }
    block_on(reg.handle(r))
}

fn push_image(reg: &Registry, auth: Option<&str>) {
    let blob = |data: &[u8]| {
        let digest = Algorithm::Sha256.digest(data).to_string();
        let uri = format!("/v2/bench/app/blobs/uploads/?digest={digest}");
        assert_eq!(call(reg, Method::POST, &uri, auth, Body::Full(Bytes::copy_from_slice(data))).status(), StatusCode::CREATED);
        digest
    };
    let config_bytes = b"{\"architecture\":\"amd64\",\"os\":\"linux\"}";
    let config = blob(config_bytes);
    let layer = blob(&[7u8; 4096]);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":4096}}]}}"#,
        config_bytes.len()
    );
    let mut put = Request::new(Body::Full(Bytes::from(manifest)));
    *put.method_mut() = Method::PUT;
    *put.uri_mut() = "/v2/bench/app/manifests/latest".parse().expect("uri");
    put.headers_mut().insert("content-type", HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"));
    put.headers_mut().insert("host", HeaderValue::from_static("bench"));
    if let Some(a) = auth {
        put.headers_mut().insert("authorization", HeaderValue::from_str(a).expect("header"));
    }
    assert_eq!(block_on(reg.handle(put)).status(), StatusCode::CREATED);
}

fn login(c: &mut Criterion) {
    let mut g = c.benchmark_group("bcrypt verify (login)");
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    for cost in 5..=12 {
        let h = BcryptHash::parse(&hash_password(b"alice-pw", cost, [1; 16]).expect("hash")).expect("parse");
        g.bench_with_input(BenchmarkId::from_parameter(cost), &h, |b, h| b.iter(|| assert!(h.verify(b"alice-pw"))));
    }
    g.finish();

    let reg = registry(true, 10);
    let basic = format!("Basic {}", STANDARD.encode("alice:alice-pw"));
    let mut g = c.benchmark_group("token endpoint");
    g.sample_size(10);
    g.bench_function("GET /token, Basic, cost 10 (cache hit after the first)", |b| {
        b.iter(|| {
            let r = call(&reg, Method::GET, "/token?service=bench&scope=repository:bench/app:pull,push", Some(&basic), Body::Empty);
            assert_eq!(r.status(), StatusCode::OK);
        })
    });
    g.finish();
}

fn verified_request(c: &mut Criterion) {
    let open = registry(false, 10);
    push_image(&open, None);
    let reg = registry(true, 10);
    let basic = format!("Basic {}", STANDARD.encode("alice:alice-pw"));
    push_image(&reg, Some(&basic));
    let r = call(&reg, Method::GET, "/token?service=bench&scope=repository:bench/app:pull", Some(&basic), Body::Empty);
    let body = match r.into_body() {
        Body::Full(b) => b,
        _ => panic!("token body"),
    };
    let token = serde_json::from_slice::<serde_json::Value>(&body).expect("json")["token"].as_str().expect("token").to_string();
    let bearer = format!("Bearer {token}");

    let mut g = c.benchmark_group("manifest GET");
    g.bench_function("no access control", |b| {
        b.iter(|| assert_eq!(call(&open, Method::GET, "/v2/bench/app/manifests/latest", None, Body::Empty).status(), StatusCode::OK))
    });
    g.bench_function("Bearer token", |b| {
        b.iter(|| assert_eq!(call(&reg, Method::GET, "/v2/bench/app/manifests/latest", Some(&bearer), Body::Empty).status(), StatusCode::OK))
    });
    g.bench_function("Basic, cached", |b| {
        b.iter(|| assert_eq!(call(&reg, Method::GET, "/v2/bench/app/manifests/latest", Some(&basic), Body::Empty).status(), StatusCode::OK))
    });
    g.finish();
}

criterion_group!(benches, login, verified_request);
criterion_main!(benches);
