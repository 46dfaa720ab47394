//! Digests `algorithm:encoded`. Pier verifies content with sha256 and sha512 (the algorithms the OCI image spec
//! registers); anything else is `DIGEST_INVALID` rather than stored unverified.

use crate::error::{Error, ErrorCode, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256, Sha512};
use std::fmt;
use std::str::FromStr;

/// A digest algorithm Pier can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    /// The algorithm's name in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// Digest of `data` in one go (manifests and other small bodies).
    pub fn digest(self, data: &[u8]) -> Digest {
        let hex = match self {
            Algorithm::Sha256 => to_hex(&Sha256::digest(data)),
            Algorithm::Sha512 => to_hex(&Sha512::digest(data)),
        };
        Digest { algorithm: self, hex }
    }
}

/// A validated digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// Parse `algorithm:hex`; the hex part must be lower case and of the algorithm's length.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = || Error::msg(ErrorCode::DigestInvalid, "invalid digest").with_detail(s.chars().take(200).collect::<String>());
        let (alg, hex) = s.split_once(':').ok_or_else(invalid)?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => {
                return Err(Error::msg(ErrorCode::DigestInvalid, "unsupported digest algorithm")
                    .with_detail(alg.chars().take(50).collect::<String>()))
            }
        };
        if hex.len() != algorithm.hex_len() || !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
            return Err(invalid());
        }
        Ok(Digest { algorithm, hex: hex.to_string() })
    }

    /// Build from raw hash bytes.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Digest { algorithm, hex: to_hex(bytes) }
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex-encoded part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

/// Lower-case hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let d = Digest::parse("sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a").unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert_eq!(Algorithm::Sha256.digest(b"{}"), d);
        let d512 = Algorithm::Sha512.digest(b"");
        assert_eq!(Digest::parse(&d512.to_string()).unwrap(), d512);
        assert!(d512.hex().starts_with("cf83e1357eefb8bd"));
    }

    #[test]
    fn rejects_bad_digests() {
        for s in [
            "", "sha256", "sha256:", "sha256:abc", "md5:d41d8cd98f00b204e9800998ecf8427e", "SHA256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136FA355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a0",
            "sha256:../../../../etc/passwd00000000000000000000000000000000000000000",
        ] {
            assert_eq!(Digest::parse(s).unwrap_err().code, ErrorCode::DigestInvalid, "{s}");
        }
    }
}
