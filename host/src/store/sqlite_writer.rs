//! The agent loop's write transactions on SQLite, made in place on the calling thread.
//!
//! sqlx runs every SQLite connection on a thread of its own, so each query is a hand-off to
//! that thread and back. On a 2-core VM a small write transaction took about 100 µs that way,
//! of which SQLite's own work was about 15 µs (`docs/agents.md`, Performance). The agent loop
//! writes once or twice per step and the user waits on the last write, so [`Db::write_all`]
//! runs its transactions here instead: on one connection of its own (so its page cache stays
//! warm between steps), directly on the task's thread.
//!
//! What keeps that from stalling the async runtime:
//! - The connection never waits for a lock. Its busy timeout is zero, so when another process
//!   (or a connection of the pool) holds SQLite's write lock, `BEGIN IMMEDIATE` fails at once,
//!   before anything was written, and the transaction is run again on the blocking pool, where
//!   it may wait the usual [`BUSY_TIMEOUT`].
//! - It never checkpoints. Checkpoints write the WAL back into the database file and sync it;
//!   every [`CHECKPOINT_EVERY`] commits one runs on a pool connection's own thread instead
//!   (see [`SqliteWriter::checkpoint`]).
//!
//! [`Db::write_all`]: super::Db::write_all

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use sqlx::{AnyPool, Row};
use tokio::sync::Mutex as AsyncMutex;

use super::batch::{Arg, Statement};

/// How long a write moved to the blocking pool waits for another writer, as the pool's
/// connections do.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Commits between passive checkpoints. A step writes a handful of pages, so this keeps the
/// WAL near SQLite's own default of checkpointing at 1,000 pages.
const CHECKPOINT_EVERY: u64 = 200;
/// WAL frames (pages) past which a checkpoint makes sure the WAL starts over: 8 MiB of
/// 4 KiB pages, twice SQLite's own autocheckpoint size.
const WAL_RESTART_FRAMES: i64 = 2_048;
/// Prepared statements kept: the agent loop uses about ten distinct ones.
const STATEMENT_CACHE: usize = 64;

/// See the module's documentation.
pub(crate) struct SqliteWriter {
    path: PathBuf,
    /// The process's SQLite write lock (`Db::write_lock`'s).
    lock: Arc<AsyncMutex<()>>,
    conn: Arc<Mutex<Connection>>,
    commits: AtomicU64,
    checkpointing: Arc<AtomicBool>,
    /// Transactions that found the write lock taken and ran on the blocking pool.
    moved: AtomicU64,
}

impl SqliteWriter {
    /// A connection to the database file at `path`, which the pool has already created and
    /// migrated; `lock` is the process's SQLite write lock.
    pub fn open(path: &Path, lock: Arc<AsyncMutex<()>>) -> Result<SqliteWriter> {
        Ok(SqliteWriter {
            lock,
            conn: Arc::new(Mutex::new(connect(path)?)),
            path: path.to_owned(),
            commits: AtomicU64::new(0),
            checkpointing: Arc::default(),
            moved: AtomicU64::new(0),
        })
    }

    /// Transactions that had to wait for another writer, since the process started.
    pub fn moved_to_blocking_pool(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Runs `statements` as one transaction, holding the process's write lock until it is
    /// over, even if the caller stops waiting for it; returns the rows each one changed.
    /// `in_place: false` runs it on the blocking pool whatever happens: for a transaction
    /// whose reads can grow long.
    pub async fn write_all(
        &self,
        statements: &[Statement],
        pool: &AnyPool,
        in_place: bool,
    ) -> Result<Vec<u64>> {
        let lock = self.lock.clone().lock_owned().await;
        let attempt = if !in_place {
            None
        } else {
            let mut conn = locked(&self.conn, &self.path);
            conn.busy_timeout(Duration::ZERO)?;
            let attempt = transaction(&conn, statements);
            repair(&mut conn, &self.path);
            Some(attempt)
        };
        let result = match attempt {
            Some(Err(e)) if is_busy(&e) => {
                self.moved.fetch_add(1, Ordering::Relaxed);
                self.on_blocking_pool(statements, lock).await?
            }
            None => self.on_blocking_pool(statements, lock).await?,
            Some(other) => {
                drop(lock);
                other
            }
        };
        let changed = result.context("writing to SQLite")?;
        if self.commits.fetch_add(1, Ordering::Relaxed) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            self.checkpoint(pool);
        }
        Ok(changed)
    }

    /// The transaction on the blocking pool, where it may wait [`BUSY_TIMEOUT`] for another
    /// writer; `lock` goes with it.
    async fn on_blocking_pool(
        &self,
        statements: &[Statement],
        lock: tokio::sync::OwnedMutexGuard<()>,
    ) -> Result<rusqlite::Result<Vec<u64>>> {
        let conn = self.conn.clone();
        let statements = statements.to_vec();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let _lock = lock;
            let mut conn = locked(&conn, &path);
            conn.busy_timeout(BUSY_TIMEOUT)?;
            let result = transaction(&conn, &statements);
            repair(&mut conn, &path);
            // Reads in place must never wait.
            conn.busy_timeout(Duration::ZERO)?;
            Ok(result)
        })
        .await
        .context("the write's blocking task ended")?
    }

    /// Runs a one-statement read on this connection in place, when the connection is free
    /// at once: its pages are the ones the agent loop just wrote, and a pool read would be a
    /// hand-off to another thread. `None` when it is not free (a write waiting for another
    /// writer holds it) or SQLite is busy, and the caller reads through the pool instead.
    pub fn try_read<T>(
        &self,
        sql: &str,
        args: &[Arg],
        decode: impl FnOnce(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Option<Result<Option<T>>> {
        let conn = self.conn.try_lock().ok()?;
        let read = || -> rusqlite::Result<Option<Result<T>>> {
            conn.busy_timeout(Duration::ZERO)?;
            let mut prepared = conn.prepare_cached(sql)?;
            bind(&mut prepared, sql, args)?;
            let mut rows = prepared.raw_query();
            Ok(rows.next()?.map(decode))
        };
        match read() {
            Ok(row) => Some(row.transpose()),
            Err(e) if is_busy(&e) => None,
            Err(e) => Some(Err(anyhow::Error::new(e).context("reading from SQLite"))),
        }
    }

    /// A passive checkpoint on a pool connection's thread: it copies the WAL into the
    /// database while writes go on. The WAL file only starts over from its beginning when a
    /// write finds every frame of it copied, which writes arriving during a checkpoint
    /// prevent; under steady load it would keep growing. So once it holds more than
    /// [`WAL_RESTART_FRAMES`], a second checkpoint copies the last few frames while the write
    /// lock is held, and the next write starts the WAL over. That one holds up writes while
    /// it syncs the database file (about 10 ms on a VM's disk), so it runs only then, not
    /// after every checkpoint.
    fn checkpoint(&self, pool: &AnyPool) {
        if self.checkpointing.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = pool.clone();
        let busy = self.checkpointing.clone();
        let lock = self.lock.clone();
        tokio::spawn(async move {
            let passive = "PRAGMA wal_checkpoint(PASSIVE)";
            let result = async {
                let mut conn = pool.acquire().await?;
                // (busy, frames in the WAL, frames copied)
                let frames: i64 = sqlx::query(passive)
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get(1)?;
                if frames > WAL_RESTART_FRAMES {
                    // The connection first: the lock is not held while waiting for one.
                    let _lock = lock.lock().await;
                    sqlx::query(passive).execute(&mut *conn).await?;
                }
                Ok::<_, sqlx::Error>(())
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(error = %e, "WAL checkpoint failed");
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// The connection, also after a panic while it was held: what the panic interrupted is
/// rolled back (by [`repair`]) before the next write.
fn locked<'a>(conn: &'a Mutex<Connection>, path: &Path) -> std::sync::MutexGuard<'a, Connection> {
    match conn.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            let mut guard = poisoned.into_inner();
            repair(&mut guard, path);
            conn.clear_poison();
            guard
        }
    }
}

fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} for the agent loop's writes", path.display()))?;
    conn.execute_batch(
        "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=0;",
    )?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// A connection left inside a transaction (its `ROLLBACK` failed) is replaced: closing it
/// rolls the transaction back, and the next write must not run inside it.
fn repair(conn: &mut Connection, path: &Path) {
    if conn.is_autocommit() {
        return;
    }
    match connect(path) {
        Ok(fresh) => *conn = fresh,
        Err(e) => tracing::error!(error = %format!("{e:#}"), "reopening the SQLite writer failed"),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(ErrorCode::DatabaseBusy)
}

/// `BEGIN IMMEDIATE` takes the write lock before anything is written, so a busy database
/// fails the transaction at its first statement.
fn transaction(conn: &Connection, statements: &[Statement]) -> rusqlite::Result<Vec<u64>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = statements
        .iter()
        .map(|s| execute(conn, s))
        .collect::<rusqlite::Result<Vec<u64>>>()
        .and_then(|changed| conn.execute_batch("COMMIT").map(|()| changed));
    if result.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

fn execute(conn: &Connection, statement: &Statement) -> rusqlite::Result<u64> {
    let mut prepared = conn.prepare_cached(&statement.sql)?;
    bind(&mut prepared, &statement.sql, &statement.args)?;
    Ok(prepared.raw_execute()? as u64)
}

/// The statement's `$N` are its arguments by number, as sqlx binds them.
fn bind(
    prepared: &mut rusqlite::CachedStatement<'_>,
    sql: &str,
    args: &[Arg],
) -> rusqlite::Result<()> {
    for index in 1..=prepared.parameter_count() {
        let arg = prepared
            .parameter_name(index)
            .and_then(|name| name.strip_prefix('$'))
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| {
                rusqlite::Error::InvalidParameterName(format!(
                    "parameter {index} of `{sql}` has no argument"
                ))
            })?;
        match arg {
            Arg::Text(v) => prepared.raw_bind_parameter(index, v)?,
            Arg::OptText(v) => prepared.raw_bind_parameter(index, v)?,
            Arg::Int(v) => prepared.raw_bind_parameter(index, v)?,
            Arg::OptInt(v) => prepared.raw_bind_parameter(index, v)?,
        }
    }
    Ok(())
}
