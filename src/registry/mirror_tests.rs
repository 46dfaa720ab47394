//! The pull-through cache against a scripted upstream (an [`HttpClient`] that counts what it is asked and trickles its
//! bodies out a chunk per poll, so concurrent pulls really overlap on a single-threaded executor): one upstream fetch
//! per blob however many pull it at once, waiters that outlive a leader who went away, failed or stalled; the store
//! calls of a cached pull and how rarely it notes its time; and the expiry of what nobody pulled through garbage
//! collection, with pulls that come back before, during and after the collection.

use super::gc::{GcOptions, GcReport};
use super::mirror::{MirrorConfig, Upstream};
use super::*;
use crate::api::Body;
use crate::error::Error;
use crate::spec::media_types::OCI_MANIFEST;
use crate::spec::{Algorithm, RepositoryName};
use crate::storage::faulty::FaultPlan;
use crate::storage::http::{HttpClient, HttpRequest, HttpResponse};
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use crate::storage::ByteStream;
use bytes::Bytes;
use futures::executor::block_on;
use futures::{FutureExt, Stream};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::future::Future;
use std::task::{Context, Poll};

const UPSTREAM: &str = "http://upstream.test";
const PART: u64 = 64;

/// A clock the test moves, counting randomness, errors collected (a failing upstream is a logged 503 here), and a
/// timer that fires at once when `instant_timer` is set (to make a waiter give up on a stalled leader).
#[derive(Default)]
struct Env {
    now: Cell<u64>,
    n: Cell<u64>,
    errors: RefCell<Vec<String>>,
    instant_timer: Cell<bool>,
}

impl Environment for Env {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        super::test_env::counted_bytes(&self.n)
    }
    fn log_error(&self, m: &str) {
        self.errors.borrow_mut().push(m.to_string());
    }
    fn sleep(&self, _d: std::time::Duration) -> Option<futures::future::LocalBoxFuture<'static, ()>> {
        self.instant_timer.get().then(|| futures::future::ready(()).boxed_local())
    }
}

/// A body that gives one chunk per poll after a pending one (waking itself), so another request runs in between.
struct Trickle {
    chunks: VecDeque<Bytes>,
    ready: bool,
}

impl Stream for Trickle {
    type Item = crate::error::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.ready {
            self.ready = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.ready = false;
        Poll::Ready(self.chunks.pop_front().map(Ok))
    }
}

fn trickle(data: &[u8]) -> ByteStream {
    Box::pin(Trickle { chunks: data.chunks(16).map(Bytes::copy_from_slice).collect(), ready: false })
}

/// A registry upstream: blobs and manifests by path, GETs counted per path, and lies told on request.
#[derive(Default)]
struct FakeUpstream {
    blobs: RefCell<HashMap<String, Bytes>>,
    manifests: RefCell<HashMap<String, (Bytes, String)>>,
    gets: RefCell<HashMap<String, usize>>,
    /// Blob GETs answered with wrong bytes before the truth.
    lies: Cell<usize>,
}

impl FakeUpstream {
    fn gets(&self, what: &str) -> usize {
        self.gets.borrow().iter().filter(|(k, _)| k.ends_with(what)).map(|(_, n)| n).sum()
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for FakeUpstream {
    async fn send(&self, req: HttpRequest) -> crate::error::Result<HttpResponse> {
        let path = req.url.strip_prefix(&format!("{UPSTREAM}/v2/")).ok_or_else(|| Error::storage("unexpected URL"))?.to_string();
        if req.method == Method::GET {
            *self.gets.borrow_mut().entry(path.clone()).or_default() += 1;
        }
        let head = req.method == Method::HEAD;
        let answer = |status: u16, headers: Vec<(String, String)>, body: Bytes| HttpResponse {
            status,
            headers,
            body: if head { trickle(b"") } else { trickle(&body) },
        };
        if let Some((_, digest)) = path.split_once("/blobs/") {
            let Some(bytes) = self.blobs.borrow().get(digest).cloned() else { return Ok(answer(404, vec![], Bytes::new())) };
            let bytes = if !head && self.lies.get() > 0 {
                self.lies.set(self.lies.get() - 1);
                Bytes::from(vec![b'x'; bytes.len()])
            } else {
                bytes
            };
            return Ok(answer(200, vec![("content-length".into(), bytes.len().to_string())], bytes));
        }
        if let Some((_, reference)) = path.split_once("/manifests/") {
            let Some((bytes, digest)) = self.manifests.borrow().get(reference).cloned() else { return Ok(answer(404, vec![], Bytes::new())) };
            let headers = vec![
                ("content-type".into(), OCI_MANIFEST.into()),
                ("docker-content-digest".into(), digest),
                ("content-length".into(), bytes.len().to_string()),
            ];
            return Ok(answer(200, headers, bytes));
        }
        Ok(answer(404, vec![], Bytes::new()))
    }
}

struct Fixture {
    reg: Registry,
    up: Rc<FakeUpstream>,
    env: Rc<Env>,
    objects: Rc<MemoryObjectStore>,
    plan: Rc<FaultPlan>,
}

/// An image on the upstream: its manifest (tag `v1`) and blobs.
struct Image {
    digest: String,
    blobs: Vec<Vec<u8>>,
}

fn request(method: Method, uri: &str) -> Request {
    let mut r = Request::new(Body::Empty);
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    r
}

async fn read_all(resp: Response) -> (StatusCode, Vec<u8>) {
    let status = resp.status();
    let mut b = resp.into_body();
    let mut out = Vec::new();
    while let Some(c) = b.next_chunk().await {
        out.extend_from_slice(&c.unwrap());
    }
    (status, out)
}

fn sha(b: &[u8]) -> String {
    Algorithm::Sha256.digest(b).to_string()
}

impl Fixture {
    fn new(ttl_secs: u64) -> Self {
        let objects = Rc::new(MemoryObjectStore::new());
        let plan = FaultPlan::counting();
        let (o, m) = plan.wrap(objects.clone(), Rc::new(MemoryMetaStore::new()));
        let env = Rc::new(Env { now: Cell::new(1_000_000), ..Env::default() });
        let mirror = MirrorConfig {
            upstreams: vec![Upstream { prefix: String::new(), url: UPSTREAM.into(), username: None, password: None }],
            tag_ttl_secs: 1_000_000,
            ttl_secs,
        };
        let config = Config { part_size: PART, mirror: Some(mirror), ..Config::default() };
        let up = Rc::new(FakeUpstream::default());
        let reg = Registry::new(o, m, config, env.clone()).with_upstream_client(up.clone());
        Fixture { reg, up, env, objects, plan }
    }

    fn add_blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        self.up.blobs.borrow_mut().insert(d.clone(), Bytes::copy_from_slice(data));
        d
    }

    /// An image of a config and a layer of `layer_size` random-ish bytes, tagged `tag` upstream.
    fn add_image(&self, tag: &str, seed: u8, layer_size: usize) -> Image {
        let config = format!("{{\"seed\":{seed}}}").into_bytes();
        let layer: Vec<u8> = (0..layer_size).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let d = |b: &[u8]| serde_json::json!({ "mediaType": "application/octet-stream", "digest": sha(b), "size": b.len() });
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": d(&config), "layers": [d(&layer)],
        }))
        .unwrap();
        let digest = sha(&manifest);
        for b in [&config, &layer] {
            self.add_blob(b);
        }
        let entry = (Bytes::from(manifest), digest.clone());
        self.up.manifests.borrow_mut().insert(tag.to_string(), entry.clone());
        self.up.manifests.borrow_mut().insert(digest.clone(), entry);
        Image { digest, blobs: vec![config, layer] }
    }

    fn get(&self, uri: &str) -> (StatusCode, Vec<u8>) {
        block_on(async { read_all(self.reg.handle(request(Method::GET, uri)).await).await })
    }

    /// Pull `lib/app:tag` whole, as a client does: the manifest, then every blob; whether all of it came back right.
    fn pull(&self, tag: &str, image: &Image) -> bool {
        let (status, bytes) = self.get(&format!("/v2/lib/app/manifests/{tag}"));
        status == StatusCode::OK
            && sha(&bytes) == image.digest
            && image.blobs.iter().all(|b| self.get(&format!("/v2/lib/app/blobs/{}", sha(b))) == (StatusCode::OK, b.clone()))
    }

    fn gc(&self) -> GcReport {
        let options = GcOptions { grace_secs: 0, ..GcOptions::default() };
        loop {
            let p = block_on(self.reg.gc_slice(&options)).unwrap();
            if p.cycle_done {
                return p.report;
            }
        }
    }

    fn advance(&self, secs: u64) {
        self.env.now.set(self.env.now.get() + secs);
    }

    /// Objects holding the bytes of `data` (a recorded blob's key, whatever it is).
    fn copies(&self, data: &[u8]) -> usize {
        self.objects.keys().iter().filter(|k| block_on(self.objects.get(k, None)).unwrap().map(|r| block_on(crate::storage::http::read_body(r.body, 1 << 20)).unwrap()).is_some_and(|b| b == data)).count()
    }

    fn record(&self, key: &str) -> Option<super::manifests::RecordHeader> {
        block_on(self.reg.meta.get(key)).unwrap().map(|raw| super::manifests::decode_record(raw).unwrap().header)
    }
}

fn name() -> RepositoryName {
    RepositoryName::parse("lib/app").unwrap()
}

#[test]
fn concurrent_first_pulls_of_a_blob_fetch_it_once() {
    let f = Fixture::new(0);
    // Below the part size (fetched whole, verified, then served) and above it (the tee: streamed while stored).
    for size in [40usize, 1000] {
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let d = f.add_blob(&data);
        let uri = format!("/v2/lib/app/blobs/{d}");
        let one = async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await };
        let two = async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await };
        let three = async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await };
        let (a, b, c) = block_on(async { futures::join!(one, two, three) });
        for r in [a, b, c] {
            assert_eq!(r, (StatusCode::OK, data.clone()), "size {size}");
        }
        assert_eq!(f.up.gets(&d), 1, "size {size}: one upstream fetch for three pulls at once");
        assert_eq!(f.copies(&data), 1, "size {size}: one stored copy");
        assert_eq!(f.reg.blob_flights.len(), 0);
    }
    assert!(f.env.errors.borrow().is_empty(), "{:?}", f.env.errors.borrow());
}

#[test]
fn a_waiter_fetches_for_itself_when_the_leader_goes_away() {
    let f = Fixture::new(0);
    let data: Vec<u8> = (0..1000).map(|i| (i % 13) as u8).collect();
    let d = f.add_blob(&data);
    let uri = format!("/v2/lib/app/blobs/{d}");
    // The leader's client reads a little of the streamed first pull, then goes away.
    let leader = block_on(f.reg.handle(request(Method::GET, &uri)));
    assert_eq!(leader.status(), StatusCode::OK);
    let mut body = leader.into_body();
    assert!(block_on(body.next_chunk()).is_some());
    let mut waiter = Box::pin(async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await });
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    for _ in 0..10 {
        assert!(waiter.as_mut().poll(&mut cx).is_pending(), "the waiter waits while the leader is there");
    }
    drop(body);
    assert_eq!(block_on(waiter), (StatusCode::OK, data.clone()));
    assert_eq!(f.up.gets(&d), 2, "the waiter fetched for itself");
    assert_eq!(f.copies(&data), 1);
    assert_eq!(f.reg.blob_flights.len(), 0);
}

#[test]
fn a_failed_leader_lets_the_waiter_try_and_nothing_unverified_is_stored() {
    let f = Fixture::new(0);
    let data = b"a small config blob, fetched whole".to_vec();
    let d = f.add_blob(&data);
    f.up.lies.set(1);
    let uri = format!("/v2/lib/app/blobs/{d}");
    let one = async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await };
    let two = async { read_all(f.reg.handle(request(Method::GET, &uri)).await).await };
    let (a, b) = block_on(async { futures::join!(one, two) });
    assert_eq!(a.0, StatusCode::SERVICE_UNAVAILABLE, "the leader got the lie and refused it");
    assert_eq!(b, (StatusCode::OK, data.clone()), "the waiter tried itself");
    assert_eq!(f.up.gets(&d), 2);
    assert_eq!(f.copies(&data), 1);
    assert_eq!(f.copies(&vec![b'x'; data.len()]), 0, "the lie was not stored");
}

#[test]
fn a_stalled_leader_is_given_up_on() {
    let f = Fixture::new(0);
    f.env.instant_timer.set(true);
    let data: Vec<u8> = (0..1000).map(|i| (i % 7) as u8).collect();
    let d = f.add_blob(&data);
    let uri = format!("/v2/lib/app/blobs/{d}");
    // The leader's client never reads: its tee is never polled, and moves no bytes.
    let leader = block_on(f.reg.handle(request(Method::GET, &uri)));
    assert_eq!(f.reg.blob_flights.len(), 1);
    assert_eq!(f.get(&uri), (StatusCode::OK, data.clone()));
    assert_eq!(f.up.gets(&d), 2);
    drop(leader);
    assert_eq!(f.reg.blob_flights.len(), 0);
}

#[test]
fn a_cached_pull_is_one_read_and_notes_its_time_once_per_resolution() {
    let f = Fixture::new(10_000);
    let image = f.add_image("v1", 1, 100);
    assert!(f.pull("v1", &image));
    let tag_key = keys::tag(&name(), &crate::spec::Tag::parse("v1").unwrap());
    let calls = |uri: &str| {
        let before = f.plan.calls();
        assert_eq!(f.get(uri).0, StatusCode::OK);
        f.plan.calls() - before
    };
    let by_digest = format!("/v2/lib/app/manifests/{}", image.digest);
    assert_eq!(calls("/v2/lib/app/manifests/v1"), 1);
    assert_eq!(calls(&by_digest), 1);
    let fetched = f.record(&tag_key).unwrap().fetched;
    // Within the resolution (a tenth of the TTL): still one read.
    f.advance(999);
    assert_eq!(calls("/v2/lib/app/manifests/v1"), 1);
    assert_eq!(f.record(&tag_key).unwrap().pulled, None);
    // Past it: the pull writes its time once, the next ones read only.
    f.advance(2);
    assert_eq!(calls("/v2/lib/app/manifests/v1"), 2);
    assert_eq!(calls("/v2/lib/app/manifests/v1"), 1);
    let header = f.record(&tag_key).unwrap();
    assert_eq!((header.pulled, header.fetched), (Some(f.env.now.get()), fetched));
    // A HEAD is a pull too (containerd resolves a tag with one).
    f.advance(1001);
    let head = |uri: &str| block_on(f.reg.handle(request(Method::HEAD, uri))).status();
    assert_eq!(head(&by_digest), StatusCode::OK);
    let record_key = keys::manifest(&name(), &crate::spec::Digest::parse(&image.digest).unwrap());
    assert_eq!(f.record(&record_key).unwrap().pulled, Some(f.env.now.get()));
    // Without expiry (`REGISTRY_PROXY_TTL=0`) pulls never write.
    let g = Fixture::new(0);
    let image = g.add_image("v1", 2, 100);
    assert!(g.pull("v1", &image));
    g.advance(900_000); // (less than the tag TTL: no revalidation)
    let before = g.plan.calls();
    assert_eq!(g.get("/v2/lib/app/manifests/v1").0, StatusCode::OK);
    assert_eq!(g.plan.calls() - before, 1);
}

#[test]
fn content_nobody_pulled_expires_and_a_later_pull_fetches_it_again() {
    let f = Fixture::new(1000);
    let old = f.add_image("old", 1, 200);
    let used = f.add_image("used", 2, 200);
    assert!(f.pull("old", &old) && f.pull("used", &used));
    let r = f.gc();
    assert_eq!((r.manifests_tombstoned, r.tags_tombstoned, r.links_tombstoned), (0, 0, 0));
    // `used` is pulled now and then; `old` never again.
    f.advance(600);
    assert!(f.pull("used", &used));
    f.advance(600);
    let r = f.gc();
    assert_eq!((r.manifests_tombstoned, r.tags_tombstoned), (1, 1), "old's record and tag copy are marked");
    let r = f.gc();
    assert_eq!((r.manifests_deleted, r.tags_deleted), (1, 1));
    let r = f.gc();
    assert_eq!(r.links_tombstoned, 2, "then old's blobs, the normal two steps");
    let r = f.gc();
    assert_eq!((r.links_deleted, r.blobs_tombstoned), (2, 2));
    let r = f.gc();
    assert_eq!(r.blobs_deleted, 2);
    for b in &old.blobs {
        assert_eq!(f.copies(b), 0, "old's bytes are gone");
    }
    for b in &used.blobs {
        assert_eq!(f.copies(b), 1, "used's bytes stay");
    }
    // A pull after the expiry fetches it all again.
    let before = f.up.gets(&old.digest) + f.up.gets("/old");
    assert!(f.pull("old", &old));
    assert!(f.up.gets(&old.digest) + f.up.gets("/old") > before);
    assert!(old.blobs.iter().all(|b| f.up.gets(&sha(b)) == 2));
    let r = f.gc();
    assert_eq!((r.manifests_tombstoned, r.tags_tombstoned, r.links_tombstoned, r.blobs_tombstoned), (0, 0, 0, 0));
    assert!(f.env.errors.borrow().is_empty(), "{:?}", f.env.errors.borrow());
}

#[test]
fn a_pull_of_marked_content_revives_it() {
    let f = Fixture::new(1000);
    let image = f.add_image("v1", 3, 200);
    assert!(f.pull("v1", &image));
    f.advance(1001);
    let r = f.gc();
    assert_eq!((r.manifests_tombstoned, r.tags_tombstoned), (1, 1));
    // Pulled by tag while marked: the tag copy is rewritten live, and its pull keeps the record it names.
    assert!(f.pull("v1", &image));
    let tag_key = keys::tag(&name(), &crate::spec::Tag::parse("v1").unwrap());
    assert!(f.record(&tag_key).unwrap().gc.is_none());
    let r = f.gc();
    assert_eq!((r.manifests_deleted, r.tags_deleted, r.links_tombstoned), (0, 0, 0));
    let record_key = keys::manifest(&name(), &crate::spec::Digest::parse(&image.digest).unwrap());
    assert!(f.record(&record_key).unwrap().gc.is_none(), "the record's mark was cleared");

    // Expired again, gone, and the blob links marked: a pull fetches the manifest again and revives the links.
    f.advance(1001);
    f.gc();
    f.gc();
    let r = f.gc();
    assert_eq!(r.links_tombstoned, 2);
    let blob_gets: Vec<usize> = image.blobs.iter().map(|b| f.up.gets(&sha(b))).collect();
    assert!(f.pull("v1", &image));
    assert_eq!(image.blobs.iter().map(|b| f.up.gets(&sha(b))).collect::<Vec<_>>(), blob_gets, "the blobs came from the cache");
    for b in &image.blobs {
        let link = block_on(f.reg.blob_link(&name(), &Algorithm::Sha256.digest(b))).unwrap().unwrap();
        assert!(link.gc.is_none(), "the pull revived the link");
    }
    for _ in 0..3 {
        let r = f.gc();
        assert_eq!((r.links_deleted, r.blobs_deleted, r.manifests_deleted), (0, 0, 0));
    }
    assert!(f.pull("v1", &image));
}

#[test]
fn without_expiry_mirrored_content_stays_and_the_untagged_policy_is_for_hosted_repositories() {
    let f = Fixture::new(0);
    let image = f.add_image("v1", 4, 200);
    assert!(f.pull("v1", &image));
    // A manifest pulled by digest only is "untagged" in the cache: the untagged policy still leaves it alone.
    let other = f.add_image("other", 5, 50);
    assert_eq!(f.get(&format!("/v2/lib/app/manifests/{}", other.digest)).0, StatusCode::OK);
    f.advance(100_000_000);
    let options = GcOptions { grace_secs: 0, untagged_after_secs: Some(1), ..GcOptions::default() };
    for _ in 0..4 {
        let r = loop {
            let p = block_on(f.reg.gc_slice(&options)).unwrap();
            if p.cycle_done {
                break p.report;
            }
        };
        assert_eq!((r.manifests_tombstoned, r.tags_tombstoned, r.links_tombstoned, r.blobs_tombstoned), (0, 0, 0, 0));
    }
    let before = f.up.gets.borrow().values().sum::<usize>();
    assert!(f.pull("v1", &image));
    assert_eq!(f.up.gets.borrow().values().sum::<usize>(), before, "all of it still cached");
}
