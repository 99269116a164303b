//! The instances of services that run on a container or process engine
//! (`service_instances`, migration 0018): the backend's handle of each, so a restarted
//! gateway finds them again.

use super::Conn;
use crate::lifecycle::handle::Handle;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: String,
    pub service_id: String,
    pub version_id: String,
    pub slot: i64,
    /// `None`: recorded, not (yet) launched.
    pub handle: Option<Handle>,
    pub restarts: i64,
    pub created_at: String,
}

const SELECT: &str = "SELECT id, service_id, version_id, slot, handle, restarts, created_at \
     FROM service_instances";

pub async fn insert(
    conn: &mut Conn,
    id: &str,
    service_id: &str,
    version_id: &str,
    slot: usize,
    restarts: u32,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO service_instances (id, service_id, version_id, slot, restarts, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(service_id)
    .bind(version_id)
    .bind(slot as i64)
    .bind(i64::from(restarts))
    .bind(super::now())
    .execute(conn)
    .await
    .map(|_| ())
}

pub async fn set_handle(conn: &mut Conn, id: &str, handle: &Handle) -> sqlx::Result<()> {
    sqlx::query("UPDATE service_instances SET handle = $1 WHERE id = $2")
        .bind(handle)
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}

pub async fn for_service(conn: &mut Conn, service_id: &str) -> sqlx::Result<Vec<InstanceRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE service_id = $1 ORDER BY version_id, slot, created_at"
    ))
    .bind(service_id)
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM service_instances WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await
        .map(|_| ())
}
