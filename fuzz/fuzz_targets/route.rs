//! The router: any path maps to a route or to a 4xx (NOT_FOUND, NAME_INVALID), never a panic; a route's canonical
//! path routes back to the same route.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::api::{route, Route};

fn canonical(r: &Route) -> String {
    match r {
        Route::Base => "/v2/".into(),
        Route::Catalog => "/v2/_catalog".into(),
        Route::TagsList { name } => format!("/v2/{name}/tags/list"),
        Route::Manifest { name, reference } => format!("/v2/{name}/manifests/{reference}"),
        Route::Blob { name, digest } => format!("/v2/{name}/blobs/{digest}"),
        Route::UploadStart { name } => format!("/v2/{name}/blobs/uploads/"),
        Route::Upload { name, id } => format!("/v2/{name}/blobs/uploads/{id}"),
        Route::Referrers { name, digest } => format!("/v2/{name}/referrers/{digest}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else { return };
    match route(path) {
        Ok(r) => {
            let again = route(&canonical(&r));
            assert_eq!(again.as_ref().ok(), Some(&r), "{path:?} -> {r:?} -> {again:?}");
        }
        Err(e) => assert!(e.status().is_client_error(), "{path:?}: {e:?}"),
    }
});
