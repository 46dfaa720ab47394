//! Tags (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`) and references: the last path segment of a manifest URL, which is a
//! digest when it contains a colon and a tag otherwise.

use super::digest::Digest;
use crate::error::{Error, ErrorCode, Result};
use std::fmt;

/// A validated tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validate against `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
    pub fn parse(s: &str) -> Result<Self> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 128
            && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(Error::new(ErrorCode::TagInvalid).with_detail(s.chars().take(200).collect::<String>()))
        }
    }

    /// The tag as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A manifest reference: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// Parse a reference; anything with a colon is taken as a digest.
    pub fn parse(s: &str) -> Result<Self> {
        if s.contains(':') {
            Digest::parse(s).map(Reference::Digest)
        } else {
            Tag::parse(s).map(Reference::Tag)
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for t in ["latest", "v1.0.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(Tag::parse(t).is_ok(), "{t}");
        }
        for t in ["", ".a", "-a", "a/b", "a:b", "a b", &"a".repeat(129), "a%2f"] {
            assert_eq!(Tag::parse(t).unwrap_err().code, ErrorCode::TagInvalid, "{t}");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(Reference::parse("latest").unwrap(), Reference::Tag(_)));
        let d = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        assert!(matches!(Reference::parse(d).unwrap(), Reference::Digest(_)));
        assert_eq!(Reference::parse("sha256:zz").unwrap_err().code, ErrorCode::DigestInvalid);
    }
}
