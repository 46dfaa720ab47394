//! The web UI's stylesheet and script, compiled into the binary and the wasm (no runtime file reads, no JS build
//! step). Each is served under a path that carries a hash of its content, so browsers may cache it for a year: a new
//! build with a changed file changes the path, and pages link the new one.
//!
//! The script is progressive enhancement only — every page works without it: copy buttons write their
//! `data-copy` text to the clipboard, and `/` focuses the search box.

/// The stylesheet: system fonts, light and dark palettes (`prefers-color-scheme`), one column that fits a phone.
pub const STYLE_CSS: &str = r#":root{--on-accent:#fff;--bg:#fff;--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--card:#f6f8fa;--link:#0550ae;--accent:#0969da;--danger:#b3261e;--ok:#1a7f37;--code:#eef1f4}
@media (prefers-color-scheme:dark){:root{--on-accent:#0d1117;--bg:#0d1117;--fg:#e6edf3;--muted:#9da7b3;--line:#30363d;--card:#161b22;--link:#6cb6ff;--accent:#4493f8;--danger:#ff7b72;--ok:#3fb950;--code:#1f242c}}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--link)}
a:focus-visible,button:focus-visible,input:focus-visible,summary:focus-visible{outline:3px solid var(--accent);outline-offset:2px}
header.top{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header.top .brand{font-weight:700;font-size:1.1rem;text-decoration:none;color:var(--fg)}
header.top form{display:inline;margin:0}
.who{color:var(--muted);font-size:.9rem}
main{max-width:72rem;margin:0 auto;padding:1rem}
nav.crumbs{font-size:.9rem;color:var(--muted);margin-bottom:.5rem;overflow-wrap:anywhere}
h1{font-size:1.4rem;margin:.2rem 0 1rem;overflow-wrap:anywhere}
h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.45rem .5rem;border-bottom:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}
.nowrap{white-space:nowrap}
th{font-size:.8rem;text-transform:uppercase;letter-spacing:.03em;color:var(--muted);overflow-wrap:normal;white-space:nowrap}
td.num,th.num{text-align:right;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85rem}
code{background:var(--code);padding:.1rem .3rem;border-radius:4px;overflow-wrap:anywhere}
pre{background:var(--code);padding:.6rem;border-radius:6px;overflow-x:auto;white-space:pre-wrap;overflow-wrap:anywhere}
.muted{color:var(--muted)}
.badge{display:inline-block;border:1px solid var(--line);border-radius:999px;padding:0 .5rem;font-size:.8rem;margin:.1rem .2rem .1rem 0;white-space:nowrap}
.search{display:flex;gap:.5rem;margin:0 0 1rem}
.search input{flex:1;min-width:0}
input[type=search],input[type=text],input[type=password]{font:inherit;color:var(--fg);background:var(--bg);border:1px solid var(--muted);border-radius:6px;padding:.45rem .6rem}
button,.button{font:inherit;cursor:pointer;border:1px solid var(--muted);background:var(--card);color:var(--fg);border-radius:6px;padding:.35rem .7rem;text-decoration:none;display:inline-block}
button.primary{background:var(--accent);border-color:var(--accent);color:var(--on-accent)}
button.danger,.button.danger{color:var(--danger);border-color:var(--danger)}
button.danger.solid{background:var(--danger);color:var(--on-accent)}
button.copy{padding:.1rem .5rem;font-size:.8rem}
.pull{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center;margin:.3rem 0}
.pull code{flex:1 1 20rem}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dl.kv dt{color:var(--muted)}
dl.kv dd{margin:0;overflow-wrap:anywhere}
.notice{border:1px solid var(--line);border-left:4px solid var(--accent);padding:.6rem .8rem;border-radius:6px;margin:0 0 1rem;background:var(--card)}
.notice.error{border-left-color:var(--danger)}
.notice.ok{border-left-color:var(--ok)}
form.login{max-width:22rem;display:grid;gap:.6rem}
form.login label{display:grid;gap:.2rem}
.pager{display:flex;justify-content:space-between;margin-top:1rem}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
@media (max-width:40rem){main{padding:.6rem}table.stack thead{display:none}table.stack tr{display:block;border-bottom:1px solid var(--line);padding:.4rem 0}table.stack td{display:block;border:0;padding:.1rem 0}table.stack td.num{text-align:left}table.stack td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:.85rem}dl.kv{grid-template-columns:1fr}dl.kv dd{margin-bottom:.4rem}}
"#;

/// The script: copy buttons and the search shortcut.
pub const APP_JS: &str = r#""use strict";
document.addEventListener("click", function (e) {
  var b = e.target.closest("button.copy");
  if (!b) return;
  var text = b.getAttribute("data-copy"), label = b.textContent;
  var done = function (ok) { b.textContent = ok ? "Copied" : "Copy failed"; setTimeout(function () { b.textContent = label; }, 1500); };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(function () { done(true); }, function () { done(false); });
  } else {
    var t = document.createElement("textarea"); t.value = text; document.body.appendChild(t); t.select();
    try { done(document.execCommand("copy")); } catch (_) { done(false); }
    t.remove();
  }
});
document.addEventListener("keydown", function (e) {
  var q = document.getElementById("q");
  if (q && e.key === "/" && document.activeElement !== q && !/^(INPUT|TEXTAREA)$/.test(document.activeElement.tagName)) {
    e.preventDefault(); q.focus(); q.select();
  }
});
"#;

/// FNV-1a, 64 bits: a content fingerprint for cache busting (not a security property).
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

const STYLE_HASH: u64 = fnv1a(STYLE_CSS.as_bytes());
const APP_HASH: u64 = fnv1a(APP_JS.as_bytes());

/// Where assets are served.
pub const ASSETS_PREFIX: &str = "/ui/assets/";

/// The stylesheet's path (with its fingerprint).
pub fn style_path() -> String {
    format!("{ASSETS_PREFIX}{STYLE_HASH:016x}/style.css")
}

/// The script's path (with its fingerprint).
pub fn app_path() -> String {
    format!("{ASSETS_PREFIX}{APP_HASH:016x}/app.js")
}

/// The asset at `path` (under [`ASSETS_PREFIX`]): its content type and bytes. Any fingerprint is accepted — a page
/// cached from the previous build still gets today's file — but only the current one is cached for long.
pub fn lookup(path: &str) -> Option<(&'static str, &'static str, bool)> {
    let rest = path.strip_prefix(ASSETS_PREFIX)?;
    let (fingerprint, file) = rest.split_once('/')?;
    match file {
        "style.css" => Some(("text/css; charset=utf-8", STYLE_CSS, fingerprint == format!("{STYLE_HASH:016x}"))),
        "app.js" => Some(("text/javascript; charset=utf-8", APP_JS, fingerprint == format!("{APP_HASH:016x}"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_carry_the_content_hash_and_resolve() {
        let css = style_path();
        let (kind, body, current) = lookup(&css).unwrap();
        assert!(kind.starts_with("text/css") && body == STYLE_CSS && current);
        let (kind, _, current) = lookup("/ui/assets/0000000000000000/app.js").unwrap();
        assert!(kind.starts_with("text/javascript") && !current);
        assert!(lookup("/ui/assets/x/other.js").is_none());
        assert!(lookup("/ui/assets/nothing").is_none());
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
    }

    #[test]
    fn dark_mode_follows_the_system() {
        assert!(STYLE_CSS.contains("prefers-color-scheme:dark"));
    }
}
