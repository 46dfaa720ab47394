//! `pier`: the native server. `pier serve` hosts the registry core over HTTP/1.1 with filesystem or in-memory
//! storage; settings come from flags or from registry:2-style environment variables.

use pier::config::{parse_bool, parse_duration_secs, parse_size, Config};
use pier::platform::native::{build_registry, serve, Storage};
use pier::storage::config::StorageConfig;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

const USAGE: &str = "usage: pier serve [--addr HOST:PORT] [--root DIR | --memory] [--no-delete]
                  [--part-size BYTES] [--upload-expiry DURATION]

  --addr           listen address (env PIER_ADDR or REGISTRY_HTTP_ADDR; default 127.0.0.1:5000; port 0 picks one)
  --root           data directory (env REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY; default ./pier-data)
  --memory         keep everything in memory (env REGISTRY_STORAGE=inmemory)
                   REGISTRY_STORAGE=s3|azure with REGISTRY_STORAGE_S3_*/REGISTRY_STORAGE_AZURE_* keeps blobs and
                   metadata in a bucket or container (see the README: Storage backends)
  --no-delete      refuse DELETE with 405 UNSUPPORTED (env REGISTRY_STORAGE_DELETE_ENABLED=false)
  --part-size      multipart part size (env PIER_UPLOAD_PART_SIZE; default 8MiB)
  --upload-expiry  idle upload sessions expire after this (env PIER_UPLOAD_EXPIRY; default 24h)
";

struct Options {
    addr: String,
    storage: Storage,
    config: Config,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut config = Config::from_lookup(env).map_err(|e| e.to_string())?;
    let mut addr = env("PIER_ADDR").or_else(|| env("REGISTRY_HTTP_ADDR")).unwrap_or_else(|| "127.0.0.1:5000".into());
    let mut storage = match StorageConfig::from_lookup(env).map_err(|e| e.to_string())? {
        StorageConfig::Filesystem(root) => Storage::Filesystem(PathBuf::from(root.as_deref().unwrap_or("pier-data"))),
        StorageConfig::InMemory => Storage::Memory,
        StorageConfig::S3(s) => Storage::S3(s),
        StorageConfig::Azure(a) => Storage::Azure(a),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match a.as_str() {
            "--addr" => addr = value("--addr")?,
            "--root" => storage = Storage::Filesystem(PathBuf::from(value("--root")?)),
            "--memory" => storage = Storage::Memory,
            "--no-delete" => config.delete_enabled = false,
            "--delete" => config.delete_enabled = parse_bool("--delete", &value("--delete")?).map_err(|e| e.to_string())?,
            "--part-size" => config.part_size = parse_size("--part-size", &value("--part-size")?).map_err(|e| e.to_string())?,
            "--upload-expiry" => {
                config.upload_expiry_secs = parse_duration_secs("--upload-expiry", &value("--upload-expiry")?).map_err(|e| e.to_string())?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(Options { addr, storage, config })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {}
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
        let registry = build_registry(&opts.storage, opts.config).map_err(|e| format!("cannot open storage: {e}"))?;
        let listener = tokio::net::TcpListener::bind(&opts.addr).await.map_err(|e| format!("cannot listen on {}: {e}", opts.addr))?;
        let local_addr = listener.local_addr().map_err(|e| e.to_string())?;
        println!("pier listening on http://{local_addr}");
        let _ = std::io::stdout().flush();
        serve(listener, Rc::new(registry)).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pier: {e}");
            ExitCode::FAILURE
        }
    }
}
