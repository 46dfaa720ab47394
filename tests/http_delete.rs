//! Deletes: manifests by digest and by tag, blobs, referrers of deleted manifests, and `--no-delete`.

mod common;

use common::*;

#[test]
fn delete_manifest_by_digest_removes_it_and_its_tags() {
    let s = Server::start();
    let repo = unique("delmf");
    let a = push_image(&s, &repo, "one", unique_seed());
    push_manifest(&s, &repo, "three", OCI_MANIFEST, &a.bytes);
    let b = push_image(&s, &repo, "two", unique_seed());

    s.delete(&format!("/v2/{repo}/manifests/{}", a.digest))
        .expect(202);
    s.get(&format!("/v2/{repo}/manifests/{}", a.digest))
        .expect_error(404, "MANIFEST_UNKNOWN");
    s.head(&format!("/v2/{repo}/manifests/{}", a.digest))
        .expect(404);
    s.get(&format!("/v2/{repo}/manifests/one"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    s.get(&format!("/v2/{repo}/manifests/three"))
        .expect_error(404, "MANIFEST_UNKNOWN");

    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["two"]);
    // The other manifest is untouched.
    s.get(&format!("/v2/{repo}/manifests/{}", b.digest))
        .expect(200);
    s.get(&format!("/v2/{repo}/manifests/two")).expect(200);

    // Deleting again is 404.
    s.delete(&format!("/v2/{repo}/manifests/{}", a.digest))
        .expect_error(404, "MANIFEST_UNKNOWN");
    // And it can be pushed again.
    push_manifest(&s, &repo, "one", OCI_MANIFEST, &a.bytes);
    s.get(&format!("/v2/{repo}/manifests/one")).expect(200);
}

#[test]
fn delete_by_tag_only_untags() {
    let s = Server::start();
    let repo = unique("deltag");
    let img = push_image(&s, &repo, "keep", unique_seed());
    push_manifest(&s, &repo, "drop", OCI_MANIFEST, &img.bytes);
    s.delete(&format!("/v2/{repo}/manifests/drop")).expect(202);
    s.get(&format!("/v2/{repo}/manifests/drop"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    let r = s.get(&format!("/v2/{repo}/manifests/{}", img.digest));
    r.expect(200);
    assert_eq!(r.body, img.bytes);
    s.get(&format!("/v2/{repo}/manifests/keep")).expect(200);
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    r.expect(200);
    assert_eq!(strings(&r.json()["tags"]), ["keep"]);
    // Unknown tag.
    s.delete(&format!("/v2/{repo}/manifests/drop"))
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn delete_blob() {
    let s = Server::start();
    let repo = unique("delblob");
    let data = random_bytes(unique_seed(), 400);
    let d = push_blob(&s, &repo, &data);
    let keep = push_blob(&s, &repo, b"keep me");
    s.delete(&format!("/v2/{repo}/blobs/{d}")).expect(202);
    s.get(&format!("/v2/{repo}/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    s.head(&format!("/v2/{repo}/blobs/{d}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{keep}")).expect(200);
    s.delete(&format!("/v2/{repo}/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    // It can be pushed again.
    push_blob(&s, &repo, &data);
    assert_eq!(s.get(&format!("/v2/{repo}/blobs/{d}")).body, data);
}

#[test]
fn delete_blob_in_one_repository_leaves_others() {
    let s = Server::start();
    let a = unique("delblobscope-a");
    let b = unique("delblobscope-b");
    let data = random_bytes(unique_seed(), 300);
    let d = push_blob(&s, &a, &data);
    s.post(&format!("/v2/{b}/blobs/uploads/?mount={d}&from={a}"))
        .expect(201);
    s.delete(&format!("/v2/{a}/blobs/{d}")).expect(202);
    s.head(&format!("/v2/{a}/blobs/{d}")).expect(404);
    let r = s.get(&format!("/v2/{b}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn delete_unknown_things() {
    let s = Server::start();
    let repo = unique("delunknown");
    push_image(&s, &repo, "v1", unique_seed());
    let d = sha256(b"never existed");
    s.delete(&format!("/v2/{repo}/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    s.delete(&format!("/v2/{repo}/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    s.delete(&format!("/v2/{repo}/manifests/nosuchtag"))
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn referrers_of_deleted_manifest_disappear() {
    let s = Server::start();
    let repo = unique("delrefs");
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

    let r = s.get(&format!("/v2/{repo}/referrers/{}", img.digest));
    r.expect(200);
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 2);

    s.delete(&format!("/v2/{repo}/manifests/{sig}")).expect(202);
    let r = s.get(&format!("/v2/{repo}/referrers/{}", img.digest));
    r.expect(200);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["digest"], sbom.as_str());
}

#[test]
fn deleting_the_subject_keeps_the_referrers_api_working() {
    let s = Server::start();
    let repo = unique("delsubject");
    let img = push_image(&s, &repo, "v1", unique_seed());
    let (sig, _) = push_artifact(
        &s,
        &repo,
        "application/vnd.example.sig",
        Some(&img.descriptor()),
        None,
        unique_seed(),
    );
    s.delete(&format!("/v2/{repo}/manifests/{}", img.digest))
        .expect(202);
    let r = s.get(&format!("/v2/{repo}/referrers/{}", img.digest));
    r.expect(200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    // The referrer itself still exists.
    s.head(&format!("/v2/{repo}/manifests/{sig}")).expect(200);
}

#[test]
fn no_delete_flag_disables_deletes() {
    if skip_if_external("no_delete_flag_disables_deletes") {
        return;
    }
    let s = Server::start_with(&["--no-delete"]);
    let repo = unique("nodelete");
    let img = push_image(&s, &repo, "v1", unique_seed());
    s.delete(&format!("/v2/{repo}/manifests/{}", img.digest))
        .expect_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/{repo}/manifests/v1"))
        .expect_error(405, "UNSUPPORTED");
    s.delete(&format!("/v2/{repo}/blobs/{}", img.layer))
        .expect_error(405, "UNSUPPORTED");
    // Nothing was deleted.
    s.get(&format!("/v2/{repo}/manifests/v1")).expect(200);
    s.get(&format!("/v2/{repo}/manifests/{}", img.digest))
        .expect(200);
    s.get(&format!("/v2/{repo}/blobs/{}", img.layer))
        .expect(200);
    // Cancelling an upload session is still allowed (it deletes no content).
    let loc = start_upload(&s, &repo);
    let r = s.delete(&loc);
    assert!(r.status == 204 || r.status == 405, "{}", r.summary());
}

#[test]
fn tags_list_after_deleting_every_tag() {
    let s = Server::start();
    let repo = unique("delalltags");
    let img = push_image(&s, &repo, "only", unique_seed());
    s.delete(&format!("/v2/{repo}/manifests/only")).expect(202);
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    if r.status == 200 {
        assert!(strings(&r.json()["tags"]).is_empty(), "{}", r.summary());
    } else {
        r.expect_error(404, "NAME_UNKNOWN");
    }
    s.get(&format!("/v2/{repo}/manifests/{}", img.digest))
        .expect(200);
}

/// Reads first (where the registry has a read cache — Workers — they fill it), then deletes and a moved tag: every
/// later read sees the change at once.
#[test]
fn deletes_and_tag_moves_are_seen_right_after_cached_reads() {
    let s = Server::start();
    let repo = unique("delcache");
    let a = push_image(&s, &repo, "t", unique_seed());
    let b = push_image(&s, &repo, "other", unique_seed());
    let stats = || s.get("/admin/cache").json();
    let before = stats();
    for _ in 0..3 {
        s.get(&format!("/v2/{repo}/manifests/{}", a.digest)).expect(200);
        s.head(&format!("/v2/{repo}/blobs/{}", a.layer)).expect(200);
        assert_eq!(s.get(&format!("/v2/{repo}/manifests/t")).header("docker-content-digest"), Some(a.digest.as_str()));
    }
    if let (Some(x), Some(y)) = (before["memory_hits"].as_u64(), stats()["memory_hits"].as_u64()) {
        assert!(y >= x + 4, "repeated reads were answered from the cache ({x} -> {y})");
    }

    // The tag moves: the next read by tag follows it.
    push_manifest(&s, &repo, "t", OCI_MANIFEST, &b.bytes);
    assert_eq!(s.get(&format!("/v2/{repo}/manifests/t")).header("docker-content-digest"), Some(b.digest.as_str()));

    s.delete(&format!("/v2/{repo}/blobs/{}", a.layer)).expect(202);
    s.head(&format!("/v2/{repo}/blobs/{}", a.layer)).expect(404);
    s.get(&format!("/v2/{repo}/blobs/{}", a.layer)).expect_error(404, "BLOB_UNKNOWN");
    s.delete(&format!("/v2/{repo}/manifests/{}", a.digest)).expect(202);
    s.get(&format!("/v2/{repo}/manifests/{}", a.digest)).expect_error(404, "MANIFEST_UNKNOWN");
    s.head(&format!("/v2/{repo}/manifests/{}", a.digest)).expect(404);

    // Deleted by tag: gone from reads by tag at once.
    s.delete(&format!("/v2/{repo}/manifests/t")).expect(202);
    s.get(&format!("/v2/{repo}/manifests/t")).expect_error(404, "MANIFEST_UNKNOWN");
}
