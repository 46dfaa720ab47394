//! `pier`: the native server. `pier serve` hosts the registry core over HTTP/1.1 (or HTTPS) with filesystem,
//! in-memory, S3 or Azure storage; settings come from flags, registry:2-style environment variables and registry:2's
//! configuration file, in that order of precedence.

use pier::auth::htpasswd::hash_password;
use pier::auth::token::Secret;
use pier::config::{parse_bool, parse_duration_secs, parse_size, Config, ConfigError};
use pier::config_file::ConfigFile;
use pier::platform::native::{build_registry, collect, serve, LogFormat, ServeOptions, Storage};
use pier::platform::native_metrics::{serve_metrics, Metrics};
use pier::platform::native_tls::{parse_minimum, TlsFiles, TlsReloader, CERTIFICATE_SETTING, KEY_SETTING, MINIMUM_SETTING};
use pier::registry::gc::{GcOptions, GcReport};
use pier::storage::config::StorageConfig;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

const USAGE: &str = "usage: pier serve [--config FILE] [--addr HOST:PORT] [--root DIR | --memory] [--no-delete]
                  [--read-only] [--part-size BYTES] [--upload-expiry DURATION] [--log-format text|json]
                  [--metrics-addr HOST:PORT]

  --config         registry:2's config.yml (also `pier serve FILE`, or env REGISTRY_CONFIGURATION_PATH); environment
                   variables override its values, flags override both (see the README: registry:2 configuration file)
  --addr           listen address (env PIER_ADDR or REGISTRY_HTTP_ADDR; default 127.0.0.1:5000; port 0 picks one)
  --root           data directory (env REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY; default ./pier-data)
  --memory         keep everything in memory (env REGISTRY_STORAGE=inmemory)
                   REGISTRY_STORAGE=s3|azure with REGISTRY_STORAGE_S3_*/REGISTRY_STORAGE_AZURE_* keeps blobs and
                   metadata in a bucket or container (see the README: Storage backends)
  --no-delete      refuse DELETE with 405 UNSUPPORTED (env REGISTRY_STORAGE_DELETE_ENABLED=false)
  --read-only      maintenance mode: refuse every push and delete with 405 UNSUPPORTED, serve pulls
                   (env REGISTRY_STORAGE_MAINTENANCE_READONLY='{\"enabled\":true}' or ..._READONLY_ENABLED=true)
  --part-size      multipart part size (env PIER_UPLOAD_PART_SIZE; default 8MiB)
  --upload-expiry  idle upload sessions expire after this (env PIER_UPLOAD_EXPIRY; default 24h)
  --log-format     request log lines on stdout: text or json (env PIER_LOG_FORMAT or REGISTRY_LOG_FORMATTER;
                   default text)
  --metrics-addr   serve Prometheus metrics at http://HOST:PORT/metrics, a listener of its own (env PIER_METRICS_ADDR;
                   default off)

Notifications: REGISTRY_NOTIFICATIONS_ENDPOINTS (a JSON list of registry:2's endpoints), PIER_NOTIFICATIONS_SECRET
(signs every delivery), see the README, section Notifications.

TLS: REGISTRY_HTTP_TLS_CERTIFICATE=FILE and REGISTRY_HTTP_TLS_KEY=FILE (PEM) serve HTTPS; changed files are
reloaded without a restart (see the README, section TLS).

Access control: REGISTRY_AUTH=htpasswd with REGISTRY_AUTH_HTPASSWD_PATH=FILE, rules in PIER_AUTH_RULES_PATH=FILE
(see the README, section Access control). Without it, writes are allowed only on a loopback address unless
PIER_ANONYMOUS_WRITE=true (or =false to refuse them there too).

usage: pier htpasswd [--cost N] USER    read a password from stdin, print an htpasswd line (bcrypt, default cost 10)

usage: pier gc [--root DIR | storage settings] [--dry-run] [--grace DURATION] [--untagged-after DURATION] [--cycles N] [--report]
  collect garbage online (a server may keep running on the same storage): blob links nothing references and then
  blobs no repository links; content is deleted once two cycles in a row found it unreferenced and its mark is older
  than the grace period (env PIER_GC_GRACE_PERIOD; default 6h; 0 for an immediate collection, which runs the two
  cycles at once). --untagged-after 7d also collects manifests no tag reaches once they are that old (env
  PIER_GC_UNTAGGED_AFTER; default: keep them). --dry-run reports what would go and changes nothing; --report prints
  the last cycle's report.

usage: pier du [--root DIR | storage settings]
  per repository: the bytes its images reference and the bytes only it references; the registry's totals (JSON)
";

struct Options {
    addr: String,
    /// Where `/metrics` listens; `None`: off.
    metrics_addr: Option<String>,
    storage: Storage,
    config: Config,
    serve: ServeOptions,
    log_format: LogFormat,
    tls: Option<TlsReloader>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where settings come from: an environment variable, else the configuration file's value (as registry:2 does).
struct Settings {
    file: Option<ConfigFile>,
}

impl Settings {
    fn get(&self, name: &str) -> Option<String> {
        env(name).or_else(|| self.file.as_ref()?.get(name).filter(|v| !v.is_empty()))
    }

    /// The message for a bad setting: named by its YAML key when the file is where it came from.
    fn describe(&self, e: &ConfigError) -> String {
        self.file.as_ref().and_then(|f| f.describe(e, env(&e.setting).is_some())).unwrap_or_else(|| e.to_string())
    }

    fn warn(&self, message: &str) {
        eprintln!("pier: warning: {message}");
    }
}

/// The configuration file named by `--config FILE`, a lone argument (registry:2's `serve FILE`) or
/// `REGISTRY_CONFIGURATION_PATH`.
fn config_path(args: &[String]) -> Result<Option<PathBuf>, String> {
    let mut path = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let given = match a.as_str() {
            "--config" => it.next().cloned().ok_or("--config needs a value")?,
            flag if flag.starts_with('-') => {
                // Every other flag but these takes a value.
                if !matches!(flag, "--memory" | "--no-delete" | "--read-only") {
                    it.next();
                }
                continue;
            }
            file => file.to_string(),
        };
        if path.replace(given).is_some() {
            return Err("one configuration file at most".into());
        }
    }
    Ok(path.or_else(|| env("REGISTRY_CONFIGURATION_PATH")).map(PathBuf::from))
}

/// A listen address as registry:2 writes it: `:5000` is every interface (IPv4), port 5000.
fn listen_addr(addr: &str) -> String {
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

/// Settings whose value is a file the native server reads for the core: (path setting, content setting).
const FILE_SETTINGS: [(&str, &str); 2] = [("REGISTRY_AUTH_HTPASSWD_PATH", "PIER_AUTH_HTPASSWD"), ("PIER_AUTH_RULES_PATH", "PIER_AUTH_RULES")];

/// Read the configuration from the settings, with `*_PATH` settings' files read into their content settings.
fn read_config(settings: &Settings) -> Result<Config, String> {
    let mut files: HashMap<&str, String> = HashMap::new();
    for (path_setting, content_setting) in FILE_SETTINGS {
        if let Some(path) = settings.get(path_setting) {
            if settings.get(content_setting).is_some() {
                return Err(format!("configuration setting {path_setting}: set it or {content_setting}, not both"));
            }
            let content = std::fs::read_to_string(&path).map_err(|e| {
                settings.describe(&ConfigError { setting: path_setting.into(), problem: format!("cannot read {path}: {e}") })
            })?;
            files.insert(content_setting, content);
        }
    }
    let lookup = |k: &str| settings.get(k).or_else(|| files.get(k).cloned());
    let mut config = Config::from_lookup(lookup).map_err(|mut e| {
        // Name the file setting the user wrote, not the content setting it was turned into.
        if let Some((path_setting, _)) = FILE_SETTINGS.iter().find(|(_, c)| *c == e.setting && files.contains_key(c)) {
            e.setting = path_setting.to_string();
        }
        settings.describe(&e)
    })?;
    if let Some(auth) = &mut config.auth {
        if auth.token_secret.is_none() {
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key).map_err(|e| format!("cannot generate a token secret: {e}"))?;
            auth.token_secret = Some(Secret::new(key.to_vec()));
            eprintln!("pier: PIER_AUTH_TOKEN_SECRET is not set: tokens are signed with a random key made at start (they do not survive a restart)");
        }
        eprintln!("pier: access control on ({} htpasswd users; token service {})", auth.users.len(), auth.service.as_deref().unwrap_or("<request Host>"));
    }
    Ok(config)
}

/// `pier htpasswd [--cost N] USER`: print `USER:$2y$...` for the password on stdin's first line.
fn htpasswd_line(args: &[String]) -> Result<String, String> {
    let (cost, user) = match args {
        [flag, cost, user] if flag == "--cost" => (cost.parse::<u32>().map_err(|_| "--cost needs a number".to_string())?, user),
        [user] => (10, user),
        _ => return Err("usage: pier htpasswd [--cost N] USER  (password on stdin)".into()),
    };
    if user.is_empty() || user.contains(':') {
        return Err("the user name must be non-empty and must not contain ':'".into());
    }
    let mut password = String::new();
    std::io::stdin().read_line(&mut password).map_err(|e| format!("cannot read the password: {e}"))?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err("empty password on stdin".into());
    }
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("cannot generate a salt: {e}"))?;
    Ok(format!("{user}:{}", hash_password(password.as_bytes(), cost, salt)?))
}

/// TLS from registry:2's settings: both files or neither.
fn read_tls(settings: &Settings) -> Result<Option<TlsReloader>, String> {
    let (certificate, key) = match (settings.get(CERTIFICATE_SETTING), settings.get(KEY_SETTING)) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => return Err(settings.describe(&ConfigError { setting: KEY_SETTING.into(), problem: "required with a certificate: the certificate's private key (PEM)".into() })),
        (None, Some(_)) => return Err(settings.describe(&ConfigError { setting: CERTIFICATE_SETTING.into(), problem: "required with a key: the certificate chain (PEM)".into() })),
    };
    let (tls13_only, warning) = match settings.get(MINIMUM_SETTING) {
        Some(v) => parse_minimum(MINIMUM_SETTING, &v).map_err(|e| settings.describe(&e))?,
        None => (false, None),
    };
    if let Some(w) = warning {
        settings.warn(&w);
    }
    let files = TlsFiles { certificate: PathBuf::from(certificate), key: PathBuf::from(key), tls13_only };
    TlsReloader::new(files).map(Some).map_err(|e| settings.describe(&e))
}

/// Settings Pier checks but does not act on (yet): the log level, a pull-through cache, notification endpoints.
fn check_settings_without_effect(settings: &Settings, config: &Config) -> Result<(), String> {
    for setting in ["REGISTRY_LOG_LEVEL", "REGISTRY_LOGLEVEL"] {
        if let Some(level) = settings.get(setting) {
            // registry:2's levels; Pier's request log is its access log, written at every level.
            if !matches!(level.trim().to_ascii_lowercase().as_str(), "error" | "warn" | "info" | "debug") {
                let e = ConfigError { setting: setting.into(), problem: format!("expected error, warn, info or debug, got {level:?}") };
                return Err(settings.describe(&e));
            }
        }
    }
    if let Some(mirror) = &config.mirror {
        for up in &mirror.upstreams {
            let names = if up.prefix.is_empty() { "every repository".to_string() } else { format!("repositories under {}/", up.prefix) };
            eprintln!("pier: pull-through cache: {names} mirrored from {} (pull-only; tags revalidated after {} s)", up.url, mirror.tag_ttl_secs);
        }
        if mirror.ttl_secs == 0 {
            eprintln!("pier: pull-through cache: cached content is kept (REGISTRY_PROXY_TTL=0)");
        } else {
            let when = match (config.gc_enabled, config.gc_interval_secs) {
                (true, Some(every)) => format!("by the collection every {every} s"),
                _ => "when garbage collection runs (pier gc, POST /admin/gc; PIER_GC_INTERVAL schedules it)".to_string(),
            };
            eprintln!("pier: pull-through cache: content nobody pulled for {} s (REGISTRY_PROXY_TTL) is collected {when}", mirror.ttl_secs);
        }
    }
    let endpoints: Vec<&str> = config.notifications.active().map(|e| e.name.as_str()).collect();
    if !endpoints.is_empty() {
        eprintln!(
            "pier: notifications: {} endpoint(s) ({}); events go through the outbox in the storage{}",
            endpoints.len(),
            endpoints.join(", "),
            if config.notifications.secret.is_some() { ", signed (X-Pier-Signature)" } else { ", unsigned (set PIER_NOTIFICATIONS_SECRET to sign them)" }
        );
    }
    Ok(())
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let file = match config_path(args)? {
        Some(path) => {
            let file = ConfigFile::read(&path)?;
            for w in &file.warnings {
                eprintln!("pier: warning: {}: {w}", file.name);
            }
            Some(file)
        }
        None => None,
    };
    let settings = Settings { file };
    let mut config = read_config(&settings)?;
    let mut addr = settings.get("PIER_ADDR").or_else(|| settings.get("REGISTRY_HTTP_ADDR")).unwrap_or_else(|| "127.0.0.1:5000".into());
    let mut storage = match StorageConfig::from_lookup(|k| settings.get(k)).map_err(|e| settings.describe(&e))? {
        StorageConfig::Filesystem(root) => Storage::Filesystem(PathBuf::from(root.as_deref().unwrap_or("pier-data"))),
        StorageConfig::InMemory => Storage::Memory,
        StorageConfig::S3(s) => Storage::S3(s),
        StorageConfig::Azure(a) => Storage::Azure(a),
    };
    let mut log_format = match (env("PIER_LOG_FORMAT"), settings.get("REGISTRY_LOG_FORMATTER")) {
        (Some(v), _) => LogFormat::parse("PIER_LOG_FORMAT", &v).map_err(|e| e.to_string())?,
        (None, Some(v)) => {
            let (format, warning) = LogFormat::parse_registry_formatter("REGISTRY_LOG_FORMATTER", &v).map_err(|e| settings.describe(&e))?;
            if let Some(w) = warning {
                settings.warn(&w);
            }
            format
        }
        (None, None) => LogFormat::default(),
    };
    let tls = read_tls(&settings)?;
    let mut metrics_addr = env("PIER_METRICS_ADDR").filter(|v| !v.trim().is_empty());
    check_settings_without_effect(&settings, &config)?;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--config" => {
                value("--config")?;
            }
            "--addr" => addr = value("--addr")?,
            "--metrics-addr" => metrics_addr = Some(value("--metrics-addr")?),
            "--root" => storage = Storage::Filesystem(PathBuf::from(value("--root")?)),
            "--memory" => storage = Storage::Memory,
            "--no-delete" => config.delete_enabled = false,
            "--read-only" => config.read_only = true,
            "--log-format" => log_format = LogFormat::parse("--log-format", &value("--log-format")?).map_err(|e| e.to_string())?,
            "--delete" => config.delete_enabled = parse_bool("--delete", &value("--delete")?).map_err(|e| e.to_string())?,
            "--part-size" => config.part_size = parse_size("--part-size", &value("--part-size")?).map_err(|e| e.to_string())?,
            "--upload-expiry" => {
                config.upload_expiry_secs = parse_duration_secs("--upload-expiry", &value("--upload-expiry")?).map_err(|e| e.to_string())?
            }
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            _ => {} // the configuration file, read above
        }
    }
    let addr = listen_addr(&addr);
    if config.auth.is_none() && config.anonymous_write.is_none() {
        // Open on a loopback address (a developer's machine); anywhere else, writes need users or an explicit opt-in.
        let loopback = addr.parse::<std::net::SocketAddr>().map(|a| a.ip().is_loopback()).unwrap_or(addr.starts_with("localhost:"));
        config.anonymous_write = Some(loopback);
    }
    if config.read_only {
        eprintln!("pier: read-only mode: pushes and deletes are refused with 405 UNSUPPORTED, pulls are served");
    }
    if config.auth.is_none() {
        match config.anonymous_write {
            Some(true) => eprintln!("pier: no access control: anyone who can reach {addr} may push and delete"),
            _ => eprintln!(
                "pier: no access control: reads are open, writes are refused (configure REGISTRY_AUTH=htpasswd, or set \
                 PIER_ANONYMOUS_WRITE=true for an open registry)"
            ),
        }
    }
    let mut serve = ServeOptions::default();
    if let Some(v) = env("PIER_HTTP_HEADER_TIMEOUT") {
        serve.header_timeout = Duration::from_secs(parse_duration_secs("PIER_HTTP_HEADER_TIMEOUT", &v).map_err(|e| e.to_string())?);
    }
    if let Some(v) = env("PIER_HTTP_BODY_TIMEOUT") {
        serve.body_timeout = Duration::from_secs(parse_duration_secs("PIER_HTTP_BODY_TIMEOUT", &v).map_err(|e| e.to_string())?);
    }
    if let Some(v) = env("PIER_HTTP_MAX_CONNECTIONS") {
        serve.max_connections = v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("configuration setting PIER_HTTP_MAX_CONNECTIONS: expected a positive number, got {v:?}"))?;
    }
    let metrics_addr = metrics_addr.map(|a| listen_addr(&a));
    Ok(Options { addr, metrics_addr, storage, config, serve, log_format, tls })
}

/// `pier gc` and `pier du`: the registry's storage, opened like `pier serve` opens it, without serving.
fn maintenance(cmd: &str, args: &[String]) -> ExitCode {
    let mut rest = Vec::new();
    let (mut dry_run, mut report_only, mut grace, mut cycles, mut untagged) = (false, false, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dry-run" if cmd == "gc" => dry_run = true,
            "--report" if cmd == "gc" => report_only = true,
            "--grace" if cmd == "gc" => match it.next().map(|v| parse_duration_secs("--grace", v)) {
                Some(Ok(v)) => grace = Some(v),
                Some(Err(e)) => return fail(&e.to_string()),
                None => return fail("--grace needs a value"),
            },
            "--untagged-after" if cmd == "gc" => match it.next().map(|v| parse_duration_secs("--untagged-after", v)) {
                Some(Ok(v)) => untagged = Some(v),
                Some(Err(e)) => return fail(&e.to_string()),
                None => return fail("--untagged-after needs a value"),
            },
            "--cycles" if cmd == "gc" => match it.next().and_then(|v| v.parse::<usize>().ok()).filter(|n| *n > 0) {
                Some(n) => cycles = Some(n),
                None => return fail("--cycles needs a positive number"),
            },
            _ => rest.push(a.clone()),
        }
    }
    let opts = match parse_options(&rest) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start runtime: {e}")),
    };
    let local = tokio::task::LocalSet::new();
    let cmd = cmd.to_string();
    let result: Result<(), String> = local.block_on(&runtime, async move {
        let grace = grace.unwrap_or(opts.config.gc_grace_secs);
        let untagged_after_secs = untagged.or(opts.config.gc_untagged_after_secs);
        let registry = build_registry(&opts.storage, opts.config, opts.log_format, None).map_err(|e| format!("cannot open storage: {e}"))?;
        let json = |v: &dyn erased::Json| v.pretty();
        if cmd == "du" {
            let usage = registry.storage_usage().await.map_err(|e| e.to_string())?;
            println!("{}", json(&usage));
            return Ok(());
        }
        if report_only {
            let report = registry.gc_last_report().await.map_err(|e| e.to_string())?;
            println!("{}", report.map_or_else(|| "no collection has finished yet".to_string(), |r| json(&r)));
            return Ok(());
        }
        // A mark is acted on only by a later cycle (links one cycle, their bytes the next): with no grace period the
        // three cycles run now, otherwise the deletions come with later runs (or the server's schedule, or the
        // Workers cron) once the grace period has passed.
        let cycles = cycles.unwrap_or(if grace == 0 { 3 } else { 1 });
        let options = GcOptions { grace_secs: grace, dry_run, untagged_after_secs, ..GcOptions::default() };
        let started = std::time::Instant::now();
        let reports = collect(&registry, &options, cycles, |r| {
            eprint!(
                "\rpier gc: cycle {} - {} repositories, {} manifests marked, {} links and {} blobs removed, {} store calls",
                r.cycle, r.repositories, r.manifests_marked, r.links_deleted, r.blobs_deleted, r.store_calls
            );
        })
        .await
        .map_err(|e| e.to_string())?;
        eprintln!();
        let sum = |f: fn(&GcReport) -> u64| reports.iter().map(f).sum::<u64>();
        let verb = if dry_run { "would delete" } else { "deleted" };
        eprintln!(
            "pier gc: {} cycle(s): {verb} {} blobs ({} bytes) and {} repository links; {} links and {} blobs marked for a later cycle (grace {grace} s); {} store calls; {:.1} s",
            reports.len(),
            sum(|r| r.blobs_deleted),
            sum(|r| r.bytes_reclaimed),
            sum(|r| r.links_deleted),
            reports.last().map_or(0, |r| r.links_tombstoned),
            reports.last().map_or(0, |r| r.blobs_tombstoned),
            sum(|r| r.store_calls),
            started.elapsed().as_secs_f64()
        );
        let report = reports.last().cloned().unwrap_or_default();
        println!("{}", json(&report));
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("pier: {message}");
    ExitCode::from(2)
}

/// Pretty JSON of anything serializable, behind a trait object so one closure serves several types.
mod erased {
    pub trait Json {
        fn pretty(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn pretty(&self) -> String {
            serde_json::to_string_pretty(self).unwrap_or_default()
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {}
        Some("htpasswd") => {
            return match htpasswd_line(&args[1..]) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pier: {e}");
                    ExitCode::from(2)
                }
            };
        }
        Some(cmd @ ("gc" | "du")) => return maintenance(cmd, &args[1..]),
        Some("--version") | Some("version") => {
            println!("pier {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help") | Some("-h") | Some("help") => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprint!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    let opts = match parse_options(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pier: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pier: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        let metrics = opts.metrics_addr.as_ref().map(|_| Rc::new(Metrics::new()));
        let registry = build_registry(&opts.storage, opts.config, opts.log_format, metrics.clone())
            .map_err(|e| format!("cannot open storage: {e}"))?;
        let registry = Rc::new(registry);
        if let (Some(addr), Some(metrics)) = (&opts.metrics_addr, &metrics) {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} (metrics): {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            eprintln!("pier: metrics on http://{local}/metrics");
            tokio::task::spawn_local(serve_metrics(listener, registry.clone(), metrics.clone()));
        }
        let listener = tokio::net::TcpListener::bind(&opts.addr).await.map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        println!("pier listening on {scheme}://{local_addr}");
        let _ = std::io::stdout().flush();
        serve(listener, registry, opts.serve, opts.tls, metrics).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pier: {e}");
            ExitCode::FAILURE
        }
    }
}
