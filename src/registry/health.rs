//! `GET /health` (and HEAD): whether this registry can serve, for load balancers and orchestrators. It answers before
//! access control (probes carry no credentials) and says only which checks pass — no configuration, hosts or error
//! text, which go to the server's error log with the request id instead.
//!
//! The one check is the metadata store: every request needs it, and a read of a key that is never written
//! ([`keys::HEALTH_PROBE`]) is the cheapest call that proves it answers (one lookup on every backend, bounded work
//! whatever the registry's size). `/v2/` stays what the spec makes it: with access control on it answers 401.

use super::{keys, Registry};
use crate::api::Reply;
use crate::error::{Error, ErrorCode, Result};
use http::{Method, StatusCode};
use bytes::Bytes;

/// The health check's path.
pub const HEALTH_PATH: &str = "/health";

/// The answers, written out so that `status` comes first (serde_json would sort the keys).
const HEALTHY: &str = r#"{"status":"ok","checks":{"storage":"ok"}}"#;
const UNHEALTHY: &str = r#"{"status":"unavailable","checks":{"storage":"unavailable"}}"#;

impl Registry {
    /// Answer `/health`: 200 with `{"status":"ok","checks":{"storage":"ok"}}`, or 503 with `"unavailable"` when the
    /// metadata store fails.
    pub(super) async fn health(&self, method: &Method, request_id: &str) -> Result<Reply> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err(Error::new(ErrorCode::MethodNotAllowed).with_detail(method.as_str().to_string()));
        }
        let (status, body) = match self.meta.get(keys::HEALTH_PROBE).await {
            Ok(_) => (StatusCode::OK, HEALTHY),
            Err(e) => {
                self.env.log_error(&format!("request {request_id}: health check: storage: {e}"));
                (StatusCode::SERVICE_UNAVAILABLE, UNHEALTHY)
            }
        };
        // Probes must see the answer of now, not a cache's.
        Ok(Reply::bytes(status, "application/json", Bytes::from_static(body.as_bytes())).header("cache-control", "no-store"))
    }
}
