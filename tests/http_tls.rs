//! TLS on the native server, under registry:2's settings (`REGISTRY_HTTP_TLS_CERTIFICATE`, `REGISTRY_HTTP_TLS_KEY`,
//! `http.tls.*` in a config.yml). Each test makes its own CA and a server certificate for 127.0.0.1 (rcgen), starts
//! `pier serve` with them and checks: a push/pull round trip over HTTPS with a client trusting that CA, curl with
//! `--cacert`, skopeo pushing with `--dest-cert-dir` and podman pulling with `--cert-dir` (skipped with a message
//! when those clients are missing), plain HTTP to the TLS port answered with a clean 400, and new certificate files
//! — from a new CA — picked up without a restart, while a broken replacement keeps the old certificate in service.
//! Every test needs its own server settings, so none runs against `PIER_TEST_URL`.

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A CA and a server certificate it signed, in PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

/// A new CA named `name` and a certificate for 127.0.0.1 and localhost signed by it.
fn make_pki(name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("Pier test CA {name}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() }
}

/// The certificate and key written where the server reads them.
struct TlsDir {
    dir: tempfile::TempDir,
}

impl TlsDir {
    fn new(pki: &Pki) -> TlsDir {
        let t = TlsDir { dir: tempfile::TempDir::new().unwrap() };
        t.install(pki);
        t
    }
    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("domain.crt")
    }
    fn key_path(&self) -> PathBuf {
        self.dir.path().join("domain.key")
    }
    /// Replace both files, each by a rename (as certbot and cert-manager do), the key first.
    fn install(&self, pki: &Pki) {
        for (path, content) in [(self.key_path(), &pki.key), (self.cert_path(), &pki.cert)] {
            let tmp = path.with_extension("new");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("REGISTRY_HTTP_TLS_CERTIFICATE", self.cert_path().to_string_lossy().into_owned()),
            ("REGISTRY_HTTP_TLS_KEY", self.key_path().to_string_lossy().into_owned()),
        ]
    }
}

fn start_tls(tls: &TlsDir, ca: &str) -> Server {
    let env = tls.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_serve(&["--addr", "127.0.0.1:0", "--memory"], &env, None, Some(ca))
}

fn host_port(s: &Server) -> String {
    s.base.split("://").nth(1).unwrap().to_string()
}

/// `GET /v2/` over TLS trusting only `ca_pem`: the status, or the TLS/transport error.
fn get_v2_trusting(s: &Server, ca_pem: &str) -> Result<u16, String> {
    match agent_trusting(Some(ca_pem)).get(&s.url("/v2/")).call() {
        Ok(r) => Ok(r.status()),
        Err(ureq::Error::Status(code, _)) => Ok(code),
        Err(ureq::Error::Transport(t)) => Err(t.to_string()),
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

#[test]
fn https_round_trip_under_registry2_settings() {
    if skip_if_external("https_round_trip_under_registry2_settings") {
        return;
    }
    let pki = make_pki("one");
    let tls = TlsDir::new(&pki);
    let s = start_tls(&tls, &pki.ca);
    assert!(s.base.starts_with("https://127.0.0.1:"), "the listening line says https: {}", s.base);
    s.get("/v2/").expect(200);
    let repo = unique("tls/round-trip");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let r = s.get_h(&format!("/v2/{repo}/manifests/v1"), &[("Accept", OCI_MANIFEST)]);
    r.expect(200);
    assert_eq!(r.body, img.bytes);
    s.get(&format!("/v2/{repo}/blobs/{}", img.layer)).expect(200);
    // A client that does not trust the test CA refuses the server's certificate.
    let other = make_pki("stranger");
    assert!(get_v2_trusting(&s, &other.ca).is_err());

    let Some(curl) = which("curl") else {
        eprintln!("skipping the curl part of https_round_trip_under_registry2_settings: curl not found");
        return;
    };
    let ca_file = tls.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca).unwrap();
    let out = Command::new(&curl)
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "--cacert"])
        .arg(&ca_file)
        .arg(s.url("/v2/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 1.1", "curl: {}", String::from_utf8_lossy(&out.stderr));
    // Without the CA, curl refuses the certificate (exit 60: peer certificate cannot be authenticated).
    let out = Command::new(&curl).args(["-sS", "-o", "/dev/null"]).arg(s.url("/v2/")).env("CURL_CA_BUNDLE", "/nonexistent").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn plain_http_to_the_tls_port_gets_a_clean_400() {
    if skip_if_external("plain_http_to_the_tls_port_gets_a_clean_400") {
        return;
    }
    let pki = make_pki("plain");
    let tls = TlsDir::new(&pki);
    let s = start_tls(&tls, &pki.ca);
    let mut stream = std::net::TcpStream::connect(host_port(&s)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: {}\r\n\r\n", host_port(&s)).as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 400 Bad Request\r\n"), "{answer:?}");
    assert!(answer.ends_with("Client sent an HTTP request to an HTTPS server.\n"), "{answer:?}");
    // The same through an HTTP client, and the server goes on serving TLS.
    let r = agent_trusting(None).get(&s.url("/v2/").replace("https://", "http://")).call();
    assert!(matches!(r, Err(ureq::Error::Status(400, _))), "{r:?}");
    // A connection that sends bytes that are neither TLS nor HTTP is closed without an answer.
    let mut junk = std::net::TcpStream::connect(host_port(&s)).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    junk.write_all(b"\x00\x01\x02\x03").unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
    s.get("/v2/").expect(200);
}

#[test]
fn new_certificate_files_are_picked_up_without_a_restart() {
    if skip_if_external("new_certificate_files_are_picked_up_without_a_restart") {
        return;
    }
    let first = make_pki("first");
    let tls = TlsDir::new(&first);
    let s = start_tls(&tls, &first.ca);
    assert_eq!(get_v2_trusting(&s, &first.ca), Ok(200));

    // A broken replacement (a certificate with another CA's key) keeps the old certificate in service.
    let second = make_pki("second");
    let broken = Pki { ca: String::new(), cert: second.cert.clone(), key: first.key.clone() };
    tls.install(&broken);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.stderr_text().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "no warning about the broken certificate:\n{}", s.stderr_text());
        assert_eq!(get_v2_trusting(&s, &first.ca), Ok(200), "the old certificate stays in service");
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = s.wait_stderr("TLS certificate not reloaded");
    assert!(err.contains("REGISTRY_HTTP_TLS_KEY"), "the warning names the file at fault:\n{err}");
    assert_eq!(get_v2_trusting(&s, &first.ca), Ok(200));

    // The whole new pair: picked up within a few seconds; the old CA no longer verifies the server.
    tls.install(&second);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match get_v2_trusting(&s, &second.ca) {
            Ok(200) => break,
            other => assert!(Instant::now() < deadline, "the new certificate was not picked up: {other:?}\n{}", s.stderr_text()),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(get_v2_trusting(&s, &first.ca).is_err());
    s.wait_stderr("TLS certificate reloaded");
    // The process is the same one: data pushed before the reload is still there (in memory).
    let after = Server::external_at_trusting(&s.base, &second.ca);
    push_image(&after, &unique("tls/reload"), "after", unique_seed());
}

#[test]
fn bad_tls_settings_stop_the_server_naming_the_setting() {
    if skip_if_external("bad_tls_settings_stop_the_server_naming_the_setting") {
        return;
    }
    let pki = make_pki("bad");
    let tls = TlsDir::new(&pki);
    let cert = tls.cert_path().to_string_lossy().into_owned();
    let key = tls.key_path().to_string_lossy().into_owned();
    let (status, err) = serve_until_exit(&["--memory", "--addr", "127.0.0.1:0"], &[("REGISTRY_HTTP_TLS_CERTIFICATE", &cert)]);
    assert!(!status.success());
    assert!(err.contains("REGISTRY_HTTP_TLS_KEY"), "{err}");
    let (status, err) = serve_until_exit(
        &["--memory", "--addr", "127.0.0.1:0"],
        &[("REGISTRY_HTTP_TLS_CERTIFICATE", &key), ("REGISTRY_HTTP_TLS_KEY", &key)],
    );
    assert!(!status.success());
    assert!(err.contains("REGISTRY_HTTP_TLS_CERTIFICATE"), "{err}");
    // In a config.yml the message names the key.
    let dir = tempfile::TempDir::new().unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(&config, format!("http:\n  tls:\n    certificate: {cert}\n    key: missing.key\n    minimumtls: tls1.3\n")).unwrap();
    let (status, err) = serve_until_exit(&["--config", config.to_str().unwrap(), "--memory", "--addr", "127.0.0.1:0"], &[]);
    assert!(!status.success());
    assert!(err.contains("http.tls.key") && err.contains("missing.key"), "{err}");
}

#[test]
fn tls_from_a_config_file_with_tls13_only() {
    if skip_if_external("tls_from_a_config_file_with_tls13_only") {
        return;
    }
    let pki = make_pki("file");
    let tls = TlsDir::new(&pki);
    // Relative paths: relative to the configuration file's directory.
    std::fs::write(
        tls.dir.path().join("config.yml"),
        "version: 0.1\nstorage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\n  tls:\n    certificate: domain.crt\n    key: domain.key\n    minimumtls: tls1.3\n",
    )
    .unwrap();
    let config = tls.dir.path().join("config.yml");
    let s = Server::start_serve(&["--config", config.to_str().unwrap()], &[], None, Some(&pki.ca));
    assert!(s.base.starts_with("https://"), "{}", s.base);
    s.get("/v2/").expect(200);
    // A TLS 1.2-only client is refused.
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::pem::PemObject::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls12 = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let agent = ureq::AgentBuilder::new().tls_config(std::sync::Arc::new(tls12)).build();
    assert!(matches!(agent.get(&s.url("/v2/")).call(), Err(ureq::Error::Transport(_))));
}

/// Runs a client command; panics with its output when it fails.
fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn skopeo_pushes_and_podman_pulls_with_cert_dirs() {
    if skip_if_external("skopeo_pushes_and_podman_pulls_with_cert_dirs") {
        return;
    }
    let (Some(skopeo), Some(podman), Some(python)) = (which("skopeo"), which("podman"), which("python3")) else {
        eprintln!("skipping skopeo_pushes_and_podman_pulls_with_cert_dirs: skopeo, podman or python3 not found");
        return;
    };
    let pki = make_pki("clients");
    let tls = TlsDir::new(&pki);
    let s = start_tls(&tls, &pki.ca);
    let host = host_port(&s);

    // The clients' own world: a HOME, a registries.conf, a policy, and the CA as `ca.crt` in a cert dir.
    let work = tempfile::TempDir::new().unwrap();
    let certs = work.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &pki.ca).unwrap();
    std::fs::write(work.path().join("registries.conf"), "unqualified-search-registries = []\n").unwrap();
    let policy = work.path().join("policy.json");
    std::fs::write(&policy, "{\"default\": [{\"type\": \"insecureAcceptAnything\"}]}\n").unwrap();
    // podman refuses a run root longer than 50 characters: short paths under /tmp.
    let storage = tempfile::Builder::new().prefix("pier-tls-").tempdir_in("/tmp").unwrap();
    let client_env = |cmd: &mut Command| {
        cmd.env("HOME", work.path())
            .env("XDG_CONFIG_HOME", work.path().join("config"))
            .env("XDG_RUNTIME_DIR", work.path())
            .env("CONTAINERS_REGISTRIES_CONF", work.path().join("registries.conf"))
            .env("REGISTRY_AUTH_FILE", work.path().join("auth.json"))
            .env("TMPDIR", work.path());
    };
    std::fs::write(work.path().join("auth.json"), "{\"auths\": {}}\n").unwrap();

    // A fresh image (random layers: no blob-info cache has seen them) from the real-client suite's generator.
    let layout = work.path().join("layout");
    let gen = run(Command::new(&python)
        .arg("-c")
        .arg("import sys; sys.path.insert(0, sys.argv[1]); import imagegen; print(imagegen.make_single_arch(sys.argv[2], 'v1').top_digest)")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients"))
        .arg(&layout));
    let digest = String::from_utf8_lossy(&gen.stdout).trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let reference = format!("{host}/tls/clients:v1");
    let mut push = Command::new(&skopeo);
    client_env(&mut push);
    run(push
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--dest-cert-dir"])
        .arg(&certs)
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{reference}")));
    let r = s.get_h("/v2/tls/clients/manifests/v1", &[("Accept", OCI_MANIFEST)]);
    r.expect(200);
    assert_eq!(sha256(&r.body), digest, "the registry serves the manifest skopeo pushed");

    let mut pull = Command::new(&podman);
    client_env(&mut pull);
    run(pull
        .arg("--root")
        .arg(storage.path().join("root"))
        .arg("--runroot")
        .arg(storage.path().join("run"))
        .args(["--storage-driver", "vfs", "--cgroup-manager=cgroupfs", "--events-backend=file", "pull", "--cert-dir"])
        .arg(&certs)
        .arg(&reference));
    let mut inspect = Command::new(&podman);
    client_env(&mut inspect);
    let out = run(inspect
        .arg("--root")
        .arg(storage.path().join("root"))
        .arg("--runroot")
        .arg(storage.path().join("run"))
        .args(["--storage-driver", "vfs", "--cgroup-manager=cgroupfs", "--events-backend=file", "image", "inspect", "--format", "{{.Digest}}"])
        .arg(&reference));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);

    // Without the CA the clients refuse the server.
    let mut refused = Command::new(&skopeo);
    client_env(&mut refused);
    let out = refused.arg("--policy").arg(&policy).args(["inspect", "--raw"]).arg(format!("docker://{reference}")).output().unwrap();
    assert!(!out.status.success(), "skopeo trusted an unknown CA");
}
