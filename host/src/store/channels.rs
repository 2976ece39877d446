//! Channels, the events they received, and their chats.
//!
//! Inbound exactly once: a poll's events and the cursor after them are written in one
//! transaction, and only then is the next poll sent (which is what confirms the batch to the
//! platform); an event id already stored is dropped. Each stored event stays `pending` until
//! it was handled, so a host that stopped in between handles it at its next start.

use anyhow::Result;
use sqlx::Row;

use super::{Backend, Db, now_ms};

/// A channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub id: String,
    pub owner_id: String,
    pub instance_id: String,
    pub agent_id: String,
    pub mode: String,
    pub access: String,
    pub allowlist: Vec<String>,
    pub groups_need_address: bool,
    pub running: bool,
    pub poll_cursor: Option<String>,
    pub bot_json: Option<String>,
    pub last_error: Option<String>,
    pub last_activity_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A file on a message a channel received, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentRow {
    /// What the agent names to fetch it.
    pub id: String,
    pub session_id: String,
    pub channel_id: String,
    pub kind: String,
    /// What the platform needs to fetch it; never shown to the model.
    pub locator: String,
    pub name: Option<String>,
    pub mime_type: Option<String>,
    pub size: Option<i64>,
}

/// A chat of a channel as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatRow {
    pub channel_id: String,
    pub chat_id: String,
    /// `""` for none.
    pub thread_id: String,
    pub state: String,
    pub kind: String,
    pub title: String,
    pub session_id: Option<String>,
    pub pair_code: Option<String>,
    pub pair_expires_ms: Option<i64>,
}

const CHANNEL_COLUMNS: &str = "id, owner_id, instance_id, agent_id, mode, access, allowlist_json, \
     groups_need_address, running, poll_cursor, bot_json, last_error, last_activity_ms, created_at_ms";
const CHAT_COLUMNS: &str = "channel_id, chat_id, thread_id, state, kind, title, session_id, \
     pair_code, pair_expires_ms";

fn channel_row(row: &sqlx::any::AnyRow) -> Result<ChannelRow> {
    let allowlist: String = row.try_get("allowlist_json")?;
    Ok(ChannelRow {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        instance_id: row.try_get("instance_id")?,
        agent_id: row.try_get("agent_id")?,
        mode: row.try_get("mode")?,
        access: row.try_get("access")?,
        allowlist: serde_json::from_str(&allowlist)?,
        groups_need_address: row.try_get::<i64, _>("groups_need_address")? != 0,
        running: row.try_get::<i64, _>("running")? != 0,
        poll_cursor: row.try_get("poll_cursor")?,
        bot_json: row.try_get("bot_json")?,
        last_error: row.try_get("last_error")?,
        last_activity_ms: row.try_get("last_activity_ms")?,
        created_at_ms: row.try_get("created_at_ms")?,
    })
}

fn chat_row(row: &sqlx::any::AnyRow) -> Result<ChatRow> {
    Ok(ChatRow {
        channel_id: row.try_get("channel_id")?,
        chat_id: row.try_get("chat_id")?,
        thread_id: row.try_get("thread_id")?,
        state: row.try_get("state")?,
        kind: row.try_get("kind")?,
        title: row.try_get("title")?,
        session_id: row.try_get("session_id")?,
        pair_code: row.try_get("pair_code")?,
        pair_expires_ms: row.try_get("pair_expires_ms")?,
    })
}

/// The database's clock in epoch milliseconds, as SQL: leases are reckoned by it, so hosts
/// whose clocks differ still agree on who holds one.
fn clock(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    }
}

/// Inserts the events not stored before, each after the channel's last: how many were new.
async fn insert_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    channel_id: &str,
    events: &[(String, String)],
) -> Result<usize> {
    let mut new = 0;
    for (event_id, json) in events {
        let done = sqlx::query(
            "INSERT INTO channel_events (channel_id, event_id, seq, event_json, state, received_at_ms) \
             SELECT $1, $2, COALESCE(MAX(seq), 0) + 1, $3, 'pending', $4 \
             FROM channel_events WHERE channel_id = $1 \
             ON CONFLICT (channel_id, event_id) DO NOTHING",
        )
        .bind(channel_id)
        .bind(event_id)
        .bind(json)
        .bind(now_ms())
        .execute(&mut **tx)
        .await?;
        new += done.rows_affected() as usize;
    }
    Ok(new)
}

impl Db {
    pub async fn create_channel(&self, c: &ChannelRow) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query(&format!(
            "INSERT INTO channels ({CHANNEL_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        ))
        .bind(&c.id)
        .bind(&c.owner_id)
        .bind(&c.instance_id)
        .bind(&c.agent_id)
        .bind(&c.mode)
        .bind(&c.access)
        .bind(serde_json::to_string(&c.allowlist)?)
        .bind(i64::from(c.groups_need_address))
        .bind(i64::from(c.running))
        .bind(&c.poll_cursor)
        .bind(&c.bot_json)
        .bind(&c.last_error)
        .bind(c.last_activity_ms)
        .bind(c.created_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_channel(&self, id: &str) -> Result<Option<ChannelRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(channel_row).transpose()
    }

    /// One owner's channels, oldest first, and how many there are.
    pub async fn list_channels(
        &self,
        owner_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ChannelRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE owner_id = $1 \
             ORDER BY created_at_ms, id LIMIT $2 OFFSET $3"
        ))
        .bind(owner_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM channels WHERE owner_id = $1")
            .bind(owner_id)
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?;
        Ok((rows.iter().map(channel_row).collect::<Result<_>>()?, total))
    }

    /// A channel's chats, the most recently active first, and how many there are.
    pub async fn list_channel_chats(
        &self,
        channel_id: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<ChatRow>, i64)> {
        let rows = sqlx::query(&format!(
            "SELECT {CHAT_COLUMNS} FROM channel_chats WHERE channel_id = $1 \
             ORDER BY updated_at_ms DESC, chat_id, thread_id LIMIT $2 OFFSET $3"
        ))
        .bind(channel_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query("SELECT COUNT(*) AS n FROM channel_chats WHERE channel_id = $1")
                .bind(channel_id)
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
        Ok((rows.iter().map(chat_row).collect::<Result<_>>()?, total))
    }

    /// The channels their operators want running, on whichever host.
    pub async fn running_channels(&self) -> Result<Vec<ChannelRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANNEL_COLUMNS} FROM channels WHERE running = 1 ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(channel_row).collect()
    }

    /// Sets whether the channel should run; a stopped one gives its lease up.
    pub async fn set_channel_running(&self, id: &str, running: bool) -> Result<bool> {
        let _w = self.write_lock().await;
        let done = sqlx::query(
            "UPDATE channels SET running = $1, \
             lease_host = CASE WHEN $1 = 1 THEN lease_host END, \
             lease_until = CASE WHEN $1 = 1 THEN lease_until END WHERE id = $2",
        )
        .bind(i64::from(running))
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Changes what an operator may change of a channel. A new agent starts every chat on a
    /// new session (of that agent) at its next message. False if there is no such channel.
    pub async fn update_channel(&self, c: &ChannelRow) -> Result<bool> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let before: Option<String> =
            sqlx::query_scalar("SELECT agent_id FROM channels WHERE id = $1")
                .bind(&c.id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(agent_before) = before else {
            return Ok(false);
        };
        sqlx::query(
            "UPDATE channels SET agent_id = $1, mode = $2, access = $3, allowlist_json = $4, \
             groups_need_address = $5 WHERE id = $6",
        )
        .bind(&c.agent_id)
        .bind(&c.mode)
        .bind(&c.access)
        .bind(serde_json::to_string(&c.allowlist)?)
        .bind(i64::from(c.groups_need_address))
        .bind(&c.id)
        .execute(&mut *tx)
        .await?;
        if agent_before != c.agent_id {
            sqlx::query("UPDATE channel_chats SET session_id = NULL WHERE channel_id = $1")
                .bind(&c.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records who the bot is and the channel's last error (`None` clears it).
    pub async fn set_channel_status(
        &self,
        id: &str,
        bot_json: Option<&str>,
        last_error: Option<&str>,
    ) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query(
            "UPDATE channels SET bot_json = COALESCE($1, bot_json), last_error = $2 WHERE id = $3",
        )
        .bind(bot_json)
        .bind(last_error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Takes or renews the channel's poll lease for `host` for `lease_ms`: true if this host
    /// holds it now. A running channel is polled by one host at a time (Telegram answers a
    /// second concurrent poll with 409).
    pub async fn take_poll_lease(&self, id: &str, host: &str, lease_ms: i64) -> Result<bool> {
        let now = clock(self.backend);
        let _w = self.write_lock().await;
        let done = sqlx::query(&format!(
            "UPDATE channels SET lease_host = $1, lease_until = {now} + $2 \
             WHERE id = $3 AND running = 1 \
             AND (lease_host IS NULL OR lease_host = $1 OR lease_until < {now})"
        ))
        .bind(host)
        .bind(lease_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up (a host stopping the channel or shutting down).
    pub async fn drop_poll_lease(&self, id: &str, host: &str) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query(
            "UPDATE channels SET lease_host = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_host = $2",
        )
        .bind(id)
        .bind(host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores a batch of events — those not stored before — and the cursor after them, in one
    /// transaction, if `host` still holds the poll lease. Returns how many were new, or `None`
    /// if the lease was lost (nothing is stored then: another host polls now).
    pub async fn store_channel_batch(
        &self,
        channel_id: &str,
        host: &str,
        events: &[(String, String)],
        cursor: Option<&str>,
        kv: Option<&super::plugins::KvWrites>,
    ) -> Result<Option<usize>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(kv) = kv {
            // Refused (a compare-and-swap lost, the quota): nothing of the batch is stored,
            // the cursor stays, and the platform delivers the batch again.
            self.kv_apply(&mut tx, kv)
                .await?
                .into_result(kv.quota)
                .map_err(|why| anyhow::anyhow!("storing the poll's batch: {why}"))?;
        }
        let held = sqlx::query(
            "UPDATE channels SET poll_cursor = COALESCE($1, poll_cursor), last_activity_ms = $2 \
             WHERE id = $3 AND lease_host = $4",
        )
        .bind(cursor)
        .bind(now_ms())
        .bind(channel_id)
        .bind(host)
        .execute(&mut *tx)
        .await?;
        if held.rows_affected() != 1 {
            return Ok(None);
        }
        let new = insert_events(&mut tx, channel_id, events).await?;
        tx.commit().await?;
        Ok(Some(new))
    }

    /// Stores the events of a webhook delivery not stored before, in one transaction: how
    /// many were new. The platform is answered only after this, so a delivery it sends again
    /// (after no answer) finds its events here and is not handled twice.
    pub async fn store_channel_events(
        &self,
        channel_id: &str,
        events: &[(String, String)],
        kv: Option<&super::plugins::KvWrites>,
    ) -> Result<usize> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        if let Some(kv) = kv {
            self.kv_apply(&mut tx, kv)
                .await?
                .into_result(kv.quota)
                .map_err(|why| anyhow::anyhow!("storing the delivery's events: {why}"))?;
        }
        let new = insert_events(&mut tx, channel_id, events).await?;
        sqlx::query("UPDATE channels SET last_activity_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(channel_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(new)
    }

    /// The channel's events not handled yet, oldest first.
    pub async fn pending_channel_events(
        &self,
        channel_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT event_id, event_json FROM channel_events \
             WHERE channel_id = $1 AND state = 'pending' ORDER BY seq LIMIT $2",
        )
        .bind(channel_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("event_id")?, r.try_get("event_json")?)))
            .collect()
    }

    /// Marks an event handled: `done`, or `skipped` (ignored, refused, not for the bot).
    pub async fn finish_channel_event(
        &self,
        channel_id: &str,
        event_id: &str,
        state: &str,
    ) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query("UPDATE channel_events SET state = $1 WHERE channel_id = $2 AND event_id = $3")
            .bind(state)
            .bind(channel_id)
            .bind(event_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_channel_chat(
        &self,
        channel_id: &str,
        chat_id: &str,
        thread_id: &str,
    ) -> Result<Option<ChatRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CHAT_COLUMNS} FROM channel_chats \
             WHERE channel_id = $1 AND chat_id = $2 AND thread_id = $3"
        ))
        .bind(channel_id)
        .bind(chat_id)
        .bind(thread_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(chat_row).transpose()
    }

    /// Stores a chat as given (a new one, or its new state, session or code).
    pub async fn put_channel_chat(&self, c: &ChatRow) -> Result<()> {
        let now = now_ms();
        let _w = self.write_lock().await;
        sqlx::query(&format!(
            "INSERT INTO channel_chats ({CHAT_COLUMNS}, created_at_ms, updated_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (channel_id, chat_id, thread_id) DO UPDATE SET state = excluded.state, \
             kind = excluded.kind, title = excluded.title, session_id = excluded.session_id, \
             pair_code = excluded.pair_code, pair_expires_ms = excluded.pair_expires_ms, \
             updated_at_ms = excluded.updated_at_ms"
        ))
        .bind(&c.channel_id)
        .bind(&c.chat_id)
        .bind(&c.thread_id)
        .bind(&c.state)
        .bind(&c.kind)
        .bind(&c.title)
        .bind(&c.session_id)
        .bind(&c.pair_code)
        .bind(c.pair_expires_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The messages already on the platform for the reply to `event_id`, by part.
    pub async fn outbox(&self, channel_id: &str, event_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT message_id, text FROM channel_outbox \
             WHERE channel_id = $1 AND event_id = $2 ORDER BY part",
        )
        .bind(channel_id)
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("message_id")?, r.try_get("text")?)))
            .collect()
    }

    /// Records (or updates) one message of the reply to `event_id`.
    pub async fn record_outbox(
        &self,
        channel_id: &str,
        event_id: &str,
        part: i64,
        message_id: &str,
        text: &str,
    ) -> Result<()> {
        let _w = self.write_lock().await;
        sqlx::query(
            "INSERT INTO channel_outbox (channel_id, event_id, part, message_id, text) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (channel_id, event_id, part) \
             DO UPDATE SET message_id = excluded.message_id, text = excluded.text",
        )
        .bind(channel_id)
        .bind(event_id)
        .bind(part)
        .bind(message_id)
        .bind(text)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Approves the pending chat holding `code` on one of `owner_id`'s channels, if the code
    /// has not expired: the chat is paired and the code spent. The chat, or `None`.
    pub async fn approve_pairing(&self, owner_id: &str, code: &str) -> Result<Option<ChatRow>> {
        let _w = self.write_lock().await;
        let row = sqlx::query(&format!(
            "UPDATE channel_chats SET state = 'paired', pair_code = NULL, pair_expires_ms = NULL, \
             updated_at_ms = $1 \
             WHERE pair_code = $2 AND state = 'pending' AND pair_expires_ms >= $1 \
             AND channel_id IN (SELECT id FROM channels WHERE owner_id = $3) \
             RETURNING {CHAT_COLUMNS}"
        ))
        .bind(now_ms())
        .bind(code)
        .bind(owner_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(chat_row).transpose()
    }

    pub async fn add_channel_attachments(&self, rows: &[AttachmentRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        for a in rows {
            sqlx::query(
                "INSERT INTO channel_attachments \
                 (id, session_id, channel_id, kind, locator, name, mime_type, size, created_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&a.id)
            .bind(&a.session_id)
            .bind(&a.channel_id)
            .bind(&a.kind)
            .bind(&a.locator)
            .bind(&a.name)
            .bind(&a.mime_type)
            .bind(a.size)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Attachment `id` of session `session_id`, and the channel instance that can fetch it.
    pub async fn channel_attachment(
        &self,
        session_id: &str,
        id: &str,
    ) -> Result<Option<(AttachmentRow, String)>> {
        let row = sqlx::query(
            "SELECT a.id, a.session_id, a.channel_id, a.kind, a.locator, a.name, a.mime_type, \
             a.size, c.instance_id FROM channel_attachments a \
             JOIN channels c ON c.id = a.channel_id WHERE a.session_id = $1 AND a.id = $2",
        )
        .bind(session_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                AttachmentRow {
                    id: r.try_get("id")?,
                    session_id: r.try_get("session_id")?,
                    channel_id: r.try_get("channel_id")?,
                    kind: r.try_get("kind")?,
                    locator: r.try_get("locator")?,
                    name: r.try_get("name")?,
                    mime_type: r.try_get("mime_type")?,
                    size: r.try_get("size")?,
                },
                r.try_get("instance_id")?,
            ))
        })
        .transpose()
    }

    /// Whether session `session_id` received any file through a channel (its agent then gets
    /// the tool that fetches one).
    pub async fn session_has_attachments(&self, session_id: &str) -> Result<bool> {
        let row =
            sqlx::query("SELECT 1 AS one FROM channel_attachments WHERE session_id = $1 LIMIT 1")
                .bind(session_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.is_some())
    }
}
