//! The native server's [`HttpClient`]: hyper's pooled HTTP/1.1 client, with TLS by rustls (ring provider, webpki
//! root certificates) for real S3/Azure endpoints and plain HTTP for local emulators (s3s-fs, Azurite, MinIO).

use crate::error::{Error, Result};
use crate::storage::http::{HttpClient, HttpRequest, HttpResponse};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyStream, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Longest wait for a response's headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest pause within a response body.
const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A pooled HTTP/1.1 client for storage services.
pub struct NativeHttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl NativeHttpClient {
    /// A client that speaks `https` (verified against the webpki roots) and plain `http`.
    pub fn new() -> Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector);
        Ok(NativeHttpClient { client })
    }
}

fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

#[async_trait(?Send)]
impl HttpClient for NativeHttpClient {
    async fn send(&self, req: HttpRequest) -> Result<HttpResponse> {
        let host = host_of(&req.url).to_string();
        let mut builder = hyper::Request::builder().method(req.method).uri(&req.url);
        for (name, value) in &req.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| Error::storage(format!("storage request to {host}: {e}")))?;
        // A service that never answers (or a mirror's upstream that hangs) must not hold a request forever.
        let response = tokio::time::timeout(RESPONSE_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| Error::storage(format!("request to {host}: no response within {} s", RESPONSE_TIMEOUT.as_secs())))?
            .map_err(|e| Error::storage(format!("storage request to {host}: {e:?}")))?;
        let (parts, incoming) = response.into_parts();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let frames = BodyStream::new(incoming).filter_map(move |frame| {
            let host = host.clone();
            async move {
                match frame {
                    Ok(f) => f.into_data().ok().map(Ok),
                    Err(e) => Some(Err(Error::storage(format!("storage response from {host}: {e}")))),
                }
            }
        });
        // A body that stops arriving ends with an error rather than hanging its reader.
        let body = futures::stream::unfold(Some(Box::pin(frames)), |state| async move {
            let mut frames = state?;
            match tokio::time::timeout(BODY_STALL_TIMEOUT, frames.next()).await {
                Ok(Some(item)) => Some((item, Some(frames))),
                Ok(None) => None,
                Err(_) => Some((Err(Error::storage(format!("response body stalled for {} s", BODY_STALL_TIMEOUT.as_secs()))), None)),
            }
        });
        Ok(HttpResponse { status: parts.status.as_u16(), headers, body: Box::pin(body) })
    }
}
