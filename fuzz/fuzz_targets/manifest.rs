//! Manifest and index parsing and validation: any body under any Content-Type gives a manifest or a 4xx, never a
//! panic; what it refers to are valid digests; the answer depends only on the JSON value, not on its spelling.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::spec::manifest::parse;
use pier::spec::media_types::*;
use pier::spec::Digest;

const TYPES: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    "application/json",
    "application/octet-stream",
    "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
    "application/x.unknown",
    "",
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the Content-Type (or none); the rest is the body.
    let Some((&pick, body)) = data.split_first() else { return };
    let content_type = TYPES.get(pick as usize % (TYPES.len() + 1)).copied();
    match parse(body, content_type) {
        Ok(info) => {
            assert!(!info.media_type.is_empty());
            for r in info.blobs.iter().chain(&info.manifests) {
                assert_eq!(Digest::parse(&r.digest.to_string()).ok().as_ref(), Some(&r.digest));
            }
            if let Some(s) = &info.subject {
                assert!(!s.media_type.is_empty());
            }
            // Re-serialised, the same JSON value must give the same answer.
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
                if let Ok(again) = serde_json::to_vec(&value) {
                    assert_eq!(parse(&again, content_type).ok().as_ref(), Some(&info), "{:?}", String::from_utf8_lossy(body));
                }
            }
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});
