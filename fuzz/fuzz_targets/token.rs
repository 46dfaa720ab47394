//! Bearer tokens (JWT, HS256): verifying any string never panics; a token issued under a key verifies under it
//! (exactly when issuer, audience and time window allow) and fails under any other key; changing any character
//! of a real token makes it fail.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use pier::auth::token::{issue, verify, AccessEntry, Claims, Secret, TokenError};
use serde_json::Value;

const ISSUER: &str = "pier";
const SERVICE: &str = "registry.test";

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    /// Verified as is.
    raw: String,
    key: Vec<u8>,
    /// Which byte of the key differs in the other key, and how.
    flip: (u8, u8),
    other_issuer: bool,
    aud: Aud,
    sub: String,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    access: Vec<(String, String, Vec<String>)>,
    now: u64,
    /// Which character of the issued token to change, and to what.
    tamper: (u16, u8),
}

#[derive(Debug, arbitrary::Arbitrary)]
enum Aud {
    Ours,
    Other(String),
    List(Vec<String>),
    Number(u64),
}

fn expected(c: &Claims, now: u64) -> Result<Claims, TokenError> {
    if c.iss != ISSUER {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match &c.aud {
        Value::String(a) => a == SERVICE,
        Value::Array(v) => v.iter().any(|a| a.as_str() == Some(SERVICE)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    if now >= c.exp {
        return Err(TokenError::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    Ok(c.clone())
}

const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";

fuzz_target!(|input: Input| {
    let key = Secret::new(input.key.clone());
    if let Ok(c) = verify(&input.raw, &key, ISSUER, SERVICE, input.now) {
        // Only a real signature gets here; what is accepted satisfies the checks.
        assert_eq!(expected(&c, input.now).as_ref(), Ok(&c));
    }

    let claims = Claims {
        iss: if input.other_issuer { "other".into() } else { ISSUER.into() },
        sub: input.sub,
        aud: match input.aud {
            Aud::Ours => SERVICE.into(),
            Aud::Other(s) => s.into(),
            Aud::List(v) => v.into(),
            Aud::Number(n) => n.into(),
        },
        exp: input.exp,
        nbf: input.nbf,
        iat: input.iat,
        jti: input.jti,
        access: input.access.into_iter().map(|(kind, name, actions)| AccessEntry { kind, name, actions }).collect(),
    };
    let token = issue(&claims, &key);
    assert_eq!(verify(&token, &key, ISSUER, SERVICE, input.now), expected(&claims, input.now));

    // Another key: the same bytes with one changed (HMAC pads short keys with zeros, so a key and the same key with
    // NULs appended are one key; changing a byte within the key never is).
    let mut other = input.key;
    if other.is_empty() {
        other.push(1);
    } else {
        let i = input.flip.0 as usize % other.len();
        other[i] ^= input.flip.1.max(1);
    }
    assert_eq!(verify(&token, &Secret::new(other), ISSUER, SERVICE, input.now), Err(TokenError::Signature));

    // One character changed anywhere.
    let mut bytes = token.clone().into_bytes();
    let i = input.tamper.0 as usize % bytes.len();
    let c = TOKEN_CHARS[input.tamper.1 as usize % TOKEN_CHARS.len()];
    if bytes[i] != c {
        bytes[i] = c;
        let tampered = String::from_utf8(bytes).unwrap_or_default();
        assert!(verify(&tampered, &key, ISSUER, SERVICE, input.now).is_err(), "{token} -> {tampered}");
    }
});
