//! State in SQLite (WAL) through sqlx. The SQL is plain enough for PostgreSQL too: `$n`
//! placeholders in order of first use, TEXT ids and fixed-width RFC 3339 UTC timestamps.
//!
//! Invariant: a state change, its event and its audit row are written in one transaction;
//! functions that take `&mut SqliteConnection` are meant to run inside one.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqliteConnection, SqlitePool};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub mod algorithms;
pub mod apps;
pub mod audit;
pub mod batch_services;
pub mod events;
pub mod images;
pub mod keypairs;
pub mod models;
pub mod mounts;
pub mod notebooks;
pub mod operations;
pub mod plugins;
pub mod resource_events;
pub mod service_instances;
pub mod services;
pub mod storage_connections;
pub mod training_jobs;
pub mod training_searches;
pub mod transition;
pub mod uploads;
pub mod users;
pub mod workflow_triggers;
pub mod workflows;

pub type Conn = SqliteConnection;

/// Rows a user owns and names (key pairs, storage connections): found by owner and name,
/// listed by owner. `select` reads the table as `alias` joined with its owner as `u`.
pub struct Owned {
    pub select: &'static str,
    pub alias: &'static str,
}

impl Owned {
    /// The owner's row named `name`.
    pub async fn by_name<T>(
        &self,
        conn: &mut Conn,
        owner_id: &str,
        name: &str,
    ) -> sqlx::Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let a = self.alias;
        sqlx::query_as(&format!(
            "{} WHERE {a}.owner_id = $1 AND {a}.name = $2",
            self.select
        ))
        .bind(owner_id)
        .bind(name)
        .fetch_optional(conn)
        .await
    }

    /// The owner's row whose id or name is `key` (the id first).
    pub async fn by_key<T>(
        &self,
        conn: &mut Conn,
        owner_id: &str,
        key: &str,
    ) -> sqlx::Result<Option<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let a = self.alias;
        sqlx::query_as(&format!(
            "{} WHERE {a}.owner_id = $1 AND ({a}.id = $2 OR {a}.name = $2) \
             ORDER BY {a}.id = $2 DESC LIMIT 1",
            self.select
        ))
        .bind(owner_id)
        .bind(key)
        .fetch_optional(conn)
        .await
    }

    /// One owner's rows by name, or everyone's (`owner_id = None`) by owner and name.
    pub async fn list<T>(&self, conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let a = self.alias;
        match owner_id {
            Some(o) => {
                sqlx::query_as(&format!(
                    "{} WHERE {a}.owner_id = $1 ORDER BY {a}.name",
                    self.select
                ))
                .bind(o)
                .fetch_all(conn)
                .await
            }
            None => {
                sqlx::query_as(&format!("{} ORDER BY u.name, {a}.name", self.select))
                    .fetch_all(conn)
                    .await
            }
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pub pool: SqlitePool,
}

impl Store {
    pub async fn open(data_dir: &Path) -> anyhow::Result<Store> {
        let path = data_dir.join("atelier.db");
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10));
        // No ping before each acquire: a connection to a local file does not go stale, and
        // the ping is a round trip to the connection's worker thread on every acquire and
        // transaction (a workflow's hand-off takes three).
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .with_context(|| format!("opening database {}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .context("applying database migrations")?;
        Ok(Store { pool })
    }
}

impl Store {
    /// A transaction that writes. SQLite's default (deferred) transaction fails at once with
    /// "database is locked" when it reads, another connection commits, and it then writes;
    /// `BEGIN IMMEDIATE` takes the write lock up front and waits (busy timeout) instead.
    pub async fn write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

/// `$first, $first+1, …`: `n` numbered parameters, for an `IN (…)` list whose values are bound.
pub fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Now, as stored: fixed width so text order is time order.
pub fn now() -> String {
    format_time(OffsetDateTime::now_utc())
}

pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Time-ordered ids for append-only rows.
pub fn ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A store in a fresh scratch dir (tests), and the dir to remove.
#[cfg(test)]
pub(crate) async fn scratch() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("atelier-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let store = Store::open(&dir)
        .await
        .unwrap_or_else(|e| panic!("opening a store in {}: {e}", dir.display()));
    (store, dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_sort_as_text() {
        let a = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let b = a + time::Duration::microseconds(1);
        let c = a + time::Duration::days(400);
        let (fa, fb, fc) = (format_time(a), format_time(b), format_time(c));
        assert!(fa < fb && fb < fc);
        assert_eq!(fa.len(), fc.len());
        assert_eq!(parse_time(&fb), Some(b));
    }
}
