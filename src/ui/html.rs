//! HTML building blocks for the web UI: escaping, the few formats the pages share (sizes, times, short digests,
//! URLs of pages) and the page frame. Pages are plain `format!` strings; the rule that keeps them safe is that every
//! value that did not come from this file's own literals goes through [`esc`] (text and quoted attribute values
//! alike: it escapes `& < > " '`) or, inside a URL, through [`url_query`]. Repository names, tags and digests are
//! validated before they reach a page, but are escaped all the same.

use super::assets;
use std::fmt::{self, Display, Write as _};

/// Text escaped for HTML content and double- or single-quoted attribute values.
pub struct Esc<'a>(&'a str);

/// Escape `s` for HTML (see [`Esc`]).
pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// `s` percent-encoded for a query string value (then still to be escaped with [`esc`] inside an attribute).
pub fn url_query(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The page of repository `name`.
pub fn repo_href(name: &str) -> String {
    format!("/ui/r/{name}")
}

/// The page of the manifest `reference` (a tag or a digest) in repository `name`. Repository name components never
/// consist of `-` alone, so `/-/` cannot be part of a name.
pub fn manifest_href(name: &str, reference: &str) -> String {
    format!("/ui/r/{name}/-/{reference}")
}

/// A byte count for people: `512 B`, `1.5 kB`, `23.4 MB` (decimal units, as `docker images` shows them).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A digest shortened for tables: the algorithm's first 12 hex characters (`sha256:0123456789ab`).
pub fn short_digest(digest: &str) -> &str {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => &digest[..alg.len() + 1 + 12],
        _ => digest,
    }
}

/// How long ago `then` was, seen at `now` (Unix seconds): `just now`, `5 min ago`, `3 h ago`, `12 days ago`, or the date.
pub fn ago(then: u64, now: u64) -> String {
    let d = now.saturating_sub(then);
    match d {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        86_400..=2_591_999 => format!("{} days ago", d / 86_400),
        _ => date(then),
    }
}

/// `2024-01-02 03:04 UTC`.
pub fn date(unix: u64) -> String {
    let t = crate::auth::token::rfc3339(unix);
    format!("{} {} UTC", &t[..10], &t[11..16])
}

/// A `<time>` element: relative text, the exact time in its title and `datetime`; `—` when unknown.
pub fn time_tag(unix: Option<u64>, now: u64) -> String {
    match unix {
        Some(t) => format!(
            "<time datetime=\"{}\" title=\"{}\">{}</time>",
            crate::auth::token::rfc3339(t),
            date(t),
            ago(t, now)
        ),
        None => "<span class=\"muted\" title=\"pushed before Pier kept push times\">—</span>".into(),
    }
}

/// A copy button for `text` showing `label`, described to screen readers as "Copy `what`".
pub fn copy_button(text: &str, what: &str, label: &str) -> String {
    format!(
        "<button type=\"button\" class=\"copy\" data-copy=\"{}\" aria-label=\"Copy {}\">{}</button>",
        esc(text),
        esc(what),
        esc(label)
    )
}

/// What the frame around every page shows about who is looking.
pub struct Frame<'a> {
    /// The page title (escaped here).
    pub title: &'a str,
    /// Breadcrumbs before the title: (label, href).
    pub crumbs: &'a [(String, String)],
    /// The signed-in user.
    pub user: Option<&'a str>,
    /// Whether the registry has access control (a login link for anonymous visitors).
    pub login: bool,
    /// The CSRF token for the logout form (signed-in users).
    pub csrf: Option<&'a str>,
    /// The path to come back to after logging in.
    pub here: &'a str,
}

/// The whole page: `body` (already HTML) inside the frame.
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{} · Pier</title><link rel=\"icon\" href=\"data:,\"><link rel=\"stylesheet\" href=\"{}\">\
         <script src=\"{}\" defer></script></head><body>\
         <a class=\"sr-only\" href=\"#main\">Skip to content</a>\
         <header class=\"top\"><a class=\"brand\" href=\"/\">⚓ Pier</a><div>",
        esc(frame.title),
        assets::style_path(),
        assets::app_path()
    );
    match (frame.user, frame.csrf) {
        (Some(user), Some(csrf)) => {
            let _ = write!(
                out,
                "<span class=\"who\">Signed in as <strong>{}</strong></span> \
                 <form method=\"post\" action=\"/ui/logout\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Log out</button></form>",
                esc(user),
                esc(csrf)
            );
        }
        _ if frame.login => {
            let _ = write!(out, "<a class=\"button\" href=\"/ui/login?next={}\">Log in</a>", esc(&url_query(frame.here)));
        }
        _ => {}
    }
    out.push_str("</div></header><main id=\"main\">");
    if !frame.crumbs.is_empty() {
        out.push_str("<nav class=\"crumbs\" aria-label=\"Breadcrumb\">");
        for (i, (label, href)) in frame.crumbs.iter().enumerate() {
            if i > 0 {
                out.push_str(" / ");
            }
            let _ = write!(out, "<a href=\"{}\">{}</a>", esc(href), esc(label));
        }
        out.push_str("</nav>");
    }
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(esc("<a href=\"x\">Tom & Jerry's</a>").to_string(), "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;");
        assert_eq!(esc("plain").to_string(), "plain");
        assert_eq!(esc("").to_string(), "");
        assert_eq!(esc("ünï<code>").to_string(), "ünï&lt;code&gt;");
        assert_eq!(url_query("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn sizes_digests_and_times() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1500), "1.5 kB");
        assert_eq!(human_size(999_999), "1.0 MB");
        assert_eq!(human_size(23_400_000), "23.4 MB");
        assert_eq!(human_size(u64::MAX), "18446.7 PB");
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(short_digest(d), "sha256:0123456789ab");
        assert_eq!(short_digest("odd"), "odd");
        assert_eq!(ago(100, 130), "just now");
        assert_eq!(ago(0, 300), "5 min ago");
        assert_eq!(ago(0, 7200), "2 h ago");
        assert_eq!(ago(0, 86_400 * 3), "3 days ago");
        assert_eq!(ago(0, 86_400 * 400), "1970-01-01 00:00 UTC");
        assert_eq!(date(1_704_164_645), "2024-01-02 03:04 UTC");
        assert!(time_tag(Some(1_704_164_645), 1_704_164_645).contains("datetime=\"2024-01-02T03:04:05Z\""));
        assert!(time_tag(None, 0).contains('—'));
    }

    #[test]
    fn frame_escapes_what_it_shows_and_offers_login_or_logout() {
        let crumbs = [("a\"<b>".to_string(), "/ui/r/a".to_string())];
        let frame = Frame { title: "<script>", crumbs: &crumbs, user: None, login: true, csrf: None, here: "/ui/r/a?x=1&y=2" };
        let html = page(&frame, "<p>body</p>");
        assert!(html.contains("<title>&lt;script&gt; · Pier</title>"));
        assert!(html.contains("a&quot;&lt;b&gt;"));
        assert!(html.contains("/ui/login?next=%2Fui%2Fr%2Fa%3Fx%3D1%26y%3D2"));
        assert!(!html.contains("Log out"));
        let frame = Frame { user: Some("al\"ice"), csrf: Some("tok"), ..frame };
        let html = page(&frame, "");
        assert!(html.contains("Signed in as <strong>al&quot;ice</strong>"));
        assert!(html.contains("name=\"csrf\" value=\"tok\""));
        let frame = Frame { user: None, csrf: None, login: false, ..frame };
        assert!(!page(&frame, "").contains("Log in"));
        assert!(copy_button("docker pull \"x\"", "pull", "Copy").contains("data-copy=\"docker pull &quot;x&quot;\""));
    }

    #[test]
    fn page_urls() {
        assert_eq!(repo_href("team/app"), "/ui/r/team/app");
        assert_eq!(manifest_href("team/app", "v1"), "/ui/r/team/app/-/v1");
    }
}
