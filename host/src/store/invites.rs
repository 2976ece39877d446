//! Invite codes: admins hand them out, a new user registers with one. Codes are stored only
//! as their SHA-256 (they are 128-bit random values, so a fast hash suffices).

use anyhow::Result;
use sqlx::Row;

use super::{Db, now_ms};

/// An invite as stored (never with its code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRow {
    pub id: String,
    pub created_by: String,
    /// Role a user registering with it gets: `admin` or `user`.
    pub role: String,
    pub max_uses: i64,
    pub uses: i64,
    pub expires_at_ms: Option<i64>,
    pub revoked: bool,
    pub created_at_ms: i64,
}

/// Input of [`Db::create_invites`]: one row per code digest, all with the same terms.
pub struct NewInvites<'a> {
    pub created_by: &'a str,
    pub role: &'a str,
    pub max_uses: i64,
    pub expires_at_ms: Option<i64>,
    pub code_sha256s: &'a [String],
}

/// Why an invite code cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteRefusal {
    Unknown,
    Revoked,
    Expired,
    UsedUp,
}

const INVITE_COLUMNS: &str =
    "id, created_by, role, max_uses, uses, expires_at_ms, revoked, created_at_ms";

fn invite_row(row: &sqlx::any::AnyRow) -> Result<InviteRow> {
    Ok(InviteRow {
        id: row.try_get("id")?,
        created_by: row.try_get("created_by")?,
        role: row.try_get("role")?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
        expires_at_ms: row.try_get("expires_at_ms")?,
        revoked: row.try_get::<i64, _>("revoked")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl InviteRow {
    /// Whether a registration could use this invite at `now`, and if not, why.
    fn usable_at(&self, now: i64) -> Result<(), InviteRefusal> {
        if self.revoked {
            Err(InviteRefusal::Revoked)
        } else if self.expires_at_ms.is_some_and(|t| t <= now) {
            Err(InviteRefusal::Expired)
        } else if self.uses >= self.max_uses {
            Err(InviteRefusal::UsedUp)
        } else {
            Ok(())
        }
    }
}

impl Db {
    /// Stores invites for the given code digests in one transaction.
    pub async fn create_invites(&self, new: NewInvites<'_>) -> Result<Vec<InviteRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let now = now_ms();
        let mut rows = Vec::with_capacity(new.code_sha256s.len());
        for digest in new.code_sha256s {
            let row = InviteRow {
                id: crate::util::new_id(),
                created_by: new.created_by.to_owned(),
                role: new.role.to_owned(),
                max_uses: new.max_uses,
                uses: 0,
                expires_at_ms: new.expires_at_ms,
                revoked: false,
                created_at_ms: now,
            };
            sqlx::query(
                "INSERT INTO invites (id, code_sha256, created_by, role, max_uses, uses, expires_at_ms, revoked, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, 0, $7)",
            )
            .bind(&row.id)
            .bind(digest)
            .bind(&row.created_by)
            .bind(&row.role)
            .bind(row.max_uses)
            .bind(row.expires_at_ms)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            rows.push(row);
        }
        tx.commit().await?;
        Ok(rows)
    }

    /// One page of all invites, oldest first, and how many there are.
    pub async fn list_invites(&self, limit: i64, offset: i64) -> Result<(Vec<InviteRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites ORDER BY created_at_ms, id LIMIT $1 OFFSET $2"
        ))
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM invites")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let items = rows.iter().map(invite_row).collect::<Result<_>>()?;
        Ok((items, total))
    }

    /// Revokes an invite; false if there is no such invite.
    pub async fn revoke_invite(&self, id: &str) -> Result<bool> {
        let _w = self.write_lock().await;
        let done = sqlx::query("UPDATE invites SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Whether an invite code (by its SHA-256) could be used now. Advisory only: the use is
    /// claimed atomically at registration, this lets a bad code be refused before the
    /// expensive password hash.
    pub async fn check_invite(&self, code_sha256: &str) -> Result<Result<(), InviteRefusal>> {
        let row = sqlx::query(&format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE code_sha256 = $1"
        ))
        .bind(code_sha256)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row.as_ref().map(invite_row).transpose()? {
            Some(invite) => invite.usable_at(now_ms()),
            None => Err(InviteRefusal::Unknown),
        })
    }
}

/// Takes one use of an invite inside `tx` and returns the role it grants. The conditional
/// UPDATE is the claim: on PostgreSQL a concurrent claim waits for this row lock and then
/// re-checks `uses < max_uses`, so a 1-use invite admits exactly one registration.
pub(super) async fn claim_invite(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    code_sha256: &str,
) -> Result<Result<String, InviteRefusal>> {
    let now = now_ms();
    let claimed = sqlx::query(
        "UPDATE invites SET uses = uses + 1 WHERE code_sha256 = $1 AND revoked = 0 \
         AND uses < max_uses AND (expires_at_ms IS NULL OR expires_at_ms > $2)",
    )
    .bind(code_sha256)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let row = sqlx::query(&format!(
        "SELECT {INVITE_COLUMNS} FROM invites WHERE code_sha256 = $1"
    ))
    .bind(code_sha256)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(invite) = row.as_ref().map(invite_row).transpose()? else {
        return Ok(Err(InviteRefusal::Unknown));
    };
    if claimed.rows_affected() == 0 {
        // The row as it is now says why the claim failed.
        return Ok(Err(invite
            .usable_at(now)
            .err()
            .unwrap_or(InviteRefusal::UsedUp)));
    }
    Ok(Ok(invite.role))
}
