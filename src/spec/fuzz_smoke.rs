//! A deterministic fuzz smoke test of every parser that reads client input: random and mutated inputs must give a
//! value or an error, never a panic. (A coverage-guided fuzzer can drive the same entry points; this keeps the
//! property in every `cargo test`.)

use super::manifest;
use super::pagination::Page;
use super::range::{ByteRangeSpec, ChunkRange};
use super::{Digest, Reference, RepositoryName, Tag};
use crate::api::route;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SEEDS: &[&str] = &[
    "/v2/",
    "/v2/library/ubuntu/manifests/latest",
    "/v2/a/b/blobs/uploads/0f0e0d0c-0b0a-4908-8706-050403020100",
    "/v2/a/blobs/sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "/v2/x/referrers/sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e",
    "bytes=0-1023",
    "bytes 5-9/100",
    "0-18446744073709551615",
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#,
    r#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],"subject":{"mediaType":"b","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":1}}"#,
];

const ALPHABET: &[u8] = b"/:-._~%+ ,=0123456789abcdefABCDEF{}[]\":xyz\0\xff\xc3\xa9";

fn mutate(rng: &mut Rng, seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    for _ in 0..1 + rng.below(6) {
        let pos = if b.is_empty() { 0 } else { rng.below(b.len() + 1) };
        match rng.below(4) {
            0 if pos < b.len() => {
                b.remove(pos);
            }
            1 if pos < b.len() => b[pos] = ALPHABET[rng.below(ALPHABET.len())],
            2 => {
                let dup: Vec<u8> = b[pos..].iter().take(rng.below(40)).copied().collect();
                b.splice(pos..pos, dup);
            }
            _ => b.insert(pos.min(b.len()), ALPHABET[rng.below(ALPHABET.len())]),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

#[test]
fn parsers_never_panic() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..40_000 {
        let input = if i % 5 == 0 {
            (0..rng.below(80)).map(|_| ALPHABET[rng.below(ALPHABET.len())] as char).collect()
        } else {
            let seed = SEEDS[rng.below(SEEDS.len())];
            mutate(&mut rng, seed)
        };
        let _ = route(&input);
        let _ = RepositoryName::parse(&input);
        let _ = Tag::parse(&input);
        let _ = Reference::parse(&input);
        let _ = Digest::parse(&input);
        let _ = ChunkRange::parse(&input);
        if let Some(spec) = ByteRangeSpec::parse(&input) {
            for size in [0, 1, 10, u64::MAX / 2] {
                if let Some(r) = spec.resolve(size) {
                    assert!(r.start <= r.end && r.end < size, "{input:?} {size}");
                }
            }
        }
        let _ = Page::from_query(Some(&input), Some(&input));
        let _ = manifest::parse(input.as_bytes(), Some(&input));
        let _ = manifest::parse(input.as_bytes(), None);
    }
}
