//! Object storage connections (`storage_connections`).

use serde::Serialize;

use super::Conn;

/// A connection as the API shows it: everything but the secret.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConnectionRow {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub endpoint: String,
    pub region: String,
    pub bucket: Option<String>,
    pub access_key_id: String,
    pub path_style: bool,
    pub created_at: String,
    pub checked_at: String,
    #[serde(skip)]
    pub secret_sealed: String,
}

const SELECT: &str = "SELECT c.id, c.name, u.name AS owner_name, c.endpoint, c.region, c.bucket, \
     c.access_key_id, c.path_style, c.created_at, c.checked_at, c.secret_sealed \
     FROM storage_connections c JOIN users u ON u.id = c.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "c",
};

pub struct NewConnection<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub endpoint: &'a str,
    pub region: &'a str,
    pub bucket: Option<&'a str>,
    pub access_key_id: &'a str,
    pub secret_sealed: &'a str,
    pub path_style: bool,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, c: NewConnection<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO storage_connections (id, owner_id, name, endpoint, region, bucket, \
         access_key_id, secret_sealed, path_style, created_at, checked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
    )
    .bind(c.id)
    .bind(c.owner_id)
    .bind(c.name)
    .bind(c.endpoint)
    .bind(c.region)
    .bind(c.bucket)
    .bind(c.access_key_id)
    .bind(c.secret_sealed)
    .bind(c.path_style as i64)
    .bind(c.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<ConnectionRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<ConnectionRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's connections, or everyone's (`owner_id = None`), by name.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<ConnectionRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn set_checked(conn: &mut Conn, id: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE storage_connections SET checked_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM storage_connections WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
