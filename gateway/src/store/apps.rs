//! Applications' rows (`apps`, `app_codes`, `app_services`; migration 0016). Credentials are
//! stored sealed (`crate::secrets`) beside the hex SHA-256 digest a call looks them up by.

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppRow {
    pub id: String,
    pub owner_id: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub name: String,
    pub description: String,
    pub key_sealed: String,
    pub secret_sealed: String,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT a.id, a.owner_id, u.name AS owner_name, a.name, a.description, \
     a.key_sealed, a.secret_sealed, a.created_at, a.updated_at \
     FROM apps a JOIN users u ON u.id = a.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "a",
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CodeRow {
    pub id: String,
    pub app_id: String,
    pub sealed: String,
    pub created_at: String,
}

/// A service an app is bound to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BoundRow {
    pub id: String,
    pub name: String,
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<AppRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn by_name(conn: &mut Conn, owner_id: &str, name: &str) -> sqlx::Result<Option<AppRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

/// The owner's app by id or name.
pub async fn by_key(conn: &mut Conn, owner_id: &str, key: &str) -> sqlx::Result<Option<AppRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn list(conn: &mut Conn, owner_id: &str) -> sqlx::Result<Vec<AppRow>> {
    OWNED.list(conn, Some(owner_id)).await
}

pub async fn count_for_owner(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM apps WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

/// The app whose AppKey has this digest.
pub async fn by_key_digest(conn: &mut Conn, digest: &str) -> sqlx::Result<Option<AppRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE a.key_digest = $1"))
        .bind(digest)
        .fetch_optional(conn)
        .await
}

/// The code with this digest.
pub async fn code_by_digest(conn: &mut Conn, digest: &str) -> sqlx::Result<Option<CodeRow>> {
    sqlx::query_as("SELECT id, app_id, sealed, created_at FROM app_codes WHERE digest = $1")
        .bind(digest)
        .fetch_optional(conn)
        .await
}

pub struct NewApp<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub description: &'a str,
    pub key_digest: &'a str,
    pub key_sealed: &'a str,
    pub secret_sealed: &'a str,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, a: NewApp<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO apps (id, owner_id, name, description, key_digest, key_sealed, \
         secret_sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(a.id)
    .bind(a.owner_id)
    .bind(a.name)
    .bind(a.description)
    .bind(a.key_digest)
    .bind(a.key_sealed)
    .bind(a.secret_sealed)
    .bind(a.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_secret(conn: &mut Conn, id: &str, sealed: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE apps SET secret_sealed = $1, updated_at = $2 WHERE id = $3")
        .bind(sealed)
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM apps WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn codes(conn: &mut Conn, app_id: &str) -> sqlx::Result<Vec<CodeRow>> {
    sqlx::query_as(
        "SELECT id, app_id, sealed, created_at FROM app_codes WHERE app_id = $1 \
         ORDER BY created_at, id",
    )
    .bind(app_id)
    .fetch_all(conn)
    .await
}

pub async fn insert_code(
    conn: &mut Conn,
    id: &str,
    app_id: &str,
    digest: &str,
    sealed: &str,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO app_codes (id, app_id, digest, sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(app_id)
    .bind(digest)
    .bind(sealed)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a code of the app was deleted.
pub async fn delete_code(conn: &mut Conn, app_id: &str, id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM app_codes WHERE app_id = $1 AND id = $2")
        .bind(app_id)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The services an app is bound to, by name.
pub async fn bound(conn: &mut Conn, app_id: &str) -> sqlx::Result<Vec<BoundRow>> {
    sqlx::query_as(
        "SELECT s.id, s.name FROM app_services b JOIN services s ON s.id = b.service_id \
         WHERE b.app_id = $1 ORDER BY s.name",
    )
    .bind(app_id)
    .fetch_all(conn)
    .await
}

pub async fn bind(conn: &mut Conn, app_id: &str, service_id: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO app_services (app_id, service_id, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(app_id)
    .bind(service_id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the app was bound to the service.
pub async fn unbind(conn: &mut Conn, app_id: &str, service_id: &str) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM app_services WHERE app_id = $1 AND service_id = $2")
        .bind(app_id)
        .bind(service_id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}
