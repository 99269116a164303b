//! Users, API tokens and browser sessions.

use serde::Serialize;

use super::Conn;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UserRow {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    #[sqlx(rename = "user_name")]
    pub user: String,
    pub label: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

/// What a presented secret resolves to.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Credential {
    pub token_id: String,
    pub user_id: String,
    pub name: String,
    pub role: String,
    pub expires_at: Option<String>,
}

pub async fn insert_user(
    conn: &mut Conn,
    id: &str,
    name: &str,
    role: &str,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO users (id, name, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(name)
        .bind(role)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn user_by_name(conn: &mut Conn, name: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("SELECT id, name, role, created_at FROM users WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await
}

pub async fn user_by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<UserRow>> {
    sqlx::query_as("SELECT id, name, role, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn list_users(conn: &mut Conn) -> sqlx::Result<Vec<UserRow>> {
    sqlx::query_as("SELECT id, name, role, created_at FROM users ORDER BY name")
        .fetch_all(conn)
        .await
}

pub async fn count_admins(conn: &mut Conn) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin'")
        .fetch_one(conn)
        .await
}

/// What a user still owns, by kind, with how many (kinds with none left out).
pub async fn owned(conn: &mut Conn, user_id: &str) -> sqlx::Result<Vec<(&'static str, i64)>> {
    let mut out = Vec::new();
    for (kind, sql) in [
        (
            "notebooks",
            "SELECT COUNT(*) FROM notebooks WHERE owner_id = $1",
        ),
        (
            "key pairs",
            "SELECT COUNT(*) FROM key_pairs WHERE owner_id = $1",
        ),
        ("images", "SELECT COUNT(*) FROM images WHERE owner_id = $1"),
        (
            "plugins",
            "SELECT COUNT(*) FROM plugins WHERE owner_id = $1",
        ),
        (
            "storage connections",
            "SELECT COUNT(*) FROM storage_connections WHERE owner_id = $1",
        ),
        (
            "applications",
            "SELECT COUNT(*) FROM apps WHERE owner_id = $1",
        ),
    ] {
        let n: i64 = sqlx::query_scalar(sql)
            .bind(user_id)
            .fetch_one(&mut *conn)
            .await?;
        if n > 0 {
            out.push((kind, n));
        }
    }
    Ok(out)
}

/// Every token of a user (API tokens and browser sessions): id and secret hash.
pub async fn all_tokens(conn: &mut Conn, user_id: &str) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT id, secret_hash FROM tokens WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(conn)
        .await
}

/// Deletes a user and (by the foreign key's cascade) their tokens and sessions.
pub async fn delete_user(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub struct NewToken<'a> {
    pub id: &'a str,
    pub user_id: &'a str,
    pub kind: &'a str,
    pub secret_hash: &'a str,
    pub label: &'a str,
    pub now: &'a str,
    pub expires_at: Option<&'a str>,
}

pub async fn insert_token(conn: &mut Conn, t: NewToken<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO tokens (id, user_id, kind, secret_hash, label, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(t.id)
    .bind(t.user_id)
    .bind(t.kind)
    .bind(t.secret_hash)
    .bind(t.label)
    .bind(t.now)
    .bind(t.expires_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn credential_by_hash(conn: &mut Conn, hash: &str) -> sqlx::Result<Option<Credential>> {
    sqlx::query_as(
        "SELECT t.id AS token_id, u.id AS user_id, u.name, u.role, t.expires_at \
         FROM tokens t JOIN users u ON u.id = t.user_id WHERE t.secret_hash = $1",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await
}

pub async fn touch_token(conn: &mut Conn, id: &str, now: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn list_api_tokens(conn: &mut Conn, user_id: &str) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(
        "SELECT t.id, u.name AS user_name, t.label, t.created_at, t.last_used_at \
         FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.user_id = $1 AND t.kind = 'api' ORDER BY t.created_at",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The token's owner id and secret hash, for permission checks and cache eviction.
pub async fn token_owner(
    conn: &mut Conn,
    id: &str,
) -> sqlx::Result<Option<(String, String, String)>> {
    sqlx::query_as(
        "SELECT t.user_id, u.name, t.secret_hash FROM tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.id = $1 AND t.kind = 'api'",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
}

pub async fn delete_token(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a browser session; its token id, if there was one.
pub async fn delete_session_by_hash(conn: &mut Conn, hash: &str) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar(
        "DELETE FROM tokens WHERE secret_hash = $1 AND kind = 'session' RETURNING id",
    )
    .bind(hash)
    .fetch_optional(conn)
    .await
}

pub async fn delete_expired_sessions(conn: &mut Conn, now: &str) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM tokens WHERE kind = 'session' AND expires_at < $1")
        .bind(now)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}
