//! Repository names: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`, at most 255
//! characters (distribution's limit, counting the name without the host). No percent-decoding happens before this
//! check, so `%2F` or `..` tricks are rejected here as invalid names.

use crate::error::{Error, ErrorCode, Result};
use std::fmt;

/// Longest repository name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// A validated repository name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Validate `s` against the spec's grammar.
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(Error::new(ErrorCode::NameInvalid).with_detail(format!("length must be 1..={MAX_NAME_LEN}")));
        }
        if !s.split('/').all(valid_component) {
            return Err(Error::new(ErrorCode::NameInvalid).with_detail(truncate(s)));
        }
        Ok(RepositoryName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start || i >= b.len() || !is_alnum(b[i]) {
            return false;
        }
    }
    true
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names() {
        for n in ["a", "library/ubuntu", "a.b/c_d/e__f/g-h/i---j", "0", "foo/manifests/bar", "x9/y8"] {
            assert!(RepositoryName::parse(n).is_ok(), "{n}");
        }
    }

    #[test]
    fn rejects_bad_names() {
        for n in [
            "", "A", "a/", "/a", "a//b", "a-", "-a", "a..b", "a.-b", "a___b", "..", "a/../b", "a%2Fb", "a b", "a/_b",
            "é", "a\0",
        ] {
            assert_eq!(RepositoryName::parse(n).unwrap_err().code, ErrorCode::NameInvalid, "{n:?}");
        }
        assert!(RepositoryName::parse(&"a".repeat(256)).is_err());
        assert!(RepositoryName::parse(&"a".repeat(255)).is_ok());
    }
}
