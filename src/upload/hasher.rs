//! A SHA-256 whose state can be saved between requests: a chunked upload arrives over many stateless requests and
//! each byte must be hashed exactly once, so the final PUT can verify the digest without reading the blob back.
//! The `sha2` crate keeps its state private, so this keeps the eight state words, the partial block and the length
//! itself and drives `sha2::compress256` (which uses SHA-NI or other CPU extensions when present).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// Resumable SHA-256 state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumableSha256 {
    state: [u32; 8],
    block: Vec<u8>,
    len: u64,
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        ResumableSha256 { state: H0, block: Vec::with_capacity(64), len: 0 }
    }
}

impl ResumableSha256 {
    /// A fresh hash.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was hashed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hash more bytes.
    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.block.is_empty() {
            let take = (64 - self.block.len()).min(data.len());
            self.block.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.block.len() < 64 {
                return;
            }
            let block = GenericArray::clone_from_slice(&self.block);
            sha2::compress256(&mut self.state, &[block]);
            self.block.clear();
        }
        let full = data.len() / 64 * 64;
        compress_blocks(&mut self.state, &data[..full]);
        self.block.extend_from_slice(&data[full..]);
    }

    /// The digest of everything hashed so far (the state itself is left as it is, so hashing can go on).
    pub fn finalize(&self) -> [u8; 32] {
        let mut state = self.state;
        let bit_len = self.len.wrapping_mul(8);
        let mut tail = self.block.clone();
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bit_len.to_be_bytes());
        compress_blocks(&mut state, &tail);
        let mut out = [0u8; 32];
        for (i, w) in state.iter().enumerate() {
            out[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

fn compress_blocks(state: &mut [u32; 8], data: &[u8]) {
    for block in data.chunks_exact(64) {
        sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
    }
}

/// The saved form: `{"h":[8 words],"b":"<base64 partial block>","n":len}`.
#[derive(Serialize, Deserialize)]
struct Saved {
    h: [u32; 8],
    b: String,
    n: u64,
}

impl Serialize for ResumableSha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Saved { h: self.state, b: B64.encode(&self.block), n: self.len }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for ResumableSha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let saved = Saved::deserialize(d)?;
        let block = B64.decode(saved.b.as_bytes()).map_err(serde::de::Error::custom)?;
        if block.len() >= 64 || (saved.n % 64) as usize != block.len() {
            return Err(serde::de::Error::custom("inconsistent hash state"));
        }
        Ok(ResumableSha256 { state: saved.h, block, len: saved.n })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn matches_sha2_for_any_split() {
        for n in [0, 1, 55, 56, 63, 64, 65, 127, 128, 1000, 4096 * 3 + 17, 300_000] {
            let d = data(n);
            let want: [u8; 32] = Sha256::digest(&d).into();
            for split in [1usize, 7, 63, 64, 65, 1000, 65536] {
                let mut h = ResumableSha256::new();
                for c in d.chunks(split) {
                    h.update(c);
                }
                assert_eq!(h.finalize(), want, "n={n} split={split}");
            }
        }
    }

    #[test]
    fn survives_serialisation_mid_stream() {
        let d = data(10_001);
        let want: [u8; 32] = Sha256::digest(&d).into();
        let mut h = ResumableSha256::new();
        for c in d.chunks(333) {
            let json = serde_json::to_string(&h).unwrap();
            h = serde_json::from_str(&json).unwrap();
            h.update(c);
        }
        assert_eq!(h.finalize(), want);
        assert_eq!(h.len(), 10_001);
    }

    #[test]
    fn rejects_inconsistent_state() {
        assert!(serde_json::from_str::<ResumableSha256>(r#"{"h":[0,0,0,0,0,0,0,0],"b":"AAAA","n":5}"#).is_err());
    }
}
