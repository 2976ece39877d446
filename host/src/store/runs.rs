//! Agent runs, their persisted events and the usage ledger.
//!
//! The agent loop writes what one step produced — the message, the boundary events, the
//! ledger row, the run's counters — in one transaction ([`Db::commit_step`]): a crash leaves
//! either all of a step or none of it, and a step costs one commit instead of four.

use anyhow::Result;
use sqlx::Row;

use super::sessions::MessageRow;
use super::{Db, now_ms};

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub session_id: String,
    pub owner_id: String,
    pub status: String,
    pub error: Option<serde_json::Value>,
    pub steps: i64,
    pub usage: serde_json::Value,
    pub cost_micros: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A persisted session event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub seq: i64,
    pub run_id: String,
    pub kind: String,
    pub data: serde_json::Value,
}

/// One provider call's usage and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerRow {
    pub owner_id: String,
    pub run_id: String,
    pub session_id: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    pub created_at_ms: i64,
}

/// The run's counters after a step, or its end.
#[derive(Debug, Clone, PartialEq)]
pub struct RunUpdate {
    pub status: String,
    pub error: Option<serde_json::Value>,
    pub steps: i64,
    pub usage: serde_json::Value,
    pub cost_micros: i64,
    pub finished: bool,
}

/// Everything one step writes.
#[derive(Debug, Default)]
pub struct StepWrite<'a> {
    pub session_id: &'a str,
    pub run_id: &'a str,
    /// `(role, content)` of a message to append.
    pub message: Option<(&'a str, serde_json::Value)>,
    pub events: Vec<EventRow>,
    pub ledger: Option<LedgerRow>,
    pub run: Option<RunUpdate>,
}

fn run_row(row: &sqlx::any::AnyRow) -> Result<RunRow> {
    let json = |c: &str| -> Result<Option<serde_json::Value>> {
        let text: Option<String> = row.try_get(c)?;
        Ok(match text {
            Some(t) => Some(serde_json::from_str(&t)?),
            None => None,
        })
    };
    Ok(RunRow {
        id: row.try_get("id")?,
        session_id: row.try_get("session_id")?,
        owner_id: row.try_get("owner_id")?,
        status: row.try_get("status")?,
        error: json("error_json")?,
        steps: row.try_get("steps")?,
        usage: json("usage_json")?.unwrap_or_default(),
        cost_micros: row.try_get("cost_micros")?,
        started_at_ms: row.try_get("started_at_ms")?,
        finished_at_ms: row.try_get("finished_at_ms")?,
    })
}

const RUN_COLUMNS: &str = "id, session_id, owner_id, status, error_json, steps, usage_json, cost_micros, started_at_ms, finished_at_ms";

impl Db {
    /// Stores a new run as `running`, with its first events and (the user's) message.
    pub async fn start_run(
        &self,
        run: &RunRow,
        host_id: &str,
        step: StepWrite<'_>,
    ) -> Result<Option<MessageRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO runs (id, session_id, owner_id, host_id, status, error_json, steps, \
             usage_json, cost_micros, started_at_ms, finished_at_ms) \
             VALUES ($1, $2, $3, $4, $5, NULL, 0, $6, 0, $7, NULL)",
        )
        .bind(&run.id)
        .bind(&run.session_id)
        .bind(&run.owner_id)
        .bind(host_id)
        .bind(&run.status)
        .bind(serde_json::to_string(&run.usage)?)
        .bind(run.started_at_ms)
        .execute(&mut *tx)
        .await?;
        let message = write_step(&mut tx, step).await?;
        tx.commit().await?;
        Ok(message)
    }

    /// Writes one step in one transaction; returns the appended message, if any.
    pub async fn commit_step(&self, step: StepWrite<'_>) -> Result<Option<MessageRow>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let message = write_step(&mut tx, step).await?;
        tx.commit().await?;
        Ok(message)
    }

    /// Marks this host's runs that were still running (cut off by a crash or kill) as
    /// `interrupted`; returns how many.
    pub async fn mark_interrupted_runs(&self, host_id: &str) -> Result<u64> {
        let _w = self.write_lock().await;
        let done = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at_ms = $1, \
             error_json = $2 WHERE host_id = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(
            serde_json::json!({"code": "interrupted", "message": "the host stopped during this run"})
                .to_string(),
        )
        .bind(host_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn get_run(&self, owner_id: &str, id: &str) -> Result<Option<RunRow>> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(run_row).transpose()
    }

    /// Persisted events of a session with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>> {
        let rows = sqlx::query(
            "SELECT seq, run_id, kind, data_json FROM session_events \
             WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(session_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let data: String = r.try_get("data_json")?;
                Ok(EventRow {
                    seq: r.try_get("seq")?,
                    run_id: r.try_get("run_id")?,
                    kind: r.try_get("kind")?,
                    data: serde_json::from_str(&data)?,
                })
            })
            .collect()
    }

    /// The highest persisted event number of a session (0 if none).
    pub async fn last_event_seq(&self, session_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) AS n FROM session_events WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Cost (micro-dollars) the owner's ledger holds since `since_ms`.
    pub async fn spent_since(&self, owner_id: &str, since_ms: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS n FROM usage_ledger \
             WHERE owner_id = $1 AND created_at_ms >= $2",
        )
        .bind(owner_id)
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// The owner's ledger rows since `since_ms`, oldest first.
    pub async fn ledger_since(&self, owner_id: &str, since_ms: i64) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(
            "SELECT owner_id, run_id, session_id, provider, model, input_tokens, output_tokens, \
             cache_read_tokens, cache_write_tokens, cost_micros, created_at_ms FROM usage_ledger \
             WHERE owner_id = $1 AND created_at_ms >= $2 ORDER BY created_at_ms",
        )
        .bind(owner_id)
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerRow {
                    owner_id: r.try_get("owner_id")?,
                    run_id: r.try_get("run_id")?,
                    session_id: r.try_get("session_id")?,
                    provider: r.try_get("provider")?,
                    model: r.try_get("model")?,
                    input_tokens: r.try_get("input_tokens")?,
                    output_tokens: r.try_get("output_tokens")?,
                    cache_read_tokens: r.try_get("cache_read_tokens")?,
                    cache_write_tokens: r.try_get("cache_write_tokens")?,
                    cost_micros: r.try_get("cost_micros")?,
                    created_at_ms: r.try_get("created_at_ms")?,
                })
            })
            .collect()
    }
}

async fn write_step(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    step: StepWrite<'_>,
) -> Result<Option<MessageRow>> {
    let now = now_ms();
    let mut appended = None;
    if let Some((role, content)) = step.message {
        let touched = sqlx::query("UPDATE chat_sessions SET updated_at_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(step.session_id)
            .execute(&mut **tx)
            .await?;
        anyhow::ensure!(touched.rows_affected() == 1, "the session was deleted");
        let id = crate::util::new_id();
        let content_json = serde_json::to_string(&content)?;
        // The next number and the insert in one statement: one round trip to the database
        // thread instead of two, on the path of every message.
        let seq: i64 = sqlx::query(
            "INSERT INTO messages (id, session_id, seq, role, content_json, created_at_ms) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5 FROM messages \
             WHERE session_id = $2 RETURNING seq",
        )
        .bind(&id)
        .bind(step.session_id)
        .bind(role)
        .bind(&content_json)
        .bind(now)
        .fetch_one(&mut **tx)
        .await?
        .try_get("seq")?;
        let row = MessageRow {
            id,
            session_id: step.session_id.to_owned(),
            seq,
            role: role.to_owned(),
            content,
            created_at_ms: now,
        };
        appended = Some(row);
    }
    if !step.events.is_empty() {
        // One statement for all of a step's events.
        let mut sql = String::from(
            "INSERT INTO session_events (session_id, seq, run_id, kind, data_json, created_at_ms) VALUES ",
        );
        for i in 0..step.events.len() {
            let n = i * 6;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            ));
        }
        let mut query = sqlx::query(&sql);
        for event in &step.events {
            query = query
                .bind(step.session_id)
                .bind(event.seq)
                .bind(&event.run_id)
                .bind(&event.kind)
                .bind(serde_json::to_string(&event.data)?)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }
    if let Some(l) = &step.ledger {
        sqlx::query(
            "INSERT INTO usage_ledger (id, owner_id, run_id, session_id, provider, model, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(crate::util::new_id())
        .bind(&l.owner_id)
        .bind(&l.run_id)
        .bind(&l.session_id)
        .bind(&l.provider)
        .bind(&l.model)
        .bind(l.input_tokens)
        .bind(l.output_tokens)
        .bind(l.cache_read_tokens)
        .bind(l.cache_write_tokens)
        .bind(l.cost_micros)
        .bind(l.created_at_ms)
        .execute(&mut **tx)
        .await?;
    }
    if let Some(r) = &step.run {
        sqlx::query(
            "UPDATE runs SET status = $1, error_json = $2, steps = $3, usage_json = $4, \
             cost_micros = $5, finished_at_ms = $6 WHERE id = $7",
        )
        .bind(&r.status)
        .bind(r.error.as_ref().map(|e| e.to_string()))
        .bind(r.steps)
        .bind(r.usage.to_string())
        .bind(r.cost_micros)
        .bind(r.finished.then_some(now))
        .bind(step.run_id)
        .execute(&mut **tx)
        .await?;
    }
    Ok(appended)
}
