//! Pier: an OCI Distribution Spec v1.1 (Docker Registry HTTP API V2) registry whose core is a pure function of
//! (request, stores) → response, so it runs unchanged natively, in workerd and in wasi:http hosts.
//!
//! The core (`spec`, `api`, `registry`, `upload`, `storage` traits, `auth`, `config`, `events`) imports no platform crate; platform
//! adapters under `platform` turn their requests into [`api::Request`] and hand the core its stores.

pub mod api;
pub mod auth;
pub mod config;
#[cfg(not(target_arch = "wasm32"))]
pub mod config_file;
pub mod error;
pub mod events;
pub mod notifications;
pub mod platform;
pub mod registry;
pub mod sign;
pub mod spec;
pub mod storage;
pub mod ui;
pub mod upload;

pub use error::{Error, ErrorCode};
pub use registry::Registry;
