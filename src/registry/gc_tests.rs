//! Garbage collection against the core: what goes, what stays, the races of the module doc made to happen in both
//! orders, slices, and a randomized run of pushes (with HEAD-skips and mounts), tag moves and deletes interleaved at
//! store-call granularity with collection slices.

use super::gc::{GcOptions, GcReport};
use super::*;
use crate::api::Body;
use crate::spec::media_types::OCI_MANIFEST;
use crate::spec::{Algorithm, RepositoryName};
use crate::storage::faulty::FaultPlan;
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use bytes::Bytes;
use futures::executor::block_on;
use super::test_env::{body, TestEnv};

struct Fixture {
    reg: Registry,
    objects: Rc<MemoryObjectStore>,
    plan: Rc<FaultPlan>,
    env: Rc<TestEnv>,
}

fn request(method: Method, uri: &str, body: Vec<u8>) -> Request {
    let mut r = Request::new(Body::Full(Bytes::from(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    if uri.contains("/manifests/") {
        r.headers_mut().insert("content-type", OCI_MANIFEST.parse().unwrap());
    }
    r
}

fn manifest(blobs: &[&[u8]]) -> Vec<u8> {
    let d = |b: &[u8]| serde_json::json!({ "mediaType": "application/octet-stream", "digest": Algorithm::Sha256.digest(b).to_string(), "size": b.len() });
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": d(blobs[0]), "layers": blobs[1..].iter().map(|b| d(b)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

const GRACE0: GcOptions = GcOptions { grace_secs: 0, dry_run: false, max_calls: u64::MAX, untagged_after_secs: None };

impl Fixture {
    fn new() -> Self {
        Self::build(false)
    }

    /// With the read cache of Workers' memory tier in front of the metadata (see `storage::cache`).
    fn cached() -> Self {
        Self::build(true)
    }

    fn build(cached: bool) -> Self {
        let objects = Rc::new(MemoryObjectStore::new());
        let plan = FaultPlan::counting();
        let (o, m) = plan.wrap(objects.clone(), Rc::new(MemoryMetaStore::new()));
        let env = Rc::new(TestEnv::at(1_000_000));
        let config = Config { delete_enabled: true, part_size: 64, ..Config::default() };
        let mut reg = Registry::new(o, m, config, env.clone());
        if cached {
            let clock = env.clone();
            let memory = Rc::new(crate::storage::cache::MemoryCache::new(Rc::new(move || clock.now.get())));
            reg = reg.with_read_cache(memory, None, Rc::default());
        }
        Fixture { reg, objects, plan, env }
    }

    fn send(&self, req: Request) -> Response {
        block_on(self.reg.handle(req))
    }

    fn push_blob(&self, repo: &str, data: &[u8]) {
        let digest = Algorithm::Sha256.digest(data);
        let r = self.send(request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), data.to_vec()));
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    fn push_image(&self, repo: &str, tag: &str, blobs: &[&[u8]]) -> String {
        for b in blobs {
            self.push_blob(repo, b);
        }
        let m = manifest(blobs);
        let r = self.send(request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), m.clone()));
        assert_eq!(r.status(), StatusCode::CREATED, "{}", String::from_utf8_lossy(&body(r)));
        Algorithm::Sha256.digest(&m).to_string()
    }

    fn status(&self, method: Method, uri: &str) -> StatusCode {
        self.send(request(method, uri, vec![])).status()
    }

    fn gc(&self) -> GcReport {
        self.gc_with(&GRACE0)
    }

    fn gc_with(&self, options: &GcOptions) -> GcReport {
        loop {
            let p = block_on(self.reg.gc_slice(options)).unwrap();
            assert!(!p.busy);
            if p.cycle_done {
                return p.report;
            }
        }
    }

    fn has_bytes(&self, data: &[u8]) -> bool {
        let key = keys::blob_data(&Algorithm::Sha256.digest(data));
        self.objects.keys().contains(&key)
    }

    /// Pull `repo:tag` whole: the manifest and every blob's bytes.
    fn pulls(&self, repo: &str, tag: &str, blobs: &[&[u8]]) -> bool {
        let r = self.send(request(Method::GET, &format!("/v2/{repo}/manifests/{tag}"), vec![]));
        if r.status() != StatusCode::OK {
            return false;
        }
        blobs.iter().all(|b| {
            let r = self.send(request(Method::GET, &format!("/v2/{repo}/blobs/{}", Algorithm::Sha256.digest(b)), vec![]));
            r.status() == StatusCode::OK && body(r) == *b
        })
    }
}

#[test]
fn deleted_content_goes_after_two_cycles_and_shared_content_stays() {
    let f = Fixture::new();
    let (cfg_a, cfg_b, shared, only_a) = (b"config a".as_slice(), b"config b".as_slice(), b"shared layer".as_slice(), b"layer of a only".as_slice());
    let a = f.push_image("team/a", "v1", &[cfg_a, shared, only_a]);
    f.push_image("team/b", "v1", &[cfg_b, shared]);
    // Nothing is unreferenced: nothing is marked.
    let r = f.gc();
    assert_eq!((r.links_tombstoned, r.blobs_tombstoned, r.links_deleted, r.blobs_deleted), (0, 0, 0, 0));
    assert_eq!(f.status(Method::DELETE, &format!("/v2/team/a/manifests/{a}")), StatusCode::ACCEPTED);
    let first = f.gc();
    assert_eq!(first.links_tombstoned, 3);
    assert_eq!(first.blobs_deleted, 0, "the first cycle only marks");
    assert!(f.has_bytes(only_a));
    let second = f.gc();
    assert_eq!((second.links_deleted, second.blobs_tombstoned, second.blobs_deleted), (3, 2, 0));
    let third = f.gc();
    assert_eq!(third.blobs_deleted, 2);
    assert_eq!(third.bytes_reclaimed, (cfg_a.len() + only_a.len()) as u64);
    assert!(!f.has_bytes(cfg_a) && !f.has_bytes(only_a));
    assert!(f.has_bytes(shared) && f.has_bytes(cfg_b));
    assert!(f.pulls("team/b", "v1", &[cfg_b, shared]));
    assert_eq!(f.status(Method::HEAD, &format!("/v2/team/a/blobs/{}", Algorithm::Sha256.digest(only_a))), StatusCode::NOT_FOUND);
    // The report of the last cycle is kept.
    assert_eq!(block_on(f.reg.gc_last_report()).unwrap().unwrap().cycle, third.cycle);
}

#[test]
fn a_manifest_pushed_onto_a_marked_link_revives_it() {
    let f = Fixture::new();
    let (cfg, layer) = (b"cfg".as_slice(), b"layer".as_slice());
    let d = f.push_image("r", "v1", &[cfg, layer]);
    assert_eq!(f.status(Method::DELETE, &format!("/v2/r/manifests/{d}")), StatusCode::ACCEPTED);
    assert_eq!(f.gc().links_tombstoned, 2);
    // The client HEADs the blobs (still there), skips the uploads and pushes its manifest.
    assert_eq!(f.status(Method::HEAD, &format!("/v2/r/blobs/{}", Algorithm::Sha256.digest(layer))), StatusCode::OK);
    let m = manifest(&[cfg, layer]);
    assert_eq!(f.send(request(Method::PUT, "/v2/r/manifests/v2", m)).status(), StatusCode::CREATED);
    for _ in 0..3 {
        let r = f.gc();
        assert_eq!((r.links_deleted, r.blobs_deleted), (0, 0));
    }
    assert!(f.pulls("r", "v2", &[cfg, layer]));
}

#[test]
fn a_manifest_pushed_after_its_blob_was_collected_is_refused_not_accepted() {
    let f = Fixture::new();
    let (cfg, layer) = (b"cfg".as_slice(), b"layer".as_slice());
    let d = f.push_image("r", "v1", &[cfg, layer]);
    assert_eq!(f.status(Method::DELETE, &format!("/v2/r/manifests/{d}")), StatusCode::ACCEPTED);
    f.gc();
    f.gc();
    let r = f.send(request(Method::PUT, "/v2/r/manifests/v2", manifest(&[cfg, layer])));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body(r)).contains("MANIFEST_BLOB_UNKNOWN"));
    // The client uploads again and the push goes through.
    f.push_image("r", "v2", &[cfg, layer]);
    f.gc();
    f.gc();
    assert!(f.pulls("r", "v2", &[cfg, layer]));
}

#[test]
fn uploads_and_mounts_revive_a_marked_record_and_refuse_a_deleting_one() {
    let f = Fixture::new();
    let (cfg, layer) = (b"cfg".as_slice(), b"layer".as_slice());
    let d = f.push_image("a", "v1", &[cfg, layer]);
    f.push_blob("keep", b"x");
    assert_eq!(f.status(Method::DELETE, &format!("/v2/a/manifests/{d}")), StatusCode::ACCEPTED);
    f.gc(); // links marked
    f.gc(); // links deleted, records marked
    // A new upload of the same bytes in another repository revives the marked record (no second copy stored).
    f.push_blob("b", layer);
    let r = f.gc();
    assert_eq!(r.blobs_deleted, 1, "only the config goes");
    assert!(f.has_bytes(layer));
    // Mark the layer's record as being deleted, as a collection half-way through would have left it.
    let key = keys::blob_record(&Algorithm::Sha256.digest(layer));
    block_on(async {
        let raw = f.reg.meta.get(&key).await.unwrap().unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["gc"] = serde_json::json!({ "cycle": 1, "at": 0, "deleting": true });
        f.reg.meta.put(&key, Bytes::from(serde_json::to_vec(&v).unwrap())).await.unwrap();
    });
    // A mount falls back to an upload; an upload of the bytes stores its own copy under its own key.
    let mount = f.send(request(Method::POST, &format!("/v2/c/blobs/uploads/?mount={}&from=b", Algorithm::Sha256.digest(layer)), vec![]));
    assert_eq!(mount.status(), StatusCode::ACCEPTED);
    assert_eq!(f.status(Method::HEAD, &format!("/v2/c/blobs/{}", Algorithm::Sha256.digest(layer))), StatusCode::NOT_FOUND);
    f.push_blob("c", layer);
    let r = f.send(request(Method::GET, &format!("/v2/c/blobs/{}", Algorithm::Sha256.digest(layer)), vec![]));
    assert_eq!(body(r), layer);
}

#[test]
fn small_slices_reach_the_same_result() {
    let f = Fixture::new();
    let mut digests = Vec::new();
    for i in 0..6u8 {
        let (cfg, layer) = (vec![b'c', i], vec![b'l', i]);
        digests.push((format!("repo{i}"), f.push_image(&format!("repo{i}"), "v1", &[&cfg, &layer]), cfg, layer));
    }
    for (repo, d, _, _) in digests.iter().step_by(2) {
        assert_eq!(f.status(Method::DELETE, &format!("/v2/{repo}/manifests/{d}")), StatusCode::ACCEPTED);
    }
    let small = GcOptions { grace_secs: 0, dry_run: false, max_calls: 12, untagged_after_secs: None };
    let mut slices = 0;
    for _ in 0..3 {
        let before = f.plan.calls();
        let r = f.gc_with(&small);
        slices += r.slices;
        assert!(f.plan.calls() - before <= r.slices * 12 + r.slices, "a slice kept within its calls");
    }
    assert!(slices > 3, "a cycle took several slices");
    for (i, (repo, _, cfg, layer)) in digests.iter().enumerate() {
        let kept = i % 2 == 1;
        assert_eq!(f.has_bytes(cfg), kept, "{repo}");
        assert_eq!(f.has_bytes(layer), kept, "{repo}");
        if kept {
            assert!(f.pulls(repo, "v1", &[cfg, layer]));
        }
    }
}

#[test]
fn a_dry_run_reports_and_changes_nothing() {
    let f = Fixture::new();
    let d = f.push_image("r", "v1", &[b"cfg", b"layer"]);
    assert_eq!(f.status(Method::DELETE, &format!("/v2/r/manifests/{d}")), StatusCode::ACCEPTED);
    let keys_before = f.objects.keys();
    let r = f.gc_with(&GcOptions { grace_secs: 0, dry_run: true, max_calls: u64::MAX, untagged_after_secs: None });
    assert_eq!((r.links_deleted, r.blobs_deleted, r.bytes_reclaimed), (2, 2, 8));
    assert_eq!(f.objects.keys(), keys_before);
    assert!(block_on(f.reg.gc_last_report()).unwrap().is_none());
    assert_eq!(f.gc().links_tombstoned, 2, "the real run starts from scratch");
}

#[test]
fn the_grace_period_holds_marked_content() {
    let f = Fixture::new();
    let d = f.push_image("r", "v1", &[b"cfg", b"layer"]);
    assert_eq!(f.status(Method::DELETE, &format!("/v2/r/manifests/{d}")), StatusCode::ACCEPTED);
    let hour = GcOptions { grace_secs: 3600, dry_run: false, max_calls: u64::MAX, untagged_after_secs: None };
    f.gc_with(&hour);
    assert_eq!(f.gc_with(&hour).links_deleted, 0);
    f.env.now.set(f.env.now.get() + 3600);
    assert_eq!(f.gc_with(&hour).links_deleted, 2);
}

/// A tiny deterministic PRNG (xorshift) for the randomized run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Pushes that reuse layers (HEAD-skip and mount), tag moves and deletes, each interleaved store call by store call
/// with collection slices (grace 0, so everything that can be collected is). At the end every tag whose push answered
/// 201 and that was not deleted or moved since pulls intact.
#[test]
fn randomized_pushes_and_deletes_with_collection_running() {
    let seeds: u64 = std::env::var("PIER_GC_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(12);
    for seed in 1..=seeds {
        randomized_run(seed);
    }
}

#[test]
fn randomized_pushes_and_deletes_with_collection_running_behind_a_read_cache() {
    let seeds: u64 = std::env::var("PIER_GC_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6);
    for seed in 1..=seeds {
        let f = Fixture::cached();
        let reg = randomized_run_with(seed, f);
        let stats = reg.cache_stats().unwrap();
        assert!(stats.memory_hits > 0 && stats.misses > 0, "seed {seed}: the cache took part ({stats:?})");
    }
}

fn randomized_run(seed: u64) {
    randomized_run_with(seed, Fixture::new());
}

/// One randomized run; gives the registry back for the caller's own checks.
fn randomized_run_with(seed: u64, f: Fixture) -> Registry {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let layers: Vec<Vec<u8>> = (0..6).map(|i| format!("layer {i} of a shared pool").into_bytes()).collect();
    let repos = ["ra", "rb", "rc"];
    // tag → (repository, blobs) that the last 201 put there.
    let mut expected: std::collections::BTreeMap<(String, String), Vec<Vec<u8>>> = Default::default();
    for step in 0..40 {
        f.plan.set_interleave(Some(rng.next() | 1));
        let repo = repos[rng.below(3) as usize];
        let tag = format!("t{}", rng.below(4));
        let action = rng.below(10);
        let gc_options = GcOptions {
            grace_secs: 0,
            dry_run: false,
            max_calls: 6 + rng.below(20),
            // Every other seed also collects untagged manifests at once (the strictest policy).
            untagged_after_secs: (seed % 2 == 0).then_some(0),
        };
        let client = async {
            match action {
                0..=5 => {
                    // A push: config unique to this step, two layers from the pool; each layer HEAD-skipped if the
                    // repository has it, mounted from another repository if that one has it, uploaded otherwise.
                    let cfg = format!("config {seed} {step}").into_bytes();
                    let picked: Vec<Vec<u8>> = (0..2).map(|_| layers[rng.below(6) as usize].clone()).collect();
                    let mut blobs = vec![cfg];
                    blobs.extend(picked);
                    for b in &blobs {
                        let digest = Algorithm::Sha256.digest(b);
                        let head = f.reg.handle(request(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), vec![])).await;
                        if head.status() == StatusCode::OK {
                            continue;
                        }
                        let from = repos[(repos.iter().position(|r| *r == repo).unwrap_or(0) + 1) % 3];
                        let m = f.reg.handle(request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"), vec![])).await;
                        if m.status() == StatusCode::CREATED {
                            continue;
                        }
                        let up = f.reg.handle(request(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), b.clone())).await;
                        if up.status() != StatusCode::CREATED {
                            return None;
                        }
                    }
                    let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
                    let put = f.reg.handle(request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), manifest(&refs))).await;
                    Some((put.status(), Some(blobs)))
                }
                6..=7 => {
                    let r = f.reg.handle(request(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}"), vec![])).await;
                    Some((r.status(), None))
                }
                _ => {
                    // Delete by digest whatever the tag points at (its other tags go with it).
                    let got = f.reg.handle(request(Method::HEAD, &format!("/v2/{repo}/manifests/{tag}"), vec![])).await;
                    let digest = got.headers().get("docker-content-digest")?.to_str().ok()?.to_string();
                    let r = f.reg.handle(request(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"), vec![])).await;
                    Some((r.status(), Some(vec![digest.into_bytes()])))
                }
            }
        };
        let collector = async {
            let _ = f.reg.gc_slice(&gc_options).await;
        };
        let (outcome, ()) = block_on(futures::future::join(client, collector));
        f.plan.set_interleave(None);
        let key = (repo.to_string(), tag.clone());
        match (action, outcome) {
            (0..=5, Some((StatusCode::CREATED, Some(blobs)))) => {
                expected.insert(key, blobs);
            }
            (0..=5, _) => {
                // A refused push leaves the tag where it was (the refusal comes before the tag is written).
            }
            (6..=7, Some((StatusCode::ACCEPTED, _))) => {
                expected.remove(&key);
            }
            (8..=9, Some((StatusCode::ACCEPTED, Some(d)))) => {
                let digest = String::from_utf8(d[0].clone()).unwrap_or_default();
                // Every tag of that repository pointing at the digest went with it.
                let gone: Vec<_> = expected
                    .iter()
                    .filter(|((r, _), blobs)| r == repo && {
                        let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
                        Algorithm::Sha256.digest(&manifest(&refs)).to_string() == digest
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in gone {
                    expected.remove(&k);
                }
            }
            _ => {}
        }
    }
    // Collection keeps running to the end (one cycle to finish the one in progress; with the untagged policy a
    // manifest is marked, then deleted; then its links marked, deleted; then its blobs marked, deleted), then every
    // expected tag pulls intact.
    let finish = GcOptions { untagged_after_secs: (seed % 2 == 0).then_some(0), ..GRACE0 };
    for _ in 0..6 {
        let r = f.gc_with(&finish);
        if std::env::var("PIER_GC_TRACE").is_ok() {
            println!("final cycle {r:?}");
        }
    }
    for ((repo, tag), blobs) in &expected {
        let refs: Vec<&[u8]> = blobs.iter().map(|b| b.as_slice()).collect();
        assert!(f.pulls(repo, tag, &refs), "seed {seed}: {repo}:{tag} no longer pulls intact");
    }
    // And what nothing references is gone: every stored blob is referenced by some manifest.
    let referenced: std::collections::BTreeSet<String> = block_on(async {
        let mut all = std::collections::BTreeSet::new();
        for repo in repos {
            let name = RepositoryName::parse(repo).unwrap();
            let prefix = format!("repositories/{name}/_manifests/");
            for k in f.reg.meta.list(&prefix, None, 10_000).await.unwrap() {
                let raw = f.reg.meta.get(&k).await.unwrap().unwrap();
                let nl = raw.iter().position(|&b| b == b'\n').unwrap();
                let v: serde_json::Value = serde_json::from_slice(&raw[nl + 1..]).unwrap();
                for d in std::iter::once(&v["config"]).chain(v["layers"].as_array().unwrap().iter()) {
                    all.insert(d["digest"].as_str().unwrap().to_string());
                }
            }
        }
        all
    });
    for key in f.objects.keys().iter().filter(|k| k.starts_with("blobs/sha256/")) {
        let digest = format!("sha256:{}", &key["blobs/sha256/".len()..]);
        if !referenced.contains(&digest) {
            let hex = &key["blobs/sha256/".len()..];
            let dump: Vec<String> = block_on(async {
                let mut out = Vec::new();
                for k in f.reg.meta.list("", None, 100_000).await.unwrap() {
                    if k.contains(hex) {
                        out.push(format!("{k} = {}", String::from_utf8_lossy(&f.reg.meta.get(&k).await.unwrap().unwrap())));
                    }
                }
                out
            });
            panic!("seed {seed}: {key} is stored but nothing references it; metadata: {dump:#?}");
        }
    }
    f.reg
}

fn index(children: &[&[u8]]) -> Vec<u8> {
    let d = |m: &[u8]| serde_json::json!({ "mediaType": OCI_MANIFEST, "digest": Algorithm::Sha256.digest(m).to_string(), "size": m.len() });
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": children.iter().map(|c| d(c)).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn put(f: &Fixture, repo: &str, reference: &str, body: Vec<u8>, media_type: &str) -> StatusCode {
    let mut r = request(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), body);
    r.headers_mut().insert("content-type", media_type.parse().unwrap());
    f.send(r).status()
}

#[test]
fn the_untagged_policy_collects_old_untagged_manifests_and_what_only_they_reach() {
    let f = Fixture::new();
    let day = 86_400;
    let policy = GcOptions { untagged_after_secs: Some(day), ..GRACE0 };
    let (cfg, old_layer, new_layer, child_layer) = (b"cfg".as_slice(), b"old layer".as_slice(), b"new layer".as_slice(), b"child layer".as_slice());
    let old = f.push_image("r", "latest", &[cfg, old_layer]);
    // A child manifest pushed by digest and an index tagged over it; a signature on the index.
    f.push_blob("r", child_layer);
    let child = manifest(&[cfg, child_layer]);
    let child_digest = Algorithm::Sha256.digest(&child).to_string();
    assert_eq!(put(&f, "r", &child_digest, child.clone(), OCI_MANIFEST), StatusCode::CREATED);
    let idx = index(&[&child]);
    assert_eq!(put(&f, "r", "multi", idx, "application/vnd.oci.image.index.v1+json"), StatusCode::CREATED);
    // `latest` moves on: the old manifest is untagged from now on.
    f.env.now.set(f.env.now.get() + 10);
    f.push_image("r", "latest", &[cfg, new_layer]);
    // Young: nothing goes.
    for _ in 0..3 {
        assert_eq!(f.gc_with(&policy).manifests_deleted, 0);
    }
    f.env.now.set(f.env.now.get() + 2 * day);
    let mut deleted = 0;
    for _ in 0..6 {
        deleted += f.gc_with(&policy).manifests_deleted;
    }
    assert_eq!(deleted, 1, "only the old untagged manifest goes");
    assert_eq!(f.status(Method::GET, &format!("/v2/r/manifests/{old}")), StatusCode::NOT_FOUND);
    assert!(!f.has_bytes(old_layer), "its own layer went with it");
    assert!(f.has_bytes(cfg) && f.has_bytes(new_layer) && f.has_bytes(child_layer));
    assert!(f.pulls("r", "latest", &[cfg, new_layer]));
    assert_eq!(f.status(Method::GET, &format!("/v2/r/manifests/{child_digest}")), StatusCode::OK, "an index's child is kept");
}

#[test]
fn an_index_pushed_over_a_marked_child_revives_it() {
    let f = Fixture::new();
    let policy = GcOptions { untagged_after_secs: Some(0), ..GRACE0 };
    let (cfg, layer) = (b"cfg".as_slice(), b"layer".as_slice());
    f.push_blob("r", cfg);
    f.push_blob("r", layer);
    let child = manifest(&[cfg, layer]);
    let child_digest = Algorithm::Sha256.digest(&child).to_string();
    assert_eq!(put(&f, "r", &child_digest, child.clone(), OCI_MANIFEST), StatusCode::CREATED);
    f.env.now.set(f.env.now.get() + 1);
    assert_eq!(f.gc_with(&policy).manifests_tombstoned, 1);
    // The index arrives while its child is marked: the push revives it, and it stays.
    assert_eq!(put(&f, "r", "multi", index(&[&child]), "application/vnd.oci.image.index.v1+json"), StatusCode::CREATED);
    for _ in 0..4 {
        assert_eq!(f.gc_with(&policy).manifests_deleted, 0);
    }
    assert!(f.pulls("r", &child_digest, &[cfg, layer]));
    // Once the child is gone, an index naming it is refused.
    let lone = manifest(&[cfg]);
    let lone_digest = Algorithm::Sha256.digest(&lone).to_string();
    assert_eq!(put(&f, "r", &lone_digest, lone.clone(), OCI_MANIFEST), StatusCode::CREATED);
    f.env.now.set(f.env.now.get() + 1);
    f.gc_with(&policy);
    f.gc_with(&policy);
    assert_eq!(f.status(Method::GET, &format!("/v2/r/manifests/{lone_digest}")), StatusCode::NOT_FOUND);
    let refused = put(&f, "r", "other", index(&[&lone]), "application/vnd.oci.image.index.v1+json");
    assert_eq!(refused, StatusCode::BAD_REQUEST);
}

#[test]
fn an_index_pushed_between_the_mark_and_the_manifest_sweep_keeps_its_child() {
    let f = Fixture::new();
    let (cfg, layer) = (b"cfg".as_slice(), b"layer".as_slice());
    f.push_blob("r", cfg);
    f.push_blob("r", layer);
    let child = manifest(&[cfg, layer]);
    let child_digest = Algorithm::Sha256.digest(&child).to_string();
    assert_eq!(put(&f, "r", &child_digest, child.clone(), OCI_MANIFEST), StatusCode::CREATED);
    f.env.now.set(f.env.now.get() + 1);
    let policy = GcOptions { untagged_after_secs: Some(0), ..GRACE0 };
    assert_eq!(f.gc_with(&policy).manifests_tombstoned, 1);
    // The next cycle, slice by slice, up to the point where its mark is done and its verdict (delete the child) made.
    let small = GcOptions { max_calls: 8, ..policy.clone() };
    loop {
        block_on(f.reg.gc_slice(&small)).unwrap();
        let state = block_on(f.reg.gc_in_progress()).unwrap();
        if state["phase"] == "sweep-manifests" {
            break;
        }
        assert!(!state.is_null(), "the cycle ended before its manifest sweep");
    }
    // Now the index arrives: its revival of the child must beat the stale verdict.
    assert_eq!(put(&f, "r", "multi", index(&[&child]), "application/vnd.oci.image.index.v1+json"), StatusCode::CREATED);
    for _ in 0..4 {
        f.gc_with(&policy);
    }
    assert!(f.pulls("r", &child_digest, &[cfg, layer]), "the index's child was collected");
    assert_eq!(f.status(Method::GET, "/v2/r/manifests/multi"), StatusCode::OK);
}

#[test]
fn behind_a_read_cache_deletes_and_collection_are_seen_at_once_and_pushes_too() {
    let f = Fixture::cached();
    let blobs: [&[u8]; 2] = [b"cached config", b"cached layer"];
    let digest = f.push_image("rc", "v1", &blobs);
    let layer = Algorithm::Sha256.digest(blobs[1]).to_string();
    for _ in 0..3 {
        assert_eq!(f.status(Method::GET, &format!("/v2/rc/manifests/{digest}")), StatusCode::OK);
        assert_eq!(f.status(Method::HEAD, &format!("/v2/rc/blobs/{layer}")), StatusCode::OK);
    }
    let s = f.reg.cache_stats().unwrap();
    assert!(s.memory_hits >= 4, "repeated reads come from memory: {s:?}");
    let calls = f.plan.calls();
    assert_eq!(f.status(Method::HEAD, &format!("/v2/rc/blobs/{layer}")), StatusCode::OK);
    assert_eq!(f.plan.calls(), calls, "a cached blob HEAD makes no store call");

    // A delete is seen by the next read.
    assert_eq!(f.status(Method::DELETE, &format!("/v2/rc/blobs/{layer}")), StatusCode::ACCEPTED);
    assert_eq!(f.status(Method::HEAD, &format!("/v2/rc/blobs/{layer}")), StatusCode::NOT_FOUND);
    assert_eq!(f.status(Method::DELETE, &format!("/v2/rc/manifests/{digest}")), StatusCode::ACCEPTED);
    assert_eq!(f.status(Method::GET, &format!("/v2/rc/manifests/{digest}")), StatusCode::NOT_FOUND);
    assert_eq!(f.status(Method::GET, "/v2/rc/manifests/v1"), StatusCode::NOT_FOUND);

    // Collection removes the rest; a cached read of the config's link never outlives its bytes.
    let config = Algorithm::Sha256.digest(blobs[0]).to_string();
    assert_eq!(f.status(Method::HEAD, &format!("/v2/rc/blobs/{config}")), StatusCode::OK);
    for _ in 0..4 {
        f.gc();
    }
    assert_eq!(f.status(Method::HEAD, &format!("/v2/rc/blobs/{config}")), StatusCode::NOT_FOUND);
    assert!(!f.has_bytes(blobs[0]));

    // Pushed again: visible at once (absences are never cached).
    let again = f.push_image("rc", "v1", &blobs);
    assert_eq!(again, digest);
    assert!(f.pulls("rc", "v1", &blobs));
    assert_eq!(f.status(Method::GET, &format!("/v2/rc/manifests/{digest}")), StatusCode::OK);
}
