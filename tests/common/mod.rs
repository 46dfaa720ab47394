//! Shared helpers for the HTTP-level integration tests.
//!
//! `Server` starts the native `pier` binary on a free port with a fresh storage directory and kills it (by PID) when
//! dropped. If `PIER_TEST_URL` is set, no process is started and every request goes to that URL instead, so the same
//! suite can run against `wrangler dev` or a wasi:http host. `Resp` is one response shape for success and error
//! statuses alike; every response is checked for the `Docker-Distribution-API-Version` header as it arrives.
//! The rest are small builders: digests, deterministic random bytes, blob and manifest pushes, raw TCP requests for
//! paths a URL parser would normalise away.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256, Sha512};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const ALL_MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The `pier` binary under test: cargo's, or `PIER_TEST_BIN` (a copy kept aside when several worktrees share one
/// target directory and another build may replace cargo's binary while the tests run).
pub fn pier_bin() -> PathBuf {
    match std::env::var_os("PIER_TEST_BIN").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_BIN_EXE_pier")),
    }
}

/// A running registry under test: a child `pier` process, or the external one named by `PIER_TEST_URL`.
pub struct Server {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    child: Option<Child>,
    root: Option<tempfile::TempDir>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// What the server printed on stdout after its listening line (request logs), the tail.
    stdout: Arc<Mutex<Vec<u8>>>,
    agent: ureq::Agent,
}

/// True when the suite runs against an external server (`PIER_TEST_URL`).
pub fn external() -> bool {
    std::env::var("PIER_TEST_URL")
        .map(|u| !u.trim().is_empty())
        .unwrap_or(false)
}

/// Returns true (and says so) when a test that needs its own server flags must be skipped.
pub fn skip_if_external(test: &str) -> bool {
    if external() {
        eprintln!("skipping {test}: needs its own server flags but PIER_TEST_URL is set");
        return true;
    }
    false
}

fn new_agent() -> ureq::Agent {
    agent_trusting(None)
}

/// An HTTP client; with `ca_pem`, one that trusts exactly that CA for `https://` URLs (the TLS tests make their own).
pub fn agent_trusting(ca_pem: Option<&str>) -> ureq::Agent {
    let mut builder = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(60));
    if let Some(pem) = ca_pem {
        builder = builder.tls_config(tls_client_config(pem));
    }
    builder.build()
}

/// A rustls client configuration (ring, like the server) trusting the CA certificates in `ca_pem`.
pub fn tls_client_config(ca_pem: &str) -> Arc<tokio_rustls::rustls::ClientConfig> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Runs `pier serve ARGS` with `env`, expecting it to stop by itself (a bad configuration): its exit status and
/// everything it wrote to stderr. Panics if it is still running after 30 s (it is killed by PID first).
pub fn serve_until_exit(args: &[&str], env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(pier_bin())
        .arg("serve")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pier binary");
    let deadline = std::time::Instant::now() + STARTUP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for pier") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status, err);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("pier serve {args:?} did not stop by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    /// Starts a server with filesystem storage in a fresh temporary directory (or uses `PIER_TEST_URL`).
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts a server with filesystem storage in a fresh temporary directory and extra flags.
    pub fn start_with(args: &[&str]) -> Server {
        if let Some(server) = Self::external_server() {
            return server;
        }
        let dir = tempfile::TempDir::new().expect("create temp dir");
        let mut server = Self::spawn(Some(dir.path()), args);
        server.root = Some(dir);
        server
    }

    /// Starts a server with in-memory storage.
    pub fn start_memory(args: &[&str]) -> Server {
        if let Some(server) = Self::external_server() {
            return server;
        }
        let mut all = vec!["--memory"];
        all.extend_from_slice(args);
        Self::spawn(None, &all)
    }

    /// Starts a server on an existing root directory owned by the caller (for restart tests).
    pub fn start_in(root: &Path, args: &[&str]) -> Server {
        Self::spawn(Some(root), args)
    }

    /// Starts a server with in-memory storage, extra environment variables (e.g. access-control settings) and
    /// extra flags. Never uses `PIER_TEST_URL`: these tests need their own settings.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> Server {
        let mut all = vec!["--memory"];
        all.extend_from_slice(args);
        Self::spawn_env(None, &all, env)
    }

    /// Starts a server with exactly these settings: a filesystem root (or none, leaving storage to `env` and `args`),
    /// environment variables and flags. Never uses `PIER_TEST_URL`.
    pub fn start_custom(root: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Server {
        Self::spawn_env(root, args, env)
    }

    /// What the spawned server wrote to stdout after its listening line so far (request logs; the tail).
    pub fn stdout_text(&self) -> String {
        self.stdout.lock().map(|b| String::from_utf8_lossy(&b).to_string()).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the spawned server's stderr holds `needle`, and returns all of it so far. Its stderr
    /// is read by a thread, so what it wrote before its listening line may not have arrived yet when it starts.
    #[track_caller]
    pub fn wait_stderr(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stderr_text();
            if text.contains(needle) {
                return text;
            }
            assert!(std::time::Instant::now() < deadline, "pier's stderr never said {needle:?}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the spawned server wrote to stderr so far (the tail).
    pub fn stderr_text(&self) -> String {
        self.stderr.lock().map(|b| String::from_utf8_lossy(&b).to_string()).unwrap_or_default()
    }

    /// A server someone else started at `url` (never stopped by the test).
    pub fn external_at(url: &str) -> Server {
        Server {
            base: url.trim().trim_end_matches('/').to_string(),
            child: None,
            root: None,
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Arc::new(Mutex::new(Vec::new())),
            agent: new_agent(),
        }
    }

    /// A server someone else started at an `https://` `url`, reached by a client trusting `ca_pem`.
    pub fn external_at_trusting(url: &str, ca_pem: &str) -> Server {
        let mut server = Self::external_at(url);
        server.agent = agent_trusting(Some(ca_pem));
        server
    }

    fn external_server() -> Option<Server> {
        let url = std::env::var("PIER_TEST_URL").ok()?;
        let url = url.trim().trim_end_matches('/').to_string();
        if url.is_empty() {
            return None;
        }
        Some(Server {
            base: url,
            child: None,
            root: None,
            stderr: Arc::new(Mutex::new(Vec::new())),
            stdout: Arc::new(Mutex::new(Vec::new())),
            agent: new_agent(),
        })
    }

    fn spawn(root: Option<&Path>, args: &[&str]) -> Server {
        Self::spawn_env(root, args, &[])
    }

    /// Starts `pier serve` with exactly these arguments (no `--addr` or storage flag added) and environment, in
    /// `cwd` if given; `ca_pem` makes the test's client trust that CA, for a server that listens on `https://`.
    /// Never uses `PIER_TEST_URL`.
    pub fn start_serve(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>, ca_pem: Option<&str>) -> Server {
        let mut cmd = Command::new(pier_bin());
        cmd.arg("serve").args(args).envs(env.iter().copied());
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        Self::launch(cmd, &format!("{args:?}"), ca_pem)
    }

    fn spawn_env(root: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(pier_bin());
        cmd.envs(env.iter().copied());
        cmd.arg("serve").arg("--addr").arg("127.0.0.1:0");
        if let Some(root) = root {
            cmd.arg("--root").arg(root);
        }
        cmd.args(args);
        Self::launch(cmd, &format!("{args:?}"), None)
    }

    /// Runs `cmd` (a `pier serve`), waits for its listening line and returns the server at that address; an
    /// address on every interface (`0.0.0.0`) is reached through 127.0.0.1.
    fn launch(mut cmd: Command, args: &str, ca_pem: Option<&str>) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn pier binary");

        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut err) = child.stderr.take() {
            let buf = Arc::clone(&stderr_buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 4096];
                while let Ok(n) = err.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut b) = buf.lock() {
                        b.extend_from_slice(&chunk[..n]);
                        // Keep the tail only.
                        if b.len() > 256 * 1024 {
                            let cut = b.len() - 128 * 1024;
                            b.drain(..cut);
                        }
                    }
                }
            });
        }

        let stdout = child.stdout.take().expect("child stdout");
        let stdout_buf = Arc::new(Mutex::new(Vec::new()));
        let out_buf = Arc::clone(&stdout_buf);
        let (tx, rx) = mpsc::channel::<Option<String>>();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut first = String::new();
            match reader.read_line(&mut first) {
                Ok(n) if n > 0 => {
                    let _ = tx.send(Some(first));
                }
                _ => {
                    let _ = tx.send(None);
                    return;
                }
            }
            // Keep draining so the child never blocks on a full pipe, and keep the tail for tests of request logs.
            let mut sink = [0u8; 4096];
            while let Ok(n) = reader.read(&mut sink) {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = out_buf.lock() {
                    b.extend_from_slice(&sink[..n]);
                    if b.len() > 1024 * 1024 {
                        let cut = b.len() - 512 * 1024;
                        b.drain(..cut);
                    }
                }
            }
        });

        let line = rx.recv_timeout(STARTUP_TIMEOUT);
        let line = match line {
            Ok(Some(line)) => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let err = String::from_utf8_lossy(&stderr_buf.lock().unwrap()).to_string();
                panic!("pier did not print its listening line ({other:?}); args {args}; stderr:\n{err}");
            }
        };
        let line = line.trim();
        let prefix = "pier listening on ";
        let base = line
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("unexpected first stdout line from pier: {line:?}"))
            .trim_end_matches('/')
            .replace("://0.0.0.0:", "://127.0.0.1:");
        assert!(
            base.starts_with("http://127.0.0.1:") || base.starts_with("https://127.0.0.1:"),
            "unexpected listening URL {base:?}"
        );

        Server {
            base,
            child: Some(child),
            root: None,
            stderr: stderr_buf,
            stdout: stdout_buf,
            agent: agent_trusting(ca_pem),
        }
    }

    /// The storage root of a spawned filesystem server.
    pub fn root(&self) -> Option<PathBuf> {
        self.root.as_ref().map(|d| d.path().to_path_buf())
    }

    /// Absolute URL for a path (`/v2/...`) or an already absolute URL.
    pub fn url(&self, target: &str) -> String {
        if target.starts_with("http://") || target.starts_with("https://") {
            target.to_string()
        } else if target.starts_with('/') {
            format!("{}{}", self.base, target)
        } else {
            format!("{}/{}", self.base, target)
        }
    }

    /// Sends a request through ureq and returns the response whatever its status.
    pub fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Resp {
        let url = self.url(target);
        let mut req = self.agent.request(method, &url);
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let desc = format!("{method} {url}");
        let result = match body {
            Body::None => req.call(),
            Body::Bytes(b) => req.send_bytes(b),
            Body::Chunked(b) => req.send(std::io::Cursor::new(b.to_vec())),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => panic!("{desc}: transport error: {t}"),
        };
        let resp = Resp::from_ureq(desc, method, response);
        resp.check_api_version();
        resp
    }

    pub fn get(&self, target: &str) -> Resp {
        self.request("GET", target, &[], Body::None)
    }
    pub fn get_h(&self, target: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("GET", target, headers, Body::None)
    }
    pub fn head(&self, target: &str) -> Resp {
        self.request("HEAD", target, &[], Body::None)
    }
    pub fn head_h(&self, target: &str, headers: &[(&str, &str)]) -> Resp {
        self.request("HEAD", target, headers, Body::None)
    }
    pub fn delete(&self, target: &str) -> Resp {
        self.request("DELETE", target, &[], Body::None)
    }
    /// POST with an empty body (`Content-Length: 0`, as the spec asks when starting a session).
    pub fn post(&self, target: &str) -> Resp {
        self.request("POST", target, &[], Body::Bytes(&[]))
    }
    pub fn post_bytes(&self, target: &str, body: &[u8]) -> Resp {
        self.request(
            "POST",
            target,
            &[("Content-Type", "application/octet-stream")],
            Body::Bytes(body),
        )
    }
    pub fn put_bytes(&self, target: &str, body: &[u8]) -> Resp {
        self.request(
            "PUT",
            target,
            &[("Content-Type", "application/octet-stream")],
            Body::Bytes(body),
        )
    }
    pub fn patch_bytes(&self, target: &str, body: &[u8]) -> Resp {
        self.request(
            "PATCH",
            target,
            &[("Content-Type", "application/octet-stream")],
            Body::Bytes(body),
        )
    }
    /// PATCH with an explicit `Content-Range: start-end` (inclusive) for `body`.
    pub fn patch_range(&self, target: &str, start: usize, body: &[u8]) -> Resp {
        let end = (start + body.len()).saturating_sub(1);
        let range = format!("{start}-{end}");
        self.request(
            "PATCH",
            target,
            &[
                ("Content-Type", "application/octet-stream"),
                ("Content-Range", &range),
            ],
            Body::Bytes(body),
        )
    }

    /// Sends a raw HTTP/1.1 request over TCP: the path is sent exactly as given (no URL normalisation).
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let hostport = self
            .base
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("raw requests need an http:// base URL, got {}", self.base))
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let mut head =
            format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
        let mut has_len = false;
        for (k, v) in headers {
            if k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding")
            {
                has_len = true;
            }
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len && (!body.is_empty() || matches!(method, "PUT" | "POST" | "PATCH")) {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");

        let stream = TcpStream::connect(&hostport).expect("connect for raw request");
        stream.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut writer = stream.try_clone().expect("clone tcp stream");
        let mut payload = head.into_bytes();
        payload.extend_from_slice(body);
        // Write in a thread so a server that answers early (e.g. 413) does not deadlock us.
        let w = std::thread::spawn(move || {
            for chunk in payload.chunks(64 * 1024) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
            let _ = writer.flush();
        });
        let mut data = Vec::new();
        let mut reader = stream;
        let mut buf = [0u8; 16 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    data.extend_from_slice(&buf[..n]);
                    if raw_response_complete(&data, method) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let _ = reader.shutdown(std::net::Shutdown::Both);
        let _ = w.join();
        let desc = format!("RAW {method} {}{path}", self.base);
        let resp = Resp::from_raw(desc, method, &data);
        resp.check_api_version();
        resp
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Kill exactly our child by its PID, then reap it.
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            if let Ok(buf) = self.stderr.lock() {
                if !buf.is_empty() {
                    let text = String::from_utf8_lossy(&buf);
                    let tail: String = text
                        .chars()
                        .rev()
                        .take(8000)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    eprintln!("---- pier stderr (tail) ----\n{tail}\n----------------------------");
                }
            }
        }
        // The TempDir (if any) is removed when `self.root` drops.
    }
}

/// A request body.
pub enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// Sent with `Transfer-Encoding: chunked` and no `Content-Length`.
    Chunked(&'a [u8]),
}

/// One HTTP response, whatever its status.
#[derive(Debug, Clone)]
pub struct Resp {
    /// `METHOD URL`, for assertion messages.
    pub desc: String,
    pub status: u16,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    fn from_ureq(desc: String, method: &str, r: ureq::Response) -> Resp {
        let status = r.status();
        let mut headers = Vec::new();
        for name in r.headers_names() {
            for v in r.all(&name) {
                headers.push((name.to_ascii_lowercase(), v.to_string()));
            }
        }
        let mut body = Vec::new();
        if method != "HEAD" {
            let _ = r
                .into_reader()
                .take(64 * 1024 * 1024)
                .read_to_end(&mut body);
        }
        Resp {
            desc,
            status,
            headers,
            body,
        }
    }

    fn from_raw(desc: String, method: &str, data: &[u8]) -> Resp {
        let split = find(data, b"\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "{desc}: no complete HTTP response head in {:?}",
                String::from_utf8_lossy(data)
            )
        });
        let head = String::from_utf8_lossy(&data[..split]).to_string();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{desc}: bad status line {status_line:?}"));
        let mut headers = Vec::new();
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let rest = &data[split + 4..];
        let mut resp = Resp {
            desc,
            status,
            headers,
            body: Vec::new(),
        };
        if method == "HEAD" || status == 204 || status == 304 {
            return resp;
        }
        if resp
            .header("transfer-encoding")
            .map(|v| v.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
        {
            resp.body = dechunk(rest);
        } else if let Some(len) = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            resp.body = rest[..len.min(rest.len())].to_vec();
        } else {
            resp.body = rest.to_vec();
        }
        resp
    }

    /// First value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header that must be present.
    pub fn must_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("{}: missing header {name}; {}", self.desc, self.summary()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}: body is not JSON ({e}): {}", self.desc, self.summary()))
    }

    /// Status, headers and the start of the body, for messages.
    pub fn summary(&self) -> String {
        let mut body = self.text();
        if body.len() > 600 {
            body.truncate(600);
            body.push('…');
        }
        format!(
            "status {} headers {:?} body {:?}",
            self.status, self.headers, body
        )
    }

    /// Asserts the status code.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Resp {
        assert_eq!(
            self.status,
            status,
            "{}: expected {status}, got {}",
            self.desc,
            self.summary()
        );
        self
    }

    fn check_api_version(&self) {
        let v = self.header("docker-distribution-api-version");
        assert_eq!(
            v,
            Some("registry/2.0"),
            "{}: every response must carry Docker-Distribution-API-Version: registry/2.0; {}",
            self.desc,
            self.summary()
        );
    }

    /// The `code`s of an OCI error body; panics if the body is not a well-formed OCI error.
    #[track_caller]
    pub fn error_codes(&self) -> Vec<String> {
        let ct = self.header("content-type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{}: error responses must be application/json; {}",
            self.desc,
            self.summary()
        );
        let v: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: error body is not JSON ({e}); {}",
                self.desc,
                self.summary()
            )
        });
        let errors = v
            .get("errors")
            .and_then(|e| e.as_array())
            .unwrap_or_else(|| {
                panic!(
                    "{}: error body has no errors array; {}",
                    self.desc,
                    self.summary()
                )
            });
        assert!(
            !errors.is_empty(),
            "{}: empty errors array; {}",
            self.desc,
            self.summary()
        );
        errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{}: error without a string code; {}",
                        self.desc,
                        self.summary()
                    )
                });
                assert!(
                    e.get("message").map(|m| m.is_string()).unwrap_or(false),
                    "{}: error without a string message; {}",
                    self.desc,
                    self.summary()
                );
                code.to_string()
            })
            .collect()
    }

    /// Asserts status and that the OCI error body contains `code`.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Resp {
        self.expect(status);
        let codes = self.error_codes();
        assert!(
            codes.iter().any(|c| c == code),
            "{}: expected error code {code}, got {codes:?}; {}",
            self.desc,
            self.summary()
        );
        self
    }

    /// Asserts a status below 500 with a well-formed OCI error body.
    #[track_caller]
    pub fn expect_client_error(&self) -> &Resp {
        assert!(
            (400..500).contains(&self.status),
            "{}: expected a 4xx, got {}",
            self.desc,
            self.summary()
        );
        self.error_codes();
        self
    }

    /// The `Location` header resolved against `base` (keeps its query string).
    #[track_caller]
    pub fn location(&self, server: &Server) -> String {
        resolve(&server.base, self.must_header("location"))
    }

    /// The target of a `Link: <...>; rel="next"` header, if any.
    pub fn next_link(&self) -> Option<String> {
        let link = self.header("link")?;
        let (target, params) = link.split_once('>')?;
        let target = target.trim().strip_prefix('<')?;
        assert!(
            params.replace(' ', "").contains("rel=\"next\""),
            "{}: Link header without rel=\"next\": {link:?}",
            self.desc
        );
        Some(target.to_string())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn raw_response_complete(data: &[u8], method: &str) -> bool {
    let Some(split) = find(data, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..split]).to_ascii_lowercase();
    let body = &data[split + 4..];
    if method == "HEAD" {
        return true;
    }
    if head.starts_with("http/1.1 204") || head.starts_with("http/1.1 304") {
        return true;
    }
    for line in head.split("\r\n") {
        if let Some(v) = line.strip_prefix("content-length:") {
            if let Ok(n) = v.trim().parse::<usize>() {
                return body.len() >= n;
            }
        }
        if line.starts_with("transfer-encoding:") && line.contains("chunked") {
            return find(body, b"0\r\n\r\n").is_some();
        }
    }
    false
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = find(data, b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]).to_string();
        let size =
            usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            out.extend_from_slice(&data[..size.min(data.len())]);
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Resolves a `Location` value (absolute URL, absolute path, or relative) against the base URL.
pub fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        location.to_string()
    } else if location.starts_with('/') {
        format!("{base}{location}")
    } else {
        format!("{base}/v2/{location}")
    }
}

/// Appends a query parameter to a URL that may already have a query string.
pub fn with_query(url: &str, param: &str) -> String {
    if url.contains('?') {
        if url.ends_with('?') || url.ends_with('&') {
            format!("{url}{param}")
        } else {
            format!("{url}&{param}")
        }
    } else {
        format!("{url}?{param}")
    }
}

/// The path part (no scheme/host, no query) of a URL or path.
pub fn path_of(url: &str) -> String {
    let no_scheme = url
        .split_once("://")
        .map(|(_, r)| r.find('/').map(|i| &r[i..]).unwrap_or("/"))
        .unwrap_or(url);
    no_scheme.split('?').next().unwrap_or("").to_string()
}

/// Query parameters of a URL or path (not percent-decoded beyond `%3A`/`%3a`).
pub fn query_params(url: &str) -> Vec<(String, String)> {
    let Some((_, q)) = url.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                k.to_string(),
                v.replace("%3A", ":")
                    .replace("%3a", ":")
                    .replace("%2F", "/")
                    .replace("%2f", "/"),
            )
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex(&Sha512::digest(data)))
}

/// Deterministic pseudo-random bytes (xorshift64).
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A repository name unique across tests and runs: `<prefix>-<nanos><counter>` (prefix must be a valid name).
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}{n}", nanos % 1_000_000_000_000)
}

/// A unique seed for random content, so concurrent tests against a shared server never collide on digests.
pub fn unique_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 48) ^ (std::process::id() as u64) << 32
}

/// Starts an upload session; returns the absolute session URL (with its query string).
#[track_caller]
pub fn start_upload(server: &Server, repo: &str) -> String {
    let r = server.post(&format!("/v2/{repo}/blobs/uploads/"));
    r.expect(202);
    r.location(server)
}

/// Pushes a blob with POST + monolithic PUT; returns its sha256 digest.
#[track_caller]
pub fn push_blob(server: &Server, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let loc = start_upload(server, repo);
    let r = server.put_bytes(&with_query(&loc, &format!("digest={digest}")), data);
    r.expect(201);
    digest
}

/// The empty-JSON config blob `{}`, pushed.
#[track_caller]
pub fn push_empty_blob(server: &Server, repo: &str) -> String {
    let d = push_blob(server, repo, b"{}");
    assert_eq!(d, EMPTY_DIGEST);
    d
}

/// PUTs a manifest and returns the response (any status).
pub fn put_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> Resp {
    server.request(
        "PUT",
        &format!("/v2/{repo}/manifests/{reference}"),
        &[("Content-Type", media_type)],
        Body::Bytes(body),
    )
}

/// PUTs a manifest, asserts 201 and the returned digest; returns the digest.
#[track_caller]
pub fn push_manifest(
    server: &Server,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> String {
    let r = put_manifest(server, repo, reference, media_type, body);
    r.expect(201);
    let digest = sha256(body);
    assert_eq!(
        r.header("docker-content-digest"),
        Some(digest.as_str()),
        "{}: {}",
        r.desc,
        r.summary()
    );
    digest
}

/// A descriptor JSON value.
pub fn descriptor(media_type: &str, digest: &str, size: usize) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// Serialises a JSON value to bytes (pretty, so the bytes differ from any canonical form).
pub fn to_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

/// An image pushed with its config and one layer.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub config: String,
    pub layer: String,
    pub media_type: String,
}

impl Image {
    /// A descriptor of this manifest.
    pub fn descriptor(&self) -> Value {
        descriptor(&self.media_type, &self.digest, self.bytes.len())
    }
}

/// Builds an OCI image manifest over existing blobs.
pub fn oci_manifest(config: (&str, &str, usize), layers: &[(&str, usize)]) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(config.0, config.1, config.2),
        "layers": layers.iter().map(|(d, s)| descriptor(OCI_LAYER, d, *s)).collect::<Vec<_>>(),
    })
}

/// Pushes a config blob, a layer blob and an OCI image manifest under `reference`.
#[track_caller]
pub fn push_image(server: &Server, repo: &str, reference: &str, seed: u64) -> Image {
    let config_bytes = to_bytes(&json!({
        "architecture": "amd64", "os": "linux", "seed": seed,
        "rootfs": {"type": "layers", "diff_ids": []}
    }));
    let layer_bytes = random_bytes(seed, 300 + (seed % 200) as usize);
    let config = push_blob(server, repo, &config_bytes);
    let layer = push_blob(server, repo, &layer_bytes);
    let manifest = oci_manifest(
        (OCI_CONFIG, &config, config_bytes.len()),
        &[(&layer, layer_bytes.len())],
    );
    let bytes = to_bytes(&manifest);
    let digest = push_manifest(server, repo, reference, OCI_MANIFEST, &bytes);
    Image {
        digest,
        bytes,
        config,
        layer,
        media_type: OCI_MANIFEST.to_string(),
    }
}

/// Pushes an artifact manifest (empty config) with an optional subject; returns (digest, bytes).
#[track_caller]
pub fn push_artifact(
    server: &Server,
    repo: &str,
    artifact_type: &str,
    subject: Option<&Value>,
    annotations: Option<Value>,
    seed: u64,
) -> (String, Vec<u8>) {
    push_empty_blob(server, repo);
    let layer_bytes = random_bytes(seed, 64);
    let layer = push_blob(server, repo, &layer_bytes);
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, EMPTY_DIGEST, 2),
        "layers": [descriptor("application/octet-stream", &layer, layer_bytes.len())],
    });
    if let Some(s) = subject {
        m["subject"] = s.clone();
    }
    if let Some(a) = annotations {
        m["annotations"] = a;
    }
    let bytes = to_bytes(&m);
    let digest = sha256(&bytes);
    let r = put_manifest(server, repo, &digest, OCI_MANIFEST, &bytes);
    r.expect(201);
    (digest, bytes)
}

/// Pulls every page of a paginated list endpoint by following `Link` headers; returns the JSON arrays found under
/// `key`, page by page.
#[track_caller]
pub fn follow_pages(server: &Server, first: &str, key: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(first.to_string());
    let mut guard = 0;
    while let Some(target) = next {
        guard += 1;
        assert!(guard < 1000, "pagination does not terminate");
        let r = server.get(&target);
        r.expect(200);
        let v = r.json();
        pages.push(strings(&v[key]));
        next = r.next_link();
    }
    pages
}

/// A JSON array of strings as a Vec (null → empty).
#[track_caller]
pub fn strings(v: &Value) -> Vec<String> {
    if v.is_null() {
        return Vec::new();
    }
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|s| {
            s.as_str()
                .unwrap_or_else(|| panic!("expected a string, got {s}"))
                .to_string()
        })
        .collect()
}
