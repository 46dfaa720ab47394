//! Bearer tokens: JWTs signed with HMAC-SHA256 under a secret from configuration. Verification accepts exactly the
//! configured algorithm (`HS256`): `none`, other HMAC sizes and public-key algorithms are refused before the
//! signature is looked at, so no algorithm-confusion trick applies. Then the signature (constant-time), the issuer,
//! the audience (the registry's service name) and the validity window (`nbf` ≤ now < `exp`, no leeway: tokens are
//! issued by the same registry).
//!
//! The `access` claim is the Docker token protocol's: `[{"type":"repository","name":"a/b","actions":["pull"]}]`.

use super::scope::Actions;
use crate::spec::RepositoryName;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm issued and accepted.
pub const ALGORITHM: &str = "HS256";
/// Tokens longer than this are refused unparsed.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The signing key. Its `Debug` never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A key from raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    /// HMAC-SHA256 of `data` under this key (the web UI binds its CSRF tokens to a session with it).
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let mut mac = self.mac();
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable_hmac(),
        }
    }
}

#[cold]
fn unreachable_hmac() -> HmacSha256 {
    // Not reachable: HMAC accepts every key length. Keep a defined (and useless) key rather than panic.
    <HmacSha256 as Mac>::new(&Default::default())
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// One entry of the `access` claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The claims Pier issues and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user; `""` for an anonymous token.
    #[serde(default)]
    pub sub: String,
    /// The service (audience): a string or, from other issuers, a list.
    pub aud: Value,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// The actions this token grants on repository `name`.
    pub fn repository_actions(&self, name: &RepositoryName) -> Actions {
        self.access
            .iter()
            .filter(|e| e.kind == "repository" && e.name == name.as_str())
            .flat_map(|e| e.actions.iter())
            .filter_map(|a| Actions::parse_one(a))
            .fold(Actions::NONE, |a, b| a | b)
    }

    /// Whether this token grants `registry:catalog:*`.
    pub fn catalog(&self) -> bool {
        self.access.iter().any(|e| e.kind == "registry" && e.name == "catalog" && e.actions.iter().any(|a| a == "*"))
    }

    /// The user, `None` for an anonymous token.
    pub fn user(&self) -> Option<&str> {
        (!self.sub.is_empty()).then_some(self.sub.as_str())
    }
}

/// Why a token was refused. Shown to clients as the challenge's `error_description`; holds nothing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    Algorithm,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::Algorithm => "token algorithm not accepted",
            TokenError::Signature => "token signature invalid",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::Issuer => "token from another issuer",
            TokenError::Audience => "token for another service",
        })
    }
}

/// Sign `claims` into a compact JWT.
pub fn issue(claims: &Claims, secret: &Secret) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
    // Serialising these plain structs cannot fail; an empty object would be refused on verification anyway.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
    let signing_input = format!("{header}.{payload}");
    let mut mac = secret.mac();
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verify `token` and return its claims.
pub fn verify(token: &str, secret: &Secret, issuer: &str, audience: &str, now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(TokenError::Algorithm);
    }
    // Extensions we do not understand must not be ignored (RFC 7515 §4.1.11).
    if header.get("crit").is_some() {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| TokenError::Signature)?;
    let mut mac = secret.mac();
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    mac.verify_slice(&sig).map_err(|_| TokenError::Signature)?;
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if claims.iss != issuer {
        return Err(TokenError::Issuer);
    }
    let aud_ok = match &claims.aud {
        Value::String(a) => a == audience,
        Value::Array(v) => v.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    };
    if !aud_ok {
        return Err(TokenError::Audience);
    }
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    if claims.nbf.is_some_and(|nbf| nbf > now) {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// `2024-01-02T03:04:05Z` for a Unix time (the token response's `issued_at`).
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec())
    }

    fn claims() -> Claims {
        Claims {
            iss: "pier".into(),
            sub: "alice".into(),
            aud: json!("registry.test"),
            exp: NOW + 300,
            nbf: Some(NOW),
            iat: Some(NOW),
            jti: Some("j".into()),
            access: vec![AccessEntry { kind: "repository".into(), name: "team/a".into(), actions: vec!["pull".into()] }],
        }
    }

    fn check(t: &str) -> Result<Claims, TokenError> {
        verify(t, &secret(), "pier", "registry.test", NOW + 1)
    }

    fn b64(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn forge(header: &str, claims: &Claims, key: &[u8]) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(&serde_json::to_vec(claims).unwrap()));
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(input.as_bytes());
        format!("{input}.{}", b64(&mac.finalize().into_bytes()))
    }

    fn name(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn round_trip() {
        let t = issue(&claims(), &secret());
        let c = check(&t).unwrap();
        assert_eq!(c, claims());
        assert_eq!(c.repository_actions(&name("team/a")), Actions::PULL);
        assert!(c.repository_actions(&name("team/b")).is_empty(), "a token for A grants nothing on B");
        assert!(!c.catalog());
    }

    #[test]
    fn forged_signature() {
        let t = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &claims(), b"another key");
        assert_eq!(check(&t), Err(TokenError::Signature));
        // Changing the payload of a real token breaks the signature.
        let real = issue(&claims(), &secret());
        let mut c = claims();
        c.access[0].actions.push("push".into());
        let parts: Vec<&str> = real.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(&serde_json::to_vec(&c).unwrap()), parts[2]);
        assert_eq!(check(&tampered), Err(TokenError::Signature));
        assert_eq!(check(&format!("{}.{}.", parts[0], parts[1])), Err(TokenError::Signature));
    }

    #[test]
    fn alg_none_and_switches() {
        let payload = b64(&serde_json::to_vec(&claims()).unwrap());
        for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#, r#"{"typ":"JWT"}"#] {
            let t = format!("{}.{payload}.", b64(header.as_bytes()));
            assert_eq!(check(&t), Err(TokenError::Algorithm), "{header}");
        }
        for header in [r#"{"alg":"HS512"}"#, r#"{"alg":"hs256"}"#, r#"{"alg":"RS256"}"#, r#"{"alg":"HS384"}"#] {
            // Even signed with the right key, another algorithm is refused.
            let t = forge(header, &claims(), b"0123456789abcdef0123456789abcdef");
            assert_eq!(check(&t), Err(TokenError::Algorithm), "{header}");
        }
        let t = forge(r#"{"alg":"HS256","crit":["x"]}"#, &claims(), b"0123456789abcdef0123456789abcdef");
        assert_eq!(check(&t), Err(TokenError::Malformed));
    }

    #[test]
    fn time_window() {
        let mut c = claims();
        c.exp = NOW + 1;
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::Expired));
        c.exp = NOW - 100;
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::Expired));
        let mut c = claims();
        c.nbf = Some(NOW + 60);
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::NotYetValid));
    }

    #[test]
    fn issuer_and_audience() {
        let mut c = claims();
        c.aud = json!("other.service");
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::Audience));
        c.aud = json!(["x", "registry.test"]);
        assert!(check(&issue(&c, &secret())).is_ok());
        c.aud = json!(7);
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::Audience));
        let mut c = claims();
        c.iss = "evil".into();
        assert_eq!(check(&issue(&c, &secret())), Err(TokenError::Issuer));
    }

    #[test]
    fn malformed() {
        for t in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(check(t).is_err(), "{t}");
        }
        // Valid signature over a payload that is not our claims shape.
        let input = format!("{}.{}", b64(br#"{"alg":"HS256"}"#), b64(b"[1,2]"));
        let mut mac = secret().mac();
        mac.update(input.as_bytes());
        let t = format!("{input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(check(&t), Err(TokenError::Malformed));
        assert!(!format!("{:?}", secret()).contains("0123"));
    }

    #[test]
    fn wildcard_and_catalog() {
        let mut c = claims();
        c.access = vec![
            AccessEntry { kind: "repository".into(), name: "a".into(), actions: vec!["*".into()] },
            AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] },
        ];
        assert_eq!(c.repository_actions(&name("a")), Actions::ALL);
        assert!(c.catalog());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
