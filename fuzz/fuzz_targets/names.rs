//! Repository names, tags, references, digests and the `n`/`last` of listings: never a panic, errors are 4xx, and
//! what parses prints back to the same text and parses again to an equal value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pier::spec::name::MAX_NAME_LEN;
use pier::spec::pagination::{Page, MAX_PAGE};
use pier::spec::{Algorithm, Digest, Reference, RepositoryName, Tag};

fuzz_target!(|data: &[u8]| {
    for alg in [Algorithm::Sha256, Algorithm::Sha512] {
        let d = alg.digest(data);
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    match RepositoryName::parse(s) {
        Ok(n) => {
            assert_eq!(n.as_str(), s);
            assert!(s.len() <= MAX_NAME_LEN);
            assert_eq!(RepositoryName::parse(&n.to_string()).ok(), Some(n));
        }
        Err(e) => assert!(e.status().is_client_error(), "{s:?}: {e:?}"),
    }
    match Tag::parse(s) {
        Ok(t) => assert_eq!(t.to_string(), s),
        Err(e) => assert!(e.status().is_client_error(), "{s:?}: {e:?}"),
    }
    match Digest::parse(s) {
        Ok(d) => {
            assert_eq!(d.to_string(), s);
            assert_eq!(d.hex().len(), d.algorithm().hex_len());
        }
        Err(e) => assert!(e.status().is_client_error(), "{s:?}: {e:?}"),
    }
    match Reference::parse(s) {
        Ok(r) => {
            assert_eq!(r.to_string(), s);
            assert_eq!(Reference::parse(&r.to_string()).ok(), Some(r));
        }
        Err(e) => assert!(e.status().is_client_error(), "{s:?}: {e:?}"),
    }
    match Page::from_query(Some(s), Some(s)) {
        Ok(p) => assert!(p.limit() <= MAX_PAGE && p.last.as_deref() == Some(s)),
        Err(e) => assert!(e.status().is_client_error(), "{s:?}: {e:?}"),
    }
});
