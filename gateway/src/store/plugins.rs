//! Registered plugins (see `crate::plugins`).

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub owner_id: String,
    pub owner_name: String,
    pub digest: String,
    pub world: String,
    pub description: String,
    pub limits: String,
    pub manifest: String,
    pub exports: String,
    pub imports: String,
    pub files: String,
    pub size_bytes: i64,
    pub compile_ms: f64,
    pub created_at: String,
}

const SELECT: &str = "SELECT p.name, p.version, p.owner_id, u.name AS owner_name, p.digest, p.world, \
     p.description, p.limits, p.manifest, p.exports, p.imports, p.files, p.size_bytes, p.compile_ms, p.created_at \
     FROM plugins p JOIN users u ON u.id = p.owner_id";

pub async fn insert(conn: &mut Conn, p: &PluginRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO plugins (name, version, owner_id, digest, world, description, limits, manifest, exports, \
         imports, files, size_bytes, compile_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&p.name)
    .bind(&p.version)
    .bind(&p.owner_id)
    .bind(&p.digest)
    .bind(&p.world)
    .bind(&p.description)
    .bind(&p.limits)
    .bind(&p.manifest)
    .bind(&p.exports)
    .bind(&p.imports)
    .bind(&p.files)
    .bind(p.size_bytes)
    .bind(p.compile_ms)
    .bind(&p.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(conn: &mut Conn, name: &str, version: &str) -> sqlx::Result<Option<PluginRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE p.name = $1 AND p.version = $2"))
        .bind(name)
        .bind(version)
        .fetch_optional(conn)
        .await
}

pub async fn list(
    conn: &mut Conn,
    name: Option<&str>,
    world: Option<&str>,
) -> sqlx::Result<Vec<PluginRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE ($1 IS NULL OR p.name = $1) AND ($2 IS NULL OR p.world = $2) ORDER BY p.name, p.created_at"
    ))
    .bind(name)
    .bind(world)
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut Conn, name: &str, version: &str) -> sqlx::Result<bool> {
    let r = sqlx::query("DELETE FROM plugins WHERE name = $1 AND version = $2")
        .bind(name)
        .bind(version)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// Registrations using the component `digest`.
pub async fn digest_users(conn: &mut Conn, digest: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM plugins WHERE digest = $1")
        .bind(digest)
        .fetch_one(conn)
        .await
}
