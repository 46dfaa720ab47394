//! Request signing for the object stores Pier talks to over HTTP: AWS Signature Version 4 ([`sigv4`]: header
//! auth and presigned URLs for S3, R2, MinIO, s3s-fs) and Azure Blob Storage ([`azure`]: SharedKey and read-only
//! service SAS URLs).
//!
//! Everything here is a pure function of its inputs. There is no I/O and no clock: callers pass the time as a
//! [`Timestamp`] (built from the platform's clock with [`Timestamp::from_unix_seconds`]), so the same code runs
//! natively, in workerd and in wasi:http hosts, and every signature is reproducible in a unit test against the
//! providers' published examples (AWS) or values computed with the provider's own SDK (Azure,
//! `scripts/vectors/azure_vectors.py`).
//!
//! Secrets (secret access keys, account keys) are held in types whose `Debug` output redacts them.

pub mod azure;
pub mod sigv4;

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use std::fmt;

pub use crate::spec::digest::to_hex as hex;

/// Why a signing input was refused. Carries no secret material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// An endpoint URL could not be understood (scheme, host or port).
    InvalidEndpoint(String),
    /// The Azure account key is not valid base64.
    InvalidAccountKey,
    /// A timestamp string is not in the expected form.
    InvalidTimestamp(String),
    /// A presigned URL's lifetime is outside what the provider accepts.
    InvalidExpiry(u64),
    /// A service version this module cannot sign for.
    UnsupportedVersion(String),
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::InvalidEndpoint(why) => write!(f, "invalid storage endpoint: {why}"),
            SignError::InvalidAccountKey => f.write_str("the storage account key is not valid base64"),
            SignError::InvalidTimestamp(s) => write!(f, "invalid timestamp {s:?}"),
            SignError::InvalidExpiry(s) => write!(f, "invalid presigned URL lifetime of {s} seconds"),
            SignError::UnsupportedVersion(v) => write!(f, "unsupported signed version {v:?}"),
        }
    }
}

impl std::error::Error for SignError {}

impl From<SignError> for crate::Error {
    fn from(e: SignError) -> Self {
        crate::Error::storage(e)
    }
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail; the fallback is unreachable.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return [0; 32],
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex SHA-256 of `data` (a SigV4 payload hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Percent-encode `s` per RFC 3986 as AWS and Azure expect: every byte except the unreserved `A-Za-z0-9-._~` becomes
/// `%XX` (upper-case hex), and `/` is kept as is when `keep_slash` (paths) and encoded otherwise (query names and
/// values). Space is `%20`, never `+`.
pub fn percent_encode(s: &str, keep_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() + s.len() / 2);
    for &b in s.as_bytes() {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
    out
}

/// Decode `%XX` escapes (and nothing else: `+` stays `+`). Invalid escapes are kept literally; invalid UTF-8 is
/// replaced, which is fine for the canonical forms this is used for.
pub fn percent_decode(s: &str) -> String {
    fn hex_val(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A UTC instant to the second: the only notion of time the signers use. Built by the caller from its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    unix: i64,
}

const SECONDS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// The instant `secs` seconds after the Unix epoch.
    pub fn from_unix_seconds(secs: i64) -> Self {
        Timestamp { unix: secs }
    }

    /// Build from calendar fields (UTC). Rejects out-of-range fields.
    pub fn from_utc(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Result<Self, SignError> {
        let bad =
            || SignError::InvalidTimestamp(format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z"));
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(bad());
        }
        let days = days_from_civil(year, month, day);
        Ok(Timestamp { unix: days * SECONDS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second) })
    }

    /// Parse SigV4's basic ISO 8601 form, `20130524T000000Z`.
    pub fn parse_amz_date(s: &str) -> Result<Self, SignError> {
        let bad = || SignError::InvalidTimestamp(s.chars().take(40).collect());
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| -> Result<u32, SignError> {
            let part = s.get(r).ok_or_else(bad)?;
            if !part.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let year = i32::try_from(num(0..4)?).map_err(|_| bad())?;
        Timestamp::from_utc(year, num(4..6)?, num(6..8)?, num(9..11)?, num(11..13)?, num(13..15)?)
    }

    /// Seconds since the Unix epoch.
    pub fn unix_seconds(self) -> i64 {
        self.unix
    }

    /// This instant plus `secs` seconds.
    pub fn plus_seconds(self, secs: i64) -> Self {
        Timestamp { unix: self.unix.saturating_add(secs) }
    }

    /// Calendar fields `(year, month, day, hour, minute, second)` in UTC.
    pub fn fields(self) -> (i32, u32, u32, u32, u32, u32) {
        let days = self.unix.div_euclid(SECONDS_PER_DAY);
        let secs = self.unix.rem_euclid(SECONDS_PER_DAY) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
    }

    /// SigV4's `X-Amz-Date` form, `20130524T000000Z`.
    pub fn amz_date(self) -> String {
        let (y, mo, d, h, mi, s) = self.fields();
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z")
    }

    /// SigV4's credential-scope date, `20130524`.
    pub fn date_stamp(self) -> String {
        let (y, mo, d, ..) = self.fields();
        format!("{y:04}{mo:02}{d:02}")
    }

    /// ISO 8601 to the second, `2013-05-24T00:00:00Z` (Azure SAS `st`/`se`).
    pub fn iso8601(self) -> String {
        let (y, mo, d, h, mi, s) = self.fields();
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }

    /// RFC 1123 HTTP date, `Fri, 24 May 2013 00:00:00 GMT` (Azure `x-ms-date`).
    pub fn http_date(self) -> String {
        const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        let (y, mo, d, h, mi, s) = self.fields();
        let weekday = WEEKDAYS[self.unix.div_euclid(SECONDS_PER_DAY).rem_euclid(7) as usize];
        let month = MONTHS[(mo - 1) as usize % 12];
        format!("{weekday}, {d:02} {month} {y:04} {h:02}:{mi:02}:{s:02} GMT")
    }
}

fn is_leap(y: i32) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_keeps_only_unreserved_and_optionally_slash() {
        assert_eq!(percent_encode("a-b_c.d~e", false), "a-b_c.d~e");
        assert_eq!(percent_encode("a b/c+d=é$", false), "a%20b%2Fc%2Bd%3D%C3%A9%24");
        assert_eq!(percent_encode("/test$file.text", true), "/test%24file.text");
        assert_eq!(percent_encode("sha256:abc/data", true), "sha256%3Aabc/data");
    }

    #[test]
    fn percent_decoding_inverts_encoding_and_keeps_plus() {
        assert_eq!(percent_decode("docker%2Frepo%2F"), "docker/repo/");
        assert_eq!(percent_decode("a+b%20c"), "a+b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode(&percent_encode("é /+", false)), "é /+");
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn timestamps_format_every_way_the_signers_need() {
        let t = Timestamp::parse_amz_date("20130524T000000Z").unwrap();
        assert_eq!(t.unix_seconds(), 1_369_353_600);
        assert_eq!(t.amz_date(), "20130524T000000Z");
        assert_eq!(t.date_stamp(), "20130524");
        assert_eq!(t.iso8601(), "2013-05-24T00:00:00Z");
        assert_eq!(t.http_date(), "Fri, 24 May 2013 00:00:00 GMT");
        let leap = Timestamp::from_utc(2024, 2, 29, 23, 59, 59).unwrap();
        assert_eq!(leap.plus_seconds(1).iso8601(), "2024-03-01T00:00:00Z");
        assert_eq!(leap.http_date(), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(Timestamp::from_unix_seconds(0).http_date(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(Timestamp::from_unix_seconds(-1).iso8601(), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        for s in [
            "2013-05-24T00:00:00Z",
            "20130524T000000",
            "20131324T000000Z",
            "20130230T000000Z",
            "2013052AT000000Z",
            "20130524T240000Z",
            "",
        ] {
            assert!(Timestamp::parse_amz_date(s).is_err(), "{s}");
        }
    }
}
