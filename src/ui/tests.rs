//! Core-level tests of the web UI over memory stores: the pages show what was pushed, search filters, sessions and
//! CSRF behave, deletes go through the same handler as the API's, and nothing about `/v2/` changes.

use crate::api::{Body, Request, Response};
use crate::auth::htpasswd::hash_password;
use crate::config::Config;
use crate::registry::{Environment, Registry};
use crate::spec::Algorithm;
use crate::storage::memory::{MemoryMetaStore, MemoryObjectStore};
use bytes::Bytes;
use futures::executor::block_on;
use http::{Method, StatusCode};
use std::cell::Cell;
use std::rc::Rc;

struct Env {
    n: Cell<u64>,
    now: Cell<u64>,
}

impl Environment for Env {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        self.n.set(self.n.get() + 1);
        let mut b = [7u8; 16];
        b[..8].copy_from_slice(&self.n.get().to_le_bytes());
        b
    }
    fn log_error(&self, m: &str) {
        panic!("unexpected error log: {m}");
    }
}

const NOW: u64 = 1_700_000_000;
const RULES: &str = "team/* alice pull,push,delete; team/* bob pull; public/* anonymous pull; public/* alice pull,push,delete";

fn registry(auth: bool, tweak: impl FnOnce(&mut Config)) -> (Registry, Rc<Env>) {
    let mut vars: Vec<(&str, String)> = Vec::new();
    if auth {
        let alice = hash_password(b"alice-pw", 4, [1; 16]).unwrap();
        let bob = hash_password(b"bob-pw", 4, [2; 16]).unwrap();
        vars.push(("PIER_AUTH_HTPASSWD", format!("alice:{alice}\nbob:{bob}\n")));
        vars.push(("PIER_AUTH_TOKEN_SECRET", "ui-test-secret-0123456789abcdef0123".into()));
        vars.push(("PIER_AUTH_RULES", RULES.into()));
        vars.push(("PIER_AUTH_MAX_FAILURES", "3".into()));
    }
    let mut config = Config::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
    tweak(&mut config);
    let env = Rc::new(Env { n: Cell::new(0), now: Cell::new(NOW) });
    (Registry::new(Rc::new(MemoryObjectStore::new()), Rc::new(MemoryMetaStore::new()), config, env.clone()), env)
}

fn call(reg: &Registry, method: Method, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut r = Request::new(Body::Full(Bytes::copy_from_slice(body)));
    *r.method_mut() = method;
    *r.uri_mut() = uri.parse().unwrap();
    r.headers_mut().insert("host", "reg.test:5000".parse().unwrap());
    for (k, v) in headers {
        r.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    block_on(reg.handle(r))
}

fn text(resp: Response) -> String {
    let mut b = resp.into_body();
    let mut out = Vec::new();
    while let Some(c) = block_on(b.next_chunk()) {
        out.extend_from_slice(&c.unwrap());
    }
    String::from_utf8(out).unwrap()
}

fn get(reg: &Registry, uri: &str, cookie: Option<&str>) -> (StatusCode, String) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let r = call(reg, Method::GET, uri, &headers, b"");
    (r.status(), text(r))
}

fn post_form(reg: &Registry, uri: &str, cookie: Option<&str>, form: &str) -> Response {
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(c) = cookie {
        headers.push(("cookie", c));
    }
    call(reg, Method::POST, uri, &headers, form.as_bytes())
}

fn digest(bytes: &[u8]) -> String {
    Algorithm::Sha256.digest(bytes).to_string()
}

/// Push a blob monolithically as alice (Basic) or anonymously.
fn push_blob(reg: &Registry, name: &str, bytes: &[u8], auth: &[(&str, &str)]) -> String {
    let d = digest(bytes);
    let r = call(reg, Method::POST, &format!("/v2/{name}/blobs/uploads/?digest={d}"), auth, bytes);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r));
    d
}

fn push_manifest(reg: &Registry, name: &str, reference: &str, media_type: &str, bytes: &[u8], auth: &[(&str, &str)]) -> String {
    let mut headers = vec![("content-type", media_type)];
    headers.extend_from_slice(auth);
    let r = call(reg, Method::PUT, &format!("/v2/{name}/manifests/{reference}"), &headers, bytes);
    assert_eq!(r.status(), StatusCode::CREATED, "{}", text(r));
    digest(bytes)
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image in `name` tagged `tag`: a config (with cmd, env, ports, labels, history) and one layer. Returns its
/// manifest's (digest, bytes).
fn push_image(reg: &Registry, name: &str, tag: &str, arch: &str, auth: &[(&str, &str)]) -> (String, Vec<u8>) {
    let config = format!(
        r#"{{"architecture":"{arch}","os":"linux","created":"2024-01-01T00:00:00Z","config":{{"Cmd":["/bin/app","--serve"],"Env":["MODE=<prod>"],"ExposedPorts":{{"8080/tcp":{{}}}},"Labels":{{"org.example.team":"ui"}}}},"history":[{{"created_by":"COPY app /bin/app"}}],"rootfs":{{"type":"layers","diff_ids":[]}}}}"#
    );
    let layer = format!("layer of {name} {arch}").into_bytes();
    let c = push_blob(reg, name, config.as_bytes(), auth);
    let l = push_blob(reg, name, &layer, auth);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{c}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{l}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let d = push_manifest(reg, name, tag, OCI_MANIFEST, manifest.as_bytes(), auth);
    (d, manifest.into_bytes())
}

fn set_cookie(r: &Response) -> String {
    r.headers().get("set-cookie").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

/// The value of the first `name="csrf"` hidden field on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + "name=\"csrf\" value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

#[test]
fn open_registry_pages_show_what_was_pushed() {
    let (reg, env) = registry(false, |_| {});
    let (amd64, amd64_bytes) = push_image(&reg, "team/app", "amd64-only", "amd64", &[]);
    let (arm64, arm64_bytes) = push_image(&reg, "team/app", "arm64-only", "arm64", &[]);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{amd64}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}},{{"mediaType":"{OCI_MANIFEST}","digest":"{arm64}","size":{},"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
        amd64_bytes.len(),
        arm64_bytes.len()
    );
    let index_digest = push_manifest(&reg, "team/app", "multi", OCI_INDEX, index.as_bytes(), &[]);
    // A referrer (a signature) of the amd64 image.
    let empty = push_blob(&reg, "team/app", b"{}", &[]);
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"application/vnd.example.signature","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{amd64}","size":{}}}}}"#,
        amd64_bytes.len()
    );
    let sig_digest = push_manifest(&reg, "team/app", &digest(sig.as_bytes()), OCI_MANIFEST, sig.as_bytes(), &[]);
    env.now.set(NOW + 600);
    push_image(&reg, "other/tool", "v1", "amd64", &[]);

    let (status, home) = get(&reg, "/", None);
    assert_eq!(status, StatusCode::OK);
    assert!(home.contains("href=\"/ui/r/team/app\"") && home.contains("href=\"/ui/r/other/tool\""), "{home}");
    assert!(home.contains("10 min ago"), "team/app was pushed 10 minutes before now");
    assert!(!home.contains("Log in"), "no login without access control");
    let (_, found) = get(&reg, "/?q=TOOL", None);
    assert!(found.contains("/ui/r/other/tool") && !found.contains("/ui/r/team/app"));
    let (_, none) = get(&reg, "/?q=nothing-like-it", None);
    assert!(none.contains("No repository name contains"));

    let (status, repo) = get(&reg, "/ui/r/team/app", None);
    assert_eq!(status, StatusCode::OK);
    assert!(repo.contains("data-copy=\"docker pull reg.test:5000/team/app:multi\""));
    assert!(repo.contains("linux/arm64/v8") && repo.contains("linux/amd64"));
    assert!(repo.contains(&format!("data-copy=\"{index_digest}\"")));
    assert!(repo.contains("/ui/delete?repo=team%2Fapp&amp;ref=multi"), "anonymous writes are allowed: delete offered");

    let (_, image) = get(&reg, "/ui/r/team/app/-/amd64-only", None);
    assert!(image.contains("[&quot;/bin/app&quot;,&quot;--serve&quot;]"), "{image}");
    assert!(image.contains("MODE=&lt;prod&gt;") && image.contains("8080/tcp") && image.contains("org.example.team=ui"));
    assert!(image.contains("COPY app /bin/app") && image.contains("linux/amd64"));
    assert!(image.contains("application/vnd.example.signature"));
    assert!(image.contains(&format!("href=\"/ui/r/team/app/-/{sig_digest}\"")));
    assert!(image.contains(&format!("docker pull reg.test:5000/team/app@{amd64}")));

    let (_, idx) = get(&reg, &format!("/ui/r/team/app/-/{index_digest}"), None);
    assert!(idx.contains("Platforms") && idx.contains(&format!("href=\"/ui/r/team/app/-/{arm64}\"")));
    let (_, referrer) = get(&reg, &format!("/ui/r/team/app/-/{sig_digest}"), None);
    assert!(referrer.contains("Refers to") && referrer.contains("artifact (application/vnd.example.signature)"));

    assert_eq!(get(&reg, "/ui/r/team/nothing", None).0, StatusCode::NOT_FOUND);
    assert_eq!(get(&reg, "/ui/r/team/app/-/nope", None).0, StatusCode::NOT_FOUND);
    assert_eq!(get(&reg, "/ui/r/BAD/-/x", None).0, StatusCode::NOT_FOUND);
    assert_eq!(get(&reg, "/ui/nothing", None).0, StatusCode::NOT_FOUND);
}

#[test]
fn open_registry_delete_needs_the_double_submit_token() {
    let (reg, _) = registry(false, |_| {});
    push_image(&reg, "team/app", "v1", "amd64", &[]);
    push_image(&reg, "team/app", "v2", "amd64", &[]);
    let r = call(&reg, Method::GET, "/ui/delete?repo=team/app&ref=v1", &[], b"");
    assert_eq!(r.status(), StatusCode::OK);
    let cookie = cookie_pair(&set_cookie(&r));
    assert!(cookie.starts_with("pier_csrf="));
    assert!(set_cookie(&r).contains("HttpOnly") && set_cookie(&r).contains("SameSite=Strict"));
    let csrf = csrf_of(&text(r));
    // Forged: no token, a wrong one, a foreign origin.
    assert_eq!(post_form(&reg, "/ui/delete", Some(&cookie), "repo=team%2Fapp&ref=v1").status(), StatusCode::FORBIDDEN);
    assert_eq!(post_form(&reg, "/ui/delete", None, &format!("repo=team%2Fapp&ref=v1&csrf={csrf}")).status(), StatusCode::FORBIDDEN);
    let forged = call(
        &reg,
        Method::POST,
        "/ui/delete",
        &[("cookie", &cookie), ("origin", "https://evil.example")],
        format!("repo=team%2Fapp&ref=v1&csrf={csrf}").as_bytes(),
    );
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v1", &[], b"").status(), StatusCode::OK);
    // The real form.
    let r = post_form(&reg, "/ui/delete", Some(&cookie), &format!("repo=team%2Fapp&ref=v1&csrf={csrf}"));
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/r/team/app?deleted=v1");
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v1", &[], b"").status(), StatusCode::NOT_FOUND);
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v2", &[], b"").status(), StatusCode::OK);
}

#[test]
fn deletes_are_not_offered_when_the_registry_refuses_them() {
    for tweak in [
        (|c: &mut Config| c.anonymous_write = Some(false)) as fn(&mut Config),
        |c: &mut Config| c.delete_enabled = false,
    ] {
        let (reg, _) = registry(false, |_| {});
        push_image(&reg, "team/app", "v1", "amd64", &[]);
        // The same stores under a stricter configuration.
        let strict = Registry::new(reg.objects.clone(), reg.meta.clone(), { let mut c = reg.config.clone(); tweak(&mut c); c }, reg.env.clone());
        let (_, page) = get(&strict, "/ui/r/team/app", None);
        assert!(!page.contains("/ui/delete"));
        assert_eq!(get(&strict, "/ui/delete?repo=team/app&ref=v1", None).0, StatusCode::FORBIDDEN);
    }
}

#[test]
fn access_control_sessions_rules_and_csrf() {
    let (reg, _) = registry(true, |_| {});
    let alice_basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw"));
    let as_alice = [("authorization", alice_basic.as_str())];
    push_image(&reg, "team/app", "v1", "amd64", &as_alice);
    push_image(&reg, "team/app", "v2", "amd64", &as_alice);
    push_image(&reg, "public/base", "latest", "amd64", &as_alice);

    // Anonymous: what anonymous may pull, and a login link.
    let (_, home) = get(&reg, "/", None);
    assert!(home.contains("/ui/r/public/base") && !home.contains("/ui/r/team/app") && home.contains("/ui/login?next=%2F"));
    assert_eq!(get(&reg, "/ui/r/team/app", None).0, StatusCode::NOT_FOUND);
    assert!(!get(&reg, "/ui/r/public/base", None).1.contains("/ui/delete"));

    // Wrong password, then alice.
    let r = post_form(&reg, "/ui/login", None, "user=alice&password=nope&next=%2Fui%2Fr%2Fteam%2Fapp");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(text(r).contains("Incorrect user name or password"));
    let r = post_form(&reg, "/ui/login", None, "user=alice&password=alice-pw&next=%2Fui%2Fr%2Fteam%2Fapp");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/ui/r/team/app");
    let set = set_cookie(&r);
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age=3600") && !set.contains("Secure"));
    let alice = cookie_pair(&set);
    let (status, page) = get(&reg, "/ui/r/team/app", Some(&alice));
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("Signed in as <strong>alice</strong>") && page.contains("/ui/delete?repo=team%2Fapp&amp;ref=v1"));
    let (_, home) = get(&reg, "/", Some(&alice));
    assert!(home.contains("/ui/r/team/app") && home.contains("/ui/r/public/base"));

    // The cookie means nothing to the API, and the session token grants nothing there either.
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/tags/list", &[("cookie", &alice)], b"").status(), StatusCode::UNAUTHORIZED);
    let token = alice.trim_start_matches("pier_session=");
    let bearer = format!("Bearer {token}");
    assert_ne!(call(&reg, Method::GET, "/v2/team/app/tags/list", &[("authorization", &bearer)], b"").status(), StatusCode::OK);

    // bob may pull, not delete: no button, and the confirmation and the POST are refused.
    let r = post_form(&reg, "/ui/login", None, "user=bob&password=bob-pw");
    assert_eq!(r.headers()["location"], "/");
    let bob = cookie_pair(&set_cookie(&r));
    let (_, page) = get(&reg, "/ui/r/team/app", Some(&bob));
    assert!(page.contains("Signed in as <strong>bob</strong>") && !page.contains("/ui/delete"));
    assert_eq!(get(&reg, "/ui/delete?repo=team/app&ref=v1", Some(&bob)).0, StatusCode::FORBIDDEN);
    let bob_csrf = csrf_of(&page);
    assert_eq!(
        post_form(&reg, "/ui/delete", Some(&bob), &format!("repo=team%2Fapp&ref=v1&csrf={bob_csrf}")).status(),
        StatusCode::FORBIDDEN
    );

    // alice's delete: refused without her token or with bob's, done with hers.
    let (_, confirm) = get(&reg, "/ui/delete?repo=team/app&ref=v1", Some(&alice));
    let alice_csrf = csrf_of(&confirm);
    assert_ne!(alice_csrf, bob_csrf);
    assert_eq!(post_form(&reg, "/ui/delete", Some(&alice), "repo=team%2Fapp&ref=v1").status(), StatusCode::FORBIDDEN);
    assert_eq!(
        post_form(&reg, "/ui/delete", Some(&alice), &format!("repo=team%2Fapp&ref=v1&csrf={bob_csrf}")).status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v1", &as_alice, b"").status(), StatusCode::OK);
    let r = post_form(&reg, "/ui/delete", Some(&alice), &format!("repo=team%2Fapp&ref=v1&csrf={alice_csrf}"));
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(call(&reg, Method::GET, "/v2/team/app/manifests/v1", &as_alice, b"").status(), StatusCode::NOT_FOUND);

    // A token from the token endpoint is not a UI session.
    let r = call(&reg, Method::GET, "/token?scope=repository:team/app:pull", &as_alice, b"");
    let v: serde_json::Value = serde_json::from_str(&text(r)).unwrap();
    let api_token = format!("pier_session={}", v["token"].as_str().unwrap());
    assert_eq!(get(&reg, "/ui/r/team/app", Some(&api_token)).0, StatusCode::NOT_FOUND);

    // Logout needs the CSRF token, then clears the cookie.
    assert_eq!(post_form(&reg, "/ui/logout", Some(&alice), "").status(), StatusCode::FORBIDDEN);
    let r = post_form(&reg, "/ui/logout", Some(&alice), &format!("csrf={alice_csrf}"));
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r).starts_with("pier_session=;") && set_cookie(&r).contains("Max-Age=0"));
}

#[test]
fn failed_ui_logins_are_throttled_like_every_password_check() {
    let (reg, _) = registry(true, |_| {});
    for _ in 0..3 {
        assert_eq!(post_form(&reg, "/ui/login", None, "user=alice&password=wrong").status(), StatusCode::UNAUTHORIZED);
    }
    let r = post_form(&reg, "/ui/login", None, "user=alice&password=alice-pw");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    // The API shares the count.
    let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:alice-pw"));
    assert_eq!(call(&reg, Method::GET, "/v2/", &[("authorization", &basic)], b"").status(), StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn cookies_are_secure_over_https() {
    let (reg, _) = registry(true, |_| {});
    let r = call(
        &reg,
        Method::POST,
        "/ui/login",
        &[("x-forwarded-proto", "https"), ("content-type", "application/x-www-form-urlencoded")],
        b"user=alice&password=alice-pw",
    );
    assert!(set_cookie(&r).ends_with("; Secure"));
}

#[test]
fn push_times_are_recorded_without_rewriting_the_catalog_on_every_push() {
    let (reg, env) = registry(false, |_| {});
    push_image(&reg, "team/app", "v1", "amd64", &[]);
    let entry = || block_on(reg.meta.get("_catalog/team/app")).unwrap().unwrap();
    assert_eq!(&entry()[..], format!("{{\"pushed\":{NOW}}}").as_bytes());
    env.now.set(NOW + 30);
    push_image(&reg, "team/app", "v2", "amd64", &[]);
    assert_eq!(&entry()[..], format!("{{\"pushed\":{NOW}}}").as_bytes(), "within the resolution: not rewritten");
    env.now.set(NOW + 90);
    push_image(&reg, "team/app", "v3", "amd64", &[]);
    assert_eq!(&entry()[..], format!("{{\"pushed\":{}}}", NOW + 90).as_bytes());
    // Each tag's record knows its own push time; old empty catalog entries still read.
    let (_, page) = get(&reg, "/ui/r/team/app", None);
    assert!(page.contains("datetime=\"2023-11-14T22:13:20Z\"") && page.contains("datetime=\"2023-11-14T22:13:50Z\""), "{page}");
    block_on(reg.meta.put("_catalog/team/app", Bytes::new())).unwrap();
    assert_eq!(get(&reg, "/", None).0, StatusCode::OK);
}

#[test]
fn assets_are_cached_pages_are_not_and_the_ui_can_be_turned_off() {
    let (reg, _) = registry(false, |_| {});
    let r = call(&reg, Method::GET, &super::assets::style_path(), &[], b"");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
    let r = call(&reg, Method::GET, "/", &[], b"");
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert!(r.headers()["content-security-policy"].to_str().unwrap().contains("script-src 'self'"));
    assert_eq!(call(&reg, Method::DELETE, "/", &[], b"").status(), StatusCode::METHOD_NOT_ALLOWED);
    let (off, _) = registry(false, |c| c.ui = false);
    let r = call(&off, Method::GET, "/", &[], b"");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
}
