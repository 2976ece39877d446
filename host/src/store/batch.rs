//! Several statements written as one transaction: a step of the agent loop.
//!
//! On a SQLite file the transaction runs in place on the calling thread
//! (`sqlite_writer.rs`, which says why); on PostgreSQL, and on an in-memory SQLite database,
//! the statements go one by one inside a sqlx transaction.

use std::borrow::Cow;

use anyhow::Result;
use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;

use super::Db;

/// A bound value.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
}

/// One statement, its arguments numbered `$1…` in its own text.
#[derive(Debug, Clone)]
pub(crate) struct Statement {
    pub sql: Cow<'static, str>,
    pub args: Vec<Arg>,
}

impl Statement {
    pub fn new(sql: impl Into<Cow<'static, str>>, args: Vec<Arg>) -> Self {
        Statement {
            sql: sql.into(),
            args,
        }
    }
}

/// `($1, $2, …), (…), …`: the numbered placeholders of a multi-row `VALUES` for `rows` rows
/// of `columns` arguments each.
pub(crate) fn value_rows(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

fn bind<'q>(
    query: Query<'q, Any, AnyArguments<'q>>,
    arg: &Arg,
) -> Query<'q, Any, AnyArguments<'q>> {
    match arg {
        Arg::Text(v) => query.bind(v.clone()),
        Arg::OptText(v) => query.bind(v.clone()),
        Arg::Int(v) => query.bind(*v),
        Arg::OptInt(v) => query.bind(*v),
    }
}

impl Db {
    /// Runs `statements` as one transaction: all of them take effect, or none. Returns the
    /// rows each statement changed.
    pub(crate) async fn write_all(&self, statements: &[Statement]) -> Result<Vec<u64>> {
        self.write_all_placed(statements, true).await
    }

    /// [`Db::write_all`] for a transaction whose reads grow with the data (they would hold
    /// up the async runtime's thread if run in place on SQLite).
    pub(crate) async fn write_all_off_runtime(&self, statements: &[Statement]) -> Result<Vec<u64>> {
        self.write_all_placed(statements, false).await
    }

    async fn write_all_placed(&self, statements: &[Statement], in_place: bool) -> Result<Vec<u64>> {
        if let Some(writer) = &self.sqlite_writer {
            return writer.write_all(statements, &self.pool, in_place).await;
        }
        let _w = self.write_lock().await;
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::with_capacity(statements.len());
        for statement in statements {
            let query = statement
                .args
                .iter()
                .fold(sqlx::query(&statement.sql), bind);
            changed.push(query.execute(&mut *tx).await?.rows_affected());
        }
        tx.commit().await?;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    async fn count(db: &Db) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM t")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    fn insert(id: i64, v: Option<&str>) -> Statement {
        Statement::new(
            "INSERT INTO t (id, v) VALUES ($1, $2)",
            vec![Arg::Int(id), Arg::OptText(v.map(str::to_owned))],
        )
    }

    async fn db_with_table(dir: &std::path::Path) -> Db {
        let db = Db::open_sqlite_in(dir).await.unwrap();
        assert!(db.sqlite_writer.is_some(), "a SQLite file gets its writer");
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        db
    }

    /// A batch that fails at its last statement leaves nothing of its earlier ones, and the
    /// writer goes on writing afterwards (no transaction left open on it).
    #[tokio::test]
    async fn write_all_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_table(dir.path()).await;
        db.write_all(&[insert(1, Some("a")), insert(2, Some("b"))])
            .await
            .unwrap();
        assert_eq!(count(&db).await, 2);
        // The arguments are bound by their number, whatever order they appear in.
        db.write_all(&[Statement::new(
            "INSERT INTO t (v, id) VALUES ($2, $1)",
            vec![Arg::Int(3), Arg::Text("c".into())],
        )])
        .await
        .unwrap();
        let v: String = sqlx::query("SELECT v FROM t WHERE id = 3")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("v")
            .unwrap();
        assert_eq!(v, "c");

        let failed = db.write_all(&[insert(4, Some("d")), insert(5, None)]).await;
        assert!(failed.is_err(), "NOT NULL must refuse the second row");
        assert_eq!(
            count(&db).await,
            3,
            "the first row of a failed batch must not stay"
        );
        let unbound = db
            .write_all(&[Statement::new(
                "INSERT INTO t (id, v) VALUES ($1, $2)",
                vec![Arg::Int(6)],
            )])
            .await;
        assert!(
            unbound.is_err(),
            "a parameter without an argument is refused"
        );

        for id in 10..30 {
            db.write_all(&[insert(id, Some("x"))]).await.unwrap();
        }
        assert_eq!(count(&db).await, 23);
    }

    /// While another connection holds SQLite's write lock, a write neither fails nor blocks
    /// the runtime's thread (this test's runtime has only one): it waits on the blocking
    /// pool and goes through once the lock is free, whole, even when its caller stopped
    /// waiting.
    #[tokio::test]
    async fn a_write_waits_for_another_writer_off_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_table(dir.path()).await;
        let mut other = db.pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t (id, v) VALUES (100, 'other')")
            .execute(&mut *other)
            .await
            .unwrap();
        let write = tokio::spawn({
            let db = db.clone();
            async move {
                db.write_all(&[insert(1, Some("a")), insert(2, Some("b"))])
                    .await
            }
        });
        // Only runs if the write did not take the runtime's one thread.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!write.is_finished(), "the write must wait for the lock");
        // Reads do not wait for it: the waiting write holds the writer's connection, so they
        // go through the pool.
        let writer = db.sqlite_writer.as_ref().unwrap();
        let in_place = writer.try_read("SELECT COUNT(*) AS n FROM t", &[], |row| {
            super::super::Columns::int(row, "n")
        });
        assert!(in_place.is_none(), "the writer's connection is taken");
        assert_eq!(count(&db).await, 0);
        sqlx::query("COMMIT").execute(&mut *other).await.unwrap();
        write.await.unwrap().unwrap();
        assert_eq!(count(&db).await, 3);

        // Cut off while waiting: the transaction still runs once the lock is free, and the
        // next write comes after it.
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *other)
            .await
            .unwrap();
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            db.write_all(&[insert(3, Some("c")), insert(4, Some("d"))]),
        )
        .await;
        assert!(cut.is_err(), "the write must still be waiting");
        sqlx::query("COMMIT").execute(&mut *other).await.unwrap();
        db.write_all(&[insert(5, Some("e"))]).await.unwrap();
        assert_eq!(count(&db).await, 6);
        assert_eq!(writer.moved_to_blocking_pool(), 2);
        let in_place = writer.try_read("SELECT COUNT(*) AS n FROM t", &[], |row| {
            super::super::Columns::int(row, "n")
        });
        assert_eq!(
            in_place.unwrap().unwrap(),
            Some(6),
            "free again: read in place"
        );
    }

    /// The writer never checkpoints in place; the checkpoints it starts elsewhere keep the
    /// WAL from growing with every commit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_keep_the_wal_small() {
        let dir = tempfile::tempdir().unwrap();
        let db = db_with_table(dir.path()).await;
        const COMMITS: i64 = 20_000;
        for id in 0..COMMITS {
            db.write_all(&[insert(id, Some(&"x".repeat(1_000)))])
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        assert_eq!(count(&db).await, COMMITS);
        let wal = std::fs::metadata(dir.path().join("kelp.db-wal"))
            .unwrap()
            .len();
        // Every commit appends at least one 4 KiB page: unchecked, the WAL would hold them all.
        let unchecked = COMMITS as u64 * 4096;
        assert!(
            wal < unchecked / 4,
            "the WAL is {wal} bytes after {COMMITS} commits (unchecked it would reach {unchecked})"
        );
    }
}
