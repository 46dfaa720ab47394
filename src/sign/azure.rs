//! Azure Blob Storage request signing: SharedKey authorization (`Authorization: SharedKey account:signature`) and
//! read-only, short-lived **service SAS** URLs for one blob (the blob-GET redirect).
//!
//! SharedKey signs, with HMAC-SHA256 under the base64-decoded account key, a string made of the verb, eleven
//! standard headers (Content-Length empty when 0, for versions 2015-02-21 and later), the canonicalized `x-ms-`
//! headers and the canonicalized resource `/account` + the URL path as sent + `\nname:value` for each query
//! parameter (names lower-cased, sorted). On Azurite's path-style endpoint (`http://127.0.0.1:10000/devstoreaccount1/
//! container/blob`) the URL path already starts with the account, so the resource is
//! `/devstoreaccount1/devstoreaccount1/container/blob` — what both the Azure SDK (`SharedKeyCredentialPolicy`) and
//! Azurite (`BlobSharedKeyAuthenticator`, which uses the full request path) compute.
//!
//! A service SAS for sv ≥ 2020-12-06 signs sixteen lines: permissions, start, expiry, `/blob/account/container/blob`
//! (raw names, the account once even on Azurite), identifier, IP, protocol, version, resource, snapshot time,
//! encryption scope, and the five response-header overrides.
//!
//! The endpoint is either the account's host under a realm (`core.windows.net`, `core.chinacloudapi.cn`,
//! `core.usgovcloudapi.net`, …) or a path-style URL with the account as first path segment (Azurite).
//! Expected values in the tests come from the Azure SDK for Python (`scripts/vectors/azure_vectors.py`).

use super::sigv4::{split_host_port, Scheme};
use super::{hmac_sha256, percent_encode, SignError, Timestamp};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::fmt;

/// The service SAS version Pier signs by default (a version Azure, Azurite and the SDKs all accept).
pub const DEFAULT_SAS_VERSION: &str = "2022-11-02";
/// The oldest SAS version whose string-to-sign [`blob_sas_string_to_sign`] produces.
pub const MIN_SAS_VERSION: &str = "2020-12-06";
/// The `x-ms-version` Pier sends by default with SharedKey requests (same string-to-sign since 2015-02-21).
pub const DEFAULT_API_VERSION: &str = "2021-08-06";
/// The global Azure cloud's storage suffix.
pub const DEFAULT_REALM: &str = "core.windows.net";
/// Azurite's (and the old storage emulator's) well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key, published in Microsoft's Azurite documentation. Not a secret: it only opens
/// local emulators.
pub const AZURITE_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A storage account name and its decoded key. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SharedKeyCredential {
    account: String,
    key: Vec<u8>,
}

impl SharedKeyCredential {
    /// From the account name and the base64 account key as the portal shows it.
    pub fn new(account: impl Into<String>, base64_key: &str) -> Result<Self, SignError> {
        let key = B64.decode(base64_key.trim()).map_err(|_| SignError::InvalidAccountKey)?;
        if key.is_empty() {
            return Err(SignError::InvalidAccountKey);
        }
        Ok(SharedKeyCredential { account: account.into(), key })
    }

    /// Azurite's well-known development account.
    pub fn azurite() -> Self {
        // The constant is valid base64 (checked by a test); the empty-key fallback is unreachable.
        SharedKeyCredential::new(AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY)
            .unwrap_or_else(|_| SharedKeyCredential { account: AZURITE_ACCOUNT.to_string(), key: Vec::new() })
    }

    /// The account name.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Base64 HMAC-SHA256 of `string_to_sign` under the account key.
    pub fn sign(&self, string_to_sign: &str) -> String {
        B64.encode(hmac_sha256(&self.key, string_to_sign.as_bytes()))
    }
}

impl fmt::Debug for SharedKeyCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyCredential").field("account", &self.account).field("key", &"<redacted>").finish()
    }
}

/// One request to sign with SharedKey.
#[derive(Debug, Clone, Copy)]
pub struct SharedKeyRequest<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The URL path exactly as sent, already percent-encoded (see [`BlobEndpoint::encoded_path`]); on a path-style
    /// endpoint it starts with `/account`.
    pub encoded_path: &'a str,
    /// Raw (decoded) query pairs, e.g. `[("comp", "block"), ("blockid", "MDAwMDAx")]`.
    pub query: &'a [(&'a str, &'a str)],
    /// Every header sent: the standard ones that are signed (Content-Length, Content-Type, Range, If-Match, …) and
    /// all `x-ms-*` headers, including `x-ms-date` and `x-ms-version`.
    pub headers: &'a [(&'a str, &'a str)],
}

/// The standard headers of the SharedKey string-to-sign, in order.
const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The SharedKey string to sign (Blob service, version 2015-02-21 and later) of `request` for `account`.
pub fn shared_key_string_to_sign(account: &str, request: &SharedKeyRequest<'_>) -> String {
    let header = |name: &str| -> String {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        values.join(",")
    };
    let mut out = request.method.to_ascii_uppercase();
    out.push('\n');
    for name in STANDARD_HEADERS {
        let value = header(name);
        if !(name == "content-length" && value == "0") {
            out.push_str(&value);
        }
        out.push('\n');
    }

    // Canonicalized headers: x-ms-*, lower-cased, sorted, one per line.
    let mut ms: Vec<(String, &str)> = request
        .headers
        .iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim()))
        .filter(|(n, _)| n.starts_with("x-ms-"))
        .collect();
    ms.sort_by(|a, b| a.0.cmp(&b.0));
    let mut i = 0;
    while i < ms.len() {
        let name = &ms[i].0;
        let mut values = vec![ms[i].1];
        while i + 1 < ms.len() && ms[i + 1].0 == *name {
            i += 1;
            values.push(ms[i].1);
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
        i += 1;
    }

    // Canonicalized resource: /account + path, then each query parameter as \nname:value (values of a repeated name
    // sorted and comma-joined).
    out.push('/');
    out.push_str(account);
    if request.encoded_path.is_empty() {
        out.push('/');
    } else {
        out.push_str(request.encoded_path);
    }
    let mut query: Vec<(String, &str)> = request.query.iter().map(|(n, v)| (n.to_ascii_lowercase(), *v)).collect();
    query.sort();
    let mut i = 0;
    while i < query.len() {
        let name = &query[i].0;
        let mut values = vec![query[i].1];
        while i + 1 < query.len() && query[i + 1].0 == *name {
            i += 1;
            values.push(query[i].1);
        }
        out.push('\n');
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        i += 1;
    }
    out
}

/// A SharedKey signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedKeySignature {
    /// `SharedKey account:signature`, the `Authorization` header value.
    pub authorization: String,
    /// The string that was signed (for debugging a 403).
    pub string_to_sign: String,
}

/// Sign `request` with SharedKey.
pub fn sign_shared_key(credential: &SharedKeyCredential, request: &SharedKeyRequest<'_>) -> SharedKeySignature {
    let string_to_sign = shared_key_string_to_sign(&credential.account, request);
    let authorization = format!("SharedKey {}:{}", credential.account, credential.sign(&string_to_sign));
    SharedKeySignature { authorization, string_to_sign }
}

/// `spr`: the protocols a SAS may be used over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SasProtocol {
    /// `https`
    Https,
    /// `https,http` (needed for Azurite over plain HTTP).
    HttpsAndHttp,
}

impl SasProtocol {
    /// The `spr` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SasProtocol::Https => "https",
            SasProtocol::HttpsAndHttp => "https,http",
        }
    }
}

/// A service SAS for one blob (`sr=b`), signed with the account key.
#[derive(Debug, Clone, Copy)]
pub struct BlobSas<'a> {
    /// The container name.
    pub container: &'a str,
    /// The raw (unencoded) blob name.
    pub blob: &'a str,
    /// `sp`, e.g. `r` for read-only.
    pub permissions: &'a str,
    /// `st`; `None` means valid from now (avoids clock-skew trouble).
    pub start: Option<Timestamp>,
    /// `se`.
    pub expiry: Timestamp,
    /// `spr`; `None` leaves it out (any protocol).
    pub protocol: Option<SasProtocol>,
    /// `sv`, at least [`MIN_SAS_VERSION`].
    pub version: &'a str,
}

impl<'a> BlobSas<'a> {
    /// A read-only SAS (`sp=r`) for `container/blob` valid until `expiry`, version [`DEFAULT_SAS_VERSION`].
    pub fn read(container: &'a str, blob: &'a str, start: Option<Timestamp>, expiry: Timestamp) -> Self {
        BlobSas { container, blob, permissions: "r", start, expiry, protocol: None, version: DEFAULT_SAS_VERSION }
    }

    /// The same SAS restricted to `protocol`.
    pub fn with_protocol(mut self, protocol: SasProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }
}

/// The service SAS string to sign (versions 2020-12-06 and later) for a blob SAS with the account key. Fields in
/// order: sp, st, se, canonicalized resource, si, sip, spr, sv, sr, snapshot time, ses, rscc, rscd, rsce, rscl, rsct.
pub fn blob_sas_string_to_sign(account: &str, sas: &BlobSas<'_>) -> Result<String, SignError> {
    if !valid_version(sas.version) || sas.version < MIN_SAS_VERSION {
        return Err(SignError::UnsupportedVersion(sas.version.chars().take(20).collect()));
    }
    let start = sas.start.map(Timestamp::iso8601).unwrap_or_default();
    let resource = format!("/blob/{account}/{}/{}", sas.container, sas.blob);
    let fields: [&str; 16] = [
        sas.permissions,
        &start,
        &sas.expiry.iso8601(),
        &resource,
        "", // si: no stored access policy
        "", // sip: any IP
        sas.protocol.map(SasProtocol::as_str).unwrap_or(""),
        sas.version,
        "b", // sr: one blob
        "",  // snapshot time
        "",  // ses: no encryption scope
        "",  // rscc
        "",  // rscd
        "",  // rsce
        "",  // rscl
        "",  // rsct
    ];
    Ok(fields.join("\n"))
}

fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// A signed SAS token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken {
    /// The query string to append to the blob URL (no leading `?`): `st=…&se=…&sp=r&spr=…&sv=…&sr=b&sig=…`.
    pub query: String,
    /// The base64 signature (`sig`, before URL encoding).
    pub signature: String,
    /// The string that was signed.
    pub string_to_sign: String,
}

/// Sign a blob SAS with the account key.
pub fn blob_sas_token(credential: &SharedKeyCredential, sas: &BlobSas<'_>) -> Result<SasToken, SignError> {
    let string_to_sign = blob_sas_string_to_sign(&credential.account, sas)?;
    let signature = credential.sign(&string_to_sign);
    let mut params: Vec<(&str, String)> = Vec::with_capacity(7);
    if let Some(start) = sas.start {
        params.push(("st", start.iso8601()));
    }
    params.push(("se", sas.expiry.iso8601()));
    params.push(("sp", sas.permissions.to_string()));
    if let Some(protocol) = sas.protocol {
        params.push(("spr", protocol.as_str().to_string()));
    }
    params.push(("sv", sas.version.to_string()));
    params.push(("sr", "b".to_string()));
    params.push(("sig", signature.clone()));
    let query = params.iter().map(|(n, v)| format!("{n}={}", percent_encode(v, false))).collect::<Vec<_>>().join("&");
    Ok(SasToken { query, signature, string_to_sign })
}

/// A Blob service endpoint: `https://account.blob.<realm>` or a path-style URL with the account as first segment
/// (Azurite: `http://127.0.0.1:10000/devstoreaccount1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEndpoint {
    scheme: Scheme,
    /// Host with `:port` when not the default.
    host: String,
    /// `Some(account)` for path-style endpoints.
    path_account: Option<String>,
}

impl BlobEndpoint {
    /// `https://<account>.blob.<realm>`, realm e.g. `core.windows.net`, `core.chinacloudapi.cn`,
    /// `core.usgovcloudapi.net`.
    pub fn for_realm(account: &str, realm: &str) -> Result<Self, SignError> {
        let realm = realm.trim().trim_matches('.');
        if !valid_account(account) {
            return Err(SignError::InvalidEndpoint(format!(
                "invalid storage account name {:?}",
                account.chars().take(64).collect::<String>()
            )));
        }
        if realm.is_empty() || !realm.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')) {
            return Err(SignError::InvalidEndpoint(format!(
                "invalid realm {:?}",
                realm.chars().take(100).collect::<String>()
            )));
        }
        Ok(BlobEndpoint {
            scheme: Scheme::Https,
            host: format!("{account}.blob.{}", realm.to_ascii_lowercase()),
            path_account: None,
        })
    }

    /// Azurite on `host_port` (e.g. `127.0.0.1:10000`) over HTTP with the account in the path.
    pub fn azurite(host_port: &str, account: &str) -> Result<Self, SignError> {
        BlobEndpoint::parse(&format!("http://{host_port}/{account}"))
    }

    /// A blob service URL: `https://acct.blob.core.windows.net[/]` (account in the host) or
    /// `http://127.0.0.1:10000/devstoreaccount1` (path style, account as the only path segment).
    pub fn parse(url: &str) -> Result<Self, SignError> {
        let bad =
            |why: &str| SignError::InvalidEndpoint(format!("{why} in {:?}", url.chars().take(200).collect::<String>()));
        let trimmed = url.trim();
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            _ => return Err(bad("expected a URL starting with https:// or http://")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if rest.contains(['?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(bad("expected only scheme://host[:port][/account]"));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("invalid host or port"))?;
        let host = host.to_ascii_lowercase();
        let host = match port.filter(|p| *p != scheme.default_port()) {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let account = path.trim_matches('/');
        let path_account = if account.is_empty() {
            None
        } else if valid_account(account) {
            Some(account.to_string())
        } else {
            return Err(bad("the path may only hold the account name"));
        };
        Ok(BlobEndpoint { scheme, host, path_account })
    }

    /// The `Host` header value.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True for a path-style endpoint (account in the path).
    pub fn is_path_style(&self) -> bool {
        self.path_account.is_some()
    }

    /// The URL path of `container/blob`, percent-encoded as sent (and as SharedKey signs it); `blob` empty for
    /// container-level requests.
    pub fn encoded_path(&self, container: &str, blob: &str) -> String {
        let mut path = String::new();
        if let Some(account) = &self.path_account {
            path.push('/');
            path.push_str(account);
        }
        path.push('/');
        path.push_str(&percent_encode(container, false));
        if !blob.is_empty() {
            path.push('/');
            path.push_str(&percent_encode(blob, true));
        }
        path
    }

    /// The full URL of `container/blob` with raw query pairs (in the order given).
    pub fn url(&self, container: &str, blob: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}://{}{}", self.scheme.as_str(), self.host, self.encoded_path(container, blob));
        for (i, (n, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&percent_encode(n, false));
            url.push('=');
            url.push_str(&percent_encode(v, false));
        }
        url
    }

    /// Sign a request about `container/blob` with SharedKey, adding `x-ms-date` (from `time`) and `x-ms-version`
    /// (`api_version`, e.g. [`DEFAULT_API_VERSION`]) to `headers`. `headers` holds every other header to send.
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        &self,
        credential: &SharedKeyCredential,
        time: Timestamp,
        api_version: &str,
        method: &str,
        container: &str,
        blob: &str,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> SignedBlobRequest {
        let date = time.http_date();
        let mut all: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(n, _)| {
                !n.trim().eq_ignore_ascii_case("x-ms-date") && !n.trim().eq_ignore_ascii_case("x-ms-version")
            })
            .copied()
            .collect();
        all.push(("x-ms-date", &date));
        all.push(("x-ms-version", api_version));
        let path = self.encoded_path(container, blob);
        let signature =
            sign_shared_key(credential, &SharedKeyRequest { method, encoded_path: &path, query, headers: &all });
        let mut send: Vec<(String, String)> = all.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        send.push(("authorization".to_string(), signature.authorization.clone()));
        SignedBlobRequest {
            url: self.url(container, blob, query),
            headers: send,
            authorization: signature.authorization,
            string_to_sign: signature.string_to_sign,
        }
    }

    /// A read-only service SAS URL for `container/blob`, valid from `start` (or immediately) until `expiry`.
    /// HTTP endpoints (Azurite) get `spr=https,http`, HTTPS endpoints `spr=https`.
    pub fn presigned_read_url(
        &self,
        credential: &SharedKeyCredential,
        container: &str,
        blob: &str,
        start: Option<Timestamp>,
        expiry: Timestamp,
    ) -> Result<String, SignError> {
        let protocol = match self.scheme {
            Scheme::Https => SasProtocol::Https,
            Scheme::Http => SasProtocol::HttpsAndHttp,
        };
        self.presigned_url(credential, &BlobSas::read(container, blob, start, expiry).with_protocol(protocol))
    }

    /// The URL of `sas`'s blob with the signed SAS token.
    pub fn presigned_url(&self, credential: &SharedKeyCredential, sas: &BlobSas<'_>) -> Result<String, SignError> {
        let token = blob_sas_token(credential, sas)?;
        Ok(format!("{}?{}", self.url(sas.container, sas.blob, &[]), token.query))
    }
}

/// A SharedKey-signed request: where to send it and with which headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedBlobRequest {
    /// The full URL.
    pub url: String,
    /// Every header to send: the caller's, `x-ms-date`, `x-ms-version` and `authorization`.
    pub headers: Vec<(String, String)>,
    /// The `Authorization` value.
    pub authorization: String,
    /// The string that was signed.
    pub string_to_sign: String,
}

/// Storage account names: 3–24 lower-case letters and digits.
fn valid_account(name: &str) -> bool {
    (3..=24).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    //! Expected strings to sign and signatures are the Azure SDK for Python's output (azure-storage-blob 12.31.1,
    //! `SharedKeyCredentialPolicy.on_request` and `BlobSharedAccessSignature.generate_blob`), printed by
    //! `scripts/vectors/azure_vectors.py`. Key: Azurite's published development key.
    use super::*;

    const DATE: &str = "Fri, 24 May 2013 00:00:00 GMT";
    const V: &str = "2021-08-06";

    fn dev() -> SharedKeyCredential {
        SharedKeyCredential::azurite()
    }

    fn prod() -> SharedKeyCredential {
        SharedKeyCredential::new("pierregistry", AZURITE_ACCOUNT_KEY).unwrap()
    }

    fn may24() -> Timestamp {
        Timestamp::parse_amz_date("20130524T000000Z").unwrap()
    }

    #[test]
    fn azurite_get_blob_with_x_ms_range_signs_the_account_twice() {
        let endpoint = BlobEndpoint::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap();
        let signed = endpoint.sign(
            &dev(),
            may24(),
            V,
            "GET",
            "pier",
            "docker/registry/v2/blobs/sha256/ab/data",
            &[],
            &[("x-ms-range", "bytes=0-9")],
        );
        assert_eq!(signed.url, "http://127.0.0.1:10000/devstoreaccount1/pier/docker/registry/v2/blobs/sha256/ab/data");
        assert_eq!(
            signed.string_to_sign,
            "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Fri, 24 May 2013 00:00:00 GMT\nx-ms-range:bytes=0-9\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/pier/docker/registry/v2/blobs/sha256/ab/data"
        );
        assert_eq!(signed.authorization, "SharedKey devstoreaccount1:Q31CVYcRUeC09GWpUWVlSdoXQfMLSMh44+b8P5n/ZKI=");
        assert!(signed.headers.contains(&("x-ms-date".to_string(), DATE.to_string())));
    }

    #[test]
    fn azurite_list_blobs_sorts_and_decodes_query_parameters() {
        let endpoint = BlobEndpoint::azurite("127.0.0.1:10000", AZURITE_ACCOUNT).unwrap();
        let query = [("restype", "container"), ("comp", "list"), ("prefix", "docker/repo/"), ("maxresults", "2")];
        let signed = endpoint.sign(&dev(), may24(), V, "GET", "pier", "", &query, &[]);
        assert!(signed.string_to_sign.ends_with(
            "/devstoreaccount1/devstoreaccount1/pier\ncomp:list\nmaxresults:2\nprefix:docker/repo/\nrestype:container"
        ));
        assert_eq!(signed.authorization, "SharedKey devstoreaccount1:w9lPUXt1Pf7tiDTGhBLkaXFOCzS14yM4G3ztVbCOhwY=");
        assert_eq!(signed.url, "http://127.0.0.1:10000/devstoreaccount1/pier?restype=container&comp=list&prefix=docker%2Frepo%2F&maxresults=2");
    }

    #[test]
    fn put_block_on_the_global_cloud() {
        let endpoint = BlobEndpoint::for_realm("pierregistry", DEFAULT_REALM).unwrap();
        let headers = [("Content-Length", "1024"), ("Content-Type", "application/octet-stream")];
        let signed = endpoint.sign(
            &prod(),
            may24(),
            V,
            "PUT",
            "pier",
            "uploads/u1/data",
            &[("comp", "block"), ("blockid", "MDAwMDAx")],
            &headers,
        );
        assert_eq!(
            signed.url,
            "https://pierregistry.blob.core.windows.net/pier/uploads/u1/data?comp=block&blockid=MDAwMDAx"
        );
        assert_eq!(
            signed.string_to_sign,
            "PUT\n\n\n1024\n\napplication/octet-stream\n\n\n\n\n\n\nx-ms-date:Fri, 24 May 2013 00:00:00 GMT\nx-ms-version:2021-08-06\n\
             /pierregistry/pier/uploads/u1/data\nblockid:MDAwMDAx\ncomp:block"
        );
        assert_eq!(signed.authorization, "SharedKey pierregistry:qP+G0o0PVb1YTDfCtUvzo/hy9gOIUEAGeNqI5mV48xU=");
    }

    #[test]
    fn put_block_list_on_the_china_cloud_with_content_md5() {
        let endpoint = BlobEndpoint::for_realm("pierregistry", "core.chinacloudapi.cn").unwrap();
        let headers = [
            ("Content-Length", "78"),
            ("Content-Type", "application/xml"),
            ("Content-MD5", "Q2hlY2sgSW50ZWdyaXR5IQ=="),
            ("x-ms-blob-content-type", "application/octet-stream"),
        ];
        let signed =
            endpoint.sign(&prod(), may24(), V, "PUT", "pier", "uploads/u1/data", &[("comp", "blocklist")], &headers);
        assert!(signed.url.starts_with("https://pierregistry.blob.core.chinacloudapi.cn/pier/uploads/u1/data?"));
        assert_eq!(signed.authorization, "SharedKey pierregistry:lC8TiRKrzKNhXJQeqPJMHHWYc5PcL9Yvr2iG1TROGE0=");
    }

    #[test]
    fn delete_with_zero_content_length_and_an_encoded_name() {
        let endpoint = BlobEndpoint::parse("https://pierregistry.blob.core.windows.net/").unwrap();
        let signed =
            endpoint.sign(&prod(), may24(), V, "DELETE", "pier", "a b/c+d$e.txt", &[], &[("Content-Length", "0")]);
        assert_eq!(signed.url, "https://pierregistry.blob.core.windows.net/pier/a%20b/c%2Bd%24e.txt");
        assert!(signed.string_to_sign.starts_with("DELETE\n\n\n\n\n"));
        assert!(signed.string_to_sign.ends_with("\n/pierregistry/pier/a%20b/c%2Bd%24e.txt"));
        assert_eq!(signed.authorization, "SharedKey pierregistry:L62v3wunI7nnW1vggbf8QEhCoUDZk0/CKQ7A2yxzqVA=");
    }

    #[test]
    fn conditional_put_on_the_us_government_cloud() {
        let endpoint = BlobEndpoint::for_realm("pierregistry", "core.usgovcloudapi.net").unwrap();
        let headers = [
            ("Content-Length", "71"),
            ("Content-Type", "text/plain"),
            ("If-None-Match", "*"),
            ("x-ms-blob-type", "BlockBlob"),
        ];
        let blob = "docker/registry/v2/repositories/r/_manifests/tags/latest/current/link";
        let signed = endpoint.sign(&prod(), may24(), V, "PUT", "pier", blob, &[], &headers);
        assert!(signed
            .string_to_sign
            .starts_with("PUT\n\n\n71\n\ntext/plain\n\n\n\n*\n\n\nx-ms-blob-type:BlockBlob\n"));
        assert_eq!(signed.authorization, "SharedKey pierregistry:GyY4GKyg0NIhugqKoN1zg49+KYSG8dlweJA6jaHvsYI=");
    }

    #[test]
    fn the_standard_range_header_has_its_own_line() {
        // The SDK signs ranges as x-ms-range; a plain Range header goes in the twelfth line (Azure's documented
        // format, as Azurite checks it). Not SDK-verified: a structural check only.
        let request = SharedKeyRequest {
            method: "get",
            encoded_path: "/c/b",
            query: &[],
            headers: &[("Range", "bytes=0-9"), ("x-ms-date", DATE), ("x-ms-version", V)],
        };
        let sts = shared_key_string_to_sign("acct", &request);
        assert_eq!(sts, "GET\n\n\n\n\n\n\n\n\n\n\nbytes=0-9\nx-ms-date:Fri, 24 May 2013 00:00:00 GMT\nx-ms-version:2021-08-06\n/acct/c/b");
    }

    fn utc(h: u32, m: u32) -> Timestamp {
        Timestamp::from_utc(2024, 1, 1, h, m, 0).unwrap()
    }

    /// Decode a `name=value&…` query into pairs.
    fn params(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), super::super::percent_decode(v)))
            .collect()
    }

    #[test]
    fn azurite_read_sas_over_https_and_http() {
        let endpoint = BlobEndpoint::parse("http://127.0.0.1:10000/devstoreaccount1").unwrap();
        let blob = "docker/registry/v2/blobs/sha256/ab/data";
        let sas = BlobSas::read("pier", blob, Some(utc(0, 0)), utc(0, 15)).with_protocol(SasProtocol::HttpsAndHttp);
        let token = blob_sas_token(&dev(), &sas).unwrap();
        assert_eq!(
            token.string_to_sign,
            "r\n2024-01-01T00:00:00Z\n2024-01-01T00:15:00Z\n/blob/devstoreaccount1/pier/docker/registry/v2/blobs/sha256/ab/data\n\n\nhttps,http\n2022-11-02\nb\n\n\n\n\n\n\n"
        );
        assert_eq!(token.signature, "+tUfeiBlE1j4KW8fQRDqWFFnf5oyGwHk3k/WGbepJJY=");
        // The SDK's token, decoded: st, se, sp, spr, sv, sr, sig in that order.
        let sdk = "st=2024-01-01T00%3A00%3A00Z&se=2024-01-01T00%3A15%3A00Z&sp=r&spr=https%2Chttp&sv=2022-11-02&sr=b&sig=%2BtUfeiBlE1j4KW8fQRDqWFFnf5oyGwHk3k/WGbepJJY%3D";
        assert_eq!(params(&token.query), params(sdk));
        let url = endpoint.presigned_read_url(&dev(), "pier", blob, Some(utc(0, 0)), utc(0, 15)).unwrap();
        assert_eq!(url, format!("http://127.0.0.1:10000/devstoreaccount1/pier/{blob}?{}", token.query));
    }

    #[test]
    fn global_read_sas_https_only_without_start() {
        let endpoint = BlobEndpoint::for_realm("pierregistry", DEFAULT_REALM).unwrap();
        let blob = "docker/registry/v2/blobs/sha256/ab/data";
        let url = endpoint.presigned_read_url(&prod(), "pier", blob, None, utc(0, 15)).unwrap();
        let (base, query) = url.split_once('?').unwrap();
        assert_eq!(base, format!("https://pierregistry.blob.core.windows.net/pier/{blob}"));
        let sdk = "se=2024-01-01T00%3A15%3A00Z&sp=r&spr=https&sv=2022-11-02&sr=b&sig=ackLaGVo/EQ6B8IA2uIMG9R0NwqwnIt%2BW11uYmX5juQ%3D";
        assert_eq!(params(query), params(sdk));
    }

    #[test]
    fn sas_for_a_name_needing_encoding_at_the_sdk_default_version() {
        let sas =
            BlobSas { version: "2026-10-06", ..BlobSas::read("pier", "a b/c+d$e.txt", Some(utc(0, 0)), utc(0, 15)) };
        let token = blob_sas_token(&prod(), &sas).unwrap();
        assert!(token.string_to_sign.contains("\n/blob/pierregistry/pier/a b/c+d$e.txt\n"));
        assert_eq!(token.signature, "woVyvcPtteEc1d/eN2LrDo0QMebLAzngVhY7x+Q89n8=");
        let endpoint = BlobEndpoint::for_realm("pierregistry", "core.chinacloudapi.cn").unwrap();
        let url = endpoint.presigned_url(&prod(), &sas).unwrap();
        assert!(
            url.starts_with("https://pierregistry.blob.core.chinacloudapi.cn/pier/a%20b/c%2Bd%24e.txt?st="),
            "{url}"
        );
        assert!(url.ends_with("&sig=woVyvcPtteEc1d%2FeN2LrDo0QMebLAzngVhY7x%2BQ89n8%3D"));
    }

    #[test]
    fn old_or_malformed_sas_versions_are_refused() {
        for v in ["2019-12-12", "2020-12-05", "latest", "2022-11-2", ""] {
            let sas = BlobSas { version: v, ..BlobSas::read("c", "b", None, utc(0, 15)) };
            assert!(blob_sas_token(&dev(), &sas).is_err(), "{v}");
        }
    }

    #[test]
    fn endpoints_parse_and_refuse() {
        let e = BlobEndpoint::parse("HTTP://LocalHost:10000/devstoreaccount1/").unwrap();
        assert!(e.is_path_style());
        assert_eq!(e.host(), "localhost:10000");
        assert_eq!(e.encoded_path("c", ""), "/devstoreaccount1/c");
        let e = BlobEndpoint::parse("https://acct.blob.core.windows.net:443").unwrap();
        assert!(!e.is_path_style());
        assert_eq!(e.host(), "acct.blob.core.windows.net");
        for bad in
            ["acct.blob.core.windows.net", "ftp://x", "http://h/a/b", "http://h/UPPER", "http://h?x", "http://:1"]
        {
            assert!(BlobEndpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(BlobEndpoint::for_realm("Bad_Name", DEFAULT_REALM).is_err());
        assert!(BlobEndpoint::for_realm("acct", "").is_err());
        assert_eq!(BlobEndpoint::for_realm("acct", ".core.windows.net").unwrap().host(), "acct.blob.core.windows.net");
    }

    #[test]
    fn keys_are_validated_and_never_printed() {
        assert_eq!(SharedKeyCredential::new("a", "not base64!"), Err(SignError::InvalidAccountKey));
        assert_eq!(SharedKeyCredential::new("a", ""), Err(SignError::InvalidAccountKey));
        assert_eq!(
            SharedKeyCredential::new(AZURITE_ACCOUNT, AZURITE_ACCOUNT_KEY).unwrap(),
            SharedKeyCredential::azurite()
        );
        let shown = format!("{:?}", dev());
        assert!(shown.contains("devstoreaccount1") && !shown.contains("Eby8"));
    }

    #[test]
    fn repeated_headers_and_query_names_are_merged() {
        let request = SharedKeyRequest {
            method: "GET",
            encoded_path: "",
            query: &[("B", "2"), ("a", "x"), ("b", "1")],
            headers: &[("x-ms-meta-k", "v2"), ("X-MS-META-K", " v1 "), ("x-ms-date", DATE)],
        };
        let sts = shared_key_string_to_sign("acct", &request);
        assert!(
            sts.ends_with("x-ms-date:Fri, 24 May 2013 00:00:00 GMT\nx-ms-meta-k:v2,v1\n/acct/\na:x\nb:1,2"),
            "{sts}"
        );
    }
}
