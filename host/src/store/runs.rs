//! Agent runs, their persisted events and the usage ledger.
//!
//! The agent loop writes what one step produced — the message, the boundary events, the
//! ledger row, the run's counters — in one transaction ([`Db::commit_step`]): a crash leaves
//! either all of a step or none of it (see `batch.rs`).

use anyhow::Result;
use sqlx::Row;

use super::batch::{Arg, Statement, value_rows};
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
    /// The call reported no usage (aborted, broken off): tokens and cost are its estimate.
    pub estimated: bool,
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
    /// Budget reservations of the calls whose cost this write settles (see `budgets.rs`).
    pub releases: Vec<String>,
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
    pub async fn start_run(&self, run: &RunRow, host_id: &str, step: StepWrite<'_>) -> Result<()> {
        let mut statements = vec![Statement::new(
            "INSERT INTO runs (id, session_id, owner_id, host_id, status, error_json, steps, \
             usage_json, cost_micros, started_at_ms, finished_at_ms) \
             VALUES ($1, $2, $3, $4, $5, NULL, 0, $6, 0, $7, NULL)",
            vec![
                Arg::Text(run.id.clone()),
                Arg::Text(run.session_id.clone()),
                Arg::Text(run.owner_id.clone()),
                Arg::Text(host_id.to_owned()),
                Arg::Text(run.status.clone()),
                Arg::Text(serde_json::to_string(&run.usage)?),
                Arg::Int(run.started_at_ms),
            ],
        )];
        statements.extend(step_statements(step)?);
        self.write_all(&statements).await.map(drop)
    }

    /// Writes one step in one transaction.
    pub async fn commit_step(&self, step: StepWrite<'_>) -> Result<()> {
        self.write_all(&step_statements(step)?).await.map(drop)
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
             cache_read_tokens, cache_write_tokens, cost_micros, created_at_ms, estimated FROM usage_ledger \
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
                    estimated: r.try_get::<i64, _>("estimated")? != 0,
                })
            })
            .collect()
    }
}

/// The statements of one step. The message's session must exist: the foreign keys refuse
/// a step of a session deleted meanwhile, and with it the whole transaction.
fn step_statements(step: StepWrite<'_>) -> Result<Vec<Statement>> {
    let now = now_ms();
    let session = || Arg::Text(step.session_id.to_owned());
    let mut statements = Vec::new();
    if let Some((role, content)) = &step.message {
        statements.push(Statement::new(
            "UPDATE chat_sessions SET updated_at_ms = $1 WHERE id = $2",
            vec![Arg::Int(now), session()],
        ));
        // The next number and the insert in one statement.
        statements.push(Statement::new(
            "INSERT INTO messages (id, session_id, seq, role, content_json, created_at_ms) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, $4, $5 FROM messages \
             WHERE session_id = $2",
            vec![
                Arg::Text(crate::util::new_id()),
                session(),
                Arg::Text((*role).to_owned()),
                Arg::Text(serde_json::to_string(content)?),
                Arg::Int(now),
            ],
        ));
    }
    if !step.events.is_empty() {
        // One statement for all of a step's events.
        let sql = format!(
            "INSERT INTO session_events (session_id, seq, run_id, kind, data_json, created_at_ms) VALUES {}",
            value_rows(step.events.len(), 6)
        );
        let mut args = Vec::with_capacity(step.events.len() * 6);
        for event in &step.events {
            args.extend([
                session(),
                Arg::Int(event.seq),
                Arg::Text(event.run_id.clone()),
                Arg::Text(event.kind.clone()),
                Arg::Text(serde_json::to_string(&event.data)?),
                Arg::Int(now),
            ]);
        }
        statements.push(Statement::new(sql, args));
    }
    if let Some(l) = &step.ledger {
        statements.push(Statement::new(
            "INSERT INTO usage_ledger (id, owner_id, run_id, session_id, provider, model, \
             input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros, \
             created_at_ms, estimated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            vec![
                Arg::Text(crate::util::new_id()),
                Arg::Text(l.owner_id.clone()),
                Arg::Text(l.run_id.clone()),
                Arg::Text(l.session_id.clone()),
                Arg::Text(l.provider.clone()),
                Arg::Text(l.model.clone()),
                Arg::Int(l.input_tokens),
                Arg::Int(l.output_tokens),
                Arg::Int(l.cache_read_tokens),
                Arg::Int(l.cache_write_tokens),
                Arg::Int(l.cost_micros),
                Arg::Int(l.created_at_ms),
                Arg::Int(i64::from(l.estimated)),
            ],
        ));
    }
    statements.extend(
        step.releases
            .iter()
            .map(|id| super::budgets::release_statement(id)),
    );
    if let Some(r) = &step.run {
        statements.push(Statement::new(
            "UPDATE runs SET status = $1, error_json = $2, steps = $3, usage_json = $4, \
             cost_micros = $5, finished_at_ms = $6 WHERE id = $7",
            vec![
                Arg::Text(r.status.clone()),
                Arg::OptText(r.error.as_ref().map(|e| e.to_string())),
                Arg::Int(r.steps),
                Arg::Text(r.usage.to_string()),
                Arg::Int(r.cost_micros),
                Arg::OptInt(r.finished.then_some(now)),
                Arg::Text(step.run_id.to_owned()),
            ],
        ));
        if r.finished {
            // The session is free the moment the run's end is stored.
            statements.push(super::claims::release_statement(
                step.session_id,
                step.run_id,
            ));
        }
    }
    Ok(statements)
}
