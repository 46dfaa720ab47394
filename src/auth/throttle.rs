//! Failed-login throttling: counts failed password checks per user name and per client address in fixed windows,
//! and once a count reaches its limit, refuses further password checks for that name or address until the window
//! ends — with `429 TOOMANYREQUESTS` and `Retry-After`, before any bcrypt runs. So a flood of wrong passwords costs
//! the registry a hash lookup per request instead of a bcrypt each, and one user's password can be guessed at most
//! `limit` times a window, from however many addresses.
//!
//! Unknown user names are counted like known ones and get the same answer, so the throttle does not tell which names
//! exist. A locked name or address is refused even with the right password: answering differently would turn the
//! lock into an oracle. A success clears the user's count (not the address's: one valid account must not reset an
//! address that is guessing others). Bearer tokens never reach a password check and are never throttled.
//!
//! Process memory only, like the credential cache: per process natively, per isolate on Workers (a best effort
//! there; Cloudflare's own rate limiting rules are the platform's answer for distributed floods).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;

/// Default failed logins per user name within one window.
pub const DEFAULT_MAX_FAILURES: u32 = 10;
/// Default window length (seconds).
pub const DEFAULT_WINDOW_SECS: u64 = 60;
/// An address may fail this many times the user limit (many users can share one address behind NAT).
pub const ADDRESS_FACTOR: u32 = 5;
/// Most names and addresses tracked; when full, new ones share one bucket (so a spray of made-up names cannot reset
/// the counts by evicting them).
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: u64,
    failures: u32,
}

/// What a throttle key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
    /// Everything not tracked individually because the table is full.
    Overflow,
}

/// Failed-login counts of one registry.
#[derive(Debug)]
pub struct LoginThrottle {
    max_failures: u32,
    window_secs: u64,
    windows: RefCell<HashMap<Key, Window>>,
}

impl LoginThrottle {
    /// A throttle allowing `max_failures` per user (and [`ADDRESS_FACTOR`] times that per address) in each window of
    /// `window_secs`. `max_failures == 0` turns it off.
    pub fn new(max_failures: u32, window_secs: u64) -> Self {
        LoginThrottle { max_failures, window_secs: window_secs.max(1), windows: RefCell::new(HashMap::new()) }
    }

    fn limit(&self, key: &Key) -> u32 {
        match key {
            Key::User(_) => self.max_failures,
            Key::Address(_) | Key::Overflow => self.max_failures.saturating_mul(ADDRESS_FACTOR),
        }
    }

    fn keys(user: &str, client: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::User(user.to_string())).chain(client.map(Key::Address))
    }

    /// Seconds until `user` (from `client`) may try a password again, or `None` when it may now.
    pub fn retry_after(&self, user: &str, client: Option<IpAddr>, now: u64) -> Option<u64> {
        if self.max_failures == 0 {
            return None;
        }
        let windows = self.windows.borrow();
        Self::keys(user, client)
            .filter_map(|k| {
                let key = if windows.contains_key(&k) || windows.len() < MAX_TRACKED { k } else { Key::Overflow };
                let w = windows.get(&key)?;
                let end = w.start.saturating_add(self.window_secs);
                (now < end && w.failures >= self.limit(&key)).then(|| end - now)
            })
            .max()
    }

    /// Count a failed password check.
    pub fn failed(&self, user: &str, client: Option<IpAddr>, now: u64) {
        if self.max_failures == 0 {
            return;
        }
        let mut windows = self.windows.borrow_mut();
        for key in Self::keys(user, client) {
            let key = if windows.contains_key(&key) || windows.len() < MAX_TRACKED {
                key
            } else {
                windows.retain(|_, w| now < w.start.saturating_add(self.window_secs));
                if windows.len() < MAX_TRACKED { key } else { Key::Overflow }
            };
            let w = windows.entry(key).or_insert(Window { start: now, failures: 0 });
            if now >= w.start.saturating_add(self.window_secs) {
                *w = Window { start: now, failures: 0 };
            }
            w.failures = w.failures.saturating_add(1);
        }
    }

    /// A password check succeeded: the user's count starts over.
    pub fn succeeded(&self, user: &str) {
        self.windows.borrow_mut().remove(&Key::User(user.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)));
    const B: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2)));

    #[test]
    fn a_user_is_locked_after_the_limit_until_the_window_ends() {
        let t = LoginThrottle::new(3, 60);
        for i in 0..3 {
            assert_eq!(t.retry_after("alice", A, 100 + i), None);
            t.failed("alice", A, 100 + i);
        }
        assert_eq!(t.retry_after("alice", A, 110), Some(50));
        // From another address too: the user's guesses are what is limited.
        assert_eq!(t.retry_after("alice", B, 110), Some(50));
        assert_eq!(t.retry_after("bob", A, 110), None);
        assert_eq!(t.retry_after("alice", A, 160), None);
        t.failed("alice", A, 160);
        assert_eq!(t.retry_after("alice", A, 161), None);
    }

    #[test]
    fn an_address_spraying_names_is_locked() {
        let t = LoginThrottle::new(2, 60);
        for i in 0..(2 * ADDRESS_FACTOR) {
            assert_eq!(t.retry_after(&format!("user{i}"), A, 0), None);
            t.failed(&format!("user{i}"), A, 0);
        }
        assert_eq!(t.retry_after("anyone", A, 1), Some(59));
        assert_eq!(t.retry_after("anyone", B, 1), None);
        assert_eq!(t.retry_after("anyone", None, 1), None);
    }

    #[test]
    fn success_clears_the_user_but_not_the_address() {
        let t = LoginThrottle::new(2, 60);
        t.failed("alice", A, 0);
        t.succeeded("alice");
        t.failed("alice", A, 0);
        assert_eq!(t.retry_after("alice", A, 0), None);
        let t = LoginThrottle::new(1, 60);
        for i in 0..ADDRESS_FACTOR {
            t.failed(&format!("u{i}"), A, 0);
        }
        t.succeeded("u0");
        assert!(t.retry_after("u0", A, 0).is_some());
    }

    #[test]
    fn zero_turns_it_off() {
        let t = LoginThrottle::new(0, 60);
        for _ in 0..1000 {
            t.failed("alice", A, 0);
        }
        assert_eq!(t.retry_after("alice", A, 0), None);
    }

    #[test]
    fn a_full_table_counts_new_names_together() {
        let t = LoginThrottle::new(1, 60);
        for i in 0..MAX_TRACKED {
            t.failed(&format!("n{i}"), None, 0);
        }
        // The table is full of live windows: a new name shares the overflow bucket, which locks at the address limit.
        for i in 0..ADDRESS_FACTOR {
            assert_eq!(t.retry_after(&format!("new{i}"), None, 1), None);
            t.failed(&format!("new{i}"), None, 1);
        }
        assert!(t.retry_after("another", None, 2).is_some());
        // Once those windows are over, the table makes room again.
        t.failed("later", None, 100);
        assert_eq!(t.retry_after("other", None, 100), None);
        assert!(t.windows.borrow().contains_key(&Key::User("later".into())));
    }
}
