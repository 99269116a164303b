//! `/v1/batch-services`: batch services (`crate::batch::Batches`). A batch service is
//! named by its id or, for its owner, its name.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;

use super::Items;
use super::error::{ApiJson, ApiPath, ApiQuery, ApiResult};
use crate::api::state::AppState;
use crate::auth::Principal;
use crate::batch::{BatchView, DeployBatch, UpdateBatch};
use crate::serving::logs::LogParams;
use crate::store::resource_events::EventRecord;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/batch-services", post(deploy).get(list))
        .route(
            "/v1/batch-services/{batch}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/batch-services/{batch}/start", post(start))
        .route("/v1/batch-services/{batch}/stop", post(stop))
        .route("/v1/batch-services/{batch}/restart", post(restart))
        .route("/v1/batch-services/{batch}/events", get(events))
        .route("/v1/batch-services/{batch}/logs", get(logs))
}

async fn deploy(
    p: Principal,
    State(state): State<AppState>,
    ApiJson(req): ApiJson<DeployBatch>,
) -> ApiResult<(StatusCode, ApiJson<BatchView>)> {
    let v = state.batches.deploy(&p, req).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    all: bool,
}

async fn list(
    p: Principal,
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<ApiJson<Items<BatchView>>> {
    let items = state.batches.list(&p, q.all).await?;
    Ok(ApiJson(Items { items }))
}

async fn show(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<ApiJson<BatchView>> {
    Ok(ApiJson(state.batches.get(&p, &batch).await?))
}

async fn update(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateBatch>,
) -> ApiResult<ApiJson<BatchView>> {
    Ok(ApiJson(state.batches.update(&p, &batch, req).await?))
}

async fn delete(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<StatusCode> {
    state.batches.delete(&p, &batch).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn start(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<(StatusCode, ApiJson<BatchView>)> {
    let v = state.batches.start(&p, &batch).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(v)))
}

async fn stop(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<ApiJson<BatchView>> {
    Ok(ApiJson(state.batches.stop(&p, &batch).await?))
}

async fn restart(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<ApiJson<BatchView>> {
    Ok(ApiJson(state.batches.restart(&p, &batch).await?))
}

async fn events(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
) -> ApiResult<ApiJson<Items<EventRecord>>> {
    let items = state.batches.events(&p, &batch).await?;
    Ok(ApiJson(Items { items }))
}

/// As a real-time service's (`api/services.rs`): JSON, or text lines.
async fn logs(
    p: Principal,
    State(state): State<AppState>,
    ApiPath(batch): ApiPath<String>,
    ApiQuery(q): ApiQuery<LogParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let found = state.batches.logs(&p, &batch, &q).await?;
    super::services::logs_answer(found, &headers)
}
