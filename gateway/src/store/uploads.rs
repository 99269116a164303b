//! Large uploads staged through object storage (`notebook_uploads`).

use serde::Serialize;

use super::Conn;
pub use crate::lifecycle::upload::IN_FLIGHT;
pub use crate::lifecycle::upload::UploadStatus;
pub use crate::lifecycle::upload::status::*;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UploadRow {
    pub id: String,
    #[serde(skip)]
    pub notebook_id: String,
    pub path: String,
    pub size: i64,
    pub sha256: Option<String>,
    pub overwrite: bool,
    #[serde(skip)]
    pub connection_id: String,
    #[serde(skip)]
    pub bucket: String,
    #[serde(skip)]
    pub key: String,
    #[serde(skip)]
    pub upload_id: Option<String>,
    pub part_size: i64,
    pub status: UploadStatus,
    pub error: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT id, notebook_id, path, size, sha256, overwrite, connection_id, \
     bucket, key, upload_id, part_size, status, error, created_by, created_at, updated_at \
     FROM notebook_uploads";

pub async fn insert(conn: &mut Conn, u: &UploadRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO notebook_uploads (id, notebook_id, path, size, sha256, overwrite, \
         connection_id, bucket, key, upload_id, part_size, status, error, created_by, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
    )
    .bind(&u.id)
    .bind(&u.notebook_id)
    .bind(&u.path)
    .bind(u.size)
    .bind(&u.sha256)
    .bind(u.overwrite as i64)
    .bind(&u.connection_id)
    .bind(&u.bucket)
    .bind(&u.key)
    .bind(&u.upload_id)
    .bind(u.part_size)
    .bind(u.status)
    .bind(&u.error)
    .bind(&u.created_by)
    .bind(&u.created_at)
    .bind(&u.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, notebook_id: &str, id: &str) -> sqlx::Result<Option<UploadRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE notebook_id = $1 AND id = $2"))
        .bind(notebook_id)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// A notebook's uploads, oldest first.
pub async fn of_notebook(conn: &mut Conn, notebook_id: &str) -> sqlx::Result<Vec<UploadRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE notebook_id = $1 ORDER BY created_at, id"
    ))
    .bind(notebook_id)
    .fetch_all(conn)
    .await
}

/// An upload by its id alone (the gateway's own work: resuming a landing).
pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<UploadRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The multipart upload's id in the store, once it has started.
pub async fn set_upload_id(conn: &mut Conn, id: &str, upload_id: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE notebook_uploads SET upload_id = $2 WHERE id = $1")
        .bind(id)
        .bind(upload_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether an upload in flight (queued, uploading, landing) uses a connection.
pub async fn connection_in_flight(conn: &mut Conn, connection_id: &str) -> sqlx::Result<bool> {
    let sql = format!(
        "SELECT COUNT(*) FROM notebook_uploads WHERE connection_id = $1 AND status IN ({})",
        super::placeholders(2, IN_FLIGHT.len())
    );
    let mut q = sqlx::query_scalar(&sql).bind(connection_id);
    for s in IN_FLIGHT {
        q = q.bind(*s);
    }
    let n: i64 = q.fetch_one(conn).await?;
    Ok(n > 0)
}
