//! TLS for `pier serve`, under registry:2's settings: `REGISTRY_HTTP_TLS_CERTIFICATE` and `REGISTRY_HTTP_TLS_KEY`
//! (PEM files: the certificate chain, leaf first, and its private key; `http.tls.certificate`/`key` in a
//! `config.yml`) and `REGISTRY_HTTP_TLS_MINIMUMTLS` (`tls1.2`, the default, or `tls1.3`). rustls with the ring
//! provider, as for the outbound client; HTTP/1.1 only (ALPN `http/1.1`), like the plain server.
//!
//! Certificates get renewed in place (certbot, cert-manager, a cron job), so a running server picks up new files
//! without a restart: when a connection arrives, at most once per [`RELOAD_CHECK_INTERVAL`], the files' modification
//! time, size and inode are compared with the last ones seen, and on a change the files are loaded again and the
//! new configuration serves the following handshakes (connections already open keep theirs). A new pair that does
//! not load — half-written, a key that does not match — leaves the previous certificate in service and logs a
//! warning; the next change is tried again. The server runs on one thread, so the current configuration sits in a
//! `RefCell` holding an `Arc` rather than in a lock.

use crate::config::ConfigError;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, version, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// The certificate chain's file (PEM).
pub const CERTIFICATE_SETTING: &str = "REGISTRY_HTTP_TLS_CERTIFICATE";
/// The private key's file (PEM: PKCS#8, PKCS#1 or SEC1).
pub const KEY_SETTING: &str = "REGISTRY_HTTP_TLS_KEY";
/// The lowest TLS version served.
pub const MINIMUM_SETTING: &str = "REGISTRY_HTTP_TLS_MINIMUMTLS";
/// How often, at most, the files are looked at for a change.
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Where the certificate and key are, and which TLS versions to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Only TLS 1.3 (`REGISTRY_HTTP_TLS_MINIMUMTLS=tls1.3`); otherwise TLS 1.2 and 1.3.
    pub tls13_only: bool,
}

/// registry:2's `minimumtls`: whether only TLS 1.3 is wanted, and a warning for versions rustls does not speak.
pub fn parse_minimum(setting: &str, v: &str) -> Result<(bool, Option<String>), ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "tls1.2" => Ok((false, None)),
        "tls1.3" => Ok((true, None)),
        "tls1.0" | "tls1.1" => Ok((false, Some(format!("{setting}: rustls speaks TLS 1.2 and 1.3 only; TLS 1.2 is the minimum")))),
        _ => Err(ConfigError { setting: setting.to_string(), problem: format!("expected tls1.2 or tls1.3, got {v:?}") }),
    }
}

fn bad(setting: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: setting.to_string(), problem: problem.into() }
}

/// Load the certificate and key into a server configuration; errors name the setting of the file at fault.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, ConfigError> {
    let cert_path = files.certificate.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .and_then(|certs| certs.collect())
        .map_err(|e| bad(CERTIFICATE_SETTING, format!("cannot read certificates from {cert_path}: {e}")))?;
    if certs.is_empty() {
        return Err(bad(CERTIFICATE_SETTING, format!("no PEM certificate in {cert_path}")));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| bad(KEY_SETTING, format!("cannot read a private key from {}: {e}", files.key.display())))?;
    let versions: &[&rustls::SupportedProtocolVersion] =
        if files.tls13_only { &[&version::TLS13] } else { &[&version::TLS12, &version::TLS13] };
    let mut config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .map_err(|e| bad(MINIMUM_SETTING, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => bad(KEY_SETTING, format!("the key in {} does not match the certificate in {cert_path}", files.key.display())),
            other => bad(CERTIFICATE_SETTING, format!("cannot use the certificate in {cert_path} with its key: {other}")),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Some(FileStamp { modified: meta.modified().ok(), len: meta.len(), inode })
}

/// The server's TLS configuration, reloaded when its files change.
pub struct TlsReloader {
    files: TlsFiles,
    current: RefCell<Arc<ServerConfig>>,
    /// The files as they were at the last load attempt (successful or not).
    seen: RefCell<Option<(FileStamp, FileStamp)>>,
    next_check: Cell<Instant>,
}

impl TlsReloader {
    /// Load the files now; an error stops the server at start.
    pub fn new(files: TlsFiles) -> Result<Self, ConfigError> {
        // Stamp before reading: a change while reading is then seen at the next check.
        let seen = Self::stamps(&files);
        let config = load(&files)?;
        Ok(TlsReloader {
            files,
            current: RefCell::new(config),
            seen: RefCell::new(seen),
            next_check: Cell::new(Instant::now() + RELOAD_CHECK_INTERVAL),
        })
    }

    fn stamps(files: &TlsFiles) -> Option<(FileStamp, FileStamp)> {
        Some((file_stamp(&files.certificate)?, file_stamp(&files.key)?))
    }

    /// An acceptor with the current configuration, after reloading the files if they changed.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.refresh();
        TlsAcceptor::from(self.current.borrow().clone())
    }

    fn refresh(&self) {
        let now = Instant::now();
        if now < self.next_check.get() {
            return;
        }
        self.next_check.set(now + RELOAD_CHECK_INTERVAL);
        // A file missing for a moment (replaced by rename) is looked at again at the next check.
        let Some(stamps) = Self::stamps(&self.files) else { return };
        if self.seen.borrow().as_ref() == Some(&stamps) {
            return;
        }
        *self.seen.borrow_mut() = Some(stamps);
        match load(&self.files) {
            Ok(config) => {
                *self.current.borrow_mut() = config;
                eprintln!("pier: TLS certificate reloaded from {}", self.files.certificate.display());
            }
            Err(e) => eprintln!("pier: warning: TLS certificate not reloaded, the previous one stays in service: {e}"),
        }
    }
}
