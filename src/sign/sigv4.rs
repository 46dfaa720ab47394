//! AWS Signature Version 4 as S3 (and R2, MinIO, s3s-fs, which speak it) expects it: the canonical request, the
//! string to sign, the signing-key HMAC chain, the `Authorization` header, and query-string presigned URLs.
//!
//! S3 differs from the other AWS services in one way that matters here: the path is URI-encoded **once** (each byte
//! outside `A-Za-z0-9-._~` becomes `%XX`, `/` is kept), never twice, and never normalised (`//` and `.` segments
//! stay). Callers pass raw, unencoded paths and query pairs; this module does all the encoding, so the path it signs
//! and the path the URL carries are the same string by construction.
//!
//! [`S3Endpoint`] adds addressing: path style (`https://endpoint/bucket/key`) or virtual-hosted style
//! (`https://bucket.endpoint/key`), with custom endpoints and ports (`http://127.0.0.1:9014`), whose `Host` header
//! then carries the port.
//!
//! Reference: <https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html> and
//! `sig-v4-authenticating-requests.html`; the unit tests below are that documentation's worked examples.

use super::{hex, hmac_sha256, percent_encode, SignError, Timestamp};
use std::fmt;

/// The only algorithm name SigV4 uses.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Payload hash for a body the signature does not cover (presigned URLs; streamed uploads over TLS).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// Hex SHA-256 of the empty body.
pub const EMPTY_PAYLOAD_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
/// The longest lifetime S3 accepts for a presigned URL: seven days.
pub const MAX_PRESIGN_EXPIRES: u64 = 604_800;
/// The service name in the credential scope for S3 and everything that speaks its API.
pub const S3_SERVICE: &str = "s3";

/// An access key pair, and a session token for temporary credentials. `Debug` never shows the secret or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (`AKIA…`), sent in the clear in the credential scope.
    pub access_key_id: String,
    /// The secret access key, used only to derive signing keys.
    pub secret_access_key: String,
    /// `x-amz-security-token` / `X-Amz-Security-Token` for temporary (STS) credentials.
    pub session_token: Option<String>,
}

impl Credentials {
    /// Long-term credentials.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// The same credentials with a session token.
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("session_token", &self.session_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The signing key: `HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret_access_key: &str, date_stamp: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret_access_key}").as_bytes(), date_stamp.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

/// `date/region/service/aws4_request`.
pub fn credential_scope(time: Timestamp, region: &str, service: &str) -> String {
    format!("{}/{region}/{service}/aws4_request", time.date_stamp())
}

/// The canonical URI of a raw path, S3 rules: each byte but the unreserved ones and `/` percent-encoded, once.
/// An empty path is `/`.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    let encoded = percent_encode(raw_path, true);
    if encoded.starts_with('/') {
        encoded
    } else {
        format!("/{encoded}")
    }
}

/// The canonical query string of raw `(name, value)` pairs: both encoded (with `/` encoded too), sorted by name then
/// value, joined `name=value&…`. A parameter without a value is `name=` (e.g. `lifecycle=`). Also usable verbatim as
/// a URL's query.
pub fn canonical_query_string(query: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        query.iter().map(|(n, v)| (percent_encode(n, false), percent_encode(v, false))).collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (n, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(n);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// Canonical headers and signed headers: names lower-cased, values trimmed with inner runs of spaces collapsed,
/// repeated names joined with `,`, sorted by name. Returns (`name:value\n…`, `name;name;…`).
pub fn canonical_headers(headers: &[(&str, &str)]) -> (String, String) {
    let mut lowered: Vec<(String, String)> =
        headers.iter().map(|(n, v)| (n.trim().to_ascii_lowercase(), trim_all(v))).collect();
    // A stable sort keeps repeated headers in the order given, as the spec asks.
    lowered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut canonical = String::new();
    let mut signed = String::new();
    let mut previous: Option<&str> = None;
    for (name, value) in &lowered {
        if previous == Some(name.as_str()) {
            canonical.pop(); // the '\n' of the previous value
            canonical.push(',');
        } else {
            if previous.is_some() {
                signed.push(';');
            }
            signed.push_str(name);
            canonical.push_str(name);
            canonical.push(':');
        }
        canonical.push_str(value);
        canonical.push('\n');
        previous = Some(name.as_str());
    }
    (canonical, signed)
}

fn trim_all(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The canonical request: method, canonical URI, canonical query, canonical headers, signed headers, payload hash.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload_hash: &str,
) -> String {
    format!("{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}")
}

/// The string to sign: algorithm, timestamp, credential scope, hex SHA-256 of the canonical request.
pub fn string_to_sign(time: Timestamp, scope: &str, canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}\n{scope}\n{}", time.amz_date(), super::sha256_hex(canonical_request.as_bytes()))
}

/// One request to sign with an `Authorization` header. Paths and query pairs are raw (not yet encoded).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The `Host` header value, with `:port` when the port is not the scheme's default.
    pub host: &'a str,
    /// The raw path, e.g. `/test$file.text`; encoded here once.
    pub path: &'a str,
    /// Raw query pairs, e.g. `[("max-keys", "2"), ("prefix", "J")]`, or `[("lifecycle", "")]`.
    pub query: &'a [(&'a str, &'a str)],
    /// Further headers to sign and send (`range`, `content-type`, `x-amz-*`, …). `host`, `x-amz-date`,
    /// `x-amz-content-sha256` and `x-amz-security-token` are added by the signer; copies given here are ignored.
    pub headers: &'a [(&'a str, &'a str)],
    /// [`UNSIGNED_PAYLOAD`] or the body's hex SHA-256 (see [`super::sha256_hex`]).
    pub payload_hash: &'a str,
}

/// The result of header signing: what to send, and the intermediate strings for debugging a rejected signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The `Authorization` header value.
    pub authorization: String,
    /// Every header the caller must send for the signature to hold, lower-case names: `host`,
    /// `x-amz-content-sha256`, `x-amz-date`, `x-amz-security-token` (with a session token) and `authorization`,
    /// plus the caller's own signed headers.
    pub headers: Vec<(String, String)>,
    /// The hex signature.
    pub signature: String,
    /// The canonical request that was signed.
    pub canonical_request: String,
    /// The string that was signed.
    pub string_to_sign: String,
}

const SIGNER_HEADERS: [&str; 4] = ["host", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"];

/// Sign `request` with an `Authorization` header (SigV4 header auth).
pub fn sign_request(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: Timestamp,
    request: &Request<'_>,
) -> SignedRequest {
    let amz_date = time.amz_date();
    let mut headers: Vec<(&str, &str)> =
        vec![("host", request.host), ("x-amz-content-sha256", request.payload_hash), ("x-amz-date", &amz_date)];
    if let Some(token) = &credentials.session_token {
        headers.push(("x-amz-security-token", token));
    }
    headers.extend(
        request.headers.iter().filter(|(n, _)| !SIGNER_HEADERS.iter().any(|s| n.trim().eq_ignore_ascii_case(s))),
    );

    let (canonical_hdrs, signed_headers) = canonical_headers(&headers);
    let canonical = canonical_request(
        request.method,
        &canonical_uri(request.path),
        &canonical_query_string(request.query),
        &canonical_hdrs,
        &signed_headers,
        request.payload_hash,
    );
    let scope = credential_scope(time, region, service);
    let to_sign = string_to_sign(time, &scope, &canonical);
    let key = signing_key(&credentials.secret_access_key, &time.date_stamp(), region, service);
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope},SignedHeaders={signed_headers},Signature={signature}",
        credentials.access_key_id
    );

    let mut send: Vec<(String, String)> =
        headers.iter().map(|(n, v)| (n.trim().to_ascii_lowercase(), v.to_string())).collect();
    send.push(("authorization".to_string(), authorization.clone()));
    SignedRequest { authorization, headers: send, signature, canonical_request: canonical, string_to_sign: to_sign }
}

/// One request to presign (SigV4 query auth). Only `host` is signed; the payload is `UNSIGNED-PAYLOAD`.
#[derive(Debug, Clone, Copy)]
pub struct Presign<'a> {
    /// `GET`, `PUT`, `HEAD`, …
    pub method: &'a str,
    /// `https` or `http`.
    pub scheme: Scheme,
    /// The `Host` header value, with `:port` when the port is not the scheme's default.
    pub host: &'a str,
    /// The raw path.
    pub path: &'a str,
    /// Further raw query pairs to sign (e.g. `response-content-type`), besides the `X-Amz-*` ones.
    pub query: &'a [(&'a str, &'a str)],
    /// Lifetime in seconds, 1 to [`MAX_PRESIGN_EXPIRES`].
    pub expires_secs: u64,
}

/// A presigned URL and what went into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    /// The full URL: `scheme://host/path?…&X-Amz-Signature=…`.
    pub url: String,
    /// The hex signature.
    pub signature: String,
    /// The canonical request that was signed.
    pub canonical_request: String,
    /// The string that was signed.
    pub string_to_sign: String,
}

/// Presign a request: the `X-Amz-*` query parameters plus the signature, as a full URL.
pub fn presign(
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: Timestamp,
    request: &Presign<'_>,
) -> Result<PresignedUrl, SignError> {
    if request.expires_secs == 0 || request.expires_secs > MAX_PRESIGN_EXPIRES {
        return Err(SignError::InvalidExpiry(request.expires_secs));
    }
    let scope = credential_scope(time, region, service);
    let credential = format!("{}/{scope}", credentials.access_key_id);
    let amz_date = time.amz_date();
    let expires = request.expires_secs.to_string();
    let mut query: Vec<(&str, &str)> = vec![
        ("X-Amz-Algorithm", ALGORITHM),
        ("X-Amz-Credential", &credential),
        ("X-Amz-Date", &amz_date),
        ("X-Amz-Expires", &expires),
        ("X-Amz-SignedHeaders", "host"),
    ];
    if let Some(token) = &credentials.session_token {
        query.push(("X-Amz-Security-Token", token));
    }
    query.extend(request.query.iter().filter(|(n, _)| !n.starts_with("X-Amz-")));

    let uri = canonical_uri(request.path);
    let canonical_query = canonical_query_string(&query);
    let (canonical_hdrs, signed_headers) = canonical_headers(&[("host", request.host)]);
    let canonical =
        canonical_request(request.method, &uri, &canonical_query, &canonical_hdrs, &signed_headers, UNSIGNED_PAYLOAD);
    let to_sign = string_to_sign(time, &scope, &canonical);
    let key = signing_key(&credentials.secret_access_key, &time.date_stamp(), region, service);
    let signature = hex(&hmac_sha256(&key, to_sign.as_bytes()));
    let url =
        format!("{}://{}{uri}?{canonical_query}&X-Amz-Signature={signature}", request.scheme.as_str(), request.host);
    Ok(PresignedUrl { url, signature, canonical_request: canonical, string_to_sign: to_sign })
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// 80 or 443.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// Where the bucket name goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressingStyle {
    /// `https://endpoint/bucket/key`: MinIO, s3s-fs, R2, anything on an IP address.
    Path,
    /// `https://bucket.endpoint/key`: AWS's default.
    VirtualHosted,
}

/// An S3-compatible endpoint with its region and addressing style: turns (bucket, key) into hosts, paths, URLs,
/// signed requests and presigned URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Endpoint {
    scheme: Scheme,
    /// Lower-case host name or IP literal (IPv6 in brackets), without port.
    host: String,
    port: Option<u16>,
    region: String,
    style: AddressingStyle,
}

impl S3Endpoint {
    /// AWS S3 in `region`: `https://s3.<region>.amazonaws.com` (or `.amazonaws.com.cn` for the China regions).
    pub fn aws(region: &str, style: AddressingStyle) -> Self {
        let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
        S3Endpoint {
            scheme: Scheme::Https,
            host: format!("s3.{region}.{suffix}"),
            port: None,
            region: region.to_string(),
            style,
        }
    }

    /// A custom endpoint URL such as `http://127.0.0.1:9014`, `https://<account>.r2.cloudflarestorage.com` or
    /// `https://minio.internal:9000/`. Only scheme, host and port are allowed (no path, user, query or fragment).
    pub fn parse(endpoint: &str, region: &str, style: AddressingStyle) -> Result<Self, SignError> {
        let bad = |why: &str| {
            SignError::InvalidEndpoint(format!("{why} in {:?}", endpoint.chars().take(200).collect::<String>()))
        };
        let (scheme, rest) = if let Some(rest) = strip_prefix_ignore_case(endpoint.trim(), "https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(endpoint.trim(), "http://") {
            (Scheme::Http, rest)
        } else {
            return Err(bad("expected a URL starting with https:// or http://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
            return Err(bad("expected only scheme://host[:port]"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("invalid host or port"))?;
        if region.is_empty() {
            return Err(SignError::InvalidEndpoint("the region is empty".to_string()));
        }
        let port = port.filter(|p| *p != scheme.default_port());
        Ok(S3Endpoint { scheme, host: host.to_ascii_lowercase(), port, region: region.to_string(), style })
    }

    /// The region in the credential scope.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The addressing style.
    pub fn style(&self) -> AddressingStyle {
        self.style
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The `Host` header for requests about `bucket`: `[bucket.]host[:port]`, the port only when not the default.
    pub fn host(&self, bucket: &str) -> String {
        let host = match self.style {
            AddressingStyle::Path => self.host.clone(),
            AddressingStyle::VirtualHosted => format!("{bucket}.{}", self.host),
        };
        match self.port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    /// The raw (unencoded) path of `key` in `bucket`: `/bucket/key` or `/key`; for an empty key (bucket-level
    /// requests such as ListObjectsV2) `/bucket` or `/`.
    pub fn path(&self, bucket: &str, key: &str) -> String {
        match (self.style, key.is_empty()) {
            (AddressingStyle::Path, true) => format!("/{bucket}"),
            (AddressingStyle::Path, false) => format!("/{bucket}/{key}"),
            (AddressingStyle::VirtualHosted, _) => format!("/{key}"),
        }
    }

    /// The full URL of `key` with raw query pairs, encoded exactly as [`S3Endpoint::sign`] signs it.
    pub fn url(&self, bucket: &str, key: &str, query: &[(&str, &str)]) -> String {
        let mut url =
            format!("{}://{}{}", self.scheme.as_str(), self.host(bucket), canonical_uri(&self.path(bucket, key)));
        if !query.is_empty() {
            url.push('?');
            url.push_str(&canonical_query_string(query));
        }
        url
    }

    /// Sign a request about `key` in `bucket` with an `Authorization` header. Send it to
    /// [`S3Endpoint::url`]`(bucket, key, query)` with every header of [`SignedRequest::headers`].
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        credentials: &Credentials,
        time: Timestamp,
        method: &str,
        bucket: &str,
        key: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
        payload_hash: &str,
    ) -> SignedRequest {
        let host = self.host(bucket);
        let path = self.path(bucket, key);
        let request = Request { method, host: &host, path: &path, query, headers, payload_hash };
        sign_request(credentials, &self.region, S3_SERVICE, time, &request)
    }

    /// A presigned URL for `method` on `key` in `bucket`, valid for `expires_secs` from `time`.
    pub fn presign(
        &self,
        credentials: &Credentials,
        time: Timestamp,
        method: &str,
        bucket: &str,
        key: &str,
        expires_secs: u64,
    ) -> Result<String, SignError> {
        let host = self.host(bucket);
        let path = self.path(bucket, key);
        let request = Presign { method, scheme: self.scheme, host: &host, path: &path, query: &[], expires_secs };
        Ok(presign(credentials, &self.region, S3_SERVICE, time, &request)?.url)
    }

    /// A presigned GET of `key` in `bucket` (the blob redirect).
    pub fn presign_get(
        &self,
        credentials: &Credentials,
        time: Timestamp,
        bucket: &str,
        key: &str,
        expires_secs: u64,
    ) -> Result<String, SignError> {
        self.presign(credentials, time, "GET", bucket, key, expires_secs)
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// Split `host[:port]` or `[v6]:port`; the host must be non-empty and made of host-name characters.
pub(crate) fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let valid_host = !host.is_empty()
        && (host.starts_with('[')
            || host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !valid_host {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    //! The worked examples of AWS's S3 SigV4 documentation ("Examples: Signature Calculations" for header auth,
    //! "Authenticating Requests: Using Query Parameters" for presigning). Expected values are the documentation's.
    use super::*;

    const HOST: &str = "examplebucket.s3.amazonaws.com";

    fn creds() -> Credentials {
        Credentials::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    }

    fn may24() -> Timestamp {
        Timestamp::parse_amz_date("20130524T000000Z").unwrap()
    }

    fn get(path: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> SignedRequest {
        let request = Request { method: "GET", host: HOST, path, query, headers, payload_hash: EMPTY_PAYLOAD_SHA256 };
        sign_request(&creds(), "us-east-1", "s3", may24(), &request)
    }

    #[test]
    fn get_object_with_range() {
        let signed = get("/test.txt", &[], &[("Range", "bytes=0-9")]);
        assert_eq!(
            signed.canonical_request,
            "GET\n/test.txt\n\nhost:examplebucket.s3.amazonaws.com\nrange:bytes=0-9\n\
             x-amz-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-amz-date:20130524T000000Z\n\nhost;range;x-amz-content-sha256;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            signed.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
        );
        assert_eq!(signed.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        assert_eq!(
            signed.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let names: Vec<&str> = signed.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "x-amz-content-sha256", "x-amz-date", "range", "authorization"]);
    }

    #[test]
    fn put_object_with_storage_class_and_date() {
        let body = b"Welcome to Amazon S3.";
        let payload = super::super::sha256_hex(body);
        assert_eq!(payload, "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072");
        let request = Request {
            method: "PUT",
            host: HOST,
            path: "/test$file.text",
            query: &[],
            headers: &[("Date", "Fri, 24 May 2013 00:00:00 GMT"), ("x-amz-storage-class", "REDUCED_REDUNDANCY")],
            payload_hash: &payload,
        };
        let signed = sign_request(&creds(), "us-east-1", "s3", may24(), &request);
        assert!(signed.canonical_request.starts_with("PUT\n/test%24file.text\n\ndate:Fri, 24 May 2013 00:00:00 GMT\n"));
        assert_eq!(
            signed.string_to_sign,
            "AWS4-HMAC-SHA256\n20130524T000000Z\n20130524/us-east-1/s3/aws4_request\n\
             9e0e90d9c76de8fa5b200d8c849cd5b8dc7a3be3951ddb7f6a76b4158342019d"
        );
        assert_eq!(
            signed.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,\
             Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
        );
    }

    #[test]
    fn get_bucket_lifecycle_a_value_less_query_parameter() {
        let signed = get("/", &[("lifecycle", "")], &[]);
        assert!(signed.canonical_request.starts_with("GET\n/\nlifecycle=\nhost:"));
        assert!(signed.string_to_sign.ends_with("9766c798316ff2757b517bc739a67f6213b4ab36dd5da2f94eaebf79c77395ca"));
        assert_eq!(signed.signature, "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543");
    }

    #[test]
    fn list_objects_sorts_query_parameters() {
        // Given in the opposite order to the canonical one.
        let signed = get("/", &[("prefix", "J"), ("max-keys", "2")], &[]);
        assert!(signed.canonical_request.starts_with("GET\n/\nmax-keys=2&prefix=J\nhost:"));
        assert!(signed.string_to_sign.ends_with("df57d21db20da04d7fa30298dd4488ba3a2b47ca3a489c74750e0f1e7df1b9b7"));
        assert_eq!(signed.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
    }

    #[test]
    fn presigned_get_object() {
        let request = Presign {
            method: "GET",
            scheme: Scheme::Https,
            host: HOST,
            path: "/test.txt",
            query: &[],
            expires_secs: 86_400,
        };
        let presigned = presign(&creds(), "us-east-1", "s3", may24(), &request).unwrap();
        assert_eq!(
            presigned.canonical_request,
            "GET\n/test.txt\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\nhost:examplebucket.s3.amazonaws.com\n\nhost\nUNSIGNED-PAYLOAD"
        );
        assert!(presigned.string_to_sign.ends_with("3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"));
        assert_eq!(
            presigned.url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z\
             &X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn endpoint_virtual_hosted_reproduces_the_documented_presigned_url() {
        let endpoint =
            S3Endpoint::parse("https://s3.amazonaws.com", "us-east-1", AddressingStyle::VirtualHosted).unwrap();
        assert_eq!(endpoint.host("examplebucket"), HOST);
        let url = endpoint.presign_get(&creds(), may24(), "examplebucket", "test.txt", 86_400).unwrap();
        assert!(url.starts_with("https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm="));
        assert!(url.ends_with("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"));
    }

    #[test]
    fn endpoint_virtual_hosted_reproduces_the_documented_header_signatures() {
        let endpoint =
            S3Endpoint::parse("https://s3.amazonaws.com/", "us-east-1", AddressingStyle::VirtualHosted).unwrap();
        let signed = endpoint.sign(
            &creds(),
            may24(),
            "GET",
            "examplebucket",
            "test.txt",
            &[],
            &[("range", "bytes=0-9")],
            EMPTY_PAYLOAD_SHA256,
        );
        assert_eq!(signed.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
        let listing = endpoint.sign(
            &creds(),
            may24(),
            "GET",
            "examplebucket",
            "",
            &[("max-keys", "2"), ("prefix", "J")],
            &[],
            EMPTY_PAYLOAD_SHA256,
        );
        assert_eq!(listing.signature, "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7");
        assert_eq!(
            endpoint.url("examplebucket", "", &[("prefix", "J"), ("max-keys", "2")]),
            "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J"
        );
    }

    #[test]
    fn path_style_custom_endpoint_keeps_the_port_in_host_and_the_bucket_in_the_path() {
        let endpoint = S3Endpoint::parse("http://127.0.0.1:9014", "us-east-1", AddressingStyle::Path).unwrap();
        assert_eq!(endpoint.host("pier"), "127.0.0.1:9014");
        assert_eq!(
            endpoint.path("pier", "docker/registry/v2/blobs/sha256:ab/data"),
            "/pier/docker/registry/v2/blobs/sha256:ab/data"
        );
        assert_eq!(endpoint.path("pier", ""), "/pier");
        let url = endpoint.presign_get(&creds(), may24(), "pier", "blobs/sha256:ab cd", 600).unwrap();
        assert!(
            url.starts_with("http://127.0.0.1:9014/pier/blobs/sha256%3Aab%20cd?X-Amz-Algorithm=AWS4-HMAC-SHA256&"),
            "{url}"
        );
        assert!(url.contains("&X-Amz-Expires=600&"));
        // The signed Host carries the port: the same request signed for another port differs.
        let other = S3Endpoint::parse("http://127.0.0.1:9015", "us-east-1", AddressingStyle::Path).unwrap();
        assert_ne!(
            url.rsplit('=').next(),
            other.presign_get(&creds(), may24(), "pier", "blobs/sha256:ab cd", 600).unwrap().rsplit('=').next()
        );
        let signed = endpoint.sign(&creds(), may24(), "HEAD", "pier", "a", &[], &[], UNSIGNED_PAYLOAD);
        assert!(signed.canonical_request.contains("\nhost:127.0.0.1:9014\n"));
        assert!(signed.headers.contains(&("host".to_string(), "127.0.0.1:9014".to_string())));
    }

    #[test]
    fn default_ports_are_left_out_of_the_host_header() {
        let e = S3Endpoint::parse("HTTPS://MinIO.example:443/", "eu-west-1", AddressingStyle::Path).unwrap();
        assert_eq!(e.host("b"), "minio.example");
        assert_eq!(e.url("b", "k", &[]), "https://minio.example/b/k");
        let v6 = S3Endpoint::parse("http://[::1]:9000", "us-east-1", AddressingStyle::Path).unwrap();
        assert_eq!(v6.host("b"), "[::1]:9000");
    }

    #[test]
    fn aws_endpoints_by_region() {
        let e = S3Endpoint::aws("eu-central-1", AddressingStyle::VirtualHosted);
        assert_eq!(e.host("my-bucket"), "my-bucket.s3.eu-central-1.amazonaws.com");
        assert_eq!(e.url("my-bucket", "a/b", &[]), "https://my-bucket.s3.eu-central-1.amazonaws.com/a/b");
        let cn = S3Endpoint::aws("cn-north-1", AddressingStyle::Path);
        assert_eq!(cn.url("b", "k", &[]), "https://s3.cn-north-1.amazonaws.com.cn/b/k");
    }

    #[test]
    fn malformed_endpoints_are_refused() {
        for bad in [
            "127.0.0.1:9000",
            "ftp://x",
            "http://",
            "http://host/path",
            "http://u@host",
            "http://host:0",
            "http://host:99999",
            "http://host:x",
            "http://ho st",
            "http://host?x",
        ] {
            assert!(S3Endpoint::parse(bad, "us-east-1", AddressingStyle::Path).is_err(), "{bad}");
        }
        assert!(S3Endpoint::parse("http://host", "", AddressingStyle::Path).is_err());
    }

    #[test]
    fn presign_lifetime_is_bounded() {
        let e = S3Endpoint::aws("us-east-1", AddressingStyle::VirtualHosted);
        assert_eq!(e.presign_get(&creds(), may24(), "b", "k", 0), Err(SignError::InvalidExpiry(0)));
        assert!(e.presign_get(&creds(), may24(), "b", "k", MAX_PRESIGN_EXPIRES).is_ok());
        assert!(e.presign_get(&creds(), may24(), "b", "k", MAX_PRESIGN_EXPIRES + 1).is_err());
    }

    #[test]
    fn session_tokens_are_signed_in_headers_and_query() {
        let c = creds().with_session_token("tok/en+");
        let e = S3Endpoint::aws("us-east-1", AddressingStyle::VirtualHosted);
        let signed = e.sign(&c, may24(), "GET", "b", "k", &[], &[], UNSIGNED_PAYLOAD);
        assert!(signed
            .authorization
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
        assert!(signed.headers.contains(&("x-amz-security-token".to_string(), "tok/en+".to_string())));
        let url = e.presign_get(&c, may24(), "b", "k", 60).unwrap();
        assert!(url.contains("&X-Amz-Security-Token=tok%2Fen%2B&"), "{url}");
        assert!(!format!("{c:?}").contains("tok/en+") && !format!("{c:?}").contains("EXAMPLEKEY"));
    }

    #[test]
    fn canonical_headers_trim_collapse_lowercase_and_merge() {
        let (canonical, signed) =
            canonical_headers(&[("X-Amz-Meta-A", "  a   b  "), ("Host", "h"), ("x-amz-meta-a", "c")]);
        assert_eq!(canonical, "host:h\nx-amz-meta-a:a b,c\n");
        assert_eq!(signed, "host;x-amz-meta-a");
    }

    #[test]
    fn paths_are_encoded_once_and_never_normalised() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("a%2Fb"), "/a%252Fb");
        assert_eq!(canonical_uri("/a//./b c"), "/a//./b%20c");
        assert_eq!(canonical_query_string(&[("b", "x y"), ("a", "1/2"), ("a", "0")]), "a=0&a=1%2F2&b=x%20y");
    }

    #[test]
    fn signer_headers_given_by_the_caller_are_not_duplicated() {
        let signed = get("/test.txt", &[], &[("Range", "bytes=0-9"), ("Host", "evil"), ("X-Amz-Date", "x")]);
        assert_eq!(signed.signature, "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }
}
