//! Storage: sqlx over SQLite (the embedded default, one file in the data directory) or
//! PostgreSQL (selected by a `postgres://` URL, how several hosts share state). Queries are
//! written once in the dialect both accept; migrations are per backend and run at start.

pub mod agents;
pub(crate) mod batch;
pub mod budgets;
pub mod channels;
pub mod claims;
pub mod invites;
pub mod plugins;
pub mod runs;
pub mod sessions;
pub mod settings;
mod sqlite_writer;
pub mod users;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use tokio::sync::{Mutex, MutexGuard};

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection pool plus what the backend needs to be used safely.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    /// A SQLite file's connection for [`Db::write_all`].
    sqlite_writer: Option<Arc<sqlite_writer::SqliteWriter>>,
    pub backend: Backend,
    /// SQLite allows one writer; a read transaction that later writes fails with SQLITE_BUSY
    /// when another writer got there first. Serialising write transactions in-process avoids
    /// that (PostgreSQL needs no such lock).
    writer: Arc<Mutex<()>>,
    pub(crate) auth_cache: Arc<users::AuthCache>,
    /// PostgreSQL: the plugin generation's reader (see `plugins.rs`).
    generation_reader: Option<Arc<plugins::GenerationReader>>,
}

impl Db {
    /// The SQLite file `kelp.db` in `data_dir`.
    pub async fn open_sqlite_in(data_dir: &Path) -> Result<Db> {
        let path = data_dir.join("kelp.db");
        Db::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("unsupported database URL `{url}`: use sqlite://PATH or postgres://…");
        };
        let options = pool_options(backend).max_connections(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        let pool = options
            .connect(url)
            .await
            .with_context(|| format!("connecting to {}", redact_url(url)))?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        }
        .context("running database migrations")?;
        // SQLite drops a connection's page cache whenever another connection has written
        // since its last transaction. The agent loop's writes all go through one connection of
        // their own, so the pages they touch stay cached from one step to the next.
        let writer = Arc::new(Mutex::new(()));
        let sqlite_writer = match backend {
            Backend::Sqlite => match database_file(&pool).await? {
                Some(path) => Some(Arc::new(sqlite_writer::SqliteWriter::open(
                    &path,
                    writer.clone(),
                )?)),
                // An in-memory database: another connection would open a database of its own.
                None => None,
            },
            Backend::Postgres => None,
        };
        Ok(Db {
            pool,
            sqlite_writer,
            backend,
            writer,
            auth_cache: Arc::default(),
            generation_reader: (backend == Backend::Postgres)
                .then(|| Arc::new(plugins::GenerationReader::new(url))),
        })
    }

    /// On a SQLite file: the agent loop's writes that found the write lock held by another
    /// connection and waited for it on the blocking pool.
    pub fn sqlite_writes_waited(&self) -> Option<u64> {
        self.sqlite_writer
            .as_ref()
            .map(|w| w.moved_to_blocking_pool())
    }

    /// Held for the duration of a write transaction on SQLite; a no-op on PostgreSQL.
    pub async fn write_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }
}

/// The file of the pool's SQLite database, `None` if it is in memory.
async fn database_file(pool: &AnyPool) -> Result<Option<std::path::PathBuf>> {
    use sqlx::Row;
    let rows = sqlx::query("PRAGMA database_list").fetch_all(pool).await?;
    for row in rows {
        let name: String = row.try_get("name")?;
        let file: String = row.try_get("file")?;
        if name == "main" {
            return Ok((!file.is_empty()).then(|| file.into()));
        }
    }
    Ok(None)
}

fn pool_options(backend: Backend) -> AnyPoolOptions {
    let options = AnyPoolOptions::new()
        // A pooled SQLite connection is a file handle in this process: it cannot have gone
        // away, and the ping before each use cost a round trip to the connection's thread on
        // every query. A PostgreSQL connection can die with its server.
        .test_before_acquire(backend == Backend::Postgres);
    match backend {
        Backend::Sqlite => options.after_connect(|conn, _meta| {
            Box::pin(async move {
                // WAL with synchronous=NORMAL survives a process kill (only an OS crash can
                // lose the last transactions); busy_timeout covers other processes' writes.
                conn.execute(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                     PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
                )
                .await?;
                Ok(())
            })
        }),
        Backend::Postgres => options,
    }
}

fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A result row read by column name: one of sqlx's, or of the SQLite writer's connection
/// (`sqlite_writer.rs`), so one decoder serves both.
pub(crate) trait Columns {
    fn text(&self, name: &str) -> Result<String>;
    fn opt_text(&self, name: &str) -> Result<Option<String>>;
    fn int(&self, name: &str) -> Result<i64>;
}

impl Columns for sqlx::any::AnyRow {
    fn text(&self, name: &str) -> Result<String> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
    fn int(&self, name: &str) -> Result<i64> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<String> {
        Ok(self.get(name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>> {
        Ok(self.get(name)?)
    }
    fn int(&self, name: &str) -> Result<i64> {
        Ok(self.get(name)?)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
