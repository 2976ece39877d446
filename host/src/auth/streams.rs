//! The event streams users hold open (SSE, streamed completions, WebSockets): at most
//! `http.max_streams_per_user` each, and each closed when the credential it was opened with
//! stops being valid.
//!
//! A stream holds a [`StreamGuard`], which frees its slot when dropped: a client that goes
//! away drops the response body, and with it the guard. Each credential with open streams
//! is watched — at once when a change on this host says so
//! ([`StreamRegistry::credentials_changed`]), and every `http.stream_recheck_s` for changes
//! made elsewhere (another host on the same PostgreSQL, the `kelp` CLI) — by asking the
//! database as a new request would.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Credential, CurrentUser};
use crate::api::ApiError;
use crate::api::http::HttpPolicy;
use crate::store::Db;

/// The open streams of this host, by user.
pub struct StreamRegistry {
    db: Db,
    max_per_user: usize,
    recheck: Duration,
    users: Mutex<HashMap<String, UserStreams>>,
}

struct UserStreams {
    open: usize,
    /// Bumped when the user's credentials changed on this host: every watch re-checks. A
    /// version, not a notification, so a watch busy re-checking cannot miss one.
    changed: watch::Sender<u64>,
    /// One watch per credential, shared by the streams opened with it: a browser's streams
    /// share its cookie, and a thousand streams on one token cost one query per interval.
    credentials: HashMap<Credential, Watched>,
}

struct Watched {
    streams: usize,
    /// Cancelled when the credential stops being valid (every stream on it ends), or when
    /// its last stream has gone (the watch ends).
    closed: CancellationToken,
}

impl StreamRegistry {
    pub fn new(db: Db, policy: &HttpPolicy) -> StreamRegistry {
        StreamRegistry {
            db,
            max_per_user: policy.max_streams_per_user,
            recheck: policy.stream_recheck,
            users: Mutex::default(),
        }
    }

    /// Takes one of `user`'s stream slots (429 `too_many_streams` when none is free) and
    /// watches the credential the request was made with.
    pub fn open(self: &Arc<Self>, user: &CurrentUser) -> Result<StreamGuard, ApiError> {
        let mut users = self.users.lock().expect("stream registry lock");
        let entry = users
            .entry(user.id().to_owned())
            .or_insert_with(|| UserStreams {
                open: 0,
                changed: watch::Sender::new(0),
                credentials: HashMap::new(),
            });
        if entry.open >= self.max_per_user {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                format!(
                    "you have {} event streams open on this server, the most allowed; close one first",
                    entry.open
                ),
            ));
        }
        entry.open += 1;
        let credential = user.credential().clone();
        let watched = match entry.credentials.get_mut(&credential) {
            Some(watched) => watched,
            None => {
                let closed = CancellationToken::new();
                tokio::spawn(watch_credential(
                    self.db.clone(),
                    user.id().to_owned(),
                    credential.clone(),
                    self.recheck,
                    entry.changed.subscribe(),
                    closed.clone(),
                ));
                entry
                    .credentials
                    .entry(credential.clone())
                    .or_insert(Watched { streams: 0, closed })
            }
        };
        watched.streams += 1;
        Ok(StreamGuard {
            registry: self.clone(),
            user_id: user.id().to_owned(),
            credential,
            closed: watched.closed.clone(),
        })
    }

    /// `user_id`'s credentials changed on this host (logout, revocation, password change,
    /// deactivation, deletion): each of their streams' credentials is checked now.
    pub fn credentials_changed(&self, user_id: &str) {
        let users = self.users.lock().expect("stream registry lock");
        if let Some(entry) = users.get(user_id) {
            entry.changed.send_modify(|v| *v += 1);
        }
    }

    /// How many streams `user_id` has open on this host.
    pub fn open_streams(&self, user_id: &str) -> usize {
        let users = self.users.lock().expect("stream registry lock");
        users.get(user_id).map_or(0, |e| e.open)
    }

    fn release(&self, user_id: &str, credential: &Credential) {
        let mut users = self.users.lock().expect("stream registry lock");
        let Some(entry) = users.get_mut(user_id) else {
            return;
        };
        entry.open -= 1;
        if let Some(watched) = entry.credentials.get_mut(credential) {
            watched.streams -= 1;
            if watched.streams == 0 {
                watched.closed.cancel();
                entry.credentials.remove(credential);
            }
        }
        if entry.open == 0 {
            users.remove(user_id);
        }
    }
}

/// Ends `closed` when the credential no longer names `user_id` (signed out, revoked,
/// expired, deactivated, deleted), or returns when its streams went away first.
async fn watch_credential(
    db: Db,
    user_id: String,
    credential: Credential,
    every: Duration,
    mut changed: watch::Receiver<u64>,
    closed: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            result = changed.changed() => {
                if result.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep(every) => {}
        }
        match credential.user(&db).await {
            Ok(Some(user)) if user.id == user_id => {}
            Ok(_) => {
                closed.cancel();
                return;
            }
            // A database that does not answer is no reason to cut a stream; the next check
            // asks again.
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "re-checking a stream's credential")
            }
        }
    }
}

/// One open stream's slot. Dropping it frees the slot (and, for the credential's last
/// stream, stops the watch).
pub struct StreamGuard {
    registry: Arc<StreamRegistry>,
    user_id: String,
    credential: Credential,
    closed: CancellationToken,
}

impl StreamGuard {
    /// Resolves when the stream must end: its credential stopped being valid.
    pub async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// `inner`, ended when the credential stops being valid, and holding this guard for as
    /// long as it lives.
    pub fn wrap<T: Send + 'static>(
        self,
        inner: impl Stream<Item = T> + Send + 'static,
    ) -> BoxStream<'static, T> {
        stream::unfold((inner.boxed(), self), |(mut inner, guard)| async move {
            tokio::select! {
                biased;
                _ = guard.closed() => None,
                item = inner.next() => item.map(|item| (item, (inner, guard))),
            }
        })
        .boxed()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.registry.release(&self.user_id, &self.credential);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::http::HttpSettings;
    use crate::store::users::UserRow;

    fn user(id: &str, credential: Credential) -> CurrentUser {
        let row = UserRow {
            id: id.into(),
            username: id.into(),
            display_name: id.into(),
            role: "user".into(),
            active: true,
            created_at_ms: 0,
            updated_at_ms: 0,
        };
        CurrentUser(row, credential)
    }

    #[tokio::test]
    async fn streams_on_one_credential_share_its_watch() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_in(dir.path()).await.unwrap();
        let settings = HttpSettings {
            max_streams_per_user: 3,
            stream_recheck_s: 3600,
            ..HttpSettings::default()
        };
        let registry = Arc::new(StreamRegistry::new(
            db,
            &HttpPolicy::new(&settings).unwrap(),
        ));
        // A token the database does not know: invalid as soon as anyone asks.
        let bob = user("bob", Credential::Bearer("unknown".into()));
        let first = registry.open(&bob).unwrap();
        let second = registry.open(&bob).unwrap();
        let other = registry
            .open(&user("bob", Credential::Cookie("other".into())))
            .unwrap();
        assert_eq!(registry.open_streams("bob"), 3);
        assert!(registry.open(&bob).is_err(), "over the limit");
        // One stream going away leaves the other on its credential watched and open.
        drop(first);
        assert_eq!(registry.open_streams("bob"), 2);
        assert!(!second.closed.is_cancelled());
        // A change makes each credential be asked now: both end.
        registry.credentials_changed("bob");
        for guard in [&second, &other] {
            tokio::time::timeout(Duration::from_secs(30), guard.closed())
                .await
                .expect("the stream ends");
        }
        drop((second, other));
        assert_eq!(registry.open_streams("bob"), 0);
        assert!(registry.users.lock().unwrap().is_empty());
    }
}
