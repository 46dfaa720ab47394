//! The Cloudflare Workers adapter: the `fetch` entry point turns a Workers request into the core's request, builds a
//! registry over the R2 binding (blobs and metadata, see `storage::r2` for why no key lives in KV) and turns the core's
//! response back. A `scheduled` entry point (wrangler.toml `[triggers]`) purges expired upload sessions and collects
//! garbage, one bounded slice of each per run.
//!
//! Configuration comes from `[vars]` and secrets under the same names as everywhere (`Config::from_lookup`).
//!
//! Reads of blob links and manifest records go through the read cache (`storage::cache`): the isolate's memory,
//! then the Cache API of the Cloudflare location, then R2 (`PIER_EDGE_CACHE_TTL`, default 60 s; `0` turns it off).
//! Cache API keys carry a namespace stored once in the bucket (`meta/_cache/namespace`), so two deployments in one
//! zone never read each other's entries.
//!
//! Request logs are JSON lines through `console.log`, which Workers Logs and `wrangler tail` parse into fields; the
//! client's address comes from Cloudflare's `CF-Connecting-IP` header.
//!
//! Notifications: with a Queue bound as `EVENTS` (wrangler.toml `[[queues.producers]]` and `[[queues.consumers]]`,
//! the same queue), each event is a queue message (sent before the client is answered, durable once sent) and the
//! `queue` entry point delivers them: per endpoint, a batch's messages in one envelope; on failure every message is
//! retried with a growing delay (`message.retry({delaySeconds})`), and one older than `PIER_NOTIFICATIONS_MAX_AGE`
//! is written to `_events/dead/…` in the bucket and acknowledged. At-least-once; a retry can reorder events (Queues
//! do not keep order), so receivers order by `timestamp`. Without the binding, events go to the outbox in R2, which
//! `ctx.waitUntil` drains after the response and the cron trigger drains in slices, in order.

use crate::api::{Body, ClientAddr, Request, Response};
use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::registry::{Environment, Registry, RequestLog};
use crate::sign::sigv4::{AddressingStyle, Credentials, S3Endpoint};
use crate::sign::Timestamp;
use crate::storage::config::StorageConfig;
use crate::storage::http::{HttpClient, HttpRequest, HttpResponse};
use crate::storage::object_meta::{ObjectMetaStore, DEFAULT_PREFIX as OBJECT_META_PREFIX};
use crate::storage::r2::{R2MetaStore, R2ObjectStore};
use crate::storage::cache::{MemoryCache, ReadCache};
use crate::storage::{MetaStore, ObjectStore, Precondition};
use std::cell::{Cell, OnceCell};
use bytes::Bytes;
use futures::StreamExt;
use std::rc::Rc;
use worker::web_sys;
use worker::{
    event, Context, Env, Fetch, FixedLengthStream, Headers, MessageBatch, MessageExt, QueueRetryOptionsBuilder, RequestInit,
    ScheduleContext, ScheduledEvent,
};
use crate::events::{Event, EventSink, Outcome};
use crate::notifications::Endpoint;

/// The Queue binding notifications go through, when present.
pub const EVENTS_QUEUE_BINDING: &str = "EVENTS";

/// The R2 binding holding blobs and metadata.
pub const BUCKET_BINDING: &str = "BUCKET";
/// Metadata keys live under this prefix in the bucket.
pub const META_PREFIX: &str = "meta/";

/// Time, randomness and logs from the Workers runtime.
pub struct WorkersEnvironment {
    /// Whether each request's log line goes to the console (`PIER_REQUEST_LOG`; see [`request_logs_wanted`]).
    request_logs: bool,
}

/// Request log lines on Workers are opt-in (`PIER_REQUEST_LOG=json`, with `[observability] enabled = true` for
/// Workers Logs to keep them): a `console.log` per request is not free, and under `wrangler dev` it more than halves
/// the request rate of the read path (measured with `scripts/bench workers`). Errors are always logged.
fn request_logs_wanted(env: &Env) -> bool {
    setting(env, "PIER_REQUEST_LOG").is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "json" | "true" | "on"))
}

impl Environment for WorkersEnvironment {
    fn now_unix(&self) -> u64 {
        (js_sys::Date::now() / 1000.0) as u64
    }

    fn random_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        if getrandom::getrandom(&mut b).is_err() {
            worker::console_error!("pier: crypto.getRandomValues unavailable");
        }
        b
    }

    fn log_error(&self, message: &str) {
        worker::console_error!("pier: {message}");
    }

    fn now_millis(&self) -> u64 {
        // Workers advance this clock only across I/O (a Spectre mitigation), so durations count time spent waiting on
        // storage and the client, not CPU time.
        js_sys::Date::now() as u64
    }

    fn log_request(&self, record: &RequestLog) {
        if self.request_logs {
            worker::console_log!("{}", record.to_json());
        }
    }

    fn sleep(&self, duration: std::time::Duration) -> Option<futures::future::LocalBoxFuture<'static, ()>> {
        Some(Box::pin(worker::Delay::from(duration)))
    }
}

/// A queue message: one event owed to one endpoint.
#[derive(serde::Serialize, serde::Deserialize)]
struct QueuedEvent {
    endpoint: String,
    /// When the event was recorded (milliseconds since the epoch): retries back off and give up by its age.
    created_ms: u64,
    event: Event,
}

/// Events go to the `EVENTS` queue.
struct QueueSink(worker::Queue);

#[async_trait::async_trait(?Send)]
impl EventSink for QueueSink {
    async fn send(&self, endpoint: &Endpoint, event: &Event) -> crate::error::Result<()> {
        let message = QueuedEvent { endpoint: endpoint.name.clone(), created_ms: js_sys::Date::now() as u64, event: event.clone() };
        self.0.send(message).await.map_err(|e| Error::storage(format!("queue {EVENTS_QUEUE_BINDING}: {e}")))
    }
}

fn setting(env: &Env, name: &str) -> Option<String> {
    if let Ok(v) = env.var(name) {
        return Some(v.to_string());
    }
    env.secret(name).ok().map(|s| s.to_string())
}

/// Presigned URLs an isolate keeps for reuse (see [`r2_presigner`]): ~300 bytes each.
const RECENT_URLS: usize = 1024;

/// Blob GETs redirect to R2's S3 API with a SigV4-presigned URL when its credentials are configured:
/// `PIER_R2_ACCOUNT_ID`, `PIER_R2_ACCESS_KEY_ID`, `PIER_R2_SECRET_ACCESS_KEY` (a secret) and `PIER_R2_BUCKET` (the
/// bucket's name; the binding does not reveal it). `PIER_R2_ENDPOINT` overrides the endpoint (jurisdictions, tests).
fn r2_presigner(env: &Env) -> Result<Option<Box<dyn Fn(&str, u64) -> Option<String>>>, Error> {
    let get = |k: &str| setting(env, k).filter(|v| !v.is_empty());
    let (Some(account), Some(key_id), Some(secret)) =
        (get("PIER_R2_ACCOUNT_ID"), get("PIER_R2_ACCESS_KEY_ID"), get("PIER_R2_SECRET_ACCESS_KEY"))
    else {
        return Ok(None);
    };
    let bucket = get("PIER_R2_BUCKET").ok_or_else(|| {
        Error::msg(ErrorCode::Unavailable, "configuration setting PIER_R2_BUCKET: needed with the R2 S3 credentials (the bucket's name)")
    })?;
    let endpoint_url = get("PIER_R2_ENDPOINT").unwrap_or_else(|| format!("https://{account}.r2.cloudflarestorage.com"));
    let endpoint = S3Endpoint::parse(&endpoint_url, "auto", AddressingStyle::Path)
        .map_err(|e| Error::msg(ErrorCode::Unavailable, format!("configuration setting PIER_R2_ENDPOINT: {e}")))?;
    let credentials = Credentials::new(key_id, secret);
    // URLs signed in this isolate lately, by key: (lifetime, signed at, URL). A pull asks for the same few blobs' URLs
    // over and over, and signing (a SHA-256 and five HMACs) showed in profiles of the redirect. A URL is handed out
    // again only while at least 90% of its lifetime is left (and for a minute at most); the blob's access was checked
    // for this request before it got here, as for a fresh URL.
    let recent: std::cell::RefCell<std::collections::HashMap<String, (u64, i64, String)>> = Default::default();
    Ok(Some(Box::new(move |key: &str, expires: u64| {
        let now_secs = (js_sys::Date::now() / 1000.0) as i64;
        let reuse_for = (expires / 10).min(60) as i64;
        if let Some((lifetime, at, url)) = recent.borrow().get(key) {
            if *lifetime == expires && (0..reuse_for).contains(&(now_secs - at)) {
                return Some(url.clone());
            }
        }
        match endpoint.presign_get(&credentials, Timestamp::from_unix_seconds(now_secs), &bucket, key, expires) {
            Ok(url) => {
                let mut recent = recent.borrow_mut();
                if recent.len() >= RECENT_URLS {
                    recent.retain(|_, (_, at, _)| (0..reuse_for).contains(&(now_secs - *at)));
                    if recent.len() >= RECENT_URLS {
                        recent.clear();
                    }
                }
                recent.insert(key.to_string(), (expires, now_secs, url.clone()));
                Some(url)
            }
            Err(e) => {
                worker::console_error!("pier: presigning failed, streaming instead: {e}");
                None
            }
        }
    })))
}

/// Outbound HTTP through the Workers `fetch` API, for the S3 and Azure backends (`REGISTRY_STORAGE=s3|azure`).
pub struct WorkersHttpClient;

#[async_trait::async_trait(?Send)]
impl HttpClient for WorkersHttpClient {
    async fn send(&self, req: HttpRequest) -> crate::error::Result<HttpResponse> {
        let fail = |what: &str, e: worker::Error| Error::storage(format!("fetch {what}: {e}"));
        let headers = Headers::new();
        for (k, v) in &req.headers {
            headers.set(k, v).map_err(|e| fail("header", e))?;
        }
        let mut init = RequestInit::new();
        init.with_method(worker::Method::from(req.method.as_str().to_string())).with_headers(headers);
        if !req.body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(&req.body[..]).into()));
        }
        let request = worker::Request::new_with_init(&req.url, &init).map_err(|e| fail("request", e))?;
        let mut response = Fetch::Request(request).send().await.map_err(|e| fail("send", e))?;
        let status = response.status_code();
        let headers = response.headers().entries().collect();
        let body: crate::storage::ByteStream = match response.stream() {
            Ok(s) => Box::pin(s.map(|r| r.map(Bytes::from).map_err(|e| Error::storage(format!("fetch body: {e}"))))),
            Err(_) => Box::pin(futures::stream::empty()),
        };
        Ok(HttpResponse { status, headers, body })
    }
}

/// The read cache's shared tier: the Cache API of this Cloudflare location (`caches.default`). Entries expire by
/// their `Cache-Control: max-age`; a write through the registry deletes its key here too.
struct EdgeCache {
    /// Where the namespace is kept: the uncached metadata store.
    meta: Rc<dyn MetaStore>,
    namespace: OnceCell<Option<String>>,
}

/// The metadata key of the cache namespace.
const CACHE_NAMESPACE_KEY: &str = "_cache/namespace";

impl EdgeCache {
    /// This bucket's namespace, read (or created) once per isolate; `None` (no edge tier) when the store fails.
    async fn namespace(&self) -> Option<String> {
        if let Some(ns) = self.namespace.get() {
            return ns.clone();
        }
        let ns = self.load_namespace().await.map_err(|e| worker::console_error!("pier: read cache namespace: {e}")).ok();
        let _ = self.namespace.set(ns.clone());
        ns
    }

    async fn load_namespace(&self) -> crate::error::Result<String> {
        for _ in 0..3 {
            if let Some(v) = self.meta.get(CACHE_NAMESPACE_KEY).await? {
                return Ok(String::from_utf8_lossy(&v).into_owned());
            }
            let mut b = [0u8; 16];
            getrandom::getrandom(&mut b).map_err(|e| Error::storage(e.to_string()))?;
            let ns: String = b.iter().map(|x| format!("{x:02x}")).collect();
            if self.meta.put_if(CACHE_NAMESPACE_KEY, Bytes::from(ns.clone()), &Precondition::Absent).await?.is_some() {
                return Ok(ns);
            }
        }
        Err(Error::storage("the cache namespace kept changing"))
    }

    async fn url(&self, key: &str) -> Option<String> {
        // Keys are built by the registry from validated names and digests: path-safe already.
        self.namespace().await.map(|ns| format!("https://pier-cache.invalid/{ns}/{key}"))
    }
}

#[async_trait::async_trait(?Send)]
impl ReadCache for EdgeCache {
    async fn get(&self, key: &str) -> Option<Bytes> {
        let url = self.url(key).await?;
        let mut response = worker::Cache::default().get(url, true).await.ok()??;
        response.bytes().await.ok().map(Bytes::from)
    }

    async fn put(&self, key: &str, value: Bytes, ttl_secs: u64) {
        let Some(url) = self.url(key).await else { return };
        let Ok(mut response) = worker::Response::from_bytes(value.to_vec()) else { return };
        let _ = response.headers_mut().set("cache-control", &format!("max-age={ttl_secs}"));
        if let Err(e) = worker::Cache::default().put(url, response).await {
            worker::console_error!("pier: read cache put: {e}");
        }
    }

    async fn delete(&self, key: &str) {
        let Some(url) = self.url(key).await else { return };
        if let Err(e) = worker::Cache::default().delete(url, true).await {
            worker::console_error!("pier: read cache delete: {e}");
        }
    }
}

thread_local! {
    /// The isolate's memory tier of the read cache, shared by every registry of the isolate (requests', scheduled
    /// runs'), with the count of writes that keeps stale fills out (see `storage::cache`).
    static MEMORY_CACHE: (Rc<MemoryCache>, Rc<Cell<u64>>) =
        (Rc::new(MemoryCache::new(Rc::new(|| (js_sys::Date::now() / 1000.0) as u64))), Rc::default());
}

/// `registry` with the read cache in front of its metadata: the isolate's memory, and the location's Cache API when
/// `edge` (requests; scheduled runs skip it: their subrequests are counted, and what they delete is never cached).
fn with_read_cache(registry: Registry, meta: Rc<dyn MetaStore>, edge: bool) -> Registry {
    let (memory, invalidations) = MEMORY_CACHE.with(|(m, i)| (m.clone(), i.clone()));
    let shared: Option<Rc<dyn ReadCache>> = edge.then(|| Rc::new(EdgeCache { meta, namespace: OnceCell::new() }) as Rc<dyn ReadCache>);
    registry.with_read_cache(memory, shared, invalidations)
}

/// The object store named by `REGISTRY_STORAGE`: unset means the R2 binding; `s3` and `azure` go through `fetch`
/// (a Workers deployment keeping its blobs in Azure, like the classic Azure-backed registry:2 setup).
fn configured_stores(env: &Env) -> Result<Option<(Rc<dyn ObjectStore>, Rc<dyn MetaStore>)>, Error> {
    let unavailable = |m: String| Error::msg(ErrorCode::Unavailable, m);
    let clock: Rc<dyn Fn() -> u64> = Rc::new(|| (js_sys::Date::now() / 1000.0) as u64);
    let http: Rc<dyn HttpClient> = Rc::new(WorkersHttpClient);
    let objects: Rc<dyn ObjectStore> = match StorageConfig::from_lookup(|k| setting(env, k)).map_err(|e| unavailable(e.to_string()))? {
        StorageConfig::Filesystem(None) => return Ok(None),
        StorageConfig::S3(s) => Rc::new(s.build(http, clock).map_err(|e| unavailable(e.to_string()))?),
        StorageConfig::Azure(a) => Rc::new(a.build(http, clock).map_err(|e| unavailable(e.to_string()))?),
        StorageConfig::Filesystem(Some(_)) | StorageConfig::InMemory => {
            return Err(unavailable(
                "configuration setting REGISTRY_STORAGE: Workers keep nothing on disk or in memory between requests; leave it unset for R2, or use s3 or azure".into(),
            ))
        }
    };
    let meta: Rc<dyn MetaStore> = Rc::new(ObjectMetaStore::new(objects.clone(), OBJECT_META_PREFIX));
    Ok(Some((objects, meta)))
}

/// Give `registry` its notification delivery: outbound `fetch`, and the `EVENTS` queue when it is bound.
fn with_notifications(registry: Registry, env: &Env) -> Registry {
    if !registry.notifications_enabled() {
        return registry;
    }
    let registry = registry.with_notification_client(Rc::new(WorkersHttpClient));
    match env.queue(EVENTS_QUEUE_BINDING) {
        Ok(queue) => registry.with_event_sink(Rc::new(QueueSink(queue))),
        Err(_) => registry,
    }
}

/// The registry over this deployment's bindings; `edge`: with the Cache API tier of the read cache.
fn build_registry(env: &Env, edge: bool) -> Result<Registry, Error> {
    build_core_registry(env, edge).map(|r| with_notifications(r, env))
}

fn build_core_registry(env: &Env, edge: bool) -> Result<Registry, Error> {
    let unavailable = |m: String| Error::msg(ErrorCode::Unavailable, m);
    let mut config = Config::from_lookup(|k| setting(env, k)).map_err(|e| unavailable(e.to_string()))?;
    // Safe by default: a deployed Worker is on the internet, so without users nobody may write unless the operator
    // says so (PIER_ANONYMOUS_WRITE=true).
    config.anonymous_write.get_or_insert(false);
    if config.auth.as_ref().is_some_and(|a| a.token_secret.is_none()) {
        // Each isolate would sign with its own random key, and a token from one would fail on the next.
        return Err(unavailable(
            "configuration setting PIER_AUTH_TOKEN_SECRET: required with access control on Workers (wrangler secret put PIER_AUTH_TOKEN_SECRET)".into(),
        ));
    }
    // The pull-through cache fetches its upstreams with `fetch`.
    let with_mirror = |r: Registry| if r.config().mirror.is_some() { r.with_upstream_client(Rc::new(WorkersHttpClient)) } else { r };
    let environment = Rc::new(WorkersEnvironment { request_logs: request_logs_wanted(env) });
    if let Some((objects, meta)) = configured_stores(env)? {
        let registry = Registry::new(objects, meta.clone(), config, environment);
        return Ok(with_mirror(with_read_cache(registry, meta, edge)));
    }
    let bucket = env
        .bucket(BUCKET_BINDING)
        .map_err(|_| unavailable(format!("R2 bucket binding {BUCKET_BINDING} is missing: add [[r2_buckets]] binding = \"{BUCKET_BINDING}\" to wrangler.toml")))?;
    let meta_bucket = env.bucket(BUCKET_BINDING).map_err(|_| unavailable("R2 bucket binding missing".into()))?;
    let mut objects = R2ObjectStore::new(bucket);
    if let Some(presigner) = r2_presigner(env)? {
        objects = objects.with_presigner(presigner);
    }
    let meta: Rc<dyn MetaStore> = Rc::new(R2MetaStore::new(meta_bucket, META_PREFIX));
    let registry = Registry::new(Rc::new(objects), meta.clone(), config, environment);
    Ok(with_mirror(with_read_cache(registry, meta, edge)))
}

// Each call between wasm and JavaScript decodes its strings and allocates; a request's headers crossed one entry at a
// time, a response's one `append` at a time. These helpers move them across in one string each way (names and values
// cannot contain `\n` or `\r`, which the runtime rejects in headers; `\n` separates, the first `:` after a name's
// start splits), which profiles of the read path showed worth it next to everything else a cached read does.
#[wasm_bindgen::prelude::wasm_bindgen(inline_js = r#"
export function pier_request_head(req) {
  let out = req.method + "\n" + req.url;
  for (const [k, v] of req.headers) out += "\n" + k + ":" + v;
  return out;
}
export function pier_response(status, head, body) {
  // A plain object is handed to the runtime in one go; from a name given twice on, Headers and append.
  let headers = {};
  if (head.length > 0) {
    for (const line of head.split("\n")) {
      const i = line.indexOf(":");
      const name = line.slice(0, i);
      const value = line.slice(i + 1);
      if (headers instanceof Headers) {
        headers.append(name, value);
      } else if (Object.hasOwn(headers, name)) {
        headers = new Headers(headers);
        headers.append(name, value);
      } else {
        headers[name] = value;
      }
    }
  }
  return new Response(body, { status, headers });
}
"#)]
extern "C" {
    fn pier_request_head(req: &web_sys::Request) -> String;
    #[wasm_bindgen::prelude::wasm_bindgen(catch)]
    fn pier_response(status: u16, head: &str, body: &wasm_bindgen::JsValue) -> Result<web_sys::Response, wasm_bindgen::JsValue>;
}

/// The path and query of a serialized WHATWG URL (`https://host/path?query`): the first `/` after the authority
/// starts it, and the fragment never reaches a server. Reading it off the string the runtime gives costs less than
/// parsing the URL again, which showed up in profiles of the read path.
fn path_and_query(url: &str) -> &str {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(url);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    path.split('#').next().unwrap_or(path)
}

/// The core's request from the runtime's, read straight off the JS object: `worker::Request`'s conversion also
/// materializes the `cf` object and parses the URL, a tenth of a blob HEAD's CPU time in profiles.
fn into_core(req: web_sys::Request) -> Result<Request, Error> {
    let bad = |m: &str| Error::msg(ErrorCode::NotFound, m.to_string());
    let head = pier_request_head(&req);
    let mut lines = head.split('\n');
    let method = http::Method::from_bytes(lines.next().unwrap_or_default().as_bytes()).map_err(|_| bad("invalid method"))?;
    let url = lines.next().unwrap_or_default();
    let mut builder = http::Request::builder().method(method.clone()).uri(path_and_query(url));
    let mut client = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        // Cloudflare sets this header itself (a client's own value is replaced at the edge).
        if name == "cf-connecting-ip" {
            client = value.trim().parse().ok();
        }
        builder = builder.header(name, value);
    }
    if url.starts_with("https://") {
        builder = builder.extension(crate::api::Https);
    }
    if let Some(ip) = client {
        builder = builder.extension(ClientAddr(ip));
    }
    let body = if matches!(method, http::Method::GET | http::Method::HEAD | http::Method::DELETE) {
        Body::Empty
    } else {
        request_body(&req)
    };
    builder.body(body).map_err(|_| bad("invalid request"))
}

/// The most a request body read brings into wasm at once (see [`request_body`]).
const BODY_READ: usize = 256 * 1024;

/// The request's body as the core's stream, read with a BYOB reader: the runtime fills one JavaScript buffer, reused
/// for every read, and each read is copied into wasm once. The default reader hands over a new JavaScript chunk per
/// read, garbage that piles up until V8 collects it: with it, workerd grew 123 MiB across a 1 GiB push in 8 MiB
/// PATCHes under `wrangler dev`, against 43–52 MiB with this one (`scripts/bench workers --rss`). A body stream
/// without BYOB reads falls back to the default reader.
fn request_body(req: &web_sys::Request) -> Body {
    let Some(raw) = req.body() else { return Body::Empty };
    let interrupted = |e: String| Error::msg(ErrorCode::BlobUploadInvalid, "request body interrupted").with_detail(e);
    match wasm_streams::ReadableStream::from_raw(raw).try_into_async_read() {
        Ok(read) => Body::Stream(Box::pin(futures::stream::unfold(Some(read), move |state| async move {
            let mut read = state?;
            let mut buf = vec![0u8; BODY_READ];
            match futures::AsyncReadExt::read(&mut read, &mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(read)))
                }
                Err(e) => Some((Err(interrupted(e.to_string())), None)),
            }
        }))),
        Err((_, stream)) => match stream.try_into_stream() {
            Ok(chunks) => Body::Stream(Box::pin(chunks.map(move |r| match r {
                Ok(chunk) => Ok(Bytes::from(js_sys::Uint8Array::new(&chunk).to_vec())),
                Err(e) => Err(interrupted(worker::Error::from(e).to_string())),
            }))),
            Err((e, _)) => Body::Stream(Box::pin(futures::stream::once(async move {
                Err(interrupted(worker::Error::from(wasm_bindgen::JsValue::from(e)).to_string()))
            }))),
        },
    }
}

/// The runtime's response from the core's, built straight as a JS `Response` (no `worker::Response` in between): a
/// small body is one copy of its bytes, a stream a JS `ReadableStream` over the core's.
fn into_worker(resp: Response) -> worker::Result<web_sys::Response> {
    let (parts, body) = resp.into_parts();
    let status = parts.status.as_u16();
    // A null-body status (204, 304, 1xx) gets no body: the runtime throws on one.
    let null_body = matches!(status, 101 | 204 | 205 | 304);
    // The runtime sets Content-Length itself for a body it is handed whole: one header fewer to cross and append.
    let whole = matches!(body, Body::Full(_)) && !null_body;
    let mut head = String::with_capacity(256);
    let mut length = None;
    for (name, value) in parts.headers.iter() {
        if whole && name == http::header::CONTENT_LENGTH {
            continue;
        }
        if let Ok(v) = value.to_str() {
            if !head.is_empty() {
                head.push('\n');
            }
            head.push_str(name.as_str());
            head.push(':');
            head.push_str(v);
            if name == http::header::CONTENT_LENGTH {
                length = v.parse::<u64>().ok();
            }
        }
    }
    let body: wasm_bindgen::JsValue = match body {
        Body::Empty => wasm_bindgen::JsValue::NULL,
        Body::Full(_) if null_body => wasm_bindgen::JsValue::NULL,
        Body::Full(b) => js_sys::Uint8Array::from(&b[..]).into(),
        // A fixed-length stream keeps Content-Length on the wire instead of chunked encoding.
        Body::Stream(s) => match length {
            Some(len) => {
                let s = s.map(|r| r.map(|b| b.to_vec()).map_err(|e| worker::Error::RustError(e.to_string())));
                let sys: worker::worker_sys::FixedLengthStream = FixedLengthStream::wrap(s, len).into();
                sys.readable().into()
            }
            None => {
                let s = s.map(|r| {
                    r.map(|b| js_sys::Uint8Array::from(&b[..]).into()).map_err(|e| wasm_bindgen::JsValue::from(e.to_string()))
                });
                wasm_streams::ReadableStream::from_stream(s).into_raw().into()
            }
        },
    };
    pier_response(status, &head, &body).map_err(worker::Error::from)
}

fn error_response(e: &Error) -> worker::Result<web_sys::Response> {
    into_worker(crate::api::Reply::error(e).into_response())
}

thread_local! {
    /// The registry of this isolate. An isolate serves one deployment, whose bindings and vars do not change while it
    /// lives, so reading configuration and bindings once (not per request) is safe and saves a dozen JS calls.
    static REGISTRY: std::cell::OnceCell<Rc<Registry>> = const { std::cell::OnceCell::new() };
}

fn registry(env: &Env) -> Result<Rc<Registry>, Error> {
    if let Some(r) = REGISTRY.with(|c| c.get().cloned()) {
        return Ok(r);
    }
    let r = Rc::new(build_registry(env, true)?);
    REGISTRY.with(|c| {
        let _ = c.set(r.clone());
    });
    Ok(r)
}

/// The `fetch` entry point, exported by hand instead of through `#[event(fetch)]`, whose export is always an async
/// function: its promise and the microtask that first polls the handler cost a cached read more than everything
/// else it does. Here the handler is polled once right away; a read served from the isolate's memory (the read
/// cache's first tier) completes in that poll and the `Response` goes back synchronously. Anything that waits (a
/// store call, a request body) hands the same future to `wasm-bindgen-futures`, which polls it again with a real
/// waker: the `Future` contract only ever wakes the waker of the latest poll, so the first poll's no-op waker is
/// never needed. worker-build's shim calls it like the macro's export, with panic recovery around it.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = fetch)]
pub fn fetch_entry(req: web_sys::Request, env: Env, ctx: worker::worker_sys::Context) -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
    use std::future::Future;
    use std::task::Poll;
    let mut handler = Box::pin(fetch(req, env, Context::new(ctx)));
    match handler.as_mut().poll(&mut std::task::Context::from_waker(futures::task::noop_waker_ref())) {
        Poll::Ready(response) => settle(response),
        Poll::Pending => Ok(wasm_bindgen_futures::future_to_promise(async move { settle(handler.await) }).into()),
    }
}

/// What the runtime gets for the handler's outcome; an error here means not even an error response could be built.
fn settle(response: worker::Result<web_sys::Response>) -> Result<wasm_bindgen::JsValue, wasm_bindgen::JsValue> {
    match response {
        Ok(r) => Ok(r.into()),
        Err(e) => {
            worker::console_error!("pier: building a response: {e}");
            Err(js_sys::Error::new(&e.to_string()).into())
        }
    }
}

async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<web_sys::Response> {
    let registry = match registry(&env) {
        Ok(r) => r,
        Err(e) => {
            worker::console_error!("pier: {e}");
            return error_response(&e);
        }
    };
    match into_core(req) {
        Ok(req) => {
            let response = registry.handle(req).await;
            if registry.take_event_signal() {
                // Events went to the outbox (no queue bound): deliver them once the response is on its way.
                let registry = registry.clone();
                ctx.wait_until(async move {
                    if let Err(e) = registry.deliver_events_slice(WAIT_UNTIL_EVENTS).await {
                        worker::console_error!("pier: delivering notifications: {e}");
                    }
                });
            }
            into_worker(response)
        }
        Err(e) => error_response(&e),
    }
}

/// Outbox entries per endpoint a `waitUntil` after a response delivers (a push's events are a handful).
const WAIT_UNTIL_EVENTS: usize = 10;
/// Outbox entries per endpoint one cron run delivers (two store calls each, within the Free plan's 50 subrequests
/// with the purge and collection slices).
const CRON_EVENTS: usize = 5;
/// The longest delay a Queue message's retry may ask for (Cloudflare's limit: 12 hours).
const MAX_QUEUE_DELAY_SECS: u64 = 43_200;

#[event(queue)]
async fn queue(batch: MessageBatch<QueuedEvent>, env: Env, _ctx: Context) -> worker::Result<()> {
    let registry = match registry(&env) {
        Ok(r) => r,
        Err(e) => {
            worker::console_error!("pier: {e}");
            batch.retry_all();
            return Ok(());
        }
    };
    let messages = match batch.messages() {
        Ok(m) => m,
        Err(e) => {
            // Unreadable messages would fail the same way on every retry.
            worker::console_error!("pier: unreadable notification messages, dropped: {e}");
            batch.ack_all();
            return Ok(());
        }
    };
    // Per endpoint, the batch's events in the order they arrived, in one envelope.
    let mut by_endpoint: Vec<(String, Vec<&worker::Message<QueuedEvent>>)> = Vec::new();
    for m in &messages {
        let name = &m.body().endpoint;
        match by_endpoint.iter_mut().find(|(n, _)| n == name) {
            Some((_, list)) => list.push(m),
            None => by_endpoint.push((name.clone(), vec![m])),
        }
    }
    let (max_age, max_backoff) = registry.notification_limits();
    let now = js_sys::Date::now() as u64;
    for (name, list) in by_endpoint {
        let Some(endpoint) = registry.notification_endpoint(&name) else {
            // The endpoint was removed or disabled since: nobody wants these any more.
            for m in list {
                m.ack();
            }
            continue;
        };
        let events: Vec<Event> = list.iter().map(|m| m.body().event.clone()).collect();
        match registry.deliver_to(endpoint, &events).await {
            Outcome::Delivered => list.iter().for_each(|m| m.ack()),
            Outcome::Failed(reason) => {
                worker::console_error!("pier: notifications: endpoint {name:?} failed ({reason}); {} event(s) retried", list.len());
                for m in list {
                    let age_ms = now.saturating_sub(m.body().created_ms);
                    if age_ms > max_age.as_millis() as u64 {
                        let body = m.body();
                        let id = format!("{:016}-{}", body.created_ms.saturating_mul(1000), &body.event.id);
                        let why = format!("not delivered within {max_age:?}: {reason}");
                        match registry.dead_letter(&name, Some(body.created_ms), Some(body.event.clone()), &why, &id).await {
                            Ok(()) => m.ack(),
                            Err(e) => {
                                worker::console_error!("pier: writing a dead letter: {e}");
                                m.retry();
                            }
                        }
                        continue;
                    }
                    // The delay grows with the event's age (about doubling per retry), from the endpoint's backoff
                    // to the configured cap.
                    let delay = (age_ms / 1000).clamp(endpoint.backoff.as_secs().max(1), max_backoff.as_secs().max(1)).min(MAX_QUEUE_DELAY_SECS);
                    m.retry_with_options(&QueueRetryOptionsBuilder::new().with_delay_seconds(delay as u32).build());
                }
            }
        }
    }
    Ok(())
}

/// Upload sessions one cron run looks at (four store calls each at most), leaving the rest of the Free plan's 50
/// subrequests to the collection slice.
const CRON_PURGE_SESSIONS: usize = 3;

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let registry = match build_registry(&env, false) {
        Ok(r) => r,
        Err(e) => {
            worker::console_error!("pier: {e}");
            return;
        }
    };
    // One bounded slice of each per run: a run's subrequests stay within the Free plan's 50, and cursors carry the
    // work over to the next run.
    match registry.deliver_events_slice(CRON_EVENTS).await {
        Ok(r) if r.delivered + r.dead_lettered > 0 => {
            worker::console_log!("pier: notifications: {} delivered, {} dead-lettered", r.delivered, r.dead_lettered)
        }
        Ok(_) => {}
        Err(e) => worker::console_error!("pier: delivering notifications: {e}"),
    }
    match registry.purge_expired_uploads_slice(CRON_PURGE_SESSIONS).await {
        Ok((n, _)) if n > 0 => worker::console_log!("pier: removed {n} expired upload sessions"),
        Ok(_) => {}
        Err(e) => worker::console_error!("pier: purging upload sessions: {e}"),
    }
    if !registry.config().gc_enabled {
        return;
    }
    let calls = setting(&env, "PIER_GC_SLICE_CALLS").and_then(|v| v.trim().parse::<u64>().ok()).unwrap_or(crate::registry::gc::WORKERS_SLICE_CALLS);
    let options = crate::registry::gc::GcOptions {
        grace_secs: registry.config().gc_grace_secs,
        dry_run: false,
        max_calls: calls.max(8),
        untagged_after_secs: registry.config().gc_untagged_after_secs,
    };
    match registry.gc_slice(&options).await {
        Ok(p) if p.cycle_done => {
            let r = &p.report;
            worker::console_log!(
                "pier: garbage collection cycle {} done in {} runs: {} blobs ({} bytes) deleted, {} links removed",
                r.cycle, r.slices, r.blobs_deleted, r.bytes_reclaimed, r.links_deleted
            );
        }
        Ok(_) => {}
        Err(e) => worker::console_error!("pier: garbage collection: {e}"),
    }
}
