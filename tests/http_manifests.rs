//! Manifests: push, pull by tag and digest, media types, validation of references, blobs and children, artifacts,
//! subjects, size limits and tag syntax.

mod common;

use common::*;
use serde_json::json;

#[track_caller]
fn assert_manifest(s: &Server, repo: &str, reference: &str, bytes: &[u8], media_type: &str) {
    let digest = sha256(bytes);
    let path = format!("/v2/{repo}/manifests/{reference}");
    let r = s.get_h(&path, &[("Accept", ALL_MANIFEST_TYPES)]);
    r.expect(200);
    assert!(
        r.body == bytes,
        "{}: manifest bytes differ: {}",
        r.desc,
        r.text()
    );
    assert_eq!(
        r.header("content-type"),
        Some(media_type),
        "{}",
        r.summary()
    );
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    let r = s.head_h(&path, &[("Accept", ALL_MANIFEST_TYPES)]);
    r.expect(200);
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-type"), Some(media_type));
    assert_eq!(
        r.header("content-length"),
        Some(bytes.len().to_string().as_str())
    );
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
}

#[test]
fn push_and_pull_oci_image_manifest() {
    let s = Server::start();
    let repo = unique("mfimage");
    let config = to_bytes(&json!({"architecture": "arm64", "os": "linux"}));
    let layer = random_bytes(unique_seed(), 2048);
    let cd = push_blob(&s, &repo, &config);
    let ld = push_blob(&s, &repo, &layer);
    let bytes = to_bytes(&oci_manifest(
        (OCI_CONFIG, &cd, config.len()),
        &[(&ld, layer.len())],
    ));
    let digest = sha256(&bytes);

    let r = put_manifest(&s, &repo, "v1", OCI_MANIFEST, &bytes);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    let loc = r.location(&s);
    let got = s.get_h(&loc, &[("Accept", ALL_MANIFEST_TYPES)]);
    got.expect(200);
    assert_eq!(got.body, bytes);

    assert_manifest(&s, &repo, "v1", &bytes, OCI_MANIFEST);
    assert_manifest(&s, &repo, &digest, &bytes, OCI_MANIFEST);
}

#[test]
fn manifest_location_names_the_digest() {
    let s = Server::start();
    let repo = unique("mfloc");
    let img = push_image(&s, &repo, "t", unique_seed());
    let r = put_manifest(&s, &repo, "t2", OCI_MANIFEST, &img.bytes);
    r.expect(201);
    let loc = r.location(&s);
    let p = path_of(&loc);
    assert!(
        p.starts_with(&format!("/v2/{repo}/manifests/")),
        "Location {loc}"
    );
}

#[test]
fn put_by_digest_reference() {
    let s = Server::start();
    let repo = unique("mfbydigest");
    let img = push_image(&s, &repo, "base", unique_seed());
    // Another manifest over the same blobs, pushed by digest.
    let mut v: serde_json::Value = serde_json::from_slice(&img.bytes).unwrap();
    v["annotations"] = json!({"org.example": "by-digest"});
    let bytes = to_bytes(&v);
    let d = sha256(&bytes);
    let r = put_manifest(&s, &repo, &d, OCI_MANIFEST, &bytes);
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(d.as_str()));
    assert_manifest(&s, &repo, &d, &bytes, OCI_MANIFEST);

    // Digest that does not match the body.
    let mut v2 = v.clone();
    v2["annotations"] = json!({"org.example": "mismatch"});
    let bytes2 = to_bytes(&v2);
    let r = put_manifest(&s, &repo, &d, OCI_MANIFEST, &bytes2);
    r.expect_error(400, "DIGEST_INVALID");
    s.head(&format!("/v2/{repo}/manifests/{}", sha256(&bytes2)))
        .expect(404);
    // The original is untouched.
    assert_manifest(&s, &repo, &d, &bytes, OCI_MANIFEST);
}

#[test]
fn manifest_with_missing_blobs_is_rejected() {
    let s = Server::start();
    let repo = unique("mfmissing");
    let config = to_bytes(&json!({"os": "linux"}));
    let layer = random_bytes(unique_seed(), 100);
    let cd = push_blob(&s, &repo, &config);
    let ld = push_blob(&s, &repo, &layer);
    let absent = sha256(b"absent blob");

    let missing_layer = to_bytes(&oci_manifest(
        (OCI_CONFIG, &cd, config.len()),
        &[(&ld, layer.len()), (&absent, 11)],
    ));
    put_manifest(&s, &repo, "ml", OCI_MANIFEST, &missing_layer)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    s.head(&format!("/v2/{repo}/manifests/ml")).expect(404);

    let missing_config = to_bytes(&oci_manifest(
        (OCI_CONFIG, &absent, 11),
        &[(&ld, layer.len())],
    ));
    put_manifest(&s, &repo, "mc", OCI_MANIFEST, &missing_config)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    s.head(&format!("/v2/{repo}/manifests/mc")).expect(404);
    s.head(&format!("/v2/{repo}/manifests/{}", sha256(&missing_config)))
        .expect(404);
}

#[test]
fn manifest_blobs_must_be_in_the_same_repository() {
    let s = Server::start();
    let a = unique("mfblobscope-a");
    let b = unique("mfblobscope-b");
    let img = push_image(&s, &a, "v1", unique_seed());
    put_manifest(&s, &b, "v1", OCI_MANIFEST, &img.bytes).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    // Manifests are scoped too.
    s.get(&format!("/v2/{b}/manifests/{}", img.digest))
        .expect(404);
}

#[test]
fn image_index_requires_existing_children() {
    let s = Server::start();
    let repo = unique("mfindex");
    let amd = push_image(&s, &repo, "amd64", unique_seed());
    let arm = push_image(&s, &repo, "arm64", unique_seed());
    let mut amd_desc = amd.descriptor();
    amd_desc["platform"] = json!({"architecture": "amd64", "os": "linux"});
    let mut arm_desc = arm.descriptor();
    arm_desc["platform"] = json!({"architecture": "arm64", "os": "linux"});

    let unknown = descriptor(OCI_MANIFEST, &sha256(b"no such manifest"), 123);
    let bad = to_bytes(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd_desc, unknown]}),
    );
    put_manifest(&s, &repo, "multi", OCI_INDEX, &bad).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
    s.head(&format!("/v2/{repo}/manifests/multi")).expect(404);

    let good = to_bytes(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [amd_desc, arm_desc]}),
    );
    let d = push_manifest(&s, &repo, "multi", OCI_INDEX, &good);
    assert_manifest(&s, &repo, "multi", &good, OCI_INDEX);
    assert_manifest(&s, &repo, &d, &good, OCI_INDEX);
}

#[test]
fn index_children_must_be_manifests_in_this_repository() {
    let s = Server::start();
    let a = unique("mfindexscope-a");
    let b = unique("mfindexscope-b");
    let child = push_image(&s, &a, "x", unique_seed());
    let idx = to_bytes(
        &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [child.descriptor()]}),
    );
    put_manifest(&s, &b, "idx", OCI_INDEX, &idx).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn docker_schema2_manifest_and_list() {
    let s = Server::start();
    let repo = unique("mfdocker");
    let config = to_bytes(&json!({"architecture": "amd64", "os": "linux", "docker": true}));
    let layer = random_bytes(unique_seed(), 512);
    let cd = push_blob(&s, &repo, &config);
    let ld = push_blob(&s, &repo, &layer);
    let manifest = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, &cd, config.len()),
        "layers": [descriptor(DOCKER_LAYER, &ld, layer.len())],
    }));
    let md = push_manifest(&s, &repo, "docker", DOCKER_MANIFEST, &manifest);
    assert_manifest(&s, &repo, "docker", &manifest, DOCKER_MANIFEST);
    assert_manifest(&s, &repo, &md, &manifest, DOCKER_MANIFEST);

    let list = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{
            "mediaType": DOCKER_MANIFEST, "digest": md, "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"}
        }],
    }));
    let ld2 = push_manifest(&s, &repo, "list", DOCKER_LIST, &list);
    assert_manifest(&s, &repo, "list", &list, DOCKER_LIST);
    assert_manifest(&s, &repo, &ld2, &list, DOCKER_LIST);

    let bad_list = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": sha256(b"nothing"), "size": 10,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }));
    put_manifest(&s, &repo, "badlist", DOCKER_LIST, &bad_list)
        .expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn artifact_manifest_with_empty_config() {
    let s = Server::start();
    let repo = unique("mfartifact");
    let d = push_empty_blob(&s, &repo);
    assert_eq!(d, EMPTY_DIGEST);
    let payload = b"signature bytes".to_vec();
    let pd = push_blob(&s, &repo, &payload);
    let bytes = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sig.v1",
        "config": descriptor(OCI_EMPTY, EMPTY_DIGEST, 2),
        "layers": [descriptor("application/vnd.example.sig.v1+raw", &pd, payload.len())],
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}
    }));
    let md = push_manifest(&s, &repo, "sig", OCI_MANIFEST, &bytes);
    assert_manifest(&s, &repo, &md, &bytes, OCI_MANIFEST);
}

#[test]
fn subject_that_does_not_exist_is_accepted_with_oci_subject_header() {
    let s = Server::start();
    let repo = unique("mfsubject");
    push_empty_blob(&s, &repo);
    let subject_digest = sha256(b"a manifest that was never pushed");
    let subject = descriptor(OCI_MANIFEST, &subject_digest, 1234);
    let bytes = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": descriptor(OCI_EMPTY, EMPTY_DIGEST, 2),
        "layers": [descriptor(OCI_EMPTY, EMPTY_DIGEST, 2)],
        "subject": subject,
    }));
    let d = sha256(&bytes);
    let r = put_manifest(&s, &repo, &d, OCI_MANIFEST, &bytes);
    r.expect(201);
    assert_eq!(
        r.header("oci-subject"),
        Some(subject_digest.as_str()),
        "{}",
        r.summary()
    );
    assert_manifest(&s, &repo, &d, &bytes, OCI_MANIFEST);

    // A manifest without a subject has no OCI-Subject header.
    let img = push_image(&s, &repo, "plain", unique_seed());
    let r = put_manifest(&s, &repo, "plain2", OCI_MANIFEST, &img.bytes);
    r.expect(201);
    assert_eq!(r.header("oci-subject"), None);
}

#[test]
fn index_with_subject_and_artifact_type() {
    let s = Server::start();
    let repo = unique("mfindexsubject");
    let img = push_image(&s, &repo, "base", unique_seed());
    let child = push_image(&s, &repo, "child", unique_seed());
    let bytes = to_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "artifactType": "application/vnd.example.bundle",
        "manifests": [child.descriptor()],
        "subject": img.descriptor(),
    }));
    let d = sha256(&bytes);
    let r = put_manifest(&s, &repo, &d, OCI_INDEX, &bytes);
    r.expect(201);
    assert_eq!(r.header("oci-subject"), Some(img.digest.as_str()));
}

#[test]
fn invalid_manifests_are_manifest_invalid() {
    let s = Server::start();
    let repo = unique("mfinvalid");
    push_image(&s, &repo, "exists", unique_seed());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"this is not json".to_vec()),
        (OCI_MANIFEST, b"{\"schemaVersion\": 2,".to_vec()),
        (OCI_MANIFEST, b"".to_vec()),
        (OCI_MANIFEST, b"[1,2,3]".to_vec()),
        (
            OCI_MANIFEST,
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST})),
        ),
        (
            OCI_MANIFEST,
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": "not-a-digest", "size": 1}, "layers": []})),
        ),
        (
            OCI_INDEX,
            to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": "nope"})),
        ),
    ];
    for (i, (mt, body)) in cases.iter().enumerate() {
        let tag = format!("bad{i}");
        let r = put_manifest(&s, &repo, &tag, mt, body);
        r.expect_error(400, "MANIFEST_INVALID");
        s.head(&format!("/v2/{repo}/manifests/{tag}")).expect(404);
    }
}

#[test]
fn oversized_manifest_is_413() {
    let s = Server::start();
    let repo = unique("mfhuge");
    push_image(&s, &repo, "exists", unique_seed());
    // A valid-looking JSON document just over 4 MiB.
    let pad = "x".repeat(4 * 1024 * 1024 + 100);
    let body = format!("{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"annotations\":{{\"pad\":\"{pad}\"}}}}");
    let r = if s.base.starts_with("http://") {
        // Raw, so an early answer (before the body is read) does not surface as a client write error.
        s.raw(
            "PUT",
            &format!("/v2/{repo}/manifests/huge"),
            &[("Content-Type", OCI_MANIFEST)],
            body.as_bytes(),
        )
    } else {
        put_manifest(&s, &repo, "huge", OCI_MANIFEST, body.as_bytes())
    };
    r.expect(413);
    s.head(&format!("/v2/{repo}/manifests/huge")).expect(404);
}

#[test]
fn unknown_manifest_is_404() {
    let s = Server::start();
    let repo = unique("mfunknown");
    push_image(&s, &repo, "exists", unique_seed());
    s.get(&format!("/v2/{repo}/manifests/nope"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    let d = sha256(b"not a manifest");
    s.get(&format!("/v2/{repo}/manifests/{d}"))
        .expect_error(404, "MANIFEST_UNKNOWN");
    let r = s.head(&format!("/v2/{repo}/manifests/{d}"));
    r.expect(404);
    assert!(r.body.is_empty());
    // Unknown repository.
    let other = unique("mfunknown-norepo");
    let r = s.get(&format!("/v2/{other}/manifests/latest"));
    r.expect(404);
    let codes = r.error_codes();
    assert!(
        codes
            .iter()
            .any(|c| c == "MANIFEST_UNKNOWN" || c == "NAME_UNKNOWN"),
        "{codes:?}"
    );
}

#[test]
fn blob_digest_is_not_a_manifest() {
    let s = Server::start();
    let repo = unique("mfblobnotmf");
    let img = push_image(&s, &repo, "t", unique_seed());
    s.get(&format!("/v2/{repo}/manifests/{}", img.layer))
        .expect_error(404, "MANIFEST_UNKNOWN");
}

#[test]
fn tag_syntax() {
    let s = Server::start();
    let repo = unique("mftags");
    let img = push_image(&s, &repo, "first", unique_seed());
    let max = format!("a{}", "b".repeat(127));
    assert_eq!(max.len(), 128);
    put_manifest(&s, &repo, &max, OCI_MANIFEST, &img.bytes).expect(201);
    assert_manifest(&s, &repo, &max, &img.bytes, OCI_MANIFEST);
    for ok in ["_under", "0digit", "MiXeD.Case-1_2", "v1.2.3"] {
        put_manifest(&s, &repo, ok, OCI_MANIFEST, &img.bytes).expect(201);
        s.head(&format!("/v2/{repo}/manifests/{ok}")).expect(200);
    }
    let too_long = format!("a{}", "b".repeat(128));
    for bad in [too_long.as_str(), ".dot", "-dash", "semi;colon", "a+b"] {
        let r = put_manifest(&s, &repo, bad, OCI_MANIFEST, &img.bytes);
        r.expect_error(400, "TAG_INVALID");
        // Nothing can be stored under a malformed tag: reading or deleting it is "unknown" (the conformance suite's
        // `.INVALID_MANIFEST_NAME` case), not a client error.
        let path = format!("/v2/{repo}/manifests/{bad}");
        s.get(&path).expect_error(404, "MANIFEST_UNKNOWN");
        s.head(&path).expect(404);
        s.delete(&path).expect_error(404, "MANIFEST_UNKNOWN");
    }
}

#[test]
fn retagging_moves_the_tag() {
    let s = Server::start();
    let repo = unique("mfretag");
    let a = push_image(&s, &repo, "latest", unique_seed());
    let b = push_image(&s, &repo, "latest", unique_seed());
    assert_ne!(a.digest, b.digest);
    assert_manifest(&s, &repo, "latest", &b.bytes, OCI_MANIFEST);
    assert_manifest(&s, &repo, &a.digest, &a.bytes, OCI_MANIFEST);
    // Re-pushing identical bytes is idempotent.
    push_manifest(&s, &repo, "latest", OCI_MANIFEST, &b.bytes);
    assert_manifest(&s, &repo, "latest", &b.bytes, OCI_MANIFEST);
}

#[test]
fn manifest_bytes_are_preserved_exactly() {
    let s = Server::start();
    let repo = unique("mfexact");
    let config = b"{}".to_vec();
    let layer = random_bytes(unique_seed(), 10);
    let cd = push_blob(&s, &repo, &config);
    let ld = push_blob(&s, &repo, &layer);
    // Odd whitespace and key order: the digest is over these exact bytes.
    let text = format!(
        "{{\n\t\"layers\" : [ {{\"size\":{}, \"digest\":\"{ld}\", \"mediaType\":\"{OCI_LAYER}\"}} ],\n  \"config\":{{\"size\":2,\"mediaType\":\"{OCI_EMPTY}\",\"digest\":\"{cd}\"}},   \"schemaVersion\":2, \"mediaType\":\"{OCI_MANIFEST}\" }}\n\n",
        layer.len()
    );
    let d = push_manifest(&s, &repo, "ws", OCI_MANIFEST, text.as_bytes());
    assert_eq!(d, sha256(text.as_bytes()));
    assert_manifest(&s, &repo, "ws", text.as_bytes(), OCI_MANIFEST);
}

#[test]
fn manifest_put_with_chunked_transfer_encoding() {
    let s = Server::start();
    let repo = unique("mfchunked");
    let img = push_image(&s, &repo, "base", unique_seed());
    let r = s.request(
        "PUT",
        &format!("/v2/{repo}/manifests/te"),
        &[("Content-Type", OCI_MANIFEST)],
        Body::Chunked(&img.bytes),
    );
    r.expect(201);
    assert_eq!(r.header("docker-content-digest"), Some(img.digest.as_str()));
    assert_manifest(&s, &repo, "te", &img.bytes, OCI_MANIFEST);
}

#[test]
fn index_child_that_is_only_a_blob_is_rejected() {
    let s = Server::start();
    let repo = unique("mfchildblob");
    let blob = random_bytes(unique_seed(), 40);
    let bd = push_blob(&s, &repo, &blob);
    let idx = to_bytes(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [descriptor(OCI_MANIFEST, &bd, blob.len())]}));
    put_manifest(&s, &repo, "idx", OCI_INDEX, &idx).expect_error(400, "MANIFEST_BLOB_UNKNOWN");
}

#[test]
fn manifest_without_content_type_uses_its_media_type_field() {
    let s = Server::start();
    let repo = unique("mfnoct");
    let img = push_image(&s, &repo, "base", unique_seed());
    let r = s.request(
        "PUT",
        &format!("/v2/{repo}/manifests/noct"),
        &[],
        Body::Bytes(&img.bytes),
    );
    r.expect(201);
    assert_manifest(&s, &repo, "noct", &img.bytes, OCI_MANIFEST);
}
