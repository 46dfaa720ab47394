//! Request and response bodies: empty, whole, or a stream of chunks (blobs are never held whole).

use crate::error::{Error, ErrorCode, Result};
use crate::storage::ByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// A body.
pub enum Body {
    Empty,
    Full(Bytes),
    Stream(ByteStream),
}

impl Default for Body {
    fn default() -> Self {
        Body::Empty
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Empty => f.write_str("Body::Empty"),
            Body::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Body::Stream(_) => f.write_str("Body::Stream"),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::Full(b)
    }
}

impl From<Vec<u8>> for Body {
    fn from(b: Vec<u8>) -> Self {
        Body::Full(Bytes::from(b))
    }
}

impl Body {
    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes>> {
        match self {
            Body::Empty => None,
            Body::Full(b) => {
                let b = std::mem::take(b);
                *self = Body::Empty;
                if b.is_empty() {
                    None
                } else {
                    Some(Ok(b))
                }
            }
            Body::Stream(s) => s.next().await,
        }
    }

    /// Read the whole body, refusing more than `limit` bytes with `PayloadTooLarge` (for manifests).
    pub async fn collect_limited(mut self, limit: usize) -> Result<Bytes> {
        let mut out = BytesMut::new();
        while let Some(chunk) = self.next_chunk().await {
            let chunk = chunk?;
            if out.len() + chunk.len() > limit {
                return Err(Error::new(ErrorCode::PayloadTooLarge).with_detail(format!("body larger than {limit} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }
}
