//! Content discovery: tag listing, the catalog and the referrers API. Listings come straight from the metadata
//! store's ordered prefix listing, so pages are lexical and `last` is simply "start after this key".

use super::{keys, Query, Registry};
use crate::api::Reply;
use crate::error::{Error, ErrorCode, Result};
use crate::spec::manifest::Descriptor;
use crate::spec::media_types::OCI_INDEX;
use crate::spec::pagination::{next_link, Page};
use crate::spec::{Digest, RepositoryName};
use bytes::Bytes;
use http::StatusCode;
use serde_json::json;

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

    pub(super) async fn referrers(&self, name: &RepositoryName, digest: &str, query: &Query) -> Result<Reply> {
        let subject = Digest::parse(digest)?;
        let filter = query.get("artifactType").filter(|t| !t.is_empty());
        let prefix = keys::referrers_prefix(name, &subject);
        let mut manifests = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.meta.list(&prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last().cloned() else { break };
            for key in &page {
                let Some(raw) = self.meta.get(key).await? else { continue };
                let d: Descriptor = serde_json::from_slice(&raw).map_err(|e| Error::storage(format!("corrupt referrer: {e}")))?;
                if filter.is_none_or(|f| d.artifact_type.as_deref() == Some(f)) {
                    manifests.push(d);
                }
            }
            after = Some(last);
        }
        let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
        let reply = Reply::bytes(StatusCode::OK, OCI_INDEX, Bytes::from(body.to_string()));
        Ok(match filter {
            Some(_) => reply.header("oci-filters-applied", "artifactType"),
            None => reply,
        })
    }
}
