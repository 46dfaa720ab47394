//! Core-level tests of notifications with a scripted webhook client and a clock the test moves: what is recorded
//! for each request, that a failed outbox write still answers the client, per-endpoint order and filters, backoff
//! after `threshold` failures, dead letters after the maximum age, and the store calls a slice makes.

use super::*;
use crate::api::Body;
use crate::storage::faulty::{FaultKind, FaultPlan, StoreOp};
use crate::storage::http::{HttpClient, HttpRequest, HttpResponse};
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use bytes::Bytes;
use futures::executor::block_on;
use std::cell::{Cell, RefCell};

#[derive(Default)]
struct Clock {
    n: Cell<u64>,
    millis: Cell<u64>,
    errors: RefCell<Vec<String>>,
}

impl Environment for Clock {
    fn now_unix(&self) -> u64 {
        self.now_millis() / 1000
    }
    fn now_millis(&self) -> u64 {
        1_700_000_000_000 + self.millis.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        self.n.set(self.n.get() + 1);
        let mut b = [7u8; 16];
        b[..8].copy_from_slice(&self.n.get().to_le_bytes());
        b
    }
    fn log_error(&self, m: &str) {
        self.errors.borrow_mut().push(m.to_string());
    }
}

/// Answers each delivery with the next scripted status (200 once the script is used up); records the requests.
#[derive(Default)]
struct Hook {
    statuses: RefCell<Vec<u16>>,
    sent: RefCell<Vec<HttpRequest>>,
}

#[async_trait::async_trait(?Send)]
impl HttpClient for Hook {
    async fn send(&self, req: HttpRequest) -> crate::error::Result<HttpResponse> {
        self.sent.borrow_mut().push(req);
        let mut s = self.statuses.borrow_mut();
        let status = if s.is_empty() { 200 } else { s.remove(0) };
        Ok(HttpResponse { status, headers: vec![], body: Box::pin(futures::stream::empty()) })
    }
}

impl Hook {
    /// (url, events) of every delivery.
    fn deliveries(&self) -> Vec<(String, Vec<serde_json::Value>)> {
        self.sent
            .borrow()
            .iter()
            .map(|r| {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                (r.url.clone(), v["events"].as_array().unwrap().clone())
            })
            .collect()
    }
}

const ENDPOINTS: &str = r#"[{"name":"a","url":"http://a.test/hook","threshold":2,"backoff":"10s","headers":{"X-Token":"t"}},
    {"name":"b","url":"http://b.test/hook","ignore":{"actions":["pull"]}}]"#;

fn registry(meta: Rc<dyn MetaStore>, objects: Rc<dyn ObjectStore>, env: Rc<Clock>, hook: Rc<Hook>) -> Registry {
    let vars = [
        ("REGISTRY_NOTIFICATIONS_ENDPOINTS", ENDPOINTS),
        ("PIER_NOTIFICATIONS_SECRET", "k"),
        ("PIER_NOTIFICATIONS_MAX_AGE", "1h"),
    ];
    let config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
    Registry::new(objects, meta, config, env).with_notification_client(hook)
}

fn call(reg: &Registry, method: Method, uri: &str, body: &[u8]) -> Response {
    let mut r = Request::new(Body::Full(Bytes::copy_from_slice(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    r.headers_mut().insert("host", "reg.test".parse().unwrap());
    r.headers_mut().insert("content-type", "application/vnd.oci.image.manifest.v1+json".parse().unwrap());
    block_on(reg.handle(r))
}

/// Push a config blob and a manifest tagged `tag`; returns (blob digest, manifest digest).
fn push(reg: &Registry, repo: &str, tag: &str, seed: &str) -> (String, String) {
    let config = format!("{{\"seed\":\"{seed}\"}}");
    let blob = crate::spec::Algorithm::Sha256.digest(config.as_bytes()).to_string();
    assert_eq!(call(reg, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={blob}"), config.as_bytes()).status(), 201);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{blob}","size":{}}},"layers":[]}}"#,
        config.len()
    );
    let r = call(reg, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), manifest.as_bytes());
    assert_eq!(r.status(), 201);
    (blob, r.headers()["docker-content-digest"].to_str().unwrap().to_string())
}

fn actions(events: &[serde_json::Value]) -> Vec<String> {
    events.iter().map(|e| format!("{} {} {}", e["action"].as_str().unwrap(), e["target"]["repository"].as_str().unwrap(), e["target"]["digest"].as_str().unwrap_or(""))).collect()
}

fn setup() -> (Registry, Rc<Clock>, Rc<Hook>, Rc<MemoryMetaStore>) {
    let env = Rc::new(Clock::default());
    let hook = Rc::new(Hook::default());
    let meta = Rc::new(MemoryMetaStore::new());
    let reg = registry(meta.clone(), Rc::new(MemoryObjectStore::new()), env.clone(), hook.clone());
    (reg, env, hook, meta)
}

#[test]
fn events_are_recorded_per_endpoint_and_delivered_in_order_signed() {
    let (reg, _env, hook, _meta) = setup();
    let (blob, manifest) = push(&reg, "team/app", "v1", "1");
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v1", b"").status(), 200);
    assert_eq!(call(&reg, Method::HEAD, "/v2/team/app/manifests/v1", b"").status(), 200);
    assert_eq!(call(&reg, Method::DELETE, "/v2/team/app/manifests/v1", b"").status(), 202);
    assert!(reg.take_event_signal());
    assert!(!reg.take_event_signal());
    assert!(hook.sent.borrow().is_empty(), "nothing is delivered on a request's path");

    let report = block_on(reg.deliver_events_slice(100)).unwrap();
    assert_eq!((report.delivered, report.failed_attempts, report.more), (7, 0, false), "{report:?}");
    let d = hook.deliveries();
    assert_eq!(d.len(), 2, "one envelope per endpoint");
    assert_eq!(d[0].0, "http://a.test/hook");
    assert_eq!(
        actions(&d[0].1),
        [format!("push team/app {blob}"), format!("push team/app {manifest}"), format!("pull team/app {manifest}"), format!("delete team/app {manifest}")]
    );
    // Endpoint b ignores pulls.
    assert_eq!(actions(&d[1].1), [format!("push team/app {blob}"), format!("push team/app {manifest}"), format!("delete team/app {manifest}")]);
    let push = &d[0].1[1];
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["url"], format!("http://reg.test/v2/team/app/manifests/{manifest}"));
    assert_eq!(push["request"]["host"], "reg.test");
    assert!(push["target"].get("references").is_none(), "references only with includereferences");
    assert_eq!(d[0].1[3]["target"]["tag"], "v1", "a tag delete names the tag");
    let sent = hook.sent.borrow();
    let header = |r: &HttpRequest, n: &str| r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    assert_eq!(header(&sent[0], "x-token").as_deref(), Some("t"));
    assert_eq!(header(&sent[0], "x-pier-signature"), Some(crate::events::signature(b"k", &sent[0].body)));
    assert_eq!(header(&sent[1], "x-token"), None);
    drop(sent);
    // Drained: a second slice sends nothing.
    assert_eq!(block_on(reg.deliver_events_slice(100)).unwrap(), notify::DeliveryReport::default());
    assert_eq!(hook.sent.borrow().len(), 2);
}

#[test]
fn a_failed_outbox_write_still_answers_the_client() {
    let env = Rc::new(Clock::default());
    let hook = Rc::new(Hook::default());
    let plan = FaultPlan::on_op(StoreOp::MetaPut, "_events/outbox/a/", FaultKind::Fail);
    let (objects, meta) = plan.wrap(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()));
    let reg = registry(meta, objects, env.clone(), hook.clone());
    push(&reg, "team/app", "v1", "2");
    assert!(plan.fired().is_some());
    let errors = env.errors.borrow();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("was not recorded") && errors[0].contains("\"a\""), "{errors:?}");
    assert_eq!(reg.notify_stats().record_failures, 1);
}

#[test]
fn a_failing_endpoint_backs_off_keeps_order_and_does_not_hold_others() {
    let (reg, env, hook, _meta) = setup();
    let (_, m1) = push(&reg, "team/app", "v1", "3");
    // a fails twice (threshold 2, backoff 10 s); b answers 200.
    *hook.statuses.borrow_mut() = vec![500, 200, 503];
    let r = block_on(reg.deliver_events_slice(100)).unwrap();
    assert_eq!((r.delivered, r.failed_attempts, r.pending), (2, 1, 2), "{r:?}");
    let (_, m2) = push(&reg, "team/app", "v2", "4");
    let r = block_on(reg.deliver_events_slice(100)).unwrap();
    // a failed again (503): now at the threshold it waits 10 s; b got the new events.
    assert_eq!((r.delivered, r.failed_attempts), (2, 1), "{r:?}");
    let r = block_on(reg.deliver_events_slice(100)).unwrap();
    assert!(r.waiting && r.delivered == 0 && r.failed_attempts == 0, "{r:?}");
    let backlog = block_on(reg.notification_backlog(100)).unwrap();
    assert_eq!((backlog[0].pending, backlog[0].failures, backlog[0].last_error.as_deref()), (4, 2, Some("HTTP 503")));
    env.millis.set(env.millis.get() + 10_001);
    let r = block_on(reg.deliver_events_slice(100)).unwrap();
    assert_eq!(r.delivered, 4, "{r:?}");
    let last = hook.deliveries().pop().unwrap();
    assert_eq!(last.0, "http://a.test/hook");
    let order: Vec<String> = last.1.iter().map(|e| e["target"]["digest"].as_str().unwrap().to_string()).collect();
    assert_eq!(order[1], m1);
    assert_eq!(order[3], m2);
    assert_eq!(block_on(reg.notification_backlog(100)).unwrap()[0].failures, 0, "success resets the failures");
}

#[test]
fn events_older_than_the_max_age_become_dead_letters() {
    let (reg, env, hook, meta) = setup();
    push(&reg, "team/app", "v1", "5");
    *hook.statuses.borrow_mut() = vec![500, 200];
    block_on(reg.deliver_events_slice(100)).unwrap();
    env.millis.set(env.millis.get() + 3_600_001);
    *hook.statuses.borrow_mut() = vec![500];
    let r = block_on(reg.deliver_events_slice(100)).unwrap();
    assert_eq!((r.dead_lettered, r.pending), (2, 0), "{r:?}");
    let dead = block_on(meta.list(&keys::dead_letter_prefix("a"), None, 10)).unwrap();
    assert_eq!(dead.len(), 2);
    let letter: serde_json::Value = serde_json::from_slice(&block_on(meta.get(&dead[0])).unwrap().unwrap()).unwrap();
    assert_eq!(letter["endpoint"], "a");
    assert!(letter["reason"].as_str().unwrap().contains("HTTP 500"), "{letter}");
    assert_eq!(letter["event"]["action"], "push");
    assert!(env.errors.borrow().iter().any(|e| e.contains("gave up on event")));
    assert!(block_on(meta.list(&keys::outbox_prefix("a"), None, 10)).unwrap().is_empty());
}

#[test]
fn a_slice_is_bounded_and_stamps_keep_request_order() {
    let (reg, _env, hook, meta) = setup();
    for i in 0..5 {
        push(&reg, "team/app", &format!("t{i}"), &format!("s{i}"));
    }
    // The clock stands still: stamps still grow, so keys list in the order the requests were answered.
    let keys_a = block_on(meta.list(&keys::outbox_prefix("a"), None, 100)).unwrap();
    assert_eq!(keys_a.len(), 10);
    let r = block_on(reg.deliver_events_slice(4)).unwrap();
    assert!(r.more && r.delivered == 8, "{r:?}");
    let tags: Vec<String> =
        hook.deliveries()[0].1.iter().filter_map(|e| e["target"]["tag"].as_str().map(str::to_string)).collect();
    assert_eq!(tags, ["t0", "t1"]);
    while block_on(reg.deliver_events_slice(4)).unwrap().more {}
    assert_eq!(reg.notify_stats().delivered, 20);
}

#[test]
fn without_endpoints_nothing_is_recorded() {
    let env = Rc::new(Clock::default());
    let meta = Rc::new(MemoryMetaStore::new());
    let reg = Registry::new(Rc::new(MemoryObjectStore::new()), meta.clone(), Config::default(), env);
    push(&reg, "team/app", "v1", "6");
    assert!(!reg.notifications_enabled() && !reg.take_event_signal());
    assert!(block_on(meta.list("_events/", None, 10)).unwrap().is_empty());
}
