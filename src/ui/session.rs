//! Who is looking at the web UI, and the cookie and CSRF rules that keep a browser session safe.
//!
//! - The session is the `pier_session` cookie: an HS256 JWT from [`Authorizer::ui_login`] (the token machinery of
//!   the token endpoint, marked as a UI session), `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//!   page or link sends it), `Secure` when the request came over HTTPS, `Path=/`, expiring with the token. It is read
//!   on UI paths only: the `/v2/` API never looks at cookies.
//! - Mutating requests (delete, logout) are POSTs carrying a `csrf` form field. For a signed-in user it is
//!   HMAC-SHA256(token secret, "pier-ui-csrf" ‖ session cookie): stateless, different for every session, unknowable
//!   without the cookie. For an anonymous visitor allowed to delete (an open registry) it is the double-submit
//!   pattern: a random `pier_csrf` cookie (same attributes) whose value the form repeats. On top of that, a POST
//!   whose `Origin` or `Sec-Fetch-Site` says it came from another site is refused before anything else.

use crate::api::Request;
use crate::auth::htpasswd::constant_time_eq;
use crate::auth::Authorizer;
use http::HeaderMap;

/// The session cookie.
pub const SESSION_COOKIE: &str = "pier_session";
/// The anonymous double-submit CSRF cookie.
pub const CSRF_COOKIE: &str = "pier_csrf";
/// How long a UI session lasts (seconds): a working session, short enough that a forgotten browser logs itself out.
pub const SESSION_SECS: u64 = 3600;

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `max_age` `Some(0)` removes the cookie, `None` makes it last for the browser session.
pub fn set_cookie(name: &str, value: &str, max_age: Option<u64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// Whether the request came over HTTPS: a proxy's `X-Forwarded-Proto`, the URI's scheme, or the platform's word
/// ([`crate::api::Https`], set by the native TLS listener and by Workers for `https://` URLs).
pub fn is_https(req: &Request) -> bool {
    let forwarded = req.headers().get("x-forwarded-proto").and_then(|v| v.to_str().ok()).map(|v| v.trim().eq_ignore_ascii_case("https"));
    forwarded.unwrap_or(false) || req.uri().scheme_str() == Some("https") || req.extensions().get::<crate::api::Https>().is_some()
}

/// The CSRF token bound to a signed-in session.
pub fn session_csrf(auth: &Authorizer, session: &str) -> String {
    let mut data = b"pier-ui-csrf\0".to_vec();
    data.extend_from_slice(session.as_bytes());
    hex(&auth.sign(&data))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a POST's `csrf` field matches what was expected (constant time; an empty expectation never matches).
pub fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    !expected.is_empty() && given.is_some_and(|g| constant_time_eq(expected.as_bytes(), g.as_bytes()))
}

/// Whether a POST comes from another site, by the headers browsers add: `Sec-Fetch-Site: cross-site` /
/// `same-site` (a sibling subdomain is another site for a registry), or an `Origin` that is not this host.
pub fn cross_site(headers: &HeaderMap, host: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site.trim(), "same-origin" | "none") {
            return true;
        }
    }
    match headers.get(http::header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None => false,
        Some(origin) => {
            let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
            authority != host
        }
    }
}

/// Where to go after logging in: a local path only (`/…`, not `//host` or `/\host`), else `/`.
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.starts_with("/\\") && !n.chars().any(char::is_control) => n,
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookies_are_found_among_others_and_across_headers() {
        let h = headers(&[("cookie", "a=1; pier_session=tok.en.sig"), ("cookie", "pier_csrf=abc")]);
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("tok.en.sig"));
        assert_eq!(cookie(&h, CSRF_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "pier"), None);
        assert_eq!(cookie(&headers(&[("cookie", "pier_session=")]), SESSION_COOKIE), None);
    }

    #[test]
    fn set_cookie_attributes() {
        assert_eq!(set_cookie("s", "v", Some(60), false), "s=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=60");
        assert_eq!(set_cookie("s", "", Some(0), true), "s=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0; Secure");
        assert_eq!(set_cookie("s", "v", None, true), "s=v; Path=/; HttpOnly; SameSite=Strict; Secure");
    }

    #[test]
    fn csrf_comparison() {
        assert!(csrf_matches("abc", Some("abc")));
        assert!(!csrf_matches("abc", Some("abd")));
        assert!(!csrf_matches("abc", None));
        assert!(!csrf_matches("", Some("")));
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let host = "reg.example:5000";
        assert!(!cross_site(&headers(&[]), host));
        assert!(!cross_site(&headers(&[("origin", "http://reg.example:5000"), ("sec-fetch-site", "same-origin")]), host));
        assert!(cross_site(&headers(&[("origin", "https://evil.example")]), host));
        assert!(cross_site(&headers(&[("origin", "null")]), host));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site")]), host));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site")]), host));
    }

    #[test]
    fn next_is_local_only() {
        assert_eq!(safe_next(Some("/ui/r/a?x=1")), "/ui/r/a?x=1");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/a\r\nSet-Cookie: x")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
