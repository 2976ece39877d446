//! The registry's database: SQLite (one file in the data directory) by default, PostgreSQL
//! by a `postgres://` URL so that several registry processes can share one. Queries are
//! written once, in the dialect both accept (`$1` parameters, 0/1 flags); search is the one
//! place the backends differ (FTS5 against `tsvector`), see `search.rs`.

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

/// A pool plus what its backend needs to be written safely.
#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// SQLite has one writer: a transaction that reads and then writes fails with
    /// SQLITE_BUSY when another got the write lock first. Writes are serialised in-process;
    /// PostgreSQL needs no such lock (unique keys settle races between processes).
    writer: Arc<Mutex<()>>,
}

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and runs the migrations.
    pub async fn connect(url: &str) -> Result<Db> {
        install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("unsupported database URL `{url}`: use sqlite://PATH or postgres://…");
        };
        let mut options = AnyPoolOptions::new().max_connections(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL with synchronous=NORMAL survives a process kill; busy_timeout
                    // covers a second process on the same file.
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
                         PRAGMA foreign_keys=ON; PRAGMA busy_timeout=5000;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options
            .connect(url)
            .await
            .with_context(|| format!("connecting to the registry database ({backend:?})"))?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await,
        }
        .context("running the registry's database migrations")?;
        Ok(Db {
            pool,
            backend,
            writer: Arc::new(Mutex::new(())),
        })
    }

    /// Held for the length of a write transaction on SQLite; nothing on PostgreSQL.
    pub async fn write_lock(&self) -> Option<MutexGuard<'_, ()>> {
        match self.backend {
            Backend::Sqlite => Some(self.writer.lock().await),
            Backend::Postgres => None,
        }
    }
}

/// Whether `error` is a unique-key violation (a concurrent writer got there first).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => {
            e.is_unique_violation() || e.code().is_some_and(|c| c == "2067" || c == "1555")
        }
        _ => false,
    }
}
