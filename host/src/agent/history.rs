//! The conversations of sessions this host ran lately, kept so that the next run on a session
//! need not read its history back from the database.
//!
//! An entry is the session's messages up to a message number. A run uses it only when the
//! session's last message number, which the run reads anyway with the session itself, is the
//! same: messages are append-only, so an equal number means nothing was added since — by
//! another host sharing the database, or by the API — and the entry is exactly what a read
//! would return. Anything else is a miss and the run reads the history as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::run::HISTORY_LIMIT;
use crate::llm::Message;

/// Bytes of message text the cache may hold before it starts over. Entries are not tracked
/// by recency: past the limit the cache is emptied, and the sessions in use fill it again
/// at their next run.
const MAX_BYTES: usize = 64 << 20;

struct Entry {
    last_seq: i64,
    messages: Arc<Vec<Message>>,
    bytes: usize,
}

#[derive(Default)]
pub(super) struct HistoryCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    bytes: usize,
}

fn size(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| m.estimated_tokens() as usize * 4)
        .sum()
}

impl HistoryCache {
    /// The session's messages if the cache holds them up to `last_seq`.
    pub fn get(&self, session_id: &str, last_seq: i64) -> Option<Arc<Vec<Message>>> {
        let inner = self.inner.lock().expect("history cache lock");
        let entry = inner.entries.get(session_id)?;
        (entry.last_seq == last_seq).then(|| entry.messages.clone())
    }

    /// Records that the session's messages up to `last_seq` are `messages`. Only the last
    /// [`HISTORY_LIMIT`] are kept, as many as a read returns.
    pub fn put(&self, session_id: &str, last_seq: i64, mut messages: Vec<Message>) {
        let limit = usize::try_from(HISTORY_LIMIT).unwrap_or(usize::MAX);
        if messages.len() > limit {
            messages.drain(..messages.len() - limit);
        }
        let bytes = size(&messages);
        let mut inner = self.inner.lock().expect("history cache lock");
        if let Some(old) = inner.entries.remove(session_id) {
            inner.bytes -= old.bytes;
        }
        if bytes > MAX_BYTES {
            return;
        }
        if inner.bytes + bytes > MAX_BYTES {
            inner.entries.clear();
            inner.bytes = 0;
        }
        inner.bytes += bytes;
        inner.entries.insert(
            session_id.to_owned(),
            Entry {
                last_seq,
                messages: Arc::new(messages),
                bytes,
            },
        );
    }

    /// Forgets the session: what was stored of its last run is not known for sure.
    pub fn forget(&self, session_id: &str) {
        let mut inner = self.inner.lock().expect("history cache lock");
        if let Some(old) = inner.entries.remove(session_id) {
            inner.bytes -= old.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Role;

    #[test]
    fn a_hit_needs_the_same_last_message_number() {
        let cache = HistoryCache::default();
        let conversation = vec![
            Message::text(Role::User, "hi"),
            Message::text(Role::Assistant, "hello"),
        ];
        cache.put("s1", 2, conversation.clone());
        assert_eq!(cache.get("s1", 2).as_deref(), Some(&conversation));
        // Another host (or the API) added a message: the entry no longer describes the session.
        assert!(cache.get("s1", 3).is_none());
        assert!(cache.get("s2", 2).is_none());
        cache.forget("s1");
        assert!(cache.get("s1", 2).is_none());
        assert_eq!(cache.inner.lock().unwrap().bytes, 0);
    }

    #[test]
    fn an_entry_holds_as_many_messages_as_a_read() {
        let cache = HistoryCache::default();
        let long: Vec<Message> = (0..HISTORY_LIMIT + 5)
            .map(|i| Message::text(Role::User, i.to_string()))
            .collect();
        cache.put("s", HISTORY_LIMIT + 5, long.clone());
        let kept = cache.get("s", HISTORY_LIMIT + 5).unwrap();
        assert_eq!(kept.len() as i64, HISTORY_LIMIT);
        assert_eq!(kept[..], long[5..]);
    }

    #[test]
    fn the_cache_starts_over_past_its_size() {
        let cache = HistoryCache::default();
        let big = vec![Message::text(Role::User, "x".repeat(MAX_BYTES / 3))];
        for (i, id) in ["a", "b", "c", "d"].iter().enumerate() {
            cache.put(id, i as i64, big.clone());
        }
        let inner = cache.inner.lock().unwrap();
        assert!(inner.bytes <= MAX_BYTES);
        assert!(inner.entries.contains_key("d"), "the newest entry is kept");
        assert_eq!(
            inner.bytes,
            inner.entries.values().map(|e| e.bytes).sum::<usize>()
        );
    }
}
