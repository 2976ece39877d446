//! Session claims: which run a session has in progress, held in the database so that one run
//! per session holds across every host sharing it, and so that a user's concurrent runs can be
//! counted on all of them.
//!
//! A claim is a lease: the host running the session's run renews it while the run lives
//! ([`Db::renew_claim`]) and clears it in the transaction that stores the run's end
//! ([`release_statement`]). A host that dies leaves its claims behind; once their lease has
//! passed, the next message takes the session over (marking the dead host's run
//! interrupted), and the host clears its own claims when it starts again.
//!
//! Leases are reckoned by the database's clock, not the hosts': a host whose clock ran ahead
//! would otherwise take live sessions over, and one whose clock lagged would keep dead ones.

use anyhow::Result;
use sqlx::Row;

use super::batch::{Arg, Statement};
use super::{Backend, Db};

/// What [`Db::claim_session`] asks for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub owner_id: &'a str,
    pub session_id: &'a str,
    pub run_id: &'a str,
    pub host_id: &'a str,
    /// Runs the owner may have in progress, this one included.
    pub max_runs: u32,
    /// How long the claim holds without renewal.
    pub lease_ms: i64,
}

/// Outcome of [`Db::claim_session`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Claimed,
    /// The session has a live run: its id.
    Busy(String),
    /// The owner already has this many runs in progress.
    TooManyRuns(u32),
    /// The session is not the owner's (or does not exist).
    NotFound,
}

/// Clears the claim of `run_id` on `session_id`: written with the run's last step.
pub(crate) fn release_statement(session_id: &str, run_id: &str) -> Statement {
    Statement::new(
        "UPDATE chat_sessions SET run_id = NULL, run_host = NULL, run_lease_until = NULL, \
         run_abort = 0 WHERE id = $1 AND run_id = $2",
        vec![
            Arg::Text(session_id.to_owned()),
            Arg::Text(run_id.to_owned()),
        ],
    )
}

/// The database's clock in epoch milliseconds, as SQL.
fn clock(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

impl Db {
    /// Claims the session for the run, unless another run holds it or the owner has
    /// `max_runs` runs in progress already (on any host). A claim whose lease has passed is
    /// taken over, and its run marked interrupted.
    pub async fn claim_session(&self, c: &ClaimRequest<'_>) -> Result<Claim> {
        // Refused but the session is free when the reason is read: its last run's release
        // landed in between, so the refusal may not have been for the owner's other runs.
        // One more try says which.
        match self.try_claim(c).await? {
            Claim::TooManyRuns(_) => self.try_claim(c).await,
            other => Ok(other),
        }
    }

    async fn try_claim(&self, c: &ClaimRequest<'_>) -> Result<Claim> {
        let ClaimRequest {
            owner_id,
            session_id,
            run_id,
            host_id,
            max_runs,
            lease_ms,
        } = *c;
        let now = clock(self.backend);
        let mut statements = Vec::with_capacity(4);
        if self.backend == Backend::Postgres {
            // The count of the owner's runs and the claim must not interleave with another
            // host's claim for the same owner (as with budget reservations, `budgets.rs`):
            // serialised per owner, each statement seeing what the lock's last holder wrote.
            statements.push(Statement::new(
                "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                vec![],
            ));
            statements.push(Statement::new(
                "SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS l",
                vec![Arg::Text(format!("kelp-runs:{owner_id}"))],
            ));
        }
        // The run of a lapsed claim was cut off with its host: it is over.
        statements.push(Statement::new(
            format!(
                "UPDATE runs SET status = 'interrupted', finished_at_ms = {now}, error_json = $1 \
                 WHERE status = 'running' AND id = (SELECT run_id FROM chat_sessions \
                 WHERE id = $2 AND owner_id = $3 AND run_id IS NOT NULL AND run_lease_until < {now})"
            ),
            vec![
                Arg::Text(
                    serde_json::json!({"code": "interrupted", "message": "the host running this run stopped answering"})
                        .to_string(),
                ),
                Arg::Text(session_id.to_owned()),
                Arg::Text(owner_id.to_owned()),
            ],
        ));
        statements.push(Statement::new(
            format!(
                "UPDATE chat_sessions SET run_id = $1, run_host = $2, run_lease_until = {now} + $3, \
                 run_abort = 0 WHERE id = $4 AND owner_id = $5 \
                 AND (run_id IS NULL OR run_lease_until < {now}) \
                 AND (SELECT COUNT(*) FROM chat_sessions c WHERE c.owner_id = $5 \
                      AND c.run_id IS NOT NULL AND c.run_lease_until >= {now} AND c.id <> $4) < $6"
            ),
            vec![
                Arg::Text(run_id.to_owned()),
                Arg::Text(host_id.to_owned()),
                Arg::Int(lease_ms),
                Arg::Text(session_id.to_owned()),
                Arg::Text(owner_id.to_owned()),
                Arg::Int(i64::from(max_runs)),
            ],
        ));
        let changed = self.write_all(&statements).await?;
        if changed.last() == Some(&1) {
            return Ok(Claim::Claimed);
        }
        // Refused: say why (the state may have moved since, which only matters to the reason).
        let row = sqlx::query(&format!(
            "SELECT CASE WHEN run_lease_until >= {now} THEN run_id END AS holder \
             FROM chat_sessions WHERE id = $1 AND owner_id = $2"
        ))
        .bind(session_id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(Claim::NotFound);
        };
        Ok(match row.try_get::<Option<String>, _>("holder")? {
            Some(holder) => Claim::Busy(holder),
            None => Claim::TooManyRuns(max_runs),
        })
    }

    /// Extends the lease of `run_id`'s claim on `session_id` by `lease_ms` from now. `None`
    /// if the run no longer holds it (the session was deleted, or the lease lapsed and another
    /// run took it); otherwise whether an abort was asked for meanwhile.
    pub async fn renew_claim(
        &self,
        session_id: &str,
        run_id: &str,
        lease_ms: i64,
    ) -> Result<Option<bool>> {
        let _w = self.write_lock().await;
        let row = sqlx::query(&format!(
            "UPDATE chat_sessions SET run_lease_until = {} + $1 WHERE id = $2 AND run_id = $3 \
             RETURNING run_abort",
            clock(self.backend)
        ))
        .bind(lease_ms)
        .bind(session_id)
        .bind(run_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get::<i64, _>("run_abort")? != 0))
            .transpose()
    }

    /// Clears `run_id`'s claim on `session_id`, if it still holds it.
    pub async fn release_claim(&self, session_id: &str, run_id: &str) -> Result<()> {
        self.write_all(&[release_statement(session_id, run_id)])
            .await
            .map(drop)
    }

    /// Asks the host running the owner's session's run to stop it; the run's id, or `None`
    /// if the session has no live run.
    pub async fn request_abort(&self, owner_id: &str, session_id: &str) -> Result<Option<String>> {
        let _w = self.write_lock().await;
        let row = sqlx::query(&format!(
            "UPDATE chat_sessions SET run_abort = 1 WHERE id = $1 AND owner_id = $2 \
             AND run_id IS NOT NULL AND run_lease_until >= {} RETURNING run_id",
            clock(self.backend)
        ))
        .bind(session_id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get("run_id")?)).transpose()
    }

    /// The run holding a live claim on the session, if any.
    pub async fn live_claim(&self, session_id: &str) -> Result<Option<String>> {
        let row = sqlx::query(&format!(
            "SELECT run_id FROM chat_sessions WHERE id = $1 AND run_id IS NOT NULL \
             AND run_lease_until >= {}",
            clock(self.backend)
        ))
        .bind(session_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok(r.try_get("run_id")?)).transpose()
    }

    /// The owner's sessions with a live run, and the runs' ids.
    pub async fn running_sessions(&self, owner_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(&format!(
            "SELECT id, run_id FROM chat_sessions WHERE owner_id = $1 AND run_id IS NOT NULL \
             AND run_lease_until >= {}",
            clock(self.backend)
        ))
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("run_id")?)))
            .collect()
    }

    /// Clears the claims `host_id`'s last process left behind; call once at start, before the
    /// host runs anything.
    pub async fn release_host_claims(&self, host_id: &str) -> Result<u64> {
        let changed = self
            .write_all(&[Statement::new(
                "UPDATE chat_sessions SET run_id = NULL, run_host = NULL, run_lease_until = NULL, \
                 run_abort = 0 WHERE run_id IS NOT NULL AND run_host = $1",
                vec![Arg::Text(host_id.to_owned())],
            )])
            .await?;
        Ok(changed.iter().sum())
    }
}
