//! `Content-Range` of upload chunks and `Range` of blob GETs: never a panic, errors are 4xx, a parsed range is
//! ordered and prints back to itself, and a resolved range lies inside the blob.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use pier::spec::range::{ByteRangeSpec, ChunkRange};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    size: u64,
    header: String,
}

fuzz_target!(|input: Input| {
    let h = input.header.as_str();
    match ChunkRange::parse(h) {
        Ok(r) => {
            assert!(r.start <= r.end, "{h:?}");
            assert!(r.len() >= 1);
            assert_eq!(ChunkRange::parse(&format!("{}-{}", r.start, r.end)).ok(), Some(r));
        }
        Err(e) => assert!(e.status().is_client_error(), "{h:?}: {e:?}"),
    }
    if let Some(spec) = ByteRangeSpec::parse(h) {
        let printed = match spec {
            ByteRangeSpec::From { start, end: Some(end) } => format!("bytes={start}-{end}"),
            ByteRangeSpec::From { start, end: None } => format!("bytes={start}-"),
            ByteRangeSpec::Suffix(n) => format!("bytes=-{n}"),
        };
        assert_eq!(ByteRangeSpec::parse(&printed), Some(spec), "{h:?}");
        for size in [0, 1, 2, 10, u64::MAX, input.size] {
            if let Some(r) = spec.resolve(size) {
                assert!(r.start <= r.end && r.end < size, "{h:?} against {size}: {r:?}");
                assert!(r.len() <= size);
            }
        }
    }
});
