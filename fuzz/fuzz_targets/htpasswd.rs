//! htpasswd content and bcrypt hashes: parsing never panics; a parsed hash keeps its text; a hash made by
//! `hash_password` parses, verifies its password and refuses a different one.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use pier::auth::htpasswd::{hash_password, BcryptHash, Htpasswd, MAX_COST, MIN_COST};

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    content: String,
    user: String,
    password: Vec<u8>,
    /// Run bcrypt (cost 4) when this is 15 modulo 16 (not 0: short inputs end in zeros): ~1 ms per call, so not on every input.
    hash: u8,
    salt: [u8; 16],
    flip: (u8, u8),
}

fuzz_target!(|input: Input| {
    let bcrypt = input.hash % 16 == 15;
    if let Ok(h) = BcryptHash::parse(&input.content) {
        assert_eq!(h.as_str(), input.content);
        assert!((MIN_COST..=MAX_COST).contains(&h.cost()));
        assert_eq!(BcryptHash::parse(h.as_str()).ok(), Some(h));
    }
    if let Ok(file) = Htpasswd::parse(&input.content) {
        assert!(file.len() <= input.content.lines().count());
        if let Some(h) = file.hash_of(&input.user) {
            if bcrypt && h.cost() == MIN_COST {
                let _ = h.verify(&input.password);
            }
        }
    }
    if !bcrypt {
        return;
    }
    let text = hash_password(&input.password, MIN_COST, input.salt).expect("cost 4 is valid");
    let h = BcryptHash::parse(&text).expect("hash_password's output parses");
    assert!(h.verify(&input.password));
    let line = format!("user:{text}\n");
    let file = Htpasswd::parse(&line).expect("a user line parses");
    assert_eq!(file.hash_of("user").map(BcryptHash::as_str), Some(text.as_str()));
    // bcrypt reads 72 bytes and stops at NUL: within that, any other password is refused.
    let p = &input.password;
    if !p.is_empty() && p.len() < 72 && !p.contains(&0) {
        let mut other = p.clone();
        let i = input.flip.0 as usize % other.len();
        other[i] ^= input.flip.1.max(1);
        if !other.contains(&0) {
            assert!(!h.verify(&other), "{p:?} and {other:?} give the same hash");
        }
    }
});
