//! Fixed-window rate limits, in memory, bounded: a limiter never holds more than
//! [`MAX_KEYS`] keys, so clients sending from many addresses cannot grow it. When it is full,
//! keys whose window ended are dropped; if all are current, the oldest windows go first
//! (those clients start a new window early, which errs towards letting people in).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys one limiter remembers at most.
pub const MAX_KEYS: usize = 10_000;

/// One limit: `max` events per `window` per key.
pub struct Limiter {
    max: u32,
    window: Duration,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub fn new(max: u32, window: Duration) -> Limiter {
        Limiter {
            max,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts an event for `key`; `Err(seconds until the window ends)` past the limit.
    pub fn hit(&self, key: &str) -> Result<(), u64> {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(key) && windows.len() >= MAX_KEYS {
            windows.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            if windows.len() >= MAX_KEYS {
                let mut starts: Vec<Instant> = windows.values().map(|(s, _)| *s).collect();
                starts.sort_unstable();
                let cutoff = starts[starts.len() / 2];
                windows.retain(|_, (start, _)| *start > cutoff);
            }
        }
        let entry = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            return Err(left.as_secs().max(1));
        }
        entry.1 += 1;
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.windows.lock().unwrap().len()
    }
}

/// The registry's limits.
pub struct RateLimits {
    /// New accounts per client address.
    pub accounts: Limiter,
    /// Password sign-ins (token requests) per client address and per username.
    pub sign_ins: Limiter,
    /// Rating writes per account.
    pub ratings: Limiter,
    /// Publishes per account.
    pub publishes: Limiter,
}

impl Default for RateLimits {
    fn default() -> RateLimits {
        const HOUR: Duration = Duration::from_secs(60 * 60);
        RateLimits {
            accounts: Limiter::new(10, HOUR),
            sign_ins: Limiter::new(30, Duration::from_secs(15 * 60)),
            ratings: Limiter::new(30, HOUR),
            publishes: Limiter::new(120, HOUR),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_limit_waits_for_its_window_and_others_are_not_affected() {
        let limiter = Limiter::new(2, Duration::from_secs(60));
        assert!(limiter.hit("a").is_ok());
        assert!(limiter.hit("a").is_ok());
        let wait = limiter.hit("a").unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
        assert!(limiter.hit("b").is_ok());
    }

    #[test]
    fn many_keys_do_not_grow_the_limiter_past_its_bound() {
        let limiter = Limiter::new(1, Duration::from_secs(60));
        for i in 0..(MAX_KEYS * 3) {
            let _ = limiter.hit(&format!("client-{i}"));
        }
        assert!(limiter.len() <= MAX_KEYS, "{}", limiter.len());
    }
}
