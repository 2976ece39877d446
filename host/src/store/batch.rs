//! Several statements written as one transaction, in as few round trips as the backend allows.
//!
//! Every sqlx query on SQLite is a round trip to the connection's own thread: a wake-up there
//! and one back. A step of the agent loop writes five statements, so as separate queries its
//! transaction cost seven round trips (with `BEGIN` and `COMMIT`), most of a step's time when
//! the model answers quickly. SQLite's driver runs a query string of several statements in one
//! round trip, with `$N` numbering the arguments across the whole string; [`Db::write_all`]
//! sends a transaction that way. PostgreSQL's extended protocol takes one statement per
//! query, so there the statements go one by one inside a transaction.
//!
//! sqlx documents several statements in one SQLite query as behaviour it may drop in a later
//! major version; `write_all_is_atomic` in this module's tests fails if it changes.

use std::borrow::Cow;

use anyhow::Result;
use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;

use super::{Backend, Db};

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

/// Appends `sql` to `out` with each `$N` raised by `offset`. The statements given to
/// [`Db::write_all`] hold no `$` other than parameters (no literals or identifiers with one).
fn renumber(sql: &str, offset: usize, out: &mut String) {
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => out.push_str(&(n + offset).to_string()),
            Err(_) => out.push_str(&rest[..digits]),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
}

/// A connection running a batch. If the batch's future is dropped part-way, the connection
/// may hold an open transaction: it is then closed (which rolls the transaction back), never
/// handed to the next user of the pool.
struct Pinned(Option<PoolConnection<Any>>);

impl Pinned {
    fn conn(&mut self) -> &mut PoolConnection<Any> {
        self.0.as_mut().expect("held until done")
    }

    /// Back to the pool: the connection is outside any transaction.
    fn release(mut self) {
        self.0.take();
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(conn) = self.0.as_mut() {
            conn.close_on_drop();
        }
    }
}

impl Db {
    /// Runs `statements` as one transaction: all of them take effect, or none.
    pub(crate) async fn write_all(&self, statements: &[Statement]) -> Result<()> {
        let _w = self.write_lock().await;
        match self.backend {
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                for statement in statements {
                    let query = statement
                        .args
                        .iter()
                        .fold(sqlx::query(&statement.sql), bind);
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            Backend::Sqlite => {
                // IMMEDIATE takes the write lock up front, so a reader in another process
                // cannot make the transaction fail half-way with SQLITE_BUSY.
                let mut sql = String::from("BEGIN IMMEDIATE;\n");
                let mut offset = 0;
                for statement in statements {
                    renumber(&statement.sql, offset, &mut sql);
                    sql.push_str(";\n");
                    offset += statement.args.len();
                }
                sql.push_str("COMMIT");
                let query = statements
                    .iter()
                    .flat_map(|s| &s.args)
                    .fold(sqlx::query(&sql), bind);
                let writer = self.batch_writer.as_ref().unwrap_or(&self.pool);
                let mut conn = Pinned(Some(writer.acquire().await?));
                match query.execute(&mut **conn.conn()).await {
                    Ok(_) => {
                        conn.release();
                        Ok(())
                    }
                    Err(e) => {
                        // The statements after the failed one did not run; the transaction
                        // may still be open. A connection that cannot roll it back is closed
                        // (by `Pinned`) rather than reused.
                        if sqlx::query("ROLLBACK")
                            .execute(&mut **conn.conn())
                            .await
                            .is_ok()
                        {
                            conn.release();
                        }
                        Err(e.into())
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[test]
    fn renumber_shifts_only_parameters() {
        let mut out = String::new();
        renumber("UPDATE t SET a = $1, b = '$x' WHERE id = $12", 3, &mut out);
        assert_eq!(out, "UPDATE t SET a = $4, b = '$x' WHERE id = $15");
    }

    async fn count(db: &Db) -> i64 {
        sqlx::query("SELECT COUNT(*) AS n FROM t")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// A batch that fails at its last statement leaves nothing of its earlier ones, and the
    /// pool's connections are usable afterwards (no transaction left open on one).
    #[tokio::test]
    async fn write_all_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_in(dir.path()).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        let insert = |id: i64, v: Option<&str>| {
            Statement::new(
                "INSERT INTO t (id, v) VALUES ($1, $2)",
                vec![Arg::Int(id), Arg::OptText(v.map(str::to_owned))],
            )
        };
        db.write_all(&[insert(1, Some("a")), insert(2, Some("b"))])
            .await
            .unwrap();
        assert_eq!(count(&db).await, 2);
        // The arguments of the second statement are its own `$1`, `$2`.
        let v: String = sqlx::query("SELECT v FROM t WHERE id = 2")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("v")
            .unwrap();
        assert_eq!(v, "b");

        let failed = db.write_all(&[insert(3, Some("c")), insert(4, None)]).await;
        assert!(failed.is_err(), "NOT NULL must refuse the second row");
        assert_eq!(
            count(&db).await,
            2,
            "the first row of a failed batch must not stay"
        );

        // The batch connection still writes and commits.
        for id in 10..30 {
            db.write_all(&[insert(id, Some("x"))]).await.unwrap();
        }
        assert_eq!(count(&db).await, 22);
    }

    /// A batch whose future is dropped part-way leaves no transaction open on the batch
    /// connection (the pool's only one, so an open transaction would make the next `BEGIN`
    /// fail): batches cut off at many points are each all or nothing, and writes go on.
    #[tokio::test]
    async fn dropped_batch_leaves_no_open_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_sqlite_in(dir.path()).await.unwrap();
        sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        const ROWS: i64 = 2_000;
        let mut cut = 0;
        // From before the batch reaches SQLite's thread to well after it started.
        for (round, micros) in [20u64, 100, 300, 1_000, 3_000].into_iter().enumerate() {
            let big: Vec<Statement> = (0..ROWS)
                .map(|i| {
                    Statement::new(
                        "INSERT INTO t (id, v) VALUES ($1, $2)",
                        vec![
                            Arg::Int(round as i64 * ROWS + i),
                            Arg::Text("x".repeat(100)),
                        ],
                    )
                })
                .collect();
            let timed = std::time::Duration::from_micros(micros);
            if tokio::time::timeout(timed, db.write_all(&big))
                .await
                .is_err()
            {
                cut += 1;
            }
            // Every write after it commits: the connection holds no transaction.
            let probe = 1_000_000 + round as i64;
            db.write_all(&[Statement::new(
                "INSERT INTO t (id, v) VALUES ($1, $2)",
                vec![Arg::Int(probe), Arg::Text("after".into())],
            )])
            .await
            .unwrap_or_else(|e| panic!("a write after a batch cut at {micros} µs failed: {e:#}"));
        }
        assert!(cut > 0, "no batch was cut off: the test proved nothing");
        let rows: i64 = sqlx::query("SELECT COUNT(*) AS n FROM t WHERE id < 1000000")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(
            rows % ROWS,
            0,
            "a cut batch left {} of its rows",
            rows % ROWS
        );
    }
}
