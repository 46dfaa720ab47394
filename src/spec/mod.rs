//! The vocabulary of the OCI Distribution Spec as pure types with validation and no I/O: repository names, tags,
//! references, digests, byte ranges, pagination, media types and manifests. Everything here is a small parser with
//! unit tests, safe to feed arbitrary client input.

pub mod digest;
#[cfg(test)]
mod fuzz_smoke;
pub mod manifest;
pub mod media_types;
pub mod name;
pub mod pagination;
pub mod range;
pub mod reference;

pub use digest::{Algorithm, Digest};
pub use name::RepositoryName;
pub use reference::{Reference, Tag};
