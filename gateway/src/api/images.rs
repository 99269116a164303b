//! `/v1/images`: the images notebooks can use (built-in, registered, saved), registration
//! and unregistration. See `crate::images`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use serde::Deserialize;

use super::Items;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::images::{self, ImageView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images", get(list).post(register))
        .route("/v1/images/{*id}", delete(unregister).get(get_one))
}

async fn list(p: Principal, State(state): State<AppState>) -> ApiResult<ApiJson<Items<ImageView>>> {
    let mut conn = state.store.pool.acquire().await?;
    let items = images::list(&state.settings, &mut conn, &p).await?;
    Ok(ApiJson(Items { items }))
}

/// `?owner=NAME`: which user's image an admin means (ids are per owner).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerQuery {
    owner: Option<String>,
}

async fn get_one(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> ApiResult<ApiJson<ImageView>> {
    let mut conn = state.store.pool.acquire().await?;
    let image = images::find(&state.settings, &mut conn, &p, &id, q.owner.as_deref()).await?;
    Ok(ApiJson(image))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterImage {
    name: String,
    #[serde(rename = "ref")]
    reference: String,
    #[serde(default)]
    description: String,
}

/// `POST /v1/images` `{name, ref, description?}`: an image the engine has or can pull, under
/// a name notebooks use (everyone's when an admin registers it).
async fn register(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterImage>,
) -> ApiResult<(StatusCode, ApiJson<ImageView>)> {
    let view = images::register(
        &state.settings,
        &state.store,
        state.lifecycle.backend().as_ref(),
        &p,
        &req.name,
        &req.reference,
        &req.description,
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(view)))
}

/// `DELETE /v1/images/{id}[?owner=NAME]`: unregisters (the image stays in the engine and
/// registry).
async fn unregister(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<OwnerQuery>,
) -> ApiResult<StatusCode> {
    images::unregister(&state.settings, &state.store, &p, &id, q.owner.as_deref()).await?;
    Ok(StatusCode::NO_CONTENT)
}
