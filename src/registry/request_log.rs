//! Request ids and the one log record written per request. [`Registry::handle`](super::Registry::handle) gives every
//! request an id (the client's `X-Request-Id` when it is a sane token, else a random one), answers it in the
//! response, puts it in server-error logs, and hands the platform a [`RequestLog`] when the response is ready; the
//! platform prints it as a JSON line ([`RequestLog::to_json`]) or a compact human line ([`RequestLog::to_text`]).
//!
//! What a record holds is chosen so that logs can be shipped anywhere: route kind, repository, reference or digest,
//! status, sizes, duration, user and client address — never headers, query strings (presigned URLs and upload state
//! live there), credentials or tokens, and never an upload session's id (it is a capability: whoever knows it may
//! write to the upload). Strings that come from the request path unvalidated are cut short and, in the text form,
//! stripped of anything but visible ASCII, so a client cannot forge log lines.
//!
//! The record is written when the response's headers are ready, so `duration_ms` is the time to the answer (an
//! upload's body is read by then; a download's transfer is not included) and `bytes_out` is the answer's
//! `Content-Length` when it has one.

use crate::api::{ClientAddr, Reply, Request, Route, REQUEST_ID_HEADER};
use base64::Engine as _;
use std::net::IpAddr;

/// Longest client-chosen request id that is echoed.
const MAX_REQUEST_ID_LEN: usize = 128;
/// Longest unvalidated path string (a reference or digest) copied into a record.
const MAX_FIELD_LEN: usize = 200;

/// The client's `X-Request-Id` when it is 1–128 characters of `[A-Za-z0-9._-]`: anything else could carry line
/// breaks, markup or a secret into logs and is replaced by a fresh id.
pub fn client_request_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let sane = !v.is_empty()
        && v.len() <= MAX_REQUEST_ID_LEN
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    sane.then(|| v.to_string())
}

/// Fresh request ids for one registry (one process, isolate or instance): 8 random bytes drawn once, then a counter,
/// 32 hex digits. Ids only need to be unique, not secret, and asking the platform for
/// randomness on every request (a `crypto.getRandomValues` call on Workers) showed in read-path profiles.
pub struct RequestIds {
    prefix: String,
    next: std::cell::Cell<u64>,
}

impl RequestIds {
    pub fn new(random: [u8; 16]) -> Self {
        let (prefix, start) = random.split_at(8);
        let mut counter = [0u8; 8];
        counter.copy_from_slice(start);
        // A random start too: two instances whose prefixes collided still would not count through the same ids.
        RequestIds { prefix: crate::spec::digest::to_hex(prefix), next: std::cell::Cell::new(u64::from_be_bytes(counter)) }
    }

    pub fn next(&self) -> String {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let mut id = String::with_capacity(32);
        id.push_str(&self.prefix);
        id.push_str(&crate::spec::digest::to_hex(&n.to_be_bytes()));
        id
    }
}

/// The kind of resource a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    Upload,
    Referrers,
    Health,
    Token,
    /// The web UI's pages, forms and assets (`/`, `/ui/…`).
    Ui,
    /// A path outside the API, or one with an invalid name.
    Other,
}

impl RouteKind {
    /// The name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Base => "base",
            RouteKind::Catalog => "catalog",
            RouteKind::Tags => "tags",
            RouteKind::Manifest => "manifest",
            RouteKind::Blob => "blob",
            RouteKind::Upload => "upload",
            RouteKind::Referrers => "referrers",
            RouteKind::Health => "health",
            RouteKind::Token => "token",
            RouteKind::Ui => "ui",
            RouteKind::Other => "other",
        }
    }
}

/// One request as the logs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub start_millis: u64,
    pub request_id: String,
    pub method: String,
    pub route: RouteKind,
    pub repository: Option<String>,
    /// A manifest's tag or digest, as the path gave it.
    pub reference: Option<String>,
    /// A blob's digest, or the subject of a referrers request.
    pub digest: Option<String>,
    pub status: u16,
    /// The request's `Content-Length`, when it sent one.
    pub bytes_in: Option<u64>,
    /// The response's `Content-Length` (0 for HEAD), when it has one.
    pub bytes_out: Option<u64>,
    pub duration_ms: u64,
    /// The authenticated principal; `None` is anonymous.
    pub user: Option<String>,
    pub client: Option<IpAddr>,
}

fn cut(s: &str) -> String {
    s.chars().take(MAX_FIELD_LEN).collect()
}

/// Visible ASCII only (no spaces, quotes or control characters), for the text form.
fn plain(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_graphic() && c != '"' { c } else { '?' }).collect()
}

/// RFC 3339 in UTC with milliseconds: `2026-05-01T10:00:00.123Z`.
pub fn rfc3339_millis(millis: u64) -> String {
    let seconds = crate::auth::token::rfc3339(millis / 1000);
    format!("{}.{:03}Z", seconds.trim_end_matches('Z'), millis % 1000)
}

impl RequestLog {
    /// The record of a request that has just arrived (no route, status or user yet).
    pub fn start(req: &Request, request_id: String, start_millis: u64) -> Self {
        let bytes_in = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        RequestLog {
            start_millis,
            request_id,
            method: req.method().as_str().chars().take(32).collect(),
            route: RouteKind::Other,
            repository: None,
            reference: None,
            digest: None,
            status: 0,
            bytes_in,
            bytes_out: None,
            duration_ms: 0,
            user: None,
            client: req.extensions().get::<ClientAddr>().map(|a| a.0),
        }
    }

    /// Record the resource a request addressed. An upload's session id is left out on purpose (see the module doc).
    pub fn set_route(&mut self, route: &Route) {
        let (kind, name, reference, digest) = match route {
            Route::Base => (RouteKind::Base, None, None, None),
            Route::Catalog => (RouteKind::Catalog, None, None, None),
            Route::TagsList { name } => (RouteKind::Tags, Some(name), None, None),
            Route::Manifest { name, reference } => (RouteKind::Manifest, Some(name), Some(reference), None),
            Route::Blob { name, digest } => (RouteKind::Blob, Some(name), None, Some(digest)),
            Route::UploadStart { name } | Route::Upload { name, .. } => (RouteKind::Upload, Some(name), None, None),
            Route::Referrers { name, digest } => (RouteKind::Referrers, Some(name), None, Some(digest)),
        };
        self.route = kind;
        self.repository = name.map(|n| n.to_string());
        self.reference = reference.map(|r| cut(r));
        self.digest = digest.map(|d| cut(d));
    }

    /// Record the answer: its status and size, and the time taken.
    pub fn finish(&mut self, reply: &Reply, head: bool, now_millis: u64) {
        self.status = reply.status.as_u16();
        self.duration_ms = now_millis.saturating_sub(self.start_millis);
        self.bytes_out = if head {
            Some(0)
        } else {
            match reply.headers.iter().find(|(n, _)| n == http::header::CONTENT_LENGTH) {
                Some((_, v)) => v.parse().ok(),
                None => match &reply.body {
                    crate::api::Body::Empty => Some(0),
                    crate::api::Body::Full(b) => Some(b.len() as u64),
                    crate::api::Body::Stream(_) => None,
                },
            }
        };
    }

    fn user_name(&self) -> &str {
        self.user.as_deref().unwrap_or("anonymous")
    }

    /// The record as one JSON object on one line (Workers Logs and most log shippers parse it), in a fixed field
    /// order that reads well (time first). Absent facts are left out rather than written as null.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(&'static str, serde_json::Value)> = vec![
            ("time", rfc3339_millis(self.start_millis).into()),
            ("request_id", self.request_id.clone().into()),
            ("method", self.method.clone().into()),
            ("route", self.route.as_str().into()),
        ];
        let some = |name: &'static str, value: Option<serde_json::Value>| value.map(|v| (name, v));
        fields.extend(some("repository", self.repository.clone().map(Into::into)));
        fields.extend(some("reference", self.reference.clone().map(Into::into)));
        fields.extend(some("digest", self.digest.clone().map(Into::into)));
        fields.push(("status", self.status.into()));
        fields.extend(some("bytes_in", self.bytes_in.map(Into::into)));
        fields.extend(some("bytes_out", self.bytes_out.map(Into::into)));
        fields.push(("duration_ms", self.duration_ms.into()));
        fields.push(("user", self.user_name().into()));
        fields.extend(some("client", self.client.map(|c| c.to_string().into())));
        // serde_json's map sorts its keys, so the object is joined by hand to keep this order; every value is still
        // encoded (and escaped) by serde_json.
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    /// The record as a compact human line:
    /// `2026-05-01T10:00:00.123Z 127.0.0.1 alice "GET manifest team/app:latest" 200 in=0 out=512 3ms id=…`.
    pub fn to_text(&self) -> String {
        let mut target = String::new();
        if let Some(r) = &self.repository {
            target.push(' ');
            target.push_str(r);
            if let Some(reference) = &self.reference {
                // A digest reference already reads `sha256:…`; a tag is joined the way clients write it.
                target.push(if reference.contains(':') { '@' } else { ':' });
                target.push_str(&plain(reference));
            } else if let Some(d) = &self.digest {
                target.push('@');
                target.push_str(&plain(d));
            }
        }
        let size = |n: Option<u64>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
        format!(
            "{} {} {} \"{} {}{}\" {} in={} out={} {}ms id={}",
            rfc3339_millis(self.start_millis),
            self.client.map_or_else(|| "-".to_string(), |c| c.to_string()),
            plain(self.user_name()),
            self.method,
            self.route.as_str(),
            target,
            self.status,
            size(self.bytes_in),
            size(self.bytes_out),
            self.duration_ms,
            self.request_id,
        )
    }
}

/// The user a token answer was issued to: the `sub` of the token in a `/token` response body. The registry has just
/// signed that token itself, so reading its claims without verifying them is safe; it keeps the log's user right
/// for both the GET (Basic header) and the POST (form) logins without the token endpoint reporting back.
pub fn issued_token_subject(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let payload = answer.get("token")?.as_str()?.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims.get("sub")?.as_str().filter(|s| !s.is_empty()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Body;
    use crate::spec::RepositoryName;
    use http::StatusCode;

    fn headers(id: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(REQUEST_ID_HEADER, http::HeaderValue::from_str(id).unwrap());
        h
    }

    #[test]
    fn request_ids() {
        assert_eq!(client_request_id(&headers("abc-123_X.y")).as_deref(), Some("abc-123_X.y"));
        assert_eq!(client_request_id(&headers(&"a".repeat(128))).map(|s| s.len()), Some(128));
        for bad in ["", "a b", "a/b", "a\"b", "é", &"a".repeat(129), "x;y"] {
            if let Ok(v) = http::HeaderValue::from_str(bad) {
                let mut h = http::HeaderMap::new();
                h.insert(REQUEST_ID_HEADER, v);
                assert_eq!(client_request_id(&h), None, "{bad:?}");
            }
        }
        assert_eq!(client_request_id(&http::HeaderMap::new()), None);
    }

    #[test]
    fn fresh_request_ids_are_distinct_and_look_random() {
        let mut random = [0xab; 16];
        random[15] = 0xfe;
        let ids = RequestIds::new(random);
        let (a, b, c) = (ids.next(), ids.next(), ids.next());
        assert_eq!(a, format!("{}{}fe", "ab".repeat(8), "ab".repeat(7)));
        assert_eq!(b, format!("{}{}ff", "ab".repeat(8), "ab".repeat(7)));
        assert_eq!(c, format!("{}{}00", "ab".repeat(8), "ab".repeat(6) + "ac"));
        assert!([&a, &b, &c].iter().all(|id| id.len() == 32 && id.bytes().all(|x| x.is_ascii_hexdigit())));
    }

    #[test]
    fn time_has_milliseconds() {
        assert_eq!(rfc3339_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_millis(5), "1970-01-01T00:00:00.005Z");
    }

    fn sample() -> RequestLog {
        let mut req = Request::new(Body::Empty);
        *req.method_mut() = http::Method::PUT;
        req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("42"));
        req.extensions_mut().insert(ClientAddr("192.0.2.7".parse().unwrap()));
        let mut log = RequestLog::start(&req, "rid".into(), 1_700_000_000_000);
        log.set_route(&Route::Manifest { name: RepositoryName::parse("team/app").unwrap(), reference: "v1".into() });
        log.user = Some("alice".into());
        log.finish(&Reply::empty(StatusCode::CREATED), false, 1_700_000_000_007);
        log
    }

    #[test]
    fn json_line() {
        let line = sample().to_json();
        assert!(line.starts_with(r#"{"time":"2023-11-14T22:13:20.000Z","request_id":"rid","method":"PUT","route":"manifest","#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["request_id"], "rid");
        assert_eq!(v["method"], "PUT");
        assert_eq!(v["route"], "manifest");
        assert_eq!(v["repository"], "team/app");
        assert_eq!(v["reference"], "v1");
        assert_eq!(v["status"], 201);
        assert_eq!(v["bytes_in"], 42);
        assert_eq!(v["bytes_out"], 0);
        assert_eq!(v["duration_ms"], 7);
        assert_eq!(v["user"], "alice");
        assert_eq!(v["client"], "192.0.2.7");
        assert!(v.get("digest").is_none());
    }

    #[test]
    fn text_line() {
        assert_eq!(
            sample().to_text(),
            "2023-11-14T22:13:20.000Z 192.0.2.7 alice \"PUT manifest team/app:v1\" 201 in=42 out=0 7ms id=rid"
        );
        let mut log = sample();
        log.user = None;
        log.client = None;
        log.bytes_in = None;
        log.reference = Some("x\" injected \"y".into());
        assert_eq!(
            log.to_text(),
            "2023-11-14T22:13:20.000Z - anonymous \"PUT manifest team/app:x??injected??y\" 201 in=- out=0 7ms id=rid"
        );
    }

    #[test]
    fn upload_ids_stay_out() {
        let mut log = sample();
        log.set_route(&Route::Upload { name: RepositoryName::parse("a").unwrap(), id: "secret-session".into() });
        assert!(!log.to_json().contains("secret-session"));
        assert!(!log.to_text().contains("secret-session"));
    }

    #[test]
    fn head_and_streams() {
        let mut log = sample();
        log.finish(&Reply::bytes(StatusCode::OK, "x", bytes::Bytes::from_static(b"12345")), true, log.start_millis);
        assert_eq!(log.bytes_out, Some(0));
        log.finish(&Reply::bytes(StatusCode::OK, "x", bytes::Bytes::from_static(b"12345")), false, log.start_millis);
        assert_eq!(log.bytes_out, Some(5));
        let stream = Reply { status: StatusCode::OK, headers: vec![], body: Body::Stream(Box::pin(futures::stream::empty())), event: None };
        log.finish(&stream, false, log.start_millis);
        assert_eq!(log.bytes_out, None);
    }

    #[test]
    fn token_subject() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"alice","exp":1}"#);
        let body = serde_json::json!({ "token": format!("h.{payload}.s") }).to_string();
        assert_eq!(issued_token_subject(body.as_bytes()).as_deref(), Some("alice"));
        let anonymous = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":""}"#);
        assert_eq!(issued_token_subject(serde_json::json!({ "token": format!("h.{anonymous}.s") }).to_string().as_bytes()), None);
        assert_eq!(issued_token_subject(b"not json"), None);
    }
}
