//! Path → resource. Names may themselves contain `manifests`, `blobs` or `tags` as components, so the resource is
//! found from the end of the path, where the spec puts it.

use crate::error::{Error, ErrorCode, Result};
use crate::spec::RepositoryName;

/// A resource of the Distribution API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    TagsList { name: RepositoryName },
    /// `/v2/<name>/manifests/<reference>` (reference unparsed: its error depends on the method)
    Manifest { name: RepositoryName, reference: String },
    /// `/v2/<name>/blobs/<digest>`
    Blob { name: RepositoryName, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: RepositoryName },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: RepositoryName, id: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: RepositoryName, digest: String },
}

impl Route {
    /// The repository the route is about, if any.
    pub fn repository(&self) -> Option<&RepositoryName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::TagsList { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. } => Some(name),
        }
    }
}

/// Map a path onto a route. `NOT_FOUND` for paths outside the API, `NAME_INVALID` for a bad repository name.
pub fn route(path: &str) -> Result<Route> {
    let not_found = || Error::new(ErrorCode::NotFound).with_detail(path.chars().take(200).collect::<String>());
    if path == "/v2" || path == "/v2/" {
        return Ok(Route::Base);
    }
    let rest = path.strip_prefix("/v2/").ok_or_else(not_found)?;
    if rest == "_catalog" || rest == "_catalog/" {
        return Ok(Route::Catalog);
    }
    let name = |n: &str| RepositoryName::parse(n);
    if let Some(n) = rest.strip_suffix("/tags/list").or_else(|| rest.strip_suffix("/tags/list/")) {
        return Ok(Route::TagsList { name: name(n)? });
    }
    if let Some(n) = rest.strip_suffix("/blobs/uploads/").or_else(|| rest.strip_suffix("/blobs/uploads")) {
        return Ok(Route::UploadStart { name: name(n)? });
    }
    let last_segment = |marker: &str| -> Option<(&str, &str)> {
        let i = rest.rfind(marker)?;
        let tail = &rest[i + marker.len()..];
        (!tail.is_empty() && !tail.contains('/')).then(|| (&rest[..i], tail))
    };
    if let Some((n, id)) = last_segment("/blobs/uploads/") {
        return Ok(Route::Upload { name: name(n)?, id: id.to_string() });
    }
    if let Some((n, r)) = last_segment("/manifests/") {
        return Ok(Route::Manifest { name: name(n)?, reference: r.to_string() });
    }
    if let Some((n, d)) = last_segment("/blobs/") {
        return Ok(Route::Blob { name: name(n)?, digest: d.to_string() });
    }
    if let Some((n, d)) = last_segment("/referrers/") {
        return Ok(Route::Referrers { name: name(n)?, digest: d.to_string() });
    }
    Err(not_found())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> RepositoryName {
        RepositoryName::parse(s).unwrap()
    }

    #[test]
    fn routes() {
        assert_eq!(route("/v2/").unwrap(), Route::Base);
        assert_eq!(route("/v2").unwrap(), Route::Base);
        assert_eq!(route("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(route("/v2/a/b/tags/list").unwrap(), Route::TagsList { name: n("a/b") });
        assert_eq!(route("/v2/a/manifests/latest").unwrap(), Route::Manifest { name: n("a"), reference: "latest".into() });
        assert_eq!(
            route("/v2/x/manifests/y/manifests/z").unwrap(),
            Route::Manifest { name: n("x/manifests/y"), reference: "z".into() }
        );
        assert_eq!(route("/v2/a/blobs/uploads/").unwrap(), Route::UploadStart { name: n("a") });
        assert_eq!(route("/v2/a/blobs/uploads").unwrap(), Route::UploadStart { name: n("a") });
        assert_eq!(route("/v2/a/blobs/uploads/abc").unwrap(), Route::Upload { name: n("a"), id: "abc".into() });
        assert_eq!(route("/v2/a/blobs/sha256:00").unwrap(), Route::Blob { name: n("a"), digest: "sha256:00".into() });
        assert_eq!(route("/v2/a/referrers/sha256:00").unwrap(), Route::Referrers { name: n("a"), digest: "sha256:00".into() });
        assert_eq!(route("/v2/tags/list").unwrap_err().code, ErrorCode::NotFound);
    }

    #[test]
    fn bad_paths() {
        assert_eq!(route("/v2/A/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v2/a%2Fb/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v2/../tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v2//manifests/x").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v3/").unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(route("/v2/a/manifests/").unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(route("/").unwrap_err().code, ErrorCode::NotFound);
        assert_eq!(route("/v2/a/unknown").unwrap_err().code, ErrorCode::NotFound);
    }
}
