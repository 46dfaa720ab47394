//! Notifications against `pier serve` with a real webhook receiver: a tiny HTTP server in the test process on a free
//! loopback port that records every delivery. Checks the registry:2 envelope and fields for pushes, pulls, deletes
//! and mounts, per-repository order, the `X-Pier-Signature` HMAC (verified here with the hmac crate), endpoint
//! filters, retries after 500s, a receiver that is down for a while, and a server killed with events pending and
//! restarted on the same root. Also `/metrics` on its own address. Every test needs its own server settings, so none
//! runs against `PIER_TEST_URL`.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "notify-test-secret-0123456789";

/// One delivery the receiver got.
#[derive(Debug, Clone)]
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    /// What the receiver answered.
    status: u16,
}

/// A webhook receiver: answers 500 to the first `fail_first` deliveries, 200 after; records them all.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Delivery>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn read_request(stream: &mut TcpStream) -> Option<(HashMap<String, String>, Vec<u8>)> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST ") {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

impl Receiver {
    /// Listen on `port` (0: a free one).
    fn start(port: u16, fail_first: usize) -> Receiver {
        Self::start_recording(port, fail_first, Arc::new(Mutex::new(Vec::new())))
    }

    fn start_recording(port: u16, fail_first: usize, got: Arc<Mutex<Vec<Delivery>>>) -> Receiver {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind receiver");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let (got2, stop2) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let Some((headers, body)) = read_request(&mut stream) else { continue };
                let status = if seen.fetch_add(1, Ordering::SeqCst) < fail_first { 500 } else { 200 };
                got2.lock().unwrap().push(Delivery { headers, body, status });
                let reason = if status == 200 { "OK" } else { "Internal Server Error" };
                let _ = write!(stream, "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { port, got, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    /// Every event of the deliveries answered 200, in arrival order.
    fn events(&self) -> Vec<Value> {
        accepted_events(&self.got.lock().unwrap())
    }

    /// Waits until `pred` holds for the accepted events (up to `secs`), and returns them.
    #[track_caller]
    fn wait_for(&self, secs: u64, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "receiver never got {what}; it has:\n{}", summary(&events));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accepted_events(deliveries: &[Delivery]) -> Vec<Value> {
    deliveries
        .iter()
        .filter(|d| d.status == 200)
        .flat_map(|d| {
            let v: Value = serde_json::from_slice(&d.body).expect("envelope is JSON");
            v["events"].as_array().cloned().unwrap_or_default()
        })
        .collect()
}

fn summary(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("{} {} {} {}", e["action"], e["target"]["repository"], e["target"]["digest"], e["target"]["tag"]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The events of `repo`, as `action digest` strings, in arrival order.
fn actions(events: &[Value], repo: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["target"]["repository"] == repo)
        .map(|e| format!("{} {}", e["action"].as_str().unwrap(), e["target"]["digest"].as_str().unwrap_or("")))
        .collect()
}

fn endpoints(list: Value) -> String {
    list.to_string()
}

fn server_env(endpoints_json: &str) -> Vec<(&'static str, String)> {
    vec![("REGISTRY_NOTIFICATIONS_ENDPOINTS", endpoints_json.to_string()), ("PIER_NOTIFICATIONS_SECRET", SECRET.to_string())]
}

fn start(root: Option<&std::path::Path>, env: &[(&'static str, String)], args: &[&str]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match root {
        Some(r) => Server::start_custom(Some(r), &env, args),
        None => Server::start_with_env(&env, args),
    }
}

fn verify_signature(d: &Delivery) {
    let header = d.headers.get("x-pier-signature").expect("signature header");
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&d.body);
    let hex = header.strip_prefix("sha256=").expect("sha256= prefix");
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    mac.verify_slice(&bytes).expect("the signature is the HMAC of the body");
}

#[test]
fn push_pull_delete_and_mount_arrive_in_order_signed() {
    if skip_if_external("push_pull_delete_and_mount_arrive_in_order_signed") {
        return;
    }
    let all = Receiver::start(0, 0);
    let quiet = Receiver::start(0, 0);
    let list = endpoints(json!([
        {"name": "all", "url": all.url(), "headers": {"Authorization": ["Bearer hook-token"]}, "timeout": "2s"},
        {"name": "no-pulls-no-blobs", "url": quiet.url(), "ignoredmediatypes": ["application/octet-stream"],
         "ignore": {"actions": ["pull"]}},
        {"name": "off", "url": "http://127.0.0.1:9/never", "disabled": true}
    ]));
    let mut env = server_env(&list);
    env.push(("REGISTRY_NOTIFICATIONS_EVENTS_INCLUDEREFERENCES", "true".into()));
    let s = start(None, &env, &[]);
    let repo = unique("notify/app");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let pulled = s.get_h(&format!("/v2/{repo}/manifests/v1"), &[("Accept", OCI_MANIFEST), ("User-Agent", "notify-test/1")]);
    pulled.expect(200);
    let pull_request_id = pulled.must_header("x-request-id").to_string();
    s.head(&format!("/v2/{repo}/manifests/v1")).expect(200); // HEAD: no event
    s.get(&format!("/v2/{repo}/blobs/{}", img.layer)).expect(200);
    let other = unique("notify/other");
    s.post(&format!("/v2/{other}/blobs/uploads/?mount={}&from={repo}", img.layer)).expect(201);
    s.delete(&format!("/v2/{repo}/manifests/{}", img.digest)).expect(202);

    let expected = vec![
        format!("push {}", img.config),
        format!("push {}", img.layer),
        format!("push {}", img.digest),
        format!("pull {}", img.digest),
        format!("pull {}", img.layer),
        format!("delete {}", img.digest),
    ];
    let events = all.wait_for(20, "every event of the repository", |e| actions(e, &repo).len() >= expected.len());
    assert_eq!(actions(&events, &repo), expected, "{}", summary(&events));
    let mount = all.wait_for(10, "the mount", |e| !actions(e, &other).is_empty());
    assert_eq!(actions(&mount, &other), [format!("mount {}", img.layer)]);
    let m = mount.iter().find(|e| e["action"] == "mount").unwrap();
    assert_eq!(m["target"]["fromRepository"], repo.as_str());

    // registry:2's fields.
    let push = events.iter().find(|e| e["action"] == "push" && e["target"]["digest"] == img.digest.as_str()).unwrap();
    assert_eq!(push["target"]["mediaType"], OCI_MANIFEST);
    assert_eq!(push["target"]["tag"], "v1");
    assert_eq!(push["target"]["size"], img.bytes.len());
    assert_eq!(push["target"]["length"], img.bytes.len());
    assert_eq!(push["target"]["url"], s.url(&format!("/v2/{repo}/manifests/{}", img.digest)));
    let refs: Vec<&str> = push["target"]["references"].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap()).collect();
    assert_eq!(refs, [img.config.as_str(), img.layer.as_str()]);
    assert_eq!(push["request"]["method"], "PUT");
    assert_eq!(push["request"]["addr"], "127.0.0.1");
    assert!(push["source"]["instanceID"].as_str().is_some_and(|i| i.len() == 36), "{push}");
    assert!(push["timestamp"].as_str().unwrap().ends_with('Z'));
    let pull = events.iter().find(|e| e["action"] == "pull" && e["target"]["digest"] == img.digest.as_str()).unwrap();
    assert_eq!(pull["request"]["id"], pull_request_id.as_str());
    assert_eq!(pull["request"]["useragent"], "notify-test/1");
    assert_eq!(pull["target"]["tag"], "v1");
    let blob = events.iter().find(|e| e["action"] == "push" && e["target"]["digest"] == img.layer.as_str()).unwrap();
    assert_eq!(blob["target"]["mediaType"], "application/octet-stream");
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    // Every delivery: the envelope's media type, the configured header, a valid signature.
    for d in all.got.lock().unwrap().iter() {
        assert_eq!(d.headers.get("content-type").map(String::as_str), Some("application/vnd.docker.distribution.events.v1+json"));
        assert_eq!(d.headers.get("authorization").map(String::as_str), Some("Bearer hook-token"));
        verify_signature(d);
    }
    // The filtered endpoint: the manifest push and the delete only (no pulls, no blobs).
    let events = quiet.wait_for(10, "the manifest push and delete", |e| actions(e, &repo).len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let events = if quiet.events().len() > events.len() { quiet.events() } else { events };
    assert_eq!(actions(&events, &repo), [format!("push {}", img.digest), format!("delete {}", img.digest)]);
    let err = s.stderr_text();
    assert!(!err.contains("hook-token") && !err.contains(SECRET), "a secret was logged:\n{err}");
}

#[test]
fn failing_receiver_still_gets_every_event_in_order() {
    if skip_if_external("failing_receiver_still_gets_every_event_in_order") {
        return;
    }
    let receiver = Receiver::start(0, 3);
    let list = endpoints(json!([{"name": "flaky", "url": receiver.url(), "threshold": 2, "backoff": "200ms"}]));
    let s = start(None, &server_env(&list), &[]);
    let repo = unique("notify/flaky");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let img2 = push_image(&s, &repo, "v2", unique_seed());
    let expected = [&img.config, &img.layer, &img.digest, &img2.config, &img2.layer, &img2.digest].map(|d| format!("push {d}"));
    let events = receiver.wait_for(30, "the pushes after the 500s", |e| actions(e, &repo).len() >= expected.len());
    assert_eq!(actions(&events, &repo), expected);
    let got = receiver.got.lock().unwrap();
    assert_eq!(got.iter().filter(|d| d.status == 500).count(), 3);
    for d in got.iter() {
        verify_signature(d);
    }
    drop(got);
    s.wait_stderr("notifications: endpoint \"flaky\" failed (HTTP 500)");
}

#[test]
fn receiver_down_and_server_restart_lose_nothing() {
    if skip_if_external("receiver_down_and_server_restart_lose_nothing") {
        return;
    }
    // A port nobody listens on yet: the receiver comes up there later.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let list = endpoints(json!([{"name": "later", "url": format!("http://127.0.0.1:{port}/events"), "threshold": 1, "backoff": "300ms", "timeout": "1s"}]));
    let env = server_env(&list);
    let root = tempfile::TempDir::new().unwrap();
    let repo = unique("notify/restart");
    let first = {
        let s = start(Some(root.path()), &env, &[]);
        let img = push_image(&s, &repo, "v1", unique_seed());
        s.get_h(&format!("/v2/{repo}/manifests/v1"), &[("Accept", OCI_MANIFEST)]).expect(200);
        // Deliveries fail (connection refused) and the events stay in the outbox.
        s.wait_stderr("notifications: endpoint \"later\" failed");
        img
        // The server is killed here, with its events pending.
    };
    let outbox = root.path().to_string_lossy().to_string();
    let pending = walk_files(root.path()).into_iter().filter(|p| p.contains("_events") && p.contains("outbox")).count();
    assert!(pending >= 4, "expected the outbox entries under {outbox}, found {pending}");

    // A new process on the same root, still without a receiver: the events wait.
    let s = start(Some(root.path()), &env, &[]);
    let img2 = push_image(&s, &repo, "v2", unique_seed());
    std::thread::sleep(Duration::from_millis(800));
    // The receiver comes up: everything arrives, in order, exactly once each.
    let receiver = Receiver::start(port, 0);
    let expected: Vec<String> = [&first.config, &first.layer, &first.digest]
        .iter()
        .map(|d| format!("push {d}"))
        .chain([format!("pull {}", first.digest)])
        .chain([&img2.config, &img2.layer, &img2.digest].iter().map(|d| format!("push {d}")))
        .collect();
    let events = receiver.wait_for(30, "the events from before the restart", |e| actions(e, &repo).len() >= expected.len());
    assert_eq!(actions(&events, &repo), expected);
    // Drained: the outbox is empty, and the admin view says so.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.get("/admin/events").json();
        if v["endpoints"][0]["pending"] == 0 {
            assert_eq!(v["endpoints"][0]["failures"], 0, "{v}");
            break;
        }
        assert!(Instant::now() < deadline, "outbox not drained: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Paths of every file under `dir`.
fn walk_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p.to_string_lossy().to_string());
            }
        }
    }
    out
}

#[test]
fn old_undeliverable_events_become_dead_letters() {
    if skip_if_external("old_undeliverable_events_become_dead_letters") {
        return;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let list = endpoints(json!([{"name": "gone", "url": format!("http://127.0.0.1:{port}/events"), "threshold": 1, "backoff": "100ms"}]));
    let mut env = server_env(&list);
    env.push(("PIER_NOTIFICATIONS_MAX_AGE", "1s".into()));
    env.push(("PIER_NOTIFICATIONS_MAX_BACKOFF", "200ms".into()));
    let root = tempfile::TempDir::new().unwrap();
    let s = start(Some(root.path()), &env, &[]);
    let repo = unique("notify/dead");
    push_blob(&s, &repo, b"dead letter");
    s.wait_stderr("notifications: gave up on event");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = s.get("/admin/events").json();
        if v["endpoints"][0]["pending"] == 0 && v["endpoints"][0]["dead_letters"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let dead: Vec<String> = walk_files(root.path()).into_iter().filter(|p| p.contains("_events") && p.contains("dead")).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
}

#[test]
fn metrics_count_requests_on_their_own_address() {
    if skip_if_external("metrics_count_requests_on_their_own_address") {
        return;
    }
    let receiver = Receiver::start(0, 0);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let list = endpoints(json!([{"name": "m", "url": receiver.url()}]));
    let s = start(None, &server_env(&list), &["--metrics-addr", &metrics_addr]);
    s.wait_stderr(&format!("metrics on http://{metrics_addr}/metrics"));
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(10)).build();
    let scrape = || -> HashMap<String, f64> {
        let text = agent.get(&format!("http://{metrics_addr}/metrics")).call().unwrap().into_string().unwrap();
        let mut values = HashMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            values.insert(name.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {line:?}")));
        }
        values
    };
    let before = scrape();
    let repo = unique("notify/metrics");
    let img = push_image(&s, &repo, "v1", unique_seed());
    s.get_h(&format!("/v2/{repo}/manifests/v1"), &[("Accept", OCI_MANIFEST)]).expect(200);
    s.get(&format!("/v2/{repo}/manifests/nope")).expect(404);
    receiver.wait_for(10, "the events", |e| actions(e, &repo).len() >= 4);
    let after = scrape();
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(get(&after, r#"pier_http_requests_total{route="manifest",method="PUT",status="201"}"#), 1.0, "{after:?}");
    assert_eq!(get(&after, r#"pier_http_requests_total{route="manifest",method="GET",status="404"}"#), 1.0);
    assert_eq!(get(&after, r#"pier_http_requests_total{route="upload",method="PUT",status="201"}"#), 2.0);
    assert!(get(&after, r#"pier_http_request_duration_seconds_count{route="manifest"}"#) >= 3.0);
    assert!(get(&after, "pier_http_request_bytes_total") >= img.bytes.len() as f64);
    assert!(get(&after, "pier_http_response_bytes_total") > get(&before, "pier_http_response_bytes_total"));
    assert_eq!(get(&after, "pier_http_requests_in_flight"), 0.0);
    assert_eq!(get(&after, "pier_notifications_delivered_total"), 4.0);
    assert_eq!(get(&after, r#"pier_notifications_pending{endpoint="m"}"#), 0.0);
    // The registry's own port has no /metrics.
    s.get("/metrics").expect_client_error();
}
