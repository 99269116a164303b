//! Real-time services' rows (`services`, `service_models`; migration 0015). `spec` is JSON
//! the `serving` service reads and writes as its own type.

use super::Conn;
use crate::lifecycle::service::ServiceStatus;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServiceRow {
    pub id: String,
    pub owner_id: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub name: String,
    pub description: String,
    pub status: ServiceStatus,
    pub status_reason: Option<String>,
    pub spec: String,
    pub deploy_deadline: Option<String>,
    pub stop_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT s.id, s.owner_id, u.name AS owner_name, s.name, s.description, \
     s.status, s.status_reason, s.spec, s.deploy_deadline, s.stop_at, s.created_at, s.updated_at \
     FROM services s JOIN users u ON u.id = s.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "s",
};

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<ServiceRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE s.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<ServiceRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

/// The owner's service by id or name.
pub async fn by_key(
    conn: &mut Conn,
    owner_id: &str,
    key: &str,
) -> sqlx::Result<Option<ServiceRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<ServiceRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn in_statuses(
    conn: &mut Conn,
    statuses: &[ServiceStatus],
) -> sqlx::Result<Vec<ServiceRow>> {
    let sql = format!(
        "{SELECT} WHERE s.status IN ({})",
        super::placeholders(1, statuses.len())
    );
    let mut q = sqlx::query_as(&sql);
    for s in statuses {
        q = q.bind(*s);
    }
    q.fetch_all(conn).await
}

pub async fn count_for_owner(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM services WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

pub struct NewService<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub spec: &'a str,
    pub deploy_deadline: &'a str,
    pub now: &'a str,
}

/// Inserts a service DEPLOYING (the caller begins its operation in the same transaction).
pub async fn insert(conn: &mut Conn, s: NewService<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO services (id, owner_id, name, description, status, spec, deploy_deadline, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(s.id)
    .bind(s.owner_id)
    .bind(s.name)
    .bind(s.description)
    .bind(ServiceStatus::Deploying)
    .bind(s.spec)
    .bind(s.deploy_deadline)
    .bind(s.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The model versions the service runs (replacing what it ran).
pub async fn set_models(conn: &mut Conn, service_id: &str, versions: &[&str]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM service_models WHERE service_id = $1")
        .bind(service_id)
        .execute(&mut *conn)
        .await?;
    for v in versions {
        sqlx::query(
            "INSERT INTO service_models (service_id, model_version_id) VALUES ($1, $2) \
             ON CONFLICT DO NOTHING",
        )
        .bind(service_id)
        .bind(v)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The names of the services, real-time and batch, that run a model version.
pub async fn using_version(conn: &mut Conn, version_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT s.name FROM services s JOIN service_models m ON m.service_id = s.id \
         WHERE m.model_version_id = $1 \
         UNION ALL SELECT b.name FROM batch_services b WHERE b.model_version_id = $1 \
         ORDER BY 1",
    )
    .bind(version_id)
    .fetch_all(conn)
    .await
}

pub async fn set_spec(
    conn: &mut Conn,
    id: &str,
    spec: &str,
    description: &str,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE services SET spec = $1, description = $2 WHERE id = $3")
        .bind(spec)
        .bind(description)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_deploy_deadline(
    conn: &mut Conn,
    id: &str,
    deadline: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE services SET deploy_deadline = $1 WHERE id = $2")
        .bind(deadline)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn set_stop_at(conn: &mut Conn, id: &str, stop_at: Option<&str>) -> sqlx::Result<()> {
    sqlx::query("UPDATE services SET stop_at = $1 WHERE id = $2")
        .bind(stop_at)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM services WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
