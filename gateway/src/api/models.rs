//! `/v1/models`: the model registry (`crate::models::Models`). A model is named by its id
//! or, for its owner, its name; versions by their number.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::Items;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::models::{CreateModel, CreateVersion, ModelView, UpdateModel, VersionView};
use crate::store::resource_events::EventRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/models", post(create).get(list))
        .route("/v1/models/{model}", get(show).patch(update).delete(delete))
        .route(
            "/v1/models/{model}/versions",
            post(create_version).get(versions),
        )
        .route(
            "/v1/models/{model}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route("/v1/models/{model}/events", get(events))
}

/// A model just created, with its first version (IMPORTING).
#[derive(Serialize)]
struct Created {
    #[serde(flatten)]
    model: ModelView,
    version: VersionView,
}

async fn create(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CreateModel>,
) -> ApiResult<(StatusCode, ApiJson<Created>)> {
    let (model, version) = state.models.create(&p, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(Created { model, version })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Every user's (admins).
    #[serde(default)]
    all: bool,
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Items<ModelView>>> {
    let items = state.models.list(&p, q.all).await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<ApiJson<ModelView>> {
    Ok(ApiJson(state.models.get(&p, &model).await?))
}

async fn update(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateModel>,
) -> ApiResult<ApiJson<ModelView>> {
    Ok(ApiJson(state.models.update(&p, &model, req).await?))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.models.delete(&p, &model).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_version(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiJson(req): ApiJson<CreateVersion>,
) -> ApiResult<(StatusCode, ApiJson<VersionView>)> {
    let v = state.models.create_version(&p, &model, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn versions(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
) -> ApiResult<ApiJson<Items<VersionView>>> {
    let items = state.models.versions(&p, &model).await?;
    Ok(ApiJson(Items { items }))
}

async fn version(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
) -> ApiResult<ApiJson<VersionView>> {
    Ok(ApiJson(state.models.version(&p, &model, &version).await?))
}

async fn delete_version(
    p: Principal,
    State(state): State<AppState>,
    ApiPath((model, version)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    state.models.delete_version(&p, &model, &version).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    /// One version's only.
    version: Option<String>,
}

async fn events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(model): ApiPath<String>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<ApiJson<Items<EventRecord>>> {
    let items = state
        .models
        .events(&p, &model, q.version.as_deref())
        .await?;
    Ok(ApiJson(Items { items }))
}
