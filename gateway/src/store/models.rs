//! The model registry's rows (`models`, `model_versions`; migration 0014). A version's
//! `source`, `settings`, `config` and `manifest` are JSON the `models` service reads and
//! writes as its own types.

use serde::Serialize;

use super::Conn;
use crate::lifecycle::model::ModelStatus;

/// A model, with its newest version's number and status for lists.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ModelRow {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub owner_id: String,
    #[sqlx(rename = "owner_name")]
    pub owner: String,
    pub description: String,
    pub created_at: String,
    pub updated_at: String,
    /// The newest version ("0.0.3"), if any is left.
    pub latest_version: Option<String>,
    pub latest_status: Option<ModelStatus>,
    pub versions: i64,
}

const SELECT_MODEL: &str = "SELECT m.id, m.name, m.owner_id, u.name AS owner_name, m.description, \
     m.created_at, m.updated_at, \
     (SELECT v.version FROM model_versions v WHERE v.model_id = m.id ORDER BY v.created_at DESC, v.id DESC LIMIT 1) AS latest_version, \
     (SELECT v.status FROM model_versions v WHERE v.model_id = m.id ORDER BY v.created_at DESC, v.id DESC LIMIT 1) AS latest_status, \
     (SELECT COUNT(*) FROM model_versions v WHERE v.model_id = m.id) AS versions \
     FROM models m JOIN users u ON u.id = m.owner_id";
const OWNED: super::Owned = super::Owned {
    select: SELECT_MODEL,
    alias: "m",
};

/// One version of a model.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub id: String,
    pub model_id: String,
    pub version: String,
    pub status: ModelStatus,
    pub error: Option<String>,
    pub description: String,
    pub source: String,
    pub settings: String,
    pub config: Option<String>,
    pub manifest: Option<String>,
    pub processor: Option<String>,
    pub size: i64,
    pub created_at: String,
    pub updated_at: String,
}

const SELECT_VERSION: &str = "SELECT id, model_id, version, status, error, description, source, \
     settings, config, manifest, processor, size, created_at, updated_at FROM model_versions";

pub async fn model_by_name(
    conn: &mut Conn,
    owner_id: &str,
    name: &str,
) -> sqlx::Result<Option<ModelRow>> {
    OWNED.by_name(conn, owner_id, name).await
}

pub async fn model_by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<ModelRow>> {
    sqlx::query_as(&format!("{SELECT_MODEL} WHERE m.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// One owner's models by name, or everyone's.
pub async fn list_models(conn: &mut Conn, owner_id: Option<&str>) -> sqlx::Result<Vec<ModelRow>> {
    OWNED.list(conn, owner_id).await
}

pub async fn count_models(conn: &mut Conn, owner_id: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM models WHERE owner_id = $1")
        .bind(owner_id)
        .fetch_one(conn)
        .await
}

pub async fn insert_model(
    conn: &mut Conn,
    id: &str,
    owner_id: &str,
    name: &str,
    description: &str,
    now: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO models (id, owner_id, name, description, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(id)
    .bind(owner_id)
    .bind(name)
    .bind(description)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_description(
    conn: &mut Conn,
    model_id: &str,
    description: &str,
    now: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE models SET description = $1, updated_at = $2 WHERE id = $3")
        .bind(description)
        .bind(now)
        .bind(model_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes a model that has no version left (false: it still has some, or is gone).
pub async fn delete_model_if_empty(conn: &mut Conn, model_id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "DELETE FROM models WHERE id = $1 \
         AND NOT EXISTS (SELECT 1 FROM model_versions WHERE model_id = $1)",
    )
    .bind(model_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub struct NewVersion<'a> {
    pub id: &'a str,
    pub model_id: &'a str,
    pub version: &'a str,
    pub description: &'a str,
    pub source: &'a str,
    pub settings: &'a str,
    pub now: &'a str,
}

/// Inserts a version IMPORTING (the caller begins its operation in the same transaction).
pub async fn insert_version(conn: &mut Conn, v: NewVersion<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO model_versions (id, model_id, version, status, description, source, \
         settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
    )
    .bind(v.id)
    .bind(v.model_id)
    .bind(v.version)
    .bind(ModelStatus::Importing)
    .bind(v.description)
    .bind(v.source)
    .bind(v.settings)
    .bind(v.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn version_by_id(conn: &mut Conn, id: &str) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as(&format!("{SELECT_VERSION} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn version_of(
    conn: &mut Conn,
    model_id: &str,
    version: &str,
) -> sqlx::Result<Option<VersionRow>> {
    sqlx::query_as(&format!(
        "{SELECT_VERSION} WHERE model_id = $1 AND version = $2"
    ))
    .bind(model_id)
    .bind(version)
    .fetch_optional(conn)
    .await
}

/// A model's versions, oldest first.
pub async fn versions(conn: &mut Conn, model_id: &str) -> sqlx::Result<Vec<VersionRow>> {
    sqlx::query_as(&format!(
        "{SELECT_VERSION} WHERE model_id = $1 ORDER BY created_at, id"
    ))
    .bind(model_id)
    .fetch_all(conn)
    .await
}

/// Every version number a model has had that is still stored (to pick the next one).
pub async fn version_numbers(conn: &mut Conn, model_id: &str) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT version FROM model_versions WHERE model_id = $1")
        .bind(model_id)
        .fetch_all(conn)
        .await
}

/// Records what an import found (config, files, processor, size); the status moves
/// separately.
pub async fn set_imported(
    conn: &mut Conn,
    id: &str,
    config: Option<&str>,
    manifest: &str,
    processor: Option<&str>,
    size: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE model_versions SET config = $1, manifest = $2, processor = $3, size = $4 \
         WHERE id = $5",
    )
    .bind(config)
    .bind(manifest)
    .bind(processor)
    .bind(size)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether a stored version's processor is the component `digest` (its files must stay).
pub async fn processor_in_use(conn: &mut Conn, digest: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM model_versions \
         WHERE processor IS NOT NULL AND json_extract(processor, '$.digest') = $1)",
    )
    .bind(digest)
    .fetch_one(conn)
    .await
}

pub async fn delete_version(conn: &mut Conn, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM model_versions WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// The digests every stored version's manifest names (what the model store must keep).
pub async fn manifests(conn: &mut Conn) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT manifest FROM model_versions WHERE manifest IS NOT NULL")
        .fetch_all(conn)
        .await
}
