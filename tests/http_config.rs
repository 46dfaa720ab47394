//! `pier serve --config FILE` with registry:2's configuration files, the fixtures in `tests/fixtures/registry2/`:
//! the Azure China setup (parses into the China endpoint; the server starts without contacting it), an htpasswd
//! setup (relative and absolute `auth.htpasswd.path`: the server enforces access control under the file's realm),
//! a notifications block (endpoints parsed and listed; the registry works), and the configuration registry:2's image
//! ships (`http.addr: :5000` on every interface, known-but-ignored keys warned about). Each startable fixture gets
//! its port rewritten to a free one and its root directory to a temporary one, then a push/pull round trip. Also:
//! an environment variable overrides the file, an unknown key is warned about by name, and a bad value stops the
//! server with a message naming the key. Every test needs its own server, so none runs against `PIER_TEST_URL`.

mod common;

use common::*;
use pier::auth::htpasswd::hash_password;
use pier::config_file::ConfigFile;
use pier::notifications::NotificationsConfig;
use pier::storage::config::StorageConfig;
use std::path::{Path, PathBuf};

const PASSWORD: &str = "config-file-Pa55word";

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/registry2").join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `text` with each `(from, to)` replaced, checking that every `from` was there.
fn rewrite(text: &str, replacements: &[(&str, &str)]) -> String {
    let mut out = text.to_string();
    for (from, to) in replacements {
        assert!(out.contains(from), "{from:?} not in the fixture");
        out = out.replace(from, to);
    }
    out
}

/// A directory holding `config.yml` with `text`.
fn config_dir(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_string_lossy().into_owned())
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Push a blob and a manifest with `Authorization: auth` (Basic straight to /v2/), then pull them back.
#[track_caller]
fn authenticated_round_trip(s: &Server, auth: &str, repo: &str) {
    let with = [("Authorization", auth)];
    let layer = random_bytes(unique_seed(), 2048);
    let digest = sha256(&layer);
    let r = s.request("POST", &format!("/v2/{repo}/blobs/uploads/"), &with, Body::Bytes(&[]));
    r.expect(202);
    let put = with_query(&r.location(s), &format!("digest={digest}"));
    s.request("PUT", &put, &[("Authorization", auth), ("Content-Type", "application/octet-stream")], Body::Bytes(&layer)).expect(201);
    let config = push_config(s, auth, repo);
    let manifest = to_bytes(&oci_manifest((OCI_CONFIG, &config.0, config.1), &[(&digest, layer.len())]));
    s.request("PUT", &format!("/v2/{repo}/manifests/v1"), &[("Authorization", auth), ("Content-Type", OCI_MANIFEST)], Body::Bytes(&manifest))
        .expect(201);
    let r = s.request("GET", &format!("/v2/{repo}/manifests/v1"), &[("Authorization", auth), ("Accept", OCI_MANIFEST)], Body::None);
    r.expect(200);
    assert_eq!(r.body, manifest);
    let r = s.request("GET", &format!("/v2/{repo}/blobs/{digest}"), &with, Body::None);
    r.expect(200);
    assert_eq!(r.body, layer);
}

fn push_config(s: &Server, auth: &str, repo: &str) -> (String, usize) {
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let digest = sha256(config);
    let r = s.request("POST", &format!("/v2/{repo}/blobs/uploads/?digest={digest}"), &[("Authorization", auth), ("Content-Type", "application/octet-stream")], Body::Bytes(config));
    r.expect(201);
    (digest, config.len())
}

#[test]
fn azure_china_fixture_gives_the_china_endpoint() {
    let file = ConfigFile::read(&fixture_path("azure-china.yml")).unwrap();
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let StorageConfig::Azure(azure) = StorageConfig::from_lookup(|k| file.get(k)).unwrap() else { panic!("not azure") };
    assert_eq!(azure.realm, "core.chinacloudapi.cn");
    assert_eq!((azure.account_name.as_str(), azure.container.as_str()), ("pierchina", "registry"));
    assert_eq!(azure.endpoint().unwrap().host(), "pierchina.blob.core.chinacloudapi.cn");
    // The same as the `docker run -e REGISTRY_STORAGE=azure …` line it stands for.
    let env = [
        ("REGISTRY_STORAGE", "azure"),
        ("REGISTRY_STORAGE_AZURE_ACCOUNTNAME", "pierchina"),
        ("REGISTRY_STORAGE_AZURE_ACCOUNTKEY", "cGllci10ZXN0LWtleS1ub3QtYS1zZWNyZXQ="),
        ("REGISTRY_STORAGE_AZURE_CONTAINER", "registry"),
        ("REGISTRY_STORAGE_AZURE_REALM", "core.chinacloudapi.cn"),
    ];
    let from_env = StorageConfig::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())).unwrap();
    assert_eq!(from_env, StorageConfig::Azure(azure));
    if skip_if_external("azure_china_fixture_gives_the_china_endpoint") {
        return;
    }
    // The server starts with it (storage is contacted per request only, and this test sends none).
    let s = Server::start_serve(&["--config", fixture_path("azure-china.yml").to_str().unwrap()], &[("PIER_ADDR", "127.0.0.1:0")], None, None);
    assert!(s.base.starts_with("http://127.0.0.1:"));
    let err = s.wait_stderr("pier: no access control");
    assert!(!err.contains("warning"), "{err}");
}

/// The htpasswd fixture in a fresh directory with a user file beside it; `absolute` rewrites the path to an
/// absolute one and starts the server from another directory.
fn htpasswd_server(absolute: bool) -> (Server, tempfile::TempDir, Vec<tempfile::TempDir>) {
    let root = tempfile::TempDir::new().unwrap();
    let users_dir = tempfile::TempDir::new().unwrap();
    let users = users_dir.path().join("htpasswd");
    std::fs::write(&users, format!("alice:{}\n", hash_password(PASSWORD.as_bytes(), 4, [9; 16]).unwrap())).unwrap();
    let port = free_port().to_string();
    let users_text = users.to_string_lossy().into_owned();
    let mut replacements = vec![("127.0.0.1:5000", format!("127.0.0.1:{port}")), ("/var/lib/registry", root.path().to_string_lossy().into_owned())];
    if absolute {
        replacements.push(("path: htpasswd", format!("path: {users_text}")));
    }
    let replacements: Vec<(&str, &str)> = replacements.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let text = rewrite(&fixture("htpasswd.yml"), &replacements);
    // Relative: the user file sits beside config.yml. Either way the server runs in another directory.
    let mut dirs = vec![users_dir];
    if absolute {
        dirs.push(tempfile::TempDir::new().unwrap());
    }
    let config = dirs[dirs.len() - 1].path().join("config.yml");
    std::fs::write(&config, text).unwrap();
    let s = Server::start_serve(&["--config", config.to_str().unwrap()], &[], Some(root.path()), None);
    assert_eq!(s.base, format!("http://127.0.0.1:{port}"));
    (s, root, dirs)
}

#[test]
fn htpasswd_fixture_enforces_access_control() {
    if skip_if_external("htpasswd_fixture_enforces_access_control") {
        return;
    }
    for absolute in [false, true] {
        let (s, root, _dirs) = htpasswd_server(absolute);
        s.wait_stderr("access control on (1 htpasswd users");
        s.get("/v2/").expect_error(401, "UNAUTHORIZED");
        s.post("/v2/team/app/blobs/uploads/").expect_error(401, "UNAUTHORIZED");
        let r = s.get_h("/token?scope=repository:team/app:pull", &[("Authorization", &basic("alice", "wrong"))]);
        r.expect_error(401, "UNAUTHORIZED");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Registry Realm\""), "auth.htpasswd.realm");
        let alice = basic("alice", PASSWORD);
        s.get_h("/v2/", &[("Authorization", &alice)]).expect(200);
        authenticated_round_trip(&s, &alice, &unique("team/app"));
        // log.formatter: json.
        let log = s.stdout_text();
        let line = log.lines().last().unwrap_or_default();
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "not a JSON log line: {line:?}");
        // storage.filesystem.rootdirectory was rewritten to `root`: the data is there.
        assert!(std::fs::read_dir(root.path()).unwrap().next().is_some(), "nothing stored under the root directory");
    }
}

#[test]
fn notifications_fixture_lists_its_endpoints_and_serves() {
    let file = ConfigFile::read(&fixture_path("notifications.yml")).unwrap();
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let n = NotificationsConfig::from_lookup(&|k| file.get(k)).unwrap();
    assert!(n.include_references);
    let names: Vec<&str> = n.endpoints.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["alistener", "audit", "retired"]);
    let listener = &n.endpoints[0];
    assert_eq!(listener.url, "https://my.listener.com/event");
    assert_eq!(listener.headers, [("Authorization".to_string(), "Bearer not-a-real-token".to_string())]);
    assert_eq!((listener.timeout.as_millis(), listener.threshold, listener.backoff.as_millis()), (1000, 10, 1000));
    assert_eq!(listener.ignored_actions, ["pull"]);
    assert_eq!(n.endpoints[1].timeout.as_millis(), 500);
    assert_eq!(n.endpoints[1].backoff.as_secs(), 30);
    assert!(n.endpoints[2].disabled);
    if skip_if_external("notifications_fixture_lists_its_endpoints_and_serves") {
        return;
    }
    let port = free_port().to_string();
    let (_dir, config) = config_dir(&rewrite(&fixture("notifications.yml"), &[("127.0.0.1:5000", &format!("127.0.0.1:{port}"))]));
    let s = Server::start_serve(&["--config", &config], &[], None, None);
    s.wait_stderr("notifications: 2 endpoint(s) (alistener, audit); events go through the outbox");
    let err = s.wait_stderr("pier: no access control");
    assert!(!err.contains("Bearer"), "a header value was logged: {err}");
    let repo = unique("notify/app");
    let img = push_image(&s, &repo, "v1", unique_seed());
    s.get_h(&format!("/v2/{repo}/manifests/{}", img.digest), &[("Accept", OCI_MANIFEST)]).expect(200);
}

/// The registry:2 image's own config.yml with the port and root directory rewritten.
fn classic_config(port: u16, root: &Path) -> (tempfile::TempDir, String) {
    let root = root.to_string_lossy();
    config_dir(&rewrite(&fixture("filesystem.yml"), &[("addr: :5000", &format!("addr: :{port}")), ("/var/lib/registry", &root)]))
}

#[test]
fn registry2_image_config_starts_and_serves() {
    if skip_if_external("registry2_image_config_starts_and_serves") {
        return;
    }
    let root = tempfile::TempDir::new().unwrap();
    let port = free_port();
    let (_dir, config) = classic_config(port, root.path());
    // `:PORT` is every interface: anonymous writes are refused there unless opened explicitly.
    let s = Server::start_serve(&["--config", &config], &[], None, None);
    assert_eq!(s.base, format!("http://127.0.0.1:{port}"));
    let err = s.wait_stderr("pier: no access control: reads are open, writes are refused");
    for ignored in ["log.fields is ignored", "storage.cache is ignored", "http.headers is ignored", "health is ignored"] {
        assert!(err.contains(&format!("pier: warning: {config}: {ignored}")), "{ignored:?} not in:\n{err}");
    }
    assert!(!err.contains("unknown key"), "{err}");
    s.get("/v2/").expect(200);
    s.post(&format!("/v2/{}/blobs/uploads/", unique("classic"))).expect_error(401, "UNAUTHORIZED");
    drop(s);

    let s = Server::start_serve(&["--config", &config], &[("PIER_ANONYMOUS_WRITE", "true")], None, None);
    let repo = unique("classic/app");
    let img = push_image(&s, &repo, "latest", unique_seed());
    let r = s.get_h(&format!("/v2/{repo}/manifests/latest"), &[("Accept", OCI_MANIFEST)]);
    r.expect(200);
    assert_eq!(r.body, img.bytes);
    s.get(&format!("/v2/{repo}/blobs/{}", img.layer)).expect(200);
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_some(), "nothing stored under the root directory");
}

#[test]
fn environment_variables_override_the_file() {
    if skip_if_external("environment_variables_override_the_file") {
        return;
    }
    let root = tempfile::TempDir::new().unwrap();
    let other_root = tempfile::TempDir::new().unwrap();
    let (_dir, config) = classic_config(free_port(), root.path());
    let other = other_root.path().to_string_lossy().into_owned();
    let env = [
        ("REGISTRY_HTTP_ADDR", "127.0.0.1:0"),
        ("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", other.as_str()),
        ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
    ];
    let s = Server::start_serve(&["--config", &config], &env, None, None);
    // On loopback (the variable's address, not the file's): anonymous writes are open.
    let repo = unique("override/app");
    let img = push_image(&s, &repo, "v1", unique_seed());
    s.delete(&format!("/v2/{repo}/manifests/{}", img.digest)).expect_error(405, "UNSUPPORTED");
    assert!(std::fs::read_dir(root.path()).unwrap().next().is_none(), "the file's root directory was used");
    assert!(std::fs::read_dir(other_root.path()).unwrap().next().is_some());
    drop(s);
    // Flags override both.
    let s = Server::start_serve(&["--config", &config, "--delete", "true"], &env, None, None);
    let img = push_image(&s, &repo, "v2", unique_seed());
    s.delete(&format!("/v2/{repo}/manifests/{}", img.digest)).expect(202);
}

#[test]
fn unknown_keys_are_warned_about_by_name() {
    if skip_if_external("unknown_keys_are_warned_about_by_name") {
        return;
    }
    // S3 on a closed port: the server starts (storage is contacted per request only) and this test sends none.
    let text = format!(
        "version: 0.1\nhttp:\n  addr: 127.0.0.1:0\n  colour: blue\nstorage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: us-east-1\n    \
         regionendpoint: http://127.0.0.1:{}\n    bucket: b\n    forcepathstyle: true\n    foo: bar\n  delete:\n    enabled: true\n",
        free_port()
    );
    let (_dir, config) = config_dir(&text);
    let s = Server::start_serve(&["--config", &config], &[], None, None);
    let err = s.wait_stderr("pier: no access control");
    assert!(err.contains(&format!("pier: warning: {config}: unknown key storage.s3.foo")), "{err}");
    assert!(err.contains(&format!("pier: warning: {config}: unknown key http.colour")), "{err}");
    assert!(!err.contains("bar") && !err.contains("SK"), "a value was printed: {err}");
}

#[test]
fn bad_values_stop_the_server_naming_the_key() {
    if skip_if_external("bad_values_stop_the_server_naming_the_key") {
        return;
    }
    let (_dir, config) = config_dir("version: 0.1\nstorage:\n  inmemory:\n  delete:\n    enabled: maybe\nhttp:\n  addr: 127.0.0.1:0\n");
    let (status, err) = serve_until_exit(&["--config", &config], &[]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{config}: storage.delete.enabled: expected true or false, got \"maybe\"")), "{err}");
    // The same value from the environment is named as the variable.
    let (status, err) = serve_until_exit(&["--config", &config], &[("REGISTRY_STORAGE_DELETE_ENABLED", "perhaps")]);
    assert!(!status.success());
    assert!(err.contains("configuration setting REGISTRY_STORAGE_DELETE_ENABLED: expected true or false, got \"perhaps\""), "{err}");
    // A good value from the environment overrides the file's bad one.
    let s = Server::start_serve(&["--config", &config], &[("REGISTRY_STORAGE_DELETE_ENABLED", "true")], None, None);
    s.get("/v2/").expect(200);
    drop(s);
    for (text, key) in [
        ("storage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: r\n", "storage.s3.bucket (or REGISTRY_STORAGE_S3_BUCKET): required"),
        ("auth:\n  htpasswd:\n    realm: r\n    path: no-such-file\n", "auth.htpasswd.path: cannot read"),
        ("http:\n  prefix: /registry/\n", "http.prefix: Pier serves /v2/ at the root"),
        ("storage:\n  inmemory:\nlog:\n  level: loud\n", "log.level: expected error, warn, info or debug"),
        ("storage:\n  inmemory:\nlog:\n  formatter: xml\n", "log.formatter: expected text, json or logstash"),
        ("storage:\n  inmemory:\n  maintenance:\n    uploadpurging:\n      age: a week\n", "storage.maintenance.uploadpurging.age"),
        ("storage:\n  inmemory:\n  maintenance:\n    readonly:\n      enabled: sometimes\n", "storage.maintenance.readonly.enabled"),
        ("storage: [inmemory\n", "not YAML"),
    ] {
        let (_dir, config) = config_dir(text);
        let (status, err) = serve_until_exit(&["--config", &config], &[]);
        assert!(!status.success(), "{text}");
        assert!(err.contains(key), "{key:?} not in: {err}");
    }
    let (status, err) = serve_until_exit(&["--config", "/nonexistent/config.yml"], &[]);
    assert!(!status.success());
    assert!(err.contains("cannot read the configuration file /nonexistent/config.yml"), "{err}");
}

#[test]
fn registry2_command_line_and_configuration_path_variable() {
    if skip_if_external("registry2_command_line_and_configuration_path_variable") {
        return;
    }
    // registry:2 runs `registry serve /etc/docker/registry/config.yml`, or reads REGISTRY_CONFIGURATION_PATH.
    let (_dir, config) = config_dir("version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\nlog:\n  formatter: logstash\n");
    let s = Server::start_serve(&[&config], &[], None, None);
    s.wait_stderr("logstash is written as plain JSON lines");
    s.get("/v2/").expect(200);
    drop(s);
    let s = Server::start_serve(&[], &[("REGISTRY_CONFIGURATION_PATH", &config)], None, None);
    s.get("/v2/").expect(200);
    let (status, err) = serve_until_exit(&[&config, &config], &[]);
    assert!(!status.success());
    assert!(err.contains("one configuration file"), "{err}");
}
