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
