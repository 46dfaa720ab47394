//! Admin endpoints, outside `/v2/`: `GET /admin/gc` (the last collection's report and the cycle in progress),
//! `POST /admin/gc` (run one collection slice: what a wasi:http host's scheduler, a Spin cron trigger or any external
//! cron calls; `?calls=N` bounds its store calls, default 500; `?grace=DURATION` overrides `PIER_GC_GRACE_PERIOD` for
//! this slice), `GET /admin/du` (the storage report), `GET /admin/events` (per notification endpoint: events
//! waiting, dead letters, failures in a row) and `POST /admin/events` (deliver one slice of the notification outboxes,
//! `?max=N` entries per endpoint, default 100: what a wasi:http host's scheduler or an external cron calls), and
//! `GET /admin/cache` (this process's or isolate's read-cache counters, see `storage::cache`; `null` without one).
//!
//! Who may call them: with access control on, a caller allowed `registry:catalog` (the rules' admin); with it off, a
//! loopback client, or anyone when the operator opened the registry to anonymous writes (`PIER_ANONYMOUS_WRITE=true`:
//! whoever may delete anything may also collect what deletes left behind). Everyone else gets 401/403.

use super::gc::GcOptions;
use super::{Query, Registry, AUTH_DRAIN_LIMIT};
use crate::api::{Body, Reply, Route};
use crate::auth::authorizer::RequestInfo;
use crate::error::{Error, ErrorCode, Result};
use http::{Method, StatusCode};
use serde_json::json;

/// Paths under this prefix are admin endpoints.
pub const ADMIN_PREFIX: &str = "/admin/";
/// Store calls one `POST /admin/gc` may make unless `?calls=` says otherwise.
const DEFAULT_SLICE_CALLS: u64 = 500;

fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::storage(e.to_string()))
}

impl Registry {
    async fn admin_allowed(&self, info: &RequestInfo<'_>) -> Result<()> {
        match &self.auth {
            // The catalog's scope is the rules' way of naming an administrator.
            Some(auth) => auth.authorize(info, &Route::Catalog, self.env.now_unix()).await.map(|_| ()),
            None if info.client.is_some_and(|c| c.is_loopback()) || self.config.anonymous_write == Some(true) => Ok(()),
            None => Err(Error::msg(
                ErrorCode::Denied,
                "admin endpoints need access control (a user allowed registry:catalog) or a loopback client",
            )),
        }
    }

    pub(super) async fn admin(&self, info: &RequestInfo<'_>, body: Body) -> Result<Reply> {
        let mut body = body;
        body.drain(AUTH_DRAIN_LIMIT).await;
        self.admin_allowed(info).await?;
        let path = info.uri.path();
        let query = Query::parse(info.uri.query());
        match (path.strip_prefix(ADMIN_PREFIX), info.method) {
            (Some("gc"), &Method::GET | &Method::HEAD) => {
                let last = self.gc_last_report().await?;
                let running = self.gc_in_progress().await?;
                Ok(Reply::json(StatusCode::OK, &json!({ "last": to_json(&last)?, "in_progress": running })))
            }
            (Some("gc"), &Method::POST) => {
                let calls = match query.get("calls") {
                    None => DEFAULT_SLICE_CALLS,
                    Some(v) => v.parse::<u64>().ok().filter(|n| *n >= 8).ok_or_else(|| {
                        Error::msg(ErrorCode::Unsupported, "calls must be a number of store calls, at least 8").with_detail(v.to_string())
                    })?,
                };
                // An administrator may shorten the grace period for this slice (as `pier gc --grace` does): safety
                // never rests on it, it only delays deletions.
                let grace_secs = match query.get("grace") {
                    None => self.config.gc_grace_secs,
                    Some(v) => crate::config::parse_duration_secs("grace", v)
                        .map_err(|e| Error::msg(ErrorCode::Unsupported, e.to_string()))?,
                };
                let options = GcOptions { grace_secs, dry_run: false, max_calls: calls, untagged_after_secs: self.config.gc_untagged_after_secs };
                let progress = self.gc_slice(&options).await?;
                let body = json!({ "cycle_done": progress.cycle_done, "busy": progress.busy, "report": to_json(&progress.report)? });
                Ok(Reply::json(StatusCode::OK, &body))
            }
            (Some("du"), &Method::GET | &Method::HEAD) => Ok(Reply::json(StatusCode::OK, &to_json(&self.storage_usage().await?)?)),
            (Some("events"), &Method::GET | &Method::HEAD) => {
                let backlog = self.notification_backlog(1000).await?;
                Ok(Reply::json(StatusCode::OK, &json!({ "endpoints": to_json(&backlog)?, "stats": to_json(&self.notify_stats())? })))
            }
            (Some("events"), &Method::POST) => {
                let max = match query.get("max") {
                    None => super::notify::DEFAULT_DELIVERY_SLICE,
                    Some(v) => v.parse::<usize>().ok().filter(|n| (1..=1000).contains(n)).ok_or_else(|| {
                        Error::msg(ErrorCode::Unsupported, "max must be a number of events from 1 to 1000").with_detail(v.to_string())
                    })?,
                };
                let report = self.deliver_events_slice(max).await?;
                Ok(Reply::json(StatusCode::OK, &to_json(&report)?))
            }
            (Some("cache"), &Method::GET | &Method::HEAD) => Ok(Reply::json(StatusCode::OK, &to_json(&self.cache_stats())?)),
            (Some("gc" | "du" | "events" | "cache"), m) => Err(Error::new(ErrorCode::MethodNotAllowed).with_detail(m.as_str().to_string())),
            _ => Err(Error::new(ErrorCode::NotFound).with_detail(path.chars().take(100).collect::<String>())),
        }
    }
}
