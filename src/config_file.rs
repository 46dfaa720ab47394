//! registry:2's configuration file (`config.yml`) for `pier serve --config`. This module owns reading the YAML and
//! turning it into settings; it decides nothing about them.
//!
//! registry:2 lets an environment variable override any key of its file by naming the key's path:
//! `storage.s3.bucket` is `REGISTRY_STORAGE_S3_BUCKET`, and a map with one driver in it (`storage: {s3: …}`,
//! `auth: {htpasswd: …}`) is `REGISTRY_STORAGE=s3`, `REGISTRY_AUTH=htpasswd`. Pier already reads those names, so
//! the file is flattened into exactly that map ([`ConfigFile::get`]) and handed to the same look-up functions as the
//! environment (`Config::from_lookup`, `StorageConfig::from_lookup`), with real environment variables in front, as
//! in registry:2. Nothing is read twice and the file cannot mean something the variables would not.
//!
//! Every key registry:2 knows is classified ([`Key`]): honoured, known but without effect in Pier (a warning says
//! why), or one Pier cannot honour where ignoring it would change what the registry does (an error). A key nobody
//! knows is reported by name as a warning, as is a key inside an endpoint of `notifications.endpoints`. Relative
//! paths in the file (`storage.filesystem.rootdirectory`, `auth.htpasswd.path`, `http.tls.certificate`/`key`) are
//! relative to the file's directory, so a configuration directory can be moved as a whole.
//!
//! Errors name the YAML key ([`ConfigFile::describe`] renames a setting's error when its value came from the file)
//! and never repeat a value: files hold secrets (`storage.s3.secretkey`, `proxy.password`).

use crate::config::ConfigError;
use crate::notifications::{ENDPOINTS_SETTING, ENDPOINT_KEYS, IGNORE_KEYS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// What Pier does with one key of registry:2's configuration.
enum Key {
    /// A value Pier reads under the key's environment name.
    Value,
    /// A file or directory path (relative to the configuration file's directory).
    Path,
    /// A map of these keys.
    Map(&'static [(&'static str, Key)]),
    /// A map of these keys, or one value standing for the map (`readonly: true`).
    ValueOrMap(&'static [(&'static str, Key)]),
    /// A map naming one driver beside fixed keys: the driver's name is the key's value (`REGISTRY_STORAGE=s3`),
    /// its parameters are under it. A driver not listed still becomes the value, for the settings to refuse.
    Driver { fixed: &'static [(&'static str, Key)], drivers: &'static [(&'static str, Key)] },
    /// Known to registry:2, no effect in Pier: a warning says why.
    Ignored(&'static str),
    /// Pier behaves as if the value were one of these; any other value warns that it does not do it.
    Expect(&'static [&'static str], &'static str),
    /// Pier can only run with one of these values (or none): another stops the server with this reason.
    Only(&'static [&'static str], &'static str),
    /// Pier cannot honour it, and ignoring it would change what the registry does: any value stops the server.
    Unsupported(&'static str),
    /// `notifications.endpoints`: a list kept whole, as JSON (see [`crate::notifications`]).
    Endpoints,
    /// `version`: must be registry:2's `0.1`.
    Version,
}

use Key::*;

const TOP: &[(&str, Key)] = &[
    ("version", Version),
    ("log", Map(LOG)),
    ("loglevel", Value),
    ("storage", Driver { fixed: STORAGE_FIXED, drivers: STORAGE_DRIVERS }),
    ("auth", Driver { fixed: &[], drivers: AUTH_DRIVERS }),
    ("http", Map(HTTP)),
    ("notifications", Map(NOTIFICATIONS)),
    ("proxy", Map(PROXY)),
    ("middleware", Ignored("Pier has no middleware (CloudFront or redirect middleware included)")),
    ("redis", Ignored("Pier keeps no cache in Redis")),
    ("health", Ignored("Pier answers GET /health with its own storage check and runs no periodic checks")),
    ("catalog", Ignored("Pier pages the catalog with n and last")),
    ("validation", Ignored("Pier validates manifests by its own rules")),
    ("policy", Ignored("Pier enforces no repository classes")),
    ("reporting", Ignored("Pier reports to no error tracker")),
    ("compatibility", Ignored("Pier serves schema 2 and OCI manifests")),
];

const LOG: &[(&str, Key)] = &[
    ("level", Value),
    ("formatter", Value),
    ("fields", Ignored("request log lines carry Pier's own fields")),
    ("hooks", Ignored("Pier sends no log hooks")),
    ("reportcaller", Ignored("Pier's log lines name no source location")),
    ("accesslog", Map(&[("disabled", Expect(&["false"], "Pier always writes one request log line per request"))])),
];

const STORAGE_FIXED: &[(&str, Key)] = &[
    ("delete", Map(&[("enabled", Value)])),
    ("redirect", Map(&[("disable", Value)])),
    ("maintenance", Map(MAINTENANCE)),
    ("cache", Ignored("Pier keeps no blob descriptor cache")),
    ("tag", Ignored("Pier needs no tag lookup concurrency limit")),
];

const MAINTENANCE: &[(&str, Key)] = &[
    (
        "uploadpurging",
        Map(&[
            ("enabled", Expect(&["true"], "Pier always removes idle upload sessions (after age, default 24h)")),
            ("age", Value),
            ("interval", Ignored("Pier looks for expired uploads every quarter of the age, between 1 minute and 1 hour")),
            ("dryrun", Expect(&["false"], "Pier removes expired upload sessions; it has no dry run")),
        ]),
    ),
    ("readonly", ValueOrMap(&[("enabled", Value)])),
];

const STORAGE_DRIVERS: &[(&str, Key)] = &[
    ("filesystem", Map(&[("rootdirectory", Path), ("maxthreads", Ignored("Pier sizes its own blocking pool"))])),
    ("inmemory", Map(&[])),
    ("s3", Map(S3)),
    ("azure", Map(AZURE)),
];

const S3: &[(&str, Key)] = &[
    ("accesskey", Value),
    ("secretkey", Value),
    ("region", Value),
    ("regionendpoint", Value),
    ("bucket", Value),
    ("rootdirectory", Value),
    ("forcepathstyle", Value),
    ("secure", Expect(&["true"], "Pier reaches AWS over https; for plain HTTP give regionendpoint an http:// URL")),
    ("v4auth", Expect(&["true"], "Pier signs every request with AWS Signature Version 4")),
    ("skipverify", Expect(&["false"], "Pier always verifies the endpoint's certificate")),
    ("encrypt", Expect(&["false"], "Pier asks for no server-side encryption: objects get the bucket's default encryption")),
    ("keyid", Ignored("Pier asks for no KMS key: objects get the bucket's default encryption")),
    ("chunksize", Ignored("the multipart part size is PIER_UPLOAD_PART_SIZE (default 8MiB)")),
    ("multipartcopychunksize", Ignored("Pier copies each blob with one CopyObject")),
    ("multipartcopymaxconcurrency", Ignored("Pier copies each blob with one CopyObject")),
    ("multipartcopythresholdsize", Ignored("Pier copies each blob with one CopyObject")),
    ("storageclass", Ignored("objects get the bucket's default storage class")),
    ("objectacl", Ignored("objects get the bucket's default ACL")),
    ("useragent", Ignored("Pier sends its own User-Agent")),
    ("usedualstack", Ignored("set regionendpoint to a dual-stack endpoint instead")),
    ("accelerate", Ignored("set regionendpoint to an accelerated endpoint instead")),
    ("loglevel", Ignored("Pier does not log S3 requests")),
    ("checksumdisabled", Ignored("Pier sends SHA-256 payload hashes")),
    ("checksumalgorithm", Ignored("Pier sends SHA-256 payload hashes")),
    ("sessiontoken", Unsupported("temporary credentials (session tokens) are not supported: use an access key")),
];

const AZURE: &[(&str, Key)] = &[
    ("accountname", Value),
    ("accountkey", Value),
    ("container", Value),
    ("realm", Value),
    ("rootdirectory", Value),
    ("serviceurl", Value),
    (
        "credentials",
        Map(&[
            ("type", Only(&["shared_key"], "only shared_key credentials (accountname and accountkey) are supported")),
            ("clientid", Ignored("only shared_key credentials are supported")),
            ("tenantid", Ignored("only shared_key credentials are supported")),
            ("secret", Ignored("only shared_key credentials are supported")),
        ]),
    ),
    ("maxretries", Ignored("Pier does not retry storage calls; clients retry the request")),
    ("retrytrydelay", Ignored("Pier does not retry storage calls; clients retry the request")),
    ("maxretrydelay", Ignored("Pier does not retry storage calls; clients retry the request")),
    ("retryoncodes", Ignored("Pier does not retry storage calls; clients retry the request")),
    ("copystatuspollmaxretry", Ignored("Pier waits for each copy to finish")),
    ("copystatuspolldelay", Ignored("Pier waits for each copy to finish")),
    ("skipverify", Expect(&["false"], "Pier always verifies the endpoint's certificate")),
];

const AUTH_DRIVERS: &[(&str, Key)] = &[("htpasswd", Map(&[("realm", Value), ("path", Path)]))];

const HTTP: &[(&str, Key)] = &[
    ("addr", Value),
    ("net", Only(&["tcp"], "Pier listens on TCP only")),
    ("prefix", Only(&["/"], "Pier serves /v2/ at the root: put a reverse proxy in front to serve it under a prefix")),
    ("host", Ignored("Pier builds URLs from the request's Host (PIER_AUTH_REALM sets the token endpoint's)")),
    ("secret", Ignored("Pier needs no upload secret: upload sessions live in the metadata store")),
    ("relativeurls", Expect(&["true"], "Pier's Location headers are always relative")),
    ("draintimeout", Ignored("Pier stops at once")),
    ("tls", Map(TLS)),
    ("headers", Ignored("Pier sets its own response headers")),
    ("debug", Ignored("Pier has no debug server")),
    ("http2", Ignored("Pier speaks HTTP/1.1")),
    ("h2c", Map(&[("enabled", Expect(&["false"], "Pier speaks HTTP/1.1 only"))])),
];

const TLS: &[(&str, Key)] = &[
    ("certificate", Path),
    ("key", Path),
    ("minimumtls", Value),
    ("ciphersuites", Ignored("rustls chooses among its own cipher suites")),
    ("clientcas", Unsupported("client certificates are not supported")),
    ("clientauth", Unsupported("client certificates are not supported")),
    (
        "letsencrypt",
        Unsupported("Pier fetches no Let's Encrypt certificates: give certificate and key (renewed files are reloaded)"),
    ),
];

const NOTIFICATIONS: &[(&str, Key)] = &[("endpoints", Endpoints), ("events", Map(&[("includereferences", Value)]))];

const PROXY: &[(&str, Key)] = &[
    ("remoteurl", Value),
    ("username", Value),
    ("password", Value),
    ("ttl", Value),
    ("exec", Ignored("Pier runs no credential helper")),
];

/// The "key" of errors about the file as a whole (not YAML, not a map).
pub const FILE: &str = "(file)";

/// registry:2's configuration file as settings under registry:2's environment-variable names.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// The file as named on the command line, for messages.
    pub name: String,
    /// Setting name → value.
    values: BTreeMap<String, String>,
    /// Setting name → the YAML key it came from.
    keys: BTreeMap<String, String>,
    /// What was ignored or unknown, one message each (without the file's name).
    pub warnings: Vec<String>,
}

fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting: key.to_string(), problem: problem.into() }
}

/// A scalar as text; `None` for null. Maps and lists are not values.
fn scalar(node: &Yaml, key: &str) -> Result<Option<String>, ConfigError> {
    match node {
        Yaml::Null => Ok(None),
        Yaml::String(s) | Yaml::Real(s) => Ok(Some(s.clone())),
        Yaml::Integer(i) => Ok(Some(i.to_string())),
        Yaml::Boolean(b) => Ok(Some(b.to_string())),
        Yaml::Array(_) | Yaml::Hash(_) => Err(bad(key, "expected a single value, not a list or map")),
        Yaml::Alias(_) | Yaml::BadValue => Err(bad(key, "unreadable value")),
    }
}

fn key_text(k: &Yaml) -> String {
    match k {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => "?".into(),
    }
}

/// A YAML value as JSON (the form `REGISTRY_NOTIFICATIONS_ENDPOINTS` takes).
fn to_json(node: &Yaml) -> Value {
    match node {
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(s) => s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(|| Value::String(s.clone()), Value::Number),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(map.iter().map(|(k, v)| (key_text(k), to_json(v))).collect()),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

impl ConfigFile {
    /// Read and flatten the file at `path`; the error names the file and, for a bad value, the key.
    pub fn read(path: &Path) -> Result<ConfigFile, String> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the configuration file {name}: {e}"))?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        ConfigFile::parse(&name, &text, base).map_err(|e| match e.setting.as_str() {
            FILE => format!("{name}: {}", e.problem),
            key => format!("{name}: {key}: {}", e.problem),
        })
    }

    /// Flatten YAML `text` (named `name` in messages; relative paths resolve against `base`). The error's
    /// `setting` is the YAML key, or [`FILE`] for the file as a whole.
    pub fn parse(name: &str, text: &str, base: &Path) -> Result<ConfigFile, ConfigError> {
        let docs = YamlLoader::load_from_str(text).map_err(|e| bad(FILE, format!("not YAML: {e}")))?;
        let mut file = ConfigFile { name: name.to_string(), ..ConfigFile::default() };
        match docs.as_slice() {
            [] => {}
            [root] => {
                let mut flat = Flattener { file: &mut file, base };
                flat.walk(root, &Map(TOP), &[])?;
            }
            _ => return Err(bad(FILE, "more than one YAML document")),
        }
        Ok(file)
    }

    /// The file's value of a setting (e.g. `REGISTRY_STORAGE_S3_BUCKET`).
    pub fn get(&self, setting: &str) -> Option<String> {
        self.values.get(setting).cloned()
    }

    /// The YAML key a setting's value came from (`REGISTRY_STORAGE_S3_BUCKET` → `storage.s3.bucket`).
    pub fn key_of(&self, setting: &str) -> Option<&str> {
        self.keys.get(setting).map(String::as_str)
    }

    /// The settings the file holds, sorted.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A message for a setting's error that names the YAML key when the file was where the setting came from:
    /// the file's value (unless `overridden`: an environment variable set it instead), or, for a registry:2 setting
    /// nobody set (a required one), the key the file would need beside the variable's name. `None`: the
    /// environment's own name is the right one.
    pub fn describe(&self, e: &ConfigError, overridden: bool) -> Option<String> {
        if overridden {
            return None;
        }
        if let Some(key) = self.key_of(&e.setting) {
            return Some(format!("{}: {key}: {}", self.name, e.problem));
        }
        // registry:2's keys never contain `_`, so its names map back to keys (REGISTRY_AUTH → auth).
        let key = e.setting.strip_prefix("REGISTRY_")?.to_ascii_lowercase().replace('_', ".");
        Some(format!("{}: {key} (or {}): {}", self.name, e.setting, e.problem))
    }
}

struct Flattener<'a> {
    file: &'a mut ConfigFile,
    base: &'a Path,
}

impl Flattener<'_> {
    fn set(&mut self, path: &[&str], value: String) {
        let setting = format!("REGISTRY_{}", path.join("_").to_ascii_uppercase());
        self.file.keys.insert(setting.clone(), path.join("."));
        self.file.values.insert(setting, value);
    }

    fn warn(&mut self, message: String) {
        self.file.warnings.push(message);
    }

    /// The keys of a map node (null counts as empty); anything else is an error naming `key`.
    fn entries<'y>(node: &'y Yaml, key: &str) -> Result<Vec<(String, &'y Yaml)>, ConfigError> {
        match node {
            Yaml::Hash(map) => Ok(map.iter().map(|(k, v)| (key_text(k), v)).collect()),
            Yaml::Null => Ok(Vec::new()),
            _ => Err(bad(key, "expected a map of keys")),
        }
    }

    fn walk_map(&mut self, node: &Yaml, keys: &[(&str, Key)], path: &[&str]) -> Result<(), ConfigError> {
        let here = path.join(".");
        for (k, value) in Self::entries(node, if here.is_empty() { FILE } else { &here })? {
            let mut child: Vec<&str> = path.to_vec();
            child.push(&k);
            match keys.iter().find(|(name, _)| *name == k) {
                Some((_, key)) => self.walk(value, key, &child)?,
                None => self.warn(format!("unknown key {}", child.join("."))),
            }
        }
        Ok(())
    }

    fn walk(&mut self, node: &Yaml, key: &Key, path: &[&str]) -> Result<(), ConfigError> {
        let dotted = path.join(".");
        match key {
            Value => {
                if let Some(v) = scalar(node, &dotted)? {
                    self.set(path, v);
                }
            }
            Path => {
                if let Some(v) = scalar(node, &dotted)?.filter(|v| !v.trim().is_empty()) {
                    let p = PathBuf::from(v.trim());
                    let resolved = if p.is_relative() { self.base.join(p) } else { p };
                    self.set(path, resolved.to_string_lossy().into_owned());
                }
            }
            Map(keys) => self.walk_map(node, keys, path)?,
            ValueOrMap(keys) => match node {
                Yaml::Hash(_) => self.walk_map(node, keys, path)?,
                other => {
                    if let Some(v) = scalar(other, &dotted)? {
                        self.set(path, v);
                    }
                }
            },
            Driver { fixed, drivers } => {
                if let Yaml::String(name) = node {
                    // `storage: inmemory`, `auth: htpasswd`: a driver without parameters.
                    self.set(path, name.clone());
                    return Ok(());
                }
                let mut chosen: Vec<(String, &Yaml)> = Vec::new();
                for (k, value) in Self::entries(node, &dotted)? {
                    match fixed.iter().find(|(name, _)| *name == k) {
                        Some((_, key)) => {
                            let mut child = path.to_vec();
                            child.push(&k);
                            self.walk(value, key, &child)?;
                        }
                        None => chosen.push((k, value)),
                    }
                }
                match chosen.as_slice() {
                    [] => {}
                    [(name, params)] => {
                        self.set(path, name.clone());
                        if let Some((_, params_key)) = drivers.iter().find(|(d, _)| d == name) {
                            let mut child = path.to_vec();
                            child.push(name);
                            self.walk(params, params_key, &child)?;
                        }
                    }
                    many => {
                        let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                        return Err(bad(&dotted, format!("name one driver, not {}", names.join(", "))));
                    }
                }
            }
            Ignored(why) => self.warn(format!("{dotted} is ignored: {why}")),
            Expect(fine, why) => {
                if let Some(v) = scalar(node, &dotted)? {
                    let v = v.trim().to_ascii_lowercase();
                    if !v.is_empty() && !fine.contains(&v.as_str()) {
                        self.warn(format!("{dotted} is ignored: {why}"));
                    }
                }
            }
            Only(fine, why) => {
                if let Some(v) = scalar(node, &dotted)? {
                    let v = v.trim().to_ascii_lowercase();
                    if !v.is_empty() && !fine.contains(&v.as_str()) {
                        return Err(bad(&dotted, *why));
                    }
                }
            }
            Unsupported(why) => {
                let empty = match node {
                    Yaml::Null => true,
                    Yaml::String(s) => s.trim().is_empty(),
                    Yaml::Array(a) => a.is_empty(),
                    Yaml::Hash(h) => h.is_empty(),
                    _ => false,
                };
                if !empty {
                    return Err(bad(&dotted, *why));
                }
            }
            Endpoints => self.endpoints(node, &dotted)?,
            Version => match scalar(node, &dotted)?.as_deref().map(str::trim) {
                None | Some("0.1") => {}
                Some(_) => return Err(bad(&dotted, "expected 0.1 (the only version of registry:2's configuration)")),
            },
        }
        Ok(())
    }

    /// `notifications.endpoints`: unknown keys warned about and dropped, the rest kept as JSON for
    /// [`crate::notifications::NotificationsConfig`], which checks the values.
    fn endpoints(&mut self, node: &Yaml, dotted: &str) -> Result<(), ConfigError> {
        let items = match node {
            Yaml::Null => return Ok(()),
            Yaml::Array(items) => items,
            _ => return Err(bad(dotted, "expected a list of endpoints")),
        };
        let mut list = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let here = format!("{dotted}[{i}]");
            let Value::Object(mut endpoint) = to_json(item) else { return Err(bad(&here, "expected a map (name, url, …)")) };
            for k in endpoint.keys().filter(|k| !ENDPOINT_KEYS.contains(&k.as_str())).cloned().collect::<Vec<_>>() {
                self.warn(format!("unknown key {here}.{k}"));
                endpoint.remove(&k);
            }
            if let Some(Value::Object(ignore)) = endpoint.get_mut("ignore") {
                for k in ignore.keys().filter(|k| !IGNORE_KEYS.contains(&k.as_str())).cloned().collect::<Vec<_>>() {
                    self.warn(format!("unknown key {here}.ignore.{k}"));
                    ignore.remove(&k);
                }
            }
            list.push(Value::Object(endpoint));
        }
        self.file.keys.insert(ENDPOINTS_SETTING.to_string(), dotted.to_string());
        self.file.values.insert(ENDPOINTS_SETTING.to_string(), Value::Array(list).to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::notifications::NotificationsConfig;
    use crate::storage::config::StorageConfig;

    fn parse(text: &str) -> ConfigFile {
        ConfigFile::parse("config.yml", text, Path::new("/etc/pier")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn parse_err(text: &str) -> ConfigError {
        ConfigFile::parse("config.yml", text, Path::new("/etc/pier")).unwrap_err()
    }

    #[test]
    fn flattens_into_registry2_environment_names() {
        let f = parse(
            "version: 0.1\nhttp:\n  addr: :5000\n  tls:\n    certificate: certs/domain.crt\n    key: /certs/domain.key\n\
             storage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: eu-west-1\n    bucket: b\n    forcepathstyle: true\n\
             \x20 delete:\n    enabled: false\n  redirect:\n    disable: true\n  maintenance:\n    readonly:\n      enabled: true\n\
             \x20   uploadpurging:\n      enabled: true\n      age: 168h\nauth:\n  htpasswd:\n    realm: Registry Realm\n    path: htpasswd\n\
             log:\n  level: info\n  formatter: json\n",
        );
        let want = [
            ("REGISTRY_HTTP_ADDR", ":5000"),
            ("REGISTRY_HTTP_TLS_CERTIFICATE", "/etc/pier/certs/domain.crt"),
            ("REGISTRY_HTTP_TLS_KEY", "/certs/domain.key"),
            ("REGISTRY_STORAGE", "s3"),
            ("REGISTRY_STORAGE_S3_ACCESSKEY", "AK"),
            ("REGISTRY_STORAGE_S3_FORCEPATHSTYLE", "true"),
            ("REGISTRY_STORAGE_DELETE_ENABLED", "false"),
            ("REGISTRY_STORAGE_REDIRECT_DISABLE", "true"),
            ("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true"),
            ("REGISTRY_STORAGE_MAINTENANCE_UPLOADPURGING_AGE", "168h"),
            ("REGISTRY_AUTH", "htpasswd"),
            ("REGISTRY_AUTH_HTPASSWD_REALM", "Registry Realm"),
            ("REGISTRY_AUTH_HTPASSWD_PATH", "/etc/pier/htpasswd"),
            ("REGISTRY_LOG_LEVEL", "info"),
            ("REGISTRY_LOG_FORMATTER", "json"),
        ];
        for (setting, value) in want {
            assert_eq!(f.get(setting).as_deref(), Some(value), "{setting}");
        }
        assert_eq!(f.key_of("REGISTRY_STORAGE_S3_BUCKET"), Some("storage.s3.bucket"));
        assert_eq!(f.key_of("REGISTRY_STORAGE"), Some("storage"));
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        // The settings read from it are the ones the environment would give.
        let c = Config::from_lookup(|k| f.get(k).filter(|_| k != "REGISTRY_AUTH")).unwrap();
        assert!(!c.delete_enabled && !c.redirect && c.read_only);
        assert_eq!(c.upload_expiry_secs, 168 * 3600);
        let StorageConfig::S3(s3) = StorageConfig::from_lookup(|k| f.get(k)).unwrap() else { panic!("not s3") };
        assert_eq!((s3.bucket.as_str(), s3.region.as_str(), s3.force_path_style), ("b", "eu-west-1", true));
    }

    #[test]
    fn the_proxy_block_configures_the_mirror_and_its_expiry() {
        let f = parse("version: 0.1\nproxy:\n  remoteurl: https://registry-1.docker.io\n  username: u\n  password: p\n  ttl: 72h0m0s\n");
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        let c = Config::from_lookup(|k| f.get(k)).unwrap();
        let m = c.mirror.expect("a mirror");
        assert_eq!((m.upstreams[0].url.as_str(), m.ttl_secs), ("https://registry-1.docker.io", 72 * 3600));
        // registry:2's default when unset, and 0 for never.
        let ttl = |text: &str| Config::from_lookup(|k| parse(text).get(k)).unwrap().mirror.map(|m| m.ttl_secs);
        assert_eq!(ttl("proxy:\n  remoteurl: http://up:5000\n"), Some(168 * 3600));
        assert_eq!(ttl("proxy:\n  remoteurl: http://up:5000\n  ttl: 0\n"), Some(0));
        assert!(Config::from_lookup(|k| parse("proxy:\n  remoteurl: http://up:5000\n  ttl: soon\n").get(k)).is_err());
    }

    #[test]
    fn drivers_as_plain_values_and_empty_files() {
        assert_eq!(parse("storage: inmemory\n").get("REGISTRY_STORAGE").as_deref(), Some("inmemory"));
        assert_eq!(parse("storage:\n  inmemory:\n").get("REGISTRY_STORAGE").as_deref(), Some("inmemory"));
        assert_eq!(parse("").settings().count(), 0);
        assert_eq!(parse("# nothing\n").settings().count(), 0);
        assert_eq!(parse("storage:\n  maintenance:\n    readonly: true\n").get("REGISTRY_STORAGE_MAINTENANCE_READONLY").as_deref(), Some("true"));
        // A driver Pier does not have becomes the value, and the storage settings refuse it under the key's name.
        let f = parse("storage:\n  gcs:\n    bucket: b\n");
        let e = StorageConfig::from_lookup(|k| f.get(k)).unwrap_err();
        assert_eq!(f.describe(&e, false).unwrap(), "config.yml: storage: unknown storage \"gcs\" (expected filesystem, inmemory, s3 or azure)");
    }

    #[test]
    fn unknown_keys_warn_by_name_and_ignored_ones_say_why() {
        // A second driver is an error; the rest only warns.
        let e = parse_err("storage:\n  filesystem: {}\n  s3x: {}\n");
        assert_eq!(e.setting, "storage");
        assert!(e.problem.contains("filesystem, s3x"), "{e}");
        let f = parse(
            "version: 0.1\nlog:\n  fields:\n    service: registry\nstorage:\n  cache:\n    blobdescriptor: inmemory\n\
             \x20 filesystem:\n    rootdirectory: /var/lib/registry\n    colour: red\nhttp:\n  addr: :5000\n  headers:\n\
             \x20   X-Content-Type-Options: [nosniff]\nhealth:\n  storagedriver:\n    enabled: true\ncolour: blue\n",
        );
        let w = f.warnings.join("\n");
        for expected in [
            "log.fields is ignored",
            "storage.cache is ignored",
            "unknown key storage.filesystem.colour",
            "http.headers is ignored",
            "health is ignored",
            "unknown key colour",
        ] {
            assert!(w.contains(expected), "{expected:?} not in {w}");
        }
        assert_eq!(f.get("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY").as_deref(), Some("/var/lib/registry"));
        // Only unusual values of Expect keys warn.
        assert!(parse("storage:\n  s3:\n    secure: true\n    v4auth: true\n").warnings.is_empty());
        assert_eq!(parse("storage:\n  s3:\n    secure: false\n").warnings.len(), 1);
    }

    #[test]
    fn keys_pier_cannot_honour_stop_it_by_name() {
        for (text, key) in [
            ("version: 0.2\n", "version"),
            ("http:\n  prefix: /registry/\n", "http.prefix"),
            ("http:\n  net: unix\n", "http.net"),
            ("http:\n  tls:\n    clientcas: [/ca.pem]\n", "http.tls.clientcas"),
            ("http:\n  tls:\n    letsencrypt:\n      email: a@b\n", "http.tls.letsencrypt"),
            ("storage:\n  s3:\n    sessiontoken: t\n", "storage.s3.sessiontoken"),
            ("storage:\n  azure:\n    credentials:\n      type: client_secret\n", "storage.azure.credentials.type"),
            ("storage:\n  delete:\n    enabled: [true]\n", "storage.delete.enabled"),
            ("storage:\n  delete: yes please\n", "storage.delete"),
            ("auth:\n  htpasswd: {}\n  token: {}\n", "auth"),
            ("notifications:\n  endpoints: {name: x}\n", "notifications.endpoints"),
        ] {
            assert_eq!(parse_err(text).setting, key, "{text}");
        }
        assert!(parse("http:\n  prefix: /\n  net: tcp\n").warnings.is_empty());
        let e = parse_err("storage: [\n");
        assert!(e.problem.starts_with("not YAML"), "{e}");
    }

    #[test]
    fn bad_values_are_named_by_key_unless_the_environment_set_them() {
        let f = parse("storage:\n  delete:\n    enabled: maybe\n");
        let e = Config::from_lookup(|k| f.get(k)).unwrap_err();
        assert_eq!(e.setting, "REGISTRY_STORAGE_DELETE_ENABLED");
        assert_eq!(f.describe(&e, false).unwrap(), "config.yml: storage.delete.enabled: expected true or false, got \"maybe\"");
        assert_eq!(f.describe(&e, true), None);
        // A required key the file lacks is named as the key it would need.
        let f = parse("storage:\n  s3:\n    accesskey: AK\n    secretkey: SK\n    region: r\n");
        let e = StorageConfig::from_lookup(|k| f.get(k)).unwrap_err();
        assert_eq!(
            f.describe(&e, false).unwrap(),
            "config.yml: storage.s3.bucket (or REGISTRY_STORAGE_S3_BUCKET): required: the bucket name"
        );
        // A secret never appears in a message.
        let f = parse("storage:\n  azure:\n    accountname: acct\n    accountkey: not!base64-s3cret\n    container: c\n");
        let e = StorageConfig::from_lookup(|k| f.get(k)).unwrap_err();
        let m = f.describe(&e, false).unwrap();
        assert!(m.starts_with("config.yml: storage.azure.accountkey: ") && !m.contains("s3cret"), "{m}");
        // Pier's own settings have no key.
        assert_eq!(f.describe(&ConfigError { setting: "PIER_UPLOAD_PART_SIZE".into(), problem: "x".into() }, false), None);
    }

    #[test]
    fn notification_endpoints_become_the_json_setting() {
        let f = parse(
            &[
                "notifications:",
                "  events:",
                "    includereferences: true",
                "  endpoints:",
                "    - name: alistener",
                "      disabled: false",
                "      url: https://my.listener.com/event",
                "      headers: {Authorization: [Bearer token]}",
                "      timeout: 1s",
                "      threshold: 10",
                "      backoff: 1s",
                "      ignoredmediatypes:",
                "        - application/octet-stream",
                "      ignore:",
                "        mediatypes:",
                "           - application/octet-stream",
                "        actions:",
                "           - pull",
                "           - unknownaction",
                "        colour: red",
                "      retries: 3",
            ]
            .join("\n"),
        );
        assert_eq!(f.warnings, ["unknown key notifications.endpoints[0].retries", "unknown key notifications.endpoints[0].ignore.colour"]);
        let e = NotificationsConfig::from_lookup(&|k| f.get(k)).unwrap_err();
        assert_eq!(f.describe(&e, false).unwrap(), "config.yml: notifications.endpoints: endpoints[0] (\"alistener\"): ignore.actions: \"unknownaction\" is not an action (pull, push, mount, delete)");
        let f = parse("notifications:\n  endpoints:\n    - name: a\n      url: http://a/\n    - name: b\n      url: https://b/e\n      disabled: true\n");
        let n = NotificationsConfig::from_lookup(&|k| f.get(k)).unwrap();
        assert_eq!(n.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }
}
