//! Blob pulls (GET/HEAD, ranges), repository isolation, cross-repository mounts and digest algorithms.

mod common;

use common::*;

#[test]
fn get_and_head_blob() {
    let s = Server::start();
    let repo = unique("blobget");
    let data = random_bytes(unique_seed(), 5000);
    let d = push_blob(&s, &repo, &data);

    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data, "body must be exact");
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));

    let r = s.head(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("5000"));
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
}

#[test]
fn head_blob_body_is_empty_on_the_wire() {
    let s = Server::start();
    if !s.base.starts_with("http://") {
        return;
    }
    let repo = unique("blobheadraw");
    let d = push_blob(&s, &repo, b"0123456789");
    let r = s.raw("HEAD", &format!("/v2/{repo}/blobs/{d}"), &[], b"");
    r.expect(200);
    assert_eq!(r.header("content-length"), Some("10"));
}

#[test]
fn unknown_blob_is_404() {
    let s = Server::start();
    let repo = unique("blobunknown");
    push_blob(&s, &repo, b"something else");
    let d = sha256(b"never pushed");
    s.get(&format!("/v2/{repo}/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    let r = s.head(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(404);
    assert!(r.body.is_empty());
    // A repository that does not exist at all.
    let other = unique("blobunknown-norepo");
    let r = s.get(&format!("/v2/{other}/blobs/{d}"));
    r.expect(404);
    let codes = r.error_codes();
    assert!(
        codes
            .iter()
            .any(|c| c == "BLOB_UNKNOWN" || c == "NAME_UNKNOWN"),
        "{codes:?}"
    );
}

#[test]
fn blob_get_with_malformed_digest_is_rejected() {
    let s = Server::start();
    let repo = unique("blobbaddigest");
    push_blob(&s, &repo, b"x");
    for bad in [
        "sha256:xyz",
        "sha256:ABCDEF",
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "nocolon",
    ] {
        let r = s.get(&format!("/v2/{repo}/blobs/{bad}"));
        assert!(r.status == 400 || r.status == 404, "{}", r.summary());
        let codes = r.error_codes();
        assert!(
            codes
                .iter()
                .any(|c| c == "DIGEST_INVALID" || c == "BLOB_UNKNOWN"),
            "{bad}: {codes:?}"
        );
    }
    let upper = format!("sha256:{}", "A".repeat(64));
    let r = s.get(&format!("/v2/{repo}/blobs/{upper}"));
    assert!(r.status == 400 || r.status == 404, "{}", r.summary());
}

#[test]
fn range_requests() {
    let s = Server::start();
    let repo = unique("blobrange");
    let data = random_bytes(unique_seed(), 100);
    let d = push_blob(&s, &repo, &data);
    let path = format!("/v2/{repo}/blobs/{d}");

    let r = s.get_h(&path, &[("Range", "bytes=0-9")]);
    r.expect(206);
    assert_eq!(r.body, &data[0..10]);
    assert_eq!(r.header("content-range"), Some("bytes 0-9/100"));
    assert_eq!(r.header("content-length"), Some("10"));

    let r = s.get_h(&path, &[("Range", "bytes=10-19")]);
    r.expect(206);
    assert_eq!(r.body, &data[10..20]);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));

    // Suffix range: the last 5 bytes.
    let r = s.get_h(&path, &[("Range", "bytes=-5")]);
    r.expect(206);
    assert_eq!(r.body, &data[95..]);
    assert_eq!(r.header("content-range"), Some("bytes 95-99/100"));

    // Open range: from 5 to the end.
    let r = s.get_h(&path, &[("Range", "bytes=5-")]);
    r.expect(206);
    assert_eq!(r.body, &data[5..]);
    assert_eq!(r.header("content-range"), Some("bytes 5-99/100"));

    // An end beyond the size is clamped.
    let r = s.get_h(&path, &[("Range", "bytes=90-1000")]);
    r.expect(206);
    assert_eq!(r.body, &data[90..]);
    assert_eq!(r.header("content-range"), Some("bytes 90-99/100"));

    // Unsatisfiable.
    let r = s.get_h(&path, &[("Range", "bytes=100-")]);
    r.expect(416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
    let r = s.get_h(&path, &[("Range", "bytes=200-300")]);
    r.expect(416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
}

#[test]
fn blob_get_advertises_or_ignores_ranges_without_error() {
    let s = Server::start();
    let repo = unique("blobaccept");
    let data = random_bytes(unique_seed(), 64);
    let d = push_blob(&s, &repo, &data);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    if let Some(ar) = r.header("accept-ranges") {
        assert_eq!(ar, "bytes");
    }
}

#[test]
fn blobs_are_scoped_to_their_repository() {
    let s = Server::start();
    let a = unique("scope-a");
    let b = unique("scope-b");
    let data = random_bytes(unique_seed(), 200);
    let d = push_blob(&s, &a, &data);
    // Make repo b exist.
    push_blob(&s, &b, b"other");
    s.get(&format!("/v2/{b}/blobs/{d}"))
        .expect_error(404, "BLOB_UNKNOWN");
    s.head(&format!("/v2/{b}/blobs/{d}")).expect(404);
    // After pushing it to b too, it is visible there.
    push_blob(&s, &b, &data);
    let r = s.get(&format!("/v2/{b}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn cross_repository_mount() {
    let s = Server::start();
    let a = unique("mount-a");
    let b = unique("mount-b");
    let data = random_bytes(unique_seed(), 1234);
    let d = push_blob(&s, &a, &data);

    let r = s.post(&format!("/v2/{b}/blobs/uploads/?mount={d}&from={a}"));
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let loc = r.location(&s);
    assert!(
        path_of(&loc).ends_with(&format!("/v2/{b}/blobs/{d}")),
        "Location {loc}"
    );
    let r = s.get(&format!("/v2/{b}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
    // Still in a.
    s.head(&format!("/v2/{a}/blobs/{d}")).expect(200);
}

#[test]
fn cross_repository_mount_with_escaped_colon() {
    let s = Server::start();
    let a = unique("mountesc-a");
    let b = unique("mountesc-b");
    let data = random_bytes(unique_seed(), 99);
    let d = push_blob(&s, &a, &data);
    let escaped = d.replace(':', "%3A");
    let r = s.post(&format!("/v2/{b}/blobs/uploads/?from={a}&mount={escaped}"));
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    r.must_header("location");
    let r = s.get(&format!("/v2/{b}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn mount_of_missing_blob_starts_a_normal_session() {
    let s = Server::start();
    let a = unique("mountmiss-a");
    let b = unique("mountmiss-b");
    push_blob(&s, &a, b"present");
    let missing = random_bytes(unique_seed(), 50);
    let d = sha256(&missing);
    let r = s.post(&format!("/v2/{b}/blobs/uploads/?mount={d}&from={a}"));
    r.expect(202);
    let loc = r.location(&s);
    r.must_header("docker-upload-uuid");
    // The blob was not mounted.
    s.head(&format!("/v2/{b}/blobs/{d}")).expect(404);
    // The session is usable.
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), &missing)
        .expect(201);
    let r = s.get(&format!("/v2/{b}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, missing);

    // A blob that exists in another repository but not in `from` is not mounted either.
    let c = unique("mountmiss-c");
    let only_b = random_bytes(unique_seed(), 51);
    let d2 = push_blob(&s, &b, &only_b);
    let r = s.post(&format!("/v2/{c}/blobs/uploads/?mount={d2}&from={a}"));
    r.expect(202);
    s.head(&format!("/v2/{c}/blobs/{d2}")).expect(404);
}

#[test]
fn mount_from_unknown_or_invalid_repository_does_not_fail() {
    let s = Server::start();
    let b = unique("mountunk-b");
    let d = sha256(b"whatever");
    let nowhere = unique("mountunk-nowhere");
    let r = s.post(&format!("/v2/{b}/blobs/uploads/?mount={d}&from={nowhere}"));
    r.expect(202);
    let r = s.post(&format!("/v2/{b}/blobs/uploads/?mount={d}&from=NOT..VALID"));
    assert!(r.status == 202 || r.status == 400, "{}", r.summary());
    if r.status == 400 {
        r.error_codes();
    }
}

#[test]
fn sha512_single_shot_and_monolithic() {
    let s = Server::start();
    let repo = unique("sha512");
    let data = random_bytes(unique_seed(), 3000);
    let d = sha512(&data);
    assert_eq!(d.len(), "sha512:".len() + 128);

    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d}"), &data);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = s.get_h(&format!("/v2/{repo}/blobs/{d}"), &[("Range", "bytes=0-9")]);
    r.expect(206);
    assert_eq!(r.body, &data[..10]);

    let data2 = random_bytes(unique_seed(), 2000);
    let d2 = sha512(&data2);
    let loc = start_upload(&s, &repo);
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d2}")), &data2);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d2.as_str()));
    s.head(&format!("/v2/{repo}/blobs/{d2}")).expect(200);

    // Wrong sha512.
    let wrong = sha512(b"other");
    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={wrong}"), &data);
    r.expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/blobs/{wrong}")).expect(404);
}

#[test]
fn empty_blob() {
    let s = Server::start();
    let repo = unique("emptyblob");
    let d = sha256(b"");
    let loc = start_upload(&s, &repo);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"")
        .expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("0"));
    let r = s.head(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.header("content-length"), Some("0"));
}

#[test]
fn repushing_an_existing_blob_is_fine() {
    let s = Server::start();
    let repo = unique("repush");
    let data = random_bytes(unique_seed(), 777);
    let d1 = push_blob(&s, &repo, &data);
    let d2 = push_blob(&s, &repo, &data);
    assert_eq!(d1, d2);
    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d1}"), &data);
    r.expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d1}"));
    r.expect(200);
    assert_eq!(r.body, data);
}
