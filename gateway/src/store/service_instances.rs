//! The instances of services that run on a container or process engine
//! (`service_instances`, migrations 0018, 0019): the backend's handle of each, so a restarted
//! gateway finds them again. `service_id` is a real-time or a batch service's id.

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

/// The services whose recorded instances nobody runs any more: rows of a service that is
/// gone (neither a real-time nor a batch service) or of a batch service whose job does not
/// run (not DEPLOYING or RUNNING). A gateway start stops them.
pub async fn left_over(conn: &mut Conn) -> sqlx::Result<Vec<String>> {
    use crate::lifecycle::Status;
    use crate::lifecycle::batch::BatchStatus;
    sqlx::query_scalar(
        "SELECT DISTINCT service_id FROM service_instances \
         WHERE service_id NOT IN (SELECT id FROM services) \
           AND service_id NOT IN (SELECT id FROM batch_services WHERE status IN ($1, $2)) \
         ORDER BY service_id",
    )
    .bind(BatchStatus::Deploying.as_str())
    .bind(BatchStatus::Running.as_str())
    .fetch_all(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn left_over_instances_are_of_no_service_or_of_a_job_that_does_not_run() {
        let dir = std::env::temp_dir().join(format!("atelier-si-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = crate::store::Store::open(&dir).await.unwrap();
        let mut conn = store.pool.acquire().await.unwrap();
        // The owners and versions the services name are beside the point here.
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await
            .unwrap();
        let now = crate::store::now();
        sqlx::query(
            "INSERT INTO services (id, owner_id, name, status, spec, created_at, updated_at) \
             VALUES ('svc', 'u', 's', 'STOPPED', '{}', $1, $1)",
        )
        .bind(&now)
        .execute(&mut *conn)
        .await
        .unwrap();
        for (id, status) in [
            ("running", "RUNNING"),
            ("deploying", "DEPLOYING"),
            ("done", "COMPLETED"),
            ("stopped", "STOPPED"),
        ] {
            sqlx::query(
                "INSERT INTO batch_services (id, owner_id, name, status, model_version_id, \
                 connection_id, task_id, spec, created_at, updated_at) \
                 VALUES ($1, 'u', $1, $2, 'v', 'c', 't', '{}', $3, $3)",
            )
            .bind(id)
            .bind(status)
            .bind(&now)
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        for (i, service) in [
            "svc",
            "running",
            "deploying",
            "done",
            "stopped",
            "gone",
            "gone",
        ]
        .into_iter()
        .enumerate()
        {
            insert(&mut conn, &format!("i{i}"), service, "v", 0, 0)
                .await
                .unwrap();
        }
        assert_eq!(
            left_over(&mut conn).await.unwrap(),
            ["done", "gone", "stopped"]
        );
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
