//! `/v1/storage/connections`: S3-compatible object stores a user connects. A connection is
//! checked against its store before it is saved (reachable, credentials accepted, bucket
//! present); its secret key is sealed at rest and never returned or logged.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::Items;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::object_storage::connections::{self, DEFAULT_REGION};
use crate::object_storage::s3;
use crate::store::audit::{self, Action, Target};
use crate::store::{self, storage_connections};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/storage/connections", post(create).get(list))
        .route("/v1/storage/connections/{name}", get(show).delete(delete))
        .route("/v1/storage/connections/{name}/check", post(check))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateConnection {
    name: String,
    endpoint: String,
    region: Option<String>,
    bucket: Option<String>,
    access_key_id: String,
    secret_access_key: String,
    /// Bucket in the URL path (self-hosted stores) rather than the host name; default true.
    path_style: Option<bool>,
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateConnection>,
) -> ApiResult<(StatusCode, ApiJson<storage_connections::ConnectionRow>)> {
    connections::validate_name(&req.name).map_err(ApiError::invalid)?;
    let endpoint = s3::normalize_endpoint(&req.endpoint).map_err(ApiError::invalid)?;
    let region = req
        .region
        .clone()
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    connections::validate_region(&region).map_err(ApiError::invalid)?;
    let bucket = req.bucket.clone().filter(|b| !b.is_empty());
    if let Some(b) = &bucket {
        crate::object_storage::validate_bucket(b)
            .map_err(|e| ApiError::invalid(format!("bucket: {e}")))?;
    }
    connections::validate_key("access_key_id", &req.access_key_id).map_err(ApiError::invalid)?;
    connections::validate_key("secret_access_key", &req.secret_access_key)
        .map_err(ApiError::invalid)?;
    let path_style = req.path_style.unwrap_or(true);
    {
        let mut conn = state.store.pool.acquire().await?;
        if storage_connections::by_name(&mut conn, &p.user_id, &req.name)
            .await?
            .is_some()
        {
            return Err(exists(&req.name));
        }
    }
    let target = s3::Target {
        endpoint: endpoint.clone(),
        region: region.clone(),
        access_key_id: req.access_key_id.clone(),
        secret_access_key: Zeroizing::new(req.secret_access_key.clone()),
        path_style,
    };
    s3::check(&target, bucket.as_deref())
        .await
        .map_err(ApiError::from)?;

    let id = uuid::Uuid::new_v4().to_string();
    let sealed = state.secrets.seal(&req.secret_access_key, &id);
    let now = store::now();
    let mut tx = state.store.write().await?;
    // Checked again: a create of the same name may have finished during the check.
    if storage_connections::by_name(&mut tx, &p.user_id, &req.name)
        .await?
        .is_some()
    {
        return Err(exists(&req.name));
    }
    storage_connections::insert(
        &mut tx,
        storage_connections::NewConnection {
            id: &id,
            owner_id: &p.user_id,
            name: &req.name,
            endpoint: &endpoint,
            region: &region,
            bucket: bucket.as_deref(),
            access_key_id: &req.access_key_id,
            secret_sealed: &sealed,
            path_style,
            now: &now,
        },
    )
    .await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::CreateStorageConnection,
        Target {
            kind: "storage_connection",
            id: &id,
            name: &req.name,
        },
        "ok",
        Some(&format!(
            "{endpoint}{} as {}",
            bucket
                .as_deref()
                .map(|b| format!(" bucket {b}"))
                .unwrap_or_default(),
            req.access_key_id
        )),
    )
    .await?;
    let row = storage_connections::by_name(&mut tx, &p.user_id, &req.name)
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("connection vanished")))?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(row)))
}

fn exists(name: &str) -> ApiError {
    ApiError::conflict(format!(
        "connection {name:?} already exists; pick another name or delete it first"
    ))
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("storage connection {name:?} not found"))
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<super::AllQuery>,
) -> ApiResult<ApiJson<Items<storage_connections::ConnectionRow>>> {
    let owner = q.owner(&p, "storage connections")?;
    let mut conn = state.store.pool.acquire().await?;
    Ok(ApiJson(Items {
        items: storage_connections::list(&mut conn, owner).await?,
    }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ApiJson<storage_connections::ConnectionRow>> {
    let mut conn = state.store.pool.acquire().await?;
    let row = storage_connections::by_name(&mut conn, &p.user_id, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(ApiJson(row))
}

#[derive(Serialize)]
struct Checked {
    name: String,
    ok: bool,
    checked_at: String,
}

/// Checks a saved connection again (after the store's keys or policies changed).
async fn check(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<ApiJson<Checked>> {
    let row = {
        let mut conn = state.store.pool.acquire().await?;
        storage_connections::by_name(&mut conn, &p.user_id, &name)
            .await?
            .ok_or_else(|| not_found(&name))?
    };
    let target = connections::target(&row, &state.secrets).map_err(ApiError::internal)?;
    s3::check(&target, row.bucket.as_deref())
        .await
        .map_err(ApiError::from)?;
    let now = store::now();
    let mut tx = state.store.write().await?;
    storage_connections::set_checked(&mut tx, &row.id, &now).await?;
    tx.commit().await?;
    Ok(ApiJson(Checked {
        name,
        ok: true,
        checked_at: now,
    }))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = state.store.write().await?;
    let row = storage_connections::by_name(&mut tx, &p.user_id, &name)
        .await?
        .ok_or_else(|| not_found(&name))?;
    let users = crate::store::mounts::notebooks_using(&mut tx, &row.id).await?;
    if !users.is_empty() {
        return Err(ApiError::conflict(format!(
            "connection {name} is used by the object-storage mounts of notebook(s) {}; unmount them first (atelier notebook unmount)",
            users.join(", ")
        )));
    }
    if crate::store::uploads::connection_in_flight(&mut tx, &row.id).await? {
        return Err(ApiError::conflict(format!(
            "connection {name} stages uploads in flight; let them finish or cancel them first"
        )));
    }
    // Deleting a connection forgets how to reach the store; it never deletes objects.
    storage_connections::delete(&mut tx, &row.id).await?;
    audit::record(
        &mut tx,
        &p.name,
        Action::DeleteStorageConnection,
        Target {
            kind: "storage_connection",
            id: &row.id,
            name: &row.name,
        },
        "ok",
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
