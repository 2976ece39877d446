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

    /// Refuses with 429 while either key is over its allowance.
    pub fn check(&self, username: &str, client: &str) -> Result<(), ApiError> {
        let map = self.failures.lock().expect("limiter lock");
        for key in Self::keys(username, client) {
            if let Some((count, since)) = map.get(&key)
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
        Ok(())
    }

    pub fn failed(&self, username: &str, client: &str) {
        let mut map = self.failures.lock().expect("limiter lock");
        if map.len() >= MAX_KEYS {
            map.retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        for key in Self::keys(username, client) {
            let entry = map.entry(key).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .expect("limiter lock")
            .remove(&format!("u:{username}"));
    }
}
