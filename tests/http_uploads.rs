//! Blob upload sessions: single-shot POST, monolithic POST+PUT, chunked PATCH uploads, status, cancel, errors, and
//! multi-part storage with a tiny part size.

mod common;

use common::*;

/// Asserts the headers of a 202 from PATCH (or 204 from GET status) after `offset` bytes.
#[track_caller]
fn assert_progress(r: &Resp, s: &Server, offset: usize) -> String {
    let expected = if offset == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", offset - 1)
    };
    assert_eq!(
        r.header("range"),
        Some(expected.as_str()),
        "{}: {}",
        r.desc,
        r.summary()
    );
    r.location(s)
}

#[test]
fn post_starts_a_session() {
    let s = Server::start();
    let repo = unique("upstart");
    let r = s.post(&format!("/v2/{repo}/blobs/uploads/"));
    r.expect(202);
    let loc = r.location(&s);
    assert!(
        path_of(&loc).starts_with(&format!("/v2/{repo}/blobs/uploads/")),
        "Location {loc}"
    );
    assert_eq!(r.header("range"), Some("0-0"));
    let uuid = r.must_header("docker-upload-uuid");
    assert!(!uuid.is_empty());
    // Two sessions are distinct.
    let r2 = s.post(&format!("/v2/{repo}/blobs/uploads/"));
    r2.expect(202);
    assert_ne!(r2.must_header("docker-upload-uuid"), uuid);
    assert_ne!(r2.location(&s), loc);
}

#[test]
fn single_shot_post_with_digest() {
    let s = Server::start();
    let repo = unique("upsingle");
    let data = random_bytes(unique_seed(), 4096);
    let d = sha256(&data);
    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d}"), &data);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let loc = r.location(&s);
    assert!(
        path_of(&loc).ends_with(&format!("/v2/{repo}/blobs/{d}")),
        "Location {loc}"
    );
    let r = s.get(&loc);
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn single_shot_post_with_wrong_digest_stores_nothing() {
    let s = Server::start();
    let repo = unique("upsinglebad");
    let data = random_bytes(unique_seed(), 1000);
    let wrong = sha256(b"something else entirely");
    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={wrong}"), &data);
    r.expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/blobs/{wrong}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{}", sha256(&data)))
        .expect(404);
}

#[test]
fn monolithic_post_then_put() {
    let s = Server::start();
    let repo = unique("upmono");
    let data = random_bytes(unique_seed(), 10_000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let blob_loc = r.location(&s);
    assert!(
        path_of(&blob_loc).ends_with(&format!("/v2/{repo}/blobs/{d}")),
        "Location {blob_loc}"
    );
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn chunked_upload_with_content_range() {
    let s = Server::start();
    let repo = unique("upchunk");
    let data = random_bytes(unique_seed(), 3000);
    let d = sha256(&data);
    let mut loc = start_upload(&s, &repo);
    let mut offset = 0;
    for chunk in data.chunks(1000) {
        let r = s.patch_range(&loc, offset, chunk);
        r.expect(202);
        offset += chunk.len();
        loc = assert_progress(&r, &s, offset);
        r.must_header("docker-upload-uuid");
    }
    let r = s.get(&loc);
    r.expect(204);
    loc = assert_progress(&r, &s, 3000);
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"");
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn put_without_body_and_without_content_length_header_body() {
    // Final PUT with no body at all (no Content-Length header sent by the client).
    let s = Server::start();
    let repo = unique("upputnobody");
    let data = random_bytes(unique_seed(), 500);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data);
    r.expect(202);
    let loc = r.location(&s);
    let r = s.request(
        "PUT",
        &with_query(&loc, &format!("digest={d}")),
        &[],
        Body::None,
    );
    r.expect(201);
    s.head(&format!("/v2/{repo}/blobs/{d}")).expect(200);
}

#[test]
fn patch_without_content_range_streams_whole_blob() {
    let s = Server::start();
    let repo = unique("upnorange");
    let data = random_bytes(unique_seed(), 7000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_bytes(&loc, &data);
    r.expect(202);
    let loc = assert_progress(&r, &s, 7000);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"")
        .expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn patches_without_content_range_append() {
    let s = Server::start();
    let repo = unique("upappend");
    let data = random_bytes(unique_seed(), 2500);
    let d = sha256(&data);
    let mut loc = start_upload(&s, &repo);
    let mut offset = 0;
    for chunk in data.chunks(1000) {
        let r = s.patch_bytes(&loc, chunk);
        r.expect(202);
        offset += chunk.len();
        loc = assert_progress(&r, &s, offset);
    }
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"")
        .expect(201);
    assert_eq!(s.get(&format!("/v2/{repo}/blobs/{d}")).body, data);
}

#[test]
fn patch_with_chunked_transfer_encoding() {
    let s = Server::start();
    let repo = unique("upte");
    let data = random_bytes(unique_seed(), 20_000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.request(
        "PATCH",
        &loc,
        &[("Content-Type", "application/octet-stream")],
        Body::Chunked(&data[..12_345]),
    );
    r.expect(202);
    let loc = assert_progress(&r, &s, 12_345);
    // Final chunk also with chunked transfer encoding, on the PUT.
    let r = s.request(
        "PUT",
        &with_query(&loc, &format!("digest={d}")),
        &[("Content-Type", "application/octet-stream")],
        Body::Chunked(&data[12_345..]),
    );
    r.expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn out_of_order_chunk_is_416_and_upload_can_resume() {
    let s = Server::start();
    let repo = unique("upooo");
    let data = random_bytes(unique_seed(), 3000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data[..1000]);
    r.expect(202);
    let loc = r.location(&s);

    // Skips ahead.
    let r = s.patch_range(&loc, 1500, &data[1500..2000]);
    r.expect(416);
    // Goes back.
    let r = s.patch_range(&loc, 500, &data[500..1500]);
    r.expect(416);
    // Starting again from zero is also not the current offset.
    let r = s.patch_range(&loc, 0, &data[..1000]);
    r.expect(416);

    // Status still says 1000 bytes.
    let r = s.get(&loc);
    r.expect(204);
    let loc = assert_progress(&r, &s, 1000);

    let r = s.patch_range(&loc, 1000, &data[1000..2000]);
    r.expect(202);
    let loc = assert_progress(&r, &s, 2000);
    // Final chunk with Content-Range on the PUT.
    let range = "2000-2999".to_string();
    let r = s.request(
        "PUT",
        &with_query(&loc, &format!("digest={d}")),
        &[
            ("Content-Type", "application/octet-stream"),
            ("Content-Range", &range),
        ],
        Body::Bytes(&data[2000..]),
    );
    r.expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn upload_status() {
    let s = Server::start();
    let repo = unique("upstatus");
    let loc = start_upload(&s, &repo);
    let r = s.get(&loc);
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-0"));
    r.must_header("location");
    r.must_header("docker-upload-uuid");
    let r = s.patch_range(&loc, 0, b"hello world");
    r.expect(202);
    let loc = r.location(&s);
    let r = s.get(&loc);
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-10"));
    assert!(r.body.is_empty());
    // Status does not change the session.
    let r = s.get(&r.location(&s));
    r.expect(204);
    assert_eq!(r.header("range"), Some("0-10"));
}

#[test]
fn final_put_with_last_chunk() {
    let s = Server::start();
    let repo = unique("uplastchunk");
    let data = random_bytes(unique_seed(), 2048);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data[..1024]);
    r.expect(202);
    let loc = r.location(&s);
    // Last chunk without Content-Range.
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data[1024..]);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn put_with_wrong_digest_is_rejected_and_blob_absent() {
    let s = Server::start();
    let repo = unique("upputbad");
    let data = random_bytes(unique_seed(), 1500);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data);
    r.expect(202);
    let loc = r.location(&s);
    let wrong = sha256(b"not the data");
    let r = s.put_bytes(&with_query(&loc, &format!("digest={wrong}")), b"");
    r.expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/blobs/{wrong}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{}", sha256(&data)))
        .expect(404);

    // Monolithic PUT with the wrong digest as well.
    let loc = start_upload(&s, &repo);
    let r = s.put_bytes(&with_query(&loc, &format!("digest={wrong}")), &data);
    r.expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/blobs/{wrong}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{}", sha256(&data)))
        .expect(404);
}

#[test]
fn put_without_digest_is_digest_invalid() {
    let s = Server::start();
    let repo = unique("upnodigest");
    let loc = start_upload(&s, &repo);
    s.put_bytes(&loc, b"abc")
        .expect_error(400, "DIGEST_INVALID");
}

#[test]
fn bad_digest_syntax_is_digest_invalid() {
    let s = Server::start();
    let repo = unique("upbadsyntax");
    let data = b"payload".to_vec();
    let good_hex = &sha256(&data)["sha256:".len()..];
    let bad = [
        "sha256:xyz".to_string(),
        "sha256:".to_string(),
        "nonsense".to_string(),
        format!("sha256:{}", &good_hex[..63]),
        format!("sha256:{good_hex}0"),
        format!("sha256:{}", good_hex.to_ascii_uppercase()),
        format!("sha512:{good_hex}"),
        format!("md5:{}", &good_hex[..32]),
        format!(":{good_hex}"),
    ];
    for b in &bad {
        let enc = b.replace(':', "%3A");
        let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={enc}"), &data);
        assert!(r.status == 400, "digest {b}: {}", r.summary());
        r.expect_error(400, "DIGEST_INVALID");
        let loc = start_upload(&s, &repo);
        let r = s.put_bytes(&with_query(&loc, &format!("digest={enc}")), &data);
        r.expect_error(400, "DIGEST_INVALID");
    }
}

#[test]
fn delete_upload_session() {
    let s = Server::start();
    let repo = unique("upcancel");
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, b"partial data");
    r.expect(202);
    let loc = r.location(&s);
    s.delete(&loc).expect(204);
    s.get(&loc).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_range(&loc, 12, b"more")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.put_bytes(
        &with_query(&loc, &format!("digest={}", sha256(b"partial data"))),
        b"",
    )
    .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.delete(&loc).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn unknown_upload_id_is_blob_upload_unknown() {
    let s = Server::start();
    let repo = unique("upunknown");
    push_blob(&s, &repo, b"make the repo exist");
    for id in [
        "00000000-0000-0000-0000-000000000000",
        "nope",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
    ] {
        let path = format!("/v2/{repo}/blobs/uploads/{id}");
        s.get(&path).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        s.patch_bytes(&path, b"abc")
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        s.patch_range(&path, 0, b"abc")
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        s.put_bytes(&format!("{path}?digest={}", sha256(b"abc")), b"abc")
            .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
        s.delete(&path).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    }
}

#[test]
fn session_is_bound_to_its_repository() {
    let s = Server::start();
    let a = unique("upbind-a");
    let b = unique("upbind-b");
    let loc = start_upload(&s, &a);
    let path = path_of(&loc);
    let id = path.rsplit('/').next().unwrap().to_string();
    let query = loc
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    let other = format!("/v2/{b}/blobs/uploads/{id}{query}");
    s.get(&other).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_range(&other, 0, b"abc")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    // The original session is unaffected.
    s.get(&loc).expect(204);
}

#[test]
fn completed_session_cannot_be_reused() {
    let s = Server::start();
    let repo = unique("updone");
    let data = b"finished blob".to_vec();
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data)
        .expect(201);
    s.get(&loc).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_bytes(&loc, b"more")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn failed_digest_check_does_not_break_other_sessions() {
    let s = Server::start();
    let repo = unique("upisolate");
    let data = random_bytes(unique_seed(), 900);
    let d = sha256(&data);
    let l1 = start_upload(&s, &repo);
    let l2 = start_upload(&s, &repo);
    let r1 = s.patch_range(&l1, 0, &data[..400]);
    r1.expect(202);
    let r2 = s.patch_range(&l2, 0, &data[..100]);
    r2.expect(202);
    let l1 = r1.location(&s);
    let l2 = r2.location(&s);
    s.put_bytes(&with_query(&l2, &format!("digest={d}")), b"")
        .expect_error(400, "DIGEST_INVALID");
    s.put_bytes(&with_query(&l1, &format!("digest={d}")), &data[400..])
        .expect(201);
    assert_eq!(s.get(&format!("/v2/{repo}/blobs/{d}")).body, data);
}

fn multipart_upload(s: &Server, repo: &str, data: &[u8], chunk_sizes: &[usize]) {
    let d = sha256(data);
    let mut loc = start_upload(s, repo);
    let mut offset = 0;
    let mut i = 0;
    while offset < data.len() {
        let size = chunk_sizes[i % chunk_sizes.len()].min(data.len() - offset);
        i += 1;
        let r = s.patch_range(&loc, offset, &data[offset..offset + size]);
        r.expect(202);
        offset += size;
        loc = assert_progress(&r, s, offset);
    }
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"");
    r.expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body.len(), data.len());
    assert!(
        r.body == data,
        "multi-part blob differs from what was uploaded"
    );
    assert_eq!(r.header("content-length").unwrap(), data.len().to_string());
    // Ranges across part boundaries.
    let r = s.get_h(
        &format!("/v2/{repo}/blobs/{d}"),
        &[("Range", "bytes=1000-3100")],
    );
    r.expect(206);
    assert_eq!(r.body, &data[1000..=3100]);
}

#[test]
fn multipart_upload_with_small_parts() {
    if skip_if_external("multipart_upload_with_small_parts") {
        return;
    }
    let s = Server::start_with(&["--part-size", "1024"]);
    let repo = unique("upmulti");
    let data = random_bytes(unique_seed(), 10_000);
    multipart_upload(&s, &repo, &data, &[777]);
}

#[test]
fn multipart_upload_with_varied_chunks() {
    if skip_if_external("multipart_upload_with_varied_chunks") {
        return;
    }
    let s = Server::start_with(&["--part-size", "1024"]);
    let repo = unique("upmultivar");
    let data = random_bytes(unique_seed(), 10_000);
    // Exactly a part, less, more, several parts at once, one byte.
    multipart_upload(&s, &repo, &data, &[1024, 1, 1023, 3000, 5, 2048, 17]);
}

#[test]
fn multipart_upload_single_patch_and_final_chunk() {
    if skip_if_external("multipart_upload_single_patch_and_final_chunk") {
        return;
    }
    let s = Server::start_with(&["--part-size", "1024"]);
    let repo = unique("upmultione");
    let data = random_bytes(unique_seed(), 10_000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.request("PATCH", &loc, &[], Body::Chunked(&data[..9_000]));
    r.expect(202);
    let loc = assert_progress(&r, &s, 9_000);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data[9_000..])
        .expect(201);
    assert!(s.get(&format!("/v2/{repo}/blobs/{d}")).body == data);

    // A monolithic PUT larger than several parts.
    let data2 = random_bytes(unique_seed(), 10_000);
    let d2 = sha256(&data2);
    let loc = start_upload(&s, &repo);
    s.put_bytes(&with_query(&loc, &format!("digest={d2}")), &data2)
        .expect(201);
    assert!(s.get(&format!("/v2/{repo}/blobs/{d2}")).body == data2);

    // Single-shot POST larger than several parts.
    let data3 = random_bytes(unique_seed(), 5_000);
    let d3 = sha256(&data3);
    s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d3}"), &data3)
        .expect(201);
    assert!(s.get(&format!("/v2/{repo}/blobs/{d3}")).body == data3);
}

#[test]
fn multipart_wrong_digest_leaves_nothing() {
    if skip_if_external("multipart_wrong_digest_leaves_nothing") {
        return;
    }
    let s = Server::start_with(&["--part-size", "1024"]);
    let repo = unique("upmultibad");
    let data = random_bytes(unique_seed(), 5_000);
    let mut loc = start_upload(&s, &repo);
    for (i, chunk) in data.chunks(777).enumerate() {
        let r = s.patch_range(&loc, i * 777, chunk);
        r.expect(202);
        loc = r.location(&s);
    }
    let wrong = sha256(b"wrong");
    s.put_bytes(&with_query(&loc, &format!("digest={wrong}")), b"")
        .expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/blobs/{wrong}")).expect(404);
    s.head(&format!("/v2/{repo}/blobs/{}", sha256(&data)))
        .expect(404);
}

#[test]
fn multipart_out_of_order_then_resume() {
    if skip_if_external("multipart_out_of_order_then_resume") {
        return;
    }
    let s = Server::start_with(&["--part-size", "1024"]);
    let repo = unique("upmultiooo");
    let data = random_bytes(unique_seed(), 4_000);
    let d = sha256(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data[..1500]);
    r.expect(202);
    let loc = r.location(&s);
    s.patch_range(&loc, 1000, &data[1000..2500]).expect(416);
    let r = s.get(&loc);
    r.expect(204);
    let loc = assert_progress(&r, &s, 1500);
    let r = s.patch_range(&loc, 1500, &data[1500..]);
    r.expect(202);
    let loc = r.location(&s);
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"")
        .expect(201);
    assert!(s.get(&format!("/v2/{repo}/blobs/{d}")).body == data);
}

#[test]
fn sha512_chunked_upload() {
    let s = Server::start();
    let repo = unique("upsha512");
    let data = random_bytes(unique_seed(), 3000);
    let d = sha512(&data);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data[..1700]);
    r.expect(202);
    let loc = r.location(&s);
    let r = s.put_bytes(&with_query(&loc, &format!("digest={d}")), &data[1700..]);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body, data);
}

#[test]
fn expired_session_is_unknown() {
    if skip_if_external("expired_session_is_unknown") {
        return;
    }
    let s = Server::start_with(&["--upload-expiry", "1"]);
    let repo = unique("upexpire");
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, b"data");
    r.expect(202);
    let loc = r.location(&s);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    s.get(&loc).expect_error(404, "BLOB_UPLOAD_UNKNOWN");
    s.patch_range(&loc, 4, b"more")
        .expect_error(404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn memory_backend_supports_uploads() {
    if skip_if_external("memory_backend_supports_uploads") {
        return;
    }
    let s = Server::start_memory(&["--part-size", "1024"]);
    let repo = unique("upmemory");
    let data = random_bytes(unique_seed(), 5_000);
    multipart_upload(&s, &repo, &data, &[777]);
    let img = push_image(&s, &repo, "latest", unique_seed());
    let r = s.get(&format!("/v2/{repo}/manifests/latest"));
    r.expect(200);
    assert_eq!(r.body, img.bytes);
}

#[test]
fn large_blob_with_default_part_size() {
    let s = Server::start();
    let repo = unique("uplarge");
    // 20 MiB in 6 MiB chunks crosses the default part size several times.
    let data = random_bytes(unique_seed(), 20 * 1024 * 1024 + 123);
    let d = sha256(&data);
    let mut loc = start_upload(&s, &repo);
    let mut offset = 0;
    for chunk in data.chunks(6 * 1024 * 1024) {
        let r = s.patch_range(&loc, offset, chunk);
        r.expect(202);
        offset += chunk.len();
        loc = assert_progress(&r, &s, offset);
    }
    s.put_bytes(&with_query(&loc, &format!("digest={d}")), b"")
        .expect(201);
    let r = s.get(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.body.len(), data.len());
    assert_eq!(sha256(&r.body), d, "large blob content differs");
    let r = s.get_h(
        &format!("/v2/{repo}/blobs/{d}"),
        &[("Range", "bytes=8388600-8388700")],
    );
    r.expect(206);
    assert_eq!(r.body, &data[8_388_600..=8_388_700]);

    // Monolithic PUT of 12 MiB.
    let data2 = random_bytes(unique_seed(), 12 * 1024 * 1024);
    let d2 = sha256(&data2);
    let loc = start_upload(&s, &repo);
    s.put_bytes(&with_query(&loc, &format!("digest={d2}")), &data2)
        .expect(201);
    let r = s.head(&format!("/v2/{repo}/blobs/{d2}"));
    r.expect(200);
    assert_eq!(
        r.header("content-length"),
        Some(data2.len().to_string().as_str())
    );
    assert_eq!(sha256(&s.get(&format!("/v2/{repo}/blobs/{d2}")).body), d2);
}

#[test]
fn single_shot_post_with_chunked_transfer_encoding() {
    let s = Server::start();
    let repo = unique("upsinglete");
    let data = random_bytes(unique_seed(), 9000);
    let d = sha256(&data);
    let r = s.request(
        "POST",
        &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
        &[("Content-Type", "application/octet-stream")],
        Body::Chunked(&data),
    );
    r.expect(201);
    assert_eq!(s.get(&format!("/v2/{repo}/blobs/{d}")).body, data);
}

#[test]
fn rejected_patch_leaves_session_unchanged() {
    let s = Server::start();
    let repo = unique("uprejected");
    let data = random_bytes(unique_seed(), 300);
    let loc = start_upload(&s, &repo);
    let r = s.patch_range(&loc, 0, &data[..100]);
    r.expect(202);
    let loc = r.location(&s);
    // Content-Range claims more bytes than the body has.
    let r = s.request(
        "PATCH",
        &loc,
        &[("Content-Range", "100-299")],
        Body::Bytes(&data[100..150]),
    );
    assert!(r.status == 400 || r.status == 416, "{}", r.summary());
    r.error_codes();
    // Malformed Content-Range.
    let r = s.request(
        "PATCH",
        &loc,
        &[("Content-Range", "abc")],
        Body::Bytes(&data[100..150]),
    );
    assert!(r.status == 400 || r.status == 416, "{}", r.summary());
    let r = s.request(
        "PATCH",
        &loc,
        &[("Content-Range", "150-100")],
        Body::Bytes(&data[100..150]),
    );
    assert!(r.status == 400 || r.status == 416, "{}", r.summary());
    let r = s.get(&loc);
    r.expect(204);
    let loc = assert_progress(&r, &s, 100);
    let r = s.patch_range(&loc, 100, &data[100..]);
    r.expect(202);
    let loc = r.location(&s);
    s.put_bytes(&with_query(&loc, &format!("digest={}", sha256(&data))), b"")
        .expect(201);
    assert_eq!(
        s.get(&format!("/v2/{repo}/blobs/{}", sha256(&data))).body,
        data
    );
}

#[test]
fn single_shot_post_of_empty_blob() {
    let s = Server::start();
    let repo = unique("upsingleempty");
    let d = sha256(b"");
    let r = s.post_bytes(&format!("/v2/{repo}/blobs/uploads/?digest={d}"), b"");
    r.expect(201);
    let r = s.head(&format!("/v2/{repo}/blobs/{d}"));
    r.expect(200);
    assert_eq!(r.header("content-length"), Some("0"));
}
