//! Training algorithms' rows (`algorithms`; migration 0020). `spec` is JSON the `training`
//! service reads and writes as its own type.

use super::Conn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AlgorithmRow {
    pub id: String,
    pub owner_id: String,
    pub owner_name: String,
    pub name: String,
    pub description: String,
    pub kind: String,
    pub plugin_name: Option<String>,
    pub plugin_version: Option<String>,
    pub spec: String,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT: &str = "SELECT a.id, a.owner_id, u.name AS owner_name, a.name, a.description, \
     a.kind, a.plugin_name, a.plugin_version, a.spec, a.created_at, a.updated_at \
     FROM algorithms a JOIN users u ON u.id = a.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "a",
};

/// The owner's algorithm whose id or name is `key`.
pub async fn by_key(
    conn: &mut Conn,
    owner_id: &str,
    key: &str,
) -> sqlx::Result<Option<AlgorithmRow>> {
    OWNED.by_key(conn, owner_id, key).await
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<AlgorithmRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<AlgorithmRow>> {
    sqlx::query_as(&format!("{SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's algorithms by name, or everyone's.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<AlgorithmRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn count(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM algorithms WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

/// Inserts `row` (its `owner_name` is not stored).
pub async fn insert(conn: &mut Conn, row: &AlgorithmRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO algorithms (id, owner_id, name, description, kind, plugin_name, \
         plugin_version, spec, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&row.id)
    .bind(&row.owner_id)
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.kind)
    .bind(&row.plugin_name)
    .bind(&row.plugin_version)
    .bind(&row.spec)
    .bind(&row.created_at)
    .bind(&row.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM algorithms WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// The algorithms (owner and name) that run the plugin `name` `version`: they keep it
/// from being deleted.
pub async fn using_plugin(
    conn: &mut Conn,
    name: &str,
    version: &str,
) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as(
        "SELECT u.name, a.name FROM algorithms a JOIN users u ON u.id = a.owner_id \
         WHERE a.plugin_name = $1 AND a.plugin_version = $2 ORDER BY u.name, a.name LIMIT 10",
    )
    .bind(name)
    .bind(version)
    .fetch_all(conn)
    .await
}
