//! Notifications: recording events and delivering them to webhook endpoints, off the client's path.
//!
//! ## Recording
//! A handler that pushed, pulled, deleted or mounted something says so in its [`Reply`](crate::api::Reply)
//! ([`EventDraft`]); [`Registry::handle`](super::Registry::handle) adds the request's facts and, after the store
//! operation succeeded and before the client is answered, records one entry per endpoint that wants the event
//! (registry:2's `ignore` filters): by default a small write to the **outbox** in the metadata store,
//! `_events/outbox/<endpoint>/<stamp>-<random>`, or the platform's [`EventSink`] (a Cloudflare Queue). So an answered
//! request's event survives a crash. A failed recording is logged and the client still gets its answer: the
//! registry's state is the truth, events are a report about it.
//!
//! Stamps are microseconds since the epoch, made strictly increasing within an instance, so an instance's events
//! list in the order its requests were answered, and different instances' interleave by time.
//!
//! ## Delivering
//! [`Registry::deliver_events_slice`] is bounded work, like the collector's slices: per endpoint, unless it is
//! backing off, list at most `max` entries of its outbox in key order, POST them as one envelope (configured headers,
//! timeout, `X-Pier-Signature`), and on a 2xx delete them. On anything else nothing is deleted, the endpoint's state
//! (`_events/state/<endpoint>`: failures in a row, when to try again) counts the failure, and after `threshold`
//! failures the endpoint backs off (`backoff`, doubling, capped by `PIER_NOTIFICATIONS_MAX_BACKOFF`): registry:2's
//! semantics, except that nothing is dropped. Entries older than `PIER_NOTIFICATIONS_MAX_AGE` whose delivery failed
//! move to `_events/dead/<endpoint>/…` with the reason, and are logged.
//!
//! Order: each endpoint's outbox is delivered as a prefix, all or nothing, so a later event of a repository never
//! reaches an endpoint before an earlier one that is still pending for it. Endpoints are independent (one endpoint
//! down does not hold another's events).
//!
//! Interleavings: two deliverers running at once (a native background task and `POST /admin/events`, two wasi
//! instances) may both send an entry before either deletes it — delivery is at-least-once, and receivers de-duplicate
//! by event id. A request recording an event while a slice runs either lists in that slice or the next; its stamp is
//! later than everything its instance recorded before it answered earlier requests.

use super::{keys, Registry};
use crate::events::{self, endpoint_key, Event, EventSink, Outcome};
use crate::notifications::{Endpoint, NotificationsConfig};
use crate::error::{Error, Result};
use crate::storage::http::{HttpClient, HttpRequest};
use bytes::Bytes;
use futures::future::{select, Either};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::rc::Rc;

/// Entries one `POST /admin/events` (or a Workers `waitUntil`) delivers per endpoint unless told otherwise.
pub const DEFAULT_DELIVERY_SLICE: usize = 100;

/// Counts since this instance started (the native `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    /// Events recorded (one per endpoint that wants them).
    pub recorded: u64,
    /// Events that could not be recorded (logged).
    pub record_failures: u64,
    /// Events delivered (2xx).
    pub delivered: u64,
    /// Delivery attempts that failed.
    pub failed_attempts: u64,
    /// Events moved to the dead letters.
    pub dead_lettered: u64,
}

/// What one delivery slice did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Entries seen and left in the outboxes (failed, or owed to an endpoint that is backing off: those are not
    /// counted, see `waiting`).
    pub pending: u64,
    /// Some endpoint is backing off.
    pub waiting: bool,
    /// Some outbox had a full slice delivered: there may be more right away.
    pub more: bool,
}

/// An outbox entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OutboxEntry {
    /// When it was recorded, in milliseconds since the epoch.
    created_ms: u64,
    event: Event,
}

/// A dead letter: the entry, the endpoint and why it was given up.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeadLetter {
    endpoint: String,
    reason: String,
    dead_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event: Option<Event>,
}

/// An endpoint's failures in a row and when it may be tried again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct EndpointState {
    failures: u32,
    retry_at_ms: u64,
    #[serde(default)]
    last_error: String,
}

/// The registry's notification machinery: endpoints, where events go, and how deliveries are sent.
pub(crate) struct Notifier {
    config: NotificationsConfig,
    sink: Option<Rc<dyn EventSink>>,
    http: Option<Rc<dyn HttpClient>>,
    /// Names this instance in events (`source.instanceID`).
    instance_id: String,
    last_stamp: Cell<u64>,
    /// Events went to the outbox since the adapter last asked ([`Registry::take_event_signal`]).
    signal: Cell<bool>,
    stats: Cell<NotifyStats>,
}

impl Notifier {
    pub(crate) fn new(config: NotificationsConfig, instance_id: String) -> Self {
        Notifier {
            config,
            sink: None,
            http: None,
            instance_id,
            last_stamp: Cell::new(0),
            signal: Cell::new(false),
            stats: Cell::new(NotifyStats::default()),
        }
    }

    fn count(&self, f: impl FnOnce(&mut NotifyStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// A stamp later than every earlier one of this instance.
    fn next_stamp(&self, now_ms: u64) -> u64 {
        let stamp = now_ms.saturating_mul(1000).max(self.last_stamp.get() + 1);
        self.last_stamp.set(stamp);
        stamp
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| Error::storage(e.to_string()))
}

/// A UUID-shaped (version 4) id from 16 random bytes.
pub(crate) fn uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::spec::digest::to_hex(&b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl Registry {
    /// Deliver notifications through `http` (outbound webhooks); without it events are recorded but only a platform
    /// sink or another instance delivers them.
    pub fn with_notification_client(mut self, http: Rc<dyn HttpClient>) -> Self {
        if let Some(n) = &mut self.notifier {
            n.http = Some(http);
        }
        self
    }

    /// Send events to `sink` instead of the outbox (a Cloudflare Queue).
    pub fn with_event_sink(mut self, sink: Rc<dyn EventSink>) -> Self {
        if let Some(n) = &mut self.notifier {
            n.sink = Some(sink);
        }
        self
    }

    /// Whether notifications are configured (some endpoint is active).
    pub fn notifications_enabled(&self) -> bool {
        self.notifier.is_some()
    }

    /// Whether events went to the outbox since the last call: the adapter's cue to start a delivery slice soon.
    pub fn take_event_signal(&self) -> bool {
        self.notifier.as_ref().is_some_and(|n| n.signal.replace(false))
    }

    /// Notification counts since this instance started.
    pub fn notify_stats(&self) -> NotifyStats {
        self.notifier.as_ref().map(|n| n.stats.get()).unwrap_or_default()
    }

    /// The active endpoint named `name`.
    pub fn notification_endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.notifier.as_ref()?.config.active().find(|e| e.name == name)
    }

    /// The configured notification settings' retry limits: (max age, max backoff).
    pub fn notification_limits(&self) -> (std::time::Duration, std::time::Duration) {
        let c = self.notifier.as_ref().map(|n| (n.config.max_age, n.config.max_backoff));
        c.unwrap_or((crate::notifications::DEFAULT_MAX_AGE, crate::notifications::DEFAULT_MAX_BACKOFF))
    }

    /// Complete `draft` with the request's facts and record it for every endpoint that wants it. Never fails: a
    /// failure is logged (the client's request succeeded, and its answer must not depend on the notifications).
    pub(super) async fn record_event(&self, draft: events::EventDraft, request: events::RequestFacts, actor: String, scheme: &str) {
        let Some(n) = &self.notifier else { return };
        let wanted: Vec<&Endpoint> = n.config.active().filter(|e| events::wants(e, draft.action, &draft.target.media_type)).collect();
        if wanted.is_empty() {
            return;
        }
        let now_ms = self.env.now_millis();
        let mut target = draft.target;
        if !target.url.is_empty() && !request.host.is_empty() {
            target.url = format!("{scheme}://{}{}", request.host, target.url);
        }
        if !n.config.include_references {
            target.references = None;
        }
        let event = Event {
            id: uuid(self.env.random_bytes()),
            timestamp: super::request_log::rfc3339_millis(now_ms),
            action: draft.action,
            target,
            source: events::Source { addr: request.host.clone(), instance_id: n.instance_id.clone() },
            request,
            actor: events::Actor { name: actor },
        };
        for endpoint in wanted {
            let result = match &n.sink {
                Some(sink) => sink.send(endpoint, &event).await,
                None => self.outbox_put(n, endpoint, &event, now_ms).await,
            };
            match result {
                Ok(()) => n.count(|s| s.recorded += 1),
                Err(e) => {
                    n.count(|s| s.record_failures += 1);
                    self.env.log_error(&format!(
                        "notifications: the {} event {} (request {}) for endpoint {:?} was not recorded: {e}",
                        event.action.as_str(),
                        event.id,
                        event.request.id,
                        endpoint.name
                    ));
                }
            }
        }
    }

    async fn outbox_put(&self, n: &Notifier, endpoint: &Endpoint, event: &Event, now_ms: u64) -> Result<()> {
        let stamp = n.next_stamp(now_ms);
        let random = crate::spec::digest::to_hex(&self.env.random_bytes()[..4]);
        let key = format!("{}{stamp:016}-{random}", keys::outbox_prefix(&endpoint_key(&endpoint.name)));
        self.meta.put(&key, encode(&OutboxEntry { created_ms: now_ms, event: event.clone() })?).await?;
        n.signal.set(true);
        Ok(())
    }

    /// POST `events` to `endpoint` as one envelope, signed, within the endpoint's timeout (where the platform has a
    /// timer).
    pub async fn deliver_to(&self, endpoint: &Endpoint, events: &[Event]) -> Outcome {
        let Some(n) = &self.notifier else { return Outcome::Failed("notifications are not configured".into()) };
        let Some(http) = &n.http else { return Outcome::Failed("this platform adapter gave the registry no HTTP client".into()) };
        let body = events::envelope(events);
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), events::ENVELOPE_MEDIA_TYPE.into()),
            ("content-length".into(), body.len().to_string()),
            ("user-agent".into(), concat!("pier/", env!("CARGO_PKG_VERSION")).into()),
        ];
        if let Some(secret) = &n.config.secret {
            headers.push((events::SIGNATURE_HEADER.into(), events::signature(secret.0.as_bytes(), &body)));
        }
        headers.extend(endpoint.headers.iter().cloned());
        let request = HttpRequest { method: http::Method::POST, url: endpoint.url.clone(), headers, body: Bytes::from(body) };
        let send = http.send(request);
        let result = match self.env.sleep(endpoint.timeout) {
            Some(timer) => match select(send, timer).await {
                Either::Left((r, _)) => r,
                Either::Right(_) => return Outcome::Failed(format!("no answer within {:?}", endpoint.timeout)),
            },
            None => send.await,
        };
        match result {
            Ok(resp) if (200..300).contains(&resp.status) => Outcome::Delivered,
            Ok(resp) => Outcome::Failed(format!("HTTP {}", resp.status)),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Record `event`, owed to `endpoint` since `created_ms`, as given up on (`reason`), and log it.
    pub async fn dead_letter(&self, endpoint: &str, created_ms: Option<u64>, event: Option<Event>, reason: &str, id: &str) -> Result<()> {
        let now = self.env.now_millis();
        let key = format!("{}{id}", keys::dead_letter_prefix(&endpoint_key(endpoint)));
        let event_id = event.as_ref().map(|e| e.id.clone()).unwrap_or_default();
        let letter = DeadLetter { endpoint: endpoint.to_string(), reason: reason.to_string(), dead_ms: now, created_ms, event };
        self.meta.put(&key, encode(&letter)?).await?;
        if let Some(n) = &self.notifier {
            n.count(|s| s.dead_lettered += 1);
        }
        self.env.log_error(&format!("notifications: gave up on event {event_id} for endpoint {endpoint:?} ({reason}); kept as {key}"));
        Ok(())
    }

    /// Deliver what the outboxes hold: at most `max` entries per endpoint, in order (see the module doc). Store calls:
    /// per endpoint a state read, a list, a read and a delete per entry, and a state write on failure.
    pub async fn deliver_events_slice(&self, max: usize) -> Result<DeliveryReport> {
        let mut report = DeliveryReport::default();
        let Some(n) = &self.notifier else { return Ok(report) };
        let max = max.max(1);
        for endpoint in n.config.active() {
            let ep = endpoint_key(&endpoint.name);
            let state_key = keys::endpoint_state(&ep);
            let state: EndpointState = match self.meta.get(&state_key).await? {
                Some(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
                None => EndpointState::default(),
            };
            let now = self.env.now_millis();
            if state.retry_at_ms > now {
                report.waiting = true;
                continue;
            }
            let page = self.meta.list(&keys::outbox_prefix(&ep), None, max).await?;
            if page.is_empty() {
                continue;
            }
            let mut entries = Vec::with_capacity(page.len());
            for key in &page {
                let Some(raw) = self.meta.get(key).await? else { continue };
                match serde_json::from_slice::<OutboxEntry>(&raw) {
                    Ok(entry) => entries.push((key.clone(), entry)),
                    Err(e) => {
                        let id = key.rsplit('/').next().unwrap_or_default();
                        self.dead_letter(&endpoint.name, None, None, &format!("unreadable outbox entry: {e}"), id).await?;
                        self.meta.delete(key).await?;
                    }
                }
            }
            if entries.is_empty() {
                continue;
            }
            let events: Vec<Event> = entries.iter().map(|(_, e)| e.event.clone()).collect();
            match self.deliver_to(endpoint, &events).await {
                Outcome::Delivered => {
                    for (key, _) in &entries {
                        self.meta.delete(key).await?;
                    }
                    if state.failures > 0 {
                        self.meta.delete(&state_key).await?;
                    }
                    report.delivered += entries.len() as u64;
                    n.count(|s| s.delivered += entries.len() as u64);
                    report.more |= page.len() >= max;
                }
                Outcome::Failed(reason) => {
                    report.failed_attempts += 1;
                    n.count(|s| s.failed_attempts += 1);
                    let failures = state.failures.saturating_add(1);
                    let delay = events::retry_delay(failures, endpoint.threshold, endpoint.backoff, n.config.max_backoff);
                    if failures == 1 || failures == endpoint.threshold {
                        self.env.log_error(&format!(
                            "notifications: endpoint {:?} failed ({reason}); {} event(s) kept, retrying{}",
                            endpoint.name,
                            entries.len(),
                            if delay.is_zero() { String::new() } else { format!(" in {delay:?}") }
                        ));
                    }
                    let next = EndpointState { failures, retry_at_ms: now + delay.as_millis() as u64, last_error: reason.clone() };
                    self.meta.put(&state_key, encode(&next)?).await?;
                    let max_age = n.config.max_age.as_millis() as u64;
                    let mut kept = 0;
                    for (key, entry) in entries {
                        if entry.created_ms.saturating_add(max_age) < now {
                            let id = key.rsplit('/').next().unwrap_or_default().to_string();
                            let why = format!("not delivered within {:?}: {reason}", n.config.max_age);
                            self.dead_letter(&endpoint.name, Some(entry.created_ms), Some(entry.event), &why, &id).await?;
                            self.meta.delete(&key).await?;
                            report.dead_lettered += 1;
                        } else {
                            kept += 1;
                        }
                    }
                    report.pending += kept;
                }
            }
        }
        Ok(report)
    }

    /// Per active endpoint: events waiting (counted up to `limit`), failures in a row, the last error, dead letters
    /// (counted up to `limit`). For `GET /admin/events` and metrics.
    pub async fn notification_backlog(&self, limit: usize) -> Result<Vec<EndpointBacklog>> {
        let mut out = Vec::new();
        let Some(n) = &self.notifier else { return Ok(out) };
        for endpoint in n.config.active() {
            let ep = endpoint_key(&endpoint.name);
            let pending = self.meta.list(&keys::outbox_prefix(&ep), None, limit).await?.len();
            let dead = self.meta.list(&keys::dead_letter_prefix(&ep), None, limit).await?.len();
            let state: EndpointState = match self.meta.get(&keys::endpoint_state(&ep)).await? {
                Some(raw) => serde_json::from_slice(&raw).unwrap_or_default(),
                None => EndpointState::default(),
            };
            out.push(EndpointBacklog {
                endpoint: endpoint.name.clone(),
                pending: pending as u64,
                dead_letters: dead as u64,
                failures: state.failures,
                last_error: (!state.last_error.is_empty()).then_some(state.last_error),
            });
        }
        Ok(out)
    }
}

/// One endpoint's backlog ([`Registry::notification_backlog`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointBacklog {
    pub endpoint: String,
    pub pending: u64,
    pub dead_letters: u64,
    pub failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
