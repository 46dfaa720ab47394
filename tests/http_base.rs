//! Base endpoint, the API-version header, error body shape, repository-name validation and garbage input.

mod common;

use common::*;

#[test]
fn base_endpoint_returns_200_with_api_version() {
    let s = Server::start();
    let r = s.get("/v2/");
    r.expect(200);
    assert_eq!(
        r.header("docker-distribution-api-version"),
        Some("registry/2.0")
    );
    let r = s.head("/v2/");
    r.expect(200);
    assert!(r.body.is_empty());
}

#[test]
fn base_endpoint_without_trailing_slash_is_not_a_server_error() {
    let s = Server::start();
    let r = s.get("/v2");
    assert!(r.status < 500, "{}", r.summary());
}

#[test]
fn error_body_shape_and_content_type() {
    let s = Server::start();
    let repo = unique("errshape");
    let r = s.get(&format!("/v2/{repo}/manifests/nope"));
    r.expect_error(404, "MANIFEST_UNKNOWN");
    let ct = r.must_header("content-type");
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let v = r.json();
    let e = &v["errors"][0];
    assert_eq!(e["code"], "MANIFEST_UNKNOWN");
    assert!(e["message"].is_string());
}

#[test]
fn api_version_header_on_errors_and_404s() {
    // `Server::request` asserts the header on every response; this test just makes a spread of failing requests.
    let s = Server::start();
    let repo = unique("apiver");
    let zero = format!("sha256:{}", "0".repeat(64));
    s.get(&format!("/v2/{repo}/blobs/{zero}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{zero}")).expect(404);
    s.get(&format!("/v2/{repo}/manifests/latest")).expect(404);
    s.head(&format!("/v2/{repo}/manifests/latest")).expect(404);
    s.get(&format!("/v2/{repo}/tags/list")).expect(404);
    s.get("/v2/UPPER/tags/list").expect(400);
    s.get("/definitely/not/a/registry/path").expect(404);
    s.put_bytes(&format!("/v2/{repo}/manifests/latest"), b"not json")
        .expect_client_error();
}

#[test]
fn unknown_paths_are_404_with_oci_error() {
    let s = Server::start();
    let repo = unique("unknownpath");
    for path in [
        "/nope".to_string(),
        "/v1/".to_string(),
        "/v2/_nothing_here".to_string(),
        format!("/v2/{repo}/whatever/x"),
        format!("/v2/{repo}/blobs"),
        format!("/v2/{repo}/tags/other"),
    ] {
        let r = s.get(&path);
        assert!(r.status < 500, "{}", r.summary());
        assert!(
            r.status == 404 || r.status == 400 || r.status == 405,
            "{path}: {}",
            r.summary()
        );
        r.error_codes();
    }
    let r = s.get("/nope");
    r.expect(404);
}

fn assert_name_invalid(r: &Resp) {
    r.expect_error(400, "NAME_INVALID");
}

#[test]
fn invalid_repository_names_are_name_invalid() {
    let s = Server::start();
    let long = "a".repeat(300);
    let names = [
        "UPPER",
        "Upper/case",
        "a//b",
        "abc-",
        "-abc",
        "abc_",
        "foo..bar",
        "a/b/",
        "a___b",
        &long,
    ];
    for name in names {
        assert_name_invalid(&s.get(&format!("/v2/{name}/tags/list")));
        assert_name_invalid(&s.get(&format!("/v2/{name}/manifests/latest")));
        assert_name_invalid(&s.post(&format!("/v2/{name}/blobs/uploads/")));
        assert_name_invalid(&s.get(&format!("/v2/{name}/blobs/{EMPTY_DIGEST}")));
    }
}

#[test]
fn name_with_dot_dot_segment_is_name_invalid() {
    let s = Server::start();
    if !s.base.starts_with("http://") {
        return;
    }
    // Sent raw: a URL parser would remove the `..` segment. Edge runtimes (workerd) normalise dot segments before
    // the registry sees the path, so there `/v2/a/../b/...` is simply repository `b`: never a way out of `/v2/`.
    let normalising = external();
    for (method, path) in [
        ("GET", "/v2/a/../b/tags/list"),
        ("GET", "/v2/../tags/list"),
        ("POST", "/v2/a/./b/blobs/uploads/"),
    ] {
        let r = s.raw(method, path, &[], b"");
        if normalising && r.status != 400 {
            assert!(r.status == 404 || r.status == 202, "{path}: {}", r.summary());
        } else {
            assert_name_invalid(&r);
        }
    }
}

#[test]
fn name_length_limit() {
    let s = Server::start();
    // Host + "/" + name must stay within 255 characters: a 200-character name (in path components) is fine.
    let ok = format!("{}/{}", "a".repeat(100), "b".repeat(99));
    let d = push_blob(&s, &ok, b"hello");
    s.head(&format!("/v2/{ok}/blobs/{d}")).expect(200);
    let too_long = format!("{}/{}", "a".repeat(150), "b".repeat(150));
    assert_name_invalid(&s.post(&format!("/v2/{too_long}/blobs/uploads/")));
}

#[test]
fn valid_names_with_separators_are_accepted() {
    let s = Server::start();
    let base = unique("sep");
    for name in [
        format!("{base}/a.b"),
        format!("{base}/a_b"),
        format!("{base}/a__b"),
        format!("{base}/a-b"),
        format!("{base}/a--b"),
        format!("{base}/x/y/z/0"),
    ] {
        let d = push_blob(&s, &name, name.as_bytes());
        s.get(&format!("/v2/{name}/blobs/{d}")).expect(200);
    }
}

#[test]
fn garbage_requests_never_cause_server_errors() {
    let s = Server::start();
    let repo = unique("garbage");
    let data = b"some blob data".to_vec();
    let digest = push_blob(&s, &repo, &data);
    let img = push_image(&s, &repo, "latest", unique_seed());
    let loc = start_upload(&s, &repo);

    let mut cases: Vec<Resp> = vec![
        // Bad Content-Range values on PATCH.
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "abc")],
            Body::Bytes(b"xyz"),
        ),
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "5-2")],
            Body::Bytes(b"xyz"),
        ),
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "0-")],
            Body::Bytes(b"xyz"),
        ),
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "-1-2")],
            Body::Bytes(b"xyz"),
        ),
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "0-99999999999999999999999")],
            Body::Bytes(b"xyz"),
        ),
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "bytes 0-2/3")],
            Body::Bytes(b"xyz"),
        ),
        // Content-Range that disagrees with the body length.
        s.request(
            "PATCH",
            &loc,
            &[("Content-Range", "0-9")],
            Body::Bytes(b"xyz"),
        ),
        // PUT without a digest.
        s.put_bytes(&loc, b""),
        // Empty / odd digests.
        s.put_bytes(&with_query(&loc, "digest="), b""),
        s.put_bytes(&with_query(&loc, "digest=sha256%3Azz"), b""),
        s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest=:"), b"x"),
        s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest=sha256:"), b"x"),
        // Unknown sessions.
        s.patch_bytes(&format!("/v2/{repo}/blobs/uploads/does-not-exist"), b"abc"),
        s.put_bytes(
            &format!("/v2/{repo}/blobs/uploads/does-not-exist?digest={digest}"),
            &data,
        ),
        s.get(&format!("/v2/{repo}/blobs/uploads/%00%ff")),
        // Broken blob / manifest references.
        s.get(&format!("/v2/{repo}/blobs/sha256:")),
        s.get(&format!("/v2/{repo}/blobs/:")),
        s.get(&format!("/v2/{repo}/blobs/notadigest")),
        s.get(&format!("/v2/{repo}/manifests/sha256:zz")),
        s.get(&format!("/v2/{repo}/manifests/%ff%fe")),
        s.delete(&format!("/v2/{repo}/blobs/notadigest")),
        s.delete(&format!("/v2/{repo}/manifests/sha256:zz")),
        s.get(&format!("/v2/{repo}/referrers/notadigest")),
        // Garbage ranges on blob GET.
        s.get_h(
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Range", "bytes=9-2")],
        ),
        s.get_h(
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Range", "bytes=abc")],
        ),
        s.get_h(
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Range", "lines=0-1")],
        ),
        s.get_h(
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Range", "bytes=99999999999999999999999-")],
        ),
        // Pagination garbage.
        s.get(&format!("/v2/{repo}/tags/list?n=abc")),
        s.get(&format!("/v2/{repo}/tags/list?n=-1")),
        s.get(&format!("/v2/{repo}/tags/list?n=99999999999999999999999")),
        s.get("/v2/_catalog?n=abc"),
        s.get("/v2/_catalog?n=%ff"),
        // Manifests that are not manifests.
        put_manifest(&s, &repo, "t1", OCI_MANIFEST, b""),
        put_manifest(&s, &repo, "t2", OCI_MANIFEST, b"[]"),
        put_manifest(
            &s,
            &repo,
            "t3",
            OCI_MANIFEST,
            b"{\"schemaVersion\":\"two\"}",
        ),
        put_manifest(
            &s,
            &repo,
            "t4",
            OCI_MANIFEST,
            b"{\"schemaVersion\":2,\"config\":{\"digest\":42}}",
        ),
        put_manifest(
            &s,
            &repo,
            "t5",
            "text/plain",
            &img.bytes[..img.bytes.len() / 2],
        ),
        put_manifest(
            &s,
            &repo,
            "t6",
            OCI_INDEX,
            b"{\"schemaVersion\":2,\"manifests\":{}}",
        ),
        // Methods that make no sense.
        s.request(
            "PATCH",
            &format!("/v2/{repo}/manifests/latest"),
            &[],
            Body::Bytes(b"x"),
        ),
        s.request(
            "POST",
            &format!("/v2/{repo}/tags/list"),
            &[],
            Body::Bytes(b"x"),
        ),
        s.request(
            "PUT",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            Body::Bytes(b"x"),
        ),
        s.request("DELETE", "/v2/", &[], Body::None),
        s.request(
            "POST",
            &format!("/v2/{repo}/blobs/uploads/?mount=garbage&from=UPPER"),
            &[],
            Body::None,
        ),
    ];
    // Raw requests (bypass URL normalisation and header validation in the client).
    if s.base.starts_with("http://") {
        cases.push(s.raw("GET", "/v2/%2e%2e/tags/list", &[], b""));
        cases.push(s.raw(
            "GET",
            &format!("/v2/{repo}/tags/list?n=1&n=2&last=%ff"),
            &[],
            b"",
        ));
        cases.push(s.raw(
            "GET",
            &format!("/v2/{repo}/blobs/{digest}"),
            &[("Range", "bytes=")],
            b"",
        ));
        cases.push(s.raw("PATCH", &format!("/v2/{repo}/blobs/uploads/"), &[], b"abc"));
        cases.push(s.raw("PUT", &format!("/v2/{repo}/manifests/"), &[], b"{}"));
        cases.push(s.raw("GET", "/v2/_catalog?last=%", &[], b""));
    }

    for r in cases.iter_mut() {
        assert!(
            r.status < 500,
            "server error for garbage: {}: {}",
            r.desc,
            r.summary()
        );
        if r.status >= 400 && r.status != 416 {
            r.error_codes();
        }
    }
    // The real session still works after all that.
    let r = s.put_bytes(
        &with_query(&loc, &format!("digest={}", sha256(b"fine"))),
        b"fine",
    );
    assert!(
        r.status == 201 || r.status == 404 || r.status == 400 || r.status == 416,
        "{}",
        r.summary()
    );
}

#[test]
fn without_users_anonymous_writes_can_be_refused_and_reads_stay_open() {
    // PIER_ANONYMOUS_WRITE=false is what a deployment without users gets by default on Workers, wasi:http hosts and
    // `pier serve` on a non-loopback address (tests bind loopback only, so the setting is given explicitly here).
    let s = Server::start_with_env(&[("PIER_ANONYMOUS_WRITE", "false")], &[]);
    s.get("/v2/").expect(200);
    let r = s.post("/v2/locked/blobs/uploads/");
    r.expect_error(401, "UNAUTHORIZED");
    assert!(r.text().contains("PIER_ANONYMOUS_WRITE"), "the message names the setting: {}", r.text());
    let body = vec![7u8; 5000];
    s.post_bytes(&format!("/v2/locked/blobs/uploads/?digest={}", sha256(&body)), &body).expect_error(401, "UNAUTHORIZED");
    s.delete("/v2/locked/manifests/latest").expect_error(401, "UNAUTHORIZED");
    s.get("/v2/locked/tags/list").expect_error(404, "NAME_UNKNOWN");
    assert!(s.stderr_text().contains("writes are refused"), "the server says which mode it runs in: {}", s.stderr_text());
}
