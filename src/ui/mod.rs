//! The web UI: HTML pages rendered by the core, served beside `/v2/` by every platform (the registry dispatches `/`
//! and `/ui/…` here before the API router, as it does `/health`; `PIER_UI=false` turns it off). It owns the pages'
//! routes, who the viewer is and what they may do, and the forms that change things; [`data`] reads the stores
//! (with the cost of each page), [`views`] renders, [`html`] escapes and frames, [`session`] holds the cookie and
//! CSRF rules, [`assets`] the stylesheet and script.
//!
//! | path | |
//! |---|---|
//! | `GET /?q=&after=` | repositories the viewer may pull, searched by substring, paginated |
//! | `GET /ui/r/<name>?after=` | a repository's tags |
//! | `GET /ui/r/<name>/-/<tag or digest>` | a manifest: layers, config, platforms, referrers |
//! | `GET /ui/delete?repo=&ref=`, `POST /ui/delete` | confirm, then delete a tag or a manifest |
//! | `GET/POST /ui/login`, `POST /ui/logout` | the session (with access control only) |
//! | `GET /ui/assets/<hash>/…` | stylesheet and script, cached for a year |
//!
//! What a viewer sees and may do: with access control, the rules for the session's user (or for anonymous without a
//! session) — repositories they may pull, a delete button where they may delete. Without it, everything is visible
//! and deletes are offered when the registry allows anonymous writes (`PIER_ANONYMOUS_WRITE` not `false`). Deletes
//! also need `REGISTRY_STORAGE_DELETE_ENABLED` and no read-only mode, exactly as the API's DELETE does — the UI calls
//! the same handler.

pub mod assets;
pub mod data;
pub mod html;
pub mod session;
pub mod views;
#[cfg(test)]
mod tests;

use crate::api::{Body, ClientAddr, Reply, Request};
use crate::auth::authorizer::RequestInfo;
use crate::auth::{Access, Actions};
use crate::error::{Error, ErrorCode, Result};
use crate::registry::Registry;
use crate::spec::{Reference, RepositoryName};
use html::{manifest_href, repo_href, Frame};
use http::{Method, StatusCode};
use session::{cookie, set_cookie, CSRF_COOKIE, SESSION_COOKIE, SESSION_SECS};

/// Largest form body the UI reads.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// Content-Security-Policy of every page: only this origin's stylesheet and script, no inline code, no framing,
/// forms only to this origin.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; connect-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Whether `path` belongs to the web UI.
pub fn is_ui_path(path: &str) -> bool {
    path == "/" || path == "/ui" || path.starts_with("/ui/")
}

/// Who is looking, and what they may do.
struct Viewer<'a> {
    access: Access<'a>,
    user: Option<String>,
    /// The CSRF token their forms must carry, when one can be made (`None`: an anonymous visitor without a
    /// `pier_csrf` cookie yet).
    csrf: Option<String>,
}

/// An HTML page reply with the headers every page carries: never cached (pages depend on the session), no sniffing,
/// no framing, the CSP.
fn html_reply(status: StatusCode, body: String) -> Reply {
    Reply::bytes(status, "text/html; charset=utf-8", bytes::Bytes::from(body))
        .header("cache-control", "no-store")
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "same-origin")
}

/// A 303 to `location` (after a form: the browser GETs it, and a reload does not repeat the POST).
fn see_other(location: &str) -> Reply {
    Reply::empty(StatusCode::SEE_OTHER).header("location", location).header("cache-control", "no-store")
}

/// The form fields of a POST body.
async fn form(body: Body) -> Result<Vec<(String, String)>> {
    let raw = body.collect_limited(MAX_FORM_BYTES).await?;
    Ok(form_urlencoded::parse(&raw).into_owned().collect())
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The page's own path and query, for "log in and come back".
fn here(req: &Request) -> &str {
    req.uri().path_and_query().map_or("/", |p| p.as_str())
}

impl Registry {
    /// Answer a web UI request (see the module documentation). Errors become HTML pages, not OCI JSON.
    pub(crate) async fn ui(&self, req: Request) -> Reply {
        let path = req.uri().path().to_string();
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Body::Empty);
        match self.ui_route(&req, &path, body).await {
            Ok(reply) => reply,
            Err(e) => {
                if e.status().is_server_error() {
                    self.env.log_error(&format!("web UI {path}: {e}"));
                }
                let title = match e.status() {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
                    s if s.is_server_error() => "Something went wrong",
                    _ => "Cannot do that",
                };
                let viewer = self.viewer(&req);
                let frame = self.frame(&req, &viewer, title, &[]);
                html_reply(e.status(), html::page(&frame, &views::message(title, &e.message)))
            }
        }
    }

    async fn ui_route(&self, req: &Request, path: &str, body: Body) -> Result<Reply> {
        let method = req.method().clone();
        if let Some(asset) = path.strip_prefix(assets::ASSETS_PREFIX).map(|_| assets::lookup(path)) {
            let Some((content_type, text, current)) = asset else { return Err(not_found()) };
            let cache = if current { "public, max-age=31536000, immutable" } else { "no-cache" };
            return Ok(Reply::bytes(StatusCode::OK, content_type, bytes::Bytes::from_static(text.as_bytes()))
                .header("cache-control", cache)
                .header("x-content-type-options", "nosniff"));
        }
        let get = matches!(method, Method::GET | Method::HEAD);
        match path {
            "/" if get => self.catalog_page(req).await,
            "/ui" | "/ui/" if get => Ok(see_other("/")),
            "/ui/login" if get => self.login_page(req, None, "", StatusCode::OK),
            "/ui/login" if method == Method::POST => self.login(req, body).await,
            "/ui/logout" if method == Method::POST => self.logout(req, body).await,
            "/ui/delete" if get => self.confirm_delete_page(req),
            "/ui/delete" if method == Method::POST => self.delete(req, body).await,
            _ => match path.strip_prefix("/ui/r/") {
                Some(rest) if get => match rest.split_once("/-/") {
                    Some((name, reference)) => self.manifest_page(req, name, reference).await,
                    None => self.repository_page(req, rest).await,
                },
                Some(_) => Err(Error::new(ErrorCode::MethodNotAllowed).with_detail(method.as_str().to_string())),
                None if is_ui_path(path) && !get && matches!(path, "/" | "/ui/login" | "/ui/logout" | "/ui/delete") => {
                    Err(Error::msg(ErrorCode::MethodNotAllowed, format!("{method} is not allowed here")))
                }
                None => Err(not_found()),
            },
        }
    }

    fn info<'r>(req: &'r Request) -> RequestInfo<'r> {
        RequestInfo { method: req.method(), uri: req.uri(), headers: req.headers(), client: req.extensions().get::<ClientAddr>().map(|c| c.0) }
    }

    fn viewer(&self, req: &Request) -> Viewer<'_> {
        let anonymous_csrf = || cookie(req.headers(), CSRF_COOKIE).map(str::to_string);
        let Some(auth) = &self.auth else {
            return Viewer { access: Access::unrestricted(), user: None, csrf: anonymous_csrf() };
        };
        if let Some(token) = cookie(req.headers(), SESSION_COOKIE) {
            if let Some(access) = auth.ui_session(&Self::info(req), token, self.env.now_unix()) {
                let user = access.user().map(str::to_string);
                return Viewer { access, user, csrf: Some(session::session_csrf(auth, token)) };
            }
        }
        Viewer { access: auth.anonymous(), user: None, csrf: anonymous_csrf() }
    }

    fn frame<'a>(&self, req: &'a Request, viewer: &'a Viewer<'_>, title: &'a str, crumbs: &'a [(String, String)]) -> Frame<'a> {
        Frame {
            title,
            crumbs,
            user: viewer.user.as_deref(),
            login: self.auth.is_some(),
            csrf: viewer.csrf.as_deref(),
            here: here(req),
        }
    }

    /// Whether `viewer` may delete in `name`: the same conditions as the API's DELETE.
    fn may_delete(&self, viewer: &Viewer<'_>, name: &RepositoryName) -> bool {
        let writes = self.auth.is_some() || self.config.anonymous_write != Some(false);
        self.config.delete_enabled && !self.config.read_only && writes && viewer.access.allows(name, Actions::DELETE)
    }

    fn ctx<'r>(&self, req: &'r Request) -> views::Ctx<'r> {
        views::Ctx { host: Self::info(req).host(), now: self.env.now_unix() }
    }

    /// A repository the viewer may pull, or 404 (the same answer whether it exists or not).
    fn visible(&self, viewer: &Viewer<'_>, name: &str) -> Result<RepositoryName> {
        match RepositoryName::parse(name) {
            Ok(n) if viewer.access.allows(&n, Actions::PULL) => Ok(n),
            _ => Err(Error::msg(ErrorCode::NameUnknown, "no such repository, or you may not see it (logging in may help)")),
        }
    }

    async fn catalog_page(&self, req: &Request) -> Result<Reply> {
        let query = crate::registry::Query::parse(req.uri().query());
        let q = query.get("q").unwrap_or("").chars().take(200).collect::<String>();
        let viewer = self.viewer(req);
        let page = self.ui_catalog(&viewer.access, &q, query.get("after")).await?;
        let body = views::catalog(&self.ctx(req), &page, &q, viewer.user.is_some(), self.auth.is_some());
        Ok(html_reply(StatusCode::OK, html::page(&self.frame(req, &viewer, "Repositories", &[]), &body)))
    }

    async fn repository_page(&self, req: &Request, name: &str) -> Result<Reply> {
        let viewer = self.viewer(req);
        let name = self.visible(&viewer, name)?;
        let query = crate::registry::Query::parse(req.uri().query());
        let Some(page) = self.ui_tags(&name, query.get("after")).await? else {
            return Err(Error::msg(ErrorCode::NameUnknown, "no such repository, or you may not see it (logging in may help)"));
        };
        let notice = query.get("deleted").map(|r| format!("Deleted {r}."));
        let body = views::repository(&self.ctx(req), name.as_str(), &page, self.may_delete(&viewer, &name), notice.as_deref());
        let crumbs = [("Repositories".to_string(), "/".to_string())];
        Ok(html_reply(StatusCode::OK, html::page(&self.frame(req, &viewer, name.as_str(), &crumbs), &body)))
    }

    async fn manifest_page(&self, req: &Request, name: &str, reference: &str) -> Result<Reply> {
        let viewer = self.viewer(req);
        let name = self.visible(&viewer, name)?;
        let parsed = Reference::parse(reference).map_err(|_| not_found())?;
        let page = self.ui_manifest(&name, &parsed).await?;
        let body = views::manifest(&self.ctx(req), name.as_str(), reference, &page, self.may_delete(&viewer, &name));
        let crumbs = [("Repositories".to_string(), "/".to_string()), (name.to_string(), repo_href(name.as_str()))];
        let separator = if reference.contains(':') { '@' } else { ':' };
        let title = format!("{name}{separator}{}", html::short_digest(reference));
        Ok(html_reply(StatusCode::OK, html::page(&self.frame(req, &viewer, &title, &crumbs), &body)))
    }

    fn login_page(&self, req: &Request, error: Option<&str>, user: &str, status: StatusCode) -> Result<Reply> {
        if self.auth.is_none() {
            return Ok(see_other("/"));
        }
        let query = crate::registry::Query::parse(req.uri().query());
        let next = session::safe_next(query.get("next")).to_string();
        let viewer = self.viewer(req);
        let body = views::login(&next, error, user);
        Ok(html_reply(status, html::page(&self.frame(req, &viewer, "Log in", &[]), &body)))
    }

    async fn login(&self, req: &Request, body: Body) -> Result<Reply> {
        let Some(auth) = &self.auth else { return Ok(see_other("/")) };
        let info = Self::info(req);
        if session::cross_site(req.headers(), info.host()) {
            return Err(forbidden("a login form from another site"));
        }
        let form = form(body).await?;
        let user = field(&form, "user").unwrap_or("").trim();
        let password = field(&form, "password").unwrap_or("");
        let next = session::safe_next(field(&form, "next")).to_string();
        let now = self.env.now_unix();
        match auth.ui_login(&info, user, password, now, self.env.random_bytes(), SESSION_SECS).await {
            Ok(Some(token)) => {
                let cookie = set_cookie(SESSION_COOKIE, &token, Some(SESSION_SECS), session::is_https(req));
                Ok(see_other(&next).header("set-cookie", cookie))
            }
            Ok(None) => self.login_form_again(req, &next, "Incorrect user name or password.", user, StatusCode::UNAUTHORIZED),
            Err(e) if e.code == ErrorCode::TooManyRequests => {
                let retry = e.headers.iter().find(|(n, _)| *n == "retry-after").map(|(_, v)| v.clone());
                let reply = self.login_form_again(req, &next, &e.message, user, StatusCode::TOO_MANY_REQUESTS)?;
                Ok(match retry {
                    Some(r) => reply.header("retry-after", r),
                    None => reply,
                })
            }
            Err(e) => Err(e),
        }
    }

    fn login_form_again(&self, req: &Request, next: &str, error: &str, user: &str, status: StatusCode) -> Result<Reply> {
        let viewer = self.viewer(req);
        let body = views::login(next, Some(error), user);
        Ok(html_reply(status, html::page(&self.frame(req, &viewer, "Log in", &[]), &body)))
    }

    /// Refuse a mutating POST that comes from another site or without the viewer's CSRF token.
    fn check_csrf(&self, req: &Request, viewer: &Viewer<'_>, form: &[(String, String)]) -> Result<()> {
        if session::cross_site(req.headers(), Self::info(req).host()) {
            return Err(forbidden("a form from another site"));
        }
        match &viewer.csrf {
            Some(expected) if session::csrf_matches(expected, field(form, "csrf")) => Ok(()),
            _ => Err(forbidden("the form's CSRF token is missing or wrong: reload the page and try again")),
        }
    }

    async fn logout(&self, req: &Request, body: Body) -> Result<Reply> {
        let viewer = self.viewer(req);
        let form = form(body).await?;
        if viewer.user.is_some() {
            self.check_csrf(req, &viewer, &form)?;
        }
        Ok(see_other("/").header("set-cookie", set_cookie(SESSION_COOKIE, "", Some(0), session::is_https(req))))
    }

    fn confirm_delete_page(&self, req: &Request) -> Result<Reply> {
        let query = crate::registry::Query::parse(req.uri().query());
        let viewer = self.viewer(req);
        let name = self.visible(&viewer, query.get("repo").unwrap_or(""))?;
        let reference = query.get("ref").unwrap_or("");
        Reference::parse(reference).map_err(|_| not_found())?;
        if !self.may_delete(&viewer, &name) {
            return Err(forbidden("you may not delete in this repository"));
        }
        // An anonymous visitor gets the double-submit cookie here, the first page with a form that needs it.
        let (csrf, new_cookie) = match &viewer.csrf {
            Some(c) => (c.clone(), None),
            None => {
                let value = session::hex(&self.env.random_bytes());
                let c = set_cookie(CSRF_COOKIE, &value, None, session::is_https(req));
                (value, Some(c))
            }
        };
        let crumbs = [
            ("Repositories".to_string(), "/".to_string()),
            (name.to_string(), repo_href(name.as_str())),
            (html::short_digest(reference).to_string(), manifest_href(name.as_str(), reference)),
        ];
        let body = views::confirm_delete(name.as_str(), reference, &csrf);
        let reply = html_reply(StatusCode::OK, html::page(&self.frame(req, &viewer, "Delete?", &crumbs), &body));
        Ok(match new_cookie {
            Some(c) => reply.header("set-cookie", c),
            None => reply,
        })
    }

    async fn delete(&self, req: &Request, body: Body) -> Result<Reply> {
        let viewer = self.viewer(req);
        let form = form(body).await?;
        self.check_csrf(req, &viewer, &form)?;
        let name = self.visible(&viewer, field(&form, "repo").unwrap_or(""))?;
        let reference = field(&form, "ref").unwrap_or("").to_string();
        if !self.may_delete(&viewer, &name) {
            return Err(forbidden("you may not delete in this repository"));
        }
        self.delete_manifest(&name, &reference).await?;
        let location = format!("{}?deleted={}", repo_href(name.as_str()), html::url_query(&reference));
        Ok(see_other(&location))
    }
}

fn not_found() -> Error {
    Error::msg(ErrorCode::NotFound, "there is no such page")
}

fn forbidden(why: &str) -> Error {
    Error::msg(ErrorCode::Denied, format!("refused: {why}"))
}
