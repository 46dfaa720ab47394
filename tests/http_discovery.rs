//! Listing: tags (with pagination), the catalog, and the referrers API.

mod common;

use common::*;
use serde_json::{json, Value};

/// Pushes one image and tags it with every name in `tags`.
fn push_tags(s: &Server, repo: &str, tags: &[&str]) -> Image {
    let img = push_image(s, repo, tags[0], unique_seed());
    for t in &tags[1..] {
        push_manifest(s, repo, t, OCI_MANIFEST, &img.bytes);
    }
    img
}

#[track_caller]
fn assert_link(r: &Resp, path: &str, n: usize, last: &str) -> String {
    let link = r
        .next_link()
        .unwrap_or_else(|| panic!("{}: expected a Link header; {}", r.desc, r.summary()));
    assert_eq!(path_of(&link), path, "Link {link}");
    let params = query_params(&link);
    let get = |k: &str| {
        params
            .iter()
            .find(|(pk, _)| pk == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("n").as_deref(),
        Some(n.to_string().as_str()),
        "Link {link}"
    );
    assert_eq!(get("last").as_deref(), Some(last), "Link {link}");
    link
}

#[test]
fn tags_list_is_sorted() {
    let s = Server::start();
    let repo = unique("tagsort");
    let tags = [
        "latest", "b", "a", "v1.10", "v1.9", "c", "0", "1.0", "a-b", "a.b",
    ];
    push_tags(&s, &repo, &tags);
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{}",
        r.summary()
    );
    let v = r.json();
    assert_eq!(v["name"], repo.as_str());
    let got = strings(&v["tags"]);
    let mut expected: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(got, expected);
    assert!(
        r.header("link").is_none(),
        "no Link header when everything fits: {}",
        r.summary()
    );
}

#[test]
fn tags_list_pagination() {
    let s = Server::start();
    let repo = unique("tagpage");
    push_tags(&s, &repo, &["e", "d", "c", "b", "a"]);
    let list = format!("/v2/{repo}/tags/list");

    let r = s.get(&format!("{list}?n=2"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["a", "b"]);
    let link = assert_link(&r, &list, 2, "b");

    let r = s.get(&link);
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["c", "d"]);
    let link = assert_link(&r, &list, 2, "d");

    let r = s.get(&link);
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["e"]);
    assert!(
        r.header("link").is_none(),
        "no Link on the last page: {}",
        r.summary()
    );

    // Explicit last.
    let r = s.get(&format!("{list}?n=2&last=b"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["c", "d"]);
    let r = s.get(&format!("{list}?last=b"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["c", "d", "e"]);
    assert!(r.header("link").is_none());
    let r = s.get(&format!("{list}?n=3&last=e"));
    r.expect(200);
    assert!(strings(&r.json()["tags"]).is_empty());
    assert!(r.header("link").is_none());

    // Exactly the number that remain: no further page needed, but if a Link is given, it must lead to an empty page.
    let r = s.get(&format!("{list}?n=5"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["a", "b", "c", "d", "e"]);
    if let Some(link) = r.next_link() {
        let r = s.get(&link);
        r.expect(200);
        assert!(strings(&r.json()["tags"]).is_empty());
    }

    // Larger n than there are tags.
    let r = s.get(&format!("{list}?n=100"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]).len(), 5);
    assert!(r.header("link").is_none());

    // Following every page with n=1 yields everything once, in order.
    let pages = follow_pages(&s, &format!("{list}?n=1"), "tags");
    let all: Vec<String> = pages.into_iter().flatten().collect();
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
}

#[test]
fn tags_list_n_zero_is_empty() {
    let s = Server::start();
    let repo = unique("tagzero");
    push_tags(&s, &repo, &["a", "b"]);
    let r = s.get(&format!("/v2/{repo}/tags/list?n=0"));
    r.expect(200);
    let v = r.json();
    assert_eq!(v["name"], repo.as_str());
    assert!(v.get("tags").is_some(), "tags key must be present: {v}");
    assert_eq!(v["tags"], json!([]), "n=0 gives an empty list: {v}");
    assert!(
        r.header("link").is_none(),
        "n=0 must not include a Link header: {}",
        r.summary()
    );
}

#[test]
fn tags_list_invalid_n() {
    let s = Server::start();
    let repo = unique("tagbadn");
    push_tags(&s, &repo, &["a"]);
    for n in ["abc", "-1", "1.5", ""] {
        let r = s.get(&format!("/v2/{repo}/tags/list?n={n}"));
        if n.is_empty() {
            // An empty n may be treated as absent.
            assert!(r.status == 200 || r.status == 400, "{}", r.summary());
            if r.status == 400 {
                r.expect_error(400, "PAGINATION_NUMBER_INVALID");
            }
            continue;
        }
        r.expect_error(400, "PAGINATION_NUMBER_INVALID");
    }
}

#[test]
fn tags_list_unknown_repository() {
    let s = Server::start();
    let repo = unique("tagnorepo");
    s.get(&format!("/v2/{repo}/tags/list"))
        .expect_error(404, "NAME_UNKNOWN");
}

#[test]
fn tags_list_for_repository_with_only_blobs() {
    let s = Server::start();
    let repo = unique("tagblobonly");
    push_blob(&s, &repo, b"only a blob");
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    // Either the repository exists with no tags, or it is unknown; never a server error.
    if r.status == 200 {
        assert!(strings(&r.json()["tags"]).is_empty());
    } else {
        r.expect_error(404, "NAME_UNKNOWN");
    }
}

#[test]
fn tags_list_nested_repository_name() {
    let s = Server::start();
    let repo = format!("{}/nested/deeper", unique("tagnested"));
    push_tags(&s, &repo, &["x"]);
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(r.json()["name"], repo.as_str());
    assert_eq!(strings(&r.json()["tags"]), ["x"]);
}

#[test]
fn catalog_lists_repositories_sorted_and_paginates() {
    let s = Server::start();
    let prefix = unique("cat");
    let names: Vec<String> = ["c", "a", "b/sub", "b", "d"]
        .iter()
        .map(|n| format!("{prefix}/{n}"))
        .collect();
    for n in &names {
        push_image(&s, n, "latest", unique_seed());
    }
    let mut expected = names.clone();
    expected.sort();

    let r = s.get("/v2/_catalog");
    r.expect(200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("application/json"));
    let all = strings(&r.json()["repositories"]);
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted, "catalog must be sorted");
    let mine: Vec<String> = all
        .iter()
        .filter(|n| n.starts_with(&format!("{prefix}/")))
        .cloned()
        .collect();
    assert_eq!(mine, expected);
    if !external() {
        assert_eq!(all, expected, "a fresh server holds only our repositories");
        assert!(r.header("link").is_none());

        let r = s.get("/v2/_catalog?n=2");
        r.expect(200);
        assert_eq!(strings(&r.json()["repositories"]), &expected[..2]);
        let link = assert_link(&r, "/v2/_catalog", 2, &expected[1]);
        let r = s.get(&link);
        r.expect(200);
        assert_eq!(strings(&r.json()["repositories"]), &expected[2..4]);
        let link = assert_link(&r, "/v2/_catalog", 2, &expected[3]);
        let r = s.get(&link);
        r.expect(200);
        assert_eq!(strings(&r.json()["repositories"]), &expected[4..]);
        assert!(r.header("link").is_none());

        let pages = follow_pages(&s, "/v2/_catalog?n=1", "repositories");
        assert_eq!(pages.len(), expected.len());
        assert_eq!(pages.into_iter().flatten().collect::<Vec<_>>(), expected);

        let r = s.get("/v2/_catalog?n=0");
        r.expect(200);
        assert!(strings(&r.json()["repositories"]).is_empty());
    }
    // `last` continues after the given name.
    let r = s.get(&format!("/v2/_catalog?n=2&last={}", expected[1]));
    r.expect(200);
    assert_eq!(strings(&r.json()["repositories"]), &expected[2..4]);
}

#[test]
fn catalog_of_fresh_server_is_empty() {
    if skip_if_external("catalog_of_fresh_server_is_empty") {
        return;
    }
    let s = Server::start();
    let r = s.get("/v2/_catalog");
    r.expect(200);
    assert_eq!(r.json()["repositories"], json!([]));
}

#[test]
fn catalog_invalid_n() {
    let s = Server::start();
    for n in ["abc", "-2"] {
        s.get(&format!("/v2/_catalog?n={n}"))
            .expect_error(400, "PAGINATION_NUMBER_INVALID");
    }
}

#[track_caller]
fn referrers(s: &Server, repo: &str, digest: &str, query: &str) -> (Resp, Vec<Value>) {
    let r = s.get(&format!("/v2/{repo}/referrers/{digest}{query}"));
    r.expect(200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX), "{}", r.summary());
    let v = r.json();
    assert_eq!(v["schemaVersion"], 2, "{v}");
    assert_eq!(v["mediaType"], OCI_INDEX, "{v}");
    let manifests = v["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("manifests must be an array: {v}"))
        .clone();
    (r, manifests)
}

fn find_desc<'a>(list: &'a [Value], digest: &str) -> Option<&'a Value> {
    list.iter().find(|d| d["digest"] == digest)
}

#[test]
fn referrers_lists_manifests_with_that_subject() {
    let s = Server::start();
    let repo = unique("refs");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let other = push_image(&s, &repo, "v2", unique_seed());
    let subject = img.descriptor();

    // None yet.
    let (_, list) = referrers(&s, &repo, &img.digest, "");
    assert!(list.is_empty(), "{list:?}");

    let ann = json!({"org.opencontainers.image.created": "2024-05-01T00:00:00Z", "org.example.kind": "sig"});
    let (sig, sig_bytes) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sig",
        Some(&subject),
        Some(ann.clone()),
        unique_seed(),
    );
    let (sbom, sbom_bytes) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sbom",
        Some(&subject),
        None,
        unique_seed(),
    );
    // A manifest without artifactType: its config media type is used.
    let cfg = to_bytes(&json!({"custom": true}));
    let cd = push_blob(&s, &repo, &cfg);
    let no_at = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.config.v1+json", &cd, cfg.len()),
        "layers": [],
        "subject": subject,
    }));
    let no_at_digest = sha256(&no_at);
    put_manifest(&s, &repo, &no_at_digest, OCI_MANIFEST, &no_at).expect(201);
    // A referrer of a different subject.
    let (unrelated, _) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sig",
        Some(&other.descriptor()),
        None,
        unique_seed(),
    );

    let (r, list) = referrers(&s, &repo, &img.digest, "");
    assert!(r.header("oci-filters-applied").is_none());
    assert_eq!(list.len(), 3, "{list:?}");
    let d = find_desc(&list, &sig).expect("sig listed");
    assert_eq!(d["mediaType"], OCI_MANIFEST);
    assert_eq!(d["size"], sig_bytes.len());
    assert_eq!(d["artifactType"], "application/vnd.example.sig");
    assert_eq!(d["annotations"], ann);
    let d = find_desc(&list, &sbom).expect("sbom listed");
    assert_eq!(d["size"], sbom_bytes.len());
    assert_eq!(d["artifactType"], "application/vnd.example.sbom");
    let d = find_desc(&list, &no_at_digest).expect("config-typed listed");
    assert_eq!(d["artifactType"], "application/vnd.example.config.v1+json");
    assert_eq!(d["size"], no_at.len());
    assert!(find_desc(&list, &unrelated).is_none());

    let (_, list) = referrers(&s, &repo, &other.digest, "");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], unrelated.as_str());
}

#[test]
fn referrers_artifact_type_filter() {
    let s = Server::start();
    let repo = unique("refsfilter");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let subject = img.descriptor();
    let (sig, _) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sig",
        Some(&subject),
        None,
        unique_seed(),
    );
    let (sbom, _) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sbom",
        Some(&subject),
        None,
        unique_seed(),
    );

    let (r, list) = referrers(
        &s,
        &repo,
        &img.digest,
        "?artifactType=application/vnd.example.sig",
    );
    assert_eq!(
        r.header("oci-filters-applied"),
        Some("artifactType"),
        "{}",
        r.summary()
    );
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], sig.as_str());

    let (r, list) = referrers(
        &s,
        &repo,
        &img.digest,
        "?artifactType=application%2Fvnd.example.sbom",
    );
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sbom.as_str());

    let (r, list) = referrers(&s, &repo, &img.digest, "?artifactType=application/vnd.none");
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    assert!(list.is_empty());
}

#[test]
fn referrers_for_unknown_subject_is_empty_200() {
    let s = Server::start();
    let repo = unique("refsnone");
    push_image(&s, &repo, "v1", unique_seed());
    let (_, list) = referrers(&s, &repo, &sha256(b"nothing refers to this"), "");
    assert!(list.is_empty());
}

#[test]
fn referrers_of_a_subject_that_was_never_pushed() {
    let s = Server::start();
    let repo = unique("refsdangling");
    let missing = descriptor(OCI_MANIFEST, &sha256(b"dangling subject"), 42);
    let (art, _) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sig",
        Some(&missing),
        None,
        unique_seed(),
    );
    let (_, list) = referrers(&s, &repo, &sha256(b"dangling subject"), "");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], art.as_str());
}

#[test]
fn referrers_include_indexes() {
    let s = Server::start();
    let repo = unique("refsindex");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let child = push_image(&s, &repo, "child", unique_seed());
    let bytes = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.descriptor()],
        "subject": img.descriptor(),
    }));
    let d = sha256(&bytes);
    put_manifest(&s, &repo, &d, OCI_INDEX, &bytes).expect(201);
    let (_, list) = referrers(&s, &repo, &img.digest, "");
    let desc = find_desc(&list, &d).expect("index listed");
    assert_eq!(desc["mediaType"], OCI_INDEX);
    assert_eq!(desc["artifactType"], "application/vnd.example.bundle");
    assert_eq!(desc["size"], bytes.len());
}

#[test]
fn referrers_are_scoped_to_the_repository() {
    let s = Server::start();
    let a = unique("refsscope-a");
    let b = unique("refsscope-b");
    let img = push_image(&s, &a, "v1", unique_seed());
    push_image(&s, &b, "v1", unique_seed());
    push_artifact(
        &s,
        &a,
        "application/vnd.example.sig",
        Some(&img.descriptor()),
        None,
        unique_seed(),
    );
    let (_, list) = referrers(&s, &b, &img.digest, "");
    assert!(list.is_empty());
}

#[test]
fn referrers_invalid_digest_is_400() {
    let s = Server::start();
    let repo = unique("refsbad");
    push_image(&s, &repo, "v1", unique_seed());
    for bad in ["latest", "sha256:xyz", "sha256:", "sha256:ABC"] {
        let r = s.get(&format!("/v2/{repo}/referrers/{bad}"));
        r.expect(400);
        r.error_codes();
    }
}

#[test]
fn referrer_index_without_artifact_type_has_none() {
    let s = Server::start();
    let repo = unique("refsidxnoat");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let child = push_image(&s, &repo, "child", unique_seed());
    let bytes = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [child.descriptor()],
        "subject": img.descriptor(),
        "annotations": {"org.example.a": "1"},
    }));
    let d = sha256(&bytes);
    put_manifest(&s, &repo, &d, OCI_INDEX, &bytes).expect(201);
    let (_, list) = referrers(&s, &repo, &img.digest, "");
    let desc = find_desc(&list, &d).expect("index listed");
    assert!(
        desc.get("artifactType")
            .map(|v| v.is_null() || v == "")
            .unwrap_or(true),
        "{desc}"
    );
    assert_eq!(desc["annotations"], json!({"org.example.a": "1"}));
}

#[test]
fn tags_list_last_need_not_be_an_existing_tag() {
    let s = Server::start();
    let repo = unique("taglastgap");
    push_tags(&s, &repo, &["a", "bb", "c"]);
    let r = s.get(&format!("/v2/{repo}/tags/list?last=b"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["bb", "c"]);
    let r = s.get(&format!("/v2/{repo}/tags/list?n=1&last=b"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["bb"]);
    assert_link(&r, &format!("/v2/{repo}/tags/list"), 1, "bb");
}

/// Many referrers come in pages of a bounded size (one list call and one read per referrer each), linked with
/// `Link: <…>; rel="next"`; following the links lists every referrer exactly once, with the filter carried along.
#[test]
fn referrers_are_paginated_with_link_headers() {
    let s = Server::start();
    let repo = unique("refpages");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let subject = img.descriptor();
    let mut pushed = std::collections::BTreeSet::new();
    for i in 0..37 {
        let kind = if i % 3 == 0 { "application/vnd.example.sbom" } else { "application/vnd.example.sig" };
        let (d, _) = push_artifact(&s, &repo, kind, Some(&subject), None, unique_seed() ^ i);
        pushed.insert(d);
    }
    let walk = |query: &str| {
        let mut seen = Vec::new();
        let mut next = Some(format!("/v2/{repo}/referrers/{}{query}", img.digest));
        let mut pages = 0;
        while let Some(target) = next.take() {
            let r = s.get(&target);
            r.expect(200);
            let v = r.json();
            let list = v["manifests"].as_array().expect("manifests").clone();
            assert!(list.len() <= 32, "a page holds at most 32 referrers, got {}", list.len());
            seen.extend(list.iter().map(|d| d["digest"].as_str().unwrap().to_string()));
            if let Some(link) = r.header("link") {
                let start = link.find('<').unwrap() + 1;
                let end = link.find('>').unwrap();
                assert!(link.ends_with("rel=\"next\""), "{link}");
                next = Some(link[start..end].to_string());
            }
            pages += 1;
            assert!(pages < 10, "pagination does not end");
        }
        (seen, pages)
    };
    let (seen, pages) = walk("");
    assert!(pages >= 2, "37 referrers fit no single page");
    let unique: std::collections::BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no referrer listed twice");
    assert_eq!(unique, pushed);
    let (sboms, _) = walk("?artifactType=application/vnd.example.sbom");
    assert_eq!(sboms.len(), 13, "{sboms:?}");
    let (few, _) = walk("?n=5");
    assert_eq!(few.len(), 37);
}
