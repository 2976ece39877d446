//! Rate limiting of sign-in attempts (login, and the current password of a password change),
//! in memory, per host: an attacker spreading guesses across several hosts behind a balancer
//! gets at most `hosts ×` the allowance.
//!
//! Three counters of failures in a window, each answering a different attacker, and none
//! letting one client lock another out:
//! - per (username, client): one client guessing one account is refused after
//!   [`PAIR_LIMIT`] failures. The account's owner, signing in from elsewhere, is not.
//! - per client, across usernames: one client trying many accounts is refused after
//!   [`CLIENT_LIMIT`] failures.
//! - per username, across clients: many clients guessing one account (a botnet) are slowed,
//!   not refused. After [`SLOWDOWN_AFTER`] failures, attempts on the account are taken one
//!   per [`PACE`], in order of arrival, and each is checked when its turn comes — so a
//!   correct password still signs in (after a wait), and guessing is held to one try per
//!   [`PACE`]. Only a queue longer than [`MAX_WAIT`] is refused; keeping it that full takes a
//!   steady try per second from ever new addresses, each of which the other two limits stop
//!   after a few tries.
//!
//! The client is [`super::http::ClientInfo`]'s address: the TCP peer, or what a trusted
//! proxy reports. Memory is bounded by [`MAX_KEYS`]; when full, the entries with the fewest
//! failures go first, so flooding the map with new keys cannot reset a counter that is near
//! or over its limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::common::ApiError;

/// Failures allowed per (username, client) and window.
const PAIR_LIMIT: u32 = 10;
/// Failures allowed per client, across usernames, and window.
const CLIENT_LIMIT: u32 = 100;
/// Failures on one username (from anyone) after which its attempts are paced.
const SLOWDOWN_AFTER: u32 = 10;
/// One paced attempt per username per this.
const PACE: Duration = Duration::from_secs(1);
/// An attempt that would wait longer than this for its turn is refused instead.
const MAX_WAIT: Duration = Duration::from_secs(30);
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Bound on remembered keys, so a flood of made-up usernames or addresses cannot grow memory.
const MAX_KEYS: usize = 100_000;

/// The client a limit counts: an IPv4 address, or the /64 network of an IPv6 one. One IPv6
/// subscriber usually holds a whole /64 (2^64 addresses), so counting single addresses there
/// would let one machine be as many clients as it likes.
fn network_of(client: IpAddr) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(bits))
            }
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, IpAddr),
    Client(IpAddr),
    Username(String),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
    /// Username entries: when the next paced attempt may be checked.
    next_turn: Instant,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            since: now,
            next_turn: now,
        }
    }

    fn live(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) < WINDOW
    }
}

pub struct LoginLimiter {
    capacity: usize,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::with_capacity(MAX_KEYS)
    }
}

fn too_many(message: String) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", message)
}

/// One counted attempt. Unless [`Attempt::succeeded`] is called, it stays counted as a
/// failure — also when the client goes away before its answer.
#[must_use = "call `succeeded` when the password was right"]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    username: Option<String>,
    client: IpAddr,
}

impl Attempt<'_> {
    /// The password was right: the pair starts afresh and the other counters get this
    /// attempt back.
    pub fn succeeded(self) {
        let mut map = self.limiter.entries.lock().expect("limiter lock");
        if let Some(entry) = map.get_mut(&Key::Client(self.client)) {
            entry.failures = entry.failures.saturating_sub(1);
        }
        if let Some(username) = self.username {
            if let Some(entry) = map.get_mut(&Key::Username(username.clone())) {
                entry.failures = entry.failures.saturating_sub(1);
            }
            map.remove(&Key::Pair(username, self.client));
        }
    }
}

impl LoginLimiter {
    fn with_capacity(capacity: usize) -> LoginLimiter {
        LoginLimiter {
            capacity,
            entries: Mutex::default(),
        }
    }

    /// Admits one attempt by `client` on `username` (`None` for a name that cannot exist,
    /// which counts against the client only), waiting for its turn when the username is
    /// being paced; refuses with 429 once a limit is reached. The attempt is counted here,
    /// before the (slow) password check, so a burst of concurrent guesses cannot all pass
    /// before the first failure is recorded.
    pub async fn attempt(
        &self,
        username: Option<&str>,
        client: IpAddr,
    ) -> Result<Attempt<'_>, ApiError> {
        let client = network_of(client);
        let wait = self.admit(username, client, Instant::now())?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(Attempt {
            limiter: self,
            username: username.map(str::to_owned),
            client,
        })
    }

    /// [`LoginLimiter::attempt`] at `now`, answering how long the attempt must wait.
    fn admit(
        &self,
        username: Option<&str>,
        client: IpAddr,
        now: Instant,
    ) -> Result<Duration, ApiError> {
        let mut map = self.entries.lock().expect("limiter lock");
        let retry_in = |entry: &Entry| {
            WINDOW
                .saturating_sub(now.saturating_duration_since(entry.since))
                .as_secs()
                + 1
        };
        let live =
            |map: &HashMap<Key, Entry>, key: &Key| map.get(key).filter(|e| e.live(now)).copied();
        if let Some(entry) = live(&map, &Key::Client(client))
            && entry.failures >= CLIENT_LIMIT
        {
            return Err(too_many(format!(
                "too many failed sign-ins from your address; try again in {} s",
                retry_in(&entry)
            )));
        }
        let mut keys = vec![Key::Client(client)];
        let mut wait = Duration::ZERO;
        if let Some(username) = username {
            let pair = Key::Pair(username.to_owned(), client);
            if let Some(entry) = live(&map, &pair)
                && entry.failures >= PAIR_LIMIT
            {
                return Err(too_many(format!(
                    "too many failed sign-ins; try again in {} s",
                    retry_in(&entry)
                )));
            }
            let user = Key::Username(username.to_owned());
            if let Some(entry) = live(&map, &user)
                && entry.failures >= SLOWDOWN_AFTER
            {
                let turn = entry.next_turn.max(now);
                wait = turn - now;
                if wait > MAX_WAIT {
                    return Err(too_many(format!(
                        "this account is having many failed sign-ins, so they are taken one at a time; try again in {} s",
                        (wait - MAX_WAIT).as_secs() + 1
                    )));
                }
                if let Some(entry) = map.get_mut(&user) {
                    entry.next_turn = turn + PACE;
                }
            }
            keys.extend([pair, user]);
        }
        if map.len() + keys.len() > self.capacity {
            self.evict(&mut map, now);
        }
        for key in keys {
            let entry = map.entry(key).or_insert_with(|| Entry::new(now));
            if !entry.live(now) {
                *entry = Entry::new(now);
            }
            entry.failures += 1;
        }
        Ok(wait)
    }

    /// Makes room: first the expired entries, then — a flood of live ones — the tenth with
    /// the fewest failures (oldest first among equals). Clearing everything instead would
    /// hand every attacker a fresh allowance.
    fn evict(&self, map: &mut HashMap<Key, Entry>, now: Instant) {
        map.retain(|_, e| e.live(now));
        if map.len() + 3 <= self.capacity {
            return;
        }
        let mut ranked: Vec<(u32, Instant, Key)> = map
            .iter()
            .map(|(k, e)| (e.failures, e.since, k.clone()))
            .collect();
        let cut = (self.capacity / 10).max(3).min(ranked.len());
        ranked.select_nth_unstable_by(cut - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, key) in ranked.into_iter().take(cut) {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ipv6_network_is_one_client() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for n in 0..PAIR_LIMIT {
            // A new address in the same /64 for every guess.
            let address: IpAddr = format!("2001:db8:1:2::{:x}", n + 1).parse().unwrap();
            limiter
                .admit(Some("admin"), network_of(address), now)
                .unwrap();
        }
        let next: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(limiter.admit(Some("bob"), network_of(next), now).is_ok());
        let err = limiter
            .admit(Some("admin"), network_of(next), now)
            .unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        // Another network is another client.
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limiter.admit(Some("admin"), network_of(other), now).is_ok());
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n))
    }

    #[test]
    fn one_client_is_refused_on_one_account_and_others_are_not() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..PAIR_LIMIT {
            limiter.admit(Some("admin"), ip(1), now).unwrap();
        }
        let refused = limiter.admit(Some("admin"), ip(1), now).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        // The same client on another account, and another client on this one, go on.
        limiter.admit(Some("alice"), ip(1), now).unwrap();
        limiter.admit(Some("admin"), ip(2), now).unwrap();
        // A window later, the pair starts afresh.
        limiter
            .admit(Some("admin"), ip(1), now + WINDOW + PACE)
            .unwrap();
    }

    #[test]
    fn one_client_across_many_accounts_is_refused() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for n in 0..CLIENT_LIMIT {
            limiter
                .admit(Some(&format!("user{n}")), ip(1), now)
                .unwrap();
        }
        assert!(limiter.admit(Some("another"), ip(1), now).is_err());
        assert!(limiter.admit(None, ip(1), now).is_err());
        limiter.admit(Some("another"), ip(2), now).unwrap();
    }

    #[test]
    fn many_clients_on_one_account_are_paced_not_refused() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        let waits: Vec<Duration> = (0..SLOWDOWN_AFTER + 5)
            .map(|n| limiter.admit(Some("admin"), ip(n), now).unwrap())
            .collect();
        // Until the threshold nothing waits; then one attempt per PACE, in arrival order.
        assert!(
            waits[..SLOWDOWN_AFTER as usize]
                .iter()
                .all(Duration::is_zero)
        );
        let paced = &waits[SLOWDOWN_AFTER as usize..];
        for (i, wait) in paced.iter().enumerate() {
            assert_eq!(*wait, PACE * i as u32, "{waits:?}");
        }
        // A queue longer than MAX_WAIT is refused; after it drains, attempts go on.
        let mut n = 100;
        while limiter.admit(Some("admin"), ip(n), now).is_ok() {
            n += 1;
            assert!(n < 1000, "the queue never filled");
        }
        let later = now + MAX_WAIT + PACE * 10;
        limiter.admit(Some("admin"), ip(n), later).unwrap();
        // Other accounts are not slowed.
        assert!(limiter.admit(Some("alice"), ip(1), now).unwrap().is_zero());
    }

    #[test]
    fn a_flood_of_new_keys_does_not_reset_a_counter_at_its_limit() {
        let limiter = LoginLimiter::with_capacity(100);
        let now = Instant::now();
        for _ in 0..PAIR_LIMIT {
            limiter.admit(Some("admin"), ip(1), now).unwrap();
        }
        // Ten times the capacity of made-up names from made-up addresses.
        for n in 0..1000 {
            limiter
                .admit(Some(&format!("made-up-{n}")), ip(1000 + n), now)
                .unwrap();
            assert!(limiter.entries.lock().unwrap().len() <= 100);
        }
        assert!(
            limiter.admit(Some("admin"), ip(1), now).is_err(),
            "the flood reset the guesser's counter"
        );
    }

    #[test]
    fn success_gives_the_attempt_back() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..PAIR_LIMIT {
            limiter.admit(Some("admin"), ip(1), now).unwrap();
        }
        assert!(limiter.admit(Some("admin"), ip(1), now).is_err());
        // A success of the pair (its owner after some typos) starts it afresh.
        Attempt {
            limiter: &limiter,
            username: Some("admin".into()),
            client: ip(1),
        }
        .succeeded();
        limiter.admit(Some("admin"), ip(1), now).unwrap();
    }
}
