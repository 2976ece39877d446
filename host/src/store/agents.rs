//! Agents: a user's named configurations of instructions, provider, tools and skills.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use super::batch::Arg;
use super::sessions::SessionRow;
use super::{Columns, Db, now_ms};

/// Which model an agent talks to, through which provider plugin instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderChoice {
    /// Id of the provider plugin instance (1–128 characters).
    #[schema(min_length = 1, max_length = 128)]
    pub plugin: String,
    /// Model name as the provider knows it (1–200 characters).
    #[schema(min_length = 1, max_length = 200)]
    pub model: String,
    /// 1–1000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_tokens: Option<u32>,
    /// 0–2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f64>,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRow {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    pub instructions: String,
    pub provider: ProviderChoice,
    /// `instance/tool` names.
    pub tools: Vec<String>,
    pub skills: Vec<String>,
    pub max_steps: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Input of [`Db::create_agent`] (already validated).
pub struct NewAgent<'a> {
    pub name: &'a str,
    pub instructions: &'a str,
    pub provider: &'a ProviderChoice,
    pub tools: &'a [String],
    pub skills: &'a [String],
    pub max_steps: i64,
}

/// Input of [`Db::update_agent`]: `None` leaves a field as it is.
#[derive(Default)]
pub struct AgentChanges<'a> {
    pub name: Option<&'a str>,
    pub instructions: Option<&'a str>,
    pub provider: Option<&'a ProviderChoice>,
    pub tools: Option<&'a [String]>,
    pub skills: Option<&'a [String]>,
    pub max_steps: Option<i64>,
}

/// What [`Db::run_context`] reads.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub session: SessionRow,
    pub agent: Option<AgentRow>,
    /// What the owner set (not merged with the defaults).
    pub settings: serde_json::Value,
    /// The session's highest message number (0 if it has none).
    pub last_seq: i64,
    /// The session's highest stored event number (0 if it has none).
    pub last_event_seq: i64,
}

/// Outcome of a write that can collide with another agent's name.
#[derive(Debug)]
pub enum AgentWrite {
    Done(Box<AgentRow>),
    NameTaken,
    NotFound,
}

const AGENT_COLUMNS: &str = "id, owner_id, name, instructions, provider_json, tools_json, skills_json, max_steps, created_at_ms, updated_at_ms";

fn agent_row(row: &impl Columns) -> Result<AgentRow> {
    let id = row.text("id")?;
    Ok(AgentRow {
        provider: serde_json::from_str(&row.text("provider_json")?)
            .with_context(|| format!("provider of agent {id}"))?,
        tools: serde_json::from_str(&row.text("tools_json")?)
            .with_context(|| format!("tools of agent {id}"))?,
        skills: serde_json::from_str(&row.text("skills_json")?)
            .with_context(|| format!("skills of agent {id}"))?,
        owner_id: row.text("owner_id")?,
        name: row.text("name")?,
        instructions: row.text("instructions")?,
        max_steps: row.int("max_steps")?,
        created_at_ms: row.int("created_at_ms")?,
        updated_at_ms: row.int("updated_at_ms")?,
        id,
    })
}

/// [`Db::run_context`]'s query: `$1` the session, `$2` its owner.
static RUN_CONTEXT_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let agent_columns: Vec<String> = AGENT_COLUMNS
        .split(", ")
        .map(|c| format!("a.{c}"))
        .collect();
    format!(
        "SELECT s.id AS s_id, s.agent_id AS s_agent_id, s.title AS s_title, \
         s.created_at_ms AS s_created_at_ms, s.updated_at_ms AS s_updated_at_ms, {}, \
         (SELECT settings_json FROM user_settings WHERE user_id = $2) AS settings_json, \
         (SELECT COALESCE(MAX(seq), 0) FROM messages WHERE session_id = s.id) AS last_seq, \
         (SELECT COALESCE(MAX(seq), 0) FROM session_events WHERE session_id = s.id) AS last_event_seq \
         FROM chat_sessions s LEFT JOIN agents a ON a.id = s.agent_id AND a.owner_id = $2 \
         WHERE s.id = $1 AND s.owner_id = $2",
        agent_columns.join(", ")
    )
});

fn run_context_row(row: &impl Columns, owner_id: &str) -> Result<RunContext> {
    Ok(RunContext {
        session: SessionRow {
            id: row.text("s_id")?,
            owner_id: owner_id.to_owned(),
            agent_id: row.opt_text("s_agent_id")?,
            title: row.text("s_title")?,
            created_at_ms: row.int("s_created_at_ms")?,
            updated_at_ms: row.int("s_updated_at_ms")?,
        },
        agent: match row.opt_text("id")? {
            Some(_) => Some(agent_row(row)?),
            None => None,
        },
        settings: match row.opt_text("settings_json")? {
            Some(text) => serde_json::from_str(&text)
                .with_context(|| format!("settings of user {owner_id}"))?,
            None => serde_json::json!({}),
        },
        last_seq: row.int("last_seq")?,
        last_event_seq: row.int("last_event_seq")?,
    })
}

/// The database's own answer to "is this name taken", so two concurrent requests (or two
/// hosts) cannot both create the same name.
fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation())
}

impl Db {
    /// Creates an agent; `NameTaken` if the owner already has one of that name.
    pub async fn create_agent(&self, owner_id: &str, agent: NewAgent<'_>) -> Result<AgentWrite> {
        let now = now_ms();
        let row = AgentRow {
            id: crate::util::new_id(),
            owner_id: owner_id.to_owned(),
            name: agent.name.to_owned(),
            instructions: agent.instructions.to_owned(),
            provider: agent.provider.clone(),
            tools: agent.tools.to_vec(),
            skills: agent.skills.to_vec(),
            max_steps: agent.max_steps,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let _w = self.write_lock().await;
        let inserted = sqlx::query(&format!(
            "INSERT INTO agents ({AGENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)"
        ))
        .bind(&row.id)
        .bind(owner_id)
        .bind(&row.name)
        .bind(&row.instructions)
        .bind(serde_json::to_string(&row.provider)?)
        .bind(serde_json::to_string(&row.tools)?)
        .bind(serde_json::to_string(&row.skills)?)
        .bind(row.max_steps)
        .bind(now)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(AgentWrite::Done(Box::new(row))),
            Err(e) if is_unique_violation(&e) => Ok(AgentWrite::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// One of the owner's agents (another user's id is `None`, as if it did not exist).
    pub async fn get_agent(&self, owner_id: &str, id: &str) -> Result<Option<AgentRow>> {
        let row = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1 AND owner_id = $2"
        ))
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(agent_row).transpose()
    }

    /// What a run on the owner's session starts from, in one query: the session, its
    /// agent (if it has one), the owner's stored settings and the session's last message
    /// number. `None` if the session is not the owner's.
    pub async fn run_context(
        &self,
        owner_id: &str,
        session_id: &str,
    ) -> Result<Option<RunContext>> {
        // Every run starts with this read; on a SQLite file it is served in place when the
        // writer's connection is free (see `sqlite_writer.rs`).
        if let Some(writer) = &self.sqlite_writer {
            let args = [
                Arg::Text(session_id.to_owned()),
                Arg::Text(owner_id.to_owned()),
            ];
            if let Some(read) = writer.try_read(&RUN_CONTEXT_SQL, &args, |row| {
                run_context_row(row, owner_id)
            }) {
                return read;
            }
        }
        let row = sqlx::query(&RUN_CONTEXT_SQL)
            .bind(session_id)
            .bind(owner_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| run_context_row(&row, owner_id)).transpose()
    }

    /// Whether `id` is one of the owner's agents.
    pub async fn owns_agent(&self, owner_id: &str, id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 AS x FROM agents WHERE id = $1 AND owner_id = $2")
                .bind(id)
                .bind(owner_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// A page of the owner's agents by name, and how many they have.
    pub async fn list_agents(
        &self,
        owner_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<AgentRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {AGENT_COLUMNS} FROM agents WHERE owner_id = $1 ORDER BY name, id LIMIT $2 OFFSET $3"
        ))
        .bind(owner_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM agents WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        let items = rows.iter().map(agent_row).collect::<Result<_>>()?;
        Ok((items, total))
    }

    /// Changes the given fields in one statement, so concurrent updates of different fields
    /// do not undo each other.
    pub async fn update_agent(
        &self,
        owner_id: &str,
        id: &str,
        changes: AgentChanges<'_>,
    ) -> Result<AgentWrite> {
        let provider = changes.provider.map(serde_json::to_string).transpose()?;
        let tools = changes.tools.map(serde_json::to_string).transpose()?;
        let skills = changes.skills.map(serde_json::to_string).transpose()?;
        let _w = self.write_lock().await;
        let updated = sqlx::query(&format!(
            "UPDATE agents SET name = COALESCE($1, name), instructions = COALESCE($2, instructions), \
             provider_json = COALESCE($3, provider_json), tools_json = COALESCE($4, tools_json), \
             skills_json = COALESCE($5, skills_json), max_steps = COALESCE($6, max_steps), updated_at_ms = $7 \
             WHERE id = $8 AND owner_id = $9 RETURNING {AGENT_COLUMNS}"
        ))
        .bind(changes.name)
        .bind(changes.instructions)
        .bind(provider)
        .bind(tools)
        .bind(skills)
        .bind(changes.max_steps)
        .bind(now_ms())
        .bind(id)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await;
        match updated {
            Ok(Some(row)) => Ok(AgentWrite::Done(Box::new(agent_row(&row)?))),
            Ok(None) => Ok(AgentWrite::NotFound),
            Err(e) if is_unique_violation(&e) => Ok(AgentWrite::NameTaken),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one of the owner's agents (its sessions stay, without an agent); false if the
    /// owner has no such agent.
    pub async fn delete_agent(&self, owner_id: &str, id: &str) -> Result<bool> {
        let _w = self.write_lock().await;
        let done = sqlx::query("DELETE FROM agents WHERE id = $1 AND owner_id = $2")
            .bind(id)
            .bind(owner_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
