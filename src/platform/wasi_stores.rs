//! Store selection for the wasi:http adapter. A host may run every request in a fresh instance (`wasmtime serve`
//! does), so only stores outside the instance work: S3 or Azure Blob over `wasi:http`, with the metadata kept in the
//! same object store (`ObjectMetaStore`). Settings are registry:2's (`REGISTRY_STORAGE=s3|azure`, …).

use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::registry::{Environment, Registry};
use crate::storage::config::StorageConfig;
use crate::storage::http::HttpClient;
use crate::storage::object_meta::{ObjectMetaStore, DEFAULT_PREFIX};
use crate::storage::{MetaStore, ObjectStore};
use std::rc::Rc;

/// Build the registry from settings read through `lookup`.
pub fn build_registry(
    lookup: impl Fn(&str) -> Option<String>,
    http: Rc<dyn HttpClient>,
    env: Rc<dyn Environment>,
) -> Result<Registry, Error> {
    let unavailable = |m: String| Error::msg(ErrorCode::Unavailable, m);
    let mut config = Config::from_lookup(&lookup).map_err(|e| unavailable(e.to_string()))?;
    // Safe by default, as on Workers: without users nobody may write unless PIER_ANONYMOUS_WRITE=true.
    config.anonymous_write.get_or_insert(false);
    if config.auth.as_ref().is_some_and(|a| a.token_secret.is_none()) {
        // Each instance would sign with its own random key, and a token from one would fail on the next.
        return Err(unavailable("configuration setting PIER_AUTH_TOKEN_SECRET: required with access control on wasi:http hosts".into()));
    }
    let storage = StorageConfig::from_lookup(&lookup).map_err(|e| unavailable(e.to_string()))?;
    let clock_env = env.clone();
    let clock: Rc<dyn Fn() -> u64> = Rc::new(move || clock_env.now_unix());
    let objects: Rc<dyn ObjectStore> = match storage {
        StorageConfig::S3(s) => Rc::new(s.build(http.clone(), clock).map_err(|e| unavailable(e.to_string()))?),
        StorageConfig::Azure(a) => Rc::new(a.build(http.clone(), clock).map_err(|e| unavailable(e.to_string()))?),
        StorageConfig::Filesystem(_) | StorageConfig::InMemory => {
            return Err(unavailable(
                "configuration setting REGISTRY_STORAGE: a wasi:http component keeps nothing between requests; use s3 or azure".into(),
            ))
        }
    };
    let meta = metadata_store(&lookup, objects.clone())?;
    let mirrored = config.mirror.is_some();
    // Notifications go through the outbox in the metadata store; deliveries use the same outbound HTTP as the stores.
    let registry = Registry::new(objects, meta, config, env).with_notification_client(http.clone());
    Ok(if mirrored { registry.with_upstream_client(http) } else { registry })
}

/// Where metadata lives: `PIER_METADATA=object` (the object store, every host) or, in the Spin build,
/// `PIER_METADATA=spin-kv` (Spin's key-value store `PIER_SPIN_KV_STORE`, default `default`).
fn metadata_store(lookup: &impl Fn(&str) -> Option<String>, objects: Rc<dyn ObjectStore>) -> Result<Rc<dyn MetaStore>, Error> {
    let unavailable = |m: String| Error::msg(ErrorCode::Unavailable, m);
    match lookup("PIER_METADATA").as_deref().map(str::trim) {
        None | Some("") | Some("object") => Ok(Rc::new(ObjectMetaStore::new(objects, DEFAULT_PREFIX))),
        #[cfg(feature = "spin-kv")]
        Some("spin-kv") => {
            let name = lookup("PIER_SPIN_KV_STORE").unwrap_or_else(|| "default".into());
            let kv: Rc<dyn MetaStore> = Rc::new(super::spin_kv::SpinKvMetaStore::new(&name));
            // Upload sessions and the collector's state are claimed by create-if-absent races that must have one
            // winner; Spin's compare-and-swap is atomic only for a replace (see `spin_kv`), so they stay in the
            // object store, which checks If-None-Match atomically. The health probe reads the object store too: it
            // is the remote one (Spin's key-value store is the host's own), and `/health` must fail when it does.
            let in_objects: Rc<dyn MetaStore> = Rc::new(ObjectMetaStore::new(objects, DEFAULT_PREFIX));
            let prefixes = [crate::registry::keys::UPLOADS_PREFIX, "_gc/", "_health/"];
            Ok(Rc::new(crate::storage::split::SplitMetaStore::new(&prefixes, in_objects, kv)))
        }
        #[cfg(not(feature = "spin-kv"))]
        Some("spin-kv") => Err(unavailable(
            "configuration setting PIER_METADATA: spin-kv needs the Spin build of the component (scripts/build-wasi --spin)".into(),
        )),
        Some(other) => Err(unavailable(format!("configuration setting PIER_METADATA: {other:?} is not object or spin-kv"))),
    }
}
