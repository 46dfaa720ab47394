//! What the core's own tests share: an [`Environment`] with a settable clock, counting randomness (distinct and
//! repeatable) and server errors that fail the test, and reading a response body whole.

use super::Environment;
use crate::api::Response;
use futures::executor::block_on;
use std::cell::Cell;

/// A test environment; `now` starts where the test sets it and moves only when the test moves it.
pub(super) struct TestEnv {
    pub now: Cell<u64>,
    n: Cell<u64>,
}

impl TestEnv {
    pub fn at(now: u64) -> Self {
        TestEnv { now: Cell::new(now), n: Cell::new(0) }
    }
}

impl Environment for TestEnv {
    fn now_unix(&self) -> u64 {
        self.now.get()
    }
    fn random_bytes(&self) -> [u8; 16] {
        counted_bytes(&self.n)
    }
    fn log_error(&self, m: &str) {
        panic!("unexpected server error: {m}");
    }
}

/// Distinct, repeatable "random" bytes for test environments: the next value of the counter `n`.
pub(super) fn counted_bytes(n: &Cell<u64>) -> [u8; 16] {
    n.set(n.get() + 1);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&n.get().to_le_bytes());
    b
}

/// A response's whole body.
pub(super) fn body(resp: Response) -> Vec<u8> {
    let mut b = resp.into_body();
    let mut out = Vec::new();
    while let Some(c) = block_on(b.next_chunk()) {
        out.extend_from_slice(&c.unwrap());
    }
    out
}
