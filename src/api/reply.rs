//! Building responses without panics: handlers collect status, headers and body in a [`Reply`]; turning it into an
//! `http::Response` drops (and reports) any header value that is not valid HTTP rather than failing the request.

use super::{Body, Response, API_VERSION, API_VERSION_HEADER};
use crate::error::Error;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::StatusCode;

/// A response under construction.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, String)>,
    pub body: Body,
    /// What the request did that notification endpoints hear about (never sent to the client).
    pub event: Option<crate::events::EventDraft>,
}

impl Reply {
    /// An empty reply with `status` and `Content-Length: 0`.
    pub fn empty(status: StatusCode) -> Self {
        Reply { status, headers: vec![(http::header::CONTENT_LENGTH, "0".into())], body: Body::Empty, event: None }
    }

    /// A JSON reply.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Self {
        Self::bytes(status, "application/json", Bytes::from(value.to_string()))
    }

    /// A reply with a whole body and its content type.
    pub fn bytes(status: StatusCode, content_type: &str, body: Bytes) -> Self {
        Reply {
            status,
            headers: vec![
                (http::header::CONTENT_TYPE, content_type.to_string()),
                (http::header::CONTENT_LENGTH, body.len().to_string()),
            ],
            body: Body::Full(body),
            event: None,
        }
    }

    /// Add a header.
    pub fn header(mut self, name: impl TryInto<HeaderName>, value: impl Into<String>) -> Self {
        if let Ok(name) = name.try_into() {
            self.headers.push((name, value.into()));
        }
        self
    }

    /// Say what the request did, for notifications.
    pub fn with_event(mut self, action: crate::events::Action, target: crate::events::Target) -> Self {
        self.event = Some(crate::events::EventDraft { action, target });
        self
    }

    /// Replace the body, keeping headers (a HEAD answer keeps Content-Length but drops the bytes).
    pub fn without_body(mut self) -> Self {
        self.body = Body::Empty;
        self
    }

    /// The OCI error reply for `err`.
    pub fn error(err: &Error) -> Self {
        let mut r = Self::json(err.status(), &err.body());
        for (name, value) in &err.headers {
            r = r.header(*name, value.clone());
        }
        r
    }

    /// Into an `http::Response`, with the API version header every response carries.
    pub fn into_response(self) -> Response {
        let mut resp = Response::new(self.body);
        *resp.status_mut() = self.status;
        let headers = resp.headers_mut();
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(name, v);
            }
        }
        headers.insert(HeaderName::from_static(API_VERSION_HEADER), HeaderValue::from_static(API_VERSION));
        resp
    }
}
