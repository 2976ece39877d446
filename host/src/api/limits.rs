//! Rate limiting of login attempts: a fixed window of failures per username and per client
//! address, in memory. Each host counts its own; an attacker spreading guesses across
//! several hosts behind a balancer gets at most `hosts ×` the allowance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::common::ApiError;

/// Failed attempts allowed per key and window.
const MAX_FAILURES: u32 = 10;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Bound on remembered keys, so a flood of random usernames cannot grow memory without limit.
const MAX_KEYS: usize = 100_000;

#[derive(Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    fn keys(username: &str, client: &str) -> [String; 2] {
        [format!("u:{username}"), format!("c:{client}")]
    }

    /// Counts one attempt for the username and the client address, refusing with 429 once
    /// either is over its allowance. The attempt is counted here, under the lock, rather than
    /// after the (slow) password check: otherwise a burst of concurrent guesses would all pass
    /// this check before the first failure was recorded. A successful attempt is refunded by
    /// [`LoginLimiter::succeeded`].
    pub fn check(&self, username: &str, client: &str) -> Result<(), ApiError> {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() >= MAX_KEYS {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
            // Still full of live entries (a flood of made-up usernames): forget them rather
            // than grow without bound; the flood's own addresses are counted again at once.
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let keys = Self::keys(username, client);
        for key in &keys {
            if let Some((count, since)) = map.get(key)
                && *count >= MAX_FAILURES
                && since.elapsed() < WINDOW
            {
                let wait = WINDOW.saturating_sub(since.elapsed()).as_secs() + 1;
                return Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    format!("too many failed sign-ins; try again in {wait} s"),
                ));
            }
        }
        for key in keys {
            let entry = map.entry(key).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
        Ok(())
    }

    /// The attempt counted by [`LoginLimiter::check`] succeeded: the username starts afresh
    /// and the address gets its attempt back.
    pub fn succeeded(&self, username: &str, client: &str) {
        let mut map = self.failures.lock().expect("limiter lock");
        map.remove(&format!("u:{username}"));
        if let Some(entry) = map.get_mut(&format!("c:{client}")) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }
}
