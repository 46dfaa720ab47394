//! Upload sessions as data: the state a blob upload carries between stateless requests (offset, resumable hash,
//! multipart parts written, the tail shorter than a part), serialisable into the metadata store. The logic that moves
//! bytes lives in `registry::uploads`; this module holds no I/O.

pub mod hasher;
pub mod session;

pub use hasher::ResumableSha256;
pub use session::{Claim, PartRecord, UploadSession};
