//! Byte ranges in both directions: the `Content-Range` of an upload chunk (`<start>-<end>`, inclusive, as the
//! distribution spec writes it) and the `Range` of a blob GET (`bytes=a-b`, `bytes=a-`, `bytes=-n`).

use crate::error::{Error, ErrorCode, Result};

/// An inclusive chunk range sent with a PATCH or PUT: `start-end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRange {
    pub start: u64,
    pub end: u64,
}

impl ChunkRange {
    /// Parse `start-end`, also accepting the `bytes ` prefix and a `/total` suffix some clients send.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = || {
            Error::msg(ErrorCode::BlobUploadInvalid, "invalid Content-Range").with_detail(s.chars().take(100).collect::<String>())
        };
        let s = s.trim();
        let s = s.strip_prefix("bytes ").or_else(|| s.strip_prefix("bytes=")).unwrap_or(s).trim();
        let s = s.split_once('/').map(|(r, _)| r).unwrap_or(s);
        let (a, b) = s.split_once('-').ok_or_else(invalid)?;
        let start = parse_u64(a).ok_or_else(invalid)?;
        let end = parse_u64(b).ok_or_else(invalid)?;
        if end < start {
            return Err(invalid());
        }
        Ok(ChunkRange { start, end })
    }

    /// Number of bytes the range covers.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: an inclusive range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The `Range` header of a session status or PATCH answer: `0-<offset-1>`, and `0-0` when nothing arrived yet
/// (what distribution answers; clients read it as "resume at offset").
pub fn upload_range_header(offset: u64) -> String {
    format!("0-{}", offset.saturating_sub(1))
}

/// A requested byte range of a blob GET, before it is resolved against the blob's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRangeSpec {
    /// `bytes=a-b` or `bytes=a-` (end `None`).
    From { start: u64, end: Option<u64> },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

/// A satisfiable range resolved against a size: inclusive `start..=end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true: a resolved range covers at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl ByteRangeSpec {
    /// Parse a `Range` header. `None` means "serve the whole blob": headers that are not a single byte range
    /// (other units, several ranges, bad syntax) are ignored, as RFC 9110 allows.
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (a, b) = spec.split_once('-')?;
        let (a, b) = (a.trim(), b.trim());
        if a.is_empty() {
            return parse_u64(b).map(ByteRangeSpec::Suffix);
        }
        let start = parse_u64(a)?;
        let end = if b.is_empty() { None } else { Some(parse_u64(b)?) };
        if matches!(end, Some(e) if e < start) {
            return None;
        }
        Some(ByteRangeSpec::From { start, end })
    }

    /// Resolve against the blob size; `None` when unsatisfiable (answer 416 with `Content-Range: bytes */size`).
    pub fn resolve(self, size: u64) -> Option<ByteRange> {
        match self {
            ByteRangeSpec::From { start, end } => {
                if start >= size {
                    return None;
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                Some(ByteRange { start, end })
            }
            ByteRangeSpec::Suffix(n) => {
                if n == 0 || size == 0 {
                    return None;
                }
                Some(ByteRange { start: size.saturating_sub(n), end: size - 1 })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ranges() {
        assert_eq!(ChunkRange::parse("0-99").unwrap(), ChunkRange { start: 0, end: 99 });
        assert_eq!(ChunkRange::parse("bytes 10-19/100").unwrap(), ChunkRange { start: 10, end: 19 });
        assert_eq!(ChunkRange::parse("5-5").unwrap().len(), 1);
        for s in ["", "abc", "5-2", "-1", "1-", "a-b", "1--2", "99999999999999999999-1", "+1-2"] {
            assert!(ChunkRange::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn upload_range() {
        assert_eq!(upload_range_header(0), "0-0");
        assert_eq!(upload_range_header(10), "0-9");
    }

    #[test]
    fn get_ranges() {
        let r = |h: &str, size| ByteRangeSpec::parse(h).and_then(|s| s.resolve(size));
        assert_eq!(r("bytes=0-9", 100), Some(ByteRange { start: 0, end: 9 }));
        assert_eq!(r("bytes=90-", 100), Some(ByteRange { start: 90, end: 99 }));
        assert_eq!(r("bytes=-5", 100), Some(ByteRange { start: 95, end: 99 }));
        assert_eq!(r("bytes=-500", 100), Some(ByteRange { start: 0, end: 99 }));
        assert_eq!(r("bytes=50-500", 100), Some(ByteRange { start: 50, end: 99 }));
        assert_eq!(r("bytes=100-", 100), None);
        assert_eq!(r("bytes=-0", 100), None);
        assert_eq!(ByteRangeSpec::parse("bytes=0-1,5-6"), None);
        assert_eq!(ByteRangeSpec::parse("items=0-1"), None);
        assert_eq!(ByteRangeSpec::parse("bytes=9-1"), None);
        assert_eq!(ByteRangeSpec::parse("bytes=x-1"), None);
    }
}
