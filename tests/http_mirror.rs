//! The pull-through cache against real upstreams started by the test: another Pier (anonymous, and one with access
//! control that demands the token flow with credentials) and a lying upstream that serves wrong bytes for a digest.
//! Pulls through the mirror must be byte-identical; cached pulls must not touch the upstream (its request log is
//! counted); cached content must keep being served when the upstream is gone; nothing unverified may be cached;
//! pushes to mirrored names are refused.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;

/// Requests the upstream has answered so far (its request log: one stdout line per request).
fn upstream_requests(upstream: &Server) -> usize {
    // The server's stdout is read by a thread: give it a moment to catch up.
    std::thread::sleep(std::time::Duration::from_millis(300));
    upstream.stdout_text().lines().filter(|l| l.contains("\"GET ") || l.contains("\"HEAD ")).count()
}

fn mirror_of(upstream: &str, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("REGISTRY_PROXY_REMOTEURL", upstream)];
    env.extend_from_slice(extra);
    Server::start_with_env(&env, &[])
}

#[test]
fn pulls_through_are_byte_identical_and_cached_pulls_stay_local() {
    if skip_if_external("pulls_through_are_byte_identical_and_cached_pulls_stay_local") {
        return;
    }
    let upstream = Server::start_with_env(&[], &[]);
    let img = push_image(&upstream, "lib/app", "v1", unique_seed());
    let mirror = mirror_of(&upstream.base, &[("PIER_PROXY_TAG_TTL", "1h")]);

    let m = mirror.get("/v2/lib/app/manifests/v1");
    m.expect(200);
    assert_eq!(m.body, img.bytes, "the manifest differs from the upstream's bytes");
    assert_eq!(m.header("docker-content-digest"), Some(img.digest.as_str()));
    for d in [&img.config, &img.layer] {
        let ours = mirror.get(&format!("/v2/lib/app/blobs/{d}"));
        ours.expect(200);
        assert_eq!(sha256(&ours.body), *d);
    }
    let after_first = upstream_requests(&upstream);
    assert!(after_first >= 3, "the first pull should have reached the upstream (log: {})", upstream.stdout_text());
    // Again, by tag (fresh for an hour), by digest, and the blobs: all from the cache.
    mirror.get("/v2/lib/app/manifests/v1").expect(200);
    mirror.get(&format!("/v2/lib/app/manifests/{}", img.digest)).expect(200);
    mirror.head(&format!("/v2/lib/app/manifests/{}", img.digest)).expect(200);
    for d in [&img.config, &img.layer] {
        mirror.get(&format!("/v2/lib/app/blobs/{d}")).expect(200);
        mirror.head(&format!("/v2/lib/app/blobs/{d}")).expect(200);
    }
    assert_eq!(upstream_requests(&upstream), after_first, "a cached pull went to the upstream");

    // Mirrored names are pull-only.
    mirror.post_bytes("/v2/lib/app/blobs/uploads/", b"").expect_error(405, "UNSUPPORTED");
    mirror.put_bytes("/v2/lib/app/manifests/v2", &img.bytes).expect_error(405, "UNSUPPORTED");
    mirror.delete(&format!("/v2/lib/app/manifests/{}", img.digest)).expect_error(405, "UNSUPPORTED");
    // What the upstream does not have is 404 here too.
    mirror.get("/v2/lib/app/manifests/nope").expect_error(404, "MANIFEST_UNKNOWN");
    mirror.get(&format!("/v2/lib/app/blobs/{}", sha256(b"absent"))).expect_error(404, "BLOB_UNKNOWN");
}

#[test]
fn a_stale_tag_is_revalidated_and_served_when_the_upstream_is_gone() {
    if skip_if_external("a_stale_tag_is_revalidated_and_served_when_the_upstream_is_gone") {
        return;
    }
    let upstream = Server::start_with_env(&[], &[]);
    let img = push_image(&upstream, "lib/app", "v1", unique_seed());
    let mirror = mirror_of(&upstream.base, &[("PIER_PROXY_TAG_TTL", "0")]);
    mirror.get("/v2/lib/app/manifests/v1").expect(200);
    for d in [&img.config, &img.layer] {
        mirror.get(&format!("/v2/lib/app/blobs/{d}")).expect(200);
    }
    // The tag moves upstream: the mirror's revalidation sees it.
    let newer = push_image(&upstream, "lib/app", "v1", unique_seed());
    let m = mirror.get("/v2/lib/app/manifests/v1");
    m.expect(200);
    assert_eq!(m.header("docker-content-digest"), Some(newer.digest.as_str()));
    for d in [&newer.config, &newer.layer] {
        mirror.get(&format!("/v2/lib/app/blobs/{d}")).expect(200);
    }
    // The upstream goes away: cached tags (stale, with a Warning) and blobs keep being served.
    drop(upstream);
    let m = mirror.get("/v2/lib/app/manifests/v1");
    m.expect(200);
    assert_eq!(m.header("docker-content-digest"), Some(newer.digest.as_str()));
    assert!(m.header("warning").is_some_and(|w| w.contains("stale")), "{}", m.summary());
    mirror.get(&format!("/v2/lib/app/manifests/{}", img.digest)).expect(200);
    for d in [&newer.config, &newer.layer, &img.layer] {
        let r = mirror.get(&format!("/v2/lib/app/blobs/{d}"));
        r.expect(200);
        assert_eq!(sha256(&r.body), *d);
    }
    // Uncached content answers 503 naming the upstream as the problem, never a hang or a 500.
    mirror.get("/v2/lib/other/manifests/v1").expect_error(503, "UNAVAILABLE");
}

#[test]
fn the_token_flow_with_credentials_and_mixed_mode() {
    if skip_if_external("the_token_flow_with_credentials_and_mixed_mode") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("htpasswd");
    let line = format!("mirror:{}\n", pier::auth::htpasswd::hash_password(b"mirror-pw", 4, [3; 16]).unwrap());
    std::fs::write(&users, line).unwrap();
    let users = users.to_string_lossy().to_string();
    let upstream = Server::start_with_env(
        &[
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", &users),
            ("PIER_AUTH_TOKEN_SECRET", "upstream-secret-0123456789abcdef-0123456789"),
        ],
        &[],
    );
    // Push to the upstream with Basic credentials.
    let auth = [("Authorization", "Basic bWlycm9yOm1pcnJvci1wdw==")];
    let config = b"{\"os\":\"linux\"}".to_vec();
    let layer = random_bytes(unique_seed(), 2048);
    for blob in [&config, &layer] {
        let d = sha256(blob);
        upstream.raw("POST", &format!("/v2/team/app/blobs/uploads/?digest={d}"), &auth, blob).expect(201);
    }
    let manifest = to_bytes(&oci_manifest((OCI_CONFIG, &sha256(&config), config.len()), &[(&sha256(&layer), layer.len())]));
    let mut headers = auth.to_vec();
    headers.push(("Content-Type", OCI_MANIFEST));
    upstream.raw("PUT", "/v2/team/app/manifests/v1", &headers, &manifest).expect(201);

    // Mixed mode: names under `up/` come from the upstream (with credentials), everything else is hosted here.
    let upstreams = format!(r#"[{{"prefix":"up","url":"{}","username":"mirror","password":"mirror-pw"}}]"#, upstream.base);
    let mirror = Server::start_with_env(&[("PIER_PROXY_UPSTREAMS", &upstreams)], &[]);
    let m = mirror.get("/v2/up/team/app/manifests/v1");
    m.expect(200);
    assert_eq!(m.body, manifest);
    let b = mirror.get(&format!("/v2/up/team/app/blobs/{}", sha256(&layer)));
    b.expect(200);
    assert_eq!(b.body, layer);
    push_image(&mirror, "local/app", "v1", unique_seed());
    mirror.post_bytes("/v2/up/team/app/blobs/uploads/", b"").expect_error(405, "UNSUPPORTED");

    // Without credentials the upstream refuses, and the mirror says so.
    let anonymous = Server::start_with_env(&[("PIER_PROXY_UPSTREAMS", &format!(r#"[{{"prefix":"up","url":"{}"}}]"#, upstream.base))], &[]);
    let r = anonymous.get("/v2/up/team/app/manifests/v1");
    assert!(r.status == 401 || r.status == 403, "{}", r.summary());
}

/// An upstream that answers every blob GET with bytes that are not the requested digest.
fn lying_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            let body: &[u8] = b"these are not the bytes you asked for";
            let answer = if head.starts_with("GET /v2/") && head.contains("/blobs/") {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n", body.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
            };
            let _ = stream.write_all(answer.as_bytes());
            if answer.starts_with("HTTP/1.1 200") {
                let _ = stream.write_all(body);
            }
        }
    });
    format!("http://{addr}")
}

#[test]
fn a_lying_upstream_poisons_nothing() {
    if skip_if_external("a_lying_upstream_poisons_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = lying_upstream();
    let mirror = Server::start_custom(Some(dir.path()), &[("REGISTRY_PROXY_REMOTEURL", &url)], &[]);
    let digest = sha256(b"the real content");
    mirror.get(&format!("/v2/lib/app/blobs/{digest}")).expect_error(503, "UNAVAILABLE");
    mirror.get(&format!("/v2/lib/app/blobs/{digest}")).expect_error(503, "UNAVAILABLE");
    let blobs = dir.path().join("objects/blobs");
    let stored: Vec<_> = walk(&blobs);
    assert!(stored.is_empty(), "something was cached: {stored:?}");
    let links = dir.path().join("meta/repositories");
    assert!(walk(&links).iter().all(|p| !p.contains("_blobs")), "a link was written");
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p.to_string_lossy().to_string());
            }
        }
    }
    out
}

#[test]
fn a_blob_bigger_than_a_part_streams_through_and_is_cached_once_verified() {
    if skip_if_external("a_blob_bigger_than_a_part_streams_through_and_is_cached_once_verified") {
        return;
    }
    let upstream = Server::start_with_env(&[], &[]);
    let layer = random_bytes(unique_seed(), 700 * 1024 + 123);
    let digest = push_blob(&upstream, "lib/big", &layer);
    let dir = tempfile::tempdir().unwrap();
    // Parts of 64 KiB: the 700 KiB layer goes through the tee in eleven parts.
    let mirror = Server::start_custom(
        Some(dir.path()),
        &[("REGISTRY_PROXY_REMOTEURL", &upstream.base), ("PIER_UPLOAD_PART_SIZE", "64KiB"), ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true")],
        &[],
    );
    let first = mirror.get(&format!("/v2/lib/big/blobs/{digest}"));
    first.expect(200);
    assert_eq!(sha256(&first.body), digest);
    let before = upstream_requests(&upstream);
    let cached = mirror.get(&format!("/v2/lib/big/blobs/{digest}"));
    cached.expect(200);
    assert_eq!(cached.body, layer);
    mirror.head(&format!("/v2/lib/big/blobs/{digest}")).expect(200);
    assert_eq!(upstream_requests(&upstream), before, "the cached pull went to the upstream: {}", mirror.stderr_text());

    // A lying upstream's big body reaches the client (who checks the digest and refuses it) but is never cached.
    let liar = lying_upstream_of_size(300 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let mirror = Server::start_custom(Some(dir.path()), &[("REGISTRY_PROXY_REMOTEURL", &liar), ("PIER_UPLOAD_PART_SIZE", "64KiB")], &[]);
    let wanted = sha256(b"what the client asked for");
    let r = mirror.get(&format!("/v2/lib/big/blobs/{wanted}"));
    assert_ne!(sha256(&r.body), wanted);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(walk(&dir.path().join("objects")).is_empty(), "unverified bytes were kept: {:?}", walk(&dir.path().join("objects")));
    assert!(walk(&dir.path().join("meta")).iter().all(|p| !p.contains("_blobs")), "an unverified blob was recorded");
}

/// Like `lying_upstream`, with a body of `size` bytes.
fn lying_upstream_of_size(size: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            if head.starts_with("GET /v2/") && head.contains("/blobs/") {
                let _ = stream.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n").as_bytes());
                let _ = stream.write_all(&vec![b'x'; size]);
            } else {
                let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    });
    format!("http://{addr}")
}

/// An upstream that serves `blobs` slowly (ten pieces, 100 ms apart) on a thread per connection, counting blob GETs
/// per digest: concurrent first pulls through a mirror overlap for certain.
fn slow_upstream(blobs: Vec<Vec<u8>>) -> (String, std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let gets = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let counted = gets.clone();
    let blobs: std::collections::HashMap<String, Vec<u8>> = blobs.into_iter().map(|b| (sha256(&b), b)).collect();
    let blobs = std::sync::Arc::new(blobs);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (blobs, counted) = (blobs.clone(), counted.clone());
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let found = path.split("/blobs/").nth(1).and_then(|d| blobs.get(d).map(|b| (d.to_string(), b)));
                match found {
                    Some((digest, body)) => {
                        let get = head.starts_with("GET ");
                        if get {
                            *counted.lock().unwrap().entry(digest).or_insert(0) += 1;
                        }
                        let _ = stream.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
                        if get {
                            for piece in body.chunks(body.len().div_ceil(10)) {
                                std::thread::sleep(std::time::Duration::from_millis(100));
                                if stream.write_all(piece).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    None => {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), gets)
}

#[test]
fn concurrent_first_pulls_of_a_blob_fetch_it_from_the_upstream_once() {
    if skip_if_external("concurrent_first_pulls_of_a_blob_fetch_it_from_the_upstream_once") {
        return;
    }
    // Parts of 64 KiB: one blob goes through the tee (streamed while stored), the other is fetched whole first.
    let big = random_bytes(unique_seed(), 300 * 1024 + 7);
    let small = random_bytes(unique_seed(), 40 * 1024);
    let (url, gets) = slow_upstream(vec![big.clone(), small.clone()]);
    let mirror = Server::start_with_env(&[("REGISTRY_PROXY_REMOTEURL", &url), ("PIER_UPLOAD_PART_SIZE", "64KiB")], &[]);
    for blob in [&big, &small] {
        let digest = sha256(blob);
        let target = mirror.url(&format!("/v2/lib/app/blobs/{digest}"));
        let pulls: Vec<_> = (0..4)
            .map(|_| {
                let target = target.clone();
                std::thread::spawn(move || {
                    let mut body = Vec::new();
                    let resp = ureq::get(&target).call().expect("pull");
                    resp.into_reader().read_to_end(&mut body).expect("body");
                    body
                })
            })
            .collect();
        for p in pulls {
            assert_eq!(sha256(&p.join().unwrap()), digest, "a pull got wrong bytes");
        }
        assert_eq!(gets.lock().unwrap().get(&digest).copied(), Some(1), "four pulls at once, one upstream fetch: {}", mirror.stderr_text());
        mirror.get(&format!("/v2/lib/app/blobs/{digest}")).expect(200);
        assert_eq!(gets.lock().unwrap().get(&digest).copied(), Some(1));
    }
}

#[test]
fn cached_content_nobody_pulls_expires_through_garbage_collection() {
    if skip_if_external("cached_content_nobody_pulls_expires_through_garbage_collection") {
        return;
    }
    let upstream = Server::start_with_env(&[], &[]);
    let img = push_image(&upstream, "lib/app", "v1", unique_seed());
    let dir = tempfile::tempdir().unwrap();
    let mirror = Server::start_custom(
        Some(dir.path()),
        &[("REGISTRY_PROXY_REMOTEURL", &upstream.base), ("REGISTRY_PROXY_TTL", "2s"), ("PIER_PROXY_TAG_TTL", "1h")],
        &[],
    );
    let pull = || {
        mirror.get("/v2/lib/app/manifests/v1").expect(200);
        for d in [&img.config, &img.layer] {
            let r = mirror.get(&format!("/v2/lib/app/blobs/{d}"));
            r.expect(200);
            assert_eq!(sha256(&r.body), *d);
        }
    };
    pull();
    assert!(!walk(&dir.path().join("objects")).is_empty(), "nothing was cached");
    std::thread::sleep(std::time::Duration::from_millis(3100));
    // Record and tag marked, then deleted, then the blob links, then the bytes: five cycles at grace 0.
    let mut reports = Vec::new();
    for _ in 0..5 {
        loop {
            let r = mirror.raw("POST", "/admin/gc?grace=0", &[], b"");
            r.expect(200);
            let v = r.json();
            if v["cycle_done"] == serde_json::json!(true) {
                reports.push(v["report"].clone());
                break;
            }
        }
    }
    assert_eq!((reports[0]["manifests_tombstoned"].as_u64(), reports[0]["tags_tombstoned"].as_u64()), (Some(1), Some(1)), "{reports:?}");
    assert_eq!(reports[4]["blobs_deleted"].as_u64(), Some(2), "{reports:?}");
    assert!(walk(&dir.path().join("objects")).is_empty(), "expired bytes stayed: {:?}", walk(&dir.path().join("objects")));
    let meta = walk(&dir.path().join("meta"));
    assert!(meta.iter().all(|p| !p.contains("_manifests") && !p.contains("_tags") && !p.contains("_blobs")), "{meta:?}");
    // A pull after the expiry fetches everything again.
    let before = upstream_requests(&upstream);
    pull();
    assert!(upstream_requests(&upstream) >= before + 3, "the pull did not go to the upstream");
}
