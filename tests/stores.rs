//! The S3 and Azure Blob backends against real emulators that check signatures: s3s-fs (SigV4 headers, payload
//! hashes, presigned URLs) at `PIER_TEST_S3_ENDPOINT` (access key `pier-test-ak`, secret `pier-test-sk`, bucket `pier`)
//! and Azurite at `PIER_TEST_AZURE_ENDPOINT` (e.g. `http://127.0.0.1:10000/devstoreaccount1`, the development key).
//! `scripts/test-stores` starts both and sets these; without them every test here says it is skipped and passes.
//!
//! Two kinds of test: the store's own operations (put, head, ranged get, list, multipart, rename, delete, errors) through
//! the native HTTP client, and `pier serve` over each backend answering a blob GET with a 307 to a presigned URL that
//! returns the right bytes, while a tampered or expired URL is refused with 403.

use bytes::Bytes;
use futures::StreamExt;
use pier::platform::native_http::NativeHttpClient;
use pier::storage::config::StorageConfig;
use pier::storage::object_meta::ObjectMetaStore;
use pier::storage::{MetaStore, ObjectStore, Precondition};
use pier::upload::PartRecord;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const AZURITE_KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn unique(prefix: &str) -> String {
    let n = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}{}{}", std::process::id(), n % 1_000_000_000)
}

/// Settings of the S3 backend on s3s-fs, or None (skip) when no emulator is configured.
fn s3_settings(root: &str, secret: &str) -> Option<Vec<(String, String)>> {
    let endpoint = std::env::var("PIER_TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty())?;
    Some(
        [
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "pier-test-ak"),
            ("REGISTRY_STORAGE_S3_SECRETKEY", secret),
            ("REGISTRY_STORAGE_S3_REGION", "us-east-1"),
            ("REGISTRY_STORAGE_S3_REGIONENDPOINT", &endpoint),
            ("REGISTRY_STORAGE_S3_BUCKET", "pier"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_S3_ROOTDIRECTORY", root),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

/// Settings of the Azure backend on Azurite, or None (skip).
fn azure_settings(container: &str, key: &str) -> Option<Vec<(String, String)>> {
    let endpoint = std::env::var("PIER_TEST_AZURE_ENDPOINT").ok().filter(|e| !e.is_empty())?;
    Some(
        [
            ("REGISTRY_STORAGE", "azure"),
            ("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "devstoreaccount1"),
            ("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", key),
            ("REGISTRY_STORAGE_AZURE_CONTAINER", container),
            ("PIER_STORAGE_AZURE_ENDPOINT", &endpoint),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    )
}

fn build_store(settings: &[(String, String)]) -> Rc<dyn ObjectStore> {
    let map: HashMap<String, String> = settings.iter().cloned().collect();
    let http = Rc::new(NativeHttpClient::new().unwrap());
    let clock = Rc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs());
    match StorageConfig::from_lookup(|k| map.get(k).cloned()).unwrap() {
        StorageConfig::S3(s) => Rc::new(s.build(http, clock).unwrap()),
        StorageConfig::Azure(a) => Rc::new(a.build(http, clock).unwrap()),
        other => panic!("not an HTTP backend: {other:?}"),
    }
}

fn run_local<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f);
}

async fn read_all(store: &dyn ObjectStore, key: &str, range: Option<(u64, u64)>) -> Option<(u64, Vec<u8>)> {
    let range = range.map(|(start, end)| pier::spec::range::ByteRange { start, end });
    let read = store.get(key, range).await.unwrap()?;
    let mut body = read.body;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    Some((read.size, out))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Every operation of the trait against a live emulator. `checks_part_etags`: whether the service refuses to complete
/// a multipart upload with a part etag that is not the stored part's (S3, R2, MinIO and Azure do; s3s-fs does not).
async fn exercise(store: Rc<dyn ObjectStore>, checks_part_etags: bool) {
    let s = store.as_ref();
    let data = pattern(1000, 7);
    s.put("x/a", Bytes::from(data.clone())).await.unwrap();
    assert_eq!(s.head("x/a").await.unwrap(), Some(1000));
    assert_eq!(s.head("x/missing").await.unwrap(), None);
    assert!(s.get("x/missing", None).await.unwrap().is_none());
    let (size, bytes) = read_all(s, "x/a", Some((10, 19))).await.unwrap();
    assert_eq!((size, bytes.as_slice()), (1000, &data[10..20]));
    assert_eq!(read_all(s, "x/a", None).await.unwrap().1, data);

    // Listing: order, start_after, limit.
    for k in ["x/b", "x/c/d", "x/c-e", "y/z"] {
        s.put(k, Bytes::from_static(b"v")).await.unwrap();
    }
    assert_eq!(s.list("x/", None, 100).await.unwrap(), ["x/a", "x/b", "x/c-e", "x/c/d"]);
    assert_eq!(s.list("x/", Some("x/b"), 1).await.unwrap(), ["x/c-e"]);
    assert!(s.list("nothing/", None, 10).await.unwrap().is_empty());

    // Multipart: two parts (the first at the minimum part size), assembled in order.
    let min = s.min_part_size().max(100) as usize;
    let p1 = pattern(min, 1);
    let p2 = pattern(1234, 2);
    let id = s.create_multipart("mp/obj").await.unwrap();
    let e2 = s.upload_part("mp/obj", &id, 2, Bytes::from(p2.clone())).await.unwrap();
    let e1 = s.upload_part("mp/obj", &id, 1, Bytes::from(p1.clone())).await.unwrap();
    let parts = [
        PartRecord { number: 1, etag: e1, size: p1.len() as u64 },
        PartRecord { number: 2, etag: e2, size: p2.len() as u64 },
    ];
    s.complete_multipart("mp/obj", &id, &parts).await.unwrap();
    let whole: Vec<u8> = p1.iter().chain(p2.iter()).copied().collect();
    let (size, got) = read_all(s, "mp/obj", Some((min as u64 - 2, min as u64 + 1))).await.unwrap();
    assert_eq!(size, whole.len() as u64);
    assert_eq!(got, &whole[min - 2..min + 2]);

    // An aborted upload leaves nothing behind.
    let id = s.create_multipart("mp/aborted").await.unwrap();
    s.upload_part("mp/aborted", &id, 1, Bytes::from_static(b"zz")).await.unwrap();
    s.abort_multipart("mp/aborted", &id).await.unwrap();
    assert_eq!(s.head("mp/aborted").await.unwrap(), None);

    // Rename: server-side copy, then the source is gone.
    assert!(s.can_rename());
    s.rename("mp/obj", "blobs/sha256/final").await.unwrap();
    assert_eq!(s.head("mp/obj").await.unwrap(), None);
    assert_eq!(read_all(s, "blobs/sha256/final", None).await.unwrap().1, whole);

    // Delete is idempotent.
    s.delete("x/a").await.unwrap();
    s.delete("x/a").await.unwrap();
    assert_eq!(s.head("x/a").await.unwrap(), None);

    // Metadata kept in the same store: nested keys coexist (a file-backed S3 server would otherwise refuse).
    let meta = ObjectMetaStore::new(store.clone(), "meta/");
    for k in ["_catalog/a", "_catalog/a/b", "_catalog/a-c", "_catalog/b"] {
        meta.put(k, Bytes::from(k.to_string())).await.unwrap();
    }
    assert_eq!(meta.list("_catalog/", None, 10).await.unwrap(), ["_catalog/a", "_catalog/a-c", "_catalog/a/b", "_catalog/b"]);
    assert_eq!(meta.list("_catalog/", Some("_catalog/a-c"), 10).await.unwrap(), ["_catalog/a/b", "_catalog/b"]);
    assert_eq!(meta.get("_catalog/a/b").await.unwrap().unwrap(), "_catalog/a/b");
    assert!(meta.get("_catalog/zz").await.unwrap().is_none());

    // Conditional writes, the store's own: create-if-absent, replace-if-unchanged, and the loser of each told so.
    let v1 = meta.put_if("_uploads/s", Bytes::from_static(b"one"), &Precondition::Absent).await.unwrap().expect("created");
    assert!(meta.put_if("_uploads/s", Bytes::from_static(b"x"), &Precondition::Absent).await.unwrap().is_none());
    let read = meta.get_versioned("_uploads/s").await.unwrap().unwrap();
    assert_eq!((read.value.as_ref(), read.version.as_str()), (&b"one"[..], v1.as_str()));
    let v2 = meta.put_if("_uploads/s", Bytes::from_static(b"two"), &Precondition::Version(v1.clone())).await.unwrap().expect("replaced");
    assert_ne!(v1, v2);
    assert!(meta.put_if("_uploads/s", Bytes::from_static(b"x"), &Precondition::Version(v1)).await.unwrap().is_none());
    assert_eq!(meta.get("_uploads/s").await.unwrap().unwrap(), "two");
    meta.delete("_uploads/s").await.unwrap();
    assert!(meta.put_if("_uploads/s", Bytes::from_static(b"x"), &Precondition::Version(v2)).await.unwrap().is_none());
    assert!(meta.get("_uploads/s").await.unwrap().is_none());

    // A part written twice: completing with the first write's etag must give the first write's bytes or fail with
    // BLOB_UPLOAD_INVALID — never the second write's bytes under the first's record.
    let first = pattern(min, 3);
    let second = pattern(min, 4);
    let id = s.create_multipart("mp/twice").await.unwrap();
    let e_first = s.upload_part("mp/twice", &id, 1, Bytes::from(first.clone())).await.unwrap();
    let e_second = s.upload_part("mp/twice", &id, 1, Bytes::from(second.clone())).await.unwrap();
    assert_ne!(e_first, e_second);
    let parts = [PartRecord { number: 1, etag: e_first, size: min as u64 }];
    match s.complete_multipart("mp/twice", &id, &parts).await {
        Ok(()) if checks_part_etags => {
            assert!(read_all(s, "mp/twice", None).await.unwrap().1 == first, "completed with the other write's bytes")
        }
        Ok(()) => {}
        Err(e) => assert_eq!(e.code, pier::ErrorCode::BlobUploadInvalid, "{e}"),
    }
    // Completing with an etag that was never written fails as a parts mismatch (a 4xx), not a storage failure.
    let id = s.create_multipart("mp/unknown").await.unwrap();
    s.upload_part("mp/unknown", &id, 1, Bytes::from_static(b"zz")).await.unwrap();
    let bogus = [PartRecord { number: 1, etag: "\"0123456789abcdef0123456789abcdef\"".into(), size: 2 }];
    match s.complete_multipart("mp/unknown", &id, &bogus).await {
        Ok(()) if checks_part_etags => panic!("completed a multipart upload from a part that was never written"),
        Ok(()) => {}
        Err(e) => assert_eq!(e.code, pier::ErrorCode::BlobUploadInvalid, "unknown etag: {e}"),
    }
}

#[test]
fn s3_store_operations_on_s3s_fs() {
    let Some(settings) = s3_settings(&unique("ops"), "pier-test-sk") else {
        eprintln!("skipping: PIER_TEST_S3_ENDPOINT is not set (scripts/test-stores sets it)");
        return;
    };
    run_local(exercise(build_store(&settings), false));
}

#[test]
fn azure_store_operations_on_azurite() {
    let Some(settings) = azure_settings(&unique("ops"), AZURITE_KEY) else {
        eprintln!("skipping: PIER_TEST_AZURE_ENDPOINT is not set (scripts/test-stores sets it)");
        return;
    };
    run_local(exercise(build_store(&settings), true));
}

#[test]
fn wrong_keys_are_refused_with_the_service_code_and_no_secret() {
    let cases = [
        (s3_settings(&unique("bad"), "wrong-secret-value"), "SignatureDoesNotMatch"),
        (
            azure_settings(&unique("bad"), "d3JvbmctYWNjb3VudC1rZXktdmFsdWUtd3Jvbmcta2V5LXZhbHVl"),
            // Azure answers AuthenticationFailed, Azurite AuthorizationFailure.
            "HTTP 403 Auth",
        ),
    ];
    let mut ran = 0;
    for (settings, code) in cases {
        let Some(settings) = settings else { continue };
        ran += 1;
        run_local(async move {
            let store = build_store(&settings);
            let err = store.put("k", Bytes::from_static(b"v")).await.unwrap_err();
            let detail = err.detail.map(|d| d.to_string()).unwrap_or_default();
            assert!(detail.contains(code), "{detail}");
            assert!(!detail.contains("wrong-secret-value") && !detail.contains("d3Jvbmc"), "{detail}");
        });
    }
    if ran == 0 {
        eprintln!("skipping: no emulator configured");
    }
}

/// A `pier serve` child with `env`, killed by PID on drop.
struct Pier {
    child: Child,
    base: String,
}

impl Pier {
    fn start(env: &[(String, String)]) -> Pier {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pier"));
        cmd.args(["serve", "--addr", "127.0.0.1:0"]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env_remove("REGISTRY_STORAGE_REDIRECT_DISABLE");
        let mut child = cmd.spawn().expect("spawn pier");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let base = line.trim().strip_prefix("pier listening on ").unwrap_or_else(|| panic!("pier said {line:?}")).to_string();
        Pier { child, base }
    }
}

impl Drop for Pier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(30)).build()
}

fn status_of(r: Result<ureq::Response, ureq::Error>) -> (u16, Option<ureq::Response>) {
    match r {
        Ok(resp) => (resp.status(), Some(resp)),
        Err(ureq::Error::Status(code, resp)) => (code, Some(resp)),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Push a blob, then check: GET answers 307 to a URL that yields the bytes (and honours Range); the URL with its
/// signature altered is refused (403); a URL past its expiry is refused (403).
fn check_redirects(settings: Vec<(String, String)>, signature_param: &str) {
    let agent = agent();
    let data = pattern(300_000, 9);
    let digest = format!("sha256:{}", pier_hex(&Sha256::digest(&data)));
    let repo = unique("redir");

    let pier = Pier::start(&settings);
    let (status, _) = status_of(
        agent.post(&format!("{}/v2/{repo}/blobs/uploads/?digest={digest}", pier.base)).send_bytes(&data),
    );
    assert_eq!(status, 201);
    let (status, resp) = status_of(agent.get(&format!("{}/v2/{repo}/blobs/{digest}", pier.base)).call());
    assert_eq!(status, 307);
    let location = resp.unwrap().header("location").unwrap().to_string();
    assert!(!location.starts_with(&pier.base), "{location}");
    let (status, resp) = status_of(agent.get(&location).call());
    assert_eq!(status, 200);
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut resp.unwrap().into_reader(), &mut got).unwrap();
    assert!(got == data, "presigned GET returned {} bytes, not the blob", got.len());
    let (status, resp) = status_of(agent.get(&location).set("range", "bytes=5-9").call());
    assert_eq!(status, 206);
    let mut part = Vec::new();
    std::io::Read::read_to_end(&mut resp.unwrap().into_reader(), &mut part).unwrap();
    assert_eq!(part, &data[5..10]);

    // A suffix range: redirected only where the presigned URL honours it (S3), else served by Pier (Azure's SAS
    // URLs do not serve `bytes=-N`).
    let (status, resp) = status_of(agent.get(&format!("{}/v2/{repo}/blobs/{digest}", pier.base)).set("range", "bytes=-500").call());
    let resp = match status {
        307 => {
            let to = resp.unwrap().header("location").unwrap().to_string();
            let (status, resp) = status_of(agent.get(&to).set("range", "bytes=-500").call());
            assert_eq!(status, 206, "the presigned URL with a suffix range");
            resp
        }
        206 => resp,
        other => panic!("suffix range: status {other}"),
    };
    let resp = resp.unwrap();
    assert_eq!(resp.header("content-range"), Some(format!("bytes {}-{}/{}", data.len() - 500, data.len() - 1, data.len()).as_str()));
    let mut tail = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut tail).unwrap();
    assert!(tail == data[data.len() - 500..], "suffix range bytes");

    // Tampered: one character of the signature changed.
    let at = location.find(&format!("{signature_param}=")).expect("signature parameter") + signature_param.len() + 1;
    let mut tampered = location.clone().into_bytes();
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    let (status, _) = status_of(agent.get(&String::from_utf8(tampered).unwrap()).call());
    assert_eq!(status, 403, "tampered URL");
    // Tampered: another object under the same signature.
    let other = location.replacen(&digest[7..17], "0000000000", 1);
    let (status, _) = status_of(agent.get(&other).call());
    assert_eq!(status, 403, "URL of another object");
    drop(pier);

    // Expired: a server whose URLs live one second.
    let mut short = settings.clone();
    short.push(("PIER_REDIRECT_EXPIRY".into(), "1".into()));
    let pier = Pier::start(&short);
    let (status, resp) = status_of(agent.get(&format!("{}/v2/{repo}/blobs/{digest}", pier.base)).call());
    assert_eq!(status, 307);
    let location = resp.unwrap().header("location").unwrap().to_string();
    std::thread::sleep(Duration::from_millis(2500));
    let (status, _) = status_of(agent.get(&location).call());
    assert_eq!(status, 403, "expired URL");
}

fn pier_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn s3_blob_get_redirects_to_a_presigned_url() {
    let Some(settings) = s3_settings(&unique("redir"), "pier-test-sk") else {
        eprintln!("skipping: PIER_TEST_S3_ENDPOINT is not set");
        return;
    };
    check_redirects(settings, "X-Amz-Signature");
}

#[test]
fn azure_blob_get_redirects_to_a_read_sas() {
    let Some(settings) = azure_settings(&unique("redir"), AZURITE_KEY) else {
        eprintln!("skipping: PIER_TEST_AZURE_ENDPOINT is not set");
        return;
    };
    check_redirects(settings, "sig");
}
