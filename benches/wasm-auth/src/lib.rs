//! wasm32 exports timed by `run.mjs`: Pier's own htpasswd/bcrypt code (included from the main crate) and an HS256
//! verification of a token-sized JWT followed by parsing its claims (what a Bearer request costs before routing).

#[path = "../../../src/auth/htpasswd.rs"]
#[allow(dead_code)]
mod htpasswd;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Verify a password against a hash of `cost` (hash made once per call, outside the timed loop in `run.mjs`
/// because `make_hash` is a separate export).
static mut HASH: Option<htpasswd::BcryptHash> = None;

#[no_mangle]
pub extern "C" fn make_hash(cost: u32) -> u32 {
    let Ok(h) = htpasswd::hash_password(b"alice-pw", cost, [1; 16]) else { return 0 };
    let Ok(h) = htpasswd::BcryptHash::parse(&h) else { return 0 };
    unsafe { HASH = Some(h) };
    1
}

#[no_mangle]
pub extern "C" fn verify_hash() -> u32 {
    #[allow(static_mut_refs)]
    let ok = unsafe { HASH.as_ref() }.map(|h| h.verify(b"alice-pw")).unwrap_or(false);
    ok as u32
}

fn token() -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    let claims = br#"{"iss":"pier","sub":"alice","aud":"registry.example.com","exp":1700000300,"nbf":1700000000,"iat":1700000000,"jti":"0909090909090909","access":[{"type":"repository","name":"team/app","actions":["pull","push"]}]}"#;
    let input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims));
    let mut mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).expect("key");
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// Verify the token `n` times; returns how many verified.
#[no_mangle]
pub extern "C" fn verify_tokens(n: u32) -> u32 {
    let t = token();
    let mut ok = 0;
    for _ in 0..n {
        let mut parts = t.split('.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let header: serde_json::Value = match URL_SAFE_NO_PAD.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()) {
            Some(v) => v,
            None => continue,
        };
        if header["alg"] != "HS256" {
            continue;
        }
        let Ok(sig) = URL_SAFE_NO_PAD.decode(s) else { continue };
        let mut mac = Hmac::<Sha256>::new_from_slice(&[7u8; 32]).expect("key");
        mac.update(h.as_bytes());
        mac.update(b".");
        mac.update(p.as_bytes());
        if mac.verify_slice(&sig).is_err() {
            continue;
        }
        let claims: Option<serde_json::Value> = URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok());
        if claims.is_some_and(|c| c["aud"] == "registry.example.com") {
            ok += 1;
        }
    }
    ok
}
