//! Content discovery: tag listing, the catalog and the referrers API. Listings come straight from the metadata
//! store's ordered prefix listing, so pages are lexical and `last` is simply "start after this key". Tags and the
//! catalog cost one list call per page (tags one more read: does the repository exist); referrers one list call plus
//! one read per referrer on the page. Pages are capped ([`MAX_PAGE`](crate::spec::pagination::MAX_PAGE) names,
//! [`REFERRERS_PAGE`] referrers), so no request's store calls grow with the repository.

use super::{keys, Query, Registry};
use crate::api::Reply;
use crate::error::{Error, ErrorCode, Result};
use crate::spec::manifest::Descriptor;
use crate::spec::media_types::OCI_INDEX;
use crate::spec::pagination::{next_link, Page};
use crate::spec::{Digest, RepositoryName};
use bytes::Bytes;
use futures::future::try_join_all;
use http::StatusCode;
use serde_json::json;

/// The most referrers one page of the referrers API returns.
pub const REFERRERS_PAGE: usize = 32;

impl Registry {
    /// One page of the entries under `prefix` (returned without it), and whether more remain.
    async fn page(&self, prefix: &str, page: &Page) -> Result<(Vec<String>, bool)> {
        let limit = page.limit();
        if limit == 0 {
            return Ok((Vec::new(), false));
        }
        let start_after = page.last.as_ref().map(|l| format!("{prefix}{l}"));
        let mut entries: Vec<String> = self
            .meta
            .list(prefix, start_after.as_deref(), limit + 1)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
            .collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }

    fn paged(body: serde_json::Value, path: &str, page: &Page, entries_last: Option<&String>, more: bool) -> Reply {
        let reply = Reply::json(StatusCode::OK, &body);
        match (more, entries_last) {
            (true, Some(last)) => reply.header("link", next_link(path, page.limit(), last)),
            _ => reply,
        }
    }

    pub(super) async fn tags_list(&self, name: &RepositoryName, query: &Query) -> Result<Reply> {
        let page = Page::from_query(query.get("n"), query.get("last"))?;
        if self.meta.get(&keys::catalog(name)).await?.is_none() {
            return Err(Error::new(ErrorCode::NameUnknown).with_detail(name.to_string()));
        }
        let (tags, more) = self.page(&keys::tags_prefix(name), &page).await?;
        let body = json!({ "name": name.as_str(), "tags": tags });
        Ok(Self::paged(body, &format!("/v2/{name}/tags/list"), &page, tags.last(), more))
    }

    pub(super) async fn catalog(&self, query: &Query) -> Result<Reply> {
        let page = Page::from_query(query.get("n"), query.get("last"))?;
        let (repos, more) = self.page(keys::CATALOG_PREFIX, &page).await?;
        let body = json!({ "repositories": repos });
        Ok(Self::paged(body, "/v2/_catalog", &page, repos.last(), more))
    }

    /// One page of the referrers of a subject: one list call and one read per referrer returned, at most
    /// [`REFERRERS_PAGE`] of them, so a request stays within a small constant number of store calls however many
    /// referrers the subject has (the Workers Free plan allows 50 subrequests per invocation). Further pages follow
    /// the `Link` header, as the spec allows (`n` asks for fewer; `last` is the page cursor).
    pub(super) async fn referrers(&self, name: &RepositoryName, digest: &str, query: &Query) -> Result<Reply> {
        let subject = Digest::parse(digest)?;
        let filter = query.get("artifactType").filter(|t| !t.is_empty());
        let page = Page::from_query(query.get("n"), query.get("last"))?;
        let limit = page.n.unwrap_or(REFERRERS_PAGE).min(REFERRERS_PAGE);
        let prefix = keys::referrers_prefix(name, &subject);
        let (entries, more) = if limit == 0 {
            (Vec::new(), false)
        } else {
            self.page(&prefix, &Page { n: Some(limit), last: page.last.clone() }).await?
        };
        let reads = entries.iter().map(|e| {
            let key = format!("{prefix}{e}");
            async move { self.meta.get(&key).await }
        });
        let mut manifests = Vec::new();
        for raw in try_join_all(reads).await?.into_iter().flatten() {
            let d: Descriptor = serde_json::from_slice(&raw).map_err(|e| Error::storage(format!("corrupt referrer: {e}")))?;
            if filter.is_none_or(|f| d.artifact_type.as_deref() == Some(f)) {
                manifests.push(d);
            }
        }
        let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        let mut reply = Reply::bytes(StatusCode::OK, OCI_INDEX, Bytes::from(body.to_string()));
        if let (true, Some(last)) = (more, entries.last()) {
            let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            let mut link = format!("</v2/{name}/referrers/{subject}?n={limit}&last={}", enc(last));
            if let Some(f) = filter {
                link.push_str(&format!("&artifactType={}", enc(f)));
            }
            reply = reply.header("link", format!("{link}>; rel=\"next\""));
        }
        Ok(match filter {
            Some(_) => reply.header("oci-filters-applied", "artifactType"),
            None => reply,
        })
    }
}
