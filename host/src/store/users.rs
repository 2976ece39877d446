//! Users and the credentials that authenticate them.

use anyhow::Result;
use sqlx::Row;

use super::{Db, now_ms};

/// Who a token or session digest belongs to, remembered briefly: every API request
/// authenticates, and this saves a database round trip on most of them. Every write that
/// can change the answer (revoking, logging out, password, role, deactivation, deletion)
/// bumps `epoch` after it commits, which invalidates every entry of this host at once.
/// Another host sharing the database sees such a change within [`AUTH_CACHE_TTL`].
#[derive(Default)]
pub struct AuthCache {
    epoch: std::sync::atomic::AtomicU64,
    entries:
        std::sync::Mutex<std::collections::HashMap<String, (UserRow, std::time::Instant, u64)>>,
}

/// How long a cached authentication stays valid without a local change.
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(2);
/// Entries kept at most; the map is cleared past this rather than tracking recency.
const AUTH_CACHE_MAX: usize = 10_000;

impl AuthCache {
    fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn get(&self, key: &str) -> Option<UserRow> {
        let entries = self.entries.lock().expect("auth cache lock");
        let (user, at, epoch) = entries.get(key)?;
        (*epoch == self.epoch() && at.elapsed() < AUTH_CACHE_TTL).then(|| user.clone())
    }

    /// `epoch` is the epoch read before the lookup began, so a lookup racing a write can
    /// never store a stale answer under the new epoch.
    fn put(&self, key: String, user: UserRow, epoch: u64) {
        let mut entries = self.entries.lock().expect("auth cache lock");
        if entries.len() >= AUTH_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key, (user, std::time::Instant::now(), epoch));
    }

    pub(crate) fn invalidate(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A user as stored (without the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub active: bool,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

pub(crate) const USER_COLUMNS: &str =
    "u.id, u.username, u.display_name, u.role, u.active, u.created_at_ms, u.updated_at_ms";

pub(crate) fn user_row(row: &sqlx::any::AnyRow) -> Result<UserRow> {
    Ok(UserRow {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        role: row.try_get("role")?,
        active: row.try_get::<i64, _>("active")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

impl Db {
    /// The active user a bearer token (by its SHA-256) belongs to: an API token, or the
    /// token of a login session. Both caches are asked before either table, so a login
    /// token sent as a bearer does not cost a failed API-token query on every request.
    pub async fn user_by_bearer(&self, token_sha256: &str) -> Result<Option<UserRow>> {
        let cached = [format!("t:{token_sha256}"), format!("s:{token_sha256}")]
            .iter()
            .find_map(|key| self.auth_cache.get(key));
        if let Some(user) = cached {
            return Ok(Some(user));
        }
        match self.user_by_api_token(token_sha256).await? {
            Some(user) => Ok(Some(user)),
            None => self.user_by_login_session(token_sha256).await,
        }
    }

    /// The active user an API token (by its SHA-256) belongs to, if the token is valid.
    pub async fn user_by_api_token(&self, token_sha256: &str) -> Result<Option<UserRow>> {
        let key = format!("t:{token_sha256}");
        if let Some(user) = self.auth_cache.get(&key) {
            return Ok(Some(user));
        }
        let epoch = self.auth_cache.epoch();
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM api_tokens t JOIN users u ON u.id = t.user_id \
             WHERE t.token_sha256 = $1 AND t.revoked = 0 AND u.active = 1"
        ))
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let user = row.as_ref().map(user_row).transpose()?;
        if let Some(user) = &user {
            self.auth_cache.put(key, user.clone(), epoch);
        }
        Ok(user)
    }

    /// The active user a login session (by its SHA-256) belongs to, if unexpired.
    pub async fn user_by_login_session(&self, token_sha256: &str) -> Result<Option<UserRow>> {
        let key = format!("s:{token_sha256}");
        if let Some(user) = self.auth_cache.get(&key) {
            return Ok(Some(user));
        }
        let epoch = self.auth_cache.epoch();
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM login_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_sha256 = $1 AND s.expires_at_ms > $2 AND u.active = 1"
        ))
        .bind(token_sha256)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        let user = row.as_ref().map(user_row).transpose()?;
        if let Some(user) = &user {
            self.auth_cache.put(key, user.clone(), epoch);
        }
        Ok(user)
    }

    /// How many users exist (first-run setup is open only while this is 0).
    pub async fn count_users(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}

/// Input of [`Db::create_user`].
pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
}

impl Db {
    /// Creates the first admin, only if setup has not happened yet. `Ok(None)` if it has.
    pub async fn create_first_admin(&self, user: NewUser<'_>) -> Result<Option<UserRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let marked =
            sqlx::query("INSERT INTO setup_marker (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
                .execute(&mut *tx)
                .await?;
        if marked.rows_affected() == 0 {
            return Ok(None);
        }
        let row = insert_user(&mut tx, &user).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Creates a user; `Ok(None)` if the username is taken.
    pub async fn create_user(&self, user: NewUser<'_>) -> Result<Option<UserRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("SELECT 1 AS x FROM users WHERE username = $1")
            .bind(user.username)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if taken {
            return Ok(None);
        }
        let row = insert_user(&mut tx, &user).await?;
        // The CLI can create the first admin too; mark setup as done either way.
        sqlx::query("INSERT INTO setup_marker (id) VALUES (1) ON CONFLICT (id) DO NOTHING")
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// A user and their password hash, by username.
    pub async fn user_with_password(&self, username: &str) -> Result<Option<(UserRow, String)>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, u.password_hash FROM users u WHERE u.username = $1"
        ))
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_row(&r)?, r.try_get("password_hash")?)))
            .transpose()
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<UserRow>> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(user_row).transpose()
    }

    pub async fn password_hash(&self, user_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("password_hash")).transpose()?)
    }

    pub async fn set_display_name(
        &self,
        user_id: &str,
        display_name: &str,
    ) -> Result<Option<UserRow>> {
        {
            let _w = self.write_lock().await;
            sqlx::query("UPDATE users SET display_name = $1, updated_at_ms = $2 WHERE id = $3")
                .bind(display_name)
                .bind(now_ms())
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        }
        self.auth_cache.invalidate();
        self.get_user(user_id).await
    }

    pub async fn create_login_session(
        &self,
        user_id: &str,
        token_sha256: &str,
        ttl_ms: i64,
    ) -> Result<()> {
        let _w = self.write_lock().await;
        let now = now_ms();
        sqlx::query("INSERT INTO login_sessions (token_sha256, user_id, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4)")
            .bind(token_sha256)
            .bind(user_id)
            .bind(now)
            .bind(now + ttl_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn delete_login_session(&self, token_sha256: &str) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query("DELETE FROM login_sessions WHERE token_sha256 = $1")
            .bind(token_sha256)
            .execute(&self.pool)
            .await?;
        self.auth_cache.invalidate();
        Ok(())
    }

    pub async fn create_api_token(
        &self,
        user_id: &str,
        name: &str,
        token_sha256: &str,
    ) -> Result<ApiTokenRow> {
        let _w = self.write_lock().await;
        let row = ApiTokenRow {
            id: crate::util::new_id(),
            name: name.to_owned(),
            created_at_ms: now_ms(),
            last_used_at_ms: None,
            revoked: false,
        };
        sqlx::query(
            "INSERT INTO api_tokens (id, user_id, name, token_sha256, created_at_ms, revoked) VALUES ($1, $2, $3, $4, $5, 0)",
        )
        .bind(&row.id)
        .bind(user_id)
        .bind(name)
        .bind(token_sha256)
        .bind(row.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(row)
    }

    pub async fn list_api_tokens(
        &self,
        user_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ApiTokenRow>, i64)> {
        let rows = sqlx::query(
            "SELECT id, name, created_at_ms, last_used_at_ms, revoked FROM api_tokens WHERE user_id = $1 \
             ORDER BY created_at_ms, id LIMIT $2 OFFSET $3",
        )
        .bind(user_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(ApiTokenRow {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                    last_used_at_ms: r.try_get("last_used_at_ms")?,
                    revoked: r.try_get::<i64, _>("revoked")? != 0,
                })
            })
            .collect::<Result<_>>()?;
        Ok((items, total))
    }

    /// Revokes one of the user's tokens; false if the user has no such token.
    pub async fn revoke_api_token(&self, user_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_lock().await;
        let done = sqlx::query("UPDATE api_tokens SET revoked = 1 WHERE id = $1 AND user_id = $2")
            .bind(id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        self.auth_cache.invalidate();
        Ok(done.rows_affected() > 0)
    }
}

/// An API token as listed (never with its value).
#[derive(Debug, Clone)]
pub struct ApiTokenRow {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked: bool,
}

async fn insert_user(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user: &NewUser<'_>,
) -> Result<UserRow> {
    let now = now_ms();
    let row = UserRow {
        id: crate::util::new_id(),
        username: user.username.to_owned(),
        display_name: user.display_name.to_owned(),
        role: user.role.to_owned(),
        active: true,
        created_at_ms: now,
        updated_at_ms: now,
    };
    sqlx::query(
        "INSERT INTO users (id, username, display_name, password_hash, role, active, created_at_ms, updated_at_ms) \
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&row.id)
    .bind(&row.username)
    .bind(&row.display_name)
    .bind(user.password_hash)
    .bind(&row.role)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(row)
}

/// Why a registration with an invite was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationRefusal {
    Invite(super::invites::InviteRefusal),
    UsernameTaken,
}

/// The outcome of an admin's change to a user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountChange<T> {
    Done(T),
    NotFound,
    /// Admins may not deactivate, demote or delete themselves: they would lock themselves out.
    OwnAccount,
    /// It would leave no active admin to manage the host.
    LastAdmin,
}

/// What an admin does to an account.
enum AccountAction<'a> {
    Update {
        display_name: Option<&'a str>,
        role: Option<&'a str>,
    },
    SetActive(bool),
    Delete,
}

fn is_unique_violation(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::Database(e)) if e.is_unique_violation()
    )
}

impl Db {
    /// Creates a user with the role an invite grants, taking one use of the invite in the
    /// same transaction: a user exists if and only if the use was counted.
    pub async fn register_with_invite(
        &self,
        code_sha256: &str,
        username: &str,
        display_name: &str,
        password_hash: &str,
    ) -> Result<Result<UserRow, RegistrationRefusal>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let taken = sqlx::query("SELECT 1 AS x FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if taken {
            return Ok(Err(RegistrationRefusal::UsernameTaken));
        }
        let role = match super::invites::claim_invite(&mut tx, code_sha256).await? {
            Ok(role) => role,
            Err(refusal) => return Ok(Err(RegistrationRefusal::Invite(refusal))),
        };
        let new = NewUser {
            username,
            display_name,
            password_hash,
            role: &role,
        };
        let row = match insert_user(&mut tx, &new).await {
            Ok(row) => row,
            // A concurrent registration took the name after the check above (PostgreSQL);
            // dropping the transaction gives the invite use back.
            Err(e) if is_unique_violation(&e) => {
                return Ok(Err(RegistrationRefusal::UsernameTaken));
            }
            Err(e) => return Err(e),
        };
        tx.commit().await?;
        Ok(Ok(row))
    }

    /// One page of all users, oldest first, and how many there are.
    pub async fn list_users(&self, limit: i64, offset: i64) -> Result<(Vec<UserRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u ORDER BY u.created_at_ms, u.id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let items = rows.iter().map(user_row).collect::<Result<_>>()?;
        Ok((items, self.count_users().await?))
    }

    /// Sets a user's password and ends every login session of theirs except `keep` (the
    /// SHA-256 of the session making the change, if it is one), so a thief's session dies.
    pub async fn set_password(
        &self,
        user_id: &str,
        password_hash: &str,
        keep_session_sha256: Option<&str>,
    ) -> Result<()> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1, updated_at_ms = $2 WHERE id = $3")
            .bind(password_hash)
            .bind(now_ms())
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM login_sessions WHERE user_id = $1 AND token_sha256 <> $2")
            .bind(user_id)
            .bind(keep_session_sha256.unwrap_or(""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.auth_cache.invalidate();
        Ok(())
    }

    /// Changes a user's display name and/or role, on behalf of admin `actor_id`.
    pub async fn update_user(
        &self,
        actor_id: &str,
        user_id: &str,
        display_name: Option<&str>,
        role: Option<&str>,
    ) -> Result<AccountChange<UserRow>> {
        let action = AccountAction::Update { display_name, role };
        let changed = self.change_account(actor_id, user_id, action).await;
        self.auth_cache.invalidate();
        changed
    }

    /// Activates or deactivates a user on behalf of admin `actor_id`. Deactivation also ends
    /// their login sessions; their API tokens stop working because lookups require `active`.
    pub async fn set_user_active(
        &self,
        actor_id: &str,
        user_id: &str,
        active: bool,
    ) -> Result<AccountChange<UserRow>> {
        let action = AccountAction::SetActive(active);
        let changed = self.change_account(actor_id, user_id, action).await;
        self.auth_cache.invalidate();
        changed
    }

    /// Deletes a user and, by `ON DELETE CASCADE`, everything they own. Returns the user as
    /// they were.
    pub async fn delete_user(
        &self,
        actor_id: &str,
        user_id: &str,
    ) -> Result<AccountChange<UserRow>> {
        let changed = self
            .change_account(actor_id, user_id, AccountAction::Delete)
            .await;
        self.auth_cache.invalidate();
        changed
    }

    /// Applies `action` in a transaction after checking that it neither takes away the
    /// acting admin's own standing nor removes the last active admin.
    async fn change_account(
        &self,
        actor_id: &str,
        user_id: &str,
        action: AccountAction<'_>,
    ) -> Result<AccountChange<UserRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        // On PostgreSQL, two admins demoting each other at once could each see the other
        // still active; locking every active admin row (in id order, so two such
        // transactions cannot deadlock) makes the second wait and then see the first's
        // change. SQLite is serialised by the write lock already.
        let lock = match self.backend {
            super::Backend::Postgres => " FOR UPDATE",
            super::Backend::Sqlite => "",
        };
        let admins: Vec<String> = sqlx::query(&format!(
            "SELECT id FROM users WHERE role = 'admin' AND active = 1 ORDER BY id{lock}"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
        let select = format!("SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1");
        let found = sqlx::query(&select)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(target) = found.as_ref().map(user_row).transpose()? else {
            return Ok(AccountChange::NotFound);
        };
        let loses_standing = match action {
            AccountAction::Update { role, .. } => role.is_some_and(|r| r != "admin"),
            AccountAction::SetActive(active) => !active,
            AccountAction::Delete => true,
        };
        if loses_standing && target.id == actor_id {
            return Ok(AccountChange::OwnAccount);
        }
        let removes_admin = loses_standing && target.role == "admin" && target.active;
        if removes_admin && !admins.iter().any(|id| *id != target.id) {
            return Ok(AccountChange::LastAdmin);
        }
        match action {
            AccountAction::Update { display_name, role } => {
                sqlx::query(
                    "UPDATE users SET display_name = COALESCE($1, display_name), \
                     role = COALESCE($2, role), updated_at_ms = $3 WHERE id = $4",
                )
                .bind(display_name)
                .bind(role)
                .bind(now_ms())
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            }
            AccountAction::SetActive(active) => {
                sqlx::query("UPDATE users SET active = $1, updated_at_ms = $2 WHERE id = $3")
                    .bind(i64::from(active))
                    .bind(now_ms())
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                if !active {
                    sqlx::query("DELETE FROM login_sessions WHERE user_id = $1")
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            AccountAction::Delete => {
                // Plugins' kv data is keyed by owner without a foreign key (an owner may be a
                // channel user too), so it does not cascade: delete it explicitly.
                sqlx::query("DELETE FROM plugin_kv WHERE owner = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(AccountChange::Done(target));
            }
        }
        let after = sqlx::query(&select)
            .bind(user_id)
            .fetch_one(&mut *tx)
            .await?;
        let after = user_row(&after)?;
        tx.commit().await?;
        Ok(AccountChange::Done(after))
    }
}
