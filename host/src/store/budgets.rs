//! Budget reservations: the estimated cost of provider calls in progress, on every host.
//!
//! A reservation is taken only if the owner's ledger plus the open reservations plus the new
//! estimate stay within each limit, and that check and the insert are one transaction that
//! concurrent reservations of the same owner cannot interleave with: on SQLite because write
//! transactions are serialised, on PostgreSQL by a transaction-scoped advisory lock on the
//! owner. A reservation is deleted in the same transaction as its call's ledger row
//! ([`release_statement`] in the step's write), so a call's cost is not counted twice, nor
//! missed in between. If that write fails, the reservation stays until it expires, standing
//! in for the cost the ledger lacks; so does a host's reservation when the host stops mid-call.

use anyhow::Result;
use sqlx::Row;

use super::batch::{Arg, Statement};
use super::{Backend, Db};

/// A host that dies leaves its reservations behind; they stop counting after this long.
/// Longer than any provider call runs.
pub const RESERVATION_TTL_MS: i64 = 30 * 60 * 1000;

/// What one owner may spend: limits in micro-dollars (`None` for no limit) over the periods
/// starting at the given epoch milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub daily: Option<i64>,
    pub day_start_ms: i64,
    pub monthly: Option<i64>,
    pub month_start_ms: i64,
}

/// An owner's spending against [`Limits`], in micro-dollars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub spent_today: i64,
    pub spent_this_month: i64,
    /// By calls in progress, on every host.
    pub reserved: i64,
}

/// Deletes reservation `id`: written with the ledger row of its call.
pub(crate) fn release_statement(id: &str) -> Statement {
    Statement::new(
        "DELETE FROM budget_reservations WHERE id = $1",
        vec![Arg::Text(id.to_owned())],
    )
}

impl Db {
    /// Reserves `micros` for `owner` as reservation `id` if every limit has room for it;
    /// false (and nothing stored) if one has not.
    pub async fn reserve_budget(
        &self,
        id: &str,
        owner: &str,
        host_id: &str,
        micros: i64,
        limits: Limits,
        now_ms: i64,
    ) -> Result<bool> {
        let mut statements = Vec::with_capacity(3);
        if self.backend == Backend::Postgres {
            // Each statement must see what the lock's previous holder committed: a snapshot
            // taken per statement, whatever the server's default isolation.
            statements.push(Statement::new(
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                vec![],
            ));
            // Held until the transaction ends; other hosts reserving for the same owner wait.
            // (Counted, because sqlx cannot read the function's `void`.)
            statements.push(Statement::new(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS l",
                vec![Arg::Text(format!("kelp-budget:{owner}"))],
            ));
        }
        statements.push(Statement::new(
            "INSERT INTO budget_reservations (id, owner_id, host_id, micros, expires_at_ms) \
             SELECT $1, $2, $3, $4, $5 \
             WHERE ($6 IS NULL OR (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                    WHERE owner_id = $2 AND created_at_ms >= $7) \
                  + (SELECT COALESCE(SUM(micros), 0) FROM budget_reservations \
                    WHERE owner_id = $2 AND expires_at_ms > $10) + $4 <= $6) \
               AND ($8 IS NULL OR (SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                    WHERE owner_id = $2 AND created_at_ms >= $9) \
                  + (SELECT COALESCE(SUM(micros), 0) FROM budget_reservations \
                    WHERE owner_id = $2 AND expires_at_ms > $10) + $4 <= $8)",
            vec![
                Arg::Text(id.to_owned()),
                Arg::Text(owner.to_owned()),
                Arg::Text(host_id.to_owned()),
                Arg::Int(micros),
                Arg::Int(now_ms + RESERVATION_TTL_MS),
                Arg::OptInt(limits.daily),
                Arg::Int(limits.day_start_ms),
                Arg::OptInt(limits.monthly),
                Arg::Int(limits.month_start_ms),
                Arg::Int(now_ms),
            ],
        ));
        // Its sums read a month of the owner's ledger: not in place on the runtime's thread.
        let changed = self.write_all_off_runtime(&statements).await?;
        Ok(changed.last() == Some(&1))
    }

    /// What the owner spent in each period and holds reserved now.
    pub async fn budget_standing(
        &self,
        owner: &str,
        limits: Limits,
        now_ms: i64,
    ) -> Result<Standing> {
        let row = sqlx::query(
            "SELECT \
               CAST((SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                     WHERE owner_id = $1 AND created_at_ms >= $2) AS BIGINT) AS today, \
               CAST((SELECT COALESCE(SUM(cost_micros), 0) FROM usage_ledger \
                     WHERE owner_id = $1 AND created_at_ms >= $3) AS BIGINT) AS month, \
               CAST((SELECT COALESCE(SUM(micros), 0) FROM budget_reservations \
                     WHERE owner_id = $1 AND expires_at_ms > $4) AS BIGINT) AS reserved",
        )
        .bind(owner)
        .bind(limits.day_start_ms)
        .bind(limits.month_start_ms)
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(Standing {
            spent_today: row.try_get("today")?,
            spent_this_month: row.try_get("month")?,
            reserved: row.try_get("reserved")?,
        })
    }

    /// Deletes expired reservations (left by calls whose settling write failed, or by hosts
    /// that stopped mid-call); call once at start. Unexpired ones stay, even a restarting
    /// host's own: the calls they cover may have cost money the ledger never heard of.
    pub async fn delete_expired_reservations(&self, now_ms: i64) -> Result<u64> {
        let changed = self
            .write_all(&[Statement::new(
                "DELETE FROM budget_reservations WHERE expires_at_ms <= $1",
                vec![Arg::Int(now_ms)],
            )])
            .await?;
        Ok(changed.iter().sum())
    }
}
