//! The native adapter: a hyper HTTP/1.1 server hosting the core, with filesystem or in-memory storage. The core's
//! futures are not `Send` (they are not on wasm either), so connections run as local tasks on one thread; hashing
//! runs at native speed, which keeps one thread ahead of a local disk and network.
//!
//! A slow or idle client must not hold the server: request headers must arrive within a time limit, a request body
//! that stops arriving ends its request (an upload then keeps its last good offset), and the number of connections
//! served at once is capped (further ones wait in the listen backlog). See [`ServeOptions`].
//!
//! With TLS ([`TlsReloader`], registry:2's `http.tls` settings) each connection does its handshake first, within
//! the header time limit; a client speaking plain HTTP to the TLS port gets a plain `400` saying so instead of a
//! TLS alert it cannot read.
//!
//! Request logs go to stdout, one line per request, as text or JSON ([`LogFormat`]); server errors go to stderr. The
//! peer address of each connection reaches the core as a [`ClientAddr`] request extension. With a metrics address,
//! the same records feed [`Metrics`] (`/metrics` on its own listener, see `native_metrics`).
//!
//! Notifications: a background task delivers the outbox (`registry::notify`) right after a request recorded events,
//! every [`DELIVERY_INTERVAL`] otherwise, and once at start (events a previous process left pending) — never on a
//! request's path.

use crate::api::{Body, ClientAddr, Https, Request, Response};
use crate::auth::htpasswd::BcryptHash;
use crate::config::{Config, ConfigError};
use crate::error::{Error, ErrorCode};
use crate::registry::gc::{GcOptions, GcReport};
use crate::platform::native_metrics::Metrics;
use crate::platform::native_tls::TlsReloader;
use crate::registry::{Environment, Registry, RequestLog};
use crate::storage::fs::{FsMetaStore, FsObjectStore};
use crate::storage::config::{AzureSettings, S3Settings};
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use crate::storage::object_meta::{ObjectMetaStore, DEFAULT_PREFIX};
use crate::storage::{MetaStore, ObjectStore};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::StreamExt;
use http_body_util::BodyStream;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::rc::Rc;
use std::sync::Arc;
use tokio::sync::Semaphore;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How request logs are written (`pier serve --log-format`, `PIER_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// A compact human line ([`RequestLog::to_text`]).
    #[default]
    Text,
    /// One JSON object per line ([`RequestLog::to_json`]), for log shippers.
    Json,
}

impl LogFormat {
    /// `text` or `json`; `setting` names the flag or variable in the error.
    pub fn parse(setting: &str, v: &str) -> Result<Self, ConfigError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError { setting: setting.to_string(), problem: format!("expected text or json, got {v:?}") }),
        }
    }

    /// registry:2's `log.formatter` (`REGISTRY_LOG_FORMATTER`): `text` or `json`, and `logstash`, which Pier writes
    /// as plain JSON lines (the second value is a warning saying so).
    pub fn parse_registry_formatter(setting: &str, v: &str) -> Result<(Self, Option<String>), ConfigError> {
        match v.trim().to_ascii_lowercase().as_str() {
            "logstash" => Ok((LogFormat::Json, Some(format!("{setting}: logstash is written as plain JSON lines")))),
            _ => LogFormat::parse(setting, v)
                .map(|f| (f, None))
                .map_err(|e| ConfigError { problem: format!("expected text, json or logstash, got {v:?}"), ..e }),
        }
    }
}

/// Time, randomness and logs from the operating system; bcrypt on the blocking pool.
pub struct NativeEnvironment {
    /// The form of request log lines.
    pub log_format: LogFormat,
    /// Password checks running at once: one core's worth fewer than the machine has, so the thread serving requests
    /// always has a core while logins queue (asynchronously) for theirs.
    password_checks: Arc<Semaphore>,
    /// Counters for `/metrics`, when it is on.
    metrics: Option<Rc<Metrics>>,
}

impl NativeEnvironment {
    pub fn new(log_format: LogFormat) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        NativeEnvironment { log_format, password_checks: Arc::new(Semaphore::new(cores.saturating_sub(1).max(1))), metrics: None }
    }

    /// The same, counting every request into `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Rc<Metrics>>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl Environment for NativeEnvironment {
    fn now_unix(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn now_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn log_request(&self, record: &RequestLog) {
        if let Some(m) = &self.metrics {
            m.observe(record);
        }
        let line = match self.log_format {
            LogFormat::Text => record.to_text(),
            LogFormat::Json => record.to_json(),
        };
        // Not println!: it panics when stdout is closed (a log reader gone), which must not fail a request.
        let _ = writeln!(io::stdout().lock(), "{line}");
    }

    fn random_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        if getrandom::getrandom(&mut b).is_err() {
            // Without an OS random source no session id would be safe; fall back to time so requests still work,
            // and say so.
            eprintln!("pier: warning: OS random source unavailable");
            let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            b = t.to_le_bytes();
        }
        b
    }

    fn log_error(&self, message: &str) {
        eprintln!("pier: error: {message}");
    }

    fn sleep(&self, duration: Duration) -> Option<LocalBoxFuture<'static, ()>> {
        // Outside a Tokio runtime (unit tests on a plain executor) there is no timer.
        tokio::runtime::Handle::try_current().ok()?;
        Some(Box::pin(tokio::time::sleep(duration)))
    }

    fn verify_password(&self, hash: BcryptHash, password: Vec<u8>) -> LocalBoxFuture<'static, bool> {
        let slots = self.password_checks.clone();
        Box::pin(async move {
            // Outside a Tokio runtime (unit tests driving the core with a plain executor) there is no pool: check in
            // place.
            if tokio::runtime::Handle::try_current().is_err() {
                return hash.verify(&password);
            }
            let Ok(_slot) = slots.acquire_owned().await else { return false };
            tokio::task::spawn_blocking(move || hash.verify(&password)).await.unwrap_or(false)
        })
    }
}

/// Where the native server keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Files under a root directory.
    Filesystem(PathBuf),
    /// Process memory (lost on exit).
    Memory,
    /// An S3-compatible bucket (blobs, and metadata under `meta/`).
    S3(S3Settings),
    /// An Azure Blob container (blobs, and metadata under `meta/`).
    Azure(AzureSettings),
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Build a registry over `storage`, writing request logs in `log_format` (and counting them into `metrics`).
pub fn build_registry(storage: &Storage, config: Config, log_format: LogFormat, metrics: Option<Rc<Metrics>>) -> Result<Registry, Error> {
    let notify = config.notifications.active().next().is_some();
    let (objects, meta): (Rc<dyn ObjectStore>, Rc<dyn MetaStore>) = match storage {
        Storage::Filesystem(root) => (Rc::new(FsObjectStore::new(root)?), Rc::new(FsMetaStore::new(root)?)),
        Storage::Memory => (Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new())),
        Storage::S3(_) | Storage::Azure(_) => {
            let http = Rc::new(crate::platform::native_http::NativeHttpClient::new()?);
            let unavailable = |e: crate::config::ConfigError| Error::msg(ErrorCode::Unavailable, e.to_string());
            let objects: Rc<dyn ObjectStore> = match storage {
                Storage::S3(s) => Rc::new(s.build(http, Rc::new(unix_now)).map_err(unavailable)?),
                Storage::Azure(a) => Rc::new(a.build(http, Rc::new(unix_now)).map_err(unavailable)?),
                _ => return Err(Error::storage("unreachable storage kind")),
            };
            (objects.clone(), Rc::new(ObjectMetaStore::new(objects, DEFAULT_PREFIX)))
        }
    };
    let mirrored = config.mirror.is_some();
    let env = Rc::new(NativeEnvironment::new(log_format).with_metrics(metrics));
    let mut registry = Registry::new(objects, meta, config, env);
    if notify {
        registry = registry.with_notification_client(Rc::new(crate::platform::native_http::NativeHttpClient::new()?));
    }
    if mirrored {
        registry = registry.with_upstream_client(Rc::new(crate::platform::native_http::NativeHttpClient::new()?));
    }
    Ok(registry)
}

/// The core's body as a hyper body. Not `Send`, like the core's streams; hyper's HTTP/1 connections on a local task
/// do not need it to be.
pub struct HyperBody(Body);

impl hyper::body::Body for HyperBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.0 {
            Body::Empty => Poll::Ready(None),
            Body::Full(b) => {
                let b = std::mem::take(b);
                self.0 = Body::Empty;
                Poll::Ready((!b.is_empty()).then(|| Ok(Frame::data(b))))
            }
            Body::Stream(s) => s.poll_next_unpin(cx).map(|o| o.map(|r| r.map(Frame::data).map_err(|e| io::Error::other(e.to_string())))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(&self.0, Body::Empty) || matches!(&self.0, Body::Full(b) if b.is_empty())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(b) => SizeHint::with_exact(b.len() as u64),
            Body::Stream(_) => SizeHint::default(),
        }
    }
}

fn into_core(req: hyper::Request<Incoming>, peer: SocketAddr, body_timeout: Duration, https: bool) -> Request {
    let (mut parts, incoming) = req.into_parts();
    // Canonical: a dual-stack listener reports IPv4 clients as `::ffff:a.b.c.d`.
    parts.extensions.insert(ClientAddr(peer.ip().to_canonical()));
    if https {
        parts.extensions.insert(Https);
    }
    let frames = BodyStream::new(incoming).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(Error::msg(ErrorCode::BlobUploadInvalid, "request body interrupted").with_detail(e.to_string()))),
        }
    });
    // Each chunk must arrive within `body_timeout` of the previous one; a stalled body ends with an error (and the
    // stream ends after it).
    let stream = futures::stream::unfold(Some(Box::pin(frames)), move |state| async move {
        let mut frames = state?;
        match tokio::time::timeout(body_timeout, frames.next()).await {
            Ok(Some(item)) => Some((item, Some(frames))),
            Ok(None) => None,
            Err(_) => Some((
                Err(Error::msg(ErrorCode::BlobUploadInvalid, "request body stalled")
                    .with_detail(format!("no bytes for {} s", body_timeout.as_secs()))),
                None,
            )),
        }
    });
    Request::from_parts(parts, Body::Stream(Box::pin(stream)))
}

/// Limits that keep slow or idle clients from holding the server.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client has to send a request's headers (`PIER_HTTP_HEADER_TIMEOUT`, default 30 s).
    pub header_timeout: Duration,
    /// Longest pause between two pieces of a request body (`PIER_HTTP_BODY_TIMEOUT`, default 60 s).
    pub body_timeout: Duration,
    /// Connections served at once (`PIER_HTTP_MAX_CONNECTIONS`, default 512); more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { header_timeout: Duration::from_secs(30), body_timeout: Duration::from_secs(60), max_connections: 512 }
    }
}

fn into_hyper(resp: Response) -> hyper::Response<HyperBody> {
    let (parts, body) = resp.into_parts();
    hyper::Response::from_parts(parts, HyperBody(body))
}

/// Store calls per slice natively: slices only bound how often progress is saved and shown.
const NATIVE_SLICE_CALLS: u64 = 2_000;

/// Run garbage collection until `cycles` cycles have finished (a cycle in progress, say from the Workers cron or an
/// interrupted run, is finished first and counts as one); `progress` sees the report after each slice. Returns the
/// finished cycles' reports. Another runner holding the collection makes this wait for it.
pub async fn collect(registry: &Registry, options: &GcOptions, cycles: usize, progress: impl Fn(&GcReport)) -> Result<Vec<GcReport>, Error> {
    let options = GcOptions { max_calls: options.max_calls.min(NATIVE_SLICE_CALLS), ..options.clone() };
    let mut done = Vec::new();
    loop {
        let p = registry.gc_slice(&options).await?;
        if p.busy {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        progress(&p.report);
        if p.cycle_done {
            done.push(p.report);
            if done.len() >= cycles || options.dry_run {
                return Ok(done);
            }
        }
    }
}

/// The answer to plain HTTP on the TLS port, as Go's server (and so registry:2) gives it.
const PLAIN_HTTP_ON_TLS_PORT: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Serve HTTP/1.1 on one connection (plain TCP or TLS) until it closes.
async fn serve_connection<I>(io: I, registry: Rc<Registry>, peer: SocketAddr, options: ServeOptions, https: bool, hooks: Rc<Hooks>)
where
    I: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let registry = registry.clone();
        let hooks = hooks.clone();
        async move {
            let _in_flight = hooks.metrics.as_ref().map(|m| m.start(req.uri().path()));
            let response = registry.handle(into_core(req, peer, options.body_timeout, https)).await;
            if registry.take_event_signal() {
                if let Some(wake) = &hooks.deliver {
                    wake.notify_one();
                }
            }
            Ok::<_, Infallible>(into_hyper(response))
        }
    });
    // Connection errors (clients hanging up, a TLS hello on the plain port, a header timeout) concern only that
    // client.
    let _ = http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// The TLS handshake, then HTTP/1.1 over it. Plain HTTP is answered with [`PLAIN_HTTP_ON_TLS_PORT`]; a client that
/// sends nothing, or never finishes its handshake, is dropped after the header time limit.
async fn serve_tls_connection(
    mut stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    registry: Rc<Registry>,
    peer: SocketAddr,
    options: ServeOptions,
    hooks: Rc<Hooks>,
) {
    let mut first = [0u8; 1];
    match tokio::time::timeout(options.header_timeout, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] == TLS_HANDSHAKE_RECORD => {}
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            // Read the request (its head usually comes in one piece) before answering, so closing does not reset
            // the connection under the answer.
            let mut request = [0u8; 8192];
            let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
            let _ = stream.write_all(PLAIN_HTTP_ON_TLS_PORT).await;
            let _ = stream.shutdown().await;
            return;
        }
        _ => return,
    }
    // Failed or slow handshakes (an untrusted certificate on the client's side, a scanner) concern only that client.
    if let Ok(Ok(tls)) = tokio::time::timeout(options.header_timeout, acceptor.accept(stream)).await {
        serve_connection(tls, registry, peer, options, true, hooks).await;
    }
}

/// What each connection reports to: the notification delivery task and the metrics.
struct Hooks {
    deliver: Option<Rc<tokio::sync::Notify>>,
    metrics: Option<Rc<Metrics>>,
}

/// How often the delivery task looks at the outbox when no request woke it (retries of failed deliveries, events
/// recorded by another process on the same storage).
pub const DELIVERY_INTERVAL: Duration = Duration::from_secs(2);
/// Entries per endpoint one delivery slice sends natively.
const NATIVE_DELIVERY_SLICE: usize = 100;

/// Deliver notification outboxes until they are empty or an endpoint fails; then wait for a request's events or
/// the next interval.
async fn deliver_events(registry: Rc<Registry>, wake: Rc<tokio::sync::Notify>) {
    loop {
        loop {
            match registry.deliver_events_slice(NATIVE_DELIVERY_SLICE).await {
                Ok(r) if r.more && r.delivered > 0 => continue,
                Ok(_) => break,
                Err(e) => {
                    eprintln!("pier: error: delivering notifications: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(DELIVERY_INTERVAL) => {}
        }
    }
}

/// Serve `registry` on `listener` until the process ends, over TLS when `tls` is given, counting requests into
/// `metrics` when given. Must run inside a `tokio::task::LocalSet`.
pub async fn serve(
    listener: TcpListener,
    registry: Rc<Registry>,
    options: ServeOptions,
    tls: Option<TlsReloader>,
    metrics: Option<Rc<Metrics>>,
) -> io::Result<()> {
    let deliver = registry.notifications_enabled().then(|| Rc::new(tokio::sync::Notify::new()));
    if let Some(wake) = &deliver {
        tokio::task::spawn_local(deliver_events(registry.clone(), wake.clone()));
    }
    let hooks = Rc::new(Hooks { deliver, metrics });
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let purger = registry.clone();
    let every = Duration::from_secs((purger.config().upload_expiry_secs / 4).clamp(60, 3600));
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(every).await;
            match purger.purge_expired_uploads().await {
                Ok(0) => {}
                Ok(n) => eprintln!("pier: removed {n} expired upload sessions"),
                Err(e) => eprintln!("pier: error: purging upload sessions: {e}"),
            }
        }
    });
    if let (true, Some(every)) = (registry.config().gc_enabled, registry.config().gc_interval_secs) {
        let collector = registry.clone();
        let options = GcOptions {
            grace_secs: collector.config().gc_grace_secs,
            untagged_after_secs: collector.config().gc_untagged_after_secs,
            ..GcOptions::default()
        };
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                match collect(&collector, &options, 1, |_| {}).await.map(|mut r| r.pop().unwrap_or_default()) {
                    Ok(r) => eprintln!(
                        "pier: garbage collection cycle {}: {} blobs ({} bytes) deleted, {} links removed, {} marked",
                        r.cycle, r.blobs_deleted, r.bytes_reclaimed, r.links_deleted, r.links_tombstoned + r.blobs_tombstoned
                    ),
                    Err(e) => eprintln!("pier: error: garbage collection: {e}"),
                }
            }
        });
    }
    loop {
        // A connection slot first: beyond the limit, clients wait in the kernel's backlog rather than in memory here.
        let Ok(slot) = slots.clone().acquire_owned().await else { return Ok(()) };
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Running out of file descriptors and similar are transient: back off rather than exit.
                eprintln!("pier: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let registry = registry.clone();
        let acceptor = tls.as_ref().map(TlsReloader::acceptor);
        let hooks = hooks.clone();
        tokio::task::spawn_local(async move {
            match acceptor {
                Some(acceptor) => serve_tls_connection(stream, acceptor, registry, peer, options, hooks).await,
                None => serve_connection(stream, registry, peer, options, false, hooks).await,
            }
            drop(slot);
        });
    }
}
