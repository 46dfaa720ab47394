//! One upstream fetch of a blob at a time, per process or isolate: the pull-through cache's single flight. The first
//! pull of a blob that is not cached *leads*: it registers a flight under (upstream, digest) and fetches; pulls of the
//! same blob that arrive meanwhile *wait* for that flight to end and then serve the cached blob the normal way (or, if
//! the leader cached nothing, try themselves). This is memory of one process or isolate only — other processes may
//! still fetch the same blob at the same moment, and the blob record's create-if-absent then keeps one copy (see
//! `tee`).
//!
//! A flight ends when its [`FlightGuard`] is dropped: after the leader recorded the blob, gave up caching it, or was
//! itself dropped (its client went away mid-download, which drops the response body holding the guard). Dropping the
//! guard drops the sending half of a one-shot channel, which wakes every waiter, so no waiter outlives a leader that
//! is gone. A leader that is still there but makes no progress (its client stopped reading, so the streaming fetch is
//! not polled) is noticed by the waiters' timer, where the platform has one: no bytes moved in [`STALL_SECS`], and a
//! waiter stops waiting and fetches for itself.
//!
//! Futures are `!Send` on wasm and the registry serves one thread: everything here is `Rc`/`RefCell`, and waiting uses
//! `futures`' channel and `Shared` (no runtime).

use futures::channel::oneshot;
use futures::future::{select, Either, FutureExt, LocalBoxFuture, Shared};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// Seconds a waiter waits for a leader that moves no bytes before fetching for itself.
pub(crate) const STALL_SECS: u64 = 30;

/// What identifies one fetch: the upstream's URL and the blob's digest.
type FlightKey = (String, String);

struct Flight {
    id: u64,
    done: Shared<oneshot::Receiver<()>>,
    progress: Rc<Cell<u64>>,
}

/// The flights in progress in this process or isolate.
#[derive(Default)]
pub(crate) struct Flights {
    table: Rc<RefCell<HashMap<FlightKey, Flight>>>,
    next_id: Cell<u64>,
}

/// The answer to [`Flights::join`].
pub(crate) enum Turn {
    /// Nobody is fetching this blob: the caller fetches, holding the guard until it is done.
    Lead(FlightGuard),
    /// Another request is fetching it: wait for it.
    Wait(Waiting),
}

/// Held by the request fetching a blob; dropping it ends the flight and wakes the waiters.
pub(crate) struct FlightGuard {
    table: Rc<RefCell<HashMap<FlightKey, Flight>>>,
    key: FlightKey,
    id: u64,
    progress: Rc<Cell<u64>>,
    // Dropped with the guard (after `drop` removed the entry): that is what wakes the waiters.
    _done: oneshot::Sender<()>,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// The leader is gone (finished, gave up or was dropped): look at the cache again.
    Ended,
    /// The leader moved no bytes for [`STALL_SECS`]: fetch without it.
    Stalled,
}

/// A wait for another request's fetch.
pub(crate) struct Waiting {
    done: Shared<oneshot::Receiver<()>>,
    progress: Rc<Cell<u64>>,
}

impl Flights {
    /// Lead the fetch of `digest` from `upstream`, or wait for the one in progress.
    pub(crate) fn join(&self, upstream: &str, digest: &str) -> Turn {
        let key = (upstream.to_string(), digest.to_string());
        let mut table = self.table.borrow_mut();
        if let Some(f) = table.get(&key) {
            return Turn::Wait(Waiting { done: f.done.clone(), progress: f.progress.clone() });
        }
        let id = self.next_id.get().wrapping_add(1);
        self.next_id.set(id);
        let (tx, rx) = oneshot::channel();
        let progress = Rc::new(Cell::new(0));
        table.insert(key.clone(), Flight { id, done: rx.shared(), progress: progress.clone() });
        Turn::Lead(FlightGuard { table: self.table.clone(), key, id, progress, _done: tx })
    }

    /// Flights in progress (tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.borrow().len()
    }
}

impl FlightGuard {
    /// Count `n` more bytes fetched: waiters see the leader is alive.
    pub(crate) fn advance(&self, n: usize) {
        self.progress.set(self.progress.get().wrapping_add(n as u64));
    }

    /// The counter [`FlightGuard::advance`] adds to, for a stream that reports its own bytes.
    pub(crate) fn progress_counter(&self) -> Rc<Cell<u64>> {
        self.progress.clone()
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        // Only our own entry: a waiter that stopped waiting (stalled leader) fetches without registering, so the entry
        // is ours, but be exact anyway.
        let mut table = self.table.borrow_mut();
        if table.get(&self.key).is_some_and(|f| f.id == self.id) {
            table.remove(&self.key);
        }
    }
}

impl Waiting {
    /// Wait until the leader ends, or (with a timer from `sleep`) until it has moved no bytes for [`STALL_SECS`].
    pub(crate) async fn wait(self, sleep: impl Fn(Duration) -> Option<LocalBoxFuture<'static, ()>>) -> WaitOutcome {
        let mut done = self.done;
        loop {
            let seen = self.progress.get();
            let Some(timer) = sleep(Duration::from_secs(STALL_SECS)) else {
                // No timer on this platform: the leader's end (or drop) is what wakes us.
                let _ = done.await;
                return WaitOutcome::Ended;
            };
            match select(done, timer).await {
                Either::Left(_) => return WaitOutcome::Ended,
                Either::Right((_, still)) => {
                    if still.clone().now_or_never().is_some() {
                        return WaitOutcome::Ended;
                    }
                    if self.progress.get() == seen {
                        return WaitOutcome::Stalled;
                    }
                    done = still;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    #[test]
    fn one_leader_and_waiters_woken_by_its_drop() {
        let flights = Flights::default();
        let Turn::Lead(guard) = flights.join("u", "d") else { panic!("first is the leader") };
        let Turn::Wait(w) = flights.join("u", "d") else { panic!("second waits") };
        assert!(matches!(flights.join("u", "other"), Turn::Lead(_)), "another digest is another flight");
        assert_eq!(flights.len(), 1, "the other digest's guard was dropped at once");
        drop(guard);
        assert_eq!(flights.len(), 0);
        assert_eq!(block_on(w.wait(|_| None)), WaitOutcome::Ended);
        assert!(matches!(flights.join("u", "d"), Turn::Lead(_)), "after the end, the next pull leads");
    }

    #[test]
    fn a_leader_that_moves_no_bytes_is_given_up_on() {
        let flights = Flights::default();
        let Turn::Lead(guard) = flights.join("u", "d") else { panic!() };
        let Turn::Wait(w) = flights.join("u", "d") else { panic!() };
        // A timer that fires at once: with no progress in between, the wait ends as stalled.
        let immediate = |_| Some(futures::future::ready(()).boxed_local());
        assert_eq!(block_on(w.wait(immediate)), WaitOutcome::Stalled);
        // Progress between timer rounds keeps the waiter waiting, until the leader ends.
        let Turn::Wait(w) = flights.join("u", "d") else { panic!() };
        let g = Rc::new(RefCell::new(Some(guard)));
        let rounds = Cell::new(0);
        let ticking = |_| {
            rounds.set(rounds.get() + 1);
            let g = g.clone();
            let n = rounds.get();
            Some(
                async move {
                    if n < 3 {
                        if let Some(guard) = g.borrow().as_ref() {
                            guard.advance(10);
                        }
                    } else {
                        g.borrow_mut().take();
                    }
                }
                .boxed_local(),
            )
        };
        assert_eq!(block_on(w.wait(ticking)), WaitOutcome::Ended);
        assert_eq!(rounds.get(), 3);
    }
}
