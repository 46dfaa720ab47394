//! Access control: who may pull, push and delete what. Pure logic, no I/O: secrets, users and rules come in through
//! [`AuthConfig`] (read by [`settings`] through the same look-up function as the rest of the configuration), time and
//! randomness are passed in by the caller.
//!
//! - [`htpasswd`]: users and their bcrypt hashes (`htpasswd -B`), verification that costs the same for unknown users;
//! - [`scope`]: the token protocol's scopes (`repository:team/app:pull,push`, `registry:catalog:*`) and actions;
//! - [`rules`]: repository patterns → users → actions, from configuration;
//! - [`token`]: HS256 JWTs, issued by Pier's own token endpoint and verified on every request;
//! - [`cache`]: a short-lived cache of verified Basic credentials, so bcrypt is not paid on every request;
//! - [`throttle`]: failed logins counted per user and per client address; over the limit, 429 before any bcrypt;
//! - [`authorizer`]: the decision for one request (allow, 401 with a Bearer challenge, 403) and the token endpoint.

pub mod authorizer;
pub mod cache;
pub mod htpasswd;
pub mod rules;
pub mod scope;
pub mod settings;
pub mod throttle;
pub mod token;

pub use authorizer::{Access, Authorizer, TOKEN_PATH};
pub use scope::{Actions, Scope};
pub use settings::AuthConfig;
