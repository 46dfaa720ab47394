//! Store selection for the wasi:http adapter. Every request may run in a fresh instance (`wasmtime serve` does
//! that), so only stores outside the instance work: S3 or Azure Blob over `wasi:http`, metadata in the same object
//! store.

use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::registry::{Environment, Registry};
use crate::storage::http::HttpClient;
use std::rc::Rc;

/// Build the registry from settings read through `lookup`.
pub fn build_registry(
    lookup: impl Fn(&str) -> Option<String>,
    _http: Rc<dyn HttpClient>,
    _env: Rc<dyn Environment>,
) -> Result<Registry, Error> {
    let _config = Config::from_lookup(&lookup).map_err(|e| Error::msg(ErrorCode::Unavailable, e.to_string()))?;
    Err(Error::msg(ErrorCode::Unavailable, "configuration setting REGISTRY_STORAGE: s3 and azure backends are not built yet"))
}
