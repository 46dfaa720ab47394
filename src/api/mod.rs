//! The HTTP face of the core: request/response/body types shared by every platform adapter, and [`route`], the pure
//! mapping of a `/v2/...` path onto the resource it names. Paths are matched without percent-decoding: nothing the
//! spec allows in a name, tag or digest needs it, so an encoded `/` or `.` simply fails validation.
//!
//! Facts only the platform knows about a request travel as `http::Request` extensions: [`ClientAddr`], the client's
//! address (the native server's peer, Workers' `CF-Connecting-IP`), for request logs and login throttling.

pub mod body;
pub mod reply;
pub mod route;

pub use body::Body;
pub use reply::Reply;
pub use route::{route, Route};

/// A request as the core sees it.
pub type Request = http::Request<Body>;
/// A response as the core produces it.
pub type Response = http::Response<Body>;

/// The client's address, when the platform knows it: a request extension set by the adapter (the native server from
/// the TCP peer; Workers from `CF-Connecting-IP`, which Cloudflare sets). Used for failed-login throttling and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::IpAddr);

/// The request came over HTTPS: a request extension set by the adapter that knows (the native server's TLS listener,
/// Workers for an `https://` URL). The web UI marks its cookies `Secure` then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Https;

/// Header every response carries.
pub const API_VERSION_HEADER: &str = "docker-distribution-api-version";
/// Its value.
pub const API_VERSION: &str = "registry/2.0";

/// Request id header: echoed when the client sent a sane one, generated otherwise, on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
