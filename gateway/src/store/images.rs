//! Registered and saved images (the settings' built-in images are not stored). Ids are per
//! owner: `(owner_id, id)` is unique, and so is `id` among public images (owner NULL).

use serde::Serialize;

use super::Conn;

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ImageRow {
    pub id: String,
    #[sqlx(rename = "ref")]
    #[serde(rename = "ref")]
    pub reference: String,
    pub kind: String,
    /// The owner's name; `None`: public.
    #[sqlx(rename = "owner_name")]
    pub owner: Option<String>,
    pub description: String,
    pub source_notebook: Option<String>,
    pub size_bytes: Option<i64>,
    pub created_at: String,
    #[serde(skip)]
    pub owner_id: Option<String>,
}

const SELECT: &str = "SELECT i.id, i.ref, i.kind, u.name AS owner_name, i.description, \
     i.source_notebook, i.size_bytes, i.created_at, i.owner_id \
     FROM images i LEFT JOIN users u ON u.id = i.owner_id";

pub struct NewImage<'a> {
    pub id: &'a str,
    pub reference: &'a str,
    pub kind: &'a str,
    pub owner_id: Option<&'a str>,
    pub description: &'a str,
    pub source_notebook: Option<&'a str>,
    pub size_bytes: Option<i64>,
    pub now: &'a str,
}

pub async fn insert(conn: &mut Conn, i: NewImage<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO images (id, ref, kind, owner_id, description, source_notebook, size_bytes, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(i.id)
    .bind(i.reference)
    .bind(i.kind)
    .bind(i.owner_id)
    .bind(i.description)
    .bind(i.source_notebook)
    .bind(i.size_bytes)
    .bind(i.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Image `id` in the view of `owner_id`: theirs or the public one (never both: registration
/// keeps the ids a user sees distinct; theirs first should it happen).
pub async fn visible_to(
    conn: &mut Conn,
    owner_id: &str,
    id: &str,
) -> sqlx::Result<Option<ImageRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE i.id = $1 AND (i.owner_id IS NULL OR i.owner_id = $2) \
         ORDER BY i.owner_id IS NULL LIMIT 1"
    ))
    .bind(id)
    .bind(owner_id)
    .fetch_optional(conn)
    .await
}

/// Every image named `id`, of any owner (admins' lookups and their conflicts).
pub async fn all_named(conn: &mut Conn, id: &str) -> sqlx::Result<Vec<ImageRow>> {
    sqlx::query_as(&format!(
        "{SELECT} WHERE i.id = $1 ORDER BY i.owner_id IS NOT NULL, u.name"
    ))
    .bind(id)
    .fetch_all(conn)
    .await
}

/// Public images and those of `owner_id`; every image for `None` (admins).
pub async fn visible(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<ImageRow>> {
    match owner_id {
        Some(o) => {
            sqlx::query_as(&format!(
                "{SELECT} WHERE i.owner_id IS NULL OR i.owner_id = $1 ORDER BY i.created_at, i.id"
            ))
            .bind(o)
            .fetch_all(conn)
            .await
        }
        None => {
            sqlx::query_as(&format!("{SELECT} ORDER BY i.created_at, i.id"))
                .fetch_all(conn)
                .await
        }
    }
}

/// The references of saved images that are not `owner_id`'s (where other users' saved-image
/// namespaces are).
pub async fn saved_refs_of_others(conn: &mut Conn, owner_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT ref FROM images WHERE kind = 'saved' AND (owner_id IS NULL OR owner_id <> $1)",
    )
    .bind(owner_id)
    .fetch_all(conn)
    .await
}

/// Deletes image `id` of `owner_id` (`None`: the public one).
pub async fn delete(conn: &mut Conn, owner_id: Option<&str>, id: &str) -> sqlx::Result<bool> {
    let r = match owner_id {
        Some(o) => {
            sqlx::query("DELETE FROM images WHERE id = $1 AND owner_id = $2")
                .bind(id)
                .bind(o)
                .execute(conn)
                .await?
        }
        None => {
            sqlx::query("DELETE FROM images WHERE id = $1 AND owner_id IS NULL")
                .bind(id)
                .execute(conn)
                .await?
        }
    };
    Ok(r.rows_affected() > 0)
}

/// How many notebooks use image `id` of `owner_id` (theirs), or the public `id` (`None`:
/// notebooks of anyone, since nobody who sees a public id has an image of their own by it).
pub async fn users_of(conn: &mut Conn, owner_id: Option<&str>, id: &str) -> sqlx::Result<i64> {
    match owner_id {
        Some(o) => {
            sqlx::query_scalar("SELECT COUNT(*) FROM notebooks WHERE image = $1 AND owner_id = $2")
                .bind(id)
                .bind(o)
                .fetch_one(conn)
                .await
        }
        None => {
            sqlx::query_scalar("SELECT COUNT(*) FROM notebooks WHERE image = $1")
                .bind(id)
                .fetch_one(conn)
                .await
        }
    }
}
