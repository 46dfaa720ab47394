//! The decision for one request, and Pier's own token endpoint.
//!
//! Before the registry routes a request to a handler it asks [`Authorizer::authorize`]: the route and method say
//! which scope is needed (pull for GET/HEAD, push for POST/PATCH/PUT, delete for DELETE, `registry:catalog:*` for
//! the catalog, any valid identity for `/v2/`); the `Authorization` header says who is asking (a Bearer token from
//! the token endpoint, Basic credentials checked against htpasswd through the credential cache, or nobody). The
//! answer is an [`Access`] the handler may consult further (a mount asks whether the source is readable), or an
//! error: 401 `UNAUTHORIZED` with a `WWW-Authenticate: Bearer` challenge naming the token endpoint and the scope
//! when more credentials could help, 403 `DENIED` when the caller is known and not allowed.
//!
//! [`Authorizer::token_endpoint`] answers `GET /token?service=…&scope=…` (Docker token protocol) and
//! `POST /token` with an OAuth2 password grant form: the granted scopes are the requested ones cut down to what the
//! rules allow the caller (a partial grant is not an error), signed as a JWT.

use super::cache::{self, CredentialCache};
use super::htpasswd::BcryptHash;
use super::throttle::LoginThrottle;
use super::rules::{Principal, Rules};
use super::scope::{Actions, Scope};
use super::settings::AuthConfig;
use super::token::{self, AccessEntry, Claims, Secret, TokenError};
use crate::api::{Body, Reply, Route};
use crate::error::{Error, ErrorCode, Result};
use crate::spec::RepositoryName;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures::future::LocalBoxFuture;
use http::{HeaderMap, Method, StatusCode, Uri};
use serde_json::json;
use std::net::IpAddr;
use std::rc::Rc;

/// Path of the token endpoint (outside `/v2/`, like distribution's separate token servers).
pub const TOKEN_PATH: &str = "/token";
/// Most scopes granted in one token.
const MAX_SCOPES: usize = 64;
/// The `access` entry type that marks a web UI session token ([`Authorizer::ui_login`]).
const UI_SESSION_KIND: &str = "pier-ui";
/// Largest POST form accepted by the token endpoint.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// `/v2/`: any valid identity (an anonymous token counts; no credentials at all does not).
    Identity,
    /// `registry:catalog:*`
    Catalog,
    /// Actions on one repository; `challenge` is what the 401 asks for (writes ask for `pull,push`, as clients
    /// need both and distribution asks the same).
    Repository { name: RepositoryName, actions: Actions, challenge: Actions },
}

impl Need {
    /// The scope a request needs, from its route and method.
    pub fn of(route: &Route, method: &Method) -> Need {
        let name = match route {
            Route::Base => return Need::Identity,
            Route::Catalog => return Need::Catalog,
            Route::TagsList { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => name.clone(),
        };
        let write = Actions::PULL | Actions::PUSH;
        let (actions, challenge) = match *method {
            Method::POST | Method::PUT | Method::PATCH => (Actions::PUSH, write),
            // Cancelling one's own upload is part of pushing, not a deletion of anything stored.
            Method::DELETE if matches!(route, Route::Upload { .. }) => (Actions::PUSH, write),
            Method::DELETE => (Actions::DELETE, Actions::DELETE),
            _ => (Actions::PULL, Actions::PULL),
        };
        Need::Repository { name, actions, challenge }
    }

    fn challenge_scope(&self) -> Option<String> {
        match self {
            Need::Identity => None,
            Need::Catalog => Some(Scope::Catalog.to_string()),
            Need::Repository { name, challenge, .. } => Some(Scope::Repository { name: name.clone(), actions: *challenge }.to_string()),
        }
    }
}

/// What the caller of one request may do; handlers consult it for decisions beyond the route's own scope.
#[derive(Debug, Clone)]
pub struct Access<'a> {
    grant: Grant<'a>,
}

#[derive(Debug, Clone)]
enum Grant<'a> {
    /// Access control is off.
    Unrestricted,
    /// Basic credentials or none: the rules decide.
    Rules { rules: &'a Rules, user: Option<String> },
    /// A Bearer token: its `access` claim decides.
    Token(Claims),
}

impl Access<'static> {
    /// Everything allowed (no access control configured).
    pub fn unrestricted() -> Self {
        Access { grant: Grant::Unrestricted }
    }
}

impl Access<'_> {
    /// Whether every action of `actions` is allowed on repository `name`.
    pub fn allows(&self, name: &RepositoryName, actions: Actions) -> bool {
        self.actions_on(name).contains(actions)
    }

    fn actions_on(&self, name: &RepositoryName) -> Actions {
        match &self.grant {
            Grant::Unrestricted => Actions::ALL,
            Grant::Rules { rules, user } => rules.allowed(principal(user.as_deref()), name),
            Grant::Token(claims) => claims.repository_actions(name),
        }
    }

    fn catalog(&self) -> bool {
        match &self.grant {
            Grant::Unrestricted => true,
            Grant::Rules { rules, user } => rules.catalog_allowed(principal(user.as_deref())),
            Grant::Token(claims) => claims.catalog(),
        }
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<&str> {
        match &self.grant {
            Grant::Unrestricted => None,
            Grant::Rules { user, .. } => user.as_deref(),
            Grant::Token(claims) => claims.user(),
        }
    }
}

fn principal(user: Option<&str>) -> Principal<'_> {
    user.map_or(Principal::Anonymous, Principal::User)
}

/// What the `Authorization` header holds.
enum Credentials {
    None,
    Basic { user: String, password: String },
    Bearer(String),
    /// Present but unreadable.
    Invalid,
}

fn credentials(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else { return Credentials::None };
    let Ok(value) = value.to_str() else { return Credentials::Invalid };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Credentials::Bearer(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = STANDARD.decode(rest).ok().and_then(|b| String::from_utf8(b).ok());
        if let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
            if !user.is_empty() {
                return Credentials::Basic { user: user.to_string(), password: password.to_string() };
            }
        }
    }
    Credentials::Invalid
}

/// A Host value that is safe to reflect in a header: host name or address and port only.
fn clean_host(v: &str) -> Option<&str> {
    let ok = !v.is_empty() && v.len() <= 255 && v.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c));
    ok.then_some(v)
}

/// Runs one bcrypt verification (hash, password) → match. The platform decides where: the native server on a small
/// blocking pool, so a flood of logins never holds up the requests around it; elsewhere in place.
pub type PasswordCheck = Rc<dyn Fn(BcryptHash, Vec<u8>) -> LocalBoxFuture<'static, bool>>;

/// Access control for one registry.
pub struct Authorizer {
    config: AuthConfig,
    secret: Secret,
    cache: CredentialCache,
    throttle: LoginThrottle,
    verify: PasswordCheck,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The request facts the authorizer looks at.
pub struct RequestInfo<'r> {
    pub method: &'r Method,
    pub uri: &'r Uri,
    pub headers: &'r HeaderMap,
    /// The client's address, when the platform knows it (failed logins are throttled per address too).
    pub client: Option<IpAddr>,
}

impl<'r> RequestInfo<'r> {
    /// The Host the client asked for, when it is safe to reflect; `localhost` otherwise.
    pub fn host(&self) -> &'r str {
        self.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .and_then(clean_host)
            .or_else(|| self.uri.authority().map(|a| a.as_str()).and_then(clean_host))
            .unwrap_or("localhost")
    }

    /// `https` when the request came over HTTPS (`X-Forwarded-Proto` from a proxy, or the URI's scheme), else `http`.
    pub fn scheme(&self) -> &str {
        match self.headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).map(|s| s.trim().to_ascii_lowercase()) {
            Some(p) if p == "https" => "https",
            Some(p) if p == "http" => "http",
            _ => match self.uri.scheme_str() {
                Some("https") => "https",
                _ => "http",
            },
        }
    }
}

impl Authorizer {
    /// An authorizer for `config`. `secret` is used when the configuration has no token secret (the platform's
    /// random per-process key).
    pub fn new(config: AuthConfig, secret: Secret) -> Self {
        let secret = config.token_secret.clone().unwrap_or(secret);
        let cache = CredentialCache::new(config.cache_ttl_secs);
        let throttle = LoginThrottle::new(config.max_failures, config.failure_window_secs);
        let verify: PasswordCheck = Rc::new(|hash: BcryptHash, password: Vec<u8>| Box::pin(futures::future::ready(hash.verify(&password))));
        Authorizer { config, secret, cache, throttle, verify }
    }

    /// Run bcrypt verifications through `verify` (see [`PasswordCheck`]).
    pub fn with_password_check(mut self, verify: PasswordCheck) -> Self {
        self.verify = verify;
        self
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// The service name: configured, else the request's Host.
    fn service(&self, req: &RequestInfo<'_>) -> String {
        self.config.service.clone().unwrap_or_else(|| req.host().to_string())
    }

    /// The token endpoint's absolute URL.
    fn realm(&self, req: &RequestInfo<'_>) -> String {
        self.config.realm.clone().unwrap_or_else(|| format!("{}://{}{TOKEN_PATH}", req.scheme(), req.host()))
    }

    fn challenge(&self, req: &RequestInfo<'_>, need: &Need, error: Option<(&str, String)>) -> Error {
        let mut value = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm(req), self.service(req));
        if let Some(scope) = need.challenge_scope() {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        if let Some((code, description)) = &error {
            value.push_str(&format!(",error=\"{code}\",error_description=\"{description}\""));
        }
        let mut e = Error::new(ErrorCode::Unauthorized).with_header("www-authenticate", value);
        if let Some(scope) = need.challenge_scope() {
            e = e.with_detail(json!({ "scope": scope }));
        }
        if let Some((_, description)) = error {
            e.message = format!("authentication required: {description}");
        }
        e
    }

    fn denied(need: &Need) -> Error {
        let e = Error::new(ErrorCode::Denied);
        match need.challenge_scope() {
            Some(scope) => e.with_detail(json!({ "scope": scope })),
            None => e,
        }
    }

    /// Check Basic credentials: the throttle first (a locked user or address gets 429 before any bcrypt), then the
    /// cache, then bcrypt (unknown users cost the same as known ones, and count as failures alike).
    async fn check_password(&self, req: &RequestInfo<'_>, user: &str, password: &str, now: u64) -> Result<bool> {
        if let Some(secs) = self.throttle.retry_after(user, req.client, now) {
            return Err(Error::msg(ErrorCode::TooManyRequests, format!("too many failed logins: try again in {secs} s"))
                .with_header("retry-after", secs.to_string()));
        }
        let (hash, known) = self.config.users.hash_to_check(user);
        if let Some(hash) = hash {
            let key = cache::key(user, password.as_bytes(), hash.as_str());
            if known && self.cache.contains(&key, now) {
                return Ok(true);
            }
            let matched = (self.verify)(hash.clone(), password.as_bytes().to_vec()).await;
            if known && matched {
                self.cache.insert(key, now);
                self.throttle.succeeded(user);
                return Ok(true);
            }
        }
        self.throttle.failed(user, req.client, now);
        Ok(false)
    }

    fn verify_token(&self, req: &RequestInfo<'_>, token: &str, now: u64) -> Result<Claims, TokenError> {
        token::verify(token, &self.secret, &self.config.issuer, &self.service(req), now)
    }

    /// Decide whether the request may reach its handler.
    pub async fn authorize(&self, req: &RequestInfo<'_>, route: &Route, now: u64) -> Result<Access<'_>> {
        let need = Need::of(route, req.method);
        let (access, anonymous, presented) = match credentials(req.headers) {
            Credentials::None => (Access { grant: Grant::Rules { rules: &self.config.rules, user: None } }, true, false),
            Credentials::Invalid => return Err(self.challenge(req, &need, Some(("invalid_request", "unreadable Authorization header".into())))),
            Credentials::Basic { user, password } => {
                if !self.check_password(req, &user, &password, now).await? {
                    return Err(self.challenge(req, &need, Some(("invalid_token", "incorrect username or password".into()))));
                }
                (Access { grant: Grant::Rules { rules: &self.config.rules, user: Some(user) } }, false, true)
            }
            Credentials::Bearer(t) => match self.verify_token(req, &t, now) {
                Ok(claims) => {
                    let anonymous = claims.user().is_none();
                    (Access { grant: Grant::Token(claims) }, anonymous, true)
                }
                Err(e) => return Err(self.challenge(req, &need, Some(("invalid_token", e.to_string())))),
            },
        };
        let allowed = match &need {
            Need::Identity => presented,
            Need::Catalog => access.catalog(),
            Need::Repository { name, actions, .. } => access.allows(name, *actions),
        };
        if allowed {
            return Ok(access);
        }
        if anonymous {
            return Err(self.challenge(req, &need, None));
        }
        // A token that lacks the scope while its user would get it: ask the client for a new token.
        if let Grant::Token(claims) = &access.grant {
            let who = principal(claims.user());
            let would = match &need {
                Need::Identity => true,
                Need::Catalog => self.config.rules.catalog_allowed(who),
                Need::Repository { name, actions, .. } => self.config.rules.allowed(who, name).contains(*actions),
            };
            if would {
                return Err(self.challenge(req, &need, Some(("insufficient_scope", "the token does not grant this scope".into()))));
            }
        }
        Err(Self::denied(&need))
    }

    /// Check a password typed into the web UI's login form — through the same throttle, credential cache and bcrypt
    /// as Basic credentials, so a form is no way around the lockout — and on success issue a session token: the same
    /// HS256 JWT as the token endpoint's, valid for `lifetime` seconds, whose only `access` entry marks it as a UI
    /// session. That entry grants nothing on `/v2/` (only `repository` and `registry` entries do); what the session
    /// may see and do follows the rules for its user at each request, so a rule change applies at once.
    /// `Ok(None)`: wrong user or password; `Err`: 429 while throttled.
    pub async fn ui_login(
        &self,
        req: &RequestInfo<'_>,
        user: &str,
        password: &str,
        now: u64,
        random: [u8; 16],
        lifetime: u64,
    ) -> Result<Option<String>> {
        if user.is_empty() || !self.check_password(req, user, password, now).await? {
            return Ok(None);
        }
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: user.to_string(),
            aud: self.service(req).into(),
            exp: now.saturating_add(lifetime),
            nbf: Some(now),
            iat: Some(now),
            jti: Some(random.iter().map(|b| format!("{b:02x}")).collect()),
            access: vec![AccessEntry { kind: UI_SESSION_KIND.into(), name: "session".into(), actions: Vec::new() }],
        };
        Ok(Some(token::issue(&claims, &self.secret)))
    }

    /// What a web UI session token lets its user do, or `None` when it is not a valid, unexpired UI session of this
    /// registry (a token from the token endpoint is not one: it may have been handed to a CI job with a narrow scope).
    pub fn ui_session(&self, req: &RequestInfo<'_>, session: &str, now: u64) -> Option<Access<'_>> {
        let claims = self.verify_token(req, session, now).ok()?;
        let user = claims.user()?.to_string();
        claims.access.iter().any(|e| e.kind == UI_SESSION_KIND).then(|| Access { grant: Grant::Rules { rules: &self.config.rules, user: Some(user) } })
    }

    /// What a request without credentials may do.
    pub fn anonymous(&self) -> Access<'_> {
        Access { grant: Grant::Rules { rules: &self.config.rules, user: None } }
    }

    /// HMAC-SHA256 of `data` under the token secret, for values the registry hands out and must recognise later
    /// without storing them (the web UI's CSRF tokens).
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        self.secret.sign(data)
    }

    /// Answer a request to [`TOKEN_PATH`].
    pub async fn token_endpoint(&self, req: &RequestInfo<'_>, body: Body, now: u64, random: [u8; 16]) -> Result<Reply> {
        let (creds, service, scopes, oauth) = match *req.method {
            Method::GET | Method::HEAD => {
                let q: Vec<(String, String)> = req.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
                let service = q.iter().find(|(k, _)| k == "service").map(|(_, v)| v.clone());
                let scopes: Vec<String> = q.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
                (credentials(req.headers), service, scopes, false)
            }
            Method::POST => {
                let form = body.collect_limited(MAX_FORM_BYTES).await?;
                let f: Vec<(String, String)> = form_urlencoded::parse(&form).into_owned().collect();
                let get = |k: &str| f.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
                let creds = match get("grant_type").as_deref() {
                    Some("password") => match (get("username"), get("password")) {
                        (Some(user), Some(password)) if !user.is_empty() => Credentials::Basic { user, password },
                        _ => return Ok(oauth_error("invalid_request", "username and password are required")),
                    },
                    Some(_) => return Ok(oauth_error("unsupported_grant_type", "only grant_type=password is supported")),
                    None => credentials(req.headers),
                };
                let scopes: Vec<String> = f.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
                (creds, get("service"), scopes, true)
            }
            _ => return Err(Error::new(ErrorCode::MethodNotAllowed).with_detail(req.method.as_str().to_string())),
        };
        let our_service = self.service(req);
        if service.as_deref().is_some_and(|s| s != our_service) {
            return Ok(oauth_error("invalid_request", "unknown service"));
        }
        let user = match creds {
            Credentials::None => None,
            Credentials::Basic { user, password } => {
                if !self.check_password(req, &user, &password, now).await? {
                    return Err(self.login_failed());
                }
                Some(user)
            }
            Credentials::Bearer(_) | Credentials::Invalid => return Err(self.login_failed()),
        };
        let mut requested = Vec::new();
        for s in &scopes {
            match Scope::parse_list(s) {
                Ok(v) => requested.extend(v),
                Err(_) => return Ok(oauth_error("invalid_scope", "a scope is malformed or names an invalid repository")),
            }
        }
        if requested.len() > MAX_SCOPES {
            return Ok(oauth_error("invalid_scope", "too many scopes"));
        }
        let who = principal(user.as_deref());
        let mut access: Vec<AccessEntry> = Vec::new();
        for scope in &requested {
            match scope {
                Scope::Repository { name, actions } => {
                    let granted = actions.intersect(self.config.rules.allowed(who, name));
                    if !granted.is_empty() {
                        let names = granted.names().into_iter().map(String::from).collect();
                        access.push(AccessEntry { kind: "repository".into(), name: name.to_string(), actions: names });
                    }
                }
                Scope::Catalog => {
                    if self.config.rules.catalog_allowed(who) {
                        access.push(AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] });
                    }
                }
            }
        }
        let expires_in = self.config.token_expiry_secs;
        let claims = Claims {
            iss: self.config.issuer.clone(),
            sub: user.unwrap_or_default(),
            aud: our_service.into(),
            exp: now.saturating_add(expires_in),
            nbf: Some(now),
            iat: Some(now),
            jti: Some(random.iter().map(|b| format!("{b:02x}")).collect()),
            access,
        };
        let token = token::issue(&claims, &self.secret);
        let mut body = json!({
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": token::rfc3339(now),
        });
        if oauth {
            body["token_type"] = json!("Bearer");
            body["scope"] = json!(requested.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(" "));
        }
        Ok(Reply::json(StatusCode::OK, &body).header("cache-control", "no-store").header("pragma", "no-cache"))
    }

    fn login_failed(&self) -> Error {
        Error::msg(ErrorCode::Unauthorized, "incorrect username or password")
            .with_header("www-authenticate", format!("Basic realm=\"{}\"", self.config.basic_realm))
    }
}

/// An OAuth2-style 400 that is also an OCI error body.
fn oauth_error(code: &str, description: &str) -> Reply {
    Reply::json(
        StatusCode::BAD_REQUEST,
        &json!({
            "error": code,
            "error_description": description,
            "errors": [ { "code": "UNSUPPORTED", "message": description, "detail": code } ],
        }),
    )
    .header("cache-control", "no-store")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::htpasswd::hash_password;
    use crate::auth::settings::AuthConfig;
    use futures::executor::block_on;

    const NOW: u64 = 1_700_000_000;

    fn authorizer(rules: Option<&str>) -> Authorizer {
        let file = format!(
            "alice:{}\nbob:{}\n",
            hash_password(b"alice-pw", 4, [1; 16]).unwrap(),
            hash_password(b"bob-pw", 4, [2; 16]).unwrap()
        );
        let mut vars = vec![("PIER_AUTH_HTPASSWD", file), ("PIER_AUTH_TOKEN_SECRET", "s".repeat(32))];
        if let Some(r) = rules {
            vars.push(("PIER_AUTH_RULES", r.to_string()));
        }
        let cfg = AuthConfig::from_lookup(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap().unwrap();
        Authorizer::new(cfg, Secret::new(vec![0; 32]))
    }

    fn headers(auth: Option<String>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("host", "reg.test:5000".parse().unwrap());
        if let Some(a) = auth {
            h.insert("authorization", a.parse().unwrap());
        }
        h
    }

    fn basic(user: &str, pw: &str) -> Option<String> {
        Some(format!("Basic {}", STANDARD.encode(format!("{user}:{pw}"))))
    }

    fn decide(a: &Authorizer, method: Method, path: &str, auth: Option<String>) -> std::result::Result<(), Error> {
        let h = headers(auth);
        let uri: Uri = path.parse().unwrap();
        let req = RequestInfo { method: &method, uri: &uri, headers: &h, client: None };
        let route = crate::api::route(uri.path()).unwrap();
        block_on(a.authorize(&req, &route, NOW)).map(|_| ())
    }

    fn token(a: &Authorizer, query: &str, auth: Option<String>) -> (StatusCode, serde_json::Value) {
        let h = headers(auth);
        let uri: Uri = format!("/token?{query}").parse().unwrap();
        let req = RequestInfo { method: &Method::GET, uri: &uri, headers: &h, client: None };
        match block_on(a.token_endpoint(&req, Body::Empty, NOW, [7; 16])) {
            Ok(r) => {
                let status = r.status;
                let body = match r.body {
                    Body::Full(b) => serde_json::from_slice(&b).unwrap(),
                    _ => serde_json::Value::Null,
                };
                (status, body)
            }
            Err(e) => (e.status(), e.body()),
        }
    }

    #[test]
    fn challenge_names_realm_service_scope() {
        let a = authorizer(None);
        let e = decide(&a, Method::GET, "/v2/team/app/manifests/latest", None).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        let (_, v) = e.headers.iter().find(|(n, _)| *n == "www-authenticate").unwrap();
        assert_eq!(v, "Bearer realm=\"http://reg.test:5000/token\",service=\"reg.test:5000\",scope=\"repository:team/app:pull\"");
        let e = decide(&a, Method::PUT, "/v2/team/app/manifests/latest", None).unwrap_err();
        assert!(e.headers[0].1.ends_with("scope=\"repository:team/app:pull,push\""));
        let e = decide(&a, Method::GET, "/v2/", None).unwrap_err();
        assert!(!e.headers[0].1.contains("scope="));
        let e = decide(&a, Method::GET, "/v2/_catalog", None).unwrap_err();
        assert!(e.headers[0].1.contains("scope=\"registry:catalog:*\""));
    }

    #[test]
    fn basic_credentials() {
        let a = authorizer(Some("team/* alice pull,push\n* bob pull"));
        assert!(decide(&a, Method::GET, "/v2/team/app/tags/list", basic("alice", "alice-pw")).is_ok());
        assert!(decide(&a, Method::GET, "/v2/", basic("alice", "alice-pw")).is_ok());
        assert_eq!(a.cache.len(), 1, "verified once, then cached");
        assert_eq!(decide(&a, Method::GET, "/v2/team/app/tags/list", basic("alice", "nope")).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(decide(&a, Method::GET, "/v2/team/app/tags/list", basic("mallory", "x")).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(decide(&a, Method::DELETE, "/v2/team/app/manifests/sha256:00", basic("alice", "alice-pw")).unwrap_err().code, ErrorCode::Denied);
        assert_eq!(decide(&a, Method::PUT, "/v2/other/manifests/x", basic("bob", "bob-pw")).unwrap_err().code, ErrorCode::Denied);
        assert!(decide(&a, Method::GET, "/v2/other/manifests/x", basic("bob", "bob-pw")).is_ok());
        assert_eq!(decide(&a, Method::GET, "/v2/_catalog", basic("bob", "bob-pw")).unwrap_err().code, ErrorCode::Denied);
        assert_eq!(decide(&a, Method::GET, "/v2/", Some("Basic !!!".into())).unwrap_err().status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn tokens_grant_what_rules_allow() {
        let a = authorizer(Some("team/* alice pull,push\npublic/* anonymous pull\nregistry:catalog alice *"));
        let (status, body) = token(&a, "service=reg.test:5000&scope=repository:team/app:pull,push,delete&scope=repository:other:pull&scope=registry:catalog:*", basic("alice", "alice-pw"));
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["issued_at"], "2023-11-14T22:13:20Z");
        let t = body["token"].as_str().unwrap().to_string();
        assert_eq!(body["access_token"], body["token"]);
        let bearer = Some(format!("Bearer {t}"));
        assert!(decide(&a, Method::PUT, "/v2/team/app/manifests/x", bearer.clone()).is_ok());
        assert!(decide(&a, Method::GET, "/v2/_catalog", bearer.clone()).is_ok());
        assert!(decide(&a, Method::GET, "/v2/", bearer.clone()).is_ok());
        // Not granted: delete (rules), other (rules), team/b (not requested: the user could get it → 401).
        assert_eq!(decide(&a, Method::DELETE, "/v2/team/app/manifests/sha256:00", bearer.clone()).unwrap_err().code, ErrorCode::Denied);
        assert_eq!(decide(&a, Method::GET, "/v2/other/tags/list", bearer.clone()).unwrap_err().code, ErrorCode::Denied);
        let e = decide(&a, Method::GET, "/v2/team/b/tags/list", bearer).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
        assert!(e.headers[0].1.contains("insufficient_scope"));

        // Anonymous: only public pull.
        let (status, body) = token(&a, "scope=repository:public/x:pull,push&scope=repository:team/app:pull", None);
        assert_eq!(status, StatusCode::OK);
        let bearer = Some(format!("Bearer {}", body["token"].as_str().unwrap()));
        assert!(decide(&a, Method::GET, "/v2/public/x/tags/list", bearer.clone()).is_ok());
        assert!(decide(&a, Method::GET, "/v2/", bearer.clone()).is_ok());
        assert_eq!(decide(&a, Method::PUT, "/v2/public/x/manifests/x", bearer.clone()).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        assert_eq!(decide(&a, Method::GET, "/v2/team/app/tags/list", bearer).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        // Anonymous without any token may pull public repositories, not ping /v2/.
        assert!(decide(&a, Method::GET, "/v2/public/x/tags/list", None).is_ok());
        assert!(decide(&a, Method::GET, "/v2/", None).is_err());
    }

    #[test]
    fn token_endpoint_refusals() {
        let a = authorizer(None);
        assert_eq!(token(&a, "scope=repository:a:pull", basic("alice", "wrong")).0, StatusCode::UNAUTHORIZED);
        assert_eq!(token(&a, "scope=repository:a:pull", basic("nobody", "x")).0, StatusCode::UNAUTHORIZED);
        assert_eq!(token(&a, "service=elsewhere&scope=repository:a:pull", basic("alice", "alice-pw")).0, StatusCode::BAD_REQUEST);
        assert_eq!(token(&a, "scope=repository:A:pull", basic("alice", "alice-pw")).0, StatusCode::BAD_REQUEST);
        assert_eq!(token(&a, "scope=repository:..%2Fx:pull", basic("alice", "alice-pw")).0, StatusCode::BAD_REQUEST);
        // A login without scopes (docker login) succeeds with an empty grant.
        let (s, body) = token(&a, "account=alice&service=reg.test:5000", basic("alice", "alice-pw"));
        assert_eq!(s, StatusCode::OK);
        assert!(body["token"].is_string());
    }

    #[test]
    fn token_for_another_host_or_issuer_is_refused() {
        let a = authorizer(None);
        let (_, body) = token(&a, "scope=repository:a:pull", basic("alice", "alice-pw"));
        let t = body["token"].as_str().unwrap();
        let mut h = headers(Some(format!("Bearer {t}")));
        h.insert("host", "other.host".parse().unwrap());
        let uri: Uri = "/v2/a/tags/list".parse().unwrap();
        let req = RequestInfo { method: &Method::GET, uri: &uri, headers: &h, client: None };
        let route = crate::api::route(uri.path()).unwrap();
        let e = block_on(a.authorize(&req, &route, NOW)).unwrap_err();
        assert!(e.headers[0].1.contains("invalid_token"));
        // Same secret, other issuer.
        let mut b = authorizer(None);
        b.config.issuer = "someone-else".into();
        let e = decide(&b, Method::GET, "/v2/a/tags/list", Some(format!("Bearer {t}"))).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn realm_follows_forwarded_proto_and_is_never_injected() {
        let a = authorizer(None);
        let mut h = headers(None);
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("host", "reg\"evil".parse().unwrap());
        let uri: Uri = "/v2/".parse().unwrap();
        let req = RequestInfo { method: &Method::GET, uri: &uri, headers: &h, client: None };
        assert_eq!(a.realm(&req), "https://localhost/token");
    }

    #[test]
    fn failed_logins_are_throttled_without_bcrypt_and_alike_for_unknown_users() {
        let mut a = authorizer(None);
        a.throttle = LoginThrottle::new(2, 60);
        let checks = Rc::new(std::cell::Cell::new(0));
        let counted = checks.clone();
        let a = a.with_password_check(Rc::new(move |h: BcryptHash, p: Vec<u8>| {
            counted.set(counted.get() + 1);
            Box::pin(futures::future::ready(h.verify(&p)))
        }));
        let path = "/v2/a/tags/list";
        for _ in 0..2 {
            assert_eq!(decide(&a, Method::GET, path, basic("alice", "wrong")).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        }
        let locked = decide(&a, Method::GET, path, basic("alice", "alice-pw")).unwrap_err();
        assert_eq!(locked.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(locked.code, ErrorCode::TooManyRequests);
        assert!(locked.headers.iter().any(|(n, v)| *n == "retry-after" && v == "60"));
        assert_eq!(checks.get(), 2, "a locked login runs no bcrypt");
        // Another user is not affected; an unknown one is counted and answered alike.
        assert!(decide(&a, Method::GET, path, basic("bob", "bob-pw")).is_ok());
        for _ in 0..2 {
            assert_eq!(decide(&a, Method::GET, path, basic("mallory", "x")).unwrap_err().status(), StatusCode::UNAUTHORIZED);
        }
        assert_eq!(decide(&a, Method::GET, path, basic("mallory", "x")).unwrap_err().status(), StatusCode::TOO_MANY_REQUESTS);
        // The token endpoint shares the throttle.
        assert_eq!(token(&a, "scope=repository:a:pull", basic("alice", "alice-pw")).0, StatusCode::TOO_MANY_REQUESTS);
        // Bearer tokens never reach a password check.
        let (_, body) = token(&a, "scope=repository:a:pull", basic("bob", "bob-pw"));
        let t = body["token"].as_str().unwrap().to_string();
        assert!(decide(&a, Method::GET, path, Some(format!("Bearer {t}"))).is_ok());
    }
}
