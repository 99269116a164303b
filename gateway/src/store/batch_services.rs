//! Batch services' rows (`batch_services`, `batch_items`; migration 0017). `spec` is JSON
//! the `batch` service reads and writes as its own type; each input file is an item row
//! whose `state` records its progress.

use super::Conn;
use crate::lifecycle::batch::BatchStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: String,
    pub owner_id: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub name: String,
    pub description: String,
    pub status: BatchStatus,
    pub status_reason: Option<String>,
    pub model_version_id: String,
    pub connection_id: String,
    pub task_id: String,
    pub spec: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT b.id, b.owner_id, u.name AS owner_name, b.name, b.description, \
     b.status, b.status_reason, b.model_version_id, b.connection_id, b.task_id, b.spec, \
     b.started_at, b.ended_at, b.created_at, b.updated_at \
     FROM batch_services b JOIN users u ON u.id = b.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "b",
};

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<BatchRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE b.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<BatchRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<BatchRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn count_for_owner(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM batch_services WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

pub struct NewBatch<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub model_version_id: &'a str,
    pub connection_id: &'a str,
    pub task_id: &'a str,
    pub spec: &'a str,
    pub now: &'a str,
}

/// Inserts a batch service DEPLOYING (the caller begins its operation and writes its items
/// in the same transaction).
pub async fn insert(conn: &mut Conn, b: NewBatch<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO batch_services (id, owner_id, name, description, status, model_version_id, \
         connection_id, task_id, spec, started_at, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)",
    )
    .bind(b.id)
    .bind(b.owner_id)
    .bind(b.name)
    .bind(b.description)
    .bind(BatchStatus::Deploying)
    .bind(b.model_version_id)
    .bind(b.connection_id)
    .bind(b.task_id)
    .bind(b.spec)
    .bind(b.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_spec(
    conn: &mut Conn,
    id: &str,
    spec: &str,
    description: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE batch_services SET spec = $1, description = $2 WHERE id = $3")
        .bind(spec)
        .bind(description)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A run begins: its start time, no end.
pub async fn set_started(conn: &mut Conn, id: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE batch_services SET started_at = $1, ended_at = NULL WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_ended(conn: &mut Conn, id: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE batch_services SET ended_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// A new run of a COMPLETED service: a new task id (a new results folder), every item
/// pending again.
pub async fn rerun(conn: &mut Conn, id: &str, task_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE batch_services SET task_id = $1 WHERE id = $2")
        .bind(task_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE batch_items SET state = $1, error = NULL WHERE batch_id = $2")
        .bind(ItemState::Pending.as_str())
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM batch_items WHERE batch_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM batch_services WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Where an item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    Pending,
    Succeeded,
    Failed,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<ItemState> {
        [ItemState::Pending, ItemState::Succeeded, ItemState::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub seq: i64,
    pub source: String,
    pub bucket: String,
    pub object_key: String,
    pub size: Option<u64>,
    pub result_name: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ItemRow {
    pub seq: i64,
    pub source: String,
    pub bucket: String,
    pub object_key: String,
    pub size: Option<i64>,
    pub result_name: String,
    state: String,
    pub error: Option<String>,
}

impl ItemRow {
    /// Its state (an unknown text reads as pending: done again rather than lost).
    pub fn state(&self) -> ItemState {
        ItemState::parse(&self.state).unwrap_or(ItemState::Pending)
    }
}

pub async fn insert_items(conn: &mut Conn, batch_id: &str, items: &[NewItem]) -> sqlx::Result<()> {
    for i in items {
        sqlx::query(
            "INSERT INTO batch_items (batch_id, seq, source, object_key, bucket, size, \
             result_name, state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(batch_id)
        .bind(i.seq)
        .bind(&i.source)
        .bind(&i.object_key)
        .bind(&i.bucket)
        .bind(i.size.map(|s| s as i64))
        .bind(&i.result_name)
        .bind(ItemState::Pending.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

const ITEM_COLUMNS: &str = "seq, source, bucket, object_key, size, result_name, state, error";

/// The service's items in `state` (all without), in input order.
pub async fn items(
    conn: &mut Conn,
    batch_id: &str,
    state: Option<ItemState>,
) -> sqlx::Result<Vec<ItemRow>> {
    sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM batch_items WHERE batch_id = $1 \
         AND ($2 IS NULL OR state = $2) ORDER BY seq"
    ))
    .bind(batch_id)
    .bind(state.map(ItemState::as_str))
    .fetch_all(conn)
    .await
}

/// Items per state: (pending, succeeded, failed).
pub async fn progress(conn: &mut Conn, batch_id: &str) -> sqlx::Result<(i64, i64, i64)> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state, COUNT(*) FROM batch_items WHERE batch_id = $1 GROUP BY state",
    )
    .bind(batch_id)
    .fetch_all(conn)
    .await?;
    let mut out = (0, 0, 0);
    for (state, n) in rows {
        match ItemState::parse(&state) {
            Some(ItemState::Succeeded) => out.1 += n,
            Some(ItemState::Failed) => out.2 += n,
            _ => out.0 += n,
        }
    }
    Ok(out)
}

/// A pending item is done: true when this call finished it (it was still pending).
pub async fn finish_item(
    conn: &mut Conn,
    batch_id: &str,
    seq: i64,
    state: ItemState,
    error: Option<&str>,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE batch_items SET state = $1, error = $2 \
         WHERE batch_id = $3 AND seq = $4 AND state = $5",
    )
    .bind(state.as_str())
    .bind(error)
    .bind(batch_id)
    .bind(seq)
    .bind(ItemState::Pending.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
