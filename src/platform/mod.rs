//! Platform adapters: each turns its platform's requests into [`crate::api::Request`], builds the stores from its
//! bindings and configuration, and turns the core's response back. They hold no registry logic.

#[cfg(not(target_arch = "wasm32"))]
pub mod native;
#[cfg(not(target_arch = "wasm32"))]
pub mod native_http;
#[cfg(not(target_arch = "wasm32"))]
pub mod native_metrics;
#[cfg(not(target_arch = "wasm32"))]
pub mod native_tls;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub mod workers;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub mod wasi;
#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
pub mod wasi_stores;
#[cfg(all(target_arch = "wasm32", target_os = "wasi", feature = "spin-kv"))]
pub mod spin_kv;
