//! `/metrics` for `pier serve` (Prometheus text format 0.0.4), off unless `--metrics-addr` / `PIER_METRICS_ADDR`
//! names a listen address of its own, so the registry's port never exposes it. Counters are fed by the request
//! records the core already hands to [`crate::registry::Environment::log_request`] (route kind, status, duration,
//! bytes) and by the connection loop (requests in flight); garbage collection figures come from the last cycle's
//! report in the store, notification figures from the registry's counts and its outboxes, read at scrape time.
//!
//! Everything here runs on the server's one thread, so plain cells suffice.

use crate::registry::{Registry, RequestLog};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::rc::Rc;
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram's buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

#[derive(Default)]
struct Histogram {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

/// The native server's counters.
#[derive(Default)]
pub struct Metrics {
    /// (route kind, method, status) → requests.
    requests: RefCell<BTreeMap<(&'static str, String, u16), u64>>,
    /// route kind → latency.
    latency: RefCell<BTreeMap<&'static str, Histogram>>,
    bytes_in: Cell<u64>,
    bytes_out: Cell<u64>,
    in_flight: Cell<i64>,
    uploads_in_flight: Cell<i64>,
}

/// Marks a request in flight until dropped (also when the connection dies mid-request).
pub struct InFlight {
    metrics: Rc<Metrics>,
    upload: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.metrics.in_flight.set(self.metrics.in_flight.get() - 1);
        if self.upload {
            self.metrics.uploads_in_flight.set(self.metrics.uploads_in_flight.get() - 1);
        }
    }
}

/// Prometheus label values: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    /// A request to `path` has started.
    pub fn start(self: &Rc<Self>, path: &str) -> InFlight {
        let upload = path.contains("/blobs/uploads");
        self.in_flight.set(self.in_flight.get() + 1);
        if upload {
            self.uploads_in_flight.set(self.uploads_in_flight.get() + 1);
        }
        InFlight { metrics: self.clone(), upload }
    }

    /// Count one answered request.
    pub fn observe(&self, record: &RequestLog) {
        let route = record.route.as_str();
        // Methods outside the standard ones are one label value, so a client cannot grow the label set.
        let method = match record.method.as_str() {
            m @ ("GET" | "HEAD" | "PUT" | "POST" | "PATCH" | "DELETE" | "OPTIONS") => m.to_string(),
            _ => "other".to_string(),
        };
        *self.requests.borrow_mut().entry((route, method, record.status)).or_default() += 1;
        let seconds = record.duration_ms as f64 / 1000.0;
        let mut latency = self.latency.borrow_mut();
        let h = latency.entry(route).or_default();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum_seconds += seconds;
        self.bytes_in.set(self.bytes_in.get() + record.bytes_in.unwrap_or(0));
        self.bytes_out.set(self.bytes_out.get() + record.bytes_out.unwrap_or(0));
    }

    /// The text exposition, with garbage collection and notification figures read from `registry`.
    pub async fn render(&self, registry: &Registry) -> String {
        let mut out = String::new();
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(&mut out, "pier_http_requests_total", "counter", "Requests answered, by route kind, method and status.");
        for ((route, method, status), n) in self.requests.borrow().iter() {
            let _ = writeln!(out, "pier_http_requests_total{{route=\"{route}\",method=\"{}\",status=\"{status}\"}} {n}", label(method));
        }
        family(&mut out, "pier_http_request_duration_seconds", "histogram", "Time to the response's headers, by route kind.");
        for (route, h) in self.latency.borrow().iter() {
            for (bound, n) in LATENCY_BUCKETS.iter().zip(h.buckets.iter()) {
                let _ = writeln!(out, "pier_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {n}");
            }
            let _ = writeln!(out, "pier_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "pier_http_request_duration_seconds_sum{{route=\"{route}\"}} {}", h.sum_seconds);
            let _ = writeln!(out, "pier_http_request_duration_seconds_count{{route=\"{route}\"}} {}", h.count);
        }
        family(&mut out, "pier_http_request_bytes_total", "counter", "Request body bytes announced by Content-Length.");
        let _ = writeln!(out, "pier_http_request_bytes_total {}", self.bytes_in.get());
        family(&mut out, "pier_http_response_bytes_total", "counter", "Response body bytes (Content-Length).");
        let _ = writeln!(out, "pier_http_response_bytes_total {}", self.bytes_out.get());
        family(&mut out, "pier_http_requests_in_flight", "gauge", "Requests being served.");
        let _ = writeln!(out, "pier_http_requests_in_flight {}", self.in_flight.get());
        family(&mut out, "pier_upload_requests_in_flight", "gauge", "Upload requests (POST, PATCH, PUT of blob uploads) being served.");
        let _ = writeln!(out, "pier_upload_requests_in_flight {}", self.uploads_in_flight.get());

        match registry.gc_last_report().await {
            Ok(Some(r)) => {
                let gauges: [(&str, &str, u64); 8] = [
                    ("pier_gc_last_cycle", "Number of the last finished collection cycle.", r.cycle),
                    ("pier_gc_last_finished_timestamp_seconds", "When the last collection cycle finished.", r.finished),
                    ("pier_gc_last_blobs_deleted", "Blobs the last cycle deleted.", r.blobs_deleted),
                    ("pier_gc_last_bytes_reclaimed", "Bytes the last cycle deleted.", r.bytes_reclaimed),
                    ("pier_gc_last_links_deleted", "Blob links the last cycle removed.", r.links_deleted),
                    ("pier_gc_last_marked", "Links and blobs the last cycle marked unreferenced.", r.links_tombstoned + r.blobs_tombstoned),
                    ("pier_gc_last_repositories", "Repositories the last cycle looked at.", r.repositories),
                    ("pier_gc_last_store_calls", "Store calls the last cycle made.", r.store_calls),
                ];
                for (name, help, v) in gauges {
                    family(&mut out, name, "gauge", help);
                    let _ = writeln!(out, "{name} {v}");
                }
            }
            Ok(None) => {}
            Err(e) => {
                let _ = writeln!(out, "# pier_gc_*: the last report could not be read: {}", label(&e.to_string()).replace('\n', " "));
            }
        }

        if registry.notifications_enabled() {
            let s = registry.notify_stats();
            let counters = [
                ("pier_notifications_recorded_total", "Events recorded for delivery (one per endpoint).", s.recorded),
                ("pier_notifications_record_failures_total", "Events that could not be recorded.", s.record_failures),
                ("pier_notifications_delivered_total", "Events delivered (2xx).", s.delivered),
                ("pier_notifications_failed_attempts_total", "Delivery attempts that failed.", s.failed_attempts),
                ("pier_notifications_dead_lettered_total", "Events given up on (dead letters).", s.dead_lettered),
            ];
            for (name, help, v) in counters {
                family(&mut out, name, "counter", help);
                let _ = writeln!(out, "{name} {v}");
            }
            if let Ok(backlog) = registry.notification_backlog(1000).await {
                family(&mut out, "pier_notifications_pending", "gauge", "Events waiting in an endpoint's outbox (counted up to 1000).");
                for b in &backlog {
                    let _ = writeln!(out, "pier_notifications_pending{{endpoint=\"{}\"}} {}", label(&b.endpoint), b.pending);
                }
                family(&mut out, "pier_notifications_endpoint_failures", "gauge", "Failed deliveries in a row, per endpoint.");
                for b in &backlog {
                    let _ = writeln!(out, "pier_notifications_endpoint_failures{{endpoint=\"{}\"}} {}", label(&b.endpoint), b.failures);
                }
            }
        }
        out
    }
}

/// Serve `GET /metrics` on `listener` until the process ends. Must run inside a `tokio::task::LocalSet`.
pub async fn serve_metrics(listener: TcpListener, registry: Rc<Registry>, metrics: Rc<Metrics>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let registry = registry.clone();
        let metrics = metrics.clone();
        tokio::task::spawn_local(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                let metrics = metrics.clone();
                async move {
                    let (status, body) = if req.uri().path() == "/metrics" && req.method() == hyper::Method::GET {
                        (200, metrics.render(&registry).await)
                    } else {
                        (404, "only GET /metrics here\n".to_string())
                    };
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
                    resp.headers_mut().insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                    );
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
