//! Object-storage mounts of notebooks (`notebook_mounts`).

use serde::Serialize;

use super::Conn;
pub use crate::lifecycle::mount::MountStatus;
pub use crate::lifecycle::mount::status::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MountRow {
    #[serde(skip)]
    pub id: String,
    #[serde(skip)]
    pub notebook_id: String,
    pub kind: String,
    pub name: String,
    pub uri: String,
    #[serde(skip)]
    pub connection_id: String,
    #[sqlx(rename = "connection_name")]
    pub connection: String,
    pub read_only: bool,
    pub status: MountStatus,
    pub error: Option<String>,
    #[serde(skip)]
    pub pid: Option<i64>,
    #[serde(skip)]
    pub start_ticks: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT m.id, m.notebook_id, m.kind, m.name, m.uri, m.connection_id, \
     c.name AS connection_name, m.read_only, m.status, m.error, m.pid, m.start_ticks, \
     m.created_at, m.updated_at \
     FROM notebook_mounts m JOIN storage_connections c ON c.id = m.connection_id";

pub struct NewMount<'a> {
    pub id: &'a str,
    pub notebook_id: &'a str,
    pub kind: &'a str,
    pub name: &'a str,
    pub uri: &'a str,
    pub connection_id: &'a str,
    pub read_only: bool,
    pub status: MountStatus,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, m: NewMount<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO notebook_mounts (id, notebook_id, kind, name, uri, connection_id, \
         read_only, status, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
    )
    .bind(m.id)
    .bind(m.notebook_id)
    .bind(m.kind)
    .bind(m.name)
    .bind(m.uri)
    .bind(m.connection_id)
    .bind(m.read_only as i64)
    .bind(m.status)
    .bind(m.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// A notebook's mounts by name.
pub async fn of_notebook(conn: &mut Conn, notebook_id: &str) -> sqlx::Result<Vec<MountRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE m.notebook_id = $1 ORDER BY m.name"
    ))
    .bind(notebook_id)
    .fetch_all(conn)
    .await
}

/// Every mount in `status`, of all notebooks.
pub async fn in_status(conn: &mut Conn, status: MountStatus) -> sqlx::Result<Vec<MountRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE m.status = $1"))
        .bind(status)
        .fetch_all(conn)
        .await
}

pub async fn by_name(
    conn: &mut Conn,
    notebook_id: &str,
    name: &str,
) -> sqlx::Result<Option<MountRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE m.notebook_id = $1 AND m.name = $2"
    ))
    .bind(notebook_id)
    .bind(name)
    .fetch_optional(conn)
    .await
}

/// Names of the notebooks whose mounts use a connection.
pub async fn notebooks_using(conn: &mut Conn, connection_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT n.name FROM notebook_mounts m JOIN notebooks n ON n.id = m.notebook_id \
         WHERE m.connection_id = $1 ORDER BY n.name",
    )
    .bind(connection_id)
    .fetch_all(conn)
    .await
}

/// The serving rclone's pid and start ticks (none: nothing serves it).
pub async fn set_process(
    conn: &mut Conn,
    id: &str,
    process: Option<(i32, u64)>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebook_mounts SET pid = $2, start_ticks = $3 WHERE id = $1")
        .bind(id)
        .bind(process.map(|p| i64::from(p.0)))
        .bind(process.map(|p| p.1 as i64))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM notebook_mounts WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
