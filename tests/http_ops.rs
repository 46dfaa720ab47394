//! Operating Pier over HTTP against `pier serve`: `/health` (answered without credentials when access control is
//! on, 503 when the storage does not answer), read-only mode (every write route refused with 405 `UNSUPPORTED` on
//! data pushed before, every read served), `X-Request-Id` (echoed or generated) and the request logs on stdout (JSON
//! lines that parse, with the fields promised, and no password, token, credentials or signed query string in them).
//! Every test needs its own server settings, so none runs against `PIER_TEST_URL`.

mod common;

use common::*;
use pier::auth::htpasswd::hash_password;
use serde_json::Value;
use std::time::{Duration, Instant};

const PASSWORD: &str = "ops-Pa55word-never-logged";
const SECRET: &str = "ops-token-secret-0123456789abcdef-0123";

/// A server with access control on: user `alice` may do everything. Returns the server and the directory holding
/// its htpasswd file (kept alive with it).
fn auth_server(args: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::TempDir::new().unwrap();
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, format!("alice:{}\n", hash_password(PASSWORD.as_bytes(), 4, [5; 16]).unwrap())).unwrap();
    let users = users.to_string_lossy().to_string();
    let env = [
        ("REGISTRY_AUTH", "htpasswd"),
        ("REGISTRY_AUTH_HTPASSWD_PATH", users.as_str()),
        ("PIER_AUTH_TOKEN_SECRET", SECRET),
    ];
    (Server::start_with_env(&env, args), dir)
}

fn basic() -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("alice:{PASSWORD}")))
}

/// The request log lines printed so far, waiting until there are at least `n`.
#[track_caller]
fn log_lines(server: &Server, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = server.stdout_text().lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(Instant::now() < deadline, "expected {n} request log lines, got {}:\n{}", lines.len(), lines.join("\n"));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nobody listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn health_answers_without_credentials() {
    if skip_if_external("health_answers_without_credentials") {
        return;
    }
    let (s, _dir) = auth_server(&[]);
    let r = s.get("/health");
    r.expect(200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"status": "ok", "checks": {"storage": "ok"}}));
    assert!(r.header("x-request-id").is_some(), "{}", r.summary());
    let r = s.head("/health");
    r.expect(200);
    assert!(r.body.is_empty());
    // With credentials it answers alike; `/v2/` still wants them.
    s.get_h("/health", &[("Authorization", &basic())]).expect(200);
    s.get("/v2/").expect_error(401, "UNAUTHORIZED");
    s.request("POST", "/health", &[], Body::Bytes(b"x")).expect_error(405, "UNSUPPORTED");
}

#[test]
fn health_is_503_when_storage_is_unreachable() {
    if skip_if_external("health_is_503_when_storage_is_unreachable") {
        return;
    }
    // An S3 endpoint on a closed port: the server starts (it contacts storage only per request) and every store call
    // fails at once with "connection refused".
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let env = [
        ("REGISTRY_STORAGE", "s3"),
        ("REGISTRY_STORAGE_S3_ACCESSKEY", "OPSACCESSKEY"),
        ("REGISTRY_STORAGE_S3_SECRETKEY", "ops-secret-key-never-shown"),
        ("REGISTRY_STORAGE_S3_BUCKET", "ops-bucket-name"),
        ("REGISTRY_STORAGE_S3_REGIONENDPOINT", endpoint.as_str()),
        ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
    ];
    let s = Server::start_custom(None, &env, &[]);
    let r = s.get_h("/health", &[("X-Request-Id", "health-probe-7")]);
    r.expect(503);
    assert_eq!(r.json(), serde_json::json!({"status": "unavailable", "checks": {"storage": "unavailable"}}));
    assert_eq!(r.header("x-request-id"), Some("health-probe-7"));
    let port = endpoint.rsplit(':').next().unwrap();
    for private in ["127.0.0.1", port, "ops-bucket-name", "OPSACCESSKEY", "ops-secret-key-never-shown"] {
        assert!(!r.text().contains(private), "the answer names {private}: {}", r.text());
    }
    s.head("/health").expect(503);
    // The failure is in the server's error log under the request's id (and the secret is not).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.stderr_text().contains("request health-probe-7: health check: storage") {
        assert!(Instant::now() < deadline, "no error logged with the request id:\n{}", s.stderr_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!s.stderr_text().contains("ops-secret-key-never-shown"));
}

/// Write requests of every write route, against content pushed before: (method, path, body).
fn write_routes(repo: &str, img: &Image, session: &str, blob: &str) -> Vec<(&'static str, String, Vec<u8>)> {
    let session_path = path_of(session);
    vec![
        ("POST", format!("/v2/{repo}/blobs/uploads/"), vec![]),
        ("POST", format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(b"new blob")), b"new blob".to_vec()),
        ("POST", format!("/v2/other/blobs/uploads/?mount={blob}&from={repo}"), vec![]),
        ("PATCH", session_path.clone(), random_bytes(3, 1024 * 1024)),
        ("PUT", format!("{session_path}?digest={}", sha256(b"tail")), b"tail".to_vec()),
        ("DELETE", session_path, vec![]),
        ("PUT", format!("/v2/{repo}/manifests/v2"), img.bytes.clone()),
        ("PUT", format!("/v2/{repo}/manifests/{}", img.digest), img.bytes.clone()),
        ("DELETE", format!("/v2/{repo}/manifests/{}", img.digest), vec![]),
        ("DELETE", format!("/v2/{repo}/manifests/v1"), vec![]),
        ("DELETE", format!("/v2/{repo}/blobs/{blob}"), vec![]),
    ]
}

#[track_caller]
fn expect_reads(s: &Server, repo: &str, img: &Image, blob: (&str, &[u8]), session: &str) {
    let r = s.get(&format!("/v2/{repo}/manifests/v1"));
    r.expect(200);
    assert_eq!(r.body, img.bytes);
    s.head(&format!("/v2/{repo}/manifests/{}", img.digest)).expect(200);
    let r = s.get(&format!("/v2/{repo}/blobs/{}", blob.0));
    r.expect(200);
    assert_eq!(r.body, blob.1);
    s.head(&format!("/v2/{repo}/blobs/{}", img.layer)).expect(200);
    assert_eq!(strings(&s.get(&format!("/v2/{repo}/tags/list")).json()["tags"]), ["v1"]);
    assert!(strings(&s.get("/v2/_catalog").json()["repositories"]).contains(&repo.to_string()));
    s.get(&format!("/v2/{repo}/referrers/{}", img.digest)).expect(200);
    s.get("/v2/").expect(200);
    let r = s.get(&path_of(session));
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-99"));
}

#[test]
fn read_only_refuses_every_write_and_serves_every_read() {
    if skip_if_external("read_only_refuses_every_write_and_serves_every_read") {
        return;
    }
    let dir = tempfile::TempDir::new().unwrap();
    let repo = unique("frozen");
    let data = random_bytes(unique_seed(), 2000);
    let (img, blob, session) = {
        let s = Server::start_in(dir.path(), &[]);
        let img = push_image(&s, &repo, "v1", unique_seed());
        let blob = push_blob(&s, &repo, &data);
        let loc = start_upload(&s, &repo);
        let r = s.patch_range(&loc, 0, &random_bytes(9, 100));
        r.expect(202);
        (img, blob, r.location(&s))
    };

    for (how, env, args) in [
        ("--read-only", vec![], vec!["--read-only"]),
        ("registry:2's map", vec![("REGISTRY_STORAGE_MAINTENANCE_READONLY", r#"{"enabled": true}"#)], vec![]),
        ("the _ENABLED key", vec![("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")], vec![]),
    ] {
        let s = Server::start_custom(Some(dir.path()), &env, &args);
        assert!(s.stderr_text().contains("read-only mode") || wait_for_stderr(&s, "read-only mode"), "{how}: {}", s.stderr_text());
        for (method, path, body) in write_routes(&repo, &img, &session, &blob) {
            let r = s.request(method, &path, &[("Content-Type", OCI_MANIFEST)], Body::Bytes(&body));
            r.expect_error(405, "UNSUPPORTED");
            let message = r.json()["errors"][0]["message"].as_str().unwrap_or("").to_string();
            assert!(message.contains("read-only"), "{how}: {method} {path}: {message}");
        }
        // The refused 1 MiB PATCH body was read, so the connection stays usable for the client's next request.
        expect_reads(&s, &repo, &img, (&blob, &data), &session);
    }

    // Writable again: nothing was changed while frozen, and the interrupted upload resumes.
    let s = Server::start_in(dir.path(), &[]);
    expect_reads(&s, &repo, &img, (&blob, &data), &session);
    let r = s.patch_range(&path_of(&session), 100, b"more");
    r.expect(202);
}

fn wait_for_stderr(s: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if s.stderr_text().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn request_ids_are_echoed_or_generated() {
    if skip_if_external("request_ids_are_echoed_or_generated") {
        return;
    }
    let s = Server::start_memory(&[]);
    let r = s.get_h("/v2/", &[("X-Request-Id", "client-id_1.2-3")]);
    r.expect(200);
    assert_eq!(r.header("x-request-id"), Some("client-id_1.2-3"));
    let long = "x".repeat(129);
    let mut seen = Vec::new();
    for headers in [vec![], vec![("X-Request-Id", "not/sane")], vec![("X-Request-Id", long.as_str())], vec![("X-Request-Id", "")]] {
        let r = s.get_h("/v2/nope/manifests/latest", &headers);
        r.expect(404);
        let id = r.must_header("x-request-id").to_string();
        assert_eq!(id.len(), 32, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        assert!(!seen.contains(&id), "{id} twice");
        seen.push(id);
    }
    // Every kind of answer carries one: a 404 outside the API, a HEAD, a 202.
    assert!(s.get("/nowhere").header("x-request-id").is_some());
    assert!(s.head("/v2/").header("x-request-id").is_some());
    assert!(s.post(&format!("/v2/{}/blobs/uploads/", unique("rid"))).header("x-request-id").is_some());
}

#[test]
fn json_request_logs_parse_and_hold_no_secrets() {
    if skip_if_external("json_request_logs_parse_and_hold_no_secrets") {
        return;
    }
    let (s, _dir) = auth_server(&["--log-format", "json"]);
    let auth = basic();
    let repo = unique("logs");
    // The token dance, as docker does it.
    s.get("/v2/").expect(401);
    let r = s.get_h(&format!("/token?scope=repository:{repo}:pull,push"), &[("Authorization", &auth)]);
    r.expect(200);
    let token = r.json()["token"].as_str().unwrap().to_string();
    let bearer = format!("Bearer {token}");
    let data = random_bytes(unique_seed(), 777);
    let digest = sha256(&data);
    let r = s.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &[("Authorization", &bearer)], Body::Bytes(&[]));
    r.expect(202);
    let loc = r.location(&s);
    let r = s.request("PATCH", &loc, &[("Authorization", &bearer), ("Content-Type", "application/octet-stream")], Body::Bytes(&data));
    r.expect(202);
    let loc = r.location(&s);
    s.request("PUT", &with_query(&loc, &format!("digest={digest}")), &[("Authorization", &bearer)], Body::Bytes(&[])).expect(201);
    let r = s.get_h(&format!("/v2/{repo}/blobs/{digest}"), &[("Authorization", &auth), ("X-Request-Id", "pull-of-blob")]);
    r.expect(200);
    s.get_h(&format!("/v2/{repo}/blobs/{digest}"), &[("Authorization", "Basic YWxpY2U6d3Jvbmc=")]).expect(401);
    s.get("/health").expect(200);
    let form = format!("grant_type=password&username=alice&password={PASSWORD}&scope=repository:{repo}:pull");
    s.request("POST", "/token", &[("Content-Type", "application/x-www-form-urlencoded")], Body::Bytes(form.as_bytes())).expect(200);

    let lines = log_lines(&s, 9);
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for r in &records {
        let time = r["time"].as_str().unwrap_or_else(|| panic!("no time: {r}"));
        assert!(time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".", "{time}");
        for field in ["request_id", "method", "route", "user"] {
            assert!(r[field].is_string(), "{field} in {r}");
        }
        for field in ["status", "duration_ms"] {
            assert!(r[field].is_u64(), "{field} in {r}");
        }
        assert_eq!(r["client"], "127.0.0.1", "{r}");
    }
    let kinds: Vec<&str> = records.iter().map(|r| r["route"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["base", "token", "upload", "upload", "upload", "blob", "blob", "health", "token"], "{lines:#?}");
    assert_eq!((records[0]["status"].as_u64(), records[0]["user"].as_str()), (Some(401), Some("anonymous")));
    assert_eq!(records[1]["user"], "alice");
    assert_eq!(records[3]["bytes_in"], data.len());
    assert_eq!(records[3]["repository"], repo.as_str());
    let pull = &records[5];
    assert_eq!(pull["request_id"], "pull-of-blob");
    assert_eq!((pull["method"].as_str(), pull["status"].as_u64()), (Some("GET"), Some(200)));
    assert_eq!((pull["repository"].as_str(), pull["digest"].as_str()), (Some(repo.as_str()), Some(digest.as_str())));
    assert_eq!((pull["bytes_out"].as_u64(), pull["user"].as_str()), (Some(data.len() as u64), Some("alice")));
    assert_eq!((records[6]["status"].as_u64(), records[6]["user"].as_str()), (Some(401), Some("anonymous")));
    assert_eq!(records[8]["user"], "alice");

    let everything = format!("{}\n{}", s.stdout_text(), s.stderr_text());
    let upload_id = path_of(&loc).rsplit('/').next().unwrap().to_string();
    for secret in [PASSWORD, token.as_str(), &auth, "Bearer", "Basic", "YWxpY2U6d3Jvbmc=", SECRET, upload_id.as_str()] {
        assert!(!everything.contains(secret), "the logs contain {secret:?}:\n{everything}");
    }
    // No query string at all (presigned URLs' signatures, upload state and scopes live there).
    let requests = s.stdout_text();
    for query in ["?", "X-Amz-Signature", "sig=", "digest=", "scope="] {
        assert!(!requests.contains(query), "the request log contains {query:?}:\n{requests}");
    }
}

#[test]
fn text_request_logs_by_default_and_json_by_environment() {
    if skip_if_external("text_request_logs_by_default_and_json_by_environment") {
        return;
    }
    let s = Server::start_memory(&[]);
    s.get_h("/v2/", &[("X-Request-Id", "text-line-1")]).expect(200);
    s.get("/v2/a/manifests/latest").expect(404);
    let lines = log_lines(&s, 2);
    // `<time> <client> <user> "<method> <route>[ <repository>[:<tag>|@<digest>]]" <status> in=<n> out=<n> <ms>ms id=<id>`
    assert!(lines[0].contains(" 127.0.0.1 anonymous \"GET base\" 200 in=- out=2 "), "{}", lines[0]);
    assert!(lines[0].ends_with("ms id=text-line-1"), "{}", lines[0]);
    assert!(lines[1].contains("\"GET manifest a:latest\" 404 "), "{}", lines[1]);
    assert!(serde_json::from_str::<Value>(&lines[0]).is_err());

    let s = Server::start_with_env(&[("PIER_LOG_FORMAT", "json")], &[]);
    s.get("/v2/").expect(200);
    let line = &log_lines(&s, 1)[0];
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!((v["route"].as_str(), v["status"].as_u64()), (Some("base"), Some(200)));
}

#[test]
fn bad_log_format_stops_the_server() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["serve", "--memory", "--addr", "127.0.0.1:0", "--log-format", "xml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log-format"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pier"))
        .args(["serve", "--memory", "--addr", "127.0.0.1:0"])
        .env("REGISTRY_STORAGE_MAINTENANCE_READONLY", "{enabled: perhaps}")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REGISTRY_STORAGE_MAINTENANCE_READONLY"));
}
