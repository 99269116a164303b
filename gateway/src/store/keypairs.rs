//! SSH key pairs (public halves) and which notebooks use them.

use serde::Serialize;

use super::Conn;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyPairRow {
    #[serde(skip)]
    pub id: String,
    pub name: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub algorithm: String,
    pub public_key: String,
    pub fingerprint: String,
    pub created_at: String,
}

const SELECT: &str = "SELECT k.id, k.name, u.name AS owner_name, k.algorithm, k.public_key, \
     k.fingerprint, k.created_at FROM key_pairs k JOIN users u ON u.id = k.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT,
    alias: "k",
};

pub struct NewKeyPair<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub name: &'a str,
    pub algorithm: &'a str,
    pub public_key: &'a str,
    pub fingerprint: &'a str,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, k: NewKeyPair<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO key_pairs (id, owner_id, name, algorithm, public_key, fingerprint, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(k.id)
    .bind(k.owner_id)
    .bind(k.name)
    .bind(k.algorithm)
    .bind(k.public_key)
    .bind(k.fingerprint)
    .bind(k.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<KeyPairRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

/// Another key pair of the same owner with this fingerprint (the same key imported twice).
pub async fn by_fingerprint(
    conn: &mut Conn,
    owner_id: &str,
    fingerprint: &str,
) -> sqlx::Result<Option<KeyPairRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE k.owner_id = $1 AND k.fingerprint = $2"
    ))
    .bind(owner_id)
    .bind(fingerprint)
    .fetch_optional(conn)
    .await
}

/// Whether a user other than `owner_id` holds a key pair with this fingerprint (a public key
/// belongs to one user only).
pub async fn held_by_another(
    conn: &mut Conn,
    owner_id: &str,
    fingerprint: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM key_pairs WHERE fingerprint = $1 AND owner_id <> $2)",
    )
    .bind(fingerprint)
    .bind(owner_id)
    .fetch_one(conn)
    .await
}

/// Who holds a public key: `(key pair id, owner id)` of every key pair with this fingerprint
/// (one, or none; several only in a database from before keys were one user's).
pub async fn holders(conn: &mut Conn, fingerprint: &str) -> sqlx::Result<Vec<(String, String)>> {
    sqlx::query_as("SELECT id, owner_id FROM key_pairs WHERE fingerprint = $1 ORDER BY id")
        .bind(fingerprint)
        .fetch_all(conn)
        .await
}

/// One owner's key pairs, or everyone's (`owner_id = None`), by name.
pub async fn list(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<KeyPairRow>> {
    OWNED.list(conn, owner_id).await
}

/// Names of the notebooks that accept this key pair.
pub async fn used_by(conn: &mut Conn, key_pair_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT n.name FROM notebook_key_pairs nk JOIN notebooks n ON n.id = nk.notebook_id \
         WHERE nk.key_pair_id = $1 ORDER BY n.name",
    )
    .bind(key_pair_id)
    .fetch_all(conn)
    .await
}

pub async fn delete(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM key_pairs WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
