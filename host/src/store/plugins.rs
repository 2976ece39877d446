//! Installed plugins, their instances, sealed secrets and the plugins' key-value data.

use anyhow::{Context, Result};
use sqlx::Row;

use super::{Columns, Db, now_ms};

/// An installed package as stored.
#[derive(Debug, Clone)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub digest: String,
    pub wasm_sha256: Option<String>,
    /// The `kelp:plugin` version the component was built for; `None` without a component.
    pub contract: Option<String>,
    pub manifest_json: String,
    pub manifest_toml: String,
    pub installed_at_ms: i64,
}

/// A plugin instance as stored.
#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: String,
    pub plugin: String,
    pub config_json: String,
    pub approval_json: String,
    pub enabled: bool,
    pub created_at_ms: i64,
    /// The plugin generation of the instance's last change (its config, approval, enabled,
    /// secrets or package): what a host compares with the revision it loaded.
    pub revision: i64,
}

fn plugin_row(row: &sqlx::any::AnyRow) -> Result<PluginRow> {
    Ok(PluginRow {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        kind: row.try_get("kind")?,
        digest: row.try_get("digest")?,
        wasm_sha256: row.try_get("wasm_sha256")?,
        contract: row.try_get("contract")?,
        manifest_json: row.try_get("manifest_json")?,
        manifest_toml: row.try_get("manifest_toml")?,
        installed_at_ms: row.try_get("installed_at_ms")?,
    })
}

fn instance_row(row: &sqlx::any::AnyRow) -> Result<InstanceRow> {
    Ok(InstanceRow {
        id: row.try_get("id")?,
        plugin: row.try_get("plugin")?,
        config_json: row.try_get("config_json")?,
        approval_json: row.try_get("approval_json")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at_ms: row.try_get("created_at_ms")?,
        revision: row.try_get("revision")?,
    })
}

const PLUGIN_COLUMNS: &str = "name, version, kind, digest, wasm_sha256, contract, manifest_json, manifest_toml, installed_at_ms";
const INSTANCE_COLUMNS: &str =
    "id, plugin, config_json, approval_json, enabled, created_at_ms, revision";

/// Starts the next plugin generation inside `tx`: every change to plugins, instances, their
/// secrets or grants calls this in its own transaction, so a host that sees the new value
/// also sees the change. Returns the new generation (the revision of what `tx` touches).
async fn next_generation(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<i64> {
    let row =
        sqlx::query("UPDATE plugin_generation SET value = value + 1 WHERE id = 1 RETURNING value")
            .fetch_one(&mut **tx)
            .await
            .context("bumping the plugin generation")?;
    Ok(row.try_get("value")?)
}

/// Stamps instance `id` with `revision` inside `tx`.
async fn stamp_instance(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    revision: i64,
) -> Result<()> {
    sqlx::query("UPDATE plugin_instances SET revision = $1 WHERE id = $2")
        .bind(revision)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl Db {
    /// Stores a package and its first instance in one transaction; replaces an older version
    /// of the same plugin (its instances keep their config, approval and secrets, but for the
    /// approvals in `approvals`, `(instance id, approval JSON)`, set in the same transaction).
    /// Returns the plugin generation it started.
    pub async fn put_plugin(
        &self,
        row: &PluginRow,
        package: &[u8],
        first_instance: &InstanceRow,
        approvals: &[(String, String)],
    ) -> Result<i64> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        sqlx::query(
            "INSERT INTO plugins (name, version, kind, digest, wasm_sha256, contract, manifest_json, manifest_toml, package, installed_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (name) DO UPDATE SET version = excluded.version, kind = excluded.kind, \
             digest = excluded.digest, wasm_sha256 = excluded.wasm_sha256, contract = excluded.contract, \
             manifest_json = excluded.manifest_json, manifest_toml = excluded.manifest_toml, \
             package = excluded.package, installed_at_ms = excluded.installed_at_ms",
        )
        .bind(&row.name)
        .bind(&row.version)
        .bind(&row.kind)
        .bind(&row.digest)
        .bind(&row.wasm_sha256)
        .bind(&row.contract)
        .bind(&row.manifest_json)
        .bind(&row.manifest_toml)
        .bind(package)
        .bind(row.installed_at_ms)
        .execute(&mut *tx)
        .await
        .context("storing the plugin package")?;
        sqlx::query(
            "INSERT INTO plugin_instances (id, plugin, config_json, approval_json, enabled, created_at_ms, revision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&first_instance.id)
        .bind(&first_instance.plugin)
        .bind(&first_instance.config_json)
        .bind(&first_instance.approval_json)
        .bind(i64::from(first_instance.enabled))
        .bind(now_ms())
        .bind(generation)
        .execute(&mut *tx)
        .await
        .context("storing the plugin instance")?;
        for (id, approval_json) in approvals {
            sqlx::query(
                "UPDATE plugin_instances SET approval_json = $1 WHERE id = $2 AND plugin = $3",
            )
            .bind(approval_json)
            .bind(id)
            .bind(&row.name)
            .execute(&mut *tx)
            .await?;
        }
        // Every instance of the plugin now runs another package.
        sqlx::query("UPDATE plugin_instances SET revision = $1 WHERE plugin = $2")
            .bind(generation)
            .bind(&row.name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(generation)
    }

    pub async fn list_plugins(&self) -> Result<Vec<PluginRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(plugin_row).collect()
    }

    pub async fn get_plugin(&self, name: &str) -> Result<Option<PluginRow>> {
        let row = sqlx::query(&format!(
            "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(plugin_row).transpose()
    }

    /// The digest of an installed plugin's package: what a cache of anything derived from the
    /// package is keyed by, read without the package itself.
    pub async fn plugin_digest(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT digest FROM plugins WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("digest")).transpose()?)
    }

    pub async fn get_package(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT package FROM plugins WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("package")).transpose()?)
    }

    /// Removes a plugin with its instances, secrets and kv data. Returns whether it existed
    /// and the plugin generation the removal started.
    pub async fn delete_plugin(&self, name: &str) -> Result<(bool, i64)> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        sqlx::query(
            "DELETE FROM plugin_kv WHERE instance_id IN (SELECT id FROM plugin_instances WHERE plugin = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM instance_secrets WHERE instance_id IN (SELECT id FROM plugin_instances WHERE plugin = $1)",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM plugin_instances WHERE plugin = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM plugins WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0, generation))
    }

    /// The current plugin generation: one primary-key read, made before every plugin call.
    pub async fn plugin_generation(&self) -> Result<i64> {
        const SQL: &str = "SELECT value FROM plugin_generation WHERE id = 1";
        // On a SQLite file, in place when the writer's connection is free (see
        // `sqlite_writer.rs`): a few microseconds instead of a hand-off to a pool connection's
        // thread and back, which would cost a trivial tool call a good part of its time.
        if let Some(writer) = &self.sqlite_writer
            && let Some(read) = writer.try_read(SQL, &[], |row| row.int("value"))
        {
            return read?.context("the plugin generation row is missing");
        }
        if let Some(reader) = &self.generation_reader
            && let Some(generation) = reader.read(SQL).await
        {
            return Ok(generation);
        }
        let row = sqlx::query(SQL).fetch_one(&self.pool).await?;
        Ok(row.try_get("value")?)
    }

    pub async fn list_instances(&self) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM plugin_instances ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(instance_row).collect()
    }

    pub async fn get_instance(&self, id: &str) -> Result<Option<InstanceRow>> {
        let row = sqlx::query(&format!(
            "SELECT {INSTANCE_COLUMNS} FROM plugin_instances WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(instance_row).transpose()
    }

    /// Creates an instance; returns its revision.
    pub async fn insert_instance(&self, row: &InstanceRow) -> Result<i64> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        sqlx::query(
            "INSERT INTO plugin_instances (id, plugin, config_json, approval_json, enabled, created_at_ms, revision) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&row.id)
        .bind(&row.plugin)
        .bind(&row.config_json)
        .bind(&row.approval_json)
        .bind(i64::from(row.enabled))
        .bind(now_ms())
        .bind(generation)
        .execute(&mut *tx)
        .await
        .with_context(|| format!("creating instance `{}` (does it exist already?)", row.id))?;
        tx.commit().await?;
        Ok(generation)
    }

    /// Deletes one instance with its secrets and kv data. Returns whether it existed and the
    /// plugin generation the deletion started.
    pub async fn delete_instance(&self, id: &str) -> Result<(bool, i64)> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        sqlx::query("DELETE FROM plugin_kv WHERE instance_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM instance_secrets WHERE instance_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM plugin_instances WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0, generation))
    }

    /// Enables or disables an instance; its new revision, `None` if there is no such instance.
    pub async fn set_instance_enabled(&self, id: &str, enabled: bool) -> Result<Option<i64>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        let done =
            sqlx::query("UPDATE plugin_instances SET enabled = $1, revision = $2 WHERE id = $3")
                .bind(i64::from(enabled))
                .bind(generation)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(generation))
    }

    /// Replaces an instance's config and approval; its new revision, `None` if there is no
    /// such instance.
    pub async fn update_instance(
        &self,
        id: &str,
        config_json: &str,
        approval_json: &str,
    ) -> Result<Option<i64>> {
        let changed = self
            .reconfigure_instance(id, config_json, approval_json, SecretWrites::Put(&[]))
            .await?;
        Ok(changed.map(|(generation, _)| generation))
    }

    /// Replaces an instance's config and approval and writes its secrets, all in one
    /// transaction and one generation: no host ever loads the new config with the old secrets
    /// (a new base URL with the key meant for the old one). Returns the new revision and the
    /// names of the stored secrets it removed; `None` if there is no such instance.
    pub async fn reconfigure_instance(
        &self,
        id: &str,
        config_json: &str,
        approval_json: &str,
        secrets: SecretWrites<'_>,
    ) -> Result<Option<(i64, Vec<String>)>> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        let done = sqlx::query(
            "UPDATE plugin_instances SET config_json = $1, approval_json = $2, revision = $3 WHERE id = $4",
        )
        .bind(config_json)
        .bind(approval_json)
        .bind(generation)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            // Dropping `tx` rolls the generation back too: nothing changed.
            return Ok(None);
        }
        let (put, mut removed) = match secrets {
            SecretWrites::Put(put) => (put, Vec::new()),
            SecretWrites::Replace(put) => {
                let rows = sqlx::query(
                    "DELETE FROM instance_secrets WHERE instance_id = $1 RETURNING name",
                )
                .bind(id)
                .fetch_all(&mut *tx)
                .await?;
                let removed = rows
                    .iter()
                    .map(|r| r.try_get::<String, _>("name"))
                    .collect::<Result<Vec<_>, _>>()?;
                (put, removed)
            }
        };
        for (name, sealed) in put {
            sqlx::query(
                "INSERT INTO instance_secrets (instance_id, name, sealed) VALUES ($1, $2, $3) \
                 ON CONFLICT (instance_id, name) DO UPDATE SET sealed = excluded.sealed",
            )
            .bind(id)
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
            removed.retain(|n| n != name);
        }
        tx.commit().await?;
        removed.sort();
        Ok(Some((generation, removed)))
    }

    /// Stores a sealed secret of an instance; returns the instance's new revision.
    pub async fn put_secret(&self, instance_id: &str, name: &str, sealed: &str) -> Result<i64> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        sqlx::query(
            "INSERT INTO instance_secrets (instance_id, name, sealed) VALUES ($1, $2, $3) \
             ON CONFLICT (instance_id, name) DO UPDATE SET sealed = excluded.sealed",
        )
        .bind(instance_id)
        .bind(name)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        stamp_instance(&mut tx, instance_id, generation).await?;
        tx.commit().await?;
        Ok(generation)
    }

    /// Removes a secret of an instance; whether it existed, and the instance's new revision.
    pub async fn delete_secret(&self, instance_id: &str, name: &str) -> Result<(bool, i64)> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let generation = next_generation(&mut tx).await?;
        let done = sqlx::query("DELETE FROM instance_secrets WHERE instance_id = $1 AND name = $2")
            .bind(instance_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        stamp_instance(&mut tx, instance_id, generation).await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0, generation))
    }

    /// `(name, sealed value)` pairs of one instance.
    pub async fn sealed_secrets(&self, instance_id: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT name, sealed FROM instance_secrets WHERE instance_id = $1 ORDER BY name",
        )
        .bind(instance_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("name")?, r.try_get("sealed")?)))
            .collect()
    }

    pub async fn kv_get(
        &self,
        instance_id: &str,
        owner: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query(
            "SELECT value FROM plugin_kv WHERE instance_id = $1 AND owner = $2 AND key = $3",
        )
        .bind(instance_id)
        .bind(owner)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    pub async fn kv_keys(
        &self,
        instance_id: &str,
        owner: &str,
        prefix: &str,
    ) -> Result<Vec<String>> {
        // Prefix match without LIKE, whose wildcards would need escaping: compare the
        // leading characters instead.
        // PostgreSQL has no substr(text, bigint, …): the length goes in as an INTEGER.
        let rows = sqlx::query(
            "SELECT key FROM plugin_kv WHERE instance_id = $1 AND owner = $2 \
             AND substr(key, 1, CAST($3 AS INTEGER)) = $4 ORDER BY key",
        )
        .bind(instance_id)
        .bind(owner)
        .bind(prefix.chars().count() as i64)
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("key")?)).collect()
    }

    /// The query of the bytes (keys + values) one instance and owner use. `length` of a text
    /// counts characters on both databases; the quota is in bytes, as the guest's keys are.
    fn kv_usage_query(&self) -> &'static str {
        match self.backend {
            super::Backend::Sqlite => {
                "SELECT CAST(COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) AS BIGINT) AS used \
                 FROM plugin_kv WHERE instance_id = $1 AND owner = $2"
            }
            super::Backend::Postgres => {
                "SELECT CAST(COALESCE(SUM(octet_length(key) + length(value)), 0) AS BIGINT) AS used \
                 FROM plugin_kv WHERE instance_id = $1 AND owner = $2"
            }
        }
    }

    /// Bytes (keys + values) stored for one instance and owner.
    pub async fn kv_usage(&self, instance_id: &str, owner: &str) -> Result<u64> {
        let row = sqlx::query(self.kv_usage_query())
            .bind(instance_id)
            .bind(owner)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("used")?.max(0) as u64)
    }

    /// Applies one call's buffered writes in a single transaction, after re-checking the
    /// values its compare-and-swaps saw and the quota. Nothing is written if any check fails.
    pub async fn kv_commit(&self, writes: &KvWrites) -> Result<KvCommit> {
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let applied = self.kv_apply(&mut tx, writes).await?;
        if applied == KvCommit::Done {
            tx.commit().await?;
        }
        Ok(applied)
    }

    /// Applies `w` inside the caller's transaction (which the caller commits only if this
    /// answers `Done`; the caller holds the write lock).
    pub(super) async fn kv_apply(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        w: &KvWrites,
    ) -> Result<KvCommit> {
        let (instance_id, owner) = (&w.instance_id, &w.owner);
        if self.backend == super::Backend::Postgres {
            // READ COMMITTED lets two transactions both see a key as absent and both "win" a
            // compare-and-swap; serialise commits per (instance, owner) instead. SQLite gets
            // the same from its single writer.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1 || '/' || $2))::text AS locked")
                .bind(instance_id)
                .bind(owner)
                .fetch_one(&mut **tx)
                .await?;
        }
        for (key, expected) in &w.expectations {
            let current: Option<Vec<u8>> = sqlx::query(
                "SELECT value FROM plugin_kv WHERE instance_id = $1 AND owner = $2 AND key = $3",
            )
            .bind(instance_id)
            .bind(owner)
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.try_get("value"))
            .transpose()?;
            if &current != expected {
                return Ok(KvCommit::Conflict(key.clone()));
            }
        }
        for (key, value) in &w.writes {
            match value {
                Some(value) => {
                    sqlx::query(
                        "INSERT INTO plugin_kv (instance_id, owner, key, value) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (instance_id, owner, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(instance_id)
                    .bind(owner)
                    .bind(key)
                    .bind(value)
                    .execute(&mut **tx)
                    .await?;
                }
                None => {
                    sqlx::query(
                        "DELETE FROM plugin_kv WHERE instance_id = $1 AND owner = $2 AND key = $3",
                    )
                    .bind(instance_id)
                    .bind(owner)
                    .bind(key)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        let used: i64 = sqlx::query(self.kv_usage_query())
            .bind(instance_id)
            .bind(owner)
            .fetch_one(&mut **tx)
            .await?
            .try_get("used")?;
        if used.max(0) as u64 > w.quota {
            return Ok(KvCommit::OverQuota);
        }
        Ok(KvCommit::Done)
    }
}

/// One plugin call's kv writes, not yet applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvWrites {
    pub instance_id: String,
    pub owner: String,
    /// Values the call's compare-and-swaps saw, re-checked when applied.
    pub expectations: Vec<(String, Option<Vec<u8>>)>,
    /// `None` deletes the key.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
    /// The bytes the instance and owner may use in all.
    pub quota: u64,
}

impl KvCommit {
    /// `Ok` for `Done`; else why nothing was written.
    pub fn into_result(self, quota: u64) -> std::result::Result<(), String> {
        match self {
            KvCommit::Done => Ok(()),
            KvCommit::Conflict(key) => Err(format!(
                "kv: key `{key}` was changed by a concurrent call after this call's compare-and-swap; nothing was written"
            )),
            KvCommit::OverQuota => Err(format!(
                "kv: the call's writes would exceed the quota of {quota} bytes; nothing was written"
            )),
        }
    }
}

/// What [`Db::reconfigure_instance`] does with an instance's stored secrets.
#[derive(Debug, Clone, Copy)]
pub enum SecretWrites<'a> {
    /// Stores these `(name, sealed value)`, keeping the others.
    Put(&'a [(String, String)]),
    /// Stores exactly these: every other secret of the instance is removed.
    Replace(&'a [(String, String)]),
}

/// Outcome of [`Db::kv_commit`].
#[derive(Debug, PartialEq, Eq)]
pub enum KvCommit {
    Done,
    /// Another call changed this key after this call's compare-and-swap read it.
    Conflict(String),
    OverQuota,
}

/// Longest wait for one read of the generation on the reader's own connection, or for that
/// connection to open, before the caller reads through the pool instead.
const GENERATION_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// After the reader's connection failed or could not be opened, how long callers read through
/// the pool before it tries again: with the database unreachable (an address that drops
/// packets answers nothing until the OS gives up), every plugin call would otherwise wait out
/// another attempt.
const GENERATION_RECONNECT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(10);

/// PostgreSQL's reader of the plugin generation. Every plugin call on every host reads it, so
/// it has a connection of its own: a pooled read would add the pool's liveness ping (a second
/// round trip) and the `Any` driver's overhead, several times the read itself. Concurrent
/// callers share reads: one that arrives while a read is in flight waits for the next one,
/// whose answer is as fresh as its own would be, so the connection is never a queue.
pub(super) struct GenerationReader {
    url: String,
    /// Bounds the connect and each read ([`GENERATION_READ_TIMEOUT`]).
    timeout: std::time::Duration,
    /// [`GENERATION_RECONNECT_BACKOFF`].
    backoff: std::time::Duration,
    state: tokio::sync::Mutex<ReaderState>,
}

#[derive(Default)]
struct ReaderState {
    conn: Option<sqlx::PgConnection>,
    /// When the last read was sent, and what it answered.
    last: Option<(std::time::Instant, i64)>,
    /// When the connection last failed or could not be opened.
    failed_at: Option<std::time::Instant>,
}

impl GenerationReader {
    pub(super) fn new(url: &str) -> GenerationReader {
        GenerationReader::with_limits(url, GENERATION_READ_TIMEOUT, GENERATION_RECONNECT_BACKOFF)
    }

    fn with_limits(
        url: &str,
        timeout: std::time::Duration,
        backoff: std::time::Duration,
    ) -> GenerationReader {
        GenerationReader {
            url: url.to_owned(),
            timeout,
            backoff,
            state: tokio::sync::Mutex::default(),
        }
    }

    /// The generation as of a moment after this call began; `None` if the connection failed,
    /// could not be opened in time, or failed lately (the caller reads through the pool).
    async fn read(&self, sql: &str) -> Option<i64> {
        use sqlx::Connection;
        let arrived = std::time::Instant::now();
        let mut state = self.state.lock().await;
        // A read sent after this caller arrived saw every change committed before it.
        if let Some((sent, generation)) = state.last
            && sent >= arrived
        {
            return Some(generation);
        }
        if state.conn.is_none()
            && state
                .failed_at
                .is_some_and(|failed| failed.elapsed() < self.backoff)
        {
            return None;
        }
        let sent = std::time::Instant::now();
        let conn = match &mut state.conn {
            Some(conn) => conn,
            // Bounded like the read: callers wait on this one behind the mutex.
            None => {
                match tokio::time::timeout(self.timeout, sqlx::PgConnection::connect(&self.url))
                    .await
                {
                    Ok(Ok(conn)) => state.conn.insert(conn),
                    failed => {
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_owned(),
                        };
                        tracing::warn!(error, "connecting for plugin generation reads");
                        state.failed_at = Some(std::time::Instant::now());
                        return None;
                    }
                }
            }
        };
        // Bounded: a connection that died without a word must not hold every caller.
        let read = sqlx::query_scalar::<_, i64>(sql).fetch_one(conn);
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(generation)) => {
                state.last = Some((sent, generation));
                state.failed_at = None;
                Some(generation)
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(error, "reading the plugin generation");
                state.conn = None;
                state.failed_at = Some(std::time::Instant::now());
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::GenerationReader;

    /// A database address that accepts connections and never answers (a proxy whose database
    /// is gone, a half-dead server): the reader gives up within its timeout, the caller reads
    /// through the pool, and the next calls do not wait out another connect.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_database_that_never_answers_does_not_hold_generation_reads() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                // Held open, never read or answered.
                sockets.push(socket);
            }
        });
        let reader = GenerationReader::with_limits(
            &format!("postgres://kelp@{addr}/kelp"),
            Duration::from_millis(300),
            Duration::from_secs(3600),
        );
        let read = tokio::time::timeout(Duration::from_secs(20), reader.read("SELECT 1"))
            .await
            .expect("the reader gave up on a database that never answers");
        assert_eq!(read, None);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Within the back-off, callers go to the pool without another attempt.
        for _ in 0..3 {
            assert_eq!(reader.read("SELECT 1").await, None);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        held.abort();
    }
}
