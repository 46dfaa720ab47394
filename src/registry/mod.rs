//! The registry: a pure function of (request, stores) → response. [`Registry::handle`] routes a request to the
//! handler of its resource (one module each: blobs, uploads, manifests, discovery for tags/catalog/referrers) and
//! turns every error into an OCI error response. Platform adapters construct a `Registry` with their stores and an
//! [`Environment`] for time, randomness and logs. With access control configured, every request is first put to the
//! [`Authorizer`] (the scope it needs follows from its route and method), and `/token` is its token endpoint.
//!
//! Operations live here too, so every platform has them: `/health` answers before routing and access control (see
//! `health`), read-only mode (`Config::read_only`) refuses writes before anything else looks at them, and every
//! request gets an `X-Request-Id` and one [`RequestLog`] record handed to [`Environment::log_request`].
//!
//! Notifications: a handler says what it did in its reply ([`crate::events::EventDraft`]); `handle` records the
//! event (the outbox or the platform's sink, see `notify`) after the store operation and before answering.

mod admin;
pub(crate) mod blobs;
mod discovery;
mod flights;
pub mod gc;
mod usage;
mod health;
pub mod keys;
pub(crate) mod manifests;
pub mod mirror;
pub mod notify;
mod tee;
pub mod request_log;
mod read_cache;
#[cfg(test)]
mod bounds_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod test_env;
#[cfg(test)]
mod notify_tests;
#[cfg(test)]
mod mirror_tests;
#[cfg(test)]
mod ops_tests;
#[cfg(test)]
mod tests;
mod uploads;

pub use uploads::PURGE_SLICE;

use crate::api::{route, ClientAddr, Reply, Request, Response, Route, REQUEST_ID_HEADER};
use crate::auth::htpasswd::BcryptHash;
use crate::auth::authorizer::RequestInfo;
use crate::auth::token::Secret;
use crate::auth::{Access, Authorizer, TOKEN_PATH};
use crate::config::Config;
use crate::error::{Error, ErrorCode, Result};
use crate::storage::{MetaStore, ObjectStore};
use futures::future::LocalBoxFuture;
use http::{HeaderMap, Method, StatusCode};
use std::rc::Rc;

pub use health::HEALTH_PATH;
pub use request_log::{RequestLog, RouteKind};
pub use usage::{RepositoryUsage, StorageUsage};

/// The most bytes of a refused request's body read before answering 401/403, or 405 in read-only mode (a monolithic
/// layer upload can be large; beyond this the connection is closed instead).
const AUTH_DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// Whether a request changes the registry (uploads, manifest and tag pushes, deletes).
fn is_write(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What the core needs from its platform besides storage.
pub trait Environment {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
    /// 16 bytes from a cryptographically secure source (upload session ids are capabilities).
    fn random_bytes(&self) -> [u8; 16];
    /// Report a server-side failure (storage errors). Never called with secrets.
    fn log_error(&self, message: &str);
    /// Check a password against a bcrypt hash. The native server runs it on a small blocking pool, so a flood of
    /// logins never holds up the requests around it; wasm platforms run it in place (one request per invocation).
    fn verify_password(&self, hash: BcryptHash, password: Vec<u8>) -> LocalBoxFuture<'static, bool> {
        Box::pin(futures::future::ready(hash.verify(&password)))
    }
    /// Milliseconds since the Unix epoch, for request logs and durations. The default has one-second precision.
    fn now_millis(&self) -> u64 {
        self.now_unix().saturating_mul(1000)
    }
    /// Write the record of one answered request (the platform picks the form: [`RequestLog::to_json`] or
    /// [`RequestLog::to_text`]). The default drops it, for environments without logs (tests, benchmarks).
    fn log_request(&self, _record: &RequestLog) {}
    /// A timer: a future that completes after `duration`, where the platform has one (bounds a webhook delivery's
    /// time). `None` (the default): deliveries wait for the platform's own timeouts.
    fn sleep(&self, _duration: std::time::Duration) -> Option<LocalBoxFuture<'static, ()>> {
        None
    }
}

/// The registry core.
/// Fields are visible to the crate for the web UI (`crate::ui`), which reads the same stores through them.
pub struct Registry {
    pub(crate) objects: Rc<dyn ObjectStore>,
    pub(crate) meta: Rc<dyn MetaStore>,
    pub(crate) config: Config,
    pub(crate) env: Rc<dyn Environment>,
    pub(crate) auth: Option<Authorizer>,
    /// Outbound HTTP for the pull-through cache (see `mirror`), when the platform gives one.
    upstream_http: Option<Rc<dyn crate::storage::http::HttpClient>>,
    upstream_tokens: mirror::TokenCache,
    /// First pulls of blobs being fetched from upstreams in this process or isolate (see `flights`).
    blob_flights: flights::Flights,
    notifier: Option<notify::Notifier>,
    /// The read cache's counters, when `meta` has one in front (see `read_cache`).
    cache_stats: Option<Rc<std::cell::Cell<crate::storage::cache::CacheStats>>>,
    request_ids: request_log::RequestIds,
}

/// Decoded query parameters (first value wins).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(q: Option<&str>) -> Self {
        Query(q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// A header as a string, if present and valid UTF-8.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Registry {
    /// A registry over the given stores.
    pub fn new(objects: Rc<dyn ObjectStore>, meta: Rc<dyn MetaStore>, config: Config, env: Rc<dyn Environment>) -> Self {
        let mut config = config;
        config.part_size = config.part_size.max(objects.min_part_size());
        let auth = config.auth.clone().map(|a| {
            if a.token_secret.is_none() {
                env.log_error("PIER_AUTH_TOKEN_SECRET is not set: tokens are signed with a random key of this process only");
            }
            let mut key = env.random_bytes().to_vec();
            key.extend_from_slice(&env.random_bytes());
            let verifier = env.clone();
            Authorizer::new(a, Secret::new(key)).with_password_check(Rc::new(move |hash, password| verifier.verify_password(hash, password)))
        });
        let notifier = config
            .notifications
            .active()
            .next()
            .is_some()
            .then(|| notify::Notifier::new(config.notifications.clone(), notify::uuid(env.random_bytes())));
        let request_ids = request_log::RequestIds::new(env.random_bytes());
        Registry {
            objects,
            meta,
            config,
            env,
            auth,
            notifier,
            upstream_http: None,
            upstream_tokens: mirror::TokenCache::default(),
            cache_stats: None,
            blob_flights: flights::Flights::default(),
            request_ids,
        }
    }

    /// Give the registry an outbound HTTP client for the pull-through cache (`REGISTRY_PROXY_REMOTEURL`,
    /// `PIER_PROXY_UPSTREAMS`).
    pub fn with_upstream_client(mut self, http: Rc<dyn crate::storage::http::HttpClient>) -> Self {
        self.upstream_http = Some(http);
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Answer one request. Never fails: errors become OCI error responses. Every answer carries `X-Request-Id`, and
    /// its record goes to [`Environment::log_request`].
    pub async fn handle(&self, req: Request) -> Response {
        let start = self.env.now_millis();
        let request_id =
            request_log::client_request_id(req.headers()).unwrap_or_else(|| self.request_ids.next());
        let mut record = RequestLog::start(&req, request_id, start);
        let is_head = req.method() == Method::HEAD;
        // What an event needs from the request, taken before the request is consumed (only when someone listens).
        let facts = self.notifier.as_ref().map(|_| {
            let h = |n: &str| header(req.headers(), n).unwrap_or_default().chars().take(256).collect::<String>();
            let scheme = match header(req.headers(), "x-forwarded-proto") {
                Some("https") => "https",
                _ => "http",
            };
            (h("host"), h("user-agent"), scheme)
        });
        let mut reply = match self.dispatch(req, &mut record).await {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    self.env.log_error(&format!("request {}: {e}", record.request_id));
                }
                Reply::error(&e)
            }
        };
        if record.route == RouteKind::Token && reply.status.is_success() {
            if let crate::api::Body::Full(body) = &reply.body {
                record.user = request_log::issued_token_subject(body);
            }
        }
        if let (Some(draft), Some((host, useragent, scheme))) = (reply.event.take(), facts) {
            if reply.status.is_success() || reply.status.is_redirection() {
                let request = crate::events::RequestFacts {
                    id: record.request_id.clone(),
                    addr: record.client.map(|c| c.to_string()).unwrap_or_default(),
                    host,
                    method: record.method.clone(),
                    useragent,
                };
                if !(is_head && draft.action == crate::events::Action::Pull) {
                    self.record_event(draft, request, record.user.clone().unwrap_or_default(), scheme).await;
                }
            }
        }
        let reply = reply.header(REQUEST_ID_HEADER, record.request_id.clone());
        record.finish(&reply, is_head, self.env.now_millis());
        self.env.log_request(&record);
        if is_head { reply.without_body() } else { reply }.into_response()
    }

    async fn dispatch(&self, req: Request, record: &mut RequestLog) -> Result<Reply> {
        // The web UI decides for itself who may see what (a session cookie, on its own paths only): the API's
        // access control and `Authorization` handling below never see its requests, nor it theirs.
        if self.config.ui && crate::ui::is_ui_path(req.uri().path()) {
            record.route = RouteKind::Ui;
            return Ok(self.ui(req).await);
        }
        let (parts, body) = req.into_parts();
        // Before routing and access control: probes come without credentials, and `/health` is not an API path.
        if parts.uri.path() == HEALTH_PATH {
            record.route = RouteKind::Health;
            return self.health(&parts.method, &record.request_id).await;
        }
        let client = parts.extensions.get::<ClientAddr>().map(|c| c.0);
        let info = RequestInfo { method: &parts.method, uri: &parts.uri, headers: &parts.headers, client };
        if parts.uri.path().starts_with(admin::ADMIN_PREFIX) {
            return self.admin(&info, body).await;
        }
        if let Some(auth) = &self.auth {
            if parts.uri.path() == TOKEN_PATH {
                record.route = RouteKind::Token;
                return auth.token_endpoint(&info, body, self.env.now_unix(), self.env.random_bytes()).await;
            }
        }
        let route = route(parts.uri.path())?;
        record.set_route(&route);
        if self.config.read_only && is_write(&parts.method) {
            // Before access control: the answer is the same for everyone, and a refused push costs no bcrypt.
            let mut body = body;
            body.drain(AUTH_DRAIN_LIMIT).await;
            return Err(Error::msg(
                ErrorCode::Unsupported,
                "the registry is in read-only mode (maintenance): pushes and deletes are refused, pulls work",
            ));
        }
        // A mirrored repository is pull-only: the same answer for everyone, before access control (like read-only).
        let mirrored = self.config.mirror.as_ref().is_some_and(|m| route.repository().is_some_and(|n| m.route(n.as_str()).is_some()));
        if mirrored && is_write(&parts.method) {
            let mut body = body;
            body.drain(AUTH_DRAIN_LIMIT).await;
            return Err(Error::msg(ErrorCode::Unsupported, "this repository is a mirror of an upstream registry: it is pull-only"));
        }
        if self.auth.is_none() && self.config.anonymous_write == Some(false) && is_write(&parts.method) {
            let mut body = body;
            body.drain(AUTH_DRAIN_LIMIT).await;
            return Err(Error::msg(
                ErrorCode::Unauthorized,
                "this registry has no users, and anonymous writes are off: configure access control \
                 (REGISTRY_AUTH=htpasswd with PIER_AUTH_HTPASSWD) or set PIER_ANONYMOUS_WRITE=true for an open registry",
            ));
        }
        let access = match &self.auth {
            Some(auth) => match auth.authorize(&info, &route, self.env.now_unix()).await {
                Ok(access) => access,
                Err(e) => {
                    // Clients that try without credentials first (oras, docker) send the same request again on the
                    // same connection: reading the refused body keeps that connection usable, where answering before
                    // it would make the server close it under the retry. Bounded, like every drain.
                    let mut body = body;
                    body.drain(AUTH_DRAIN_LIMIT).await;
                    return Err(e);
                }
            },
            None => Access::unrestricted(),
        };
        record.user = access.user().map(str::to_string);
        let query = Query::parse(parts.uri.query());
        let method = parts.method.clone();
        let headers = &parts.headers;
        let head = method == Method::HEAD;
        // A mirrored repository: manifests and blobs come through the pull-through cache, writes are refused; tag
        // lists and referrers show what is cached.
        if let Some((up, repo)) = self.config.mirror.as_ref().and_then(|m| route.repository().and_then(|n| m.route(n.as_str()))) {
            match (&route, head) {
                (Route::Manifest { name, reference }, _) => return self.mirrored_manifest(name, up, &repo, reference, head).await,
                (Route::Blob { name, digest }, _) => return self.mirrored_blob(name, up, &repo, digest, headers, head).await,
                _ => {}
            }
        }
        match (route, method) {
            (Route::Base, Method::GET | Method::HEAD) => Ok(Reply::json(StatusCode::OK, &serde_json::json!({}))),
            (Route::Catalog, Method::GET | Method::HEAD) => self.catalog(&query).await,
            (Route::TagsList { name }, Method::GET | Method::HEAD) => self.tags_list(&name, &query).await,
            (Route::Referrers { name, digest }, Method::GET | Method::HEAD) => self.referrers(&name, &digest, &query).await,
            (Route::Manifest { name, reference }, Method::GET | Method::HEAD) => self.get_manifest(&name, &reference).await,
            (Route::Manifest { name, reference }, Method::PUT) => self.put_manifest(&name, &reference, headers, body).await,
            (Route::Manifest { name, reference }, Method::DELETE) => self.delete_manifest(&name, &reference).await,
            (Route::Blob { name, digest }, Method::GET | Method::HEAD) => self.get_blob(&name, &digest, headers, head).await,
            (Route::Blob { name, digest }, Method::DELETE) => self.delete_blob(&name, &digest).await,
            (Route::UploadStart { name }, Method::POST) => self.start_upload(&name, &query, headers, body, &access).await,
            (Route::Upload { name, id }, Method::GET | Method::HEAD) => self.upload_status(&name, &id).await,
            (Route::Upload { name, id }, Method::PATCH) => self.patch_upload(&name, &id, headers, body).await,
            (Route::Upload { name, id }, Method::PUT) => self.finish_upload(&name, &id, &query, headers, body).await,
            (Route::Upload { name, id }, Method::DELETE) => self.cancel_upload(&name, &id).await,
            (_, m) => {
                // Read what was sent first (bounded): answering while the client still sends makes the connection
                // close under it, and the client sees a reset instead of the 405.
                let mut body = body;
                body.drain(AUTH_DRAIN_LIMIT).await;
                Err(Error::new(ErrorCode::MethodNotAllowed).with_detail(m.as_str().to_string()))
            }
        }
    }

    fn require_delete_enabled(&self) -> Result<()> {
        if self.config.delete_enabled {
            Ok(())
        } else {
            Err(Error::msg(ErrorCode::Unsupported, "deletes are disabled on this registry"))
        }
    }
}
