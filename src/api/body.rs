//! Request and response bodies: empty, whole, or a stream of chunks (blobs are never held whole).

use crate::error::{Error, ErrorCode, Result};
use crate::storage::ByteStream;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

/// How much of a refused body is read and discarded before answering.
pub const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

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
                self.drain(DRAIN_LIMIT).await;
                return Err(Error::new(ErrorCode::PayloadTooLarge).with_detail(format!("body larger than {limit} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// Read and discard up to `max` bytes. An error answered before the client has finished sending is lost by some
    /// proxies (wrangler's local proxy among them), so refused bodies of moderate size are consumed first.
    pub async fn drain(&mut self, max: u64) {
        let mut seen = 0u64;
        while seen < max {
            match self.next_chunk().await {
                Some(Ok(c)) => seen += c.len() as u64,
                _ => break,
            }
        }
    }
}
