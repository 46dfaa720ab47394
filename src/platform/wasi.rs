//! The wasi:http adapter (Spin 2.x–4.x, `wasmtime serve`, other WASI 0.2 hosts): a `wasi:http/incoming-handler@0.2`
//! export built with spin-sdk 5.2, streaming request and response bodies, plus an [`HttpClient`] over
//! `wasi:http/outgoing-handler` for the S3 and Azure backends.
//!
//! Configuration comes from the component's environment (`wasmtime serve --env NAME=VALUE`, Spin's
//! `[component.pier] environment`), so one component runs on every host: Spin-only imports (variables, key-value)
//! would stop it from loading under `wasmtime serve`.
//!
//! Request logs are JSON lines on stderr, which Spin and `wasmtime serve` collect as the component's log. wasi:http
//! tells a component nothing about the client's address, so records carry none.
//!
//! Notifications: events go to the outbox in the metadata store; after a response that recorded events has been
//! sent in full, the handler delivers one slice before it returns (the host keeps the instance until then, the
//! client is not waiting). What fails then is retried by the next such request or by `POST /admin/events` from the
//! host's scheduler (a Spin cron trigger, any external cron). wasi:http 0.2 gives a component no timer, so a delivery
//! waits for the host's own outbound timeouts rather than the endpoint's `timeout`.

use crate::api::{Body, Request, Response};
use crate::error::{Error, ErrorCode};
use crate::registry::{Environment, Registry, RequestLog};
use crate::storage::http::{HttpClient, HttpRequest, HttpResponse, RetryTransport};
use async_trait::async_trait;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use spin_sdk::http::{Fields, IncomingRequest, IncomingResponse, Method, OutgoingResponse, ResponseOutparam};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Time, randomness and logs from WASI.
pub struct WasiEnvironment;

impl Environment for WasiEnvironment {
    fn now_unix(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }

    fn random_bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        if getrandom::getrandom(&mut b).is_err() {
            eprintln!("pier: wasi:random unavailable");
        }
        b
    }

    fn log_error(&self, message: &str) {
        eprintln!("pier: error: {message}");
    }

    fn now_millis(&self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }

    fn log_request(&self, record: &RequestLog) {
        eprintln!("{}", record.to_json());
    }
}

/// Outbound HTTP through `wasi:http/outgoing-handler`.
pub struct WasiHttpClient;

/// How often an outbound request is sent before a transport failure is the store's error: the host reports a
/// protocol error when the server drops the connection, seen with s3s-fs under the concurrency suite about one run
/// in four (see `storage::http::RetryTransport`).
const OUTBOUND_ATTEMPTS: u32 = 3;

#[async_trait(?Send)]
impl HttpClient for WasiHttpClient {
    async fn send(&self, req: HttpRequest) -> crate::error::Result<HttpResponse> {
        let method = match req.method.as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            other => Method::Other(other.to_string()),
        };
        let mut builder = spin_sdk::http::Request::builder();
        builder.method(method).uri(req.url.as_str());
        let mut has_length = false;
        for (k, v) in &req.headers {
            has_length |= k.eq_ignore_ascii_case("content-length");
            builder.header(k.as_str(), v.as_str());
        }
        // wasi:http sends a body without Content-Length as chunked, which S3 refuses (411 MissingContentLength).
        if !has_length && (!req.body.is_empty() || !matches!(req.method, http::Method::GET | http::Method::HEAD)) {
            builder.header("content-length", req.body.len().to_string());
        }
        let request = builder.body(req.body.to_vec()).build();
        let response: IncomingResponse =
            spin_sdk::http::send(request).await.map_err(|e| Error::storage(format!("outbound request failed: {e}")))?;
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let stream = response.take_body_stream();
        // The response must outlive its body stream: dropping it early cancels the exchange in some hosts.
        let body = stream.map(move |chunk| {
            let _keep = &response;
            chunk.map(Bytes::from).map_err(|e| Error::storage(format!("reading response body: {e:?}")))
        });
        Ok(HttpResponse { status, headers, body: Box::pin(body) })
    }
}

fn env_setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

thread_local! {
    /// One registry per instance: hosts may reuse an instance for several requests.
    static REGISTRY: std::cell::OnceCell<Rc<Registry>> = const { std::cell::OnceCell::new() };
}

fn registry() -> Result<Rc<Registry>, Error> {
    if let Some(r) = REGISTRY.with(|c| c.get().cloned()) {
        return Ok(r);
    }
    let r = Rc::new(super::wasi_stores::build_registry(env_setting, Rc::new(RetryTransport::new(WasiHttpClient, OUTBOUND_ATTEMPTS)), Rc::new(WasiEnvironment))?);
    REGISTRY.with(|c| {
        let _ = c.set(r.clone());
    });
    Ok(r)
}

fn into_core(req: IncomingRequest) -> Result<Request, Error> {
    let bad = |m: &str| Error::msg(ErrorCode::NotFound, m.to_string());
    let method = match req.method() {
        Method::Get => http::Method::GET,
        Method::Head => http::Method::HEAD,
        Method::Post => http::Method::POST,
        Method::Put => http::Method::PUT,
        Method::Delete => http::Method::DELETE,
        Method::Patch => http::Method::PATCH,
        Method::Options => http::Method::OPTIONS,
        Method::Connect => http::Method::CONNECT,
        Method::Trace => http::Method::TRACE,
        Method::Other(m) => http::Method::from_bytes(m.as_bytes()).map_err(|_| bad("invalid method"))?,
    };
    let path = req.path_with_query().unwrap_or_else(|| "/".to_string());
    let mut builder = http::Request::builder().method(method.clone()).uri(path);
    let mut has_host = false;
    for (name, value) in req.headers().entries() {
        has_host |= name.eq_ignore_ascii_case("host");
        builder = builder.header(name, value);
    }
    // Some hosts (wasmtime serve) pass the request's authority apart from its headers: the core reads the Host
    // header for token realms and the web UI's pull commands.
    if !has_host {
        if let Some(authority) = req.authority() {
            builder = builder.header("host", authority);
        }
    }
    let body = if matches!(method, http::Method::GET | http::Method::HEAD | http::Method::DELETE) {
        Body::Empty
    } else {
        Body::Stream(Box::pin(req.into_body_stream().map(|r| {
            r.map(Bytes::from)
                .map_err(|e| Error::msg(ErrorCode::BlobUploadInvalid, "request body interrupted").with_detail(format!("{e:?}")))
        })))
    };
    builder.body(body).map_err(|_| bad("invalid request"))
}

/// The largest whole body written before the response is handed to the host (see [`send_response`]): more than a
/// manifest or an error usually is, well under what hosts buffer (wasmtime's outgoing body takes 1 MiB).
const EARLY_BODY_MAX: usize = 64 * 1024;

async fn send_response(resp: Response, out: ResponseOutparam, head: bool) {
    let (parts, body) = resp.into_parts();
    let headers: Vec<(String, Vec<u8>)> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let fields = match Fields::from_list(&headers) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("pier: error: invalid response header: {e:?}");
            Fields::new()
        }
    };
    let response = OutgoingResponse::new(fields);
    if response.set_status_code(parts.status.as_u16()).is_err() {
        eprintln!("pier: error: invalid status {}", parts.status);
    }
    let mut sink = response.take_body();
    // A small whole body goes into the body stream before the response is handed over, so the host has headers and
    // body at once and sends them in one write. Handed over first, a body that arrives a moment later goes out as a
    // second small segment, which Nagle's algorithm holds until the client acknowledges the first — and clients delay
    // that acknowledgement by 40 ms: under `spin up` 4.0.2 every keep-alive request after one that read the key-value
    // store took 44 ms. (The host buffers this much before the response is set; larger bodies stream after it.)
    let body = match body {
        Body::Full(b) if !head && b.len() <= EARLY_BODY_MAX => {
            if let Err(e) = sink.send(b.to_vec()).await {
                eprintln!("pier: error: writing response: {e:?}");
            }
            Body::Empty
        }
        other => other,
    };
    out.set(response);
    if head {
        return;
    }
    match body {
        Body::Empty => {}
        Body::Full(b) => {
            if let Err(e) = sink.send(b.to_vec()).await {
                eprintln!("pier: error: writing response: {e:?}");
            }
        }
        Body::Stream(mut s) => {
            while let Some(chunk) = s.next().await {
                match chunk {
                    Ok(c) => {
                        if sink.send(c.to_vec()).await.is_err() {
                            break; // the client went away
                        }
                    }
                    Err(e) => {
                        eprintln!("pier: error: {e}");
                        break;
                    }
                }
            }
        }
    }
}

#[spin_sdk::http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    let head = matches!(req.method(), Method::Head);
    let registry = registry();
    let response = match &registry {
        Ok(registry) => match into_core(req) {
            Ok(req) => registry.handle(req).await,
            Err(e) => crate::api::Reply::error(&e).into_response(),
        },
        Err(e) => {
            eprintln!("pier: {e}");
            crate::api::Reply::error(&e).into_response()
        }
    };
    send_response(response, out, head).await;
    // The response body is finished (its sink dropped in send_response): deliver now, off the client's time.
    if let Ok(registry) = registry {
        if registry.take_event_signal() {
            if let Err(e) = registry.deliver_events_slice(AFTER_RESPONSE_EVENTS).await {
                eprintln!("pier: error: delivering notifications: {e}");
            }
        }
    }
}

/// Outbox entries per endpoint delivered after a response that recorded events.
const AFTER_RESPONSE_EVENTS: usize = 20;
