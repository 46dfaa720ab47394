//! Users from an htpasswd file's content: `user:$2y$cost$salt+hash` lines, as `htpasswd -B` writes them (`$2a$` and
//! `$2b$` are read too). Only bcrypt is accepted, like registry:2: MD5 (`$apr1$`), SHA-1 and crypt hashes are too
//! cheap to guess. Verification of an unknown user runs bcrypt against a dummy hash of the same cost, so the answer
//! takes as long as a wrong password and does not tell which users exist.
//!
//! Uses only the bcrypt crate's core (`bcrypt::bcrypt`) and does the `$2y$` string format here, which keeps the
//! crate free of `getrandom` (salts for [`hash_password`] come from the caller).

use base64::alphabet::BCRYPT;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use std::fmt;

/// bcrypt's base64: its own alphabet, no padding, lenient about the unused low bits of the last character.
const BCRYPT_B64: GeneralPurpose = GeneralPurpose::new(
    &BCRYPT,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Lowest and highest bcrypt cost accepted.
pub const MIN_COST: u32 = 4;
/// Costs above 31 do not exist; above ~14 a login takes seconds.
pub const MAX_COST: u32 = 31;

/// A parsed bcrypt hash.
#[derive(Clone, PartialEq, Eq)]
pub struct BcryptHash {
    cost: u32,
    salt: [u8; 16],
    hash: [u8; 23],
    /// The hash as written in the file (part of the credential cache's key).
    text: String,
}

impl fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BcryptHash(cost {})", self.cost)
    }
}

impl BcryptHash {
    /// Parse `$2y$NN$<22 salt chars><31 hash chars>` (also `$2a$`, `$2b$`).
    pub fn parse(s: &str) -> Result<BcryptHash, String> {
        let b = s.as_bytes();
        if b.len() != 60 || !s.is_ascii() || b[0] != b'$' || b[3] != b'$' || b[6] != b'$' {
            return Err("not a bcrypt hash (expected $2y$, $2a$ or $2b$ and 60 characters; create it with htpasswd -B)".into());
        }
        if !matches!(&s[1..3], "2y" | "2a" | "2b") {
            return Err("not a bcrypt hash (only bcrypt is accepted: htpasswd -B)".into());
        }
        let cost: u32 = s[4..6].parse().map_err(|_| "bcrypt cost is not a number".to_string())?;
        if !(MIN_COST..=MAX_COST).contains(&cost) {
            return Err(format!("bcrypt cost {cost} outside {MIN_COST}..={MAX_COST}"));
        }
        let mut salt = [0u8; 16];
        let mut hash = [0u8; 23];
        let salt_ok = BCRYPT_B64.decode_slice(&s[7..29], &mut salt).map(|n| n == 16).unwrap_or(false);
        let hash_ok = BCRYPT_B64.decode_slice(&s[29..], &mut hash).map(|n| n == 23).unwrap_or(false);
        if !salt_ok || !hash_ok {
            return Err("bcrypt hash has invalid characters".into());
        }
        Ok(BcryptHash { cost, salt, hash, text: s.to_string() })
    }

    /// The work factor (2^cost rounds).
    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// The hash as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `password` matches (constant-time comparison of the result).
    pub fn verify(&self, password: &[u8]) -> bool {
        let out = raw_bcrypt(self.cost, self.salt, password);
        constant_time_eq(&out[..23], &self.hash)
    }
}

/// bcrypt of a password as OpenBSD/htpasswd do it: NUL-terminated, truncated to 72 bytes.
fn raw_bcrypt(cost: u32, salt: [u8; 16], password: &[u8]) -> [u8; 24] {
    let mut pass = [0u8; 72];
    let n = password.len().min(72);
    pass[..n].copy_from_slice(&password[..n]);
    // The NUL terminator counts when there is room for it; the input is never empty.
    let used = (n + 1).min(72);
    // `cost` is within MIN_COST..=MAX_COST (checked by every caller), as bcrypt::bcrypt requires.
    let out = bcrypt::bcrypt(cost.clamp(MIN_COST, MAX_COST), salt, &pass[..used]);
    pass.fill(0);
    out
}

/// `a == b` in time that depends only on the length.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An htpasswd `$2y$` hash of `password` with the given cost and salt (the caller supplies 16 random bytes).
pub fn hash_password(password: &[u8], cost: u32, salt: [u8; 16]) -> Result<String, String> {
    if !(MIN_COST..=MAX_COST).contains(&cost) {
        return Err(format!("bcrypt cost {cost} outside {MIN_COST}..={MAX_COST}"));
    }
    let out = raw_bcrypt(cost, salt, password);
    Ok(format!("$2y${cost:02}${}{}", BCRYPT_B64.encode(salt), BCRYPT_B64.encode(&out[..23])))
}

/// The users of an htpasswd file.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Htpasswd {
    users: Vec<(String, BcryptHash)>,
    /// Verified against for unknown users: the cost most users have, a salt and hash nobody's password produces.
    dummy: Option<BcryptHash>,
}

impl fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        write!(f, "Htpasswd({names:?})")
    }
}

/// Names that mean something else in access rules.
const RESERVED_USERS: [&str; 2] = ["anonymous", "*"];

impl Htpasswd {
    /// Parse an htpasswd file's content. Blank lines and `#` comments are skipped. Errors name the line, never
    /// the hash.
    pub fn parse(content: &str) -> Result<Htpasswd, String> {
        let mut users: Vec<(String, BcryptHash)> = Vec::new();
        for (i, line) in content.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lineno = i + 1;
            let (user, hash) = line.split_once(':').ok_or_else(|| format!("line {lineno}: expected user:hash"))?;
            if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!("line {lineno}: invalid user name"));
            }
            if RESERVED_USERS.contains(&user) {
                return Err(format!("line {lineno}: {user:?} is reserved in access rules and cannot be a user"));
            }
            if users.iter().any(|(u, _)| u == user) {
                return Err(format!("line {lineno}: user {user:?} appears twice"));
            }
            let hash = BcryptHash::parse(hash.trim()).map_err(|e| format!("line {lineno} (user {user:?}): {e}"))?;
            users.push((user.to_string(), hash));
        }
        let dummy = most_common_cost(&users).map(dummy_hash);
        Ok(Htpasswd { users, dummy })
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The hash of `user`, if known.
    pub fn hash_of(&self, user: &str) -> Option<&BcryptHash> {
        self.users.iter().find(|(u, _)| u == user).map(|(_, h)| h)
    }

    /// The hash a password check for `user` runs against: the user's own, or for an unknown user the dummy of the
    /// usual cost (`None` only when there are no users at all), and whether the user is known.
    pub fn hash_to_check(&self, user: &str) -> (Option<&BcryptHash>, bool) {
        match self.hash_of(user) {
            Some(h) => (Some(h), true),
            None => (self.dummy.as_ref(), false),
        }
    }

    /// Check `user`'s password. An unknown user costs one bcrypt like a known one.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.hash_of(user) {
            Some(h) => h.verify(password),
            None => {
                if let Some(d) = &self.dummy {
                    let _ = std::hint::black_box(d.verify(password));
                }
                false
            }
        }
    }
}

fn most_common_cost(users: &[(String, BcryptHash)]) -> Option<u32> {
    let mut counts = [0usize; (MAX_COST + 1) as usize];
    for (_, h) in users {
        counts[h.cost as usize] += 1;
    }
    let max = *counts.iter().max()?;
    (max > 0).then(|| counts.iter().position(|c| *c == max).map(|p| p as u32)).flatten()
}

/// A well-formed hash of cost `cost` that no password matches in practice (fixed salt, hash bytes that are not a
/// bcrypt output of anything known). Costs the same to verify as a real one.
fn dummy_hash(cost: u32) -> BcryptHash {
    BcryptHash { cost, salt: *b"pier-dummy-salt!", hash: *b"not a real bcrypt hash.", text: String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APACHE_2Y: &str = "$2y$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96";

    #[test]
    fn round_trip_and_formats() {
        let h = hash_password(b"secret", 4, *b"0123456789abcdef").unwrap();
        assert!(h.starts_with("$2y$04$"));
        assert_eq!(h.len(), 60);
        let parsed = BcryptHash::parse(&h).unwrap();
        assert!(parsed.verify(b"secret"));
        assert!(!parsed.verify(b"Secret"));
        // The same bytes under $2a$ and $2b$ verify alike.
        for v in ["$2a$", "$2b$"] {
            let other = format!("{v}{}", &h[4..]);
            assert!(BcryptHash::parse(&other).unwrap().verify(b"secret"));
        }
    }

    #[test]
    fn verifies_hashes_from_other_tools() {
        // Vectors from the bcrypt crate's tests (an online tool, Python's bcrypt, node's bcrypt).
        let cases = [
            ("$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96", "password"),
            ("$2b$04$EGdrhbKUv8Oc9vGiXX0HQOxSg445d458Muh7DAHskb6QbtCvdxcie", "correctbatteryhorsestapler"),
            ("$2a$04$n4Uy0eSnMfvnESYL.bLwuuj0U/ETSsoTpRT9GVk5bektyVVa5xnIi", "correctbatteryhorsestapler"),
        ];
        for (hash, pw) in cases {
            let h = BcryptHash::parse(hash).unwrap();
            assert!(h.verify(pw.as_bytes()), "{hash}");
            assert!(!h.verify(b"wrong"), "{hash}");
            // htpasswd writes $2y$: the same algorithm.
            assert!(BcryptHash::parse(&format!("$2y{}", &hash[3..])).unwrap().verify(pw.as_bytes()));
        }
    }

    #[test]
    fn parses_files() {
        let h1 = hash_password(b"pw1", 4, [1; 16]).unwrap();
        let h2 = hash_password(b"pw2", 5, [2; 16]).unwrap();
        let file = format!("# users\n\nalice:{h1}\r\nbob:{h2}\ncarol:{h1}\n");
        let f = Htpasswd::parse(&file).unwrap();
        assert_eq!(f.len(), 3);
        assert!(f.verify("alice", b"pw1"));
        assert!(!f.verify("alice", b"pw2"));
        assert!(f.verify("bob", b"pw2"));
        assert!(!f.verify("nobody", b"pw1"));
        assert_eq!(f.dummy.as_ref().map(|d| d.cost()), Some(4));
        assert!(!format!("{f:?}").contains("$2y$"), "Debug never shows hashes");
    }

    #[test]
    fn refuses_other_formats() {
        for bad in [
            "alice:$apr1$abc$0123456789012345678901",
            "alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
            "alice:plaintext",
            "alice",
            ":$2y$04$Lb6yTuwfmkZzTvjEtGGJMeMNpZcKeWK7nYxU1F3RzlVWfwKTcu0Cu",
            "anonymous:$2y$04$Lb6yTuwfmkZzTvjEtGGJMeMNpZcKeWK7nYxU1F3RzlVWfwKTcu0Cu",
            "alice:$2y$99$Lb6yTuwfmkZzTvjEtGGJMeMNpZcKeWK7nYxU1F3RzlVWfwKTcu0Cu",
            "alice:$2y$04$Lb6yTuwfmkZzTvjEtGGJMeMNpZcKeWK7nYxU1F3RzlVWfwKTcu0C!",
        ] {
            let e = Htpasswd::parse(bad).unwrap_err();
            assert!(e.starts_with("line 1"), "{bad}: {e}");
            assert!(!e.contains("Lb6y"), "errors never echo the hash: {e}");
        }
        let h = hash_password(b"x", 4, [0; 16]).unwrap();
        assert!(Htpasswd::parse(&format!("a:{h}\na:{h}")).unwrap_err().contains("twice"));
        assert!(BcryptHash::parse(APACHE_2Y).is_ok());
    }

    #[test]
    fn unknown_users_are_verified_against_a_dummy_of_the_common_cost() {
        // Deterministic form of "an unknown user takes as long as a wrong password": verify() runs bcrypt against a
        // dummy hash whose cost is the one most users have (the time itself is measured in benches/auth.rs).
        let file = format!("a:{APACHE_2Y}\nb:{APACHE_2Y}\n");
        let h = Htpasswd::parse(&file).unwrap();
        assert_eq!(h.dummy.as_ref().map(|d| d.cost), Some(4));
        assert!(!h.verify("nobody", b"x"));
    }

    #[test]
    fn long_passwords_truncate_at_72_bytes() {
        let long = [b'x'; 100];
        let h = BcryptHash::parse(&hash_password(&long, 4, [3; 16]).unwrap()).unwrap();
        assert!(h.verify(&long[..72]));
        assert!(h.verify(&long));
    }
}
