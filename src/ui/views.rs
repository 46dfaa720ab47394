//! The body of each web UI page, rendered from what [`super::data`] read: pure functions from view data to HTML, so
//! tests can check what a page shows (and that it escapes) without a store. Every interpolated value goes through
//! [`esc`].

use super::data::{CatalogPage, Desc, ImageConfig, ManifestPage, ManifestSummary, TagsPage, TAG_COUNT_LIMIT};
use super::html::{copy_button, esc, human_size, manifest_href, repo_href, short_digest, time_tag, url_query};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Facts every page body may need.
pub struct Ctx<'a> {
    /// The host to name in pull commands.
    pub host: &'a str,
    /// Now (Unix seconds), for "5 min ago".
    pub now: u64,
}

fn pull_row(label: &str, command: &str) -> String {
    format!(
        "<div class=\"pull\"><span class=\"muted\">{}</span><code>{}</code>{}</div>",
        esc(label),
        esc(command),
        copy_button(command, &format!("pull command {label}"), "Copy")
    )
}

/// The repository list with its search box.
pub fn catalog(ctx: &Ctx<'_>, page: &CatalogPage, query: &str, signed_in: bool, access_control: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>Repositories</h1><form class=\"search\" role=\"search\" method=\"get\" action=\"/\">\
         <label class=\"sr-only\" for=\"q\">Search repositories</label>\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{}\" placeholder=\"Search repositories (press /)\" autocomplete=\"off\">\
         <button type=\"submit\">Search</button></form>",
        esc(query)
    );
    if page.repos.is_empty() {
        let why = match (query.is_empty(), access_control && !signed_in) {
            (false, _) => format!("No repository name contains <strong>{}</strong>{}.", esc(query), if page.partial { " so far" } else { "" }),
            (true, true) => "No repositories are visible without logging in.".into(),
            (true, false) => "No repositories yet. Push an image to see it here.".into(),
        };
        let _ = write!(out, "<p class=\"notice\">{why}</p>");
    } else {
        out.push_str(
            "<table class=\"stack\"><thead><tr><th scope=\"col\">Repository</th><th scope=\"col\" class=\"num\">Tags</th>\
             <th scope=\"col\">Last push</th></tr></thead><tbody>",
        );
        for r in &page.repos {
            let tags = if r.more_tags { format!("{TAG_COUNT_LIMIT}+") } else { r.tags.to_string() };
            let _ = write!(
                out,
                "<tr><td><a href=\"{}\">{}</a></td><td class=\"num\" data-label=\"Tags\">{tags}</td><td data-label=\"Last push\">{}</td></tr>",
                esc(&repo_href(&r.name)),
                esc(&r.name),
                time_tag(r.pushed, ctx.now)
            );
        }
        out.push_str("</tbody></table>");
    }
    if let Some(next) = &page.next {
        let label = if page.partial { "Continue searching →" } else { "Next page →" };
        let _ = write!(
            out,
            "<div class=\"pager\"><span></span><a href=\"/?q={}&amp;after={}\" rel=\"next\">{label}</a></div>",
            esc(&url_query(query)),
            esc(&url_query(next))
        );
    }
    out
}

fn platforms_cell(m: &ManifestSummary) -> String {
    let platforms = m.platforms();
    if platforms.is_empty() {
        return "<span class=\"muted\">—</span>".into();
    }
    platforms.iter().map(|p| format!("<span class=\"badge\">{}</span>", esc(p))).collect()
}

/// What kind of manifest this is, in words.
fn kind(m: &ManifestSummary) -> String {
    if m.is_index() {
        "index".into()
    } else if let Some(t) = &m.artifact_type {
        format!("artifact ({t})")
    } else if m.config.as_ref().is_some_and(|c| !c.media_type.contains("image.config") && !c.media_type.contains("container.image")) {
        format!("artifact ({})", m.config.as_ref().map_or("", |c| c.media_type.as_str()))
    } else {
        "image".into()
    }
}

/// A repository: pull commands and its tags.
pub fn repository(ctx: &Ctx<'_>, name: &str, page: &TagsPage, can_delete: bool, notice: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(n) = notice {
        let _ = write!(out, "<p class=\"notice ok\" role=\"status\">{}</p>", esc(n));
    }
    let _ = write!(out, "<h1>{}</h1>", esc(name));
    let _ = write!(out, "<p class=\"muted\">Last push: {}</p>", time_tag(page.pushed, ctx.now));
    if page.tags.is_empty() {
        out.push_str("<p class=\"notice\">No tags on this page. Manifests pushed by digest only are reachable by digest.</p>");
        return out;
    }
    out.push_str(
        "<h2>Tags</h2><table class=\"stack\"><thead><tr><th scope=\"col\">Tag</th><th scope=\"col\">Digest</th>\
         <th scope=\"col\">Type</th><th scope=\"col\" class=\"num\">Size</th><th scope=\"col\">Platforms</th>\
         <th scope=\"col\">Pushed</th><th scope=\"col\"><span class=\"sr-only\">Actions</span></th></tr></thead><tbody>",
    );
    for t in &page.tags {
        let size = t.manifest.total_size().map_or_else(|| "<span class=\"muted\">—</span>".to_string(), human_size);
        let pull_tag = format!("docker pull {}/{name}:{}", ctx.host, t.tag);
        let delete = if can_delete {
            format!(
                " <a class=\"button danger\" href=\"/ui/delete?repo={}&amp;ref={}\" aria-label=\"Delete tag {}\">Delete</a>",
                esc(&url_query(name)),
                esc(&url_query(&t.tag)),
                esc(&t.tag)
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr><td><a href=\"{}\"><strong>{}</strong></a></td>\
             <td data-label=\"Digest\" class=\"nowrap\"><code title=\"{}\">{}</code> {}</td>\
             <td data-label=\"Type\">{}<br><span class=\"muted mono\">{}</span></td>\
             <td class=\"num\" data-label=\"Size\">{size}</td><td data-label=\"Platforms\">{}</td>\
             <td data-label=\"Pushed\">{}</td><td>{}{delete}</td></tr>",
            esc(&manifest_href(name, &t.tag)),
            esc(&t.tag),
            esc(&t.digest),
            esc(short_digest(&t.digest)),
            copy_button(&t.digest, &format!("digest of {}", t.tag), "Copy"),
            esc(&kind(&t.manifest)),
            esc(&t.manifest.media_type),
            platforms_cell(&t.manifest),
            time_tag(t.pushed, ctx.now),
            copy_button(&pull_tag, &format!("pull command for {}", t.tag), "Copy pull"),
        );
    }
    out.push_str("</tbody></table>");
    if let Some(next) = &page.next {
        let _ = write!(
            out,
            "<div class=\"pager\"><span></span><a href=\"{}?after={}\" rel=\"next\">Next page →</a></div>",
            esc(&repo_href(name)),
            esc(&url_query(next))
        );
    }
    out
}

fn desc_table(name: &str, rows: &[Desc], link: bool, caption: &str) -> String {
    let mut out = format!(
        "<table class=\"stack\"><caption class=\"sr-only\">{}</caption><thead><tr><th scope=\"col\">Digest</th>\
         <th scope=\"col\">Media type</th><th scope=\"col\" class=\"num\">Size</th></tr></thead><tbody>",
        esc(caption)
    );
    for d in rows {
        let digest = if link {
            format!("<a href=\"{}\"><code>{}</code></a>", esc(&manifest_href(name, &d.digest)), esc(short_digest(&d.digest)))
        } else {
            format!("<code title=\"{}\">{}</code>", esc(&d.digest), esc(short_digest(&d.digest)))
        };
        let extra = [d.platform.as_deref(), d.title.as_deref(), d.artifact_type.as_deref()]
            .into_iter()
            .flatten()
            .map(|x| format!(" <span class=\"badge\">{}</span>", esc(x)))
            .collect::<String>();
        let _ = write!(
            out,
            "<tr><td>{digest}{extra}</td><td data-label=\"Media type\" class=\"mono\">{}</td><td class=\"num\" data-label=\"Size\">{}</td></tr>",
            esc(&d.media_type),
            human_size(d.size)
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn command(v: &Option<Vec<String>>) -> String {
    match v {
        Some(parts) if !parts.is_empty() => format!("<code>{}</code>", esc(&serde_json::to_string(parts).unwrap_or_default())),
        _ => "<span class=\"muted\">—</span>".into(),
    }
}

fn config_section(c: &ImageConfig) -> String {
    let mut out = String::from("<h2>Configuration</h2><dl class=\"kv\">");
    let row = |out: &mut String, k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", esc(k));
    };
    let opt = |v: &Option<String>| v.as_deref().map_or_else(|| "<span class=\"muted\">—</span>".to_string(), |s| format!("<code>{}</code>", esc(s)));
    row(&mut out, "Platform", opt(&c.platform));
    row(&mut out, "Created", opt(&c.created));
    row(&mut out, "Entrypoint", command(&c.entrypoint));
    row(&mut out, "Cmd", command(&c.cmd));
    if c.working_dir.is_some() {
        row(&mut out, "Working dir", opt(&c.working_dir));
    }
    if c.user.is_some() {
        row(&mut out, "User", opt(&c.user));
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "<span class=\"muted\">—</span>".to_string()
        } else {
            items.iter().map(|e| format!("<code>{}</code>", esc(e))).collect::<Vec<_>>().join("<br>")
        }
    };
    row(&mut out, "Environment", list(&c.env));
    row(&mut out, "Exposed ports", list(&c.exposed_ports));
    let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    row(&mut out, "Labels", list(&labels));
    out.push_str("</dl>");
    if !c.history.is_empty() {
        out.push_str("<h2>History</h2><ol class=\"history\">");
        for (by, empty) in &c.history {
            let _ = write!(
                out,
                "<li><code>{}</code>{}</li>",
                esc(by),
                if *empty { " <span class=\"badge\">no layer</span>" } else { "" }
            );
        }
        out.push_str("</ol>");
    }
    out
}

/// A manifest: what it is, its pull commands, layers or platforms, config, referrers.
pub fn manifest(ctx: &Ctx<'_>, name: &str, reference: &str, page: &ManifestPage, can_delete: bool) -> String {
    let m = &page.manifest;
    let mut out = String::new();
    let separator = if reference.contains(':') { '@' } else { ':' };
    let _ = write!(out, "<h1>{}{separator}{}</h1>", esc(name), esc(short_digest(reference)));
    out.push_str("<dl class=\"kv\">");
    let _ = write!(out, "<dt>Digest</dt><dd><code>{}</code> {}</dd>", esc(&page.digest), copy_button(&page.digest, "digest", "Copy"));
    let _ = write!(out, "<dt>Kind</dt><dd>{}</dd>", esc(&kind(m)));
    let _ = write!(out, "<dt>Media type</dt><dd class=\"mono\">{}</dd>", esc(&m.media_type));
    if let Some(size) = m.total_size() {
        let _ = write!(out, "<dt>Total size</dt><dd>{} <span class=\"muted\">(config and layers)</span></dd>", human_size(size));
    }
    let _ = write!(out, "<dt>Pushed</dt><dd>{}</dd>", time_tag(page.pushed, ctx.now));
    if let Some(subject) = &m.subject {
        let _ = write!(
            out,
            "<dt>Refers to</dt><dd><a href=\"{}\"><code>{}</code></a></dd>",
            esc(&manifest_href(name, subject)),
            esc(short_digest(subject))
        );
    }
    out.push_str("</dl>");
    out.push_str("<h2>Pull</h2>");
    if !reference.contains(':') {
        out.push_str(&pull_row("by tag", &format!("docker pull {}/{name}:{reference}", ctx.host)));
    }
    out.push_str(&pull_row("by digest", &format!("docker pull {}/{name}@{}", ctx.host, page.digest)));
    if can_delete {
        let (what, label) = if reference.contains(':') { ("manifest", "Delete manifest…") } else { ("tag", "Delete tag…") };
        let _ = write!(
            out,
            "<p><a class=\"button danger\" href=\"/ui/delete?repo={}&amp;ref={}\" aria-label=\"Delete this {what}\">{label}</a></p>",
            esc(&url_query(name)),
            esc(&url_query(reference))
        );
    }
    if m.is_index() {
        out.push_str("<h2>Platforms</h2>");
        out.push_str(&desc_table(name, &m.manifests, true, "Platform manifests"));
    } else {
        if let Some(c) = &m.config {
            out.push_str("<h2>Config</h2>");
            out.push_str(&desc_table(name, std::slice::from_ref(c), false, "Config blob"));
        }
        let _ = write!(out, "<h2>Layers <span class=\"muted\">({})</span></h2>", m.layers.len());
        out.push_str(&desc_table(name, &m.layers, false, "Layers"));
    }
    if let Some(c) = &page.config {
        out.push_str(&config_section(c));
    }
    if !m.annotations.is_empty() {
        out.push_str("<h2>Annotations</h2><dl class=\"kv\">");
        for (k, v) in &m.annotations {
            let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(v));
        }
        out.push_str("</dl>");
    }
    out.push_str("<h2>Referrers</h2>");
    if page.referrers.is_empty() {
        out.push_str("<p class=\"muted\">No signatures, SBOMs or other artifacts refer to this manifest.</p>");
    } else {
        let mut groups: BTreeMap<&str, Vec<Desc>> = BTreeMap::new();
        for r in &page.referrers {
            groups.entry(r.artifact_type.as_deref().unwrap_or("(no artifact type)")).or_default().push(Desc { artifact_type: None, ..r.clone() });
        }
        for (artifact_type, rows) in groups {
            let _ = write!(out, "<h3 class=\"mono\">{}</h3>", esc(artifact_type));
            out.push_str(&desc_table(name, &rows, true, artifact_type));
        }
        if page.more_referrers {
            out.push_str("<p class=\"muted\">More referrers exist than are shown here (see the referrers API).</p>");
        }
    }
    let _ = write!(
        out,
        "<details><summary>Manifest JSON ({})</summary><pre>{}</pre></details>",
        human_size(page.bytes),
        esc(&page.pretty)
    );
    out
}

/// The login form.
pub fn login(next: &str, error: Option<&str>, user: &str) -> String {
    let mut out = String::from("<h1>Log in</h1>");
    if let Some(e) = error {
        let _ = write!(out, "<p class=\"notice error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        out,
        "<form class=\"login\" method=\"post\" action=\"/ui/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>User name<input type=\"text\" name=\"user\" autocomplete=\"username\" value=\"{}\" required autofocus></label>\
         <label>Password<input type=\"password\" name=\"password\" autocomplete=\"current-password\" required></label>\
         <button class=\"primary\" type=\"submit\">Log in</button></form>",
        esc(next),
        esc(user)
    );
    out
}

/// The confirmation before a delete.
pub fn confirm_delete(name: &str, reference: &str, csrf: &str) -> String {
    let what = if reference.contains(':') {
        format!(
            "the manifest <code>{}</code> of <strong>{}</strong>, and every tag pointing at it",
            esc(reference),
            esc(name)
        )
    } else {
        format!(
            "the tag <strong>{}:{}</strong> (the manifest it points at stays, reachable by digest and by any other tag)",
            esc(name),
            esc(reference)
        )
    };
    format!(
        "<h1>Delete?</h1><p class=\"notice error\">This deletes {what}. It cannot be undone.</p>\
         <form method=\"post\" action=\"/ui/delete\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <input type=\"hidden\" name=\"repo\" value=\"{}\"><input type=\"hidden\" name=\"ref\" value=\"{}\">\
         <button class=\"danger solid\" type=\"submit\">Delete</button> <a class=\"button\" href=\"{}\">Cancel</a></form>",
        esc(csrf),
        esc(name),
        esc(reference),
        esc(&manifest_href(name, reference))
    )
}

/// A message page (errors, refusals).
pub fn message(title: &str, text: &str) -> String {
    format!("<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"/\">Back to the repositories</a></p>", esc(title), esc(text))
}

#[cfg(test)]
mod tests {
    use super::super::data::{summarize_manifest, RepoSummary, TagRow};
    use super::*;

    const CTX: Ctx<'static> = Ctx { host: "reg.test:5000", now: 1_700_000_000 };

    #[test]
    fn catalog_lists_searches_and_escapes() {
        let page = CatalogPage {
            repos: vec![RepoSummary { name: "team/app".into(), tags: 3, more_tags: false, pushed: Some(1_700_000_000 - 120) }],
            next: Some("team/app".into()),
            partial: false,
        };
        let html = catalog(&CTX, &page, "a<b", false, false);
        assert!(html.contains("href=\"/ui/r/team/app\""));
        assert!(html.contains("2 min ago"));
        assert!(html.contains("value=\"a&lt;b\""));
        assert!(html.contains("/?q=a%3Cb&amp;after=team%2Fapp"));
        assert!(html.contains("<label class=\"sr-only\" for=\"q\">"));
        let empty = catalog(&CTX, &CatalogPage::default(), "", false, true);
        assert!(empty.contains("without logging in"));
        let none = catalog(&CTX, &CatalogPage { partial: true, ..CatalogPage::default() }, "zz", false, false);
        assert!(none.contains("<strong>zz</strong> so far"));
    }

    #[test]
    fn repository_shows_tags_pull_commands_and_delete_only_when_allowed() {
        let manifest = summarize_manifest(
            br#"{"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":10},"layers":[{"mediaType":"l","digest":"sha256:l","size":2000}]}"#,
            "application/vnd.oci.image.manifest.v1+json",
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let page = TagsPage { pushed: None, tags: vec![TagRow { tag: "v1".into(), digest: digest.clone(), pushed: None, manifest }], next: None };
        let html = repository(&CTX, "team/app", &page, false, Some("Deleted <x>"));
        assert!(html.contains("data-copy=\"docker pull reg.test:5000/team/app:v1\""));
        assert!(html.contains(&format!("data-copy=\"{digest}\"")));
        assert!(html.contains("2.0 kB"));
        assert!(html.contains("Deleted &lt;x&gt;"));
        assert!(!html.contains("/ui/delete"));
        assert!(repository(&CTX, "team/app", &page, true, None).contains("/ui/delete?repo=team%2Fapp&amp;ref=v1"));
    }

    #[test]
    fn manifest_page_shows_config_layers_and_grouped_referrers() {
        let page = ManifestPage {
            digest: "sha256:abc".into(),
            pushed: Some(1),
            bytes: 300,
            manifest: summarize_manifest(
                br#"{"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":10},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l","size":5}],"annotations":{"k":"<v>"}}"#,
                "application/vnd.oci.image.manifest.v1+json",
            ),
            config: Some(ImageConfig { cmd: Some(vec!["/bin/sh".into()]), env: vec!["A=<b>".into()], history: vec![("RUN x".into(), false)], ..ImageConfig::default() }),
            referrers: vec![
                Desc { digest: "sha256:r1".into(), artifact_type: Some("application/vnd.example.sig".into()), ..Desc::default() },
                Desc { digest: "sha256:r2".into(), artifact_type: Some("application/spdx+json".into()), ..Desc::default() },
            ],
            more_referrers: false,
            pretty: "{\"a\": \"</pre>\"}".into(),
        };
        let html = manifest(&CTX, "team/app", "v1", &page, true);
        assert!(html.contains("docker pull reg.test:5000/team/app:v1"));
        assert!(html.contains("docker pull reg.test:5000/team/app@sha256:abc"));
        assert!(html.contains("[&quot;/bin/sh&quot;]"));
        assert!(html.contains("A=&lt;b&gt;"));
        assert!(html.contains("<h3 class=\"mono\">application/spdx+json</h3>"));
        assert!(html.contains("href=\"/ui/r/team/app/-/sha256:r1\""));
        assert!(html.contains("&lt;/pre&gt;"));
        assert!(html.contains("&lt;v&gt;"));
        assert!(html.contains("Delete tag"));
        assert!(!manifest(&CTX, "team/app", "sha256:abc", &page, false).contains("Delete"));
    }

    #[test]
    fn forms_carry_their_hidden_fields_escaped() {
        let html = confirm_delete("team/app", "v1", "to\"ken");
        assert!(html.contains("name=\"csrf\" value=\"to&quot;ken\""));
        assert!(html.contains("name=\"ref\" value=\"v1\""));
        let html = login("/ui/r/a?b=\"c\"", Some("bad <password>"), "al<ice");
        assert!(html.contains("value=\"/ui/r/a?b=&quot;c&quot;\""));
        assert!(html.contains("bad &lt;password&gt;"));
        assert!(html.contains("value=\"al&lt;ice\""));
        assert!(html.contains("<label>Password<input type=\"password\""));
    }
}
