//! Fair shares of the plugin call slots: a bound on the calls one owner has in flight, so one
//! user's burst of slow tool calls queues behind itself instead of taking every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Owners = Mutex<HashMap<String, Arc<Semaphore>>>;

/// Each owner's calls in flight, at most `limit` at once. An owner has an entry only while
/// it has calls running or waiting.
pub(super) struct OwnerLimits {
    limit: usize,
    owners: Arc<Owners>,
}

/// One call's share of its owner's limit; released, and the owner's entry dropped when it
/// was the last, on drop — also when the call is dropped while it waits.
pub(super) struct OwnerPermit {
    owner: String,
    owners: Arc<Owners>,
    semaphore: Option<Arc<Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl OwnerLimits {
    pub fn new(limit: usize) -> OwnerLimits {
        OwnerLimits {
            limit: limit.max(1),
            owners: Arc::default(),
        }
    }

    /// Waits until `owner` has fewer than the limit's calls in flight.
    pub async fn acquire(&self, owner: &str) -> OwnerPermit {
        let semaphore = self
            .owners
            .lock()
            .expect("owner limits lock")
            .entry(owner.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        let mut permit = OwnerPermit {
            owner: owner.to_owned(),
            owners: self.owners.clone(),
            semaphore: Some(semaphore.clone()),
            permit: None,
        };
        // Never closed, so acquiring cannot fail.
        permit.permit = semaphore.acquire_owned().await.ok();
        permit
    }

    /// Owners with calls in flight or waiting.
    pub fn owners(&self) -> usize {
        self.owners.lock().expect("owner limits lock").len()
    }
}

impl Drop for OwnerPermit {
    fn drop(&mut self) {
        self.permit.take();
        self.semaphore.take();
        let mut owners = self.owners.lock().expect("owner limits lock");
        // Only the map's own reference left: nobody runs or waits for this owner.
        if owners
            .get(&self.owner)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            owners.remove(&self.owner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_owner_waits_for_its_own_calls_only_and_leaves_no_entry() {
        let limits = OwnerLimits::new(1);
        let first = limits.acquire("a").await;
        let _other = limits.acquire("b").await;
        let mut second = Box::pin(limits.acquire("a"));
        assert!(
            futures::poll!(second.as_mut()).is_pending(),
            "a second call of the same owner waits"
        );
        drop(first);
        let second = second.await;
        drop((second, _other));
        assert_eq!(limits.owners(), 0);
        // A call dropped while it waits leaves nothing behind either.
        let held = limits.acquire("a").await;
        let mut waiting = Box::pin(limits.acquire("a"));
        assert!(futures::poll!(waiting.as_mut()).is_pending());
        drop(waiting);
        drop(held);
        assert_eq!(limits.owners(), 0);
    }
}
