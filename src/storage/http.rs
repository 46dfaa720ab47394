//! Outbound HTTP for storage backends that speak HTTP (S3, Azure Blob). Each platform supplies an [`HttpClient`]
//! (hyper natively, `fetch` on Workers, `wasi:http` on Spin/wasmtime), so the S3 and Azure backends are written once
//! and run everywhere.

use super::ByteStream;
use crate::error::Result;
use async_trait::async_trait;
use bytes::Bytes;

/// A request to a storage service. Bodies are whole: backends send at most one multipart part at a time.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: http::Method,
    /// Absolute URL, already percent-encoded as it is to be sent.
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A response from a storage service; the body streams (ranged blob reads).
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: ByteStream,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends requests to storage services.
#[async_trait(?Send)]
pub trait HttpClient {
    /// Send `req`; network failures are errors, HTTP error statuses are not.
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse>;
}

/// An [`HttpClient`] that sends a request again when it failed in transport, before any answer, up to `attempts`
/// sends in all, as the AWS SDKs do for every operation. Bodies are whole, so a resend carries the same bytes; a
/// conditional write that did land the first time answers 412 to the resend, which the backends' callers already
/// treat as a lost race and re-read. An HTTP error status is an answer and is never resent.
pub struct RetryTransport<C> {
    inner: C,
    attempts: u32,
}

impl<C> RetryTransport<C> {
    pub fn new(inner: C, attempts: u32) -> Self {
        RetryTransport { inner, attempts: attempts.max(1) }
    }
}

#[async_trait(?Send)]
impl<C: HttpClient> HttpClient for RetryTransport<C> {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse> {
        for _ in 1..self.attempts {
            if let Ok(response) = self.inner.send(req.clone()).await {
                return Ok(response);
            }
        }
        self.inner.send(req).await
    }
}

/// Collect a response body of at most `limit` bytes (XML results and error documents); longer bodies are an error.
pub async fn read_body(mut body: ByteStream, limit: usize) -> Result<Bytes> {
    use futures::StreamExt;
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(crate::error::Error::storage(format!("storage response larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::cell::{Cell, RefCell};

    /// Fails in transport as often as it is told, then answers 200 (or a 503 when `status` says so).
    struct Flaky {
        failures: Cell<u32>,
        status: u16,
        sent: RefCell<Vec<Bytes>>,
    }

    #[async_trait(?Send)]
    impl HttpClient for Flaky {
        async fn send(&self, req: HttpRequest) -> Result<HttpResponse> {
            self.sent.borrow_mut().push(req.body);
            if self.failures.get() > 0 {
                self.failures.set(self.failures.get() - 1);
                return Err(Error::storage("outbound request failed: connection dropped"));
            }
            Ok(HttpResponse { status: self.status, headers: vec![], body: Box::pin(futures::stream::empty()) })
        }
    }

    fn request() -> HttpRequest {
        HttpRequest { method: http::Method::PUT, url: "http://store/k".into(), headers: vec![], body: Bytes::from_static(b"part") }
    }

    fn client(failures: u32, status: u16) -> RetryTransport<Flaky> {
        RetryTransport::new(Flaky { failures: Cell::new(failures), status, sent: RefCell::default() }, 3)
    }

    #[test]
    fn transport_failures_are_resent_with_the_same_body_up_to_the_limit() {
        let c = client(2, 200);
        assert_eq!(futures::executor::block_on(c.send(request())).map(|r| r.status).ok(), Some(200));
        assert_eq!(*c.inner.sent.borrow(), vec![Bytes::from_static(b"part"); 3]);

        let c = client(3, 200);
        let e = futures::executor::block_on(c.send(request())).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("connection dropped"), "{e}");
        assert_eq!(c.inner.sent.borrow().len(), 3, "no fourth send");
    }

    #[test]
    fn an_answer_is_never_resent_whatever_its_status() {
        let c = client(0, 503);
        assert_eq!(futures::executor::block_on(c.send(request())).map(|r| r.status).ok(), Some(503));
        assert_eq!(c.inner.sent.borrow().len(), 1);
    }
}
