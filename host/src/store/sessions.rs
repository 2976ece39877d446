//! Chat sessions and their messages, in per-session sequence order.

use anyhow::{Context, Result};
use sqlx::Row;

use super::batch::{Arg, Statement, value_rows};
use super::{Db, now_ms};

/// A chat session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id: String,
    pub owner_id: String,
    /// `None` once the agent was deleted (or if none was chosen).
    pub agent_id: Option<String>,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Input of [`Db::update_session`]: `None` leaves a field as it is.
#[derive(Default)]
pub struct SessionChanges<'a> {
    pub title: Option<&'a str>,
    /// `Some(None)` detaches the session from its agent.
    pub agent_id: Option<Option<&'a str>>,
}

/// A message as stored. `content` is provider-neutral JSON the agent loop defines.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRow {
    pub id: String,
    pub session_id: String,
    /// 1, 2, 3… within the session.
    pub seq: i64,
    pub role: String,
    pub content: serde_json::Value,
    pub created_at_ms: i64,
}

/// Outcome of a session write that names an agent.
#[derive(Debug)]
pub enum SessionWrite {
    Done(SessionRow),
    /// The agent is not one of the owner's (or was deleted meanwhile).
    UnknownAgent,
    NotFound,
}

/// An agent deleted between the ownership check and the write.
fn is_foreign_key_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_foreign_key_violation())
}

/// A session as the list query's JSON carries it.
#[derive(serde::Deserialize)]
struct SessionJson {
    id: String,
    owner_id: String,
    agent_id: Option<String>,
    title: String,
    created_at_ms: i64,
    updated_at_ms: i64,
}

impl From<SessionJson> for SessionRow {
    fn from(j: SessionJson) -> Self {
        SessionRow {
            id: j.id,
            owner_id: j.owner_id,
            agent_id: j.agent_id,
            title: j.title,
            created_at_ms: j.created_at_ms,
            updated_at_ms: j.updated_at_ms,
        }
    }
}

const SESSION_COLUMNS: &str = "id, owner_id, agent_id, title, created_at_ms, updated_at_ms";

fn session_row(row: &sqlx::any::AnyRow) -> Result<SessionRow> {
    Ok(SessionRow {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        agent_id: row.try_get("agent_id")?,
        title: row.try_get("title")?,
        created_at_ms: row.try_get("created_at_ms")?,
        updated_at_ms: row.try_get("updated_at_ms")?,
    })
}

fn message_row(row: &sqlx::any::AnyRow) -> Result<MessageRow> {
    let id: String = row.try_get("id")?;
    let content: String = row.try_get("content_json")?;
    Ok(MessageRow {
        content: serde_json::from_str(&content)
            .with_context(|| format!("content of message {id}"))?,
        id,
        session_id: row.try_get("session_id")?,
        seq: row.try_get("seq")?,
        role: row.try_get("role")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

impl Db {
    /// Creates a session; `UnknownAgent` unless `agent_id` is one of the owner's agents.
    pub async fn create_session(
        &self,
        owner_id: &str,
        agent_id: Option<&str>,
        title: &str,
    ) -> Result<SessionWrite> {
        let now = now_ms();
        let row = SessionRow {
            id: crate::util::new_id(),
            owner_id: owner_id.to_owned(),
            agent_id: agent_id.map(str::to_owned),
            title: title.to_owned(),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let _w = self.write_lock().await;
        // Ownership is checked by the insert itself, so it cannot go stale in between.
        let inserted = sqlx::query(&format!(
            "INSERT INTO chat_sessions ({SESSION_COLUMNS}) SELECT $1, $2, $3, $4, $5, $5 \
             WHERE $3 IS NULL OR EXISTS (SELECT 1 FROM agents a WHERE a.id = $3 AND a.owner_id = $2)"
        ))
        .bind(&row.id)
        .bind(owner_id)
        .bind(agent_id)
        .bind(title)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) if done.rows_affected() == 1 => Ok(SessionWrite::Done(row)),
            Ok(_) => Ok(SessionWrite::UnknownAgent),
            Err(e) if is_foreign_key_violation(&e) => Ok(SessionWrite::UnknownAgent),
            Err(e) => Err(e.into()),
        }
    }

    /// One of the owner's sessions (another user's id is `None`, as if it did not exist).
    pub async fn get_session(&self, owner_id: &str, id: &str) -> Result<Option<SessionRow>> {
        let row = sqlx::query(&format!(
            "SELECT {SESSION_COLUMNS} FROM chat_sessions WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(session_row).transpose()
    }

    /// A page of the owner's sessions, most recently updated first, and how many they have.
    /// Both queries are answered from the `(owner_id, updated_at_ms, id)` index.
    pub async fn list_sessions(
        &self,
        owner_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<SessionRow>, i64)> {
        // The page comes back as ONE row holding a JSON array, with the total beside it. The
        // SQLite driver hands every result row across a channel from its connection thread,
        // which made per-row overhead dominate this (the most requested) list: one row per
        // page measured ~2.5x the throughput of one row per session.
        let sql = match self.backend {
            super::Backend::Sqlite => {
                "SELECT (SELECT COUNT(*) FROM chat_sessions WHERE owner_id = $1) AS total, \
                 (SELECT json_group_array(json_object('id', id, 'owner_id', owner_id, 'agent_id', agent_id, \
                 'title', title, 'created_at_ms', created_at_ms, 'updated_at_ms', updated_at_ms)) \
                 FROM (SELECT * FROM chat_sessions WHERE owner_id = $1 \
                 ORDER BY updated_at_ms DESC, id DESC LIMIT $2 OFFSET $3)) AS page"
            }
            super::Backend::Postgres => {
                "SELECT (SELECT COUNT(*) FROM chat_sessions WHERE owner_id = $1) AS total, \
                 (SELECT COALESCE(json_agg(json_build_object('id', id, 'owner_id', owner_id, 'agent_id', agent_id, \
                 'title', title, 'created_at_ms', created_at_ms, 'updated_at_ms', updated_at_ms) \
                 ORDER BY updated_at_ms DESC, id DESC), '[]')::text \
                 FROM (SELECT * FROM chat_sessions WHERE owner_id = $1 \
                 ORDER BY updated_at_ms DESC, id DESC LIMIT $2 OFFSET $3) p) AS page"
            }
        };
        let row = sqlx::query(sql)
            .bind(owner_id)
            .bind(limit)
            .bind(offset)
            .fetch_one(&self.pool)
            .await?;
        let total: i64 = row.try_get("total")?;
        let page: String = row.try_get("page")?;
        let mut items: Vec<SessionRow> = serde_json::from_str::<Vec<SessionJson>>(&page)?
            .into_iter()
            .map(SessionRow::from)
            .collect();
        // SQLite's aggregate keeps the subquery's order in practice but does not promise it.
        items.sort_by(|a, b| {
            b.updated_at_ms
                .cmp(&a.updated_at_ms)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok((items, total))
    }

    /// Ids of every session of an owner (to clean up their workspaces when the owner goes).
    pub async fn session_ids(&self, owner_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM chat_sessions WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Changes the given fields; `UnknownAgent` unless a new agent is one of the owner's.
    pub async fn update_session(
        &self,
        owner_id: &str,
        id: &str,
        changes: SessionChanges<'_>,
    ) -> Result<SessionWrite> {
        // A flag rather than COALESCE, because NULL is a value agent_id can be set to.
        let (set_agent, agent_id) = match changes.agent_id {
            Some(agent) => (1_i64, agent),
            None => (0, None),
        };
        let _w = self.write_lock().await;
        let updated = sqlx::query(&format!(
            "UPDATE chat_sessions SET title = COALESCE($1, title), \
             agent_id = CASE WHEN $2 = 1 THEN $3 ELSE agent_id END, updated_at_ms = $4 \
             WHERE id = $5 AND owner_id = $6 \
             AND ($2 = 0 OR $3 IS NULL OR EXISTS (SELECT 1 FROM agents a WHERE a.id = $3 AND a.owner_id = $6)) \
             RETURNING {SESSION_COLUMNS}"
        ))
        .bind(changes.title)
        .bind(set_agent)
        .bind(agent_id)
        .bind(now_ms())
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await;
        match updated {
            Ok(Some(row)) => Ok(SessionWrite::Done(session_row(&row)?)),
            // Nothing changed: either the session is not the owner's or the agent is not.
            Ok(None) if self.get_session(owner_id, id).await?.is_some() => {
                Ok(SessionWrite::UnknownAgent)
            }
            Ok(None) => Ok(SessionWrite::NotFound),
            Err(e) if is_foreign_key_violation(&e) => Ok(SessionWrite::UnknownAgent),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one of the owner's sessions and its messages; false if the owner has no such
    /// session. The workspace directory is the caller's to remove.
    pub async fn delete_session(&self, owner_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_lock().await;
        let done = sqlx::query("DELETE FROM chat_sessions WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Appends a message as the session's next in sequence and marks the session updated;
    /// `None` if the session does not exist. Updating the session row first locks it on
    /// PostgreSQL, so concurrent appends to one session take turns instead of colliding on
    /// the same `seq`.
    pub async fn append_message(
        &self,
        session_id: &str,
        role: &str,
        content: &serde_json::Value,
    ) -> Result<Option<MessageRow>> {
        let now = now_ms();
        let content_json = serde_json::to_string(content)?;
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let touched = sqlx::query("UPDATE chat_sessions SET updated_at_ms = $1 WHERE id = $2")
            .bind(now)
            .bind(session_id)
            .execute(&mut *tx)
            .await?;
        if touched.rows_affected() == 0 {
            return Ok(None);
        }
        let seq: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS next FROM messages WHERE session_id = $1",
        )
        .bind(session_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("next")?;
        let row = MessageRow {
            id: crate::util::new_id(),
            session_id: session_id.to_owned(),
            seq,
            role: role.to_owned(),
            content: content.clone(),
            created_at_ms: now,
        };
        sqlx::query(
            "INSERT INTO messages (id, session_id, seq, role, content_json, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&row.id)
        .bind(session_id)
        .bind(seq)
        .bind(role)
        .bind(&content_json)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// Stores `messages` (role, content) as the first messages of a session made for them
    /// (`/v1`'s history), in one transaction of a few statements, off the async runtime's
    /// threads: a request body of a megabyte can hold tens of thousands of them.
    pub async fn insert_history(
        &self,
        session_id: &str,
        messages: &[(&str, serde_json::Value)],
    ) -> Result<()> {
        // Six arguments a row, well within both databases' limits on bound arguments.
        const ROWS: usize = 500;
        let now = now_ms();
        let mut statements = Vec::with_capacity(messages.len().div_ceil(ROWS));
        for (chunk_index, chunk) in messages.chunks(ROWS).enumerate() {
            let sql = format!(
                "INSERT INTO messages (id, session_id, seq, role, content_json, created_at_ms) VALUES {}",
                value_rows(chunk.len(), 6)
            );
            let mut args = Vec::with_capacity(chunk.len() * 6);
            for (i, (role, content)) in chunk.iter().enumerate() {
                args.extend([
                    Arg::Text(crate::util::new_id()),
                    Arg::Text(session_id.to_owned()),
                    Arg::Int((chunk_index * ROWS + i + 1) as i64),
                    Arg::Text((*role).to_owned()),
                    Arg::Text(serde_json::to_string(content)?),
                    Arg::Int(now),
                ]);
            }
            statements.push(Statement::new(sql, args));
        }
        self.write_all_off_runtime(&statements).await.map(drop)
    }

    /// The session's last `limit` messages, oldest first (the agent loop's history: one query,
    /// no count).
    pub async fn recent_messages(&self, session_id: &str, limit: i64) -> Result<Vec<MessageRow>> {
        let rows = sqlx::query(
            "SELECT id, session_id, seq, role, content_json, created_at_ms FROM messages \
             WHERE session_id = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(session_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut items: Vec<MessageRow> = rows.iter().map(message_row).collect::<Result<_>>()?;
        items.reverse();
        Ok(items)
    }

    /// A page of a session's messages in sequence order, and how many it has. The caller
    /// has checked that the session is the user's.
    pub async fn list_messages(
        &self,
        session_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<MessageRow>, i64)> {
        let rows = sqlx::query(
            "SELECT id, session_id, seq, role, content_json, created_at_ms FROM messages \
             WHERE session_id = $1 ORDER BY seq LIMIT $2 OFFSET $3",
        )
        .bind(session_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE session_id = $1")
            .bind(session_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let items = rows.iter().map(message_row).collect::<Result<_>>()?;
        Ok((items, total))
    }
}
